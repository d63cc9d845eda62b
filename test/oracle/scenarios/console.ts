// Conformance scenarios of virtio-serial (virtio-console) on every transport and interrupt mode:
// identity (features, queue sizes, config bytes), the control protocol message by message, data
// both ways through socket and file chardevs, the host side closing and coming back, emergency
// writes, a driver without MULTIPORT, and the control messages QEMU ignores. They record; the
// oracle compares with QEMU 7.2.
//
// What is recorded: register accesses that read state (features, config, status, ISR, MSI-X
// message slots) and notes of what the driver saw (control messages, used lengths, bytes).
// Waiting for used entries, and for bytes on a socket, is never recorded (QEMU's chardevs work
// from its main loop, after the qtest command that caused them), and neither are the heads of
// receive buffers (which head a buffer gets depends on how used entries were batched).
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ConsoleDriver, type ControlMessage, type ConsoleUsed } from '../../../src/driver/console.js';
import type { OracleGroup, OracleMachineSpec, OracleScenario } from '../../../src/oracle/scenario.js';
import { VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_SEL } from '../../../src/bus/virtio-mmio.js';
import { VirtioPciLegacy } from '../../../src/driver/virtio-pci-driver.js';
import { VIRTIO_F_VERSION_1, bit } from '../../../src/virtio/constants.js';
import {
  VIRTIO_CONSOLE_BAD_ID as BAD_ID,
  VIRTIO_CONSOLE_DEVICE_READY as DEVICE_READY,
  VIRTIO_CONSOLE_F_EMERG_WRITE,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_PORT_ADD as PORT_ADD,
  VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY as PORT_READY,
  VIRTIO_CONSOLE_RESIZE as RESIZE,
} from '../../../src/devices/console/constants.js';
import { HostSocket } from '../../support/host-socket.js';
import { hexb, isModern, openRig, type MmioTransport, type PciTransport, type Rig, type Transport } from './rig.js';

const MULTIPORT = bit(VIRTIO_CONSOLE_F_MULTIPORT);
const EMERG = bit(VIRTIO_CONSOLE_F_EMERG_WRITE);

export type ConsoleIrq = 'intx' | 'msix' | 'mmio';

/**
 * The ports every console machine has: a console on a socket (port 0), a named port on a socket
 * (1), a port on an output file (3, given its number) and a named port without a chardev (got
 * the first free number, 2).
 */
export const PORTS = [
  '-chardev', 'socket,id=c0,path=@DIR@/c0.sock,server=on,wait=off',
  '-chardev', 'socket,id=c1,path=@DIR@/c1.sock,server=on,wait=off',
  '-chardev', 'file,id=f3,path=@DIR@/f3.out',
  '-device', 'virtconsole,chardev=c0',
  '-device', 'virtserialport,chardev=c1,name=org.virtio-ts.one',
  '-device', 'virtserialport,chardev=f3,nr=3',
  '-device', 'virtserialport,name=org.virtio-ts.nohost',
];
const PORT_IDS = [0, 1, 3, 2];

const pci = (device: string): OracleMachineSpec => ({ machine: 'pc', args: ['-device', device, ...PORTS] });
const mmio = (v2: boolean): OracleMachineSpec => ({
  machine: 'microvm',
  args: [...(v2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-serial-device', ...PORTS],
});

export const T = {
  modern: { kind: 'pci', label: 'console pci modern', slot: 4, mode: 'modern' },
  legacy: { kind: 'pci', label: 'console pci legacy', slot: 3, mode: 'legacy' },
  transModern: { kind: 'pci', label: 'console pci transitional, driven modern', slot: 2, mode: 'modern' },
  transLegacy: { kind: 'pci', label: 'console pci transitional, driven legacy', slot: 2, mode: 'legacy' },
  mmioV1: { kind: 'mmio', label: 'console mmio v1', index: 23, version: 1 },
  mmioV2: { kind: 'mmio', label: 'console mmio v2', index: 23, version: 2 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
/** Bytes as a short quoted string; long ones as their start, length and digest. */
export const text = (b: Uint8Array): string => {
  const s = new TextDecoder('latin1').decode(b);
  if (s.length <= 40) return JSON.stringify(s);
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return `${JSON.stringify(s.slice(0, 16))}...(${b.length} bytes, fnv ${h.toString(16)})`;
};
export const fmtMsg = (c: ControlMessage): string =>
  `{id ${c.id === BAD_ID ? '-' : c.id} event ${c.event} value ${c.value}${c.extra.length ? ` extra ${text(c.extra)}` : ''} len ${c.len}}`;
export const fmtUsed = (u: readonly ConsoleUsed[]): string => (u.length ? u.map((x) => `${x.len}${x.data.length ? `:${text(x.data)}` : ''}`).join(' ') : 'none');

/** A console rig: the transport, the console driver and the interrupt mode. */
export interface ConsoleRig {
  rig: Rig;
  con: ConsoleDriver;
  irq: ConsoleIrq;
  hostDir: string;
}

export async function open(ctx: Parameters<OracleScenario['run']>[0], t: Transport, irq: ConsoleIrq): Promise<ConsoleRig> {
  if (!ctx.hostDir) throw new Error('console scenarios need a host directory');
  const rig = await openRig(ctx, t);
  return { rig, con: new ConsoleDriver(rig.drv, ctx.alloc), irq, hostDir: ctx.hostDir };
}

/**
 * Negotiate `features`, set up the control queues (8 receive buffers of 64 bytes) and the queues
 * of `ports`, assign MSI-X vectors (entry 0 config, entry 1 every queue), DRIVER_OK.
 */
export async function bringUp(c: ConsoleRig, features: bigint, ports: readonly number[] = PORT_IDS, controlSetup: boolean | { rxBuffers: number; bufLen: number } = true): Promise<void> {
  const control = controlSetup !== false;
  const { rig, con } = c;
  const m = rig.m;
  if (c.irq === 'msix') await rig.pciDrv!.enableMsix();
  const f = await rig.drv.init(features | (isModern(rig.t) ? bit(VIRTIO_F_VERSION_1) : 0n));
  await m.note(`features ${f.toString(16)} status ${hexb(await rig.drv.status())}`);
  await m.quiet(async () => {
    if (control) await con.setupControl(typeof controlSetup === 'object' ? controlSetup : { rxBuffers: 8, bufLen: 64 });
    for (const p of ports) await con.setupPort(p);
  });
  if (c.irq === 'msix') {
    await m.quiet(async () => {
      await rig.pciDrv!.msixSetupConfig(0);
      const queues = [...(control ? [2, 3] : []), ...ports.flatMap((p) => (p === 0 ? [0, 1] : [2 + 2 * p, 3 + 2 * p]))];
      const first = await rig.pciDrv!.msixSetupQueue(queues[0]!, 1);
      for (const q of queues.slice(1)) await rig.pciDrv!.msixSetupQueue(q, 1, first.addr);
    });
  }
  if (control) await con.controlRx!.notify();
  await rig.drv.driverOk();
  await m.note(`status ${hexb(await rig.drv.status())}`);
}

/** Record what the driver sees of interrupts since the last check. */
export async function irqCheck(c: ConsoleRig): Promise<void> {
  const { rig } = c;
  switch (c.irq) {
    case 'intx':
      await rig.pciDrv!.isr();
      break;
    case 'mmio':
      await rig.mmioDrv!.ackInterrupt();
      break;
    case 'msix': {
      const drv = rig.pciDrv!;
      // Entry 1 (every queue) and entry 0 (config); the slots are re-armed after a hit.
      await rig.m.note(`msix queue ${await drv.queueInterrupted(2)} config ${await drv.configInterrupted()}`);
      break;
    }
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Give an asynchronous device time to act (QEMU's chardevs run from its main loop). */
export async function settle(c: ConsoleRig, ms = 30): Promise<void> {
  await c.rig.m.idle();
  await sleep(ms);
  await c.rig.m.idle();
}

/** Wait (quietly, bounded) for `count` control messages and note them; 0: settle, then look. */
export async function control(c: ConsoleRig, count: number, what: string, timeoutMs = 2000): Promise<ControlMessage[]> {
  if (count === 0) await settle(c);
  const msgs = await c.rig.m.quiet(() => c.con.waitControl(count, { timeoutMs, throwOnTimeout: false }));
  await c.rig.m.note(`${what}: ${msgs.length ? msgs.map(fmtMsg).join(' ') : 'none'}${msgs.length < count ? ` (waited for ${count})` : ''}`);
  return msgs;
}

/** Send a control message and note the used length of its buffer. */
export async function send(c: ConsoleRig, id: number, event: number, value: number, extra?: Uint8Array): Promise<void> {
  const tx = c.con.controlTx!;
  await c.rig.m.quiet(async () => {
    await tx.postOut(extra ? new Uint8Array([...encodeHeader(id, event, value), ...extra]) : encodeHeader(id, event, value));
    await tx.notify();
  });
  const used = await c.rig.m.quiet(() => tx.waitUpTo(1, { timeoutMs: 2000 }));
  await c.rig.m.note(`sent {id ${id === BAD_ID ? '-' : id} event ${event} value ${value}}: used ${fmtUsed(used)}`);
}

function encodeHeader(id: number, event: number, value: number): Uint8Array {
  const b = new Uint8Array(8);
  const v = new DataView(b.buffer);
  v.setUint32(0, id >>> 0, true);
  v.setUint16(4, event, true);
  v.setUint16(6, value, true);
  return b;
}

/**
 * DEVICE_READY, then PORT_READY for every port and PORT_OPEN for `open`: the Linux probe.
 * `hostOpen` says whether port 1's socket has a client (ports 0 and 3 are always open on the host
 * side, port 2 never).
 */
async function handshake(c: ConsoleRig, open: readonly number[] = [], hostOpen = false): Promise<void> {
  await send(c, BAD_ID, DEVICE_READY, 1);
  await control(c, PORT_IDS.length, 'after DEVICE_READY');
  await irqCheck(c);
  for (const p of PORT_IDS) {
    await send(c, p, PORT_READY, 1);
    // CONSOLE_PORT for the console, PORT_NAME for a named port, PORT_OPEN when the host is there.
    const expect = (p === 0 ? 1 : 0) + (p === 1 || p === 2 ? 1 : 0) + (p === 0 || p === 3 || (p === 1 && hostOpen) ? 1 : 0);
    await control(c, expect, `after PORT_READY ${p}`);
  }
  await irqCheck(c);
  for (const p of open) await send(c, p, PORT_OPEN, 1);
}

/** Reset and leave the function as the next scenario expects it. */
export async function teardown(c: ConsoleRig): Promise<void> {
  await c.rig.drv.setStatus(0);
  await c.rig.m.note(`status after reset ${hexb(await c.rig.drv.status())}`);
  if (c.rig.pciDrv?.msix) await c.rig.pciDrv.disableMsix();
}

/** Post `count` receive buffers of `len` bytes on port `p` and notify. */
export async function postRx(c: ConsoleRig, p: number, count: number, len: number): Promise<void> {
  const rx = c.con.port(p).rx;
  await c.rig.m.quiet(async () => {
    await rx.postIn(len, count, 0xa5);
    await rx.notify();
  });
}

/** Wait for `count` receive buffers of port `p` to come back; note their lengths and bytes. */
export async function rxUsed(c: ConsoleRig, p: number, count: number, what: string, timeoutMs = 2000): Promise<void> {
  if (count === 0) await settle(c);
  const used = await c.rig.m.quiet(() => c.con.port(p).rx.waitUpTo(count, { timeoutMs }));
  await c.rig.m.note(`${what}: port ${p} received ${fmtUsed(used)}`);
}

/** Write chains on port `p` (each a list of readable pieces), notify once, note the used lengths. */
export async function txChains(c: ConsoleRig, p: number, chains: readonly (readonly string[])[], what: string): Promise<void> {
  const tx = c.con.port(p).tx;
  await c.rig.m.quiet(async () => {
    for (const ch of chains) await tx.postChain(ch.map((s) => ({ data: enc(s) })));
    await tx.notify();
  });
  const used = await c.rig.m.quiet(() => tx.waitUpTo(chains.length, { timeoutMs: 2000 }));
  await c.rig.m.note(`${what}: port ${p} tx used ${fmtUsed(used)}`);
}

const sock = (c: ConsoleRig, name: string): string => join(c.hostDir, name);

/**
 * Connect to a socket chardev before the driver is up, and give the machine time to accept: the
 * PORT_OPEN this causes finds no control buffer yet, so it is not sent, on QEMU as on ours.
 */
export async function connected(c: ConsoleRig, name: string): Promise<HostSocket> {
  const h = await HostSocket.connect(sock(c, name));
  await settle(c, 20);
  return h;
}

// --- scenarios ---------------------------------------------------------------------------------

function identity(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] identity: ids, features, queue sizes, config bytes`,
    async run(ctx) {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const { rig } = c;
      const m = rig.m;
      await m.phase('pci');
      if (rig.pci) await rig.pci.configDump();
      await m.phase('features');
      await rig.drv.setStatus(0);
      await rig.drv.setStatus(1);
      await rig.drv.setStatus(3);
      await m.note(`device features ${(await rig.drv.readDeviceFeatures()).toString(16)}`);
      await m.phase('queues');
      // 64 queues for 31 ports, then none.
      for (let q = 0; q <= 65; q++) await m.note(`queue ${q} max ${await queueMax(c, q)}`);
      await m.phase('config');
      for (let o = 0; o < 16; o++) await rig.drv.configRead(o, 1);
      for (let o = 0; o < 16; o += 2) await rig.drv.configRead(o, 2);
      for (let o = 0; o < 16; o += 4) await rig.drv.configRead(o, 4);
      await m.phase('reset');
      await teardown(c);
    },
  };
}

/** The size of queue `q` as the transport reports it. */
async function queueMax(c: ConsoleRig, q: number): Promise<number> {
  const { rig } = c;
  if (rig.t.kind === 'mmio') {
    const base = rig.mmioDrv!.base;
    await rig.m.writel(base + VIRTIO_MMIO_QUEUE_SEL, q);
    return rig.m.readl(base + VIRTIO_MMIO_QUEUE_NUM_MAX);
  }
  if (rig.t.mode === 'legacy') {
    const io = rig.pci!.bars[0]!;
    await io.writew(VirtioPciLegacy.QUEUE_SEL, q);
    return io.readw(VirtioPciLegacy.QUEUE_NUM);
  }
  return rig.pciDrv!.queueMax(q);
}

function controlProtocol(t: Transport, irq: ConsoleIrq): OracleScenario {
  return {
    name: `[${t.label}] control protocol message by message, ${irq}`,
    async run(ctx) {
      const c = await open(ctx, t, irq);
      const m = c.rig.m;
      await m.phase('bring-up');
      await bringUp(c, MULTIPORT | EMERG);
      // The console's PORT_OPEN at start-up, and PORT_ADD at plug time, found no buffer.
      await control(c, 0, 'before DEVICE_READY', 30);
      await m.phase('probe');
      await handshake(c);
      await m.phase('host connects');
      const h1 = await HostSocket.connect(sock(c, 'c1.sock'));
      await control(c, 1, 'after connecting to c1');
      await irqCheck(c);
      await m.phase('guest opens');
      await send(c, 1, PORT_OPEN, 1);
      await send(c, 0, PORT_OPEN, 1);
      await control(c, 0, 'after the guest opened', 30);
      await m.phase('guest closes');
      await send(c, 1, PORT_OPEN, 0);
      await m.phase('host leaves and comes back');
      await h1.close();
      await control(c, 1, 'after c1 closed');
      const h1b = await HostSocket.connect(sock(c, 'c1.sock'));
      await control(c, 1, 'after c1 reconnected');
      await irqCheck(c);
      await m.phase('DEVICE_READY again');
      await send(c, BAD_ID, DEVICE_READY, 1);
      await control(c, PORT_IDS.length, 'after the second DEVICE_READY');
      await m.phase('reset');
      await h1b.close();
      await control(c, 1, 'after c1 closed again');
      await teardown(c);
    },
  };
}

function dataBothWays(t: Transport, irq: ConsoleIrq): OracleScenario {
  return {
    name: `[${t.label}] data both ways through socket and file chardevs, ${irq}`,
    async run(ctx) {
      const c = await open(ctx, t, irq);
      const m = c.rig.m;
      await m.phase('bring-up');
      const h0 = await connected(c, 'c0.sock');
      const h1 = await connected(c, 'c1.sock');
      await bringUp(c, MULTIPORT | EMERG);
      await handshake(c, [0, 1, 2, 3], true);
      await irqCheck(c);
      await m.phase('guest to host');
      await txChains(c, 1, [['hello'], ['a', 'b', 'c']], 'one buffer and a chain of three');
      await m.note(`c1 got ${text(await h1.receive(8))}`);
      await txChains(c, 0, [['console says hi']], 'console');
      await m.note(`c0 got ${text(await h0.receive(15))}`);
      await txChains(c, 3, [['to the file'], ['!']], 'file port');
      await m.note(`f3 holds ${text(readFileSync(join(c.hostDir, 'f3.out')))}`);
      await txChains(c, 2, [['nobody listens']], 'port without a chardev');
      await irqCheck(c);
      await m.phase('host to guest');
      await postRx(c, 1, 4, 64);
      await h1.send('x'.repeat(100));
      await rxUsed(c, 1, 2, '100 bytes into 64-byte buffers');
      await irqCheck(c);
      await postRx(c, 1, 4, 2048);
      await h1.send('y'.repeat(5000));
      // Two 64-byte buffers were left over: 4096 bytes (a chardev read) fill 64, 64, 2048, 1920,
      // the other 904 the next buffer.
      await rxUsed(c, 1, 5, '5000 bytes into the two 64-byte buffers left and 2048-byte ones');
      await postRx(c, 0, 2, 32);
      await h0.send('console input');
      await rxUsed(c, 0, 1, 'console');
      await irqCheck(c);
      await m.phase('host data waits for buffers');
      // Fill the one 2048-byte buffer left, so that none is posted.
      await h1.send('z'.repeat(2048));
      await rxUsed(c, 1, 1, 'the last buffer');
      await h1.send('early bird');
      await c.rig.m.idle();
      await rxUsed(c, 1, 0, 'before buffers', 50);
      await postRx(c, 1, 1, 64);
      await rxUsed(c, 1, 1, 'after one buffer');
      await m.phase('port closed by the guest');
      await send(c, 1, PORT_OPEN, 0);
      await h1.send('while closed');
      await postRx(c, 1, 1, 64);
      await rxUsed(c, 1, 0, 'guest side closed', 50);
      await send(c, 1, PORT_OPEN, 1);
      await rxUsed(c, 1, 1, 'guest side open again');
      await irqCheck(c);
      await m.phase('reset');
      await h0.close();
      await h1.close();
      await control(c, 1, 'after the sockets closed');
      await teardown(c);
    },
  };
}

function hostGone(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] writes to a port whose host side went away are returned`,
    async run(ctx) {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const m = c.rig.m;
      await m.phase('bring-up');
      const h1 = await connected(c, 'c1.sock');
      await bringUp(c, MULTIPORT);
      await handshake(c, [1], true);
      await m.phase('host leaves');
      await h1.close();
      await control(c, 1, 'after c1 closed');
      await txChains(c, 1, [['lost'], ['words']], 'host side closed');
      await irqCheck(c);
      await m.phase('host is back');
      const h1b = await HostSocket.connect(sock(c, 'c1.sock'));
      await control(c, 1, 'after c1 reconnected');
      await txChains(c, 1, [['found']], 'host side open');
      await m.note(`c1 got ${text(await h1b.receive(5))}`);
      await m.phase('reset');
      await h1b.close();
      await control(c, 1, 'after c1 closed again');
      await teardown(c);
    },
  };
}

function emergencyWrite(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] emergency writes reach the console on any device state`,
    async run(ctx) {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const { rig } = c;
      const m = rig.m;
      const h0 = await connected(c, 'c0.sock');
      await m.phase('reset device');
      await rig.drv.setStatus(0);
      // A 4-byte write, then byte and word writes at the field and inside it.
      await rig.drv.configWrite(8, 4, 0x41);
      await rig.drv.configWrite(8, 1, 0x42);
      await rig.drv.configWrite(8, 2, 0x4443);
      await rig.drv.configWrite(9, 1, 0x45);
      await rig.drv.configWrite(8, 4, 0x0a474621);
      await rig.drv.configRead(8, 4);
      await m.note(`c0 got ${text(await h0.receive(5))}`);
      await m.phase('read-only fields');
      await rig.drv.configWrite(0, 4, 0x12345678);
      await rig.drv.configWrite(4, 4, 0x12345678);
      for (let o = 0; o < 12; o += 4) await rig.drv.configRead(o, 4);
      await m.phase('running');
      await bringUp(c, MULTIPORT | EMERG);
      await rig.drv.configWrite(8, 4, 0x48);
      await m.note(`c0 got ${text(await h0.receive(1))}`);
      await irqCheck(c);
      await m.phase('reset');
      await h0.close();
      await settle(c);
      await teardown(c);
    },
  };
}

function singlePort(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] a driver without MULTIPORT uses port 0 only`,
    async run(ctx) {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const m = c.rig.m;
      const h0 = await connected(c, 'c0.sock');
      await m.phase('bring-up');
      await bringUp(c, 0n, [0], false);
      await m.phase('data');
      await txChains(c, 0, [['single'], ['port']], 'port 0');
      await m.note(`c0 got ${text(await h0.receive(10))}`);
      await postRx(c, 0, 2, 16);
      await h0.send('back to the guest');
      await rxUsed(c, 0, 2, 'port 0');
      await irqCheck(c);
      await m.phase('reset');
      await h0.close();
      await settle(c);
      await teardown(c);
    },
  };
}

function ignoredMessages(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] control messages QEMU ignores: short, unknown port, unknown or device-only event, failures`,
    async run(ctx) {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const { rig } = c;
      const m = rig.m;
      await m.phase('bring-up');
      await bringUp(c, MULTIPORT);
      await handshake(c);
      await m.phase('bad messages');
      const tx = c.con.controlTx!;
      // Shorter than 8 bytes, in one buffer and in a chain of two 2-byte pieces.
      await m.quiet(async () => {
        await tx.postOut(new Uint8Array([1, 0, 0, 0]));
        await tx.postChain([{ data: new Uint8Array([1, 0]) }, { data: new Uint8Array([0, 0]) }]);
        // A header split over three pieces (valid: PORT_OPEN 1 for port 1).
        await tx.postChain([{ data: new Uint8Array([1, 0, 0]) }, { data: new Uint8Array([0, 6, 0]) }, { data: new Uint8Array([1, 0]) }]);
        await tx.notify();
      });
      await m.note(`short and split: used ${fmtUsed(await m.quiet(() => tx.waitUpTo(3, { timeoutMs: 2000 })))}`);
      await send(c, 99, PORT_OPEN, 1);
      await send(c, 31, PORT_READY, 1);
      await send(c, 1, 9, 1);
      await send(c, 1, PORT_ADD, 1);
      await send(c, 1, RESIZE, 1);
      await send(c, BAD_ID, DEVICE_READY, 0);
      await send(c, 2, PORT_READY, 0);
      await send(c, 2, PORT_OPEN, 7);
      await send(c, 1, PORT_OPEN, 1, new Uint8Array(100));
      await control(c, 0, 'after the bad messages', 50);
      await m.note(`status ${hexb(await rig.drv.status())}`);
      await irqCheck(c);
      await m.phase('still working');
      await send(c, 0, PORT_READY, 1);
      await control(c, 2, 'PORT_READY 0 again');
      await m.phase('reset');
      await teardown(c);
    },
  };
}

function groupFor(t: Transport, spec: OracleMachineSpec): OracleGroup {
  const irqs: ConsoleIrq[] = t.kind === 'pci' ? ['intx', 'msix'] : ['mmio'];
  return {
    name: t.label,
    spec,
    scenarios: [
      identity(t),
      ...irqs.map((i) => controlProtocol(t, i)),
      ...irqs.map((i) => dataBothWays(t, i)),
      hostGone(t),
      emergencyWrite(t),
      singlePort(t),
      ignoredMessages(t),
    ],
  };
}

export const CONSOLE_GROUPS: readonly OracleGroup[] = [
  groupFor(T.modern, pci('virtio-serial-pci,ioeventfd=off,disable-legacy=on,addr=04.0')),
  groupFor(T.legacy, pci('virtio-serial-pci,ioeventfd=off,disable-modern=on,addr=03.0')),
  groupFor(T.transModern, pci('virtio-serial-pci,ioeventfd=off')),
  groupFor(T.transLegacy, pci('virtio-serial-pci,ioeventfd=off')),
  groupFor(T.mmioV1, mmio(false)),
  groupFor(T.mmioV2, mmio(true)),
];
