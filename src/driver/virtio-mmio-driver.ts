/**
 * Guest-side virtio-mmio (VIRTIO 1.2 §4.2; what Linux's virtio_mmio.c does) over the async
 * `Machine`: version 1 (legacy: GuestPageSize, QueueNum/Align/PFN) and version 2 (modern:
 * QueueReady and 64-bit ring addresses). The async twin of the synchronous `MmioDriver`.
 *
 * On QEMU's microvm the transports sit at 0xfeb00000 + 0x200*i and are filled from the last one
 * downwards; empty ones answer with device id 0. `scanMmio` finds the populated ones.
 */
import {
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
  VIRTIO_MMIO_REGION_SIZE,
  VIRTIO_MMIO_STATUS,
  VIRTIO_MMIO_VENDOR_ID,
  VIRTIO_MMIO_VERSION,
  VIRT_MAGIC,
} from '../bus/virtio-mmio.js';
import type { RingAddresses } from '../vring/layout.js';
import type { GuestAllocator } from './alloc.js';
import type { Machine, QmpLike } from './machine.js';
import type { PackedVringDriver } from './packed-vring.js';
import { DriverError, VirtioTransportDriver, type QueueSetup } from './virtio-driver.js';
import type { VringDriver } from './vring.js';

/** First virtio-mmio transport on QEMU's microvm (`VIRTIO_MMIO_BASE` in hw/i386/microvm.c). */
export const MICROVM_MMIO_BASE = 0xfeb0_0000;

export interface MmioTransportInfo {
  index: number;
  addr: number;
  version: number;
  deviceId: number;
  vendorId: number;
}

/**
 * Probe transports at `base + stride*i` for i < `max`, stopping at the first window without the
 * magic value. Returns every transport found (empty ones have deviceId 0).
 */
export async function scanMmio(machine: Machine, opts: { base?: number; stride?: number; max?: number } = {}): Promise<MmioTransportInfo[]> {
  const base = opts.base ?? MICROVM_MMIO_BASE;
  const stride = opts.stride ?? VIRTIO_MMIO_REGION_SIZE;
  const max = opts.max ?? 32;
  const out: MmioTransportInfo[] = [];
  for (let i = 0; i < max; i++) {
    const addr = base + stride * i;
    const [magic, version, deviceId, vendorId] = await Promise.all([
      machine.readl(addr + VIRTIO_MMIO_MAGIC_VALUE),
      machine.readl(addr + VIRTIO_MMIO_VERSION),
      machine.readl(addr + VIRTIO_MMIO_DEVICE_ID),
      machine.readl(addr + VIRTIO_MMIO_VENDOR_ID),
    ]);
    if (magic !== VIRT_MAGIC) break;
    out.push({ index: i, addr, version, deviceId, vendorId });
  }
  return out;
}

/** The interrupt line microvm wires transport `index` to, as the intercepting IOAPIC reports it. */
export function microvmIrqLine(index: number, opts: { ioapic2?: boolean; acpi?: boolean } = {}): number {
  // hw/i386/microvm.c: with the second IOAPIC, GSI 24+i = its pin i; otherwise 16+i (or 5+i
  // without ACPI) on the first.
  if (opts.acpi === false) return 5 + index;
  if (opts.ioapic2 === false) return 16 + index;
  return index;
}

/**
 * The QOM path of microvm's second I/O APIC: it has no name of its own, it is the
 * `child<ioapic>` in `/machine/unattached` (QEMU 7.2 calls it `device[3]`).
 */
export async function findMicrovmIoapic2(qmp: QmpLike): Promise<string | undefined> {
  const list = (await qmp.execute('qom-list', { path: '/machine/unattached' })) as { name: string; type: string }[];
  const hit = list.find((e) => e.type === 'child<ioapic>');
  return hit ? `/machine/unattached/${hit.name}` : undefined;
}

export class VirtioMmioDriver extends VirtioTransportDriver {
  version = 0;
  vendorId = 0;

  constructor(readonly machine: Machine, readonly base: number, opts: { alloc?: GuestAllocator; pageSize?: number } = {}) {
    super();
    this.alloc = opts.alloc;
    this.pageSize = opts.pageSize ?? 4096;
  }
  readonly pageSize: number;

  get legacy(): boolean {
    return this.version === 1;
  }

  read(offset: number): Promise<number> {
    return this.machine.readl(this.base + offset);
  }
  write(offset: number, value: number): Promise<void> {
    return this.machine.writel(this.base + offset, value >>> 0);
  }

  /** Check magic and version, read the device and vendor ids. */
  async probe(): Promise<number> {
    const [magic, version, deviceId, vendorId] = await Promise.all([
      this.read(VIRTIO_MMIO_MAGIC_VALUE),
      this.read(VIRTIO_MMIO_VERSION),
      this.read(VIRTIO_MMIO_DEVICE_ID),
      this.read(VIRTIO_MMIO_VENDOR_ID),
    ]);
    if (magic !== VIRT_MAGIC) throw new DriverError(`no virtio-mmio magic at 0x${this.base.toString(16)} (0x${magic.toString(16)})`);
    if (version !== 1 && version !== 2) throw new DriverError(`unsupported virtio-mmio version ${version}`);
    this.version = version;
    this.deviceId = deviceId;
    this.vendorId = vendorId;
    return deviceId;
  }

  status(): Promise<number> {
    return this.read(VIRTIO_MMIO_STATUS);
  }
  setStatus(v: number): Promise<void> {
    return this.write(VIRTIO_MMIO_STATUS, v);
  }

  override async init(wanted: bigint): Promise<bigint> {
    if (this.version === 0) await this.probe();
    return super.init(wanted);
  }

  async readDeviceFeatures(): Promise<bigint> {
    await this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
    const hi = await this.read(VIRTIO_MMIO_DEVICE_FEATURES);
    await this.write(VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    const lo = await this.read(VIRTIO_MMIO_DEVICE_FEATURES);
    this.deviceFeatures = (BigInt(hi) << 32n) | BigInt(lo);
    return this.deviceFeatures;
  }

  async writeDriverFeatures(f: bigint): Promise<void> {
    await this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    await this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number((f >> 32n) & 0xffff_ffffn));
    await this.write(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    await this.write(VIRTIO_MMIO_DRIVER_FEATURES, Number(f & 0xffff_ffffn));
  }

  protected override async afterFeatures(): Promise<void> {
    if (this.legacy) await this.write(VIRTIO_MMIO_GUEST_PAGE_SIZE, this.pageSize);
  }

  async queueMax(index: number): Promise<number> {
    await this.write(VIRTIO_MMIO_QUEUE_SEL, index);
    return this.read(VIRTIO_MMIO_QUEUE_NUM_MAX);
  }

  async setupQueue(index: number, setup: QueueSetup = {}): Promise<VringDriver> {
    const max = await this.queueMax(index);
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const num = setup.num ?? max;
    if (num > max || num < 1) throw new DriverError(`bad queue size ${num} (max ${max})`);
    if (this.legacy) {
      const align = setup.align ?? 4096;
      const addrs = this.ringAddrs(num, setup, align);
      if (addrs.desc % this.pageSize !== 0) throw new DriverError('legacy ring base must be page aligned');
      const ring = await this.makeRing(index, num, addrs);
      await this.write(VIRTIO_MMIO_QUEUE_NUM, num);
      await this.write(VIRTIO_MMIO_QUEUE_ALIGN, align);
      await this.write(VIRTIO_MMIO_QUEUE_PFN, addrs.desc / this.pageSize);
      return ring;
    }
    const a = this.ringAddrs(num, setup);
    const ring = await this.makeRing(index, num, a);
    await this.enableModernQueue(num, a);
    return ring;
  }

  async setupPackedQueue(index: number, setup: QueueSetup = {}): Promise<PackedVringDriver> {
    if (this.version === 0) await this.probe();
    const max = await this.queueMax(index);
    const num = this.packedQueueNum(index, max, setup);
    const a = this.packedRingAddrs(num, setup);
    const ring = await this.makePackedRing(index, num, a);
    await this.enableModernQueue(num, a);
    return ring;
  }

  /**
   * QueueNum, the three addresses (split: desc/avail/used; packed: ring/driver area/device
   * area), then QueueReady, on the queue `queueMax` selected.
   */
  private async enableModernQueue(num: number, a: RingAddresses): Promise<void> {
    const hi = (x: number): number => Math.floor(x / 2 ** 32);
    await this.write(VIRTIO_MMIO_QUEUE_NUM, num);
    await Promise.all([
      this.write(VIRTIO_MMIO_QUEUE_DESC_LOW, a.desc >>> 0),
      this.write(VIRTIO_MMIO_QUEUE_DESC_HIGH, hi(a.desc)),
      this.write(VIRTIO_MMIO_QUEUE_AVAIL_LOW, a.avail >>> 0),
      this.write(VIRTIO_MMIO_QUEUE_AVAIL_HIGH, hi(a.avail)),
      this.write(VIRTIO_MMIO_QUEUE_USED_LOW, a.used >>> 0),
      this.write(VIRTIO_MMIO_QUEUE_USED_HIGH, hi(a.used)),
    ]);
    await this.write(VIRTIO_MMIO_QUEUE_READY, 1);
  }

  async notify(index: number): Promise<void> {
    await this.write(VIRTIO_MMIO_QUEUE_NOTIFY, index);
    this.noteKicked(index);
  }

  interruptStatus(): Promise<number> {
    return this.read(VIRTIO_MMIO_INTERRUPT_STATUS);
  }

  /** Read and acknowledge the interrupt status; returns what was pending. */
  async ackInterrupt(): Promise<number> {
    const isr = await this.interruptStatus();
    if (isr) await this.write(VIRTIO_MMIO_INTERRUPT_ACK, isr);
    return isr;
  }

  configGeneration(): Promise<number> {
    return this.read(VIRTIO_MMIO_CONFIG_GENERATION);
  }

  async configRead(offset: number, size: 1 | 2 | 4): Promise<number> {
    const a = this.base + VIRTIO_MMIO_CONFIG + offset;
    return size === 1 ? this.machine.readb(a) : size === 2 ? this.machine.readw(a) : this.machine.readl(a);
  }

  async configWrite(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    const a = this.base + VIRTIO_MMIO_CONFIG + offset;
    if (size === 1) await this.machine.writeb(a, value);
    else if (size === 2) await this.machine.writew(a, value);
    else await this.machine.writel(a, value);
  }
}
