// The differential oracle for virtio-blk: every transport and interrupt mode, every request type,
// error paths and device variants, on QEMU 7.2 and on ours (in-process and over the qtest socket)
// with the same command line and the same disk image (docs/oracle.md).
import { BLK_GROUPS, BLK_HOSTILE_GROUPS } from './scenarios/index.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle blk', [...BLK_GROUPS, ...BLK_HOSTILE_GROUPS]);
