/**
 * Where host input goes (QEMU's `ui/input.c` handler list, one per machine instead of a global):
 * devices register a handler with the event kinds they take; an event goes to the first handler
 * in the list that takes its kind; a device that becomes active (virtio-input at DRIVER_OK) moves
 * to the head of the list and one that goes inactive (reset) to its tail; a sync tells every
 * handler that got events since the last sync to close its report.
 *
 * The machine's QMP `input-send-event` and an embedder's own input code both send through it.
 */
import { inputEventMask, type InputEvent } from './keycodes.js';

/** What a device gives the router (QEMU's QemuInputHandler). */
export interface InputHandler {
  /** For `query-mice` style listings and traces, e.g. "QEMU Virtio Keyboard". */
  readonly name: string;
  /** The event kinds taken (INPUT_EVENT_MASK_* bits). */
  readonly mask: number;
  event(evt: InputEvent): void;
  /** Close the report (virtio-input sends EV_SYN). */
  sync?(): void;
}

/** A registration (QEMU's QemuInputHandlerState): pass it to activate/deactivate/unregister. */
export interface InputHandlerState {
  readonly handler: InputHandler;
  readonly id: number;
  /** Events since the last sync. */
  events: number;
}

/** Anything host input can be sent to: a router, or one device directly. */
export interface InputSink {
  event(evt: InputEvent): void;
  sync(): void;
}

export class InputRouter implements InputSink {
  private readonly list: InputHandlerState[] = [];
  private nextId = 1;

  /** QEMU's `qemu_input_handler_register`: appended at the tail. */
  register(handler: InputHandler): InputHandlerState {
    const s: InputHandlerState = { handler, id: this.nextId++, events: 0 };
    this.list.push(s);
    return s;
  }

  unregister(s: InputHandlerState): void {
    const i = this.list.indexOf(s);
    if (i >= 0) this.list.splice(i, 1);
  }

  /** QEMU's `qemu_input_handler_activate`: to the head of the list. */
  activate(s: InputHandlerState): void {
    const i = this.list.indexOf(s);
    if (i < 0) return;
    this.list.splice(i, 1);
    this.list.unshift(s);
  }

  /** QEMU's `qemu_input_handler_deactivate`: to the tail of the list. */
  deactivate(s: InputHandlerState): void {
    const i = this.list.indexOf(s);
    if (i < 0) return;
    this.list.splice(i, 1);
    this.list.push(s);
  }

  /** QEMU's `qemu_input_find_handler` (no consoles here): the first handler taking `mask`. */
  find(mask: number): InputHandlerState | undefined {
    return this.list.find((s) => (s.handler.mask & mask) !== 0);
  }

  /** The handlers in routing order (for tests and listings). */
  handlers(): readonly InputHandlerState[] {
    return this.list;
  }

  /**
   * QEMU's `qemu_input_event_send_impl`: to the first handler taking the event's kind; nothing
   * happens when none does. SysRq is sent as Print, as QEMU normalises it.
   */
  event(evt: InputEvent): void {
    const e: InputEvent = evt.type === 'key' && evt.qcode === 'sysrq' ? { ...evt, qcode: 'print' } : evt;
    const s = this.find(inputEventMask(e.type));
    if (!s) return;
    s.handler.event(e);
    s.events++;
  }

  /** QEMU's `qemu_input_event_sync_impl`: every handler that got events closes its report. */
  sync(): void {
    for (const s of [...this.list]) {
      if (!s.events) continue;
      s.handler.sync?.();
      s.events = 0;
    }
  }
}

/** A handler that takes events and drops them: a PS/2 keyboard or mouse we do not model. */
export function sinkHandler(name: string, mask: number): InputHandler {
  return { name, mask, event() {} };
}
