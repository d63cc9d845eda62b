// Guest RAM whose buffer moves while the guest runs (a growable WebAssembly.Memory, as v86 has;
// or a host that copies RAM into a new buffer) and the write hook: every cached view (ring views,
// popped elements and their copy caches, virtio-blk's request views, an asynchronous backend's
// data) works on the new buffer, and every device write is reported.
import { describe, expect, it } from 'vitest';
import { GuestMemory, type RamBufferSource } from '../../src/memory/guest-memory.js';
import { deterministicEntropy } from '../../src/devices/rng.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import type { BlockBackend, BlockResult } from '../../src/devices/blk/backend.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/blk/constants.js';
import { VirtQueue, type VirtQueueOwner } from '../../src/vring/virtqueue.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import type { Tracer } from '../../src/trace/trace.js';
import { blkRig, post, settle, statusOf, SECTOR, writeHeader } from '../support/blk.js';
import { rngRig } from '../support/harness.js';

const PAGE = 64 * 1024;

/** Guest RAM of `size` bytes at `offset` inside a growable wasm memory (as v86 lays it out). */
function wasmRam(size: number, offset = 3 * PAGE): { wasm: WebAssembly.Memory; mem: GuestMemory } {
  const pages = Math.ceil((offset + size) / PAGE);
  const wasm = new WebAssembly.Memory({ initial: pages, maximum: pages + 64 });
  const mem = new GuestMemory([{ base: 0, size, source: wasm, bufferOffset: offset }]);
  return { wasm, mem };
}

describe('GuestMemory over a growable WebAssembly.Memory', () => {
  it('follows the memory when it grows: same bytes, new buffer, epoch bumped once', () => {
    const { wasm, mem } = wasmRam(1 << 20);
    expect(mem.swappable).toBe(true);
    mem.write32(0x1000, 0xdeadbeef);
    const before = mem.regions[0]!.bytes;
    expect(mem.sync()).toBe(0);
    wasm.grow(1);
    expect(before.length).toBe(0); // the old view is detached
    expect(mem.read32(0x1000)).toBe(0xdeadbeef);
    expect(mem.epoch).toBe(1);
    expect(mem.regions[0]!.bytes.buffer).toBe(wasm.buffer);
    expect(mem.regions[0]!.bytes.byteOffset).toBe(3 * PAGE);
    expect(mem.sync()).toBe(1);
    // Guest RAM is where the host's own view of it says.
    expect(new DataView(wasm.buffer).getUint32(3 * PAGE + 0x1000, true)).toBe(0xdeadbeef);
  });

  it('memories without a source never move and cost nothing to check', () => {
    const mem = GuestMemory.ofSize(4096);
    expect(mem.swappable).toBe(false);
    expect(mem.sync()).toBe(0);
    expect(mem.refresh()).toBe(false);
  });

  it('refresh() follows a host that swaps buffers without detaching the old one', () => {
    let buf = new ArrayBuffer(1 << 16);
    const source: RamBufferSource = {
      get buffer() {
        return buf;
      },
    };
    const mem = new GuestMemory([{ base: 0, size: 1 << 16, source }]);
    mem.write8(5, 42);
    const bigger = new ArrayBuffer(1 << 17);
    new Uint8Array(bigger).set(new Uint8Array(buf));
    buf = bigger;
    expect(mem.sync()).toBe(0); // not detached: sync cannot tell
    expect(mem.refresh()).toBe(true);
    expect(mem.epoch).toBe(1);
    mem.write8(6, 43);
    expect(new Uint8Array(bigger)[5]).toBe(42);
    expect(new Uint8Array(bigger)[6]).toBe(43);
  });

  it('refuses a source too small for its region (a host error)', () => {
    const wasm = new WebAssembly.Memory({ initial: 1 });
    expect(() => new GuestMemory([{ base: 0, size: 2 * PAGE, source: wasm }])).toThrow(RangeError);
    expect(() => new GuestMemory([{ base: 0, size: PAGE, source: wasm, buffer: new ArrayBuffer(PAGE) }])).toThrow(/not both/);
  });

  it('several regions over one source (a hole in RAM) all follow it', () => {
    const wasm = new WebAssembly.Memory({ initial: 40, maximum: 64 });
    const off = PAGE;
    const mem = new GuestMemory([
      { base: 0, size: 0xa0000, source: wasm, bufferOffset: off },
      { base: 0x100000, size: 0x100000, source: wasm, bufferOffset: off + 0x100000 },
    ]);
    wasm.grow(2);
    expect(mem.write32(0x100010, 7)).toBe(true);
    expect(mem.write32(0x10, 8)).toBe(true);
    expect(mem.read32(0xb0000)).toBe(-1); // the hole stays a hole
    const dv = new DataView(wasm.buffer);
    expect(dv.getUint32(off + 0x100010, true)).toBe(7);
    expect(dv.getUint32(off + 0x10, true)).toBe(8);
    expect(mem.epoch).toBe(1);
  });
});

describe('devices across growth', () => {
  it('virtio-rng: rings mapped before growth, request served after, into the new buffer', () => {
    const { wasm, mem } = wasmRam(1 << 20);
    const rr = rngRig({ mem });
    rr.drv.init(0n);
    const ring = rr.drv.setupQueue(0, { num: 8, addrs: { desc: 0x10000, avail: 0x10080, used: 0x11000 }, base: 0x10000 });
    rr.drv.driverOk();
    wasm.grow(3);
    ring.add([{ addr: 0x40000, len: 64, write: true }]);
    wasm.grow(1); // again, between the guest's post and its notify
    rr.drv.notify(0);
    const used = ring.takeUsed();
    expect(used).toEqual([{ id: 0, len: 64 }]);
    const want = new Uint8Array(64);
    deterministicEntropy(1).fill(want);
    expect(new Uint8Array(wasm.buffer, 3 * PAGE + 0x40000, 64)).toEqual(want);
  });

  it('virtio-blk: a read popped before growth and completed after lands in the new buffer', async () => {
    const { wasm, mem } = wasmRam(4 << 20);
    const disk = new MemoryBlockBackend(1 << 20);
    const pattern = new Uint8Array(4096).map((_, i) => (i * 13 + 1) & 0xff);
    disk.write(8 * SECTOR, pattern);
    const gate = new GatedBackend(disk);
    const rig = blkRig({ mem, backend: gate });
    const p = post(rig, VIRTIO_BLK_T_IN, 8, 4096);
    rig.drv.notify(0);
    expect(gate.waiting.length).toBe(1);
    wasm.grow(2);
    gate.releaseAll();
    await settle();
    expect(rig.ring.takeUsed()).toEqual([{ id: p.head, len: 4097 }]);
    expect(statusOf(rig, p)).toBe(VIRTIO_BLK_S_OK);
    expect(new Uint8Array(wasm.buffer, 3 * PAGE + p.data, 4096)).toEqual(pattern);
  });

  it('virtio-blk: an asynchronous backend that holds its data past a growth still writes the guest bytes', async () => {
    const { wasm, mem } = wasmRam(4 << 20);
    const disk = new MemoryBlockBackend(1 << 20);
    const gate = new GatedBackend(disk, { holdViews: true });
    const rig = blkRig({ mem, backend: gate });
    const p = post(rig, VIRTIO_BLK_T_OUT, 16, 8192, { fill: 0x77 });
    rig.drv.notify(0);
    wasm.grow(2); // the backend has not looked at its data yet
    gate.releaseAll();
    await settle();
    expect(rig.ring.takeUsed()).toEqual([{ id: p.head, len: 1 }]);
    const back = new Uint8Array(8192);
    disk.read(16 * SECTOR, back);
    expect(back.every((b) => b === 0x77)).toBe(true);
  });

  it('virtio-blk: cached request views follow a swap (synchronous backend, request objects reused)', () => {
    let buf = new ArrayBuffer(4 << 20);
    const source: RamBufferSource = {
      get buffer() {
        return buf;
      },
    };
    const mem = new GuestMemory([{ base: 0, size: 4 << 20, source }]);
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = blkRig({ mem, backend: disk, num: 4 });
    const heads = new Set<number>();
    // The guest reuses the same buffers for every request (as a driver with a bounce page does).
    const hdr = 0x10_0000;
    const data = 0x10_1000;
    const status = 0x10_2000;
    for (let round = 0; round < 8; round++) {
      writeHeader(rig, VIRTIO_BLK_T_OUT, round, hdr);
      mem.fill(data, 512, round + 1);
      const head = rig.ring.add([
        { addr: hdr, len: 16 },
        { addr: data, len: 512 },
        { addr: status, len: 1, write: true },
      ]);
      heads.add(head);
      rig.drv.notify(0);
      expect(rig.ring.takeUsed()).toEqual([{ id: head, len: 1 }]);
      expect(mem.read8(status)).toBe(VIRTIO_BLK_S_OK);
      const back = new Uint8Array(512);
      disk.read(round * SECTOR, back);
      expect(back.every((b) => b === round + 1)).toBe(true);
      // The host copies RAM into a new buffer after every request and says so.
      buf = buf.slice(0);
      expect(mem.refresh()).toBe(true);
    }
    expect(heads.size).toBeLessThan(8); // heads (and their request objects) were reused
    expect(mem.epoch).toBe(8);
  });
});

describe('element copies across a swap', () => {
  it('readOut after the host moved RAM reads the new buffer (the per-entry view cache is dropped)', () => {
    let buf = new ArrayBuffer(1 << 20);
    const source: RamBufferSource = {
      get buffer() {
        return buf;
      },
    };
    const memory = new GuestMemory([{ base: 0, size: 1 << 20, source }]);
    const owner: VirtQueueOwner = { memory, name: 'swap', tracer: undefined, processingStopped: false, virtioError: () => undefined };
    const drv = new SplitRingDriver({ memory, num: 1, addrs: { desc: 0x1000, avail: 0x2000, used: 0x3000 } });
    const vq = new VirtQueue(owner, 0, 1);
    vq.setRings(0x1000, 0x2000, 0x3000);
    const got = new Uint8Array(100);
    for (let round = 0; round < 3; round++) {
      memory.fill(0x8000, 100, 0x10 + round);
      drv.add([{ addr: 0x8000, len: 100 }]);
      const e = vq.pop()!;
      expect(e.readOut(0, got)).toBe(100);
      expect(got.every((b) => b === 0x10 + round)).toBe(true);
      vq.push(e, 0);
      drv.takeUsed();
      buf = buf.slice(0);
      memory.refresh();
    }
  });
});

describe('the write hook', () => {
  class Owner implements VirtQueueOwner {
    readonly name = 'hook-test';
    tracer: Tracer | undefined = undefined;
    processingStopped = false;
    constructor(readonly memory: GuestMemory) {}
    virtioError(): void {
      this.processingStopped = true;
    }
  }

  function queue(eventIdx: boolean) {
    const memory = GuestMemory.ofSize(1 << 20);
    const drv = new SplitRingDriver({ memory, num: 16, addrs: { desc: 0x1000, avail: 0x2000, used: 0x3000 }, eventIdx });
    const vq = new VirtQueue(new Owner(memory), 0, 16);
    vq.applyFeatures(eventIdx, true, false, true);
    vq.setRings(0x1000, 0x2000, 0x3000);
    const writes: [number, number][] = [];
    memory.onWrite = (a, l) => writes.push([a, l]);
    return { memory, drv, vq, writes };
  }

  it('push reports the written part of the element (contiguous buffers coalesced), the used entry and the index', () => {
    const { drv, vq, writes } = queue(false);
    drv.add([
      { addr: 0x8000, len: 16 },
      { addr: 0x9000, len: 100, write: true },
      { addr: 0x9064, len: 100, write: true }, // right after the previous one
      { addr: 0xa000, len: 50, write: true },
    ]);
    writes.length = 0;
    const e = vq.pop()!;
    expect(writes).toEqual([]); // nothing written yet (no EVENT_IDX)
    vq.push(e, 230);
    expect(writes).toEqual([
      [0x9000, 200],
      [0xa000, 30],
      [0x3000 + 4, 8],
      [0x3000 + 2, 2],
    ]);
  });

  it('pop with EVENT_IDX reports avail_event; fill/flush, detach and reset report theirs', () => {
    const { drv, vq, writes } = queue(true);
    drv.add([{ addr: 0x9000, len: 8, write: true }]);
    drv.add([{ addr: 0xa000, len: 8, write: true }]);
    drv.add([{ addr: 0xb000, len: 8, write: true }]);
    writes.length = 0;
    const a = vq.pop()!;
    expect(writes).toEqual([[0x3000 + 4 + 8 * 16, 2]]);
    writes.length = 0;
    vq.fill(a, 4);
    vq.flush(1);
    expect(writes).toEqual([[0x9000, 4], [0x3000 + 4, 8], [0x3000 + 2, 2]]);
    const b = vq.pop()!;
    writes.length = 0;
    vq.detach(b);
    expect(writes).toEqual([[0xa000, 8]]);
    vq.pop();
    writes.length = 0;
    vq.reset();
    expect(writes).toEqual([[0xb000, 8]]);
  });

  it('GuestMemory writes report themselves; reads and failed writes do not', () => {
    const memory = GuestMemory.ofSize(4096);
    const writes: [number, number][] = [];
    memory.onWrite = (a, l) => writes.push([a, l]);
    memory.write8(1, 1);
    memory.write16(2, 1);
    memory.write32(4, 1);
    memory.write64(8, 1n);
    memory.write(16, new Uint8Array(5));
    memory.fill(32, 7, 0);
    memory.read32(0);
    memory.write32(4094, 1); // outside RAM: nothing written, nothing reported
    memory.fill(40, 0, 1); // empty: nothing to report
    expect(writes).toEqual([[1, 1], [2, 2], [4, 4], [8, 8], [16, 5], [32, 7]]);
  });

  it('virtio-blk over the hook: a synchronous read reports the data and status bytes', () => {
    const disk = new MemoryBlockBackend(1 << 20);
    const rig = blkRig({ backend: disk });
    const p = post(rig, VIRTIO_BLK_T_IN, 0, 1024);
    const writes: [number, number][] = [];
    rig.mem.onWrite = (a, l) => writes.push([a, l]);
    rig.drv.notify(0);
    // Data and status may or may not be adjacent; together they are 1025 bytes.
    const bufferBytes = writes.filter(([a]) => a >= p.data).reduce((n, [, l]) => n + l, 0);
    expect(bufferBytes).toBe(1025);
    expect(writes.some(([a, l]) => a <= p.status && p.status < a + l)).toBe(true);
  });
});

/** A backend whose operations wait for `releaseAll`; with `holdViews` it reads its data only then. */
class GatedBackend implements BlockBackend {
  readonly synchronous = false;
  readonly waiting: (() => void)[] = [];
  constructor(readonly inner: MemoryBlockBackend, private readonly opts: { holdViews?: boolean } = {}) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return false;
  }
  private later(run: () => void): BlockResult {
    return new Promise<void>((resolve) => {
      this.waiting.push(() => {
        run();
        resolve();
      });
    });
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.later(() => this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): BlockResult {
    const data = this.opts.holdViews ? src : src.slice();
    return this.later(() => this.inner.write(offset, data));
  }
  flush(): BlockResult {
    return this.later(() => undefined);
  }
  discard(offset: number, length: number): BlockResult {
    return this.later(() => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): BlockResult {
    return this.later(() => this.inner.writeZeroes(offset, length, mayUnmap));
  }
  releaseAll(): void {
    const w = this.waiting.splice(0);
    for (const f of w) f();
  }
}
