// Hostile-guest test harness: one device behind virtio-mmio (v2 modern or v1 legacy), a
// guest-side driver, and the invariants I1–I7 of spec/hostile-guest-bugs.md §0 checked around
// every transport access and every host-side completion.
//
//   I1  no exception escapes a transport read/write/notify or a backend completion
//   I2  bounded work: guest-RAM reads per call and per pop (counted by an instrumented
//       DataView on every RAM region), chains per call, entropy bytes per call, wall clock
//   I3  no allocation sized by guest lengths: V8 external memory (ArrayBuffers) per call
//   I4  memory integrity: RAM is canary-filled; around every call the bytes that changed must
//       lie in the used ring (idx, the elements written, avail_event with EVENT_IDX) or in the
//       device-writable buffers of chains completed in that call
//   I5  liveness: NEEDS_RESET + config interrupt + processing stopped, or a well-formed
//       request posted afterwards completes (legacy: processing stopped, reset recovers)
//   I6  used-ring sanity, by independent bookkeeping: every popped head is the one the avail
//       ring names, its chain is what a reference walker finds, in flight at most once and at
//       most qsize in flight; used.idx moves by what the device flushed, every used id was in
//       flight, len ≤ the chain's writable capacity
//   I7  reset recovers: status 0, ISR 0, IRQ low, full re-init, a normal request completes
//
// Violations found inside device code (pop hook, tracer) are recorded, never thrown there (the
// device's own guard would swallow them), and thrown by the wrapper when the call returns.

import { getHeapStatistics } from 'node:v8';
import { performance } from 'node:perf_hooks';
import { GuestMemory, RamRegion, type MemoryRegionOptions } from '../../src/memory/guest-memory.js';
import {
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_STATUS,
  VirtioMmioTransport,
  mmioRegisterName,
} from '../../src/bus/virtio-mmio.js';
import { MmioDriver, type MmioAccess } from '../../src/driver/mmio-driver.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import { VirtIORng, deterministicEntropy, type EntropySource, type VirtIORngOptions } from '../../src/devices/rng.js';
import { VirtIODevice, type VirtIODeviceOptions } from '../../src/virtio/device.js';
import {
  bit,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_RNG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { legacyLayout, type RingAddresses } from '../../src/vring/layout.js';
import type { VirtQueue } from '../../src/vring/virtqueue.js';
import { formatTraceEvent, type TraceEvent } from '../../src/trace/trace.js';

export const KiB = 1024;
export const MiB = 1024 * 1024;
export const EVENT_IDX = bit(VIRTIO_RING_F_EVENT_IDX);
export const INDIRECT = bit(VIRTIO_RING_F_INDIRECT_DESC);
export const VERSION_1 = bit(VIRTIO_F_VERSION_1);
export const F_NEXT = VRING_DESC_F_NEXT;
export const F_WRITE = VRING_DESC_F_WRITE;
export const F_INDIRECT = VRING_DESC_F_INDIRECT;

/** Thrown by the harness when an invariant does not hold. */
export class InvariantError extends Error {
  override name = 'InvariantError';
}

// ---------------------------------------------------------------------------------------------
// Instrumented RAM

/** Counts guest-RAM reads made through region DataViews; an optional hook may change values. */
export interface AccessStats {
  reads: number;
  /** Only while armed (inside a checked call) does the hook see reads. */
  armed: boolean;
  hook: ReadHook | undefined;
}

/**
 * Sees every armed multi-byte read: the guest address, size, the value in RAM; returns the value
 * the reader gets. Used for double-fetch tests (T-H1).
 */
export type ReadHook = (gpa: number, size: number, value: number | bigint) => number | bigint;

class CountingDataView extends DataView<ArrayBufferLike> {
  constructor(buffer: ArrayBufferLike, byteOffset: number, byteLength: number, private readonly stats: AccessStats, private readonly base: number) {
    super(buffer, byteOffset, byteLength);
  }
  private seen(o: number, size: number, v: number): number {
    const s = this.stats;
    s.reads++;
    return s.armed && s.hook ? Number(s.hook(this.base + o, size, v)) : v;
  }
  override getUint8(o: number): number {
    return this.seen(o, 1, super.getUint8(o));
  }
  override getUint16(o: number, le?: boolean): number {
    return this.seen(o, 2, super.getUint16(o, le));
  }
  override getUint32(o: number, le?: boolean): number {
    return this.seen(o, 4, super.getUint32(o, le));
  }
  override getInt16(o: number, le?: boolean): number {
    return this.seen(o, 2, super.getInt16(o, le));
  }
  override getInt32(o: number, le?: boolean): number {
    return this.seen(o, 4, super.getInt32(o, le));
  }
  override getBigUint64(o: number, le?: boolean): bigint {
    const s = this.stats;
    s.reads++;
    const v = super.getBigUint64(o, le);
    return s.armed && s.hook ? BigInt(s.hook(this.base + o, 8, v)) : v;
  }
}

/** A RAM region whose `view` counts reads (and lets a hook lie about them). */
export class InstrumentedRegion extends RamRegion {
  constructor(opts: MemoryRegionOptions, stats: AccessStats) {
    super(opts);
    (this as unknown as { view: DataView }).view = new CountingDataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength, stats, this.base);
  }
}

/** Fill a region with a position-dependent canary pattern (so a write of any value shows). */
export function canaryFill(r: RamRegion): void {
  const tile = Math.min(r.size, 64 * KiB);
  for (let i = 0; i < tile; i++) r.bytes[i] = (Math.imul(r.base + i + 0x51, 0x9e3779b1) >>> 24) ^ 0xa5;
  for (let off = tile; off < r.size; off += tile) r.bytes.copyWithin(off, 0, Math.min(tile, r.size - off));
}

/** Uninstrumented little-endian peeks for the harness's own reads (never counted or hooked). */
class Peek {
  private readonly views = new Map<RamRegion, DataView>();
  constructor(readonly mem: GuestMemory) {}
  private at(addr: number, len: number): [DataView, number] | undefined {
    const r = this.mem.findRegion(addr, len);
    if (!r) return undefined;
    let v = this.views.get(r);
    if (!v) {
      v = new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength);
      this.views.set(r, v);
    }
    return [v, addr - r.base];
  }
  u16(addr: number): number {
    const a = this.at(addr, 2);
    return a ? a[0].getUint16(a[1], true) : -1;
  }
  u32(addr: number): number {
    const a = this.at(addr, 4);
    return a ? a[0].getUint32(a[1], true) : -1;
  }
  /** A descriptor at `addr`, or undefined when it is not in RAM. */
  desc(addr: number): { addr: number; len: number; flags: number; next: number } | undefined {
    const a = this.at(addr, 16);
    if (!a) return undefined;
    const [v, o] = a;
    const lo = v.getUint32(o, true);
    const hi = v.getUint32(o + 4, true);
    return { addr: hi > 0x1f_ffff ? -1 : hi * 2 ** 32 + lo, len: v.getUint32(o + 8, true), flags: v.getUint16(o + 12, true), next: v.getUint16(o + 14, true) };
  }
}

// ---------------------------------------------------------------------------------------------
// Reference chain walker: the device's documented policies, written independently

export interface RefChain {
  ok: boolean;
  error: string;
  readable: [number, number][];
  writable: [number, number][];
  outBytes: number;
  inBytes: number;
  /** Descriptors visited, the indirect pointer included. */
  ndescs: number;
}

/**
 * Walk the chain at `head` as the device must (VIRTIO 1.2 §2.7.5, plus this project's
 * policies): at most `num` visits in the table and `len/16` in an indirect table, at most 1024
 * buffers + the indirect pointer, zero-length descriptors walked but not mapped (not checked),
 * INDIRECT only when negotiated, not nested, without NEXT, len a non-zero multiple of 16, table
 * in RAM; readable buffers in RAM, writable ones in writable RAM, readable never after
 * writable; total length < 2^32; `next` < the table size.
 */
export function refWalk(mem: GuestMemory, descAddr: number, num: number, head: number, indirectOk: boolean): RefChain {
  const peek = new Peek(mem);
  const res: RefChain = { ok: false, error: '', readable: [], writable: [], outBytes: 0, inBytes: 0, ndescs: 0 };
  const fail = (e: string): RefChain => ((res.error = e), res);
  if (head >= num) return fail(`head ${head} >= num ${num}`);
  let table = descAddr;
  let max = num;
  let i = head;
  let inTable = false;
  let visits = 0;
  let total = 0;
  let sawWrite = false;
  for (;;) {
    const d = peek.desc(table + 16 * i);
    if (!d) return fail('descriptor not in RAM');
    if (++visits > max) return fail('loop');
    if (++res.ndescs > 1025) return fail('more than 1024 buffers');
    if (d.flags & F_INDIRECT) {
      if (!indirectOk) return fail('INDIRECT not negotiated');
      if (inTable) return fail('nested INDIRECT');
      if (d.flags & F_NEXT) return fail('INDIRECT with NEXT');
      if (d.len === 0 || d.len % 16 !== 0) return fail('bad indirect length');
      if (!mem.findRegion(d.addr, d.len)) return fail('indirect table not in RAM');
      table = d.addr;
      max = d.len / 16;
      i = 0;
      visits = 0;
      inTable = true;
      continue;
    }
    if (d.flags & F_WRITE) {
      if (d.len !== 0 && !mem.isWritableRange(d.addr, d.len)) return fail('writable buffer not in writable RAM');
      sawWrite = true;
      res.inBytes += d.len;
      if (d.len !== 0) res.writable.push([d.addr, d.len]);
    } else {
      if (sawWrite) return fail('readable after writable');
      if (d.len !== 0 && !mem.isRange(d.addr, d.len)) return fail('readable buffer not in RAM');
      res.outBytes += d.len;
      if (d.len !== 0) res.readable.push([d.addr, d.len]);
    }
    total += d.len;
    if (total > 0xffff_ffff) return fail('chain longer than 2^32-1 bytes');
    if (!(d.flags & F_NEXT)) break;
    if (d.next >= max) return fail(`next ${d.next} >= ${max}`);
    i = d.next;
  }
  res.ok = true;
  return res;
}

/** Byte-wise equality of two byte ranges (fast, unlike a deep `toEqual` on large arrays). */
export function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a !== undefined && b !== undefined && Buffer.compare(a, b) === 0;
}

/** Linux's vring_need_event, written out here so the oracle does not share code with src/. */
export function needEvent(event: number, now: number, old: number): boolean {
  return ((now - event - 1) & 0xffff) < ((now - old) & 0xffff);
}

/** Modern ring addresses for `num` entries at `base`: desc, then avail, used on the next page. */
export function modernLayout(base: number, num: number): RingAddresses {
  const avail = base + 16 * num;
  const used = Math.ceil((avail + 6 + 2 * num) / 4096) * 4096;
  return { desc: base, avail, used };
}

/** The byte stream `deterministicEntropy(seed)` produces from `offset`, `n` bytes long. */
export function entropyStream(seed: number, offset: number, n: number): Uint8Array {
  const src = deterministicEntropy(seed);
  const chunk = new Uint8Array(64 * KiB);
  for (let left = offset; left > 0; left -= chunk.length) src.fill(left >= chunk.length ? chunk : chunk.subarray(0, left));
  const out = new Uint8Array(n);
  src.fill(out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// A test-only device that pops and holds (an asynchronous backend that has not answered yet)

export class HoldingDevice extends VirtIODevice {
  readonly held: VirtQueueElement[] = [];
  readonly q: VirtQueue;
  /** Byte written into the buffers of completed requests. */
  fillByte = 0xc3;

  constructor(opts: VirtIODeviceOptions & { queueSize?: number }) {
    super(VIRTIO_ID_RNG, 0, opts, 'holding-test-device');
    this.q = this.addQueue(opts.queueSize ?? 8, () => this.take());
  }

  protected override setStatusHook(status: number): void {
    this.status = status;
    this.take();
  }

  /** Pop everything available and keep it. */
  take(): void {
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK) || this.processingStopped) return;
    for (let n = 0; n <= 1024; n++) {
      const e = this.q.pop();
      if (!e) break;
      this.held.push(e);
    }
  }

  /** Complete one element: fill its writable part (in bounded chunks) and push it. */
  complete(elem: VirtQueueElement): number {
    const chunk = new Uint8Array(256).fill(this.fillByte);
    let done = 0;
    while (done < elem.inBytes) {
      const n = elem.writeIn(done, chunk.subarray(0, Math.min(chunk.length, elem.inBytes - done)));
      if (n === 0) break;
      done += n;
    }
    this.q.push(elem, done);
    this.notify(this.q);
    return done;
  }

  completeAll(): void {
    for (const e of this.held.splice(0)) this.complete(e);
  }
}

// ---------------------------------------------------------------------------------------------
// The rig

export interface RigOptions {
  legacy?: boolean;
  /** RAM layout; default one 256 KiB region at 0. */
  regions?: MemoryRegionOptions[];
  /** Queue size the driver programs (default 8). */
  num?: number;
  /** Features the driver accepts when offered (default INDIRECT_DESC; VERSION_1 is added on v2). */
  features?: bigint;
  /** Ring base (modern: desc address; legacy: page-aligned area base). Default RAM base + 0x1000. */
  ringBase?: number;
  /** Legacy QueueAlign (default 4096). */
  align?: number;
  /** Start of a free data area for test buffers (default RAM base + 0x10000). */
  dataBase?: number;
  /** Buffer used by liveness/recovery requests (default: last 4 KiB of the first region). */
  goodBuf?: number;
  /** Build another device instead of virtio-rng. */
  device?: (opts: VirtIODeviceOptions) => VirtIODevice;
  /**
   * A well-formed request of that device (default: one writable buffer, which is what virtio-rng
   * takes): `post` writes the chain for `head` (not published), `check` judges its completion.
   */
  good?: {
    post(rig: HostileRig, head: number): GoodRequest;
    check?(rig: HostileRig, c: Completion, req: GoodRequest): void;
  };
  rng?: Partial<VirtIORngOptions>;
  /** Queue size the rng device offers (default 8). */
  queueSize?: number;
  /** I2 wall-clock cap per call in ms (default 2000: a backstop against a hang, not a speed check). */
  wallCapMs?: number;
  /** I3 cap on external (ArrayBuffer) memory growth per call (default 256 KiB). */
  allocCapBytes?: number;
  /** I2 cap on chains popped per call (default: the queue size). */
  maxChainsPerCall?: number;
}

export interface RingGeometry extends RingAddresses {
  num: number;
}

export interface Completion {
  id: number;
  len: number;
  /** Entropy stream offset when the chain was popped (rng). */
  entropyAt: number;
  ref: RefChain;
}

interface InFlight {
  head: number;
  ref: RefChain;
  entropyAt: number;
}

export interface CallStats {
  label: string;
  ms: number;
  reads: number;
  pops: number;
  flushed: number;
  notifies: number;
  suppressed: number;
  configNotifies: number;
  errors: number;
  entropyBytes: number;
  extDelta: number;
}

export interface GoodRequest {
  head: number;
  addr: number;
  len: number;
}

export type Liveness = 'needs-reset' | 'stopped' | 'live';

/** Seed of the rng rig's deterministic entropy source. */
export const RNG_SEED = 7;

export class HostileRig {
  readonly legacy: boolean;
  readonly mem: GuestMemory;
  readonly regions: readonly RamRegion[];
  readonly stats: AccessStats = { reads: 0, armed: false, hook: undefined };
  readonly dev: VirtIODevice;
  readonly q: VirtQueue;
  readonly mmio: VirtioMmioTransport;
  readonly drv: MmioDriver;
  /** Register access with every invariant checked around each call. */
  readonly regs: MmioAccess;
  readonly opts: RigOptions;
  readonly ringBase: number;
  readonly dataBase: number;
  readonly goodBuf: number;

  /** Guest-side ring of the current set-up (undefined before `setupQueue`). */
  ring: SplitRingDriver | undefined;
  /** The geometry the driver believes in; I4/I6 use it. Undefined: use the device's mapping. */
  geom: RingGeometry | undefined;
  /** Features negotiated by the last `init`; tests that renegotiate by hand may set it. */
  features = 0n;

  readonly errors: string[] = [];
  readonly completions: Completion[] = [];
  /** Every checked call's statistics, in order (trimmed to the last 64). */
  lastCalls: CallStats[] = [];
  totalPops = 0;
  irqRaises = 0;
  irqLevel = false;
  /** Set when the device raised NEEDS_RESET: what the driver could observe at that moment. */
  needsResetInfo: { driverOk: boolean; isr: number; irq: boolean; configNotifies: number } | undefined;

  private readonly peek: Peek;
  private readonly snaps: Uint8Array[];
  private readonly bufs: Buffer[];
  private readonly snapBufs: Buffer[];
  private readonly inflight = new Map<number, InFlight>();
  private consumed = 0;
  private usedSeen = 0;
  private violations: string[] = [];
  private inCall = false;
  private entropyCount = 0;
  private callEntropy = 0;
  private traceRing: TraceEvent[] = [];
  private cur = { pops: 0, flushed: 0, notifies: 0, suppressed: 0, configNotifies: 0, errors: 0 };
  /** Flushed by the device and not yet matched against the used ring. */
  private pendingFlushed = 0;
  /** Ranges I4 allows for the current call. */
  private allowed: [number, number][] = [];
  private usedIdx0 = -1;
  private lastStart: { num: number; features: bigint } | undefined;

  constructor(opts: RigOptions = {}) {
    this.opts = opts;
    this.legacy = opts.legacy ?? false;
    const regionOpts = opts.regions ?? [{ base: 0, size: 256 * KiB }];
    const regions = regionOpts.map((r) => new InstrumentedRegion(r, this.stats));
    this.mem = new GuestMemory(regions);
    this.regions = this.mem.regions;
    for (const r of this.regions) canaryFill(r);
    this.peek = new Peek(this.mem);
    this.snaps = this.regions.map((r) => new Uint8Array(r.size));
    this.bufs = this.regions.map((r) => Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength));
    this.snapBufs = this.snaps.map((s) => Buffer.from(s.buffer, s.byteOffset, s.byteLength));
    const r0 = this.regions.find((r) => !r.readonly) ?? this.regions[0]!;
    this.ringBase = opts.ringBase ?? r0.base + 0x1000;
    this.dataBase = opts.dataBase ?? r0.base + 0x10000;
    this.goodBuf = opts.goodBuf ?? r0.end - 0x1000;

    const tracer = (e: TraceEvent) => this.onTrace(e);
    const onError = (m: string) => this.errors.push(m);
    if (opts.device) {
      this.dev = opts.device({ memory: this.mem, tracer, onError });
    } else {
      const inner = deterministicEntropy(RNG_SEED);
      const entropy: EntropySource = {
        fill: (buf) => {
          inner.fill(buf);
          this.entropyCount += buf.length;
          this.callEntropy += buf.length;
        },
      };
      this.dev = new VirtIORng({ memory: this.mem, tracer, onError, entropy, queueSize: opts.queueSize ?? 8, ...opts.rng });
    }
    this.q = this.dev.vq[0]!;
    this.hookPop(this.q);
    this.mmio = new VirtioMmioTransport(this.dev, {
      legacy: this.legacy,
      irq: (l) => {
        if (l && !this.irqLevel) this.irqRaises++;
        this.irqLevel = l;
      },
    });
    this.regs = {
      read: (o, s) => this.call(`read ${mmioRegisterName(o)}/${s}`, () => this.mmio.read(o, s)),
      write: (o, s, v) => this.call(`write ${mmioRegisterName(o)}/${s} <- 0x${(v >>> 0).toString(16)}`, () => this.mmio.write(o, s, v)),
    };
    this.drv = new MmioDriver(this.regs, this.mem);
  }

  get rng(): VirtIORng {
    if (!(this.dev instanceof VirtIORng)) throw new Error('not an rng rig');
    return this.dev;
  }

  /** A 64-bit checked read/write (the transport splits it). */
  read64(o: number): bigint {
    return this.call(`read64 ${mmioRegisterName(o)}`, () => this.mmio.read64(o));
  }
  write64(o: number, v: bigint): void {
    this.call(`write64 ${mmioRegisterName(o)}`, () => this.mmio.write64(o, v));
  }

  /** Run a host-side action (a backend completion) under the same checks as a register access. */
  host<T>(label: string, fn: () => T): T {
    return this.call(`host: ${label}`, fn);
  }

  // -------------------------------------------------------------------------------------------
  // Driver conveniences

  /** Reset + negotiate; returns the negotiated features. */
  init(features = this.opts.features ?? INDIRECT): bigint {
    this.features = this.drv.init(features);
    return this.features;
  }

  /** Program queue 0 (modern: three addresses; legacy: QueueNum/QueueAlign/QueuePFN). */
  setupQueue(num = this.opts.num ?? 8, addrs?: RingAddresses): SplitRingDriver {
    const align = this.opts.align ?? 4096;
    const a = addrs ?? (this.legacy ? legacyLayout(this.ringBase, num, align) : modernLayout(this.ringBase, num));
    // The driver zeroes its ring before telling the device about it (as Linux allocates it zeroed).
    this.ring = this.drv.setupQueue(0, { num, addrs: a, base: a.desc, align });
    this.ring.eventIdx = (this.negotiated() & EVENT_IDX) !== 0n;
    this.geom = { ...this.ring.addrs, num };
    return this.ring;
  }

  /** Set DRIVER_OK the way Linux does: read-modify-write, so no device-set bit is cleared. */
  driverOk(): void {
    this.regs.write(VIRTIO_MMIO_STATUS, 4, this.status() | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  /** init + setupQueue + driverOk. */
  start(num = this.opts.num ?? 8, features = this.opts.features ?? INDIRECT): SplitRingDriver {
    this.lastStart = { num, features };
    this.init(features);
    const ring = this.setupQueue(num);
    this.driverOk();
    return ring;
  }

  status(): number {
    return this.regs.read(VIRTIO_MMIO_STATUS, 4);
  }
  isr(): number {
    return this.regs.read(VIRTIO_MMIO_INTERRUPT_STATUS, 4);
  }
  ack(bits = this.isr()): void {
    if (bits) this.regs.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, bits);
  }
  kick(queue = 0): void {
    this.regs.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, queue);
  }

  get ringDrv(): SplitRingDriver {
    if (!this.ring) throw new Error('queue not set up');
    return this.ring;
  }

  /** Write descriptor `i` of the current table verbatim. */
  desc(i: number, addr: number | bigint, len: number, flags: number, next = 0): void {
    this.ringDrv.writeDesc(i, addr, len, flags, next);
  }
  /** Publish `head` in the next avail slot. */
  publish(...heads: number[]): void {
    for (const h of heads) this.ringDrv.publish(h);
  }
  /** Address of data slot `k` (4 KiB apart) in the free data area. */
  buf(k: number): number {
    return this.dataBase + k * 0x1000;
  }
  /** Completions recorded since index `from`. */
  completionsSince(from: number): Completion[] {
    return this.completions.slice(from);
  }
  /**
   * The features I4/I6 judge by: the driver's negotiation, or, when the harness follows the
   * device's own geometry (`geom` unset, e.g. after random register writes), the device's.
   */
  negotiated(): bigint {
    return this.geom ? this.features : this.dev.guestFeatures;
  }

  /** The geometry I4/I6 use: the driver's, or the device's mapping when none was set. */
  geometry(): RingGeometry | undefined {
    if (this.geom) return this.geom;
    const q = this.q;
    return q.isMapped ? { desc: q.desc, avail: q.avail, used: q.used, num: q.num } : undefined;
  }
  /** used.idx as the guest sees it (-1 if the used ring is not in RAM). */
  usedIdx(): number {
    const g = this.geometry();
    return g ? this.peek.u16(g.used + 2) : -1;
  }
  usedElem(slot: number): { id: number; len: number } {
    const g = this.geometry()!;
    return { id: this.peek.u32(g.used + 4 + 8 * slot), len: this.peek.u32(g.used + 8 + 8 * slot) };
  }
  /** Current in-flight heads according to the harness's own bookkeeping. */
  inFlightHeads(): number[] {
    return [...this.inflight.keys()];
  }

  /**
   * White-box: put the queue at avail/used index `idx` as a restored snapshot would (device
   * shadow state, guest ring indices and the harness's bookkeeping together).
   */
  pokeIndices(idx: number): void {
    const q = this.q;
    const g = this.geometry()!;
    q.lastAvailIdx = q.shadowAvailIdx = q.usedIdx = q.signalledUsed = idx;
    this.ringDrv.setAvailIdx(idx);
    this.mem.write16(g.used + 2, idx);
    this.ringDrv.lastUsedIdx = idx;
    this.consumed = idx;
    this.usedSeen = idx;
  }

  /**
   * Post one well-formed writable request on a head not in flight. With `force`, when every head
   * is in flight, publish the last head again without rewriting it (only to see nothing happens).
   */
  postGood(len = 32, force = false): GoodRequest {
    const g = this.geometry();
    if (!g || !this.ring) throw new Error('postGood: queue not set up');
    let head = -1;
    for (let h = g.num - 1; h >= 0; h--) if (!this.inflight.has(h)) { head = h; break; }
    if (head < 0) {
      if (!force) throw new Error('postGood: every head is in flight');
      this.ring.publish(g.num - 1);
      return { head: g.num - 1, addr: this.goodBuf, len };
    }
    if (this.opts.good) {
      const req = this.opts.good.post(this, head);
      this.ring.publish(head);
      return req;
    }
    this.ring.writeDesc(head, this.goodBuf, len, F_WRITE, 0);
    this.ring.publish(head);
    return { head, addr: this.goodBuf, len };
  }

  /** The completion of `req` since `from`, with its data checked (rng: the entropy stream). */
  findGood(req: GoodRequest, from: number): Completion | undefined {
    const c = this.completions.slice(from).find((x) => x.id === req.head);
    if (!c) return undefined;
    if (this.opts.good?.check) this.opts.good.check(this, c, req);
    else if (this.dev instanceof VirtIORng) {
      const want = Math.min(req.len, this.rng.maxBytesPerRequest);
      if (c.len !== want) throw new InvariantError(`I5: good request completed with len ${c.len}, expected ${want}`);
      const got = this.mem.view(req.addr, want)!;
      const exp = entropyStream(RNG_SEED, c.entropyAt, want);
      if (Buffer.compare(Buffer.from(got), Buffer.from(exp)) !== 0) throw new InvariantError('I5: good request completed with wrong data');
    }
    return c;
  }

  /** Complete what an asynchronous test device holds. */
  serviceBackend(): void {
    const d = this.dev;
    if (d instanceof HoldingDevice && d.held.length) this.host('complete held', () => d.completeAll());
  }

  // -------------------------------------------------------------------------------------------
  // I5 and I7

  /**
   * I5. After bad input exactly one of: NEEDS_RESET (with a config interrupt if DRIVER_OK was set
   * when it happened) and processing stopped; processing stopped without NEEDS_RESET (only for a
   * device that cannot report it: legacy, or VERSION_1 not negotiated, or `allowStopped`); or a
   * well-formed request posted now completes with correct data.
   */
  checkLiveness(opts: { allowStopped?: boolean } = {}): Liveness {
    const st = this.status();
    if (st & VIRTIO_CONFIG_S_NEEDS_RESET) {
      const info = this.needsResetInfo;
      if (!info) throw new InvariantError('I5: NEEDS_RESET reads back but the harness never saw the device set it');
      if (info.driverOk && !(info.isr & 2 && info.irq && info.configNotifies > 0)) {
        throw new InvariantError(`I5: NEEDS_RESET after DRIVER_OK without a config interrupt (isr=${info.isr}, irq=${info.irq})`);
      }
      this.assertStopped();
      return 'needs-reset';
    }
    const from = this.completions.length;
    const pops = this.totalPops;
    const req = this.postGood(32, true);
    this.kick();
    this.serviceBackend();
    if (this.findGood(req, from)) return 'live';
    if (this.totalPops !== pops) throw new InvariantError('I5: the good request was popped but never completed');
    const canReport = this.dev.hasFeature(VIRTIO_F_VERSION_1);
    if (canReport && !opts.allowStopped) {
      throw new InvariantError(`I5: WEDGED: no NEEDS_RESET and a well-formed request is not processed (last error: ${this.errors.at(-1) ?? 'none'})`);
    }
    return 'stopped';
  }

  /** Post a good request, kick: nothing may be consumed. */
  assertStopped(): void {
    const pops = this.totalPops;
    const from = this.completions.length;
    this.postGood(32, true);
    this.kick();
    if (this.totalPops !== pops || this.completions.length !== from) throw new InvariantError('I5: device still processes after reporting an error');
  }

  /** I7: reset, re-initialise the same way, and a normal request completes as the first one. */
  checkResetRecovers(): void {
    this.regs.write(VIRTIO_MMIO_STATUS, 4, 0);
    if (this.status() !== 0) throw new InvariantError('I7: status is not 0 after reset');
    if (this.isr() !== 0) throw new InvariantError('I7: ISR is not 0 after reset');
    if (this.irqLevel) throw new InvariantError('I7: interrupt line still high after reset');
    if (this.dev.broken) throw new InvariantError('I7: device still broken after reset');
    if (this.inflight.size !== 0) throw new InvariantError('I7: harness still tracks in-flight heads after reset');
    const s = this.lastStart ?? { num: this.opts.num ?? 8, features: this.opts.features ?? INDIRECT };
    this.start(s.num, s.features);
    const from = this.completions.length;
    const req = this.postGood();
    this.kick();
    this.serviceBackend();
    const c = this.findGood(req, from);
    if (!c) throw new InvariantError(`I7: a normal request after reset did not complete (errors: ${this.errors.join('; ')})`);
    if (this.completions.length - from !== 1) throw new InvariantError('I7: stale completions after reset');
    if (this.usedIdx() !== 1) throw new InvariantError(`I7: used.idx is ${this.usedIdx()} after one request on a fresh ring`);
    if (this.dev.broken) throw new InvariantError('I7: device broken by a normal request after reset');
  }

  /** The bad input must have been reported, stopped processing (I5) and reset must recover (I7). */
  expectFatal(re?: RegExp): void {
    if (this.errors.length === 0) throw new InvariantError('expected a virtioError, none was reported');
    if (re && !re.test(this.errors[0]!)) throw new InvariantError(`first error "${this.errors[0]}" does not match ${re}`);
    if (!this.dev.broken) throw new InvariantError('an error was reported but the device is not broken');
    const out = this.checkLiveness({ allowStopped: true });
    const want: Liveness = this.dev.hasFeature(VIRTIO_F_VERSION_1) ? 'needs-reset' : 'stopped';
    if (out !== want) throw new InvariantError(`I5: expected ${want}, got ${out}`);
    this.checkResetRecovers();
  }

  /** No error; a good request completes now (I5) and after a reset (I7). */
  expectLive(): void {
    if (this.errors.length) throw new InvariantError(`unexpected error: ${this.errors.join('; ')}`);
    const out = this.checkLiveness();
    if (out !== 'live') throw new InvariantError(`I5: expected live, got ${out}`);
    this.checkResetRecovers();
  }

  /** Recent trace, for failure messages. */
  recentTrace(): string {
    return this.traceRing.map(formatTraceEvent).join('\n');
  }

  // -------------------------------------------------------------------------------------------
  // The checked call

  private call<T>(label: string, fn: () => T): T {
    if (this.inCall) {
      this.violations.push(`re-entrant transport/host call during a checked call: ${label}`);
      return fn();
    }
    const q = this.q;
    const gen0 = q.generation;
    const status0 = this.dev.status;
    for (let k = 0; k < this.regions.length; k++) this.snaps[k]!.set(this.regions[k]!.bytes);
    const g0 = this.geometry();
    this.usedIdx0 = g0 ? this.peek.u16(g0.used + 2) : -1;
    this.cur = { pops: 0, flushed: 0, notifies: 0, suppressed: 0, configNotifies: 0, errors: 0 };
    this.pendingFlushed = 0;
    this.allowed = [];
    this.callEntropy = 0;
    const reads0 = this.stats.reads;
    const ext0 = getHeapStatistics().external_memory;
    this.inCall = true;
    this.stats.armed = true;
    const t0 = performance.now();
    let result: T;
    try {
      result = fn();
    } catch (e) {
      throw new InvariantError(`I1: exception escaped from ${label}: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    } finally {
      this.stats.armed = false;
      this.inCall = false;
    }
    const ms = performance.now() - t0;
    const extDelta = getHeapStatistics().external_memory - ext0;
    const reads = this.stats.reads - reads0;
    const st: CallStats = { label, ms, reads, entropyBytes: this.callEntropy, extDelta, ...this.cur };
    this.lastCalls.push(st);
    if (this.lastCalls.length > 64) this.lastCalls = this.lastCalls.slice(-32);
    const v = this.violations;

    // I2
    const num = Math.max(q.num, this.geom?.num ?? 0, 1);
    const maxChains = this.opts.maxChainsPerCall ?? num;
    const perChainDescs = (this.negotiated() & INDIRECT) !== 0n ? 1026 : num + 1;
    const readBudget = (maxChains + 1) * (6 * perChainDescs + 8) + 64;
    // A backstop for runaway work only: the read budget above bounds the work exactly, and a
    // wall-clock cap tight enough to mean more fails on a loaded CI machine (100 ms did).
    const wallCap = this.opts.wallCapMs ?? 2000;
    if (ms > wallCap) v.push(`I2: ${label} took ${ms.toFixed(1)} ms (cap ${wallCap})`);
    if (reads > readBudget) v.push(`I2: ${label} made ${reads} guest-RAM reads (budget ${readBudget})`);
    if (this.cur.pops > maxChains) v.push(`I2: ${label} popped ${this.cur.pops} chains (cap ${maxChains})`);
    if (this.dev instanceof VirtIORng && this.callEntropy > maxChains * this.dev.maxBytesPerRequest) {
      v.push(`I2: ${label} generated ${this.callEntropy} bytes`);
    }
    // I3
    const allocCap = this.opts.allocCapBytes ?? 256 * KiB;
    if (extDelta > allocCap) v.push(`I3: ${label} grew external memory by ${extDelta} bytes (cap ${allocCap})`);
    // NEEDS_RESET bookkeeping for I5
    if (!(status0 & VIRTIO_CONFIG_S_NEEDS_RESET) && this.dev.status & VIRTIO_CONFIG_S_NEEDS_RESET && q.generation === gen0) {
      this.needsResetInfo = {
        driverOk: (this.dev.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0,
        isr: this.dev.isr,
        irq: this.irqLevel,
        configNotifies: this.cur.configNotifies,
      };
    }
    // Reset: the device forgot everything in flight, so does the harness.
    const allowed = this.allowed;
    if (q.generation !== gen0) {
      this.inflight.clear();
      this.consumed = 0;
      this.usedSeen = 0;
      this.needsResetInfo = undefined;
    } else {
      this.drainUsed(label);
      const g = this.geometry();
      if (g && (this.negotiated() & EVENT_IDX) !== 0n) allowed.push([g.used + 4 + 8 * g.num, 2]);
      // A broken device stops publishing, but may still finish writing buffers it popped before
      // the error (QEMU's backends do); those chains are never completed. After a reset they are
      // stale and may not be touched at all.
      if (this.dev.broken) for (const f of this.inflight.values()) for (const w of f.ref.writable) allowed.push(w);
    }
    // I6: the device's count of elements in use agrees with the harness's in-flight set.
    if (!this.dev.broken && q.generation === gen0 && q.inuse !== this.inflight.size) {
      v.push(`I6: device inuse ${q.inuse} but ${this.inflight.size} heads in flight by bookkeeping`);
    }
    // I4
    this.diffRam(label, allowed);
    if (v.length) {
      this.violations = [];
      throw new InvariantError(`${v.slice(0, 8).join('\n')}\n--- recent trace ---\n${this.recentTrace()}`);
    }
    return result!;
  }

  /**
   * I6 on the used ring: match what the device flushed since the last look against used.idx and
   * the new elements, retire their heads and allow their buffers (I4). Runs after every call and
   * before every pop (a head returned earlier in the same kick may legally be popped again).
   */
  private drainUsed(label: string): void {
    const v = this.violations;
    const flushed = this.pendingFlushed & 0xffff;
    if (flushed === 0) return;
    this.pendingFlushed = 0;
    const g = this.geometry();
    if (!g) {
      v.push(`I6: ${label}: the device flushed used entries with no ring set up`);
      return;
    }
    const allowed = this.allowed;
    const ramIdx = this.peek.u16(g.used + 2);
    const n = (ramIdx - this.usedSeen) & 0xffff;
    if (n !== flushed) {
      v.push(`I6: ${label}: used.idx went from ${this.usedIdx0} to ${ramIdx}, expected ${this.usedSeen}+${flushed}`);
      return;
    }
    if (n > g.num) v.push(`I6: ${label}: ${n} used entries published at once on a ring of ${g.num}`);
    allowed.push([g.used + 2, 2]);
    for (let k = 0; k < n; k++) {
      const slot = (this.usedSeen + k) % g.num;
      const o = g.used + 4 + 8 * slot;
      allowed.push([o, 8]);
      const id = this.peek.u32(o);
      const len = this.peek.u32(o + 4);
      const rec = this.inflight.get(id);
      if (!rec) {
        v.push(`I6: ${label}: used id ${id} (slot ${slot}) was not in flight (duplicate or invented)`);
        continue;
      }
      if (len > rec.ref.inBytes) v.push(`I6: ${label}: used len ${len} > writable capacity ${rec.ref.inBytes} of head ${id}`);
      for (const w of rec.ref.writable) allowed.push(w);
      this.inflight.delete(id);
      this.completions.push({ id, len, entropyAt: rec.entropyAt, ref: rec.ref });
    }
    this.usedSeen = ramIdx;
  }

  /** I4: every byte that changed during the call lies in an allowed range. */
  private diffRam(label: string, allowed: [number, number][]): void {
    const CH = 4096;
    const bad: string[] = [];
    for (let k = 0; k < this.regions.length; k++) {
      const r = this.regions[k]!;
      const a = this.bufs[k]!;
      const b = this.snapBufs[k]!;
      if (a.equals(b)) continue;
      for (let off = 0; off < r.size; off += CH) {
        const end = Math.min(r.size, off + CH);
        if (a.compare(b, off, end, off, end) === 0) continue;
        for (let i = off; i < end; i++) {
          if (a[i] === b[i]) continue;
          const gpa = r.base + i;
          let ok = false;
          for (const [s, l] of allowed) if (gpa >= s && gpa < s + l) { ok = true; break; }
          if (!ok) {
            if (r.readonly) bad.push(`ROM byte 0x${gpa.toString(16)} changed`);
            else bad.push(`0x${gpa.toString(16)}: 0x${b[i]!.toString(16)} -> 0x${a[i]!.toString(16)}`);
            if (bad.length >= 8) break;
          }
        }
        if (bad.length >= 8) break;
      }
    }
    if (bad.length) this.violations.push(`I4: ${label} changed guest memory outside the used ring and completed writable buffers: ${bad.join(', ')}`);
  }

  // -------------------------------------------------------------------------------------------
  // Hooks into the device

  private onTrace(e: TraceEvent): void {
    const ring = this.traceRing;
    ring.push(e);
    if (ring.length > 48) ring.splice(0, 16);
    const c = this.cur;
    switch (e.type) {
      case 'virtqueue_flush':
        c.flushed += e.count;
        this.pendingFlushed += e.count;
        break;
      case 'virtio_notify': c.notifies++; break;
      case 'virtio_notify_suppressed': c.suppressed++; break;
      case 'virtio_notify_config': c.configNotifies++; break;
      case 'virtio_error': c.errors++; break;
      default: break;
    }
  }

  /** Wrap the queue's `pop` to check each popped element against independent bookkeeping. */
  private hookPop(q: VirtQueue): void {
    const orig = q.pop.bind(q);
    q.pop = () => {
      const r0 = this.stats.reads;
      const e = orig();
      const dr = this.stats.reads - r0;
      const perChain = 6 * ((this.negotiated() & INDIRECT) !== 0n ? 1026 : Math.max(q.num, this.geom?.num ?? 0) + 1) + 16;
      if (dr > perChain) this.violations.push(`I2: one pop made ${dr} guest-RAM reads (budget ${perChain})`);
      if (e) this.onPop(q, e);
      return e;
    };
  }

  private onPop(q: VirtQueue, e: VirtQueueElement): void {
    const v = this.violations;
    this.cur.pops++;
    this.totalPops++;
    if (!this.inCall) v.push('I6: pop outside any checked call');
    if (e.generation !== q.generation) v.push(`I6: popped element of generation ${e.generation} in generation ${q.generation}`);
    const g = this.geometry();
    if (!g) {
      v.push(`I6: head ${e.index} popped with no ring set up`);
      return;
    }
    this.drainUsed('pop');
    const expectHead = this.peek.u16(g.avail + 4 + 2 * (this.consumed % g.num));
    this.consumed = (this.consumed + 1) & 0xffff;
    if (e.index !== expectHead) v.push(`I6: popped head ${e.index}, avail ring slot names ${expectHead}`);
    const ref = refWalk(this.mem, g.desc, g.num, e.index, (this.negotiated() & INDIRECT) !== 0n);
    if (!ref.ok) v.push(`I6: device accepted head ${e.index} which the reference walker rejects (${ref.error})`);
    const sgOk =
      e.outNum === ref.readable.length &&
      e.inNum === ref.writable.length &&
      e.outBytes === ref.outBytes &&
      e.inBytes === ref.inBytes &&
      [...ref.readable, ...ref.writable].every(([a, l], i) => e.sgAddr[i] === a && e.sgLen[i] === l);
    if (ref.ok && !sgOk) v.push(`I6: head ${e.index}: the element's scatter list differs from the chain in RAM`);
    if (this.inflight.has(e.index)) v.push(`I6: head ${e.index} popped while already in flight`);
    this.inflight.set(e.index, { head: e.index, ref, entropyAt: this.entropyCount });
    if (this.inflight.size > g.num) v.push(`I6: ${this.inflight.size} heads in flight on a ring of ${g.num}`);
  }
}

/** Run `fn` for the modern (v2) and legacy (v1) transport. */
export const MODES = [
  { legacy: false, name: 'v2' },
  { legacy: true, name: 'v1' },
] as const;
