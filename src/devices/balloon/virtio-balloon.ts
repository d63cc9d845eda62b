/**
 * virtio-balloon, the traditional memory balloon (VIRTIO 1.2 §5.5; QEMU 7.2
 * `hw/virtio/virtio-balloon.c`): the host asks for `num_pages` 4 KiB pages, the guest gives them
 * (inflate queue) and takes them back (deflate queue) as arrays of page frame numbers, reports
 * memory statistics when the host polls (stats queue), and, as QEMU 7.2 offers them, hints free
 * pages during migration (FREE_PAGE_HINT), tells the poison value of its free pages
 * (PAGE_POISON) and reports free pages for the host to discard (REPORTING).
 *
 * A page given to the host is discarded as QEMU discards it (`ram_block_discard_range`): it
 * reads as zeros afterwards. The embedder hears of every range given back (`onDiscard`), so it
 * can reclaim the memory, and of the ranges taken back (`onDeflate`).
 *
 * Every PFN is untrusted: one outside writable RAM (beyond the end, in a hole, in ROM or an MMIO
 * window) is skipped; a page inflated twice is discarded again but reported once; a buffer of
 * more PFNs than `maxPfnsPerBuffer` has the rest ignored, so one notify costs bounded work.
 */
import type { Clock, TimerHandle } from '../../clock/virtual-clock.js';
import type { RamRegion } from '../../memory/guest-memory.js';
import type { QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { vmstateLoad, vmstateSave, type VMStateDescription } from '../../migration/vmstate.js';
import { VirtIODevice, type DeviceLoadContext, type VirtIODeviceOptions } from '../../virtio/device.js';
import { bit, hasBit, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_ID_BALLOON } from '../../virtio/constants.js';
import { VIRTQUEUE_MAX_SIZE } from '../../vring/constants.js';
import type { VirtQueueElement } from '../../vring/element.js';
import type { VirtQueue } from '../../vring/virtqueue.js';
import { callHost } from '../host-callback.js';

// Feature bits (VIRTIO 1.2 §5.5.3).
export const VIRTIO_BALLOON_F_MUST_TELL_HOST = 0;
export const VIRTIO_BALLOON_F_STATS_VQ = 1;
export const VIRTIO_BALLOON_F_DEFLATE_ON_OOM = 2;
export const VIRTIO_BALLOON_F_FREE_PAGE_HINT = 3;
export const VIRTIO_BALLOON_F_PAGE_POISON = 4;
export const VIRTIO_BALLOON_F_REPORTING = 5;

/** PFNs are always in 4 KiB units, whatever the guest's page size (VIRTIO 1.2 §5.5.6). */
export const VIRTIO_BALLOON_PFN_SHIFT = 12;
export const BALLOON_PAGE_SIZE = 1 << VIRTIO_BALLOON_PFN_SHIFT;

/** free_page_hint_cmd_id values that are not command ids. */
export const VIRTIO_BALLOON_CMD_ID_STOP = 0;
export const VIRTIO_BALLOON_CMD_ID_DONE = 1;
/** QEMU's first command id (and where it wraps to). */
export const VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN = 0x8000_0000;

/** QEMU's free page hinting states. */
export const FREE_PAGE_HINT_S_STOP = 0;
export const FREE_PAGE_HINT_S_REQUESTED = 1;
export const FREE_PAGE_HINT_S_START = 2;
export const FREE_PAGE_HINT_S_DONE = 3;

/** QEMU's names of the statistics tags 0..9 (the `guest-stats` QOM property). */
export const BALLOON_STAT_NAMES = [
  'stat-swap-in', 'stat-swap-out', 'stat-major-faults', 'stat-minor-faults', 'stat-free-memory',
  'stat-total-memory', 'stat-available-memory', 'stat-disk-caches', 'stat-htlb-pgalloc', 'stat-htlb-pgfail',
] as const;
export const VIRTIO_BALLOON_S_NR = BALLOON_STAT_NAMES.length;
/** A statistic the guest has not reported: QEMU's (uint64_t)-1. */
export const BALLOON_STAT_UNSET = 0xffff_ffff_ffff_ffffn;
/** One stats record: le16 tag, le64 value, packed (VIRTIO 1.2 §5.5.6.3). */
const STAT_SIZE = 10;

/** Precopy migration steps QEMU tells the balloon about (`PrecopyNotifyReason`). */
export type PrecopyNotifyReason = 'setup' | 'before-bitmap-sync' | 'after-bitmap-sync' | 'complete' | 'cleanup';

/** A run of guest-physical memory: whole 4 KiB pages. */
export interface PageRange {
  gpa: number;
  length: number;
}

/** QEMU's `guest-stats` QOM property. */
export interface BalloonGuestStats {
  'last-update': number;
  stats: Record<(typeof BALLOON_STAT_NAMES)[number], bigint>;
}

/** The QEMU error for a bad `guest-stats-polling-interval`. */
export class BalloonPropertyError extends Error {
  override name = 'BalloonPropertyError';
}

export interface VirtIOBalloonOptions extends VirtIODeviceOptions {
  /** Guest RAM in bytes, as QEMU's `get_current_ram_size` (the machine's `-m`); the balloon's targets are taken from it. */
  ramSize: number;
  /** QEMU's `deflate-on-oom` (default off). */
  deflateOnOom?: boolean;
  /** QEMU's `free-page-hint` (default off; QEMU also needs an `iothread`). */
  freePageHint?: boolean;
  /** QEMU's `page-poison` (default on). */
  pagePoison?: boolean;
  /** QEMU's `free-page-reporting` (default off). */
  freePageReporting?: boolean;
  /** QEMU's `qemu-4-0-config-size` (default off): a 16-byte config whatever the features. */
  qemu40ConfigSize?: boolean;
  /** The virtual clock of the stats polling timer (needed for a polling interval). */
  clock?: Clock;
  /** Wall-clock seconds for `last-update` (default `Date.now() / 1000`). */
  wallClockSeconds?: () => number;
  /** The guest changed `actual`: QEMU's BALLOON_CHANGE with the guest's memory size in bytes. */
  onBalloonChange?: (actual: bigint) => void;
  /** Pages the guest gave to the host (inflated or reported free): already zeroed here, for the host to reclaim. */
  onDiscard?: (ranges: readonly PageRange[]) => void;
  /** Inflated pages the guest took back. */
  onDeflate?: (ranges: readonly PageRange[]) => void;
  /** The guest delivered statistics (after the values were stored). */
  onStats?: (stats: BalloonGuestStats) => void;
  /** PFNs read from one inflate/deflate buffer; the rest of the buffer is ignored (default 32768). */
  maxPfnsPerBuffer?: number;
}

const DEFAULT_MAX_PFNS = 32768;
const INT64_MASK = (1n << 64n) - 1n;

/**
 * virtio-balloon as QEMU 7.2 (`virtio-balloon-device`). Queues: inflate 0, deflate 1, stats 2,
 * then free page hints (1024 entries) with FREE_PAGE_HINT and reporting (32) with REPORTING, each
 * taking the next index when present, as QEMU adds them.
 */
export class VirtIOBalloon extends VirtIODevice {
  readonly ivq: VirtQueue;
  readonly dvq: VirtQueue;
  readonly svq: VirtQueue;
  readonly freePageVq: VirtQueue | undefined;
  readonly reportingVq: VirtQueue | undefined;
  readonly ramSize: number;
  /** QEMU's `host_features` property bits (STATS_VQ is added in get_features). */
  readonly balloonFeatures: bigint;

  /** Pages the host asks for (QEMU's `num_pages`). */
  numPages = 0;
  /** Pages the guest says it has given (QEMU's `actual`, written by the driver). */
  actual = 0;
  freePageHintCmdId = VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN;
  freePageHintStatus = FREE_PAGE_HINT_S_STOP;
  poisonVal = 0;
  /** The ten statistics, BALLOON_STAT_UNSET where the guest gave none. */
  readonly stats: bigint[] = new Array<bigint>(VIRTIO_BALLOON_S_NR).fill(BALLOON_STAT_UNSET);
  statsLastUpdate = 0;
  /** QEMU's `guest-stats-polling-interval`, in seconds (0: off). */
  statsPollInterval = 0;
  /** The stats buffer the device holds until it polls (QEMU's `stats_vq_elem`). */
  statsElem: VirtQueueElement | undefined;

  /** QEMU's `qemu-4-0-config-size`. */
  readonly qemu40ConfigSize: boolean;
  private readonly clock: Clock | undefined;
  private readonly wallClockSeconds: () => number;
  private readonly onBalloonChange: ((actual: bigint) => void) | undefined;
  private readonly onDiscard: ((ranges: readonly PageRange[]) => void) | undefined;
  private readonly onDeflate: ((ranges: readonly PageRange[]) => void) | undefined;
  private readonly onStats: ((stats: BalloonGuestStats) => void) | undefined;
  private readonly maxPfnsPerBuffer: number;
  private statsTimer: TimerHandle | undefined;
  /** Inflated pages, one bit per page of each writable region (host bookkeeping, not migrated). */
  private readonly inflated = new Map<RamRegion, Uint8Array>();
  private inflatedCount = 0;
  private readonly pfnScratch = new Uint8Array(4096);
  private readonly statScratch = new Uint8Array(STAT_SIZE);

  constructor(opts: VirtIOBalloonOptions) {
    let f = 0n;
    if (opts.deflateOnOom) f |= bit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
    if (opts.freePageHint) f |= bit(VIRTIO_BALLOON_F_FREE_PAGE_HINT);
    if (opts.pagePoison ?? true) f |= bit(VIRTIO_BALLOON_F_PAGE_POISON);
    if (opts.freePageReporting) f |= bit(VIRTIO_BALLOON_F_REPORTING);
    // QEMU's get_features always adds STATS_VQ.
    super(VIRTIO_ID_BALLOON, configSize(f, opts.qemu40ConfigSize ?? false), opts, 'virtio-balloon', f | bit(VIRTIO_BALLOON_F_STATS_VQ));
    if (!Number.isSafeInteger(opts.ramSize) || opts.ramSize <= 0) throw new RangeError(`bad RAM size ${opts.ramSize}`);
    this.ramSize = opts.ramSize;
    this.balloonFeatures = f;
    this.qemu40ConfigSize = opts.qemu40ConfigSize ?? false;
    this.clock = opts.clock;
    this.wallClockSeconds = opts.wallClockSeconds ?? (() => Math.floor(Date.now() / 1000));
    this.onBalloonChange = opts.onBalloonChange;
    this.onDiscard = opts.onDiscard;
    this.onDeflate = opts.onDeflate;
    this.onStats = opts.onStats;
    this.maxPfnsPerBuffer = Math.max(1, Math.floor(opts.maxPfnsPerBuffer ?? DEFAULT_MAX_PFNS));
    this.ivq = this.addQueue(128, (vq) => this.handleOutput(vq, true));
    this.dvq = this.addQueue(128, (vq) => this.handleOutput(vq, false));
    this.svq = this.addQueue(128, () => this.receiveStats());
    this.freePageVq = hasBit(f, VIRTIO_BALLOON_F_FREE_PAGE_HINT) ? this.addQueue(VIRTQUEUE_MAX_SIZE, () => this.handleFreePageVq()) : undefined;
    this.reportingVq = hasBit(f, VIRTIO_BALLOON_F_REPORTING) ? this.addQueue(32, () => this.handleReport()) : undefined;
  }

  override get vmsdName(): string {
    return 'virtio-balloon';
  }

  /** Pages currently inflated, as far as this device has seen (not migrated). */
  get inflatedPages(): number {
    return this.inflatedCount;
  }

  // ---------------------------------------------------------------------------------------
  // Host side: target and status (QEMU's balloon handler for QMP `balloon`/`query-balloon`)

  /**
   * QEMU's `virtio_balloon_to_target`: aim at `target` bytes of guest memory. A target above the
   * RAM size means "no balloon"; a target of 0 changes nothing (QMP refuses it before).
   */
  setTarget(target: bigint): void {
    const ram = BigInt(this.ramSize);
    let t = target & INT64_MASK;
    if (t > ram) t = ram;
    if (t !== 0n) {
      this.numPages = Number(((ram - t) >> BigInt(VIRTIO_BALLOON_PFN_SHIFT)) & 0xffff_ffffn);
      this.notifyConfig();
    }
  }

  /** QEMU's `virtio_balloon_stat`: the guest's memory as `query-balloon` reports it (`actual`, bytes). */
  queryActual(): bigint {
    return BigInt.asIntN(64, BigInt(this.ramSize) - (BigInt(this.actual) << BigInt(VIRTIO_BALLOON_PFN_SHIFT)));
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space (always little-endian, legacy included: VIRTIO 1.2 §5.5.4)

  protected override getConfig(config: Uint8Array): void {
    const b = new Uint8Array(16);
    const dv = new DataView(b.buffer);
    dv.setUint32(0, this.numPages >>> 0, true);
    dv.setUint32(4, this.actual >>> 0, true);
    const s = this.freePageHintStatus;
    const cmd = s === FREE_PAGE_HINT_S_REQUESTED ? this.freePageHintCmdId : s === FREE_PAGE_HINT_S_STOP ? VIRTIO_BALLOON_CMD_ID_STOP : s === FREE_PAGE_HINT_S_DONE ? VIRTIO_BALLOON_CMD_ID_DONE : 0;
    dv.setUint32(8, cmd >>> 0, true);
    dv.setUint32(12, this.poisonVal >>> 0, true);
    config.set(b.subarray(0, config.length));
  }

  protected override setConfig(config: Uint8Array): void {
    const dv = new DataView(config.buffer, config.byteOffset, config.byteLength);
    const old = this.actual;
    this.actual = dv.getUint32(4, true);
    const cb = this.onBalloonChange;
    if (this.actual !== old && cb) callHost(this, 'onBalloonChange', () => cb(this.queryActual()));
    this.poisonVal = 0;
    if (this.hasFeature(VIRTIO_BALLOON_F_PAGE_POISON) && config.length >= 16) this.poisonVal = dv.getUint32(12, true);
  }

  // ---------------------------------------------------------------------------------------
  // Inflate and deflate

  /**
   * QEMU's `virtio_balloon_handle_output`: each buffer is an array of 32-bit PFNs in the
   * device's byte order; each page in writable RAM is discarded (inflate) or noted (deflate);
   * the buffer goes back with length 0 and an interrupt, one by one.
   */
  private handleOutput(vq: VirtQueue, inflate: boolean): void {
    const le = !this.isBigEndian();
    const scratch = this.pfnScratch;
    const dv = new DataView(scratch.buffer);
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      const ranges: PageRange[] = [];
      const limit = Math.min(Math.floor(elem.outBytes / 4), this.maxPfnsPerBuffer);
      if (Math.floor(elem.outBytes / 4) > limit) {
        const tr = this.tracer;
        if (tr) tr({ type: 'guest_error', device: this.name, message: `balloon buffer of ${Math.floor(elem.outBytes / 4)} PFNs: only the first ${limit} are read` });
      }
      for (let done = 0; done < limit; ) {
        const want = Math.min(limit - done, scratch.length / 4);
        const got = Math.floor(elem.readOut(done * 4, scratch.subarray(0, want * 4)) / 4);
        if (got === 0) break;
        for (let i = 0; i < got; i++) {
          const gpa = dv.getUint32(i * 4, le) * BALLOON_PAGE_SIZE;
          if (inflate) this.inflatePage(gpa, ranges);
          else this.deflatePage(gpa, ranges);
        }
        done += got;
      }
      vq.push(elem, 0);
      this.notify(vq);
      const cb = inflate ? this.onDiscard : this.onDeflate;
      if (ranges.length > 0 && cb) callHost(this, inflate ? 'onDiscard' : 'onDeflate', () => cb(ranges));
    }
  }

  /** The region and page index of a whole page of writable RAM at `gpa`, as QEMU's memory_region_find + RAM/ROM checks. */
  private ramPage(gpa: number): { r: RamRegion; page: number } | undefined {
    const r = this.memory.findRegion(gpa, BALLOON_PAGE_SIZE);
    if (!r || r.readonly) {
      const tr = this.tracer;
      if (tr) tr({ type: 'guest_error', device: this.name, message: `virtio_balloon_bad_addr 0x${gpa.toString(16)}` });
      return undefined;
    }
    return { r, page: Math.floor((gpa - r.base) / BALLOON_PAGE_SIZE) };
  }

  private inflatePage(gpa: number, ranges: PageRange[]): void {
    const p = this.ramPage(gpa);
    if (!p) return;
    // Discarded: the page reads as zeros, as after QEMU's MADV_DONTNEED.
    this.memory.fill(gpa, BALLOON_PAGE_SIZE, 0);
    let map = this.inflated.get(p.r);
    if (!map) {
      map = new Uint8Array(Math.ceil(Math.ceil(p.r.size / BALLOON_PAGE_SIZE) / 8));
      this.inflated.set(p.r, map);
    }
    const m = 1 << (p.page & 7);
    if (map[p.page >> 3]! & m) return; // inflated twice: discarded again, reported once
    map[p.page >> 3]! |= m;
    this.inflatedCount++;
    addRange(ranges, gpa);
  }

  private deflatePage(gpa: number, ranges: PageRange[]): void {
    const p = this.ramPage(gpa);
    if (!p) return;
    // QEMU only hints the host (MADV_WILLNEED); the page stays as it is.
    const map = this.inflated.get(p.r);
    const m = 1 << (p.page & 7);
    if (!map || !(map[p.page >> 3]! & m)) return; // never inflated: nothing to take back
    map[p.page >> 3]! &= ~m;
    this.inflatedCount--;
    addRange(ranges, gpa);
  }

  // ---------------------------------------------------------------------------------------
  // Statistics

  /**
   * QEMU's `virtio_balloon_receive_stats`: take one buffer (returning one still held, which a
   * driver following the spec never leaves), read its 10-byte records, keep the buffer until the
   * next poll, and re-arm the polling timer.
   */
  private receiveStats(): void {
    const vq = this.svq;
    const elem = vq.pop();
    if (elem) {
      if (this.statsElem) {
        vq.push(this.statsElem, 0);
        this.notify(vq);
      }
      this.statsElem = elem;
      this.stats.fill(BALLOON_STAT_UNSET);
      const le = !this.isBigEndian();
      const rec = this.statScratch;
      const dv = new DataView(rec.buffer);
      // At most what the buffer holds; each pass consumes 10 bytes.
      for (let off = 0; off + STAT_SIZE <= elem.outBytes; off += STAT_SIZE) {
        if (elem.readOut(off, rec) !== STAT_SIZE) break;
        const tag = dv.getUint16(0, le);
        if (tag < VIRTIO_BALLOON_S_NR) this.stats[tag] = dv.getBigUint64(2, le);
      }
      this.statsLastUpdate = this.wallClockSeconds();
      const cb = this.onStats;
      if (cb) callHost(this, 'onStats', () => cb(this.guestStats()));
    }
    if (this.statsPollInterval > 0) this.armStatsTimer(this.statsPollInterval);
  }

  /** QEMU's `balloon_stats_poll_cb`: give the held buffer back, asking for new statistics. */
  private statsPoll(): void {
    this.statsTimer = undefined;
    if (!this.statsElem || !this.hasFeature(VIRTIO_BALLOON_F_STATS_VQ) || !this.vmRunning) {
      // While the VM is stopped QEMU's virtual clock (and so this timer) does not run at all.
      this.armStatsTimer(this.statsPollInterval);
      return;
    }
    this.svq.push(this.statsElem, 0);
    this.notify(this.svq);
    this.statsElem = undefined;
  }

  /** `timer_mod(now_ms + secs * 1000)` on the virtual clock. */
  private armStatsTimer(secs: number): void {
    const clock = this.clock;
    if (!clock) return;
    if (this.statsTimer) clock.cancel(this.statsTimer);
    const deadline = (Math.floor(clock.now() / 1e6) + secs * 1000) * 1e6;
    this.statsTimer = clock.setTimer(deadline, () => this.guarded(() => this.statsPoll()));
  }

  private stopStatsTimer(): void {
    if (this.statsTimer && this.clock) this.clock.cancel(this.statsTimer);
    this.statsTimer = undefined;
  }

  /** QEMU's `guest-stats` property. */
  guestStats(): BalloonGuestStats {
    const stats = {} as Record<(typeof BALLOON_STAT_NAMES)[number], bigint>;
    BALLOON_STAT_NAMES.forEach((n, i) => (stats[n] = this.stats[i]!));
    return { 'last-update': this.statsLastUpdate, stats };
  }

  /**
   * QEMU's setter of `guest-stats-polling-interval` (seconds; 0 stops polling). Throws a
   * BalloonPropertyError with QEMU's message for a negative or too large value.
   */
  setStatsPollInterval(value: number | bigint): void {
    const v = BigInt(value);
    if (v < 0n) throw new BalloonPropertyError('timer value must be greater than zero');
    if (v > 0xffff_ffffn) throw new BalloonPropertyError('timer value is too big');
    const secs = Number(v);
    if (secs === this.statsPollInterval) return;
    if (secs === 0) {
      this.stopStatsTimer();
      this.statsPollInterval = 0;
      return;
    }
    if (!this.clock) throw new BalloonPropertyError('stats polling needs a clock');
    if (this.statsPollInterval > 0) {
      this.statsPollInterval = secs;
      this.armStatsTimer(secs);
      return;
    }
    // A new timer fires at once: QEMU arms it at now + 0, which its main loop runs right after
    // the property is set; a timer on our virtual clock would wait for the clock to move.
    this.statsPollInterval = secs;
    this.guarded(() => this.statsPoll());
  }

  // ---------------------------------------------------------------------------------------
  // Free page hinting (QEMU runs it in an iothread; here it runs in the notify)

  /**
   * QEMU's `virtio_ballloon_get_free_page_hints` over every buffer available: an out buffer
   * carries a command id (4 bytes: anything else is an error), which starts hinting when it is
   * the one requested and stops it otherwise; in buffers are the hinted pages (a migration
   * optimisation: nothing to do here, as every page is sent anyway). Each buffer goes back with
   * length 0. QEMU keeps polling the queue without notifications while hinting runs; here the
   * driver's notifications stay on, and each one drains the queue.
   */
  private handleFreePageVq(): void {
    const vq = this.freePageVq!;
    const le = !this.isBigEndian();
    const idBytes = new Uint8Array(4);
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      if (elem.outNum > 0) {
        const size = elem.readOut(0, idBytes);
        if (size !== 4) {
          this.virtioError('received an incorrect cmd id');
          vq.push(elem, 0);
          break;
        }
        const id = new DataView(idBytes.buffer).getUint32(0, le);
        if (this.freePageHintStatus === FREE_PAGE_HINT_S_REQUESTED && id === this.freePageHintCmdId) {
          this.freePageHintStatus = FREE_PAGE_HINT_S_START;
        } else if (this.freePageHintStatus === FREE_PAGE_HINT_S_START) {
          this.freePageHintStatus = FREE_PAGE_HINT_S_STOP;
        }
      }
      vq.push(elem, 0);
    }
    this.notify(vq);
  }

  /** QEMU's `virtio_balloon_free_page_start`: a new command id, REQUESTED, config interrupt. */
  freePageStart(): void {
    this.freePageHintCmdId = this.freePageHintCmdId === 0xffff_ffff ? VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN : this.freePageHintCmdId + 1;
    this.freePageHintStatus = FREE_PAGE_HINT_S_REQUESTED;
    this.notifyConfig();
  }

  /** QEMU's `virtio_balloon_free_page_stop`. */
  freePageStop(): void {
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_STOP) return;
    this.freePageHintStatus = FREE_PAGE_HINT_S_STOP;
    this.notifyConfig();
  }

  /** QEMU's `virtio_balloon_free_page_done`. */
  freePageDone(): void {
    if (this.freePageHintStatus === FREE_PAGE_HINT_S_DONE) return;
    this.freePageHintStatus = FREE_PAGE_HINT_S_DONE;
    this.notifyConfig();
  }

  /**
   * QEMU's precopy notifier (`virtio_balloon_free_page_hint_notify`): a migration asks the guest
   * for free page hints while the VM runs and tells it DONE before the device state is saved.
   */
  precopyNotify(reason: PrecopyNotifyReason): void {
    if (!this.hasFeature(VIRTIO_BALLOON_F_FREE_PAGE_HINT)) return;
    switch (reason) {
      case 'before-bitmap-sync':
        this.freePageStop();
        break;
      case 'after-bitmap-sync':
        if (this.vmRunning) this.freePageStart();
        else this.freePageDone();
        break;
      case 'cleanup':
        this.freePageDone();
        break;
      default:
        break;
    }
  }

  // ---------------------------------------------------------------------------------------
  // Free page reporting

  /**
   * QEMU's `virtio_balloon_handle_report`: the device-writable buffers are free pages the host
   * may discard, unless the guest poisons free pages with a non-zero value (the page must then
   * keep it). Ranges not page-aligned are ignored. Each buffer goes back with length 0.
   */
  private handleReport(): void {
    const vq = this.reportingVq!;
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      const ranges: PageRange[] = [];
      if (this.poisonVal === 0) {
        for (let i = elem.outNum; i < elem.outNum + elem.inNum; i++) {
          const gpa = elem.sgAddr[i]!;
          const len = elem.sgLen[i]!;
          if (gpa % BALLOON_PAGE_SIZE !== 0 || len % BALLOON_PAGE_SIZE !== 0 || len === 0) continue;
          // Checked writable RAM when popped; QEMU's block-overrun check is the same check.
          if (!this.memory.isWritableRange(gpa, len)) continue;
          this.memory.fill(gpa, len, 0);
          ranges.push({ gpa, length: len });
        }
      }
      vq.push(elem, 0);
      this.notify(vq);
      const cb = this.onDiscard;
      if (ranges.length > 0 && cb) callHost(this, 'onDiscard', () => cb(ranges));
    }
  }

  // ---------------------------------------------------------------------------------------
  // Status, reset, run state

  /**
   * QEMU's `virtio_balloon_set_status`: after a migration the stats buffer the source held is
   * in use but not held here, so at DRIVER_OK on a running VM it is taken again (rewound and
   * re-read).
   */
  protected override setStatusHook(status: number): void {
    this.retakeStatsBuffer(status);
  }

  private retakeStatsBuffer(status: number): void {
    if (!this.statsElem && this.vmRunning && status & VIRTIO_CONFIG_S_DRIVER_OK && this.svq.rewind(1)) this.receiveStats();
  }

  /** QEMU's `virtio_vmstate_change` calls set_status with the current status when the VM starts. */
  protected override vmStateChangeHook(running: boolean): void {
    if (running && this.started) this.retakeStatsBuffer(this.status);
  }

  protected override resetDevice(): void {
    if (this.hasFeature(VIRTIO_BALLOON_F_FREE_PAGE_HINT)) this.freePageStop();
    if (this.statsElem) {
      this.svq.unpop(this.statsElem);
      this.statsElem = undefined;
    }
    this.poisonVal = 0;
  }

  /** Stop the polling timer (the device is removed). */
  dispose(): void {
    this.stopStatsTimer();
  }

  // ---------------------------------------------------------------------------------------
  // Migration: `virtio-balloon-device` v1 after the common blob

  private deviceVmsd(stage?: BalloonStage): VMStateDescription {
    return {
      name: 'virtio-balloon-device',
      versionId: 1,
      minimumVersionId: 1,
      save: (f) => {
        f.putBe32(this.numPages);
        f.putBe32(this.actual);
      },
      load: (f) => {
        stage!.numPages = f.getBe32('virtio-balloon-device num_pages');
        stage!.actual = f.getBe32('virtio-balloon-device actual');
      },
      postLoad: () => () => {
        // QEMU's post_load: a polling interval set on the destination restarts its timer.
        if (this.statsPollInterval > 0) this.armStatsTimer(this.statsPollInterval);
      },
      subsections: [
        {
          name: 'virtio-balloon-device/free-page-report',
          versionId: 1,
          minimumVersionId: 1,
          needed: () => this.hasFeature(VIRTIO_BALLOON_F_FREE_PAGE_HINT),
          save: (f) => {
            f.putBe32(this.freePageHintCmdId);
            f.putBe32(this.freePageHintStatus);
          },
          load: (f) => {
            stage!.cmdId = f.getBe32('free-page-report free_page_hint_cmd_id');
            stage!.hintStatus = f.getBe32('free-page-report free_page_hint_status');
          },
        },
        {
          name: 'virtio-balloon-device/page-poison',
          versionId: 1,
          minimumVersionId: 1,
          needed: () => this.hasFeature(VIRTIO_BALLOON_F_PAGE_POISON),
          save: (f) => f.putBe32(this.poisonVal),
          load: (f) => {
            stage!.poisonVal = f.getBe32('page-poison poison_val');
          },
        },
      ],
    };
  }

  override saveDeviceState(f: QEMUFileWriter): void {
    vmstateSave(f, this.deviceVmsd());
  }

  override loadDeviceState(f: QEMUFileReader, version: number, _ctx: DeviceLoadContext): () => void {
    const stage: BalloonStage = { numPages: 0, actual: 0, cmdId: undefined, hintStatus: undefined, poisonVal: undefined };
    const apply = vmstateLoad(f, this.deviceVmsd(stage), version);
    return () => {
      this.numPages = stage.numPages;
      this.actual = stage.actual;
      // What the stream does not carry is what a fresh QEMU destination has.
      this.freePageHintCmdId = stage.cmdId ?? VIRTIO_BALLOON_FREE_PAGE_HINT_CMD_ID_MIN;
      this.freePageHintStatus = stage.hintStatus ?? FREE_PAGE_HINT_S_STOP;
      this.poisonVal = stage.poisonVal ?? 0;
      this.statsElem = undefined;
      this.stats.fill(BALLOON_STAT_UNSET);
      this.statsLastUpdate = 0;
      this.inflated.clear();
      this.inflatedCount = 0;
      apply();
    };
  }
}

interface BalloonStage {
  numPages: number;
  actual: number;
  cmdId: number | undefined;
  hintStatus: number | undefined;
  poisonVal: number | undefined;
}

/** QEMU's `virtio_balloon_config_size`. */
function configSize(features: bigint, qemu40: boolean): number {
  if (qemu40) return 16;
  if (hasBit(features, VIRTIO_BALLOON_F_PAGE_POISON)) return 16;
  if (hasBit(features, VIRTIO_BALLOON_F_FREE_PAGE_HINT)) return 12;
  return 8;
}

/** Append a page to a list of ranges, extending the last range when contiguous. */
function addRange(ranges: PageRange[], gpa: number): void {
  const last = ranges[ranges.length - 1];
  if (last && last.gpa + last.length === gpa) last.length += BALLOON_PAGE_SIZE;
  else ranges.push({ gpa, length: BALLOON_PAGE_SIZE });
}
