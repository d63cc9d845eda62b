import type { AccessSize } from '../machine/address-space.js';
import { gpaFromHiLo } from '../memory/guest-memory.js';
import type { QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import type { Apply, VMStateDescription } from '../migration/vmstate.js';
import type { Tracer } from '../trace/trace.js';
import type { VirtIODevice } from '../virtio/device.js';
import {
  bit,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_F_BAD_FEATURE,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_BALLOON,
  VIRTIO_ID_BLOCK,
  VIRTIO_ID_CONSOLE,
  VIRTIO_ID_INPUT,
  VIRTIO_ID_NET,
  VIRTIO_ID_RNG,
} from '../virtio/constants.js';
import { VIRTIO_NO_VECTOR, VIRTIO_QUEUE_MAX } from '../vring/constants.js';
import { Msix } from './pci/msix.js';
import {
  BarRegion,
  PCI_CAP_ID_VNDR,
  PCI_COMMAND,
  PCI_COMMAND_MASTER,
  PCI_DEVICE_ID,
  PCI_INTERRUPT_PIN,
  PCI_NUM_PINS,
  PCI_REVISION_ID,
  PCI_SUBSYSTEM_ID,
  PCIDevice,
  PCI_DEVICE_VMSTATE_VERSION,
  PCI_CONFIG_SPACE_SIZE,
  rangesOverlap,
  setLong,
  setWord,
} from './pci/pci-device.js';
import { loadQueueRegisters, saveQueueRegisters } from './queue-registers.js';
import type { VirtioBus } from './virtio-bus.js';

// Legacy I/O BAR registers (VIRTIO 1.2 §4.1.4.8; QEMU's virtio_pci.h).
export const VIRTIO_PCI_HOST_FEATURES = 0x00;
export const VIRTIO_PCI_GUEST_FEATURES = 0x04;
export const VIRTIO_PCI_QUEUE_PFN = 0x08;
export const VIRTIO_PCI_QUEUE_NUM = 0x0c;
export const VIRTIO_PCI_QUEUE_SEL = 0x0e;
export const VIRTIO_PCI_QUEUE_NOTIFY = 0x10;
export const VIRTIO_PCI_STATUS = 0x12;
export const VIRTIO_PCI_ISR = 0x13;
export const VIRTIO_MSI_CONFIG_VECTOR = 0x14;
export const VIRTIO_MSI_QUEUE_VECTOR = 0x16;
/** Device configuration offset in the legacy BAR: 0x18 with MSI-X enabled, 0x14 without. */
export function virtioPciConfigOff(msixEnabled: boolean): number {
  return msixEnabled ? 24 : 20;
}
export const VIRTIO_PCI_QUEUE_ADDR_SHIFT = 12;

// Modern vendor capabilities (VIRTIO 1.2 §4.1.4).
export const VIRTIO_PCI_CAP_COMMON_CFG = 1;
export const VIRTIO_PCI_CAP_NOTIFY_CFG = 2;
export const VIRTIO_PCI_CAP_ISR_CFG = 3;
export const VIRTIO_PCI_CAP_DEVICE_CFG = 4;
export const VIRTIO_PCI_CAP_PCI_CFG = 5;
/** Offsets inside struct virtio_pci_cap. */
export const VIRTIO_PCI_CAP_CFG_TYPE = 3;
export const VIRTIO_PCI_CAP_BAR = 4;
export const VIRTIO_PCI_CAP_OFFSET = 8;
export const VIRTIO_PCI_CAP_LENGTH = 12;
export const VIRTIO_PCI_NOTIFY_CAP_MULT = 16;
/** struct virtio_pci_cfg_cap: pci_cfg_data follows the 16-byte capability. */
export const VIRTIO_PCI_CFG_DATA = 16;

// struct virtio_pci_common_cfg (VIRTIO 1.2 §4.1.4.3).
export const VIRTIO_PCI_COMMON_DFSELECT = 0;
export const VIRTIO_PCI_COMMON_DF = 4;
export const VIRTIO_PCI_COMMON_GFSELECT = 8;
export const VIRTIO_PCI_COMMON_GF = 12;
export const VIRTIO_PCI_COMMON_MSIX = 16;
export const VIRTIO_PCI_COMMON_NUMQ = 18;
export const VIRTIO_PCI_COMMON_STATUS = 20;
export const VIRTIO_PCI_COMMON_CFGGENERATION = 21;
export const VIRTIO_PCI_COMMON_Q_SELECT = 22;
export const VIRTIO_PCI_COMMON_Q_SIZE = 24;
export const VIRTIO_PCI_COMMON_Q_MSIX = 26;
export const VIRTIO_PCI_COMMON_Q_ENABLE = 28;
export const VIRTIO_PCI_COMMON_Q_NOFF = 30;
export const VIRTIO_PCI_COMMON_Q_DESCLO = 32;
export const VIRTIO_PCI_COMMON_Q_DESCHI = 36;
export const VIRTIO_PCI_COMMON_Q_AVAILLO = 40;
export const VIRTIO_PCI_COMMON_Q_AVAILHI = 44;
export const VIRTIO_PCI_COMMON_Q_USEDLO = 48;
export const VIRTIO_PCI_COMMON_Q_USEDHI = 52;
export const VIRTIO_PCI_COMMON_Q_RESET = 58;

/** QEMU 7.2's layout of the modern BAR (`virtio_pci_realize`). */
export const VIRTIO_PCI_COMMON_OFFSET = 0x0000;
export const VIRTIO_PCI_ISR_OFFSET = 0x1000;
export const VIRTIO_PCI_DEVICE_OFFSET = 0x2000;
export const VIRTIO_PCI_NOTIFY_OFFSET = 0x3000;
export const VIRTIO_PCI_REGION_SIZE = 0x1000;
/** notify_off_multiplier with `page-per-vq=on` (QEMU_VIRTIO_PCI_QUEUE_MEM_MULT). */
export const QEMU_VIRTIO_PCI_QUEUE_MEM_MULT = 0x1000;

export const PCI_VENDOR_ID_REDHAT_QUMRANET = 0x1af4;
/** Modern-only devices: device id 0x1040 + virtio device id. */
export const PCI_DEVICE_ID_VIRTIO_10_BASE = 0x1040;
/** Largest MSI-X table (PCI_MSIX_FLAGS_QSIZE + 1). */
const MSIX_MAX_VECTORS = 2048;

/** Bytes of struct virtio_pci_common_cfg that byte-lane accesses decode (through queue_reset). */
const COMMON_CFG_SIZE = 60;
/**
 * For each byte of the common configuration, the offset and width of the field holding it
 * (width 0: no field, e.g. queue_notify_data, which QEMU 7.2 does not implement).
 */
const COMMON_FIELD_START = new Uint8Array(COMMON_CFG_SIZE);
const COMMON_FIELD_WIDTH = new Uint8Array(COMMON_CFG_SIZE);
for (const [off, width] of [
  [VIRTIO_PCI_COMMON_DFSELECT, 4], [VIRTIO_PCI_COMMON_DF, 4], [VIRTIO_PCI_COMMON_GFSELECT, 4], [VIRTIO_PCI_COMMON_GF, 4],
  [VIRTIO_PCI_COMMON_MSIX, 2], [VIRTIO_PCI_COMMON_NUMQ, 2], [VIRTIO_PCI_COMMON_STATUS, 1], [VIRTIO_PCI_COMMON_CFGGENERATION, 1],
  [VIRTIO_PCI_COMMON_Q_SELECT, 2], [VIRTIO_PCI_COMMON_Q_SIZE, 2], [VIRTIO_PCI_COMMON_Q_MSIX, 2], [VIRTIO_PCI_COMMON_Q_ENABLE, 2],
  [VIRTIO_PCI_COMMON_Q_NOFF, 2], [VIRTIO_PCI_COMMON_Q_DESCLO, 4], [VIRTIO_PCI_COMMON_Q_DESCHI, 4], [VIRTIO_PCI_COMMON_Q_AVAILLO, 4],
  [VIRTIO_PCI_COMMON_Q_AVAILHI, 4], [VIRTIO_PCI_COMMON_Q_USEDLO, 4], [VIRTIO_PCI_COMMON_Q_USEDHI, 4], [VIRTIO_PCI_COMMON_Q_RESET, 2],
] as const) {
  COMMON_FIELD_START.fill(off, off, off + width);
  COMMON_FIELD_WIDTH.fill(width, off, off + width);
}

/** How QEMU 7.2 presents each device type on PCI (`hw/virtio/*-pci.c`). */
interface VirtioPciDeviceInfo {
  /** QEMU type name, for the default proxy name. */
  typeName: string;
  /** Transitional/legacy PCI device id (QEMU's PCI_DEVICE_ID_VIRTIO_*); absent: modern only. */
  legacyDeviceId?: number;
  /** Class and subclass (config 0x0a). */
  classId: number;
  /** Default `vectors`; 0 means no MSI-X. */
  defaultVectors: (vdev: VirtIODevice) => number;
}

const DEVICE_INFO: Record<number, VirtioPciDeviceInfo> = {
  // net: 2 × queue pairs + 2 = the queue count (2 × pairs + ctrl) + 1.
  [VIRTIO_ID_NET]: { typeName: 'virtio-net-pci', legacyDeviceId: 0x1000, classId: 0x0200, defaultVectors: (d) => d.vq.length + 1 },
  [VIRTIO_ID_BLOCK]: { typeName: 'virtio-blk-pci', legacyDeviceId: 0x1001, classId: 0x0100, defaultVectors: (d) => d.vq.length + 1 },
  [VIRTIO_ID_CONSOLE]: { typeName: 'virtio-serial-pci', legacyDeviceId: 0x1003, classId: 0x0780, defaultVectors: () => 2 },
  [VIRTIO_ID_RNG]: { typeName: 'virtio-rng-pci', legacyDeviceId: 0x1005, classId: 0x00ff, defaultVectors: () => 2 },
  [VIRTIO_ID_BALLOON]: { typeName: 'virtio-balloon-pci', legacyDeviceId: 0x1002, classId: 0x00ff, defaultVectors: () => 0 },
  [VIRTIO_ID_INPUT]: { typeName: 'virtio-input-pci', classId: 0x0980, defaultVectors: () => 2 },
};

export interface VirtioPciOptions {
  /**
   * QEMU's `disable-legacy`: 'auto' (the default) keeps the legacy interface on a conventional
   * PCI bus, so the device is transitional. Device types without a legacy interface (input)
   * are always modern only, as QEMU forces them.
   */
  disableLegacy?: boolean | 'auto';
  /** QEMU's `disable-modern` (default false). */
  disableModern?: boolean;
  /** MSI-X vectors (QEMU's `vectors`); 0 for none. Default per device type (rng: 2). */
  vectors?: number;
  /** QEMU's `page-per-vq`: notify_off_multiplier 0x1000 instead of 4. */
  pagePerVq?: boolean;
  /** QEMU's `ioeventfd`: accepted and ignored (notifies are always handled synchronously). */
  ioeventfd?: boolean;
  /**
   * QEMU's `addr`: the slot (and function) to place the function at, as QEMU writes it
   * ("02.0", "1f", "3.2") or as a devfn number. Recorded for the machine, which places the
   * function (`requestedDevfn`); absent: the first free slot.
   */
  addr?: string | number;
  /** Class and subclass override (QEMU's `class` property on blk and serial). */
  classId?: number;
  /** Name for traces; defaults to the QEMU type name (e.g. `virtio-rng-pci`). */
  name?: string;
  tracer?: Tracer;
  /** Called with a warning QEMU would print (e.g. "unable to init msix vectors to N"). */
  onWarning?: (message: string) => void;
  /**
   * Byte lanes for hosts that split multi-byte MMIO accesses into narrower ones (v86 turns a
   * 16-bit read into two byte reads). Off (the default), the modern common configuration
   * answers as QEMU's does: an access that does not start at a field, or has another width,
   * reads 0 and is ignored on write, so the high byte of `queue_size` reads 0 through such a
   * host. On, an access of any width at any offset reads the bytes of the fields it covers
   * (without side effects: no common field has any), and a write narrower than its field
   * changes only its bytes (read-modify-write of the field). Whole, aligned accesses behave
   * exactly as without the option.
   */
  byteLanes?: boolean;
}

/** Per-queue state of the modern interface (QEMU's VirtIOPCIQueue). */
export interface VirtIOPCIQueue {
  /** queue_size as the driver last wrote it (16 bits; 0 when never written). */
  num: number;
  enabled: boolean;
  reset: number;
  desc: [number, number];
  avail: [number, number];
  used: [number, number];
}

/**
 * virtio over PCI, as QEMU 7.2's VirtIOPCIProxy (`hw/virtio/virtio-pci.c`): one PCI function in
 * front of one device, with the legacy interface (I/O BAR0), the modern one (vendor capabilities
 * into a 64-bit prefetchable BAR4: common, ISR, device and notify structures, plus the PCI_CFG
 * access window), or both (transitional), MSI-X in BAR1, and INTx with a read-to-clear ISR when
 * MSI-X is off. The configuration space, BAR sizes and register behaviour follow QEMU 7.2 byte
 * for byte, including its answers to misuse; nothing a guest writes throws.
 */
export class VirtIOPCIProxy extends PCIDevice implements VirtioBus {
  readonly hasVariableVringAlignment = false;
  readonly vdev: VirtIODevice;
  /** The legacy interface is present (QEMU's `virtio_pci_legacy`). */
  readonly legacy: boolean;
  /** The modern interface is present (QEMU's `virtio_pci_modern`). */
  readonly modern: boolean;
  /** MSI-X vectors (0: none), QEMU's `nvectors`. */
  readonly nvectors: number;
  readonly pagePerVq: boolean;
  /** Offset of the PCI_CFG capability, or 0 (QEMU's `config_cap`). */
  readonly configCap: number;
  /** Size of the legacy BAR0 (0 without the legacy interface). */
  readonly legacyBarSize: number;
  /** Size of the modern BAR4 (0 without the modern interface). */
  readonly modernBarSize: number;
  readonly notifyMultiplier: number;
  /** The devfn asked for with `addr`, for the machine; undefined for "first free slot". */
  readonly requestedDevfn: number | undefined;
  onWarning: ((message: string) => void) | undefined;
  /** See `VirtioPciOptions.byteLanes`. */
  readonly byteLanes: boolean;

  // Modern interface state (QEMU's dfselect, gfselect, guest_features[2], vqs[VIRTIO_QUEUE_MAX]).
  dfselect = 0;
  gfselect = 0;
  readonly guestFeatures: [number, number] = [0, 0];
  /**
   * The modern queue registers of all VIRTIO_QUEUE_MAX queues, made on first use (1024 records
   * per function are a large part of a machine's start-up, issue 11); until then every queue has
   * the reset values.
   */
  private vqStore: VirtIOPCIQueue[] | undefined;
  get vqs(): VirtIOPCIQueue[] {
    if (this.vqStore === undefined) {
      const vqs: VirtIOPCIQueue[] = (this.vqStore = []);
      for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) vqs.push({ num: 0, enabled: false, reset: 0, desc: [0, 0], avail: [0, 0], used: [0, 0] });
    }
    return this.vqStore;
  }
  /**
   * MSI-X vectors of queues the device does not have. QEMU keeps a vector for all 1024 queues
   * and lets the driver program it for any selected queue; our device only has its real ones.
   */
  private readonly phantomVectors = new Uint16Array(VIRTIO_QUEUE_MAX).fill(VIRTIO_NO_VECTOR);

  constructor(vdev: VirtIODevice, opts: VirtioPciOptions = {}) {
    const info = DEVICE_INFO[vdev.deviceId] ?? { typeName: `virtio-${vdev.deviceId}-pci`, classId: 0x00ff, defaultVectors: () => 2 };
    super({
      name: opts.name ?? info.typeName,
      vendorId: PCI_VENDOR_ID_REDHAT_QUMRANET,
      deviceId: info.legacyDeviceId ?? 0,
      revision: 0, // VIRTIO_PCI_ABI_VERSION
      classId: opts.classId ?? info.classId,
      tracer: opts.tracer,
    });
    this.vdev = vdev;
    this.onWarning = opts.onWarning;
    this.byteLanes = opts.byteLanes ?? false;
    this.requestedDevfn = opts.addr === undefined ? undefined : parsePciAddr(opts.addr);
    this.pagePerVq = opts.pagePerVq ?? false;
    this.notifyMultiplier = this.pagePerVq ? QEMU_VIRTIO_PCI_QUEUE_MEM_MULT : 4;

    // virtio_pci_realize: a conventional PCI bus, so 'auto' keeps the legacy interface.
    const dl = opts.disableLegacy ?? 'auto';
    let legacy = dl === 'auto' ? info.legacyDeviceId !== undefined : !dl;
    let modern = !(opts.disableModern ?? false);
    if (info.legacyDeviceId === undefined && dl !== 'auto' && !dl) {
      throw new Error(`${this.name}: device is modern-only, use disable-legacy=on`);
    }
    if (info.legacyDeviceId === undefined) legacy = false; // virtio_pci_force_virtio_1
    if (!modern && !legacy) throw new Error(`${this.name}: device cannot work as neither modern nor legacy mode is enabled`);

    let nvectors = opts.vectors ?? info.defaultVectors(vdev);
    // `vectors` is a uint32 property, but msix_init_exclusive_bar takes the count as 16 bits:
    // QEMU then builds a table of (vectors & 0xffff) entries while accepting vector numbers up
    // to `vectors`, and aborts on the first guest write past the table. Refuse those counts.
    if (!Number.isInteger(nvectors) || nvectors < 0 || nvectors > 0xffff_ffff) throw new RangeError(`${this.name}: vectors ${nvectors} out of range`);
    if (nvectors > 0xffff && (nvectors & 0xffff) !== 0 && (nvectors & 0xffff) <= MSIX_MAX_VECTORS) {
      throw new RangeError(`${this.name}: vectors ${nvectors} would give a ${nvectors & 0xffff}-entry MSI-X table`);
    }

    // virtio_bus_device_plugged: pre_plugged, the device's get_features, then device_plugged.
    this.modern = modern;
    vdev.plug(this);
    if (!vdev.hostHasFeature(VIRTIO_F_VERSION_1)) {
      modern = false;
      if (!legacy) throw new Error(`${this.name}: Device doesn't support modern mode, and legacy mode is disabled`);
    }
    this.modern = modern;
    this.legacy = legacy;

    const config = this.config;
    if (legacy) {
      // Legacy and transitional devices use the virtio device id as subsystem id.
      setWord(config, PCI_SUBSYSTEM_ID, vdev.deviceId);
    } else {
      setWord(config, PCI_DEVICE_ID, PCI_DEVICE_ID_VIRTIO_10_BASE + vdev.deviceId);
      config[PCI_REVISION_ID] = 1;
    }
    config[PCI_INTERRUPT_PIN] = 1;

    let configCap = 0;
    let modernBarSize = 0;
    if (modern) {
      const notifySize = this.notifyMultiplier * VIRTIO_QUEUE_MAX;
      this.addVendorCap(VIRTIO_PCI_CAP_COMMON_CFG, 16, VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_REGION_SIZE);
      this.addVendorCap(VIRTIO_PCI_CAP_ISR_CFG, 16, VIRTIO_PCI_ISR_OFFSET, VIRTIO_PCI_REGION_SIZE);
      this.addVendorCap(VIRTIO_PCI_CAP_DEVICE_CFG, 16, VIRTIO_PCI_DEVICE_OFFSET, VIRTIO_PCI_REGION_SIZE);
      const notifyCap = this.addVendorCap(VIRTIO_PCI_CAP_NOTIFY_CFG, 20, VIRTIO_PCI_NOTIFY_OFFSET, notifySize);
      setLong(config, notifyCap + VIRTIO_PCI_NOTIFY_CAP_MULT, this.notifyMultiplier);
      modernBarSize = 2 ** Math.ceil(Math.log2(VIRTIO_PCI_NOTIFY_OFFSET + notifySize));
      this.registerBar(4, 'mem64', modernBarSize, new BarRegion(modernBarSize, 0, (o, s) => this.modernRead(o, s), (o, s, v) => this.modernWrite(o, s, v)), true);
      // The PCI_CFG window: bar 0, offset 0, length 0, and the four fields writable.
      configCap = this.addVendorCap(VIRTIO_PCI_CAP_PCI_CFG, 20, 0, 0, 0);
      this.wmask[configCap + VIRTIO_PCI_CAP_BAR] = 0xff;
      setLong(this.wmask, configCap + VIRTIO_PCI_CAP_OFFSET, 0xffff_ffff);
      setLong(this.wmask, configCap + VIRTIO_PCI_CAP_LENGTH, 0xffff_ffff);
      setLong(this.wmask, configCap + VIRTIO_PCI_CFG_DATA, 0xffff_ffff);
    }
    this.configCap = configCap;
    this.modernBarSize = modernBarSize;

    if (nvectors) {
      // msix_init refuses more than 2048 vectors; QEMU then warns and goes on without MSI-X.
      // (It passes the count as 16 bits, so 65536 is 0 and refused the same way.)
      if (nvectors > MSIX_MAX_VECTORS) {
        this.onWarning?.(`unable to init msix vectors to ${nvectors}`);
        nvectors = 0;
      } else {
        Msix.exclusiveBar(this, nvectors, 1);
      }
    }
    this.nvectors = nvectors;

    let legacyBarSize = 0;
    if (legacy) {
      const size = virtioPciConfigOff(this.msix !== undefined) + vdev.configLen;
      legacyBarSize = 2 ** Math.ceil(Math.log2(size));
      this.registerBar(0, 'io', legacyBarSize, new BarRegion(legacyBarSize, 0xffff_ffff, (o, s) => this.legacyRead(o, s), (o, s, v) => this.legacyWrite(o, s, v)));
    }
    this.legacyBarSize = legacyBarSize;
  }

  /** virtio_pci_add_mem_cap: a vendor capability describing a region of BAR `bar`. */
  private addVendorCap(cfgType: number, capLen: number, offset: number, length: number, bar = 4): number {
    const at = this.addCapability(PCI_CAP_ID_VNDR, 0, capLen);
    const c = this.config;
    c[at + 2] = capLen;
    c[at + VIRTIO_PCI_CAP_CFG_TYPE] = cfgType;
    c[at + VIRTIO_PCI_CAP_BAR] = bar;
    setLong(c, at + VIRTIO_PCI_CAP_OFFSET, offset);
    setLong(c, at + VIRTIO_PCI_CAP_LENGTH, length);
    return at;
  }

  // ---------------------------------------------------------------------------------------
  // VirtioBus

  prePlugged(hostFeatures: bigint): bigint {
    let f = hostFeatures;
    if (this.modern) f |= bit(VIRTIO_F_VERSION_1);
    return f | bit(VIRTIO_F_BAD_FEATURE);
  }

  /**
   * QEMU's `virtio_pci_notify`: with MSI-X enabled, send the vector's message (NO_VECTOR sends
   * nothing); otherwise INTx follows ISR bit 0.
   */
  notify(vector: number): void {
    const msix = this.msix;
    if (msix && msix.enabled()) {
      if (vector !== VIRTIO_NO_VECTOR) msix.notify(vector);
    } else {
      this.setIrq((this.vdev.isr & 1) !== 0);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space (QEMU's virtio_read_config / virtio_write_config)

  override configRead(offset: number, size: 1 | 2 | 4): number {
    if (this.configCap && rangesOverlap(offset, size, this.configCap + VIRTIO_PCI_CFG_DATA, 4)) this.cfgWindowAccess(false);
    return this.defaultReadConfig(offset, size);
  }

  /**
   * QEMU's `virtio_write_config`. Bus mastering gates the function's own memory writes (MSI-X
   * messages, `dmaWrite32`), but in QEMU 7.2 the virtio device reaches rings and buffers through
   * `address_space_memory` (its bus-master address space is used only with iommu_platform), so
   * what stops the device is `use-disabled-flag` (on for 7.2 machine types): any command write
   * without MASTER disables it and clears DRIVER_OK, any command write with MASTER enables it,
   * and a device reset enables it too.
   */
  override configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.defaultWriteConfig(offset, size, value);
    const vdev = this.vdev;
    if (offset <= PCI_COMMAND && PCI_COMMAND < offset + size) {
      if (!(this.config[PCI_COMMAND]! & PCI_COMMAND_MASTER)) {
        vdev.disabled = true;
        vdev.setStatus(vdev.status & ~VIRTIO_CONFIG_S_DRIVER_OK);
      } else {
        vdev.disabled = false;
      }
    }
    if (this.configCap && rangesOverlap(offset, size, this.configCap + VIRTIO_PCI_CFG_DATA, 4)) this.cfgWindowAccess(true);
  }

  /**
   * The PCI_CFG capability's window (VIRTIO 1.2 §4.1.4.9): an access of cap.length (1, 2 or 4)
   * bytes at cap.offset of the modern BAR through pci_cfg_data. As in QEMU 7.2 the `bar` field
   * is not checked, the offset is aligned down to the length, and an access that does not fit
   * one structure does nothing.
   */
  private cfgWindowAccess(write: boolean): void {
    const cap = this.configCap;
    const c = this.config;
    const off = (c[cap + 8]! | (c[cap + 9]! << 8) | (c[cap + 10]! << 16) | (c[cap + 11]! << 24)) >>> 0;
    const len = (c[cap + 12]! | (c[cap + 13]! << 8) | (c[cap + 14]! << 16) | (c[cap + 15]! << 24)) >>> 0;
    if (len !== 1 && len !== 2 && len !== 4) return;
    const addr = off - (off % len);
    const region = this.lookupRegion(addr, len);
    if (!region) return;
    const data = cap + VIRTIO_PCI_CFG_DATA;
    if (write) {
      let val = c[data]!;
      if (len >= 2) val |= c[data + 1]! << 8;
      if (len === 4) val = (val | (c[data + 2]! << 16) | (c[data + 3]! << 24)) >>> 0;
      this.modernWrite(addr, len, val);
    } else {
      const val = this.modernRead(addr, len);
      for (let i = 0; i < len; i++) c[data + i] = (val >>> (8 * i)) & 0xff;
    }
  }

  /** QEMU's `virtio_address_space_lookup` over the four modern structures. */
  private lookupRegion(addr: number, len: number): boolean {
    const regions: [number, number][] = [
      [VIRTIO_PCI_COMMON_OFFSET, VIRTIO_PCI_REGION_SIZE],
      [VIRTIO_PCI_ISR_OFFSET, VIRTIO_PCI_REGION_SIZE],
      [VIRTIO_PCI_DEVICE_OFFSET, VIRTIO_PCI_REGION_SIZE],
      [VIRTIO_PCI_NOTIFY_OFFSET, this.notifyMultiplier * VIRTIO_QUEUE_MAX],
    ];
    return regions.some(([o, s]) => addr >= o && addr + len <= o + s);
  }

  // ---------------------------------------------------------------------------------------
  // Resets

  /** Machine reset, device part (QEMU's `virtio_pci_bus_reset`); the PCI part follows. */
  protected override resetDevice(): void {
    this.softReset();
  }

  /**
   * QEMU's `virtio_pci_reset`, also run when the driver writes status 0 or a legacy queue PFN 0:
   * the device is reset, every MSI-X vector unused, and the modern queue registers cleared.
   * The feature selectors keep their values, as in QEMU.
   */
  softReset(): void {
    this.laneField = -1;
    this.vdev.reset();
    this.phantomVectors.fill(VIRTIO_NO_VECTOR);
    this.msix?.unuseAll();
    for (const q of this.vqStore ?? []) {
      q.enabled = false;
      q.reset = 0;
      q.num = 0;
      q.desc[0] = q.desc[1] = q.avail[0] = q.avail[1] = q.used[0] = q.used[1] = 0;
    }
  }

  /**
   * The VM started or stopped: the device follows (QEMU's `virtio_vmstate_change`, which also
   * calls the transport's `virtio_pci_vmstate_change`; that one only starts or stops ioeventfd,
   * which we do not model: notifies are handled synchronously).
   */
  vmStateChange(running: boolean): void {
    this.vdev.vmStateChange(running);
  }

  // ---------------------------------------------------------------------------------------
  // Queue vectors (QEMU's virtio_queue_vector / virtio_queue_set_vector, for all 1024 queues)

  queueVector(n: number): number {
    if (n < 0 || n >= VIRTIO_QUEUE_MAX) return VIRTIO_NO_VECTOR;
    const q = this.vdev.getQueue(n);
    return q ? q.vector : this.phantomVectors[n]!;
  }

  private setQueueVector(n: number, vector: number): void {
    if (n < 0 || n >= VIRTIO_QUEUE_MAX) return;
    const q = this.vdev.getQueue(n);
    if (q) q.vector = vector;
    else this.phantomVectors[n] = vector;
  }

  /** The MSIX_CONFIG / QUEUE_VECTOR write of both interfaces: refuse vectors ≥ nvectors. */
  private assignVector(old: number, val: number): number {
    const msix = this.msix;
    if (old !== VIRTIO_NO_VECTOR && msix) msix.vectorUnuse(old);
    if (val < this.nvectors && msix) {
      msix.vectorUse(val);
      return val;
    }
    if (val !== VIRTIO_NO_VECTOR) this.guestError(`MSI-X vector ${val} refused (device has ${this.nvectors})`);
    return VIRTIO_NO_VECTOR;
  }

  private writeConfigVector(val: number): void {
    this.vdev.configVector = this.assignVector(this.vdev.configVector, val);
  }

  private writeQueueVector(val: number): void {
    const sel = this.vdev.queueSel;
    this.setQueueVector(sel, this.assignVector(this.queueVector(sel), val));
  }

  // ---------------------------------------------------------------------------------------
  // Legacy I/O BAR0 (QEMU's virtio_pci_config_read/write, virtio_ioport_read/write)

  /** Where the device configuration starts in BAR0 (QEMU's VIRTIO_PCI_CONFIG_SIZE). */
  legacyConfigOffset(): number {
    return virtioPciConfigOff(this.msix?.enabled() ?? false);
  }

  private legacyRead(addr: number, size: AccessSize): number {
    const config = this.legacyConfigOffset();
    if (addr < config) return this.ioportRead(addr);
    return this.vdev.configRead(addr - config, size, true);
  }

  private legacyWrite(addr: number, size: AccessSize, val: number): void {
    const config = this.legacyConfigOffset();
    if (addr < config) {
      this.ioportWrite(addr, val);
      return;
    }
    this.vdev.configWrite(addr - config, size, val, true);
  }

  private ioportRead(addr: number): number {
    const vdev = this.vdev;
    switch (addr) {
      case VIRTIO_PCI_HOST_FEATURES: return Number(vdev.hostFeatures & 0xffff_ffffn);
      case VIRTIO_PCI_GUEST_FEATURES: return Number(vdev.guestFeatures & 0xffff_ffffn);
      case VIRTIO_PCI_QUEUE_PFN: {
        const desc = vdev.getQueue(vdev.queueSel)?.desc ?? 0;
        return Math.floor(desc / 2 ** VIRTIO_PCI_QUEUE_ADDR_SHIFT) >>> 0;
      }
      case VIRTIO_PCI_QUEUE_NUM: return vdev.queueNum(vdev.queueSel);
      case VIRTIO_PCI_QUEUE_SEL: return vdev.queueSel;
      case VIRTIO_PCI_STATUS: return vdev.status;
      case VIRTIO_PCI_ISR: return this.readIsr();
      case VIRTIO_MSI_CONFIG_VECTOR: return vdev.configVector;
      case VIRTIO_MSI_QUEUE_VECTOR: return this.queueVector(vdev.queueSel);
      default: return 0xffff_ffff;
    }
  }

  private ioportWrite(addr: number, val: number): void {
    const vdev = this.vdev;
    switch (addr) {
      case VIRTIO_PCI_GUEST_FEATURES: {
        // A driver acking VIRTIO_F_BAD_FEATURE does not negotiate properly: it gets the device
        // type's bad_features (virtio-net: what Linux 2.6.25 understood), filtered by the offer.
        const f = val & (1 << VIRTIO_F_BAD_FEATURE) ? vdev.badFeatures() : BigInt(val >>> 0);
        vdev.setFeatures(f);
        return;
      }
      case VIRTIO_PCI_QUEUE_PFN: {
        const pa = (val >>> 0) * 2 ** VIRTIO_PCI_QUEUE_ADDR_SHIFT;
        if (pa === 0) this.softReset();
        else vdev.getQueue(vdev.queueSel)?.setLegacyAddr(pa);
        return;
      }
      case VIRTIO_PCI_QUEUE_SEL:
        if (val < VIRTIO_QUEUE_MAX) vdev.queueSel = val;
        return;
      case VIRTIO_PCI_QUEUE_NOTIFY:
        if (val < VIRTIO_QUEUE_MAX) vdev.queueNotify(val);
        return;
      case VIRTIO_PCI_STATUS:
        vdev.setStatus(val & 0xff);
        if (vdev.status === 0) this.softReset();
        // Linux before 2.6.34 drives the device without enabling bus mastering; QEMU turns it
        // on for the guest when it writes ACKNOWLEDGE|DRIVER.
        if (val === (VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER)) {
          this.defaultWriteConfig(PCI_COMMAND, 1, this.config[PCI_COMMAND]! | PCI_COMMAND_MASTER);
        }
        return;
      case VIRTIO_MSI_CONFIG_VECTOR:
        this.writeConfigVector(val);
        return;
      case VIRTIO_MSI_QUEUE_VECTOR:
        this.writeQueueVector(val);
        return;
      default:
        this.guestError(`legacy: unexpected address 0x${addr.toString(16)} value 0x${(val >>> 0).toString(16)}`);
    }
  }

  /** Reading the ISR clears it and lowers INTx (both interfaces). */
  private readIsr(): number {
    const v = this.vdev.isr;
    this.vdev.isr = 0;
    this.setIrq(false);
    return v;
  }

  // ---------------------------------------------------------------------------------------
  // Modern BAR4

  private modernRead(addr: number, size: AccessSize): number {
    if (addr < VIRTIO_PCI_ISR_OFFSET) {
      const off = addr - VIRTIO_PCI_COMMON_OFFSET;
      return this.byteLanes ? this.commonReadLanes(off, size) : this.commonRead(off);
    }
    if (addr < VIRTIO_PCI_DEVICE_OFFSET) return this.readIsr();
    if (addr < VIRTIO_PCI_NOTIFY_OFFSET) return this.vdev.configRead(addr - VIRTIO_PCI_DEVICE_OFFSET, size, false);
    return 0; // notify structure (reads 0) and the unused rest of the BAR
  }

  private modernWrite(addr: number, size: AccessSize, val: number): void {
    if (addr < VIRTIO_PCI_ISR_OFFSET) {
      const off = addr - VIRTIO_PCI_COMMON_OFFSET;
      if (this.byteLanes) this.commonWriteLanes(off, size, val);
      else this.commonWrite(off, val);
    } else if (addr < VIRTIO_PCI_DEVICE_OFFSET) {
      // The ISR is read-only.
    } else if (addr < VIRTIO_PCI_NOTIFY_OFFSET) {
      this.vdev.configWrite(addr - VIRTIO_PCI_DEVICE_OFFSET, size, val, false);
    } else {
      const off = addr - VIRTIO_PCI_NOTIFY_OFFSET;
      if (off >= this.notifyMultiplier * VIRTIO_QUEUE_MAX) return;
      const queue = Math.floor(off / this.notifyMultiplier);
      if (queue < VIRTIO_QUEUE_MAX) this.vdev.queueNotify(queue);
    }
  }

  /**
   * Byte-lane read of the common configuration: each byte comes from the field that holds it
   * (bytes outside every field read 0). An access that is exactly one field is `commonRead`.
   */
  private commonReadLanes(addr: number, size: AccessSize): number {
    if (addr >= COMMON_CFG_SIZE) return 0;
    const start = COMMON_FIELD_START[addr]!;
    if (start === addr && COMMON_FIELD_WIDTH[addr] === size) return this.commonRead(addr);
    let v = 0;
    for (let i = 0; i < size; i++) {
      const b = addr + i;
      if (b >= COMMON_CFG_SIZE || COMMON_FIELD_WIDTH[b] === 0) continue;
      const fs = COMMON_FIELD_START[b]!;
      v += ((this.commonRead(fs) >>> (8 * (b - fs))) & 0xff) * 2 ** (8 * i);
    }
    return v;
  }

  /**
   * Byte-lane write. The bytes of a field are gathered (starting from its current value) and the
   * field is written once, when its top byte arrives: a host splitting a 16-bit write into two
   * byte writes, low first, writes queue_size or queue_enable once, with the whole value. A
   * write that never reaches the top byte of its field is not applied (QEMU ignores narrow
   * writes too).
   */
  private commonWriteLanes(addr: number, size: AccessSize, val: number): void {
    if (addr >= COMMON_CFG_SIZE) return;
    if (COMMON_FIELD_START[addr] === addr && COMMON_FIELD_WIDTH[addr] === size) {
      this.laneField = -1;
      this.commonWrite(addr, val);
      return;
    }
    for (let i = 0; i < size; i++) {
      const b = addr + i;
      const w = b < COMMON_CFG_SIZE ? COMMON_FIELD_WIDTH[b]! : 0;
      if (w === 0) continue;
      const fs = COMMON_FIELD_START[b]!;
      if (this.laneField !== fs) {
        this.laneField = fs;
        this.laneValue = this.commonRead(fs) >>> 0;
      }
      const sh = 8 * (b - fs);
      const byte = Math.floor((val >>> 0) / 2 ** (8 * i)) & 0xff;
      this.laneValue = (this.laneValue - (((this.laneValue >>> sh) & 0xff) << sh >>> 0) + byte * 2 ** sh) >>> 0;
      if (b === fs + w - 1) {
        this.laneField = -1;
        this.commonWrite(fs, this.laneValue);
      }
    }
  }

  /** The field a byte-lane write is gathering (-1: none) and its bytes so far. */
  private laneField = -1;
  private laneValue = 0;

  private commonRead(addr: number): number {
    const vdev = this.vdev;
    const sel = vdev.queueSel;
    const pq = this.vqs[sel]!;
    switch (addr) {
      case VIRTIO_PCI_COMMON_DFSELECT: return this.dfselect;
      case VIRTIO_PCI_COMMON_DF:
        if (this.dfselect > 1) return 0;
        return Number(((vdev.hostFeatures & ~vdev.legacyFeatures) >> BigInt(32 * this.dfselect)) & 0xffff_ffffn);
      case VIRTIO_PCI_COMMON_GFSELECT: return this.gfselect;
      case VIRTIO_PCI_COMMON_GF: return this.gfselect < 2 ? this.guestFeatures[this.gfselect]! : 0;
      case VIRTIO_PCI_COMMON_MSIX: return vdev.configVector;
      case VIRTIO_PCI_COMMON_NUMQ: {
        let n = 0;
        for (let i = 0; i < vdev.vq.length; i++) if (vdev.vq[i]!.num) n = i + 1;
        return n;
      }
      case VIRTIO_PCI_COMMON_STATUS: return vdev.status;
      case VIRTIO_PCI_COMMON_CFGGENERATION: return vdev.generation & 0xff;
      case VIRTIO_PCI_COMMON_Q_SELECT: return sel;
      case VIRTIO_PCI_COMMON_Q_SIZE: return vdev.queueNum(sel);
      case VIRTIO_PCI_COMMON_Q_MSIX: return this.queueVector(sel);
      case VIRTIO_PCI_COMMON_Q_ENABLE: return pq.enabled ? 1 : 0;
      case VIRTIO_PCI_COMMON_Q_NOFF: return sel; // queues are mapped in order
      case VIRTIO_PCI_COMMON_Q_DESCLO: return pq.desc[0];
      case VIRTIO_PCI_COMMON_Q_DESCHI: return pq.desc[1];
      case VIRTIO_PCI_COMMON_Q_AVAILLO: return pq.avail[0];
      case VIRTIO_PCI_COMMON_Q_AVAILHI: return pq.avail[1];
      case VIRTIO_PCI_COMMON_Q_USEDLO: return pq.used[0];
      case VIRTIO_PCI_COMMON_Q_USEDHI: return pq.used[1];
      case VIRTIO_PCI_COMMON_Q_RESET: return pq.reset;
      default: return 0;
    }
  }

  private commonWrite(addr: number, val: number): void {
    const vdev = this.vdev;
    const sel = vdev.queueSel;
    const pq = this.vqs[sel]!;
    val >>>= 0;
    switch (addr) {
      case VIRTIO_PCI_COMMON_DFSELECT:
        this.dfselect = val;
        return;
      case VIRTIO_PCI_COMMON_GFSELECT:
        this.gfselect = val;
        return;
      case VIRTIO_PCI_COMMON_GF:
        if (this.gfselect < 2) {
          this.guestFeatures[this.gfselect] = val;
          vdev.setFeatures((BigInt(this.guestFeatures[1]) << 32n) | BigInt(this.guestFeatures[0]));
        }
        return;
      case VIRTIO_PCI_COMMON_MSIX:
        this.writeConfigVector(val);
        return;
      case VIRTIO_PCI_COMMON_STATUS:
        vdev.setStatus(val & 0xff);
        if (vdev.status === 0) this.softReset();
        return;
      case VIRTIO_PCI_COMMON_Q_SELECT:
        if (val < VIRTIO_QUEUE_MAX) vdev.queueSel = val;
        return;
      case VIRTIO_PCI_COMMON_Q_SIZE:
        pq.num = val & 0xffff;
        // QEMU resizes even a live queue here; a live queue keeps its geometry until
        // queue_enable is written again (docs/qemu-differences.md, as for virtio-mmio v2).
        if (!pq.enabled) vdev.getQueue(sel)?.setNum(pq.num);
        return;
      case VIRTIO_PCI_COMMON_Q_MSIX:
        this.writeQueueVector(val);
        return;
      case VIRTIO_PCI_COMMON_Q_ENABLE:
        if (val === 1) {
          const q = vdev.getQueue(sel);
          if (q) {
            q.setNum(pq.num);
            q.setRings(gpaFromHiLo(pq.desc[0], pq.desc[1]), gpaFromHiLo(pq.avail[0], pq.avail[1]), gpaFromHiLo(pq.used[0], pq.used[1]));
          }
          pq.enabled = true;
          pq.reset = 0;
          vdev.queueEnable(sel);
        } else {
          vdev.virtioError(`wrong value for queue_enable ${val.toString(16)}`);
        }
        return;
      case VIRTIO_PCI_COMMON_Q_DESCLO: pq.desc[0] = val; return;
      case VIRTIO_PCI_COMMON_Q_DESCHI: pq.desc[1] = val; return;
      case VIRTIO_PCI_COMMON_Q_AVAILLO: pq.avail[0] = val; return;
      case VIRTIO_PCI_COMMON_Q_AVAILHI: pq.avail[1] = val; return;
      case VIRTIO_PCI_COMMON_Q_USEDLO: pq.used[0] = val; return;
      case VIRTIO_PCI_COMMON_Q_USEDHI: pq.used[1] = val; return;
      case VIRTIO_PCI_COMMON_Q_RESET:
        // VIRTIO_F_RING_RESET (QEMU 7.2 accepts it whether or not the feature was negotiated).
        if (val === 1) {
          pq.reset = 1;
          if (vdev.getQueue(sel)) vdev.queueReset(sel);
          else this.phantomVectors[sel] = VIRTIO_NO_VECTOR;
          pq.reset = 0;
          pq.enabled = false;
        }
        return;
      default:
        this.guestError(`common: write 0x${val.toString(16)} to read-only or unknown offset 0x${addr.toString(16)}`);
    }
  }

  /** Modern queue register state of queue `n` (for inspection and migration). */
  queueState(n: number): Readonly<VirtIOPCIQueue> | undefined {
    return this.vqs[n];
  }

  // ---------------------------------------------------------------------------------------
  // Migration hooks (spec/qemu-virtio-migration.md §1.3, "virtio-pci")

  /** QEMU's `virtio_pci_save_config`: PCIDevice vmstate, MSI-X table and PBA, config vector. */
  saveConfig(f: QEMUFileWriter): void {
    f.putBe32(PCI_DEVICE_VMSTATE_VERSION);
    f.putBuffer(this.savedConfig());
    for (let i = 0; i < PCI_NUM_PINS; i++) f.putBe32((this.irqState >> i) & 1);
    if (this.msix) {
      this.msix.save(f);
      f.putBe16(this.vdev.configVector);
    }
  }

  /** QEMU's `virtio_pci_load_config`, with its checks; nothing changes until the result runs. */
  loadConfig(f: QEMUFileReader): () => void {
    const vAt = f.offset;
    const version = f.getBe32('PCIDevice version_id') | 0;
    if (version < 0 || version > PCI_DEVICE_VMSTATE_VERSION) {
      throw f.error('PCIDevice version_id', `Invalid value ${version} expecting positive value <= ${PCI_DEVICE_VMSTATE_VERSION}`, vAt);
    }
    const cAt = f.offset;
    const config = f.getBuffer(PCI_CONFIG_SPACE_SIZE, 'PCIDevice config');
    const bad = this.checkLoadedConfig(config);
    if (bad >= 0) {
      const h = (n: number) => n.toString(16);
      throw f.error('PCIDevice config', `Bad config data: i=0x${h(bad)} read: ${h(config[bad]!)} device: ${h(this.config[bad]!)} cmask: ${h(this.cmask[bad]!)} wmask: ${h(this.wmask[bad]!)} w1cmask:${h(this.w1cmask[bad]!)}`, cAt + bad);
    }
    let irqState = 0;
    for (let i = 0; i < PCI_NUM_PINS; i++) {
      const at = f.offset;
      const s = f.getBe32('PCIDevice irq_state');
      if (s !== 0 && s !== 1) throw f.error('PCIDevice irq_state', `irq state ${s | 0}: must be 0 or 1.`, at);
      irqState |= s << i;
    }
    const msix = this.msix;
    let applyMsix: (() => void) | undefined;
    let vector = VIRTIO_NO_VECTOR;
    if (msix) {
      applyMsix = msix.load(f);
      const at = f.offset;
      vector = f.getBe16('virtio-pci config_vector');
      if (vector !== VIRTIO_NO_VECTOR && vector >= this.nvectors) throw f.error('virtio-pci config_vector', `vector ${vector} is not below ${this.nvectors}`, at);
    }
    return () => {
      this.applyLoadedConfig(config, irqState);
      msix?.unuseAll();
      applyMsix?.();
      this.vdev.configVector = vector;
      if (vector !== VIRTIO_NO_VECTOR) msix?.vectorUse(vector);
    };
  }

  /** QEMU's `has_extra_state`: the `migrate-extra` property, always on here (machine types > 2.4). */
  hasExtraState(): boolean {
    return true;
  }

  /**
   * The `virtio_pci` record inside `virtio/extra_state`: no fields, and the subsection
   * `virtio_pci/modern_state` when the modern interface exists (the selectors, the driver's
   * feature words and the queue registers of all 1024 queues, 28 bytes each).
   */
  extraState(): VMStateDescription {
    const modernState: VMStateDescription = {
      name: 'virtio_pci/modern_state',
      versionId: 1,
      minimumVersionId: 1,
      needed: () => this.modern,
      save: (f) => {
        f.putBe32(this.dfselect);
        f.putBe32(this.gfselect);
        f.putBe32(this.guestFeatures[0]);
        f.putBe32(this.guestFeatures[1]);
        saveQueueRegisters(f, this.vqs, true);
      },
      load: (f): Apply => {
        const dfselect = f.getBe32('virtio_pci/modern_state dfselect');
        const gfselect = f.getBe32('virtio_pci/modern_state gfselect');
        const gf0 = f.getBe32('virtio_pci/modern_state guest_features[0]');
        const gf1 = f.getBe32('virtio_pci/modern_state guest_features[1]');
        const qs = loadQueueRegisters(f, 'virtio_pci/modern_queue_state', true);
        return () => {
          this.dfselect = dfselect;
          this.gfselect = gfselect;
          this.guestFeatures[0] = gf0;
          this.guestFeatures[1] = gf1;
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) Object.assign(this.vqs[i]!, qs[i], { reset: 0 });
        };
      },
    };
    return { name: 'virtio_pci', versionId: 1, minimumVersionId: 1, subsections: [modernState] };
  }

  /** QEMU's `virtio_pci_save_queue`: the queue's vector, when MSI-X is present. */
  saveQueue(n: number, f: QEMUFileWriter): void {
    if (this.msix) f.putBe16(this.queueVector(n));
  }

  /** QEMU's `virtio_pci_load_queue`. */
  loadQueue(n: number, f: QEMUFileReader): () => void {
    let vector = VIRTIO_NO_VECTOR;
    if (this.msix) {
      const at = f.offset;
      vector = f.getBe16('virtio-pci queue vector');
      if (vector !== VIRTIO_NO_VECTOR && vector >= this.nvectors) throw f.error('virtio-pci queue vector', `vector ${vector} is not below ${this.nvectors}`, at);
    }
    return () => {
      this.setQueueVector(n, vector);
      if (vector !== VIRTIO_NO_VECTOR) this.msix?.vectorUse(vector);
    };
  }

  // ---------------------------------------------------------------------------------------

  private guestError(message: string): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'guest_error', device: this.name, message });
  }
}

/**
 * QEMU's `addr` property syntax (`set_pci_devfn`): "SLOT[.FN]" in hex, slot < 32, fn < 8, or
 * a devfn number (0..255). Returns the devfn; throws on anything else, as QEMU refuses the value.
 */
export function parsePciAddr(addr: string | number): number {
  if (typeof addr === 'number') {
    if (!Number.isInteger(addr) || addr < 0 || addr > 255) throw new RangeError(`Property 'addr' doesn't take value '${addr}'`);
    return addr;
  }
  // sscanf("%x.%x") / sscanf("%x"): leading blanks and an optional 0x prefix on each number.
  const m = /^\s*(?:0[xX])?([0-9a-fA-F]+)(?:\.\s*(?:0[xX])?([0-9a-fA-F]+))?$/.exec(addr);
  const slot = m ? parseInt(m[1]!, 16) : 32;
  const fn = m?.[2] !== undefined ? parseInt(m[2], 16) : 0;
  if (!m || slot > 31 || fn > 7) throw new RangeError(`Property 'addr' doesn't take value '${addr}'`);
  return (slot << 3) | fn;
}

/** Build a virtio-pci function for `device` with QEMU's property names and defaults. */
export function createVirtioPci(device: VirtIODevice, opts: VirtioPciOptions = {}): VirtIOPCIProxy {
  return new VirtIOPCIProxy(device, opts);
}
