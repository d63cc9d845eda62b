/**
 * Node chardevs for virtio-serial ports (QEMU's `chardev/char-stdio.c`, `char-socket.c`,
 * `char-file.c`): Node streams (stdin/stdout or any pair), unix sockets (server or client) and
 * output files. Node-only: exported from `virtio-ts/node`, never from the browser entry.
 *
 * Both directions are bounded. Input a port cannot take yet waits in the chardev (at most
 * `inputLimit` bytes plus one chunk) and the source stream is paused meanwhile, so the kernel's
 * socket buffer fills and the peer's writes block. Output goes to a socket's descriptor directly
 * (what the kernel refuses, `write` refuses), or, for streams, into Node's queue up to
 * `outputLimit` bytes; either way a full chardev throttles a generic port until it drains.
 */
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { CharBackendBase, DEFAULT_CHARDEV_BUFFER, type ChardevOptions } from '../chardev.js';

export interface NodeChardevOptions extends ChardevOptions {
  /** Most output bytes queued in Node before `write` refuses more (default 64 KiB). */
  outputLimit?: number;
}

/**
 * Write as much of `data` as fits under `limit` bytes queued in Node. The kernel often takes a
 * write at once (Node's queue is empty again after it), so the room is measured again after each
 * write. Returns the bytes taken; when that is less than offered, Node's queue is at the limit
 * and 'drain' will follow (or, if Node will not emit it, `wake` is called on the next turn).
 */
function writeBounded(out: Writable, data: Uint8Array, limit: number, wake: () => void): number {
  let done = 0;
  while (done < data.length) {
    const room = limit - out.writableLength;
    if (room <= 0) break;
    const n = Math.min(data.length - done, room);
    // Node keeps the buffer until it is written: copy, since `data` is guest RAM.
    out.write(Buffer.from(data.subarray(done, done + n)));
    done += n;
  }
  if (done < data.length && !out.writableNeedDrain) setImmediate(wake);
  return done;
}

/** The descriptor under a Node socket (`_handle.fd`, not a public API: undefined when absent). */
function descriptorOf(s: Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

function outputLimitOf(id: string, opts: NodeChardevOptions): number {
  const limit = opts.outputLimit ?? DEFAULT_CHARDEV_BUFFER;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`${id}: outputLimit must be a positive integer`);
  return limit;
}

/**
 * Node streams: bytes from `input` go to the guest, the guest's bytes to `output` (QEMU's
 * `-chardev stdio` with `process.stdin`/`process.stdout`). The end of `input` closes the host
 * side, as QEMU's fd chardevs do on EOF, once what it sent has reached the guest.
 */
export class StreamChardev extends CharBackendBase {
  readonly outputLimit: number;
  private ended = false;

  constructor(id: string, private readonly input: Readable | undefined, private readonly output: Writable | undefined, opts: NodeChardevOptions = {}) {
    super(id, opts);
    this.outputLimit = outputLimitOf(id, opts);
    this.setOpened(true);
    if (input) {
      input.on('data', (chunk: Buffer | string) => this.enqueue(typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : chunk));
      input.on('end', () => {
        this.ended = true;
        this.onInputDrained(() => this.setOpened(false));
      });
      input.on('error', () => undefined);
    }
    if (output) {
      output.on('drain', () => this.signalWritable());
      output.on('error', () => undefined);
    }
  }

  write(data: Uint8Array): number {
    const out = this.output;
    if (!out || out.destroyed || !out.writable) return data.length;
    return writeBounded(out, data, this.outputLimit, () => this.signalWritable());
  }

  protected override pauseSource(): void {
    this.input?.pause();
  }
  protected override resumeSource(): void {
    if (!this.ended) this.input?.resume();
  }

  override close(): void {
    if (this.closed) return;
    this.input?.pause();
    super.close();
  }
}

export interface SocketChardevOptions extends NodeChardevOptions {
  /** Unix socket path (or `host` + `port` for TCP). */
  path?: string;
  host?: string;
  port?: number;
}

/**
 * A socket (QEMU's `-chardev socket`): as a server (`listen`) it takes one client at a time and
 * is open while that client is connected (further clients wait, as in QEMU's listen backlog); as
 * a client (`connect`) it is open once connected. Bytes the peer sent before it went away still
 * reach the guest before the host side closes.
 */
export class SocketChardev extends CharBackendBase {
  readonly outputLimit: number;
  private sock: Socket | undefined;
  /** The current peer went away; closing waits for its input to reach the guest. */
  private draining = false;
  private readonly waiting: Socket[] = [];
  private server: Server | undefined;

  private constructor(id: string, opts: NodeChardevOptions) {
    super(id, opts);
    this.outputLimit = outputLimitOf(id, opts);
  }

  /** Listen (a stale socket file is replaced). Resolves once listening. */
  static async listen(id: string, opts: SocketChardevOptions): Promise<SocketChardev> {
    const ch = new SocketChardev(id, opts);
    const server = createServer({ pauseOnConnect: true });
    ch.server = server;
    server.on('connection', (s) => ch.offerClient(s));
    if (opts.path !== undefined) {
      try {
        unlinkSync(opts.path);
      } catch {
        /* not there */
      }
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      if (opts.path !== undefined) server.listen(opts.path, () => resolve());
      else server.listen(opts.port ?? 0, opts.host || undefined, () => resolve());
    });
    server.removeAllListeners('error');
    server.on('error', () => undefined);
    return ch;
  }

  /** Connect as a client. Rejects with the socket error. */
  static async connect(id: string, opts: SocketChardevOptions): Promise<SocketChardev> {
    const ch = new SocketChardev(id, opts);
    const sock = await new Promise<Socket>((resolve, reject) => {
      const s = opts.path !== undefined ? connect({ path: opts.path }) : connect({ host: opts.host ?? 'localhost', port: opts.port ?? 0 });
      s.pause();
      s.once('connect', () => {
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', reject);
    });
    ch.offerClient(sock);
    return ch;
  }

  /** The address a server listens on (for TCP port 0). */
  address(): ReturnType<Server['address']> | undefined {
    return this.server?.address();
  }

  private offerClient(s: Socket): void {
    if (this.closed) {
      s.destroy();
      return;
    }
    if (this.sock || this.draining) {
      s.pause();
      this.waiting.push(s);
      s.once('close', () => {
        const i = this.waiting.indexOf(s);
        if (i >= 0) this.waiting.splice(i, 1);
      });
      return;
    }
    this.sock = s;
    s.on('data', (d: Buffer) => this.enqueue(d));
    s.on('drain', () => this.signalWritable());
    s.on('error', () => undefined);
    s.once('close', () => {
      if (this.sock !== s) return;
      this.sock = undefined;
      this.draining = true;
      // A watch on a socket also fires on hang-up (QEMU's G_IO_HUP).
      this.signalWritable();
      this.onInputDrained(() => {
        this.draining = false;
        this.setOpened(false);
        const next = this.waiting.shift();
        if (next) {
          next.resume();
          this.offerClient(next);
        }
      });
    });
    this.setOpened(true);
    s.resume();
  }

  /**
   * Bytes go straight to the socket's descriptor when Node exposes it, so that what `write`
   * takes is what the kernel took, as in QEMU: nothing taken can be lost with this process (say,
   * when it quits after a migration while its peer is not reading). A full socket takes nothing
   * (EAGAIN); the port then waits, and a timer (1 ms, doubling to 50 ms) tells it to try again,
   * since Node has no "writable" event for a descriptor it does not write itself. Without a
   * descriptor, Node's queue is used, bounded by `outputLimit`.
   */
  write(data: Uint8Array): number {
    const s = this.sock;
    // No peer: QEMU's socket chardev reports the bytes written and they go nowhere.
    if (!s || s.destroyed) return data.length;
    const fd = descriptorOf(s);
    // Bytes already queued in Node go first, to keep the order.
    if (fd === undefined || s.writableLength > 0) return writeBounded(s, data, this.outputLimit, () => this.signalWritable());
    let n: number;
    try {
      n = writeSync(fd, data);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
        this.retryLater();
        return 0;
      }
      // The peer went away (EPIPE, ECONNRESET): its close event follows; the bytes go nowhere.
      return data.length;
    }
    if (n < data.length) this.retryLater();
    else this.retryDelay = 1;
    return n;
  }

  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private retryDelay = 1;

  private retryLater(): void {
    if (this.retryTimer) return;
    const t = setTimeout(() => {
      this.retryTimer = undefined;
      this.signalWritable();
    }, this.retryDelay);
    t.unref?.();
    this.retryTimer = t;
    this.retryDelay = Math.min(50, this.retryDelay * 2);
  }

  protected override pauseSource(): void {
    this.sock?.pause();
  }
  protected override resumeSource(): void {
    this.sock?.resume();
  }

  override close(): void {
    if (this.closed) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    this.sock?.destroy();
    this.sock = undefined;
    for (const w of this.waiting.splice(0)) w.destroy();
    this.server?.close();
    super.close();
  }
}

/**
 * Output to a file (QEMU's `-chardev file,path=`): created (mode 0666 less the umask) or
 * truncated, or appended to. Writes are synchronous, as QEMU's are; a failed write (a full disk)
 * is counted in `writeErrors` and its bytes are reported taken, so a port does not wait for ever.
 */
export class FileChardev extends CharBackendBase {
  private fd: number | undefined;
  writeErrors = 0;
  lastError: string | undefined;

  constructor(id: string, readonly path: string, opts: ChardevOptions & { append?: boolean } = {}) {
    super(id, opts);
    this.fd = openSync(path, opts.append ? 'a' : 'w', 0o666);
    this.setOpened(true);
  }

  write(data: Uint8Array): number {
    if (this.fd === undefined) return data.length;
    let done = 0;
    try {
      while (done < data.length) done += writeSync(this.fd, data, done, data.length - done);
    } catch (e) {
      this.writeErrors++;
      this.lastError = e instanceof Error ? e.message : String(e);
      return data.length;
    }
    return done;
  }

  override close(): void {
    if (this.fd !== undefined) {
      try {
        closeSync(this.fd);
      } catch {
        /* already closed */
      }
      this.fd = undefined;
    }
    super.close();
  }
}
