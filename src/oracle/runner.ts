/**
 * The differential runner (Node-only): runs each group of oracle scenarios on QEMU 7.2 and on our
 * machines (in-process, and `virtio-ts-qemu` over its qtest socket) with the same command line,
 * one machine per side and group, and compares the transcripts.
 *
 * QEMU is the reference. Our in-process transcript is compared with it, allowing the scenario's
 * declared differences; our socket transcript must equal our in-process one exactly (the qtest
 * server must not change what a driver sees). A side whose machine throws, dies or stops
 * answering gets a fresh machine for the next scenario.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestAllocator } from '../driver/alloc.js';
import { InProcessMachine } from '../driver/inproc.js';
import type { Machine } from '../driver/machine.js';
import { launchQemu } from '../driver/qemu-launcher.js';
import { createMachineFromArgs, parseQemuCommandLine } from '../machine/index.js';
import { openDeviceChardev } from '../machine/chardev.js';
import type { CharBackend } from '../devices/console/chardev.js';
import { openNetdev, type HostNetdevSpec, type StreamNetBackend, type UdpNetBackend } from '../devices/net/backends/node.js';
import { fileNodes } from '../machine/block-cmdline.js';
import { openBlockFiles } from '../devices/blk/backends/node-file.js';
import type { BlockBackend } from '../devices/blk/backend.js';
import { compareTranscripts, sameTranscripts, type Comparison } from './compare.js';
import { RecordingMachine } from './recorder.js';
import { argsIn, needsHostDir, type OracleGroup, type OracleMachineSpec, type OracleNetPeer, type OracleProbe, type OracleScenario } from './scenario.js';
import { needsNetPeers, openNetPeers } from './net-peer.js';
import { villainVerdict, type HostileFacts, type HostileVerdict } from './verdict.js';
import { Transcript } from './transcript.js';
import { materializeDisks } from './disks.js';

export interface StartedMachine {
  machine: Machine;
  probe?: OracleProbe;
  /** The side's directory that `@DIR@` in the arguments stands for. */
  hostDir?: string;
  /** The side's ends of `@NET:name@` backends. */
  net?: ReadonlyMap<string, OracleNetPeer>;
  close(): Promise<void>;
}

/** A fresh directory for a machine whose arguments name `@DIR@`, and its removal. */
function hostDirFor(spec: OracleMachineSpec): { dir: string | undefined; remove: () => void } {
  if (!needsHostDir(spec)) return { dir: undefined, remove: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-host-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A side's host resources: its directory and its UDP peers, the arguments that name them, their removal. */
async function hostFor(spec: OracleMachineSpec): Promise<{ dir: string | undefined; net: ReadonlyMap<string, OracleNetPeer> | undefined; args: string[]; remove: () => void }> {
  const host = hostDirFor(spec);
  const withDir = argsIn(spec, host.dir);
  if (!needsNetPeers(withDir)) return { dir: host.dir, net: undefined, args: withDir, remove: host.remove };
  try {
    const n = await openNetPeers(withDir);
    return { dir: host.dir, net: n.peers, args: n.args, remove: () => { n.close(); host.remove(); } };
  } catch (e) {
    host.remove();
    throw e;
  }
}

export interface OracleSide {
  /** 'qemu', 'ours', 'ours-socket'. */
  id: string;
  /** For reports. */
  label: string;
  /** Wall-clock pause of `RecordingMachine.idle()` on this side. */
  settleMs: number;
  start(spec: OracleMachineSpec): Promise<StartedMachine>;
}

/** Where guest RAM for scenarios starts and ends (above the legacy hole, inside -m 16M). */
export const ORACLE_RAM = { start: 0x10_0000, end: 0x100_0000 } as const;

/** Real QEMU (or anything started with QEMU's command line). */
export function qemuSide(command: readonly string[] = ['qemu-system-x86_64'], opts: { id?: string; label?: string; settleMs?: number } = {}): OracleSide {
  return {
    id: opts.id ?? 'qemu',
    label: opts.label ?? 'QEMU 7.2',
    settleMs: opts.settleMs ?? 20,
    async start(spec) {
      const host = await hostFor(spec);
      try {
        const p = await launchQemu({ command, machine: spec.machine, args: host.args, name: opts.id ?? 'qemu' });
        return { machine: p.machine, ...(host.dir ? { hostDir: host.dir } : {}), ...(host.net ? { net: host.net } : {}), close: () => p.close().finally(host.remove) };
      } catch (e) {
        host.remove();
        throw e;
      }
    },
  };
}

/** Our machines in-process, built from the same command line (`createMachineFromArgs`). */
export function oursInProcessSide(): OracleSide {
  return {
    id: 'ours',
    label: 'virtio-ts',
    settleMs: 0,
    async start(spec) {
      const host = await hostFor(spec);
      const argv = ['-machine', spec.machine, '-m', '16M', ...host.args];
      // The chardevs devices use, the netdevs with host sockets, then the files of -drive and
      // -blockdev, opened as virtio-ts-qemu opens them at start-up (sockets listen here).
      const chardevs = new Map<string, CharBackend>();
      const netdevs = new Map<string, UdpNetBackend | StreamNetBackend>();
      let files = new Map<string, BlockBackend>();
      let emit: ((name: string, data: Record<string, unknown>) => void) | undefined;
      const closeHost = () => {
        for (const c of chardevs.values()) c.close();
        for (const n of netdevs.values()) n.close();
        for (const f of files.values()) void f.close?.();
        host.remove();
      };
      try {
        const cl = parseQemuCommandLine(argv);
        for (const c of cl.chardevs) chardevs.set(c.id, await openDeviceChardev(c));
        for (const n of [...cl.netdevs.filter((x) => x.type === 'dgram' || x.type === 'stream'), ...cl.netdevs.filter((x) => x.type === 'socket')]) {
          netdevs.set(n.id, await openNetdev(n as HostNetdevSpec, { onEvent: (name, data) => emit?.(name, data) }));
        }
        files = await openBlockFiles(fileNodes(cl.drives, cl.blockdevs));
      } catch (e) {
        closeHost();
        throw e;
      }
      let built: ReturnType<typeof createMachineFromArgs>;
      try {
        built = createMachineFromArgs(argv, { chardevs, netdevs, blockFiles: files });
        const machine = built.built.machine;
        emit = (name, data) => machine.emitEvent(name, data);
      } catch (e) {
        closeHost();
        throw e;
      }
      const errors: string[] = [];
      for (const d of built.built.devices) {
        const dev = d.device;
        const orig = dev.virtioError.bind(dev);
        dev.virtioError = (msg: string) => {
          errors.push(msg);
          orig(msg);
        };
      }
      const machine = new InProcessMachine(built.target, {
        name: 'virtio-ts',
        qmp: built.qmp,
        onClose: () => {
          built.close();
          closeHost();
        },
      });
      return {
        machine,
        probe: { takeErrors: () => errors.splice(0) },
        ...(host.dir ? { hostDir: host.dir } : {}),
        ...(host.net ? { net: host.net } : {}),
        close: () => machine.close(),
      };
    },
  };
}

/** Our `virtio-ts-qemu` program (a bundle of src/cli/qemu-main.ts) over its qtest socket. */
export function oursSocketSide(program: string, opts: { settleMs?: number } = {}): OracleSide {
  return {
    id: 'ours-socket',
    label: 'virtio-ts-qemu',
    settleMs: opts.settleMs ?? 0,
    async start(spec) {
      const host = await hostFor(spec);
      try {
        const p = await launchQemu({ command: [process.execPath, program], machine: spec.machine, args: host.args, name: 'virtio-ts-qemu' });
        return { machine: p.machine, ...(host.dir ? { hostDir: host.dir } : {}), ...(host.net ? { net: host.net } : {}), close: () => p.close().finally(host.remove) };
      } catch (e) {
        host.remove();
        throw e;
      }
    },
  };
}

/** One scenario on one side. */
export interface SideRun {
  side: string;
  transcript: Transcript;
  facts?: HostileFacts;
  /** Hostile scenarios only. */
  verdict?: HostileVerdict;
  /** The scenario or the machine threw (message). */
  threw?: string;
  /** Messages our devices passed to virtioError (in-process side only). */
  deviceErrors: string[];
  ms: number;
}

export type OracleStatus = 'equal' | 'expected' | 'DIFFERENT' | 'STALE';

export interface ScenarioResult {
  group: string;
  scenario: OracleScenario;
  hostile: boolean;
  runs: Record<string, SideRun>;
  /** Each non-reference side against its reference. */
  comparisons: { side: string; against: string; result: Comparison }[];
  status: OracleStatus;
  /** Rows of docs/qemu-differences.md that showed. */
  rows: number[];
}

export interface RunOptions {
  /** Bound per scenario per side (default 20 s). */
  scenarioTimeoutMs?: number;
  /** Called after each scenario (progress output). */
  onResult?: (r: ScenarioResult) => void;
}

class ScenarioTimeout extends Error {}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      t = setTimeout(() => reject(new ScenarioTimeout(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

const message = (e: unknown): string => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/** Run every scenario of `group` on one side, in order, restarting the machine after a failure. */
async function runSide(group: OracleGroup, side: OracleSide, opts: RunOptions): Promise<SideRun[]> {
  const out: SideRun[] = [];
  let started: StartedMachine | undefined;
  const timeoutMs = opts.scenarioTimeoutMs ?? 20_000;
  try {
    for (const s of group.scenarios) {
      const t0 = performance.now();
      let rec: RecordingMachine | undefined;
      let facts: HostileFacts | void = undefined;
      let threw: string | undefined;
      try {
        if (!started) {
          // Every machine gets its own copy of the spec's disks.
          const d = materializeDisks(group.spec);
          try {
            const s0 = await side.start(d.spec);
            started = { ...s0, close: () => s0.close().finally(() => d.cleanup()) };
          } catch (e) {
            d.cleanup();
            throw e;
          }
        }
        started.probe?.takeErrors();
        rec = new RecordingMachine(started.machine, { settleMs: side.settleMs });
        const r = rec;
        facts = await withTimeout(
          (async () => {
            const f = await s.run({ m: r, alloc: new GuestAllocator(ORACLE_RAM.start, ORACLE_RAM.end), ...(started.hostDir ? { hostDir: started.hostDir } : {}), ...(started.net ? { net: started.net } : {}) });
            await r.sync();
            return f;
          })(),
          timeoutMs,
          `${side.label}: ${s.name}`,
        );
      } catch (e) {
        threw = message(e);
        // A fresh machine for the next scenario: this one may be dead or in any state.
        const old = started;
        started = undefined;
        await old?.close().catch(() => undefined);
      }
      const transcript = rec?.transcript ?? new Transcript();
      if (threw !== undefined) transcript.push(rec?.section ?? 'main', 'exception');
      const deviceErrors = started?.probe?.takeErrors() ?? [];
      const internal = deviceErrors.find((m) => m.startsWith('internal error'));
      if (internal !== undefined && threw === undefined) threw = `device model exception turned into virtioError: ${internal}`;
      const run: SideRun = { side: side.id, transcript, threw, deviceErrors, ms: performance.now() - t0 };
      if (facts) run.facts = facts;
      out.push(run);
    }
  } finally {
    await started?.close().catch(() => undefined);
  }
  return out;
}

/** Whether a scenario is a hostile one (it returns facts on every side that did not throw). */
function isHostile(runs: SideRun[]): boolean {
  return runs.some((r) => r.facts !== undefined);
}

/**
 * Run a group on every side (sides in parallel, scenarios in order) and judge each scenario.
 * `sides[0]` is the reference (QEMU); `sides[1]` is compared with it under the declared
 * differences; every further side must equal `sides[1]` exactly.
 */
export async function runGroup(group: OracleGroup, sides: readonly OracleSide[], opts: RunOptions = {}): Promise<ScenarioResult[]> {
  const perSide = await Promise.all(sides.map((side) => runSide(group, side, opts)));
  const results: ScenarioResult[] = [];
  group.scenarios.forEach((s, i) => {
    const runs: Record<string, SideRun> = {};
    const list = sides.map((_, k) => perSide[k]![i]!);
    const hostile = isHostile(list);
    for (const r of list) {
      if (hostile || r.threw !== undefined) r.verdict = villainVerdict(r.facts, r.threw);
      runs[r.side] = r;
    }
    const comparisons: ScenarioResult['comparisons'] = [];
    const ref = list[0]!;
    const names = (a: OracleSide, b: OracleSide): [string, string] => [a.label, b.label];
    if (list[1]) comparisons.push({ side: sides[1]!.id, against: ref.side, result: compareTranscripts(ref.transcript, list[1].transcript, s.expected ?? [], { names: names(sides[0]!, sides[1]!) }) });
    for (let k = 2; k < list.length; k++) {
      comparisons.push({ side: sides[k]!.id, against: sides[1]!.id, result: sameTranscripts(list[1]!.transcript, list[k]!.transcript, { names: names(sides[1]!, sides[k]!) }) });
    }
    let status: OracleStatus = 'equal';
    const rows = new Set<number>();
    for (const c of comparisons) {
      if (c.result.kind === 'different') status = 'DIFFERENT';
      else if (c.result.kind === 'stale' && status !== 'DIFFERENT') status = 'STALE';
      else if (c.result.kind === 'expected') {
        c.result.rows.forEach((r) => rows.add(r));
        if (status === 'equal') status = 'expected';
      }
    }
    // Verdicts are part of what must agree (they follow from the transcripts, except for
    // exceptions and our device's internal errors, which only one side can see).
    for (let k = 2; k < list.length; k++) {
      if (list[k]!.verdict?.verdict !== list[1]!.verdict?.verdict) status = 'DIFFERENT';
    }
    const r: ScenarioResult = { group: group.name, scenario: s, hostile, runs, comparisons, status, rows: [...rows].sort((a, b) => a - b) };
    results.push(r);
    opts.onResult?.(r);
  });
  return results;
}

// --- reports -------------------------------------------------------------------------------------

/** The cell of a side in the table: a villain verdict, or 'ok' with the transcript length. */
export function sideCell(r: SideRun | undefined): string {
  if (!r) return '-';
  if (r.verdict) return r.verdict.verdict;
  return `ok (${r.transcript.length})`;
}

export function verdictCell(r: ScenarioResult): string {
  switch (r.status) {
    case 'equal':
      return 'equal';
    case 'expected':
      return `expected difference ${r.rows.map((x) => `#${x}`).join(', ')}`;
    case 'STALE': {
      const c = r.comparisons.find((x) => x.result.kind === 'stale');
      return `STALE expectation ${c && c.result.kind === 'stale' ? c.result.rows.map((x) => `#${x}`).join(', ') : ''}`;
    }
    case 'DIFFERENT': {
      const c = r.comparisons.find((x) => x.result.kind === 'different');
      return c ? `DIFFERENT (${c.side} vs ${c.against})` : 'DIFFERENT (verdicts)';
    }
  }
}

/** A plain-text table: scenario × QEMU × ours (× socket) × verdict. */
export function formatTable(results: readonly ScenarioResult[], sides: readonly OracleSide[]): string {
  const head = ['#', 'scenario', ...sides.map((s) => s.label), 'verdict'];
  const rows: string[][] = [];
  let group = '';
  let n = 0;
  for (const r of results) {
    if (r.group !== group) {
      group = r.group;
      rows.push(['', `== ${group}`, ...sides.map(() => ''), '']);
    }
    n++;
    rows.push([String(n), r.scenario.name, ...sides.map((s) => sideCell(r.runs[s.id])), verdictCell(r)]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ').trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('-|-'), ...rows.map(line)].join('\n');
}

/** Details for every scenario that is not equal: the first difference, or the declared reasons. */
export function formatDetails(results: readonly ScenarioResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    if (r.status === 'equal') continue;
    out.push(`--- ${r.group} / ${r.scenario.name}: ${verdictCell(r)}`);
    for (const [side, run] of Object.entries(r.runs)) {
      if (run.verdict) out.push(`    ${side}: ${run.verdict.verdict} (${run.verdict.why})`);
      if (run.threw) out.push(`    ${side} threw: ${run.threw}`);
    }
    if (r.status === 'expected') {
      for (const e of r.scenario.expected ?? []) if (r.rows.includes(e.row)) out.push(`    #${e.row}: ${e.reason}`);
    }
    for (const c of r.comparisons) {
      if (c.result.kind === 'different' || c.result.kind === 'stale') out.push(c.result.detail.replace(/^/gm, '    '));
    }
  }
  return out.join('\n');
}
