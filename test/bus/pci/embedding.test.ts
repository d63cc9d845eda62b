// What a foreign emulator needs from our PCI functions (issue 10): byte lanes for hosts that
// split multi-byte MMIO accesses, a config read without side effects, BAR map/unmap lists and
// the PIIX INTx formula. Each checked against the register values a whole access gives.
import { describe, expect, it } from 'vitest';
import { BarMapTracker, diffBars } from '../../../src/bus/pci/bar-map.js';
import type { PciActiveBar } from '../../../src/bus/pci/pci-bus.js';
import { piixIntxIrq, piixPirq, piixRouteIrq } from '../../../src/bus/pci/piix.js';
import { piix3SlotGetPirq } from '../../../src/machine/pci-host.js';
import { SplitRingDriver } from '../../../src/driver/split-ring.js';
import {
  C_DFSELECT,
  C_DF,
  C_NUMQ,
  C_Q_DESCLO,
  C_Q_ENABLE,
  C_Q_SELECT,
  C_Q_SIZE,
  C_STATUS,
  ModernPciDriver,
  PciRig,
  postEntropyRequest,
  type Size,
} from '../../support/pci-rig.js';

const BUF = 0x40000;

/** Read `size` bytes of the common configuration one byte at a time, as v86's wasm does. */
function splitRead(r: PciRig, off: number, size: Size): number {
  let v = 0;
  for (let i = 0; i < size; i++) v += r.common(off + i, 1) * 2 ** (8 * i);
  return v;
}

describe('virtio-pci byte lanes (opt-in)', () => {
  it('without the option a byte read of the high half of queue_size reads 0 (as QEMU)', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0 }, rng: { queueSize: 256 } });
    r.mapBars();
    r.commonWrite(C_Q_SELECT, 2, 0);
    expect(r.common(C_Q_SIZE, 2)).toBe(256);
    expect(r.common(C_Q_SIZE + 1, 1)).toBe(0);
    expect(r.common(C_Q_SIZE, 1)).toBe(0);
  });

  it('every field of the common configuration reads the same split into bytes as whole', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0, byteLanes: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    d.setupQueue(0, 0x10000, 8);
    const fields: [number, Size][] = [
      [0, 4], [4, 4], [8, 4], [12, 4], [16, 2], [18, 2], [20, 1], [21, 1], [22, 2], [24, 2], [26, 2], [28, 2], [30, 2],
      [32, 4], [36, 4], [40, 4], [44, 4], [48, 4], [52, 4], [58, 2],
    ];
    for (const [off, size] of fields) {
      const whole = r.common(off, size);
      expect(splitRead(r, off, size), `field at ${off}`).toBe(whole);
    }
    // Some must be non-zero for the comparison to mean anything.
    expect(r.common(C_Q_DESCLO, 4)).toBe(0x10000);
    expect(r.common(C_NUMQ, 2)).toBe(1);
    // A 16-bit read of the high half of a 32-bit field, and a read spanning two fields.
    r.commonWrite(C_DFSELECT, 4, 1);
    const hi = r.common(C_DF, 4);
    expect(r.common(C_DF + 2, 2)).toBe(hi >>> 16);
    expect(r.common(C_STATUS, 2)).toBe(r.common(C_STATUS, 1) | (r.common(C_STATUS + 1, 1) << 8));
    // Outside every field: 0.
    expect(r.common(56, 2)).toBe(0);
    expect(r.common(0x800, 4)).toBe(0);
  });

  it('queue_size 256 reads back through split reads, and a split write sets it once, whole', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0, byteLanes: true }, rng: { queueSize: 256 } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    r.commonWrite(C_Q_SELECT, 2, 0);
    expect(splitRead(r, C_Q_SIZE, 2)).toBe(256);
    r.commonWrite(C_Q_SIZE, 2, 128);
    expect(splitRead(r, C_Q_SIZE, 2)).toBe(128);
    // A 16-bit write split low byte first: 0x0100 → size 256.
    r.commonWrite(C_Q_SIZE, 1, 0x00);
    r.commonWrite(C_Q_SIZE + 1, 1, 0x01);
    expect(r.common(C_Q_SIZE, 2)).toBe(256);
    expect(r.rng.vq[0]!.num).toBe(256);
  });

  it('a split queue_enable write enables the queue once, and the queue then works', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0, byteLanes: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    let enables = 0;
    const orig = r.rng.queueEnable.bind(r.rng);
    r.rng.queueEnable = (n: number) => {
      enables++;
      orig(n);
    };
    // The queue as setupQueue programs it, but queue_enable written as two bytes.
    r.commonWrite(C_Q_SELECT, 2, 0);
    r.commonWrite(C_Q_SIZE, 2, 8);
    r.commonWrite(C_Q_DESCLO, 4, 0x10000);
    r.commonWrite(C_Q_DESCLO + 8, 4, 0x11000);
    r.commonWrite(C_Q_DESCLO + 16, 4, 0x12000);
    r.commonWrite(C_Q_ENABLE, 1, 1);
    expect(enables).toBe(0); // gathering: the top byte has not arrived
    r.commonWrite(C_Q_ENABLE + 1, 1, 0);
    expect(enables).toBe(1);
    expect(r.common(C_Q_ENABLE, 2)).toBe(1);
    const ring = new SplitRingDriver({ memory: r.mem, num: 8, addrs: { desc: 0x10000, avail: 0x11000, used: 0x12000 } });
    d.driverOk();
    postEntropyRequest(ring, BUF);
    r.notifyModern(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 16 }]);
  });

  it('a lone byte write to the low half of a 16-bit field is not applied (as QEMU ignores it)', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0, byteLanes: true } });
    r.mapBars();
    r.commonWrite(C_Q_SELECT, 1, 0);
    expect(r.common(C_Q_SELECT, 2)).toBe(0);
    r.commonWrite(C_Q_SELECT, 2, 0); // a whole write afterwards is applied normally
    expect(r.common(C_Q_SELECT, 2)).toBe(0);
  });

  it('hostile lanes never throw: every offset and size in the common structure', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0, byteLanes: true } });
    r.mapBars();
    for (let off = 0; off < 72; off++) {
      for (const size of [1, 2, 4] as const) {
        expect(() => r.common(off, size)).not.toThrow();
        expect(() => r.commonWrite(off, size, 0xffff_ffff)).not.toThrow();
      }
    }
  });
});

describe('configPeek: a config read without side effects', () => {
  it('peeking pci_cfg_data does not run the window (the ISR is not cleared); a read does', () => {
    const r = new PciRig();
    r.mapBars();
    const cap = r.vendorCap(5)!.at;
    r.cfgWrite(cap + 8, 4, 0x1000); // the ISR
    r.cfgWrite(cap + 12, 4, 1);
    r.rng.isr = 3;
    expect(r.proxy.configPeek(cap + 16, 4)).toBe(0);
    expect(r.rng.isr).toBe(3);
    expect(r.cfgRead(cap + 16, 1)).toBe(3);
    expect(r.rng.isr).toBe(0);
    // The peek now shows what the read left in the window.
    expect(r.proxy.configPeek(cap + 16, 1)).toBe(3);
  });

  it('equals configRead wherever a read has no side effect', () => {
    const r = new PciRig();
    r.mapBars();
    const cap = r.vendorCap(5)!.at;
    for (let off = 0; off < 256; off += 4) {
      if (off === cap + 16) continue;
      expect(r.proxy.configPeek(off, 4)).toBe(r.cfgRead(off, 4));
    }
    expect(r.proxy.configPeek(0xfe, 4)).toBe(0xffff_ffff);
    expect(r.proxy.configPeek(-1, 1)).toBe(0xff);
  });
});

describe('BAR map/unmap lists', () => {
  const h = { read: () => 0, write: () => undefined };
  const bar = (index: number, addr: number, size = 0x100, type: PciActiveBar['type'] = 'mem32'): PciActiveBar => ({ index, type, prefetchable: false, addr, size, handler: h });

  it('diffBars: unchanged windows are neither unmapped nor mapped; a move is an unmap and a map', () => {
    const a = [bar(0, 0xc000, 64, 'io'), bar(4, 0xe000_0000)];
    const b = [bar(0, 0xc000, 64, 'io'), bar(4, 0xe010_0000)];
    const d = diffBars(a, b);
    expect(d.unmap.map((x) => x.addr)).toEqual([0xe000_0000]);
    expect(d.map.map((x) => x.addr)).toEqual([0xe010_0000]);
    expect(diffBars(a, a)).toEqual({ unmap: [], map: [] });
    expect(diffBars(a, []).unmap).toHaveLength(2);
  });

  it('BarMapTracker follows what SeaBIOS does to a transitional function: size, program, enable, disable', () => {
    const r = new PciRig({ pci: { vectors: 0 } });
    const t = new BarMapTracker(r.proxy);
    expect(t.update()).toEqual({ unmap: [], map: [] });
    r.cfgWrite(0x10, 4, 0xffff_ffff); // sizing
    r.cfgWrite(0x10, 4, 0xc000);
    r.cfgWrite(0x20, 4, 0xe000_0000);
    r.cfgWrite(0x24, 4, 0);
    expect(t.update()).toEqual({ unmap: [], map: [] }); // nothing decodes until the command register says so
    r.cfgWrite(0x04, 2, 0x3);
    const on = t.update();
    expect(on.map.map((b) => [b.index, b.type, b.addr])).toEqual([[0, 'io', 0xc000], [4, 'mem64', 0xe000_0000]]);
    expect(t.mapped).toHaveLength(2);
    r.cfgWrite(0x20, 4, 0xe100_0000); // moved while decoding
    const moved = t.update();
    expect(moved.unmap.map((b) => b.addr)).toEqual([0xe000_0000]);
    expect(moved.map.map((b) => b.addr)).toEqual([0xe100_0000]);
    r.cfgWrite(0x04, 2, 0x1); // memory decoding off
    expect(t.update().unmap.map((b) => b.index)).toEqual([4]);
    expect(t.clear().map((b) => b.index)).toEqual([0]);
    expect(t.mapped).toEqual([]);
  });
});

describe('PIIX INTx routing', () => {
  it('the PIRQ formula agrees with the reference machine for every slot and pin', () => {
    for (let slot = 0; slot < 32; slot++) {
      for (let pin = 1; pin <= 4; pin++) expect(piixPirq(slot, pin)).toBe(piix3SlotGetPirq(slot << 3, pin - 1));
    }
    expect(piixPirq(13, 1)).toBe(0); // v86's free slot 13, INTA# → PIRQA#
    expect(piixPirq(14, 1)).toBe(1);
  });

  it('route registers: IRQs 3–7, 9–12, 14, 15 route; the disable bit and reserved values do not', () => {
    const ok = [3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15];
    for (let v = 0; v < 256; v++) {
      const want = v & 0x80 || !ok.includes(v & 0xf) ? -1 : v & 0xf;
      expect(piixRouteIrq(v)).toBe(want);
    }
    const bridge = new Uint8Array(256);
    bridge.set([10, 11, 0x80, 5], 0x60);
    expect(piixIntxIrq(bridge, 13, 1)).toBe(10);
    expect(piixIntxIrq(bridge, 14, 1)).toBe(11);
    expect(piixIntxIrq(bridge, 15, 1)).toBe(-1);
    expect(piixIntxIrq(bridge, 13, 4)).toBe(5);
    expect(piixIntxIrq(bridge, 13, 0)).toBe(-1);
    expect(piixIntxIrq(bridge, 13, 5)).toBe(-1);
    expect(piixIntxIrq([], 13, 1)).toBe(-1);
  });
});
