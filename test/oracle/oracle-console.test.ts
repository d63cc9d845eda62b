// The differential oracle, virtio-console: virtio-serial with its ports on every transport and
// interrupt mode, run on QEMU 7.2 and on ours (in-process and over the qtest socket) with the
// same command line (each side with its own chardev sockets and files), and its hostile guests.
import { CONSOLE_GROUPS } from './scenarios/console.js';
import { CONSOLE_HOSTILE_GROUPS } from './scenarios/console-hostile.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle console', [...CONSOLE_GROUPS, ...CONSOLE_HOSTILE_GROUPS]);
