// virtio-input (virtio-keyboard, virtio-mouse, virtio-tablet) and host input for embedders.
export * from './evdev.js';
export * from './keycodes.js';
export * from './router.js';
export * from './virtio-input.js';
export * from './hid.js';
export * from './browser.js';
