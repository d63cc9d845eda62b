import { piixIntxIrq } from '../../bus/pci/piix.js';
import type { V86AccessScope } from './guard.js';
import type { V86Cpu } from './types.js';

/** EFLAGS.IF */
const FLAG_INTERRUPT = 0x200;

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
 *
 * When the line changes because of a guest access (a queue notify completing a request at once,
 * an ISR read lowering it), the CPU is in the middle of that instruction: v86 would acknowledge
 * and deliver a pending interrupt right there, which its JIT then clobbers (guard.ts says how;
 * the guest is left with an IRQ in service that it never acknowledges). So the line is changed
 * with EFLAGS.IF clear for the duration of v86's call: the 8259's request register is set as the
 * hardware sets it, and v86 delivers the interrupt at its next check (end of the instruction
 * block, STI, IRET, a write to the PIC, or its main loop), as a real CPU does at an instruction
 * boundary. Outside guest accesses (a backend completing later) v86 is between instructions and
 * delivery at once is what wakes a halted CPU, so the call is made plainly.
 */
export class V86IntxRouter {
  /** Asserted pins per ISA IRQ (ours only). */
  private readonly count = new Uint16Array(16);
  /** The IRQ each asserted pin raised, by `devfn * 4 + pin - 1`. */
  private readonly raised = new Map<number, number>();
  /** Byte offset of v86's EFLAGS in its wasm memory (-1: unknown, no masking possible). */
  private readonly flagsOffset: number;
  /** A view of EFLAGS, remade when the wasm memory grows (its buffer is replaced). */
  private flagsView: Int32Array | undefined;

  constructor(
    private readonly cpu: V86Cpu,
    private readonly bridgeConfig: () => ArrayLike<number>,
    private readonly scope?: Pick<V86AccessScope, 'inGuestAccess'>,
  ) {
    const off = cpu.flags?.byteOffset;
    this.flagsOffset = typeof off === 'number' && Number.isInteger(off) && off >= 0 && off % 4 === 0 ? off : -1;
  }

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
      if (this.count[irq]!++ === 0) this.line(irq, true);
    } else {
      if (had === undefined) return;
      this.raised.delete(key);
      if (--this.count[had]! === 0) this.line(had, false);
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

  private line(irq: number, up: boolean): void {
    const cpu = this.cpu;
    const flags = this.scope?.inGuestAccess === true ? this.eflags() : undefined;
    const saved = flags === undefined ? 0 : flags[0]! & FLAG_INTERRUPT;
    if (flags !== undefined) flags[0] = flags[0]! & ~FLAG_INTERRUPT;
    try {
      if (up) cpu.device_raise_irq(irq);
      else cpu.device_lower_irq(irq);
    } finally {
      if (flags !== undefined) flags[0] = flags[0]! | saved;
    }
  }

  private eflags(): Int32Array | undefined {
    if (this.flagsOffset < 0) return undefined;
    const buffer = this.cpu.wasm_memory.buffer;
    let v = this.flagsView;
    if (v === undefined || v.buffer !== buffer) {
      if (this.flagsOffset + 4 > buffer.byteLength) return undefined;
      v = this.flagsView = new Int32Array(buffer, this.flagsOffset, 1);
    }
    return v;
  }
}
