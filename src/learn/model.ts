// The machine behind the learning page (dist/learn/index.html): guest RAM, a virtio-rng device
// behind virtio-mmio version 2, and the guest-side driver from src/driver. Every method is one
// step a driver takes; `snapshot()` returns plain data for the page to draw. The rings in a
// snapshot are read from the bytes in guest RAM, not from the device's own bookkeeping, so what
// the page shows is what the device reads. No DOM here: the model runs (and is tested) in Node.
import { VirtioMmioTransport } from '../bus/virtio-mmio.js';
import { deterministicEntropy, VirtIORng } from '../devices/rng.js';
import { MmioDriver } from '../driver/mmio-driver.js';
import { decodePackedDesc, decodePackedEvent, packedLayout, type PackedRingDriver } from '../driver/packed-ring.js';
import type { DriverBuffer, SplitRingDriver } from '../driver/split-ring.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { decodeVirtioBlob, type DecodedField } from '../migration/virtio-decode.js';
import { saveVirtioDevice } from '../migration/virtio.js';
import { describeStatus, formatTraceEvent, type TraceEvent } from '../trace/trace.js';
import { bit, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../virtio/constants.js';
import {
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
} from '../vring/constants.js';

/** Where things live in the 64 KiB of guest RAM. */
export const RAM_SIZE = 0x10000;
export const RING_BASE = 0x1000; // split: desc table; packed: the descriptor ring
export const SPLIT_AVAIL = 0x1100;
export const SPLIT_USED = 0x1200;
export const INDIRECT_TABLE = 0x3000;
export const BUFFERS = 0x4000;
/** A small queue, so that a packed ring wraps after a few requests. */
export const QUEUE_SIZE = 4;

export interface FeatureChoice {
  eventIdx: boolean;
  indirect: boolean;
  packed: boolean;
}

export type PostKind = 'one' | 'chain' | 'indirect';

const hex = (n: number | bigint): string => '0x' + n.toString(16);

/** Names of the flags set in a split (or indirect-table) descriptor. */
export function splitFlagNames(flags: number): string {
  const names: string[] = [];
  if (flags & VRING_DESC_F_NEXT) names.push('NEXT');
  if (flags & VRING_DESC_F_WRITE) names.push('WRITE');
  if (flags & VRING_DESC_F_INDIRECT) names.push('INDIRECT');
  return names.join('|') || '-';
}

/** Names of the flags set in a packed descriptor (AVAIL and USED are the bits 7 and 15). */
export function packedFlagNames(flags: number): string {
  const names: string[] = [];
  if (flags & VRING_DESC_F_NEXT) names.push('NEXT');
  if (flags & VRING_DESC_F_WRITE) names.push('WRITE');
  if (flags & VRING_DESC_F_INDIRECT) names.push('INDIRECT');
  if (flags & VRING_PACKED_DESC_F_AVAIL) names.push('AVAIL');
  if (flags & VRING_PACKED_DESC_F_USED) names.push('USED');
  return names.join('|') || '-';
}

/**
 * What a packed descriptor's AVAIL and USED bits say. AVAIL != USED: the driver made it available
 * in the lap whose wrap counter equals AVAIL. AVAIL == USED: the device marked it used in the lap
 * whose wrap counter equals them (a zeroed ring reads as "used in lap 0", so the driver's first
 * lap, with wrap counter 1, sees nothing to take).
 */
export function packedMeaning(flags: number): string {
  const a = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0 ? 1 : 0;
  const u = (flags & VRING_PACKED_DESC_F_USED) !== 0 ? 1 : 0;
  return a !== u ? `available (wrap ${a})` : `used (wrap ${a})`;
}

export interface SplitRingView {
  kind: 'split';
  num: number;
  addrs: { desc: number; avail: number; used: number };
  desc: { index: number; addr: bigint; len: number; flags: number; flagNames: string; next: number }[];
  avail: { flags: number; idx: number; ring: number[]; usedEvent: number };
  used: { flags: number; idx: number; ring: { id: number; len: number }[]; availEvent: number };
}

export interface PackedRingView {
  kind: 'packed';
  num: number;
  addrs: { ring: number; driverEvent: number; deviceEvent: number };
  desc: { slot: number; addr: bigint; len: number; id: number; flags: number; flagNames: string; avail: boolean; used: boolean; meaning: string }[];
  /** Driver event suppression area (the driver writes it, the device reads it). */
  driverEvent: { offWrap: number; flags: number };
  /** Device event suppression area (the device writes it, the driver reads it). */
  deviceEvent: { offWrap: number; flags: number };
  /** The driver's own counters (they live in the driver, not in RAM). */
  driver: { nextAvail: number; availWrap: boolean; nextUsed: number; usedWrap: boolean };
}

export interface DeviceView {
  status: number;
  statusNames: string;
  isr: number;
  irqLevel: boolean;
  broken: boolean;
  features: bigint;
  /** The device's VirtQueue for queue 0 (its side of the ring). */
  queue: {
    ready: boolean;
    packed: boolean;
    num: number;
    lastAvailIdx: number;
    usedIdx: number;
    inuse: number;
    lastAvailWrapCounter: boolean;
    usedWrapCounter: boolean;
  };
}

export interface Snapshot {
  device: DeviceView;
  ring: SplitRingView | PackedRingView | undefined;
  /** One entry per step, oldest first: what the step did and the trace lines it caused. */
  log: { step: string; result: string; trace: string[] }[];
}

export interface MigrationView {
  size: number;
  /** Every field in stream order, with its depth in the tree and its bytes as hex. */
  rows: { depth: number; name: string; offset: number; size: number; value: string; hex: string }[];
}

export class LearnMachine {
  readonly memory = GuestMemory.ofSize(RAM_SIZE);
  readonly device: VirtIORng;
  readonly transport: VirtioMmioTransport;
  readonly driver: MmioDriver;
  split: SplitRingDriver | undefined;
  packed: PackedRingDriver | undefined;
  /** Where the last queue was set up, so its RAM stays visible after a reset. */
  private lastRing: { kind: 'split' | 'packed' } | undefined;
  private nextBuffer = BUFFERS;
  private readonly log: Snapshot['log'] = [];
  private pending: string[] = [];
  /** Off while the page reads registers for its views, so only the driver's steps are traced. */
  private tracing = true;

  constructor() {
    const tracer = (e: TraceEvent): void => {
      if (this.tracing) this.pending.push(formatTraceEvent(e));
    };
    // Deterministic entropy: the same clicks give the same bytes on every run.
    this.device = new VirtIORng({ memory: this.memory, entropy: deterministicEntropy(1), packed: true, queueSize: 8, tracer });
    this.transport = new VirtioMmioTransport(this.device, { legacy: false, base: 0xa000000, tracer });
    this.driver = new MmioDriver(this.transport, this.memory);
  }

  /** Run one step, recording its result (or the error it threw) and the trace it produced. */
  private step(name: string, body: () => string): string {
    let result: string;
    try {
      result = body();
    } catch (e) {
      result = `error: ${e instanceof Error ? e.message : String(e)}`;
    }
    this.log.push({ step: name, result, trace: this.pending });
    this.pending = [];
    return result;
  }

  /** Reset, ACKNOWLEDGE, DRIVER, write the wanted features, FEATURES_OK. */
  negotiate(choice: FeatureChoice): string {
    return this.step('negotiate features', () => {
      let wanted = 0n;
      if (choice.eventIdx) wanted |= bit(VIRTIO_RING_F_EVENT_IDX);
      if (choice.indirect) wanted |= bit(VIRTIO_RING_F_INDIRECT_DESC);
      if (choice.packed) wanted |= bit(VIRTIO_F_RING_PACKED);
      this.forgetQueue();
      const f = this.driver.init(wanted);
      return `offered ${hex(this.driver.deviceFeatures)}, negotiated ${hex(f)}`;
    });
  }

  /** Program queue 0 (split or packed, as negotiated) and set DRIVER_OK. */
  setupQueue(): string {
    return this.step('set up queue 0', () => {
      this.forgetQueue();
      if (this.driver.features & bit(VIRTIO_F_RING_PACKED)) {
        this.packed = this.driver.setupPackedQueue(0, { num: QUEUE_SIZE, base: RING_BASE });
        // As Linux's virtqueue_enable_cb: with EVENT_IDX, ask for an interrupt at a given slot
        // (DESC) in the driver event area; without it the zeroed area already says ENABLE.
        if (this.packed.eventIdx) this.packed.suppressInterrupts(false);
        this.lastRing = { kind: 'packed' };
      } else {
        this.split = this.driver.setupQueue(0, { num: QUEUE_SIZE, addrs: { desc: RING_BASE, avail: SPLIT_AVAIL, used: SPLIT_USED } });
        this.lastRing = { kind: 'split' };
      }
      this.driver.driverOk();
      return `${this.lastRing.kind} ring of ${QUEUE_SIZE} at ${hex(RING_BASE)}, DRIVER_OK`;
    });
  }

  /** A fresh device-writable buffer of `len` bytes in guest RAM. */
  private buffer(len: number): DriverBuffer {
    if (this.nextBuffer + len > RAM_SIZE) this.nextBuffer = BUFFERS;
    const b = { addr: this.nextBuffer, len, write: true };
    this.memory.fill(b.addr, len, 0);
    this.nextBuffer += 0x100;
    return b;
  }

  /** Post a request for entropy: one buffer, a chain of three, or two buffers in an indirect table. */
  post(kind: PostKind): string {
    return this.step(`post ${kind === 'one' ? 'one buffer' : kind === 'chain' ? 'a chain of 3' : 'an indirect table of 2'}`, () => {
      const ring = this.ring();
      const bufs = kind === 'one' ? [this.buffer(16)] : kind === 'chain' ? [this.buffer(8), this.buffer(8), this.buffer(16)] : [this.buffer(16), this.buffer(16)];
      const id = ring.add(bufs, kind === 'indirect' ? { indirectTable: INDIRECT_TABLE } : {});
      if (id < 0) return 'the ring is full: take used buffers first';
      return `posted as ${this.packed ? 'buffer id' : 'head'} ${id}, ${bufs.reduce((n, b) => n + b.len, 0)} bytes writable`;
    });
  }

  /** Write QueueNotify: the device pops what is available, fills it and raises an interrupt. */
  notify(): string {
    return this.step('notify', () => {
      this.driver.notify(0);
      return `device has ${this.device.requestq.inuse} in flight; interrupt line ${this.transport.irqLevel ? 'high' : 'low'}`;
    });
  }

  /** Read and acknowledge InterruptStatus, then take the used buffers back. */
  takeUsed(): string {
    return this.step('take used', () => {
      const isr = this.driver.ackInterrupt();
      const used = this.ring().takeUsed();
      const list = used.map((u) => `{id ${u.id}, len ${u.len}}`).join(', ');
      return `ISR was ${hex(isr)}; ${used.length ? `used: ${list}` : 'nothing used yet'}`;
    });
  }

  /** Write 0 to the status register: the device forgets its queues and its error. */
  reset(): string {
    return this.step('reset', () => {
      this.driver.reset();
      this.forgetQueue();
      return `status now ${hex(this.device.status)}`;
    });
  }

  /**
   * A hostile guest. Split: a descriptor whose `next` is itself (a loop). Packed: an indirect
   * descriptor whose length (15) is not a whole number of 16-byte descriptors. Either way the
   * device calls virtio_error: it is broken and sets DEVICE_NEEDS_RESET until a reset.
   */
  hostile(): string {
    return this.step('hostile request', () => {
      const buf = this.buffer(16);
      if (this.split) {
        const r = this.split;
        const head = r.add([buf]); // a normal request, then rewrite its descriptor
        if (head < 0) return 'the ring is full: take used buffers first';
        r.writeDesc(head, buf.addr, buf.len, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, head);
        this.driver.notify(0);
        return `descriptor ${head} chained to itself, notified`;
      }
      const r = this.ring() as PackedRingDriver;
      const slot = r.nextAvail;
      const avail = r.availWrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
      r.writeDescAt(slot, INDIRECT_TABLE, 15, r.freeIds[0] ?? 0, VRING_DESC_F_INDIRECT | avail);
      this.driver.notify(0);
      return `slot ${slot}: indirect descriptor of 15 bytes, notified`;
    });
  }

  private ring(): SplitRingDriver | PackedRingDriver {
    const r = this.split ?? this.packed;
    if (!r) throw new Error('no queue: negotiate features and set up the queue first');
    return r;
  }

  private forgetQueue(): void {
    this.split = undefined;
    this.packed = undefined;
    this.nextBuffer = BUFFERS;
  }

  /** Everything the page shows, read now. */
  snapshot(): Snapshot {
    this.tracing = false;
    try {
      return { device: this.deviceView(), ring: this.ringView(), log: this.log.map((l) => ({ ...l, trace: [...l.trace] })) };
    } finally {
      this.tracing = true;
    }
  }

  private deviceView(): DeviceView {
    const d = this.device;
    const q = d.requestq;
    const status = this.driver.status();
    return {
      status,
      statusNames: describeStatus(status),
      isr: this.driver.interruptStatus(),
      irqLevel: this.transport.irqLevel,
      broken: d.broken,
      features: d.guestFeatures,
      queue: {
        ready: q.ready,
        packed: q.packed,
        num: q.num,
        lastAvailIdx: q.lastAvailIdx,
        usedIdx: q.usedIdx,
        inuse: q.inuse,
        lastAvailWrapCounter: q.lastAvailWrapCounter,
        usedWrapCounter: q.usedWrapCounter,
      },
    };
  }

  /** The last queue's ring, decoded from guest RAM. */
  private ringView(): SplitRingView | PackedRingView | undefined {
    const m = this.memory;
    const num = QUEUE_SIZE;
    if (this.lastRing?.kind === 'split') {
      const desc = [];
      for (let i = 0; i < num; i++) {
        const at = RING_BASE + 16 * i;
        const flags = m.read16(at + 12);
        desc.push({ index: i, addr: m.read64(at), len: m.read32(at + 8), flags, flagNames: splitFlagNames(flags), next: m.read16(at + 14) });
      }
      const availRing: number[] = [];
      const usedRing: { id: number; len: number }[] = [];
      for (let i = 0; i < num; i++) {
        availRing.push(m.read16(SPLIT_AVAIL + 4 + 2 * i));
        usedRing.push({ id: m.read32(SPLIT_USED + 4 + 8 * i), len: m.read32(SPLIT_USED + 8 + 8 * i) });
      }
      return {
        kind: 'split',
        num,
        addrs: { desc: RING_BASE, avail: SPLIT_AVAIL, used: SPLIT_USED },
        desc,
        avail: { flags: m.read16(SPLIT_AVAIL), idx: m.read16(SPLIT_AVAIL + 2), ring: availRing, usedEvent: m.read16(SPLIT_AVAIL + 4 + 2 * num) },
        used: { flags: m.read16(SPLIT_USED), idx: m.read16(SPLIT_USED + 2), ring: usedRing, availEvent: m.read16(SPLIT_USED + 4 + 8 * num) },
      };
    }
    if (this.lastRing?.kind === 'packed') {
      const a = packedLayout(RING_BASE, num);
      const bytes = (at: number, len: number): Uint8Array => {
        const b = new Uint8Array(len);
        m.read(at, b);
        return b;
      };
      const desc = [];
      for (let slot = 0; slot < num; slot++) {
        const d = decodePackedDesc(bytes(a.desc + 16 * slot, 16));
        desc.push({
          slot,
          ...d,
          flagNames: packedFlagNames(d.flags),
          avail: (d.flags & VRING_PACKED_DESC_F_AVAIL) !== 0,
          used: (d.flags & VRING_PACKED_DESC_F_USED) !== 0,
          meaning: packedMeaning(d.flags),
        });
      }
      const r = this.packed;
      return {
        kind: 'packed',
        num,
        addrs: { ring: a.desc, driverEvent: a.avail, deviceEvent: a.used },
        desc,
        driverEvent: decodePackedEvent(bytes(a.avail, 4)),
        deviceEvent: decodePackedEvent(bytes(a.used, 4)),
        driver: r
          ? { nextAvail: r.nextAvail, availWrap: r.availWrap, nextUsed: r.nextUsed, usedWrap: r.usedWrap }
          : { nextAvail: 0, availWrap: true, nextUsed: 0, usedWrap: true },
      };
    }
    return undefined;
  }

  /** The device's migration blob (QEMU 7.2's layout, virtio-mmio transport part included), field by field. */
  saveDevice(): MigrationView {
    this.tracing = false;
    try {
      const blob = saveVirtioDevice(this.device);
      return migrationView(blob, decodeVirtioBlob(blob, { transport: 'mmio', emptyDeviceState: true }).fields);
    } finally {
      this.tracing = true;
    }
  }
}

/**
 * Flatten a decoded field tree into rows, each with its bytes as hex (at most 32 shown). A list of
 * more than 8 entries (`vq[0]`, `vq[1]`, …: the per-queue arrays have one for each of the 1024
 * possible queues) shows its first 4 and one row for the rest.
 */
export function migrationView(blob: Uint8Array, fields: readonly DecodedField[], base = 0): MigrationView {
  const rows: MigrationView['rows'] = [];
  const walk = (all: readonly DecodedField[], depth: number): void => {
    const isLongList = all.length > 8 && all.every((f) => f.name.endsWith(']'));
    const fs = isLongList ? all.slice(0, 4) : all;
    if (fs.length < all.length) {
      const rest = all.slice(4);
      const start = rest[0]!.offset;
      const end = rest.at(-1)!.offset + rest.at(-1)!.size;
      walk(fs, depth);
      rows.push({ depth, name: `… ${rest.length} more (${rest[0]!.name} to ${rest.at(-1)!.name})`, offset: start, size: end - start, value: '', hex: '' });
      return;
    }
    for (const f of fs) {
      const bytes = blob.subarray(f.offset - base, f.offset - base + Math.min(f.size, 32));
      const hexBytes = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ') + (f.size > 32 ? ' …' : '');
      let value = '';
      if (typeof f.value === 'bigint') value = hex(f.value);
      else if (typeof f.value === 'number') value = `${f.value} (${hex(f.value)})`;
      else if (f.value !== undefined) value = String(f.value);
      rows.push({ depth, name: f.name, offset: f.offset, size: f.size, value, hex: f.children ? '' : hexBytes });
      if (f.children) walk(f.children, depth + 1);
    }
  };
  walk(fields, 0);
  return { size: blob.length, rows };
}
