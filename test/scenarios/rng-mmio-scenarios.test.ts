// Guest-script scenarios: a driver (MmioDriver + SplitRingDriver) runs virtio-rng through
// virtio-mmio, modern (version 2) and legacy (version 1), and checks every observable result:
// register values, used-ring entries and lengths, the bytes delivered and the interrupt line.
import { describe, expect, it } from 'vitest';
import {
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_GUEST_PAGE_SIZE,
  VIRTIO_MMIO_INTERRUPT_STATUS,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_STATUS,
} from '../../src/bus/virtio-mmio.js';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import { deterministicEntropy, type VirtIORngOptions } from '../../src/devices/rng.js';
import { DriverError } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import {
  bit,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../../src/virtio/constants.js';
import { VRING_AVAIL_F_NO_INTERRUPT } from '../../src/vring/constants.js';
import { legacyLayout, qemuLegacyLayout } from '../../src/vring/layout.js';
import { modernAddrs, rngRig, type RngRig } from '../support/harness.js';

const RING = 0x10000;
const BUF = 0x80000;
const EVENT_IDX = bit(VIRTIO_RING_F_EVENT_IDX);
const INDIRECT = bit(VIRTIO_RING_F_INDIRECT_DESC);

/** The byte stream deterministicEntropy(1) produces, handed out in order. */
class Stream {
  private readonly src = deterministicEntropy(1);
  next(n: number): Uint8Array {
    const b = new Uint8Array(n);
    this.src.fill(b);
    return b;
  }
}

interface Rig extends RngRig {
  ring: SplitRingDriver;
}

function bringUp(
  legacy: boolean,
  opts: { features?: bigint; num?: number; align?: number; rng?: Partial<VirtIORngOptions>; ramSize?: number; base?: number } = {},
): Rig {
  const r = rngRig({ legacy, rng: opts.rng, ramSize: opts.ramSize });
  r.drv.init(opts.features ?? 0n);
  const num = opts.num ?? 8;
  const base = opts.base ?? RING;
  const ring = r.drv.setupQueue(0, { num, addrs: modernAddrs(base, num), base, align: opts.align });
  r.drv.driverOk();
  return { ...r, ring };
}

const MODES = [
  { legacy: false, name: 'v2 modern' },
  { legacy: true, name: 'v1 legacy' },
] as const;

describe('scenario: initialisation and feature read-back', () => {
  it('v2 modern: status sequence, feature words 0x30000000 / 0x101, negotiation', () => {
    const r = rngRig({ legacy: false });
    const m = r.mmio;
    expect(r.drv.probe()).toBe(4);
    m.write(VIRTIO_MMIO_STATUS, 4, 0);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(0);
    m.write(VIRTIO_MMIO_STATUS, 4, 1);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(1);
    m.write(VIRTIO_MMIO_STATUS, 4, 3);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(3);
    m.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 0);
    // INDIRECT_DESC (28) and EVENT_IDX (29); NOTIFY_ON_EMPTY (24), ANY_LAYOUT (27) and
    // BAD_FEATURE (30) are legacy features that QEMU hides from a modern driver.
    expect(m.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(0x30000000);
    m.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 1);
    // VERSION_1 (32) and RING_RESET (40).
    expect(m.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(0x101);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0x101);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 0);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0x30000000);
    // Nothing reaches the device before FEATURES_OK on virtio-mmio v2.
    expect(r.rng.guestFeatures).toBe(0n);
    m.write(VIRTIO_MMIO_STATUS, 4, 0xb);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(0xb);
    expect(r.rng.guestFeatures).toBe(0x101_3000_0000n);
    expect(r.rng.isBigEndian()).toBe(false);
    r.drv.features = r.rng.guestFeatures;
    r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
    m.write(VIRTIO_MMIO_STATUS, 4, 0xf);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(0xf);
    expect(r.rng.started).toBe(true);
    expect(r.rng.requestq.eventIdx).toBe(true);
    expect(r.rng.requestq.indirectDesc).toBe(true);
  });

  it('v2 modern: MmioDriver.init reads 0x101_3000_0000 and negotiates VERSION_1 plus what was asked', () => {
    const r = rngRig({ legacy: false });
    expect(r.drv.init(~0n)).toBe(0x101_3000_0000n);
    expect(r.drv.deviceFeatures).toBe(0x101_3000_0000n);
    expect(r.rng.guestFeatures).toBe(0x101_3000_0000n);
    const r2 = rngRig({ legacy: false });
    expect(r2.drv.init(0n)).toBe(bit(VIRTIO_F_VERSION_1));
    expect(r2.rng.guestFeatures).toBe(bit(VIRTIO_F_VERSION_1));
  });

  it('v1 legacy: feature word 0 is 0x39000000, word 1 reads 0, status 1/3/7', () => {
    const r = rngRig({ legacy: true });
    const m = r.mmio;
    expect(r.drv.probe()).toBe(4);
    expect(r.drv.version).toBe(1);
    m.write(VIRTIO_MMIO_STATUS, 4, 1);
    m.write(VIRTIO_MMIO_STATUS, 4, 3);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(3);
    m.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 0);
    expect(m.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(0x39000000);
    m.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 4, 1);
    expect(m.read(VIRTIO_MMIO_DEVICE_FEATURES, 4)).toBe(0);
    // A legacy write goes to the device at once; with the selector at 1 it is refused.
    m.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 1);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0x10000000);
    expect(r.rng.guestFeatures).toBe(0n);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 4, 0);
    m.write(VIRTIO_MMIO_DRIVER_FEATURES, 4, 0xffffffff);
    expect(r.rng.guestFeatures).toBe(0x39000000n);
    m.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 4096);
    r.drv.features = r.rng.guestFeatures;
    r.drv.setupQueue(0, { num: 8, base: RING });
    m.write(VIRTIO_MMIO_STATUS, 4, 7);
    expect(m.read(VIRTIO_MMIO_STATUS, 4)).toBe(7);
    expect(r.rng.started).toBe(true);
    expect(r.rng.requestq.notifyOnEmpty).toBe(true);
  });

  it('v1 legacy: MmioDriver.init negotiates within 0x39000000', () => {
    const r = rngRig({ legacy: true });
    expect(r.drv.init(~0n)).toBe(0x39000000n);
    expect(r.drv.deviceFeatures).toBe(0x39000000n);
    expect(r.rng.guestFeatures).toBe(0x39000000n);
    expect(r.drv.status()).toBe(3);
  });
});

describe('scenario: many requests across the 16-bit index wrap', () => {
  /**
   * Post 70 000 16-byte requests in batches of 8 (one kick each), checking every used entry and
   * every byte. Returns the number of interrupts raised.
   */
  function run(r: Rig, opts: { driverUpdatesUsedEvent: boolean }): number {
    const stream = new Stream();
    const TOTAL = 70_000;
    const LEN = 16;
    if (!opts.driverUpdatesUsedEvent) r.ring.eventIdx = false; // used_event stays 0
    let done = 0;
    let kicks = 0;
    let bad = 0;
    const raisedAt: number[] = [];
    while (done < TOTAL) {
      const batch = Math.min(8, TOTAL - done);
      const heads: number[] = [];
      for (let k = 0; k < batch; k++) {
        const slot = r.ring.availIdx % 8;
        heads.push(r.ring.add([{ addr: BUF + slot * LEN, len: LEN, write: true }]));
      }
      const before = r.irqRaises();
      r.drv.notify(0);
      kicks++;
      if (r.irqRaises() !== before) raisedAt.push(done + batch);
      r.drv.ackInterrupt();
      const used = r.ring.takeUsed();
      if (used.length !== batch) bad++;
      for (let k = 0; k < batch; k++) {
        if (used[k]?.id !== heads[k] || used[k]?.len !== LEN) bad++;
        const slot = (done + k) % 8;
        const got = r.mem.view(BUF + slot * LEN, LEN)!;
        const want = stream.next(LEN);
        for (let i = 0; i < LEN; i++) if (got[i] !== want[i]) bad++;
      }
      done += batch;
    }
    expect(bad).toBe(0);
    expect(kicks).toBe(8750);
    expect(r.irqLevel()).toBe(false);
    // 70 000 mod 65536 = 4464: both indices wrapped once.
    expect(r.ring.usedIdx()).toBe(4464);
    expect(r.rng.requestq.usedIdx).toBe(4464);
    expect(r.rng.requestq.lastAvailIdx).toBe(4464);
    expect(r.rng.requestq.inuse).toBe(0);
    expect(r.rng.bytesServed).toBe(TOTAL * LEN);
    expect(r.errors).toEqual([]);
    expect(r.rng.broken).toBe(false);
    if (!opts.driverUpdatesUsedEvent) expect(raisedAt).toEqual([8, 65544]);
    return r.irqRaises();
  }

  for (const { legacy, name } of MODES) {
    it(`70 000 requests, data checked against deterministicEntropy (${name})`, () => {
      expect(run(bringUp(legacy), { driverUpdatesUsedEvent: true })).toBe(8750);
    });

    it(`70 000 requests with EVENT_IDX, used_event kept current: an interrupt per kick (${name})`, () => {
      const r = bringUp(legacy, { features: EVENT_IDX });
      expect(run(r, { driverUpdatesUsedEvent: true })).toBe(8750);
      expect(r.ring.availEvent()).toBe(4464);
    });
  }

  it('70 000 requests with EVENT_IDX and used_event left at 0: interrupts at the first batch and after the wrap', () => {
    // vring_need_event(0, new, old) is true only when used.idx passes 0 again: the batch that
    // takes it from 65536 (0) to 65544 (8). The first one comes from signalled_used not yet valid.
    expect(run(bringUp(false, { features: EVENT_IDX }), { driverUpdatesUsedEvent: false })).toBe(2);
  });
});

describe('scenario: a completely full ring', () => {
  for (const { legacy, name } of MODES) {
    for (const num of [8, 1024]) {
      it(`${num} requests posted before one kick are all completed (${name})`, () => {
        const r = bringUp(legacy, { num });
        const stream = new Stream();
        for (let round = 0; round < 2; round++) {
          const heads: number[] = [];
          for (let i = 0; i < num; i++) heads.push(r.ring.add([{ addr: BUF + i * 16, len: 16, write: true }]));
          expect(heads.every((h) => h >= 0)).toBe(true);
          expect(r.ring.freeDescriptors).toBe(0);
          // One more does not fit.
          expect(r.ring.add([{ addr: BUF, len: 16, write: true }])).toBe(-1);
          r.drv.notify(0);
          expect(r.ring.usedIdx()).toBe((round + 1) * num);
          const used = r.ring.takeUsed();
          expect(used.map((u) => u.id)).toEqual(heads);
          expect(used.every((u) => u.len === 16)).toBe(true);
          for (let i = 0; i < num; i++) expect(r.mem.view(BUF + i * 16, 16)).toEqual(stream.next(16));
          expect(r.drv.ackInterrupt()).toBe(1);
        }
        // One interrupt per kick.
        expect(r.irqRaises()).toBe(2);
        expect(r.rng.requestq.num).toBe(num);
        expect(r.errors).toEqual([]);
      });
    }

    it(`a full ring of 8 indirect chains of two buffers each (${name})`, () => {
      const r = bringUp(legacy, { features: INDIRECT });
      const stream = new Stream();
      const heads: number[] = [];
      for (let i = 0; i < 8; i++) {
        heads.push(
          r.ring.add(
            [
              { addr: BUF + i * 64, len: 24, write: true },
              { addr: BUF + i * 64 + 32, len: 8, write: true },
            ],
            { indirectTable: 0x30000 + i * 32 },
          ),
        );
      }
      expect(r.ring.freeDescriptors).toBe(0);
      r.drv.notify(0);
      const used = r.ring.takeUsed();
      expect(used).toEqual(heads.map((id) => ({ id, len: 32 })));
      for (let i = 0; i < 8; i++) {
        const want = stream.next(32);
        expect(r.mem.view(BUF + i * 64, 24)).toEqual(want.subarray(0, 24));
        expect(r.mem.view(BUF + i * 64 + 24, 8)).toEqual(new Uint8Array(8));
        expect(r.mem.view(BUF + i * 64 + 32, 8)).toEqual(want.subarray(24));
      }
    });
  }
});

describe('scenario: EVENT_IDX on and off', () => {
  for (const { legacy, name } of MODES) {
    /** Post one 8-byte request, kick, and return whether the line went up (then acknowledge). */
    function oneRequest(r: Rig): boolean {
      const before = r.irqRaises();
      r.ring.add([{ addr: BUF, len: 8, write: true }]);
      r.drv.notify(0);
      const raised = r.irqRaises() !== before;
      r.drv.ackInterrupt();
      return raised;
    }

    it(`without EVENT_IDX: one interrupt per kick; avail.flags NO_INTERRUPT suppresses them (${name})`, () => {
      const r = bringUp(legacy);
      expect(r.rng.requestq.eventIdx).toBe(false);
      const got: boolean[] = [];
      for (let i = 0; i < 5; i++) {
        got.push(oneRequest(r));
        r.ring.takeUsed();
      }
      r.ring.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
      for (let i = 0; i < 5; i++) {
        got.push(oneRequest(r));
        r.ring.takeUsed();
      }
      expect(got).toEqual([true, true, true, true, true, false, false, false, false, false]);
      expect(r.ring.usedIdx()).toBe(10);
      // Without EVENT_IDX the device leaves used.flags alone (notifications wanted) and never
      // writes avail_event.
      expect(r.ring.usedFlags()).toBe(0);
      expect(r.ring.availEvent()).toBe(0);
    });

    it(`with EVENT_IDX: used_event decides, avail.flags is ignored (${name})`, () => {
      const r = bringUp(legacy, { features: EVENT_IDX });
      expect(r.rng.requestq.eventIdx).toBe(true);
      expect(r.ring.eventIdx).toBe(true);
      const got: boolean[] = [];
      // First completion: signalled_used is not valid yet, so QEMU (and we) always notify.
      got.push(oneRequest(r));
      r.ring.takeUsed(); // used_event <- 1
      got.push(oneRequest(r)); // used idx 1 -> 2 passes used_event 1: notify
      r.ring.takeUsed();
      // used_event far ahead: eight completions, no interrupt.
      for (let i = 0; i < 8; i++) {
        r.ring.setUsedEvent(1000);
        got.push(oneRequest(r));
        r.ring.takeUsed();
        r.ring.setUsedEvent(1000);
      }
      expect(r.ring.usedIdx()).toBe(10);
      // avail.flags NO_INTERRUPT has no meaning with EVENT_IDX: used_event = 10 asks for the next.
      r.ring.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
      r.ring.setUsedEvent(10);
      got.push(oneRequest(r)); // 11th
      r.ring.takeUsed();
      // used_event = 12 (the current idx is 11): completions 12 and 13; only the one that moves
      // used.idx past 12 (to 13) interrupts.
      r.ring.setUsedEvent(12);
      got.push(oneRequest(r)); // idx 12
      r.ring.setUsedEvent(12);
      got.push(oneRequest(r)); // idx 13
      expect(got).toEqual([true, true, false, false, false, false, false, false, false, false, true, false, true]);
      expect(r.irqRaises()).toBe(4);
      // The device publishes avail_event = its last_avail_idx, and keeps used.flags 0.
      expect(r.ring.availEvent()).toBe(13);
      expect(r.ring.usedFlags()).toBe(0);
      expect(r.errors).toEqual([]);
    });

    it(`interrupt counts for the same workload: 10 without EVENT_IDX, 1 when used_event stays 0 (${name})`, () => {
      const plain = bringUp(legacy);
      const evt = bringUp(legacy, { features: EVENT_IDX });
      // This driver never advances used_event (it stays 0).
      evt.ring.eventIdx = false;
      for (const r of [plain, evt]) {
        for (let i = 0; i < 10; i++) {
          r.ring.add([{ addr: BUF, len: 8, write: true }]);
          r.drv.notify(0);
          r.drv.ackInterrupt();
          r.ring.takeUsed();
        }
        expect(r.ring.usedIdx()).toBe(10);
      }
      expect(plain.irqRaises()).toBe(10);
      // used_event 0: only the first completion notifies (signalled_used was not valid yet).
      expect(evt.irqRaises()).toBe(1);
      expect(evt.mem.read16(evt.ring.addrs.avail + 4 + 2 * 8)).toBe(0);
    });
  }

  it('v1 legacy with NOTIFY_ON_EMPTY: an interrupt when the queue empties even with NO_INTERRUPT', () => {
    const r = bringUp(true, { features: bit(VIRTIO_F_NOTIFY_ON_EMPTY) });
    expect(r.rng.guestFeatures).toBe(bit(VIRTIO_F_NOTIFY_ON_EMPTY));
    r.ring.setAvailFlags(VRING_AVAIL_F_NO_INTERRUPT);
    for (let i = 0; i < 3; i++) {
      r.ring.add([{ addr: BUF, len: 8, write: true }]);
      r.drv.notify(0);
      expect(r.drv.ackInterrupt()).toBe(1);
    }
    expect(r.irqRaises()).toBe(3);
  });
});

describe('scenario: indirect descriptors on and off', () => {
  for (const { legacy, name } of MODES) {
    it(`negotiated: an indirect chain with readable and writable parts works (${name})`, () => {
      const r = bringUp(legacy, { features: INDIRECT });
      expect(r.rng.requestq.indirectDesc).toBe(true);
      const stream = new Stream();
      r.mem.fill(BUF, 32, 0xaa);
      const head = r.ring.add(
        [
          { addr: BUF, len: 32 },
          { addr: BUF + 0x100, len: 40, write: true },
          { addr: BUF + 0x200, len: 24, write: true },
        ],
        { indirectTable: 0x30000 },
      );
      r.drv.notify(0);
      expect(r.ring.takeUsed()).toEqual([{ id: head, len: 64 }]);
      expect(r.mem.view(BUF, 32)).toEqual(new Uint8Array(32).fill(0xaa));
      const want = stream.next(64);
      expect(r.mem.view(BUF + 0x100, 40)).toEqual(want.subarray(0, 40));
      expect(r.mem.view(BUF + 0x200, 24)).toEqual(want.subarray(40));
      // A direct chain still works next to it.
      const h2 = r.ring.add([{ addr: BUF + 0x300, len: 8, write: true }]);
      r.drv.notify(0);
      expect(r.ring.takeUsed()).toEqual([{ id: h2, len: 8 }]);
      expect(r.mem.view(BUF + 0x300, 8)).toEqual(stream.next(8));
      expect(r.errors).toEqual([]);
    });

    it(`not negotiated: an indirect chain breaks the device (deliberate difference #3) (${name})`, () => {
      const r = bringUp(legacy);
      expect(r.rng.requestq.indirectDesc).toBe(false);
      r.ring.add([{ addr: BUF, len: 16, write: true }], { indirectTable: 0x30000 });
      r.drv.notify(0);
      expect(r.errors).toEqual(['Indirect descriptor used without VIRTIO_F_INDIRECT_DESC']);
      expect(r.rng.broken).toBe(true);
      expect(r.ring.usedIdx()).toBe(0);
      expect(r.mem.view(BUF, 16)).toEqual(new Uint8Array(16));
      if (legacy) {
        // Legacy: no NEEDS_RESET and no configuration interrupt; the device just stops.
        expect(r.drv.status()).toBe(7);
        expect(r.drv.interruptStatus()).toBe(0);
        expect(r.irqRaises()).toBe(0);
      } else {
        expect(r.drv.status()).toBe(0xf | VIRTIO_CONFIG_S_NEEDS_RESET);
        expect(r.drv.interruptStatus()).toBe(3);
        expect(r.irqRaises()).toBe(1);
        expect(r.irqLevel()).toBe(true);
        expect(r.rng.generation).toBe(1);
      }
      // Nothing more is processed until a reset.
      r.ring.add([{ addr: BUF + 0x100, len: 8, write: true }]);
      r.drv.notify(0);
      expect(r.ring.usedIdx()).toBe(0);
      // Reset and re-initialise: the device works again.
      r.drv.init(0n);
      expect(r.rng.broken).toBe(false);
      expect(r.irqLevel()).toBe(false);
      const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(0x20000, 8), base: 0x20000 });
      r.drv.driverOk();
      const h = ring.add([{ addr: BUF + 0x200, len: 8, write: true }]);
      r.drv.notify(0);
      expect(ring.takeUsed()).toEqual([{ id: h, len: 8 }]);
      expect(r.mem.view(BUF + 0x200, 8)).toEqual(new Stream().next(8));
    });
  }
});

describe('scenario: legacy ring layout with GuestPageSize and QueueAlign', () => {
  // num 8 at 0x10000: avail at 0x10080, avail ring with used_event ends at 0x10096.
  const cases = [
    { align: 4096, used: 0x11000 },
    { align: 64, used: 0x100c0 },
    { align: 16, used: 0x100a0 },
    { align: 4, used: 0x10098 },
  ];
  for (const { align, used } of cases) {
    it(`QueueAlign ${align}: the used ring is at 0x${used.toString(16)} (spec / Linux vring_init)`, () => {
      const r = bringUp(true, { align });
      expect(legacyLayout(RING, 8, align).used).toBe(used);
      expect(r.rng.requestq.desc).toBe(RING);
      expect(r.rng.requestq.avail).toBe(0x10080);
      expect(r.rng.requestq.used).toBe(used);
      expect(r.rng.requestq.align).toBe(align);
      expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0x10);
      r.mem.write16(0x10094, 0x5a5a); // used_event: the device must not treat it as used.flags
      const h1 = r.ring.add([{ addr: BUF, len: 64, write: true }]);
      const h2 = r.ring.add([{ addr: BUF + 64, len: 32, write: true }]);
      r.drv.notify(0);
      // Raw little-endian bytes of used.idx and the two used elements at the spec address.
      expect(Array.from(r.mem.view(used, 4 + 16)!)).toEqual([
        0, 0, 2, 0,
        h1, 0, 0, 0, 64, 0, 0, 0,
        h2, 0, 0, 0, 32, 0, 0, 0,
      ]);
      expect(r.mem.read16(0x10094)).toBe(0x5a5a);
      expect(r.ring.takeUsed()).toEqual([{ id: h1, len: 64 }, { id: h2, len: 32 }]);
    });
  }

  it('QueueAlign 4 is where QEMU 7.2 differs: it would place the used ring at 0x10094 (on used_event)', () => {
    expect(qemuLegacyLayout(RING, 8, 4).used).toBe(0x10094);
    expect(legacyLayout(RING, 8, 4).used).toBe(0x10098);
    // With 4096 both agree.
    expect(qemuLegacyLayout(RING, 8, 4096).used).toBe(legacyLayout(RING, 8, 4096).used);
  });

  it('num 256 with QueueAlign 4096 puts used at base + 8192', () => {
    const r = bringUp(true, { num: 256, align: 4096 });
    expect(r.rng.requestq.used).toBe(RING + 8192);
    const h = r.ring.add([{ addr: BUF, len: 8, write: true }]);
    r.drv.notify(0);
    expect(r.mem.read16(RING + 8192 + 2)).toBe(1);
    expect(r.mem.read32(RING + 8192 + 4)).toBe(h);
    expect(r.mem.read32(RING + 8192 + 8)).toBe(8);
  });

  it('GuestPageSize 65536: QueuePFN counts 64 KiB pages', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    r.mmio.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, 4, 0x10000);
    expect(r.mmio.guestPageShift).toBe(16);
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_NUM, 4, 8);
    r.mmio.write(VIRTIO_MMIO_QUEUE_ALIGN, 4, 4096);
    r.mmio.write(VIRTIO_MMIO_QUEUE_PFN, 4, 2);
    expect(r.rng.requestq.desc).toBe(0x20000);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(2);
    expect(r.rng.requestq.used).toBe(legacyLayout(0x20000, 8, 4096).used);
    expect(r.rng.requestq.isMapped).toBe(true);
  });

  it('QueueAlign 2 puts used at an address that is not 4-aligned: refused (deliberate difference #7)', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    r.drv.setupQueue(0, { num: 8, base: RING, align: 2 });
    expect(r.errors.length).toBe(1);
    expect(r.errors[0]).toMatch(/misaligned ring/);
    expect(r.rng.broken).toBe(true);
    expect(r.rng.requestq.isMapped).toBe(false);
  });
});

describe('scenario: queue resize (QueueNum below QueueNumMax)', () => {
  for (const { legacy, name } of MODES) {
    for (const num of [4, 2]) {
      it(`QueueNum ${num}: slots wrap at ${num} (${name})`, () => {
        const r = bringUp(legacy, { num });
        expect(r.drv.queueNumMax(0)).toBe(1024);
        expect(r.rng.requestq.num).toBe(num);
        expect(r.rng.requestq.numDefault).toBe(8);
        const stream = new Stream();
        const all: number[] = [];
        for (let round = 0; round < 3; round++) {
          const heads: number[] = [];
          for (let i = 0; i < num; i++) heads.push(r.ring.add([{ addr: BUF + i * 16, len: 16, write: true }]));
          expect(r.ring.add([{ addr: BUF, len: 16, write: true }])).toBe(-1);
          r.drv.notify(0);
          const used = r.ring.takeUsed();
          expect(used).toEqual(heads.map((id) => ({ id, len: 16 })));
          for (let i = 0; i < num; i++) expect(r.mem.view(BUF + i * 16, 16)).toEqual(stream.next(16));
          all.push(...heads);
        }
        expect(r.ring.usedIdx()).toBe(3 * num);
        // The used ring has num slots: the last round's entries sit in slots 0..num-1.
        for (let s = 0; s < num; s++) expect(r.ring.usedEntry(s)).toEqual({ id: all[2 * num + s], len: 16 });
        // A reset restores the device's default size.
        r.drv.reset();
        expect(r.rng.requestq.num).toBe(8);
      });
    }
  }
});

describe('scenario: v2 queue stopped with QueueReady 0, grown and re-enabled elsewhere', () => {
  it('the resize while stopped is not checked against the old addresses (QEMU: set_num only stores)', () => {
    const r = rngRig({ legacy: false });
    r.drv.init(0n);
    // The first ring sits at the very end of the 1 MiB of RAM: 8 entries fit, 256 would not.
    const old = { desc: 0xffe00, avail: 0xffe80, used: 0xfff00 };
    const ring1 = r.drv.setupQueue(0, { num: 8, addrs: old });
    r.drv.driverOk();
    const h = ring1.add([{ addr: BUF, len: 16, write: true }]);
    r.drv.notify(0);
    expect(ring1.takeUsed()).toEqual([{ id: h, len: 16 }]);
    // VIRTIO 1.2 §4.2.2.2: the driver stops using the queue by writing 0 to QueueReady.
    r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    r.mmio.write(VIRTIO_MMIO_QUEUE_READY, 4, 0);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
    // Re-configure with a bigger size at a new place, then enable again.
    const addrs = modernAddrs(0x20000, 256);
    const ring2 = r.drv.setupQueue(0, { num: 256, addrs });
    expect(r.errors).toEqual([]);
    expect(r.rng.broken).toBe(false);
    expect(r.rng.requestq.num).toBe(256);
    expect([r.rng.requestq.desc, r.rng.requestq.avail, r.rng.requestq.used]).toEqual([addrs.desc, addrs.avail, addrs.used]);
    // As in QEMU, re-enabling without a reset keeps the device's ring indices (1 here), so the
    // driver continues from them.
    expect(r.rng.requestq.lastAvailIdx).toBe(1);
    ring2.setAvailIdx(1);
    ring2.lastUsedIdx = 1;
    const h2 = ring2.add([{ addr: BUF + 0x100, len: 16, write: true }]);
    r.drv.notify(0);
    expect(ring2.takeUsed()).toEqual([{ id: h2, len: 16 }]);
    expect(r.mem.view(BUF + 0x100, 16)).toEqual(new Stream().next(32).subarray(16));
  });
});

describe('scenario: reset in the middle of work, then re-initialisation', () => {
  for (const { legacy, name } of MODES) {
    it(`requests waiting on the rate limit are dropped by a reset (${name})`, () => {
      const clock = new VirtualClock();
      const r = bringUp(legacy, { rng: { clock, maxBytes: 32, periodMs: 1000 } });
      const stream = new Stream();
      const heads: number[] = [];
      for (let i = 0; i < 4; i++) heads.push(r.ring.add([{ addr: BUF + i * 16, len: 16, write: true }]));
      r.drv.notify(0);
      expect(r.ring.takeUsed()).toEqual([{ id: heads[0], len: 16 }, { id: heads[1], len: 16 }]);
      expect(r.mem.view(BUF, 32)).toEqual(stream.next(32));
      expect(r.drv.interruptStatus()).toBe(1);
      expect(r.rng.requestq.inuse).toBe(0);
      // Reset with two requests still available in the old ring.
      r.drv.reset();
      expect(r.drv.status()).toBe(0);
      expect(r.drv.interruptStatus()).toBe(0);
      expect(r.irqLevel()).toBe(false);
      expect(r.rng.guestFeatures).toBe(0n);
      expect(r.rng.requestq.desc).toBe(0);
      expect(r.rng.requestq.lastAvailIdx).toBe(0);
      expect(r.rng.requestq.usedIdx).toBe(0);
      if (!legacy) {
        r.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
        expect(r.mmio.read(VIRTIO_MMIO_QUEUE_READY, 4)).toBe(0);
      } else {
        expect(r.mmio.read(VIRTIO_MMIO_QUEUE_PFN, 4)).toBe(0);
      }
      // The period ends after the reset: the device must not touch the old ring.
      const oldUsed = r.mem.view(r.ring.addrs.used, 4 + 8 * 8)!.slice();
      clock.step(1_000_000_000);
      expect(r.mem.view(r.ring.addrs.used, 4 + 8 * 8)).toEqual(oldUsed);
      expect(r.mem.view(BUF + 32, 32)).toEqual(new Uint8Array(32));
      expect(r.rng.quotaRemaining).toBe(32);
      // Re-initialise at another address: indices start from 0, the quota is back.
      r.drv.init(0n);
      const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(0x20000, 8), base: 0x20000 });
      r.drv.driverOk();
      const h = ring.add([{ addr: BUF + 0x100, len: 16, write: true }]);
      r.drv.notify(0);
      expect(ring.takeUsed()).toEqual([{ id: h, len: 16 }]);
      expect(ring.usedIdx()).toBe(1);
      expect(r.mem.view(BUF + 0x100, 16)).toEqual(stream.next(16));
      expect(r.errors).toEqual([]);
    });

    it(`reset between FEATURES_OK/DRIVER and DRIVER_OK, repeated 20 times (${name})`, () => {
      const r = rngRig({ legacy });
      const stream = new Stream();
      for (let i = 0; i < 20; i++) {
        r.drv.init(i % 2 ? EVENT_IDX : INDIRECT);
        r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
        r.drv.reset();
      }
      r.drv.init(EVENT_IDX | INDIRECT);
      const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
      r.drv.driverOk();
      const h = ring.add([{ addr: BUF, len: 16, write: true }]);
      r.drv.notify(0);
      expect(ring.takeUsed()).toEqual([{ id: h, len: 16 }]);
      expect(r.mem.view(BUF, 16)).toEqual(stream.next(16));
    });
  }
});

describe('scenario: reset after an error caused by a bad queue size', () => {
  for (const { legacy, name } of MODES) {
    it(`QueueNum 3 with EVENT_IDX breaks the device; one reset makes it usable again (${name})`, () => {
      const r = rngRig({ legacy });
      r.drv.init(EVENT_IDX);
      r.drv.setupQueue(0, { num: 3, addrs: modernAddrs(RING, 3), base: RING });
      expect(r.errors).toEqual(['VQ 0: size 3 is not a power of two']);
      expect(r.rng.broken).toBe(true);
      r.drv.reset();
      expect(r.rng.broken).toBe(false);
      expect(r.errors).toEqual(['VQ 0: size 3 is not a power of two']);
      expect(r.drv.status()).toBe(0);
      r.drv.init(EVENT_IDX);
      const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
      r.drv.driverOk();
      const h = ring.add([{ addr: BUF, len: 16, write: true }]);
      r.drv.notify(0);
      expect(ring.takeUsed()).toEqual([{ id: h, len: 16 }]);
      expect(r.mem.view(BUF, 16)).toEqual(new Stream().next(16));
    });
  }
});

describe('scenario: notify before DRIVER_OK', () => {
  it('v2 modern: the kick does nothing; the DRIVER_OK status write itself serves the request', () => {
    const r = rngRig({ legacy: false });
    r.drv.init(0n);
    const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
    const h = ring.add([{ addr: BUF, len: 32, write: true }]);
    r.drv.notify(0);
    expect(ring.usedIdx()).toBe(0);
    expect(r.drv.interruptStatus()).toBe(0);
    expect(r.irqRaises()).toBe(0);
    expect(r.rng.started).toBe(false);
    expect(r.drv.status()).toBe(0xb);
    // QEMU's virtio_rng_set_status stores the status and calls virtio_rng_process.
    r.drv.driverOk();
    expect(ring.takeUsed()).toEqual([{ id: h, len: 32 }]);
    expect(r.mem.view(BUF, 32)).toEqual(new Stream().next(32));
    expect(r.irqRaises()).toBe(1);
    expect(r.drv.ackInterrupt()).toBe(1);
    // The next kick works as usual.
    const h2 = ring.add([{ addr: BUF + 64, len: 8, write: true }]);
    r.drv.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: h2, len: 8 }]);
    expect(r.irqRaises()).toBe(2);
  });

  it('v1 legacy: the early kick starts the device (start_on_kick) but rng still waits for DRIVER_OK', () => {
    const r = rngRig({ legacy: true });
    r.drv.init(0n);
    expect(r.rng.startOnKick).toBe(true);
    const ring = r.drv.setupQueue(0, { num: 8, base: RING });
    const h = ring.add([{ addr: BUF, len: 32, write: true }]);
    r.drv.notify(0);
    expect(ring.usedIdx()).toBe(0);
    expect(r.irqRaises()).toBe(0);
    // virtio_queue_notify: the handler ran, then start_on_kick marked the device started.
    expect(r.rng.started).toBe(true);
    expect(r.rng.startOnKick).toBe(false);
    expect(r.drv.status()).toBe(3);
    r.drv.driverOk();
    expect(ring.takeUsed()).toEqual([{ id: h, len: 32 }]);
    expect(r.mem.view(BUF, 32)).toEqual(new Stream().next(32));
    expect(r.irqRaises()).toBe(1);
  });

  for (const { legacy, name } of MODES) {
    it(`kicks of a queue without rings, of queue 1 and of queue 1023 do nothing (${name})`, () => {
      const r = rngRig({ legacy });
      r.drv.init(0n);
      r.drv.notify(0);
      r.drv.driverOk();
      r.drv.notify(0);
      r.drv.notify(1);
      r.drv.notify(1023);
      r.drv.notify(0xffff);
      expect(r.rng.broken).toBe(false);
      expect(r.drv.interruptStatus()).toBe(0);
      expect(r.errors).toEqual([]);
    });
  }
});

describe('scenario: the driver copes with a refused FEATURES_OK', () => {
  it('MmioDriver.init throws DriverError when FEATURES_OK does not stick', () => {
    const r = rngRig({ legacy: false });
    // virtio-rng never refuses; simulate a refusing device through its hook.
    (r.rng as unknown as { validateFeatures: () => boolean }).validateFeatures = () => false;
    expect(() => r.drv.init(0n)).toThrow(DriverError);
    expect(r.drv.status()).toBe(3);
    expect(r.mmio.read(VIRTIO_MMIO_INTERRUPT_STATUS, 4)).toBe(0);
    expect(r.mmio.read(VIRTIO_MMIO_QUEUE_NUM_MAX, 4)).toBe(1024);
  });
});
