// The `virtio-ts-qemu` program as a module: `main` runs it with a command line. The CommonJS
// bundle of this file (dist/node/qemu.cjs) is what bin/virtio-ts-qemu runs, through the
// code-cache launcher (qemu-launch.ts), which is told through `onReady` when the machine is up.
// qemu-main.ts runs it on import instead (for bundles that are run directly).
import { runQemu } from './qemu.js';

export function main(argv: readonly string[], hooks: { onReady?: () => void } = {}): void {
  void runQemu(argv, hooks.onReady ? { onReady: hooks.onReady } : {}).catch((e: unknown) => {
    process.stderr.write(`virtio-ts-qemu: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exit(1);
  });
}
