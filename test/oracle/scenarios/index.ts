// Every oracle scenario group (rng on every transport, the hostile guests, virtio-console, input,
// balloon, virtio-blk, virtio-net), for test/oracle/*.test.ts and `npm run oracle` (scripts/oracle.ts).
import { NET_GROUPS } from './net.js';
import { NET_HOSTILE_GROUPS } from './net-hostile.js';
import type { OracleGroup } from '../../../src/oracle/scenario.js';
import { CONSOLE_GROUPS } from './console.js';
import { CONSOLE_HOSTILE_GROUPS } from './console-hostile.js';
import { BALLOON_GROUPS } from './balloon.js';
import { HOSTILE_GROUPS } from './hostile.js';
import { HOSTILE_DEVICE_GROUPS } from './hostile-devices.js';
import { INPUT_GROUPS } from './input.js';
import { TRANSPORT_GROUPS } from './transports.js';
import { BLK_GROUPS } from './blk.js';
import { BLK_HOSTILE_GROUPS } from './blk-hostile.js';

export { BALLOON_GROUPS, BLK_GROUPS, BLK_HOSTILE_GROUPS, CONSOLE_GROUPS, CONSOLE_HOSTILE_GROUPS, HOSTILE_DEVICE_GROUPS, HOSTILE_GROUPS, INPUT_GROUPS, TRANSPORT_GROUPS };
export const ORACLE_GROUPS: readonly OracleGroup[] = [
  ...TRANSPORT_GROUPS,
  ...HOSTILE_GROUPS,
  ...CONSOLE_GROUPS,
  ...CONSOLE_HOSTILE_GROUPS,
  ...INPUT_GROUPS,
  ...BALLOON_GROUPS,
  ...HOSTILE_DEVICE_GROUPS,
  ...BLK_GROUPS,
  ...BLK_HOSTILE_GROUPS,
  ...NET_GROUPS,
  ...NET_HOSTILE_GROUPS,
];
