// The guest-side driver library, browser-safe part: the async Machine interface, the in-process
// machine, PCI, virtio-pci and virtio-mmio drivers, the vring builder and device helpers.
// Exported from the package root as the `driver` namespace, and flat from `virtio-ts/node`
// together with the Node-only parts (qtest client, QMP client, QEMU launcher).
export * from './machine.js';
export * from './inproc.js';
export * from './alloc.js';
export * from './pci.js';
export * from './virtio-driver.js';
export * from './virtio-pci-driver.js';
export * from './virtio-mmio-driver.js';
export * from './vring.js';
export * from './rng.js';
export * from './console.js';
export * from './split-ring.js';
export * from './packed-ring.js';
export * from './packed-vring.js';
export * from './mmio-driver.js';
export * from './blk.js';
export * from './net.js';
