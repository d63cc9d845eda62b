// A machine process (qemu-system-x86_64 or our virtio-ts-qemu, bundled from the current sources)
// started with QEMU's command line and a QMP socket it listens on, read line by line as raw text,
// so that replies can be compared byte for byte (key order included) between the two. Every
// process has a deadline and is killed by its own PID.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** A temporary directory with the halt firmware and (once `buildOurs` ran) our program. */
export class Workdir {
  readonly dir = mkdtempSync(join(tmpdir(), 'virtio-ts-mig-'));
  readonly firmware = join(this.dir, 'halt.bin');
  ours: string | undefined;
  private readonly procs = new Set<QmpProcess>();
  private seq = 0;

  constructor() {
    writeFileSync(this.firmware, haltFirmware());
  }

  /** Bundle src/cli/qemu-main.ts (never a stale dist/). */
  async buildOurs(): Promise<string> {
    this.ours ??= join(this.dir, 'qemu.mjs');
    await esbuild.build({ entryPoints: [join(ROOT, 'src/cli/qemu-main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: this.ours, logLevel: 'error' });
    return this.ours;
  }

  path(name: string): string {
    return join(this.dir, name);
  }

  /**
   * Start `kind` with `-accel tcg -bios halt -nodefaults -display none -machine M -m 16M`, a QMP
   * server socket and `args`; connect and negotiate (unless `connect` is false: for a process
   * expected to exit at start-up). Rejects (with stderr) if it exits first.
   */
  async start(kind: 'qemu' | 'ours', machine: string, args: readonly string[], opts: { negotiate?: boolean; connect?: boolean; deadlineMs?: number } = {}): Promise<QmpProcess> {
    const sock = join(this.dir, `qmp-${this.seq++}.sock`);
    const argv = ['-accel', 'tcg', '-bios', this.firmware, '-nodefaults', '-display', 'none', '-machine', machine, '-m', '16M', '-qmp', `unix:${sock},server=on,wait=off`, ...args];
    const child =
      kind === 'qemu'
        ? spawn(process.env['QEMU'] ?? 'qemu-system-x86_64', argv, { stdio: ['ignore', 'ignore', 'pipe'] })
        : spawn(process.execPath, [this.ours ?? (await this.buildOurs()), ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
    const p = new QmpProcess(child, opts.deadlineMs ?? 20_000);
    this.procs.add(p);
    if (opts.connect === false) return p;
    const deadline = Date.now() + 10_000;
    while (!existsSync(sock)) {
      if (p.exit || Date.now() > deadline) {
        await p.exited;
        throw new Error(`${kind} did not start: ${p.stderr}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    // The socket file appears at bind(), a moment before listen(): retry a refused connect.
    for (;;) {
      try {
        await p.connect(sock);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ECONNREFUSED' || p.exit || Date.now() > deadline) throw e;
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    await p.waitLine((l) => l.startsWith('{"QMP"'), 5000);
    p.lines.length = 0;
    if (opts.negotiate ?? true) await p.cmd({ execute: 'qmp_capabilities' });
    return p;
  }

  /** Kill what is still running (by PID) and remove the directory. */
  async dispose(): Promise<void> {
    for (const p of this.procs) await p.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export class QmpProcess {
  /** Lines received since the last `take()` (greeting excluded). */
  readonly lines: string[] = [];
  stderr = '';
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  readonly exited: Promise<void>;
  private sock: Socket | undefined;
  private buf = '';
  private wake: (() => void) | undefined;
  private readonly deadline: ReturnType<typeof setTimeout>;

  constructor(readonly child: ChildProcess, deadlineMs: number) {
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    this.deadline = setTimeout(() => child.kill('SIGKILL'), deadlineMs);
    this.exited = new Promise((resolve) =>
      child.once('close', (code, signal) => {
        clearTimeout(this.deadline);
        this.exit = { code, signal };
        this.wake?.();
        resolve();
      }),
    );
  }

  connect(path: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      this.sock = s;
      s.setEncoding('utf8');
      s.on('data', (d: string) => {
        this.buf += d;
        let i: number;
        while ((i = this.buf.indexOf('\n')) >= 0) {
          const line = this.buf.slice(0, i).trim();
          this.buf = this.buf.slice(i + 1);
          if (line) this.lines.push(line);
        }
        this.wake?.();
      });
      s.on('error', () => this.wake?.());
      s.once('connect', () => resolve());
      s.once('error', reject);
    });
  }

  send(obj: unknown): void {
    this.sock!.write(JSON.stringify(obj) + '\n');
  }

  /** Wait until a line matching `pred` has arrived (in `lines`); returns it. */
  async waitLine(pred: (line: string) => boolean, timeoutMs = 5000): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find(pred);
      if (hit !== undefined) return hit;
      if (this.exit) throw new Error(`process exited (${JSON.stringify(this.exit)}) while waiting; stderr: ${this.stderr}; lines: ${this.lines.join('\n')}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no matching line within ${timeoutMs} ms; got:\n${this.lines.join('\n')}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(left, 50));
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
    }
  }

  /** Everything received so far, cleared. */
  take(): string[] {
    return this.lines.splice(0);
  }

  /**
   * Send a command and wait for its reply, then `settleMs` more for events; returns the lines
   * since the command was sent.
   */
  async cmd(obj: unknown, settleMs = 0): Promise<string[]> {
    const before = this.lines.length;
    this.send(obj);
    await this.waitLine((l) => this.lines.indexOf(l) >= before && !l.includes('"event"'), 5000);
    if (settleMs) await new Promise((r) => setTimeout(r, settleMs));
    return this.take();
  }

  async kill(): Promise<void> {
    this.sock?.destroy();
    if (!this.exit) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/**
 * A line as comparable between QEMU and us: timestamps dropped, numbers that are measurements
 * (times, RAM counters) replaced by '#', everything else (keys and their order, strings) kept.
 */
export function normalize(line: string): string {
  const v = JSON.parse(line) as Record<string, unknown>;
  if ('timestamp' in v) v['timestamp'] = '#';
  const ret = v['return'];
  if (ret && typeof ret === 'object' && !Array.isArray(ret)) {
    const r = ret as Record<string, unknown>;
    for (const k of ['setup-time', 'total-time', 'downtime', 'expected-downtime']) if (typeof r[k] === 'number') r[k] = '#';
    const ram = r['ram'];
    if (ram && typeof ram === 'object') for (const k of Object.keys(ram)) (ram as Record<string, unknown>)[k] = '#';
  }
  return JSON.stringify(v);
}
