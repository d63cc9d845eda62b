// Hostile guests, both ways: the tests of shared/spec/hostile-guest-bugs.md that can be expressed
// through registers and guest RAM, run on QEMU 7.2 and on ours with the same script. Each
// scenario records what a driver sees (so the transcripts are compared like any other) and
// returns its observations, from which each side gets a verdict in virtio-villain's terms
// (src/oracle/verdict.ts, docs/oracle.md):
//
//   setup     bring the device up (INTx or the mmio line), canary-fill an arena for the attack
//   attack    the bad input and a notify; then status, used ring and interrupts are read
//   liveness  unless NEEDS_RESET is set: one well-formed request; does it complete?
//   recovery  reset, set up again on the same memory, one request; it must complete (I7)
//
// Guest memory outside the used ring and the device-writable buffers of the attack must not
// change (I4); used entries must name heads that were published, once, with a length within the
// chain's writable bytes (I6).
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import type { OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import type { HostileFacts } from '../../../src/oracle/verdict.js';
import { VringDriver, descBytes, type UsedEntry } from '../../../src/driver/vring.js';
import { poll } from '../../../src/driver/machine.js';
import { VirtioPciCommon, VirtioPciLegacy } from '../../../src/driver/virtio-pci-driver.js';
import {
  VIRTIO_MMIO_GUEST_PAGE_SIZE,
  VIRTIO_MMIO_QUEUE_ALIGN,
  VIRTIO_MMIO_QUEUE_PFN,
  VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
  VIRTIO_MMIO_QUEUE_AVAIL_LOW,
  VIRTIO_MMIO_QUEUE_DESC_HIGH,
  VIRTIO_MMIO_QUEUE_DESC_LOW,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  VIRTIO_MMIO_QUEUE_NUM,
  VIRTIO_MMIO_QUEUE_READY,
  VIRTIO_MMIO_QUEUE_SEL,
  VIRTIO_MMIO_QUEUE_USED_HIGH,
  VIRTIO_MMIO_QUEUE_USED_LOW,
} from '../../../src/bus/virtio-mmio.js';
import {
  VIRTIO_CONFIG_S_ACKNOWLEDGE as ACK,
  VIRTIO_CONFIG_S_DRIVER as DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT as INDIRECT, VRING_DESC_F_NEXT as NEXT, VRING_DESC_F_WRITE as W } from '../../../src/vring/constants.js';
import { legacyLayout, type RingAddresses } from '../../../src/vring/layout.js';
import { IrqObserver, bringUp, fmtUsed, isModern, nameRing, openRig, requests, teardown, type Rig, type Transport } from './rig.js';
import { MMIO_V1, MMIO_V2, PCI_LEGACY, PCI_MODERN, PCI_TRANS_MODERN, SPEC } from './transports.js';

const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const EI = bit(VIRTIO_RING_F_EVENT_IDX);
/** Guest RAM ends here (-m 16M). */
const RAM_END = 0x100_0000;
/** Unassigned on both machines (RAM is 16 MiB; no BAR or transport is placed there). */
const OUTSIDE_RAM = 0x4000_0000;
const ARENA_SIZE = 96 * 1024;
const CANARY = 0xa5;

/** The harness an attack works with. */
export class Hostile {
  /** Writable buffers the device may fill: [addr, len]. */
  readonly writable: [number, number][] = [];
  /** Heads in flight (published, not yet used): how often, and the writable bytes of their chains. */
  readonly inFlight = new Map<number, { count: number; cap: number }>();
  /** The used index up to which entries have been collected. */
  usedFrom = 0;
  /** Invariant violations seen so far. */
  readonly problems: string[] = [];
  private arenaNext: number;
  private snapshot: { base: number; bytes: Uint8Array }[] | undefined;

  constructor(
    readonly rig: Rig,
    public ring: VringDriver,
    readonly arena: number,
  ) {
    this.arenaNext = arena;
  }

  get m() {
    return this.rig.m;
  }
  get num(): number {
    return this.ring.num;
  }

  /** Arena memory (canary-filled); `writable` marks it as a buffer the device may fill. */
  mem(len: number, align = 16, writable = false): number {
    const at = Math.ceil(this.arenaNext / align) * align;
    if (at + len > this.arena + ARENA_SIZE) throw new Error('hostile arena exhausted');
    this.arenaNext = at + len;
    if (writable) this.writable.push([at, len]);
    return at;
  }
  /** A device-writable buffer. */
  buf(len: number): number {
    return this.mem(len, 16, true);
  }

  /** Raw writes that keep the memory snapshot up to date. */
  async poke(addr: number, data: Uint8Array): Promise<void> {
    this.patch(addr, data);
    await this.m.writeBytes(addr, data);
  }
  private patch(addr: number, data: Uint8Array): void {
    for (const s of this.snapshot ?? []) {
      for (let i = 0; i < data.length; i++) {
        const o = addr + i - s.base;
        if (o >= 0 && o < s.bytes.length) s.bytes[o] = data[i]!;
      }
    }
  }
  async u16(addr: number, v: number): Promise<void> {
    const b = new Uint8Array([v & 0xff, (v >> 8) & 0xff]);
    this.patch(addr, b);
    await this.m.writew(addr, v);
  }

  /** Descriptor `i` of the ring (or at `at`, e.g. in an indirect table). */
  desc(i: number, addr: number | bigint, len: number, flags: number, next = 0): Promise<void> {
    return this.poke(this.ring.addrs.desc + 16 * i, descBytes(addr, len, flags, next));
  }
  descAt(at: number, addr: number | bigint, len: number, flags: number, next = 0): Promise<void> {
    return this.poke(at, descBytes(addr, len, flags, next));
  }

  /** Put `head` in the next avail slot and publish it; `writable` is its chain's capacity. */
  async publish(head: number, writable: number): Promise<void> {
    const slot = this.ring.availIdx % this.num;
    await this.u16(this.ring.addrs.avail + 4 + 2 * slot, head);
    this.ring.availIdx = (this.ring.availIdx + 1) & 0xffff;
    await this.u16(this.ring.addrs.avail + 2, this.ring.availIdx);
    this.expose(head, writable);
  }
  /** Count one more publication of `head` (a completion may name it once per publication). */
  expose(head: number, writable: number): void {
    const f = this.inFlight.get(head);
    this.inFlight.set(head, { count: (f?.count ?? 0) + 1, cap: Math.max(f?.cap ?? 0, writable) });
  }

  /**
   * Read used.idx and the entries since the last collection (recorded) and check them (I6):
   * each names a head in flight, within its writable bytes; used.idx moves by at most the ring
   * size at once.
   */
  async collectUsed(): Promise<UsedEntry[]> {
    const idx = await this.ring.usedIdx();
    const n = (idx - this.usedFrom) & 0xffff;
    const entries: UsedEntry[] = [];
    if (n > this.num) this.problems.push(`I6: used.idx moved by ${n} on a ring of ${this.num}`);
    for (let k = 0; k < Math.min(n, this.num); k++) entries.push(await this.ring.usedEntry((this.usedFrom + k) % this.num));
    for (const e of entries) {
      const f = this.inFlight.get(e.id);
      if (!f) {
        this.problems.push(`I6: used id ${e.id} is not in flight (never published, or used more often than published)`);
        continue;
      }
      if (e.len > f.cap) this.problems.push(`I6: used len ${e.len} exceeds the ${f.cap} writable bytes of head ${e.id}`);
      if (--f.count === 0) this.inFlight.delete(e.id);
    }
    this.usedFrom = idx;
    await this.m.note(`used.idx ${idx}: ${fmtUsed(entries)}`);
    return entries;
  }
  /** Set avail.idx to anything. */
  async availIdx(v: number): Promise<void> {
    this.ring.availIdx = v & 0xffff;
    await this.u16(this.ring.addrs.avail + 2, v);
  }

  /** Notify queue 0 (a snapshot of ring and arena is taken first, once). */
  async kick(queue = 0): Promise<void> {
    await this.takeSnapshot();
    await this.rig.drv.notify(queue);
  }

  /**
   * More guest memory the device must leave alone (checked with the ring and the arena): the
   * first page, where a write whose address wraps 2^64 lands.
   */
  readonly watched: [number, number][] = [[0, 0x1000]];

  /** Forget the snapshot (after the scenario itself rewrote the ring, say by setting it up again); the next kick takes a new one. */
  dropSnapshot(): void {
    this.snapshot = undefined;
  }

  async takeSnapshot(): Promise<void> {
    if (this.snapshot) return;
    const r = this.ring.addrs;
    const ringLen = r.used + 6 + 8 * this.num - r.desc;
    const areas: [number, number][] = [[r.desc, ringLen], [this.arena, ARENA_SIZE], ...this.watched];
    this.snapshot = [];
    for (const [base, len] of areas) this.snapshot.push({ base, bytes: await this.m.quiet(() => this.m.readBytes(base, len)) });
  }

  /** I4: bytes changed outside the used ring and the writable buffers, as text (empty if none). */
  async memoryProblems(): Promise<string[]> {
    if (!this.snapshot) return [];
    const r = this.ring.addrs;
    const allowed: [number, number][] = [[r.used, r.used + 6 + 8 * this.num], ...this.writable.map(([a, l]): [number, number] => [a, a + l])];
    const out: string[] = [];
    for (const s of this.snapshot) {
      const now = await this.m.quiet(() => this.m.readBytes(s.base, s.bytes.length));
      let first = -1;
      let count = 0;
      for (let i = 0; i < now.length; i++) {
        if (now[i] === s.bytes[i]) continue;
        const a = s.base + i;
        if (allowed.some(([lo, hi]) => a >= lo && a < hi)) continue;
        if (first < 0) first = a;
        count++;
      }
      if (count > 0) {
        out.push(`I4: ${count} bytes changed outside the used ring and writable buffers, first at 0x${first.toString(16)}`);
        // Put watched memory back, so that the damage does not leak into later scenarios.
        if (s.base !== r.desc && s.base !== this.arena) await this.m.quiet(() => this.m.writeBytes(s.base, s.bytes));
      }
    }
    return out;
  }
}

export interface Attack {
  name: string;
  /** hostile-guest-bugs.md test ids and virtio-villain ids. */
  ids: string;
  /** Legal input: processing it is the only right answer. */
  legal?: boolean;
  expected?: readonly ExpectedDifference[] | ((t: Transport) => readonly ExpectedDifference[]);
  features?: bigint;
  /** Queue size to program (default: 8). */
  num?: number;
  /** Bring the device up differently (queue size games); returns the ring the attack uses. */
  bringUp?: (rig: Rig) => Promise<VringDriver>;
  /** The bad input, ending with a kick. For a legal input, returns the check of the used entries. */
  run(h: Hostile): Promise<void | ((used: UsedEntry[]) => boolean)>;
  /** Transports to run on (default all hostile ones). */
  only?: 'pci' | 'mmio';
}

/** Outside RAM (docs/qemu-differences.md #26). */
const ROW26: ExpectedDifference = {
  row: 26,
  reason:
    'QEMU maps what is not RAM through a bounce buffer: a writable buffer there completes with its full used.len and the bytes vanish; an indirect table or ring there reads as zeros and fails later. We refuse at once: buffers and rings must lie in RAM',
  sections: ['attack', 'liveness'],
};

const exp = (row: number, reason: string, sections: string[] = ['attack', 'liveness']): ExpectedDifference => ({ row, reason, sections });

async function status(rig: Rig): Promise<number> {
  return rig.drv.status();
}

function hostileScenario(t: Transport, a: Attack): OracleScenario {
  const s: OracleScenario = {
    name: `[${t.label}] ${a.name}`,
    ids: a.ids,
    async run(ctx): Promise<HostileFacts> {
      const rig = await openRig(ctx, t);
      const m = rig.m;
      await m.phase('setup');
      const irq = t.kind === 'pci' ? 'intx' : 'mmio';
      let ring: VringDriver;
      if (a.bringUp) {
        ring = await a.bringUp(rig);
        nameRing(m, ring);
        rig.irq = await IrqObserver.attach(rig, irq);
      } else {
        ring = await bringUp(rig, { irq, features: a.features ?? 0n, num: a.num ?? 8 });
      }
      const irqs = rig.irq!;
      const arena = ctx.alloc.alloc(ARENA_SIZE, 4096);
      await m.memset(arena, ARENA_SIZE, CANARY);
      const h = new Hostile(rig, ring, arena);

      await m.phase('attack');
      const check = await a.run(h);
      await m.idle();
      const st1 = await status(rig);
      let needsReset = (st1 & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
      const after = await h.collectUsed();
      await irqs.check();
      const processed = check ? check(after) : undefined;
      if (check) await m.note(`processed as the spec requires: ${processed}`);

      await m.phase('liveness');
      let liveness: boolean | undefined;
      if (needsReset) {
        await m.note('skipped: the device asks for a reset');
      } else {
        const L = h.num - 1;
        const b = h.buf(16);
        await h.desc(L, b, 16, W, 0);
        await h.publish(L, 16);
        await h.kick();
        const from = h.usedFrom;
        await m.quiet(() => poll(m, async () => (await h.ring.usedIdx()) !== from, { timeoutMs: 300 }).catch(() => undefined));
        await m.idle();
        const st2 = await status(rig);
        needsReset = (st2 & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
        const live = await h.collectUsed();
        liveness = live.some((e) => e.id === L && e.len === 16);
        await irqs.check();
      }
      const problems = [...h.problems, ...(await h.memoryProblems())];
      for (const p of problems) await m.note(p);

      await m.phase('recovery');
      await rig.drv.setStatus(0);
      await status(rig);
      await rig.drv.init(a.features ?? 0n);
      const addrs = ring.addrs;
      const again = await rig.drv.setupQueue(0, { num: 8, addrs: legacyLayout(addrs.desc, 8, 4096), base: addrs.desc });
      nameRing(m, again);
      await rig.drv.driverOk();
      const used = await requests(rig, again, [[16]]);
      const recovered = used.length === 1 && used[0]!.len === 16 && (await status(rig)) === (isModern(t) ? ACK | DRIVER | FEATURES_OK | DRIVER_OK : ACK | DRIVER | DRIVER_OK);
      await m.note(`recovered ${recovered}`);
      await m.phase('teardown');
      await teardown(rig);
      const facts: HostileFacts = { legal: a.legal ?? false, needsReset, liveness, recovered, problems };
      if (processed !== undefined) facts.processed = processed;
      return facts;
    },
  };
  const expected = [...(typeof a.expected === 'function' ? a.expected(t) : (a.expected ?? []))];
  if (t.kind === 'mmio') expected.push(ROW17);
  if (expected.length > 0) s.expected = expected;
  return s;
}

/**
 * #17, on every virtio-mmio hostile scenario: once a device is broken, QEMU keeps the line high
 * after InterruptACK until the reset; ours lowers it. Only `irq lower` lines may differ, and only
 * when some side broke (optional).
 */
const ROW17: ExpectedDifference = {
  row: 17,
  reason: 'a broken device: QEMU keeps the mmio line high after InterruptACK until reset; we lower it once the ISR is 0',
  sections: ['attack', 'liveness', 'recovery'],
  lines: /^irq lower \d+$/,
  optional: true,
};

// --- attacks -------------------------------------------------------------------------------------

const single = (h: Hostile, len = 16): number => h.buf(len);

/** Chains and descriptors (hostile-guest-bugs.md §A). */
const CHAIN_ATTACKS: Attack[] = [
  {
    name: 'zero-length descriptor alone',
    ids: 'T-A1, villain t0006',
    expected: [exp(2, 'QEMU: "zero sized buffers are not allowed" (device broken); we walk it and, with no writable bytes, complete the request with used.len 0 (#15)'), exp(15, 'no writable bytes: QEMU leaves the request pending until another request brings bytes; we complete it at once')],
    async run(h) {
      await h.desc(0, single(h), 0, W);
      await h.publish(0, 0);
      await h.kick();
    },
  },
  {
    name: 'zero-length descriptor in a chain',
    ids: 'T-A1, villain t0006',
    expected: [exp(2, 'QEMU breaks the device on a zero-length buffer; we skip it and fill the others')],
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 1);
      await h.desc(1, single(h), 0, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'descriptor loop: next points to itself',
    ids: 'T-A2a, villain t0001',
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 0);
      await h.publish(0, 16 * 8);
      await h.kick();
    },
  },
  {
    name: 'descriptor loop: 0 -> 1 -> 0',
    ids: 'T-A2b, villain t0002',
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 1);
      await h.desc(1, single(h), 16, W | NEXT, 0);
      await h.publish(0, 16 * 8);
      await h.kick();
    },
  },
  {
    name: 'chain of exactly the queue size (legal)',
    ids: 'T-A2c, villain t0054',
    legal: true,
    async run(h) {
      for (let i = 0; i < h.num; i++) await h.desc(i, single(h, 2), 2, W | (i < h.num - 1 ? NEXT : 0), i + 1);
      await h.publish(0, 2 * h.num);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.id === 0 && u[0]!.len === 2 * h.num;
    },
  },
  {
    name: 'chain one longer than the queue (through a cycle)',
    ids: 'T-A2d',
    async run(h) {
      for (let i = 0; i < h.num; i++) await h.desc(i, single(h, 2), 2, W | NEXT, (i + 1) % h.num);
      await h.publish(0, 2 * h.num);
      await h.kick();
    },
  },
  {
    name: 'next equal to the queue size',
    ids: 'T-A3, villain t0003',
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, h.num);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'next 0xffff',
    ids: 'T-A3, villain t0003',
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 0xffff);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'readable descriptor after a writable one',
    ids: 'T-A8',
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 1);
      await h.desc(1, h.mem(16), 16, 0, 0);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'readable-only chain (nothing to fill)',
    ids: 'T-Gr2',
    expected: [exp(15, 'QEMU asks the backend for 0 bytes and leaves the request pending; we complete it at once with used.len 0')],
    async run(h) {
      await h.desc(0, h.mem(16), 16, 0);
      await h.publish(0, 0);
      await h.kick();
    },
  },
];

/** Indirect descriptors (§A4, §A5). */
const INDIRECT_ATTACKS: Attack[] = [
  {
    name: 'indirect table of 1024 one-byte buffers (legal)',
    ids: 'T-A4',
    legal: true,
    features: IND,
    async run(h) {
      const data = h.buf(1024);
      const table = h.mem(16 * 1024);
      const bytes = new Uint8Array(16 * 1024);
      for (let k = 0; k < 1024; k++) bytes.set(descBytes(data + k, 1, W | (k < 1023 ? NEXT : 0), k + 1), 16 * k);
      await h.poke(table, bytes);
      await h.desc(0, table, 16 * 1024, INDIRECT);
      await h.publish(0, 1024);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.id === 0 && u[0]!.len === 1024;
    },
  },
  {
    name: 'indirect table of 4096 one-byte buffers',
    ids: 'T-A4',
    features: IND,
    async run(h) {
      const data = h.buf(4096);
      const table = h.mem(16 * 4096);
      const bytes = new Uint8Array(16 * 4096);
      for (let k = 0; k < 4096; k++) bytes.set(descBytes(data + k, 1, W | (k < 4095 ? NEXT : 0), k + 1), 16 * k);
      await h.poke(table, bytes);
      await h.desc(0, table, 16 * 4096, INDIRECT);
      await h.publish(0, 4096);
      await h.kick();
    },
  },
  {
    name: 'indirect table length not a multiple of 16',
    ids: 'T-A5a, villain t0018',
    features: IND,
    async run(h) {
      const table = h.mem(32);
      await h.descAt(table, single(h), 16, W);
      await h.desc(0, table, 24, INDIRECT);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'indirect table of length 0',
    ids: 'T-A5b, villain t0019',
    features: IND,
    async run(h) {
      await h.desc(0, h.mem(16), 0, INDIRECT);
      await h.publish(0, 0);
      await h.kick();
    },
  },
  {
    name: 'nested indirect table',
    ids: 'T-A5c, villain t0016',
    features: IND,
    expected: [exp(6, 'QEMU maps the nested INDIRECT descriptor as a (readable) data buffer; we refuse it (§2.7.5.3.1)')],
    async run(h) {
      const inner = h.mem(16);
      await h.descAt(inner, single(h), 16, W);
      const outer = h.mem(16);
      await h.descAt(outer, inner, 16, INDIRECT);
      await h.desc(0, outer, 16, INDIRECT);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'INDIRECT and NEXT on the same descriptor',
    ids: 'T-A5d, villain t0017',
    features: IND,
    expected: [exp(5, 'QEMU ignores NEXT on an indirect head; we refuse the combination (§2.7.5.3.1)')],
    async run(h) {
      const table = h.mem(16);
      await h.descAt(table, single(h), 16, W);
      await h.desc(0, table, 16, INDIRECT | NEXT, 1);
      await h.desc(1, single(h), 16, W);
      await h.publish(0, 32);
      await h.kick();
    },
  },
  {
    name: 'indirect table outside RAM',
    ids: 'T-A5e, villain t0020',
    features: IND,
    expected: [ROW26],
    async run(h) {
      await h.desc(0, OUTSIDE_RAM, 16, INDIRECT);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'loop inside an indirect table',
    ids: 'T-A5f, villain t0021',
    features: IND,
    async run(h) {
      const table = h.mem(32);
      await h.descAt(table, single(h), 8, W | NEXT, 1);
      await h.descAt(table + 16, single(h), 8, W | NEXT, 0);
      await h.desc(0, table, 32, INDIRECT);
      await h.publish(0, 16 * 8);
      await h.kick();
    },
  },
  {
    name: 'indirect descriptor without VIRTIO_F_INDIRECT_DESC',
    ids: 'T-A5g, T-E5, villain t0015',
    expected: [exp(3, 'QEMU processes an indirect table the driver did not negotiate; we refuse it (C#37)')],
    async run(h) {
      const table = h.mem(16);
      await h.descAt(table, single(h), 16, W);
      await h.desc(0, table, 16, INDIRECT);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'direct descriptor followed by an indirect one',
    ids: 'T-A5h, C#77',
    features: IND,
    expected: [exp(4, 'QEMU treats an INDIRECT descriptor after direct ones as a plain (readable) buffer and stops on the order; we follow it as the spec requires (§2.7.5.3.2)')],
    async run(h) {
      const table = h.mem(16);
      await h.descAt(table, single(h), 16, W);
      await h.desc(0, single(h), 16, W | NEXT, 1);
      await h.desc(1, table, 16, INDIRECT);
      await h.publish(0, 32);
      await h.kick();
    },
  },
  {
    name: 'WRITE flag on the indirect descriptor itself',
    ids: 'T-A5i, C#76',
    legal: true,
    features: IND,
    async run(h) {
      const table = h.mem(16);
      await h.descAt(table, single(h), 16, W);
      await h.desc(0, table, 16, INDIRECT | W);
      await h.publish(0, 16);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.id === 0 && u[0]!.len === 16;
    },
  },
];

/** Ring indices (§B). */
const INDEX_ATTACKS: Attack[] = [
  {
    name: 'avail.idx jumps by queue size + 1',
    ids: 'T-B1a, villain t0023',
    async run(h) {
      for (let i = 0; i < h.num; i++) {
        await h.desc(i, single(h, 4), 4, W);
        await h.u16(h.ring.addrs.avail + 4 + 2 * i, i);
        h.expose(i, 4);
      }
      await h.availIdx(h.num + 1);
      await h.kick();
    },
  },
  {
    name: 'avail.idx jumps by exactly the queue size (a full ring, legal)',
    ids: 'T-B1b',
    legal: true,
    async run(h) {
      for (let i = 0; i < h.num; i++) await h.desc(i, single(h, 4), 4, W);
      for (let i = 0; i < h.num; i++) await h.publish(i, 4);
      await h.kick();
      return (u) => u.length === h.num && u.every((e, k) => e.id === k && e.len === 4);
    },
  },
  {
    name: 'avail.idx moves backwards',
    ids: 'T-B1c, villain t0024',
    async run(h) {
      for (let i = 0; i < 2; i++) {
        await h.desc(i, single(h, 4), 4, W);
        await h.publish(i, 4);
      }
      await h.kick();
      await h.m.quiet(() => poll(h.m, async () => (await h.ring.usedIdx()) === 2, { timeoutMs: 1000 }).catch(() => undefined));
      await h.collectUsed();
      await h.availIdx(1);
      await h.kick();
    },
  },
  {
    name: 'head index equal to the queue size',
    ids: 'T-B2, villain t0025',
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(h.num, 16);
      await h.kick();
    },
  },
  {
    name: 'head index 0xffff',
    ids: 'T-B2, villain t0025',
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0xffff, 16);
      await h.kick();
    },
  },
  {
    // rng completes each request before it pops the next, on QEMU as on ours, so the second copy
    // is no longer a head in flight when it is popped: both return the head twice. Row #9 (a
    // duplicate while the first is still in flight) needs a device with asynchronous completions.
    name: 'the same head twice in the avail ring (completed in between)',
    ids: 'T-B3, villain t0022',
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'driver scribbles used.idx between requests',
    ids: 'T-B6, villain t0028',
    legal: true,
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      await h.m.quiet(() => poll(h.m, async () => (await h.ring.usedIdx()) === 1, { timeoutMs: 1000 }).catch(() => undefined));
      await h.collectUsed();
      await h.m.writew(h.ring.addrs.used + 2, 0x7777);
      await h.desc(1, single(h), 16, W);
      await h.publish(1, 16);
      await h.kick();
      // The device keeps its own used index: the next entry goes to slot 1 and used.idx becomes 2.
      return (u) => u.length === 1 && u[0]!.id === 1 && u[0]!.len === 16;
    },
  },
];

/** Addresses and lengths (§C, T-Gr1). */
const ADDRESS_ATTACKS: Attack[] = [
  {
    name: 'buffer outside RAM',
    ids: 'T-C1, villain t0063',
    expected: [ROW26],
    async run(h) {
      await h.desc(0, OUTSIDE_RAM, 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'buffer straddling the end of RAM',
    ids: 'T-C2a, villain t0005',
    expected: [ROW26],
    async run(h) {
      await h.desc(0, RAM_END - 8, 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'buffer ending exactly at the end of RAM (legal)',
    ids: 'T-C3',
    legal: true,
    async run(h) {
      h.writable.push([RAM_END - 16, 16]);
      await h.desc(0, RAM_END - 16, 16, W);
      await h.publish(0, 16);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.len === 16;
    },
  },
  {
    name: 'buffer address wrapping 2^64',
    ids: 'T-C4b, villain p0061',
    expected: [ROW26],
    async run(h) {
      await h.desc(0, 0xffff_ffff_ffff_fff0n, 0x20, W);
      await h.publish(0, 0x20);
      await h.kick();
    },
  },
  {
    name: 'buffer address 2^53 + 1',
    ids: 'T-C4c',
    expected: [ROW26],
    async run(h) {
      await h.desc(0, 2n ** 53n + 1n, 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
  {
    name: 'huge length: a 1 MiB buffer in RAM',
    ids: 'T-Gr1',
    expected: [exp(12, 'QEMU fills the whole 1 MiB; we give at most maxBytesPerRequest (64 KiB) per request, and used.len says so', ['attack'])],
    async run(h) {
      const at = h.rig.alloc.alloc(1 << 20, 4096);
      h.writable.push([at, 1 << 20]);
      await h.desc(0, at, 1 << 20, W);
      await h.publish(0, 1 << 20);
      await h.kick();
    },
  },
  {
    name: 'huge length: 16 MiB from inside RAM past its end',
    ids: 'T-C2a, T-Gr1',
    async run(h) {
      await h.desc(0, 0x20_0000, 0x100_0000, W);
      h.writable.push([0x20_0000, RAM_END - 0x20_0000]);
      await h.publish(0, 0x100_0000);
      await h.kick();
    },
  },
];

/** Transport registers and lifecycle (§D, §E). */
const TRANSPORT_ATTACKS: Attack[] = [
  {
    name: 'status rewritten after the device broke',
    ids: 'T-I1, T-E4',
    expected: [exp(27, 'QEMU stores the written status, so NEEDS_RESET disappears while the device stays broken; ours keeps NEEDS_RESET until reset')],
    async run(h) {
      await h.desc(0, single(h), 16, W | NEXT, 0);
      await h.publish(0, 16);
      await h.kick();
      await h.m.idle();
      await h.rig.drv.status();
      await h.rig.drv.driverOk();
    },
  },
  {
    name: 'notify of queues that do not exist (1, 1023 / 1, 1024, 0xffff)',
    ids: 'T-D1',
    legal: true,
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.takeSnapshot();
      const { rig } = h;
      // Modern PCI selects the queue by the notify address (queue_notify_off × multiplier; QEMU
      // maps queue n at n × 4 and ignores the value), so queues 1 and 1023 are notified at their
      // own addresses; the other transports take the index as the value.
      const modernQueues = [1, 1023];
      for (const q of rig.t.kind === 'pci' && rig.t.mode === 'modern' ? modernQueues : [1, 1024, 0xffff]) {
        if (rig.t.kind === 'mmio') await rig.m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_NOTIFY, q);
        else if (rig.t.mode === 'legacy') await rig.pci!.bars[0]!.writew(VirtioPciLegacy.QUEUE_NOTIFY, q);
        else {
          const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 2)!;
          await rig.pci!.bars[cap.bar]!.writew(cap.offset + q * rig.pciDrv!.notifyOffMultiplier, q);
        }
        // QEMU completes asynchronously: let it, before the next access is recorded.
        await h.m.idle();
      }
      await h.m.note(`used.idx after bad notifies ${await h.ring.usedIdx()}`);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.len === 16;
    },
  },
  {
    name: 'queue select out of range, then its registers read and written',
    ids: 'T-D2',
    legal: true,
    async run(h) {
      const { rig, m } = h;
      for (const sel of [1, 2, 1023, 1024, 0xffff]) {
        if (rig.t.kind === 'mmio') {
          const base = rig.mmioDrv!.base;
          await m.writel(base + VIRTIO_MMIO_QUEUE_SEL, sel);
          for (let o = 0x34; o <= 0x44; o += 4) await m.readl(base + o);
          for (const o of [VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_READY]) await m.writel(base + o, 0x1000);
          await m.readl(base + VIRTIO_MMIO_QUEUE_READY);
        } else if (rig.t.mode === 'legacy') {
          const io = rig.pci!.bars[0]!;
          await io.writew(VirtioPciLegacy.QUEUE_SEL, sel);
          await io.readw(VirtioPciLegacy.QUEUE_NUM);
          await io.readl(VirtioPciLegacy.QUEUE_PFN);
          await io.writel(VirtioPciLegacy.QUEUE_PFN, 0x123);
          await io.readl(VirtioPciLegacy.QUEUE_PFN);
        } else {
          const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
          const bar = rig.pci!.bars[cap.bar]!;
          const at = cap.offset;
          await bar.writew(at + VirtioPciCommon.Q_SELECT, sel);
          for (let o = VirtioPciCommon.Q_SELECT; o < 0x3c; o += 2) await bar.readw(at + o);
          await bar.writew(at + VirtioPciCommon.Q_SIZE, 4);
          await bar.writew(at + VirtioPciCommon.Q_MSIX, 0);
          await bar.writel(at + VirtioPciCommon.Q_DESCLO, 0x1000);
          await bar.writew(at + VirtioPciCommon.Q_ENABLE, 1);
          for (let o = VirtioPciCommon.Q_SELECT; o < 0x3c; o += 2) await bar.readw(at + o);
        }
      }
      await rig.drv.queueMax(0);
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.len === 16;
    },
  },
  {
    name: 'DRIVER_OK cleared while running, then a request',
    ids: 'T-E4, villain t0033',
    async run(h) {
      const modern = isModern(h.rig.t);
      await h.rig.drv.setStatus(modern ? ACK | DRIVER | FEATURES_OK : ACK | DRIVER);
      await h.rig.drv.status();
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      await h.m.idle();
      await h.m.note(`used.idx while DRIVER_OK is clear ${await h.ring.usedIdx()}`);
      await h.rig.drv.setStatus(modern ? ACK | DRIVER | FEATURES_OK | DRIVER_OK : ACK | DRIVER | DRIVER_OK);
    },
  },
  {
    name: 'FAILED set while running, then a request',
    ids: 'T-E4, villain t0036',
    async run(h) {
      await h.rig.drv.setStatus((await h.rig.drv.status()) | 0x80);
      await h.rig.drv.status();
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
];

/** Queue sizes and geometry (§D3, §B7, §E1): attacks with their own bring-up. */
function sizeAttack(size: number, ids: string, expected?: ExpectedDifference[]): Attack {
  const a: Attack = {
    name: `queue size ${size} written before enable`,
    ids,
    async bringUp(rig) {
      const { m } = rig;
      await rig.drv.init(0n);
      let num: number;
      if (rig.t.kind === 'mmio') {
        const base = rig.mmioDrv!.base;
        await m.writel(base + VIRTIO_MMIO_QUEUE_SEL, 0);
        await m.writel(base + VIRTIO_MMIO_QUEUE_NUM, size);
        num = size; // the register is write-only on QEMU 7.2: the driver believes what it wrote
      } else {
        const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
        const bar = rig.pci!.bars[cap.bar]!;
        await bar.writew(cap.offset + VirtioPciCommon.Q_SELECT, 0);
        await bar.writew(cap.offset + VirtioPciCommon.Q_SIZE, size);
        num = await bar.readw(cap.offset + VirtioPciCommon.Q_SIZE);
      }
      await m.note(`driver uses size ${num}`);
      const ringNum = num === 0 || num > 1024 ? 8 : num;
      const base = rig.alloc.allocPages(4 * 4096 + 16 * ringNum);
      const addrs = legacyLayout(base, ringNum, 4096);
      const ring = await VringDriver.create({ machine: m, num: ringNum, addrs });
      await programRings(rig, addrs);
      await rig.drv.driverOk();
      await m.note(`status ${await rig.drv.status()}`);
      return ring;
    },
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  };
  if (expected) a.expected = expected;
  return a;
}

/** Write the three ring addresses of queue 0 and enable it (modern PCI or MMIO v2). */
async function programRings(rig: Rig, addrs: RingAddresses): Promise<void> {
  const { m } = rig;
  if (rig.t.kind === 'mmio') {
    const base = rig.mmioDrv!.base;
    await m.writel(base + VIRTIO_MMIO_QUEUE_DESC_LOW, addrs.desc >>> 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_DESC_HIGH, 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_AVAIL_LOW, addrs.avail >>> 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_AVAIL_HIGH, 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_USED_LOW, addrs.used >>> 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_USED_HIGH, 0);
    await m.writel(base + VIRTIO_MMIO_QUEUE_READY, 1);
    return;
  }
  const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
  const bar = rig.pci!.bars[cap.bar]!;
  const at = cap.offset;
  await bar.writel(at + VirtioPciCommon.Q_DESCLO, addrs.desc >>> 0);
  await bar.writel(at + VirtioPciCommon.Q_DESCHI, 0);
  await bar.writel(at + VirtioPciCommon.Q_AVAILLO, addrs.avail >>> 0);
  await bar.writel(at + VirtioPciCommon.Q_AVAILHI, 0);
  await bar.writel(at + VirtioPciCommon.Q_USEDLO, addrs.used >>> 0);
  await bar.writel(at + VirtioPciCommon.Q_USEDHI, 0);
  await bar.writew(at + VirtioPciCommon.Q_ENABLE, 1);
}

const GEOMETRY_ATTACKS: Attack[] = [
  sizeAttack(0, 'T-D3a'),
  sizeAttack(3, 'T-D3b', [exp(7, 'QEMU accepts a split queue of 3 (not a power of 2); we refuse to map it (§2.7)', ['setup', 'attack', 'liveness'])]),
  sizeAttack(65535, 'T-D3e'),
  {
    name: 'queue size raised after the queue was enabled',
    ids: 'T-B7, Firecracker PR #6201',
    expected: (t) =>
      t.kind === 'pci'
        ? [exp(18, 'QEMU changes vring.num under the live ring caches (and then stops with "Cannot map descriptor ring"); we keep the enabled geometry')]
        : [exp(10, 'QEMU changes vring.num under the live ring caches (and then stops with "Cannot map descriptor ring"); we keep the enabled geometry')],
    async bringUp(rig) {
      await rig.drv.init(0n);
      return rig.drv.setupQueue(0, { num: 4 });
    },
    async run(h) {
      const { rig, m } = h;
      await rig.drv.driverOk();
      if (rig.t.kind === 'mmio') {
        await m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_SEL, 0);
        await m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_NUM, 8);
      } else {
        const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
        const bar = rig.pci!.bars[cap.bar]!;
        await bar.writew(cap.offset + VirtioPciCommon.Q_SELECT, 0);
        await bar.writew(cap.offset + VirtioPciCommon.Q_SIZE, 8);
        await bar.readw(cap.offset + VirtioPciCommon.Q_SIZE);
      }
      // The driver goes on with the ring of 4 it set up: six requests, one at a time.
      for (let i = 0; i < 6; i++) {
        await h.desc(i % 4, single(h, 4), 4, W);
        await h.publish(i % 4, 4);
        await h.kick();
        await m.idle();
        await h.collectUsed();
      }
    },
  },
  {
    name: 'queue enabled without ring addresses after a reset',
    ids: 'T-E1',
    legal: true,
    async run(h) {
      const { rig, m } = h;
      // A valid-looking chain at guest address 0, where an unprogrammed ring would point.
      // Read as an avail ring, its bytes 2-3 say idx 0x10 and ring[0] = 0: head 0 is available.
      const page0 = await m.quiet(() => m.readBytes(0, 0x40));
      await m.writeBytes(0, descBytes(0x1000, 16, W, 0));
      await rig.drv.setStatus(0);
      await rig.drv.init(0n);
      if (rig.t.kind === 'mmio') {
        await m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_SEL, 0);
        await m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_NUM, 8);
        await m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_READY, 1);
      } else {
        const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
        const bar = rig.pci!.bars[cap.bar]!;
        await bar.writew(cap.offset + VirtioPciCommon.Q_SELECT, 0);
        await bar.writew(cap.offset + VirtioPciCommon.Q_ENABLE, 1);
      }
      await rig.drv.driverOk();
      await rig.drv.notify(0);
      await m.idle();
      await m.readBytes(0, 0x40);
      await m.readBytes(0x1000, 16);
      await m.quiet(() => m.writeBytes(0, page0));
      // Then the driver sets the queue up properly on the harness's ring and goes on.
      await rig.drv.setStatus(0);
      await rig.drv.init(0n);
      h.ring = await rig.drv.setupQueue(0, { num: 8, addrs: h.ring.addrs, base: h.ring.addrs.desc });
      await rig.drv.driverOk();
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      return (u) => u.length === 1 && u[0]!.len === 16;
    },
  },
  {
    name: 'descriptor table outside RAM',
    ids: 'T-C6, villain t0041',
    expected: [{ ...ROW26, sections: ['setup', 'attack', 'liveness'] }],
    async bringUp(rig) {
      await rig.drv.init(0n);
      const base = rig.alloc.allocPages(3 * 4096);
      const good = legacyLayout(base, 8, 4096);
      const ring = await VringDriver.create({ machine: rig.m, num: 8, addrs: good });
      if (rig.t.kind === 'pci') {
        const cap = rig.pciDrv!.caps.find((c) => c.cfgType === 1)!;
        await rig.pci!.bars[cap.bar]!.writew(cap.offset + VirtioPciCommon.Q_SELECT, 0);
      } else {
        await rig.m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_SEL, 0);
        await rig.m.writel(rig.mmioDrv!.base + VIRTIO_MMIO_QUEUE_NUM, 8);
      }
      await programRings(rig, { ...good, desc: OUTSIDE_RAM });
      await rig.m.note(`status after enable ${await rig.drv.status()}`);
      await rig.drv.driverOk();
      return ring;
    },
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
    },
  },
];

/** virtio-pci only: MSI-X vectors out of range (§D7), with MSI-X on. */
const MSIX_ATTACKS: Attack[] = [
  {
    name: 'MSI-X vectors out of range (2, 0x7ff, 0xfffe)',
    ids: 'T-D7',
    legal: true,
    only: 'pci',
    async run(h) {
      const drv = h.rig.pciDrv!;
      const { m } = h;
      await drv.enableMsix();
      for (const v of [2, 0x7ff, 0xfffe]) {
        await m.note(`config vector ${v} reads back ${await drv.setConfigVector(v)}`);
        await m.note(`queue vector ${v} reads back ${await drv.setQueueVector(0, v)}`);
      }
      const slot = h.mem(4, 4, true);
      await drv.msixSetupQueue(0, 1, slot);
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      await m.idle();
      await m.readl(slot);
      await drv.disableMsix();
      return (u) => u.length === 1 && u[0]!.len === 16;
    },
  },
];

/** Overlapping BARs (T-D5 BAR abuse): the BAR placed last wins, as in QEMU's memory core. */
const BAR_OVERLAP: Attack = {
  name: 'two BARs of the function placed at the same address',
  ids: 'T-D5',
  legal: true,
  only: 'pci',
  async run(h) {
    const { rig, m } = h;
    const dev = rig.pci!;
    const msixBar = dev.bars[1]!;
    const modern = dev.bars[4];
    if (modern) {
      // Who answers at BAR4's address: the common configuration (status 0x0f at +0x14, guest
      // feature word 0 at +0x0c) or the MSI-X table (entry 0 masked: 1 at +0x0c; 0 at +0x14)?
      const probe = async (): Promise<void> => {
        await m.readl(modern.addr + 0x0c);
        await m.readb(modern.addr + 0x14);
      };
      // Move BAR1 (MSI-X, 4 KiB) on top of BAR4 (modern registers).
      await dev.writel(0x14, modern.addr);
      await probe();
      // Rewrite BAR4 with the address it already has: nothing moves.
      await dev.writel(0x20, modern.addr | 0xc);
      await probe();
      // Move BAR4 away and back: now it is the BAR placed last.
      await dev.writel(0x20, (modern.addr + 0x10_0000) | 0xc);
      await dev.writel(0x20, modern.addr | 0xc);
      await probe();
      // BAR1 back to its place.
      await dev.writel(0x14, msixBar.addr);
      await probe();
    }
    await h.desc(0, single(h), 16, W);
    await h.publish(0, 16);
    await h.kick();
    return (u) => u.length === 1 && u[0]!.len === 16;
  },
};

/** Linux's `vring_init` layout (the bit-mask rounding, with used_event), as a legacy driver computes it. */
function linuxLegacyLayout(base: number, num: number, align: number): RingAddresses {
  const avail = base + 16 * num;
  const used = Number((BigInt(avail + 6 + 2 * num) + BigInt(align) - 1n) & ~(BigInt(align) - 1n));
  return { desc: base, avail, used };
}

/**
 * virtio-mmio version 1 set-up with chosen GuestPageSize, QueueAlign and QueueNum; the driver
 * lays its ring out as Linux does for that alignment and page size.
 */
function v1Attack(name: string, ids: string, regs: { pageSize?: number; align: number; pfn?: (base: number) => number }, extra: Partial<Attack> = {}): Attack {
  return {
    name,
    ids,
    ...extra,
    async bringUp(rig) {
      const { m } = rig;
      const base = rig.mmioDrv!.base;
      await rig.drv.init(0n); // writes GuestPageSize 4096
      if (regs.pageSize !== undefined) await m.writel(base + VIRTIO_MMIO_GUEST_PAGE_SIZE, regs.pageSize);
      const area = rig.alloc.allocPages(3 * 4096);
      const addrs = linuxLegacyLayout(area, 8, regs.align === 0 || regs.align > 4096 ? 4096 : regs.align);
      const ring = await VringDriver.create({ machine: m, num: 8, addrs });
      await m.writel(base + VIRTIO_MMIO_QUEUE_SEL, 0);
      await m.writel(base + VIRTIO_MMIO_QUEUE_NUM, 8);
      await m.writel(base + VIRTIO_MMIO_QUEUE_ALIGN, regs.align);
      await m.writel(base + VIRTIO_MMIO_QUEUE_PFN, regs.pfn ? regs.pfn(area) : area / 4096);
      await m.readl(base + VIRTIO_MMIO_QUEUE_PFN);
      await rig.drv.driverOk();
      return ring;
    },
    async run(h) {
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      if (extra.legal) return (u) => u.length === 1 && u[0]!.len === 16;
    },
  };
}

/** Legacy virtio-mmio registers (§D4, hostile D4a-d) and the legacy layout (#1, #11). */
const V1_ATTACKS: Attack[] = [
  v1Attack('QueueAlign 4: the used ring where QEMU and Linux disagree (legal)', 'T-D4, C#132', { align: 4 }, {
    legal: true,
    expected: [exp(1, "QEMU places the used ring without room for used_event (2 bytes lower than Linux's vring_init with QueueAlign 4), writing over used_event; we use the spec's layout")],
  }),
  v1Attack('QueueAlign 3 (not a power of two)', 'T-D4b', { align: 3 }, {
    expected: [exp(11, "QEMU rounds up to a multiple of 3, which is not where Linux's bit-mask rounding puts the used ring; we leave the ring unmapped")],
  }),
  v1Attack('QueueAlign 0', 'T-D4a, CVE-2017-17381', { align: 0 }),
  v1Attack('GuestPageSize 0, then QueuePFN', 'T-D4c', { pageSize: 0, align: 4096 }),
  v1Attack('GuestPageSize 4097 (not a power of two)', 'T-D4c', { pageSize: 4097, align: 4096 }),
  v1Attack('QueuePFN 0xffffffff (ring far outside RAM)', 'T-D4d', { align: 4096, pfn: () => 0xffff_ffff }),
];

/** virtio-mmio version 2: QueueNum changed on a queue that is not ready, then a kick (#16). */
const V2_ATTACKS: Attack[] = [
  {
    name: 'QueueNum changed while the queue is not ready, then a kick',
    ids: 'T-B7, T-E2c',
    expected: [exp(16, 'QEMU processes the kick with the new size and the old ring mappings; we ignore it until QueueReady maps the new geometry')],
    async run(h) {
      const { rig, m } = h;
      const base = rig.mmioDrv!.base;
      await m.writel(base + VIRTIO_MMIO_QUEUE_SEL, 0);
      await m.writel(base + VIRTIO_MMIO_QUEUE_READY, 0);
      await m.readl(base + VIRTIO_MMIO_QUEUE_READY);
      await m.writel(base + VIRTIO_MMIO_QUEUE_NUM, 4);
      await h.desc(0, single(h), 16, W);
      await h.publish(0, 16);
      await h.kick();
      await m.idle();
      await m.note(`used.idx after the kick ${await h.ring.usedIdx()}`);
      // The driver puts its queue back as it was (size 8, ready); liveness then kicks it.
      await m.writel(base + VIRTIO_MMIO_QUEUE_NUM, 8);
      await m.writel(base + VIRTIO_MMIO_QUEUE_READY, 1);
    },
  },
];

const ALL_ATTACKS: Attack[] = [...CHAIN_ATTACKS, ...INDIRECT_ATTACKS, ...INDEX_ATTACKS, ...ADDRESS_ATTACKS, ...TRANSPORT_ATTACKS, ...GEOMETRY_ATTACKS, ...MSIX_ATTACKS];

/** T-B1d: avail.idx wrapping past 65535 with a ring of 1024 (64 full laps first; legal). */
function wrapScenario(t: Transport): OracleScenario {
  return hostileScenario(t, {
    name: 'avail.idx wraps from 65530 to 2 (legal)',
    ids: 'T-B1d',
    legal: true,
    async bringUp(rig) {
      await rig.drv.init(EI);
      return rig.drv.setupQueue(0, { num: 1024 });
    },
    async run(h) {
      const { rig, m } = h;
      await rig.drv.driverOk();
      const data = h.buf(1024);
      const table = new Uint8Array(16 * 1024);
      const avail = new Uint8Array(2 * 1024);
      for (let i = 0; i < 1024; i++) {
        table.set(descBytes(data + i, 1, W, 0), 16 * i);
        avail[2 * i] = i & 0xff;
        avail[2 * i + 1] = i >> 8;
      }
      await h.poke(h.ring.addrs.desc, table);
      await h.poke(h.ring.addrs.avail + 4, avail);
      // 63 laps of 1024 and one of 1018: last_avail_idx reaches 65530.
      let idx = 0;
      await m.quiet(async () => {
        while (idx < 65530) {
          idx = Math.min(idx + 1024, 65530);
          await h.availIdx(idx);
          await h.rig.drv.notify(0);
          await poll(m, async () => (await h.ring.usedIdx()) === (idx & 0xffff), { timeoutMs: 5000 });
        }
      });
      await m.note(`used.idx after the laps ${await h.ring.usedIdx()}`);
      h.usedFrom = 65530;
      for (let i = 0; i < 1024; i++) h.expose(i, 1);
      await h.availIdx(2);
      await h.kick();
      return (u) => u.length === 8 && u.every((e, k) => e.id === (65530 + k) % 1024 && e.len === 1);
    },
  });
}

const applies = (a: Attack, t: Transport): boolean => !a.only || a.only === t.kind;

function hostileScenarios(t: Transport, attacks: readonly Attack[]): OracleScenario[] {
  return attacks.filter((a) => applies(a, t)).map((a) => hostileScenario(t, a));
}

export const HOSTILE_GROUPS: OracleGroup[] = [
  {
    name: 'hostile guests: pc, virtio-rng-pci modern',
    spec: SPEC.pciModern,
    scenarios: [...hostileScenarios(PCI_MODERN, ALL_ATTACKS)],
  },
  {
    name: 'hostile guests: microvm, virtio-mmio v2',
    spec: SPEC.mmioV2,
    scenarios: [...hostileScenarios(MMIO_V2, [...ALL_ATTACKS, ...V2_ATTACKS]), wrapScenario(MMIO_V2)],
  },
  {
    name: 'hostile guests: microvm, virtio-mmio v1 (legacy registers)',
    spec: SPEC.mmioV1,
    scenarios: [
      ...hostileScenarios(MMIO_V1, V1_ATTACKS),
      ...hostileScenarios(MMIO_V1, ALL_ATTACKS.filter((a) => /next points to itself|head index equal|queues that do not exist|queue select out of range/.test(a.name))),
    ],
  },
  {
    // The legacy interface has no NEEDS_RESET: a broken device can only stop (WEDGED on both).
    name: 'hostile guests: pc, virtio-rng-pci legacy',
    spec: SPEC.pciLegacy,
    scenarios: hostileScenarios(
      PCI_LEGACY,
      ALL_ATTACKS.filter((a) => /next points to itself|head index equal|queues that do not exist|queue select out of range|same head twice/.test(a.name)),
    ),
  },
  {
    name: 'hostile guests: pc, virtio-rng-pci transitional, BAR abuse',
    spec: SPEC.pciTransitional,
    scenarios: [hostileScenario(PCI_TRANS_MODERN, BAR_OVERLAP)],
  },
];
