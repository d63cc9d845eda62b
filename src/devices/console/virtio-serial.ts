/**
 * virtio-serial, the virtio console device with MULTIPORT (VIRTIO 1.2 §5.3; QEMU 7.2
 * `hw/char/virtio-serial-bus.c` and `hw/char/virtio-console.c`), and its ports: `virtconsole`
 * (a console the guest binds to hvc) and `virtserialport` (a named generic port).
 *
 * Queues as QEMU lays them out: port 0's receive/transmit pair at 0/1, the control pair at 2/3
 * (device to driver, driver to device), then port n's pair at 2+2n/3+2n, for `max_ports` ports.
 * The control protocol is QEMU's: DEVICE_READY is answered with a PORT_ADD per port; PORT_READY
 * with CONSOLE_PORT, PORT_NAME and PORT_OPEN as they apply; PORT_OPEN from the guest opens or
 * closes the port; the host side's connection is announced with PORT_OPEN. A control message
 * finds no receive buffer is not sent, as in QEMU.
 *
 * Data: host bytes go to the guest only as far as the guest has posted receive buffers (the
 * chardev keeps the rest, bounded, and pauses its source); guest bytes go to the chardev, and a
 * generic port whose chardev is full keeps the current element ("throttled") until the chardev
 * can take more, as QEMU does. Console ports are never throttled: what the chardev refuses is
 * dropped, as QEMU drops it (counted in `droppedOutput` and traced).
 *
 * Every guest value is checked: control messages are read through the element's bounds (8
 * bytes at most), port ids are looked up, lengths come from popped elements. While the VM is
 * stopped nothing touches guest RAM: host input waits in the chardev and events wait for resume.
 */
import type { QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { loadVirtQueueElement, restoreVirtQueueElement, saveVirtQueueElement, type LoadedElement } from '../../migration/virtqueue-element.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_RING_PACKED, VIRTIO_ID_CONSOLE, bit } from '../../virtio/constants.js';
import { VirtIODevice, type DeviceLoadContext, type VirtIODeviceOptions } from '../../virtio/device.js';
import type { VirtQueueElement } from '../../vring/element.js';
import type { VirtQueue } from '../../vring/virtqueue.js';
import { CHR_READ_BUF_LEN, type CharBackend, type CharEvent, type CharFrontend } from './chardev.js';
import {
  VIRTIO_CONSOLE_BAD_ID,
  VIRTIO_CONSOLE_CFG_EMERG_WR,
  VIRTIO_CONSOLE_CFG_MAX_NR_PORTS,
  VIRTIO_CONSOLE_CONFIG_SIZE,
  VIRTIO_CONSOLE_CONSOLE_PORT,
  VIRTIO_CONSOLE_CONTROL_SIZE,
  VIRTIO_CONSOLE_DEVICE_READY,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_PORT_ADD,
  VIRTIO_CONSOLE_PORT_NAME,
  VIRTIO_CONSOLE_PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY,
  VIRTIO_CONSOLE_PORT_REMOVE,
  VIRTIO_SERIAL_CONTROL_QUEUE_SIZE,
  VIRTIO_SERIAL_DEFAULT_MAX_PORTS,
  VIRTIO_SERIAL_MAX_SUPPORTED_PORTS,
  VIRTIO_SERIAL_PORT_QUEUE_SIZE,
} from './constants.js';

/** A port could not be added: the message is QEMU's. */
export class VirtIOSerialPortError extends Error {
  override name = 'VirtIOSerialPortError';
}

export interface VirtIOSerialPortOptions {
  /** A console port (`virtconsole`): bound to hvc by the guest, never throttled. */
  console?: boolean;
  /** Port id (QEMU's `nr`); by default the first free id (0 for the first console). */
  nr?: number;
  /** Name sent to the guest with PORT_NAME (QEMU's `name`, e.g. "org.qemu.guest_agent.0"). */
  name?: string;
  /** Where the port's bytes go; none: output is discarded and the port never opens to the host. */
  chardev?: CharBackend;
  /** The port's device id (QEMU's `-device ...,id=`), which VSERPORT_CHANGE events carry. */
  deviceId?: string;
}

/**
 * One port on the virtio-serial bus (QEMU's VirtIOSerialPort with VirtConsole's chardev glue).
 * It is the chardev's frontend: the chardev asks it how much the guest can take and hands it
 * bytes; the port tells the chardev what the guest wrote.
 */
export class VirtIOSerialPort implements CharFrontend {
  readonly isConsole: boolean;
  /** The port number the guest sees. */
  id: number;
  readonly name: string | undefined;
  readonly chardev: CharBackend | undefined;
  readonly deviceId: string | undefined;
  /** The guest has the port open (PORT_OPEN 1 from the driver). */
  guestConnected = false;
  /** The host side is open (the chardev connected; always for a console with a chardev). */
  hostConnected = false;
  /** The chardev refused output: hold `elem` until it can take more. */
  throttled = false;
  /** Transmit element popped and not finished (QEMU's `port->elem`), with where it stopped. */
  elem: VirtQueueElement | undefined;
  iovIdx = 0;
  iovOffset = 0;
  /** Console output the chardev did not take (QEMU drops it; counted here). */
  droppedOutput = 0;
  /** The guest opened or closed the port (QEMU's VSERPORT_CHANGE event, for ports with an id). */
  onGuestConnected: ((open: boolean) => void) | undefined;

  /** @internal set when plugged */
  ivq!: VirtQueue;
  /** @internal */
  ovq!: VirtQueue;
  /** @internal a flush waits for the VM to run */
  flushPending = false;
  private cancelWatch: (() => void) | undefined;

  /** @internal use `VirtIOSerial.addPort` */
  constructor(readonly vser: VirtIOSerial, opts: VirtIOSerialPortOptions) {
    this.isConsole = opts.console ?? false;
    this.id = opts.nr ?? VIRTIO_CONSOLE_BAD_ID;
    // A C string ends at its first NUL; so does the name QEMU sends.
    const name = opts.name;
    this.name = name === undefined ? undefined : name.includes('\0') ? name.slice(0, name.indexOf('\0')) : name;
    this.chardev = opts.chardev;
    this.deviceId = opts.deviceId;
  }

  // CharFrontend: QEMU's chr_can_read, chr_read and chr_event of virtio-console.c.
  canRead(): number {
    return this.vser.guestReady(this);
  }
  read(data: Uint8Array): number {
    return this.vser.hostInput(this, data);
  }
  event(ev: CharEvent): void {
    this.vser.chardevEvent(this, ev);
  }

  /** @internal QEMU's `flush_buf`: the guest wrote `data`; returns the bytes the chardev took. */
  haveData(data: Uint8Array): number {
    const chr = this.chardev;
    // No chardev: everything is consumed, as QEMU does without a backend.
    if (!chr) return data.length;
    const len = data.length;
    let ret = chr.write(data);
    if (!(ret >= 0)) ret = 0;
    if (ret > len) ret = len;
    const tr = this.vser.tracer;
    if (tr) tr({ type: 'virtio_console_flush_buf', device: this.vser.name, port: this.id, len, ret });
    if (ret < len) {
      if (this.isConsole) {
        // QEMU does not throttle consoles: Linux's hvc driver writes with spinlocks held, so a
        // stalled console would stall the guest kernel. The excess is dropped, as there.
        this.droppedOutput += len - ret;
      } else {
        this.vser.throttlePort(this, true);
        this.cancelWatch ??= chr.whenWritable(() => {
          this.cancelWatch = undefined;
          this.vser.throttlePort(this, false);
        });
      }
    }
    return ret;
  }

  /** @internal stop waiting for the chardev (closed, removed) */
  dropWatch(): void {
    this.cancelWatch?.();
    this.cancelWatch = undefined;
  }
}

export interface VirtIOSerialOptions extends VirtIODeviceOptions {
  /** QEMU's `max_ports` (default 31, at most 511). */
  maxPorts?: number;
  /** QEMU's `emergency-write` (default true): offer EMERG_WRITE and the `emerg_wr` config field. */
  emergencyWrite?: boolean;
  /** Name of the port bus in messages (QEMU's `<id>.0` or `virtio-serial-bus.N`). */
  busName?: string;
}

/** What a load found for one port, kept for the post-load step. */
interface PostLoadPort {
  port: VirtIOSerialPort;
  hostConnected: boolean;
}

/** virtio-serial: QEMU's VirtIOSerial (`virtio-serial-device`, vmsd "virtio-console"). */
export class VirtIOSerial extends VirtIODevice {
  readonly maxPorts: number;
  readonly emergencyWrite: boolean;
  readonly busName: string;
  /** Receive (host to guest) and transmit queues by port id. */
  readonly ivqs: VirtQueue[] = [];
  readonly ovqs: VirtQueue[] = [];
  readonly cIvq: VirtQueue;
  readonly cOvq: VirtQueue;
  /** Ports in the order they were added (QEMU's `ports` list: the save order). */
  readonly ports: VirtIOSerialPort[] = [];
  /** Bitmap of port ids in use; bit 0 stays reserved for a console (QEMU's `ports_map`). */
  readonly portsMap: Uint32Array;
  /** Control messages that found no receive buffer (QEMU drops them too). */
  droppedControlMessages = 0;
  private postLoadPorts: PostLoadPort[] | undefined;
  private readonly header = new Uint8Array(VIRTIO_CONSOLE_CONTROL_SIZE);

  constructor(opts: VirtIOSerialOptions) {
    const maxPorts = opts.maxPorts ?? VIRTIO_SERIAL_DEFAULT_MAX_PORTS;
    // virtio_serial_device_realize's checks, with its messages.
    if (!Number.isInteger(maxPorts) || maxPorts < 0) throw new RangeError(`max_ports ${maxPorts} is not an unsigned integer`);
    if (maxPorts === 0) throw new RangeError('Maximum number of serial ports not specified');
    if (maxPorts > VIRTIO_SERIAL_MAX_SUPPORTED_PORTS) throw new RangeError(`maximum ports supported: ${VIRTIO_SERIAL_MAX_SUPPORTED_PORTS}`);
    const emergencyWrite = opts.emergencyWrite ?? true;
    // Without EMERG_WRITE the config ends before `emerg_wr`.
    super(VIRTIO_ID_CONSOLE, emergencyWrite ? VIRTIO_CONSOLE_CONFIG_SIZE : VIRTIO_CONSOLE_CFG_EMERG_WR, opts, 'virtio-serial', emergencyWrite ? bit(VIRTIO_CONSOLE_F_EMERG_WRITE) : 0n);
    this.maxPorts = maxPorts;
    this.emergencyWrite = emergencyWrite;
    this.busName = opts.busName ?? 'virtio-serial-bus.0';
    // Queue order is part of the guest ABI: port 0's pair, the control pair, then the rest.
    this.ivqs[0] = this.addQueue(VIRTIO_SERIAL_PORT_QUEUE_SIZE, (vq) => this.handleInput(vq));
    this.ovqs[0] = this.addQueue(VIRTIO_SERIAL_PORT_QUEUE_SIZE, (vq) => this.handleOutput(vq));
    this.cIvq = this.addQueue(VIRTIO_SERIAL_CONTROL_QUEUE_SIZE, () => undefined);
    this.cOvq = this.addQueue(VIRTIO_SERIAL_CONTROL_QUEUE_SIZE, (vq) => this.controlOut(vq));
    for (let i = 1; i < maxPorts; i++) {
      this.ivqs[i] = this.addQueue(VIRTIO_SERIAL_PORT_QUEUE_SIZE, (vq) => this.handleInput(vq));
      this.ovqs[i] = this.addQueue(VIRTIO_SERIAL_PORT_QUEUE_SIZE, (vq) => this.handleOutput(vq));
    }
    this.portsMap = new Uint32Array(Math.ceil(maxPorts / 32));
    // Port 0 is kept for a console, for old guests that know only one port.
    this.markPortAdded(0);
  }

  override get vmsdName(): string {
    return 'virtio-console';
  }
  override get vmsdVersion(): number {
    return 3;
  }

  /** MULTIPORT is offered when more than one port can exist (QEMU's `get_features`). */
  protected override getFeatures(features: bigint): bigint {
    return this.maxPorts > 1 ? features | bit(VIRTIO_CONSOLE_F_MULTIPORT) : features;
  }

  /** The driver negotiated MULTIPORT (QEMU's `use_multiport`). */
  get multiport(): boolean {
    return this.hasFeature(VIRTIO_CONSOLE_F_MULTIPORT);
  }

  // ---------------------------------------------------------------------------------------
  // Ports

  /** The port with id `id` (QEMU's `find_port_by_id`; BAD_ID finds nothing). */
  findPortById(id: number): VirtIOSerialPort | undefined {
    if (id === VIRTIO_CONSOLE_BAD_ID) return undefined;
    return this.ports.find((p) => p.id === id);
  }

  findPortByName(name: string): VirtIOSerialPort | undefined {
    return this.ports.find((p) => p.name !== undefined && p.name === name);
  }

  private markPortAdded(id: number): void {
    this.portsMap[id >>> 5] = (this.portsMap[id >>> 5]! | (1 << (id & 31))) >>> 0;
  }

  /** First id not in the map (QEMU's `find_free_port_id`, which looks at whole words). */
  private findFreePortId(): number {
    for (let i = 0; i < this.portsMap.length; i++) {
      const free = ~this.portsMap[i]! >>> 0;
      if (free !== 0) return i * 32 + (31 - Math.clz32(free & -free));
    }
    return VIRTIO_CONSOLE_BAD_ID;
  }

  /**
   * Add a port (QEMU's `virtser_port_device_realize` then `virtser_port_device_plug`): checks
   * in QEMU's order with its messages (thrown as `VirtIOSerialPortError`), then the port is
   * announced with PORT_ADD and a configuration-change interrupt, which reach a running guest
   * only (hot plug). `otherNames` are names taken on other virtio-serial devices: QEMU's name
   * check spans all of them.
   */
  addPort(opts: VirtIOSerialPortOptions = {}, otherNames?: (name: string) => boolean): VirtIOSerialPort {
    const port = new VirtIOSerialPort(this, opts);
    const nr = opts.nr;
    if (nr !== undefined && (!Number.isInteger(nr) || nr < 0 || nr > 0xffff_ffff)) throw new VirtIOSerialPortError(`Parameter 'nr' expects uint32_t`);
    const pluggingPort0 = port.isConsole && !this.findPortById(0);
    if (this.findPortById(port.id)) throw new VirtIOSerialPortError(`virtio-serial-bus: A port already exists at id ${port.id}`);
    if (port.name !== undefined && (this.findPortByName(port.name) || otherNames?.(port.name))) {
      throw new VirtIOSerialPortError(`virtio-serial-bus: A port already exists by name ${port.name}`);
    }
    if (port.id === VIRTIO_CONSOLE_BAD_ID) {
      if (pluggingPort0) port.id = 0;
      else {
        port.id = this.findFreePortId();
        if (port.id === VIRTIO_CONSOLE_BAD_ID) throw new VirtIOSerialPortError('virtio-serial-bus: Maximum port limit for this device reached');
      }
    }
    if (port.id >= this.maxPorts) throw new VirtIOSerialPortError(`virtio-serial-bus: Out-of-range port id specified, max. allowed: ${this.maxPorts - 1}`);
    // virtconsole_realize.
    if (port.id === 0 && !port.isConsole) {
      throw new VirtIOSerialPortError('Port number 0 on virtio-serial devices reserved for virtconsole devices for backward compatibility.');
    }
    port.ivq = this.ivqs[port.id]!;
    port.ovq = this.ovqs[port.id]!;
    const chr = port.chardev;
    if (chr) {
      if (chr.frontend || this.ports.some((p) => p.chardev === chr)) throw new VirtIOSerialPortError(`Device '${chr.id}' is in use`);
      // A console is open whatever its chardev does; a generic port follows the chardev's
      // connection (QEMU replays OPENED for a chardev that is already open).
      if (port.isConsole || chr.opened) this.serialOpen(port);
      // The chardev delivers only while the VM runs: QEMU's machine reset detaches it until the
      // VM starts (`enable_backend` with vm_running false), and events meanwhile wait for then.
      if (this.vmRunning) chr.attach(port);
    }
    // virtser_port_device_plug.
    this.ports.push(port);
    this.markPortAdded(port.id);
    this.guarded(() => this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_ADD, 1));
    this.notifyConfig();
    return port;
  }

  /**
   * Remove a port (QEMU's unplug, `remove_port`): its id is freed (port 0 stays reserved), what
   * it held and what waits on its transmit queue is returned to the guest, and the guest is told
   * with PORT_REMOVE.
   */
  removePort(port: VirtIOSerialPort): void {
    const i = this.ports.indexOf(port);
    if (i < 0) return;
    if (port.id !== 0) this.portsMap[port.id >>> 5] = (this.portsMap[port.id >>> 5]! & ~(1 << (port.id & 31))) >>> 0;
    this.guarded(() => {
      this.returnThrottleData(port);
      this.discardVqData(port.ovq);
      this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_REMOVE, 1);
    });
    this.ports.splice(i, 1);
    port.dropWatch();
    if (port.chardev?.frontend === port) port.chardev.attach(undefined);
  }

  // ---------------------------------------------------------------------------------------
  // Control queues

  /** Send a control message to the guest (QEMU's `send_control_msg`); returns the bytes sent. */
  private sendControlMsg(buf: Uint8Array, port: number, event: number, value: number): number {
    const vq = this.cIvq;
    let sent = false;
    if (vq.ready && this.vmRunning) {
      const elem = vq.pop();
      if (elem) {
        elem.writeIn(0, buf);
        // QEMU reports the whole message as written even into a shorter buffer; used.len here
        // is what the buffer took (docs/qemu-differences.md).
        vq.push(elem, buf.length);
        this.notify(vq);
        sent = true;
      }
    }
    if (!sent) this.droppedControlMessages++;
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_serial_send_control_event', device: this.name, port, event, value, sent });
    return sent ? buf.length : 0;
  }

  private controlHeader(id: number, event: number, value: number, into: Uint8Array): void {
    const v = new DataView(into.buffer, into.byteOffset, VIRTIO_CONSOLE_CONTROL_SIZE);
    const le = !this.isBigEndian();
    v.setUint32(0, id >>> 0, le);
    v.setUint16(4, event, le);
    v.setUint16(6, value & 0xffff, le);
  }

  /** QEMU's `send_control_event`: id, event and value in the guest's byte order. */
  sendControlEvent(id: number, event: number, value: number): number {
    const buf = new Uint8Array(VIRTIO_CONSOLE_CONTROL_SIZE);
    this.controlHeader(id, event, value, buf);
    return this.sendControlMsg(buf, id, event, value);
  }

  /** The driver sent control messages (QEMU's `control_out`). */
  private controlOut(vq: VirtQueue): void {
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      // Only the 8-byte header is ever looked at; the rest of a long buffer is not copied.
      const n = elem.readOut(0, this.header);
      this.handleControlMessage(this.header.subarray(0, n), elem.outBytes);
      vq.push(elem, 0);
    }
    this.notify(vq);
  }

  /**
   * One control message from the driver (QEMU's `handle_control_message`): shorter than 8 bytes,
   * an unknown port id, or an event the driver does not send is ignored; the buffer is returned
   * either way.
   */
  private handleControlMessage(hdr: Uint8Array, len: number): void {
    if (len < VIRTIO_CONSOLE_CONTROL_SIZE || hdr.length < VIRTIO_CONSOLE_CONTROL_SIZE) {
      this.guestError(`invalid control message of ${len} bytes`);
      return;
    }
    const v = new DataView(hdr.buffer, hdr.byteOffset, VIRTIO_CONSOLE_CONTROL_SIZE);
    const le = !this.isBigEndian();
    const id = v.getUint32(0, le);
    const event = v.getUint16(4, le);
    const value = v.getUint16(6, le);
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_serial_handle_control_message', device: this.name, port: id, event, value });
    if (event === VIRTIO_CONSOLE_DEVICE_READY) {
      if (!value) {
        this.guestError(`virtio-serial-bus: Guest failure in adding device ${this.busName}`);
        return;
      }
      // The driver is up: announce every port.
      for (const p of this.ports) this.sendControlEvent(p.id, VIRTIO_CONSOLE_PORT_ADD, 1);
      return;
    }
    const port = this.findPortById(id);
    if (!port) {
      this.guestError(`virtio-serial-bus: Unexpected port id ${id} for device ${this.busName}`);
      return;
    }
    switch (event) {
      case VIRTIO_CONSOLE_PORT_READY:
        if (!value) {
          this.guestError(`virtio-serial-bus: Guest failure in adding port ${port.id} for device ${this.busName}`);
          break;
        }
        // The guest has set the port up: tell it what kind of port it is and its state.
        if (port.isConsole) this.sendControlEvent(port.id, VIRTIO_CONSOLE_CONSOLE_PORT, 1);
        if (port.name !== undefined) {
          const name = new TextEncoder().encode(port.name);
          const buf = new Uint8Array(VIRTIO_CONSOLE_CONTROL_SIZE + name.length + 1);
          this.controlHeader(port.id, VIRTIO_CONSOLE_PORT_NAME, 1, buf);
          buf.set(name, VIRTIO_CONSOLE_CONTROL_SIZE);
          this.sendControlMsg(buf, port.id, VIRTIO_CONSOLE_PORT_NAME, 1);
        }
        if (port.hostConnected) this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_OPEN, 1);
        break;
      case VIRTIO_CONSOLE_PORT_OPEN:
        port.guestConnected = value !== 0;
        this.setGuestConnected(port, port.guestConnected);
        // The guest may take input now.
        port.chardev?.acceptInput();
        break;
      default:
        // PORT_ADD, CONSOLE_PORT, RESIZE, ... are the device's to send: ignored, as QEMU does.
        break;
    }
  }

  private guestError(message: string): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'guest_error', device: this.name, message });
  }

  /** QEMU's `set_guest_connected` of virtio-console.c. */
  private setGuestConnected(port: VirtIOSerialPort, open: boolean): void {
    if (!port.isConsole) port.chardev?.setFrontendOpen(open);
    if (port.deviceId !== undefined) port.onGuestConnected?.(open);
  }

  // ---------------------------------------------------------------------------------------
  // Data queues

  /** The port on queue `vq` (QEMU's `find_port_by_vq`). */
  private portOfQueue(vq: VirtQueue): VirtIOSerialPort | undefined {
    return this.ports.find((p) => p.ivq === vq || p.ovq === vq);
  }

  /** The guest posted receive buffers (QEMU's `handle_input`): the chardev may deliver. */
  private handleInput(vq: VirtQueue): void {
    const port = this.portOfQueue(vq);
    // QEMU tells the chardev only for a port open on both sides; its chardevs poll the guest's
    // readiness in every main-loop turn anyway, so offering the input again here is the same.
    port?.chardev?.acceptInput();
  }

  /** The guest wrote to a port (QEMU's `handle_output`). */
  private handleOutput(vq: VirtQueue): void {
    const port = this.portOfQueue(vq);
    if (!port || !port.hostConnected) {
      this.discardVqData(vq);
      return;
    }
    if (!port.throttled) this.doFlushQueuedData(port, vq);
  }

  /**
   * Return every available buffer unused (QEMU's `discard_vq_data`). Not while the VM is
   * stopped (a port removed then): the ring is guest RAM.
   */
  private discardVqData(vq: VirtQueue): void {
    if (!vq.ready || !this.vmRunning) return;
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      vq.push(elem, 0);
    }
    this.notify(vq);
  }

  /** Forget the element a throttled port held (QEMU's `discard_throttle_data`): on reset. */
  private discardThrottleData(port: VirtIOSerialPort): void {
    if (port.elem) {
      port.ovq.detach(port.elem);
      port.elem = undefined;
    }
  }

  /**
   * Give the element a throttled port held back to the guest, used with length 0: the host side
   * went away. QEMU detaches it instead, so the guest never gets those descriptors back
   * (docs/qemu-differences.md).
   */
  private returnThrottleData(port: VirtIOSerialPort): void {
    const elem = port.elem;
    if (!elem) return;
    port.elem = undefined;
    // The caller discards the rest of the queue next, and notifies once for both.
    if (this.vmRunning) {
      port.ovq.push(elem, 0);
    } else {
      port.ovq.detach(elem);
    }
  }

  /**
   * Pass what the guest wrote on `vq` to the port's chardev (QEMU's `do_flush_queued_data`),
   * element by element, until the queue is empty or the chardev is full. A partly written
   * element stays with the port, with the entry and offset to resume at.
   */
  private doFlushQueuedData(port: VirtIOSerialPort, vq: VirtQueue): void {
    if (!this.vmRunning) {
      port.flushPending = true;
      return;
    }
    port.flushPending = false;
    while (!port.throttled) {
      // Pop an element only if the last one was finished.
      if (!port.elem) {
        const e = vq.pop();
        if (!e) break;
        port.elem = e;
        port.iovIdx = 0;
        port.iovOffset = 0;
      }
      const elem = port.elem;
      for (let i = port.iovIdx; i < elem.outNum; i++) {
        const len = elem.sgLen[i]!;
        const off = Math.min(port.iovOffset, len);
        const view = len - off > 0 ? this.memory.view(elem.sgAddr[i]! + off, len - off) : undefined;
        const ret = view ? port.haveData(view) : 0;
        if (!port.elem) return; // the port closed under us
        if (port.throttled) {
          port.iovIdx = i;
          if (ret > 0) port.iovOffset += ret;
          break;
        }
        port.iovOffset = 0;
      }
      if (port.throttled) break;
      vq.push(elem, 0);
      port.elem = undefined;
    }
    this.notify(vq);
  }

  /** QEMU's `flush_queued_data`, run when the port is unthrottled. */
  private flushQueuedData(port: VirtIOSerialPort): void {
    if (!port.ovq.ready) return;
    this.doFlushQueuedData(port, port.ovq);
  }

  /**
   * Throttle or unthrottle a port (QEMU's `virtio_serial_throttle_port`). Unthrottling resumes
   * the flush: now if the VM runs, else when it resumes.
   */
  throttlePort(port: VirtIOSerialPort, throttle: boolean): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_serial_throttle_port', device: this.name, port: port.id, throttle });
    port.throttled = throttle;
    if (throttle) return;
    if (!this.ports.includes(port)) return;
    if (!this.vmRunning) {
      port.flushPending = true;
      return;
    }
    this.guarded(() => this.flushQueuedData(port));
  }

  // ---------------------------------------------------------------------------------------
  // Host side (QEMU's virtio_serial_open/close/write/guest_ready and virtio-console.c)

  /** The host side of `port` opened (QEMU's `virtio_serial_open`). */
  serialOpen(port: VirtIOSerialPort): void {
    if (port.hostConnected) return;
    port.hostConnected = true;
    this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_OPEN, 1);
  }

  /**
   * The host side of `port` closed (QEMU's `virtio_serial_close`): what the guest had written and
   * the chardev did not take is returned to the guest unsent, and the guest is told.
   */
  serialClose(port: VirtIOSerialPort): void {
    port.hostConnected = false;
    port.throttled = false;
    port.dropWatch();
    this.returnThrottleData(port);
    this.discardVqData(port.ovq);
    this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_OPEN, 0);
  }

  /**
   * How many bytes the guest can take on `port` now (QEMU's `virtio_serial_guest_ready`): none
   * unless the VM runs, the driver is up, the port is open on both sides (the guest side only
   * matters with MULTIPORT) and receive buffers wait. Counts up to a chardev read's worth.
   */
  guestReady(port: VirtIOSerialPort): number {
    if (!this.vmRunning || !port.hostConnected) return 0;
    const vq = port.ivq;
    if (!vq.ready || !(this.status & VIRTIO_CONFIG_S_DRIVER_OK) || vq.isEmpty()) return 0;
    if (this.multiport && !port.guestConnected) return 0;
    let n = 0;
    this.guarded(() => {
      n = vq.availInBytes(CHR_READ_BUF_LEN);
    });
    return n;
  }

  /** Host bytes for the guest (QEMU's `chr_read` → `virtio_serial_write`); returns bytes taken. */
  hostInput(port: VirtIOSerialPort, data: Uint8Array): number {
    if (!this.vmRunning || !port.hostConnected || !port.guestConnected) return 0;
    let n = 0;
    this.guarded(() => {
      n = this.writeToPort(port, data);
    });
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_console_chr_read', device: this.name, port: port.id, len: n });
    return n;
  }

  /** Fill the port's receive buffers with `data` (QEMU's `write_to_port`). */
  private writeToPort(port: VirtIOSerialPort, data: Uint8Array): number {
    const vq = port.ivq;
    if (!vq.ready) return 0;
    let offset = 0;
    while (offset < data.length) {
      const elem = vq.pop();
      if (!elem) break;
      const len = elem.writeIn(0, offset === 0 ? data : data.subarray(offset));
      offset += len;
      vq.push(elem, len);
    }
    this.notify(vq);
    return offset;
  }

  /** The chardev connected or went away (QEMU's `chr_event`; consoles ignore it). */
  chardevEvent(port: VirtIOSerialPort, ev: CharEvent): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'virtio_console_chr_event', device: this.name, port: port.id, event: ev });
    if (port.isConsole || !this.ports.includes(port)) return;
    this.guarded(() => {
      if (ev === 'opened') this.serialOpen(port);
      else this.serialClose(port);
    });
  }

  /**
   * Attach or detach the ports' chardevs as the VM runs or stops (QEMU's
   * `virtconsole_enable_backend`): a detached chardev delivers nothing and its events wait. On
   * attach the port catches up with the chardev's state: QEMU replays an OPENED it missed; a
   * CLOSED it missed is applied here too (QEMU keeps such a port open, docs/qemu-differences.md).
   */
  private enableBackends(enable: boolean): void {
    for (const port of this.ports) {
      const chr = port.chardev;
      if (!chr) continue;
      if (!enable) {
        if (chr.frontend === port) chr.attach(undefined);
        continue;
      }
      if (chr.frontend !== port) {
        chr.attach(port);
        if (!port.isConsole) {
          if (chr.opened && !port.hostConnected) this.serialOpen(port);
          else if (!chr.opened && port.hostConnected) this.serialClose(port);
        }
      }
      chr.acceptInput();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Status, reset, run state

  /** Ports lose their guest side, and throttled data is dropped (QEMU's `guest_reset`). */
  private guestReset(): void {
    for (const port of this.ports) {
      this.discardThrottleData(port);
      if (port.guestConnected) {
        port.guestConnected = false;
        this.setGuestConnected(port, false);
      }
    }
  }

  /** QEMU's `set_status`, also run when the VM starts or stops. */
  private applyStatus(status: number): void {
    const port0 = this.findPortById(0);
    // A guest without MULTIPORT cannot say it opened port 0: it is open once the driver is up.
    if (port0 && !this.multiport && status & VIRTIO_CONFIG_S_DRIVER_OK) port0.guestConnected = true;
    if (!(status & VIRTIO_CONFIG_S_DRIVER_OK)) this.guestReset();
    this.enableBackends(this.vmRunning);
  }

  protected override setStatusHook(status: number): void {
    // The new status first: input the chardev delivers from here must see DRIVER_OK.
    this.status = status;
    this.applyStatus(status);
  }

  protected override resetDevice(): void {
    this.guestReset();
  }

  protected override vmStateChangeHook(running: boolean): void {
    this.applyStatus(this.status);
    if (!running) return;
    // What waited for the VM: the post-load step, then flushes of unthrottled ports.
    this.runPostLoad();
    for (const port of this.ports) if (port.flushPending && !port.throttled) this.flushQueuedData(port);
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space

  /** cols and rows are 0 (no SIZE); max_nr_ports in the guest's byte order (QEMU's `get_config`). */
  protected override getConfig(config: Uint8Array): void {
    const v = new DataView(config.buffer, config.byteOffset, config.byteLength);
    v.setUint16(0, 0);
    v.setUint16(2, 0);
    v.setUint32(VIRTIO_CONSOLE_CFG_MAX_NR_PORTS, this.maxPorts, !this.isBigEndian());
  }

  /**
   * An emergency write (QEMU's `set_config`): a non-zero `emerg_wr` sends its low byte to the
   * first console whose host side is open, on any device state (VIRTIO 1.2 §5.3.5.1), and the
   * field is cleared so that a later short config write is not taken for another one.
   */
  protected override setConfig(config: Uint8Array): void {
    if (!this.emergencyWrite || config.length < VIRTIO_CONSOLE_CONFIG_SIZE) return;
    const at = VIRTIO_CONSOLE_CFG_EMERG_WR;
    if ((config[at]! | config[at + 1]! | config[at + 2]! | config[at + 3]!) === 0) return;
    // QEMU takes the low byte of the field read as little-endian, whatever the guest's order.
    const lo = config[at]!;
    config.fill(0, at, at + 4);
    const port = this.ports.find((p) => p.isConsole && p.hostConnected);
    if (!port) return;
    port.haveData(Uint8Array.of(lo));
  }

  // ---------------------------------------------------------------------------------------
  // Migration (QEMU's `virtio_serial_save_device` / `virtio_serial_load_device`)

  override saveDeviceState(f: QEMUFileWriter): void {
    // The config as get_config makes it (the far end ignores it): cols, rows, then max_nr_ports
    // as the guest-swapped value, written big-endian.
    f.putBe16(0);
    f.putBe16(0);
    f.putBe32(this.isBigEndian() ? swap32(this.maxPorts) : this.maxPorts);
    for (const w of this.portsMap) f.putBe32(w);
    f.putBe32(this.ports.length);
    const packed = this.hostHasFeature(VIRTIO_F_RING_PACKED);
    for (const port of this.ports) {
      f.putBe32(port.id);
      f.putByte(port.guestConnected ? 1 : 0);
      f.putByte(port.hostConnected ? 1 : 0);
      const elem = port.elem;
      f.putBe32(elem ? 1 : 0);
      if (elem) {
        f.putBe32(port.iovIdx);
        f.putBe64(BigInt(port.iovOffset));
        saveVirtQueueElement(f, elem, packed, this.hasFeature(VIRTIO_F_RING_PACKED));
      }
    }
  }

  override loadDeviceState(f: QEMUFileReader, _version: number, ctx: DeviceLoadContext): () => void {
    f.getBe16('virtio-console config.cols');
    f.getBe16('virtio-console config.rows');
    f.getBe32('virtio-console config.max_nr_ports');
    for (let i = 0; i < this.portsMap.length; i++) {
      const at = f.offset;
      const w = f.getBe32(`virtio-console ports_map[${i}]`);
      if (w !== this.portsMap[i]) {
        // QEMU fails with -EINVAL and no message.
        throw f.error(`virtio-console ports_map[${i}]`, `ports 0x${w.toString(16)} in the stream, 0x${this.portsMap[i]!.toString(16)} here: the source and destination ports differ`, at);
      }
    }
    const nAt = f.offset;
    const nrActive = f.getBe32('virtio-console nr_active_ports');
    // Each entry has at least 10 bytes, and names a distinct port of ours.
    if (nrActive > this.ports.length || nrActive * 10 > f.remaining) {
      throw f.error('virtio-console nr_active_ports', `${nrActive} active ports, but the device has ${this.ports.length}`, nAt);
    }
    const packed = this.hostHasFeature(VIRTIO_F_RING_PACKED);
    const entries: { port: VirtIOSerialPort; guest: boolean; host: boolean; elem?: LoadedElement; iovIdx: number; iovOffset: number }[] = [];
    for (let i = 0; i < nrActive; i++) {
      const field = (s: string) => `virtio-console port[${i}].${s}`;
      const idAt = f.offset;
      const id = f.getBe32(field('id'));
      const port = this.findPortById(id);
      if (!port) throw f.error(field('id'), `no port with id ${id}`, idAt);
      if (entries.some((e) => e.port === port)) throw f.error(field('id'), `port ${id} appears twice`, idAt);
      const guest = getBool(f, field('guest_connected'));
      const host = getBool(f, field('host_connected'));
      const popped = f.getBe32(field('elem_popped'));
      const entry: (typeof entries)[number] = { port, guest, host, iovIdx: 0, iovOffset: 0 };
      if (popped !== 0) {
        const idxAt = f.offset;
        const iovIdx = f.getBe32(field('iov_idx'));
        const offAt = f.offset;
        const iovOffset = f.getBe64(field('iov_offset'));
        const qnum = ctx.queueNum?.(port.ovq.index);
        if (qnum === undefined) throw f.error(field('elem'), `an element popped from queue ${port.ovq.index}, which the stream does not set up`, idxAt);
        const elem = loadVirtQueueElement(f, field('elem'), qnum, ctx, packed);
        // QEMU resumes at out_sg[iov_idx] + iov_offset unchecked; an offset past the entry would
        // send bytes from beyond the guest's buffer. Only positions inside the element load.
        const outNum = elem.out.length;
        if (iovIdx > outNum) throw f.error(field('iov_idx'), `iov_idx ${iovIdx} is past the element's ${outNum} readable buffers`, idxAt);
        const entryLen = iovIdx < outNum ? BigInt(elem.out[iovIdx]![1]) : 0n;
        if (iovOffset > 0n && iovOffset >= entryLen) {
          throw f.error(field('iov_offset'), `iov_offset ${iovOffset} is not inside buffer ${iovIdx} (${entryLen} bytes)`, offAt);
        }
        entry.elem = elem;
        entry.iovIdx = iovIdx;
        entry.iovOffset = Number(iovOffset);
      }
      entries.push(entry);
    }
    return () => {
      // As on a fresh destination: no port waits for its chardev (the load reset the rest).
      for (const port of this.ports) {
        port.throttled = false;
        port.flushPending = false;
        port.dropWatch();
      }
      const post: PostLoadPort[] = [];
      for (const e of entries) {
        const port = e.port;
        port.guestConnected = e.guest;
        post.push({ port, hostConnected: e.host });
        if (e.elem) {
          port.elem = restoreVirtQueueElement(port.ovq, e.elem);
          port.iovIdx = e.iovIdx;
          port.iovOffset = e.iovOffset;
          // The port was throttled on the source; here the data starts flowing again.
          port.throttled = false;
          port.flushPending = true;
        }
      }
      this.postLoadPorts = post;
    };
  }

  override postLoad(): void {
    if (this.vmRunning) this.runPostLoad();
  }

  /**
   * After a load, once the VM runs (QEMU's post-load timer): a port whose host side differs from
   * the source's is announced to the guest, and the chardev learns the guest's side.
   */
  private runPostLoad(): void {
    const post = this.postLoadPorts;
    if (!post) return;
    this.postLoadPorts = undefined;
    this.guarded(() => {
      for (const { port, hostConnected } of post) {
        if (hostConnected !== port.hostConnected) this.sendControlEvent(port.id, VIRTIO_CONSOLE_PORT_OPEN, port.hostConnected ? 1 : 0);
        this.setGuestConnected(port, port.guestConnected);
      }
    });
  }
}

function swap32(v: number): number {
  return (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0;
}

/** A migrated bool: QEMU takes any non-zero byte; only 0 and 1 are accepted here. */
function getBool(f: QEMUFileReader, field: string): boolean {
  const at = f.offset;
  const b = f.getByte(field);
  if (b > 1) throw f.error(field, `byte ${b} is not a bool (0 or 1)`, at);
  return b === 1;
}
