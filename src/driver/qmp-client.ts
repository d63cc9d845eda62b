/**
 * A small QMP client (QEMU Machine Protocol, JSON lines) over a Node stream: greeting,
 * `qmp_capabilities`, `execute`, with asynchronous events set aside. Node-only.
 */
import type { Duplex } from 'node:stream';
import { MachineError, TimeoutError, type QmpLike } from './machine.js';

export class QmpError extends MachineError {
  override name = 'QmpError';
  constructor(readonly command: string, readonly errorClass: string, readonly desc: string) {
    super(`QMP ${command}: ${errorClass}: ${desc}`);
  }
}

export interface QmpEvent {
  event: string;
  data?: unknown;
  timestamp?: { seconds: number; microseconds: number };
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class QmpClient implements QmpLike {
  /** The greeting's `QMP` object. */
  greeting: unknown;
  /** Events received so far (e.g. SHUTDOWN, STOP, RESUME, MIGRATION). */
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private inBuf = '';
  private closedReason: string | undefined;
  private greetingWaiter: { resolve: (v: unknown) => void; reject: (e: Error) => void } | undefined;

  private constructor(private readonly stream: Duplex, readonly name: string) {
    stream.setEncoding('utf8');
    stream.on('data', (c: string) => this.onData(c));
    stream.on('end', () => this.fail('connection closed by peer'));
    stream.on('close', () => this.fail('connection closed'));
    stream.on('error', (e: Error) => this.fail(`connection error: ${e.message}`));
  }

  /** Read the greeting and enter command mode; bounded by `timeoutMs`. */
  static async connect(stream: Duplex, opts: { name?: string; timeoutMs?: number } = {}): Promise<QmpClient> {
    const c = new QmpClient(stream, opts.name ?? 'qmp');
    const timeoutMs = opts.timeoutMs ?? 10_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`${c.name}: no QMP greeting/handshake in ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      c.greeting = await Promise.race([
        new Promise<unknown>((resolve, reject) => {
          if (c.closedReason) reject(new MachineError(`${c.name}: ${c.closedReason}`));
          else c.greetingWaiter = { resolve, reject };
        }),
        timeout,
      ]);
      await Promise.race([c.execute('qmp_capabilities'), timeout]);
    } finally {
      clearTimeout(timer);
    }
    return c;
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closedReason !== undefined) return Promise.reject(new MachineError(`${this.name}: ${this.closedReason}`));
    const id = this.nextId++;
    const msg: Record<string, unknown> = { execute: command, id };
    if (args !== undefined) msg['arguments'] = args;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { command, resolve, reject });
      this.stream.write(JSON.stringify(msg) + '\n');
    });
  }

  private onData(chunk: string): void {
    const buf = this.inBuf + chunk;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf('\n', start)) >= 0) {
      const line = buf.slice(start, nl).trim();
      start = nl + 1;
      if (line) this.onLine(line);
    }
    this.inBuf = buf.slice(start);
  }

  private onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.fail(`unparsable QMP line: ${line.slice(0, 200)}`);
      return;
    }
    if ('QMP' in msg) {
      this.greetingWaiter?.resolve(msg['QMP']);
      this.greetingWaiter = undefined;
      return;
    }
    if ('event' in msg) {
      this.events.push(msg as unknown as QmpEvent);
      return;
    }
    let id = typeof msg['id'] === 'number' ? msg['id'] : undefined;
    // A reply without an id: give it to the oldest command.
    if (id === undefined) id = this.pending.keys().next().value;
    if (id === undefined) return;
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if ('return' in msg) p.resolve(msg['return']);
    else {
      const err = (msg['error'] ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, err.class ?? 'GenericError', err.desc ?? JSON.stringify(msg)));
    }
  }

  private fail(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    this.greetingWaiter?.reject(new MachineError(`${this.name}: ${reason}`));
    this.greetingWaiter = undefined;
    for (const p of this.pending.values()) p.reject(new MachineError(`${this.name}: ${reason} (while waiting for ${p.command})`));
    this.pending.clear();
  }

  close(): void {
    this.fail('client closed');
    this.stream.destroy();
  }
}
