import { describe, it, expect } from 'vitest';
import {
  GuestMemory,
  RamRegion,
  INVALID_GPA,
  gpaFromHiLo,
  gpaFromBigInt,
} from '../../src/memory/guest-memory.js';

const KiB = 1024;

/** Two RAM regions with a hole between them: [0, 0x1000) and [0x3000, 0x4000). */
function holey(): GuestMemory {
  // Given out of order on purpose: the constructor sorts by base.
  return new GuestMemory([
    { base: 0x3000, size: 0x1000, name: 'high' },
    { base: 0, size: 0x1000, name: 'low' },
  ]);
}

describe('GuestMemory construction', () => {
  it('sorts regions, keeps the hole, and sums sizes', () => {
    const m = holey();
    expect(m.regions.map((r) => [r.base, r.end, r.name])).toEqual([
      [0, 0x1000, 'low'],
      [0x3000, 0x4000, 'high'],
    ]);
    expect(m.totalSize).toBe(0x2000);
  });

  it('refuses overlapping regions (by one byte) but accepts touching ones', () => {
    expect(() => new GuestMemory([{ base: 0, size: 0x1001 }, { base: 0x1000, size: 0x1000 }])).toThrow(/overlap/);
    expect(() => new GuestMemory([{ base: 0x1000, size: 0x1000 }, { base: 0x800, size: 0x1000 }])).toThrow(/overlap/);
    // Same base.
    expect(() => new GuestMemory([{ base: 0x1000, size: 16 }, { base: 0x1000, size: 16 }])).toThrow(RangeError);
    // One region inside another.
    expect(() => new GuestMemory([{ base: 0, size: 0x4000 }, { base: 0x1000, size: 0x10 }])).toThrow(/overlap/);
    const m = new GuestMemory([{ base: 0, size: 0x1000 }, { base: 0x1000, size: 0x1000 }]);
    expect(m.regions.length).toBe(2);
  });

  it('refuses empty lists and bad region geometry', () => {
    expect(() => new GuestMemory([])).toThrow(RangeError);
    expect(() => new RamRegion({ base: 0, size: 0 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: 0, size: -1 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: 0, size: 1.5 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: -4096, size: 4096 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: 0.5, size: 4096 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: Number.NaN, size: 4096 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: 2 ** 53, size: 4096 })).toThrow(RangeError);
    expect(() => new RamRegion({ base: Number.MAX_SAFE_INTEGER - 100, size: 4096 })).toThrow(/2\^53/);
  });

  it('ofSize places one region at 0 or at the given base', () => {
    const a = GuestMemory.ofSize(64 * KiB);
    expect([a.regions.length, a.regions[0]!.base, a.regions[0]!.size]).toEqual([1, 0, 64 * KiB]);
    const b = GuestMemory.ofSize(4096, 0x8000_0000);
    expect(b.isRange(0x8000_0000, 4096)).toBe(true);
    expect(b.isRange(0x7fff_ffff, 1)).toBe(false);
    expect(b.isRange(0, 1)).toBe(false);
  });

  it('accepts a prebuilt RamRegion', () => {
    const r = new RamRegion({ base: 0x2000, size: 0x100 });
    const m = new GuestMemory([r, { base: 0, size: 0x100 }]);
    expect(m.regions[1]).toBe(r);
    expect(m.findRegion(0x2010, 4)).toBe(r);
  });
});

describe('GuestMemory checked translation', () => {
  it('finds ranges inside each region and nothing in the hole', () => {
    const m = holey();
    const [low, high] = m.regions;
    expect(m.findRegion(0, 0x1000)).toBe(low);
    expect(m.findRegion(0xfff, 1)).toBe(low);
    expect(m.findRegion(0x3000, 0x1000)).toBe(high);
    expect(m.findRegion(0x3ffc, 4)).toBe(high);
    expect(m.findRegion(0x1000, 1)).toBeUndefined();
    expect(m.findRegion(0x2fff, 1)).toBeUndefined();
    expect(m.findRegion(0x2000, 16)).toBeUndefined();
    expect(m.read8(0x2000)).toBe(-1);
    expect(m.read8(0x3000)).toBe(0);
  });

  it('refuses a range straddling a region end', () => {
    const m = holey();
    expect(m.findRegion(0xff8, 8)).toBeDefined();
    expect(m.findRegion(0xff8, 9)).toBeUndefined();
    expect(m.findRegion(0x3ffc, 5)).toBeUndefined();
    expect(m.read32(0xffe)).toBe(-1);
    expect(m.write32(0xffe, 0xdeadbeef)).toBe(false);
    // Nothing was written to the part that is RAM.
    expect(m.read16(0xffe)).toBe(0);
  });

  it('refuses a range spanning a hole, even though both ends are RAM', () => {
    const m = holey();
    expect(m.isRange(0xf00, 0x2200)).toBe(false);
    expect(m.view(0xfff, 0x2002)).toBeUndefined();
    const dst = new Uint8Array(0x2002).fill(0xaa);
    expect(m.read(0xfff, dst)).toBe(false);
    // dst untouched on failure.
    expect(dst.every((b) => b === 0xaa)).toBe(true);
  });

  it('refuses a range spanning two touching regions (one region per access)', () => {
    const m = new GuestMemory([{ base: 0, size: 0x1000 }, { base: 0x1000, size: 0x1000 }]);
    expect(m.isRange(0xff0, 0x10)).toBe(true);
    expect(m.isRange(0x1000, 0x10)).toBe(true);
    expect(m.isRange(0xff0, 0x20)).toBe(false);
    expect(m.read32(0xffe)).toBe(-1);
  });

  it('accepts the exact end of RAM and refuses one byte more', () => {
    const size = 64 * KiB;
    const m = GuestMemory.ofSize(size);
    expect(m.isRange(size - 512, 512)).toBe(true);
    expect(m.isRange(size - 512, 513)).toBe(false);
    expect(m.isRange(size - 511, 512)).toBe(false);
    expect(m.isRange(0, size)).toBe(true);
    expect(m.isRange(0, size + 1)).toBe(false);
    // A zero-length range may start exactly at the end, but not past it.
    expect(m.isRange(size, 0)).toBe(true);
    expect(m.isRange(size + 1, 0)).toBe(false);
    expect(m.isRange(size, 1)).toBe(false);
    expect(m.read64(size - 8)).toBe(0n);
    expect(m.read64(size - 7)).toBe(-1n);
    expect(m.write64(size - 8, 1n)).toBe(true);
    expect(m.write64(size - 7, 1n)).toBe(false);
    expect(m.view(size - 512, 512)!.length).toBe(512);
    expect(m.view(size - 512, 513)).toBeUndefined();
  });

  it('refuses the same end conditions in a second region (slow path)', () => {
    const m = holey();
    expect(m.isRange(0x4000 - 512, 512)).toBe(true);
    expect(m.isRange(0x4000 - 512, 513)).toBe(false);
    expect(m.isRange(0x4000, 0)).toBe(true);
  });

  it('refuses addresses and lengths at or above 2^53', () => {
    const m = GuestMemory.ofSize(4096);
    for (const a of [2 ** 53, 2 ** 53 + 2, 2 ** 60, 2 ** 64, Number.MAX_VALUE, Infinity]) {
      expect(m.findRegion(a, 1)).toBeUndefined();
      expect(m.findRegion(a, 0)).toBeUndefined();
      expect(m.read8(a)).toBe(-1);
      expect(m.write8(a, 1)).toBe(false);
    }
    expect(m.findRegion(0, 2 ** 53)).toBeUndefined();
    expect(m.findRegion(0, Infinity)).toBeUndefined();
  });

  it('refuses addresses near 2^53 in a high region without rounding', () => {
    const base = Number.MAX_SAFE_INTEGER - 4095; // region [2^53-4096, 2^53-1]
    const m = new GuestMemory([{ base: 0, size: 4096 }, { base, size: 4095 }]);
    expect(m.isRange(base, 4095)).toBe(true);
    expect(m.isRange(base, 4096)).toBe(false);
    // 2^53 + 1 is not representable and would round to 2^53.
    expect(m.isRange(2 ** 53 - 2, 1)).toBe(true);
    expect(m.isRange(2 ** 53 - 1, 1)).toBe(false);
    expect(m.isRange(2 ** 53, 1)).toBe(false);
  });

  it('refuses NaN, negative and fractional addresses and lengths', () => {
    const m = holey();
    const bad: [number, number][] = [
      [Number.NaN, 1],
      [0, Number.NaN],
      [-1, 1],
      [-1, 2],
      [-0x1000, 0x1000],
      [0, -1],
      [0x10, -0x10],
      [0.5, 1],
      [1, 0.5],
      [0x3000 + 0.5, 4],
      [0x3000, 1.25],
      [INVALID_GPA, 4],
      [-Infinity, 1],
    ];
    for (const [a, l] of bad) {
      expect(m.findRegion(a, l), `findRegion(${a}, ${l})`).toBeUndefined();
      expect(m.view(a, l)).toBeUndefined();
      expect(m.fill(a, l, 1)).toBe(false);
    }
    expect(m.read8(Number.NaN)).toBe(-1);
    expect(m.read16(-2)).toBe(-1);
    expect(m.read32(1.5)).toBe(-1);
    expect(m.read64(-8)).toBe(-1n);
    expect(m.write16(0.5, 1)).toBe(false);
    // Nothing was written to byte 0 or 1 by any of the refused writes.
    expect(m.read16(0)).toBe(0);
  });

  it('findRegionBig refuses ranges that wrap 2^64 and values that do not fit', () => {
    const m = GuestMemory.ofSize(0x1000);
    expect(m.findRegionBig(0xffff_ffff_ffff_fff0n, 0x20n)).toBeUndefined();
    // The same range truncated to 64 bits would be [0x10, 0x10+...) in RAM: must not be found.
    expect(m.isRange(Number(BigInt.asUintN(64, 0xffff_ffff_ffff_fff0n + 0x20n)), 0x10)).toBe(true);
    expect(m.findRegionBig(0xffff_ffff_ffff_ffffn, 1n)).toBeUndefined();
    expect(m.findRegionBig(0xffff_ffff_ffff_ffffn, 0n)).toBeUndefined();
    expect(m.findRegionBig(-1n, 2n)).toBeUndefined();
    expect(m.findRegionBig(0n, -1n)).toBeUndefined();
    expect(m.findRegionBig(1n << 53n, 1n)).toBeUndefined();
    expect(m.findRegionBig(0n, 1n << 53n)).toBeUndefined();
    expect(m.findRegionBig(0xff0n, 0x10n)).toBe(m.regions[0]);
    expect(m.findRegionBig(0xff0n, 0x11n)).toBeUndefined();
    expect(m.findRegionBig(0x1000n, 0n)).toBe(m.regions[0]);
  });
});

describe('gpaFromHiLo / gpaFromBigInt', () => {
  it('assembles 64-bit addresses below 2^53 exactly', () => {
    expect(gpaFromHiLo(0x1234_5678, 0)).toBe(0x1234_5678);
    expect(gpaFromHiLo(0xffff_ffff, 0)).toBe(0xffff_ffff);
    expect(gpaFromHiLo(0, 1)).toBe(0x1_0000_0000);
    expect(gpaFromHiLo(0x89ab_cdef, 0x0012_3456)).toBe(0x0012_3456 * 2 ** 32 + 0x89ab_cdef);
    expect(gpaFromHiLo(0xffff_ffff, 0x1f_ffff)).toBe(Number.MAX_SAFE_INTEGER);
    // Negative int32 halves are taken as unsigned.
    expect(gpaFromHiLo(-1, 0)).toBe(0xffff_ffff);
    expect(gpaFromHiLo(-0x8000_0000, 2)).toBe(2 * 2 ** 32 + 0x8000_0000);
  });

  it('returns INVALID_GPA when hi is above 0x1fffff', () => {
    expect(INVALID_GPA).toBe(-1);
    expect(gpaFromHiLo(0, 0x20_0000)).toBe(INVALID_GPA);
    expect(gpaFromHiLo(0xffff_ffff, 0x20_0000)).toBe(INVALID_GPA);
    expect(gpaFromHiLo(0, 0xffff_ffff)).toBe(INVALID_GPA);
    expect(gpaFromHiLo(0, -1)).toBe(INVALID_GPA);
    expect(gpaFromHiLo(0, 0x8000_0000)).toBe(INVALID_GPA);
    // INVALID_GPA itself is refused by every accessor.
    expect(GuestMemory.ofSize(16).isRange(INVALID_GPA, 1)).toBe(false);
  });

  it('gpaFromBigInt accepts [0, 2^53) only', () => {
    expect(gpaFromBigInt(0n)).toBe(0);
    expect(gpaFromBigInt(0x1_0000_0000n)).toBe(0x1_0000_0000);
    expect(gpaFromBigInt((1n << 53n) - 1n)).toBe(Number.MAX_SAFE_INTEGER);
    expect(gpaFromBigInt(1n << 53n)).toBe(INVALID_GPA);
    expect(gpaFromBigInt(0xffff_ffff_ffff_ffffn)).toBe(INVALID_GPA);
    expect(gpaFromBigInt(-1n)).toBe(INVALID_GPA);
  });
});

describe('GuestMemory views and copies', () => {
  it('view() is zero-copy in both directions', () => {
    const m = holey();
    const v = m.view(0x3010, 8)!;
    expect(v.buffer).toBe(m.regions[1]!.bytes.buffer);
    v[0] = 0x5a;
    v[7] = 0xa5;
    expect(m.read8(0x3010)).toBe(0x5a);
    expect(m.read8(0x3017)).toBe(0xa5);
    expect(m.write32(0x3012, 0x0403_0201)).toBe(true);
    expect(Array.from(v)).toEqual([0x5a, 0, 1, 2, 3, 4, 0, 0xa5]);
    // The region's own byte array sees the same bytes at offset addr - base.
    expect(m.regions[1]!.bytes[0x10]).toBe(0x5a);
    const w = m.writableView(0x3010, 8)!;
    w[1] = 0x77;
    expect(v[1]).toBe(0x77);
  });

  it('read()/write() copy, fill() fills, and failures change nothing', () => {
    const m = holey();
    expect(m.write(0x3100, Uint8Array.of(1, 2, 3, 4, 5))).toBe(true);
    const dst = new Uint8Array(5);
    expect(m.read(0x3100, dst)).toBe(true);
    expect(Array.from(dst)).toEqual([1, 2, 3, 4, 5]);
    // The copy is a copy: changing dst does not change RAM.
    dst[0] = 99;
    expect(m.read8(0x3100)).toBe(1);
    // A write straddling the region end writes nothing, not even the in-RAM part.
    expect(m.write(0x3ffe, Uint8Array.of(9, 9, 9, 9))).toBe(false);
    expect(m.read16(0x3ffe)).toBe(0);
    expect(m.fill(0x3ffe, 4, 0xee)).toBe(false);
    expect(m.read16(0x3ffe)).toBe(0);
    expect(m.fill(0x3200, 3, 0xee)).toBe(true);
    expect([m.read8(0x31ff), m.read8(0x3200), m.read8(0x3202), m.read8(0x3203)]).toEqual([0, 0xee, 0xee, 0]);
    // Zero-length copies at a valid position succeed.
    expect(m.read(0x1000, new Uint8Array(0))).toBe(true);
    expect(m.write(0x1000, new Uint8Array(0))).toBe(true);
  });
});

describe('GuestMemory scalar accessors', () => {
  const at = 0x100;

  it('16-bit little and big endian', () => {
    const m = GuestMemory.ofSize(4096);
    expect(m.write16le(at, 0x1234)).toBe(true);
    expect(Array.from(m.view(at, 2)!)).toEqual([0x34, 0x12]);
    expect(m.read16le(at)).toBe(0x1234);
    expect(m.read16be(at)).toBe(0x3412);
    expect(m.write16be(at, 0xabcd)).toBe(true);
    expect(Array.from(m.view(at, 2)!)).toEqual([0xab, 0xcd]);
    expect(m.read16(at)).toBe(0xcdab); // default is little-endian
    expect(m.read16(at, false)).toBe(0xabcd);
    m.write16(at, 0x1_0001); // truncated to 16 bits
    expect(m.read16le(at)).toBe(1);
  });

  it('32-bit little and big endian, unsigned results', () => {
    const m = GuestMemory.ofSize(4096);
    expect(m.write32le(at, 0x1122_3344)).toBe(true);
    expect(Array.from(m.view(at, 4)!)).toEqual([0x44, 0x33, 0x22, 0x11]);
    expect(m.read32be(at)).toBe(0x4433_2211);
    expect(m.write32be(at, 0x1122_3344)).toBe(true);
    expect(Array.from(m.view(at, 4)!)).toEqual([0x11, 0x22, 0x33, 0x44]);
    expect(m.read32le(at)).toBe(0x4433_2211);
    expect(m.write32(at, -1)).toBe(true);
    expect(m.read32(at)).toBe(0xffff_ffff);
    m.write32(at, 0x8000_0000);
    expect(m.read32(at)).toBe(0x8000_0000); // not negative
  });

  it('64-bit little and big endian with bigint', () => {
    const m = GuestMemory.ofSize(4096);
    expect(m.write64le(at, 0x0102_0304_0506_0708n)).toBe(true);
    expect(Array.from(m.view(at, 8)!)).toEqual([8, 7, 6, 5, 4, 3, 2, 1]);
    expect(m.read64be(at)).toBe(0x0807_0605_0403_0201n);
    expect(m.write64be(at, 0x0102_0304_0506_0708n)).toBe(true);
    expect(Array.from(m.view(at, 8)!)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(m.read64le(at)).toBe(0x0807_0605_0403_0201n);
    expect(m.write64(at, -1n)).toBe(true);
    expect(m.read64(at)).toBe(0xffff_ffff_ffff_ffffn);
    expect(m.write64(at, (1n << 64n) + 5n)).toBe(true);
    expect(m.read64(at)).toBe(5n);
  });

  it('unaligned accesses work', () => {
    const m = GuestMemory.ofSize(4096);
    m.write64be(0x101, 0x1122_3344_5566_7788n);
    expect(m.read32be(0x103)).toBe(0x3344_5566);
    expect(m.read16le(0x107)).toBe(0x8877);
  });

  it('out-of-RAM reads give -1 / -1n and writes give false', () => {
    const m = GuestMemory.ofSize(4096);
    expect(m.read8(4096)).toBe(-1);
    expect(m.read16(4095)).toBe(-1);
    expect(m.read32(4093)).toBe(-1);
    expect(m.read64(4089)).toBe(-1n);
    expect(m.write8(4096, 1)).toBe(false);
    expect(m.write16(4095, 1)).toBe(false);
    expect(m.write32(4093, 1)).toBe(false);
    expect(m.write64(4089, 1n)).toBe(false);
    expect(m.read8(4095)).toBe(0);
  });
});

describe('read-only (ROM) regions', () => {
  function withRom(): GuestMemory {
    const rom = new RamRegion({ base: 0x1000, size: 0x1000, readonly: true, name: 'rom' });
    rom.bytes.set([0xde, 0xad, 0xbe, 0xef], 0);
    return new GuestMemory([{ base: 0, size: 0x1000 }, rom]);
  }

  it('reads and views work', () => {
    const m = withRom();
    expect(m.isRange(0x1000, 4)).toBe(true);
    expect(m.read32be(0x1000)).toBe(0xdead_beef);
    expect(Array.from(m.view(0x1000, 4)!)).toEqual([0xde, 0xad, 0xbe, 0xef]);
    const dst = new Uint8Array(2);
    expect(m.read(0x1002, dst)).toBe(true);
    expect(Array.from(dst)).toEqual([0xbe, 0xef]);
  });

  it('every write path refuses and the bytes stay', () => {
    const m = withRom();
    expect(m.isWritableRange(0x1000, 4)).toBe(false);
    expect(m.isWritableRange(0, 4)).toBe(true);
    expect(m.writableView(0x1000, 4)).toBeUndefined();
    expect(m.writableView(0, 4)).toBeDefined();
    expect(m.write(0x1000, Uint8Array.of(1, 2, 3, 4))).toBe(false);
    expect(m.fill(0x1000, 4, 0)).toBe(false);
    expect(m.write8(0x1000, 0)).toBe(false);
    expect(m.write16(0x1000, 0)).toBe(false);
    expect(m.write32(0x1000, 0)).toBe(false);
    expect(m.write64(0x1000, 0n)).toBe(false);
    expect(m.write16be(0x1002, 0)).toBe(false);
    expect(m.write64le(0x1000, 0n)).toBe(false);
    expect(m.read32be(0x1000)).toBe(0xdead_beef);
  });
});

describe('SharedArrayBuffer-backed regions', () => {
  it('reads and writes through the shared buffer at the given offset', () => {
    const sab = new SharedArrayBuffer(0x3000);
    const m = new GuestMemory([
      { base: 0, size: 0x1000, buffer: sab, bufferOffset: 0x1000 },
      { base: 0x10_0000, size: 0x1000, buffer: sab, bufferOffset: 0x2000 },
    ]);
    expect(m.regions[0]!.bytes.buffer).toBe(sab);
    const raw = new Uint8Array(sab);
    expect(m.write32le(0x10, 0xcafe_babe)).toBe(true);
    expect(Array.from(raw.subarray(0x1010, 0x1014))).toEqual([0xbe, 0xba, 0xfe, 0xca]);
    // Another agent (e.g. a vCPU worker) writes through its own view; we see it.
    const i32 = new Int32Array(sab);
    Atomics.store(i32, (0x2000 + 0x20) / 4, 0x0102_0304);
    expect(m.read32le(0x10_0020)).toBe(0x0102_0304);
    // The first 0x1000 bytes of the buffer are not guest RAM.
    expect(raw.subarray(0, 0x1000).every((b) => b === 0)).toBe(true);
    // View is zero-copy on the shared buffer.
    const v = m.view(0x10_0000, 4)!;
    v[0] = 0x42;
    expect(raw[0x2000]).toBe(0x42);
    expect(m.isRange(0x10_0000, 0x1000)).toBe(true);
    expect(m.isRange(0x10_0000, 0x1001)).toBe(false);
  });

  it('a buffer too small for the region is a host error', () => {
    const sab = new SharedArrayBuffer(0x1000);
    expect(() => new GuestMemory([{ base: 0, size: 0x1000, buffer: sab, bufferOffset: 0x10 }])).toThrow(RangeError);
  });
});
