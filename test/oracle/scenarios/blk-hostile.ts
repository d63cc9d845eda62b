// Hostile guests against virtio-blk on QEMU 7.2 and on ours (hostile-guest-bugs.md G-blk, C5,
// A7, B3, E3), judged like the virtio-rng ones (docs/oracle.md): setup, attack, liveness (one
// well-formed 512-byte read), recovery (reset, set up again, one read). Two groups: a file disk
// for the malformed chains, and null-co with a 50 ms latency for what needs a request still in the
// backend: a head published again while its first copy is in flight (row #9 of
// qemu-differences.md), a reset with a read in flight, the device breaking with a read in flight.
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import type { OracleGroup, OracleMachineSpec, OracleScenario } from '../../../src/oracle/scenario.js';
import type { HostileFacts } from '../../../src/oracle/verdict.js';
import { BlkDriver, blkHeader } from '../../../src/driver/blk.js';
import { poll } from '../../../src/driver/machine.js';
import type { UsedEntry, VringDriver } from '../../../src/driver/vring.js';
import { fnv1a } from '../../../src/oracle/transcript.js';
import { VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK, VIRTIO_CONFIG_S_DRIVER as DRIVER, VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT as INDIRECT, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as W } from '../../../src/vring/constants.js';
import { legacyLayout } from '../../../src/vring/layout.js';
import { Hostile } from './hostile.js';
import { bringUp, hexb, isModern, nameRing, openRig, teardown, type Rig, type Transport } from './rig.js';
import { MMIO_V2, PCI_LEGACY, PCI_MODERN } from './transports.js';

const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const LEGACY_EXTRA = bit(VIRTIO_F_NOTIFY_ON_EMPTY) | bit(VIRTIO_F_ANY_LAYOUT);
const ARENA_SIZE = 96 * 1024;
const CANARY = 0xa5;
/** The latency of the in-flight group's null-co, and how long a scenario waits for it. */
const LATENCY_MS = 50;

export interface BlkAttack {
  name: string;
  ids: string;
  legal?: boolean;
  expected?: readonly ExpectedDifference[];
  /** The bad input, ending with a kick; for a legal one, the check of the used entries. */
  run(h: Hostile, b: AttackContext): Promise<void | ((used: UsedEntry[]) => boolean)>;
}

export interface AttackContext {
  rig: Rig;
  features: bigint;
  /** Wall-clock ms to wait for completions after the attack (the backend's latency). */
  waitMs: number;
  /** Reset and set the queue up again on the same memory; the harness follows the new ring. */
  reinit(): Promise<void>;
}

/** A readable header in the arena. */
async function header(h: Hostile, type: number, sector: bigint | number): Promise<number> {
  const a = h.mem(16);
  await h.poke(a, blkHeader(type, sector));
  return a;
}

/** Descriptors `d`, `d+1`, `d+2`: a 512-byte read of `sector`; returns the data and status buffers. */
async function readChain(h: Hostile, d: number, sector: number): Promise<{ data: number; status: number }> {
  const hdr = await header(h, 0, sector);
  const data = h.buf(512);
  const status = h.buf(1);
  await h.desc(d, hdr, 16, NEXT, d + 1);
  await h.desc(d + 1, data, 512, W | NEXT, d + 2);
  await h.desc(d + 2, status, 1, W, 0);
  return { data, status };
}

/** Note what a buffer holds now (recorded): untouched canary, or a digest. */
async function noteBuf(h: Hostile, label: string, addr: number, len: number): Promise<void> {
  const b = await h.m.quiet(() => h.m.readBytes(addr, len));
  await h.m.note(`${label}: ${b.every((x) => x === CANARY) ? 'untouched' : fnv1a(b)}`);
}

/** Wait (unrecorded) up to `ms` for used.idx to move from `from`, then let the device settle. */
async function waitUsed(h: Hostile, from: number, ms: number): Promise<void> {
  await h.m.quiet(() => poll(h.m, async () => (await h.ring.usedIdx()) !== from, { timeoutMs: ms }).catch(() => undefined));
  await h.m.idle();
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function blkHostileScenario(t: Transport, a: BlkAttack, waitMs: number): OracleScenario {
  const s: OracleScenario = {
    name: `[${t.label}] blk: ${a.name}`,
    ids: a.ids,
    async run(ctx): Promise<HostileFacts> {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('setup');
      const features = IND | (isModern(t) ? 0n : LEGACY_EXTRA);
      const num = t.kind === 'pci' && t.mode === 'legacy' ? undefined : 8;
      let ring: VringDriver = await bringUp(rig, { irq: t.kind === 'pci' ? 'intx' : 'mmio', features, ...(num !== undefined ? { num } : {}) });
      const arena = ctx.alloc.alloc(ARENA_SIZE, 4096);
      await m.memset(arena, ARENA_SIZE, CANARY);
      const h = new Hostile(rig, ring, arena);
      const actx: AttackContext = {
        rig,
        features,
        waitMs,
        async reinit() {
          const addrs = h.ring.addrs;
          await rig.drv.init(features);
          ring = await rig.drv.setupQueue(0, { ...(num !== undefined ? { num } : {}), addrs: legacyLayout(addrs.desc, h.ring.num, 4096), base: addrs.desc });
          nameRing(m, ring);
          await rig.drv.driverOk();
          h.ring = ring;
          h.usedFrom = 0;
          h.inFlight.clear();
          // The set-up rewrote the ring: judge memory from here on.
          h.dropSnapshot();
          await h.takeSnapshot();
        },
      };

      await m.phase('attack');
      const from0 = h.usedFrom;
      const check = await a.run(h, actx);
      await waitUsed(h, from0, waitMs + 300);
      if (waitMs) await m.quiet(() => sleep(2 * waitMs));
      const st1 = await rig.drv.status();
      let needsReset = (st1 & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
      const after = await h.collectUsed();
      await rig.irq?.check();
      const processed = check ? check(after) : undefined;
      if (check) await m.note(`processed as the spec requires: ${processed}`);

      await m.phase('liveness');
      let liveness: boolean | undefined;
      if (needsReset) {
        await m.note('skipped: the device asks for a reset');
      } else {
        const L = h.num - 3;
        const good = await readChain(h, L, 1);
        await h.publish(L, 513);
        await h.kick();
        const from = h.usedFrom;
        await waitUsed(h, from, waitMs + 300);
        needsReset = ((await rig.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
        const live = await h.collectUsed();
        liveness = live.some((e) => e.id === L && e.len === 513);
        await noteBuf(h, 'liveness status', good.status, 1);
        await rig.irq?.check();
      }
      const problems = [...h.problems, ...(await h.memoryProblems())];
      for (const p of problems) await m.note(p);

      await m.phase('recovery');
      await rig.drv.setStatus(0);
      await rig.drv.status();
      await rig.drv.init(features);
      const addrs = h.ring.addrs;
      const again = await rig.drv.setupQueue(0, { ...(num !== undefined ? { num } : {}), addrs: legacyLayout(addrs.desc, h.ring.num, 4096), base: addrs.desc });
      nameRing(m, again);
      await rig.drv.driverOk();
      const blk = new BlkDriver(rig.drv, again, ctx.alloc);
      const p = await blk.post(0, 2, 512);
      await blk.notify();
      const used = await m.quiet(() => again.waitUsed(1, { timeoutMs: waitMs + 2000 }).catch(() => [] as UsedEntry[]));
      const st = await m.readb(p.status);
      const recovered = used.length === 1 && used[0]!.len === 513 && st === 0 && (await rig.drv.status()) === (isModern(t) ? ACK | DRIVER | FEATURES_OK | DRIVER_OK : ACK | DRIVER | DRIVER_OK);
      await m.note(`recovered ${recovered} (status ${hexb(st)})`);
      await m.phase('teardown');
      await teardown(rig);
      const facts: HostileFacts = { legal: a.legal ?? false, needsReset, liveness, recovered, problems };
      if (processed !== undefined) facts.processed = processed;
      return facts;
    },
  };
  const expected = [...(a.expected ?? [])];
  if (t.kind === 'mmio') expected.push(ROW17);
  if (expected.length) s.expected = expected;
  return s;
}

const ROW17: ExpectedDifference = {
  row: 17,
  reason: 'a broken device: QEMU keeps the mmio line high after InterruptACK until reset; we lower it once the ISR is 0',
  sections: ['attack', 'liveness', 'recovery'],
  lines: /^irq lower \d+$/,
  optional: true,
};

const exp = (row: number, reason: string, sections: string[] = ['attack', 'liveness']): ExpectedDifference => ({ row, reason, sections });

// --- malformed chains (file disk) ------------------------------------------------------------------

export const BLK_CHAIN_ATTACKS: BlkAttack[] = [
  {
    name: 'header in a device-writable descriptor',
    ids: 'G-blk T-Gb4, T-C7',
    async run(h) {
      const hdr = h.buf(16);
      await h.poke(hdr, blkHeader(0, 0));
      await h.desc(0, hdr, 16, W | NEXT, 1);
      await h.desc(1, h.buf(1), 1, W);
      await h.publish(0, 17);
      await h.kick();
    },
  },
  {
    name: 'status byte missing (readable buffers only)',
    ids: 'G-blk T-Gb3, T-Gb4b',
    async run(h) {
      await h.desc(0, await header(h, 1, 0), 16, NEXT, 1);
      await h.desc(1, h.mem(512), 512, 0);
      await h.publish(0, 0);
      await h.kick();
    },
  },
  {
    name: 'status byte readable, after a writable data buffer',
    ids: 'G-blk T-Gb4b, T-A8',
    async run(h) {
      await h.desc(0, await header(h, 0, 0), 16, NEXT, 1);
      await h.desc(1, h.buf(512), 512, W | NEXT, 2);
      await h.desc(2, h.mem(1), 1, 0);
      await h.publish(0, 512);
      await h.kick();
    },
  },
  {
    name: 'header of 8 bytes',
    ids: 'T-C5a, T-Gb6d',
    async run(h) {
      await h.desc(0, await header(h, 0, 0), 8, NEXT, 1);
      await h.desc(1, h.buf(1), 1, W);
      await h.publish(0, 1);
      await h.kick();
    },
  },
  {
    name: 'header split 7 + 9 (legal)',
    ids: 'T-C5b, C#65',
    legal: true,
    async run(h) {
      const hdr = await header(h, 0, 3);
      await h.desc(0, hdr, 7, NEXT, 1);
      await h.desc(1, hdr + 7, 9, NEXT, 2);
      await h.desc(2, h.buf(512), 512, W | NEXT, 3);
      await h.desc(3, h.buf(1), 1, W);
      await h.publish(0, 513);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.id === 0 && u[0]!.len === 513;
    },
  },
  {
    name: 'sector 2^64 - 1 and 2^55 (sector × 512 overflows 2^64), 511 bytes',
    ids: 'T-Gb1, CVE-2011-1750',
    async run(h) {
      const st: number[] = [];
      for (const [sector, len] of [[(1n << 64n) - 1n, 512], [1n << 55n, 512], [0n, 511]] as const) {
        const hdr = await header(h, 0, sector);
        const s = h.buf(1);
        st.push(s);
        await h.desc(0, hdr, 16, NEXT, 1);
        await h.desc(1, h.buf(len), len, W | NEXT, 2);
        await h.desc(2, s, 1, W);
        await h.publish(0, len + 1);
        await h.kick();
        await waitUsed(h, h.usedFrom, 300);
        await h.collectUsed();
      }
      for (const s of st) await noteBuf(h, 'status', s, 1);
    },
  },
  {
    name: 'discard: two segments, out of range, too many sectors, reserved flags; a short segment',
    ids: 'T-Gb5',
    async run(h) {
      const seg = (sector: bigint, n: number, flags: number): Uint8Array => {
        const b = new Uint8Array(16);
        const v = new DataView(b.buffer);
        v.setBigUint64(0, sector, true);
        v.setUint32(8, n, true);
        v.setUint32(12, flags, true);
        return b;
      };
      const cases: Uint8Array[] = [new Uint8Array([...seg(1n, 1, 0), ...seg(2n, 1, 0)]), seg(4096n, 1, 0), seg(0n, 0xffff_ffff, 0), seg(0n, 1, 2), seg(0n, 1, 0).subarray(0, 8)];
      const st: number[] = [];
      for (let i = 0; i < cases.length; i++) {
        const a = h.mem(32);
        await h.poke(a, cases[i]!);
        const s = h.buf(1);
        st.push(s);
        await h.desc(0, await header(h, 11, 0), 16, NEXT, 1);
        await h.desc(1, a, cases[i]!.length, NEXT, 2);
        await h.desc(2, s, 1, W);
        await h.publish(0, 1);
        await h.kick();
        await waitUsed(h, h.usedFrom, 300);
        await h.collectUsed();
      }
      for (const s of st) await noteBuf(h, 'status', s, 1);
    },
  },
  {
    name: 'a chain of 4 GiB (512 buffers of 8 MiB in an indirect table)',
    ids: 'T-A7, villain t0007',
    expected: [exp(64, 'QEMU maps the whole chain (its iov length is 64-bit) and answers IOERR with used.len taken mod 2^32; we refuse a chain of more than 2^32-1 bytes at pop (virtioError)')],
    async run(h) {
      const table = h.mem(16 * 514, 16);
      const big = 0x40_0000; // 8 MiB from 4 MiB: RAM, outside the arena, never written (IOERR)
      const parts = new Uint8Array(16 * 514);
      const dv = new DataView(parts.buffer);
      const put = (i: number, addr: number, len: number, flags: number, next: number) => {
        dv.setBigUint64(16 * i, BigInt(addr), true);
        dv.setUint32(16 * i + 8, len, true);
        dv.setUint16(16 * i + 12, flags, true);
        dv.setUint16(16 * i + 14, next, true);
      };
      put(0, await header(h, 0, 0), 16, NEXT, 1);
      for (let i = 1; i <= 512; i++) put(i, big, 8 * 1024 * 1024, W | NEXT, i + 1);
      const s = h.buf(1);
      put(513, s, 1, W, 0);
      await h.poke(table, parts);
      await h.desc(0, table, 16 * 514, INDIRECT);
      // The writable capacity is 2^32 + 1 bytes; QEMU reports it mod 2^32.
      await h.publish(0, 0x1_0000_0001);
      await h.kick();
      await waitUsed(h, h.usedFrom, 300);
      await noteBuf(h, 'status', s, 1);
    },
  },
];

// --- a request still in the backend (null-co, 50 ms) -----------------------------------------------

export const BLK_INFLIGHT_ATTACKS: BlkAttack[] = [
  {
    name: 'a head made available again while its first copy is in flight',
    ids: 'T-B3, villain t0022',
    expected: [exp(9, 'QEMU pops the head a second time and processes both copies (two used entries for one chain); we refuse a head that is in flight (virtioError)')],
    async run(h) {
      const { status } = await readChain(h, 0, 0);
      await h.publish(0, 513);
      await h.publish(0, 513);
      await h.kick();
      await waitUsed(h, h.usedFrom, LATENCY_MS * 3);
      await noteBuf(h, 'status', status, 1);
    },
  },
  {
    name: 'a reset while a read is in the backend, then the queue set up again',
    ids: 'T-E3a',
    expected: [
      exp(62, 'QEMU drains block I/O in its reset: the read completes into the old ring (data, status, used entry) before the reset returns; we reset at once and the late completion writes nothing', ['attack', 'liveness']),
    ],
    async run(h, b) {
      const { data, status } = await readChain(h, 0, 5);
      await h.publish(0, 513);
      await h.kick();
      await b.rig.drv.setStatus(0);
      await b.rig.drv.status();
      await b.reinit();
      await h.m.quiet(() => sleep(3 * LATENCY_MS));
      await h.m.idle();
      await noteBuf(h, 'read data', data, 512);
      await noteBuf(h, 'read status', status, 1);
    },
  },
  {
    name: 'the device breaks while a read is in the backend',
    ids: 'T-E3 (broken)',
    expected: [exp(63, 'QEMU writes the status byte (and the read data it placed at I/O time) of a request completing after virtio_error, with no used entry; we write nothing once the device is broken')],
    async run(h) {
      const { data, status } = await readChain(h, 0, 5);
      await h.publish(0, 513);
      await h.kick();
      // A chain with no readable header: virtio_error.
      await h.desc(3, h.buf(16), 16, W);
      await h.publish(3, 16);
      await h.kick();
      await h.m.quiet(() => sleep(3 * LATENCY_MS));
      await h.m.idle();
      await noteBuf(h, 'read data', data, 512);
      await noteBuf(h, 'read status', status, 1);
    },
  },
];

// --- groups --------------------------------------------------------------------------------------

const fileSpec = (t: Transport): OracleMachineSpec => {
  const drive = '-drive';
  const d = 'if=none,id=d0,file=@disk:d@,format=raw';
  if (t.kind === 'pci') return { machine: 'pc', disks: { d: { size: 2 * 1024 * 1024 } }, args: [drive, d, '-device', `virtio-blk-pci,drive=d0,ioeventfd=off,${t.mode === 'modern' ? 'disable-legacy=on,addr=04.0' : 'disable-modern=on,addr=03.0'}`] };
  return { machine: 'microvm', disks: { d: { size: 2 * 1024 * 1024 } }, args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', drive, d, '-device', 'virtio-blk-device,drive=d0'] };
};
const latencyDrive = `if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=2M,file.latency-ns=${LATENCY_MS * 1_000_000},format=raw`;
const latencySpec = (t: Transport): OracleMachineSpec =>
  t.kind === 'pci'
    ? { machine: 'pc', args: ['-drive', latencyDrive, '-device', 'virtio-blk-pci,drive=d0,ioeventfd=off,disable-legacy=on,addr=04.0'] }
    : { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-drive', latencyDrive, '-device', 'virtio-blk-device,drive=d0'] };

export const BLK_HOSTILE_GROUPS: OracleGroup[] = [
  { name: 'hostile blk, pc, virtio-blk-pci modern', spec: fileSpec(PCI_MODERN), scenarios: BLK_CHAIN_ATTACKS.map((a) => blkHostileScenario(PCI_MODERN, a, 0)) },
  { name: 'hostile blk, microvm, virtio-blk-device on mmio v2', spec: fileSpec(MMIO_V2), scenarios: BLK_CHAIN_ATTACKS.map((a) => blkHostileScenario(MMIO_V2, a, 0)) },
  { name: 'hostile blk, pc, virtio-blk-pci legacy', spec: fileSpec(PCI_LEGACY), scenarios: BLK_CHAIN_ATTACKS.slice(0, 4).map((a) => blkHostileScenario(PCI_LEGACY, a, 0)) },
  { name: 'hostile blk in flight, pc, virtio-blk-pci modern, null-co latency 50 ms', spec: latencySpec(PCI_MODERN), scenarios: BLK_INFLIGHT_ATTACKS.map((a) => blkHostileScenario(PCI_MODERN, a, LATENCY_MS)) },
  { name: 'hostile blk in flight, microvm, mmio v2, null-co latency 50 ms', spec: latencySpec(MMIO_V2), scenarios: BLK_INFLIGHT_ATTACKS.map((a) => blkHostileScenario(MMIO_V2, a, LATENCY_MS)) },
];
