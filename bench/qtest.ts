// qtest round-trip benchmark (issue 3, "Speed"): our `virtio-ts-qemu` beside QEMU 7.2, both
// started by the driver library's launcher with the same command line
// (`-accel tcg -bios <halt> -nodefaults -display none -machine pc -m 16M
//  -device virtio-rng-pci,ioeventfd=off`, qtest and QMP over unix sockets), and driven from this
// Node process over the qtest unix socket.
//
// Two ways of sending:
// - sequential: one command, wait for its reply line, next command; the time from the write to
//   the reply's arrival is recorded per command (median and p99);
// - pipelined: 1000 commands in one write, then wait for the 1000 replies; time per command is
//   the batch time / 1000 (median over batches).
// The raw rows use a minimal client (the socket's string data, newline counting) so that they
// measure the server; the "QtestMachine" rows go through the driver library's client instead.
//
// Ours and QEMU's are measured alternately in rounds, so a change of background load hits both.
// The main table is taken with the client and all servers pinned to one CPU (see "CPU
// placement" below), a smaller one unpinned. Beside them runs a reference: a bare Node echo
// server (one fixed reply per line), the floor for any server written in Node.
// Nothing is asserted: figures are printed, with the target "ours ≤ 0.5 × QEMU per command".
// Every process is started with a start-up timeout and stopped by the launcher (QMP quit, then
// SIGKILL by its own PID); every timed phase has a deadline, and a server that misses one is
// left out of the remaining rows.

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { GuestPciBus } from '../src/driver/pci.js';
import { commandAvailable, launchQemu } from '../src/driver/qemu-launcher.js';
import type { QtestMachine } from '../src/driver/qtest-client.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const OUR_BIN = join(ROOT, 'bin/virtio-ts-qemu');
const OUR_BUNDLE = join(ROOT, 'dist/node/qemu.cjs');
const QEMU_COMMAND = [process.env['QEMU'] ?? 'qemu-system-x86_64'];
const MACHINE = 'pc';
const MEMORY = '16M';
const DEVICE_ARGS = ['-device', 'virtio-rng-pci,ioeventfd=off'];

const RAM_ADDR = 0x10000;
const RAM_VALUE = 0x12345678;
/** Configuration address of 00:02.0, offset 0 (vendor and device id). */
const CF8_VALUE = 0x8000_1000;
/** virtio common configuration: device_feature (with device_feature_select = 0). */
const COMMON_DEVICE_FEATURE = 0x4;

const PIPE_BATCH = 1000;
/** Deadline for one timed phase (a chunk of sequential commands or a pipelined batch set). */
const PHASE_TIMEOUT_MS = 15_000;

export interface QtestBenchOptions {
  /** Shorter runs (BENCH_QUICK=1): for iterating on the code, not for reporting. */
  quick?: boolean;
}

interface Target {
  label: string;
  pid: number | undefined;
  sock: Socket;
  /** BAR4 (virtio modern registers) base address. */
  bar4: number;
  /** The driver library's machine (absent for the echo reference). */
  machine?: QtestMachine;
  /** Set when a timed phase failed: the target is left out from then on. */
  failed?: string;
  close(): Promise<void>;
}

interface Row {
  name: string;
  mode: 'seq' | 'pipe';
  /** Commands sent in turn (cycled); `cmds.length` > 1 records each position separately. */
  cmds: (t: Target) => string[];
  /** Driver-library client instead of the raw socket. */
  library?: (m: QtestMachine) => Promise<unknown>;
  /** Also measure the bare Node echo server (the floor for a server written in Node). */
  withFloor?: boolean;
}

/** Result of one row on one target: per-command times in µs (per position of `cmds`). */
interface Sample {
  times: number[][];
  replies: string[];
  bad: number;
  error?: string;
}

// -------------------------------------------------------------------------------------------
// A minimal client on the qtest socket: write text, count reply lines.

class RawLines {
  private buf = '';
  private handler: ((line: string, at: number) => void) | undefined;
  private saved: ((...a: unknown[]) => void)[] = [];
  private readonly onData = (chunk: string): void => {
    const at = performance.now();
    let start = 0;
    let nl = chunk.indexOf('\n');
    if (nl < 0) {
      this.buf += chunk;
      return;
    }
    let line = this.buf + chunk.slice(0, nl);
    this.buf = '';
    for (;;) {
      this.handler?.(line, at);
      start = nl + 1;
      nl = chunk.indexOf('\n', start);
      if (nl < 0) break;
      line = chunk.slice(start, nl);
    }
    if (start < chunk.length) this.buf = chunk.slice(start);
  };

  constructor(private readonly sock: Socket) {}

  /** Take the socket's data events from the library client (it must have nothing in flight). */
  attach(): void {
    this.saved = this.sock.listeners('data') as ((...a: unknown[]) => void)[];
    this.sock.removeAllListeners('data');
    this.sock.on('data', this.onData);
  }

  detach(): void {
    this.sock.off('data', this.onData);
    for (const l of this.saved) this.sock.on('data', l);
    this.saved = [];
  }

  /**
   * Sequential: send `n` commands one at a time (cycling through `cmds`), each after the reply
   * of the previous one. Returns the round-trip times in µs, split by position in `cmds`.
   */
  sequential(cmds: string[], n: number, replies: string[]): Promise<{ times: number[][]; bad: number }> {
    const lines = cmds.map((c) => c + '\n');
    const times = cmds.map(() => [] as number[]);
    let bad = 0;
    let i = 0;
    let t0 = 0;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.handler = undefined;
        reject(new Error(`sequential run: no reply after ${PHASE_TIMEOUT_MS} ms (${i}/${n} done)`));
      }, PHASE_TIMEOUT_MS);
      const sendNext = (): void => {
        t0 = performance.now();
        this.sock.write(lines[i % lines.length]!, 'latin1');
      };
      this.handler = (line, at) => {
        const k = i % lines.length;
        times[k]!.push((at - t0) * 1000);
        if (!line.startsWith('OK')) bad++;
        if (replies[k] === undefined) replies[k] = line;
        if (++i === n) {
          clearTimeout(timer);
          this.handler = undefined;
          resolve({ times, bad });
        } else {
          sendNext();
        }
      };
      sendNext();
    });
  }

  /** Pipelined: `batches` writes of PIPE_BATCH commands each; µs per command for each batch. */
  pipelined(cmds: string[], batches: number, replies: string[]): Promise<{ times: number[]; bad: number }> {
    const lines: string[] = [];
    for (let j = 0; j < PIPE_BATCH; j++) lines.push(cmds[j % cmds.length]!);
    const text = lines.join('\n') + '\n';
    const times: number[] = [];
    let bad = 0;
    let b = 0;
    let got = 0;
    let t0 = 0;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.handler = undefined;
        reject(new Error(`pipelined run: replies missing after ${PHASE_TIMEOUT_MS} ms (batch ${b}, ${got}/${PIPE_BATCH} replies)`));
      }, PHASE_TIMEOUT_MS);
      const sendBatch = (): void => {
        got = 0;
        t0 = performance.now();
        this.sock.write(text, 'latin1');
      };
      this.handler = (line, at) => {
        if (!line.startsWith('OK')) bad++;
        const k = got % cmds.length;
        if (replies[k] === undefined) replies[k] = line;
        if (++got < PIPE_BATCH) return;
        times.push(((at - t0) * 1000) / PIPE_BATCH);
        if (++b === batches) {
          clearTimeout(timer);
          this.handler = undefined;
          resolve({ times, bad });
        } else {
          sendBatch();
        }
      };
      sendBatch();
    });
  }
}

// -------------------------------------------------------------------------------------------
// Helpers

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(digits);
}
function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}
function lpad(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}
function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1));
  return s[i]!;
}
function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]);
}

/** Newest modification time of the .ts files under `dir`. */
function newestTs(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestTs(p));
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

/** bin/virtio-ts-qemu runs dist/node/qemu.cjs: rebuild dist/ when src/ is newer. */
export function ensureBuilt(): string | undefined {
  if (existsSync(OUR_BUNDLE) && statSync(OUR_BUNDLE).mtimeMs >= newestTs(join(ROOT, 'src'))) return undefined;
  const r = spawnSync(process.execPath, [join(ROOT, 'scripts/build.mjs'), '--quiet'], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], timeout: 120_000 });
  if (r.status !== 0) return `build failed (${r.error?.message ?? `exit ${r.status}`})`;
  return 'rebuilt dist/ (src/ was newer than dist/node/qemu.cjs)';
}

function qemuVersion(): string {
  const r = spawnSync(QEMU_COMMAND[0]!, ['--version'], { encoding: 'utf8', timeout: 5000 });
  return (r.stdout ?? '').split('\n')[0]?.trim() ?? '';
}

/** Start one machine and place BAR4 the way libqos would (enumerate, size, program, enable). */
async function start(label: string, command: string[]): Promise<Target> {
  const proc = await launchQemu({ command, machine: MACHINE, memory: MEMORY, args: DEVICE_ARGS, name: label, startTimeoutMs: 10_000, closeTimeoutMs: 3000 });
  try {
    const m = proc.machine;
    const setup = async (): Promise<number> => {
      const bus = new GuestPciBus(m);
      const dev = await bus.device(2, 0);
      const bar = await dev.mapBar(4);
      await dev.enable();
      await m.writel(RAM_ADDR, RAM_VALUE);
      return bar.addr;
    };
    const bar4 = await withTimeout(setup(), 10_000, `${label} set-up`);
    return { label, pid: proc.pid, sock: proc.sockets[0]!, bar4, machine: m, close: () => proc.close() };
  } catch (e) {
    await proc.close();
    throw e;
  }
}

/**
 * The reference: a bare Node process that answers every line with the same 22-byte reply as
 * `readl` (no parsing, no machine). It connects to our socket as QEMU does, exits when the
 * connection closes (or after 2 minutes whatever happens), and is killed by its PID otherwise.
 */
const ECHO_SRC = `
const s = require('node:net').connect(process.argv[1]);
s.setEncoding('latin1');
s.on('data', (d) => {
  let n = 0;
  for (let i = d.indexOf('\\n'); i >= 0; i = d.indexOf('\\n', i + 1)) n++;
  s.write(n === 1 ? 'OK 0x0000000012345678\\n' : 'OK 0x0000000012345678\\n'.repeat(n), 'latin1');
});
s.on('close', () => process.exit(0));
s.on('error', () => process.exit(1));
setTimeout(() => process.exit(2), 120000);
`;

async function startEcho(): Promise<Target> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-bench-'));
  const path = join(dir, 'echo.sock');
  const server = createServer();
  const conn = new Promise<Socket>((resolve, reject) => {
    server.once('connection', resolve);
    server.once('error', reject);
  });
  await new Promise<void>((resolve, reject) => server.listen(path, resolve).once('error', reject));
  const child = spawn(process.execPath, ['-e', ECHO_SRC, path], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const kill = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const t = setTimeout(() => child.kill('SIGKILL'), 2000);
      await exited;
      clearTimeout(t);
    }
    server.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const sock = await withTimeout(conn, 10_000, 'echo reference start-up');
    server.close();
    sock.setEncoding('latin1');
    return {
      label: 'echo',
      pid: child.pid,
      sock,
      bar4: 0,
      close: async () => {
        sock.destroy();
        await kill();
      },
    };
  } catch (e) {
    child.kill('SIGKILL');
    await kill();
    throw e;
  }
}

// -------------------------------------------------------------------------------------------

const hex = (n: number): string => `0x${n.toString(16)}`;

const ROWS: Row[] = [
  { name: 'readl RAM', mode: 'seq', cmds: () => [`readl ${hex(RAM_ADDR)}`], withFloor: true },
  { name: 'writel RAM', mode: 'seq', cmds: () => [`writel ${hex(RAM_ADDR + 4)} 0xdeadbeef`] },
  { name: 'outl 0xcf8 | inl 0xcfc', mode: 'seq', cmds: () => [`outl 0xcf8 ${hex(CF8_VALUE)}`, 'inl 0xcfc'] },
  { name: 'readl BAR4 common cfg', mode: 'seq', cmds: (t) => [`readl ${hex(t.bar4 + COMMON_DEVICE_FEATURE)}`] },
  { name: 'readl RAM', mode: 'pipe', cmds: () => [`readl ${hex(RAM_ADDR)}`], withFloor: true },
  { name: 'writel RAM', mode: 'pipe', cmds: () => [`writel ${hex(RAM_ADDR + 4)} 0xdeadbeef`] },
  { name: 'outl 0xcf8 + inl 0xcfc', mode: 'pipe', cmds: () => [`outl 0xcf8 ${hex(CF8_VALUE)}`, 'inl 0xcfc'] },
  { name: 'readl BAR4 common cfg', mode: 'pipe', cmds: (t) => [`readl ${hex(t.bar4 + COMMON_DEVICE_FEATURE)}`] },
  {
    name: 'readl RAM, QtestMachine',
    mode: 'seq',
    cmds: () => [`readl ${hex(RAM_ADDR)}`],
    library: (m) => m.readl(RAM_ADDR),
  },
  {
    name: 'readl RAM, QtestMachine',
    mode: 'pipe',
    cmds: () => [`readl ${hex(RAM_ADDR)}`],
    library: (m) => m.readl(RAM_ADDR),
  },
];

/** Sequential commands through the driver library's client: µs per await. */
async function librarySequential(m: QtestMachine, op: (m: QtestMachine) => Promise<unknown>, n: number): Promise<number[]> {
  const times: number[] = [];
  const deadline = performance.now() + PHASE_TIMEOUT_MS;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await op(m);
    const t1 = performance.now();
    times.push((t1 - t0) * 1000);
    if (t1 > deadline) throw new Error(`library sequential run: over ${PHASE_TIMEOUT_MS} ms (${i + 1}/${n} done)`);
  }
  return times;
}

/** Pipelined through the library: PIPE_BATCH calls issued in one turn, then awaited together. */
async function libraryPipelined(m: QtestMachine, op: (m: QtestMachine) => Promise<unknown>, batches: number): Promise<number[]> {
  const times: number[] = [];
  for (let b = 0; b < batches; b++) {
    const t0 = performance.now();
    const ps: Promise<unknown>[] = [];
    for (let j = 0; j < PIPE_BATCH; j++) ps.push(op(m));
    await withTimeout(Promise.all(ps), PHASE_TIMEOUT_MS, 'library pipelined batch');
    times.push(((performance.now() - t0) * 1000) / PIPE_BATCH);
  }
  return times;
}

async function runRowChunk(t: Target, row: Row, cmds: string[], count: number, sample: Sample): Promise<void> {
  if (row.library) {
    const m = t.machine!;
    if (row.mode === 'seq') sample.times[0]!.push(...(await librarySequential(m, row.library, count)));
    else sample.times[0]!.push(...(await libraryPipelined(m, row.library, count)));
    if (sample.replies.length === 0) sample.replies.push(`${await m.client.command(cmds[0]!)}`);
    return;
  }
  const raw = new RawLines(t.sock);
  raw.attach();
  try {
    if (row.mode === 'seq') {
      const r = await raw.sequential(cmds, count, sample.replies);
      r.times.forEach((ts, k) => sample.times[k]!.push(...ts));
      sample.bad += r.bad;
    } else {
      const r = await raw.pipelined(cmds, count, sample.replies);
      sample.times[0]!.push(...r.times);
      sample.bad += r.bad;
    }
  } finally {
    raw.detach();
  }
}

// -------------------------------------------------------------------------------------------
// CPU placement. A sequential round trip is two wake-ups; on a VM a wake-up on another (idle)
// CPU costs tens of µs more than one on the same CPU, and the scheduler picks either, so
// unpinned medians jump between two modes from run to run. The main table is therefore taken
// with this process and every server pinned to one CPU (`taskset -a -p`, applied to the running
// processes: their command lines stay exactly the launcher's); a smaller unpinned table follows.

/** The affinity mask of `pid` (hex, as taskset prints it), or undefined without taskset. */
function affinityOf(pid: number): string | undefined {
  const r = spawnSync('taskset', ['-p', String(pid)], { encoding: 'utf8', timeout: 5000 });
  return r.status === 0 ? /mask:\s*([0-9a-fA-F,]+)/.exec(r.stdout)?.[1] : undefined;
}

/** Set the affinity of every thread of `pid`; true on success. */
function setAffinity(pid: number, mask: string): boolean {
  const r = spawnSync('taskset', ['-a', '-p', mask, String(pid)], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0;
}

/** The mask of the lowest CPU in `mask`. */
function lowestCpuMask(mask: string): { mask: string; cpu: number } | undefined {
  const v = BigInt('0x' + mask.replace(/,/g, ''));
  if (v === 0n) return undefined;
  let cpu = 0;
  while (((v >> BigInt(cpu)) & 1n) === 0n) cpu++;
  return { mask: (1n << BigInt(cpu)).toString(16), cpu };
}

interface PassResult {
  /** samples[row][index in targets] */
  samples: (Sample | undefined)[][];
  skipped: string[];
}

interface PassConfig {
  rows: Row[];
  rounds: number;
  seqPerRound: number;
  pipePerRound: number;
  warmSeq: number;
  warmPipe: number;
  deadline: number;
}

/** Measure `rows` on `all` (the echo reference only where a row asks for it), alternating rounds. */
async function measure(all: Target[], echo: Target | undefined, cfg: PassConfig): Promise<PassResult> {
  const samples: (Sample | undefined)[][] = cfg.rows.map(() => all.map(() => undefined));
  const skipped: string[] = [];
  for (let r = 0; r < cfg.rows.length; r++) {
    const row = cfg.rows[r]!;
    if (performance.now() > cfg.deadline) {
      skipped.push(`${row.name} (${row.mode})`);
      continue;
    }
    const who = all.map((_, i) => i).filter((i) => !all[i]!.failed && (all[i] !== echo || (row.withFloor && !row.library)));
    for (const i of who) samples[r]![i] = { times: row.cmds(all[i]!).map(() => []), replies: [], bad: 0 };
    // Warm-up (untimed), then alternating rounds.
    for (const i of who) {
      const t = all[i]!;
      const scratch: Sample = { times: row.cmds(t).map(() => []), replies: [], bad: 0 };
      try {
        await runRowChunk(t, row, row.cmds(t), row.mode === 'seq' ? cfg.warmSeq : cfg.warmPipe, scratch);
      } catch (e) {
        t.failed = samples[r]![i]!.error = (e as Error).message;
      }
    }
    for (let round = 0; round < cfg.rounds; round++) {
      for (const i of who) {
        const t = all[i]!;
        const s = samples[r]![i]!;
        if (s.error) continue;
        try {
          await runRowChunk(t, row, row.cmds(t), row.mode === 'seq' ? cfg.seqPerRound : cfg.pipePerRound, s);
        } catch (e) {
          t.failed = s.error = (e as Error).message;
        }
      }
    }
  }
  return { samples, skipped };
}

const med = (s: Sample | undefined, k: number): number => (s && !s.error ? quantile(s.times[k]!, 0.5) : NaN);
const p99 = (s: Sample | undefined, k: number): number => (s && !s.error ? quantile(s.times[k]!, 0.99) : NaN);

/** Print one table: command × ours × QEMU × ratio × target, then the floor line and notes. */
function report(title: string, rows: Row[], all: Target[], echo: Target | undefined, hasQemu: boolean, res: PassResult): void {
  console.log('');
  console.log(title);
  const header = ['command', 'mode', 'ours µs', 'ours p99', 'QEMU µs', 'QEMU p99', 'ours/QEMU', 'target ≤ 0.5'];
  const widths = [30, 5, 8, 9, 8, 9, 10, 13];
  const line = (cols: string[]) => cols.map((c, i) => (i <= 1 ? pad(c, widths[i]!) : lpad(c, widths[i]!))).join(' ');
  console.log(line(header));
  console.log('-'.repeat(widths.reduce((a, b) => a + b + 1, -1)));
  const notes: string[] = [];
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    const ours = res.samples[r]![0];
    if (!ours) continue;
    const qemu = hasQemu ? res.samples[r]![1] : undefined;
    const cmdNames = row.cmds(all[0]!);
    const positions = row.mode === 'seq' ? cmdNames.length : 1;
    for (let k = 0; k < positions; k++) {
      const name = positions > 1 ? cmdNames[k]!.split(' ').slice(0, 2).join(' ') + (k > 0 ? ' (after outl)' : '') : row.name;
      const o = med(ours, k);
      const q = med(qemu, k);
      const ratio = o / q;
      console.log(
        line([
          name,
          row.mode,
          fmt(o, 2),
          row.mode === 'seq' ? fmt(p99(ours, k), 1) : '',
          fmt(q, 2),
          row.mode === 'seq' ? fmt(p99(qemu, k), 1) : '',
          Number.isFinite(ratio) ? ratio.toFixed(2) : '—',
          Number.isFinite(ratio) ? (ratio <= 0.5 ? 'met' : 'NOT met') : !hasQemu ? 'no QEMU' : Number.isFinite(o) ? 'QEMU failed' : 'ours failed',
        ]),
      );
    }
    res.samples[r]!.forEach((s, i) => {
      if (s?.error) notes.push(`${all[i]!.label}, ${row.name} (${row.mode}): ${s.error}`);
      if (s?.bad) notes.push(`${all[i]!.label}, ${row.name} (${row.mode}): ${s.bad} replies were not OK`);
    });
    if (qemu && !qemu.error && !ours.error && !row.library && ours.replies.join('|') !== qemu.replies.join('|')) {
      notes.push(`${row.name} (${row.mode}): replies differ: ours ${JSON.stringify(ours.replies)}, QEMU ${JSON.stringify(qemu.replies)}`);
    }
  }
  console.log('target: ours ≤ 0.5 × QEMU per command (median µs per command; seq = write-to-reply round trip, pipe = batch time / 1000).');
  if (echo) {
    const ei = all.indexOf(echo);
    const parts: string[] = [];
    for (let r = 0; r < rows.length; r++) {
      const e = res.samples[r]![ei];
      if (!e) continue;
      const q = hasQemu ? med(res.samples[r]![1], 0) : NaN;
      const m = med(e, 0);
      parts.push(`${rows[r]!.mode} ${fmt(m, 2)} µs${rows[r]!.mode === 'seq' ? ` (p99 ${fmt(p99(e, 0), 1)})` : ''}${Number.isFinite(q) ? ` = ${(m / q).toFixed(2)} × QEMU's ${rows[r]!.name}` : ''}`);
    }
    if (parts.length) {
      console.log(`floor: a bare Node echo server (same socket, one fixed readl-sized reply per line, no parsing, no machine): ${parts.join('; ')}.`);
      console.log("       No server written in Node answers faster than that; a ratio below the floor's is out of reach on this host.");
    }
  }
  if (res.skipped.length) console.log(`skipped (over the time budget): ${res.skipped.join(', ')}`);
  for (const n of notes) console.log(`note: ${n}`);
}

export async function runQtestBench(opts: QtestBenchOptions = {}): Promise<void> {
  const quick = opts.quick ?? false;
  // Many short rounds: the load of a shared host changes within seconds, and both servers should
  // see the same mix of it.
  const pinnedCfg = (deadline: number): PassConfig => ({
    rows: ROWS,
    rounds: quick ? 4 : 10,
    seqPerRound: quick ? 500 : 2000, // 20 000 commands per row in all
    pipePerRound: 2, // batches of 1000: 20 per row
    warmSeq: quick ? 500 : 3000,
    warmPipe: 2,
    deadline,
  });
  const UNPINNED_ROWS = ROWS.filter((r) => r.name === 'readl RAM');
  /** Rows not started by then are skipped (the whole bench should stay well under a minute). */
  const BUDGET_MS = 40_000;
  const began = performance.now();

  console.log('');
  console.log(`qtest round trip — our virtio-ts-qemu vs QEMU, same command line: -accel tcg -bios <halt> -nodefaults -display none -machine ${MACHINE} -m ${MEMORY} ${DEVICE_ARGS.join(' ')}`);
  const cfg0 = pinnedCfg(0);
  console.log(
    `client: this Node process over the qtest unix socket; sequential ${cfg0.rounds * cfg0.seqPerRound} commands per row (median, p99), pipelined ${cfg0.rounds * cfg0.pipePerRound} batches of ${PIPE_BATCH} commands in one write (median per command); ours and QEMU alternate in ${cfg0.rounds} rounds`,
  );

  const built = ensureBuilt();
  if (built) console.log(built);

  const targets: Target[] = [];
  let echo: Target | undefined;
  const restore: [number, string][] = [];
  try {
    try {
      targets.push(await start('ours', [process.execPath, OUR_BIN]));
    } catch (e) {
      console.log(`ours: cannot start bin/virtio-ts-qemu: ${(e as Error).message}`);
      return;
    }
    if (!commandAvailable(QEMU_COMMAND)) {
      console.log(`QEMU: ${QEMU_COMMAND[0]} is not installed — QEMU columns left empty (apt-get install -y --no-install-recommends qemu-system-x86)`);
    } else {
      const v = qemuVersion();
      console.log(`QEMU: ${v}${/version 7\.2\./.test(v) ? '' : ' (not 7.2: the comparison is with this version)'}`);
      try {
        targets.push(await start('QEMU', [...QEMU_COMMAND]));
      } catch (e) {
        console.log(`QEMU: cannot start: ${(e as Error).message} — QEMU columns left empty`);
      }
    }
    try {
      echo = await startEcho();
    } catch (e) {
      console.log(`echo reference: cannot start: ${(e as Error).message}`);
    }
    const all = echo ? [...targets, echo] : targets;
    const hasQemu = targets.length > 1;
    console.log(`pids: ${all.map((t) => `${t.label} ${t.pid}`).join(', ')}; BAR4 at ${targets.map((t) => hex(t.bar4)).join(' / ')}`);

    // Pass 1: everything on one CPU.
    const pids = [process.pid, ...all.map((t) => t.pid!).filter((p) => p !== undefined)];
    const selfMask = affinityOf(process.pid);
    const one = selfMask === undefined ? undefined : lowestCpuMask(selfMask);
    let pinned = false;
    if (one) {
      pinned = true;
      for (const pid of pids) {
        const orig = affinityOf(pid);
        if (orig === undefined || !setAffinity(pid, one.mask)) {
          pinned = false;
          break;
        }
        restore.push([pid, orig]);
      }
    }
    const deadline = began + BUDGET_MS;
    const res1 = await measure(all, echo, pinnedCfg(deadline));
    report(
      pinned
        ? `pinned: this client and every server on CPU ${one!.cpu} (taskset -a -p), so each wake-up is a switch on the same CPU:`
        : 'unpinned (taskset unavailable or refused: the CPU placement is the scheduler\'s, expect run-to-run jumps in the seq rows):',
      ROWS,
      all,
      echo,
      hasQemu,
      res1,
    );

    // Pass 2: back to the original affinities, the scheduler's placement.
    for (const [pid, mask] of restore.splice(0)) setAffinity(pid, mask);
    if (pinned) {
      const res2 = await measure(all, echo, { ...pinnedCfg(deadline + 10_000), rows: UNPINNED_ROWS });
      report(
        "unpinned (the scheduler's placement; a wake-up on another, idle CPU of a VM costs tens of µs more, so these medians jump between runs):",
        UNPINNED_ROWS,
        all,
        echo,
        hasQemu,
        res2,
      );
    }
    const firsts = res1.samples
      .map((row, r) => (ROWS[r]!.library || !row[0] ? undefined : row[0].replies.join(', ')))
      .filter((x, i, arr) => x !== undefined && arr.indexOf(x) === i);
    console.log('');
    console.log(`replies (first of each command, ours${hasQemu ? ' — identical to QEMU unless a note says otherwise' : ''}): ${firsts.join('; ')}`);
  } finally {
    for (const [pid, mask] of restore) setAffinity(pid, mask);
    await Promise.all([...targets, ...(echo ? [echo] : [])].map((t) => t.close()));
    console.log(`qtest section: ${((performance.now() - began) / 1000).toFixed(1)} s`);
  }
}
