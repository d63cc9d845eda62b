// The `virtio-ts` command. Runs when imported (bin/virtio-ts.js imports it).
import { runDemo } from './demo.js';
import { runInspect } from './inspect.js';
import { runQemu } from './qemu.js';
import { runV86, V86_USAGE } from './v86.js';

const USAGE = `usage: virtio-ts <command>

commands:
  demo [--legacy] [--quiet]
                    a machine with virtio-rng, virtio-blk and virtio-console driven by a
                    guest-side script, migrated in the middle of disk I/O, every byte checked;
                    prints the ring operations (--quiet: only the steps and checks)
  inspect FILE [--json]
                    show a QEMU 7.2 migration stream (or ours): every section, each virtio
                    device's state decoded field by field with its offset
  qemu ARGS...      a qtest server with QEMU's command line (the same as virtio-ts-qemu ARGS...)
  v86 --kernel BZIMAGE [--initrd FILE] [--disk IMG] [...]
                    boot Linux in v86 (npm install v86) with our rng, blk, console and input
                    on its PCI bus, the guest console on this terminal (v86 --help for more)
  help              this text`;

function main(argv: string[]): number {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'inspect':
      return runInspect(rest);
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

const argv = process.argv.slice(2);
if (argv[0] === 'demo') {
  const rest = argv.slice(1);
  void runDemo(undefined, { legacy: rest.includes('--legacy'), trace: !rest.includes('--quiet') }).then(
    (problems) => {
      process.exitCode = problems === 0 ? 0 : 1;
    },
    (e: unknown) => {
      console.error(`virtio-ts demo: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      process.exitCode = 1;
    },
  );
} else if (argv[0] === 'v86') {
  const rest = argv.slice(1);
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(V86_USAGE);
  } else {
    void runV86(rest).then(
      (code) => process.exit(code),
      (e: unknown) => {
        console.error(`virtio-ts v86: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
        process.exit(1);
      },
    );
  }
} else if (argv[0] === 'qemu') {
  // Long-running: it exits by itself (QMP quit, a signal, or a start-up error).
  void runQemu(argv.slice(1), { prog: 'virtio-ts qemu' }).catch((e: unknown) => {
    console.error(`virtio-ts qemu: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  });
} else {
  process.exitCode = main(argv);
}
