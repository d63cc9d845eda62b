/**
 * The `ram` section, version 4, as QEMU 7.2 writes and reads it (`migration/ram.c`,
 * spec/qemu-virtio-migration.md §5.3).
 *
 * A chunk is a run of be64 words; a word's low 12 bits are flags, the rest an offset inside a
 * RAM block. START carries MEM_SIZE (total bytes) and the block list (u8 length, name, be64
 * length), the iterations carry pages — ZERO (a fill byte) or PAGE (4096 bytes), each naming its
 * block unless CONTINUE says "same block as before" — and every chunk ends with EOS.
 *
 * Loading stages: the parser records, per page, where its bytes are in the stream (or its fill
 * byte), and nothing touches a block until `apply`. `peek` reads RAM as it will be afterwards.
 * The staging tables are sized by the machine's own blocks, never by numbers from the stream.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { RamBlock } from './machine-state.js';
import type { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import { printable } from './vmstate.js';

export const TARGET_PAGE_BITS = 12;
export const TARGET_PAGE_SIZE = 1 << TARGET_PAGE_BITS;

/** Obsolete; not written since QEMU 1.x. */
export const RAM_SAVE_FLAG_FULL = 0x01;
/** An all-same-byte page (formerly COMPRESS): u8 fill byte, always 0 from 7.2. */
export const RAM_SAVE_FLAG_ZERO = 0x02;
export const RAM_SAVE_FLAG_MEM_SIZE = 0x04;
export const RAM_SAVE_FLAG_PAGE = 0x08;
export const RAM_SAVE_FLAG_EOS = 0x10;
export const RAM_SAVE_FLAG_CONTINUE = 0x20;
export const RAM_SAVE_FLAG_XBZRLE = 0x40;
/** RDMA only. */
export const RAM_SAVE_FLAG_HOOK = 0x80;
export const RAM_SAVE_FLAG_COMPRESS_PAGE = 0x100;

/** The section's idstr and the only version a 7.2 loader accepts (`ram_load`). */
export const RAM_SECTION_IDSTR = 'ram';
export const RAM_SECTION_VERSION = 4;

// ---------------------------------------------------------------------------------------------
// Writing

function checkBlock(b: RamBlock): void {
  // QEMU's used_length is page-aligned; a stream has no way to carry a partial page.
  if (b.bytes.length % TARGET_PAGE_SIZE !== 0) throw new RangeError(`RAM block ${b.idstr}: length ${b.bytes.length} is not a multiple of ${TARGET_PAGE_SIZE}`);
}

/** START's chunk (`ram_save_setup`): MEM_SIZE with the total, the block list, EOS. */
export function ramSaveSetup(f: QEMUFileWriter, blocks: readonly RamBlock[]): void {
  let total = 0;
  for (const b of blocks) {
    checkBlock(b);
    total += b.bytes.length;
  }
  f.putBe64(BigInt(total) | BigInt(RAM_SAVE_FLAG_MEM_SIZE));
  for (const b of blocks) {
    f.putName(b.idstr);
    f.putBe64(BigInt(b.bytes.length));
  }
  f.putBe64(BigInt(RAM_SAVE_FLAG_EOS));
}

/** Is the page at `off` all zero bytes (`buffer_is_zero`)? Word-wise when the block allows it. */
function pageIsZero(bytes: Uint8Array, words: Uint32Array | undefined, off: number): boolean {
  if (words) {
    const end = (off + TARGET_PAGE_SIZE) >> 2;
    for (let i = off >> 2; i < end; i++) if (words[i] !== 0) return false;
    return true;
  }
  const end = off + TARGET_PAGE_SIZE;
  for (let i = off; i < end; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * Which pages are all zero, found once before writing, so that the writer can reserve the exact
 * size of the pages chunk (a fresh guest's 16 MiB is a 100 KiB stream; reserving for the worst
 * case would clear 16 MiB for nothing) and the page loop does not scan twice.
 */
export class RamPagePlan {
  /** Per block, one byte per page: 1 when the page is all zero. */
  readonly zero: Uint8Array[];
  /** Bytes `ramSavePages` will write. */
  readonly chunkBytes: number;

  constructor(readonly blocks: readonly RamBlock[]) {
    let n = 8; // EOS
    this.zero = blocks.map((b) => {
      checkBlock(b);
      const bytes = b.bytes;
      const words = (bytes.byteOffset & 3) === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2) : undefined;
      const pages = bytes.length / TARGET_PAGE_SIZE;
      const z = new Uint8Array(pages);
      for (let p = 0; p < pages; p++) {
        const isZero = pageIsZero(bytes, words, p * TARGET_PAGE_SIZE);
        z[p] = isZero ? 1 : 0;
        n += 8 + (isZero ? 1 : TARGET_PAGE_SIZE);
      }
      if (pages > 0) n += 1 + b.idstr.length;
      return z;
    });
    this.chunkBytes = n;
  }
}

/**
 * One iteration's chunk with every page of every block (QEMU's first pass over a quiescent
 * guest): ZERO with fill byte 0 for an all-zero page, PAGE with its bytes otherwise; the block
 * name after the first page of each block, CONTINUE after that; EOS.
 */
export function ramSavePages(f: QEMUFileWriter, blocks: readonly RamBlock[], plan: RamPagePlan = new RamPagePlan(blocks)): void {
  for (let k = 0; k < blocks.length; k++) {
    const b = blocks[k]!;
    const bytes = b.bytes;
    const zero = plan.zero[k]!;
    for (let p = 0; p < zero.length; p++) {
      const off = p * TARGET_PAGE_SIZE;
      const isZero = zero[p] === 1;
      // The be64 header as two be32 halves: offsets are page-aligned and below 2^53, so the
      // flags fit in the low half and no bigint is made per page.
      const flags = (isZero ? RAM_SAVE_FLAG_ZERO : RAM_SAVE_FLAG_PAGE) | (p === 0 ? 0 : RAM_SAVE_FLAG_CONTINUE);
      f.putBe32(Math.floor(off / 0x1_0000_0000));
      f.putBe32((off % 0x1_0000_0000) + flags);
      if (p === 0) f.putName(b.idstr);
      if (isZero) f.putByte(0);
      else f.putBuffer(bytes.subarray(off, off + TARGET_PAGE_SIZE));
    }
  }
  f.putBe64(BigInt(RAM_SAVE_FLAG_EOS));
}

/** END's chunk when nothing is left to send (`ram_save_complete` on a quiescent guest): EOS. */
export function ramSaveComplete(f: QEMUFileWriter): void {
  f.putBe64(BigInt(RAM_SAVE_FLAG_EOS));
}

// ---------------------------------------------------------------------------------------------
// Reading

/** A block the stream lists in MEM_SIZE. */
export interface StreamRamBlock {
  idstr: string;
  length: number;
  /** Offset of its entry in the stream. */
  offset: number;
}

/** What the chunk parser needs from whoever keeps the pages. */
export interface RamSink {
  /** A MEM_SIZE entry. Throws to refuse it. */
  listed(f: QEMUFileReader, block: StreamRamBlock): void;
  /** The handle for a block named in a page header, or throws "Can't find block". */
  block(f: QEMUFileReader, idstr: string, at: number): number;
  /** Length of the block behind a handle. */
  length(handle: number): number;
  /** A PAGE whose 4096 bytes start at `dataOffset` in the stream. */
  page(handle: number, offset: number, dataOffset: number): void;
  /** A ZERO page: every byte `fill`. */
  fill(handle: number, offset: number, fill: number): void;
}

/** The parser's memory across chunks (QEMU's `last_recv_block`). */
export interface RamReadState {
  /** The sink's handle of the last block named, undefined before the first. */
  lastBlock: number | undefined;
}

function hex(n: number | bigint): string {
  return n.toString(16);
}

/**
 * Parse one chunk up to and including its EOS (`ram_load_precopy`), with QEMU's checks and
 * messages. Every pass consumes at least 8 bytes, so the loop is bounded by the stream.
 */
export function readRamChunk(f: QEMUFileReader, sink: RamSink, state: RamReadState): void {
  for (;;) {
    const at = f.offset;
    // The be64 header read as two be32 halves, so that a page costs no bigint.
    const hi = f.getBe32('ram page header');
    const lo = f.getBe32('ram page header');
    const flags = lo & (TARGET_PAGE_SIZE - 1);
    // Exact below 2^53; anything above is no offset inside a block and fails the check below.
    const addr = hi * 0x1_0000_0000 + (lo - flags);

    // No compression threads on this side: a compressed page is refused up front, as QEMU does
    // when the capability is off.
    if (flags & RAM_SAVE_FLAG_COMPRESS_PAGE) throw f.error('ram page header', 'Received an unexpected compressed page', at);

    let handle = -1;
    let offset = 0;
    if (flags & (RAM_SAVE_FLAG_ZERO | RAM_SAVE_FLAG_PAGE | RAM_SAVE_FLAG_XBZRLE)) {
      // ram_block_from_stream
      if (flags & RAM_SAVE_FLAG_CONTINUE) {
        if (state.lastBlock === undefined) throw f.error('ram page header', 'Ack, bad migration stream!', at);
        handle = state.lastBlock;
      } else {
        const nameAt = f.offset;
        const idstr = f.getName('ram block id');
        handle = sink.block(f, idstr, nameAt);
        state.lastBlock = handle;
      }
      // host_from_ram_block_offset: the whole page must lie inside the block.
      const len = sink.length(handle);
      if (len < TARGET_PAGE_SIZE || addr > len - TARGET_PAGE_SIZE) {
        throw f.error('ram page offset', `Illegal RAM offset ${hex((BigInt(hi) << 32n) | BigInt(lo - flags))}`, at);
      }
      offset = addr;
    }

    switch (flags & ~RAM_SAVE_FLAG_CONTINUE) {
      case RAM_SAVE_FLAG_MEM_SIZE:
        readBlockList(f, sink, (BigInt(hi) << 32n) | BigInt(lo - flags));
        break;
      case RAM_SAVE_FLAG_ZERO:
        sink.fill(handle, offset, f.getByte('ram zero page fill byte'));
        break;
      case RAM_SAVE_FLAG_PAGE: {
        const dataAt = f.offset;
        f.skip(TARGET_PAGE_SIZE, 'ram page data');
        sink.page(handle, offset, dataAt);
        break;
      }
      case RAM_SAVE_FLAG_XBZRLE:
        throw f.error('ram page header', `XBZRLE pages are not supported (page at ${hex(offset)})`, at);
      case RAM_SAVE_FLAG_EOS:
        return;
      default:
        if (flags & RAM_SAVE_FLAG_HOOK) throw f.error('ram page header', 'RDMA hook pages (flag 0x80) are not supported', at);
        throw f.error('ram page header', `Unknown combination of migration flags: 0x${hex(flags)}`, at);
    }
  }
}

/**
 * MEM_SIZE's block list: entries until their lengths add up to the total. QEMU subtracts
 * without a check (a list that overshoots wraps around and reads on); here an entry longer
 * than what is left of the total is an error, so the loop ends.
 */
function readBlockList(f: QEMUFileReader, sink: RamSink, total: bigint): void {
  let left = total;
  while (left !== 0n) {
    const at = f.offset;
    const idstr = f.getName('ram block list id');
    const lenAt = f.offset;
    const length = f.getBe64(`ram block ${printable(idstr)} length`);
    if (length > left) {
      throw f.error(`ram block ${printable(idstr)} length`, `block list overruns the total RAM size 0x${hex(total)} (0x${hex(left)} left, block is 0x${hex(length)})`, lenAt);
    }
    left -= length;
    if (length > BigInt(Number.MAX_SAFE_INTEGER)) throw f.error(`ram block ${printable(idstr)} length`, `length 0x${hex(length)} is too large`, lenAt);
    sink.listed(f, { idstr, length: Number(length), offset: at });
  }
}

// ---------------------------------------------------------------------------------------------
// Staging for a load into a machine

/** Staged value for a page that the stream did not carry. */
const NOT_STAGED = -1000;

interface StagedBlock {
  block: RamBlock;
  /** Per page: NOT_STAGED, -(fill + 1) for a ZERO page, or the stream offset of its bytes. */
  pages: Float64Array | undefined;
  listed: boolean;
}

/** A block of the stream that the machine does not have, read and thrown away. */
export interface DiscardedRamBlock {
  idstr: string;
  length: number;
  pages: number;
}

export interface RamStagingOptions {
  /**
   * Blocks of a QEMU stream the machine does not have and may drop (with a warning). Default:
   * QEMU's firmware blobs, `/rom@etc/acpi/tables`, `/rom@etc/table-loader`, `/rom@etc/acpi/rsdp`
   * and any other `/rom@` block (fw_cfg files the guest reads through fw_cfg, not as RAM).
   */
  ignoreBlock?: (idstr: string) => boolean;
}

export function defaultIgnoreRamBlock(idstr: string): boolean {
  return idstr.startsWith('/rom@');
}

/**
 * The RAM part of a load into a machine: checks the stream's blocks against the machine's,
 * stages pages, answers `peek`, and writes everything in `apply`.
 */
export class RamStaging implements RamSink {
  private readonly staged: StagedBlock[];
  private readonly discarded: (DiscardedRamBlock & { listedAt: number })[] = [];
  readonly warnings: string[] = [];
  /** Pages staged over all blocks (a page sent twice counts twice). */
  pagesStaged = 0;

  constructor(blocks: readonly RamBlock[], private readonly stream: Uint8Array, private readonly opts: RamStagingOptions = {}) {
    this.staged = blocks.map((block) => ({ block, pages: undefined, listed: false }));
  }

  private find(idstr: string): number {
    for (let i = 0; i < this.staged.length; i++) if (this.staged[i]!.block.idstr === idstr) return i;
    return -1;
  }

  listed(f: QEMUFileReader, b: StreamRamBlock): void {
    const i = this.find(b.idstr);
    const name = printable(b.idstr);
    if (i >= 0) {
      const own = this.staged[i]!.block.bytes.length;
      if (b.length !== own) {
        // QEMU 7.2's qemu_ram_resize wording for a block that cannot be resized.
        throw f.error(`ram block ${name} length`, `Size mismatch: ${name}: 0x${hex(b.length)} != 0x${hex(own)} (RAM block length mismatch)`, b.offset);
      }
      this.staged[i]!.listed = true;
      return;
    }
    const ignore = this.opts.ignoreBlock ?? defaultIgnoreRamBlock;
    if (!ignore(b.idstr)) throw f.error('ram block list id', `Unknown ramblock "${name}", cannot accept migration`, b.offset);
    if (b.length % TARGET_PAGE_SIZE !== 0) throw f.error(`ram block ${name} length`, `length 0x${hex(b.length)} is not a multiple of the page size`, b.offset);
    const known = this.discarded.findIndex((d) => d.idstr === b.idstr);
    if (known >= 0) this.discarded[known]!.length = b.length;
    else {
      this.discarded.push({ idstr: b.idstr, length: b.length, pages: 0, listedAt: b.offset });
      this.warnings.push(`RAM block "${name}" (0x${hex(b.length)} bytes) is not part of this machine: its pages are read and discarded`);
    }
  }

  block(f: QEMUFileReader, idstr: string, at: number): number {
    const i = this.find(idstr);
    if (i >= 0) return i;
    const d = this.discarded.findIndex((x) => x.idstr === idstr);
    if (d >= 0) return -2 - d;
    throw f.error('ram block id', `Can't find block ${printable(idstr)}`, at);
  }

  length(handle: number): number {
    return handle >= 0 ? this.staged[handle]!.block.bytes.length : this.discarded[-2 - handle]!.length;
  }

  private table(handle: number): Float64Array {
    const s = this.staged[handle]!;
    if (!s.pages) {
      // Sized by the machine's block, allocated once per block on its first page.
      s.pages = new Float64Array(Math.floor(s.block.bytes.length / TARGET_PAGE_SIZE));
      s.pages.fill(NOT_STAGED);
    }
    return s.pages;
  }

  page(handle: number, offset: number, dataOffset: number): void {
    if (handle < 0) {
      this.discarded[-2 - handle]!.pages++;
      return;
    }
    this.table(handle)[offset / TARGET_PAGE_SIZE] = dataOffset;
    this.pagesStaged++;
  }

  fill(handle: number, offset: number, fill: number): void {
    if (handle < 0) {
      this.discarded[-2 - handle]!.pages++;
      return;
    }
    this.table(handle)[offset / TARGET_PAGE_SIZE] = -(fill + 1);
    this.pagesStaged++;
  }

  /** Blocks read and thrown away. */
  get discardedBlocks(): DiscardedRamBlock[] {
    return this.discarded.map(({ idstr, length, pages }) => ({ idstr, length, pages }));
  }

  /**
   * `len` bytes at `offset` of block `index` as they will be once the stream is applied. A view
   * (into the stream or the block) when one page source covers the range, else a copy.
   */
  peek(index: number, offset: number, len: number): Uint8Array | undefined {
    const s = this.staged[index];
    if (!s || !Number.isSafeInteger(offset) || !Number.isSafeInteger(len) || offset < 0 || len < 0 || offset > s.block.bytes.length - len) return undefined;
    const pages = s.pages;
    if (!pages) return s.block.bytes.subarray(offset, offset + len);
    const firstPage = Math.floor(offset / TARGET_PAGE_SIZE);
    const lastPage = len === 0 ? firstPage : Math.floor((offset + len - 1) / TARGET_PAGE_SIZE);
    if (firstPage === lastPage) {
      const v = pages[firstPage]!;
      const inPage = offset - firstPage * TARGET_PAGE_SIZE;
      if (v === NOT_STAGED) return s.block.bytes.subarray(offset, offset + len);
      if (v >= 0) return this.stream.subarray(v + inPage, v + inPage + len);
      return new Uint8Array(len).fill(-v - 1);
    }
    const out = new Uint8Array(len);
    for (let p = firstPage, o = 0; p <= lastPage; p++) {
      const from = Math.max(offset, p * TARGET_PAGE_SIZE);
      const to = Math.min(offset + len, (p + 1) * TARGET_PAGE_SIZE);
      const v = pages[p]!;
      if (v === NOT_STAGED) out.set(s.block.bytes.subarray(from, to), o);
      else if (v >= 0) out.set(this.stream.subarray(v + from - p * TARGET_PAGE_SIZE, v + to - p * TARGET_PAGE_SIZE), o);
      else out.fill(-v - 1, o, o + to - from);
      o += to - from;
    }
    return out;
  }

  /** Write every staged page into its block. */
  apply(): void {
    for (const s of this.staged) {
      const pages = s.pages;
      if (!pages) continue;
      const bytes = s.block.bytes;
      const stream = this.stream;
      for (let p = 0; p < pages.length; p++) {
        const v = pages[p]!;
        if (v === NOT_STAGED) continue;
        const off = p * TARGET_PAGE_SIZE;
        if (v >= 0) bytes.set(stream.subarray(v, v + TARGET_PAGE_SIZE), off);
        else bytes.fill(-v - 1, off, off + TARGET_PAGE_SIZE);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Guest addresses to blocks

/**
 * Turns guest addresses into (block, offset) through the machine's `GuestMemory`: each region's
 * bytes are a view into one block's buffer, and the view's position inside it is the offset.
 */
export class GpaToRamBlock {
  private readonly map: { index: number; offset: number }[];

  constructor(private readonly memory: GuestMemory, blocks: readonly RamBlock[]) {
    this.map = memory.regions.map((r) => {
      const rb = r.bytes;
      for (let i = 0; i < blocks.length; i++) {
        const bb = blocks[i]!.bytes;
        if (bb.buffer === rb.buffer && rb.byteOffset >= bb.byteOffset && rb.byteOffset + rb.length <= bb.byteOffset + bb.length) {
          return { index: i, offset: rb.byteOffset - bb.byteOffset };
        }
      }
      return { index: -1, offset: 0 };
    });
  }

  /** The block and offset of [gpa, gpa+len), or undefined when it is not inside one RAM region of a block. */
  translate(gpa: number, len: number): { index: number; offset: number } | undefined {
    const r = this.memory.findRegion(gpa, len);
    if (!r) return undefined;
    const k = this.memory.regions.indexOf(r);
    const m = this.map[k];
    if (!m || m.index < 0) return undefined;
    return { index: m.index, offset: m.offset + (gpa - r.base) };
  }
}
