/**
 * Character devices for virtio-ts-qemu (QEMU's chardev/char-socket.c, char-stdio.c,
 * char-null.c): byte channels the qtest and QMP servers talk through. Node-only; never exported
 * from src/index.ts.
 *
 * - `socket` client (`-qtest unix:PATH`): connects at start-up, as QEMU does; failure is fatal.
 * - `socket` server (`unix:PATH,server=on[,wait=off]`): listens (replacing a stale socket file);
 *   with `wait=on` start-up waits for the first client. One client at a time: a second
 *   connection waits until the first closes, as in QEMU's backlog.
 * - `stdio`: stdin/stdout. `null`: swallows output, never sends input.
 *
 * Bytes are passed as latin1 strings (one character per byte).
 */
import { closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { ChardevSpec } from './cmdline.js';
import { NullChardev, type CharBackend } from '../devices/console/chardev.js';
import { FileChardev, SocketChardev, StreamChardev } from '../devices/console/backends/node.js';
import { strerror } from '../devices/strerror.js';

/** strerror() text for a Node error (one table for every Node backend: devices/strerror.ts). */
export { strerror };

export interface CharChannel {
  readonly id: string;
  /** Send bytes (latin1 string). Dropped while no peer is connected. */
  write(text: string): void;
  /** Resolves once everything written so far has been handed to the OS. */
  flush(): Promise<void>;
  /** Stop: close connections and listening sockets. */
  close(): void;
  onData: ((chunk: string) => void) | undefined;
  onOpen: (() => void) | undefined;
  onClose: (() => void) | undefined;
  /** True while a peer is connected. */
  readonly connected: boolean;
}

/** Start-up failure: the message as QEMU prints it (after the program name). */
export class ChardevError extends Error {
  override name = 'ChardevError';
}


function describe(spec: ChardevSpec): string {
  if (spec.backend === 'file') return spec.path;
  if (spec.backend !== 'socket') return spec.backend;
  return spec.path !== undefined ? spec.path : `${spec.host}:${spec.port}`;
}

class SocketChannel implements CharChannel {
  onData: ((chunk: string) => void) | undefined;
  onOpen: (() => void) | undefined;
  onClose: (() => void) | undefined;
  private sock: Socket | undefined;
  private readonly waiting: Socket[] = [];
  server: Server | undefined;
  private closed = false;

  constructor(readonly id: string) {}

  get connected(): boolean {
    return this.sock !== undefined;
  }

  /** Bytes read by a client socket's `onread` buffer (see `directReads`). */
  deliver(sock: Socket, text: string): void {
    if (sock === this.sock) this.onData?.(text);
  }

  /**
   * `direct`: the socket delivers its bytes through `onread` (`deliver`), not as 'data' events.
   */
  attach(sock: Socket, direct = false): void {
    if (this.closed) {
      sock.destroy();
      return;
    }
    if (this.sock) {
      // QEMU leaves further clients in the listen backlog until the current one goes away.
      sock.pause();
      this.waiting.push(sock);
      sock.once('close', () => {
        const i = this.waiting.indexOf(sock);
        if (i >= 0) this.waiting.splice(i, 1);
      });
      return;
    }
    this.sock = sock;
    sock.setNoDelay?.(true);
    if (!direct) {
      sock.setEncoding('latin1');
      sock.on('data', (d: string) => this.onData?.(d));
    }
    sock.on('error', () => undefined);
    sock.once('close', () => {
      if (this.sock !== sock) return;
      this.sock = undefined;
      this.onClose?.();
      const next = this.waiting.shift();
      if (next && this.server) {
        next.resume();
        this.attach(next);
      }
    });
    this.onOpen?.();
    sock.resume();
  }

  write(text: string): void {
    const s = this.sock;
    if (s && !s.destroyed) s.write(text, 'latin1');
  }

  flush(): Promise<void> {
    const s = this.sock;
    if (!s || s.destroyed || s.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => s.write('', () => resolve()));
  }

  close(): void {
    this.closed = true;
    this.sock?.end();
    this.sock?.destroy();
    for (const w of this.waiting) w.destroy();
    this.server?.close();
  }
}

class StdioChannel implements CharChannel {
  onData: ((chunk: string) => void) | undefined;
  onOpen: (() => void) | undefined;
  onClose: (() => void) | undefined;
  connected = true;

  constructor(readonly id: string) {}

  start(): void {
    process.stdin.setEncoding('latin1');
    process.stdin.on('data', (d: string) => this.onData?.(d));
    // QEMU keeps running when stdin reaches its end; so do we.
    process.stdin.on('end', () => {
      this.connected = false;
      this.onClose?.();
    });
    process.stdout.on('error', () => undefined);
    this.onOpen?.();
  }

  write(text: string): void {
    process.stdout.write(text, 'latin1');
  }

  flush(): Promise<void> {
    return new Promise((resolve) => process.stdout.write('', () => resolve()));
  }

  close(): void {
    process.stdin.pause();
  }
}

class NullChannel implements CharChannel {
  onData: ((chunk: string) => void) | undefined;
  onOpen: (() => void) | undefined;
  onClose: (() => void) | undefined;
  readonly connected = true;
  constructor(readonly id: string) {}
  start(): void {
    this.onOpen?.();
  }
  write(): void {}
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {}
}

/** Output-only text channel on a file (a monitor or qtest on `-chardev file`). */
class FileChannel implements CharChannel {
  onData: ((chunk: string) => void) | undefined;
  onOpen: (() => void) | undefined;
  onClose: (() => void) | undefined;
  readonly connected = true;
  constructor(readonly id: string, private fd: number | undefined) {}
  start(): void {
    this.onOpen?.();
  }
  write(text: string): void {
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, Buffer.from(text, 'latin1'));
    } catch {
      /* QEMU goes on when a log file fills up */
    }
  }
  flush(): Promise<void> {
    return Promise.resolve();
  }
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

function openFile(path: string, append: boolean): number {
  try {
    return openSync(path, append ? 'a' : 'w', 0o666);
  } catch (e) {
    throw new ChardevError(`Could not open '${path}': ${strerror(e)}`);
  }
}

/**
 * Open `spec` as a device's chardev (a virtio-serial port's backend): sockets listen or connect
 * now (client failures worded as QEMU's), files are created, stdio takes stdin/stdout.
 */
export async function openDeviceChardev(spec: ChardevSpec, opts: OpenOptions = {}): Promise<CharBackend> {
  switch (spec.backend) {
    case 'null':
      return new NullChardev(spec.id);
    case 'stdio':
      return new StreamChardev(spec.id, process.stdin, process.stdout);
    case 'file':
      try {
        return new FileChardev(spec.id, spec.path, { append: spec.append });
      } catch (e) {
        throw new ChardevError(`Could not open '${spec.path}': ${strerror(e)}`);
      }
    case 'socket': {
      const target = describe(spec);
      const where = { ...(spec.path !== undefined ? { path: spec.path } : {}), ...(spec.host !== undefined ? { host: spec.host } : {}), ...(spec.port !== undefined ? { port: spec.port } : {}) };
      if (!spec.server) {
        try {
          return await SocketChardev.connect(spec.id, where);
        } catch (e) {
          throw new ChardevError(`Failed to connect to '${target}': ${strerror(e)}`);
        }
      }
      let ch: SocketChardev;
      try {
        ch = await SocketChardev.listen(spec.id, where);
      } catch (e) {
        throw new ChardevError(`Failed to bind socket to ${target}: ${strerror(e)}`);
      }
      if (spec.wait && !ch.opened) {
        const w = spec.path !== undefined ? `unix:${spec.path}` : `tcp:${target}`;
        opts.onWaiting?.(`info: QEMU waiting for connection on: disconnected:${w},server=on`);
        await new Promise<void>((resolve) => {
          const probe = { canRead: () => 0, read: () => 0, event: () => resolve() };
          ch.attach(probe);
        });
        ch.attach(undefined);
      }
      return ch;
    }
  }
}

/** An opened channel; call `start()` once the consumer's handlers are installed. */
export interface PendingChannel {
  channel: CharChannel;
  start(): void;
}

export interface OpenOptions {
  /** Printed while a `wait=on` server waits for its first client (QEMU's info line). */
  onWaiting?: (message: string) => void;
}

/**
 * Open `spec`. Client sockets connect now (rejecting with QEMU's "Failed to connect to ..."),
 * server sockets listen now (and with wait=on resolve only once a client is there).
 */
export async function openChardev(spec: ChardevSpec, opts: OpenOptions = {}): Promise<PendingChannel> {
  switch (spec.backend) {
    case 'null': {
      const ch = new NullChannel(spec.id);
      return { channel: ch, start: () => ch.start() };
    }
    case 'stdio': {
      const ch = new StdioChannel(spec.id);
      return { channel: ch, start: () => ch.start() };
    }
    case 'file': {
      const ch = new FileChannel(spec.id, openFile(spec.path, spec.append));
      return { channel: ch, start: () => ch.start() };
    }
    case 'socket': {
      const ch = new SocketChannel(spec.id);
      const target = describe(spec);
      if (!spec.server) {
        // Reads go into one reused buffer, handed straight to the channel: no Readable stream
        // work per chunk, which costs tens of µs per command while Node's own code is still
        // cold (a harness's short scripts run in that state; issue 11).
        let s: Socket;
        const buffer = Buffer.allocUnsafe(65536);
        const onread = {
          buffer,
          callback: (n: number): boolean => {
            ch.deliver(s, buffer.toString('latin1', 0, n));
            return true;
          },
        };
        const sock = await new Promise<Socket>((resolve, reject) => {
          s = spec.path !== undefined ? connect({ path: spec.path, onread }) : connect({ host: spec.host ?? 'localhost', port: spec.port ?? 0, onread });
          s.pause();
          s.once('connect', () => {
            s.removeAllListeners('error');
            resolve(s);
          });
          s.once('error', (e) => reject(new ChardevError(`Failed to connect to '${target}': ${strerror(e)}`)));
        });
        return { channel: ch, start: () => ch.attach(sock, true) };
      }
      const server = createServer({ pauseOnConnect: true });
      ch.server = server;
      const early: Socket[] = [];
      let started = false;
      server.on('connection', (s) => {
        if (started) ch.attach(s);
        else early.push(s);
      });
      if (spec.path !== undefined) {
        try {
          unlinkSync(spec.path);
        } catch {
          /* not there */
        }
      }
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e) => reject(new ChardevError(`Failed to bind socket to ${target}: ${strerror(e)}`)));
        if (spec.path !== undefined) server.listen(spec.path, () => resolve());
        else server.listen(spec.port ?? 0, spec.host || undefined, () => resolve());
      });
      server.removeAllListeners('error');
      server.on('error', () => undefined);
      if (spec.wait && early.length === 0) {
        const where = spec.path !== undefined ? `unix:${spec.path}` : `tcp:${target}`;
        opts.onWaiting?.(`info: QEMU waiting for connection on: disconnected:${where},server=on`);
        await new Promise<void>((resolve) => server.once('connection', () => resolve()));
      }
      return {
        channel: ch,
        start: () => {
          started = true;
          for (const s of early.splice(0)) ch.attach(s);
        },
      };
    }
  }
}
