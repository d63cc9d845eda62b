// The pc reference machine (src/machine/pc.ts): PCI configuration mechanism #1, the chipset
// functions as QEMU 7.2 shows them (golden dumps in test/golden/pci), PIIX3 PIRQ routing of
// INTx to IOAPIC pins, BAR placement, bus-master writes, slot allocation, the memory map.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BarRegion, PCIDevice } from '../../src/bus/pci/pci-device.js';
import { createVirtioPci } from '../../src/bus/virtio-pci.js';
import { VirtIORng } from '../../src/devices/rng.js';
import { PcMachine } from '../../src/machine/pc.js';
import { piix3SlotGetPirq } from '../../src/machine/pci-host.js';

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), '../golden/pci');

const cfgAddr = (slot: number, fn: number, off: number) => (0x8000_0000 | (slot << 11) | (fn << 8) | (off & 0xfc)) >>> 0;

function cfgRead(m: PcMachine, slot: number, fn: number, off: number, size: 1 | 2 | 4): number {
  m.outl(0xcf8, cfgAddr(slot, fn, off));
  return size === 4 ? m.inl(0xcfc) : size === 2 ? m.inw(0xcfc + (off & 2)) : m.inb(0xcfc + (off & 3));
}
function cfgWrite(m: PcMachine, slot: number, fn: number, off: number, size: 1 | 2 | 4, v: number): void {
  m.outl(0xcf8, cfgAddr(slot, fn, off));
  if (size === 4) m.outl(0xcfc, v);
  else if (size === 2) m.outw(0xcfc + (off & 2), v);
  else m.outb(0xcfc + (off & 3), v);
}
function dump(m: PcMachine, slot: number, fn: number): string {
  const b = new Uint8Array(256);
  for (let off = 0; off < 256; off += 4) new DataView(b.buffer).setUint32(off, cfgRead(m, slot, fn, off, 4), true);
  return Buffer.from(b).toString('hex');
}

/** A plain PCI function with an I/O BAR, a memory BAR and INTA#, for the host's side of things. */
class TestFunction extends PCIDevice {
  readonly log: string[] = [];
  constructor() {
    super({ name: 'test-fn', vendorId: 0x1234, deviceId: 0x5678, classId: 0x00ff });
    this.config[0x3d] = 1;
    this.registerBar(0, 'io', 0x20, new BarRegion(0x20, 0xffff_ffff, (o, s) => (this.log.push(`io r${o}/${s}`), 0xab), (o, s, v) => void this.log.push(`io w${o}/${s}=${v}`)));
    this.registerBar(1, 'mem32', 0x1000, new BarRegion(0x1000, 0, (o, s) => (this.log.push(`mem r${o}/${s}`), 0xcd), (o, s, v) => void this.log.push(`mem w${o}/${s}=${v}`)));
  }
}

describe('pc: configuration mechanism #1', () => {
  it('matches QEMU 7.2 host bridge (00.0) and PIIX3 (01.0) byte for byte (test/golden/pci)', () => {
    const m = new PcMachine({ ramSize: 16 << 20 });
    for (const [file, slot] of [['host-bridge.json', 0], ['isa-bridge.json', 1]] as const) {
      const golden = JSON.parse(readFileSync(join(GOLDEN, file), 'utf8')) as { config: string; commandLine: string[] };
      expect(golden.commandLine).toContain('16M');
      expect(dump(m, slot, 0)).toBe(golden.config);
    }
  });

  it('matches QEMU 7.2 write masks of the host bridge and PIIX3 (golden write probes)', () => {
    const m = new PcMachine({ ramSize: 16 << 20 });
    for (const [file, slot] of [['host-bridge.json', 0], ['isa-bridge.json', 1]] as const) {
      const golden = JSON.parse(readFileSync(join(GOLDEN, file), 'utf8')) as { writeProbe: { ones: string; zeros: string } };
      const ones = new Uint8Array(256);
      const zeros = new Uint8Array(256);
      for (let off = 0; off < 256; off += 4) {
        const saved = cfgRead(m, slot, 0, off, 4);
        cfgWrite(m, slot, 0, off, 4, 0xffff_ffff);
        new DataView(ones.buffer).setUint32(off, cfgRead(m, slot, 0, off, 4), true);
        cfgWrite(m, slot, 0, off, 4, 0);
        new DataView(zeros.buffer).setUint32(off, cfgRead(m, slot, 0, off, 4), true);
        cfgWrite(m, slot, 0, off, 4, saved);
      }
      expect(Buffer.from(ones).toString('hex')).toBe(golden.writeProbe.ones);
      expect(Buffer.from(zeros).toString('hex')).toBe(golden.writeProbe.zeros);
    }
  });

  it('shows the IDE (01.1) and PM (01.3) functions QEMU creates, and nothing else without devices', () => {
    const m = new PcMachine({ ramSize: 16 << 20 });
    const present: string[] = [];
    for (let slot = 0; slot < 32; slot++) {
      for (let fn = 0; fn < 8; fn++) {
        const id = cfgRead(m, slot, fn, 0, 4);
        if (id !== 0xffff_ffff) present.push(`${slot}.${fn}=${id.toString(16)}`);
      }
    }
    expect(present).toEqual(['0.0=12378086', '1.0=70008086', '1.1=70108086', '1.3=71138086']);
    // Captured from QEMU 7.2.22 (-M pc -m 16M -nodefaults).
    expect(dump(m, 1, 1)).toBe('8680107000008002008001010000000000000000000000000000000000000000010000000000000000000000f41a0011' + '00'.repeat(208));
    expect(dump(m, 1, 3).slice(0, 0x40 * 2)).toBe('8680137100008002030080060000000000000000000000000000000000000000000000000000000000000000f41a001100000000000000000000000000010000');
    expect(cfgRead(m, 1, 3, 0x40, 4)).toBe(1);
    expect(cfgRead(m, 1, 3, 0x90, 2)).toBe(0xb101);
  });

  it('host bridge reports RAM in 8 MiB units at 0x57 (capped at 255)', () => {
    expect(cfgRead(new PcMachine({ ramSize: 16 << 20 }), 0, 0, 0x57, 1)).toBe(2);
    expect(cfgRead(new PcMachine({ ramSize: 128 << 20 }), 0, 0, 0x57, 1)).toBe(16);
  });

  it('latches only dword writes to 0xcf8 and returns the register at any width, unshifted', () => {
    const m = new PcMachine();
    m.outl(0xcf8, 0x12345678);
    expect(m.inl(0xcf8)).toBe(0x12345678);
    expect(m.inw(0xcfa)).toBe(0x5678); // QEMU returns config_reg for any offset, masked
    expect(m.inb(0xcfb)).toBe(0x78);
    m.outw(0xcf8, 0x1111);
    m.outb(0xcfa, 0x22);
    expect(m.inl(0xcf8)).toBe(0x12345678);
    // The address register wins the whole dword although PIIX3's reset register claims 0xcf9.
    m.outl(0xcf8, 0x0000_0600);
    expect(m.inl(0xcf8)).toBe(0x600);
    expect(m.inb(0xcf9)).toBe(0);
  });

  it('reads all ones through the data port while the enable bit is clear, or for absent functions and buses', () => {
    const m = new PcMachine();
    m.outl(0xcf8, 0x7fff_fff0);
    expect(m.inl(0xcfc)).toBe(0xffff_ffff);
    expect(cfgRead(m, 5, 0, 0, 4)).toBe(0xffff_ffff);
    m.outl(0xcf8, 0x8001_0000);
    expect(m.inl(0xcfc)).toBe(0xffff_ffff);
  });

  it('handles byte/word offsets, unaligned and cross-port data accesses as QEMU does', () => {
    const m = new PcMachine();
    m.outl(0xcf8, 0x8000_0000);
    expect(m.inl(0xcfc)).toBe(0x1237_8086);
    expect(m.inw(0xcfe)).toBe(0x1237);
    expect(m.inb(0xcff)).toBe(0x12);
    expect(m.inw(0xcfd)).toBe(0x3780);
    expect(m.inl(0xcfd)).toBe(0xff12_3780); // the last byte is port 0xd00: unassigned
    m.outl(0xcf8, 0x8000_0003); // low bits of the address register are OR-ed into the offset
    expect(m.inl(0xcfc)).toBe(0x0000_0012);
    m.outl(0xcf8, 0x8000_00fd);
    expect(m.inl(0xcfc)).toBe(0x0000_0000); // 3 bytes left in the space
  });

  it('PIIX3 reset control at 0xcf9: byte-wide, every byte of a wider read is the register', () => {
    const m = new PcMachine();
    m.outb(0xcf9, 2);
    expect(m.inb(0xcf9)).toBe(2);
    expect(m.inl(0xcf9)).toBe(0x0202_0202);
    let resets = 0;
    m.piix3.onResetRequest = () => resets++;
    m.outb(0xcf9, 4);
    expect(resets).toBe(1);
  });
});

describe('pc: INTx through PIIX3 PIRQ routing', () => {
  it("uses QEMU's pc mapping pirq = (pin-1 + slot-1) & 3", () => {
    expect(piix3SlotGetPirq(2 << 3, 0)).toBe(1);
    expect(piix3SlotGetPirq(4 << 3, 0)).toBe(3); // slot 4 INTA# -> PIRQD
    expect(piix3SlotGetPirq(5 << 3, 0)).toBe(0);
    expect(piix3SlotGetPirq(4 << 3, 1)).toBe(0);
    expect(piix3SlotGetPirq(0, 0)).toBe(3);
  });

  it('routing registers reset to 0x80 (disabled): INTx reaches no IRQ until routed', () => {
    const m = new PcMachine();
    const fn = new TestFunction();
    m.addPciFunction(fn, { devfn: 4 << 3 });
    const events: string[] = [];
    expect(m.irqIntercept('in', 'ioapic')).toBeNull();
    m.onIrq = (n, l) => events.push(`${l ? 'raise' : 'lower'} ${n}`);
    for (let p = 0; p < 4; p++) expect(cfgRead(m, 1, 0, 0x60 + p, 1)).toBe(0x80);
    fn.setIrq(true);
    expect(events).toEqual([]);
    // Route PIRQD to IRQ 11: the already asserted line shows up at once.
    cfgWrite(m, 1, 0, 0x63, 1, 11);
    expect(events).toEqual(['raise 11']);
    fn.setIrq(false);
    expect(events).toEqual(['raise 11', 'lower 11']);
    fn.setIrq(true);
    // Moving the route moves the line (QEMU raises the new IRQ before lowering the old one).
    cfgWrite(m, 1, 0, 0x63, 1, 10);
    expect(events.slice(2)).toEqual(['raise 11', 'raise 10', 'lower 11']);
    expect(m.gsiLevel(10)).toBe(true);
    // The command register's INTx disable lowers it, clearing it raises it again.
    cfgWrite(m, 4, 0, 4, 2, 0x400);
    expect(events.at(-1)).toBe('lower 10');
    cfgWrite(m, 4, 0, 4, 2, 0);
    expect(events.at(-1)).toBe('raise 10');
  });

  it('ORs functions sharing a PIRQ, and PIRQs sharing an IRQ', () => {
    const m = new PcMachine();
    const a = new TestFunction();
    const b = new TestFunction();
    m.addPciFunction(a, { devfn: 2 << 3 }); // INTA# -> PIRQB
    m.addPciFunction(b, { devfn: 6 << 3 }); // INTA# -> PIRQB too ((0 + 6 - 1) & 3 = 1)
    cfgWrite(m, 1, 0, 0x61, 1, 5);
    a.setIrq(true);
    b.setIrq(true);
    a.setIrq(false);
    expect(m.gsiLevel(5)).toBe(true);
    b.setIrq(false);
    expect(m.gsiLevel(5)).toBe(false);
    const c = new TestFunction();
    m.addPciFunction(c, { devfn: 3 << 3 }); // PIRQC
    cfgWrite(m, 1, 0, 0x62, 1, 5);
    a.setIrq(true);
    c.setIrq(true);
    a.setIrq(false);
    expect(m.gsiLevel(5)).toBe(true);
    c.setIrq(false);
    expect(m.gsiLevel(5)).toBe(false);
  });

  it('reports IRQs only on the intercepted device, once per change', () => {
    const m = new PcMachine();
    expect(m.irqIntercept('in', '/machine/i440fx/ioapic')).toBeNull();
    expect(m.irqIntercept('in', 'ioapic')).toBeNull(); // the same device again: OK
    expect(m.irqIntercept('out', '/machine/unattached/device[3]')).toBe('IRQ intercept already enabled');
    expect(m.irqIntercept('in', 'nonexistent')).toBe('Unknown device');
    const events: string[] = [];
    m.onIrq = (n, l) => events.push(`${l ? 'raise' : 'lower'} ${n}`);
    expect(m.setIrqIn('ioapic', 'unnamed-gpio-in', 5, 1)).toBeNull();
    expect(m.setIrqIn('ioapic', 'unnamed-gpio-in', 5, 1)).toBeNull();
    expect(m.setIrqIn('ioapic', 'unnamed-gpio-in', 5, 0)).toBeNull();
    expect(events).toEqual(['raise 5', 'lower 5']);
    expect(m.setIrqIn('ioapic', 'unnamed-gpio-in', 24, 1)).toMatch(/out of range/);
    expect(m.setIrqIn('ioapic', 'foo', 1, 1)).toMatch(/No GPIO input 'foo'/);
  });
});

describe('pc: BARs, bus mastering, slots', () => {
  it('maps BARs where the driver programs them, once decoding is on, and moves them', () => {
    const m = new PcMachine();
    const fn = new TestFunction();
    m.addPciFunction(fn, { devfn: 3 << 3 });
    cfgWrite(m, 3, 0, 0x10, 4, 0xffff_ffff);
    expect(cfgRead(m, 3, 0, 0x10, 4)).toBe(0xffff_ffe1); // 32-byte I/O BAR
    cfgWrite(m, 3, 0, 0x14, 4, 0xffff_ffff);
    expect(cfgRead(m, 3, 0, 0x14, 4)).toBe(0xffff_f000);
    cfgWrite(m, 3, 0, 0x10, 4, 0xc000);
    cfgWrite(m, 3, 0, 0x14, 4, 0xe000_0000);
    expect(m.inb(0xc000)).toBe(0xff); // command register still 0
    expect(m.readl(0xe000_0000)).toBe(0);
    cfgWrite(m, 3, 0, 4, 2, 3);
    expect(m.inb(0xc004)).toBe(0xab);
    expect(m.readb(0xe000_0010)).toBe(0xcd);
    cfgWrite(m, 3, 0, 0x14, 4, 0xe010_0000);
    expect(m.readb(0xe000_0010)).toBe(0);
    expect(m.readb(0xe010_0010)).toBe(0xcd);
    cfgWrite(m, 3, 0, 4, 2, 0);
    expect(m.readb(0xe010_0010)).toBe(0);
  });

  it('lets a BAR placed over the configuration ports shadow them, as in QEMU', () => {
    const m = new PcMachine();
    const fn = new TestFunction();
    m.addPciFunction(fn, { devfn: 3 << 3 });
    cfgWrite(m, 3, 0, 0x10, 4, 0xce0); // 0xce0..0xcff: over the address and data ports
    cfgWrite(m, 3, 0, 4, 2, 1);
    fn.log.length = 0;
    m.outl(0xcf8, 0x8000_0000);
    expect(m.inl(0xcf8)).toBe(0xab);
    expect(m.inl(0xcfc)).toBe(0xab);
    expect(fn.log).toEqual(['io w24/4=2147483648', 'io r24/4', 'io r28/4']);
    // PIIX3's reset register (0xcf9) was mapped before the BAR: the newer window wins.
    expect(m.inb(0xcf9)).toBe(0xab);
  });

  it('delivers bus-master writes (MSI-X messages) into RAM or a window', () => {
    const m = new PcMachine();
    const fn = new TestFunction();
    m.addPciFunction(fn, { devfn: 3 << 3 });
    m.pci.dmaWrite(fn, 0x5000, new Uint8Array([0x78, 0x56, 0x34, 0x12]));
    expect(m.readl(0x5000)).toBe(0x12345678);
    cfgWrite(m, 3, 0, 0x14, 4, 0xe000_0000);
    cfgWrite(m, 3, 0, 4, 2, 2);
    m.pci.dmaWrite(fn, 0xe000_0100, new Uint8Array([1, 0, 0, 0]));
    expect(fn.log.at(-1)).toBe('mem w256/4=1');
  });

  it('places functions from slot 02.0 upward, honours addr=, and refuses taken places with QEMU messages', () => {
    const m = new PcMachine();
    expect(m.addPciFunction(new TestFunction())).toBe(2 << 3);
    expect(m.addPciFunction(new TestFunction(), { devfn: 5 << 3 })).toBe(5 << 3);
    expect(m.addPciFunction(new TestFunction())).toBe(3 << 3);
    expect(() => m.addPciFunction(new TestFunction(), { devfn: 0, typeName: 'virtio-rng-pci' })).toThrow(
      'PCI: slot 0 function 0 not available for virtio-rng-pci, in use by i440FX,id=(null)',
    );
    expect(() => m.addPciFunction(new TestFunction(), { devfn: (5 << 3) | 1 })).toThrow("PCI: single function device can't be populated in function 5.1");
    // Function 1 alone is fine; function 0 then has to be multifunction.
    m.addPciFunction(new TestFunction(), { devfn: (9 << 3) | 1 });
    expect(() => m.addPciFunction(new TestFunction(), { devfn: 9 << 3 })).toThrow('PCI: 9.0 indicates single function, but 9.1 is already populated.');
  });

  it('runs a virtio-rng-pci (legacy, INTx) request end to end through the machine', () => {
    const m = new PcMachine({ ramSize: 16 << 20 });
    const rng = new VirtIORng({ memory: m.sys.ram, clock: m.clock, maxBytes: 2 ** 63, entropy: { fill: (b) => b.fill(0x42) } });
    const proxy = createVirtioPci(rng, { disableModern: true, vectors: 0 });
    m.addPciFunction(proxy, { devfn: 4 << 3 });
    m.irqIntercept('in', 'ioapic');
    const events: string[] = [];
    m.onIrq = (n, l) => events.push(`${l ? 'raise' : 'lower'} ${n}`);
    cfgWrite(m, 4, 0, 0x10, 4, 0xc000);
    cfgWrite(m, 4, 0, 4, 2, 7);
    cfgWrite(m, 1, 0, 0x63, 1, 11);
    const io = 0xc000;
    m.outb(io + 0x12, 1);
    m.outb(io + 0x12, 3);
    m.outw(io + 0x0e, 0);
    expect(m.inw(io + 0x0c)).toBe(8);
    m.outl(io + 0x08, 0x10000 >> 12);
    m.outb(io + 0x12, 7);
    // desc 0: 16 bytes at 0x20000, device-writable; avail ring at 0x10080; used at 0x11000.
    m.writeq(0x10000, 0x20000n);
    m.writel(0x10008, 16);
    m.writew(0x1000c, 2);
    m.writew(0x10084, 0);
    m.writew(0x10082, 1);
    m.outw(io + 0x10, 0);
    expect(m.readw(0x11002)).toBe(1);
    expect(m.readl(0x11008)).toBe(16);
    expect(m.readl(0x20000)).toBe(0x42424242);
    expect(events).toEqual(['raise 11']);
    expect(m.inb(io + 0x13)).toBe(1);
    expect(events).toEqual(['raise 11', 'lower 11']);
  });

  it('machine reset puts the chipset and functions back to power-on state', () => {
    const m = new PcMachine();
    const fn = new TestFunction();
    m.addPciFunction(fn, { devfn: 3 << 3 });
    cfgWrite(m, 1, 0, 0x60, 4, 0x0b0a0905);
    cfgWrite(m, 3, 0, 0x10, 4, 0xc000);
    cfgWrite(m, 3, 0, 4, 2, 1);
    m.reset();
    expect(cfgRead(m, 1, 0, 0x60, 4)).toBe(0x8080_8080);
    expect(cfgRead(m, 3, 0, 4, 2)).toBe(0);
    expect(cfgRead(m, 3, 0, 0x10, 4)).toBe(1);
    expect(m.inb(0xc000)).toBe(0xff);
  });
});

describe('pc: memory map (as measured on QEMU 7.2 with -m 16M and a 64 KiB firmware)', () => {
  const fw = new Uint8Array(0x10000).fill(0xf4);
  fw.set([0xfa, 0xf4, 0xeb, 0xfd], 0xfff0);

  it('RAM from 0 (incl. 0xa0000-0xbffff and 0xe0000-0xeffff), read-only pc.rom and firmware, nothing past RAM', () => {
    const m = new PcMachine({ ramSize: 16 << 20, bios: fw });
    const probe = (a: number) => {
      m.writel(a, 0x12345678);
      return m.readl(a);
    };
    expect(probe(0x9fffc)).toBe(0x12345678);
    expect(probe(0xa0000)).toBe(0x12345678);
    expect(probe(0xc0000)).toBe(0);
    expect(probe(0xdfffc)).toBe(0);
    expect(probe(0xe0000)).toBe(0x12345678);
    expect(probe(0xffff0)).toBe(0xfdebf4fa);
    expect(probe(0xffff_fff0)).toBe(0xfdebf4fa);
    expect(probe(0xfffe_0000)).toBe(0);
    expect(probe(0xfffffc)).toBe(0x12345678);
    expect(probe(0x100_0000)).toBe(0);
  });

  it('the IOAPIC register window answers at 0xfec00000', () => {
    const m = new PcMachine();
    m.writel(0xfec0_0000, 1);
    expect(m.readl(0xfec0_0010)).toBe(0x0017_0020);
    m.writel(0xfec0_0000, 0x10);
    expect(m.readl(0xfec0_0010)).toBe(0x1_0000); // entry 0 masked
    m.writel(0xfec0_0000, 0);
    m.writel(0xfec0_0010, 0x1234_5678);
    expect(m.readl(0xfec0_0010)).toBe(0x0200_0000);
  });
});
