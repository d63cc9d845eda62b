/**
 * The PCI host side of the pc machine (QEMU 7.2 `hw/pci/pci_host.c`, `hw/pci/pci.c`): bus 0 with
 * up to 256 functions, configuration mechanism #1 at ports 0xcf8 (address) and 0xcfc..0xcff
 * (data), BAR windows placed in the machine's port and memory spaces when a function's decoding
 * changes, bus-master writes (MSI-X messages) into system memory, and INTx pins counted per
 * PIRQ line the way QEMU's `pci_change_irq_level` does, handed to the ISA bridge for routing.
 *
 * No Node imports: part of the browser bundle.
 */
import type { PciActiveBar, PciBusHost, PciFunction } from '../bus/pci/pci-bus.js';
import { piixPirq } from '../bus/pci/piix.js';
import type { AccessSize, IoHandler, Mapping } from './address-space.js';
import { accessSize, IO_SPACE_SIZE, type SystemMemory } from './system-memory.js';

export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
export const PCI_CONFIG_DATA_PORT = 0xcfc;
export const PCI_SLOT_MAX = 32;
export const PCI_FUNC_MAX = 8;
export const PCI_NUM_PINS = 4;

export const pciSlot = (devfn: number): number => devfn >> 3;
export const pciFunc = (devfn: number): number => devfn & 7;
export const pciDevfn = (slot: number, fn: number): number => (slot << 3) | fn;

/** "SS.F" as QEMU prints a devfn (e.g. `02.0`). */
export function formatDevfn(devfn: number): string {
  return `${pciSlot(devfn).toString(16).padStart(2, '0')}.${pciFunc(devfn)}`;
}

export interface PciHostOptions {
  /**
   * QEMU's `map_irq`: the PIRQ line (0..3) that pin `intx` (0 = INTA#) of the function at `devfn`
   * drives. Default: PIIX3's `(intx + slot - 1) & 3`.
   */
  mapIrq?: (devfn: number, intx: number) => number;
  /** QEMU's `set_irq`: PIRQ line `pirq` is now at `level` (any function drives it). */
  setIrq?: (pirq: number, level: boolean) => void;
}

/** PIIX3's `pci_slot_get_pirq` (hw/isa/piix3.c), by devfn and 0-based pin. */
export function piix3SlotGetPirq(devfn: number, intx: number): number {
  return piixPirq(pciSlot(devfn), intx + 1);
}

/** One PCI function on the bus with its id for error messages. */
export interface PciSlotEntry {
  fn: PciFunction;
  devfn: number;
  /** QEMU's description in conflicts ("i440FX,id=(null)"). */
  label: string;
}

/** A mapped BAR window and what it was mapped as (`type:addr:size` and the handler). */
interface BarWindow {
  key: string;
  handler: unknown;
  mapping: Mapping;
  io: boolean;
}

export class PciHost implements PciBusHost {
  /** QEMU's `config_reg`: the last dword written to 0xcf8. */
  configReg = 0;
  private readonly devices: (PciSlotEntry | undefined)[] = new Array(256).fill(undefined);
  private readonly byFn = new Map<PciFunction, PciSlotEntry>();
  /** Each function's mapped BAR windows by BAR index, with what each was mapped as. */
  private readonly windows = new Map<PciFunction, Map<number, BarWindow>>();
  /** Levels of each function's INTx pins (bit per pin), QEMU's `irq_state`, as the host saw them. */
  private readonly pinLevels = new Map<PciFunction, number>();
  /** QEMU's `irq_count`: how many asserted pins drive each PIRQ line. */
  readonly irqCount = [0, 0, 0, 0];
  private readonly mapIrq: (devfn: number, intx: number) => number;
  setIrq: ((pirq: number, level: boolean) => void) | undefined;

  constructor(private readonly sys: SystemMemory, opts: PciHostOptions = {}) {
    this.mapIrq = opts.mapIrq ?? piix3SlotGetPirq;
    this.setIrq = opts.setIrq;
    sys.io.map(PCI_CONFIG_ADDRESS_PORT, 4, this.addressPort, 'pci-conf-idx');
    sys.io.map(PCI_CONFIG_DATA_PORT, 4, this.dataPort, 'pci-conf-data');
  }

  // ---------------------------------------------------------------------------------------
  // Functions

  /** The function at `devfn`, if any. */
  get(devfn: number): PciFunction | undefined {
    return this.devices[devfn]?.fn;
  }

  entries(): PciSlotEntry[] {
    return this.devices.filter((e): e is PciSlotEntry => e !== undefined);
  }

  devfnOf(fn: PciFunction): number | undefined {
    return this.byFn.get(fn)?.devfn;
  }

  /**
   * QEMU's `do_pci_register_device` placement: at `devfn`, or with `devfn` undefined in the first
   * slot whose function 0 is free. Throws with QEMU's message when the place is taken.
   */
  plug(fn: PciFunction, devfn: number | undefined, label: string, typeName = label): number {
    if (devfn === undefined) {
      let found = -1;
      for (let d = 0; d < 256; d += PCI_FUNC_MAX) {
        if (!this.devices[d]) {
          found = d;
          break;
        }
      }
      if (found < 0) throw new Error(`PCI: no slot/function available for ${typeName}, all in use or reserved`);
      devfn = found;
    } else if (this.devices[devfn]) {
      throw new Error(`PCI: slot ${pciSlot(devfn)} function ${pciFunc(devfn)} not available for ${typeName}, in use by ${this.devices[devfn]!.label}`);
    }
    // pci_init_multifunction: only function 0 carries the multifunction bit.
    const slot = pciSlot(devfn);
    if (pciFunc(devfn)) {
      const f0 = this.devices[pciDevfn(slot, 0)];
      if (f0 && !isMultifunction(f0.fn)) {
        throw new Error(`PCI: single function device can't be populated in function ${slot.toString(16)}.${pciFunc(devfn).toString(16)}`);
      }
    } else if (!isMultifunction(fn)) {
      for (let f = 1; f < PCI_FUNC_MAX; f++) {
        if (this.devices[pciDevfn(slot, f)]) {
          throw new Error(`PCI: ${slot.toString(16)}.0 indicates single function, but ${slot.toString(16)}.${f.toString(16)} is already populated.`);
        }
      }
    }
    const entry: PciSlotEntry = { fn, devfn, label };
    this.devices[devfn] = entry;
    this.byFn.set(fn, entry);
    fn.attach(this, devfn);
    this.barsChanged(fn);
    return devfn;
  }

  /** Machine reset of every function on the bus. */
  reset(): void {
    for (const e of this.entries()) e.fn.reset();
    this.configReg = 0;
  }

  // ---------------------------------------------------------------------------------------
  // Configuration mechanism #1

  /** 0xcf8: a dword write latches the address; any read returns it (QEMU's `pci_host_config_*`). */
  private readonly addressPort: IoHandler = {
    read: () => this.configReg,
    write: (offset, size, value) => {
      if (offset === 0 && size === 4) this.configReg = value >>> 0;
    },
  };

  /** 0xcfc..0xcff: the configuration data window (QEMU's `pci_host_data_*`). */
  private readonly dataPort: IoHandler = {
    read: (offset, size) => {
      if (!(this.configReg & 0x8000_0000)) return 0xffff_ffff;
      return this.dataRead((this.configReg | (offset & 3)) >>> 0, size);
    },
    write: (offset, size, value) => {
      if (this.configReg & 0x8000_0000) this.dataWrite((this.configReg | (offset & 3)) >>> 0, size, value);
    },
  };

  /** QEMU's `pci_data_read`: bus 0 only; absent functions read all ones. */
  dataRead(addr: number, size: AccessSize): number {
    const fn = this.functionAt(addr);
    if (!fn) return 0xffff_ffff;
    const offset = addr & 0xff;
    const len = Math.min(size, 0x100 - offset);
    return readConfigPieces(fn, offset, len);
  }

  /** QEMU's `pci_data_write`. */
  dataWrite(addr: number, size: AccessSize, value: number): void {
    const fn = this.functionAt(addr);
    if (!fn) return;
    const offset = addr & 0xff;
    const len = Math.min(size, 0x100 - offset);
    writeConfigPieces(fn, offset, len, value);
  }

  private functionAt(addr: number): PciFunction | undefined {
    const bus = (addr >>> 16) & 0xff;
    if (bus !== 0) return undefined;
    return this.devices[(addr >>> 8) & 0xff]?.fn;
  }

  /** Direct configuration access for a host (e.g. the machine's own tests or a BIOS stand-in). */
  configRead(devfn: number, offset: number, size: AccessSize): number {
    return this.dataRead(0x8000_0000 | (devfn << 8) | (offset & 0xff), size);
  }
  configWrite(devfn: number, offset: number, size: AccessSize, value: number): void {
    this.dataWrite(0x8000_0000 | (devfn << 8) | (offset & 0xff), size, value);
  }

  // ---------------------------------------------------------------------------------------
  // PciBusHost

  /**
   * QEMU's `pci_update_mappings`: only a BAR whose place changed is unmapped and mapped again
   * (as the newest window); an unchanged BAR keeps its place. Where two BARs overlap, the one
   * placed last answers, as with QEMU's equal-priority subregions (the last one added wins).
   */
  barsChanged(fn: PciFunction): void {
    const old = this.windows.get(fn) ?? new Map<number, BarWindow>();
    const next = new Map<number, BarWindow>();
    const active = fn.activeBars();
    const keyOf = (bar: PciActiveBar): string => `${bar.type}:${bar.addr}:${bar.size}`;
    for (const bar of active) {
      const w = old.get(bar.index);
      if (w && w.key === keyOf(bar) && w.handler === bar.handler) {
        next.set(bar.index, w);
        old.delete(bar.index);
      }
    }
    for (const w of old.values()) {
      if (w.io) this.sys.io.unmap(w.mapping);
      else this.sys.mmio.unmap(w.mapping);
    }
    const label = this.byFn.get(fn)?.label ?? fn.name;
    for (const bar of active) {
      if (next.has(bar.index)) continue;
      const m = this.mapBar(bar, label);
      if (m) next.set(bar.index, { key: keyOf(bar), handler: bar.handler, mapping: m, io: bar.type === 'io' });
    }
    this.windows.set(fn, next);
  }

  private mapBar(bar: PciActiveBar, label: string): Mapping | undefined {
    if (!Number.isSafeInteger(bar.addr) || bar.addr < 0 || !Number.isSafeInteger(bar.size) || bar.size <= 0) return undefined;
    if (bar.addr + bar.size > Number.MAX_SAFE_INTEGER) return undefined;
    const name = `${label} BAR${bar.index}`;
    if (bar.type === 'io') {
      // The port space is 64 KiB; a window starting beyond it can never be reached.
      if (bar.addr >= IO_SPACE_SIZE) return undefined;
      return this.sys.io.map(bar.addr, bar.size, bar.handler, name);
    }
    return this.sys.mmio.map(bar.addr, bar.size, bar.handler, name);
  }

  dmaWrite(_fn: PciFunction, addr: number, data: Uint8Array): void {
    if (!Number.isSafeInteger(addr) || addr < 0) return;
    this.sys.write(addr, data);
  }

  setIntx(fn: PciFunction, pin: number, level: boolean): void {
    if (!Number.isInteger(pin) || pin < 1 || pin > PCI_NUM_PINS) return;
    const entry = this.byFn.get(fn);
    if (!entry) return;
    const bit = 1 << (pin - 1);
    const was = this.pinLevels.get(fn) ?? 0;
    if (((was & bit) !== 0) === level) return;
    this.pinLevels.set(fn, level ? was | bit : was & ~bit);
    // pci_change_irq_level
    const pirq = this.mapIrq(entry.devfn, pin - 1) & 3;
    this.irqCount[pirq]! += level ? 1 : -1;
    this.setIrq?.(pirq, this.irqCount[pirq]! !== 0);
  }

  /** QEMU's `pci_bus_get_irq_level`. */
  irqLevel(pirq: number): boolean {
    return this.irqCount[pirq & 3]! !== 0;
  }
}

function isMultifunction(fn: PciFunction): boolean {
  return (fn.configRead(0x0e, 1) & 0x80) !== 0;
}

/**
 * A configuration access of `len` bytes (1..4) at `offset`, in naturally aligned pieces as the
 * `PciFunction` contract asks (QEMU hands unaligned ones to `config_read` whole; for the byte
 * copy that `pci_default_read_config` does, the result is the same).
 */
function readConfigPieces(fn: PciFunction, offset: number, len: number): number {
  if ((len === 1 || len === 2 || len === 4) && (offset & (len - 1)) === 0) return fn.configRead(offset, len as AccessSize) >>> 0;
  let value = 0;
  let done = 0;
  while (done < len) {
    const l = accessSize(offset + done, len - done);
    value += (fn.configRead(offset + done, l) & (l === 4 ? 0xffff_ffff : l === 2 ? 0xffff : 0xff)) * 2 ** (8 * done);
    done += l;
  }
  return value >>> 0;
}

function writeConfigPieces(fn: PciFunction, offset: number, len: number, value: number): void {
  if ((len === 1 || len === 2 || len === 4) && (offset & (len - 1)) === 0) {
    fn.configWrite(offset, len as AccessSize, value);
    return;
  }
  let done = 0;
  value >>>= 0;
  while (done < len) {
    const l = accessSize(offset + done, len - done);
    const piece = Math.floor(value / 2 ** (8 * done)) & (l === 4 ? 0xffff_ffff : l === 2 ? 0xffff : 0xff);
    fn.configWrite(offset + done, l, piece >>> 0);
    done += l;
  }
}
