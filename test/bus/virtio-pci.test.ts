// virtio-pci transport (QEMU 7.2 hw/virtio/virtio-pci.c): identities per mode, features,
// complete entropy requests over legacy, modern and transitional with INTx and MSI-X, vector
// assignment, bus mastering, queue reset, the PCI_CFG window, resets and migration hooks.
import { describe, expect, it } from 'vitest';
import { createVirtioPci, VirtIOPCIProxy } from '../../src/bus/virtio-pci.js';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { QEMUFileReader, QEMUFileWriter } from '../../src/migration/qemu-file.js';
import { VIRTIO_F_RING_RESET, VIRTIO_F_VERSION_1 } from '../../src/virtio/constants.js';
import {
  ACK,
  C_CFGGEN,
  C_DF,
  C_DFSELECT,
  C_GF,
  C_GFSELECT,
  C_MSIX,
  C_NUMQ,
  C_Q_ENABLE,
  C_Q_MSIX,
  C_Q_NOFF,
  C_Q_RESET,
  C_Q_SELECT,
  C_Q_SIZE,
  C_STATUS,
  DRIVER,
  FEATURES_OK,
  L_GUEST_FEATURES,
  L_HOST_FEATURES,
  L_ISR,
  L_MSI_CONFIG_VECTOR,
  L_MSI_QUEUE_VECTOR,
  L_QUEUE_NUM,
  L_QUEUE_PFN,
  L_QUEUE_SEL,
  L_STATUS,
  LegacyPciDriver,
  ModernPciDriver,
  msiAddr,
  PciRig,
  postEntropyRequest,
} from '../support/pci-rig.js';

const BUF = 0x40000;

describe('virtio-pci identity per mode (virtio_pci_device_plugged)', () => {
  const cases = [
    { name: 'transitional (default)', pci: {}, id: 0x1005, rev: 0, subsys: 0x0004, bars: [0, 1, 4] },
    { name: 'modern only (disable-legacy=on)', pci: { disableLegacy: true }, id: 0x1044, rev: 1, subsys: 0x1100, bars: [1, 4] },
    { name: 'legacy only (disable-modern=on)', pci: { disableModern: true }, id: 0x1005, rev: 0, subsys: 0x0004, bars: [0, 1] },
    { name: 'transitional, vectors=0', pci: { vectors: 0 }, id: 0x1005, rev: 0, subsys: 0x0004, bars: [0, 4] },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const r = new PciRig({ pci: c.pci });
      expect(r.cfgRead(0, 2)).toBe(0x1af4);
      expect(r.cfgRead(2, 2)).toBe(c.id);
      expect(r.cfgRead(8, 1)).toBe(c.rev);
      expect(r.cfgRead(9, 4) & 0xffffff).toBe(0x00ff00);
      expect(r.cfgRead(0x2c, 2)).toBe(0x1af4);
      expect(r.cfgRead(0x2e, 2)).toBe(c.subsys);
      expect(r.cfgRead(0x3d, 1)).toBe(1);
      expect([0, 1, 2, 3, 4, 5].filter((i) => r.proxy.bar(i))).toEqual(c.bars);
    });
  }

  it('the modern capabilities: COMMON, ISR, DEVICE, NOTIFY in BAR4, PCI_CFG, then MSI-X', () => {
    const r = new PciRig();
    expect(r.caps()).toEqual([
      { id: 0x11, at: 0x98 }, { id: 0x09, at: 0x84 }, { id: 0x09, at: 0x70 },
      { id: 0x09, at: 0x60 }, { id: 0x09, at: 0x50 }, { id: 0x09, at: 0x40 },
    ]);
    expect(r.vendorCap(1)).toEqual({ at: 0x40, cfgType: 1, bar: 4, offset: 0x0000, length: 0x1000 });
    expect(r.vendorCap(3)).toEqual({ at: 0x50, cfgType: 3, bar: 4, offset: 0x1000, length: 0x1000 });
    expect(r.vendorCap(4)).toEqual({ at: 0x60, cfgType: 4, bar: 4, offset: 0x2000, length: 0x1000 });
    expect(r.vendorCap(2)).toEqual({ at: 0x70, cfgType: 2, bar: 4, offset: 0x3000, length: 0x1000, multiplier: 4 });
    expect(r.vendorCap(5)).toEqual({ at: 0x84, cfgType: 5, bar: 0, offset: 0, length: 0 });
    expect(r.proxy.bar(4)).toMatchObject({ type: 'mem64', prefetchable: true, size: 0x4000 });
    expect(r.proxy.bar(0)).toMatchObject({ type: 'io', size: 0x20 });
    expect(r.proxy.bar(1)).toMatchObject({ type: 'mem32', prefetchable: false, size: 0x1000 });
  });

  it('page-per-vq: notify multiplier 0x1000, 4 MiB notify structure, 8 MiB BAR4', () => {
    const r = new PciRig({ pci: { pagePerVq: true } });
    expect(r.vendorCap(2)).toMatchObject({ offset: 0x3000, length: 0x40_0000, multiplier: 0x1000 });
    expect(r.proxy.bar(4)!.size).toBe(0x80_0000);
  });

  it('host errors: neither interface, a modern-only type with legacy on, absurd vectors', () => {
    const mem = GuestMemory.ofSize(1 << 20);
    const rng = () => new VirtIORng({ memory: mem });
    expect(() => createVirtioPci(rng(), { disableLegacy: true, disableModern: true })).toThrow(/neither modern nor legacy/);
    expect(() => createVirtioPci(rng(), { vectors: 65537 })).toThrow(/1-entry MSI-X table/);
    expect(() => createVirtioPci(rng(), { vectors: 2 ** 32 })).toThrow(RangeError);
    expect(() => createVirtioPci(rng(), { vectors: -1 })).toThrow(RangeError);
  });

  it('more than 2048 vectors: QEMU warns and goes on without MSI-X', () => {
    expect(new PciRig({ pci: { vectors: 65536 } }).warnings).toEqual(['unable to init msix vectors to 65536']);
    const r = new PciRig({ pci: { vectors: 2049 } });
    expect(r.warnings).toEqual(['unable to init msix vectors to 2049']);
    expect(r.proxy.nvectors).toBe(0);
    expect(r.proxy.msix).toBeUndefined();
    expect(r.proxy.bar(1)).toBeUndefined();
  });

  it('a device plugged twice is refused', () => {
    const mem = GuestMemory.ofSize(1 << 20);
    const rng = new VirtIORng({ memory: mem });
    createVirtioPci(rng);
    expect(() => createVirtioPci(rng)).toThrow(/already plugged/);
  });
});

describe('virtio-pci features (pre_plugged, legacy and modern views)', () => {
  it('legacy host features show every bit below 32, BAD_FEATURE included (0x79000000)', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    expect(r.io(L_HOST_FEATURES, 4)).toBe(0x7900_0000);
    expect(r.proxy.vdev.hostHasFeature(VIRTIO_F_VERSION_1)).toBe(false);
  });

  it('modern device features hide the legacy ones and add VERSION_1; RING_RESET is offered', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    const f = d.deviceFeatures();
    expect(f).toBe((1n << 28n) | (1n << 29n) | (1n << 32n) | (1n << BigInt(VIRTIO_F_RING_RESET)));
    r.commonWrite(C_DFSELECT, 4, 2);
    expect(r.common(C_DF, 4)).toBe(0);
  });

  it('transitional: both views of the same device', () => {
    const r = new PciRig();
    r.mapBars();
    expect(r.io(L_HOST_FEATURES, 4)).toBe(0x7900_0000);
    r.commonWrite(C_DFSELECT, 4, 1);
    expect(r.common(C_DF, 4)).toBe(0x101);
  });

  it('a legacy driver acking BAD_FEATURE gets no features at all', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    r.ioWrite(L_GUEST_FEATURES, 4, 0x7000_0000);
    expect(r.io(L_GUEST_FEATURES, 4)).toBe(0);
    r.ioWrite(L_GUEST_FEATURES, 4, 0x3000_0000);
    expect(r.io(L_GUEST_FEATURES, 4)).toBe(0x3000_0000);
  });

  it('modern guest features apply on every GF write; a selector past 1 reads 0 and ignores writes', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.commonWrite(C_GFSELECT, 4, 1);
    r.commonWrite(C_GF, 4, 1);
    expect(r.rng.guestFeatures).toBe(1n << 32n);
    r.commonWrite(C_GFSELECT, 4, 2);
    r.commonWrite(C_GF, 4, 0xffff_ffff);
    expect(r.common(C_GF, 4)).toBe(0);
    expect(r.rng.guestFeatures).toBe(1n << 32n);
  });
});

describe('virtio-pci: a complete entropy request', () => {
  it('modern, MSI-X: the queue vector message lands in RAM; ISR bit 0 is also set', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.msixEnable();
    r.msixEntry(0);
    r.msixEntry(1);
    const d = new ModernPciDriver(r);
    d.init();
    r.commonWrite(C_MSIX, 2, 0);
    expect(r.common(C_MSIX, 2)).toBe(0);
    const ring = d.setupQueue(0, 0x10000, 8, 1);
    r.commonWrite(C_Q_SELECT, 2, 0);
    expect(r.common(C_Q_MSIX, 2)).toBe(1);
    d.driverOk();
    postEntropyRequest(ring, BUF, 16);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(r.msiFired(1)).toBe(true);
    expect(r.msiFired(0)).toBe(false);
    expect(r.host.intxRaises).toBe(0);
    expect(r.isrRead()).toBe(1);
    expect(r.mem.read32(BUF) | r.mem.read32(BUF + 4)).not.toBe(0);
  });

  it('modern, INTx (MSI-X off): the line rises with ISR bit 0 and a read of the ISR lowers it', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    postEntropyRequest(ring, BUF, 32);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 32 }]);
    expect(r.intxLevel()).toBe(true);
    expect(r.status() & 0x08).toBe(0x08);
    expect(r.isrRead()).toBe(1);
    expect(r.intxLevel()).toBe(false);
    expect(r.status() & 0x08).toBe(0);
    expect(r.isrRead()).toBe(0);
    expect(r.host.dma).toHaveLength(0);
  });

  it('modern, INTx with INTX_DISABLE: nothing reaches the host, the status bit still shows it', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars(0x407);
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    expect(r.host.intxRaises).toBe(0);
    expect(r.status() & 0x08).toBe(0x08);
  });

  it('legacy, INTx: PFN = address >> 12, ring laid out with 4096 alignment, ISR at 0x13', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    const d = new LegacyPciDriver(r);
    d.init(0);
    const ring = d.setupQueue(0, 0x20000);
    expect(r.io(L_QUEUE_PFN, 4)).toBe(0x20);
    expect(r.rng.requestq.desc).toBe(0x20000);
    expect(r.rng.requestq.used).toBe(0x21000);
    d.driverOk();
    postEntropyRequest(ring, BUF, 8);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 8 }]);
    expect(r.intxLevel()).toBe(true);
    expect(r.io(L_ISR, 1)).toBe(1);
    expect(r.intxLevel()).toBe(false);
  });

  it('legacy, MSI-X: vectors at 0x14/0x16 and device config moves to 0x18 once MSI-X is enabled', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    const d = new LegacyPciDriver(r);
    expect(d.configOffset()).toBe(0x14);
    r.msixEnable();
    expect(d.configOffset()).toBe(0x18);
    r.msixEntry(0);
    r.msixEntry(1);
    d.init(0);
    r.ioWrite(L_MSI_CONFIG_VECTOR, 2, 0);
    expect(r.io(L_MSI_CONFIG_VECTOR, 2)).toBe(0);
    const ring = d.setupQueue(0, 0x20000, 1);
    expect(r.io(L_MSI_QUEUE_VECTOR, 2)).toBe(1);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    expect(r.msiFired(1)).toBe(true);
    expect(r.intxLevel()).toBe(false);
  });

  it('transitional driven by a legacy driver, then reset and driven by a modern one', () => {
    const r = new PciRig();
    r.mapBars();
    const l = new LegacyPciDriver(r);
    l.init(0);
    let ring = l.setupQueue(0, 0x20000);
    l.driverOk();
    postEntropyRequest(ring, BUF);
    l.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    const m = new ModernPciDriver(r);
    m.init();
    expect(r.rng.requestq.desc).toBe(0);
    ring = m.setupQueue(0, 0x10000, 4);
    m.driverOk();
    postEntropyRequest(ring, BUF, 4);
    m.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 4 }]);
  });

  it('page-per-vq: queue 0 is notified at notify + 0, a write at +4 is queue 0 too', () => {
    const r = new PciRig({ pci: { pagePerVq: true, disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    r.bar4Write(0x3004, 2, 0);
    expect(ring.takeUsed()).toHaveLength(1);
    postEntropyRequest(ring, BUF);
    r.bar4Write(0x3000 + 0x1000, 2, 1); // queue 1: absent, ignored
    expect(ring.takeUsed()).toHaveLength(0);
  });
});

describe('virtio-pci MSI-X end to end: masking, PBA, function mask, NO_VECTOR', () => {
  function running(opts = {}) {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 4, ...opts } });
    r.mapBars();
    r.msixEnable();
    for (let v = 0; v < 4; v++) r.msixEntry(v);
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8, 2);
    d.driverOk();
    const request = () => {
      postEntropyRequest(ring, BUF);
      d.notify(0);
      return ring.takeUsed().length;
    };
    return { r, d, ring, request };
  }

  it('a masked vector pends in the PBA and fires when unmasked', () => {
    const { r, request } = running();
    r.msixMask(2, true);
    expect(request()).toBe(1);
    expect(r.msiCount(2)).toBe(0);
    expect(r.pba()).toBe(0b100);
    r.msixMask(2, false);
    expect(r.msiCount(2)).toBe(1);
    expect(r.pba()).toBe(0);
  });

  it('the function mask holds every vector; clearing it delivers the pending ones', () => {
    const { r, request } = running();
    r.msixEnable(true, true);
    expect(request()).toBe(1);
    expect(r.pba()).toBe(0b100);
    r.msixEnable(true, false);
    expect(r.msiCount(2)).toBe(1);
  });

  it('NO_VECTOR: the completion raises nothing at all (no message, no INTx)', () => {
    const { r, request } = running();
    r.commonWrite(C_Q_SELECT, 2, 0);
    r.commonWrite(C_Q_MSIX, 2, 0xffff);
    expect(request()).toBe(1);
    expect(r.host.dma).toHaveLength(0);
    expect(r.host.intxRaises).toBe(0);
    expect(r.pba()).toBe(0);
  });

  it('a vector reassigned away stops its pending bit (msix_vector_unuse)', () => {
    const { r, request } = running();
    r.msixMask(2, true);
    request();
    expect(r.pba()).toBe(0b100);
    r.commonWrite(C_Q_MSIX, 2, 3);
    expect(r.pba()).toBe(0);
    r.msixMask(2, false);
    expect(r.msiCount(2)).toBe(0);
  });

  it('disabling MSI-X falls back to INTx with the ISR', () => {
    const { r, request } = running();
    r.msixEnable(false);
    expect(request()).toBe(1);
    expect(r.msiCount(2)).toBe(0);
    expect(r.intxLevel()).toBe(true);
    r.isrRead();
    expect(r.intxLevel()).toBe(false);
  });

  it('bus mastering off after set-up: the device is disabled and DRIVER_OK cleared; no MSI goes out', () => {
    const { r, ring, d } = running();
    r.cfgWrite(0x04, 2, 0x0003);
    expect(r.rng.disabled).toBe(true);
    expect(r.common(C_STATUS, 1)).toBe(ACK | DRIVER | FEATURES_OK);
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(0);
    expect(r.host.dma).toHaveLength(0);
    r.cfgWrite(0x04, 2, 0x0007);
    expect(r.rng.disabled).toBe(false);
    d.driverOk();
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    expect(r.msiCount(2)).toBe(1);
  });
});

describe('virtio-pci vectors (VIRTIO_MSI_*_VECTOR, common msix_config / queue_msix_vector)', () => {
  it('modern: a vector at or above nvectors reads back NO_VECTOR; in range reads back', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    for (const [v, want] of [[0, 0], [1, 1], [2, 0xffff], [0x7ff, 0xffff], [0xfffe, 0xffff], [0xffff, 0xffff]] as const) {
      r.commonWrite(C_MSIX, 2, v);
      expect(r.common(C_MSIX, 2), `config ${v}`).toBe(want);
      r.commonWrite(C_Q_MSIX, 2, v);
      expect(r.common(C_Q_MSIX, 2), `queue ${v}`).toBe(want);
    }
  });

  it('vectors=0: every vector is refused', () => {
    const r = new PciRig({ pci: { disableLegacy: true, vectors: 0 } });
    r.mapBars();
    r.commonWrite(C_MSIX, 2, 0);
    r.commonWrite(C_Q_MSIX, 2, 0);
    expect(r.common(C_MSIX, 2)).toBe(0xffff);
    expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
  });

  it('legacy: the vector registers exist only while MSI-X is enabled (device config otherwise)', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    r.ioWrite(L_MSI_CONFIG_VECTOR, 2, 0);
    expect(r.io(L_MSI_CONFIG_VECTOR, 2)).toBe(0xffff);
    expect(r.rng.configVector).toBe(0xffff);
    r.msixEnable();
    for (const [v, want] of [[1, 1], [2, 0xffff], [0xffff, 0xffff], [0, 0]] as const) {
      r.ioWrite(L_MSI_CONFIG_VECTOR, 2, v);
      expect(r.io(L_MSI_CONFIG_VECTOR, 2)).toBe(want);
      r.ioWrite(L_MSI_QUEUE_VECTOR, 2, v);
      expect(r.io(L_MSI_QUEUE_VECTOR, 2)).toBe(want);
    }
  });

  it('a queue the device lacks keeps a vector, as QEMU keeps one for all 1024 queues', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.commonWrite(C_Q_SELECT, 2, 5);
    expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
    r.commonWrite(C_Q_MSIX, 2, 1);
    expect(r.common(C_Q_MSIX, 2)).toBe(1);
    expect(r.proxy.msix!.entryUsed[1]).toBe(1);
    r.commonWrite(C_STATUS, 1, 0);
    r.commonWrite(C_Q_SELECT, 2, 5);
    expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
    expect(r.proxy.msix!.entryUsed[1]).toBe(0);
  });

  it('the configuration-change vector: DEVICE_NEEDS_RESET raises the config vector', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.msixEnable();
    r.msixEntry(0);
    const d = new ModernPciDriver(r);
    d.init();
    r.commonWrite(C_MSIX, 2, 0);
    d.setupQueue(0, 0x10000, 8, 1);
    d.driverOk();
    r.rng.virtioError('test');
    expect(r.common(C_STATUS, 1) & 0x40).toBe(0x40);
    expect(r.msiFired(0)).toBe(true);
    expect(r.common(C_CFGGEN, 1)).toBe(1);
  });
});

describe('virtio-pci bus mastering and DMA', () => {
  it('bus mastering gates MSI-X, not ring DMA: after the driver\'s reset the device runs with MASTER off (QEMU 7.2)', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars(0x3);
    expect(r.rng.disabled).toBe(true); // the command write without MASTER
    r.msixEnable();
    r.msixEntry(1);
    const d = new ModernPciDriver(r);
    d.init(); // its status-0 reset clears the disabled flag
    expect(r.rng.disabled).toBe(false);
    const ring = d.setupQueue(0, 0x10000, 8, 1);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(r.host.dma).toHaveLength(0); // the message went to a disabled bus-master space
    expect(r.pba()).toBe(0);
    r.cfgWrite(0x04, 2, 0x7);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    expect(r.msiCount(1)).toBe(1);
  });

  it('legacy: writing ACKNOWLEDGE|DRIVER turns bus mastering on for old Linux drivers', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars(0x3);
    // The command write without MASTER disabled the device; the driver's reset clears that.
    expect(r.rng.disabled).toBe(true);
    r.ioWrite(L_STATUS, 1, 0);
    expect(r.rng.disabled).toBe(false);
    r.ioWrite(L_STATUS, 1, ACK);
    expect(r.command() & 4).toBe(0);
    r.ioWrite(L_STATUS, 1, ACK | DRIVER);
    expect(r.command() & 4).toBe(4);
    expect(r.proxy.busMasterEnabled).toBe(true);
    const d = new LegacyPciDriver(r);
    const ring = d.setupQueue(0, 0x20000);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
  });

  it('legacy: the automatic bus mastering does not clear the disabled flag (QEMU 7.2 quirk)', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars(0x3);
    r.ioWrite(L_STATUS, 1, ACK | DRIVER);
    expect(r.proxy.busMasterEnabled).toBe(true);
    expect(r.rng.disabled).toBe(true);
    const d = new LegacyPciDriver(r);
    const ring = d.setupQueue(0, 0x20000);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(0);
  });

  it('a status-0 reset while bus mastering is off re-enables the device (virtio_reset clears disabled)', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars(0x3);
    expect(r.rng.disabled).toBe(true);
    r.commonWrite(C_STATUS, 1, 0);
    expect(r.rng.disabled).toBe(false);
    expect(r.proxy.busMasterEnabled).toBe(false);
  });
});

describe('virtio-pci queue registers', () => {
  it('queue_size: a power of two up to 1024 is taken; 0 and > 1024 are refused (read back the old size)', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.commonWrite(C_Q_SELECT, 2, 0);
    expect(r.common(C_Q_SIZE, 2)).toBe(8);
    for (const [v, want] of [[4, 4], [0, 4], [1025, 4], [0xffff, 4], [1024, 1024], [16, 16]] as const) {
      r.commonWrite(C_Q_SIZE, 2, v);
      expect(r.common(C_Q_SIZE, 2), `size ${v}`).toBe(want);
    }
    expect(r.common(C_NUMQ, 2)).toBe(1);
    expect(r.common(C_Q_NOFF, 2)).toBe(0);
  });

  it('queue_enable = 0 is a driver error (QEMU: virtio_error, NEEDS_RESET)', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    r.commonWrite(C_Q_ENABLE, 2, 0);
    expect(r.rng.broken).toBe(true);
    expect(r.common(C_STATUS, 1) & 0x40).toBe(0x40);
    expect(r.errors).toEqual(['wrong value for queue_enable 0']);
  });

  it('queue_reset (VIRTIO_F_RING_RESET): the queue returns to its defaults and can be set up again', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.msixEnable();
    r.msixEntry(1);
    const d = new ModernPciDriver(r);
    d.init(1n << BigInt(VIRTIO_F_RING_RESET));
    let ring = d.setupQueue(0, 0x10000, 4, 1);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
    r.commonWrite(C_Q_SELECT, 2, 0);
    r.commonWrite(C_Q_RESET, 2, 1);
    expect(r.common(C_Q_RESET, 2)).toBe(0);
    expect(r.common(C_Q_ENABLE, 2)).toBe(0);
    expect(r.common(C_Q_SIZE, 2)).toBe(8);
    expect(r.common(C_Q_MSIX, 2)).toBe(0xffff);
    expect(r.rng.requestq.desc).toBe(0);
    expect(r.rng.requestq.usedIdx).toBe(0);
    ring = d.setupQueue(0, 0x30000, 8, 1);
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: 0, len: 16 }]);
    expect(r.msiCount(1)).toBe(2);
  });

  it('queue_size written on a live queue does not change its geometry until it is enabled again', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    r.commonWrite(C_Q_SIZE, 2, 2);
    expect(r.rng.requestq.num).toBe(8);
    expect(r.rng.requestq.isMapped).toBe(true);
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(ring.takeUsed()).toHaveLength(1);
  });
});

describe('virtio-pci PCI_CFG access window (VIRTIO 1.2 §4.1.4.9)', () => {
  function rig() {
    const r = new PciRig();
    r.mapBars();
    const cap = r.vendorCap(5)!.at;
    const win = (bar: number, off: number, len: number) => {
      r.cfgWrite(cap + 4, 1, bar);
      r.cfgWrite(cap + 8, 4, off);
      r.cfgWrite(cap + 12, 4, len);
    };
    return { r, cap, data: cap + 16, win };
  }

  it('reads and writes the common configuration through configuration space', () => {
    const { r, data, win } = rig();
    win(4, 0x12, 2);
    expect(r.cfgRead(data, 4)).toBe(1); // num_queues
    win(4, 0x14, 1);
    r.cfgWrite(data, 1, ACK);
    expect(r.common(C_STATUS, 1)).toBe(ACK);
    expect(r.cfgRead(data, 1)).toBe(ACK);
  });

  it('kicks a queue through the window', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8);
    d.driverOk();
    const cap = r.vendorCap(5)!.at;
    postEntropyRequest(ring, BUF);
    r.cfgWrite(cap + 8, 4, 0x3000);
    r.cfgWrite(cap + 12, 4, 2);
    r.cfgWrite(cap + 16, 2, 0);
    expect(ring.takeUsed()).toHaveLength(1);
  });

  it('a bad length, an offset outside the structures, or a misaligned offset: QEMU 7.2 behaviour', () => {
    const { r, data, win } = rig();
    r.cfgWrite(data, 4, 0xdead_beef);
    win(4, 0x12, 3);
    expect(r.cfgRead(data, 4)).toBe(0xdead_beef); // no access
    win(4, 0x5000, 4);
    expect(r.cfgRead(data, 4)).toBe(0xdead_beef);
    win(4, 0xffff_fffe, 4);
    expect(r.cfgRead(data, 4)).toBe(0xdead_beef);
    win(4, 0x13, 2); // aligned down to 0x12
    expect(r.cfgRead(data, 4)).toBe(0xdead_0001);
    win(7, 0x12, 2); // the bar field is not checked in 7.2
    expect(r.cfgRead(data, 4)).toBe(0xdead_0001);
    win(4, 0x1000, 1); // ISR: the read clears it
    r.rng.isr = 3;
    expect(r.cfgRead(data, 1)).toBe(3);
    expect(r.rng.isr).toBe(0);
  });

  it('a modern-only device has the window; a legacy-only one has none', () => {
    expect(new PciRig({ pci: { disableLegacy: true } }).vendorCap(5)).toBeDefined();
    expect(new PciRig({ pci: { disableModern: true } }).vendorCap(5)).toBeUndefined();
  });
});

describe('virtio-pci resets', () => {
  it('status 0 resets the device and the modern queue registers, not the feature selectors', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    const d = new ModernPciDriver(r);
    d.init();
    d.setupQueue(0, 0x10000, 4, 1);
    r.commonWrite(C_DFSELECT, 4, 1);
    r.commonWrite(C_GFSELECT, 4, 1);
    r.commonWrite(C_STATUS, 1, 0);
    expect(r.common(C_STATUS, 1)).toBe(0);
    expect(r.common(C_Q_ENABLE, 2)).toBe(0);
    expect(r.common(C_Q_SIZE, 2)).toBe(8);
    expect(r.proxy.queueState(0)).toEqual({ num: 0, enabled: false, reset: 0, desc: [0, 0], avail: [0, 0], used: [0, 0] });
    expect(r.common(C_DFSELECT, 4)).toBe(1);
    expect(r.common(C_GFSELECT, 4)).toBe(1);
    expect(r.common(C_GF, 4)).toBe(1);
  });

  it('legacy PFN 0 resets the device', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    const d = new LegacyPciDriver(r);
    d.init(0);
    d.setupQueue(0, 0x20000);
    d.driverOk();
    r.ioWrite(L_QUEUE_PFN, 4, 0);
    expect(r.io(L_STATUS, 1)).toBe(0);
    expect(r.rng.requestq.desc).toBe(0);
  });

  it('machine reset: configuration space back to power-on, device reset, MSI-X off', () => {
    const r = new PciRig();
    const powerOn = Array.from({ length: 64 }, (_, i) => r.cfgRead(4 * i, 4));
    r.mapBars();
    r.msixEnable();
    r.msixEntry(0);
    const d = new ModernPciDriver(r);
    d.init();
    d.setupQueue(0, 0x10000, 8, 0);
    d.driverOk();
    r.cfgWrite(0x3c, 1, 11);
    r.proxy.reset();
    expect(Array.from({ length: 64 }, (_, i) => r.cfgRead(4 * i, 4))).toEqual(powerOn);
    expect(r.rng.status).toBe(0);
    expect(r.rng.requestq.desc).toBe(0);
    expect(r.proxy.msix!.enabled()).toBe(false);
    expect(r.host.mapped(r.proxy)).toHaveLength(0);
  });
});

describe('virtio-pci migration hooks (virtio_pci_save_config / load_config / save_queue / load_queue)', () => {
  function configured() {
    const r = new PciRig();
    r.mapBars();
    r.msixEnable();
    r.msixEntry(0);
    r.msixEntry(1, true);
    const d = new ModernPciDriver(r);
    d.init();
    r.commonWrite(C_MSIX, 2, 1);
    d.setupQueue(0, 0x10000, 8, 0);
    d.driverOk();
    return r;
  }

  it('saveConfig: be32 2, 256 config bytes (interrupt bit clear), 4 × be32 irq_state, table, PBA, be16 config vector', () => {
    const r = configured();
    r.proxy.setIrq(true); // (as INTx would; MSI-X is on, so only the state matters here)
    const f = new QEMUFileWriter();
    r.proxy.saveConfig(f);
    const b = f.bytes();
    expect(b.length).toBe(4 + 256 + 16 + 2 * 16 + 1 + 2);
    const v = new DataView(b.buffer);
    expect(v.getUint32(0)).toBe(2);
    expect(b[4 + 6]! & 0x08).toBe(0);
    expect(b.subarray(4, 4 + 256)).toEqual(r.proxy.savedConfig());
    expect([0, 1, 2, 3].map((i) => v.getUint32(260 + 4 * i))).toEqual([1, 0, 0, 0]);
    expect(v.getUint32(276 + 8, true)).toBe(0x1234_5670); // entry 0 data, raw little-endian
    expect(v.getUint16(b.length - 2)).toBe(1);
    const q = new QEMUFileWriter();
    r.proxy.saveQueue(0, q);
    expect(Array.from(q.bytes())).toEqual([0, 0]);
  });

  it('load into a fresh proxy: same config, table, vectors; BARs decode again', () => {
    const a = configured();
    const f = new QEMUFileWriter();
    a.proxy.saveConfig(f);
    a.proxy.saveQueue(0, f);
    const b = new PciRig();
    const rd = new QEMUFileReader(f.bytes());
    const apply = b.proxy.loadConfig(rd);
    const applyQ = b.proxy.loadQueue(0, rd);
    expect(rd.remaining).toBe(0);
    expect(b.proxy.activeBars()).toHaveLength(0);
    apply();
    applyQ();
    expect(b.proxy.config).toEqual(a.proxy.config);
    expect(b.proxy.activeBars().map((x) => x.addr)).toEqual(a.proxy.activeBars().map((x) => x.addr));
    expect(b.rng.configVector).toBe(1);
    expect(b.rng.requestq.vector).toBe(0);
    expect(Array.from(b.proxy.msix!.entryUsed)).toEqual([1, 1]);
    expect(b.proxy.busMasterEnabled).toBe(true);
  });

  it('load refuses what QEMU refuses, without changing anything', () => {
    const a = configured();
    const f = new QEMUFileWriter();
    a.proxy.saveConfig(f);
    const good = f.bytes();
    const b = new PciRig();
    const before = b.proxy.config.slice();
    const bad = (mut: (x: Uint8Array) => void, re: RegExp) => {
      const x = good.slice();
      mut(x);
      expect(() => b.proxy.loadConfig(new QEMUFileReader(x))).toThrow(re);
      expect(b.proxy.config).toEqual(before);
    };
    bad((x) => void (x[3] = 3), /Invalid value 3/);
    bad((x) => void (x[4 + 2] = 0x44), /Bad config data: i=0x2/);
    bad((x) => void (x[4 + 256 + 3] = 2), /irq state 2/);
    bad((x) => new DataView(x.buffer).setUint16(x.length - 2, 2), /vector 2/);
    expect(() => b.proxy.loadConfig(new QEMUFileReader(good.subarray(0, 100)))).toThrow(/PCIDevice config/);
    const q = new QEMUFileWriter();
    q.putBe16(5);
    expect(() => b.proxy.loadQueue(0, new QEMUFileReader(q.bytes()))).toThrow(/vector 5/);
  });

  it('without MSI-X no vectors are saved, and loading sets NO_VECTOR', () => {
    const r = new PciRig({ pci: { vectors: 0 } });
    const f = new QEMUFileWriter();
    r.proxy.saveConfig(f);
    r.proxy.saveQueue(0, f);
    expect(f.bytes().length).toBe(4 + 256 + 16);
    const rd = new QEMUFileReader(f.bytes());
    r.proxy.loadConfig(rd)();
    r.proxy.loadQueue(0, rd)();
    expect(r.rng.requestq.vector).toBe(0xffff);
  });
});

describe('virtio-pci: the proxy is a VirtioBus and a PciFunction', () => {
  it('exposes its name and the transport flags', () => {
    const r = new PciRig();
    expect(r.proxy).toBeInstanceOf(VirtIOPCIProxy);
    expect(r.proxy.name).toBe('virtio-rng-pci');
    expect(r.proxy.hasVariableVringAlignment).toBe(false);
    expect(r.rng.bus).toBe(r.proxy);
    expect(new PciRig({ pci: { name: 'rng0' } }).proxy.name).toBe('rng0');
  });

  it('the queue size register of a legacy device is read-only', () => {
    const r = new PciRig({ pci: { disableModern: true } });
    r.mapBars();
    r.ioWrite(L_QUEUE_NUM, 2, 4);
    expect(r.io(L_QUEUE_NUM, 2)).toBe(8);
    r.ioWrite(L_QUEUE_SEL, 2, 3);
    expect(r.io(L_QUEUE_NUM, 2)).toBe(0);
  });

  it('MSI messages land where the driver programmed them', () => {
    const r = new PciRig({ pci: { disableLegacy: true } });
    r.mapBars();
    r.msixEnable();
    r.msixEntry(1);
    const d = new ModernPciDriver(r);
    d.init();
    const ring = d.setupQueue(0, 0x10000, 8, 1);
    d.driverOk();
    postEntropyRequest(ring, BUF);
    d.notify(0);
    expect(r.host.dma.map((x) => x.addr)).toEqual([msiAddr(1)]);
  });
});

describe('virtio-pci addr property (QEMU set_pci_devfn syntax)', () => {
  it('parses slot[.fn] in hex, and devfn numbers', async () => {
    const { parsePciAddr } = await import('../../src/bus/virtio-pci.js');
    expect(parsePciAddr('02.0')).toBe(0x10);
    expect(parsePciAddr('2')).toBe(0x10);
    expect(parsePciAddr('1f.7')).toBe(0xff);
    expect(parsePciAddr('0x3.0x2')).toBe(0x1a);
    expect(parsePciAddr(17)).toBe(17);
    for (const bad of ['20', '2.8', 'x', '2.', '', '02.0 ', 256, -1]) expect(() => parsePciAddr(bad as string | number), String(bad)).toThrow(/doesn't take value/);
    expect(new PciRig({ pci: { addr: '04.0' } }).proxy.requestedDevfn).toBe(0x20);
    expect(new PciRig().proxy.requestedDevfn).toBeUndefined();
  });
});

describe('virtio-pci with another device type', () => {
  it('a device without a legacy interface is modern only whatever disable-legacy says (auto)', () => {
    // Build a minimal input-like device: device id 18 (VIRTIO_ID_INPUT).
    const mem = GuestMemory.ofSize(1 << 20);
    const rng = new VirtIORng({ memory: mem, entropy: deterministicEntropy(1) });
    Object.defineProperty(rng, 'deviceId', { value: 18 });
    const p = createVirtioPci(rng);
    expect(p.legacy).toBe(false);
    expect(p.configRead(2, 2)).toBe(0x1052);
    expect(p.configRead(0x0a, 2)).toBe(0x0980);
    const rng2 = new VirtIORng({ memory: mem });
    Object.defineProperty(rng2, 'deviceId', { value: 18 });
    expect(() => createVirtioPci(rng2, { disableLegacy: false })).toThrow(/modern-only/);
  });
});
