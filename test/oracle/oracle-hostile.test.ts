// The differential oracle, part 2: hostile guests on QEMU 7.2 and on ours, with a verdict per side
// (PASS, REJECT, WEDGED, FAIL). Ours is never FAIL (no exception, no corruption, always recovers
// after reset) and never WEDGED where QEMU does better; transcripts are equal or differ only as
// declared (docs/oracle.md).
import { HOSTILE_GROUPS } from './scenarios/index.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle hostile', HOSTILE_GROUPS);
