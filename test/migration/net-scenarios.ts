// Migration scenarios of virtio-net: one driver script each, run on a source, migrated, and
// continued on the destination (QEMU 7.2 or ours at either end). Each end has its own
// `-netdev socket,udp=` and the test holds the other end of it (`ctx.net('n0')`).
//
//   state:    RX mode (promiscuous off, allmulti, nobcast), a MAC set by the guest, a MAC table,
//             a VLAN; a frame delivered and read, one delivered and left unread with its
//             interrupt pending, receive buffers still posted, a transmit chain published and not
//             notified. After migration: the registers, rings and RAM read as before,
//             query-rx-filter answers as before, the carried interrupt is there, the transmit
//             chain goes out once, the receive filter works as it did (the VLAN table too, except
//             on a QEMU destination: QEMU 7.2's set_features clears it after the load), the
//             destination announces itself (RARP), reset and re-init work.
//   link:     the link taken down over QMP before migrating: the destination's NIC is down too
//             (QEMU infers it from the status bit), drops traffic and sends no RARP; set_link
//             brings it up with a configuration interrupt.
//   announce: GUEST_ANNOUNCE negotiated: the destination asks the guest to announce itself
//             (status ANNOUNCE, configuration interrupt); the guest's ack clears it.
//   in flight:frames that arrived while the guest had no receive buffer are not carried (QEMU
//             drops what waits for a NIC when the VM stops); frames after the migration are.
import { expect } from 'vitest';
import { poll } from '../../src/driver/machine.js';
import type { VringDriver } from '../../src/driver/vring.js';
import type { OracleMachineSpec, OracleNetPeer } from '../../src/oracle/scenario.js';
import * as C from '../../src/devices/net/constants.js';
import { bit, VIRTIO_RING_F_EVENT_IDX } from '../../src/virtio/constants.js';
import type { MigrationContext, MigrationScenario } from './harness.js';
import { CANARY, GUARD, MigRig, diffSnapshots, type Allowance, type IrqMode, type Snapshot, type Transport } from './rig.js';

const F = {
  MAC: bit(C.VIRTIO_NET_F_MAC),
  MRG: bit(C.VIRTIO_NET_F_MRG_RXBUF),
  STATUS: bit(C.VIRTIO_NET_F_STATUS),
  CTRL: bit(C.VIRTIO_NET_F_CTRL_VQ),
  CTRL_RX: bit(C.VIRTIO_NET_F_CTRL_RX),
  CTRL_VLAN: bit(C.VIRTIO_NET_F_CTRL_VLAN),
  RX_EXTRA: bit(C.VIRTIO_NET_F_CTRL_RX_EXTRA),
  MAC_ADDR: bit(C.VIRTIO_NET_F_CTRL_MAC_ADDR),
  OFFLOADS: bit(C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS),
  ANNOUNCE: bit(C.VIRTIO_NET_F_GUEST_ANNOUNCE),
  EI: bit(VIRTIO_RING_F_EVENT_IDX),
};
const BASE = F.MAC | F.MRG | F.STATUS | F.CTRL | F.CTRL_RX | F.CTRL_VLAN | F.RX_EXTRA | F.MAC_ADDR | F.OFFLOADS | F.EI;

const NEW_MAC = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
const OTHER = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const MCAST = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const MCAST2 = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x02];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const ETH_P_RARP = 0x8035;

const GEN_ALLOW = new Map<string, Allowance>([
  ['common.config_generation', () => true],
  ['mmio.config_generation', () => true],
]);

export const netSpec = (device: string, pci: boolean, v2 = false): OracleMachineSpec => ({
  machine: pci ? 'pc' : 'microvm',
  args: [
    ...(pci ? [] : [...(v2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-global', 'virtio-mmio.ioeventfd=off']),
    '-netdev', 'socket,id=n0,@NET:n0@',
    '-device', `${device},netdev=n0,id=nic0${pci ? ',romfile=,ioeventfd=off' : ''}`,
  ],
});

function frame(dst: readonly number[], len: number, seed: number, ethertype = 0x0800): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst, 0);
  f.set([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc], 6);
  f[12] = ethertype >> 8;
  f[13] = ethertype & 0xff;
  for (let i = 14; i < len; i++) f[i] = (i * (2 * seed + 1) + seed) & 0xff;
  return f;
}

function tagged(dst: readonly number[], vid: number, seed: number): Uint8Array {
  const f = frame(dst, 80, seed, 0x8100);
  f[14] = vid >> 8;
  f[15] = vid & 0xff;
  f[16] = 0x08;
  f[17] = 0x00;
  return f;
}

const isRarp = (f: Uint8Array): boolean => f.length >= 14 && ((f[12]! << 8) | f[13]!) === ETH_P_RARP;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

interface Net {
  rig: MigRig;
  rx: VringDriver;
  tx: VringDriver;
  ctrl: VringDriver;
  posted: { head: number; addr: number; len: number }[];
}

async function bringUp(ctx: MigrationContext, t: Transport, features: bigint, irq: IrqMode): Promise<Net> {
  const rig = await MigRig.open(ctx, t);
  await rig.writeSentinels();
  const mmio = t.kind === 'mmio';
  const rx = await rig.bringUp({ features, irq, driverOk: false, ...(mmio ? { num: 256 } : {}) });
  const tx = await rig.drv.setupQueue(1, mmio ? { num: 256 } : {});
  const ctrl = await rig.drv.setupQueue(2, mmio ? { num: 64 } : {});
  if (rig.qSlot) {
    await rig.pciDrv!.msixSetupQueue(1, 1, rig.qSlot.addr);
    await rig.pciDrv!.msixSetupQueue(2, 1, rig.qSlot.addr);
  }
  rig.mmioQueueSel = 2;
  await rig.drv.driverOk();
  return { rig, rx, tx, ctrl, posted: [] };
}

async function reinit(n: Net, features: bigint, t: Transport): Promise<void> {
  const { rig } = n;
  const mmio = t.kind === 'mmio';
  n.rx = await rig.reinit({ features, ...(mmio ? { num: 256 } : {}) });
  // reinit sets DRIVER_OK already; the other queues are set up after it, which a driver may do.
  n.tx = await rig.drv.setupQueue(1, mmio ? { num: 256 } : {});
  n.ctrl = await rig.drv.setupQueue(2, mmio ? { num: 64 } : {});
  if (rig.qSlot) {
    await rig.pciDrv!.msixSetupQueue(1, 1, rig.qSlot.addr);
    await rig.pciDrv!.msixSetupQueue(2, 1, rig.qSlot.addr);
  }
  n.posted = [];
}

/** A control command; returns the ack byte. */
async function ctrl(n: Net, cls: number, cmd: number, data: readonly number[]): Promise<number> {
  const { rig } = n;
  const out = new Uint8Array([cls, cmd, ...data]);
  const o = rig.ctx.alloc.alloc(out.length, 16);
  await rig.m.writeBytes(o, out);
  const ack = await rig.newBuffer(1);
  await n.ctrl.add([{ addr: o, len: out.length, write: false }, { addr: ack.addr, len: 1, write: true }]);
  await rig.drv.notify(2);
  const u = await n.ctrl.waitUsed(1, { timeoutMs: 2000, what: 'control ack' });
  expect(u[0]!.len, 'ack length').toBe(1);
  return rig.m.readb(ack.addr);
}

/** Acknowledge whatever interrupts the commands so far raised (ISR, mmio ACK, MSI-X slots). */
async function ackAll(n: Net): Promise<void> {
  const { rig } = n;
  if (rig.pciDrv) await rig.pciDrv.isr();
  else await rig.mmioDrv!.ackInterrupt();
  if (rig.qSlot) await rig.m.writel(rig.qSlot.addr, 0);
  if (rig.cfgSlot) await rig.m.writel(rig.cfgSlot.addr, 0);
}

async function postRx(n: Net, count: number, len = 2048): Promise<void> {
  for (let i = 0; i < count; i++) {
    const b = await n.rig.newBuffer(len);
    const head = await n.rx.add([{ addr: b.addr, len, write: true }]);
    // A head comes back to the free list once used: the newest buffer under it is the one.
    n.posted = n.posted.filter((p) => p.head !== head);
    n.posted.push({ head, addr: b.addr, len });
  }
}

/** The frame a used receive entry holds (header checked: zeros, num_buffers 1), the guard intact. */
async function received(n: Net, u: { id: number; len: number }): Promise<Uint8Array> {
  const p = n.posted.find((x) => x.head === u.id);
  expect(p, `receive head ${u.id} was posted`).toBeDefined();
  const b = await n.rig.m.readBytes(p!.addr, p!.len + GUARD);
  expect(hex(b.subarray(0, 12)), `${n.rig.where}: header`).toBe('000000000000000000000100');
  expect(b.subarray(u.len).every((x) => x === CANARY), `${n.rig.where}: bytes past used.len`).toBe(true);
  return b.slice(12, u.len);
}

/** Frames the peer got within `ms`, RARP announcements apart. */
async function wireFrames(peer: OracleNetPeer, want: number, ms = 1500): Promise<{ frames: Uint8Array[]; rarps: Uint8Array[] }> {
  const frames: Uint8Array[] = [];
  const rarps: Uint8Array[] = [];
  const deadline = performance.now() + ms;
  while (frames.length < want && performance.now() < deadline) {
    for (const f of await peer.wait(1, Math.max(1, deadline - performance.now()))) (isRarp(f) ? rarps : frames).push(f);
  }
  await peer.settle(want === 0 ? 100 : 20);
  for (const f of peer.take()) (isRarp(f) ? rarps : frames).push(f);
  return { frames, rarps };
}

async function rxFilter(ctx: MigrationContext): Promise<Record<string, unknown>> {
  const r = (await ctx.m.qmp!.execute('query-rx-filter')) as Record<string, unknown>[];
  return r[0]!;
}

function stateScenario(label: string, spec: OracleMachineSpec, t: Transport, irq: IrqMode): MigrationScenario {
  return {
    name: `[${label}] RX mode, MAC, MAC table, VLAN; a frame unread with its interrupt pending; a transmit not notified`,
    spec,
    async run(ctx) {
      const n = await bringUp(ctx, t, BASE, irq);
      const { rig } = n;
      const R = C.VIRTIO_NET_CTRL_RX;
      expect(await ctrl(n, R, C.VIRTIO_NET_CTRL_RX_PROMISC, [0])).toBe(0);
      expect(await ctrl(n, R, C.VIRTIO_NET_CTRL_RX_ALLMULTI, [1])).toBe(0);
      expect(await ctrl(n, R, C.VIRTIO_NET_CTRL_RX_NOBCAST, [1])).toBe(0);
      expect(await ctrl(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, NEW_MAC)).toBe(0);
      expect(await ctrl(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, [1, 0, 0, 0, ...OTHER, 1, 0, 0, 0, ...MCAST])).toBe(0);
      expect(await ctrl(n, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, [5, 0])).toBe(0);
      await ackAll(n);
      // Two frames in: one read (interrupt acknowledged), one left unread with its interrupt pending.
      await postRx(n, 4);
      let mark = ctx.m.irq.mark();
      await rig.drv.notify(0);
      const peer = ctx.net('n0');
      const f1 = frame(NEW_MAC, 100, 1);
      await peer.send(f1);
      const u1 = await n.rx.waitUsed(1, { timeoutMs: 2000, what: 'first frame' });
      expect(await received(n, u1[0]!)).toEqual(f1);
      await rig.expectInterrupt(mark, true);
      mark = ctx.m.irq.mark();
      const f2 = frame(NEW_MAC, 1514, 2);
      await peer.send(f2);
      await poll(ctx.m, async () => (await n.rx.usedIdx()) === 2, { timeoutMs: 2000, what: 'second frame in the used ring' });
      await rig.expectInterrupt(mark, false);
      // A transmit chain published, not notified.
      const tf = frame(OTHER, 200, 3);
      const tb = rig.ctx.alloc.alloc(12 + tf.length, 16);
      await ctx.m.writeBytes(tb, new Uint8Array([...new Array(12).fill(0), ...tf]));
      const txHead = await n.tx.add([{ addr: tb, len: 12 + tf.length, write: false }]);
      // The destination may send it when it starts (ours kicks every queue then, as QEMU's
      // ioeventfd does); its used ring is then one entry further.
      rig.volatile.set('tx used ring', { addr: n.tx.addrs.used, len: 6 + 8 * n.tx.num });
      const filter = await rxFilter(ctx);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      const d = diffSnapshots(before, after, GEN_ALLOW);
      expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
      // The receive filter as it was; QEMU 7.2 loses the VLAN table in its load (set_features
      // runs after the device state and clears it), ours keeps what the stream carries.
      const f2after = await rxFilter(ctx);
      const expectFilter = { ...filter, ...(ctx.impl === 'qemu' ? { 'vlan-table': [], vlan: 'none' } : {}) };
      expect(f2after, `${rig.where}: query-rx-filter`).toEqual(expectFilter);
      // The unread frame and its interrupt.
      const u2 = await n.rx.waitUsed(1, { timeoutMs: 2000, what: 'the unread frame' });
      expect(await received(n, u2[0]!)).toEqual(f2);
      await rig.ackCarriedInterrupt();
      // The transmit chain goes out once, from the destination.
      const dpeer = ctx.net('n0');
      await rig.drv.notify(1);
      const tu = await n.tx.waitUsed(1, { timeoutMs: 2000, what: 'the transmit chain' });
      expect(tu, `${rig.where}: transmit used`).toEqual([{ id: txHead, len: 0 }]);
      const out = await wireFrames(dpeer, 1);
      expect(out.frames.map(hex), `${rig.where}: the frame on the wire, once`).toEqual([hex(tf)]);
      // QEMU announces the guest from the destination (qemu_announce_self): RARP from the NIC's MAC.
      const more = await wireFrames(dpeer, 0, 300);
      const rarps = [...out.rarps, ...more.rarps];
      expect(rarps.length, `${rig.where}: RARP announcements`).toBeGreaterThan(0);
      expect(hex(rarps[0]!), `${rig.where}: the RARP frame`).toBe(hex(rarp([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])));
      // The filter works as before, on the destination's wire.
      await postRx(n, 6);
      await rig.drv.notify(0);
      const pass = [frame(NEW_MAC, 60, 4), frame(OTHER, 60, 5), frame(MCAST, 60, 6), frame(MCAST2, 60, 7)];
      const vlan = tagged(NEW_MAC, 5, 8);
      const drop = [frame(BCAST, 60, 9), frame([0x52, 0x54, 0, 0x12, 0x34, 0x56], 60, 10)];
      for (const f of [...drop, ...pass, vlan]) await dpeer.send(f);
      const expected = ctx.impl === 'qemu' ? pass : [...pass, vlan];
      const got = await n.rx.waitUsed(expected.length, { timeoutMs: 2000, what: 'frames through the filter' });
      const frames: Uint8Array[] = [];
      for (const u of got) frames.push(await received(n, u));
      expect(frames.map(hex), `${rig.where}: frames through the filter`).toEqual(expected.map(hex));
      await new Promise((r) => setTimeout(r, 30));
      expect(await n.rx.usedIdx(), `${rig.where}: nothing else passes`).toBe(n.rx.lastUsedIdx);
      // Reset and a new set-up work, and traffic flows.
      await reinit(n, BASE, t);
      await postRx(n, 2);
      await rig.drv.notify(0);
      const f3 = frame([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 300, 11);
      await dpeer.send(f3);
      const u3 = await n.rx.waitUsed(1, { timeoutMs: 2000, what: 'a frame after reset' });
      expect(await received(n, u3[0]!)).toEqual(f3);
    },
  };
}

function linkScenario(label: string, spec: OracleMachineSpec, t: Transport, irq: IrqMode): MigrationScenario {
  return {
    name: `[${label}] link down over QMP before migrating: down on the destination, no traffic, no RARP; set_link brings it up`,
    spec,
    async run(ctx) {
      const n = await bringUp(ctx, t, BASE, irq);
      const { rig } = n;
      await ctx.m.qmp!.execute('set_link', { name: 'n0', up: false });
      expect(await rig.drv.configRead(6, 2), 'status: link down').toBe(0);
      // The config interrupt of the change, acknowledged.
      if (rig.pciDrv) await rig.pciDrv.isr();
      else await rig.mmioDrv!.ackInterrupt();
      if (rig.cfgSlot) await ctx.m.writel(rig.cfgSlot.addr, 0);
      await postRx(n, 2);
      await rig.drv.notify(0);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      const d = diffSnapshots(before, after, GEN_ALLOW);
      expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
      expect(await rig.drv.configRead(6, 2), `${rig.where}: status after migration`).toBe(0);
      const peer = ctx.net('n0');
      // Transmit is returned unsent, receive is dropped, and no RARP goes out.
      const tf = frame(OTHER, 60, 1);
      const tb = ctx.alloc.alloc(12 + tf.length, 16);
      await ctx.m.writeBytes(tb, new Uint8Array([...new Array(12).fill(0), ...tf]));
      const h = await n.tx.add([{ addr: tb, len: 12 + tf.length, write: false }]);
      await rig.drv.notify(1);
      expect(await n.tx.waitUsed(1, { timeoutMs: 2000, what: 'transmit while down' })).toEqual([{ id: h, len: 0 }]);
      await peer.send(frame([0x52, 0x54, 0, 0x12, 0x34, 0x56], 60, 2));
      const w = await wireFrames(peer, 0, 400);
      expect(w.frames.length + w.rarps.length, `${rig.where}: nothing on the wire while down`).toBe(0);
      expect(await n.rx.usedIdx(), `${rig.where}: nothing received while down`).toBe(0);
      // Up again: the status bit, a configuration interrupt, traffic.
      await ackAll(n);
      const mark = ctx.m.irq.mark();
      await ctx.m.qmp!.execute('set_link', { name: 'n0', up: true });
      expect(await rig.drv.configRead(6, 2), `${rig.where}: status after set_link up`).toBe(1);
      if (irq === 'intx' || irq === 'mmio') await poll(ctx.m, () => ctx.m.irq.find(rig.line, true, mark), { timeoutMs: 2000, what: 'configuration interrupt' });
      if (rig.pciDrv) expect((await rig.pciDrv.isr()) & 2, 'ISR configuration bit').toBe(2);
      else expect((await rig.mmioDrv!.ackInterrupt()) & 2, 'InterruptStatus configuration bit').toBe(2);
      const f = frame([0x52, 0x54, 0, 0x12, 0x34, 0x56], 70, 3);
      await peer.send(f);
      const u = await n.rx.waitUsed(1, { timeoutMs: 2000, what: 'a frame after set_link up' });
      expect(await received(n, u[0]!)).toEqual(f);
    },
  };
}

function announceScenario(label: string, spec: OracleMachineSpec, t: Transport, irq: IrqMode): MigrationScenario {
  return {
    name: `[${label}] GUEST_ANNOUNCE: the destination asks the guest to announce (status, config interrupt); the ack clears it`,
    spec,
    async run(ctx) {
      const n = await bringUp(ctx, t, BASE | F.ANNOUNCE, irq);
      const { rig } = n;
      expect(await rig.drv.configRead(6, 2)).toBe(1);
      // (No snapshot: the announcement's configuration interrupt may come before it is taken.)
      await ctx.migrate();
      // QEMU's timer fires at once on its running virtual clock; ours when the VM starts (or
      // with the next clock step): poll the status either way.
      await poll(ctx.m, async () => (await rig.drv.configRead(6, 2)) === 3, { timeoutMs: 3000, stepNs: 1_000_000, what: 'status ANNOUNCE on the destination' });
      if (rig.pciDrv) expect((await rig.pciDrv.isr()) & 2, `${rig.where}: ISR configuration bit`).toBe(2);
      else expect((await rig.mmioDrv!.ackInterrupt()) & 2, `${rig.where}: InterruptStatus configuration bit`).toBe(2);
      expect(await ctrl(n, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, []), `${rig.where}: ack of the announce`).toBe(0);
      expect(await rig.drv.configRead(6, 2), `${rig.where}: status after the ack`).toBe(1);
    },
  };
}

function inFlightScenario(label: string, spec: OracleMachineSpec, t: Transport, irq: IrqMode): MigrationScenario {
  return {
    name: `[${label}] frames waiting for receive buffers at migration are not carried; later ones are`,
    spec,
    async run(ctx) {
      const n = await bringUp(ctx, t, BASE, irq);
      const { rig } = n;
      const peer = ctx.net('n0');
      for (let i = 0; i < 3; i++) await peer.send(frame([0x52, 0x54, 0, 0x12, 0x34, 0x56], 60 + i, i));
      await peer.settle(50);
      expect(await n.rx.usedIdx()).toBe(0);
      await ctx.migrate();
      await postRx(n, 4);
      await rig.drv.notify(0);
      await new Promise((r) => setTimeout(r, 100));
      expect(await n.rx.usedIdx(), `${rig.where}: frames from before the migration`).toBe(0);
      const f = frame([0x52, 0x54, 0, 0x12, 0x34, 0x56], 90, 5);
      await ctx.net('n0').send(f);
      const u = await n.rx.waitUsed(1, { timeoutMs: 2000, what: 'a frame after migration' });
      expect(await received(n, u[0]!)).toEqual(f);
    },
  };
}

/** QEMU's RARP announcement from `mac`. */
function rarp(mac: readonly number[]): Uint8Array {
  const b = new Uint8Array(60);
  b.fill(0xff, 0, 6);
  b.set(mac, 6);
  b.set([0x80, 0x35, 0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x03], 12);
  b.set(mac, 22);
  b.set(mac, 32);
  return b;
}

const T_MODERN: Transport = { kind: 'pci', label: 'net pci modern', slot: 4, mode: 'modern' } as Transport;
const T_LEGACY: Transport = { kind: 'pci', label: 'net pci legacy', slot: 3, mode: 'legacy' } as Transport;
const T_MMIO2: Transport = { kind: 'mmio', label: 'net mmio v2', index: 23, version: 2 } as Transport;
const T_MMIO1: Transport = { kind: 'mmio', label: 'net mmio v1', index: 23, version: 1 } as Transport;

const MODERN = netSpec('virtio-net-pci,disable-legacy=on,addr=04.0', true);
const LEGACY = netSpec('virtio-net-pci,disable-modern=on,addr=03.0', true);
const MMIO2 = netSpec('virtio-net-device', false, true);
const MMIO1 = netSpec('virtio-net-device', false, false);

export const NET_MIGRATION_SCENARIOS: readonly MigrationScenario[] = [
  stateScenario('net pci modern, MSI-X', MODERN, T_MODERN, 'msix'),
  stateScenario('net pci legacy, INTx', LEGACY, T_LEGACY, 'intx'),
  stateScenario('net mmio v2', MMIO2, T_MMIO2, 'mmio'),
  stateScenario('net mmio v1', MMIO1, T_MMIO1, 'mmio'),
  linkScenario('net pci modern, INTx', MODERN, T_MODERN, 'intx'),
  linkScenario('net mmio v2', MMIO2, T_MMIO2, 'mmio'),
  announceScenario('net pci modern, MSI-X', MODERN, T_MODERN, 'msix'),
  announceScenario('net mmio v1', MMIO1, T_MMIO1, 'mmio'),
  inFlightScenario('net pci legacy, INTx', LEGACY, T_LEGACY, 'intx'),
];

export type { Snapshot };
