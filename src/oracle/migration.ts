/**
 * Live migration for driver scripts: the QMP sequence a QEMU harness uses to migrate a machine
 * to a file and load it into another (`migrate` with `exec:cat > FILE`, `migrate-incoming` with
 * `exec:cat FILE`, `query-migrate` polled until `completed`), and `SwappableMachine`, a `Machine`
 * whose machine underneath can be replaced by the migration destination, so that one driver
 * script — with its PCI, virtio and vring driver objects — runs on the source, migrates, and
 * carries on against the destination without knowing.
 *
 * No Node imports (the file paths are only parts of `exec:` URIs). The runner that starts the
 * processes is in test/migration/harness.ts.
 */
import { IrqLog, MachineError, TimeoutError, type IrqEvent, type Machine, type QmpLike } from '../driver/machine.js';

/** A migration failed, or a machine refused a migration command. */
export class MigrationFailure extends MachineError {
  override name = 'MigrationFailure';
}

/** The part of `query-migrate`'s answer the harness looks at. */
export interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
  [k: string]: unknown;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Quote a path for `/bin/sh -c` (QEMU runs `exec:` URIs through the shell). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Poll `query-migrate` until `completed` (resolves with the final answer), `failed` or
 * `cancelled` (rejects with `error-desc`), or `timeoutMs` of wall-clock time (rejects).
 */
export async function waitMigration(qmp: QmpLike, opts: { timeoutMs?: number; what?: string; pollMs?: number } = {}): Promise<MigrationInfo> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const what = opts.what ?? 'migration';
  const deadline = performance.now() + timeoutMs;
  let last: MigrationInfo = {};
  for (;;) {
    last = ((await qmp.execute('query-migrate')) ?? {}) as MigrationInfo;
    if (last.status === 'completed') return last;
    if (last.status === 'failed' || last.status === 'cancelled') {
      throw new MigrationFailure(`${what}: status ${last.status}${last['error-desc'] ? `: ${last['error-desc']}` : ''}`);
    }
    if (performance.now() > deadline) throw new TimeoutError(`${what}: not completed after ${timeoutMs} ms (last answer ${JSON.stringify(last)})`);
    await sleep(opts.pollMs ?? 1);
  }
}

/** `migrate` to `exec:cat > FILE`, then wait until `completed`. */
export async function migrateToFile(qmp: QmpLike, file: string, opts: { timeoutMs?: number } = {}): Promise<MigrationInfo> {
  try {
    await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(file)}` });
  } catch (e) {
    throw new MigrationFailure(`migrate to ${file} refused: ${(e as Error).message}`);
  }
  return waitMigration(qmp, { what: `outgoing migration to ${file}`, ...opts });
}

/** `migrate-incoming` from `exec:cat FILE` (the machine was started with `-incoming defer`), then wait. */
export async function migrateIncomingFromFile(qmp: QmpLike, file: string, opts: { timeoutMs?: number } = {}): Promise<MigrationInfo> {
  try {
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(file)}` });
  } catch (e) {
    throw new MigrationFailure(`migrate-incoming from ${file} refused: ${(e as Error).message}`);
  }
  return waitMigration(qmp, { what: `incoming migration from ${file}`, ...opts });
}

/** `query-status`'s `status` ('running', 'postmigrate', 'inmigrate', ...). */
export async function runState(qmp: QmpLike): Promise<string> {
  const r = (await qmp.execute('query-status')) as { status?: string };
  return r.status ?? '?';
}

/**
 * The run state of a source whose migration `query-migrate` reported `completed`. QEMU 7.2's
 * migration thread sets `completed` (migration_completion) and only afterwards, once it holds the
 * iothread lock again (migration_iteration_finish), moves the VM from `finish-migrate` to
 * `postmigrate`; a `query-status` in between sees `finish-migrate`. That state is polled past
 * (bounded by `timeoutMs`); whatever comes after it is returned for the caller to check.
 */
export async function runStateAfterMigration(qmp: QmpLike, opts: { timeoutMs?: number; pollMs?: number } = {}): Promise<string> {
  const deadline = performance.now() + (opts.timeoutMs ?? 2000);
  for (;;) {
    const state = await runState(qmp);
    if (state !== 'finish-migrate' || performance.now() > deadline) return state;
    await sleep(opts.pollMs ?? 1);
  }
}

/**
 * A `Machine` that forwards to a current machine which can be swapped for another (the
 * destination of a migration). It keeps:
 *  - one IRQ log across machines: the current machine's events are copied into it as they come,
 *    so marks taken before a swap stay meaningful; `swapMarks[i]` is where machine i+1 began;
 *  - the harness-side set-up a qtest harness repeats on every new machine: the IRQ intercepts
 *    (`replayIntercepts`), which are not part of the guest's state and do not migrate.
 */
export class SwappableMachine implements Machine {
  private current: Machine;
  private copied = 0;
  private readonly log = new IrqLog();
  private readonly intercepts: { kind: 'in' | 'out'; path: string }[] = [];
  /** IRQ log positions at which each swap happened. */
  readonly swapMarks: number[] = [];
  /** Names of the machines this one has been, oldest first. */
  readonly history: string[];

  constructor(first: Machine) {
    this.current = first;
    this.history = [first.name];
  }

  get name(): string {
    return `${this.current.name}${this.history.length > 1 ? ` (after ${this.history.length - 1} migration${this.history.length > 2 ? 's' : ''})` : ''}`;
  }
  get hasClock(): boolean {
    return this.current.hasClock;
  }
  get qmp(): QmpLike | undefined {
    return this.current.qmp;
  }
  /** The machine underneath now. */
  get inner(): Machine {
    return this.current;
  }
  /** How many swaps happened. */
  get migrations(): number {
    return this.swapMarks.length;
  }

  /** The IRQ log, brought up to date with the current machine's. */
  get irq(): IrqLog {
    this.syncIrq();
    return this.log;
  }

  private syncIrq(): void {
    const ev: IrqEvent[] = this.current.irq.since(this.copied);
    for (const e of ev) this.log.push(e.line, e.level);
    this.copied += ev.length;
  }

  /** Events on the current machine since it became current. */
  sinceSwap(): IrqEvent[] {
    return this.irq.since(this.swapMarks[this.swapMarks.length - 1] ?? 0);
  }

  /** Set up the intercepts recorded so far on `next` (before it loads the stream, so load-time changes show). */
  async replayIntercepts(next: Machine): Promise<void> {
    for (const i of this.intercepts) await next.irqIntercept(i.kind, i.path);
  }

  /** Make `next` the current machine; returns the one it replaces (the caller closes it). */
  swap(next: Machine): Machine {
    this.syncIrq();
    const old = this.current;
    this.current = next;
    this.copied = 0;
    this.swapMarks.push(this.log.mark());
    this.history.push(next.name);
    return old;
  }

  inb(port: number): Promise<number> {
    return this.current.inb(port);
  }
  inw(port: number): Promise<number> {
    return this.current.inw(port);
  }
  inl(port: number): Promise<number> {
    return this.current.inl(port);
  }
  outb(port: number, value: number): Promise<void> {
    return this.current.outb(port, value);
  }
  outw(port: number, value: number): Promise<void> {
    return this.current.outw(port, value);
  }
  outl(port: number, value: number): Promise<void> {
    return this.current.outl(port, value);
  }
  readb(addr: number): Promise<number> {
    return this.current.readb(addr);
  }
  readw(addr: number): Promise<number> {
    return this.current.readw(addr);
  }
  readl(addr: number): Promise<number> {
    return this.current.readl(addr);
  }
  readq(addr: number): Promise<bigint> {
    return this.current.readq(addr);
  }
  writeb(addr: number, value: number): Promise<void> {
    return this.current.writeb(addr, value);
  }
  writew(addr: number, value: number): Promise<void> {
    return this.current.writew(addr, value);
  }
  writel(addr: number, value: number): Promise<void> {
    return this.current.writel(addr, value);
  }
  writeq(addr: number, value: bigint): Promise<void> {
    return this.current.writeq(addr, value);
  }
  readBytes(addr: number, len: number): Promise<Uint8Array> {
    return this.current.readBytes(addr, len);
  }
  writeBytes(addr: number, data: Uint8Array): Promise<void> {
    return this.current.writeBytes(addr, data);
  }
  memset(addr: number, len: number, value: number): Promise<void> {
    return this.current.memset(addr, len, value);
  }
  clockStep(ns?: number): Promise<number> {
    return this.current.clockStep(ns);
  }
  clockSet(ns: number): Promise<number> {
    return this.current.clockSet(ns);
  }
  async irqIntercept(kind: 'in' | 'out', qomPath: string): Promise<void> {
    await this.current.irqIntercept(kind, qomPath);
    if (!this.intercepts.some((i) => i.kind === kind && i.path === qomPath)) this.intercepts.push({ kind, path: qomPath });
  }
  async settle(): Promise<void> {
    await this.current.settle();
    this.syncIrq();
  }
  /** Closes the current machine only (swapped-out ones belong to whoever swapped them). */
  close(): Promise<void> {
    return this.current.close();
  }
}
