// The async VringDriver must lay out rings exactly as the synchronous SplitRingDriver does: same
// descriptor allocation, same bytes in guest memory, same used entries, for any sequence of
// posts and completions. Also: poll()'s clock stepping and bounded timeout.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';
import { VringDriver } from '../../src/driver/vring.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { TimeoutError, poll, waitIrq } from '../../src/driver/machine.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { MiniMicrovm } from '../support/mini-microvm.js';

const NUM = 8;
const BASE = 0x10000;
const TABLES = 0x20000;
const RAM = 1 << 20;

type Op =
  | { kind: 'add'; bufs: { len: number; write: boolean }[]; indirect: boolean }
  | { kind: 'complete'; pick: number; len: number }
  | { kind: 'take' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    kind: fc.constant('add' as const),
    bufs: fc.array(fc.record({ len: fc.integer({ min: 1, max: 4096 }), write: fc.boolean() }), { minLength: 1, maxLength: 4 }),
    indirect: fc.boolean(),
  }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat(), len: fc.nat({ max: 5000 }) }),
  fc.record({ kind: fc.constant('take' as const) }),
);

async function pair(eventIdx: boolean): Promise<{ mem: GuestMemory; sync: SplitRingDriver; m: InProcessMachine; ring: VringDriver }> {
  const mem = GuestMemory.ofSize(RAM);
  const addrs = legacyLayout(BASE, NUM, 4096);
  const sync = new SplitRingDriver({ memory: mem, num: NUM, addrs, eventIdx });
  const m = new InProcessMachine(new MiniMicrovm({ ramSize: RAM, transports: 0 }));
  const ring = await VringDriver.create({ machine: m, num: NUM, addrs, eventIdx });
  return { mem, sync, m, ring };
}

async function sameMemory(mem: GuestMemory, m: InProcessMachine): Promise<void> {
  for (const [at, len] of [
    [BASE, 0x2000],
    [TABLES, 0x1000],
  ] as const) {
    const want = Buffer.from(mem.view(at, len)!);
    const got = Buffer.from(await m.readBytes(at, len));
    // A cheap comparison first; the element-wise diff only when they differ.
    if (!got.equals(want)) expect(Uint8Array.from(got)).toEqual(Uint8Array.from(want));
  }
}

describe('VringDriver (async) against SplitRingDriver (sync)', () => {
  it('clear() writes the same ring', async () => {
    const { mem, m } = await pair(false);
    await sameMemory(mem, m);
  });

  it('any sequence of posts, completions and takes gives the same memory and used entries', async () => {
    await fc.assert(
      fc.asyncProperty(fc.boolean(), fc.array(opArb, { maxLength: 40 }), async (eventIdx, ops) => {
        const { mem, sync, m, ring } = await pair(eventIdx);
        const outstanding: number[] = [];
        let usedIdx = 0;
        let tableNext = TABLES;
        let bufAddr = 0x40000;
        for (const op of ops) {
          if (op.kind === 'add') {
            const bufs = op.bufs.map((b) => ({ addr: (bufAddr += 0x1000), len: b.len, write: b.write }));
            const table = op.indirect ? tableNext : undefined;
            if (op.indirect) tableNext += 16 * bufs.length;
            const opts = table !== undefined ? { indirectTable: table } : {};
            const h1 = sync.add(bufs, opts);
            const h2 = await ring.add(bufs, opts);
            expect(h2).toBe(h1);
            expect(ring.freeDescriptors).toBe(sync.freeDescriptors);
            expect(ring.availIdx).toBe(sync.availIdx);
            if (h1 >= 0) outstanding.push(h1);
          } else if (op.kind === 'complete') {
            if (outstanding.length === 0) continue;
            // The device completes any outstanding chain, in any order.
            const [head] = outstanding.splice(op.pick % outstanding.length, 1);
            const at = legacyLayout(BASE, NUM, 4096).used;
            const slot = at + 4 + 8 * (usedIdx % NUM);
            mem.write32(slot, head!);
            mem.write32(slot + 4, op.len);
            await m.writel(slot, head!);
            await m.writel(slot + 4, op.len);
            usedIdx = (usedIdx + 1) & 0xffff;
            mem.write16(at + 2, usedIdx);
            await m.writew(at + 2, usedIdx);
          } else {
            expect(await ring.takeUsed()).toEqual(sync.takeUsed());
            expect(ring.lastUsedIdx).toBe(sync.lastUsedIdx);
            expect(ring.freeDescriptors).toBe(sync.freeDescriptors);
          }
          await sameMemory(mem, m);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('refuses a used index that runs more than a ring ahead', async () => {
    const { m, ring } = await pair(false);
    await m.writew(ring.addrs.used + 2, NUM + 1);
    await expect(ring.takeUsed()).rejects.toThrow(/ahead/);
  });

  it('needsNotify follows used.flags without EVENT_IDX and avail_event with it', async () => {
    const plain = await pair(false);
    await plain.ring.add([{ addr: 0x40000, len: 16, write: true }]);
    expect(await plain.ring.needsNotify()).toBe(true);
    await plain.m.writew(plain.ring.addrs.used, 1); // VRING_USED_F_NO_NOTIFY
    expect(await plain.ring.needsNotify()).toBe(false);

    const ev = await pair(true);
    await ev.ring.add([{ addr: 0x40000, len: 16, write: true }]);
    // avail_event 0: the device wants to hear when avail idx passes 0.
    expect(await ev.ring.needsNotify()).toBe(true);
    ev.ring.kicked();
    await ev.ring.add([{ addr: 0x41000, len: 16, write: true }]);
    // Still 0: the device has not consumed the first one, no new kick needed.
    expect(await ev.ring.needsNotify()).toBe(false);
    await ev.m.writew(ev.ring.addrs.used + 4 + 8 * NUM, 1);
    expect(await ev.ring.needsNotify()).toBe(true);
  });
});

describe('poll and waitIrq', () => {
  it('steps the virtual clock between tries on a machine with a clock', async () => {
    const target = new MiniMicrovm({ ramSize: RAM });
    const m = new InProcessMachine(target);
    let fired = false;
    target.clock.setTimer(1000, () => {
      fired = true;
    });
    await poll(m, () => fired, { stepNs: 100 });
    expect(target.clock.now()).toBe(1000);
  });

  it('is bounded by a wall-clock timeout', async () => {
    const m = new InProcessMachine(new MiniMicrovm({ ramSize: RAM }), { hasClock: false });
    const t0 = performance.now();
    await expect(poll(m, () => false, { timeoutMs: 50, what: 'nothing' })).rejects.toThrow(TimeoutError);
    expect(performance.now() - t0).toBeLessThan(2000);
  });

  it('waitIrq finds an IRQ raise after a mark', async () => {
    const target = new MiniMicrovm({ ramSize: RAM, rngDevices: 1 });
    const m = new InProcessMachine(target);
    expect(await m.irqIntercept('in', '/machine/unattached/device[3]')).toBeUndefined();
    await expect(m.irqIntercept('in', 'nonexistent')).rejects.toThrow(/Unknown device/);
    await expect(m.irqIntercept('in', 'ioapic')).rejects.toThrow(/already enabled/);
    const mark = m.irq.mark();
    target.clock.setTimer(500, () => target.transports[23]!.irq?.(true));
    const e = await waitIrq(m, 23, true, { mark });
    expect(e).toEqual({ line: 23, level: true, seq: mark });
    expect(m.irq.raised()).toEqual([23]);
    await expect(waitIrq(m, 22, true, { mark, timeoutMs: 30 })).rejects.toThrow(/IRQ raise 22/);
  });
});
