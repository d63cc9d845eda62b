// Migration scenarios on packed virtqueues (VIRTIO 1.2 §2.8): the guest negotiates VERSION_1 |
// RING_PACKED on a device started with `packed=on`, sets up a packed queue of a size that is not a
// power of two, and completes more than a lap of chains (direct chains that run off the end of the
// ring, indirect tables, single buffers) before the migration, so that the wrap counters have
// left their reset value. On the destination the same ring carries on: the driver's state (free
// ids, next slots, wrap counters) is the source's, so every used descriptor must appear where and
// with the flags the source would have written it, for the id the driver expects.
//
// What the device holds at the moment of migration is known from the guest's side (the driver's
// next avail and used positions, the slots of the chains in flight). Each script records it in a
// note (`POSITIONS_NOTE`), and the tests compare it with the stream's `virtio/packed_virtqueues`
// entry (`packedSubsection`).
//
// Requests in flight on a packed ring (virtio-blk): null-co with a latency on the source, as in
// blk-scenarios.ts, and QEMU's own request list (a write stopped in `io-error`). Their elements
// travel with `ndescs` (the ring slots of each chain), which QEMU 7.2 writes before the
// VirtQueueElementOld record and reads after it (docs/qemu-differences.md row 77).
//
// Also: a device that offers packed rings driven with a split ring, whose stream still carries the
// subsection (with the split queue's free-running indices).
import { expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { BLK_S_OK, BLK_T_FLUSH, BLK_T_GET_ID, BLK_T_IN, BLK_T_OUT, blkHeader, blkPattern } from '../../src/driver/blk.js';
import { poll } from '../../src/driver/machine.js';
import { RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED, VIRTQ_PACKED_DESC_SIZE, decodePackedDesc, type PackedDesc } from '../../src/driver/packed-ring.js';
import type { PackedVringDriver } from '../../src/driver/packed-vring.js';
import { findMicrovmIoapic2 } from '../../src/driver/virtio-mmio-driver.js';
import type { DriverBuffer, UsedEntry } from '../../src/driver/split-ring.js';
import { diskBytes } from '../../src/oracle/disks.js';
import type { OracleMachineSpec } from '../../src/oracle/scenario.js';
import { VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES } from '../../src/devices/blk/constants.js';
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../src/virtio/constants.js';
import type { InspectedSection } from '../../src/migration/inspect.js';
import { leafFields } from '../../src/migration/virtio-decode.js';
import { readStream } from './blob-compare.js';
import type { Impl, MigrationContext, MigrationScenario } from './harness.js';
import { CANARY, GUARD, INTX_IRQ, MigRig, diffSnapshots, type Allowance, type IrqMode, type MmioTransport, type PciTransport, type Snapshot, type Transport } from './rig.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const PACKED = bit(VIRTIO_F_RING_PACKED);
const V1 = bit(VIRTIO_F_VERSION_1);
const BLK = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE) | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
/** Used descriptor flags in a lap whose wrap counter is 1 / 0 (AVAIL = USED = the counter). */
const USED_FLAGS = (wrap: boolean): number => (wrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0);

// --- machines ----------------------------------------------------------------------------------

const T = {
  modern: { kind: 'pci', label: 'pci modern, packed', slot: 4, mode: 'modern' },
  mmioV2: { kind: 'mmio', label: 'mmio v2, packed', index: 23, version: 2 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

const RNG_SPECS = {
  pci: { machine: 'pc', args: ['-device', 'virtio-rng-pci,packed=on,disable-legacy=on,ioeventfd=off,addr=04.0'] },
  mmio: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device,packed=on'] },
} as const satisfies Record<string, OracleMachineSpec>;

const DISK = { size: 2 * 1024 * 1024 } as const;
const SERIAL = 'PACKED-MIG';
const blkSpec = (drive: string, disks: boolean): OracleMachineSpec => ({
  machine: 'pc',
  args: ['-drive', drive, '-device', `virtio-blk-pci,drive=d0,packed=on,disable-legacy=on,ioeventfd=off,serial=${SERIAL},addr=04.0`],
  ...(disks ? { disks: { d: DISK } } : {}),
});

// --- what the device holds at migration, from the guest's side and from the stream --------------

/** One queue's entry of `virtio/packed_virtqueues`. */
export interface PackedPositions {
  lastAvailIdx: number;
  lastAvailWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
  inuse: number;
}

export const POSITIONS_NOTE = 'packed vq0 at migration: ';

/**
 * The script's expectation of queue 0's entry, per kind of source: `drained` is what a source
 * that completes everything before saving holds (QEMU), `held` what one that carries the
 * requests in flight holds (ours). They are the same when nothing is in flight.
 */
export interface PositionsNote {
  drained: PackedPositions;
  held: PackedPositions;
}

export function positionsFromNotes(notes: readonly string[]): PositionsNote {
  const n = notes.find((x) => x.startsWith(POSITIONS_NOTE));
  if (!n) throw new Error('the script recorded no packed positions');
  return JSON.parse(n.slice(POSITIONS_NOTE.length)) as PositionsNote;
}

/** What a source of kind `impl` must have written, by the script's note. */
export const expectedPositions = (note: PositionsNote, impl: Impl): PackedPositions => (impl === 'qemu' ? note.drained : note.held);

export interface PackedSubsection {
  /** The whole subsection (header, version, 1024 entries), as written. */
  bytes: Uint8Array;
  /** Its offset in the stream. */
  offset: number;
  queues: PackedPositions[];
}

const PACKED_SUBSECTION_SIZE = 2 + 'virtio/packed_virtqueues'.length + 4 + 1024 * 10;

/**
 * The `virtio/packed_virtqueues` subsection of the (one) virtio device in `stream`, decoded;
 * `section` is that device's section when the caller has read the stream already.
 */
export function packedSubsection(stream: Uint8Array, section?: InspectedSection): PackedSubsection {
  const sec = section ?? readStream(stream).sections.find((s) => s.virtio !== undefined || s.virtioError !== undefined);
  if (!sec?.virtio) throw new Error(`no decoded virtio section${sec?.virtioError ? `: ${sec.virtioError}` : ''}`);
  const sub = sec.virtio.subsections.find((s) => s.name === 'virtio/packed_virtqueues');
  if (!sub) throw new Error(`${sec.idstr}: no virtio/packed_virtqueues subsection (subsections: ${sec.virtio.subsections.map((s) => s.name).join(', ')})`);
  const leaves = leafFields(sec.virtio.fields).filter((l) => l.path.startsWith('subsection virtio/packed_virtqueues > vq['));
  const queues: PackedPositions[] = Array.from({ length: 1024 }, () => ({ lastAvailIdx: -1, lastAvailWrap: false, usedIdx: -1, usedWrap: false, inuse: -1 }));
  for (const l of leaves) {
    const m = /> vq\[(\d+)\] > (\w+)$/.exec(l.path);
    if (!m) continue;
    const q = queues[Number(m[1])]!;
    const v = l.value;
    switch (m[2]) {
      case 'last_avail_idx': q.lastAvailIdx = Number(v); break;
      case 'last_avail_wrap_counter': q.lastAvailWrap = v === true; break;
      case 'used_idx': q.usedIdx = Number(v); break;
      case 'used_wrap_counter': q.usedWrap = v === true; break;
      case 'inuse': q.inuse = Number(v); break;
      default: break;
    }
  }
  const bytes = stream.subarray(sub.offset, sub.offset + PACKED_SUBSECTION_SIZE);
  const head = String.fromCharCode(...bytes.subarray(2, 26));
  if (bytes[0] !== 0x05 || bytes[1] !== 24 || head !== 'virtio/packed_virtqueues') throw new Error(`no subsection header at offset ${sub.offset}`);
  return { bytes, offset: sub.offset, queues };
}

/** `ndescs` of each element in virtio-blk's request list, in stream order. */
export function blkRequestNdescs(stream: Uint8Array): number[] {
  const sec = readStream(stream).sections.find((s) => /\/virtio-blk$/.test(s.idstr));
  if (!sec?.virtio) throw new Error(`no decoded virtio-blk section${sec?.virtioError ? `: ${sec.virtioError}` : ''}`);
  return leafFields(sec.virtio.fields).filter((l) => /^virtio-blk request list > rq\[\d+\] > ndescs$/.test(l.path)).map((l) => Number(l.value));
}

// --- the guest side of a packed queue ------------------------------------------------------------

/**
 * Bring up queue 0 as a packed ring of `num` with `features` (RING_PACKED and VERSION_1 added)
 * and the interrupt mode, as MigRig.bringUp does for split rings: the rig's snapshot and
 * interrupt checks then work as they do there (it has no split ring to read).
 */
async function bringUpPacked(rig: MigRig, o: { features: bigint; num: number; irq: IrqMode }, offered: bigint): Promise<PackedVringDriver> {
  const m = rig.m;
  rig.irqMode = o.irq;
  if (o.irq === 'msix' || o.irq === 'msix-masked') await rig.pciDrv!.enableMsix();
  expect(await rig.drv.init(o.features | PACKED), 'negotiated features').toBe(((o.features | PACKED) & offered) | V1);
  const ring = await rig.drv.setupPackedQueue(0, { num: o.num });
  expect(ring.num, 'packed queue size').toBe(o.num);
  if (rig.t.kind === 'mmio') {
    const path = await findMicrovmIoapic2(m.qmp!);
    expect(path, 'microvm second I/O APIC').toBeDefined();
    await m.irqIntercept('in', path!);
    rig.line = rig.t.index;
  } else {
    await rig.pci!.routeIntx(INTX_IRQ);
    await m.irqIntercept('in', 'ioapic');
    rig.line = INTX_IRQ;
    if (o.irq === 'msix' || o.irq === 'msix-masked') {
      rig.cfgSlot = await rig.pciDrv!.msixSetupConfig(0);
      rig.qSlot = await rig.pciDrv!.msixSetupQueue(0, 1);
      if (o.irq === 'msix-masked') await rig.pciDrv!.msix!.mask(1, true);
    }
  }
  await rig.drv.driverOk();
  return ring;
}

/** Reset and bring the packed queue up again (a new ring of `num`), interrupts as before. */
async function reinitPacked(rig: MigRig, features: bigint, num: number): Promise<PackedVringDriver> {
  await rig.drv.init(features | PACKED);
  const ring = await rig.drv.setupPackedQueue(0, { num });
  if (rig.irqMode === 'msix' || rig.irqMode === 'msix-masked') {
    await rig.pciDrv!.msixSetupConfig(0, rig.cfgSlot!.addr);
    await rig.pciDrv!.msixSetupQueue(0, 1, rig.qSlot!.addr);
  }
  await rig.drv.driverOk();
  return ring;
}

const hex = (v: number | bigint, w = 2): string => `0x${v.toString(16).padStart(w, '0')}`;
const descText = (d: PackedDesc): string => `addr ${hex(d.addr, 8)} len ${d.len} id ${d.id} flags ${hex(d.flags, 4)}`;

/**
 * The packed ring as the driver can read it: every descriptor slot and both event areas. The
 * ring's bytes leave the RAM digest (`volatile`) so that an allowance can name the slot a
 * destination may have written.
 */
async function snapshotPacked(rig: MigRig, ring: PackedVringDriver): Promise<Snapshot> {
  rig.volatile.set('packed ring', { addr: ring.addrs.desc, len: VIRTQ_PACKED_DESC_SIZE * ring.num });
  rig.volatile.set('packed device event', { addr: ring.addrs.used, len: 4 });
  const s = await rig.snapshot();
  const bytes = await rig.m.readBytes(ring.addrs.desc, VIRTQ_PACKED_DESC_SIZE * ring.num);
  for (let i = 0; i < ring.num; i++) s.set(`pvq0.desc[${i}]`, descText(decodePackedDesc(bytes, VIRTQ_PACKED_DESC_SIZE * i)));
  const ev = (e: { offWrap: number; flags: number }): string => `off_wrap ${hex(e.offWrap, 4)} flags ${e.flags}`;
  s.set('pvq0.driver_event', ev(await ring.driverEvent()));
  s.set('pvq0.device_event', ev(await ring.deviceEvent()));
  return s;
}

function expectSame(before: Snapshot, after: Snapshot, rig: MigRig, allow?: ReadonlyMap<string, Allowance>): void {
  const d = diffSnapshots(before, after, allow);
  expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
}

/** Where the driver stands now, as the device holds it once everything posted is popped and used. */
const positionsNow = (ring: PackedVringDriver, inuse = 0): PackedPositions => ({ lastAvailIdx: ring.nextAvail, lastAvailWrap: ring.availWrap, usedIdx: ring.nextUsed, usedWrap: ring.usedWrap, inuse });

// --- virtio-rng on a packed ring ---------------------------------------------------------------

/**
 * Request shapes: one writable buffer, two, a device-readable head and two writable buffers
 * (three slots), or those three in an indirect table (one slot).
 */
type Shape = 'one' | 'two' | 'three' | 'indirect';

interface Posted {
  id: number;
  slot: number;
  wrap: boolean;
  bufs: DriverBuffer[];
  /** The first descriptor's addr: the first buffer, or the indirect table. */
  addr0: number;
  /** What the device must report: the writable bytes. */
  len: number;
  /** Ring slots the chain takes (one for an indirect table). */
  slots: number;
}

const rngLen = (k: number): number => 8 + ((k * 7) % 21);

class RngGuest {
  constructor(readonly ctx: MigrationContext, readonly rig: MigRig, public ring: PackedVringDriver) {}

  get m(): MigrationContext['m'] {
    return this.ctx.m;
  }

  /** Post one request of `shape` (canary-filled buffers with a guard), not notified. */
  async post(shape: Shape, k: number): Promise<Posted> {
    const lens: [number, boolean][] =
      shape === 'one' ? [[rngLen(k), true]] : shape === 'two' ? [[rngLen(k), true], [rngLen(k + 1), true]] : [[4, false], [12, true], [rngLen(k), true]];
    const bufs: DriverBuffer[] = [];
    for (const [len, write] of lens) {
      const addr = this.ctx.alloc.alloc(len + GUARD, 16);
      await this.m.memset(addr, len + GUARD, CANARY);
      bufs.push({ addr, len, write });
    }
    const table = shape === 'indirect' ? this.ctx.alloc.alloc(VIRTQ_PACKED_DESC_SIZE * bufs.length, 16) : undefined;
    const slot = this.ring.nextAvail;
    const wrap = this.ring.availWrap;
    const id = await this.ring.add(bufs, table !== undefined ? { indirectTable: table } : {});
    expect(id, `${this.rig.where}: a free buffer id for a ${shape} request`).toBeGreaterThanOrEqual(0);
    return { id, slot, wrap, bufs, addr0: table ?? bufs[0]!.addr, len: bufs.reduce((n, b) => n + (b.write ? b.len : 0), 0), slots: table !== undefined ? 1 : bufs.length };
  }

  /**
   * The device's answer to `p`: the used descriptor in the chain's first slot with the id, the
   * written length, AVAIL = USED = the lap's wrap counter and the driver's addr; entropy in the
   * writable buffers and nothing past them; the readable head untouched.
   */
  async checkUsed(p: Posted, got: UsedEntry): Promise<void> {
    const w = this.rig.where;
    expect(got, `${w}: used entry of the chain at slot ${p.slot}`).toEqual({ id: p.id, len: p.len });
    expect(descText(await this.ring.descAt(p.slot)), `${w}: used descriptor at slot ${p.slot}`).toBe(descText({ addr: BigInt(p.addr0), len: p.len, id: p.id, flags: USED_FLAGS(p.wrap) }));
    for (const b of p.bufs) {
      const bytes = await this.m.readBytes(b.addr, b.len + GUARD);
      const body = bytes.subarray(0, b.len);
      if (b.write && b.len >= 8) expect(body.some((x) => x !== CANARY), `${w}: entropy in the ${b.len}-byte buffer of id ${p.id}`).toBe(true);
      if (!b.write) expect(body.every((x) => x === CANARY), `${w}: the readable buffer of id ${p.id} untouched`).toBe(true);
      expect(bytes.subarray(b.len).every((x) => x === CANARY), `${w}: the guard after a buffer of id ${p.id}`).toBe(true);
    }
  }

  /** Post, notify, check the completion and its interrupt (acknowledged, or left pending). */
  async request(shape: Shape, k: number, ack = true): Promise<Posted> {
    const p = await this.post(shape, k);
    const mark = this.m.irq.mark();
    await this.rig.drv.notify(0);
    const got = await this.ring.waitUsed(1, { timeoutMs: 3000, what: `completion of id ${p.id} on ${this.rig.where}` });
    expect(got, `${this.rig.where}: one used descriptor`).toHaveLength(1);
    await this.checkUsed(p, got[0]!);
    await this.rig.expectInterrupt(mark, ack);
    return p;
  }

  /** Read (and acknowledge) the interrupt status: 1 when the device interrupted since the last read. */
  interruptStatus(): Promise<number> {
    return this.rig.drv.ackInterrupt();
  }
}

interface RngPackedOptions {
  num: number;
  irq: IrqMode;
  features: bigint;
  /** Completed before the migration: more than a lap, ending in a lap whose wrap counter is 0. */
  before: readonly Shape[];
  /** Completed on the destination (after the request left pending): more than a lap. */
  after: readonly Shape[];
}

/**
 * virtio-rng on a packed ring: more than a lap of requests, the last completion's interrupt left
 * pending and one request posted but not notified; migrated; the destination reads the same
 * (registers, ring slots, event areas, RAM), the pending request completes exactly once at its
 * slot, the carried interrupt is there, more than another lap completes, used-buffer
 * notifications follow the driver's DESC position, and after a reset the ring starts at slot 0
 * with wrap counter 1.
 */
function rngPacked(spec: OracleMachineSpec, t: Transport, o: RngPackedOptions): MigrationScenario {
  return {
    name: `[${t.label}] rng: ring of ${o.num}, ${o.before.length} requests over a lap and more, interrupt pending, a request posted (${o.irq})`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const offered = await rig.drv.readDeviceFeatures();
      expect(offered & PACKED, 'RING_PACKED offered (packed=on)').toBe(PACKED);
      const g = new RngGuest(ctx, rig, await bringUpPacked(rig, { features: o.features, num: o.num, irq: o.irq }, offered));
      const ring = g.ring;
      let k = 0;
      for (const [i, shape] of o.before.entries()) await g.request(shape, k++, i < o.before.length - 1);
      expect([ring.availWrap, ring.usedWrap], 'both wrap counters at 0 (left their reset value) at migration').toEqual([false, false]);
      // Posted, not notified: the device has not popped it.
      const pending = await g.post('one', k++);
      rig.volatile.set('pending', { addr: pending.bufs[0]!.addr, len: pending.bufs[0]!.len + GUARD });
      const at = { lastAvailIdx: pending.slot, lastAvailWrap: pending.wrap, usedIdx: ring.nextUsed, usedWrap: ring.usedWrap, inuse: 0 };
      ctx.notes.push(POSITIONS_NOTE + JSON.stringify({ drained: at, held: at } satisfies PositionsNote));

      const before = await snapshotPacked(rig, ring);
      await ctx.migrate();
      const after = await snapshotPacked(rig, ring);
      // QEMU's rng looks at its queue when the VM starts running: the pending request may be
      // used already, in its slot, with the source's id.
      const usedText = descText({ addr: BigInt(pending.addr0), len: pending.len, id: pending.id, flags: USED_FLAGS(pending.wrap) });
      expectSame(before, after, rig, new Map([[`pvq0.desc[${pending.slot}]`, (b, a) => a === b || a === usedText]]));

      let atResume = false;
      try {
        await poll(ctx.m, async () => descText(await ring.descAt(pending.slot)) === usedText, { timeoutMs: ctx.impl === 'qemu' ? 2000 : 150, what: 'completion at resume' });
        atResume = true;
      } catch {
        /* not at resume */
      }
      ctx.notes.push(`pending request completed ${atResume ? 'at resume' : 'after the notify'} on ${ctx.impl}`);
      if (ctx.impl === 'qemu') expect(atResume, 'QEMU 7.2 completes the posted request when the destination starts running').toBe(true);
      await rig.drv.notify(0);
      const got = await ring.waitUsed(1, { timeoutMs: 3000, what: 'the pending request' });
      expect(got, `${rig.where}: the pending request, once`).toHaveLength(1);
      await g.checkUsed(pending, got[0]!);
      await rig.ackCarriedInterrupt();
      expect(await ring.takeUsed(), `${rig.where}: nothing else used`).toEqual([]);

      // The ring carries on for more than a lap.
      for (const shape of o.after) await g.request(shape, k++);
      // Used-buffer notifications by position (EVENT_IDX): with the used position at slot 1, ask
      // for an interrupt when slot 3 is used. The driver does not take the used descriptors until
      // the end (taking them moves off_wrap along, as Linux's get_buf does): slots 1 and 2 stay
      // quiet, slot 3 interrupts.
      if ((o.features & EI) !== 0n) {
        while (ring.nextUsed !== 1) await g.request('one', k++);
        await ring.setDriverEvent(RING_EVENT_FLAGS_DESC, 3 | (ring.usedWrap ? 0x8000 : 0));
        const posted: Posted[] = [];
        const isr: number[] = [];
        for (let i = 0; i < 3; i++) {
          const p = await g.post('one', k++);
          posted.push(p);
          await rig.drv.notify(0);
          await poll(ctx.m, async () => (await ring.descAt(p.slot)).flags === USED_FLAGS(p.wrap), { timeoutMs: 3000, what: `used descriptor at slot ${p.slot}` });
          isr.push(await g.interruptStatus());
        }
        expect(isr, `${rig.where}: interrupts for slots 1, 2, 3 with DESC at slot 3`).toEqual([0, 0, 1]);
        const got = await ring.takeUsed();
        expect(got, `${rig.where}: three used descriptors`).toHaveLength(3);
        for (const [i, p] of posted.entries()) await g.checkUsed(p, got[i]!);
        await ring.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
      }
      // A reset starts a new ring: slot 0, wrap counter 1.
      g.ring = await reinitPacked(rig, o.features, 5);
      for (const shape of ['one', 'three', 'two'] as const) await g.request(shape, k++);
      expect([g.ring.nextUsed, g.ring.usedWrap], 'after a reset: a lap of 5 slots, then slot 1').toEqual([1, false]);
    },
  };
}

// --- virtio-blk on a packed ring -----------------------------------------------------------------

/** What the guest believes the disk holds. */
class DiskModel {
  readonly bytes = diskBytes(DISK);
  write(sector: number, data: Uint8Array): void {
    this.bytes.set(data, sector * 512);
  }
  range(sector: number, len: number): Uint8Array {
    return this.bytes.subarray(sector * 512, sector * 512 + len);
  }
}

interface BlkReq extends Posted {
  type: number;
  sector: number;
  status: number;
  data: { addr: number; len: number } | undefined;
  /** A write's bytes. */
  bytes: Uint8Array | undefined;
}

class BlkGuest {
  /**
   * The addr the driver last wrote into each ring slot. A device leaves addr alone when it writes
   * a used descriptor, and one that completes out of order writes a chain's used descriptor in a
   * slot another chain began in, so that slot's addr is the other chain's.
   */
  private slotAddr = new Map<number, number>();
  private ringNow: PackedVringDriver;

  constructor(readonly ctx: MigrationContext, readonly rig: MigRig, ring: PackedVringDriver) {
    this.ringNow = ring;
  }

  get ring(): PackedVringDriver {
    return this.ringNow;
  }
  /** A new ring (after a reset): the driver cleared it. */
  set ring(r: PackedVringDriver) {
    this.ringNow = r;
    this.slotAddr = new Map();
  }

  get m(): MigrationContext['m'] {
    return this.ctx.m;
  }

  /**
   * Post a request (header, data, status) as a direct chain of three slots or an indirect table
   * of one; not notified. GET_ID's data is the 20-byte serial buffer; FLUSH has none.
   */
  async post(type: number, sector: number, len: number, seed: number, indirect = false): Promise<BlkReq> {
    const alloc = this.ctx.alloc;
    const hdr = alloc.alloc(16, 16);
    await this.m.writeBytes(hdr, blkHeader(type, sector));
    const out = type === BLK_T_OUT;
    let data: { addr: number; len: number } | undefined;
    let bytes: Uint8Array | undefined;
    if (len > 0) {
      data = { addr: alloc.alloc(len, 512), len };
      if (out) await this.m.writeBytes(data.addr, (bytes = blkPattern(len, seed)));
      else await this.m.memset(data.addr, len, 0xee);
    }
    const status = alloc.alloc(1, 1);
    await this.m.writeb(status, 0xff);
    const bufs: DriverBuffer[] = [{ addr: hdr, len: 16 }, ...(data ? [{ addr: data.addr, len, write: !out }] : []), { addr: status, len: 1, write: true }];
    const table = indirect ? alloc.alloc(VIRTQ_PACKED_DESC_SIZE * bufs.length, 16) : undefined;
    const slot = this.ring.nextAvail;
    const wrap = this.ring.availWrap;
    const id = await this.ring.add(bufs, table !== undefined ? { indirectTable: table } : {});
    expect(id, `${this.rig.where}: a free buffer id`).toBeGreaterThanOrEqual(0);
    if (table !== undefined) this.slotAddr.set(slot, table);
    else bufs.forEach((b, k) => this.slotAddr.set((slot + k) % this.ring.num, b.addr));
    return { id, slot, wrap, bufs, addr0: table ?? hdr, len: 1 + (out || !data ? 0 : len), slots: table !== undefined ? 1 : bufs.length, type, sector, status, data, bytes };
  }

  /** The addr the driver last wrote into ring slot `slot`. */
  addrAt(slot: number): number {
    return this.slotAddr.get(slot) ?? 0;
  }

  /**
   * Completed requests, in the order the device used them (`got`): the used descriptors follow
   * each other from the used position `from`, each taking its chain's slots, with the id, the
   * written length, the driver's addr and the flags of the lap each lies in (a device that
   * completes out of order writes a chain's used descriptor where another chain began). Then
   * every status is OK, a read holds what the model says (null-co's zeros without one), GET_ID
   * the serial; writes go into the model.
   */
  async checkDone(reqs: readonly BlkReq[], got: readonly UsedEntry[], model: DiskModel | undefined, from: { usedIdx: number; usedWrap: boolean }): Promise<void> {
    const w = this.rig.where;
    expect(got.map((u) => `${u.id}:${u.len}`).sort(), `${w}: used entries`).toEqual(reqs.map((r) => `${r.id}:${r.len}`).sort());
    let slot = from.usedIdx;
    let wrap = from.usedWrap;
    for (const u of got) {
      const r = reqs.find((x) => x.id === u.id)!;
      expect(descText(await this.ring.descAt(slot)), `${w}: used descriptor of id ${u.id} at slot ${slot}`).toBe(descText({ addr: BigInt(this.addrAt(slot)), len: r.len, id: r.id, flags: USED_FLAGS(wrap) }));
      slot += r.slots;
      if (slot >= this.ring.num) {
        slot -= this.ring.num;
        wrap = !wrap;
      }
    }
    for (const r of reqs) {
      expect(await this.m.readb(r.status), `${w}: status of request ${r.id} (type ${r.type}, sector ${r.sector})`).toBe(BLK_S_OK);
      if (r.type === BLK_T_OUT && model) model.write(r.sector, r.bytes!);
    }
    for (const r of reqs) {
      if (r.type === BLK_T_IN) {
        const want = model ? model.range(r.sector, r.data!.len) : new Uint8Array(r.data!.len);
        expect(Buffer.compare(Buffer.from(await this.m.readBytes(r.data!.addr, r.data!.len)), Buffer.from(want)), `${w}: data of the read of sector ${r.sector}`).toBe(0);
      } else if (r.type === BLK_T_GET_ID) {
        expect(new TextDecoder().decode(await this.m.readBytes(r.data!.addr, SERIAL.length)), `${w}: serial`).toBe(SERIAL);
      }
    }
  }

  /** Notify, wait for all of `reqs`, check them, and their interrupt (acknowledged or left pending). */
  async complete(reqs: readonly BlkReq[], model: DiskModel | undefined, ack = true): Promise<void> {
    const mark = this.m.irq.mark();
    const from = positionsNow(this.ring);
    await this.rig.drv.notify(0);
    const got = await this.ring.waitUsed(reqs.length, { timeoutMs: 5000, what: `${reqs.length} blk completions on ${this.rig.where}` });
    await this.checkDone(reqs, got, model, from);
    await this.rig.expectInterrupt(mark, ack);
  }

  async request(type: number, sector: number, len: number, seed: number, model: DiskModel | undefined, opts: { indirect?: boolean; ack?: boolean } = {}): Promise<BlkReq> {
    const r = await this.post(type, sector, len, seed, opts.indirect);
    await this.complete([r], model, opts.ack);
    return r;
  }
}

async function blkUp(ctx: MigrationContext, num: number, irq: IrqMode, sectors: number): Promise<BlkGuest> {
  const rig = await MigRig.open(ctx, T.modern);
  await rig.writeSentinels();
  const offered = await rig.drv.readDeviceFeatures();
  const g = new BlkGuest(ctx, rig, await bringUpPacked(rig, { features: BLK | EI | IND, num, irq }, offered));
  // The configuration read once, as a driver does at probe (its bytes are in the migrated state).
  const capacity = (await rig.drv.configRead(0, 4)) + (await rig.drv.configRead(4, 4)) * 2 ** 32;
  expect(capacity, 'capacity').toBe(sectors);
  return g;
}

/**
 * virtio-blk on a packed ring of 12: writes and reads (direct chains of three slots, one running
 * off the end of the ring, and indirect ones) over more than a lap, the last completion's
 * interrupt left pending, a write and a read posted and not notified; migrated; the destination
 * reads the same, completes the posted requests once after the notify, carries on over another
 * lap, flushes, and the image file holds what the guest wrote; after a reset, a new ring reads
 * the disk back.
 */
function blkDiskPacked(): MigrationScenario {
  return {
    name: `[${T.modern.label}] blk: ring of 12, disk written and read over a lap and more, completion unacknowledged, requests posted (msix)`,
    spec: blkSpec('if=none,id=d0,file=@disk:d@,format=raw', true),
    async run(ctx) {
      const g = await blkUp(ctx, 12, 'msix', DISK.size / 512);
      const { rig } = g;
      const ring = g.ring;
      const model = new DiskModel();
      // Slots 0-2, 3-5, 6 (indirect), 7-9, 10-11 and 0 (off the end), then 1-3.
      await g.request(BLK_T_OUT, 0, 2048, 1, model);
      await g.request(BLK_T_IN, 0, 4096, 0, model);
      await g.request(BLK_T_OUT, 16, 1024, 2, model, { indirect: true });
      await g.request(BLK_T_OUT, 40, 1536, 3, model);
      await g.request(BLK_T_IN, 12, 8192, 0, model);
      await g.request(BLK_T_OUT, 100, 512, 4, model, { ack: false });
      expect([ring.nextUsed, ring.usedWrap, ring.availWrap], 'a lap and more: slot 4 of the lap with wrap counter 0').toEqual([4, false, false]);
      const pw = await g.post(BLK_T_OUT, 200, 1536, 5);
      const pr = await g.post(BLK_T_IN, 40, 1024, 0, true);
      for (const [i, p] of [pw, pr].entries()) {
        rig.volatile.set(`pending${i}.status`, { addr: p.status, len: 1 });
        rig.volatile.set(`pending${i}.data`, p.data!);
      }
      const at = { lastAvailIdx: pw.slot, lastAvailWrap: pw.wrap, usedIdx: ring.nextUsed, usedWrap: ring.usedWrap, inuse: 0 };
      ctx.notes.push(POSITIONS_NOTE + JSON.stringify({ drained: at, held: at } satisfies PositionsNote));

      const before = await snapshotPacked(rig, ring);
      await ctx.migrate();
      const after = await snapshotPacked(rig, ring);
      // A destination that looks at its rings when it starts (ours, as QEMU with ioeventfd)
      // completes the posted requests: their slots hold used descriptors, the device event area
      // says where it looks next.
      // In the order it completed them: the first used descriptor at slot 4, the second after
      // the first one's chain (5 or 7).
      const allow = new Map<string, Allowance>([['pvq0.device_event', () => true]]);
      for (let s = pw.slot; s <= pr.slot; s++) {
        const addr = BigInt(g.addrAt(s));
        const usedTexts = new Set([pw, pr].map((p) => descText({ addr, len: p.len, id: p.id, flags: USED_FLAGS(pw.wrap) })));
        allow.set(`pvq0.desc[${s}]`, (b, a) => a === b || usedTexts.has(a));
      }
      expectSame(before, after, rig, allow);
      await rig.ackCarriedInterrupt();
      const early = await ring.takeUsed();
      ctx.notes.push(`posted requests: ${early.length} completed when the destination started (${ctx.impl})`);
      if (ctx.impl === 'qemu') expect(early, 'QEMU 7.2 blk with ioeventfd=off does not look at its rings when it starts').toEqual([]);
      await rig.drv.notify(0);
      const rest = await ring.waitUsed(2 - early.length, { timeoutMs: 5000, what: 'the posted requests' });
      await g.checkDone([pw, pr], [...early, ...rest], model, at);
      await new Promise((r) => setTimeout(r, 30));
      expect(await ring.takeUsed(), `${rig.where}: nothing more`).toEqual([]);
      await ackMsix(rig);

      // Another lap and more: 8-10, 11-0-1 (off the end), 2 (indirect), 3-5, 6-8, 9-11.
      await g.request(BLK_T_IN, 200, 1536, 0, model);
      await g.request(BLK_T_OUT, 300, 4096, 6, model);
      await g.request(BLK_T_IN, 100, 512, 0, model, { indirect: true });
      await g.request(BLK_T_OUT, 8, 2048, 7, model);
      await g.request(BLK_T_IN, 0, 8192, 0, model);
      await g.request(BLK_T_IN, 296, 8192, 0, model);
      expect([ring.nextUsed, ring.usedWrap], 'the destination finished the lap').toEqual([0, false]);
      const flush = await g.post(BLK_T_FLUSH, 0, 0, 0);
      await g.complete([flush], model);
      const image = readFileSync(ctx.disks['d']!);
      expect(Buffer.compare(image, Buffer.from(model.bytes)), `${rig.where}: the disk image file`).toBe(0);
      // A reset starts a new ring of 6.
      g.ring = await reinitPacked(rig, BLK | EI | IND, 6);
      await g.request(BLK_T_IN, 0, 8192, 0, model);
      await g.request(BLK_T_IN, 296, 4096, 0, model);
      await g.request(BLK_T_IN, 200, 2048, 0, model);
      expect([g.ring.nextUsed, g.ring.usedWrap], 'after a reset: a lap of 6, then slot 3').toEqual([3, false]);
    },
  };
}

/** Re-arm the queue's MSI-X message slot after an interrupt the check did not consume. */
async function ackMsix(rig: MigRig): Promise<void> {
  if (rig.irqMode === 'msix') await rig.m.writel(rig.qSlot!.addr, 0);
  await rig.pciDrv?.isr();
}

const LATENCY_OURS_NS = 3_000_000_000;
const LATENCY_QEMU_NS = 200_000_000;
const NULL_SECTORS = 8192;
const nullDrive = (latency: number): string => `if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=${NULL_SECTORS * 512},format=raw${latency ? `,file.latency-ns=${latency}` : ''}`;

/**
 * virtio-blk with requests in flight on a packed ring: a lap and more of GET_ID requests (answered
 * without the backend, so the source's latency does not slow them), then a write that runs off
 * the end of the ring, an indirect read and a write notified while the source's backend holds
 * them (null-co latency). Ours carries them in the request list, each element with its ndescs
 * (3, 1, 3), and the destination submits them when it starts; QEMU drains them before saving.
 * Either way they complete once, at the slots the driver expects.
 */
function blkInFlightPacked(): MigrationScenario {
  const spec = blkSpec(nullDrive(0), false);
  return {
    name: `[${T.modern.label}] blk: a write across the ring's end, an indirect read and a write in flight at migration (null-co latency), ring of 12`,
    spec,
    specFor: (end, impl) => (end === 0 ? blkSpec(nullDrive(impl === 'ours' ? LATENCY_OURS_NS : LATENCY_QEMU_NS), false) : spec),
    async run(ctx) {
      const g = await blkUp(ctx, 12, 'msix', NULL_SECTORS);
      const { rig } = g;
      const ring = g.ring;
      const source = ctx.impl;
      // 0-2, 3-5, 6-8, 9-11, then 0-2, 3-5, 6-8 and 9 (indirect) of the next lap.
      for (let i = 0; i < 7; i++) await g.request(BLK_T_GET_ID, 0, 20, 0, undefined);
      await g.request(BLK_T_GET_ID, 0, 20, 0, undefined, { indirect: true });
      expect([ring.nextUsed, ring.usedWrap], 'slot 10 of the lap with wrap counter 0').toEqual([10, false]);
      const usedBefore = positionsNow(ring);
      // 10, 11, 0 (the write runs into the next lap), 1 (indirect), 2-4.
      const reqs = [await g.post(BLK_T_OUT, 8, 4096, 1), await g.post(BLK_T_IN, 16, 2048, 0, true), await g.post(BLK_T_OUT, 24, 512, 2)];
      for (const [i, r] of reqs.entries()) {
        rig.volatile.set(`inflight${i}.status`, { addr: r.status, len: 1 });
        rig.volatile.set(`inflight${i}.data`, r.data!);
      }
      const mark = ctx.m.irq.mark();
      await rig.drv.notify(0);
      // Popped and in the backend: nothing completes for a while.
      await new Promise((r) => setTimeout(r, 40));
      expect(await ring.takeUsed(), `${rig.where}: the requests are still in the backend`).toEqual([]);
      const popped = positionsNow(ring);
      // Drained: all used, the used position where the avail one is. Held: the three chains' 7
      // slots still in use, the used position before them.
      const drained = { ...popped, usedIdx: popped.lastAvailIdx, usedWrap: popped.lastAvailWrap };
      ctx.notes.push(POSITIONS_NOTE + JSON.stringify({ drained, held: { ...popped, usedIdx: usedBefore.usedIdx, usedWrap: usedBefore.usedWrap, inuse: 7 } } satisfies PositionsNote));
      await ctx.migrate();
      // At the destination they complete without a notify (from a QEMU source: they did already).
      const got = await ring.waitUsed(3, { timeoutMs: 8000, what: `the requests in flight on ${rig.where}` });
      ctx.notes.push(`requests in flight at migration completed on the destination (${source} → ${ctx.impl})`);
      // Used in the order the destination completed them: each descriptor at the slot after the
      // previous one's chain (takeUsed checked that), the set of ids and lengths the driver's.
      await g.checkDone(reqs, got, undefined, usedBefore);
      await rig.expectInterrupt(mark, true);
      await new Promise((r) => setTimeout(r, 50));
      expect(await ring.takeUsed(), `${rig.where}: nothing more`).toEqual([]);
      expect([ring.nextUsed, ring.usedWrap], 'used position after the three chains').toEqual([5, true]);
      // The device works on, across the ring's end.
      for (let i = 0; i < 4; i++) await g.request(BLK_T_IN, i, 512, 0, undefined, { indirect: i === 1 });
      await g.request(BLK_T_GET_ID, 0, 20, 0, undefined);
      expect([ring.nextUsed, ring.usedWrap], 'reads at 5-7, 8 (indirect), 9-11, then 0-2 of the next lap, GET_ID at 3-5').toEqual([6, false]);
    },
  };
}

/**
 * QEMU's own request list on a packed ring: an ENOSPC injected into the first write (blkdebug)
 * stops the QEMU source in `io-error` with that write (a chain of three slots, running off the
 * end of the ring) held in its request list, written with its ndescs. A destination that reads
 * the element as QEMU wrote it comes up in `io-error`, and `cont` submits the write again: it is
 * used at its slot, once, and the image holds it.
 */
function blkIoErrorPacked(): MigrationScenario {
  const spec = blkSpec('if=none,id=d0,file=@disk:d@,format=raw', true);
  const injected = blkSpec('if=none,id=d0,format=raw,file.driver=blkdebug,file.image.filename=@disk:d@,file.inject-error.0.event=write_aio,file.inject-error.0.errno=28,file.inject-error.0.once=on', true);
  return {
    name: `[${T.modern.label}] blk: a write across the ring's end that QEMU stopped on ENOSPC (io-error) travels in QEMU's request list and completes after cont`,
    spec,
    specFor: (end) => (end === 0 ? injected : spec),
    destinationRunState: 'io-error',
    async run(ctx) {
      const g = await blkUp(ctx, 12, 'msix', DISK.size / 512);
      const { rig } = g;
      const ring = g.ring;
      const model = new DiskModel();
      // A lap and more of reads (the first write is the one that fails): 0-2, 3-5, 6 (indirect),
      // 7-9, 10-11-0, 1 (indirect), 2-4, 5-7, 8-10; the write then takes 11, 0 and 1.
      for (const [i, indirect] of [false, false, true, false, false, true, false, false, false].entries()) await g.request(BLK_T_IN, 8 * i, 2048, 0, model, { indirect });
      expect([ring.nextUsed, ring.usedWrap], 'slot 11 of the second lap').toEqual([11, false]);
      const from = positionsNow(ring);
      const w = await g.post(BLK_T_OUT, 40, 4096, 77);
      rig.volatile.set('w.status', { addr: w.status, len: 1 });
      await rig.drv.notify(0);
      await poll(ctx.m, async () => ((await ctx.m.qmp!.execute('query-status')) as { status: string }).status === 'io-error', { timeoutMs: 5000, what: 'the source to stop in io-error' });
      expect(await ring.takeUsed(), 'the stopped write is not used').toEqual([]);
      const held = { ...positionsNow(ring, 3), usedIdx: from.usedIdx, usedWrap: from.usedWrap };
      ctx.notes.push(POSITIONS_NOTE + JSON.stringify({ drained: held, held } satisfies PositionsNote));
      const before = await snapshotPacked(rig, ring);
      await ctx.migrate();
      const after = await snapshotPacked(rig, ring);
      expectSame(before, after, rig);
      await new Promise((r) => setTimeout(r, 40));
      expect(await ring.takeUsed(), `${rig.where}: nothing used before cont`).toEqual([]);
      await ctx.m.qmp!.execute('cont');
      const mark = ctx.m.irq.mark();
      const got = await ring.waitUsed(1, { timeoutMs: 5000, what: 'the write after cont' });
      await g.checkDone([w], got, model, from);
      await rig.expectInterrupt(mark, true);
      await g.request(BLK_T_IN, 40, 4096, 0, model);
      await g.complete([await g.post(BLK_T_FLUSH, 0, 0, 0)], model);
      expect(Buffer.compare(readFileSync(ctx.disks['d']!), Buffer.from(model.bytes)), `${rig.where}: the disk image file`).toBe(0);
    },
  };
}

/**
 * packed=on offered, the driver takes split rings: `virtio/packed_virtqueues` is still written
 * (the host offers RING_PACKED), and for a split queue it carries the free-running 16-bit
 * last_avail_idx and used_idx (11 here, beyond the ring of 8) with wrap counters 1. A destination
 * takes last_avail_idx from it and rebuilds the rest from the split ring as usual.
 */
function rngSplitOnPackedDevice(): MigrationScenario {
  const t: PciTransport = { ...T.modern, label: 'pci modern, packed offered, split negotiated' };
  return {
    name: `[${t.label}] rng: queue 8, 11 requests, then 9 more on the destination (msix)`,
    spec: RNG_SPECS.pci,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const ring = await rig.bringUp({ features: EI | IND, num: 8, irq: 'msix' });
      expect(rig.drv.features & PACKED, 'RING_PACKED not negotiated').toBe(0n);
      for (let i = 0; i < 11; i++) await rig.requests([8 + i]);
      const at = { lastAvailIdx: 11, lastAvailWrap: true, usedIdx: 11, usedWrap: true, inuse: 0 };
      ctx.notes.push(POSITIONS_NOTE + JSON.stringify({ drained: at, held: at } satisfies PositionsNote));
      const before = await rig.snapshot();
      await ctx.migrate();
      expectSame(before, await rig.snapshot(), rig);
      for (let i = 0; i < 9; i++) await rig.requests([8 + i]);
      expect(ring.lastUsedIdx, 'used.idx').toBe(20);
    },
  };
}

// --- the lists ---------------------------------------------------------------------------------

export const PACKED_MIGRATION_SCENARIOS: readonly MigrationScenario[] = [
  // 7 slots: 0 | 1-3 | 4 (indirect) | 5-6-0 | 1-2 | 3 | 4 | 5 (interrupt pending); posted at 6.
  rngPacked(RNG_SPECS.pci, T.modern, {
    num: 7,
    irq: 'intx',
    features: EI | IND,
    before: ['one', 'three', 'indirect', 'three', 'two', 'one', 'indirect', 'one'],
    after: ['two', 'three', 'indirect', 'three', 'one', 'two', 'one'],
  }),
  // 5 slots: 0 | 1-3 | 4-0 | 1 (indirect) | 2 (interrupt pending); posted at 3.
  rngPacked(RNG_SPECS.mmio, T.mmioV2, {
    num: 5,
    irq: 'mmio',
    features: EI | IND,
    before: ['one', 'three', 'two', 'indirect', 'one'],
    after: ['three', 'two', 'indirect', 'one', 'three'],
  }),
  blkDiskPacked(),
  rngSplitOnPackedDevice(),
];

/** Requests in flight at migration: ours → QEMU is expected to fail (row 77). */
export const PACKED_IN_FLIGHT: MigrationScenario = blkInFlightPacked();

/** QEMU-source only (ours cannot stop the VM on a block error): QEMU → QEMU is expected to fail (row 77). */
export const PACKED_QEMU_REQUEST_LIST: MigrationScenario = blkIoErrorPacked();
