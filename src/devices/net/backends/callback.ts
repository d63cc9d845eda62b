/**
 * The embedder's backend: a pair of callbacks. Frames the guest sends arrive in `onFrame`; the
 * host sends frames to the guest with `send`, which says whether the frame went in now, waits
 * (bounded) for receive buffers, or was dropped. One net client per queue pair, so a multiqueue
 * NIC can be fed per pair.
 *
 * No Node imports: part of the browser bundle.
 */
import { flushQueuedPackets, NetClient, sendPacket, type NetBackend, type NetPacketSent, type NetQueueLimits } from '../net-client.js';

export interface CallbackNetBackendOptions {
  /**
   * A frame from the guest on queue pair `queue`. `frame` is valid only during the call (copy it
   * to keep it). Return false to make the NIC hold the frame until `resume()`; anything else takes it.
   */
  onFrame: (frame: Uint8Array, queue: number) => boolean | void;
  /** Queue pairs (QEMU's netdev `queues`; default 1). */
  queues?: number;
  /** The name of the backend (QEMU's netdev id). */
  name?: string;
  /** Bounds of the frames waiting to be taken by `onFrame` when it holds them. */
  limits?: NetQueueLimits;
}

/** What `send` did with a frame. */
export type SendResult = 'delivered' | 'queued' | 'dropped';

class CallbackClient extends NetClient {
  constructor(private readonly owner: CallbackNetBackend, name: string, index: number, limits: NetQueueLimits | undefined) {
    super('callback', name, limits);
    this.queueIndex = index;
  }

  override receive(buf: Uint8Array, off: number, len: number): number {
    return this.owner.deliver(this.queueIndex, buf, off, len);
  }
}

export class CallbackNetBackend implements NetBackend {
  readonly netClients: readonly NetClient[];
  private readonly onFrame: (frame: Uint8Array, queue: number) => boolean | void;
  /** Frames dropped by `send` because the guest's queue was full. */
  dropped = 0;
  private held = false;

  constructor(opts: CallbackNetBackendOptions) {
    const queues = Math.max(1, Math.floor(opts.queues ?? 1));
    const name = opts.name ?? 'callback';
    this.onFrame = opts.onFrame;
    const clients: NetClient[] = [];
    for (let i = 0; i < queues; i++) clients.push(new CallbackClient(this, name, i, opts.limits));
    this.netClients = clients;
  }

  /** @internal A frame from the guest. */
  deliver(queue: number, buf: Uint8Array, off: number, len: number): number {
    if (this.held) return 0;
    // The embedder gets a view of exactly the frame (its one allocation per frame).
    const taken = this.onFrame(buf.subarray(off, off + len), queue);
    if (taken === false) {
      this.held = true;
      return 0;
    }
    return len;
  }

  /** The embedder takes frames again after `onFrame` returned false. */
  resume(): void {
    this.held = false;
    for (const nc of this.netClients) flushQueuedPackets(nc);
  }

  /**
   * Send `frame` to the guest on queue pair `queue`. 'delivered': in the guest's buffers (or
   * filtered out by the NIC, as a wire would); 'queued': waiting for receive buffers (`sent`
   * runs when it goes); 'dropped': the link is down, nothing is connected, or the queue is full.
   */
  send(frame: Uint8Array, queue = 0, sent?: NetPacketSent): SendResult {
    const nc = this.netClients[queue];
    if (!nc) throw new RangeError(`no queue pair ${queue}`);
    // A link down on either side drops the frame (QEMU returns it as sent).
    if (nc.linkDown || !nc.peer || nc.peer.linkDown) return 'dropped';
    const before = nc.peer.incoming.dropped;
    const ret = sendPacket(nc, frame, 0, frame.length, sent);
    if (ret !== 0) return 'delivered';
    if (nc.peer.incoming.dropped !== before) {
      this.dropped++;
      return 'dropped';
    }
    return 'queued';
  }
}
