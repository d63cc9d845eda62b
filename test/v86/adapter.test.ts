// The v86 adapter on a real v86 running SeaBIOS: the BIOS enumerates our functions, sizes and
// places their BARs and routes their PIRQ; then the test plays the guest through v86's own
// dispatch (port table, MMIO blocks with signed addresses, 16-bit MMIO reads split in two as
// v86's wasm does, config mechanism #1) and checks bytes, interrupts and JIT invalidations.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { piixIntxIrq } from '../../src/bus/pci/piix.js';
import { attachToV86, v86Host, v86Memory, v86VirtioPci, type V86PciHost } from '../../src/v86.js';
import type { VirtIOPCIProxy } from '../../src/bus/virtio-pci.js';
import { findBios, startBiosMachine, type BiosMachine } from './support/seabios-machine.js';

const bios = findBios();
const SLOT_T = 13; // transitional rng, queue of 256
const SLOT_M = 14; // modern-only rng
const ACK = 1;
const DRIVER = 2;
const DRIVER_OK = 4;
const FEATURES_OK = 8;

/** A guest's view of one function through v86. */
class Guest {
  constructor(readonly m: BiosMachine, readonly devfn: number) {}
  private addr(off: number): void {
    this.m.cpu.io.port_write32(0xcf8, (0x8000_0000 | (this.devfn << 8) | (off & 0xfc)) | 0);
  }
  cfgRead(off: number, size: 1 | 2 | 4): number {
    this.addr(off);
    const io = this.m.cpu.io;
    const p = 0xcfc + (off & 3);
    return size === 1 ? io.port_read8(p) : size === 2 ? io.port_read16(p) : io.port_read32(p) >>> 0;
  }
  cfgWrite(off: number, size: 1 | 2 | 4, v: number): void {
    this.addr(off);
    const io = this.m.cpu.io;
    const p = 0xcfc + (off & 3);
    if (size === 1) io.port_write8(p, v);
    else if (size === 2) io.port_write16(p, v);
    else io.port_write32(p, v | 0);
  }
  // MMIO as v86's wasm makes it: signed addresses, 16-bit reads as two byte reads.
  r8(a: number): number {
    return this.m.cpu.mmap_read8(a | 0);
  }
  r16(a: number): number {
    return this.r8(a) | (this.r8(a + 1) << 8);
  }
  r32(a: number): number {
    return this.m.cpu.mmap_read32(a | 0) >>> 0;
  }
  w8(a: number, v: number): void {
    this.m.cpu.mmap_write8(a | 0, v);
  }
  w16(a: number, v: number): void {
    this.m.cpu.mmap_write16(a | 0, v);
  }
  w32(a: number, v: number): void {
    this.m.cpu.mmap_write32(a | 0, v | 0);
  }
  /** BAR4 (64-bit memory) as the BIOS programmed it. */
  bar4(): number {
    return (this.cfgRead(0x20, 4) & ~0xf) >>> 0;
  }
  bar0(): number {
    return this.cfgRead(0x10, 4) & ~0x3;
  }
}

describe.skipIf(bios === undefined)('v86 adapter on SeaBIOS', () => {
  let m: BiosMachine;
  let host: V86PciHost;
  let memory: GuestMemory;
  let fnT: VirtIOPCIProxy;
  let fnM: VirtIOPCIProxy;
  const warnings: string[] = [];
  const raised: number[] = [];
  const lowered: number[] = [];
  const dirty: [number, number][] = [];

  beforeAll(async () => {
    m = await startBiosMachine({
      bios: bios!,
      onLoaded: (emulator) => {
        host = v86Host(emulator, { onWarning: (w) => warnings.push(w) });
        memory = v86Memory(emulator);
        fnT = v86VirtioPci(new VirtIORng({ memory, queueSize: 256, entropy: deterministicEntropy(7) }));
        fnM = v86VirtioPci(new VirtIORng({ memory, queueSize: 256, entropy: deterministicEntropy(8) }), { disableLegacy: true });
        attachToV86(emulator, fnT, { slot: SLOT_T });
        attachToV86(emulator, fnM, { slot: SLOT_M });
      },
      // Both functions decoding: the BIOS has been through them.
      ready: () => fnT.activeBars().length === 2 && fnM.activeBars().length === 1,
    });
    // Watch the CPU's interrupt lines and JIT invalidations (instance properties the adapter calls).
    const cpu = m.cpu;
    const raise = cpu.device_raise_irq.bind(cpu);
    const lower = cpu.device_lower_irq.bind(cpu);
    const jit = cpu.jit_dirty_cache.bind(cpu);
    cpu.device_raise_irq = (i: number) => {
      raised.push(i);
      raise(i);
    };
    cpu.device_lower_irq = (i: number) => {
      lowered.push(i);
      lower(i);
    };
    cpu.jit_dirty_cache = (s: number, e: number) => {
      dirty.push([s, e]);
      jit(s, e);
    };
  }, 30_000);

  afterAll(async () => {
    await m?.emulator.destroy();
  });

  it('SeaBIOS finds both functions, places their BARs above RAM and routes INTA#', () => {
    const t = new Guest(m, SLOT_T << 3);
    const mo = new Guest(m, SLOT_M << 3);
    expect(t.cfgRead(0, 4)).toBe(0x1005_1af4); // transitional virtio-rng
    expect(mo.cfgRead(0, 4)).toBe(0x1044_1af4); // modern-only virtio-rng
    expect(t.cfgRead(4, 2) & 0x3).toBe(0x3); // I/O and memory decoding on
    const ram = m.cpu.memory_size[0]!;
    for (const [g, fn] of [[t, fnT], [mo, fnM]] as const) {
      const bar4 = fn.activeBars().find((b) => b.index === 4)!;
      expect(g.bar4()).toBe(bar4.addr);
      expect(bar4.addr).toBeGreaterThanOrEqual(ram);
      expect(bar4.addr + bar4.size).toBeLessThanOrEqual(0x1_0000_0000);
      const irq = piixIntxIrq(m.cpu.devices.pci!.isa_bridge_space8, g.devfn >> 3, 1);
      expect(irq).toBeGreaterThan(0);
      expect(g.cfgRead(0x3c, 1)).toBe(irq); // the BIOS wrote the line it routed
    }
    expect(t.bar0()).toBe(fnT.activeBars().find((b) => b.index === 0)!.addr);
    expect(mo.bar4()).not.toBe(t.bar4());
    expect(warnings).toEqual([]);
  });

  it('config cycles: the PCI_CFG window runs on the data read only, never on the address write', () => {
    const g = new Guest(m, SLOT_M << 3);
    let cap = g.cfgRead(0x34, 1);
    while (cap && !(g.cfgRead(cap, 1) === 0x09 && g.cfgRead(cap + 3, 1) === 5)) cap = g.cfgRead(cap + 1, 1);
    expect(cap).not.toBe(0);
    g.cfgWrite(cap + 8, 4, 0x1000); // the ISR
    g.cfgWrite(cap + 12, 4, 1);
    fnM.vdev.isr = 1;
    // CONFIG_ADDRESS for pci_cfg_data: v86 latches its answer here (a peek for our function).
    m.cpu.io.port_write32(0xcf8, (0x8000_0000 | ((SLOT_M << 3) << 8) | (cap + 16)) | 0);
    expect(fnM.vdev.isr).toBe(1);
    expect(m.cpu.io.port_read8(0xcfc)).toBe(1); // the read runs the window: ISR read and cleared
    expect(fnM.vdev.isr).toBe(0);
  });

  it('modern interface over v86 MMIO: queue_size 256 through split reads, an entropy request, INTx, JIT', () => {
    const g = new Guest(m, SLOT_M << 3);
    const bar = g.bar4();
    g.w8(bar + 0x14, 0); // reset
    g.w8(bar + 0x14, ACK | DRIVER);
    g.w32(bar + 0x00, 1);
    expect(g.r32(bar + 0x04) & 1).toBe(1); // VERSION_1
    g.w32(bar + 0x08, 1);
    g.w32(bar + 0x0c, 1);
    g.w32(bar + 0x08, 0);
    g.w32(bar + 0x0c, 0);
    g.w8(bar + 0x14, ACK | DRIVER | FEATURES_OK);
    expect(g.r8(bar + 0x14) & FEATURES_OK).toBe(FEATURES_OK);
    g.w16(bar + 0x16, 0);
    expect(g.r16(bar + 0x18)).toBe(256); // two byte reads: needs the byte lanes
    const rings = { desc: 0x20_0000, avail: 0x20_1000, used: 0x20_2000 };
    g.w32(bar + 0x20, rings.desc);
    g.w32(bar + 0x24, 0);
    g.w32(bar + 0x28, rings.avail);
    g.w32(bar + 0x2c, 0);
    g.w32(bar + 0x30, rings.used);
    g.w32(bar + 0x34, 0);
    g.w16(bar + 0x1c, 1);
    expect(g.r16(bar + 0x1c)).toBe(1);
    g.w8(bar + 0x14, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    const ring = new SplitRingDriver({ memory, num: 256, addrs: rings });
    const buf = 0x30_0000;
    ring.add([{ addr: buf, len: 512, write: true }]);
    raised.length = lowered.length = dirty.length = 0;
    g.w16(bar + 0x3000 + 4 * g.r16(bar + 0x1e), 0); // notify queue 0 at its notify offset
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 512 }]);
    const want = new Uint8Array(512);
    deterministicEntropy(8).fill(want);
    expect(memory.view(buf, 512)).toEqual(want);
    // The guest sees the same bytes through v86's own view of its RAM.
    const mem8 = new Uint8Array(m.cpu.wasm_memory.buffer, m.cpu.mem8.byteOffset + buf, 512);
    expect(mem8).toEqual(want);
    const irq = piixIntxIrq(m.cpu.devices.pci!.isa_bridge_space8, SLOT_M, 1);
    expect(raised).toEqual([irq]);
    expect(g.r8(bar + 0x1000)).toBe(1); // ISR: queue interrupt, read clears and lowers
    expect(lowered).toEqual([irq]);
    // The JIT heard of the buffer and the used ring.
    const covers = (a: number, l: number) => dirty.some(([s, e]) => s <= a && a + l <= e);
    expect(covers(buf, 512)).toBe(true);
    expect(covers(rings.used + 2, 2)).toBe(true);
    expect(covers(rings.used + 4, 8)).toBe(true);
  });

  it('legacy interface over v86 ports, with RAM grown between queue set-up and the notify', () => {
    const g = new Guest(m, SLOT_T << 3);
    const io = m.cpu.io;
    const base = g.bar0();
    io.port_write8(base + 0x12, 0);
    io.port_write8(base + 0x12, ACK | DRIVER);
    io.port_write32(base + 0x04, 0);
    io.port_write16(base + 0x0e, 0);
    expect(io.port_read16(base + 0x0c)).toBe(256);
    const ringBase = 0x40_0000;
    io.port_write32(base + 0x08, ringBase >>> 12);
    io.port_write8(base + 0x12, ACK | DRIVER | DRIVER_OK);
    const ring = SplitRingDriver.legacy(memory, ringBase, 256, 4096);
    const buf = 0x50_0000;
    ring.add([{ addr: buf, len: 300, write: true }]);
    const epoch = memory.epoch;
    const before = m.cpu.wasm_memory.buffer;
    m.cpu.wasm_memory.grow(2); // as v86 does while a guest runs
    expect(before.byteLength).toBe(0);
    io.port_write16(base + 0x10, 0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 300 }]);
    expect(memory.epoch).toBe(epoch + 1);
    const want = new Uint8Array(300);
    deterministicEntropy(7).fill(want);
    expect(new Uint8Array(m.cpu.wasm_memory.buffer, m.cpu.mem8.byteOffset + buf, 300)).toEqual(want);
    expect(io.port_read8(base + 0x13)).toBe(1);
  });

  it('hostile guest values through v86 never throw into it', () => {
    const g = new Guest(m, SLOT_M << 3);
    const bar = g.bar4();
    expect(() => {
      for (let off = 0; off < 0x4000; off += 0x3d) {
        g.w32(bar + off, 0xffff_ffff);
        g.w16(bar + off, 0xffff);
        g.r16(bar + off);
        g.r32(bar + off);
      }
      for (let off = 0; off < 256; off++) g.cfgWrite(off, 1, 0xff);
    }).not.toThrow();
    // The guest moved BAR4 above 4 GiB with those writes: said, not mapped, nothing thrown.
    expect(warnings.length).toBeGreaterThan(0);
    for (const w of warnings) expect(w).toMatch(/BAR4 at 0x[0-9a-f]+ \(16384 bytes\) not mapped: above 4 GiB/);
  });

  it('destroy gives v86 back its ports, MMIO blocks and config handlers', () => {
    const t = new Guest(m, SLOT_T << 3);
    const io0 = fnT.activeBars().find((b) => b.index === 0)?.addr;
    const bar4 = fnM.activeBars().find((b) => b.index === 4)?.addr;
    host.destroy();
    expect(t.cfgRead(0, 4)).toBe(0xffff_ffff); // nobody at the slot any more
    if (io0 !== undefined) expect(m.cpu.io.port_read8(io0 + 0x12)).toBe(0xff);
    if (bar4 !== undefined) expect(m.cpu.mmap_read8(bar4 | 0)).toBe(0xff);
    const pci = m.cpu.devices.pci!;
    expect(Object.hasOwn(pci, 'pci_query')).toBe(false);
    expect(Object.hasOwn(m.cpu, 'mmap_write16')).toBe(false);
  });
});

describe.skipIf(bios === undefined)('v86 adapter across a machine reset', () => {
  it('emulator.restart() resets our function (BARs off, INTx down), and SeaBIOS enumerates it again', async () => {
    let fn: VirtIOPCIProxy | undefined;
    let host: V86PciHost | undefined;
    const m = await startBiosMachine({
      bios: bios!,
      onLoaded: (emulator) => {
        host = v86Host(emulator);
        fn = v86VirtioPci(new VirtIORng({ memory: host.memory }));
        attachToV86(emulator, fn, { slot: SLOT_T });
      },
      ready: () => fn!.activeBars().length === 2,
    });
    try {
      const before = fn!.activeBars().map((b) => [b.index, b.addr]);
      fn!.vdev.isr = 1;
      fn!.setIrq(true);
      const emulator = m.emulator as unknown as { restart(): void; run(): Promise<void> };
      emulator.restart();
      expect(fn!.activeBars()).toEqual([]);
      expect(fn!.configRead(4, 2)).toBe(0);
      expect(fn!.irqState).toBe(0);
      expect(fn!.vdev.isr).toBe(0);
      void emulator.run();
      const deadline = Date.now() + 20_000;
      while (fn!.activeBars().length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      await m.emulator.stop();
      expect(fn!.activeBars().map((b) => [b.index, b.addr])).toEqual(before);
      expect(new Guest(m, SLOT_T << 3).cfgRead(0, 4)).toBe(0x1005_1af4);
    } finally {
      host?.destroy();
      await m.emulator.destroy();
    }
  }, 40_000);
});
