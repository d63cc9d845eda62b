// Property: random register access sequences over the whole virtio-mmio window (any offset,
// width and value, aligned or not), interleaved with requests, kicks and acknowledges, on a
// running virtio-rng (v2 and v1). I1, I2, I4 and I6 are checked around every access (I4 against
// whatever ring geometry the device has mapped at the time); afterwards the identification
// registers are intact and a reset recovers the device (I7).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  VIRT_MAGIC,
  VIRT_VENDOR,
} from '../../src/bus/virtio-mmio.js';
import { EVENT_IDX, HostileRig, INDIRECT, KiB } from '../support/invariants.js';

const REGS = [
  0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x028, 0x030, 0x034, 0x038, 0x03c, 0x040, 0x044, 0x050, 0x060,
  0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0ac, 0x0b0, 0x0b4, 0x0b8, 0x0bc, 0x0fc, 0x100,
];
const VALUES = [0, 1, 2, 3, 4, 7, 8, 0xb, 0xf, 0x40, 0x80, 0xff, 8, 16, 1024, 1025, 0x1000, 0x1080, 0x2000, 0x1008, 0xffff, 0xffff_ffff, 0x8000_0000];

type Op =
  | { k: 'w'; off: number; size: number; value: number }
  | { k: 'r'; off: number; size: number }
  | { k: 'w64'; off: number; value: bigint }
  | { k: 'post' }
  | { k: 'kick'; q: number }
  | { k: 'ack' }
  | { k: 'reinit' };

const offset = fc.oneof({ arbitrary: fc.constantFrom(...REGS), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 0x20f }), weight: 2 });
const size = fc.constantFrom(4, 4, 4, 4, 1, 2, 8, 3);
const value = fc.oneof({ arbitrary: fc.constantFrom(...VALUES), weight: 3 }, { arbitrary: fc.integer({ min: 0, max: 0xffff_ffff }), weight: 1 });
const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ k: fc.constant('w' as const), off: offset, size, value }), weight: 6 },
  { arbitrary: fc.record({ k: fc.constant('r' as const), off: offset, size }), weight: 2 },
  { arbitrary: fc.record({ k: fc.constant('w64' as const), off: offset, value: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }), weight: 1 },
  { arbitrary: fc.constant({ k: 'post' as const }), weight: 6 },
  { arbitrary: fc.record({ k: fc.constant('kick' as const), q: fc.constantFrom(0, 0, 0, 1, 0xffff) }), weight: 6 },
  { arbitrary: fc.constant({ k: 'ack' as const }), weight: 1 },
  { arbitrary: fc.constant({ k: 'reinit' as const }), weight: 2 },
);

describe('property: random register sequences over the virtio-mmio window', () => {
  it('never throws, stays within its budgets and memory rules, and reset always recovers', () => {
    const stats = { completions: 0, broken: 0 };
    fc.assert(
      fc.property(fc.boolean(), fc.boolean(), fc.array(op, { minLength: 5, maxLength: 60, size: 'max' }), (legacy, eventIdx, ops) => {
        const features = INDIRECT | (eventIdx ? EVENT_IDX : 0n);
        const rig = new HostileRig({ legacy, regions: [{ base: 0, size: 64 * KiB }], dataBase: 0x8000, goodBuf: 0xf000 });
        rig.start(8, features);
        // From here on the driver's picture of the ring may be wrong: judge by the device's.
        rig.geom = undefined;
        for (const o of ops) {
          switch (o.k) {
            case 'w':
              rig.regs.write(o.off, o.size, o.value);
              break;
            case 'r': {
              const v = rig.regs.read(o.off, o.size);
              expect(Number.isInteger(v) && v >= 0 && v <= 0xffff_ffff).toBe(true);
              break;
            }
            case 'w64':
              rig.write64(o.off & ~7, o.value);
              break;
            case 'post':
              // Posted on the driver's original ring, wherever the device now looks.
              if (rig.ring && rig.inFlightHeads().length < 8) {
                const h = rig.ringDrv.availIdx % 8;
                rig.ringDrv.writeDesc(h, 0x8000 + 0x100 * h, 64, 2, 0);
                rig.ringDrv.publish(h);
              }
              break;
            case 'kick':
              rig.kick(o.q);
              break;
            case 'ack':
              rig.ack();
              break;
            case 'reinit':
              rig.start(8, features);
              rig.geom = undefined;
              break;
          }
        }
        stats.completions += rig.completions.length;
        stats.broken += rig.errors.length ? 1 : 0;
        expect(rig.regs.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(VIRT_MAGIC);
        expect(rig.regs.read(VIRTIO_MMIO_VERSION, 4)).toBe(legacy ? 1 : 2);
        expect(rig.regs.read(VIRTIO_MMIO_DEVICE_ID, 4)).toBe(4);
        expect(rig.regs.read(VIRTIO_MMIO_VENDOR_ID, 4)).toBe(VIRT_VENDOR);
        expect(rig.regs.read(VIRTIO_MMIO_STATUS, 4)).toBeLessThanOrEqual(0xff);
        expect(rig.regs.read(VIRTIO_MMIO_INTERRUPT_STATUS, 4)).toBeLessThanOrEqual(3);
        expect([0, 1024]).toContain(rig.regs.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4));
        // The device's own geometry is always one it validated.
        const q = rig.q;
        if (q.isMapped) expect(q.num > 0 && (q.num & (q.num - 1)) === 0 && q.num <= 1024).toBe(true);
        expect(q.inuse).toBeLessThanOrEqual(q.num);
        rig.checkResetRecovers();
      }),
      { seed: 0x5eed_0002, numRuns: 400 },
    );
    // The sequences do reach processing and errors, not only register noise.
    expect(stats.completions).toBeGreaterThan(800);
    expect(stats.broken).toBeGreaterThan(15);
  });
});
