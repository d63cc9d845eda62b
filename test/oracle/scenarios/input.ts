// Conformance scenarios of virtio-keyboard, virtio-mouse and virtio-tablet on every transport
// QEMU 7.2 offers them on (PCI, modern only; virtio-mmio v1 and v2): features and queues, every
// select/subsel of the configuration space (bytes, dwords, writes of every width and place, the
// configuration-change notification a question raises), host events sent with QMP
// input-send-event for every QKeyCode, key number, button, axis and odd value, with the evdev
// bytes the device writes compared byte for byte, reports with no room in the ring, odd event
// buffers, the status queue (LEDs, unknown events, short and long buffers), routing between the
// devices (and the PS/2 devices of pc) as the driver activates and resets them, and QMP's
// argument errors. They record; the oracle compares.
import type { VringDriver } from '../../../src/driver/vring.js';
import type { OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import { QKEYCODES } from '../../../src/devices/input/keycodes.js';
import { bringUpDevice, openDevice, configBytes, configDwords, configGeneration, evdevText, hex, mmioNum, noteWritten, postChain, qmpNote, takeUsed, type Posted } from './devrig.js';
import { teardown, type MmioTransport, type PciTransport, type Rig, type Transport } from './rig.js';

type Kind = 'keyboard' | 'mouse' | 'tablet';
/** Where each device is: PCI slot, virtio-mmio transport (devices fill them from the last one). */
const PLACE: Record<Kind, { slot: number; index: number }> = {
  keyboard: { slot: 4, index: 23 },
  mouse: { slot: 5, index: 22 },
  tablet: { slot: 6, index: 21 },
};

function transportOf(base: 'pci' | 'mmio1' | 'mmio2', kind: Kind): Transport {
  const p = PLACE[kind];
  if (base === 'pci') return { kind: 'pci', label: `pci ${kind}`, slot: p.slot, mode: 'modern' } satisfies PciTransport;
  return { kind: 'mmio', label: `mmio v${base === 'mmio1' ? 1 : 2} ${kind}`, version: base === 'mmio1' ? 1 : 2, index: p.index } satisfies MmioTransport;
}

const irqOf = (t: Transport) => (t.kind === 'pci' ? ('intx' as const) : ('mmio' as const));
/** Event and status queues at the device's size (64; virtio-mmio offers 1024, so ask for 64). */
const queues = (t: Transport) => [
  { index: 0, num: mmioNum(t, 64) },
  { index: 1, num: mmioNum(t, 64) },
].map((q) => (q.num === undefined ? { index: q.index } : { index: q.index, num: q.num }));

const ev = (type: string, data: Record<string, unknown>) => ({ type, data });
const qkey = (q: string, down: boolean) => ev('key', { key: { type: 'qcode', data: q }, down });
const nkey = (n: number, down: boolean) => ev('key', { key: { type: 'number', data: n }, down });
const btn = (button: string, down: boolean) => ev('btn', { button, down });
const move = (type: 'rel' | 'abs', axis: string, value: number) => ev(type, { axis, value });

/** Post `n` 8-byte event buffers on the event queue. */
async function postEventBuffers(rig: Rig, evq: VringDriver, n: number, len = 8): Promise<Posted[]> {
  const out: Posted[] = [];
  for (let i = 0; i < n; i++) out.push(await postChain(rig, evq, [len]));
  await rig.drv.notify(0);
  return out;
}

/**
 * Send `events` with input-send-event, then note what came back: the used entries and, for each,
 * the event the device wrote. The buffers used are posted again (one per entry), so the ring keeps
 * `posted.length` buffers available.
 */
async function sendAndRead(rig: Rig, evq: VringDriver, posted: Posted[], events: unknown[], expect: number): Promise<void> {
  const m = rig.m;
  await qmpNote(m, 'input-send-event', { events });
  await m.idle();
  const used = await takeUsed(rig, evq, expect, 'used eventq');
  const parts: string[] = [];
  for (const u of used) {
    const i = posted.findIndex((p) => p.head === u.id);
    if (i < 0) {
      parts.push(`?${u.id}`);
      continue;
    }
    const p = posted[i]!;
    const b = p.bufs[0]!;
    const bytes = await m.quiet(() => m.readBytes(b.addr, b.len));
    parts.push(evdevText(bytes));
    posted.splice(i, 1);
  }
  await m.note(`events ${parts.join(' ')}`);
  await rig.irq?.check();
  if (used.length > 0) {
    posted.push(...(await postEventBuffers(rig, evq, used.length)));
  }
}

/** The questions asked of every device: each select with the subsels that matter. */
const QUESTIONS: readonly (readonly [select: number, subsels: readonly number[]])[] = [
  [0x00, [0, 1]],
  [0x01, [0, 1, 0xff]],
  [0x02, [0]],
  [0x03, [0, 1]],
  [0x10, [0, 1]],
  // EV_BITS: every type a device answers (EV_KEY, EV_REL, EV_ABS, EV_LED, EV_REP) and the others
  // between and around them, which answer nothing.
  [0x11, [0, 1, 2, 3, 4, 5, 0x11, 0x12, 0x14, 0x15, 0x1f]],
  [0x12, [0, 1, 2, 0x2f]],
  [0x13, [0]],
  [0x42, [0]],
  [0xff, [0xff]],
];

function configSpace(t: Transport, kind: Kind): OracleScenario {
  return {
    name: `[${t.label}] features, queues and every configuration answer`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const drv = rig.drv;
      await m.phase('features and queues');
      await drv.reset();
      await drv.setStatus(1);
      await drv.setStatus(3);
      await m.note(`device features ${(await drv.readDeviceFeatures()).toString(16)}`);
      for (let q = 0; q < 3; q++) await m.note(`queue ${q} max ${await drv.queueMax(q)}`);
      if (rig.pciDrv) await m.note(`num_queues ${await rig.pciDrv.numQueues()}`);
      // The config is at most 136 bytes (the structure); a few more show what lies beyond.
      const span = kind === 'keyboard' ? 40 : 56;
      await m.phase('reset state');
      await m.note(`bytes ${hex(await configBytes(rig, span))}`);
      await m.phase('answers');
      for (const [sel, subs] of QUESTIONS) {
        for (const sub of subs) {
          await drv.configWrite(0, 1, sel);
          await drv.configWrite(1, 1, sub);
          await m.note(`select ${sel.toString(16)} subsel ${sub.toString(16)}: ${await configDwords(rig, span)}`);
        }
      }
      await m.phase('widths and places');
      // select and subsel in one 16-bit write, then in a 32-bit one carrying size and reserved too.
      await drv.configWrite(0, 2, 0x0001);
      await m.note(`16-bit write name: ${hex(await configBytes(rig, 12))}`);
      await drv.configWrite(0, 4, 0x1234_0311);
      await m.note(`32-bit write (ev bits, size and reserved given): ${hex(await configBytes(rig, 12))}`);
      for (const size of [1, 2, 4] as const) await m.note(`read at 8 width ${size}: ${(await drv.configRead(8, size)).toString(16)}`);
      await m.note(`read at 2 width 2: ${(await drv.configRead(2, 2)).toString(16)}`);
      // Writes elsewhere: into the answer (which a read rebuilds), past the end (ignored).
      await drv.configWrite(0, 1, 1);
      await drv.configWrite(8, 4, 0xdead_beef);
      await drv.configWrite(span + 8, 4, 0xdead_beef);
      await drv.configWrite(2, 1, 0x77);
      await m.note(`after writes into the answer: ${hex(await configBytes(rig, 16))}`);
      // Subsel first, then select: the question is formed from both bytes as they are.
      await drv.configWrite(1, 1, 0x01);
      await drv.configWrite(0, 1, 0x11);
      await m.note(`subsel then select: ${hex(await configBytes(rig, 12))}`);
      await m.phase('notification of a question');
      await drv.reset();
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      void rings;
      const g0 = await configGeneration(rig);
      await rig.irq!.check();
      await drv.configWrite(0, 1, 3);
      await m.idle();
      const g1 = await configGeneration(rig);
      await m.note(`generation ${g0} -> ${g1}`);
      await rig.irq!.check();
      await drv.configWrite(0, 2, 0x0111);
      await m.idle();
      await m.note(`generation ${await configGeneration(rig)}`);
      await rig.irq!.check();
      await m.phase('reset keeps the question');
      await drv.reset();
      await m.note(`after reset: ${hex(await configBytes(rig, 12))}`);
      await teardown(rig);
    },
  };
}

/** Every QKeyCode pressed and released, in groups that fit the ring, with the evdev codes sent. */
function keyboardAllKeys(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] every QKeyCode, key numbers, SysRq, an unmapped key`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      const evq = rings.get(0)!;
      const posted = await postEventBuffers(rig, evq, 48);
      await m.phase('one key');
      await sendAndRead(rig, evq, posted, [qkey('a', true)], 2);
      await sendAndRead(rig, evq, posted, [qkey('a', false)], 2);
      await m.phase('a chord in one report');
      await sendAndRead(rig, evq, posted, [qkey('ctrl', true), qkey('alt', true), qkey('delete', true)], 4);
      await sendAndRead(rig, evq, posted, [qkey('delete', false), qkey('alt', false), qkey('ctrl', false)], 4);
      await m.phase('every qcode');
      const keys = QKEYCODES.filter((q) => q !== 'unmapped');
      for (let i = 0; i < keys.length; i += 8) {
        const group = keys.slice(i, i + 8);
        await sendAndRead(rig, evq, posted, group.map((q) => qkey(q, true)), group.length + 1);
        await sendAndRead(rig, evq, posted, group.map((q) => qkey(q, false)), group.length + 1);
      }
      await m.phase('unmapped and sysrq');
      await sendAndRead(rig, evq, posted, [qkey('unmapped', true)], 1);
      await sendAndRead(rig, evq, posted, [qkey('sysrq', true), qkey('sysrq', false)], 3);
      await m.phase('key numbers (each with its own SYN)');
      await sendAndRead(rig, evq, posted, [nkey(0x1e, true), nkey(0x1e, false)], 4);
      await sendAndRead(rig, evq, posted, [nkey(0x9c, true), nkey(0xb7, true), nkey(0x54, true)], 6);
      await sendAndRead(rig, evq, posted, [nkey(0, true), nkey(0xff, true), nkey(-1, true), nkey(0x1000, true)], 4);
      await sendAndRead(rig, evq, posted, [nkey(0x2a, true), qkey('b', true), nkey(0x2a, false), qkey('b', false)], 6);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function mouseEvents(t: Transport, kind: 'mouse' | 'tablet'): OracleScenario {
  return {
    name: `[${t.label}] buttons, wheel, ${kind === 'mouse' ? 'relative' : 'absolute'} motion and odd values`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      const evq = rings.get(0)!;
      const posted = await postEventBuffers(rig, evq, 32);
      await m.phase('buttons');
      for (const b of ['left', 'middle', 'right', 'side', 'extra']) {
        await sendAndRead(rig, evq, posted, [btn(b, true)], 2);
        await sendAndRead(rig, evq, posted, [btn(b, false)], 2);
      }
      await m.phase('wheel');
      for (const b of ['wheel-up', 'wheel-down']) {
        await sendAndRead(rig, evq, posted, [btn(b, true)], 2);
        await sendAndRead(rig, evq, posted, [btn(b, false)], 2);
      }
      await sendAndRead(rig, evq, posted, [btn('wheel-left', true), btn('wheel-right', true)], 1);
      await m.phase('motion');
      const type = kind === 'mouse' ? 'rel' : 'abs';
      await sendAndRead(rig, evq, posted, [move(type, 'x', 10), move(type, 'y', 20)], 3);
      await sendAndRead(rig, evq, posted, [move(type, 'x', -5)], 2);
      await sendAndRead(rig, evq, posted, [move(type, 'x', 0x7fff), move(type, 'y', 0x8000)], 3);
      await sendAndRead(rig, evq, posted, [move(type, 'x', 2 ** 31), move(type, 'y', -(2 ** 31) - 1)], 3);
      await sendAndRead(rig, evq, posted, [move(type, 'x', 2 ** 40 + 7), move(type, 'y', 0)], 3);
      await m.phase('drag: button, motion, button in one report');
      await sendAndRead(rig, evq, posted, [btn('left', true), move(type, 'x', 1), move(type, 'y', 2), btn('left', false)], 5);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

/** Reports that find fewer buffers than events: dropped whole, the buffers left for the next one. */
function noRoom(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] reports with no room: dropped whole, buffers kept`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      const evq = rings.get(0)!;
      const posted: Posted[] = [];
      await m.phase('no buffer at all');
      await sendAndRead(rig, evq, posted, [qkey('a', true)], 0);
      await m.phase('one buffer for a two-event report');
      posted.push(...(await postEventBuffers(rig, evq, 1)));
      await sendAndRead(rig, evq, posted, [qkey('b', true)], 0);
      await m.note(`avail_event/used.idx ${await evq.usedIdx()}`);
      await m.phase('two buffers, three-event report, then a two-event one');
      posted.push(...(await postEventBuffers(rig, evq, 1)));
      await sendAndRead(rig, evq, posted, [qkey('c', true), qkey('d', true)], 0);
      await sendAndRead(rig, evq, posted, [qkey('c', false)], 2);
      await m.phase('the key released earlier is not sent again');
      posted.push(...(await postEventBuffers(rig, evq, 4)));
      await sendAndRead(rig, evq, posted, [qkey('e', true)], 2);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

/** Event buffers that are not 8 writable bytes. */
function oddEventBuffers(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] event buffers of 4, 3+5, 16 and readable-only bytes`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      const evq = rings.get(0)!;
      const chains: Posted[] = [];
      chains.push(await postChain(rig, evq, [4]));
      chains.push(await postChain(rig, evq, [3, 5]));
      chains.push(await postChain(rig, evq, [16]));
      chains.push(await postChain(rig, evq, [8], { write: false }));
      await rig.drv.notify(0);
      await qmpNote(m, 'input-send-event', { events: [qkey('a', true), qkey('b', true), qkey('c', true)] });
      await m.idle();
      await takeUsed(rig, evq, 4, 'used eventq');
      for (const c of chains) await noteWritten(rig, c);
      await rig.irq!.check();
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

/** The status queue: LEDs and what is not an LED event, in buffers of every shape. */
function statusQueue(t: Transport): OracleScenario {
  const evbytes = (type: number, code: number, value: number): Uint8Array => {
    const b = new Uint8Array(8);
    const dv = new DataView(b.buffer);
    dv.setUint16(0, type, true);
    dv.setUint16(2, code, true);
    dv.setUint32(4, value, true);
    return b;
  };
  return {
    name: `[${t.label}] status queue: LEDs, unknown events, short, long and writable buffers`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { queues: queues(t), irq: irqOf(t) });
      const stq = rings.get(1)!;
      await m.phase('LED events');
      for (const [code, value] of [[0, 1], [1, 1], [2, 1], [1, 0], [5, 1], [0, 0x100]] as const) {
        await postChain(rig, stq, [8], { write: false, fill: [evbytes(0x11, code, value)] });
      }
      await rig.drv.notify(1);
      await m.idle();
      await takeUsed(rig, stq, 6, 'used statusq');
      await rig.irq!.check();
      await m.phase('other events and shapes');
      const shapes: Posted[] = [];
      shapes.push(await postChain(rig, stq, [8], { write: false, fill: [evbytes(0x01, 30, 1)] }));
      shapes.push(await postChain(rig, stq, [4], { write: false, fill: [evbytes(0x11, 0, 1).subarray(0, 4)] }));
      shapes.push(await postChain(rig, stq, [16], { write: false, fill: [new Uint8Array([0x11, 0, 1, 0, 1, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9])] }));
      shapes.push(await postChain(rig, stq, [3, 5], { write: false, fill: [new Uint8Array([0x11, 0, 2]), new Uint8Array([0, 1, 0, 0, 0])] }));
      shapes.push(await postChain(rig, stq, [8], { write: true }));
      shapes.push(await postChain(rig, stq, [2, 8], { write: false, fill: [new Uint8Array([0x11, 0])] }));
      await rig.drv.notify(1);
      await m.idle();
      await takeUsed(rig, stq, shapes.length, 'used statusq');
      for (const s of shapes) if (s.bufs.some((b) => b.write)) await noteWritten(rig, s);
      await rig.irq!.check();
      await m.phase('a notify with nothing posted');
      await rig.drv.notify(1);
      await m.idle();
      await rig.irq!.check();
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

/**
 * Routing: an inactive device (before DRIVER_OK, after a reset) is behind the PS/2 devices of pc;
 * the device that became active last takes the events of its kinds. Run on the keyboard's
 * transport, with the mouse and the tablet driven too.
 */
function routing(base: 'pci' | 'mmio1' | 'mmio2'): OracleScenario {
  const tk = transportOf(base, 'keyboard');
  return {
    name: `[${tk.label}] routing between devices as they become active and are reset`,
    async run(ctx) {
      const kb = await openDevice(ctx, tk);
      const m = kb.m;
      const mo = await openDevice(ctx, transportOf(base, 'mouse'));
      const ta = await openDevice(ctx, transportOf(base, 'tablet'));
      await m.phase('nothing active');
      await qmpNote(m, 'input-send-event', { events: [qkey('a', true)] });
      await qmpNote(m, 'input-send-event', { events: [btn('left', true)] });
      await qmpNote(m, 'input-send-event', { events: [move('rel', 'x', 1)] });
      await qmpNote(m, 'input-send-event', { events: [move('abs', 'x', 1)] });
      await m.phase('keyboard set up, no DRIVER_OK');
      const kr = await bringUpDevice(kb, { queues: queues(tk), noDriverOk: true });
      const kq = kr.get(0)!;
      const kposted = await postEventBuffers(kb, kq, 8);
      await sendAndRead(kb, kq, kposted, [qkey('a', true)], 0);
      await m.phase('keyboard DRIVER_OK');
      await kb.drv.driverOk();
      await sendAndRead(kb, kq, kposted, [qkey('a', false)], 2);
      await m.phase('mouse then tablet active: buttons go to the tablet');
      const mr = await bringUpDevice(mo, { queues: queues(mo.t) });
      const mq = mr.get(0)!;
      const mposted = await postEventBuffers(mo, mq, 8);
      const tr = await bringUpDevice(ta, { queues: queues(ta.t) });
      const tq = tr.get(0)!;
      const tposted = await postEventBuffers(ta, tq, 8);
      await sendAndRead(ta, tq, tposted, [btn('left', true)], 2);
      await sendAndRead(mo, mq, mposted, [], 0);
      await m.phase('relative motion still goes to the mouse');
      await sendAndRead(mo, mq, mposted, [move('rel', 'x', 3)], 2);
      await m.phase('tablet reset: buttons to the mouse');
      await ta.drv.reset();
      await sendAndRead(mo, mq, mposted, [btn('left', false)], 2);
      await sendAndRead(ta, tq, tposted, [move('abs', 'x', 9)], 0);
      await m.phase('keyboard reset: keys go elsewhere');
      await kb.drv.reset();
      await sendAndRead(kb, kq, kposted, [qkey('z', true)], 0);
      await m.phase('mixed kinds in one command: each to its device');
      await ta.drv.reset();
      const tr2 = await bringUpDevice(ta, { queues: queues(ta.t) });
      const tq2 = tr2.get(0)!;
      const tposted2 = await postEventBuffers(ta, tq2, 8);
      await qmpNote(m, 'input-send-event', { events: [move('rel', 'x', 1), move('abs', 'y', 2), btn('right', true)] });
      await m.idle();
      await takeUsed(mo, mq, 2, 'used mouse eventq');
      await takeUsed(ta, tq2, 3, 'used tablet eventq');
      void tposted2;
      await m.phase('reset');
      await teardown(kb);
      await teardown(mo);
      await teardown(ta);
    },
  };
}

/** QMP input-send-event's argument checks and refusals, on a machine that has all three devices. */
function qmpErrors(base: 'pci' | 'mmio1' | 'mmio2'): OracleScenario {
  const t = transportOf(base, 'keyboard');
  return {
    name: `[${t.label}] input-send-event argument errors and refusals`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const bad: Record<string, unknown>[] = [
        {},
        { events: {} },
        { events: [5] },
        { events: [{}] },
        { events: [{ type: 'bogus', data: {} }] },
        { events: [{ type: 'key' }] },
        { events: [{ type: 7, data: {} }] },
        { events: [{ type: 'key', data: 5 }] },
        { events: [{ type: 'key', data: {} }] },
        { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a' } } }] },
        { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'nope' }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'qcode', data: 1 }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'number', data: 'a' }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'number', data: 1.5 }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'foo', data: 1 }, down: true } }] },
        { events: [{ type: 'key', data: { key: { data: 1 }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a', x: 1 }, down: true } }] },
        { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a' }, down: 1 } }] },
        { events: [{ type: 'btn', data: { button: 'fifth', down: true } }] },
        { events: [{ type: 'rel', data: { axis: 'z', value: 1 } }] },
        { events: [{ type: 'rel', data: { axis: 'x', value: '1' } }] },
        { events: [{ type: 'rel', data: { axis: 'x' } }] },
        { events: [{ type: 'rel', data: { axis: 'x', value: 1, extra: 2 } }] },
        { events: [{ type: 'rel', data: { axis: 'x', value: 1 }, x: 1 }] },
        { events: [], x: 1 },
        { events: [], device: 5 },
        { events: [], device: 'nope' },
        { events: [], head: 'x' },
        { events: [], device: 'nope', head: 2 },
        { events: [qkey('a', true)], device: 'kbd' },
        { events: [], device: 'kbd', head: 1 },
        { events: [qkey('a', true), { type: 'rel', data: { axis: 'q', value: 0 } }] },
      ];
      await m.phase('argument errors');
      for (const a of bad) await qmpNote(m, 'input-send-event', a);
      await m.phase('accepted with nothing to do');
      await qmpNote(m, 'input-send-event', { events: [] });
      await qmpNote(m, 'input-send-event', { events: [], head: 3 });
      await m.phase('VM not running');
      await qmpNote(m, 'stop');
      await qmpNote(m, 'input-send-event', { events: [qkey('a', true)] });
      await qmpNote(m, 'input-send-event', { events: [] });
      await qmpNote(m, 'cont');
      await qmpNote(m, 'query-status');
    },
  };
}

function groupsFor(base: 'pci' | 'mmio1' | 'mmio2'): OracleScenario[] {
  const out: OracleScenario[] = [];
  for (const kind of ['keyboard', 'mouse', 'tablet'] as const) out.push(configSpace(transportOf(base, kind), kind));
  // The key maps do not depend on the transport: every QKeyCode on PCI and on virtio-mmio v2.
  if (base !== 'mmio1') out.push(keyboardAllKeys(transportOf(base, 'keyboard')));
  out.push(mouseEvents(transportOf(base, 'mouse'), 'mouse'));
  out.push(mouseEvents(transportOf(base, 'tablet'), 'tablet'));
  out.push(noRoom(transportOf(base, 'keyboard')));
  out.push(oddEventBuffers(transportOf(base, 'mouse')));
  out.push(statusQueue(transportOf(base, 'keyboard')));
  out.push(statusQueue(transportOf(base, 'tablet')));
  out.push(routing(base));
  out.push(qmpErrors(base));
  return out;
}

const MMIO_INPUT = ['-device', 'virtio-keyboard-device,id=kbd', '-device', 'virtio-mouse-device', '-device', 'virtio-tablet-device'];

export const INPUT_GROUPS: OracleGroup[] = [
  {
    name: 'pc, virtio-keyboard-pci at 04.0, virtio-mouse-pci at 05.0, virtio-tablet-pci at 06.0',
    spec: { machine: 'pc', args: ['-device', 'virtio-keyboard-pci,addr=04.0,id=kbd', '-device', 'virtio-mouse-pci,addr=05.0', '-device', 'virtio-tablet-pci,addr=06.0'] },
    scenarios: groupsFor('pci'),
  },
  {
    // wheel-axis=off: QEMU chose the configuration table before the property was set (still the
    // wheel one), but sends the wheel as the BTN_GEAR buttons.
    name: 'pc, virtio-mouse-pci,wheel-axis=off at 05.0',
    spec: { machine: 'pc', args: ['-device', 'virtio-mouse-pci,addr=05.0,wheel-axis=off'] },
    scenarios: [configSpace(transportOf('pci', 'mouse'), 'mouse'), mouseEvents(transportOf('pci', 'mouse'), 'mouse')],
  },
  { name: 'microvm, virtio-keyboard/mouse/tablet-device on virtio-mmio v1', spec: { machine: 'microvm', args: MMIO_INPUT }, scenarios: groupsFor('mmio1') },
  {
    name: 'microvm, virtio-keyboard/mouse/tablet-device on virtio-mmio v2',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', ...MMIO_INPUT] },
    scenarios: groupsFor('mmio2'),
  },
];
