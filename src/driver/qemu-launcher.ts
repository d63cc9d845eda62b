/**
 * Start a machine with a QEMU command line and drive it over qtest + QMP: either the real
 * `qemu-system-x86_64` or our `virtio-ts-qemu`, which takes the same options. Node-only.
 *
 * As libqtest does, the harness listens on both unix sockets before spawning and the machine
 * connects to them as a client (`-qtest unix:PATH -qmp unix:PATH`); `-qtest stdio` is supported
 * too. Debian's QEMU has no qtest accelerator, so the default flags are
 * `-accel tcg -bios <halt firmware>`: the CPU only halts, nothing else touches the devices, and
 * `clock_step` is unavailable (`Machine.hasClock` is false). See shared/notes/qemu-oracle.md §2.
 *
 * Every spawn is bounded by a timeout; each process gets a private temporary directory under
 * `os.tmpdir()` (firmware, sockets) that `close()` removes. `close()` quits through QMP and
 * kills the process by its own PID if it has not exited in time.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MachineError, TimeoutError } from './machine.js';
import { QmpClient } from './qmp-client.js';
import { QtestClient, QtestMachine } from './qtest-client.js';

/**
 * A 64 KiB "BIOS" that only halts: all 0xf4 (hlt) with `cli; hlt; jmp $-3` (fa f4 eb fd) at the
 * reset vector, file offset 0xfff0.
 */
export function haltFirmware(): Uint8Array {
  const fw = new Uint8Array(0x10000).fill(0xf4);
  fw.set([0xfa, 0xf4, 0xeb, 0xfd], 0xfff0);
  return fw;
}

export interface LaunchOptions {
  /** argv prefix of the program: default `['qemu-system-x86_64']`; e.g. `[process.execPath, 'bin/virtio-ts-qemu']`. */
  command?: readonly string[];
  /** `-machine` value (default 'pc'). */
  machine?: string;
  /** `-m` value (default '16M'). */
  memory?: string;
  /** Everything else: `-device ...`, `-global ...`, `-drive ...`. */
  args?: readonly string[];
  /**
   * Add `-accel tcg -bios <halt> -nodefaults -display none` (default true). Set false to pass
   * your own accelerator/firmware flags in `args`.
   */
  defaultFlags?: boolean;
  /** How the qtest channel is connected (default 'unix'). */
  qtest?: 'unix' | 'stdio';
  /** Open a QMP socket (default true; needed for a clean quit). */
  qmp?: boolean;
  /** Whether the clock works; probed with `clock_step 0` when not given. */
  hasClock?: boolean;
  /** Start-up bound: spawn until qtest and QMP are both ready (default 10 s). */
  startTimeoutMs?: number;
  /** How long `close()` waits for the process to exit before SIGKILL (default 3 s). */
  closeTimeoutMs?: number;
  /** Name for messages (default: the program's base name). */
  name?: string;
  /** qtest protocol trace. */
  log?: (line: string) => void;
  /**
   * The machine's environment. Default: this process's, except that a Node program (the
   * command is this Node, `node`, or `virtio-ts-qemu` itself) is started without
   * `NODE_EXTRA_CA_CERTS`: with it, Node 20 parses the whole CA bundle before running any code
   * (about 50 ms of every start on the project's machine), and virtio-ts-qemu makes no TLS
   * connection. Pass `env` to keep it.
   */
  env?: NodeJS.ProcessEnv;
}

/** Is `program` Node itself, or the virtio-ts-qemu script (which runs under Node)? */
function isNodeProgram(program: string): boolean {
  const base = program.split(/[\\/]/).pop() ?? program;
  return program === process.execPath || /^(node|nodejs|node\.exe|virtio-ts-qemu)$/.test(base);
}

/** The environment `launchQemu` gives the machine process when `opts.env` is not set. */
export function machineEnv(command: readonly string[], env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  if (env['NODE_EXTRA_CA_CERTS'] === undefined || !isNodeProgram(command[0] ?? '')) return env;
  const out = { ...env };
  delete out['NODE_EXTRA_CA_CERTS'];
  return out;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    // Never leave a machine behind when the test process ends: kill what we spawned, by PID.
    process.once('exit', () => {
      for (const c of live) {
        try {
          c.kill('SIGKILL');
        } catch {
          /* already gone */
        }
      }
    });
  }
}

/** A running machine process. */
export class QemuProcess {
  /** Set once the process has exited. */
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private stderrText = '';
  /** Resolves once the process has exited and its stdio is closed. */
  readonly exited: Promise<void>;
  private closing: Promise<void> | undefined;
  machine!: QtestMachine;
  qmp: QmpClient | undefined;
  readonly sockets: Socket[] = [];

  constructor(readonly child: ChildProcess, readonly argv: readonly string[], readonly tempDir: string, private readonly closeTimeoutMs: number) {
    this.exited = new Promise((resolve) => {
      // 'close' comes after 'exit' once stdio is drained, so stderr is complete by then.
      child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve();
      });
      child.once('error', () => {
        this.exit ??= { code: null, signal: null };
        resolve();
      });
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      if (this.stderrText.length < 65536) this.stderrText += s;
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** What the process wrote to stderr (first 64 KiB). */
  get stderr(): string {
    return this.stderrText;
  }

  /** Resolves when the process has exited. */
  waitExit(timeoutMs: number): Promise<boolean> {
    if (this.exit) return Promise.resolve(true);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      void this.exited.then(() => {
        clearTimeout(t);
        resolve(true);
      });
    });
  }

  /** Quit via QMP (or SIGTERM without QMP), SIGKILL after the timeout, remove the temp dir. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    try {
      if (!this.exit) {
        if (this.qmp && !this.qmp.closed) {
          // The reply may never come: QEMU can exit before sending it.
          this.qmp.execute('quit').catch(() => undefined);
        } else {
          this.child.kill('SIGTERM');
        }
        if (!(await this.waitExit(this.closeTimeoutMs))) {
          this.child.kill('SIGKILL');
          await this.waitExit(this.closeTimeoutMs);
        }
      }
    } finally {
      this.qmp?.close();
      this.machine?.client.close();
      for (const s of this.sockets) s.destroy();
      rmSync(this.tempDir, { recursive: true, force: true });
    }
  }
}

/** Is `command` runnable (`--version` exits 0 within 5 s)? */
export function commandAvailable(command: readonly string[] = ['qemu-system-x86_64']): boolean {
  const r = spawnSync(command[0]!, [...command.slice(1), '--version'], { stdio: 'ignore', timeout: 5000 });
  return r.status === 0;
}

function listenOnce(path: string): { server: Server; connection: Promise<Socket> } {
  const server = createServer();
  const connection = new Promise<Socket>((resolve, reject) => {
    server.once('connection', (s) => {
      server.close();
      resolve(s);
    });
    server.once('error', reject);
  });
  // Observed later (or never, if start-up fails first): keep a rejection from going unhandled.
  connection.catch(() => undefined);
  server.listen(path);
  return { server, connection };
}

/**
 * Spawn a machine and connect qtest (and QMP). Rejects, with the process's stderr in the
 * message, if it exits or does not connect within `startTimeoutMs`.
 */
export async function launchQemu(opts: LaunchOptions = {}): Promise<QemuProcess> {
  const command = opts.command ?? ['qemu-system-x86_64'];
  const name = opts.name ?? command[command.length - 1]!.split('/').pop()!;
  const startTimeoutMs = opts.startTimeoutMs ?? 10_000;
  const useQmp = opts.qmp ?? true;
  const qtestMode = opts.qtest ?? 'unix';
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-qtest-'));
  const servers: Server[] = [];
  let proc: QemuProcess | undefined;
  try {
    const flags: string[] = [];
    if (opts.defaultFlags ?? true) {
      const fw = join(dir, 'halt.bin');
      writeFileSync(fw, haltFirmware());
      flags.push('-accel', 'tcg', '-bios', fw, '-nodefaults', '-display', 'none');
    }
    flags.push('-machine', opts.machine ?? 'pc', '-m', opts.memory ?? '16M');
    let qtestConn: Promise<Socket> | undefined;
    if (qtestMode === 'unix') {
      const p = join(dir, 'qtest.sock');
      const l = listenOnce(p);
      servers.push(l.server);
      qtestConn = l.connection;
      flags.push('-qtest', `unix:${p}`);
    } else {
      flags.push('-qtest', 'stdio');
    }
    flags.push('-qtest-log', 'none');
    let qmpConn: Promise<Socket> | undefined;
    if (useQmp) {
      const p = join(dir, 'qmp.sock');
      const l = listenOnce(p);
      servers.push(l.server);
      qmpConn = l.connection;
      flags.push('-qmp', `unix:${p}`);
    }
    flags.push(...(opts.args ?? []));
    // Wait for the sockets to listen before the machine tries to connect.
    await Promise.all(servers.map((s) => new Promise<void>((resolve, reject) => (s.listening ? resolve() : s.once('listening', resolve).once('error', reject)))));

    const argv = [...command, ...flags];
    const child = spawn(command[0]!, argv.slice(1), {
      stdio: [qtestMode === 'stdio' ? 'pipe' : 'ignore', qtestMode === 'stdio' ? 'pipe' : 'ignore', 'pipe'],
      env: opts.env ?? machineEnv(command),
    });
    trackChild(child);
    proc = new QemuProcess(child, argv, dir, opts.closeTimeoutMs ?? 3000);
    const p = proc;

    let timer: ReturnType<typeof setTimeout> | undefined;
    const failure = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new TimeoutError(`${name}: not ready within ${startTimeoutMs} ms\n${p.stderr}`)), startTimeoutMs);
      child.once('error', (e) => reject(new MachineError(`${name}: cannot start ${command[0]}: ${e.message}`)));
      void p.exited.then(() => reject(exitError()));
    });
    failure.catch(() => undefined);
    const exitError = (): MachineError =>
      new MachineError(`${name} exited during start-up (code ${p.exit?.code}, signal ${p.exit?.signal}): ${p.stderr.trim()}`);
    try {
      const [qtSock, qmpSock] = await Promise.race([Promise.all([qtestConn, qmpConn]), failure]);
      if (qtSock) p.sockets.push(qtSock);
      if (qmpSock) p.sockets.push(qmpSock);
      const client =
        qtestMode === 'unix'
          ? new QtestClient(qtSock!, qtSock!, { name, ...(opts.log ? { log: opts.log } : {}) })
          : new QtestClient(child.stdout!, child.stdin!, { name, ...(opts.log ? { log: opts.log } : {}) });
      if (qmpSock) p.qmp = await Promise.race([QmpClient.connect(qmpSock, { name: `${name} qmp`, timeoutMs: startTimeoutMs }), failure]);
      p.machine = await Promise.race([
        QtestMachine.open(client, {
          name,
          ...(opts.hasClock !== undefined ? { hasClock: opts.hasClock } : {}),
          ...(p.qmp ? { qmp: p.qmp } : {}),
          onClose: () => p.close(),
        }),
        failure,
      ]);
    } catch (e) {
      // A connection that broke during the handshake usually means the process is exiting:
      // report that, with its stderr, rather than the socket error.
      if (!(e instanceof TimeoutError) && (await p.waitExit(500))) throw exitError();
      throw e;
    } finally {
      clearTimeout(timer);
    }
    return p;
  } catch (e) {
    for (const s of servers) s.close();
    if (proc) await proc.close();
    else rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
