// Devices on packed virtqueues (VIRTIO_F_RING_PACKED, offered with `packed: true`), end to end
// through virtio-mmio v2 and the guest-side PackedRingDriver: virtio-blk with requests completed
// out of order and carried across a migration (virtio/packed_virtqueues), virtio-rng with event
// suppression, and the refusals of a bad packed stream.
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { VIRTIO_BLK_S_OK, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/blk/constants.js';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { PackedRingDriver } from '../../src/driver/packed-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { bit, VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT, VRING_PACKED_DESC_F_AVAIL } from '../../src/vring/constants.js';
import { HeldBackend, settle } from '../support/blk.js';

const MiB = 1 << 20;
const RING = 0x10000;
const PACKED = bit(VIRTIO_F_RING_PACKED);
const FLUSH = 1n << 9n;
const INDIRECT = bit(VIRTIO_RING_F_INDIRECT_DESC);

function patterned(size: number): MemoryBlockBackend {
  const b = new MemoryBlockBackend(size);
  for (let i = 0; i < size; i++) b.data[i] = (i * 7 + (i >> 9)) & 0xff;
  return b;
}

function blkRig(backend: MemoryBlockBackend | HeldBackend, opts: { num?: number; eventIdx?: boolean } = {}) {
  const num = opts.num ?? 12;
  const mem = GuestMemory.ofSize(4 * MiB);
  const blk = new VirtIOBlock({ memory: mem, backend, packed: true });
  const mmio = new VirtioMmioTransport(blk, { legacy: false });
  const drv = new MmioDriver(mmio, mem);
  drv.init(FLUSH | PACKED | INDIRECT | (opts.eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n));
  const ring = drv.setupPackedQueue(0, { num, base: RING });
  drv.driverOk();
  let next = MiB;
  const alloc = (len: number, align = 512): number => {
    next = Math.ceil(next / align) * align;
    const a = next;
    next += Math.max(len, 1);
    return a;
  };
  return { mem, blk, mmio, drv, ring, alloc };
}
type Rig = ReturnType<typeof blkRig>;

interface Req {
  id: number;
  data: number;
  len: number;
  status: number;
}

/** A request as header + data + status, or as one indirect descriptor for them. */
function post(r: Rig, type: number, sector: number, len: number, opts: { indirect?: boolean; split?: number } = {}): Req {
  const hdr = r.alloc(16, 16);
  r.mem.write32(hdr, type);
  r.mem.write32(hdr + 4, 0);
  r.mem.write64(hdr + 8, BigInt(sector));
  const data = r.alloc(len);
  const status = r.alloc(1, 1);
  r.mem.write8(status, 0xff);
  const write = type === VIRTIO_BLK_T_IN;
  if (!write) r.mem.fill(data, len, 0xc3);
  // The data may come as several buffers (`split` of them), to make chains of different lengths.
  const parts = opts.split ?? 1;
  const bufs: { addr: number; len: number; write?: boolean }[] = [{ addr: hdr, len: 16 }];
  for (let k = 0; k < parts; k++) bufs.push({ addr: data + (k * len) / parts, len: len / parts, ...(write ? { write: true } : {}) });
  bufs.push({ addr: status, len: 1, write: true });
  const id = r.ring.add(bufs, opts.indirect ? { indirectTable: r.alloc(16 * bufs.length, 16) } : {});
  expect(id).toBeGreaterThanOrEqual(0);
  return { id, data, len, status };
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0;

describe('virtio-blk on a packed ring', () => {
  it('is offered only with packed: true, and negotiated by a modern driver', () => {
    const mem = GuestMemory.ofSize(MiB);
    const plain = new VirtIOBlock({ memory: mem, backend: new MemoryBlockBackend(MiB) });
    expect(plain.hostHasFeature(VIRTIO_F_RING_PACKED)).toBe(false);
    const r = blkRig(patterned(MiB));
    expect(r.blk.hostHasFeature(VIRTIO_F_RING_PACKED)).toBe(true);
    expect(r.blk.hasFeature(VIRTIO_F_RING_PACKED)).toBe(true);
    expect(r.blk.vq[0]!.packed).toBe(true);
  });

  it('reads and writes over many laps of a 12-entry ring, direct, chained and indirect', () => {
    const backend = patterned(MiB);
    const r = blkRig(backend);
    for (let i = 0; i < 40; i++) {
      const sector = (i * 13) % 2000;
      const kind = i % 3;
      const opts = kind === 0 ? {} : kind === 1 ? { split: 4 } : { indirect: true, split: 2 };
      const q = post(r, i % 4 === 3 ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sector, 2048, opts);
      r.drv.notify(0);
      const used = r.ring.takeUsed();
      expect(used, `request ${i}`).toEqual([{ id: q.id, len: i % 4 === 3 ? 1 : 2049 }]);
      expect(r.mem.read8(q.status)).toBe(VIRTIO_BLK_S_OK);
      expect(same(r.mem.view(q.data, 2048)!, backend.data.subarray(sector * 512, sector * 512 + 2048))).toBe(true);
    }
    const vq = r.blk.vq[0]!;
    // 40 chains of 3, 6 and 1 (indirect) slots: 14*3 + 13*6 + 13*1 = 133 slots, 11 laps and 1.
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.usedIdx, vq.usedWrapCounter, vq.inuse]).toEqual([133 % 12, Math.floor(133 / 12) % 2 === 0, 133 % 12, Math.floor(133 / 12) % 2 === 0, 0]);
    expect(r.blk.broken).toBe(false);
  });

  it('requests completed out of order come back in completion order with their ids', async () => {
    const held = new HeldBackend(patterned(MiB));
    const r = blkRig(held);
    const qs = [post(r, VIRTIO_BLK_T_IN, 1, 512), post(r, VIRTIO_BLK_T_IN, 2, 512, { split: 2 }), post(r, VIRTIO_BLK_T_IN, 3, 512, { indirect: true })];
    r.drv.notify(0);
    expect(held.held.length).toBe(3);
    expect(r.blk.vq[0]!.inuse).toBe(3 + 4 + 1);
    held.held[2]!.release();
    held.held[0]!.release();
    await settle();
    expect(r.ring.takeUsed().map((u) => u.id)).toEqual([qs[2]!.id, qs[0]!.id]);
    held.releaseAll();
    await settle();
    expect(r.ring.takeUsed().map((u) => u.id)).toEqual([qs[1]!.id]);
    expect(r.blk.vq[0]!.inuse).toBe(0);
  });
});

describe('virtio-blk on a packed ring with EVENT_IDX', () => {
  it('the device asks for kicks at its next position (device area DESC + off_wrap), and the driver honours it', () => {
    const r = blkRig(patterned(MiB), { num: 7, eventIdx: true });
    const vq = r.blk.vq[0]!;
    for (let i = 0; i < 9; i++) {
      post(r, VIRTIO_BLK_T_IN, i, 512);
      r.drv.notify(0);
      expect(r.ring.takeUsed().length).toBe(1);
    }
    // 9 chains of 3 slots: 27 = 3 laps of 7 and 6; the counter flipped 3 times.
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter]).toEqual([6, false]);
    const ev = r.ring.deviceEvent();
    expect(ev).toEqual({ flags: 2, offWrap: 6 });
    post(r, VIRTIO_BLK_T_IN, 1, 512);
    expect(r.ring.needsNotify()).toBe(true);
  });
});

describe('migration of a packed virtio-blk', () => {
  it('requests in flight are carried, with ndescs, and completed by the destination', async () => {
    const held = new HeldBackend(patterned(MiB));
    const r = blkRig(held);
    // Move the ring into its second lap first, so the wrap counters are not at their reset value.
    for (let i = 0; i < 5; i++) {
      post(r, VIRTIO_BLK_T_IN, i, 512);
      r.drv.notify(0);
      held.releaseAll();
      await settle();
      r.ring.takeUsed();
    }
    const qs = [post(r, VIRTIO_BLK_T_IN, 40, 1024, { split: 2 }), post(r, VIRTIO_BLK_T_IN, 41, 512, { indirect: true })];
    r.drv.notify(0);
    const vq = r.blk.vq[0]!;
    expect([vq.lastAvailIdx, vq.lastAvailWrapCounter, vq.usedIdx, vq.usedWrapCounter, vq.inuse]).toEqual([8, false, 3, false, 5]);
    const blob = saveVirtioDevice(r.blk);

    // The subsection as QEMU lays it out: queue 0's entry, then reset values for queue 1.
    const name = new TextEncoder().encode('virtio/packed_virtqueues');
    const at = Buffer.from(blob).indexOf(Buffer.from(name));
    expect(at).toBeGreaterThan(0);
    const body = at + name.length + 4; // version_id be32
    expect([...blob.subarray(body, body + 20)]).toEqual([0, 8, 0, 0, 3, 0, 0, 0, 0, 5, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]);

    // A fresh device on the same RAM (the source keeps its held requests to itself).
    const inner = patterned(MiB);
    const dst = new VirtIOBlock({ memory: r.mem, backend: inner, packed: true });
    const dstMmio = new VirtioMmioTransport(dst, { legacy: false });
    loadVirtioDevice(dst, blob);
    const dq = dst.vq[0]!;
    expect([dq.packed, dq.lastAvailIdx, dq.lastAvailWrapCounter, dq.usedIdx, dq.usedWrapCounter, dq.inuse]).toEqual([true, 8, false, 3, false, 5]);
    expect(dst.requestsInFlight).toBe(2);
    await settle();
    // Resubmitted together, they may finish in either order.
    const used = r.ring.takeUsed().map((u) => [u.id, u.len]);
    expect(used.sort((a, b) => a[0]! - b[0]!)).toEqual([
      [qs[0]!.id, 1025],
      [qs[1]!.id, 513],
    ]);
    expect(same(r.mem.view(qs[0]!.data, 1024)!, inner.data.subarray(40 * 512, 42 * 512))).toBe(true);
    expect(same(r.mem.view(qs[1]!.data, 512)!, inner.data.subarray(41 * 512, 42 * 512))).toBe(true);
    // The used side moved on by the chains' slots (4 and 1) and the ring goes on.
    expect([dq.usedIdx, dq.usedWrapCounter, dq.inuse]).toEqual([8, false, 0]);
    post(r, VIRTIO_BLK_T_IN, 7, 512);
    // QueueNotify on the destination's transport (the driver object talks to the source's).
    dstMmio.write(0x50, 4, 0);
    await settle();
    expect(r.ring.takeUsed().length).toBe(1);
    expect(dst.broken).toBe(false);
    held.releaseAll();
  });

  it('a packed position beyond the ring, or an ndescs of 0, is refused naming the field; the target is untouched', () => {
    const held = new HeldBackend(patterned(MiB));
    const r = blkRig(held);
    const q = post(r, VIRTIO_BLK_T_IN, 1, 512);
    r.drv.notify(0);
    const blob = saveVirtioDevice(r.blk);
    const name = new TextEncoder().encode('virtio/packed_virtqueues');
    const body = Buffer.from(blob).indexOf(Buffer.from(name)) + name.length + 4;

    const target = () => {
      const d = new VirtIOBlock({ memory: r.mem, backend: patterned(MiB), packed: true });
      new VirtioMmioTransport(d, { legacy: false });
      return d;
    };
    const cases: [string, (b: Uint8Array) => void, RegExp][] = [
      ['last_avail_idx', (b) => b.set([0, 12], body), /virtio\/packed_virtqueues\[0\]\.last_avail_idx.*not below its size 12/],
      ['used_idx', (b) => b.set([0, 200], body + 3), /virtio\/packed_virtqueues\[0\]\.used_idx/],
      ['inuse', (b) => b.set([0, 0, 0, 13], body + 6), /virtio\/packed_virtqueues\[0\]\.inuse/],
      ['wrap counter byte', (b) => (b[body + 2] = 2), /last_avail_wrap_counter/],
      [
        'ndescs',
        (b) => {
          // The request list: u8 1, be32 ndescs (3: header, data, status), then the record
          // (le32 index, out_num 1, in_num 2).
          const list = Buffer.from(b).indexOf(Buffer.from([1, 0, 0, 0, 3, q.id, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]));
          expect(list).toBeGreaterThan(0);
          b.set([0, 0, 0, 0], list + 1);
        },
        /ndescs 0 is not 1\.\.12/,
      ],
    ];
    for (const [what, damage, msg] of cases) {
      const bad = blob.slice();
      damage(bad);
      const d = target();
      const before = saveVirtioDevice(d);
      let err: unknown;
      try {
        loadVirtioDevice(d, bad);
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(MigrationError);
      expect((err as Error).message, what).toMatch(msg);
      expect(same(saveVirtioDevice(d), before), `${what}: target untouched`).toBe(true);
    }
    held.releaseAll();
  });
});

describe('virtio-rng on a packed ring', () => {
  function rngRig(eventIdx: boolean) {
    const mem = GuestMemory.ofSize(MiB);
    const rng = new VirtIORng({ memory: mem, entropy: deterministicEntropy(1), packed: true });
    let raises = 0;
    let level = false;
    const mmio = new VirtioMmioTransport(rng, {
      legacy: false,
      irq: (l) => {
        if (l && !level) raises++;
        level = l;
      },
    });
    const drv = new MmioDriver(mmio, mem);
    drv.init(PACKED | INDIRECT | (eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n));
    const ring: PackedRingDriver = drv.setupPackedQueue(0, { num: 7, base: RING });
    drv.driverOk();
    return { mem, rng, drv, ring, raises: () => raises, ack: () => drv.ackInterrupt() };
  }

  it('entropy in the order the device produced it; DISABLE in the driver area stops interrupts', () => {
    const r = rngRig(false);
    const src = deterministicEntropy(1);
    const want = new Uint8Array(64 * 10);
    src.fill(want);
    for (let i = 0; i < 10; i++) {
      if (i === 5) r.ring.setDriverEvent(1);
      if (i === 8) r.ring.setDriverEvent(0);
      const id = r.ring.add([{ addr: 0x40000, len: 64, write: true }]);
      r.drv.notify(0);
      expect(r.ring.takeUsed()).toEqual([{ id, len: 64 }]);
      expect(same(r.mem.view(0x40000, 64)!, want.subarray(64 * i, 64 * i + 64))).toBe(true);
      r.ack();
    }
    // Requests 0-4 and 8-9 interrupted; 5-7 did not.
    expect(r.raises()).toBe(7);
  });


  it('a descriptor with INDIRECT and a table outside RAM breaks the device, nothing else moves', () => {
    const r = rngRig(false);
    r.ring.writeDescAt(0, 0xfff_0000, 32, 0, VRING_DESC_F_INDIRECT | VRING_PACKED_DESC_F_AVAIL);
    r.drv.notify(0);
    expect(r.rng.broken).toBe(true);
    expect(r.rng.lastError).toBe('Cannot map indirect buffer');
    expect(r.rng.vq[0]!.lastAvailIdx).toBe(0);
  });
});
