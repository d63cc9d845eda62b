import type { PciFunction } from '../../bus/pci/pci-bus.js';
import { restore, type V86AccessScope } from './guard.js';
import type { V86Pci, V86PortEntry } from './types.js';

const CONFIG_DATA_PORT = 0xcfc;
const CONFIG_SPACE = 0x100;

type Size = 1 | 2 | 4;

/**
 * Configuration cycles for our functions on v86's PCI host (mechanism #1, bus 0). v86 answers
 * from copies of its own devices' config spaces with no callbacks, so for our devfns:
 *
 * - the CONFIG_ADDRESS write (`pci_query`) latches a side-effect-free peek of the dword, so
 *   whatever reads v86's latch sees current bytes, but nothing with side effects runs early;
 * - data port reads (0xcfc..0xcff, all widths) are answered by the function's `configRead` at the
 *   moment of the read: the PCI_CFG window of virtio-pci runs exactly once, on real reads;
 * - data writes (v86's `pci_write8/16/32`, called with the latched address plus the lane) go to
 *   `configWrite`, and the latch is refreshed (a write can change what the next read returns).
 *
 * Everything else goes to v86 unchanged. All hooks are instance properties, removed on `clear`.
 */
export class V86ConfigCycles {
  private readonly fns = new Map<number, PciFunction>();
  private installed = false;
  private readonly saved: { query: V86Pci['pci_query']; w8: V86Pci['pci_write8']; w16: V86Pci['pci_write16']; w32: V86Pci['pci_write32']; ports: V86PortEntry[] };
  private readonly ours: { ports: V86PortEntry[] } = { ports: [] };

  constructor(private readonly pci: V86Pci, private readonly ports: V86PortEntry[], private readonly scope: V86AccessScope) {
    this.saved = { query: pci.pci_query, w8: pci.pci_write8, w16: pci.pci_write16, w32: pci.pci_write32, ports: [] };
    this.ownBefore = {
      query: Object.hasOwn(pci, 'pci_query'),
      w8: Object.hasOwn(pci, 'pci_write8'),
      w16: Object.hasOwn(pci, 'pci_write16'),
      w32: Object.hasOwn(pci, 'pci_write32'),
    };
  }

  /** Which hooked methods were the object's own (not its prototype's) before we came. */
  private readonly ownBefore: { query: boolean; w8: boolean; w16: boolean; w32: boolean };

  /** Whether `devfn` is taken, by v86's own devices or ours. */
  taken(devfn: number): boolean {
    return this.fns.has(devfn) || this.pci.device_spaces[devfn] !== undefined;
  }

  add(devfn: number, fn: PciFunction): void {
    this.fns.set(devfn, fn);
    if (!this.installed) this.install();
  }

  remove(devfn: number): void {
    this.fns.delete(devfn);
    if (this.fns.size === 0) this.clear();
  }

  /** The function a CONFIG_ADDRESS value selects, if ours: enable bit, bus 0, our devfn. */
  private target(address: number): PciFunction | undefined {
    if (address >= 0 || ((address >>> 16) & 0xff) !== 0) return undefined; // bit 31 clear, or another bus
    return this.fns.get((address >>> 8) & 0xff);
  }

  private install(): void {
    const pci = this.pci;
    const saved = this.saved;
    this.installed = true;
    pci.pci_query = () => {
      saved.query.call(pci);
      const a = pci.pci_addr32[0]!;
      const fn = this.target(a);
      if (fn === undefined) return;
      this.latch(fn, a & 0xfc);
    };
    const write = (size: Size, orig: (address: number, value: number) => void) => (address: number, value: number): void => {
      const fn = this.target(pci.pci_addr32[0]!);
      if (fn === undefined) {
        orig.call(pci, address, value);
        return;
      }
      const off = address & 0xff;
      this.scope.run(() => writePieces(fn, off, size, value));
      this.latch(fn, pci.pci_addr32[0]! & 0xfc);
    };
    pci.pci_write8 = write(1, saved.w8);
    pci.pci_write16 = write(2, saved.w16);
    pci.pci_write32 = write(4, saved.w32);
    // Data port reads: v86's entries return latched bytes; ours ask the function at read time.
    for (let lane = 0; lane < 4; lane++) {
      const port = CONFIG_DATA_PORT + lane;
      const orig = this.ports[port]!;
      saved.ports[lane] = orig;
      const read = (size: Size, origRead: (this: unknown, port: number) => number) => (p: number): number => {
        const a = pci.pci_addr32[0]!;
        const fn = this.target(a);
        if (fn === undefined) return origRead.call(orig.device, p);
        let v = 0xffff_ffff;
        this.scope.run(() => {
          v = readPieces(fn, (a & 0xfc) + lane, size);
        });
        return size === 4 ? v | 0 : v & (size === 2 ? 0xffff : 0xff);
      };
      const entry: V86PortEntry = { ...orig, read8: read(1, orig.read8), read16: read(2, orig.read16), read32: read(4, orig.read32) };
      this.ours.ports[lane] = entry;
      this.ports[port] = entry;
    }
  }

  private latch(fn: PciFunction, off: number): void {
    const pci = this.pci;
    pci.pci_status32[0] = 0x8000_0000 | 0;
    let v = 0xffff_ffff;
    this.scope.run(() => {
      v = fn.configPeek !== undefined ? fn.configPeek(off, 4) : fn.configRead(off, 4);
    });
    pci.pci_response32[0] = v | 0;
  }

  /** Put v86's own handlers back (only those still ours). */
  clear(): void {
    if (!this.installed) return;
    const pci = this.pci;
    const saved = this.saved;
    restore(pci, 'pci_query', saved.query, this.ownBefore.query);
    restore(pci, 'pci_write8', saved.w8, this.ownBefore.w8);
    restore(pci, 'pci_write16', saved.w16, this.ownBefore.w16);
    restore(pci, 'pci_write32', saved.w32, this.ownBefore.w32);
    for (let lane = 0; lane < 4; lane++) {
      const port = CONFIG_DATA_PORT + lane;
      if (this.ports[port] === this.ours.ports[lane]) this.ports[port] = saved.ports[lane]!;
    }
    this.installed = false;
  }
}

/** QEMU's `pci_host_config_read_common` split into naturally aligned pieces inside the space. */
function readPieces(fn: PciFunction, off: number, size: number): number {
  if ((off & (size - 1)) === 0 && off + size <= CONFIG_SPACE) return fn.configRead(off, size as Size) >>> 0;
  let v = 0;
  for (let i = 0; i < size; i++) {
    const o = off + i;
    const b = o < CONFIG_SPACE ? fn.configRead(o, 1) & 0xff : 0xff;
    v += b * 2 ** (8 * i);
  }
  return v;
}

function writePieces(fn: PciFunction, off: number, size: number, value: number): void {
  if ((off & (size - 1)) === 0 && off + size <= CONFIG_SPACE) {
    fn.configWrite(off, size as Size, value >>> 0);
    return;
  }
  for (let i = 0; i < size; i++) {
    const o = off + i;
    if (o < CONFIG_SPACE) fn.configWrite(o, 1, Math.floor((value >>> 0) / 2 ** (8 * i)) & 0xff);
  }
}
