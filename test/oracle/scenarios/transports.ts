// Conformance scenarios of virtio-rng on every transport mode and interrupt mode: enumeration and
// the full configuration space, feature negotiation (refused features, FEATURES_OK read-back),
// queue set-up with default and resized queues, requests over several laps, EVENT_IDX and
// indirect descriptors on and off, reset in the middle of work, notify before DRIVER_OK, and a
// legacy driver kicking before DRIVER_OK. They record; the oracle compares.
import { GuestPciBus } from '../../../src/driver/pci.js';
import { MICROVM_MMIO_BASE, scanMmio } from '../../../src/driver/virtio-mmio-driver.js';
import { VirtioPciCommon, VirtioPciLegacy, readVirtioCaps } from '../../../src/driver/virtio-pci-driver.js';
import type { VringDriver } from '../../../src/driver/vring.js';
import type { OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import {
  VIRTIO_MMIO_CONFIG,
  VIRTIO_MMIO_DEVICE_FEATURES,
  VIRTIO_MMIO_DEVICE_FEATURES_SEL,
  VIRTIO_MMIO_DRIVER_FEATURES,
  VIRTIO_MMIO_DRIVER_FEATURES_SEL,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_NUM_MAX,
  VIRTIO_MMIO_QUEUE_SEL,
} from '../../../src/bus/virtio-mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../../src/virtio/constants.js';
import {
  bringUp,
  isModern,
  nameRing,
  newBuffer,
  openRig,
  requests,
  summarise,
  teardown,
  waitUsed,
  type IrqMode,
  type MmioTransport,
  type PciTransport,
  type Rig,
  type Transport,
} from './rig.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
/** What a legacy driver typically acks on top (Linux acks both). */
const LEGACY_EXTRA = bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT);

const irqModes = (t: Transport): IrqMode[] => (t.kind === 'pci' ? ['intx', 'msix', 'msix-masked'] : ['mmio']);
const defaultIrq = (t: Transport): IrqMode => (t.kind === 'pci' ? 'intx' : 'mmio');
/** Queue size used by scenarios that do not test sizes: QEMU's rng has 8 on PCI; MMIO offers 1024. */
const workNum = (t: Transport): number | undefined => (t.kind === 'mmio' ? 8 : undefined);

// --- register dumps ------------------------------------------------------------------------------

async function dumpModernCommon(rig: Rig): Promise<void> {
  const c = rig.pciDrv!;
  const bar = rig.pci!.bars;
  const cap = c.caps.find((x) => x.cfgType === 1)!;
  const base = bar[cap.bar]!;
  const at = cap.offset;
  // Every dword, then each field with its own width, then the feature words by selector.
  for (let o = 0; o < 0x40; o += 4) await base.readl(at + o);
  const w16 = [VirtioPciCommon.MSIX, VirtioPciCommon.NUMQ, VirtioPciCommon.Q_SELECT, VirtioPciCommon.Q_SIZE, VirtioPciCommon.Q_MSIX, VirtioPciCommon.Q_ENABLE, VirtioPciCommon.Q_NOFF, VirtioPciCommon.Q_NDATA, VirtioPciCommon.Q_RESET];
  for (const o of w16) await base.readw(at + o);
  await base.readb(at + VirtioPciCommon.STATUS);
  await base.readb(at + VirtioPciCommon.CFGGENERATION);
  for (const sel of [0, 1, 2, 0xffff_ffff]) {
    await base.writel(at + VirtioPciCommon.DFSELECT, sel);
    await base.readl(at + VirtioPciCommon.DF);
    await base.writel(at + VirtioPciCommon.GFSELECT, sel);
    await base.readl(at + VirtioPciCommon.GF);
  }
  await base.writel(at + VirtioPciCommon.DFSELECT, 0);
  await base.writel(at + VirtioPciCommon.GFSELECT, 0);
}

async function dumpLegacy(rig: Rig): Promise<void> {
  const io = rig.pci!.bars[0]!;
  for (let o = 0; o < io.size; o++) await io.readb(o);
  for (let o = 0; o < io.size; o += 2) await io.readw(o);
  for (let o = 0; o < io.size; o += 4) await io.readl(o);
}

async function dumpMsix(rig: Rig): Promise<void> {
  const dev = rig.pci!;
  const cap = await dev.findCapability(0x11);
  if (!cap) return;
  const table = await dev.readl(cap + 4);
  const pba = await dev.readl(cap + 8);
  const size = ((await dev.readw(cap + 2)) & 0x7ff) + 1;
  const tbar = dev.bars[table & 7];
  const pbar = dev.bars[pba & 7];
  if (!tbar || !pbar) return;
  for (let o = 0; o < size * 16; o += 4) await tbar.readl((table & ~7) + o);
  await pbar.readl(pba & ~7);
}

async function dumpMmio(rig: Rig): Promise<void> {
  const base = rig.mmioDrv!.base;
  const m = rig.m;
  for (let o = 0; o < 0x100; o += 4) await m.readl(base + o);
  for (let o = VIRTIO_MMIO_CONFIG; o < VIRTIO_MMIO_CONFIG + 0x10; o += 4) await m.readl(base + o);
  for (const sel of [0, 1, 2]) {
    await m.writel(base + VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
    await m.readl(base + VIRTIO_MMIO_DEVICE_FEATURES);
  }
  await m.writel(base + VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
}

/** Read msix_config (modern common config, or legacy 0x14 while MSI-X is on). */
async function configVector(rig: Rig): Promise<void> {
  const drv = rig.pciDrv!;
  if (rig.t.kind !== 'pci') return;
  if (rig.t.mode === 'legacy') {
    if (drv.msix) await rig.pci!.bars[0]!.readw(VirtioPciLegacy.MSI_CONFIG_VECTOR);
    return;
  }
  const cap = drv.caps.find((x) => x.cfgType === 1)!;
  await rig.pci!.bars[cap.bar]!.readw(cap.offset + VirtioPciCommon.MSIX);
}

/** Read back the selected queue's registers. */
async function dumpQueue(rig: Rig, index: number): Promise<void> {
  const m = rig.m;
  if (rig.t.kind === 'mmio') {
    const base = rig.mmioDrv!.base;
    await m.writel(base + VIRTIO_MMIO_QUEUE_SEL, index);
    for (let o = VIRTIO_MMIO_QUEUE_NUM_MAX; o <= 0x44; o += 4) await m.readl(base + o);
    for (let o = 0x80; o <= 0xa4; o += 4) await m.readl(base + o);
    return;
  }
  const drv = rig.pciDrv!;
  await drv.selectQueue(index);
  if (rig.t.mode === 'legacy') {
    const io = rig.pci!.bars[0]!;
    await io.readw(VirtioPciLegacy.QUEUE_NUM);
    await io.readl(VirtioPciLegacy.QUEUE_PFN);
    await io.readw(VirtioPciLegacy.QUEUE_SEL);
    if (drv.msix) await io.readw(VirtioPciLegacy.MSI_QUEUE_VECTOR);
    return;
  }
  const cap = drv.caps.find((x) => x.cfgType === 1)!;
  const bar = rig.pci!.bars[cap.bar]!;
  for (let o = VirtioPciCommon.Q_SELECT; o < 0x3c; o += 2) await bar.readw(cap.offset + o);
  for (let o = VirtioPciCommon.Q_DESCLO; o < VirtioPciCommon.Q_NDATA; o += 4) await bar.readl(cap.offset + o);
}

// --- scenarios -----------------------------------------------------------------------------------

function enumeration(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] enumeration and the full configuration space`,
    async run(ctx) {
      const m = ctx.m;
      if (t.kind === 'pci') {
        await m.phase('scan');
        const bus = new GuestPciBus(m);
        const devs = await bus.scan();
        await m.note(`functions ${devs.map(String).join(', ')}`);
        await m.phase('config space');
        const dev = await bus.device(t.slot);
        await dev.configDump();
        await m.phase('bars and capabilities');
        await m.note(`bars ${JSON.stringify(await dev.listBars())}`);
        await m.note(`caps ${JSON.stringify(await dev.capabilities())}`);
        await m.note(`virtio caps ${JSON.stringify(await readVirtioCaps(dev))}`);
        await m.phase('mapped');
        const rig = await openRig(ctx, t);
        await rig.pci!.configDump();
        await m.phase('registers');
        if (t.mode === 'modern') {
          await dumpModernCommon(rig);
          const drv = rig.pciDrv!;
          await drv.isr();
          for (const c of drv.caps) {
            const b = rig.pci!.bars[c.bar];
            if (b && !b.isIo && c.cfgType >= 2 && c.cfgType <= 4) {
              await b.readl(c.offset);
              await b.readb(c.offset);
            }
          }
        } else {
          await dumpLegacy(rig);
        }
        await dumpMsix(rig);
        await teardown(rig);
        return;
      }
      await m.phase('scan');
      const all = await scanMmio(m);
      await m.note(`transports ${all.map((x) => `${x.index}:v${x.version}:id${x.deviceId}`).join(' ')}`);
      await m.readl(MICROVM_MMIO_BASE + 0x200 * all.length);
      await m.phase('registers');
      const rig = await openRig(ctx, t);
      await dumpMmio(rig);
      // An empty transport's registers.
      await m.phase('empty transport');
      for (let o = 0; o < 0x100; o += 4) await m.readl(MICROVM_MMIO_BASE + o);
      await teardown(rig);
    },
  };
}

/** The handshake step by step, with the status read after every write. */
async function handshake(rig: Rig, driverFeatures: bigint, statuses: number[]): Promise<void> {
  const { drv, m } = rig;
  await drv.setStatus(0);
  await drv.status();
  await drv.readDeviceFeatures();
  await m.note(`device features ${drv.deviceFeatures.toString(16)}`);
  for (const s of statuses) {
    if (s === -1) {
      await drv.writeDriverFeatures(driverFeatures);
      if (rig.pciDrv) await m.note(`driver features read back ${(await rig.pciDrv.readDriverFeatures()).toString(16)}`);
      continue;
    }
    await drv.setStatus(s);
    await drv.status();
  }
}

function features(t: Transport): OracleScenario {
  const modern = isModern(t);
  return {
    name: `[${t.label}] feature negotiation and FEATURES_OK read-back`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('negotiate');
      const wanted = modern ? bit(VIRTIO_F_VERSION_1) | EI | IND | bit(VIRTIO_F_RING_RESET) : EI | IND | LEGACY_EXTRA;
      await handshake(rig, wanted, modern ? [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK, ACK | DRIVER | FEATURES_OK | DRIVER_OK] : [ACK, ACK | DRIVER, -1, ACK | DRIVER | DRIVER_OK]);
      if (t.kind === 'mmio') {
        const base = rig.mmioDrv!.base;
        for (const sel of [0, 1, 2]) {
          await m.writel(base + VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
          await m.readl(base + VIRTIO_MMIO_DRIVER_FEATURES);
        }
      }
      await m.phase('reset');
      await drv_reset(rig);
      if (rig.pciDrv) await m.note(`driver features after reset ${(await rig.pciDrv.readDriverFeatures()).toString(16)}`);
      await teardown(rig);
    },
  };
}

async function drv_reset(rig: Rig): Promise<void> {
  await rig.drv.setStatus(0);
  await rig.drv.status();
}

function refusedFeatures(t: Transport): OracleScenario {
  const modern = isModern(t);
  return {
    name: `[${t.label}] refused features and FEATURES_OK read-back`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      const all = 0xffff_ffff_ffff_ffffn;
      await m.phase('all ones');
      await handshake(rig, modern ? all : 0xffff_ffffn, modern ? [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK] : [ACK, ACK | DRIVER, -1]);
      await m.phase('offered bit missing');
      // A bit the device never offers (bit 0 is device-specific, rng has none).
      await handshake(rig, (modern ? bit(VIRTIO_F_VERSION_1) : 0n) | 1n | EI, modern ? [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK] : [ACK, ACK | DRIVER, -1]);
      if (modern) {
        await m.phase('without VERSION_1');
        await handshake(rig, EI | IND, [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK, ACK | DRIVER | FEATURES_OK | DRIVER_OK]);
        await m.phase('features changed after FEATURES_OK');
        await handshake(rig, bit(VIRTIO_F_VERSION_1) | EI, [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK]);
        await rig.drv.writeDriverFeatures(bit(VIRTIO_F_VERSION_1) | IND);
        if (rig.pciDrv) await m.note(`read back ${(await rig.pciDrv.readDriverFeatures()).toString(16)}`);
        await rig.drv.status();
        await m.phase('DRIVER_OK without FEATURES_OK');
        await handshake(rig, bit(VIRTIO_F_VERSION_1), [ACK, ACK | DRIVER, -1, ACK | DRIVER | DRIVER_OK]);
        await m.phase('status bits cleared');
        await handshake(rig, bit(VIRTIO_F_VERSION_1), [ACK, ACK | DRIVER, -1, ACK | DRIVER | FEATURES_OK, ACK | DRIVER | FEATURES_OK | DRIVER_OK, ACK | DRIVER, ACK | DRIVER | FEATURES_OK | DRIVER_OK | 0x80]);
      } else {
        await m.phase('features changed after DRIVER_OK');
        await handshake(rig, EI, [ACK, ACK | DRIVER, -1, ACK | DRIVER | DRIVER_OK]);
        await rig.drv.writeDriverFeatures(IND);
        if (rig.pciDrv) await m.note(`read back ${(await rig.pciDrv.readDriverFeatures()).toString(16)}`);
        await rig.drv.status();
      }
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function queueDefault(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] queue set-up with the default size`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('before');
      await rig.drv.init(0n);
      await dumpQueue(rig, 0);
      await dumpQueue(rig, 1);
      await m.phase('set up');
      const ring = await rig.drv.setupQueue(0);
      nameRing(m, ring);
      await m.note(`ring of ${ring.num} at ${ring.addrs.desc.toString(16)}`);
      await dumpQueue(rig, 0);
      await rig.drv.driverOk();
      await rig.drv.status();
      await m.phase('requests');
      await requests(rig, ring, [[16], [32]]);
      await m.phase('after reset');
      await drv_reset(rig);
      await dumpQueue(rig, 0);
      await teardown(rig);
    },
  };
}

function queueResized(t: Transport): OracleScenario {
  const sizes = t.kind === 'pci' ? (t.mode === 'modern' ? [4, 2, 1] : [4]) : [16, 2, 1];
  return {
    name: `[${t.label}] queue set-up with resized queues (${sizes.join(', ')})`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      for (const num of sizes) {
        await m.phase(`size ${num}`);
        await rig.drv.init(0n);
        let ring: VringDriver;
        if (t.kind === 'pci' && t.mode === 'legacy') {
          // The legacy QUEUE_NUM register is read-only: the write must not change the size.
          const io = rig.pci!.bars[0]!;
          await io.writew(VirtioPciLegacy.QUEUE_SEL, 0);
          await io.writew(VirtioPciLegacy.QUEUE_NUM, num);
          await io.readw(VirtioPciLegacy.QUEUE_NUM);
          ring = await rig.drv.setupQueue(0);
        } else {
          ring = await rig.drv.setupQueue(0, { num });
        }
        nameRing(m, ring);
        await dumpQueue(rig, 0);
        if (t.kind === 'mmio') await m.readl(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_NUM);
        await rig.drv.driverOk();
        // Two laps, a request at a time, then a full ring at once.
        for (let i = 0; i < 2 * ring.num; i++) await requests(rig, ring, [[4 + i]]);
        await requests(rig, ring, Array.from({ length: ring.num }, (_, i) => [8 + i]));
      }
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function laps(t: Transport, irq: IrqMode): OracleScenario {
  return {
    name: `[${t.label}] requests over several laps of the ring, ${irq}`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('bring-up');
      const ring = await bringUp(rig, { irq, num: workNum(t) });
      await m.phase('batches');
      for (let lap = 0; lap < 3; lap++) await requests(rig, ring, Array.from({ length: ring.num }, (_, i) => [1 + i + lap * 3]));
      await m.phase('one at a time');
      for (let i = 0; i < 5; i++) await requests(rig, ring, [[16]]);
      await m.phase('multi-buffer chains');
      await requests(rig, ring, [[4, 4], [1, 2, 3], [64]]);
      await m.note(`used.idx ${await ring.usedIdx()} used.flags ${await ring.usedFlags()}`);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function eventIdxIndirect(t: Transport, eventIdx: boolean, indirect: boolean, irq: IrqMode): OracleScenario {
  const feats = (eventIdx ? EI : 0n) | (indirect ? IND : 0n) | (isModern(t) ? 0n : LEGACY_EXTRA);
  return {
    name: `[${t.label}] EVENT_IDX ${eventIdx ? 'on' : 'off'}, indirect ${indirect ? 'on' : 'off'}, ${irq}`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('bring-up');
      const ring = await bringUp(rig, { irq, features: feats, num: workNum(t) });
      await m.phase('plain');
      await requests(rig, ring, [[16]]);
      await requests(rig, ring, [[8], [8]]);
      if (indirect) {
        await m.phase('indirect');
        await requests(rig, ring, [[4, 8, 16]], { indirect: true });
        await requests(rig, ring, [[1], [2, 2]], { indirect: true });
        await requests(rig, ring, [[32]], { indirect: true });
      }
      await m.phase('suppression');
      if (eventIdx) {
        // Take used_event over from the driver library: ask for an interrupt only after the
        // used index passes lastUsed + 2, then + 0, then far away.
        ring.eventIdx = false;
        for (const ahead of [2, 0, 1, 100]) {
          await ring.setUsedEvent((ring.lastUsedIdx + ahead) & 0xffff);
          for (let i = 0; i < 3; i++) {
            await requests(rig, ring, [[8]]);
            await m.note(`avail_event ${await ring.availEvent()}`);
          }
        }
      } else {
        await ring.suppressInterrupts(true);
        for (let i = 0; i < 3; i++) await requests(rig, ring, [[8]]);
        await requests(rig, ring, [[8], [8]]);
        await ring.suppressInterrupts(false);
        await requests(rig, ring, [[8]]);
      }
      await m.note(`used.flags ${await ring.usedFlags()}`);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function resetMidWork(t: Transport, irq: IrqMode): OracleScenario {
  return {
    name: `[${t.label}] reset in the middle of work, ${irq}`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('bring-up');
      const ring = await bringUp(rig, { irq, num: workNum(t) });
      await requests(rig, ring, [[16], [16], [16]]);
      await m.phase('work in flight');
      // One request completes with its interrupt left unacknowledged; two more are made
      // available but never notified.
      const done = await newBuffer(rig, 16);
      await ring.add([{ addr: done.addr, len: 16, write: true }]);
      await rig.drv.notify(0);
      await waitUsed(rig, ring, 1);
      const pending = [await newBuffer(rig, 16), await newBuffer(rig, 16)];
      for (const b of pending) await ring.add([{ addr: b.addr, len: 16, write: true }]);
      await m.phase('reset');
      await rig.drv.setStatus(0);
      await rig.drv.status();
      if (t.kind === 'pci') {
        await rig.pciDrv!.isr();
        await configVector(rig);
      } else {
        await m.readl(rig.mmioDrv!.base + 0x60);
      }
      await dumpQueue(rig, 0);
      await m.phase('after reset');
      await m.idle();
      for (const b of pending) await m.note(`pending buffer: ${await summarise(rig, b, 0)}`);
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await m.phase('re-init on the same memory');
      const addrs = ring.addrs;
      await rig.drv.init(0n);
      const again = await rig.drv.setupQueue(0, { num: ring.num, addrs, base: addrs.desc });
      if (rig.irq && (irq === 'msix' || irq === 'msix-masked')) {
        await rig.pciDrv!.msixSetupConfig(0, rig.irq.cfgAddr);
        await rig.pciDrv!.msixSetupQueue(0, 1, rig.irq.qAddr);
        if (irq === 'msix-masked') await rig.pciDrv!.msix!.mask(1, true);
      }
      await rig.drv.driverOk();
      await requests(rig, again, [[16], [8]]);
      for (const b of pending) await m.note(`pending buffer: ${await summarise(rig, b, 0)}`);
      await m.phase('teardown');
      await teardown(rig);
    },
  };
}

function notifyBeforeDriverOk(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] notify before DRIVER_OK`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('acknowledge only');
      await rig.drv.setStatus(0);
      await rig.drv.setStatus(ACK);
      await rig.drv.notify(0);
      await m.idle();
      await rig.drv.status();
      await m.phase('queue set up, no DRIVER_OK');
      const ring = await bringUp(rig, { irq: defaultIrq(t), num: workNum(t), noDriverOk: true });
      const b = await newBuffer(rig, 16);
      await ring.add([{ addr: b.addr, len: 16, write: true }]);
      await rig.drv.notify(0);
      await m.idle();
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await rig.irq!.check();
      await m.phase('DRIVER_OK');
      await rig.drv.driverOk();
      await m.idle();
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await m.note(`buffer: ${await summarise(rig, b, 16)}`);
      await rig.irq!.check();
      await m.phase('after');
      await requests(rig, ring, [[16]]);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

function legacyKickBeforeDriverOk(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] legacy driver kicking before DRIVER_OK`,
    async run(ctx) {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('set up without DRIVER_OK');
      const ring = await bringUp(rig, { irq: defaultIrq(t), num: workNum(t), noDriverOk: true, features: LEGACY_EXTRA });
      const b = await newBuffer(rig, 16);
      await ring.add([{ addr: b.addr, len: 16, write: true }]);
      await m.phase('kick');
      await rig.drv.notify(0);
      await m.idle();
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await rig.drv.status();
      await rig.irq!.check();
      await m.phase('second kick');
      const b2 = await newBuffer(rig, 8);
      await ring.add([{ addr: b2.addr, len: 8, write: true }]);
      await rig.drv.notify(0);
      await m.idle();
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await rig.irq!.check();
      await m.phase('DRIVER_OK');
      await rig.drv.driverOk();
      await m.idle();
      await m.note(`used.idx ${await ring.usedIdx()}`);
      await m.note(`buffers: ${await summarise(rig, b, 16)} / ${await summarise(rig, b2, 8)}`);
      await rig.irq!.check();
      await m.phase('after');
      await requests(rig, ring, [[16]]);
      await m.phase('reset');
      await teardown(rig);
    },
  };
}

export function transportScenarios(t: Transport): OracleScenario[] {
  const out: OracleScenario[] = [enumeration(t), features(t), refusedFeatures(t), queueDefault(t), queueResized(t)];
  for (const irq of irqModes(t)) out.push(laps(t, irq));
  for (const ei of [false, true]) for (const ind of [false, true]) out.push(eventIdxIndirect(t, ei, ind, defaultIrq(t)));
  if (t.kind === 'pci') {
    out.push(eventIdxIndirect(t, true, true, 'msix'));
    out.push(eventIdxIndirect(t, false, false, 'msix-masked'));
  }
  for (const irq of irqModes(t)) out.push(resetMidWork(t, irq));
  out.push(notifyBeforeDriverOk(t));
  if (!isModern(t)) out.push(legacyKickBeforeDriverOk(t));
  return out;
}

// --- groups --------------------------------------------------------------------------------------

export const PCI_MODERN: PciTransport = { kind: 'pci', label: 'pci modern', slot: 4, mode: 'modern' };
export const PCI_LEGACY: PciTransport = { kind: 'pci', label: 'pci legacy', slot: 3, mode: 'legacy' };
export const PCI_TRANS_MODERN: PciTransport = { kind: 'pci', label: 'pci transitional/modern', slot: 2, mode: 'modern' };
export const PCI_TRANS_LEGACY: PciTransport = { kind: 'pci', label: 'pci transitional/legacy', slot: 2, mode: 'legacy' };
export const MMIO_V1: MmioTransport = { kind: 'mmio', label: 'mmio v1', version: 1, index: 23 };
export const MMIO_V2: MmioTransport = { kind: 'mmio', label: 'mmio v2', version: 2, index: 23 };

const rngPci = (opts: string): string => `virtio-rng-pci,ioeventfd=off${opts}`;

export const SPEC = {
  pciModern: { machine: 'pc', args: ['-device', rngPci(',disable-legacy=on,addr=04.0')] },
  pciLegacy: { machine: 'pc', args: ['-device', rngPci(',disable-modern=on,addr=03.0')] },
  pciTransitional: { machine: 'pc', args: ['-device', rngPci('')] },
  mmioV1: { machine: 'microvm', args: ['-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device'] },
  mmioV2: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device'] },
} as const;

export const TRANSPORT_GROUPS: OracleGroup[] = [
  { name: 'pc, virtio-rng-pci modern (disable-legacy=on) at 04.0', spec: SPEC.pciModern, scenarios: transportScenarios(PCI_MODERN) },
  { name: 'pc, virtio-rng-pci legacy (disable-modern=on) at 03.0', spec: SPEC.pciLegacy, scenarios: transportScenarios(PCI_LEGACY) },
  {
    name: 'pc, virtio-rng-pci transitional (defaults) at 02.0',
    spec: SPEC.pciTransitional,
    scenarios: [...transportScenarios(PCI_TRANS_MODERN), ...transportScenarios(PCI_TRANS_LEGACY)],
  },
  { name: 'microvm, virtio-rng-device on virtio-mmio v1 (default)', spec: SPEC.mmioV1, scenarios: transportScenarios(MMIO_V1) },
  { name: 'microvm, virtio-rng-device on virtio-mmio v2 (force-legacy=false)', spec: SPEC.mmioV2, scenarios: transportScenarios(MMIO_V2) },
];

