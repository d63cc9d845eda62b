/**
 * The IOAPIC's register window (QEMU 7.2 hw/intc/ioapic.c `ioapic_mem_read/write`): IOREGSEL at
 * +0x00, IOWIN at +0x10 (32-bit accesses only), the ID, version (0x20, 24 entries) and
 * arbitration registers, and the 24 64-bit redirection entries, reset to masked. Interrupt
 * delivery to CPUs is not modelled (there are none): the read-only Remote IRR and delivery
 * status bits stay 0, which is what QEMU shows for masked or edge-triggered entries. The input
 * pins themselves are the `IrqLines` that `irq_intercept_in` reports.
 *
 * No Node imports: part of the browser bundle.
 */
import type { AccessSize, IoHandler } from './address-space.js';

/** Pins of one IOAPIC (QEMU's IOAPIC_NUM_PINS). */
export const IOAPIC_NUM_PINS = 24;
export const IO_APIC_DEFAULT_ADDRESS = 0xfec0_0000;
export const IO_APIC_SECONDARY_ADDRESS = IO_APIC_DEFAULT_ADDRESS + 0x1_0000;
export const IOAPIC_WINDOW_SIZE = 0x1000;

const IOAPIC_IOREGSEL = 0x00;
const IOAPIC_IOWIN = 0x10;
const IOAPIC_REG_ID = 0x00;
const IOAPIC_REG_VER = 0x01;
const IOAPIC_REG_ARB = 0x02;
const IOAPIC_REG_REDTBL_BASE = 0x10;
const IOAPIC_VERSION = 0x20;
const IOAPIC_LVT_MASKED = 1 << 16;
/** Remote IRR (bit 14) and delivery status (bit 12): read-only. */
const IOAPIC_RO_BITS = (1 << 14) | (1 << 12);

export class IoapicRegisters implements IoHandler {
  ioregsel = 0;
  id = 0;
  /** Redirection entries as [low, high] dwords. */
  readonly redtbl: [number, number][] = [];

  constructor() {
    this.reset();
  }

  reset(): void {
    this.id = 0;
    this.ioregsel = 0;
    this.redtbl.length = 0;
    for (let i = 0; i < IOAPIC_NUM_PINS; i++) this.redtbl.push([IOAPIC_LVT_MASKED, 0]);
  }

  read(offset: number, size: AccessSize): number {
    switch (offset & 0xff) {
      case IOAPIC_IOREGSEL:
        return this.ioregsel;
      case IOAPIC_IOWIN: {
        if (size !== 4) return 0;
        const sel = this.ioregsel;
        if (sel === IOAPIC_REG_ID || sel === IOAPIC_REG_ARB) return (this.id << 24) >>> 0;
        if (sel === IOAPIC_REG_VER) return (IOAPIC_VERSION | ((IOAPIC_NUM_PINS - 1) << 16)) >>> 0;
        const index = (sel - IOAPIC_REG_REDTBL_BASE) >> 1;
        if (index >= 0 && index < IOAPIC_NUM_PINS) return this.redtbl[index]![sel & 1]! >>> 0;
        return 0;
      }
      default:
        return 0;
    }
  }

  write(offset: number, size: AccessSize, value: number): void {
    switch (offset & 0xff) {
      case IOAPIC_IOREGSEL:
        // QEMU stores the value into an 8-bit field.
        this.ioregsel = value & 0xff;
        return;
      case IOAPIC_IOWIN: {
        if (size !== 4) return;
        const sel = this.ioregsel;
        if (sel === IOAPIC_REG_ID) {
          this.id = (value >>> 24) & 0xf;
          return;
        }
        if (sel === IOAPIC_REG_VER || sel === IOAPIC_REG_ARB) return;
        const index = (sel - IOAPIC_REG_REDTBL_BASE) >> 1;
        if (index < 0 || index >= IOAPIC_NUM_PINS) return;
        const e = this.redtbl[index]!;
        if (sel & 1) e[1] = value >>> 0;
        else e[0] = ((value & ~IOAPIC_RO_BITS) | (e[0] & IOAPIC_RO_BITS)) >>> 0;
        return;
      }
      default:
        return;
    }
  }
}
