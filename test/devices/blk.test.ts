// virtio-blk (QEMU's hw/block/virtio-blk.c) at the device level: identity, features, the
// configuration bytes, every request type, the write cache, discard policy, asynchronous backends
// completing in any order, several queues, the request list a migration carries, and the
// backends (memory, null-co, read-only, Node file, Blob, OPFS handles).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { NullBlockBackend } from '../../src/devices/blk/backends/null.js';
import { BlobBlockBackend, OpfsFileBlockBackend, OpfsSyncBlockBackend, type SyncAccessHandleLike } from '../../src/devices/blk/backends/browser.js';
import { NodeFileBlockBackend, openBlockFiles } from '../../src/devices/blk/backends/node-file.js';
import { BlockBackendError, readOnlyBackend } from '../../src/devices/blk/backend.js';
import { hdGeometryGuess } from '../../src/devices/blk/geometry.js';
import {
  VIRTIO_BLK_F_CONFIG_WCE,
  VIRTIO_BLK_F_DISCARD,
  VIRTIO_BLK_F_FLUSH,
  VIRTIO_BLK_F_MQ,
  VIRTIO_BLK_F_RO,
  VIRTIO_BLK_F_SCSI,
  VIRTIO_BLK_F_WRITE_ZEROES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
} from '../../src/devices/blk/constants.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { bit, hasBit, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK } from '../../src/virtio/constants.js';
import { modernAddrs } from '../support/harness.js';
import { blkRig, HeldBackend, post, read, RING_BASE, settle, statusOf, write, type BlkRig } from '../support/blk.js';

const MiB = 1024 * 1024;

function patterned(size: number): MemoryBlockBackend {
  const b = new MemoryBlockBackend(size);
  for (let i = 0; i < size; i++) b.data[i] = (i * 13 + (i >>> 9) * 7) & 0xff;
  return b;
}

describe('virtio-blk: identity, features, configuration (QEMU 7.2 values)', () => {
  it('device id 2, vmsd virtio-blk v2, one queue of 256, config of 57 bytes by default', () => {
    const d = new VirtIOBlock({ memory: GuestMemory.ofSize(4096), backend: new MemoryBlockBackend(MiB) });
    expect(d.deviceId).toBe(VIRTIO_ID_BLOCK);
    expect([d.vmsdName, d.vmsdVersion]).toEqual(['virtio-blk', 2]);
    expect(d.vq.map((q) => q.numDefault)).toEqual([256]);
    expect(d.configLen).toBe(57);
    const mem = GuestMemory.ofSize(4096);
    const backend = new MemoryBlockBackend(MiB);
    expect(new VirtIOBlock({ memory: mem, backend, writeZeroes: false }).configLen).toBe(48);
    expect(new VirtIOBlock({ memory: mem, backend, discard: false }).configLen).toBe(57);
    expect(new VirtIOBlock({ memory: mem, backend, discard: false, writeZeroes: false }).configLen).toBe(36);
  });

  it('features: modern 0x10130006e54 as QEMU 7.2 offers them; legacy adds SCSI and drops ANY_LAYOUT', () => {
    const v2 = blkRig();
    expect(v2.drv.deviceFeatures).toBe(0x10130006e54n);
    const v1 = blkRig({ legacy: true });
    const f = v1.blk.hostFeatures;
    expect(hasBit(f, VIRTIO_BLK_F_SCSI)).toBe(true);
    expect(hasBit(f, VIRTIO_F_ANY_LAYOUT)).toBe(false);
    expect(hasBit(f, VIRTIO_F_VERSION_1)).toBe(false);
  });

  it('features follow the properties: RO for a read-only disk, MQ for two queues, FLUSH by the write cache', () => {
    const memory = GuestMemory.ofSize(1 << 20);
    const feats = (opts: Partial<ConstructorParameters<typeof VirtIOBlock>[0]>): bigint => {
      const d = new VirtIOBlock({ memory, backend: new MemoryBlockBackend(MiB), ...opts });
      new VirtioMmioTransport(d, { legacy: false });
      return d.hostFeatures;
    };
    expect(hasBit(feats({ backend: readOnlyBackend(new MemoryBlockBackend(MiB)) }), VIRTIO_BLK_F_RO)).toBe(true);
    expect(hasBit(feats({}), VIRTIO_BLK_F_RO)).toBe(false);
    expect(hasBit(feats({ numQueues: 2 }), VIRTIO_BLK_F_MQ)).toBe(true);
    expect(hasBit(feats({}), VIRTIO_BLK_F_MQ)).toBe(false);
    // FLUSH: write cache on, or CONFIG_WCE offered with x-enable-wce-if-config-wce.
    expect(hasBit(feats({ writeCache: false }), VIRTIO_BLK_F_FLUSH)).toBe(true);
    expect(hasBit(feats({ writeCache: false, configWce: false }), VIRTIO_BLK_F_FLUSH)).toBe(false);
    expect(hasBit(feats({ writeCache: false, enableWceIfConfigWce: false }), VIRTIO_BLK_F_FLUSH)).toBe(false);
    expect(hasBit(feats({ configWce: false }), VIRTIO_BLK_F_CONFIG_WCE)).toBe(false);
    expect(hasBit(feats({ discard: false }), VIRTIO_BLK_F_DISCARD)).toBe(false);
    expect(hasBit(feats({ writeZeroes: false }), VIRTIO_BLK_F_WRITE_ZEROES)).toBe(false);
    // scsi=on cannot be modern (QEMU's message).
    expect(() => feats({ scsi: true })).toThrow('Please set scsi=off for virtio-blk devices in order to use virtio 1.0');
  });

  it('configuration bytes of a 1 MiB disk: capacity, seg_max, geometry, block size, topology, wce, queues, discard, write zeroes', () => {
    const r = blkRig();
    const c = (o: number, s: 1 | 2 | 4) => r.drv.configRead(o, s);
    expect([c(0, 4), c(4, 4)]).toEqual([2048, 0]);
    expect(c(12, 4)).toBe(254); // queue-size 256 - 2
    expect([c(16, 2), c(18, 1), c(19, 1)]).toEqual([2, 16, 63]); // 2048 / (16×63) → at least 2 cylinders
    expect(c(20, 4)).toBe(512);
    expect([c(24, 1), c(25, 1), c(26, 2), c(28, 4)]).toEqual([0, 0, 0, 0]);
    expect(c(32, 1)).toBe(1);
    expect(c(34, 2)).toBe(1);
    expect([c(36, 4), c(40, 4), c(44, 4)]).toEqual([4194303, 1, 1]);
    expect([c(48, 4), c(52, 4), c(56, 1)]).toEqual([4194303, 1, 1]);
    expect(c(57, 1)).toBe(0xff); // beyond the config: all ones
  });

  it('topology and block sizes: 4 KiB logical/physical, min/opt I/O in blocks, discard granularity in sectors, masked sectors', () => {
    const r = blkRig({ blk: { logicalBlockSize: 4096, physicalBlockSize: 4096, minIoSize: 8192, optIoSize: 65536, discardGranularity: 16384 } });
    const c = (o: number, s: 1 | 2 | 4) => r.drv.configRead(o, s);
    expect(c(20, 4)).toBe(4096);
    expect([c(24, 1), c(26, 2), c(28, 4)]).toEqual([0, 2, 16]);
    expect(c(44, 4)).toBe(32);
    // 1 MiB / 16 heads / 63 sectors is not a whole number of 4 KiB blocks: sectors & ~7.
    expect(c(19, 1)).toBe(56);
    const p = blkRig({ blk: { physicalBlockSize: 4096 } });
    expect(p.drv.configRead(24, 1)).toBe(3);
    const q = blkRig({ blk: { queueSize: 16, segMaxAdjust: false, reportDiscardGranularity: false, discardGranularity: 8192 } });
    expect([q.drv.configRead(12, 4), q.drv.configRead(44, 4)]).toEqual([126, 1]);
  });

  it('refuses the property values QEMU refuses, with its messages', () => {
    const memory = GuestMemory.ofSize(4096);
    const backend = new MemoryBlockBackend(MiB);
    const make = (o: object) => () => new VirtIOBlock({ memory, backend, ...o });
    expect(make({ queueSize: 2 })).toThrow('invalid queue-size property (2), must be > 2');
    expect(make({ queueSize: 100 })).toThrow('invalid queue-size property (100), must be a power of 2 (max 1024)');
    expect(make({ numQueues: 0 })).toThrow('num-queues property must be larger than 0');
    expect(make({ logicalBlockSize: 4096 })).toThrow('logical_block_size > physical_block_size not supported');
    expect(make({ minIoSize: 100 })).toThrow('min_io_size must be a multiple of logical_block_size');
    expect(make({ maxDiscardSectors: 0 })).toThrow('invalid max-discard-sectors property (0), must be between 1 and 4194303');
    expect(make({ cyls: 0, heads: 1, secs: 1 })).toThrow('cyls must be between 1 and 65535');
  });

  it('geometry: from an MS-DOS partition table, else 16 heads × 63 sectors', () => {
    const mbr = new Uint8Array(512);
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr[0x1be + 5] = 7; // end head 7 → 8 heads
    mbr[0x1be + 6] = 32; // 32 sectors
    new DataView(mbr.buffer).setUint32(0x1be + 12, 1000, true);
    expect(hdGeometryGuess(mbr, 8192)).toEqual({ cyls: 32, heads: 8, secs: 32 });
    mbr[0x1be + 5] = 63; // 64 heads: a translated BIOS geometry, so the standard one
    expect(hdGeometryGuess(mbr, 8192)).toEqual({ cyls: 8, heads: 16, secs: 63 });
    expect(hdGeometryGuess(undefined, 100)).toEqual({ cyls: 2, heads: 16, secs: 63 });
    expect(hdGeometryGuess(undefined, 1 << 30)).toEqual({ cyls: 16383, heads: 16, secs: 63 });
  });
});

describe('virtio-blk: requests', () => {
  it('write then read back, across segments; used.len is every writable byte', () => {
    const r = blkRig({ backend: patterned(MiB) });
    const w = write(r, 8, 4096, 0x77);
    expect(w.used).toEqual([{ id: w.p.head, len: 1 }]);
    expect(statusOf(r, w.p)).toBe(VIRTIO_BLK_S_OK);
    const got = read(r, 8, 4096);
    expect(got.used[0]!.len).toBe(4097);
    expect([...r.mem.view(got.p.data, 4096)!].every((b) => b === 0x77)).toBe(true);
    // Data untouched around the written range.
    const before = read(r, 7, 512);
    const disk = (r.blk.backend as MemoryBlockBackend).data;
    expect(Buffer.compare(Buffer.from(r.mem.view(before.p.data, 512)!), Buffer.from(disk.subarray(7 * 512, 8 * 512)))).toBe(0);
  });

  it('IOERR for out-of-range or misaligned requests, UNSUPP for unknown types; used.len is in_len', () => {
    const r = blkRig();
    const cases: [number, bigint, number, number][] = [
      [VIRTIO_BLK_T_IN, 2048n, 512, VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_IN, 2047n, 1024, VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_IN, 2048n, 0, VIRTIO_BLK_S_OK],
      [VIRTIO_BLK_T_IN, 0n, 100, VIRTIO_BLK_S_IOERR],
      [VIRTIO_BLK_T_OUT, (1n << 64n) - 1n, 512, VIRTIO_BLK_S_IOERR],
      [99, 0n, 512, VIRTIO_BLK_S_UNSUPP],
      [VIRTIO_BLK_T_DISCARD - 1, 0n, 16, VIRTIO_BLK_S_UNSUPP],
    ];
    for (const [type, sector, len, want] of cases) {
      const p = post(r, type, sector, len);
      r.drv.notify(0);
      const u = r.ring.takeUsed();
      expect(u).toEqual([{ id: p.head, len: (type & 1) === 1 ? 1 : len + 1 }]);
      expect(statusOf(r, p), `type ${type} sector ${sector} len ${len}`).toBe(want);
    }
    expect(r.errors).toEqual([]);
  });

  it('GET_ID: the serial, NUL-terminated only when shorter than 20 bytes, never past the buffer', () => {
    const id = (serial: string | undefined, len: number) => {
      const r = blkRig(serial === undefined ? {} : { blk: { serial } });
      const p = post(r, VIRTIO_BLK_T_GET_ID, 0, len);
      r.drv.notify(0);
      r.ring.takeUsed();
      expect(statusOf(r, p)).toBe(VIRTIO_BLK_S_OK);
      return [...r.mem.view(p.data, len)!];
    };
    expect(id('abc', 20).slice(0, 5)).toEqual([0x61, 0x62, 0x63, 0, 0xee]);
    expect(id('abc', 2)).toEqual([0x61, 0x62]);
    expect(id(undefined, 4)).toEqual([0, 0xee, 0xee, 0xee]);
    const long = id('0123456789abcdefghijKLMN', 24);
    expect(String.fromCharCode(...long.slice(0, 20))).toBe('0123456789abcdefghij');
    expect(long.slice(20)).toEqual([0xee, 0xee, 0xee, 0xee]);
  });

  it('flush reaches the backend unless flushes are off (cache=unsafe)', () => {
    const backend = new MemoryBlockBackend(MiB);
    const r = blkRig({ backend });
    const p = post(r, VIRTIO_BLK_T_FLUSH, 0, 0);
    r.drv.notify(0);
    r.ring.takeUsed();
    expect([statusOf(r, p), backend.flushes]).toEqual([VIRTIO_BLK_S_OK, 1]);
    const b2 = new MemoryBlockBackend(MiB);
    const r2 = blkRig({ backend: b2, blk: { noFlush: true } });
    post(r2, VIRTIO_BLK_T_FLUSH, 0, 0);
    r2.drv.notify(0);
    expect(b2.flushes).toBe(0);
  });

  it('write cache: off means a flush after every write; the driver switches it with the wce byte; reset restores it', () => {
    const backend = new MemoryBlockBackend(MiB);
    const r = blkRig({ backend, blk: { writeCache: false } });
    expect(r.drv.configRead(32, 1)).toBe(0);
    write(r, 1, 512);
    expect(backend.flushes).toBe(1);
    r.mmio.write(0x100 + 32, 1, 1);
    expect(r.drv.configRead(32, 1)).toBe(1);
    write(r, 1, 512);
    expect(backend.flushes).toBe(1);
    r.drv.reset();
    expect(r.blk.writeCacheEnabled).toBe(false);
  });

  it('a driver without CONFIG_WCE gets writeback exactly when it took FLUSH (virtio_blk_set_status)', () => {
    const flushOnly = blkRig({ features: bit(VIRTIO_BLK_F_FLUSH), blk: { writeCache: false } });
    expect(flushOnly.blk.writeCacheEnabled).toBe(true);
    const none = blkRig({ features: 0n });
    expect(none.blk.writeCacheEnabled).toBe(false);
    const cfg = blkRig({ features: bit(VIRTIO_BLK_F_CONFIG_WCE), blk: { writeCache: false } });
    expect(cfg.blk.writeCacheEnabled).toBe(false);
  });

  it('discard reaches the backend only with unmap (QEMU discard=unmap); write zeroes always zeroes', () => {
    const seg = (r: BlkRig, type: number, sector: number, n: number, flags = 0) => {
      const p = post(r, type, 0, 16);
      r.mem.write64(p.data, BigInt(sector));
      r.mem.write32(p.data + 8, n);
      r.mem.write32(p.data + 12, flags);
      r.drv.notify(0);
      r.ring.takeUsed();
      return statusOf(r, p);
    };
    for (const unmap of [false, true]) {
      const backend = patterned(MiB);
      const r = blkRig({ backend, blk: { unmap } });
      expect(seg(r, VIRTIO_BLK_T_DISCARD, 4, 2)).toBe(VIRTIO_BLK_S_OK);
      expect(backend.data[4 * 512 + 1] === 0).toBe(unmap);
      expect(seg(r, VIRTIO_BLK_T_WRITE_ZEROES, 10, 1, 1)).toBe(VIRTIO_BLK_S_OK);
      expect(backend.data.subarray(10 * 512, 11 * 512).every((b) => b === 0)).toBe(true);
      expect(backend.data[11 * 512]).not.toBe(0);
    }
  });

  it('a backend failure answers IOERR (QEMU rerror/werror=report)', async () => {
    const held = new HeldBackend(new MemoryBlockBackend(MiB));
    const r = blkRig({ backend: held });
    const p = post(r, VIRTIO_BLK_T_IN, 0, 512);
    r.drv.notify(0);
    held.held[0]!.release(true);
    await settle();
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 513 }]);
    expect(statusOf(r, p)).toBe(VIRTIO_BLK_S_IOERR);
  });
});

describe('virtio-blk: asynchronous backends', () => {
  it('many requests in flight complete in the order the backend finishes them, each with its own data', async () => {
    const inner = patterned(MiB);
    const held = new HeldBackend(inner);
    const r = blkRig({ backend: held });
    const ps = [0, 1, 2, 3].map((i) => post(r, VIRTIO_BLK_T_IN, i * 8, 4096));
    r.drv.notify(0);
    expect(held.held.map((o) => o.offset)).toEqual([0, 4096, 8192, 12288]);
    expect(r.blk.requestsInFlight).toBe(4);
    held.releaseAll(true);
    await settle();
    const used = r.ring.takeUsed();
    expect(used.map((u) => u.id)).toEqual(ps.map((p) => p.head).reverse());
    for (const [i, p] of ps.entries()) {
      expect(statusOf(r, p)).toBe(VIRTIO_BLK_S_OK);
      expect(Buffer.compare(Buffer.from(r.mem.view(p.data, 4096)!), Buffer.from(inner.data.subarray(i * 4096, (i + 1) * 4096)))).toBe(0);
    }
    expect(r.blk.requestsInFlight).toBe(0);
  });

  it('a large read goes through the bounce buffer in 128 KiB chunks; data lands only when each chunk is back', async () => {
    const inner = patterned(MiB);
    const held = new HeldBackend(inner);
    const r = blkRig({ backend: held, ramSize: 8 << 20 });
    const p = post(r, VIRTIO_BLK_T_IN, 0, 300 * 1024);
    r.drv.notify(0);
    const sizes: number[] = [];
    for (let k = 0; k < 3; k++) {
      expect(held.held).toHaveLength(1);
      sizes.push(held.held[0]!.length);
      expect(r.mem.read8(p.data + k * 131072)).toBe(0xee);
      held.releaseAll();
      await settle();
    }
    expect(sizes).toEqual([131072, 131072, 45056]);
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 300 * 1024 + 1 }]);
    expect(Buffer.compare(Buffer.from(r.mem.view(p.data, 300 * 1024)!), Buffer.from(inner.data.subarray(0, 300 * 1024)))).toBe(0);
  });

  it('writes are acknowledged only after the backend finished them (and the flush, with the cache off)', async () => {
    const inner = new MemoryBlockBackend(MiB);
    const held = new HeldBackend(inner);
    const r = blkRig({ backend: held, blk: { writeCache: false } });
    const p = post(r, VIRTIO_BLK_T_OUT, 2, 1024, { fill: 0x42 });
    r.drv.notify(0);
    expect(held.held.map((o) => o.kind)).toEqual(['write']);
    expect(r.ring.usedIdx()).toBe(0);
    held.releaseAll();
    await settle();
    expect(held.held.map((o) => o.kind)).toEqual(['flush']);
    expect(r.ring.usedIdx()).toBe(0);
    held.releaseAll();
    await settle();
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 1 }]);
    expect(inner.data[1024]).toBe(0x42);
    expect(inner.flushes).toBe(1);
  });

  it('null-co with a latency keeps requests in flight for that long', async () => {
    const r = blkRig({ backend: new NullBlockBackend({ size: MiB, readZeroes: true, latencyNs: 20_000_000 }) });
    const p = post(r, VIRTIO_BLK_T_IN, 0, 512);
    r.drv.notify(0);
    expect(r.ring.usedIdx()).toBe(0);
    await new Promise((res) => setTimeout(res, 60));
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 513 }]);
    expect(r.mem.read8(p.data)).toBe(0);
  });
});

describe('virtio-blk: several queues', () => {
  it('num-queues 2: MQ, num_queues 2 in the config, requests on the second queue', () => {
    const mem = GuestMemory.ofSize(4 << 20);
    const backend = patterned(MiB);
    const blk = new VirtIOBlock({ memory: mem, backend, numQueues: 2 });
    const mmio = new VirtioMmioTransport(blk, { legacy: false });
    const drv = new MmioDriver(mmio, mem);
    drv.init(bit(VIRTIO_BLK_F_MQ));
    expect(drv.configRead(34, 2)).toBe(2);
    drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING_BASE, 8) });
    const q1 = drv.setupQueue(1, { num: 8, addrs: modernAddrs(RING_BASE + 0x4000, 8) });
    drv.driverOk();
    const rig = { mem, blk, mmio, drv, ring: q1, errors: [], irqRaises: () => 0, alloc: (() => { let n = 1 << 20; return (len: number, a = 16) => { n = Math.ceil(n / a) * a; const x = n; n += Math.max(len, 1); return x; }; })() } as BlkRig;
    const p = post(rig, VIRTIO_BLK_T_IN, 3, 512);
    drv.notify(1);
    expect(q1.takeUsed()).toEqual([{ id: p.head, len: 513 }]);
    expect(Buffer.compare(Buffer.from(mem.view(p.data, 512)!), Buffer.from(backend.data.subarray(1536, 2048)))).toBe(0);
  });
});

describe('virtio-blk: the request list a migration carries (virtio_blk_save_device / load_device)', () => {
  /** The device state after virtio_save's queue part: here, just the request list. */
  function deviceState(blk: VirtIOBlock): Uint8Array {
    const full = saveVirtioDevice(blk);
    return full;
  }

  it('with nothing in flight the list is one 0 byte; in-flight requests are carried and resubmitted on load', async () => {
    const held = new HeldBackend(patterned(MiB));
    const r = blkRig({ backend: held });
    const idle = deviceState(r.blk);
    const p = post(r, VIRTIO_BLK_T_IN, 16, 1024);
    r.drv.notify(0);
    const busy = deviceState(r.blk);
    // u8 1 + VirtQueueElementOld (49168 bytes), then the closing 0.
    expect(busy.length - idle.length).toBe(1 + 49168);
    // A fresh device on the same guest RAM loads it and submits the request again.
    const inner2 = patterned(MiB);
    const b2 = new VirtIOBlock({ memory: r.mem, backend: inner2 });
    new VirtioMmioTransport(b2, { legacy: false });
    loadVirtioDevice(b2, busy);
    expect(b2.requestsInFlight).toBe(1);
    await settle();
    expect(b2.requestsInFlight).toBe(0);
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 1025 }]);
    expect(statusOf(r, p)).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.compare(Buffer.from(r.mem.view(p.data, 1024)!), Buffer.from(inner2.data.subarray(16 * 512, 18 * 512)))).toBe(0);
    // The source's late completion is still its own business.
    held.releaseAll();
  });

  it('a completion that arrived while the VM was stopped is written into RAM before the state is taken (drain)', async () => {
    const held = new HeldBackend(patterned(MiB));
    const r = blkRig({ backend: held });
    const p = post(r, VIRTIO_BLK_T_OUT, 16, 512);
    r.drv.notify(0);
    r.blk.vmStateChange(false);
    held.releaseAll();
    await settle();
    expect(r.ring.usedIdx()).toBe(0);
    const s = saveVirtioDevice(r.blk);
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 1 }]);
    expect(r.blk.requestsInFlight).toBe(0);
    const idle = blkRig();
    expect(s.length).toBe(saveVirtioDevice(idle.blk).length);
  });

  it('two queues: each request carries its queue index; a bad index or a head twice refuses the load', () => {
    const mem = GuestMemory.ofSize(4 << 20);
    const held = new HeldBackend(patterned(MiB));
    const blk = new VirtIOBlock({ memory: mem, backend: held, numQueues: 2 });
    const mmio = new VirtioMmioTransport(blk, { legacy: false });
    const drv = new MmioDriver(mmio, mem);
    drv.init(bit(VIRTIO_BLK_F_MQ));
    drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING_BASE, 8) });
    const q1 = drv.setupQueue(1, { num: 8, addrs: modernAddrs(RING_BASE + 0x4000, 8) });
    drv.driverOk();
    const rig = { mem, blk, mmio, drv, ring: q1, errors: [], irqRaises: () => 0, alloc: (() => { let n = 1 << 20; return (len: number, a = 16) => { n = Math.ceil(n / a) * a; const x = n; n += Math.max(len, 1); return x; }; })() } as BlkRig;
    post(rig, VIRTIO_BLK_T_IN, 3, 512);
    drv.notify(1);
    const s = saveVirtioDevice(blk);
    const fresh = () => {
      const b = new VirtIOBlock({ memory: mem, backend: new MemoryBlockBackend(MiB), numQueues: 2 });
      new VirtioMmioTransport(b, { legacy: false });
      return b;
    };
    // Find the request list: u8 1, be32 1 (queue 1), then the element.
    const at = findRequestList(s);
    expect([...s.subarray(at, at + 5)]).toEqual([1, 0, 0, 0, 1]);
    const bad = s.slice();
    bad[at + 4] = 7;
    expect(() => loadVirtioDevice(fresh(), bad)).toThrow(/Invalid virtqueue index in request list: 0x7/);
    const twice = new Uint8Array(s.length + 4 + 1 + 49168);
    twice.set(s.subarray(0, at + 5 + 49168));
    twice.set(s.subarray(at, at + 5 + 49168), at + 5 + 49168);
    twice.set(s.subarray(at + 5 + 49168), at + 2 * (5 + 49168));
    expect(() => loadVirtioDevice(fresh(), twice.subarray(0, s.length + 5 + 49168))).toThrow(MigrationError);
    held.releaseAll();
  });
});

/**
 * Offset of the request list in a virtio-mmio blob of a virtio-blk with two queues: the mmio part
 * (3 × be32), status, isr, queue_sel, features (8 bytes), config_len and config (57), the queue
 * count, and per queue num, align, desc and last_avail_idx (18 bytes).
 */
function findRequestList(_blob: Uint8Array): number {
  return 12 + 8 + 4 + 57 + 4 + 2 * 18;
}

describe('backends', () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-blk-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('Node file: positioned reads and writes, zero-fill past the end, flush, discard as zeros, readSync; QEMU-worded open errors', async () => {
    const path = join(dir, 'disk.raw');
    const init = new Uint8Array(4096).map((_, i) => i & 0xff);
    writeFileSync(path, init);
    const b = await NodeFileBlockBackend.open(path);
    expect([b.size, b.readOnly, b.synchronous]).toEqual([4096, false, false]);
    const dst = new Uint8Array(1024);
    await b.read(3584, dst);
    expect([...dst.subarray(0, 4)]).toEqual([0, 1, 2, 3]);
    expect(dst.subarray(512).every((x) => x === 0)).toBe(true);
    await b.write(512, new Uint8Array(512).fill(0x99));
    await b.flush();
    await b.discard(1024, 512);
    const s0 = new Uint8Array(512);
    expect(b.readSync(0, s0)).toBe(true);
    await b.close();
    const on = readFileSync(path);
    expect([on[511], on[512], on[1023], on[1024], on[1535], on[1536]]).toEqual([255, 0x99, 0x99, 0, 0, 0]);
    await expect(NodeFileBlockBackend.open(join(dir, 'nope.raw'))).rejects.toThrow(`Could not open '${join(dir, 'nope.raw')}': No such file or directory`);
    const ro = await NodeFileBlockBackend.open(path, { readOnly: true });
    await expect(ro.write(0, new Uint8Array(1))).rejects.toThrow(BlockBackendError);
    await ro.close();
    const m = await openBlockFiles([{ filename: path, readOnly: true }, { filename: path, readOnly: false }]);
    expect(m.get(path)!.readOnly).toBe(false);
    for (const f of m.values()) await f.close();
  });

  it('Node file behind the device: a guest write reaches the file, a read returns it', async () => {
    const path = join(dir, 'dev.raw');
    writeFileSync(path, new Uint8Array(MiB));
    const backend = await NodeFileBlockBackend.open(path);
    const r = blkRig({ backend });
    const w = post(r, VIRTIO_BLK_T_OUT, 3, 4096, { fill: 0x5c });
    r.drv.notify(0);
    for (let i = 0; i < 100 && r.ring.usedIdx() === 0; i++) await settle(1);
    expect(r.ring.takeUsed()).toEqual([{ id: w.head, len: 1 }]);
    const p = post(r, VIRTIO_BLK_T_IN, 3, 4096);
    r.drv.notify(0);
    for (let i = 0; i < 100 && r.ring.usedIdx() === 1; i++) await settle(1);
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 4097 }]);
    expect(r.mem.view(p.data, 4096)!.every((x) => x === 0x5c)).toBe(true);
    await backend.close();
    expect(readFileSync(path)[3 * 512]).toBe(0x5c);
  });

  it('memory: partial last sector reads as zeros; read-only refuses changes', () => {
    const b = new MemoryBlockBackend(new Uint8Array(1000).fill(7));
    const d = new Uint8Array(1024);
    b.read(0, d);
    expect([d[999], d[1000], d[1023]]).toEqual([7, 0, 0]);
    const ro = readOnlyBackend(b);
    expect(ro.readOnly).toBe(true);
    expect(() => ro.write(0, new Uint8Array(1))).toThrow(BlockBackendError);
    expect(new MemoryBlockBackend(4096, { readOnly: true }).readOnly).toBe(true);
  });

  it('Blob (read-only), OPFS sync access handle, OPFS file handle', async () => {
    const blob = new BlobBlockBackend(new Blob([new Uint8Array(1000).fill(3)]));
    const d = new Uint8Array(1024);
    await blob.read(512, d);
    expect([d[0], d[487], d[488]]).toEqual([3, 3, 0]);
    expect(() => blob.write()).toThrow(BlockBackendError);

    const file = new Uint8Array(8192);
    let flushed = 0;
    const handle: SyncAccessHandleLike = {
      read: (buf, o) => {
        const at = o?.at ?? 0;
        const n = Math.max(0, Math.min(buf.length, file.length - at));
        buf.set(file.subarray(at, at + n));
        return n;
      },
      write: (buf, o) => {
        file.set(buf, o?.at ?? 0);
        return buf.length;
      },
      flush: () => void flushed++,
      getSize: () => file.length,
      close: () => undefined,
    };
    const sync = new OpfsSyncBlockBackend(handle);
    sync.write(100, new Uint8Array([1, 2, 3]));
    sync.flush();
    sync.writeZeroes(101, 1);
    const s = new Uint8Array(4);
    sync.read(100, s);
    expect([...s, flushed]).toEqual([1, 0, 3, 0, 1]);
    const r = blkRig({ backend: sync });
    const p = post(r, VIRTIO_BLK_T_OUT, 4, 512, { fill: 9 });
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: p.head, len: 1 }]);
    expect(file[2048]).toBe(9);

    let content = new Uint8Array(2048);
    const fh = {
      getFile: async () => new Blob([content]),
      createWritable: async () => {
        const next = content.slice();
        return {
          write: async (w: { position: number; data: Uint8Array }) => {
            next.set(w.data, w.position);
          },
          close: async () => {
            content = next;
          },
        };
      },
    };
    const opfs = await OpfsFileBlockBackend.open(fh);
    await opfs.write(1000, new Uint8Array([5, 6]));
    await opfs.flush();
    const o = new Uint8Array(2);
    await opfs.read(1000, o);
    expect([...o, opfs.size]).toEqual([5, 6, 2048]);
  });
});

describe('virtio-blk: a big-endian guest on legacy virtio-mmio (guest-native header and config)', () => {
  it('reads the header and the segment big-endian, and shows the config big-endian', async () => {
    const { VIRTIO_MMIO_QUEUE_ALIGN, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_PFN, VIRTIO_MMIO_QUEUE_SEL } = await import('../../src/bus/virtio-mmio.js');
    const { SplitRingDriver } = await import('../../src/driver/split-ring.js');
    const { legacyLayout } = await import('../../src/vring/layout.js');
    const mem = GuestMemory.ofSize(4 << 20);
    const backend = patterned(MiB);
    const blk = new VirtIOBlock({ memory: mem, backend, guestBigEndian: true });
    const mmio = new VirtioMmioTransport(blk, { legacy: true });
    const drv = new MmioDriver(mmio, mem);
    drv.init(0n);
    const ring = new SplitRingDriver({ memory: mem, num: 8, addrs: legacyLayout(RING_BASE, 8, 4096), le: false });
    mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
    mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, RING_BASE / 4096);
    drv.driverOk();
    // The config, read as a big-endian guest reads it (a 32-bit access in its byte order).
    expect(mmio.read(0x100, 4)).toBe(0);
    expect(mmio.read(0x104, 4)).toBe(2048);
    expect(mmio.read(0x100 + 20, 4)).toBe(512);
    // A read of sector 3, header big-endian.
    const hdr = 0x100000;
    mem.write32(hdr, VIRTIO_BLK_T_IN, false);
    mem.write32(hdr + 4, 0, false);
    mem.write64(hdr + 8, 3n, false);
    const data = 0x101000;
    const st = 0x102000;
    ring.add([{ addr: hdr, len: 16 }, { addr: data, len: 512, write: true }, { addr: st, len: 1, write: true }]);
    drv.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 513 }]);
    expect(mem.read8(st)).toBe(VIRTIO_BLK_S_OK);
    expect(Buffer.compare(Buffer.from(mem.view(data, 512)!), Buffer.from(backend.data.subarray(1536, 2048)))).toBe(0);
  });
});
