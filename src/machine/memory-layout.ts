/**
 * Guest RAM and firmware layout of QEMU 7.2's x86 machines as qtest sees it (pc_memory_init,
 * microvm_memory_init, x86_bios_rom_init):
 *
 * - RAM from 0; above the split (pc: 3.5 GiB, or 3 GiB when the RAM reaches 3.5 GiB; microvm:
 *   3 GiB) the rest continues at 4 GiB.
 * - The firmware image at 4 GiB - size, and its last min(size, 128 KiB) again just below 1 MiB
 *   ("isa-bios"), both views of the same bytes. Read-only on pc, writable RAM on microvm.
 * - pc only: "pc.rom" (128 KiB at 0xc0000), read-only and empty with -nodefaults.
 *
 * Measured on QEMU 7.2 (TCG, 64 KiB halt firmware, -m 16M): on pc, 0xa0000-0xbffff and
 * 0xe0000-0xeffff take writes, 0xc0000-0xdffff and the firmware do not; on microvm everything
 * below 1 MiB is writable, and a write to 0xf0000 shows at 0xffff0000.
 *
 * No Node imports: part of the browser bundle.
 */
import { GuestMemory, RamRegion } from '../memory/guest-memory.js';
import type { RamBlock } from '../migration/machine-state.js';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const FOUR_GIB = 4 * GiB;
/** QEMU's default RAM size for the x86 machines (-m absent or 0). */
export const DEFAULT_RAM_SIZE = 128 * MiB;

/** Default firmware sizes: SeaBIOS bios-256k.bin (pc) and qboot's bios-microvm.bin (microvm). */
export const PC_DEFAULT_BIOS_SIZE = 256 * KiB;
export const MICROVM_DEFAULT_BIOS_SIZE = 64 * KiB;
export const PC_ROM_BASE = 0xc0000;
export const PC_ROM_SIZE = 128 * KiB;

export interface MemoryLayout {
  memory: GuestMemory;
  belowFourGiB: number;
  aboveFourGiB: number;
  /** The firmware bytes (both views share them). */
  bios: Uint8Array;
  /**
   * QEMU's RAM blocks in QEMU's order (`ram_list`: longest first, ties in allocation order):
   * pc: `pc.ram`, `pc.bios`, `pc.rom` by size; microvm: `microvm.ram`, `pc.bios`. Every region
   * of `memory` is a view into one of them.
   */
  ramBlocks: RamBlock[];
}

/** QEMU's firmware check: a non-empty image whose size is a multiple of 64 KiB. */
export function validBiosSize(size: number): boolean {
  return size > 0 && size % (64 * KiB) === 0;
}

/** Where RAM below 4 GiB ends (pc_init1's `lowmem` rule for pc, 3 GiB for microvm). */
export function belowFourGiBSize(machine: 'pc' | 'microvm', ramSize: number): number {
  if (machine === 'pc') {
    let lowmem = 0xe000_0000;
    if (ramSize >= lowmem) lowmem = 0xc000_0000;
    return ramSize >= lowmem ? lowmem : ramSize;
  }
  const lowmem = 0xc000_0000;
  return ramSize > lowmem ? lowmem : ramSize;
}

/**
 * Offset inside the main RAM block (`pc.ram`, `microvm.ram`) of guest address `gpa`, or -1 when
 * no RAM byte lives there. Below the split the block is mapped 1:1; its remainder continues at
 * 4 GiB (QEMU's "ram-above-4g" alias starts at block offset `belowFourGiB`). This is the RAM
 * block's own mapping: under the ROM windows (0xc0000-0xfffff) it names the hidden RAM, which
 * the CPU does not see there but which the block, and so the migration stream, still holds.
 */
export function ramBlockOffsetOfGpa(gpa: number, belowFourGiB: number, ramSize: number): number {
  if (!Number.isSafeInteger(gpa) || gpa < 0) return -1;
  if (gpa < belowFourGiB) return gpa;
  const above = ramSize - belowFourGiB;
  if (gpa >= FOUR_GIB && gpa - FOUR_GIB < above) return belowFourGiB + (gpa - FOUR_GIB);
  return -1;
}

/**
 * QEMU's RAMBlock list order (`ram_block_add`): a new block goes before the first one that is
 * shorter, so the list runs longest first and equal lengths stay in allocation order.
 */
export function qemuRamBlockOrder(allocated: readonly RamBlock[]): RamBlock[] {
  const list: RamBlock[] = [];
  for (const b of allocated) {
    const i = list.findIndex((o) => o.bytes.length < b.bytes.length);
    if (i < 0) list.push(b);
    else list.splice(i, 0, b);
  }
  return list;
}

/**
 * Build RAM and firmware regions. `bios` is the firmware image (copied); undefined gives an
 * all-zero image of the machine's default size.
 *
 * Each RAM block has one backing buffer and the regions are views into it, as QEMU's memory
 * regions are aliases of RAM blocks: the RAM under the ROM windows is kept (it is part of
 * `pc.ram` and travels in a migration stream) though the windows hide it from the CPU.
 */
export function buildMemoryLayout(machine: 'pc' | 'microvm', ramSize: number, bios?: Uint8Array): MemoryLayout {
  if (!Number.isSafeInteger(ramSize) || ramSize <= 0) throw new RangeError(`bad RAM size ${ramSize}`);
  const below = belowFourGiBSize(machine, ramSize);
  const above = ramSize - below;

  const biosSize = bios ? bios.length : machine === 'pc' ? PC_DEFAULT_BIOS_SIZE : MICROVM_DEFAULT_BIOS_SIZE;
  if (!validBiosSize(biosSize)) throw new RangeError(`firmware size ${biosSize} is not a multiple of 64 KiB`);
  const ramBuffer = new ArrayBuffer(ramSize);
  const biosBuffer = new ArrayBuffer(biosSize);
  const biosBytes = new Uint8Array(biosBuffer);
  if (bios) biosBytes.set(bios);
  const readonly = machine === 'pc';
  const isaSize = Math.min(biosSize, 128 * KiB);
  const isaBase = 0x10_0000 - isaSize;

  // Allocation order as QEMU's: the machine's RAM, then the firmware, then (pc) the option ROM
  // area (pc_memory_init calls pc_system_firmware_init before creating "pc.rom").
  const allocated: RamBlock[] = [
    { idstr: machine === 'pc' ? 'pc.ram' : 'microvm.ram', bytes: new Uint8Array(ramBuffer) },
    { idstr: 'pc.bios', bytes: biosBytes },
  ];

  // Windows over the low RAM, in address order.
  const holes: RamRegion[] = [];
  if (machine === 'pc') {
    const romBuffer = new ArrayBuffer(PC_ROM_SIZE);
    allocated.push({ idstr: 'pc.rom', bytes: new Uint8Array(romBuffer) });
    holes.push(new RamRegion({ base: PC_ROM_BASE, size: PC_ROM_SIZE, readonly: true, buffer: romBuffer, name: 'pc.rom' }));
  }
  holes.push(new RamRegion({ base: isaBase, size: isaSize, readonly, buffer: biosBuffer, bufferOffset: biosSize - isaSize, name: 'isa-bios' }));
  holes.sort((a, b) => a.base - b.base);

  const regions: RamRegion[] = [];
  // RAM below 4 GiB, cut around the holes (which exist whether or not RAM reaches them). The
  // pieces are views at their own guest address inside the RAM block.
  const ram = (base: number, size: number, name: string, offset: number) =>
    new RamRegion({ base, size, buffer: ramBuffer, bufferOffset: offset, name });
  let cursor = 0;
  for (const h of holes) {
    if (cursor < h.base && cursor < below) {
      const end = Math.min(h.base, below);
      regions.push(ram(cursor, end - cursor, 'ram-below-4g', cursor));
    }
    regions.push(h);
    cursor = Math.max(cursor, h.end);
  }
  if (cursor < below) regions.push(ram(cursor, below - cursor, 'ram-below-4g', cursor));
  regions.push(new RamRegion({ base: FOUR_GIB - biosSize, size: biosSize, readonly, buffer: biosBuffer, name: 'pc.bios' }));
  if (above > 0) regions.push(ram(FOUR_GIB, above, 'ram-above-4g', below));
  return { memory: new GuestMemory(regions), belowFourGiB: below, aboveFourGiB: above, bios: biosBytes, ramBlocks: qemuRamBlockOrder(allocated) };
}
