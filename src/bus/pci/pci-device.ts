import type { AccessSize, IoHandler } from '../../machine/address-space.js';
import type { Tracer } from '../../trace/trace.js';
import type { PciActiveBar, PciBarType, PciBusHost, PciFunction } from './pci-bus.js';
import type { Msix } from './msix.js';

// Configuration space layout (PCI Local Bus 3.0 §6.1; QEMU's include/standard-headers/linux/pci_regs.h).
export const PCI_VENDOR_ID = 0x00;
export const PCI_DEVICE_ID = 0x02;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION_ID = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_CLASS_DEVICE = 0x0a;
export const PCI_CACHE_LINE_SIZE = 0x0c;
export const PCI_LATENCY_TIMER = 0x0d;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BASE_ADDRESS_0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_SUBSYSTEM_ID = 0x2e;
export const PCI_ROM_ADDRESS = 0x30;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;
export const PCI_INTERRUPT_PIN = 0x3d;
/** End of the standard header; capabilities and device registers follow. */
export const PCI_CONFIG_HEADER_SIZE = 0x40;
export const PCI_CONFIG_SPACE_SIZE = 0x100;

export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_SERR = 0x100;
export const PCI_COMMAND_INTX_DISABLE = 0x400;

export const PCI_STATUS_INTERRUPT = 0x08;
export const PCI_STATUS_CAP_LIST = 0x10;
export const PCI_STATUS_PARITY = 0x100;
export const PCI_STATUS_SIG_TARGET_ABORT = 0x800;
export const PCI_STATUS_REC_TARGET_ABORT = 0x1000;
export const PCI_STATUS_REC_MASTER_ABORT = 0x2000;
export const PCI_STATUS_SIG_SYSTEM_ERROR = 0x4000;
export const PCI_STATUS_DETECTED_PARITY = 0x8000;

export const PCI_BASE_ADDRESS_SPACE_IO = 0x01;
export const PCI_BASE_ADDRESS_MEM_TYPE_64 = 0x04;
export const PCI_BASE_ADDRESS_MEM_PREFETCH = 0x08;

export const PCI_CAP_LIST_ID = 0;
export const PCI_CAP_LIST_NEXT = 1;
export const PCI_CAP_ID_VNDR = 0x09;
export const PCI_CAP_ID_MSIX = 0x11;

/** QEMU's PCI_NUM_PINS (INTA#..INTD#). */
export const PCI_NUM_PINS = 4;
/** QEMU's default subsystem ids for devices that set none (`pci_default_sub_*`). */
export const PCI_SUBVENDOR_ID_REDHAT_QUMRANET = 0x1af4;
export const PCI_SUBDEVICE_ID_QEMU = 0x1100;
/** PCIDevice vmstate version (`pci_dev->version_id`). */
export const PCI_DEVICE_VMSTATE_VERSION = 2;

/** A BAR address that does not decode (QEMU's PCI_BAR_UNMAPPED). */
const UNMAPPED = -1n;
const U32_MAX = 0xffff_ffffn;
const U64_MAX = 0xffff_ffff_ffff_ffffn;

function maskTo(value: number, size: number): number {
  return size >= 4 ? value >>> 0 : size === 2 ? value & 0xffff : value & 0xff;
}

/**
 * A region behind a BAR, seen as QEMU's memory core presents it to a device model: accesses are
 * split into naturally aligned pieces of at most 4 bytes (`memory_access_size`, which is how
 * qtest's and the CPU's `address_space_rw` reach a device), each piece goes to `readAligned` /
 * `writeAligned`, and pieces outside the region read as `fill` (all ones for I/O, 0 for memory)
 * and vanish on write. The piece results are combined little-endian.
 */
export class BarRegion implements IoHandler {
  constructor(
    readonly size: number,
    readonly fill: number,
    private readonly readAligned: (offset: number, size: AccessSize) => number,
    private readonly writeAligned: (offset: number, size: AccessSize, value: number) => void,
  ) {}

  read(offset: number, size: AccessSize): number {
    if (!Number.isInteger(offset) || offset < 0 || (size !== 1 && size !== 2 && size !== 4)) return maskTo(this.fill, size);
    if ((offset & (size - 1)) === 0) return maskTo(this.piece(offset, size), size);
    let value = 0;
    let done = 0;
    while (done < size) {
      const l = pieceSize(offset + done, size - done);
      value += (maskTo(this.piece(offset + done, l), l) * 2 ** (8 * done));
      done += l;
    }
    return value >>> 0;
  }

  write(offset: number, size: AccessSize, value: number): void {
    if (!Number.isInteger(offset) || offset < 0 || (size !== 1 && size !== 2 && size !== 4)) return;
    value >>>= 0;
    if ((offset & (size - 1)) === 0) {
      if (offset + size <= this.size) this.writeAligned(offset, size, maskTo(value, size));
      return;
    }
    let done = 0;
    while (done < size) {
      const l = pieceSize(offset + done, size - done);
      const o = offset + done;
      if (o + l <= this.size) this.writeAligned(o, l, maskTo(Math.floor(value / 2 ** (8 * done)), l));
      done += l;
    }
  }

  private piece(offset: number, size: AccessSize): number {
    return offset + size <= this.size ? this.readAligned(offset, size) : this.fill;
  }
}

/** QEMU's `memory_access_size` for a region with max access 4 and no unaligned support. */
function pieceSize(addr: number, remaining: number): AccessSize {
  const align = addr & -addr;
  let l = remaining > 4 ? 4 : remaining;
  if (align !== 0 && align < l) l = align;
  return (l >= 4 ? 4 : l >= 2 ? 2 : 1) as AccessSize;
}

interface PciIoRegion {
  type: PciBarType;
  prefetchable: boolean;
  /** The type bits as written to the BAR (QEMU's `r->type`). */
  typeBits: number;
  size: number;
  handler: IoHandler;
  /** Current decoded address, or UNMAPPED. */
  addr: bigint;
}

export interface PCIDeviceOptions {
  /** Name for traces (QEMU's `pci_dev->name`). */
  name: string;
  vendorId: number;
  deviceId: number;
  revision?: number;
  /** Class and subclass (QEMU's 16-bit `class_id`, at config 0x0a). */
  classId: number;
  /** Subsystem vendor and id; QEMU's defaults 0x1af4 / 0x1100 when both are absent. */
  subsystemVendorId?: number;
  subsystemId?: number;
  tracer?: Tracer;
}

/**
 * A conventional PCI function with a type 0 header, as QEMU 7.2's PCIDevice (`hw/pci/pci.c`):
 * 256 bytes of configuration space with QEMU's write mask (`wmask`), write-one-to-clear mask
 * (`w1cmask`) and migration check mask (`cmask`), BARs sized by writing all ones and decoded
 * from the command register, the bus-master gate for DMA and MSI, the capability list, INTx with
 * the status register's interrupt bit and the command register's INTx disable, and reset to the
 * power-on values. Device models extend it and override `configRead`/`configWrite` as QEMU's
 * `config_read`/`config_write` hooks, calling `defaultReadConfig`/`defaultWriteConfig`.
 *
 * Guest accesses never throw: offsets and sizes outside the space read all ones and are ignored.
 */
export class PCIDevice implements PciFunction {
  readonly name: string;
  tracer: Tracer | undefined;
  readonly config = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a configuration write may change. */
  readonly wmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a configuration write of 1 clears. */
  readonly w1cmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bits a migration stream must match (QEMU checks `cmask & ~wmask & ~w1cmask` on load). */
  readonly cmask = new Uint8Array(PCI_CONFIG_SPACE_SIZE);
  /** Bytes taken by capabilities (QEMU's `used`), for placing new ones. */
  private readonly used = new Uint8Array(PCI_CONFIG_SPACE_SIZE);

  /** Level of each INTx pin as the device drives it (QEMU's `irq_state`, one bit per pin). */
  irqState = 0;
  /**
   * Whether the function's bus-master DMA reaches memory (QEMU's `bus_master_enable_region`).
   * QEMU updates it on configuration writes that cover the command register and on migration
   * load only, so it can differ from the command register's bit: a reset clears the bit but
   * leaves DMA enabled until the next command write, and that is mirrored here.
   */
  busMasterEnabled = false;
  host: PciBusHost | undefined;
  devfn = -1;
  /** The MSI-X state when the function has the capability (QEMU's `msix_*` fields). */
  msix: Msix | undefined;

  private readonly regions: (PciIoRegion | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];

  constructor(opts: PCIDeviceOptions) {
    this.name = opts.name;
    this.tracer = opts.tracer;
    // do_pci_register_device
    const c = this.config;
    setWord(c, PCI_VENDOR_ID, opts.vendorId);
    setWord(c, PCI_DEVICE_ID, opts.deviceId);
    c[PCI_REVISION_ID] = opts.revision ?? 0;
    setWord(c, PCI_CLASS_DEVICE, opts.classId);
    if (opts.subsystemVendorId !== undefined || opts.subsystemId !== undefined) {
      setWord(c, PCI_SUBSYSTEM_VENDOR_ID, opts.subsystemVendorId ?? 0);
      setWord(c, PCI_SUBSYSTEM_ID, opts.subsystemId ?? 0);
    } else {
      setWord(c, PCI_SUBSYSTEM_VENDOR_ID, PCI_SUBVENDOR_ID_REDHAT_QUMRANET);
      setWord(c, PCI_SUBSYSTEM_ID, PCI_SUBDEVICE_ID_QEMU);
    }
    // pci_init_cmask
    setWord(this.cmask, PCI_VENDOR_ID, 0xffff);
    setWord(this.cmask, PCI_DEVICE_ID, 0xffff);
    this.cmask[PCI_STATUS] = PCI_STATUS_CAP_LIST;
    this.cmask[PCI_REVISION_ID] = 0xff;
    this.cmask[PCI_CLASS_PROG] = 0xff;
    setWord(this.cmask, PCI_CLASS_DEVICE, 0xffff);
    this.cmask[PCI_HEADER_TYPE] = 0xff;
    this.cmask[PCI_CAPABILITY_LIST] = 0xff;
    // pci_init_wmask
    this.wmask[PCI_CACHE_LINE_SIZE] = 0xff;
    this.wmask[PCI_INTERRUPT_LINE] = 0xff;
    setWord(this.wmask, PCI_COMMAND, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE | PCI_COMMAND_SERR);
    this.wmask.fill(0xff, PCI_CONFIG_HEADER_SIZE);
    // pci_init_w1cmask
    setWord(this.w1cmask, PCI_STATUS,
      PCI_STATUS_PARITY | PCI_STATUS_SIG_TARGET_ABORT | PCI_STATUS_REC_TARGET_ABORT |
      PCI_STATUS_REC_MASTER_ABORT | PCI_STATUS_SIG_SYSTEM_ERROR | PCI_STATUS_DETECTED_PARITY);
  }

  // ---------------------------------------------------------------------------------------
  // Set-up (host side; these throw on programming errors)

  /**
   * QEMU's `pci_register_bar`: BAR `index` (0..5; a 64-bit BAR also takes `index + 1`) of `size`
   * bytes, a power of two. The BAR's writable bits are the address bits above the size, so
   * writing all ones reads back the size.
   */
  registerBar(index: number, type: PciBarType, size: number, handler: IoHandler, prefetchable = false): void {
    if (!Number.isInteger(index) || index < 0 || index > 5 || (type === 'mem64' && index > 4)) throw new RangeError(`${this.name}: bad BAR index ${index}`);
    if (!Number.isSafeInteger(size) || size < (type === 'io' ? 4 : 16) || !isPow2(size)) throw new RangeError(`${this.name}: BAR size ${size} is not a power of two (at least ${type === 'io' ? 4 : 16})`);
    if (type !== 'mem64' && size > 2 ** 31) throw new RangeError(`${this.name}: 32-bit BAR of ${size} bytes`);
    const typeBits = type === 'io' ? PCI_BASE_ADDRESS_SPACE_IO : (type === 'mem64' ? PCI_BASE_ADDRESS_MEM_TYPE_64 : 0) | (prefetchable ? PCI_BASE_ADDRESS_MEM_PREFETCH : 0);
    this.regions[index] = { type, prefetchable: type !== 'io' && prefetchable, typeBits, size, handler, addr: UNMAPPED };
    const off = PCI_BASE_ADDRESS_0 + 4 * index;
    const wmask = BigInt.asUintN(64, ~BigInt(size - 1));
    setLong(this.config, off, typeBits);
    if (type === 'mem64') {
      setLong(this.config, off + 4, 0);
      setLong(this.wmask, off, Number(wmask & U32_MAX));
      setLong(this.wmask, off + 4, Number(wmask >> 32n));
      setLong(this.cmask, off, 0xffff_ffff);
      setLong(this.cmask, off + 4, 0xffff_ffff);
    } else {
      setLong(this.wmask, off, Number(wmask & U32_MAX));
      setLong(this.cmask, off, 0xffff_ffff);
    }
  }

  /**
   * QEMU's `pci_add_capability`: link a capability of `size` bytes at `offset` (0: the first
   * free space from 0x40) at the head of the list. It is read-only and migration-checked by
   * default; the caller opens the bits the guest may write.
   */
  addCapability(capId: number, offset: number, size: number): number {
    if (!offset) {
      offset = this.findSpace(size);
      if (!offset) throw new RangeError(`${this.name}: no room for a ${size}-byte capability`);
    } else {
      for (let i = offset; i < offset + size; i++) {
        if (this.used[i]) throw new RangeError(`${this.name}: capability 0x${capId.toString(16)} at 0x${offset.toString(16)} overlaps another`);
      }
    }
    const c = this.config;
    c[offset + PCI_CAP_LIST_ID] = capId;
    c[offset + PCI_CAP_LIST_NEXT] = c[PCI_CAPABILITY_LIST]!;
    c[PCI_CAPABILITY_LIST] = offset;
    c[PCI_STATUS] = c[PCI_STATUS]! | PCI_STATUS_CAP_LIST;
    this.used.fill(0xff, offset, Math.min(PCI_CONFIG_SPACE_SIZE, offset + ((size + 3) & ~3)));
    this.wmask.fill(0, offset, offset + size);
    this.cmask.fill(0xff, offset, offset + size);
    return offset;
  }

  /** QEMU's `pci_find_capability`: offset of the first capability with `capId`, or 0. */
  findCapability(capId: number): number {
    const c = this.config;
    if (!(c[PCI_STATUS]! & PCI_STATUS_CAP_LIST)) return 0;
    const seen = new Set<number>();
    for (let next = c[PCI_CAPABILITY_LIST]!; next && !seen.has(next); next = c[next + PCI_CAP_LIST_NEXT]!) {
      seen.add(next);
      if (c[next + PCI_CAP_LIST_ID] === capId) return next;
    }
    return 0;
  }

  private findSpace(size: number): number {
    let offset = PCI_CONFIG_HEADER_SIZE;
    for (let i = PCI_CONFIG_HEADER_SIZE; i < PCI_CONFIG_SPACE_SIZE; i++) {
      if (this.used[i]) offset = i + 1;
      else if (i - offset + 1 === size) return offset;
    }
    return 0;
  }

  // ---------------------------------------------------------------------------------------
  // PciFunction

  attach(host: PciBusHost, devfn: number): void {
    this.host = host;
    this.devfn = devfn;
  }

  configRead(offset: number, size: 1 | 2 | 4): number {
    return this.defaultReadConfig(offset, size);
  }

  configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.defaultWriteConfig(offset, size, value);
  }

  /**
   * What a configuration read would return now, without its side effects (a virtio-pci
   * function's PCI_CFG window reads its BAR only on a real read): for hosts that latch config
   * data before they know whether the cycle is a read (v86 does, at the CONFIG_ADDRESS write).
   * Any offset and size; outside the space, all ones.
   */
  configPeek(offset: number, size: 1 | 2 | 4): number {
    return this.defaultReadConfig(offset, size);
  }

  /** QEMU's `pci_default_read_config`. */
  defaultReadConfig(offset: number, size: number): number {
    if (!validConfigAccess(offset, size)) return maskTo(0xffff_ffff, size);
    const c = this.config;
    let v = c[offset]!;
    if (size >= 2) v |= c[offset + 1]! << 8;
    if (size === 4) v = (v | (c[offset + 2]! << 16) | (c[offset + 3]! << 24)) >>> 0;
    return v;
  }

  /** QEMU's `pci_default_write_config`: masks, BAR remapping, INTx disable, bus master, MSI-X. */
  defaultWriteConfig(offset: number, size: number, value: number): void {
    if (!validConfigAccess(offset, size)) return;
    const wasIrqDisabled = this.irqDisabled();
    let val = value >>> 0;
    const c = this.config;
    for (let i = 0; i < size; i++, val >>>= 8) {
      const a = offset + i;
      const wm = this.wmask[a]!;
      c[a] = (c[a]! & ~wm) | (val & wm);
      c[a] = c[a]! & ~(val & this.w1cmask[a]!);
    }
    const coversCommand = offset <= PCI_COMMAND && PCI_COMMAND < offset + size;
    if (rangesOverlap(offset, size, PCI_BASE_ADDRESS_0, 24) || rangesOverlap(offset, size, PCI_ROM_ADDRESS, 4) || coversCommand) {
      this.updateMappings();
    }
    if (coversCommand) {
      this.updateIrqDisabled(wasIrqDisabled);
      this.busMasterEnabled = (this.command() & PCI_COMMAND_MASTER) !== 0;
    }
    this.msix?.writeConfig(offset, value >>> 0, size);
  }

  activeBars(): PciActiveBar[] {
    const out: PciActiveBar[] = [];
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i];
      if (!r || r.addr === UNMAPPED) continue;
      // The host's address spaces use safe integers; a BAR placed above 2^53 decodes in QEMU but
      // no access from this machine can reach it.
      if (r.addr + BigInt(r.size) > BigInt(Number.MAX_SAFE_INTEGER)) continue;
      out.push({ index: i, type: r.type, prefetchable: r.prefetchable, addr: Number(r.addr), size: r.size, handler: r.handler });
    }
    return out;
  }

  /** Machine reset: the device model's reset, then QEMU's `pci_do_device_reset`. */
  reset(): void {
    this.resetDevice();
    this.doDeviceReset();
  }

  /** Device-specific part of a machine reset (QEMU's `dc->reset`); runs before the PCI part. */
  protected resetDevice(): void {}

  /** QEMU's `pci_do_device_reset`. */
  doDeviceReset(): void {
    this.deassertIntx();
    const c = this.config;
    const cmdMask = getWord(this.wmask, PCI_COMMAND) | getWord(this.w1cmask, PCI_COMMAND);
    setWord(c, PCI_COMMAND, getWord(c, PCI_COMMAND) & ~cmdMask);
    const stMask = getWord(this.wmask, PCI_STATUS) | getWord(this.w1cmask, PCI_STATUS);
    setWord(c, PCI_STATUS, getWord(c, PCI_STATUS) & ~stMask);
    c[PCI_INTERRUPT_LINE] = c[PCI_INTERRUPT_LINE]! & ~(this.wmask[PCI_INTERRUPT_LINE]! | this.w1cmask[PCI_INTERRUPT_LINE]!);
    c[PCI_CACHE_LINE_SIZE] = 0;
    // pci_reset_regions
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i];
      if (!r) continue;
      const off = PCI_BASE_ADDRESS_0 + 4 * i;
      setLong(c, off, r.typeBits);
      if (r.type === 'mem64') setLong(c, off + 4, 0);
    }
    this.updateMappings();
    this.msix?.reset();
  }

  // ---------------------------------------------------------------------------------------
  // BAR decoding

  command(): number {
    return getWord(this.config, PCI_COMMAND);
  }

  /** The decoded address of BAR `index`, or undefined when it does not decode. */
  barAddress(index: number): bigint | undefined {
    const r = this.regions[index];
    return r && r.addr !== UNMAPPED ? r.addr : undefined;
  }

  /** The registered region of BAR `index` (its handler is what the host maps). */
  bar(index: number): { type: PciBarType; size: number; prefetchable: boolean; handler: IoHandler } | undefined {
    const r = this.regions[index];
    return r ? { type: r.type, size: r.size, prefetchable: r.prefetchable, handler: r.handler } : undefined;
  }

  /** QEMU's `pci_bar_address` for a pc machine (`pci_allow_0_address` false). */
  private computeBarAddress(index: number, r: PciIoRegion): bigint {
    const cmd = this.command();
    const off = PCI_BASE_ADDRESS_0 + 4 * index;
    const size = BigInt(r.size);
    if (r.type === 'io') {
      if (!(cmd & PCI_COMMAND_IO)) return UNMAPPED;
      const addr = BigInt(getLong(this.config, off)) & ~(size - 1n);
      const last = addr + size - 1n;
      if (last <= addr || last >= U32_MAX || addr === 0n) return UNMAPPED;
      return addr;
    }
    if (!(cmd & PCI_COMMAND_MEMORY)) return UNMAPPED;
    let raw = BigInt(getLong(this.config, off));
    if (r.type === 'mem64') raw |= BigInt(getLong(this.config, off + 4)) << 32n;
    const addr = raw & BigInt.asUintN(64, ~(size - 1n));
    const last = addr + size - 1n;
    if (last <= addr || last === U64_MAX || addr === 0n) return UNMAPPED;
    if (r.type !== 'mem64' && last >= U32_MAX) return UNMAPPED;
    return addr;
  }

  /** QEMU's `pci_update_mappings`: recompute every BAR; tell the host if any moved. */
  updateMappings(): void {
    let changed = false;
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i];
      if (!r) continue;
      const a = this.computeBarAddress(i, r);
      if (a === r.addr) continue;
      r.addr = a;
      changed = true;
    }
    if (changed) {
      const tr = this.tracer;
      if (tr) tr({ type: 'device', device: this.name, message: `BARs: ${this.describeBars()}` });
      this.host?.barsChanged(this);
    }
  }

  private describeBars(): string {
    const parts: string[] = [];
    this.regions.forEach((r, i) => {
      if (r) parts.push(`${i}:${r.type}${r.addr === UNMAPPED ? ' unmapped' : '@0x' + r.addr.toString(16)}`);
    });
    return parts.join(' ');
  }

  // ---------------------------------------------------------------------------------------
  // INTx

  /** QEMU's `pci_irq_disabled`. */
  irqDisabled(): boolean {
    return (this.command() & PCI_COMMAND_INTX_DISABLE) !== 0;
  }

  /** The pin the function uses (0 = INTA#), from config byte 0x3d (QEMU's `pci_intx`). */
  intx(): number {
    return (this.config[PCI_INTERRUPT_PIN]! - 1) & 3;
  }

  /** QEMU's `pci_set_irq`: drive the function's own pin. */
  setIrq(level: boolean): void {
    this.irqHandler(this.intx(), level);
  }

  /** QEMU's `pci_irq_handler` for pin `irqNum` (0..3). */
  irqHandler(irqNum: number, level: boolean): void {
    const bit = 1 << irqNum;
    const was = (this.irqState & bit) !== 0;
    if (was === level) return;
    this.irqState = level ? this.irqState | bit : this.irqState & ~bit;
    this.updateIrqStatus();
    if (this.irqDisabled()) return;
    this.driveIntx(irqNum, level);
  }

  /** QEMU's `pci_device_deassert_intx`. */
  deassertIntx(): void {
    for (let i = 0; i < PCI_NUM_PINS; i++) this.irqHandler(i, false);
  }

  /** QEMU's `pci_update_irq_status`: the status register's interrupt bit follows irq_state. */
  updateIrqStatus(): void {
    const c = this.config;
    c[PCI_STATUS] = this.irqState ? c[PCI_STATUS]! | PCI_STATUS_INTERRUPT : c[PCI_STATUS]! & ~PCI_STATUS_INTERRUPT;
  }

  private updateIrqDisabled(was: boolean): void {
    const disabled = this.irqDisabled();
    if (disabled === was) return;
    for (let i = 0; i < PCI_NUM_PINS; i++) {
      if (this.irqState & (1 << i)) this.driveIntx(i, !disabled);
    }
  }

  private driveIntx(irqNum: number, level: boolean): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'irq', device: this.name, level });
    this.host?.setIntx(this, irqNum + 1, level);
  }

  // ---------------------------------------------------------------------------------------
  // Bus mastering

  /**
   * A memory write by the function (an MSI message): QEMU's `address_space_stl_le` on the
   * function's bus-master address space, which drops it unless bus mastering is enabled.
   */
  dmaWrite32(addr: bigint, data: number): boolean {
    if (!this.busMasterEnabled || !this.host) return false;
    addr = BigInt.asUintN(64, addr);
    if (addr > BigInt(Number.MAX_SAFE_INTEGER - 3)) return false;
    // A message aimed at a device register re-enters device code; if that raises another
    // message, the guest has built an unbounded loop (hostile-guest H3, QEMU CVE-2024-3446,
    // fixed in QEMU 8.0 by its re-entrancy guard). Nested writes are dropped.
    if (this.dmaDepth > 0) {
      const tr = this.tracer;
      if (tr) tr({ type: 'guest_error', device: this.name, message: `re-entrant bus-master write to 0x${addr.toString(16)} blocked` });
      return false;
    }
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, data >>> 0, true);
    this.dmaDepth++;
    try {
      this.host.dmaWrite(this, Number(addr), b);
    } finally {
      this.dmaDepth--;
    }
    return true;
  }

  /** Bus-master writes being delivered right now (see dmaWrite32). */
  private dmaDepth = 0;

  // ---------------------------------------------------------------------------------------
  // Migration: QEMU's vmstate "PCIDevice" (pci_device_save / pci_device_load)

  /** The 256 bytes as `pci_device_save` writes them: the interrupt status bit cleared. */
  savedConfig(): Uint8Array {
    const c = this.config.slice();
    c[PCI_STATUS] = c[PCI_STATUS]! & ~PCI_STATUS_INTERRUPT;
    return c;
  }

  /**
   * QEMU's `get_pci_config_device` check: the first byte of `config` whose read-only bits differ
   * from ours, or -1 when it is acceptable.
   */
  checkLoadedConfig(config: Uint8Array): number {
    for (let i = 0; i < PCI_CONFIG_SPACE_SIZE; i++) {
      if ((config[i]! ^ this.config[i]!) & this.cmask[i]! & ~this.wmask[i]! & ~this.w1cmask[i]!) return i;
    }
    return -1;
  }

  /** Apply a checked configuration and irq state (the rest of `pci_device_load`). */
  applyLoadedConfig(config: Uint8Array, irqState: number): void {
    this.config.set(config);
    this.updateMappings();
    this.busMasterEnabled = (this.command() & PCI_COMMAND_MASTER) !== 0;
    this.irqState = irqState & 0xf;
    this.updateIrqStatus();
    for (let i = 0; i < PCI_NUM_PINS; i++) this.host?.setIntx(this, i + 1, !this.irqDisabled() && (this.irqState & (1 << i)) !== 0);
  }
}

function isPow2(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n));
}

function validConfigAccess(offset: number, size: number): boolean {
  return Number.isInteger(offset) && offset >= 0 && (size === 1 || size === 2 || size === 4) && offset + size <= PCI_CONFIG_SPACE_SIZE;
}

export function rangesOverlap(a: number, alen: number, b: number, blen: number): boolean {
  return a < b + blen && b < a + alen;
}

export function getWord(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8);
}
export function setWord(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
}
export function getLong(b: Uint8Array, o: number): number {
  return (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24)) >>> 0;
}
export function setLong(b: Uint8Array, o: number, v: number): void {
  b[o] = v & 0xff;
  b[o + 1] = (v >>> 8) & 0xff;
  b[o + 2] = (v >>> 16) & 0xff;
  b[o + 3] = (v >>> 24) & 0xff;
}
