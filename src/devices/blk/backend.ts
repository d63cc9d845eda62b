/**
 * What virtio-blk stores its disk in: a small interface on byte ranges, like QEMU's BlockBackend
 * seen from a device (`blk_aio_preadv`, `blk_aio_pwritev`, `blk_aio_flush`, `blk_aio_pdiscard`,
 * `blk_aio_pwrite_zeroes`). A backend never sees rings, descriptors or guest addresses.
 *
 * Every operation either finishes before it returns (it returns `undefined`) or later (it returns
 * a promise). A failure is a throw or a rejected promise; the device answers the request with
 * VIRTIO_BLK_S_IOERR, as QEMU does with its default error policy (`rerror=report`). Offsets and
 * lengths are whole bytes inside the disk (the device checks them against its capacity first).
 *
 * No Node imports here: the Node file backend lives in `backends/node-file.ts`.
 */

/** Done now (`undefined`), or done when the promise settles. */
export type BlockResult = void | Promise<void>;

export interface BlockBackend {
  /**
   * Size in bytes. The device's capacity is this rounded up to whole 512-byte sectors (QEMU's
   * block layer rounds the same way); the bytes past `size` read as zeros.
   */
  readonly size: number;
  /** Writes, discards and write-zeroes are refused; the device offers VIRTIO_BLK_F_RO. */
  readonly readOnly: boolean;
  /**
   * Every operation finishes before it returns (never a promise). The device then reads straight
   * into guest RAM; otherwise it reads through a bounce buffer, so that a read still running when
   * the driver resets the device (or the device breaks) cannot reach memory the guest has reused.
   */
  readonly synchronous?: boolean;
  /** Fill `dst` with the bytes at `offset`. */
  read(offset: number, dst: Uint8Array): BlockResult;
  /** Store `src` at `offset`; done means stored as far as the backend's write cache goes. */
  write(offset: number, src: Uint8Array): BlockResult;
  /** Make every finished write durable (Node files: fsync). */
  flush(): BlockResult;
  /** The range's contents are no longer needed (the memory and file backends zero it). */
  discard(offset: number, length: number): BlockResult;
  /** Make the range read as zeros; `mayUnmap`: the backend may deallocate it. */
  writeZeroes(offset: number, length: number, mayUnmap: boolean): BlockResult;
  /**
   * Read synchronously, if the backend can (memory, OPFS sync handles, Node files): used once at
   * creation for QEMU's geometry guess from the partition table in sector 0. Returns false when it
   * cannot.
   */
  readSync?(offset: number, dst: Uint8Array): boolean;
  /** Release what the backend holds (file descriptors). */
  close?(): void | Promise<void>;
}

/** A failed backend operation (the device turns it into VIRTIO_BLK_S_IOERR). */
export class BlockBackendError extends Error {
  override name = 'BlockBackendError';
  constructor(message: string, readonly code?: string) {
    super(message);
  }
}

/** Capacity in 512-byte sectors of a backend of `size` bytes (QEMU: DIV_ROUND_UP). */
export function capacitySectors(size: number): number {
  return Math.ceil(size / 512);
}

/** `true` when `r` is a promise-like result. */
export function isPending(r: BlockResult): r is Promise<void> {
  return r !== undefined && typeof (r as Promise<void>).then === 'function';
}

/**
 * A read-only view of another backend: reads pass through, everything that would change the disk
 * fails (EPERM, as QEMU's block layer answers a write to a read-only node).
 */
export class ReadOnlyBlockBackend implements BlockBackend {
  readonly readOnly = true;
  readonly synchronous: boolean;
  constructor(readonly inner: BlockBackend) {
    this.synchronous = inner.synchronous === true;
  }
  get size(): number {
    return this.inner.size;
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.inner.read(offset, dst);
  }
  write(): BlockResult {
    throw new BlockBackendError('read-only backend', 'EPERM');
  }
  flush(): BlockResult {
    // Nothing can be dirty; QEMU flushes a read-only node successfully.
    return undefined;
  }
  discard(): BlockResult {
    throw new BlockBackendError('read-only backend', 'EPERM');
  }
  writeZeroes(): BlockResult {
    throw new BlockBackendError('read-only backend', 'EPERM');
  }
  readSync(offset: number, dst: Uint8Array): boolean {
    return this.inner.readSync?.(offset, dst) ?? false;
  }
  close(): void | Promise<void> {
    return this.inner.close?.();
  }
}

/** Wrap `b` so that it is read-only (no-op when it already is). */
export function readOnlyBackend(b: BlockBackend): BlockBackend {
  return b.readOnly ? b : new ReadOnlyBlockBackend(b);
}
