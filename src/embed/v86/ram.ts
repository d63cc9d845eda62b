import { GuestMemory } from '../../memory/guest-memory.js';
import type { V86Cpu } from './types.js';

/** v86 sends 0xa0000..0xbffff to its VGA; the rest of its RAM array is RAM to the guest. */
const LOW_RAM_END = 0xa_0000;
const HIGH_RAM_START = 0xc_0000;

/**
 * Guest RAM of a v86 machine as a `GuestMemory`: the regions follow v86's wasm memory (which
 * grows, replacing its buffer, while the guest runs), and every device write is reported to
 * v86's JIT so that code it compiled from those bytes is thrown away (a disk read into a page
 * the guest then executes must not run stale code).
 *
 * RAM below 640 KiB and from 768 KiB to the top: only the VGA window is a hole. The area from
 * 0xc0000 up is RAM in v86 (option ROMs and the BIOS live there, writable), and SeaBIOS keeps
 * its own virtio requests in it (its low allocations use upper memory), so a device must reach it.
 */
export function v86GuestMemory(cpu: V86Cpu): GuestMemory {
  const size = cpu.memory_size[0] ?? 0;
  if (!(size > HIGH_RAM_START)) throw new RangeError(`v86 RAM of ${size} bytes: the emulator is not loaded yet, or has less than 768 KiB`);
  const source = cpu.wasm_memory;
  const off = cpu.mem8.byteOffset;
  const memory = new GuestMemory([
    { base: HIGH_RAM_START, size: size - HIGH_RAM_START, source, bufferOffset: off + HIGH_RAM_START, name: 'v86-ram-high' },
    { base: 0, size: LOW_RAM_END, source, bufferOffset: off, name: 'v86-ram-low' },
  ]);
  memory.onWrite = (addr, len) => cpu.jit_dirty_cache(addr, addr + len);
  return memory;
}
