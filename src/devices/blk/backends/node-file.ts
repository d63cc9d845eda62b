/**
 * A raw disk image in a file, for Node (QEMU's `file` protocol driver under the `raw` format):
 * positioned asynchronous I/O through `fs.promises` (`FileHandle.read`/`write` at an offset, so
 * many requests run at once), FLUSH as `fdatasync` (what QEMU's file-posix does), discard and
 * write-zeroes as zeros written over the range (a punched hole reads as zeros too). A short read
 * past the end of the file is zero-filled; a write past it grows the file, as QEMU's does.
 *
 * Node-only: exported from `virtio-ts/node`, never from the browser bundle.
 */
import { fstatSync, openSync, closeSync, readSync as fsReadSync, promises as fsp } from 'node:fs';
import { BlockBackendError, type BlockBackend, type BlockResult } from '../backend.js';
import { strerror } from '../../strerror.js';

export interface NodeFileBlockBackendOptions {
  readOnly?: boolean;
}

/** Zeros written per call by discard and write-zeroes. */
const ZERO_CHUNK = 1 << 20;

export class NodeFileBlockBackend implements BlockBackend {
  readonly synchronous = false;
  readonly readOnly: boolean;
  private closed = false;
  private zeros: Uint8Array | undefined;

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    private currentSize: number,
    readOnly: boolean,
  ) {
    this.readOnly = readOnly;
  }

  /**
   * Open `path` (read-write unless `readOnly`). Rejects with the message QEMU prints, e.g.
   * "Could not open '/x.img': No such file or directory".
   */
  static async open(path: string, opts: NodeFileBlockBackendOptions = {}): Promise<NodeFileBlockBackend> {
    const readOnly = opts.readOnly ?? false;
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw new BlockBackendError(`Could not open '${path}': ${strerror(e)}`, (e as NodeJS.ErrnoException).code);
    }
    const st = await fh.stat();
    if (st.isDirectory()) {
      await fh.close();
      throw new BlockBackendError(`Could not open '${path}': Is a directory`, 'EISDIR');
    }
    return new NodeFileBlockBackend(path, fh, st.size, readOnly);
  }

  /**
   * Check synchronously that `path` opens (for command-line parsing, which QEMU does before it
   * builds devices); throws a `BlockBackendError` with QEMU's message.
   */
  static checkOpen(path: string, readOnly: boolean): void {
    let fd: number;
    try {
      fd = openSync(path, readOnly ? 'r' : 'r+');
    } catch (e) {
      throw new BlockBackendError(`Could not open '${path}': ${strerror(e)}`, (e as NodeJS.ErrnoException).code);
    }
    const dir = fstatSync(fd).isDirectory();
    closeSync(fd);
    if (dir) throw new BlockBackendError(`Could not open '${path}': Is a directory`, 'EISDIR');
  }

  get size(): number {
    return this.currentSize;
  }

  async read(offset: number, dst: Uint8Array): Promise<void> {
    let done = 0;
    while (done < dst.length) {
      const { bytesRead } = await this.fh.read(dst, done, dst.length - done, offset + done);
      if (bytesRead === 0) {
        // Past the end of the file: zeros, as file-posix fills a short read.
        dst.fill(0, done);
        return;
      }
      done += bytesRead;
    }
  }

  async write(offset: number, src: Uint8Array): Promise<void> {
    if (this.readOnly) throw new BlockBackendError('read-only file', 'EPERM');
    let done = 0;
    while (done < src.length) {
      const { bytesWritten } = await this.fh.write(src, done, src.length - done, offset + done);
      if (bytesWritten === 0) throw new BlockBackendError(`short write to '${this.path}'`, 'EIO');
      done += bytesWritten;
    }
    if (offset + src.length > this.currentSize) this.currentSize = offset + src.length;
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.fh.datasync();
  }

  discard(offset: number, length: number): BlockResult {
    return this.zero(offset, length);
  }

  writeZeroes(offset: number, length: number): BlockResult {
    return this.zero(offset, length);
  }

  private async zero(offset: number, length: number): Promise<void> {
    if (this.readOnly) throw new BlockBackendError('read-only file', 'EPERM');
    const zeros = (this.zeros ??= new Uint8Array(Math.min(ZERO_CHUNK, Math.max(length, 1))));
    let done = 0;
    while (done < length) {
      const n = Math.min(zeros.length, length - done);
      await this.write(offset + done, n === zeros.length ? zeros : zeros.subarray(0, n));
      done += n;
    }
  }

  readSync(offset: number, dst: Uint8Array): boolean {
    try {
      let done = 0;
      while (done < dst.length) {
        const n = fsReadSync(this.fh.fd, dst, done, dst.length - done, offset + done);
        if (n === 0) {
          dst.fill(0, done);
          break;
        }
        done += n;
      }
      return true;
    } catch {
      return false;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/**
 * Open every file a parsed command line names (`-drive file=`, `-blockdev driver=file`), each
 * once, read-write unless every node using it is read-only: the map `BuildOptions.blockFiles`
 * wants. Rejects with the `-drive`/`-blockdev` location and QEMU's message for the first that
 * fails; closes what it opened then.
 */
export async function openBlockFiles(nodes: readonly { filename?: string | undefined; readOnly: boolean; loc?: string }[]): Promise<Map<string, NodeFileBlockBackend>> {
  const want = new Map<string, { readOnly: boolean; loc: string | undefined }>();
  for (const n of nodes) {
    if (n.filename === undefined) continue;
    const w = want.get(n.filename);
    want.set(n.filename, { readOnly: (w?.readOnly ?? true) && n.readOnly, loc: w?.loc ?? n.loc });
  }
  const out = new Map<string, NodeFileBlockBackend>();
  try {
    for (const [name, w] of want) {
      try {
        out.set(name, await NodeFileBlockBackend.open(name, { readOnly: w.readOnly }));
      } catch (e) {
        if (e instanceof BlockBackendError && w.loc) throw new BlockBackendError(`${w.loc}: ${e.message}`, e.code);
        throw e;
      }
    }
  } catch (e) {
    await Promise.all([...out.values()].map((b) => b.close()));
    throw e;
  }
  return out;
}
