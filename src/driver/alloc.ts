/**
 * A bump allocator for guest RAM, like libqos's `guest_alloc` on pc (which starts at 1 MiB):
 * rings, buffers and MSI-X message slots for scripted tests. It never frees; make a new one per
 * test or `reset()` it.
 */
export class GuestAllocator {
  private next: number;

  /**
   * @param start first usable address (default 1 MiB, above the 0xa0000-0xfffff hole)
   * @param end   end of usable RAM (default 16 MiB, the `-m 16M` the harness uses)
   */
  constructor(readonly start = 0x10_0000, readonly end = 0x100_0000) {
    if (!(start >= 0 && end > start)) throw new RangeError(`bad allocator window 0x${start.toString(16)}-0x${end.toString(16)}`);
    this.next = start;
  }

  /** `size` bytes aligned to `align` (a power of two, default 16). */
  alloc(size: number, align = 16): number {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`bad allocation size ${size}`);
    if (align <= 0 || (align & (align - 1)) !== 0) throw new RangeError(`bad alignment ${align}`);
    const at = Math.ceil(this.next / align) * align;
    if (at + size > this.end) throw new RangeError(`guest allocator exhausted: ${size} bytes at 0x${at.toString(16)}`);
    this.next = at + size;
    return at;
  }

  /** Whole pages. */
  allocPages(size: number): number {
    return this.alloc(Math.ceil(size / 4096) * 4096, 4096);
  }

  get used(): number {
    return this.next - this.start;
  }

  reset(): void {
    this.next = this.start;
  }
}
