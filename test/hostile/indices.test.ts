// Hostile-guest catalogue §B: ring indices.
import { describe, expect, it } from 'vitest';
import { VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_SEL } from '../../src/bus/virtio-mmio.js';
import { legacyLayout } from '../../src/vring/layout.js';
import { EVENT_IDX, F_WRITE, HoldingDevice, HostileRig, INDIRECT, MODES } from '../support/invariants.js';

const holding = (legacy: boolean) => new HostileRig({ legacy, device: (o) => new HoldingDevice(o) });

describe('hostile §B: ring indices', () => {
  for (const { legacy, name } of MODES) {
    describe(name, () => {
      function started(num = 8) {
        const rig = new HostileRig({ legacy, num });
        rig.start();
        return rig;
      }
      function good(rig: HostileRig, head: number, k = head) {
        rig.desc(head, rig.buf(k), 16, F_WRITE);
        rig.publish(head);
      }

      it('T-B1a avail.idx jumps qsize+1 ahead: nothing consumed, error reported', () => {
        const rig = started();
        good(rig, 0);
        rig.kick();
        expect(rig.completions).toHaveLength(1);
        for (let i = 1; i < 8; i++) rig.desc(i, rig.buf(i), 16, F_WRITE);
        rig.ringDrv.setAvailIdx(1 + 8 + 1);
        rig.kick();
        expect(rig.completions).toHaveLength(1);
        expect(rig.totalPops).toBe(1);
        rig.expectFatal(/Guest moved used index from 1 to 10/);
      });

      it('T-B1b avail.idx exactly qsize ahead (a full ring) is legal: all qsize entries processed', () => {
        const rig = started();
        for (let h = 0; h < 8; h++) good(rig, h);
        rig.kick();
        expect(rig.completions.map((c) => c.id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        expect(rig.completions.every((c) => c.len === 16)).toBe(true);
        rig.expectLive();
      });

      it('T-B1c avail.idx moved backwards by 1 is treated like a jump', () => {
        const rig = started();
        for (let h = 0; h < 3; h++) good(rig, h);
        rig.kick();
        expect(rig.completions).toHaveLength(3);
        rig.ringDrv.setAvailIdx(2);
        rig.kick();
        expect(rig.completions).toHaveLength(3);
        rig.expectFatal(/Guest moved used index from 3 to 2/);
      });

      it('T-B1d wrap: last_avail 65530, avail.idx 2, qsize 8 is legal (8 entries)', () => {
        const rig = started();
        rig.pokeIndices(65530);
        for (let h = 0; h < 8; h++) good(rig, h);
        expect(rig.ringDrv.availIdx).toBe(2);
        rig.kick();
        expect(rig.completions.map((c) => c.id)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        expect(rig.usedIdx()).toBe(2);
        expect(rig.q.lastAvailIdx).toBe(2);
        rig.expectLive();
      });

      it.each([
        ['qsize', 8],
        ['0xFFFF', 0xffff],
      ])('T-B2 head %s from the avail ring is rejected, no used entry', (_n, head) => {
        const rig = started();
        rig.ringDrv.setAvailRingEntry(0, head);
        rig.ringDrv.setAvailIdx(1);
        rig.kick();
        expect(rig.completions).toHaveLength(0);
        expect(rig.usedIdx()).toBe(0);
        rig.expectFatal(/Guest says index \d+ is available/);
      });

      it('T-B3 a head published again while in flight is an error; the late completion writes nothing', () => {
        const rig = holding(legacy);
        rig.start();
        const dev = rig.dev as HoldingDevice;
        good(rig, 0);
        rig.kick();
        expect(dev.held).toHaveLength(1);
        rig.publish(0);
        rig.kick();
        expect(rig.errors[0]).toMatch(/head 0 made available again while in use/);
        expect(dev.held).toHaveLength(1);
        // The backend answers the first request after the error: the device is broken, so no
        // used entry appears, and certainly not two for head 0.
        rig.host('complete held', () => dev.completeAll());
        expect(rig.completions).toHaveLength(0);
        expect(rig.usedIdx()).toBe(0);
        rig.expectFatal(/made available again/);
      });

      it('T-B3 (rng) the same head published twice in one batch is legal once the first returns', () => {
        const rig = started();
        good(rig, 0);
        rig.publish(0);
        rig.kick();
        expect(rig.completions.map((c) => c.id)).toEqual([0, 0]);
        rig.expectLive();
      });

      it('T-B4 in-flight never exceeds qsize: 3×qsize heads published by rewriting slots', () => {
        const rig = holding(legacy);
        rig.start();
        const dev = rig.dev as HoldingDevice;
        for (let h = 0; h < 8; h++) good(rig, h);
        rig.kick();
        expect(dev.held).toHaveLength(8);
        expect(rig.inFlightHeads()).toHaveLength(8);
        // Rewrite the slots with the same heads again (twice more): the ring says 16 more.
        for (let round = 0; round < 2; round++) {
          for (let h = 0; h < 8; h++) rig.publish(h);
          rig.kick();
          expect(rig.inFlightHeads().length).toBeLessThanOrEqual(8);
          expect(rig.q.inuse).toBeLessThanOrEqual(8);
        }
        expect(rig.errors[0]).toMatch(/Virtqueue size exceeded|Guest moved used index/);
        expect(dev.held).toHaveLength(8);
        rig.expectFatal();
      });

      it('T-B4 3×qsize heads published at once: rejected by the index check, nothing held', () => {
        const rig = holding(legacy);
        rig.start();
        const dev = rig.dev as HoldingDevice;
        for (let k = 0; k < 24; k++) {
          rig.desc(k % 8, rig.buf(k % 8), 16, F_WRITE);
          rig.publish(k % 8);
        }
        rig.kick();
        expect(dev.held).toHaveLength(0);
        rig.expectFatal(/Guest moved used index from 0 to 24/);
      });

      it('T-B6 the guest scribbles used.idx and used elements: the device keeps its shadow', () => {
        const rig = started();
        good(rig, 0);
        rig.kick();
        const g = rig.geom!;
        rig.mem.write16(g.used + 2, 0x7777);
        rig.mem.write32(g.used + 4, 0x1234);
        rig.mem.write32(g.used + 8, 0x5678);
        good(rig, 1);
        rig.kick();
        expect(rig.usedElem(1)).toEqual({ id: 1, len: 16 });
        expect(rig.usedIdx()).toBe(2);
        expect(rig.q.usedIdx).toBe(2);
        expect(rig.dev.broken).toBe(false);
        rig.expectLive();
      });
    });
  }

  it('T-B7 (v2) QueueNum written after QueueReady does not change the live geometry', () => {
    const rig = new HostileRig({ num: 16, features: INDIRECT | EVENT_IDX });
    rig.start(16, INDIRECT | EVENT_IDX);
    rig.regs.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 32);
    expect(rig.q.num).toBe(16);
    // 40 requests in batches of 5: the avail ring is read modulo 16, avail_event stays at the
    // 16-entry position (I4 would flag a write at the 32-entry one), used entries wrap at 16.
    let head = 0;
    for (let b = 0; b < 8; b++) {
      const heads: number[] = [];
      for (let k = 0; k < 5; k++) {
        rig.desc(head, rig.buf(head), 16, F_WRITE);
        rig.publish(head);
        heads.push(head);
        head = (head + 1) % 16;
      }
      const from = rig.completions.length;
      rig.kick();
      expect(rig.completions.slice(from).map((c) => c.id)).toEqual(heads);
    }
    expect(rig.usedIdx()).toBe(40);
    expect(rig.errors).toEqual([]);
    rig.expectLive();
  });

  it('T-B7 (v1) QueueNum written after QueuePFN remaps consistently (legacy has no ready latch)', () => {
    const rig = new HostileRig({ legacy: true, num: 16 });
    rig.start(16);
    rig.regs.write(VIRTIO_MMIO_QUEUE_NUM, 4, 32);
    const q = rig.q;
    const l = legacyLayout(rig.ringBase, 32, 4096);
    expect({ num: q.num, desc: q.desc, avail: q.avail, used: q.used, mapped: q.isMapped }).toEqual({ num: 32, ...l, mapped: true });
    rig.checkResetRecovers();
  });
});
