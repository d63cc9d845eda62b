/**
 * The guest side of a packed virtqueue (VIRTIO 1.2 §2.8), the way Linux's virtio_ring.c drives
 * one: a ring of `num` 16-byte descriptors that the driver and the device both write, plus two
 * 4-byte event suppression areas, the driver's at the "driver" (split: avail) address and the
 * device's at the "device" (split: used) address.
 *
 * `PackedRingState` is the bookkeeping and the encoding, with no memory access: it says which
 * bytes go where, in which order. `PackedRingDriver` (here, synchronous over `GuestMemory`) and
 * `PackedVringDriver` (packed-vring.ts, asynchronous over a `Machine`) both execute its plans, so
 * the same calls leave the same bytes in guest memory on every machine.
 *
 * Buffer ids are handed out one per buffer from a free list 0 → 1 → … → num-1, reused most
 * recently freed first (as Linux's free_head). Linux itself spends one id per descriptor
 * (its desc_extra slots double as ids); the ids a device sees differ, the protocol does not.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, vringNeedEvent } from '../vring/constants.js';
import type { RingAddresses } from '../vring/layout.js';
import { MachineError } from './machine.js';
import type { DriverBuffer, UsedEntry } from './split-ring.js';

/** Descriptor flag: available, when equal to the driver's wrap counter (VIRTIO 1.2 §2.8.1). */
export const VIRTQ_DESC_F_AVAIL = 1 << 7;
/** Descriptor flag: used, when equal to AVAIL and to the wrap counter. */
export const VIRTQ_DESC_F_USED = 1 << 15;
/** Event suppression flags (VIRTIO 1.2 §2.8.10): notify always, never, or at `off_wrap`. */
export const RING_EVENT_FLAGS_ENABLE = 0;
export const RING_EVENT_FLAGS_DISABLE = 1;
export const RING_EVENT_FLAGS_DESC = 2;
/** The bit of `off_wrap` holding the wrap counter (Linux VRING_PACKED_EVENT_F_WRAP_CTR). */
export const VRING_PACKED_EVENT_F_WRAP_CTR = 15;
/** One packed descriptor: le64 addr, le32 len, le16 id, le16 flags. */
export const VIRTQ_PACKED_DESC_SIZE = 16;
/** One event suppression area: le16 off_wrap, le16 flags. */
export const VIRTQ_PACKED_EVENT_SIZE = 4;
/** Ring positions are 15 bits wide (the 16th is the wrap counter), so a queue has at most 2^15. */
export const VIRTQ_PACKED_MAX_SIZE = 0x8000;

/** A packed descriptor as it sits in memory. */
export interface PackedDesc {
  addr: bigint;
  len: number;
  id: number;
  flags: number;
}

/** An event suppression area (`struct pvirtq_event_suppress`). */
export interface PackedEvent {
  offWrap: number;
  flags: number;
}

export interface PackedAddOptions {
  /** Put the buffers in a descriptor table at this address; the ring gets one INDIRECT descriptor. */
  indirectTable?: number;
  /** Write the first descriptor's flags now (default true); with false, `publish(id)` does later. */
  publish?: boolean;
  /** Use this free buffer id instead of the free list's head. */
  id?: number;
}

/** One write the driver makes to guest memory; a plan is executed in order. */
export interface PackedWrite {
  addr: number;
  bytes: Uint8Array;
}

/** What `PackedRingState.add` decided: the id, the writes before publishing, the publishing write. */
export interface PackedAddPlan {
  id: number;
  writes: PackedWrite[];
  /** The first descriptor's flags; undefined when the caller asked not to publish yet. */
  publish: PackedWrite | undefined;
}

/** Contiguous packed layout at `base`: ring, then driver area, then device area. */
export function packedLayout(base: number, num: number): RingAddresses {
  const desc = base;
  const avail = desc + VIRTQ_PACKED_DESC_SIZE * num;
  return { desc, avail, used: avail + VIRTQ_PACKED_EVENT_SIZE };
}

/** Bytes `packedLayout` occupies. */
export function packedRingSize(num: number): number {
  return VIRTQ_PACKED_DESC_SIZE * num + 2 * VIRTQ_PACKED_EVENT_SIZE;
}

/** AVAIL/USED bits that make a descriptor available in the lap whose wrap counter is `wrap`. */
export function packedAvailFlags(wrap: boolean): number {
  return wrap ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}

/** Is a descriptor with these flags used in the lap whose wrap counter is `wrap` (§2.8.1)? */
export function packedDescIsUsed(flags: number, wrap: boolean): boolean {
  const avail = (flags & VIRTQ_DESC_F_AVAIL) !== 0;
  const used = (flags & VIRTQ_DESC_F_USED) !== 0;
  return avail === used && used === wrap;
}

function encodePackedDesc(out: DataView, at: number, addr: number | bigint, len: number, id: number, flags: number): void {
  out.setBigUint64(at, BigInt.asUintN(64, BigInt(addr)), true);
  out.setUint32(at + 8, len >>> 0, true);
  out.setUint16(at + 12, id & 0xffff, true);
  out.setUint16(at + 14, flags & 0xffff, true);
}

/** One packed descriptor's 16 bytes, little-endian. */
export function packedDescBytes(addr: number | bigint, len: number, id: number, flags: number): Uint8Array {
  const b = new Uint8Array(VIRTQ_PACKED_DESC_SIZE);
  encodePackedDesc(new DataView(b.buffer), 0, addr, len, id, flags);
  return b;
}

export function decodePackedDesc(b: Uint8Array, at = 0): PackedDesc {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { addr: v.getBigUint64(at, true), len: v.getUint32(at + 8, true), id: v.getUint16(at + 12, true), flags: v.getUint16(at + 14, true) };
}

export function decodePackedEvent(b: Uint8Array, at = 0): PackedEvent {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  return { offWrap: v.getUint16(at, true), flags: v.getUint16(at + 2, true) };
}

function u16(v: number): Uint8Array {
  return Uint8Array.of(v & 0xff, (v >>> 8) & 0xff);
}

/**
 * The driver's side of a packed ring as numbers: positions and wrap counters, free ids, the
 * descriptors each id holds, and what a kick decision needs. It plans writes; it never touches
 * memory, so both drivers share every decision.
 */
export class PackedRingState {
  readonly num: number;
  readonly addrs: RingAddresses;
  /** Where the next chain goes, and the lap it goes in. */
  nextAvail = 0;
  availWrap = true;
  /** Where the device's next used descriptor will appear, and the lap it belongs to. */
  nextUsed = 0;
  usedWrap = true;
  /** Free ring slots. */
  numFree: number;
  /** The flags this driver last wrote into its event area (Linux event_flags_shadow). */
  driverEventFlags = RING_EVENT_FLAGS_ENABLE;
  /** Ring slots taken since the last kick (Linux num_added): the window a kick decision covers. */
  private addedSinceKick = 0;
  private freeHead = 0;
  private numFreeIds: number;
  private readonly nextFreeId: Uint16Array;
  /** Per id: ring slots its buffer holds (0: not in flight). */
  private readonly chainLen: Uint16Array;
  /** Per id: the first descriptor's slot and flags, until `publish` writes them. */
  private readonly pendingSlot: Int32Array;
  private readonly pendingFlags: Uint16Array;

  constructor(num: number, addrs: RingAddresses) {
    if (!Number.isInteger(num) || num < 1 || num > VIRTQ_PACKED_MAX_SIZE) throw new RangeError(`bad packed ring size ${num}`);
    this.num = num;
    this.addrs = addrs;
    this.numFree = num;
    this.numFreeIds = num;
    this.nextFreeId = new Uint16Array(num);
    this.chainLen = new Uint16Array(num);
    this.pendingSlot = new Int32Array(num);
    this.pendingFlags = new Uint16Array(num);
    this.reset();
  }

  /** Back to a fresh ring (VIRTIO 1.2 §2.8.1: both wrap counters start at 1). */
  reset(): void {
    this.nextAvail = 0;
    this.availWrap = true;
    this.nextUsed = 0;
    this.usedWrap = true;
    this.numFree = this.num;
    this.numFreeIds = this.num;
    this.freeHead = 0;
    for (let i = 0; i < this.num; i++) this.nextFreeId[i] = i + 1;
    this.chainLen.fill(0);
    this.pendingSlot.fill(-1);
    this.addedSinceKick = 0;
    this.driverEventFlags = RING_EVENT_FLAGS_ENABLE;
  }

  /** Zeroes for the ring and both event areas: nothing available, nothing used, events enabled. */
  clearPlan(): PackedWrite[] {
    return [
      { addr: this.addrs.desc, bytes: new Uint8Array(VIRTQ_PACKED_DESC_SIZE * this.num) },
      { addr: this.addrs.avail, bytes: new Uint8Array(VIRTQ_PACKED_EVENT_SIZE) },
      { addr: this.addrs.used, bytes: new Uint8Array(VIRTQ_PACKED_EVENT_SIZE) },
    ];
  }

  descAddr(slot: number): number {
    return this.addrs.desc + VIRTQ_PACKED_DESC_SIZE * slot;
  }

  /** Ids not in flight, in the order `add` will hand them out. */
  freeIds(): number[] {
    const out: number[] = [];
    for (let id = this.freeHead, k = 0; k < this.numFreeIds; k++, id = this.nextFreeId[id]!) out.push(id);
    return out;
  }

  /** Is `id` in flight (added and not yet returned by the device)? */
  inFlight(id: number): boolean {
    return id >= 0 && id < this.num && this.chainLen[id] !== 0;
  }

  private takeId(want: number | undefined): number {
    if (want === undefined) {
      const id = this.freeHead;
      this.freeHead = this.nextFreeId[id]!;
      this.numFreeIds--;
      return id;
    }
    if (!Number.isInteger(want) || want < 0 || want >= this.num || this.chainLen[want] !== 0) {
      throw new RangeError(`buffer id ${want} is not free (use writeDescAt for arbitrary ids)`);
    }
    if (this.freeHead === want) {
      this.freeHead = this.nextFreeId[want]!;
    } else {
      let prev = this.freeHead;
      while (this.nextFreeId[prev] !== want) prev = this.nextFreeId[prev]!;
      this.nextFreeId[prev] = this.nextFreeId[want]!;
    }
    this.numFreeIds--;
    return want;
  }

  /**
   * Plan posting `bufs`; undefined when the ring has too few free slots (or `bufs` is empty).
   * A direct chain takes one slot per buffer, with NEXT on all but the last, the id in every
   * descriptor, and AVAIL/USED of the lap each slot lies in: a chain that runs off the end of
   * the ring continues at slot 0 with the other wrap counter. The first descriptor's flags come
   * last, because writing them is what makes the chain visible to the device (VIRTIO 1.2 §2.8,
   * "Supplying Buffers to The Device").
   */
  add(bufs: readonly DriverBuffer[], opts: PackedAddOptions = {}): PackedAddPlan | undefined {
    const indirect = opts.indirectTable !== undefined;
    const slots = indirect ? 1 : bufs.length;
    if (bufs.length === 0 || slots > this.numFree) return undefined;
    const id = this.takeId(opts.id);
    const head = this.nextAvail;
    const headWrap = this.availWrap;
    const writes: PackedWrite[] = [];
    let headFlags: number;
    if (indirect) {
      // §2.8.7: only WRITE means anything in a table; the entries follow each other, no NEXT.
      const table = new Uint8Array(VIRTQ_PACKED_DESC_SIZE * bufs.length);
      const tv = new DataView(table.buffer);
      bufs.forEach((b, k) => encodePackedDesc(tv, VIRTQ_PACKED_DESC_SIZE * k, b.addr, b.len, 0, b.write ? VRING_DESC_F_WRITE : 0));
      writes.push({ addr: opts.indirectTable!, bytes: table });
      headFlags = VRING_DESC_F_INDIRECT | packedAvailFlags(headWrap);
      writes.push({ addr: this.descAddr(head), bytes: packedDescBytes(opts.indirectTable!, table.length, id, 0).subarray(0, 14) });
    } else {
      const b0 = bufs[0]!;
      headFlags = (b0.write ? VRING_DESC_F_WRITE : 0) | (bufs.length > 1 ? VRING_DESC_F_NEXT : 0) | packedAvailFlags(headWrap);
      writes.push({ addr: this.descAddr(head), bytes: packedDescBytes(b0.addr, b0.len, id, 0).subarray(0, 14) });
      // The rest of the chain, as at most two runs: up to the end of the ring, then from slot 0.
      let slot = head + 1;
      let wrap = headWrap;
      let k = 1;
      while (k < bufs.length) {
        if (slot === this.num) {
          slot = 0;
          wrap = !wrap;
        }
        const run = Math.min(bufs.length - k, this.num - slot);
        const bytes = new Uint8Array(VIRTQ_PACKED_DESC_SIZE * run);
        const v = new DataView(bytes.buffer);
        for (let r = 0; r < run; r++, k++) {
          const b = bufs[k]!;
          const flags = (b.write ? VRING_DESC_F_WRITE : 0) | (k < bufs.length - 1 ? VRING_DESC_F_NEXT : 0) | packedAvailFlags(wrap);
          encodePackedDesc(v, VIRTQ_PACKED_DESC_SIZE * r, b.addr, b.len, id, flags);
        }
        writes.push({ addr: this.descAddr(slot), bytes });
        slot += run;
      }
    }
    this.chainLen[id] = slots;
    this.numFree -= slots;
    this.addedSinceKick += slots;
    this.nextAvail += slots;
    if (this.nextAvail >= this.num) {
      this.nextAvail -= this.num;
      this.availWrap = !this.availWrap;
    }
    this.pendingSlot[id] = head;
    this.pendingFlags[id] = headFlags;
    const publish = (opts.publish ?? true) ? this.publish(id) : undefined;
    return { id, writes, publish };
  }

  /** The write that makes `id`'s chain (added with `publish: false`) visible to the device. */
  publish(id: number): PackedWrite {
    const slot = id >= 0 && id < this.num ? this.pendingSlot[id]! : -1;
    if (slot < 0) throw new RangeError(`buffer id ${id} has no unpublished chain`);
    this.pendingSlot[id] = -1;
    return { addr: this.descAddr(slot) + 14, bytes: u16(this.pendingFlags[id]!) };
  }

  /**
   * Account for the used descriptor the device wrote at `nextUsed` with buffer id `id`: its
   * chain's slots are free again, `nextUsed` moves past them (one slot for an indirect buffer),
   * and the used wrap counter flips when that passes the end of the ring.
   */
  consume(id: number): void {
    if (!this.inFlight(id)) throw new MachineError(`used descriptor at slot ${this.nextUsed} has buffer id ${id}, which is not in flight`);
    const n = this.chainLen[id]!;
    this.chainLen[id] = 0;
    this.pendingSlot[id] = -1;
    this.numFree += n;
    this.nextFreeId[id] = this.freeHead;
    this.freeHead = id;
    this.numFreeIds++;
    this.nextUsed += n;
    if (this.nextUsed >= this.num) {
      this.nextUsed -= this.num;
      this.usedWrap = !this.usedWrap;
    }
  }

  /** `off_wrap` naming the next used descriptor: "interrupt me when that one is used". */
  usedOffWrap(): number {
    return this.nextUsed | (this.usedWrap ? 1 << VRING_PACKED_EVENT_F_WRAP_CTR : 0);
  }

  /**
   * The writes that set the driver's event area. `off_wrap` first, then the flags (Linux
   * virtqueue_enable_cb_prepare_packed orders them so): a device that sees DESC sees its offset.
   * DESC without `offWrap` asks for the next used descriptor.
   */
  driverEventPlan(flags: number, offWrap?: number): PackedWrite[] {
    const writes: PackedWrite[] = [];
    const ow = offWrap ?? (flags === RING_EVENT_FLAGS_DESC ? this.usedOffWrap() : undefined);
    if (ow !== undefined) writes.push({ addr: this.addrs.avail, bytes: u16(ow) });
    writes.push({ addr: this.addrs.avail + 2, bytes: u16(flags) });
    this.driverEventFlags = flags & 0xffff;
    return writes;
  }

  /**
   * After taking used buffers: with DESC in force, move `off_wrap` to the next used descriptor so
   * the next completion interrupts (Linux virtqueue_get_buf_ctx_packed).
   */
  afterTakePlan(): PackedWrite[] {
    return this.driverEventFlags === RING_EVENT_FLAGS_DESC ? [{ addr: this.addrs.avail, bytes: u16(this.usedOffWrap()) }] : [];
  }

  /**
   * Does the device want a notification for the slots added since the last kick (§2.8.10,
   * Linux virtqueue_kick_prepare_packed)? DISABLE: no; ENABLE (or any other value): yes; DESC:
   * only if its `off_wrap` lies in the window just added. An offset whose wrap counter differs
   * from the driver's refers to the previous lap, hence the `- num`.
   */
  needsNotify(device: PackedEvent): boolean {
    if (device.flags !== RING_EVENT_FLAGS_DESC) return device.flags !== RING_EVENT_FLAGS_DISABLE;
    const wrap = device.offWrap >>> VRING_PACKED_EVENT_F_WRAP_CTR === 1;
    let event = device.offWrap & 0x7fff;
    if (wrap !== this.availWrap) event -= this.num;
    const newIdx = this.nextAvail;
    // More than 0xffff slots without a kick cannot be told apart from fewer; any event was crossed.
    const oldIdx = newIdx - Math.min(this.addedSinceKick, 0xffff);
    return vringNeedEvent(event & 0xffff, newIdx & 0xffff, oldIdx & 0xffff);
  }

  /** The device was notified: the next kick decision covers slots added from here on. */
  kicked(): void {
    this.addedSinceKick = 0;
  }
}

export interface PackedRingDriverOptions {
  memory: GuestMemory;
  num: number;
  /** `desc`: the descriptor ring; `avail`: the driver event area; `used`: the device event area. */
  addrs: RingAddresses;
  /** EVENT_IDX negotiated: `suppressInterrupts(false)` asks with DESC rather than ENABLE. */
  eventIdx?: boolean;
}

/**
 * The guest side of a packed virtqueue over `GuestMemory`, for scripted tests: chains posted the
 * way Linux posts them, used descriptors taken back, event suppression in both directions, and
 * raw access (`writeDescAt`, `descAt`) to play a hostile guest. Like a machine's bus (and like
 * `SplitRingDriver`), it drops writes outside RAM and reads zeros there, so a ring placed in a
 * hole behaves as it would through the async driver.
 */
export class PackedRingDriver {
  readonly memory: GuestMemory;
  readonly num: number;
  readonly addrs: RingAddresses;
  eventIdx: boolean;
  private readonly st: PackedRingState;

  constructor(opts: PackedRingDriverOptions) {
    this.st = new PackedRingState(opts.num, opts.addrs);
    this.memory = opts.memory;
    this.num = opts.num;
    this.addrs = opts.addrs;
    this.eventIdx = opts.eventIdx ?? false;
    this.clear();
  }

  /** A ring in the contiguous `packedLayout` at `base`. */
  static at(memory: GuestMemory, base: number, num: number, eventIdx = false): PackedRingDriver {
    return new PackedRingDriver({ memory, num, addrs: packedLayout(base, num), eventIdx });
  }

  private run(writes: readonly PackedWrite[]): void {
    for (const w of writes) this.memory.write(w.addr, w.bytes);
  }

  /** Zero the ring and both event areas and start over. */
  clear(): void {
    this.st.reset();
    this.run(this.st.clearPlan());
  }

  get nextAvail(): number {
    return this.st.nextAvail;
  }
  get availWrap(): boolean {
    return this.st.availWrap;
  }
  get nextUsed(): number {
    return this.st.nextUsed;
  }
  get usedWrap(): boolean {
    return this.st.usedWrap;
  }
  get freeDescriptors(): number {
    return this.st.numFree;
  }
  /** Ids not in flight, in the order `add` hands them out. */
  get freeIds(): number[] {
    return this.st.freeIds();
  }

  /**
   * Post a chain of buffers (or, with `indirectTable`, one indirect descriptor for them). Returns
   * the buffer id, or -1 when the ring has too few free slots.
   */
  add(bufs: readonly DriverBuffer[], opts: PackedAddOptions = {}): number {
    const plan = this.st.add(bufs, opts);
    if (!plan) return -1;
    this.run(plan.writes);
    if (plan.publish) this.run([plan.publish]);
    return plan.id;
  }

  /** Write the first descriptor's flags of a chain added with `publish: false`. */
  publish(id: number): void {
    this.run([this.st.publish(id)]);
  }

  /** Write a descriptor verbatim into ring slot `slot` (any values; the bookkeeping is untouched). */
  writeDescAt(slot: number, addr: number | bigint, len: number, id: number, flags: number): void {
    this.run([{ addr: this.st.descAddr(slot), bytes: packedDescBytes(addr, len, id, flags) }]);
  }

  descAt(slot: number): PackedDesc {
    const b = new Uint8Array(VIRTQ_PACKED_DESC_SIZE);
    this.memory.read(this.st.descAddr(slot), b);
    return decodePackedDesc(b);
  }

  /**
   * Used buffers the device returned since the last call, in ring order; their ids and slots are
   * free again. Throws `MachineError` on a used descriptor whose id is not in flight (the ring
   * position that follows it cannot be known).
   */
  takeUsed(): UsedEntry[] {
    const out: UsedEntry[] = [];
    for (;;) {
      const d = this.descAt(this.st.nextUsed);
      if (!packedDescIsUsed(d.flags, this.st.usedWrap)) break;
      this.st.consume(d.id);
      out.push({ id: d.id, len: d.len });
    }
    if (out.length > 0) this.run(this.st.afterTakePlan());
    return out;
  }

  private readEvent(at: number): PackedEvent {
    const b = new Uint8Array(VIRTQ_PACKED_EVENT_SIZE);
    this.memory.read(at, b);
    return decodePackedEvent(b);
  }

  /** Write the driver event area: used-buffer notifications ENABLE, DISABLE, or DESC at `offWrap`. */
  setDriverEvent(flags: number, offWrap?: number): void {
    this.run(this.st.driverEventPlan(flags, offWrap));
  }

  /** DISABLE, or back on: DESC at the next used descriptor with EVENT_IDX, ENABLE without. */
  suppressInterrupts(on: boolean): void {
    this.setDriverEvent(on ? RING_EVENT_FLAGS_DISABLE : this.eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE);
  }

  driverEvent(): PackedEvent {
    return this.readEvent(this.addrs.avail);
  }

  deviceEvent(): PackedEvent {
    return this.readEvent(this.addrs.used);
  }

  /** Should the device be notified about what was added since `kicked()`? */
  needsNotify(): boolean {
    return this.st.needsNotify(this.deviceEvent());
  }

  kicked(): void {
    this.st.kicked();
  }
}
