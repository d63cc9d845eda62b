/**
 * virtio-keyboard, virtio-mouse and virtio-tablet (QEMU 7.2 `hw/input/virtio-input-hid.c`): the
 * configuration answers QEMU gives, byte for byte, and the translation of QEMU's host input
 * events (key, btn, rel, abs) into evdev events, quirks included.
 */
import {
  ABS_X,
  ABS_Y,
  BTN_EXTRA,
  BTN_GEAR_DOWN,
  BTN_GEAR_UP,
  BTN_LEFT,
  BTN_MIDDLE,
  BTN_RIGHT,
  BTN_SIDE,
  BUS_VIRTUAL,
  EV_ABS,
  EV_KEY,
  EV_LED,
  EV_REL,
  EV_REP,
  EV_SYN,
  INPUT_EVENT_ABS_MAX,
  INPUT_EVENT_ABS_MIN,
  LED_CAPSL,
  LED_NUML,
  LED_SCROLLL,
  REL_WHEEL,
  REL_X,
  REL_Y,
  SYN_REPORT,
  VIRTIO_INPUT_CFG_ABS_INFO,
  VIRTIO_INPUT_CFG_EV_BITS,
  VIRTIO_INPUT_CFG_ID_DEVIDS,
  VIRTIO_INPUT_CFG_ID_NAME,
} from './evdev.js';
import {
  INPUT_EVENT_MASK_ABS,
  INPUT_EVENT_MASK_BTN,
  INPUT_EVENT_MASK_KEY,
  INPUT_EVENT_MASK_REL,
  keyboardLinuxKeys,
  qcodeToLinux,
  type InputButton,
  type InputEvent,
} from './keycodes.js';
import type { InputHandlerState, InputRouter, InputSink } from './router.js';
import { bitmapEntry, rawEntry, stringEntry, VirtIOInput, type VirtioInputConfigEntry, type VirtIOInputOptions } from './virtio-input.js';

export const VIRTIO_ID_NAME_KEYBOARD = 'QEMU Virtio Keyboard';
export const VIRTIO_ID_NAME_MOUSE = 'QEMU Virtio Mouse';
export const VIRTIO_ID_NAME_TABLET = 'QEMU Virtio Tablet';

/** QEMU's `keymap_button`: the evdev code of each InputButton (0: none, wheel-left/right). */
const KEYMAP_BUTTON: Readonly<Record<InputButton, number>> = {
  left: BTN_LEFT,
  middle: BTN_MIDDLE,
  right: BTN_RIGHT,
  'wheel-up': BTN_GEAR_UP,
  'wheel-down': BTN_GEAR_DOWN,
  side: BTN_SIDE,
  extra: BTN_EXTRA,
  'wheel-left': 0,
  'wheel-right': 0,
};

/** The 8-byte virtio_input_devids: le16 bustype, vendor, product, version. */
function devids(product: number, version: number): VirtioInputConfigEntry {
  // 0x0627: the vendor QEMU uses for its USB HID devices too.
  return rawEntry(VIRTIO_INPUT_CFG_ID_DEVIDS, 0, 8, [BUS_VIRTUAL, 0, 0x27, 0x06, product, 0, version, 0]);
}

/** The 20-byte virtio_input_absinfo of QEMU's tablet axes: min, max, fuzz 0, flat 0, res 0. */
function absinfo(axis: number): VirtioInputConfigEntry {
  const b = new Uint8Array(20);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, INPUT_EVENT_ABS_MIN, true);
  dv.setUint32(4, INPUT_EVENT_ABS_MAX, true);
  return rawEntry(VIRTIO_INPUT_CFG_ABS_INFO, axis, 20, [...b]);
}

const BUTTON_CODES = Object.values(KEYMAP_BUTTON);

/** The configuration answers of each type (QEMU's config tables plus `virtio_input_key_config`). */
export function keyboardConfig(): VirtioInputConfigEntry[] {
  return [
    stringEntry(VIRTIO_INPUT_CFG_ID_NAME, VIRTIO_ID_NAME_KEYBOARD, true),
    devids(0x0001, 0x0001),
    rawEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_REP, 1),
    rawEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_LED, 1, [(1 << LED_NUML) | (1 << LED_CAPSL) | (1 << LED_SCROLLL)]),
    bitmapEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_KEY, keyboardLinuxKeys()),
  ];
}

/**
 * The mouse and the tablet have a "v1" table (no wheel) and a "v2" one, chosen by `wheel-axis`
 * when QEMU builds the object, which is before any property is set: a `wheel-axis=off` given on
 * the command line changes how wheel buttons are sent but not the table, which is always v2.
 */
export function mouseConfig(): VirtioInputConfigEntry[] {
  return [
    stringEntry(VIRTIO_INPUT_CFG_ID_NAME, VIRTIO_ID_NAME_MOUSE, true),
    devids(0x0002, 0x0002),
    rawEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_REL, 2, [(1 << REL_X) | (1 << REL_Y), 1 << (REL_WHEEL - 8)]),
    bitmapEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_KEY, BUTTON_CODES),
  ];
}

export function tabletConfig(): VirtioInputConfigEntry[] {
  return [
    stringEntry(VIRTIO_INPUT_CFG_ID_NAME, VIRTIO_ID_NAME_TABLET, true),
    devids(0x0003, 0x0002),
    rawEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_ABS, 1, [(1 << ABS_X) | (1 << ABS_Y)]),
    rawEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_REL, 2, [0, 1 << (REL_WHEEL - 8)]),
    absinfo(ABS_X),
    absinfo(ABS_Y),
    bitmapEntry(VIRTIO_INPUT_CFG_EV_BITS, EV_KEY, BUTTON_CODES),
  ];
}

export interface VirtIOInputHIDOptions extends VirtIOInputOptions {
  /**
   * Route host input through this router (QEMU's input handler list): the device registers as
   * it is built, moves to the head of the list when the driver sets DRIVER_OK and to its tail on
   * reset. Without one, call `event`/`sync` (or `keyboardInput` and friends) directly.
   */
  router?: InputRouter;
  /** Mouse and tablet: QEMU's `wheel-axis` (default true): wheel buttons as REL_WHEEL. */
  wheelAxis?: boolean;
}

/**
 * QEMU's abstract `virtio-input-hid`: a device host input can be sent to (`InputSink`), as a
 * handler of a router or directly.
 */
export abstract class VirtIOInputHID extends VirtIOInput implements InputSink {
  /** The event kinds taken (INPUT_EVENT_MASK_* bits). */
  abstract readonly mask: number;
  readonly wheelAxis: boolean;
  readonly router: InputRouter | undefined;
  private handlerState: InputHandlerState | undefined;
  /** Events since the last sync, for a device used without a router. */
  private unsynced = 0;

  protected constructor(opts: VirtIOInputHIDOptions, entries: readonly VirtioInputConfigEntry[], defaultName: string, private readonly handlerName: string) {
    super(opts, entries, defaultName);
    this.wheelAxis = opts.wheelAxis ?? true;
    this.router = opts.router;
  }

  /** Register with the router (QEMU's realize does it once the object exists). */
  protected attach(): void {
    if (!this.router || this.handlerState) return;
    this.handlerState = this.router.register({
      name: this.handlerName,
      mask: this.mask,
      event: (e) => this.handleEvent(e),
      sync: () => this.handleSync(),
    });
  }

  /** Leave the router (QEMU's unrealize). */
  detach(): void {
    if (this.handlerState) this.router?.unregister(this.handlerState);
    this.handlerState = undefined;
  }

  protected override changeActive(): void {
    if (!this.handlerState || !this.router) return;
    if (this.active) this.router.activate(this.handlerState);
    else this.router.deactivate(this.handlerState);
  }

  /** InputSink, for a device used without a router: an event to this device. */
  event(evt: InputEvent): void {
    this.handleEvent(evt);
    this.unsynced++;
  }

  /** InputSink: close the report if events came since the last sync (as QEMU's sync does). */
  sync(): void {
    if (this.unsynced === 0) return;
    this.unsynced = 0;
    this.handleSync();
  }

  /** QEMU's `virtio_input_handle_event`. */
  handleEvent(evt: InputEvent): void {
    switch (evt.type) {
      case 'key': {
        const code = qcodeToLinux(evt.qcode);
        if (code) {
          this.send(EV_KEY, code, evt.down ? 1 : 0);
        } else if (evt.down) {
          this.unmapped(`key ${evt.qcode}`);
        }
        break;
      }
      case 'btn': {
        const b = evt.button;
        if (this.wheelAxis && (b === 'wheel-up' || b === 'wheel-down') && evt.down) {
          this.send(EV_REL, REL_WHEEL, b === 'wheel-up' ? 1 : -1);
        } else if (KEYMAP_BUTTON[b]) {
          // With wheel-axis, a wheel button's release still goes out as BTN_GEAR_UP/DOWN 0, as in QEMU.
          this.send(EV_KEY, KEYMAP_BUTTON[b], evt.down ? 1 : 0);
        } else if (evt.down) {
          this.unmapped(`button ${b}`);
        }
        break;
      }
      case 'rel':
        this.send(EV_REL, evt.axis === 'x' ? REL_X : REL_Y, evt.value);
        break;
      case 'abs':
        this.send(EV_ABS, evt.axis === 'x' ? ABS_X : ABS_Y, evt.value);
        break;
    }
  }

  /** QEMU's `virtio_input_handle_sync`: the report ends. */
  handleSync(): void {
    this.send(EV_SYN, SYN_REPORT, 0);
  }

  private unmapped(what: string): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'device', device: this.name, message: `unmapped ${what}` });
  }
}

export class VirtIOKeyboard extends VirtIOInputHID {
  readonly mask = INPUT_EVENT_MASK_KEY;
  constructor(opts: VirtIOInputHIDOptions) {
    super(opts, keyboardConfig(), 'virtio-keyboard', VIRTIO_ID_NAME_KEYBOARD);
    this.attach();
  }
}

export class VirtIOMouse extends VirtIOInputHID {
  readonly mask = INPUT_EVENT_MASK_BTN | INPUT_EVENT_MASK_REL;
  constructor(opts: VirtIOInputHIDOptions) {
    super(opts, mouseConfig(), 'virtio-mouse', VIRTIO_ID_NAME_MOUSE);
    this.attach();
  }
}

export class VirtIOTablet extends VirtIOInputHID {
  readonly mask = INPUT_EVENT_MASK_BTN | INPUT_EVENT_MASK_ABS;
  constructor(opts: VirtIOInputHIDOptions) {
    super(opts, tabletConfig(), 'virtio-tablet', VIRTIO_ID_NAME_TABLET);
    this.attach();
  }
}
