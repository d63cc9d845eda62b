// What bin/virtio-ts-qemu runs (built to dist/node/qemu-launch.cjs, CommonJS, beside
// dist/node/qemu.cjs): the program's bundle compiled through the V8 code cache (code-cache.ts),
// then its `main` with the command line. Once the machine is up, a cache that was missing or
// stale is written (at exit, so it holds what the run compiled).
import { join } from 'node:path';
import { loadBundle } from './code-cache.js';

// This file's own `require` resolves from dist/node/, beside the bundle.
const bundle = loadBundle(join(__dirname, 'qemu.cjs'), { require });
const main = bundle.exports['main'] as (argv: readonly string[], hooks: { onReady?: () => void }) => void;
main(process.argv.slice(2), { onReady: () => bundle.saveWhenDone() });
