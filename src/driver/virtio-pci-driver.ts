/**
 * Guest-side virtio-pci (VIRTIO 1.2 §4.1; QEMU 7.2 hw/virtio/virtio-pci.c; libqos
 * virtio-pci.c and virtio-pci-modern.c): the modern interface through the vendor capabilities,
 * the legacy interface in I/O BAR0, and transitional devices driven either way; MSI-X vectors
 * checked as libqos checks them.
 */
import { VIRTIO_PCI_VRING_ALIGN, VIRTIO_NO_VECTOR } from '../vring/constants.js';
import type { RingAddresses } from '../vring/layout.js';
import type { GuestAllocator } from './alloc.js';
import { MachineError, type Machine } from './machine.js';
import { PciRegs, type GuestBar, type GuestMsix, type GuestPciDevice } from './pci.js';
import type { PackedVringDriver } from './packed-vring.js';
import { DriverError, VirtioTransportDriver, type QueueSetup } from './virtio-driver.js';
import type { VringDriver } from './vring.js';

/** Vendor capability types (cfg_type). */
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;

/** Common configuration structure offsets (virtio_pci_common_cfg). */
export const VirtioPciCommon = {
  DFSELECT: 0x00,
  DF: 0x04,
  GFSELECT: 0x08,
  GF: 0x0c,
  MSIX: 0x10,
  NUMQ: 0x12,
  STATUS: 0x14,
  CFGGENERATION: 0x15,
  Q_SELECT: 0x16,
  Q_SIZE: 0x18,
  Q_MSIX: 0x1a,
  Q_ENABLE: 0x1c,
  Q_NOFF: 0x1e,
  Q_DESCLO: 0x20,
  Q_DESCHI: 0x24,
  Q_AVAILLO: 0x28,
  Q_AVAILHI: 0x2c,
  Q_USEDLO: 0x30,
  Q_USEDHI: 0x34,
  Q_NDATA: 0x38,
  Q_RESET: 0x3a,
} as const;

/** Legacy I/O BAR0 register offsets. */
export const VirtioPciLegacy = {
  HOST_FEATURES: 0x00,
  GUEST_FEATURES: 0x04,
  QUEUE_PFN: 0x08,
  QUEUE_NUM: 0x0c,
  QUEUE_SEL: 0x0e,
  QUEUE_NOTIFY: 0x10,
  STATUS: 0x12,
  ISR: 0x13,
  MSI_CONFIG_VECTOR: 0x14,
  MSI_QUEUE_VECTOR: 0x16,
} as const;

/** Legacy device config offset: 0x14, or 0x18 once MSI-X is enabled (VIRTIO_PCI_CONFIG_OFF). */
export function legacyConfigOffset(msixEnabled: boolean): number {
  return msixEnabled ? 0x18 : 0x14;
}

/** The data libqos programs into every MSI-X entry it uses. */
export const LIBQOS_MSIX_DATA = 0x12345678;

/** One `virtio_pci_cap` from config space. */
export interface VirtioPciCap {
  /** Config space offset of the capability. */
  cap: number;
  cfgType: number;
  bar: number;
  offset: number;
  length: number;
  /** Notify capability only. */
  notifyOffMultiplier?: number;
}

/** Every virtio vendor capability of `dev`, in list order (VIRTIO 1.2 §4.1.4). */
export async function readVirtioCaps(dev: GuestPciDevice): Promise<VirtioPciCap[]> {
  const out: VirtioPciCap[] = [];
  for (const c of await dev.capabilities()) {
    if (c.id !== PciRegs.CAP_ID_VNDR) continue;
    const [type, bar, offset, length] = await Promise.all([dev.readb(c.offset + 3), dev.readb(c.offset + 4), dev.readl(c.offset + 8), dev.readl(c.offset + 12)]);
    const cap: VirtioPciCap = { cap: c.offset, cfgType: type, bar, offset, length };
    if (type === VIRTIO_PCI_CAP_NOTIFY_CFG) cap.notifyOffMultiplier = await dev.readl(c.offset + 16);
    out.push(cap);
  }
  return out;
}

/** A register window: a BAR and an offset inside it. */
class Window {
  constructor(readonly bar: GuestBar, readonly base: number) {}
  readb(o: number): Promise<number> {
    return this.bar.readb(this.base + o);
  }
  readw(o: number): Promise<number> {
    return this.bar.readw(this.base + o);
  }
  readl(o: number): Promise<number> {
    return this.bar.readl(this.base + o);
  }
  writeb(o: number, v: number): Promise<void> {
    return this.bar.writeb(this.base + o, v);
  }
  writew(o: number, v: number): Promise<void> {
    return this.bar.writew(this.base + o, v);
  }
  writel(o: number, v: number): Promise<void> {
    return this.bar.writel(this.base + o, v);
  }
}

export type VirtioPciMode = 'modern' | 'legacy';

export interface VirtioPciOpenOptions {
  /** Interface to drive; default modern when the device has it, legacy otherwise. */
  mode?: VirtioPciMode;
  alloc?: GuestAllocator;
  /** Set I/O, memory and bus-master enable after mapping (default true). */
  enable?: boolean;
}

/** An MSI-X entry assigned the libqos way: a RAM slot receives `data` when it fires. */
export interface MsixSlot {
  entry: number;
  addr: number;
  data: number;
}

export class VirtioPciDriver extends VirtioTransportDriver {
  readonly machine: Machine;
  readonly legacy: boolean;
  /** The device has a legacy I/O BAR0 (legacy or transitional). */
  hasLegacyInterface = false;
  /** The device has the modern capabilities. */
  hasModernInterface = false;
  caps: VirtioPciCap[] = [];
  private common: Window | undefined;
  private notifyWin: Window | undefined;
  private isrWin: Window | undefined;
  private deviceWin: Window | undefined;
  private io: GuestBar | undefined;
  notifyOffMultiplier = 0;
  private readonly notifyOff = new Map<number, number>();
  /** MSI-X entries assigned with `msixSetupQueue` / `msixSetupConfig`. */
  readonly queueMsix = new Map<number, MsixSlot>();
  configMsix: MsixSlot | undefined;

  private constructor(readonly pci: GuestPciDevice, mode: VirtioPciMode) {
    super();
    this.machine = pci.machine;
    this.legacy = mode === 'legacy';
  }

  /** Find the device's interfaces, map the BARs they need and enable the function. */
  static async open(pci: GuestPciDevice, opts: VirtioPciOpenOptions = {}): Promise<VirtioPciDriver> {
    if (pci.ids.vendorId !== 0x1af4) throw new DriverError(`${pci}: not a virtio device`);
    const caps = await readVirtioCaps(pci);
    const bar0 = await pci.barInfo(0);
    const hasLegacy = bar0.kind === 'io' && bar0.size > 0;
    const hasModern = caps.some((c) => c.cfgType === VIRTIO_PCI_CAP_COMMON_CFG);
    const mode = opts.mode ?? (hasModern ? 'modern' : 'legacy');
    if (mode === 'modern' && !hasModern) throw new DriverError(`${pci}: no modern interface`);
    if (mode === 'legacy' && !hasLegacy) throw new DriverError(`${pci}: no legacy interface`);
    const d = new VirtioPciDriver(pci, mode);
    d.caps = caps;
    d.hasLegacyInterface = hasLegacy;
    d.hasModernInterface = hasModern;
    d.alloc = opts.alloc;
    // VIRTIO 1.2 §4.1.2: modern device ids are 0x1040 + type; transitional ones carry the type
    // in the subsystem id.
    d.deviceId = pci.ids.deviceId >= 0x1040 ? pci.ids.deviceId - 0x1040 : pci.ids.subsystemId;
    if (mode === 'legacy') {
      d.io = await pci.mapBar(0);
    } else {
      const first = (t: number): VirtioPciCap | undefined => caps.find((c) => c.cfgType === t);
      const win = async (c: VirtioPciCap | undefined): Promise<Window | undefined> => (c ? new Window(await pci.mapBar(c.bar), c.offset) : undefined);
      d.common = await win(first(VIRTIO_PCI_CAP_COMMON_CFG));
      const n = first(VIRTIO_PCI_CAP_NOTIFY_CFG);
      d.notifyWin = await win(n);
      d.notifyOffMultiplier = n?.notifyOffMultiplier ?? 0;
      d.isrWin = await win(first(VIRTIO_PCI_CAP_ISR_CFG));
      d.deviceWin = await win(first(VIRTIO_PCI_CAP_DEVICE_CFG));
      if (!d.notifyWin || !d.isrWin) throw new DriverError(`${pci}: modern interface without notify/ISR capability`);
    }
    if (opts.enable ?? true) await pci.enable();
    return d;
  }

  get msix(): GuestMsix | undefined {
    return this.pci.msix;
  }

  private get c(): Window {
    return this.common!;
  }
  private get bar0(): GuestBar {
    return this.io!;
  }

  async status(): Promise<number> {
    return this.legacy ? this.bar0.readb(VirtioPciLegacy.STATUS) : this.c.readb(VirtioPciCommon.STATUS);
  }
  async setStatus(v: number): Promise<void> {
    if (this.legacy) await this.bar0.writeb(VirtioPciLegacy.STATUS, v);
    else await this.c.writeb(VirtioPciCommon.STATUS, v);
  }

  async readDeviceFeatures(): Promise<bigint> {
    if (this.legacy) {
      this.deviceFeatures = BigInt(await this.bar0.readl(VirtioPciLegacy.HOST_FEATURES));
    } else {
      await this.c.writel(VirtioPciCommon.DFSELECT, 1);
      const hi = await this.c.readl(VirtioPciCommon.DF);
      await this.c.writel(VirtioPciCommon.DFSELECT, 0);
      const lo = await this.c.readl(VirtioPciCommon.DF);
      this.deviceFeatures = (BigInt(hi) << 32n) | BigInt(lo);
    }
    return this.deviceFeatures;
  }

  async writeDriverFeatures(f: bigint): Promise<void> {
    if (this.legacy) {
      if (f >> 32n) throw new DriverError('legacy interface has only 32 feature bits');
      await this.bar0.writel(VirtioPciLegacy.GUEST_FEATURES, Number(f));
      return;
    }
    await this.c.writel(VirtioPciCommon.GFSELECT, 1);
    await this.c.writel(VirtioPciCommon.GF, Number((f >> 32n) & 0xffff_ffffn));
    await this.c.writel(VirtioPciCommon.GFSELECT, 0);
    await this.c.writel(VirtioPciCommon.GF, Number(f & 0xffff_ffffn));
  }

  /** The driver features as the device holds them (legacy GUEST_FEATURES, modern GF). */
  async readDriverFeatures(): Promise<bigint> {
    if (this.legacy) return BigInt(await this.bar0.readl(VirtioPciLegacy.GUEST_FEATURES));
    await this.c.writel(VirtioPciCommon.GFSELECT, 1);
    const hi = await this.c.readl(VirtioPciCommon.GF);
    await this.c.writel(VirtioPciCommon.GFSELECT, 0);
    const lo = await this.c.readl(VirtioPciCommon.GF);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Modern only: num_queues. */
  async numQueues(): Promise<number> {
    if (this.legacy) throw new DriverError('num_queues is a modern register');
    return this.c.readw(VirtioPciCommon.NUMQ);
  }

  /** Modern only: config_generation. */
  async configGeneration(): Promise<number> {
    if (this.legacy) throw new DriverError('config_generation is a modern register');
    return this.c.readb(VirtioPciCommon.CFGGENERATION);
  }

  async selectQueue(index: number): Promise<void> {
    if (this.legacy) await this.bar0.writew(VirtioPciLegacy.QUEUE_SEL, index);
    else await this.c.writew(VirtioPciCommon.Q_SELECT, index);
  }

  async queueMax(index: number): Promise<number> {
    await this.selectQueue(index);
    return this.legacy ? this.bar0.readw(VirtioPciLegacy.QUEUE_NUM) : this.c.readw(VirtioPciCommon.Q_SIZE);
  }

  async setupQueue(index: number, setup: QueueSetup = {}): Promise<VringDriver> {
    const max = await this.queueMax(index);
    if (max === 0) throw new DriverError(`queue ${index} does not exist`);
    const num = setup.num ?? max;
    if ((num & (num - 1)) !== 0 || num > max) throw new DriverError(`bad queue size ${num} (max ${max})`);
    if (this.legacy) {
      // Legacy queues have a fixed size and a single area aligned to 4096 (VIRTIO_PCI_VRING_ALIGN).
      if (num !== max) throw new DriverError(`legacy queue ${index} has fixed size ${max}`);
      const addrs = this.ringAddrs(num, setup, VIRTIO_PCI_VRING_ALIGN);
      if (addrs.desc % 4096 !== 0) throw new DriverError('legacy ring base must be 4096 aligned');
      const ring = await this.makeRing(index, num, addrs);
      await this.bar0.writel(VirtioPciLegacy.QUEUE_PFN, addrs.desc / 4096);
      return ring;
    }
    const addrs = this.ringAddrs(num, setup);
    const ring = await this.makeRing(index, num, addrs);
    await this.enableModernQueue(index, num, max, addrs);
    return ring;
  }

  async setupPackedQueue(index: number, setup: QueueSetup = {}): Promise<PackedVringDriver> {
    const max = await this.queueMax(index);
    const num = this.packedQueueNum(index, max, setup);
    const addrs = this.packedRingAddrs(num, setup);
    const ring = await this.makePackedRing(index, num, addrs);
    await this.enableModernQueue(index, num, max, addrs);
    return ring;
  }

  /**
   * Size, the three addresses (split: desc/avail/used; packed: ring/driver area/device area),
   * then queue_enable, on the queue `queueMax` selected.
   */
  private async enableModernQueue(index: number, num: number, max: number, addrs: RingAddresses): Promise<void> {
    const c = this.c;
    if (num !== max) await c.writew(VirtioPciCommon.Q_SIZE, num);
    const hi = (x: number): number => Math.floor(x / 2 ** 32);
    await Promise.all([
      c.writel(VirtioPciCommon.Q_DESCLO, addrs.desc >>> 0),
      c.writel(VirtioPciCommon.Q_DESCHI, hi(addrs.desc)),
      c.writel(VirtioPciCommon.Q_AVAILLO, addrs.avail >>> 0),
      c.writel(VirtioPciCommon.Q_AVAILHI, hi(addrs.avail)),
      c.writel(VirtioPciCommon.Q_USEDLO, addrs.used >>> 0),
      c.writel(VirtioPciCommon.Q_USEDHI, hi(addrs.used)),
    ]);
    this.notifyOff.set(index, await c.readw(VirtioPciCommon.Q_NOFF));
    await c.writew(VirtioPciCommon.Q_ENABLE, 1);
  }

  /** queue_notify_off as read during set-up. */
  queueNotifyOff(index: number): number | undefined {
    return this.notifyOff.get(index);
  }

  async notify(index: number): Promise<void> {
    if (this.legacy) {
      await this.bar0.writew(VirtioPciLegacy.QUEUE_NOTIFY, index);
    } else {
      let off = this.notifyOff.get(index);
      if (off === undefined) {
        await this.selectQueue(index);
        off = await this.c.readw(VirtioPciCommon.Q_NOFF);
        this.notifyOff.set(index, off);
      }
      await this.notifyWin!.writew(off * this.notifyOffMultiplier, index);
    }
    this.noteKicked(index);
  }

  /** Read the ISR status byte; reading clears it and lowers INTx. */
  async isr(): Promise<number> {
    return this.legacy ? this.bar0.readb(VirtioPciLegacy.ISR) : this.isrWin!.readb(0);
  }

  ackInterrupt(): Promise<number> {
    return this.isr();
  }

  private configBase(): { win: Window | GuestBar; base: number } {
    if (this.legacy) return { win: this.bar0, base: legacyConfigOffset(this.pci.msix !== undefined) };
    if (!this.deviceWin) throw new DriverError('device has no device-specific configuration');
    return { win: this.deviceWin, base: 0 };
  }

  async configRead(offset: number, size: 1 | 2 | 4): Promise<number> {
    const { win, base } = this.configBase();
    return size === 1 ? win.readb(base + offset) : size === 2 ? win.readw(base + offset) : win.readl(base + offset);
  }

  async configWrite(offset: number, size: 1 | 2 | 4, value: number): Promise<void> {
    const { win, base } = this.configBase();
    if (size === 1) await win.writeb(base + offset, value);
    else if (size === 2) await win.writew(base + offset, value);
    else await win.writel(base + offset, value);
  }

  /** A 64-bit config field as two 32-bit reads, retried while config_generation changes (modern). */
  async configRead64(offset: number): Promise<bigint> {
    for (let tries = 0; tries < 10; tries++) {
      const g = this.legacy ? 0 : await this.configGeneration();
      const lo = await this.configRead(offset, 4);
      const hi = await this.configRead(offset + 4, 4);
      if (this.legacy || (await this.configGeneration()) === g) return (BigInt(hi) << 32n) | BigInt(lo);
    }
    throw new MachineError('config_generation kept changing');
  }

  // --- MSI-X -------------------------------------------------------------------------------

  /** Enable MSI-X on the function (legacy device config moves to 0x18). */
  async enableMsix(): Promise<GuestMsix> {
    return this.pci.enableMsix();
  }

  async disableMsix(): Promise<void> {
    await this.pci.disableMsix();
    this.queueMsix.clear();
    this.configMsix = undefined;
  }

  /** Write msix_config and return what reads back (0xffff if the device refused the vector). */
  async setConfigVector(vector: number): Promise<number> {
    if (this.legacy) {
      await this.bar0.writew(VirtioPciLegacy.MSI_CONFIG_VECTOR, vector);
      return this.bar0.readw(VirtioPciLegacy.MSI_CONFIG_VECTOR);
    }
    await this.c.writew(VirtioPciCommon.MSIX, vector);
    return this.c.readw(VirtioPciCommon.MSIX);
  }

  /** Select queue `index`, write its vector and return what reads back (0xffff if refused). */
  async setQueueVector(index: number, vector: number): Promise<number> {
    await this.selectQueue(index);
    if (this.legacy) {
      await this.bar0.writew(VirtioPciLegacy.MSI_QUEUE_VECTOR, vector);
      return this.bar0.readw(VirtioPciLegacy.MSI_QUEUE_VECTOR);
    }
    await this.c.writew(VirtioPciCommon.Q_MSIX, vector);
    return this.c.readw(VirtioPciCommon.Q_MSIX);
  }

  private async programSlot(entry: number, addr: number | undefined, data: number): Promise<MsixSlot> {
    const msix = this.pci.msix;
    if (!msix) throw new DriverError('MSI-X is not enabled');
    if (addr === undefined) {
      if (!this.alloc) throw new DriverError('MSI-X message slot needs an address or an allocator');
      addr = this.alloc.alloc(4, 4);
    }
    // The slot must start at 0: "fired" means it now holds `data`.
    await this.machine.writel(addr, 0);
    await msix.program(entry, addr, data);
    return { entry, addr, data };
  }

  /**
   * libqos `qvirtqueue_pci_msix_setup`: program table `entry` with a RAM address and
   * data 0x12345678, unmask it and assign it to queue `index`; the vector must read back.
   */
  async msixSetupQueue(index: number, entry: number, addr?: number, data = LIBQOS_MSIX_DATA): Promise<MsixSlot> {
    const slot = await this.programSlot(entry, addr, data);
    const back = await this.setQueueVector(index, entry);
    if (back === VIRTIO_NO_VECTOR || back !== entry) throw new DriverError(`queue ${index}: MSI-X vector ${entry} reads back 0x${back.toString(16)}`);
    this.queueMsix.set(index, slot);
    return slot;
  }

  /** libqos `qvirtio_pci_set_msix_configuration_vector`. */
  async msixSetupConfig(entry: number, addr?: number, data = LIBQOS_MSIX_DATA): Promise<MsixSlot> {
    const slot = await this.programSlot(entry, addr, data);
    const back = await this.setConfigVector(entry);
    if (back === VIRTIO_NO_VECTOR || back !== entry) throw new DriverError(`config MSI-X vector ${entry} reads back 0x${back.toString(16)}`);
    this.configMsix = slot;
    return slot;
  }

  private async slotFired(slot: MsixSlot): Promise<boolean> {
    const msix = this.pci.msix!;
    // A masked vector writes nothing; it sets its pending bit instead.
    if (await msix.masked(slot.entry)) return msix.pending(slot.entry);
    if ((await this.machine.readl(slot.addr)) === slot.data) {
      await this.machine.writel(slot.addr, 0);
      return true;
    }
    return false;
  }

  /**
   * libqos `qvirtio_pci_get_queue_isr_status`: with MSI-X, the message landed in RAM (then
   * re-armed by writing 0) or, if masked, the PBA bit; without, ISR bit 0 (read-to-clear).
   */
  async queueInterrupted(index: number): Promise<boolean> {
    if (this.pci.msix) {
      const slot = this.queueMsix.get(index);
      if (!slot) throw new DriverError(`queue ${index} has no MSI-X entry`);
      return this.slotFired(slot);
    }
    return ((await this.isr()) & 1) !== 0;
  }

  /** libqos `qvirtio_pci_get_config_isr_status`. */
  async configInterrupted(): Promise<boolean> {
    if (this.pci.msix) {
      if (!this.configMsix) throw new DriverError('no config MSI-X entry');
      return this.slotFired(this.configMsix);
    }
    return ((await this.isr()) & 2) !== 0;
  }
}
