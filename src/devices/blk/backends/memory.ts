/**
 * A disk in host memory (the default backend), over a fresh buffer or one the caller gives: an
 * `ArrayBuffer`, a `SharedArrayBuffer` or a `Uint8Array` (a browser's downloaded image, a test's
 * pattern). Every operation finishes before it returns, so the device moves data straight between
 * guest RAM and this buffer: one copy per request, nothing allocated.
 */
import { BlockBackendError, type BlockBackend, type BlockResult } from '../backend.js';

export interface MemoryBlockBackendOptions {
  readOnly?: boolean;
}

/** Disk ranges are copied through cached views of these many bytes (see `read`). */
const VIEW_CHUNK = 4096;
const BIG_CHUNK = 65536;

export class MemoryBlockBackend implements BlockBackend {
  readonly synchronous = true;
  readonly readOnly: boolean;
  /** The disk's bytes (the caller's buffer when one was given). */
  readonly data: Uint8Array;
  /** Flushes seen (nothing to do for memory; counted for tests). */
  flushes = 0;
  /**
   * Views of the disk, one per VIEW_CHUNK-aligned chunk, made on first use: a read of whole
   * aligned chunks copies from these and needs no new view (no allocation per request).
   */
  private readonly chunkViews: (Uint8Array | undefined)[];
  /** The same for 64 KiB chunks (fewer, larger copies for big aligned reads). */
  private readonly bigViews: (Uint8Array | undefined)[];

  /** `source`: a size in bytes (zero-filled), or the disk's contents (not copied). */
  constructor(source: number | ArrayBufferLike | Uint8Array, opts: MemoryBlockBackendOptions = {}) {
    if (typeof source === 'number') {
      if (!Number.isSafeInteger(source) || source < 0) throw new RangeError(`bad disk size ${source}`);
      this.data = new Uint8Array(source);
    } else {
      this.data = source instanceof Uint8Array ? source : new Uint8Array(source);
    }
    this.readOnly = opts.readOnly ?? false;
    this.chunkViews = new Array<Uint8Array | undefined>(Math.ceil(this.data.length / VIEW_CHUNK));
    this.bigViews = new Array<Uint8Array | undefined>(Math.ceil(this.data.length / BIG_CHUNK));
  }

  get size(): number {
    return this.data.length;
  }

  read(offset: number, dst: Uint8Array): BlockResult {
    const n = dst.length;
    const data = this.data;
    const avail = Math.max(0, Math.min(n, data.length - offset));
    if ((offset & (VIEW_CHUNK - 1)) === 0 && (avail & (VIEW_CHUNK - 1)) === 0) {
      // Whole aligned chunks: copy from the cached chunk views, 64 KiB ones where aligned.
      const views = this.chunkViews;
      const big = this.bigViews;
      let done = 0;
      while (done < avail) {
        const at = offset + done;
        if ((at & (BIG_CHUNK - 1)) === 0 && avail - done >= BIG_CHUNK) {
          const c = at / BIG_CHUNK;
          let v = big[c];
          if (v === undefined) big[c] = v = data.subarray(at, at + BIG_CHUNK);
          dst.set(v, done);
          done += BIG_CHUNK;
        } else {
          const c = at / VIEW_CHUNK;
          let v = views[c];
          if (v === undefined) views[c] = v = data.subarray(at, at + VIEW_CHUNK);
          dst.set(v, done);
          done += VIEW_CHUNK;
        }
      }
    } else if (avail > 0) {
      dst.set(data.subarray(offset, offset + avail));
    }
    // The partial last sector past the end reads as zeros (as a short file read does in QEMU).
    if (avail < n) dst.fill(0, avail);
  }

  write(offset: number, src: Uint8Array): BlockResult {
    if (this.readOnly) throw new BlockBackendError('read-only backend', 'EPERM');
    const data = this.data;
    if (offset + src.length <= data.length) {
      data.set(src, offset);
    } else if (offset < data.length) {
      // The tail of the last partial sector: keep what fits.
      data.set(src.subarray(0, data.length - offset), offset);
    }
  }

  flush(): BlockResult {
    this.flushes++;
  }

  discard(offset: number, length: number): BlockResult {
    if (this.readOnly) throw new BlockBackendError('read-only backend', 'EPERM');
    // A discarded range reads back as zeros, as a punched hole in a raw file does.
    this.data.fill(0, offset, Math.min(offset + length, this.data.length));
  }

  writeZeroes(offset: number, length: number, _mayUnmap?: boolean): BlockResult {
    if (this.readOnly) throw new BlockBackendError('read-only backend', 'EPERM');
    this.data.fill(0, offset, Math.min(offset + length, this.data.length));
  }

  readSync(offset: number, dst: Uint8Array): boolean {
    this.read(offset, dst);
    return true;
  }
}
