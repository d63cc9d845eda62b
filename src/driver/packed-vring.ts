/**
 * The guest side of a packed virtqueue (VIRTIO 1.2 §2.8) over the async `Machine` interface, so
 * one script drives our devices and a real QEMU alike. Every decision is `PackedRingState`'s,
 * shared with the synchronous `PackedRingDriver`: the same calls write the same bytes. The
 * driver's own state lives in that object (every RAM read is a round trip on a qtest socket);
 * the only guest memory it reads is what the device writes: used descriptors and the device
 * event area.
 */
import type { RingAddresses } from '../vring/layout.js';
import { poll, type Machine, type PollOptions } from './machine.js';
import {
  PackedRingState,
  RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_DISABLE,
  RING_EVENT_FLAGS_ENABLE,
  VIRTQ_PACKED_DESC_SIZE,
  VIRTQ_PACKED_EVENT_SIZE,
  decodePackedDesc,
  decodePackedEvent,
  packedDescBytes,
  packedDescIsUsed,
  packedLayout,
  type PackedAddOptions,
  type PackedDesc,
  type PackedEvent,
  type PackedWrite,
} from './packed-ring.js';
import type { DriverBuffer, UsedEntry } from './split-ring.js';

export interface PackedVringOptions {
  machine: Machine;
  num: number;
  /** `desc`: the descriptor ring; `avail`: the driver event area; `used`: the device event area. */
  addrs: RingAddresses;
  /** EVENT_IDX negotiated: `suppressInterrupts(false)` asks with DESC rather than ENABLE. */
  eventIdx?: boolean;
}

export class PackedVringDriver {
  readonly machine: Machine;
  readonly num: number;
  readonly addrs: RingAddresses;
  eventIdx: boolean;
  private readonly st: PackedRingState;

  private constructor(opts: PackedVringOptions) {
    this.st = new PackedRingState(opts.num, opts.addrs);
    this.machine = opts.machine;
    this.num = opts.num;
    this.addrs = opts.addrs;
    this.eventIdx = opts.eventIdx ?? false;
  }

  /** A ring at `addrs`, cleared in guest memory. */
  static async create(opts: PackedVringOptions): Promise<PackedVringDriver> {
    const r = new PackedVringDriver(opts);
    await r.clear();
    return r;
  }

  /** A ring in the contiguous `packedLayout` at `base`. */
  static at(machine: Machine, base: number, num: number, eventIdx = false): Promise<PackedVringDriver> {
    return PackedVringDriver.create({ machine, num, addrs: packedLayout(base, num), eventIdx });
  }

  /**
   * Issue `writes` in order. They are pipelined (a qtest connection and our in-process machine
   * both apply commands in the order they were issued); callers that need one write to land
   * strictly after others await between calls.
   */
  private async run(writes: readonly PackedWrite[]): Promise<void> {
    await Promise.all(writes.map((w) => this.machine.writeBytes(w.addr, w.bytes)));
  }

  /** Zero the ring and both event areas and start over. */
  async clear(): Promise<void> {
    this.st.reset();
    await this.run(this.st.clearPlan());
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
   * the buffer id, or -1 when the ring has too few free slots. The first descriptor's flags are
   * written only once everything else has landed.
   */
  async add(bufs: readonly DriverBuffer[], opts: PackedAddOptions = {}): Promise<number> {
    const plan = this.st.add(bufs, opts);
    if (!plan) return -1;
    await this.run(plan.writes);
    if (plan.publish) await this.run([plan.publish]);
    return plan.id;
  }

  /** Write the first descriptor's flags of a chain added with `publish: false`. */
  publish(id: number): Promise<void> {
    return this.run([this.st.publish(id)]);
  }

  /** Write a descriptor verbatim into ring slot `slot` (any values; the bookkeeping is untouched). */
  writeDescAt(slot: number, addr: number | bigint, len: number, id: number, flags: number): Promise<void> {
    return this.machine.writeBytes(this.st.descAddr(slot), packedDescBytes(addr, len, id, flags));
  }

  async descAt(slot: number): Promise<PackedDesc> {
    return decodePackedDesc(await this.machine.readBytes(this.st.descAddr(slot), VIRTQ_PACKED_DESC_SIZE));
  }

  /**
   * Used buffers the device returned since the last call, in ring order; their ids and slots are
   * free again. One read of the next used slot when nothing is there (the polling case), then
   * one of the whole ring, walked as the sync driver walks memory. Throws `MachineError` on a
   * used descriptor whose id is not in flight.
   */
  async takeUsed(): Promise<UsedEntry[]> {
    const first = await this.descAt(this.st.nextUsed);
    if (!packedDescIsUsed(first.flags, this.st.usedWrap)) return [];
    const ring = await this.machine.readBytes(this.addrs.desc, VIRTQ_PACKED_DESC_SIZE * this.num);
    const out: UsedEntry[] = [];
    for (;;) {
      const d = decodePackedDesc(ring, VIRTQ_PACKED_DESC_SIZE * this.st.nextUsed);
      if (!packedDescIsUsed(d.flags, this.st.usedWrap)) break;
      this.st.consume(d.id);
      out.push({ id: d.id, len: d.len });
    }
    await this.run(this.st.afterTakePlan());
    return out;
  }

  /** Poll until the device has returned at least `count` buffers; returns them all. */
  async waitUsed(count = 1, opts: PollOptions = {}): Promise<UsedEntry[]> {
    const got: UsedEntry[] = [];
    await poll(
      this.machine,
      async () => {
        got.push(...(await this.takeUsed()));
        return got.length >= count;
      },
      { what: `${count} used packed descriptor${count === 1 ? '' : 's'} (have ${got.length})`, ...opts },
    );
    return got;
  }

  private async readEvent(at: number): Promise<PackedEvent> {
    return decodePackedEvent(await this.machine.readBytes(at, VIRTQ_PACKED_EVENT_SIZE));
  }

  /**
   * Write the driver event area: used-buffer notifications ENABLE, DISABLE, or DESC at `offWrap`
   * (default: the next used descriptor). `off_wrap` lands before the flags.
   */
  async setDriverEvent(flags: number, offWrap?: number): Promise<void> {
    for (const w of this.st.driverEventPlan(flags, offWrap)) await this.run([w]);
  }

  /** DISABLE, or back on: DESC at the next used descriptor with EVENT_IDX, ENABLE without. */
  suppressInterrupts(on: boolean): Promise<void> {
    return this.setDriverEvent(on ? RING_EVENT_FLAGS_DISABLE : this.eventIdx ? RING_EVENT_FLAGS_DESC : RING_EVENT_FLAGS_ENABLE);
  }

  driverEvent(): Promise<PackedEvent> {
    return this.readEvent(this.addrs.avail);
  }

  deviceEvent(): Promise<PackedEvent> {
    return this.readEvent(this.addrs.used);
  }

  /** Should the device be notified about what was added since `kicked()`? */
  async needsNotify(): Promise<boolean> {
    return this.st.needsNotify(await this.deviceEvent());
  }

  kicked(): void {
    this.st.kicked();
  }
}
