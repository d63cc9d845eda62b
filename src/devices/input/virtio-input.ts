/**
 * virtio-input (VIRTIO 1.2 §5.8; QEMU 7.2 `hw/input/virtio-input.c`): an event queue the device
 * fills with evdev events (le16 type, le16 code, le32 value) and a status queue on which the
 * driver sends events back (keyboard LEDs). The configuration space answers one question at a
 * time: the driver writes `select`/`subsel` and reads `size` and the answer.
 *
 * As QEMU: events are collected until EV_SYN/SYN_REPORT and then delivered as one report, each
 * event into its own buffer, or not at all when the guest has not posted enough buffers (VIRTIO
 * 1.2 §5.8.6.2 lets the device drop events, but never part of a report). An optional backlog
 * (`backlog`, off by default as in QEMU) keeps whole reports waiting instead, bounded, for an
 * embedder that would rather deliver late than lose a key release.
 */
import { VirtIODevice, type DeviceLoadContext, type VirtIODeviceOptions } from '../../virtio/device.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_ID_INPUT } from '../../virtio/constants.js';
import type { QEMUFileReader } from '../../migration/qemu-file.js';
import { VIRTQUEUE_MAX_SIZE } from '../../vring/constants.js';
import type { VirtQueue } from '../../vring/virtqueue.js';
import type { VirtQueueElement } from '../../vring/element.js';
import { callHost } from '../host-callback.js';
import {
  EV_LED,
  EV_SYN,
  LED_CAPSL,
  LED_NUML,
  LED_SCROLLL,
  QEMU_CAPS_LOCK_LED,
  QEMU_NUM_LOCK_LED,
  QEMU_SCROLL_LOCK_LED,
  SYN_REPORT,
  VIRTIO_INPUT_CFG_ID_SERIAL,
  VIRTIO_INPUT_CONFIG_SIZE,
  VIRTIO_INPUT_CONFIG_UNION,
  VIRTIO_INPUT_EVENT_SIZE,
} from './evdev.js';

/** One answer of the configuration space: what `select`/`subsel` return. */
export interface VirtioInputConfigEntry {
  select: number;
  subsel: number;
  /** The `size` byte as QEMU reports it (for strings, the length without the NUL). */
  size: number;
  /** The union's bytes (at most 128; zero beyond). */
  data: Uint8Array;
}

/** Host-side LED state of a keyboard (QEMU's `ledstate`: QEMU_*_LOCK_LED bits). */
export interface LedState {
  numLock: boolean;
  capsLock: boolean;
  scrollLock: boolean;
  /** The QEMU_*_LOCK_LED bits. */
  bits: number;
}

export interface VirtIOInputOptions extends VirtIODeviceOptions {
  /** QEMU's `serial` property: answered at select ID_SERIAL (absent: size 0 there). */
  serial?: string;
  /**
   * Events (in whole reports) that may wait for the guest to post buffers, delivered oldest first
   * when it notifies the event queue. 0 (the default) drops a report that finds no room, as
   * QEMU does; reports beyond the bound are dropped oldest first.
   */
  backlog?: number;
  /** The guest set the keyboard LEDs (a status-queue EV_LED event), as QEMU's `kbd_put_ledstate`. */
  onLeds?: (leds: LedState) => void;
}

/** Events of one report QEMU could ever deliver: one buffer each, and no ring has more than 1024. */
const MAX_REPORT_EVENTS = VIRTQUEUE_MAX_SIZE;

/** A string entry (ID_NAME, ID_SERIAL) as QEMU builds it with snprintf into the 128-byte union. */
export function stringEntry(select: number, s: string, sizeOf = false): VirtioInputConfigEntry {
  const bytes = new TextEncoder().encode(s);
  const data = new Uint8Array(128);
  data.set(bytes.subarray(0, 127));
  // QEMU's ID_NAME entries use sizeof("...") (the NUL counted); ID_SERIAL uses snprintf's return
  // value, which is the whole length even when truncated, kept in a uint8_t.
  const size = sizeOf ? bytes.length + 1 : bytes.length & 0xff;
  return { select, subsel: 0, size, data };
}

/** A bitmap entry from a list of bit numbers; `size` is the bytes up to the highest set bit. */
export function bitmapEntry(select: number, subsel: number, bits: readonly number[]): VirtioInputConfigEntry {
  const data = new Uint8Array(128);
  let size = 0;
  for (const b of bits) {
    if (b <= 0 || b >= 1024) continue; // QEMU skips bit 0 (an unmapped key), and the union is 1024 bits
    data[b >> 3]! |= 1 << (b & 7);
    size = Math.max(size, (b >> 3) + 1);
  }
  return { select, subsel, size, data };
}

/** An entry with literal bytes and the size QEMU declares. */
export function rawEntry(select: number, subsel: number, size: number, bytes: readonly number[] = []): VirtioInputConfigEntry {
  const data = new Uint8Array(128);
  data.set(bytes);
  return { select, subsel, size, data };
}

/** QEMU's `cfg_size`: the largest answer plus the 8-byte header. */
function configSizeOf(entries: readonly VirtioInputConfigEntry[]): number {
  let max = 0;
  for (const e of entries) max = Math.max(max, e.size);
  return max + VIRTIO_INPUT_CONFIG_UNION;
}

/**
 * The entries of a device, with the `serial` one added as QEMU's realize adds it. Throws a
 * RangeError for a serial whose size byte would make the config larger than the structure
 * (QEMU asserts and aborts there).
 */
export function withSerial(entries: readonly VirtioInputConfigEntry[], serial: string | undefined): VirtioInputConfigEntry[] {
  const out = [...entries];
  if (serial !== undefined) out.push(stringEntry(VIRTIO_INPUT_CFG_ID_SERIAL, serial));
  if (configSizeOf(out) > VIRTIO_INPUT_CONFIG_SIZE) {
    throw new RangeError(`serial '${serial}' is too long: its size byte would make the config space larger than ${VIRTIO_INPUT_CONFIG_SIZE} bytes`);
  }
  return out;
}

/**
 * The virtio-input core shared by keyboard, mouse and tablet (QEMU's abstract `virtio-input`):
 * configuration answers, event delivery, the status queue. `changeActive` lets a subclass follow
 * the driver (the HID types route host input to themselves while active).
 */
export abstract class VirtIOInput extends VirtIODevice {
  readonly evt: VirtQueue;
  readonly sts: VirtQueue;
  /** The configuration answers, in QEMU's list order. */
  readonly entries: readonly VirtioInputConfigEntry[];
  /** QEMU's `cfg_select` / `cfg_subsel`: the question the driver asked last. */
  cfgSelect = 0;
  cfgSubsel = 0;
  /** QEMU's `active`: set at DRIVER_OK, cleared by reset; events are dropped while clear. */
  active = false;
  /** Keyboard LED bits the guest set last (QEMU_*_LOCK_LED). */
  ledState = 0;
  /** Reports dropped for want of buffers (or because the device was inactive, stopped or broken). */
  droppedReports = 0;
  readonly backlogLimit: number;
  private readonly onLeds: ((leds: LedState) => void) | undefined;

  // The report being collected (QEMU's `queue`/`qindex`), packed 8 bytes an event.
  private readonly pending = new Uint8Array(MAX_REPORT_EVENTS * VIRTIO_INPUT_EVENT_SIZE);
  private pendingCount = 0;
  /** More events came than any ring could take: the report can only be dropped. */
  private pendingOverflow = false;
  /** Whole reports waiting for buffers, oldest first (only with a backlog). */
  private readonly waiting: Uint8Array[] = [];
  private waitingEvents = 0;
  private readonly elems: VirtQueueElement[] = [];
  private readonly statusBytes = new Uint8Array(VIRTIO_INPUT_EVENT_SIZE);

  protected constructor(opts: VirtIOInputOptions, entries: readonly VirtioInputConfigEntry[], defaultName: string) {
    const all = withSerial(entries, opts.serial);
    super(VIRTIO_ID_INPUT, configSizeOf(all), opts, defaultName);
    this.entries = all;
    this.backlogLimit = Math.max(0, Math.floor(opts.backlog ?? 0));
    this.onLeds = opts.onLeds;
    this.evt = this.addQueue(64, () => this.handleEvt());
    this.sts = this.addQueue(64, () => this.handleSts());
  }

  override get vmsdName(): string {
    return 'virtio-input';
  }

  /** The device type follows `active` (QEMU's `change_active`). */
  protected changeActive(): void {}

  // ---------------------------------------------------------------------------------------
  // Configuration space

  /** The answer for a question, as QEMU's `virtio_input_find_config`. */
  findConfig(select: number, subsel: number): VirtioInputConfigEntry | undefined {
    return this.entries.find((e) => e.select === select && e.subsel === subsel);
  }

  protected override getConfig(config: Uint8Array): void {
    // The whole answer, header included; a question without one reads as zeros (size 0, and
    // select/subsel 0 too, as QEMU clears the whole space).
    const e = this.findConfig(this.cfgSelect, this.cfgSubsel);
    config.fill(0);
    if (!e) return;
    config[0] = e.select;
    config[1] = e.subsel;
    config[2] = e.size;
    config.set(e.data.subarray(0, config.length - VIRTIO_INPUT_CONFIG_UNION), VIRTIO_INPUT_CONFIG_UNION);
  }

  protected override setConfig(config: Uint8Array): void {
    // Any write asks a new question from the select/subsel bytes as they are now, and QEMU
    // notifies a configuration change for it (with DRIVER_OK).
    this.cfgSelect = config[0]!;
    this.cfgSubsel = config[1]!;
    this.notifyConfig();
  }

  // ---------------------------------------------------------------------------------------
  // Status, reset, migration

  protected override setStatusHook(status: number): void {
    if (status & VIRTIO_CONFIG_S_DRIVER_OK && !this.active) {
      this.active = true;
      this.changeActive();
    }
  }

  protected override resetDevice(): void {
    // QEMU keeps the question asked and a report being collected across a reset; only `active` goes.
    if (this.active) {
      this.active = false;
      this.changeActive();
    }
  }

  override loadDeviceState(_f: QEMUFileReader, _version: number, _ctx: DeviceLoadContext): () => void {
    // Nothing in the stream beyond the common blob; what a fresh QEMU destination has instead:
    // no question asked (cfg_select 0), nothing collected.
    return () => {
      this.cfgSelect = 0;
      this.cfgSubsel = 0;
      this.pendingCount = 0;
      this.pendingOverflow = false;
      this.waiting.length = 0;
      this.waitingEvents = 0;
    };
  }

  /** QEMU's `virtio_input_post_load`: active follows the loaded DRIVER_OK. */
  override postLoad(): void {
    this.active = (this.status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0;
    this.changeActive();
  }

  protected override vmStateChangeHook(running: boolean): void {
    if (running) this.flushWaiting();
  }

  // ---------------------------------------------------------------------------------------
  // Events to the guest

  /** Reports waiting for buffers (with a backlog). */
  get waitingReports(): number {
    return this.waiting.length;
  }

  /**
   * Send one evdev event (QEMU's `virtio_input_send`): dropped while inactive, collected until
   * EV_SYN/SYN_REPORT, then the report goes out whole or not at all.
   */
  send(type: number, code: number, value: number): void {
    if (!this.active) return;
    if (this.pendingCount < MAX_REPORT_EVENTS) {
      const o = this.pendingCount * VIRTIO_INPUT_EVENT_SIZE;
      writeEvent(this.pending, o, type, code, value);
      this.pendingCount++;
    } else {
      this.pendingOverflow = true;
    }
    if ((type & 0xffff) !== EV_SYN || (code & 0xffff) !== SYN_REPORT) return;
    // A view of the collected events: copied only if the report has to wait.
    const report = this.pending.subarray(0, this.pendingCount * VIRTIO_INPUT_EVENT_SIZE);
    const overflow = this.pendingOverflow;
    this.pendingCount = 0;
    this.pendingOverflow = false;
    if (this.waiting.length > 0) {
      // Reports keep their order: this one waits behind the older ones.
      if (!overflow) this.queueWaiting(report.slice());
      else this.droppedReports++;
      this.flushWaiting();
      return;
    }
    if (this.deliver(report, overflow)) return;
    if (!overflow && this.backlogLimit > 0) this.queueWaiting(report.slice());
    else this.droppedReports++;
  }

  /**
   * Put one report into the event queue: pop a buffer per event first and give them all back if
   * one is missing (QEMU's check for space), then write and return each. An over-long report
   * tries one pop more than any ring holds, so that it fails exactly as QEMU's would.
   */
  private deliver(report: Uint8Array, overflow: boolean): boolean {
    if (!this.vmRunning) return false;
    const n = overflow ? MAX_REPORT_EVENTS + 1 : report.length / VIRTIO_INPUT_EVENT_SIZE;
    const vq = this.evt;
    const elems = this.elems;
    elems.length = 0;
    for (let i = 0; i < n; i++) {
      const e = vq.pop();
      if (!e) {
        for (let j = elems.length - 1; j >= 0; j--) vq.unpop(elems[j]!);
        elems.length = 0;
        const tr = this.tracer;
        if (tr) tr({ type: 'device', device: this.name, message: `virtio_input_queue_full (${n} events)` });
        return false;
      }
      elems.push(e);
    }
    for (let i = 0; i < elems.length; i++) {
      const e = elems[i]!;
      // Into the writable buffers, as much of the 8 bytes as they hold (QEMU's iov_from_buf).
      const len = e.writeIn(0, report.subarray(i * VIRTIO_INPUT_EVENT_SIZE, (i + 1) * VIRTIO_INPUT_EVENT_SIZE));
      vq.push(e, len);
    }
    elems.length = 0;
    this.notify(vq);
    return true;
  }

  private queueWaiting(report: Uint8Array): void {
    const events = report.length / VIRTIO_INPUT_EVENT_SIZE;
    if (events > this.backlogLimit) {
      this.droppedReports++;
      return;
    }
    this.waiting.push(report);
    this.waitingEvents += events;
    while (this.waitingEvents > this.backlogLimit) {
      const old = this.waiting.shift()!;
      this.waitingEvents -= old.length / VIRTIO_INPUT_EVENT_SIZE;
      this.droppedReports++;
    }
  }

  /** Deliver waiting reports, oldest first, while they fit. */
  private flushWaiting(): void {
    while (this.waiting.length > 0 && this.active) {
      const r = this.waiting[0]!;
      if (!this.deliver(r, false)) return;
      this.waiting.shift();
      this.waitingEvents -= r.length / VIRTIO_INPUT_EVENT_SIZE;
    }
  }

  /** The driver posted event buffers: QEMU does nothing; with a backlog, waiting reports go out. */
  private handleEvt(): void {
    this.flushWaiting();
  }

  // ---------------------------------------------------------------------------------------
  // Events from the guest

  /**
   * QEMU's `virtio_input_handle_sts`: each buffer's first 8 readable bytes are an event (zeros
   * where the buffer is shorter); the buffer goes back with the number of bytes read as its
   * length, which QEMU reports even though nothing was written. One notification at the end.
   */
  private handleSts(): void {
    const vq = this.sts;
    const ev = this.statusBytes;
    for (;;) {
      const e = vq.pop();
      if (!e) break;
      ev.fill(0);
      const len = e.readOut(0, ev);
      const dv = new DataView(ev.buffer);
      this.handleStatus(dv.getUint16(0, true), dv.getUint16(2, true), dv.getUint32(4, true));
      vq.push(e, len, false);
    }
    this.notify(vq);
  }

  /** An event the guest sent (QEMU's `virtio_input_hid_handle_status`): LEDs, anything else ignored. */
  protected handleStatus(type: number, code: number, value: number): void {
    if (type !== EV_LED) {
      const tr = this.tracer;
      if (tr) tr({ type: 'guest_error', device: this.name, message: `status queue: unknown type ${type}` });
      return;
    }
    const bit = code === LED_NUML ? QEMU_NUM_LOCK_LED : code === LED_CAPSL ? QEMU_CAPS_LOCK_LED : code === LED_SCROLLL ? QEMU_SCROLL_LOCK_LED : 0;
    this.ledState = value !== 0 ? this.ledState | bit : this.ledState & ~bit;
    const s = this.ledState;
    const cb = this.onLeds;
    if (cb) callHost(this, 'onLeds', () => cb({ numLock: (s & QEMU_NUM_LOCK_LED) !== 0, capsLock: (s & QEMU_CAPS_LOCK_LED) !== 0, scrollLock: (s & QEMU_SCROLL_LOCK_LED) !== 0, bits: s }));
  }
}

function writeEvent(buf: Uint8Array, o: number, type: number, code: number, value: number): void {
  buf[o] = type & 0xff;
  buf[o + 1] = (type >>> 8) & 0xff;
  buf[o + 2] = code & 0xff;
  buf[o + 3] = (code >>> 8) & 0xff;
  const v = value >>> 0;
  buf[o + 4] = v & 0xff;
  buf[o + 5] = (v >>> 8) & 0xff;
  buf[o + 6] = (v >>> 16) & 0xff;
  buf[o + 7] = v >>> 24;
}
