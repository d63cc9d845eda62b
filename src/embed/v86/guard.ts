import type { AccessSize, IoHandler } from '../../machine/address-space.js';

/**
 * Every call v86 makes into our handlers (register reads and writes, config cycles) goes through
 * one of these. Two jobs:
 *
 * - Containment: a handler that throws would unwind through v86's wasm and stop the machine.
 *   Device code does not throw on guest input; a host-side bug is reported and contained to the
 *   access (reads then see all ones, as an unassigned address).
 * - Knowing that the guest is in the middle of an instruction (`inGuestAccess`). v86 calls our
 *   handlers from its interpreter or from JIT-compiled blocks, which keep guest registers in wasm
 *   locals until the block ends. An interrupt delivered at that moment (v86's
 *   `device_raise_irq` acknowledges the 8259 and enters the handler at once when IF is set) pushes
 *   a frame with a stale EIP and is then overwritten by the rest of the block: the PIC is left
 *   with the IRQ in service and the guest never sends its EOI. The IRQ router asks this scope.
 */
export class V86AccessScope {
  /** Nested guest accesses in progress (a handler may cause another, e.g. a config write). */
  private depth = 0;

  constructor(private readonly report: (e: unknown) => void) {}

  /** Whether v86's CPU is inside a guest instruction that called one of our handlers. */
  get inGuestAccess(): boolean {
    return this.depth > 0;
  }

  read(h: IoHandler, offset: number, size: AccessSize): number {
    this.depth++;
    try {
      return h.read(offset, size);
    } catch (e) {
      this.report(e);
      return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
    } finally {
      this.depth--;
    }
  }

  write(h: IoHandler, offset: number, size: AccessSize, value: number): void {
    this.depth++;
    try {
      h.write(offset, size, value);
    } catch (e) {
      this.report(e);
    } finally {
      this.depth--;
    }
  }

  /** Any other guest-caused call (configuration cycles). */
  run(fn: () => void): void {
    this.depth++;
    try {
      fn();
    } catch (e) {
      this.report(e);
    } finally {
      this.depth--;
    }
  }
}

/**
 * Undo an instance-property hook: an inherited method is uncovered again (delete), an own one
 * is put back as it was.
 */
export function restore<T extends object, K extends keyof T>(obj: T, key: K, value: T[K], wasOwn: boolean): void {
  if (wasOwn) obj[key] = value;
  else delete obj[key];
}
