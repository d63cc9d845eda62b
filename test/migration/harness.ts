// The migration interop harness: runs one driver script on a source machine, migrates it to a
// file through QMP exactly as a QEMU harness does, and lets the script carry on against the
// destination (spec/qemu-virtio-migration.md, shared/notes/qemu-oracle.md §5):
//
//   source:       migrate {"uri": "exec:cat > FILE"}, poll query-migrate until "completed";
//                 its run state must then be "postmigrate" (once past "finish-migrate", which
//                 QEMU 7.2 still reports for a moment after "completed");
//   destination:  started with the same command line plus `-incoming defer` (in parallel with the
//                 source, so its start costs nothing), the harness's IRQ intercepts set up again,
//                 migrate-incoming {"uri": "exec:cat FILE"}, poll until "completed"; it must then
//                 be "running", as the source was.
//
// Each end is real QEMU 7.2 or our `virtio-ts-qemu`, started the same way (`launchQemu`). The
// script sees one `Machine` throughout (`SwappableMachine`), so its PCI, virtio and vring driver
// objects keep working after `ctx.migrate()`. Every stream written is kept for the blob
// comparison (blob-compare.ts).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { diskBytes } from '../../src/oracle/disks.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import { MigrationFailure, SwappableMachine, migrateIncomingFromFile, migrateToFile, runState, runStateAfterMigration } from '../../src/oracle/migration.js';
import { argsIn, type OracleMachineSpec, type OracleNetPeer } from '../../src/oracle/scenario.js';
import { openNetPeers } from '../../src/oracle/net-peer.js';

export type Impl = 'qemu' | 'ours';

/** How to start one end: QEMU, or our program, with QEMU's command line. */
export interface Endpoint {
  impl: Impl;
  command: readonly string[];
}

export const qemuEndpoint = (command: readonly string[]): Endpoint => ({ impl: 'qemu', command });
/** `program` is a bundle of src/cli/qemu-main.ts (what bin/virtio-ts-qemu runs), run by this Node. */
export const oursEndpoint = (program: string): Endpoint => ({ impl: 'ours', command: [process.execPath, program] });

/** What a scenario script gets. */
export interface MigrationContext {
  /** The machine, whichever end is underneath now. */
  m: SwappableMachine;
  /**
   * Paths of the scenario's disks (`spec.disks`): one copy per run, shared by every end, as
   * machines that migrate share their storage.
   */
  readonly disks: Readonly<Record<string, string>>;
  /** Guest RAM for rings and buffers, from 1 MiB up (the same on every end). */
  alloc: GuestAllocator;
  /** Which implementation the script talks to now. */
  readonly impl: Impl;
  /** The implementations of every hop, source first. */
  readonly hops: readonly Impl[];
  /**
   * Migrate to the next end and return once the script may continue there. In a capture-only
   * run it throws `CaptureDone` after the source has written its stream.
   */
  migrate(): Promise<void>;
  /** Free-form observations the test may print or check (e.g. when a pending request completed). */
  notes: string[];
  /**
   * Each end's own directory, source first: `@DIR@` in the scenario's arguments stands for it on
   * that end (its chardev sockets and files).
   */
  readonly hostDirs: readonly string[];
  /** The directory of the end the script talks to now. */
  readonly hostDir: string;
  /**
   * The test's end of the current machine's `@NET:name@` backend (each end has its own UDP
   * sockets, as each has its own directory).
   */
  net(name: string): OracleNetPeer;
  /** A capture-only run: no destination exists (`migrate()` ends the script). */
  readonly capturing: boolean;
}

export interface MigrationScenario {
  name: string;
  spec: OracleMachineSpec;
  /**
   * The command line of end `end` (0 = source), when the ends differ in what is not migrated
   * (a block backend's latency or error injection); `spec` otherwise. Disks come from `spec`.
   */
  specFor?(end: number, impl: Impl): OracleMachineSpec;
  /** The run state a destination must be in after the load (default `running`). */
  destinationRunState?: string;
  /** How many migrations the script makes (default 1). */
  migrations?: number;
  run(ctx: MigrationContext): Promise<void>;
}

/** Thrown by `ctx.migrate()` in a capture-only run; the runner treats it as success. */
export class CaptureDone extends Error {
  override name = 'CaptureDone';
}

export interface RunOptions {
  /** Stop after the first stream is written (for blob comparisons): no destination is started. */
  captureOnly?: boolean;
  /** Change a stream between writing and loading (negative tests of the harness). */
  transformStream?: (stream: Uint8Array, hop: number) => Uint8Array;
  /** Bound for each migration (default 10 s). */
  migrationTimeoutMs?: number;
}

export interface HopRecord {
  from: Impl;
  to: Impl | undefined;
  /** The stream as the source wrote it. */
  stream: Uint8Array;
  /** Wall-clock ms: the source's migrate, the destination's load. */
  saveMs: number;
  loadMs: number;
}

export interface RunResult {
  hops: HopRecord[];
  notes: string[];
  ms: number;
}

/** `@disk:NAME@` in the arguments becomes the path of that disk. */
function withDisks(spec: OracleMachineSpec, disks: Readonly<Record<string, string>>): OracleMachineSpec {
  return {
    ...spec,
    args: spec.args.map((a) => a.replace(/@disk:([A-Za-z0-9_-]+)@/g, (_, n: string) => {
      const p = disks[n];
      if (p === undefined) throw new Error(`spec refers to an unknown disk '${n}'`);
      return p;
    })),
  };
}

async function launch(ep: Endpoint, spec: OracleMachineSpec, incoming: boolean, hostDir: string, peers: Map<string, OracleNetPeer>[], closers: (() => void)[]): Promise<QemuProcess> {
  const n = await openNetPeers(argsIn(spec, hostDir));
  closers.push(n.close);
  peers.push(n.peers);
  return launchQemu({
    command: ep.command,
    machine: spec.machine,
    args: [...n.args, ...(incoming ? ['-incoming', 'defer'] : [])],
    name: `${ep.impl}${incoming ? ' (destination)' : ''}`,
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Run `scenario` over the ends `path` (source first; `path.length` = migrations + 1, or just the
 * source with `captureOnly`). Rejects with the script's error, or with a `MigrationFailure` that
 * carries the destination's stderr (QEMU prints why a load failed there).
 */
export async function runMigrationScenario(scenario: MigrationScenario, path: readonly Endpoint[], opts: RunOptions = {}): Promise<RunResult> {
  const migrations = scenario.migrations ?? 1;
  if (!opts.captureOnly && path.length !== migrations + 1) throw new Error(`${scenario.name}: needs ${migrations + 1} ends, got ${path.length}`);
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-migration-'));
  const disks: Record<string, string> = {};
  for (const [name, t] of Object.entries(scenario.spec.disks ?? {})) {
    disks[name] = join(dir, `${name}.raw`);
    writeFileSync(disks[name], diskBytes(t));
  }
  const procs: QemuProcess[] = [];
  // Every end starts now, in parallel; destinations wait in `inmigrate`.
  // One per end the script may name (a capture-only run names its would-be destinations too).
  const hostDirs = Array.from({ length: Math.max(path.length, migrations + 1) }, (_, i) => {
    const d = join(dir, `end${i}`);
    mkdirSync(d);
    return d;
  });
  const peerMaps: Map<string, OracleNetPeer>[][] = [];
  const closers: (() => void)[] = [];
  const starts = (opts.captureOnly ? path.slice(0, 1) : path).map((ep, i) => {
    const maps: Map<string, OracleNetPeer>[] = [];
    peerMaps[i] = maps;
    const p = launch(ep, withDisks(scenario.specFor?.(i, ep.impl) ?? scenario.spec, disks), i > 0, hostDirs[i]!, maps, closers);
    p.then((x) => procs.push(x)).catch(() => undefined);
    return p;
  });
  const hops: HopRecord[] = [];
  const notes: string[] = [];
  try {
    const source = await starts[0]!;
    let current = source;
    let hop = 0;
    const m = new SwappableMachine(source.machine);
    const ctx: MigrationContext = {
      m,
      alloc: new GuestAllocator(0x10_0000, 0x100_0000),
      get impl() {
        return path[hop]!.impl;
      },
      hops: path.map((e) => e.impl),
      notes,
      disks,
      hostDirs,
      capturing: opts.captureOnly === true,
      get hostDir() {
        return hostDirs[hop]!;
      },
      net(name: string) {
        const p = peerMaps[hop]?.[0]?.get(name);
        if (!p) throw new Error(`${scenario.name}: no @NET:${name}@ on end ${hop}`);
        return p;
      },
      async migrate() {
        const from = path[hop]!;
        const to = opts.captureOnly ? undefined : path[hop + 1];
        if (!opts.captureOnly && !to) throw new Error(`${scenario.name}: migrate() called more than ${migrations} times`);
        const file = join(dir, `hop${hop}.mig`);
        const ts = performance.now();
        await migrateToFile(current.qmp!, file, opts.migrationTimeoutMs !== undefined ? { timeoutMs: opts.migrationTimeoutMs } : {});
        const saveMs = performance.now() - ts;
        const after = await runStateAfterMigration(current.qmp!);
        if (after !== 'postmigrate') throw new MigrationFailure(`${from.impl} source: run state '${after}' after migrating, expected 'postmigrate'`);
        let stream: Uint8Array = new Uint8Array(readFileSync(file));
        const record: HopRecord = { from: from.impl, to: to?.impl, stream, saveMs, loadMs: 0 };
        hops.push(record);
        if (opts.captureOnly || !to) throw new CaptureDone(`stream of ${stream.length} bytes written`);
        if (opts.transformStream) {
          stream = opts.transformStream(stream, hop);
          writeFileSync(file, stream);
        }
        const dest = await starts[hop + 1]!;
        const tl = performance.now();
        const state = await runState(dest.qmp!);
        if (state !== 'inmigrate') throw new MigrationFailure(`${to.impl} destination: run state '${state}' before loading, expected 'inmigrate'`);
        await m.replayIntercepts(dest.machine);
        try {
          await migrateIncomingFromFile(dest.qmp!, file, opts.migrationTimeoutMs !== undefined ? { timeoutMs: opts.migrationTimeoutMs } : {});
        } catch (e) {
          await sleep(20);
          throw new MigrationFailure(`${from.impl} → ${to.impl}: the destination did not load the stream (${(e as Error).message})${dest.stderr.trim() ? `\n${to.impl} stderr: ${dest.stderr.trim()}` : ''}`);
        }
        record.loadMs = performance.now() - tl;
        const running = await runState(dest.qmp!);
        const want = scenario.destinationRunState ?? 'running';
        if (running !== want) throw new MigrationFailure(`${to.impl} destination: run state '${running}' after loading, expected '${want}'`);
        m.swap(dest.machine);
        const old = current;
        current = dest;
        hop++;
        await old.close();
      },
    };
    try {
      await scenario.run(ctx);
    } catch (e) {
      if (!(e instanceof CaptureDone)) throw e;
    }
    if (!opts.captureOnly && hop !== migrations) throw new Error(`${scenario.name}: the script migrated ${hop} times, expected ${migrations}`);
    if (opts.captureOnly && hops.length === 0) throw new Error(`${scenario.name}: the script never migrated`);
  } finally {
    await Promise.allSettled(starts);
    await Promise.all(procs.map((p) => p.close()));
    for (const c of closers) c();
    rmSync(dir, { recursive: true, force: true });
  }
  return { hops, notes, ms: performance.now() - t0 };
}
