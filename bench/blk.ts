// virtio-blk on the in-memory backend: 4 KiB random reads and writes (IOPS) and 64 KiB sequential
// reads and writes (MB/s), with the same process's memcpy bandwidth beside them. The guest side
// is in-process and pre-built (256 requests in indirect tables, as Linux lays them out with
// INDIRECT_DESC), so what is timed is the device: notify, pop, header parse, range checks, the data
// copy between guest RAM and the disk, the status byte, the used entry and the notification check.
// Per batch the guest only bumps avail.idx (and, for random I/O, writes 256 new sector numbers).
//
//   npm run bench            (all sections)      BENCH_ONLY=blk npm run bench     BENCH_QUICK=1 ...
import os from 'node:os';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { VirtIOBlock } from '../src/devices/blk/blk.js';
import { MemoryBlockBackend } from '../src/devices/blk/backends/memory.js';
import { VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../src/devices/blk/constants.js';
import { bit, VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../src/vring/constants.js';
import { allocPerChain, median } from './measure.js';

const QUEUE = 256;
const RAM = 96 << 20;
const DISK = 64 << 20;

interface Case {
  title: string;
  type: number;
  size: number;
  random: boolean;
}

const CASES: Case[] = [
  { title: '4 KiB random read', type: VIRTIO_BLK_T_IN, size: 4096, random: true },
  { title: '4 KiB random write', type: VIRTIO_BLK_T_OUT, size: 4096, random: true },
  { title: '64 KiB sequential read', type: VIRTIO_BLK_T_IN, size: 65536, random: false },
  { title: '64 KiB sequential write', type: VIRTIO_BLK_T_OUT, size: 65536, random: false },
];

interface BlkRig {
  dev: VirtIOBlock;
  disk: MemoryBlockBackend;
  mem: GuestMemory;
  /** Guest RAM as bytes and 32-bit words, for the guest's per-batch stores. */
  ram: DataView;
  availIdx: number;
  availAt: number;
  hdr: number;
  data: number;
  status: number;
  c: Case;
  /** Sector of the next batch's first request (sequential) or the next random pool index. */
  cursor: number;
  randomSectors: Uint32Array;
}

function build(c: Case): BlkRig {
  const mem = GuestMemory.ofSize(RAM);
  const disk = new MemoryBlockBackend(DISK);
  for (let i = 0; i < DISK; i += 4096) disk.data[i] = i >>> 12;
  const dev = new VirtIOBlock({ memory: mem, backend: disk, queueSize: QUEUE });
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  const f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE);
  // No transport: the device's own features are its type's plus the common ones.
  if (!dev.setFeatures(f & dev.hostFeatures)) dev.setFeatures(f & dev.hostFeatures);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  const desc = 0x10000;
  const avail = desc + 16 * QUEUE;
  const used = 0x20000;
  const tables = 0x30000;
  const hdr = 0x40000;
  const status = 0x50000;
  const data = 0x100000;
  const vq = dev.vq[0]!;
  vq.setRings(desc, avail, used);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  if (!vq.isMapped || dev.broken) throw new Error(`rings not mapped: ${dev.lastError}`);
  const wd = (at: number, addr: number, len: number, flags: number, next: number) => {
    mem.write64(at, BigInt(addr));
    mem.write32(at + 8, len);
    mem.write16(at + 12, flags);
    mem.write16(at + 14, next);
  };
  const write = c.type === VIRTIO_BLK_T_OUT;
  for (let i = 0; i < QUEUE; i++) {
    const t = tables + 48 * i;
    mem.write32(hdr + 16 * i, c.type);
    mem.write32(hdr + 16 * i + 4, 0);
    mem.write64(hdr + 16 * i + 8, 0n);
    wd(t, hdr + 16 * i, 16, VRING_DESC_F_NEXT, 1);
    wd(t + 16, data + c.size * i, c.size, (write ? 0 : VRING_DESC_F_WRITE) | VRING_DESC_F_NEXT, 2);
    wd(t + 32, status + i, 1, VRING_DESC_F_WRITE, 0);
    wd(desc + 16 * i, t, 48, VRING_DESC_F_INDIRECT, 0);
    mem.write16(avail + 4 + 2 * i, i);
    if (write) mem.fill(data + c.size * i, c.size, i & 0xff);
  }
  // used_event far behind: the device's notification checks run, no interrupt is wanted.
  mem.write16(avail + 4 + 2 * QUEUE, 0x8000);
  const r = mem.findRegion(0, RAM)!;
  const randomSectors = new Uint32Array(1 << 16);
  let s = 0x9e3779b9;
  for (let i = 0; i < randomSectors.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    randomSectors[i] = (s % (DISK / 4096)) * 8;
  }
  return { dev, disk, mem, ram: r.view, availIdx: 0, availAt: avail + 2, hdr, data, status, c, cursor: 0, randomSectors };
}

/** `batches` × 256 requests: the guest's stores for the batch, then one notify. */
function runBatches(rig: BlkRig, batches: number): void {
  const ram = rig.ram;
  const dev = rig.dev;
  const per = rig.c.size / 512;
  const span = DISK / 512;
  for (let b = 0; b < batches; b++) {
    if (rig.c.random) {
      const pool = rig.randomSectors;
      let k = rig.cursor;
      for (let i = 0; i < QUEUE; i++) {
        ram.setUint32(rig.hdr + 16 * i + 8, pool[k]!, true);
        k = (k + 1) & (pool.length - 1);
      }
      rig.cursor = k;
    } else {
      let sector = rig.cursor;
      for (let i = 0; i < QUEUE; i++) {
        ram.setUint32(rig.hdr + 16 * i + 8, sector, true);
        sector += per;
        if (sector + per > span) sector = 0;
      }
      rig.cursor = sector;
    }
    rig.availIdx = (rig.availIdx + QUEUE) & 0xffff;
    ram.setUint16(rig.availAt, rig.availIdx, true);
    dev.queueNotify(0);
  }
}

/** Time `fn(batches)` for about `ms`; ns per request. */
function timeIt(fn: (batches: number) => void, ms: number): number {
  let batches = 1;
  for (;;) {
    const t0 = performance.now();
    fn(batches);
    const dt = performance.now() - t0;
    if (dt >= ms) return (dt * 1e6) / (batches * QUEUE);
    batches *= dt < ms / 8 ? 4 : 2;
  }
}

export async function runBlkBench(opts: { quick: boolean }): Promise<void> {
  const runs = opts.quick ? 3 : 9;
  const runMs = opts.quick ? 40 : 200;
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log('');
  console.log(`virtio-blk on the in-memory backend — node ${process.version}, ${cpu}, ${os.cpus().length} CPUs`);
  console.log(`queue ${QUEUE}, VERSION_1 + EVENT_IDX + INDIRECT_DESC, each request an indirect table (16 B header, data, 1 B status), ${runs} runs × ~${runMs} ms, median`);
  const load0 = os.loadavg()[0]!;

  // Verification: data really moves, statuses and used entries are right.
  for (const c of CASES) {
    const rig = build(c);
    runBatches(rig, 2);
    const vq = rig.dev.vq[0]!;
    const problems: string[] = [];
    if (vq.usedIdx !== (2 * QUEUE) % 65536) problems.push(`used.idx ${vq.usedIdx}`);
    if (rig.dev.broken) problems.push(`broken: ${rig.dev.lastError}`);
    for (let i = 0; i < QUEUE; i++) if (rig.mem.read8(rig.status + i) !== 0) problems.push(`status of ${i}`);
    if (c.type === VIRTIO_BLK_T_IN) {
      const sector = rig.mem.read32(rig.hdr + 16 * 7 + 8);
      if (rig.mem.read8(rig.data + c.size * 7) !== rig.disk.data[sector * 512]) problems.push('read data');
    } else {
      const sector = rig.mem.read32(rig.hdr + 16 * 7 + 8);
      if (rig.disk.data[sector * 512 + 1] !== 7) problems.push('written data');
    }
    if (problems.length) throw new Error(`blk bench verification failed for ${c.title}: ${problems.slice(0, 4).join(', ')}`);
  }
  console.log('verification: ok (data in both directions, status bytes, used entries)');

  // memcpy beside it: the same copies with bare Uint8Array.set — same guest buffers, same disk
  // offsets in the same order, through views made beforehand — and nothing else.
  const plainFor = (rig: BlkRig): ((batches: number) => void) => {
    const size = rig.c.size;
    const guest = rig.mem.findRegion(0, RAM)!.bytes;
    const gv: Uint8Array[] = [];
    for (let i = 0; i < QUEUE; i++) gv.push(guest.subarray(rig.data + size * i, rig.data + size * (i + 1)));
    const dv: Uint8Array[] = [];
    for (let o = 0; o < DISK; o += size) dv.push(rig.disk.data.subarray(o, o + size));
    const per = size / 512;
    const span = DISK / 512;
    const read = rig.c.type === VIRTIO_BLK_T_IN;
    let cursor = 0;
    return (batches: number): void => {
      for (let b = 0; b < batches; b++) {
        if (rig.c.random) {
          const pool = rig.randomSectors;
          for (let i = 0; i < QUEUE; i++) {
            const d = dv[pool[cursor]! / per]!;
            if (read) gv[i]!.set(d);
            else d.set(gv[i]!);
            cursor = (cursor + 1) & (pool.length - 1);
          }
        } else {
          for (let i = 0; i < QUEUE; i++) {
            const d = dv[cursor / per]!;
            if (read) gv[i]!.set(d);
            else d.set(gv[i]!);
            cursor += per;
            if (cursor + per > span) cursor = 0;
          }
        }
      }
    };
  };

  const rigs = CASES.map(build);
  const fns = rigs.map((r) => (b: number) => runBatches(r, b));
  const copies = rigs.map(plainFor);
  // Warm-up.
  for (let w = 0; w < (opts.quick ? 2 : 4); w++) {
    for (const f of fns) timeIt(f, runMs / 2);
    for (const f of copies) timeIt(f, runMs / 4);
  }
  const samples = rigs.map(() => [] as number[]);
  const copySamples = copies.map(() => [] as number[]);
  for (let r = 0; r < runs; r++) {
    fns.forEach((f, i) => samples[i]!.push(timeIt(f, runMs)));
    copies.forEach((f, i) => copySamples[i]!.push(timeIt(f, runMs / 2)));
  }
  const alloc = typeof globalThis.gc === 'function' ? fns.map((f) => allocPerChain(f, 8)) : undefined;

  const copyNs = copySamples.map(median);
  const mbps = (bytes: number, ns: number) => (bytes / ns) * 1e9 / 1e6;
  console.log('');
  const head = ['case', 'ns/request', 'IOPS', 'MB/s', 'memcpy ns', 'memcpy MB/s', 'vs memcpy', 'target', 'met', 'alloc B/req'];
  const w = [26, 11, 8, 8, 10, 12, 10, 17, 4, 12];
  const row = (cols: string[]) => cols.map((s, i) => (i === 0 ? s.padEnd(w[i]!) : s.padStart(w[i]!))).join(' ');
  console.log(row(head));
  console.log('-'.repeat(w.reduce((a, b) => a + b + 1, -1)));
  CASES.forEach((c, i) => {
    const ns = median(samples[i]!);
    const iops = 1e9 / ns;
    const bw = mbps(c.size, ns);
    const mc = mbps(c.size, copyNs[i]!);
    const ratio = bw / mc;
    const target = c.random ? '≥ 1 M IOPS' : '≥ 70% of memcpy';
    const met = c.random ? iops >= 1e6 : ratio >= 0.7;
    const a = alloc?.[i];
    console.log(row([c.title, ns.toFixed(0), `${(iops / 1e6).toFixed(2)} M`, bw.toFixed(0), copyNs[i]!.toFixed(0), mc.toFixed(0), `${(ratio * 100).toFixed(0)}%`, target, met ? 'yes' : 'NO', a === undefined ? 'n/a' : `${a.perChain.toFixed(2)}${a.gcs ? ` (${a.gcs} gc)` : ''}`]));
  });
  console.log('');
  console.log('ns/request: median over runs of (guest stores for the batch + one notify) / 256.');
  console.log('memcpy: the same copies (same guest buffers, same disk offsets, same order) as bare Uint8Array.set calls; vs memcpy = request MB/s / memcpy MB/s.');
  console.log(`1-minute load average: ${load0.toFixed(2)} at start, ${os.loadavg()[0]!.toFixed(2)} at end.`);
  console.log('runs (ns/request):');
  CASES.forEach((c, i) => console.log(`  ${c.title.padEnd(26)} ${samples[i]!.map((x) => x.toFixed(0)).join(' ')}   memcpy ${copySamples[i]!.map((x) => x.toFixed(0)).join(' ')}`));
}
