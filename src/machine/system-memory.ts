/**
 * The system bus of a reference machine: guest RAM (and ROM) in a `GuestMemory`, MMIO windows in
 * one `AddressSpace`, port I/O windows in another, and accesses dispatched the way QEMU 7.2's
 * `flatview_read/write_continue` does for the CPU address space qtest uses:
 *
 * - RAM (and ROM) wins over MMIO where both claim an address (on pc the PCI address space sits
 *   below RAM with priority -1). A RAM piece is cut at the RAM's end. Writes to ROM vanish.
 * - Otherwise the window claiming the piece's first byte (the newest mapping where windows
 *   overlap) takes a piece sized by `memory_access_size`: at most 4 bytes (QEMU's default
 *   `valid.max_access_size`), bounded by the alignment of the offset in the window, rounded down
 *   to a power of two. The piece is NOT cut at the window's end (QEMU's
 *   `address_space_translate_internal` clamps only RAM: "MMIO regions overlap wildly", as ports
 *   0xcf8/0xcf9 do). So an 8-byte access to a register window is two 4-byte accesses, low half
 *   first, a misaligned `readl` is 1-, 2- and 1-byte pieces, and `outl 0xcf8` reaches the PCI
 *   address register whole although the PIIX3 reset register claims 0xcf9.
 * - Bytes no window claims are "unassigned": memory reads 0, ports read all ones, writes vanish.
 *
 * Values are little-endian (x86). Addresses are safe integers; anything else is unassigned.
 *
 * No Node imports: part of the browser bundle.
 */
import { GuestMemory, RamRegion } from '../memory/guest-memory.js';
import { AddressSpace, type AccessSize } from './address-space.js';

/** I/O ports are 16-bit. */
export const IO_SPACE_SIZE = 0x10000;

export class SystemMemory {
  readonly ram: GuestMemory;
  /** MMIO windows (BARs, virtio-mmio transports). Unassigned memory reads 0. */
  readonly mmio = new AddressSpace('memory', 0);
  /** Port I/O windows. Unassigned ports read all ones. */
  readonly io = new AddressSpace('io', 0xffff_ffff);

  private readonly scratch = new Uint8Array(8);
  private readonly scratchView = new DataView(this.scratch.buffer);

  constructor(ram: GuestMemory) {
    this.ram = ram;
  }

  // ---------------------------------------------------------------------------------------
  // Memory

  /** Read `dst.length` bytes at `addr` into `dst`. */
  read(addr: number, dst: Uint8Array): void {
    const len = dst.length;
    const r = this.ram.findRegion(addr, len);
    if (r) {
      const off = addr - r.base;
      dst.set(r.bytes.subarray(off, off + len));
      return;
    }
    this.access(this.mmio, 0, addr, dst, false);
  }

  /** Write `src` at `addr`. */
  write(addr: number, src: Uint8Array): void {
    const r = this.ram.findRegion(addr, src.length);
    if (r) {
      if (!r.readonly) r.bytes.set(src, addr - r.base);
      return;
    }
    this.access(this.mmio, 0, addr, src, true);
  }

  /** Fill `len` bytes at `addr` with `value` (qtest `memset`). */
  fill(addr: number, len: number, value: number): void {
    if (len <= 0) return;
    const r = this.ram.findRegion(addr, len);
    if (r) {
      if (!r.readonly) r.bytes.fill(value, addr - r.base, addr - r.base + len);
      return;
    }
    // Through the general path in bounded chunks: MMIO windows see byte-sized pieces.
    const chunk = new Uint8Array(Math.min(len, 65536)).fill(value);
    for (let done = 0; done < len; done += chunk.length) {
      const n = Math.min(chunk.length, len - done);
      this.write(addr + done, n === chunk.length ? chunk : chunk.subarray(0, n));
    }
  }

  /** A 1, 2 or 4-byte little-endian read. */
  readN(addr: number, size: AccessSize): number {
    const r = this.ram.findRegion(addr, size);
    if (r) {
      const off = addr - r.base;
      return size === 1 ? r.bytes[off]! : size === 2 ? r.view.getUint16(off, true) : r.view.getUint32(off, true);
    }
    // Fast path: a window at `addr`, access aligned within it (one piece).
    const m = this.mmio.find(addr, 1);
    if (m && ((addr - m.base) & (size - 1)) === 0) return maskTo(m.handler.read(addr - m.base, size), size);
    const buf = this.scratch.subarray(0, size);
    this.access(this.mmio, 0, addr, buf, false);
    return size === 1 ? buf[0]! : size === 2 ? this.scratchView.getUint16(0, true) : this.scratchView.getUint32(0, true);
  }

  /** A 1, 2 or 4-byte little-endian write. */
  writeN(addr: number, size: AccessSize, value: number): void {
    const r = this.ram.findRegion(addr, size);
    if (r) {
      if (r.readonly) return;
      const off = addr - r.base;
      if (size === 1) r.bytes[off] = value;
      else if (size === 2) r.view.setUint16(off, value & 0xffff, true);
      else r.view.setUint32(off, value >>> 0, true);
      return;
    }
    const m = this.mmio.find(addr, 1);
    if (m && ((addr - m.base) & (size - 1)) === 0) {
      m.handler.write(addr - m.base, size, maskTo(value, size));
      return;
    }
    const buf = this.scratch.subarray(0, size);
    if (size === 1) buf[0] = value;
    else if (size === 2) this.scratchView.setUint16(0, value & 0xffff, true);
    else this.scratchView.setUint32(0, value >>> 0, true);
    this.access(this.mmio, 0, addr, buf, true);
  }

  readQ(addr: number): bigint {
    const r = this.ram.findRegion(addr, 8);
    if (r) return r.view.getBigUint64(addr - r.base, true);
    const buf = this.scratch;
    this.access(this.mmio, 0, addr, buf, false);
    return this.scratchView.getBigUint64(0, true);
  }

  writeQ(addr: number, value: bigint): void {
    const r = this.ram.findRegion(addr, 8);
    if (r) {
      if (!r.readonly) r.view.setBigUint64(addr - r.base, BigInt.asUintN(64, value), true);
      return;
    }
    this.scratchView.setBigUint64(0, BigInt.asUintN(64, value), true);
    this.access(this.mmio, 0, addr, this.scratch, true);
  }

  // ---------------------------------------------------------------------------------------
  // Ports

  in(port: number, size: AccessSize): number {
    if (!Number.isInteger(port) || port < 0 || port >= IO_SPACE_SIZE) return maskTo(0xffff_ffff, size);
    const m = this.io.find(port, 1);
    if (m && ((port - m.base) & (size - 1)) === 0) return maskTo(m.handler.read(port - m.base, size), size);
    const buf = this.scratch.subarray(0, size);
    this.access(this.io, 0xff, port, buf, false);
    return size === 1 ? buf[0]! : size === 2 ? this.scratchView.getUint16(0, true) : this.scratchView.getUint32(0, true);
  }

  out(port: number, size: AccessSize, value: number): void {
    if (!Number.isInteger(port) || port < 0 || port >= IO_SPACE_SIZE) return;
    const m = this.io.find(port, 1);
    if (m && ((port - m.base) & (size - 1)) === 0) {
      m.handler.write(port - m.base, size, maskTo(value, size));
      return;
    }
    const buf = this.scratch.subarray(0, size);
    if (size === 1) buf[0] = value;
    else if (size === 2) this.scratchView.setUint16(0, value & 0xffff, true);
    else this.scratchView.setUint32(0, value >>> 0, true);
    this.access(this.io, 0xff, port, buf, true);
  }

  // ---------------------------------------------------------------------------------------
  // The general path (QEMU's flatview_read_continue / flatview_write_continue)

  /**
   * Walk [addr, addr+buf.length) piece by piece: RAM pieces (memory only) are copied, window
   * pieces go to the handler, unassigned pieces read `fillByte` (QEMU sizes those by the
   * absolute address, as the unassigned region's offset is the address itself).
   */
  private access(space: AddressSpace, fillByte: number, addr: number, buf: Uint8Array, isWrite: boolean): void {
    const len = buf.length;
    const isMem = space === this.mmio;
    const limit = isMem ? Number.MAX_SAFE_INTEGER : IO_SPACE_SIZE;
    let done = 0;
    while (done < len) {
      const a = addr + done;
      const remaining = len - done;
      if (!Number.isSafeInteger(a) || a < 0 || a >= limit) {
        // Beyond the space: no region at all, and QEMU leaves those bytes 0 (the port space ends
        // at 0xffff; memory beyond 2^53 holds nothing of ours).
        if (!isWrite) buf.fill(0, done);
        return;
      }
      if (isMem) {
        const r = this.ramRegionAt(a);
        if (r) {
          const n = Math.min(remaining, r.end - a);
          const off = a - r.base;
          if (isWrite) {
            if (!r.readonly) r.bytes.set(buf.subarray(done, done + n), off);
          } else {
            buf.set(r.bytes.subarray(off, off + n), done);
          }
          done += n;
          continue;
        }
      }
      const m = space.find(a, 1);
      if (!m) {
        let l: number = accessSize(a, remaining);
        if (l === 4 && remaining > 8) {
          // A run of aligned 4-byte unassigned pieces up to the next claim: one step.
          const next = this.nextClaim(space, a, isMem);
          const run = Math.floor((Math.min(next, a + remaining) - a) / 4) * 4;
          if (run > 4) l = run;
        }
        if (!isWrite) buf.fill(fillByte, done, done + l);
        done += l;
        continue;
      }
      const offset = a - m.base;
      const l = accessSize(offset, remaining);
      if (isWrite) {
        let v = 0;
        for (let i = l - 1; i >= 0; i--) v = v * 256 + buf[done + i]!;
        m.handler.write(offset, l, v);
      } else {
        let v = maskTo(m.handler.read(offset, l), l);
        for (let i = 0; i < l; i++) {
          buf[done + i] = v & 0xff;
          v = Math.floor(v / 256);
        }
      }
      done += l;
    }
  }

  /** The lowest address above `a` where a window (or, for memory, RAM) begins. */
  private nextClaim(space: AddressSpace, a: number, isMem: boolean): number {
    let next = Number.MAX_SAFE_INTEGER;
    for (const m of space.list()) if (m.base > a && m.base < next) next = m.base;
    if (isMem) for (const r of this.ram.regions) if (r.base > a && r.base < next) next = r.base;
    return next;
  }

  private ramRegionAt(a: number): RamRegion | undefined {
    for (const r of this.ram.regions) if (a >= r.base && a < r.end) return r;
    return undefined;
  }
}

/** QEMU's `memory_access_size` for a window with max access 4 and no unaligned support. */
export function accessSize(offset: number, remaining: number): AccessSize {
  let l = remaining > 4 ? 4 : remaining;
  const align = offset & -offset;
  if (align !== 0 && align < l) l = align;
  return (l >= 4 ? 4 : l >= 2 ? 2 : 1) as AccessSize;
}

function maskTo(value: number, size: AccessSize): number {
  return size === 4 ? value >>> 0 : size === 2 ? value & 0xffff : value & 0xff;
}
