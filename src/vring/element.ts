import type { GuestMemory, RamRegion } from '../memory/guest-memory.js';

/**
 * Copies of at most this many bytes are done with a loop rather than a Uint8Array.set call. (A
 * host buffer that is itself a view of the guest RAM being copied, overlapping it, then gets a
 * forward copy, as with QEMU's memcpy-based iov helpers, rather than set()'s memmove.)
 */
const SMALL_COPY = 32;

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
  /** Head descriptor index (split) or buffer id (packed): the id the used ring reports back. */
  index = 0;
  /** Number of device-readable entries (they come first). */
  outNum = 0;
  /** Number of device-writable entries (after the readable ones). */
  inNum = 0;
  /** Total bytes readable by the device. */
  outBytes = 0;
  /** Total bytes writable by the device. */
  inBytes = 0;
  /**
   * Descriptors this chain consumed: split rings count the indirect one and the table's; packed
   * rings count ring slots (1 for an indirect chain), which is QEMU's `ndescs` and what the used
   * side skips.
   */
  ndescs = 0;
  /** Queue generation when popped; a reset makes older elements stale. */
  generation = 0;
  /** True from pop until fill/detach. */
  inFlight = false;

  // Per entry, the last view of guest RAM that readOut copied from, with the region and offset
  // it covers: copying out of the same buffers again then allocates nothing (`rangeView`).
  private readonly views: (Uint8Array | undefined)[] = [];
  private readonly viewRegion: (RamRegion | undefined)[] = [];
  private readonly viewOff: number[] = [];
  /** The memory epoch the cached views belong to: after RAM moved they are dropped. */
  private viewsEpoch = 0;

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
    return this.readOutInto(offset, dst, 0, dst.length);
  }

  /**
   * `readOut` into `dst[dstOff, dstOff+len)`, without a view of `dst` (so a caller with one big
   * scratch buffer allocates nothing per copy).
   */
  readOutInto(offset: number, dst: Uint8Array, dstOff: number, len: number): number {
    // A returned element, or one made stale by a reset, no longer owns its buffers; an offset
    // before the chain's start (negative, NaN) would reach bytes the chain does not own.
    if (!this.inFlight || !(offset >= 0) || !(dstOff >= 0) || !(len > 0)) return 0;
    const mem = this.memory;
    if (mem.sync() !== this.viewsEpoch) this.dropViews();
    const sgAddr = this.sgAddr;
    const sgLen = this.sgLen;
    const to = this.outNum;
    const want = Math.min(len, dst.length - dstOff);
    let done = 0;
    let skip = offset;
    for (let i = 0; i < to && done < want; i++) {
      const elen = sgLen[i]!;
      if (skip >= elen) {
        skip -= elen;
        continue;
      }
      const n = Math.min(elen - skip, want - done);
      const addr = sgAddr[i]! + skip;
      const r = mem.regionAt(addr, n);
      if (r === undefined) break;
      const off = addr - r.base;
      const d0 = dstOff + done;
      if (n > SMALL_COPY) {
        dst.set(this.rangeView(i, r, off, n), d0);
      } else {
        // A few bytes: cheaper than a Uint8Array.set call. Whole words where the offset allows
        // (`off | 0` is exact below 2^31), then the odd bytes.
        const o = off | 0;
        const ram = r.bytes;
        if (o === off) {
          const dv = r.view;
          let j = 0;
          for (; j + 4 <= n; j += 4) {
            const w = dv.getUint32(o + j, true);
            const d = d0 + j;
            dst[d] = w & 0xff;
            dst[d + 1] = (w >>> 8) & 0xff;
            dst[d + 2] = (w >>> 16) & 0xff;
            dst[d + 3] = w >>> 24;
          }
          for (; j < n; j++) dst[d0 + j] = ram[o + j]!;
        } else {
          for (let j = 0; j < n; j++) dst[d0 + j] = ram[off + j]!;
        }
      }
      done += n;
      skip = 0;
    }
    return done;
  }

  /**
   * Copy `src` into the device-writable buffers, starting `offset` bytes into the writable part.
   * Returns the number of bytes written: QEMU's `iov_from_buf` on `in_sg`. (The write is reported
   * to the memory's `onWrite` when the element is returned, with the used length.)
   */
  writeIn(offset: number, src: Uint8Array): number {
    return this.writeInFrom(offset, src, 0, src.length);
  }

  /**
   * `writeIn` from `src[srcOff, srcOff+len)`. Where a buffer takes a part of that range, the view
   * of the part is the one made last time when it is the same, so a steady stream of frames
   * through the same buffers allocates nothing.
   */
  writeInFrom(offset: number, src: Uint8Array, srcOff: number, len: number): number {
    // A returned element, or one made stale by a reset, no longer owns its buffers; an offset
    // before the chain's start (negative, NaN) would reach bytes the chain does not own.
    if (!this.inFlight || !(offset >= 0) || !(srcOff >= 0) || !(len > 0)) return 0;
    const mem = this.memory;
    mem.sync();
    const sgAddr = this.sgAddr;
    const sgLen = this.sgLen;
    const to = this.outNum + this.inNum;
    const want = Math.min(len, src.length - srcOff);
    let done = 0;
    let skip = offset;
    for (let i = this.outNum; i < to && done < want; i++) {
      const elen = sgLen[i]!;
      if (skip >= elen) {
        skip -= elen;
        continue;
      }
      const n = Math.min(elen - skip, want - done);
      const addr = sgAddr[i]! + skip;
      const r = mem.regionAt(addr, n);
      if (r === undefined || r.readonly) break;
      const off = addr - r.base;
      const ram = r.bytes;
      const s0 = srcOff + done;
      if (n > SMALL_COPY) {
        // The whole of src needs no view of it; only a part of it does.
        if (src === ram) ram.copyWithin(off, s0, s0 + n); // guest RAM to guest RAM (NIC to NIC): no view needed
        else ram.set(s0 === 0 && n === src.length ? src : this.srcView(i, src, s0, n), off);
      } else {
        // A few bytes: whole words where the offset allows, then the odd bytes.
        const o = off | 0;
        if (o === off) {
          const dv = r.view;
          let j = 0;
          for (; j + 4 <= n; j += 4) {
            const d = s0 + j;
            // (Masked, so that any typed array passed in converts to bytes as set() would.)
            dv.setUint32(o + j, (src[d]! & 0xff) | ((src[d + 1]! & 0xff) << 8) | ((src[d + 2]! & 0xff) << 16) | (src[d + 3]! << 24), true);
          }
          for (; j < n; j++) ram[o + j] = src[s0 + j]!;
        } else {
          for (let j = 0; j < n; j++) ram[off + j] = src[s0 + j]!;
        }
      }
      done += n;
      skip = 0;
    }
    return done;
  }

  private dropViews(): void {
    this.views.fill(undefined);
    this.viewRegion.fill(undefined);
    this.viewsEpoch = this.memory.epoch;
  }

  // Per entry, the last view of a source that writeInFrom copied from.
  private readonly srcViews: (Uint8Array | undefined)[] = [];
  private readonly srcOf: (Uint8Array | undefined)[] = [];
  private readonly srcOffs: number[] = [];

  private srcView(i: number, src: Uint8Array, off: number, n: number): Uint8Array {
    const v = this.srcViews[i];
    if (v !== undefined && this.srcOf[i] === src && this.srcOffs[i] === off && v.length === n) return v;
    const fresh = src.subarray(off, off + n);
    this.srcViews[i] = fresh;
    this.srcOf[i] = src;
    this.srcOffs[i] = off;
    return fresh;
  }

  /**
   * The view of `r.bytes[off, off+n)` that readOut copies from through entry `i`: the one made
   * last time when it covers exactly these bytes, else a new one (kept for next time).
   */
  private rangeView(i: number, r: RamRegion, off: number, n: number): Uint8Array {
    const v = this.views[i];
    if (v !== undefined && this.viewRegion[i] === r && this.viewOff[i] === off && v.length === n) return v;
    const fresh = r.bytes.subarray(off, off + n);
    this.views[i] = fresh;
    this.viewRegion[i] = r;
    this.viewOff[i] = off;
    return fresh;
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
}
