// The invariant harness must be able to fail: each test here breaks the device on purpose (by
// patching one method of an otherwise correct rig) and expects the matching invariant to fire.
import { describe, expect, it } from 'vitest';
import type { VirtQueueElement } from '../../src/vring/element.js';
import { F_WRITE, HostileRig, InvariantError, MiB, refWalk } from '../support/invariants.js';

function rigWithRequest(legacy = false) {
  const rig = new HostileRig({ legacy });
  rig.start();
  rig.desc(0, rig.buf(0), 16, F_WRITE);
  rig.publish(0);
  return rig;
}

/** Patch queue 0's push to run `after` once the real push is done. */
function afterPush(rig: HostileRig, after: (e: VirtQueueElement) => void): void {
  const q = rig.q;
  const orig = q.push.bind(q);
  q.push = (e, len) => {
    orig(e, len);
    after(e);
  };
}

describe('invariant harness self-test', () => {
  it('I1: an exception escaping a register write is reported', () => {
    const rig = rigWithRequest();
    rig.dev.queueNotify = () => {
      throw new RangeError('offset is outside the bounds of the DataView');
    };
    expect(() => rig.kick()).toThrow(/I1: exception escaped/);
  });

  it('I2: too many guest-RAM reads in one call are reported', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => {
      for (let i = 0; i < 200_000; i++) rig.mem.read16(0x1000);
    });
    expect(() => rig.kick()).toThrow(/I2: .* guest-RAM reads/);
  });

  it('I2: a call over the wall-clock cap is reported', () => {
    // The cap is lowered only for the call under test: a GC pause during set-up on a busy CI
    // machine once took 11 ms and tripped a cap that was meant for the kick alone.
    const rig = rigWithRequest();
    rig.opts.wallCapMs = 5;
    afterPush(rig, () => {
      const t = Date.now();
      while (Date.now() - t < 20);
    });
    expect(() => rig.kick()).toThrow(/I2: .* took/);
  });

  it('I3: an allocation sized by a guest length is reported', () => {
    const rig = rigWithRequest();
    const keep: Uint8Array[] = [];
    afterPush(rig, () => keep.push(new Uint8Array(4 * MiB)));
    expect(() => rig.kick()).toThrow(/I3: /);
  });

  it('I4: a write outside the completed buffers and the used ring is reported', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => rig.mem.write8(rig.buf(7), 0x5a ^ rig.mem.read8(rig.buf(7))));
    expect(() => rig.kick()).toThrow(/I4: /);
  });

  it('I4: a write into a buffer that was popped but not completed is reported', () => {
    const rig = rigWithRequest();
    const q = rig.q;
    q.push = (e) => {
      // write the buffer, "forget" to publish the completion
      rig.mem.fill(e.sgAddr[0]!, 16, 0x11);
    };
    expect(() => rig.kick()).toThrow(/I4: |I6: /);
  });

  it('I4: the used ring flags must not change', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => rig.mem.write16(rig.geom!.used, 1));
    expect(() => rig.kick()).toThrow(/I4: /);
  });

  it('I6: a used id that was never in flight is reported', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => rig.mem.write32(rig.geom!.used + 4, 5));
    expect(() => rig.kick()).toThrow(/I6: .*used id 5 .*not in flight/);
  });

  it('I6: a used len above the writable capacity is reported', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => rig.mem.write32(rig.geom!.used + 8, 17));
    expect(() => rig.kick()).toThrow(/I6: .*used len 17 > writable capacity 16/);
  });

  it('I6: a used.idx that does not match what the device flushed is reported', () => {
    const rig = rigWithRequest();
    afterPush(rig, () => rig.mem.write16(rig.geom!.used + 2, 2));
    expect(() => rig.kick()).toThrow(/I6: .*used.idx/);
  });

  it('I6: an element whose scatter list differs from the chain in RAM is reported', () => {
    const rig = rigWithRequest();
    // Break the walk itself: the element says 8 bytes where the descriptor says 16.
    const q = rig.q as unknown as { readChain: (head: number, e: VirtQueueElement) => string | null };
    const orig = q.readChain.bind(q);
    q.readChain = (head, e) => {
      const r = orig(head, e);
      e.sgLen[0] = 8;
      e.inBytes = 8;
      return r;
    };
    expect(() => rig.kick()).toThrow(/I6: head 0: the element's scatter list differs/);
  });

  it('I6: a pop that skips an avail slot is reported', () => {
    const rig = rigWithRequest();
    rig.desc(3, rig.buf(3), 16, F_WRITE);
    rig.publish(3);
    // A device bug: its avail index runs one ahead, so it pops slot 1 (head 3) first.
    rig.q.lastAvailIdx = rig.q.shadowAvailIdx = 1;
    expect(() => rig.kick()).toThrow(/I6: popped head 3, avail ring slot names 0/);
  });

  it('I5: a device that silently ignores a valid request is WEDGED', () => {
    const rig = new HostileRig();
    rig.start();
    rig.q.handleOutput = () => {};
    expect(() => rig.checkLiveness()).toThrow(/I5: WEDGED/);
  });

  it('I5: NEEDS_RESET without a config interrupt is reported', () => {
    const rig = new HostileRig();
    rig.start();
    rig.dev.notifyConfig = () => {};
    rig.desc(0, rig.buf(0), 16, F_WRITE | 1, 0); // self-loop
    rig.publish(0);
    rig.kick();
    expect(() => rig.checkLiveness()).toThrow(/without a config interrupt/);
  });

  it('I7: a device that stays broken across reset is reported', () => {
    const rig = new HostileRig();
    rig.start();
    const reset = rig.dev.reset.bind(rig.dev);
    rig.dev.reset = () => {
      const b = rig.dev.broken;
      reset();
      rig.dev.broken = b;
    };
    rig.desc(0, rig.buf(0), 16, F_WRITE | 1, 0);
    rig.publish(0);
    rig.kick();
    expect(() => rig.expectFatal()).toThrow(InvariantError);
  });

  it('the reference walker agrees with the policies it mirrors', () => {
    const rig = new HostileRig();
    rig.start();
    rig.desc(0, rig.buf(0), 16, 1, 1);
    rig.desc(1, rig.buf(1), 16, F_WRITE, 0);
    const ok = refWalk(rig.mem, rig.geom!.desc, 8, 0, true);
    expect(ok).toMatchObject({ ok: true, outBytes: 16, inBytes: 16 });
    rig.desc(1, rig.buf(1), 16, F_WRITE | 1, 1);
    expect(refWalk(rig.mem, rig.geom!.desc, 8, 0, true)).toMatchObject({ ok: false, error: 'loop' });
  });
});
