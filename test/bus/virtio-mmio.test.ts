// The virtio-mmio register window, v1 (legacy) and v2 (modern), as QEMU 7.2's
// hw/virtio/virtio-mmio.c and its memory core present it.
import { describe, expect, it } from 'vitest';
import {
  VirtioMmioTransport,
  VIRT_MAGIC,
  VIRT_VENDOR,
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_CONFIG_GENERATION,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DEVICE_ID,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_GUEST_PAGE_SIZE,
  VIRTIO_MMIO_INTERRUPT_ACK,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_MAGIC_VALUE,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRTIO_MMIO_SHM_BASE_HIGH,
  VIRTIO_MMIO_SHM_BASE_LOW,
  VIRTIO_MMIO_SHM_LEN_HIGH,
  VIRTIO_MMIO_SHM_LEN_LOW,
  VIRTIO_MMIO_SHM_SEL,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  mmioRegisterName,
} from '../../src/bus/virtio-mmio.js';
import { MigrationError, QEMUFileReader, QEMUFileWriter } from '../../src/migration/qemu-file.js';
import type { TraceEvent } from '../../src/trace/trace.js';
import { modernAddrs, rngRig, type RngRig } from '../support/harness.js';

const RING = 0x10000;
const BUF = 0x80000;

/** A device brought to DRIVER_OK with queue 0 at RING (8 entries), plus a guest-error log. */
function ready(legacy: boolean): RngRig & { guestErrors: string[]; ring: ReturnType<RngRig['drv']['setupQueue']> } {
  const r = rngRig({ legacy });
  const guestErrors: string[] = [];
  r.mmio.tracer = (e: TraceEvent) => {
    if (e.type === 'guest_error') guestErrors.push(e.message);
  };
  r.drv.init(0n);
  const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
  r.drv.driverOk();
  return { ...r, guestErrors, ring };
}

/** Serve one request so that ISR bit 0 is set and the line is high. */
function oneRequest(r: ReturnType<typeof ready>): void {
  r.ring.add([{ addr: BUF, len: 8, write: true }]);
  r.drv.notify(0);
}

function allRegisters(m: VirtioMmioTransport): Map<number, number> {
  const out = new Map<number, number>();
  for (let off = 0; off < 0x100; off += 4) out.set(off, m.read(off, 4));
  return out;
}

describe('virtio-mmio register values after initialisation', () => {
  const expectations = {
    v2: {
      [VIRTIO_MMIO_MAGIC_VALUE]: VIRT_MAGIC,
      [VIRTIO_MMIO_VERSION]: 2,
      [VIRTIO_MMIO_DEVICE_ID]: 4,
      [VIRTIO_MMIO_VENDOR_ID]: 0x554d4551,
      [VIRTIO_MMIO_DEVICE_FEATURES]: 0x30000000,
      [VIRTIO_MMIO_QUEUE_NUM_MAX]: 1024,
      [VIRTIO_MMIO_QUEUE_READY]: 1,
      [VIRTIO_MMIO_STATUS]: 0xf,
      [VIRTIO_MMIO_SHM_LEN_LOW]: 0xffffffff,
      [VIRTIO_MMIO_SHM_LEN_HIGH]: 0xffffffff,
    } as Record<number, number>,
    v1: {
      [VIRTIO_MMIO_MAGIC_VALUE]: VIRT_MAGIC,
      [VIRTIO_MMIO_VERSION]: 1,
      [VIRTIO_MMIO_DEVICE_ID]: 4,
      [VIRTIO_MMIO_VENDOR_ID]: 0x554d4551,
      [VIRTIO_MMIO_DEVICE_FEATURES]: 0x39000000,
      [VIRTIO_MMIO_QUEUE_NUM_MAX]: 1024,
      // desc >> guest_page_shift = 0x10000 >> 12.
      [VIRTIO_MMIO_QUEUE_PFN]: 0x10,
      [VIRTIO_MMIO_STATUS]: 0x7,
      // QEMU answers SHMLen without looking at the mode.
      [VIRTIO_MMIO_SHM_LEN_LOW]: 0xffffffff,
      [VIRTIO_MMIO_SHM_LEN_HIGH]: 0xffffffff,
    } as Record<number, number>,
  };

  for (const legacy of [false, true]) {
    const name = legacy ? 'v1' : 'v2';
    it(`${name}: every 32-bit register in 0x000..0x0fc reads as QEMU 7.2 does`, () => {
      const r = ready(legacy);
      const regs = allRegisters(r.mmio);
      const want = expectations[name];
      for (const [off, value] of regs) {
        expect({ register: mmioRegisterName(off), value }).toEqual({ register: mmioRegisterName(off), value: want[off] ?? 0 });
      }
      // Queue 1 does not exist.
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 1);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 1023);
      expect(r.rng.queueSel).toBe(1023);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(0);
      // A selector past VIRTIO_QUEUE_MAX is dropped.
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 1024);
      expect(r.rng.queueSel).toBe(1023);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(1024);
      // The second feature word.
      r.mmio.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 1);
      expect(r.mmio.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(legacy ? 0 : 0x101);
      // Any non-zero selector means 1 (QEMU).
      r.mmio.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 7);
      expect(r.mmio.hostFeaturesSel).toBe(1);
      expect(r.mmio.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(legacy ? 0 : 0x101);
      // Device-specific configuration: virtio-rng has none, so every width reads all ones.
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG, 4)).toBe(0xffffffff);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG, 2)).toBe(0xffff);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG + 3, 1)).toBe(0xff);
      expect(r.mmio.read(0x1fc, 4)).toBe(0xffffffff);
      expect(r.errors).toEqual([]);
    });
  }

  it('v2: ConfigGeneration follows the device generation; v1 reads 0', () => {
    for (const legacy of [false, true]) {
      const r = ready(legacy);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG_GENERATION, 4)).toBe(0);
      r.rng.notifyConfig();
      r.rng.notifyConfig();
      expect(r.rng.generation).toBe(2);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG_GENERATION, 4)).toBe(legacy ? 0 : 2);
    }
  });

  it('v2: QueueReady reads back what the driver enabled, per queue', () => {
    const r = rngRig({ legacy: false });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
    r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(1);
    r.mmio.write(VIRTIO_MMIO_QUEUE_READY, 4, 0);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
    // QEMU lets the driver mark a queue the device lacks as ready; nothing else happens.
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 3);
    r.mmio.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(1);
    expect(r.rng.vq.length).toBe(1);
  });

  it('v2: the queue address registers are latched and applied on QueueReady', () => {
    const r = rngRig({ legacy: false });
    r.drv.init(0n);
    const a = modernAddrs(RING, 8);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    r.mmio.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 4, a.desc);
    r.mmio.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 4, a.avail);
    r.mmio.write(VIRTIO_MMIO_QUEUE_USED_LOW, 4, a.used);
    expect(r.rng.requestq.desc).toBe(0);
    expect(r.mmio.queueState(0)).toEqual({ num: 8, enabled: false, desc: [a.desc, 0], avail: [a.avail, 0], used: [a.used, 0] });
    r.mmio.write(VIRTIO_MMIO_QUEUE_READY, 4, 1);
    expect([r.rng.requestq.desc, r.rng.requestq.avail, r.rng.requestq.used]).toEqual([a.desc, a.avail, a.used]);
    expect(r.rng.requestq.isMapped).toBe(true);
  });

  it('v1: QueuePFN reads back desc >> page shift for any GuestPageSize', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    r.drv.setupQueue(0, { num: 8, base: 0x24000 });
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0x24);
    // Changing the page size afterwards changes the answer (QEMU shifts the stored address).
    r.mmio.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 0x4000);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0x9);
  });
});

describe('virtio-mmio write-only, read-only and misused registers', () => {
  const writeOnly = [
    VIRTIO_MMIO_DEVICE_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_GUEST_PAGE_SIZE, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_ALIGN,
    VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH,
  ];

  for (const legacy of [false, true]) {
    const name = legacy ? 'v1' : 'v2';

    it(`${name}: write-only registers read 0 (and say so)`, () => {
      const r = ready(legacy);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      for (const off of writeOnly) expect(r.mmio.read(off, 4)).toBe(0);
      expect(r.guestErrors.filter((m) => m.startsWith('read of write-only register')).length).toBe(writeOnly.length);
      expect(r.guestErrors).toContain('read of write-only register (0x80)');
    });

    it(`${name}: writes to read-only registers are ignored`, () => {
      const r = ready(legacy);
      oneRequest(r);
      r.rng.notifyConfig();
      const before = allRegisters(r.mmio);
      expect(before.get(VIRTIO_MMIO_INTERRUPT_STATUS)).toBe(3);
      for (const off of [
        VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_VERSION, VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_VENDOR_ID,
        VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_QUEUE_NUM_MAX, VIRTIO_MMIO_INTERRUPT_STATUS,
        VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_SHM_LEN_LOW, VIRTIO_MMIO_SHM_LEN_HIGH,
        VIRTIO_MMIO_SHM_BASE_LOW, VIRTIO_MMIO_SHM_BASE_HIGH, VIRTIO_MMIO_SHM_SEL, 0x018, 0x0c0, 0x0f8,
      ]) {
        expect(() => r.mmio.write(off, 4, 0xdeadbeef)).not.toThrow();
      }
      expect(allRegisters(r.mmio)).toEqual(before);
      expect(r.rng.isr).toBe(3);
      expect(r.rng.generation).toBe(1);
      expect(r.guestErrors).toContain('write to read-only register (0x0)');
      expect(r.guestErrors).toContain('write to read-only register (0x60)');
      expect(r.guestErrors).toContain('bad register offset (0xc0)');
    });

    it(`${name}: 1- and 2-byte accesses to registers read 0 and are ignored`, () => {
      const r = ready(legacy);
      oneRequest(r);
      for (let off = 0; off < 0x100; off += 4) {
        expect(r.mmio.read(off, 1)).toBe(0);
        expect(r.mmio.read(off + 1, 1)).toBe(0);
        expect(r.mmio.read(off, 2)).toBe(0);
        expect(r.mmio.read(off + 2, 2)).toBe(0);
      }
      expect(r.guestErrors).toContain('wrong size access to register!');
      // Writes of the wrong width change nothing.
      r.mmio.write(VIRTIO_MMIO_STATUS, 1, 0);
      r.mmio.write(VIRTIO_MMIO_STATUS, 2, 0);
      expect(r.drv.status()).toBe(legacy ? 7 : 0xf);
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 1, 1);
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 2, 1);
      expect(r.drv.interruptStatus()).toBe(1);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 2, 5);
      expect(r.rng.queueSel).toBe(0);
      r.ring.add([{ addr: BUF, len: 8, write: true }]);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 2, 0);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 1, 0);
      expect(r.ring.usedIdx()).toBe(1);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0);
      expect(r.ring.usedIdx()).toBe(2);
    });

    it(`${name}: unaligned and impossible accesses read 0 and are ignored`, () => {
      const r = ready(legacy);
      expect(r.mmio.read(0x002, 4)).toBe(0);
      expect(r.mmio.read(0x001, 2)).toBe(0);
      expect(r.mmio.read(0x071, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG + 2, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_CONFIG + 1, 2)).toBe(0);
      expect(r.guestErrors).toContain('unaligned 4-byte access at 0x2');
      // Sizes other than 1/2/4/8, offsets outside the 0x200 window, non-integers.
      expect(r.mmio.read(0, 3)).toBe(0);
      expect(r.mmio.read(0, 0)).toBe(0);
      expect(r.mmio.read(0, 16)).toBe(0);
      expect(r.mmio.read(0x200, 4)).toBe(0);
      expect(r.mmio.read(-4, 4)).toBe(0);
      expect(r.mmio.read(0.5, 1)).toBe(0);
      expect(r.mmio.read(Number.NaN, 4)).toBe(0);
      // Unaligned writes: a status write at 0x72 would be a reset if it were taken.
      r.mmio.write(0x072, 4, 0);
      r.mmio.write(0x071, 2, 0);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL + 2, 4, 5);
      r.mmio.write(0x200, 4, 0);
      r.mmio.write(0, 3, 0);
      expect(r.drv.status()).toBe(legacy ? 7 : 0xf);
      expect(r.rng.queueSel).toBe(0);
    });
  }

  it('v2: legacy-only registers are ignored (no page size, no alignment, PFN 0 is not a reset)', () => {
    const r = ready(false);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 4096);
    expect(r.mmio.guestPageShift).toBe(0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 64);
    expect(r.rng.requestq.align).toBe(4096);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0x20);
    expect(r.drv.status()).toBe(0xf);
    expect(r.rng.requestq.desc).toBe(RING);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
    expect(r.guestErrors).toContain('write to legacy register (0x40) in non-legacy mode');
    expect(r.guestErrors).toContain('read from legacy register (0x40) in non-legacy mode');
  });

  it('v1: modern-only registers are ignored', () => {
    const r = ready(true);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_READY, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 4, 0x40000);
    r.mmio.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 4, 0x40000);
    r.mmio.write(VIRTIO_MMIO_QUEUE_USED_HIGH, 4, 1);
    expect(r.mmio.queueState(0)).toEqual({ num: 0, enabled: false, desc: [0, 0], avail: [0, 0], used: [0, 0] });
    expect(r.rng.requestq.desc).toBe(RING);
    expect(r.rng.requestq.isMapped).toBe(true);
    oneRequest(r);
    expect(r.ring.usedIdx()).toBe(1);
    expect(r.guestErrors).toContain('write to non-legacy register (0x44) in legacy mode');
  });

  it('v1: GuestPageSize keeps log2 of the lowest set bit; 0 gives shift 0', () => {
    const r = rngRig({ legacy: true });
    const cases: [number, number][] = [[4096, 12], [0x3000, 12], [0x80000000, 31], [1, 0], [0, 0], [0x10000, 16]];
    for (const [v, shift] of cases) {
      r.mmio.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, v);
      expect(r.mmio.guestPageShift).toBe(shift);
    }
  });

  it('v1: QueueAlign 0 is ignored (CVE-2017-17381) and the ring still maps', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    r.mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 0);
    expect(r.rng.requestq.align).toBe(4096);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, RING >> 12);
    expect(r.rng.requestq.used).toBe(0x11000);
    expect(r.rng.requestq.isMapped).toBe(true);
  });

  it('v1: a QueuePFN outside RAM breaks the device without throwing', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    expect(() => r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0xffffffff)).not.toThrow();
    expect(r.rng.requestq.desc).toBe(0xffffffff * 4096);
    expect(r.errors).toEqual(['Cannot map desc (VQ 0)']);
    expect(r.rng.broken).toBe(true);
  });

  for (const legacy of [false, true]) {
    it(`${legacy ? 'v1' : 'v2'}: QueueNum above 1024, 0, or on a missing queue is refused`, () => {
      const r = rngRig({ legacy });
      r.drv.init(0n);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 2048);
      expect(r.rng.requestq.num).toBe(8);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 0);
      expect(r.rng.requestq.num).toBe(8);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 1024);
      expect(r.rng.requestq.num).toBe(1024);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 1);
      r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(0);
      expect(r.rng.queueNum(1)).toBe(0);
    });
  }

  it('v2: driver feature words are latched and applied only with FEATURES_OK; later writes are ignored', () => {
    const r = rngRig({ legacy: false });
    r.mmio.write(VIRTIO_MMIO_STATUS, 4, 3);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0xffffffff);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0xffffffff);
    expect(r.mmio.guestFeatures).toEqual([0xffffffff, 0xffffffff]);
    expect(r.rng.guestFeatures).toBe(0n);
    r.mmio.write(VIRTIO_MMIO_STATUS, 4, 0xb);
    // As QEMU: bits not offered are masked off, the return value is ignored, FEATURES_OK sticks;
    // host features include the legacy bits hidden from the modern feature window.
    expect(r.drv.status()).toBe(0xb);
    expect(r.rng.guestFeatures).toBe(0x101_3900_0000n);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0);
    r.mmio.write(VIRTIO_MMIO_STATUS, 4, 0xb);
    expect(r.rng.guestFeatures).toBe(0x101_3900_0000n);
  });
});

describe('virtio-mmio 8-byte accesses', () => {
  for (const legacy of [false, true]) {
    const version = legacy ? 1n : 2n;
    it(`${legacy ? 'v1' : 'v2'}: read64 is two 4-byte reads, low word first; read(…, 8) is 0`, () => {
      const r = ready(legacy);
      expect(r.mmio.read64(VIRTIO_MMIO_MAGIC_VALUE)).toBe((version << 32n) | 0x74726976n);
      expect(r.mmio.read64(VIRTIO_MMIO_DEVICE_ID)).toBe((0x554d4551n << 32n) | 4n);
      expect(r.mmio.read64(VIRTIO_MMIO_SHM_LEN_LOW)).toBe(0xffff_ffff_ffff_ffffn);
      expect(r.mmio.read64(VIRTIO_MMIO_SHM_BASE_LOW)).toBe(0n);
      expect(r.mmio.read64(VIRTIO_MMIO_CONFIG)).toBe(0xffff_ffff_ffff_ffffn);
      expect(r.mmio.read(VIRTIO_MMIO_MAGIC_VALUE, 8)).toBe(0);
      // Unaligned for 8 bytes, or past the window.
      expect(r.mmio.read64(VIRTIO_MMIO_VERSION)).toBe(0n);
      expect(r.mmio.read64(0x1fc)).toBe(0n);
      expect(r.mmio.read64(0x200)).toBe(0n);
    });
  }

  it('v2: write64 sets both halves of a queue address, low word first', () => {
    const r = rngRig({ legacy: false });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write64(VIRTIO_MMIO_QUEUE_DESC_LOW, 0x0000_0001_2345_6780n);
    r.mmio.write64(VIRTIO_MMIO_QUEUE_AVAIL_LOW, 0x0000_0000_0001_1000n);
    r.mmio.write64(VIRTIO_MMIO_QUEUE_USED_LOW, 0xffff_ffff_0000_2000n);
    expect(r.mmio.queueState(0)!.desc).toEqual([0x23456780, 1]);
    expect(r.mmio.queueState(0)!.avail).toEqual([0x11000, 0]);
    expect(r.mmio.queueState(0)!.used).toEqual([0x2000, 0xffffffff]);
    // Not 8-aligned (0x84), and write(…, 8): ignored.
    r.mmio.write64(VIRTIO_MMIO_QUEUE_DESC_HIGH, 0x5555_5555_6666_6666n);
    r.mmio.write(VIRTIO_MMIO_QUEUE_DESC_LOW, 8, 0x1234);
    expect(r.mmio.queueState(0)!.desc).toEqual([0x23456780, 1]);
    // DeviceFeaturesSel (0x14) is not 8-aligned either.
    r.mmio.write64(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1n);
    expect(r.mmio.hostFeaturesSel).toBe(0);
    // A status write as 8 bytes covers Status (0x70) and InterruptACK's neighbour 0x74.
    r.mmio.write64(VIRTIO_MMIO_STATUS, 0xffff_ffff_0000_0003n);
    expect(r.drv.status()).toBe(3);
  });
});

describe('virtio-mmio empty slot (no device)', () => {
  for (const legacy of [false, true]) {
    it(`${legacy ? 'v1' : 'v2'}: answers magic, version and vendor; device id 0; everything else 0`, () => {
      const levels: boolean[] = [];
      const m = new VirtioMmioTransport(undefined, { legacy, irq: (l) => levels.push(l) });
      expect(m.read(VIRTIO_MMIO_MAGIC_VALUE, 4)).toBe(VIRT_MAGIC);
      expect(m.read(VIRTIO_MMIO_VERSION, 4)).toBe(legacy ? 1 : 2);
      expect(m.read(VIRTIO_MMIO_VENDOR_ID, 4)).toBe(VIRT_VENDOR);
      expect(m.read(VIRTIO_MMIO_DEVICE_ID, 4)).toBe(0);
      for (let off = 0x10; off < 0x200; off += 4) expect(m.read(off, 4)).toBe(off === VIRTIO_MMIO_VENDOR_ID ? VIRT_VENDOR : 0);
      expect(m.read64(VIRTIO_MMIO_MAGIC_VALUE)).toBe(((legacy ? 1n : 2n) << 32n) | BigInt(VIRT_MAGIC));
      // QEMU answers before looking at the width; its memory core keeps the low bytes.
      expect(m.read(VIRTIO_MMIO_MAGIC_VALUE, 1)).toBe(0x76);
      expect(m.read(VIRTIO_MMIO_MAGIC_VALUE, 2)).toBe(0x6976);
      expect(m.read(VIRTIO_MMIO_VENDOR_ID, 2)).toBe(0x4551);
      expect(m.read(VIRTIO_MMIO_VERSION, 1)).toBe(legacy ? 1 : 2);
      expect(m.read(2, 2)).toBe(0);
      // Writes are ignored and nothing throws.
      for (let off = 0; off < 0x200; off += 4) expect(() => m.write(off, 4, 0xffffffff)).not.toThrow();
      m.write(VIRTIO_MMIO_STATUS, 4, 0);
      m.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0);
      m.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0);
      expect(m.hostFeaturesSel).toBe(0);
      expect(m.guestPageShift).toBe(0);
      m.notify(0);
      m.reset();
      expect(levels).toEqual([]);
      expect(m.irqLevel).toBe(false);
    });
  }
});

describe('virtio-mmio interrupts', () => {
  for (const legacy of [false, true]) {
    it(`${legacy ? 'v1' : 'v2'}: InterruptACK clears the written ISR bits and the line follows the ISR`, () => {
      const r = ready(legacy);
      oneRequest(r);
      expect(r.drv.interruptStatus()).toBe(1);
      expect(r.irqLevel()).toBe(true);
      expect(r.mmio.irqLevel).toBe(true);
      r.rng.notifyConfig();
      expect(r.drv.interruptStatus()).toBe(3);
      expect(r.irqRaises()).toBe(1);
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 1);
      expect(r.drv.interruptStatus()).toBe(2);
      expect(r.irqLevel()).toBe(true);
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 0);
      expect(r.drv.interruptStatus()).toBe(2);
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 0xfffffffe);
      expect(r.drv.interruptStatus()).toBe(0);
      expect(r.irqLevel()).toBe(false);
      expect(r.mmio.irqLevel).toBe(false);
      // An ACK of nothing keeps it low.
      r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 3);
      expect(r.irqLevel()).toBe(false);
      oneRequest(r);
      expect(r.irqRaises()).toBe(2);
    });
  }

  it('v2: after virtioError, acknowledging lowers the line (QEMU 7.2 leaves it high: difference 17)', () => {
    const r = ready(false);
    r.rng.virtioError('test');
    expect(r.drv.interruptStatus()).toBe(3);
    expect(r.irqLevel()).toBe(true);
    r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 1);
    // One bit still pending: the line stays up, and nothing new can raise it.
    expect(r.drv.interruptStatus()).toBe(2);
    expect(r.irqLevel()).toBe(true);
    r.mmio.write(VIRTIO_MMIO_INTERRUPT_ACK, 4, 2);
    expect(r.drv.interruptStatus()).toBe(0);
    expect(r.irqLevel()).toBe(false);
    // A broken device raises nothing more, even when asked to.
    r.rng.setIsr(1);
    r.rng.updateIrq();
    expect(r.irqLevel()).toBe(false);
    r.drv.reset();
    expect(r.irqLevel()).toBe(false);
  });
});

describe('virtio-mmio resets', () => {
  it('v1: QueuePFN = 0 resets the device (QEMU virtio_mmio_soft_reset)', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(1n << 28n);
    expect(r.rng.guestFeatures).toBe(1n << 28n);
    const ring = r.drv.setupQueue(0, { num: 4, base: RING, align: 64 });
    r.drv.driverOk();
    ring.add([{ addr: BUF, len: 8, write: true }]);
    r.drv.notify(0);
    expect(ring.usedIdx()).toBe(1);
    expect(r.drv.interruptStatus()).toBe(1);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, 0);
    expect(r.drv.status()).toBe(0);
    expect(r.drv.interruptStatus()).toBe(0);
    expect(r.irqLevel()).toBe(false);
    expect(r.rng.guestFeatures).toBe(0n);
    expect(r.rng.requestq.desc).toBe(0);
    expect(r.rng.requestq.num).toBe(8);
    expect(r.rng.requestq.isMapped).toBe(false);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
    // The transport's own registers survive a soft reset; the alignment survives too (QEMU).
    expect(r.mmio.guestPageShift).toBe(12);
    expect(r.rng.requestq.align).toBe(64);
  });

  for (const legacy of [false, true]) {
    it(`${legacy ? 'v1' : 'v2'}: Status 0 soft-resets; modern QueueReady reads 0 afterwards`, () => {
      const r = ready(legacy);
      oneRequest(r);
      r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
      r.mmio.write(VIRTIO_MMIO_STATUS, 4, 0);
      expect(r.drv.status()).toBe(0);
      expect(r.drv.interruptStatus()).toBe(0);
      expect(r.irqLevel()).toBe(false);
      expect(r.rng.requestq.desc).toBe(0);
      expect(r.rng.requestq.usedIdx).toBe(0);
      expect(r.rng.started).toBe(false);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(1024);
      if (!legacy) {
        // The latched queue registers stay (QEMU clears only `enabled`).
        const a = modernAddrs(RING, 8);
        expect(r.mmio.queueState(0)).toEqual({ num: 8, enabled: false, desc: [a.desc, 0], avail: [a.avail, 0], used: [a.used, 0] });
      }
      // A kick after the reset touches nothing.
      const usedBefore = r.ring.usedIdx();
      r.ring.add([{ addr: BUF, len: 8, write: true }]);
      r.drv.notify(0);
      expect(r.ring.usedIdx()).toBe(usedBefore);
    });

    it(`${legacy ? 'v1' : 'v2'}: a machine reset also clears selectors and latched queue registers`, () => {
      const r = ready(legacy);
      r.mmio.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 1);
      r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1);
      r.mmio.reset();
      expect(r.mmio.hostFeaturesSel).toBe(0);
      expect(r.mmio.guestFeaturesSel).toBe(0);
      expect(r.mmio.guestPageShift).toBe(0);
      expect(r.mmio.guestFeatures).toEqual([0, 0]);
      expect(r.mmio.queueState(0)).toEqual({ num: 0, enabled: false, desc: [0, 0], avail: [0, 0], used: [0, 0] });
      expect(r.drv.status()).toBe(0);
    });
  }
});

describe('virtio-mmio migration hooks', () => {
  function configured(legacy: boolean): VirtioMmioTransport {
    const r = rngRig({ legacy });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 1);
    r.mmio.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1);
    return r.mmio;
  }

  it('saveConfig writes host_features_sel, guest_features_sel and guest_page_shift as be32', () => {
    const w = new QEMUFileWriter();
    configured(true).saveConfig(w);
    expect(Array.from(w.bytes())).toEqual([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 12]);
    const w2 = new QEMUFileWriter();
    configured(false).saveConfig(w2);
    expect(Array.from(w2.bytes())).toEqual([0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
  });

  it('loadConfig round-trips, and changes nothing until the returned function is applied', () => {
    const w = new QEMUFileWriter();
    configured(true).saveConfig(w);
    const dst = rngRig({ legacy: true }).mmio;
    const f = new QEMUFileReader(w.bytes());
    const apply = dst.loadConfig(f);
    expect(f.remaining).toBe(0);
    expect([dst.hostFeaturesSel, dst.guestFeaturesSel, dst.guestPageShift]).toEqual([0, 0, 0]);
    apply();
    expect([dst.hostFeaturesSel, dst.guestFeaturesSel, dst.guestPageShift]).toEqual([1, 1, 12]);
    const again = new QEMUFileWriter();
    dst.saveConfig(again);
    expect(again.bytes()).toEqual(w.bytes());
  });

  const bad: { name: string; words: number[]; field: string; at: number; msg: RegExp }[] = [
    { name: 'host_features_sel 2', words: [2, 0, 12], field: 'virtio-mmio host_features_sel', at: 4, msg: /value 2 is not 0 or 1/ },
    { name: 'guest_features_sel 0x100', words: [1, 0x100, 12], field: 'virtio-mmio guest_features_sel', at: 8, msg: /value 256 is not 0 or 1/ },
    { name: 'guest_page_shift 32', words: [0, 1, 32], field: 'virtio-mmio guest_page_shift', at: 12, msg: /value 32 is above 31/ },
  ];
  for (const b of bad) {
    it(`loadConfig refuses ${b.name} with a MigrationError naming field and offset, state unchanged`, () => {
      const dst = configured(true);
      const w = new QEMUFileWriter();
      w.putBe32(0xcafe); // something before the transport's part, so offsets are absolute
      for (const x of b.words) w.putBe32(x);
      const f = new QEMUFileReader(w.bytes());
      expect(f.getBe32('prefix')).toBe(0xcafe);
      let err: unknown;
      try {
        dst.loadConfig(f);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MigrationError);
      const me = err as MigrationError;
      expect(me.field).toBe(b.field);
      expect(me.offset).toBe(b.at);
      expect(me.message).toMatch(b.msg);
      expect(me.message).toContain(`offset ${b.at}`);
      expect(me.message).toContain(b.field);
      expect([dst.hostFeaturesSel, dst.guestFeaturesSel, dst.guestPageShift]).toEqual([1, 1, 12]);
    });
  }

  it('loadConfig on a short stream names the missing field', () => {
    const dst = configured(false);
    const w = new QEMUFileWriter();
    w.putBe32(0);
    w.putBe32(0);
    expect(() => dst.loadConfig(new QEMUFileReader(w.bytes()))).toThrow(
      new MigrationError(8, 'virtio-mmio guest_page_shift', 'stream ends after 0 of 4 bytes'),
    );
    expect([dst.hostFeaturesSel, dst.guestFeaturesSel]).toEqual([1, 1]);
  });

  it('hasExtraState: only modern transports carry the per-queue state', () => {
    expect(configured(false).hasExtraState()).toBe(true);
    expect(configured(true).hasExtraState()).toBe(false);
  });
});
