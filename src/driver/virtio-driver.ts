/**
 * What every async virtio transport driver (PCI modern/legacy, MMIO v1/v2) has in common: the
 * status/feature handshake of VIRTIO 1.2 §3.1, ring placement and the queue table. Subclasses
 * supply register access.
 */
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
import { legacyLayout, legacyRingSize, type RingAddresses } from '../vring/layout.js';
import type { GuestAllocator } from './alloc.js';
import { MachineError, poll, type Machine } from './machine.js';
import { DriverError } from './mmio-driver.js';
import { VIRTQ_PACKED_MAX_SIZE, packedLayout, packedRingSize } from './packed-ring.js';
import { PackedVringDriver } from './packed-vring.js';
import { VringDriver } from './vring.js';

export { DriverError } from './mmio-driver.js';

export interface QueueSetup {
  /** Queue size to program; defaults to the device's (PCI) or QueueNumMax (MMIO). */
  num?: number;
  /**
   * Modern: the three addresses. A packed ring puts its descriptor ring at `desc`, the driver
   * event area at `avail` and the device event area at `used`.
   */
  addrs?: RingAddresses;
  /**
   * Legacy: ring area base (page aligned). Ignored when `addrs` is given on a modern device.
   * Packed: where the contiguous `packedLayout` goes (16-byte aligned).
   */
  base?: number;
  /** Legacy MMIO: QueueAlign to program (default 4096). PCI legacy is always 4096. */
  align?: number;
}

export abstract class VirtioTransportDriver {
  abstract readonly machine: Machine;
  /** The legacy interface is in use (PCI legacy, MMIO version 1): no FEATURES_OK, PFN rings. */
  abstract readonly legacy: boolean;
  /** VIRTIO device id (4 for rng, ...). */
  deviceId = 0;
  /** Features the device offered (64 bits; legacy interfaces show only the low word). */
  deviceFeatures = 0n;
  /** Features negotiated. */
  features = 0n;
  readonly queues = new Map<number, VringDriver>();
  /** Queues set up as packed virtqueues (a queue index is in `queues` or here, never both). */
  readonly packedQueues = new Map<number, PackedVringDriver>();
  /** Where rings are placed when a set-up gives no address. */
  alloc: GuestAllocator | undefined;

  abstract status(): Promise<number>;
  abstract setStatus(v: number): Promise<void>;
  abstract readDeviceFeatures(): Promise<bigint>;
  abstract writeDriverFeatures(f: bigint): Promise<void>;
  /** Largest size of queue `index` (0: the queue does not exist). */
  abstract queueMax(index: number): Promise<number>;
  /** Program queue `index` and return the guest side of its ring. */
  abstract setupQueue(index: number, setup?: QueueSetup): Promise<VringDriver>;
  /**
   * Program queue `index` as a packed virtqueue (VIRTIO_F_RING_PACKED negotiated, modern
   * interface only) and return the guest side of its ring. `num` may be any size up to the
   * device's maximum, not only a power of two.
   */
  abstract setupPackedQueue(index: number, setup?: QueueSetup): Promise<PackedVringDriver>;
  /** Available-buffer notification for queue `index`. */
  abstract notify(index: number): Promise<void>;
  /** Read and acknowledge the interrupt status (PCI: ISR, read-to-clear; MMIO: status + ACK). */
  abstract ackInterrupt(): Promise<number>;
  /** Device-specific configuration (little-endian on every transport of an x86 guest). */
  abstract configRead(offset: number, size: 1 | 2 | 4): Promise<number>;
  abstract configWrite(offset: number, size: 1 | 2 | 4, value: number): Promise<void>;
  /** Hook between writing driver features and FEATURES_OK (MMIO v1 writes GuestPageSize). */
  protected async afterFeatures(): Promise<void> {}

  /** Write 0 to the status and wait until it reads back 0 (VIRTIO 1.2 §4.1.4.3.2). */
  async reset(): Promise<void> {
    await this.setStatus(0);
    await poll(this.machine, async () => (await this.status()) === 0, { timeoutMs: 1000, what: 'device status to read 0 after reset' });
    this.queues.clear();
    this.packedQueues.clear();
  }

  /**
   * Reset, ACKNOWLEDGE, DRIVER, negotiate `wanted ∩ offered` (plus VERSION_1 on a modern
   * interface) and, on a modern interface, set FEATURES_OK and check it stuck. Returns the
   * negotiated set.
   */
  async init(wanted: bigint): Promise<bigint> {
    await this.reset();
    await this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE);
    await this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    const offered = await this.readDeviceFeatures();
    let f = wanted & offered;
    if (!this.legacy) {
      if (!hasBit(offered, VIRTIO_F_VERSION_1)) throw new DriverError('modern interface without VERSION_1');
      f |= 1n << BigInt(VIRTIO_F_VERSION_1);
    }
    await this.writeDriverFeatures(f);
    this.features = f;
    await this.afterFeatures();
    if (!this.legacy) {
      await this.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
      if (!((await this.status()) & VIRTIO_CONFIG_S_FEATURES_OK)) throw new DriverError('device refused FEATURES_OK');
    }
    return f;
  }

  /** Set DRIVER_OK. */
  async driverOk(): Promise<void> {
    const base = this.legacy
      ? VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER
      : VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    await this.setStatus(base | VIRTIO_CONFIG_S_DRIVER_OK);
  }

  get eventIdx(): boolean {
    return hasBit(this.features, VIRTIO_RING_F_EVENT_IDX);
  }

  /**
   * Where a ring of `num` goes: `setup.addrs`, else the legacy single-area layout (4096 aligned)
   * at `setup.base` or at fresh pages from the allocator. The single-area layout is also a valid
   * modern layout, so every transport places its rings the same way.
   */
  protected ringAddrs(num: number, setup: QueueSetup, align = 4096): RingAddresses {
    if (setup.addrs && !this.legacy) return setup.addrs;
    let base = setup.base ?? (this.legacy ? setup.addrs?.desc : undefined);
    if (base === undefined) {
      if (!this.alloc) throw new DriverError('queue set-up needs addresses, a base, or an allocator');
      base = this.alloc.allocPages(legacyRingSize(num, align));
    }
    return legacyLayout(base, num, align);
  }

  protected async makeRing(index: number, num: number, addrs: RingAddresses): Promise<VringDriver> {
    const ring = await VringDriver.create({ machine: this.machine, num, addrs, eventIdx: this.eventIdx });
    this.packedQueues.delete(index);
    this.queues.set(index, ring);
    return ring;
  }

  /**
   * Refuse a packed set-up the device cannot honour, and pick the size: any `num` from 1 to the
   * queue's maximum (the packed layout has no power-of-two rule, VIRTIO 1.2 §2.8).
   */
  protected packedQueueNum(index: number, max: number, setup: QueueSetup): number {
    if (this.legacy) throw new DriverError('packed virtqueues need a modern interface (virtio-pci modern, virtio-mmio version 2): VIRTIO_F_RING_PACKED is feature bit 34');
    if (!hasBit(this.features, VIRTIO_F_RING_PACKED)) throw new DriverError('VIRTIO_F_RING_PACKED was not negotiated (ask for it in init)');
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const num = setup.num ?? max;
    if (!Number.isInteger(num) || num < 1 || num > max || num > VIRTQ_PACKED_MAX_SIZE) throw new DriverError(`bad packed queue size ${num} (max ${max})`);
    return num;
  }

  /**
   * Where a packed ring of `num` goes: `setup.addrs`, else the contiguous layout at `setup.base`
   * or in fresh memory from the allocator: the descriptors 16-byte aligned, so the event areas
   * after them are 4-byte aligned (VIRTIO 1.2 §2.8, "Structure Size and Alignment").
   */
  protected packedRingAddrs(num: number, setup: QueueSetup): RingAddresses {
    if (setup.addrs) return setup.addrs;
    let base = setup.base;
    if (base === undefined) {
      if (!this.alloc) throw new DriverError('queue set-up needs addresses, a base, or an allocator');
      base = this.alloc.alloc(packedRingSize(num), 16);
    }
    return packedLayout(base, num);
  }

  protected async makePackedRing(index: number, num: number, addrs: RingAddresses): Promise<PackedVringDriver> {
    const ring = await PackedVringDriver.create({ machine: this.machine, num, addrs, eventIdx: this.eventIdx });
    this.queues.delete(index);
    this.packedQueues.set(index, ring);
    return ring;
  }

  /** After an available-buffer notification: the ring's next kick decision starts here. */
  protected noteKicked(index: number): void {
    this.queues.get(index)?.kicked();
    this.packedQueues.get(index)?.kicked();
  }

  /** The ring of a queue set up earlier. */
  queue(index: number): VringDriver {
    const q = this.queues.get(index);
    if (!q) throw new MachineError(`queue ${index} is not set up`);
    return q;
  }

  /** The ring of a queue set up earlier as packed. */
  packedQueue(index: number): PackedVringDriver {
    const q = this.packedQueues.get(index);
    if (!q) throw new MachineError(`queue ${index} is not set up as a packed virtqueue`);
    return q;
  }
}
