import { describe, it, expect } from 'vitest';
import { GuestMemory, RamRegion } from '../../src/memory/guest-memory.js';
import { VirtQueue, type VirtQueueOwner } from '../../src/vring/virtqueue.js';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { SplitRingDriver, type DriverBuffer } from '../../src/driver/split-ring.js';
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_USED_F_NO_NOTIFY,
  VIRTIO_NO_VECTOR,
} from '../../src/vring/constants.js';
import { legacyLayout } from '../../src/vring/layout.js';
import type { TraceEvent, Tracer } from '../../src/trace/trace.js';

// ---------------------------------------------------------------------------------------------
// Fixture

const RAM_SIZE = 0x10_0000; // 1 MiB
const DESC = 0x1_0000;
const AVAIL = 0x2_0000;
const USED = 0x3_0000;
/** Data buffers live from here. */
const BUF = 0x4_0000;
/** Indirect tables live from here. */
const TABLE = 0x8_0000;

const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;

/** The smallest VirtQueueOwner: records virtioError messages and stops processing after one. */
class FakeOwner implements VirtQueueOwner {
  readonly name = 'fake-dev';
  tracer: Tracer | undefined = undefined;
  broken = false;
  disabled = false;
  readonly errors: string[] = [];
  constructor(readonly memory: GuestMemory) {}
  get processingStopped(): boolean {
    return this.broken || this.disabled;
  }
  virtioError(message: string): void {
    this.errors.push(message);
    this.broken = true;
  }
}

interface RigOptions {
  num?: number;
  eventIdx?: boolean;
  indirect?: boolean;
  notifyOnEmpty?: boolean;
  le?: boolean;
  memory?: GuestMemory;
}

function rig(o: RigOptions = {}) {
  const memory = o.memory ?? GuestMemory.ofSize(RAM_SIZE);
  const owner = new FakeOwner(memory);
  const num = o.num ?? 8;
  const le = o.le ?? true;
  const eventIdx = o.eventIdx ?? false;
  const drv = new SplitRingDriver({ memory, num, addrs: { desc: DESC, avail: AVAIL, used: USED }, le, eventIdx });
  const vq = new VirtQueue(owner, 0, num);
  vq.applyFeatures(eventIdx, o.indirect ?? false, o.notifyOnEmpty ?? false, le);
  vq.setRings(DESC, AVAIL, USED);
  expect(vq.isMapped).toBe(true);
  expect(owner.errors).toEqual([]);
  return { memory, owner, vq, drv, num };
}

/** A queue not yet given ring addresses. */
function bare(num = 8, memory = GuestMemory.ofSize(RAM_SIZE), index = 0) {
  const owner = new FakeOwner(memory);
  const vq = new VirtQueue(owner, index, num);
  return { memory, owner, vq };
}

function usedSlot(memory: GuestMemory, slot: number, le = true): { id: number; len: number } {
  const o = USED + 4 + 8 * slot;
  return { id: memory.read32(o, le), len: memory.read32(o + 4, le) };
}

function bytes(memory: GuestMemory, addr: number, len: number): number[] {
  return Array.from(memory.view(addr, len)!);
}

function popAll(vq: VirtQueue): VirtQueueElement[] {
  const out: VirtQueueElement[] = [];
  for (let e = vq.pop(); e; e = vq.pop()) out.push(e);
  return out;
}

function sg(e: VirtQueueElement): [number, number][] {
  const r: [number, number][] = [];
  for (let i = 0; i < e.sgNum; i++) r.push([e.sgAddr[i]!, e.sgLen[i]!]);
  return r;
}

/** Pretends [4 GiB, 8 GiB) is RAM for range checks, without allocating it. */
class PretendHugeMemory extends GuestMemory {
  static readonly BASE = 0x1_0000_0000;
  private readonly fake = new RamRegion({ base: PretendHugeMemory.BASE, size: 16, name: 'pretend' });
  // regionAt is the translation every lookup ends in (findRegion is sync + regionAt).
  override regionAt(addr: number, len: number): RamRegion | undefined {
    if (addr >= PretendHugeMemory.BASE && len >= 0 && addr + len <= 2 * PretendHugeMemory.BASE) return this.fake;
    return super.regionAt(addr, len);
  }
}

/** Runs a hook (once) when a range starting at `at` is translated: a guest racing the device. */
class TamperingMemory extends GuestMemory {
  hook: { at: number; run: () => void } | undefined;
  override regionAt(addr: number, len: number): RamRegion | undefined {
    const h = this.hook;
    if (h && addr === h.at) {
      this.hook = undefined;
      h.run();
    }
    return super.regionAt(addr, len);
  }
}

// ---------------------------------------------------------------------------------------------

describe('VirtQueue construction and setNum (QEMU virtio_queue_set_num)', () => {
  it('constructor accepts 1..1024 only', () => {
    const owner = new FakeOwner(GuestMemory.ofSize(RAM_SIZE));
    expect(() => new VirtQueue(owner, 0, 0)).toThrow(RangeError);
    expect(() => new VirtQueue(owner, 0, 1025)).toThrow(RangeError);
    expect(() => new VirtQueue(owner, 0, 2.5)).toThrow(RangeError);
    expect(new VirtQueue(owner, 0, 1024).num).toBe(1024);
    const q = new VirtQueue(owner, 5, 1);
    expect([q.num, q.numDefault, q.index, q.isMapped, q.ready, q.vector]).toEqual([1, 1, 5, false, false, VIRTIO_NO_VECTOR]);
  });

  it('ignores sizes above 1024, negative or non-integer sizes', () => {
    const { vq } = bare(8);
    for (const n of [1025, 65536, -1, 2.5, Number.NaN]) {
      expect(vq.setNum(n), String(n)).toBe(false);
      expect(vq.num).toBe(8);
    }
    expect(vq.setNum(1024)).toBe(true);
    expect(vq.num).toBe(1024);
    expect(vq.setNum(1)).toBe(true);
    expect(vq.num).toBe(1);
    expect(vq.numDefault).toBe(8);
  });

  it('cannot flip a queue between existing (non-0) and not existing (0)', () => {
    const { vq } = bare(8);
    expect(vq.setNum(0)).toBe(false);
    expect(vq.num).toBe(8);
    vq.num = 0; // a queue slot the device does not implement
    expect(vq.setNum(8)).toBe(false);
    expect(vq.num).toBe(0);
    expect(vq.setNum(0)).toBe(true);
    // Address writes to a non-existent queue are ignored.
    vq.setRings(DESC, AVAIL, USED);
    expect([vq.desc, vq.avail, vq.used, vq.isMapped]).toEqual([0, 0, 0, false]);
    vq.setLegacyAddr(DESC);
    expect([vq.desc, vq.isMapped]).toEqual([0, false]);
  });

  it('changing the size of a mapped queue drops the mapping until the rings are set again', () => {
    // Rings for 8 entries placed so that a 16-entry used ring would run past the end of RAM.
    const { vq, owner, memory } = bare(8);
    vq.setRings(DESC, AVAIL, RAM_SIZE - 68);
    expect(vq.isMapped).toBe(true);
    expect(vq.setNum(16)).toBe(true);
    expect(vq.isMapped).toBe(false);
    memory.write16(AVAIL + 2, 1);
    expect(vq.pop()).toBeNull();
    expect(vq.lastAvailIdx).toBe(0);
    // Re-setting the rings checks the new geometry.
    vq.setRings(DESC, AVAIL, RAM_SIZE - 68);
    expect(vq.isMapped).toBe(false);
    expect(owner.errors).toEqual(['Cannot map used (VQ 0)']);
  });

  it('a non-power-of-two size is stored, then refused when the rings are mapped', () => {
    const { vq, owner } = bare(8, undefined, 3);
    expect(vq.setNum(6)).toBe(true);
    expect(vq.num).toBe(6);
    vq.setRings(DESC, AVAIL, USED);
    expect(vq.isMapped).toBe(false);
    expect(owner.errors).toEqual(['VQ 3: size 6 is not a power of two']);
    expect(vq.pop()).toBeNull();
  });
});

describe('mapRings refuses bad ring addresses', () => {
  const cases: [string, number, number, number, RegExp][] = [
    ['desc not 16-aligned', DESC + 8, AVAIL, USED, /^VQ 0: misaligned ring \(desc 0x10008, avail 0x20000, used 0x30000\)$/],
    ['avail odd', DESC, AVAIL + 1, USED, /misaligned ring/],
    ['used not 4-aligned', DESC, AVAIL, USED + 2, /misaligned ring/],
    ['desc straddles the end of RAM', RAM_SIZE - 16 * 8 + 16, AVAIL, USED, /^Cannot map desc \(VQ 0\)$/],
    ['desc above 4 GiB', 0x1_0000_0000, AVAIL, USED, /^Cannot map desc/],
    ['desc at 2^53', 2 ** 53, AVAIL, USED, /^Cannot map desc/],
    ['avail straddles the end of RAM', DESC, RAM_SIZE - 18, USED, /^Cannot map avail \(VQ 0\)$/],
    ['used straddles the end of RAM', DESC, AVAIL, RAM_SIZE - 64, /^Cannot map used \(VQ 0\)$/],
    ['used wholly outside RAM', DESC, AVAIL, RAM_SIZE, /^Cannot map used/],
  ];
  for (const [name, d, a, u, msg] of cases) {
    it(name, () => {
      const { vq, owner, memory } = bare(8);
      vq.setRings(d, a, u);
      expect(vq.isMapped).toBe(false);
      expect(owner.errors.length).toBe(1);
      expect(owner.errors[0]).toMatch(msg);
      // Whatever the guest posts, nothing is popped and nothing is written.
      memory.write16(AVAIL + 2, 1);
      expect(vq.pop()).toBeNull();
      expect(vq.lastAvailIdx).toBe(0);
    });
  }

  it('exact fits at the end of RAM are accepted', () => {
    const { vq, owner } = bare(8);
    // Without EVENT_IDX: avail ring is 4 + 16 = 20 bytes, used ring 4 + 64 = 68 bytes.
    vq.setRings(RAM_SIZE - 128, RAM_SIZE - 128 - 20, RAM_SIZE - 128 - 20 - 68);
    expect(vq.isMapped).toBe(true);
    expect(owner.errors).toEqual([]);
  });

  it('EVENT_IDX grows both rings by 2 bytes: a ring that just fitted is refused after applyFeatures', () => {
    const a = bare(8);
    a.vq.setRings(DESC, RAM_SIZE - 20, USED);
    expect(a.vq.isMapped).toBe(true);
    a.vq.applyFeatures(true, false, false, true);
    expect(a.vq.isMapped).toBe(false);
    expect(a.owner.errors).toEqual(['Cannot map avail (VQ 0)']);

    const b = bare(8);
    b.vq.setRings(DESC, AVAIL, RAM_SIZE - 68);
    expect(b.vq.isMapped).toBe(true);
    b.vq.applyFeatures(true, false, false, true);
    expect(b.vq.isMapped).toBe(false);
    expect(b.owner.errors).toEqual(['Cannot map used (VQ 0)']);
  });

  it('a used ring in ROM is refused; desc and avail in ROM are fine', () => {
    const ROM = 0x20_0000;
    const memory = new GuestMemory([{ base: 0, size: RAM_SIZE }, { base: ROM, size: 0x1_0000, readonly: true }]);
    const a = bare(8, memory);
    a.vq.setRings(DESC, AVAIL, ROM);
    expect(a.vq.isMapped).toBe(false);
    expect(a.owner.errors).toEqual(['Cannot map used (VQ 0)']);

    const b = bare(8, memory);
    b.vq.setRings(ROM, ROM + 0x1000, USED);
    expect(b.vq.isMapped).toBe(true);
    expect(b.owner.errors).toEqual([]);
  });

  it('a ring part spanning two touching regions is refused', () => {
    const memory = new GuestMemory([{ base: 0, size: 0x2_0010 }, { base: 0x2_0010, size: 0x1_0000 }]);
    const { vq, owner } = bare(8, memory);
    vq.setRings(DESC, 0x2_0000, 0x2_1000); // avail needs 20 bytes, only 16 in the first region
    expect(vq.isMapped).toBe(false);
    expect(owner.errors).toEqual(['Cannot map avail (VQ 0)']);
  });

  it('legacy layout: setLegacyAddr derives avail and used (N=256, align 4096 → used at base+8192)', () => {
    const { vq, owner } = bare(256);
    vq.setLegacyAddr(0x1_0000);
    expect([vq.desc, vq.avail, vq.used]).toEqual([0x1_0000, 0x1_1000, 0x1_2000]);
    expect(vq.isMapped).toBe(true);
    // align 0 is ignored (QEMU)
    vq.setAlign(0);
    expect(vq.align).toBe(4096);
    expect(vq.used).toBe(0x1_2000);
    // A smaller alignment moves the used ring down (spec layout: after used_event).
    vq.setAlign(64);
    expect(vq.used).toBe(legacyLayout(0x1_0000, 256, 64).used);
    expect(vq.used).toBe(0x1_1000 + 576);
    expect(vq.isMapped).toBe(true);
    // A non-power-of-two alignment unmaps without breaking the device (a guest_error trace only).
    const trace: TraceEvent[] = [];
    owner.tracer = (e) => trace.push(e);
    vq.setAlign(3);
    expect(vq.isMapped).toBe(false);
    expect(owner.errors).toEqual([]);
    expect(trace.some((e) => e.type === 'guest_error' && /alignment 3/.test(e.message))).toBe(true);
  });

  it('legacy layout places the used ring after used_event (spec/Linux), not where QEMU 7.2 does', () => {
    const { vq, owner } = bare(4);
    vq.setAlign(4);
    vq.setLegacyAddr(0x1_0000);
    // desc 64 bytes; avail 4 + 8 + 2 (used_event) = 14 -> 0x1004e -> aligned 0x10050. QEMU: 0x1004c.
    expect([vq.avail, vq.used]).toEqual([0x1_0040, 0x1_0050]);
    expect(vq.isMapped).toBe(true);
    expect(owner.errors).toEqual([]);
    // Align 2 gives a used ring that is not 4-byte aligned: refused like any misaligned ring.
    vq.setAlign(2);
    expect(vq.used).toBe(0x1_004e);
    expect(vq.isMapped).toBe(false);
    expect(owner.errors).toEqual(['VQ 0: misaligned ring (desc 0x10000, avail 0x10040, used 0x1004e)']);
  });

  it('legacy layout works end to end with a legacy driver ring', () => {
    const memory = GuestMemory.ofSize(RAM_SIZE);
    const drv = SplitRingDriver.legacy(memory, 0x1_0000, 128, 4096);
    const { vq, owner } = bare(128, memory);
    vq.setLegacyAddr(0x1_0000);
    expect([vq.avail, vq.used]).toEqual([drv.addrs.avail, drv.addrs.used]);
    const head = drv.add([{ addr: BUF, len: 4 }, { addr: BUF + 0x100, len: 4, write: true }]);
    const e = vq.pop()!;
    expect(e.index).toBe(head);
    vq.push(e, 3);
    expect(drv.takeUsed()).toEqual([{ id: head, len: 3 }]);
    expect(owner.errors).toEqual([]);
  });

  it('reset unmaps and clears the addresses', () => {
    const { vq } = rig();
    vq.reset();
    expect([vq.desc, vq.avail, vq.used, vq.isMapped, vq.ready]).toEqual([0, 0, 0, false, false]);
  });
});

describe('pop of direct chains', () => {
  const chain: DriverBuffer[] = [
    { addr: BUF, len: 16 },
    { addr: BUF + 0x100, len: 32 },
    { addr: BUF + 0x200, len: 64, write: true },
    { addr: BUF + 0x300, len: 8, write: true },
  ];

  it('readable entries first, then writable, with counts and byte totals', () => {
    const { vq, drv, owner } = rig();
    const head = drv.add(chain);
    expect(head).toBe(0);
    expect(vq.isEmpty()).toBe(false);
    const e = vq.pop()!;
    expect(e).not.toBeNull();
    expect([e.index, e.outNum, e.inNum, e.outBytes, e.inBytes, e.sgNum, e.ndescs]).toEqual([0, 2, 2, 48, 72, 4, 4]);
    expect(sg(e)).toEqual([[BUF, 16], [BUF + 0x100, 32], [BUF + 0x200, 64], [BUF + 0x300, 8]]);
    expect([0, 1, 2, 3, 4].map((i) => e.isWritable(i))).toEqual([false, false, true, true, false]);
    expect([e.inFlight, e.generation]).toEqual([true, 0]);
    expect([vq.inuse, vq.lastAvailIdx, vq.shadowAvailIdx]).toEqual([1, 1, 1]);
    expect(vq.pop()).toBeNull();
    expect(vq.isEmpty()).toBe(true);
    expect(owner.errors).toEqual([]);
  });

  it('successive chains get the heads the driver used', () => {
    const { vq, drv } = rig();
    const h1 = drv.add(chain);
    const h2 = drv.add([{ addr: BUF + 0x400, len: 5, write: true }]);
    expect([h1, h2]).toEqual([0, 4]);
    const [a, b] = popAll(vq);
    expect([a!.index, b!.index]).toEqual([0, 4]);
    expect([b!.outNum, b!.inNum, b!.inBytes]).toEqual([0, 1, 5]);
    expect(vq.inFlightElements().map((e) => e.index).sort()).toEqual([0, 4]);
  });

  it('readOut and writeIn cross scatter entries at any offset', () => {
    const { vq, drv, memory } = rig();
    drv.add(chain);
    const r0 = Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i);
    const r1 = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
    memory.write(BUF, r0);
    memory.write(BUF + 0x100, r1);
    const e = vq.pop()!;

    const dst = new Uint8Array(20);
    expect(e.readOut(10, dst)).toBe(20);
    expect(Array.from(dst)).toEqual([...r0.subarray(10), ...r1.subarray(0, 14)]);
    const big = new Uint8Array(100).fill(0xee);
    expect(e.readOut(40, big)).toBe(8);
    expect(Array.from(big.subarray(0, 9))).toEqual([...r1.subarray(24), 0xee]);
    expect(e.readOut(48, new Uint8Array(4))).toBe(0);
    expect(e.readOut(0, new Uint8Array(0))).toBe(0);
    // Offset exactly at an entry boundary.
    const d2 = new Uint8Array(2);
    expect(e.readOut(16, d2)).toBe(2);
    expect(Array.from(d2)).toEqual([0x80, 0x81]);

    // Writable part: entry 2 is 64 bytes at BUF+0x200, entry 3 is 8 bytes at BUF+0x300.
    memory.fill(BUF + 0x1f0, 0x120, 0xcc);
    const src = Uint8Array.from({ length: 10 }, (_, i) => i + 1);
    expect(e.writeIn(60, src)).toBe(10);
    expect(bytes(memory, BUF + 0x200 + 58, 8)).toEqual([0xcc, 0xcc, 1, 2, 3, 4, 0xcc, 0xcc]);
    expect(bytes(memory, BUF + 0x300, 7)).toEqual([5, 6, 7, 8, 9, 10, 0xcc]);
    // Past the end: only what fits.
    expect(e.writeIn(70, Uint8Array.of(0xa1, 0xa2, 0xa3))).toBe(2);
    expect(bytes(memory, BUF + 0x306, 3)).toEqual([0xa1, 0xa2, 0xcc]);
    expect(e.writeIn(72, Uint8Array.of(1))).toBe(0);
    // writeIn never touches the readable buffers or the bytes around the writable ones.
    expect(memory.read8(BUF + 0x1ff)).toBe(0xcc);
    expect(memory.read8(BUF + 0x308)).toBe(0xcc);
    expect(bytes(memory, BUF, 16)).toEqual(Array.from(r0));
  });

  it('entryView is zero-copy and bounds-checked', () => {
    const { vq, drv, memory } = rig();
    drv.add(chain);
    const e = vq.pop()!;
    const v = e.entryView(3);
    expect(v.length).toBe(8);
    v[0] = 0x42;
    expect(memory.read8(BUF + 0x300)).toBe(0x42);
    expect(() => e.entryView(4)).toThrow(RangeError);
    expect(() => e.entryView(-1)).toThrow(RangeError);
  });

  it('a chain of exactly num descriptors is accepted', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    const bufs: DriverBuffer[] = [];
    for (let k = 0; k < 8; k++) bufs.push({ addr: BUF + 0x100 * k, len: 0x10 + k, write: k >= 5 });
    expect(drv.add(bufs)).toBe(0);
    const e = vq.pop()!;
    expect([e.outNum, e.inNum, e.ndescs]).toEqual([5, 3, 8]);
    expect(e.outBytes).toBe(0x10 + 0x11 + 0x12 + 0x13 + 0x14);
    expect(e.inBytes).toBe(0x15 + 0x16 + 0x17);
    expect(sg(e)[7]).toEqual([BUF + 0x700, 0x17]);
    expect(owner.errors).toEqual([]);
  });

  it('zero-length descriptors are walked and counted but not mapped (even when their address is not RAM)', () => {
    const { vq, drv, owner } = rig();
    drv.writeDesc(0, 0xffff_ffff_ffff_f000n, 0, NEXT, 1);
    drv.writeDesc(1, BUF, 16, NEXT, 2);
    drv.writeDesc(2, 1n << 60n, 0, NEXT | WRITE, 3);
    drv.writeDesc(3, BUF + 0x200, 8, WRITE, 0);
    drv.publish(0);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect([e.outNum, e.inNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([1, 1, 16, 8, 4]);
    expect(sg(e)).toEqual([[BUF, 16], [BUF + 0x200, 8]]);
  });

  it('a chain of only zero-length descriptors pops as an empty element; its used length is 0', () => {
    const { vq, drv, owner } = rig();
    drv.writeDesc(0, 0, 0, NEXT | WRITE, 1);
    drv.writeDesc(1, 0, 0, WRITE, 0);
    drv.publish(0);
    const e = vq.pop()!;
    expect([e.sgNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([0, 0, 0, 2]);
    vq.push(e, 5);
    expect(drv.takeUsed()).toEqual([{ id: 0, len: 0 }]);
    expect(owner.errors).toEqual([]);
  });

  it('a readable buffer in ROM is fine; a writable one is refused', () => {
    const ROM = 0x20_0000;
    const memory = new GuestMemory([{ base: 0, size: RAM_SIZE }, { base: ROM, size: 0x1000, readonly: true }]);
    const a = rig({ memory });
    a.drv.add([{ addr: ROM, len: 16 }, { addr: BUF, len: 4, write: true }]);
    expect(a.vq.pop()!.outBytes).toBe(16);
    const b = rig({ memory });
    b.drv.add([{ addr: ROM, len: 16, write: true }]);
    expect(b.vq.pop()).toBeNull();
    expect(b.owner.errors).toEqual(['virtio: bogus descriptor or out of resources']);
  });

  it('buffers above RAM, straddling the end, or at addresses ≥ 2^53 are refused', () => {
    for (const [addr, len] of [
      [RAM_SIZE - 8, 16],
      [RAM_SIZE, 1],
      [0x20_0000_0000_0000n, 1],
      [0xffff_ffff_ffff_fff0n, 0x20],
    ] as [number | bigint, number][]) {
      const { vq, drv, owner } = rig();
      drv.add([{ addr: BUF, len: 4 }]);
      drv.writeDesc(0, addr, len, 0, 0);
      expect(vq.pop()).toBeNull();
      expect(owner.errors).toEqual(['virtio: bogus descriptor or out of resources']);
    }
  });

  it('a buffer ending exactly at the end of RAM is accepted', () => {
    const { vq, drv } = rig();
    drv.add([{ addr: RAM_SIZE - 512, len: 512, write: true }]);
    expect(sg(vq.pop()!)).toEqual([[RAM_SIZE - 512, 512]]);
  });

  it('readable after writable → "Incorrect order for descriptors"', () => {
    const { vq, drv, owner } = rig();
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF + 0x100, len: 4, write: true }, { addr: BUF + 0x200, len: 4 }]);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Incorrect order for descriptors']);
    expect(vq.inuse).toBe(0);
  });

  it('self-loop → "Looped descriptor"', () => {
    const { vq, drv, owner } = rig();
    drv.writeDesc(0, BUF, 4, NEXT, 0);
    drv.publish(0);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Looped descriptor']);
  });

  it('2-cycle → "Looped descriptor"', () => {
    const { vq, drv, owner } = rig();
    drv.writeDesc(3, BUF, 4, NEXT, 5);
    drv.writeDesc(5, BUF + 0x10, 4, NEXT, 3);
    drv.publish(3);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Looped descriptor']);
  });

  it('a loop of writable descriptors into the largest queue is caught too (bounded work)', () => {
    const { vq, drv, owner } = rig({ num: 1024 });
    drv.writeDesc(1023, BUF, 0x1000, NEXT | WRITE, 1023);
    drv.publish(1023);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Looped descriptor']);
  });

  it('next ≥ num → "Desc next is N"', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.writeDesc(0, BUF, 4, NEXT, 8);
    drv.publish(0);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Desc next is 8']);
    const b = rig({ num: 8 });
    b.drv.writeDesc(2, BUF, 4, NEXT, 0xffff);
    b.drv.publish(2);
    expect(b.vq.pop()).toBeNull();
    expect(b.owner.errors).toEqual(['Desc next is 65535']);
  });

  it('total length above 2^32-1 → error; exactly 2^32-1 is accepted', () => {
    const HUGE = PretendHugeMemory.BASE;
    const ok = rig({ memory: new PretendHugeMemory([{ base: 0, size: RAM_SIZE }]) });
    ok.drv.add([{ addr: HUGE, len: 0x8000_0000 }, { addr: HUGE, len: 0x7fff_ffff }]);
    const e = ok.vq.pop()!;
    expect(ok.owner.errors).toEqual([]);
    expect([e.outBytes, e.inBytes]).toEqual([0xffff_ffff, 0]);

    const bad = rig({ memory: new PretendHugeMemory([{ base: 0, size: RAM_SIZE }]) });
    bad.drv.add([{ addr: HUGE, len: 0x8000_0000 }, { addr: HUGE, len: 0x8000_0000 }]);
    expect(bad.vq.pop()).toBeNull();
    expect(bad.owner.errors).toEqual(['Descriptor chain longer than 2^32-1 bytes']);

    // Readable and writable bytes count together.
    const mixed = rig({ memory: new PretendHugeMemory([{ base: 0, size: RAM_SIZE }]) });
    mixed.drv.add([{ addr: HUGE, len: 0xffff_ffff }, { addr: BUF, len: 1, write: true }]);
    expect(mixed.vq.pop()).toBeNull();
    expect(mixed.owner.errors).toEqual(['Descriptor chain longer than 2^32-1 bytes']);
  });

  it('descriptor addresses above 4 GiB are assembled from both halves', () => {
    const HIGH = 0x1_0000_0000;
    const memory = new GuestMemory([{ base: 0, size: RAM_SIZE }, { base: HIGH, size: 0x1_0000 }]);
    const { vq, drv, owner } = rig({ memory });
    drv.add([{ addr: HIGH + 0x200, len: 8 }, { addr: HIGH + 0x300, len: 8, write: true }]);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect(sg(e)).toEqual([[HIGH + 0x200, 8], [HIGH + 0x300, 8]]);
    memory.write(HIGH + 0x200, Uint8Array.of(1, 2, 3));
    const d = new Uint8Array(3);
    e.readOut(0, d);
    expect(Array.from(d)).toEqual([1, 2, 3]);
  });
});

describe('push, fill and flush', () => {
  it('push writes {id, len} at the used slot, then used.idx (little-endian bytes)', () => {
    const { vq, drv, memory } = rig();
    drv.add([{ addr: BUF, len: 4 }]); // head 0, read-only
    drv.add([{ addr: BUF + 0x100, len: 0x200, write: true }]); // head 1
    memory.fill(USED + 4, 8 * 8, 0xff);
    const [a, b] = popAll(vq);
    vq.push(b!, 0x123);
    expect(bytes(memory, USED, 12)).toEqual([0, 0, 1, 0, 1, 0, 0, 0, 0x23, 0x01, 0, 0]);
    expect([vq.usedIdx, vq.inuse]).toEqual([1, 1]);
    vq.push(a!, 0);
    expect(bytes(memory, USED + 2, 2)).toEqual([2, 0]);
    expect(bytes(memory, USED + 12, 8)).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    // Slot 2 untouched.
    expect(bytes(memory, USED + 20, 8)).toEqual([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    expect([vq.usedIdx, vq.inuse]).toEqual([2, 0]);
  });

  it('fill places elements at usedIdx+idx without publishing; flush publishes them at once', () => {
    const { vq, drv, memory } = rig();
    for (let k = 0; k < 3; k++) drv.add([{ addr: BUF + 0x100 * k, len: 16, write: true }]);
    const [e0, e1, e2] = popAll(vq);
    vq.fill(e2!, 5, 0);
    vq.fill(e0!, 6, 1);
    vq.fill(e1!, 7, 2);
    expect(memory.read16(USED + 2)).toBe(0);
    expect(vq.usedIdx).toBe(0);
    expect(vq.inuse).toBe(3);
    expect([usedSlot(memory, 0), usedSlot(memory, 1), usedSlot(memory, 2)]).toEqual([
      { id: 2, len: 5 },
      { id: 0, len: 6 },
      { id: 1, len: 7 },
    ]);
    vq.flush(3);
    expect(memory.read16(USED + 2)).toBe(3);
    expect([vq.usedIdx, vq.inuse]).toEqual([3, 0]);
    expect(drv.takeUsed()).toEqual([{ id: 2, len: 5 }, { id: 0, len: 6 }, { id: 1, len: 7 }]);
  });

  it('the used length is clamped to the writable capacity, and never negative', () => {
    const { vq, drv } = rig();
    drv.add([{ addr: BUF, len: 8 }, { addr: BUF + 0x100, len: 72, write: true }]);
    drv.add([{ addr: BUF + 0x200, len: 8 }]);
    drv.add([{ addr: BUF + 0x300, len: 8, write: true }]);
    drv.add([{ addr: BUF + 0x400, len: 8, write: true }]);
    const [a, b, c, d] = popAll(vq);
    vq.push(a!, 1000);
    vq.push(b!, 10);
    vq.push(c!, -1);
    vq.push(d!, 2 ** 32 + 5);
    expect(drv.takeUsed().map((u) => u.len)).toEqual([72, 0, 0, 8]);
  });

  it('an element is returned once: a second push is dropped', () => {
    const { vq, drv, memory } = rig();
    drv.add([{ addr: BUF, len: 8, write: true }]);
    const e = vq.pop()!;
    vq.push(e, 1);
    vq.push(e, 2);
    vq.fill(e, 3);
    expect(memory.read16(USED + 2)).toBe(1);
    expect(usedSlot(memory, 0)).toEqual({ id: 0, len: 1 });
    expect(usedSlot(memory, 1)).toEqual({ id: 0, len: 0 });
    expect(vq.inuse).toBe(0);
  });

  it('the used index is the device\'s own: scribbling used.idx in RAM does not move it', () => {
    const { vq, drv, memory } = rig();
    drv.add([{ addr: BUF, len: 8, write: true }]);
    vq.push(vq.pop()!, 1);
    expect(memory.read16(USED + 2)).toBe(1);
    // Hostile guest writes the device-owned fields.
    memory.write16(USED + 2, 0x1234);
    memory.fill(USED + 4, 8 * 8, 0xee);
    drv.add([{ addr: BUF + 0x100, len: 8, write: true }]);
    const e = vq.pop()!;
    vq.push(e, 2);
    expect(usedSlot(memory, 1)).toEqual({ id: e.index, len: 2 });
    // Slot 0x1234 % 8 = 4 was not written.
    expect(usedSlot(memory, 4)).toEqual({ id: 0xeeee_eeee, len: 0xeeee_eeee });
    expect(memory.read16(USED + 2)).toBe(2);
    expect(vq.usedIdx).toBe(2);
  });

  it('while processing is stopped, fill/flush write nothing but still release the elements', () => {
    const { vq, drv, memory, owner } = rig();
    drv.add([{ addr: BUF, len: 8, write: true }]);
    drv.add([{ addr: BUF + 0x100, len: 8, write: true }]);
    const e = vq.pop()!;
    owner.disabled = true;
    expect(vq.pop()).toBeNull();
    expect(vq.lastAvailIdx).toBe(1);
    expect(vq.isEmpty()).toBe(true);
    vq.push(e, 4);
    expect(memory.read16(USED + 2)).toBe(0);
    expect(usedSlot(memory, 0)).toEqual({ id: 0, len: 0 });
    expect([vq.inuse, vq.usedIdx, e.inFlight]).toEqual([0, 0, false]);
    owner.disabled = false;
    expect(vq.pop()!.index).toBe(1);
  });
});

describe('16-bit index wrap-around', () => {
  function startAt(r: ReturnType<typeof rig>, start: number): void {
    r.vq.lastAvailIdx = r.vq.shadowAvailIdx = r.vq.usedIdx = start;
    r.vq.signalledUsed = start;
    r.drv.setAvailIdx(start);
    r.memory.write16(USED + 2, start);
    r.drv.lastUsedIdx = start;
  }

  it('runs 20 requests one by one across the wrap', () => {
    const r = rig({ num: 8 });
    const { vq, drv, memory, owner } = r;
    const start = 65530;
    startAt(r, start);
    for (let k = 0; k < 20; k++) {
      const head = drv.add([{ addr: BUF + 0x10 * k, len: 4 }, { addr: BUF + 0x1000 + 0x10 * k, len: 8, write: true }]);
      expect(head).toBeGreaterThanOrEqual(0);
      const pos = (start + k) & 0xffff;
      expect(memory.read16(AVAIL + 4 + 2 * (pos % 8))).toBe(head);
      const e = vq.pop()!;
      expect(e, `request ${k}`).not.toBeNull();
      expect([e.index, e.sgAddr[0], e.sgAddr[1]]).toEqual([head, BUF + 0x10 * k, BUF + 0x1000 + 0x10 * k]);
      vq.push(e, k % 9);
      expect(usedSlot(memory, pos % 8)).toEqual({ id: head, len: k % 9 });
      expect(memory.read16(USED + 2)).toBe((pos + 1) & 0xffff);
      expect(drv.takeUsed()).toEqual([{ id: head, len: k % 9 }]);
    }
    expect([vq.lastAvailIdx, vq.usedIdx, vq.inuse]).toEqual([14, 14, 0]);
    expect(owner.errors).toEqual([]);
  });

  it('a full ring published across the wrap is popped entirely', () => {
    const r = rig({ num: 8 });
    const { vq, drv, memory, owner } = r;
    startAt(r, 65532);
    for (let k = 0; k < 8; k++) drv.add([{ addr: BUF + 0x10 * k, len: 8, write: true }]);
    expect(memory.read16(AVAIL + 2)).toBe(4);
    expect(vq.availableHeads()).toBe(8);
    const els = popAll(vq);
    expect(els.map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    els.forEach((e, k) => vq.fill(e, k, k));
    vq.flush(8);
    expect(memory.read16(USED + 2)).toBe(4);
    expect(drv.takeUsed().map((u) => [u.id, u.len])).toEqual(els.map((e, k) => [e.index, k]));
    expect(owner.errors).toEqual([]);
  });
});

describe('ring fullness and bogus indices', () => {
  it('a full ring (num heads available at once) is not mistaken for an empty one', () => {
    const { vq, drv, memory, owner } = rig({ num: 8 });
    for (let k = 0; k < 8; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    expect(drv.freeDescriptors).toBe(0);
    expect(memory.read16(AVAIL + 2)).toBe(8);
    expect(vq.isEmpty()).toBe(false);
    expect(vq.availableHeads()).toBe(8);
    expect(popAll(vq).map((e) => e.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(vq.inuse).toBe(8);
    expect(owner.errors).toEqual([]);
  });

  it('avail.idx jumping num+1 ahead → "Guest moved used index", nothing consumed', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.add([{ addr: BUF, len: 1 }]);
    drv.setAvailIdx(9);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Guest moved used index from 0 to 9']);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([0, 0]);
  });

  it('availableHeads reports the same error and -1', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.setAvailIdx(9);
    expect(vq.availableHeads()).toBe(-1);
    expect(owner.errors).toEqual(['Guest moved used index from 0 to 9']);
  });

  it('isEmpty() before pop does not let a bogus avail.idx past the check', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.setAvailIdx(9);
    vq.isEmpty();
    expect(vq.pop()).toBeNull();
    expect(owner.errors[0]).toBe('Guest moved used index from 0 to 9');
    expect(vq.lastAvailIdx).toBe(0);
  });

  it('avail.idx moving backwards by 1 → error', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.add([{ addr: BUF, len: 1 }]);
    drv.add([{ addr: BUF + 0x10, len: 1 }]);
    expect(popAll(vq).length).toBe(2);
    drv.setAvailIdx(1);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Guest moved used index from 2 to 1']);
    expect(vq.lastAvailIdx).toBe(2);
  });

  it('head ≥ num → "Guest says index N is available"', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.setAvailRingEntry(0, 8);
    drv.setAvailIdx(1);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Guest says index 8 is available']);
    expect(vq.inuse).toBe(0);
  });

  it('the same head made available twice while in flight → error', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    const h = drv.add([{ addr: BUF, len: 1 }]);
    drv.publish(h);
    const e = vq.pop()!;
    expect(e.index).toBe(h);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual([`VQ 0: head ${h} made available again while in use`]);
    // The in-flight element was not disturbed.
    expect([e.inFlight, e.sgAddr[0], vq.inuse]).toEqual([true, BUF, 1]);
  });

  it('a head may be made available again once it was returned', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    const h = drv.add([{ addr: BUF, len: 1 }]);
    vq.push(vq.pop()!, 0);
    drv.publish(h);
    expect(vq.pop()!.index).toBe(h);
    expect(owner.errors).toEqual([]);
  });

  it('inuse ≥ num → "Virtqueue size exceeded"', () => {
    const { vq, drv, owner } = rig({ num: 4 });
    for (let k = 0; k < 4; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    expect(popAll(vq).length).toBe(4);
    drv.publish(0);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Virtqueue size exceeded']);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([4, 4]);
  });

  it('after a virtioError the queue stops popping', () => {
    const { vq, drv, owner } = rig({ num: 8 });
    drv.setAvailRingEntry(0, 99);
    drv.setAvailIdx(1);
    drv.add([{ addr: BUF, len: 1 }]);
    expect(vq.pop()).toBeNull();
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Guest says index 99 is available']);
  });
});

describe('notification suppression', () => {
  it('EVENT_IDX: pop writes avail_event = lastAvailIdx', () => {
    const { vq, drv, memory } = rig({ eventIdx: true });
    memory.write16(USED + 4 + 8 * 8, 0x7777);
    for (let k = 0; k < 3; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    expect(drv.availEvent()).toBe(0x7777);
    vq.pop();
    expect(drv.availEvent()).toBe(1);
    vq.pop();
    vq.pop();
    expect(drv.availEvent()).toBe(3);
  });

  it('without EVENT_IDX, pop does not write avail_event', () => {
    const { vq, drv, memory } = rig({ eventIdx: false });
    memory.write16(USED + 4 + 8 * 8, 0x7777);
    drv.add([{ addr: BUF, len: 1 }]);
    vq.pop();
    expect(drv.availEvent()).toBe(0x7777);
  });

  it('EVENT_IDX: setNotification(true) writes avail_event = avail.idx and leaves used.flags alone', () => {
    const { vq, drv, memory } = rig({ eventIdx: true });
    for (let k = 0; k < 5; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    vq.pop();
    vq.pop();
    expect(drv.availEvent()).toBe(2);
    vq.setNotification(true);
    expect(drv.availEvent()).toBe(5);
    expect(memory.read16(USED)).toBe(0);
    expect(vq.notification).toBe(true);
  });

  it('EVENT_IDX: setNotification(false) writes nothing, and pops stop moving avail_event (QEMU)', () => {
    const { vq, drv, memory } = rig({ eventIdx: true });
    for (let k = 0; k < 4; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    vq.pop();
    expect(drv.availEvent()).toBe(1);
    vq.setNotification(false);
    expect(vq.notification).toBe(false);
    expect(drv.availEvent()).toBe(1);
    expect(memory.read16(USED)).toBe(0);
    vq.pop();
    vq.pop();
    expect(drv.availEvent()).toBe(1);
    vq.setNotification(true);
    expect(drv.availEvent()).toBe(4);
    vq.pop();
    expect(drv.availEvent()).toBe(4);
  });

  it('without EVENT_IDX: setNotification toggles used.flags NO_NOTIFY, keeping other bits', () => {
    const { vq, drv, memory } = rig({ eventIdx: false });
    memory.write16(USED, 0x8000);
    memory.write16(USED + 4 + 8 * 8, 0x7777);
    vq.setNotification(false);
    expect(drv.usedFlags()).toBe(0x8000 | VRING_USED_F_NO_NOTIFY);
    vq.setNotification(false);
    expect(drv.usedFlags()).toBe(0x8001);
    vq.setNotification(true);
    expect(drv.usedFlags()).toBe(0x8000);
    expect(drv.availEvent()).toBe(0x7777);
  });

  it('setNotification on an unmapped queue only records the wish', () => {
    const { vq } = bare();
    vq.setNotification(false);
    expect(vq.notification).toBe(false);
  });

  it('without EVENT_IDX: shouldNotify follows avail.flags NO_INTERRUPT and ignores used_event', () => {
    const { vq, drv } = rig({ eventIdx: false });
    drv.add([{ addr: BUF, len: 1 }]);
    drv.add([{ addr: BUF + 0x10, len: 1 }]);
    const [a, b] = popAll(vq);
    drv.setUsedEvent(100);
    vq.push(a!, 0);
    expect(vq.shouldNotify()).toBe(true);
    expect(vq.shouldNotify()).toBe(true);
    drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    vq.push(b!, 0);
    expect(vq.shouldNotify()).toBe(false);
  });

  it('EVENT_IDX: first call notifies (signalled value not valid), then used_event decides', () => {
    const { vq, drv } = rig({ eventIdx: true });
    for (let k = 0; k < 5; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    const els = popAll(vq);
    drv.setUsedEvent(2); // interrupt when entry 2 is used, i.e. used.idx goes 2 -> 3
    expect(vq.signalledUsedValid).toBe(false);
    const got: boolean[] = [];
    for (const e of els) {
      vq.push(e, 0);
      got.push(vq.shouldNotify());
    }
    expect(got).toEqual([true, false, true, false, false]);
    expect([vq.signalledUsedValid, vq.signalledUsed]).toEqual([true, 5]);
  });

  it('EVENT_IDX: a batch flush crossing used_event notifies, one short of it does not', () => {
    const { vq, drv } = rig({ eventIdx: true });
    for (let k = 0; k < 8; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    const els = popAll(vq);
    for (let k = 0; k < 3; k++) vq.fill(els[k]!, 0, k);
    vq.flush(3);
    expect(vq.shouldNotify()).toBe(true); // first
    drv.setUsedEvent(7);
    for (let k = 3; k < 7; k++) vq.fill(els[k]!, 0, k - 3);
    vq.flush(4); // 3 -> 7: entries 3..6 used, 7 not yet
    expect(vq.shouldNotify()).toBe(false);
    vq.push(els[7]!, 0); // 7 -> 8
    expect(vq.shouldNotify()).toBe(true);
  });

  it('EVENT_IDX: NO_INTERRUPT in avail.flags is ignored', () => {
    const { vq, drv } = rig({ eventIdx: true });
    drv.add([{ addr: BUF, len: 1 }]);
    drv.add([{ addr: BUF + 0x10, len: 1 }]);
    const [a, b] = popAll(vq);
    drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    drv.setUsedEvent(1);
    vq.push(a!, 0);
    expect(vq.shouldNotify()).toBe(true);
    vq.push(b!, 0);
    expect(vq.shouldNotify()).toBe(true);
  });

  function eventIdxAcrossWrap(usedEvent: number): boolean {
    const { vq, drv, memory } = rig({ eventIdx: true });
    const start = 65534;
    vq.lastAvailIdx = vq.shadowAvailIdx = vq.usedIdx = start;
    drv.setAvailIdx(start);
    memory.write16(USED + 2, start);
    vq.signalledUsed = start;
    vq.signalledUsedValid = true;
    for (let k = 0; k < 4; k++) drv.add([{ addr: BUF + 0x10 * k, len: 1 }]);
    const els = popAll(vq);
    expect(els.length).toBe(4);
    els.forEach((e, k) => vq.fill(e, 0, k));
    vq.flush(4);
    expect(vq.usedIdx).toBe(2);
    expect(vq.signalledUsedValid).toBe(true);
    drv.setUsedEvent(usedEvent);
    return vq.shouldNotify();
  }

  it('EVENT_IDX across the wrap: 65534 -> 2 passes used_event 65535, 0 and 1 but not 2 or 3', () => {
    expect(eventIdxAcrossWrap(0xfffe)).toBe(true);
    expect(eventIdxAcrossWrap(0xffff)).toBe(true);
    expect(eventIdxAcrossWrap(0)).toBe(true);
    expect(eventIdxAcrossWrap(1)).toBe(true);
    expect(eventIdxAcrossWrap(2)).toBe(false);
    expect(eventIdxAcrossWrap(3)).toBe(false);
    expect(eventIdxAcrossWrap(0xfffd)).toBe(false);
  });

  function signalledValidAfterPush(signalled: number, usedIdx: number): { valid: boolean; notify: boolean } {
    const { vq, drv, memory } = rig({ eventIdx: true });
    vq.usedIdx = usedIdx;
    memory.write16(USED + 2, usedIdx);
    vq.signalledUsed = signalled;
    vq.signalledUsedValid = true;
    drv.setUsedEvent((usedIdx + 100) & 0xffff); // far away: only an invalid signalled value notifies
    drv.add([{ addr: BUF, len: 1 }]);
    vq.push(vq.pop()!, 0);
    const valid = vq.signalledUsedValid;
    return { valid, notify: vq.shouldNotify() };
  }

  it('flush invalidates signalled_used when the new used index reaches or passes it (QEMU int16 test)', () => {
    // new = 6; (int16)(6 - 5) = 1 < 1 is false -> stays valid
    expect(signalledValidAfterPush(5, 5)).toEqual({ valid: true, notify: false });
    // (int16)(6 - 6) = 0 < 1 -> invalid -> notify
    expect(signalledValidAfterPush(6, 5)).toEqual({ valid: false, notify: true });
    // (int16)(6 - 10) = -4 < 1 -> invalid
    expect(signalledValidAfterPush(10, 5)).toEqual({ valid: false, notify: true });
    // Across the wrap: new = 0xffff, signalled 0xffff -> invalid; signalled 0xfffe -> valid
    expect(signalledValidAfterPush(0xffff, 0xfffe)).toEqual({ valid: false, notify: true });
    expect(signalledValidAfterPush(0xfffe, 0xfffe)).toEqual({ valid: true, notify: false });
    // new = 0 after the wrap, signalled 0xffff: (int16)(0 - 0xffff) = 1, not < 1 -> valid
    expect(signalledValidAfterPush(0xffff, 0xffff)).toEqual({ valid: true, notify: false });
    // signalled 0x8005 is "behind" by more than 2^15 when new = 6: (int16)(6 - 0x8005) = 0x8001 -> negative -> invalid
    expect(signalledValidAfterPush(0x8005, 5)).toEqual({ valid: false, notify: true });
  });

  it('notifyOnEmpty: notifies when nothing is in flight and the queue is empty, despite NO_INTERRUPT', () => {
    const { vq, drv } = rig({ notifyOnEmpty: true });
    drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    drv.add([{ addr: BUF, len: 1 }]);
    drv.add([{ addr: BUF + 0x10, len: 1 }]);
    const [a, b] = popAll(vq);
    vq.push(a!, 0);
    expect(vq.shouldNotify()).toBe(false); // b still in flight
    vq.push(b!, 0);
    expect(vq.shouldNotify()).toBe(true); // inuse 0 and empty
    drv.add([{ addr: BUF + 0x20, len: 1 }]);
    expect(vq.shouldNotify()).toBe(false); // not empty
    // The same situation without the feature does not notify.
    const off = rig({ notifyOnEmpty: false });
    off.drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    off.drv.add([{ addr: BUF, len: 1 }]);
    off.vq.push(off.vq.pop()!, 0);
    expect(off.vq.shouldNotify()).toBe(false);
  });

  it('notifyOnEmpty with EVENT_IDX returns early and leaves the signalled state alone', () => {
    const { vq, drv } = rig({ notifyOnEmpty: true, eventIdx: true });
    drv.setUsedEvent(50);
    drv.add([{ addr: BUF, len: 1 }]);
    vq.push(vq.pop()!, 0);
    expect(vq.shouldNotify()).toBe(true);
    expect(vq.signalledUsedValid).toBe(false);
  });

  it('shouldNotify is false on an unmapped queue', () => {
    expect(bare().vq.shouldNotify()).toBe(false);
  });
});

describe('indirect descriptors', () => {
  it('a legal table: entries become the element, the indirect descriptor counts in ndescs', () => {
    const { vq, drv, owner, memory } = rig({ indirect: true });
    const head = drv.add(
      [
        { addr: BUF, len: 10 },
        { addr: BUF + 0x100, len: 20 },
        { addr: BUF + 0x200, len: 30, write: true },
      ],
      { indirectTable: TABLE },
    );
    expect(memory.read32(DESC + 16 * head + 8)).toBe(48);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect([e.index, e.outNum, e.inNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([head, 2, 1, 30, 30, 4]);
    expect(sg(e)).toEqual([[BUF, 10], [BUF + 0x100, 20], [BUF + 0x200, 30]]);
  });

  it('an unaligned table address is accepted', () => {
    const { vq, drv, owner } = rig({ indirect: true });
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF + 0x10, len: 4, write: true }], { indirectTable: TABLE + 4 });
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect(sg(e)).toEqual([[BUF, 4], [BUF + 0x10, 4]]);
  });

  it('the WRITE flag on the indirect descriptor itself is ignored', () => {
    const { vq, drv, owner } = rig({ indirect: true });
    drv.writeDescAt(TABLE, BUF, 8, NEXT, 1);
    drv.writeDescAt(TABLE + 16, BUF + 0x100, 8, WRITE, 0);
    drv.writeDesc(0, TABLE, 32, INDIRECT | WRITE, 0);
    drv.publish(0);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect([e.outNum, e.inNum, e.outBytes, e.inBytes]).toEqual([1, 1, 8, 8]);
  });

  it('direct descriptors followed by one indirect descriptor are legal', () => {
    const { vq, drv, owner } = rig({ indirect: true });
    drv.writeDesc(0, BUF, 12, NEXT, 1);
    drv.writeDesc(1, TABLE, 32, INDIRECT, 0);
    drv.writeDescAt(TABLE, BUF + 0x100, 8, NEXT, 1);
    drv.writeDescAt(TABLE + 16, BUF + 0x200, 16, WRITE, 0);
    drv.publish(0);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect([e.index, e.outNum, e.inNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([0, 2, 1, 20, 16, 4]);
    expect(sg(e)).toEqual([[BUF, 12], [BUF + 0x100, 8], [BUF + 0x200, 16]]);
  });

  it('a writable direct descriptor followed by a table with a readable entry is out of order', () => {
    const { vq, drv, owner } = rig({ indirect: true });
    drv.writeDesc(0, BUF, 12, NEXT | WRITE, 1);
    drv.writeDesc(1, TABLE, 16, INDIRECT, 0);
    drv.writeDescAt(TABLE, BUF + 0x100, 8, 0, 0);
    drv.publish(0);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Incorrect order for descriptors']);
  });

  const bad: [string, (d: SplitRingDriver) => void, string][] = [
    ['len 0', (d) => d.writeDesc(0, TABLE, 0, INDIRECT, 0), 'Invalid size for indirect buffer table (0)'],
    ['len % 16 != 0', (d) => d.writeDesc(0, TABLE, 24, INDIRECT, 0), 'Invalid size for indirect buffer table (24)'],
    [
      'nested indirect',
      (d) => {
        d.writeDescAt(TABLE, TABLE + 0x100, 16, INDIRECT, 0);
        d.writeDescAt(TABLE + 0x100, BUF, 8, 0, 0);
        d.writeDesc(0, TABLE, 16, INDIRECT, 0);
      },
      'Nested indirect descriptor',
    ],
    [
      'INDIRECT|NEXT',
      (d) => {
        d.writeDescAt(TABLE, BUF, 8, 0, 0);
        d.writeDesc(0, TABLE, 16, INDIRECT | NEXT, 1);
        d.writeDesc(1, BUF + 0x100, 8, 0, 0);
      },
      'Indirect descriptor with NEXT set',
    ],
    ['table straddles the end of RAM', (d) => d.writeDesc(0, RAM_SIZE - 16, 32, INDIRECT, 0), 'Cannot map indirect buffer'],
    ['table outside RAM', (d) => d.writeDesc(0, RAM_SIZE, 16, INDIRECT, 0), 'Cannot map indirect buffer'],
    ['table at an address ≥ 2^53', (d) => d.writeDesc(0, 0xffff_ffff_ffff_0000n, 16, INDIRECT, 0), 'Cannot map indirect buffer'],
    [
      'loop inside the table',
      (d) => {
        d.writeDescAt(TABLE, BUF, 8, NEXT, 1);
        d.writeDescAt(TABLE + 16, BUF + 0x10, 8, NEXT, 0);
        d.writeDesc(0, TABLE, 32, INDIRECT, 0);
      },
      'Looped descriptor',
    ],
    [
      'self-loop inside a one-entry table',
      (d) => {
        d.writeDescAt(TABLE, BUF, 8, NEXT, 0);
        d.writeDesc(0, TABLE, 16, INDIRECT, 0);
      },
      'Looped descriptor',
    ],
    [
      'next beyond the table',
      (d) => {
        d.writeDescAt(TABLE, BUF, 8, NEXT, 1);
        d.writeDescAt(TABLE + 16, BUF + 0x10, 8, NEXT, 2);
        d.writeDescAt(TABLE + 32, BUF + 0x20, 8, 0, 0); // in RAM, but not part of the 2-entry table
        d.writeDesc(0, TABLE, 32, INDIRECT, 0);
      },
      'Desc next is 2',
    ],
    [
      'entry out of RAM',
      (d) => {
        d.writeDescAt(TABLE, RAM_SIZE - 4, 8, 0, 0);
        d.writeDesc(0, TABLE, 16, INDIRECT, 0);
      },
      'virtio: bogus descriptor or out of resources',
    ],
  ];
  for (const [name, build, msg] of bad) {
    it(`${name} → "${msg}"`, () => {
      const { vq, drv, owner } = rig({ indirect: true });
      build(drv);
      drv.publish(0);
      expect(vq.pop()).toBeNull();
      expect(owner.errors).toEqual([msg]);
      expect(vq.inuse).toBe(0);
    });
  }

  it('an indirect descriptor without VIRTIO_F_INDIRECT_DESC → error', () => {
    const { vq, drv, owner } = rig({ indirect: false });
    drv.add([{ addr: BUF, len: 4 }], { indirectTable: TABLE });
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Indirect descriptor used without VIRTIO_F_INDIRECT_DESC']);
  });

  function tableOf(n: number, writableFrom = n): DriverBuffer[] {
    return Array.from({ length: n }, (_, k) => ({ addr: BUF + k, len: 1, write: k >= writableFrom }));
  }

  it('1024 entries in one table are accepted (grows the element), 1025 are refused', () => {
    const ok = rig({ indirect: true });
    ok.drv.add(tableOf(1024, 1000), { indirectTable: TABLE });
    const e = ok.vq.pop()!;
    expect(ok.owner.errors).toEqual([]);
    expect([e.outNum, e.inNum, e.outBytes, e.inBytes, e.sgNum, e.ndescs]).toEqual([1000, 24, 1000, 24, 1024, 1025]);
    expect(e.sgAddr.length).toBeGreaterThanOrEqual(1024);
    expect([e.sgAddr[1023], e.sgLen[1023]]).toEqual([BUF + 1023, 1]);

    const bad = rig({ indirect: true });
    bad.drv.add(tableOf(1025), { indirectTable: TABLE });
    expect(bad.vq.pop()).toBeNull();
    expect(bad.owner.errors).toEqual(['virtio: too many descriptors in one element']);
  });

  it('the 1024-buffer cap counts direct descriptors before the table', () => {
    function directThenTable(entries: number) {
      const r = rig({ indirect: true });
      r.drv.writeDesc(0, BUF + 0x8000, 4, NEXT, 1);
      r.drv.writeDesc(1, TABLE, 16 * entries, INDIRECT, 0);
      tableOf(entries).forEach((b, k) => r.drv.writeDescAt(TABLE + 16 * k, b.addr, b.len, k + 1 < entries ? NEXT : 0, k + 1 < entries ? k + 1 : 0));
      r.drv.publish(0);
      return r;
    }
    const ok = directThenTable(1023);
    const e = ok.vq.pop()!;
    expect(ok.owner.errors).toEqual([]);
    expect([e.sgNum, e.outBytes]).toEqual([1024, 4 + 1023]);
    const bad = directThenTable(1024);
    expect(bad.vq.pop()).toBeNull();
    expect(bad.owner.errors).toEqual(['virtio: too many descriptors in one element']);
  });
});

describe('detach, unpop, rewind', () => {
  it('detach gives an element up without a used entry; the next pop takes the next head', () => {
    const { vq, drv, memory, owner } = rig();
    drv.add([{ addr: BUF, len: 4, write: true }]);
    drv.add([{ addr: BUF + 0x10, len: 4, write: true }]);
    const a = vq.pop()!;
    vq.detach(a);
    expect([vq.inuse, a.inFlight, vq.lastAvailIdx]).toEqual([0, false, 1]);
    expect(memory.read16(USED + 2)).toBe(0);
    const b = vq.pop()!;
    expect(b.index).toBe(1);
    vq.push(a, 4); // dropped: no longer in flight
    expect(memory.read16(USED + 2)).toBe(0);
    vq.push(b, 3);
    expect(drv.takeUsed()).toEqual([{ id: 1, len: 3 }]);
    // The detached head may be offered again without an "in use" error.
    drv.publish(0);
    expect(vq.pop()!.index).toBe(0);
    expect(owner.errors).toEqual([]);
  });

  it('unpop puts the element back: the next pop returns the same head and buffers', () => {
    const { vq, drv, owner } = rig();
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF + 0x10, len: 4, write: true }]);
    drv.add([{ addr: BUF + 0x20, len: 4 }]);
    const a = vq.pop()!;
    vq.unpop(a);
    expect([vq.lastAvailIdx, vq.inuse, a.inFlight]).toEqual([0, 0, false]);
    const again = vq.pop()!;
    expect(again.index).toBe(0);
    expect(sg(again)).toEqual([[BUF, 4], [BUF + 0x10, 4]]);
    expect(vq.pop()!.index).toBe(2);
    expect(owner.errors).toEqual([]);
  });

  it('rewind(n) re-pops the same heads in the same order', () => {
    const { vq, drv, owner, memory } = rig();
    for (let k = 0; k < 3; k++) drv.add([{ addr: BUF + 0x10 * k, len: 4, write: true }]);
    const first = popAll(vq).map((e) => e.index);
    expect(first).toEqual([0, 1, 2]);
    expect(vq.rewind(4)).toBe(false);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([3, 3]);
    expect(vq.rewind(0)).toBe(true);
    expect(vq.rewind(2)).toBe(true);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([1, 1]);
    const again = popAll(vq);
    expect(again.map((e) => e.index)).toEqual([1, 2]);
    expect(vq.inuse).toBe(3);
    expect(owner.errors).toEqual([]);
    for (const e of [...again].reverse()) vq.push(e, 1);
    expect(memory.read16(USED + 2)).toBe(2);
    expect(vq.inuse).toBe(1);
  });

  it('rewind works across the 16-bit wrap', () => {
    const { vq, drv, memory, owner } = rig();
    vq.lastAvailIdx = vq.shadowAvailIdx = vq.usedIdx = 65534;
    drv.setAvailIdx(65534);
    memory.write16(USED + 2, 65534);
    for (let k = 0; k < 3; k++) drv.add([{ addr: BUF + 0x10 * k, len: 4 }]);
    expect(popAll(vq).map((e) => e.index)).toEqual([0, 1, 2]);
    expect(vq.lastAvailIdx).toBe(1);
    expect(vq.rewind(3)).toBe(true);
    expect(vq.lastAvailIdx).toBe(65534);
    expect(popAll(vq).map((e) => e.index)).toEqual([0, 1, 2]);
    expect(owner.errors).toEqual([]);
  });
});

describe('reset', () => {
  it('restores the defaults, bumps the generation, and keeps the alignment', () => {
    const { vq, drv } = rig({ num: 8 });
    drv.add([{ addr: BUF, len: 4 }]);
    vq.pop();
    vq.vector = 3;
    vq.signalledUsedValid = true;
    vq.setNotification(false);
    vq.align = 64;
    vq.reset();
    expect({
      num: vq.num,
      lastAvailIdx: vq.lastAvailIdx,
      shadowAvailIdx: vq.shadowAvailIdx,
      usedIdx: vq.usedIdx,
      inuse: vq.inuse,
      vector: vq.vector,
      signalledUsed: vq.signalledUsed,
      signalledUsedValid: vq.signalledUsedValid,
      notification: vq.notification,
      generation: vq.generation,
      align: vq.align,
      mapped: vq.isMapped,
    }).toEqual({
      num: 8,
      lastAvailIdx: 0,
      shadowAvailIdx: 0,
      usedIdx: 0,
      inuse: 0,
      vector: VIRTIO_NO_VECTOR,
      signalledUsed: 0,
      signalledUsedValid: false,
      notification: true,
      generation: 1,
      align: 64,
      mapped: false,
    });
    expect(vq.inFlightElements()).toEqual([]);
  });

  it('restores numDefault after the driver changed the size', () => {
    const { vq } = bare(16);
    vq.setNum(4);
    vq.reset();
    expect(vq.num).toBe(16);
  });

  it('an element popped before reset is dropped on push (no used write), with a trace', () => {
    const { vq, drv, memory, owner } = rig();
    const trace: TraceEvent[] = [];
    owner.tracer = (ev) => trace.push(ev);
    drv.add([{ addr: BUF, len: 8, write: true }]);
    const old = vq.pop()!;
    expect(old.generation).toBe(0);
    vq.reset();
    expect(vq.pop()).toBeNull();
    // Driver re-initialises the same ring memory; the device maps it again.
    drv.clear();
    vq.setRings(DESC, AVAIL, USED);
    memory.fill(USED + 4, 8 * 8, 0xee);
    vq.push(old, 8);
    vq.fill(old, 8);
    vq.detach(old);
    expect(memory.read16(USED + 2)).toBe(0);
    expect(usedSlot(memory, 0)).toEqual({ id: 0xeeee_eeee, len: 0xeeee_eeee });
    expect([vq.usedIdx, vq.inuse]).toEqual([0, 0]);
    expect(trace.filter((e) => e.type === 'virtqueue_stale_element')).toEqual([
      { type: 'virtqueue_stale_element', device: 'fake-dev', queue: 0, head: 0 },
      { type: 'virtqueue_stale_element', device: 'fake-dev', queue: 0, head: 0 },
      { type: 'virtqueue_stale_element', device: 'fake-dev', queue: 0, head: 0 },
    ]);
    // The same head after reset is a new element; the stale one stays as it was.
    drv.add([{ addr: BUF + 0x100, len: 8, write: true }]);
    const fresh = vq.pop()!;
    expect(fresh).not.toBe(old);
    expect([fresh.index, fresh.generation, fresh.sgAddr[0]]).toEqual([0, 1, BUF + 0x100]);
    expect(old.sgAddr[0]).toBe(BUF);
    vq.push(fresh, 2);
    expect(drv.takeUsed()).toEqual([{ id: 0, len: 2 }]);
    expect(owner.errors).toEqual([]);
  });
});

describe('big-endian rings (legacy device on a big-endian guest)', () => {
  it('reads descriptors and the avail ring, and writes the used ring, in big-endian', () => {
    const { vq, drv, memory, owner } = rig({ le: false, eventIdx: true });
    drv.add([{ addr: BUF, len: 4 }]); // head 0
    const head = drv.add([{ addr: BUF + 0x0102, len: 0x0304 }, { addr: BUF + 0x2000, len: 0x0506, write: true }]);
    expect(head).toBe(1);
    expect(bytes(memory, AVAIL + 2, 2)).toEqual([0, 2]);
    expect(bytes(memory, DESC + 16 + 8, 4)).toEqual([0, 0, 3, 4]);
    const [a, e] = popAll(vq);
    expect(owner.errors).toEqual([]);
    expect([e!.index, e!.outNum, e!.inNum]).toEqual([1, 1, 1]);
    expect(sg(e!)).toEqual([[BUF + 0x102, 0x304], [BUF + 0x2000, 0x506]]);
    // avail_event, big-endian.
    expect(bytes(memory, USED + 4 + 8 * 8, 2)).toEqual([0, 2]);
    vq.push(e!, 0x0102);
    expect(bytes(memory, USED, 12)).toEqual([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 2]);
    vq.push(a!, 0);
    expect(drv.takeUsed()).toEqual([{ id: 1, len: 0x102 }, { id: 0, len: 0 }]);
  });

  it('big-endian 64-bit descriptor addresses above 4 GiB', () => {
    const HIGH = 0x1_0000_0000;
    const memory = new GuestMemory([{ base: 0, size: RAM_SIZE }, { base: HIGH, size: 0x1_0000 }]);
    const { vq, drv, owner } = rig({ le: false, memory });
    drv.add([{ addr: HIGH + 0x200, len: 8 }]);
    expect(bytes(memory, DESC, 8)).toEqual([0, 0, 0, 1, 0, 0, 2, 0]);
    const e = vq.pop()!;
    expect(owner.errors).toEqual([]);
    expect(sg(e)).toEqual([[HIGH + 0x200, 8]]);
  });

  it('used_event and used.flags are big-endian too', () => {
    const { vq, drv } = rig({ le: false, eventIdx: true });
    drv.add([{ addr: BUF, len: 1 }]);
    drv.add([{ addr: BUF + 0x10, len: 1 }]);
    const [a, b] = popAll(vq);
    drv.setUsedEvent(1); // bytes 00 01; read as little-endian it would be 256
    vq.push(a!, 0);
    expect(vq.shouldNotify()).toBe(true);
    vq.push(b!, 0);
    expect(vq.shouldNotify()).toBe(true);

    const nf = rig({ le: false, eventIdx: false });
    nf.vq.setNotification(false);
    expect(bytes(nf.memory, USED, 2)).toEqual([0, 1]);
    nf.drv.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    expect(bytes(nf.memory, AVAIL, 2)).toEqual([0, 1]);
    nf.drv.add([{ addr: BUF, len: 1 }]);
    nf.vq.push(nf.vq.pop()!, 0);
    expect(nf.vq.shouldNotify()).toBe(false);
  });

  it('switching byte order with applyFeatures changes how the same bytes are read', () => {
    const { vq, drv, owner } = rig({ le: true });
    drv.add([{ addr: BUF, len: 1 }]); // avail.idx = 1 (bytes 01 00)
    vq.applyFeatures(false, false, false, false);
    expect(vq.isMapped).toBe(true);
    // Read big-endian, avail.idx is 256: more than a ring's worth ahead.
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Guest moved used index from 0 to 256']);
  });
});

describe('double fetch: the element is built from one read of each descriptor', () => {
  it('changing descriptors after pop does not change the popped element', () => {
    const { vq, drv, owner } = rig();
    drv.add([{ addr: BUF, len: 16 }, { addr: BUF + 0x100, len: 32, write: true }]);
    const e = vq.pop()!;
    drv.writeDesc(0, RAM_SIZE - 4, 0xffff_ffff, WRITE | NEXT, 7);
    drv.writeDesc(1, 0, 0, 0, 0);
    expect([e.outNum, e.inNum, e.outBytes, e.inBytes]).toEqual([1, 1, 16, 32]);
    expect(sg(e)).toEqual([[BUF, 16], [BUF + 0x100, 32]]);
    expect(e.writeIn(0, new Uint8Array(40))).toBe(32);
    vq.push(e, 32);
    expect(drv.takeUsed()).toEqual([{ id: 0, len: 32 }]);
    expect(owner.errors).toEqual([]);
  });

  it('a guest rewriting a descriptor while the device checks its buffer cannot change the result', () => {
    const memory = new TamperingMemory([{ base: 0, size: RAM_SIZE }]);
    const { vq, drv, owner } = rig({ memory });
    drv.add([{ addr: BUF, len: 16 }]);
    // While the device translates BUF, the guest turns descriptor 0 into a huge writable
    // buffer outside RAM that chains on to descriptor 5.
    memory.hook = { at: BUF, run: () => drv.writeDesc(0, RAM_SIZE - 8, 0xffff_0000, WRITE | NEXT, 5) };
    const e = vq.pop()!;
    expect(memory.hook).toBeUndefined(); // the race did happen
    expect(owner.errors).toEqual([]);
    expect([e.outNum, e.inNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([1, 0, 16, 0, 1]);
    expect(sg(e)).toEqual([[BUF, 16]]);
  });

  it('a guest rewriting the indirect descriptor after its table was mapped cannot change the table', () => {
    const memory = new TamperingMemory([{ base: 0, size: RAM_SIZE }]);
    const { vq, drv, owner } = rig({ memory, indirect: true });
    drv.add([{ addr: BUF, len: 8 }, { addr: BUF + 0x100, len: 8, write: true }], { indirectTable: TABLE });
    // A second, bigger table elsewhere that the guest tries to switch to.
    drv.writeDescAt(TABLE + 0x1000, BUF + 0x500, 0x500, 0, 0);
    memory.hook = { at: TABLE, run: () => drv.writeDesc(0, TABLE + 0x1000, 16 * 64, INDIRECT, 0) };
    const e = vq.pop()!;
    expect(memory.hook).toBeUndefined();
    expect(owner.errors).toEqual([]);
    expect(sg(e)).toEqual([[BUF, 8], [BUF + 0x100, 8]]);
    expect([e.outNum, e.inNum, e.ndescs]).toEqual([1, 1, 3]);
  });
});
