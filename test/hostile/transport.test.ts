// Hostile-guest catalogue §D: virtio-mmio transport registers.
import { describe, expect, it } from 'vitest';
import {
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_GUEST_PAGE_SIZE,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_REGION_SIZE,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  VIRT_MAGIC,
} from '../../src/bus/virtio-mmio.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { F_WRITE, HostileRig, MODES, modernLayout } from '../support/invariants.js';

function queueState(rig: HostileRig) {
  const q = rig.q;
  return { num: q.num, desc: q.desc, avail: q.avail, used: q.used, align: q.align, mapped: q.isMapped, last: q.lastAvailIdx, usedIdx: q.usedIdx };
}

describe('hostile §D: transport registers', () => {
  for (const { legacy, name } of MODES) {
    describe(name, () => {
      it('T-D1 notify 0xFFFF, 0xFFFFFFFF, numQueues and 1024: ignored, nothing consumed, no interrupt', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 16, F_WRITE);
        rig.publish(0);
        for (const n of [0xffff, 0xffff_ffff, 1, 1024]) rig.regs.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, n);
        expect(rig.totalPops).toBe(0);
        expect(rig.isr()).toBe(0);
        expect(rig.irqRaises).toBe(0);
        rig.kick(0);
        expect(rig.completions.map((c) => c.id)).toEqual([0]);
        rig.expectLive();
      });

      it('T-D2 QueueSel out of range: QueueNumMax reads 0, writes do not reach any queue', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        const before = queueState(rig);
        const status = rig.status();
        rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 1);
        expect(rig.regs.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(0);
        rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 16);
        if (legacy) {
          rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 16);
          rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0x20);
        } else {
          rig.regs.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 4, 0x8000);
          rig.regs.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 4, 0x9000);
          rig.regs.write(VIRTIO_MMIO_QUEUE_USED_LOW, 4, 0xa000);
          rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
        }
        rig.kick(1);
        // Selectors at or above VIRTIO_QUEUE_MAX are dropped (QEMU 7.2): the selection stays 1.
        for (const sel of [1024, 0xffff, 0xffff_ffff]) {
          rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, sel);
          expect(rig.dev.queueSel).toBe(1);
          expect(rig.regs.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(0);
          rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 3);
        }
        expect(queueState(rig)).toEqual(before);
        expect(rig.status()).toBe(status);
        expect(rig.dev.vq).toHaveLength(1);
        rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
        expect(rig.regs.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(1024);
        rig.expectLive();
      });

      describe('T-D3 illegal queue sizes', () => {
        it.each([
          ['T-D3b', 3],
          ['T-D3c', 1000],
        ])('%s QueueNum %i (not a power of two): the queue cannot go live, error reported', (_id, num) => {
          const rig = new HostileRig({ legacy });
          rig.init();
          // The driver lays its ring out for the size it wrote.
          rig.setupQueue(num, legacy ? legacyLayout(rig.ringBase, num, 4096) : modernLayout(rig.ringBase, num));
          expect(rig.q.isMapped).toBe(false);
          rig.driverOk();
          rig.expectFatal(/not a power of two/);
        });

        it.each([
          ['T-D3a', 0],
          ['T-D3d', 1025],
          ['T-D3e', 65535],
        ])('%s QueueNum %i is refused: the queue keeps its previous valid size (QEMU policy)', (_id, num) => {
          const rig = new HostileRig({ legacy });
          rig.init();
          rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
          const prev = rig.q.num;
          rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, num);
          expect(rig.q.num).toBe(prev);
          // Whatever the driver believes, the device only ever uses a geometry it validated:
          // I4/I6 below check against the device's own mapping.
          const base = rig.ringBase;
          rig.mem.fill(base, 0x3000, 0);
          if (legacy) {
            rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, base / 4096);
          } else {
            const a = modernLayout(base, prev);
            rig.regs.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 4, a.desc);
            rig.regs.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 4, a.avail);
            rig.regs.write(VIRTIO_MMIO_QUEUE_USED_LOW, 4, a.used);
            rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
          }
          expect(rig.q.num).toBe(prev);
          expect((prev & (prev - 1)) === 0 && prev <= 1024).toBe(true);
          rig.geom = undefined;
          rig.driverOk();
          rig.kick();
          expect(rig.totalPops).toBe(0);
          expect(rig.errors).toEqual([]);
          rig.checkResetRecovers();
        });
      });

      it('T-D6 width/offset sweep over the 0x200 window: reads never disturb, wrong widths are ignored', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        const before = queueState(rig);
        const status = rig.status();
        // 1. Every read at every offset and width (aligned or not, 8 bytes included).
        for (let off = 0; off < VIRTIO_MMIO_REGION_SIZE + 8; off++) {
          for (const size of [1, 2, 4, 8]) {
            const v = rig.regs.read(off, size);
            expect(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff).toBe(true);
          }
          if (off % 8 === 0) rig.read64(off);
        }
        expect(rig.regs.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(VIRT_MAGIC);
        expect(queueState(rig)).toEqual(before);
        expect(rig.status()).toBe(status);
        // 2. Writes that are not aligned 4-byte accesses to a register: all ignored (QEMU), and
        //    rng has no config space. The device works afterwards without re-initialisation.
        for (let off = 0; off < VIRTIO_MMIO_REGION_SIZE + 8; off++) {
          for (const size of [1, 2, 4, 8, 3, 0, 16]) {
            if (size === 4 && off % 4 === 0 && off < VIRTIO_MMIO_REGION_SIZE) continue;
            for (const value of [0, 0xffff_ffff, 1]) rig.regs.write(off, size, value);
          }
        }
        expect(queueState(rig)).toEqual(before);
        expect(rig.status()).toBe(status);
        expect(rig.checkLiveness()).toBe('live');
        // 3. Aligned 4-byte writes of hostile values to every register, in order: these do
        //    reset, renegotiate, remap and kick. Check the invariants, then re-initialise.
        rig.geom = undefined;
        for (const value of [0xffff_ffff, 0x8000_0001, 1, 0]) {
          for (let off = 0; off < VIRTIO_MMIO_REGION_SIZE; off += 4) {
            rig.regs.write(off, 4, value);
            if (off % 16 === 0) rig.write64(off, 0xffff_ffff_ffff_fff0n);
          }
        }
        expect(rig.regs.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(VIRT_MAGIC);
        expect(rig.regs.read(VIRTIO_MMIO_VERSION, 4)).toBe(legacy ? 1 : 2);
        expect(rig.regs.read(VIRTIO_MMIO_DEVICE_ID, 4)).toBe(4);
        rig.checkResetRecovers();
      });
    });
  }

  describe('T-D4 (v1) legacy alignment, page size and PFN', () => {
    function legacyRig() {
      const rig = new HostileRig({ legacy: true });
      rig.init();
      rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
      return rig;
    }

    it('T-D4a QueueAlign 0 is ignored: the ring is laid out with the previous 4096', () => {
      const rig = legacyRig();
      rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 0);
      rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, rig.ringBase / 4096);
      expect(rig.q.align).toBe(4096);
      expect(rig.q.isMapped).toBe(true);
      expect(rig.q.used).toBe(legacyLayout(rig.ringBase, 8, 4096).used);
      // The driver that assumes 4096 (the only value the device could have used) works.
      rig.setupQueue(8);
      rig.driverOk();
      expect(rig.checkLiveness()).toBe('live');
      rig.checkResetRecovers();
    });

    it('T-D4b QueueAlign 3: the queue is not live, nothing is processed, reset recovers', () => {
      const rig = legacyRig();
      rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 3);
      rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, rig.ringBase / 4096);
      expect(rig.q.isMapped).toBe(false);
      rig.driverOk();
      rig.kick();
      expect(rig.totalPops).toBe(0);
      // Legacy cannot report NEEDS_RESET: processing stopped, reset recovers.
      rig.checkResetRecovers();
    });

    it('T-D4c GuestPageSize 0 then PFN 1: descriptor table at 1 is refused', () => {
      const rig = legacyRig();
      rig.regs.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 0);
      rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
      rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 1);
      expect(rig.q.isMapped).toBe(false);
      expect(rig.dev.broken).toBe(true);
      rig.driverOk();
      rig.kick();
      expect(rig.totalPops).toBe(0);
      rig.checkResetRecovers();
    });

    it('T-D4d PFN 0xFFFFFFFF with 4 KiB pages (2^44 - 4096, outside RAM) is refused', () => {
      const rig = legacyRig();
      rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
      rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0xffff_ffff);
      expect(rig.q.desc).toBe(0xffff_ffff * 4096);
      expect(rig.q.isMapped).toBe(false);
      expect(rig.errors[0]).toMatch(/Cannot map desc/);
      expect(rig.regs.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0xffff_ffff);
      rig.driverOk();
      rig.kick();
      expect(rig.totalPops).toBe(0);
      rig.checkResetRecovers();
    });
  });

  it('T-D8 (v2) legacy registers have no effect on a modern device', () => {
    const rig = new HostileRig();
    rig.start();
    const before = queueState(rig);
    const status = rig.status();
    rig.regs.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 16);
    rig.regs.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 16);
    rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0x20);
    // PFN 0 is a reset on v1; on v2 it must be ignored like the rest.
    rig.regs.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0);
    expect(rig.regs.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
    expect(rig.mmio.guestPageShift).toBe(0);
    expect(queueState(rig)).toEqual(before);
    expect(rig.status()).toBe(status);
    rig.expectLive();
  });

  it('T-D8 (v1) modern registers have no effect on a legacy device', () => {
    const rig = new HostileRig({ legacy: true });
    rig.start();
    const before = queueState(rig);
    const status = rig.status();
    rig.regs.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 4, 0x8000);
    rig.regs.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, 4, 1);
    rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 0);
    rig.regs.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
    expect(rig.regs.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
    expect(rig.regs.read(VIRTIO_MMIO_CONFIG_GENERATION, 4)).toBe(0);
    expect(queueState(rig)).toEqual(before);
    expect(rig.status()).toBe(status);
    rig.regs.write(VIRTIO_MMIO_STATUS, 4, status);
    rig.expectLive();
  });
});
