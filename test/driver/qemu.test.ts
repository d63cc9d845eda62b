// The machine scenarios on real QEMU 7.2 (qemu-system-x86_64 -accel tcg with a halt-only
// firmware, driven over qtest + QMP unix sockets). One QEMU per scenario group.
import { ALL_GROUPS, runScenarioGroups } from '../scenarios/machine/index.js';
import { qemuImpl, qemuOrPolicy } from './impls.js';

if (qemuOrPolicy('QEMU 7.2 machine scenarios')) runScenarioGroups(qemuImpl, ALL_GROUPS);
