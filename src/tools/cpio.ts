// A writer for the "newc" cpio format (SVR4 without checksums), the format the Linux kernel
// unpacks as an initramfs. Writing it ourselves lets a test build an initramfs with device nodes
// (/dev/console) without root and without a cpio binary on the host.
//
// Layout of one member: a 110-byte ASCII header ("070701" and 13 fields of 8 hex digits), the
// path name with its NUL, padding to a multiple of 4 (counted from the header's start), the data,
// padding to a multiple of 4. The archive ends with a member named "TRAILER!!!".
// Compress the result (gzip) at the caller if wanted; the kernel accepts both.

const MAGIC = '070701';
const HEADER_SIZE = 110;
const TRAILER = 'TRAILER!!!';

// File type bits of st_mode.
export const S_IFDIR = 0o040000;
export const S_IFREG = 0o100000;
export const S_IFLNK = 0o120000;
export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;

/** Ownership and time shared by every kind of member; defaults are root and time 0. */
export interface CpioMeta {
  uid?: number;
  gid?: number;
  /** Seconds since the epoch. 0 keeps archives byte-identical from run to run. */
  mtime?: number;
}

/** One member as the writer stores it, in archive order. */
export interface CpioMember {
  path: string;
  /** Full st_mode: type bits and permissions. */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  nlink: number;
  data: Uint8Array;
  rdevMajor: number;
  rdevMinor: number;
}

/** Canonical member name: no leading "/" or "./", no empty or "." components, no "..". */
export function cpioPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0) throw new Error(`cpio: empty path ${JSON.stringify(path)}`);
  if (parts.includes('..')) throw new Error(`cpio: ".." in path ${JSON.stringify(path)}`);
  return parts.join('/');
}

/**
 * Collects members and serialises them. Parent directories are added (mode 0755) when a member
 * names one not yet added, because the kernel's unpacker creates files with a plain open() and
 * does not make missing directories. Adding a path twice is an error: the unpacker would apply
 * both, and the second would silently win or fail depending on the type.
 */
export class CpioWriter {
  private readonly members: CpioMember[] = [];
  private readonly seen = new Map<string, number>();

  directory(path: string, perm = 0o755, meta: CpioMeta = {}): this {
    const p = cpioPath(path);
    // A directory the writer added implicitly may be given its own permissions afterwards.
    const at = this.seen.get(p);
    if (at !== undefined && (this.members[at]!.mode & 0o170000) === S_IFDIR) {
      this.members[at] = this.member(p, S_IFDIR | (perm & 0o7777), meta, new Uint8Array(0), 2);
      return this;
    }
    return this.add(this.member(p, S_IFDIR | (perm & 0o7777), meta, new Uint8Array(0), 2));
  }

  file(path: string, data: Uint8Array | string, perm = 0o644, meta: CpioMeta = {}): this {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    return this.add(this.member(cpioPath(path), S_IFREG | (perm & 0o7777), meta, bytes, 1));
  }

  /** A symbolic link; its data is the target, stored without a NUL as the kernel expects. */
  symlink(path: string, target: string, meta: CpioMeta = {}): this {
    if (target === '') throw new Error(`cpio: empty symlink target for ${path}`);
    const bytes = new TextEncoder().encode(target);
    return this.add(this.member(cpioPath(path), S_IFLNK | 0o777, meta, bytes, 1));
  }

  charDevice(path: string, major: number, minor: number, perm = 0o600, meta: CpioMeta = {}): this {
    const m = this.member(cpioPath(path), S_IFCHR | (perm & 0o7777), meta, new Uint8Array(0), 1);
    return this.add({ ...m, rdevMajor: major, rdevMinor: minor });
  }

  blockDevice(path: string, major: number, minor: number, perm = 0o600, meta: CpioMeta = {}): this {
    const m = this.member(cpioPath(path), S_IFBLK | (perm & 0o7777), meta, new Uint8Array(0), 1);
    return this.add({ ...m, rdevMajor: major, rdevMinor: minor });
  }

  has(path: string): boolean {
    return this.seen.has(cpioPath(path));
  }

  /** The members in archive order (parents before children). */
  list(): readonly CpioMember[] {
    return this.members;
  }

  /** The archive: every member, then the trailer. Inode numbers are assigned in order from 1. */
  finish(): Uint8Array {
    const chunks: Uint8Array[] = [];
    let ino = 1;
    for (const m of this.members) chunks.push(...encodeMember(m, ino++));
    const trailer: CpioMember = {
      path: TRAILER,
      mode: 0,
      uid: 0,
      gid: 0,
      mtime: 0,
      nlink: 1,
      data: new Uint8Array(0),
      rdevMajor: 0,
      rdevMinor: 0,
    };
    chunks.push(...encodeMember(trailer, 0));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    const out = new Uint8Array(total);
    let off = 0;
    for (const c of chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }

  private member(path: string, mode: number, meta: CpioMeta, data: Uint8Array, nlink: number): CpioMember {
    return {
      path,
      mode,
      uid: meta.uid ?? 0,
      gid: meta.gid ?? 0,
      mtime: meta.mtime ?? 0,
      nlink,
      data,
      rdevMajor: 0,
      rdevMinor: 0,
    };
  }

  private add(m: CpioMember): this {
    if (this.seen.has(m.path)) throw new Error(`cpio: ${m.path} added twice`);
    const parts = m.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      const at = this.seen.get(dir);
      if (at === undefined) {
        this.seen.set(dir, this.members.length);
        this.members.push(this.member(dir, S_IFDIR | 0o755, {}, new Uint8Array(0), 2));
      } else if ((this.members[at]!.mode & 0o170000) !== S_IFDIR) {
        throw new Error(`cpio: ${dir} is not a directory (parent of ${m.path})`);
      }
    }
    this.seen.set(m.path, this.members.length);
    this.members.push(m);
    return this;
  }
}

const pad4 = (n: number): number => (4 - (n & 3)) & 3;

function hex8(value: number, field: string): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) {
    throw new Error(`cpio: ${field} ${value} does not fit 32 bits`);
  }
  return value.toString(16).toUpperCase().padStart(8, '0');
}

function encodeMember(m: CpioMember, ino: number): Uint8Array[] {
  const name = new TextEncoder().encode(m.path);
  const namesize = name.length + 1; // the NUL counts
  const header =
    MAGIC +
    hex8(ino, 'ino') +
    hex8(m.mode, 'mode') +
    hex8(m.uid, 'uid') +
    hex8(m.gid, 'gid') +
    hex8(m.nlink, 'nlink') +
    hex8(m.mtime, 'mtime') +
    hex8(m.data.length, 'filesize') +
    hex8(0, 'devmajor') +
    hex8(0, 'devminor') +
    hex8(m.rdevMajor, 'rdevmajor') +
    hex8(m.rdevMinor, 'rdevminor') +
    hex8(namesize, 'namesize') +
    hex8(0, 'check');
  const head = new Uint8Array(HEADER_SIZE + namesize + pad4(HEADER_SIZE + namesize));
  head.set(new TextEncoder().encode(header), 0);
  head.set(name, HEADER_SIZE); // the NUL and the padding are the array's zeroes
  const out: Uint8Array[] = [head];
  if (m.data.length > 0) {
    out.push(m.data);
    const tail = pad4(m.data.length);
    if (tail > 0) out.push(new Uint8Array(tail));
  }
  return out;
}
