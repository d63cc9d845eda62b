// Migration QEMU 7.2 → QEMU 7.2: every scenario of scenarios.ts, which validates the harness and
// the scenarios on the reference, and the virtio blob of each scenario compared between two
// independent QEMU runs of the same script (the blob must be a function of the script).
import { describe, expect, it } from 'vitest';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { qemuEndpoint, runMigrationScenario } from './harness.js';
import { MIGRATION_SCENARIOS } from './scenarios.js';

if (qemuOrPolicy('migration QEMU → QEMU')) {
  const qemu = qemuEndpoint(QEMU_COMMAND);
  describe('migration QEMU → QEMU', () => {
    for (const s of MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        const r = await runMigrationScenario(s, Array.from({ length: (s.migrations ?? 1) + 1 }, () => qemu));
        expect(r.hops.length).toBe(s.migrations ?? 1);
      });
    }
  });
}
