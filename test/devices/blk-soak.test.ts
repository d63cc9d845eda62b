// Data-integrity soak for virtio-blk: random reads, writes, flushes, discards and write-zeroes,
// completed by the backend in random order, with device resets and migrations (ours → ours, the
// request list carried) thrown in, checked against a model of the disk. Every request completes
// exactly once (or is dropped by a reset), reads return what the model holds, and at the end the
// disk is the model: zero lost or duplicated writes.
//
// Reproducible: everything random comes from one seed. A failure names it; rerun one seed with
// BLK_SOAK_SEED=<seed> (and BLK_SOAK_STEPS=<n> for a longer run).
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { BlockBackendError, type BlockBackend, type BlockResult } from '../../src/devices/blk/backend.js';
import { VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES } from '../../src/devices/blk/constants.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { bit, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.js';
import { VIRTIO_BLK_F_CONFIG_WCE, VIRTIO_BLK_F_FLUSH } from '../../src/devices/blk/constants.js';
import { modernAddrs } from '../support/harness.js';

const SECTORS = 2048; // a 1 MiB disk
const RING = 0x10000;
const NUM = 16;

/** mulberry32: a small, well-distributed, seedable generator. */
function rng(seed: number): { int(n: number): number; chance(p: number): boolean } {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { int: (n) => Math.floor(next() * n), chance: (p) => next() < p };
}

interface Op {
  kind: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';
  run(): void;
  resolve(): void;
  reject(e: unknown): void;
}

/** Operations wait until the soak completes them, in an order it picks; reads may be failed. */
class ChaosBackend implements BlockBackend {
  readonly synchronous = false;
  readonly readOnly = false;
  readonly ops: Op[] = [];
  constructor(readonly inner: MemoryBlockBackend) {}
  get size(): number {
    return this.inner.size;
  }
  private hold(kind: Op['kind'], run: () => void): Promise<void> {
    return new Promise((resolve, reject) => this.ops.push({ kind, run, resolve, reject }));
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.hold('read', () => this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): BlockResult {
    const copy = src.slice();
    return this.hold('write', () => this.inner.write(offset, copy));
  }
  flush(): BlockResult {
    return this.hold('flush', () => this.inner.flush());
  }
  discard(offset: number, length: number): BlockResult {
    return this.hold('discard', () => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number): BlockResult {
    return this.hold('writeZeroes', () => this.inner.writeZeroes(offset, length));
  }
  readSync(offset: number, dst: Uint8Array): boolean {
    return this.inner.readSync(offset, dst);
  }
  /** Complete op `i` (failing it when `fail`: only reads are failed). */
  complete(i: number, fail = false): void {
    const op = this.ops.splice(i, 1)[0]!;
    if (fail) return op.reject(new BlockBackendError('injected read error', 'EIO'));
    op.run();
    op.resolve();
  }
  completeAll(): void {
    while (this.ops.length) this.complete(0);
  }
}

interface Pending {
  head: number;
  type: number;
  sector: number;
  sectors: number;
  data: Uint8Array | undefined;
  hdr: number;
  buf: number;
  status: number;
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 3; i++) await new Promise((r) => setTimeout(r, 0));
};

async function soak(seed: number, steps: number): Promise<{ requests: number; resets: number; migrations: number; readErrors: number }> {
  const R = rng(seed);
  const log: string[] = [];
  const note = (m: string): void => {
    log.push(m);
    if (log.length > 100000) log.shift();
  };
  const ctx = (msg: string) => `seed ${seed}: ${msg} (rerun with BLK_SOAK_SEED=${seed})${process.env['BLK_SOAK_LOG'] ? `\n${log.join('\n')}` : ''}`;
  const mem = GuestMemory.ofSize(8 << 20);
  const disk = new MemoryBlockBackend(SECTORS * 512);
  for (let i = 0; i < disk.data.length; i++) disk.data[i] = (i * 31 + (i >>> 9)) & 0xff;
  const model = disk.data.slice();
  const features = (R.chance(0.5) ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n) | (R.chance(0.5) ? bit(VIRTIO_RING_F_INDIRECT_DESC) : 0n) | (R.chance(0.7) ? bit(VIRTIO_BLK_F_FLUSH) | bit(VIRTIO_BLK_F_CONFIG_WCE) : 0n);
  const legacy = R.chance(0.3);

  let backend = new ChaosBackend(disk);
  let dev = new VirtIOBlock({ memory: mem, backend, queueSize: NUM });
  let mmio = new VirtioMmioTransport(dev, { legacy });
  let drv = new MmioDriver(mmio, mem);
  let ring!: SplitRingDriver;
  const setup = (): void => {
    drv.init(features);
    ring = drv.setupQueue(0, { num: NUM, addrs: modernAddrs(RING, NUM), base: RING });
    drv.driverOk();
  };
  setup();

  // Buffers: a bump allocator over a window that wraps (requests in flight never reach 64).
  let next = 1 << 20;
  const alloc = (len: number): number => {
    if (next + len > (8 << 20) - 4096) next = 1 << 20;
    const a = next;
    next += Math.ceil((len + 1) / 512) * 512;
    return a;
  };
  const inFlight = new Map<number, Pending>();
  const history = new Map<number, string[]>();
  const stats = { requests: 0, resets: 0, migrations: 0, readErrors: 0 };
  /** Operations of requests a reset dropped may still be in the backend: no failures injected then. */
  let staleOps = false;
  /** Heads whose read was failed by the backend. */
  const failedReads = new Set<number>();

  const overlaps = (a: number, n: number, writer: boolean): boolean => {
    for (const p of inFlight.values()) {
      if (p.type === VIRTIO_BLK_T_FLUSH) continue;
      const pw = p.type !== VIRTIO_BLK_T_IN;
      if (!writer && !pw) continue;
      if (a < p.sector + p.sectors && p.sector < a + n) return true;
    }
    return false;
  };

  const issue = (): void => {
    if (ring.freeDescriptors < 3 || inFlight.size >= NUM) return;
    const roll = R.int(100);
    const type = roll < 40 ? VIRTIO_BLK_T_IN : roll < 80 ? VIRTIO_BLK_T_OUT : roll < 87 ? VIRTIO_BLK_T_FLUSH : roll < 94 ? VIRTIO_BLK_T_DISCARD : VIRTIO_BLK_T_WRITE_ZEROES;
    const sectors = 1 + R.int(16);
    const sector = R.int(SECTORS - sectors);
    if (type !== VIRTIO_BLK_T_FLUSH && overlaps(sector, sectors, type !== VIRTIO_BLK_T_IN)) return;
    const hdr = alloc(16);
    mem.write32(hdr, type);
    mem.write32(hdr + 4, 0);
    mem.write64(hdr + 8, BigInt(type === VIRTIO_BLK_T_DISCARD || type === VIRTIO_BLK_T_WRITE_ZEROES ? 0 : sector));
    const status = alloc(1);
    mem.write8(status, 0xff);
    let buf = 0;
    let data: Uint8Array | undefined;
    const bufs: { addr: number; len: number; write?: boolean }[] = [{ addr: hdr, len: 16 }];
    if (type === VIRTIO_BLK_T_IN || type === VIRTIO_BLK_T_OUT) {
      buf = alloc(sectors * 512);
      if (type === VIRTIO_BLK_T_OUT) {
        data = new Uint8Array(sectors * 512);
        for (let i = 0; i < data.length; i++) data[i] = R.int(256);
        mem.write(buf, data);
        // Split the data over one to three descriptors of whole sectors.
        const parts = Math.min(sectors, 1 + R.int(3));
        let left = sectors;
        let off = 0;
        for (let k = 0; k < parts; k++) {
          const n = k === parts - 1 ? left : 1 + R.int(left - (parts - k - 1));
          bufs.push({ addr: buf + off, len: n * 512 });
          off += n * 512;
          left -= n;
        }
      } else {
        mem.fill(buf, sectors * 512, 0xee);
        bufs.push({ addr: buf, len: sectors * 512, write: true });
      }
    } else if (type !== VIRTIO_BLK_T_FLUSH) {
      buf = alloc(16);
      mem.write64(buf, BigInt(sector));
      mem.write32(buf + 8, sectors);
      mem.write32(buf + 12, type === VIRTIO_BLK_T_WRITE_ZEROES && R.chance(0.5) ? 1 : 0);
      bufs.push({ addr: buf, len: 16 });
    }
    bufs.push({ addr: status, len: 1, write: true });
    const head = ring.add(bufs);
    if (head < 0) return;
    if (inFlight.has(head)) throw new Error(ctx(`driver reused head ${head} while in flight`));
    inFlight.set(head, { head, type, sector, sectors, data, hdr, buf, status });
    note(`issue head ${head} type ${type} sector ${sector} n ${sectors}`);
    stats.requests++;
  };

  /** Check the used entries since the last look against the model; apply completed writes. */
  const collect = (): void => {
    for (const u of ring.takeUsed()) {
      const p = inFlight.get(u.id);
      if (!p) throw new Error(ctx(`used entry for head ${u.id}, which is not in flight (a duplicate or a stale completion)`));
      inFlight.delete(u.id);
      const st = mem.read8(p.status);
      note(`used head ${u.id} type ${p.type} sector ${p.sector} status ${st}`);
      const inLen = p.type === VIRTIO_BLK_T_IN ? p.sectors * 512 + 1 : 1;
      if (u.len !== inLen) throw new Error(ctx(`head ${u.id}: used.len ${u.len}, expected ${inLen}`));
      const failed = failedReads.delete(u.id);
      if (failed) {
        if (st !== VIRTIO_BLK_S_IOERR) throw new Error(ctx(`head ${u.id}: a failed read answered ${st}`));
        continue;
      }
      if (st !== VIRTIO_BLK_S_OK) throw new Error(ctx(`head ${u.id} (type ${p.type}): status ${st}`));
      const at = p.sector * 512;
      const n = p.sectors * 512;
      if (p.type === VIRTIO_BLK_T_OUT) model.set(p.data!, at);
      else if (p.type === VIRTIO_BLK_T_DISCARD || p.type === VIRTIO_BLK_T_WRITE_ZEROES) model.fill(0, at, at + n);
      if (p.type !== VIRTIO_BLK_T_IN && p.type !== VIRTIO_BLK_T_FLUSH) for (let k = 0; k < p.sectors; k++) history.set(p.sector + k, [...(history.get(p.sector + k) ?? []), `h${u.id}t${p.type}@${log.length}`]);
      else if (p.type === VIRTIO_BLK_T_IN) {
        const got = mem.view(p.buf, n)!;
        if (Buffer.compare(Buffer.from(got), Buffer.from(model.subarray(at, at + n))) !== 0) {
          const bad: number[] = [];
          for (let k = 0; k < p.sectors; k++) if (Buffer.compare(Buffer.from(got.subarray(k * 512, k * 512 + 512)), Buffer.from(model.subarray(at + k * 512, at + k * 512 + 512))) !== 0) bad.push(p.sector + k);
          const onDisk = Buffer.compare(Buffer.from(disk.data.subarray(at, at + n)), Buffer.from(model.subarray(at, at + n))) === 0;
          throw new Error(ctx(`head ${u.id}: read of sector ${p.sector} (${p.sectors}) returned other data than was written (sectors ${bad.join(',')}; the disk ${onDisk ? 'equals' : 'differs from'} the model there; history ${bad.map((b) => history.get(b)?.join(' ')).join(' | ')})`));
        }
      }
    }
  };

  /** Complete some backend operations, in a random order; fail a read now and then. */
  const complete = async (): Promise<void> => {
    let k = 1 + R.int(4);
    while (k-- > 0 && backend.ops.length > 0) {
      const i = R.int(backend.ops.length);
      const op = backend.ops[i]!;
      if (backend.ops.length === 0) staleOps = false;
      const fail = !staleOps && op.kind === 'read' && backend.ops.filter((o) => o.kind === 'read').length === 1 && R.chance(0.05);
      if (fail) {
        // The read that fails belongs to the first read in flight whose data is not yet in;
        // find it through its chunk: the device reads one chunk per request at a time.
        const owner = [...inFlight.values()].find((p) => p.type === VIRTIO_BLK_T_IN && !failedReads.has(p.head) && mem.read8(p.status) === 0xff);
        if (!owner) continue;
        // Failing an op of an unknown request would make the model ambiguous: fail only when
        // exactly one read is in flight.
        if ([...inFlight.values()].filter((p) => p.type === VIRTIO_BLK_T_IN).length !== 1) continue;
        failedReads.add(owner.head);
        stats.readErrors++;
      }
      note(`complete op ${op.kind}${fail ? ' FAIL' : ''}`);
      backend.complete(i, fail);
    }
    await settle();
    if (backend.ops.length === 0) staleOps = false;
  };

  const reset = async (): Promise<void> => {
    stats.resets++;
    note('reset');
    if (staleOps) {
      // Requests after the last reset may still be held back (not submitted) until its stale
      // operations finish: finish them, so that every request this reset drops was submitted and
      // its writes are known to land.
      backend.completeAll();
      await settle();
      staleOps = false;
      collect();
    }
    // Everything published is popped (and so submitted) before the reset drops it.
    drv.notify(0);
    collect();
    if (dev.vq[0]!.lastAvailIdx !== ring.availIdx) throw new Error(ctx('published requests were not popped before the reset'));
    const usedBefore = ring.usedIdx();
    drv.reset();
    // Requests in flight are dropped: the writes among them still reach the disk when their
    // operations run, before anything new (the device holds new requests back meanwhile).
    const dropped = [...inFlight.values()];
    inFlight.clear();
    failedReads.clear();
    if (R.chance(0.5)) {
      backend.completeAll();
      await settle();
    }
    staleOps = backend.ops.length > 0;
    for (const p of dropped) {
      const at = p.sector * 512;
      note(`reset drops head ${p.head} type ${p.type} sector ${p.sector} n ${p.sectors}`);
      if (p.type !== VIRTIO_BLK_T_IN && p.type !== VIRTIO_BLK_T_FLUSH) for (let k = 0; k < p.sectors; k++) history.set(p.sector + k, [...(history.get(p.sector + k) ?? []), `drop-h${p.head}`]);
      if (p.type === VIRTIO_BLK_T_OUT) {
        // Only whole requests land: the backend gets every segment of a write at once.
        model.set(p.data!, at);
      } else if (p.type === VIRTIO_BLK_T_DISCARD || p.type === VIRTIO_BLK_T_WRITE_ZEROES) model.fill(0, at, at + p.sectors * 512);
    }
    if (ring.usedIdx() !== usedBefore) throw new Error(ctx('a completion after the reset wrote the used ring'));
    setup();
  };

  const migrate = async (): Promise<void> => {
    stats.migrations++;
    note('migrate');
    // Stop, let some operations finish (their completions wait), save (what finished lands in
    // RAM first), load into a fresh device over the same RAM and disk.
    dev.vmStateChange(false);
    await complete();
    const blob = saveVirtioDevice(dev);
    collect();
    const src = backend;
    backend = new ChaosBackend(disk);
    dev = new VirtIOBlock({ memory: mem, backend, queueSize: NUM });
    mmio = new VirtioMmioTransport(dev, { legacy });
    // As a machine does: the destination loads while stopped and starts afterwards (its queues
    // are kicked and the carried requests submitted again).
    dev.vmStateChange(false);
    loadVirtioDevice(dev, blob);
    drv = new MmioDriver(mmio, mem);
    drv.probe();
    drv.features = features;
    // The source's operations still running land on the shared disk before the destination goes
    // on (the carried requests are submitted again there, with the same data).
    src.completeAll();
    await settle();
    dev.vmStateChange(true);
  };

  for (let step = 0; step < steps; step++) {
    const a = R.int(100);
    if (a < 45) {
      const n = 1 + R.int(4);
      for (let i = 0; i < n; i++) issue();
      drv.notify(0);
    } else if (a < 90) {
      await complete();
    } else if (a < 93) {
      if (!process.env['BLK_SOAK_NO_RESET']) await reset();
    } else if (a < 96) {
      if (!process.env['BLK_SOAK_NO_MIGRATE']) await migrate();
    } else {
      // A quiet moment: everything completes; the disk must be the model.
      backend.completeAll();
      await settle();
      collect();
      backend.completeAll();
      await settle();
    }
    collect();
  }
  // Drain.
  for (let i = 0; i < 64 && (inFlight.size > 0 || backend.ops.length > 0); i++) {
    drv.notify(0);
    backend.completeAll();
    await settle();
    collect();
  }
  expect(inFlight.size, ctx('requests never completed (lost)')).toBe(0);
  expect(Buffer.compare(Buffer.from(disk.data), Buffer.from(model)), ctx('the disk differs from the model')).toBe(0);
  return stats;
}

describe('virtio-blk data-integrity soak', () => {
  const envSeed = process.env['BLK_SOAK_SEED'];
  const steps = Number(process.env['BLK_SOAK_STEPS'] ?? 700);
  const seeds = envSeed !== undefined ? [Number(envSeed)] : [1, 2, 3];
  for (const seed of seeds) {
    it(`seed ${seed}: ${steps} steps of reads, writes, flushes, discards, resets and migrations`, async () => {
      const s = await soak(seed, steps);
      expect(s.requests).toBeGreaterThan(steps / 4);
      if (steps >= 1000) expect(s.resets + s.migrations).toBeGreaterThan(0);
    }, Math.max(60_000, steps * 10));
  }
});
