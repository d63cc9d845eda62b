// Test support for virtio-blk: a device behind virtio-mmio with a synchronous guest-side driver,
// request builders (header, data, status), and a backend whose operations wait until the test
// releases them, in any order.
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver, UsedEntry } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VirtIOBlock, type VirtIOBlockOptions } from '../../src/devices/blk/blk.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { BlockBackendError, type BlockBackend, type BlockResult } from '../../src/devices/blk/backend.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/blk/constants.js';
import { modernAddrs } from './harness.js';

export const SECTOR = 512;

/** One held backend operation. */
export interface HeldOp {
  kind: 'read' | 'write' | 'flush' | 'discard' | 'writeZeroes';
  offset: number;
  length: number;
  /** Perform it on the inner backend and resolve (or reject with `fail`). */
  release(fail?: boolean): void;
}

/**
 * A backend that performs nothing until the test says so: every operation is queued in `held`
 * and done (on an inner memory backend) when released. Reads copy when released, so a test sees
 * exactly when data moves.
 */
export class HeldBackend implements BlockBackend {
  readonly synchronous = false;
  readonly held: HeldOp[] = [];
  /** Perform operations at once (returning nothing), as a synchronous backend would. */
  passthrough = false;
  constructor(readonly inner: MemoryBlockBackend) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  private hold(kind: HeldOp['kind'], offset: number, length: number, run: () => BlockResult): BlockResult {
    if (this.passthrough) return run();
    return new Promise<void>((resolve, reject) => {
      const op: HeldOp = {
        kind,
        offset,
        length,
        release: (fail = false) => {
          const i = this.held.indexOf(op);
          if (i >= 0) this.held.splice(i, 1);
          if (fail) return reject(new BlockBackendError('injected failure', 'EIO'));
          try {
            run();
            resolve();
          } catch (e) {
            reject(e);
          }
        },
      };
      this.held.push(op);
    });
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.hold('read', offset, dst.length, () => this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): BlockResult {
    const copy = src.slice();
    return this.hold('write', offset, src.length, () => this.inner.write(offset, copy));
  }
  flush(): BlockResult {
    return this.hold('flush', 0, 0, () => this.inner.flush());
  }
  discard(offset: number, length: number): BlockResult {
    return this.hold('discard', offset, length, () => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): BlockResult {
    return this.hold('writeZeroes', offset, length, () => this.inner.writeZeroes(offset, length, mayUnmap));
  }
  readSync(offset: number, dst: Uint8Array): boolean {
    return this.inner.readSync(offset, dst);
  }
  /** Release every held operation, in order (or reversed). */
  releaseAll(reverse = false): void {
    const ops = [...this.held];
    if (reverse) ops.reverse();
    for (const op of ops) op.release();
  }
}

/** Let promise callbacks run. */
export async function settle(turns = 4): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((r) => setTimeout(r, 0));
}

export interface BlkRig {
  mem: GuestMemory;
  blk: VirtIOBlock;
  mmio: VirtioMmioTransport;
  drv: MmioDriver;
  ring: SplitRingDriver;
  errors: string[];
  irqRaises: () => number;
  /** Next free guest address for buffers (bump allocator from 1 MiB). */
  alloc(len: number, align?: number): number;
}

export const RING_BASE = 0x10000;

/** A virtio-mmio v2 (or v1) virtio-blk, negotiated with `features` and driven to DRIVER_OK. */
export function blkRig(opts: { backend?: BlockBackend; legacy?: boolean; features?: bigint; num?: number; blk?: Partial<VirtIOBlockOptions>; ramSize?: number; mem?: GuestMemory } = {}): BlkRig {
  const mem = opts.mem ?? GuestMemory.ofSize(opts.ramSize ?? 4 << 20);
  const errors: string[] = [];
  const backend = opts.backend ?? new MemoryBlockBackend(1 << 20);
  const blk = new VirtIOBlock({ memory: mem, backend, onError: (m) => errors.push(m), ...opts.blk });
  let raises = 0;
  let level = false;
  const mmio = new VirtioMmioTransport(blk, {
    legacy: opts.legacy ?? false,
    irq: (l) => {
      if (l && !level) raises++;
      level = l;
    },
  });
  const drv = new MmioDriver(mmio, mem);
  // By default the driver takes what Linux takes for the cache: FLUSH and CONFIG_WCE.
  drv.init(opts.features ?? (1n << 9n) | (1n << 11n));
  const num = opts.num ?? 16;
  const ring = drv.setupQueue(0, { num, addrs: modernAddrs(RING_BASE, num), base: RING_BASE });
  drv.driverOk();
  let next = 1 << 20;
  const alloc = (len: number, align = 16): number => {
    next = Math.ceil(next / align) * align;
    const a = next;
    next += Math.max(len, 1);
    return a;
  };
  return { mem, blk, mmio, drv, ring, errors, irqRaises: () => raises, alloc };
}

/** A request header (type, ioprio 0, sector) in guest RAM. */
export function writeHeader(rig: BlkRig, type: number, sector: bigint | number, at?: number): number {
  const a = at ?? rig.alloc(16);
  rig.mem.write32(a, type >>> 0);
  rig.mem.write32(a + 4, 0);
  rig.mem.write64(a + 8, BigInt(sector));
  return a;
}

export interface Posted {
  head: number;
  data: number;
  dataLen: number;
  status: number;
}

/**
 * Post a request: header, data (readable for writes, writable otherwise) and a 1-byte status
 * buffer pre-set to 0xff. Returns the head and where the buffers are.
 */
export function post(rig: BlkRig, type: number, sector: number | bigint, dataLen: number, opts: { fill?: number; publish?: boolean } = {}): Posted {
  const hdr = writeHeader(rig, type, sector);
  const data = rig.alloc(Math.max(dataLen, 1), 512);
  const status = rig.alloc(1);
  rig.mem.write8(status, 0xff);
  const out = type === VIRTIO_BLK_T_OUT || (type & 1) === 1;
  if (dataLen > 0) rig.mem.fill(data, dataLen, opts.fill ?? (out ? 0x5a : 0xee));
  const bufs = [{ addr: hdr, len: 16 }];
  if (dataLen > 0) bufs.push({ addr: data, len: dataLen, ...(out ? {} : { write: true }) } as { addr: number; len: number; write?: boolean });
  bufs.push({ addr: status, len: 1, write: true } as { addr: number; len: number; write?: boolean });
  const head = rig.ring.add(bufs, { publish: opts.publish ?? true });
  return { head, data, dataLen, status };
}

/** Read request helper: post, notify, return the used entries. */
export function read(rig: BlkRig, sector: number | bigint, len: number): { p: Posted; used: UsedEntry[] } {
  const p = post(rig, VIRTIO_BLK_T_IN, sector, len);
  rig.drv.notify(0);
  return { p, used: rig.ring.takeUsed() };
}

export function write(rig: BlkRig, sector: number | bigint, len: number, fill = 0x5a): { p: Posted; used: UsedEntry[] } {
  const p = post(rig, VIRTIO_BLK_T_OUT, sector, len, { fill });
  rig.drv.notify(0);
  return { p, used: rig.ring.takeUsed() };
}

export function statusOf(rig: BlkRig, p: Posted): number {
  return rig.mem.read8(p.status);
}
