/**
 * Guest-side helper for virtio-blk (VIRTIO 1.2 §5.2), over any transport driver: requests laid
 * out as Linux lays them out (a 16-byte header, data buffers, a 1-byte status), posted, notified
 * and waited for, and the configuration space read field by field. Any layout can be built with
 * `post` (split headers, status inside the data buffer, indirect tables) for conformance and
 * hostile tests.
 */
import type { GuestAllocator } from './alloc.js';
import { MachineError, type PollOptions } from './machine.js';
import { DriverError, type VirtioTransportDriver } from './virtio-driver.js';
import type { DriverBuffer, UsedEntry, VringDriver } from './vring.js';

export const BLK_T_IN = 0;
export const BLK_T_OUT = 1;
export const BLK_T_FLUSH = 4;
export const BLK_T_GET_ID = 8;
export const BLK_T_DISCARD = 11;
export const BLK_T_WRITE_ZEROES = 13;
export const BLK_S_OK = 0;
export const BLK_S_IOERR = 1;
export const BLK_S_UNSUPP = 2;

/** virtio-blk's configuration space (`struct virtio_blk_config`), as far as the device has it. */
export interface BlkConfig {
  capacity: bigint;
  sizeMax: number;
  segMax: number;
  cylinders: number;
  heads: number;
  sectors: number;
  blkSize: number;
  physicalBlockExp: number;
  alignmentOffset: number;
  minIoSize: number;
  optIoSize: number;
  wce: number;
  numQueues: number;
  maxDiscardSectors: number;
  maxDiscardSeg: number;
  discardSectorAlignment: number;
  maxWriteZeroesSectors: number;
  maxWriteZeroesSeg: number;
  writeZeroesMayUnmap: number;
}

/** The 16-byte request header, little-endian (type, ioprio, sector). */
export function blkHeader(type: number, sector: bigint | number, ioprio = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setUint32(0, type >>> 0, true);
  v.setUint32(4, ioprio >>> 0, true);
  v.setBigUint64(8, BigInt.asUintN(64, BigInt(sector)), true);
  return b;
}

/** One discard/write-zeroes segment (sector, num_sectors, flags), little-endian. */
export function blkSegment(sector: bigint | number, numSectors: number, flags = 0): Uint8Array {
  const b = new Uint8Array(16);
  const v = new DataView(b.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, BigInt(sector)), true);
  v.setUint32(8, numSectors >>> 0, true);
  v.setUint32(12, flags >>> 0, true);
  return b;
}

export interface BlkPosted {
  head: number;
  /** Guest address of the status byte. */
  status: number;
  /** The data buffers (guest address, length). */
  data: { addr: number; len: number }[];
  /** Writable bytes of the chain (what used.len reports). */
  inLen: number;
}

export interface BlkPostOptions {
  /** Data buffer lengths (default: one buffer of `dataLen`). */
  segments?: readonly number[];
  /** Bytes for a write (default: a pattern). */
  bytes?: Uint8Array;
  /** Put the chain in an indirect table. */
  indirect?: boolean;
  /** Leave it unpublished (the caller publishes). */
  publish?: boolean;
  /** Initial contents of the status byte (default 0xff, so an unwritten status shows). */
  statusFill?: number;
  /** Fill of writable data buffers before the request (default 0xee). */
  fill?: number;
}

export class BlkDriver {
  constructor(
    readonly transport: VirtioTransportDriver,
    readonly ring: VringDriver,
    readonly alloc: GuestAllocator,
    readonly queueIndex = 0,
  ) {}

  get m() {
    return this.transport.machine;
  }

  /**
   * Post a request: the header, `dataLen` bytes of data (device-readable for writes, discard and
   * write-zeroes, device-writable otherwise) and the status byte. Not notified.
   */
  async post(type: number, sector: bigint | number, dataLen: number, opts: BlkPostOptions = {}): Promise<BlkPosted> {
    const readable = (type & 1) === 1;
    const hdr = this.alloc.alloc(16, 16);
    await this.m.writeBytes(hdr, blkHeader(type, sector));
    const lens = opts.segments ?? (dataLen > 0 ? [dataLen] : []);
    const data: { addr: number; len: number }[] = [];
    let off = 0;
    for (const len of lens) {
      const addr = this.alloc.alloc(Math.max(len, 1), 512);
      if (readable) {
        const bytes = opts.bytes ? opts.bytes.subarray(off, off + len) : blkPattern(len, off + Number(BigInt.asUintN(32, BigInt(sector))));
        await this.m.writeBytes(addr, bytes);
      } else if (len > 0) {
        await this.m.memset(addr, len, opts.fill ?? 0xee);
      }
      data.push({ addr, len });
      off += len;
    }
    const status = this.alloc.alloc(1, 1);
    await this.m.writeb(status, opts.statusFill ?? 0xff);
    const bufs: DriverBuffer[] = [{ addr: hdr, len: 16 }];
    for (const d of data) bufs.push({ addr: d.addr, len: d.len, write: !readable });
    bufs.push({ addr: status, len: 1, write: true });
    const table = opts.indirect ? this.alloc.alloc(16 * bufs.length, 16) : undefined;
    const head = await this.ring.add(bufs, { ...(table !== undefined ? { indirectTable: table } : {}), publish: opts.publish ?? true });
    if (head < 0) throw new DriverError('blk ring has no free descriptors');
    const inLen = 1 + (readable ? 0 : lens.reduce((a, b) => a + b, 0));
    return { head, status, data, inLen };
  }

  /** Post any chain; the last buffer must hold the status byte at its end. */
  async postChain(bufs: readonly DriverBuffer[], opts: { indirect?: boolean; publish?: boolean } = {}): Promise<number> {
    const table = opts.indirect ? this.alloc.alloc(16 * bufs.length, 16) : undefined;
    const head = await this.ring.add(bufs, { ...(table !== undefined ? { indirectTable: table } : {}), publish: opts.publish ?? true });
    if (head < 0) throw new DriverError('blk ring has no free descriptors');
    return head;
  }

  notify(): Promise<void> {
    return this.transport.notify(this.queueIndex);
  }

  /** Wait for `count` used entries (bounded). */
  wait(count = 1, opts: PollOptions = {}): Promise<UsedEntry[]> {
    return this.ring.waitUsed(count, { what: `${count} blk completion${count === 1 ? '' : 's'}`, ...opts });
  }

  /** Post one request, notify, wait; returns the used entry and the status byte. */
  async request(type: number, sector: bigint | number, dataLen: number, opts: BlkPostOptions & PollOptions = {}): Promise<{ posted: BlkPosted; used: UsedEntry; status: number }> {
    const posted = await this.post(type, sector, dataLen, opts);
    await this.notify();
    const used = await this.wait(1, opts);
    if (used.length !== 1) throw new MachineError(`expected one used entry, got ${used.length}`);
    const u = used[0]!;
    if (u.id !== posted.head) throw new MachineError(`used id ${u.id} is not the posted head ${posted.head}`);
    return { posted, used: u, status: await this.m.readb(posted.status) };
  }

  /** Read `len` bytes at `sector`; throws unless the status is OK. */
  async read(sector: bigint | number, len: number): Promise<Uint8Array> {
    const r = await this.request(BLK_T_IN, sector, len);
    if (r.status !== BLK_S_OK) throw new MachineError(`read of sector ${sector} failed with status ${r.status}`);
    const out = new Uint8Array(len);
    let off = 0;
    for (const d of r.posted.data) {
      out.set(await this.m.readBytes(d.addr, d.len), off);
      off += d.len;
    }
    return out;
  }

  /** Write `bytes` at `sector`; throws unless the status is OK. */
  async write(sector: bigint | number, bytes: Uint8Array): Promise<void> {
    const r = await this.request(BLK_T_OUT, sector, bytes.length, { bytes });
    if (r.status !== BLK_S_OK) throw new MachineError(`write of sector ${sector} failed with status ${r.status}`);
  }

  async flush(): Promise<number> {
    return (await this.request(BLK_T_FLUSH, 0, 0)).status;
  }

  /** GET_ID into a buffer of `len` bytes: the status and the bytes written. */
  async getId(len = 20): Promise<{ status: number; id: Uint8Array }> {
    const r = await this.request(BLK_T_GET_ID, 0, len);
    return { status: r.status, id: await this.m.readBytes(r.posted.data[0]!.addr, len) };
  }

  /** DISCARD or WRITE_ZEROES of one segment. */
  async discardOrZeroes(type: typeof BLK_T_DISCARD | typeof BLK_T_WRITE_ZEROES, sector: bigint | number, numSectors: number, flags = 0): Promise<number> {
    const r = await this.request(type, 0, 16, { bytes: blkSegment(sector, numSectors, flags) });
    return r.status;
  }

  /** The configuration space, field by field at their own widths (`size` bytes of it). */
  async config(size = 60): Promise<BlkConfig> {
    const t = this.transport;
    const r8 = (o: number) => (o < size ? t.configRead(o, 1) : Promise.resolve(0));
    const r16 = (o: number) => (o + 2 <= size ? t.configRead(o, 2) : Promise.resolve(0));
    const r32 = (o: number) => (o + 4 <= size ? t.configRead(o, 4) : Promise.resolve(0));
    const lo = await r32(0);
    const hi = await r32(4);
    return {
      capacity: (BigInt(hi) << 32n) | BigInt(lo),
      sizeMax: await r32(8),
      segMax: await r32(12),
      cylinders: await r16(16),
      heads: await r8(18),
      sectors: await r8(19),
      blkSize: await r32(20),
      physicalBlockExp: await r8(24),
      alignmentOffset: await r8(25),
      minIoSize: await r16(26),
      optIoSize: await r32(28),
      wce: await r8(32),
      numQueues: await r16(34),
      maxDiscardSectors: await r32(36),
      maxDiscardSeg: await r32(40),
      discardSectorAlignment: await r32(44),
      maxWriteZeroesSectors: await r32(48),
      maxWriteZeroesSeg: await r32(52),
      writeZeroesMayUnmap: await r8(56),
    };
  }
}

/** A recognisable byte pattern (`seed` makes different requests differ). */
export function blkPattern(len: number, seed = 0): Uint8Array {
  const b = new Uint8Array(len);
  let s = (seed * 2654435761 + 1) >>> 0;
  for (let i = 0; i < len; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
}
