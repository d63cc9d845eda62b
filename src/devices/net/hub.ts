/**
 * QEMU's hub (`net/hub.c`): a switch without learning. A frame that enters one port goes out of
 * every other port, to each port's peer (a NIC or a backend). `-netdev hubport,hubid=N` ports of
 * the same id share one hub; in-process it is the switch that connects several NICs (tests, and
 * several guests of one embedder).
 *
 * No Node imports: part of the browser bundle.
 */
import { canSendPacket, connectPeers, NetClient, sendPacket, type NetBackend, type NetQueueLimits } from './net-client.js';

/** One port of a hub (QEMU's `NetHubPort`). */
export class NetHubPort extends NetClient {
  constructor(readonly hub: NetHub, name: string, readonly id: number, limits?: NetQueueLimits) {
    super('hubport', name, limits);
  }

  /** QEMU's `net_hub_port_can_receive`: some other port's peer can take a frame. */
  override canReceive(): boolean {
    const ports = this.hub.ports;
    for (let i = 0; i < ports.length; i++) {
      const port = ports[i]!;
      if (port !== this && canSendPacket(port)) return true;
    }
    return false;
  }

  /** QEMU's `net_hub_receive`: out of every other port. */
  override receive(buf: Uint8Array, off: number, len: number): number {
    const ports = this.hub.ports;
    for (let i = 0; i < ports.length; i++) {
      const port = ports[i]!;
      if (port !== this) sendPacket(port, buf, off, len);
    }
    return len;
  }

  /** QEMU's `net_hub_flush`: what other ports queued to enter the hub goes now. */
  override flushSources(): void {
    for (const port of this.hub.ports) if (port !== this) port.incoming.flush();
  }
}

/** A hub and its ports. */
export class NetHub {
  readonly ports: NetHubPort[] = [];
  private nextPort = 0;

  constructor(readonly id = 0) {}

  /**
   * Add a port (QEMU's `net_hub_add_port`), named `hub<id>port<n>` unless `name` is given, and
   * connect it to `peer` when given (a backend, as `-netdev hubport,netdev=`).
   */
  addPort(opts: { name?: string; peer?: NetBackend; limits?: NetQueueLimits } = {}): NetHubPort {
    const id = this.nextPort++;
    const port = new NetHubPort(this, opts.name ?? `hub${this.id}port${id}`, id, opts.limits);
    // QEMU inserts at the head of its list: frames go out of the newest port first.
    this.ports.unshift(port);
    const peer = opts.peer?.netClients[0];
    if (peer) connectPeers(port, peer);
    return port;
  }

  /** Remove a port (frames queued to or from it are given up). */
  removePort(port: NetHubPort): void {
    const i = this.ports.indexOf(port);
    if (i < 0) return;
    this.ports.splice(i, 1);
    const peer = port.peer;
    if (peer) {
      peer.incoming.purge(port);
      port.incoming.purge(peer);
      peer.peer = undefined;
      port.peer = undefined;
    }
  }
}
