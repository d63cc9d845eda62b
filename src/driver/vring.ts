/**
 * The guest side of a split virtqueue over the async `Machine` memory interface: descriptor
 * chains (direct and indirect), the avail ring, used-ring polling and EVENT_IDX bookkeeping.
 *
 * The layout and the descriptor allocation are exactly those of the synchronous
 * `SplitRingDriver` (free list 0→1→…→num-1→0 built by `clear()`, chains taken from the free head,
 * the same bytes written for the same calls), so a scenario produces the same guest memory on
 * every machine and with either driver. Unlike the sync driver, which re-reads `next` fields from
 * guest RAM, this one keeps a private copy of the fields it wrote (every RAM read is a round trip
 * on a qtest socket); it never trusts device-written memory except the used ring.
 */
import {
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_DESC_SIZE,
  VRING_USED_ELEM_SIZE,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from '../vring/constants.js';
import { availRingSize, descTableSize, legacyLayout, usedRingSize, type RingAddresses } from '../vring/layout.js';
import { MachineError, poll, type Machine, type PollOptions } from './machine.js';
import type { DriverBuffer, UsedEntry } from './split-ring.js';

export type { DriverBuffer, UsedEntry } from './split-ring.js';

export interface VringOptions {
  machine: Machine;
  num: number;
  addrs: RingAddresses;
  /** EVENT_IDX negotiated: the driver maintains used_event and honours avail_event. */
  eventIdx?: boolean;
}

function encodeDesc(out: DataView, at: number, addr: number | bigint, len: number, flags: number, next: number): void {
  out.setBigUint64(at, BigInt.asUintN(64, BigInt(addr)), true);
  out.setUint32(at + 8, len >>> 0, true);
  out.setUint16(at + 12, flags & 0xffff, true);
  out.setUint16(at + 14, next & 0xffff, true);
}

/** One descriptor's 16 bytes, little-endian. */
export function descBytes(addr: number | bigint, len: number, flags: number, next: number): Uint8Array {
  const b = new Uint8Array(VRING_DESC_SIZE);
  encodeDesc(new DataView(b.buffer), 0, addr, len, flags, next);
  return b;
}

export class VringDriver {
  readonly machine: Machine;
  readonly num: number;
  readonly addrs: RingAddresses;
  eventIdx: boolean;
  /** The driver's avail index (next slot to publish). */
  availIdx = 0;
  /** How far the driver has consumed the used ring. */
  lastUsedIdx = 0;
  /** avail.idx when the device was last notified (for EVENT_IDX `needsNotify`). */
  private lastKickIdx = 0;
  private freeHead = 0;
  private numFree: number;
  private readonly chainLen: Uint16Array;
  /** Copies of the `next` and `flags` fields this driver wrote. */
  private readonly nextOf: Uint16Array;
  private readonly flagsOf: Uint16Array;

  private constructor(opts: VringOptions) {
    if (!Number.isInteger(opts.num) || opts.num < 1 || opts.num > 32768) throw new RangeError(`bad ring size ${opts.num}`);
    this.machine = opts.machine;
    this.num = opts.num;
    this.addrs = opts.addrs;
    this.eventIdx = opts.eventIdx ?? false;
    this.numFree = this.num;
    this.chainLen = new Uint16Array(this.num);
    this.nextOf = new Uint16Array(this.num);
    this.flagsOf = new Uint16Array(this.num);
  }

  /** A ring at `addrs`, cleared in guest memory. */
  static async create(opts: VringOptions): Promise<VringDriver> {
    const r = new VringDriver(opts);
    await r.clear();
    return r;
  }

  /** A legacy single-area ring at `base` with the given alignment. */
  static legacy(machine: Machine, base: number, num: number, align: number, eventIdx = false): Promise<VringDriver> {
    return VringDriver.create({ machine, num, addrs: legacyLayout(base, num, align), eventIdx });
  }

  get freeDescriptors(): number {
    return this.numFree;
  }

  /** Zero the ring parts and rebuild the free list (as `SplitRingDriver.clear`). */
  async clear(): Promise<void> {
    const table = new Uint8Array(descTableSize(this.num));
    const dv = new DataView(table.buffer);
    for (let i = 0; i < this.num; i++) {
      const next = (i + 1) % this.num;
      encodeDesc(dv, VRING_DESC_SIZE * i, 0, 0, VRING_DESC_F_NEXT, next);
      this.nextOf[i] = next;
      this.flagsOf[i] = VRING_DESC_F_NEXT;
    }
    this.chainLen.fill(0);
    this.freeHead = 0;
    this.numFree = this.num;
    this.availIdx = 0;
    this.lastUsedIdx = 0;
    this.lastKickIdx = 0;
    await Promise.all([
      this.machine.writeBytes(this.addrs.desc, table),
      this.machine.memset(this.addrs.avail, availRingSize(this.num, true), 0),
      this.machine.memset(this.addrs.used, usedRingSize(this.num, true), 0),
    ]);
  }

  /** Write descriptor `i` verbatim (any values: hostile chains). Does not touch the free list. */
  writeDesc(i: number, addr: number | bigint, len: number, flags: number, next: number): Promise<void> {
    return this.writeDescAt(this.addrs.desc + VRING_DESC_SIZE * i, addr, len, flags, next);
  }

  /** Write a descriptor at any guest address (e.g. into an indirect table). */
  writeDescAt(at: number, addr: number | bigint, len: number, flags: number, next: number): Promise<void> {
    return this.machine.writeBytes(at, descBytes(addr, len, flags, next));
  }

  /**
   * Post a chain of buffers and publish it in the avail ring. With `indirectTable` the buffers go
   * into a table at that address, referenced by one descriptor. Returns the head index, or -1
   * when the ring has too few free descriptors.
   */
  async add(bufs: readonly DriverBuffer[], opts: { indirectTable?: number; publish?: boolean } = {}): Promise<number> {
    const writes: Promise<void>[] = [];
    const head = opts.indirectTable !== undefined ? this.addIndirect(bufs, opts.indirectTable, writes) : this.addDirect(bufs, writes);
    if (head >= 0 && (opts.publish ?? true)) writes.push(this.publish(head));
    await Promise.all(writes);
    return head;
  }

  private addDirect(bufs: readonly DriverBuffer[], writes: Promise<void>[]): number {
    if (bufs.length === 0 || bufs.length > this.numFree) return -1;
    const head = this.freeHead;
    let i = head;
    for (let k = 0; k < bufs.length; k++) {
      const b = bufs[k]!;
      const next = this.nextOf[i]!;
      const last = k === bufs.length - 1;
      const flags = (b.write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT);
      writes.push(this.writeDesc(i, b.addr, b.len, flags, last ? 0 : next));
      this.flagsOf[i] = flags;
      this.nextOf[i] = last ? 0 : next;
      if (last) this.freeHead = next;
      else i = next;
    }
    this.numFree -= bufs.length;
    this.chainLen[head] = bufs.length;
    return head;
  }

  private addIndirect(bufs: readonly DriverBuffer[], table: number, writes: Promise<void>[]): number {
    if (bufs.length === 0 || this.numFree < 1) return -1;
    const bytes = new Uint8Array(VRING_DESC_SIZE * bufs.length);
    const dv = new DataView(bytes.buffer);
    for (let k = 0; k < bufs.length; k++) {
      const b = bufs[k]!;
      const last = k === bufs.length - 1;
      encodeDesc(dv, VRING_DESC_SIZE * k, b.addr, b.len, (b.write ? VRING_DESC_F_WRITE : 0) | (last ? 0 : VRING_DESC_F_NEXT), last ? 0 : k + 1);
    }
    writes.push(this.machine.writeBytes(table, bytes));
    const head = this.freeHead;
    const next = this.nextOf[head]!;
    writes.push(this.writeDesc(head, table, VRING_DESC_SIZE * bufs.length, VRING_DESC_F_INDIRECT, 0));
    this.flagsOf[head] = VRING_DESC_F_INDIRECT;
    this.nextOf[head] = 0;
    this.freeHead = next;
    this.numFree -= 1;
    this.chainLen[head] = 1;
    return head;
  }

  /** Put `head` in the next avail slot and bump avail.idx (ring entry first, then the index). */
  publish(head: number): Promise<void> {
    const entry = this.setAvailRingEntry(this.availIdx % this.num, head);
    this.availIdx = (this.availIdx + 1) & 0xffff;
    return Promise.all([entry, this.machine.writew(this.addrs.avail + 2, this.availIdx)]).then(() => undefined);
  }

  setAvailRingEntry(slot: number, head: number): Promise<void> {
    return this.machine.writew(this.addrs.avail + 4 + 2 * slot, head);
  }

  /** Write avail.idx (the driver's copy follows, so later publishes continue from here). */
  setAvailIdx(idx: number): Promise<void> {
    this.availIdx = idx & 0xffff;
    return this.machine.writew(this.addrs.avail + 2, this.availIdx);
  }

  setAvailFlags(flags: number): Promise<void> {
    return this.machine.writew(this.addrs.avail, flags);
  }

  /** Ask for no used-buffer interrupts (without EVENT_IDX), or allow them again. */
  suppressInterrupts(on: boolean): Promise<void> {
    return this.setAvailFlags(on ? VRING_AVAIL_F_NO_INTERRUPT : 0);
  }

  /** used_event, at the end of the avail ring. */
  setUsedEvent(v: number): Promise<void> {
    return this.machine.writew(this.addrs.avail + 4 + 2 * this.num, v);
  }

  usedIdx(): Promise<number> {
    return this.machine.readw(this.addrs.used + 2);
  }

  usedFlags(): Promise<number> {
    return this.machine.readw(this.addrs.used);
  }

  /** avail_event, at the end of the used ring. */
  availEvent(): Promise<number> {
    return this.machine.readw(this.addrs.used + 4 + VRING_USED_ELEM_SIZE * this.num);
  }

  async usedEntry(slot: number): Promise<UsedEntry> {
    const o = this.addrs.used + 4 + VRING_USED_ELEM_SIZE * slot;
    const [id, len] = await Promise.all([this.machine.readl(o), this.machine.readl(o + 4)]);
    return { id, len };
  }

  /**
   * Should the device be notified about what was published since the last `kicked()`? With
   * EVENT_IDX the device's avail_event decides (VIRTIO 1.2 §2.7.10); otherwise used.flags'
   * NO_NOTIFY does.
   */
  async needsNotify(): Promise<boolean> {
    if (this.eventIdx) return vringNeedEvent(await this.availEvent(), this.availIdx, this.lastKickIdx);
    return ((await this.usedFlags()) & VRING_USED_F_NO_NOTIFY) === 0;
  }

  /** Record that the device was notified at the current avail index. */
  kicked(): void {
    this.lastKickIdx = this.availIdx;
  }

  /**
   * Used entries published since the last call, or none. Frees their chains, in used-ring order,
   * or in head order with `sortFree` (so that descriptor reuse does not depend on the order a
   * device completed requests in).
   */
  async takeUsed(sortFree = false): Promise<UsedEntry[]> {
    const idx = await this.usedIdx();
    const n = (idx - this.lastUsedIdx) & 0xffff;
    if (n === 0) return [];
    if (n > this.num) throw new MachineError(`used.idx ${idx} is ${n} ahead of ${this.lastUsedIdx} on a ring of ${this.num}`);
    const out: UsedEntry[] = [];
    const first = this.lastUsedIdx % this.num;
    const a = Math.min(n, this.num - first);
    const ringBase = this.addrs.used + 4;
    const parts = [this.machine.readBytes(ringBase + VRING_USED_ELEM_SIZE * first, VRING_USED_ELEM_SIZE * a)];
    if (n > a) parts.push(this.machine.readBytes(ringBase, VRING_USED_ELEM_SIZE * (n - a)));
    for (const bytes of await Promise.all(parts)) {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let o = 0; o < bytes.length; o += VRING_USED_ELEM_SIZE) out.push({ id: dv.getUint32(o, true), len: dv.getUint32(o + 4, true) });
    }
    this.lastUsedIdx = idx;
    const writes: Promise<void>[] = [];
    for (const e of sortFree ? [...out].sort((a, b) => a.id - b.id) : out) if (e.id < this.num) this.freeChain(e.id, writes);
    if (this.eventIdx) writes.push(this.setUsedEvent(this.lastUsedIdx));
    await Promise.all(writes);
    return out;
  }

  /** Poll until the device has used at least `count` new entries; returns them all. */
  async waitUsed(count = 1, opts: PollOptions = {}): Promise<UsedEntry[]> {
    const got: UsedEntry[] = [];
    await poll(
      this.machine,
      async () => {
        got.push(...(await this.takeUsed()));
        return got.length >= count;
      },
      { what: `${count} used entr${count === 1 ? 'y' : 'ies'} (have ${got.length})`, ...opts },
    );
    return got;
  }

  private freeChain(head: number, writes: Promise<void>[]): void {
    const n = this.chainLen[head]!;
    if (n === 0) return;
    let last = head;
    for (let k = 1; k < n; k++) last = this.nextOf[last]!;
    // Re-link the chain's tail to the current free list (as the sync driver does).
    const flags = this.flagsOf[last]! | VRING_DESC_F_NEXT;
    const at = this.addrs.desc + VRING_DESC_SIZE * last;
    writes.push(this.machine.writew(at + 12, flags), this.machine.writew(at + 14, this.freeHead));
    this.flagsOf[last] = flags;
    this.nextOf[last] = this.freeHead;
    this.freeHead = head;
    this.numFree += n;
    this.chainLen[head] = 0;
  }
}
