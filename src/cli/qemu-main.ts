// Entry point of the `virtio-ts-qemu` command (bin/virtio-ts-qemu imports the bundle of this file).
import { runQemu } from './qemu.js';

void runQemu(process.argv.slice(2)).catch((e: unknown) => {
  process.stderr.write(`virtio-ts-qemu: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exit(1);
});
