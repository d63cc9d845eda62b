import { describe, expect, it } from 'vitest';
import { deterministicEntropy } from '../../src/devices/rng.js';
import { modernAddrs, rngRig } from '../support/harness.js';

function expected(n: number, skip = 0): Uint8Array {
  const src = deterministicEntropy(1);
  const all = new Uint8Array(skip + n);
  src.fill(all);
  return all.subarray(skip);
}

describe('virtio-rng over virtio-mmio', () => {
  for (const legacy of [false, true]) {
    it(`serves one request end to end (${legacy ? 'v1 legacy' : 'v2 modern'})`, () => {
      const r = rngRig({ legacy });
      expect(r.drv.probe()).toBe(4);
      expect(r.drv.version).toBe(legacy ? 1 : 2);
      r.drv.init(0n);
      const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(0x10000, 8), base: 0x10000 });
      r.drv.driverOk();
      const head = ring.add([{ addr: 0x40000, len: 64, write: true }]);
      r.drv.notify(0);
      const used = ring.takeUsed();
      expect(used).toEqual([{ id: head, len: 64 }]);
      expect(r.mem.view(0x40000, 64)).toEqual(expected(64));
      expect(r.irqRaises()).toBe(1);
      expect(r.drv.ackInterrupt()).toBe(1);
      expect(r.irqLevel()).toBe(false);
    });
  }
});
