// The migration harness's own machinery, without QEMU: the swappable machine, the QMP helpers,
// streams read for the comparisons (parseSavevm and decodeVirtioBlob, as the inspector reads
// them), the blob and stream comparisons, and the snapshot diff — each shown to notice what it
// exists to notice.
import { describe, expect, it } from 'vitest';
import { IrqLog, type Machine, type QmpLike } from '../../src/driver/machine.js';
import { MigrationFailure, SwappableMachine, migrateIncomingFromFile, migrateToFile, runStateAfterMigration, shellQuote, waitMigration } from '../../src/oracle/migration.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { parseSavevm } from '../../src/migration/savevm.js';
import { decodeVirtioBlob, leafFields, type DecodeOptions } from '../../src/migration/virtio-decode.js';
import { blobLeaves, compareBlobs, compareStreams, decodeBlob, readStream, sectionBody, virtioField, type DecodedBlob } from './blob-compare.js';
import { Bytes } from './bytes.js';
import { diffSnapshots, pendingAllowances, type Snapshot } from './rig.js';

// --- a fake machine ------------------------------------------------------------------------------

class FakeMachine implements Machine {
  readonly irq = new IrqLog();
  readonly ram = new Map<number, number>();
  readonly intercepts: string[] = [];
  closed = false;
  constructor(readonly name: string, readonly hasClock = false, readonly qmp: QmpLike | undefined = undefined) {}
  inb = async (): Promise<number> => 0;
  inw = async (): Promise<number> => 0;
  inl = async (): Promise<number> => 0;
  outb = async (): Promise<void> => undefined;
  outw = async (): Promise<void> => undefined;
  outl = async (): Promise<void> => undefined;
  readb = async (a: number): Promise<number> => this.ram.get(a) ?? 0;
  readw = async (): Promise<number> => 0;
  readl = async (a: number): Promise<number> => this.ram.get(a) ?? 0;
  readq = async (): Promise<bigint> => 0n;
  writeb = async (a: number, v: number): Promise<void> => void this.ram.set(a, v);
  writew = async (): Promise<void> => undefined;
  writel = async (a: number, v: number): Promise<void> => void this.ram.set(a, v);
  writeq = async (): Promise<void> => undefined;
  readBytes = async (_a: number, n: number): Promise<Uint8Array> => new Uint8Array(n);
  writeBytes = async (): Promise<void> => undefined;
  memset = async (): Promise<void> => undefined;
  clockStep = async (): Promise<number> => 0;
  clockSet = async (): Promise<number> => 0;
  irqIntercept = async (kind: 'in' | 'out', path: string): Promise<void> => void this.intercepts.push(`${kind} ${path}`);
  settle = async (): Promise<void> => undefined;
  close = async (): Promise<void> => void (this.closed = true);
}

describe('SwappableMachine', () => {
  it('forwards to the current machine and swaps to the destination', async () => {
    const a = new FakeMachine('a', false);
    const b = new FakeMachine('b', true);
    const m = new SwappableMachine(a);
    await m.writel(0x1000, 7);
    expect(a.ram.get(0x1000)).toBe(7);
    expect(m.hasClock).toBe(false);
    const old = m.swap(b);
    expect(old).toBe(a);
    expect(await m.readl(0x1000), 'the destination has its own RAM').toBe(0);
    await m.writel(0x2000, 9);
    expect(b.ram.get(0x2000)).toBe(9);
    expect(a.ram.has(0x2000)).toBe(false);
    expect(m.hasClock).toBe(true);
    expect(m.migrations).toBe(1);
    expect(m.history).toEqual(['a', 'b']);
    expect(m.name).toBe('b (after 1 migration)');
    await m.close();
    expect(b.closed).toBe(true);
    expect(a.closed, 'a swapped-out machine belongs to the harness').toBe(false);
  });

  it('keeps one IRQ log across machines, marks stay valid, and replays the intercepts', async () => {
    const a = new FakeMachine('a');
    const b = new FakeMachine('b');
    const m = new SwappableMachine(a);
    await m.irqIntercept('in', 'ioapic');
    await m.irqIntercept('in', 'ioapic');
    a.irq.push(11, true);
    a.irq.push(0, true);
    const mark = m.irq.mark();
    expect(mark).toBe(2);
    a.irq.push(11, false);
    await m.replayIntercepts(b);
    expect(b.intercepts, 'replayed once each').toEqual(['in ioapic']);
    m.swap(b);
    // Events of `a` after its swap-out are not the machine's any more.
    a.irq.push(11, true);
    b.irq.push(11, true);
    expect(m.irq.since(mark).map((e) => `${e.line}:${e.level}`)).toEqual(['11:false', '11:true']);
    expect(m.sinceSwap().map((e) => `${e.line}:${e.level}`)).toEqual(['11:true']);
    expect(m.irq.level(11)).toBe(true);
    expect(m.swapMarks).toEqual([3]);
  });
});

describe('QMP migration helpers', () => {
  const qmpOf = (answers: unknown[], refuse?: string): QmpLike & { sent: string[] } => {
    const sent: string[] = [];
    return {
      sent,
      async execute(cmd, args) {
        sent.push(`${cmd}${args ? ` ${JSON.stringify(args)}` : ''}`);
        if (refuse && cmd === refuse) throw new Error('GenericError: no');
        if (cmd === 'query-migrate') return answers.shift() ?? { status: 'active' };
        return {};
      },
    };
  };

  it('migrates to exec:cat > FILE and polls until completed', async () => {
    const q = qmpOf([{ status: 'setup' }, { status: 'active' }, { status: 'completed' }]);
    const info = await migrateToFile(q, "/tmp/a b's.mig");
    expect(info.status).toBe('completed');
    expect(q.sent[0]).toBe(`migrate {"uri":"exec:cat > '/tmp/a b'\\\\''s.mig'"}`);
    expect(q.sent.filter((s) => s === 'query-migrate').length).toBe(3);
    expect(shellQuote("it's")).toBe(`'it'\\''s'`);
  });

  it('loads with migrate-incoming exec:cat FILE; failures and refusals are MigrationFailures', async () => {
    const ok = qmpOf([{ status: 'completed' }]);
    await migrateIncomingFromFile(ok, '/tmp/x.mig');
    expect(ok.sent[0]).toBe(`migrate-incoming {"uri":"exec:cat '/tmp/x.mig'"}`);
    await expect(migrateIncomingFromFile(qmpOf([{ status: 'failed', 'error-desc': 'load of migration failed' }]), '/tmp/x.mig')).rejects.toThrow(/status failed: load of migration failed/);
    await expect(migrateToFile(qmpOf([], 'migrate'), '/tmp/x.mig')).rejects.toBeInstanceOf(MigrationFailure);
    await expect(waitMigration(qmpOf([]), { timeoutMs: 20 })).rejects.toThrow(/not completed after 20 ms/);
  });

  it("the source's run state after completed: finish-migrate (QEMU 7.2, for a moment) is polled past, nothing else", async () => {
    const statuses = (list: string[]): QmpLike & { asked: () => number } => {
      let n = 0;
      return { asked: () => n, execute: async () => ({ status: list[Math.min(n++, list.length - 1)] }) };
    };
    const racing = statuses(['finish-migrate', 'finish-migrate', 'postmigrate']);
    expect(await runStateAfterMigration(racing)).toBe('postmigrate');
    expect(racing.asked()).toBe(3);
    const wrong = statuses(['running', 'postmigrate']);
    expect(await runStateAfterMigration(wrong)).toBe('running');
    expect(await runStateAfterMigration(statuses(['finish-migrate']), { timeoutMs: 20 })).toBe('finish-migrate');
  });
});

// --- a synthetic stream ----------------------------------------------------------------------------

/** A virtio-mmio v2 rng blob: transport, core, one queue, then 64bit_features, ringsize? and started. */
function mmioBlob(opts: { isr?: number; ringsize?: boolean } = {}): Uint8Array {
  const w = new Bytes().u32(0).u32(0).u32(12);
  w.u8(0x0f).u8(opts.isr ?? 1).u16(0).u32(0x3000_0000).u32(0);
  w.u32(1).u32(8).u32(4096).u64(0x10_0000n).u16(5);
  w.subsection('virtio/64bit_features').u64(0x1_3000_0000n);
  if (opts.ringsize) {
    w.subsection('virtio/ringsize');
    for (let i = 0; i < 1024; i++) w.u32(i === 0 ? 8 : 0);
  }
  w.subsection('virtio/started').u8(1);
  return w.bytes();
}

/** A virtio-pci blob with MSI-X (2 vectors, unless `msix` is false) and the modern extra state. */
function pciBlob(opts: { msix?: boolean } = {}): Uint8Array {
  const msix = opts.msix ?? true;
  const cfg = new Uint8Array(256);
  if (msix) {
    cfg[0x06] = 0x10; // capability list
    cfg[0x34] = 0x98;
    cfg[0x98] = 0x11; // MSI-X, next 0
    cfg[0x9a] = 0x01; // table size - 1
  }
  const w = new Bytes().u32(2).raw(cfg).u32(1).u32(0).u32(0).u32(0);
  if (msix) {
    for (let i = 0; i < 32; i++) w.u8(i);
    w.u8(0x02).u16(0xffff);
  }
  w.u8(0x0f).u8(0x01).u16(0).u32(0).u32(0);
  w.u32(1).u32(4).u64(0x10_0000n).u16(7);
  if (msix) w.u16(1);
  w.subsection('virtio/extra_state').subsection('virtio_pci/modern_state').u32(0).u32(0).u32(0).u32(1);
  for (let i = 0; i < 1024; i++) w.u16(i === 0 ? 4 : 0).u8(0).u8(i === 0 ? 1 : 0).u32(0).u32(0).u32(0).u32(0).u32(0).u32(0);
  w.subsection('virtio/started').u8(1);
  return w.bytes();
}

interface Dev {
  idstr: string;
  body: Uint8Array;
  json?: object;
}

/** header, configuration, ram START/END (two blocks, a zero page and a full page), devices, EOF, JSON. */
function stream(devs: Dev[], opts: { json?: boolean; blocks?: [string, number][]; badFooter?: boolean } = {}): Uint8Array {
  const blocks = opts.blocks ?? [
    ['pc.ram', 8192],
    ['pc.bios', 4096],
  ];
  const w = new Bytes().u32(0x5145564d).u32(3).u8(0x07).u32(13).str('pc-i440fx-7.2');
  w.u8(0x01).u32(2).name('ram').u32(0).u32(4);
  w.u64(BigInt(blocks.reduce((s, b) => s + b[1], 0)) | 0x4n);
  for (const [n, s] of blocks) w.name(n).u64(BigInt(s));
  w.u64(0x10n).u8(0x7e).u32(2);
  w.u8(0x03).u32(2);
  w.u64(0x02n).name('pc.ram').u8(0);
  w.u64(0x1000n | 0x08n | 0x20n).raw(new Uint8Array(4096).fill(0x5a));
  w.u64(0x10n).u8(0x7e).u32(2);
  devs.forEach((d, i) => {
    w.u8(0x04).u32(10 + i).name(d.idstr).u32(0).u32(1).raw(d.body).u8(0x7e).u32(opts.badFooter ? 99 : 10 + i);
  });
  w.u8(0x00);
  if (opts.json ?? true) {
    const json = JSON.stringify({
      page_size: 4096,
      devices: devs.map((d) => d.json ?? { name: d.idstr, instance_id: 0, vmsd_name: d.idstr.split('/').pop(), version: 1, fields: [{ name: 'virtio', type: 'virtio', size: d.body.length }] }),
    });
    w.u8(0x06).u32(json.length).str(json);
  }
  return w.bytes();
}

/** A device whose JSON description has a struct array and a subsection (walked by the JSON). */
const timerDev: Dev = {
  idstr: 'timer',
  body: new Bytes().u32(1).u16(2).u16(3).u16(4).u16(5).subsection('timer/x').u8(9).bytes(),
  json: {
    name: 'timer',
    instance_id: 0,
    vmsd_name: 'timer',
    version: 1,
    fields: [
      { name: 'a', type: 'uint32', size: 4 },
      { name: 's', type: 'struct', size: 4, array_len: 2, struct: { vmsd_name: 'pair', version: 1, fields: [{ name: 'x', type: 'uint16', size: 2 }, { name: 'y', type: 'uint16', size: 2 }] } },
    ],
    subsections: [{ vmsd_name: 'timer/x', version: 1, fields: [{ name: 'z', type: 'uint8', size: 1 }] }],
  },
};
const VIRTIO_ID = 'virtio-mmio@00000000feb02e00/virtio-rng';

const MMIO: DecodeOptions = { transport: 'mmio', emptyDeviceState: true };
const PCI: DecodeOptions = { transport: 'pci', emptyDeviceState: true };

/** The value bytes of the leaf at `path`, as hex. */
function leafHex(d: DecodedBlob, path: string): string {
  const l = blobLeaves(d).find((x) => x.path === path);
  if (!l) throw new Error(`no field ${path}`);
  return Buffer.from(d.bytes.subarray(l.offset, l.offset + l.size)).toString('hex');
}

describe('streams read for the comparisons (parseSavevm, decodeVirtioBlob)', () => {
  it('walks header, configuration, RAM, JSON-described sections (struct array, subsection) and footers to EOF; decodes the virtio blob', () => {
    const blob = mmioBlob();
    const s = stream([timerDev, { idstr: VIRTIO_ID, body: blob }]);
    const r = readStream(s);
    expect(r.stream.configuration.machineType).toBe('pc-i440fx-7.2');
    expect(r.stream.ram!.blocks).toEqual([
      { idstr: 'pc.ram', length: 8192, zeroPages: 1, dataPages: 1 },
      { idstr: 'pc.bios', length: 4096, zeroPages: 0, dataPages: 0 },
    ]);
    expect(r.sections.map((x) => `${x.kind} ${x.sectionId} ${x.idstr}`)).toEqual(['start 2 ram', 'end 2 ram', 'full 10 timer', 'full 11 ' + VIRTIO_ID]);
    expect(s[r.stream.eofOffset]).toBe(0x00);
    const v = r.sections.at(-1)!;
    expect(Buffer.from(sectionBody(s, v)).equals(Buffer.from(blob))).toBe(true);
    expect(v.virtio!.isr).toBe(1);
    // Field offsets are stream offsets.
    const isr = virtioField(s, 'isr');
    expect([isr.offset, isr.size, s[isr.offset]]).toEqual([v.bodyOffset + 13, 1, 1]);
  });

  it('refuses what is not a stream, a wrong footer, and a cut stream, naming the offset', () => {
    expect(() => parseSavevm(new Uint8Array(8))).toThrow(MigrationError);
    expect(() => parseSavevm(stream([timerDev], { badFooter: true }))).toThrow(/Mismatched section id in footer for timer - read 0x63 expected 0xa/);
    // Cut inside the RAM chunk's page.
    expect(() => parseSavevm(stream([timerDev]).subarray(0, 200))).toThrow(/migration stream offset \d+ \(ram page/);
  });

  it('without the JSON description a device section cannot be stepped over, and the comparison says so', () => {
    const noJson = stream([{ idstr: VIRTIO_ID, body: mmioBlob() }], { json: false });
    expect(() => parseSavevm(noJson)).toThrow(/no JSON description to step over it with/);
    const qemu = stream([{ idstr: VIRTIO_ID, body: mmioBlob() }]);
    expect(compareStreams(qemu, noJson).undeclared).toEqual([expect.stringMatching(/^ours stream could not be walked: .*no JSON description/)]);
  });
});

describe('virtio blob decoding and comparison', () => {
  it('names every field of an mmio blob, each byte in exactly one field', () => {
    const b = mmioBlob({ ringsize: true });
    const d = decodeBlob(b, MMIO);
    const leaves = blobLeaves(d);
    expect(leaves.reduce((n, l) => n + l.size, 0)).toBe(b.length);
    expect(d.virtio.subsections.map((x) => x.name)).toEqual(['virtio/64bit_features', 'virtio/ringsize', 'virtio/started']);
    expect(leafHex(d, 'isr')).toBe('01');
    expect(leafHex(d, 'vq[0] > last_avail_idx')).toBe('0005');
    expect(leafHex(d, 'subsection virtio/ringsize > vq[0] > num_default')).toBe('00000008');
    expect(leafHex(d, 'subsection virtio/ringsize > vq[1023] > num_default')).toBe('00000000');
    expect(() => decodeBlob(b.subarray(0, b.length - 1), MMIO)).toThrow(MigrationError);
    expect(() => decodeBlob(b, PCI)).toThrow(MigrationError);
  });

  it('a pci blob: the MSI-X table size from the saved capability, table entries and configuration dwords by name', () => {
    const b = pciBlob();
    const d = decodeBlob(b, PCI);
    expect(blobLeaves(d).reduce((n, l) => n + l.size, 0)).toBe(b.length);
    expect(d.virtio.subsections.map((x) => x.name)).toEqual(['virtio/extra_state', 'virtio_pci/modern_state', 'virtio/started']);
    expect(leafHex(d, 'pci (virtio_pci_save_config) > PCIDevice > config > [0x34] capabilities pointer')).toBe('98000000');
    expect(leafHex(d, 'pci (virtio_pci_save_config) > msix > table > entry[1] > data')).toBe('18191a1b');
    expect(leafHex(d, 'pci (virtio_pci_save_config) > msix > pba')).toBe('02');
    expect(leafHex(d, 'vq[0] > vector')).toBe('0001');
    expect(leafHex(d, 'subsection virtio/extra_state > subsection virtio_pci/modern_state > vq[0] > num')).toBe('0004');
    // Without the MSI-X capability: no table, no vectors per queue.
    const plain = pciBlob({ msix: false });
    const p = decodeBlob(plain, PCI);
    expect(blobLeaves(p).some((l) => l.path.includes('msix'))).toBe(false);
    expect(p.virtio.queues[0]!.vector).toBeUndefined();
  });

  it('a decode that leaves bytes outside its fields cannot be compared (the comparison would not be byte for byte)', () => {
    // The inspector's compact form steps over all-zero queue entries unlisted.
    const b = mmioBlob({ ringsize: true });
    const compact: DecodedBlob = { bytes: b, offset: 0, length: b.length, virtio: decodeVirtioBlob(b, MMIO) };
    expect(() => blobLeaves(compact)).toThrow(/do not cover the blob/);
    expect(() => compareBlobs(compact, decodeBlob(b, MMIO))).toThrow(/do not cover the blob/);
    expect(leafFields(compact.virtio.fields).length).toBeLessThan(blobLeaves(decodeBlob(b, MMIO)).length);
  });

  it('reports a changed byte by field name, honours declared differences, and reports layout changes', () => {
    const a = decodeBlob(mmioBlob(), MMIO);
    expect(compareBlobs(a, decodeBlob(mmioBlob(), MMIO)).differences).toEqual([]);
    const c = compareBlobs(a, decodeBlob(mmioBlob({ isr: 0 }), MMIO));
    expect(c.undeclared).toEqual([{ field: 'isr', a: '01', b: '00' }]);
    const declared = compareBlobs(a, decodeBlob(mmioBlob({ isr: 0 }), MMIO), [{ field: /^isr$/, reason: 'test' }]);
    expect(declared.undeclared).toEqual([]);
    expect(declared.differences[0]!.declared).toBe('test');
    const layout = compareBlobs(a, decodeBlob(mmioBlob({ ringsize: true }), MMIO));
    expect(layout.sameLayout).toBe(false);
    // The subsection header's four fields, then its 1024 entries.
    expect(layout.undeclared.length).toBe(4 + 1024);
    expect(layout.undeclared[0]).toEqual({ field: 'subsection virtio/ringsize > QEMU_VM_SUBSECTION', a: '(absent)', b: '05' });
  });

  it('compares two streams: declared container differences pass, anything else is named', () => {
    const qemu = stream([timerDev, { idstr: VIRTIO_ID, body: mmioBlob() }], { blocks: [['pc.ram', 8192], ['pc.bios', 4096]] });
    const ours = stream([{ idstr: VIRTIO_ID, body: mmioBlob() }], { blocks: [['pc.ram', 8192]] });
    const c = compareStreams(qemu, ours);
    expect(c.undeclared).toEqual([]);
    expect(c.differences.map((d) => d.item)).toEqual([
      'ram block pc.bios only in qemu',
      'section timer#0 v1 only in qemu',
      `section id of ${VIRTIO_ID}#0 v1: 11 / 10`,
    ]);
    const wrong = stream([{ idstr: VIRTIO_ID, body: mmioBlob({ isr: 0 }) }, { ...timerDev, idstr: 'invented', json: { ...(timerDev.json as object), name: 'invented' } }], { blocks: [['pc.ram', 12288]] });
    expect(compareStreams(qemu, wrong).undeclared).toEqual(['ram block pc.ram size 8192 / 12288', 'section invented#0 v1 only in ours', 'blob isr: 01 / 00']);
  });
});

describe('snapshot comparison', () => {
  const snap = (o: Record<string, string>): Snapshot => new Map(Object.entries(o));
  it('lists every changed, missing and new item', () => {
    expect(diffSnapshots(snap({ a: '1', b: '2', c: '3' }), snap({ a: '1', b: '5', d: '4' }))).toEqual(['b: 2 → 5', 'c: 3 → (not read)', 'd: (not read) → 4']);
  });
  it('lets a posted request complete at resume, and nothing else', () => {
    const ring = { num: 4 } as never;
    const allow = pendingAllowances(ring, { head: 2, buf: { addr: 0, len: 16 } }, 6);
    const before = snap({ 'vq0.used.idx': '6', 'vq0.used[2]': '1:16', 'vq0.used.avail_event': '7', 'vq0.used[1]': '0:8' });
    expect(diffSnapshots(before, snap({ 'vq0.used.idx': '7', 'vq0.used[2]': '2:16', 'vq0.used.avail_event': '8', 'vq0.used[1]': '0:8' }), allow)).toEqual([]);
    expect(diffSnapshots(before, snap({ 'vq0.used.idx': '8', 'vq0.used[2]': '3:16', 'vq0.used.avail_event': '7', 'vq0.used[1]': '0:9' }), allow)).toEqual([
      'vq0.used.idx: 6 → 8',
      'vq0.used[2]: 1:16 → 3:16',
      'vq0.used[1]: 0:8 → 0:9',
    ]);
  });
});
