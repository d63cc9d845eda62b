// Split-ring constants (VIRTIO 1.2 §2.7; Linux include/uapi/linux/virtio_ring.h).

/** This descriptor continues via the `next` field. */
export const VRING_DESC_F_NEXT = 1;
/** The device writes this buffer (otherwise it only reads it). */
export const VRING_DESC_F_WRITE = 2;
/** The buffer holds a table of descriptors. */
export const VRING_DESC_F_INDIRECT = 4;

/** avail.flags: the driver asks for no used-buffer notifications (without EVENT_IDX). */
export const VRING_AVAIL_F_NO_INTERRUPT = 1;
/** used.flags: the device asks for no available-buffer notifications (without EVENT_IDX). */
export const VRING_USED_F_NO_NOTIFY = 1;

/** Size of one split descriptor: le64 addr, le32 len, le16 flags, le16 next. */
export const VRING_DESC_SIZE = 16;
/** Size of one used element: le32 id, le32 len. */
export const VRING_USED_ELEM_SIZE = 8;

/** QEMU's VIRTQUEUE_MAX_SIZE: the largest queue, and the most buffers one element may map. */
export const VIRTQUEUE_MAX_SIZE = 1024;
/** QEMU's VIRTIO_QUEUE_MAX: the most queues a device can have. */
export const VIRTIO_QUEUE_MAX = 1024;
/** Legacy PCI's fixed ring alignment (VIRTIO_PCI_VRING_ALIGN). */
export const VIRTIO_PCI_VRING_ALIGN = 4096;
/** No MSI-X vector assigned. */
export const VIRTIO_NO_VECTOR = 0xffff;

/** Linux's vring_need_event: should the other side be told now that `newIdx` was reached? */
export function vringNeedEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

// Packed-ring constants (VIRTIO 1.2 §2.8; Linux include/uapi/linux/virtio_ring.h).

/** Descriptor flag: the driver's wrap counter when it made the descriptor available. */
export const VRING_PACKED_DESC_F_AVAIL = 1 << 7;
/** Descriptor flag: the device's wrap counter when it marked the descriptor used. */
export const VRING_PACKED_DESC_F_USED = 1 << 15;
/** Event suppression flags (the `flags` field of both event areas). */
export const VRING_PACKED_EVENT_FLAG_ENABLE = 0;
export const VRING_PACKED_EVENT_FLAG_DISABLE = 1;
/** Notify only when the ring reaches `off_wrap` (needs VIRTIO_RING_F_EVENT_IDX). */
export const VRING_PACKED_EVENT_FLAG_DESC = 2;
/** Size of an event suppression area: le16 off_wrap (bit 15 the wrap counter), le16 flags. */
export const VRING_PACKED_EVENT_SIZE = 4;

/**
 * A packed descriptor is available to the device when its AVAIL and USED bits differ and AVAIL
 * matches the device's wrap counter for that position (VIRTIO 1.2 §2.8.1).
 */
export function packedDescAvail(flags: number, wrapCounter: boolean): boolean {
  const avail = (flags & VRING_PACKED_DESC_F_AVAIL) !== 0;
  const used = (flags & VRING_PACKED_DESC_F_USED) !== 0;
  return avail !== used && avail === wrapCounter;
}

/**
 * vring_need_event for packed rings: `offWrap` names a ring position and the wrap counter the
 * driver expects there; a position from the other lap is moved back by `num` first (QEMU's
 * `vring_packed_need_event`).
 */
export function packedNeedEvent(num: number, wrapCounter: boolean, offWrap: number, newIdx: number, oldIdx: number): boolean {
  let off = offWrap & 0x7fff;
  if (wrapCounter !== ((offWrap & 0x8000) !== 0)) off -= num;
  return vringNeedEvent(off, newIdx, oldIdx);
}
