/**
 * A client for QEMU's qtest text protocol (7.2 `softmmu/qtest.c`), over any Node byte streams: a
 * unix socket QEMU connected to, or a child's stdio with `-qtest stdio`. Node-only (Buffer,
 * streams): exported from the `virtio-ts/node` entry, never from the browser bundle.
 *
 * Protocol facts it relies on (see `shared/notes/qemu-oracle.md` §3):
 * - one reply line per command, in order: `OK`, `OK <value>`, `FAIL <text>` or `ERR <text>`;
 * - asynchronous `IRQ raise N` / `IRQ lower N` lines can come at any time, often before the `OK`
 *   of the write that caused them: they are queued into the IRQ log and never taken as replies;
 * - commands can be pipelined: every command is written at once (batched per microtask), and
 *   replies are matched to commands by order;
 * - QEMU aborts on malformed input (missing arguments, bad numbers, CR, double spaces, ports above
 *   0xffff, `read` of length 0), so every argument is validated here before it is sent.
 */
import type { Readable, Writable } from 'node:stream';
import { IrqLog, MachineError, UnsupportedError, checkAddr, checkPort, type Machine, type QmpLike } from './machine.js';

/** The machine answered `FAIL ...` or `ERR ...`. */
export class QtestError extends MachineError {
  override name = 'QtestError';
  constructor(readonly command: string, readonly reply: string) {
    super(`qtest '${command.length > 80 ? command.slice(0, 80) + '...' : command}' -> ${reply}`);
  }
}

interface Pending {
  command: string;
  resolve: (rest: string) => void;
  reject: (e: Error) => void;
}

/** A FIFO with O(1) push/shift. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;
  get length(): number {
    return this.items.length - this.head;
  }
  push(v: T): void {
    this.items.push(v);
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const v = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return v;
  }
  drain(): T[] {
    const out = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return out;
  }
}

export interface QtestClientOptions {
  /** For messages. */
  name?: string;
  /** Called with each protocol line sent (`> ...`) and received (`< ...`), for debugging. */
  log?: (line: string) => void;
}

const IRQ_LINE = /^IRQ (raise|lower) (-?\d+)$/;

/** The raw protocol: send a command line, get the text after `OK`. */
export class QtestClient {
  readonly irq = new IrqLog();
  readonly name: string;
  /** Lines that came with no command waiting for them (a protocol violation by the peer). */
  readonly unexpected: string[] = [];
  private readonly pending = new Fifo<Pending>();
  private outBuf: string[] = [];
  private flushQueued = false;
  private inBuf = '';
  private closedReason: string | undefined;
  private readonly log: ((line: string) => void) | undefined;

  constructor(private readonly input: Readable, private readonly output: Writable, opts: QtestClientOptions = {}) {
    this.name = opts.name ?? 'qtest';
    this.log = opts.log;
    input.setEncoding('latin1');
    input.on('data', (chunk: string) => this.onData(chunk));
    input.on('end', () => this.fail('connection closed by peer'));
    input.on('close', () => this.fail('connection closed'));
    input.on('error', (e: Error) => this.fail(`connection error: ${e.message}`));
    output.on('error', (e: Error) => this.fail(`connection error: ${e.message}`));
  }

  get closed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Commands sent and not yet answered. */
  get inFlight(): number {
    return this.pending.length;
  }

  /**
   * Send one command line (without newline). Resolves with the reply text after `OK` (empty for a
   * bare `OK`); rejects with `QtestError` on `FAIL`/`ERR`, or `MachineError` if the connection
   * goes away. Commands issued in the same synchronous run are written together (pipelined).
   */
  command(line: string): Promise<string> {
    if (line.length === 0 || line.indexOf('\n') >= 0 || line.indexOf('\r') >= 0) {
      return Promise.reject(new RangeError(`qtest command must be one non-empty line: ${JSON.stringify(line)}`));
    }
    if (this.closedReason !== undefined) {
      return Promise.reject(new MachineError(`${this.name}: ${this.closedReason}`));
    }
    return new Promise<string>((resolve, reject) => {
      this.pending.push({ command: line, resolve, reject });
      this.log?.(`> ${line}`);
      this.outBuf.push(line + '\n');
      if (!this.flushQueued) {
        this.flushQueued = true;
        queueMicrotask(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.flushQueued = false;
    if (this.outBuf.length === 0 || this.closedReason !== undefined) return;
    const data = this.outBuf.length === 1 ? this.outBuf[0]! : this.outBuf.join('');
    this.outBuf = [];
    this.output.write(data, 'latin1');
  }

  private onData(chunk: string): void {
    const buf = this.inBuf + chunk;
    let start = 0;
    let nl: number;
    while ((nl = buf.indexOf('\n', start)) >= 0) {
      let line = buf.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1);
      this.onLine(line);
    }
    this.inBuf = start === 0 ? buf : buf.slice(start);
  }

  private onLine(line: string): void {
    this.log?.(`< ${line}`);
    // Replies start with O, F or E: only lines starting "IRQ" need the pattern.
    const irq = line.charCodeAt(0) === 0x49 ? IRQ_LINE.exec(line) : null;
    if (irq) {
      this.irq.push(Number(irq[2]), irq[1] === 'raise');
      return;
    }
    const p = this.pending.shift();
    if (!p) {
      this.unexpected.push(line);
      return;
    }
    if (line === 'OK') p.resolve('');
    else if (line.startsWith('OK ')) p.resolve(line.slice(3));
    else p.reject(new QtestError(p.command, line));
  }

  private fail(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    for (const p of this.pending.drain()) p.reject(new MachineError(`${this.name}: ${reason} (while waiting for '${p.command}')`));
  }

  /** Stop using the connection: pending commands are rejected, the streams are ended. */
  close(): void {
    this.fail('client closed');
    this.output.end();
    this.input.destroy();
  }
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

function parseNum(cmd: string, s: string): number {
  const v = Number(s);
  if (!Number.isSafeInteger(v) || v < 0) throw new MachineError(`qtest '${cmd}': unparsable reply 'OK ${s}'`);
  return v;
}

function checkQomPath(path: string): void {
  if (path.length === 0 || /\s/.test(path)) throw new RangeError(`bad QOM path ${JSON.stringify(path)}`);
}

export interface QtestMachineOptions {
  name?: string;
  /** Whether `clock_step` works; `QtestMachine.open` finds out with `clock_step 0` by default. */
  hasClock?: boolean;
  qmp?: QmpLike;
  /** Called by `close()` (e.g. to quit the process). */
  onClose?: () => Promise<void>;
}

/** Largest block moved by one `b64read`/`b64write`. */
const BLOCK = 256 * 1024;

/** `Machine` over a qtest connection (a real QEMU, or our qtest server). */
export class QtestMachine implements Machine {
  readonly name: string;
  hasClock: boolean;
  readonly qmp: QmpLike | undefined;
  private readonly onClose: (() => Promise<void>) | undefined;
  private closing: Promise<void> | undefined;

  constructor(readonly client: QtestClient, opts: QtestMachineOptions = {}) {
    this.name = opts.name ?? client.name;
    this.hasClock = opts.hasClock ?? false;
    this.qmp = opts.qmp;
    this.onClose = opts.onClose;
  }

  /** Wrap a client, finding out whether the clock works unless told. */
  static async open(client: QtestClient, opts: QtestMachineOptions = {}): Promise<QtestMachine> {
    const m = new QtestMachine(client, opts);
    if (opts.hasClock === undefined) m.hasClock = await m.probeClock();
    return m;
  }

  /** `clock_step 0`: answers the time under the qtest accelerator, `FAIL Unknown command` under TCG. */
  async probeClock(): Promise<boolean> {
    try {
      await this.client.command('clock_step 0');
      return true;
    } catch (e) {
      if (e instanceof QtestError) return false;
      throw e;
    }
  }

  get irq(): IrqLog {
    return this.client.irq;
  }

  async inb(port: number): Promise<number> {
    checkPort(port);
    const cmd = `inb ${hex(port)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async inw(port: number): Promise<number> {
    checkPort(port);
    const cmd = `inw ${hex(port)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async inl(port: number): Promise<number> {
    checkPort(port);
    const cmd = `inl ${hex(port)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async outb(port: number, value: number): Promise<void> {
    checkPort(port);
    await this.client.command(`outb ${hex(port)} ${hex(value & 0xff)}`);
  }
  async outw(port: number, value: number): Promise<void> {
    checkPort(port);
    await this.client.command(`outw ${hex(port)} ${hex(value & 0xffff)}`);
  }
  async outl(port: number, value: number): Promise<void> {
    checkPort(port);
    await this.client.command(`outl ${hex(port)} ${hex(value >>> 0)}`);
  }

  async readb(addr: number): Promise<number> {
    checkAddr(addr);
    const cmd = `readb ${hex(addr)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async readw(addr: number): Promise<number> {
    checkAddr(addr);
    const cmd = `readw ${hex(addr)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async readl(addr: number): Promise<number> {
    checkAddr(addr);
    const cmd = `readl ${hex(addr)}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async readq(addr: number): Promise<bigint> {
    checkAddr(addr);
    const cmd = `readq ${hex(addr)}`;
    const r = await this.client.command(cmd);
    if (!/^0x[0-9a-fA-F]+$/.test(r)) throw new MachineError(`qtest '${cmd}': unparsable reply 'OK ${r}'`);
    return BigInt(r);
  }
  async writeb(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    await this.client.command(`writeb ${hex(addr)} ${hex(value & 0xff)}`);
  }
  async writew(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    await this.client.command(`writew ${hex(addr)} ${hex(value & 0xffff)}`);
  }
  async writel(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    await this.client.command(`writel ${hex(addr)} ${hex(value >>> 0)}`);
  }
  async writeq(addr: number, value: bigint): Promise<void> {
    checkAddr(addr);
    await this.client.command(`writeq ${hex(addr)} ${hex(BigInt.asUintN(64, value))}`);
  }

  async readBytes(addr: number, len: number): Promise<Uint8Array> {
    checkAddr(addr);
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`bad length ${len}`);
    const out = new Uint8Array(len);
    const parts: Promise<void>[] = [];
    for (let off = 0; off < len; off += BLOCK) {
      const n = Math.min(BLOCK, len - off);
      const cmd = `b64read ${hex(addr + off)} ${n}`;
      const at = off;
      parts.push(
        this.client.command(cmd).then((r) => {
          const b = Buffer.from(r, 'base64');
          if (b.length !== n) throw new MachineError(`qtest '${cmd}': got ${b.length} bytes`);
          out.set(b, at);
        }),
      );
    }
    await Promise.all(parts);
    return out;
  }

  async writeBytes(addr: number, data: Uint8Array): Promise<void> {
    checkAddr(addr);
    const parts: Promise<string>[] = [];
    // b64write's LEN must equal the decoded length (7.2 over-reads otherwise); base64 of >= 1
    // byte is >= 4 characters, so the "fewer than 3 data characters" ERR cannot happen.
    for (let off = 0; off < data.length; off += BLOCK) {
      const part = data.subarray(off, Math.min(data.length, off + BLOCK));
      const b64 = Buffer.from(part.buffer, part.byteOffset, part.byteLength).toString('base64');
      parts.push(this.client.command(`b64write ${hex(addr + off)} ${part.length} ${b64}`));
    }
    await Promise.all(parts);
  }

  async memset(addr: number, len: number, value: number): Promise<void> {
    checkAddr(addr);
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`bad length ${len}`);
    if (len === 0) return;
    await this.client.command(`memset ${hex(addr)} ${len} ${hex(value & 0xff)}`);
  }

  async clockStep(ns?: number): Promise<number> {
    if (!this.hasClock) throw new UnsupportedError(`${this.name}: clock_step needs the qtest accelerator`);
    if (ns !== undefined && (!Number.isSafeInteger(ns) || ns < 0)) throw new RangeError(`bad ns ${ns}`);
    const cmd = ns === undefined ? 'clock_step' : `clock_step ${ns}`;
    return parseNum(cmd, await this.client.command(cmd));
  }
  async clockSet(ns: number): Promise<number> {
    if (!this.hasClock) throw new UnsupportedError(`${this.name}: clock_set needs the qtest accelerator`);
    if (!Number.isSafeInteger(ns) || ns < 0) throw new RangeError(`bad ns ${ns}`);
    const cmd = `clock_set ${ns}`;
    return parseNum(cmd, await this.client.command(cmd));
  }

  async irqIntercept(kind: 'in' | 'out', qomPath: string): Promise<void> {
    checkQomPath(qomPath);
    await this.client.command(`irq_intercept_${kind} ${qomPath}`);
  }

  /** qtest `set_irq_in`: drive a named GPIO input of a device. */
  async setIrqIn(qomPath: string, name: string, line: number, level: number): Promise<void> {
    checkQomPath(qomPath);
    checkQomPath(name);
    if (!Number.isSafeInteger(line) || line < 0) throw new RangeError(`bad line ${line}`);
    await this.client.command(`set_irq_in ${qomPath} ${name} ${line} ${Math.trunc(level)}`);
  }

  async endianness(): Promise<string> {
    return this.client.command('endianness');
  }

  /** Wait until every command sent so far has been answered (a cheap round trip). */
  async sync(): Promise<void> {
    await this.client.command('endianness');
  }

  async settle(): Promise<void> {}

  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.onClose?.();
      } finally {
        this.client.close();
      }
    })();
    return this.closing;
  }
}
