/**
 * Address spaces of the reference machine: port I/O and MMIO. Devices register handlers for
 * windows; an access that hits no window is "unassigned" and reads a fixed value (all ones for
 * ports, 0 for memory, as QEMU's pc does) while writes vanish.
 *
 * Windows may overlap (a driver can program two BARs onto the same address); the most recently
 * mapped window wins, so the result is deterministic. An access that is not fully inside one
 * window is unassigned.
 */

export type AccessSize = 1 | 2 | 4;

/** A device's register window. `offset` is relative to the window's base. */
export interface IoHandler {
  read(offset: number, size: AccessSize): number;
  write(offset: number, size: AccessSize, value: number): void;
}

export interface Mapping {
  readonly base: number;
  readonly size: number;
  readonly handler: IoHandler;
  readonly name: string;
}

export class AddressSpace {
  private mappings: Mapping[] = [];

  /**
   * @param unassignedRead value an unassigned access reads, before masking to the access size
   */
  constructor(readonly name: string, readonly unassignedRead: number) {}

  /** Map `handler` at [base, base+size). Returns the mapping, to pass to `unmap`. */
  map(base: number, size: number, handler: IoHandler, name: string): Mapping {
    if (!Number.isSafeInteger(base) || base < 0 || !Number.isSafeInteger(size) || size <= 0) {
      throw new RangeError(`${this.name}: bad window ${name} at ${base} size ${size}`);
    }
    const m: Mapping = { base, size, handler, name };
    this.mappings.push(m);
    return m;
  }

  unmap(m: Mapping): void {
    const i = this.mappings.indexOf(m);
    if (i >= 0) this.mappings.splice(i, 1);
  }

  /** The window that fully contains [addr, addr+size), newest first. */
  find(addr: number, size = 1): Mapping | undefined {
    for (let i = this.mappings.length - 1; i >= 0; i--) {
      const m = this.mappings[i]!;
      if (addr >= m.base && addr - m.base <= m.size - size) return m;
    }
    return undefined;
  }

  list(): readonly Mapping[] {
    return this.mappings;
  }

  read(addr: number, size: AccessSize): number {
    const m = this.find(addr, size);
    if (!m) return maskTo(this.unassignedRead, size);
    return maskTo(m.handler.read(addr - m.base, size), size);
  }

  write(addr: number, size: AccessSize, value: number): void {
    const m = this.find(addr, size);
    if (m) m.handler.write(addr - m.base, size, maskTo(value, size));
  }
}

export function maskTo(value: number, size: AccessSize): number {
  return size === 4 ? value >>> 0 : size === 2 ? value & 0xffff : value & 0xff;
}
