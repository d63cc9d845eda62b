import { piixIntxIrq } from '../../bus/pci/piix.js';
import type { V86Cpu } from './types.js';

/**
 * INTx for our functions on v86: pin → PIRQ line by the PIIX swizzle → ISA IRQ by the route
 * SeaBIOS programmed in the ISA bridge (read at each edge, as the hardware does). Lines are
 * level-triggered and shared, so they are wired-OR across our functions: the IRQ is raised by
 * the first pin that asserts it and lowered when the last one lets go. A pin remembers the IRQ
 * it raised, so a route changed while it is asserted still lowers the right line.
 *
 * v86's own PCI devices drive the same lines without this count (a v86 device lowering a shared
 * line lowers it for us too); the guest's handler reads our ISR and finds the work anyway, and
 * the next notification raises the line again.
 */
export class V86IntxRouter {
  /** Asserted pins per ISA IRQ (ours only). */
  private readonly count = new Uint16Array(16);
  /** The IRQ each asserted pin raised, by `devfn * 4 + pin - 1`. */
  private readonly raised = new Map<number, number>();

  constructor(private readonly cpu: V86Cpu, private readonly bridgeConfig: () => ArrayLike<number>) {}

  /** Pin `pin` (1..4) of the function at `devfn` goes to `level`. */
  set(devfn: number, pin: number, level: boolean): void {
    if (!Number.isInteger(pin) || pin < 1 || pin > 4) return;
    const key = devfn * 4 + pin - 1;
    const had = this.raised.get(key);
    if (level) {
      if (had !== undefined) return;
      const irq = piixIntxIrq(this.bridgeConfig(), devfn >> 3, pin);
      // Not routed (BIOS has not programmed the line, or disabled it): nothing to raise, and
      // the pin's level is kept by the function (its ISR), so the next edge retries.
      if (irq < 0) return;
      this.raised.set(key, irq);
      if (this.count[irq]!++ === 0) this.cpu.device_raise_irq(irq);
    } else {
      if (had === undefined) return;
      this.raised.delete(key);
      if (--this.count[had]! === 0) this.cpu.device_lower_irq(had);
    }
  }

  /** Let go of every pin of `devfn` (a function leaving the machine). */
  releaseAll(devfn: number): void {
    for (let pin = 1; pin <= 4; pin++) this.set(devfn, pin, false);
  }

  /** Whether our functions hold `irq` up now. */
  asserted(irq: number): boolean {
    return (this.count[irq] ?? 0) > 0;
  }
}
