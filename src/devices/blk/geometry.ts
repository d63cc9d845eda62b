/**
 * The legacy CHS geometry QEMU reports in virtio-blk's config space when the user gives none
 * (QEMU 7.2 `hw/block/hd-geometry.c`, `hd_geometry_guess`): from the MS-DOS partition table in
 * sector 0 when it has one whose last head/sector describe a cylinder boundary with at most 16
 * heads, otherwise 16 heads × 63 sectors with the cylinder count from the size.
 */
export interface ChsGeometry {
  cyls: number;
  heads: number;
  secs: number;
}

/** `guess_disk_lchs`: the logical geometry a partition table implies, or undefined. */
function guessDiskLchs(mbr: Uint8Array | undefined, nbSectors: number): ChsGeometry | undefined {
  if (!mbr || mbr.length < 512) return undefined;
  if (mbr[510] !== 0x55 || mbr[511] !== 0xaa) return undefined;
  const dv = new DataView(mbr.buffer, mbr.byteOffset, 512);
  for (let i = 0; i < 4; i++) {
    const p = 0x1be + 16 * i;
    const nrSects = dv.getUint32(p + 12, true);
    const endHead = mbr[p + 5]!;
    if (nrSects !== 0 && endHead !== 0) {
      // The partition is assumed to end on a cylinder boundary.
      const heads = endHead + 1;
      const sectors = mbr[p + 6]! & 63;
      if (sectors === 0) continue;
      const cylinders = Math.floor(nbSectors / (heads * sectors));
      // QEMU keeps the quotient in an int: a disk beyond 2^31 cylinders' worth is out of range anyway.
      if (cylinders < 1 || cylinders > 16383) continue;
      return { cyls: cylinders, heads, secs: sectors };
    }
  }
  return undefined;
}

/** `guess_chs_for_size`: 16 heads, 63 sectors, cylinders from the size (2..16383). */
function guessChsForSize(nbSectors: number): ChsGeometry {
  let cylinders = Math.floor(nbSectors / (16 * 63));
  if (cylinders > 16383) cylinders = 16383;
  else if (cylinders < 2) cylinders = 2;
  return { cyls: cylinders, heads: 16, secs: 63 };
}

/**
 * `hd_geometry_guess` for a disk of `nbSectors` 512-byte sectors whose sector 0 is `mbr` (or
 * undefined when it cannot be read synchronously: the size-based guess then applies).
 */
export function hdGeometryGuess(mbr: Uint8Array | undefined, nbSectors: number): ChsGeometry {
  const l = guessDiskLchs(mbr, nbSectors);
  // A logical guess with more than 16 heads means the BIOS translated: use the standard one.
  if (!l || l.heads > 16) return guessChsForSize(nbSectors);
  return l;
}
