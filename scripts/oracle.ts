// `npm run oracle`: run every oracle scenario on QEMU 7.2 and on virtio-ts (in-process and over
// the qtest socket of virtio-ts-qemu) with the same command lines, and print the table
// scenario × QEMU × ours × verdict, then the details of every scenario that is not equal.
// Exit status 1 if a scenario is DIFFERENT or STALE, or a hostile rule is broken on our side.
//
//   npm run oracle [-- --group REGEXP] [-- --scenario REGEXP] [-- --no-socket] [-- --transcripts DIR]
//
// QEMU=/path/to/qemu-system-x86_64 overrides the binary.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { commandAvailable } from '../src/driver/qemu-launcher.js';
import { formatDetails, formatTable, runGroup, type ScenarioResult } from '../src/oracle/runner.js';
import { oursRuleViolations } from '../src/oracle/verdict.js';
import { ORACLE_GROUPS } from '../test/oracle/scenarios/index.js';
import { buildOurProgram, oracleSides } from '../test/oracle/support.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<number> {
  const qemu = [process.env['QEMU'] ?? 'qemu-system-x86_64'];
  if (!commandAvailable(qemu)) {
    console.error(`${qemu[0]} is not installed: the oracle needs QEMU 7.2 (apt-get install -y --no-install-recommends qemu-system-x86)`);
    return 1;
  }
  const groupFilter = arg('--group');
  const scenarioFilter = arg('--scenario');
  const dumpDir = arg('--transcripts');
  const socket = !process.argv.includes('--no-socket');
  const built = socket ? await buildOurProgram() : undefined;
  const sides = oracleSides(qemu, built?.program);
  const t0 = performance.now();
  const results: ScenarioResult[] = [];
  try {
    for (const g of ORACLE_GROUPS) {
      if (groupFilter && !new RegExp(groupFilter).test(g.name)) continue;
      const scenarios = g.scenarios.filter((s) => !scenarioFilter || new RegExp(scenarioFilter).test(s.name));
      if (scenarios.length === 0) continue;
      process.stderr.write(`${g.name}: ${scenarios.length} scenarios ... `);
      const g0 = performance.now();
      const rs = await runGroup({ ...g, scenarios }, sides);
      process.stderr.write(`${((performance.now() - g0) / 1000).toFixed(1)} s\n`);
      results.push(...rs);
    }
  } finally {
    built?.cleanup();
  }
  const seconds = (performance.now() - t0) / 1000;

  console.log(formatTable(results, sides));
  const details = formatDetails(results);
  if (details) console.log(`\n${details}`);

  const violations: string[] = [];
  for (const r of results) {
    if (!r.hostile) continue;
    for (const v of oursRuleViolations(r.runs['qemu']?.verdict, r.runs['ours']?.verdict)) violations.push(`${r.scenario.name}: ${v}`);
  }
  const count = (s: string): number => results.filter((r) => r.status === s).length;
  console.log(
    `\n${results.length} scenarios in ${seconds.toFixed(1)} s: ${count('equal')} equal, ${count('expected')} expected differences, ` +
      `${count('DIFFERENT')} DIFFERENT, ${count('STALE')} stale expectations; ${violations.length} hostile rule violations on our side`,
  );
  for (const v of violations) console.log(`  ${v}`);

  if (dumpDir) {
    mkdirSync(dumpDir, { recursive: true });
    results.forEach((r, i) => {
      for (const [side, run] of Object.entries(r.runs)) {
        writeFileSync(join(dumpDir, `${String(i + 1).padStart(3, '0')}-${side}.txt`), `${r.group}\n${r.scenario.name}\n\n${run.transcript.toString()}\n`);
      }
    });
  }
  return count('DIFFERENT') + count('STALE') + violations.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e);
    process.exit(2);
  },
);
