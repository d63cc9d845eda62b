import type { IoHandler } from '../../machine/address-space.js';
import type { V86AccessScope } from './guard.js';
import type { V86Cpu, V86PortEntry } from './types.js';

const PORT_SPACE = 0x1_0000;

/**
 * I/O BARs of our functions in v86's port table. Each port of a window gets its own entry (v86
 * hands a write only its value, so the entry must know its port); the entries v86 had there are
 * kept and put back when the window goes. Port accesses of every width arrive whole.
 */
export class V86Ports {
  /** What each port of ours replaced, by port. */
  private readonly saved = new Map<number, { entry: V86PortEntry; ours: V86PortEntry }>();

  constructor(private readonly cpu: V86Cpu, private readonly scope: V86AccessScope) {}

  refusal(base: number, size: number): string | undefined {
    if (!Number.isSafeInteger(base) || !Number.isSafeInteger(size) || size <= 0) return 'not a window';
    if (base + size > PORT_SPACE) return 'beyond the 64 KiB port space';
    return undefined;
  }

  map(base: number, size: number, handler: IoHandler): boolean {
    if (this.refusal(base, size) !== undefined) return false;
    const ports = this.cpu.io.ports;
    const scope = this.scope;
    for (let off = 0; off < size; off++) {
      const port = base + off;
      const prev = this.saved.get(port);
      const ours: V86PortEntry = {
        read8: () => scope.read(handler, off, 1) & 0xff,
        read16: () => scope.read(handler, off, 2) & 0xffff,
        read32: () => scope.read(handler, off, 4) | 0,
        write8: (v: number) => scope.write(handler, off, 1, v & 0xff),
        write16: (v: number) => scope.write(handler, off, 2, v & 0xffff),
        write32: (v: number) => scope.write(handler, off, 4, v >>> 0),
        device: handler,
      };
      // A port already ours (two windows overlapping) keeps v86's original to give back.
      this.saved.set(port, { entry: prev ? prev.entry : ports[port]!, ours });
      ports[port] = ours;
    }
    return true;
  }

  unmap(base: number, size: number, handler: IoHandler): void {
    const ports = this.cpu.io.ports;
    for (let port = base; port < base + size && port < PORT_SPACE; port++) {
      const s = this.saved.get(port);
      if (s === undefined || s.ours.device !== handler) continue;
      if (ports[port] === s.ours) ports[port] = s.entry;
      this.saved.delete(port);
    }
  }

  clear(): void {
    const ports = this.cpu.io.ports;
    for (const [port, s] of this.saved) if (ports[port] === s.ours) ports[port] = s.entry;
    this.saved.clear();
  }
}
