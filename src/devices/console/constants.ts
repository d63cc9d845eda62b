// virtio-console constants (VIRTIO 1.2 §5.3; Linux `include/uapi/linux/virtio_console.h`, as
// QEMU 7.2 carries it in include/standard-headers).

/** Feature bits. QEMU 7.2 never offers SIZE (it has no console size to report). */
export const VIRTIO_CONSOLE_F_SIZE = 0;
export const VIRTIO_CONSOLE_F_MULTIPORT = 1;
export const VIRTIO_CONSOLE_F_EMERG_WRITE = 2;

/** "No port": the id DEVICE_READY carries, and QEMU's default for a port's `nr`. */
export const VIRTIO_CONSOLE_BAD_ID = 0xffff_ffff;

// Control events (struct virtio_console_control: le32 id, le16 event, le16 value).
export const VIRTIO_CONSOLE_DEVICE_READY = 0;
export const VIRTIO_CONSOLE_PORT_ADD = 1;
export const VIRTIO_CONSOLE_PORT_REMOVE = 2;
export const VIRTIO_CONSOLE_PORT_READY = 3;
export const VIRTIO_CONSOLE_CONSOLE_PORT = 4;
export const VIRTIO_CONSOLE_RESIZE = 5;
export const VIRTIO_CONSOLE_PORT_OPEN = 6;
export const VIRTIO_CONSOLE_PORT_NAME = 7;

/** Size of a control message header. */
export const VIRTIO_CONSOLE_CONTROL_SIZE = 8;

/** Configuration space layout (struct virtio_console_config). */
export const VIRTIO_CONSOLE_CFG_COLS = 0;
export const VIRTIO_CONSOLE_CFG_ROWS = 2;
export const VIRTIO_CONSOLE_CFG_MAX_NR_PORTS = 4;
export const VIRTIO_CONSOLE_CFG_EMERG_WR = 8;
/** Config size with EMERG_WRITE offered; without it QEMU stops before `emerg_wr` (8 bytes). */
export const VIRTIO_CONSOLE_CONFIG_SIZE = 12;

/** QEMU's default `max_ports`. */
export const VIRTIO_SERIAL_DEFAULT_MAX_PORTS = 31;
/** Each port takes two queues and the control pair takes two: 1024 / 2 - 1. */
export const VIRTIO_SERIAL_MAX_SUPPORTED_PORTS = 511;
/** Queue sizes QEMU gives the port queues and the control queues. */
export const VIRTIO_SERIAL_PORT_QUEUE_SIZE = 128;
export const VIRTIO_SERIAL_CONTROL_QUEUE_SIZE = 32;

/** The queue indices of port `id`: receive (host to guest) and transmit (VIRTIO 1.2 §5.3.2). */
export function portQueues(id: number): { rx: number; tx: number } {
  return id === 0 ? { rx: 0, tx: 1 } : { rx: 2 + 2 * id, tx: 3 + 2 * id };
}

/** Control queue indices (receive: device to driver; transmit: driver to device). */
export const VIRTIO_SERIAL_CONTROL_RX = 2;
export const VIRTIO_SERIAL_CONTROL_TX = 3;
