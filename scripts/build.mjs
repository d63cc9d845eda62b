#!/usr/bin/env node
// Build virtio-ts into dist/:
//   dist/node/index.js     ESM bundle of src/index.ts for Node (platform node)
//   dist/node/cli.js       ESM bundle of src/cli/main.ts for Node (the `virtio-ts` command)
//   dist/node/qemu.js      ESM bundle of src/cli/qemu-main.ts for Node (the `virtio-ts-qemu` command)
//   dist/node/node.js      ESM bundle of src/node.ts (`virtio-ts/node`: driver library with qtest/QMP/launcher)
//   dist/browser/index.js  ESM bundle of src/index.ts for browsers (platform browser)
//   dist/types/            declarations from `tsc -p tsconfig.build.json`
//
// Usage: node scripts/build.mjs [--quiet]
//   --quiet  print nothing on success (errors are always printed)
import { spawnSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const quiet = process.argv.includes('--quiet');
const log = (msg) => {
  if (!quiet) console.log(msg);
};

const common = {
  absWorkingDir: root,
  bundle: true,
  format: 'esm',
  sourcemap: true,
  logLevel: quiet ? 'error' : 'warning',
};

const builds = [
  {
    ...common,
    platform: 'node',
    target: 'node20',
    entryPoints: { index: 'src/index.ts', cli: 'src/cli/main.ts', node: 'src/node.ts', qemu: 'src/cli/qemu-main.ts' },
    outdir: 'dist/node',
  },
  {
    ...common,
    platform: 'browser',
    target: 'es2022',
    entryPoints: { index: 'src/index.ts' },
    outdir: 'dist/browser',
  },
];

const started = performance.now();
for (const dir of ['dist/node', 'dist/browser', 'dist/types']) {
  rmSync(join(root, dir), { recursive: true, force: true });
}

try {
  for (const options of builds) {
    const result = await esbuild.build({ ...options, metafile: true });
    for (const out of Object.keys(result.metafile.outputs)) {
      if (!out.endsWith('.map')) log(`  ${out}`);
    }
  }
} catch {
  // esbuild has already printed the errors.
  console.error('build: esbuild failed');
  process.exit(1);
}

// Declarations: the TypeScript compiler (tsc 7, native) with tsconfig.build.json.
const require = createRequire(import.meta.url);
const tsc = join(dirname(require.resolve('typescript/package.json')), 'bin', 'tsc');
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], {
  cwd: root,
  stdio: 'inherit',
});
if (result.status !== 0) {
  console.error(
    `build: declaration emit (tsc -p tsconfig.build.json) failed (${result.error ?? `exit ${result.status}`})`,
  );
  process.exit(1);
}
log(`  ${relative(root, join(root, 'dist/types'))}/`);
log(`build: done in ${((performance.now() - started) / 1000).toFixed(1)} s`);
