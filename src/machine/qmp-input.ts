/**
 * QMP `input-send-event` (QEMU 7.2 `ui/input.c` `qmp_input_send_event`, arguments as
 * `qapi/ui.json` declares them): the argument checks of QEMU's QObject input visitor, in its
 * order and with its messages (members in declaration order, a missing or mistyped member named
 * by its full path, an enum value refused under the member's own name, unexpected members after
 * the known ones), then the command's own checks and the routing of each event.
 *
 * No Node imports: part of the browser bundle.
 */
import { INPUT_AXES, INPUT_BUTTONS, INPUT_EVENT_KINDS, inputEventMask, isQKeyCode, qnumToQcode, type InputEvent, type InputEventKind } from '../devices/input/keycodes.js';
import type { InputRouter } from '../devices/input/router.js';

/** An error QMP reports: its class and description. */
export class QapiError extends Error {
  constructor(readonly errorClass: string, desc: string) {
    super(desc);
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type Obj = { [key: string]: Json };

const isObj = (v: Json | undefined): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

/** One member of a struct being visited: its value, checked for presence and marked as used. */
class StructVisit {
  private readonly used = new Set<string>();
  constructor(readonly obj: Obj, readonly path: string) {}

  private full(name: string): string {
    return this.path === '' ? name : `${this.path}.${name}`;
  }

  get(name: string, optional = false): Json | undefined {
    if (!Object.prototype.hasOwnProperty.call(this.obj, name)) {
      if (optional) return undefined;
      throw new QapiError('GenericError', `Parameter '${this.full(name)}' is missing`);
    }
    this.used.add(name);
    return this.obj[name];
  }

  str(name: string, optional = false): string | undefined {
    const v = this.get(name, optional);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw typeError(this.full(name), 'string');
    return v;
  }

  int(name: string, optional = false): number | undefined {
    const v = this.get(name, optional);
    if (v === undefined) return undefined;
    // An int64: integral numbers within range (larger ones QEMU's parser makes doubles).
    if (typeof v !== 'number' || !Number.isInteger(v) || Math.abs(v) >= 2 ** 63) throw typeError(this.full(name), 'integer');
    return v;
  }

  bool(name: string): boolean {
    const v = this.get(name);
    if (typeof v !== 'boolean') throw typeError(this.full(name), 'boolean');
    return v;
  }

  /** An enum member: a string, refused under the member's own name (as QEMU's enum visitor does). */
  enumOf<T extends string>(name: string, values: readonly T[]): T {
    const v = this.str(name)!;
    if (!(values as readonly string[]).includes(v)) throw new QapiError('GenericError', `Parameter '${name}' does not accept value '${v}'`);
    return v as T;
  }

  /** A nested struct member. */
  struct(name: string): StructVisit {
    const v = this.get(name);
    if (!isObj(v)) throw typeError(this.full(name), 'object');
    return new StructVisit(v, this.full(name));
  }

  /** QEMU's `visit_check_struct`: members nobody asked for. */
  check(): void {
    for (const k of Object.keys(this.obj)) {
      if (!this.used.has(k)) throw new QapiError('GenericError', `Parameter '${this.full(k)}' is unexpected`);
    }
  }
}

function typeError(name: string, expected: string): QapiError {
  return new QapiError('GenericError', `Invalid parameter type for '${name}', expected: ${expected}`);
}

/** One event as QMP gave it: a key number keeps its number, for QEMU's own path. */
export type QmpInputEvent = { event: InputEvent; keyNumber?: number };

/** The visited arguments of `input-send-event`. */
export interface InputSendEventArgs {
  device: string | undefined;
  head: number | undefined;
  events: QmpInputEvent[];
}

/** Visit `input-send-event`'s arguments as QEMU's generated unmarshaller does. */
export function visitInputSendEvent(args: Obj): InputSendEventArgs {
  const top = new StructVisit(args, '');
  const device = top.str('device', true);
  const head = top.int('head', true);
  const list = top.get('events');
  if (!Array.isArray(list)) throw typeError('events', 'array');
  const events = list.map((item, i) => visitEvent(item, `events[${i}]`));
  top.check();
  return { device, head, events };
}

function visitEvent(item: Json, path: string): QmpInputEvent {
  if (!isObj(item)) throw typeError(path, 'object');
  const ev = new StructVisit(item, path);
  const type = ev.enumOf('type', INPUT_EVENT_KINDS);
  const data = ev.struct('data');
  let out: QmpInputEvent;
  switch (type) {
    case 'key': {
      const key = data.struct('key');
      const kind = key.enumOf('type', ['number', 'qcode'] as const);
      let number: number | undefined;
      let qcode: string;
      if (kind === 'number') {
        number = key.int('data')!;
        qcode = qnumToQcode(number);
      } else {
        const name = key.str('data')!;
        if (!isQKeyCode(name)) throw new QapiError('GenericError', `Parameter 'data' does not accept value '${name}'`);
        qcode = name;
      }
      key.check();
      const down = data.bool('down');
      out = { event: { type: 'key', qcode, down }, ...(number !== undefined ? { keyNumber: number } : {}) };
      break;
    }
    case 'btn': {
      const button = data.enumOf('button', INPUT_BUTTONS);
      const down = data.bool('down');
      out = { event: { type: 'btn', button, down } };
      break;
    }
    case 'rel':
    case 'abs': {
      const axis = data.enumOf('axis', INPUT_AXES);
      const value = data.int('value')!;
      out = { event: { type, axis, value } };
      break;
    }
  }
  data.check();
  ev.check();
  return out;
}

export interface InputSendEventContext {
  router: InputRouter;
  /** The VM runs (or is suspended): QEMU refuses input otherwise. */
  running: boolean;
  /** Whether a device with this `id` exists (QEMU's `qdev_find_recursive`). */
  hasDevice(id: string): boolean;
}

/**
 * Run `input-send-event` after its arguments were visited: QEMU's console lookup (there are no
 * consoles here, so a device that exists is "not bound"), the run state, a handler for every
 * event kind before anything is sent, then each event (a key number with its own sync, as QEMU's
 * `qemu_input_event_send_key` does), and a final sync.
 */
export function runInputSendEvent(a: InputSendEventArgs, ctx: InputSendEventContext): void {
  if (a.device !== undefined) {
    const head = a.head ?? 0;
    if (!ctx.hasDevice(a.device)) throw new QapiError('DeviceNotFound', `Device '${a.device}' not found`);
    throw new QapiError('GenericError', `Device ${a.device} (head ${head}) is not bound to a QemuConsole`);
  }
  if (!ctx.running) throw new QapiError('GenericError', 'VM not running');
  for (const e of a.events) {
    const kind: InputEventKind = e.event.type;
    if (!ctx.router.find(inputEventMask(kind))) throw new QapiError('GenericError', `Input handler not found for event type ${kind}`);
  }
  for (const e of a.events) {
    ctx.router.event(e.event);
    if (e.keyNumber !== undefined) ctx.router.sync();
  }
  ctx.router.sync();
}
