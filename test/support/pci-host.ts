// A fake PCI host bridge for transport tests: it maps the BARs a function decodes into a port
// space and a memory space (the machine's AddressSpace), delivers bus-master writes (MSI-X
// messages) into guest RAM and records them, and records INTx levels.
import { AddressSpace, type Mapping } from '../../src/machine/address-space.js';
import type { PciBusHost, PciFunction } from '../../src/bus/pci/pci-bus.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';

export interface DmaRecord {
  addr: number;
  data: Uint8Array;
  /** The 32-bit little-endian value written (an MSI message's data). */
  value: number;
}

export class FakePciHost implements PciBusHost {
  readonly io = new AddressSpace('io', 0xffff_ffff);
  readonly mem = new AddressSpace('mem', 0);
  readonly dma: DmaRecord[] = [];
  /** Every setIntx call, in order. */
  readonly intxLog: { pin: number; level: boolean }[] = [];
  /** Current level per pin (1..4). */
  readonly intx = [false, false, false, false, false];
  /** Rising edges seen on any pin. */
  intxRaises = 0;
  barsChangedCount = 0;
  private readonly mappings = new Map<PciFunction, Mapping[]>();

  constructor(readonly ram?: GuestMemory) {}

  plug(fn: PciFunction, devfn: number): void {
    fn.attach(this, devfn);
    this.barsChanged(fn);
  }

  barsChanged(fn: PciFunction): void {
    this.barsChangedCount++;
    for (const m of this.mappings.get(fn) ?? []) (m.name.includes(':io') ? this.io : this.mem).unmap(m);
    const maps: Mapping[] = [];
    for (const b of fn.activeBars()) {
      const space = b.type === 'io' ? this.io : this.mem;
      maps.push(space.map(b.addr, b.size, b.handler, `${fn.name}:bar${b.index}:${b.type}`));
    }
    this.mappings.set(fn, maps);
  }

  dmaWrite(_fn: PciFunction, addr: number, data: Uint8Array): void {
    const value = data.length >= 4 ? new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(0, true) : 0;
    this.dma.push({ addr, data: data.slice(), value });
    this.ram?.write(addr, data);
  }

  setIntx(_fn: PciFunction, pin: number, level: boolean): void {
    this.intxLog.push({ pin, level });
    if (level && !this.intx[pin]) this.intxRaises++;
    this.intx[pin] = level;
  }

  /** The BAR mappings currently in place for `fn`. */
  mapped(fn: PciFunction): readonly Mapping[] {
    return this.mappings.get(fn) ?? [];
  }
}
