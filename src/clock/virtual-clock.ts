/**
 * Time as devices see it. The host supplies a clock; devices only ask for the current time and
 * arm timers. `VirtualClock` is the deterministic implementation tests and the reference
 * machine use: time moves only when the host calls `step` or `advanceTo`.
 */
export interface Clock {
  /** Current time in nanoseconds. */
  now(): number;
  /** Run `cb` once the clock reaches `deadlineNs`; returns a handle for `cancel`. */
  setTimer(deadlineNs: number, cb: () => void): TimerHandle;
  cancel(handle: TimerHandle): void;
}

export interface TimerHandle {
  readonly deadlineNs: number;
}

interface Timer extends TimerHandle {
  deadlineNs: number;
  seq: number;
  cb: () => void;
  active: boolean;
}

export class VirtualClock implements Clock {
  private t = 0;
  private seq = 0;
  private timers: Timer[] = [];
  private on = true;

  now(): number {
    return this.t;
  }

  setTimer(deadlineNs: number, cb: () => void): TimerHandle {
    const timer: Timer = { deadlineNs, seq: this.seq++, cb, active: true };
    this.timers.push(timer);
    return timer;
  }

  cancel(handle: TimerHandle): void {
    const t = handle as Timer;
    t.active = false;
    this.timers = this.timers.filter((x) => x !== t);
  }

  /** Whether timers fire (QEMU's `QEMUClock.enabled`). */
  get enabled(): boolean {
    return this.on;
  }

  /**
   * QEMU's `qemu_clock_enable`: the virtual clock is disabled while the VM is stopped. Time can
   * still be moved (qtest's `clock_step` does so in QEMU too), but no timer fires and no
   * deadline is reported; timers keep their deadlines. Enabling runs the timers that fell due
   * meanwhile, as QEMU's main loop does once the clock is re-enabled.
   */
  setEnabled(on: boolean): void {
    if (this.on === on) return;
    this.on = on;
    if (on) this.advanceTo(this.t);
  }

  /** Deadline of the earliest pending timer, or undefined (always undefined while disabled). */
  nextDeadline(): number | undefined {
    if (!this.on) return undefined;
    let best: number | undefined;
    for (const t of this.timers) if (best === undefined || t.deadlineNs < best) best = t.deadlineNs;
    return best;
  }

  /** Advance by `ns`, firing due timers in deadline order (QEMU's qtest `clock_step`). */
  step(ns: number): number {
    return this.advanceTo(this.t + Math.max(0, ns));
  }

  /** Advance to `targetNs`, firing every timer due on the way. Returns the new time. */
  advanceTo(targetNs: number): number {
    while (this.on) {
      let due: Timer | undefined;
      for (const t of this.timers) {
        if (t.deadlineNs <= targetNs && (!due || t.deadlineNs < due.deadlineNs || (t.deadlineNs === due.deadlineNs && t.seq < due.seq))) due = t;
      }
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      if (due.deadlineNs > this.t) this.t = due.deadlineNs;
      due.active = false;
      due.cb();
    }
    if (targetNs > this.t) this.t = targetNs;
    return this.t;
  }
}
