/**
 * virtio-blk, the block device (VIRTIO 1.2 §5.2), as QEMU 7.2 offers it (`hw/block/virtio-blk.c`):
 * the same feature bits and configuration bytes for the same drive and properties, the same
 * answer (status byte, `used.len`, NEEDS_RESET or not) to every request, well-formed or not, and
 * the same migration state (`virtio-blk` version 2: the list of requests in flight).
 *
 * The device reads requests from one or more queues, checks them, and hands byte ranges to a
 * `BlockBackend`. A backend that finishes inside the call (memory) is served straight between
 * guest RAM and the disk, allocating nothing; one that finishes later (files, a latency) may have
 * many requests in flight per queue, completed in whatever order they finish. A completion is
 * written into guest RAM only while its request is still current (no reset since it was popped,
 * device not broken) and the VM is running: a completion that arrives while the VM is stopped
 * waits for it to run again, or for the migration that drains it into guest RAM before the
 * stream is written (as QEMU's `bdrv_drain_all` at `vm_stop`); what is still running at save is
 * written as QEMU's request list and re-submitted by the destination when it starts.
 */
import { VirtIODevice, type DeviceLoadContext, type VirtIODeviceOptions } from '../../virtio/device.js';
import { bit, hasBit, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK } from '../../virtio/constants.js';
import type { VirtQueue } from '../../vring/virtqueue.js';
import type { VirtQueueElement } from '../../vring/element.js';
import { VIRTQUEUE_MAX_SIZE } from '../../vring/constants.js';
import type { QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { loadVirtQueueElement, restoreVirtQueueElement, saveVirtQueueElement, type LoadedElement } from '../../migration/virtqueue-element.js';
import { capacitySectors, isPending, type BlockBackend, type BlockResult } from './backend.js';
import { hdGeometryGuess } from './geometry.js';
import {
  BDRV_REQUEST_MAX_SECTORS,
  BDRV_SECTOR_BITS,
  BDRV_SECTOR_SIZE,
  CFG_BLK_SIZE,
  CFG_CAPACITY,
  CFG_DISCARD_SECTOR_ALIGNMENT,
  CFG_GEOMETRY_CYLINDERS,
  CFG_GEOMETRY_HEADS,
  CFG_GEOMETRY_SECTORS,
  CFG_MAX_DISCARD_SECTORS,
  CFG_MAX_DISCARD_SEG,
  CFG_MAX_WRITE_ZEROES_SECTORS,
  CFG_MAX_WRITE_ZEROES_SEG,
  CFG_MIN_IO_SIZE,
  CFG_NUM_QUEUES,
  CFG_OPT_IO_SIZE,
  CFG_PHYSICAL_BLOCK_EXP,
  CFG_SEG_MAX,
  CFG_WCE,
  CFG_WRITE_ZEROES_MAY_UNMAP,
  VIRTIO_BLK_CFG_SIZE_DISCARD,
  VIRTIO_BLK_CFG_SIZE_MIN,
  VIRTIO_BLK_CFG_SIZE_WRITE_ZEROES,
  VIRTIO_BLK_DWZ_SIZE,
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_GEOMETRY,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SCSI,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_OUTHDR_SIZE,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_BARRIER,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_SCSI_CMD,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
  VIRTIO_SCSI_INHDR_ERRORS_SIZE,
} from './constants.js';

export interface VirtIOBlockOptions extends VirtIODeviceOptions {
  /** Where the disk lives. */
  backend: BlockBackend;
  /** QEMU's `num-queues` (default 1, what `auto` gives a one-vCPU machine). */
  numQueues?: number;
  /** QEMU's `queue-size` (default 256): a power of two, 4..1024. */
  queueSize?: number;
  /** QEMU's `seg-max-adjust` (default true): seg_max is queue-size - 2, else 126. */
  segMaxAdjust?: boolean;
  /** QEMU's `serial`, returned by GET_ID (at most 20 bytes; NUL-terminated when shorter). */
  serial?: string;
  /** QEMU's `logical_block_size` / `physical_block_size` (default 512). */
  logicalBlockSize?: number;
  physicalBlockSize?: number;
  /** QEMU's `min_io_size` / `opt_io_size` in bytes (default 0). */
  minIoSize?: number;
  optIoSize?: number;
  /** QEMU's `discard_granularity` in bytes; undefined (QEMU's -1): the logical block size. */
  discardGranularity?: number;
  /** QEMU's `report-discard-granularity` (default true). */
  reportDiscardGranularity?: boolean;
  /**
   * The drive's write cache at start (and after every reset): QEMU's `write-cache`, or the drive's
   * `cache=` mode when that is `auto` (default true, writeback). Off: every write is followed by a
   * flush before it completes.
   */
  writeCache?: boolean;
  /** QEMU's `config-wce` (default true): VIRTIO_BLK_F_CONFIG_WCE, the driver may switch the cache. */
  configWce?: boolean;
  /** QEMU's `discard` / `write-zeroes` properties (default true): the features and their config fields. */
  discard?: boolean;
  writeZeroes?: boolean;
  /** QEMU's `max-discard-sectors` / `max-write-zeroes-sectors` (default 4194303). */
  maxDiscardSectors?: number;
  maxWriteZeroesSectors?: number;
  /** QEMU's `scsi` (legacy only; SCSI passthrough requests still fail as QEMU's do on a file). */
  scsi?: boolean;
  /** QEMU's `x-enable-wce-if-config-wce` (default true): offer FLUSH whenever CONFIG_WCE is offered. */
  enableWceIfConfigWce?: boolean;
  /** QEMU's `cyls`/`heads`/`secs`; all unset: guessed from the disk as QEMU does. */
  cyls?: number;
  heads?: number;
  secs?: number;
  /**
   * Discard requests reach the backend (QEMU's drive option `discard=unmap`); otherwise they
   * succeed and change nothing, as with QEMU's default `discard=ignore`. Default true.
   */
  unmap?: boolean;
  /** Flushes succeed without reaching the backend (QEMU's `cache=unsafe`, `cache.no-flush=on`). */
  noFlush?: boolean;
}

const DEFAULT_QUEUE_SIZE = 256;
/** Bytes an asynchronous read moves through its bounce buffer at a time. */
const READ_CHUNK = 128 * 1024;
const DISCARD_GRANULARITY_UNSET = 0xffff_ffff;

/** Where a request is in its life. */
const enum Phase {
  /** Not in use. */
  Idle,
  /** Backend operations outstanding. */
  Submitted,
  /** The backend has finished; the completion waits for the VM to run. */
  Parked,
  /** Loaded from a migration stream, waiting for the VM to run to be submitted again. */
  Restored,
}

/** What an asynchronous request does when its outstanding operations are done. */
const enum Next {
  Complete,
  /** A chunked read: copy the chunk into guest RAM and read the next one. */
  ReadChunk,
  /** A write with the write cache off: flush, then complete (QEMU's FUA emulation). */
  Flush,
}

/** One request (QEMU's VirtIOBlockReq). Reused per queue head while nothing holds it. */
class BlkRequest {
  vq!: VirtQueue;
  elem!: VirtQueueElement;
  /** Queue generation at pop: a reset makes the request stale. */
  gen = 0;
  phase = Phase.Idle;
  /** Total device-writable bytes, status included: QEMU's `in_len`, the used length. */
  inLen = 0;
  pending = 0;
  failed = false;
  next = Next.Complete;
  // A chunked asynchronous read.
  readPos = 0;
  readOff = 0;
  readLen = 0;
  chunkLen = 0;
  bounce: Uint8Array | undefined;
  /** Order of submission, for the request list a migration writes. */
  seq = 0;
  /** Views of guest RAM for the data segments, reused while the guest reuses its buffers. */
  readonly views: (Uint8Array | undefined)[] = [];
  readonly viewAddr: number[] = [];
  /** The memory epoch `views` were made in (RAM that moved makes them stale). */
  viewsEpoch = 0;
  readonly onDone: () => void;
  readonly onFail: (e: unknown) => void;

  constructor(readonly dev: VirtIOBlock) {
    this.onDone = () => dev.opDone(this, true);
    this.onFail = (e: unknown) => dev.opDone(this, false, e);
  }

  get current(): boolean {
    return this.elem.inFlight && this.elem.generation === this.vq.generation && this.gen === this.vq.generation;
  }
}

export class VirtIOBlock extends VirtIODevice {
  readonly backend: BlockBackend;
  readonly numQueues: number;
  readonly queueSize: number;
  readonly segMaxAdjust: boolean;
  readonly serial: string | undefined;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly minIoSize: number;
  readonly optIoSize: number;
  readonly discardGranularity: number;
  readonly reportDiscardGranularity: boolean;
  readonly maxDiscardSectors: number;
  readonly maxWriteZeroesSectors: number;
  readonly unmap: boolean;
  readonly noFlush: boolean;
  readonly enableWceIfConfigWce: boolean;
  readonly cyls: number;
  readonly heads: number;
  readonly secs: number;
  /** QEMU's `s->host_features`: the device's own property bits (CONFIG_WCE, DISCARD, WRITE_ZEROES, SCSI). */
  readonly blkHostFeatures: bigint;
  /** The drive's write cache now (QEMU's `blk_enable_write_cache`). */
  writeCacheEnabled: boolean;
  /** ... and as configured, restored by reset (QEMU's `original_wce`). */
  readonly originalWce: boolean;
  /** Capacity in 512-byte sectors. */
  readonly capacity: number;
  /** Low bits of a sector number that must be 0: logical block size / 512 - 1. */
  readonly sectorMask: number;

  /** Requests per queue, by head. */
  private readonly reqs: (BlkRequest | undefined)[][] = [];
  /** Requests with work outstanding or parked, for the migration request list and the drain. */
  private readonly inFlight = new Set<BlkRequest>();
  /** Requests loaded from a stream (QEMU's `s->rq`), head first. */
  private rq: BlkRequest[] = [];
  /** Requests dropped by a reset whose backend operations are still running. */
  private readonly retired = new Set<BlkRequest>();
  /** Queues notified while `retired` was not empty: processed once it is. */
  private readonly heldBack = new Set<number>();
  /** Waiters of `drain()`. */
  private drainWaiters: (() => void)[] = [];
  /** Submission counter (QEMU has none: its list order is its own). */
  private seqCounter = 0;
  private readonly hdr = new Uint8Array(16);
  private readonly hdrView = new DataView(this.hdr.buffer);
  private readonly idBytes: Uint8Array;

  constructor(opts: VirtIOBlockOptions) {
    const discard = opts.discard ?? true;
    const writeZeroes = opts.writeZeroes ?? true;
    const configSize = writeZeroes ? VIRTIO_BLK_CFG_SIZE_WRITE_ZEROES : discard ? VIRTIO_BLK_CFG_SIZE_DISCARD : VIRTIO_BLK_CFG_SIZE_MIN;
    super(VIRTIO_ID_BLOCK, configSize, opts, 'virtio-blk');
    const b = opts.backend;
    this.backend = b;
    this.numQueues = opts.numQueues ?? 1;
    this.queueSize = opts.queueSize ?? DEFAULT_QUEUE_SIZE;
    if (!Number.isInteger(this.numQueues) || this.numQueues < 1 || this.numQueues > 1024) throw new RangeError('num-queues property must be larger than 0');
    if (!Number.isInteger(this.queueSize) || this.queueSize <= 2) throw new RangeError(`invalid queue-size property (${opts.queueSize}), must be > 2`);
    if ((this.queueSize & (this.queueSize - 1)) !== 0 || this.queueSize > VIRTQUEUE_MAX_SIZE) {
      throw new RangeError(`invalid queue-size property (${this.queueSize}), must be a power of 2 (max ${VIRTQUEUE_MAX_SIZE})`);
    }
    this.segMaxAdjust = opts.segMaxAdjust ?? true;
    this.serial = opts.serial;
    this.logicalBlockSize = opts.logicalBlockSize ?? BDRV_SECTOR_SIZE;
    this.physicalBlockSize = opts.physicalBlockSize ?? BDRV_SECTOR_SIZE;
    const blockSize = (v: number, what: string) => {
      if (!Number.isInteger(v) || v < 512 || v > 2 * 1024 * 1024 || (v & (v - 1)) !== 0) throw new RangeError(`${what} ${v} must be a power of two in 512..2097152`);
    };
    blockSize(this.logicalBlockSize, 'logical_block_size');
    blockSize(this.physicalBlockSize, 'physical_block_size');
    this.minIoSize = opts.minIoSize ?? 0;
    this.optIoSize = opts.optIoSize ?? 0;
    this.discardGranularity = opts.discardGranularity ?? DISCARD_GRANULARITY_UNSET;
    this.reportDiscardGranularity = opts.reportDiscardGranularity ?? true;
    // blkconf_blocksizes' checks.
    if (this.logicalBlockSize > this.physicalBlockSize) throw new RangeError('logical_block_size > physical_block_size not supported');
    if (this.minIoSize % this.logicalBlockSize !== 0) throw new RangeError('min_io_size must be a multiple of logical_block_size');
    if (this.minIoSize / this.logicalBlockSize > 0xffff) throw new RangeError('min_io_size must not exceed 65535 logical blocks');
    if (this.optIoSize % this.logicalBlockSize !== 0) throw new RangeError('opt_io_size must be a multiple of logical_block_size');
    if (this.discardGranularity !== DISCARD_GRANULARITY_UNSET && this.discardGranularity % this.logicalBlockSize !== 0) {
      throw new RangeError('discard_granularity must be a multiple of logical_block_size');
    }
    this.maxDiscardSectors = opts.maxDiscardSectors ?? BDRV_REQUEST_MAX_SECTORS;
    this.maxWriteZeroesSectors = opts.maxWriteZeroesSectors ?? BDRV_REQUEST_MAX_SECTORS;
    if (discard && !(this.maxDiscardSectors >= 1 && this.maxDiscardSectors <= BDRV_REQUEST_MAX_SECTORS)) {
      throw new RangeError(`invalid max-discard-sectors property (${this.maxDiscardSectors}), must be between 1 and ${BDRV_REQUEST_MAX_SECTORS}`);
    }
    if (writeZeroes && !(this.maxWriteZeroesSectors >= 1 && this.maxWriteZeroesSectors <= BDRV_REQUEST_MAX_SECTORS)) {
      throw new RangeError(`invalid max-write-zeroes-sectors property (${this.maxWriteZeroesSectors}), must be between 1 and ${BDRV_REQUEST_MAX_SECTORS}`);
    }
    this.unmap = opts.unmap ?? true;
    this.noFlush = opts.noFlush ?? false;
    this.enableWceIfConfigWce = opts.enableWceIfConfigWce ?? true;
    let hf = 0n;
    if (opts.configWce ?? true) hf |= bit(VIRTIO_BLK_F_CONFIG_WCE);
    if (opts.scsi ?? false) hf |= bit(VIRTIO_BLK_F_SCSI);
    if (discard) hf |= bit(VIRTIO_BLK_F_DISCARD);
    if (writeZeroes) hf |= bit(VIRTIO_BLK_F_WRITE_ZEROES);
    this.blkHostFeatures = hf;
    this.originalWce = this.writeCacheEnabled = opts.writeCache ?? true;
    this.capacity = capacitySectors(b.size);
    this.sectorMask = this.logicalBlockSize / BDRV_SECTOR_SIZE - 1;

    // blkconf_geometry: the user's CHS (each 1..65535/255/255) or QEMU's guess.
    if (opts.cyls === undefined && opts.heads === undefined && opts.secs === undefined) {
      let mbr: Uint8Array | undefined = new Uint8Array(512);
      if (!(b.size >= 512 && b.readSync?.(0, mbr))) mbr = undefined;
      const g = hdGeometryGuess(mbr, this.capacity);
      this.cyls = g.cyls;
      this.heads = g.heads;
      this.secs = g.secs;
    } else {
      this.cyls = opts.cyls ?? 0;
      this.heads = opts.heads ?? 0;
      this.secs = opts.secs ?? 0;
      if (this.cyls < 1 || this.cyls > 65535) throw new RangeError('cyls must be between 1 and 65535');
      if (this.heads < 1 || this.heads > 255) throw new RangeError('heads must be between 1 and 255');
      if (this.secs < 1 || this.secs > 255) throw new RangeError('secs must be between 1 and 255');
    }

    const serialBytes = new TextEncoder().encode(this.serial ?? '');
    // NUL-terminated only when shorter than the buffer; never more than 20 bytes.
    this.idBytes = new Uint8Array(Math.min(serialBytes.length + 1, VIRTIO_BLK_ID_BYTES));
    this.idBytes.set(serialBytes.subarray(0, this.idBytes.length));

    for (let i = 0; i < this.numQueues; i++) {
      this.addQueue(this.queueSize, (vq) => this.handleQueue(vq));
      this.reqs.push([]);
    }
  }

  override get vmsdName(): string {
    return 'virtio-blk';
  }
  override get vmsdVersion(): number {
    return 2;
  }

  // ---------------------------------------------------------------------------------------
  // Features, configuration, status (virtio_blk_get_features, _update_config, _set_config,
  // _set_status, _reset)

  protected override getFeatures(features: bigint): bigint {
    let f = features | this.blkHostFeatures;
    f |= bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_GEOMETRY) | bit(VIRTIO_BLK_F_TOPOLOGY) | bit(VIRTIO_BLK_F_BLK_SIZE);
    if (hasBit(f, VIRTIO_F_VERSION_1)) {
      if (hasBit(this.blkHostFeatures, VIRTIO_BLK_F_SCSI)) throw new RangeError('Please set scsi=off for virtio-blk devices in order to use virtio 1.0');
    } else {
      f &= ~bit(VIRTIO_F_ANY_LAYOUT);
      f |= bit(VIRTIO_BLK_F_SCSI);
    }
    if (this.writeCacheEnabled || (this.enableWceIfConfigWce && hasBit(f, VIRTIO_BLK_F_CONFIG_WCE))) f |= bit(VIRTIO_BLK_F_FLUSH);
    if (this.backend.readOnly) f |= bit(VIRTIO_BLK_F_RO);
    if (this.numQueues > 1) f |= bit(VIRTIO_BLK_F_MQ);
    return f;
  }

  protected override getConfig(config: Uint8Array): void {
    const v = new DataView(config.buffer, config.byteOffset, config.byteLength);
    const le = !this.isBigEndian();
    const bs = this.logicalBlockSize;
    config.fill(0);
    v.setUint32(CFG_CAPACITY + (le ? 0 : 4), this.capacity % 0x1_0000_0000, le);
    v.setUint32(CFG_CAPACITY + (le ? 4 : 0), Math.floor(this.capacity / 0x1_0000_0000), le);
    v.setUint32(CFG_SEG_MAX, this.segMaxAdjust ? this.queueSize - 2 : 128 - 2, le);
    v.setUint16(CFG_GEOMETRY_CYLINDERS, this.cyls & 0xffff, le);
    v.setUint32(CFG_BLK_SIZE, bs, le);
    v.setUint16(CFG_MIN_IO_SIZE, (this.minIoSize / bs) & 0xffff, le);
    v.setUint32(CFG_OPT_IO_SIZE, this.optIoSize / bs, le);
    config[CFG_GEOMETRY_HEADS] = this.heads & 0xff;
    // A capacity that is not a whole number of logical blocks per track: QEMU masks the sectors.
    const length = this.capacity * BDRV_SECTOR_SIZE;
    const perTrack = Math.floor(Math.floor(length / this.heads) / this.secs);
    config[CFG_GEOMETRY_SECTORS] = (length > 0 && perTrack % bs !== 0 ? this.secs & ~this.sectorMask : this.secs) & 0xff;
    let exp = 0;
    for (let size = this.physicalBlockSize; size > bs; size >>>= 1) exp++;
    config[CFG_PHYSICAL_BLOCK_EXP] = exp;
    config[CFG_WCE] = this.writeCacheEnabled ? 1 : 0;
    v.setUint16(CFG_NUM_QUEUES, this.numQueues, le);
    if (hasBit(this.blkHostFeatures, VIRTIO_BLK_F_DISCARD)) {
      let g = this.discardGranularity;
      if (g === DISCARD_GRANULARITY_UNSET || !this.reportDiscardGranularity) g = bs;
      v.setUint32(CFG_MAX_DISCARD_SECTORS, this.maxDiscardSectors, le);
      v.setUint32(CFG_DISCARD_SECTOR_ALIGNMENT, g >>> BDRV_SECTOR_BITS, le);
      // One segment per request, as QEMU.
      v.setUint32(CFG_MAX_DISCARD_SEG, 1, le);
    }
    if (hasBit(this.blkHostFeatures, VIRTIO_BLK_F_WRITE_ZEROES) && config.length > CFG_WRITE_ZEROES_MAY_UNMAP) {
      v.setUint32(CFG_MAX_WRITE_ZEROES_SECTORS, this.maxWriteZeroesSectors, le);
      config[CFG_WRITE_ZEROES_MAY_UNMAP] = 1;
      v.setUint32(CFG_MAX_WRITE_ZEROES_SEG, 1, le);
    }
  }

  protected override setConfig(config: Uint8Array): void {
    // QEMU takes the whole buffer and applies only `wce`, whatever field was written.
    this.writeCacheEnabled = config[CFG_WCE] !== 0;
  }

  protected override setStatusHook(status: number): void {
    if (!(status & VIRTIO_CONFIG_S_DRIVER_OK)) return;
    // A driver that cannot switch the cache through the config space gets writeback exactly when
    // it accepted FLUSH (and so will send flushes); otherwise it keeps what it chose.
    if (!this.hasFeature(VIRTIO_BLK_F_CONFIG_WCE)) this.writeCacheEnabled = this.hasFeature(VIRTIO_BLK_F_FLUSH);
  }

  protected override resetDevice(): void {
    // QEMU drains first (blk_drain), then drops the queued requests. We cannot wait here: requests
    // still running in the backend become stale with the queues (their completions write nothing
    // into guest RAM), and until their operations have settled no new request is started, so a
    // write from before the reset can never land on the disk after one from after it.
    this.retire(() => true);
    this.inFlight.clear();
    for (const r of this.rq) r.phase = Phase.Idle;
    this.rq = [];
    for (let i = 0; i < this.reqs.length; i++) this.reqs[i] = [];
    this.writeCacheEnabled = this.originalWce;
  }

  protected override queueResetHook(n: number): void {
    // VIRTIO_F_RING_RESET of one queue: its requests go stale with it (and hold new ones back
    // until their operations settle, as after a device reset).
    this.retire((r) => r.vq.index === n);
    for (const r of [...this.inFlight]) if (r.vq.index === n) this.inFlight.delete(r);
    this.rq = this.rq.filter((r) => r.vq.index !== n);
    if (this.reqs[n]) this.reqs[n] = [];
  }

  /**
   * The VM started or stopped. On start, QEMU's `virtio_vmstate_change` applies the status again
   * (the write cache follows the negotiated features), completions that waited run, and the
   * request list loaded from a migration is submitted again (`virtio_blk_dma_restart_cb`).
   */
  protected override vmStateChangeHook(running: boolean): void {
    if (!running) return;
    if (this.status & VIRTIO_CONFIG_S_DRIVER_OK) this.setStatusHook(this.status);
    this.resumeParked();
    this.restartQueued();
  }

  /**
   * Forget the requests `which` selects: those with backend operations still running are kept in
   * `retired` until they settle (new requests wait for that).
   */
  private retire(which: (r: BlkRequest) => boolean): void {
    for (const r of this.inFlight) {
      if (!which(r)) continue;
      if (r.pending > 0) this.retired.add(r);
      r.phase = Phase.Idle;
    }
  }

  /** A retired request's operations have all settled: maybe start what waited for it. */
  private retiredSettled(r: BlkRequest): void {
    this.retired.delete(r);
    if (this.retired.size > 0) return;
    this.wakeDrainWaiters();
    const waiting = [...this.heldBack];
    this.heldBack.clear();
    for (const i of waiting) {
      if (!this.vmRunning || this.processingStopped) break;
      const vq = this.vq[i];
      if (vq) this.guarded(() => this.handleQueue(vq));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Requests

  /** QEMU's `virtio_blk_handle_vq`: every request available, notifications off meanwhile. */
  private handleQueue(vq: VirtQueue): void {
    if (this.retired.size > 0) {
      // Operations from before a reset are still running: QEMU's reset would have waited for them.
      this.heldBack.add(vq.index);
      return;
    }
    const suppress = vq.notification;
    do {
      if (suppress) vq.setNotification(false);
      for (;;) {
        const elem = vq.pop();
        if (elem === null) break;
        if (!this.handleRequest(vq, elem, undefined)) {
          // virtio_error: the request is dropped without a used entry, processing stops.
          vq.detach(elem);
          break;
        }
      }
      if (suppress) vq.setNotification(true);
    } while (!vq.isEmpty());
  }

  /** The request object for `elem`: the queue's one for its head, unless an older request holds it. */
  private requestFor(vq: VirtQueue, elem: VirtQueueElement): BlkRequest {
    const list = this.reqs[vq.index]!;
    let r = list[elem.index];
    if (r === undefined || r.phase !== Phase.Idle) {
      r = new BlkRequest(this);
      list[elem.index] = r;
    }
    r.vq = vq;
    r.elem = elem;
    r.gen = vq.generation;
    r.failed = false;
    r.pending = 0;
    r.next = Next.Complete;
    return r;
  }

  /**
   * QEMU's `virtio_blk_handle_request`. Returns false after `virtioError` (the caller detaches the
   * element); every other outcome completes the request now or later. `req` is a request loaded
   * from a stream that is being submitted again.
   */
  private handleRequest(vq: VirtQueue, elem: VirtQueueElement, req: BlkRequest | undefined): boolean {
    if (elem.outNum < 1 || elem.inNum < 1) {
      this.virtioError('virtio-blk missing headers');
      return false;
    }
    const hdr = this.hdr;
    // The header is read where it lies when one buffer holds it (each field once, into locals),
    // else gathered from the buffers that do (QEMU's iov_to_buf).
    let hv: DataView<ArrayBufferLike> = this.hdrView;
    let ho = 0;
    const a0 = elem.sgAddr[0]!;
    const reg0 = elem.sgLen[0]! >= VIRTIO_BLK_OUTHDR_SIZE ? this.memory.findRegion(a0, VIRTIO_BLK_OUTHDR_SIZE) : undefined;
    if (reg0 !== undefined) {
      hv = reg0.view;
      ho = a0 - reg0.base;
    } else if (elem.readOut(0, hdr) !== VIRTIO_BLK_OUTHDR_SIZE) {
      this.virtioError('virtio-blk request outhdr too short');
      return false;
    }
    const last = elem.outNum + elem.inNum - 1;
    // Zero-length buffers are never mapped, so the status buffer has at least one byte.
    if (elem.sgLen[last]! < 1) {
      this.virtioError('virtio-blk request inhdr too short');
      return false;
    }
    const r = req ?? this.requestFor(vq, elem);
    r.inLen = elem.inBytes;
    // The queue keeps the device's byte order (virtio_is_big_endian) as a plain flag: asking
    // the features (64-bit BigInt arithmetic) on every request would allocate.
    const le = vq.le;
    const type = hv.getUint32(ho, le);
    const kind = (type & ~(VIRTIO_BLK_T_OUT | VIRTIO_BLK_T_BARRIER)) >>> 0;
    switch (kind) {
      case VIRTIO_BLK_T_IN: {
        const isWrite = (type & VIRTIO_BLK_T_OUT) !== 0;
        const lo = hv.getUint32(ho + (le ? 8 : 12), le);
        const hi = hv.getUint32(ho + (le ? 12 : 8), le);
        const size = isWrite ? elem.outBytes - VIRTIO_BLK_OUTHDR_SIZE : elem.inBytes - 1;
        if (!this.sectRangeOk(hi, lo, size)) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
        // QEMU's block layer refuses a write to a read-only node even of 0 bytes (EPERM).
        if (isWrite && this.backend.readOnly) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
        const pos = (hi * 0x1_0000_0000 + lo) * BDRV_SECTOR_SIZE;
        if (this.tracer) this.trace(`virtio_blk_handle_${isWrite ? 'write' : 'read'} queue ${vq.index} head ${elem.index} sector ${hi * 0x1_0000_0000 + lo} nsectors ${size / BDRV_SECTOR_SIZE}`);
        return isWrite ? this.submitWrite(r, pos) : this.submitRead(r, pos, size);
      }
      case VIRTIO_BLK_T_FLUSH:
        if (this.noFlush) return this.completeNow(r, VIRTIO_BLK_S_OK);
        return this.submit(r, this.backendFlush());
      case VIRTIO_BLK_T_SCSI_CMD: {
        // QEMU needs a command block beside the header and three writable parts (sense, the scsi
        // inhdr, status); it then fails the command (no passthrough of a file), writing 255 into
        // the scsi inhdr's `errors`. We write at most the buffer's length (QEMU writes 4 bytes).
        if (elem.outNum < 2 || elem.inNum < 3) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
        const i = elem.outNum + elem.inNum - 2;
        const n = Math.min(VIRTIO_SCSI_INHDR_ERRORS_SIZE, elem.sgLen[i]!);
        const errors = new Uint8Array(4);
        new DataView(errors.buffer).setUint32(0, 255, le);
        this.memory.write(elem.sgAddr[i]!, errors.subarray(0, n));
        return this.completeNow(r, VIRTIO_BLK_S_UNSUPP);
      }
      case VIRTIO_BLK_T_GET_ID: {
        const size = Math.min(this.idBytes.length, elem.inBytes - 1);
        if (size > 0) elem.writeIn(0, size === this.idBytes.length ? this.idBytes : this.idBytes.subarray(0, size));
        return this.completeNow(r, VIRTIO_BLK_S_OK);
      }
      case VIRTIO_BLK_T_DISCARD & ~VIRTIO_BLK_T_OUT:
      case VIRTIO_BLK_T_WRITE_ZEROES & ~VIRTIO_BLK_T_OUT: {
        const isWriteZeroes = ((type & ~VIRTIO_BLK_T_BARRIER) >>> 0) === VIRTIO_BLK_T_WRITE_ZEROES;
        const outLen = elem.outBytes - VIRTIO_BLK_OUTHDR_SIZE;
        // One segment per request; without the OUT bit the type is not one QEMU knows.
        if (!(type & VIRTIO_BLK_T_OUT) || outLen > VIRTIO_BLK_DWZ_SIZE) return this.completeNow(r, VIRTIO_BLK_S_UNSUPP);
        if (elem.readOut(VIRTIO_BLK_OUTHDR_SIZE, hdr) !== VIRTIO_BLK_DWZ_SIZE) {
          this.virtioError('virtio-blk discard/write_zeroes header too short');
          return false;
        }
        return this.handleDiscardWriteZeroes(r, isWriteZeroes, le);
      }
      default:
        return this.completeNow(r, VIRTIO_BLK_S_UNSUPP);
    }
  }

  /**
   * QEMU's `virtio_blk_sect_range_ok` for a 64-bit sector `hi:lo` and `size` bytes: not more than
   * the block layer takes, aligned to the logical block size, inside the disk.
   */
  private sectRangeOk(hi: number, lo: number, size: number): boolean {
    const nb = Math.floor(size / BDRV_SECTOR_SIZE);
    if (nb > BDRV_REQUEST_MAX_SECTORS) return false;
    if ((lo & this.sectorMask) !== 0) return false;
    if (size % this.logicalBlockSize !== 0) return false;
    // The capacity is far below 2^32 sectors × 2^32: a high word means out of range.
    const total = this.capacity;
    const sector = hi * 0x1_0000_0000 + lo;
    if (hi >= 0x20_0000 || sector > total || nb > total - sector) return false;
    return true;
  }

  /** QEMU's `virtio_blk_handle_discard_write_zeroes`, the segment being in `this.hdr`. */
  private handleDiscardWriteZeroes(r: BlkRequest, isWriteZeroes: boolean, le: boolean): boolean {
    const hv = this.hdrView;
    const lo = hv.getUint32(le ? 0 : 4, le);
    const hi = hv.getUint32(le ? 4 : 0, le);
    const numSectors = hv.getUint32(8, le);
    const flags = hv.getUint32(12, le);
    const max = isWriteZeroes ? this.maxWriteZeroesSectors : this.maxDiscardSectors;
    if (numSectors > max) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
    const bytes = numSectors * BDRV_SECTOR_SIZE;
    if (!this.sectRangeOk(hi, lo, bytes)) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
    if ((flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0) return this.completeNow(r, VIRTIO_BLK_S_UNSUPP);
    const pos = (hi * 0x1_0000_0000 + lo) * BDRV_SECTOR_SIZE;
    const unmapFlag = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0;
    if (isWriteZeroes) {
      if (this.backend.readOnly) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
      const mayUnmap = unmapFlag && this.unmap;
      if (!this.writeCacheEnabled) r.next = Next.Flush;
      return this.submit(r, this.backendWriteZeroes(pos, bytes, mayUnmap));
    }
    // The device MUST answer UNSUPP to a discard with the unmap flag (VIRTIO 1.2 §5.2.6.2).
    if (unmapFlag) return this.completeNow(r, VIRTIO_BLK_S_UNSUPP);
    // QEMU's default `discard=ignore` makes the block layer succeed without doing anything.
    if (!this.unmap) return this.completeNow(r, VIRTIO_BLK_S_OK);
    return this.submit(r, this.backendDiscard(pos, bytes));
  }

  // Backend calls whose synchronous throw becomes a rejected result (no closures: the flush path
  // is a hot one with the write cache off).
  private backendFlush(): BlockResult {
    try {
      return this.backend.flush();
    } catch (e) {
      return Promise.reject(e);
    }
  }
  private backendDiscard(pos: number, len: number): BlockResult {
    try {
      return this.backend.discard(pos, len);
    } catch (e) {
      return Promise.reject(e);
    }
  }
  private backendWriteZeroes(pos: number, len: number, mayUnmap: boolean): BlockResult {
    try {
      return this.backend.writeZeroes(pos, len, mayUnmap);
    } catch (e) {
      return Promise.reject(e);
    }
  }
  private backendRead(pos: number, dst: Uint8Array): BlockResult {
    try {
      return this.backend.read(pos, dst);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Track one backend result on `r`: synchronous ones are settled at once. */
  private track(r: BlkRequest, res: BlockResult): void {
    if (isPending(res)) {
      r.pending++;
      res.then(r.onDone, r.onFail);
    }
  }

  /** A request whose single backend operation is `res`. */
  private submit(r: BlkRequest, res: BlockResult): boolean {
    if (!isPending(res)) {
      if (r.next === Next.Flush) return this.afterWrite(r);
      return this.completeNow(r, VIRTIO_BLK_S_OK);
    }
    this.startAsync(r);
    this.track(r, res);
    return true;
  }

  private startAsync(r: BlkRequest): void {
    r.phase = Phase.Submitted;
    r.seq = this.seqCounter++;
    this.inFlight.add(r);
  }

  /** A write: every data segment after the header goes to the backend. */
  private submitWrite(r: BlkRequest, pos: number): boolean {
    const elem = r.elem;
    const b = this.backend;
    this.syncViews(r);
    // An asynchronous backend holds what it is given until it settles; if guest RAM can move
    // meanwhile (a growable buffer), a view of it could be detached under the backend. It gets
    // a copy then, made now.
    const copy = b.synchronous !== true && this.memory.swappable;
    let skip = VIRTIO_BLK_OUTHDR_SIZE;
    let p = pos;
    let k = 0;
    let async = false;
    let failed = false;
    for (let i = 0; i < elem.outNum; i++) {
      const len = elem.sgLen[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = len - skip;
      const view = this.viewOf(r, k++, elem.sgAddr[i]! + skip, n);
      skip = 0;
      if (view === undefined) {
        failed = true;
        break;
      }
      let res: BlockResult;
      try {
        res = b.write(p, copy ? view.slice() : view);
      } catch {
        failed = true;
        break;
      }
      if (isPending(res)) {
        if (!async) this.startAsync(r);
        async = true;
        this.track(r, res);
      }
      p += n;
    }
    if (!this.writeCacheEnabled) r.next = Next.Flush;
    if (async) {
      if (failed) r.failed = true;
      return true;
    }
    if (failed) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
    if (r.next === Next.Flush) return this.afterWrite(r);
    return this.completeNow(r, VIRTIO_BLK_S_OK);
  }

  /** The write-cache-off flush after a write that finished synchronously. */
  private afterWrite(r: BlkRequest): boolean {
    r.next = Next.Complete;
    if (this.noFlush) return this.completeNow(r, VIRTIO_BLK_S_OK);
    const res = this.backendFlush();
    if (!isPending(res)) return this.completeNow(r, VIRTIO_BLK_S_OK);
    this.startAsync(r);
    this.track(r, res);
    return true;
  }

  /** A read: synchronous backends fill guest RAM directly; others go through a bounce buffer. */
  private submitRead(r: BlkRequest, pos: number, size: number): boolean {
    const elem = r.elem;
    const b = this.backend;
    if (b.synchronous === true) {
      this.syncViews(r);
      let p = pos;
      let left = size;
      let k = 0;
      for (let i = elem.outNum; left > 0; i++) {
        const n = Math.min(elem.sgLen[i]!, left);
        const view = this.viewOf(r, k++, elem.sgAddr[i]!, n);
        if (view === undefined) return this.completeNow(r, VIRTIO_BLK_S_IOERR);
        try {
          b.read(p, view);
        } catch {
          return this.completeNow(r, VIRTIO_BLK_S_IOERR);
        }
        p += n;
        left -= n;
      }
      return this.completeNow(r, VIRTIO_BLK_S_OK);
    }
    r.readPos = pos;
    r.readOff = 0;
    r.readLen = size;
    this.startAsync(r);
    if (size === 0) {
      // Nothing to read; the backend is not asked, as QEMU's zero-length preadv.
      r.next = Next.Complete;
      this.finish(r);
      return true;
    }
    this.readChunk(r);
    return true;
  }

  /**
   * Read chunks into the request's bounce buffer until one is still running. A chunk the backend
   * finishes inside the call is copied at once (a loop, not recursion, however many chunks).
   */
  private readChunk(r: BlkRequest): void {
    for (;;) {
      const n = Math.min(READ_CHUNK, r.readLen - r.readOff);
      if (r.bounce === undefined || r.bounce.length < n) r.bounce = new Uint8Array(Math.min(READ_CHUNK, r.readLen));
      const dst = r.bounce.length === n ? r.bounce : r.bounce.subarray(0, n);
      dst.fill(0);
      r.chunkLen = n;
      r.next = Next.ReadChunk;
      const res = this.backendRead(r.readPos + r.readOff, dst);
      if (isPending(res)) {
        this.track(r, res);
        return;
      }
      if (!this.settled(r)) return;
      if (!this.copyChunk(r)) return;
    }
  }

  /**
   * Copy the chunk just read into guest RAM. Returns true when the read has more chunks to do;
   * otherwise the request is completed (or failed) here.
   */
  private copyChunk(r: BlkRequest): boolean {
    const n = r.chunkLen;
    const bounce = r.bounce!;
    const written = r.elem.writeIn(r.readOff, n === bounce.length ? bounce : bounce.subarray(0, n));
    if (written !== n) {
      this.complete(r, VIRTIO_BLK_S_IOERR);
      return false;
    }
    r.readOff += n;
    if (r.readOff < r.readLen) {
      r.phase = Phase.Submitted;
      return true;
    }
    this.complete(r, VIRTIO_BLK_S_OK);
    return false;
  }

  /** @internal A backend operation of `r` settled (called by the request's promise callbacks). */
  opDone(r: BlkRequest, ok: boolean, err?: unknown): void {
    if (!ok) {
      r.failed = true;
      this.trace(`backend error: ${err instanceof Error ? err.message : String(err)}`);
    }
    if (--r.pending > 0) return;
    if (this.retired.has(r)) {
      this.retiredSettled(r);
      return;
    }
    if (r.phase !== Phase.Submitted) return; // forgotten
    this.finish(r);
    if (this.drainWaiters.length > 0 && !this.busy()) this.wakeDrainWaiters();
  }

  /** Some backend operation is running (for this device's requests, current or retired). */
  private busy(): boolean {
    if (this.retired.size > 0) return true;
    for (const r of this.inFlight) if (r.pending > 0) return true;
    return false;
  }

  private wakeDrainWaiters(): void {
    if (this.busy()) return;
    const w = this.drainWaiters;
    this.drainWaiters = [];
    for (const f of w) f();
  }

  /** Every outstanding operation of `r` is done: next step, or the completion. */
  private finish(r: BlkRequest): void {
    if (this.settled(r)) this.step(r);
  }

  /**
   * May `r` go on now that its operations settled? Not when it is stale (reset since it was
   * popped) or the device is broken or disabled: its completion writes nothing, not even the
   * status byte. Not while the VM is stopped: it waits (parked).
   */
  private settled(r: BlkRequest): boolean {
    if (!r.current || this.processingStopped) {
      this.forget(r);
      // A stale element is only traced; a broken device's queue just counts it out.
      r.vq.push(r.elem, 0);
      return false;
    }
    if (!this.vmRunning) {
      r.phase = Phase.Parked;
      return false;
    }
    return true;
  }

  /** The VM runs and `r` is current: carry on with it. */
  private step(r: BlkRequest): void {
    if (r.failed) {
      this.complete(r, VIRTIO_BLK_S_IOERR);
      return;
    }
    switch (r.next) {
      case Next.ReadChunk:
        if (this.copyChunk(r)) this.readChunk(r);
        return;
      case Next.Flush: {
        r.next = Next.Complete;
        if (this.noFlush) {
          this.complete(r, VIRTIO_BLK_S_OK);
          return;
        }
        r.phase = Phase.Submitted;
        const res = this.backendFlush();
        if (isPending(res)) this.track(r, res);
        else this.complete(r, VIRTIO_BLK_S_OK);
        return;
      }
      case Next.Complete:
        this.complete(r, VIRTIO_BLK_S_OK);
        return;
    }
  }

  private forget(r: BlkRequest): void {
    r.phase = Phase.Idle;
    this.inFlight.delete(r);
  }

  /** Complete a request that never went asynchronous. Returns true (for `handleRequest`). */
  private completeNow(r: BlkRequest, status: number): boolean {
    this.inFlight.delete(r);
    this.writeCompletion(r, status);
    return true;
  }

  /** Complete an asynchronous request whose work is done (the VM runs, it is current). */
  private complete(r: BlkRequest, status: number): void {
    this.forget(r);
    this.writeCompletion(r, status);
  }

  /**
   * QEMU's `virtio_blk_req_complete`: the status byte, the used entry with `in_len`, the
   * notification. A broken or disabled device writes no status byte (QEMU does, then drops the
   * used entry): nothing at all reaches guest RAM.
   */
  private writeCompletion(r: BlkRequest, status: number): void {
    r.phase = Phase.Idle;
    const elem = r.elem;
    const vq = r.vq;
    if (!this.processingStopped && elem.inFlight) {
      // The last writable byte of the chain (checked writable RAM at pop).
      const last = elem.outNum + elem.inNum - 1;
      const a = elem.sgAddr[last]! + elem.sgLen[last]! - 1;
      const reg = this.memory.findRegion(a, 1);
      if (reg !== undefined && !reg.readonly) reg.bytes[a - reg.base] = status;
    }
    if (this.tracer) this.trace(`virtio_blk_req_complete queue ${vq.index} head ${elem.index} status ${status}`);
    vq.push(elem, r.inLen);
    this.notify(vq);
  }

  /** Drop `r`'s cached views if guest RAM moved since they were made. */
  private syncViews(r: BlkRequest): void {
    const epoch = this.memory.sync();
    if (r.viewsEpoch !== epoch) {
      r.views.fill(undefined);
      r.viewsEpoch = epoch;
    }
  }

  /** A view of guest RAM for data segment `k` of `r` (cached while the guest reuses the buffer). */
  private viewOf(r: BlkRequest, k: number, addr: number, len: number): Uint8Array | undefined {
    const v = r.views[k];
    // The memory map never changes under a device: the same range is the same bytes (while the
    // epoch stays: `syncViews` dropped views of RAM that moved).
    if (v !== undefined && r.viewAddr[k] === addr && v.length === len) return v;
    const fresh = this.memory.view(addr, len);
    r.views[k] = fresh;
    r.viewAddr[k] = addr;
    return fresh;
  }

  private trace(message: string): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'device', device: this.name, message });
  }

  // ---------------------------------------------------------------------------------------
  // Run state, drain, restart

  /** Completions that arrived while the VM was stopped. */
  private resumeParked(): void {
    for (const r of [...this.inFlight]) {
      if (!this.vmRunning) return;
      if (r.phase === Phase.Parked) {
        r.phase = Phase.Submitted;
        this.finish(r);
      }
    }
  }

  /**
   * QEMU's `virtio_blk_process_queued_requests`: submit the requests a migration stream carried.
   * A request that breaks the device drops the rest.
   */
  private restartQueued(): void {
    const list = this.rq;
    this.rq = [];
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      if (r.phase !== Phase.Restored) continue;
      r.phase = Phase.Idle;
      if (!r.current) continue;
      if (this.broken || !this.handleRequest(r.vq, r.elem, r)) {
        for (let j = i; j < list.length; j++) {
          const d = list[j]!;
          d.phase = Phase.Idle;
          if (d.current) d.vq.detach(d.elem);
        }
        return;
      }
    }
  }

  /**
   * Before a migration stream is written: complete what the backend has finished (QEMU drains
   * block I/O when the VM stops, and the completions land in guest RAM before it is sent).
   * Requests still running stay in flight and go into the stream's request list.
   */
  override preSave(): void {
    for (const r of [...this.inFlight]) {
      if (r.phase !== Phase.Parked) continue;
      if (!r.current) {
        this.forget(r);
        continue;
      }
      if (r.failed) this.complete(r, VIRTIO_BLK_S_IOERR);
      else if (r.next === Next.Complete) this.complete(r, VIRTIO_BLK_S_OK);
      else if (r.next === Next.ReadChunk && r.readOff + r.chunkLen >= r.readLen) {
        const bounce = r.bounce!;
        r.elem.writeIn(r.readOff, r.chunkLen === bounce.length ? bounce : bounce.subarray(0, r.chunkLen));
        this.complete(r, VIRTIO_BLK_S_OK);
      }
      // A chunked read with more to read, or a write still to flush, stays in flight.
    }
  }

  /** Requests started and not completed (for tests and the drain). */
  get requestsInFlight(): number {
    return this.inFlight.size + this.rq.length;
  }

  /**
   * Wait until no backend operation of this device is running, or `timeoutMs` passed (QEMU's
   * `blk_drain`, bounded). Resolves true when drained. Completions that come meanwhile follow
   * the run state: written now while the VM runs, parked while it is stopped (then `preSave`
   * writes them before a migration stream is taken).
   */
  override drain(timeoutMs = 5000): Promise<boolean> {
    if (!this.busy()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.drainWaiters = this.drainWaiters.filter((f) => f !== done);
        resolve(false);
      }, timeoutMs);
      const done = (): void => {
        clearTimeout(t);
        resolve(true);
      };
      this.drainWaiters.push(done);
    });
  }

  // ---------------------------------------------------------------------------------------
  // Migration (virtio_blk_save_device / virtio_blk_load_device)

  /** The request list: u8 1, [be32 queue index with several queues], an element; then u8 0. */
  override saveDeviceState(f: QEMUFileWriter): void {
    const packed = this.hostHasFeature(VIRTIO_F_RING_PACKED);
    const carried: BlkRequest[] = [];
    for (const r of this.rq) if (r.phase === Phase.Restored && r.current) carried.push(r);
    const running = [...this.inFlight].filter((r) => r.current).sort((a, b) => a.seq - b.seq);
    carried.push(...running);
    for (const r of carried) {
      f.putByte(1);
      if (this.numQueues > 1) f.putBe32(r.vq.index);
      saveVirtQueueElement(f, r.elem, packed, this.hasFeature(VIRTIO_F_RING_PACKED));
    }
    f.putByte(0);
  }

  override loadDeviceState(f: QEMUFileReader, _version: number, ctx: DeviceLoadContext): () => void {
    const packed = this.hostHasFeature(VIRTIO_F_RING_PACKED);
    const loaded: { vq: number; e: LoadedElement }[] = [];
    const seen = new Set<number>();
    for (let n = 0; ; n++) {
      // qemu_get_sbyte: any non-zero byte means another request.
      if (f.getByte('virtio-blk request list') === 0) break;
      let idx = 0;
      if (this.numQueues > 1) {
        const at = f.offset;
        idx = f.getBe32('virtio-blk request vq index');
        if (idx >= this.numQueues) throw f.error('virtio-blk request vq index', `Invalid virtqueue index in request list: ${idx === 0 ? '0' : '0x' + idx.toString(16)}`, at);
      }
      // The size the stream gives the queue (0 when it sets none up: nothing fits in it).
      const size = ctx.queueNum ? (ctx.queueNum(idx) ?? 0) : this.queueSize;
      const at = f.offset;
      const e = loadVirtQueueElement(f, `virtio-blk rq[${n}]`, size, ctx, packed);
      // Each head can be in flight once; a queue cannot hold more requests than it has entries.
      const key = idx * 65536 + e.index;
      if (seen.has(key)) throw f.error(`virtio-blk rq[${n}]`, `head ${e.index} of queue ${idx} is in the request list twice`, at);
      seen.add(key);
      if (loaded.filter((x) => x.vq === idx).length >= size) throw f.error(`virtio-blk rq[${n}]`, `more requests than queue ${idx} has entries`, at);
      loaded.push({ vq: idx, e });
    }
    return () => {
      const rq: BlkRequest[] = [];
      for (const { vq: idx, e } of loaded) {
        const vq = this.vq[idx]!;
        const elem = restoreVirtQueueElement(vq, e);
        if (!elem) continue;
        const r = this.requestFor(vq, elem);
        r.phase = Phase.Restored;
        // QEMU prepends each loaded request to its list.
        rq.unshift(r);
      }
      this.rq = rq;
    };
  }

  override postLoad(): void {
    // A device on its own (no machine around it) runs: submit the loaded requests once the load
    // has finished, as QEMU's restart bottom half does after the VM starts.
    if (this.vmRunning && this.rq.length > 0) queueMicrotask(() => {
      if (this.vmRunning) this.restartQueued();
    });
  }
}
