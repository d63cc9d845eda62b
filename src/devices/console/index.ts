// virtio-console (virtio-serial) and its browser-safe chardevs. The Node chardevs (streams, unix
// sockets, files) are in ./backends/node.ts, exported from `virtio-ts/node`.
export * from './constants.js';
export * from './chardev.js';
export * from './virtio-serial.js';
