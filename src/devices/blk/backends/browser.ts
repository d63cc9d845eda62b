/**
 * Disks for browsers (no Node imports). An `ArrayBuffer` disk is the memory backend
 * (`new MemoryBlockBackend(buffer)`); beside it:
 *
 * - `BlobBlockBackend`: a `Blob` or `File` (a downloaded image, a file the user picked), read-only,
 *   read asynchronously slice by slice;
 * - `OpfsSyncBlockBackend`: an Origin Private File System file through a
 *   `FileSystemSyncAccessHandle` (in a worker): synchronous, positioned reads and writes, flush;
 * - `OpfsFileBlockBackend`: an OPFS `FileSystemFileHandle` from the main thread: reads through
 *   `getFile()`, writes through a writable stream per write (committed when the stream closes,
 *   so a write is done when it is on the file; slower than the sync handle).
 *
 * The handles are described structurally, so this compiles without the DOM's OPFS typings and
 * tests can pass stand-ins.
 */
import { BlockBackendError, type BlockBackend, type BlockResult } from '../backend.js';

/** What `BlobBlockBackend` needs of a Blob (the DOM `Blob` and `File` have it). */
export interface BlobLike {
  readonly size: number;
  slice(start?: number, end?: number): { arrayBuffer(): Promise<ArrayBuffer> };
}

export class BlobBlockBackend implements BlockBackend {
  readonly readOnly = true;
  readonly synchronous = false;
  constructor(readonly blob: BlobLike) {}
  get size(): number {
    return this.blob.size;
  }
  async read(offset: number, dst: Uint8Array): Promise<void> {
    const end = Math.min(offset + dst.length, this.blob.size);
    const got = end > offset ? new Uint8Array(await this.blob.slice(offset, end).arrayBuffer()) : new Uint8Array(0);
    dst.set(got);
    if (got.length < dst.length) dst.fill(0, got.length);
  }
  write(): BlockResult {
    throw new BlockBackendError('a Blob is read-only', 'EPERM');
  }
  flush(): BlockResult {
    return undefined;
  }
  discard(): BlockResult {
    throw new BlockBackendError('a Blob is read-only', 'EPERM');
  }
  writeZeroes(): BlockResult {
    throw new BlockBackendError('a Blob is read-only', 'EPERM');
  }
}

/** The parts of `FileSystemSyncAccessHandle` used here. */
export interface SyncAccessHandleLike {
  read(buffer: Uint8Array, options?: { at?: number }): number;
  write(buffer: Uint8Array, options?: { at?: number }): number;
  flush(): void;
  getSize(): number;
  close(): void;
}

/** Zeros written per call by discard and write-zeroes on file-like backends. */
const ZERO_CHUNK = 64 * 1024;

export class OpfsSyncBlockBackend implements BlockBackend {
  readonly synchronous = true;
  private zeros: Uint8Array | undefined;
  private sizeNow: number;
  constructor(readonly handle: SyncAccessHandleLike, readonly readOnly = false) {
    this.sizeNow = handle.getSize();
  }
  get size(): number {
    return this.sizeNow;
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    let done = 0;
    while (done < dst.length) {
      const n = this.handle.read(done === 0 ? dst : dst.subarray(done), { at: offset + done });
      if (n <= 0) break;
      done += n;
    }
    if (done < dst.length) dst.fill(0, done);
  }
  write(offset: number, src: Uint8Array): BlockResult {
    if (this.readOnly) throw new BlockBackendError('read-only handle', 'EPERM');
    let done = 0;
    while (done < src.length) {
      const n = this.handle.write(done === 0 ? src : src.subarray(done), { at: offset + done });
      if (n <= 0) throw new BlockBackendError('short write', 'EIO');
      done += n;
    }
    if (offset + src.length > this.sizeNow) this.sizeNow = offset + src.length;
  }
  flush(): BlockResult {
    if (!this.readOnly) this.handle.flush();
  }
  discard(offset: number, length: number): BlockResult {
    this.zero(offset, length);
  }
  writeZeroes(offset: number, length: number): BlockResult {
    this.zero(offset, length);
  }
  private zero(offset: number, length: number): void {
    if (this.readOnly) throw new BlockBackendError('read-only handle', 'EPERM');
    const z = (this.zeros ??= new Uint8Array(ZERO_CHUNK));
    for (let done = 0; done < length; done += z.length) {
      const n = Math.min(z.length, length - done);
      this.write(offset + done, n === z.length ? z : z.subarray(0, n));
    }
  }
  readSync(offset: number, dst: Uint8Array): boolean {
    this.read(offset, dst);
    return true;
  }
  close(): void {
    this.handle.close();
  }
}

/** The parts of `FileSystemFileHandle` (and its writable stream) used here. */
export interface FileHandleLike {
  getFile(): Promise<BlobLike>;
  createWritable(options?: { keepExistingData?: boolean }): Promise<{
    write(data: { type: 'write'; position: number; data: Uint8Array }): Promise<void>;
    close(): Promise<void>;
  }>;
}

export class OpfsFileBlockBackend implements BlockBackend {
  readonly synchronous = false;
  private zeros: Uint8Array | undefined;
  /** Writes are serialised: each writable stream commits a whole new version of the file. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(readonly handle: FileHandleLike, private sizeNow: number, readonly readOnly: boolean) {}

  static async open(handle: FileHandleLike, opts: { readOnly?: boolean } = {}): Promise<OpfsFileBlockBackend> {
    const f = await handle.getFile();
    return new OpfsFileBlockBackend(handle, f.size, opts.readOnly ?? false);
  }

  get size(): number {
    return this.sizeNow;
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    await this.queue;
    const f = await this.handle.getFile();
    const end = Math.min(offset + dst.length, f.size);
    const got = end > offset ? new Uint8Array(await f.slice(offset, end).arrayBuffer()) : new Uint8Array(0);
    dst.set(got);
    if (got.length < dst.length) dst.fill(0, got.length);
  }

  write(offset: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) return Promise.reject(new BlockBackendError('read-only handle', 'EPERM'));
    // The caller's buffer may change once the request completes; the stream copies it now.
    const data = src.slice();
    const p = this.queue.then(async () => {
      const w = await this.handle.createWritable({ keepExistingData: true });
      await w.write({ type: 'write', position: offset, data });
      await w.close();
      if (offset + data.length > this.sizeNow) this.sizeNow = offset + data.length;
    });
    this.queue = p.catch(() => undefined);
    return p;
  }

  flush(): Promise<void> {
    // Every write is committed when its stream closes: wait for those in progress.
    return this.queue;
  }

  discard(offset: number, length: number): Promise<void> {
    return this.zero(offset, length);
  }

  writeZeroes(offset: number, length: number): Promise<void> {
    return this.zero(offset, length);
  }

  private async zero(offset: number, length: number): Promise<void> {
    const z = (this.zeros ??= new Uint8Array(ZERO_CHUNK));
    for (let done = 0; done < length; done += z.length) {
      const n = Math.min(z.length, length - done);
      await this.write(offset + done, n === z.length ? z : z.subarray(0, n));
    }
  }
}
