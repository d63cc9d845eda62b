// pc + virtio-rng-pci scenarios: modern, legacy and transitional (driven both ways), INTx through
// PIIX3 PIRQ routing and MSI-X checked the libqos way. The expected values are what QEMU 7.2
// (Debian 12, 7.2.22) shows a driver with `-nodefaults`; see shared/notes/qemu-oracle.md §2.2, §4.
import { expect } from 'vitest';
import { waitIrq, poll, type Machine } from '../../../src/driver/machine.js';
import { GuestPciBus, PciRegs, pcPirqForPin, type BarInfo, type GuestPciDevice } from '../../../src/driver/pci.js';
import { RngDriver } from '../../../src/driver/rng.js';
import {
  LIBQOS_MSIX_DATA,
  VIRTIO_PCI_CAP_COMMON_CFG,
  VIRTIO_PCI_CAP_DEVICE_CFG,
  VIRTIO_PCI_CAP_ISR_CFG,
  VIRTIO_PCI_CAP_NOTIFY_CFG,
  VIRTIO_PCI_CAP_PCI_CFG,
  VirtioPciCommon,
  VirtioPciDriver,
  VirtioPciLegacy,
  readVirtioCaps,
  type VirtioPciMode,
} from '../../../src/driver/virtio-pci-driver.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_BAD_FEATURE,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_RNG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../../src/virtio/constants.js';
import { VIRTIO_NO_VECTOR } from '../../../src/vring/constants.js';
import type { Scenario, ScenarioContext, ScenarioGroup } from './suite.js';

/** The functions QEMU's pc has with -nodefaults before any -device: i440FX, PIIX3 ISA/IDE/PM. */
const PC_BASE_FUNCTIONS = ['00:00.0 8086:1237', '00:01.0 8086:7000', '00:01.1 8086:7010', '00:01.3 8086:7113'];

/** INTx is routed to this ISA IRQ (what SeaBIOS would pick for PIRQ links: 10 or 11). */
const INTX_IRQ = 11;

interface PciCase {
  label: string;
  slot: number;
  mode: VirtioPciMode;
  pciDeviceId: number;
  revision: number;
  subsystemId: number;
  /** BARs as listed by sizing. */
  bars: BarInfo[];
  /** Config offset of the MSI-X capability. */
  msixCap: number;
  /** Capability chain from 0x34, as [id, offset]. */
  caps: [number, number][];
  /** What the device offers through the interface driven. */
  deviceFeatures: bigint;
  /** What the scenario asks for, and what must be negotiated and read back. */
  wanted: bigint;
  negotiated: bigint;
  queueMax: number;
  /** Size the scenario programs (modern can shrink the queue; legacy cannot). */
  queueNum: number;
}

const MODERN_FEATURES = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_RESET) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX);
const LEGACY_FEATURES = bit(VIRTIO_F_BAD_FEATURE) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_ANY_LAYOUT) | bit(VIRTIO_F_NOTIFY_ON_EMPTY);

const BAR_IO0: BarInfo = { index: 0, kind: 'io', prefetchable: false, size: 0x20 };
const BAR_MSIX1: BarInfo = { index: 1, kind: 'mem32', prefetchable: false, size: 0x1000 };
const BAR_MODERN4: BarInfo = { index: 4, kind: 'mem64', prefetchable: true, size: 0x4000 };
const MODERN_CAPS: [number, number][] = [
  [0x11, 0x98],
  [0x09, 0x84],
  [0x09, 0x70],
  [0x09, 0x60],
  [0x09, 0x50],
  [0x09, 0x40],
];

const modernCase = (label: string, slot: number, pciDeviceId: number, revision: number, subsystemId: number, bars: BarInfo[]): PciCase => ({
  label,
  slot,
  mode: 'modern',
  pciDeviceId,
  revision,
  subsystemId,
  bars,
  msixCap: 0x98,
  caps: MODERN_CAPS,
  deviceFeatures: MODERN_FEATURES,
  wanted: bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_RING_RESET),
  negotiated: MODERN_FEATURES,
  queueMax: 8,
  queueNum: 4,
});

const legacyCase = (label: string, slot: number, caps: [number, number][], msixCap: number, bars: BarInfo[], revision: number): PciCase => ({
  label,
  slot,
  mode: 'legacy',
  pciDeviceId: 0x1005,
  revision,
  subsystemId: VIRTIO_ID_RNG,
  bars,
  msixCap,
  caps,
  deviceFeatures: LEGACY_FEATURES,
  wanted: bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT),
  negotiated: bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT),
  queueMax: 8,
  queueNum: 8,
});

const MODERN = modernCase('modern', 4, 0x1044, 1, 0x1100, [BAR_MSIX1, BAR_MODERN4]);
const LEGACY = legacyCase('legacy', 3, [[0x11, 0x40]], 0x40, [BAR_IO0, BAR_MSIX1], 0);
const TRANS_MODERN: PciCase = { ...modernCase('transitional, modern interface', 2, 0x1005, 0, VIRTIO_ID_RNG, [BAR_IO0, BAR_MSIX1, BAR_MODERN4]) };
const TRANS_LEGACY: PciCase = { ...legacyCase('transitional, legacy interface', 2, MODERN_CAPS, 0x98, [BAR_IO0, BAR_MSIX1, BAR_MODERN4], 0) };

async function findDevice(machine: Machine, c: PciCase): Promise<{ bus: GuestPciBus; dev: GuestPciDevice }> {
  const bus = new GuestPciBus(machine);
  const devs = await bus.scan();
  const dev = devs.find((d) => d.slot === c.slot && d.fn === 0);
  if (!dev) throw new Error(`no device in slot ${c.slot}: ${devs.map(String).join(', ')}`);
  return { bus, dev };
}

/** Enumerate, open the interface, and bring the device up to DRIVER_OK with queue 0. */
async function bringUp(ctx: ScenarioContext, c: PciCase, wanted = 0n, msix = false): Promise<{ drv: VirtioPciDriver; dev: GuestPciDevice; bus: GuestPciBus; rng: RngDriver }> {
  const { bus, dev } = await findDevice(ctx.machine, c);
  const drv = await VirtioPciDriver.open(dev, { mode: c.mode, alloc: ctx.alloc });
  if (msix) await drv.enableMsix();
  await drv.init(wanted);
  const ring = await drv.setupQueue(0, { num: c.queueNum });
  return { drv, dev, bus, rng: new RngDriver(drv, ring) };
}

function pciScenarios(c: PciCase): Scenario[] {
  const tag = `[${c.label}]`;
  return [
    {
      name: `${tag} enumerates bus 0 and reads the device's ids, capabilities and BARs`,
      async run(ctx) {
        const bus = new GuestPciBus(ctx.machine);
        const devs = await bus.scan();
        const slotName = `00:${c.slot.toString(16).padStart(2, '0')}.0 1af4:${c.pciDeviceId.toString(16)}`;
        expect(devs.map(String)).toEqual([...PC_BASE_FUNCTIONS, slotName].sort());
        const dev = devs.find((d) => d.slot === c.slot)!;
        expect(dev.ids).toEqual({
          vendorId: 0x1af4,
          deviceId: c.pciDeviceId,
          revision: c.revision,
          classCode: 0x00ff00,
          subsystemVendorId: 0x1af4,
          subsystemId: c.subsystemId,
        });
        expect(await dev.interruptPin()).toBe(1);
        expect((await dev.capabilities()).map((x) => [x.id, x.offset])).toEqual(c.caps);
        expect(await dev.listBars()).toEqual(c.bars);
        // Nothing is configured without firmware: command 0, PIRQ links disabled.
        expect(await dev.command()).toBe(0);
        for (let p = 0; p < 4; p++) expect(await bus.pirqRoute(p)).toBe(0x80);
        if (c.caps.some(([id]) => id === 0x09)) {
          const caps = (await readVirtioCaps(dev)).map(({ cfgType, bar, offset, length, notifyOffMultiplier }) => ({ cfgType, bar, offset, length, notifyOffMultiplier }));
          expect(caps).toEqual([
            { cfgType: VIRTIO_PCI_CAP_PCI_CFG, bar: 0, offset: 0, length: 0, notifyOffMultiplier: undefined },
            { cfgType: VIRTIO_PCI_CAP_NOTIFY_CFG, bar: 4, offset: 0x3000, length: 0x1000, notifyOffMultiplier: 4 },
            { cfgType: VIRTIO_PCI_CAP_DEVICE_CFG, bar: 4, offset: 0x2000, length: 0x1000, notifyOffMultiplier: undefined },
            { cfgType: VIRTIO_PCI_CAP_ISR_CFG, bar: 4, offset: 0x1000, length: 0x1000, notifyOffMultiplier: undefined },
            { cfgType: VIRTIO_PCI_CAP_COMMON_CFG, bar: 4, offset: 0, length: 0x1000, notifyOffMultiplier: undefined },
          ]);
        }
        // Mapping places BARs in libqos's windows and enables decoding and bus mastering.
        const drv = await VirtioPciDriver.open(dev, { mode: c.mode, alloc: ctx.alloc });
        expect(drv.deviceId).toBe(VIRTIO_ID_RNG);
        expect((await dev.command()) & 7).toBe(7);
        for (const b of dev.bars) {
          if (!b) continue;
          if (b.isIo) expect(b.addr).toBeGreaterThanOrEqual(0xc000);
          else expect(b.addr).toBeGreaterThanOrEqual(0xe000_0000);
          expect(b.addr % b.size).toBe(0);
        }
      },
    },
    {
      name: `${tag} negotiates features (device 0x${c.deviceFeatures.toString(16)}, driver 0x${c.negotiated.toString(16)})`,
      async run(ctx) {
        const { dev } = await findDevice(ctx.machine, c);
        const drv = await VirtioPciDriver.open(dev, { mode: c.mode, alloc: ctx.alloc });
        const f = await drv.init(c.wanted);
        expect(drv.deviceFeatures).toBe(c.deviceFeatures);
        expect(f).toBe(c.negotiated);
        expect(await drv.readDriverFeatures()).toBe(c.negotiated);
        const ok = c.mode === 'modern' ? VIRTIO_CONFIG_S_FEATURES_OK : 0;
        expect(await drv.status()).toBe(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | ok);
        if (c.mode === 'legacy') {
          // A legacy driver that acks VIRTIO_F_BAD_FEATURE is assumed to negotiate nothing:
          // QEMU replaces its features with the device's "bad features" (none for rng).
          await drv.writeDriverFeatures(c.deviceFeatures);
          expect(await drv.readDriverFeatures()).toBe(0n);
        } else {
          // The high feature word of a modern device, selected explicitly.
          expect(await drv.readDeviceFeatures()).toBe(c.deviceFeatures);
        }
        await drv.reset();
        expect(await drv.status()).toBe(0);
      },
    },
    {
      name: `${tag} sets up queue 0 (size ${c.queueNum} of ${c.queueMax})`,
      async run(ctx) {
        const { dev } = await findDevice(ctx.machine, c);
        const drv = await VirtioPciDriver.open(dev, { mode: c.mode, alloc: ctx.alloc });
        await drv.init(0n);
        expect(await drv.queueMax(0)).toBe(c.queueMax);
        expect(await drv.queueMax(1)).toBe(0);
        const ring = await drv.setupQueue(0, { num: c.queueNum });
        expect(ring.num).toBe(c.queueNum);
        const bar = dev.bars;
        if (c.mode === 'modern') {
          const common = bar[4]!;
          expect(await drv.numQueues()).toBe(1);
          await common.writew(VirtioPciCommon.Q_SELECT, 0);
          expect(await common.readw(VirtioPciCommon.Q_SIZE)).toBe(c.queueNum);
          expect(await common.readw(VirtioPciCommon.Q_ENABLE)).toBe(1);
          expect(await common.readw(VirtioPciCommon.Q_NOFF)).toBe(0);
          expect(drv.queueNotifyOff(0)).toBe(0);
          expect(await common.readw(VirtioPciCommon.Q_MSIX)).toBe(VIRTIO_NO_VECTOR);
          // The common configuration takes accesses of up to 4 bytes: read each address as two halves.
          const addr = async (lo: number): Promise<number> => (await common.readl(lo)) + (await common.readl(lo + 4)) * 2 ** 32;
          expect(await addr(VirtioPciCommon.Q_DESCLO)).toBe(ring.addrs.desc);
          expect(await addr(VirtioPciCommon.Q_AVAILLO)).toBe(ring.addrs.avail);
          expect(await addr(VirtioPciCommon.Q_USEDLO)).toBe(ring.addrs.used);
        } else {
          const io = bar[0]!;
          await io.writew(VirtioPciLegacy.QUEUE_SEL, 0);
          expect(await io.readl(VirtioPciLegacy.QUEUE_PFN)).toBe(ring.addrs.desc / 4096);
          expect(await io.readw(VirtioPciLegacy.QUEUE_NUM)).toBe(c.queueMax);
          // The legacy layout: used ring at the next 4096 boundary after the avail ring.
          expect(ring.addrs.used).toBe(ring.addrs.desc + 4096);
        }
        await drv.driverOk();
        expect((await drv.status()) & VIRTIO_CONFIG_S_DRIVER_OK).toBe(VIRTIO_CONFIG_S_DRIVER_OK);
        await drv.reset();
      },
    },
    {
      name: `${tag} serves 20 rng requests across more than one lap of the ring`,
      async run(ctx) {
        const { drv, rng } = await bringUp(ctx, c);
        await drv.driverOk();
        const ring = rng.ring;
        const bufs = Array.from({ length: 20 }, (_, i) => ({ addr: ctx.alloc.alloc(64), len: 8 + i }));
        let done = 0;
        while (done < bufs.length) {
          // Fill the whole ring, one notify per batch.
          const batch = bufs.slice(done, done + ring.num);
          const heads: number[] = [];
          for (const b of batch) heads.push(await ring.add([{ addr: b.addr, len: b.len, write: true }]));
          expect(heads.every((h) => h >= 0)).toBe(true);
          expect(ring.freeDescriptors).toBe(ring.num - batch.length);
          await drv.notify(0);
          const used = await ring.waitUsed(batch.length);
          expect(used).toEqual(batch.map((b, k) => ({ id: heads[k], len: b.len })));
          for (const b of batch) {
            const bytes = await ctx.machine.readBytes(b.addr, b.len);
            expect(bytes.some((x) => x !== 0)).toBe(true);
          }
          done += batch.length;
        }
        expect(await ring.usedIdx()).toBe(20);
        expect(ring.availIdx).toBe(20);
        expect(20).toBeGreaterThan(ring.num);
        await drv.reset();
      },
    },
    {
      name: `${tag} indirect tables and EVENT_IDX`,
      async run(ctx) {
        const { drv, rng } = await bringUp(ctx, c, bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX));
        await drv.driverOk();
        const ring = rng.ring;
        expect(ring.eventIdx).toBe(true);
        const table = ctx.alloc.alloc(64, 16);
        const a = ctx.alloc.alloc(8);
        const b = ctx.alloc.alloc(24);
        const head = await ring.add(
          [
            { addr: a, len: 8, write: true },
            { addr: b, len: 24, write: true },
          ],
          { indirectTable: table },
        );
        expect(ring.freeDescriptors).toBe(ring.num - 1);
        expect(await ring.needsNotify()).toBe(true);
        await drv.notify(0);
        expect(await ring.waitUsed(1)).toEqual([{ id: head, len: 32 }]);
        // The device published avail_event = its last_avail_idx, so the next add needs a kick.
        expect(await ring.availEvent()).toBe(1);
        // The driver asked to be told of used index 1 onwards (used_event = last used idx).
        expect(await ctx.machine.readw(ring.addrs.avail + 4 + 2 * ring.num)).toBe(1);
        for (let i = 0; i < 3; i++) {
          await ring.add([{ addr: a, len: 8, write: true }]);
          expect(await ring.needsNotify()).toBe(true);
          await drv.notify(0);
          expect((await ring.waitUsed(1))[0]!.len).toBe(8);
          expect(await ring.availEvent()).toBe(2 + i);
        }
        await drv.reset();
      },
    },
    {
      name: `${tag} INTx through PIIX3 PIRQ routing: IRQ raise, ISR read-to-clear, IRQ lower`,
      async run(ctx) {
        const m = ctx.machine;
        const { drv, dev, bus, rng } = await bringUp(ctx, c);
        await drv.driverOk();
        const pirq = await dev.routeIntx(INTX_IRQ);
        expect(pirq).toBe(pcPirqForPin(c.slot, 1));
        expect(pirq).toBe((c.slot - 1) & 3);
        expect(await bus.pirqRoute(pirq)).toBe(INTX_IRQ);
        await m.irqIntercept('in', 'ioapic');
        const mark = m.irq.mark();
        const r = await rng.request(16);
        expect(r.len).toBe(16);
        await waitIrq(m, INTX_IRQ, true, { mark });
        expect(m.irq.level(INTX_IRQ)).toBe(true);
        expect((await dev.status()) & PciRegs.STATUS_INTERRUPT).toBe(PciRegs.STATUS_INTERRUPT);
        expect(await drv.isr()).toBe(1);
        await waitIrq(m, INTX_IRQ, false, { mark });
        expect(await drv.isr()).toBe(0);
        expect((await dev.status()) & PciRegs.STATUS_INTERRUPT).toBe(0);
        // One raise and one lower on this line. (Other IOAPIC pins may move too: under TCG the
        // PIT runs on host time.)
        expect(m.irq.since(mark).filter((e) => e.line === INTX_IRQ).map((e) => [e.line, e.level])).toEqual([
          [INTX_IRQ, true],
          [INTX_IRQ, false],
        ]);
        // INTX_DISABLE in the command register keeps the line low.
        await dev.setCommand((await dev.command()) | PciRegs.COMMAND_INTX_DISABLE);
        const mark2 = m.irq.mark();
        await rng.request(16);
        expect((await dev.status()) & PciRegs.STATUS_INTERRUPT).toBe(PciRegs.STATUS_INTERRUPT);
        expect(m.irq.count(INTX_IRQ, true, mark2)).toBe(0);
        expect(await drv.isr()).toBe(1);
        await dev.setCommand((await dev.command()) & ~PciRegs.COMMAND_INTX_DISABLE);
        await drv.reset();
      },
    },
    {
      name: `${tag} MSI-X: message written into RAM with data 0x12345678 and re-armed`,
      async run(ctx) {
        const m = ctx.machine;
        const { drv, dev, rng } = await bringUp(ctx, c, 0n, true);
        try {
          const msix = drv.msix!;
          expect(msix.cap).toBe(c.msixCap);
          expect(msix.tableSize).toBe(2);
          expect(msix.tableBar.info.index).toBe(1);
          expect(msix.tableOffset).toBe(0);
          expect(msix.pbaOffset).toBe(0x800);
          const cfg = await drv.msixSetupConfig(0);
          const q = await drv.msixSetupQueue(0, 1);
          expect(await msix.readEntry(1)).toEqual({ addr: BigInt(q.addr), data: LIBQOS_MSIX_DATA, vectorCtrl: 0 });
          // A vector past the table is refused: it reads back NO_VECTOR.
          expect(await drv.setQueueVector(0, 2)).toBe(VIRTIO_NO_VECTOR);
          expect(await drv.setQueueVector(0, 1)).toBe(1);
          await drv.driverOk();
          // INTx stays quiet while MSI-X is on.
          await dev.routeIntx(INTX_IRQ);
          await m.irqIntercept('in', 'ioapic');
          const mark = m.irq.mark();
          for (let i = 0; i < 3; i++) {
            expect(await m.readl(q.addr)).toBe(0);
            const r = await rng.request(16);
            expect(r.len).toBe(16);
            expect(await poll(m, () => m.readl(q.addr).then((v) => v === LIBQOS_MSIX_DATA), { what: 'MSI-X message in RAM' })).toBe(true);
            // libqos: seen, then re-armed by writing 0.
            expect(await drv.queueInterrupted(0)).toBe(true);
            expect(await m.readl(q.addr)).toBe(0);
            expect(await drv.queueInterrupted(0)).toBe(false);
            // The ISR bit is set alongside MSI-X; reading clears it.
            expect(await drv.isr()).toBe(1);
          }
          expect(await m.readl(cfg.addr)).toBe(0);
          expect(m.irq.count(INTX_IRQ, true, mark)).toBe(0);
          expect(await msix.pending(1)).toBe(false);
        } finally {
          await drv.reset();
          await drv.disableMsix();
        }
      },
    },
    {
      name: `${tag} MSI-X: a masked vector sets its PBA bit and unmasking delivers`,
      async run(ctx) {
        const m = ctx.machine;
        const { drv, rng } = await bringUp(ctx, c, 0n, true);
        try {
          const msix = drv.msix!;
          await drv.msixSetupConfig(0);
          const q = await drv.msixSetupQueue(0, 1);
          await drv.driverOk();
          await msix.mask(1, true);
          expect(await msix.masked(1)).toBe(true);
          expect(await msix.pending(1)).toBe(false);
          const r = await rng.request(16);
          expect(r.len).toBe(16);
          expect(await poll(m, () => msix.pending(1), { what: 'PBA bit of the masked vector' })).toBe(true);
          expect(await m.readl(q.addr)).toBe(0);
          // libqos: masked → report the pending bit.
          expect(await drv.queueInterrupted(0)).toBe(true);
          expect(await msix.pending(0)).toBe(false);
          await msix.mask(1, false);
          expect(await poll(m, () => m.readl(q.addr).then((v) => v === LIBQOS_MSIX_DATA), { what: 'MSI-X message after unmask' })).toBe(true);
          expect(await msix.pending(1)).toBe(false);
          await m.writel(q.addr, 0);
          // The function mask works the same way.
          await msix.setMaskAll(true);
          expect(await msix.masked(1)).toBe(true);
          await rng.request(16);
          expect(await poll(m, () => msix.pending(1), { what: 'PBA bit under the function mask' })).toBe(true);
          expect(await m.readl(q.addr)).toBe(0);
          await msix.setMaskAll(false);
          expect(await poll(m, () => m.readl(q.addr).then((v) => v === LIBQOS_MSIX_DATA), { what: 'MSI-X message after function unmask' })).toBe(true);
          expect(await msix.pending(1)).toBe(false);
        } finally {
          await drv.reset();
          await drv.disableMsix();
        }
      },
    },
  ];
}

const rngPci = (opts: string): string => `virtio-rng-pci,ioeventfd=off${opts}`;

export const PCI_GROUPS: ScenarioGroup[] = [
  {
    name: 'pc, virtio-rng-pci modern (disable-legacy=on) at 04.0',
    spec: { machine: 'pc', args: ['-device', rngPci(',disable-legacy=on,addr=04.0')] },
    scenarios: pciScenarios(MODERN),
  },
  {
    // QEMU's default under qtest: the notify only signals an eventfd and the device runs later
    // in QEMU's main loop, so completions and interrupts are asynchronous (bounded polling).
    name: 'pc, virtio-rng-pci modern at 04.0 with ioeventfd on (the default)',
    spec: { machine: 'pc', args: ['-device', 'virtio-rng-pci,disable-legacy=on,addr=04.0'] },
    scenarios: pciScenarios(MODERN).filter((s) => /20 rng requests|INTx|MSI-X/.test(s.name)),
  },
  {
    name: 'pc, virtio-rng-pci legacy (disable-modern=on) at 03.0',
    spec: { machine: 'pc', args: ['-device', rngPci(',disable-modern=on,addr=03.0')] },
    scenarios: pciScenarios(LEGACY),
  },
  {
    name: 'pc, virtio-rng-pci transitional (defaults) at 02.0, modern interface',
    spec: { machine: 'pc', args: ['-device', rngPci('')] },
    scenarios: pciScenarios(TRANS_MODERN),
  },
  {
    name: 'pc, virtio-rng-pci transitional (defaults) at 02.0, legacy interface',
    spec: { machine: 'pc', args: ['-device', rngPci('')] },
    scenarios: pciScenarios(TRANS_LEGACY),
  },
];
