// Bench rig: guest RAM, one minimal device per case, and split rings pre-filled the way a guest
// driver would fill them. Everything here runs untimed; only the device loops in cases.ts are timed.

import { GuestMemory } from '../src/memory/guest-memory.js';
import { VirtIODevice } from '../src/virtio/device.js';
import {
  bit,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
} from '../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_SIZE } from '../src/vring/constants.js';
import type { VirtQueue } from '../src/vring/virtqueue.js';

export const QUEUE_SIZE = 256;
/** Chains per batch: one full ring's worth. */
export const BATCH = QUEUE_SIZE;
export const PAGE = 4096;

/** A device with one queue and no handler: the bench drives the queue itself. */
export class BenchDevice extends VirtIODevice {
  readonly q: VirtQueue;
  constructor(memory: GuestMemory, name: string) {
    super(0x7f, 0, { memory, name }, name, bit(VIRTIO_F_VERSION_1));
    this.q = this.addQueue(QUEUE_SIZE);
  }
}

export type CaseKind = 'out4k' | 'in4k' | 'out64' | 'blk' | 'blkIndirect';

/** Guest addresses of one case's ring and buffers (each case owns a 4 MiB slice of RAM). */
export interface CaseLayout {
  desc: number;
  avail: number;
  used: number;
  /** 256 × 4 KiB data pages (or 64-byte buffers for out64). */
  data: number;
  /** 256 × 16-byte request headers. */
  hdr: number;
  /** 256 × 1-byte status bytes. */
  status: number;
  /** 256 × 64-byte slots for 3-entry indirect tables. */
  tables: number;
}

export const RAM_SIZE = 32 << 20;
const CASE_SLICE = 4 << 20;

export function caseLayout(slot: number): CaseLayout {
  const base = 0x100000 + slot * CASE_SLICE;
  return {
    desc: base,
    avail: base + 0x1000,
    used: base + 0x2000,
    data: base + 0x100000,
    hdr: base + 0x200000,
    status: base + 0x201000,
    tables: base + 0x202000,
  };
}

/** Distinct blk chains that fit in a 256-descriptor table when each takes 3 descriptors. */
export const BLK_DIRECT_CHAINS = Math.floor(QUEUE_SIZE / 3);

export interface Rig {
  kind: CaseKind;
  mem: GuestMemory;
  dev: BenchDevice;
  vq: VirtQueue;
  layout: CaseLayout;
  /** avail.idx, as the guest would publish it (bumped by BATCH per batch). */
  availView: DataView;
  availIdxOff: number;
  availIdx: number;
}

function writeDescAt(mem: GuestMemory, at: number, addr: number, len: number, flags: number, next: number): void {
  mem.write32(at, addr >>> 0);
  mem.write32(at + 4, Math.floor(addr / 0x1_0000_0000));
  mem.write32(at + 8, len >>> 0);
  mem.write16(at + 12, flags);
  mem.write16(at + 14, next);
}

/**
 * Build one case: negotiate VERSION_1 + EVENT_IDX + INDIRECT_DESC, set the rings, write all
 * descriptors and fill all 256 avail slots. avail.idx is left at 0: each batch publishes 256.
 */
export function buildRig(mem: GuestMemory, kind: CaseKind, slot: number): Rig {
  const dev = new BenchDevice(mem, `bench-${kind}`);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  if (!dev.setFeatures(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_RING_F_INDIRECT_DESC))) {
    throw new Error('feature negotiation failed');
  }
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  const L = caseLayout(slot);
  // A driver zeroes its rings before handing them over.
  mem.fill(L.desc, L.data - L.desc, 0);
  const vq = dev.q;
  vq.setRings(L.desc, L.avail, L.used);
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  if (!vq.isMapped || dev.broken) throw new Error(`rings not mapped: ${dev.lastError}`);

  const d = (i: number) => L.desc + VRING_DESC_SIZE * i;
  const heads = new Uint16Array(QUEUE_SIZE);
  for (let i = 0; i < QUEUE_SIZE; i++) {
    switch (kind) {
      case 'out4k':
        writeDescAt(mem, d(i), L.data + i * PAGE, PAGE, 0, 0);
        heads[i] = i;
        break;
      case 'in4k':
        writeDescAt(mem, d(i), L.data + i * PAGE, PAGE, VRING_DESC_F_WRITE, 0);
        heads[i] = i;
        break;
      case 'out64':
        writeDescAt(mem, d(i), L.data + i * 64, 64, 0, 0);
        heads[i] = i;
        break;
      case 'blk': {
        // 85 three-descriptor chains fill 255 of the 256 descriptors; the 256 avail slots cycle
        // through them. Each chain is pushed before the next pop, so a head is never made
        // available while it is still in flight.
        const c = i % BLK_DIRECT_CHAINS;
        if (i < BLK_DIRECT_CHAINS) {
          writeDescAt(mem, d(3 * c), L.hdr + c * 16, 16, VRING_DESC_F_NEXT, 3 * c + 1);
          writeDescAt(mem, d(3 * c + 1), L.data + c * PAGE, PAGE, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 3 * c + 2);
          writeDescAt(mem, d(3 * c + 2), L.status + c, 1, VRING_DESC_F_WRITE, 0);
        }
        heads[i] = 3 * c;
        break;
      }
      case 'blkIndirect': {
        const t = L.tables + i * 64;
        writeDescAt(mem, t, L.hdr + i * 16, 16, VRING_DESC_F_NEXT, 1);
        writeDescAt(mem, t + 16, L.data + i * PAGE, PAGE, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
        writeDescAt(mem, t + 32, L.status + i, 1, VRING_DESC_F_WRITE, 0);
        writeDescAt(mem, d(i), t, 3 * VRING_DESC_SIZE, VRING_DESC_F_INDIRECT, 0);
        heads[i] = i;
        break;
      }
    }
    mem.write16(L.avail + 4 + 2 * i, heads[i]!);
  }
  mem.write16(L.avail + 2, 0);
  // used_event: the guest's suppression hint. Set far away so it is a realistic mid-stream value.
  mem.write16(L.avail + 4 + 2 * QUEUE_SIZE, 0);
  const r = mem.findRegion(L.avail, 4)!;
  return { kind, mem, dev, vq, layout: L, availView: r.view, availIdxOff: L.avail + 2 - r.base, availIdx: 0 };
}

/** Guest side, untimed in spirit (one 16-bit store per 256 chains): publish the next 256. */
export function publishBatch(rig: Rig): void {
  rig.availIdx = (rig.availIdx + BATCH) & 0xffff;
  rig.availView.setUint16(rig.availIdxOff, rig.availIdx, true);
}
