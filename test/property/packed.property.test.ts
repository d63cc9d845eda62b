// Property: random packed descriptor rings and indirect tables (any flags, ids, lengths and
// addresses, the rings and tables included), driven through a packed VirtQueue by a device loop
// that pops everything, writes into what it may and completes it, with notification calls and
// measurements mixed in. Whatever the guest wrote:
// - nothing throws, and the positions stay inside the ring (`lastAvailIdx`, `usedIdx` < num);
// - every byte of guest RAM that changed is a used descriptor's length/id/flags, the device event
//   area, or inside a writable buffer of a chain the device popped;
// - each completion is a used descriptor at the device's position (which moves by the chain's
//   slots), with its id, its length and AVAIL = USED = the wrap counter of that lap;
// - nothing is left in flight, and a broken device pops nothing more.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED } from '../../src/vring/constants.js';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { VirtQueue } from '../../src/vring/virtqueue.js';
import { TestQueueOwner } from '../support/queue-owner.js';

const RAM = 0x10000;
const RING = 0x1000;
const DRIVER = 0x2000;
const DEVICE = 0x2010;
const TABLES = 0x3000; // four tables, 0x100 apart
const DATA = 0x8000; // 64 slots of 0x100


interface Desc {
  addr: number | bigint;
  len: number;
  id: number;
  flags: number;
}

const AVAIL = VRING_PACKED_DESC_F_AVAIL;
const USED = VRING_PACKED_DESC_F_USED;

function descArb(num: number): fc.Arbitrary<Desc> {
  const addr = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 63 }).map((k) => DATA + 0x100 * k), weight: 8 },
    { arbitrary: fc.integer({ min: 0, max: 3 }).map((t) => TABLES + 0x100 * t), weight: 2 },
    { arbitrary: fc.integer({ min: 0, max: RAM - 1 }), weight: 2 },
    { arbitrary: fc.constantFrom<number | bigint>(RAM, RAM - 4, 0xffff_ffff_ffff_fff0n, 2n ** 53n + 1n, 2n ** 64n - 1n), weight: 1 },
  );
  const len = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 0x100 }), weight: 6 },
    { arbitrary: fc.integer({ min: 0, max: 16 }).map((k) => 16 * k), weight: 3 },
    { arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x1_0000, 17), weight: 1 },
  );
  // Mostly "available on the first lap" (AVAIL set, USED clear), with NEXT/WRITE/INDIRECT mixed.
  const flags = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 7 }).map((f) => f | AVAIL), weight: 8 },
    { arbitrary: fc.integer({ min: 0, max: 7 }).map((f) => f | USED), weight: 1 },
    { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 2 },
  );
  const id = fc.oneof({ arbitrary: fc.integer({ min: 0, max: num + 1 }), weight: 8 }, { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 });
  return fc.record({ addr, len, id, flags });
}

/** Mostly well-formed descriptors (a driver with occasional bugs), for half of the runs. */
function cleanDescArb(num: number): fc.Arbitrary<Desc> {
  const buf = fc.record({ addr: fc.integer({ min: 0, max: 63 }).map((k) => DATA + 0x100 * k), len: fc.integer({ min: 1, max: 0x100 }), id: fc.integer({ min: 0, max: num - 1 }) });
  return fc.oneof(
    { arbitrary: buf.map((b) => ({ ...b, flags: AVAIL | 2 })), weight: 5 },
    { arbitrary: buf.map((b) => ({ ...b, flags: AVAIL })), weight: 2 },
    { arbitrary: buf.map((b) => ({ ...b, flags: AVAIL | 1 })), weight: 2 },
    { arbitrary: buf.map((b) => ({ ...b, flags: AVAIL | 3 })), weight: 1 },
    { arbitrary: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: num - 1 })).map(([t, k, id]) => ({ addr: TABLES + 0x100 * t, len: 16 * k, id, flags: AVAIL | 4 })), weight: 1 },
    { arbitrary: descArb(num), weight: 1 },
  );
}

type Op = { op: 'pop' } | { op: 'notify'; on: boolean } | { op: 'should' } | { op: 'bytes'; max: number } | { op: 'drop' } | { op: 'rewind' };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.constant<Op>({ op: 'pop' }), weight: 12 },
  { arbitrary: fc.boolean().map<Op>((on) => ({ op: 'notify', on })), weight: 1 },
  { arbitrary: fc.constant<Op>({ op: 'should' }), weight: 1 },
  { arbitrary: fc.integer({ min: 0, max: 4096 }).map<Op>((max) => ({ op: 'bytes', max })), weight: 1 },
  { arbitrary: fc.constant<Op>({ op: 'drop' }), weight: 1 },
  { arbitrary: fc.constant<Op>({ op: 'rewind' }), weight: 1 },
);

const scenarioArb = fc
  .record({
    num: fc.constantFrom(1, 2, 3, 5, 8, 16),
    clean: fc.boolean(),
    indirect: fc.boolean(),
    eventIdx: fc.boolean(),
    driverEvent: fc.record({ offWrap: fc.integer({ min: 0, max: 0xffff }), flags: fc.integer({ min: 0, max: 3 }) }),
    ops: fc.array(opArb, { minLength: 1, maxLength: 40 }),
  })
  .chain((s) =>
    fc.record({
      s: fc.constant(s),
      ring: fc.array(s.clean ? cleanDescArb(s.num) : descArb(s.num), { minLength: s.num, maxLength: s.num }),
      // Table entries: in the clean runs, buffers in the data area, readable then writable.
      tables: fc.array(s.clean ? cleanDescArb(16).map((d) => ({ ...d, flags: d.flags & 2 })) : descArb(16), { minLength: 64, maxLength: 64 }),
    }),
  );

function put(mem: GuestMemory, at: number, d: Desc): void {
  mem.write64(at, BigInt.asUintN(64, BigInt(d.addr)));
  mem.write32(at + 8, d.len >>> 0);
  mem.write16(at + 12, d.id);
  mem.write16(at + 14, d.flags);
}

describe('property: random packed rings', () => {
  it('no throw, positions in the ring, writes only where allowed, used descriptors where and as they belong', () => {
    fc.assert(
      fc.property(scenarioArb, ({ s, ring, tables }) => {
        const mem = GuestMemory.ofSize(RAM);
        const bytes = mem.view(0, RAM)!;
        for (let i = 0; i < RAM; i++) bytes[i] = (i * 29 + 7) & 0xff;
        ring.forEach((d, i) => put(mem, RING + 16 * i, d));
        tables.forEach((d, i) => put(mem, TABLES + 16 * i, d));
        mem.write16(DRIVER, s.driverEvent.offWrap);
        mem.write16(DRIVER + 2, s.driverEvent.flags);
        const before = bytes.slice();

        const owner = new TestQueueOwner(mem, 'prop');
        const vq = new VirtQueue(owner, 0, s.num);
        vq.applyFeatures(s.eventIdx, s.indirect, false, true, true);
        vq.setRings(RING, DRIVER, DEVICE);

        // What the device may write: used descriptor fields, the device area, popped in-buffers.
        const allowed = new Uint8Array(RAM);
        for (let i = 0; i < s.num; i++) allowed.fill(1, RING + 16 * i + 8, RING + 16 * i + 16);
        allowed.fill(1, DEVICE, DEVICE + 4);
        const allow = (e: VirtQueueElement) => {
          for (let k = e.outNum; k < e.outNum + e.inNum; k++) allowed.fill(1, e.sgAddr[k]!, Math.min(RAM, e.sgAddr[k]! + e.sgLen[k]!));
        };
        // The used descriptors expected, by slot (the last one written to a slot wins).
        const expectedUsed = new Map<number, { id: number; len: number; flags: number }>();
        let usedPos = 0;
        let usedWrap = true;
        const complete = (id: number, len: number, ndescs: number) => {
          expectedUsed.set(usedPos, { id, len, flags: usedWrap ? AVAIL | USED : 0 });
          usedPos += ndescs;
          while (usedPos >= s.num) {
            usedPos -= s.num;
            usedWrap = !usedWrap;
          }
        };

        const held: VirtQueueElement[] = [];
        const pattern = new Uint8Array(0x100).fill(0xa5);
        for (const op of s.ops) {
          switch (op.op) {
            case 'pop': {
              const wasBroken = owner.broken;
              const e = vq.pop();
              if (wasBroken) expect(e).toBeNull();
              if (!e) break;
              expect(e.ndescs).toBeGreaterThanOrEqual(1);
              expect(e.ndescs).toBeLessThanOrEqual(s.num);
              allow(e);
              held.push(e);
              // Complete the older half of what is held, newest first (out of order).
              if (held.length >= 2) {
                const c = held.splice(0, 1)[0]!;
                const n = c.writeIn(0, pattern.subarray(0, Math.min(0x100, c.inBytes)));
                if (!owner.broken) complete(c.index, n, c.ndescs);
                vq.push(c, n);
              }
              break;
            }
            case 'notify':
              vq.setNotification(op.on);
              break;
            case 'should':
              vq.shouldNotify();
              break;
            case 'bytes':
              expect(vq.availInBytes(op.max)).toBeGreaterThanOrEqual(0);
              break;
            case 'drop': {
              // QEMU's drop_all: every available chain returned with length 0, unmapped.
              const at = vq.usedIdx;
              const n = vq.dropAll();
              if (n > 0) {
                // The chains' lengths are not known here: follow the device's position.
                for (let k = 0; k < n; k++) expectedUsed.delete((at + k) % s.num);
                usedPos = vq.usedIdx;
                usedWrap = vq.usedWrapCounter;
              }
              break;
            }
            case 'rewind':
              if (held.length > 0 && vq.rewind(1)) held.pop();
              break;
          }
          expect(vq.lastAvailIdx).toBeLessThan(s.num);
          expect(vq.usedIdx).toBeLessThan(s.num);
          expect(vq.inuse).toBeLessThanOrEqual(s.num);
        }
        for (const c of held) {
          const n = c.writeIn(0, pattern.subarray(0, Math.min(0x100, c.inBytes)));
          if (!owner.broken) complete(c.index, n, c.ndescs);
          vq.push(c, n);
        }
        expect(vq.inuse).toBe(0);
        if (!owner.broken) expect([vq.usedIdx, vq.usedWrapCounter]).toEqual([usedPos, usedWrap]);

        for (let i = 0; i < RAM; i++) {
          if (bytes[i] !== before[i] && !allowed[i]) throw new Error(`byte 0x${i.toString(16)} changed (0x${before[i]!.toString(16)} -> 0x${bytes[i]!.toString(16)}) outside what the device may write`);
        }
        if (!owner.broken) {
          for (const [slot, u] of expectedUsed) {
            const o = RING + 16 * slot;
            expect({ id: mem.read16(o + 12), len: mem.read32(o + 8), flags: mem.read16(o + 14) }, `used descriptor at slot ${slot}`).toEqual(u);
          }
        }
      }),
      { numRuns: 400, seed: 0x9ac4ed },
    );
  });
});
