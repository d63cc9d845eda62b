// PCIDevice: QEMU 7.2's generic PCI function (hw/pci/pci.c) — masks, BARs, capabilities, INTx,
// bus mastering and reset.
import { describe, expect, it } from 'vitest';
import type { AccessSize } from '../../../src/machine/address-space.js';
import { BarRegion, PCIDevice, PCI_CAP_ID_VNDR } from '../../../src/bus/pci/pci-device.js';
import { GuestMemory } from '../../../src/memory/guest-memory.js';
import { FakePciHost } from '../../support/pci-host.js';

/** A register file that records aligned accesses (what a device model sees). */
function recorder(size: number, fill = 0) {
  const log: string[] = [];
  const region = new BarRegion(
    size,
    fill,
    (o, s) => {
      log.push(`r${o}/${s}`);
      return 0x11 * (o + 1);
    },
    (o, s, v) => void log.push(`w${o}/${s}=${v.toString(16)}`),
  );
  return { region, log };
}

function device(): { dev: PCIDevice; host: FakePciHost } {
  const dev = new PCIDevice({ name: 'test-dev', vendorId: 0x8086, deviceId: 0x1234, revision: 3, classId: 0x0200 });
  const host = new FakePciHost(GuestMemory.ofSize(1 << 20));
  host.plug(dev, 3 << 3);
  return { dev, host };
}

describe('PCIDevice: header and masks (pci_init_cmask/wmask/w1cmask)', () => {
  it('ids, class, revision and QEMU default subsystem ids', () => {
    const { dev } = device();
    expect(dev.configRead(0, 4)).toBe(0x1234_8086);
    expect(dev.configRead(8, 4)).toBe(0x0200_0003);
    expect(dev.configRead(0x2c, 4)).toBe(0x1100_1af4);
    expect(dev.configRead(0x3c, 4)).toBe(0);
    expect(dev.devfn).toBe(3 << 3);
  });

  it('command: only IO, MEM, MASTER, SERR and INTX_DISABLE are writable', () => {
    const { dev } = device();
    dev.configWrite(4, 2, 0xffff);
    expect(dev.configRead(4, 2)).toBe(0x0507);
    dev.configWrite(4, 2, 0);
    expect(dev.configRead(4, 2)).toBe(0);
  });

  it('status: read-only except write-one-to-clear error bits', () => {
    const { dev } = device();
    dev.config[7] = 0xf9; // all error bits set (as a device model would)
    dev.configWrite(6, 2, 0x0000);
    expect(dev.configRead(6, 2)).toBe(0xf900);
    dev.configWrite(6, 2, 0x0800);
    expect(dev.configRead(6, 2)).toBe(0xf100);
    dev.configWrite(6, 2, 0xffff);
    expect(dev.configRead(6, 2)).toBe(0x0000);
  });

  it('ids, class, header type and capability pointer are read-only; line and cache line are writable', () => {
    const { dev } = device();
    const before = Array.from({ length: 16 }, (_, i) => dev.configRead(i * 4, 4));
    for (const o of [0x00, 0x08, 0x2c, 0x34]) dev.configWrite(o, 4, 0xffff_ffff);
    expect(dev.configRead(0x00, 4)).toBe(before[0]);
    expect(dev.configRead(0x08, 4)).toBe(before[2]);
    dev.configWrite(0x0c, 4, 0xffff_ffff);
    expect(dev.configRead(0x0c, 4)).toBe(0x0000_00ff);
    dev.configWrite(0x3c, 4, 0xffff_ffff);
    expect(dev.configRead(0x3c, 4)).toBe(0x0000_00ff);
  });

  it('device-specific space past the header is writable until a capability claims it', () => {
    const { dev } = device();
    dev.configWrite(0x80, 4, 0xdead_beef);
    expect(dev.configRead(0x80, 4)).toBe(0xdead_beef);
    const at = dev.addCapability(PCI_CAP_ID_VNDR, 0, 8);
    expect(at).toBe(0x40);
    dev.configWrite(0x40, 4, 0xffff_ffff);
    expect(dev.configRead(0x40, 4)).toBe(0x0000_0009);
  });

  it('accesses outside the 256 bytes read all ones and are ignored, never throw', () => {
    const { dev } = device();
    expect(dev.configRead(0xfe, 4)).toBe(0xffff_ffff);
    expect(dev.configRead(256, 1)).toBe(0xff);
    expect(dev.configRead(-1, 2)).toBe(0xffff);
    expect(dev.configRead(1.5, 1)).toBe(0xff);
    expect(() => dev.configWrite(0xfd, 4, 1)).not.toThrow();
    expect(() => dev.configWrite(300, 1, 1)).not.toThrow();
  });
});

describe('PCIDevice: capability list (pci_add_capability)', () => {
  it('links new capabilities at the head, first-fit from 0x40, dword-aligned use', () => {
    const { dev } = device();
    expect(dev.configRead(6, 2) & 0x10).toBe(0);
    const a = dev.addCapability(PCI_CAP_ID_VNDR, 0, 16);
    const b = dev.addCapability(PCI_CAP_ID_VNDR, 0, 20);
    const c = dev.addCapability(0x11, 0, 12);
    expect([a, b, c]).toEqual([0x40, 0x50, 0x64]);
    expect(dev.configRead(6, 2) & 0x10).toBe(0x10);
    expect(dev.configRead(0x34, 1)).toBe(0x64);
    expect(dev.configRead(0x65, 1)).toBe(0x50);
    expect(dev.configRead(0x51, 1)).toBe(0x40);
    expect(dev.configRead(0x41, 1)).toBe(0);
    expect(dev.findCapability(0x11)).toBe(0x64);
    expect(dev.findCapability(0x05)).toBe(0);
  });

  it('refuses an explicit offset that overlaps (a host programming error)', () => {
    const { dev } = device();
    dev.addCapability(PCI_CAP_ID_VNDR, 0x40, 16);
    expect(() => dev.addCapability(PCI_CAP_ID_VNDR, 0x48, 8)).toThrow(/overlaps/);
  });

  it('a guest cannot loop the capability walk: the list pointer and next bytes are read-only', () => {
    const { dev } = device();
    const a = dev.addCapability(PCI_CAP_ID_VNDR, 0, 16);
    dev.configWrite(a, 2, 0x4009);
    dev.configWrite(0x34, 1, 0x41);
    expect(dev.configRead(a + 1, 1)).toBe(0);
    expect(dev.configRead(0x34, 1)).toBe(a);
  });
});

describe('PCIDevice: BARs (pci_register_bar, pci_bar_address, pci_update_mappings)', () => {
  function withBars() {
    const { dev, host } = device();
    const io = recorder(32, 0xffff_ffff);
    const m32 = recorder(4096);
    const m64 = recorder(16384);
    dev.registerBar(0, 'io', 32, io.region);
    dev.registerBar(1, 'mem32', 4096, m32.region);
    dev.registerBar(4, 'mem64', 16384, m64.region, true);
    return { dev, host, io, m32, m64 };
  }

  it('type bits and sizing by writing all ones', () => {
    const { dev } = withBars();
    expect(dev.configRead(0x10, 4)).toBe(1);
    expect(dev.configRead(0x14, 4)).toBe(0);
    expect(dev.configRead(0x20, 4)).toBe(0x0c);
    expect(dev.configRead(0x24, 4)).toBe(0);
    const probe = (o: number) => {
      const orig = dev.configRead(o, 4);
      dev.configWrite(o, 4, 0xffff_ffff);
      const v = dev.configRead(o, 4);
      dev.configWrite(o, 4, orig);
      return v;
    };
    expect(probe(0x10)).toBe(0xffff_ffe1);
    expect(probe(0x14)).toBe(0xffff_f000);
    expect(probe(0x18)).toBe(0);
    expect(probe(0x20)).toBe(0xffff_c00c);
    expect(probe(0x24)).toBe(0xffff_ffff);
    expect(probe(0x30)).toBe(0);
  });

  it('a BAR decodes only with its command bit, a non-zero address, and no wrap', () => {
    const { dev, host } = withBars();
    dev.configWrite(0x10, 4, 0xc000);
    dev.configWrite(0x14, 4, 0xe000_0000);
    dev.configWrite(0x20, 4, 0x0000_0000);
    dev.configWrite(0x24, 4, 0x1);
    expect(dev.activeBars()).toEqual([]);
    dev.configWrite(4, 2, 1);
    expect(dev.activeBars().map((b) => [b.index, b.type, b.addr, b.size])).toEqual([[0, 'io', 0xc000, 32]]);
    dev.configWrite(4, 2, 3);
    expect(dev.activeBars().map((b) => [b.index, b.type, b.addr, b.size, b.prefetchable])).toEqual([
      [0, 'io', 0xc000, 32, false],
      [1, 'mem32', 0xe000_0000, 4096, false],
      [4, 'mem64', 0x1_0000_0000, 16384, true],
    ]);
    expect(host.mapped(dev)).toHaveLength(3);
    // Address 0 does not decode on the pc machine; neither does a 32-bit BAR that wraps.
    dev.configWrite(0x10, 4, 0);
    dev.configWrite(0x14, 4, 0xffff_f000);
    expect(dev.activeBars().map((b) => b.index)).toEqual([4]);
    // The I/O BAR keeps all 32 address bits (QEMU does not limit it to 16).
    dev.configWrite(0x10, 4, 0x1_0000);
    expect(dev.barAddress(0)).toBe(0x1_0000n);
    dev.configWrite(0x10, 4, 0xffff_ffe0);
    expect(dev.barAddress(0)).toBeUndefined();
  });

  it('partial (byte) BAR writes re-decode, and the host hears about every change once', () => {
    const { dev, host } = withBars();
    dev.configWrite(4, 2, 3);
    const n = host.barsChangedCount;
    dev.configWrite(0x17, 1, 0xe0);
    expect(dev.barAddress(1)).toBe(0xe000_0000n);
    expect(host.barsChangedCount).toBe(n + 1);
    dev.configWrite(0x16, 1, 0x10);
    expect(dev.barAddress(1)).toBe(0xe010_0000n);
    dev.configWrite(0x16, 1, 0x10); // no change: no call
    expect(host.barsChangedCount).toBe(n + 2);
    dev.configWrite(4, 2, 0);
    expect(dev.activeBars()).toEqual([]);
    expect(host.mapped(dev)).toHaveLength(0);
  });

  it('a 64-bit BAR above 2^53 decodes (as in QEMU) but is not offered to the host', () => {
    const { dev } = withBars();
    dev.configWrite(0x20, 4, 0);
    dev.configWrite(0x24, 4, 0xffff_0000);
    dev.configWrite(4, 2, 2);
    expect(dev.barAddress(4)).toBe(0xffff_0000_0000_0000n);
    expect(dev.activeBars().map((b) => b.index)).toEqual([]);
    dev.configWrite(0x24, 4, 0xffff_ffff);
    dev.configWrite(0x20, 4, 0xffff_c000);
    expect(dev.barAddress(4)).toBeUndefined(); // last address would be 2^64 - 1
  });

  it('refuses bad registrations (host errors)', () => {
    const { dev } = device();
    const r = recorder(16).region;
    expect(() => dev.registerBar(6, 'io', 16, r)).toThrow();
    expect(() => dev.registerBar(5, 'mem64', 16, r)).toThrow();
    expect(() => dev.registerBar(0, 'io', 24, r)).toThrow();
    expect(() => dev.registerBar(0, 'mem32', 8, r)).toThrow();
  });
});

describe('BarRegion: accesses reach the device as QEMU\'s memory core splits them', () => {
  it('aligned accesses pass through', () => {
    const { region, log } = recorder(32);
    expect(region.read(4, 4)).toBe(0x55);
    region.write(8, 2, 0x1234);
    expect(log).toEqual(['r4/4', 'w8/2=1234']);
  });

  it('unaligned accesses split into naturally aligned pieces, combined little-endian', () => {
    const { region, log } = recorder(32);
    const v = region.read(1, 4);
    expect(log).toEqual(['r1/1', 'r2/2', 'r4/1']);
    expect(v).toBe(((0x22 & 0xff) | ((0x33 & 0xffff) << 8) | ((0x55 & 0xff) << 24)) >>> 0);
    log.length = 0;
    region.write(3, 2, 0xabcd);
    expect(log).toEqual(['w3/1=cd', 'w4/1=ab']);
  });

  it('pieces outside the region read the fill value and are not written', () => {
    const io = recorder(32, 0xffff_ffff);
    expect(io.region.read(30, 4)).toBe((0xffff_0000 | ((0x11 * 31) & 0xffff)) >>> 0);
    expect(io.region.read(32, 1)).toBe(0xff);
    io.region.write(31, 2, 0x1234);
    expect(io.log).toEqual(['r30/2', 'w31/1=34']);
    const mem = recorder(16, 0);
    expect(mem.region.read(16, 4)).toBe(0);
    expect(mem.region.read(-4, 4)).toBe(0);
    expect(mem.region.read(0, 3 as AccessSize)).toBe(0);
  });
});

describe('PCIDevice: INTx (pci_irq_handler, INTX_DISABLE, PCI_STATUS_INTERRUPT)', () => {
  it('the pin raises the host line and sets the status interrupt bit', () => {
    const { dev, host } = device();
    dev.config[0x3d] = 2; // INTB#
    dev.setIrq(true);
    expect(dev.configRead(6, 2) & 0x08).toBe(0x08);
    expect(host.intx[2]).toBe(true);
    dev.setIrq(true); // no change, no call
    expect(host.intxLog).toEqual([{ pin: 2, level: true }]);
    dev.setIrq(false);
    expect(dev.configRead(6, 2) & 0x08).toBe(0);
    expect(host.intx[2]).toBe(false);
  });

  it('INTX_DISABLE masks the line (the status bit still follows the device) and unmasking re-raises', () => {
    const { dev, host } = device();
    dev.config[0x3d] = 1;
    dev.configWrite(4, 2, 0x400);
    dev.setIrq(true);
    expect(dev.configRead(6, 2) & 0x08).toBe(0x08);
    expect(host.intx[1]).toBe(false);
    dev.configWrite(4, 2, 0);
    expect(host.intx[1]).toBe(true);
    dev.configWrite(4, 2, 0x400);
    expect(host.intx[1]).toBe(false);
    dev.setIrq(false);
    dev.configWrite(4, 2, 0);
    expect(host.intx[1]).toBe(false);
  });

  it('the status interrupt bit is read-only to the guest', () => {
    const { dev } = device();
    dev.config[0x3d] = 1;
    dev.configWrite(6, 2, 0x08);
    expect(dev.configRead(6, 2) & 0x08).toBe(0);
    dev.setIrq(true);
    dev.configWrite(6, 2, 0xffff);
    expect(dev.configRead(6, 2) & 0x08).toBe(0x08);
  });
});

describe('PCIDevice: bus mastering', () => {
  it('DMA (an MSI write) goes through only with bus mastering on', () => {
    const { dev, host } = device();
    expect(dev.dmaWrite32(0x100n, 0xabcd)).toBe(false);
    dev.configWrite(4, 2, 4);
    expect(dev.busMasterEnabled).toBe(true);
    expect(dev.dmaWrite32(0x100n, 0xabcd)).toBe(true);
    expect(host.dma).toEqual([{ addr: 0x100, data: new Uint8Array([0xcd, 0xab, 0, 0]), value: 0xabcd }]);
    expect(host.ram!.read32(0x100)).toBe(0xabcd);
    expect(dev.dmaWrite32(2n ** 60n, 1)).toBe(false);
    dev.configWrite(4, 2, 0);
    expect(dev.dmaWrite32(0x100n, 1)).toBe(false);
  });
});

describe('PCIDevice: reset (pci_do_device_reset)', () => {
  it('back to power-on values, INTx deasserted; device-specific bytes survive as in QEMU', () => {
    const { dev, host } = device();
    const r = recorder(4096).region;
    dev.registerBar(1, 'mem32', 4096, r);
    dev.registerBar(4, 'mem64', 16384, recorder(16384).region, true);
    dev.config[0x3d] = 1;
    const powerOn = dev.config.slice();
    dev.configWrite(0x14, 4, 0xe000_0000);
    dev.configWrite(0x20, 4, 0xe100_0000);
    dev.configWrite(0x24, 4, 0x1);
    dev.configWrite(0x0c, 1, 0x10);
    dev.configWrite(0x3c, 1, 11);
    dev.configWrite(4, 2, 0x0507);
    dev.configWrite(0x80, 4, 0x1234_5678);
    dev.setIrq(true);
    expect(host.intx[1]).toBe(false); // INTX_DISABLE is set
    dev.configWrite(4, 2, 0x0107);
    expect(host.intx[1]).toBe(true);
    expect(dev.activeBars()).toHaveLength(2);
    dev.reset();
    expect(host.intx[1]).toBe(false);
    expect(dev.irqState).toBe(0);
    expect(dev.activeBars()).toEqual([]);
    expect(host.mapped(dev)).toHaveLength(0);
    const expected = powerOn.slice();
    expected.set([0x78, 0x56, 0x34, 0x12], 0x80);
    expect(Array.from(dev.config)).toEqual(Array.from(expected));
    // QEMU leaves the bus-master address space enabled across a reset until the next command write.
    expect(dev.busMasterEnabled).toBe(true);
    dev.configWrite(4, 2, 0);
    expect(dev.busMasterEnabled).toBe(false);
  });
});

describe('PCIDevice: migration config check (get_pci_config_device)', () => {
  it('read-only bytes must match; writable and W1C bytes may differ', () => {
    const { dev } = device();
    dev.registerBar(1, 'mem32', 4096, recorder(4096).region);
    const c = dev.savedConfig();
    expect(dev.checkLoadedConfig(c)).toBe(-1);
    c[0x04] = 0x07; // command: writable
    c[0x14] = 0x00;
    c[0x17] = 0xe0; // BAR address bits: writable
    c[0x07] = 0x80; // detected parity: W1C
    expect(dev.checkLoadedConfig(c)).toBe(-1);
    c[0x02] ^= 1; // device id
    expect(dev.checkLoadedConfig(c)).toBe(2);
    c[0x02] ^= 1;
    c[0x14] = 0x08; // BAR type bit (prefetch) is read-only
    expect(dev.checkLoadedConfig(c)).toBe(0x14);
  });

  it('the saved config clears the status interrupt bit; applying restores it from irq_state', () => {
    const { dev, host } = device();
    dev.config[0x3d] = 1;
    dev.setIrq(true);
    expect(dev.savedConfig()[6]! & 0x08).toBe(0);
    expect(dev.config[6]! & 0x08).toBe(0x08);
    const other = device();
    other.dev.config[0x3d] = 1;
    const c = dev.savedConfig();
    other.dev.applyLoadedConfig(c, 1);
    expect(other.dev.config[6]! & 0x08).toBe(0x08);
    expect(other.host.intx[1]).toBe(true);
    void host;
  });
});
