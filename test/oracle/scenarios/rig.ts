// Shared guest-side helpers of the oracle scenarios: opening a virtio-rng on any transport with
// the recording machine, naming its register windows, interrupt observation per interrupt mode,
// and rng requests whose random bytes are summarised (length, changed, tail intact) instead of
// recorded, since QEMU's entropy and ours differ.
//
// Scenarios never assert: they record. The oracle compares the transcripts of QEMU and ours.
import type { GuestAllocator } from '../../../src/driver/alloc.js';
import { poll } from '../../../src/driver/machine.js';
import { GuestPciBus, type GuestPciDevice } from '../../../src/driver/pci.js';
import type { VirtioTransportDriver } from '../../../src/driver/virtio-driver.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver, findMicrovmIoapic2 } from '../../../src/driver/virtio-mmio-driver.js';
import {
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VirtioPciDriver,
} from '../../../src/driver/virtio-pci-driver.js';
import type { DriverBuffer, UsedEntry, VringDriver } from '../../../src/driver/vring.js';
import type { RecordingMachine } from '../../../src/oracle/recorder.js';
import type { OracleContext } from '../../../src/oracle/scenario.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../../src/virtio/constants.js';

// --- transports --------------------------------------------------------------------------------

export type PciTransport = { kind: 'pci'; label: string; slot: number; mode: 'modern' | 'legacy' };
export type MmioTransport = { kind: 'mmio'; label: string; version: 1 | 2; index: number };
export type Transport = PciTransport | MmioTransport;

/** Whether the interface can report errors (DEVICE_NEEDS_RESET exists from VIRTIO 1.0 on). */
export const isModern = (t: Transport): boolean => (t.kind === 'pci' ? t.mode === 'modern' : t.version === 2);

export type IrqMode = 'intx' | 'msix' | 'msix-masked' | 'mmio';

/** INTx is routed to this ISA IRQ (what SeaBIOS picks for PIRQ links). */
export const INTX_IRQ = 11;

export interface Rig {
  t: Transport;
  m: RecordingMachine;
  alloc: GuestAllocator;
  drv: VirtioTransportDriver;
  pciDrv?: VirtioPciDriver;
  mmioDrv?: VirtioMmioDriver;
  pci?: GuestPciDevice;
  bus?: GuestPciBus;
  irq?: IrqObserver;
}

/** Name the windows of a mapped PCI function in the transcript (bar0, common, isr, msix.table, ...). */
function nameWindows(m: RecordingMachine, dev: GuestPciDevice, drv: VirtioPciDriver): void {
  dev.bars.forEach((b, i) => {
    if (b) m.region(`bar${i}`, b.isIo ? 'io' : 'mem', b.addr, b.size);
  });
  const names: Record<number, string> = {
    [VIRTIO_PCI_CAP_COMMON_CFG]: 'common',
    [VIRTIO_PCI_CAP_NOTIFY_CFG]: 'notify',
    [VIRTIO_PCI_CAP_ISR_CFG]: 'isr',
    [VIRTIO_PCI_CAP_DEVICE_CFG]: 'devcfg',
  };
  for (const c of drv.caps) {
    const b = dev.bars[c.bar];
    const n = names[c.cfgType];
    if (b && n && !b.isIo) m.region(n, 'mem', b.addr + c.offset, c.length);
  }
  if (dev.bars[0]?.isIo) m.region('legacy', 'io', dev.bars[0].addr, dev.bars[0].size);
}

/** Find the device, map its BARs (PCI) or probe it (MMIO), and name its windows. */
export async function openRig(ctx: OracleContext, t: Transport): Promise<Rig> {
  const { m, alloc } = ctx;
  if (t.kind === 'pci') {
    const bus = new GuestPciBus(m);
    const pci = await bus.device(t.slot);
    // Place every BAR, in index order, as a BIOS would: the same addresses in every scenario, and
    // no BAR left at an old address where a newly placed one could overlap it.
    for (const b of await pci.listBars()) await pci.mapBar(b.index);
    const drv = await VirtioPciDriver.open(pci, { mode: t.mode, alloc });
    nameWindows(m, pci, drv);
    return { t, m, alloc, drv, pciDrv: drv, pci, bus };
  }
  const base = MICROVM_MMIO_BASE + 0x200 * t.index;
  m.region('mmio', 'mem', base, 0x200);
  const drv = new VirtioMmioDriver(m, base, { alloc });
  await drv.probe();
  return { t, m, alloc, drv, mmioDrv: drv };
}

/** Name the three parts of a ring. */
export function nameRing(m: RecordingMachine, ring: VringDriver, q = 0): void {
  const { desc, avail, used } = ring.addrs;
  m.region(`vq${q}.desc`, 'mem', desc, 16 * ring.num);
  m.region(`vq${q}.avail`, 'mem', avail, 6 + 2 * ring.num);
  m.region(`vq${q}.used`, 'mem', used, 6 + 8 * ring.num);
}

export interface BringUpOptions {
  features?: bigint;
  /** Queue size to program (default: the device's). */
  num?: number;
  irq?: IrqMode;
  /** Stop before DRIVER_OK. */
  noDriverOk?: boolean;
}

/**
 * Reset, negotiate, set up queue 0, set up the interrupt mode and (unless told) set DRIVER_OK.
 * The status is read back after each step.
 */
export async function bringUp(rig: Rig, opts: BringUpOptions = {}): Promise<VringDriver> {
  const { drv, m } = rig;
  if (opts.irq === 'msix' || opts.irq === 'msix-masked') {
    await rig.pciDrv!.enableMsix();
    const msix = rig.pciDrv!.msix!;
    m.region('msix.table', 'mem', msix.tableBar.addr + msix.tableOffset, 16 * msix.tableSize);
    m.region('msix.pba', 'mem', msix.pbaBar.addr + msix.pbaOffset, 8);
  }
  await drv.init(opts.features ?? 0n);
  await m.note(`status ${hexb(await drv.status())} features ${drv.features.toString(16)}`);
  const ring = await drv.setupQueue(0, opts.num !== undefined ? { num: opts.num } : {});
  nameRing(m, ring);
  if (opts.irq) {
    rig.irq = await IrqObserver.attach(rig, opts.irq);
  }
  if (!opts.noDriverOk) await drv.driverOk();
  await m.note(`status ${hexb(await drv.status())}`);
  return ring;
}

/** Reset and leave the function as the next scenario expects it (MSI-X off). */
export async function teardown(rig: Rig): Promise<void> {
  await rig.drv.setStatus(0);
  await rig.m.note(`status after reset ${hexb(await rig.drv.status())}`);
  if (rig.pciDrv?.msix) await rig.pciDrv.disableMsix();
}

export const hexb = (v: number): string => `0x${v.toString(16).padStart(2, '0')}`;

// --- interrupts --------------------------------------------------------------------------------

/** Route and intercept INTx (pc) or the virtio-mmio line (microvm), once per machine. */
async function intercept(m: RecordingMachine, qomPath: string): Promise<void> {
  await m.quiet(() => m.irqIntercept('in', qomPath).catch(() => undefined));
}

/**
 * Observes the interrupts of queue 0 in one interrupt mode. `check()` after a completion records
 * what a driver sees: ISR (read-to-clear) and INTx line changes, the MSI-X message slot (then
 * re-armed), or the pending bit of a masked vector (then unmasked to see the delivery, and masked
 * again).
 */
export class IrqObserver {
  line = -1;
  qAddr = 0;
  cfgAddr = 0;

  private constructor(readonly rig: Rig, readonly mode: IrqMode) {}

  static async attach(rig: Rig, mode: IrqMode): Promise<IrqObserver> {
    const o = new IrqObserver(rig, mode);
    const m = rig.m;
    if (rig.t.kind === 'mmio') {
      const qmp = m.qmp;
      if (!qmp) throw new Error(`${m.name}: no QMP to find the second I/O APIC with`);
      const path = await findMicrovmIoapic2(qmp);
      await m.note(`ioapic2 ${path}`);
      await intercept(m, path ?? 'ioapic2-not-found');
      o.line = rig.t.index;
      m.watchIrq(o.line);
      return o;
    }
    // PCI: INTx is routed in every mode, so that a stray INTx under MSI-X would show.
    const pirq = await rig.pci!.routeIntx(INTX_IRQ);
    await m.note(`intx pirq ${pirq}`);
    await intercept(m, 'ioapic');
    o.line = INTX_IRQ;
    m.watchIrq(o.line);
    if (mode === 'msix' || mode === 'msix-masked') {
      const drv = rig.pciDrv!;
      const cfg = await drv.msixSetupConfig(0);
      const q = await drv.msixSetupQueue(0, 1);
      o.cfgAddr = cfg.addr;
      o.qAddr = q.addr;
      m.region('msix.slot.config', 'mem', cfg.addr, 4);
      m.region('msix.slot.q0', 'mem', q.addr, 4);
      if (mode === 'msix-masked') await drv.msix!.mask(1, true);
    }
    return o;
  }

  /** Record what the driver sees after a completion (or after nothing should have happened). */
  async check(): Promise<void> {
    const { m } = this.rig;
    switch (this.mode) {
      case 'intx':
        await this.rig.pciDrv!.isr();
        break;
      case 'mmio':
        await this.rig.mmioDrv!.ackInterrupt();
        break;
      case 'msix': {
        const v = await m.readl(this.qAddr);
        if (v !== 0) await m.writel(this.qAddr, 0);
        await m.readl(this.cfgAddr);
        await this.rig.pciDrv!.isr();
        break;
      }
      case 'msix-masked': {
        const msix = this.rig.pciDrv!.msix!;
        await msix.pending(1);
        await m.readl(this.qAddr);
        await msix.mask(1, false);
        await msix.pending(1);
        const v = await m.readl(this.qAddr);
        if (v !== 0) await m.writel(this.qAddr, 0);
        await msix.mask(1, true);
        await this.rig.pciDrv!.isr();
        break;
      }
    }
  }
}

// --- requests ----------------------------------------------------------------------------------

/** The canary the driver fills buffers with; the device must overwrite exactly used.len bytes. */
export const CANARY = 0xa5;
/** Bytes past each buffer that are checked to stay untouched. */
const GUARD = 8;

export interface Buffer {
  addr: number;
  len: number;
}

/** A buffer of `len` device-writable bytes, canary-filled, with a guard after it. */
export async function newBuffer(rig: Rig, len: number): Promise<Buffer> {
  const addr = rig.alloc.alloc(len + GUARD, 16);
  await rig.m.memset(addr, len + GUARD, CANARY);
  return { addr, len };
}

/**
 * Summarise what the device wrote into a buffer of `cap` writable bytes (`used.len` bytes are
 * expected to be random): recorded as the used length, whether the bytes past it are intact, and
 * whether the written bytes changed (only for 8 bytes or more: fewer can equal the canary by
 * chance).
 */
export async function summarise(rig: Rig, b: Buffer, usedLen: number): Promise<string> {
  const bytes = await rig.m.quiet(() => rig.m.readBytes(b.addr, b.len + GUARD));
  const n = Math.min(usedLen, b.len);
  let intact = true;
  for (let i = n; i < bytes.length; i++) if (bytes[i] !== CANARY) intact = false;
  let changed = 0;
  for (let i = 0; i < n; i++) if (bytes[i] !== CANARY) changed++;
  if (n === 0) return intact ? 'untouched' : 'WRITTEN although used.len is 0';
  const filled = n >= 8 ? (changed > 0 ? 'random' : 'UNCHANGED') : 'short';
  return `${filled}, ${intact ? 'rest intact' : 'REST OVERWRITTEN'}`;
}

export const fmtUsed = (u: readonly UsedEntry[]): string => (u.length === 0 ? 'none' : u.map((e) => `${e.id}:${e.len}`).join(' '));

/**
 * Wait (bounded, unrecorded) for `count` used entries and note them. Times out quietly: the
 * note then says how many came.
 */
export async function waitUsed(rig: Rig, ring: VringDriver, count: number, timeoutMs = 2000): Promise<UsedEntry[]> {
  const got: UsedEntry[] = [];
  await rig.m.quiet(async () => {
    try {
      await poll(
        rig.m,
        async () => {
          got.push(...(await ring.takeUsed()));
          return got.length >= count;
        },
        { timeoutMs, what: `${count} used entries` },
      );
    } catch {
      /* noted below */
    }
  });
  await rig.m.note(`used ${fmtUsed(got)}${got.length < count ? ` (waited for ${count})` : ''}`);
  return got;
}

/**
 * Post one request per entry of `chains` (each a list of writable lengths; `indirect` puts each
 * chain in an indirect table), notify once, wait for the used entries, note them and what the
 * device wrote, and check interrupts.
 */
export async function requests(rig: Rig, ring: VringDriver, chains: readonly (readonly number[])[], opts: { indirect?: boolean; notify?: boolean } = {}): Promise<UsedEntry[]> {
  const { m } = rig;
  const posted: { head: number; bufs: Buffer[] }[] = [];
  for (const lens of chains) {
    const bufs: Buffer[] = [];
    for (const len of lens) bufs.push(await newBuffer(rig, len));
    const dbs: DriverBuffer[] = bufs.map((b) => ({ addr: b.addr, len: b.len, write: true }));
    const table = opts.indirect ? rig.alloc.alloc(16 * dbs.length, 16) : undefined;
    const head = await ring.add(dbs, table !== undefined ? { indirectTable: table } : {});
    posted.push({ head, bufs });
  }
  if (opts.notify ?? true) await rig.drv.notify(0);
  const used = await waitUsed(rig, ring, posted.length);
  for (const u of used) {
    const p = posted.find((x) => x.head === u.id);
    if (!p) continue;
    let left = u.len;
    const parts: string[] = [];
    for (const b of p.bufs) {
      parts.push(await summarise(rig, b, Math.max(0, left)));
      left -= b.len;
    }
    await m.note(`data of ${u.id}: ${parts.join(' | ')}`);
  }
  await rig.irq?.check();
  return used;
}

/** Read the status and note whether NEEDS_RESET is set. */
export async function needsReset(rig: Rig): Promise<boolean> {
  const s = await rig.drv.status();
  return (s & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
}
