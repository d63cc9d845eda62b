// Deterministic RAM contents for migration tests: pieces of pseudo-random bytes at chosen guest
// addresses, and the RAM block they should produce.
import { deterministicEntropy } from '../../src/devices/rng.js';

/**
 * `len` reproducible bytes for `seed`: the xorshift32 stream of `deterministicEntropy` (never all
 * zero for a non-zero seed; seed 0 is taken as 1).
 */
export function patternBytes(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  deterministicEntropy(seed).fill(out);
  return out;
}

export interface Piece {
  gpa: number;
  bytes: Uint8Array;
}

/** Pieces at the given (gpa, length) places, each with its own seed. */
export function pieces(places: readonly [number, number][], seed = 1): Piece[] {
  return places.map(([gpa, len], i) => ({ gpa, bytes: patternBytes(len, seed * 7919 + i * 104729 + 1) }));
}

/** A zero block of `size` bytes with `list` written in at their GPAs (block offset = GPA). */
export function expectedBlock(size: number, list: readonly Piece[]): Uint8Array {
  const b = new Uint8Array(size);
  for (const p of list) b.set(p.bytes, p.gpa);
  return b;
}

/** Index of the first differing byte, or -1 (a readable failure instead of a 16 MiB diff). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  const ba = Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const bb = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  if (ba.equals(bb)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

// Places used on both machines, all inside the first 16 MiB and outside 0xa0000-0xfffff.
export const RAM_PLACES: [number, number][] = [
  [0x0, 0x1000],
  [0x5000, 0x2000],
  [0x7c00, 0x200],
  [0x12345, 10000],
  [0x9f000, 0x1000],
  [0x100000, 0x1000],
  [0x7fe001, 3],
  [0xfff000, 0x1000],
];

/** pc: RAM hidden under the option ROM and BIOS windows (reachable on QEMU through PAM). */
export const PC_HIDDEN_PLACES: [number, number][] = [
  [0xc0000, 0x1000],
  [0xd8010, 100],
  [0xf0000, 0x1000],
  [0xffff0, 16],
];
