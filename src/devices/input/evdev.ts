/**
 * The Linux evdev numbers virtio-input speaks (VIRTIO 1.2 §5.8: "the event codes are the Linux
 * input layer's", `linux/input-event-codes.h`), and the config selectors of the device's
 * configuration space (`virtio_input.h`). Only the ones QEMU 7.2's devices use or answer.
 */

// Event types (EV_*).
export const EV_SYN = 0x00;
export const EV_KEY = 0x01;
export const EV_REL = 0x02;
export const EV_ABS = 0x03;
export const EV_MSC = 0x04;
export const EV_LED = 0x11;
export const EV_REP = 0x14;
/** Highest event type (EV_MAX); subsel of EV_BITS runs 0..EV_MAX. */
export const EV_MAX = 0x1f;

export const SYN_REPORT = 0;

// Relative axes.
export const REL_X = 0x00;
export const REL_Y = 0x01;
export const REL_WHEEL = 0x08;

// Absolute axes.
export const ABS_X = 0x00;
export const ABS_Y = 0x01;

// Buttons (EV_KEY codes).
export const BTN_LEFT = 0x110;
export const BTN_RIGHT = 0x111;
export const BTN_MIDDLE = 0x112;
export const BTN_SIDE = 0x113;
export const BTN_EXTRA = 0x114;
export const BTN_GEAR_DOWN = 0x150;
export const BTN_GEAR_UP = 0x151;

// LEDs (EV_LED codes).
export const LED_NUML = 0x00;
export const LED_CAPSL = 0x01;
export const LED_SCROLLL = 0x02;

/** Bus type of a virtual device (BUS_VIRTUAL in `linux/input.h`). */
export const BUS_VIRTUAL = 0x06;

// virtio_input_config.select values (VIRTIO 1.2 §5.8.4).
export const VIRTIO_INPUT_CFG_UNSET = 0x00;
export const VIRTIO_INPUT_CFG_ID_NAME = 0x01;
export const VIRTIO_INPUT_CFG_ID_SERIAL = 0x02;
export const VIRTIO_INPUT_CFG_ID_DEVIDS = 0x03;
export const VIRTIO_INPUT_CFG_PROP_BITS = 0x10;
export const VIRTIO_INPUT_CFG_EV_BITS = 0x11;
export const VIRTIO_INPUT_CFG_ABS_INFO = 0x12;

/** sizeof(struct virtio_input_config): select, subsel, size, 5 reserved bytes, a 128-byte union. */
export const VIRTIO_INPUT_CONFIG_SIZE = 136;
/** Offset of the union in the config. */
export const VIRTIO_INPUT_CONFIG_UNION = 8;
/** sizeof(struct virtio_input_event): le16 type, le16 code, le32 value. */
export const VIRTIO_INPUT_EVENT_SIZE = 8;

/** QEMU's range of absolute pointer coordinates (INPUT_EVENT_ABS_MIN/MAX). */
export const INPUT_EVENT_ABS_MIN = 0x0000;
export const INPUT_EVENT_ABS_MAX = 0x7fff;

/** QEMU's keyboard LED bits (`ui/console.h`), as `kbd_put_ledstate` reports them. */
export const QEMU_SCROLL_LOCK_LED = 1 << 0;
export const QEMU_NUM_LOCK_LED = 1 << 1;
export const QEMU_CAPS_LOCK_LED = 1 << 2;
