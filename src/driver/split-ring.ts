import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_DESC_SIZE,
} from '../vring/constants.js';
import { legacyLayout, type RingAddresses } from '../vring/layout.js';

/** One buffer of a chain the driver posts. */
export interface DriverBuffer {
  addr: number;
  len: number;
  /** Device-writable. */
  write?: boolean;
}

export interface UsedEntry {
  id: number;
  len: number;
}

export interface SplitRingDriverOptions {
  memory: GuestMemory;
  num: number;
  /** Ring part addresses (use `legacyLayout` for the single-area form). */
  addrs: RingAddresses;
  /** Byte order of the ring fields (false only for legacy devices on big-endian guests). */
  le?: boolean;
  /** EVENT_IDX negotiated: the driver maintains used_event. */
  eventIdx?: boolean;
}

/**
 * The guest side of a split virtqueue, for scripted tests and the demo: it writes descriptors
 * and the avail ring the way a Linux driver would, and reads back the used ring. It also lets a
 * test write anything at all into the ring (`rawDesc`, `setAvailIdx`, `setAvailRingEntry`) to
 * play a hostile guest.
 */
export class SplitRingDriver {
  readonly memory: GuestMemory;
  readonly num: number;
  readonly addrs: RingAddresses;
  readonly le: boolean;
  eventIdx: boolean;
  /** The driver's avail index (next slot to publish). */
  availIdx = 0;
  /** How far the driver has consumed the used ring. */
  lastUsedIdx = 0;
  private freeHead = 0;
  private numFree: number;
  /** Descriptors each posted head occupies, for freeing. */
  private readonly chainLen: Uint16Array;

  constructor(opts: SplitRingDriverOptions) {
    this.memory = opts.memory;
    this.num = opts.num;
    this.addrs = opts.addrs;
    this.le = opts.le ?? true;
    this.eventIdx = opts.eventIdx ?? false;
    this.numFree = this.num;
    this.chainLen = new Uint16Array(this.num);
    this.clear();
  }

  /** A legacy single-area ring at `base` with the given alignment. */
  static legacy(memory: GuestMemory, base: number, num: number, align: number, le = true): SplitRingDriver {
    return new SplitRingDriver({ memory, num, addrs: legacyLayout(base, num, align), le });
  }

  /** Zero the ring parts and rebuild the free list. */
  clear(): void {
    const m = this.memory;
    m.fill(this.addrs.desc, VRING_DESC_SIZE * this.num, 0);
    m.fill(this.addrs.avail, 6 + 2 * this.num, 0);
    m.fill(this.addrs.used, 6 + 8 * this.num, 0);
    for (let i = 0; i < this.num; i++) this.writeDesc(i, 0, 0, VRING_DESC_F_NEXT, (i + 1) % this.num);
    this.freeHead = 0;
    this.numFree = this.num;
    this.availIdx = 0;
    this.lastUsedIdx = 0;
  }

  get freeDescriptors(): number {
    return this.numFree;
  }

  /** Write descriptor `i` verbatim (any values: this is how tests build hostile chains). */
  writeDesc(i: number, addr: number | bigint, len: number, flags: number, next: number): void {
    this.writeDescAt(this.addrs.desc + VRING_DESC_SIZE * i, addr, len, flags, next);
  }

  /** Write a descriptor at an arbitrary guest address (e.g. into an indirect table). */
  writeDescAt(at: number, addr: number | bigint, len: number, flags: number, next: number): void {
    const m = this.memory;
    m.write64(at, BigInt(addr), this.le);
    m.write32(at + 8, len >>> 0, this.le);
    m.write16(at + 12, flags, this.le);
    m.write16(at + 14, next, this.le);
  }

  /**
   * Post a chain of buffers and publish it in the avail ring. With `indirectTable` the buffers
   * go into a table at that address, referenced by one descriptor. Returns the head index, or -1
   * when the ring has no free descriptors.
   */
  add(bufs: readonly DriverBuffer[], opts: { indirectTable?: number; publish?: boolean } = {}): number {
    const head = opts.indirectTable !== undefined ? this.addIndirect(bufs, opts.indirectTable) : this.addDirect(bufs);
    if (head < 0) return head;
    if (opts.publish ?? true) this.publish(head);
    return head;
  }

  private addDirect(bufs: readonly DriverBuffer[]): number {
    if (bufs.length === 0 || bufs.length > this.numFree) return -1;
    const head = this.freeHead;
    let i = head;
    for (let k = 0; k < bufs.length; k++) {
      const b = bufs[k]!;
      const next = this.memory.read16(this.addrs.desc + VRING_DESC_SIZE * i + 14, this.le);
      const last = k === bufs.length - 1;
      this.writeDesc(i, b.addr, b.len, (b.write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT), last ? 0 : next);
      if (last) this.freeHead = next;
      else i = next;
    }
    this.numFree -= bufs.length;
    this.chainLen[head] = bufs.length;
    return head;
  }

  private addIndirect(bufs: readonly DriverBuffer[], table: number): number {
    if (bufs.length === 0 || this.numFree < 1) return -1;
    for (let k = 0; k < bufs.length; k++) {
      const b = bufs[k]!;
      const last = k === bufs.length - 1;
      this.writeDescAt(table + VRING_DESC_SIZE * k, b.addr, b.len, (b.write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT), last ? 0 : k + 1);
    }
    const head = this.freeHead;
    const next = this.memory.read16(this.addrs.desc + VRING_DESC_SIZE * head + 14, this.le);
    this.writeDesc(head, table, VRING_DESC_SIZE * bufs.length, VRING_DESC_F_INDIRECT, 0);
    this.freeHead = next;
    this.numFree -= 1;
    this.chainLen[head] = 1;
    return head;
  }

  /** Put `head` in the next avail slot and bump avail.idx. */
  publish(head: number): void {
    this.setAvailRingEntry(this.availIdx % this.num, head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    this.setAvailIdx(this.availIdx);
  }

  setAvailRingEntry(slot: number, head: number): void {
    this.memory.write16(this.addrs.avail + 4 + 2 * slot, head, this.le);
  }

  /** Write avail.idx (the driver's copy follows, so later publishes continue from here). */
  setAvailIdx(idx: number): void {
    this.availIdx = idx & 0xffff;
    this.memory.write16(this.addrs.avail + 2, this.availIdx, this.le);
  }

  setAvailFlags(flags: number): void {
    this.memory.write16(this.addrs.avail, flags, this.le);
  }

  /** used_event, at the end of the avail ring. */
  setUsedEvent(v: number): void {
    this.memory.write16(this.addrs.avail + 4 + 2 * this.num, v, this.le);
  }

  usedIdx(): number {
    return this.memory.read16(this.addrs.used + 2, this.le);
  }

  usedFlags(): number {
    return this.memory.read16(this.addrs.used, this.le);
  }

  /** avail_event, at the end of the used ring. */
  availEvent(): number {
    return this.memory.read16(this.addrs.used + 4 + 8 * this.num, this.le);
  }

  usedEntry(slot: number): UsedEntry {
    const o = this.addrs.used + 4 + 8 * slot;
    return { id: this.memory.read32(o, this.le), len: this.memory.read32(o + 4, this.le) };
  }

  /**
   * Collect the used entries the device published since the last call, returning their chains'
   * descriptors to the free list (trusting the device, as a test driver may).
   */
  takeUsed(): UsedEntry[] {
    const out: UsedEntry[] = [];
    const idx = this.usedIdx();
    while (this.lastUsedIdx !== idx) {
      const e = this.usedEntry(this.lastUsedIdx % this.num);
      out.push(e);
      this.lastUsedIdx = (this.lastUsedIdx + 1) & 0xffff;
      if (e.id < this.num) this.freeChain(e.id);
    }
    if (this.eventIdx) this.setUsedEvent(this.lastUsedIdx);
    return out;
  }

  private freeChain(head: number): void {
    const n = this.chainLen[head]!;
    if (n === 0) return;
    let last = head;
    for (let k = 1; k < n; k++) last = this.memory.read16(this.addrs.desc + VRING_DESC_SIZE * last + 14, this.le);
    // Re-link the chain's tail to the current free list.
    const flags = this.memory.read16(this.addrs.desc + VRING_DESC_SIZE * last + 12, this.le);
    this.memory.write16(this.addrs.desc + VRING_DESC_SIZE * last + 12, flags | VRING_DESC_F_NEXT, this.le);
    this.memory.write16(this.addrs.desc + VRING_DESC_SIZE * last + 14, this.freeHead, this.le);
    this.freeHead = head;
    this.numFree += n;
    this.chainLen[head] = 0;
  }
}
