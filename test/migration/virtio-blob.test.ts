// virtio_save / virtio_load on our transports, device level: the blob's layout byte by byte,
// round trips that continue where the source stopped, every load check with its offset and
// field, and atomicity (a refused blob leaves the device exactly as it was).
import { describe, expect, it } from 'vitest';
import { VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_SEL } from '../../src/bus/virtio-mmio.js';
import { MigrationError, QEMUFileReader } from '../../src/migration/qemu-file.js';
import { loadVirtioDevice, saveVirtioDevice, virtioLoad } from '../../src/migration/virtio.js';
import { bit, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../../src/virtio/constants.js';
import { modernAddrs, rngRig, type RngRig } from '../support/harness.js';
import { C_Q_SELECT, C_Q_SIZE, DRIVER_OK, ModernPciDriver, LegacyPciDriver, PciRig, postEntropyRequest } from '../support/pci-rig.js';

/** Byte equality without vitest's element-by-element deep compare (slow on 40 KB blobs). */
function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

const FEATURES = bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC);
const RING = 0x10000;
const BUF = 0x40000;

/** Source RAM copied into the destination, as the machine stream's RAM section would. */
function copyRam(from: RngRig | PciRig, to: RngRig | PciRig): void {
  const src = from.mem.view(0, from.mem.totalSize)!;
  to.mem.write(0, src);
}

/** A version-2 mmio device with 2 requests completed, a third posted but not notified, ISR unacknowledged. */
function mmioV2Source(): { rig: RngRig; ring: ReturnType<RngRig['drv']['setupQueue']> } {
  const rig = rngRig({ legacy: false });
  rig.drv.init(FEATURES);
  const ring = rig.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
  rig.drv.driverOk();
  for (let i = 0; i < 2; i++) {
    ring.add([{ addr: BUF + 0x100 * i, len: 32, write: true }]);
    rig.drv.notify(0);
  }
  expect(ring.takeUsed()).toHaveLength(2);
  ring.add([{ addr: BUF + 0x200, len: 32, write: true }]); // posted, not notified
  return { rig, ring };
}

function names(blob: Uint8Array): string[] {
  // Subsection headers: 0x05, length, "virtio..." name.
  const out: string[] = [];
  for (let i = 0; i + 2 < blob.length; i++) {
    if (blob[i] !== 0x05) continue;
    const len = blob[i + 1]!;
    const s = String.fromCharCode(...blob.subarray(i + 2, i + 2 + len));
    if (/^virtio[_/][a-z0-9_/]+$/.test(s) && i + 2 + len <= blob.length) out.push(s);
  }
  return out;
}

describe('virtio_save layout', () => {
  it('mmio v2: config part, body, one queue, and 64bit_features / virtqueues / extra_state{virtio_mmio/state} / started', () => {
    const { rig } = mmioV2Source();
    const blob = saveVirtioDevice(rig.rng);
    const v = new DataView(blob.buffer, blob.byteOffset);
    // virtio-mmio save_config: host_features_sel, guest_features_sel, guest_page_shift.
    expect([v.getUint32(0), v.getUint32(4), v.getUint32(8)]).toEqual([rig.mmio.hostFeaturesSel, rig.mmio.guestFeaturesSel, 0]);
    expect(blob[12]).toBe(0x0f); // status ACK|DRIVER|FEATURES_OK|DRIVER_OK
    expect(blob[13]).toBe(1); // ISR: the used-buffer bit, not acknowledged
    expect(v.getUint16(14)).toBe(0); // queue_sel
    expect(v.getUint32(16)).toBe(Number(rig.rng.guestFeatures & 0xffff_ffffn));
    expect(v.getUint32(20)).toBe(0); // config_len (virtio-rng has none)
    expect(v.getUint32(24)).toBe(1); // one queue
    expect(v.getUint32(28)).toBe(8); // vring.num
    expect(v.getUint32(32)).toBe(4096); // vring.align (variable alignment: mmio)
    expect(v.getBigUint64(36)).toBe(BigInt(RING));
    expect(v.getUint16(44)).toBe(2); // last_avail_idx: two popped, the third never seen
    let at = 46;
    const header = (name: string, version = 1) => {
      expect(blob[at]).toBe(5);
      expect(blob[at + 1]).toBe(name.length);
      expect(String.fromCharCode(...blob.subarray(at + 2, at + 2 + name.length))).toBe(name);
      expect(v.getUint32(at + 2 + name.length)).toBe(version);
      at += 6 + name.length;
    };
    header('virtio/64bit_features');
    expect(v.getBigUint64(at)).toBe(rig.rng.guestFeatures);
    at += 8;
    header('virtio/virtqueues');
    const m = modernAddrs(RING, 8);
    expect(v.getBigUint64(at)).toBe(BigInt(m.avail));
    expect(v.getBigUint64(at + 8)).toBe(BigInt(m.used));
    expect(blob.subarray(at + 16, at + 16384).every((b) => b === 0)).toBe(true); // the other 1023 queues
    at += 16384;
    header('virtio/extra_state');
    header('virtio_mmio/state');
    expect(v.getUint32(at)).toBe(rig.mmio.guestFeatures[0]);
    expect(v.getUint32(at + 4)).toBe(rig.mmio.guestFeatures[1]);
    at += 8;
    expect(v.getUint16(at)).toBe(8); // queue 0 num
    expect(blob[at + 2]).toBe(1); // enabled
    expect([v.getUint32(at + 3), v.getUint32(at + 7)]).toEqual([m.desc, 0]);
    expect([v.getUint32(at + 11), v.getUint32(at + 15)]).toEqual([m.avail, 0]);
    expect([v.getUint32(at + 19), v.getUint32(at + 23)]).toEqual([m.used, 0]);
    at += 27 * 1024;
    header('virtio/started');
    expect(blob[at]).toBe(1);
    expect(at + 1).toBe(blob.length);
  });

  it('mmio v1 (legacy): no VERSION_1, so no 64bit_features, virtqueues or extra_state; ringsize when the driver took 1024', () => {
    const rig = rngRig({ legacy: true });
    rig.drv.init(FEATURES);
    rig.drv.setupQueue(0, { num: 1024, base: RING, align: 4096 });
    rig.drv.driverOk();
    const blob = saveVirtioDevice(rig.rng);
    // queue_reset (bit 40) is offered, so 64bit_features is written even without VERSION_1.
    expect(names(blob)).toEqual(['virtio/64bit_features', 'virtio/ringsize', 'virtio/started']);
    const v = new DataView(blob.buffer, blob.byteOffset);
    expect(v.getUint32(28)).toBe(1024);
    // ringsize carries num_default (8) for queue 0, 0 for the others.
    const rs = blob.indexOf(0x05, 46 + 6 + 21 + 8);
    const body = rs + 6 + 'virtio/ringsize'.length;
    expect(v.getUint32(body)).toBe(8);
    expect(blob.subarray(body + 4, body + 4096).every((b) => b === 0)).toBe(true);
  });

  it('pci modern with MSI-X: PCIDevice record, table, PBA, vectors; extra_state holds virtio_pci/modern_state (28688 bytes)', () => {
    const rig = new PciRig();
    rig.mapBars();
    rig.msixEnable();
    rig.msixEntry(0);
    rig.msixEntry(1);
    const drv = new ModernPciDriver(rig);
    drv.init(FEATURES);
    rig.commonWrite(0x10, 2, 0); // config vector 0
    const ring = drv.setupQueue(0, RING, 8, 1);
    drv.driverOk();
    postEntropyRequest(ring, BUF);
    drv.notify(0);
    const blob = saveVirtioDevice(rig.rng);
    const v = new DataView(blob.buffer, blob.byteOffset);
    expect(v.getUint32(0)).toBe(2); // PCIDevice version_id
    expect(blob.subarray(4, 260)).toEqual(rig.proxy.savedConfig());
    expect([v.getUint32(260), v.getUint32(264), v.getUint32(268), v.getUint32(272)]).toEqual([0, 0, 0, 0]);
    // MSI-X: 2 vectors × 16 bytes, 1 PBA byte, then the config vector.
    expect(v.getUint32(276, true)).toBe(0x8000);
    expect(v.getUint16(276 + 32 + 1)).toBe(0);
    const body = 276 + 33 + 2;
    expect(blob[body]).toBe(0x0f);
    expect(v.getUint32(body + 8)).toBe(0); // config_len
    expect(v.getUint32(body + 12)).toBe(1);
    expect(v.getUint32(body + 16)).toBe(8);
    expect(v.getBigUint64(body + 20)).toBe(BigInt(RING)); // no align on pci
    expect(v.getUint16(body + 28)).toBe(1);
    expect(v.getUint16(body + 30)).toBe(1); // queue vector
    expect(names(blob)).toEqual(['virtio/64bit_features', 'virtio/virtqueues', 'virtio/extra_state', 'virtio_pci/modern_state', 'virtio/started']);
    const ms = blob.lastIndexOf(0x05, blob.length - 28688 - 1);
    expect(String.fromCharCode(...blob.subarray(ms + 2, ms + 2 + 23))).toBe('virtio_pci/modern_state');
    const started = 6 + 'virtio/started'.length + 1;
    expect(blob.length - (ms + 6 + 23)).toBe(28688 + started);
  });
});

describe('virtio_load round trips', () => {
  it('mmio v2: the destination saves the same bytes, and the posted request completes on its notify', () => {
    const { rig: src, ring } = mmioV2Source();
    const blob = saveVirtioDevice(src.rng);
    const dst = rngRig({ legacy: false });
    copyRam(src, dst);
    loadVirtioDevice(dst.rng, blob);
    expect(same(saveVirtioDevice(dst.rng), blob)).toBe(true);
    expect(dst.mmio.read(VIRTIO_MMIO_INTERRUPT_STATUS, 4)).toBe(1);
    expect(dst.irqLevel()).toBe(true); // the unacknowledged interrupt is still raised
    const q = dst.rng.vq[0]!;
    expect([q.lastAvailIdx, q.usedIdx, q.inuse, q.isMapped]).toEqual([2, 2, 0, true]);
    // Continue the source's script on the destination.
    const dring = ring;
    (dring as { memory: unknown }).memory = dst.mem;
    dst.drv.notify(0);
    const used = ring.takeUsed();
    expect(used).toHaveLength(1);
    expect(used[0]!.len).toBe(32);
    expect(dst.mem.read16(modernAddrs(RING, 8).used + 2)).toBe(3);
  });

  it('mmio v1 with alignment 64: the legacy rings are recomputed from desc and the stream alignment', () => {
    const src = rngRig({ legacy: true });
    src.drv.init(FEATURES);
    const ring = src.drv.setupQueue(0, { num: 8, base: RING, align: 64 });
    src.drv.driverOk();
    ring.add([{ addr: BUF, len: 8, write: true }]);
    src.drv.notify(0);
    ring.add([{ addr: BUF + 64, len: 8, write: true }]);
    const blob = saveVirtioDevice(src.rng);
    const dst = rngRig({ legacy: true });
    copyRam(src, dst);
    loadVirtioDevice(dst.rng, blob);
    const [s, d] = [src.rng.vq[0]!, dst.rng.vq[0]!];
    expect([d.align, d.desc, d.avail, d.used]).toEqual([64, s.desc, s.avail, s.used]);
    expect(dst.rng.startOnKick).toBe(false); // started came from the stream
    (ring as { memory: unknown }).memory = dst.mem;
    dst.drv.notify(0);
    expect(ring.takeUsed().map((u) => u.len)).toEqual([8, 8]);
  });

  it('pci modern MSI-X: config space, table, vectors and modern queue registers arrive; completion goes to the loaded vector', () => {
    const src = new PciRig();
    src.mapBars();
    src.msixEnable();
    src.msixEntry(0);
    src.msixEntry(1, true); // masked: the completion stays pending
    const drv = new ModernPciDriver(src);
    drv.init(FEATURES);
    const ring = drv.setupQueue(0, RING, 8, 1);
    drv.driverOk();
    postEntropyRequest(ring, BUF);
    drv.notify(0);
    expect(src.pba()).toBe(2);
    postEntropyRequest(ring, BUF + 0x100);
    const blob = saveVirtioDevice(src.rng);
    const dst = new PciRig();
    copyRam(src, dst);
    loadVirtioDevice(dst.rng, blob);
    expect(same(saveVirtioDevice(dst.rng), blob)).toBe(true);
    for (let off = 0; off < 256; off += 4) expect([off, dst.cfgRead(off)]).toEqual([off, src.cfgRead(off)]);
    expect(dst.pba()).toBe(2);
    expect(dst.proxy.queueState(0)).toEqual(src.proxy.queueState(0));
    dst.commonWrite(C_Q_SELECT, 2, 0);
    expect(dst.common(C_Q_SIZE, 2)).toBe(8);
    // Unmask vector 1: the pending message is delivered; then the second request completes.
    dst.msixMask(1, false);
    expect(dst.msiCount(1)).toBe(1);
    expect(dst.pba()).toBe(0);
    dst.notifyModern(0, 0);
    (ring as { memory: unknown }).memory = dst.mem;
    expect(ring.takeUsed()).toHaveLength(2);
    expect(dst.msiCount(1)).toBe(2);
  });

  it('pci legacy with INTx: the ISR and the raised line survive', () => {
    const src = new PciRig({ pci: { disableModern: true, vectors: 0 } });
    src.mapBars();
    const drv = new LegacyPciDriver(src);
    drv.init(Number(FEATURES));
    const ring = drv.setupQueue(0, RING);
    drv.driverOk();
    postEntropyRequest(ring, BUF);
    drv.notify(0);
    expect(src.intxLevel()).toBe(true);
    const blob = saveVirtioDevice(src.rng);
    // No VERSION_1 offered: no virtqueues; extra_state is there (migrate-extra) but empty.
    expect(names(blob)).toEqual(['virtio/64bit_features', 'virtio/extra_state', 'virtio/started']);
    const x = blob.length - (6 + 14 + 1) - (6 + 18);
    expect(String.fromCharCode(...blob.subarray(x + 2, x + 20))).toBe('virtio/extra_state');
    const dst = new PciRig({ pci: { disableModern: true, vectors: 0 } });
    copyRam(src, dst);
    loadVirtioDevice(dst.rng, blob);
    expect(dst.intxLevel()).toBe(true);
    expect(dst.io(0x13)).toBe(1); // ISR read clears it and lowers the line
    expect(dst.intxLevel()).toBe(false);
    expect(dst.rng.vq[0]!.used).toBe(src.rng.vq[0]!.used);
  });
});

describe('virtio_load refusals name the offset and the field, and change nothing', () => {
  const SRC = mmioV2Source();
  const base = () => saveVirtioDevice(SRC.rig.rng);
  /** Load `bad` into a destination holding the source's RAM; check it was refused without any change. */
  function refused(bad: Uint8Array, ram?: (r: RngRig) => void): MigrationError {
    const dst = rngRig({ legacy: false });
    copyRam(SRC.rig, dst);
    ram?.(dst);
    dst.drv.init(FEATURES);
    dst.drv.setupQueue(0, { num: 8, addrs: modernAddrs(0x80000, 8) });
    const before = saveVirtioDevice(dst.rng);
    const raises = dst.irqRaises();
    let err: unknown;
    try {
      loadVirtioDevice(dst.rng, bad);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MigrationError);
    expect(same(saveVirtioDevice(dst.rng), before)).toBe(true);
    expect(dst.irqRaises()).toBe(raises);
    return err as MigrationError;
  }
  const set = (b: Uint8Array, at: number, bytes: number[]) => {
    const c = b.slice();
    c.set(bytes, at);
    return c;
  };

  it('queue_sel ≥ 1024', () => {
    const e = refused(set(base(), 14, [0x04, 0x00]));
    expect([e.offset, e.field]).toEqual([14, 'virtio queue_sel']);
  });
  it('1025 queues: "Invalid number of virtqueues: 0x401"', () => {
    const e = refused(set(base(), 24, [0, 0, 4, 1]));
    expect(e.offset).toBe(24);
    expect(e.message).toContain('Invalid number of virtqueues: 0x401');
  });
  it('more queues than the device has', () => {
    const e = refused(set(base(), 24, [0, 0, 0, 2]));
    expect(e.message).toContain('2 queues in the stream, but virtio-rng has 1');
  });
  it('desc 0 with a non-zero last_avail_idx', () => {
    const e = refused(set(base(), 36, [0, 0, 0, 0, 0, 0, 0, 0]));
    expect(e.offset).toBe(44);
    expect(e.message).toContain('VQ 0 address 0x0 inconsistent with Host index 0x2');
  });
  it('a subsection the parent does not have', () => {
    const b = base();
    const at = 46 + 2; // the name of the first subsection
    const e = refused(set(b, at + 'virtio/'.length, [...'xxxxxx'].map((c) => c.charCodeAt(0))));
    expect(e.offset).toBe(46);
    expect(e.message).toContain("VM subsection 'virtio/xxxxxxfeatures' in 'virtio' does not exist");
  });
  it('a subsection of a higher version, and of version 0; 0x101 counts as 1', () => {
    const b = base();
    const vAt = 46 + 2 + 'virtio/64bit_features'.length;
    expect(refused(set(b, vAt, [0, 0, 0, 2])).message).toContain('virtio/64bit_features: incoming version_id 2 is too new for local version_id 1');
    expect(refused(set(b, vAt, [0, 0, 0, 0])).message).toContain('too old for local minimum version_id 1');
    const dst = rngRig({ legacy: false });
    copyRam(mmioV2Source().rig, dst);
    loadVirtioDevice(dst.rng, set(b, vAt, [0, 0, 1, 1]));
    expect(dst.rng.status).toBe(0x0f);
  });
  it('features the destination does not offer', () => {
    const b = base();
    const at = 46 + 6 + 'virtio/64bit_features'.length;
    const e = refused(set(b, at, [0, 0, 0, 0x80, 0, 0, 0, 0]));
    expect(e.message).toMatch(/^.*Features 0x80\w+ unsupported\. Allowed features: 0x/);
  });
  it('last_avail_idx inconsistent with guest RAM (more in use than the ring holds): refused', () => {
    // The guest's avail.idx agrees with last_avail_idx, but used.idx lags by 0x1e: QEMU fails the load.
    const e = refused(set(base(), 44, [0, 0x20]), (r) => r.mem.write16(modernAddrs(RING, 8).avail + 2, 0x20));
    expect(e.message).toContain('VQ 0 size 0x8 < last_avail_idx 0x20 - used_idx 0x2');
  });
  it('bytes after the end', () => {
    const b = base();
    const c = new Uint8Array(b.length + 1);
    c.set(b);
    expect(refused(c).message).toContain('1 bytes after the end');
  });
  it('every truncation is refused (MigrationError, device unchanged), except at a subsection boundary', () => {
    const b = base();
    // Subsections are optional: a blob cut just before one is a complete blob without it
    // (inside a stream, the section footer that must follow catches the cut).
    const boundaries = new Set<number>();
    for (let i = 46; i < b.length; i++) if (b[i] === 5 && b[i + 2] === 0x76 /* 'v' */ && names(b.subarray(i, i + 40)).length) boundaries.add(i);
    expect(boundaries.size).toBe(5);
    const dst = rngRig({ legacy: false });
    copyRam(SRC.rig, dst);
    const before = saveVirtioDevice(dst.rng);
    let refusedCount = 0;
    for (let n = 0; n < b.length; n++) {
      try {
        loadVirtioDevice(dst.rng, b.subarray(0, n));
        expect(boundaries.has(n)).toBe(true);
        loadVirtioDevice(dst.rng, before);
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
        refusedCount++;
      }
    }
    expect(refusedCount).toBe(b.length - boundaries.size);
    expect(same(saveVirtioDevice(dst.rng), before)).toBe(true);
  });
  it('single-bit flips: each either loads into a device that saves again, or is refused leaving it unchanged', () => {
    const b = base();
    const dst = rngRig({ legacy: false });
    copyRam(mmioV2Source().rig, dst);
    let refusedCount = 0;
    for (let i = 0; i < b.length; i += i < 400 ? 1 : 13) {
      const c = b.slice();
      c[i] = c[i]! ^ (1 << (i % 8));
      const before = saveVirtioDevice(dst.rng);
      try {
        loadVirtioDevice(dst.rng, c);
        saveVirtioDevice(dst.rng); // whatever loaded is a consistent device
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
        expect(same(saveVirtioDevice(dst.rng), before)).toBe(true);
        refusedCount++;
      }
    }
    expect(refusedCount).toBeGreaterThan(50);
  });
});

describe('QEMU load outcomes that are not refusals', () => {
  it('a guest index too far ahead of last_avail_idx loads, and marks the device broken (NEEDS_RESET) with QEMU\'s message', () => {
    const { rig: src } = mmioV2Source();
    const blob = saveVirtioDevice(src.rng);
    const dst = rngRig({ legacy: false });
    copyRam(src, dst);
    dst.mem.write16(modernAddrs(RING, 8).avail + 2, 0x30); // the guest's avail.idx, as the RAM section would carry it
    loadVirtioDevice(dst.rng, blob);
    expect(dst.rng.broken).toBe(true);
    expect(dst.rng.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBeTruthy();
    expect(dst.errors.at(-1)).toBe('VQ 0 size 0x8 Guest index 0x30 inconsistent with Host index 0x2: delta 0x2e');
    // broken is written back, and a reset recovers.
    expect(names(saveVirtioDevice(dst.rng))).toContain('virtio/broken');
    dst.drv.reset();
    expect(dst.rng.broken).toBe(false);
  });

  it('a broken device stays broken across a round trip', () => {
    const { rig: src, ring } = mmioV2Source();
    ring.writeDesc(7, BUF, 16, 1, 99); // next out of range
    ring.setAvailRingEntry(ring.availIdx % 8, 7);
    ring.setAvailIdx(ring.availIdx + 1);
    src.drv.notify(0);
    expect(src.rng.broken).toBe(true);
    const blob = saveVirtioDevice(src.rng);
    expect(names(blob)).toContain('virtio/broken');
    const dst = rngRig({ legacy: false });
    copyRam(src, dst);
    loadVirtioDevice(dst.rng, blob);
    expect(dst.rng.broken).toBe(true);
    expect(dst.rng.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBeTruthy();
    dst.drv.notify(0);
    expect(dst.rng.vq[0]!.usedIdx).toBe(src.rng.vq[0]!.usedIdx);
  });

  it('the reader stops at bytes that belong to an enclosing record', () => {
    const { rig } = mmioV2Source();
    const blob = saveVirtioDevice(rig.rng);
    const tail = [0x7e, 0, 0, 0, 9]; // a section footer follows the device's blob in a stream
    const c = new Uint8Array(blob.length + tail.length);
    c.set(blob);
    c.set(tail, blob.length);
    const f = new QEMUFileReader(c);
    const dst = rngRig({ legacy: false });
    virtioLoad(dst.rng, f)();
    expect(f.offset).toBe(blob.length);
  });

  it('ring size written by the driver (ringsize) is restored as the default, not only the size', () => {
    const rig = rngRig({ legacy: false });
    rig.drv.init(FEATURES);
    rig.mmio.write(VIRTIO_MMIO_QUEUE_SEL, 4, 0);
    rig.drv.setupQueue(0, { num: 1024, addrs: modernAddrs(RING, 1024) });
    expect(rig.mmio.read(VIRTIO_MMIO_QUEUE_NUM, 4)).toBe(0); // write-only register reads 0
    const blob = saveVirtioDevice(rig.rng);
    expect(names(blob)).toContain('virtio/ringsize');
    const dst = rngRig({ legacy: false });
    loadVirtioDevice(dst.rng, blob);
    expect([dst.rng.vq[0]!.num, dst.rng.vq[0]!.numDefault]).toEqual([1024, 8]);
    void DRIVER_OK;
  });
});
