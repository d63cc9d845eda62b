/**
 * A machine's network clients, as QEMU 7.2 keeps them in its global `net_clients` list (here one
 * per machine): the `-netdev`s (hub ports built here, host backends handed in), the NICs' queues,
 * the hubs; the default MAC addresses; and what QMP does with them: `set_link`,
 * `query-rx-filter`, `announce-self`, and the start-up warnings of `net_check_clients`.
 *
 * No Node imports: part of the browser bundle.
 */
import { NetHub } from '../devices/net/hub.js';
import { MacAllocator } from '../devices/net/mac.js';
import type { NetBackend, NetClient } from '../devices/net/net-client.js';
import { sendPacket } from '../devices/net/net-client.js';
import type { RxFilterInfo, VirtIONet } from '../devices/net/virtio-net.js';
import type { NetdevSpec } from './netdev.js';
import { wallClockTimers, type ThrottleTimers } from './event-throttle.js';

/** A QMP error: class and description as QEMU words them. */
export class NetQmpError extends Error {
  constructor(readonly errorClass: string, message: string) {
    super(message);
  }
}

/** `announce-self`'s arguments (QAPI `AnnounceParameters`). */
export interface AnnounceSelfParams {
  initial: number;
  max: number;
  rounds: number;
  step: number;
  interfaces?: string[];
  id?: string;
}

interface Registered {
  nc: NetClient;
  /** QEMU's `nc->model` (the `-device` type of a NIC, the netdev type of a backend). */
  model: string;
  /** A NIC's queue 0 carries the device. */
  nic: VirtIONet | undefined;
  /** Created by `-netdev` (QEMU's `is_netdev`). */
  isNetdev: boolean;
}

export class NetStack {
  private readonly list: Registered[] = [];
  readonly hubs = new Map<number, NetHub>();
  readonly macs = new MacAllocator();
  /** Netdev ids and their clients (one per queue). */
  private readonly netdevs = new Map<string, NetClient[]>();
  /** Netdevs a NIC took (QEMU: "it's in use"). */
  private readonly taken = new Set<string>();
  private readonly announceTimers = new Map<string, () => void>();

  constructor(private readonly timers: ThrottleTimers = wallClockTimers) {}

  /** Every client, in creation order. */
  get clients(): NetClient[] {
    return this.list.map((r) => r.nc);
  }

  /** QEMU's `assign_name`: `<model>.<n>` with n the clients of that model created before. */
  assignName(model: string): string {
    return `${model}.${this.list.filter((r) => r.model === model).length}`;
  }

  private register(nc: NetClient, model: string, nic: VirtIONet | undefined, isNetdev: boolean): void {
    this.list.push({ nc, model, nic, isNetdev });
  }

  /**
   * Create the `-netdev`s: modern ones (`dgram`, `stream`) first, then the others in order, as
   * QEMU's `net_init_clients` does. `backends` supplies the ones that need the host.
   */
  createNetdevs(specs: readonly NetdevSpec[], backends: ReadonlyMap<string, NetBackend> | undefined): void {
    const order = [...specs.filter((s) => s.type === 'dgram' || s.type === 'stream'), ...specs.filter((s) => s.type !== 'dgram' && s.type !== 'stream')];
    for (const spec of order) {
      if (this.netdevs.has(spec.id)) throw new Error(`${spec.loc}: Duplicate ID '${spec.id}'`);
      if (spec.type === 'hubport') {
        let peer: NetBackend | undefined;
        if (spec.netdev !== undefined) {
          const found = this.netdevs.get(spec.netdev);
          if (!found) throw new Error(`${spec.loc}: netdev '${spec.netdev}' not found`);
          peer = { netClients: found };
        }
        let hub = this.hubs.get(spec.hubid);
        if (!hub) {
          hub = new NetHub(spec.hubid);
          this.hubs.set(spec.hubid, hub);
        }
        const port = hub.addPort({ name: spec.id, ...(peer ? { peer } : {}) });
        this.netdevs.set(spec.id, [port]);
        this.register(port, 'hub', undefined, true);
        continue;
      }
      const be = backends?.get(spec.id);
      if (!be) throw new Error(`${spec.loc}: netdev '${spec.id}' has no backend in this build (pass one in BuildOptions.netdevs)`);
      this.netdevs.set(spec.id, [...be.netClients]);
      for (const nc of be.netClients) this.register(nc, spec.type === 'dgram' ? 'dgram' : spec.type, undefined, true);
    }
  }

  /**
   * The clients of netdev `id` for a NIC's `netdev=` property, checked as QEMU's property setter
   * checks them; `prop` names the property in messages (`virtio-net-device.netdev`).
   */
  takeNetdev(id: string, prop: string): NetBackend {
    const found = this.netdevs.get(id);
    if (!found) throw new Error(`Property '${prop}' can't find value '${id}'`);
    if (this.taken.has(id) || found.some((nc) => nc.peer !== undefined)) throw new Error(`Property '${prop}' can't take value '${id}', it's in use`);
    this.taken.add(id);
    return { netClients: found };
  }

  /** A NIC's queues, once built. */
  addNic(dev: VirtIONet, model: string): void {
    dev.ncs.forEach((nc, i) => this.register(nc, model, i === 0 ? dev : undefined, false));
  }

  /** QEMU's `net_check_clients` warnings (`qtest` hides the hub's "not connected" one, as in QEMU). */
  checkClients(qtest: boolean): string[] {
    const out: string[] = [];
    for (const hub of [...this.hubs.values()].reverse()) {
      let hasNic = false;
      let hasHost = false;
      for (const port of hub.ports) {
        const peer = port.peer;
        if (!peer) {
          out.push(`warning: hub port ${port.name} has no peer`);
          continue;
        }
        if (peer.kind === 'nic') hasNic = true;
        else if (peer.kind !== 'hubport') hasHost = true;
      }
      if (hasHost && !hasNic) out.push(`warning: hub ${hub.id} with no nics`);
      if (hasNic && !hasHost && !qtest) out.push(`warning: hub ${hub.id} is not connected to host network`);
    }
    for (const r of this.list) {
      if (!r.nc.peer) out.push(`warning: ${r.nc.kind === 'nic' ? 'nic' : 'netdev'} ${r.nc.name} has no peer`);
    }
    return out;
  }

  /** QMP `set_link` (QEMU's `qmp_set_link`). */
  setLink(name: string, up: boolean): void {
    const ncs = this.list.filter((r) => r.nc.name === name).map((r) => r.nc);
    if (ncs.length === 0) throw new NetQmpError('DeviceNotFound', `Device '${name}' not found`);
    const nc = ncs[0]!;
    for (const c of ncs) c.linkDown = !up;
    nc.linkStatusChanged();
    const peer = nc.peer;
    if (peer) {
      // A NIC's peer follows only when it is a NIC too: hubs and backends keep their link.
      if (peer.kind === 'nic') for (const c of ncs) if (c.peer) c.peer.linkDown = !up;
      peer.linkStatusChanged();
    }
  }

  /** QMP `query-rx-filter` (QEMU's `qmp_query_rx_filter`). */
  queryRxFilter(name?: string): RxFilterInfo[] {
    const out: RxFilterInfo[] = [];
    for (const r of this.list) {
      if (name !== undefined && r.nc.name !== name) continue;
      if (r.nc.kind !== 'nic') {
        if (name !== undefined) throw new NetQmpError('GenericError', `net client(${name}) isn't a NIC`);
        continue;
      }
      if (r.nc.queueIndex !== 0 || !r.nic) continue;
      out.push(r.nic.queryRxFilter());
      if (name !== undefined) break;
    }
    if (out.length === 0 && name !== undefined) throw new NetQmpError('GenericError', `invalid net client name: ${name}`);
    return out;
  }

  /**
   * QMP `announce-self` (QEMU's `qemu_announce_self`): each NIC (or those named in `interfaces`)
   * sends a RARP frame with its configured MAC and asks its guest to announce; `rounds` times,
   * `initial` ms apart and then `step` more each time up to `max`, on the wall clock.
   */
  announceSelf(p: AnnounceSelfParams): void {
    const id = p.id ?? '';
    this.announceTimers.get(id)?.();
    this.announceTimers.delete(id);
    let round = p.rounds;
    const once = (): void => {
      for (const r of this.list) {
        if (!r.nic) continue;
        if (p.interfaces && !p.interfaces.includes(r.nc.name)) continue;
        const frame = rarp(r.nic.confMac);
        sendPacket(r.nc, frame, 0, frame.length);
        r.nic.announce();
      }
      if (--round > 0) {
        let step = p.initial + (p.rounds - round - 1) * p.step;
        if (step < 0 || step > p.max) step = p.max;
        this.announceTimers.set(id, this.timers.after(step, once));
      } else {
        this.announceTimers.delete(id);
      }
    };
    if (p.rounds) once();
  }

  /** Stop announcement timers (the machine goes away). */
  dispose(): void {
    for (const cancel of this.announceTimers.values()) cancel();
    this.announceTimers.clear();
  }
}

/** QEMU's `announce_self_create`: a 60-byte RARP request from `mac`. */
export function rarp(mac: Uint8Array): Uint8Array {
  const b = new Uint8Array(60);
  b.fill(0xff, 0, 6);
  b.set(mac, 6);
  b[12] = 0x80;
  b[13] = 0x35; // ETH_P_RARP
  b[14] = 0;
  b[15] = 1; // ARP_HTYPE_ETH
  b[16] = 0x08;
  b[17] = 0x00; // ARP_PTYPE_IP
  b[18] = 6;
  b[19] = 4;
  b[20] = 0;
  b[21] = 3; // ARP_OP_REQUEST_REV
  b.set(mac, 22);
  b.set(mac, 32);
  return b;
}
