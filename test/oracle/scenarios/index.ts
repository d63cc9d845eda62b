// Every oracle scenario group (rng on every transport, and the hostile guests), for
// test/oracle/*.test.ts and `npm run oracle` (scripts/oracle.ts).
import type { OracleGroup } from '../../../src/oracle/scenario.js';
import { HOSTILE_GROUPS } from './hostile.js';
import { TRANSPORT_GROUPS } from './transports.js';
import { BLK_GROUPS } from './blk.js';
import { BLK_HOSTILE_GROUPS } from './blk-hostile.js';

export { HOSTILE_GROUPS, TRANSPORT_GROUPS, BLK_GROUPS, BLK_HOSTILE_GROUPS };
export const ORACLE_GROUPS: readonly OracleGroup[] = [...TRANSPORT_GROUPS, ...HOSTILE_GROUPS, ...BLK_GROUPS, ...BLK_HOSTILE_GROUPS];
