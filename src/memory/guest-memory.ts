/**
 * Guest RAM: the only door from device code to guest-physical memory.
 *
 * Guest addresses are 64-bit. We carry them as JavaScript numbers, which are exact only below
 * 2^53, so every entry point that takes a guest address first proves it is a safe integer; a
 * 64-bit value assembled from two 32-bit halves goes through `gpaFromHiLo`, which refuses
 * anything at or above 2^53 (no RAM we can model lives there). Range checks are written as
 * `addr - base <= size - len`, which never leaves the safe-integer range, so a range that would
 * wrap 2^64 or run past a region's end is refused rather than rounded.
 *
 * Nothing here throws on guest-controlled input: the checked accessors report failure through
 * their return value (`-1`, `undefined` or `false`) and leave the decision to the caller.
 *
 * Buffers that move. A host whose RAM lives in a growable `WebAssembly.Memory` (v86 does) sees
 * the memory's `ArrayBuffer` replaced, and the old one detached, whenever the memory grows,
 * which happens while the guest runs. A region made from a `source` (anything with a `buffer`:
 * a `WebAssembly.Memory`, or a host object whose `buffer` getter returns its current RAM)
 * follows it: `sync()` notices a detached buffer (a zero-length view, one load and compare) and
 * re-resolves the regions, bumping `epoch`. Every entry point that touches RAM calls `sync()`
 * once: the accessors below, and in `VirtQueue`/`VirtQueueElement` pop, push, fill, flush and the
 * element copies. Anything that caches a view across entry points (ring views, element and
 * request views) keeps the epoch it was made in and re-resolves when it differs. A host that
 * moves RAM without detaching the old buffer (a copy into a larger one) calls `refresh()`.
 *
 * Device writes into RAM are reported to `onWrite` (when set): a host that caches translated
 * guest code (v86's JIT), tracks dirty pages for live migration or redraws a framebuffer learns
 * which bytes changed. Scalar and range writes report themselves; buffers a device fills in
 * place are reported when the element is returned to the driver (QEMU marks them dirty at the
 * same point, `virtqueue_unmap_sg`), coalesced into one call per contiguous range.
 */

/** Returned by address helpers when a guest address cannot be represented or is invalid. */
export const INVALID_GPA = -1;

const TWO_POW_32 = 0x1_0000_0000;
/** Largest high half that keeps `hi * 2^32 + lo` below 2^53. */
const MAX_SAFE_HI = 0x1f_ffff;

/**
 * Where a region's bytes live when the host may replace the buffer: a `WebAssembly.Memory`
 * (whose `buffer` is replaced on growth), or any object whose `buffer` getter returns the RAM's
 * current buffer. `byteOffset`, when present, is added to the region's `bufferOffset` (for hosts
 * that may also move RAM inside the buffer).
 */
export interface RamBufferSource {
  readonly buffer: ArrayBufferLike;
  readonly byteOffset?: number;
}

/** Called after device code wrote guest bytes [addr, addr + len). */
export type GuestWriteHook = (addr: number, len: number) => void;

export interface MemoryRegionOptions {
  /** Guest-physical base address of the region. */
  base: number;
  /** Size in bytes. */
  size: number;
  /** Read-only (ROM) regions refuse device writes. */
  readonly?: boolean;
  /** Optional backing store (e.g. a SharedArrayBuffer shared with vCPU workers). */
  buffer?: ArrayBufferLike;
  /**
   * A backing store that may be replaced while the guest runs (e.g. the host's growable
   * `WebAssembly.Memory`); the region follows it (see `GuestMemory.sync`). Not with `buffer`.
   */
  source?: RamBufferSource;
  /** Byte offset of the region inside `buffer` (or the source's buffer). */
  bufferOffset?: number;
  /** A name for traces and error messages. */
  name?: string;
}

/** One contiguous piece of guest RAM. */
export class RamRegion {
  readonly base: number;
  readonly size: number;
  /** First guest address after the region. */
  readonly end: number;
  readonly readonly: boolean;
  readonly name: string;
  /**
   * Zero-copy view of the whole region; index 0 is guest address `base`. Replaced (with `view`)
   * when a source's buffer moves: take it from the region at each entry point, after
   * `GuestMemory.sync()`, rather than keeping it.
   */
  bytes: Uint8Array;
  /** DataView over the same bytes, for multi-byte accessors. */
  view: DataView;
  /** The movable backing store, if any. */
  readonly source: RamBufferSource | undefined;
  /** `bufferOffset` as given (the source's own `byteOffset` is added at each resolution). */
  private readonly offset: number;

  constructor(opts: MemoryRegionOptions) {
    const { base, size } = opts;
    if (!Number.isSafeInteger(base) || base < 0) throw new RangeError(`region base ${base} is not a safe non-negative integer`);
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`region size ${size} must be a positive integer`);
    if (base + size > Number.MAX_SAFE_INTEGER) throw new RangeError('region end exceeds 2^53');
    this.base = base;
    this.size = size;
    this.end = base + size;
    this.readonly = opts.readonly ?? false;
    this.name = opts.name ?? `ram@0x${base.toString(16)}`;
    this.offset = opts.bufferOffset ?? 0;
    this.source = opts.source;
    if (opts.source) {
      if (opts.buffer) throw new RangeError(`region ${this.name}: give a buffer or a source, not both`);
      this.bytes = this.resolve(opts.source);
    } else if (opts.buffer) {
      this.bytes = new Uint8Array(opts.buffer, this.offset, size);
    } else {
      this.bytes = new Uint8Array(size);
    }
    this.view = new DataView(this.bytes.buffer, this.bytes.byteOffset, this.bytes.byteLength);
  }

  private resolve(source: RamBufferSource): Uint8Array {
    const buf = source.buffer;
    const off = this.offset + (source.byteOffset ?? 0);
    // A host programming error (RAM smaller than the regions it declared), not guest input.
    if (!Number.isSafeInteger(off) || off < 0 || off + this.size > buf.byteLength) {
      throw new RangeError(`region ${this.name}: [${off}, ${off + this.size}) is outside its source's buffer of ${buf.byteLength} bytes`);
    }
    return new Uint8Array(buf, off, this.size);
  }

  /**
   * Follow the source: when its buffer (or offset) is no longer the one the views were made on,
   * or those views were detached, make new ones. Returns true when the views changed.
   */
  rebind(): boolean {
    const s = this.source;
    if (s === undefined) return false;
    const cur = this.bytes;
    if (cur.length === this.size && cur.buffer === s.buffer && cur.byteOffset === this.offset + (s.byteOffset ?? 0)) return false;
    const bytes = this.resolve(s);
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    return true;
  }

  /** True when [addr, addr+len) lies fully inside this region. `addr` must be a safe integer. */
  contains(addr: number, len: number): boolean {
    return addr >= this.base && len >= 0 && len <= this.size && addr - this.base <= this.size - len;
  }
}

/**
 * Assemble a 64-bit guest address from its 32-bit halves. Returns INVALID_GPA when the value is
 * 2^53 or more, which no modelled RAM can contain.
 */
export function gpaFromHiLo(lo: number, hi: number): number {
  hi >>>= 0;
  if (hi > MAX_SAFE_HI) return INVALID_GPA;
  return hi * TWO_POW_32 + (lo >>> 0);
}

/** Convert a bigint guest address to a number, or INVALID_GPA if it is negative or ≥ 2^53. */
export function gpaFromBigInt(addr: bigint): number {
  if (addr < 0n || addr > BigInt(Number.MAX_SAFE_INTEGER)) return INVALID_GPA;
  return Number(addr);
}

export class GuestMemory {
  readonly regions: readonly RamRegion[];
  /** The largest region: most machines have one that holds nearly all RAM, so lookups try it first. */
  private readonly r0: RamRegion;
  /**
   * Bumped each time a region's views are replaced (a source's buffer moved). Caches of views
   * compare it with the epoch they were made in; read it through `sync()` at an entry point.
   */
  epoch = 0;
  /** Told about device writes into RAM (see the module comment); undefined: nobody listens. */
  onWrite: GuestWriteHook | undefined;
  /** The first region of each distinct source: `sync()` checks their views for detachment. */
  private readonly w0: RamRegion | undefined;
  private readonly wRest: readonly RamRegion[];
  private readonly sourced: readonly RamRegion[];

  constructor(regions: readonly (MemoryRegionOptions | RamRegion)[]) {
    if (regions.length === 0) throw new RangeError('guest memory needs at least one region');
    const list = regions.map((r) => (r instanceof RamRegion ? r : new RamRegion(r)));
    list.sort((a, b) => a.base - b.base);
    for (let i = 1; i < list.length; i++) {
      if (list[i]!.base < list[i - 1]!.end) {
        throw new RangeError(`memory regions ${list[i - 1]!.name} and ${list[i]!.name} overlap`);
      }
    }
    this.regions = list;
    let big = list[0]!;
    for (const r of list) if (r.size > big.size) big = r;
    this.r0 = big;
    this.sourced = list.filter((r) => r.source !== undefined);
    const seen = new Set<RamBufferSource>();
    const watched = this.sourced.filter((r) => {
      if (seen.has(r.source!)) return false;
      seen.add(r.source!);
      return true;
    });
    this.w0 = watched[0];
    this.wRest = watched.slice(1);
  }

  /** True when some region follows a source whose buffer can be replaced. */
  get swappable(): boolean {
    return this.sourced.length > 0;
  }

  /**
   * Bring the regions up to date with their sources if a source's buffer was detached (a
   * `WebAssembly.Memory` that grew), and return the epoch. Costs one length check when nothing
   * moved, nothing for memories without sources. Entry points call it once; everything they do
   * afterwards in the same synchronous turn sees current views.
   */
  sync(): number {
    const w0 = this.w0;
    if (w0 !== undefined && (w0.bytes.length === 0 || this.wRest.length !== 0)) this.syncSlow();
    return this.epoch;
  }

  private syncSlow(): void {
    let detached = this.w0!.bytes.length === 0;
    for (const r of this.wRest) if (r.bytes.length === 0) detached = true;
    if (detached) this.refresh();
  }

  /**
   * Re-read every source and re-resolve the regions whose buffer or offset changed; bumps the
   * epoch when any did. `sync()` calls it when a buffer was detached; a host that replaces its
   * RAM buffer without detaching the old one calls it itself. Returns true when views changed.
   */
  refresh(): boolean {
    let moved = false;
    for (const r of this.sourced) if (r.rebind()) moved = true;
    if (moved) this.epoch++;
    return moved;
  }

  /**
   * Report a device write of guest bytes [addr, addr + len) to `onWrite`. The accessors that
   * write call it themselves; code that writes through a view it got from `view`/`writableView`
   * outside of a queue element calls it.
   */
  noteWrite(addr: number, len: number): void {
    const h = this.onWrite;
    if (h !== undefined && len > 0) h(addr, len);
  }

  /** One RAM region of `size` bytes at guest address 0 (or `base`). */
  static ofSize(size: number, base = 0): GuestMemory {
    return new GuestMemory([{ base, size }]);
  }

  /** Total bytes of RAM over all regions. */
  get totalSize(): number {
    let n = 0;
    for (const r of this.regions) n += r.size;
    return n;
  }

  /**
   * The region that fully contains [addr, addr+len), or undefined, with its views current
   * (`sync()` first). Accepts any number: a value that is not a non-negative safe integer (NaN,
   * fractions, INVALID_GPA, ≥ 2^53) is refused. A zero-length range must still start inside (or
   * exactly at the end of) a region.
   */
  findRegion(addr: number, len: number): RamRegion | undefined {
    this.sync();
    return this.regionAt(addr, len);
  }

  /**
   * `findRegion` without the `sync()`: for loops inside an entry point that has synced already
   * (the ring and element code), where a check per buffer would be a cost per access.
   */
  regionAt(addr: number, len: number): RamRegion | undefined {
    const r0 = this.r0;
    if (addr >= r0.base && len >= 0 && len <= r0.size && addr - r0.base <= r0.size - len) {
      // Fast path: a safe integer check only on the rare fractional input.
      return Number.isInteger(addr) && Number.isInteger(len) ? r0 : undefined;
    }
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(len) || addr < 0 || len < 0) return undefined;
    const list = this.regions;
    for (let i = 0; i < list.length; i++) {
      const r = list[i]!;
      if (r !== r0 && r.contains(addr, len)) return r;
    }
    return undefined;
  }

  /** True when [addr, addr+len) is entirely RAM (in one region). */
  isRange(addr: number, len: number): boolean {
    return this.findRegion(addr, len) !== undefined;
  }

  /** True when [addr, addr+len) is entirely writable RAM (in one region, not ROM). */
  isWritableRange(addr: number, len: number): boolean {
    const r = this.findRegion(addr, len);
    return r !== undefined && !r.readonly;
  }

  /** Checked translation with bigint inputs, for callers holding full 64-bit values. */
  findRegionBig(addr: bigint, len: bigint): RamRegion | undefined {
    if (addr < 0n || len < 0n || addr + len > 0xffff_ffff_ffff_ffffn + 1n) return undefined;
    if (addr > BigInt(Number.MAX_SAFE_INTEGER) || len > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
    return this.findRegion(Number(addr), Number(len));
  }

  /** A zero-copy view of [addr, addr+len), or undefined when the range is not all RAM. */
  view(addr: number, len: number): Uint8Array | undefined {
    const r = this.findRegion(addr, len);
    if (!r) return undefined;
    const off = addr - r.base;
    return r.bytes.subarray(off, off + len);
  }

  /**
   * Like `view`, but refuses read-only regions: for buffers the device will write. What is
   * written through it is reported when the element it belongs to is returned (or by the
   * caller, `noteWrite`).
   */
  writableView(addr: number, len: number): Uint8Array | undefined {
    const r = this.findRegion(addr, len);
    if (!r || r.readonly) return undefined;
    const off = addr - r.base;
    return r.bytes.subarray(off, off + len);
  }

  /** Copy guest bytes into `dst`. Returns false (copying nothing) if the range is not all RAM. */
  read(addr: number, dst: Uint8Array): boolean {
    const r = this.findRegion(addr, dst.length);
    if (!r) return false;
    const off = addr - r.base;
    dst.set(r.bytes.subarray(off, off + dst.length));
    return true;
  }

  /** Copy `src` into guest RAM. Returns false (writing nothing) if the range is not writable RAM. */
  write(addr: number, src: Uint8Array): boolean {
    const r = this.findRegion(addr, src.length);
    if (!r || r.readonly) return false;
    r.bytes.set(src, addr - r.base);
    this.noteWrite(addr, src.length);
    return true;
  }

  /** Fill a guest range with one byte value. Returns false if the range is not writable RAM. */
  fill(addr: number, len: number, value: number): boolean {
    const r = this.findRegion(addr, len);
    if (!r || r.readonly) return false;
    const off = addr - r.base;
    r.bytes.fill(value, off, off + len);
    this.noteWrite(addr, len);
    return true;
  }

  // Scalar accessors. Reads return -1 (or -1n) when out of RAM; writes return false.
  // `le` selects byte order: true for VERSION_1 devices, the guest's order for legacy ones.

  read8(addr: number): number {
    const r = this.findRegion(addr, 1);
    return r ? r.bytes[addr - r.base]! : -1;
  }
  read16(addr: number, le = true): number {
    const r = this.findRegion(addr, 2);
    return r ? r.view.getUint16(addr - r.base, le) : -1;
  }
  read32(addr: number, le = true): number {
    const r = this.findRegion(addr, 4);
    return r ? r.view.getUint32(addr - r.base, le) : -1;
  }
  read64(addr: number, le = true): bigint {
    const r = this.findRegion(addr, 8);
    return r ? r.view.getBigUint64(addr - r.base, le) : -1n;
  }
  write8(addr: number, v: number): boolean {
    const r = this.findRegion(addr, 1);
    if (!r || r.readonly) return false;
    r.bytes[addr - r.base] = v;
    this.noteWrite(addr, 1);
    return true;
  }
  write16(addr: number, v: number, le = true): boolean {
    const r = this.findRegion(addr, 2);
    if (!r || r.readonly) return false;
    r.view.setUint16(addr - r.base, v, le);
    this.noteWrite(addr, 2);
    return true;
  }
  write32(addr: number, v: number, le = true): boolean {
    const r = this.findRegion(addr, 4);
    if (!r || r.readonly) return false;
    r.view.setUint32(addr - r.base, v >>> 0, le);
    this.noteWrite(addr, 4);
    return true;
  }
  write64(addr: number, v: bigint, le = true): boolean {
    const r = this.findRegion(addr, 8);
    if (!r || r.readonly) return false;
    r.view.setBigUint64(addr - r.base, BigInt.asUintN(64, v), le);
    this.noteWrite(addr, 8);
    return true;
  }

  // Convenience forms of the 16/32/64-bit accessors with the byte order in the name.
  read16le(a: number): number { return this.read16(a, true); }
  read16be(a: number): number { return this.read16(a, false); }
  read32le(a: number): number { return this.read32(a, true); }
  read32be(a: number): number { return this.read32(a, false); }
  read64le(a: number): bigint { return this.read64(a, true); }
  read64be(a: number): bigint { return this.read64(a, false); }
  write16le(a: number, v: number): boolean { return this.write16(a, v, true); }
  write16be(a: number, v: number): boolean { return this.write16(a, v, false); }
  write32le(a: number, v: number): boolean { return this.write32(a, v, true); }
  write32be(a: number, v: number): boolean { return this.write32(a, v, false); }
  write64le(a: number, v: bigint): boolean { return this.write64(a, v, true); }
  write64be(a: number, v: bigint): boolean { return this.write64(a, v, false); }
}
