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
