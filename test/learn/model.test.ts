// The learning page's model (src/learn/model.ts): each driver step changes the ring bytes the
// page reads exactly as the VIRTIO spec says, for split and packed rings; the hostile steps break
// the device and a reset recovers; the migration view decodes the saved blob.
import { describe, expect, it } from 'vitest';
import { BUFFERS, INDIRECT_TABLE, LearnMachine, type PackedRingView, type SplitRingView } from '../../src/learn/model.js';

const split = (m: LearnMachine): SplitRingView => {
  const r = m.snapshot().ring;
  if (r?.kind !== 'split') throw new Error('expected a split ring');
  return r;
};
const packed = (m: LearnMachine): PackedRingView => {
  const r = m.snapshot().ring;
  if (r?.kind !== 'packed') throw new Error('expected a packed ring');
  return r;
};

function ready(features: { eventIdx?: boolean; indirect?: boolean; packed?: boolean }): LearnMachine {
  const m = new LearnMachine();
  m.negotiate({ eventIdx: false, indirect: false, packed: false, ...features });
  m.setupQueue();
  return m;
}

describe('learn model: split ring', () => {
  it('negotiates and sets up: a zeroed ring, the free list linked, DRIVER_OK', () => {
    const m = ready({ eventIdx: true, indirect: true });
    const s = m.snapshot();
    expect(s.device.statusNames).toBe('ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK');
    expect(s.device.queue).toMatchObject({ ready: true, packed: false, num: 4, lastAvailIdx: 0, usedIdx: 0 });
    const r = split(m);
    expect(r.desc.map((d) => [d.flags, d.next])).toEqual([[1, 1], [1, 2], [1, 3], [1, 0]]);
    expect(r.avail).toEqual({ flags: 0, idx: 0, ring: [0, 0, 0, 0], usedEvent: 0 });
    expect(r.used).toMatchObject({ flags: 0, idx: 0, availEvent: 0 });
    expect(s.log.map((l) => l.step)).toEqual(['negotiate features', 'set up queue 0']);
    expect(s.log[1]!.trace).toContain('virtio-rng: queue 0 size 4 desc 0x1000 avail 0x1100 used 0x1200');
  });

  it('post a chain, notify, take used: descriptors, avail and used rings byte for byte', () => {
    const m = ready({ eventIdx: true });
    expect(m.post('chain')).toBe('posted as head 0, 32 bytes writable');
    let r = split(m);
    expect(r.desc.slice(0, 3).map((d) => [Number(d.addr), d.len, d.flagNames, d.next])).toEqual([
      [BUFFERS, 8, 'NEXT|WRITE', 1],
      [BUFFERS + 0x100, 8, 'NEXT|WRITE', 2],
      [BUFFERS + 0x200, 16, 'WRITE', 0],
    ]);
    expect(r.avail).toMatchObject({ idx: 1, ring: [0, 0, 0, 0] });
    expect(r.used.idx).toBe(0); // not notified yet: the device has not looked

    m.notify();
    r = split(m);
    expect(r.used.idx).toBe(1);
    expect(r.used.ring[0]).toEqual({ id: 0, len: 32 });
    expect(r.used.availEvent).toBe(1); // EVENT_IDX: the device asks to be kicked at the next avail
    const s = m.snapshot();
    expect(s.device.isr).toBe(1);
    expect(s.device.irqLevel).toBe(true);
    expect(s.device.queue).toMatchObject({ lastAvailIdx: 1, usedIdx: 1, inuse: 0 });
    expect(s.log.at(-1)!.trace).toContain('virtio-rng: queue 0 used[0] = {id 0, len 32}');
    // The deterministic entropy landed in the buffers.
    expect(m.memory.read32(BUFFERS)).not.toBe(0);

    expect(m.takeUsed()).toBe('ISR was 0x1; used: {id 0, len 32}');
    r = split(m);
    expect(r.avail.usedEvent).toBe(1); // EVENT_IDX: interrupt me after used idx 1
    expect(r.desc[2]).toMatchObject({ flagNames: 'NEXT|WRITE', next: 3 }); // back on the free list
    expect(m.snapshot().device).toMatchObject({ isr: 0, irqLevel: false });
  });

  it('posts through an indirect table: one INDIRECT descriptor in the ring', () => {
    const m = ready({ indirect: true });
    m.post('indirect');
    const d = split(m).desc[0]!;
    expect([Number(d.addr), d.len, d.flagNames]).toEqual([INDIRECT_TABLE, 32, 'INDIRECT']);
    m.notify();
    expect(split(m).used.ring[0]).toEqual({ id: 0, len: 32 });
  });

  it('a descriptor chained to itself breaks the device (NEEDS_RESET); reset recovers', () => {
    const m = ready({});
    expect(m.hostile()).toBe('descriptor 0 chained to itself, notified');
    expect(split(m).desc[0]).toMatchObject({ flagNames: 'NEXT|WRITE', next: 0 });
    let s = m.snapshot();
    expect(s.device.broken).toBe(true);
    expect(s.device.statusNames).toContain('NEEDS_RESET');
    expect(s.log.at(-1)!.trace).toContain('virtio-rng: ERROR Looped descriptor (device broken, NEEDS_RESET)');
    expect(split(m).used.idx).toBe(0);

    m.reset();
    s = m.snapshot();
    expect(s.device).toMatchObject({ status: 0, broken: false });
    m.negotiate({ eventIdx: false, indirect: false, packed: false });
    m.setupQueue();
    m.post('one');
    m.notify();
    expect(split(m).used).toMatchObject({ idx: 1, ring: [{ id: 0, len: 16 }, { id: 0, len: 0 }, { id: 0, len: 0 }, { id: 0, len: 0 }] });
  });

  it('steps out of order are refused with a reason, not thrown', () => {
    const m = new LearnMachine();
    expect(m.post('one')).toBe('error: no queue: negotiate features and set up the queue first');
  });
});

describe('learn model: packed ring', () => {
  it('post and complete: AVAIL/USED bits, ids, and the wrap counters flipping after a lap', () => {
    const m = ready({ packed: true });
    expect(m.snapshot().device.queue).toMatchObject({ packed: true, lastAvailWrapCounter: true, usedWrapCounter: true });
    m.post('one');
    let r = packed(m);
    expect(r.desc[0]).toMatchObject({ addr: BigInt(BUFFERS), len: 16, id: 0, flagNames: 'WRITE|AVAIL', meaning: 'available (wrap 1)' });
    m.notify();
    r = packed(m);
    // The device writes the id and the length it wrote, and sets USED equal to AVAIL.
    expect(r.desc[0]).toMatchObject({ id: 0, len: 16, avail: true, used: true, meaning: 'used (wrap 1)' });
    m.takeUsed();
    expect(packed(m).driver).toEqual({ nextAvail: 1, availWrap: true, nextUsed: 1, usedWrap: true });

    m.post('chain'); // slots 1, 2, 3: the lap ends
    r = packed(m);
    expect(r.desc.slice(1).map((d) => d.flagNames)).toEqual(['NEXT|WRITE|AVAIL', 'NEXT|WRITE|AVAIL', 'WRITE|AVAIL']);
    expect(r.driver).toMatchObject({ nextAvail: 0, availWrap: false });
    m.notify();
    m.takeUsed();
    const s = m.snapshot();
    expect(s.device.queue).toMatchObject({ lastAvailIdx: 0, usedIdx: 0, lastAvailWrapCounter: false, usedWrapCounter: false });
    // A chain is used as one descriptor, at the slot of its first.
    expect(packed(m).desc[1]).toMatchObject({ id: 0, len: 32, meaning: 'used (wrap 1)' });

    m.post('one'); // the second lap: AVAIL=0, USED=1 means available
    expect(packed(m).desc[0]).toMatchObject({ flagNames: 'WRITE|USED', meaning: 'available (wrap 0)' });
    m.notify();
    expect(packed(m).desc[0]).toMatchObject({ flags: 0, meaning: 'used (wrap 0)' }); // the device writes AVAIL and USED only
  });

  it('EVENT_IDX: the driver event area asks for an interrupt at the next used slot', () => {
    const m = ready({ packed: true, eventIdx: true });
    expect(packed(m).driverEvent).toEqual({ offWrap: 0x8000, flags: 2 }); // slot 0, wrap 1
    m.post('one');
    m.notify();
    m.takeUsed();
    expect(packed(m).driverEvent).toEqual({ offWrap: 0x8001, flags: 2 });
  });

  it('an indirect descriptor of 15 bytes breaks the device; reset recovers', () => {
    const m = ready({ packed: true, indirect: true });
    m.hostile();
    const s = m.snapshot();
    expect(s.device.statusNames).toContain('NEEDS_RESET');
    expect(s.log.at(-1)!.trace.some((l) => l.includes('ERROR Invalid size for indirect buffer table (15)'))).toBe(true);
    m.reset();
    expect(m.snapshot().device.status).toBe(0);
  });
});

describe('learn model: migration view', () => {
  it('decodes the saved blob field by field with offsets and hex', () => {
    const m = ready({ eventIdx: true });
    m.post('one');
    m.notify();
    const v = m.saveDevice();
    const row = (name: string) => v.rows.find((r) => r.name === name);
    expect(row('status')).toMatchObject({ offset: 12, size: 1, value: '15 (0xf)', hex: '0f' });
    expect(row('num_queues')).toMatchObject({ value: '1 (0x1)', hex: '00 00 00 01' });
    expect(v.rows.some((r) => r.name.includes('last_avail_idx') && r.value.startsWith('1 '))).toBe(true);
    // The 1024-entry per-queue arrays are cut to their first 4 entries and one row for the rest.
    expect(v.rows.find((r) => r.name.startsWith('… 1020 more'))).toMatchObject({ name: '… 1020 more (vq[4] to vq[1023])', size: 10200 });
    expect(v.rows.length).toBeLessThan(200);
    const last = v.rows.at(-1)!;
    expect(last.offset + last.size).toBeLessThanOrEqual(v.size);
    // Saving is not a driver step: it adds nothing to the trace log.
    expect(m.snapshot().log.at(-1)!.step).toBe('notify');
  });
});
