// Golden comparison with QEMU 7.2: the configuration space, BAR sizes, writable bits and
// register reads that scripts/capture-pci-golden.mjs recorded from the real
// qemu-system-x86_64 (test/golden/pci/*.json), replayed on our virtio-pci proxy.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { VirtIOPCIProxy, type VirtioPciOptions } from '../../src/bus/virtio-pci.js';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { FakePciHost } from '../support/pci-host.js';

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), '../golden/pci');

interface Golden {
  qemu: string;
  device: string;
  config: string;
  barProbe: { offset: number; value: string; readback: string }[];
  bars: { index: number; type: string; prefetchable: boolean; size: number }[];
  writeProbe: { ones: string; zeros: string };
  registers: Record<string, [number, number, string][]>;
  ops?: GoldenOp[];
  /** What QEMU printed (e.g. "unable to init msix vectors to 2049"). */
  stderr?: string;
}

/** One step of a recorded script: [space, 'r' | 'w', offset, size, value (w) or result (r)]. */
type GoldenOp = [string, 'r' | 'w' | 'p', number, 1 | 2 | 4, string];

/** QEMU -device properties → our options. */
export function optionsFromDevice(device: string): VirtioPciOptions {
  const opts: VirtioPciOptions = {};
  for (const part of device.split(',').slice(1)) {
    const [k, v] = part.split('=') as [string, string];
    const on = v === 'on' || v === 'true';
    if (k === 'disable-legacy') opts.disableLegacy = v === 'auto' ? 'auto' : on;
    else if (k === 'disable-modern') opts.disableModern = on;
    else if (k === 'vectors') opts.vectors = Number(v);
    else if (k === 'page-per-vq') opts.pagePerVq = on;
    else if (k === 'ioeventfd') opts.ioeventfd = on;
    else if (k !== 'addr') throw new Error(`unknown property ${k}`);
  }
  return opts;
}

function build(device: string, warnings: string[] = []) {
  const mem = GuestMemory.ofSize(16 << 20);
  const rng = new VirtIORng({ memory: mem, entropy: deterministicEntropy(7) });
  const proxy = new VirtIOPCIProxy(rng, { ...optionsFromDevice(device), onWarning: (m) => warnings.push(m) });
  const host = new FakePciHost(mem);
  host.plug(proxy, 2 << 3);
  return { mem, rng, proxy, host };
}

function dump(p: VirtIOPCIProxy): string {
  const b = Buffer.alloc(256);
  for (let o = 0; o < 256; o += 4) b.writeUInt32LE(p.configRead(o, 4), o);
  return b.toString('hex');
}

const hex = (n: number, w: number) => '0x' + (n >>> 0).toString(16).padStart(w, '0');

const IO_BASE = 0xc000;
const BAR1_BASE = 0xe0000000;
const BAR4_BASE = 0xe1000000;

const files = readdirSync(GOLDEN).filter((f) => f.startsWith('rng-') && f.endsWith('.json')).sort();

describe('virtio-pci configuration space equals QEMU 7.2 (golden dumps)', () => {
  it('has the golden cases', () => {
    expect(files).toEqual(expect.arrayContaining([
      'rng-default.json', 'rng-disable-legacy.json', 'rng-disable-modern.json', 'rng-vectors-0.json',
      'rng-vectors-4.json', 'rng-page-per-vq.json',
    ]));
  });

  for (const file of files) {
    const g = JSON.parse(readFileSync(join(GOLDEN, file), 'utf8')) as Golden;
    describe(`${file}: -device ${g.device}`, () => {
      it('256 configuration bytes at power-on, and the same warnings', () => {
        const warnings: string[] = [];
        const { proxy } = build(g.device, warnings);
        expect(dump(proxy)).toBe(g.config);
        const qemuWarnings = (g.stderr ?? '').split('\n').filter((l) => l.includes('warning:')).map((l) => l.replace(/^.*warning: /, ''));
        expect(warnings).toEqual(qemuWarnings);
      });

      it('BAR read-backs after writing all ones, and the decoded BARs', () => {
        const { proxy } = build(g.device);
        for (const p of g.barProbe) {
          const orig = proxy.configRead(p.offset, 4);
          expect(hex(orig, 8)).toBe(p.value);
          proxy.configWrite(p.offset, 4, 0xffffffff);
          expect(hex(proxy.configRead(p.offset, 4), 8), `BAR at 0x${p.offset.toString(16)}`).toBe(p.readback);
          proxy.configWrite(p.offset, 4, orig);
        }
        const bars = [];
        for (let i = 0; i < 6; i++) {
          const b = proxy.bar(i);
          if (b) bars.push({ index: i, type: b.type, prefetchable: b.prefetchable, size: b.size });
        }
        expect(bars).toEqual(g.bars);
        expect(dump(proxy)).toBe(g.config);
      });

      it('writable bits: every dword after writing all ones, then all zeros', () => {
        const { proxy } = build(g.device);
        const ones = Buffer.alloc(256);
        const zeros = Buffer.alloc(256);
        for (let o = 0; o < 256; o += 4) {
          const orig = proxy.configRead(o, 4);
          proxy.configWrite(o, 4, 0xffffffff);
          ones.writeUInt32LE(proxy.configRead(o, 4), o);
          proxy.configWrite(o, 4, 0);
          zeros.writeUInt32LE(proxy.configRead(o, 4), o);
          proxy.configWrite(o, 4, orig);
        }
        expect(ones.toString('hex')).toBe(g.writeProbe.ones);
        expect(zeros.toString('hex')).toBe(g.writeProbe.zeros);
        expect(dump(proxy)).toBe(g.config);
      });

      it('register reads through the mapped BARs at sizes 1, 2 and 4', () => {
        const { proxy, host } = build(g.device);
        expect(Object.keys(g.registers).length).toBeGreaterThan(0);
        const got = registerReads(g, proxy, host);
        for (const [space, reads] of Object.entries(g.registers)) expect(got[space], space).toEqual(reads);
      });

      const ops = g.ops ?? [];
      {
        it(`recorded script of ${ops.length} accesses`, () => {
          expect(ops.length).toBeGreaterThan(50);
          const { proxy, host, mem } = build(g.device);
          registerReads(g, proxy, host);
          const got = replay(ops, proxy, host, mem);
          const first = got.findIndex((op, i) => op[4] !== ops[i]![4]);
          const show = (op: GoldenOp) => `${op[0]} ${op[1]} 0x${op[2].toString(16)}/${op[3]} = ${op[4]}`;
          const context = first < 0 ? '' : ops.slice(Math.max(0, first - 6), first + 1).map(show).join('\n') + `\n  ours: ${got[first]![4]}`;
          expect(first, `first difference at step ${first}:\n${context}`).toBe(-1);
        });
      }
    });
  }
});

describe('virtio-pci data path equals QEMU 7.2 (recorded scenarios)', () => {
  const { scenarios } = JSON.parse(readFileSync(join(GOLDEN, 'scenarios.json'), 'utf8')) as { scenarios: { name: string; device: string; ops: GoldenOp[] }[] };
  it('has the scenarios', () => {
    expect(scenarios.map((s) => s.name)).toEqual([
      'modern-msix', 'modern-msix-masked-then-unmasked', 'modern-intx', 'modern-master-off',
      'legacy-intx', 'legacy-msix', 'legacy-disabled-quirk', 'modern-queue-reset',
    ]);
  });
  for (const sc of scenarios) {
    it(`${sc.name}: -device ${sc.device} (${sc.ops.length} steps)`, () => {
      const { proxy, host, mem } = build(sc.device);
      const got = replay(sc.ops, proxy, host, mem);
      const first = got.findIndex((op, i) => op[4] !== sc.ops[i]![4]);
      const show = (op: GoldenOp) => `${op[0]} ${op[1]} 0x${op[2].toString(16)}/${op[3]} = ${op[4]}`;
      const context = first < 0 ? '' : sc.ops.slice(Math.max(0, first - 6), first + 1).map(show).join('\n') + `\n  ours: ${got[first]![4]}`;
      expect(first, `first difference at step ${first}:\n${context}`).toBe(-1);
    });
  }
});

/** Map the BARs as the capture script did (command 7) and do its register reads. */
function registerReads(g: Golden, proxy: VirtIOPCIProxy, host: FakePciHost): Record<string, [number, number, string][]> {
  const has = (i: number) => g.bars.some((b) => b.index === i);
  if (has(0)) proxy.configWrite(0x10, 4, IO_BASE);
  if (has(1)) proxy.configWrite(0x14, 4, BAR1_BASE);
  if (has(4)) {
    proxy.configWrite(0x20, 4, BAR4_BASE);
    proxy.configWrite(0x24, 4, 0);
  }
  proxy.configWrite(0x04, 2, 0x0007);
  const io = (o: number, s: 1 | 2 | 4) => host.io.read(IO_BASE + o, s);
  const mem = (base: number) => (o: number, s: 1 | 2 | 4) => host.mem.read(base + o, s);
  const spaces: Record<string, (o: number, s: 1 | 2 | 4) => number> = {
    legacy: io,
    common: mem(BAR4_BASE),
    isr: mem(BAR4_BASE + 0x1000),
    device: mem(BAR4_BASE + 0x2000),
    notify: mem(BAR4_BASE + 0x3000),
    msixTable: mem(BAR1_BASE),
    msixPba: mem(BAR1_BASE + 0x800),
  };
  const out: Record<string, [number, number, string][]> = {};
  for (const [space, reads] of Object.entries(g.registers)) {
    const rd = spaces[space]!;
    out[space] = reads.map(([o, s]) => [o, s, hex(rd(o, s as 1 | 2 | 4), s * 2)]);
  }
  return out;
}

/** Replay a recorded script; reads are replaced by our values, so the result equals it iff all agree. */
function replay(ops: GoldenOp[], proxy: VirtIOPCIProxy, host: FakePciHost, mem: GuestMemory): GoldenOp[] {
  const out: GoldenOp[] = [];
  for (const op of ops) {
    const [space, rw, off, size, val] = op;
    const access = (read: () => number, write: (v: number) => void): string => {
      // 'p' was a poll on QEMU (a request may finish in its main loop); ours finishes at once.
      if (rw === 'r' || rw === 'p') return hex(read(), size * 2);
      write(Number(val));
      return val;
    };
    let res: string;
    switch (space) {
      case 'cfg':
        res = access(() => proxy.configRead(off, size), (v) => proxy.configWrite(off, size, v));
        break;
      case 'io':
        res = access(() => host.io.read(off, size), (v) => host.io.write(off, size, v));
        break;
      case 'mem':
        res = access(() => host.mem.read(off, size), (v) => host.mem.write(off, size, v));
        break;
      case 'ram':
        res = access(
          () => (size === 1 ? mem.read8(off) : size === 2 ? mem.read16(off) : mem.read32(off)),
          (v) => void (size === 1 ? mem.write8(off, v) : size === 2 ? mem.write16(off, v) : mem.write32(off, v)),
        );
        break;
      default:
        throw new Error(`unknown space ${space}`);
    }
    out.push([space, rw, off, size, res]);
  }
  return out;
}
