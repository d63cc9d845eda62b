// Start-up benchmark (issue 11): how long `virtio-ts-qemu` takes from spawn until a harness can
// use it, beside QEMU 7.2 and beside a bare `node -e 0`, in the same run.
//
// start → ready: from just before spawn() until QMP has answered `qmp_capabilities` (after its
//   greeting) and qtest has answered one `readl`, both over unix sockets this process listens on
//   before spawning (as libqtest and the driver library's launcher do). The command line is the
//   launcher's: `-accel tcg -bios <halt> -nodefaults -display none -machine M -m 16M
//   -qtest unix:P -qtest-log none -qmp unix:P -device ...`; ours is spawned as the launcher
//   spawns it (`node bin/virtio-ts-qemu ...`).
// quit → exit: from writing QMP `quit` until the process has exited.
// node -e 0: spawn until exit (Node's own start-up and exit: the floor for anything in Node).
//
// The three are run alternately (ours, QEMU, node; the order rotates every round), so a change in
// background load hits all of them; medians over the rounds. Configurations: microvm with one
// and with five virtio-rng-device, pc with one and with five virtio-rng-pci.
//
// Then the harness-level figure: every scenario of the machine suite (test/scenarios/machine,
// the transport checks the driver tests run), each on a fresh machine started by the driver
// library's launcher and closed after it, against both binaries: the wall time of the whole
// suite, scenario by scenario alternating between ours and QEMU, median over passes.
//
// NODE_EXTRA_CA_CERTS, when set (it is on the project's machine), makes every Node start parse
// the whole CA bundle before running any code, ~50 ms: the start-up table is then taken twice,
// with the environment as it is and without that variable, for all three alike. The driver
// library's launcher starts virtio-ts-qemu without it (src/driver/qemu-launcher.ts), so the suite
// figure is taken that way, and again with the variable kept.
//
// BENCH_ONLY=startup runs this section only; BENCH_QUICK=1 takes fewer rounds; VIRTIO_TS_QEMU
// names another virtio-ts-qemu to measure, VIRTIO_TS_QEMU_BEFORE an older one to run beside it.
// Targets (issue 11): start → ready within 20 ms of node -e 0; suite wall time ≤ 1.5 × QEMU's.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import os, { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { GuestAllocator } from '../src/driver/alloc.js';
import { commandAvailable, haltFirmware, launchQemu } from '../src/driver/qemu-launcher.js';
import { ALL_GROUPS } from '../test/scenarios/machine/index.js';
import { RAM_END, RAM_START } from '../test/scenarios/machine/suite.js';
import { ensureBuilt } from './qtest.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
// VIRTIO_TS_QEMU=/path/to/bin/virtio-ts-qemu measures another build (an older checkout, say).
const OUR_BIN = process.env['VIRTIO_TS_QEMU'] ?? join(ROOT, 'bin/virtio-ts-qemu');
// VIRTIO_TS_QEMU_BEFORE=/path/to/bin/virtio-ts-qemu adds an older build as a fourth contender,
// alternating with the others (before/after figures taken in the same run).
const BEFORE_BIN = process.env['VIRTIO_TS_QEMU_BEFORE'];
const QEMU_COMMAND = [process.env['QEMU'] ?? 'qemu-system-x86_64'];
const STEP_TIMEOUT_MS = 15_000;

export interface StartupBenchOptions {
  quick?: boolean;
}

interface Config {
  name: string;
  machine: string;
  args: string[];
}

function devices(name: string, n: number): string[] {
  const a: string[] = [];
  for (let i = 0; i < n; i++) a.push('-device', name);
  return a;
}

const CONFIGS: Config[] = [
  { name: 'microvm, 1 virtio-rng-device', machine: 'microvm', args: devices('virtio-rng-device', 1) },
  { name: 'microvm, 5 virtio-rng-device', machine: 'microvm', args: devices('virtio-rng-device', 5) },
  { name: 'pc, 1 virtio-rng-pci', machine: 'pc', args: devices('virtio-rng-pci', 1) },
  { name: 'pc, 5 virtio-rng-pci', machine: 'pc', args: devices('virtio-rng-pci', 5) },
];

type Kind = 'ours' | 'qemu' | 'node' | 'before';

interface Sample {
  ready: number;
  quit: number;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function fmt(x: number | undefined, d = 1): string {
  return x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d);
}

function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}

function lpad(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

/** Resolve with the first line (without '\n') for which `want` holds, on a utf8 socket. */
function lineReader(sock: Socket): (want: (line: string) => boolean) => Promise<string> {
  let buf = '';
  let waiter: { want: (l: string) => boolean; resolve: (l: string) => void } | undefined;
  const pending: string[] = [];
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (waiter && waiter.want(line)) {
        const w = waiter;
        waiter = undefined;
        w.resolve(line);
      } else if (!waiter) pending.push(line);
    }
  });
  return (want) =>
    new Promise((resolve) => {
      while (pending.length) {
        const l = pending.shift()!;
        if (want(l)) return resolve(l);
      }
      waiter = { want, resolve };
    });
}

function deadline<T>(p: Promise<T>, what: string, onFail?: () => void): Promise<T> {
  let t: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(t)),
    new Promise<never>((_, reject) => {
      t = setTimeout(() => {
        onFail?.();
        reject(new Error(`${what}: no answer within ${STEP_TIMEOUT_MS} ms`));
      }, STEP_TIMEOUT_MS);
    }),
  ]);
}

function listen(path: string): Promise<{ server: Server; conn: Promise<Socket> }> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    const conn = new Promise<Socket>((res) =>
      server.once('connection', (s) => {
        server.close();
        // A machine that exits on `quit` may reset the connection: not an error here.
        s.on('error', () => undefined);
        res(s);
      }),
    );
    server.once('error', reject);
    server.listen(path, () => resolve({ server, conn }));
  });
}

function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
}

/** One start → ready, quit → exit of a machine (or spawn → exit of `node -e 0`). */
async function once(kind: Kind, cfg: Config, fw: string, dir: string, env: NodeJS.ProcessEnv): Promise<Sample> {
  if (kind === 'node') {
    const t0 = performance.now();
    const child = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore', env });
    await deadline(exited(child), 'node -e 0', () => child.kill('SIGKILL'));
    return { ready: performance.now() - t0, quit: 0 };
  }
  const qt = await listen(join(dir, 'qtest.sock'));
  const qm = await listen(join(dir, 'qmp.sock'));
  const flags = ['-accel', 'tcg', '-bios', fw, '-nodefaults', '-display', 'none', '-machine', cfg.machine, '-m', '16M'];
  flags.push('-qtest', `unix:${join(dir, 'qtest.sock')}`, '-qtest-log', 'none', '-qmp', `unix:${join(dir, 'qmp.sock')}`, ...cfg.args);
  const command = kind === 'ours' ? [process.execPath, OUR_BIN] : kind === 'before' ? [process.execPath, BEFORE_BIN!] : QEMU_COMMAND;
  let stderr = '';
  const t0 = performance.now();
  const child = spawn(command[0]!, [...command.slice(1), ...flags], { stdio: ['ignore', 'ignore', 'pipe'], env });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => (stderr += s));
  const gone = exited(child);
  const kill = () => child.kill('SIGKILL');
  const sockets: Socket[] = [];
  try {
    const qmpReady = (async () => {
      const s = await qm.conn;
      sockets.push(s);
      const next = lineReader(s);
      await next((l) => l.includes('"QMP"'));
      s.write('{"execute": "qmp_capabilities"}\n');
      await next((l) => l.includes('"return"'));
      return s;
    })();
    const qtestReady = (async () => {
      const s = await qt.conn;
      sockets.push(s);
      const next = lineReader(s);
      s.write('readl 0x10000\n');
      const l = await next(() => true);
      if (!l.startsWith('OK')) throw new Error(`readl answered '${l}'`);
    })();
    const early = gone.then(() => {
      throw new Error(`exited during start-up: ${stderr.trim()}`);
    });
    const [qmp] = await deadline(Promise.race([Promise.all([qmpReady, qtestReady]), early]), `${kind} start-up`, kill);
    const ready = performance.now() - t0;
    early.catch(() => undefined);
    const t1 = performance.now();
    qmp.write('{"execute": "quit"}\n');
    await deadline(gone, `${kind} quit`, kill);
    return { ready, quit: performance.now() - t1 };
  } catch (e) {
    kill();
    await gone;
    throw e;
  } finally {
    for (const s of sockets) s.destroy();
    qt.server.close();
    qm.server.close();
    rmSync(join(dir, 'qtest.sock'), { force: true });
    rmSync(join(dir, 'qmp.sock'), { force: true });
  }
}

function qemuVersion(): string {
  const r = spawnSync(QEMU_COMMAND[0]!, ['--version'], { encoding: 'utf8', timeout: 5000 });
  return (r.stdout ?? '').split('\n')[0]?.trim() ?? '';
}

export interface StartupResult {
  config: string;
  ours: Sample[];
  before: Sample[];
  qemu: Sample[];
  node: Sample[];
}

/** Start → ready and quit → exit, alternating between ours, QEMU and node -e 0. */
export async function measureStartup(rounds: number, configs = CONFIGS, withQemu = true, env: NodeJS.ProcessEnv = process.env): Promise<StartupResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-bench-startup-'));
  const fw = join(dir, 'halt.bin');
  writeFileSync(fw, haltFirmware());
  const kinds: Kind[] = withQemu ? ['ours', 'qemu', 'node'] : ['ours', 'node'];
  if (BEFORE_BIN !== undefined) kinds.push('before');
  try {
    const results: StartupResult[] = configs.map((c) => ({ config: c.name, ours: [], before: [], qemu: [], node: [] }));
    // One untimed start of each first (page cache, a lazily written cache of ours).
    for (const c of configs) for (const k of kinds) await once(k, c, fw, dir, env);
    for (let r = 0; r < rounds; r++) {
      for (let c = 0; c < configs.length; c++) {
        for (let i = 0; i < kinds.length; i++) {
          const k = kinds[(r + i) % kinds.length]!;
          results[c]![k].push(await once(k, configs[c]!, fw, dir, env));
        }
      }
    }
    return results;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The machine scenario suite, one fresh machine per scenario; wall time per scenario. */
async function scenarioOnce(
  command: string[],
  name: string,
  g: (typeof ALL_GROUPS)[number],
  s: (typeof ALL_GROUPS)[number]['scenarios'][number],
  env: NodeJS.ProcessEnv | undefined,
): Promise<number> {
  const t0 = performance.now();
  const p = await launchQemu({ command, machine: g.spec.machine, args: g.spec.args, name, ...(env ? { env } : {}) });
  try {
    await deadline(s.run({ machine: p.machine, alloc: new GuestAllocator(RAM_START, RAM_END), impl: name }), `${name}: ${s.name}`);
  } finally {
    await p.close();
  }
  return performance.now() - t0;
}

/**
 * `env`: the machines' environment; by default the launcher's (which starts virtio-ts-qemu
 * without NODE_EXTRA_CA_CERTS).
 */
export async function measureSuite(passes: number, env?: NodeJS.ProcessEnv): Promise<{ ours: number[]; qemu: number[]; before: number[]; scenarios: number }> {
  const ours: number[] = [];
  const before: number[] = [];
  const qemu: number[] = [];
  const list = ALL_GROUPS.flatMap((g) => g.scenarios.map((s) => ({ g, s })));
  const who: [string, string[], number[]][] = [
    ['virtio-ts-qemu', [process.execPath, OUR_BIN], ours],
    ['qemu', QEMU_COMMAND, qemu],
  ];
  if (BEFORE_BIN !== undefined) who.push(['virtio-ts-qemu (before)', [process.execPath, BEFORE_BIN], before]);
  for (let p = 0; p < passes; p++) {
    const sums = who.map(() => 0);
    for (let i = 0; i < list.length; i++) {
      const { g, s } = list[i]!;
      // A different one goes first at every scenario.
      for (let j = 0; j < who.length; j++) {
        const k = (i + p + j) % who.length;
        const [name, command] = who[k]!;
        sums[k]! += await scenarioOnce(command, name, g, s, env);
      }
    }
    who.forEach(([, , out], k) => out.push(sums[k]!));
  }
  return { ours, qemu, before, scenarios: list.length };
}

function printStartup(results: StartupResult[]): void {
  const withBefore = results.some((r) => r.before.length > 0);
  const head = [pad('configuration', 30), lpad('ours', 7), lpad('QEMU', 7), lpad('node -e 0', 10), lpad('ours−node', 10), lpad('paired', 7), lpad('≤ 20?', 6), lpad('ours quit', 10), lpad('QEMU quit', 10)];
  if (withBefore) head.push(lpad('before', 8), lpad('before−node', 12), lpad('before quit', 12));
  console.log('  ms (median)                    start → ready            spawn→exit                       quit → exit');
  console.log('  ' + head.join(' '));
  for (const r of results) {
    const o = median(r.ours.map((s) => s.ready));
    const q = r.qemu.length ? median(r.qemu.map((s) => s.ready)) : undefined;
    const n = median(r.node.map((s) => s.ready));
    const oq = median(r.ours.map((s) => s.quit));
    const qq = r.qemu.length ? median(r.qemu.map((s) => s.quit)) : undefined;
    // "paired": the median of each round's difference (ours and node ran next to each other),
    // less sensitive to load that changes between rounds than the difference of the medians.
    const paired = median(r.ours.map((s, i) => s.ready - r.node[i]!.ready));
    const met = o - n <= 20 ? 'yes' : paired <= 20 ? 'paired' : 'NO';
    const cells = [pad(r.config, 30), lpad(fmt(o), 7), lpad(fmt(q), 7), lpad(fmt(n), 10), lpad(fmt(o - n), 10), lpad(fmt(paired), 7), lpad(met, 6), lpad(fmt(oq), 10), lpad(fmt(qq), 10)];
    if (withBefore) {
      const b = median(r.before.map((s) => s.ready));
      cells.push(lpad(fmt(b), 8), lpad(fmt(b - n), 12), lpad(fmt(median(r.before.map((s) => s.quit))), 12));
    }
    console.log('  ' + cells.join(' '));
  }
  console.log('  runs (start → ready, ms):');
  for (const r of results) {
    console.log(`    ${r.config}`);
    console.log(`      ours ${r.ours.map((s) => fmt(s.ready, 0)).join(' ')}`);
    if (r.qemu.length) console.log(`      QEMU ${r.qemu.map((s) => fmt(s.ready, 0)).join(' ')}`);
    if (r.before.length) console.log(`      before ${r.before.map((s) => fmt(s.ready, 0)).join(' ')}`);
    console.log(`      node ${r.node.map((s) => fmt(s.ready, 0)).join(' ')}`);
  }
}

function printSuite(suite: { ours: number[]; qemu: number[]; before: number[]; scenarios: number }, passes: number, what: string): void {
  const o = median(suite.ours);
  const q = median(suite.qemu);
  console.log(`  Scenario suite (test/scenarios/machine: ${suite.scenarios} scenarios, one machine each via the launcher, alternating), ${what}, wall time, median of ${passes} pass(es):`);
  console.log(`    virtio-ts-qemu ${fmt(o / 1000, 2)} s, QEMU 7.2 ${fmt(q / 1000, 2)} s: ${fmt(o / q, 2)} × QEMU (target ≤ 1.5: ${o / q <= 1.5 ? 'met' : 'NOT met'})`);
  console.log(`    passes: ours ${suite.ours.map((x) => fmt(x / 1000, 2)).join(' ')} s; QEMU ${suite.qemu.map((x) => fmt(x / 1000, 2)).join(' ')} s`);
  if (suite.before.length) {
    const b = median(suite.before);
    console.log(`    before: ${fmt(b / 1000, 2)} s, ${fmt(b / q, 2)} × QEMU (passes ${suite.before.map((x) => fmt(x / 1000, 2)).join(' ')} s)`);
  }
}

export async function runStartupBench(opts: StartupBenchOptions = {}): Promise<void> {
  const rounds = opts.quick ? 5 : 15;
  const passes = opts.quick ? 1 : 3;
  console.log('');
  console.log(`Start-up (issue 11): start → ready (QMP answered qmp_capabilities, qtest answered readl) and quit → exit, medians of ${rounds} alternating rounds`);
  const built = ensureBuilt();
  if (built) console.log(`  (${built})`);
  const hasQemu = commandAvailable(QEMU_COMMAND);
  if (!hasQemu) console.log(`  ${QEMU_COMMAND[0]} is not installed: QEMU's columns and the suite figure are left out`);
  else console.log(`  ${qemuVersion()}; ${process.execPath} ${process.version}; load average ${os.loadavg()[0]!.toFixed(2)} at start`);
  console.log(`  ours: ${OUR_BIN}${BEFORE_BIN !== undefined ? `; before: ${BEFORE_BIN}` : ''}`);

  // NODE_EXTRA_CA_CERTS makes every Node start parse the whole CA bundle before any code runs
  // (node -e 0 included): when it is set, the table is taken with and without it.
  const envs: [string, NodeJS.ProcessEnv][] = [['environment as it is', process.env]];
  if (process.env['NODE_EXTRA_CA_CERTS'] !== undefined) {
    envs[0]![0] = 'environment as it is (NODE_EXTRA_CA_CERTS set: Node parses the CA bundle at every start)';
    const without = { ...process.env };
    delete without['NODE_EXTRA_CA_CERTS'];
    envs.push(['without NODE_EXTRA_CA_CERTS (all three)', without]);
  }
  for (const [what, env] of envs) {
    const results = await measureStartup(rounds, CONFIGS, hasQemu, env);
    console.log('');
    console.log(`  ${what}:`);
    printStartup(results);
  }

  if (hasQemu) {
    console.log('');
    printSuite(await measureSuite(passes), passes, "the launcher's defaults (virtio-ts-qemu without NODE_EXTRA_CA_CERTS)");
    if (process.env['NODE_EXTRA_CA_CERTS'] !== undefined) printSuite(await measureSuite(passes, process.env), passes, 'both with this environment (NODE_EXTRA_CA_CERTS kept)');
  }
  console.log(`  load average ${os.loadavg()[0]!.toFixed(2)} at end (other processes share the CPUs)`);
}
