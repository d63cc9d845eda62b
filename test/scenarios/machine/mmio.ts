// microvm + virtio-rng-device scenarios for virtio-mmio version 1 (QEMU 7.2's default,
// force-legacy=true) and version 2 (`-global virtio-mmio.force-legacy=false`). Expected values
// are what QEMU 7.2 shows (shared/notes/qemu-oracle.md §2.3): 24 transports at 0xfeb00000 +
// 0x200*i, the first -device on the last one, IRQs on pin i of the second I/O APIC (found with
// qom-list), QueueNumMax 1024.
import { expect } from 'vitest';
import { waitIrq, type Machine } from '../../../src/driver/machine.js';
import { RngDriver } from '../../../src/driver/rng.js';
import {
  MICROVM_MMIO_BASE,
  VirtioMmioDriver,
  findMicrovmIoapic2,
  microvmIrqLine,
  scanMmio,
} from '../../../src/driver/virtio-mmio-driver.js';
import {
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
  VIRT_VENDOR,
} from '../../../src/bus/virtio-mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_ID_RNG,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../../src/virtio/constants.js';
import type { Scenario, ScenarioContext, ScenarioGroup } from './suite.js';

const TRANSPORTS = 24;
/** The first (here: only) -device lands on the last transport. */
const RNG_INDEX = TRANSPORTS - 1;
const RNG_BASE = MICROVM_MMIO_BASE + 0x200 * RNG_INDEX;

interface MmioCase {
  version: 1 | 2;
  deviceFeatures: bigint;
  wanted: bigint;
  negotiated: bigint;
}

const V1: MmioCase = {
  version: 1,
  // Legacy: the low word only (selector 1 reads 0), with the transport-independent legacy bits.
  deviceFeatures: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_F_ANY_LAYOUT) | bit(VIRTIO_F_NOTIFY_ON_EMPTY),
  wanted: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC),
  negotiated: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC),
};
const V2: MmioCase = {
  version: 2,
  deviceFeatures: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_RESET) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC),
  wanted: bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC),
  negotiated: bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC),
};

async function open(ctx: ScenarioContext): Promise<VirtioMmioDriver> {
  const drv = new VirtioMmioDriver(ctx.machine, RNG_BASE, { alloc: ctx.alloc });
  expect(await drv.probe()).toBe(VIRTIO_ID_RNG);
  return drv;
}

async function interceptIoapic2(m: Machine): Promise<void> {
  if (!m.qmp) throw new Error('this machine has no QMP to find the second I/O APIC with');
  const path = await findMicrovmIoapic2(m.qmp);
  expect(path).toBe('/machine/unattached/device[3]');
  await m.irqIntercept('in', path!);
}

function mmioScenarios(c: MmioCase): Scenario[] {
  const tag = `[v${c.version}]`;
  return [
    {
      name: `${tag} finds the transports by probing device ids (filled from the last one down)`,
      async run(ctx) {
        const all = await scanMmio(ctx.machine);
        expect(all.length).toBe(TRANSPORTS);
        expect(all.every((t) => t.version === c.version && t.vendorId === VIRT_VENDOR)).toBe(true);
        expect(all.filter((t) => t.deviceId !== 0).map((t) => [t.index, t.addr, t.deviceId])).toEqual([[RNG_INDEX, RNG_BASE, VIRTIO_ID_RNG]]);
        // Past the last transport nothing answers (unmapped memory reads 0).
        expect(await ctx.machine.readl(MICROVM_MMIO_BASE + 0x200 * TRANSPORTS)).toBe(0);
        const drv = await open(ctx);
        expect(drv.version).toBe(c.version);
        expect(drv.vendorId).toBe(VIRT_VENDOR);
      },
    },
    {
      name: `${tag} negotiates features (device 0x${c.deviceFeatures.toString(16)}, driver 0x${c.negotiated.toString(16)})`,
      async run(ctx) {
        const drv = await open(ctx);
        const f = await drv.init(c.wanted);
        expect(drv.deviceFeatures).toBe(c.deviceFeatures);
        expect(f).toBe(c.negotiated);
        const ok = c.version === 2 ? VIRTIO_CONFIG_S_FEATURES_OK : 0;
        expect(await drv.status()).toBe(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | ok);
        await drv.reset();
        expect(await drv.status()).toBe(0);
      },
    },
    {
      name: `${tag} sets up queue 0 (size 8 of QueueNumMax 1024)`,
      async run(ctx) {
        const drv = await open(ctx);
        await drv.init(0n);
        expect(await drv.queueMax(0)).toBe(1024);
        expect(await drv.queueMax(1)).toBe(0);
        const ring = await drv.setupQueue(0, { num: 8 });
        const m = ctx.machine;
        await m.writel(RNG_BASE + VIRTIO_MMIO_QUEUE_SEL, 0);
        if (c.version === 1) {
          expect(await m.readl(RNG_BASE + VIRTIO_MMIO_QUEUE_PFN)).toBe(ring.addrs.desc / 4096);
        } else {
          expect(await m.readl(RNG_BASE + VIRTIO_MMIO_QUEUE_READY)).toBe(1);
          const regs = await Promise.all(
            [VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH].map((o) =>
              m.readl(RNG_BASE + o),
            ),
          );
          // QEMU 7.2 keeps QueueNum and the ring address registers write-only: they read 0.
          expect(regs).toEqual([0, 0, 0, 0, 0, 0]);
          expect(await m.readl(RNG_BASE + VIRTIO_MMIO_QUEUE_NUM)).toBe(0);
        }
        await drv.driverOk();
        expect((await drv.status()) & VIRTIO_CONFIG_S_DRIVER_OK).toBe(VIRTIO_CONFIG_S_DRIVER_OK);
        await drv.reset();
      },
    },
    {
      name: `${tag} serves 20 rng requests across more than one lap of an 8-entry ring`,
      async run(ctx) {
        const drv = await open(ctx);
        await drv.init(0n);
        const ring = await drv.setupQueue(0, { num: 8 });
        await drv.driverOk();
        const rng = new RngDriver(drv, ring);
        for (let i = 0; i < 20; i++) {
          const r = await rng.request(4 + i);
          expect(r.len).toBe(4 + i);
          expect(r.bytes.length).toBe(4 + i);
          await drv.ackInterrupt();
        }
        expect(await ring.usedIdx()).toBe(20);
        // A full ring at once, one notify.
        const heads: number[] = [];
        const addrs = Array.from({ length: 8 }, () => ctx.alloc.alloc(32));
        for (const a of addrs) heads.push(await ring.add([{ addr: a, len: 32, write: true }]));
        expect(new Set(heads).size).toBe(8);
        expect(await ring.add([{ addr: addrs[0]!, len: 32, write: true }])).toBe(-1);
        await drv.notify(0);
        expect(await ring.waitUsed(8)).toEqual(heads.map((id) => ({ id, len: 32 })));
        expect(await ring.usedIdx()).toBe(28);
        await drv.reset();
      },
    },
    {
      name: `${tag} IRQ raise on the second I/O APIC, InterruptStatus, ACK lowers it`,
      async run(ctx) {
        const m = ctx.machine;
        await interceptIoapic2(m);
        const line = microvmIrqLine(RNG_INDEX);
        expect(line).toBe(23);
        const drv = await open(ctx);
        await drv.init(0n);
        const ring = await drv.setupQueue(0, { num: 8 });
        await drv.driverOk();
        const rng = new RngDriver(drv, ring);
        for (let i = 0; i < 3; i++) {
          const mark = m.irq.mark();
          expect((await rng.request(16)).len).toBe(16);
          await waitIrq(m, line, true, { mark });
          expect(m.irq.level(line)).toBe(true);
          expect(await drv.interruptStatus()).toBe(1);
          expect(await drv.ackInterrupt()).toBe(1);
          await waitIrq(m, line, false, { mark });
          expect(await drv.interruptStatus()).toBe(0);
          expect(m.irq.since(mark).filter((e) => e.line === line).map((e) => [e.line, e.level])).toEqual([
            [line, true],
            [line, false],
          ]);
        }
        await drv.reset();
      },
    },
  ];
}

const common = ['-global', 'virtio-mmio.ioeventfd=off'];

export const MMIO_GROUPS: ScenarioGroup[] = [
  {
    name: 'microvm, virtio-rng-device on virtio-mmio version 1 (default force-legacy)',
    spec: { machine: 'microvm', args: [...common, '-device', 'virtio-rng-device'] },
    scenarios: mmioScenarios(V1),
  },
  {
    name: 'microvm, virtio-rng-device on virtio-mmio version 2 (force-legacy=false)',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', ...common, '-device', 'virtio-rng-device'] },
    scenarios: mmioScenarios(V2),
  },
];
