// VirtQueueElement.readOut / writeIn against a byte-by-byte reference (QEMU's iov_to_buf and
// iov_from_buf), over random chains: entry sizes on both sides of the small-copy threshold, any
// offset, several RAM regions (one of them ROM), and heads popped again with other buffers so the
// per-entry view reuse is exercised with both stale and fresh views.
import { describe, it, expect } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VirtQueue, type VirtQueueOwner } from '../../src/vring/virtqueue.js';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { SplitRingDriver, type DriverBuffer } from '../../src/driver/split-ring.js';
import type { Tracer } from '../../src/trace/trace.js';

const DESC = 0x1_0000;
const AVAIL = 0x2_0000;
const USED = 0x3_0000;
const LOW = { base: 0, size: 0x10_0000 }; // buffers from 0x4_0000
const HIGH = { base: 0x1_2345_6000, size: 0x4_0000 }; // above 4 GiB
const ROM = { base: 0x20_0000, size: 0x1000, readonly: true };
const NUM = 32;
/** Chains posted per round: at most 4 descriptors each, so they always fit. */
const PER_ROUND = 8;

class Owner implements VirtQueueOwner {
  readonly name = 'copy-test';
  tracer: Tracer | undefined = undefined;
  processingStopped = false;
  readonly errors: string[] = [];
  constructor(readonly memory: GuestMemory) {}
  virtioError(message: string): void {
    this.errors.push(message);
    this.processingStopped = true;
  }
}

/** xorshift32: the same cases on every run. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}

function setup() {
  const memory = new GuestMemory([LOW, HIGH, ROM]);
  // Recognisable contents everywhere (before the driver lays out and clears its rings).
  for (const r of memory.regions) for (let i = 0; i < r.size; i++) r.bytes[i] = (i * 7 + (r.base % 251)) & 0xff;
  const owner = new Owner(memory);
  const drv = new SplitRingDriver({ memory, num: NUM, addrs: { desc: DESC, avail: AVAIL, used: USED } });
  const vq = new VirtQueue(owner, 0, NUM);
  vq.applyFeatures(true, false, false, true);
  vq.setRings(DESC, AVAIL, USED);
  expect(vq.isMapped).toBe(true);
  return { memory, owner, drv, vq };
}

const SIZES = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64, 100, 4096];

/** Up to four buffers: readable ones first, each in LOW or HIGH, none overlapping. */
function randomChain(rand: (n: number) => number, slot: number): DriverBuffer[] {
  const n = 1 + rand(4);
  const nOut = rand(n + 1);
  const bufs: DriverBuffer[] = [];
  for (let k = 0; k < n; k++) {
    const len = SIZES[rand(SIZES.length)]!;
    // Each (slot, k) owns a 0x2000-byte area; start anywhere that fits, odd addresses included.
    const high = rand(2) === 1;
    const area = (high ? HIGH.base : 0x4_0000) + (slot * 4 + k) * 0x2000;
    bufs.push({ addr: area + rand(0x2000 - len + 1), len, write: k >= nOut });
  }
  return bufs;
}

/** The bytes of the chain's readable (or writable) part, as the reference sees them. */
function part(memory: GuestMemory, bufs: DriverBuffer[], writable: boolean): number[] {
  const out: number[] = [];
  for (const b of bufs) if (!!b.write === writable) out.push(...memory.view(b.addr, b.len)!);
  return out;
}

function check(e: VirtQueueElement, memory: GuestMemory, bufs: DriverBuffer[], rand: (n: number) => number): void {
  const outPart = part(memory, bufs, false);
  const inTotal = part(memory, bufs, true).length;
  for (let t = 0; t < 6; t++) {
    // readOut: any offset (also past the end), any destination size.
    const off = rand(outPart.length + 3);
    const dst = new Uint8Array(SIZES[rand(SIZES.length)]!).fill(0xee);
    const n = e.readOut(off, dst);
    const want = outPart.slice(off, off + dst.length);
    expect(n).toBe(want.length);
    expect(Array.from(dst.subarray(0, n))).toEqual(want);
    expect(dst.subarray(n).every((x) => x === 0xee)).toBe(true);

    // writeIn: compare every buffer of the chain (and the bytes around it) with the reference.
    const woff = rand(inTotal + 3);
    const src = new Uint8Array(SIZES[rand(SIZES.length)]!);
    for (let i = 0; i < src.length; i++) src[i] = rand(256);
    const before = bufs.map((b) => Array.from(memory.view(b.addr - 1, b.len + 2)!));
    const m = e.writeIn(woff, src);
    expect(m).toBe(Math.max(0, Math.min(src.length, inTotal - woff)));
    let pos = 0;
    bufs.forEach((b, k) => {
      const expected = before[k]!.slice();
      if (b.write) {
        for (let j = 0; j < b.len; j++) {
          const s = pos + j - woff;
          if (s >= 0 && s < m) expected[1 + j] = src[s]!;
        }
        pos += b.len;
      }
      // Buffers may sit next to each other, so only the buffer's own bytes are compared.
      expect(Array.from(memory.view(b.addr, b.len)!)).toEqual(expected.slice(1, 1 + b.len));
    });
  }
}

describe('readOut / writeIn match the reference copy', () => {
  it('random chains, offsets and sizes, heads reused with other buffers', () => {
    const { memory, owner, drv, vq } = setup();
    const rand = rng(0x5eed);
    for (let round = 0; round < 150; round++) {
      // Post a few chains, pop and check them, then complete them so the heads come back.
      const posted: DriverBuffer[][] = [];
      const count = 1 + rand(PER_ROUND);
      for (let c = 0; c < count; c++) {
        const bufs = randomChain(rand, c);
        posted.push(bufs);
        expect(drv.add(bufs)).toBeGreaterThanOrEqual(0);
      }
      for (let c = 0; c < count; c++) {
        const e = vq.pop()!;
        expect(e).not.toBeNull();
        check(e, memory, posted[c]!, rand);
        vq.push(e, 0);
      }
      drv.takeUsed();
    }
    expect(owner.errors).toEqual([]);
  });

  it('the same guest buffers copied again give the same bytes (reused views)', () => {
    const { memory, drv, vq } = setup();
    const bufs: DriverBuffer[] = [
      { addr: 0x4_0000, len: 4096 },
      { addr: HIGH.base + 0x100, len: 64 },
      { addr: 0x5_0000, len: 4096, write: true },
    ];
    for (let round = 0; round < 3; round++) {
      memory.view(0x4_0000, 4096)!.fill(round + 1);
      memory.view(HIGH.base + 0x100, 64)!.fill(round + 10);
      drv.add(bufs);
      const e = vq.pop()!;
      const dst = new Uint8Array(4096 + 64);
      expect(e.readOut(0, dst)).toBe(4096 + 64);
      expect(dst.subarray(0, 4096).every((x) => x === round + 1)).toBe(true);
      expect(dst.subarray(4096).every((x) => x === round + 10)).toBe(true);
      expect(e.writeIn(0, new Uint8Array(4096).fill(round + 20))).toBe(4096);
      expect(memory.view(0x5_0000, 4096)!.every((x) => x === round + 20)).toBe(true);
      vq.push(e, 4096);
      drv.takeUsed();
    }
  });

  it('writeIn never writes ROM, even for an entry a device changed after pop', () => {
    const { memory, drv, vq } = setup();
    drv.add([{ addr: 0x6_0000, len: 64, write: true }]);
    const e = vq.pop()!;
    // A device bug points the entry at ROM: the copy must stop there, as findRegion says.
    e.sgAddr[0] = ROM.base;
    const rom = Array.from(memory.view(ROM.base, 64)!);
    expect(e.writeIn(0, new Uint8Array(64).fill(0x55))).toBe(0);
    expect(e.writeIn(0, new Uint8Array(8).fill(0x55))).toBe(0);
    expect(Array.from(memory.view(ROM.base, 64)!)).toEqual(rom);
    // Reading ROM is fine.
    const dst = new Uint8Array(40);
    e.outNum = 1;
    e.inNum = 0;
    expect(e.readOut(0, dst)).toBe(40);
    expect(Array.from(dst)).toEqual(rom.slice(0, 40));
  });
});

describe('element copies refuse offsets outside the chain', () => {
  it('negative and NaN offsets copy nothing', async () => {
    const { GuestMemory } = await import('../../src/memory/guest-memory.js');
    const { VirtQueueElement } = await import('../../src/vring/element.js');
    const mem = GuestMemory.ofSize(0x10000);
    mem.fill(0x1000, 16, 0xaa);
    mem.fill(0x2000, 16, 0xbb);
    const e = new VirtQueueElement(mem);
    e.sgAddr[0] = 0x1010; e.sgLen[0] = 16; e.outNum = 1;
    e.sgAddr[1] = 0x2010; e.sgLen[1] = 16; e.inNum = 1;
    e.inFlight = true;
    const dst = new Uint8Array(8);
    expect(e.readOut(-8, dst)).toBe(0);
    expect(e.readOut(Number.NaN, dst)).toBe(0);
    expect(dst.every((b) => b === 0)).toBe(true);
    expect(e.writeIn(-8, new Uint8Array(8).fill(0xcc))).toBe(0);
    expect(mem.view(0x2008, 8)!.every((b) => b === 0xbb)).toBe(true);
    expect(e.readOut(0, dst)).toBe(8);
    expect(dst.every((b) => b === 0)).toBe(true);
  });
});
