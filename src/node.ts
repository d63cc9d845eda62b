// `virtio-ts/node`: the guest-side driver library with its Node-only parts (sockets,
// child_process, fs): the qtest protocol client, the QMP client and the launcher that starts
// qemu-system-x86_64 or virtio-ts-qemu. Never imported by src/index.ts, so the browser bundle
// stays free of Node modules.
export * from './driver/index.js';
export * from './driver/qtest-client.js';
export * from './driver/qmp-client.js';
export * from './driver/qemu-launcher.js';
// Migration channels for QMP `migrate`/`migrate-incoming` (`exec:`, opt-in `file:`), for
// embedders that run a machine's QMP in a Node process.
export * from './cli/migration-channels.js';
// The raw-file disk backend for virtio-blk (fs.promises), and opening a command line's files.
export * from './devices/blk/backends/node-file.js';
// Node chardevs for virtio-serial ports: streams (stdin/stdout), unix sockets, files.
export * from './devices/console/backends/node.js';
// Node network backends with QEMU's wire formats (UDP, multicast, length-prefixed streams).
export * from './devices/net/backends/node.js';
