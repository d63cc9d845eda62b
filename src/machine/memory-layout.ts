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
}

/** QEMU's firmware check: a non-empty image whose size is a multiple of 64 KiB. */
export function validBiosSize(size: number): boolean {
  return size > 0 && size % (64 * KiB) === 0;
}

/**
 * Build RAM and firmware regions. `bios` is the firmware image (copied); undefined gives an
 * all-zero image of the machine's default size.
 */
export function buildMemoryLayout(machine: 'pc' | 'microvm', ramSize: number, bios?: Uint8Array): MemoryLayout {
  if (!Number.isSafeInteger(ramSize) || ramSize <= 0) throw new RangeError(`bad RAM size ${ramSize}`);
  let below: number;
  if (machine === 'pc') {
    let lowmem = 0xe000_0000;
    if (ramSize >= lowmem) lowmem = 0xc000_0000;
    below = ramSize >= lowmem ? lowmem : ramSize;
  } else {
    const lowmem = 0xc000_0000;
    below = ramSize > lowmem ? lowmem : ramSize;
  }
  const above = ramSize - below;

  const biosSize = bios ? bios.length : machine === 'pc' ? PC_DEFAULT_BIOS_SIZE : MICROVM_DEFAULT_BIOS_SIZE;
  if (!validBiosSize(biosSize)) throw new RangeError(`firmware size ${biosSize} is not a multiple of 64 KiB`);
  const biosBuffer = new ArrayBuffer(biosSize);
  const biosBytes = new Uint8Array(biosBuffer);
  if (bios) biosBytes.set(bios);
  const readonly = machine === 'pc';
  const isaSize = Math.min(biosSize, 128 * KiB);
  const isaBase = 0x10_0000 - isaSize;

  // Windows over the low RAM, in address order: [base, end, region or undefined for RAM].
  const holes: RamRegion[] = [];
  if (machine === 'pc') holes.push(new RamRegion({ base: PC_ROM_BASE, size: PC_ROM_SIZE, readonly: true, name: 'pc.rom' }));
  holes.push(new RamRegion({ base: isaBase, size: isaSize, readonly, buffer: biosBuffer, bufferOffset: biosSize - isaSize, name: 'isa-bios' }));
  holes.sort((a, b) => a.base - b.base);

  const regions: RamRegion[] = [];
  // RAM below 4 GiB, cut around the holes (which exist whether or not RAM reaches them).
  let cursor = 0;
  for (const h of holes) {
    if (cursor < h.base && cursor < below) {
      const end = Math.min(h.base, below);
      regions.push(new RamRegion({ base: cursor, size: end - cursor, name: 'ram-below-4g' }));
    }
    regions.push(h);
    cursor = Math.max(cursor, h.end);
  }
  if (cursor < below) regions.push(new RamRegion({ base: cursor, size: below - cursor, name: 'ram-below-4g' }));
  regions.push(new RamRegion({ base: FOUR_GIB - biosSize, size: biosSize, readonly, buffer: biosBuffer, name: 'pc.bios' }));
  if (above > 0) regions.push(new RamRegion({ base: FOUR_GIB, size: above, name: 'ram-above-4g' }));
  return { memory: new GuestMemory(regions), belowFourGiB: below, aboveFourGiB: above, bios: biosBytes };
}
