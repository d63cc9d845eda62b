// What the oracle's vitest files and `npm run oracle` share: building the `virtio-ts-qemu`
// program from the current sources (so a stale dist/ is never what gets compared), and the sides.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { oursInProcessSide, oursSocketSide, qemuSide, type OracleSide } from '../../src/oracle/runner.js';

/** The package root: the nearest directory upwards with virtio-ts's package.json (works from a bundle in dist/ too). */
function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'virtio-ts') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the virtio-ts package root');
    dir = up;
  }
}

export const ROOT = findRoot();

/** Bundle src/cli/qemu-main.ts into a temporary directory; returns its path and a cleanup. */
export async function buildOurProgram(): Promise<{ program: string; cleanup: () => void }> {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-oracle-'));
  const program = join(dir, 'virtio-ts-qemu.mjs');
  await esbuild.build({ entryPoints: [join(ROOT, 'src/cli/qemu-main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: program, logLevel: 'error' });
  return { program, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** QEMU (the reference), ours in-process, and (with a program) ours over the qtest socket. */
export function oracleSides(qemuCommand: readonly string[], program?: string): OracleSide[] {
  const sides = [qemuSide(qemuCommand), oursInProcessSide()];
  if (program) sides.push(oursSocketSide(program));
  return sides;
}
