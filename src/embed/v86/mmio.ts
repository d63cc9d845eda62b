import type { IoHandler } from '../../machine/address-space.js';
import { restore, type V86AccessScope } from './guard.js';
import type { V86Cpu, V86MmioRead, V86MmioWrite } from './types.js';

/** v86 dispatches MMIO in blocks of 128 KiB (`address >>> 17`). */
const BLOCK_SHIFT = 17;
const TWO_POW_32 = 0x1_0000_0000;

/** A window of ours inside v86's physical address space. */
interface Window {
  readonly base: number;
  readonly size: number;
  readonly handler: IoHandler;
}

/** One 128 KiB block we took over: our windows in it, and v86's handlers for the rest of it. */
interface Block {
  readonly windows: Window[];
  readonly prev: { r8: V86MmioRead; w8: V86MmioWrite; r32: V86MmioRead; w32: V86MmioWrite };
  readonly own: { r8: V86MmioRead; w8: V86MmioWrite; r32: V86MmioRead; w32: V86MmioWrite };
}

/**
 * Memory BARs of our functions on v86's MMIO dispatch. v86 maps whole 128 KiB blocks and
 * several of our BARs (16 KiB each for a modern virtio function) share one, so a block we touch
 * gets our dispatcher, which answers for our windows and hands every other address in the block
 * to whatever v86 had there (its "unmapped" handler, usually). Addresses arrive as signed int32
 * and are taken `>>> 0` first. 16-bit writes are split by v86 in `mmap_write16`, which is wrapped
 * so that our windows get them whole; 16-bit reads are split inside v86's wasm and reach us as
 * two byte reads, which a function answers correctly only with byte lanes (virtio-pci's
 * `byteLanes` option).
 */
export class V86Mmio {
  private readonly blocks = new Map<number, Block>();
  private readonly origWrite16: (address: number, value: number) => void;
  private readonly write16: (address: number, value: number) => void;
  private readonly write16WasOwn: boolean;

  constructor(private readonly cpu: V86Cpu, private readonly scope: V86AccessScope) {
    const orig = cpu.mmap_write16;
    this.origWrite16 = orig;
    this.write16WasOwn = Object.hasOwn(cpu, 'mmap_write16');
    this.write16 = (address: number, value: number): void => {
      const a = address >>> 0;
      const w = this.find(a, 2);
      if (w !== undefined) scope.write(w.handler, a - w.base, 2, value & 0xffff);
      else orig.call(cpu, address, value);
    };
  }

  /**
   * Why [base, base+size) cannot be mapped, or undefined when it can: v86 sends only physical
   * addresses above its RAM (below 4 GiB) to JS.
   */
  refusal(base: number, size: number): string | undefined {
    const ram = this.cpu.memory_size[0] ?? 0;
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || size <= 0) return 'not a window';
    if (base + size > TWO_POW_32) return 'above 4 GiB, where v86 has no MMIO';
    if (base < ram) return `inside RAM (below 0x${ram.toString(16)}), which v86 never dispatches to devices`;
    return undefined;
  }

  map(base: number, size: number, handler: IoHandler): boolean {
    if (this.refusal(base, size) !== undefined) return false;
    const w: Window = { base, size, handler };
    const cpu = this.cpu;
    if (this.blocks.size === 0) cpu.mmap_write16 = this.write16;
    for (let b = base >>> BLOCK_SHIFT; b <= (base + size - 1) >>> BLOCK_SHIFT; b++) {
      let block = this.blocks.get(b);
      if (block === undefined) {
        block = this.takeBlock(b);
        this.blocks.set(b, block);
      }
      // The newest window wins where two overlap, as with QEMU's equal-priority subregions.
      block.windows.unshift(w);
    }
    return true;
  }

  unmap(base: number, size: number, handler: IoHandler): void {
    for (let b = base >>> BLOCK_SHIFT; b <= (base + size - 1) >>> BLOCK_SHIFT; b++) {
      const block = this.blocks.get(b);
      if (block === undefined) continue;
      const i = block.windows.findIndex((w) => w.base === base && w.size === size && w.handler === handler);
      if (i >= 0) block.windows.splice(i, 1);
      if (block.windows.length === 0) {
        this.giveBack(b, block);
        this.blocks.delete(b);
      }
    }
    if (this.blocks.size === 0) this.restoreWrite16();
  }

  /** Give every block back to v86. */
  clear(): void {
    for (const [b, block] of this.blocks) this.giveBack(b, block);
    this.blocks.clear();
    this.restoreWrite16();
  }

  private restoreWrite16(): void {
    // Only if ours is still the one installed (someone else may have wrapped it after us).
    if (this.cpu.mmap_write16 === this.write16) restore(this.cpu, 'mmap_write16', this.origWrite16, this.write16WasOwn);
  }

  /** The window holding [a, a+len), newest first. `a` is unsigned. */
  find(a: number, len: number): Window | undefined {
    const block = this.blocks.get(a >>> BLOCK_SHIFT);
    if (block === undefined) return undefined;
    for (const w of block.windows) if (a >= w.base && a - w.base <= w.size - len) return w;
    return undefined;
  }

  private takeBlock(b: number): Block {
    const cpu = this.cpu;
    const scope = this.scope;
    const prev = { r8: cpu.memory_map_read8[b]!, w8: cpu.memory_map_write8[b]!, r32: cpu.memory_map_read32[b]!, w32: cpu.memory_map_write32[b]! };
    const windows: Window[] = [];
    const find = (a: number, len: number): Window | undefined => {
      for (const w of windows) if (a >= w.base && a - w.base <= w.size - len) return w;
      return undefined;
    };
    const own = {
      r8: (address: number): number => {
        const a = address >>> 0;
        const w = find(a, 1);
        return w !== undefined ? scope.read(w.handler, a - w.base, 1) & 0xff : prev.r8(address);
      },
      w8: (address: number, value: number): void => {
        const a = address >>> 0;
        const w = find(a, 1);
        if (w !== undefined) scope.write(w.handler, a - w.base, 1, value & 0xff);
        else prev.w8(address, value);
      },
      r32: (address: number): number => {
        const a = address >>> 0;
        const w = find(a, 4);
        return w !== undefined ? scope.read(w.handler, a - w.base, 4) | 0 : prev.r32(address);
      },
      w32: (address: number, value: number): void => {
        const a = address >>> 0;
        const w = find(a, 4);
        if (w !== undefined) scope.write(w.handler, a - w.base, 4, value >>> 0);
        else prev.w32(address, value);
      },
    };
    cpu.memory_map_read8[b] = own.r8;
    cpu.memory_map_write8[b] = own.w8;
    cpu.memory_map_read32[b] = own.r32;
    cpu.memory_map_write32[b] = own.w32;
    return { windows, prev, own };
  }

  private giveBack(b: number, block: Block): void {
    const cpu = this.cpu;
    // A block v86 re-registered meanwhile keeps v86's handlers.
    if (cpu.memory_map_read8[b] === block.own.r8) cpu.memory_map_read8[b] = block.prev.r8;
    if (cpu.memory_map_write8[b] === block.own.w8) cpu.memory_map_write8[b] = block.prev.w8;
    if (cpu.memory_map_read32[b] === block.own.r32) cpu.memory_map_read32[b] = block.prev.r32;
    if (cpu.memory_map_write32[b] === block.own.w32) cpu.memory_map_write32[b] = block.prev.w32;
  }
}
