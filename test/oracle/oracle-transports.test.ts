// The differential oracle, part 1: virtio-rng on every transport mode and interrupt mode, run on
// QEMU 7.2 and on ours (in-process and over the qtest socket) with the same command line; the
// transcripts must be equal or differ only as declared (docs/oracle.md).
import { TRANSPORT_GROUPS } from './scenarios/index.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle', TRANSPORT_GROUPS);
