import { describe, it, expect } from 'vitest';
import {
  alignUp,
  availRingSize,
  AVAIL_ALIGN,
  DESC_ALIGN,
  descTableSize,
  isPowerOfTwo,
  legacyLayout,
  legacyRingSize,
  qemuLegacyLayout,
  usedRingSize,
  USED_ALIGN,
} from '../../src/vring/layout.js';
import { VRING_DESC_SIZE, VRING_USED_ELEM_SIZE, vringNeedEvent } from '../../src/vring/constants.js';

/**
 * Linux's vring_size() written independently of the code under test (include/uapi/linux/virtio_ring.h):
 *   ((sizeof(struct vring_desc) * num + sizeof(__virtio16) * (3 + num) + align - 1) & ~(align - 1))
 *   + sizeof(__virtio16) * 3 + sizeof(struct vring_used_elem) * num
 */
function linuxVringSize(num: number, align: number): number {
  return ((16 * num + 2 * (3 + num) + align - 1) & ~(align - 1)) + 2 * 3 + 8 * num;
}

describe('ring part sizes (VIRTIO 1.2 §2.7)', () => {
  it('element sizes', () => {
    expect(VRING_DESC_SIZE).toBe(16);
    expect(VRING_USED_ELEM_SIZE).toBe(8);
  });

  it('descriptor table, avail ring, used ring', () => {
    expect(descTableSize(1)).toBe(16);
    expect(descTableSize(256)).toBe(4096);
    expect(descTableSize(32768)).toBe(524288);
    // flags + idx + ring[num] + used_event
    expect(availRingSize(256)).toBe(518);
    expect(availRingSize(256, true)).toBe(518);
    expect(availRingSize(256, false)).toBe(516);
    expect(availRingSize(1, false)).toBe(6);
    // flags + idx + ring[num]{id,len} + avail_event
    expect(usedRingSize(256)).toBe(2054);
    expect(usedRingSize(256, false)).toBe(2052);
    expect(usedRingSize(1)).toBe(14);
  });

  it('part alignments', () => {
    expect([DESC_ALIGN, AVAIL_ALIGN, USED_ALIGN]).toEqual([16, 2, 4]);
  });

  it('alignUp and isPowerOfTwo', () => {
    expect(alignUp(0, 4096)).toBe(0);
    expect(alignUp(1, 4096)).toBe(4096);
    expect(alignUp(4096, 4096)).toBe(4096);
    expect(alignUp(4097, 4096)).toBe(8192);
    expect(alignUp(0x1_0000_0001, 4096)).toBe(0x1_0000_1000);
    expect(alignUp(77, 2)).toBe(78);
    for (const x of [1, 2, 4, 1024, 32768, 0x8000_0000]) expect(isPowerOfTwo(x), String(x)).toBe(true);
    for (const x of [0, 3, 6, 1023, 1.5, -2, -0x8000_0000, 0x1_0000_0000, Number.NaN]) expect(isPowerOfTwo(x), String(x)).toBe(false);
  });
});

describe('legacy layout', () => {
  it('N=256, align 4096: used at base+8192, vring_size 10246', () => {
    expect(linuxVringSize(256, 4096)).toBe(10246);
    const base = 0x7_0000;
    const l = legacyLayout(base, 256, 4096);
    expect(l).toEqual({ desc: base, avail: base + 4096, used: base + 8192 });
    expect(legacyRingSize(256, 4096)).toBe(10246);
  });

  it('N=128, align 4096: used at base+4096, vring_size 5126', () => {
    expect(linuxVringSize(128, 4096)).toBe(5126);
    expect(legacyLayout(0x10000, 128, 4096)).toEqual({ desc: 0x10000, avail: 0x10800, used: 0x11000 });
    expect(legacyRingSize(128, 4096)).toBe(5126);
  });

  it('agrees with Linux vring_size for every power-of-two size and several alignments', () => {
    for (let num = 1; num <= 32768; num *= 2) {
      for (const align of [2, 4, 16, 64, 4096, 65536]) {
        expect(legacyRingSize(num, align), `num=${num} align=${align}`).toBe(linuxVringSize(num, align));
        const l = legacyLayout(0, num, align);
        expect(l.used % align).toBe(0);
        // The used ring never overlaps the avail ring including used_event.
        expect(l.used).toBeGreaterThanOrEqual(l.avail + availRingSize(num, true));
      }
    }
  });

  it('QEMU 7.2 leaves out used_event: num=4, align=2 puts used 2 bytes lower', () => {
    // desc 64 bytes, avail at 64; spec: 64+4+8+2 = 78; QEMU: 64+4+8 = 76.
    expect(legacyLayout(0, 4, 2)).toEqual({ desc: 0, avail: 64, used: 78 });
    expect(qemuLegacyLayout(0, 4, 2)).toEqual({ desc: 0, avail: 64, used: 76 });
    expect(legacyRingSize(4, 2)).toBe(78 + 38);
    // With align 4 the gap is 4 bytes (76 is aligned, 78 rounds up to 80).
    expect(legacyLayout(0x1000, 4, 4).used).toBe(0x1000 + 80);
    expect(qemuLegacyLayout(0x1000, 4, 4).used).toBe(0x1000 + 76);
    // For align 2 the difference is exactly the 2-byte used_event for every size.
    for (let num = 1; num <= 1024; num *= 2) {
      expect(legacyLayout(0, num, 2).used - qemuLegacyLayout(0, num, 2).used).toBe(2);
    }
  });

  it('QEMU and spec agree at page alignment', () => {
    for (let num = 1; num <= 32768; num *= 2) {
      expect(qemuLegacyLayout(0x4000, num, 4096)).toEqual(legacyLayout(0x4000, num, 4096));
    }
  });
});

describe('vringNeedEvent (Linux vring_need_event)', () => {
  // [event, new, old, expected]
  const cases: [number, number, number, boolean][] = [
    // Passing the event index exactly.
    [4, 5, 4, true],
    [4, 4, 3, false],
    [4, 6, 5, false],
    // Batch crossing the event.
    [5, 7, 3, true],
    [2, 7, 3, false],
    [6, 7, 3, true],
    [7, 7, 3, false],
    // No progress: never.
    [4, 4, 4, false],
    [3, 4, 4, false],
    // rust-vmm test_needs_notification (qsize 16).
    [8, 11, 11, false],
    [15, 11, 10, false],
    [15, 15, 14, false],
    [15, 16, 15, true],
    [15, 16, 16, false],
    [0xffff - 3, 0xffff - 2, 0xffff - 3, true],
    // Wrap at 2^16.
    [0xffff, 0, 0xffff, true],
    [0xffff, 1, 0xfffe, true],
    [0, 1, 0xffff, true],
    [2, 1, 0xffff, false],
    [0xfffe, 2, 0xfffe, true],
    [0xfffd, 2, 0xfffe, false],
    [0xfffe, 2, 0xfffd, true],
    [0xffff, 2, 0xfffe, true],
    [3, 2, 0xfffe, false],
  ];
  for (const [ev, n, o, want] of cases) {
    it(`event=${ev} new=${n} old=${o} -> ${want}`, () => {
      expect(vringNeedEvent(ev, n, o)).toBe(want);
    });
  }

  it('rust-vmm sweep: used_event 4, one entry added at each next_used over a full wrap', () => {
    const wrap = 0x10000;
    const hits: number[] = [];
    for (let i = 0; i < wrap + 12; i++) {
      const now = i & 0xffff;
      const old = (now - 1) & 0xffff;
      if (vringNeedEvent(4, now, old)) hits.push(i);
    }
    expect(hits).toEqual([5, 5 + wrap]);
  });
});
