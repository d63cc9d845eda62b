// Public API of virtio-ts.
export * from './memory/guest-memory.js';
export * from './vring/constants.js';
export * from './vring/layout.js';
export * from './vring/element.js';
export * from './vring/virtqueue.js';
export * from './virtio/constants.js';
export * from './virtio/device.js';
export * from './bus/virtio-bus.js';
export * from './bus/virtio-mmio.js';
export * from './bus/pci/pci-bus.js';
export * from './bus/pci/pci-device.js';
export * from './bus/pci/msix.js';
export * from './bus/pci/bar-map.js';
export * from './bus/pci/piix.js';
export * from './bus/virtio-pci.js';
export * from './devices/rng.js';
export * from './devices/blk/index.js';
export * from './devices/console/index.js';
export * from './devices/input/index.js';
export * from './devices/balloon/virtio-balloon.js';
export * from './devices/net/index.js';
export * from './clock/virtual-clock.js';
export * from './trace/trace.js';
export * from './migration/qemu-file.js';
// Whole-machine streams: the contract a machine implements, saveVm / loadVm / parseSavevm.
export * from './migration/machine-state.js';
export * from './migration/savevm.js';
export * from './driver/split-ring.js';
export * from './driver/mmio-driver.js';
// The async guest-side driver library (browser-safe part), namespaced to keep this list flat and
// clash-free; `virtio-ts/node` exports it flat with the Node-only parts.
export * as driver from './driver/index.js';
// The reference machines (pc, microvm), the qtest and QMP protocol engines and QEMU's command
// line, browser-safe; the socket/stdio front end is the `virtio-ts-qemu` command.
export * as machine from './machine/index.js';
