// Constants from the VIRTIO spec (1.2 §2.1, §6) and their QEMU names.

// Device status bits (VIRTIO 1.2 §2.1).
export const VIRTIO_CONFIG_S_ACKNOWLEDGE = 1;
export const VIRTIO_CONFIG_S_DRIVER = 2;
export const VIRTIO_CONFIG_S_DRIVER_OK = 4;
export const VIRTIO_CONFIG_S_FEATURES_OK = 8;
export const VIRTIO_CONFIG_S_NEEDS_RESET = 0x40;
export const VIRTIO_CONFIG_S_FAILED = 0x80;

// Reserved feature bits (VIRTIO 1.2 §6), as bit numbers.
export const VIRTIO_F_NOTIFY_ON_EMPTY = 24;
export const VIRTIO_F_ANY_LAYOUT = 27;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
/** QEMU's VIRTIO_F_BAD_FEATURE: offered by virtio-pci so that a driver acking it can be spotted. */
export const VIRTIO_F_BAD_FEATURE = 30;
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_F_ACCESS_PLATFORM = 33;
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_F_IN_ORDER = 35;
export const VIRTIO_F_ORDER_PLATFORM = 36;
export const VIRTIO_F_SR_IOV = 37;
export const VIRTIO_F_NOTIFICATION_DATA = 38;
export const VIRTIO_F_RING_RESET = 40;

/** Features hidden from modern transports (QEMU's VIRTIO_LEGACY_FEATURES). */
export const VIRTIO_LEGACY_FEATURES =
  (1n << BigInt(VIRTIO_F_BAD_FEATURE)) | (1n << BigInt(VIRTIO_F_NOTIFY_ON_EMPTY)) | (1n << BigInt(VIRTIO_F_ANY_LAYOUT));

/**
 * Features every QEMU 7.2 virtio device offers by default (DEFINE_VIRTIO_COMMON_FEATURES):
 * indirect_desc, event_idx, notify_on_empty, any_layout and queue_reset.
 */
export const VIRTIO_COMMON_FEATURES =
  bit(VIRTIO_RING_F_INDIRECT_DESC) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_F_NOTIFY_ON_EMPTY) |
  bit(VIRTIO_F_ANY_LAYOUT) | bit(VIRTIO_F_RING_RESET);

// Device ids (VIRTIO 1.2 §5).
export const VIRTIO_ID_NET = 1;
export const VIRTIO_ID_BLOCK = 2;
export const VIRTIO_ID_CONSOLE = 3;
export const VIRTIO_ID_RNG = 4;
export const VIRTIO_ID_BALLOON = 5;
export const VIRTIO_ID_INPUT = 18;

/** ISR bits: a used buffer notification, and a configuration change. */
export const VIRTIO_ISR_QUEUE = 1;
export const VIRTIO_ISR_CONFIG = 2;

/** QEMU's device endianness tri-state (`enum virtio_device_endian`). */
export const DeviceEndian = { UNKNOWN: 0, LITTLE: 1, BIG: 2 } as const;
export type DeviceEndian = (typeof DeviceEndian)[keyof typeof DeviceEndian];

/** A feature bit as a bigint mask. */
export function bit(n: number): bigint {
  return 1n << BigInt(n);
}

/** Does the 64-bit feature set `features` contain bit `n`? */
export function hasBit(features: bigint, n: number): boolean {
  return ((features >> BigInt(n)) & 1n) === 1n;
}
