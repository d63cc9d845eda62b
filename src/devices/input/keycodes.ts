/**
 * QEMU's host-side input events (`qapi/ui.json` InputEvent: key, btn, rel, abs) and the key code
 * maps the keyboard path uses, built once from the data in `keymap.ts`.
 */
import { HTML_CODE_LINUX, QKEYCODE_LINUX, QNUM_QKEYCODE } from './keymap.js';

/** A QEMU key code name (QKeyCode), e.g. 'a', 'ctrl', 'kp_enter'. */
export type QKeyCode = string;

/** QEMU's InputButton, in enum order. */
export const INPUT_BUTTONS = ['left', 'middle', 'right', 'wheel-up', 'wheel-down', 'side', 'extra', 'wheel-left', 'wheel-right'] as const;
export type InputButton = (typeof INPUT_BUTTONS)[number];

/** QEMU's InputAxis. */
export const INPUT_AXES = ['x', 'y'] as const;
export type InputAxis = (typeof INPUT_AXES)[number];

/** QEMU's InputEventKind, in enum order: bit `1 << index` is the kind's handler mask bit. */
export const INPUT_EVENT_KINDS = ['key', 'btn', 'rel', 'abs'] as const;
export type InputEventKind = (typeof INPUT_EVENT_KINDS)[number];

export const INPUT_EVENT_MASK_KEY = 1 << 0;
export const INPUT_EVENT_MASK_BTN = 1 << 1;
export const INPUT_EVENT_MASK_REL = 1 << 2;
export const INPUT_EVENT_MASK_ABS = 1 << 3;

/**
 * One host input event as QEMU's input layer passes it to a device. Key events carry a QKeyCode
 * (QMP "number" keys are turned into one before they get here); move values are whatever the
 * host sent, truncated to 32 bits by the device.
 */
export type InputEvent =
  | { type: 'key'; qcode: QKeyCode; down: boolean }
  | { type: 'btn'; button: InputButton; down: boolean }
  | { type: 'rel'; axis: InputAxis; value: number }
  | { type: 'abs'; axis: InputAxis; value: number };

/** The handler mask bit of an event's kind (`1 << evt->type`). */
export function inputEventMask(kind: InputEventKind): number {
  return 1 << INPUT_EVENT_KINDS.indexOf(kind);
}

const qcodeLinux = new Map<string, number>(QKEYCODE_LINUX.map(([q, l]) => [q, l]));
const qnumQcode = new Map<number, string>(QNUM_QKEYCODE.map(([n, q]) => [n, q]));
/** Linux key → the first QKeyCode (in enum order) that sends it. */
const linuxQcode = new Map<number, string>();
for (const [q, l] of QKEYCODE_LINUX) if (l !== 0 && !linuxQcode.has(l)) linuxQcode.set(l, q);
const htmlLinux = new Map<string, number>(HTML_CODE_LINUX.map(([c, l]) => [c, l]));

/** Every QKeyCode QEMU 7.2 accepts, in enum order. */
export const QKEYCODES: readonly QKeyCode[] = QKEYCODE_LINUX.map(([q]) => q);

export function isQKeyCode(name: string): boolean {
  return qcodeLinux.has(name);
}

/** The Linux key virtio-keyboard sends for `qcode` (QEMU's `qemu_input_map_qcode_to_linux`); 0 for none. */
export function qcodeToLinux(qcode: QKeyCode): number {
  return qcodeLinux.get(qcode) ?? 0;
}

/** QEMU's `qemu_input_key_number_to_qcode`: a QMP key number's QKeyCode ('unmapped' when it has none). */
export function qnumToQcode(num: number): QKeyCode {
  return qnumQcode.get(num) ?? 'unmapped';
}

/** The Linux key of a browser `KeyboardEvent.code`, or undefined when the database has none. */
export function htmlCodeToLinux(code: string): number | undefined {
  return htmlLinux.get(code);
}

/**
 * The QKeyCode for a browser `KeyboardEvent.code`: the one whose Linux key is the physical key
 * the browser names. Undefined for keys QEMU's keyboard cannot send (F13-F24, ...): a guest would
 * drop them anyway, since the keyboard does not list them in its EV_KEY bitmap.
 */
export function htmlCodeToQcode(code: string): QKeyCode | undefined {
  const l = htmlLinux.get(code);
  return l === undefined ? undefined : linuxQcode.get(l);
}

/** The Linux keys the keyboard can send: QEMU's EV_KEY bitmap for virtio-keyboard. */
export function keyboardLinuxKeys(): number[] {
  return QKEYCODE_LINUX.map(([, l]) => l).filter((l) => l !== 0);
}
