// Migration of virtio-net between QEMU 7.2 and virtio-ts, every direction (QEMU → QEMU to check
// the scenarios themselves, QEMU → ours, ours → QEMU, ours → ours), each end with its own UDP
// netdev whose other end the test holds, and the virtio-net section ours writes for each
// scenario compared byte by byte with QEMU's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { buildOurProgram } from '../oracle/support.js';
import { compareStreams, formatStreamComparison } from './blob-compare.js';
import { NET_MIGRATION_SCENARIOS } from './net-scenarios.js';
import { oursEndpoint, qemuEndpoint, runMigrationScenario, type Endpoint, type Impl } from './harness.js';

const DIRECTIONS: readonly (readonly Impl[])[] = [
  ['qemu', 'qemu'],
  ['qemu', 'ours'],
  ['ours', 'qemu'],
  ['ours', 'ours'],
];

if (qemuOrPolicy('migration of virtio-net between QEMU 7.2 and virtio-ts')) {
  const ends: Record<Impl, Endpoint> = { qemu: qemuEndpoint(QEMU_COMMAND), ours: { impl: 'ours', command: [] } };
  let cleanup: (() => void) | undefined;
  beforeAll(async () => {
    const built = await buildOurProgram();
    cleanup = built.cleanup;
    ends.ours = oursEndpoint(built.program);
  }, 60_000);
  afterAll(() => cleanup?.());

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
        const [q, o] = await Promise.all([runMigrationScenario(s, [ends.qemu], { captureOnly: true }), runMigrationScenario(s, [ends.ours], { captureOnly: true })]);
        const c = compareStreams(q.hops[0]!.stream, o.hops[0]!.stream, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
      }, 20_000);
    }
  });
}
