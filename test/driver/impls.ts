// The table of Machine implementations the scenario runners use. Entries appear as the code
// behind them appears:
//   - real QEMU 7.2 over qtest + QMP (when qemu-system-x86_64 is installed; required in CI);
//   - the in-process mini-microvm fixture (always; built from the existing mmio transport);
//   - our reference machines in-process (when src/machine/pc.ts / microvm.ts exist);
//   - our machines behind the qtest server, started exactly as QEMU is (when
//     src/machine/qtest-server.ts and bin/virtio-ts-qemu exist).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { InProcessMachine } from '../../src/driver/inproc.js';
import type { QmpLike } from '../../src/driver/machine.js';
import type { QtestTarget } from '../../src/machine/qtest-target.js';
import { commandAvailable, launchQemu } from '../../src/driver/qemu-launcher.js';
import type { MachineImpl, MachineSpec } from '../scenarios/machine/suite.js';
import { miniMicrovmFromArgs } from '../support/mini-microvm.js';
import { requiredToolOrPolicy } from '../support/required-tool.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');

/** The QEMU binary (override with QEMU=/path/to/qemu-system-x86_64). */
export const QEMU_COMMAND = [process.env['QEMU'] ?? 'qemu-system-x86_64'];

let qemuChecked: boolean | undefined;
export function qemuInstalled(): boolean {
  qemuChecked ??= commandAvailable(QEMU_COMMAND);
  return qemuChecked;
}

/**
 * The documented missing-QEMU policy: when qemu-system-x86_64 is missing, a run with CI=true
 * fails (one failing test says why), and a local run skips the QEMU tests with a loud warning.
 * Returns true when QEMU is there and the caller should register its tests.
 */
export function qemuOrPolicy(what: string): boolean {
  return requiredToolOrPolicy(what, qemuInstalled(), QEMU_COMMAND[0]!, 'QEMU 7.2: apt-get install -y --no-install-recommends qemu-system-x86');
}

export const qemuImpl: MachineImpl = {
  name: 'qemu 7.2',
  supports: () => true,
  async start(spec: MachineSpec) {
    const p = await launchQemu({ command: QEMU_COMMAND, machine: spec.machine, args: spec.args, name: 'qemu' });
    return p.machine;
  },
};

/** The fixture: supports what `miniMicrovmFromArgs` parses. */
export const miniMicrovmImpl: MachineImpl = {
  name: 'virtio-ts in-process (mini-microvm fixture)',
  supports(spec) {
    try {
      miniMicrovmFromArgs(spec.machine, spec.args);
      return true;
    } catch {
      return false;
    }
  },
  async start(spec) {
    const target = miniMicrovmFromArgs(spec.machine, spec.args);
    return new InProcessMachine(target, { name: 'mini-microvm', qmp: target.qmp });
  },
};

/** Files whose appearance adds implementations (issue 3, "Reference machine" and "virtio-ts-qemu"). */
export const OUR_MACHINE_FILES = {
  pc: join(ROOT, 'src/machine/pc.ts'),
  microvm: join(ROOT, 'src/machine/microvm.ts'),
  server: join(ROOT, 'src/machine/qtest-server.ts'),
  bin: join(ROOT, 'bin/virtio-ts-qemu'),
};

export function ourMachinesPresent(): { pc: boolean; microvm: boolean; server: boolean; bin: boolean } {
  return {
    pc: existsSync(OUR_MACHINE_FILES.pc),
    microvm: existsSync(OUR_MACHINE_FILES.microvm),
    server: existsSync(OUR_MACHINE_FILES.server),
    bin: existsSync(OUR_MACHINE_FILES.bin),
  };
}

/**
 * Building our machines in-process from a QEMU command line. The contract with src/machine: one
 * of these modules exports one of these functions, taking QEMU's argv (without the program
 * name) and returning the machine as a QtestTarget, plus its QMP handler when it has one:
 *   createMachineFromArgs(argv: string[]): { target: QtestTarget; qmp?: QmpLike; close?(): void | Promise<void> }
 */
const FACTORY_MODULES = ['src/machine/qemu-args.ts', 'src/machine/cli.ts', 'src/machine/index.ts', 'src/machine/qtest-server.ts', 'src/machine/pc.ts', 'src/machine/microvm.ts'];
const FACTORY_NAMES = ['createMachineFromArgs', 'machineFromArgs', 'createMachineFromCommandLine'];

interface BuiltMachine {
  target: QtestTarget;
  qmp?: QmpLike;
  close?(): void | Promise<void>;
}

/** The in-process implementation of our machines, or the reason it cannot be bound. */
export async function ourInProcessImpl(root = ROOT): Promise<MachineImpl | string> {
  for (const rel of FACTORY_MODULES) {
    const file = join(root, rel);
    if (!existsSync(file)) continue;
    const mod = (await import(/* @vite-ignore */ pathToFileURL(file).href)) as Record<string, unknown>;
    for (const n of FACTORY_NAMES) {
      const f = mod[n];
      if (typeof f !== 'function') continue;
      const build = f as (argv: string[]) => BuiltMachine | Promise<BuiltMachine>;
      return {
        name: 'virtio-ts in-process',
        supports: () => true,
        async start(spec) {
          const b = await build(['-machine', spec.machine, '-m', '16M', ...spec.args]);
          return new InProcessMachine(b.target, { name: 'virtio-ts', ...(b.qmp ? { qmp: b.qmp } : {}), ...(b.close ? { onClose: () => b.close!() } : {}) });
        },
      };
    }
  }
  return `src/machine/pc.ts or microvm.ts exists, but none of ${FACTORY_MODULES.join(', ')} exports ${FACTORY_NAMES.join(' / ')}(argv) -> { target: QtestTarget, qmp? }: export it, or teach test/driver/impls.ts how to build our machines in-process`;
}

/** Our machines behind the qtest server, started exactly as QEMU is (same command line). */
export const ourSocketImpl: MachineImpl = {
  name: 'virtio-ts-qemu over qtest',
  supports: () => true,
  async start(spec) {
    const p = await launchQemu({ command: [process.execPath, OUR_MACHINE_FILES.bin], machine: spec.machine, args: spec.args, name: 'virtio-ts-qemu' });
    return p.machine;
  },
};
