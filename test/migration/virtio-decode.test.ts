// The blob decoder (used by `virtio-ts inspect`) reads back what virtio_save wrote: every
// value equal to the device's, offsets that point at the bytes, and device parts it does not
// know walked over by their subsection headers.
import { describe, expect, it } from 'vitest';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { saveVirtioDevice } from '../../src/migration/virtio.js';
import { decodeOptionsFor, decodeVirtioBlob, leafFields, type DecodedField } from '../../src/migration/virtio-decode.js';
import { bit, VIRTIO_RING_F_EVENT_IDX } from '../../src/virtio/constants.js';
import { modernAddrs, rngRig } from '../support/harness.js';
import { blkRig, HeldBackend, post } from '../support/blk.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT } from '../../src/devices/blk/constants.js';
import { ModernPciDriver, PciRig, postEntropyRequest } from '../support/pci-rig.js';

function flat(fields: DecodedField[]): DecodedField[] {
  return fields.flatMap((f) => [f, ...flat(f.children ?? [])]);
}

describe('decodeVirtioBlob', () => {
  it('mmio v2: values and offsets match the device and the bytes', () => {
    const rig = rngRig({ legacy: false });
    rig.drv.init(bit(VIRTIO_RING_F_EVENT_IDX));
    const ring = rig.drv.setupQueue(0, { num: 8, addrs: modernAddrs(0x10000, 8) });
    rig.drv.driverOk();
    ring.add([{ addr: 0x40000, len: 8, write: true }]);
    rig.drv.notify(0);
    const blob = saveVirtioDevice(rig.rng);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', emptyDeviceState: true }, 1000);
    expect([d.status, d.isr, d.queueSel]).toEqual([rig.rng.status, rig.rng.isr, 0]);
    expect(d.guestFeatures).toBe(rig.rng.guestFeatures);
    expect(d.queues).toEqual([{ index: 0, num: 8, align: 4096, desc: 0x10000n, lastAvailIdx: 1 }]);
    expect(d.rings).toEqual([{ index: 0, avail: BigInt(modernAddrs(0x10000, 8).avail), used: BigInt(modernAddrs(0x10000, 8).used) }]);
    expect(d.subsections.map((s) => s.name)).toEqual(['virtio/64bit_features', 'virtio/virtqueues', 'virtio/extra_state', 'virtio_mmio/state', 'virtio/started']);
    expect(d.started).toBe(true);
    // Offsets are stream offsets (base 1000) and point at the value's bytes.
    for (const f of flat(d.fields)) {
      if (typeof f.value !== 'number' || f.children) continue;
      const at = f.offset - 1000;
      const v = new DataView(blob.buffer, blob.byteOffset + at, f.size);
      const got = f.size === 1 ? v.getUint8(0) : f.size === 2 ? v.getUint16(0) : v.getUint32(0);
      expect([f.name, got]).toEqual([f.name, f.value]);
    }
    for (const s of d.subsections) expect(blob[s.offset - 1000]).toBe(5);
  });

  it('pci with MSI-X: the vector count comes from the saved capability; vectors per queue', () => {
    const rig = new PciRig({ pci: { vectors: 3 } });
    rig.mapBars();
    rig.msixEnable();
    const drv = new ModernPciDriver(rig);
    drv.init();
    const ring = drv.setupQueue(0, 0x10000, 8, 2);
    drv.driverOk();
    postEntropyRequest(ring, 0x40000);
    const blob = saveVirtioDevice(rig.rng);
    const d = decodeVirtioBlob(blob, { transport: 'pci' });
    expect(d.queues[0]!.vector).toBe(2);
    const table = flat(d.fields).find((f) => f.name === 'table')!;
    expect(table.size).toBe(48);
    expect(d.deviceState).toBeUndefined(); // found the subsections right after the queues
  });

  it('allEntries: every byte of the blob in exactly one leaf; MSI-X entries and configuration dwords as the guest sees them', () => {
    const rig = new PciRig({ pci: { vectors: 3 } });
    rig.mapBars();
    rig.msixEnable();
    rig.msixEntry(2);
    const drv = new ModernPciDriver(rig);
    drv.init();
    drv.setupQueue(0, 0x10000, 8, 2);
    drv.driverOk();
    const blob = saveVirtioDevice(rig.rng);
    const opts = { transport: 'pci' as const, emptyDeviceState: true };
    const full = leafFields(decodeVirtioBlob(blob, { ...opts, allEntries: true }, 700).fields);
    let at = 700;
    for (const l of full) {
      expect([l.path, l.offset]).toEqual([l.path, at]);
      at += l.size;
    }
    expect(at).toBe(700 + blob.length);
    const value = (path: string) => full.find((l) => l.path === path)?.value;
    const entry = 'pci (virtio_pci_save_config) > msix > table > entry[2]';
    expect([value(`${entry} > addr_lo`), value(`${entry} > data`), value(`${entry} > ctrl`)]).toEqual([rig.bar1(32, 4), rig.bar1(40, 4), 0]);
    expect(value('pci (virtio_pci_save_config) > PCIDevice > config > [0x00] vendor/device')).toBe(rig.cfgRead(0, 4));
    expect(full.filter((l) => /^subsection virtio\/virtqueues > vq\[\d+\] > avail$/.test(l.path))).toHaveLength(1024);
    // The compact form (the inspector's) leaves the all-zero entries out.
    const compact = leafFields(decodeVirtioBlob(blob, opts).fields);
    expect(compact.filter((l) => /virtio\/virtqueues > .* > avail$/.test(l.path))).toHaveLength(1);
    expect(compact.reduce((n, l) => n + l.size, 0)).toBeLessThan(blob.length);
  });

  it('the section name gives the transport and whether the device writes state of its own', () => {
    expect(decodeOptionsFor('0000:00:03.0/virtio-rng')).toEqual({ transport: 'pci', emptyDeviceState: true });
    expect(decodeOptionsFor('virtio-mmio@00000000feb02e00/virtio-rng')).toEqual({ transport: 'mmio', emptyDeviceState: true });
    expect(decodeOptionsFor('0000:00:04.0/virtio-blk')).toEqual({ transport: 'pci', emptyDeviceState: false, deviceState: 'virtio-blk' });
    expect(decodeOptionsFor('0000:00:05.0/virtio-net')).toEqual({ transport: 'pci', emptyDeviceState: false, deviceVmsd: 'virtio-net' });
    expect(decodeOptionsFor('0000:00:06.0/virtio-9p')).toEqual({ transport: 'pci', emptyDeviceState: false });
  });

  it('an unknown device part is skipped to the subsections, and reported', () => {
    const rig = rngRig({ legacy: false });
    const blob = saveVirtioDevice(rig.rng);
    const cut = 12 + 1 + 1 + 2 + 4 + 4 + 4 + 18; // mmio part, body, one queue
    const dev = Uint8Array.from([0x01, 0x02, 0x03, 0x05, 0x00]);
    const c = new Uint8Array(blob.length + dev.length);
    c.set(blob.subarray(0, cut));
    c.set(dev, cut);
    c.set(blob.subarray(cut), cut + dev.length);
    const d = decodeVirtioBlob(c, { transport: 'mmio' });
    expect(d.deviceState).toEqual({ offset: cut, size: 5 });
    expect(d.subsections.map((s) => s.name)[0]).toBe('virtio/64bit_features');
  });

  it('virtio-blk: the request list is decoded (one element per in-flight request), then the subsections', () => {
    const held = new HeldBackend(new MemoryBlockBackend(1 << 20));
    const r = blkRig({ backend: held });
    const a = post(r, VIRTIO_BLK_T_IN, 8, 1024);
    const b = post(r, VIRTIO_BLK_T_OUT, 16, 512);
    r.drv.notify(0);
    const blob = saveVirtioDevice(r.blk);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', deviceState: 'virtio-blk' }, 100);
    const list = flat(d.fields).find((f) => f.name === 'virtio-blk request list')!;
    const elems = flat(list.children ?? []).filter((f) => f.name === 'element (VirtQueueElementOld)');
    // In submission order: the read (header out; data, status in), then the write.
    expect(elems.map((e) => e.value)).toEqual([`head ${a.head}, out_num 1, in_num 2`, `head ${b.head}, out_num 2, in_num 1`]);
    expect(elems.every((e) => e.size === 49168)).toBe(true);
    expect(list.size).toBe(2 * (1 + 49168) + 1);
    expect(d.deviceState).toBeUndefined();
    expect(d.subsections[0]!.name).toBe('virtio/64bit_features');
    // With allEntries (blob-compare's form) the leaves cover every byte exactly once, the request
    // list included: the element's head and counts, then the rest of it as bytes.
    const full = leafFields(decodeVirtioBlob(blob, { ...decodeOptionsFor('virtio-mmio@00000000feb00e00/virtio-blk'), allEntries: true }, 100).fields);
    let at = 100;
    for (const l of full) {
      expect([l.path, l.offset]).toEqual([l.path, at]);
      at += l.size;
    }
    expect(at).toBe(100 + blob.length);
    expect(full.filter((l) => l.path.startsWith('virtio-blk request list > rq[1] > ')).map((l) => [l.path.slice(34), l.value ?? l.size])).toEqual([
      ['element (VirtQueueElementOld) > index', b.head],
      ['element (VirtQueueElementOld) > out_num', 2],
      ['element (VirtQueueElementOld) > in_num', 1],
      ['element (VirtQueueElementOld) > addresses and lengths', expect.any(String)],
    ]);
    held.releaseAll();
  });

  it('virtio-blk with two queues: each request carries its queue index, and every byte is still in one leaf', () => {
    const held = new HeldBackend(new MemoryBlockBackend(1 << 20));
    const r = blkRig({ backend: held, blk: { numQueues: 2 } });
    const a = post(r, VIRTIO_BLK_T_IN, 8, 1024);
    r.drv.notify(0);
    const blob = saveVirtioDevice(r.blk);
    const full = leafFields(decodeVirtioBlob(blob, { ...decodeOptionsFor('virtio-mmio@00000000feb00e00/virtio-blk'), allEntries: true }).fields);
    expect(full.reduce((n, l) => n + l.size, 0)).toBe(blob.length);
    const rq = full.filter((l) => l.path.startsWith('virtio-blk request list > rq[0] > '));
    expect(rq.map((l) => l.path.slice(34))).toEqual(['vq index', 'element (VirtQueueElementOld) > index', 'element (VirtQueueElementOld) > out_num', 'element (VirtQueueElementOld) > in_num', 'element (VirtQueueElementOld) > addresses and lengths']);
    expect(rq[0]!.value).toBe(0);
    expect(rq[1]!.value).toBe(a.head);
    held.releaseAll();
  });

  it('garbage is a MigrationError with the stream offset', () => {
    const rig = rngRig({ legacy: false });
    const blob = saveVirtioDevice(rig.rng).slice(0, 30);
    let e: unknown;
    try {
      decodeVirtioBlob(blob, { transport: 'mmio', emptyDeviceState: true }, 500);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(MigrationError);
    expect((e as MigrationError).offset).toBeGreaterThanOrEqual(500);
  });
});
