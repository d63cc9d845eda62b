// Hostile guests of virtio-input and virtio-balloon (shared/spec/hostile-guest-bugs.md G-input
// T-Gi1-2, G-balloon T-Gl1-4), run on QEMU 7.2 and on ours with the same script. Each records
// what a driver sees and returns its observations, from which each side gets a verdict in
// virtio-villain's terms (src/oracle/verdict.ts):
//
//   setup     bring the device up (INTx or the mmio line); canary-fill a 64 KiB arena
//   attack    the bad input; then status, used ring and interrupts are read
//   liveness  unless NEEDS_RESET is set: one well-formed request (a key event delivered, a page
//             inflated); does it complete?
//   recovery  reset, set up again, one well-formed request (I7)
//
// The arena must not change except where the attack gave the device writable buffers (I4).
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import type { OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import type { HostileFacts } from '../../../src/oracle/verdict.js';
import type { VringDriver } from '../../../src/driver/vring.js';
import { bit, VIRTIO_CONFIG_S_NEEDS_RESET } from '../../../src/virtio/constants.js';
import { poll } from '../../../src/driver/machine.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../../src/vring/constants.js';
import { VIRTIO_BALLOON_F_FREE_PAGE_HINT, VIRTIO_BALLOON_F_STATS_VQ } from '../../../src/devices/balloon/virtio-balloon.js';
import { bringUpDevice, runHostileLifecycle, hex, mmioNum, openDevice, postChain, qmpNote, takeUsed } from './devrig.js';
import { teardown, type Rig, type Transport } from './rig.js';

const ARENA = 0x60_0000;
const ARENA_SIZE = 64 * 1024;
const CANARY = 0x5a;
/** Unassigned on both machines. */
const OUTSIDE_RAM = 0x4000_0000;

interface DeviceKind {
  queues: (t: Transport) => { index: number; num?: number }[];
  features: bigint;
  /** A well-formed request on a freshly set-up device; true when it completed. */
  request(rig: Rig, rings: Map<number, VringDriver>): Promise<boolean>;
}

const q = (t: Transport, index: number, size: number) => {
  const num = mmioNum(t, size);
  return num === undefined ? { index } : { index, num };
};

const KEYBOARD: DeviceKind = {
  queues: (t) => [q(t, 0, 64), q(t, 1, 64)],
  features: 0n,
  async request(rig, rings) {
    const evq = rings.get(0)!;
    for (let i = 0; i < 2; i++) await postChain(rig, evq, [8]);
    await rig.drv.notify(0);
    await qmpNote(rig.m, 'input-send-event', { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'x' }, down: true } }] });
    const used = await takeUsed(rig, evq, 2, 'used eventq');
    return used.length === 2;
  },
};

const BALLOON: DeviceKind = {
  queues: (t) => [q(t, 0, 128), q(t, 1, 128), q(t, 2, 128)],
  features: bit(VIRTIO_BALLOON_F_STATS_VQ),
  async request(rig, rings) {
    const ivq = rings.get(0)!;
    const b = new Uint8Array(4);
    new DataView(b.buffer).setUint32(0, 0x900, true);
    await postChain(rig, ivq, [4], { write: false, fill: [b] });
    await rig.drv.notify(0);
    await rig.m.idle();
    const used = await takeUsed(rig, ivq, 1, 'used inflate');
    return used.length === 1;
  },
};

/** What an attack may tell the verdict: buffers the device may write, invariant violations seen. */
interface AttackHarness {
  writable: [number, number][];
  problems: string[];
}

type Attack = (rig: Rig, rings: Map<number, VringDriver>, h: AttackHarness) => Promise<void>;

/** I6 on used entries the attack collected: each head used once, and a head the ring has. */
function checkUsed(h: AttackHarness, ring: VringDriver, used: readonly { id: number; len: number }[]): void {
  const seen = new Set<number>();
  for (const u of used) {
    if (u.id >= ring.num) h.problems.push(`I6: used id ${u.id} beyond the ring`);
    else if (seen.has(u.id)) h.problems.push(`I6: head ${u.id} used twice`);
    seen.add(u.id);
  }
}

function hostile(name: string, ids: string, t: Transport, kind: DeviceKind, attack: Attack, opts: { expected?: ExpectedDifference[]; features?: bigint; extraQueues?: { index: number; size: number }[] } = {}): OracleScenario {
  const irq = t.kind === 'pci' ? ('intx' as const) : ('mmio' as const);
  const queues = (tt: Transport) => [...kind.queues(tt), ...(opts.extraQueues ?? []).map((e) => q(tt, e.index, e.size))];
  return {
    name: `[${t.label}] ${name}`,
    ids,
    ...(opts.expected ? { expected: opts.expected } : {}),
    async run(ctx): Promise<HostileFacts> {
      const rig = await openDevice(ctx, t);
      const facts = await runHostileLifecycle(rig, {
        bring: () => bringUpDevice(rig, { features: opts.features ?? kind.features, queues: queues(t), irq }),
        attack: (rings, writable, problems) => attack(rig, rings, { writable, problems }),
        traffic: (rings) => kind.request(rig, rings),
        arena: { base: ARENA, size: ARENA_SIZE, canary: CANARY },
      });
      await teardown(rig);
      return { legal: false, ...facts };
    },
  };
}

/** Publish a raw descriptor chain head without the driver's bookkeeping. */
async function rawPublish(ring: VringDriver, head: number): Promise<void> {
  await ring.publish(head);
}

// --- input attacks -------------------------------------------------------------------------------

const availJump: Attack = async (rig, rings, h) => {
  const evq = rings.get(0)!;
  await postChain(rig, evq, [8]);
  // T-Gi1: avail.idx a whole ring (and one) ahead of what the device has seen.
  await evq.setAvailIdx(((await rig.m.readw(evq.addrs.avail + 2)) + evq.num + 1) & 0xffff);
  await rig.drv.notify(0);
  await qmpNote(rig.m, 'input-send-event', { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a' }, down: true } }] });
  checkUsed(h, evq, await takeUsed(rig, evq, 0, 'used eventq'));
};

const statusHeadOutOfRange: Attack = async (rig, rings) => {
  const stq = rings.get(1)!;
  const p = await postChain(rig, stq, [8], { write: false, publish: false });
  void p;
  await stq.setAvailRingEntry(0, stq.num + 3);
  await stq.setAvailIdx(1);
  await rig.drv.notify(1);
  await rig.m.idle();
  await takeUsed(rig, stq, 0, 'used statusq');
};

const eventBufferOutsideRam: Attack = async (rig, rings, h) => {
  const evq = rings.get(0)!;
  h.writable.push([ARENA, 8]);
  const head = await evq.add([{ addr: OUTSIDE_RAM, len: 8, write: true }], { publish: false });
  await rawPublish(evq, head);
  await evq.add([{ addr: ARENA, len: 8, write: true }]);
  await rig.drv.notify(0);
  await qmpNote(rig.m, 'input-send-event', { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a' }, down: true } }] });
  await takeUsed(rig, evq, 2, 'used eventq');
};

const statusLoop: Attack = async (rig, rings) => {
  const stq = rings.get(1)!;
  const head = await stq.add([{ addr: ARENA, len: 8, write: false }], { publish: false });
  // A descriptor that chains to itself.
  await stq.writeDesc(head, ARENA, 8, VRING_DESC_F_NEXT, head);
  await stq.publish(head);
  await rig.drv.notify(1);
  await rig.m.idle();
  await takeUsed(rig, stq, 0, 'used statusq');
};

const hugeStatusBuffer: Attack = async (rig, rings, h) => {
  const stq = rings.get(1)!;
  // A 1 MiB readable buffer and a status buffer pointing into the arena that is only writable.
  await stq.add([{ addr: 0x20_0000, len: 1 << 20, write: false }]);
  await stq.add([{ addr: ARENA, len: 8, write: true }]);
  h.writable.push([ARENA, 8]);
  await rig.drv.notify(1);
  await rig.m.idle();
  await takeUsed(rig, stq, 2, 'used statusq');
};

// --- balloon attacks -----------------------------------------------------------------------------

function pfns(list: readonly number[]): Uint8Array {
  const b = new Uint8Array(4 * list.length);
  const dv = new DataView(b.buffer);
  list.forEach((p, i) => dv.setUint32(4 * i, p >>> 0, true));
  return b;
}

/** T-Gl1: a 1 MiB inflate buffer of PFNs nobody has (262144 lookups, nothing discarded). */
const hugeInflateBad: Attack = async (rig, rings) => {
  const ivq = rings.get(0)!;
  const base = 0x20_0000;
  await rig.m.quiet(() => rig.m.memset(base, 1 << 20, 0xff));
  await ivq.add([{ addr: base, len: 1 << 20, write: false }]);
  await rig.drv.notify(0);
  await rig.m.idle();
  await takeUsed(rig, ivq, 1, 'used inflate', 5000);
};

/** A 256 KiB inflate buffer whose last PFN is a RAM page: processed by QEMU, beyond our per-buffer cap. */
const hugeInflateLastGood: Attack = async (rig, rings) => {
  const ivq = rings.get(0)!;
  const base = 0x20_0000;
  const n = 65536;
  await rig.m.quiet(async () => {
    await rig.m.memset(base, 4 * n, 0xff);
    await rig.m.writeBytes(base + 4 * (n - 1), pfns([0x7ff]));
    await rig.m.memset(0x7ff * 4096, 4096, 0x77);
  });
  await ivq.add([{ addr: base, len: 4 * n, write: false }]);
  await rig.drv.notify(0);
  await rig.m.idle();
  await takeUsed(rig, ivq, 1, 'used inflate', 5000);
  await rig.m.note(`page 0x7ff: ${hex(await rig.m.quiet(() => rig.m.readBytes(0x7ff * 4096, 4)))}`);
};

/** T-Gl2/T-Gl4: PFNs past RAM and at the top; deflate of pages never inflated; a PFN table in the arena. */
const badPfns: Attack = async (rig, rings) => {
  const ivq = rings.get(0)!;
  const dvq = rings.get(1)!;
  await rig.m.writeBytes(ARENA, pfns([0x1000, 0xffff_ffff, 0x1_0000, 0xfee00]));
  await ivq.add([{ addr: ARENA, len: 16, write: false }]);
  await rig.drv.notify(0);
  await rig.m.writeBytes(ARENA + 64, pfns([0x901, 0x902, 0x1000]));
  await dvq.add([{ addr: ARENA + 64, len: 12, write: false }]);
  await rig.drv.notify(1);
  await rig.m.idle();
  await takeUsed(rig, ivq, 1, 'used inflate');
  await takeUsed(rig, dvq, 1, 'used deflate');
  // The canary over the PFN tables is part of the arena check: restore it (the guest wrote them).
  await rig.m.quiet(() => rig.m.memset(ARENA, 128, CANARY));
};

/** Stats buffers of odd shapes: 25 bytes, writable only, zero records. */
const oddStats: Attack = async (rig, rings, h) => {
  const svq = rings.get(2)!;
  const rec = new Uint8Array(25).fill(0x11);
  await rig.m.writeBytes(ARENA, rec);
  await svq.add([{ addr: ARENA, len: 25, write: false }]);
  await rig.drv.notify(2);
  await svq.add([{ addr: ARENA + 64, len: 40, write: true }]);
  h.writable.push([ARENA + 64, 40]);
  await rig.drv.notify(2);
  await rig.m.idle();
  await takeUsed(rig, svq, 1, 'used stats');
  await rig.m.quiet(() => rig.m.memset(ARENA, 25, CANARY));
};

/** The inflate queue's avail.idx a whole ring ahead. */
const inflateAvailJump: Attack = async (rig, rings) => {
  const ivq = rings.get(0)!;
  await ivq.setAvailIdx(ivq.num + 2);
  await rig.drv.notify(0);
  await rig.m.idle();
  await takeUsed(rig, ivq, 0, 'used inflate');
};

/** A free page hint command id of 3 bytes (QEMU: "received an incorrect cmd id"). */
const shortCmdId: Attack = async (rig, rings) => {
  const hq = rings.get(3)!;
  await rig.m.writeBytes(ARENA, new Uint8Array([1, 0, 0]));
  await hq.add([{ addr: ARENA, len: 3, write: false }]);
  await rig.drv.notify(3);
  // QEMU handles hints in an iothread, after the notify returns: wait (unrecorded) until the
  // device has reported the error, or the interrupt lands at a time that depends on the load
  // of the machine (a fixed 50 ms once fell short on CI).
  await rig.m.quiet(() =>
    poll(rig.m, async () => ((await rig.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0, { timeoutMs: 5000, what: 'NEEDS_RESET after a short command id' }),
  );
  await rig.m.idle();
  await takeUsed(rig, hq, 0, 'used hints');
  await rig.m.quiet(() => rig.m.memset(ARENA, 3, CANARY));
};

// --- groups --------------------------------------------------------------------------------------

const CAP: ExpectedDifference = {
  row: 58,
  reason: 'QEMU reads every PFN of an inflate buffer; virtio-ts reads at most 32768 per buffer (bounded work), so a RAM page listed past that stays as it was',
  sections: ['attack'],
};
const ROW8: ExpectedDifference = {
  row: 8,
  reason: "QEMU's virtqueue_pop does not check avail.idx against the ring size: it pops stale heads (the same head twice); we refuse with \"Guest moved used index\"",
  sections: ['attack', 'liveness'],
};
const ROW17: ExpectedDifference = {
  row: 17,
  reason: 'a broken device: QEMU keeps the mmio line high after InterruptACK until reset; we lower it once the ISR is 0',
  sections: ['attack', 'liveness', 'recovery'],
  lines: /^irq lower \d+$/,
  optional: true,
};
const OUTSIDE: ExpectedDifference = {
  row: 26,
  reason: 'an event buffer outside RAM: QEMU completes it through a bounce buffer (the event is lost), virtio-ts asks for a reset',
  sections: ['attack', 'liveness'],
};

/** The declarations of a scenario on transport `t` (the mmio line row everywhere on virtio-mmio). */
const decl = (t: Transport, ...rows: ExpectedDifference[]): { expected?: ExpectedDifference[] } => {
  const all = [...rows, ...(t.kind === 'mmio' ? [ROW17] : [])];
  return all.length > 0 ? { expected: all } : {};
};

function inputHostile(t: Transport): OracleScenario[] {
  return [
    hostile('eventq avail.idx a ring ahead', 'T-Gi1', t, KEYBOARD, availJump, decl(t, ROW8)),
    hostile('statusq head out of range', 'T-Gi1', t, KEYBOARD, statusHeadOutOfRange, decl(t)),
    hostile('statusq descriptor chained to itself', 'T-A2a', t, KEYBOARD, statusLoop, decl(t)),
    hostile('statusq 1 MiB readable buffer and a writable-only one', 'T-Gi2', t, KEYBOARD, hugeStatusBuffer, decl(t)),
    hostile('event buffer outside RAM', 'T-Gi2 T-C1', t, KEYBOARD, eventBufferOutsideRam, decl(t, OUTSIDE)),
  ];
}

function balloonHostile(t: Transport): OracleScenario[] {
  return [
    hostile('1 MiB inflate buffer of bad PFNs', 'T-Gl1', t, BALLOON, hugeInflateBad, decl(t)),
    hostile('65536 PFNs, the last one a RAM page', 'T-Gl1', t, BALLOON, hugeInflateLastGood, decl(t, CAP)),
    hostile('PFNs past RAM and in MMIO; deflate of pages never inflated', 'T-Gl2 T-Gl4', t, BALLOON, badPfns, decl(t)),
    hostile('stats buffers of 25 bytes and writable only', 'T-Gl4', t, BALLOON, oddStats, decl(t)),
    hostile('inflate avail.idx a ring ahead', 'T-B1a', t, BALLOON, inflateAvailJump, decl(t)),
  ];
}

const PCI_KB: Transport = { kind: 'pci', label: 'pci keyboard', slot: 4, mode: 'modern' };
const MMIO2_KB: Transport = { kind: 'mmio', label: 'mmio v2 keyboard', version: 2, index: 23 };
const MMIO1_KB: Transport = { kind: 'mmio', label: 'mmio v1 keyboard', version: 1, index: 23 };
const PCI_BALLOON: Transport = { kind: 'pci', label: 'pci modern balloon', slot: 4, mode: 'modern' };
const PCI_LEGACY_BALLOON: Transport = { kind: 'pci', label: 'pci legacy balloon', slot: 3, mode: 'legacy' };
const MMIO2_BALLOON: Transport = { kind: 'mmio', label: 'mmio v2 balloon', version: 2, index: 23 };
const PCI_HINT: Transport = { kind: 'pci', label: 'pci modern balloon with hints', slot: 4, mode: 'modern' };

export const HOSTILE_DEVICE_GROUPS: OracleGroup[] = [
  { name: 'hostile: pc, virtio-keyboard-pci at 04.0', spec: { machine: 'pc', args: ['-device', 'virtio-keyboard-pci,addr=04.0'] }, scenarios: inputHostile(PCI_KB) },
  {
    name: 'hostile: microvm, virtio-keyboard-device on virtio-mmio v2',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-device', 'virtio-keyboard-device'] },
    scenarios: inputHostile(MMIO2_KB),
  },
  {
    name: 'hostile: microvm, virtio-keyboard-device on virtio-mmio v1',
    spec: { machine: 'microvm', args: ['-device', 'virtio-keyboard-device'] },
    scenarios: [hostile('eventq avail.idx a ring ahead', 'T-Gi1', MMIO1_KB, KEYBOARD, availJump, decl(MMIO1_KB, ROW8))],
  },
  { name: 'hostile: pc, virtio-balloon-pci modern at 04.0', spec: { machine: 'pc', args: ['-device', 'virtio-balloon-pci,disable-legacy=on,addr=04.0'] }, scenarios: balloonHostile(PCI_BALLOON) },
  { name: 'hostile: pc, virtio-balloon-pci legacy at 03.0', spec: { machine: 'pc', args: ['-device', 'virtio-balloon-pci,disable-modern=on,addr=03.0'] }, scenarios: balloonHostile(PCI_LEGACY_BALLOON) },
  {
    name: 'hostile: microvm, virtio-balloon-device on virtio-mmio v2',
    spec: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-device', 'virtio-balloon-device'] },
    scenarios: balloonHostile(MMIO2_BALLOON),
  },
  {
    name: 'hostile: pc, virtio-balloon-pci modern with free-page-hint',
    spec: { machine: 'pc', args: ['-object', 'iothread,id=io0', '-device', 'virtio-balloon-pci,disable-legacy=on,addr=04.0,free-page-hint=on,iothread=io0'] },
    scenarios: [
      hostile('free page hint command id of 3 bytes', 'T-Gl4', PCI_HINT, BALLOON, shortCmdId, {
        features: bit(VIRTIO_BALLOON_F_STATS_VQ) | bit(VIRTIO_BALLOON_F_FREE_PAGE_HINT),
        extraQueues: [{ index: 3, size: 1024 }],
      }),
    ],
  },
];

void VRING_DESC_F_WRITE;
