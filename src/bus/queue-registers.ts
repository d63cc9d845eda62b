/**
 * The per-queue register records that virtio-pci (modern) and virtio-mmio (version 2) keep for
 * all 1024 queues and migrate inside `virtio/extra_state`.
 */
import type { QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import { VIRTIO_QUEUE_MAX } from '../vring/constants.js';

/** Modern queue registers as `virtio_pci/modern_queue_state` and `virtio_mmio/queue_state` write them. */
export interface QueueRegisters {
  num: number;
  enabled: boolean;
  desc: [number, number];
  avail: [number, number];
  used: [number, number];
}

/**
 * Write the 1024 queue register records of a transport's extra state (`pciPadding` as for
 * `loadQueueRegisters`).
 */
export function saveQueueRegisters(f: QEMUFileWriter, vqs: readonly QueueRegisters[], pciPadding: boolean): void {
  for (const q of vqs) {
    f.putBe16(q.num);
    if (pciPadding) f.putByte(0); // VMSTATE_UNUSED(1): `enabled` was once a be16
    f.putBool(q.enabled);
    for (const w of [q.desc, q.avail, q.used]) {
      f.putBe32(w[0]);
      f.putBe32(w[1]);
    }
  }
}

/**
 * Parse the 1024 queue register records of a transport's extra state. `pciPadding`: virtio-pci
 * has an unused byte before `enabled` (28-byte records); virtio-mmio does not (27 bytes).
 */
export function loadQueueRegisters(f: QEMUFileReader, name: string, pciPadding: boolean): QueueRegisters[] {
  const size = pciPadding ? 28 : 27;
  // Check the whole array first, so the loop below needs no per-field names (a load reads
  // 7 000 fields here) and a short stream still names the record it ends in.
  if (f.remaining < VIRTIO_QUEUE_MAX * size) {
    const i = Math.floor(f.remaining / size);
    f.skip(i * size, name);
    throw f.error(`${name}[${i}]`, `stream ends inside queue record ${i} of ${VIRTIO_QUEUE_MAX}`);
  }
  const out: QueueRegisters[] = [];
  for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
    const num = f.getBe16(name);
    if (pciPadding) f.skip(1, name);
    const at = f.offset;
    const b = f.getByte(name);
    if (b > 1) throw f.error(`${name}[${i}].enabled`, `boolean byte is ${b}`, at);
    out.push({
      num,
      enabled: b === 1,
      desc: [f.getBe32(name), f.getBe32(name)],
      avail: [f.getBe32(name), f.getBe32(name)],
      used: [f.getBe32(name), f.getBe32(name)],
    });
  }
  return out;
}
