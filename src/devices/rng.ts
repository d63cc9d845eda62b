import type { Clock, TimerHandle } from '../clock/virtual-clock.js';
import { VirtIODevice, type VirtIODeviceOptions } from '../virtio/device.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_ID_RNG } from '../virtio/constants.js';
import type { VirtQueue } from '../vring/virtqueue.js';

/** Where random bytes come from. `fill` must fill the whole array. */
export interface EntropySource {
  fill(buf: Uint8Array): void;
}

/** The platform's cryptographic generator (`crypto.getRandomValues`, in Node 20 and browsers). */
export const cryptoEntropy: EntropySource = {
  fill(buf: Uint8Array): void {
    // getRandomValues refuses more than 65536 bytes per call, and views of shared memory.
    const shared = !(buf.buffer instanceof ArrayBuffer);
    const scratch = shared ? new Uint8Array(Math.min(buf.length, 65536)) : undefined;
    for (let off = 0; off < buf.length; off += 65536) {
      const n = Math.min(buf.length - off, 65536);
      if (scratch) {
        const part = scratch.subarray(0, n);
        globalThis.crypto.getRandomValues(part);
        buf.set(part, off);
      } else {
        globalThis.crypto.getRandomValues(buf.subarray(off, off + n) as Uint8Array<ArrayBuffer>);
      }
    }
  },
};

/**
 * A reproducible byte stream for tests (xorshift32). Not random in any useful sense: the same
 * seed always gives the same bytes, which is the point.
 */
export function deterministicEntropy(seed = 0x12345678): EntropySource {
  let s = seed >>> 0 || 1;
  return {
    fill(buf: Uint8Array): void {
      for (let i = 0; i < buf.length; i++) {
        s ^= s << 13;
        s >>>= 0;
        s ^= s >>> 17;
        s ^= s << 5;
        s >>>= 0;
        buf[i] = s & 0xff;
      }
    },
  };
}

export interface VirtIORngOptions extends VirtIODeviceOptions {
  /** Source of the bytes handed to the guest; `cryptoEntropy` by default. */
  entropy?: EntropySource;
  /**
   * Rate limit, as QEMU's `max-bytes`: at most this many bytes per `periodMs`. Unlimited by
   * default. A limit needs `clock` to refill the quota.
   */
  maxBytes?: number;
  /** QEMU's `period` in milliseconds (default 65536, as QEMU). */
  periodMs?: number;
  /** Virtual clock that drives the rate-limit period. */
  clock?: Clock;
  /**
   * Most bytes given to one request. The spec lets the device fill fewer bytes than offered
   * (`used.len` says how many); the cap keeps a hostile 4 GiB buffer from costing 4 GiB of work.
   */
  maxBytesPerRequest?: number;
  /** Queue size (QEMU uses 8). */
  queueSize?: number;
}

const DEFAULT_PERIOD_MS = 1 << 16;
const DEFAULT_MAX_PER_REQUEST = 64 * 1024;

/**
 * virtio-rng, the entropy device (VIRTIO 1.2 §5.4; QEMU's `hw/virtio/virtio-rng.c`): one
 * request queue whose device-writable buffers the device fills with random bytes. No
 * configuration space and no device features.
 */
export class VirtIORng extends VirtIODevice {
  readonly requestq: VirtQueue;
  readonly entropy: EntropySource;
  readonly maxBytes: number;
  readonly periodMs: number;
  readonly maxBytesPerRequest: number;
  /** Bytes still allowed in the current period (QEMU's `quota_remaining`). */
  quotaRemaining: number;
  /** Total bytes handed to the guest, for statistics. */
  bytesServed = 0;

  private readonly clock: Clock | undefined;
  private activateTimer = true;
  private timer: TimerHandle | undefined;

  constructor(opts: VirtIORngOptions) {
    super(VIRTIO_ID_RNG, 0, opts, 'virtio-rng');
    this.entropy = opts.entropy ?? cryptoEntropy;
    this.maxBytes = opts.maxBytes ?? Number.POSITIVE_INFINITY;
    this.periodMs = opts.periodMs ?? DEFAULT_PERIOD_MS;
    this.clock = opts.clock;
    this.maxBytesPerRequest = opts.maxBytesPerRequest ?? DEFAULT_MAX_PER_REQUEST;
    if (!(this.maxBytes >= 0)) throw new RangeError('maxBytes must be non-negative');
    if (!(this.periodMs > 0)) throw new RangeError('periodMs must be positive');
    if (Number.isFinite(this.maxBytes) && !this.clock) throw new RangeError('a rate limit (maxBytes) needs a clock');
    this.quotaRemaining = this.maxBytes;
    this.requestq = this.addQueue(opts.queueSize ?? 8, () => this.process());
  }

  /** QEMU's `is_guest_ready`: the queue is set up and the driver is running. */
  private guestReady(): boolean {
    return this.requestq.ready && (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
  }

  protected override setStatusHook(status: number): void {
    this.status = status;
    this.process();
  }

  protected override resetDevice(): void {
    // QEMU keeps quota and timer across a device reset; only in-flight work goes, and the
    // core already drops it with the queues.
  }

  /**
   * Hand out entropy for every request available now, within quota (QEMU's `virtio_rng_process`
   * and `chr_read`). While the VM is stopped the rate-limit period still starts, as in QEMU, but
   * no request is served: QEMU's `chr_read` drops the entropy then ("we can't modify the
   * virtqueue until our state is fully synced"), and `vmStateChangeHook` tries again on resume.
   */
  process(): void {
    if (!this.guestReady() || this.processingStopped) return;
    if (this.activateTimer && this.clock && Number.isFinite(this.maxBytes)) {
      const clock = this.clock;
      // A millisecond timer, as QEMU's (timer_new_ms, deadline qemu_clock_get_ms() + period).
      const deadline = (Math.floor(clock.now() / 1e6) + this.periodMs) * 1e6;
      this.timer = clock.setTimer(deadline, () => this.checkRateLimit());
      this.activateTimer = false;
    }
    if (!this.vmRunning) return;
    const vq = this.requestq;
    let served = false;
    while (this.quotaRemaining > 0) {
      // QEMU sizes the request (virtqueue_get_avail_bytes) before popping it, so a malformed
      // chain breaks the device without consuming its head: the index then migrates as QEMU's.
      const elem = vq.pop(false);
      if (!elem) break;
      const want = Math.min(elem.inBytes, this.quotaRemaining, this.maxBytesPerRequest);
      let done = 0;
      // Fill the writable buffers in place: no copy, no allocation sized by the guest.
      for (let i = elem.outNum; i < elem.outNum + elem.inNum && done < want; i++) {
        const n = Math.min(elem.sgLen[i]!, want - done);
        const view = this.memory.writableView(elem.sgAddr[i]!, n);
        if (!view) break;
        this.entropy.fill(view);
        done += n;
      }
      vq.push(elem, done);
      this.quotaRemaining -= done;
      this.bytesServed += done;
      served = true;
    }
    if (served) this.notify(vq);
  }

  /**
   * QEMU's `virtio_rng_vm_state_change`: requests may have waited for the quota or for the VM to
   * run; try again when it starts.
   */
  protected override vmStateChangeHook(running: boolean): void {
    if (running) this.process();
  }

  /** The period ended: restore the quota and serve what waited (QEMU's `check_rate_limit`). */
  private checkRateLimit(): void {
    this.timer = undefined;
    this.quotaRemaining = this.maxBytes;
    this.process();
    this.activateTimer = true;
    // QEMU's chr_read runs after this (the backend answers asynchronously) and, finding requests
    // still waiting, calls virtio_rng_process again, which arms the next period. Without it the
    // waiting requests would stall until the guest kicked again.
    if (!this.requestq.isEmpty()) this.process();
  }

  /** Stop the rate-limit timer (when the device is removed). */
  dispose(): void {
    if (this.timer && this.clock) this.clock.cancel(this.timer);
    this.timer = undefined;
  }

  override get vmsdName(): string {
    return 'virtio-rng';
  }
}
