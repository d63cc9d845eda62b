import { gpaFromHiLo, INVALID_GPA, type GuestMemory, type GuestWriteHook, type RamRegion } from '../memory/guest-memory.js';
import type { Tracer } from '../trace/trace.js';
import {
  packedDescAvail,
  packedNeedEvent,
  VIRTIO_NO_VECTOR,
  VIRTIO_PCI_VRING_ALIGN,
  VIRTQUEUE_MAX_SIZE,
  VRING_AVAIL_F_NO_INTERRUPT,
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_DESC_SIZE,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
  VRING_PACKED_EVENT_FLAG_DESC,
  VRING_PACKED_EVENT_FLAG_DISABLE,
  VRING_PACKED_EVENT_FLAG_ENABLE,
  VRING_PACKED_EVENT_SIZE,
  VRING_USED_F_NO_NOTIFY,
  vringNeedEvent,
} from './constants.js';
import { VirtQueueElement } from './element.js';
import { alignUp, availRingSize, AVAIL_ALIGN, DESC_ALIGN, isPowerOfTwo, PACKED_EVENT_ALIGN, usedRingSize, USED_ALIGN } from './layout.js';

/** What a queue needs from the device that owns it. */
export interface VirtQueueOwner {
  readonly memory: GuestMemory;
  /** Name used in traces. */
  readonly name: string;
  readonly tracer: Tracer | undefined;
  /** QEMU's `virtio_device_disabled()`: broken, or disabled by the transport. */
  readonly processingStopped: boolean;
  /** QEMU's `virtio_error()`: mark the device broken. */
  virtioError(message: string): void;
}

export type VirtQueueHandler = (vq: VirtQueue) => void;

/** Largest total length of one chain (VIRTIO 1.2 §2.7.5.2: the sum must fit in 32 bits). */
const MAX_CHAIN_BYTES = 0xffff_ffff;
const EMPTY_VIEW: DataView<ArrayBufferLike> = new DataView(new ArrayBuffer(0));
/** Packed rings: pops remembered for `rewind` (a power of two ≥ the largest queue). */
const POP_HISTORY = VIRTQUEUE_MAX_SIZE;

/**
 * What a packed queue needs beyond the split state, made once when a queue first goes packed:
 * completions between fill and flush (QEMU's `used_elems`) and the ids of recent pops (for
 * `rewind`). Fixed-size, so the hot path allocates nothing. Elements are kept by buffer id, as
 * split elements are by head: ids are below the queue size.
 */
class PackedScratch {
  readonly pendId = new Uint16Array(VIRTQUEUE_MAX_SIZE);
  readonly pendLen = new Uint32Array(VIRTQUEUE_MAX_SIZE);
  readonly pendNdescs = new Uint16Array(VIRTQUEUE_MAX_SIZE);
  readonly popIds = new Uint16Array(POP_HISTORY);
  popCount = 0;
}

/**
 * A split virtqueue, seen from the device (QEMU's VirtQueue; VIRTIO 1.2 §2.7).
 *
 * The device owns `usedIdx`: it is never read back from guest memory, so a driver scribbling on
 * the used ring cannot confuse it. Descriptors are read once into locals and checked before use.
 * The ring parts are resolved to RAM views once, when their addresses are set; the hot path then
 * uses those views and never searches the memory map for ring accesses. Each entry point
 * (pop, push, fill, flush, the notification calls) first compares the memory's epoch with the
 * views' and takes the regions' new views when RAM moved (a growable buffer grew).
 */
export class VirtQueue {
  /** Current queue size; 0 means the queue does not exist. */
  num: number;
  /** The size the device offers, restored by reset (QEMU's `num_default`; migrated by `virtio/ringsize`). */
  numDefault: number;
  /** Legacy layout alignment (QEMU's `vring.align`), set by transports with variable alignment. */
  align = VIRTIO_PCI_VRING_ALIGN;
  /** Guest-physical addresses of the three parts; 0 when not set. */
  desc = 0;
  avail = 0;
  used = 0;

  lastAvailIdx = 0;
  /** Last avail.idx value read from the guest. */
  shadowAvailIdx = 0;
  /** The device's own used index. */
  usedIdx = 0;
  signalledUsed = 0;
  signalledUsedValid = false;
  /** Whether the device wants available-buffer notifications (`virtio_queue_set_notification`). */
  notification = true;
  /** Elements popped and not yet returned. */
  inuse = 0;
  /** MSI-X vector (transport state, kept here as QEMU does). */
  vector = VIRTIO_NO_VECTOR;
  /** Bumped by every reset; completions of elements from an older generation are dropped. */
  generation = 0;

  /**
   * VIRTIO_F_RING_PACKED negotiated (VIRTIO 1.2 §2.8): `desc` is then the descriptor ring, `avail`
   * the driver event suppression area and `used` the device's (QEMU keeps the same names), and
   * `lastAvailIdx`/`usedIdx` are ring positions below `num`, each with a wrap counter.
   */
  packed = false;
  lastAvailWrapCounter = true;
  shadowAvailWrapCounter = true;
  usedWrapCounter = true;

  // Negotiated-feature flags the hot path needs, set by the device (`applyFeatures`).
  eventIdx = false;
  indirectDesc = false;
  notifyOnEmpty = false;
  /** Ring byte order: true for VERSION_1 and little-endian legacy guests. */
  le = true;

  handleOutput: VirtQueueHandler | undefined;

  /** The owner's memory (kept here: one load less on every entry point). */
  private readonly mem: GuestMemory;
  // Resolved ring views: valid only while `mapped` is true, and only for `viewEpoch`.
  private mapped = false;
  private viewEpoch = 0;
  private descRegion: RamRegion | undefined;
  private availRegion: RamRegion | undefined;
  private usedRegion: RamRegion | undefined;
  private descView = EMPTY_VIEW;
  private descOff = 0;
  private availView = EMPTY_VIEW;
  private availOff = 0;
  private usedView = EMPTY_VIEW;
  private usedOff = 0;
  private numMask = -1;

  /** One reusable element per head; replaced wholesale on reset so stale holders keep theirs. */
  private pool: (VirtQueueElement | undefined)[] = [];
  /** Head popped at each avail position (mod 1024 ≥ num), so `rewind` knows what it returns. */
  private readonly poppedHeads = new Uint16Array(VIRTQUEUE_MAX_SIZE);
  /** Scratch element for measuring chains without popping them (`availInBytes`). */
  private measure: VirtQueueElement | undefined;
  /** Packed-ring bookkeeping, made when the queue first goes packed. */
  private pk: PackedScratch | undefined;

  constructor(
    readonly owner: VirtQueueOwner,
    readonly index: number,
    numDefault: number,
    handler?: VirtQueueHandler,
  ) {
    if (!Number.isInteger(numDefault) || numDefault < 1 || numDefault > VIRTQUEUE_MAX_SIZE) {
      throw new RangeError(`queue size ${numDefault} must be 1..${VIRTQUEUE_MAX_SIZE}`);
    }
    this.num = numDefault;
    this.numDefault = numDefault;
    this.handleOutput = handler;
    this.mem = owner.memory;
  }

  /**
   * The entry check: when guest RAM moved since the ring views were taken, take the regions'
   * current ones (the regions themselves and the offsets in them do not change).
   */
  private syncViews(): void {
    if (this.mem.sync() !== this.viewEpoch) this.retakeViews();
  }

  private retakeViews(): void {
    this.viewEpoch = this.mem.epoch;
    if (!this.mapped) return;
    this.descView = this.descRegion!.view;
    this.availView = this.availRegion!.view;
    this.usedView = this.usedRegion!.view;
  }

  /** True once the rings are mapped and the device may process the queue. */
  get isMapped(): boolean {
    return this.mapped;
  }

  /** QEMU's `virtio_queue_ready()`: the avail ring address is set. */
  get ready(): boolean {
    return this.avail !== 0;
  }

  // ---------------------------------------------------------------------------------------
  // Configuration by the transport

  /**
   * QEMU's `virtio_queue_set_num`: a write may not flip the queue between existing and not
   * existing, nor exceed VIRTQUEUE_MAX_SIZE; such writes are ignored. Returns whether it applied.
   * Non-power-of-two sizes are stored (QEMU does) and refused when the rings are mapped.
   */
  setNum(num: number): boolean {
    if (!Number.isInteger(num) || num < 0 || num > VIRTQUEUE_MAX_SIZE || (num === 0) !== (this.num === 0)) return false;
    if (num === this.num) return true;
    this.num = num;
    // The ring views were validated for the old size: drop them, or a larger size would index
    // past what was checked. Every transport sets the ring addresses right after (legacy
    // updateRings, modern QueueReady), which maps and checks the new geometry; checking the new
    // size against the old addresses now would report errors QEMU never sees (its set_num only
    // stores the size).
    if (this.mapped) this.unmap();
    return true;
  }

  /** Legacy alignment for transports with variable alignment; 0 is ignored (QEMU). */
  setAlign(align: number): void {
    if (align === 0) return;
    this.align = align >>> 0;
    this.updateRings();
  }

  /** Legacy: set the ring area base and derive the rest (QEMU's `virtio_queue_set_addr`). */
  setLegacyAddr(desc: number): void {
    if (this.num === 0) return;
    this.desc = desc;
    this.updateRings();
  }

  /**
   * Legacy layout (QEMU's `virtio_queue_update_rings`), but with the used ring placed as the spec
   * and Linux place it: after `used_event`. Does nothing while size, base or alignment is 0.
   */
  updateRings(): void {
    if (this.num === 0 || this.desc === 0 || this.align === 0) {
      this.unmap();
      return;
    }
    if (!isPowerOfTwo(this.align)) {
      this.unmap();
      this.guestError(`queue ${this.index}: alignment ${this.align} is not a power of two; ring not mapped`);
      return;
    }
    this.avail = this.desc + VRING_DESC_SIZE * this.num;
    this.used = alignUp(this.avail + availRingSize(this.num, true), this.align);
    this.mapRings();
  }

  /** Modern: set the three addresses (QEMU's `virtio_queue_set_rings`). */
  setRings(desc: number, avail: number, used: number): void {
    if (this.num === 0) return;
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    this.mapRings();
  }

  /** Refresh the feature-dependent flags; remaps when EVENT_IDX or the ring format changes the ring sizes. */
  applyFeatures(eventIdx: boolean, indirectDesc: boolean, notifyOnEmpty: boolean, le: boolean, packed = false): void {
    const remap = eventIdx !== this.eventIdx || le !== this.le || packed !== this.packed;
    this.eventIdx = eventIdx;
    this.indirectDesc = indirectDesc;
    this.notifyOnEmpty = notifyOnEmpty;
    this.le = le;
    if (packed !== this.packed) {
      // Both formats keep elements by the id the used side reports (head or buffer id), so
      // elements in flight (a load restores them before the features) stay where they are.
      this.packed = packed;
      if (packed) this.pk ??= new PackedScratch();
      if (this.pk) this.pk.popCount = 0;
    }
    if (remap && this.desc !== 0 && this.num !== 0) this.mapRings();
  }

  /**
   * QEMU's `virtio_init_region_cache`: resolve the three parts to RAM. A part outside RAM (or
   * a used ring in ROM), a misaligned part, or a size that is not a power of two is the
   * driver's error: the device is marked broken and the queue stays unmapped.
   */
  mapRings(): void {
    this.unmap();
    const num = this.num;
    if (num === 0 || this.desc === 0) return;
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'virtqueue_set_rings', device: this.owner.name, queue: this.index, num, desc: this.desc, avail: this.avail, used: this.used });
    if (this.packed) return this.mapPackedRings();
    if (!isPowerOfTwo(num)) {
      this.owner.virtioError(`VQ ${this.index}: size ${num} is not a power of two`);
      return;
    }
    if (this.desc % DESC_ALIGN !== 0 || this.avail % AVAIL_ALIGN !== 0 || this.used % USED_ALIGN !== 0) {
      this.owner.virtioError(`VQ ${this.index}: misaligned ring (desc 0x${this.desc.toString(16)}, avail 0x${this.avail.toString(16)}, used 0x${this.used.toString(16)})`);
      return;
    }
    const mem = this.owner.memory;
    const d = mem.findRegion(this.desc, VRING_DESC_SIZE * num);
    if (!d) return this.owner.virtioError(`Cannot map desc (VQ ${this.index})`);
    const a = mem.findRegion(this.avail, availRingSize(num, this.eventIdx));
    if (!a) return this.owner.virtioError(`Cannot map avail (VQ ${this.index})`);
    const u = mem.findRegion(this.used, usedRingSize(num, this.eventIdx));
    if (!u || u.readonly) return this.owner.virtioError(`Cannot map used (VQ ${this.index})`);
    this.descRegion = d;
    this.descView = d.view;
    this.descOff = this.desc - d.base;
    this.availRegion = a;
    this.availView = a.view;
    this.availOff = this.avail - a.base;
    this.usedRegion = u;
    this.usedView = u.view;
    this.usedOff = this.used - u.base;
    this.viewEpoch = mem.epoch;
    this.numMask = num - 1;
    this.mapped = true;
  }

  /**
   * The packed layout (VIRTIO 1.2 §2.8.10): a ring of `num` 16-byte descriptors (any size, not only
   * powers of two) and two 4-byte event suppression areas, the device's writable.
   */
  private mapPackedRings(): void {
    const mem = this.owner.memory;
    if (this.desc % DESC_ALIGN !== 0 || this.avail % PACKED_EVENT_ALIGN !== 0 || this.used % PACKED_EVENT_ALIGN !== 0) {
      this.owner.virtioError(`VQ ${this.index}: misaligned ring (desc 0x${this.desc.toString(16)}, driver area 0x${this.avail.toString(16)}, device area 0x${this.used.toString(16)})`);
      return;
    }
    const d = mem.findRegion(this.desc, VRING_DESC_SIZE * this.num);
    // The device writes used descriptors into the descriptor ring itself.
    if (!d || d.readonly) return this.owner.virtioError(`Cannot map desc (VQ ${this.index})`);
    const u = mem.findRegion(this.used, VRING_PACKED_EVENT_SIZE);
    if (!u || u.readonly) return this.owner.virtioError(`Cannot map used (VQ ${this.index})`);
    const a = mem.findRegion(this.avail, VRING_PACKED_EVENT_SIZE);
    if (!a) return this.owner.virtioError(`Cannot map avail (VQ ${this.index})`);
    this.descRegion = d;
    this.descView = d.view;
    this.descOff = this.desc - d.base;
    this.availRegion = a;
    this.availView = a.view;
    this.availOff = this.avail - a.base;
    this.usedRegion = u;
    this.usedView = u.view;
    this.usedOff = this.used - u.base;
    this.viewEpoch = mem.epoch;
    this.numMask = -1;
    this.mapped = true;
  }

  private unmap(): void {
    this.mapped = false;
    this.descView = this.availView = this.usedView = EMPTY_VIEW;
    this.descRegion = this.availRegion = this.usedRegion = undefined;
  }

  /** QEMU's `__virtio_queue_reset`. Alignment survives, as in QEMU. */
  reset(): void {
    this.desc = this.avail = this.used = 0;
    this.lastAvailIdx = this.shadowAvailIdx = this.usedIdx = 0;
    this.lastAvailWrapCounter = this.shadowAvailWrapCounter = this.usedWrapCounter = true;
    this.vector = VIRTIO_NO_VECTOR;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notification = true;
    this.num = this.numDefault;
    this.inuse = 0;
    this.generation++;
    // Elements held across the reset are stale: their buffers may already be reused by the
    // guest, so they must not be read or written any more (VirtQueueElement.copy checks). What
    // the device wrote into them before is reported now, as nothing will return them.
    const hook = this.mem.onWrite;
    for (const e of this.pool) {
      if (!e?.inFlight) continue;
      if (hook !== undefined) noteInBuffers(hook, e, e.inBytes);
      e.inFlight = false;
    }
    this.dropPool();
    this.unmap();
  }

  /** Replace the element pool: elements still held elsewhere keep theirs (and are stale). */
  private dropPool(): void {
    this.pool = [];
    if (this.pk) this.pk.popCount = 0;
  }

  // ---------------------------------------------------------------------------------------
  // Migration (QEMU's virtio_load, in the steps it restores a queue)

  /**
   * First step of a load: the geometry and index from the stream, rings not mapped yet (the
   * features that decide their byte order and sizes come later). Elements in flight before the
   * load become stale, as after a reset.
   */
  restoreState(num: number, align: number | undefined, desc: number, avail: number, used: number, lastAvailIdx: number): void {
    this.unmap();
    this.generation++;
    for (const e of this.pool) if (e) e.inFlight = false;
    this.dropPool();
    this.num = num;
    if (align !== undefined) this.align = align;
    this.desc = desc;
    this.avail = avail;
    this.used = used;
    this.lastAvailIdx = this.shadowAvailIdx = lastAvailIdx;
    this.lastAvailWrapCounter = this.shadowAvailWrapCounter = this.usedWrapCounter = true;
    this.usedIdx = 0;
    this.inuse = 0;
    this.signalledUsed = 0;
    this.signalledUsedValid = false;
    this.notification = true;
  }

  /**
   * Migration: re-create an element the device had popped and not returned (QEMU's
   * `qemu_get_virtqueue_element` + `virtqueue_map`), in flight under head `index`, with its
   * readable entries first. The caller has checked every entry against guest RAM. Returns it, or
   * undefined when `index` is not a head of this queue or is already in flight.
   */
  restoreElement(index: number, out: readonly [number, number][], inn: readonly [number, number][], ndescs: number): VirtQueueElement | undefined {
    if (!Number.isInteger(index) || index < 0 || index >= this.num) return undefined;
    const held = this.pool[index];
    if (held?.inFlight) return undefined;
    const elem = held ?? this.newElement(index);
    elem.generation = this.generation;
    const n = out.length + inn.length;
    elem.ensureCapacity(n);
    let outBytes = 0;
    let inBytes = 0;
    out.forEach(([a, l], i) => {
      elem.sgAddr[i] = a;
      elem.sgLen[i] = l;
      outBytes += l;
    });
    inn.forEach(([a, l], i) => {
      elem.sgAddr[out.length + i] = a;
      elem.sgLen[out.length + i] = l;
      inBytes += l;
    });
    elem.index = index;
    elem.outNum = out.length;
    elem.inNum = inn.length;
    elem.outBytes = outBytes;
    elem.inBytes = inBytes;
    elem.ndescs = ndescs;
    elem.inFlight = true;
    return elem;
  }

  /**
   * Last step of a load: map the rings (legacy: derive avail and used from desc and the
   * alignment) and take the indices the loader computed from guest RAM.
   */
  restoreRings(legacy: boolean, usedIdx: number, shadowAvailIdx: number, inuse: number): void {
    if (this.desc === 0) return;
    if (legacy) this.updateRings();
    else this.mapRings();
    this.usedIdx = usedIdx & 0xffff;
    this.shadowAvailIdx = shadowAvailIdx & 0xffff;
    this.inuse = inuse;
  }

  /**
   * Last step of a packed load (`virtio/packed_virtqueues`; the loader checked the positions
   * against the queue size): the ring positions with their wrap counters, mapped as modern rings.
   */
  restorePackedRings(lastAvailIdx: number, lastAvailWrap: boolean, usedIdx: number, usedWrap: boolean, inuse: number): void {
    this.lastAvailIdx = this.shadowAvailIdx = lastAvailIdx;
    this.lastAvailWrapCounter = this.shadowAvailWrapCounter = lastAvailWrap;
    this.usedIdx = usedIdx;
    this.usedWrapCounter = usedWrap;
    this.inuse = inuse;
    if (this.desc !== 0) this.mapRings();
  }

  // ---------------------------------------------------------------------------------------
  // Ring field access (all through the resolved views)

  /** avail.idx as the guest last wrote it (0 when unmapped). */
  readAvailIdx(): number {
    if (!this.mapped || this.packed) return 0;
    this.syncViews();
    return this.availView.getUint16(this.availOff + 2, this.le);
  }
  readAvailFlags(): number {
    if (!this.mapped || this.packed) return 0;
    this.syncViews();
    return this.availView.getUint16(this.availOff, this.le);
  }
  /** used_event, at the end of the avail ring. */
  readUsedEvent(): number {
    if (!this.mapped || this.packed) return 0;
    this.syncViews();
    return this.availView.getUint16(this.availOff + 4 + 2 * this.num, this.le);
  }
  private writeAvailEvent(v: number): void {
    const o = this.usedOff + 4 + 8 * this.num;
    this.usedView.setUint16(o, v, this.le);
    const hook = this.mem.onWrite;
    if (hook !== undefined) hook(this.used + 4 + 8 * this.num, 2);
  }

  // ---------------------------------------------------------------------------------------
  // Device-side operations

  /** QEMU's `virtio_queue_empty`. */
  isEmpty(): boolean {
    if (!this.mapped || this.owner.processingStopped) return true;
    if (this.packed) return !this.packedNextAvail();
    if (this.shadowAvailIdx !== this.lastAvailIdx) return false;
    this.syncViews();
    const idx = this.readAvailIdx();
    if (idx === this.lastAvailIdx) return true;
    // The shadow index is trusted by pop, so it only ever takes a validated value.
    if (((idx - this.lastAvailIdx) & 0xffff) > this.num) {
      this.owner.virtioError(`Guest moved used index from ${this.lastAvailIdx} to ${idx}`);
      return true;
    }
    this.shadowAvailIdx = idx;
    return false;
  }

  /**
   * Heads the guest made available, as the ring says, without any check or side effect (0 when
   * unmapped): for a device that must tell an empty ring from a full one while it is broken.
   */
  availableHeadsRaw(): number {
    if (this.packed) return this.mapped && this.packedNextAvail() ? 1 : 0;
    return this.mapped ? (this.readAvailIdx() - this.lastAvailIdx) & 0xffff : 0;
  }

  /** Number of heads available now, or -1 after reporting a bogus avail index. */
  availableHeads(): number {
    if (!this.mapped) return 0;
    if (this.packed) return this.packedNextAvail() ? 1 : 0;
    this.syncViews();
    const idx = this.availView.getUint16(this.availOff + 2, this.le);
    const n = (idx - this.lastAvailIdx) & 0xffff;
    if (n > this.num) {
      this.owner.virtioError(`Guest moved used index from ${this.lastAvailIdx} to ${idx}`);
      return -1;
    }
    this.shadowAvailIdx = idx;
    return n;
  }

  /**
   * Take the next available chain (QEMU's `virtqueue_pop`). Returns null when the queue is empty,
   * not mapped, the device is broken, or the chain is malformed (the device is then broken too).
   * The element stays valid until it is pushed or detached, or the queue is reset.
   *
   * `consumeOnError` false leaves a malformed chain's head unconsumed (last_avail_idx and
   * avail_event untouched), for devices that in QEMU measure a chain before popping it
   * (virtio-rng's `virtqueue_get_avail_bytes`): the index then migrates as QEMU's does.
   */
  pop(consumeOnError = true): VirtQueueElement | null {
    if (!this.mapped || this.owner.processingStopped) return null;
    if (this.packed) return this.popPacked();
    if (this.mem.sync() !== this.viewEpoch) this.retakeViews();
    const num = this.num;
    const last = this.lastAvailIdx;
    const le = this.le;
    if (this.shadowAvailIdx === last) {
      const idx = this.availView.getUint16(this.availOff + 2, le);
      if (idx === last) return null;
      // VIRTIO 1.2 §2.7.13.3: the driver never gets more than a ring's worth ahead.
      if (((idx - last) & 0xffff) > num) return this.availIdxError(last, idx);
      this.shadowAvailIdx = idx;
    }
    if (this.inuse >= num) return this.popError('Virtqueue size exceeded');
    const slot = this.numMask >= 0 ? last & this.numMask : last % num;
    const head = this.availView.getUint16(this.availOff + 4 + 2 * slot, le);
    const nextAvail = (last + 1) & 0xffff;
    if (consumeOnError) {
      this.lastAvailIdx = nextAvail;
      if (this.eventIdx && this.notification) this.writeAvailEvent(nextAvail);
    }
    if (head >= num) return this.headError(head, false);
    let elem = this.pool[head];
    if (elem === undefined) {
      elem = this.newElement(head);
    } else if (elem.inFlight) {
      return this.headError(head, true);
    }
    const err = this.readChain(head, elem);
    if (err !== null) return this.popError(err);
    if (!consumeOnError) {
      this.lastAvailIdx = nextAvail;
      if (this.eventIdx && this.notification) this.writeAvailEvent(nextAvail);
    }
    elem.index = head;
    elem.inFlight = true;
    this.poppedHeads[last & (VIRTQUEUE_MAX_SIZE - 1)] = head;
    this.inuse++;
    const tr = this.owner.tracer;
    if (tr !== undefined) this.tracePop(tr, elem);
    return elem;
  }

  /**
   * Device-writable bytes in the chains available now, without popping them (QEMU's
   * `virtqueue_get_avail_bytes` with `max_out_bytes` 0): chains are measured in ring order until
   * `maxIn` bytes are reached, so the answer is exact below `maxIn` and at least `maxIn` above it.
   * A malformed chain or a bogus index breaks the device (as QEMU's walk does) and gives 0. The
   * walk visits at most `num` chains, each bounded as in `pop`.
   */
  availInBytes(maxIn: number): number {
    if (!this.mapped || this.owner.processingStopped) return 0;
    this.syncViews();
    if (this.packed) return this.packedAvailInBytes(maxIn);
    const heads = this.availableHeads();
    if (heads <= 0) return 0;
    const elem = (this.measure ??= new VirtQueueElement(this.owner.memory));
    let total = 0;
    for (let k = 0; k < heads; k++) {
      const pos = (this.lastAvailIdx + k) & 0xffff;
      const slot = this.numMask >= 0 ? pos & this.numMask : pos % this.num;
      const head = this.availView.getUint16(this.availOff + 4 + 2 * slot, this.le);
      if (head >= this.num) return this.headError(head, false) ?? 0;
      const err = this.readChain(head, elem);
      if (err !== null) return this.popError(err) ?? 0;
      total += elem.inBytes;
      if (total >= maxIn) break;
    }
    return total;
  }

  // Cold paths of pop, kept out of it so that it stays small enough to be inlined.
  private popError(message: string): null {
    this.owner.virtioError(message);
    return null;
  }
  private availIdxError(last: number, idx: number): null {
    return this.popError(`Guest moved used index from ${last} to ${idx}`);
  }
  private headError(head: number, inUse: boolean): null {
    return this.popError(inUse ? `VQ ${this.index}: head ${head} made available again while in use` : `Guest says index ${head} is available`);
  }
  private newElement(head: number): VirtQueueElement {
    const elem = new VirtQueueElement(this.owner.memory);
    elem.generation = this.generation;
    this.pool[head] = elem;
    return elem;
  }
  private tracePop(tr: Tracer, elem: VirtQueueElement, packed?: { slot: number; wrap: boolean; ndescs: number }): void {
    tr({ type: 'virtqueue_pop', device: this.owner.name, queue: this.index, head: elem.index, outNum: elem.outNum, inNum: elem.inNum, outBytes: elem.outBytes, inBytes: elem.inBytes, ...(packed ? { packed } : {}) });
  }

  /**
   * Walk the chain starting at `head` into `elem`. Returns null on success or the error message.
   * Every descriptor is read once into locals; the walk visits at most `num` descriptors of the
   * table and at most the table's length inside an indirect table, and the element holds at most
   * VIRTQUEUE_MAX_SIZE descriptors, so both work and memory are bounded. The caller has synced
   * the memory, so regions are looked up without a check each.
   */
  private readChain(head: number, elem: VirtQueueElement): string | null {
    // Module constants copied to locals: the loop then does not reload them on every turn.
    const F_NEXT = VRING_DESC_F_NEXT;
    const F_WRITE = VRING_DESC_F_WRITE;
    const F_INDIRECT = VRING_DESC_F_INDIRECT;
    const maxDescs = VIRTQUEUE_MAX_SIZE + 1;
    const maxBytes = MAX_CHAIN_BYTES;
    const mem = this.owner.memory;
    const le = this.le;
    let view = this.descView;
    let base = this.descOff;
    let max = this.num;
    let i = head;
    // Descriptors walked before the current table: `ndescs - tableStart` is the walk in it.
    let tableStart = 0;
    let inTable = false;
    let outNum = 0;
    let inNum = 0;
    let outBytes = 0;
    let inBytes = 0;
    let ndescs = 0;
    let sawWrite = false;
    let sgAddr = elem.sgAddr;
    let sgLen = elem.sgLen;
    for (;;) {
      const o = base + i * VRING_DESC_SIZE;
      // Each field is read once, with the byte order a constant in each branch.
      let alo: number, ahi: number, len: number, flags: number, next: number;
      if (le) {
        alo = view.getUint32(o, true);
        ahi = view.getUint32(o + 4, true);
        len = view.getUint32(o + 8, true);
        flags = view.getUint16(o + 12, true);
        next = view.getUint16(o + 14, true);
      } else {
        ahi = view.getUint32(o, false);
        alo = view.getUint32(o + 4, false);
        len = view.getUint32(o + 8, false);
        flags = view.getUint16(o + 12, false);
        next = view.getUint16(o + 14, false);
      }
      // The high half is almost always 0: skip the 64-bit assembly then.
      const addr = ahi === 0 ? alo : gpaFromHiLo(alo, ahi);
      ndescs++;
      if (ndescs - tableStart > max) return 'Looped descriptor';
      // QEMU maps at most VIRTQUEUE_MAX_SIZE buffers per element; the indirect pointer is extra.
      if (ndescs > maxDescs) return 'virtio: too many descriptors in one element';
      if (flags & F_INDIRECT) {
        // VIRTIO 1.2 §2.7.5.3: zero or more direct descriptors may lead to one indirect table;
        // the WRITE flag on the indirect descriptor itself is ignored.
        if (!this.indirectDesc) return 'Indirect descriptor used without VIRTIO_F_INDIRECT_DESC';
        if (inTable) return 'Nested indirect descriptor';
        if (flags & F_NEXT) return 'Indirect descriptor with NEXT set';
        // len is a uint32, so `len & 15` is `len % VRING_DESC_SIZE` and `len >>> 4` the entry count.
        if (len === 0 || (len & (VRING_DESC_SIZE - 1)) !== 0) return `Invalid size for indirect buffer table (${len})`;
        const r = addr === INVALID_GPA ? undefined : mem.regionAt(addr, len);
        if (!r) return 'Cannot map indirect buffer';
        view = r.view;
        base = addr - r.base;
        max = len >>> 4;
        i = 0;
        tableStart = ndescs;
        inTable = true;
        continue;
      }
      if (len !== 0) {
        if (flags & F_WRITE) {
          const r = mem.regionAt(addr, len);
          if (r === undefined || r.readonly) return 'virtio: bogus descriptor or out of resources';
          sawWrite = true;
          inBytes += len;
          inNum++;
        } else {
          if (sawWrite) return 'Incorrect order for descriptors';
          if (mem.regionAt(addr, len) === undefined) return 'virtio: bogus descriptor or out of resources';
          outBytes += len;
          outNum++;
        }
        if (outBytes + inBytes > maxBytes) return 'Descriptor chain longer than 2^32-1 bytes';
        const k = outNum + inNum - 1;
        if (k >= sgLen.length) {
          elem.ensureCapacity(k + 1);
          sgAddr = elem.sgAddr;
          sgLen = elem.sgLen;
        }
        sgAddr[k] = addr;
        sgLen[k] = len;
      } else if (flags & F_WRITE) {
        // Zero-length buffers carry nothing: they are walked (and counted) but not mapped.
        sawWrite = true;
      } else if (sawWrite) {
        return 'Incorrect order for descriptors';
      }
      if (!(flags & F_NEXT)) break;
      if (next >= max) return `Desc next is ${next}`;
      i = next;
    }
    elem.outNum = outNum;
    elem.inNum = inNum;
    elem.outBytes = outBytes;
    elem.inBytes = inBytes;
    elem.ndescs = ndescs;
    return null;
  }

  /**
   * Write a used element `idx` places after the current used index (QEMU's `virtqueue_fill`).
   * `len` is the number of bytes written into the chain; it is clamped to the chain's writable
   * capacity so a device bug cannot report more than the driver gave.
   */
  fill(elem: VirtQueueElement, len: number, idx = 0): void {
    if (!this.release(elem)) return;
    if (this.packed) this.fillPacked(elem, len, idx, true);
    else this.writeUsed(elem, len, idx, true);
  }

  private writeUsed(elem: VirtQueueElement, len: number, idx: number, clamp: boolean): void {
    if (!this.mapped || this.owner.processingStopped) return;
    this.syncViews();
    const n = clamp && len > elem.inBytes ? elem.inBytes : len > 0 ? len >>> 0 : 0;
    const pos = (this.usedIdx + idx) & 0xffff;
    const slot = this.numMask >= 0 ? pos & this.numMask : pos % this.num;
    const o = this.usedOff + 4 + 8 * slot;
    this.usedView.setUint32(o, elem.index, this.le);
    this.usedView.setUint32(o + 4, n, this.le);
    const hook = this.mem.onWrite;
    if (hook !== undefined) {
      noteInBuffers(hook, elem, n);
      hook(this.used + 4 + 8 * slot, 8);
    }
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'virtqueue_fill', device: this.owner.name, queue: this.index, head: elem.index, len: n, slot });
  }

  /** Publish `count` filled elements (QEMU's `virtqueue_flush`). */
  flush(count: number): void {
    if (this.packed) return this.flushPacked(count);
    if (!this.mapped || this.owner.processingStopped) {
      this.inuse = Math.max(0, this.inuse - count);
      return;
    }
    this.syncViews();
    const old = this.usedIdx;
    const next = (old + count) & 0xffff;
    this.usedView.setUint16(this.usedOff + 2, next, this.le);
    const hook = this.mem.onWrite;
    if (hook !== undefined) hook(this.used + 2, 2);
    this.usedIdx = next;
    this.inuse = Math.max(0, this.inuse - count);
    // As QEMU: if the new index passed the last signalled one, the signalled value is stale.
    if ((((next - this.signalledUsed) << 16) >> 16) < ((next - old) & 0xffff)) this.signalledUsedValid = false;
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'virtqueue_flush', device: this.owner.name, queue: this.index, count, usedIdx: next });
  }

  /**
   * fill + flush one element (QEMU's `virtqueue_push`). Untraced, the two are done in one step
   * with the same checks and ring writes; traced, they run as they are, event for event.
   *
   * `clamp` false reports `len` as given even beyond the chain's writable bytes, for the few
   * places where QEMU reports something else than bytes written (virtio-input's status queue
   * returns the bytes it read), so that the used ring reads as QEMU's.
   */
  push(elem: VirtQueueElement, len: number, clamp = true): void {
    if (!this.release(elem)) return;
    if (this.packed) {
      this.pushPacked(elem, len, clamp);
      return;
    }
    if (this.owner.tracer !== undefined) {
      this.writeUsed(elem, len, 0, clamp);
      this.flush(1);
      return;
    }
    if (!this.mapped || this.owner.processingStopped) {
      this.inuse = Math.max(0, this.inuse - 1);
      return;
    }
    if (this.mem.sync() !== this.viewEpoch) this.retakeViews();
    const le = this.le;
    const view = this.usedView;
    const usedOff = this.usedOff;
    const n = clamp && len > elem.inBytes ? elem.inBytes : len > 0 ? len >>> 0 : 0;
    const old = this.usedIdx;
    const slot = this.numMask >= 0 ? old & this.numMask : old % this.num;
    const o = usedOff + 4 + 8 * slot;
    view.setUint32(o, elem.index, le);
    view.setUint32(o + 4, n, le);
    const next = (old + 1) & 0xffff;
    view.setUint16(usedOff + 2, next, le);
    this.usedIdx = next;
    this.inuse = Math.max(0, this.inuse - 1);
    // As flush: if the new index passed the last signalled one, the signalled value is stale.
    if ((((next - this.signalledUsed) << 16) >> 16) < ((next - old) & 0xffff)) this.signalledUsedValid = false;
    const hook = this.mem.onWrite;
    if (hook !== undefined) this.notePush(hook, elem, n, slot);
  }

  /** The writes of one push: the element's buffers up to `n`, its used entry, the index. */
  private notePush(hook: GuestWriteHook, elem: VirtQueueElement, n: number, slot: number): void {
    noteInBuffers(hook, elem, n);
    hook(this.used + 4 + 8 * slot, 8);
    hook(this.used + 2, 2);
  }

  /**
   * Return every available chain with length 0 without walking it (QEMU's
   * `virtqueue_split_drop_all`, which virtio-net uses for transmit while the link is down): only
   * the head is read and checked. Stops at an empty queue, a full in-use count, or a bad head
   * (which breaks the device, as QEMU's `virtqueue_get_head` does). Returns how many it returned;
   * at most `num` per call, so the work is bounded.
   */
  dropAll(): number {
    if (this.packed) return this.dropAllPacked();
    let dropped = 0;
    while (!this.isEmpty() && this.inuse < this.num) {
      const last = this.lastAvailIdx;
      const slot = this.numMask >= 0 ? last & this.numMask : last % this.num;
      const head = this.availView.getUint16(this.availOff + 4 + 2 * slot, this.le);
      if (head >= this.num) {
        this.headError(head, false);
        break;
      }
      this.lastAvailIdx = (last + 1) & 0xffff;
      if (this.eventIdx && this.notification) this.writeAvailEvent(this.lastAvailIdx);
      // Published at once with length 0, as QEMU pushes its unmapped element.
      const old = this.usedIdx;
      const uslot = this.numMask >= 0 ? old & this.numMask : old % this.num;
      const o = this.usedOff + 4 + 8 * uslot;
      this.usedView.setUint32(o, head, this.le);
      this.usedView.setUint32(o + 4, 0, this.le);
      const next = (old + 1) & 0xffff;
      this.usedView.setUint16(this.usedOff + 2, next, this.le);
      this.usedIdx = next;
      if ((((next - this.signalledUsed) << 16) >> 16) < ((next - old) & 0xffff)) this.signalledUsedValid = false;
      const tr = this.owner.tracer;
      if (tr) tr({ type: 'virtqueue_fill', device: this.owner.name, queue: this.index, head, len: 0, slot: uslot });
      dropped++;
    }
    return dropped;
  }

  /** Give up an element without returning it to the driver (QEMU's `virtqueue_detach_element`). */
  detach(elem: VirtQueueElement): void {
    if (!this.release(elem)) return;
    this.inuse = Math.max(0, this.inuse - (this.packed ? elem.ndescs : 1));
    // Whatever the device wrote into it stays in guest RAM (conservatively: all of it).
    const hook = this.mem.onWrite;
    if (hook !== undefined) noteInBuffers(hook, elem, elem.inBytes);
  }

  /** Put an element back so the next pop returns it again (QEMU's `virtqueue_unpop`). */
  unpop(elem: VirtQueueElement): void {
    if (!this.release(elem)) return;
    if (this.packed) {
      // Back by the chain's slots (QEMU goes back one slot, wrong for a chain of several).
      this.retreatAvail(elem.ndescs);
      this.inuse = Math.max(0, this.inuse - elem.ndescs);
      if (this.pk!.popCount > 0) this.pk!.popCount--;
      return;
    }
    this.lastAvailIdx = (this.lastAvailIdx - 1) & 0xffff;
    this.inuse = Math.max(0, this.inuse - 1);
  }

  /** Un-pop the last `n` elements (QEMU's `virtqueue_rewind`); false if fewer are in use. */
  rewind(n: number): boolean {
    if (n > this.inuse) return false;
    if (this.packed) return this.rewindPacked(n);
    for (let k = 1; k <= n; k++) {
      const e = this.pool[this.poppedHeads[(this.lastAvailIdx - k) & (VIRTQUEUE_MAX_SIZE - 1)]!];
      if (e) e.inFlight = false;
    }
    this.lastAvailIdx = (this.lastAvailIdx - n) & 0xffff;
    this.inuse -= n;
    return true;
  }

  /** Mark an element no longer in flight; false (and a trace) if it is stale or not in flight. */
  private release(elem: VirtQueueElement): boolean {
    if (elem.generation !== this.generation || !elem.inFlight || this.pool[elem.index] !== elem) {
      this.dropStale(elem);
      return false;
    }
    elem.inFlight = false;
    return true;
  }

  private dropStale(elem: VirtQueueElement): void {
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'virtqueue_stale_element', device: this.owner.name, queue: this.index, head: elem.index });
  }

  /**
   * QEMU's `virtio_queue_set_notification`: ask for (or suppress) available-buffer
   * notifications, through avail_event with EVENT_IDX or the used.flags NO_NOTIFY bit without.
   */
  setNotification(enable: boolean): void {
    this.notification = enable;
    if (!this.mapped) return;
    this.syncViews();
    if (this.packed) return this.setPackedNotification(enable);
    if (this.eventIdx) {
      // As QEMU's vring_set_avail_event: only when enabling. Disabling leaves avail_event behind
      // the driver, which is what suppresses its kicks; writing avail.idx would re-arm them.
      if (enable) this.writeAvailEvent(this.readAvailIdx());
    } else {
      const f = this.usedView.getUint16(this.usedOff, this.le);
      this.usedView.setUint16(this.usedOff, enable ? f & ~VRING_USED_F_NO_NOTIFY : f | VRING_USED_F_NO_NOTIFY, this.le);
      const hook = this.mem.onWrite;
      if (hook !== undefined) hook(this.used, 2);
    }
  }

  /**
   * QEMU's `virtio_split_should_notify`: whether the driver wants a used-buffer notification
   * now. Suppression fields are only hints; they never stop completions.
   */
  shouldNotify(): boolean {
    if (!this.mapped) return false;
    if (this.packed) return this.packedShouldNotify();
    if (this.notifyOnEmpty && this.inuse === 0 && this.isEmpty()) return true;
    if (!this.eventIdx) return (this.readAvailFlags() & VRING_AVAIL_F_NO_INTERRUPT) === 0;
    const valid = this.signalledUsedValid;
    this.signalledUsedValid = true;
    const old = this.signalledUsed;
    const now = (this.signalledUsed = this.usedIdx);
    return !valid || vringNeedEvent(this.readUsedEvent(), now, old);
  }

  /** The in-flight elements, for migration and for devices that re-queue after load. */
  inFlightElements(): VirtQueueElement[] {
    return this.pool.filter((e): e is VirtQueueElement => e !== undefined && e.inFlight);
  }

  // ---------------------------------------------------------------------------------------
  // Packed rings (VIRTIO 1.2 §2.8; QEMU's virtqueue_packed_*)

  /** Whether the descriptor at `lastAvailIdx` is available for this lap. */
  private packedNextAvail(): boolean {
    this.syncViews();
    const flags = this.descView.getUint16(this.descOff + this.lastAvailIdx * VRING_DESC_SIZE + 14, this.le);
    return packedDescAvail(flags, this.lastAvailWrapCounter);
  }

  /** Move `lastAvailIdx` on by `n` ring slots, flipping its wrap counter at the end of the ring. */
  private advanceAvail(n: number): void {
    let i = this.lastAvailIdx + n;
    while (i >= this.num) {
      i -= this.num;
      this.lastAvailWrapCounter = !this.lastAvailWrapCounter;
    }
    this.lastAvailIdx = i;
    this.shadowAvailIdx = i;
    this.shadowAvailWrapCounter = this.lastAvailWrapCounter;
  }

  /** Move `lastAvailIdx` back by `n` slots (QEMU's `virtqueue_packed_rewind`). */
  private retreatAvail(n: number): void {
    let i = this.lastAvailIdx - n;
    while (i < 0) {
      i += this.num;
      this.lastAvailWrapCounter = !this.lastAvailWrapCounter;
    }
    this.lastAvailIdx = i;
    this.shadowAvailIdx = i;
    this.shadowAvailWrapCounter = this.lastAvailWrapCounter;
  }

  /**
   * QEMU's `virtqueue_packed_pop`. Nothing moves when the chain is malformed (the device is then
   * broken), as in QEMU: the position migrates unchanged.
   */
  private popPacked(): VirtQueueElement | null {
    if (!this.packedNextAvail()) return null;
    if (this.inuse >= this.num) return this.popError('Virtqueue size exceeded');
    const pk = this.pk!;
    const num = this.num;
    const start = this.lastAvailIdx;
    // The chain's id is in its last descriptor; the first one's (the same with every driver
    // known) says which element to walk it into. Only when they differ is it walked twice.
    const hint = this.descView.getUint16(this.descOff + start * VRING_DESC_SIZE + 12, true);
    const pool = this.pool;
    let elem = hint < num && pool[hint]?.inFlight !== true ? (pool[hint] ?? this.newElement(hint)) : (this.measure ??= new VirtQueueElement(this.owner.memory));
    let err = this.readPackedChain(start, elem);
    if (err !== null) return this.popError(err);
    const id = elem.index;
    // Ids index the elements, as heads do in split rings: below the queue size, and not in
    // flight twice (VIRTIO 1.2 §2.8.6 gives each buffer in flight its own id).
    if (id >= num) return this.headError(id, false);
    if (elem !== pool[id]) {
      if (pool[id]?.inFlight) return this.headError(id, true);
      elem = pool[id] ?? this.newElement(id);
      err = this.readPackedChain(start, elem);
      if (err !== null) return this.popError(err);
    }
    elem.inFlight = true;
    this.inuse += elem.ndescs;
    const wrap = this.lastAvailWrapCounter;
    this.advanceAvail(elem.ndescs);
    pk.popIds[pk.popCount & (POP_HISTORY - 1)] = id;
    pk.popCount++;
    const tr = this.owner.tracer;
    if (tr !== undefined) this.tracePop(tr, elem, { slot: start, wrap, ndescs: elem.ndescs });
    return elem;
  }

  /**
   * Walk the packed chain whose first descriptor is at ring slot `start` into `elem` (index: the
   * buffer id; ndescs: ring slots taken). Returns null or the error message. A chain follows NEXT
   * through consecutive slots, wrapping at the end of the ring, at most `num` of them; an indirect
   * chain is one slot whose table's entries are taken in order (only WRITE counts in them, as the
   * spec says and QEMU does). The buffers themselves are checked as a split chain's are, by the
   * same lines as in `readChain`: kept inline in both walks, where a shared helper would cost a
   * call and a state object per descriptor on the hottest path.
   */
  private readPackedChain(start: number, elem: VirtQueueElement): string | null {
    const F_NEXT = VRING_DESC_F_NEXT;
    const F_WRITE = VRING_DESC_F_WRITE;
    const mem = this.owner.memory;
    // Packed rings exist only with VERSION_1, so they are always little-endian.
    const le = true;
    const num = this.num;
    let view = this.descView;
    let base = this.descOff;
    let max = num;
    let i = start;
    let o = base + i * VRING_DESC_SIZE;
    let addr = readGpaLe(view, o);
    let len = view.getUint32(o + 8, le);
    let id = view.getUint16(o + 12, le);
    let flags = view.getUint16(o + 14, le);
    let indirect = false;
    if (flags & VRING_DESC_F_INDIRECT) {
      if (!this.indirectDesc) return 'Indirect descriptor used without VIRTIO_F_INDIRECT_DESC';
      // VIRTIO 1.2 §2.8.19: an indirect descriptor stands alone (QEMU ignores NEXT on it).
      if (flags & F_NEXT) return 'Indirect descriptor with NEXT set';
      if (len === 0 || (len & (VRING_DESC_SIZE - 1)) !== 0) return `Invalid size for indirect buffer table (${len})`;
      const r = addr === INVALID_GPA ? undefined : mem.regionAt(addr, len);
      if (!r) return 'Cannot map indirect buffer';
      view = r.view;
      base = addr - r.base;
      max = len >>> 4;
      i = 0;
      indirect = true;
      o = base;
      addr = readGpaLe(view, o);
      len = view.getUint32(o + 8, le);
      flags = view.getUint16(o + 14, le);
    }
    let outNum = 0;
    let inNum = 0;
    let outBytes = 0;
    let inBytes = 0;
    let entries = 0;
    let sawWrite = false;
    let sgAddr = elem.sgAddr;
    let sgLen = elem.sgLen;
    for (;;) {
      if (++entries > max) return 'Looped descriptor';
      if (entries > VIRTQUEUE_MAX_SIZE) return 'virtio: too many descriptors in one element';
      if (len !== 0) {
        if (flags & F_WRITE) {
          const r = mem.regionAt(addr, len);
          if (r === undefined || r.readonly) return 'virtio: bogus descriptor or out of resources';
          sawWrite = true;
          inBytes += len;
          inNum++;
        } else {
          if (sawWrite) return 'Incorrect order for descriptors';
          if (mem.regionAt(addr, len) === undefined) return 'virtio: bogus descriptor or out of resources';
          outBytes += len;
          outNum++;
        }
        if (outBytes + inBytes > MAX_CHAIN_BYTES) return 'Descriptor chain longer than 2^32-1 bytes';
        const k = outNum + inNum - 1;
        if (k >= sgLen.length) {
          elem.ensureCapacity(k + 1);
          sgAddr = elem.sgAddr;
          sgLen = elem.sgLen;
        }
        sgAddr[k] = addr;
        sgLen[k] = len;
      } else if (flags & F_WRITE) {
        sawWrite = true;
      } else if (sawWrite) {
        return 'Incorrect order for descriptors';
      }
      if (indirect) {
        if (++i === max) break;
      } else {
        if (!(flags & F_NEXT)) break;
        if (++i === num) i = 0;
      }
      o = base + i * VRING_DESC_SIZE;
      addr = readGpaLe(view, o);
      len = view.getUint32(o + 8, le);
      flags = view.getUint16(o + 14, le);
      if (!indirect) {
        // An indirect descriptor inside a chain is the driver's error (§2.8.19; QEMU reads it
        // as a buffer). The spec puts the buffer id in the chain's last descriptor.
        if (flags & VRING_DESC_F_INDIRECT) return 'Indirect descriptor in a descriptor chain';
        id = view.getUint16(o + 12, le);
      }
    }
    elem.index = id;
    elem.outNum = outNum;
    elem.inNum = inNum;
    elem.outBytes = outBytes;
    elem.inBytes = inBytes;
    elem.ndescs = indirect ? 1 : entries;
    return null;
  }

  /**
   * `availInBytes` on a packed ring (QEMU's `virtqueue_packed_get_avail_bytes`): chains in ring
   * order from `lastAvailIdx`, at most one lap. When the walk reaches the end of what is
   * available, the shadow position moves there, as QEMU's does (it is where EVENT_IDX asks for
   * the next kick).
   */
  private packedAvailInBytes(maxIn: number): number {
    const elem = (this.measure ??= new VirtQueueElement(this.owner.memory));
    const num = this.num;
    let idx = this.lastAvailIdx;
    let wrap = this.lastAvailWrapCounter;
    let total = 0;
    for (let walked = 0; walked < num; walked += elem.ndescs) {
      const flags = this.descView.getUint16(this.descOff + idx * VRING_DESC_SIZE + 14, this.le);
      if (!packedDescAvail(flags, wrap)) break;
      const err = this.readPackedChain(idx, elem);
      if (err !== null) return this.popError(err) ?? 0;
      total += elem.inBytes;
      if (total >= maxIn) return total;
      idx += elem.ndescs;
      if (idx >= num) {
        idx -= num;
        wrap = !wrap;
      }
    }
    this.shadowAvailIdx = idx;
    this.shadowAvailWrapCounter = wrap;
    return total;
  }

  /**
   * QEMU's `virtqueue_packed_fill`: remember the completion; `flushPacked` writes it. The
   * device-writable bytes are reported to the write hook now, as the split fill does.
   */
  private fillPacked(elem: VirtQueueElement, len: number, idx: number, clamp: boolean): void {
    if (!(idx >= 0 && idx < VIRTQUEUE_MAX_SIZE)) return;
    const pk = this.pk!;
    const n = clamp && len > elem.inBytes ? elem.inBytes : len > 0 ? len >>> 0 : 0;
    pk.pendId[idx] = elem.index;
    pk.pendLen[idx] = n;
    pk.pendNdescs[idx] = elem.ndescs;
    if (!this.mapped || this.owner.processingStopped) return;
    const hook = this.mem.onWrite;
    if (hook !== undefined) noteInBuffers(hook, elem, n);
    const tr = this.owner.tracer;
    if (tr) {
      // Where flush will write it: after the slots of the completions filled before it.
      let pos = this.usedIdx;
      let wrap = this.usedWrapCounter;
      for (let k = 0; k < idx; k++) pos += pk.pendNdescs[k]!;
      while (pos >= this.num) {
        pos -= this.num;
        wrap = !wrap;
      }
      tr({ type: 'virtqueue_fill', device: this.owner.name, queue: this.index, head: elem.index, len: n, slot: pos, packed: { wrap } });
    }
  }

  /**
   * QEMU's `virtqueue_packed_flush`: each completion becomes a used descriptor at the device's
   * position, which then skips as many slots as the chain took. The first one's flags are
   * written last, so the driver sees the whole batch at once.
   */
  private flushPacked(count: number): void {
    const pk = this.pk!;
    const n = Math.min(Math.max(count, 0), VIRTQUEUE_MAX_SIZE);
    let ndescs = 0;
    for (let k = 0; k < n; k++) ndescs += pk.pendNdescs[k]!;
    if (!this.mapped || this.owner.processingStopped) {
      this.inuse = Math.max(0, this.inuse - ndescs);
      return;
    }
    this.syncViews();
    let at = n > 0 ? pk.pendNdescs[0]! : 0;
    for (let k = 1; k < n; k++) {
      this.writeUsedPacked(pk.pendId[k]!, pk.pendLen[k]!, at);
      at += pk.pendNdescs[k]!;
    }
    if (n > 0) this.writeUsedPacked(pk.pendId[0]!, pk.pendLen[0]!, 0);
    this.inuse = Math.max(0, this.inuse - ndescs);
    let u = this.usedIdx + ndescs;
    while (u >= this.num) {
      u -= this.num;
      this.usedWrapCounter = !this.usedWrapCounter;
      this.signalledUsedValid = false;
    }
    this.usedIdx = u;
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'virtqueue_flush', device: this.owner.name, queue: this.index, count: n, usedIdx: u, packed: { wrap: this.usedWrapCounter, slots: ndescs } });
  }

  /**
   * fill + flush of one element on a packed ring. Untraced it is done in one step (same writes,
   * same order: id and length, then the flags); traced, as the two calls, event for event.
   */
  private pushPacked(elem: VirtQueueElement, len: number, clamp: boolean): void {
    if (this.owner.tracer !== undefined || !this.mapped || this.owner.processingStopped) {
      this.fillPacked(elem, len, 0, clamp);
      this.flushPacked(1);
      return;
    }
    if (this.mem.sync() !== this.viewEpoch) this.retakeViews();
    const n = clamp && len > elem.inBytes ? elem.inBytes : len > 0 ? len >>> 0 : 0;
    const hook = this.mem.onWrite;
    if (hook !== undefined) noteInBuffers(hook, elem, n);
    this.writeUsedPacked(elem.index, n, 0);
    const ndescs = elem.ndescs;
    this.inuse = Math.max(0, this.inuse - ndescs);
    let u = this.usedIdx + ndescs;
    if (u >= this.num) {
      u -= this.num;
      this.usedWrapCounter = !this.usedWrapCounter;
      this.signalledUsedValid = false;
    }
    this.usedIdx = u;
  }

  /** One used descriptor `offset` slots after the device's position (QEMU's `virtqueue_packed_fill_desc`). */
  private writeUsedPacked(id: number, len: number, offset: number): void {
    let pos = this.usedIdx + offset;
    let wrap = this.usedWrapCounter;
    while (pos >= this.num) {
      pos -= this.num;
      wrap = !wrap;
    }
    const o = this.descOff + pos * VRING_DESC_SIZE;
    const view = this.descView;
    view.setUint16(o + 12, id, true);
    view.setUint32(o + 8, len, true);
    // Used: AVAIL and USED both equal to the device's wrap counter; QEMU sets no other flag.
    view.setUint16(o + 14, wrap ? VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED : 0, true);
    const hook = this.mem.onWrite;
    if (hook !== undefined) hook(this.desc + pos * VRING_DESC_SIZE + 8, 8);
  }

  /** Un-pop the last `n` chains, each by the slots it took. */
  private rewindPacked(n: number): boolean {
    const pk = this.pk!;
    if (n > pk.popCount || n > POP_HISTORY) return false;
    let slots = 0;
    for (let k = 1; k <= n; k++) {
      const e = this.pool[pk.popIds[(pk.popCount - k) & (POP_HISTORY - 1)]!];
      // Only elements still in flight can be taken back.
      if (!e?.inFlight) return false;
    }
    for (let k = 1; k <= n; k++) {
      const e = this.pool[pk.popIds[(pk.popCount - k) & (POP_HISTORY - 1)]!]!;
      e.inFlight = false;
      slots += e.ndescs;
    }
    pk.popCount -= n;
    this.retreatAvail(slots);
    this.inuse = Math.max(0, this.inuse - slots);
    return true;
  }

  /**
   * QEMU's `virtqueue_packed_drop_all`: notifications off, then every available chain returned
   * with length 0 without mapping it (only the flags are walked). At most one lap of slots per
   * call, as no driver can have more available; QEMU has no bound (row 79).
   */
  private dropAllPacked(): number {
    this.setNotification(false);
    let dropped = 0;
    let slots = 0;
    while (slots < this.num && this.mapped && !this.owner.processingStopped && this.inuse < this.num && this.packedNextAvail()) {
      const view = this.descView;
      let i = this.lastAvailIdx;
      let o = this.descOff + i * VRING_DESC_SIZE;
      let id = view.getUint16(o + 12, this.le);
      let ndescs = 1;
      while (view.getUint16(o + 14, this.le) & VRING_DESC_F_NEXT && slots + ndescs < this.num) {
        if (++i === this.num) i = 0;
        o = this.descOff + i * VRING_DESC_SIZE;
        id = view.getUint16(o + 12, this.le);
        ndescs++;
      }
      const usedAt = this.usedIdx;
      const usedWrap = this.usedWrapCounter;
      this.writeUsedPacked(id, 0, 0);
      let u = this.usedIdx + ndescs;
      while (u >= this.num) {
        u -= this.num;
        this.usedWrapCounter = !this.usedWrapCounter;
        this.signalledUsedValid = false;
      }
      this.usedIdx = u;
      this.advanceAvail(ndescs);
      slots += ndescs;
      const tr = this.owner.tracer;
      if (tr) tr({ type: 'virtqueue_fill', device: this.owner.name, queue: this.index, head: id, len: 0, slot: usedAt, packed: { wrap: usedWrap } });
      dropped++;
    }
    return dropped;
  }

  /**
   * QEMU's `virtio_queue_packed_set_notification`: the device event area says DISABLE, ENABLE,
   * or with EVENT_IDX "notify when you reach here" (the shadow position and its wrap counter).
   */
  private setPackedNotification(enable: boolean): void {
    const view = this.usedView;
    const o = this.usedOff;
    let flags: number;
    if (!enable) {
      flags = VRING_PACKED_EVENT_FLAG_DISABLE;
    } else if (this.eventIdx) {
      view.setUint16(o, this.shadowAvailIdx | (this.shadowAvailWrapCounter ? 0x8000 : 0), this.le);
      flags = VRING_PACKED_EVENT_FLAG_DESC;
    } else {
      flags = VRING_PACKED_EVENT_FLAG_ENABLE;
    }
    view.setUint16(o + 2, flags, this.le);
    const hook = this.mem.onWrite;
    if (hook !== undefined) hook(this.used, VRING_PACKED_EVENT_SIZE);
  }

  /**
   * QEMU's `virtio_packed_should_notify`: the driver event area decides (DISABLE, ENABLE, else
   * its off_wrap with EVENT_IDX arithmetic). notify_on_empty plays no part in packed rings.
   */
  private packedShouldNotify(): boolean {
    this.syncViews();
    const flags = this.availView.getUint16(this.availOff + 2, this.le);
    const offWrap = this.availView.getUint16(this.availOff, this.le);
    const old = this.signalledUsed;
    const now = (this.signalledUsed = this.usedIdx);
    const valid = this.signalledUsedValid;
    this.signalledUsedValid = true;
    if (flags === VRING_PACKED_EVENT_FLAG_DISABLE) return false;
    // DESC needs EVENT_IDX; without it, and for the reserved value 3, notify as with ENABLE
    // (QEMU goes by off_wrap in both cases): suppression is a hint, an interrupt too many is safe.
    if (flags !== VRING_PACKED_EVENT_FLAG_DESC || !this.eventIdx) return true;
    return !valid || packedNeedEvent(this.num, this.usedWrapCounter, offWrap, now, old);
  }

  private guestError(message: string): void {
    const tr = this.owner.tracer;
    if (tr) tr({ type: 'guest_error', device: this.owner.name, message });
  }
}

/**
 * Report the first `n` device-writable bytes of `elem` to `hook`, one call per run of
 * contiguous buffers (what a used length says the device wrote, as QEMU's `virtqueue_unmap_sg`
 * marks it dirty).
 */
function noteInBuffers(hook: GuestWriteHook, elem: VirtQueueElement, n: number): void {
  const sgAddr = elem.sgAddr;
  const sgLen = elem.sgLen;
  const end = elem.outNum + elem.inNum;
  let left = n;
  let runAddr = 0;
  let runLen = 0;
  for (let i = elem.outNum; i < end && left > 0; i++) {
    const a = sgAddr[i]!;
    const l = Math.min(sgLen[i]!, left);
    left -= l;
    if (runLen > 0 && runAddr + runLen === a) {
      runLen += l;
      continue;
    }
    if (runLen > 0) hook(runAddr, runLen);
    runAddr = a;
    runLen = l;
  }
  if (runLen > 0) hook(runAddr, runLen);
}

/** A descriptor's le64 address (INVALID_GPA beyond 2^53). */
function readGpaLe(view: DataView<ArrayBufferLike>, o: number): number {
  const lo = view.getUint32(o, true);
  const hi = view.getUint32(o + 4, true);
  return hi === 0 ? lo : gpaFromHiLo(lo, hi);
}

/** Convenience for transports: a guest address from two 32-bit register halves. */
export { gpaFromHiLo };
