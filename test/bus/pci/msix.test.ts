// MSI-X as QEMU 7.2's hw/pci/msix.c: capability, table, PBA, masking, pending bits, delivery.
import { describe, expect, it } from 'vitest';
import { Msix, msixExclusiveBarLayout } from '../../../src/bus/pci/msix.js';
import { PCIDevice } from '../../../src/bus/pci/pci-device.js';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { QEMUFileReader, QEMUFileWriter } from '../../../src/migration/qemu-file.js';
import { FakePciHost } from '../../support/pci-host.js';

const BAR = 0xe000_0000;

function rig(n = 4) {
  const dev = new PCIDevice({ name: 'msix-dev', vendorId: 0x1af4, deviceId: 0x1005, classId: 0x00ff });
  dev.config[0x3d] = 1;
  const msix = Msix.exclusiveBar(dev, n, 1);
  const mem = GuestMemory.ofSize(1 << 20);
  const host = new FakePciHost(mem);
  host.plug(dev, 2 << 3);
  dev.configWrite(0x14, 4, BAR);
  dev.configWrite(4, 2, 0x6); // memory + bus master
  const rd = (o: number, s: 1 | 2 | 4 = 4) => host.mem.read(BAR + o, s);
  const wr = (o: number, v: number, s: 1 | 2 | 4 = 4) => host.mem.write(BAR + o, s, v);
  const entry = (v: number, addr: number, data: number, masked: boolean) => {
    wr(16 * v, addr);
    wr(16 * v + 4, 0);
    wr(16 * v + 8, data);
    wr(16 * v + 12, masked ? 1 : 0);
  };
  const ctrl = (enable: boolean, maskAll = false) => dev.configWrite(msix.cap + 2, 2, (enable ? 0x8000 : 0) | (maskAll ? 0x4000 : 0));
  return { dev, msix, mem, host, rd, wr, entry, ctrl };
}

describe('MSI-X exclusive BAR layout (msix_init_exclusive_bar)', () => {
  it('4 KiB with the PBA at 0x800 up to 128 vectors; bigger tables push the PBA and the BAR', () => {
    expect(msixExclusiveBarLayout(1)).toEqual({ barSize: 4096, tableOffset: 0, pbaOffset: 0x800, pbaSize: 8 });
    expect(msixExclusiveBarLayout(2)).toEqual({ barSize: 4096, tableOffset: 0, pbaOffset: 0x800, pbaSize: 8 });
    expect(msixExclusiveBarLayout(65)).toEqual({ barSize: 4096, tableOffset: 0, pbaOffset: 0x800, pbaSize: 16 });
    expect(msixExclusiveBarLayout(128)).toEqual({ barSize: 4096, tableOffset: 0, pbaOffset: 0x800, pbaSize: 16 });
    expect(msixExclusiveBarLayout(129)).toEqual({ barSize: 4096, tableOffset: 0, pbaOffset: 0x810, pbaSize: 24 });
    expect(msixExclusiveBarLayout(300)).toEqual({ barSize: 8192, tableOffset: 0, pbaOffset: 4800, pbaSize: 40 });
    expect(msixExclusiveBarLayout(2048)).toEqual({ barSize: 65536, tableOffset: 0, pbaOffset: 0x8000, pbaSize: 256 });
  });

  it('refuses 0 and more than 2048 vectors (msix_init)', () => {
    const dev = new PCIDevice({ name: 'x', vendorId: 1, deviceId: 2, classId: 0 });
    expect(() => Msix.exclusiveBar(dev, 0, 1)).toThrow(/invalid/);
    expect(() => Msix.exclusiveBar(dev, 2049, 1)).toThrow(/invalid/);
  });
});

describe('MSI-X capability and table', () => {
  it('capability: id 0x11, table size N-1, table BIR 1 at 0, PBA BIR 1 at 0x800; only enable and mask-all writable', () => {
    const { dev, msix } = rig(4);
    expect(msix.cap).toBe(0x40);
    expect(dev.configRead(0x40, 4)).toBe(0x0003_0011);
    expect(dev.configRead(0x44, 4)).toBe(0x0000_0001);
    expect(dev.configRead(0x48, 4)).toBe(0x0000_0801);
    dev.configWrite(0x40, 4, 0xffff_ffff);
    expect(dev.configRead(0x40, 4)).toBe(0xc003_0011);
    dev.configWrite(0x44, 4, 0xffff_ffff);
    dev.configWrite(0x48, 4, 0);
    expect(dev.configRead(0x44, 4)).toBe(1);
    expect(dev.configRead(0x48, 4)).toBe(0x801);
  });

  it('the table starts zeroed with every vector masked; 4-byte accesses only', () => {
    const { rd, wr } = rig(2);
    expect([0, 4, 8, 12, 16, 20, 24, 28].map((o) => rd(o))).toEqual([0, 0, 0, 1, 0, 0, 0, 1]);
    wr(0, 0x1234_5678);
    expect(rd(0)).toBe(0x1234_5678);
    expect(rd(0, 1)).toBe(0);
    expect(rd(0, 2)).toBe(0);
    expect(rd(2, 4)).toBe(0); // unaligned: split into 2-byte pieces, which the table refuses
    wr(12, 0, 1);
    wr(12, 0, 2);
    expect(rd(12)).toBe(1);
    expect(rd(32)).toBe(0); // past the table
    wr(32, 5);
    expect(rd(32)).toBe(0);
  });

  it('the PBA is read-only (CVE-2015-7549) and the rest of the BAR is empty', () => {
    const { rd, wr } = rig(2);
    wr(0x800, 0xffff_ffff);
    wr(0x804, 0xffff_ffff);
    wr(0x800, 0xff, 1);
    expect(rd(0x800)).toBe(0);
    expect(rd(0x804)).toBe(0);
    expect(rd(0x808)).toBe(0);
    expect(rd(0xffc)).toBe(0);
    expect(rd(0x400)).toBe(0);
  });
});

describe('MSI-X delivery (msix_notify)', () => {
  it('an unused vector sends nothing; a used, unmasked vector writes data LE to the address', () => {
    const { msix, host, mem, entry, ctrl } = rig(4);
    entry(1, 0x8000, 0xcafe_f00d, false);
    ctrl(true);
    msix.notify(1);
    expect(host.dma).toHaveLength(0);
    msix.vectorUse(1);
    msix.notify(1);
    expect(host.dma).toEqual([{ addr: 0x8000, data: new Uint8Array([0x0d, 0xf0, 0xfe, 0xca]), value: 0xcafe_f00d }]);
    expect(mem.read32(0x8000)).toBe(0xcafe_f00d);
  });

  it('a masked vector sets its pending bit; unmasking delivers it and clears the bit', () => {
    const { msix, host, rd, wr, entry, ctrl } = rig(4);
    entry(2, 0x8000, 7, true);
    ctrl(true);
    msix.vectorUse(2);
    msix.notify(2);
    expect(host.dma).toHaveLength(0);
    expect(rd(0x800)).toBe(0b100);
    msix.notify(2);
    expect(rd(0x800)).toBe(0b100);
    wr(16 * 2 + 12, 0);
    expect(host.dma.map((d) => d.value)).toEqual([7]);
    expect(rd(0x800)).toBe(0);
  });

  it('function mask: messages pend while set and are delivered when it clears', () => {
    const { msix, host, rd, entry, ctrl } = rig(4);
    entry(0, 0x8000, 1, false);
    entry(3, 0x8010, 4, false);
    msix.vectorUse(0);
    msix.vectorUse(3);
    ctrl(true, true);
    msix.notify(0);
    msix.notify(3);
    expect(host.dma).toHaveLength(0);
    expect(rd(0x800)).toBe(0b1001);
    ctrl(true, false);
    expect(host.dma.map((d) => [d.addr, d.value])).toEqual([[0x8000, 1], [0x8010, 4]]);
    expect(rd(0x800)).toBe(0);
  });

  it('with MSI-X disabled a notify pends (the function counts as masked), and enabling delivers', () => {
    const { msix, host, rd, entry, ctrl } = rig(2);
    entry(1, 0x8000, 9, false);
    msix.vectorUse(1);
    msix.notify(1);
    expect(rd(0x800)).toBe(0b10);
    ctrl(true);
    expect(host.dma.map((d) => d.value)).toEqual([9]);
  });

  it('bus mastering off: the message is dropped, not made pending', () => {
    const { dev, msix, host, rd, entry, ctrl } = rig(2);
    entry(0, 0x8000, 5, false);
    ctrl(true);
    msix.vectorUse(0);
    dev.configWrite(4, 2, 0x2);
    msix.notify(0);
    expect(host.dma).toHaveLength(0);
    expect(rd(0x800)).toBe(0);
    dev.configWrite(4, 2, 0x6);
    msix.notify(0);
    expect(host.dma).toHaveLength(1);
  });

  it('unusing the last user of a vector clears its pending bit; use counts nest', () => {
    const { msix, rd, entry, ctrl } = rig(2);
    entry(0, 0x8000, 5, true);
    ctrl(true);
    msix.vectorUse(0);
    msix.vectorUse(0);
    msix.notify(0);
    expect(rd(0x800)).toBe(1);
    msix.vectorUnuse(0);
    expect(rd(0x800)).toBe(1);
    msix.vectorUnuse(0);
    expect(rd(0x800)).toBe(0);
    msix.vectorUnuse(0); // already unused: nothing
    expect(() => msix.vectorUse(2)).toThrow();
  });

  it('out-of-range vectors never index past the table', () => {
    const { msix, host } = rig(2);
    expect(() => msix.notify(2)).not.toThrow();
    expect(() => msix.notify(-1)).not.toThrow();
    expect(() => msix.notify(0xffff)).not.toThrow();
    expect(host.dma).toHaveLength(0);
  });

  it('enabling MSI-X deasserts INTx', () => {
    const { dev, host, ctrl } = rig(2);
    dev.setIrq(true);
    expect(host.intx[1]).toBe(true);
    ctrl(true);
    expect(host.intx[1]).toBe(false);
    expect(dev.irqState).toBe(0);
  });
});

describe('MSI-X reset and migration', () => {
  it('reset: disabled, table zeroed and masked, PBA cleared', () => {
    const { dev, msix, rd, entry, ctrl } = rig(2);
    entry(0, 0x8000, 5, true);
    ctrl(true, true);
    msix.vectorUse(0);
    msix.notify(0);
    dev.reset();
    expect(msix.enabled()).toBe(false);
    expect(dev.configRead(msix.cap, 4)).toBe(0x0001_0011);
    dev.configWrite(4, 2, 0x6);
    dev.configWrite(0x14, 4, BAR);
    expect([0, 4, 8, 12, 0x800].map((o) => rd(o))).toEqual([0, 0, 0, 1, 0]);
  });

  it('save writes the table raw and ceil(n/8) PBA bytes; load restores and re-evaluates masks', () => {
    const a = rig(4);
    a.entry(0, 0x8000, 0x11, true);
    a.entry(3, 0x8010, 0x44, false);
    a.ctrl(true);
    a.msix.vectorUse(0);
    a.msix.notify(0);
    const f = new QEMUFileWriter();
    a.msix.save(f);
    const bytes = f.bytes();
    expect(bytes.length).toBe(4 * 16 + 1);
    expect(bytes[64]).toBe(1);
    const b = rig(4);
    b.ctrl(true);
    const apply = b.msix.load(new QEMUFileReader(bytes));
    expect(b.rd(0x800)).toBe(0);
    apply();
    expect(Array.from(b.msix.table)).toEqual(Array.from(a.msix.table));
    expect(b.rd(0x800)).toBe(1);
    expect(() => b.msix.load(new QEMUFileReader(bytes.subarray(0, 10)))).toThrow(/msix table/);
  });
});
