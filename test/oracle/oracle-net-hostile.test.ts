// Hostile guests of virtio-net on QEMU 7.2 and on ours (in-process and over the qtest socket):
// verdicts per side, transcripts compared; ours must never FAIL, nor be WEDGED where QEMU is not.
import { NET_HOSTILE_GROUPS } from './scenarios/net-hostile.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle', NET_HOSTILE_GROUPS);
