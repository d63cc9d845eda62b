// Ring layout arithmetic for split virtqueues (VIRTIO 1.2 §2.7 and §2.7.2 for the legacy form).
//
// All sizes are in bytes. `num` is the queue size. With VIRTIO_F_EVENT_IDX the avail ring ends in
// `used_event` and the used ring in `avail_event`; both are counted here unconditionally, as the
// spec's sizes do.

import { VRING_DESC_SIZE, VRING_USED_ELEM_SIZE } from './constants.js';

export function descTableSize(num: number): number {
  return VRING_DESC_SIZE * num;
}

/** flags, idx, ring[num], used_event. */
export function availRingSize(num: number, eventIdx = true): number {
  return 4 + 2 * num + (eventIdx ? 2 : 0);
}

/** flags, idx, ring[num] of {id, len}, avail_event. */
export function usedRingSize(num: number, eventIdx = true): number {
  return 4 + VRING_USED_ELEM_SIZE * num + (eventIdx ? 2 : 0);
}

/** Round `x` up to a multiple of `align`, which must be a power of two. */
export function alignUp(x: number, align: number): number {
  return Math.ceil(x / align) * align;
}

export function isPowerOfTwo(x: number): boolean {
  return x > 0 && Number.isInteger(x) && (x & (x - 1)) === 0 && x <= 0x8000_0000;
}

/** Required alignment of each modern ring part (VIRTIO 1.2 §2.7, table "Virtqueue Part Alignment"). */
export const DESC_ALIGN = 16;
export const AVAIL_ALIGN = 2;
export const USED_ALIGN = 4;
/** Required alignment of the packed ring's event suppression areas (VIRTIO 1.2 §2.8.10.1). */
export const PACKED_EVENT_ALIGN = 4;

export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/**
 * The legacy single-area layout: descriptor table at `base`, avail ring right after it, used
 * ring at the next multiple of `align` after the avail ring including `used_event` (the spec's
 * formula and Linux's `vring_init`).
 */
export function legacyLayout(base: number, num: number, align: number): RingAddresses {
  const avail = base + descTableSize(num);
  const used = alignUp(avail + availRingSize(num, true), align);
  return { desc: base, avail, used };
}

/**
 * QEMU 7.2's legacy layout (`virtio_queue_update_rings`): it leaves out `used_event`, so with an
 * alignment of 2 or 4 it places the used ring two bytes lower than the spec and Linux do. Kept for
 * the oracle, which must predict where QEMU writes.
 */
export function qemuLegacyLayout(base: number, num: number, align: number): RingAddresses {
  const avail = base + descTableSize(num);
  const used = alignUp(avail + 4 + 2 * num, align);
  return { desc: base, avail, used };
}

/** Total bytes of a legacy ring area (Linux's `vring_size`). */
export function legacyRingSize(num: number, align: number): number {
  const l = legacyLayout(0, num, align);
  return l.used + usedRingSize(num, true);
}
