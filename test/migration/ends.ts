// What every migration interop test file starts from: the four directions between QEMU 7.2 and
// virtio-ts, both ends' launch commands (ours bundled from the current sources once per file,
// so a stale dist/ is never what runs), and the capture of one scenario on both for the
// byte-for-byte blob comparison.
import { afterAll, beforeAll } from 'vitest';
import { QEMU_COMMAND } from '../driver/impls.js';
import { buildOurProgram } from '../oracle/support.js';
import { oursEndpoint, qemuEndpoint, runMigrationScenario, type Endpoint, type Impl, type MigrationScenario, type RunResult } from './harness.js';

/** QEMU → QEMU checks the scenario itself; the other three check us. */
export const DIRECTIONS: readonly (readonly Impl[])[] = [
  ['qemu', 'qemu'],
  ['qemu', 'ours'],
  ['ours', 'qemu'],
  ['ours', 'ours'],
];

/**
 * Both ends, for use inside a describe/if block: registers the bundling of our program before
 * the file's tests and its removal after them. `ours` is filled in by then.
 */
export function migrationEnds(): Record<Impl, Endpoint> {
  const ends: Record<Impl, Endpoint> = { qemu: qemuEndpoint(QEMU_COMMAND), ours: { impl: 'ours', command: [] } };
  let cleanup: (() => void) | undefined;
  beforeAll(async () => {
    const built = await buildOurProgram();
    cleanup = built.cleanup;
    ends.ours = oursEndpoint(built.program);
  }, 60_000);
  afterAll(() => cleanup?.());
  return ends;
}

/** The source's stream of `s` on QEMU and on ours, captured side by side. */
export function captureBoth(s: MigrationScenario, ends: Record<Impl, Endpoint>): Promise<[RunResult, RunResult]> {
  return Promise.all([runMigrationScenario(s, [ends.qemu], { captureOnly: true }), runMigrationScenario(s, [ends.ours], { captureOnly: true })]);
}
