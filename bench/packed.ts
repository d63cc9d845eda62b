// Split and packed rings side by side, device time only: the same chains (one 4 KiB device-
// writable buffer; a virtio-blk read as header + 4 KiB + status, direct and through an indirect
// table) popped, copied and pushed on a split ring and on a packed ring, in one process, with
// the runs interleaved. The guest's per-lap work differs by format (split: one avail.idx store
// per lap; packed: the flags, id and length of every chain's first descriptor rewritten, since
// the device overwrote them with used descriptors), so it is kept out of the timing: only the
// device loop between two guest laps is timed.
//
//   BENCH_ONLY=packed npm run bench        BENCH_QUICK=1 for a short run
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { VirtIODevice } from '../src/virtio/device.js';
import {
  bit,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../src/virtio/constants.js';
import {
  VRING_DESC_F_INDIRECT,
  VRING_DESC_F_NEXT,
  VRING_DESC_F_WRITE,
  VRING_PACKED_DESC_F_AVAIL,
  VRING_PACKED_DESC_F_USED,
} from '../src/vring/constants.js';
import type { VirtQueue } from '../src/vring/virtqueue.js';
import { median } from './measure.js';

const PAGE = 4096;
const MiB = 1 << 20;

type Shape = 'in4k' | 'blk' | 'blkIndirect';
const SHAPES: { shape: Shape; title: string; descs: number }[] = [
  { shape: 'in4k', title: '1×4 KiB W, writeIn', descs: 1 },
  { shape: 'blk', title: 'blk 16R+4KW+1W direct', descs: 3 },
  { shape: 'blkIndirect', title: 'blk via 1 indirect', descs: 1 },
];

class BenchDevice extends VirtIODevice {
  readonly q: VirtQueue;
  constructor(memory: GuestMemory, packed: boolean, num: number) {
    super(0x7f, 0, { memory, name: 'bench', packed }, 'bench', bit(VIRTIO_F_VERSION_1));
    this.q = this.addQueue(num);
  }
}

interface Rig {
  packed: boolean;
  shape: Shape;
  mem: GuestMemory;
  vq: VirtQueue;
  dev: BenchDevice;
  /** Chains per lap (the ring holds exactly these). */
  chains: number;
  /** The guest's per-lap work, untimed. */
  lap(): void;
}

/** One rig in its own 8 MiB of RAM at `base`: ring at base, data from base + 1 MiB. */
function build(mem: GuestMemory, base: number, packed: boolean, shape: Shape): Rig {
  const descs = SHAPES.find((s) => s.shape === shape)!.descs;
  // Packed rings need not be powers of two: 255 slots hold 85 three-descriptor chains exactly.
  const num = packed && descs === 3 ? 255 : 256;
  const chains = Math.floor(num / descs);
  const dev = new BenchDevice(mem, packed, num);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  const f = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | (packed ? bit(VIRTIO_F_RING_PACKED) : 0n);
  if (!dev.setFeatures(f)) throw new Error('feature negotiation failed');
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  const desc = base;
  const avail = base + 0x4000;
  const used = base + 0x8000;
  const hdr = base + 0xc000;
  const status = base + 0xe000;
  const tables = base + 0x10000;
  const data = base + MiB;
  mem.fill(base, MiB, 0);
  dev.q.setRings(desc, avail, used);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  if (!dev.q.isMapped || dev.broken) throw new Error(`rings not mapped: ${dev.lastError}`);
  const view = mem.findRegion(base, 8 * MiB)!.view;
  const at = (a: number) => a - mem.findRegion(base, 1)!.base;
  // The descriptor contents (address, length, WRITE/NEXT) of chain c's k-th buffer.
  const buf = (c: number, k: number): [number, number, number] => {
    if (shape === 'in4k') return [data + c * PAGE, PAGE, VRING_DESC_F_WRITE];
    const w = [
      [hdr + c * 16, 16, 0],
      [data + c * PAGE, PAGE, VRING_DESC_F_WRITE],
      [status + c, 1, VRING_DESC_F_WRITE],
    ][k]!;
    return [w[0]!, w[1]!, w[2]!];
  };
  // Packed: le16 id at 12, le16 flags at 14. (Split: le16 flags at 12, le16 next at 14.)
  const put = (o: number, addr: number, len: number, id: number, flags: number) => {
    view.setUint32(at(o), addr, true);
    view.setUint32(at(o) + 4, 0, true);
    view.setUint32(at(o) + 8, len, true);
    view.setUint16(at(o) + 12, id, true);
    view.setUint16(at(o) + 14, flags, true);
  };
  const putSplit = (o: number, addr: number, len: number, flags: number, next: number) => put(o, addr, len, flags, next);
  if (shape === 'blkIndirect') {
    for (let c = 0; c < chains; c++) {
      for (let k = 0; k < 3; k++) {
        const [a, l, w] = buf(c, k);
        // Split tables chain with NEXT; packed tables are taken in order (NEXT is ignored there).
        if (packed) put(tables + c * 64 + 16 * k, a, l, 0, w);
        else putSplit(tables + c * 64 + 16 * k, a, l, w | (k < 2 ? VRING_DESC_F_NEXT : 0), k + 1);
      }
    }
  }
  let lap: () => void;
  if (!packed) {
    // Split: descriptors and avail ring written once; each lap publishes `chains` more heads.
    const heads = new Uint16Array(num);
    for (let c = 0; c < chains; c++) {
      if (shape === 'blkIndirect') putSplit(desc + 16 * c, tables + c * 64, 48, VRING_DESC_F_INDIRECT, 0);
      else for (let k = 0; k < descs; k++) {
        const [a, l, w] = buf(c, k);
        putSplit(desc + 16 * (c * descs + k), a, l, w | (k < descs - 1 ? VRING_DESC_F_NEXT : 0), k < descs - 1 ? c * descs + k + 1 : 0);
      }
      heads[c] = c * descs;
    }
    let idx = 0;
    lap = () => {
      for (let c = 0; c < chains; c++) view.setUint16(at(avail + 4 + 2 * ((idx + c) % num)), heads[c]!, true);
      idx = (idx + chains) & 0xffff;
      view.setUint16(at(avail + 2), idx, true);
    };
  } else {
    // Packed: each lap rewrites every descriptor (the device left used descriptors in the first
    // slot of each chain) with the flags of the lap's wrap counter, first descriptors last.
    let wrap = true;
    lap = () => {
      const af = wrap ? VRING_PACKED_DESC_F_AVAIL : VRING_PACKED_DESC_F_USED;
      for (let c = 0; c < chains; c++) {
        if (shape === 'blkIndirect') {
          put(desc + 16 * c, tables + c * 64, 48, c, VRING_DESC_F_INDIRECT | af);
          continue;
        }
        for (let k = descs - 1; k >= 0; k--) {
          const [a, l, w] = buf(c, k);
          put(desc + 16 * (c * descs + k), a, l, c, w | af | (k < descs - 1 ? VRING_DESC_F_NEXT : 0));
        }
      }
      wrap = !wrap;
    };
  }
  return { packed, shape, mem, vq: dev.q, dev, chains, lap };
}

const hdrBuf = new Uint8Array(16);
const dataBuf = new Uint8Array(PAGE);
const statusBuf = new Uint8Array(1);
for (let i = 0; i < PAGE; i++) dataBuf[i] = (i * 13 + 1) & 0xff;

/** `laps` guest laps; returns the device time in ms (pop, copies, push of every chain). */
function run(rig: Rig, laps: number): number {
  const vq = rig.vq;
  const blkLike = rig.shape !== 'in4k';
  let ms = 0;
  for (let l = 0; l < laps; l++) {
    rig.lap();
    const t0 = performance.now();
    for (let c = 0; c < rig.chains; c++) {
      const e = vq.pop();
      if (e === null) throw new Error(`${rig.packed ? 'packed' : 'split'} ${rig.shape}: pop returned null (${rig.dev.lastError ?? 'empty'})`);
      if (blkLike) {
        e.readOut(0, hdrBuf);
        const n = e.writeIn(0, dataBuf);
        vq.push(e, n + e.writeIn(n, statusBuf));
      } else {
        vq.push(e, e.writeIn(0, dataBuf));
      }
    }
    ms += performance.now() - t0;
  }
  return ms;
}

export async function runPackedBench(opts: { quick: boolean }): Promise<void> {
  const mem = GuestMemory.ofSize(64 * MiB);
  const rigs: Rig[] = [];
  SHAPES.forEach((s, i) => {
    rigs.push(build(mem, (2 * i + 1) * 8 * MiB, false, s.shape));
    rigs.push(build(mem, (2 * i + 2) * 8 * MiB, true, s.shape));
  });
  // Verification: one lap each, every chain completed, the last data page written.
  for (const r of rigs) {
    run(r, 1);
    if (r.dev.broken || r.vq.inuse !== 0) throw new Error(`${r.packed ? 'packed' : 'split'} ${r.shape}: broken or chains left (${r.dev.lastError})`);
  }
  const runs = opts.quick ? 5 : 11;
  const laps = opts.quick ? 200 : 1000;
  for (const r of rigs) run(r, laps); // warm-up
  const samples = rigs.map(() => [] as number[]);
  for (let k = 0; k < runs; k++) {
    // Interleaved, and in alternating order, so a slow moment of the machine hits both formats.
    const order = k % 2 === 0 ? rigs.map((_, i) => i) : rigs.map((_, i) => rigs.length - 1 - i);
    for (const i of order) samples[i]!.push((run(rigs[i]!, laps) * 1e6) / (laps * rigs[i]!.chains));
  }
  console.log('');
  console.log(`Split vs packed rings, device time per chain (pop + copies + push), median of ${runs} runs × ${laps} laps; ${os.cpus().length} CPUs, load ${os.loadavg()[0]!.toFixed(2)}:`);
  SHAPES.forEach((s, i) => {
    const sp = median(samples[2 * i]!);
    const pk = median(samples[2 * i + 1]!);
    console.log(`  ${s.title.padEnd(24)} split ${sp.toFixed(1).padStart(6)} ns   packed ${pk.toFixed(1).padStart(6)} ns   packed/split ${(pk / sp).toFixed(2)}`);
  });
}
