#!/usr/bin/env node
// Build virtio-ts into dist/:
//   dist/node/index.js     ESM bundle of src/index.ts for Node (platform node)
//   dist/node/cli.js       ESM bundle of src/cli/main.ts for Node (the `virtio-ts` command)
//   dist/node/qemu.cjs     CommonJS bundle of src/cli/qemu-program.ts (the `virtio-ts-qemu` program)
//   dist/node/qemu-launch.cjs  what bin/virtio-ts-qemu runs: qemu.cjs through the V8 code cache
//                          (src/cli/qemu-launch.ts, src/cli/code-cache.ts). CommonJS because Node's
//                          ESM loader costs several ms more at start-up (issue 11).
//   dist/node/node.js      ESM bundle of src/node.ts (`virtio-ts/node`: driver library with qtest/QMP/launcher)
//   dist/node/v86.js       ESM bundle of src/v86.ts (`virtio-ts/v86`: the v86 adapter)
//   dist/browser/index.js  ESM bundle of src/index.ts for browsers (platform browser)
//   dist/browser/v86.js    the v86 adapter for browsers
// v86 itself is an optional peer dependency: never bundled (`external`), and the adapter's
// bundles must not import it at all (checked below); only the CLI's `v86` command loads it.
//   dist/types/            declarations from `tsc -p tsconfig.build.json`
//   dist/learn/            the learning page: index.html and learn.js (src/learn/page.ts as one
//                          classic script, not a module, so the page opens from the file system)
//
// Usage: node scripts/build.mjs [--quiet]
//   --quiet  print nothing on success (errors are always printed)
import { spawnSync } from 'node:child_process';
import { copyFileSync, rmSync } from 'node:fs';
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

/** The adapter types v86 structurally: a bundle that imports it would make the peer mandatory. */
function noV86Import(metafile, outputs) {
  for (const out of outputs) {
    const o = metafile.outputs[out];
    if (o?.imports.some((i) => i.path === 'v86' || i.path.startsWith('v86/'))) throw new Error(`${out} imports v86`);
  }
}

const builds = [
  {
    ...common,
    platform: 'node',
    target: 'node20',
    entryPoints: { index: 'src/index.ts', cli: 'src/cli/main.ts', node: 'src/node.ts', v86: 'src/v86.ts' },
    outdir: 'dist/node',
    external: ['v86'],
    check: (metafile) => noV86Import(metafile, ['dist/node/v86.js', 'dist/node/index.js']),
  },
  {
    ...common,
    platform: 'node',
    target: 'node20',
    format: 'cjs',
    entryPoints: { qemu: 'src/cli/qemu-program.ts', 'qemu-launch': 'src/cli/qemu-launch.ts' },
    outExtension: { '.js': '.cjs' },
    outdir: 'dist/node',
    // import() becomes require() (modules loaded on first use, e.g. child_process for exec:
    // migration): the launcher runs qemu.cjs through vm.Script, which has no dynamic import().
    supported: { 'dynamic-import': false },
    // import.meta is empty in CommonJS: code that needs it must not reach virtio-ts-qemu.
    logOverride: { 'empty-import-meta': 'error' },
    // Whitespace and comments out (identifiers kept, for stack traces; the source map is
    // beside it): a start reads and decodes the whole source, and without the comments' few
    // non-ASCII characters it is a one-byte string, a third the size. Minus ~2.5 ms per start.
    minifyWhitespace: true,
    minifySyntax: true,
    check: (metafile) => {
      for (const [out, o] of Object.entries(metafile.outputs)) {
        const dyn = o.imports.filter((i) => i.kind === 'dynamic-import');
        if (dyn.length) throw new Error(`${out}: dynamic import() of ${dyn.map((i) => i.path).join(', ')} (not available under vm.Script)`);
      }
    },
  },
  {
    ...common,
    platform: 'browser',
    target: 'es2022',
    entryPoints: { index: 'src/index.ts', v86: 'src/v86.ts' },
    outdir: 'dist/browser',
    external: ['v86'],
    check: (metafile) => noV86Import(metafile, ['dist/browser/v86.js', 'dist/browser/index.js']),
  },
  {
    ...common,
    platform: 'browser',
    target: 'es2022',
    format: 'iife',
    entryPoints: { learn: 'src/learn/page.ts' },
    outdir: 'dist/learn',
    check: () => copyFileSync(join(root, 'src/learn/index.html'), join(root, 'dist/learn/index.html')),
  },
];

const started = performance.now();
for (const dir of ['dist/node', 'dist/browser', 'dist/types', 'dist/learn']) {
  rmSync(join(root, dir), { recursive: true, force: true });
}

try {
  for (const { check, ...options } of builds) {
    const result = await esbuild.build({ ...options, metafile: true });
    check?.(result.metafile);
    for (const out of Object.keys(result.metafile.outputs)) {
      if (!out.endsWith('.map')) log(`  ${out}`);
    }
  }
} catch (e) {
  // esbuild has already printed its errors; a check's are printed here.
  if (!(e instanceof Error && 'errors' in e)) console.error(`build: ${e instanceof Error ? e.message : String(e)}`);
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
