// virtio-balloon (QEMU's hw/virtio/virtio-balloon.c) at device level: features, queues and config
// per property, target and actual, inflate/deflate with the embedder's callbacks, PFNs that are
// not RAM, statistics on the virtual clock, free page reporting and hinting, hostile inputs
// (huge arrays, the same page twice, garbage rings), and device-level migration.
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import {
  BALLOON_STAT_UNSET,
  FREE_PAGE_HINT_S_DONE,
  FREE_PAGE_HINT_S_REQUESTED,
  FREE_PAGE_HINT_S_START,
  FREE_PAGE_HINT_S_STOP,
  VIRTIO_BALLOON_F_FREE_PAGE_HINT,
  VIRTIO_BALLOON_F_PAGE_POISON,
  VIRTIO_BALLOON_F_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
  VirtIOBalloon,
  type PageRange,
  type VirtIOBalloonOptions,
} from '../../src/devices/balloon/virtio-balloon.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { decodeVirtioBlob } from '../../src/migration/virtio-decode.js';
import { bit, VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/virtio/constants.js';
import { modernAddrs } from '../support/harness.js';
import { SplitRingDriver as RingDriver } from '../../src/driver/split-ring.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { VIRTIO_MMIO_QUEUE_ALIGN, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_PFN, VIRTIO_MMIO_QUEUE_SEL } from '../../src/bus/virtio-mmio.js';

const RAM = 4 << 20;
const Q = [0x10000, 0x20000, 0x30000, 0x40000, 0x50000];
const BUF = 0x80000;
const PAGE = 0x200; // PFN of a test page (2 MiB)
const STATS = bit(VIRTIO_BALLOON_F_STATS_VQ);
const POISON = bit(VIRTIO_BALLOON_F_PAGE_POISON);
const HINT = bit(VIRTIO_BALLOON_F_FREE_PAGE_HINT);
const REPORTING = bit(VIRTIO_BALLOON_F_REPORTING);

function make(opts: Partial<VirtIOBalloonOptions> = {}, memory = GuestMemory.ofSize(RAM), legacy = false) {
  const discarded: PageRange[][] = [];
  const deflated: PageRange[][] = [];
  const changes: bigint[] = [];
  const errors: string[] = [];
  const clock = new VirtualClock();
  const dev = new VirtIOBalloon({
    memory,
    ramSize: RAM,
    clock,
    wallClockSeconds: () => 1234,
    onDiscard: (r) => discarded.push(r.map((x) => ({ ...x }))),
    onDeflate: (r) => deflated.push(r.map((x) => ({ ...x }))),
    onBalloonChange: (a) => changes.push(a),
    onError: (m) => errors.push(m),
    ...opts,
  });
  let irqs = 0;
  const mmio = new VirtioMmioTransport(dev, { legacy, irq: (l) => void (l && irqs++) });
  const drv = new MmioDriver(mmio, memory);
  return { dev, mmio, drv, mem: memory, clock, discarded, deflated, changes, errors, irqs: () => irqs };
}
type Rig = ReturnType<typeof make>;

function up(r: Rig, features: bigint, queues = 3): SplitRingDriver[] {
  r.drv.init(features);
  const rings: SplitRingDriver[] = [];
  for (let i = 0; i < queues; i++) rings.push(r.drv.setupQueue(i, { num: 16, addrs: modernAddrs(Q[i]!, 16), base: Q[i]! }));
  r.drv.driverOk();
  return rings;
}

const cfgr = (r: Rig, off: number) => r.mmio.read(0x100 + off, 4);
const cfgw = (r: Rig, off: number, size: 1 | 2 | 4, v: number) => r.mmio.write(0x100 + off, size, v);

/** Write a PFN array at `addr` and post it on `ring`. */
function postPfns(r: Rig, ring: SplitRingDriver, addr: number, pfns: readonly number[], extra: Uint8Array = new Uint8Array(0)): number {
  const b = new Uint8Array(4 * pfns.length + extra.length);
  const dv = new DataView(b.buffer);
  pfns.forEach((p, i) => dv.setUint32(4 * i, p >>> 0, !r.dev.isBigEndian()));
  b.set(extra, 4 * pfns.length);
  r.mem.write(addr, b);
  return ring.add([{ addr, len: b.length, write: false }]);
}

const fill = (r: Rig, pfn: number, v: number) => r.mem.fill(pfn * 4096, 4096, v);
const pageIs = (r: Rig, pfn: number, v: number) => r.mem.view(pfn * 4096, 4096)!.every((x) => x === v);

describe('virtio-balloon: features, queues and config as QEMU 7.2 offers them', () => {
  it('defaults: STATS_VQ and PAGE_POISON, three queues of 128, a 16-byte config', () => {
    const r = make();
    expect(r.dev.hostFeatures & 0x3fn).toBe(STATS | POISON);
    expect(r.dev.vq.map((q) => q.numDefault)).toEqual([128, 128, 128]);
    expect(r.dev.configLen).toBe(16);
  });

  it('each property: its bit, its queue (taking the next index), the config size QEMU gives', () => {
    expect(make({ pagePoison: false }).dev.configLen).toBe(8);
    expect(make({ pagePoison: false, freePageHint: true }).dev.configLen).toBe(12);
    expect(make({ pagePoison: false, qemu40ConfigSize: true }).dev.configLen).toBe(16);
    expect(make({ deflateOnOom: true }).dev.hostFeatures & 4n).toBe(4n);
    const rep = make({ freePageReporting: true });
    expect(rep.dev.vq.map((q) => q.numDefault)).toEqual([128, 128, 128, 32]);
    expect(rep.dev.reportingVq!.index).toBe(3);
    const both = make({ freePageReporting: true, freePageHint: true });
    expect(both.dev.vq.map((q) => q.numDefault)).toEqual([128, 128, 128, 1024, 32]);
    expect(both.dev.freePageVq!.index).toBe(3);
    expect(both.dev.reportingVq!.index).toBe(4);
  });
});

describe('virtio-balloon: target and actual', () => {
  it('a target sets num_pages (clamped to RAM, 0 ignored) and notifies a config change', () => {
    const r = make();
    up(r, STATS);
    r.dev.setTarget(BigInt(RAM / 2));
    expect(cfgr(r, 0)).toBe(RAM / 2 / 4096);
    expect(r.drv.interruptStatus() & 2).toBe(2);
    r.dev.setTarget(1n << 40n);
    expect(cfgr(r, 0)).toBe(0);
    r.dev.setTarget(BigInt(RAM - 4096));
    r.dev.setTarget(0n);
    expect(cfgr(r, 0)).toBe(1);
  });

  it('actual written by the driver: a change event per changed value (byte writes included), query-balloon in bytes', () => {
    const r = make();
    up(r, STATS);
    cfgw(r, 4, 4, 256);
    cfgw(r, 4, 4, 256);
    cfgw(r, 5, 1, 2);
    expect(r.changes).toEqual([BigInt(RAM - 256 * 4096), BigInt(RAM - 512 * 4096)]);
    expect(r.dev.queryActual()).toBe(BigInt(RAM - 512 * 4096));
    cfgw(r, 4, 4, 0xffff_ffff);
    expect(r.dev.queryActual()).toBe(BigInt(RAM) - (0xffff_ffffn << 12n));
    // The driver cannot change num_pages or the command id; poison_val only with PAGE_POISON.
    cfgw(r, 0, 4, 77);
    cfgw(r, 12, 4, 0xaa);
    expect([cfgr(r, 0), cfgr(r, 12)]).toEqual([0, 0]);
  });
});

describe('virtio-balloon: inflate and deflate', () => {
  it('inflated pages read as zeros and are reported in ranges; deflate reports only what was inflated', () => {
    const r = make();
    const [ivq, dvq] = up(r, STATS);
    for (const p of [PAGE, PAGE + 1, PAGE + 2, PAGE + 7]) fill(r, p, 0x5a);
    postPfns(r, ivq!, BUF, [PAGE, PAGE + 1, PAGE + 2, PAGE + 7, PAGE + 1]);
    r.drv.notify(0);
    expect(ivq!.takeUsed().map((u) => u.len)).toEqual([0]);
    expect([PAGE, PAGE + 1, PAGE + 2, PAGE + 7].every((p) => pageIs(r, p, 0))).toBe(true);
    // The page listed twice is discarded again but reported once.
    expect(r.discarded).toEqual([[{ gpa: PAGE * 4096, length: 3 * 4096 }, { gpa: (PAGE + 7) * 4096, length: 4096 }]]);
    expect(r.dev.inflatedPages).toBe(4);
    fill(r, PAGE, 0x11);
    postPfns(r, dvq!, BUF + 0x100, [PAGE, PAGE + 3, PAGE + 7]);
    r.drv.notify(1);
    expect(dvq!.takeUsed().map((u) => u.len)).toEqual([0]);
    expect(pageIs(r, PAGE, 0x11)).toBe(true);
    expect(r.deflated).toEqual([[{ gpa: PAGE * 4096, length: 4096 }, { gpa: (PAGE + 7) * 4096, length: 4096 }]]);
    expect(r.dev.inflatedPages).toBe(2);
  });

  it('PFNs outside writable RAM are skipped: past the end, in a hole, in ROM, 0xffffffff; trailing bytes ignored', () => {
    const memory = new GuestMemory([
      { base: 0, size: 0x20_0000 },
      { base: 0x30_0000, size: 0x1000, readonly: true, name: 'rom' },
      { base: 0x40_0000, size: 0x10_0000 },
    ]);
    const r = make({}, memory);
    const [ivq] = up(r, STATS);
    memory.fill(0x40_0000, 0x1000, 7);
    postPfns(r, ivq!, BUF, [0x300, 0x250, 0x500, 0xffff_ffff, 0x400], new Uint8Array([1, 2, 3]));
    r.drv.notify(0);
    expect(ivq!.takeUsed().length).toBe(1);
    expect(r.discarded).toEqual([[{ gpa: 0x40_0000, length: 4096 }]]);
    expect(memory.view(0x40_0000, 4096)!.every((x) => x === 0)).toBe(true);
    expect(r.errors).toEqual([]);
  });

  it('a legacy big-endian guest writes PFNs in its byte order', () => {
    const memory = GuestMemory.ofSize(RAM);
    const r = make({ guestBigEndian: true }, memory, true);
    r.drv.init(STATS);
    // A big-endian guest's rings are big-endian too: programmed by hand (MmioDriver builds LE rings).
    const ivq = new RingDriver({ memory, num: 16, addrs: legacyLayout(Q[0]!, 16, 4096), le: false, eventIdx: false });
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 16);
    r.mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, Q[0]! / 4096);
    r.drv.driverOk();
    expect(r.dev.isBigEndian()).toBe(true);
    fill(r, PAGE, 9);
    postPfns(r, ivq, BUF, [PAGE]);
    r.drv.notify(0);
    expect(pageIs(r, PAGE, 0)).toBe(true);
  });

  it('huge arrays: at most maxPfnsPerBuffer read per buffer, bounded time', () => {
    const r = make({ maxPfnsPerBuffer: 1024 });
    const [ivq] = up(r, STATS);
    // 2 MiB of PFNs (524288 entries), all pointing at one page, the last one elsewhere.
    const n = 1 << 19;
    const b = new Uint8Array(4 * n);
    const dv = new DataView(b.buffer);
    for (let i = 0; i < n; i++) dv.setUint32(4 * i, PAGE, true);
    dv.setUint32(4 * (n - 1), PAGE + 9, true);
    r.mem.write(0x100000, b);
    fill(r, PAGE + 9, 3);
    ivq!.add([{ addr: 0x100000, len: 4 * n, write: false }]);
    const t = performance.now();
    r.drv.notify(0);
    expect(performance.now() - t).toBeLessThan(500);
    expect(ivq!.takeUsed().length).toBe(1);
    expect(pageIs(r, PAGE + 9, 3)).toBe(true);
    expect(r.dev.inflatedPages).toBe(1);
  });
});

describe('virtio-balloon: statistics', () => {
  function statBuf(r: Rig, addr: number, pairs: readonly (readonly [number, bigint])[], trailing = 0): number {
    const b = new Uint8Array(10 * pairs.length + trailing);
    const dv = new DataView(b.buffer);
    pairs.forEach(([t, v], i) => {
      dv.setUint16(10 * i, t, true);
      dv.setBigUint64(10 * i + 2, v, true);
    });
    r.mem.write(addr, b);
    return b.length;
  }

  it('the buffer is held, read (unknown tags and a partial record ignored), and given back when the timer polls', () => {
    const r = make();
    const [, , svq] = up(r, STATS);
    const len = statBuf(r, BUF, [[4, 100n], [0x7777, 5n], [9, 7n]], 5);
    const h = svq!.add([{ addr: BUF, len, write: false }]);
    r.drv.notify(2);
    expect(svq!.usedIdx()).toBe(0);
    const s = r.dev.guestStats();
    expect(s['last-update']).toBe(1234);
    expect(s.stats['stat-free-memory']).toBe(100n);
    expect(s.stats['stat-htlb-pgfail']).toBe(7n);
    expect(s.stats['stat-swap-in']).toBe(BALLOON_STAT_UNSET);
    // Polling from 0 fires at once; then every 2 s after the next buffer comes.
    r.dev.setStatsPollInterval(2);
    expect(svq!.takeUsed()).toEqual([{ id: h, len: 0 }]);
    const h2 = svq!.add([{ addr: BUF + 0x100, len: statBuf(r, BUF + 0x100, [[1, 1n]]), write: false }]);
    r.drv.notify(2);
    r.clock.step(1_999_999_999);
    expect(svq!.usedIdx()).toBe(1);
    r.clock.step(1);
    expect(svq!.takeUsed()).toEqual([{ id: h2, len: 0 }]);
    expect(r.dev.guestStats().stats['stat-free-memory']).toBe(BALLOON_STAT_UNSET);
  });

  it("QEMU's property checks; 0 stops polling", () => {
    const r = make();
    expect(() => r.dev.setStatsPollInterval(-1)).toThrow('timer value must be greater than zero');
    expect(() => r.dev.setStatsPollInterval(2n ** 32n)).toThrow('timer value is too big');
    r.dev.setStatsPollInterval(3);
    r.dev.setStatsPollInterval(0);
    expect(r.dev.statsPollInterval).toBe(0);
    expect(r.clock.nextDeadline()).toBeUndefined();
  });

  it('two buffers, one kick: one taken; the next kick returns the one held', () => {
    const r = make();
    const [, , svq] = up(r, STATS);
    const a = svq!.add([{ addr: BUF, len: statBuf(r, BUF, [[2, 3n]]), write: false }]);
    svq!.add([{ addr: BUF + 0x40, len: statBuf(r, BUF + 0x40, [[3, 4n]]), write: false }]);
    r.drv.notify(2);
    expect(r.dev.guestStats().stats['stat-major-faults']).toBe(3n);
    r.drv.notify(2);
    expect(svq!.takeUsed()).toEqual([{ id: a, len: 0 }]);
    expect(r.dev.guestStats().stats['stat-minor-faults']).toBe(4n);
  });
});

describe('virtio-balloon: free page reporting and hinting', () => {
  it('reported pages are discarded when page-aligned, and kept with a non-zero poison value', () => {
    const r = make({ freePageReporting: true });
    const rings = up(r, REPORTING | POISON, 4);
    const rq = rings[3]!;
    fill(r, PAGE, 1);
    fill(r, PAGE + 1, 1);
    rq.add([
      { addr: PAGE * 4096, len: 4096, write: true },
      { addr: (PAGE + 1) * 4096 + 2048, len: 2048, write: true },
    ]);
    r.drv.notify(3);
    expect(pageIs(r, PAGE, 0)).toBe(true);
    expect(pageIs(r, PAGE + 1, 1)).toBe(true);
    expect(r.discarded).toEqual([[{ gpa: PAGE * 4096, length: 4096 }]]);
    cfgw(r, 12, 4, 0xaa);
    fill(r, PAGE, 1);
    rq.add([{ addr: PAGE * 4096, len: 4096, write: true }]);
    r.drv.notify(3);
    expect(pageIs(r, PAGE, 1)).toBe(true);
    expect(rq.takeUsed().map((u) => u.len)).toEqual([0, 0]);
  });

  it('hinting follows a migration: REQUESTED with a new id while running, START on that id, STOP, DONE', () => {
    const r = make({ freePageHint: true });
    const rings = up(r, HINT | POISON, 4);
    const hq = rings[3]!;
    expect(cfgr(r, 8)).toBe(0);
    r.dev.precopyNotify('before-bitmap-sync');
    r.dev.precopyNotify('after-bitmap-sync');
    expect([r.dev.freePageHintStatus, cfgr(r, 8)]).toEqual([FREE_PAGE_HINT_S_REQUESTED, 0x8000_0001]);
    const id = new Uint8Array(4);
    new DataView(id.buffer).setUint32(0, 0x8000_0001, true);
    r.mem.write(BUF, id);
    hq.add([{ addr: BUF, len: 4, write: false }]);
    hq.add([{ addr: 0x100000, len: 8192, write: true }]);
    r.drv.notify(3);
    expect(r.dev.freePageHintStatus).toBe(FREE_PAGE_HINT_S_START);
    expect(hq.takeUsed().map((u) => u.len)).toEqual([0, 0]);
    r.dev.vmStateChange(false);
    r.dev.precopyNotify('before-bitmap-sync');
    expect(r.dev.freePageHintStatus).toBe(FREE_PAGE_HINT_S_STOP);
    r.dev.precopyNotify('after-bitmap-sync');
    expect([r.dev.freePageHintStatus, cfgr(r, 8)]).toEqual([FREE_PAGE_HINT_S_DONE, 1]);
  });

  it('a command id shorter than 4 bytes breaks the device ("received an incorrect cmd id")', () => {
    const r = make({ freePageHint: true });
    const rings = up(r, HINT, 4);
    rings[3]!.add([{ addr: BUF, len: 3, write: false }]);
    r.drv.notify(3);
    expect(r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(r.errors).toEqual(['received an incorrect cmd id']);
  });
});

describe('virtio-balloon: host callbacks', () => {
  it('a callback that throws (T-Gl3: the host failed to reclaim) neither breaks the device nor undoes the discard', () => {
    const r = make({ onDiscard: () => { throw new Error('reclaim failed'); }, onBalloonChange: () => { throw new Error('no'); } });
    const [ivq] = up(r, STATS);
    fill(r, PAGE, 0x33);
    postPfns(r, ivq!, BUF, [PAGE]);
    expect(() => r.drv.notify(0)).not.toThrow();
    expect(ivq!.takeUsed().length).toBe(1);
    expect(pageIs(r, PAGE, 0)).toBe(true);
    cfgw(r, 4, 4, 1);
    expect(r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(r.errors).toEqual([]);
  });
});

describe('virtio-balloon: hostile rings', () => {
  it('garbage in every queue never throws', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const r = make({ freePageReporting: true, freePageHint: true });
      up(r, STATS | HINT | REPORTING | POISON, 5);
      let s = seed * 2654435761;
      const rnd = () => ((s = (s ^ (s << 13)) >>> 0), (s = (s ^ (s >>> 17)) >>> 0), (s = (s ^ (s << 5)) >>> 0), s);
      for (const q of Q) for (let i = 0; i < 96; i++) r.mem.write32(q + 4 * (rnd() % 160), rnd());
      expect(() => {
        for (let i = 0; i < 5; i++) r.drv.notify(i);
        r.dev.setStatsPollInterval(1);
        r.clock.step(3e9);
        r.dev.precopyNotify('after-bitmap-sync');
      }).not.toThrow();
    }
  });
});

describe('virtio-balloon: migration (virtio-balloon-device and its subsections)', () => {
  it('num_pages, actual, hint command and status, poison value round-trip; the blob decodes field by field', () => {
    const memory = GuestMemory.ofSize(RAM);
    const a = make({ freePageHint: true }, memory);
    up(a, STATS | HINT | POISON, 4);
    a.dev.setTarget(BigInt(RAM / 4));
    cfgw(a, 4, 4, 17);
    cfgw(a, 12, 4, 0x5a);
    a.dev.freePageStart();
    const blob = saveVirtioDevice(a.dev);
    const b = make({ freePageHint: true }, memory);
    loadVirtioDevice(b.dev, blob);
    expect([b.dev.numPages, b.dev.actual, b.dev.freePageHintCmdId, b.dev.freePageHintStatus, b.dev.poisonVal]).toEqual([768, 17, 0x8000_0001, FREE_PAGE_HINT_S_REQUESTED, 0x5a]);
    expect(saveVirtioDevice(b.dev)).toEqual(blob);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', deviceVmsd: 'virtio-balloon' });
    const names = JSON.stringify(d.fields, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
    for (const f of ['num_pages', 'actual', 'virtio-balloon-device/free-page-report', 'free_page_hint_status', 'virtio-balloon-device/page-poison', 'poison_val']) expect(names).toContain(f);
    expect(d.subsections.map((s) => s.name)).toContain('virtio/64bit_features');
  });

  it('a stats buffer held at save is taken again when the destination VM starts', () => {
    const memory = GuestMemory.ofSize(RAM);
    const a = make({}, memory);
    const [, , svq] = up(a, STATS);
    const rec = new Uint8Array(10);
    new DataView(rec.buffer).setUint16(0, 4, true);
    rec[2] = 42;
    memory.write(BUF, rec);
    const h = svq!.add([{ addr: BUF, len: 10, write: false }]);
    a.drv.notify(2);
    const blob = saveVirtioDevice(a.dev);
    const b = make({}, memory);
    b.dev.vmStateChange(false);
    loadVirtioDevice(b.dev, blob);
    expect(b.dev.statsElem).toBeUndefined();
    b.dev.vmStateChange(true);
    expect(b.dev.guestStats().stats['stat-free-memory']).toBe(42n);
    b.dev.setStatsPollInterval(1);
    expect(svq!.takeUsed()).toEqual([{ id: h, len: 0 }]);
  });
});
