// Every oracle scenario group (rng on every transport, the hostile guests, virtio-console), for
// test/oracle/*.test.ts and `npm run oracle` (scripts/oracle.ts).
import type { OracleGroup } from '../../../src/oracle/scenario.js';
import { CONSOLE_GROUPS } from './console.js';
import { CONSOLE_HOSTILE_GROUPS } from './console-hostile.js';
import { HOSTILE_GROUPS } from './hostile.js';
import { TRANSPORT_GROUPS } from './transports.js';

export { CONSOLE_GROUPS, CONSOLE_HOSTILE_GROUPS, HOSTILE_GROUPS, TRANSPORT_GROUPS };
export const ORACLE_GROUPS: readonly OracleGroup[] = [...TRANSPORT_GROUPS, ...HOSTILE_GROUPS, ...CONSOLE_GROUPS, ...CONSOLE_HOSTILE_GROUPS];
