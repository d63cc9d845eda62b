// Property: a well-formed driver doing random interleavings of add (direct or indirect chains,
// readable then writable buffers), kick, collect, interrupt acknowledge, suppression changes and
// reset, on virtio-rng behind virtio-mmio v2 and v1. The harness checks I1–I4 and I6 around every
// access (I4 strictly against the driver's geometry); an independent model predicts, for every
// kick, which heads complete in which order with which length, the bytes delivered, and whether
// an interrupt is due (flags, or vring_need_event with u16 wrap); reset must recover (I7).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deterministicEntropy } from '../../src/devices/rng.js';
import type { DriverBuffer } from '../../src/driver/split-ring.js';
import { EVENT_IDX, HostileRig, INDIRECT, KiB, RNG_SEED, needEvent, type Completion } from '../support/invariants.js';

const DATA = 0x8000; // 64 slots of 0x100
const TABLES = 0x4000; // 32 indirect tables of 0x80 (up to 8 entries)

type Op =
  | { k: 'add'; nR: number; nW: number; lens: number[]; indirect: boolean }
  | { k: 'kick' }
  | { k: 'collect' }
  | { k: 'ack' }
  | { k: 'flags'; noInterrupt: boolean }
  | { k: 'usedEvent'; v: number }
  | { k: 'reset' };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    arbitrary: fc.record({
      k: fc.constant('add' as const),
      nR: fc.integer({ min: 0, max: 2 }),
      nW: fc.integer({ min: 0, max: 3 }),
      lens: fc.array(fc.integer({ min: 1, max: 0x100 }), { minLength: 5, maxLength: 5 }),
      indirect: fc.boolean(),
    }),
    weight: 8,
  },
  { arbitrary: fc.constant({ k: 'kick' as const }), weight: 4 },
  { arbitrary: fc.constant({ k: 'collect' as const }), weight: 3 },
  { arbitrary: fc.constant({ k: 'ack' as const }), weight: 2 },
  { arbitrary: fc.record({ k: fc.constant('flags' as const), noInterrupt: fc.boolean() }), weight: 1 },
  { arbitrary: fc.record({ k: fc.constant('usedEvent' as const), v: fc.oneof(fc.integer({ min: 0, max: 20 }), fc.integer({ min: 0, max: 0xffff })) }), weight: 1 },
  { arbitrary: fc.constant({ k: 'reset' as const }), weight: 1 },
);

/** Reads the entropy stream at increasing offsets without regenerating it each time. */
class StreamCursor {
  private src = deterministicEntropy(RNG_SEED);
  private at = 0;
  bytes(offset: number, n: number): Uint8Array {
    if (offset < this.at) {
      this.src = deterministicEntropy(RNG_SEED);
      this.at = 0;
    }
    if (offset > this.at) {
      this.src.fill(new Uint8Array(offset - this.at));
      this.at = offset;
    }
    const out = new Uint8Array(n);
    this.src.fill(out);
    this.at += n;
    return out;
  }
}

interface Pending {
  head: number;
  inBytes: number;
  slots: number[];
  table: number;
}

describe('property: random well-formed driver interleavings', () => {
  it('every published request completes once, in order, with the right length, data and interrupt', () => {
    let kicksWithWork = 0;
    fc.assert(
      fc.property(
        fc.record({ legacy: fc.boolean(), n: fc.constantFrom(4, 8, 16), eventIdx: fc.boolean(), indirect: fc.boolean() }),
        fc.array(op, { minLength: 5, maxLength: 80, size: 'max' }),
        (c, ops) => {
          const features = (c.indirect ? INDIRECT : 0n) | (c.eventIdx ? EVENT_IDX : 0n);
          const rig = new HostileRig({ legacy: c.legacy, regions: [{ base: 0, size: 64 * KiB }], num: c.n, dataBase: DATA, goodBuf: 0xf000 });
          const stream = new StreamCursor();
          let freeSlots: number[] = [];
          let freeTables: number[] = [];
          let published: Pending[] = [];
          let uncollected: Pending[] = [];
          let valid = false;
          let old = 0;
          let usedIdx = 0;
          const begin = () => {
            rig.start(c.n, features);
            rig.ringDrv.eventIdx = c.eventIdx;
            freeSlots = Array.from({ length: 64 }, (_, i) => i);
            freeTables = Array.from({ length: 32 }, (_, i) => i);
            published = [];
            uncollected = [];
            valid = false;
            old = usedIdx = 0;
          };
          begin();
          const checkData = (comp: Completion) => {
            let left = comp.len;
            const want = stream.bytes(comp.entropyAt, comp.len);
            let off = 0;
            for (const [a, l] of comp.ref.writable) {
              if (left === 0) break;
              const k = Math.min(l, left);
              expect(rig.mem.view(a, k)).toEqual(want.subarray(off, off + k));
              off += k;
              left -= k;
            }
          };
          for (const o of ops) {
            const ring = rig.ringDrv;
            switch (o.k) {
              case 'add': {
                const nW = o.nR + o.nW === 0 ? 1 : o.nW;
                const nBufs = o.nR + nW;
                const useIndirect = o.indirect && c.indirect && freeTables.length > 0;
                if (freeSlots.length < nBufs || ring.freeDescriptors < (useIndirect ? 1 : nBufs)) break;
                const slots = freeSlots.splice(0, nBufs);
                const bufs: DriverBuffer[] = slots.map((s, i) => ({ addr: DATA + 0x100 * s, len: o.lens[i]!, write: i >= o.nR }));
                const table = useIndirect ? freeTables.shift()! : -1;
                const head = ring.add(bufs, useIndirect ? { indirectTable: TABLES + 0x80 * table } : {});
                expect(head).toBeGreaterThanOrEqual(0);
                published.push({ head, inBytes: bufs.filter((b) => b.write).reduce((s, b) => s + b.len, 0), slots, table });
                break;
              }
              case 'kick': {
                const from = rig.completions.length;
                const isr0 = rig.mmio.device!.isr;
                rig.kick();
                const got = rig.completions.slice(from);
                expect(got.map((x) => [x.id, x.len])).toEqual(published.map((p) => [p.head, p.inBytes]));
                got.forEach(checkData);
                if (published.length) {
                  kicksWithWork++;
                  usedIdx = (usedIdx + published.length) & 0xffff;
                  const flags = rig.mem.read16(rig.geom!.avail);
                  const usedEvent = rig.mem.read16(rig.geom!.avail + 4 + 2 * c.n);
                  const want = c.eventIdx ? !valid || needEvent(usedEvent, usedIdx, old) : (flags & 1) === 0;
                  valid = true;
                  old = usedIdx;
                  const st = rig.lastCalls.at(-1)!;
                  expect(st.notifies === 1).toBe(want);
                  if (want) expect(rig.mmio.device!.isr & 1).toBe(1);
                  else expect(rig.mmio.device!.isr).toBe(isr0);
                }
                uncollected.push(...published);
                published = [];
                break;
              }
              case 'collect': {
                const used = ring.takeUsed();
                expect(used.map((u) => [u.id, u.len])).toEqual(uncollected.map((p) => [p.head, p.inBytes]));
                for (const p of uncollected) {
                  freeSlots.push(...p.slots);
                  if (p.table >= 0) freeTables.push(p.table);
                }
                uncollected = [];
                break;
              }
              case 'ack':
                rig.ack();
                break;
              case 'flags':
                ring.setAvailFlags(o.noInterrupt ? 1 : 0);
                break;
              case 'usedEvent':
                ring.setUsedEvent(o.v);
                break;
              case 'reset':
                rig.checkResetRecovers();
                begin();
                break;
            }
          }
          expect(rig.errors).toEqual([]);
          rig.checkResetRecovers();
        },
      ),
      { seed: 0x5eed_0003, numRuns: 250 },
    );
    expect(kicksWithWork).toBeGreaterThan(800);
  });
});
