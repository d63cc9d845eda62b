/**
 * Migration channels on Node: `exec:CMD` as QEMU 7.2's command channel (migration/exec.c,
 * io/channel-command.c) and, for harnesses that opt in, QEMU 8.x's `file:PATH`. Node-only.
 *
 * `exec:CMD` runs `/bin/sh -c CMD`. Outgoing, the stream is the command's stdin; incoming, it is
 * the command's stdout. Like QEMU, the command's stderr is ours, and a transfer ends only when
 * the command has exited. Unlike QEMU, which ignores how it exited, a status other than 0 fails
 * the transfer (docs/qemu-differences.md): a `cat > /full/disk` that fails after reading
 * everything must not report a completed migration. Every transfer is bounded by a timeout;
 * a command that outlives it, or a cancelled transfer, is ended by its process group id
 * (SIGTERM, then SIGKILL), never by name.
 */
// child_process and fs/promises are imported on first use: loading them is a couple of ms of
// every virtio-ts-qemu start-up (issue 11), and most runs never migrate. (The CommonJS bundle of
// virtio-ts-qemu turns these import()s into require()s, see scripts/build.mjs.)
import type { ChildProcess } from 'node:child_process';
import type { MigrationChannels, MigrationDirection } from '../machine/migration.js';
import { strerror } from '../machine/chardev.js';

export interface NodeMigrationChannelOptions {
  /** Longest a transfer may take before it fails and its command is ended (default 60 s). */
  timeoutMs?: number;
  /** Where a command's stderr goes: default this process's own stderr, as QEMU's children inherit it. */
  onStderr?: (text: string) => void;
  /** Most bytes an incoming command may produce (default 1 GiB). */
  maxBytes?: number;
  /** The shell (default `/bin/sh`, as QEMU). */
  shell?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_MAX_BYTES = 1 << 30;
/** How long a command gets between SIGTERM and SIGKILL (QEMU's `qio_channel_command_abort` waits 10 ms). */
const KILL_GRACE_MS = 1000;

/** Process groups we started and have not seen exit, ended if this process exits first. */
const liveGroups = new Set<number>();
let exitHookInstalled = false;
function track(child: ChildProcess): void {
  const pid = child.pid;
  if (pid === undefined) return;
  liveGroups.add(pid);
  child.once('exit', () => liveGroups.delete(pid));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const g of liveGroups) signalGroup(g, 'SIGKILL');
    });
  }
}

function signalGroup(pid: number, sig: NodeJS.Signals): void {
  try {
    // The command runs in its own process group (spawned detached), whose id is its PID: this
    // reaches the shell and whatever it started, and nothing else.
    process.kill(-pid, sig);
  } catch {
    /* already gone */
  }
}

/** A URI's protocol prefix as QEMU spells it. */
function protocol(uri: string): string {
  const i = uri.indexOf(':');
  return i < 0 ? uri : uri.slice(0, i);
}

/** The channels: `exec:` always, `file:` when the controller lets it through. */
export function createNodeMigrationChannels(opts: NodeMigrationChannelOptions = {}): MigrationChannels {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
  const shell = opts.shell ?? '/bin/sh';
  const onStderr = opts.onStderr;

  /**
   * Run `cmd`, feeding `input` to its stdin (outgoing) or collecting its stdout (incoming).
   * Resolves with stdout once it has exited with status 0.
   */
  const run = async (cmd: string, direction: MigrationDirection, input: Uint8Array | undefined, signal: AbortSignal | undefined): Promise<Uint8Array> => {
    const { spawn } = await import('node:child_process');
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new Error('migration cancelled'));
      const child = spawn(shell, ['-c', cmd], {
        stdio: [direction === 'outgoing' ? 'pipe' : 'ignore', direction === 'incoming' ? 'pipe' : 'ignore', onStderr ? 'pipe' : 'inherit'],
        detached: true,
      });
      track(child);
      const verb = direction === 'outgoing' ? 'write to' : 'read from';
      let failure: string | undefined;
      const chunks: Buffer[] = [];
      let size = 0;
      let killTimer: ReturnType<typeof setTimeout> | undefined;
      const end = (why: string) => {
        failure ??= why;
        const pid = child.pid;
        if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
        signalGroup(pid, 'SIGTERM');
        killTimer ??= setTimeout(() => signalGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
      };
      const timer = setTimeout(() => end(`Unable to ${verb} command: timed out after ${timeoutMs} ms`), timeoutMs);
      const onAbort = () => end('migration cancelled');
      signal?.addEventListener('abort', onAbort, { once: true });

      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (t: string) => onStderr?.(t));
      child.stdout?.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) return end(`Unable to read from command: more than ${maxBytes} bytes`);
        chunks.push(c);
      });
      if (child.stdin) {
        // A command that exits without reading everything closes the pipe: EPIPE, as QEMU's
        // "Unable to write to command: Broken pipe".
        child.stdin.on('error', (e: NodeJS.ErrnoException) => {
          failure ??= `Unable to write to command: ${strerror(e)}`;
        });
        child.stdin.end(input);
      }
      child.once('error', (e) => {
        failure ??= `Unable to ${verb} command: ${e.message}`;
      });
      child.once('close', (code, sig) => {
        clearTimeout(timer);
        if (killTimer) clearTimeout(killTimer);
        signal?.removeEventListener('abort', onAbort);
        if (failure === undefined && code !== 0) {
          failure = sig ? `Unable to ${verb} command: it was killed by ${sig}` : `Unable to ${verb} command: it exited with status ${code}`;
        }
        if (failure !== undefined) reject(new Error(failure));
        else resolve(new Uint8Array(Buffer.concat(chunks)));
      });
    });
  };

  return {
    check(uri: string, _direction: MigrationDirection): string | undefined {
      const p = protocol(uri);
      if (p === 'exec') return undefined;
      if (p === 'file') {
        // QEMU 8.x's `file:PATH,offset=N` writes at an offset in a file; not supported.
        if (/,offset=/.test(uri)) return `virtio-ts does not support 'offset' in file: migration URIs`;
        return uri.length > 5 ? undefined : 'file: migration needs a path';
      }
      return `virtio-ts-qemu does not support ${p}: migration (use exec:)`;
    },

    async write(uri: string, bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
      if (uri.startsWith('exec:')) {
        await run(uri.slice(5), 'outgoing', bytes, signal);
        return;
      }
      if (uri.startsWith('file:')) {
        try {
          const { writeFile } = await import('node:fs/promises');
          await writeFile(uri.slice(5), bytes, { mode: 0o660, ...(signal ? { signal } : {}) });
        } catch (e) {
          throw new Error(`Could not open '${uri.slice(5)}': ${strerror(e)}`);
        }
        return;
      }
      throw new Error(`virtio-ts-qemu does not support ${protocol(uri)}: migration (use exec:)`);
    },

    async read(uri: string, signal?: AbortSignal): Promise<Uint8Array> {
      if (uri.startsWith('exec:')) return run(uri.slice(5), 'incoming', undefined, signal);
      if (uri.startsWith('file:')) {
        try {
          const { readFile } = await import('node:fs/promises');
          return new Uint8Array(await readFile(uri.slice(5), signal ? { signal } : {}));
        } catch (e) {
          throw new Error(`Could not open '${uri.slice(5)}': ${strerror(e)}`);
        }
      }
      throw new Error(`virtio-ts-qemu does not support ${protocol(uri)}: migration (use exec:)`);
    },
  };
}
