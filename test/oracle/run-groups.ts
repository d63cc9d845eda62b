// Registers the oracle groups as vitest suites: one run of each group on every side (QEMU, ours
// in-process, ours over the qtest socket) in beforeAll, then one test per scenario that judges
// its result. Used by oracle-transports.test.ts and oracle-hostile.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatDetails, runGroup, type OracleSide, type ScenarioResult } from '../../src/oracle/runner.js';
import type { OracleGroup } from '../../src/oracle/scenario.js';
import { oursRuleViolations } from '../../src/oracle/verdict.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { buildOurProgram, oracleSides } from './support.js';

/** Judge one scenario; throws with both sides shown at the first difference. */
export function judge(r: ScenarioResult): void {
  const problems: string[] = [];
  if (r.status === 'DIFFERENT' || r.status === 'STALE') problems.push(`status ${r.status}`);
  const ours = r.runs['ours'];
  const socket = r.runs['ours-socket'];
  if (ours?.threw) problems.push(`ours threw: ${ours.threw}`);
  if (socket?.threw) problems.push(`ours over the socket threw: ${socket.threw}`);
  if (r.hostile) {
    problems.push(...oursRuleViolations(r.runs['qemu']?.verdict, ours?.verdict));
    if (socket) problems.push(...oursRuleViolations(r.runs['qemu']?.verdict, socket.verdict).map((p) => `socket: ${p}`));
  } else if (r.runs['qemu']?.threw) {
    // A conformance scenario must run through on the reference; if not, the scenario is wrong.
    problems.push(`the scenario threw on QEMU: ${r.runs['qemu'].threw}`);
  }
  expect(problems, `${r.scenario.name}\n${formatDetails([r])}`).toEqual([]);
}

/** One describe per group; everything needs QEMU (missing: fail with CI=true, skip loudly otherwise). */
export function registerOracleGroups(what: string, groups: readonly OracleGroup[]): void {
  if (!qemuOrPolicy(what)) return;
  let sides: OracleSide[] = [];
  let cleanup: (() => void) | undefined;
  beforeAll(async () => {
    const built = await buildOurProgram();
    cleanup = built.cleanup;
    sides = oracleSides(QEMU_COMMAND, built.program);
  }, 60_000);
  afterAll(() => cleanup?.());
  for (const g of groups) {
    describe(`${what}: ${g.name}`, () => {
      let results: ScenarioResult[] = [];
      beforeAll(async () => {
        results = await runGroup(g, sides);
      }, 180_000);
      g.scenarios.forEach((s, i) => {
        it(s.name, () => {
          const r = results[i];
          if (!r) throw new Error(`group '${g.name}' did not run`);
          judge(r);
        });
      });
    });
  }
}
