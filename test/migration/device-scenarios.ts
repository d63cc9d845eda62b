// Migration scenarios of virtio-input and virtio-balloon: one driver script each, run on a
// source, migrated, and continued on the destination (QEMU 7.2 or ours at either end; the runner
// and the QMP sequence are harness.ts's).
//
//   input:   a keyboard (or tablet) with events delivered into the used ring that the guest has
//            not read yet and their interrupt pending, event buffers still posted, LEDs set on
//            the status queue, a configuration question asked; after migration the events are
//            there, the interrupt is pending, the device is active (post_load) and takes host
//            input into the buffers still posted, the question reads as never asked (QEMU does
//            not migrate it).
//   balloon: a target set over QMP, `actual` written by the guest, pages inflated (zero) and
//            deflated, the stats buffer held by the device (popped, not used), the poison value;
//            after migration query-balloon and the configuration read the same, the device takes
//            the stats buffer again when the VM starts and gives it back when polled, pages keep
//            their contents, inflation goes on.
//
// Every snapshot is MigRig's (registers, configuration space, queue 0's used ring, guest RAM).
import { expect } from 'vitest';
import { poll } from '../../src/driver/machine.js';
import type { VringDriver } from '../../src/driver/vring.js';
import type { OracleMachineSpec } from '../../src/oracle/scenario.js';
import { VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_RING_F_EVENT_IDX, bit } from '../../src/virtio/constants.js';
import { VIRTIO_BALLOON_F_FREE_PAGE_HINT, VIRTIO_BALLOON_F_PAGE_POISON, VIRTIO_BALLOON_F_STATS_VQ } from '../../src/devices/balloon/virtio-balloon.js';
import type { MigrationContext, MigrationScenario } from './harness.js';
import { CANARY, GUARD, MigRig, diffSnapshots, type Allowance, type IrqMode, type Snapshot, type Transport } from './rig.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const STATS = bit(VIRTIO_BALLOON_F_STATS_VQ);
const POISON = bit(VIRTIO_BALLOON_F_PAGE_POISON);
const HINT = bit(VIRTIO_BALLOON_F_FREE_PAGE_HINT);

/** The configuration generation is not migrated (QEMU 7.2 keeps it out of virtio_save). */
const GEN_ALLOW = new Map<string, Allowance>([
  ['common.config_generation', () => true],
  ['mmio.config_generation', () => true],
]);

function expectSame(before: Snapshot, after: Snapshot, rig: MigRig): void {
  const d = diffSnapshots(before, after, GEN_ALLOW);
  expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
}

async function qmp(ctx: MigrationContext, cmd: string, args?: Record<string, unknown>): Promise<unknown> {
  const q = ctx.m.qmp;
  if (!q) throw new Error('no QMP');
  return q.execute(cmd, args);
}

/** Set up queue 0 with MigRig (interrupts, snapshots), then the others, then DRIVER_OK. */
async function bringUpAll(rig: MigRig, o: { features: bigint; irq: IrqMode; queues: readonly { index: number; num?: number }[]; driverOk?: boolean }): Promise<Map<number, VringDriver>> {
  const q0 = o.queues[0]!;
  const rings = new Map<number, VringDriver>();
  rings.set(0, await rig.bringUp({ features: o.features, irq: o.irq, driverOk: false, ...(q0.num !== undefined ? { num: q0.num } : {}) }));
  for (const q of o.queues.slice(1)) {
    rings.set(q.index, await rig.drv.setupQueue(q.index, q.num !== undefined ? { num: q.num } : {}));
    if (rig.qSlot) await rig.pciDrv!.msixSetupQueue(q.index, 1, rig.qSlot.addr);
  }
  rig.mmioQueueSel = o.queues[o.queues.length - 1]!.index;
  if (o.driverOk ?? true) await rig.drv.driverOk();
  return rings;
}

/**
 * A configuration interrupt came (after `mark`): acknowledge it the way the transport does
 * (ISR read; InterruptStatus and ACK), checking the configuration bit.
 */
async function ackConfigInterrupt(ctx: MigrationContext, rig: MigRig, mark: number): Promise<void> {
  if (rig.irqMode === 'intx' || rig.irqMode === 'mmio') await poll(ctx.m, () => ctx.m.irq.find(rig.line, true, mark), { timeoutMs: 2000, what: 'configuration interrupt' });
  if (rig.pciDrv) {
    expect((await rig.pciDrv.isr()) & 2, `${rig.where}: ISR configuration bit`).toBe(2);
  } else {
    expect((await rig.mmioDrv!.interruptStatus()) & 2, `${rig.where}: InterruptStatus configuration bit`).toBe(2);
    await rig.mmioDrv!.ackInterrupt();
  }
  if (rig.cfgSlot) await ctx.m.writel(rig.cfgSlot.addr, 0);
}

const mmioNum = (t: Transport, n: number): number | undefined => (t.kind === 'mmio' ? n : undefined);
const withNum = (index: number, num: number | undefined) => (num === undefined ? { index } : { index, num });

// --- input -----------------------------------------------------------------------------------------

/** One 8-byte event buffer, canary-filled, posted (not notified). */
async function postEvent(rig: MigRig, ring: VringDriver): Promise<{ head: number; addr: number }> {
  const b = await rig.newBuffer(8);
  const head = await ring.add([{ addr: b.addr, len: 8, write: true }]);
  expect(head, 'free descriptor').toBeGreaterThanOrEqual(0);
  return { head, addr: b.addr };
}

const key = (q: string, down: boolean) => ({ type: 'key', data: { key: { type: 'qcode', data: q }, down } });

/** The events written for used entries `used`, as "type:code:value". */
async function eventsOf(rig: MigRig, posted: readonly { head: number; addr: number }[], used: readonly { id: number; len: number }[]): Promise<string[]> {
  const out: string[] = [];
  for (const u of used) {
    const p = posted.find((x) => x.head === u.id);
    if (!p) {
      out.push(`?${u.id}`);
      continue;
    }
    const b = await rig.m.readBytes(p.addr, 8 + GUARD);
    expect(b.subarray(8).every((x) => x === CANARY), `${rig.where}: guard after event buffer ${u.id}`).toBe(true);
    const dv = new DataView(b.buffer, b.byteOffset);
    out.push(`${dv.getUint16(0, true).toString(16)}:${dv.getUint16(2, true).toString(16)}:${dv.getUint32(4, true)}`);
  }
  return out;
}

function inputScenario(name: string, spec: OracleMachineSpec, t: Transport, kind: 'keyboard' | 'tablet', irq: IrqMode): MigrationScenario {
  return {
    name: `[${t.label}] ${name}`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const rings = await bringUpAll(rig, { features: EI, irq, queues: [withNum(0, mmioNum(t, 64)), withNum(1, mmioNum(t, 64))] });
      const evq = rings.get(0)!;
      const stq = rings.get(1)!;
      const posted: { head: number; addr: number }[] = [];
      for (let i = 0; i < 8; i++) posted.push(await postEvent(rig, evq));
      await rig.drv.notify(0);
      // LEDs from the guest (a keyboard's; the tablet takes them too, as QEMU's HID devices do).
      const led = new Uint8Array([0x11, 0, 1, 0, 1, 0, 0, 0]);
      const lb = await rig.newBuffer(8);
      await ctx.m.writeBytes(lb.addr, led);
      await stq.add([{ addr: lb.addr, len: 8, write: false }]);
      const stMark = ctx.m.irq.mark();
      await rig.drv.notify(1);
      await stq.waitUsed(1, { timeoutMs: 2000, what: 'status buffer back' });
      await rig.expectInterrupt(stMark, true);
      // A question asked and answered: its bytes are what virtio_save writes as the config. Each
      // write of the question notifies a configuration change.
      let mark = ctx.m.irq.mark();
      await rig.drv.configWrite(0, 1, 0x01);
      await rig.drv.configWrite(1, 1, 0x00);
      expect(await rig.drv.configRead(2, 1), 'ID_NAME size').toBe(kind === 'keyboard' ? 21 : 19);
      await ackConfigInterrupt(ctx, rig, mark);
      // One report read and acknowledged, one left in the used ring with its interrupt pending.
      const ev1 = kind === 'keyboard' ? [key('a', true)] : [{ type: 'abs', data: { axis: 'x', value: 100 } }];
      const ev2 = kind === 'keyboard' ? [key('a', false), key('b', true)] : [{ type: 'btn', data: { button: 'left', down: true } }];
      mark = ctx.m.irq.mark();
      await qmp(ctx, 'input-send-event', { events: ev1 });
      const u1 = await evq.waitUsed(2, { timeoutMs: 2000, what: 'first report' });
      await rig.expectInterrupt(mark, true);
      mark = ctx.m.irq.mark();
      await qmp(ctx, 'input-send-event', { events: ev2 });
      await poll(ctx.m, async () => (await evq.usedIdx()) === 2 + ev2.length + 1, { timeoutMs: 2000, what: 'second report in the used ring' });
      await rig.expectInterrupt(mark, false);
      const first = await eventsOf(rig, posted, u1);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      expectSame(before, after, rig);
      // The report the guest had not read yet is there, and its interrupt.
      const u2 = await evq.waitUsed(ev2.length + 1, { timeoutMs: 2000, what: 'second report after migration' });
      const second = await eventsOf(rig, posted, u2);
      expect(first, 'first report').toEqual(kind === 'keyboard' ? ['1:1e:1', '0:0:0'] : ['3:0:100', '0:0:0']);
      expect(second, 'second report').toEqual(kind === 'keyboard' ? ['1:1e:0', '1:30:1', '0:0:0'] : ['1:110:1', '0:0:0']);
      await rig.ackCarriedInterrupt();
      // QEMU does not migrate the question: the destination answers "nothing asked".
      expect(await rig.drv.configRead(2, 1), `${rig.where}: size before a question`).toBe(0);
      expect(await rig.drv.configRead(0, 1), `${rig.where}: select before a question`).toBe(0);
      // Active after load (post_load): host input reaches the buffers still posted.
      mark = ctx.m.irq.mark();
      const ev3 = kind === 'keyboard' ? [key('b', false)] : [{ type: 'btn', data: { button: 'left', down: false } }];
      await qmp(ctx, 'input-send-event', { events: ev3 });
      const u3 = await evq.waitUsed(2, { timeoutMs: 2000, what: 'a report after migration' });
      expect(await eventsOf(rig, posted, u3), `${rig.where}: report after migration`).toEqual(kind === 'keyboard' ? ['1:30:0', '0:0:0'] : ['1:110:0', '0:0:0']);
      await rig.expectInterrupt(mark, true);
      // More reports than buffers left: dropped whole, the buffer kept for the next one.
      await qmp(ctx, 'input-send-event', { events: kind === 'keyboard' ? [key('c', true), key('d', true)] : [{ type: 'abs', data: { axis: 'x', value: 1 } }, { type: 'abs', data: { axis: 'y', value: 2 } }] });
      await new Promise((r) => setTimeout(r, 20));
      expect(await evq.usedIdx(), `${rig.where}: a report that does not fit is dropped`).toBe(evq.lastUsedIdx);
      // The status queue and the configuration work; a reset and a new set-up too.
      await rig.drv.configWrite(0, 2, 0x0001);
      expect(await rig.drv.configRead(2, 1), 'ID_NAME size').toBe(kind === 'keyboard' ? 21 : 19);
      await rig.drv.reset();
      const again = await bringUpAll(rig, { features: 0n, irq, queues: [withNum(0, mmioNum(t, 64)), withNum(1, mmioNum(t, 64))] });
      const p2: { head: number; addr: number }[] = [];
      for (let i = 0; i < 4; i++) p2.push(await postEvent(rig, again.get(0)!));
      await rig.drv.notify(0);
      await qmp(ctx, 'input-send-event', { events: ev1 });
      const u4 = await again.get(0)!.waitUsed(2, { timeoutMs: 2000, what: 'a report after reset' });
      expect(await eventsOf(rig, p2, u4)).toEqual(first);
    },
  };
}

function inputBeforeDriverOk(spec: OracleMachineSpec, t: Transport): MigrationScenario {
  return {
    name: `[${t.label}] keyboard migrated before DRIVER_OK: inactive until the destination sets it`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      const rings = await bringUpAll(rig, { features: 0n, irq: t.kind === 'pci' ? 'intx' : 'mmio', queues: [withNum(0, mmioNum(t, 64)), withNum(1, mmioNum(t, 64))], driverOk: false });
      const evq = rings.get(0)!;
      const posted: { head: number; addr: number }[] = [];
      for (let i = 0; i < 4; i++) posted.push(await postEvent(rig, evq));
      await rig.drv.notify(0);
      await qmp(ctx, 'input-send-event', { events: [key('a', true)] });
      await new Promise((r) => setTimeout(r, 20));
      expect(await evq.usedIdx(), 'no events before DRIVER_OK').toBe(0);
      const before = await rig.snapshot();
      await ctx.migrate();
      expectSame(before, await rig.snapshot(), rig);
      await qmp(ctx, 'input-send-event', { events: [key('a', false)] });
      await new Promise((r) => setTimeout(r, 20));
      expect(await evq.usedIdx(), `${rig.where}: still inactive`).toBe(0);
      await rig.drv.driverOk();
      expect((await rig.drv.status()) & VIRTIO_CONFIG_S_DRIVER_OK).toBe(VIRTIO_CONFIG_S_DRIVER_OK);
      await qmp(ctx, 'input-send-event', { events: [key('z', true)] });
      const u = await evq.waitUsed(2, { timeoutMs: 2000, what: 'a report after DRIVER_OK' });
      expect(await eventsOf(rig, posted, u)).toEqual(['1:2c:1', '0:0:0']);
    },
  };
}

// --- balloon ---------------------------------------------------------------------------------------

function pfnBytes(pfns: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * pfns.length);
  const dv = new DataView(b.buffer);
  pfns.forEach((p, i) => dv.setUint32(4 * i, p, true));
  return b;
}

function stats(pairs: readonly (readonly [number, bigint])[]): Uint8Array {
  const b = new Uint8Array(10 * pairs.length);
  const dv = new DataView(b.buffer);
  pairs.forEach(([t, v], i) => {
    dv.setUint16(10 * i, t, true);
    dv.setBigUint64(10 * i + 2, v, true);
  });
  return b;
}

/** Pages the scenario inflates: outside the allocator window and the sentinels. */
const INFLATED = [0x900, 0x901, 0x905];

async function inflate(rig: MigRig, ring: VringDriver, queue: number, pfns: readonly number[]): Promise<void> {
  const b = await rig.newBuffer(4 * pfns.length);
  await rig.m.writeBytes(b.addr, pfnBytes(pfns));
  await ring.add([{ addr: b.addr, len: 4 * pfns.length, write: false }]);
  await rig.drv.notify(queue);
  const u = await ring.waitUsed(1, { timeoutMs: 2000, what: `${queue === 0 ? 'inflate' : 'deflate'} buffer back` });
  expect(u.map((e) => e.len), 'used.len of a balloon buffer').toEqual([0]);
}

function balloonScenario(name: string, spec: OracleMachineSpec, t: Transport, o: { features: bigint; hint?: boolean }): MigrationScenario {
  const path = '/machine/peripheral/balloon0';
  const modern = t.kind === 'pci' ? t.mode === 'modern' : t.version === 2;
  return {
    name: `[${t.label}] ${name}`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const irq: IrqMode = t.kind === 'pci' ? 'intx' : 'mmio';
      const queues = [withNum(0, mmioNum(t, 128)), withNum(1, mmioNum(t, 128)), withNum(2, mmioNum(t, 128))];
      if (o.hint) queues.push(withNum(3, mmioNum(t, 1024)));
      const rings = await bringUpAll(rig, { features: o.features, irq, queues });
      const ivq = rings.get(0)!;
      const dvq = rings.get(1)!;
      const svq = rings.get(2)!;
      // A target: num_pages and a configuration interrupt (acknowledged).
      let mark = ctx.m.irq.mark();
      await qmp(ctx, 'balloon', { value: 12 << 20 });
      await ackConfigInterrupt(ctx, rig, mark);
      expect(await rig.drv.configRead(0, 4), 'num_pages').toBe(1024);
      // The guest inflates, deflates one page, and says how far it got.
      for (const p of [...INFLATED, 0x903]) await ctx.m.memset(p * 4096, 4096, 0x3c);
      mark = ctx.m.irq.mark();
      await inflate(rig, ivq, 0, INFLATED);
      await rig.expectInterrupt(mark, true);
      mark = ctx.m.irq.mark();
      await inflate(rig, dvq, 1, [0x905]);
      await rig.expectInterrupt(mark, true);
      await rig.drv.configWrite(4, 4, INFLATED.length - 1);
      if (o.features & POISON) await rig.drv.configWrite(12, 4, 0xaa);
      // A stats buffer the device keeps (popped, not used) until it polls.
      const sb = await rig.newBuffer(30);
      await ctx.m.writeBytes(sb.addr, stats([[4, 0x1234n], [5, 16n << 20n], [0, 7n]]));
      await svq.add([{ addr: sb.addr, len: 30, write: false }]);
      await rig.drv.notify(2);
      await new Promise((r) => setTimeout(r, 20));
      expect(await svq.usedIdx(), 'the stats buffer is held').toBe(0);
      const statsBefore = ((await qmp(ctx, 'qom-get', { path, property: 'guest-stats' })) as { stats: Record<string, number> }).stats;
      expect(statsBefore['stat-free-memory'], 'stats read').toBe(0x1234);
      const queryBefore = await qmp(ctx, 'query-balloon');
      const configBefore = [await rig.drv.configRead(0, 4), await rig.drv.configRead(4, 4)];
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      if (o.hint) {
        // Migration asks a hinting guest for hints and then says DONE: a configuration
        // interrupt and a new command id, on QEMU and ours alike.
        const allow = new Map<string, Allowance>([...GEN_ALLOW]);
        for (const k of ['cfg[0x04]', 'legacy.status', 'mmio.interrupt_status']) allow.set(k, () => true);
        const d = diffSnapshots(before, after, allow);
        expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
        expect(await rig.drv.configRead(8, 4), `${rig.where}: free_page_hint_cmd_id reads DONE`).toBe(1);
        await ackConfigInterrupt(ctx, rig, 0);
      } else {
        expectSame(before, after, rig);
      }
      expect(await qmp(ctx, 'query-balloon'), `${rig.where}: query-balloon`).toEqual(queryBefore);
      expect([await rig.drv.configRead(0, 4), await rig.drv.configRead(4, 4)], `${rig.where}: num_pages, actual`).toEqual(configBefore);
      if ((o.features & POISON) && modern) expect(await rig.drv.configRead(12, 4), `${rig.where}: poison_val`).toBe(0xaa);
      // Inflated pages are still zero, the deflated one and its neighbour untouched by migration.
      for (const p of INFLATED) {
        const b = await ctx.m.readBytes(p * 4096, 4096);
        expect(b.every((x) => x === 0), `${rig.where}: page 0x${p.toString(16)} reads as zeros`).toBe(true);
      }
      expect((await ctx.m.readBytes(0x903 * 4096, 16)).every((x) => x === 0x3c), `${rig.where}: page 0x903`).toBe(true);
      // The device took the stats buffer again when the VM started: polling gives it back.
      const statsAfter = ((await qmp(ctx, 'qom-get', { path, property: 'guest-stats' })) as { stats: Record<string, number> }).stats;
      expect(statsAfter, `${rig.where}: stats re-read from the buffer taken again`).toEqual(statsBefore);
      mark = ctx.m.irq.mark();
      await qmp(ctx, 'qom-set', { path, property: 'guest-stats-polling-interval', value: 1 });
      const su = await svq.waitUsed(1, { timeoutMs: 3000, stepNs: 50_000_000, what: 'the stats buffer back after polling' });
      expect(su.map((e) => `${e.id}:${e.len}`), `${rig.where}: stats buffer returned`).toEqual(['0:0']);
      await rig.expectInterrupt(mark, true);
      await qmp(ctx, 'qom-set', { path, property: 'guest-stats-polling-interval', value: 0 });
      // Inflation goes on; a new target reaches the guest.
      await ctx.m.memset(0x906 * 4096, 4096, 0x3c);
      mark = ctx.m.irq.mark();
      await inflate(rig, ivq, 0, [0x906]);
      await rig.expectInterrupt(mark, true);
      expect((await ctx.m.readBytes(0x906 * 4096, 16)).every((x) => x === 0), `${rig.where}: page inflated after migration`).toBe(true);
      mark = ctx.m.irq.mark();
      await qmp(ctx, 'balloon', { value: 16 << 20 });
      expect(await rig.drv.configRead(0, 4), `${rig.where}: num_pages after a new target`).toBe(0);
      // Back to the start for a destination that is migrated again.
      await rig.drv.configWrite(4, 4, 0);
    },
  };
}

// --- the list ----------------------------------------------------------------------------------------

const pc = (device: string): OracleMachineSpec => ({ machine: 'pc', args: ['-device', device] });
const mmio = (v: 1 | 2, device: string): OracleMachineSpec => ({ machine: 'microvm', args: [...(v === 2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-device', device] });

const T = {
  kbd: { kind: 'pci', label: 'pci keyboard', slot: 4, mode: 'modern' },
  tablet: { kind: 'pci', label: 'pci tablet', slot: 4, mode: 'modern' },
  kbdMmio1: { kind: 'mmio', label: 'mmio v1 keyboard', index: 23, version: 1 },
  kbdMmio2: { kind: 'mmio', label: 'mmio v2 keyboard', index: 23, version: 2 },
  bModern: { kind: 'pci', label: 'pci modern balloon', slot: 4, mode: 'modern' },
  bLegacy: { kind: 'pci', label: 'pci legacy balloon', slot: 3, mode: 'legacy' },
  bTransLegacy: { kind: 'pci', label: 'pci transitional balloon, driven legacy', slot: 2, mode: 'legacy' },
  bMmio1: { kind: 'mmio', label: 'mmio v1 balloon', index: 23, version: 1 },
  bMmio2: { kind: 'mmio', label: 'mmio v2 balloon', index: 23, version: 2 },
} as const satisfies Record<string, Transport>;

export const DEVICE_MIGRATION_SCENARIOS: readonly MigrationScenario[] = [
  inputScenario('keyboard: events queued unread, interrupt pending, LEDs, a question asked; INTx', pc('virtio-keyboard-pci,addr=04.0'), T.kbd, 'keyboard', 'intx'),
  inputScenario('keyboard: the same with MSI-X', pc('virtio-keyboard-pci,addr=04.0'), T.kbd, 'keyboard', 'msix'),
  inputScenario('tablet: events queued unread, interrupt pending', pc('virtio-tablet-pci,addr=04.0'), T.tablet, 'tablet', 'intx'),
  inputScenario('keyboard: events queued unread, interrupt pending', mmio(1, 'virtio-keyboard-device'), T.kbdMmio1, 'keyboard', 'mmio'),
  inputScenario('keyboard: events queued unread, interrupt pending', mmio(2, 'virtio-keyboard-device'), T.kbdMmio2, 'keyboard', 'mmio'),
  inputBeforeDriverOk(pc('virtio-keyboard-pci,addr=04.0'), T.kbd),
  balloonScenario('target set, pages inflated, stats pending, poison value', pc('virtio-balloon-pci,id=balloon0,disable-legacy=on,addr=04.0'), T.bModern, { features: STATS | POISON | EI }),
  balloonScenario('target set, pages inflated, stats pending', pc('virtio-balloon-pci,id=balloon0,disable-modern=on,addr=03.0'), T.bLegacy, { features: STATS }),
  balloonScenario('target set, pages inflated, stats pending', pc('virtio-balloon-pci,id=balloon0'), T.bTransLegacy, { features: STATS }),
  balloonScenario('target set, pages inflated, stats pending', mmio(1, 'virtio-balloon-device,id=balloon0'), T.bMmio1, { features: STATS }),
  balloonScenario('target set, pages inflated, stats pending, poison value', mmio(2, 'virtio-balloon-device,id=balloon0'), T.bMmio2, { features: STATS | POISON }),
  balloonScenario(
    'free page hinting negotiated: the migration asks for hints, then says DONE',
    { machine: 'pc', args: ['-object', 'iothread,id=io0', '-device', 'virtio-balloon-pci,id=balloon0,disable-legacy=on,addr=04.0,free-page-hint=on,iothread=io0'] },
    T.bModern,
    { features: STATS | POISON | HINT, hint: true },
  ),
];
