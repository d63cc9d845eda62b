// Migration scenarios of virtio-serial (QEMU's vmsd "virtio-console"): a guest drives the ports
// to a state on the source — ports open on both sides, data exchanged, receive buffers posted,
// a transmit buffer posted and not notified, an interrupt not acknowledged, or a port throttled
// with an element popped and half written — the machine migrates, and the same script carries
// on at the destination: registers and RAM read as before, the pending data arrives exactly once
// (bytes the source's chardev took plus bytes the destination's chardev takes are the guest's
// bytes, in order), the ports keep working both ways, and the device resets.
//
// Each end has its own chardev sockets (`@DIR@` is the end's directory); the script connects
// to the destination's before migrating. A destination waiting for its stream has its ports'
// chardevs detached (QEMU's machine reset does that until the VM runs), so port 1's host side is
// announced with PORT_OPEN once it runs, on QEMU as on ours. Every QEMU device has ioeventfd off.
import { join } from 'node:path';
import { expect } from 'vitest';
import { ConsoleDriver, type ConsoleUsed } from '../../src/driver/console.js';
import type { OracleMachineSpec } from '../../src/oracle/scenario.js';
import { VIRTIO_CONSOLE_BAD_ID as BAD_ID, VIRTIO_CONSOLE_DEVICE_READY as DEVICE_READY, VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN, VIRTIO_CONSOLE_PORT_READY as PORT_READY } from '../../src/devices/console/constants.js';
import { VIRTIO_CONSOLE_F_EMERG_WRITE, VIRTIO_CONSOLE_F_MULTIPORT } from '../../src/devices/console/constants.js';
import { VIRTIO_F_VERSION_1, bit } from '../../src/virtio/constants.js';
import { HostSocket } from '../support/host-socket.js';
import type { MigrationContext, MigrationScenario } from './harness.js';
import { MigRig, diffSnapshots, type MmioTransport, type PciTransport } from './rig.js';

const FEATURES = bit(VIRTIO_CONSOLE_F_MULTIPORT) | bit(VIRTIO_CONSOLE_F_EMERG_WRITE);
const PORTS = [
  '-chardev', 'socket,id=c0,path=@DIR@/c0.sock,server=on,wait=off',
  '-chardev', 'socket,id=c1,path=@DIR@/c1.sock,server=on,wait=off',
  '-device', 'virtconsole,chardev=c0',
  '-device', 'virtserialport,chardev=c1,name=org.virtio-ts.mig',
  '-device', 'virtserialport,nr=4',
];

export const CONSOLE_SPECS = {
  modern: { machine: 'pc', args: ['-device', 'virtio-serial-pci,ioeventfd=off,disable-legacy=on,addr=04.0', ...PORTS] },
  legacy: { machine: 'pc', args: ['-device', 'virtio-serial-pci,ioeventfd=off,disable-modern=on,addr=03.0', ...PORTS] },
  mmioV2: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-serial-device', ...PORTS] },
  mmioV1: { machine: 'microvm', args: ['-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-serial-device', ...PORTS] },
} as const satisfies Record<string, OracleMachineSpec>;

const T = {
  modern: { kind: 'pci', label: 'pci modern', slot: 4, mode: 'modern' },
  legacy: { kind: 'pci', label: 'pci legacy', slot: 3, mode: 'legacy' },
  mmioV2: { kind: 'mmio', label: 'mmio v2', index: 23, version: 2 },
  mmioV1: { kind: 'mmio', label: 'mmio v1', index: 23, version: 1 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const lens = (u: readonly ConsoleUsed[]): number[] => u.map((x) => x.len);

interface Hosts {
  c0: HostSocket;
  c1: HostSocket;
}

/** The destination's sockets, connected before migrating (none in a capture-only run). */
async function destinationHosts(ctx: MigrationContext): Promise<Hosts> {
  if (ctx.capturing) return { c0: undefined as unknown as HostSocket, c1: undefined as unknown as HostSocket };
  return connectHosts(ctx.hostDirs[1]!);
}

/** Connect to an end's two sockets and give the machine time to accept them. */
async function connectHosts(dir: string, opts: { pausedC1?: boolean } = {}): Promise<Hosts> {
  const c0 = await HostSocket.connect(join(dir, 'c0.sock'));
  const c1 = await HostSocket.connect(join(dir, 'c1.sock'), { paused: opts.pausedC1 ?? false });
  await sleep(30);
  return { c0, c1 };
}

/** The console probe of Linux: DEVICE_READY, PORT_READY for each port, PORT_OPEN for 0 and 1. */
async function probe(con: ConsoleDriver): Promise<void> {
  await con.sendControl(BAD_ID, DEVICE_READY, 1);
  expect((await con.waitControl(3)).map((c) => [c.id, c.event])).toEqual([[0, 1], [1, 1], [4, 1]]);
  await con.sendControl(0, PORT_READY, 1);
  await con.waitControl(2); // CONSOLE_PORT, PORT_OPEN
  await con.sendControl(1, PORT_READY, 1);
  await con.waitControl(2); // PORT_NAME, PORT_OPEN (the host is connected)
  await con.sendControl(4, PORT_READY, 1);
  await con.sendControl(0, PORT_OPEN, 1);
  await con.sendControl(1, PORT_OPEN, 1);
}

/**
 * The destination's sockets got their clients while it waited for the stream, when its ports'
 * chardevs are not attached (QEMU's machine reset detaches them until the VM runs): once it
 * runs, port 1's host side is announced to the guest. The console's needs no announcement.
 */
async function hostSideAnnounced(con: ConsoleDriver): Promise<void> {
  expect((await con.waitControl(1)).map((c) => [c.id, c.event, c.value])).toEqual([[1, PORT_OPEN, 1]]);
}

/** Bring the device up on the source: MULTIPORT, control queues, ports 0, 1 and 4, the probe. */
async function bringUp(ctx: MigrationContext, rig: MigRig, msix: boolean): Promise<ConsoleDriver> {
  const con = new ConsoleDriver(rig.drv, ctx.alloc);
  if (msix) await rig.pciDrv!.enableMsix();
  await rig.drv.init(FEATURES | (rig.t.kind === 'pci' ? (rig.t.mode === 'modern' ? bit(VIRTIO_F_VERSION_1) : 0n) : rig.t.version === 2 ? bit(VIRTIO_F_VERSION_1) : 0n));
  await con.setupControl({ rxBuffers: 8, bufLen: 64 });
  for (const p of [0, 1, 4]) await con.setupPort(p);
  if (msix) {
    const d = rig.pciDrv!;
    await d.msixSetupConfig(0);
    const first = await d.msixSetupQueue(2, 1);
    for (const q of [0, 1, 3, 4, 5, 10, 11]) await d.msixSetupQueue(q, 1, first.addr);
  }
  await con.controlRx!.notify();
  await rig.drv.driverOk();
  await probe(con);
  return con;
}

/**
 * What the destination must read as the source did (registers, config space, MSI-X, RAM), except
 * the control receive queue: the destination announces port 1's host side once it runs (below).
 */
async function migrateAndCompare(ctx: MigrationContext, rig: MigRig, con: ConsoleDriver): Promise<void> {
  const crx = con.controlRx!;
  rig.volatile.set('control rx used ring', { addr: crx.ring.addrs.used, len: 6 + 8 * crx.ring.num });
  crx.postedBuffers().forEach((b, i) => rig.volatile.set(`control rx buffer ${i}`, b));
  const before = await rig.snapshot();
  await ctx.migrate();
  const after = await rig.snapshot();
  const d = diffSnapshots(before, after);
  expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
}

function portsOpen(name: string, spec: OracleMachineSpec, t: PciTransport | MmioTransport, msix: boolean): MigrationScenario {
  return {
    name,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      const src = await connectHosts(ctx.hostDir);
      const con = await bringUp(ctx, rig, msix);
      // Data both ways on the source.
      await con.write(1, enc('from the source'));
      expect(dec(await src.c1.receive(15))).toBe('from the source');
      const rx1 = con.port(1).rx;
      await rx1.postIn(64, 4);
      await rx1.notify();
      await src.c1.send('to the guest');
      expect((await rx1.wait(1)).map((u) => dec(u.data))).toEqual(['to the guest']);
      await con.write(0, enc('console line\n'));
      expect(dec(await src.c0.receive(13))).toBe('console line\n');
      // Left for the destination: 3 receive buffers on port 1, 2 on port 0, 8 control buffers
      // (minus those used), and an interrupt not acknowledged (the console write's).
      const rx0 = con.port(0).rx;
      await rx0.postIn(32, 2);
      await rx0.notify();
      const dst = await destinationHosts(ctx);
      await migrateAndCompare(ctx, rig, con);
      await hostSideAnnounced(con);
      await sleep(20);
      expect(await con.takeControl()).toEqual([]);
      const isr = rig.t.kind === 'pci' ? (msix ? -1 : await rig.pciDrv!.isr()) : await rig.mmioDrv!.ackInterrupt();
      if (!msix) expect(isr & 1).toBe(1);
      // Both ways again, through the destination's chardevs only.
      await dst.c1.send('after migration');
      expect((await rx1.wait(1)).map((u) => dec(u.data))).toEqual(['after migration']);
      await dst.c0.send('console input');
      expect((await rx0.wait(1)).map((u) => dec(u.data))).toEqual(['console input']);
      await con.write(1, enc('from the destination'));
      expect(dec(await dst.c1.receive(20))).toBe('from the destination');
      await con.write(0, enc('console out'));
      expect(dec(await dst.c0.receive(11))).toBe('console out');
      // A port without a host side still returns what it is given.
      const tx4 = con.port(4).tx;
      await tx4.postOut(enc('nobody'));
      await tx4.notify();
      expect(lens(await tx4.wait(1))).toEqual([0]);
      // The guest closes port 1, the destination's host side leaves: PORT_OPEN 0.
      await con.sendControl(1, PORT_OPEN, 0);
      await dst.c1.close();
      expect((await con.waitControl(1)).map((c) => [c.id, c.event, c.value])).toEqual([[1, PORT_OPEN, 0]]);
      expect(await src.c1.settle(10)).toEqual(new Uint8Array(0));
      await rig.drv.reset();
      await Promise.all([src.c0.close(), src.c1.close(), dst.c0.close()]);
    },
  };
}

function pendingTx(name: string, spec: OracleMachineSpec, t: PciTransport | MmioTransport): MigrationScenario {
  return {
    name,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      const src = await connectHosts(ctx.hostDir);
      const con = await bringUp(ctx, rig, false);
      // A transmit buffer made available and not notified.
      const tx1 = con.port(1).tx;
      await tx1.postOut(enc('posted before migration'));
      const used = con.port(1).tx.ring.addrs.used;
      rig.volatile.set('port 1 tx used ring', { addr: used, len: 6 + 8 * con.port(1).tx.ring.num });
      const dst = await destinationHosts(ctx);
      await migrateAndCompare(ctx, rig, con);
      await hostSideAnnounced(con);
      // QEMU with ioeventfd off waits for the notify; ours kicks the queues at start. Either way
      // the bytes arrive once, at the destination.
      await tx1.notify();
      expect(lens(await tx1.wait(1))).toEqual([0]);
      expect(dec(await dst.c1.receive(23))).toBe('posted before migration');
      expect(await dst.c1.settle(20)).toEqual(new Uint8Array(0));
      expect(await src.c1.settle(1)).toEqual(new Uint8Array(0));
      await rig.drv.reset();
      await Promise.all([src.c0.close(), src.c1.close(), dst.c0.close(), dst.c1.close()]);
    },
  };
}

function throttled(name: string, spec: OracleMachineSpec, t: PciTransport | MmioTransport): MigrationScenario {
  return {
    name,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      // The source's port 1 peer does not read: the socket fills and the port throttles with an
      // element half written (QEMU's elem_popped, iov_idx, iov_offset).
      const src = await connectHosts(ctx.hostDir, { pausedC1: true });
      const con = await bringUp(ctx, rig, false);
      const data = new Uint8Array(768 * 1024).map((_, i) => (i * 31 + (i >> 12)) & 0xff);
      const tx1 = con.port(1).tx;
      for (let o = 0; o < data.length; o += 256 * 1024) await tx1.postOut(data.subarray(o, o + 256 * 1024));
      await tx1.notify();
      await sleep(100);
      const doneBefore = lens(await tx1.take()).length;
      expect(doneBefore).toBeLessThan(3);
      rig.volatile.set('port 1 tx used ring', { addr: tx1.ring.addrs.used, len: 6 + 8 * tx1.ring.num });
      const dst = await destinationHosts(ctx);
      await migrateAndCompare(ctx, rig, con);
      await hostSideAnnounced(con);
      ctx.notes.push(`${doneBefore} of 3 buffers done on the source`);
      // The source's peer reads what the source wrote; the destination writes the rest.
      src.c1.resume();
      const fromSrc = await src.c1.receive(data.length, 3000);
      await tx1.notify();
      const fromDst = await dst.c1.receive(data.length - fromSrc.length, 5000);
      ctx.notes.push(`source wrote ${fromSrc.length} bytes, destination ${fromDst.length}`);
      expect(fromSrc.length).toBeGreaterThan(0);
      expect(fromDst.length).toBeGreaterThan(0);
      const all = Buffer.concat([fromSrc, fromDst]);
      expect(all.length).toBe(data.length);
      expect(all.equals(Buffer.from(data))).toBe(true);
      expect(lens(await tx1.wait(3 - doneBefore))).toEqual(Array(3 - doneBefore).fill(0));
      await rig.drv.reset();
      await Promise.all([src.c0.close(), src.c1.close(), dst.c0.close(), dst.c1.close()]);
    },
  };
}

/** Scenarios whose streams are a function of the script (compared with QEMU's byte by byte). */
export const CONSOLE_DETERMINISTIC: readonly MigrationScenario[] = [
  portsOpen('[console pci modern] ports open, data exchanged, receive buffers posted, MSI-X', CONSOLE_SPECS.modern, T.modern, true),
  portsOpen('[console pci legacy] ports open, data exchanged, INTx pending', CONSOLE_SPECS.legacy, T.legacy, false),
  portsOpen('[console mmio v2] ports open, data exchanged, interrupt pending', CONSOLE_SPECS.mmioV2, T.mmioV2, false),
  portsOpen('[console mmio v1] ports open, data exchanged, interrupt pending', CONSOLE_SPECS.mmioV1, T.mmioV1, false),
  pendingTx('[console pci modern] a transmit buffer posted and not notified', CONSOLE_SPECS.modern, T.modern),
];

/** Scenarios whose streams depend on the host's socket buffers (how much was written). */
export const CONSOLE_THROTTLED: readonly MigrationScenario[] = [
  throttled('[console pci modern] a port throttled by a full socket: an element popped and half written', CONSOLE_SPECS.modern, T.modern),
  throttled('[console mmio v2] a port throttled by a full socket: an element popped and half written', CONSOLE_SPECS.mmioV2, T.mmioV2),
];

