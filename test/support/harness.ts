// Test harness: a guest RAM, one device behind virtio-mmio, a guest-side driver, and an
// interrupt line that records every level change.
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import { VirtIORng, deterministicEntropy, type VirtIORngOptions } from '../../src/devices/rng.js';
import type { TraceEvent } from '../../src/trace/trace.js';

export const RAM_SIZE = 1 << 20;

export interface RngRig {
  mem: GuestMemory;
  rng: VirtIORng;
  mmio: VirtioMmioTransport;
  drv: MmioDriver;
  irqRaises: () => number;
  irqLevel: () => boolean;
  trace: TraceEvent[];
  errors: string[];
}

export function rngRig(opts: { legacy?: boolean; rng?: Partial<VirtIORngOptions>; ramSize?: number; mem?: GuestMemory } = {}): RngRig {
  const mem = opts.mem ?? GuestMemory.ofSize(opts.ramSize ?? RAM_SIZE);
  const trace: TraceEvent[] = [];
  const errors: string[] = [];
  const rng = new VirtIORng({ memory: mem, entropy: deterministicEntropy(1), onError: (m) => errors.push(m), ...opts.rng });
  let raises = 0;
  let level = false;
  const mmio = new VirtioMmioTransport(rng, {
    legacy: opts.legacy ?? false,
    irq: (l) => {
      if (l && !level) raises++;
      level = l;
    },
  });
  const drv = new MmioDriver(mmio, mem);
  return { mem, rng, mmio, drv, irqRaises: () => raises, irqLevel: () => level, trace, errors };
}

/** Modern ring addresses for a queue of `num` entries at `base` (each part 4 KiB aligned). */
export function modernAddrs(base: number, num: number): { desc: number; avail: number; used: number } {
  const desc = base;
  const avail = desc + 16 * num;
  const used = Math.ceil((avail + 6 + 2 * num) / 4096) * 4096;
  return { desc, avail, used };
}
