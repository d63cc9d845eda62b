#!/usr/bin/env node
// Launcher for the `virtio-ts` command: the CLI itself is built into dist/node/cli.js.
import '../dist/node/cli.js';
