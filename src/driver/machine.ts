/**
 * The guest-side view of a machine, shaped like QEMU's qtest protocol (7.2 `softmmu/qtest.c`):
 * port I/O, system memory, the virtual clock and intercepted IRQ lines. Everything is async so
 * that one driver script runs unchanged on our machine in-process (`InProcessMachine`), on our
 * machine behind the qtest server, and on a real QEMU (`QtestMachine`, in the Node-only entry).
 *
 * This module has no Node dependencies: it is part of the browser bundle.
 */

/** A machine refused or failed a request (qtest `FAIL`/`ERR`, a closed connection, ...). */
export class MachineError extends Error {
  override name = 'MachineError';
}

/** The machine cannot do this at all (e.g. `clock_step` on a QEMU without the qtest accelerator). */
export class UnsupportedError extends MachineError {
  override name = 'UnsupportedError';
}

/** A bounded wait ran out of time. */
export class TimeoutError extends MachineError {
  override name = 'TimeoutError';
}

/** One intercepted IRQ line change: qtest's asynchronous `IRQ raise N` / `IRQ lower N`. */
export interface IrqEvent {
  line: number;
  level: boolean;
  /** Position in the machine's IRQ log, from 0. */
  seq: number;
}

/**
 * The IRQ lines a machine reported since `irqIntercept`: current levels, counts and the ordered
 * log of changes. `mark()` and `since(mark)` let a test look only at what happened after a point.
 */
export class IrqLog {
  private readonly events: IrqEvent[] = [];
  private readonly levels = new Map<number, boolean>();

  /** Record a change (called by the machine implementation). */
  push(line: number, level: boolean): void {
    this.events.push({ line, level, seq: this.events.length });
    this.levels.set(line, level);
  }

  /** Last reported level of `line` (false if never reported). */
  level(line: number): boolean {
    return this.levels.get(line) ?? false;
  }

  /** Lines currently reported high. */
  raised(): number[] {
    return [...this.levels].filter(([, l]) => l).map(([n]) => n).sort((a, b) => a - b);
  }

  /** The position the next event will get. */
  mark(): number {
    return this.events.length;
  }

  /** Events from `mark` on (all by default). */
  since(mark = 0): IrqEvent[] {
    return this.events.slice(mark);
  }

  /** The first event at or after `mark` on `line` with `level`, if any. */
  find(line: number, level: boolean, mark = 0): IrqEvent | undefined {
    for (let i = mark; i < this.events.length; i++) {
      const e = this.events[i]!;
      if (e.line === line && e.level === level) return e;
    }
    return undefined;
  }

  /** How many `IRQ raise line` events happened from `mark` on. */
  count(line: number, level = true, mark = 0): number {
    let n = 0;
    for (let i = mark; i < this.events.length; i++) {
      const e = this.events[i]!;
      if (e.line === line && e.level === level) n++;
    }
    return n;
  }
}

/** A QMP-like command channel (QEMU's QMP, our server's QMP, or an in-process stand-in). */
export interface QmpLike {
  /** Run `command`; resolves with its `return` value, rejects with a `QmpError`-like error. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  /** Events received so far, oldest first, when the implementation collects them. */
  readonly events?: readonly { event: string; data?: unknown }[];
}

/**
 * A machine a driver script talks to. Addresses are guest-physical numbers (safe integers);
 * 8-byte values are bigints. Values of `readb/w/l` and `inb/w/l` are unsigned.
 */
export interface Machine {
  /** For messages: 'qemu', 'virtio-ts (in-process)', ... */
  readonly name: string;
  /** `clockStep`/`clockSet` work (false on a TCG QEMU without the qtest accelerator). */
  readonly hasClock: boolean;
  /** Intercepted IRQ lines. */
  readonly irq: IrqLog;
  /** QMP, when the implementation has one. */
  readonly qmp: QmpLike | undefined;

  inb(port: number): Promise<number>;
  inw(port: number): Promise<number>;
  inl(port: number): Promise<number>;
  outb(port: number, value: number): Promise<void>;
  outw(port: number, value: number): Promise<void>;
  outl(port: number, value: number): Promise<void>;

  readb(addr: number): Promise<number>;
  readw(addr: number): Promise<number>;
  readl(addr: number): Promise<number>;
  readq(addr: number): Promise<bigint>;
  writeb(addr: number, value: number): Promise<void>;
  writew(addr: number, value: number): Promise<void>;
  writel(addr: number, value: number): Promise<void>;
  writeq(addr: number, value: bigint): Promise<void>;

  /** Bulk access in memory order. */
  readBytes(addr: number, len: number): Promise<Uint8Array>;
  writeBytes(addr: number, data: Uint8Array): Promise<void>;
  memset(addr: number, len: number, value: number): Promise<void>;

  /** Advance the virtual clock by `ns` (or to the next deadline); the new time in ns. */
  clockStep(ns?: number): Promise<number>;
  clockSet(ns: number): Promise<number>;

  /**
   * Report the in (or out) IRQ lines of the device at `qomPath` into `irq`. Rejects with a
   * `MachineError` carrying the machine's reason ("Unknown device", "IRQ intercept already
   * enabled").
   */
  irqIntercept(kind: 'in' | 'out', qomPath: string): Promise<void>;

  /**
   * Let the machine make progress without doing anything: deliver pending asynchronous output
   * (IRQ lines from a socket) and, for machines with a clock, nothing else. Used by `poll`.
   */
  settle(): Promise<void>;

  /** Release the machine (quit the process, close sockets). Idempotent. */
  close(): Promise<void>;
}

export interface PollOptions {
  /** Wall-clock bound in ms (default 5000). */
  timeoutMs?: number;
  /** Virtual ns to step between tries on machines with a clock (default 100, as libqos). */
  stepNs?: number;
  /** Text for the timeout error. */
  what?: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nextTurn = (): Promise<void> =>
  new Promise((r) => (typeof setImmediate === 'function' ? setImmediate(r) : setTimeout(r, 0)));

/**
 * Wait until `cond()` returns a truthy value, and return that value. Between tries it steps the
 * virtual clock when the machine has one (libqos `qvirtio_wait_*` does `clock_step 100`), and
 * otherwise gives the machine a moment: first turns of the event loop, then 1 ms sleeps. Always
 * bounded by `timeoutMs` of wall-clock time; throws `TimeoutError` after it.
 */
export async function poll<T>(
  machine: Machine,
  cond: () => T | Promise<T>,
  opts: PollOptions = {},
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const stepNs = opts.stepNs ?? 100;
  const deadline = performance.now() + timeoutMs;
  for (let tries = 0; ; tries++) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) {
      throw new TimeoutError(`${machine.name}: timed out after ${timeoutMs} ms waiting for ${opts.what ?? 'a condition'}`);
    }
    if (machine.hasClock) {
      await machine.clockStep(stepNs);
      // Stay fair to timers and I/O of the host even when every call completes synchronously.
      if (tries % 64 === 63) await nextTurn();
    } else {
      await machine.settle();
      if (tries < 50) await nextTurn();
      else await sleep(1);
    }
  }
}

/**
 * Wait for `IRQ raise line` (or `lower` with `level` false) at or after `mark` in the machine's
 * IRQ log; returns the event.
 */
export async function waitIrq(
  machine: Machine,
  line: number,
  level = true,
  opts: PollOptions & { mark?: number } = {},
): Promise<IrqEvent> {
  return poll(machine, () => machine.irq.find(line, level, opts.mark ?? 0), {
    what: `IRQ ${level ? 'raise' : 'lower'} ${line}`,
    ...opts,
  });
}

/** Check that a number is a valid port. */
export function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) throw new RangeError(`bad port ${port}`);
}

/** Check that a number is a valid guest address (a non-negative safe integer). */
export function checkAddr(addr: number): void {
  if (!Number.isSafeInteger(addr) || addr < 0) throw new RangeError(`bad guest address ${addr}`);
}
