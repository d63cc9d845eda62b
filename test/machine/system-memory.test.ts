// The system bus dispatch (src/machine/system-memory.ts): RAM first, windows answering pieces of
// at most 4 bytes as QEMU's memory_access_size cuts them, unassigned memory 0 and ports all ones.
import { describe, expect, it } from 'vitest';
import { GuestMemory, RamRegion } from '../../src/memory/guest-memory.js';
import type { AccessSize, IoHandler } from '../../src/machine/address-space.js';
import { accessSize, SystemMemory } from '../../src/machine/system-memory.js';

/** A window that records every access and reads back `base + offset` patterns. */
function recorder(): IoHandler & { log: string[]; regs: Map<number, number> } {
  const log: string[] = [];
  const regs = new Map<number, number>();
  return {
    log,
    regs,
    read(offset: number, size: AccessSize) {
      log.push(`r${size}@${offset}`);
      return regs.get(offset) ?? (0x11 * (offset + 1)) & 0xff;
    },
    write(offset: number, size: AccessSize, value: number) {
      log.push(`w${size}@${offset}=${value.toString(16)}`);
      regs.set(offset, value);
    },
  };
}

function sys(): SystemMemory {
  return new SystemMemory(new GuestMemory([{ base: 0, size: 0x10000 }, new RamRegion({ base: 0x20000, size: 0x1000, readonly: true, name: 'rom' })]));
}

describe('memory_access_size', () => {
  it('caps at 4 bytes and at the alignment of the offset', () => {
    expect(accessSize(0, 8)).toBe(4);
    expect(accessSize(0, 3)).toBe(2);
    expect(accessSize(1, 4)).toBe(1);
    expect(accessSize(2, 4)).toBe(2);
    expect(accessSize(4, 4)).toBe(4);
    expect(accessSize(6, 1)).toBe(1);
  });
});

describe('SystemMemory', () => {
  it('reads and writes RAM little-endian at every width', () => {
    const s = sys();
    s.writeQ(0x100, 0x1122334455667788n);
    expect(s.readN(0x100, 4)).toBe(0x55667788);
    expect(s.readN(0x104, 4)).toBe(0x11223344);
    expect(s.readN(0x101, 2)).toBe(0x6677);
    expect(s.readN(0x107, 1)).toBe(0x11);
    expect(s.readQ(0x100)).toBe(0x1122334455667788n);
  });

  it('drops writes to ROM and reads it', () => {
    const s = sys();
    s.ram.regions.find((r) => r.name === 'rom')!.bytes[0] = 0xaa;
    s.writeN(0x20000, 4, 0x12345678);
    expect(s.readN(0x20000, 4)).toBe(0xaa);
  });

  it('reads unassigned memory as 0 and drops writes there', () => {
    const s = sys();
    s.writeN(0x30000, 4, 0xdeadbeef);
    expect(s.readN(0x30000, 4)).toBe(0);
    expect(s.readQ(0x30000)).toBe(0n);
    // A read running off the end of RAM: RAM bytes, then zeros.
    s.writeN(0xfffe, 2, 0xbbaa);
    const buf = new Uint8Array(4);
    s.read(0xfffe, buf);
    expect([...buf]).toEqual([0xaa, 0xbb, 0, 0]);
  });

  it('splits an 8-byte window access into two 4-byte ones, low half first', () => {
    const s = sys();
    const w = recorder();
    s.mmio.map(0x40000, 0x200, w, 'dev');
    s.writeQ(0x40008, 0x1122334455667788n);
    expect(w.log).toEqual(['w4@8=55667788', 'w4@12=11223344']);
    w.log.length = 0;
    expect(s.readQ(0x40008)).toBe(0x1122334455667788n);
    expect(w.log).toEqual(['r4@8', 'r4@12']);
  });

  it('cuts misaligned window accesses into aligned pieces (1, 2, 1)', () => {
    const s = sys();
    const w = recorder();
    s.mmio.map(0x40000, 0x200, w, 'dev');
    const v = s.readN(0x40001, 4);
    expect(w.log).toEqual(['r1@1', 'r2@2', 'r1@4']);
    expect(v).toBe(0x22 | (0x33 << 8) | (0x55 << 24));
  });

  it('does not cut a window piece at the window end (QEMU clamps only RAM)', () => {
    const s = sys();
    const narrow = recorder();
    s.io.map(0x100, 1, narrow, 'one-byte');
    s.in(0x100, 4);
    expect(narrow.log).toEqual(['r4@0']);
  });

  it('gives an overlapping port to the newest window, piece by piece (0xcf8/0xcf9)', () => {
    const s = sys();
    const conf = recorder();
    const rcr = recorder();
    s.io.map(0xcf8, 4, conf, 'conf');
    s.io.map(0xcf9, 1, rcr, 'rcr');
    s.out(0xcf8, 4, 0x80000000);
    expect(conf.log).toEqual(['w4@0=80000000']);
    expect(rcr.log).toEqual([]);
    s.in(0xcf9, 1);
    expect(rcr.log).toEqual(['r1@0']);
    s.in(0xcfa, 2);
    expect(conf.log.at(-1)).toBe('r2@2');
  });

  it('reads unclaimed ports as all ones, masked to the access size, and ports past 0xffff as 0', () => {
    const s = sys();
    expect(s.in(0x80, 1)).toBe(0xff);
    expect(s.in(0x1234, 2)).toBe(0xffff);
    expect(s.in(0x1234, 4)).toBe(0xffffffff);
    expect(s.in(0xffff, 2)).toBe(0x00ff);
    expect(s.in(0xfffe, 4)).toBe(0x0000ffff);
  });

  it('lets RAM win over a window mapped on top of it', () => {
    const s = sys();
    const w = recorder();
    s.mmio.map(0x1000, 0x1000, w, 'bar-over-ram');
    s.writeN(0x1000, 4, 0x01020304);
    expect(s.readN(0x1000, 4)).toBe(0x01020304);
    expect(w.log).toEqual([]);
  });

  it('memsets across RAM, a window and unassigned space in bounded pieces', () => {
    const s = sys();
    const w = recorder();
    s.mmio.map(0x10000, 8, w, 'after-ram');
    s.fill(0xfffc, 16, 0x5a);
    expect(s.readN(0xfffc, 4)).toBe(0x5a5a5a5a);
    expect(w.log).toEqual(['w4@0=5a5a5a5a', 'w4@4=5a5a5a5a']);
    s.fill(0x50000, 1 << 20, 1); // unassigned: nothing happens, quickly
  });
});
