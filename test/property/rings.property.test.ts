// Property: random descriptor tables, indirect tables and avail rings (the fuzz op space of
// rust-vmm's virtio_queue target, spec/rust-vmm-virtio-queue-tests.md §4), driven through
// virtio-mmio into virtio-rng, v2 and v1.
//
// 1. Model-checked: buffers never alias the rings or tables, so an independent model of the
//    device (refWalk + the rng's "fill min(inBytes, 64 KiB) from the entropy stream" on a copy of
//    RAM) predicts exactly which heads complete, with which lengths, whether the device breaks,
//    and every byte of guest memory outside the used ring.
// 2. Unconstrained: addresses anywhere, the rings and tables included; only the invariants
//    (I1, I2, I4, I6 around every call) and I7 at the end.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { deterministicEntropy } from '../../src/devices/rng.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { EVENT_IDX, HostileRig, INDIRECT, KiB, RNG_SEED, refWalk } from '../support/invariants.js';

const RAM = 64 * KiB;
const TABLES = 0x4000; // four indirect tables, 0x100 apart
const DATA = 0x8000; // 64 data slots of 0x100
const SEED = 0x5eed_0001;

interface Desc {
  addr: number | bigint;
  len: number;
  flags: number;
  next: number;
}

const oobAddr = fc.constantFrom<number | bigint>(RAM, RAM - 8, 0xffff_ffff_ffff_fff0n, 2n ** 53n + 1n, 0xfeb0_0000, 2n ** 64n - 1n);

function descArb(n: number, aliasing: boolean): fc.Arbitrary<Desc> {
  const addr = aliasing
    ? fc.oneof({ arbitrary: fc.integer({ min: 0, max: RAM - 1 }), weight: 6 }, { arbitrary: fc.integer({ min: 0, max: 3 }).map((t) => TABLES + 0x100 * t), weight: 3 }, { arbitrary: oobAddr, weight: 1 })
    : fc.oneof(
        { arbitrary: fc.integer({ min: 0, max: 63 }).map((k) => DATA + 0x100 * k), weight: 8 },
        { arbitrary: fc.integer({ min: 0, max: 3 }).map((t) => TABLES + 0x100 * t), weight: 3 },
        { arbitrary: oobAddr, weight: 1 },
        { arbitrary: fc.constant(0), weight: 1 },
      );
  const len = fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 0x100 }), weight: 6 },
    { arbitrary: fc.integer({ min: 0, max: 16 }).map((k) => 16 * k), weight: 4 },
    { arbitrary: fc.constantFrom(0xffff_ffff, 0x8000_0000, 0x1_0000, 17, 15), weight: 1 },
  );
  const flags = fc.oneof(
    { arbitrary: fc.constantFrom(2, 2, 2, 0, 3, 1, 4, 6), weight: 8 },
    { arbitrary: fc.integer({ min: 0, max: 7 }), weight: 3 },
    { arbitrary: fc.integer({ min: 0, max: 0xffff }), weight: 1 },
  );
  const next = fc.oneof({ arbitrary: fc.integer({ min: 0, max: n + 1 }), weight: 9 }, { arbitrary: fc.constantFrom(0xffff, 16, 17), weight: 1 });
  return fc.record({ addr, len, flags, next });
}

/** Mostly well-formed descriptors (a driver with occasional bugs), for the "clean" half of runs. */
function cleanDescArb(n: number): fc.Arbitrary<Desc> {
  const buf = fc.record({ addr: fc.integer({ min: 0, max: 63 }).map((k) => DATA + 0x100 * k), len: fc.integer({ min: 1, max: 0x100 }) });
  return fc.oneof(
    { arbitrary: buf.map((b) => ({ ...b, flags: 2, next: 0 })), weight: 6 },
    { arbitrary: fc.tuple(buf, fc.integer({ min: 0, max: n - 1 })).map(([b, next]) => ({ ...b, flags: 3, next })), weight: 2 },
    { arbitrary: fc.tuple(buf, fc.integer({ min: 0, max: n - 1 })).map(([b, next]) => ({ ...b, flags: 1, next })), weight: 1 },
    { arbitrary: fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 1, max: 16 })).map(([t, k]) => ({ addr: TABLES + 0x100 * t, len: 16 * k, flags: 4, next: 0 })), weight: 1 },
    { arbitrary: descArb(n, false), weight: 1 },
  );
}

/** In the model-checked run, a table-address buffer must not be writable (it would alias). */
function unaliased(d: Desc): Desc {
  const a = typeof d.addr === 'bigint' ? -1 : d.addr;
  if (a >= TABLES && a < DATA && !(d.flags & 4)) return { ...d, flags: d.flags & ~2 };
  if (a >= DATA && a < DATA + 0x4000) return { ...d, len: Math.min(d.len, 0x100) };
  return d;
}

function scenarioArb(aliasing: boolean) {
  return fc
    .record({
      legacy: fc.boolean(),
      n: fc.constantFrom(4, 8, 16),
      indirect: fc.boolean(),
      eventIdx: fc.boolean(),
      clean: fc.boolean(),
    })
    .chain((c) =>
      fc.record({
        c: fc.constant(c),
        descs: fc.array(c.clean ? cleanDescArb(c.n) : descArb(c.n, aliasing), { minLength: c.n, maxLength: c.n }),
        tables: fc.array(fc.array(c.clean ? cleanDescArb(16) : descArb(16, aliasing), { minLength: 16, maxLength: 16 }), { minLength: 4, maxLength: 4 }),
        ring: fc.array(fc.oneof({ arbitrary: fc.integer({ min: 0, max: c.n - 1 }), weight: 12 }, { arbitrary: fc.constantFrom(c.n, c.n + 1, 0xffff), weight: 1 }), {
          minLength: c.n,
          maxLength: c.n,
        }),
        availIdx: fc.oneof({ arbitrary: fc.integer({ min: 0, max: c.n }), weight: 12 }, { arbitrary: fc.constantFrom(c.n + 1, c.n + 2, 0xffff, 0x8000), weight: 1 }),
      }),
    );
}

type Scenario = ReturnType<typeof scenarioArb> extends fc.Arbitrary<infer T> ? T : never;

function build(s: Scenario, aliasing: boolean): HostileRig {
  const { c } = s;
  const features = (c.indirect ? INDIRECT : 0n) | (c.eventIdx ? EVENT_IDX : 0n);
  const rig = new HostileRig({ legacy: c.legacy, regions: [{ base: 0, size: RAM }], num: c.n, features, dataBase: DATA, goodBuf: 0xf000 });
  rig.start(c.n, features);
  const fix = aliasing ? (d: Desc) => d : unaliased;
  s.descs.forEach((d, i) => {
    const x = fix(d);
    rig.desc(i, x.addr, x.len, x.flags, x.next);
  });
  s.tables.forEach((t, k) =>
    t.forEach((d, i) => {
      const x = fix(d);
      rig.ringDrv.writeDescAt(TABLES + 0x100 * k + 16 * i, x.addr, x.len, x.flags, x.next);
    }),
  );
  s.ring.forEach((h, i) => rig.ringDrv.setAvailRingEntry(i, h));
  rig.ringDrv.setAvailIdx(s.availIdx);
  return rig;
}

/** The device as the model sees it: which heads complete, with what length, and RAM after. */
function model(rig: HostileRig, n: number, indirect: boolean) {
  const mem = new GuestMemory([{ base: 0, size: RAM }]);
  mem.regions[0]!.bytes.set(rig.mem.regions[0]!.bytes);
  const g = rig.geom!;
  const src = deterministicEntropy(RNG_SEED);
  const idx = mem.read16(g.avail + 2);
  const out: { id: number; len: number }[] = [];
  if (idx > n) return { error: true, out, mem };
  for (let last = 0; last !== idx; last++) {
    const head = mem.read16(g.avail + 4 + 2 * (last % n));
    const ref = refWalk(mem, g.desc, n, head, indirect);
    if (!ref.ok) return { error: true, out, mem };
    const want = Math.min(ref.inBytes, 64 * KiB);
    let done = 0;
    for (const [a, l] of ref.writable) {
      if (done >= want) break;
      const k = Math.min(l, want - done);
      src.fill(mem.writableView(a, k)!);
      done += k;
    }
    out.push({ id: head, len: done });
  }
  return { error: false, out, mem };
}

describe('property: random descriptor tables and avail rings', () => {
  it('the device does exactly what the reference model predicts (no aliasing), I1–I7 hold', () => {
    let errors = 0;
    let completions = 0;
    fc.assert(
      fc.property(scenarioArb(false), (s) => {
        const rig = build(s, false);
        const m = model(rig, s.c.n, s.c.indirect);
        rig.kick();
        rig.kick();
        const got = rig.completions.map((c) => ({ id: c.id, len: c.len }));
        expect(got).toEqual(m.out);
        expect(rig.dev.broken).toBe(m.error);
        expect(rig.errors.length).toBe(m.error ? 1 : 0);
        // Guest memory equals the model's, byte for byte, outside the used ring.
        const g = rig.geom!;
        const dev = rig.mem.regions[0]!.bytes;
        const mod = m.mem.regions[0]!.bytes;
        const usedEnd = g.used + 6 + 8 * s.c.n;
        expect(Buffer.compare(dev.subarray(0, g.used), mod.subarray(0, g.used))).toBe(0);
        expect(Buffer.compare(dev.subarray(usedEnd), mod.subarray(usedEnd))).toBe(0);
        if (m.error) errors++;
        completions += got.length;
        if (m.error) rig.expectFatal();
        else rig.expectLive();
      }),
      { seed: SEED, numRuns: 300 },
    );
    // The generator reaches both outcomes in quantity.
    expect(errors).toBeGreaterThan(75);
    expect(completions).toBeGreaterThan(300);
  });

  it('unconstrained tables (buffers may alias the rings and tables): I1, I2, I4, I6 on every call, I7 after', () => {
    fc.assert(
      fc.property(scenarioArb(true), (s) => {
        const rig = build(s, true);
        rig.kick();
        rig.kick();
        rig.checkResetRecovers();
      }),
      { seed: SEED + 1, numRuns: 300 },
    );
  });
});
