// VirtIODevice, the core every device type shares (QEMU's hw/virtio/virtio.c): status machine,
// feature negotiation, virtioError, reset, configuration space and device endianness.
import { describe, expect, it } from 'vitest';
import type { VirtioBus } from '../../src/bus/virtio-bus.js';
import { VirtioMmioTransport, VIRTIO_MMIO_CONFIG, VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_STATUS } from '../../src/bus/virtio-mmio.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { TraceEvent } from '../../src/trace/trace.js';
import {
  bit,
  DeviceEndian,
  VIRTIO_COMMON_FEATURES,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FAILED,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../../src/virtio/constants.js';
import { VirtIODevice, type VirtIODeviceOptions } from '../../src/virtio/device.js';
import { VIRTIO_NO_VECTOR, VRING_AVAIL_F_NO_INTERRUPT } from '../../src/vring/constants.js';
import type { VirtQueue } from '../../src/vring/virtqueue.js';

const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
const DRV = VIRTIO_CONFIG_S_DRIVER;
const FOK = VIRTIO_CONFIG_S_FEATURES_OK;
const DOK = VIRTIO_CONFIG_S_DRIVER_OK;
const V1 = bit(VIRTIO_F_VERSION_1);
const OWN = bit(0) | bit(5);

type Throwing = 'handler' | 'status' | 'getConfig' | 'setConfig' | 'reset' | undefined;

/** A small device type: id 42, 8 bytes of config, two queues, two feature bits of its own. */
class TestDevice extends VirtIODevice {
  refuse = false;
  throwIn: Throwing;
  handled = 0;
  setConfigCalls = 0;
  getConfigCalls = 0;
  resetCalls = 0;
  featuresSeen: bigint[] = [];
  statusSeen: { newValue: number; oldValue: number }[] = [];
  readonly q0: VirtQueue;
  readonly q1: VirtQueue;

  constructor(opts: VirtIODeviceOptions) {
    super(42, 8, opts, 'test-dev', OWN);
    this.config.set([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    this.q0 = this.addQueue(16, () => {
      this.handled++;
      if (this.throwIn === 'handler') throw new Error('boom');
    });
    this.q1 = this.addQueue(4);
  }

  protected override validateFeatures(): boolean {
    return !this.refuse;
  }
  protected override setFeaturesHook(features: bigint): void {
    this.featuresSeen.push(features);
  }
  protected override setStatusHook(status: number): void {
    this.statusSeen.push({ newValue: status, oldValue: this.status });
    if (this.throwIn === 'status') throw new Error('status hook failed');
  }
  protected override getConfig(_config: Uint8Array): void {
    this.getConfigCalls++;
    if (this.throwIn === 'getConfig') throw new Error('get');
  }
  protected override setConfig(_config: Uint8Array): void {
    this.setConfigCalls++;
    if (this.throwIn === 'setConfig') throw new Error('set');
  }
  protected override resetDevice(): void {
    this.resetCalls++;
    if (this.throwIn === 'reset') throw new Error('reset hook failed');
  }
}

class FakeBus implements VirtioBus {
  readonly name = 'fake-bus';
  readonly hasVariableVringAlignment = true;
  readonly notifies: number[] = [];
  constructor(readonly modern: boolean) {}
  notify(vector: number): void {
    this.notifies.push(vector);
  }
  prePlugged(f: bigint): bigint {
    return this.modern ? f | V1 : f;
  }
}

function make(opts: { modern?: boolean; guestBigEndian?: boolean; disabledFeatures?: bigint } = {}) {
  const memory = GuestMemory.ofSize(1 << 16);
  const errors: string[] = [];
  const trace: TraceEvent[] = [];
  const dev = new TestDevice({
    memory,
    guestBigEndian: opts.guestBigEndian,
    disabledFeatures: opts.disabledFeatures,
    onError: (m) => errors.push(m),
    tracer: (e) => trace.push(e),
  });
  const bus = new FakeBus(opts.modern ?? true);
  dev.plug(bus);
  return { dev, bus, memory, errors, trace };
}

/** Drive a device to DRIVER_OK with `features`, and give queue 0 rings. */
function running(opts: { modern?: boolean; features?: bigint } = {}) {
  const t = make(opts);
  const modern = opts.modern ?? true;
  t.dev.setStatus(ACK);
  t.dev.setStatus(ACK | DRV);
  expect(t.dev.setFeatures((opts.features ?? 0n) | (modern ? V1 : 0n))).toBe(true);
  if (modern) expect(t.dev.setStatus(ACK | DRV | FOK)).toBe(true);
  t.dev.q0.setRings(0x1000, 0x2000, 0x3000);
  t.dev.setStatus(ACK | DRV | (modern ? FOK : 0) | DOK);
  return t;
}

describe('VirtIODevice: construction and plugging', () => {
  it('starts with everything at zero and offers the common features plus its own', () => {
    const { dev } = make();
    expect(dev.deviceId).toBe(42);
    expect(dev.name).toBe('test-dev');
    expect(dev.status).toBe(0);
    expect(dev.isr).toBe(0);
    expect(dev.queueSel).toBe(0);
    expect(dev.guestFeatures).toBe(0n);
    expect(dev.generation).toBe(0);
    expect(dev.broken).toBe(false);
    expect(dev.started).toBe(false);
    expect(dev.configVector).toBe(VIRTIO_NO_VECTOR);
    expect(dev.configLen).toBe(8);
    expect(dev.vq.length).toBe(2);
    expect(dev.queueNum(0)).toBe(16);
    expect(dev.queueNum(1)).toBe(4);
    expect(dev.queueNum(2)).toBe(0);
    expect(dev.getQueue(-1)).toBeUndefined();
    // 24, 27, 28, 29, 40 (QEMU 7.2's common set), the device's 0 and 5, VERSION_1 from the bus.
    expect(VIRTIO_COMMON_FEATURES).toBe(0x100_3900_0000n);
    expect(dev.hostFeatures).toBe(0x101_3900_0021n);
    expect(dev.hostHasFeature(VIRTIO_F_VERSION_1)).toBe(true);
  });

  it('a legacy bus adds no VERSION_1; disabledFeatures withdraws bits', () => {
    expect(make({ modern: false }).dev.hostFeatures).toBe(0x100_3900_0021n);
    const { dev } = make({ disabledFeatures: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) });
    expect(dev.hostFeatures).toBe(0x101_0900_0021n);
  });

  it('cannot be plugged into a second bus', () => {
    const { dev } = make();
    expect(() => dev.plug(new FakeBus(true))).toThrow(/already plugged/);
  });
});

describe('VirtIODevice: status machine', () => {
  it('ACK, DRIVER, FEATURES_OK, DRIVER_OK, then FAILED', () => {
    const { dev, trace } = make();
    expect(dev.setStatus(ACK)).toBe(true);
    expect(dev.status).toBe(1);
    expect(dev.setStatus(ACK | DRV)).toBe(true);
    expect(dev.status).toBe(3);
    expect(dev.setFeatures(V1 | bit(0))).toBe(true);
    expect(dev.setStatus(ACK | DRV | FOK)).toBe(true);
    expect(dev.status).toBe(0xb);
    expect(dev.started).toBe(false);
    expect(dev.setStatus(ACK | DRV | FOK | DOK)).toBe(true);
    expect(dev.status).toBe(0xf);
    expect(dev.started).toBe(true);
    expect(dev.setStatus(0xf | VIRTIO_CONFIG_S_FAILED)).toBe(true);
    expect(dev.status).toBe(0x8f);
    // The hook sees the new value while `status` still holds the old one (QEMU's set_status).
    expect(dev.statusSeen).toEqual([
      { newValue: 1, oldValue: 0 },
      { newValue: 3, oldValue: 1 },
      { newValue: 0xb, oldValue: 3 },
      { newValue: 0xf, oldValue: 0xb },
      { newValue: 0x8f, oldValue: 0xf },
    ]);
    expect(trace.filter((e) => e.type === 'virtio_set_status').map((e) => (e as { value: number }).value)).toEqual([1, 3, 0xb, 0xf, 0x8f]);
  });

  it('only the low 8 bits are kept; dropping DRIVER_OK stops the device', () => {
    const { dev } = running();
    dev.setStatus(0x1ff);
    expect(dev.status).toBe(0xff);
    dev.setStatus(ACK | DRV | FOK);
    expect(dev.started).toBe(false);
  });

  it('FEATURES_OK refused by validateFeatures leaves the whole status unchanged', () => {
    const { dev, trace } = make();
    dev.refuse = true;
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1 | bit(5));
    expect(dev.setStatus(ACK | DRV | FOK)).toBe(false);
    expect(dev.status).toBe(ACK | DRV);
    // Even DRIVER_OK in the same write is refused with it.
    expect(dev.setStatus(ACK | DRV | FOK | DOK)).toBe(false);
    expect(dev.status).toBe(ACK | DRV);
    expect(dev.started).toBe(false);
    expect(dev.statusSeen).toEqual([{ newValue: 3, oldValue: 0 }]);
    expect(trace.some((e) => e.type === 'virtio_features_ok_refused' && e.features === (V1 | bit(5)))).toBe(true);
    // Once the device accepts, it sticks.
    dev.refuse = false;
    expect(dev.setStatus(ACK | DRV | FOK)).toBe(true);
    expect(dev.status).toBe(0xb);
  });

  it('without VERSION_1 validateFeatures is not consulted (QEMU)', () => {
    const { dev } = make({ modern: false });
    dev.refuse = true;
    dev.setFeatures(bit(0));
    expect(dev.setStatus(ACK | DRV | FOK)).toBe(true);
    expect(dev.status).toBe(0xb);
  });

  it('a refusing device through virtio-mmio v2: Status reads back without FEATURES_OK', () => {
    const memory = GuestMemory.ofSize(1 << 16);
    const dev = new TestDevice({ memory });
    const mmio = new VirtioMmioTransport(dev, { legacy: false });
    dev.refuse = true;
    mmio.write(VIRTIO_MMIO_STATUS, 4, 3);
    mmio.write(0x024, 4, 1);
    mmio.write(0x020, 4, 1);
    mmio.write(VIRTIO_MMIO_STATUS, 4, 0xb);
    expect(mmio.read(VIRTIO_MMIO_STATUS, 4)).toBe(3);
    // The features were applied before the refusal, as in QEMU's virtio_mmio_write.
    expect(dev.guestFeatures).toBe(V1);
  });
});

describe('VirtIODevice: feature negotiation', () => {
  it('setFeatures accepts offered bits and reports them to the hook', () => {
    const { dev } = make();
    expect(dev.setFeatures(V1 | bit(0) | bit(VIRTIO_RING_F_EVENT_IDX))).toBe(true);
    expect(dev.guestFeatures).toBe(V1 | bit(0) | bit(VIRTIO_RING_F_EVENT_IDX));
    expect(dev.hasFeature(0)).toBe(true);
    expect(dev.hasFeature(5)).toBe(false);
    expect(dev.featuresSeen).toEqual([V1 | bit(0) | bit(VIRTIO_RING_F_EVENT_IDX)]);
    expect(dev.q0.eventIdx).toBe(true);
    expect(dev.q0.indirectDesc).toBe(false);
  });

  it('bits not offered are dropped and setFeatures returns false', () => {
    const { dev } = make();
    expect(dev.setFeatures(V1 | bit(1) | bit(7) | bit(63))).toBe(false);
    expect(dev.guestFeatures).toBe(V1);
    expect(dev.setFeatures(-1n)).toBe(false);
    expect(dev.guestFeatures).toBe(dev.hostFeatures);
    expect(dev.setFeatures(1n << 64n)).toBe(true);
    expect(dev.guestFeatures).toBe(0n);
  });

  it('feature writes after FEATURES_OK are ignored', () => {
    const { dev } = make();
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1 | bit(0));
    dev.setStatus(ACK | DRV | FOK);
    expect(dev.setFeatures(V1 | bit(5))).toBe(false);
    expect(dev.guestFeatures).toBe(V1 | bit(0));
    dev.setStatus(ACK | DRV | FOK | DOK);
    expect(dev.setFeatures(0n)).toBe(false);
    expect(dev.guestFeatures).toBe(V1 | bit(0));
    expect(dev.featuresSeen).toEqual([V1 | bit(0)]);
  });

  it('legacy: accepted features arm start_on_kick; the first kick starts the device', () => {
    const { dev } = make({ modern: false });
    dev.setStatus(ACK | DRV);
    expect(dev.setFeatures(bit(0))).toBe(true);
    expect(dev.startOnKick).toBe(true);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    dev.queueNotify(0);
    expect(dev.handled).toBe(1);
    expect(dev.started).toBe(true);
    expect(dev.startOnKick).toBe(false);
    // A refused (partly bad) write does not arm it.
    const t2 = make({ modern: false });
    expect(t2.dev.setFeatures(bit(7))).toBe(false);
    expect(t2.dev.startOnKick).toBe(false);
  });

  it('modern: features never arm start_on_kick', () => {
    const { dev } = make();
    dev.setFeatures(V1);
    expect(dev.startOnKick).toBe(false);
  });
});

describe('VirtIODevice: virtioError', () => {
  it('VERSION_1 after DRIVER_OK: NEEDS_RESET, ISR 3, configuration interrupt, generation bump', () => {
    const { dev, bus, errors, trace } = running();
    bus.notifies.length = 0;
    dev.virtioError('something bad');
    expect(dev.status).toBe(0xf | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.isr).toBe(3);
    expect(dev.generation).toBe(1);
    expect(bus.notifies).toEqual([VIRTIO_NO_VECTOR]);
    expect(dev.broken).toBe(true);
    expect(dev.lastError).toBe('something bad');
    expect(errors).toEqual(['something bad']);
    expect(trace.filter((e) => e.type === 'virtio_error')).toEqual([{ type: 'virtio_error', device: 'test-dev', message: 'something bad' }]);
    expect(trace.filter((e) => e.type === 'virtio_notify_config')).toEqual([{ type: 'virtio_notify_config', device: 'test-dev', vector: VIRTIO_NO_VECTOR }]);
  });

  it('VERSION_1 before DRIVER_OK: NEEDS_RESET only (virtio_notify_config needs DRIVER_OK)', () => {
    const { dev, bus } = make();
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1);
    dev.setStatus(ACK | DRV | FOK);
    dev.virtioError('early');
    expect(dev.status).toBe(0xb | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.isr).toBe(0);
    expect(dev.generation).toBe(0);
    expect(bus.notifies).toEqual([]);
    expect(dev.broken).toBe(true);
  });

  it('VERSION_1: status writes after the error keep NEEDS_RESET until reset (#27)', () => {
    const { dev } = make();
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1);
    dev.setStatus(ACK | DRV | FOK);
    dev.virtioError('queue did not map');
    // The driver does not look and goes on: DRIVER_OK must not hide that the device is stopped.
    dev.setStatus(ACK | DRV | FOK | DOK);
    expect(dev.status).toBe(ACK | DRV | FOK | DOK | VIRTIO_CONFIG_S_NEEDS_RESET);
    dev.setStatus(ACK | DRV);
    expect(dev.status).toBe(ACK | DRV | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.broken).toBe(true);
    // Writing 0 is the transport's cue to reset (QEMU's virtio_reset): 0 is stored as written.
    dev.setStatus(0);
    expect(dev.status).toBe(0);
    dev.reset();
    expect(dev.broken).toBe(false);
    dev.setStatus(ACK);
    expect(dev.status).toBe(ACK);
  });

  it('legacy: broken only, no status bit, no interrupt', () => {
    const { dev, bus } = running({ modern: false });
    bus.notifies.length = 0;
    dev.virtioError('legacy trouble');
    expect(dev.status).toBe(ACK | DRV | DOK);
    expect(dev.isr).toBe(0);
    expect(dev.generation).toBe(0);
    expect(bus.notifies).toEqual([]);
    expect(dev.broken).toBe(true);
    expect(dev.lastError).toBe('legacy trouble');
  });

  it('processing stops until reset: no handler, no interrupts; reset brings it back', () => {
    const { dev, bus } = running();
    dev.queueNotify(0);
    expect(dev.handled).toBe(1);
    dev.virtioError('stop');
    bus.notifies.length = 0;
    dev.queueNotify(0);
    dev.queueNotify(0);
    expect(dev.handled).toBe(1);
    expect(dev.processingStopped).toBe(true);
    expect(dev.q0.pop()).toBeNull();
    // A used-buffer notification sets the ISR bit (as QEMU's virtio_irq) but reaches no bus.
    dev.notify(dev.q0);
    dev.updateIrq();
    expect(bus.notifies).toEqual([]);
    dev.reset();
    expect(dev.broken).toBe(false);
    expect(bus.notifies).toEqual([VIRTIO_NO_VECTOR]);
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1);
    dev.setStatus(ACK | DRV | FOK | DOK);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    dev.queueNotify(0);
    expect(dev.handled).toBe(2);
  });

  it('a throwing queue handler becomes virtioError; nothing escapes queueNotify', () => {
    const { dev, errors } = running();
    dev.throwIn = 'handler';
    expect(() => dev.queueNotify(0)).not.toThrow();
    expect(errors).toEqual(['internal error in test-dev: boom']);
    expect(dev.broken).toBe(true);
    expect(dev.status).toBe(0xf | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(dev.isr).toBe(3);
    // No second call while broken.
    dev.queueNotify(0);
    expect(dev.handled).toBe(1);
  });

  it('a throwing handler behind virtio-mmio does not reach the guest\'s register write', () => {
    const memory = GuestMemory.ofSize(1 << 16);
    const errors: string[] = [];
    const dev = new TestDevice({ memory, onError: (m) => errors.push(m) });
    let level = false;
    const mmio = new VirtioMmioTransport(dev, { legacy: false, irq: (l) => (level = l) });
    dev.setStatus(ACK | DRV);
    dev.setFeatures(V1);
    dev.setStatus(ACK | DRV | FOK | DOK);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    dev.throwIn = 'handler';
    expect(() => mmio.write(VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0)).not.toThrow();
    expect(errors).toEqual(['internal error in test-dev: boom']);
    expect(mmio.read(VIRTIO_MMIO_STATUS, 4)).toBe(0x4f);
    expect(level).toBe(true);
  });

  it('other throwing hooks are contained too', () => {
    const t = running();
    t.dev.throwIn = 'getConfig';
    expect(t.dev.configRead(0, 1, false)).toBe(0x11);
    expect(t.errors).toEqual(['internal error in test-dev: get']);

    const s = running();
    s.dev.throwIn = 'setConfig';
    expect(() => s.dev.configWrite(0, 1, 0x99, false)).not.toThrow();
    expect(s.dev.config[0]).toBe(0x99);
    expect(s.errors).toEqual(['internal error in test-dev: set']);

    // A status hook that throws: the status written is stored, and the device, now broken, keeps
    // NEEDS_RESET in it (QEMU would store the value alone: docs/qemu-differences.md #27).
    const u = running();
    u.dev.throwIn = 'status';
    expect(u.dev.setStatus(0xf | VIRTIO_CONFIG_S_FAILED)).toBe(true);
    expect(u.dev.status).toBe(0x8f | VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(u.dev.broken).toBe(true);
    expect(u.errors).toEqual(['internal error in test-dev: status hook failed']);

    // A reset hook that throws: the reset still completes, and clears `broken`.
    const v = running();
    v.dev.throwIn = 'reset';
    expect(() => v.dev.reset()).not.toThrow();
    expect(v.errors).toEqual(['internal error in test-dev: reset hook failed']);
    expect(v.dev.broken).toBe(false);
    expect(v.dev.status).toBe(0);
  });
});

describe('VirtIODevice: reset', () => {
  it('clears status, features, ISR, queues (back to numDefault), queueSel and broken', () => {
    const { dev, bus } = running({ features: bit(VIRTIO_RING_F_EVENT_IDX) });
    dev.q0.setNum(4);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    dev.q1.setNum(2);
    dev.q1.setRings(0x4000, 0x5000, 0x6000);
    dev.q0.vector = 3;
    dev.queueSel = 1;
    dev.configVector = 7;
    dev.setIsr(1);
    dev.virtioError('dirty');
    const gen0 = dev.q0.generation;
    bus.notifies.length = 0;
    dev.reset();
    expect(dev.status).toBe(0);
    expect(dev.guestFeatures).toBe(0n);
    expect(dev.isr).toBe(0);
    expect(dev.queueSel).toBe(0);
    expect(dev.broken).toBe(false);
    expect(dev.started).toBe(false);
    expect(dev.startOnKick).toBe(false);
    expect(dev.disabled).toBe(false);
    expect(dev.configVector).toBe(VIRTIO_NO_VECTOR);
    expect(dev.resetCalls).toBe(1);
    for (const [q, n] of [[dev.q0, 16], [dev.q1, 4]] as const) {
      expect(q.num).toBe(n);
      expect([q.desc, q.avail, q.used]).toEqual([0, 0, 0]);
      expect([q.lastAvailIdx, q.shadowAvailIdx, q.usedIdx, q.inuse]).toEqual([0, 0, 0, 0]);
      expect(q.vector).toBe(VIRTIO_NO_VECTOR);
      expect(q.isMapped).toBe(false);
      expect(q.eventIdx).toBe(false);
      expect(q.signalledUsedValid).toBe(false);
    }
    expect(dev.q0.generation).toBe(gen0 + 1);
    // The interrupt line is re-evaluated with the ISR at 0.
    expect(bus.notifies).toEqual([VIRTIO_NO_VECTOR]);
    // What reset does not touch: offered features, configuration bytes and the generation.
    expect(dev.hostFeatures).toBe(0x101_3900_0021n);
    expect(Array.from(dev.config)).toEqual([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    expect(dev.generation).toBe(1);
  });

  it('a reset after an error from a bad ring geometry leaves the device working (no re-check of old rings)', () => {
    const { dev, errors } = running({ features: bit(VIRTIO_RING_F_EVENT_IDX) });
    dev.q0.setNum(3);
    expect(dev.q0.isMapped).toBe(false);
    expect(errors).toEqual([]);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    expect(errors).toEqual(['VQ 0: size 3 is not a power of two']);
    expect(dev.broken).toBe(true);
    dev.reset();
    expect(dev.broken).toBe(false);
    expect(errors).toEqual(['VQ 0: size 3 is not a power of two']);
  });
});

describe('VirtIODevice: configuration space', () => {
  it('out-of-range reads return all ones; out-of-range writes are ignored', () => {
    const { dev } = make();
    for (const legacy of [false, true]) {
      expect(dev.configRead(8, 1, legacy)).toBe(0xff);
      expect(dev.configRead(7, 2, legacy)).toBe(0xffff);
      expect(dev.configRead(6, 4, legacy)).toBe(0xffffffff);
      expect(dev.configRead(5, 4, legacy)).toBe(0xffffffff);
      expect(dev.configRead(-1, 1, legacy)).toBe(0xff);
      expect(dev.configRead(0.5, 1, legacy)).toBe(0xff);
      expect(dev.configRead(0x7fffffff, 4, legacy)).toBe(0xffffffff);
      dev.configWrite(6, 4, 0, legacy);
      dev.configWrite(8, 1, 0, legacy);
      dev.configWrite(-2, 2, 0, legacy);
    }
    expect(dev.getConfigCalls).toBe(0);
    expect(dev.setConfigCalls).toBe(0);
    expect(Array.from(dev.config)).toEqual([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    // The last byte and the last word are in range.
    expect(dev.configRead(7, 1, false)).toBe(0x88);
    expect(dev.configRead(4, 4, false)).toBe(0x88776655);
  });

  it('modern accesses are little-endian; legacy ones follow the guest (little-endian guest)', () => {
    const { dev } = make();
    expect(dev.configRead(0, 4, false)).toBe(0x44332211);
    expect(dev.configRead(0, 4, true)).toBe(0x44332211);
    expect(dev.configRead(2, 2, true)).toBe(0x4433);
    expect(dev.getConfigCalls).toBe(3);
    dev.configWrite(4, 4, 0xaabbccdd, true);
    expect(Array.from(dev.config.subarray(4))).toEqual([0xdd, 0xcc, 0xbb, 0xaa]);
    expect(dev.setConfigCalls).toBe(1);
  });

  it('legacy accesses on a big-endian guest are big-endian; modern ones stay little-endian', () => {
    const { dev } = make({ guestBigEndian: true });
    expect(dev.configRead(0, 4, true)).toBe(0x11223344);
    expect(dev.configRead(0, 4, false)).toBe(0x44332211);
    expect(dev.configRead(2, 2, true)).toBe(0x3344);
    expect(dev.configRead(2, 2, false)).toBe(0x4433);
    expect(dev.configRead(3, 1, true)).toBe(0x44);
    dev.configWrite(4, 4, 0xaabbccdd, true);
    expect(Array.from(dev.config.subarray(4))).toEqual([0xaa, 0xbb, 0xcc, 0xdd]);
    dev.configWrite(4, 2, 0x1234, false);
    expect(Array.from(dev.config.subarray(4))).toEqual([0x34, 0x12, 0xcc, 0xdd]);
    dev.configWrite(6, 2, 0x1234, true);
    expect(Array.from(dev.config.subarray(4))).toEqual([0x34, 0x12, 0x12, 0x34]);
  });

  it('through virtio-mmio: v1 on a big-endian guest reads config big-endian, v2 little-endian', () => {
    for (const legacy of [true, false]) {
      const memory = GuestMemory.ofSize(1 << 16);
      const dev = new TestDevice({ memory, guestBigEndian: true });
      const mmio = new VirtioMmioTransport(dev, { legacy });
      expect(mmio.read(VIRTIO_MMIO_CONFIG, 4)).toBe(legacy ? 0x11223344 : 0x44332211);
      expect(mmio.read(VIRTIO_MMIO_CONFIG + 6, 2)).toBe(legacy ? 0x7788 : 0x8877);
      expect(mmio.read(VIRTIO_MMIO_CONFIG + 5, 1)).toBe(0x66);
      expect(mmio.read(VIRTIO_MMIO_CONFIG + 8, 1)).toBe(0xff);
      mmio.write(VIRTIO_MMIO_CONFIG, 4, 0x01020304);
      expect(Array.from(dev.config.subarray(0, 4))).toEqual(legacy ? [1, 2, 3, 4] : [4, 3, 2, 1]);
      expect(mmio.read64(VIRTIO_MMIO_CONFIG)).toBe(legacy ? 0x55667788_01020304n : 0x88776655_01020304n);
    }
  });
});

describe('VirtIODevice: device endianness', () => {
  it('little-endian guest: never big-endian', () => {
    const { dev } = make({ modern: false });
    expect(dev.deviceEndian).toBe(DeviceEndian.LITTLE);
    expect(dev.isBigEndian()).toBe(false);
    expect(dev.q0.le).toBe(true);
  });

  it('big-endian guest: big-endian until VERSION_1 is negotiated, and again after reset', () => {
    const { dev } = make({ guestBigEndian: true });
    expect(dev.guestBigEndian).toBe(true);
    expect(dev.deviceEndian).toBe(DeviceEndian.BIG);
    expect(dev.isBigEndian()).toBe(true);
    expect(dev.q0.le).toBe(false);
    dev.setFeatures(V1);
    expect(dev.isBigEndian()).toBe(false);
    expect(dev.q0.le).toBe(true);
    expect(dev.q1.le).toBe(true);
    dev.deviceEndian = DeviceEndian.LITTLE;
    dev.reset();
    expect(dev.deviceEndian).toBe(DeviceEndian.BIG);
    expect(dev.isBigEndian()).toBe(true);
    expect(dev.q0.le).toBe(false);
  });
});

describe('VirtIODevice: interrupts and notifications', () => {
  it('notify: ISR bit 0 and the queue vector, unless the driver suppressed it', () => {
    const { dev, bus, memory, trace } = running();
    bus.notifies.length = 0;
    dev.q0.vector = 2;
    dev.notify(dev.q0);
    expect(dev.isr).toBe(1);
    expect(bus.notifies).toEqual([2]);
    dev.isr = 0;
    memory.write16(0x2000, VRING_AVAIL_F_NO_INTERRUPT);
    dev.notify(dev.q0);
    expect(dev.isr).toBe(0);
    expect(bus.notifies).toEqual([2]);
    expect(trace.some((e) => e.type === 'virtio_notify_suppressed')).toBe(true);
  });

  it('notifyConfig needs DRIVER_OK; setIsr ORs bits', () => {
    const { dev, bus } = make();
    dev.notifyConfig();
    expect(dev.isr).toBe(0);
    expect(dev.generation).toBe(0);
    expect(bus.notifies).toEqual([]);
    dev.setIsr(1);
    dev.setIsr(2);
    expect(dev.isr).toBe(3);
  });

  it('a disabled device (transport) neither processes nor interrupts', () => {
    const { dev, bus } = running();
    bus.notifies.length = 0;
    dev.disabled = true;
    expect(dev.processingStopped).toBe(true);
    dev.notifyConfig();
    expect(bus.notifies).toEqual([]);
    expect(dev.q0.pop()).toBeNull();
  });

  it('queueNotify ignores queues without rings and queues the device lacks', () => {
    const { dev } = make();
    dev.queueNotify(0);
    dev.queueNotify(1);
    dev.queueNotify(2);
    dev.queueNotify(1023);
    dev.queueNotify(-1);
    expect(dev.handled).toBe(0);
    dev.q0.setRings(0x1000, 0x2000, 0x3000);
    dev.queueNotify(0);
    expect(dev.handled).toBe(1);
  });
});
