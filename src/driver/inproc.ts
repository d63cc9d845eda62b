import type { QtestTarget } from '../machine/qtest-target.js';
import { IrqLog, MachineError, UnsupportedError, checkAddr, checkPort, type Machine, type QmpLike } from './machine.js';

export interface InProcessMachineOptions {
  /** For messages (default 'virtio-ts (in-process)'). */
  name?: string;
  /** A QMP stand-in, when the machine has one (e.g. for `qom-list`). */
  qmp?: QmpLike;
  /** Set false to model a machine without a usable virtual clock. Default true. */
  hasClock?: boolean;
  /** Called by `close()`. */
  onClose?: () => void | Promise<void>;
}

/**
 * `Machine` by direct calls into a `QtestTarget` (our reference machines), with no socket and no
 * text protocol. Each call runs the target synchronously when it is made, so the order of calls
 * is the order of effects, exactly as on a pipelined qtest connection.
 */
export class InProcessMachine implements Machine {
  readonly name: string;
  readonly hasClock: boolean;
  readonly irq = new IrqLog();
  readonly qmp: QmpLike | undefined;
  private closed = false;
  private readonly onClose: (() => void | Promise<void>) | undefined;

  constructor(readonly target: QtestTarget, opts: InProcessMachineOptions = {}) {
    this.name = opts.name ?? 'virtio-ts (in-process)';
    this.hasClock = opts.hasClock ?? true;
    this.qmp = opts.qmp;
    this.onClose = opts.onClose;
    target.onIrq = (line, level) => this.irq.push(line, level);
  }

  private live(): QtestTarget {
    if (this.closed) throw new MachineError(`${this.name}: machine is closed`);
    return this.target;
  }

  async inb(port: number): Promise<number> {
    checkPort(port);
    return this.live().inb(port) & 0xff;
  }
  async inw(port: number): Promise<number> {
    checkPort(port);
    return this.live().inw(port) & 0xffff;
  }
  async inl(port: number): Promise<number> {
    checkPort(port);
    return this.live().inl(port) >>> 0;
  }
  async outb(port: number, value: number): Promise<void> {
    checkPort(port);
    this.live().outb(port, value & 0xff);
  }
  async outw(port: number, value: number): Promise<void> {
    checkPort(port);
    this.live().outw(port, value & 0xffff);
  }
  async outl(port: number, value: number): Promise<void> {
    checkPort(port);
    this.live().outl(port, value >>> 0);
  }

  async readb(addr: number): Promise<number> {
    checkAddr(addr);
    return this.live().readb(addr) & 0xff;
  }
  async readw(addr: number): Promise<number> {
    checkAddr(addr);
    return this.live().readw(addr) & 0xffff;
  }
  async readl(addr: number): Promise<number> {
    checkAddr(addr);
    return this.live().readl(addr) >>> 0;
  }
  async readq(addr: number): Promise<bigint> {
    checkAddr(addr);
    return BigInt.asUintN(64, this.live().readq(addr));
  }
  async writeb(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    this.live().writeb(addr, value & 0xff);
  }
  async writew(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    this.live().writew(addr, value & 0xffff);
  }
  async writel(addr: number, value: number): Promise<void> {
    checkAddr(addr);
    this.live().writel(addr, value >>> 0);
  }
  async writeq(addr: number, value: bigint): Promise<void> {
    checkAddr(addr);
    this.live().writeq(addr, BigInt.asUintN(64, value));
  }

  async readBytes(addr: number, len: number): Promise<Uint8Array> {
    checkAddr(addr);
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`bad length ${len}`);
    if (len === 0) return new Uint8Array(0);
    // Copy: the caller must not hold a live view of guest RAM.
    return Uint8Array.from(this.live().readBytes(addr, len));
  }
  async writeBytes(addr: number, data: Uint8Array): Promise<void> {
    checkAddr(addr);
    if (data.length === 0) return;
    this.live().writeBytes(addr, data);
  }
  async memset(addr: number, len: number, value: number): Promise<void> {
    checkAddr(addr);
    if (!Number.isSafeInteger(len) || len < 0) throw new RangeError(`bad length ${len}`);
    if (len === 0) return;
    this.live().memset(addr, len, value & 0xff);
  }

  async clockStep(ns?: number): Promise<number> {
    if (!this.hasClock) throw new UnsupportedError(`${this.name}: no virtual clock`);
    return this.live().clockStep(ns);
  }
  async clockSet(ns: number): Promise<number> {
    if (!this.hasClock) throw new UnsupportedError(`${this.name}: no virtual clock`);
    return this.live().clockSet(ns);
  }

  async irqIntercept(kind: 'in' | 'out', qomPath: string): Promise<void> {
    const err = this.live().irqIntercept(kind, qomPath);
    if (err !== null) throw new MachineError(`${this.name}: irq_intercept_${kind} ${qomPath}: FAIL ${err}`);
  }

  async settle(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.target.onIrq) this.target.onIrq = undefined;
    await this.onClose?.();
  }
}
