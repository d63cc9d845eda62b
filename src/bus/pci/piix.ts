/**
 * INTx routing through the PIIX3/PIIX4 ISA bridge, the PCI-to-ISA bridge of QEMU's pc machine
 * and of v86: a function's pin reaches one of four PIRQ lines by a fixed swizzle of slot and
 * pin, and the bridge's PIRQ route control registers (config 0x60..0x63, programmed by the
 * BIOS) say which ISA IRQ each PIRQ line drives.
 */

/** First PIRQ route control register in the ISA bridge's configuration space (PIRQA#). */
export const PIIX_PIRQC = 0x60;
/** Route register bit: the PIRQ line drives no IRQ. */
export const PIIX_PIRQ_DISABLE = 0x80;

/**
 * The PIRQ line (0 = PIRQA# … 3 = PIRQD#) that pin `pin` (1 = INTA# … 4 = INTD#, as config
 * byte 0x3d) of a function in `slot` drives: QEMU's `pci_slot_get_pirq` for PIIX3.
 */
export function piixPirq(slot: number, pin: number): number {
  return (pin - 1 + slot - 1) & 3;
}

/**
 * The ISA IRQ that a PIRQ route register value selects, or -1 when the line is routed nowhere
 * (the disable bit, or one of the values PIIX reserves: 0–2, 8, 13 and above 15).
 */
export function piixRouteIrq(route: number): number {
  if (route & PIIX_PIRQ_DISABLE) return -1;
  const irq = route & 0x0f;
  return irq < 3 || irq === 8 || irq === 13 ? -1 : irq;
}

/**
 * The ISA IRQ for pin `pin` of `slot`, reading the route registers from the ISA bridge's
 * configuration space bytes (`bridgeConfig[0x60 + pirq]`), or -1 when not routed.
 */
export function piixIntxIrq(bridgeConfig: ArrayLike<number>, slot: number, pin: number): number {
  if (!Number.isInteger(slot) || !Number.isInteger(pin) || pin < 1 || pin > 4) return -1;
  const route = bridgeConfig[PIIX_PIRQC + piixPirq(slot, pin)];
  return route === undefined ? -1 : piixRouteIrq(route);
}
