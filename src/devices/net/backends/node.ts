/**
 * Node-only network backends with QEMU 7.2's wire formats, so a virtio-ts NIC talks to a real
 * QEMU (or to anything that speaks them):
 *
 * - UDP (`-netdev socket,udp=`/`mcast=` and `-netdev dgram` with inet addresses): one Ethernet
 *   frame per datagram, nothing else; frames go to one remote address (or the multicast group),
 *   and come from anyone. Multicast sockets loop their own frames back, as QEMU's do.
 * - streams (`-netdev socket,connect=`/`listen=` over TCP and `-netdev stream` over TCP or a unix
 *   socket): each frame as a big-endian 32-bit length and the frame. A listener serves one
 *   connection at a time and waits for the next when it closes; the backend's link is down while
 *   nothing is connected (frames from the NIC are dropped then, as QEMU's are).
 *
 * Received frames that the NIC cannot take yet: a stream is paused until they go (the peer then
 * waits, as QEMU stops reading the socket); a UDP socket cannot be paused, so they wait in the
 * NIC's bounded queue and the newest are dropped when it is full. Frames from the NIC are copied
 * before the socket holds them (the guest may reuse its buffer at once).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { unlinkSync } from 'node:fs';
import { NET_BUFSIZE } from '../constants.js';
import { strerror } from '../../strerror.js';
import { flushQueuedPackets, NetClient, sendPacket, type NetQueueLimits } from '../net-client.js';

/** An error opening a backend, worded as QEMU's. */
export class NetdevError extends Error {
  override name = 'NetdevError';
}

/** `HOST` as QEMU resolves it: empty for any address, digits first as IPv4, else by name. */
async function resolveV4(host: string): Promise<string> {
  if (host === '') return '0.0.0.0';
  if (/^\d/.test(host)) return host;
  try {
    const r = await lookup(host, { family: 4 });
    return r.address;
  } catch {
    throw new NetdevError(`can't resolve host address '${host}'`);
  }
}

function isMulticast(addr: string): boolean {
  const first = Number(addr.split('.')[0]);
  return first >= 224 && first <= 239;
}

export interface UdpNetBackendOptions {
  /** The netdev id (the client's name). */
  name: string;
  /** QEMU's model in `info network`: `socket` or `dgram`. */
  kind?: 'socket' | 'dgram';
  /** Where frames go. */
  remote: { host: string; port: number };
  /** Local address to bind (unicast); the multicast group's interface address (multicast). */
  local?: { host: string; port: number };
  /** Multicast: bind the group's port and join it (QEMU's `mcast=`). */
  multicast?: boolean;
  limits?: NetQueueLimits;
  /** Bytes of datagrams kept while the NIC holds a frame (default: Linux's rmem_default, 212992). */
  receiveBuffer?: number;
}

/** Linux's default socket receive buffer, and what it charges a small datagram beyond its bytes (its skb). */
const KERNEL_RMEM_DEFAULT = 212992;
const DATAGRAM_OVERHEAD = 768;

/** QEMU's UDP backends (`net_socket_udp_init`, `net_socket_mcast_create`, `net_init_dgram`). */
export class UdpNetBackend extends NetClient {
  private sock: UdpSocket | undefined;
  private remoteAddr = '';
  private remotePort = 0;
  /** Datagrams received and frames sent. */
  received = 0;
  sent = 0;
  /** Datagrams dropped because the stand-in for the kernel's receive buffer was full. */
  dropped = 0;
  // QEMU stops reading the socket while the NIC holds a frame, and the kernel keeps what comes
  // meanwhile (up to its receive buffer). Node cannot stop reading a UDP socket, so the
  // datagrams that arrive while a frame is held wait here, bounded as the kernel bounds them.
  private held = false;
  private readonly pending: Buffer[] = [];
  private pendingBytes = 0;
  private readonly pendingLimit: number;
  private readonly sentCb = () => this.resume();
  private drainScheduled = false;

  private constructor(opts: UdpNetBackendOptions) {
    super(opts.kind ?? 'socket', opts.name, opts.limits);
    this.pendingLimit = opts.receiveBuffer ?? KERNEL_RMEM_DEFAULT;
  }

  static async open(opts: UdpNetBackendOptions): Promise<UdpNetBackend> {
    const be = new UdpNetBackend(opts);
    await be.bind(opts);
    return be;
  }

  private async bind(opts: UdpNetBackendOptions): Promise<void> {
    this.remoteAddr = await resolveV4(opts.remote.host);
    this.remotePort = opts.remote.port;
    const mcast = opts.multicast === true;
    if (mcast && !isMulticast(this.remoteAddr)) {
      const n = this.remoteAddr.split('.').reduce((a, b) => a * 256 + Number(b), 0) >>> 0;
      throw new NetdevError(`specified mcastaddr ${this.remoteAddr} (0x${n.toString(16).padStart(8, '0')}) does not contain a multicast address`);
    }
    const localHost = opts.local ? await resolveV4(opts.local.host) : undefined;
    const sock = createSocket({ type: 'udp4', reuseAddr: true });
    this.sock = sock;
    const bindAddr = mcast ? this.remoteAddr : (localHost ?? '0.0.0.0');
    const bindPort = mcast ? this.remotePort : (opts.local?.port ?? 0);
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        sock.close();
        reject(new NetdevError(`can't bind ip=${bindAddr} to socket: ${strerror(e)}`));
      };
      sock.once('error', onError);
      sock.bind(bindPort, bindAddr, () => {
        sock.off('error', onError);
        resolve();
      });
    });
    if (mcast) {
      try {
        sock.addMembership(this.remoteAddr, localHost);
        // Several machines on one host hear each other (QEMU forces loopback too).
        sock.setMulticastLoopback(true);
        if (localHost) sock.setMulticastInterface(localHost);
      } catch (e) {
        sock.close();
        throw new NetdevError(`can't add socket to multicast group ${this.remoteAddr}: ${strerror(e)}`);
      }
    }
    sock.on('error', () => {
      /* ICMP errors of a peer that is not there yet: QEMU ignores them too */
    });
    sock.on('message', (msg) => this.fromSocket(msg));
  }

  private fromSocket(msg: Buffer): void {
    // QEMU reads a zero-length datagram as the end of the connection and stops reading; here
    // it is only ignored (docs/qemu-differences.md #73).
    if (msg.length === 0) return;
    this.received++;
    if (this.held || this.pending.length > 0) {
      const cost = msg.length + DATAGRAM_OVERHEAD;
      if (this.pendingBytes + cost > this.pendingLimit) {
        this.dropped++;
        return;
      }
      this.pending.push(msg);
      this.pendingBytes += cost;
      return;
    }
    if (sendPacket(this, msg, 0, msg.length, this.sentCb) === 0) this.held = true;
  }

  /** The held frame went (or was given up): read on, as QEMU's main loop does next. */
  private resume(): void {
    this.held = false;
    if (this.drainScheduled || this.pending.length === 0) return;
    this.drainScheduled = true;
    setImmediate(() => {
      this.drainScheduled = false;
      while (!this.held && this.pending.length > 0) {
        const msg = this.pending.shift()!;
        this.pendingBytes -= msg.length + DATAGRAM_OVERHEAD;
        if (sendPacket(this, msg, 0, msg.length, this.sentCb) === 0) this.held = true;
      }
    });
  }

  override receive(buf: Uint8Array, off: number, len: number): number {
    const sock = this.sock;
    if (!sock) return len;
    // The socket sends later: give it its own copy.
    sock.send(Buffer.from(buf.subarray(off, off + len)), this.remotePort, this.remoteAddr);
    this.sent++;
    return len;
  }

  /** The local port the socket is bound to. */
  get localPort(): number {
    return this.sock?.address().port ?? 0;
  }

  close(): void {
    try {
      this.sock?.close();
    } catch {
      /* already closed */
    }
    this.sock = undefined;
  }
}

export type StreamAddress = { type: 'inet'; host: string; port: number } | { type: 'unix'; path: string };

export interface StreamNetBackendOptions {
  name: string;
  /** `socket` (`connect=`/`listen=`) or `stream`. */
  kind?: 'socket' | 'stream';
  addr: StreamAddress;
  /** Listen (QEMU's `listen=` and `server=on`) or connect. */
  server: boolean;
  limits?: NetQueueLimits;
  /** Bytes the socket may hold unsent before frames from the NIC wait (default 1 MiB). */
  writeLimit?: number;
  /** NETDEV_STREAM_CONNECTED / NETDEV_STREAM_DISCONNECTED (only for `kind` stream, as QEMU). */
  onEvent?: (name: string, data: Record<string, unknown>) => void;
  /** QEMU's fprintf to stderr for an oversized length. */
  onError?: (message: string) => void;
}

/** QEMU's length-prefixed stream backends (`net/socket.c` TCP, `net/stream.c`). */
export class StreamNetBackend extends NetClient {
  private server: Server | undefined;
  private conn: Socket | undefined;
  // Reassembly of the incoming stream (QEMU's SocketReadState).
  private state: 0 | 2 = 0;
  private readonly lenBuf = new Uint8Array(4);
  private index = 0;
  private packetLen = 0;
  private readonly rbuf = new Uint8Array(NET_BUFSIZE);
  private paused = false;
  private readonly writeLimit: number;
  private readonly resumeCb = () => this.resumeReading();

  private constructor(private readonly opts: StreamNetBackendOptions) {
    super(opts.kind ?? 'stream', opts.name, opts.limits);
    this.writeLimit = opts.writeLimit ?? 1 << 20;
    // Nothing is connected yet: frames from the NIC are dropped (QEMU's link_down).
    this.linkDown = true;
  }

  static async open(opts: StreamNetBackendOptions): Promise<StreamNetBackend> {
    const be = new StreamNetBackend(opts);
    if (opts.server) await be.listen();
    else be.connect();
    return be;
  }

  private async listen(): Promise<void> {
    const a = this.opts.addr;
    const server = createServer((s) => this.accept(s));
    this.server = server;
    if (a.type === 'unix') {
      try {
        unlinkSync(a.path);
      } catch {
        /* not there */
      }
    }
    const host = a.type === 'inet' ? await resolveV4(a.host) : undefined;
    await new Promise<void>((resolve, reject) => {
      const onError = (e: Error) => {
        reject(new NetdevError(a.type === 'unix' ? `Failed to bind socket to ${a.path}: ${strerror(e)}` : `can't bind ip=${host} to socket: ${strerror(e)}`));
      };
      server.once('error', onError);
      const done = () => {
        server.off('error', onError);
        resolve();
      };
      if (a.type === 'unix') server.listen(a.path, done);
      else server.listen(a.port, host, done);
    });
  }

  private accept(s: Socket): void {
    if (this.conn) {
      // One connection at a time: QEMU stops accepting while one is served.
      s.destroy();
      return;
    }
    this.attach(s);
  }

  private connect(): void {
    const a = this.opts.addr;
    const s = a.type === 'unix' ? createConnection(a.path) : createConnection({ host: a.host === '' ? '127.0.0.1' : a.host, port: a.port });
    s.once('connect', () => this.attach(s));
    s.once('error', () => s.destroy());
  }

  private attach(s: Socket): void {
    this.conn = s;
    this.state = 0;
    this.index = 0;
    this.paused = false;
    s.setNoDelay(true);
    this.linkDown = false;
    s.on('data', (d: Buffer) => this.fromSocket(d));
    s.on('drain', () => flushQueuedPackets(this));
    const gone = () => this.detach(s);
    s.on('close', gone);
    s.on('error', gone);
    if (this.opts.kind === 'stream') {
      const a = this.opts.addr;
      const addr = a.type === 'unix' ? { path: a.path, type: 'unix' } : { port: String(s.remotePort ?? a.port), ipv6: false, host: s.remoteAddress ?? a.host, type: 'inet' };
      this.opts.onEvent?.('NETDEV_STREAM_CONNECTED', { 'netdev-id': this.name, addr });
    }
  }

  private detach(s: Socket): void {
    if (this.conn !== s) return;
    this.conn = undefined;
    this.linkDown = true;
    this.state = 0;
    this.index = 0;
    s.destroy();
    if (this.opts.kind === 'stream') this.opts.onEvent?.('NETDEV_STREAM_DISCONNECTED', { 'netdev-id': this.name });
  }

  /** QEMU's `net_fill_rstate`: reassemble length-prefixed frames. */
  private fromSocket(d: Buffer): void {
    let p = 0;
    while (p < d.length) {
      if (this.state === 0) {
        const n = Math.min(4 - this.index, d.length - p);
        this.lenBuf.set(d.subarray(p, p + n), this.index);
        p += n;
        this.index += n;
        if (this.index === 4) {
          this.packetLen = ((this.lenBuf[0]! << 24) | (this.lenBuf[1]! << 16) | (this.lenBuf[2]! << 8) | this.lenBuf[3]!) >>> 0;
          this.index = 0;
          this.state = 2;
        }
      }
      if (this.state === 2) {
        const n = Math.min(this.packetLen - this.index, d.length - p);
        if (this.index + n > this.rbuf.length) {
          this.opts.onError?.('serious error: oversized packet received,connection terminated.');
          const s = this.conn;
          if (s) this.detach(s);
          return;
        }
        this.rbuf.set(d.subarray(p, p + n), this.index);
        this.index += n;
        p += n;
        if (this.index >= this.packetLen) {
          this.index = 0;
          this.state = 0;
          if (sendPacket(this, this.rbuf, 0, this.packetLen, this.resumeCb) === 0) {
            // The NIC holds the frame (copied into its queue): stop reading until it goes.
            this.conn?.pause();
            this.paused = true;
            if (p < d.length) this.conn?.unshift(d.subarray(p));
            return;
          }
        }
      }
    }
  }

  private resumeReading(): void {
    if (!this.paused) return;
    this.paused = false;
    this.conn?.resume();
  }

  override receive(buf: Uint8Array, off: number, len: number): number {
    const s = this.conn;
    if (!s) return len;
    if (s.writableLength > this.writeLimit) return 0; // resumed on 'drain'
    const out = Buffer.allocUnsafe(4 + len);
    out.writeUInt32BE(len, 0);
    out.set(buf.subarray(off, off + len), 4);
    s.write(out);
    return len;
  }

  /** The listening port (TCP server). */
  get localPort(): number {
    const a = this.server?.address();
    return a && typeof a === 'object' ? a.port : 0;
  }

  /** Whether a peer is connected. */
  get connected(): boolean {
    return this.conn !== undefined;
  }

  close(): void {
    this.conn?.destroy();
    this.conn = undefined;
    this.server?.close();
    this.server = undefined;
  }
}

/** A `-netdev` spec as virtio-ts-qemu opens it (the subset of `NetdevSpec` with host sockets). */
export type HostNetdevSpec =
  | { type: 'socket'; id: string; mode: 'udp'; remote: { host: string; port: number }; local: { host: string; port: number } }
  | { type: 'socket'; id: string; mode: 'mcast'; group: { host: string; port: number }; localaddr: string | undefined }
  | { type: 'socket'; id: string; mode: 'connect' | 'listen'; addr: { host: string; port: number } }
  | { type: 'dgram'; id: string; mode: 'udp'; local: StreamAddress | { type: 'fd'; str: string }; remote: StreamAddress | { type: 'fd'; str: string } }
  | { type: 'dgram'; id: string; mode: 'mcast'; remote: { type: 'inet'; host: string; port: number }; local: StreamAddress | { type: 'fd'; str: string } | undefined }
  | { type: 'stream'; id: string; server: boolean; addr: StreamAddress | { type: 'fd'; str: string } };

export interface OpenNetdevOptions {
  onEvent?: (name: string, data: Record<string, unknown>) => void;
  onError?: (message: string) => void;
  limits?: NetQueueLimits;
}

/** Open the host side of a `-netdev` (QEMU's `net_init_socket`, `net_init_dgram`, `net_init_stream`). */
export async function openNetdev(spec: HostNetdevSpec, opts: OpenNetdevOptions = {}): Promise<UdpNetBackend | StreamNetBackend> {
  const limits = opts.limits ? { limits: opts.limits } : {};
  if (spec.type === 'socket') {
    if (spec.mode === 'udp') return UdpNetBackend.open({ name: spec.id, remote: spec.remote, local: spec.local, ...limits });
    if (spec.mode === 'mcast') return UdpNetBackend.open({ name: spec.id, remote: spec.group, multicast: true, ...(spec.localaddr !== undefined ? { local: { host: spec.localaddr, port: 0 } } : {}), ...limits });
    return StreamNetBackend.open({ name: spec.id, kind: 'socket', addr: { type: 'inet', ...spec.addr }, server: spec.mode === 'listen', ...limits, ...(opts.onError ? { onError: opts.onError } : {}) });
  }
  if (spec.type === 'dgram') {
    if (spec.mode === 'mcast') {
      const local = spec.local && spec.local.type === 'inet' ? { local: { host: spec.local.host, port: 0 } } : {};
      return UdpNetBackend.open({ name: spec.id, kind: 'dgram', remote: spec.remote, multicast: true, ...local, ...limits });
    }
    if (spec.local.type !== 'inet' || spec.remote.type !== 'inet') throw new NetdevError('dgram: only inet addresses are supported by virtio-ts-qemu');
    return UdpNetBackend.open({ name: spec.id, kind: 'dgram', remote: spec.remote, local: spec.local, ...limits });
  }
  if (spec.addr.type === 'fd') throw new NetdevError('stream: fd addresses are not supported by virtio-ts-qemu');
  return StreamNetBackend.open({
    name: spec.id,
    kind: 'stream',
    addr: spec.addr,
    server: spec.server,
    ...limits,
    ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
    ...(opts.onError ? { onError: opts.onError } : {}),
  });
}
