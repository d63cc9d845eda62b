// Migration between QEMU 7.2 and virtio-ts, in every direction: QEMU → ours, ours → QEMU,
// ours → ours (and, for the scenarios that migrate twice, QEMU → ours → QEMU, ours → QEMU → ours,
// ours → ours → ours), with the scenarios of scenarios.ts; and the virtio blob ours writes for each
// scenario compared byte by byte with QEMU's (blob-compare.ts declares what may differ).
import { describe, expect, it } from 'vitest';
import { qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison } from './blob-compare.js';
import { runMigrationScenario, type Impl } from './harness.js';
import { captureBoth, migrationEnds } from './ends.js';
import { MIGRATION_SCENARIOS } from './scenarios.js';

/** Directions for one migration, and the paths for two. */
const DIRECTIONS: readonly (readonly Impl[])[] = [
  ['qemu', 'ours'],
  ['ours', 'qemu'],
  ['ours', 'ours'],
];
const ROUND_TRIPS: readonly (readonly Impl[])[] = [
  ['qemu', 'ours', 'qemu'],
  ['ours', 'qemu', 'ours'],
  ['ours', 'ours', 'ours'],
];

if (qemuOrPolicy('migration interop between QEMU 7.2 and virtio-ts')) {
  const ends = migrationEnds();

  for (const dir of DIRECTIONS) {
    describe(`migration ${dir.join(' → ')}`, () => {
      for (const s of MIGRATION_SCENARIOS) {
        const path = (s.migrations ?? 1) === 1 ? dir : ROUND_TRIPS[DIRECTIONS.indexOf(dir)]!;
        it(`${s.name}${path.length > 2 ? ` (${path.join(' → ')})` : ''}`, async () => {
          const r = await runMigrationScenario(s, path.map((i) => ends[i]));
          expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual(path.slice(1).map((to, i) => `${path[i]}→${to}`));
        });
      }
    });
  }

  describe('virtio blob: ours against QEMU for the same script', () => {
    for (const s of MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        const [q, o] = await captureBoth(s, ends);
        const c = compareStreams(q.hops[0]!.stream, o.hops[0]!.stream, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
      });
    }
  });
}
