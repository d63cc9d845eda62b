// Migration scenarios for virtio-blk with I/O on the way: a driver script writes and reads a disk
// on a source, leaves completions unacknowledged, requests posted and not notified, and requests
// notified and not complete (in flight in the backend), migrates, and carries on at the
// destination, checking that every request completes exactly once with the right status and data,
// and that the disk holds what the guest wrote (read back through the guest, and the image file
// itself). The ends share the disk image, as migrating machines share their storage.
//
// In flight at the moment of migration:
// - ours as the source: null-co with a latency (`file.latency-ns`) keeps requests in the backend;
//   ours does not wait for them (QEMU would drain), so they travel in the stream's request list
//   and the destination submits them again when it starts;
// - QEMU as the source: QEMU drains its backends before saving, so a request is in its request
//   list only when the block layer stopped it: an injected ENOSPC (blkdebug) with QEMU's default
//   `werror=enospc` stops the VM in `io-error` with the write queued; the destination loads that
//   list, stays in `io-error`, and submits the write again at `cont`.
import { expect } from 'vitest';
import { BLK_S_OK, BLK_T_IN, BLK_T_OUT, BlkDriver, blkPattern, type BlkPosted } from '../../src/driver/blk.js';
import { poll } from '../../src/driver/machine.js';
import type { OracleMachineSpec } from '../../src/oracle/scenario.js';
import { diskBytes } from '../../src/oracle/disks.js';
import { VIRTIO_F_ANY_LAYOUT, VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../src/virtio/constants.js';
import { VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_WRITE_ZEROES } from '../../src/devices/blk/constants.js';
import { readFileSync } from 'node:fs';
import type { MigrationContext, MigrationScenario } from './harness.js';
import { MigRig, diffSnapshots, isModern, type Allowance, type IrqMode, type MmioTransport, type PciTransport, type Transport } from './rig.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const LEGACY = bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT);
const BLK = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE) | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
const DISK = { size: 2 * 1024 * 1024 } as const;

const T = {
  modern: { kind: 'pci', label: 'pci modern', slot: 4, mode: 'modern' },
  legacy: { kind: 'pci', label: 'pci legacy', slot: 3, mode: 'legacy' },
  transLegacy: { kind: 'pci', label: 'pci transitional, driven legacy', slot: 2, mode: 'legacy' },
  mmioV1: { kind: 'mmio', label: 'mmio v1', index: 23, version: 1 },
  mmioV2: { kind: 'mmio', label: 'mmio v2', index: 23, version: 2 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

const fileDrive = '-drive';
const driveArg = (extra = '') => `if=none,id=d0,file=@disk:d@,format=raw${extra}`;
const pciDev = (t: PciTransport): string => `virtio-blk-pci,drive=d0,ioeventfd=off${t.slot === 2 ? '' : t.mode === 'modern' ? `,disable-legacy=on,addr=0${t.slot}.0` : `,disable-modern=on,addr=0${t.slot}.0`}`;

/** A machine with the blk device on `t` over `drive` (a -drive value). */
function machine(t: Transport, drive: string, disks = true, devOpts = ''): OracleMachineSpec {
  const base = t.kind === 'pci'
    ? { machine: 'pc', args: [fileDrive, drive, '-device', pciDev(t) + devOpts] }
    : { machine: 'microvm', args: [...(t.version === 2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-global', 'virtio-mmio.ioeventfd=off', fileDrive, drive, '-device', `virtio-blk-device,drive=d0${devOpts}`] };
  return disks ? { ...base, disks: { d: DISK } } : base;
}

const features = (t: Transport, extra = 0n): bigint => BLK | extra | (isModern(t) ? 0n : LEGACY);
const ringNum = (t: Transport, n: number): number | undefined => (t.kind === 'pci' && t.mode === 'legacy' ? undefined : n);

/** What the guest believes the disk holds: the image's initial bytes and every completed write. */
class DiskModel {
  readonly bytes: Uint8Array;
  constructor() {
    this.bytes = diskBytes(DISK);
  }
  write(sector: number, data: Uint8Array): void {
    this.bytes.set(data, sector * 512);
  }
  range(sector: number, len: number): Uint8Array {
    return this.bytes.subarray(sector * 512, sector * 512 + len);
  }
}

interface Req {
  posted: BlkPosted;
  type: number;
  sector: number;
  data: Uint8Array;
}

/** Post (not notify) a write of `data` or a read of `len` bytes. */
async function postReq(blk: BlkDriver, type: number, sector: number, len: number, seed: number): Promise<Req> {
  const data = type === BLK_T_OUT ? blkPattern(len, seed) : new Uint8Array(len);
  const posted = await blk.post(type, sector, len, type === BLK_T_OUT ? { bytes: data } : {});
  return { posted, type, sector, data };
}

/** The status and data of completed requests, checked against the model (which writes update). */
async function checkDone(ctx: MigrationContext, reqs: readonly Req[], model: DiskModel, where: string): Promise<void> {
  const m = ctx.m;
  for (const r of reqs) {
    expect(await m.readb(r.posted.status), `${where}: status of the ${r.type === BLK_T_OUT ? 'write' : r.type === BLK_T_IN ? 'read' : 'request'} of sector ${r.sector}`).toBe(BLK_S_OK);
    if (r.type === BLK_T_OUT) model.write(r.sector, r.data);
  }
  for (const r of reqs) {
    if (r.type !== BLK_T_IN) continue;
    const got = await m.readBytes(r.posted.data[0]!.addr, r.data.length);
    expect(Buffer.compare(Buffer.from(got), Buffer.from(model.range(r.sector, r.data.length))), `${where}: data of the read of sector ${r.sector}`).toBe(0);
  }
}

/** Wait for the used entries of exactly `reqs` (any order), then nothing more. */
async function expectUsed(rig: MigRig, reqs: readonly Req[], timeoutMs = 5000): Promise<void> {
  const got = await rig.ring!.waitUsed(reqs.length, { timeoutMs, what: `${reqs.length} blk completions on ${rig.where}` });
  const want = reqs.map((r) => `${r.posted.head}:${r.posted.inLen}`).sort();
  expect(got.map((u) => `${u.id}:${u.len}`).sort(), `${rig.where}: used entries`).toEqual(want);
}

/** Acknowledge whatever interrupt the last requests left (a read-back's). */
async function ackAny(rig: MigRig): Promise<void> {
  switch (rig.irqMode) {
    case 'intx':
      await rig.pciDrv!.isr();
      break;
    case 'mmio':
      await rig.mmioDrv!.ackInterrupt();
      break;
    case 'msix':
      await rig.m.writel(rig.qSlot!.addr, 0);
      await rig.pciDrv!.isr();
      break;
    case 'msix-masked':
      await rig.pciDrv!.msix!.mask(1, false);
      await rig.m.writel(rig.qSlot!.addr, 0);
      await rig.pciDrv!.msix!.mask(1, true);
      await rig.pciDrv!.isr();
      break;
    default:
      break;
  }
}

/** Read `len` bytes at `sector` through the guest and compare with the model. */
async function readBack(blk: BlkDriver, model: DiskModel, sector: number, len: number, where: string): Promise<void> {
  const got = await blk.read(sector, len);
  expect(Buffer.compare(Buffer.from(got), Buffer.from(model.range(sector, len))), `${where}: disk at sector ${sector}`).toBe(0);
}

/** The image file holds what the model says (after a flush). */
function checkImage(ctx: MigrationContext, model: DiskModel, where: string): void {
  const file = readFileSync(ctx.disks['d']!);
  expect(Buffer.compare(file, Buffer.from(model.bytes)), `${where}: the disk image file`).toBe(0);
}

/** Allowances for requests posted and not notified: a destination that kicks its queues at start completes them. */
function pendingAllowance(ring: { num: number }, usedBefore: number, pending: readonly Req[]): Map<string, Allowance> {
  const m = new Map<string, Allowance>([
    ['vq0.used.idx', (b, a) => Number(a) === Number(b) || Number(a) === ((Number(b) + pending.length) & 0xffff)],
    ['vq0.used.avail_event', () => true],
  ]);
  const ids = new Set(pending.map((p) => `${p.posted.head}:${p.posted.inLen}`));
  for (let k = 0; k < pending.length; k++) m.set(`vq0.used[${(usedBefore + k) % ring.num}]`, (b, a) => a === b || ids.has(a));
  return m;
}

interface StateOptions {
  irq: IrqMode;
  num?: number;
  extra?: bigint;
}

/**
 * The disk written and read on the source, a completion left unacknowledged, a write and a read
 * posted and not notified; migrated; on the destination the snapshot reads the same, the pending
 * requests complete exactly once after the notify (QEMU's blk with ioeventfd=off does not look at
 * its rings when it starts; ours does, as QEMU with ioeventfd), the carried interrupt is pending,
 * the disk reads back as written, and the device keeps working and resets.
 */
function diskState(t: Transport, o: StateOptions, migrations = 1): MigrationScenario {
  const spec = machine(t, driveArg());
  return {
    name: `[${t.label}] blk: disk written, completion unacknowledged, requests posted${migrations > 1 ? ', migrated twice' : ''} (${o.irq})`,
    spec,
    migrations,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const ring = await rig.bringUp({ features: features(t, o.extra), irq: o.irq, ...(ringNum(t, o.num ?? 16) !== undefined ? { num: ringNum(t, o.num ?? 16)! } : {}) });
      const blk = new BlkDriver(rig.drv, ring, ctx.alloc);
      const model = new DiskModel();
      // Config read once, as a driver does at probe: its bytes are in the migrated state.
      const cfg = await blk.config(57);
      expect(cfg.capacity, 'capacity').toBe(4096n);
      for (let hop = 0; hop < migrations; hop++) {
        const base = hop * 300;
        for (let i = 0; i < 4; i++) {
          const mark = ctx.m.irq.mark();
          const w = await postReq(blk, BLK_T_OUT, base + 8 * i, 2048 + 512 * i, base + i);
          await blk.notify();
          await expectUsed(rig, [w]);
          await rig.expectInterrupt(mark, true);
          await checkDone(ctx, [w], model, rig.where);
        }
        await readBack(blk, model, base, 4096, rig.where);
        await ackAny(rig);
        // A completion whose interrupt stays pending.
        const mark = ctx.m.irq.mark();
        const last = await postReq(blk, BLK_T_OUT, base + 100, 1024, base + 99);
        await blk.notify();
        await expectUsed(rig, [last]);
        await rig.expectInterrupt(mark, false);
        await checkDone(ctx, [last], model, rig.where);
        // Posted, not notified.
        const pw = await postReq(blk, BLK_T_OUT, base + 200, 1536, base + 200);
        const pr = await postReq(blk, BLK_T_IN, base + 8, 2048, 0);
        for (const [i, p] of [pw, pr].entries()) {
          rig.volatile.set(`pending${i}.status`, { addr: p.posted.status, len: 1 });
          for (const [k, d] of p.posted.data.entries()) rig.volatile.set(`pending${i}.data${k}`, d);
        }
        const usedBefore = ring.lastUsedIdx;
        const before = await rig.snapshot();
        await ctx.migrate();
        const after = await rig.snapshot();
        const d = diffSnapshots(before, after, pendingAllowance(ring, usedBefore, [pw, pr]));
        expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
        await rig.ackCarriedInterrupt();
        const early = (await ring.usedIdx()) !== ring.lastUsedIdx;
        ctx.notes.push(`posted requests ${early ? 'completed when the destination started' : 'waited for the notify'} on ${ctx.impl}`);
        if (ctx.impl === 'qemu') expect(early, 'QEMU 7.2 blk with ioeventfd=off does not look at its rings when it starts').toBe(false);
        await blk.notify();
        await expectUsed(rig, [pw, pr]);
        await rig.expectNoCompletion(30);
        await checkDone(ctx, [pw], model, rig.where);
        // The read was submitted before or after the write on the same queue: it sees the disk as
        // the model had it before the write (different sectors here, so either order agrees).
        await checkDone(ctx, [pr], model, rig.where);
        for (const k of [...rig.volatile.keys()]) if (k.startsWith('pending')) rig.volatile.delete(k);
        await readBack(blk, model, base + 200, 1536, rig.where);
      }
      // Carry on, across the ring's end, then flush and compare the image file.
      for (let i = 0; i < (ring.num > 32 ? 4 : ring.num + 2); i++) {
        const r = await postReq(blk, i % 2 ? BLK_T_IN : BLK_T_OUT, 1000 + i * 4, 1024, 1000 + i);
        await blk.notify();
        await expectUsed(rig, [r]);
        await checkDone(ctx, [r], model, rig.where);
      }
      expect(await blk.flush(), 'flush').toBe(BLK_S_OK);
      checkImage(ctx, model, rig.where);
      await rig.drv.reset();
      const ring2 = await rig.reinit({ features: features(t, o.extra), ...(ringNum(t, 8) !== undefined ? { num: ringNum(t, 8)! } : {}) });
      const blk2 = new BlkDriver(rig.drv, ring2, ctx.alloc);
      await readBack(blk2, model, 0, 8192, rig.where);
    },
  };
}

const LATENCY_OURS_NS = 3_000_000_000;
const LATENCY_QEMU_NS = 200_000_000;
const nullDrive = (latency: number) => `if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=4M,format=raw${latency ? `,file.latency-ns=${latency}` : ''}`;

/**
 * Requests notified and still in the backend when the migration starts (null-co with a latency on
 * the source). Ours carries them in the request list and the destination submits them when it
 * starts: they complete there without a new notify. QEMU drains them before it writes the stream,
 * so from a QEMU source they arrive completed. Either way each completes exactly once.
 */
function inFlightNull(t: Transport, irq: IrqMode, migrations = 1): MigrationScenario {
  const spec = machine(t, nullDrive(0), false);
  return {
    name: `[${t.label}] blk: reads and writes in flight in the backend at migration (null-co latency)${migrations > 1 ? ', migrated twice' : ''}`,
    spec,
    migrations,
    // Only the source of each hop is slow; the latency is the block node's, not migrated state.
    specFor: (end, impl) => (end < migrations ? machine(t, nullDrive(impl === 'ours' ? LATENCY_OURS_NS : LATENCY_QEMU_NS), false) : spec),
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const ring = await rig.bringUp({ features: features(t, EI | IND), irq, ...(ringNum(t, 16) !== undefined ? { num: ringNum(t, 16)! } : {}) });
      const blk = new BlkDriver(rig.drv, ring, ctx.alloc);
      await blk.config(57);
      for (let hop = 0; hop < migrations; hop++) {
        const source = ctx.impl;
        // (No flush among them: QEMU completes a flush at once when no write finished since the
        // last one, whatever the latency.)
        const reqs = [await postReq(blk, BLK_T_OUT, 8, 4096, hop), await postReq(blk, BLK_T_IN, 16, 2048, 0), await postReq(blk, BLK_T_OUT, 24, 512, hop + 1)];
        for (const [i, r] of reqs.entries()) {
          rig.volatile.set(`inflight${i}.status`, { addr: r.posted.status, len: 1 });
          for (const [k, d] of r.posted.data.entries()) rig.volatile.set(`inflight${i}.data${k}`, d);
        }
        await blk.notify();
        // Popped and in the backend: nothing completes for a while.
        await rig.expectNoCompletion(40);
        const usedBefore = ring.lastUsedIdx;
        await ctx.migrate();
        // At the destination they complete without a notify (from a QEMU source: they did already).
        await expectUsed(rig, reqs, 8000);
        ctx.notes.push(`requests in flight at migration completed on the destination (${source} → ${ctx.impl}), used.idx ${usedBefore} → ${ring.lastUsedIdx}`);
        for (const r of reqs) expect(await ctx.m.readb(r.posted.status), `${rig.where}: status`).toBe(BLK_S_OK);
        const read = reqs[1]!;
        expect((await ctx.m.readBytes(read.posted.data[0]!.addr, 2048)).every((b) => b === 0), `${rig.where}: null-co read-zeroes data`).toBe(true);
        await rig.expectNoCompletion(50);
        for (const k of [...rig.volatile.keys()]) if (k.startsWith('inflight')) rig.volatile.delete(k);
        // The interrupt of those completions.
        if (irq === 'msix') await ctx.m.writel(rig.qSlot!.addr, 0);
        else if (irq === 'intx') await rig.pciDrv!.isr();
        else if (irq === 'mmio') await rig.mmioDrv!.ackInterrupt();
      }
      // The device works on.
      for (let i = 0; i < 3; i++) {
        const r = await postReq(blk, BLK_T_IN, i, 512, 0);
        await blk.notify();
        await expectUsed(rig, [r]);
      }
    },
  };
}

/**
 * Two queues (`num-queues=2`, MQ): requests in flight on both when the migration starts. With
 * more than one queue each entry of the request list carries its queue index (be32); the
 * destination must put every request back on its own queue.
 */
function inFlightTwoQueues(t: Transport): MigrationScenario {
  const spec = machine(t, nullDrive(0), false, ',num-queues=2');
  return {
    name: `[${t.label}] blk: requests in flight on two queues at migration (num-queues=2, the queue index in the request list)`,
    spec,
    specFor: (end, impl) => (end === 0 ? machine(t, nullDrive(impl === 'ours' ? LATENCY_OURS_NS : LATENCY_QEMU_NS), false, ',num-queues=2') : spec),
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const MQ = 1n << 12n;
      const ring0 = await rig.bringUp({ features: features(t, EI | MQ), irq: 'intx', num: 8, driverOk: false });
      const ring1 = await rig.drv.setupQueue(1, { num: 8 });
      await rig.drv.driverOk();
      const blk0 = new BlkDriver(rig.drv, ring0, ctx.alloc, 0);
      const blk1 = new BlkDriver(rig.drv, ring1, ctx.alloc, 1);
      expect((await blk0.config(57)).numQueues, 'num_queues').toBe(2);
      const q0 = [await postReq(blk0, BLK_T_IN, 4, 1024, 0)];
      const q1 = [await postReq(blk1, BLK_T_OUT, 40, 2048, 3), await postReq(blk1, BLK_T_IN, 60, 512, 0)];
      await blk0.notify();
      await blk1.notify();
      await new Promise((r) => setTimeout(r, 40));
      expect(await ring0.usedIdx(), 'queue 0: still in the backend').toBe(0);
      expect(await ring1.usedIdx(), 'queue 1: still in the backend').toBe(0);
      await ctx.migrate();
      const got0 = await ring0.waitUsed(1, { timeoutMs: 8000, what: 'queue 0 completion' });
      const got1 = await ring1.waitUsed(2, { timeoutMs: 8000, what: 'queue 1 completions' });
      expect(got0.map((u) => `${u.id}:${u.len}`), `${rig.where}: queue 0`).toEqual(q0.map((r) => `${r.posted.head}:${r.posted.inLen}`));
      expect(got1.map((u) => `${u.id}:${u.len}`).sort(), `${rig.where}: queue 1`).toEqual(q1.map((r) => `${r.posted.head}:${r.posted.inLen}`).sort());
      for (const r of [...q0, ...q1]) expect(await ctx.m.readb(r.posted.status), `${rig.where}: status`).toBe(BLK_S_OK);
      await new Promise((r) => setTimeout(r, 50));
      expect([await ring0.usedIdx(), await ring1.usedIdx()], 'nothing more').toEqual([1, 2]);
      await rig.pciDrv?.isr();
      // Both queues keep working.
      const a = await postReq(blk1, BLK_T_IN, 1, 512, 0);
      await blk1.notify();
      await ring1.waitUsed(1, { timeoutMs: 3000 });
      expect(await ctx.m.readb(a.posted.status)).toBe(BLK_S_OK);
    },
  };
}

/**
 * QEMU's own request list: an ENOSPC injected into the first write (blkdebug) stops the QEMU
 * source in `io-error` with the write queued (`werror=enospc`, the default). The stream carries
 * it; the destination (same image, no injection) comes up in `io-error`, and `cont` submits the
 * write again: it completes, exactly once, and the image holds it.
 */
function ioErrorRequestList(t: PciTransport): MigrationScenario {
  const spec = machine(t, driveArg());
  const injected = machine(t, 'if=none,id=d0,format=raw,file.driver=blkdebug,file.image.filename=@disk:d@,file.inject-error.0.event=write_aio,file.inject-error.0.errno=28,file.inject-error.0.once=on');
  return {
    name: `[${t.label}] blk: a write QEMU stopped on ENOSPC (io-error) travels in the request list and completes after cont`,
    spec,
    specFor: (end) => (end === 0 ? injected : spec),
    destinationRunState: 'io-error',
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const ring = await rig.bringUp({ features: features(t, EI), irq: 'msix', ...(ringNum(t, 8) !== undefined ? { num: ringNum(t, 8)! } : {}) });
      const blk = new BlkDriver(rig.drv, ring, ctx.alloc);
      const model = new DiskModel();
      await readBack(blk, model, 0, 1024, rig.where);
      const w = await postReq(blk, BLK_T_OUT, 40, 4096, 77);
      rig.volatile.set('w.status', { addr: w.posted.status, len: 1 });
      await blk.notify();
      await poll(ctx.m, async () => ((await ctx.m.qmp!.execute('query-status')) as { status: string }).status === 'io-error', { timeoutMs: 5000, what: 'the source to stop in io-error' });
      expect(await ring.usedIdx(), 'the stopped write is not completed').toBe(ring.lastUsedIdx);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      const d = diffSnapshots(before, after);
      expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
      await rig.expectNoCompletion(40);
      // The destination's own QMP (the source's is gone with it).
      await ctx.m.qmp!.execute('cont');
      await expectUsed(rig, [w]);
      await checkDone(ctx, [w], model, rig.where);
      await readBack(blk, model, 40, 4096, rig.where);
      expect(await blk.flush()).toBe(BLK_S_OK);
      checkImage(ctx, model, rig.where);
    },
  };
}

export const BLK_MIGRATION_SCENARIOS: readonly MigrationScenario[] = [
  diskState(T.modern, { irq: 'msix', extra: EI | IND }),
  diskState(T.modern, { irq: 'msix-masked', num: 8, extra: EI }),
  diskState(T.legacy, { irq: 'intx', extra: IND }),
  diskState(T.transLegacy, { irq: 'intx', extra: EI }),
  diskState(T.mmioV1, { irq: 'mmio', num: 16, extra: EI }),
  diskState(T.mmioV2, { irq: 'mmio', num: 16, extra: EI | IND }),
  inFlightNull(T.modern, 'msix'),
  inFlightNull(T.legacy, 'intx'),
  inFlightNull(T.mmioV2, 'mmio'),
  inFlightTwoQueues(T.modern),
];

/** Scenarios that migrate twice (run as ours → qemu → ours and the other round trips). */
export const BLK_ROUND_TRIPS: readonly MigrationScenario[] = [diskState(T.modern, { irq: 'msix', extra: EI }, 2), inFlightNull(T.mmioV1, 'mmio', 2)];

/** QEMU-source only (ours cannot stop the VM on a block error). */
export const BLK_QEMU_SOURCE_SCENARIOS: readonly MigrationScenario[] = [ioErrorRequestList(T.modern)];
