// The `virtio-ts-qemu` program, run when imported (tests and tools bundle this file and run the
// bundle directly). bin/virtio-ts-qemu runs qemu-program.ts through the code-cache launcher.
import { main } from './qemu-program.js';

main(process.argv.slice(2));
