// Guest-side helpers of the migration scenarios: open a virtio-rng on any transport, bring it up
// in an interrupt mode, complete requests (acknowledging their interrupts or not), leave one
// posted but not notified, and take a snapshot of everything a driver can read without changing
// it — PCI configuration space, PIIX3 PIRQ routing, MSI-X table and PBA, the modern common
// configuration or legacy registers or virtio-mmio registers, queue registers, ring state, and
// guest RAM — so that the destination can be checked against the source.
//
// Scripts assert (with vitest's expect): every check names the value it expected and the end it
// was on.
import { createHash } from 'node:crypto';
import { expect } from 'vitest';
import { VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_PFN, VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION } from '../../src/bus/virtio-mmio.js';
import { poll } from '../../src/driver/machine.js';
import { GuestPciBus, devfn, type GuestPciDevice } from '../../src/driver/pci.js';
import type { VirtioTransportDriver } from '../../src/driver/virtio-driver.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver, findMicrovmIoapic2 } from '../../src/driver/virtio-mmio-driver.js';
import { LIBQOS_MSIX_DATA, VirtioPciCommon, VirtioPciDriver, VirtioPciLegacy, type MsixSlot } from '../../src/driver/virtio-pci-driver.js';
import type { UsedEntry, VringDriver } from '../../src/driver/vring.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/virtio/constants.js';
import type { MigrationContext } from './harness.js';
import { patternBytes } from './patterns.js';

export type PciTransport = { kind: 'pci'; label: string; slot: number; mode: 'modern' | 'legacy' };
export type MmioTransport = { kind: 'mmio'; label: string; index: number; version: 1 | 2 };
export type Transport = PciTransport | MmioTransport;
export type IrqMode = 'intx' | 'msix' | 'msix-masked' | 'mmio';

export const isModern = (t: Transport): boolean => (t.kind === 'pci' ? t.mode === 'modern' : t.version === 2);

/** INTx is routed to this ISA IRQ through the PIIX3 (what SeaBIOS picks for PIRQ links). */
export const INTX_IRQ = 11;
/** Canary that fills every buffer; the device must overwrite exactly used.len bytes. */
export const CANARY = 0xa5;
/** Bytes after each buffer checked to stay untouched. */
export const GUARD = 8;

/** Guest pages outside the allocator window, filled with a seeded pattern, that must migrate. */
export const SENTINELS = [0x1000, 0x9f000, 0x80_0000, 0xff_f000] as const;

export interface Buffer {
  addr: number;
  len: number;
}

export interface Posted {
  head: number;
  buf: Buffer;
}

const hex = (v: number, w = 2): string => `0x${v.toString(16).padStart(w, '0')}`;
const digest = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex').slice(0, 24);

/** A sentinel page's pattern: spread the address over the seed so neighbouring pages differ. */
const pattern = (seed: number, len: number): Uint8Array => patternBytes(len, (seed * 2654435761) >>> 0);

/** An ordered list of named values a driver read; compared item by item. */
export type Snapshot = Map<string, string>;

export interface SnapshotOptions {
  /** Also digest all of guest RAM (16 MiB; about 0.2 s per end). */
  fullRam?: boolean;
}

/** A rule letting an item change in a stated way. */
export type Allowance = (before: string, after: string) => boolean;

export function diffSnapshots(before: Snapshot, after: Snapshot, allow: ReadonlyMap<string, Allowance> = new Map()): string[] {
  const out: string[] = [];
  for (const [k, v] of before) {
    const a = after.get(k);
    if (a === undefined) out.push(`${k}: ${v} → (not read)`);
    else if (a !== v && !allow.get(k)?.(v, a)) out.push(`${k}: ${v} → ${a}`);
  }
  for (const k of after.keys()) if (!before.has(k)) out.push(`${k}: (not read) → ${after.get(k)}`);
  return out;
}

export class MigRig {
  drv!: VirtioTransportDriver;
  pciDrv: VirtioPciDriver | undefined;
  mmioDrv: VirtioMmioDriver | undefined;
  pci: GuestPciDevice | undefined;
  bus: GuestPciBus | undefined;
  ring: VringDriver | undefined;
  irqMode: IrqMode | undefined;
  line = -1;
  qSlot: MsixSlot | undefined;
  cfgSlot: MsixSlot | undefined;
  /** The QueueSel value the driver last wrote (virtio-mmio cannot read it back). */
  mmioQueueSel = 0;
  /** RAM the snapshot must not digest because it may legitimately change across migration. */
  readonly volatile = new Map<string, Buffer>();

  private constructor(readonly ctx: MigrationContext, readonly t: Transport) {}

  get m(): MigrationContext['m'] {
    return this.ctx.m;
  }
  /** Which end the script is on, for messages. */
  get where(): string {
    return `${this.ctx.impl} (hop ${this.m.migrations})`;
  }

  /** Find the device, place every BAR in index order (as a BIOS), open the driver. */
  static async open(ctx: MigrationContext, t: Transport): Promise<MigRig> {
    const r = new MigRig(ctx, t);
    if (t.kind === 'pci') {
      r.bus = new GuestPciBus(ctx.m);
      r.pci = await r.bus.device(t.slot);
      for (const b of await r.pci.listBars()) await r.pci.mapBar(b.index);
      r.pciDrv = await VirtioPciDriver.open(r.pci, { mode: t.mode, alloc: ctx.alloc });
      r.drv = r.pciDrv;
    } else {
      r.mmioDrv = new VirtioMmioDriver(ctx.m, MICROVM_MMIO_BASE + 0x200 * t.index, { alloc: ctx.alloc });
      await r.mmioDrv.probe();
      expect(r.mmioDrv.version, 'virtio-mmio version').toBe(t.version);
      r.drv = r.mmioDrv;
    }
    return r;
  }

  /** Fill the sentinel pages with their patterns. */
  async writeSentinels(): Promise<void> {
    for (const a of SENTINELS) await this.m.writeBytes(a, pattern(a, 4096));
  }

  /**
   * Reset, negotiate, set up queue 0 (resized to `num` when given), set up the interrupt mode and
   * set DRIVER_OK (unless `driverOk` is false).
   */
  async bringUp(opts: { features: bigint; num?: number; irq: IrqMode; driverOk?: boolean }): Promise<VringDriver> {
    const { drv } = this;
    this.irqMode = opts.irq;
    if (opts.irq === 'msix' || opts.irq === 'msix-masked') await this.pciDrv!.enableMsix();
    await drv.init(opts.features);
    this.ring = await drv.setupQueue(0, opts.num !== undefined ? { num: opts.num } : {});
    this.mmioQueueSel = 0;
    await this.attachIrq(opts.irq);
    if (opts.driverOk ?? true) await drv.driverOk();
    return this.ring;
  }

  private async attachIrq(mode: IrqMode): Promise<void> {
    const m = this.m;
    if (this.t.kind === 'mmio') {
      const path = await findMicrovmIoapic2(m.qmp!);
      expect(path, 'microvm second I/O APIC').toBeDefined();
      await m.irqIntercept('in', path!);
      this.line = this.t.index;
      return;
    }
    // INTx is routed in every mode, so that a stray INTx under MSI-X would show.
    await this.pci!.routeIntx(INTX_IRQ);
    await m.irqIntercept('in', 'ioapic');
    this.line = INTX_IRQ;
    if (mode === 'msix' || mode === 'msix-masked') {
      this.cfgSlot = await this.pciDrv!.msixSetupConfig(0);
      this.qSlot = await this.pciDrv!.msixSetupQueue(0, 1);
      if (mode === 'msix-masked') await this.pciDrv!.msix!.mask(1, true);
    }
  }

  /** A canary-filled buffer of `len` device-writable bytes with a guard after it. */
  async newBuffer(len: number): Promise<Buffer> {
    const addr = this.ctx.alloc.alloc(len + GUARD, 16);
    await this.m.memset(addr, len + GUARD, CANARY);
    return { addr, len };
  }

  /** Post one request of `len` bytes without notifying. */
  async post(len: number): Promise<Posted> {
    const buf = await this.newBuffer(len);
    const head = await this.ring!.add([{ addr: buf.addr, len, write: true }]);
    expect(head, 'free descriptor').toBeGreaterThanOrEqual(0);
    return { head, buf };
  }

  /** Check what the device wrote: `len` bytes changed (for 8 or more), the rest and the guard intact. */
  async checkFilled(p: Posted, usedLen: number): Promise<void> {
    const bytes = await this.m.readBytes(p.buf.addr, p.buf.len + GUARD);
    let changed = 0;
    for (let i = 0; i < usedLen; i++) if (bytes[i] !== CANARY) changed++;
    if (usedLen >= 8) expect(changed, `${this.where}: bytes the device wrote into head ${p.head}`).toBeGreaterThan(0);
    for (let i = usedLen; i < bytes.length; i++) if (bytes[i] !== CANARY) expect.fail(`${this.where}: byte ${i} past used.len ${usedLen} of head ${p.head} was overwritten`);
  }

  /** Wait for exactly the used entries of `posted`, in order, each filling its whole buffer. */
  async expectCompleted(posted: readonly Posted[], timeoutMs = 3000): Promise<UsedEntry[]> {
    const got = await this.ring!.waitUsed(posted.length, { timeoutMs, what: `${posted.length} completions on ${this.where}` });
    expect(got.map((u) => `${u.id}:${u.len}`), `${this.where}: used entries`).toEqual(posted.map((p) => `${p.head}:${p.buf.len}`));
    for (const p of posted) await this.checkFilled(p, p.buf.len);
    return got;
  }

  /** Nothing more is used within `ms` of wall-clock time. */
  async expectNoCompletion(ms = 30): Promise<void> {
    const idx = this.ring!.lastUsedIdx;
    await new Promise((r) => setTimeout(r, ms));
    expect(await this.ring!.usedIdx(), `${this.where}: used.idx must stay at ${idx}`).toBe(idx);
  }

  /**
   * Post and notify requests of the given lengths, wait for their completion and check the
   * interrupt they raised, acknowledging it (the default) or leaving it pending.
   */
  async requests(lens: readonly number[], opts: { ack?: boolean } = {}): Promise<Posted[]> {
    const mark = this.m.irq.mark();
    const posted: Posted[] = [];
    for (const l of lens) posted.push(await this.post(l));
    await this.drv.notify(0);
    await this.expectCompleted(posted);
    await this.expectInterrupt(mark, opts.ack ?? true);
    return posted;
  }

  /**
   * The queue interrupt was delivered after `mark`, the way the mode delivers it; with `ack`,
   * the driver then acknowledges it as a driver does (ISR read, MSI-X slot re-armed, mmio ACK).
   */
  async expectInterrupt(mark: number, ack: boolean): Promise<void> {
    const m = this.m;
    const w = this.where;
    switch (this.irqMode) {
      case 'intx':
      case 'mmio': {
        await poll(m, () => m.irq.find(this.line, true, mark), { timeoutMs: 2000, what: `IRQ raise ${this.line} on ${w}` });
        if (this.irqMode === 'mmio') expect(await this.mmioDrv!.interruptStatus(), `${w}: InterruptStatus`).toBe(1);
        if (!ack) return;
        const before = m.irq.mark();
        if (this.irqMode === 'intx') expect(await this.pciDrv!.isr(), `${w}: ISR`).toBe(1);
        else await this.mmioDrv!.ackInterrupt();
        await poll(m, () => m.irq.find(this.line, false, before), { timeoutMs: 2000, what: `IRQ lower ${this.line} on ${w}` });
        return;
      }
      case 'msix': {
        await poll(m, async () => (await m.readl(this.qSlot!.addr)) === LIBQOS_MSIX_DATA, { timeoutMs: 2000, what: `MSI-X message on ${w}` });
        if (ack) await m.writel(this.qSlot!.addr, 0);
        break;
      }
      case 'msix-masked': {
        const msix = this.pciDrv!.msix!;
        await poll(m, () => msix.pending(1), { timeoutMs: 2000, what: `PBA bit 1 on ${w}` });
        expect(await m.readl(this.qSlot!.addr), `${w}: a masked vector writes no message`).toBe(0);
        if (!ack) return;
        await msix.mask(1, false);
        expect(await m.readl(this.qSlot!.addr), `${w}: unmasking delivers the pending message`).toBe(LIBQOS_MSIX_DATA);
        expect(await msix.pending(1), `${w}: PBA bit after delivery`).toBe(false);
        await m.writel(this.qSlot!.addr, 0);
        await msix.mask(1, true);
        break;
      }
      default:
        throw new Error('no interrupt mode');
    }
    // INTx stays quiet while MSI-X is enabled.
    expect(m.irq.count(this.line, true, mark), `${w}: INTx raised although MSI-X is enabled`).toBe(0);
  }

  /**
   * The interrupt left pending before migration is still pending here: ISR / InterruptStatus bit
   * 0, the MSI-X message in its slot, or the PBA bit; acknowledge it and check it is gone.
   */
  async ackCarriedInterrupt(): Promise<void> {
    const m = this.m;
    const w = this.where;
    switch (this.irqMode) {
      case 'intx': {
        const statusReg = await this.pci!.status();
        expect(statusReg & 0x08, `${w}: PCI status INTERRUPT bit`).toBe(0x08);
        expect(await this.pciDrv!.isr(), `${w}: ISR carried over`).toBe(1);
        expect(await this.pciDrv!.isr(), `${w}: ISR after the read that cleared it`).toBe(0);
        expect((await this.pci!.status()) & 0x08, `${w}: PCI status INTERRUPT bit after ISR read`).toBe(0);
        break;
      }
      case 'mmio':
        expect(await this.mmioDrv!.interruptStatus(), `${w}: InterruptStatus carried over`).toBe(1);
        await this.mmioDrv!.ackInterrupt();
        expect(await this.mmioDrv!.interruptStatus(), `${w}: InterruptStatus after ACK`).toBe(0);
        break;
      case 'msix':
        expect(await m.readl(this.qSlot!.addr), `${w}: MSI-X message carried over in RAM`).toBe(LIBQOS_MSIX_DATA);
        await m.writel(this.qSlot!.addr, 0);
        // The device sets ISR bit 0 alongside MSI-X; this driver never read it.
        expect(await this.pciDrv!.isr(), `${w}: ISR carried over (MSI-X)`).toBe(1);
        break;
      case 'msix-masked': {
        const msix = this.pciDrv!.msix!;
        expect(await msix.pending(1), `${w}: PBA bit carried over`).toBe(true);
        expect(await m.readl(this.qSlot!.addr), `${w}: no message while masked`).toBe(0);
        await msix.mask(1, false);
        expect(await m.readl(this.qSlot!.addr), `${w}: unmasking delivers the carried message`).toBe(LIBQOS_MSIX_DATA);
        expect(await msix.pending(1), `${w}: PBA bit after delivery`).toBe(false);
        await m.writel(this.qSlot!.addr, 0);
        await msix.mask(1, true);
        expect(await this.pciDrv!.isr(), `${w}: ISR carried over (MSI-X)`).toBe(1);
        break;
      }
      default:
        throw new Error('no interrupt mode');
    }
  }

  /**
   * Reset and bring the device up again on the same interrupt set-up (MSI-X entries and slots
   * kept, intercepts already in place), with a fresh ring.
   */
  async reinit(opts: { features: bigint; num?: number }): Promise<VringDriver> {
    const { drv } = this;
    await drv.init(opts.features);
    this.ring = await drv.setupQueue(0, opts.num !== undefined ? { num: opts.num } : {});
    this.mmioQueueSel = 0;
    if (this.irqMode === 'msix' || this.irqMode === 'msix-masked') {
      await this.pciDrv!.msixSetupConfig(0, this.cfgSlot!.addr);
      await this.pciDrv!.msixSetupQueue(0, 1, this.qSlot!.addr);
      if (this.irqMode === 'msix-masked') await this.pciDrv!.msix!.mask(1, true);
    }
    await drv.driverOk();
    return this.ring;
  }

  async needsReset(): Promise<boolean> {
    return ((await this.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
  }

  // --- snapshot ------------------------------------------------------------------------------

  /** Everything a driver can read without changing the device, by name. */
  async snapshot(opts: SnapshotOptions = {}): Promise<Snapshot> {
    const s: Snapshot = new Map();
    if (this.t.kind === 'pci') await this.snapPci(s);
    else await this.snapMmio(s);
    await this.snapRing(s);
    await this.snapRam(s, opts);
    return s;
  }

  private async snapPci(s: Snapshot): Promise<void> {
    const dev = this.pci!;
    const cfg = await dev.configDump();
    const dv = new DataView(cfg.buffer);
    for (let o = 0; o < 256; o += 4) s.set(`cfg[${hex(o)}]`, hex(dv.getUint32(o, true), 8));
    // PIRQ routing lives in the PIIX3 (00:01.0), a device of its own in the stream.
    s.set('piix3.pirq[0x60..0x63]', hex(await this.bus!.configReadl(devfn(1, 0), 0x60), 8));
    const msixCap = await dev.findCapability(0x11);
    if (msixCap) {
      const size = ((await dev.readw(msixCap + 2)) & 0x7ff) + 1;
      const table = await dev.readl(msixCap + 4);
      const pba = await dev.readl(msixCap + 8);
      const tbar = dev.bars[table & 7];
      const pbar = dev.bars[pba & 7];
      if (tbar && pbar) {
        for (let i = 0; i < size; i++) {
          const vals = await Promise.all([0, 4, 8, 12].map((o) => tbar.readl((table & ~7) + 16 * i + o)));
          s.set(`msix.table[${i}]`, vals.map((v) => hex(v, 8)).join(' '));
        }
        s.set('msix.pba', hex(await pbar.readl(pba & ~7), 8));
      }
    }
    const drv = this.pciDrv!;
    if (drv.hasModernInterface) await this.snapModern(s, drv.legacy);
    if (drv.hasLegacyInterface) await this.snapLegacy(s, !drv.legacy);
  }

  /** The modern common configuration; queues walked by queue_select, which is put back. */
  private async snapModern(s: Snapshot, registersOnly: boolean): Promise<void> {
    const drv = this.pciDrv!;
    const cap = drv.caps.find((c) => c.cfgType === 1)!;
    const bar = this.pci!.bars[cap.bar]!;
    const at = (o: number): number => cap.offset + o;
    const C = VirtioPciCommon;
    const dfsel = await bar.readl(at(C.DFSELECT));
    const gfsel = await bar.readl(at(C.GFSELECT));
    s.set('common.device_feature_select', hex(dfsel, 8));
    s.set('common.device_feature (selected)', hex(await bar.readl(at(C.DF)), 8));
    s.set('common.driver_feature_select', hex(gfsel, 8));
    s.set('common.driver_feature (selected)', hex(await bar.readl(at(C.GF)), 8));
    s.set('common.msix_config', hex(await bar.readw(at(C.MSIX)), 4));
    const numq = await bar.readw(at(C.NUMQ));
    s.set('common.num_queues', String(numq));
    s.set('common.device_status', hex(await bar.readb(at(C.STATUS))));
    s.set('common.config_generation', String(await bar.readb(at(C.CFGGENERATION))));
    const qsel = await bar.readw(at(C.Q_SELECT));
    s.set('common.queue_select', String(qsel));
    if (registersOnly) return;
    for (const sel of [0, 1]) {
      await bar.writel(at(C.DFSELECT), sel);
      s.set(`common.device_feature[${sel}]`, hex(await bar.readl(at(C.DF)), 8));
      await bar.writel(at(C.GFSELECT), sel);
      s.set(`common.driver_feature[${sel}]`, hex(await bar.readl(at(C.GF)), 8));
    }
    await bar.writel(at(C.DFSELECT), dfsel);
    await bar.writel(at(C.GFSELECT), gfsel);
    for (let q = 0; q <= numq; q++) {
      await bar.writew(at(C.Q_SELECT), q);
      const w = async (o: number): Promise<number> => bar.readw(at(o));
      const l64 = async (lo: number): Promise<string> => hex((await bar.readl(at(lo + 4))) * 2 ** 32 + (await bar.readl(at(lo))), 12);
      s.set(`q${q}.size/msix_vector/enable/notify_off`, [await w(C.Q_SIZE), hex(await w(C.Q_MSIX), 4), await w(C.Q_ENABLE), await w(C.Q_NOFF)].join(' '));
      s.set(`q${q}.desc/driver/device`, [await l64(C.Q_DESCLO), await l64(C.Q_AVAILLO), await l64(C.Q_USEDLO)].join(' '));
    }
    await bar.writew(at(C.Q_SELECT), qsel);
  }

  /** The legacy I/O registers (ISR left out: reading it clears it). */
  private async snapLegacy(s: Snapshot, registersOnly: boolean): Promise<void> {
    const io = this.pci!.bars[0]!;
    const L = VirtioPciLegacy;
    s.set('legacy.host_features', hex(await io.readl(L.HOST_FEATURES), 8));
    s.set('legacy.guest_features', hex(await io.readl(L.GUEST_FEATURES), 8));
    s.set('legacy.status', hex(await io.readb(L.STATUS)));
    const qsel = await io.readw(L.QUEUE_SEL);
    s.set('legacy.queue_sel', String(qsel));
    const msixOn = this.pciDrv!.msix !== undefined;
    if (msixOn) s.set('legacy.config_vector', hex(await io.readw(L.MSI_CONFIG_VECTOR), 4));
    if (registersOnly) return;
    for (const q of [0, 1]) {
      await io.writew(L.QUEUE_SEL, q);
      const vec = msixOn ? ` vector ${hex(await io.readw(L.MSI_QUEUE_VECTOR), 4)}` : '';
      s.set(`legacy.q${q}`, `pfn ${hex(await io.readl(L.QUEUE_PFN), 5)} num ${await io.readw(L.QUEUE_NUM)}${vec}`);
    }
    await io.writew(L.QUEUE_SEL, qsel);
  }

  /** virtio-mmio's readable registers; QueueSel is write-only, so it is put back to the driver's value. */
  private async snapMmio(s: Snapshot): Promise<void> {
    const d = this.mmioDrv!;
    const r = (o: number): Promise<number> => d.read(o);
    s.set('mmio.magic/version/device/vendor', [await r(VIRTIO_MMIO_MAGIC_VALUE), await r(VIRTIO_MMIO_VERSION), await r(VIRTIO_MMIO_DEVICE_ID), await r(VIRTIO_MMIO_VENDOR_ID)].map((v) => hex(v, 8)).join(' '));
    s.set('mmio.device_features (selected)', hex(await r(VIRTIO_MMIO_DEVICE_FEATURES), 8));
    s.set('mmio.status', hex(await r(VIRTIO_MMIO_STATUS)));
    s.set('mmio.interrupt_status', hex(await r(VIRTIO_MMIO_INTERRUPT_STATUS)));
    if (d.version === 2) s.set('mmio.config_generation', String(await r(VIRTIO_MMIO_CONFIG_GENERATION)));
    for (const q of [0, 1]) {
      await d.write(VIRTIO_MMIO_QUEUE_SEL, q);
      const reg = d.version === 1 ? `pfn ${hex(await r(VIRTIO_MMIO_QUEUE_PFN), 5)}` : `ready ${await r(VIRTIO_MMIO_QUEUE_READY)}`;
      s.set(`mmio.q${q}`, `num_max ${await r(VIRTIO_MMIO_QUEUE_NUM_MAX)} ${reg}`);
    }
    await d.write(VIRTIO_MMIO_QUEUE_SEL, this.mmioQueueSel);
  }

  /** The used ring as the driver sees it. */
  private async snapRing(s: Snapshot): Promise<void> {
    const ring = this.ring;
    if (!ring) return;
    const used = await this.m.readBytes(ring.addrs.used, 6 + 8 * ring.num);
    const dv = new DataView(used.buffer, used.byteOffset);
    s.set('vq0.used.flags', String(dv.getUint16(0, true)));
    s.set('vq0.used.idx', String(dv.getUint16(2, true)));
    for (let i = 0; i < ring.num; i++) s.set(`vq0.used[${i}]`, `${dv.getUint32(4 + 8 * i, true)}:${dv.getUint32(8 + 8 * i, true)}`);
    s.set('vq0.used.avail_event', String(dv.getUint16(4 + 8 * ring.num, true)));
  }

  private masked(base: number, bytes: Uint8Array): Uint8Array {
    const ring = this.ring;
    const ranges: Buffer[] = [...this.volatile.values()];
    if (ring) ranges.push({ addr: ring.addrs.used, len: 6 + 8 * ring.num });
    for (const r of ranges) {
      const from = Math.max(0, r.addr - base);
      const to = Math.min(bytes.length, r.addr + r.len - base);
      if (to > from) bytes.fill(0, from, to);
    }
    return bytes;
  }

  private async snapRam(s: Snapshot, opts: SnapshotOptions): Promise<void> {
    const { alloc } = this.ctx;
    for (const a of SENTINELS) s.set(`ram.sentinel@${hex(a, 6)}`, digest(await this.m.readBytes(a, 4096)));
    const used = alloc.used;
    if (used > 0) s.set(`ram.window ${hex(alloc.start, 6)}+${hex(used, 4)}`, digest(this.masked(alloc.start, await this.m.readBytes(alloc.start, used))));
    if (opts.fullRam) {
      const size = 16 << 20;
      const parts: Uint8Array[] = [];
      for (let a = 0; a < size; a += 1 << 20) parts.push(await this.m.readBytes(a, 1 << 20));
      const all = new Uint8Array(size);
      parts.forEach((p, i) => all.set(p, i << 20));
      s.set('ram.all 16 MiB', digest(this.masked(0, all)));
    }
  }
}

/**
 * What may change between the source's snapshot and the destination's when one request was
 * posted but not notified: QEMU's rng processes the avail ring when the VM starts running
 * (`virtio_rng_vm_state_change`), so the destination may already have completed it; then
 * used.idx is one more, its slot holds `head:len`, and avail_event may have moved.
 */
export function pendingAllowances(ring: VringDriver, p: Posted, usedIdxBefore: number): Map<string, Allowance> {
  const slot = usedIdxBefore % ring.num;
  return new Map<string, Allowance>([
    ['vq0.used.idx', (b, a) => Number(a) === ((Number(b) + 1) & 0xffff)],
    [`vq0.used[${slot}]`, (_b, a) => a === `${p.head}:${p.buf.len}`],
    ['vq0.used.avail_event', (b, a) => Number(a) === ((Number(b) + 1) & 0xffff)],
  ]);
}
