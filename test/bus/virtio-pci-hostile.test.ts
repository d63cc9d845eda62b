// Hostile-guest catalogue §D (spec/hostile-guest-bugs.md) on the virtio-pci transport: notify
// and queue-select out of range, queue sizes, sweeps of every BAR offset and width, the PCI_CFG
// window, MSI-X vectors out of range, and legacy registers on a modern device.
import { describe, expect, it } from 'vitest';
import {
  C_CFGGEN,
  C_DF,
  C_MSIX,
  C_NUMQ,
  C_Q_DESCLO,
  C_Q_ENABLE,
  C_Q_MSIX,
  C_Q_NOFF,
  C_Q_SELECT,
  C_Q_SIZE,
  C_STATUS,
  IO_BASE,
  L_MSI_QUEUE_VECTOR,
  L_QUEUE_NOTIFY,
  L_QUEUE_NUM,
  L_QUEUE_PFN,
  L_QUEUE_SEL,
  LegacyPciDriver,
  ModernPciDriver,
  PciRig,
  postEntropyRequest,
  type Size,
} from '../support/pci-rig.js';
import type { VirtioPciOptions } from '../../src/bus/virtio-pci.js';

const BUF = 0x40000;

/** A transitional rng with a live queue 0 driven through the modern interface. */
function liveModern(pci: VirtioPciOptions = {}) {
  const r = new PciRig({ pci: { vectors: 4, ...pci } });
  r.mapBars();
  const d = new ModernPciDriver(r);
  d.init();
  const ring = d.setupQueue(0, 0x10000, 8);
  d.driverOk();
  const pops = () => r.rng.bytesServed;
  /** A legitimate request still completes: the device is alive. */
  const expectLive = () => {
    postEntropyRequest(ring, BUF, 16);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([expect.objectContaining({ len: 16 })]);
    expect(r.rng.broken).toBe(false);
  };
  return { r, d, ring, pops, expectLive };
}

function liveLegacy() {
  const r = new PciRig({ pci: { disableModern: true } });
  r.mapBars();
  const d = new LegacyPciDriver(r);
  d.init(0);
  const ring = d.setupQueue(0, 0x20000);
  d.driverOk();
  const expectLive = () => {
    postEntropyRequest(ring, BUF, 16);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([expect.objectContaining({ len: 16 })]);
  };
  return { r, d, ring, expectLive };
}

describe('T-D1 notify out of range', () => {
  it('legacy port 0x10: 0xFFFF, 0xFFFFFFFF, numQueues, 1024 — ignored, nothing consumed, no interrupt', () => {
    const { r, ring, expectLive } = liveLegacy();
    postEntropyRequest(ring, BUF);
    for (const [v, s] of [[0xffff, 2], [0xffff_ffff, 4], [1, 2], [1024, 2], [1023, 2], [0x1_0000, 4]] as const) r.ioWrite(L_QUEUE_NOTIFY, s, v);
    r.ioWrite(L_QUEUE_NOTIFY + 1, 1, 0); // the high byte alone is not the register
    expect(r.rng.bytesServed).toBe(0);
    expect(r.host.intxRaises).toBe(0);
    r.ioWrite(L_QUEUE_NOTIFY, 2, 0);
    expect(ring.takeUsed()).toHaveLength(1);
    expectLive();
  });

  it('modern notify: queue 1, 1023 and offsets past the structure are ignored; the written value does not matter', () => {
    const { r, ring, expectLive } = liveModern();
    postEntropyRequest(ring, BUF);
    r.notifyModern(1, 0);
    r.notifyModern(1023, 0);
    r.bar4Write(0x3000 + 4 * 1024 - 2, 2, 0); // last bytes of the structure: queue 1023
    r.host.mem.write(0xe100_0000 + 0x4000, 2, 0); // past BAR4: unassigned
    expect(r.rng.bytesServed).toBe(0);
    r.notifyModern(0, 0xffff); // queue 0's address, any value
    expect(ring.takeUsed()).toHaveLength(1);
    expectLive();
  });

  it('through the PCI_CFG window, the same rules', () => {
    const { r, ring } = liveModern();
    const cap = r.vendorCap(5)!.at;
    postEntropyRequest(ring, BUF);
    r.cfgWrite(cap + 8, 4, 0x3000 + 4 * 1023);
    r.cfgWrite(cap + 12, 4, 2);
    r.cfgWrite(cap + 16, 2, 0);
    expect(r.rng.bytesServed).toBe(0);
    r.cfgWrite(cap + 8, 4, 0x3000);
    r.cfgWrite(cap + 16, 2, 0xffff);
    expect(ring.takeUsed()).toHaveLength(1);
  });
});

describe('T-D2 queue select out of range', () => {
  it('modern: selectors ≥ 1024 are dropped; an absent queue reads size 0 and vector NO_VECTOR', () => {
    const { r, expectLive } = liveModern();
    const q0 = { ...r.rng.requestq, pool: undefined };
    r.commonWrite(C_Q_SELECT, 2, 1);
    expect(r.common(C_Q_SIZE, 2)).toBe(0);
    expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
    expect(r.common(C_Q_ENABLE, 2)).toBe(0);
    expect(r.common(C_Q_NOFF, 2)).toBe(1);
    for (const sel of [1024, 0xffff]) {
      r.commonWrite(C_Q_SELECT, 2, sel);
      expect(r.common(C_Q_SELECT, 2)).toBe(1);
    }
    // Writes to an absent queue's registers land in the transport's 1024-entry state only.
    r.commonWrite(C_Q_SIZE, 2, 16);
    r.commonWrite(C_Q_DESCLO, 4, 0x5000);
    r.commonWrite(C_Q_ENABLE, 2, 1);
    expect(r.common(C_Q_SIZE, 2)).toBe(0);
    expect(r.common(C_Q_DESCLO, 4)).toBe(0x5000);
    r.notifyModern(1);
    expect(r.rng.vq).toHaveLength(1);
    expect(r.common(C_NUMQ, 2)).toBe(1);
    expect({ ...r.rng.requestq, pool: undefined }).toEqual(q0);
    expect(r.rng.broken).toBe(false);
    r.commonWrite(C_Q_SELECT, 2, 0);
    expectLive();
  });

  it('legacy: selectors ≥ 1024 are dropped; an absent queue has size 0 and ignores its PFN', () => {
    const { r, expectLive } = liveLegacy();
    r.ioWrite(L_QUEUE_SEL, 2, 1);
    expect(r.io(L_QUEUE_NUM, 2)).toBe(0);
    r.ioWrite(L_QUEUE_PFN, 4, 0x30);
    expect(r.io(L_QUEUE_PFN, 4)).toBe(0);
    for (const sel of [1024, 0xffff]) {
      r.ioWrite(L_QUEUE_SEL, 2, sel);
      expect(r.io(L_QUEUE_SEL, 2)).toBe(1);
    }
    r.ioWrite(L_QUEUE_SEL, 4, 0xffff_ffff); // a 4-byte write at 0x0e spans 0x0e and 0x10 (notify)
    expect(r.io(L_QUEUE_SEL, 2)).toBe(1);
    r.ioWrite(L_QUEUE_SEL, 2, 0);
    expect(r.io(L_QUEUE_PFN, 4)).toBe(0x20);
    expectLive();
  });
});

describe('T-D3 queue sizes', () => {
  for (const size of [0, 3, 1000, 1025, 65535]) {
    it(`queue_size ${size}: the queue does not go live with a size the driver did not get`, () => {
      const r = new PciRig({ pci: { disableLegacy: true } });
      r.mapBars();
      const d = new ModernPciDriver(r);
      d.init();
      r.commonWrite(C_Q_SELECT, 2, 0);
      r.commonWrite(C_Q_SIZE, 2, size);
      const readBack = r.common(C_Q_SIZE, 2);
      // QEMU's virtio_queue_set_num: 0 and > 1024 are refused, anything else is stored.
      expect(readBack).toBe(size === 0 || size > 1024 ? 8 : size);
      r.commonWrite(C_Q_DESCLO, 4, 0x10000);
      r.commonWrite(C_Q_DESCLO + 8, 4, 0x11000);
      r.commonWrite(C_Q_DESCLO + 16, 4, 0x12000);
      r.commonWrite(C_Q_ENABLE, 2, 1);
      const q = r.rng.requestq;
      expect(q.num).toBe(readBack);
      if (q.isMapped) {
        expect(readBack & (readBack - 1)).toBe(0);
        expect(r.rng.broken).toBe(false);
      } else {
        // A size that is not a power of two is refused when the rings are mapped
        // (docs/qemu-differences.md row 7): the device reports NEEDS_RESET.
        expect(r.rng.broken).toBe(true);
        expect(r.common(C_STATUS, 1) & 0x40).toBe(0x40);
      }
    });
  }
});

describe('T-D5 every offset of every BAR, every width', () => {
  function sweep(r: PciRig, values: number[]) {
    const bars = [0, 1, 4].map((i) => ({ i, b: r.proxy.bar(i) })).filter((x) => x.b);
    for (const { i, b } of bars) {
      const base = i === 0 ? IO_BASE : i === 1 ? 0xe000_0000 : 0xe100_0000;
      const space = i === 0 ? r.host.io : r.host.mem;
      const size = Math.min(b!.size, 0x4000);
      for (const s of [1, 2, 4] as Size[]) {
        // A throw fails the test; plain calls keep the 10^5 accesses fast.
        for (let o = 0; o + s <= size; o += 1) {
          space.read(base + o, s);
          for (const v of values) space.write(base + o, s, v);
        }
      }
    }
  }

  it('reads and writes never throw; the PBA ignores every write; the device recovers after a reset', () => {
    const { r } = liveModern();
    r.msixEnable();
    // PBA first, on its own: every write to it is ignored.
    r.msixEntry(0, true);
    r.commonWrite(C_MSIX, 2, 0);
    r.rng.notifyConfig();
    const pba = r.pba();
    expect(pba).toBe(1);
    for (let o = 0x800; o < 0x1000; o++) for (const s of [1, 2, 4] as Size[]) r.bar1Write(o, s, 0xffff_ffff);
    expect(r.pba()).toBe(pba);
    sweep(r, [0xffff_ffff, 0, 0x5a5a_5a5a]);
    // Recovery: a machine reset, then a full driver bring-up and request.
    r.proxy.reset();
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
  });

  it('legacy BAR0 sweep, then the driver resets and runs again', () => {
    const { r } = liveLegacy();
    sweep(r, [0xffff_ffff, 0, 0x0000_0001]);
    r.proxy.reset();
    r.mapBars();
    const d = new LegacyPciDriver(r);
    d.init(0);
    const ring = d.setupQueue(0, 0x20000);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
  });

  it('the configuration space: every offset and width, never a throw, identity bytes unchanged', () => {
    const { r } = liveModern();
    const ids = r.cfgRead(0, 4);
    const cls = r.cfgRead(8, 4);
    for (let o = 0; o < 260; o++) {
      for (const s of [1, 2, 4] as Size[]) {
        expect(() => r.cfgRead(o, s)).not.toThrow();
        expect(() => r.cfgWrite(o, s, 0xffff_ffff)).not.toThrow();
      }
    }
    expect(r.cfgRead(0, 4)).toBe(ids);
    expect(r.cfgRead(8, 4)).toBe(cls);
    expect(r.caps().map((c) => c.at)).toEqual([0x98, 0x84, 0x70, 0x60, 0x50, 0x40]);
  });
});

describe('T-D6 widths, read-only registers and the PCI_CFG window', () => {
  it('read-only common registers ignore writes', () => {
    const { r, expectLive } = liveModern();
    const before = [r.common(C_DF, 4), r.common(C_NUMQ, 2), r.common(C_CFGGEN, 1), r.common(C_Q_NOFF, 2)];
    r.commonWrite(C_DF, 4, 0);
    r.commonWrite(C_NUMQ, 2, 7);
    r.commonWrite(C_CFGGEN, 1, 9);
    r.commonWrite(C_Q_NOFF, 2, 5);
    expect([r.common(C_DF, 4), r.common(C_NUMQ, 2), r.common(C_CFGGEN, 1), r.common(C_Q_NOFF, 2)]).toEqual(before);
    r.bar4Write(0x1000, 1, 0xff); // ISR is read-only
    expect(r.isrRead()).toBe(0);
    expectLive();
  });

  it('a byte written to the high half of a 16-bit register does nothing; a read there is 0', () => {
    const { r, expectLive } = liveModern();
    r.commonWrite(C_Q_SELECT + 1, 1, 0x12);
    expect(r.common(C_Q_SELECT, 2)).toBe(0);
    expect(r.common(C_Q_SELECT + 1, 1)).toBe(0);
    r.commonWrite(C_Q_ENABLE + 1, 1, 0); // not queue_enable = 0
    expect(r.rng.broken).toBe(false);
    expectLive();
  });

  it('the window with bad bar / length / offset: no access, no throw, data unchanged', () => {
    const { r, expectLive } = liveModern();
    const cap = r.vendorCap(5)!.at;
    const status = r.common(C_STATUS, 1);
    for (const bar of [0, 1, 5, 6, 0xff]) {
      for (const len of [0, 3, 5, 8, 0x8000_0000, 0xffff_ffff]) {
        for (const off of [0, 0x14, 0x3ffe, 0x4000, 0xffff_fffc, 0xffff_ffff]) {
          r.cfgWrite(cap + 4, 1, bar);
          r.cfgWrite(cap + 8, 4, off);
          r.cfgWrite(cap + 12, 4, len);
          r.cfgWrite(cap + 16, 4, 0);
          expect(r.cfgRead(cap + 16, 4)).toBe(0);
        }
      }
    }
    for (const off of [0x4000, 0x1_0000, 0xffff_fffc]) {
      r.cfgWrite(cap + 8, 4, off);
      r.cfgWrite(cap + 12, 4, 4);
      r.cfgWrite(cap + 16, 4, 0x1234_5678);
      expect(r.cfgRead(cap + 16, 4)).toBe(0x1234_5678);
    }
    expect(r.common(C_STATUS, 1)).toBe(status);
    r.cfgWrite(cap + 12, 4, 0);
    expectLive();
  });
});

describe('T-D7 MSI-X vectors out of range', () => {
  for (const v of [4, 0x7ff, 0x800, 0xfffe]) {
    it(`vector ${v.toString(16)} (table size 4): refused, reads NO_VECTOR, and the completion raises nothing`, () => {
      const { r, d, ring } = liveModern();
      r.msixEnable();
      for (let i = 0; i < 4; i++) r.msixEntry(i);
      r.commonWrite(C_MSIX, 2, v);
      expect(r.common(C_MSIX, 2)).toBe(0xffff);
      r.commonWrite(C_Q_SELECT, 2, 0);
      r.commonWrite(C_Q_MSIX, 2, v);
      expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
      postEntropyRequest(ring, BUF);
      d.notify(0);
      expect(ring.takeUsed()).toHaveLength(1);
      expect(r.host.dma).toHaveLength(0);
      expect(r.host.intxRaises).toBe(0);
      // With MSI-X disabled the same completion falls back to INTx.
      r.msixEnable(false);
      postEntropyRequest(ring, BUF);
      d.notify(0);
      expect(r.intxLevel()).toBe(true);
    });
  }

  it('legacy vector register with a vector out of range', () => {
    const { r } = liveLegacy();
    r.msixEnable();
    r.ioWrite(L_QUEUE_SEL, 2, 0);
    for (const v of [2, 0xfffe, 0x7ff]) {
      r.ioWrite(L_MSI_QUEUE_VECTOR, 2, v);
      expect(r.io(L_MSI_QUEUE_VECTOR, 2)).toBe(0xffff);
    }
    expect(Array.from(r.proxy.msix!.entryUsed)).toEqual([0, 0]);
  });
});

describe('T-D8 legacy registers on a modern device, and the reverse', () => {
  it('a modern-only device has no I/O BAR: BAR0 is not writable and the ports stay unassigned', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.cfgWrite(0x10, 4, IO_BASE);
    expect(r.cfgRead(0x10, 4)).toBe(0);
    r.mapBars();
    expect(r.host.io.read(IO_BASE + L_QUEUE_NUM, 2)).toBe(0xffff);
    r.host.io.write(IO_BASE + L_QUEUE_PFN, 4, 0x20);
    expect(r.rng.requestq.desc).toBe(0);
  });

  it('a legacy-only device has no modern BAR and no vendor capabilities', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.cfgWrite(0x20, 4, 0xe100_0000);
    expect(r.cfgRead(0x20, 4)).toBe(0);
    expect(r.caps().map((c) => c.id)).toEqual([0x11]);
    r.mapBars();
    expect(r.host.mem.read(0xe100_0000 + C_Q_SIZE, 2)).toBe(0);
  });

  it('transitional: the modern driver has negotiated VERSION_1; the legacy notify still works as QEMU\'s does', () => {
    const { r, ring } = liveModern();
    postEntropyRequest(ring, BUF);
    r.ioWrite(L_QUEUE_NOTIFY, 2, 0);
    expect(ring.takeUsed()).toHaveLength(1);
  });
});

describe('invariant: register accesses never throw into the host, whatever the mode', () => {
  const modes: VirtioPciOptions[] = [{}, { disableLegacy: true }, { disableModern: true }, { vectors: 0 }, { pagePerVq: true }];
  for (const pci of modes) {
    it(JSON.stringify(pci), () => {
      const r = new PciRig({ pci });
      r.mapBars();
      let seed = 12345;
      const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0);
      for (let k = 0; k < 20000; k++) {
        const s = ([1, 2, 4] as Size[])[rand() % 3]!;
        const which = rand() % 4;
        const v = rand();
        const write = (rand() & 1) === 1;
        const go = () => {
          if (which === 0) (write ? r.cfgWrite(rand() % 256, s, v) : r.cfgRead(rand() % 256, s));
          else if (which === 1) (write ? r.ioWrite(rand() % 32, s, v) : r.io(rand() % 32, s));
          else if (which === 2) (write ? r.bar1Write(rand() % 0x1000, s, v) : r.bar1(rand() % 0x1000, s));
          else (write ? r.bar4Write(rand() % 0x4000, s, v) : r.bar4(rand() % 0x4000, s));
        };
        go(); // a throw fails the test
      }
    });
  }
});
