import type { GuestMemory } from '../memory/guest-memory.js';
import {
  VIRTIO_MMIO_CONFIG,
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
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VERSION,
  VIRT_MAGIC,
} from '../bus/virtio-mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  hasBit,
} from '../virtio/constants.js';
import { legacyLayout, type RingAddresses } from '../vring/layout.js';
import { PackedRingDriver, VIRTQ_PACKED_MAX_SIZE, packedLayout } from './packed-ring.js';
import { SplitRingDriver } from './split-ring.js';

/** Synchronous register access to one virtio-mmio window (offsets inside the window). */
export interface MmioAccess {
  read(offset: number, size: number): number;
  write(offset: number, size: number, value: number): void;
}

export class DriverError extends Error {}

export interface MmioQueueSetup {
  /** Queue size to program; defaults to QueueNumMax. */
  num?: number;
  /**
   * Modern: the three addresses (packed: ring, driver event area, device event area). Legacy:
   * only `desc` is used, as the ring area base.
   */
  addrs?: RingAddresses;
  /** Legacy: ring area base (page aligned) when `addrs` is not given. Packed: where `packedLayout` goes. */
  base?: number;
  /** Legacy: QueueAlign to program (default 4096). */
  align?: number;
}

/**
 * The guest side of virtio-mmio (what Linux's virtio_mmio.c does), for scripted tests and the
 * demo: probe, reset, feature negotiation, queue set-up for version 1 and version 2, notify,
 * interrupt acknowledge and config access.
 */
export class MmioDriver {
  version = 0;
  deviceId = 0;
  /** Features the device offered (64 bits; legacy devices show only the low word). */
  deviceFeatures = 0n;
  /** Features negotiated. */
  features = 0n;
  readonly queues = new Map<number, SplitRingDriver>();
  /** Queues set up as packed virtqueues (a queue index is in `queues` or here, never both). */
  readonly packedQueues = new Map<number, PackedRingDriver>();

  constructor(readonly regs: MmioAccess, readonly memory: GuestMemory, readonly pageSize = 4096) {}

  get legacy(): boolean {
    return this.version === 1;
  }

  read(offset: number): number {
    return this.regs.read(offset, 4);
  }
  write(offset: number, value: number): void {
    this.regs.write(offset, 4, value >>> 0);
  }

  /** Check magic and version, read the device id. */
  probe(): number {
    if (this.read(VIRTIO_MMIO_MAGIC_VALUE) !== VIRT_MAGIC) throw new DriverError('bad magic value');
    this.version = this.read(VIRTIO_MMIO_VERSION);
    if (this.version !== 1 && this.version !== 2) throw new DriverError(`unsupported version ${this.version}`);
    this.deviceId = this.read(VIRTIO_MMIO_DEVICE_ID);
    return this.deviceId;
  }

  status(): number {
    return this.read(VIRTIO_MMIO_STATUS);
  }
  setStatus(v: number): void {
    this.write(VIRTIO_MMIO_STATUS, v);
  }
  reset(): void {
    this.setStatus(0);
    this.queues.clear();
    this.packedQueues.clear();
  }

  readDeviceFeatures(): bigint {
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const hi = this.read(VIRTIO_MMIO_DEVICE_FEATURES);
    this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const lo = this.read(VIRTIO_MMIO_DEVICE_FEATURES);
    this.deviceFeatures = (BigInt(hi) << 32n) | BigInt(lo);
    return this.deviceFeatures;
  }

  writeDriverFeatures(f: bigint): void {
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number((f >> 32n) & 0xffff_ffffn));
    this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(f & 0xffff_ffffn));
  }

  /**
   * Reset, acknowledge, negotiate `wanted ∩ offered` (plus VERSION_1 on a version 2 device) and,
   * for version 2, set FEATURES_OK and check it stuck. Returns the negotiated set.
   */
  init(wanted: bigint): bigint {
    this.probe();
    this.reset();
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const offered = this.readDeviceFeatures();
    let f = wanted & offered;
    if (!this.legacy) f |= offered & (1n << BigInt(VIRTIO_F_VERSION_1));
    this.writeDriverFeatures(f);
    this.features = f;
    if (!this.legacy) {
      this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
      if (!(this.status() & VIRTIO_CONFIG_S_FEATURES_OK)) throw new DriverError('device refused FEATURES_OK');
    } else {
      this.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, this.pageSize);
    }
    return f;
  }

  /** Set DRIVER_OK. */
  driverOk(): void {
    const base = this.legacy
      ? VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER
      : VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    this.setStatus(base | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  queueNumMax(index: number): number {
    this.write(VIRTIO_MMIO_QUEUE_SEL, index);
    return this.read(VIRTIO_MMIO_QUEUE_NUM_MAX);
  }

  /** Program queue `index` and return the guest-side ring for it. */
  setupQueue(index: number, setup: MmioQueueSetup): SplitRingDriver {
    this.write(VIRTIO_MMIO_QUEUE_SEL, index);
    const max = this.read(VIRTIO_MMIO_QUEUE_NUM_MAX);
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const num = setup.num ?? max;
    const eventIdx = hasBit(this.features, VIRTIO_RING_F_EVENT_IDX);
    const le = true;
    let ring: SplitRingDriver;
    if (this.legacy) {
      const align = setup.align ?? 4096;
      const base = setup.base ?? setup.addrs?.desc;
      if (base === undefined) throw new DriverError('legacy queue needs a base address');
      if (base % this.pageSize !== 0) throw new DriverError('legacy ring base must be page aligned');
      ring = new SplitRingDriver({ memory: this.memory, num, addrs: legacyLayout(base, num, align), le, eventIdx });
      this.write(VIRTIO_MMIO_QUEUE_NUM, num);
      this.write(VIRTIO_MMIO_QUEUE_ALIGN, align);
      this.write(VIRTIO_MMIO_QUEUE_PFN, base / this.pageSize);
    } else {
      if (!setup.addrs) throw new DriverError('modern queue needs addresses');
      ring = new SplitRingDriver({ memory: this.memory, num, addrs: setup.addrs, le, eventIdx });
      this.enableModernQueue(num, setup.addrs);
    }
    this.packedQueues.delete(index);
    this.queues.set(index, ring);
    return ring;
  }

  /**
   * Program queue `index` as a packed virtqueue (version 2 with VIRTIO_F_RING_PACKED negotiated)
   * at `setup.addrs` or in the contiguous `packedLayout` at `setup.base`; any size from 1 to
   * QueueNumMax.
   */
  setupPackedQueue(index: number, setup: MmioQueueSetup): PackedRingDriver {
    if (this.legacy) throw new DriverError('packed virtqueues need virtio-mmio version 2: VIRTIO_F_RING_PACKED is feature bit 34');
    if (!hasBit(this.features, VIRTIO_F_RING_PACKED)) throw new DriverError('VIRTIO_F_RING_PACKED was not negotiated (ask for it in init)');
    const max = this.queueNumMax(index);
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const num = setup.num ?? max;
    if (!Number.isInteger(num) || num < 1 || num > max || num > VIRTQ_PACKED_MAX_SIZE) throw new DriverError(`bad packed queue size ${num} (max ${max})`);
    let a = setup.addrs;
    if (!a) {
      if (setup.base === undefined) throw new DriverError('packed queue needs addresses or a base');
      a = packedLayout(setup.base, num);
    }
    const ring = new PackedRingDriver({ memory: this.memory, num, addrs: a, eventIdx: hasBit(this.features, VIRTIO_RING_F_EVENT_IDX) });
    this.enableModernQueue(num, a);
    this.queues.delete(index);
    this.packedQueues.set(index, ring);
    return ring;
  }

  /** Version 2: size, the three areas (split: desc/avail/used; packed: ring/driver/device), ready. */
  private enableModernQueue(num: number, a: { desc: number; avail: number; used: number }): void {
    this.write(VIRTIO_MMIO_QUEUE_NUM, num);
    this.write(VIRTIO_MMIO_QUEUE_DESC_LOW, a.desc % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, Math.floor(a.desc / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, a.avail % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, Math.floor(a.avail / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_USED_LOW, a.used % 2 ** 32);
    this.write(VIRTIO_MMIO_QUEUE_USED_HIGH, Math.floor(a.used / 2 ** 32));
    this.write(VIRTIO_MMIO_QUEUE_READY, 1);
  }

  notify(index: number): void {
    this.write(VIRTIO_MMIO_QUEUE_NOTIFY, index);
    this.packedQueues.get(index)?.kicked();
  }

  interruptStatus(): number {
    return this.read(VIRTIO_MMIO_INTERRUPT_STATUS);
  }

  /** Read and acknowledge the interrupt status; returns what was pending. */
  ackInterrupt(): number {
    const isr = this.interruptStatus();
    if (isr) this.write(VIRTIO_MMIO_INTERRUPT_ACK, isr);
    return isr;
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    return this.regs.read(VIRTIO_MMIO_CONFIG + offset, size);
  }
}
