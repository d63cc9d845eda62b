// The guest side of packed virtqueues: the bytes PackedRingDriver writes (descriptor encoding,
// wrap counters over several laps of a ring whose size is not a power of two, chains running off
// the end of the ring, indirect tables), the order it writes them in (the first descriptor's
// flags last), how it takes used descriptors back, event suppression both ways, and that the
// async PackedVringDriver leaves the same bytes for the same calls.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  VIRT_MAGIC,
} from '../../src/bus/virtio-mmio.js';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { MachineError } from '../../src/driver/machine.js';
import { DriverError, MmioDriver, type MmioAccess } from '../../src/driver/mmio-driver.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, bit } from '../../src/virtio/constants.js';
import {
  PackedRingDriver,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED,
  packedLayout,
  type PackedDesc,
} from '../../src/driver/packed-ring.js';
import { PackedVringDriver } from '../../src/driver/packed-vring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';
import { MiniMicrovm } from '../support/mini-microvm.js';

const RAM = 1 << 20;
const BASE = 0x10000;
const TABLES = 0x20000;
const BUFS = 0x40000;

const AVAIL = VIRTQ_DESC_F_AVAIL;
const USED = VIRTQ_DESC_F_USED;
const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const INDIRECT = VRING_DESC_F_INDIRECT;

function ring(num: number, eventIdx = false): { mem: GuestMemory; r: PackedRingDriver } {
  const mem = GuestMemory.ofSize(RAM);
  return { mem, r: PackedRingDriver.at(mem, BASE, num, eventIdx) };
}

/**
 * Just enough of a packed-ring device to hand buffers back: it takes chains at its own avail
 * position (walking NEXT across the end of the ring) and writes used descriptors as QEMU does:
 * id and len, then flags with AVAIL and USED both equal to its used wrap counter.
 */
class FakeDevice {
  nextAvail = 0;
  availWrap = true;
  nextUsed = 0;
  usedWrap = true;
  constructor(readonly mem: GuestMemory, readonly desc: number, readonly num: number) {}

  read(slot: number): PackedDesc {
    const a = this.desc + 16 * slot;
    return { addr: this.mem.read64(a), len: this.mem.read32(a + 8), id: this.mem.read16(a + 12), flags: this.mem.read16(a + 14) };
  }

  /** The next available chain: the id of its last descriptor and the slots it occupies. */
  pop(): { id: number; slots: number } | undefined {
    let d = this.read(this.nextAvail);
    const avail = (d.flags & AVAIL) !== 0;
    if (avail === ((d.flags & USED) !== 0) || avail !== this.availWrap) return undefined;
    let slots = 1;
    let i = this.nextAvail;
    while (!(d.flags & INDIRECT) && d.flags & NEXT) {
      i = (i + 1) % this.num;
      d = this.read(i);
      slots++;
    }
    this.nextAvail += slots;
    if (this.nextAvail >= this.num) {
      this.nextAvail -= this.num;
      this.availWrap = !this.availWrap;
    }
    return { id: d.id, slots };
  }

  push(id: number, len: number, slots: number): void {
    const a = this.desc + 16 * this.nextUsed;
    this.mem.write16(a + 12, id);
    this.mem.write32(a + 8, len);
    this.mem.write16(a + 14, this.usedWrap ? AVAIL | USED : 0);
    this.nextUsed += slots;
    if (this.nextUsed >= this.num) {
      this.nextUsed -= this.num;
      this.usedWrap = !this.usedWrap;
    }
  }
}

function descBytes(mem: GuestMemory, slot: number): number[] {
  return [...mem.view(BASE + 16 * slot, 16)!];
}

describe('PackedRingDriver: what it writes', () => {
  it('encodes one device-writable buffer little-endian, id in bytes 12-13, AVAIL set in the first lap', () => {
    const { mem, r } = ring(8);
    const id = r.add([{ addr: 0x1122_3344_5566, len: 0xa0b0c0d, write: true }]);
    expect(id).toBe(0);
    // addr 0x112233445566, len 0x0a0b0c0d, id 0, flags AVAIL|WRITE = 0x0082.
    expect(descBytes(mem, 0)).toEqual([0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0, 0, 0x0d, 0x0c, 0x0b, 0x0a, 0, 0, 0x82, 0x00]);
    expect(descBytes(mem, 1)).toEqual(new Array(16).fill(0));
    expect([r.nextAvail, r.availWrap, r.freeDescriptors]).toEqual([1, true, 7]);
    expect(r.freeIds).toEqual([1, 2, 3, 4, 5, 6, 7]);
  });

  it('a chain takes consecutive slots: NEXT on all but the last, the id in every descriptor', () => {
    const { r } = ring(8);
    r.add([{ addr: BUFS, len: 4 }]);
    const id = r.add([
      { addr: BUFS + 0x100, len: 16 },
      { addr: BUFS + 0x200, len: 32, write: true },
      { addr: BUFS + 0x300, len: 1, write: true },
    ]);
    expect(id).toBe(1);
    expect([1, 2, 3].map((s) => r.descAt(s))).toEqual([
      { addr: BigInt(BUFS + 0x100), len: 16, id: 1, flags: AVAIL | NEXT },
      { addr: BigInt(BUFS + 0x200), len: 32, id: 1, flags: AVAIL | NEXT | WRITE },
      { addr: BigInt(BUFS + 0x300), len: 1, id: 1, flags: AVAIL | WRITE },
    ]);
    expect(r.descAt(0)).toEqual({ addr: BigInt(BUFS), len: 4, id: 0, flags: AVAIL });
    expect([r.nextAvail, r.freeDescriptors]).toEqual([4, 4]);
    // One id per buffer, not per descriptor.
    expect(r.freeIds).toEqual([2, 3, 4, 5, 6, 7]);
  });

  it('flips AVAIL/USED every lap of a 5-slot ring, and the used side follows over several wraps', () => {
    const { mem, r } = ring(5);
    const dev = new FakeDevice(mem, BASE, 5);
    const seen: [number, number, boolean][] = [];
    for (let k = 0; k < 17; k++) {
      const slot = r.nextAvail;
      const wrap = r.availWrap;
      const id = r.add([{ addr: BUFS + 0x10 * k, len: 8 + k, write: true }]);
      // First lap: AVAIL=1 USED=0; second: AVAIL=0 USED=1; and so on.
      expect(r.descAt(slot).flags).toBe(WRITE | (Math.floor(k / 5) % 2 === 0 ? AVAIL : USED));
      expect(wrap).toBe(Math.floor(k / 5) % 2 === 0);
      const c = dev.pop()!;
      expect(c).toEqual({ id, slots: 1 });
      dev.push(c.id, 3 + k, c.slots);
      // The used descriptor: AVAIL == USED == the lap's wrap counter.
      expect(r.descAt(slot).flags).toBe(wrap ? AVAIL | USED : 0);
      expect(r.takeUsed()).toEqual([{ id, len: 3 + k }]);
      seen.push([slot, r.nextUsed, r.usedWrap]);
    }
    expect(seen.map(([s]) => s)).toEqual([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    expect(seen.map(([, , w]) => w)).toEqual([true, true, true, true, false, false, false, false, false, true, true, true, true, true, false, false, false]);
    expect([r.nextAvail, r.availWrap, r.nextUsed, r.usedWrap, r.freeDescriptors]).toEqual([2, false, 2, false, 5]);
    // Every id was handed back; the most recently freed goes first.
    expect(r.freeIds).toEqual([0, 1, 2, 3, 4]);
    expect(r.takeUsed()).toEqual([]);
  });

  it('a chain that runs off the end continues at slot 0 with the next lap\'s flags', () => {
    const { mem, r } = ring(5);
    const dev = new FakeDevice(mem, BASE, 5);
    for (let k = 0; k < 3; k++) {
      r.add([{ addr: BUFS, len: 1, write: true }]);
      const c = dev.pop()!;
      dev.push(c.id, 1, c.slots);
    }
    expect(r.takeUsed()).toHaveLength(3);
    expect(r.nextAvail).toBe(3);
    const id = r.add([
      { addr: BUFS + 0x100, len: 16 },
      { addr: BUFS + 0x200, len: 512, write: true },
      { addr: BUFS + 0x400, len: 512, write: true },
      { addr: BUFS + 0x600, len: 1, write: true },
    ]);
    expect(r.descAt(3)).toEqual({ addr: BigInt(BUFS + 0x100), len: 16, id, flags: AVAIL | NEXT });
    expect(r.descAt(4)).toEqual({ addr: BigInt(BUFS + 0x200), len: 512, id, flags: AVAIL | NEXT | WRITE });
    expect(r.descAt(0)).toEqual({ addr: BigInt(BUFS + 0x400), len: 512, id, flags: USED | NEXT | WRITE });
    expect(r.descAt(1)).toEqual({ addr: BigInt(BUFS + 0x600), len: 1, id, flags: USED | WRITE });
    expect([r.nextAvail, r.availWrap, r.freeDescriptors]).toEqual([2, false, 1]);
    // The ring has one slot left: a two-buffer chain does not fit, a single buffer does.
    expect(r.add([{ addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }])).toBe(-1);
    const c = dev.pop()!;
    expect(c).toEqual({ id, slots: 4 });
    dev.push(c.id, 1025, c.slots);
    // The used descriptor goes where the chain began; the used side skips all four slots.
    expect(r.descAt(3)).toMatchObject({ id, len: 1025, flags: AVAIL | USED });
    expect(r.takeUsed()).toEqual([{ id, len: 1025 }]);
    expect([r.nextUsed, r.usedWrap, r.freeDescriptors]).toEqual([2, false, 5]);
  });

  it('indirect: the buffers go into a table (only WRITE, no NEXT), one INDIRECT descriptor takes one slot', () => {
    const { mem, r } = ring(4);
    r.add([{ addr: BUFS, len: 1 }]);
    const id = r.add(
      [
        { addr: BUFS + 0x100, len: 16 },
        { addr: BUFS + 0x200, len: 4096, write: true },
        { addr: BUFS + 0x300, len: 1, write: true },
      ],
      { indirectTable: TABLES },
    );
    expect(id).toBe(1);
    expect(r.descAt(1)).toEqual({ addr: BigInt(TABLES), len: 48, id: 1, flags: AVAIL | INDIRECT });
    expect([...mem.view(TABLES, 48)!]).toEqual([
      ...[0x00, 0x01, 0x04, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0],
      ...[0x00, 0x02, 0x04, 0, 0, 0, 0, 0, 0x00, 0x10, 0, 0, 0, 0, 0x02, 0],
      ...[0x00, 0x03, 0x04, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0x02, 0],
    ]);
    expect([r.nextAvail, r.freeDescriptors]).toEqual([2, 2]);
    // Even a full ring takes an indirect buffer while a slot is free.
    expect(r.add([{ addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }])).toBe(-1);
    expect(r.add([{ addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }], { indirectTable: TABLES + 0x100 })).toBe(2);
    const dev = new FakeDevice(mem, BASE, 4);
    dev.pop();
    const c = dev.pop()!;
    expect(c).toEqual({ id: 1, slots: 1 });
  });

  it('writes the first descriptor\'s flags last, and not at all until publish with publish: false', () => {
    const { mem, r } = ring(5);
    const dev = new FakeDevice(mem, BASE, 5);
    for (let k = 0; k < 3; k++) {
      r.add([{ addr: BUFS, len: 1, write: true }]);
      const c = dev.pop()!;
      dev.push(c.id, 1, c.slots);
    }
    r.takeUsed();
    const writes: [number, number][] = [];
    mem.onWrite = (a, l) => writes.push([a, l]);
    const headFlags = BASE + 16 * 3 + 14;
    const id = r.add([{ addr: BUFS, len: 8 }, { addr: BUFS + 8, len: 8 }, { addr: BUFS + 16, len: 8, write: true }], { publish: false });
    const touches = (a: number, l: number, at: number): boolean => a < at + 2 && at < a + l;
    // Slot 3's first 14 bytes, slot 4, then slot 0 of the next lap; slot 3's flags untouched.
    expect(writes).toEqual([
      [BASE + 48, 14],
      [BASE + 64, 16],
      [BASE, 16],
    ]);
    expect(writes.some(([a, l]) => touches(a, l, headFlags))).toBe(false);
    // Slot 3's flags are still the zeros of clear(): to the device nothing is available.
    expect(mem.read16(headFlags)).toBe(0);
    expect(dev.pop()).toBeUndefined();
    writes.length = 0;
    r.publish(id);
    expect(writes).toEqual([[headFlags, 2]]);
    expect(mem.read16(headFlags)).toBe(AVAIL | NEXT);
    const c = dev.pop()!;
    expect(c).toEqual({ id, slots: 3 });
    expect(() => r.publish(id)).toThrow(/no unpublished chain/);
    dev.push(c.id, 8, c.slots);
    r.takeUsed();
    // Published in one go: the flags are the last write.
    writes.length = 0;
    r.add([{ addr: BUFS, len: 8 }, { addr: BUFS, len: 8, write: true }]);
    expect(writes.at(-1)).toEqual([BASE + 16 * 1 + 14, 2]);
    expect(writes.slice(0, -1).some(([a, l]) => touches(a, l, BASE + 16 * 1 + 14))).toBe(false);
    // Indirect: the table first, then the ring descriptor, its flags last.
    writes.length = 0;
    r.add([{ addr: BUFS, len: 8 }], { indirectTable: TABLES });
    expect(writes).toEqual([
      [TABLES, 16],
      [BASE + 16 * 3, 14],
      [BASE + 16 * 3 + 14, 2],
    ]);
    mem.onWrite = undefined;
  });

  it('hands out a chosen free id, refuses one in flight, and frees ids most recent first', () => {
    const { mem, r } = ring(6);
    expect(r.add([{ addr: BUFS, len: 1 }], { id: 4 })).toBe(4);
    expect(r.descAt(0).id).toBe(4);
    expect(() => r.add([{ addr: BUFS, len: 1 }], { id: 4 })).toThrow(/not free/);
    expect(() => r.add([{ addr: BUFS, len: 1 }], { id: 6 })).toThrow(/not free/);
    expect(r.freeIds).toEqual([0, 1, 2, 3, 5]);
    expect(r.add([{ addr: BUFS, len: 1 }])).toBe(0);
    expect(r.add([{ addr: BUFS, len: 1 }])).toBe(1);
    const dev = new FakeDevice(mem, BASE, 6);
    const popped = [dev.pop()!, dev.pop()!, dev.pop()!];
    // Completed out of order: 1, then 4.
    dev.push(1, 0, 1);
    dev.push(4, 0, 1);
    expect(r.takeUsed()).toEqual([
      { id: 1, len: 0 },
      { id: 4, len: 0 },
    ]);
    expect(popped.map((p) => p.id)).toEqual([4, 0, 1]);
    expect(r.freeIds).toEqual([4, 1, 2, 3, 5]);
    expect(r.freeDescriptors).toBe(5);
  });

  it('rejects an empty chain and refuses a used descriptor whose id is not in flight', () => {
    const { mem, r } = ring(4);
    expect(r.add([])).toBe(-1);
    r.add([{ addr: BUFS, len: 1, write: true }]);
    // Only AVAIL (as the driver left it): not used.
    expect(r.takeUsed()).toEqual([]);
    // A hand-written used descriptor naming id 3, which was never posted.
    mem.write16(BASE + 12, 3);
    mem.write16(BASE + 14, AVAIL | USED);
    expect(() => r.takeUsed()).toThrow(MachineError);
    expect(() => r.takeUsed()).toThrow(/slot 0 has buffer id 3, which is not in flight/);
    // USED without AVAIL is not used in the first lap either.
    mem.write16(BASE + 12, 0);
    mem.write16(BASE + 14, USED);
    expect(r.takeUsed()).toEqual([]);
    mem.write32(BASE + 8, 77);
    mem.write16(BASE + 14, AVAIL | USED | WRITE);
    // A stray WRITE flag on the used descriptor does not matter.
    expect(r.takeUsed()).toEqual([{ id: 0, len: 77 }]);
  });

  it('writes raw descriptors anywhere in the ring without touching the bookkeeping', () => {
    const { mem, r } = ring(4);
    r.writeDescAt(2, 0xffff_ffff_ffff_ffffn, 0xffff_ffff, 0xbeef, 0xffff);
    expect(descBytes(mem, 2)).toEqual([...new Array(12).fill(0xff), 0xef, 0xbe, 0xff, 0xff]);
    expect(r.descAt(2)).toEqual({ addr: 0xffff_ffff_ffff_ffffn, len: 0xffff_ffff, id: 0xbeef, flags: 0xffff });
    expect([r.nextAvail, r.freeDescriptors, r.freeIds.length]).toEqual([0, 4, 4]);
  });
});

describe('PackedRingDriver: event suppression', () => {
  it('setDriverEvent: DISABLE and ENABLE write only the flags; DESC writes off_wrap first (default: the next used slot)', () => {
    const { mem, r } = ring(5, true);
    const drv = packedLayout(BASE, 5).avail;
    expect(r.addrs.avail).toBe(BASE + 80);
    expect(r.addrs.used).toBe(BASE + 84);
    const writes: [number, number, number][] = [];
    mem.onWrite = (a, l) => writes.push([a, l, mem.read16(a)]);
    r.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    expect(writes).toEqual([[drv + 2, 2, 1]]);
    writes.length = 0;
    r.setDriverEvent(RING_EVENT_FLAGS_DESC, 0x8003);
    expect(writes).toEqual([
      [drv, 2, 0x8003],
      [drv + 2, 2, 2],
    ]);
    expect(r.driverEvent()).toEqual({ offWrap: 0x8003, flags: 2 });
    writes.length = 0;
    r.suppressInterrupts(false);
    // EVENT_IDX: DESC at the next used descriptor, slot 0 of lap 1.
    expect(writes).toEqual([
      [drv, 2, 0x8000],
      [drv + 2, 2, 2],
    ]);
    r.eventIdx = false;
    r.suppressInterrupts(false);
    expect(r.driverEvent()).toEqual({ offWrap: 0x8000, flags: RING_EVENT_FLAGS_ENABLE });
    mem.onWrite = undefined;
  });

  it('with DESC in force, taking used buffers moves off_wrap to the next used slot (as Linux does)', () => {
    const { mem, r } = ring(3, true);
    const dev = new FakeDevice(mem, BASE, 3);
    r.suppressInterrupts(false);
    for (let k = 0; k < 4; k++) {
      r.add([{ addr: BUFS, len: 1 }, { addr: BUFS, len: 1, write: true }]);
      const c = dev.pop()!;
      dev.push(c.id, 1, c.slots);
      r.takeUsed();
      expect(r.driverEvent()).toEqual({ offWrap: r.nextUsed | (r.usedWrap ? 0x8000 : 0), flags: RING_EVENT_FLAGS_DESC });
    }
    // 4 chains of 2 in a ring of 3: used position 8 is slot 2 of the third lap (wrap counter 1 again).
    expect(r.driverEvent().offWrap).toBe(0x8002);
    r.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
    r.add([{ addr: BUFS, len: 1, write: true }]);
    const c = dev.pop()!;
    dev.push(c.id, 1, c.slots);
    r.takeUsed();
    // DISABLE in force: off_wrap stays.
    expect(r.driverEvent()).toEqual({ offWrap: 0x8002, flags: RING_EVENT_FLAGS_DISABLE });
  });

  it('needsNotify: ENABLE yes, DISABLE no, DESC only when off_wrap lies in the slots added since the last kick', () => {
    const { mem, r } = ring(5);
    const dev = mem;
    const setDevice = (flags: number, offWrap = 0): void => {
      dev.write16(r.addrs.used, offWrap);
      dev.write16(r.addrs.used + 2, flags);
    };
    r.add([{ addr: BUFS, len: 1 }]);
    expect(r.needsNotify()).toBe(true);
    setDevice(RING_EVENT_FLAGS_DISABLE);
    expect(r.needsNotify()).toBe(false);
    // A reserved value counts as "not disabled", as in Linux.
    setDevice(3);
    expect(r.needsNotify()).toBe(true);
    expect(r.deviceEvent()).toEqual({ offWrap: 0, flags: 3 });
    // Added slot 0 (lap 1); the device asks to hear about slot 0 of lap 1, then slot 1.
    setDevice(RING_EVENT_FLAGS_DESC, 0x8000);
    expect(r.needsNotify()).toBe(true);
    setDevice(RING_EVENT_FLAGS_DESC, 0x8001);
    expect(r.needsNotify()).toBe(false);
    r.kicked();
    setDevice(RING_EVENT_FLAGS_DESC, 0x8000);
    expect(r.needsNotify()).toBe(false);
    // Slots 1..3 added without a kick: an event at 1, 2 or 3 is crossed, 4 is not.
    r.add([{ addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }, { addr: BUFS, len: 1 }]);
    expect([1, 2, 3, 4].map((s) => (setDevice(RING_EVENT_FLAGS_DESC, 0x8000 | s), r.needsNotify()))).toEqual([true, true, true, false]);
    r.kicked();
    // Slot 4 (lap 1) and slot 0 (lap 0, wrap counter now 0): the window crosses the end of the ring.
    r.add([{ addr: BUFS, len: 1 }]);
    const dv = new FakeDevice(mem, BASE, 5);
    for (let c = dv.pop(); c; c = dv.pop()) dv.push(c.id, 0, c.slots);
    r.takeUsed();
    expect(r.freeDescriptors).toBe(5);
    r.add([{ addr: BUFS, len: 1 }]);
    expect([r.nextAvail, r.availWrap]).toEqual([1, false]);
    const cases: [number, boolean][] = [
      [0x8004, true], // slot 4 of the previous lap: 4 - 5 = -1 lies in [-1, 1)
      [0x0000, true], // slot 0 of this lap
      [0x0001, false], // slot 1 of this lap: not yet added
      [0x8003, false], // slot 3 of the previous lap: before the window
    ];
    for (const [ow, want] of cases) {
      setDevice(RING_EVENT_FLAGS_DESC, ow);
      expect([ow, r.needsNotify()]).toEqual([ow, want]);
    }
  });
});

// --- the async driver writes what the sync one writes --------------------------------------------

type Op =
  | { kind: 'add'; bufs: { len: number; write: boolean }[]; indirect: boolean; publish: boolean }
  | { kind: 'publish' }
  | { kind: 'complete'; pick: number; len: number }
  | { kind: 'take' }
  | { kind: 'event'; flags: number; offWrap: number | undefined }
  | { kind: 'deviceEvent'; flags: number; offWrap: number }
  | { kind: 'kick' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant('add' as const),
      bufs: fc.array(fc.record({ len: fc.integer({ min: 1, max: 4096 }), write: fc.boolean() }), { minLength: 1, maxLength: 4 }),
      indirect: fc.boolean(),
      publish: fc.boolean(),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('publish' as const) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('complete' as const), pick: fc.nat(), len: fc.nat({ max: 5000 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('take' as const) }) },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('event' as const), flags: fc.integer({ min: 0, max: 2 }), offWrap: fc.option(fc.nat({ max: 0xffff }), { nil: undefined }) }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('deviceEvent' as const), flags: fc.integer({ min: 0, max: 3 }), offWrap: fc.nat({ max: 0xffff }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('kick' as const) }) },
);

describe('PackedVringDriver (async) against PackedRingDriver (sync)', () => {
  it('any sequence of posts, publishes, completions, takes and event changes leaves the same memory', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 9 }), fc.boolean(), fc.array(opArb, { maxLength: 40 }), async (num, eventIdx, ops) => {
        const mem = GuestMemory.ofSize(RAM);
        const sync = PackedRingDriver.at(mem, BASE, num, eventIdx);
        const target = new MiniMicrovm({ ramSize: RAM, transports: 0 });
        const m = new InProcessMachine(target);
        const async_ = await PackedVringDriver.at(m, BASE, num, eventIdx);
        const devs = [new FakeDevice(mem, BASE, num), new FakeDevice(target.ram, BASE, num)];
        const unpublished: number[] = [];
        const popped: { id: number; slots: number }[] = [];
        let table = TABLES;
        let buf = BUFS;
        for (const op of ops) {
          if (op.kind === 'add') {
            const bufs = op.bufs.map((b) => ({ addr: (buf += 0x1000), len: b.len, write: b.write }));
            const opts = { publish: op.publish, ...(op.indirect ? { indirectTable: table } : {}) };
            if (op.indirect) table += 16 * bufs.length;
            const a = sync.add(bufs, opts);
            expect(await async_.add(bufs, opts)).toBe(a);
            if (a >= 0 && !op.publish) unpublished.push(a);
          } else if (op.kind === 'publish') {
            const id = unpublished.shift();
            if (id === undefined) continue;
            sync.publish(id);
            await async_.publish(id);
          } else if (op.kind === 'complete') {
            // The device takes whatever is available, then completes any chain it holds.
            for (;;) {
              const c = devs[0]!.pop();
              expect(devs[1]!.pop()).toEqual(c);
              if (!c) break;
              popped.push(c);
            }
            if (popped.length === 0) continue;
            const [c] = popped.splice(op.pick % popped.length, 1);
            for (const d of devs) d.push(c!.id, op.len, c!.slots);
          } else if (op.kind === 'take') {
            expect(await async_.takeUsed()).toEqual(sync.takeUsed());
          } else if (op.kind === 'event') {
            sync.setDriverEvent(op.flags, op.offWrap);
            await async_.setDriverEvent(op.flags, op.offWrap);
          } else if (op.kind === 'deviceEvent') {
            for (const d of devs) {
              d.mem.write16(sync.addrs.used, op.offWrap);
              d.mem.write16(sync.addrs.used + 2, op.flags);
            }
          } else {
            sync.kicked();
            async_.kicked();
          }
          expect([async_.nextAvail, async_.availWrap, async_.nextUsed, async_.usedWrap, async_.freeDescriptors]).toEqual([
            sync.nextAvail,
            sync.availWrap,
            sync.nextUsed,
            sync.usedWrap,
            sync.freeDescriptors,
          ]);
          expect(async_.freeIds).toEqual(sync.freeIds);
          for (const [at, len] of [
            [BASE, 16 * num + 8],
            [TABLES, table - TABLES],
          ] as const) {
            if (len === 0) continue;
            const want = Buffer.from(mem.view(at, len)!);
            const got = Buffer.from(await m.readBytes(at, len));
            if (!got.equals(want)) expect(Uint8Array.from(got)).toEqual(Uint8Array.from(want));
          }
          expect(await async_.needsNotify()).toBe(sync.needsNotify());
        }
      }),
      { numRuns: 80 },
    );
  });

  it('waitUsed collects used descriptors as they appear', async () => {
    const target = new MiniMicrovm({ ramSize: RAM, transports: 0 });
    const m = new InProcessMachine(target);
    const r = await PackedVringDriver.at(m, BASE, 4);
    const dev = new FakeDevice(target.ram, BASE, 4);
    const a = await r.add([{ addr: BUFS, len: 8, write: true }]);
    const b = await r.add([{ addr: BUFS, len: 8 }, { addr: BUFS + 8, len: 8, write: true }]);
    const ca = dev.pop()!;
    const cb = dev.pop()!;
    dev.push(cb.id, 8, cb.slots);
    target.clock.setTimer(500, () => dev.push(ca.id, 4, ca.slots));
    expect(await r.waitUsed(2)).toEqual([
      { id: b, len: 8 },
      { id: a, len: 4 },
    ]);
    expect([r.nextUsed, r.usedWrap, r.freeDescriptors]).toEqual([3, true, 4]);
  });
});

// --- queue set-up on the transports ---------------------------------------------------------------

/** A virtio-mmio version 2 register file that offers VERSION_1 | RING_PACKED | EVENT_IDX and records writes. */
class FakeMmio implements MmioAccess {
  readonly writes: [number, number][] = [];
  private sel = 0;
  private status = 0;
  read(offset: number): number {
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE:
        return VIRT_MAGIC;
      case VIRTIO_MMIO_VERSION:
        return 2;
      case VIRTIO_MMIO_DEVICE_ID:
        return 4;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        return this.sel === 1 ? Number((bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED)) >> 32n) : 1 << VIRTIO_RING_F_EVENT_IDX;
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return 8;
      case VIRTIO_MMIO_STATUS:
        return this.status;
      default:
        return 0;
    }
  }
  write(offset: number, _size: number, value: number): void {
    this.writes.push([offset, value]);
    if (offset === VIRTIO_MMIO_DEVICE_FEATURES_SEL) this.sel = value;
    if (offset === VIRTIO_MMIO_STATUS) this.status = value;
  }
}

describe('setupPackedQueue on the transports', () => {
  it('sync MmioDriver: ring, driver area and device area go into the desc/avail/used registers; any size up to the max', () => {
    const regs = new FakeMmio();
    // RAM above 4 GiB too, to see the high halves of the addresses.
    const mem = new GuestMemory([
      { base: 0, size: RAM },
      { base: 0x1_2345_0000, size: 0x10000 },
    ]);
    const d = new MmioDriver(regs, mem);
    expect(d.init(bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX))).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX));
    expect(() => d.setupPackedQueue(0, { num: 9, base: BASE })).toThrow(/bad packed queue size 9 \(max 8\)/);
    expect(() => d.setupPackedQueue(0, {})).toThrow(/addresses or a base/);
    regs.writes.length = 0;
    const r = d.setupPackedQueue(0, { num: 5, addrs: { desc: 0x1_2345_6780, avail: 0x9000, used: 0xa004 } });
    expect(regs.writes).toEqual([
      [VIRTIO_MMIO_QUEUE_SEL, 0],
      [VIRTIO_MMIO_QUEUE_NUM, 5],
      [VIRTIO_MMIO_QUEUE_DESC_LOW, 0x2345_6780],
      [VIRTIO_MMIO_QUEUE_DESC_HIGH, 1],
      [VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x9000],
      [VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0],
      [VIRTIO_MMIO_QUEUE_USED_LOW, 0xa004],
      [VIRTIO_MMIO_QUEUE_USED_HIGH, 0],
      [VIRTIO_MMIO_QUEUE_READY, 1],
    ]);
    expect([r.num, r.eventIdx]).toEqual([5, true]);
    expect(d.packedQueues.get(0)).toBe(r);
    // The contiguous layout from a base; notify starts the next kick window.
    const r2 = d.setupPackedQueue(0, { num: 3, base: BASE });
    expect(r2.addrs).toEqual({ desc: BASE, avail: BASE + 48, used: BASE + 52 });
    // The device asks to hear about slot 0 of lap 1 (off_wrap 0x8000).
    mem.write16(r2.addrs.used, 0x8000);
    mem.write16(r2.addrs.used + 2, RING_EVENT_FLAGS_DESC);
    r2.add([{ addr: BUFS, len: 1 }]);
    expect(r2.needsNotify()).toBe(true);
    d.notify(0);
    expect(regs.writes.at(-1)).toEqual([VIRTIO_MMIO_QUEUE_NOTIFY, 0]);
    expect(r2.needsNotify()).toBe(false);
  });

  it('sync MmioDriver refuses version 1 and a device where RING_PACKED was not negotiated', () => {
    const legacy = new MiniMicrovm({ ramSize: RAM, rngDevices: 1 });
    const t = legacy.transports[23]!;
    const d1 = new MmioDriver({ read: (o, sz) => t.read(o, sz), write: (o, sz, v) => t.write(o, sz, v) }, legacy.ram);
    d1.init(bit(VIRTIO_F_RING_PACKED));
    expect(() => d1.setupPackedQueue(0, { base: BASE })).toThrow(/version 2/);
    const modern = new MiniMicrovm({ ramSize: RAM, rngDevices: 1, forceLegacy: false });
    const t2 = modern.transports[23]!;
    const d2 = new MmioDriver({ read: (o, sz) => t2.read(o, sz), write: (o, sz, v) => t2.write(o, sz, v) }, modern.ram);
    d2.init(0n);
    expect(() => d2.setupPackedQueue(0, { base: BASE })).toThrow(DriverError);
    expect(() => d2.setupPackedQueue(0, { base: BASE })).toThrow(/RING_PACKED was not negotiated/);
  });

  it('async VirtioMmioDriver refuses version 1 and a device where RING_PACKED was not negotiated', async () => {
    for (const forceLegacy of [true, false]) {
      const m = new InProcessMachine(new MiniMicrovm({ ramSize: RAM, rngDevices: 1, forceLegacy }));
      const d = new VirtioMmioDriver(m, MICROVM_MMIO_BASE + 0x200 * 23, { alloc: new GuestAllocator(0x10000, RAM) });
      await d.init(0n);
      await expect(d.setupPackedQueue(0, { num: 4 })).rejects.toThrow(forceLegacy ? /modern interface/ : /RING_PACKED was not negotiated/);
      expect(d.packedQueues.size).toBe(0);
    }
  });
});
