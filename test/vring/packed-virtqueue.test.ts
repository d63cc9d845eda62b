// The device side of packed virtqueues (VIRTIO 1.2 §2.8), driven by hand-written descriptors:
// the test writes exactly the bytes the spec describes, so it does not lean on our driver library.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { formatTraceEvent, type TraceEvent } from '../../src/trace/trace.js';
import {
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
} from '../../src/vring/constants.js';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { VirtQueue } from '../../src/vring/virtqueue.js';
import { TestQueueOwner } from '../support/queue-owner.js';

const DESC = 0x1000;
const DRIVER = 0x2000;
const DEVICE = 0x2100;
const BUF = 0x10000;
const TABLE = 0x8000;
const NEXT = VRING_DESC_F_NEXT;
const WRITE = VRING_DESC_F_WRITE;
const AVAIL = VRING_PACKED_DESC_F_AVAIL;
const USED = VRING_PACKED_DESC_F_USED;


interface Buf {
  addr: number;
  len: number;
  write?: boolean;
}

/**
 * A minimal packed-ring driver written from the spec: chains go into consecutive slots, the id in
 * every descriptor, the first descriptor's flags written last.
 */
class Driver {
  next = 0;
  wrap = true;
  usedNext = 0;
  usedWrap = true;
  private readonly lengths = new Map<number, number>();
  constructor(
    readonly mem: GuestMemory,
    readonly num: number,
  ) {}

  private availFlags(): number {
    return this.wrap ? AVAIL : USED;
  }

  writeDesc(slot: number, addr: number, len: number, id: number, flags: number): void {
    const o = DESC + 16 * slot;
    this.mem.write64(o, BigInt(addr));
    this.mem.write32(o + 8, len);
    this.mem.write16(o + 12, id);
    this.mem.write16(o + 14, flags);
  }

  add(bufs: Buf[], id: number, opts: { publish?: boolean } = {}): () => void {
    const first = this.next;
    const firstWrap = this.wrap;
    let firstFlags = 0;
    bufs.forEach((b, k) => {
      const flags = (k < bufs.length - 1 ? NEXT : 0) | (b.write ? WRITE : 0) | this.availFlags();
      if (k === 0) {
        firstFlags = flags;
        this.writeDesc(this.next, b.addr, b.len, id, 0 | (firstWrap ? USED : AVAIL)); // not yet available
      } else {
        this.writeDesc(this.next, b.addr, b.len, id, flags);
      }
      if (++this.next === this.num) {
        this.next = 0;
        this.wrap = !this.wrap;
      }
    });
    this.lengths.set(id, bufs.length);
    const publish = () => this.mem.write16(DESC + 16 * first + 14, firstFlags);
    if (opts.publish !== false) publish();
    return publish;
  }

  addIndirect(bufs: Buf[], id: number, table = TABLE): void {
    bufs.forEach((b, k) => {
      const o = table + 16 * k;
      this.mem.write64(o, BigInt(b.addr));
      this.mem.write32(o + 8, b.len);
      this.mem.write16(o + 12, 0);
      this.mem.write16(o + 14, b.write ? WRITE : 0);
    });
    this.writeDesc(this.next, table, 16 * bufs.length, id, VRING_DESC_F_INDIRECT | this.availFlags());
    this.lengths.set(id, 1);
    if (++this.next === this.num) {
      this.next = 0;
      this.wrap = !this.wrap;
    }
  }

  /** Used descriptors the device wrote since the last call. */
  takeUsed(): { id: number; len: number; flags: number; slot: number }[] {
    const out = [];
    for (;;) {
      const o = DESC + 16 * this.usedNext;
      const flags = this.mem.read16(o + 14);
      const avail = (flags & AVAIL) !== 0;
      const used = (flags & USED) !== 0;
      if (avail !== used || used !== this.usedWrap) break;
      const id = this.mem.read16(o + 12);
      out.push({ id, len: this.mem.read32(o + 8), flags, slot: this.usedNext });
      this.usedNext += this.lengths.get(id) ?? 1;
      if (this.usedNext >= this.num) {
        this.usedNext -= this.num;
        this.usedWrap = !this.usedWrap;
      }
    }
    return out;
  }

  setDriverEvent(flags: number, offWrap = 0): void {
    this.mem.write16(DRIVER, offWrap);
    this.mem.write16(DRIVER + 2, flags);
  }

  deviceEvent(): { offWrap: number; flags: number } {
    return { offWrap: this.mem.read16(DEVICE), flags: this.mem.read16(DEVICE + 2) };
  }
}

function rig(num = 8, o: { eventIdx?: boolean; indirect?: boolean } = {}) {
  const mem = GuestMemory.ofSize(0x40000);
  const owner = new TestQueueOwner(mem, 'packed-test');
  const vq = new VirtQueue(owner, 0, num);
  vq.applyFeatures(o.eventIdx ?? false, o.indirect ?? true, false, true, true);
  vq.setNum(num);
  vq.setRings(DESC, DRIVER, DEVICE);
  expect(owner.errors).toEqual([]);
  expect(vq.isMapped).toBe(true);
  return { mem, owner, vq, drv: new Driver(mem, num) };
}

describe('packed virtqueue: pop and push', () => {
  it('a one-descriptor chain: the element, then a used descriptor in its slot with AVAIL|USED set', () => {
    const { mem, vq, drv } = rig();
    mem.fill(BUF, 4, 0xab);
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF + 0x100, len: 16, write: true }], 7);
    const e = vq.pop()!;
    expect([e.index, e.outNum, e.inNum, e.outBytes, e.inBytes, e.ndescs]).toEqual([7, 1, 1, 4, 16, 2]);
    expect(vq.inuse).toBe(2); // descriptors, as QEMU counts them in packed rings
    expect(vq.lastAvailIdx).toBe(2);
    expect(vq.pop()).toBeNull();
    e.writeIn(0, new Uint8Array([1, 2, 3]));
    vq.push(e, 3);
    expect(drv.takeUsed()).toEqual([{ id: 7, len: 3, flags: AVAIL | USED, slot: 0 }]);
    expect(vq.usedIdx).toBe(2);
    expect(vq.inuse).toBe(0);
    expect([...mem.view(BUF + 0x100, 3)!]).toEqual([1, 2, 3]);
  });

  it('the buffer id comes from the chain\'s last descriptor, the used slots skip the whole chain', () => {
    const { mem, vq, drv } = rig();
    drv.add([{ addr: BUF, len: 1 }, { addr: BUF, len: 1 }, { addr: BUF, len: 8, write: true }], 3);
    mem.write16(DESC + 12, 99); // the first descriptor says otherwise; the spec's place is the last
    drv.add([{ addr: BUF, len: 8, write: true }], 4);
    const a = vq.pop()!;
    const b = vq.pop()!;
    expect([a.index, a.ndescs, b.index, b.ndescs]).toEqual([3, 3, 4, 1]);
    vq.push(a, 8);
    vq.push(b, 2);
    const used = drv.takeUsed();
    expect(used.map((u) => [u.id, u.len, u.slot])).toEqual([
      [3, 8, 0],
      [4, 2, 3],
    ]);
    expect(vq.usedIdx).toBe(4);
  });

  it('a queue of 5 (not a power of two) across many laps: wrap counters and used flags alternate', () => {
    const { vq, drv } = rig(5);
    const lens = [1, 2, 3, 1, 2, 2, 3, 1, 1, 2, 3, 3, 1, 2];
    let seen = 0;
    let flips = 0;
    let lastWrap = vq.usedWrapCounter;
    lens.forEach((n, i) => {
      const bufs = Array.from({ length: n }, (_, k) => ({ addr: BUF + 0x100 * k, len: 8, write: k === n - 1 }));
      drv.add(bufs, i % 5);
      const e = vq.pop()!;
      expect(e, `chain ${i}`).not.toBeNull();
      expect([e.index, e.ndescs]).toEqual([i % 5, n]);
      const wrapBefore = vq.usedWrapCounter;
      vq.push(e, 8);
      const used = drv.takeUsed();
      expect(used.map((u) => u.id)).toEqual([i % 5]);
      // The flags are the device's wrap counter at that slot: both bits set, or both clear.
      expect(used[0]!.flags).toBe(wrapBefore ? AVAIL | USED : 0);
      seen += n;
      if (vq.usedWrapCounter !== lastWrap) flips++;
      lastWrap = vq.usedWrapCounter;
    });
    expect(flips).toBe(Math.floor(seen / 5));
    expect(vq.usedIdx).toBe(seen % 5);
    expect(vq.lastAvailIdx).toBe(seen % 5);
    expect(vq.lastAvailWrapCounter).toBe(Math.floor(seen / 5) % 2 === 0);
    expect(vq.inuse).toBe(0);
  });

  it('descriptors left from the previous lap are not available', () => {
    const { vq, drv } = rig(2);
    drv.add([{ addr: BUF, len: 4 }], 0);
    drv.add([{ addr: BUF, len: 4 }], 1);
    vq.push(vq.pop()!, 0);
    vq.push(vq.pop()!, 0);
    // Slot 0 still holds the used descriptor (AVAIL|USED): for wrap counter 0 that is not available.
    expect(vq.lastAvailWrapCounter).toBe(false);
    expect(vq.isEmpty()).toBe(true);
    expect(vq.pop()).toBeNull();
    drv.takeUsed();
    drv.add([{ addr: BUF, len: 4 }], 1);
    expect(vq.pop()!.index).toBe(1);
  });

  it('a chain is not seen until its first descriptor is published', () => {
    const { vq, drv } = rig();
    const publish = drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4, write: true }], 2, { publish: false });
    expect(vq.isEmpty()).toBe(true);
    expect(vq.pop()).toBeNull();
    publish();
    expect(vq.isEmpty()).toBe(false);
    expect(vq.pop()!.index).toBe(2);
  });

  it('a chain wrapping round the end of the ring', () => {
    const { vq, drv } = rig(4);
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    vq.push(vq.pop()!, 0);
    drv.takeUsed();
    drv.add([{ addr: BUF, len: 1 }, { addr: BUF + 1, len: 2 }, { addr: BUF + 3, len: 4, write: true }], 1);
    const e = vq.pop()!;
    expect([e.index, e.ndescs, e.outBytes, e.inBytes]).toEqual([1, 3, 3, 4]);
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter]).toEqual([2, false]);
    vq.push(e, 4);
    // Written at slot 3 of the first lap; the device's position then moves into the second.
    expect(drv.takeUsed()).toEqual([{ id: 1, len: 4, flags: AVAIL | USED, slot: 3 }]);
    expect([vq.usedIdx, vq.usedWrapCounter]).toEqual([2, false]);
  });

  it('an indirect chain takes one slot; only WRITE counts in the table', () => {
    const { vq, drv } = rig();
    drv.addIndirect(
      [
        { addr: BUF, len: 10 },
        { addr: BUF + 0x100, len: 20 },
        { addr: BUF + 0x200, len: 30, write: true },
      ],
      5,
    );
    drv.add([{ addr: BUF, len: 1 }], 6);
    const e = vq.pop()!;
    expect([e.index, e.ndescs, e.outNum, e.inNum, e.outBytes, e.inBytes]).toEqual([5, 1, 2, 1, 30, 30]);
    expect(vq.inuse).toBe(1);
    expect(vq.pop()!.index).toBe(6);
    expect(vq.lastAvailIdx).toBe(2);
  });

  it('batched completions: every used descriptor is written before the first one\'s flags', () => {
    const { mem, vq, drv } = rig();
    for (let i = 0; i < 3; i++) drv.add([{ addr: BUF + 0x100 * i, len: 8, write: true }, { addr: BUF, len: 0, write: true }], i);
    const es = [vq.pop()!, vq.pop()!, vq.pop()!];
    const writes: [number, number][] = [];
    mem.onWrite = (gpa, len) => writes.push([gpa, len]);
    vq.fill(es[2]!, 1, 0);
    vq.fill(es[0]!, 2, 1);
    vq.fill(es[1]!, 3, 2);
    expect(drv.takeUsed()).toEqual([]); // nothing visible before the flush
    vq.flush(3);
    const ringWrites = writes.filter(([a]) => a >= DESC && a < DESC + 16 * 8);
    expect(ringWrites).toEqual([
      [DESC + 16 * 2 + 8, 8],
      [DESC + 16 * 4 + 8, 8],
      [DESC + 16 * 0 + 8, 8],
    ]);
    expect(drv.takeUsed().map((u) => [u.id, u.len, u.slot])).toEqual([
      [2, 1, 0],
      [0, 2, 2],
      [1, 3, 4],
    ]);
    expect([vq.usedIdx, vq.inuse]).toEqual([6, 0]);
  });

  it('availInBytes measures chains in ring order without taking them', () => {
    const { vq, drv } = rig();
    drv.add([{ addr: BUF, len: 100, write: true }], 0);
    drv.addIndirect([{ addr: BUF, len: 50, write: true }, { addr: BUF, len: 25, write: true }], 1);
    expect(vq.availInBytes(1000)).toBe(175);
    expect(vq.availInBytes(120)).toBe(175);
    expect(vq.availInBytes(100)).toBe(100);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([0, 0]);
    expect(vq.pop()!.index).toBe(0);
  });
});

describe('packed virtqueue: give back, rewind, drop', () => {
  it('unpop and rewind go back by the slots each chain took', () => {
    const { vq, drv } = rig(5);
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    drv.add([{ addr: BUF, len: 4 }], 1);
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 2); // wraps: slots 3, 4
    const a = vq.pop()!;
    const b = vq.pop()!;
    const c = vq.pop()!;
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.inuse]).toEqual([0, false, 5]);
    vq.unpop(c);
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.inuse]).toEqual([3, true, 3]);
    expect(vq.rewind(2)).toBe(true);
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.inuse]).toEqual([0, true, 0]);
    expect([a.inFlight, b.inFlight]).toEqual([false, false]);
    expect([vq.pop()!.index, vq.pop()!.index, vq.pop()!.index]).toEqual([0, 1, 2]);
    expect(vq.rewind(4)).toBe(false);
  });

  it('detach frees the slots without a used descriptor', () => {
    const { vq, drv } = rig();
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    const e = vq.pop()!;
    vq.detach(e);
    expect(vq.inuse).toBe(0);
    expect(drv.takeUsed()).toEqual([]);
    vq.push(e, 0); // stale: ignored
    expect(drv.takeUsed()).toEqual([]);
  });

  it('dropAll returns every chain with length 0 and turns notifications off, as QEMU does', () => {
    const { vq, drv } = rig();
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    drv.add([{ addr: BUF, len: 4 }], 1);
    expect(vq.dropAll()).toBe(2);
    expect(drv.takeUsed().map((u) => [u.id, u.len, u.slot])).toEqual([
      [0, 0, 0],
      [1, 0, 2],
    ]);
    expect(drv.deviceEvent().flags).toBe(1);
    expect([vq.lastAvailIdx, vq.usedIdx, vq.inuse]).toEqual([3, 3, 0]);
  });

  it('dropAll over descriptors that all say NEXT stops after one lap (QEMU loops forever, row 79)', () => {
    const { vq, drv } = rig(4);
    for (let k = 0; k < 4; k++) drv.writeDesc(k, BUF, 4, 0, NEXT | AVAIL);
    expect(vq.dropAll()).toBe(1);
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.usedIdx, vq.usedWrapCounter]).toEqual([0, false, 0, false]);
    expect(drv.takeUsed().map((u) => [u.id, u.len, u.slot])).toEqual([[0, 0, 0]]);
  });

  it('reset puts both wrap counters back to 1', () => {
    const { vq, drv } = rig(2);
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    vq.push(vq.pop()!, 0);
    expect([vq.lastAvailWrapCounter, vq.usedWrapCounter]).toEqual([false, false]);
    vq.reset();
    expect([vq.lastAvailWrapCounter, vq.usedWrapCounter, vq.lastAvailIdx, vq.usedIdx]).toEqual([true, true, 0, 0]);
  });
});

describe('packed virtqueue: notifications', () => {
  it('the device event area: DISABLE, ENABLE, and with EVENT_IDX the next position and its wrap', () => {
    const a = rig(4);
    a.vq.setNotification(false);
    expect(a.drv.deviceEvent()).toEqual({ offWrap: 0, flags: 1 });
    a.vq.setNotification(true);
    expect(a.drv.deviceEvent()).toEqual({ offWrap: 0, flags: 0 });

    const b = rig(4, { eventIdx: true });
    b.drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 0);
    b.drv.add([{ addr: BUF, len: 4 }], 1);
    b.vq.push(b.vq.pop()!, 0);
    b.vq.push(b.vq.pop()!, 0);
    b.vq.setNotification(true);
    expect(b.drv.deviceEvent()).toEqual({ offWrap: 0, flags: 2 }); // position 0, wrap counter 0
    b.drv.add([{ addr: BUF, len: 4 }], 2);
    b.vq.pop();
    b.vq.setNotification(true);
    expect(b.drv.deviceEvent()).toEqual({ offWrap: 1, flags: 2 });
  });

  it('the driver event area decides used-buffer notifications', () => {
    const { vq, drv } = rig(4, { eventIdx: true });
    const complete = () => {
      drv.add([{ addr: BUF, len: 4 }], 0);
      vq.push(vq.pop()!, 0);
      drv.takeUsed();
    };
    complete();
    drv.setDriverEvent(1);
    expect(vq.shouldNotify()).toBe(false);
    drv.setDriverEvent(0);
    expect(vq.shouldNotify()).toBe(true);
    // DESC: notify when the device passes position 3 of this lap.
    drv.setDriverEvent(2, 0x8000 | 3);
    complete(); // used position 2
    expect(vq.shouldNotify()).toBe(false);
    complete(); // 3
    expect(vq.shouldNotify()).toBe(false);
    complete(); // 4 = wraps to 0: passed 3
    expect(vq.shouldNotify()).toBe(true);
    // An event position on the next lap (wrap bit 0) is far ahead.
    drv.setDriverEvent(2, 2);
    complete();
    expect(vq.shouldNotify()).toBe(false);
    complete();
    complete();
    expect(vq.shouldNotify()).toBe(true);
  });
});

describe('packed virtqueue: hostile drivers', () => {
  it('a chain with NEXT on every slot is a loop: broken, nothing consumed', () => {
    const { owner, vq, drv } = rig(4);
    for (let s = 0; s < 4; s++) drv.writeDesc(s, BUF, 4, 0, NEXT | AVAIL);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Looped descriptor']);
    expect([vq.lastAvailIdx, vq.inuse]).toEqual([0, 0]);
  });

  it('a buffer outside RAM, a bad indirect size, indirect without the feature, too long a table', () => {
    const cases: [string, (r: ReturnType<typeof rig>) => void, string][] = [
      ['outside RAM', (r) => r.drv.writeDesc(0, 0x7fff_0000, 4, 0, AVAIL), 'virtio: bogus descriptor or out of resources'],
      ['indirect size', (r) => r.drv.writeDesc(0, TABLE, 24, 0, AVAIL | VRING_DESC_F_INDIRECT), 'Invalid size for indirect buffer table (24)'],
      ['indirect table outside RAM', (r) => r.drv.writeDesc(0, 0x3_fff0, 64, 0, AVAIL | VRING_DESC_F_INDIRECT), 'Cannot map indirect buffer'],
      ['table of 2048', (r) => {
        for (let k = 0; k < 2048; k++) r.mem.write32(TABLE + 16 * k + 8, 0); // zero-length entries
        r.drv.writeDesc(0, TABLE, 16 * 2048, 0, AVAIL | VRING_DESC_F_INDIRECT);
      }, 'virtio: too many descriptors in one element'],
      ['read after write', (r) => {
        r.drv.writeDesc(0, BUF, 4, 0, AVAIL | NEXT | WRITE);
        r.drv.writeDesc(1, BUF, 4, 0, AVAIL);
      }, 'Incorrect order for descriptors'],
    ];
    for (const [what, setup, msg] of cases) {
      const r = rig(4);
      setup(r);
      expect(r.vq.pop(), what).toBeNull();
      expect(r.owner.errors, what).toEqual([msg]);
      expect(r.vq.lastAvailIdx, what).toBe(0);
    }
    const r = rig(4, { indirect: false });
    r.drv.addIndirect([{ addr: BUF, len: 4 }], 0);
    expect(r.vq.pop()).toBeNull();
    expect(r.owner.errors).toEqual(['Indirect descriptor used without VIRTIO_F_INDIRECT_DESC']);
  });

  it('buffer ids: at or above the queue size, or one already in flight, break the device (T-A6e, T-A6f)', () => {
    const a = rig(4);
    a.drv.add([{ addr: BUF, len: 4 }], 4);
    expect(a.vq.pop()).toBeNull();
    expect(a.owner.errors).toEqual(['Guest says index 4 is available']);
    const b = rig(4);
    b.drv.add([{ addr: BUF, len: 4 }], 1);
    b.drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 4 }], 1);
    expect(b.vq.pop()!.index).toBe(1);
    expect(b.vq.pop()).toBeNull();
    expect(b.owner.errors).toEqual(['VQ 0: head 1 made available again while in use']);
    expect([b.vq.lastAvailIdx, b.vq.inuse]).toEqual([1, 1]);
  });

  it('INDIRECT with NEXT, or inside a chain, is refused (§2.8.19); a stale NEXT in a table is ignored (T-A6b)', () => {
    const a = rig(4);
    a.drv.writeDesc(0, TABLE, 16, 0, VRING_DESC_F_INDIRECT | NEXT | AVAIL);
    expect(a.vq.pop()).toBeNull();
    expect(a.owner.errors).toEqual(['Indirect descriptor with NEXT set']);
    const b = rig(4);
    b.drv.writeDesc(0, BUF, 4, 0, NEXT | AVAIL);
    b.drv.writeDesc(1, TABLE, 16, 0, VRING_DESC_F_INDIRECT | AVAIL);
    expect(b.vq.pop()).toBeNull();
    expect(b.owner.errors).toEqual(['Indirect descriptor in a descriptor chain']);
    const c = rig(4);
    c.drv.addIndirect([{ addr: BUF, len: 8 }, { addr: BUF + 8, len: 8, write: true }], 2);
    c.mem.write16(TABLE + 16 + 14, WRITE | NEXT); // the last entry says NEXT: the table's length rules
    const e = c.vq.pop()!;
    expect([e.index, e.outBytes, e.inBytes, e.ndescs]).toEqual([2, 8, 8, 1]);
    expect(c.owner.errors).toEqual([]);
  });

  it('driver event flags 3 (reserved), or DESC without EVENT_IDX, notify as ENABLE (C#107, T-A6h)', () => {
    for (const [eventIdx, flags] of [[true, 3], [false, 2], [false, 3]] as const) {
      const { vq, drv } = rig(4, { eventIdx });
      drv.add([{ addr: BUF, len: 4 }], 0);
      vq.push(vq.pop()!, 0);
      expect(vq.shouldNotify()).toBe(true); // the first always notifies
      drv.setDriverEvent(flags, 0x8000 | 3); // off_wrap far ahead
      drv.add([{ addr: BUF, len: 4 }], 1);
      vq.push(vq.pop()!, 0);
      expect(vq.shouldNotify(), `eventIdx ${eventIdx}, flags ${flags}`).toBe(true);
    }
  });

  it('a ring of one descriptor (T-A6 size 1) turns over on every chain', () => {
    const { vq, drv } = rig(1);
    for (let i = 0; i < 5; i++) {
      drv.add([{ addr: BUF, len: 4, write: true }], 0);
      const e = vq.pop()!;
      expect(e.index).toBe(0);
      vq.push(e, 4);
      expect(drv.takeUsed()).toEqual([{ id: 0, len: 4, flags: i % 2 === 0 ? AVAIL | USED : 0, slot: 0 }]);
    }
    expect([vq.lastAvailWrapCounter, vq.usedWrapCounter]).toEqual([false, false]);
  });

  it('more descriptors in flight than the ring holds is refused', () => {
    const { owner, vq, drv, mem } = rig(2);
    drv.add([{ addr: BUF, len: 4 }], 0);
    drv.add([{ addr: BUF, len: 4 }], 1);
    vq.pop();
    vq.pop();
    // A driver that re-marks slot 0 available for the next lap while both are still in flight.
    mem.write16(DESC + 14, 0 | USED);
    expect(vq.pop()).toBeNull();
    expect(owner.errors).toEqual(['Virtqueue size exceeded']);
  });

  it('a ring that does not fit in RAM, or a misaligned area, is not mapped', () => {
    const mem = GuestMemory.ofSize(0x40000);
    const owner = new TestQueueOwner(mem, 'packed-test');
    const vq = new VirtQueue(owner, 0, 512);
    vq.applyFeatures(false, true, false, true, true);
    vq.setRings(0x3_f000, DRIVER, DEVICE); // 8 KiB of descriptors, 4 KiB of RAM left
    expect(owner.errors).toEqual(['Cannot map desc (VQ 0)']);
    const owner2 = new TestQueueOwner(mem, 'packed-test');
    const vq2 = new VirtQueue(owner2, 0, 8);
    vq2.applyFeatures(false, true, false, true, true);
    vq2.setRings(DESC, DRIVER + 2, DEVICE);
    expect(owner2.errors[0]).toMatch(/misaligned ring/);
  });

  it('the trace sees pops and completions', () => {
    const { owner, vq, drv } = rig();
    const ev: TraceEvent[] = [];
    owner.tracer = (e) => ev.push(e);
    drv.add([{ addr: BUF, len: 4, write: true }], 3);
    const e: VirtQueueElement = vq.pop()!;
    vq.push(e, 4);
    expect(ev.map((x) => x.type)).toEqual(['virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush']);
    // In the packed ring's own terms: slots, wrap counters, the device's position.
    drv.add([{ addr: BUF, len: 4 }, { addr: BUF, len: 8, write: true }], 5);
    drv.add([{ addr: BUF, len: 8, write: true }], 6);
    const a = vq.pop()!;
    const b = vq.pop()!;
    vq.fill(b, 8, 0);
    vq.fill(a, 8, 1);
    vq.flush(2);
    expect(ev.slice(3).map(formatTraceEvent)).toEqual([
      'packed-test: queue 0 pop id 5 at slot 1 (wrap 1, 2 slots): 1 readable (4 B), 1 writable (8 B)',
      'packed-test: queue 0 pop id 6 at slot 3 (wrap 1, 1 slot): 0 readable (0 B), 1 writable (8 B)',
      'packed-test: queue 0 used descriptor at slot 1 (wrap 1) = {id 6, len 8}',
      'packed-test: queue 0 used descriptor at slot 2 (wrap 1) = {id 5, len 8}',
      'packed-test: queue 0 device position <- 4, wrap 1 (+2 chains, 3 slots)',
    ]);
  });
});
