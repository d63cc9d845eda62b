// The `virtio-ts` command. Runs when imported (bin/virtio-ts.js imports it).
import { runDemo } from './demo.js';

const USAGE = `usage: virtio-ts <command>

commands:
  demo [--legacy]   drive a virtio-rng over virtio-mmio from a guest-side script and print a trace
  help              this text`;

function main(argv: string[]): number {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'demo':
      runDemo(undefined, { legacy: rest.includes('--legacy') });
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      console.log(USAGE);
      return 0;
    default:
      console.error(`virtio-ts: unknown command '${cmd}'\n${USAGE}`);
      return 1;
  }
}

process.exitCode = main(process.argv.slice(2));
