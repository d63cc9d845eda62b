// Migration of virtio-net between QEMU 7.2 and virtio-ts, every direction (QEMU → QEMU to check
// the scenarios themselves, QEMU → ours, ours → QEMU, ours → ours), each end with its own UDP
// netdev whose other end the test holds, and the virtio-net section ours writes for each
// scenario compared byte by byte with QEMU's.
import { describe, expect, it } from 'vitest';
import { qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison } from './blob-compare.js';
import { NET_MIGRATION_SCENARIOS } from './net-scenarios.js';
import { runMigrationScenario } from './harness.js';
import { DIRECTIONS, captureBoth, migrationEnds } from './ends.js';

if (qemuOrPolicy('migration of virtio-net between QEMU 7.2 and virtio-ts')) {
  const ends = migrationEnds();

  for (const dir of DIRECTIONS) {
    describe(`net migration ${dir.join(' → ')}`, () => {
      for (const s of NET_MIGRATION_SCENARIOS) {
        it(s.name, async () => {
          const r = await runMigrationScenario(s, dir.map((i) => ends[i]));
          expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual([`${dir[0]}→${dir[1]}`]);
        }, 20_000);
      }
    });
  }

  describe('net virtio blob: ours against QEMU for the same script', () => {
    for (const s of NET_MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        const [q, o] = await captureBoth(s, ends);
        const c = compareStreams(q.hops[0]!.stream, o.hops[0]!.stream, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
      }, 20_000);
    }
  });
}
