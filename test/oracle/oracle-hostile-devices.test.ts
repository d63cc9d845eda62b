// The differential oracle for hostile guests of virtio-input and virtio-balloon: each scenario on
// QEMU 7.2 and on ours, transcripts compared, and a verdict per side (ours never FAIL, never
// WEDGED where QEMU does better).
import { HOSTILE_DEVICE_GROUPS } from './scenarios/index.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle hostile', HOSTILE_DEVICE_GROUPS);
