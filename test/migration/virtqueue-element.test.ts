// In-flight elements as QEMU 7.2 migrates them (VirtQueueElementOld, x86-64 layout): the record
// byte for byte, a round trip that puts the element back in flight so the device can complete
// it, and every refusal where QEMU would assert or exit.
import { describe, expect, it } from 'vitest';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { MigrationError, QEMUFileReader, QEMUFileWriter } from '../../src/migration/qemu-file.js';
import { loadVirtQueueElement, restoreVirtQueueElement, saveVirtQueueElement, VIRTQUEUE_ELEMENT_OLD_SIZE } from '../../src/migration/virtqueue-element.js';
import { HoldingDevice } from '../support/invariants.js';
import { SplitRingDriver } from '../../src/driver/split-ring.js';

function rig() {
  const memory = new GuestMemory([{ base: 0, size: 1 << 20 }, { base: 0x10_0000, size: 0x1000, readonly: true }]);
  const dev = new HoldingDevice({ memory, queueSize: 8 });
  const q = dev.vq[0]!;
  q.setRings(0x1000, 0x2000, 0x3000);
  const ring = new SplitRingDriver({ memory, num: 8, addrs: { desc: 0x1000, avail: 0x2000, used: 0x3000 } });
  const ctx = { peekRam: (g: number, l: number) => memory.view(g, l), writable: (g: number, l: number) => memory.isWritableRange(g, l) };
  return { memory, dev, q, ring, ctx };
}

describe('VirtQueueElementOld', () => {
  it('is 49168 bytes in QEMU\'s x86-64 layout: index, out_num, in_num, in_addr[], out_addr[], in_sg[], out_sg[]', () => {
    expect(VIRTQUEUE_ELEMENT_OLD_SIZE).toBe(49168);
    const r = rig();
    const head = r.ring.add([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 512, write: true }, { addr: 0xa000, len: 1, write: true }]);
    const e = r.q.pop()!;
    const f = new QEMUFileWriter();
    saveVirtQueueElement(f, e);
    const b = f.bytes();
    const v = new DataView(b.buffer);
    expect(b.length).toBe(49168);
    expect([v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true)]).toEqual([head, 1, 2]);
    expect(v.getUint32(12, true)).toBe(0); // padding
    expect([v.getBigUint64(16, true), v.getBigUint64(24, true)]).toEqual([0x9000n, 0xa000n]); // in_addr
    expect(v.getBigUint64(16 + 8192, true)).toBe(0x8000n); // out_addr[0]
    expect([v.getBigUint64(16400, true), v.getBigUint64(16408, true)]).toEqual([0n, 512n]); // in_sg[0] base 0, len
    expect(v.getBigUint64(16424, true)).toBe(1n); // in_sg[1].len
    expect(v.getBigUint64(32784 + 8, true)).toBe(16n); // out_sg[0].len
    let nonzero = 0;
    for (let i = 32800; i < b.length; i++) nonzero += b[i]!;
    expect(nonzero).toBe(0);
  });

  it('round trip: the element comes back in flight with the same buffers and can be completed', () => {
    const src = rig();
    src.ring.add([{ addr: 0x8000, len: 16 }, { addr: 0x9000, len: 64, write: true }]);
    const e = src.q.pop()!;
    const f = new QEMUFileWriter();
    saveVirtQueueElement(f, e);
    const dst = rig();
    dst.memory.write(0, src.memory.view(0, 1 << 20)!);
    const parsed = loadVirtQueueElement(new QEMUFileReader(f.bytes()), 'req', 8, dst.ctx);
    expect(parsed).toEqual({ index: e.index, out: [[0x8000, 16]], in: [[0x9000, 64]], ndescs: 0 });
    const back = restoreVirtQueueElement(dst.q, parsed)!;
    expect([back.inFlight, back.outBytes, back.inBytes, back.index]).toEqual([true, 16, 64, e.index]);
    expect(restoreVirtQueueElement(dst.q, parsed)).toBeUndefined(); // the same head twice
    expect(back.writeIn(0, Uint8Array.from([1, 2, 3]))).toBe(3);
    dst.q.push(back, 3);
    expect(dst.memory.read16(0x3002)).toBe(1);
    expect(Array.from(dst.memory.view(0x9000, 3)!)).toEqual([1, 2, 3]);
  });

  it('refuses what QEMU asserts on or exits for, naming the field', () => {
    const r = rig();
    r.ring.add([{ addr: 0x8000, len: 16, write: true }]);
    const f = new QEMUFileWriter();
    saveVirtQueueElement(f, r.q.pop()!);
    const good = f.bytes();
    const bad = (patch: (v: DataView) => void, size = 8): MigrationError => {
      const c = good.slice();
      patch(new DataView(c.buffer));
      try {
        loadVirtQueueElement(new QEMUFileReader(c), 'req', size, r.ctx);
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
        return e as MigrationError;
      }
      throw new Error('accepted');
    };
    expect(bad((v) => v.setUint32(0, 8, true)).field).toBe('req.index');
    expect(bad((v) => v.setUint32(8, 1025, true)).field).toBe('req.in_num');
    expect(bad((v) => { v.setUint32(4, 600, true); v.setUint32(8, 600, true); }).message).toContain('1200 buffers in one element');
    expect(bad((v) => v.setBigUint64(16, 0x10_0000n, true)).message).toContain('virtio: error trying to map MMIO memory'); // ROM, device-writable
    expect(bad((v) => v.setBigUint64(16, 0xffff8n, true)).field).toBe('req.in[0]'); // runs from RAM into ROM
    expect(bad((v) => v.setBigUint64(16400 + 8, 0x1_0000_0000n, true)).message).toContain('does not fit in 32 bits');
    expect(() => loadVirtQueueElement(new QEMUFileReader(good.subarray(0, 100)), 'req', 8, r.ctx)).toThrow(MigrationError);
  });
});
