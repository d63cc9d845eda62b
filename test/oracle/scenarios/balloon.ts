// Conformance scenarios of virtio-balloon on every transport (PCI modern, legacy and transitional
// driven both ways; virtio-mmio v1 and v2) and with QEMU 7.2's feature properties: features and
// queues, the configuration space, QMP `balloon`/`query-balloon` and the BALLOON_CHANGE events a
// guest's `actual` raises (rate-limited as QEMU's monitor does), inflate and deflate with pages
// read back (discarded pages read as zeros; PFNs outside RAM, in ROM or MMIO, duplicated,
// split across descriptors), statistics with the QOM polling interval, free page reporting and
// hinting. They record; the oracle compares.
import type { VringDriver } from '../../../src/driver/vring.js';
import { poll } from '../../../src/driver/machine.js';
import type { OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import { bit } from '../../../src/virtio/constants.js';
import {
  VIRTIO_BALLOON_F_DEFLATE_ON_OOM,
  VIRTIO_BALLOON_F_FREE_PAGE_HINT,
  VIRTIO_BALLOON_F_PAGE_POISON,
  VIRTIO_BALLOON_F_REPORTING,
  VIRTIO_BALLOON_F_STATS_VQ,
} from '../../../src/devices/balloon/virtio-balloon.js';
import { bringUpDevice, configBytes, configDwords, configGeneration, hex, mmioNum, noteEvents, openDevice, postChain, qmpEventMark, qmpNote, takeUsed, waitEvent, type Posted } from './devrig.js';
import { teardown, type Rig, type Transport } from './rig.js';

const STATS = bit(VIRTIO_BALLOON_F_STATS_VQ);
const OOM = bit(VIRTIO_BALLOON_F_DEFLATE_ON_OOM);
const HINT = bit(VIRTIO_BALLOON_F_FREE_PAGE_HINT);
const POISON = bit(VIRTIO_BALLOON_F_PAGE_POISON);
const REPORTING = bit(VIRTIO_BALLOON_F_REPORTING);
const ALL = STATS | OOM | HINT | POISON | REPORTING;

const irqOf = (t: Transport) => (t.kind === 'pci' ? ('intx' as const) : ('mmio' as const));
const isModern = (t: Transport): boolean => (t.kind === 'pci' ? t.mode === 'modern' : t.version === 2);
/** inflate, deflate, stats (and a fourth: hints or reporting) at the device's sizes. */
function queuesOf(t: Transport, extra?: { index: number; size: number }): { index: number; num?: number }[] {
  const q: { index: number; num?: number }[] = [0, 1, 2].map((index) => {
    const num = mmioNum(t, 128);
    return num === undefined ? { index } : { index, num };
  });
  if (extra) {
    const num = mmioNum(t, extra.size);
    q.push(num === undefined ? { index: extra.index } : { index: extra.index, num });
  }
  return q;
}

/** A buffer of PFNs as the driver writes them (little-endian; a legacy x86 guest is little-endian too). */
function pfnBytes(pfns: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * pfns.length);
  const dv = new DataView(b.buffer);
  pfns.forEach((p, i) => dv.setUint32(4 * i, p >>> 0, true));
  return b;
}

/** Fill a page with a recognisable pattern (unrecorded). */
async function fillPage(rig: Rig, pfn: number): Promise<void> {
  await rig.m.quiet(() => rig.m.memset(pfn * 4096, 4096, (pfn & 0xff) | 1));
}

/** Note the first and last bytes of each page. */
async function notePages(rig: Rig, pfns: readonly number[], label: string): Promise<void> {
  const parts: string[] = [];
  for (const p of pfns) {
    const a = await rig.m.quiet(() => rig.m.readBytes(p * 4096, 4));
    const z = await rig.m.quiet(() => rig.m.readBytes(p * 4096 + 4092, 4));
    parts.push(`${p.toString(16)}:${hex(a)}..${hex(z)}`);
  }
  await rig.m.note(`${label}: ${parts.join(' ')}`);
}

/** Wait for used entries with steps of the virtual clock big enough for one-second timers. */
async function takeUsedSlow(rig: Rig, ring: VringDriver, count: number, label: string, timeoutMs = 4000): Promise<void> {
  const got: { id: number; len: number }[] = [];
  await rig.m.quiet(async () => {
    try {
      await poll(
        rig.m,
        async () => {
          got.push(...(await ring.takeUsed()));
          return got.length >= count;
        },
        { timeoutMs, stepNs: 50_000_000, what: label },
      );
    } catch {
      /* noted below */
    }
  });
  await rig.m.note(`${label} ${got.length === 0 ? 'none' : got.map((e) => `${e.id}:${e.len}`).join(' ')}${got.length < count ? ` (waited for ${count})` : ''}`);
}

/** `guest-stats` with `last-update` reduced to whether it is set (it is the wall clock). */
async function noteStats(rig: Rig, path: string): Promise<void> {
  const m = rig.m;
  await m.sync();
  try {
    const s = (await m.qmp!.execute('qom-get', { path, property: 'guest-stats' })) as { 'last-update': number; stats: Record<string, number> };
    await m.note(`guest-stats last-update ${s['last-update'] > 0 ? 'set' : s['last-update']} stats ${JSON.stringify(s.stats)}`);
  } catch (e) {
    await m.note(`guest-stats error ${(e as Error).message}`);
  }
}

function statRecords(pairs: readonly (readonly [tag: number, value: bigint])[], trailing = 0): Uint8Array {
  const b = new Uint8Array(10 * pairs.length + trailing);
  const dv = new DataView(b.buffer);
  pairs.forEach(([t, v], i) => {
    dv.setUint16(10 * i, t, true);
    dv.setBigUint64(10 * i + 2, v, true);
  });
  return b;
}

// --- scenarios -----------------------------------------------------------------------------------

function configAndFeatures(t: Transport, extraQueues: number): OracleScenario {
  return {
    name: `[${t.label}] features, queues and configuration space`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const drv = rig.drv;
      await m.phase('offer');
      await drv.reset();
      await drv.setStatus(1);
      await drv.setStatus(3);
      await m.note(`device features ${(await drv.readDeviceFeatures()).toString(16)}`);
      for (let q = 0; q < 3 + extraQueues + 1; q++) await m.note(`queue ${q} max ${await drv.queueMax(q)}`);
      if (rig.pciDrv && !drv.legacy) await m.note(`num_queues ${await rig.pciDrv.numQueues()}`);
      await m.note(`config ${hex(await configBytes(rig, 20))}`);
      await m.note(`dwords ${await configDwords(rig, 20)}`);
      await m.note(`words ${(await drv.configRead(0, 2)).toString(16)} ${(await drv.configRead(6, 2)).toString(16)}`);
      await m.phase('negotiate everything offered');
      const rings = await bringUpDevice(rig, { features: ALL, queues: queuesOf(t), irq: irqOf(t) });
      void rings;
      await m.note(`config ${hex(await configBytes(rig, 20))}`);
      await m.phase('guest writes num_pages, cmd id and poison');
      await drv.configWrite(0, 4, 0x1234);
      await drv.configWrite(8, 4, 0x5678);
      await drv.configWrite(12, 4, 0x9abc);
      await m.idle();
      await m.note(`config ${hex(await configBytes(rig, 20))}`);
      await rig.irq!.check();
      await m.phase('reset');
      await teardown(rig);
      await m.note(`config after reset ${hex(await configBytes(rig, 20))}`);
    },
  };
}

function targetAndActual(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] QMP balloon and query-balloon, actual and BALLOON_CHANGE`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const drv = rig.drv;
      await bringUpDevice(rig, { features: STATS, queues: queuesOf(t), irq: irqOf(t) });
      // BALLOON_CHANGE goes out at most once a second (wall clock): no earlier scenario of the
      // group (each group has its own machines) raised one, so no window is open here.
      await m.phase('targets');
      await qmpNote(m, 'query-balloon');
      for (const value of [8 << 20, 1, 16 << 20, 1 << 30, 4096 * 3 + 5]) {
        const g = await configGeneration(rig);
        await qmpNote(m, 'balloon', { value });
        await m.idle();
        await m.note(`num_pages ${await drv.configRead(0, 4)} generation ${g} -> ${await configGeneration(rig)}`);
        await rig.irq!.check();
      }
      for (const value of [0, -4096]) await qmpNote(m, 'balloon', { value });
      await qmpNote(m, 'balloon', { value: 'x' });
      await qmpNote(m, 'balloon', {});
      await qmpNote(m, 'query-balloon');
      await m.phase('actual written by the guest');
      let mark = qmpEventMark(m);
      await drv.configWrite(4, 4, 2048);
      await m.idle();
      mark = await noteEvents(m, mark, 'events after actual=2048');
      await qmpNote(m, 'query-balloon');
      await drv.configWrite(4, 4, 2048);
      await m.idle();
      mark = await noteEvents(m, mark, 'events after the same value again');
      // Byte by byte, as a legacy driver may: each byte that changes the value is a new actual.
      await drv.configWrite(4, 1, 0x00);
      await drv.configWrite(5, 1, 0x10);
      await drv.configWrite(6, 1, 0x00);
      await drv.configWrite(7, 1, 0x00);
      await m.idle();
      mark = await noteEvents(m, mark, 'events within the second');
      await waitEvent(m, mark, 'BALLOON_CHANGE', 3000);
      mark = await noteEvents(m, mark, 'events after the second');
      await qmpNote(m, 'query-balloon');
      await drv.configWrite(4, 4, 0xffff_ffff);
      await waitEvent(m, mark, 'BALLOON_CHANGE', 3000);
      mark = await noteEvents(m, mark, 'events after actual=0xffffffff');
      await qmpNote(m, 'query-balloon');
      await m.phase('reset keeps the target and actual');
      await drv.reset();
      await m.note(`config ${hex(await configBytes(rig, 8))}`);
      await qmpNote(m, 'query-balloon');
      // Put it back for the next scenario (the target survives resets).
      await qmpNote(m, 'balloon', { value: 1 << 30 });
      await drv.configWrite(4, 4, 0);
      await waitEvent(m, mark, 'BALLOON_CHANGE', 3000);
      await noteEvents(m, mark, 'events after actual=0');
      await teardown(rig);
    },
  };
}

/** RAM pages well above what the scenarios allocate (allocations start at 1 MiB and stay small). */
const RAM_PAGES = [0x800, 0x801, 0x802, 0x9ff, 0xfff];

function inflateDeflate(t: Transport): OracleScenario {
  const machineIsPc = t.kind === 'pci';
  // Outside RAM: past its end, at the top of the 32-bit range, the IOAPIC, the firmware's last
  // page (ROM on pc, RAM on microvm), and on pc the option ROM area and the VGA window.
  const bad = [0x1000, 0xffff_ffff, 0xfec00, 0xfffff, ...(machineIsPc ? [0xc0, 0xa0] : [])];
  return {
    name: `[${t.label}] inflate and deflate: pages discarded, bad PFNs skipped`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { features: STATS, queues: queuesOf(t), irq: irqOf(t) });
      const ivq = rings.get(0)!;
      const dvq = rings.get(1)!;
      const pages = [...RAM_PAGES, ...(machineIsPc ? [0xa0] : [])];
      for (const p of pages) await fillPage(rig, p);
      await notePages(rig, pages, 'before');
      await m.phase('inflate good and bad PFNs, one buffer');
      await postChain(rig, ivq, [4 * 4], { write: false, fill: [pfnBytes([RAM_PAGES[0]!, bad[0]!, RAM_PAGES[1]!, bad[1]!])] });
      await rig.drv.notify(0);
      await m.idle();
      await takeUsed(rig, ivq, 1, 'used inflate');
      await rig.irq!.check();
      await notePages(rig, pages, 'after');
      await m.phase('inflate: ROM, MMIO, duplicates, split PFN, trailing bytes');
      for (const p of pages) await fillPage(rig, p);
      await postChain(rig, ivq, [4 * bad.length], { write: false, fill: [pfnBytes(bad)] });
      await postChain(rig, ivq, [8], { write: false, fill: [pfnBytes([RAM_PAGES[2]!, RAM_PAGES[2]!])] });
      const split = pfnBytes([RAM_PAGES[3]!, RAM_PAGES[4]!]);
      await postChain(rig, ivq, [3, 5], { write: false, fill: [split.subarray(0, 3), split.subarray(3)] });
      await postChain(rig, ivq, [6], { write: false, fill: [new Uint8Array([...pfnBytes([RAM_PAGES[0]!]), 1, 2])] });
      await postChain(rig, ivq, [8], { write: true });
      await rig.drv.notify(0);
      await m.idle();
      await takeUsed(rig, ivq, 5, 'used inflate');
      await rig.irq!.check();
      await notePages(rig, pages, 'after');
      await m.phase('deflate: pages stay as they are');
      for (const p of pages) await fillPage(rig, p);
      await postChain(rig, dvq, [4 * RAM_PAGES.length], { write: false, fill: [pfnBytes(RAM_PAGES)] });
      await postChain(rig, dvq, [4 * bad.length], { write: false, fill: [pfnBytes(bad)] });
      await rig.drv.notify(1);
      await m.idle();
      await takeUsed(rig, dvq, 2, 'used deflate');
      await rig.irq!.check();
      await notePages(rig, pages, 'after deflate');
      await m.phase('a queue kicked with nothing posted');
      await rig.drv.notify(0);
      await m.idle();
      await rig.irq!.check();
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function stats(t: Transport, path: string): OracleScenario {
  return {
    name: `[${t.label}] statistics: polling interval, buffers held and returned, QOM errors`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { features: STATS, queues: queuesOf(t), irq: irqOf(t) });
      const svq = rings.get(2)!;
      await m.phase('before any statistics');
      await qmpNote(m, 'qom-get', { path, property: 'guest-stats-polling-interval' });
      await noteStats(rig, path);
      await m.phase('a buffer without polling: held');
      await postChain(rig, svq, [10 * 4 + 5], { write: false, fill: [statRecords([[0, 11n], [4, 0x1234_5678_9abcn], [9, 0xffff_ffff_ffff_fffen], [0x7777, 5n]], 5)] });
      await rig.drv.notify(2);
      await m.idle();
      await takeUsed(rig, svq, 0, 'used stats');
      await noteStats(rig, path);
      await m.phase('polling every second: the buffer comes back');
      await qmpNote(m, 'qom-set', { path, property: 'guest-stats-polling-interval', value: 1 });
      await qmpNote(m, 'qom-get', { path, property: 'guest-stats-polling-interval' });
      await takeUsedSlow(rig, svq, 1, 'used stats');
      await rig.irq!.check();
      await m.phase('the next buffer');
      await postChain(rig, svq, [20], { write: false, fill: [statRecords([[1, 2n], [5, 16n << 20n]])] });
      await rig.drv.notify(2);
      await m.idle();
      await noteStats(rig, path);
      await takeUsedSlow(rig, svq, 1, 'used stats');
      await rig.irq!.check();
      await m.phase('two buffers, one kick: one taken');
      await postChain(rig, svq, [10], { write: false, fill: [statRecords([[2, 3n]])] });
      await postChain(rig, svq, [10], { write: false, fill: [statRecords([[3, 4n]])] });
      await rig.drv.notify(2);
      await m.idle();
      await noteStats(rig, path);
      await rig.drv.notify(2);
      await m.idle();
      await noteStats(rig, path);
      await takeUsed(rig, svq, 1, 'used stats (the first, given back by the second)');
      await qmpNote(m, 'qom-set', { path, property: 'guest-stats-polling-interval', value: 0 });
      await m.phase('QOM errors');
      for (const value of [-1, 4294967296, 'x', 1.5]) await qmpNote(m, 'qom-set', { path, property: 'guest-stats-polling-interval', value });
      await qmpNote(m, 'qom-set', { path, property: 'guest-stats', value: 0 });
      await qmpNote(m, 'qom-set', { path, property: 'page-poison', value: false });
      await qmpNote(m, 'qom-set', { path, property: 'nope', value: 0 });
      await qmpNote(m, 'qom-get', { path, property: 'page-poison' });
      await qmpNote(m, 'qom-get', { path, property: 'deflate-on-oom' });
      await qmpNote(m, 'qom-get', { path, property: 'nope' });
      await m.phase('reset with a buffer held');
      await rig.drv.reset();
      const r2 = await bringUpDevice(rig, { features: STATS, queues: queuesOf(t), irq: irqOf(t) });
      await postChain(rig, r2.get(2)!, [10], { write: false, fill: [statRecords([[6, 7n]])] });
      await rig.drv.notify(2);
      await m.idle();
      await noteStats(rig, path);
      await teardown(rig);
    },
  };
}

function reporting(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] free page reporting: aligned pages discarded, not with a poison value`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { features: REPORTING | POISON, queues: queuesOf(t, { index: 3, size: 32 }), irq: irqOf(t) });
      const rq = rings.get(3)!;
      const pages = [0x800, 0x801, 0x802, 0x803, 0x804];
      const report = async (label: string): Promise<void> => {
        for (const p of pages) await fillPage(rig, p);
        // One chain: a page, two pages, half a page at a page, half a page at half a page.
        const chain: Posted = { head: -1, bufs: [] };
        chain.head = await rq.add([
          { addr: 0x800 * 4096, len: 4096, write: true },
          { addr: 0x801 * 4096, len: 8192, write: true },
          { addr: 0x803 * 4096, len: 2048, write: true },
          { addr: 0x804 * 4096 + 2048, len: 2048, write: true },
        ]);
        await rig.drv.notify(3);
        await m.idle();
        await takeUsed(rig, rq, 1, `used reporting (${label})`);
        await rig.irq!.check();
        await notePages(rig, pages, `pages (${label})`);
      };
      await report('poison 0');
      await rig.drv.configWrite(12, 4, 0xaa);
      await report('poison 0xaa');
      await teardown(rig);
    },
  };
}

function hinting(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] free page hinting outside a migration: buffers returned, status STOP`,
    async run(ctx) {
      const rig = await openDevice(ctx, t);
      const m = rig.m;
      const rings = await bringUpDevice(rig, { features: HINT | POISON, queues: queuesOf(t, { index: 3, size: 1024 }), irq: irqOf(t) });
      const hq = rings.get(3)!;
      await m.note(`config ${hex(await configBytes(rig, 16))}`);
      await postChain(rig, hq, [4], { write: false, fill: [pfnBytes([0x8000_0001])] });
      await postChain(rig, hq, [4096, 4096]);
      await postChain(rig, hq, [4], { write: false, fill: [pfnBytes([1])] });
      await rig.drv.notify(3);
      // QEMU handles hints in an iothread, after the notify returns.
      await takeUsedSlow(rig, hq, 3, 'used hints', 2000);
      await rig.irq!.check();
      await m.note(`config ${hex(await configBytes(rig, 16))}`);
      await teardown(rig);
    },
  };
}

// --- groups --------------------------------------------------------------------------------------

const PCI = (label: string, slot: number, mode: 'modern' | 'legacy'): Transport => ({ kind: 'pci', label, slot, mode });
const MMIO = (label: string, version: 1 | 2): Transport => ({ kind: 'mmio', label, version, index: 23 });
const BACKEND = (_t: Transport): string => '/machine/peripheral/balloon0';

/**
 * Every transport gets the configuration and inflate/deflate; QMP targets, BALLOON_CHANGE and
 * statistics (which wait for one-second windows and timers of wall-clock time on QEMU) run where
 * `full` says: once per register layout (modern PCI, legacy PCI, virtio-mmio v1 and v2).
 */
function standard(t: Transport, full = true, withStats = full): OracleScenario[] {
  return [configAndFeatures(t, 0), ...(full ? [targetAndActual(t)] : []), inflateDeflate(t), ...(withStats ? [stats(t, BACKEND(t))] : [])];
}

const pcBalloon = (opts: string, addr: string): string[] => ['-device', `virtio-balloon-pci,id=balloon0${opts}${addr}`];
const mmioBalloon = (opts: string): string[] => ['-device', `virtio-balloon-device,id=balloon0${opts}`];

export const BALLOON_GROUPS: OracleGroup[] = [
  {
    name: 'pc, virtio-balloon-pci modern (disable-legacy=on) at 04.0',
    spec: { machine: 'pc', args: pcBalloon(',disable-legacy=on', ',addr=04.0') },
    scenarios: standard(PCI('pci modern', 4, 'modern')),
  },
  {
    name: 'pc, virtio-balloon-pci legacy (disable-modern=on) at 03.0',
    spec: { machine: 'pc', args: pcBalloon(',disable-modern=on', ',addr=03.0') },
    scenarios: standard(PCI('pci legacy', 3, 'legacy'), true, true),
  },
  {
    name: 'pc, virtio-balloon-pci transitional at 02.0',
    spec: { machine: 'pc', args: pcBalloon('', '') },
    scenarios: [...standard(PCI('pci transitional/modern', 2, 'modern'), false), ...standard(PCI('pci transitional/legacy', 2, 'legacy'), false)],
  },
  { name: 'microvm, virtio-balloon-device on virtio-mmio v1', spec: { machine: 'microvm', args: mmioBalloon('') }, scenarios: standard(MMIO('mmio v1', 1)) },
  {
    name: 'microvm, virtio-balloon-device on virtio-mmio v2',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', ...mmioBalloon('')] },
    scenarios: standard(MMIO('mmio v2', 2), true, false),
  },
  {
    name: 'pc, virtio-balloon-pci modern with deflate-on-oom and free-page-reporting',
    spec: { machine: 'pc', args: pcBalloon(',disable-legacy=on,deflate-on-oom=on,free-page-reporting=on', ',addr=04.0') },
    scenarios: [configAndFeatures(PCI('pci modern oom+reporting', 4, 'modern'), 1), reporting(PCI('pci modern oom+reporting', 4, 'modern'))],
  },
  {
    name: 'microvm, virtio-balloon-device on virtio-mmio v2 with free-page-reporting',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', ...mmioBalloon(',free-page-reporting=on')] },
    scenarios: [configAndFeatures(MMIO('mmio v2 reporting', 2), 1), reporting(MMIO('mmio v2 reporting', 2))],
  },
  {
    name: 'pc, virtio-balloon-pci modern with free-page-hint (iothread)',
    spec: { machine: 'pc', args: ['-object', 'iothread,id=io0', ...pcBalloon(',disable-legacy=on,free-page-hint=on,iothread=io0', ',addr=04.0')] },
    scenarios: [configAndFeatures(PCI('pci modern hint', 4, 'modern'), 1), hinting(PCI('pci modern hint', 4, 'modern'))],
  },
  {
    name: 'pc, virtio-balloon-pci modern with page-poison=off',
    spec: { machine: 'pc', args: pcBalloon(',disable-legacy=on,page-poison=off', ',addr=04.0') },
    scenarios: [configAndFeatures(PCI('pci modern no poison', 4, 'modern'), 0)],
  },
  {
    name: 'pc, virtio-balloon-pci legacy with qemu-4-0-config-size=on,page-poison=off',
    spec: { machine: 'pc', args: pcBalloon(',disable-modern=on,qemu-4-0-config-size=on,page-poison=off', ',addr=03.0') },
    scenarios: [configAndFeatures(PCI('pci legacy 4.0 config', 3, 'legacy'), 0)],
  },
];

void isModern;
