import type { IoHandler } from '../../machine/address-space.js';

/**
 * The contract between a PCI function and the machine's PCI bus (host bridge side). A function
 * owns its 256-byte configuration space and its BAR handlers; the host decides where decoded BARs
 * appear in the machine's port and memory spaces, delivers its DMA writes (MSI-X messages) and
 * routes its INTx pin to an interrupt line.
 */

export type PciBarType = 'io' | 'mem32' | 'mem64';

/** A BAR that currently decodes: address programmed and the command register's enable bit set. */
export interface PciActiveBar {
  index: number;
  type: PciBarType;
  prefetchable: boolean;
  /** Guest address (port for 'io') of the BAR. */
  addr: number;
  size: number;
  handler: IoHandler;
}

export interface PciFunction {
  /** For traces and QOM-style names. */
  readonly name: string;
  /** Configuration space access (offset < 256; size 1, 2 or 4, naturally aligned). */
  configRead(offset: number, size: 1 | 2 | 4): number;
  configWrite(offset: number, size: 1 | 2 | 4, value: number): void;
  /**
   * `configRead` without side effects, when the function has reads with side effects (hosts
   * that answer config cycles speculatively use it; absent: `configRead` has none).
   */
  configPeek?(offset: number, size: 1 | 2 | 4): number;
  /** BARs that decode right now; the host maps exactly these. */
  activeBars(): PciActiveBar[];
  /** Called by the host when the function is placed on the bus at `devfn` (slot << 3 | fn). */
  attach(host: PciBusHost, devfn: number): void;
  /** Machine (system) reset: config space back to power-on values, device reset. */
  reset(): void;
  /** The VM started or stopped (QEMU's vm change state handler of the device), if it cares. */
  vmStateChange?(running: boolean): void;
}

export interface PciBusHost {
  /** The function's BAR decoding changed (BAR write, command register write, reset). */
  barsChanged(fn: PciFunction): void;
  /** A bus-master memory write by the function (an MSI-X message). The host writes system memory. */
  dmaWrite(fn: PciFunction, addr: number, data: Uint8Array): void;
  /** Level of the function's INTx pin (1 = INTA# … 4 = INTD#, as config byte 0x3d). */
  setIntx(fn: PciFunction, pin: number, level: boolean): void;
}
