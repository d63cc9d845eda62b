// virtio-blk on every transport against QEMU 7.2: enumeration and the configuration space,
// features the driver may take (and the write cache they leave), config writes, every request
// type with its data, layouts (split header, status inside a data buffer, indirect tables, many
// segments), out-of-range and misaligned requests, unknown types, malformed headers (which break
// the device), several requests per notify in every interrupt mode, reset with requests posted,
// and device variants (read-only drive, 4 KiB logical blocks, two queues, no write cache, no
// discard/write-zeroes, -blockdev null-co, an MBR disk, a disk that is not a whole number of
// sectors). The scenarios record; the oracle compares.
//
// Disks are files (`@disk:d@`, a copy per machine, src/oracle/disks.ts): QEMU opens real files,
// and both sides start from the same bytes.
import { BLK_T_DISCARD, BLK_T_FLUSH, BLK_T_GET_ID, BLK_T_IN, BLK_T_OUT, BLK_T_WRITE_ZEROES, BlkDriver, blkHeader, blkSegment, type BlkPosted } from '../../../src/driver/blk.js';
import { poll } from '../../../src/driver/machine.js';
import { GuestPciBus } from '../../../src/driver/pci.js';
import type { UsedEntry, VringDriver } from '../../../src/driver/vring.js';
import { fnv1a } from '../../../src/oracle/transcript.js';
import type { OracleGroup, OracleMachineSpec, OracleScenario } from '../../../src/oracle/scenario.js';
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import { readVirtioCaps, VirtioPciCommon } from '../../../src/driver/virtio-pci-driver.js';
import { scanMmio } from '../../../src/driver/virtio-mmio-driver.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../../src/virtio/constants.js';
import {
  VIRTIO_BLK_F_BLK_SIZE,
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_GEOMETRY,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_SEG_MAX,
  VIRTIO_BLK_F_TOPOLOGY,
  VIRTIO_BLK_F_WRITE_ZEROES,
} from '../../../src/devices/blk/constants.js';
import { bringUp, hexb, isModern, nameRing, openRig, teardown, type IrqMode, type MmioTransport, type PciTransport, type Rig, type Transport } from './rig.js';
import { MMIO_V1, MMIO_V2, PCI_LEGACY, PCI_MODERN, PCI_TRANS_LEGACY, PCI_TRANS_MODERN } from './transports.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const LEGACY_EXTRA = bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT);
/** What Linux's virtio_blk takes (of what QEMU offers). */
const LINUX = bit(VIRTIO_BLK_F_SEG_MAX) | bit(VIRTIO_BLK_F_GEOMETRY) | bit(VIRTIO_BLK_F_BLK_SIZE) | bit(VIRTIO_BLK_F_TOPOLOGY) | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE) | bit(VIRTIO_BLK_F_MQ) | bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);

/** Disk size of the main groups: 2 MiB, 4096 sectors. */
const DISK = 2 * 1024 * 1024;
const SECTORS = DISK / 512;

const irqModes = (t: Transport): IrqMode[] => (t.kind === 'pci' ? ['intx', 'msix', 'msix-masked'] : ['mmio']);
const defaultIrq = (t: Transport): IrqMode => (t.kind === 'pci' ? 'intx' : 'mmio');
/** Queue size to program: `n`, except on legacy PCI where the size is fixed (256). */
const ringNum = (t: Transport, n: number): number | undefined => (t.kind === 'pci' && t.mode === 'legacy' ? undefined : n);

interface BlkRig {
  rig: Rig;
  ring: VringDriver;
  blk: BlkDriver;
}

async function open(ctx: Parameters<OracleScenario['run']>[0], t: Transport, opts: { features?: bigint; num?: number; irq?: IrqMode; noDriverOk?: boolean } = {}): Promise<BlkRig> {
  const rig = await openRig(ctx, t);
  const features = opts.features ?? (LINUX | EI | IND | (isModern(t) ? 0n : LEGACY_EXTRA));
  const ring = await bringUp(rig, { features, num: ringNum(t, opts.num ?? 16), irq: opts.irq ?? defaultIrq(t), ...(opts.noDriverOk ? { noDriverOk: true } : {}) });
  return { rig, ring, blk: new BlkDriver(rig.drv, ring, ctx.alloc) };
}

const fmt = (u: readonly UsedEntry[]): string => (u.length === 0 ? 'none' : [...u].sort((a, b) => a.id - b.id).map((e) => `${e.id}:${e.len}`).join(' '));

/** Wait (bounded, unrecorded) for `count` used entries; note them sorted (completion order is the backend's). */
async function collect(b: BlkRig, count: number, timeoutMs = 3000): Promise<UsedEntry[]> {
  const m = b.rig.m;
  const from = b.ring.lastUsedIdx;
  // Wait for all of them, then take them at once, freeing chains in head order: descriptor reuse
  // then does not depend on the order the backend finished in (QEMU's thread pool, our fs).
  const got = await m.quiet(async () => {
    try {
      await poll(m, async () => (((await b.ring.usedIdx()) - from) & 0xffff) >= count, { timeoutMs, what: `${count} used entries` });
    } catch {
      /* noted */
    }
    return b.ring.takeUsed(true);
  });
  await m.note(`used ${fmt(got)}${got.length < count ? ` (waited for ${count})` : ''}`);
  return got;
}

/** Note what a posted request left: status byte and a digest of its data buffers. */
async function outcome(b: BlkRig, p: BlkPosted, label: string): Promise<void> {
  const m = b.rig.m;
  const st = await m.quiet(() => m.readb(p.status));
  const parts: string[] = [];
  for (const d of p.data) if (d.len > 0) parts.push(`${d.len}:${fnv1a(await m.quiet(() => m.readBytes(d.addr, d.len)))}`);
  await m.note(`${label}: status ${st}${parts.length ? ` data ${parts.join(',')}` : ''}`);
}

/** Post requests, notify once, wait for all, note each outcome, check interrupts. */
async function batch(b: BlkRig, reqs: readonly { type: number; sector: bigint | number; len: number; segments?: number[]; indirect?: boolean; bytes?: Uint8Array }[]): Promise<void> {
  const posted: BlkPosted[] = [];
  for (const r of reqs) {
    posted.push(await b.blk.post(r.type, r.sector, r.len, { ...(r.segments ? { segments: r.segments } : {}), ...(r.indirect ? { indirect: true } : {}), ...(r.bytes ? { bytes: r.bytes } : {}) }));
  }
  await b.blk.notify();
  await collect(b, posted.length);
  for (let i = 0; i < posted.length; i++) await outcome(b, posted[i]!, `req ${i} type ${reqs[i]!.type} sector ${reqs[i]!.sector} len ${reqs[i]!.len}`);
  await b.rig.irq?.check();
}

/** One request at a time. */
const one = (b: BlkRig, type: number, sector: bigint | number, len: number, extra: { segments?: number[]; indirect?: boolean; bytes?: Uint8Array } = {}) => batch(b, [{ type, sector, len, ...extra }]);

/**
 * Give the device time to complete what it may complete (bounded, unrecorded): until used.idx
 * moves or `ms` pass. Our file backend is asynchronous too, so `idle()` (no wait on our side)
 * is not enough where a completion may come.
 */
async function settle(b: BlkRig, ms = 300): Promise<void> {
  const m = b.rig.m;
  const from = b.ring.lastUsedIdx;
  await m.quiet(() => poll(m, async () => (await b.ring.usedIdx()) !== from, { timeoutMs: ms }).catch(() => undefined));
  await m.idle();
}

async function needsReset(b: BlkRig): Promise<void> {
  await b.rig.m.note(`status ${hexb(await b.rig.drv.status())}`);
}

/** docs/qemu-differences.md #17: QEMU keeps a broken device's mmio line high after InterruptACK. */
const ROW17: ExpectedDifference = {
  row: 17,
  reason: 'a broken device: QEMU keeps the mmio line high after InterruptACK until reset; we lower it once the ISR is 0',
  sections: ['no readable buffer (header missing)', 'no writable buffer (status missing)', 'header of 8 bytes', 'discard segment of 8 bytes', 'write zeroes without a segment', 'recovered'],
  lines: /^irq lower \d+$/,
  optional: true,
};

// --- register dumps ------------------------------------------------------------------------------

async function dumpConfig(rig: Rig, span: number): Promise<void> {
  const d = rig.drv;
  for (let o = 0; o < span; o++) await d.configRead(o, 1);
  for (let o = 0; o + 2 <= span; o += 2) await d.configRead(o, 2);
  for (let o = 0; o + 4 <= span; o += 4) await d.configRead(o, 4);
}

async function dumpFeatures(rig: Rig): Promise<void> {
  if (rig.t.kind === 'pci' && rig.t.mode === 'modern') {
    const drv = rig.pciDrv!;
    const cap = drv.caps.find((x) => x.cfgType === 1)!;
    const bar = rig.pci!.bars[cap.bar]!;
    for (const sel of [0, 1, 2]) {
      await bar.writel(cap.offset + VirtioPciCommon.DFSELECT, sel);
      await bar.readl(cap.offset + VirtioPciCommon.DF);
    }
    await bar.readw(cap.offset + VirtioPciCommon.NUMQ);
    await bar.writel(cap.offset + VirtioPciCommon.DFSELECT, 0);
    return;
  }
  await rig.drv.readDeviceFeatures();
  await rig.m.note(`device features ${rig.drv.deviceFeatures.toString(16)}`);
}

// --- scenarios -----------------------------------------------------------------------------------

function enumeration(t: Transport, cfgSpan: number): OracleScenario {
  return {
    name: `[${t.label}] enumeration, features and the configuration space`,
    async run(ctx) {
      const m = ctx.m;
      if (t.kind === 'pci') {
        await m.phase('scan');
        const bus = new GuestPciBus(m);
        await m.note(`functions ${(await bus.scan()).map(String).join(', ')}`);
        const dev = await bus.device(t.slot);
        await dev.configDump();
        await m.note(`bars ${JSON.stringify(await dev.listBars())}`);
        await m.note(`virtio caps ${JSON.stringify(await readVirtioCaps(dev))}`);
      } else {
        await m.phase('scan');
        const all = await scanMmio(m);
        await m.note(`transports ${all.map((x) => `${x.index}:v${x.version}:id${x.deviceId}`).join(' ')}`);
      }
      await m.phase('features');
      const rig = await openRig(ctx, t);
      await dumpFeatures(rig);
      await m.phase('config before negotiation');
      await rig.drv.setStatus(0);
      await rig.drv.setStatus(ACK | DRIVER);
      await dumpConfig(rig, cfgSpan);
      await m.phase('config after negotiation');
      await rig.drv.init(LINUX | (isModern(t) ? 0n : LEGACY_EXTRA));
      await dumpConfig(rig, cfgSpan);
      await teardown(rig);
    },
  };
}

/** The write cache after DRIVER_OK, for feature sets a driver may take (virtio_blk_set_status). */
function featureSets(t: Transport): OracleScenario {
  const sets: [string, bigint][] = [
    ['everything Linux takes', LINUX],
    ['nothing', 0n],
    ['FLUSH without CONFIG_WCE', bit(VIRTIO_BLK_F_FLUSH)],
    ['CONFIG_WCE without FLUSH', bit(VIRTIO_BLK_F_CONFIG_WCE)],
    ['all ones', 0xffff_ffff_ffffn],
  ];
  return {
    name: `[${t.label}] feature sets and the write cache they leave`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      for (const [label, f] of sets) {
        await m.phase(label);
        await rig.drv.setStatus(0);
        await rig.drv.init(f | (isModern(t) ? 0n : LEGACY_EXTRA)).catch(async (e: Error) => m.note(`init: ${e.message}`));
        await m.note(`negotiated ${rig.drv.features.toString(16)}`);
        await rig.drv.configRead(32, 1);
        await rig.drv.driverOk();
        await rig.drv.status();
        await rig.drv.configRead(32, 1);
      }
      await m.phase('config writes');
      // The wce byte switches the cache; every other field is read-only (a write is kept until the
      // next read refreshes the whole space).
      await rig.drv.setStatus(0);
      await rig.drv.init(LINUX | (isModern(t) ? 0n : LEGACY_EXTRA));
      await rig.drv.driverOk();
      for (const v of [0, 1, 0, 7]) {
        await rig.drv.configWrite(32, 1, v);
        await rig.drv.configRead(32, 1);
      }
      await rig.drv.configWrite(0, 4, 0x12345678);
      await rig.drv.configRead(0, 4);
      await rig.drv.configWrite(34, 2, 9);
      await rig.drv.configRead(34, 2);
      await rig.drv.configWrite(33, 1, 5);
      await rig.drv.configRead(32, 4);
      await m.phase('reset restores the cache');
      await rig.drv.setStatus(0);
      await rig.drv.configRead(32, 1);
      await teardown(rig);
    },
  };
}

function readWrite(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] read, write and read back, every size and place`,
    async run(ctx) {
      const b = await open(ctx, t);
      const m = b.rig.m;
      await m.phase('reads of the disk as it is');
      await one(b, BLK_T_IN, 0, 512);
      await one(b, BLK_T_IN, 1, 4096);
      await one(b, BLK_T_IN, SECTORS - 1, 512);
      await one(b, BLK_T_IN, 100, 65536);
      await m.phase('writes');
      await one(b, BLK_T_OUT, 10, 512);
      await one(b, BLK_T_OUT, 20, 4096);
      await one(b, BLK_T_OUT, SECTORS - 8, 4096);
      await one(b, BLK_T_OUT, 200, 3 * 4096, { segments: [4096, 512, 7680] });
      await m.phase('read back');
      await one(b, BLK_T_IN, 10, 512);
      await one(b, BLK_T_IN, 20, 4096);
      await one(b, BLK_T_IN, SECTORS - 8, 4096);
      await one(b, BLK_T_IN, 200, 3 * 4096, { segments: [512, 8192, 3584] });
      await m.phase('zero-length requests');
      await one(b, BLK_T_IN, 5, 0);
      await one(b, BLK_T_OUT, 5, 0);
      await one(b, BLK_T_IN, SECTORS, 0);
      await m.phase('indirect');
      await one(b, BLK_T_OUT, 300, 2048, { indirect: true, segments: [1024, 1024] });
      await one(b, BLK_T_IN, 300, 2048, { indirect: true });
      await teardown(b.rig);
    },
  };
}

function layouts(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] layouts: split header, header with data, status inside a data buffer`,
    async run(ctx) {
      const b = await open(ctx, t);
      const { rig, blk } = b;
      const m = rig.m;
      const a = ctx.alloc;
      await m.phase('header split 7 + 9');
      const h = a.alloc(16);
      await m.writeBytes(h, blkHeader(BLK_T_IN, 40));
      const d = a.alloc(512, 512);
      await m.memset(d, 512, 0xee);
      const s = a.alloc(1);
      await m.writeb(s, 0xff);
      await blk.postChain([{ addr: h, len: 7 }, { addr: h + 7, len: 9 }, { addr: d, len: 512, write: true }, { addr: s, len: 1, write: true }]);
      await blk.notify();
      await collect(b, 1);
      await outcome(b, { head: 0, status: s, data: [{ addr: d, len: 512 }], inLen: 513 }, 'split header');
      await m.phase('header and data in one buffer (write)');
      const hd = a.alloc(16 + 1024, 16);
      await m.writeBytes(hd, blkHeader(BLK_T_OUT, 41));
      await m.memset(hd + 16, 1024, 0x3c);
      const s2 = a.alloc(1);
      await m.writeb(s2, 0xff);
      await blk.postChain([{ addr: hd, len: 16 + 1024 }, { addr: s2, len: 1, write: true }]);
      await blk.notify();
      await collect(b, 1);
      await m.note(`status ${await m.readb(s2)}`);
      await one(b, BLK_T_IN, 41, 1024);
      await m.phase('status as the last byte of the data buffer (read)');
      const h3 = a.alloc(16);
      await m.writeBytes(h3, blkHeader(BLK_T_IN, 41));
      const ds = a.alloc(1025, 512);
      await m.memset(ds, 1025, 0xee);
      await blk.postChain([{ addr: h3, len: 16 }, { addr: ds, len: 1025, write: true }]);
      await blk.notify();
      await collect(b, 1);
      await m.note(`data ${fnv1a(await m.readBytes(ds, 1024))} status ${await m.readb(ds + 1024)}`);
      await m.phase('a read whose data is not a whole number of sectors plus status');
      const h4 = a.alloc(16);
      await m.writeBytes(h4, blkHeader(BLK_T_IN, 42));
      const d4 = a.alloc(700, 512);
      await m.memset(d4, 700, 0xee);
      await blk.postChain([{ addr: h4, len: 16 }, { addr: d4, len: 700, write: true }]);
      await blk.notify();
      await collect(b, 1);
      await m.note(`data ${fnv1a(await m.readBytes(d4, 700))}`);
      await m.phase('many segments');
      await one(b, BLK_T_OUT, 500, 8 * 512, { segments: Array.from({ length: 8 }, () => 512) });
      await one(b, BLK_T_IN, 500, 8 * 512, { segments: [256, 256, 1024, 2560] });
      await teardown(rig);
    },
  };
}

function otherTypes(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] flush, GET_ID, discard, write zeroes and unknown types`,
    async run(ctx) {
      const b = await open(ctx, t);
      const { blk } = b;
      const m = b.rig.m;
      await m.phase('flush');
      await one(b, BLK_T_FLUSH, 0, 0);
      await one(b, BLK_T_FLUSH | 1, 77, 0);
      await one(b, BLK_T_FLUSH, 0, 512);
      await m.phase('GET_ID');
      for (const len of [0, 1, 8, 20, 32]) await one(b, BLK_T_GET_ID, 0, len);
      await one(b, BLK_T_GET_ID | 1, 0, 20);
      await m.phase('write zeroes and discard');
      await one(b, BLK_T_OUT, 600, 8192);
      for (const [type, sector, n, flags] of [
        [BLK_T_WRITE_ZEROES, 600, 4, 0],
        [BLK_T_WRITE_ZEROES, 606, 2, 1],
        [BLK_T_WRITE_ZEROES, 610, 1, 2],
        [BLK_T_DISCARD, 608, 2, 0],
        [BLK_T_DISCARD, 608, 2, 1],
        [BLK_T_DISCARD, 608, 2, 4],
        [BLK_T_DISCARD, SECTORS - 1, 2, 0],
        [BLK_T_WRITE_ZEROES, SECTORS, 1, 0],
        [BLK_T_WRITE_ZEROES, 0, 0x40_0000, 0],
        [BLK_T_DISCARD, 0, 0, 0],
      ] as const) {
        await one(b, type, 0, 16, { bytes: blkSegment(sector, n, flags) });
      }
      await one(b, BLK_T_IN, 600, 8192);
      await m.phase('segment of 32 bytes, and types without the OUT bit');
      await batch(b, [{ type: BLK_T_DISCARD, sector: 0, len: 32, bytes: new Uint8Array([...blkSegment(600, 1), ...blkSegment(601, 1)]) }]);
      await one(b, BLK_T_WRITE_ZEROES - 1, 0, 16, { bytes: blkSegment(600, 1) });
      await one(b, BLK_T_DISCARD - 1, 0, 16, { bytes: blkSegment(600, 1) });
      await m.phase('unknown types and flags');
      for (const type of [3, 6, 7, 9, 14, 15, 16, 99, 0x8000_0000, 0x8000_0001, 0x8000_0004, 0x8000_000d, 0xffff_ffff]) await one(b, type, 0, 512);
      await m.phase('legacy SCSI passthrough');
      // Out buffers: header, command; in buffers: sense, the scsi inhdr, status.
      const a = ctx.alloc;
      const hdr = a.alloc(16);
      await m.writeBytes(hdr, blkHeader(2, 0));
      const cmd = a.alloc(16);
      await m.memset(cmd, 16, 0x12);
      const sense = a.alloc(96);
      await m.memset(sense, 96, 0xee);
      const inhdr = a.alloc(16);
      await m.memset(inhdr, 16, 0xee);
      const st = a.alloc(1);
      await m.writeb(st, 0xff);
      await blk.postChain([{ addr: hdr, len: 16 }, { addr: cmd, len: 16 }, { addr: sense, len: 96, write: true }, { addr: inhdr, len: 16, write: true }, { addr: st, len: 1, write: true }]);
      await blk.notify();
      await collect(b, 1);
      await m.note(`scsi: status ${await m.readb(st)} inhdr ${fnv1a(await m.readBytes(inhdr, 16))} sense ${fnv1a(await m.readBytes(sense, 96))}`);
      await one(b, 2, 0, 64);
      await one(b, 3, 0, 64);
      await teardown(b.rig);
    },
  };
}

function ranges(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] out-of-range sectors and misaligned lengths`,
    async run(ctx) {
      const b = await open(ctx, t);
      const m = b.rig.m;
      await m.phase('sectors');
      for (const [sector, len] of [
        [SECTORS, 512],
        [SECTORS - 1, 1024],
        [SECTORS + 1, 0],
        [0x1_0000_0000n, 512],
        [1n << 55n, 512],
        [(1n << 64n) - 1n, 512],
        [(1n << 64n) - 1n, 0],
        [1n << 63n, 512],
      ] as const) {
        await one(b, BLK_T_IN, sector, len);
        await one(b, BLK_T_OUT, sector, len);
      }
      await m.phase('lengths');
      for (const len of [1, 511, 513, 4095]) {
        await one(b, BLK_T_IN, 8, len);
        await one(b, BLK_T_OUT, 8, len);
      }
      await one(b, BLK_T_IN, 8, 1024, { segments: [100, 924] });
      await one(b, BLK_T_IN, 8, 1000, { segments: [500, 500] });
      await teardown(b.rig);
    },
  };
}

/** Malformed chains that break the device (virtio_error): each followed by a reset and a request. */
function malformed(t: Transport): OracleScenario {
  const cases: [string, (b: BlkRig, a: Parameters<OracleScenario['run']>[0]['alloc']) => Promise<void>][] = [
    ['no readable buffer (header missing)', async (b, a) => {
      const s = a.alloc(32);
      await b.blk.postChain([{ addr: s, len: 32, write: true }]);
    }],
    ['no writable buffer (status missing)', async (b, a) => {
      const h = a.alloc(16);
      await b.rig.m.writeBytes(h, blkHeader(BLK_T_IN, 0));
      await b.blk.postChain([{ addr: h, len: 16 }]);
    }],
    ['header of 8 bytes', async (b, a) => {
      const h = a.alloc(16);
      await b.rig.m.writeBytes(h, blkHeader(BLK_T_IN, 0));
      const s = a.alloc(1);
      await b.blk.postChain([{ addr: h, len: 8 }, { addr: s, len: 1, write: true }]);
    }],
    ['discard segment of 8 bytes', async (b, a) => {
      const h = a.alloc(32);
      await b.rig.m.writeBytes(h, blkHeader(BLK_T_DISCARD, 0));
      await b.rig.m.writeBytes(h + 16, blkSegment(1, 1));
      const s = a.alloc(1);
      await b.blk.postChain([{ addr: h, len: 24 }, { addr: s, len: 1, write: true }]);
    }],
    ['write zeroes without a segment', async (b, a) => {
      const h = a.alloc(16);
      await b.rig.m.writeBytes(h, blkHeader(BLK_T_WRITE_ZEROES, 0));
      const s = a.alloc(1);
      await b.blk.postChain([{ addr: h, len: 16 }, { addr: s, len: 1, write: true }]);
    }],
  ];
  return {
    name: `[${t.label}] malformed headers break the device; a reset recovers`,
    ...(t.kind === 'mmio' ? { expected: [ROW17] } : {}),
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      for (const [label, post] of cases) {
        await m.phase(label);
        const ring = await bringUp(rig, { features: LINUX | (isModern(t) ? 0n : LEGACY_EXTRA), num: ringNum(t, 8), irq: defaultIrq(t) });
        const b: BlkRig = { rig, ring, blk: new BlkDriver(rig.drv, ring, ctx.alloc) };
        await post(b, ctx.alloc);
        await b.blk.notify();
        await m.idle();
        await needsReset(b);
        await m.note(`used.idx ${await ring.usedIdx()}`);
        await rig.irq?.check();
        // A good request after it: processed only if the device did not break.
        const p = await b.blk.post(BLK_T_IN, 0, 512);
        await b.blk.notify();
        await settle(b, 200);
        await m.note(`used.idx ${await ring.usedIdx()}`);
        await outcome(b, p, 'good request after');
        await rig.drv.setStatus(0);
        await rig.drv.status();
      }
      await m.phase('recovered');
      const b = await open(ctx, t);
      await one(b, BLK_T_IN, 1, 512);
      await teardown(rig);
    },
  };
}

function laps(t: Transport, irq: IrqMode, features: bigint): OracleScenario {
  return {
    name: `[${t.label}] batches over several laps, ${irq}, EVENT_IDX ${features & EI ? 'on' : 'off'}, indirect ${features & IND ? 'on' : 'off'}`,
    async run(ctx) {
      const b = await open(ctx, t, { features: features | LINUX | (isModern(t) ? 0n : LEGACY_EXTRA), irq, num: 16 });
      const m = b.rig.m;
      await m.phase('batches');
      for (let lap = 0; lap < 4; lap++) {
        const reqs = Array.from({ length: 4 }, (_, i) => ({ type: i % 2 ? BLK_T_IN : BLK_T_OUT, sector: 800 + lap * 16 + i * 2, len: 1024, indirect: (features & IND) !== 0n && i === 3 }));
        await batch(b, reqs);
      }
      await m.phase('one at a time');
      for (let i = 0; i < 10; i++) await one(b, i % 3 === 0 ? BLK_T_FLUSH : BLK_T_IN, 800 + i, i % 3 === 0 ? 0 : 512);
      await m.note(`used.idx ${await b.ring.usedIdx()} avail_event ${await b.ring.availEvent()} used.flags ${await b.ring.usedFlags()}`);
      await m.phase('reset');
      await teardown(b.rig);
    },
  };
}

function resetMidWork(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] reset with requests posted and a completion unacknowledged`,
    async run(ctx) {
      const b = await open(ctx, t, { num: 8 });
      const m = b.rig.m;
      await m.phase('work');
      await one(b, BLK_T_OUT, 900, 512);
      const done = await b.blk.post(BLK_T_IN, 900, 512);
      await b.blk.notify();
      await collect(b, 1);
      const pending = [await b.blk.post(BLK_T_OUT, 901, 512), await b.blk.post(BLK_T_IN, 902, 512)];
      await m.phase('reset');
      await b.rig.drv.setStatus(0);
      await b.rig.drv.status();
      await m.idle();
      await outcome(b, done, 'completed');
      for (const p of pending) await outcome(b, p, 'never notified');
      await m.phase('after');
      const b2 = await open(ctx, t, { num: 8 });
      await one(b2, BLK_T_IN, 900, 1536);
      await teardown(b2.rig);
    },
  };
}

function beforeDriverOk(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] notify before DRIVER_OK`,
    async run(ctx) {
      const b = await open(ctx, t, { num: 8, noDriverOk: true });
      const m = b.rig.m;
      await m.phase('queue set up, no DRIVER_OK');
      const p = await b.blk.post(BLK_T_IN, 3, 512);
      await b.blk.notify();
      await settle(b);
      await m.note(`used.idx ${await b.ring.usedIdx()}`);
      await outcome(b, p, 'before DRIVER_OK');
      await b.rig.irq?.check();
      await m.phase('DRIVER_OK');
      await b.rig.drv.driverOk();
      await m.idle();
      await collect(b, 1, 300);
      await one(b, BLK_T_IN, 4, 512);
      await teardown(b.rig);
    },
  };
}

function blkScenarios(t: Transport, cfgSpan: number): OracleScenario[] {
  const out = [enumeration(t, cfgSpan), featureSets(t), readWrite(t), layouts(t), otherTypes(t), ranges(t), malformed(t)];
  for (const irq of irqModes(t)) out.push(laps(t, irq, EI | IND));
  out.push(laps(t, defaultIrq(t), 0n));
  out.push(resetMidWork(t), beforeDriverOk(t));
  return out;
}

// --- groups --------------------------------------------------------------------------------------

const drive = (extra = '') => `if=none,id=d0,file=@disk:d@,format=raw${extra}`;
const blkPci = (opts: string): OracleMachineSpec => ({
  machine: 'pc',
  disks: { d: { size: DISK } },
  args: ['-drive', drive(), '-device', `virtio-blk-pci,drive=d0,ioeventfd=off,serial=VTS-ORACLE-SERIAL${opts}`],
});
const blkMmio = (v2: boolean, extra: string[] = [], dev = ''): OracleMachineSpec => ({
  machine: 'microvm',
  disks: { d: { size: DISK } },
  args: [...(v2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-global', 'virtio-mmio.ioeventfd=off', ...extra, '-drive', drive(), '-device', `virtio-blk-device,drive=d0,serial=VTS-ORACLE-SERIAL${dev}`],
});

export const BLK_SPEC = {
  pciModern: blkPci(',disable-legacy=on,addr=04.0'),
  pciLegacy: blkPci(',disable-modern=on,addr=03.0'),
  pciTransitional: blkPci(''),
  mmioV1: blkMmio(false),
  mmioV2: blkMmio(true),
} as const;

/** A variant of the device on pci modern (features, config and requests only). */
function variant(name: string, spec: OracleMachineSpec, cfgSpan: number, t: PciTransport | MmioTransport = PCI_MODERN, extra: OracleScenario[] = []): OracleGroup {
  return { name, spec, scenarios: [enumeration(t, cfgSpan), readWrite(t), otherTypes(t), ranges(t), ...extra] };
}

const pciWith = (deviceOpts: string, driveOpts = '', disks: OracleMachineSpec['disks'] = { d: { size: DISK } }): OracleMachineSpec => ({
  machine: 'pc',
  disks,
  args: ['-drive', drive(driveOpts), '-device', `virtio-blk-pci,drive=d0,ioeventfd=off,disable-legacy=on,addr=04.0${deviceOpts}`],
});

function queue1(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] requests on the second queue`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await rig.drv.init(LINUX | EI);
      const q0 = await rig.drv.setupQueue(0, { num: ringNum(t, 8) });
      nameRing(m, q0, 0);
      const q1 = await rig.drv.setupQueue(1, { num: ringNum(t, 8) });
      nameRing(m, q1, 1);
      await rig.drv.driverOk();
      const b1: BlkRig = { rig, ring: q1, blk: new BlkDriver(rig.drv, q1, ctx.alloc, 1) };
      const b0: BlkRig = { rig, ring: q0, blk: new BlkDriver(rig.drv, q0, ctx.alloc, 0) };
      await one(b1, BLK_T_OUT, 7, 1024);
      await one(b0, BLK_T_IN, 7, 1024);
      await one(b1, BLK_T_IN, 7, 1024);
      await batch(b1, [{ type: BLK_T_IN, sector: 1, len: 512 }, { type: BLK_T_FLUSH, sector: 0, len: 0 }]);
      await m.note(`q0 used.idx ${await q0.usedIdx()} q1 used.idx ${await q1.usedIdx()}`);
      await teardown(rig);
    },
  };
}

export const BLK_GROUPS: OracleGroup[] = [
  { name: 'pc, virtio-blk-pci modern (disable-legacy=on) at 04.0', spec: BLK_SPEC.pciModern, scenarios: blkScenarios(PCI_MODERN, 64) },
  { name: 'pc, virtio-blk-pci legacy (disable-modern=on) at 03.0', spec: BLK_SPEC.pciLegacy, scenarios: blkScenarios(PCI_LEGACY, 64) },
  {
    name: 'pc, virtio-blk-pci transitional (defaults) at 02.0',
    spec: BLK_SPEC.pciTransitional,
    scenarios: [...blkScenarios(PCI_TRANS_MODERN, 64), ...blkScenarios(PCI_TRANS_LEGACY, 64)],
  },
  { name: 'microvm, virtio-blk-device on virtio-mmio v1 (default)', spec: BLK_SPEC.mmioV1, scenarios: blkScenarios(MMIO_V1, 64) },
  { name: 'microvm, virtio-blk-device on virtio-mmio v2 (force-legacy=false)', spec: BLK_SPEC.mmioV2, scenarios: blkScenarios(MMIO_V2, 64) },
  variant('pc, virtio-blk-pci, read-only drive', pciWith('', ',readonly=on'), 64),
  variant('pc, virtio-blk-pci, 4 KiB logical and physical blocks, min/opt I/O, discard granularity', pciWith(',logical_block_size=4096,physical_block_size=4096,min_io_size=8k,opt_io_size=64k,discard_granularity=16k'), 64),
  variant('pc, virtio-blk-pci, 512 logical / 4096 physical blocks', pciWith(',physical_block_size=4096'), 64),
  variant('pc, virtio-blk-pci, two queues', pciWith(',num-queues=2'), 64, PCI_MODERN, [queue1(PCI_MODERN)]),
  variant('pc, virtio-blk-pci, cache=writethrough, config-wce=off', pciWith(',config-wce=off', ',cache=writethrough'), 64, PCI_MODERN, [featureSets(PCI_MODERN)]),
  variant('pc, virtio-blk-pci, write-cache=off, x-enable-wce-if-config-wce=off', pciWith(',write-cache=off,x-enable-wce-if-config-wce=off'), 64, PCI_MODERN, [featureSets(PCI_MODERN)]),
  variant('pc, virtio-blk-pci, discard=off, write-zeroes=off', pciWith(',discard=off,write-zeroes=off'), 64),
  variant('pc, virtio-blk-pci, discard only, limits, drive discard=unmap', pciWith(',write-zeroes=off,max-discard-sectors=8', ',discard=unmap'), 64),
  variant('pc, virtio-blk-pci, queue-size 16, seg-max-adjust=off, a 40-byte serial, CHS 100/4/17', pciWith(',queue-size=16,seg-max-adjust=off,serial=0123456789abcdefghijABCDEFGHIJ0123456789,cyls=100,heads=4,secs=17'), 64),
  variant('pc, virtio-blk-pci, an MBR disk (geometry from its partition table)', pciWith('', '', { d: { size: 8 * 1024 * 1024, init: 'mbr' } }), 64),
  variant('pc, virtio-blk-pci, a disk of 1000000 bytes (not whole sectors)', pciWith('', '', { d: { size: 1_000_000 } }), 64),
  {
    name: 'pc, virtio-blk-pci on -blockdev null-co (read-zeroes, 4 MiB)',
    spec: { machine: 'pc', args: ['-blockdev', 'driver=null-co,node-name=n0,size=4194304,read-zeroes=on', '-device', 'virtio-blk-pci,drive=n0,ioeventfd=off,disable-legacy=on,addr=04.0'] },
    scenarios: [enumeration(PCI_MODERN, 64), readWrite(PCI_MODERN), otherTypes(PCI_MODERN)],
  },
  {
    name: 'pc, virtio-blk-pci on -blockdev raw over file, 4 KiB logical blocks, modern and legacy',
    spec: {
      machine: 'pc',
      disks: { d: { size: DISK } },
      args: ['-blockdev', 'driver=file,node-name=f0,filename=@disk:d@', '-blockdev', 'driver=raw,node-name=r0,file=f0', '-device', 'virtio-blk-pci,drive=r0,ioeventfd=off,addr=05.0,logical_block_size=4096,physical_block_size=4096'],
    },
    scenarios: [{ ...enumeration({ ...PCI_TRANS_MODERN, slot: 5 }, 64) }, readWrite({ ...PCI_TRANS_MODERN, slot: 5 }), ranges({ ...PCI_TRANS_LEGACY, slot: 5 })],
  },
  {
    name: 'microvm, virtio-blk-device v2, read-only, two queues, null-co',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-drive', 'if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=1M,format=raw,readonly=on', '-device', 'virtio-blk-device,drive=d0,num-queues=2'] },
    scenarios: [enumeration(MMIO_V2, 64), readWrite(MMIO_V2), otherTypes(MMIO_V2), queue1(MMIO_V2)],
  },
];
