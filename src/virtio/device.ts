import type { VirtioBus } from '../bus/virtio-bus.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { LoadContext } from '../migration/machine-state.js';
import type { QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import type { Tracer } from '../trace/trace.js';
import { VIRTIO_NO_VECTOR, VIRTIO_QUEUE_MAX } from '../vring/constants.js';
import { VirtQueue, type VirtQueueHandler, type VirtQueueOwner } from '../vring/virtqueue.js';
import {
  bit,
  DeviceEndian,
  hasBit,
  VIRTIO_COMMON_FEATURES,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_ISR_QUEUE,
  VIRTIO_LEGACY_FEATURES,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from './constants.js';

/** What a device's own load may ask: guest RAM as the load leaves it, and whether a range is writable RAM. */
export interface DeviceLoadContext extends LoadContext {
  writable(gpa: number, len: number): boolean;
  /** Size of queue `n` as the stream sets it (undefined for a queue the stream does not carry). */
  queueNum?(n: number): number | undefined;
  /** The blob's low feature word (QEMU's `guest_features` while the device state loads). */
  lowFeatures?: bigint;
}

export interface VirtIODeviceOptions {
  /** Guest RAM the device reads rings and buffers from. */
  memory: GuestMemory;
  /** Name for traces and errors; defaults to the device type's name. */
  name?: string;
  /**
   * Byte order of the guest CPU, which legacy (pre-VERSION_1) devices use for rings and config
   * (QEMU's target endianness). False (little-endian, as x86 and most ARM guests) by default.
   */
  guestBigEndian?: boolean;
  /** Feature bits to withdraw from the defaults (like QEMU's `event_idx=off`, `indirect_desc=off`). */
  disabledFeatures?: bigint;
  /**
   * Offer packed virtqueues (VIRTIO_F_RING_PACKED, VIRTIO 1.2 §2.8), off by default as QEMU's
   * `packed` property is. Only a modern driver can take them.
   */
  packed?: boolean;
  /** Trace sink; leave undefined for no tracing. */
  tracer?: Tracer;
  /** Called with each error a guest causes (QEMU's `virtio_error` messages). */
  onError?: (message: string) => void;
}

/**
 * The device side of virtio that every device type shares (QEMU's VirtIODevice and
 * `hw/virtio/virtio.c`): status, feature negotiation, configuration space and generation, ISR,
 * queues, reset, and `virtioError`, which marks the device broken the way QEMU's `virtio_error`
 * does. Device types subclass it and override the hooks (`getFeatures`, `setStatusHook`,
 * `resetDevice`, `getConfig`/`setConfig`, the save/load hooks) and add queues with handlers.
 */
export abstract class VirtIODevice implements VirtQueueOwner {
  readonly memory: GuestMemory;
  readonly name: string;
  tracer: Tracer | undefined;
  onError: ((message: string) => void) | undefined;

  /** VIRTIO device id (e.g. 4 for entropy). */
  readonly deviceId: number;
  /** Device status register (VIRTIO 1.2 §2.1). */
  status = 0;
  /** Interrupt status: bit 0 used buffer, bit 1 configuration change. */
  isr = 0;
  /** Selected queue for transport registers (0..VIRTIO_QUEUE_MAX-1). */
  queueSel = 0;
  /** Features offered, after the transport and the device type adjusted them. */
  hostFeatures: bigint;
  /** Features the driver accepted (always a subset of hostFeatures). */
  get guestFeatures(): bigint {
    return this.guestFeaturesValue;
  }
  set guestFeatures(v: bigint) {
    this.guestFeaturesValue = v;
    // Mirrored as two numbers: `hasFeature` runs per request on hot paths (virtio-net checks
    // VERSION_1 per received frame), and BigInt shifts allocate.
    this.guestFeaturesLo = Number(v & 0xffff_ffffn);
    this.guestFeaturesHi = Number((v >> 32n) & 0xffff_ffffn);
  }
  private guestFeaturesValue = 0n;
  private guestFeaturesLo = 0;
  private guestFeaturesHi = 0;
  /** Device-specific configuration space, in guest layout. */
  readonly config: Uint8Array;
  /** Configuration generation (VIRTIO 1.2 §2.5.1), bumped on every config-change notification. */
  generation = 0;
  configVector = VIRTIO_NO_VECTOR;
  /** Set by `virtioError`; stops all queue processing until reset. */
  broken = false;
  /** Set while DRIVER_OK is on (QEMU's `started`, with `use-started` on). */
  started = false;
  /** Transport-controlled (PCI bus mastering off): no processing, no interrupts. */
  disabled = false;
  /** A legacy driver may kick before DRIVER_OK; the first kick then starts the device. */
  startOnKick = false;
  /** Byte order for legacy rings and config, as QEMU models it. */
  deviceEndian: DeviceEndian;
  readonly guestBigEndian: boolean;

  /** The device's queues; indices beyond `vq.length` behave as queues of size 0. */
  readonly vq: VirtQueue[] = [];
  /** The transport, once plugged. */
  bus: VirtioBus | undefined;

  /** The last error message passed to `virtioError`, for tests and diagnostics. */
  lastError: string | undefined;

  private readonly disabledFeatures: bigint;

  /**
   * `deviceFeatures` are the device type's own feature bits, offered on top of the common ones
   * (indirect descriptors, event index, notify-on-empty, any-layout, ring reset).
   */
  protected constructor(deviceId: number, configSize: number, opts: VirtIODeviceOptions, defaultName: string, deviceFeatures = 0n) {
    this.memory = opts.memory;
    this.deviceId = deviceId;
    this.name = opts.name ?? defaultName;
    this.tracer = opts.tracer;
    this.onError = opts.onError;
    this.guestBigEndian = opts.guestBigEndian ?? false;
    this.deviceEndian = this.guestBigEndian ? DeviceEndian.BIG : DeviceEndian.LITTLE;
    this.config = new Uint8Array(configSize);
    this.disabledFeatures = opts.disabledFeatures ?? 0n;
    const packed = opts.packed === true ? bit(VIRTIO_F_RING_PACKED) : 0n;
    this.hostFeatures = (VIRTIO_COMMON_FEATURES | packed | deviceFeatures) & ~this.disabledFeatures;
  }

  get configLen(): number {
    return this.config.length;
  }

  /** VirtQueueOwner: QEMU's `virtio_device_disabled()`. */
  get processingStopped(): boolean {
    return this.broken || this.disabled;
  }

  // ---------------------------------------------------------------------------------------
  // Hooks for device types (QEMU's VirtioDeviceClass)

  /**
   * Feature bits only a legacy interface offers (QEMU's `legacy_features`): modern transports
   * hide them. Device types with legacy-only bits of their own (virtio-net's GSO) add them.
   */
  get legacyFeatures(): bigint {
    return VIRTIO_LEGACY_FEATURES;
  }
  /**
   * What a legacy driver gets when it acks VIRTIO_F_BAD_FEATURE, i.e. does not negotiate
   * properly (QEMU's `bad_features`; the offer still filters it).
   */
  badFeatures(): bigint {
    return 0n;
  }
  /** Adjust the offered features (QEMU's `get_features`); called once when plugged. */
  protected getFeatures(features: bigint): bigint {
    return features;
  }
  /** React to the negotiated features (QEMU's `set_features`). */
  protected setFeaturesHook(_features: bigint): void {}
  /** Refuse a feature combination at FEATURES_OK time (QEMU's `validate_features`). */
  protected validateFeatures(): boolean {
    return true;
  }
  /** Device-specific part of a per-queue reset (QEMU's `queue_reset`), before the core's. */
  protected queueResetHook(_n: number): void {}
  /** React to the driver enabling queue `n` (QEMU's `queue_enable`). */
  protected queueEnableHook(_n: number): void {}
  /** React to a status write; `this.status` still holds the old value (QEMU's `set_status`). */
  protected setStatusHook(_status: number): void {}
  /** Device-specific reset (QEMU's `reset`); queues are reset by the core afterwards. */
  protected resetDevice(): void {}
  /** Refresh `config` before the driver reads it (QEMU's `get_config`). */
  protected getConfig(_config: Uint8Array): void {}
  /** Apply a driver write to `config` (QEMU's `set_config`). */
  protected setConfig(_config: Uint8Array): void {}

  /** Name of the device's own vmstate (e.g. "virtio-rng"), used by migration. */
  get vmsdName(): string {
    return this.name;
  }
  /** Version of the device's vmstate. */
  get vmsdVersion(): number {
    return 1;
  }
  /**
   * Before the state is written (and before guest RAM is, in a machine stream): finish what can
   * be finished. virtio-blk completes requests whose backend is done, as QEMU's block layer is
   * drained when the VM stops for a migration.
   */
  preSave(): void {}
  /**
   * Wait (at most `timeoutMs`) for the device's backend work to settle, as QEMU drains block I/O
   * when the VM stops. Resolves true when nothing is running any more. Devices that work
   * synchronously have nothing to wait for.
   */
  drain(_timeoutMs?: number): Promise<boolean> {
    return Promise.resolve(true);
  }
  /** Device state written after the queues (QEMU's `vdc->save`, then `vdc->vmsd`). */
  saveDeviceState(_f: QEMUFileWriter): void {}
  /**
   * Parse what `saveDeviceState` wrote; return a function applying it (no change before).
   * `version` is this device's own vmsd version, as QEMU passes it. `ctx` reads guest RAM as the
   * load will leave it, for checking the buffers of in-flight requests the device carries.
   */
  loadDeviceState(_f: QEMUFileReader, _version: number, _ctx: DeviceLoadContext): () => void {
    return () => {};
  }
  /** After a load has restored everything, rings included (QEMU's `vdc->post_load`). */
  postLoad(): void {}

  /**
   * Migration: the number of queues the device will have for a stream that carries `num`
   * (QEMU's `pre_load_queues` decides it in Debian's 7.2.22), or a message refusing the count.
   * By default the device's own queues, which the stream may not exceed.
   */
  queueCountForLoad(num: number): number | string {
    return num > this.vq.length ? `${num} queues in the stream, but ${this.name} has ${this.vq.length}` : this.vq.length;
  }
  /** Migration, at apply time on a freshly reset device: take the stream's queue count (QEMU's `pre_load_queues`). */
  preLoadQueues(_num: number): void {}
  /**
   * Migration, once the whole blob is parsed: a message refusing a stream whose features and
   * queue count do not fit together, or undefined.
   */
  checkLoad(_features: bigint, _numQueues: number): string | undefined {
    return undefined;
  }

  /**
   * Migration: take negotiated features without the status checks (QEMU's
   * `virtio_set_features_nocheck`). Returns false when `val` has bits the device does not offer.
   */
  restoreFeatures(val: bigint): boolean {
    return this.setFeaturesNocheck(val);
  }

  // ---------------------------------------------------------------------------------------
  // Set-up

  /** Add a queue of `size` entries (QEMU's `virtio_add_queue`). */
  protected addQueue(size: number, handler?: VirtQueueHandler): VirtQueue {
    if (this.vq.length >= VIRTIO_QUEUE_MAX) throw new RangeError('too many virtqueues');
    const q = new VirtQueue(this, this.vq.length, size, handler);
    this.vq.push(q);
    this.refreshQueueFlags(q);
    return q;
  }

  /**
   * Attach to a transport (QEMU's `virtio_bus_device_plugged`): the transport adds its features,
   * then the device type adjusts the set.
   */
  plug(bus: VirtioBus): void {
    if (this.bus && this.bus !== bus) throw new Error(`${this.name} is already plugged into ${this.bus.name}`);
    this.bus = bus;
    let f = this.hostFeatures;
    if (bus.prePlugged) f = bus.prePlugged(f);
    this.hostFeatures = this.getFeatures(f);
  }

  /**
   * Remove queues `from` and above (QEMU's `virtio_del_queue` from the end): they read as size 0
   * to the driver until added again. Used by devices whose queue count follows the negotiated
   * features (virtio-net's multiqueue).
   */
  protected removeQueuesFrom(from: number): void {
    while (this.vq.length > from) {
      const q = this.vq.pop()!;
      q.reset();
      this.notifiedWhileStopped.delete(q.index);
    }
  }

  /** Queue `n`, or undefined when the device has no such queue (size 0 to the driver). */
  getQueue(n: number): VirtQueue | undefined {
    return n >= 0 && n < this.vq.length ? this.vq[n] : undefined;
  }

  /** Current size of queue `n` (0 when absent). */
  queueNum(n: number): number {
    return this.getQueue(n)?.num ?? 0;
  }

  // ---------------------------------------------------------------------------------------
  // Features and status

  /** Has the driver negotiated feature bit `n`? */
  hasFeature(n: number): boolean {
    if (n >= 0 && n < 32) return ((this.guestFeaturesLo >>> n) & 1) === 1;
    if (n >= 32 && n < 64) return ((this.guestFeaturesHi >>> (n - 32)) & 1) === 1;
    return false;
  }

  /** Does the device offer feature bit `n`? */
  hostHasFeature(n: number): boolean {
    return hasBit(this.hostFeatures, n);
  }

  /** QEMU's `virtio_is_big_endian`: VERSION_1 devices are little-endian, legacy follow the guest. */
  isBigEndian(): boolean {
    if (this.hasFeature(VIRTIO_F_VERSION_1)) return false;
    return this.deviceEndian === DeviceEndian.BIG;
  }

  /**
   * QEMU's `virtio_set_features`: ignored once FEATURES_OK is set; bits the device does not
   * offer are dropped. Returns false when the driver asked for bits not offered.
   */
  setFeatures(val: bigint): boolean {
    if (this.status & VIRTIO_CONFIG_S_FEATURES_OK) return false;
    const ok = this.setFeaturesNocheck(val);
    if (ok && !this.started && !this.hasFeature(VIRTIO_F_VERSION_1)) this.startOnKick = true;
    return ok;
  }

  private setFeaturesNocheck(val: bigint): boolean {
    val = BigInt.asUintN(64, val);
    const bad = (val & ~this.hostFeatures) !== 0n;
    val &= this.hostFeatures;
    this.setFeaturesHook(val);
    this.guestFeatures = val;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_set_features', device: this.name, features: val });
    for (const q of this.vq) this.refreshQueueFlags(q);
    return !bad;
  }

  private refreshQueueFlags(q: VirtQueue): void {
    q.applyFeatures(
      this.hasFeature(VIRTIO_RING_F_EVENT_IDX),
      this.hasFeature(VIRTIO_RING_F_INDIRECT_DESC),
      this.hasFeature(VIRTIO_F_NOTIFY_ON_EMPTY),
      !this.isBigEndian(),
      this.hasFeature(VIRTIO_F_RING_PACKED),
    );
  }

  /**
   * QEMU's `virtio_set_status`. With VERSION_1, setting FEATURES_OK runs the feature validation;
   * a refusal leaves the whole status unchanged, so the driver reads FEATURES_OK back as clear.
   * Returns false when refused.
   */
  setStatus(val: number): boolean {
    val &= 0xff;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_set_status', device: this.name, value: val });
    if (this.hasFeature(VIRTIO_F_VERSION_1)) {
      if (!(this.status & VIRTIO_CONFIG_S_FEATURES_OK) && val & VIRTIO_CONFIG_S_FEATURES_OK) {
        if (!this.validateFeatures()) {
          if (tr) tr({ type: 'virtio_features_ok_refused', device: this.name, features: this.guestFeatures });
          return false;
        }
      }
    }
    if ((this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== (val & VIRTIO_CONFIG_S_DRIVER_OK)) {
      this.setStarted((val & VIRTIO_CONFIG_S_DRIVER_OK) !== 0);
    }
    this.guarded(() => this.setStatusHook(val));
    // A broken device keeps reporting it: a driver that writes the status after the error (say,
    // DRIVER_OK after a queue failed to map at enable) must not make NEEDS_RESET disappear while
    // the device stays stopped. QEMU stores the value as written (docs/qemu-differences.md #27).
    this.status = val !== 0 && this.broken && this.hasFeature(VIRTIO_F_VERSION_1) ? val | VIRTIO_CONFIG_S_NEEDS_RESET : val;
    return true;
  }

  /** QEMU's `virtio_set_started`. */
  setStarted(on: boolean): void {
    if (on) this.startOnKick = false;
    this.started = on;
  }

  /**
   * QEMU's `virtio_reset`: status, features, ISR, vectors and every queue back to their initial
   * state. In-flight elements are dropped: their late completions are recognised as stale.
   */
  reset(): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_reset', device: this.name });
    this.setStatus(0);
    this.deviceEndian = this.guestBigEndian ? DeviceEndian.BIG : DeviceEndian.LITTLE;
    this.guarded(() => this.resetDevice());
    this.startOnKick = false;
    this.started = false;
    this.broken = false;
    this.notifiedWhileStopped.clear();
    // Queues first: clearing EVENT_IDX (or the byte order) must not remap, and re-check, rings
    // that are going away; a bad old geometry would call virtioError and leave us broken.
    for (const q of this.vq) q.reset();
    this.setFeaturesNocheck(0n);
    this.queueSel = 0;
    this.status = 0;
    this.disabled = false;
    this.isr = 0;
    this.configVector = VIRTIO_NO_VECTOR;
    this.notifyVector(VIRTIO_NO_VECTOR);
    for (const q of this.vq) this.refreshQueueFlags(q);
  }

  // ---------------------------------------------------------------------------------------
  // Errors and interrupts

  /**
   * QEMU's `virtio_error`: the guest did something the device cannot go on from. With VERSION_1
   * the device sets DEVICE_NEEDS_RESET and sends a configuration-change interrupt; in every case
   * it stops processing until the driver resets it. Never throws.
   */
  virtioError(message: string): void {
    this.lastError = message;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_error', device: this.name, message });
    if (this.onError) this.onError(message);
    if (this.hasFeature(VIRTIO_F_VERSION_1)) {
      this.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
      this.notifyConfig();
    }
    this.broken = true;
  }

  /** OR bits into the ISR (QEMU's `virtio_set_isr`). */
  setIsr(value: number): void {
    this.isr |= value;
  }

  /** Raise `vector` on the transport unless the device is broken or disabled. */
  notifyVector(vector: number): void {
    if (this.processingStopped) return;
    this.bus?.notify(vector);
  }

  /**
   * Re-evaluate the interrupt line after the ISR changed (QEMU's `virtio_update_irq`). A broken
   * device may still lower its line once the driver has acknowledged everything: QEMU 7.2 drops
   * this update too, which leaves a level-triggered line stuck high and the guest in an
   * interrupt storm until it resets the device.
   */
  updateIrq(): void {
    if (this.processingStopped && this.isr === 0) {
      this.bus?.notify(VIRTIO_NO_VECTOR);
      return;
    }
    this.notifyVector(VIRTIO_NO_VECTOR);
  }

  /** A used-buffer notification for `vq`, if the driver wants one now (QEMU's `virtio_notify`). */
  notify(vq: VirtQueue): void {
    const tr = this.tracer;
    if (!vq.shouldNotify()) {
      if (tr) tr({ type: 'virtio_notify_suppressed', device: this.name, queue: vq.index });
      return;
    }
    if (tr) tr({ type: 'virtio_notify', device: this.name, queue: vq.index, vector: vq.vector });
    this.setIsr(VIRTIO_ISR_QUEUE);
    this.notifyVector(vq.vector);
  }

  /** A configuration-change notification (QEMU's `virtio_notify_config`); only after DRIVER_OK. */
  notifyConfig(): void {
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) return;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_notify_config', device: this.name, vector: this.configVector });
    this.setIsr(3);
    this.generation = (this.generation + 1) >>> 0;
    this.notifyVector(this.configVector);
  }

  /**
   * QEMU's `virtio_queue_reset` (VIRTIO_F_RING_RESET): the device's hook, then queue `n` back to
   * its initial state. Queues the device lacks are ignored.
   */
  queueReset(n: number): void {
    const q = this.getQueue(n);
    if (!q) return;
    this.guarded(() => this.queueResetHook(n));
    q.reset();
  }

  /** QEMU's `virtio_queue_enable`: tell the device type that the driver enabled queue `n`. */
  queueEnable(n: number): void {
    if (!this.getQueue(n)) return;
    this.guarded(() => this.queueEnableHook(n));
  }

  /**
   * The driver notified queue `n` (QEMU's `virtio_queue_notify`). The transport has already
   * checked `n` against VIRTIO_QUEUE_MAX; queues the device lacks, or whose rings are not set,
   * ignore it. While the VM is stopped the notify is only remembered (see `vmStateChange`).
   */
  queueNotify(n: number): void {
    const q = this.getQueue(n);
    if (!q || q.desc === 0 || this.broken) return;
    const tr = this.tracer;
    if (!this.vmRunning) {
      this.notifiedWhileStopped.add(n);
      if (tr) tr({ type: 'virtio_queue_notify_deferred', device: this.name, queue: n });
      this.guarded(() => this.queueNotifiedWhileStopped(n));
      return;
    }
    if (tr) tr({ type: 'virtio_queue_notify', device: this.name, queue: n });
    const h = q.handleOutput;
    if (h) {
      // As guarded(), without a closure per notify.
      try {
        h(q);
      } catch (e) {
        this.virtioError(`internal error in ${this.name}: ${e instanceof Error ? e.message : String(e)}`);
      }
      if (this.startOnKick) this.setStarted(true);
    }
  }

  // ---------------------------------------------------------------------------------------
  // VM run state (QEMU's `vdev->vm_running` and `virtio_vmstate_change`)

  /**
   * Whether the VM this device belongs to is running. A device on its own is running; a machine
   * clears it while paused, in prelaunch, during and after migration (`vmStateChange`). While it
   * is clear the device processes no queue, so it touches no guest RAM and raises no interrupt on
   * its own; register accesses still work, and a queue notify is remembered.
   */
  vmRunning = true;
  /** Queues notified while the VM was stopped, kicked on resume. */
  private readonly notifiedWhileStopped = new Set<number>();

  /**
   * The VM started or stopped (QEMU's vm change state handler `virtio_vmstate_change`). On
   * resume the device type's hook runs first (virtio-rng retries what the stop held back), then
   * every queue with rings set up is kicked once if the device is started, as QEMU does when it
   * starts ioeventfd for a running VM: requests made available while stopped, or from the
   * migration stream, get processed without a new notify. A queue notified while stopped is
   * kicked even if the device is not started (a legacy driver may kick before DRIVER_OK).
   */
  vmStateChange(running: boolean): void {
    if (this.vmRunning === running) return;
    this.vmRunning = running;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_vmstate_change', device: this.name, running });
    this.guarded(() => this.vmStateChangeHook(running));
    if (!running) return;
    for (const q of this.vq) {
      // A hook or an earlier kick may stop the VM again, or break the device: stop kicking then.
      if (!this.vmRunning || this.broken) break;
      if (q.desc !== 0 && (this.started || this.notifiedWhileStopped.has(q.index))) this.queueNotify(q.index);
    }
    if (this.vmRunning) this.notifiedWhileStopped.clear();
  }

  /**
   * A notify of queue `n` arrived while the VM is stopped: the core only remembers it, but a
   * device type may note what QEMU's handler notes then (virtio-net's `tx_waiting`, which
   * migrates). It must not touch guest RAM.
   */
  protected queueNotifiedWhileStopped(_n: number): void {}

  /** React to the VM starting or stopping (a device's own vm change state handler). */
  protected vmStateChangeHook(_running: boolean): void {}

  /**
   * Run device code on behalf of a guest action. A throw here is a bug in a device model, not
   * guest input, but it must still not unwind into the host VM's register access: it breaks the
   * device instead, like any other unrecoverable error.
   */
  protected guarded(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.virtioError(`internal error in ${this.name}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space (QEMU's virtio_config_read*/write* and the modern variants)

  /**
   * Read `size` (1, 2 or 4) bytes of device config at `offset`. `legacy` accesses use the
   * guest's byte order, modern ones little-endian. Out-of-range reads return all ones.
   */
  configRead(offset: number, size: 1 | 2 | 4, legacy: boolean): number {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.config.length) {
      return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
    }
    this.guarded(() => this.getConfig(this.config));
    const le = legacy ? !this.guestBigEndian : true;
    const v = new DataView(this.config.buffer, this.config.byteOffset, this.config.byteLength);
    const value = size === 1 ? v.getUint8(offset) : size === 2 ? v.getUint16(offset, le) : v.getUint32(offset, le);
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_config_read', device: this.name, offset, size, value });
    return value;
  }

  /** Write `size` bytes of device config; out-of-range writes are ignored. */
  configWrite(offset: number, size: 1 | 2 | 4, value: number, legacy: boolean): void {
    if (!Number.isInteger(offset) || offset < 0 || offset + size > this.config.length) return;
    const le = legacy ? !this.guestBigEndian : true;
    const v = new DataView(this.config.buffer, this.config.byteOffset, this.config.byteLength);
    if (size === 1) v.setUint8(offset, value & 0xff);
    else if (size === 2) v.setUint16(offset, value & 0xffff, le);
    else v.setUint32(offset, value >>> 0, le);
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_config_write', device: this.name, offset, size, value });
    this.guarded(() => this.setConfig(this.config));
  }
}
