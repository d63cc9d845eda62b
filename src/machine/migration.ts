/**
 * Migration as QMP drives it (QEMU 7.2 migration/migration.c): the source's and the
 * destination's state machines, capabilities, `query-migrate`'s shapes, MIGRATION events, and
 * the run-state changes around a migration. The bytes come from an injected engine (the savevm
 * stream writer and reader) and travel over injected channels (`exec:` needs a process, so the
 * Node side provides it), so this module is browser-safe and knows nothing of the stream format.
 *
 * Source, as QEMU: `migrate` checks, enters `setup` (MIGRATION event), returns; then `active`;
 * then completion stops the VM (`finish-migrate`, STOP if it ran), saves the stream with the run
 * state it had (the globalstate section), writes it, and ends `completed` in `postmigrate`. A
 * failure or a cancel restarts a VM that was running. Our stream is produced in one piece at
 * completion (there is no iterative RAM phase), so every byte is written while the VM is stopped.
 *
 * Destination, as QEMU: `-incoming defer` (or a URI) puts the machine in `inmigrate`;
 * `migrate-incoming` starts reading; once loaded, the VM runs if the stream's run state was
 * `running` (or absent) and autostart is on (no -S), is `paused` if not, and otherwise takes the
 * received state. A load failure prints QEMU's messages and, in QEMU, ends the process with
 * status 1 (`onIncomingFailure`).
 *
 * No Node imports: part of the browser bundle.
 */
import { MIGRATE_ANNOUNCE_PARAMS } from '../devices/net/virtio-net.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import { MigrationError } from '../migration/qemu-file.js';
import { loadVm, saveVm } from '../migration/savevm.js';
import { isRunState, type ReferenceMachine, type RunState } from './machine.js';

/** What a load returns (the savevm reader's result). */
export interface MigrationLoadResult {
  /** Messages QEMU would print as warnings while loading (they go to stderr). */
  warnings: string[];
  /** The run state of the stream's globalstate section, when it had one. */
  runState?: string;
}

/**
 * The savevm stream: `saveVm`/`loadVm` of src/migration/savevm.ts, bound to a machine.
 * `save` runs with the VM stopped and gets the run state the globalstate section must carry
 * (QEMU's `global_state_store`: the state before the migration stopped the VM). `load` parses and
 * applies a whole stream atomically; it throws on a bad stream with QEMU's message (an error
 * with a string `strerror` property chooses the errno text of "load of migration failed: ...",
 * "Invalid argument" by default).
 */
export interface MigrationEngine {
  save(runState: RunState): Uint8Array;
  load(bytes: Uint8Array): MigrationLoadResult;
  /**
   * RAM statistics for `query-migrate` (QEMU's `ram_bytes_total` and the zero/normal page
   * counts of the last save). By default they are counted over the machine's RAM at save time.
   */
  ramStats?(): RamStats;
}

/** How long an outgoing migration waits for devices to finish their backend I/O (QEMU: no bound). */
export const MIGRATION_DRAIN_TIMEOUT_MS = 1000;

/** The savevm stream of src/migration/savevm.ts, bound to one of our machines. */
export function savevmEngine(machine: ReferenceMachine): MigrationEngine {
  return {
    save: (runState) => saveVm(machine, { runState }),
    load: (bytes) => {
      const r = loadVm(machine, bytes);
      return r.runState !== undefined ? { warnings: r.warnings, runState: r.runState } : { warnings: r.warnings };
    },
  };
}

export interface RamStats {
  /** Bytes of migratable RAM. */
  total: number;
  /** Pages sent as zero pages. */
  duplicate: number;
  /** Pages sent whole. */
  normal: number;
}

export type MigrationDirection = 'outgoing' | 'incoming';

/**
 * Where the bytes go: `exec:`/`file:` on Node (src/cli/migration-channels.ts), anything an
 * embedder likes elsewhere. Both calls end only when the transfer is complete (for `exec:`, when
 * the command has exited successfully); they reject with the message `query-migrate` shows, and
 * stop early when `signal` aborts (`migrate_cancel`, quit).
 */
export interface MigrationChannels {
  /**
   * Refuse a URI before anything starts (QEMU's synchronous errors, e.g. "error parsing
   * address"): return the message, or undefined when the URI can be used.
   */
  check?(uri: string, direction: MigrationDirection): string | undefined;
  write(uri: string, bytes: Uint8Array, signal?: AbortSignal): Promise<void>;
  read(uri: string, signal?: AbortSignal): Promise<Uint8Array>;
}

export interface MigrationOptions {
  /** The stream; without it a migration fails with a message saying so. */
  engine?: MigrationEngine;
  /** The transport; without it every URI is refused with a message saying so. */
  channels?: MigrationChannels;
  /** What QEMU prints on stderr with `error_report` (load errors and warnings, failed migrations). */
  report?: (message: string) => void;
  /**
   * The incoming migration failed to load. QEMU 7.2 then exits with status 1
   * (`process_incoming_migration_co`); virtio-ts-qemu does the same. Called after the `failed`
   * event.
   */
  onIncomingFailure?: () => void;
  /**
   * Accept `file:PATH` URIs (QEMU 8.x's file migration, without `offset=`). QEMU 7.2 has no
   * `file:` and refuses it ("Parameter 'uri' expects a valid migration protocol" for `migrate`,
   * "unknown migration protocol" for incoming), which is the default here too.
   */
  fileUri?: boolean;
  /** Wall-clock milliseconds for the times `query-migrate` reports (default Date.now). */
  now?: () => number;
}

/** A command refused, worded as QEMU's (QMP class GenericError). */
export class MigrationCommandError extends Error {
  override name = 'MigrationCommandError';
}

/** QEMU's MigrationStatus names (qapi/migration.json). */
export const MIGRATION_STATUSES = [
  'none', 'setup', 'cancelling', 'cancelled', 'active', 'postcopy-active', 'postcopy-paused', 'postcopy-recover',
  'completed', 'failed', 'colo', 'pre-switchover', 'device', 'wait-unplug',
] as const;
export type MigrationStatus = (typeof MIGRATION_STATUSES)[number];

/** QEMU 7.2's MigrationCapability names, in the order `query-migrate-capabilities` lists them. */
export const MIGRATION_CAPABILITIES = [
  'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram', 'x-colo',
  'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps', 'postcopy-blocktime',
  'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot', 'zero-copy-send', 'postcopy-preempt',
] as const;
export type MigrationCapability = (typeof MIGRATION_CAPABILITIES)[number];

/**
 * Capabilities that may be switched on. `events` changes only what QMP reports; every other one
 * changes the stream or the protocol (postcopy, multifd, compression, return path...), which
 * virtio-ts does not implement, so switching it on is refused rather than silently ignored.
 */
const SUPPORTED_CAPABILITIES: ReadonlySet<MigrationCapability> = new Set(['events']);

/**
 * QEMU 7.2's `query-migrate-parameters` for a fresh process, keys in the order QEMU prints them
 * (checked on qemu-system-x86_64 7.2.22). `migrate-set-parameters` is not supported, so these
 * never change.
 */
const DEFAULT_PARAMETERS = {
  'cpu-throttle-tailslow': false, 'xbzrle-cache-size': 67108864, 'cpu-throttle-initial': 20, 'announce-max': 550,
  'decompress-threads': 2, 'compress-threads': 8, 'compress-level': 1, 'multifd-channels': 2, 'multifd-zstd-level': 1,
  'announce-initial': 50, 'block-incremental': false, 'compress-wait-thread': true, 'downtime-limit': 300, 'tls-authz': '',
  'multifd-compression': 'none', 'announce-rounds': 5, 'announce-step': 100, 'tls-creds': '', 'multifd-zlib-level': 1,
  'max-cpu-throttle': 99, 'max-postcopy-bandwidth': 0, 'tls-hostname': '', 'throttle-trigger-threshold': 50,
  'max-bandwidth': 134217728, 'x-checkpoint-delay': 20000, 'cpu-throttle-increment': 10,
} as const;

/** QEMU's target page size on x86. */
const TARGET_PAGE_SIZE = 4096;
/** QEMU's default `downtime-limit`, which it reports as `expected-downtime` until it has measured. */
const DEFAULT_DOWNTIME_LIMIT_MS = 300;

/** QERR_MIGRATION_ACTIVE. */
const MIGRATION_ACTIVE = "There's a migration process in progress";

/** QEMU's `migration_is_running`. */
function isRunning(s: MigrationStatus): boolean {
  return s === 'setup' || s === 'active' || s === 'cancelling' || s === 'postcopy-active' || s === 'postcopy-paused' ||
    s === 'postcopy-recover' || s === 'pre-switchover' || s === 'device' || s === 'wait-unplug';
}

/**
 * The protocol of a URI as QEMU 7.2's dispatch sees it (`qmp_migrate`,
 * `qemu_start_incoming_migration`), or undefined when it is not one QEMU knows.
 */
function protocolOf(uri: string, fileUri: boolean): string | undefined {
  for (const p of ['tcp:', 'unix:', 'vsock:', 'rdma:', 'exec:', 'fd:']) if (uri.startsWith(p)) return p.slice(0, -1);
  if (fileUri && uri.startsWith('file:')) return 'file';
  return undefined;
}

/** The outgoing migration in progress. */
interface OutgoingJob {
  readonly abort: AbortController;
  /** The VM ran when completion stopped it (QEMU's `vm_was_running`). */
  vmWasRunning: boolean;
}

/**
 * One machine's migration state (QEMU's `MigrationState` and `MigrationIncomingState`, which are
 * per process). Every QMP monitor of the machine shares it.
 */
export class MigrationController {
  private readonly engine: MigrationEngine | undefined;
  private readonly channels: MigrationChannels | undefined;
  private readonly report: (message: string) => void;
  private readonly onIncomingFailure: (() => void) | undefined;
  private readonly fileUri: boolean;
  private readonly now: () => number;

  private readonly caps = new Map<MigrationCapability, boolean>(MIGRATION_CAPABILITIES.map((c) => [c, false]));

  /** Source side. */
  private status: MigrationStatus = 'none';
  private error: string | undefined;
  private startTime = 0;
  private setupTime = 0;
  private totalTime = 0;
  private downtimeStart = 0;
  private downtime = 0;
  private mbps = 0;
  private transferred = 0;
  private dirtySyncCount = 0;
  private ram: RamStats = { total: 0, duplicate: 0, normal: 0 };
  private job: OutgoingJob | undefined;

  /** Destination side. */
  private incomingStatus: MigrationStatus = 'none';
  /** `qmp_migrate_incoming`'s static `once`: cleared once an incoming migration has started. */
  private incomingOnce = true;
  private incomingAbort: AbortController | undefined;

  constructor(readonly machine: ReferenceMachine, opts: MigrationOptions = {}) {
    this.engine = opts.engine;
    this.channels = opts.channels;
    this.report = opts.report ?? (() => undefined);
    this.onIncomingFailure = opts.onIncomingFailure;
    this.fileUri = opts.fileUri ?? false;
    this.now = opts.now ?? Date.now;
  }

  /** The source's state (QEMU's `MigrationState.state`). */
  get sourceStatus(): MigrationStatus {
    return this.status;
  }

  /** The destination's state (QEMU's `MigrationIncomingState.state`). */
  get destinationStatus(): MigrationStatus {
    return this.incomingStatus;
  }

  capability(c: MigrationCapability): boolean {
    return this.caps.get(c) ?? false;
  }

  /** Stop whatever transfer is under way (the process is going away): children end, nothing more happens. */
  dispose(): void {
    this.job?.abort.abort();
    this.incomingAbort?.abort();
  }

  // ---------------------------------------------------------------------------------------
  // Events

  /** QEMU's `migrate_generate_event`: only with the `events` capability. */
  private event(status: MigrationStatus): void {
    if (this.capability('events')) this.machine.emitEvent('MIGRATION', { status });
  }

  private setStatus(s: MigrationStatus): void {
    if (this.status === s) return;
    this.status = s;
    this.event(s);
  }

  private setIncomingStatus(s: MigrationStatus): void {
    if (this.incomingStatus === s) return;
    this.incomingStatus = s;
    this.event(s);
  }

  // ---------------------------------------------------------------------------------------
  // Capabilities and parameters

  /**
   * `migrate-set-capabilities`, its arguments already checked by QAPI rules. All or nothing, as
   * QEMU's `migrate_caps_check`.
   */
  setCapabilities(list: readonly { capability: MigrationCapability; state: boolean }[]): void {
    if (isRunning(this.status)) throw new MigrationCommandError(MIGRATION_ACTIVE);
    for (const { capability, state } of list) {
      if (state && !SUPPORTED_CAPABILITIES.has(capability)) {
        throw new MigrationCommandError(`virtio-ts does not support the migration capability '${capability}'`);
      }
    }
    for (const { capability, state } of list) this.caps.set(capability, state);
  }

  /** `query-migrate-capabilities`. */
  queryCapabilities(): { state: boolean; capability: MigrationCapability }[] {
    return MIGRATION_CAPABILITIES.map((capability) => ({ state: this.capability(capability), capability }));
  }

  /** `query-migrate-parameters`. */
  queryParameters(): Record<string, unknown> {
    return { ...DEFAULT_PARAMETERS };
  }

  // ---------------------------------------------------------------------------------------
  // query-migrate (fill_destination_migration_info, then fill_source_migration_info)

  queryMigrate(): Record<string, unknown> {
    const dest: Record<string, unknown> = this.incomingStatus === 'none' ? {} : { status: this.incomingStatus };
    const s = this.status;
    switch (s) {
      case 'none':
        return dest;
      case 'active':
      case 'cancelling':
        // Key order as QEMU prints it.
        return {
          'expected-downtime': DEFAULT_DOWNTIME_LIMIT_MS,
          status: s,
          'setup-time': this.setupTime,
          'total-time': this.now() - this.startTime,
          ram: this.ramInfo(false),
        };
      case 'completed':
        return { status: s, 'setup-time': this.setupTime, downtime: this.downtime, 'total-time': this.totalTime, ram: this.ramInfo(true) };
      case 'failed':
        return this.error === undefined ? { status: s } : { status: s, 'error-desc': this.error };
      default:
        return { status: s };
    }
  }

  /** QEMU's `populate_ram_info` (MigrationStats), keys in QEMU's order. */
  private ramInfo(completed: boolean): Record<string, unknown> {
    const r = this.ram;
    return {
      total: r.total,
      'postcopy-requests': 0,
      'dirty-sync-count': this.dirtySyncCount,
      'multifd-bytes': 0,
      'pages-per-second': 0,
      'downtime-bytes': 0,
      'page-size': TARGET_PAGE_SIZE,
      remaining: 0,
      'postcopy-bytes': 0,
      mbps: completed ? this.mbps : 0,
      transferred: this.transferred,
      'dirty-sync-missed-zero-copy': 0,
      'precopy-bytes': this.transferred,
      duplicate: r.duplicate,
      'dirty-pages-rate': 0,
      skipped: 0,
      'normal-bytes': r.normal * TARGET_PAGE_SIZE,
      normal: r.normal,
    };
  }

  // ---------------------------------------------------------------------------------------
  // Source

  /**
   * QMP `migrate` (qmp_migrate + migrate_prepare): checks, `setup`, and the migration runs on
   * after the command returns. `detach` is accepted and ignored, as in QEMU.
   */
  migrate(uri: string, opts: { blk?: boolean; inc?: boolean; resume?: boolean } = {}): void {
    const m = this.machine;
    // There is never a paused postcopy migration to resume.
    if (opts.resume) throw new MigrationCommandError('Cannot resume if there is no paused migration');
    if (isRunning(this.status)) throw new MigrationCommandError(MIGRATION_ACTIVE);
    if (m.runState === 'inmigrate') throw new MigrationCommandError('Guest is waiting for an incoming migration');
    if (m.runState === 'postmigrate') throw new MigrationCommandError("Can't migrate the vm that was paused due to previous migration");
    // QEMU would add a "block" section for old-style block migration; there are no drives to send.
    if (opts.blk || opts.inc) throw new MigrationCommandError('virtio-ts does not support block migration (blk/inc)');

    // migrate_init
    this.status = 'none';
    this.error = undefined;
    this.setupTime = this.totalTime = this.downtime = this.mbps = this.transferred = this.dirtySyncCount = 0;
    this.ram = { total: 0, duplicate: 0, normal: 0 };
    this.setStatus('setup');
    this.startTime = this.now();

    const proto = protocolOf(uri, this.fileUri);
    if (proto === undefined) {
      // No error-desc: QEMU puts this one only in the command's reply.
      this.setStatus('failed');
      throw new MigrationCommandError("Parameter 'uri' expects a valid migration protocol");
    }
    const refused = this.channels ? this.channels.check?.(uri, 'outgoing') : 'virtio-ts: no migration channels are configured';
    if (refused !== undefined) {
      // migrate_fd_error: failed, with the error kept for query-migrate.
      this.error = refused;
      this.setStatus('failed');
      throw new MigrationCommandError(refused);
    }
    const job: OutgoingJob = { abort: new AbortController(), vmWasRunning: false };
    this.job = job;
    void this.runOutgoing(uri, job);
  }

  /** The migration thread: setup → active → completion → completed/failed/cancelled. */
  private async runOutgoing(uri: string, job: OutgoingJob): Promise<void> {
    const m = this.machine;
    // The command's reply goes out first, as QEMU's migration thread starts after it.
    await Promise.resolve();
    if (this.statusNow() !== 'setup') return this.finishOutgoing(job);

    // ram_save_setup's first dirty bitmap sync, then active. The precopy notifiers hear of the
    // set-up and of each sync (virtio-balloon asks for free page hints while the VM runs).
    m.precopyNotify('setup');
    this.bitmapSync();
    this.setupTime = this.now() - this.startTime;
    this.setStatus('active');

    // migration_completion: stop the VM, sync once more (the notifiers see a stopped VM: the
    // balloon tells the guest hinting is DONE before its state is saved), save with the state
    // the VM had.
    this.downtimeStart = this.now();
    job.vmWasRunning = m.vmRunning;
    const globalState = m.runState;
    m.vmStopForceState('finish-migrate');
    // do_vm_stop drains block I/O: wait (bounded, where QEMU waits without bound) for what the
    // devices' backends are doing; completions that arrive are written into RAM before it is
    // saved, what is still running then travels in the stream (virtio-blk's request list).
    await Promise.all(m.deviceSections().map((sec) => sec.drain?.(MIGRATION_DRAIN_TIMEOUT_MS)));
    if (this.statusNow() !== 'active') {
      // Cancelled while draining: the notifiers that heard of the set-up hear of the clean-up.
      m.precopyNotify('cleanup');
      return this.finishOutgoing(job);
    }
    this.bitmapSync();
    m.precopyNotify('complete');
    let bytes: Uint8Array;
    try {
      if (!this.engine) throw new Error('virtio-ts: no migration stream engine is configured');
      bytes = this.engine.save(globalState);
      this.ram = this.engine.ramStats?.() ?? countRamPages(m.sys.ram);
    } catch (e) {
      this.error = messageOf(e);
      this.setStatus('failed');
      m.precopyNotify('cleanup');
      return this.finishOutgoing(job);
    }
    m.precopyNotify('cleanup');
    this.transferred = bytes.length;

    try {
      if (!this.channels) throw new Error('virtio-ts: no migration channels are configured');
      await this.channels.write(uri, bytes, job.abort.signal);
    } catch (e) {
      if (this.statusNow() === 'active') {
        this.error = messageOf(e);
        this.setStatus('failed');
      }
      return this.finishOutgoing(job);
    }
    if (this.statusNow() === 'active') {
      // migration_calculate_complete
      const end = this.now();
      this.totalTime = end - this.startTime;
      this.downtime = end - this.downtimeStart;
      const transferTime = this.totalTime - this.setupTime;
      this.mbps = transferTime > 0 ? (this.transferred * 8) / transferTime / 1000 : 0;
      this.setStatus('completed');
    }
    this.finishOutgoing(job);
  }

  /** The status as it is now (a `migrate_cancel` may have changed it while we awaited). */
  private statusNow(): MigrationStatus {
    return this.status;
  }

  /** `migration_iteration_finish` and `migrate_fd_cleanup`. */
  private finishOutgoing(job: OutgoingJob): void {
    if (this.job !== job) return;
    this.job = undefined;
    const m = this.machine;
    if (this.status === 'completed') {
      m.runState = 'postmigrate';
      return;
    }
    // Failed or cancelled: a VM that ran runs again; one that did not stays stopped.
    if (job.vmWasRunning) {
      if (m.runState !== 'shutdown') m.vmStart();
    } else if (m.runState === 'finish-migrate') {
      m.runState = 'postmigrate';
    }
    if (this.status === 'cancelling') this.setStatus('cancelled');
    if (this.error !== undefined && this.status === 'failed') this.report(this.error);
  }

  /** `migration_bitmap_sync_precopy`: the notifiers before and after, and the pass event. */
  private bitmapSync(): void {
    this.machine.precopyNotify('before-bitmap-sync');
    this.passEvent();
    this.machine.precopyNotify('after-bitmap-sync');
  }

  /** MIGRATION_PASS (sent with the `events` capability at each dirty bitmap sync). */
  private passEvent(): void {
    this.dirtySyncCount++;
    if (this.capability('events')) this.machine.emitEvent('MIGRATION_PASS', { pass: this.dirtySyncCount });
  }

  /** QMP `migrate_cancel` (migrate_fd_cancel): a running migration goes to `cancelling`. */
  cancel(): void {
    if (!isRunning(this.status)) return;
    this.setStatus('cancelling');
    this.job?.abort.abort();
    // Before `active` the job has not reached its first step yet; it ends itself there.
  }

  /** QMP `migrate-continue` (only meaningful with pause-before-switchover, never on here). */
  continueFrom(state: MigrationStatus): void {
    if (this.status !== state) throw new MigrationCommandError(`Migration not in expected state: ${this.status}`);
  }

  // ---------------------------------------------------------------------------------------
  // Destination

  /**
   * QMP `migrate-incoming`, and `-incoming URI` at start-up (qmp_migrate_incoming and
   * qemu_start_incoming_migration). The load runs after the command returns.
   */
  migrateIncoming(uri: string): void {
    const m = this.machine;
    if (!this.incomingOnce) throw new MigrationCommandError('The incoming migration has already been started');
    if (m.runState !== 'inmigrate') throw new MigrationCommandError("'-incoming' was not specified on the command line");
    // QEMU sends this one whatever the `events` capability says.
    m.emitEvent('MIGRATION', { status: 'setup' });
    if (protocolOf(uri, this.fileUri) === undefined) throw new MigrationCommandError(`unknown migration protocol: ${uri}`);
    const refused = this.channels ? this.channels.check?.(uri, 'incoming') : 'virtio-ts: no migration channels are configured';
    if (refused !== undefined) throw new MigrationCommandError(refused);
    this.incomingOnce = false;
    const abort = new AbortController();
    this.incomingAbort = abort;
    void this.runIncoming(uri, abort.signal);
  }

  /** process_incoming_migration_co and process_incoming_migration_bh. */
  private async runIncoming(uri: string, signal: AbortSignal): Promise<void> {
    const m = this.machine;
    let bytes: Uint8Array;
    try {
      if (!this.channels) throw new Error('virtio-ts: no migration channels are configured');
      bytes = await this.channels.read(uri, signal);
    } catch (e) {
      if (signal.aborted) return;
      // The data never arrived whole: QEMU's reads fail with EIO.
      this.failIncoming(messageOf(e), 'Input/output error');
      return;
    }
    if (signal.aborted) return;
    this.setIncomingStatus('active');
    let result: MigrationLoadResult;
    try {
      if (!this.engine) throw new Error('virtio-ts: no migration stream engine is configured');
      result = this.engine.load(bytes);
    } catch (e) {
      const errno = (e as { strerror?: unknown }).strerror;
      // QEMU's two lines first (its message, then "load of migration failed"), then where in
      // the stream it happened, which QEMU does not say.
      const located = e instanceof MigrationError;
      const where = located ? `virtio-ts: refused at stream offset ${e.offset} (${e.field})` : undefined;
      this.failIncoming(located ? e.reason : messageOf(e), typeof errno === 'string' ? errno : 'Invalid argument', where);
      return;
    }
    for (const w of result.warnings) this.report(w);
    const received = result.runState;
    if (received !== undefined && !isRunState(received)) {
      // global_state_post_load's check, should the engine not have made it.
      this.failIncoming(`invalid parameter value: ${received}`, 'Invalid argument');
      return;
    }
    // process_incoming_migration_bh: a running (or unknown) source state obeys autostart; any
    // other state is taken as it is.
    if (received === undefined || received === 'running') {
      if (m.autostart) m.vmStart();
      else m.runState = 'paused';
    } else {
      m.runState = received;
    }
    // qemu_announce_self with the migration parameters: every NIC sends RARP frames, five rounds
    // over 800 ms, so switches learn where the guest went. (QEMU starts it just before vm_start
    // and its first frames wait for the VM to run; sending them once it runs comes to the same.)
    m.net.announceSelf({ ...MIGRATE_ANNOUNCE_PARAMS });
    this.setIncomingStatus('completed');
  }

  private failIncoming(message: string, errno: string, detail?: string): void {
    this.report(message);
    this.report(`load of migration failed: ${errno}`);
    if (detail !== undefined) this.report(detail);
    this.setIncomingStatus('failed');
    this.onIncomingFailure?.();
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Zero and non-zero pages of guest RAM, as QEMU's RAM migration counts them (`duplicate` and
 * `normal`). Regions that share bytes (an alias of the BIOS) count once.
 */
export function countRamPages(memory: GuestMemory): RamStats {
  const seen = new Set<Uint8Array>();
  let total = 0;
  let duplicate = 0;
  let normal = 0;
  for (const r of memory.regions) {
    const b = r.bytes;
    let dup = false;
    for (const s of seen) if (s.buffer === b.buffer && s.byteOffset === b.byteOffset && s.length === b.length) dup = true;
    if (dup) continue;
    seen.add(b);
    total += b.length;
    // Word by word where the bytes allow it: a 16 MiB scan then takes a few milliseconds.
    const words = b.byteOffset % 4 === 0 ? new Uint32Array(b.buffer, b.byteOffset, b.length >>> 2) : undefined;
    for (let off = 0; off < b.length; off += TARGET_PAGE_SIZE) {
      const end = Math.min(off + TARGET_PAGE_SIZE, b.length);
      let zero = true;
      let i = off;
      if (words) {
        for (const wEnd = end >>> 2; i >>> 2 < wEnd; i += 4) {
          if (words[i >>> 2] !== 0) {
            zero = false;
            break;
          }
        }
      }
      for (; zero && i < end; i++) if (b[i] !== 0) zero = false;
      if (zero) duplicate++;
      else normal++;
    }
  }
  return { total, duplicate, normal };
}
