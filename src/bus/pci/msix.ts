import type { AccessSize } from '../../machine/address-space.js';
import type { QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { BarRegion, getLong, PCI_CAP_ID_MSIX, setLong, setWord, type PCIDevice } from './pci-device.js';

// MSI-X capability and table layout (PCI Local Bus 3.0 §6.8.2; QEMU's pci_regs.h / msix.h).
export const PCI_MSIX_FLAGS = 2;
export const PCI_MSIX_TABLE = 4;
export const PCI_MSIX_PBA = 8;
export const PCI_MSIX_FLAGS_QSIZE = 0x07ff;
export const PCI_MSIX_FLAGS_MASKALL = 0x4000;
export const PCI_MSIX_FLAGS_ENABLE = 0x8000;
export const PCI_MSIX_FLAGS_BIRMASK = 0x7;
export const PCI_MSIX_ENTRY_SIZE = 16;
export const PCI_MSIX_ENTRY_LOWER_ADDR = 0x0;
export const PCI_MSIX_ENTRY_UPPER_ADDR = 0x4;
export const PCI_MSIX_ENTRY_DATA = 0x8;
export const PCI_MSIX_ENTRY_VECTOR_CTRL = 0xc;
export const PCI_MSIX_ENTRY_CTRL_MASKBIT = 0x1;
export const MSIX_CAP_LENGTH = 12;

/** The byte of the message control word holding the enable and function-mask bits. */
const MSIX_CONTROL_OFFSET = PCI_MSIX_FLAGS + 1;
const MSIX_ENABLE_MASK = PCI_MSIX_FLAGS_ENABLE >> 8;
const MSIX_MASKALL_MASK = PCI_MSIX_FLAGS_MASKALL >> 8;

/** Size and layout of the exclusive BAR `msix_init_exclusive_bar` creates for `nentries`. */
export function msixExclusiveBarLayout(nentries: number): { barSize: number; tableOffset: number; pbaOffset: number; pbaSize: number } {
  let barSize = 4096;
  let pbaOffset = barSize / 2;
  const pbaSize = (Math.ceil(nentries / 64) * 64) / 8;
  if (nentries * PCI_MSIX_ENTRY_SIZE > pbaOffset) pbaOffset = nentries * PCI_MSIX_ENTRY_SIZE;
  if (pbaOffset + pbaSize > 4096) barSize = pbaOffset + pbaSize;
  barSize = 2 ** Math.ceil(Math.log2(barSize));
  return { barSize, tableOffset: 0, pbaOffset, pbaSize };
}

/**
 * MSI-X for one PCI function, as QEMU 7.2's `hw/pci/msix.c`: the capability (table size,
 * enable and function-mask bits), the vector table and pending bit array (PBA) behind a BAR,
 * per-vector masking with pending bits set while masked and delivered on unmask, and the
 * "used" count a device keeps per vector (`msix_vector_use`): a vector nobody uses sends
 * nothing. A message is a 32-bit little-endian memory write of the entry's data to its 64-bit
 * address, made through the function's bus-master gate.
 *
 * Table accesses must be 4 bytes and aligned (QEMU's `valid` sizes 4..8, split into 4-byte
 * halves); other widths read 0 and are ignored. The PBA is read-only: writes are ignored
 * (CVE-2015-7549 was a PBA region without a write handler).
 */
export class Msix {
  readonly nentries: number;
  /** Offset of the capability in configuration space (QEMU's `msix_cap`). */
  readonly cap: number;
  readonly table: Uint8Array;
  readonly pba: Uint8Array;
  /** Per-vector use count (QEMU's `msix_entry_used`). */
  readonly entryUsed: Uint32Array;
  /** Disabled or function-masked (QEMU's `msix_function_masked`). */
  functionMasked = true;
  readonly tableBarNr: number;
  readonly tableOffset: number;
  readonly pbaBarNr: number;
  readonly pbaOffset: number;

  /**
   * QEMU's `msix_init`. The table and PBA are placed by the caller (`exclusiveBar` puts them in
   * a BAR of their own); `capPos` 0 puts the capability in the first free space.
   */
  constructor(readonly dev: PCIDevice, nentries: number, tableBarNr: number, tableOffset: number, pbaBarNr: number, pbaOffset: number, capPos = 0) {
    if (!Number.isInteger(nentries) || nentries < 1 || nentries > PCI_MSIX_FLAGS_QSIZE + 1) {
      throw new RangeError(`The number of MSI-X vectors is invalid (${nentries})`);
    }
    if ((tableOffset | pbaOffset) & PCI_MSIX_FLAGS_BIRMASK) throw new RangeError('MSI-X table and PBA offsets must be 8-byte aligned');
    this.nentries = nentries;
    this.tableBarNr = tableBarNr;
    this.tableOffset = tableOffset;
    this.pbaBarNr = pbaBarNr;
    this.pbaOffset = pbaOffset;
    const cap = dev.addCapability(PCI_CAP_ID_MSIX, capPos, MSIX_CAP_LENGTH);
    this.cap = cap;
    setWord(dev.config, cap + PCI_MSIX_FLAGS, nentries - 1);
    setLong(dev.config, cap + PCI_MSIX_TABLE, (tableOffset | tableBarNr) >>> 0);
    setLong(dev.config, cap + PCI_MSIX_PBA, (pbaOffset | pbaBarNr) >>> 0);
    dev.wmask[cap + MSIX_CONTROL_OFFSET] = dev.wmask[cap + MSIX_CONTROL_OFFSET]! | MSIX_ENABLE_MASK | MSIX_MASKALL_MASK;
    this.table = new Uint8Array(nentries * PCI_MSIX_ENTRY_SIZE);
    this.pba = new Uint8Array((Math.ceil(nentries / 64) * 64) / 8);
    this.entryUsed = new Uint32Array(nentries);
    dev.msix = this;
    this.maskAll();
  }

  /**
   * QEMU's `msix_init_exclusive_bar`: a memory BAR `barNr` holding only the table (at 0) and the
   * PBA (at half the BAR, 0x800 for up to 128 vectors), 4 KiB unless the vectors need more.
   */
  static exclusiveBar(dev: PCIDevice, nentries: number, barNr: number): Msix {
    const l = msixExclusiveBarLayout(nentries);
    const msix = new Msix(dev, nentries, barNr, l.tableOffset, barNr, l.pbaOffset);
    dev.registerBar(barNr, 'mem32', l.barSize, msix.barHandler(l.barSize));
    return msix;
  }

  /** A handler for a BAR that holds both the table and the PBA (and nothing else). */
  barHandler(barSize: number): BarRegion {
    const tableEnd = this.tableOffset + this.table.length;
    const pbaEnd = this.pbaOffset + this.pba.length;
    return new BarRegion(
      barSize,
      0,
      (o, s) => {
        if (o >= this.tableOffset && o < tableEnd) return this.tableRead(o - this.tableOffset, s);
        if (o >= this.pbaOffset && o < pbaEnd) return this.pbaRead(o - this.pbaOffset, s);
        return 0;
      },
      (o, s, v) => {
        if (o >= this.tableOffset && o < tableEnd) this.tableWrite(o - this.tableOffset, s, v);
        // The PBA ignores writes; the rest of the BAR is empty.
      },
    );
  }

  // ---------------------------------------------------------------------------------------
  // State

  /** QEMU's `msix_enabled`. */
  enabled(): boolean {
    return (this.dev.config[this.cap + MSIX_CONTROL_OFFSET]! & MSIX_ENABLE_MASK) !== 0;
  }

  /** The function mask bit (QEMU's `msix_masked`). */
  private maskAllBit(): boolean {
    return (this.dev.config[this.cap + MSIX_CONTROL_OFFSET]! & MSIX_MASKALL_MASK) !== 0;
  }

  private updateFunctionMasked(): void {
    this.functionMasked = !this.enabled() || this.maskAllBit();
  }

  /** QEMU's `msix_vector_masked`. */
  private vectorMasked(vector: number, fmask: boolean): boolean {
    return fmask || (this.table[vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL]! & PCI_MSIX_ENTRY_CTRL_MASKBIT) !== 0;
  }

  /** QEMU's `msix_is_masked`: the vector's own mask bit or the function mask (or MSI-X off). */
  isMasked(vector: number): boolean {
    return this.vectorMasked(vector, this.functionMasked);
  }

  isPending(vector: number): boolean {
    return (this.pba[vector >> 3]! & (1 << (vector & 7))) !== 0;
  }

  private setPending(vector: number): void {
    this.pba[vector >> 3] = this.pba[vector >> 3]! | (1 << (vector & 7));
  }

  private clrPending(vector: number): void {
    this.pba[vector >> 3] = this.pba[vector >> 3]! & ~(1 << (vector & 7));
  }

  /** QEMU's `msix_handle_mask_update`: unmasking a pending vector delivers it. */
  private handleMaskUpdate(vector: number, wasMasked: boolean): void {
    const isMasked = this.isMasked(vector);
    if (isMasked === wasMasked) return;
    if (!isMasked && this.isPending(vector)) {
      this.clrPending(vector);
      this.notify(vector);
    }
  }

  /** QEMU's `msix_set_mask`. */
  setMask(vector: number, mask: boolean): void {
    if (vector < 0 || vector >= this.nentries) return;
    const o = vector * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL;
    const was = this.isMasked(vector);
    this.table[o] = mask ? this.table[o]! | PCI_MSIX_ENTRY_CTRL_MASKBIT : this.table[o]! & ~PCI_MSIX_ENTRY_CTRL_MASKBIT;
    this.handleMaskUpdate(vector, was);
  }

  private maskAll(): void {
    for (let v = 0; v < this.nentries; v++) {
      const was = this.isMasked(v);
      const o = v * PCI_MSIX_ENTRY_SIZE + PCI_MSIX_ENTRY_VECTOR_CTRL;
      this.table[o] = this.table[o]! | PCI_MSIX_ENTRY_CTRL_MASKBIT;
      this.handleMaskUpdate(v, was);
    }
  }

  /** The message programmed in entry `vector`. */
  message(vector: number): { address: bigint; data: number } {
    const o = vector * PCI_MSIX_ENTRY_SIZE;
    const lo = getLong(this.table, o + PCI_MSIX_ENTRY_LOWER_ADDR);
    const hi = getLong(this.table, o + PCI_MSIX_ENTRY_UPPER_ADDR);
    return { address: (BigInt(hi) << 32n) | BigInt(lo), data: getLong(this.table, o + PCI_MSIX_ENTRY_DATA) };
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space (called from the function's default config write)

  /** QEMU's `msix_write_config`: react to writes covering the enable / function-mask byte. */
  writeConfig(addr: number, _val: number, len: number): void {
    const enablePos = this.cap + MSIX_CONTROL_OFFSET;
    if (!(addr <= enablePos && enablePos < addr + len)) return;
    const wasMasked = this.functionMasked;
    this.updateFunctionMasked();
    if (!this.enabled()) return;
    this.dev.deassertIntx();
    if (this.functionMasked === wasMasked) return;
    for (let v = 0; v < this.nentries; v++) this.handleMaskUpdate(v, this.vectorMasked(v, wasMasked));
  }

  // ---------------------------------------------------------------------------------------
  // Table and PBA (offsets relative to their start)

  tableRead(offset: number, size: AccessSize): number {
    if (size !== 4 || offset & 3 || offset + 4 > this.table.length) return 0;
    return getLong(this.table, offset);
  }

  tableWrite(offset: number, size: AccessSize, value: number): void {
    if (size !== 4 || offset & 3 || offset + 4 > this.table.length) return;
    const vector = Math.floor(offset / PCI_MSIX_ENTRY_SIZE);
    const was = this.isMasked(vector);
    setLong(this.table, offset, value >>> 0);
    this.handleMaskUpdate(vector, was);
  }

  pbaRead(offset: number, size: AccessSize): number {
    if (size !== 4 || offset & 3 || offset + 4 > this.pba.length) return 0;
    return getLong(this.pba, offset);
  }

  // ---------------------------------------------------------------------------------------
  // Device side

  /**
   * QEMU's `msix_notify`: send `vector`'s message, or set its pending bit while it is masked.
   * Vectors the device does not use send nothing.
   */
  notify(vector: number): void {
    if (!Number.isInteger(vector) || vector < 0 || vector >= this.nentries) return;
    if (!this.entryUsed[vector]) return;
    if (this.isMasked(vector)) {
      this.setPending(vector);
      return;
    }
    const msg = this.message(vector);
    const sent = this.dev.dmaWrite32(msg.address, msg.data);
    const tr = this.dev.tracer;
    if (tr) {
      tr({ type: 'device', device: this.dev.name, message: `MSI-X vector ${vector}: 0x${msg.data.toString(16)} -> 0x${msg.address.toString(16)}${sent ? '' : ' (dropped: bus mastering off)'}` });
    }
  }

  /** QEMU's `msix_vector_use`. */
  vectorUse(vector: number): void {
    if (vector < 0 || vector >= this.nentries) throw new RangeError(`MSI-X vector ${vector} out of range`);
    this.entryUsed[vector]!++;
  }

  /** QEMU's `msix_vector_unuse`: the last user gone clears the pending bit. */
  vectorUnuse(vector: number): void {
    if (vector < 0 || vector >= this.nentries) throw new RangeError(`MSI-X vector ${vector} out of range`);
    if (!this.entryUsed[vector]) return;
    if (--this.entryUsed[vector]!) return;
    this.clrPending(vector);
  }

  /** QEMU's `msix_unuse_all_vectors`. */
  unuseAll(): void {
    this.entryUsed.fill(0);
    for (let v = 0; v < this.nentries; v++) this.clrPending(v);
  }

  /** QEMU's `msix_reset`: disabled, unmasked function, empty table with every vector masked. */
  reset(): void {
    for (let v = 0; v < this.nentries; v++) this.clrPending(v);
    const c = this.dev.config;
    c[this.cap + MSIX_CONTROL_OFFSET] = c[this.cap + MSIX_CONTROL_OFFSET]! & ~this.dev.wmask[this.cap + MSIX_CONTROL_OFFSET]!;
    this.table.fill(0);
    this.pba.fill(0);
    this.maskAll();
  }

  // ---------------------------------------------------------------------------------------
  // Migration (QEMU's msix_save / msix_load)

  save(f: QEMUFileWriter): void {
    f.putBuffer(this.table);
    f.putBuffer(this.pba.subarray(0, Math.ceil(this.nentries / 8)));
  }

  /** Read what `save` wrote; nothing changes until the returned function runs. */
  load(f: QEMUFileReader): () => void {
    const table = f.getBuffer(this.table.length, 'msix table');
    const pba = f.getBuffer(Math.ceil(this.nentries / 8), 'msix pba');
    return () => {
      for (let v = 0; v < this.nentries; v++) this.clrPending(v);
      this.table.set(table);
      this.pba.set(pba);
      this.updateFunctionMasked();
      for (let v = 0; v < this.nentries; v++) this.handleMaskUpdate(v, true);
    };
  }
}
