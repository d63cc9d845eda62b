// Synchronous guest-side helpers for virtio-pci tests: a virtio-rng behind our VirtIOPCIProxy on a
// fake PCI host, configuration-space access, BAR mapping the way a driver (or libqos) does it,
// capability discovery, and small modern and legacy drivers that run an entropy request end to
// end with INTx or MSI-X. (The asynchronous driver library lives in src/driver; this file only
// serves the transport's own unit tests.)
import { VirtIOPCIProxy, type VirtioPciOptions } from '../../src/bus/virtio-pci.js';
import { deterministicEntropy, VirtIORng, type VirtIORngOptions } from '../../src/devices/rng.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { TraceEvent } from '../../src/trace/trace.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
} from '../../src/virtio/constants.js';
import { legacyLayout, type RingAddresses } from '../../src/vring/layout.js';
import { FakePciHost } from './pci-host.js';

export const RAM_SIZE = 16 << 20;
export const IO_BASE = 0xc000;
export const BAR1_BASE = 0xe000_0000;
export const BAR4_BASE = 0xe100_0000;
export const DEVFN = 2 << 3;

export const ACK = VIRTIO_CONFIG_S_ACKNOWLEDGE;
export const DRIVER = VIRTIO_CONFIG_S_DRIVER;
export const FEATURES_OK = VIRTIO_CONFIG_S_FEATURES_OK;
export const DRIVER_OK = VIRTIO_CONFIG_S_DRIVER_OK;

// Common configuration offsets (VIRTIO 1.2 §4.1.4.3).
export const C_DFSELECT = 0x00;
export const C_DF = 0x04;
export const C_GFSELECT = 0x08;
export const C_GF = 0x0c;
export const C_MSIX = 0x10;
export const C_NUMQ = 0x12;
export const C_STATUS = 0x14;
export const C_CFGGEN = 0x15;
export const C_Q_SELECT = 0x16;
export const C_Q_SIZE = 0x18;
export const C_Q_MSIX = 0x1a;
export const C_Q_ENABLE = 0x1c;
export const C_Q_NOFF = 0x1e;
export const C_Q_DESCLO = 0x20;
export const C_Q_DESCHI = 0x24;
export const C_Q_AVAILLO = 0x28;
export const C_Q_AVAILHI = 0x2c;
export const C_Q_USEDLO = 0x30;
export const C_Q_USEDHI = 0x34;
export const C_Q_RESET = 0x3a;

// Legacy registers.
export const L_HOST_FEATURES = 0x00;
export const L_GUEST_FEATURES = 0x04;
export const L_QUEUE_PFN = 0x08;
export const L_QUEUE_NUM = 0x0c;
export const L_QUEUE_SEL = 0x0e;
export const L_QUEUE_NOTIFY = 0x10;
export const L_STATUS = 0x12;
export const L_ISR = 0x13;
export const L_MSI_CONFIG_VECTOR = 0x14;
export const L_MSI_QUEUE_VECTOR = 0x16;

export type Size = 1 | 2 | 4;

export interface VendorCap {
  at: number;
  cfgType: number;
  bar: number;
  offset: number;
  length: number;
  multiplier?: number;
}

/** Where MSI-X messages for vector v land in RAM in these tests. */
export const msiAddr = (v: number) => 0x8000 + 16 * v;
export const msiData = (v: number) => 0x1234_5670 + v;

export class PciRig {
  readonly mem: GuestMemory;
  readonly rng: VirtIORng;
  readonly proxy: VirtIOPCIProxy;
  readonly host: FakePciHost;
  readonly errors: string[] = [];
  readonly trace: TraceEvent[] = [];
  readonly warnings: string[] = [];

  constructor(opts: { pci?: VirtioPciOptions; rng?: Partial<VirtIORngOptions>; trace?: boolean } = {}) {
    this.mem = GuestMemory.ofSize(RAM_SIZE);
    const tracer = opts.trace ? (e: TraceEvent) => void this.trace.push(e) : undefined;
    this.rng = new VirtIORng({ memory: this.mem, entropy: deterministicEntropy(3), onError: (m) => this.errors.push(m), tracer, ...opts.rng });
    this.proxy = new VirtIOPCIProxy(this.rng, { tracer, onWarning: (m) => this.warnings.push(m), ...opts.pci });
    this.host = new FakePciHost(this.mem);
    this.host.plug(this.proxy, DEVFN);
  }

  // Configuration space ------------------------------------------------------------------
  cfgRead(off: number, size: Size = 4): number {
    return this.proxy.configRead(off, size);
  }
  cfgWrite(off: number, size: Size, value: number): void {
    this.proxy.configWrite(off, size, value);
  }
  command(): number {
    return this.cfgRead(0x04, 2);
  }
  status(): number {
    return this.cfgRead(0x06, 2);
  }

  /** Capabilities, walked from 0x34 as a driver does. */
  caps(): { id: number; at: number }[] {
    const out: { id: number; at: number }[] = [];
    if (!(this.status() & 0x10)) return out;
    for (let p = this.cfgRead(0x34, 1), n = 0; p && n < 48; p = this.cfgRead(p + 1, 1), n++) out.push({ id: this.cfgRead(p, 1), at: p });
    return out;
  }

  vendorCap(cfgType: number): VendorCap | undefined {
    for (const c of this.caps()) {
      if (c.id !== 0x09 || this.cfgRead(c.at + 3, 1) !== cfgType) continue;
      const cap: VendorCap = { at: c.at, cfgType, bar: this.cfgRead(c.at + 4, 1), offset: this.cfgRead(c.at + 8, 4), length: this.cfgRead(c.at + 12, 4) };
      if (cfgType === 2) cap.multiplier = this.cfgRead(c.at + 16, 4);
      return cap;
    }
    return undefined;
  }

  msixCap(): number {
    return this.caps().find((c) => c.id === 0x11)?.at ?? 0;
  }

  /** Program the BARs that exist (I/O 0xc000, BAR1 0xe0000000, BAR4 0xe1000000) and set `command`. */
  mapBars(command = 0x7): void {
    if (this.proxy.bar(0)) this.cfgWrite(0x10, 4, IO_BASE);
    if (this.proxy.bar(1)) this.cfgWrite(0x14, 4, BAR1_BASE);
    if (this.proxy.bar(4)) {
      this.cfgWrite(0x20, 4, BAR4_BASE);
      this.cfgWrite(0x24, 4, 0);
    }
    this.cfgWrite(0x04, 2, command);
  }

  // BAR access ---------------------------------------------------------------------------
  io(off: number, size: Size = 1): number {
    return this.host.io.read(IO_BASE + off, size);
  }
  ioWrite(off: number, size: Size, value: number): void {
    this.host.io.write(IO_BASE + off, size, value);
  }
  common(off: number, size: Size): number {
    return this.host.mem.read(BAR4_BASE + off, size);
  }
  commonWrite(off: number, size: Size, value: number): void {
    this.host.mem.write(BAR4_BASE + off, size, value);
  }
  bar4(off: number, size: Size): number {
    return this.host.mem.read(BAR4_BASE + off, size);
  }
  bar4Write(off: number, size: Size, value: number): void {
    this.host.mem.write(BAR4_BASE + off, size, value);
  }
  isrRead(): number {
    return this.bar4(0x1000, 1);
  }
  notifyModern(queue: number, value = queue): void {
    const mult = this.proxy.notifyMultiplier;
    this.bar4Write(0x3000 + queue * mult, 2, value);
  }
  bar1(off: number, size: Size = 4): number {
    return this.host.mem.read(BAR1_BASE + off, size);
  }
  bar1Write(off: number, size: Size, value: number): void {
    this.host.mem.write(BAR1_BASE + off, size, value);
  }

  // MSI-X ----------------------------------------------------------------------------------
  msixEnable(on = true, maskAll = false): void {
    const cap = this.msixCap();
    this.cfgWrite(cap + 2, 2, (on ? 0x8000 : 0) | (maskAll ? 0x4000 : 0));
  }
  /** Program table entry `v` with this rig's RAM address and data; `masked` sets the mask bit. */
  msixEntry(v: number, masked = false): void {
    this.bar1Write(16 * v, 4, msiAddr(v));
    this.bar1Write(16 * v + 4, 4, 0);
    this.bar1Write(16 * v + 8, 4, msiData(v));
    this.bar1Write(16 * v + 12, 4, masked ? 1 : 0);
  }
  msixMask(v: number, masked: boolean): void {
    this.bar1Write(16 * v + 12, 4, masked ? 1 : 0);
  }
  pba(): number {
    return this.bar1(0x800, 4);
  }
  /** Has vector v's message landed (libqos: readl(addr) == data)? Clears it to re-arm. */
  msiFired(v: number): boolean {
    const got = this.mem.read32(msiAddr(v)) === msiData(v);
    if (got) this.mem.write32(msiAddr(v), 0);
    return got;
  }
  msiCount(v: number): number {
    return this.host.dma.filter((d) => d.addr === msiAddr(v) && d.value === msiData(v)).length;
  }
  intxLevel(): boolean {
    return this.host.intx[1]!;
  }
}

/** Modern ring addresses for a queue of `num` entries at `base` (parts page aligned). */
export function modernRing(base: number, num: number): RingAddresses {
  const desc = base;
  const avail = base + 0x1000;
  const used = base + 0x2000;
  void num;
  return { desc, avail, used };
}

/** The guest side of a modern (VIRTIO 1.x) virtio-pci device, as Linux's virtio_pci_modern. */
export class ModernPciDriver {
  features = 0n;
  constructor(readonly rig: PciRig) {}

  deviceFeatures(): bigint {
    const r = this.rig;
    r.commonWrite(C_DFSELECT, 4, 1);
    const hi = r.common(C_DF, 4);
    r.commonWrite(C_DFSELECT, 4, 0);
    const lo = r.common(C_DF, 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** Reset, ACK, DRIVER, negotiate `wanted ∩ offered` (+VERSION_1), FEATURES_OK. */
  init(wanted = 0n): bigint {
    const r = this.rig;
    r.commonWrite(C_STATUS, 1, 0);
    if (r.common(C_STATUS, 1) !== 0) throw new Error('reset did not complete');
    r.commonWrite(C_STATUS, 1, ACK);
    r.commonWrite(C_STATUS, 1, ACK | DRIVER);
    const offered = this.deviceFeatures();
    const f = (wanted & offered) | (offered & (1n << 32n));
    r.commonWrite(C_GFSELECT, 4, 0);
    r.commonWrite(C_GF, 4, Number(f & 0xffff_ffffn));
    r.commonWrite(C_GFSELECT, 4, 1);
    r.commonWrite(C_GF, 4, Number(f >> 32n));
    r.commonWrite(C_STATUS, 1, ACK | DRIVER | FEATURES_OK);
    if (!(r.common(C_STATUS, 1) & FEATURES_OK)) throw new Error('FEATURES_OK refused');
    this.features = f;
    return f;
  }

  /** Program queue `q` (size `num`, rings at `base`), optionally with an MSI-X vector; enable it. */
  setupQueue(q: number, base: number, num = 8, vector?: number): SplitRingDriver {
    const r = this.rig;
    r.commonWrite(C_Q_SELECT, 2, q);
    const max = r.common(C_Q_SIZE, 2);
    if (max === 0) throw new Error(`queue ${q} does not exist`);
    r.commonWrite(C_Q_SIZE, 2, num);
    if (vector !== undefined) r.commonWrite(C_Q_MSIX, 2, vector);
    const a = modernRing(base, num);
    r.commonWrite(C_Q_DESCLO, 4, a.desc);
    r.commonWrite(C_Q_DESCHI, 4, 0);
    r.commonWrite(C_Q_AVAILLO, 4, a.avail);
    r.commonWrite(C_Q_AVAILHI, 4, 0);
    r.commonWrite(C_Q_USEDLO, 4, a.used);
    r.commonWrite(C_Q_USEDHI, 4, 0);
    r.commonWrite(C_Q_ENABLE, 2, 1);
    return new SplitRingDriver({ memory: r.mem, num, addrs: a, eventIdx: (this.features >> 29n) & 1n ? true : false });
  }

  driverOk(): void {
    this.rig.commonWrite(C_STATUS, 1, ACK | DRIVER | FEATURES_OK | DRIVER_OK);
  }

  notify(q: number): void {
    this.rig.commonWrite(C_Q_SELECT, 2, q);
    const off = this.rig.common(C_Q_NOFF, 2);
    this.rig.notifyModern(off, q);
  }
}

/** The guest side of a legacy (virtio 0.9.5) virtio-pci device, as Linux's virtio_pci_legacy. */
export class LegacyPciDriver {
  features = 0;
  constructor(readonly rig: PciRig) {}

  init(wanted = 0): number {
    const r = this.rig;
    r.ioWrite(L_STATUS, 1, 0);
    r.ioWrite(L_STATUS, 1, ACK);
    r.ioWrite(L_STATUS, 1, ACK | DRIVER);
    const offered = r.io(L_HOST_FEATURES, 4);
    this.features = (wanted & offered) >>> 0;
    r.ioWrite(L_GUEST_FEATURES, 4, this.features);
    return this.features;
  }

  /** Program queue `q` at page-aligned `base` (legacy single-area layout, align 4096). */
  setupQueue(q: number, base: number, vector?: number): SplitRingDriver {
    const r = this.rig;
    r.ioWrite(L_QUEUE_SEL, 2, q);
    const num = r.io(L_QUEUE_NUM, 2);
    if (num === 0) throw new Error(`queue ${q} does not exist`);
    if (vector !== undefined) r.ioWrite(L_MSI_QUEUE_VECTOR, 2, vector);
    r.ioWrite(L_QUEUE_PFN, 4, base / 4096);
    return new SplitRingDriver({ memory: r.mem, num, addrs: legacyLayout(base, num, 4096), eventIdx: ((this.features >>> 29) & 1) === 1 });
  }

  driverOk(): void {
    this.rig.ioWrite(L_STATUS, 1, ACK | DRIVER | DRIVER_OK);
  }

  notify(q: number): void {
    this.rig.ioWrite(L_QUEUE_NOTIFY, 2, q);
  }

  /** Device configuration offset: 0x18 once MSI-X is enabled, 0x14 otherwise. */
  configOffset(): number {
    return this.rig.proxy.msix?.enabled() ? 0x18 : 0x14;
  }
}

/** Post one device-writable buffer of `len` bytes at `buf` and return its head. */
export function postEntropyRequest(ring: SplitRingDriver, buf: number, len = 16): number {
  return ring.add([{ addr: buf, len, write: true }]);
}
