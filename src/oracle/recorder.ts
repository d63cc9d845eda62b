/**
 * `RecordingMachine`: a `Machine` that forwards every call to another machine and writes what it
 * saw into a `Transcript`: each port, memory and PCI configuration access with its value, bulk
 * transfers as length and digest, and the changes of the IRQ lines under test.
 *
 * Determinism rules, so that QEMU and our machines produce comparable transcripts:
 * - Calls run one at a time in call order (each waits for the previous reply), even when a caller
 *   issues several at once. The IRQ events caused by a call (an ISR read lowering INTx, a notify
 *   raising it) are therefore in the machine's IRQ log before the next call starts, on a qtest
 *   socket as in-process, and are written into the transcript right before the next call.
 * - Waiting is never recorded: `quiet()` runs driver code (polling for used entries, reading
 *   random bytes) without recording its accesses, and the scenario notes the outcome instead.
 * - Only watched IRQ lines are recorded (QEMU's TCG PIT moves other IOAPIC pins on its own).
 * - `idle()` gives a machine whose device works asynchronously (QEMU's rng backend completes
 *   from a bottom half) time to finish before the scenario looks at the result.
 *
 * PCI configuration mechanism #1 is decoded: `cfg 00:04.0+0x04 inw = 0x0007` rather than the two
 * port accesses. Browser-safe.
 */
import type { IrqLog, Machine, QmpLike } from '../driver/machine.js';
import { Transcript, fnv1a, hex } from './transcript.js';

/** A named address range, so that transcript lines say `bar4+0x14` instead of an address. */
export interface Region {
  name: string;
  space: 'mem' | 'io';
  base: number;
  size: number;
}

export interface RecorderOptions {
  /**
   * Wall-clock pause of `idle()` in ms: 0 for a machine whose devices complete inside the call
   * (ours in-process), some ms for one that completes asynchronously (QEMU). Default 0.
   */
  settleMs?: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class RecordingMachine implements Machine {
  readonly transcript = new Transcript();
  /** Error messages of failed calls, in order (not part of the transcript: they differ by side). */
  readonly errors: string[] = [];
  readonly settleMs: number;
  private sectionName = 'main';
  private quietDepth = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private regions: Region[] = [];
  private cf8 = 0;
  private readonly watched = new Set<number>();
  private irqSeen: number;

  constructor(readonly inner: Machine, opts: RecorderOptions = {}) {
    this.settleMs = opts.settleMs ?? 0;
    this.irqSeen = inner.irq.mark();
  }

  get name(): string {
    return this.inner.name;
  }
  get hasClock(): boolean {
    return this.inner.hasClock;
  }
  get irq(): IrqLog {
    return this.inner.irq;
  }
  get qmp(): QmpLike | undefined {
    return this.inner.qmp;
  }

  /** The current section (new entries go there). */
  get section(): string {
    return this.sectionName;
  }

  /** Start a new section; IRQ events so far are recorded in the old one. */
  async phase(name: string): Promise<void> {
    const old = this.sectionName;
    this.sectionName = name;
    await this.chain(async () => this.flushIrq(old));
  }

  /** Name an address range for transcript lines (later registrations win on overlap). */
  region(name: string, space: 'mem' | 'io', base: number, size: number): void {
    this.regions = this.regions.filter((r) => r.name !== name);
    this.regions.push({ name, space, base, size });
  }

  /** Record changes of IRQ `line` from now on. */
  watchIrq(line: number): void {
    this.watched.add(line);
  }

  /** Add a line to the transcript at the current position (after every call issued so far). */
  note(text: string): Promise<void> {
    const section = this.sectionName;
    const recorded = this.quietDepth === 0;
    return this.chain(async () => {
      this.flushIrq(section);
      if (recorded) this.transcript.push(section, `note ${text}`);
    });
  }

  /** Run `fn` without recording the accesses it makes. */
  async quiet<T>(fn: () => Promise<T>): Promise<T> {
    this.quietDepth++;
    try {
      // Calls issued synchronously by fn() are marked quiet at issue time.
      const p = fn();
      return await p;
    } finally {
      this.quietDepth--;
    }
  }

  /**
   * Let an asynchronous device finish what the last call started: wait `settleMs` of wall-clock
   * time, then make one unrecorded round trip so that every IRQ line the machine sent meanwhile
   * has been read.
   */
  async idle(): Promise<void> {
    await this.chain(async () => {
      if (this.settleMs > 0) await sleep(this.settleMs);
      await this.inner.settle();
      await this.inner.readb(0);
    });
  }

  /** Wait until every call issued so far has completed. */
  async sync(): Promise<void> {
    await this.chain(async () => undefined);
  }

  // --- internals -------------------------------------------------------------------------------

  private chain<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => undefined);
    return p;
  }

  private flushIrq(section: string): void {
    const events = this.inner.irq.since(this.irqSeen);
    this.irqSeen += events.length;
    for (const e of events) {
      if (this.watched.has(e.line)) this.transcript.push(section, `irq ${e.level ? 'raise' : 'lower'} ${e.line}`);
    }
  }

  private where(space: 'mem' | 'io', addr: number): string {
    for (let i = this.regions.length - 1; i >= 0; i--) {
      const r = this.regions[i]!;
      if (r.space === space && addr >= r.base && addr < r.base + r.size) return `${r.name}+${hex(addr - r.base)}`;
    }
    return `${space === 'io' ? 'io' : 'ram'} ${hex(addr)}`;
  }

  /** Where a port access goes, decoding configuration mechanism #1. */
  private portWhere(port: number, size: number): string | undefined {
    if (port === 0xcf8 && size === 4) return undefined; // recorded through the data accesses
    if (port >= 0xcfc && port < 0xd00 && this.cf8 & 0x8000_0000) {
      const bus = (this.cf8 >>> 16) & 0xff;
      const dev = (this.cf8 >>> 11) & 0x1f;
      const fn = (this.cf8 >>> 8) & 7;
      const off = (this.cf8 & 0xfc) + (port - 0xcfc);
      return `cfg ${bus.toString(16).padStart(2, '0')}:${dev.toString(16).padStart(2, '0')}.${fn}+${hex(off, 2)}`;
    }
    return this.where('io', port);
  }

  private op<T>(describe: () => string | undefined, run: () => Promise<T>, show: (v: T) => string): Promise<T> {
    const section = this.sectionName;
    const recorded = this.quietDepth === 0;
    return this.chain(async () => {
      this.flushIrq(section);
      const what = recorded ? describe() : undefined;
      try {
        const v = await run();
        if (what !== undefined) this.transcript.push(section, `${what}${show(v)}`);
        return v;
      } catch (e) {
        const msg = e instanceof Error ? e.message : String(e);
        this.errors.push(msg);
        if (what !== undefined) this.transcript.push(section, `${what} -> error`);
        throw e;
      }
    });
  }

  private portRead(kind: 'inb' | 'inw' | 'inl', port: number, width: number): Promise<number> {
    return this.op(
      () => `${this.portWhere(port, width)} ${kind}`,
      () => this.inner[kind](port),
      (v) => ` = ${hex(v, width * 2)}`,
    );
  }

  private portWrite(kind: 'outb' | 'outw' | 'outl', port: number, value: number, width: number): Promise<void> {
    const isCf8 = port === 0xcf8 && width === 4;
    return this.op(
      () => {
        if (isCf8) return value & 0x8000_0000 ? undefined : `io ${hex(port)} outl ${hex(value >>> 0, 8)}`;
        return `${this.portWhere(port, width)} ${kind} ${hex(value, width * 2)}`;
      },
      () => {
        // Latched in call order, recorded or not.
        if (isCf8) this.cf8 = value >>> 0;
        return this.inner[kind](port, value);
      },
      () => '',
    );
  }

  private memRead(kind: 'readb' | 'readw' | 'readl', addr: number, width: number): Promise<number> {
    return this.op(
      () => `${this.where('mem', addr)} ${kind}`,
      () => this.inner[kind](addr),
      (v) => ` = ${hex(v, width * 2)}`,
    );
  }

  private memWrite(kind: 'writeb' | 'writew' | 'writel', addr: number, value: number, width: number): Promise<void> {
    return this.op(
      () => `${this.where('mem', addr)} ${kind} ${hex(value, width * 2)}`,
      () => this.inner[kind](addr, value),
      () => '',
    );
  }

  // --- Machine ---------------------------------------------------------------------------------

  inb(port: number): Promise<number> {
    return this.portRead('inb', port, 1);
  }
  inw(port: number): Promise<number> {
    return this.portRead('inw', port, 2);
  }
  inl(port: number): Promise<number> {
    return this.portRead('inl', port, 4);
  }
  outb(port: number, value: number): Promise<void> {
    return this.portWrite('outb', port, value & 0xff, 1);
  }
  outw(port: number, value: number): Promise<void> {
    return this.portWrite('outw', port, value & 0xffff, 2);
  }
  outl(port: number, value: number): Promise<void> {
    return this.portWrite('outl', port, value >>> 0, 4);
  }
  readb(addr: number): Promise<number> {
    return this.memRead('readb', addr, 1);
  }
  readw(addr: number): Promise<number> {
    return this.memRead('readw', addr, 2);
  }
  readl(addr: number): Promise<number> {
    return this.memRead('readl', addr, 4);
  }
  readq(addr: number): Promise<bigint> {
    return this.op(
      () => `${this.where('mem', addr)} readq`,
      () => this.inner.readq(addr),
      (v) => ` = ${hex(v, 16)}`,
    );
  }
  writeb(addr: number, value: number): Promise<void> {
    return this.memWrite('writeb', addr, value & 0xff, 1);
  }
  writew(addr: number, value: number): Promise<void> {
    return this.memWrite('writew', addr, value & 0xffff, 2);
  }
  writel(addr: number, value: number): Promise<void> {
    return this.memWrite('writel', addr, value >>> 0, 4);
  }
  writeq(addr: number, value: bigint): Promise<void> {
    return this.op(
      () => `${this.where('mem', addr)} writeq ${hex(BigInt.asUintN(64, value), 16)}`,
      () => this.inner.writeq(addr, value),
      () => '',
    );
  }
  readBytes(addr: number, len: number): Promise<Uint8Array> {
    return this.op(
      () => `${this.where('mem', addr)} read ${len}`,
      () => this.inner.readBytes(addr, len),
      (v) => ` = #${fnv1a(v)}`,
    );
  }
  writeBytes(addr: number, data: Uint8Array): Promise<void> {
    return this.op(
      () => `${this.where('mem', addr)} write ${data.length} #${fnv1a(data)}`,
      () => this.inner.writeBytes(addr, data),
      () => '',
    );
  }
  memset(addr: number, len: number, value: number): Promise<void> {
    return this.op(
      () => `${this.where('mem', addr)} memset ${len} ${hex(value & 0xff, 2)}`,
      () => this.inner.memset(addr, len, value),
      () => '',
    );
  }

  /** Never recorded: QEMU under TCG has no clock; `poll` steps it on machines that have one. */
  clockStep(ns?: number): Promise<number> {
    return this.chain(() => this.inner.clockStep(ns));
  }
  clockSet(ns: number): Promise<number> {
    return this.chain(() => this.inner.clockSet(ns));
  }

  irqIntercept(kind: 'in' | 'out', qomPath: string): Promise<void> {
    return this.op(
      () => `irq_intercept_${kind} ${qomPath}`,
      () => this.inner.irqIntercept(kind, qomPath),
      () => ' -> OK',
    );
  }

  /** Unrecorded and cheap (`poll` calls it between tries): lets the inner machine deliver what it has. */
  settle(): Promise<void> {
    return this.chain(() => this.inner.settle());
  }

  /** The recorder does not own the machine: closing it is the runner's job. */
  async close(): Promise<void> {
    await this.sync().catch(() => undefined);
  }
}
