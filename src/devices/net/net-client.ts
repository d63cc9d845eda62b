/**
 * The net layer between a NIC and what it is connected to, as QEMU 7.2 has it (`net/net.c`,
 * `net/queue.c`): every end is a `NetClient` with one peer; a frame sent by a client goes to its
 * peer's incoming queue, which delivers it at once when the peer can take it and otherwise keeps
 * it (bounded) until the peer asks for it (`flushQueuedPackets`, which virtio-net calls when the
 * guest posts receive buffers). A receiver that answers 0 ("not now") has its receiving disabled
 * until the next flush, exactly as QEMU's `receive_disabled`.
 *
 * Frames are passed as (bytes, offset, length) and are valid only during the call: a receiver
 * that keeps one copies it, and the queue copies what it holds. The hot path (a frame delivered
 * straight through) therefore allocates nothing.
 *
 * No Node imports: part of the browser bundle.
 */
import { NET_QUEUE_MAXLEN } from './constants.js';

/**
 * Told when a frame that had to wait went through (`len` > 0) or was given up (`len` ≤ 0): the
 * sender may then read more (QEMU's `NetPacketSent`, which socket backends use to resume).
 */
export type NetPacketSent = (sender: NetClient, len: number) => void;

/** The kinds of client, as QEMU's `NetClientDriver` names them. */
export type NetClientKind = 'nic' | 'hubport' | 'socket' | 'stream' | 'dgram' | 'callback';

/** What a NIC is connected to: one net client per queue pair (QEMU's `peers.ncs`). */
export interface NetBackend {
  readonly netClients: readonly NetClient[];
}

/** Bounds of an incoming queue. */
export interface NetQueueLimits {
  /** Frames held at most (QEMU's `nq_maxlen`, 10000). */
  maxFrames?: number;
  /** Bytes held at most (16 MiB by default; QEMU has no byte bound). */
  maxBytes?: number;
}

interface NetPacket {
  sender: NetClient;
  data: Uint8Array;
  sent: NetPacketSent | undefined;
}

const DEFAULT_MAX_BYTES = 16 << 20;

/**
 * QEMU's `NetQueue`: the frames waiting for one client. Appending a frame with no completion
 * callback to a full queue drops that frame (the newest, as QEMU does) and counts it; a frame
 * with a callback is always kept, because its sender stops sending until the callback runs.
 */
export class NetQueue {
  private packets: NetPacket[] = [];
  private head = 0;
  private bytes = 0;
  /** QEMU's `delivering`: a delivery is in progress, so frames arriving now are queued. */
  delivering = false;
  /** Frames refused because the queue was full. */
  dropped = 0;
  /** Frames given up by a purge. */
  purged = 0;
  readonly maxFrames: number;
  readonly maxBytes: number;

  constructor(readonly owner: NetClient, limits: NetQueueLimits = {}) {
    this.maxFrames = Math.max(1, Math.floor(limits.maxFrames ?? NET_QUEUE_MAXLEN));
    this.maxBytes = Math.max(1, Math.floor(limits.maxBytes ?? DEFAULT_MAX_BYTES));
  }

  /** Frames waiting. */
  get length(): number {
    return this.packets.length - this.head;
  }

  /** Bytes waiting. */
  get byteLength(): number {
    return this.bytes;
  }

  /** QEMU's `qemu_net_queue_append`: keep a copy of the frame, unless full and nobody waits for it. */
  append(sender: NetClient, buf: Uint8Array, off: number, len: number, sent: NetPacketSent | undefined): void {
    if (!sent && (this.length >= this.maxFrames || this.bytes + len > this.maxBytes)) {
      this.dropped++;
      return;
    }
    this.packets.push({ sender, data: buf.slice(off, off + len), sent });
    this.bytes += len;
  }

  /** QEMU's `qemu_deliver_packet_iov`: hand one frame to the owner. */
  private deliver(buf: Uint8Array, off: number, len: number): number {
    const nc = this.owner;
    if (nc.linkDown) return len;
    if (nc.receiveDisabled) return 0;
    this.delivering = true;
    let ret: number;
    try {
      ret = nc.receive(buf, off, len);
    } finally {
      this.delivering = false;
    }
    if (ret === 0) nc.receiveDisabled = true;
    return ret;
  }

  /**
   * QEMU's `qemu_net_queue_send`: deliver now if the owner can take it, else queue it. Returns
   * the frame's length when it went (or was dropped by a link down), 0 when it waits.
   */
  send(sender: NetClient, buf: Uint8Array, off: number, len: number, sent: NetPacketSent | undefined): number {
    if (this.delivering || !canSendPacket(sender)) {
      this.append(sender, buf, off, len, sent);
      return 0;
    }
    const ret = this.deliver(buf, off, len);
    if (ret === 0) {
      this.append(sender, buf, off, len, sent);
      return 0;
    }
    this.flush();
    return ret;
  }

  /**
   * QEMU's `qemu_net_queue_flush`: deliver waiting frames in order until the owner says "not
   * now". Returns true when the queue emptied. Each frame is delivered at most once per call, so
   * the work is bounded by the queue's length.
   */
  flush(): boolean {
    if (this.delivering) return false;
    while (this.head < this.packets.length) {
      const p = this.packets[this.head]!;
      const ret = this.deliver(p.data, 0, p.data.length);
      if (ret === 0) return false;
      this.take();
      if (p.sent) p.sent(p.sender, ret);
    }
    return true;
  }

  /** QEMU's `qemu_net_queue_purge`: give up the frames `from` sent (all when undefined). */
  purge(from?: NetClient): void {
    const keep: NetPacket[] = [];
    const gone: NetPacket[] = [];
    for (let i = this.head; i < this.packets.length; i++) {
      const p = this.packets[i]!;
      if (from === undefined || p.sender === from) gone.push(p);
      else keep.push(p);
    }
    this.packets = keep;
    this.head = 0;
    this.bytes = keep.reduce((n, p) => n + p.data.length, 0);
    this.purged += gone.length;
    for (const p of gone) p.sent?.(p.sender, 0);
  }

  private take(): void {
    const p = this.packets[this.head]!;
    this.bytes -= p.data.length;
    this.head++;
    if (this.head === this.packets.length) {
      this.packets = [];
      this.head = 0;
    } else if (this.head > 64 && this.head * 2 > this.packets.length) {
      this.packets = this.packets.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * One end of a link (QEMU's `NetClientState`): a NIC queue, a hub port, a socket backend, an
 * embedder's callback. Subclasses say whether they can take a frame and take it.
 */
export abstract class NetClient implements NetBackend {
  peer: NetClient | undefined;
  /** QEMU's `link_down`: frames sent by or to a client whose link is down are dropped. */
  linkDown = false;
  /** The last `receive` answered 0; frames wait until the next flush. */
  receiveDisabled = false;
  /** Queue pair this client serves on a multiqueue NIC (QEMU's `queue_index`). */
  queueIndex = 0;
  /** Frames waiting for this client. */
  readonly incoming: NetQueue;

  constructor(readonly kind: NetClientKind, readonly name: string, limits?: NetQueueLimits) {
    this.incoming = new NetQueue(this, limits);
  }

  get netClients(): readonly NetClient[] {
    return [this];
  }

  /** Whether a frame could be taken now (QEMU's `can_receive`; true when absent). */
  canReceive(): boolean {
    return true;
  }

  /**
   * Take one frame `buf[off, off+len)`: return `len` when taken (or deliberately dropped), 0 to
   * have it (and later ones) wait until `flushQueuedPackets`, a negative value to drop it.
   * The bytes are valid only during the call.
   */
  abstract receive(buf: Uint8Array, off: number, len: number): number;

  /** The link of this client or its peer changed (QEMU's `link_status_changed`). */
  linkStatusChanged(): void {}

  /**
   * The peer can take frames again: deliver what waits to reach it through this client. Only a
   * hub port has such frames (those its other ports queued, QEMU's `net_hub_flush`).
   */
  flushSources(): void {}

  /** Send a frame to the peer (QEMU's `qemu_send_packet_async`). */
  send(buf: Uint8Array, off = 0, len = buf.length - off, sent?: NetPacketSent): number {
    return sendPacket(this, buf, off, len, sent);
  }
}

/** Connect two clients (QEMU's `qemu_net_client_setup` with a peer). Throws if either has one. */
export function connectPeers(a: NetClient, b: NetClient): void {
  if (a.peer || b.peer) throw new Error(`net client '${a.peer ? a.name : b.name}' is already connected`);
  a.peer = b;
  b.peer = a;
}

/** Undo `connectPeers` (frames queued between them are given up). */
export function disconnectPeers(a: NetClient): void {
  const b = a.peer;
  if (!b) return;
  a.incoming.purge(b);
  b.incoming.purge(a);
  a.peer = undefined;
  b.peer = undefined;
}

/** QEMU's `qemu_can_receive_packet`. */
export function canReceivePacket(nc: NetClient): boolean {
  return !nc.receiveDisabled && nc.canReceive();
}

/**
 * QEMU's `qemu_can_send_packet`: the peer can take a frame now. (QEMU also refuses while the VM
 * is not running; here the receivers that care, the NICs, say so themselves.)
 */
export function canSendPacket(sender: NetClient): boolean {
  return sender.peer === undefined || canReceivePacket(sender.peer);
}

/**
 * QEMU's `qemu_send_packet_async`: a frame from `sender` to its peer. Returns `len` when it went
 * or was dropped (link down, no peer), 0 when it waits in the peer's queue (`sent` runs once it
 * goes).
 */
export function sendPacket(sender: NetClient, buf: Uint8Array, off: number, len: number, sent?: NetPacketSent): number {
  const peer = sender.peer;
  if (sender.linkDown || peer === undefined) return len;
  return peer.incoming.send(sender, buf, off, len, sent);
}

/**
 * QEMU's `qemu_flush_or_purge_queued_packets`: `nc` can take frames again; deliver what waits
 * for it (and, behind a hub, what waits to get into the hub). With `purge`, what still cannot
 * be delivered is given up. Returns true when nothing waits any more.
 */
export function flushQueuedPackets(nc: NetClient, purge = false): boolean {
  nc.receiveDisabled = false;
  const peer = nc.peer;
  if (peer !== undefined) peer.flushSources();
  if (nc.incoming.flush()) return true;
  if (purge) nc.incoming.purge(nc.peer);
  return false;
}
