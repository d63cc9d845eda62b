// Every machine scenario group, for the runners in test/driver/*.test.ts.
import { MMIO_GROUPS } from './mmio.js';
import { PCI_GROUPS } from './pci.js';
import type { ScenarioGroup } from './suite.js';

export { runScenarioGroups, type MachineImpl, type MachineSpec, type ScenarioGroup } from './suite.js';

export const ALL_GROUPS: readonly ScenarioGroup[] = [...PCI_GROUPS, ...MMIO_GROUPS];
