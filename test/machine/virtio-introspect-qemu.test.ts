// QMP's virtio introspection (x-query-virtio, x-query-virtio-status, x-query-virtio-queue-status,
// x-query-virtio-queue-element, x-query-virtio-vhost-queue-status) on virtio-ts-qemu beside QEMU
// 7.2: the same command line and the same driver script on both, every reply (or error class and
// description) recorded at the same points and required to be equal, member order included. One
// pc (virtio-pci: modern, legacy, packed, a device in flight, a broken one) and one microvm
// (virtio-mmio version 1) per side. Where ours deliberately differs (docs/qemu-differences.md),
// the difference is asserted as such.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { BLK_T_IN, BLK_T_OUT, BlkDriver } from '../../src/driver/blk.js';
import type { Machine } from '../../src/driver/machine.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { descBytes } from '../../src/driver/vring.js';
import { VIRTIO_NET_F_MAC } from '../../src/devices/net/constants.js';
import { bit, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { Workdir } from '../support/qmp-process.js';

/** null-co latency: long enough that the in-flight queries come before any completion. */
const BLK_LATENCY_MS = 1500;
const RAM_END = 16 << 20;

const PC_ARGS = [
  '-device', 'virtio-rng-pci,ioeventfd=off,addr=04.0',
  '-drive', `if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=1M,file.latency-ns=${BLK_LATENCY_MS * 1_000_000},format=raw`,
  '-device', 'virtio-blk-pci,drive=d0,ioeventfd=off,disable-legacy=on,addr=05.0',
  '-device', 'virtio-net-pci,romfile=,ioeventfd=off,addr=06.0',
  '-device', 'virtio-serial-pci,id=ser,ioeventfd=off,addr=07.0',
  '-chardev', 'null,id=c0',
  '-device', 'virtconsole,chardev=c0',
  '-device', 'virtio-balloon-pci,addr=08.0',
  '-device', 'virtio-keyboard-pci,addr=09.0',
  '-device', 'virtio-rng-pci,packed=on,disable-legacy=on,ioeventfd=off,addr=0a.0',
  '-device', 'virtio-rng-pci,disable-legacy=on,ioeventfd=off,addr=0b.0',
];
/** QOM paths of the VirtIODevices (the PCI proxies' `virtio-backend` children); virtconsole is device[3]. */
const PC = {
  rng: '/machine/peripheral-anon/device[0]/virtio-backend',
  blk: '/machine/peripheral-anon/device[1]/virtio-backend',
  net: '/machine/peripheral-anon/device[2]/virtio-backend',
  serial: '/machine/peripheral/ser/virtio-backend',
  balloon: '/machine/peripheral-anon/device[4]/virtio-backend',
  keyboard: '/machine/peripheral-anon/device[5]/virtio-backend',
  packed: '/machine/peripheral-anon/device[6]/virtio-backend',
  broken: '/machine/peripheral-anon/device[7]/virtio-backend',
};

const MICROVM_ARGS = [
  '-global', 'virtio-mmio.ioeventfd=off',
  '-device', 'virtio-rng-device',
  '-device', 'virtio-keyboard-device',
  '-device', 'virtio-balloon-device',
  '-device', 'virtio-serial-device,id=s2',
  '-device', 'virtio-net-device',
];
const MV = {
  rng: '/machine/peripheral-anon/device[0]',
  keyboard: '/machine/peripheral-anon/device[1]',
  balloon: '/machine/peripheral-anon/device[2]',
  serial: '/machine/peripheral/s2',
  net: '/machine/peripheral-anon/device[3]',
};
/** microvm fills its transports from the last one down. */
const mmioBase = (k: number) => MICROVM_MMIO_BASE + 0x200 * (23 - k);

type Reply = { return: unknown } | { error: { class: string; desc: string } };
interface Entry {
  label: string;
  reply: Reply;
}

/** Runs commands on one machine and keeps every reply under a label. */
class Recorder {
  readonly entries: Entry[] = [];
  constructor(readonly m: Machine) {}

  async q(label: string, command: string, args?: Record<string, unknown>): Promise<Reply> {
    let reply: Reply;
    try {
      reply = { return: await this.m.qmp!.execute(command, args) };
    } catch (e) {
      const err = e as { errorClass?: string; desc?: string; message: string };
      if (err.errorClass === undefined) throw e;
      reply = { error: { class: err.errorClass, desc: err.desc ?? err.message } };
    }
    this.entries.push({ label, reply });
    return reply;
  }
  status(label: string, path: string) {
    return this.q(`${label}: status`, 'x-query-virtio-status', { path });
  }
  queue(label: string, path: string, queue: number) {
    return this.q(`${label}: queue ${queue}`, 'x-query-virtio-queue-status', { path, queue });
  }
  element(label: string, path: string, queue: number, index?: number) {
    return this.q(`${label}: element q${queue}${index === undefined ? '' : ` @${index}`}`, 'x-query-virtio-queue-element', { path, queue, ...(index === undefined ? {} : { index }) });
  }
}

/** Ours and QEMU's replies, label by label, as deep-equal values and as the same JSON text. */
function compare(qemu: Recorder, ours: Recorder): void {
  expect(ours.entries.map((e) => e.label)).toEqual(qemu.entries.map((e) => e.label));
  for (const [i, q] of qemu.entries.entries()) {
    const o = ours.entries[i]!;
    expect(o.reply, q.label).toEqual(q.reply);
    // Key order too: QEMU prints QDicts in hash order, lists in the order it built them.
    expect(JSON.stringify(o.reply), q.label).toBe(JSON.stringify(q.reply));
  }
}

const returned = (r: Reply): Record<string, unknown> => {
  if (!('return' in r)) throw new Error(`expected a return, got ${JSON.stringify(r)}`);
  return r.return as Record<string, unknown>;
};

/** The argument and path refusals (the same on every machine). */
async function refusals(r: Recorder, path: string): Promise<void> {
  for (const p of ['/machine/peripheral-anon/device[99]', 'device[0]/virtio-backend', '/machine/peripheral-anon/device[0]', '']) {
    await r.q(`path ${p}`, 'x-query-virtio-status', { path: p });
    await r.q(`queue path ${p}`, 'x-query-virtio-queue-status', { path: p, queue: 0 });
    await r.q(`element path ${p}`, 'x-query-virtio-queue-element', { path: p, queue: 0 });
    await r.q(`vhost path ${p}`, 'x-query-virtio-vhost-queue-status', { path: p, queue: 0 });
  }
  for (const queue of [1, 2, 1023, 1024, 65535, 65536, -1, 1.5, 'x', true, null]) {
    await r.q(`queue ${String(queue)}`, 'x-query-virtio-queue-status', { path, queue });
    await r.q(`element queue ${String(queue)}`, 'x-query-virtio-queue-element', { path, queue });
  }
  await r.q('element index 65536', 'x-query-virtio-queue-element', { path, queue: 0, index: 65536 });
  await r.q('element index string', 'x-query-virtio-queue-element', { path, queue: 0, index: '1' });
  await r.q('missing path', 'x-query-virtio-status', {});
  await r.q('missing queue', 'x-query-virtio-queue-status', { path });
  await r.q('path not a string', 'x-query-virtio-status', { path: 5, extra: 1 });
  await r.q('unexpected member', 'x-query-virtio-queue-element', { path, queue: 0, extra: 1 });
  await r.q('x-query-virtio with an argument', 'x-query-virtio', { path });
  await r.q('vhost queue status', 'x-query-virtio-vhost-queue-status', { path, queue: 0 });
  await r.q('vhost queue status, bad queue', 'x-query-virtio-vhost-queue-status', { path, queue: 70000 });
}

/** The pc script: each device brought to a state, then asked about. */
async function pcScript(r: Recorder): Promise<void> {
  const m = r.m;
  const alloc = new GuestAllocator();
  const bus = new GuestPciBus(m);
  const buf = (len: number) => alloc.alloc(len, 16);

  await r.q('list', 'x-query-virtio');
  for (const [name, path] of Object.entries(PC)) await r.status(`fresh ${name}`, path);
  await r.queue('fresh rng', PC.rng, 0);
  await r.element('fresh rng (no rings yet)', PC.rng, 0);
  await refusals(r, PC.rng);

  // virtio-rng, modern, EVENT_IDX + INDIRECT_DESC: three requests completed, then an indirect
  // chain and a direct one made available without a notify.
  const rng = await VirtioPciDriver.open(await bus.device(4), { mode: 'modern', alloc });
  await rng.init(bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC));
  await r.status('rng FEATURES_OK', PC.rng);
  const rngRing = await rng.setupQueue(0, { num: 8 });
  await rng.driverOk();
  await r.queue('rng DRIVER_OK', PC.rng, 0);
  await r.element('rng empty ring', PC.rng, 0);
  for (let k = 0; k < 3; k++) {
    await rngRing.add([{ addr: buf(16 + k), len: 16 + k, write: true }]);
    await rng.notify(0);
    await rngRing.waitUsed(1);
  }
  await r.status('rng 3 completed', PC.rng);
  await r.queue('rng 3 completed', PC.rng, 0);
  await rngRing.add([{ addr: buf(4), len: 4 }, { addr: buf(8), len: 8, write: true }, { addr: buf(12), len: 12, write: true }], { indirectTable: buf(48) });
  await rngRing.add([{ addr: buf(4), len: 4 }, { addr: buf(32), len: 32, write: true }]);
  await r.queue('rng 2 available, not notified', PC.rng, 0);
  await r.element('rng next (indirect)', PC.rng, 0);
  // QEMU's element query reads avail.idx into shadow_avail_idx.
  await r.queue('rng after the element query', PC.rng, 0);
  await r.element('rng', PC.rng, 0, 4);
  await r.element('rng completed', PC.rng, 0, 1);
  await r.element('rng index past the ring', PC.rng, 0, 13);
  // An indirect table that runs off the end of RAM.
  await rngRing.writeDesc(6, RAM_END - 16, 32, VRING_DESC_F_INDIRECT, 0);
  await rngRing.setAvailRingEntry(6, 6);
  await r.element('rng indirect table across the end of RAM', PC.rng, 0, 6);

  // virtio-blk, modern, null-co with a latency: three requests in the backend.
  const blkDrv = await VirtioPciDriver.open(await bus.device(5), { mode: 'modern', alloc });
  await blkDrv.init(bit(VIRTIO_RING_F_INDIRECT_DESC));
  const blkRing = await blkDrv.setupQueue(0, { num: 16 });
  await blkDrv.driverOk();
  const blk = new BlkDriver(blkDrv, blkRing, alloc);
  await blk.post(BLK_T_IN, 0, 512);
  await blk.post(BLK_T_IN, 8, 1024, { indirect: true, segments: [512, 512] });
  await blk.post(BLK_T_OUT, 16, 512);
  await blk.notify();
  await r.queue('blk in flight', PC.blk, 0);
  await r.status('blk in flight', PC.blk);
  for (const i of [0, 1, 2]) await r.element('blk in flight', PC.blk, 0, i);
  await r.element('blk in flight, next', PC.blk, 0);

  // virtio-net, legacy interface: receive buffers kicked before DRIVER_OK (start-on-kick), a
  // frame sent (no peer: dropped and completed).
  const net = await VirtioPciDriver.open(await bus.device(6), { mode: 'legacy', alloc });
  await net.init(bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_RING_F_EVENT_IDX));
  await r.status('net legacy features', PC.net);
  const rx = await net.setupQueue(0);
  const tx = await net.setupQueue(1);
  await rx.add([{ addr: buf(1526), len: 1526, write: true }]);
  await rx.add([{ addr: buf(1526), len: 1526, write: true }]);
  await net.notify(0);
  await r.status('net kicked before DRIVER_OK', PC.net);
  await net.driverOk();
  await tx.add([{ addr: buf(10), len: 10 }, { addr: buf(60), len: 60 }]);
  await net.notify(1);
  await tx.waitUsed(1);
  await r.status('net', PC.net);
  for (const q of [0, 1, 2]) await r.queue('net', PC.net, q);
  await r.element('net rx', PC.net, 0);
  await r.element('net tx sent', PC.net, 1, 0);
  await r.element('net ctrl (not set up)', PC.net, 2);

  // virtio-serial and virtio-balloon untouched; the balloon's queues were never set up.
  await r.queue('serial', PC.serial, 2);
  await r.queue('serial last', PC.serial, 63);
  await r.queue('serial past the last', PC.serial, 64);
  await r.queue('balloon', PC.balloon, 2);
  await r.queue('balloon past the last', PC.balloon, 3);
  await r.element('balloon not set up', PC.balloon, 0);

  // virtio-keyboard: event buffers posted.
  const kbd = await VirtioPciDriver.open(await bus.device(9), { mode: 'modern', alloc });
  await kbd.init(0n);
  const evq = await kbd.setupQueue(0, { num: 8 });
  await kbd.setupQueue(1, { num: 8 });
  await kbd.driverOk();
  for (let k = 0; k < 4; k++) await evq.add([{ addr: buf(8), len: 8, write: true }]);
  await kbd.notify(0);
  await r.status('keyboard', PC.keyboard);
  await r.queue('keyboard', PC.keyboard, 0);
  await r.element('keyboard', PC.keyboard, 0);
  await r.element('keyboard status queue (empty)', PC.keyboard, 1);

  // virtio-rng with a packed ring: one request completed, one made available.
  const packed = await VirtioPciDriver.open(await bus.device(10), { mode: 'modern', alloc });
  await packed.init(bit(VIRTIO_F_RING_PACKED));
  const pring = await packed.setupPackedQueue(0, { num: 8 });
  await packed.driverOk();
  await pring.add([{ addr: buf(16), len: 16, write: true }]);
  await packed.notify(0);
  await pring.waitUsed(1);
  await pring.add([{ addr: buf(16), len: 16, write: true }]);
  await r.status('packed', PC.packed);
  await r.queue('packed', PC.packed, 0);
  await r.element('packed', PC.packed, 0);
  await r.element('packed', PC.packed, 0, 0);
  await r.element('packed, bad queue first', PC.packed, 1);

  // virtio-rng made broken by a descriptor whose next is beyond the ring.
  const brk = await VirtioPciDriver.open(await bus.device(11), { mode: 'modern', alloc });
  await brk.init(0n);
  const bring = await brk.setupQueue(0, { num: 8 });
  await brk.driverOk();
  await bring.writeDesc(0, buf(16), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 9);
  await bring.publish(0);
  await brk.notify(0);
  await r.status('broken', PC.broken);
  await r.queue('broken', PC.broken, 0);
  await r.element('broken', PC.broken, 0);
  await r.status('broken, after the element query', PC.broken);

  // The blk requests complete.
  await blk.wait(3, { timeoutMs: BLK_LATENCY_MS + 5000 });
  await r.queue('blk completed', PC.blk, 0);
  await r.status('blk completed', PC.blk);
  await r.q('list again', 'x-query-virtio');
}

async function microvmScript(r: Recorder): Promise<void> {
  const m = r.m;
  const alloc = new GuestAllocator();
  const buf = (len: number) => alloc.alloc(len, 16);
  await r.q('list', 'x-query-virtio');
  for (const [name, path] of Object.entries(MV)) await r.status(`fresh ${name}`, path);
  await refusals(r, MV.rng);

  // virtio-rng on virtio-mmio version 1: QueueAlign 256, two requests completed, an indirect
  // chain made available without a notify.
  const rng = new VirtioMmioDriver(m, mmioBase(0), { alloc });
  await rng.init(bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC));
  await r.status('rng legacy features', MV.rng);
  const ring = await rng.setupQueue(0, { num: 8, align: 256 });
  await rng.driverOk();
  for (let k = 0; k < 2; k++) {
    await ring.add([{ addr: buf(8), len: 8, write: true }]);
    await rng.notify(0);
    await ring.waitUsed(1);
  }
  await ring.add([{ addr: buf(4), len: 4 }, { addr: buf(8), len: 8, write: true }], { indirectTable: buf(32) });
  await r.status('rng', MV.rng);
  await r.queue('rng', MV.rng, 0);
  await r.element('rng', MV.rng, 0);
  await r.queue('rng after the element query', MV.rng, 0);

  // virtio-net: a receive buffer kicked before DRIVER_OK.
  const net = new VirtioMmioDriver(m, mmioBase(4), { alloc });
  await net.init(bit(VIRTIO_NET_F_MAC));
  const rx = await net.setupQueue(0, { num: 16 });
  await rx.add([{ addr: buf(1526), len: 1526, write: true }]);
  await net.notify(0);
  await r.status('net kicked before DRIVER_OK', MV.net);
  await r.queue('net', MV.net, 0);
  await r.queue('net tx (not set up)', MV.net, 1);
  await r.element('net', MV.net, 0);

  await r.queue('serial', MV.serial, 0);
  await r.queue('balloon', MV.balloon, 1);
  await r.queue('keyboard', MV.keyboard, 1);

  // vm-running follows the run state; a driver reset clears the queue.
  await r.q('stop', 'stop');
  await r.status('stopped', MV.rng);
  await r.q('cont', 'cont');
  await r.status('running again', MV.rng);
  await rng.reset();
  await r.status('rng reset', MV.rng);
  await r.queue('rng reset', MV.rng, 0);
}

if (qemuOrPolicy('QMP virtio introspection compared with QEMU 7.2')) {
  describe('x-query-virtio* on virtio-ts-qemu and QEMU 7.2, same command line, same script', () => {
    const w = new Workdir();
    const procs: QemuProcess[] = [];
    let ours: string;

    beforeAll(async () => {
      ours = await w.buildOurs();
    }, 60_000);
    afterAll(async () => {
      for (const p of procs) await p.close();
      await w.dispose();
    });

    async function both(machine: string, args: readonly string[]): Promise<{ qemu: Recorder; ours: Recorder }> {
      const [q, o] = await Promise.all([
        launchQemu({ command: QEMU_COMMAND, machine, args, name: 'qemu' }),
        launchQemu({ command: [process.execPath, ours], machine, args, name: 'virtio-ts-qemu' }),
      ]);
      procs.push(q, o);
      return { qemu: new Recorder(q.machine), ours: new Recorder(o.machine) };
    }

    it('pc: rng, blk in flight, legacy net, serial, balloon, keyboard, a packed ring and a broken device', async () => {
      const s = await both('pc', PC_ARGS);
      await Promise.all([pcScript(s.qemu), pcScript(s.ours)]);
      compare(s.qemu, s.ours);

      // Spot checks of what the comparison covered (so an empty or all-error run cannot pass).
      const at = (label: string) => s.ours.entries.find((e) => e.label === label)!.reply;
      expect(returned(at('rng next (indirect): element q0')).descs).toEqual([
        { addr: expect.any(Number), len: 12, flags: ['write'] },
        { addr: expect.any(Number), len: 8, flags: ['write', 'next'] },
        { addr: expect.any(Number), len: 4, flags: ['next'] },
      ]);
      expect(returned(at('rng after the element query: queue 0'))['shadow-avail-idx']).toBe(5);
      expect(returned(at('blk in flight: queue 0')).inuse).toBe(3);
      expect(returned(at('blk completed: queue 0'))['used-idx']).toBe(3);
      expect(returned(at('broken: status')).broken).toBe(true);
      expect(returned(at('net kicked before DRIVER_OK: status'))['started']).toBe(true);
      expect(returned(at('fresh serial: status'))['bus-name']).toBe('ser.0');
      expect(at('packed: element q0')).toEqual({ error: { class: 'GenericError', desc: 'Packed ring not supported' } });
      expect(at('rng indirect table across the end of RAM: element q0 @6')).toEqual({ error: { class: 'GenericError', desc: 'Cannot map indirect buffer' } });
      expect(at('list')).toMatchObject({ return: { length: 8 } });
    }, 60_000);

    it('pc: a chain whose next runs off the ring lists the same descriptors, but only QEMU breaks the device (docs/qemu-differences.md)', async () => {
      const s = await both('pc', ['-device', 'virtio-rng-pci,disable-legacy=on,ioeventfd=off,addr=04.0']);
      const path = '/machine/peripheral-anon/device[0]/virtio-backend';
      const run = async (r: Recorder) => {
        const alloc = new GuestAllocator();
        const d = await VirtioPciDriver.open(await new GuestPciBus(r.m).device(4), { mode: 'modern', alloc });
        await d.init(0n);
        const ring = await d.setupQueue(0, { num: 8 });
        await d.driverOk();
        await ring.writeDesc(2, alloc.alloc(16), 16, VRING_DESC_F_NEXT, 3);
        await ring.writeDesc(3, alloc.alloc(16), 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 8);
        await ring.publish(2);
        await r.element('bad next', path, 0);
        await r.queue('bad next', path, 0);
        // Not recorded: this is where the two differ.
        return (await r.m.qmp!.execute('x-query-virtio-status', { path })) as Record<string, unknown>;
      };
      const [q, o] = await Promise.all([run(s.qemu), run(s.ours)]);
      compare(s.qemu, s.ours);
      expect(returned(s.ours.entries[0]!.reply).descs).toEqual([
        { addr: expect.any(Number), len: 16, flags: ['write', 'next'] },
        { addr: expect.any(Number), len: 16, flags: ['next'] },
      ]);
      const needsReset = (st: Record<string, unknown>) => (st.status as { statuses: string[] }).statuses.includes('VIRTIO_CONFIG_S_NEEDS_RESET: Irrecoverable error, device needs reset');
      expect([q.broken, needsReset(q), q.isr]).toEqual([true, true, 3]);
      expect([o.broken, needsReset(o), o.isr]).toEqual([false, false, 0]);
    }, 30_000);

    it('microvm (virtio-mmio version 1): rng with QueueAlign 256, net kicked before DRIVER_OK, serial, balloon, keyboard', async () => {
      const s = await both('microvm', MICROVM_ARGS);
      await Promise.all([microvmScript(s.qemu), microvmScript(s.ours)]);
      compare(s.qemu, s.ours);
      const at = (label: string) => s.ours.entries.find((e) => e.label === label)!.reply;
      expect(returned(at('rng: queue 0'))['vring-align']).toBe(256);
      expect(returned(at('stopped: status'))['vm-running']).toBe(false);
      expect(returned(at('rng reset: queue 0'))['vring-desc']).toBe(0);
      expect(at('list')).toMatchObject({ return: { length: 5 } });
    }, 30_000);

    it('ours only: a head beyond the ring and an indirect table shorter than a descriptor are refused (QEMU 7.2 aborts on both)', async () => {
      const p = await launchQemu({ command: [process.execPath, ours], machine: 'pc', args: ['-device', 'virtio-rng-pci,disable-legacy=on,ioeventfd=off,addr=04.0'], name: 'virtio-ts-qemu' });
      procs.push(p);
      const r = new Recorder(p.machine);
      const path = '/machine/peripheral-anon/device[0]/virtio-backend';
      const alloc = new GuestAllocator();
      const d = await VirtioPciDriver.open(await new GuestPciBus(r.m).device(4), { mode: 'modern', alloc });
      await d.init(bit(VIRTIO_RING_F_INDIRECT_DESC));
      const ring = await d.setupQueue(0, { num: 8 });
      await d.driverOk();
      await ring.setAvailRingEntry(0, 9);
      await ring.writeDesc(1, alloc.alloc(16), 8, VRING_DESC_F_INDIRECT, 0);
      await ring.setAvailRingEntry(1, 1);
      // A table as long as RAM allows: the walk stops after VIRTQUEUE_MAX_SIZE entries.
      const table = alloc.alloc(16 * 2048);
      const bytes = new Uint8Array(16 * 2048);
      for (let i = 0; i < 2048; i++) bytes.set(descBytes(0x1000, 1, VRING_DESC_F_NEXT, (i + 1) % 2048), 16 * i);
      await r.m.writeBytes(table, bytes);
      await ring.writeDesc(2, table, 16 * 2048, VRING_DESC_F_INDIRECT, 0);
      await ring.setAvailRingEntry(2, 2);
      expect(await r.element('head 9', path, 0, 0)).toEqual({ error: { class: 'GenericError', desc: 'Guest says index 9 is available' } });
      expect(await r.element('short table', path, 0, 1)).toEqual({ error: { class: 'GenericError', desc: 'Invalid size for indirect buffer table' } });
      expect((returned(await r.element('long table', path, 0, 2)).descs as unknown[]).length).toBe(1024);
      expect(returned(await r.status('after', path)).broken).toBe(false);
    }, 30_000);

    it('query-commands lists the five commands on both', async () => {
      const s = await both('microvm', []);
      const names = async (r: Recorder) => (returned(await r.q('commands', 'query-commands')) as unknown as { name: string }[]).map((c) => c.name).filter((n) => n.startsWith('x-query-virtio')).sort();
      const want = ['x-query-virtio', 'x-query-virtio-queue-element', 'x-query-virtio-queue-status', 'x-query-virtio-status', 'x-query-virtio-vhost-queue-status'];
      expect(await names(s.qemu)).toEqual(want);
      expect(await names(s.ours)).toEqual(want);
      expect(returned(await s.ours.q('empty list', 'x-query-virtio'))).toEqual([]);
      expect(returned(await s.qemu.q('empty list', 'x-query-virtio'))).toEqual([]);
    }, 30_000);
  });
}
