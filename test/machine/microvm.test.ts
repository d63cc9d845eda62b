// The microvm reference machine (src/machine/microvm.ts): transports, GSIs and QOM names per
// option, as checked on QEMU 7.2.22 (shared/notes/qemu-oracle.md §2.3).
import { describe, expect, it } from 'vitest';
import { VirtIORng } from '../../src/devices/rng.js';
import { MicrovmMachine, MICROVM_VIRTIO_MMIO_BASE } from '../../src/machine/microvm.js';
import { QomObject, resolveQomPath } from '../../src/machine/qom.js';

const MAGIC = 0x74726976;
const VENDOR = 0x554d4551;

function rng(m: MicrovmMachine): VirtIORng {
  return new VirtIORng({ memory: m.sys.ram, clock: m.clock, maxBytes: 2 ** 63, entropy: { fill: (b) => b.fill(7) } });
}

describe('microvm: transports per option', () => {
  const cases = [
    { name: 'default (ACPI, second IOAPIC)', opts: {}, count: 24, gsi0: 24, ioapic: '/machine/unattached/device[3]', pin0: 0, firstMmio: 4 },
    { name: 'ioapic2=off', opts: { ioapic2: false }, count: 8, gsi0: 16, ioapic: '/machine/ioapic', pin0: 16, firstMmio: 3 },
    { name: 'acpi=off', opts: { acpi: false }, count: 8, gsi0: 5, ioapic: '/machine/ioapic', pin0: 5, firstMmio: 3 },
    { name: 'acpi=off,ioapic2=on (no second IOAPIC without ACPI)', opts: { acpi: false, ioapic2: true }, count: 8, gsi0: 5, ioapic: '/machine/ioapic', pin0: 5, firstMmio: 3 },
  ];
  for (const c of cases) {
    it(`${c.name}: ${c.count} transports on GSI ${c.gsi0}+i, intercepted on ${c.ioapic}`, () => {
      const m = new MicrovmMachine({ ramSize: 16 << 20, ...c.opts });
      expect(m.transportCount).toBe(c.count);
      expect(m.gsiOf(0)).toBe(c.gsi0);
      expect(m.virtioIoapicPath).toBe(c.ioapic);
      expect(m.transportPath(0)).toBe(`/machine/unattached/device[${c.firstMmio}]`);
      for (let i = 0; i < c.count; i++) {
        const base = MICROVM_VIRTIO_MMIO_BASE + 0x200 * i;
        expect([m.readl(base), m.readl(base + 4), m.readl(base + 8), m.readl(base + 0xc)]).toEqual([MAGIC, 1, 0, VENDOR]);
      }
      // Past the last transport: unassigned.
      expect(m.readl(MICROVM_VIRTIO_MMIO_BASE + 0x200 * c.count)).toBe(0);
      // The last transport's line is pin (pin0 + count - 1) on the intercepted IOAPIC.
      const slot = m.addDevice(rng(m));
      expect(slot.index).toBe(c.count - 1);
      expect(slot.gsi).toBe(c.gsi0 + c.count - 1);
      const events: string[] = [];
      m.onIrq = (n, l) => events.push(`${l ? 'raise' : 'lower'} ${n}`);
      expect(m.irqIntercept('in', c.ioapic)).toBeNull();
      slot.transport.device!.isr = 1;
      slot.transport.device!.updateIrq();
      expect(events).toEqual([`raise ${c.pin0 + c.count - 1}`]);
    });
  }

  it('names the second IOAPIC only as /machine/unattached/device[3]; `ioapic` is the first one', () => {
    const m = new MicrovmMachine();
    const list = m.unattached.list();
    expect(list.filter((p) => p.type === 'child<ioapic>')).toEqual([{ name: 'device[3]', type: 'child<ioapic>' }]);
    expect(list.filter((p) => p.type === 'child<virtio-mmio>').map((p) => p.name)).toEqual(Array.from({ length: 24 }, (_, i) => `device[${4 + i}]`));
    expect(resolveQomPath(m.qomRoot, 'ioapic').object).toBe(m.ioapic);
    expect(resolveQomPath(m.qomRoot, 'device[3]').object).toBe(m.ioapic2);
    // With a fourth anonymous -device, device[3] becomes ambiguous, as in QEMU.
    for (let i = 0; i < 4; i++) m.addDevice(rng(m), { qom: new QomObject('virtio-rng-device') });
    expect(resolveQomPath(m.qomRoot, 'device[3]')).toEqual({ object: undefined, ambiguous: true });
    // The first IOAPIC does not see virtio-mmio lines when the second one carries them.
    const events: number[] = [];
    m.onIrq = (n) => events.push(n);
    m.irqIntercept('in', 'ioapic');
    const t = m.transports[23]!;
    t.device!.isr = 1;
    t.device!.updateIrq();
    expect(events).toEqual([]);
  });

  it('fills transports from the last one down, honours bus=virtio-mmio-bus.N, and refuses when full', () => {
    const m = new MicrovmMachine({ acpi: false });
    expect(m.addDevice(rng(m)).index).toBe(7);
    expect(m.addDevice(rng(m)).index).toBe(6);
    expect(m.addDevice(rng(m), { index: 2 }).index).toBe(2);
    expect(() => m.addDevice(rng(m), { index: 2 })).toThrow("Bus 'virtio-mmio-bus.2' is full");
    expect(() => m.addDevice(rng(m), { index: 8 })).toThrow("Bus 'virtio-mmio-bus.8' not found");
    for (const i of [5, 4, 3, 1, 0]) expect(m.addDevice(rng(m)).index).toBe(i);
    expect(() => m.addDevice(rng(m), { typeName: 'virtio-rng-device' })).toThrow("No 'virtio-bus' bus found for device 'virtio-rng-device'");
    expect(m.readl(MICROVM_VIRTIO_MMIO_BASE + 0x200 * 7 + 8)).toBe(4);
  });

  it('version 2 with forceLegacy false, and empty transports answer at any width as QEMU does', () => {
    const m = new MicrovmMachine({ forceLegacy: false });
    expect(m.readl(MICROVM_VIRTIO_MMIO_BASE + 4)).toBe(2);
    expect(m.readw(MICROVM_VIRTIO_MMIO_BASE)).toBe(0x6976);
    expect(m.readq(MICROVM_VIRTIO_MMIO_BASE)).toBe((2n << 32n) | BigInt(MAGIC));
    expect(m.readl(MICROVM_VIRTIO_MMIO_BASE + 0x10)).toBe(0);
  });

  it('completes a virtio-rng request on the last transport and raises pin 23 of the second IOAPIC', () => {
    const m = new MicrovmMachine({ ramSize: 16 << 20 });
    m.addDevice(rng(m));
    const base = MICROVM_VIRTIO_MMIO_BASE + 0x200 * 23;
    const events: string[] = [];
    m.onIrq = (n, l) => events.push(`${l ? 'raise' : 'lower'} ${n}`);
    expect(m.irqIntercept('in', '/machine/unattached/device[3]')).toBeNull();
    m.writel(base + 0x70, 1);
    m.writel(base + 0x70, 3);
    m.writel(base + 0x28, 4096);
    m.writel(base + 0x30, 0);
    expect(m.readl(base + 0x34)).toBe(1024);
    m.writel(base + 0x38, 8);
    m.writel(base + 0x3c, 4096);
    m.writel(base + 0x40, 0x10);
    m.writel(base + 0x70, 7);
    m.writeq(0x10000, 0x20000n);
    m.writel(0x10008, 16);
    m.writew(0x1000c, 2);
    m.writew(0x10084, 0);
    m.writew(0x10082, 1);
    m.writel(base + 0x50, 0);
    expect(m.readw(0x11002)).toBe(1);
    expect(m.readl(0x11008)).toBe(16);
    expect([...m.readBytes(0x20000, 16)]).toEqual(new Array(16).fill(7));
    expect(events).toEqual(['raise 23']);
    expect(m.readl(base + 0x60)).toBe(1);
    m.writel(base + 0x64, 1);
    expect(events).toEqual(['raise 23', 'lower 23']);
  });

  it('has RAM everywhere below 1 MiB and a writable firmware alias at 0xf0000 / 4 GiB - size', () => {
    const fw = new Uint8Array(0x10000).fill(0xf4);
    const m = new MicrovmMachine({ ramSize: 16 << 20, bios: fw });
    m.writel(0xc0000, 0x11223344);
    expect(m.readl(0xc0000)).toBe(0x11223344);
    expect(m.readl(0xf0000)).toBe(0xf4f4f4f4);
    m.writel(0xf0000, 0x12345678);
    expect(m.readl(0xffff_0000)).toBe(0x12345678);
    // The second IOAPIC's registers at 0xfec10000.
    m.writel(0xfec1_0000, 1);
    expect(m.readl(0xfec1_0010)).toBe(0x0017_0020);
  });
});
