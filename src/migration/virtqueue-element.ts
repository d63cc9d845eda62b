/**
 * An element a device popped and has not returned yet, as QEMU 7.2 migrates it
 * (`qemu_put_virtqueue_element` / `qemu_get_virtqueue_element`, spec/qemu-virtio-migration.md §4):
 * virtio-blk's in-flight requests and virtio-serial's popped buffers travel this way.
 *
 * The record is QEMU's `VirtQueueElementOld` copied raw, in an x86-64 host's layout and byte
 * order (little-endian, 8-byte `hwaddr`, 16-byte `struct iovec`): 49 168 bytes whatever the
 * chain's length. With packed rings offered, a be32 `ndescs` (the ring slots the chain took)
 * precedes it. QEMU 7.2's loader reads that word *after* the record, so it misreads every element
 * its own saver wrote; this loader reads the stream as both savers write it (docs/qemu-differences.md).
 */
import type { VirtQueue } from '../vring/virtqueue.js';
import type { VirtQueueElement } from '../vring/element.js';
import { VIRTQUEUE_MAX_SIZE } from '../vring/constants.js';
import type { DeviceLoadContext } from '../virtio/device.js';
import type { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';

// Offsets inside VirtQueueElementOld on x86-64.
const OFF_INDEX = 0;
const OFF_OUT_NUM = 4;
const OFF_IN_NUM = 8;
const OFF_IN_ADDR = 16;
const OFF_OUT_ADDR = OFF_IN_ADDR + 8 * VIRTQUEUE_MAX_SIZE;
const OFF_IN_SG = OFF_OUT_ADDR + 8 * VIRTQUEUE_MAX_SIZE;
const OFF_OUT_SG = OFF_IN_SG + 16 * VIRTQUEUE_MAX_SIZE;
/** sizeof(VirtQueueElementOld) on x86-64. */
export const VIRTQUEUE_ELEMENT_OLD_SIZE = OFF_OUT_SG + 16 * VIRTQUEUE_MAX_SIZE;

/**
 * Write `elem` as QEMU does. `packed`: the device offers VIRTIO_F_RING_PACKED, so `ndescs` comes
 * first: the chain's ring slots on a packed ring, QEMU's constant 1 on a split one (`packedRing`).
 */
export function saveVirtQueueElement(f: QEMUFileWriter, elem: VirtQueueElement, packed = false, packedRing = false): void {
  if (packed) f.putBe32(packedRing ? elem.ndescs : 1);
  const rec = new Uint8Array(VIRTQUEUE_ELEMENT_OLD_SIZE);
  const v = new DataView(rec.buffer);
  v.setUint32(OFF_INDEX, elem.index, true);
  v.setUint32(OFF_OUT_NUM, elem.outNum, true);
  v.setUint32(OFF_IN_NUM, elem.inNum, true);
  for (let i = 0; i < elem.outNum; i++) {
    v.setBigUint64(OFF_OUT_ADDR + 8 * i, BigInt(elem.sgAddr[i]!), true);
    // iov_base stays 0: QEMU does not leak its address space into the stream.
    v.setBigUint64(OFF_OUT_SG + 16 * i + 8, BigInt(elem.sgLen[i]!), true);
  }
  for (let i = 0; i < elem.inNum; i++) {
    v.setBigUint64(OFF_IN_ADDR + 8 * i, BigInt(elem.sgAddr[elem.outNum + i]!), true);
    v.setBigUint64(OFF_IN_SG + 16 * i + 8, BigInt(elem.sgLen[elem.outNum + i]!), true);
  }
  f.putBuffer(rec);
}

/** A parsed element, checked against the guest RAM the load will leave. */
export interface LoadedElement {
  index: number;
  /** Device-readable (address, length) entries. */
  out: [number, number][];
  /** Device-writable entries. */
  in: [number, number][];
  ndescs: number;
}

/**
 * Parse an element. Where QEMU asserts (more than 1024 entries) or exits (a buffer it cannot map,
 * "virtio: error trying to map MMIO memory"), this refuses the load with a MigrationError. Each
 * buffer must lie in RAM, device-writable ones in writable RAM (`ctx.peekRam` answers for the
 * RAM as the load leaves it; `writable` for whether a range may be written); the chain's total
 * must fit in 32 bits as at pop time. The head must be below `queueSize`.
 */
export function loadVirtQueueElement(
  f: QEMUFileReader,
  field: string,
  queueSize: number,
  ctx: DeviceLoadContext,
  packed = false,
): LoadedElement {
  let ndescs = 0;
  if (packed) {
    const nAt = f.offset;
    ndescs = f.getBe32(`${field}.ndescs`);
    // A packed chain takes 1..num ring slots; the loaded queue frees that many when it completes.
    if (ndescs < 1 || ndescs > queueSize) throw f.error(`${field}.ndescs`, `ndescs ${ndescs} is not 1..${queueSize} (the queue size)`, nAt);
  }
  const at = f.offset;
  const rec = f.getView(VIRTQUEUE_ELEMENT_OLD_SIZE, `${field} (VirtQueueElementOld)`);
  const v = new DataView(rec.buffer, rec.byteOffset, rec.byteLength);
  const index = v.getUint32(OFF_INDEX, true);
  const outNum = v.getUint32(OFF_OUT_NUM, true);
  const inNum = v.getUint32(OFF_IN_NUM, true);
  if (index >= queueSize) throw f.error(`${field}.index`, `element head ${index} is not below the queue size ${queueSize}`, at + OFF_INDEX);
  if (outNum > VIRTQUEUE_MAX_SIZE) throw f.error(`${field}.out_num`, `out_num ${outNum} is above ${VIRTQUEUE_MAX_SIZE}`, at + OFF_OUT_NUM);
  if (inNum > VIRTQUEUE_MAX_SIZE) throw f.error(`${field}.in_num`, `in_num ${inNum} is above ${VIRTQUEUE_MAX_SIZE}`, at + OFF_IN_NUM);
  if (outNum + inNum > VIRTQUEUE_MAX_SIZE) throw f.error(`${field}.in_num`, `${outNum + inNum} buffers in one element (at most ${VIRTQUEUE_MAX_SIZE})`, at + OFF_IN_NUM);
  let total = 0;
  const entries = (n: number, addrOff: number, sgOff: number, write: boolean, kind: string): [number, number][] => {
    const out: [number, number][] = [];
    for (let i = 0; i < n; i++) {
      const a = v.getBigUint64(addrOff + 8 * i, true);
      const l = v.getBigUint64(sgOff + 16 * i + 8, true);
      const name = `${field}.${kind}[${i}]`;
      if (l > 0xffff_ffffn) throw f.error(name, `buffer length 0x${l.toString(16)} does not fit in 32 bits`, at + sgOff + 16 * i + 8);
      const len = Number(l);
      total += len;
      if (total > 0xffff_ffff) throw f.error(name, 'the element\'s buffers add up to more than 2^32-1 bytes', at + sgOff + 16 * i + 8);
      const gpa = a <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(a) : -1;
      const inRam = gpa >= 0 && len > 0 ? ctx.peekRam(gpa, len) !== undefined : gpa >= 0;
      if (!inRam || (write && len > 0 && !ctx.writable(gpa, len))) {
        throw f.error(name, `virtio: error trying to map MMIO memory (0x${a.toString(16)}, ${len} bytes${write ? ', device-writable' : ''})`, at + addrOff + 8 * i);
      }
      out.push([gpa, len]);
    }
    return out;
  };
  const outs = entries(outNum, OFF_OUT_ADDR, OFF_OUT_SG, false, 'out');
  const ins = entries(inNum, OFF_IN_ADDR, OFF_IN_SG, true, 'in');
  return { index, out: outs, in: ins, ndescs };
}

/** Put a parsed element back in flight on `vq` (at apply time). Returns it, or undefined if its head is taken. */
export function restoreVirtQueueElement(vq: VirtQueue, e: LoadedElement): VirtQueueElement | undefined {
  return vq.restoreElement(e.index, e.out, e.in, e.ndescs);
}
