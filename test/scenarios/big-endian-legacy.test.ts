// A big-endian guest (guestBigEndian: true) driving virtio-rng through virtio-mmio v1: legacy
// rings are in the guest's byte order, so the driver writes them big-endian and the device's
// used-ring writes must be big-endian in RAM. With VERSION_1 (v2) the same guest uses
// little-endian rings.
import { describe, expect, it } from 'vitest';
import {
  VirtioMmioTransport,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_SEL,
} from '../../src/bus/virtio-mmio.js';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { bit, DeviceEndian, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { modernAddrs } from '../support/harness.js';

const RING = 0x10000;
const BUF = 0x80000;

function expected(n: number, skip = 0): Uint8Array {
  const all = new Uint8Array(skip + n);
  deterministicEntropy(1).fill(all);
  return all.subarray(skip);
}

function beRig(opts: { legacy?: boolean; features?: bigint; ringLe?: boolean } = {}) {
  const legacy = opts.legacy ?? true;
  const mem = GuestMemory.ofSize(1 << 20);
  const errors: string[] = [];
  const rng = new VirtIORng({ memory: mem, guestBigEndian: true, entropy: deterministicEntropy(1), onError: (m) => errors.push(m) });
  let raises = 0;
  let level = false;
  const mmio = new VirtioMmioTransport(rng, {
    legacy,
    irq: (l) => {
      if (l && !level) raises++;
      level = l;
    },
  });
  const drv = new MmioDriver(mmio, mem);
  const features = drv.init(opts.features ?? 0n);
  const eventIdx = (features & bit(VIRTIO_RING_F_EVENT_IDX)) !== 0n;
  let ring: SplitRingDriver;
  if (legacy) {
    // MmioDriver.setupQueue builds little-endian rings; a big-endian guest programs by hand.
    ring = new SplitRingDriver({ memory: mem, num: 8, addrs: legacyLayout(RING, 8, 4096), le: opts.ringLe ?? false, eventIdx });
    mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
    mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, RING / 4096);
  } else {
    ring = drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
  }
  drv.driverOk();
  return { mem, rng, mmio, drv, ring, errors, raises: () => raises };
}

describe('big-endian guest, legacy virtio-mmio v1', () => {
  it('the device is big-endian: deviceEndian BIG, isBigEndian, queue le=false', () => {
    const r = beRig();
    expect(r.rng.guestBigEndian).toBe(true);
    expect(r.rng.deviceEndian).toBe(DeviceEndian.BIG);
    expect(r.rng.isBigEndian()).toBe(true);
    expect(r.rng.requestq.le).toBe(false);
    expect(r.rng.requestq.used).toBe(0x11000);
  });

  it('requests complete and the used ring fields are big-endian in RAM', () => {
    const r = beRig();
    const h1 = r.ring.add([{ addr: BUF, len: 64, write: true }]);
    const h2 = r.ring.add([{ addr: BUF + 0x100, len: 0x123, write: true }]);
    // The avail ring, as the guest wrote it: idx 2 big-endian.
    expect(Array.from(r.mem.view(0x10080, 8)!)).toEqual([0, 0, 0, 2, 0, h1, 0, h2]);
    r.drv.notify(0);
    expect(r.errors).toEqual([]);
    const used = 0x11000;
    expect(Array.from(r.mem.view(used, 4 + 16)!)).toEqual([
      0, 0, 0, 2,
      0, 0, 0, h1, 0, 0, 0, 64,
      0, 0, 0, h2, 0, 0, 0x01, 0x23,
    ]);
    expect(r.ring.takeUsed()).toEqual([{ id: h1, len: 64 }, { id: h2, len: 0x123 }]);
    const want = expected(64 + 0x123);
    expect(r.mem.view(BUF, 64)).toEqual(want.subarray(0, 64));
    expect(r.mem.view(BUF + 0x100, 0x123)).toEqual(want.subarray(64));
    expect(r.raises()).toBe(1);
    expect(r.drv.ackInterrupt()).toBe(1);
  });

  it('258 requests: used.idx 0x0102 is stored as bytes 01 02', () => {
    const r = beRig();
    for (let i = 0; i < 258; i++) {
      r.ring.add([{ addr: BUF, len: 4, write: true }]);
      r.drv.notify(0);
      r.ring.takeUsed();
    }
    expect(Array.from(r.mem.view(0x11002, 2)!)).toEqual([0x01, 0x02]);
    expect(r.rng.requestq.usedIdx).toBe(258);
    expect(r.rng.requestq.lastAvailIdx).toBe(258);
    expect(r.errors).toEqual([]);
  });

  it('with EVENT_IDX the device reads used_event and writes avail_event big-endian', () => {
    const r = beRig({ features: bit(VIRTIO_RING_F_EVENT_IDX) });
    expect(r.rng.guestFeatures).toBe(bit(VIRTIO_RING_F_EVENT_IDX));
    const got: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      const before = r.raises();
      r.ring.add([{ addr: BUF, len: 4, write: true }]);
      r.drv.notify(0);
      got.push(r.raises() !== before);
      r.drv.ackInterrupt();
      r.ring.takeUsed();
      // Ask for an interrupt only once used.idx passes 3 (written big-endian by the driver).
      r.ring.setUsedEvent(3);
    }
    expect(Array.from(r.mem.view(0x10080 + 4 + 16, 2)!)).toEqual([0, 3]);
    // First: always (signalled_used not valid). Then used_event 3: only the move 3 -> 4.
    expect(got).toEqual([true, false, false, true]);
    // avail_event = 4 at used + 4 + 8 * 8, big-endian.
    expect(Array.from(r.mem.view(0x11000 + 4 + 64, 2)!)).toEqual([0, 4]);
  });

  it('indirect tables are read big-endian too', () => {
    const r = beRig({ features: bit(VIRTIO_RING_F_INDIRECT_DESC) });
    const h = r.ring.add(
      [
        { addr: BUF, len: 16, write: true },
        { addr: BUF + 0x40, len: 16, write: true },
      ],
      { indirectTable: 0x30000 },
    );
    // Table entry 0: addr 0x80000, len 16, flags WRITE|NEXT, next 1 (all big-endian).
    expect(Array.from(r.mem.view(0x30000, 16)!)).toEqual([0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 16, 0, 3, 0, 1]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h, len: 32 }]);
    const want = expected(32);
    expect(r.mem.view(BUF, 16)).toEqual(want.subarray(0, 16));
    expect(r.mem.view(BUF + 0x40, 16)).toEqual(want.subarray(16));
  });

  it('a little-endian ring on a big-endian legacy device is misread: avail.idx 1 reads as 256', () => {
    const r = beRig({ ringLe: true });
    r.ring.add([{ addr: BUF, len: 8, write: true }]);
    r.drv.notify(0);
    expect(r.errors).toEqual(['Guest moved used index from 0 to 256']);
    expect(r.rng.broken).toBe(true);
    // Legacy: no NEEDS_RESET bit.
    expect(r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(0);
    expect(r.mem.view(BUF, 8)).toEqual(new Uint8Array(8));
  });
});

describe('big-endian guest, modern virtio-mmio v2', () => {
  it('VERSION_1 makes the rings little-endian whatever the guest', () => {
    const r = beRig({ legacy: false });
    expect(r.rng.deviceEndian).toBe(DeviceEndian.BIG);
    expect(r.rng.isBigEndian()).toBe(false);
    expect(r.rng.requestq.le).toBe(true);
    const h = r.ring.add([{ addr: BUF, len: 0x123, write: true }]);
    r.drv.notify(0);
    const used = modernAddrs(RING, 8).used;
    expect(Array.from(r.mem.view(used, 12)!)).toEqual([0, 0, 1, 0, h, 0, 0, 0, 0x23, 0x01, 0, 0]);
    expect(r.mem.view(BUF, 0x123)).toEqual(expected(0x123));
    // After a reset the device is legacy-endian (big) again until VERSION_1 is negotiated.
    r.drv.reset();
    expect(r.rng.isBigEndian()).toBe(true);
    expect(r.rng.requestq.le).toBe(false);
  });
});

describe('migration of a big-endian guest (virtio/device_endian)', () => {
  const names = (blob: Uint8Array) => {
    const out: string[] = [];
    for (let i = 0; i + 2 < blob.length; i++) {
      if (blob[i] !== 5) continue;
      const s = String.fromCharCode(...blob.subarray(i + 2, i + 2 + blob[i + 1]!));
      if (/^virtio\/[a-z0-9_]+$/.test(s)) out.push(s);
    }
    return out;
  };
  const move = (src: ReturnType<typeof beRig>, dst: ReturnType<typeof beRig>, blob: Uint8Array) => {
    dst.mem.write(0, src.mem.view(0, src.mem.totalSize)!);
    loadVirtioDevice(dst.rng, blob);
  };

  it('legacy: the device is big-endian as the target is, so QEMU writes no device_endian; the destination takes its default and serves the posted request big-endian', () => {
    const src = beRig();
    src.ring.add([{ addr: BUF, len: 16, write: true }]);
    src.drv.notify(0);
    src.ring.takeUsed();
    src.ring.add([{ addr: BUF + 0x100, len: 0x21, write: true }]); // posted, not notified
    const blob = saveVirtioDevice(src.rng);
    expect(names(blob)).not.toContain('virtio/device_endian');
    const dst = beRig();
    move(src, dst, blob);
    expect(dst.rng.deviceEndian).toBe(DeviceEndian.BIG);
    expect(dst.rng.requestq.le).toBe(false);
    expect([dst.rng.requestq.lastAvailIdx, dst.rng.requestq.usedIdx]).toEqual([1, 1]);
    dst.drv.notify(0);
    expect(Array.from(dst.mem.view(0x11000, 4)!)).toEqual([0, 0, 0, 2]); // used.idx 2, big-endian
    expect(Array.from(dst.mem.view(0x11004 + 8, 8)!)).toEqual([0, 0, 0, 0, 0, 0, 0, 0x21]); // head 0 reused, len 0x21
  });

  it('VERSION_1 on a big-endian target: device_endian BIG is written (QEMU: not LITTLE), restored, and the rings stay little-endian', () => {
    const src = beRig({ legacy: false });
    const blob = saveVirtioDevice(src.rng);
    const at = blob.indexOf(5, 12 + 28);
    expect(names(blob)[0]).toBe('virtio/device_endian');
    expect(blob[at + 6 + 'virtio/device_endian'.length]).toBe(DeviceEndian.BIG);
    const dst = beRig({ legacy: false });
    dst.rng.deviceEndian = DeviceEndian.LITTLE; // whatever it held is replaced by the stream's
    move(src, dst, blob);
    expect(dst.rng.deviceEndian).toBe(DeviceEndian.BIG);
    expect(dst.rng.requestq.le).toBe(true);
  });

  it('a device left little-endian on a big-endian target (a bi-endian guest reset with its CPU little-endian) writes device_endian LITTLE; the destination reads its rings little-endian', () => {
    const src = beRig({ ringLe: true });
    src.rng.deviceEndian = DeviceEndian.LITTLE; // as QEMU's virtio_reset under an LE CPU
    src.rng.restoreFeatures(src.rng.guestFeatures); // the queue's byte order follows
    expect(src.rng.requestq.le).toBe(true);
    src.ring.add([{ addr: BUF, len: 8, write: true }]);
    const blob = saveVirtioDevice(src.rng);
    expect(names(blob)[0]).toBe('virtio/device_endian');
    const dst = beRig();
    move(src, dst, blob);
    expect(dst.rng.deviceEndian).toBe(DeviceEndian.LITTLE);
    expect(dst.rng.requestq.le).toBe(true);
    dst.drv.notify(0);
    expect(dst.mem.read16(0x11002, true)).toBe(1);
    expect(dst.errors).toEqual([]);
  });
});
