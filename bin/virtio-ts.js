#!/usr/bin/env node
// Launcher for the `virtio-ts` command: the CLI itself is built into dist/node/cli.js (ESM).
// This file is CommonJS (bin/package.json, for bin/virtio-ts-qemu's start-up), so it imports
// the CLI dynamically.
'use strict';
import('../dist/node/cli.js').catch((e) => {
  process.stderr.write(`virtio-ts: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
