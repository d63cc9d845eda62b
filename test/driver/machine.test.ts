// InProcessMachine and IrqLog: the Machine contract without sockets.
import { describe, expect, it } from 'vitest';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { IrqLog, MachineError, UnsupportedError } from '../../src/driver/machine.js';
import { MiniMicrovm } from '../support/mini-microvm.js';

const machine = (opts = {}) => {
  const target = new MiniMicrovm({ ramSize: 1 << 20, transports: 0 });
  return { target, m: new InProcessMachine(target, opts) };
};

describe('InProcessMachine', () => {
  it('masks values to the access width and reads unsigned', async () => {
    const { m } = machine();
    await m.writel(0x100, 0xffff_ffff);
    expect(await m.readl(0x100)).toBe(0xffff_ffff);
    await m.writeb(0x100, 0x1ff);
    expect(await m.readb(0x100)).toBe(0xff);
    await m.writew(0x104, -1);
    expect(await m.readw(0x104)).toBe(0xffff);
    await m.writeq(0x108, -2n);
    expect(await m.readq(0x108)).toBe(0xffff_ffff_ffff_fffen);
    // Unclaimed ports read all ones, unmapped memory 0 (as QEMU's pc).
    expect(await m.inl(0x1234)).toBe(0xffff_ffff);
    expect(await m.readl(0xfee0_0000)).toBe(0);
  });

  it('hands out copies, not views of guest RAM', async () => {
    const { m } = machine();
    await m.writeBytes(0x200, new Uint8Array([1, 2, 3]));
    const b = await m.readBytes(0x200, 3);
    b[0] = 9;
    expect(await m.readb(0x200)).toBe(1);
    await m.memset(0x200, 3, 0x5a);
    expect([...(await m.readBytes(0x200, 3))]).toEqual([0x5a, 0x5a, 0x5a]);
    expect(await m.readBytes(0x200, 0)).toEqual(new Uint8Array(0));
  });

  it('rejects bad arguments, an absent clock and use after close', async () => {
    const { m } = machine({ hasClock: false });
    await expect(m.outb(0x10000, 0)).rejects.toThrow(RangeError);
    await expect(m.readl(-1)).rejects.toThrow(RangeError);
    await expect(m.clockStep(1)).rejects.toThrow(UnsupportedError);
    let closed = 0;
    const c = machine({ onClose: () => void closed++ });
    expect(await c.m.clockStep(10)).toBe(10);
    expect(await c.m.clockSet(50)).toBe(50);
    await c.m.close();
    await c.m.close();
    expect(closed).toBe(1);
    await expect(c.m.readl(0)).rejects.toThrow(MachineError);
    expect(c.target.onIrq).toBeUndefined();
  });
});

describe('IrqLog', () => {
  it('keeps levels, counts and an ordered log with marks', () => {
    const log = new IrqLog();
    log.push(11, true);
    const mark = log.mark();
    log.push(11, false);
    log.push(5, true);
    log.push(11, true);
    expect(log.level(11)).toBe(true);
    expect(log.level(7)).toBe(false);
    expect(log.raised()).toEqual([5, 11]);
    expect(log.count(11)).toBe(2);
    expect(log.count(11, true, mark)).toBe(1);
    expect(log.find(11, false, mark)).toEqual({ line: 11, level: false, seq: 1 });
    expect(log.since(mark).map((e) => e.seq)).toEqual([1, 2, 3]);
  });
});
