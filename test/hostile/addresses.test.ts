// Hostile-guest catalogue §C (guest addresses and lengths) and G-rng (T-Gr1, T-Gr2).
import { describe, expect, it } from 'vitest';
import {
  VIRTIO_MMIO_GUEST_PAGE_SIZE,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
} from '../../src/bus/virtio-mmio.js';
import type { MemoryRegionOptions } from '../../src/memory/guest-memory.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { F_NEXT, F_WRITE, HostileRig, KiB, MiB, MODES, modernLayout, sameBytes } from '../support/invariants.js';

const HOLE: MemoryRegionOptions[] = [
  { base: 0, size: 256 * KiB },
  { base: 512 * KiB, size: 256 * KiB },
];

/** Program queue 0 of a modern device with raw 64-bit register values, then QueueReady=1. */
function rawModernQueue(rig: HostileRig, num: number, desc: bigint, avail: bigint, used: bigint): void {
  const w = (o: number, v: bigint) => rig.regs.write(o, 4, Number(v & 0xffff_ffffn));
  rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
  rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, num);
  w(VIRTIO_MMIO_QUEUE_DESC_LOW, desc);
  w(VIRTIO_MMIO_QUEUE_DESC_HIGH, desc >> 32n);
  w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, avail);
  w(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, avail >> 32n);
  w(VIRTIO_MMIO_QUEUE_USED_LOW, used);
  w(VIRTIO_MMIO_QUEUE_USED_HIGH, used >> 32n);
  rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
}

/** One writable buffer at `addr` of `len` bytes as head 0, kicked. */
function oneBuffer(rig: HostileRig, addr: number | bigint, len: number, flags = F_WRITE): void {
  rig.desc(0, addr, len, flags);
  rig.publish(0);
  rig.kick();
}

describe('hostile §C: guest addresses and lengths', () => {
  for (const { legacy, name } of MODES) {
    describe(name, () => {
      it.each([
        ['in the RAM hole', 300 * KiB],
        ['above the top of RAM', 1 * MiB],
        ['at a virtio-mmio window address', 0xfeb0_0000],
      ])('T-C1 descriptor %s is rejected (RAM-only accessors)', (_n, addr) => {
        const rig = new HostileRig({ legacy, regions: HOLE });
        rig.start();
        oneBuffer(rig, addr, 64);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-C1 the same request into the second RAM region works', () => {
        const rig = new HostileRig({ legacy, regions: HOLE });
        rig.start();
        oneBuffer(rig, 600 * KiB, 64);
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 64]]);
        rig.expectLive();
      });

      it('T-C1 a ring placed in the hole is refused when mapped', () => {
        const rig = new HostileRig({ legacy, regions: HOLE });
        rig.init();
        rig.setupQueue(8, legacy ? legacyLayout(300 * KiB, 8, 4096) : modernLayout(300 * KiB, 8));
        rig.driverOk();
        rig.expectFatal(/Cannot map desc/);
      });

      it('T-C2a buffer starting 8 bytes before the end of RAM, 16 long, is rejected', () => {
        const rig = new HostileRig({ legacy, regions: HOLE });
        rig.start();
        oneBuffer(rig, 768 * KiB - 8, 16);
        rig.expectFatal(/bogus descriptor/);
      });

      it.each([
        ['region 1 → hole', 256 * KiB - 8, 16],
        ['region 1 → hole → region 2', 256 * KiB - 8, 256 * KiB + 16],
      ])('T-C2b buffer spanning %s is rejected', (_n, addr, len) => {
        const rig = new HostileRig({ legacy, regions: HOLE });
        rig.start();
        oneBuffer(rig, addr, len);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-C3 a buffer ending exactly at the top of RAM succeeds', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        oneBuffer(rig, 256 * KiB - 512, 512);
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 512]]);
        rig.expectLive();
      });

      it('T-C3 one byte more fails', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        oneBuffer(rig, 256 * KiB - 512, 513);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-C4a RAM based at 0x8000_0000, ring at 0x1000 (below the base): refused', () => {
        const rig = new HostileRig({ legacy, regions: [{ base: 0x8000_0000, size: 256 * KiB }] });
        rig.init();
        rig.setupQueue(8, legacy ? legacyLayout(0x1000, 8, 4096) : modernLayout(0x1000, 8));
        rig.driverOk();
        rig.expectFatal(/Cannot map desc/);
      });

      it.each([
        ['0xFFFF_FFFF_FFFF_FFF0 len 0x20 (wraps 2^64)', 0xffff_ffff_ffff_fff0n, 0x20],
        ['0xFFFF_FFFF_FFFF_F000 len 0x2000 (wraps 2^64)', 0xffff_ffff_ffff_f000n, 0x2000],
        ['2^53 + 1 (not exact as a number)', 2n ** 53n + 1n, 16],
        ['2^53 - 1', 2n ** 53n - 1n, 16],
        ['2^64 - 1 len 1', 2n ** 64n - 1n, 1],
      ])('T-C4b/c buffer at %s is rejected', (_n, addr, len) => {
        const rig = new HostileRig({ legacy });
        rig.start();
        oneBuffer(rig, addr, len);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-C6a a ring in ROM is refused and the ROM is unchanged', () => {
        const rom = { base: 256 * KiB, size: 16 * KiB, readonly: true };
        const rig = new HostileRig({ legacy, regions: [{ base: 0, size: 256 * KiB }, rom] });
        const romBytes = rig.mem.view(rom.base, rom.size)!.slice();
        rig.init();
        // Legacy: the whole area is in ROM; modern: only the used ring.
        rig.setupQueue(8, legacy ? legacyLayout(rom.base, 8, 4096) : { ...modernLayout(0x1000, 8), used: rom.base });
        rig.driverOk();
        expect(rig.errors[0]).toMatch(/Cannot map used/);
        expect(sameBytes(rig.mem.view(rom.base, rom.size), romBytes)).toBe(true);
        rig.expectFatal(/Cannot map used/);
        expect(sameBytes(rig.mem.view(rom.base, rom.size), romBytes)).toBe(true);
      });

      it('T-C6a a writable buffer in ROM is rejected; a readable one is fine', () => {
        const rom = { base: 256 * KiB, size: 16 * KiB, readonly: true };
        const rig = new HostileRig({ legacy, regions: [{ base: 0, size: 256 * KiB }, rom] });
        const romBytes = rig.mem.view(rom.base, rom.size)!.slice();
        rig.start();
        oneBuffer(rig, rom.base, 64, 0);
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 0]]);
        oneBuffer(rig, rom.base, 64, F_WRITE);
        expect(sameBytes(rig.mem.view(rom.base, rom.size), romBytes)).toBe(true);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-C6d a writable buffer that is the used ring itself: processed byte-wise, one used entry', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        const used = rig.geom!.used;
        oneBuffer(rig, used, 4 + 8 * 8 + 2);
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 70]]);
        expect(rig.usedIdx()).toBe(1);
        expect(rig.usedElem(0)).toEqual({ id: 0, len: 70 });
        rig.expectLive();
      });

      it('T-C7 / T-Gr2 readable-only buffers: used.len 0, nothing written', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        const before = rig.mem.view(rig.buf(0), 0x2000)!.slice();
        rig.desc(0, rig.buf(0), 64, F_NEXT, 1);
        rig.desc(1, rig.buf(1), 64, 0);
        rig.publish(0);
        rig.kick();
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 0]]);
        expect(sameBytes(rig.mem.view(rig.buf(0), 0x2000), before)).toBe(true);
        rig.expectLive();
      });

      it('T-Gr1 one 0xFFFF_FFFF-byte writable buffer fails the RAM check', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        oneBuffer(rig, rig.buf(0), 0xffff_ffff);
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-Gr1 a 1 MiB buffer gets at most the 64 KiB cap, fast; 8 of them in one kick too', () => {
        const rig = new HostileRig({ legacy, regions: [{ base: 0, size: 2 * MiB }] });
        rig.start();
        const big = 1 * MiB;
        const tail = rig.mem.view(big + 64 * KiB, big - 64 * KiB)!.slice();
        oneBuffer(rig, big, 1 * MiB);
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 64 * KiB]]);
        expect(sameBytes(rig.mem.view(big + 64 * KiB, big - 64 * KiB), tail)).toBe(true);
        // A chain of 4 × 256 KiB: still 64 KiB in all, all of it in the first buffer.
        for (let i = 0; i < 4; i++) rig.desc(i, big + i * 256 * KiB, 256 * KiB, F_WRITE | (i < 3 ? F_NEXT : 0), i + 1);
        rig.publish(0);
        rig.kick();
        expect(rig.completions.at(-1)!.len).toBe(64 * KiB);
        // A full ring of 1 MiB buffers in one kick: 8 × 64 KiB, within the per-call budgets.
        for (let h = 0; h < 8; h++) rig.desc(h, big, 1 * MiB, F_WRITE);
        rig.publish(0, 1, 2, 3, 4, 5, 6, 7);
        rig.kick();
        expect(rig.completions.slice(-8).map((c) => c.len)).toEqual(new Array(8).fill(64 * KiB));
        expect(rig.lastCalls.at(-1)!.entropyBytes).toBe(8 * 64 * KiB);
        rig.expectLive();
      });
    });
  }

  describe('v2 ring addresses through QueueDesc/Driver/Device registers', () => {
    const bad: [string, bigint, bigint, bigint, RegExp][] = [
      ['T-C4b desc 0xFFFF_FFFF_FFFF_FFF0 (wraps 2^64)', 0xffff_ffff_ffff_fff0n, 0x1080n, 0x2000n, /misaligned|Cannot map/],
      ['T-C4c desc 2^53 + 16', 2n ** 53n + 16n, 0x1080n, 0x2000n, /misaligned|Cannot map/],
      ['T-C4c used 2^53 + 1', 0x1000n, 0x1080n, 2n ** 53n + 1n, /misaligned|Cannot map/],
      ['T-C6b desc misaligned (0x1008)', 0x1008n, 0x1088n, 0x2000n, /misaligned/],
      ['T-C6b avail odd (0x1081)', 0x1000n, 0x1081n, 0x2000n, /misaligned/],
      ['T-C6b used not 4-aligned (0x2002)', 0x1000n, 0x1080n, 0x2002n, /misaligned/],
      ['T-C6 avail straddling the end of RAM', 0x1000n, BigInt(256 * KiB - 8), 0x2000n, /Cannot map avail/],
    ];
    it.each(bad)('%s: refused at QueueReady (NEEDS_RESET), nothing touched', (_n, desc, avail, used, re) => {
      const rig = new HostileRig();
      rig.init();
      rawModernQueue(rig, 8, desc, avail, used);
      expect(rig.q.isMapped).toBe(false);
      expect(rig.status() & 0x40).toBe(0x40);
      rig.geom = undefined;
      rig.driverOk();
      rig.kick();
      expect(rig.totalPops).toBe(0);
      expect(rig.errors[0]).toMatch(re);
      // Recovery: a correct set-up after reset works.
      rig.setupQueue(8);
      rig.checkResetRecovers();
    });

    it('T-C6c avail ring overlapping the descriptor table is tolerated and never corrupts', () => {
      const rig = new HostileRig();
      rig.init();
      // Descriptors 4..7 share bytes with the avail ring; the driver only uses heads 0..3.
      rig.setupQueue(8, { desc: 0x1000, avail: 0x1040, used: 0x2000 });
      rig.driverOk();
      rig.ringDrv.setAvailIdx(0);
      for (let round = 0; round < 3; round++) {
        for (let h = 0; h < 4; h++) {
          rig.desc(h, rig.buf(h), 16, F_WRITE);
          rig.publish(h);
        }
        rig.kick();
      }
      expect(rig.completions.map((c) => c.id)).toEqual([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
      expect([rig.q.lastAvailIdx, rig.q.usedIdx, rig.q.inuse]).toEqual([12, 12, 0]);
      expect(rig.errors).toEqual([]);
      rig.checkResetRecovers();
    });

    it.each([
      ['used ring = avail ring', { desc: 0x1000, avail: 0x1080, used: 0x1080 }],
      ['used ring = descriptor table', { desc: 0x1000, avail: 0x1080, used: 0x1000 }],
    ])('T-C6c %s: guest-defined garbage, never a host fault', (_n, addrs) => {
      const rig = new HostileRig();
      rig.init();
      rig.setupQueue(8, addrs);
      rig.driverOk();
      for (let k = 0; k < 6; k++) {
        for (let h = 0; h < 2; h++) rig.desc(h, rig.buf(h), 16, F_WRITE);
        rig.ringDrv.setAvailRingEntry(rig.ringDrv.availIdx % 8, 0);
        rig.ringDrv.setAvailRingEntry((rig.ringDrv.availIdx + 1) % 8, 1);
        rig.ringDrv.setAvailIdx(rig.ringDrv.availIdx + 2);
        rig.kick();
      }
      expect(rig.q.inuse).toBe(0);
      rig.checkResetRecovers();
    });

    it('T-C6e QueueReady=1 with all addresses 0: nothing at GPA 0 is processed', () => {
      const rig = new HostileRig();
      rig.init();
      // A valid-looking ring at GPA 0 that the device must ignore: desc 0 → a writable buffer,
      // avail.idx = 1, used ring at 0x200.
      rig.mem.fill(0, 0x300, 0);
      rig.mem.write64(0, BigInt(rig.buf(0)));
      rig.mem.write32(8, 64);
      rig.mem.write16(12, F_WRITE);
      rig.mem.write16(0x82, 1);
      rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
      rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
      expect(rig.regs.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(1);
      expect(rig.q.isMapped).toBe(false);
      rig.driverOk();
      rig.kick();
      expect(rig.totalPops).toBe(0);
      expect(rig.mem.read16(0x202)).toBe(0);
      // Policy (QEMU's): address 0 means "not set", so this is no error; the driver recovers by
      // programming the addresses and enabling the queue again.
      expect(rig.errors).toEqual([]);
      rig.setupQueue(8);
      expect(rig.checkLiveness()).toBe('live');
      rig.checkResetRecovers();
    });
  });

  it('T-C6b (v1) GuestPageSize 8 and PFN 0x201: descriptor table at 0x1008 is refused', () => {
    const rig = new HostileRig({ legacy: true });
    rig.init();
    rig.regs.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 8);
    rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
    rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0x201);
    expect(rig.q.desc).toBe(0x1008);
    expect(rig.q.isMapped).toBe(false);
    expect(rig.dev.broken).toBe(true);
    expect(rig.errors[0]).toMatch(/misaligned/);
    rig.checkResetRecovers();
  });
});
