import type { GuestMemory } from '../memory/guest-memory.js';

/**
 * One popped request: QEMU's VirtQueueElement. The chain's buffers are kept as a scatter list
 * of guest (address, length) pairs, device-readable ("out") entries first, then device-writable
 * ("in") ones, exactly the order the chain had to use (VIRTIO 1.2 §2.7.4.2).
 *
 * Every entry was checked against guest RAM when the chain was popped (writable ones against
 * writable RAM), so the copy helpers below cannot leave RAM. The arrays are reused: a queue keeps
 * one element per head and only grows the arrays when a chain is longer than any seen before.
 */
export class VirtQueueElement {
  /** Head descriptor index: the id the used ring reports back. */
  index = 0;
  /** Number of device-readable entries (they come first). */
  outNum = 0;
  /** Number of device-writable entries (after the readable ones). */
  inNum = 0;
  /** Total bytes readable by the device. */
  outBytes = 0;
  /** Total bytes writable by the device. */
  inBytes = 0;
  /** Descriptors this chain consumed (including the indirect one), as QEMU's `ndescs`. */
  ndescs = 0;
  /** Queue generation when popped; a reset makes older elements stale. */
  generation = 0;
  /** True from pop until fill/detach. */
  inFlight = false;

  /** Guest address of each entry (safe integers). */
  sgAddr: Float64Array;
  /** Length of each entry in bytes. */
  sgLen: Uint32Array;

  constructor(readonly memory: GuestMemory, capacity = 4) {
    this.sgAddr = new Float64Array(capacity);
    this.sgLen = new Uint32Array(capacity);
  }

  /** Number of scatter entries, readable and writable together. */
  get sgNum(): number {
    return this.outNum + this.inNum;
  }

  /** Make room for at least `n` entries, keeping the existing ones. */
  ensureCapacity(n: number): void {
    if (n <= this.sgLen.length) return;
    let cap = this.sgLen.length * 2;
    while (cap < n) cap *= 2;
    const a = new Float64Array(cap);
    a.set(this.sgAddr);
    const l = new Uint32Array(cap);
    l.set(this.sgLen);
    this.sgAddr = a;
    this.sgLen = l;
  }

  /**
   * Copy device-readable bytes, starting `offset` bytes into the readable part of the chain, into
   * `dst`. Returns the number of bytes copied (less than `dst.length` when the chain is shorter):
   * QEMU's `iov_to_buf` on `out_sg`.
   */
  readOut(offset: number, dst: Uint8Array): number {
    return this.copy(0, this.outNum, offset, dst, false);
  }

  /**
   * Copy `src` into the device-writable buffers, starting `offset` bytes into the writable part.
   * Returns the number of bytes written: QEMU's `iov_from_buf` on `in_sg`.
   */
  writeIn(offset: number, src: Uint8Array): number {
    return this.copy(this.outNum, this.outNum + this.inNum, offset, src, true);
  }

  /** Zero-copy view of scatter entry `i` (0 ≤ i < sgNum). */
  entryView(i: number): Uint8Array {
    if (i < 0 || i >= this.outNum + this.inNum) throw new RangeError(`scatter entry ${i} out of range`);
    // Checked at pop time, so the view exists unless the host changed the memory map since.
    const v = this.memory.view(this.sgAddr[i]!, this.sgLen[i]!);
    if (!v) throw new RangeError(`scatter entry ${i} no longer maps to RAM`);
    return v;
  }

  /** Is scatter entry `i` device-writable? */
  isWritable(i: number): boolean {
    return i >= this.outNum && i < this.outNum + this.inNum;
  }

  private copy(from: number, to: number, offset: number, buf: Uint8Array, toGuest: boolean): number {
    // A returned element, or one made stale by a reset, no longer owns its buffers.
    if (!this.inFlight) return 0;
    const mem = this.memory;
    let done = 0;
    let skip = offset;
    const want = buf.length;
    for (let i = from; i < to && done < want; i++) {
      const len = this.sgLen[i]!;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      const n = Math.min(len - skip, want - done);
      const addr = this.sgAddr[i]! + skip;
      const r = mem.findRegion(addr, n);
      if (!r) break;
      const off = addr - r.base;
      if (toGuest) {
        if (r.readonly) break;
        r.bytes.set(n === want && done === 0 ? buf : buf.subarray(done, done + n), off);
      } else {
        buf.set(r.bytes.subarray(off, off + n), done);
      }
      done += n;
      skip = 0;
    }
    return done;
  }
}
