/**
 * Guest-side PCI for the `pc` machine, as QEMU's libqos does it (tests/qtest/libqos/pci.c and
 * pci-pc.c): configuration mechanism #1 through ports 0xcf8/0xcfc, enumeration of bus 0, BAR
 * sizing and placement (I/O from 0xc000, MMIO from 0xE0000000), command register enables,
 * capability walking, MSI-X (enable, table programming, masking, pending bits) and INTx through
 * the PIIX3 PIRQ routing registers of the ISA bridge at 00:01.0.
 *
 * No BIOS runs on the machines we drive, so nothing is configured until this code does it.
 */
import { MachineError, type Machine } from './machine.js';

// Configuration space offsets and bits (Linux include/uapi/linux/pci_regs.h). Deliberately not
// exported one by one, to keep the package's flat export list free of clashes; see `PciRegs`.
const VENDOR_ID = 0x00;
const DEVICE_ID = 0x02;
const COMMAND = 0x04;
const STATUS = 0x06;
const REVISION_ID = 0x08;
const CLASS_PROG = 0x09;
const CLASS_DEVICE = 0x0a;
const HEADER_TYPE = 0x0e;
const BASE_ADDRESS_0 = 0x10;
const SUBSYSTEM_VENDOR_ID = 0x2c;
const SUBSYSTEM_ID = 0x2e;
const CAPABILITY_LIST = 0x34;
const INTERRUPT_LINE = 0x3c;
const INTERRUPT_PIN = 0x3d;

/** PCI register offsets and bits used by the driver library. */
export const PciRegs = {
  VENDOR_ID,
  DEVICE_ID,
  COMMAND,
  STATUS,
  REVISION_ID,
  CLASS_PROG,
  CLASS_DEVICE,
  HEADER_TYPE,
  BASE_ADDRESS_0,
  SUBSYSTEM_VENDOR_ID,
  SUBSYSTEM_ID,
  CAPABILITY_LIST,
  INTERRUPT_LINE,
  INTERRUPT_PIN,
  COMMAND_IO: 0x1,
  COMMAND_MEMORY: 0x2,
  COMMAND_MASTER: 0x4,
  COMMAND_INTX_DISABLE: 0x400,
  STATUS_INTERRUPT: 0x8,
  STATUS_CAP_LIST: 0x10,
  CAP_ID_VNDR: 0x09,
  CAP_ID_MSIX: 0x11,
  MSIX_FLAGS: 2,
  MSIX_FLAGS_QSIZE: 0x7ff,
  MSIX_FLAGS_MASKALL: 0x4000,
  MSIX_FLAGS_ENABLE: 0x8000,
  MSIX_TABLE: 4,
  MSIX_PBA: 8,
  MSIX_BIRMASK: 7,
  MSIX_ENTRY_SIZE: 16,
  MSIX_ENTRY_LOWER_ADDR: 0,
  MSIX_ENTRY_UPPER_ADDR: 4,
  MSIX_ENTRY_DATA: 8,
  MSIX_ENTRY_VECTOR_CTRL: 12,
  MSIX_ENTRY_CTRL_MASKBIT: 1,
} as const;

const CONFIG_ADDRESS = 0xcf8;
const CONFIG_DATA = 0xcfc;

/** PIIX3 PIRQ route control registers (PIRQA..D) in the ISA bridge's config space. */
export const PIIX3_PIRQC = 0x60;
/** A PIRQ route register's "disabled" bit (the power-on value is 0x80). */
export const PIIX3_PIRQ_DISABLED = 0x80;

export function devfn(slot: number, fn = 0): number {
  if (!Number.isInteger(slot) || slot < 0 || slot > 31 || !Number.isInteger(fn) || fn < 0 || fn > 7) {
    throw new RangeError(`bad PCI slot ${slot}.${fn}`);
  }
  return (slot << 3) | fn;
}

/** QEMU pc's INTx swizzle (`pci_slot_get_pirq` in hw/pci-host/i440fx.c): PIRQ 0..3 = A..D. */
export function pcPirqForPin(slot: number, pin: number): number {
  if (pin < 1 || pin > 4) throw new RangeError(`bad interrupt pin ${pin}`);
  return (pin - 1 + slot - 1) & 3;
}

export interface PciWindows {
  pioStart: number;
  pioLimit: number;
  mmioStart: number;
  mmioLimit: number;
}

/** libqos's allocation windows on pc (pci-pc.c). */
export const PC_PCI_WINDOWS: PciWindows = { pioStart: 0xc000, pioLimit: 0x10000, mmioStart: 0xe000_0000, mmioLimit: 0x1_0000_0000 };

/** Bus 0 of a pc machine, seen from the guest. */
export class GuestPciBus {
  private pioNext: number;
  private mmioNext: number;

  constructor(readonly machine: Machine, readonly windows: PciWindows = PC_PCI_WINDOWS, readonly busNumber = 0) {
    this.pioNext = windows.pioStart;
    this.mmioNext = windows.mmioStart;
  }

  private address(df: number, offset: number): number {
    if (!Number.isInteger(offset) || offset < 0 || offset > 0xff) throw new RangeError(`bad config offset ${offset}`);
    return (0x8000_0000 | (this.busNumber << 16) | (df << 8) | (offset & 0xfc)) >>> 0;
  }

  // Each access issues the address write and the data access together (pipelined): no other
  // config access can slip in between, because both are queued in the same turn.
  async configReadb(df: number, offset: number): Promise<number> {
    const [, v] = await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.inb(CONFIG_DATA + (offset & 3))]);
    return v;
  }
  async configReadw(df: number, offset: number): Promise<number> {
    const [, v] = await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.inw(CONFIG_DATA + (offset & 2))]);
    return v;
  }
  async configReadl(df: number, offset: number): Promise<number> {
    const [, v] = await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.inl(CONFIG_DATA)]);
    return v;
  }
  async configWriteb(df: number, offset: number, value: number): Promise<void> {
    await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.outb(CONFIG_DATA + (offset & 3), value)]);
  }
  async configWritew(df: number, offset: number, value: number): Promise<void> {
    await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.outw(CONFIG_DATA + (offset & 2), value)]);
  }
  async configWritel(df: number, offset: number, value: number): Promise<void> {
    await Promise.all([this.machine.outl(CONFIG_ADDRESS, this.address(df, offset)), this.machine.outl(CONFIG_DATA, value)]);
  }

  /** The whole 256-byte configuration space, read as 64 dwords. */
  async configDump(df: number): Promise<Uint8Array> {
    const words = await Promise.all(Array.from({ length: 64 }, (_, i) => this.configReadl(df, i * 4)));
    const out = new Uint8Array(256);
    const dv = new DataView(out.buffer);
    words.forEach((w, i) => dv.setUint32(i * 4, w, true));
    return out;
  }

  /** Every function present on the bus (vendor id ≠ 0xffff), multi-function devices included. */
  async scan(): Promise<GuestPciDevice[]> {
    const found: GuestPciDevice[] = [];
    for (let slot = 0; slot < 32; slot++) {
      const vendor = await this.configReadw(devfn(slot, 0), VENDOR_ID);
      if (vendor === 0xffff) continue;
      const d0 = await this.device(slot, 0);
      found.push(d0);
      if ((await this.configReadb(devfn(slot, 0), HEADER_TYPE)) & 0x80) {
        for (let fn = 1; fn < 8; fn++) {
          if ((await this.configReadw(devfn(slot, fn), VENDOR_ID)) !== 0xffff) found.push(await this.device(slot, fn));
        }
      }
    }
    return found;
  }

  /** The function at slot.fn, with its ids read. Throws if nothing answers there. */
  async device(slot: number, fn = 0): Promise<GuestPciDevice> {
    const df = devfn(slot, fn);
    const id = await this.configReadl(df, VENDOR_ID);
    if ((id & 0xffff) === 0xffff) throw new MachineError(`no PCI function at 00:${slot.toString(16).padStart(2, '0')}.${fn}`);
    const [sub, rev] = await Promise.all([this.configReadl(df, SUBSYSTEM_VENDOR_ID), this.configReadl(df, REVISION_ID)]);
    return new GuestPciDevice(this, df, {
      vendorId: id & 0xffff,
      deviceId: id >>> 16,
      revision: rev & 0xff,
      classCode: rev >>> 8,
      subsystemVendorId: sub & 0xffff,
      subsystemId: sub >>> 16,
    });
  }

  /** Reserve `size` bytes of I/O or MMIO space, aligned to `size` (libqos `qpci_iomap`). */
  allocate(io: boolean, size: number): number {
    if (io) {
      const loc = Math.ceil(this.pioNext / size) * size;
      if (loc + size > this.windows.pioLimit) throw new MachineError(`PCI I/O window exhausted (${size} bytes)`);
      this.pioNext = loc + size;
      return loc;
    }
    const loc = Math.ceil(this.mmioNext / size) * size;
    if (loc + size > this.windows.mmioLimit) throw new MachineError(`PCI MMIO window exhausted (${size} bytes)`);
    this.mmioNext = loc + size;
    return loc;
  }

  /**
   * Route PIRQ `pirq` (0..3 = A..D) to ISA IRQ `irq` through the PIIX3 at 00:01.0 (what a BIOS
   * does; without it INTx goes nowhere on a machine without firmware).
   */
  async routePirq(pirq: number, irq: number): Promise<void> {
    if (pirq < 0 || pirq > 3) throw new RangeError(`bad PIRQ ${pirq}`);
    await this.configWriteb(devfn(1, 0), PIIX3_PIRQC + pirq, irq);
  }

  async pirqRoute(pirq: number): Promise<number> {
    return this.configReadb(devfn(1, 0), PIIX3_PIRQC + pirq);
  }
}

export interface PciIds {
  vendorId: number;
  deviceId: number;
  revision: number;
  /** class << 8 | prog-if... as the upper 24 bits of dword 0x08: base, sub, prog-if. */
  classCode: number;
  subsystemVendorId: number;
  subsystemId: number;
}

export type BarKind = 'io' | 'mem32' | 'mem64';

export interface BarInfo {
  index: number;
  kind: BarKind;
  prefetchable: boolean;
  /** Size in bytes (0 when the BAR is not implemented). */
  size: number;
}

export interface PciCapability {
  id: number;
  offset: number;
}

/** One function on the bus. */
export class GuestPciDevice {
  readonly bars: (GuestBar | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined];
  msix: GuestMsix | undefined;

  constructor(readonly bus: GuestPciBus, readonly devfn: number, readonly ids: PciIds) {}

  get slot(): number {
    return this.devfn >> 3;
  }
  get fn(): number {
    return this.devfn & 7;
  }
  get machine(): Machine {
    return this.bus.machine;
  }
  toString(): string {
    return `00:${this.slot.toString(16).padStart(2, '0')}.${this.fn} ${this.ids.vendorId.toString(16)}:${this.ids.deviceId.toString(16)}`;
  }

  readb(offset: number): Promise<number> {
    return this.bus.configReadb(this.devfn, offset);
  }
  readw(offset: number): Promise<number> {
    return this.bus.configReadw(this.devfn, offset);
  }
  readl(offset: number): Promise<number> {
    return this.bus.configReadl(this.devfn, offset);
  }
  writeb(offset: number, v: number): Promise<void> {
    return this.bus.configWriteb(this.devfn, offset, v);
  }
  writew(offset: number, v: number): Promise<void> {
    return this.bus.configWritew(this.devfn, offset, v);
  }
  writel(offset: number, v: number): Promise<void> {
    return this.bus.configWritel(this.devfn, offset, v);
  }
  configDump(): Promise<Uint8Array> {
    return this.bus.configDump(this.devfn);
  }

  /** The capability list from 0x34 (empty if the status register has no CAP_LIST bit). */
  async capabilities(): Promise<PciCapability[]> {
    const out: PciCapability[] = [];
    if (!((await this.readw(STATUS)) & PciRegs.STATUS_CAP_LIST)) return out;
    let off = (await this.readb(CAPABILITY_LIST)) & 0xfc;
    const seen = new Set<number>();
    while (off !== 0) {
      if (off < 0x40 || seen.has(off)) throw new MachineError(`${this}: bad capability pointer 0x${off.toString(16)}`);
      seen.add(off);
      const w = await this.readw(off);
      out.push({ id: w & 0xff, offset: off });
      off = (w >> 8) & 0xfc;
    }
    return out;
  }

  /** Offset of the first (or, after `start`, the next) capability `id`, or 0 (libqos `qpci_find_capability`). */
  async findCapability(id: number, start = 0): Promise<number> {
    const caps = await this.capabilities();
    return caps.find((c) => c.id === id && c.offset > start)?.offset ?? 0;
  }

  /** Size a BAR by writing all ones (libqos `qpci_iomap`); restores the BAR afterwards. */
  async barInfo(index: number): Promise<BarInfo> {
    if (index < 0 || index > 5) throw new RangeError(`bad BAR ${index}`);
    const reg = BASE_ADDRESS_0 + 4 * index;
    const orig = await this.readl(reg);
    await this.writel(reg, 0xffff_ffff);
    const lo = await this.readl(reg);
    await this.writel(reg, orig);
    if (lo === 0) return { index, kind: 'mem32', prefetchable: false, size: 0 };
    // The size is the lowest address bit that reads back as one (libqos: 1 << ctz(addr)).
    const lowestBit = (x: number): number => (x & -x) >>> 0;
    if (lo & 1) {
      const mask = (lo & ~3) >>> 0;
      return { index, kind: 'io', prefetchable: false, size: mask === 0 ? 0 : lowestBit(mask) >>> 0 };
    }
    const prefetchable = (lo & 8) !== 0;
    const type = (lo >> 1) & 3;
    const loMask = (lo & ~0xf) >>> 0;
    if (type === 2) {
      if (index === 5) throw new MachineError(`${this}: 64-bit BAR5`);
      const origHi = await this.readl(reg + 4);
      await this.writel(reg + 4, 0xffff_ffff);
      const hi = await this.readl(reg + 4);
      await this.writel(reg + 4, origHi);
      const size = loMask !== 0 ? lowestBit(loMask) >>> 0 : hi !== 0 ? (lowestBit(hi) >>> 0) * 2 ** 32 : 0;
      return { index, kind: 'mem64', prefetchable, size };
    }
    return { index, kind: 'mem32', prefetchable, size: loMask === 0 ? 0 : lowestBit(loMask) >>> 0 };
  }

  /**
   * The implemented BARs, in order. The register after a 64-bit BAR is its upper half, not a
   * BAR of its own, and is not listed (sizing it alone would read back as a bogus I/O BAR).
   */
  async listBars(): Promise<BarInfo[]> {
    const out: BarInfo[] = [];
    for (let i = 0; i < 6; i++) {
      const b = await this.barInfo(i);
      if (b.size > 0) out.push(b);
      if (b.kind === 'mem64') i++;
    }
    return out;
  }

  /** Size, place and program a BAR; returns its accessor (libqos `qpci_iomap`). */
  async mapBar(index: number): Promise<GuestBar> {
    const existing = this.bars[index];
    if (existing) return existing;
    const info = await this.barInfo(index);
    if (info.size === 0) throw new MachineError(`${this}: BAR${index} is not implemented`);
    const io = info.kind === 'io';
    const addr = this.bus.allocate(io, info.size);
    const reg = BASE_ADDRESS_0 + 4 * index;
    if (io) await this.writel(reg, addr | 1);
    else {
      await this.writel(reg, addr);
      if (info.kind === 'mem64') await this.writel(reg + 4, Math.floor(addr / 2 ** 32));
    }
    const bar = new GuestBar(this.machine, info, addr);
    this.bars[index] = bar;
    return bar;
  }

  /** Set I/O, memory and bus-master enable and check they stuck (libqos `qpci_device_enable`). */
  async enable(bits = PciRegs.COMMAND_IO | PciRegs.COMMAND_MEMORY | PciRegs.COMMAND_MASTER): Promise<number> {
    const cmd = (await this.readw(COMMAND)) | bits;
    await this.writew(COMMAND, cmd);
    const back = await this.readw(COMMAND);
    if ((back & bits) !== bits) throw new MachineError(`${this}: command register 0x${back.toString(16)} lacks 0x${bits.toString(16)}`);
    return back;
  }

  async setCommand(value: number): Promise<void> {
    await this.writew(COMMAND, value);
  }

  async command(): Promise<number> {
    return this.readw(COMMAND);
  }

  async status(): Promise<number> {
    return this.readw(STATUS);
  }

  /** The interrupt pin register: 0 none, 1 INTA# ... 4 INTD#. */
  async interruptPin(): Promise<number> {
    return this.readb(INTERRUPT_PIN);
  }

  /**
   * Route this function's INTx to ISA IRQ `irq` through PIIX3 PIRQ routing, as QEMU's pc wires
   * it, and write the interrupt line register as a BIOS would. Returns the PIRQ used.
   */
  async routeIntx(irq: number): Promise<number> {
    const pin = await this.interruptPin();
    if (pin === 0) throw new MachineError(`${this}: no interrupt pin`);
    const pirq = pcPirqForPin(this.slot, pin);
    await this.bus.routePirq(pirq, irq);
    await this.writeb(INTERRUPT_LINE, irq);
    return pirq;
  }

  /** Find the MSI-X capability, map its BARs and set the enable bit (libqos `qpci_msix_enable`). */
  async enableMsix(): Promise<GuestMsix> {
    const cap = await this.findCapability(PciRegs.CAP_ID_MSIX);
    if (cap === 0) throw new MachineError(`${this}: no MSI-X capability`);
    const ctrl = await this.readw(cap + PciRegs.MSIX_FLAGS);
    await this.writew(cap + PciRegs.MSIX_FLAGS, ctrl | PciRegs.MSIX_FLAGS_ENABLE);
    const table = await this.readl(cap + PciRegs.MSIX_TABLE);
    const pba = await this.readl(cap + PciRegs.MSIX_PBA);
    const tableBar = await this.mapBar(table & PciRegs.MSIX_BIRMASK);
    const pbaBar = await this.mapBar(pba & PciRegs.MSIX_BIRMASK);
    this.msix = new GuestMsix(this, cap, (ctrl & PciRegs.MSIX_FLAGS_QSIZE) + 1, tableBar, (table & ~PciRegs.MSIX_BIRMASK) >>> 0, pbaBar, (pba & ~PciRegs.MSIX_BIRMASK) >>> 0);
    return this.msix;
  }

  /** Clear the MSI-X enable bit (libqos `qpci_msix_disable`). */
  async disableMsix(): Promise<void> {
    const cap = await this.findCapability(PciRegs.CAP_ID_MSIX);
    if (cap === 0) throw new MachineError(`${this}: no MSI-X capability`);
    const ctrl = await this.readw(cap + PciRegs.MSIX_FLAGS);
    await this.writew(cap + PciRegs.MSIX_FLAGS, ctrl & ~PciRegs.MSIX_FLAGS_ENABLE);
    this.msix = undefined;
  }
}

/** A placed BAR: register access relative to its base, by port I/O or MMIO as its kind says. */
export class GuestBar {
  readonly isIo: boolean;
  constructor(readonly machine: Machine, readonly info: BarInfo, readonly addr: number) {
    this.isIo = info.kind === 'io';
  }
  get size(): number {
    return this.info.size;
  }
  private at(off: number, width: number): number {
    if (!Number.isInteger(off) || off < 0 || off + width > this.info.size) {
      throw new RangeError(`BAR${this.info.index}: access of ${width} at 0x${off.toString(16)} outside 0x${this.info.size.toString(16)}`);
    }
    return this.addr + off;
  }
  async readb(off: number): Promise<number> {
    const a = this.at(off, 1);
    return this.isIo ? this.machine.inb(a) : this.machine.readb(a);
  }
  async readw(off: number): Promise<number> {
    const a = this.at(off, 2);
    return this.isIo ? this.machine.inw(a) : this.machine.readw(a);
  }
  async readl(off: number): Promise<number> {
    const a = this.at(off, 4);
    return this.isIo ? this.machine.inl(a) : this.machine.readl(a);
  }
  async readq(off: number): Promise<bigint> {
    const a = this.at(off, 8);
    if (!this.isIo) return this.machine.readq(a);
    const [lo, hi] = await Promise.all([this.machine.inl(a), this.machine.inl(a + 4)]);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }
  async writeb(off: number, v: number): Promise<void> {
    const a = this.at(off, 1);
    return this.isIo ? this.machine.outb(a, v) : this.machine.writeb(a, v);
  }
  async writew(off: number, v: number): Promise<void> {
    const a = this.at(off, 2);
    return this.isIo ? this.machine.outw(a, v) : this.machine.writew(a, v);
  }
  async writel(off: number, v: number): Promise<void> {
    const a = this.at(off, 4);
    return this.isIo ? this.machine.outl(a, v) : this.machine.writel(a, v);
  }
  async writeq(off: number, v: bigint): Promise<void> {
    const a = this.at(off, 8);
    if (!this.isIo) return this.machine.writeq(a, v);
    await Promise.all([this.machine.outl(a, Number(v & 0xffff_ffffn)), this.machine.outl(a + 4, Number((v >> 32n) & 0xffff_ffffn))]);
  }
}

export interface MsixEntry {
  addr: bigint;
  data: number;
  vectorCtrl: number;
}

/** An enabled MSI-X capability: table and PBA access (libqos `qpci_msix_*`). */
export class GuestMsix {
  constructor(
    readonly device: GuestPciDevice,
    /** Config offset of the capability. */
    readonly cap: number,
    readonly tableSize: number,
    readonly tableBar: GuestBar,
    readonly tableOffset: number,
    readonly pbaBar: GuestBar,
    readonly pbaOffset: number,
  ) {}

  private entryOff(entry: number): number {
    if (!Number.isInteger(entry) || entry < 0 || entry >= this.tableSize) throw new RangeError(`MSI-X entry ${entry} outside table of ${this.tableSize}`);
    return this.tableOffset + entry * PciRegs.MSIX_ENTRY_SIZE;
  }

  /**
   * Program `entry` with a message address and data and unmask it, as libqos
   * `qvirtqueue_pci_msix_setup` does (address low, address high, data, then clear the mask bit).
   */
  async program(entry: number, addr: number, data: number, masked = false): Promise<void> {
    const off = this.entryOff(entry);
    await this.tableBar.writel(off + PciRegs.MSIX_ENTRY_LOWER_ADDR, addr >>> 0);
    await this.tableBar.writel(off + PciRegs.MSIX_ENTRY_UPPER_ADDR, Math.floor(addr / 2 ** 32));
    await this.tableBar.writel(off + PciRegs.MSIX_ENTRY_DATA, data >>> 0);
    await this.mask(entry, masked);
  }

  async readEntry(entry: number): Promise<MsixEntry> {
    const off = this.entryOff(entry);
    const [lo, hi, data, ctrl] = await Promise.all([0, 4, 8, 12].map((o) => this.tableBar.readl(off + o)));
    return { addr: (BigInt(hi!) << 32n) | BigInt(lo!), data: data!, vectorCtrl: ctrl! };
  }

  /** Set or clear the entry's mask bit (read-modify-write of vector control). */
  async mask(entry: number, masked: boolean): Promise<void> {
    const off = this.entryOff(entry) + PciRegs.MSIX_ENTRY_VECTOR_CTRL;
    const ctrl = await this.tableBar.readl(off);
    await this.tableBar.writel(off, masked ? ctrl | PciRegs.MSIX_ENTRY_CTRL_MASKBIT : ctrl & ~PciRegs.MSIX_ENTRY_CTRL_MASKBIT);
  }

  /** Function mask (MSI-X control bit 14). */
  async setMaskAll(masked: boolean): Promise<void> {
    const ctrl = await this.device.readw(this.cap + PciRegs.MSIX_FLAGS);
    await this.device.writew(this.cap + PciRegs.MSIX_FLAGS, masked ? ctrl | PciRegs.MSIX_FLAGS_MASKALL : ctrl & ~PciRegs.MSIX_FLAGS_MASKALL);
  }

  /** Masked by the function mask or its own mask bit (libqos `qpci_msix_masked`). */
  async masked(entry: number): Promise<boolean> {
    const ctrl = await this.device.readw(this.cap + PciRegs.MSIX_FLAGS);
    if (ctrl & PciRegs.MSIX_FLAGS_MASKALL) return true;
    return ((await this.tableBar.readl(this.entryOff(entry) + PciRegs.MSIX_ENTRY_VECTOR_CTRL)) & PciRegs.MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  /**
   * The entry's pending bit in the PBA. (libqos `qpci_msix_pending` also writes the PBA word
   * back with the bit cleared; the PBA is read-only, so that write has no effect and is left out.)
   */
  async pending(entry: number): Promise<boolean> {
    this.entryOff(entry);
    const word = await this.pbaBar.readl(this.pbaOffset + Math.floor(entry / 32) * 4);
    return ((word >>> (entry % 32)) & 1) === 1;
  }
}
