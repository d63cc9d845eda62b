// The migration scenarios: one driver script each, run on a source, migrated (once or twice), and
// continued on the destination. Each drives virtio-rng to a state — features negotiated, queue
// set up (resized where the transport allows), requests completed, one completion whose interrupt
// is not acknowledged, one request posted but not notified — snapshots everything readable, and
// after migration checks that the destination reads the same (registers, config space, MSI-X,
// ring, guest RAM), that the carried interrupt is still pending, that the pending request
// completes exactly once, and that the device keeps working and resets.
//
// Every QEMU device runs with ioeventfd off (shared/notes/qemu-oracle.md §7.10), so a notify is
// processed inside the qtest write, as the oracle does.
import { expect } from 'vitest';
import { poll } from '../../src/driver/machine.js';
import type { OracleMachineSpec } from '../../src/oracle/scenario.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
    VIRTIO_F_ANY_LAYOUT,
  VIRTIO_F_NOTIFY_ON_EMPTY,
  VIRTIO_F_RING_RESET,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../src/virtio/constants.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';
import { LIBQOS_MSIX_DATA } from '../../src/driver/virtio-pci-driver.js';
import type { MigrationContext, MigrationScenario } from './harness.js';
import { GUARD, MigRig, diffSnapshots, isModern, pendingAllowances, type Allowance, type IrqMode, type MmioTransport, type PciTransport, type Posted, type Snapshot, type Transport } from './rig.js';

const EI = bit(VIRTIO_RING_F_EVENT_IDX);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const RESET = bit(VIRTIO_F_RING_RESET);
/** What a legacy driver (Linux) acks on top. */
const LEGACY = bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT);

// --- machines --------------------------------------------------------------------------------------

const pc = (device: string): OracleMachineSpec => ({ machine: 'pc', args: ['-device', device] });
export const SPECS = {
  modern: pc('virtio-rng-pci,ioeventfd=off,disable-legacy=on,addr=04.0'),
  modernNoMsix: pc('virtio-rng-pci,ioeventfd=off,disable-legacy=on,vectors=0,addr=04.0'),
  nonTransitional: pc('virtio-rng-pci-non-transitional,ioeventfd=off,addr=04.0'),
  legacy: pc('virtio-rng-pci,ioeventfd=off,disable-modern=on,addr=03.0'),
  legacyNoMsix: pc('virtio-rng-pci,ioeventfd=off,disable-modern=on,vectors=0,addr=03.0'),
  transitional: pc('virtio-rng-pci,ioeventfd=off'),
  transitionalType: pc('virtio-rng-pci-transitional,ioeventfd=off,addr=05.0'),
  mmioV1: { machine: 'microvm', args: ['-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device'] },
  mmioV2: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device'] },
} as const satisfies Record<string, OracleMachineSpec>;

const T = {
  modern: { kind: 'pci', label: 'pci modern', slot: 4, mode: 'modern' },
  nonTransitional: { kind: 'pci', label: 'pci non-transitional', slot: 4, mode: 'modern' },
  legacy: { kind: 'pci', label: 'pci legacy', slot: 3, mode: 'legacy' },
  transModern: { kind: 'pci', label: 'pci transitional, driven modern', slot: 2, mode: 'modern' },
  transLegacy: { kind: 'pci', label: 'pci transitional, driven legacy', slot: 2, mode: 'legacy' },
  transTypeLegacy: { kind: 'pci', label: 'pci transitional type, driven legacy', slot: 5, mode: 'legacy' },
  mmioV1: { kind: 'mmio', label: 'mmio v1', index: 23, version: 1 },
  mmioV2: { kind: 'mmio', label: 'mmio v2', index: 23, version: 2 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

// --- the common steps ------------------------------------------------------------------------------

/** Request lengths that vary, so that a wrong buffer or a stale entry shows in used.len. */
const lenOf = (i: number): number => 8 + ((i * 5) % 24);

interface DriveOptions {
  features: bigint;
  num?: number;
  irq: IrqMode;
  /** Requests completed and acknowledged before the one left with its interrupt pending. */
  completed: number;
  /** Leave one request posted and not notified (default true). */
  pending?: boolean;
  fullRam?: boolean;
}

/** Source side: bring up, complete requests, leave an interrupt and (optionally) a request pending. */
async function driveToState(rig: MigRig, o: DriveOptions, first = true): Promise<Posted | undefined> {
  if (first) {
    await rig.writeSentinels();
    const ring = await rig.bringUp({ features: o.features, irq: o.irq, ...(o.num !== undefined ? { num: o.num } : {}) });
    if (o.num !== undefined) expect(ring.num, 'queue size').toBe(o.num);
  }
  // One at a time, then in pairs where the ring is big enough: used entries cross the ring end.
  let i = 0;
  while (i < o.completed) {
    const pair = rig.ring!.num >= 2 && i % 3 === 2 && i + 1 < o.completed;
    await rig.requests(pair ? [lenOf(i), lenOf(i + 1)] : [lenOf(i)]);
    i += pair ? 2 : 1;
  }
  await rig.requests([16], { ack: false });
  if (o.pending === false) return undefined;
  const p = await rig.post(16);
  rig.volatile.set('pending', { addr: p.buf.addr, len: p.buf.len + GUARD });
  return p;
}

/** The destination reads what the source read (except what `allow` lets change). */
function expectSame(before: Snapshot, after: Snapshot, rig: MigRig, allow?: ReadonlyMap<string, Allowance>): void {
  const d = diffSnapshots(before, after, allow);
  expect(d, `what changed from the source to ${rig.where}:\n  ${d.join('\n  ')}\n`).toEqual([]);
}

/**
 * Migrate, then check on the destination: the snapshot reads as on the source (the pending
 * request may have completed at resume), the pending request completes exactly once, and the
 * carried interrupt is pending and can be acknowledged.
 */
async function migrateAndCheck(ctx: MigrationContext, rig: MigRig, pending: Posted | undefined, fullRam = false): Promise<void> {
  const ring = rig.ring!;
  const usedBefore = ring.lastUsedIdx;
  const before = await rig.snapshot({ fullRam });
  expect(before.get('vq0.used.idx'), 'source used.idx').toBe(String(usedBefore));
  await ctx.migrate();
  const after = await rig.snapshot({ fullRam });
  expectSame(before, after, rig, pending ? pendingAllowances(ring, pending, usedBefore) : undefined);
  if (pending) await settlePending(ctx, rig, pending);
  await rig.ackCarriedInterrupt();
}

/**
 * The request posted before migration completes exactly once: QEMU's rng processes the avail
 * ring when the VM starts running, so a QEMU destination completes it without a notify; ours may
 * wait for the notify, which the driver sends in any case.
 */
async function settlePending(ctx: MigrationContext, rig: MigRig, p: Posted): Promise<void> {
  const ring = rig.ring!;
  const m = ctx.m;
  let atResume = false;
  try {
    // QEMU completes it within a main-loop turn of starting; the bound only matters under load.
    await poll(m, async () => (await ring.usedIdx()) !== ring.lastUsedIdx, { timeoutMs: ctx.impl === 'qemu' ? 2000 : 150, what: 'completion at resume' });
    atResume = true;
  } catch {
    /* not at resume */
  }
  ctx.notes.push(`pending request completed ${atResume ? 'at resume' : 'after the notify'} on ${ctx.impl}`);
  if (ctx.impl === 'qemu') expect(atResume, 'QEMU 7.2 completes the posted request when the destination starts running').toBe(true);
  await rig.drv.notify(0);
  await rig.expectCompleted([p]);
  // A destination that lost last_avail_idx would pop old entries again here.
  await rig.expectNoCompletion();
  rig.volatile.delete('pending');
}

/** Destination side: more requests (crossing the ring end), then reset and re-initialise. */
async function carryOn(rig: MigRig, o: DriveOptions): Promise<void> {
  const n = Math.max(3, rig.ring!.num + 1);
  for (let i = 0; i < n; i++) await rig.requests([lenOf(100 + i)]);
  if (rig.ring!.num >= 2) await rig.requests([12, 20]);
  await rig.reinit({ features: o.features, ...(o.num !== undefined ? { num: o.num } : {}) });
  await rig.requests([16]);
  await rig.requests([8]);
}

function stateScenario(name: string, spec: OracleMachineSpec, t: Transport, o: DriveOptions): MigrationScenario {
  return {
    name: `[${t.label}] ${name}`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      const pending = await driveToState(rig, o);
      await migrateAndCheck(ctx, rig, pending, o.fullRam);
      await carryOn(rig, o);
    },
  };
}

/** Two migrations: the destination of the first is the source of the second. */
function roundTrip(name: string, spec: OracleMachineSpec, t: Transport, o: DriveOptions): MigrationScenario {
  return {
    name: `[${t.label}] ${name}`,
    spec,
    migrations: 2,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      let pending = await driveToState(rig, o);
      await migrateAndCheck(ctx, rig, pending);
      pending = await driveToState(rig, { ...o, completed: 2 }, false);
      await migrateAndCheck(ctx, rig, pending);
      await carryOn(rig, o);
    },
  };
}

/**
 * A hostile chain breaks the device (a descriptor's `next` beyond the ring); migrated, it stays
 * broken — NEEDS_RESET on a modern interface, no processing on any — and recovers after a reset.
 */
function broken(spec: OracleMachineSpec, t: Transport, o: { features: bigint; num?: number; irq: IrqMode }): MigrationScenario {
  const modern = isModern(t);
  return {
    name: `[${t.label}] a device broken by a descriptor next out of range stays broken, ${o.irq}`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      const m = ctx.m;
      await rig.writeSentinels();
      const ring = await rig.bringUp(o);
      await rig.requests([16]);
      await rig.requests([24]);
      // The hostile chain: one writable buffer whose descriptor says NEXT, pointing past the table.
      const buf = await rig.newBuffer(16);
      const head = await ring.add([{ addr: buf.addr, len: 16, write: true }], { publish: false });
      await ring.writeDesc(head, buf.addr, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, ring.num + 3);
      await ring.publish(head);
      const mark = m.irq.mark();
      await rig.drv.notify(0);
      if (modern) {
        await poll(m, () => rig.needsReset(), { timeoutMs: 2000, what: 'NEEDS_RESET on the source' });
        // virtio_error notifies the configuration change: the config vector or ISR bit 1.
        if (o.irq === 'msix') await poll(m, async () => (await m.readl(rig.cfgSlot!.addr)) === LIBQOS_MSIX_DATA, { timeoutMs: 2000, what: 'config MSI-X message' });
        else await poll(m, () => m.irq.find(rig.line, true, mark), { timeoutMs: 2000, what: 'config interrupt' });
      } else {
        await rig.expectNoCompletion(30);
      }
      expect(await ring.usedIdx(), 'nothing used for the hostile chain').toBe(ring.lastUsedIdx);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      // The configuration generation is not in the stream (QEMU 7.2 keeps `vdev->generation`
      // out of virtio_save): a destination starts at 0 and counts its own config notifications.
      // A QEMU destination finds the hostile chain again when it starts running, twice
      // (virtio_vmstate_change → virtio_rng_set_status, and virtio_rng_vm_state_change, each
      // run virtio_rng_process → virtio_error → virtio_notify_config), so it reads 2 here.
      const gen = t.kind === 'pci' ? 'common.config_generation' : 'mmio.config_generation';
      expectSame(before, after, rig, new Map([[gen, () => true]]));
      if (modern) {
        ctx.notes.push(`config generation ${before.get(gen)} on the source, ${after.get(gen)} on the destination (${ctx.impl})`);
        if (ctx.impl === 'qemu') expect(after.get(gen), 'QEMU destination: config generation after re-detecting the broken chain twice').toBe('2');
        expect(await rig.needsReset(), `${rig.where}: NEEDS_RESET after migration`).toBe(true);
      }
      // Still broken: a valid request is not processed.
      const p = await rig.post(16);
      await rig.drv.notify(0);
      await rig.expectNoCompletion(50);
      if (modern) expect(await rig.needsReset(), `${rig.where}: NEEDS_RESET`).toBe(true);
      await rig.checkFilled(p, 0);
      // A reset recovers it.
      await rig.drv.reset();
      expect(await rig.drv.status(), 'status after reset').toBe(0);
      if (o.irq === 'msix') await m.writel(rig.cfgSlot!.addr, 0);
      await rig.reinit(o);
      expect(await rig.needsReset(), 'NEEDS_RESET after re-initialisation').toBe(false);
      await rig.requests([16]);
      await rig.requests([32]);
    },
  };
}

/**
 * Migrated in the middle of the handshake (FEATURES_OK, queue set up, MSI-X vectors assigned, no
 * DRIVER_OK) with a request already notified, which a device does not process before DRIVER_OK;
 * the destination finishes the handshake and the request completes.
 */
function beforeDriverOk(spec: OracleMachineSpec, t: Transport): MigrationScenario {
  return {
    name: `[${t.label}] migrated before DRIVER_OK, the handshake finished on the destination`,
    spec,
    async run(ctx) {
      const rig = await MigRig.open(ctx, t);
      await rig.writeSentinels();
      const ring = await rig.bringUp({ features: EI | IND, num: 4, irq: 'msix', driverOk: false });
      expect(await rig.drv.status(), 'status before migration').toBe(ACK | DRIVER | FEATURES_OK);
      const p = await rig.post(16);
      await rig.drv.notify(0);
      await rig.expectNoCompletion(30);
      const before = await rig.snapshot();
      await ctx.migrate();
      const after = await rig.snapshot();
      expectSame(before, after, rig);
      await rig.expectNoCompletion(30);
      const mark = ctx.m.irq.mark();
      await rig.drv.driverOk();
      // DRIVER_OK makes virtio-rng look at its queue: the request completes without a new notify.
      await rig.expectCompleted([p]);
      await rig.expectInterrupt(mark, true);
      expect(ring.lastUsedIdx, 'used.idx').toBe(1);
      for (let i = 0; i < 6; i++) await rig.requests([lenOf(i)]);
    },
  };
}

// --- the list ---------------------------------------------------------------------------------------

export const MIGRATION_SCENARIOS: readonly MigrationScenario[] = [
  stateScenario('MSI-X, queue 4 of 8, EVENT_IDX + INDIRECT, all of RAM', SPECS.modern, T.modern, { features: EI | IND | RESET, num: 4, irq: 'msix', completed: 6, fullRam: true }),
  stateScenario('MSI-X vector masked (pending bit), queue 2', SPECS.modern, T.modern, { features: EI, num: 2, irq: 'msix-masked', completed: 5 }),
  stateScenario('no MSI-X (vectors=0), INTx, queue 8', SPECS.modernNoMsix, T.modern, { features: IND, irq: 'intx', completed: 10 }),
  stateScenario('no MSI-X (vectors=0), INTx, interrupt pending only', SPECS.modernNoMsix, T.modern, { features: EI, num: 4, irq: 'intx', completed: 3, pending: false }),
  stateScenario('MSI-X present but disabled, INTx', SPECS.nonTransitional, T.nonTransitional, { features: EI, irq: 'intx', completed: 2 }),
  stateScenario('MSI-X present but disabled, INTx', SPECS.legacy, T.legacy, { features: LEGACY | EI, irq: 'intx', completed: 9 }),
  stateScenario('MSI-X', SPECS.legacy, T.legacy, { features: LEGACY | IND, irq: 'msix', completed: 3 }),
  stateScenario('no MSI-X (vectors=0), INTx, interrupt pending only', SPECS.legacyNoMsix, T.legacy, { features: LEGACY, irq: 'intx', completed: 4, pending: false }),
  stateScenario('MSI-X vector masked, queue 4', SPECS.transitional, T.transModern, { features: EI | IND, num: 4, irq: 'msix-masked', completed: 3 }),
  stateScenario('MSI-X present but disabled, INTx', SPECS.transitional, T.transLegacy, { features: LEGACY | EI, irq: 'intx', completed: 3 }),
  stateScenario('MSI-X vector masked, interrupt pending only', SPECS.transitionalType, T.transTypeLegacy, { features: LEGACY, irq: 'msix-masked', completed: 2, pending: false }),
  stateScenario('queue 16 of 1024, QueueAlign 4096', SPECS.mmioV1, T.mmioV1, { features: LEGACY | EI, num: 16, irq: 'mmio', completed: 18 }),
  stateScenario('interrupt pending only, queue 4', SPECS.mmioV1, T.mmioV1, { features: LEGACY, num: 4, irq: 'mmio', completed: 2, pending: false }),
  stateScenario('queue 8 of 1024, EVENT_IDX + INDIRECT', SPECS.mmioV2, T.mmioV2, { features: EI | IND, num: 8, irq: 'mmio', completed: 9 }),
  broken(SPECS.modern, T.modern, { features: EI, num: 4, irq: 'msix' }),
  broken(SPECS.mmioV2, T.mmioV2, { features: 0n, num: 8, irq: 'mmio' }),
  broken(SPECS.legacy, T.legacy, { features: LEGACY, irq: 'intx' }),
  beforeDriverOk(SPECS.modern, T.modern),
  roundTrip('migrated twice, MSI-X vector masked, queue 4', SPECS.modern, T.modern, { features: EI | IND, num: 4, irq: 'msix-masked', completed: 3 }),
  roundTrip('migrated twice, queue 8', SPECS.mmioV1, T.mmioV1, { features: LEGACY, num: 8, irq: 'mmio', completed: 5 }),
];
