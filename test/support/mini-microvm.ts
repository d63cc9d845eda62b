// A test fixture, not the reference machine: a QtestTarget shaped like QEMU 7.2's microvm with
// `-nodefaults` (RAM from 0; 24 virtio-mmio transports at 0xfeb00000 + 0x200*i, filled from the
// last one down, on pins 0..23 of the second I/O APIC, `/machine/unattached/device[3]`), built
// from this project's existing VirtioMmioTransport and VirtIORng. It lets the machine scenarios
// and InProcessMachine run in-process before src/machine/microvm.ts exists; the runner table in
// test/driver/impls.ts adds the real machines beside it when they appear.
import { AddressSpace, maskTo, type AccessSize } from '../../src/machine/address-space.js';
import type { QtestTarget } from '../../src/machine/qtest-target.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtIORng, deterministicEntropy } from '../../src/devices/rng.js';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import type { QmpLike } from '../../src/driver/machine.js';

export interface MiniMicrovmOptions {
  /** `virtio-mmio.force-legacy` (QEMU's default true: version 1). */
  forceLegacy?: boolean;
  /** Number of `-device virtio-rng-device`. */
  rngDevices?: number;
  ramSize?: number;
  /** Number of transports (QEMU: 24); 0 gives a RAM-only machine. */
  transports?: number;
}

const MMIO_BASE = 0xfeb0_0000;
const TRANSPORTS = 24;
const IOAPIC2 = '/machine/unattached/device[3]';

/** Parse the subset of a QEMU microvm command line this fixture understands; throws on the rest. */
export function miniMicrovmFromArgs(machine: string, args: readonly string[]): MiniMicrovm {
  if (machine !== 'microvm') throw new Error(`mini-microvm: machine ${machine} not supported`);
  const opts: MiniMicrovmOptions = { rngDevices: 0 };
  for (let i = 0; i < args.length; i += 2) {
    const [flag, val] = [args[i], args[i + 1] ?? ''];
    if (flag === '-global' && val === 'virtio-mmio.force-legacy=false') opts.forceLegacy = false;
    else if (flag === '-global' && val === 'virtio-mmio.ioeventfd=off') continue;
    else if (flag === '-device' && val === 'virtio-rng-device') opts.rngDevices!++;
    else throw new Error(`mini-microvm: option ${flag} ${val} not supported`);
  }
  return new MiniMicrovm(opts);
}

export class MiniMicrovm implements QtestTarget {
  readonly endianness = 'little' as const;
  readonly ram: GuestMemory;
  readonly mmio = new AddressSpace('mmio', 0);
  readonly clock = new VirtualClock();
  readonly transports: VirtioMmioTransport[] = [];
  onIrq: ((line: number, level: boolean) => void) | undefined;
  private intercepted: string | undefined;
  private readonly levels = new Array<boolean>(TRANSPORTS).fill(false);

  constructor(opts: MiniMicrovmOptions = {}) {
    this.ram = GuestMemory.ofSize(opts.ramSize ?? 16 << 20);
    const legacy = opts.forceLegacy ?? true;
    const n = opts.rngDevices ?? 0;
    const count = opts.transports ?? TRANSPORTS;
    for (let i = 0; i < count; i++) {
      // QEMU plugs the first -device into the last transport.
      const dev = i >= count - n ? new VirtIORng({ memory: this.ram, entropy: deterministicEntropy(i + 1) }) : undefined;
      const t = new VirtioMmioTransport(dev, {
        legacy,
        base: MMIO_BASE + 0x200 * i,
        irq: (level) => this.setPin(i, level),
      });
      this.transports.push(t);
      this.mmio.map(MMIO_BASE + 0x200 * i, 0x200, { read: (o, s) => t.read(o, s), write: (o, s, v) => t.write(o, s, v) }, t.name);
    }
  }

  /** qom-list of /machine/unattached, as far as the scenarios ask. */
  readonly qmp: QmpLike = {
    execute: async (command, args) => {
      if (command === 'qom-list' && args?.['path'] === '/machine/unattached') return [{ name: 'device[3]', type: 'child<ioapic>' }];
      throw new Error(`mini-microvm: QMP ${command} not supported`);
    },
  };

  private setPin(pin: number, level: boolean): void {
    if (this.levels[pin] === level) return;
    this.levels[pin] = level;
    if (this.intercepted === IOAPIC2) this.onIrq?.(pin, level);
  }

  inb(): number {
    return 0xff;
  }
  inw(): number {
    return 0xffff;
  }
  inl(): number {
    return 0xffff_ffff;
  }
  outb(): void {}
  outw(): void {}
  outl(): void {}

  private read(addr: number, size: AccessSize): number {
    if (this.ram.isRange(addr, size)) return size === 1 ? this.ram.read8(addr) : size === 2 ? this.ram.read16(addr) : this.ram.read32(addr);
    return maskTo(this.mmio.read(addr, size), size);
  }
  private write(addr: number, size: AccessSize, v: number): void {
    if (this.ram.isRange(addr, size)) {
      if (size === 1) this.ram.write8(addr, v);
      else if (size === 2) this.ram.write16(addr, v);
      else this.ram.write32(addr, v);
      return;
    }
    this.mmio.write(addr, size, v);
  }
  readb(addr: number): number {
    return this.read(addr, 1);
  }
  readw(addr: number): number {
    return this.read(addr, 2);
  }
  readl(addr: number): number {
    return this.read(addr, 4);
  }
  readq(addr: number): bigint {
    if (this.ram.isRange(addr, 8)) return this.ram.read64(addr);
    return (BigInt(this.read(addr + 4, 4)) << 32n) | BigInt(this.read(addr, 4));
  }
  writeb(addr: number, v: number): void {
    this.write(addr, 1, v);
  }
  writew(addr: number, v: number): void {
    this.write(addr, 2, v);
  }
  writel(addr: number, v: number): void {
    this.write(addr, 4, v);
  }
  writeq(addr: number, v: bigint): void {
    if (this.ram.isRange(addr, 8)) this.ram.write64(addr, v);
    else {
      this.write(addr, 4, Number(v & 0xffff_ffffn));
      this.write(addr + 4, 4, Number((v >> 32n) & 0xffff_ffffn));
    }
  }
  readBytes(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    if (this.ram.isRange(addr, len)) this.ram.read(addr, out);
    return out;
  }
  writeBytes(addr: number, data: Uint8Array): void {
    if (this.ram.isRange(addr, data.length)) this.ram.write(addr, data);
  }
  memset(addr: number, len: number, value: number): void {
    if (this.ram.isRange(addr, len)) this.ram.fill(addr, len, value);
  }
  clockStep(ns?: number): number {
    return ns === undefined ? this.clock.advanceTo(this.clock.nextDeadline() ?? this.clock.now()) : this.clock.step(ns);
  }
  clockSet(ns: number): number {
    return this.clock.advanceTo(ns);
  }
  clockNow(): number {
    return this.clock.now();
  }
  irqIntercept(kind: 'in' | 'out', qomPath: string): string | null {
    const path = qomPath === 'ioapic' ? '/machine/ioapic' : qomPath;
    if (kind !== 'in' || (path !== '/machine/ioapic' && path !== IOAPIC2)) return 'Unknown device';
    if (this.intercepted !== undefined && this.intercepted !== path) return 'IRQ intercept already enabled';
    this.intercepted = path;
    return null;
  }
  setIrqIn(): string | null {
    return 'Unknown device';
  }
}
