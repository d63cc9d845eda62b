/**
 * QEMU's rate limit of guest-triggerable QMP events (`monitor/monitor.c`,
 * `monitor_qapi_event_queue_no_reenter`): BALLOON_CHANGE, RTC_CHANGE, WATCHDOG, VSERPORT_CHANGE
 * (per port id), QUORUM_* (per node) and MEMORY_DEVICE_SIZE_CHANGE go out at most once a second.
 * The first event is sent at once and opens a one-second window; events arriving inside it are
 * held, each replacing the previous one; when the window ends the held event (if any) is sent and
 * opens the next window. A guest can so not flood the monitor, and the host still learns the
 * latest value.
 *
 * QEMU measures the window on the realtime clock (the virtual one only under the qtest
 * accelerator); here the clock and timer are injected, wall-clock by default.
 *
 * No Node imports: part of the browser bundle.
 */

/** Rate of each throttled event, in milliseconds (QEMU's `monitor_qapi_event_conf`). */
export const THROTTLED_EVENTS: Readonly<Record<string, number>> = {
  RTC_CHANGE: 1000,
  WATCHDOG: 1000,
  BALLOON_CHANGE: 1000,
  QUORUM_REPORT_BAD: 1000,
  QUORUM_FAILURE: 1000,
  VSERPORT_CHANGE: 1000,
  MEMORY_DEVICE_SIZE_CHANGE: 1000,
};

export interface ThrottleTimers {
  /** Milliseconds, monotonic. */
  now(): number;
  /** Call `fn` after `ms`; returns a cancel function. */
  after(ms: number, fn: () => void): () => void;
}

/** Wall-clock timers that do not keep a Node process alive. */
export const wallClockTimers: ThrottleTimers = {
  now: () => (typeof performance !== 'undefined' ? performance.now() : Date.now()),
  after(ms, fn) {
    const t = setTimeout(fn, ms) as unknown as { unref?: () => void };
    t.unref?.();
    return () => clearTimeout(t as unknown as ReturnType<typeof setTimeout>);
  },
};

type Data = Record<string, unknown> | undefined;

interface WindowState {
  held: { name: string; data: Data } | undefined;
  cancel: () => void;
}

export class EventThrottle {
  private readonly windows = new Map<string, WindowState>();

  constructor(private readonly emit: (name: string, data: Data) => void, private readonly timers: ThrottleTimers = wallClockTimers) {}

  /** Send `name` now, or hold it until its window ends. */
  send(name: string, data: Data): void {
    const rate = THROTTLED_EVENTS[name];
    if (rate === undefined) {
      this.emit(name, data);
      return;
    }
    const key = keyOf(name, data);
    const w = this.windows.get(key);
    if (w) {
      w.held = { name, data };
      return;
    }
    this.emit(name, data);
    this.open(key, rate);
  }

  private open(key: string, rate: number): void {
    const state: WindowState = { held: undefined, cancel: () => undefined };
    state.cancel = this.timers.after(rate, () => {
      this.windows.delete(key);
      const h = state.held;
      if (!h) return;
      this.emit(h.name, h.data);
      this.open(key, rate);
    });
    this.windows.set(key, state);
  }

  /** Drop held events and their windows (the machine goes away). */
  dispose(): void {
    for (const w of this.windows.values()) w.cancel();
    this.windows.clear();
  }
}

/** QEMU's throttle key: the event, and for some events the instance the data names. */
function keyOf(name: string, data: Data): string {
  if (name === 'VSERPORT_CHANGE') return `${name}\0${String(data?.['id'] ?? '')}`;
  if (name === 'QUORUM_REPORT_BAD' || name === 'QUORUM_FAILURE') return `${name}\0${String(data?.['node-name'] ?? '')}`;
  return name;
}
