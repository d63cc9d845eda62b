/**
 * Host input from a browser page, for embedders: `KeyboardEvent.code`, pointer buttons, relative
 * and absolute motion and the wheel, turned into QEMU's host input events and sent to a router
 * (QMP-style routing between keyboard, mouse and tablet) or to one device. What reaches the guest
 * is what QEMU's own display front ends produce: one report per key, per button change and per
 * motion, each closed with EV_SYN.
 *
 * Only the fields used are declared, so DOM events can be passed as they are, and tests can pass
 * plain objects. No DOM types are needed.
 */
import { INPUT_EVENT_ABS_MAX, INPUT_EVENT_ABS_MIN } from './evdev.js';
import { htmlCodeToQcode, type InputButton } from './keycodes.js';
import type { InputSink } from './router.js';

/** What is used of a DOM `KeyboardEvent`. */
export interface KeyboardEventLike {
  type: string;
  code: string;
  repeat?: boolean;
}

/** What is used of a DOM `PointerEvent`/`MouseEvent` (`buttons` is the DOM bit mask). */
export interface PointerEventLike {
  buttons: number;
  movementX?: number;
  movementY?: number;
}

/** What is used of a DOM `WheelEvent`. */
export interface WheelEventLike {
  deltaY: number;
}

/** DOM `buttons` bits → QEMU's buttons (left, right, middle, back, forward). */
const DOM_BUTTONS: readonly (readonly [bit: number, button: InputButton])[] = [
  [1, 'left'],
  [2, 'right'],
  [4, 'middle'],
  [8, 'side'],
  [16, 'extra'],
];

/** QEMU's `qemu_input_scale_axis`: map [minIn, maxIn] onto [minOut, maxOut], 64-bit integer maths. */
export function scaleAxis(value: number, minIn: number, maxIn: number, minOut = INPUT_EVENT_ABS_MIN, maxOut = INPUT_EVENT_ABS_MAX): number {
  const rangeIn = BigInt(Math.trunc(maxIn)) - BigInt(Math.trunc(minIn));
  const rangeOut = BigInt(Math.trunc(maxOut)) - BigInt(Math.trunc(minOut));
  if (rangeIn < 1n) return Math.trunc(minOut) + Number(rangeOut / 2n);
  return Number(((BigInt(Math.trunc(value)) - BigInt(Math.trunc(minIn))) * rangeOut) / rangeIn + BigInt(Math.trunc(minOut)));
}

export class BrowserInput {
  /** DOM `buttons` last seen, to send only changes (QEMU's `qemu_input_update_buttons`). */
  private buttons = 0;
  private readonly down = new Set<string>();

  /**
   * @param sink a router (events go to whichever device takes them), or one device
   */
  constructor(private readonly sink: InputSink) {}

  /**
   * A `keydown`/`keyup`. Auto-repeated keydowns are not sent: the guest repeats on its own
   * (the keyboard offers EV_REP). Keys QEMU's keyboard cannot send are ignored. Returns whether
   * an event was sent (an embedder may then `preventDefault()`).
   */
  key(ev: KeyboardEventLike): boolean {
    const isDown = ev.type === 'keydown';
    if (!isDown && ev.type !== 'keyup') return false;
    if (isDown && ev.repeat) return false;
    const qcode = htmlCodeToQcode(ev.code);
    if (qcode === undefined) return false;
    if (isDown) this.down.add(ev.code);
    else this.down.delete(ev.code);
    this.sink.event({ type: 'key', qcode, down: isDown });
    this.sink.sync();
    return true;
  }

  /** Release every key still held (call on `blur`, or a key stays down in the guest). */
  releaseAll(): void {
    for (const code of [...this.down]) this.key({ type: 'keyup', code });
  }

  /** Button changes from a pointer event's `buttons`, one report per changed button. */
  pointerButtons(ev: PointerEventLike): void {
    const old = this.buttons;
    this.buttons = ev.buttons;
    for (const [bit, button] of DOM_BUTTONS) {
      if ((old & bit) === (ev.buttons & bit)) continue;
      this.sink.event({ type: 'btn', button, down: (ev.buttons & bit) !== 0 });
      this.sink.sync();
    }
  }

  /** Relative motion (a mouse; `movementX/Y` of a pointer-locked page). */
  pointerMove(ev: PointerEventLike): void {
    this.pointerButtons(ev);
    const dx = Math.trunc(ev.movementX ?? 0);
    const dy = Math.trunc(ev.movementY ?? 0);
    if (dx === 0 && dy === 0) return;
    if (dx !== 0) this.sink.event({ type: 'rel', axis: 'x', value: dx });
    if (dy !== 0) this.sink.event({ type: 'rel', axis: 'y', value: dy });
    this.sink.sync();
  }

  /**
   * Absolute position (a tablet): `x`,`y` in a `width`×`height` area (e.g. `offsetX/offsetY` and
   * the canvas size), scaled to 0..0x7fff as QEMU's front ends scale them.
   */
  pointerAbsolute(x: number, y: number, width: number, height: number, ev?: PointerEventLike): void {
    if (ev) this.pointerButtons(ev);
    this.sink.event({ type: 'abs', axis: 'x', value: scaleAxis(x, 0, width) });
    this.sink.event({ type: 'abs', axis: 'y', value: scaleAxis(y, 0, height) });
    this.sink.sync();
  }

  /**
   * One wheel notch per event, up for a negative `deltaY`. Only the press is sent: the device
   * turns it into REL_WHEEL ±1 (QEMU's front ends also send a release, which the device would
   * forward as a BTN_GEAR key release nobody pressed).
   */
  wheel(ev: WheelEventLike): void {
    if (ev.deltaY === 0 || !Number.isFinite(ev.deltaY)) return;
    this.sink.event({ type: 'btn', button: ev.deltaY < 0 ? 'wheel-up' : 'wheel-down', down: true });
    this.sink.sync();
  }
}
