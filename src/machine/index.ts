// The reference machines (issue 3, "Reference machine"): the browser-safe parts, exported from
// src/index.ts as the `machine` namespace. The Node-only parts (chardev.ts: sockets and stdio;
// src/cli/qemu.ts) are not reachable from here.
import { parseQemuCommandLine } from './cmdline.js';
import { buildMachine, type BuildOptions, type BuiltMachine } from './qemu-machine.js';
import { qmpJson, QmpServer } from './qmp-server.js';
import type { QtestTarget } from './qtest-target.js';

export * from './address-space.js';
export * from './qtest-target.js';
export * from './system-memory.js';
export * from './qom.js';
export * from './machine.js';
export * from './ioapic.js';
export * from './memory-layout.js';
export * from './pci-host.js';
export * from './pc-chipset.js';
export * from './pc.js';
export * from './microvm.js';
export * from './cmdline.js';
export * from './qemu-machine.js';
export * from './qtest-server.js';
export * from './qmp-server.js';
export * from './migration.js';

/** What `createMachineFromArgs` returns: the machine as a qtest target, and its QMP. */
export interface MachineFromArgs {
  target: QtestTarget;
  built: BuiltMachine;
  /**
   * QMP commands run directly (no socket): resolves with the `return` value as a client would
   * read it off the wire (written as QEMU's JSON, parsed back), rejects with QEMU's error; the
   * events the machine sent, as a QMP client collects them.
   */
  qmp: { execute(command: string, args?: Record<string, unknown>): Promise<unknown>; readonly events: { event: string; data?: unknown }[] };
  close(): void;
}

/**
 * Build one of our machines in-process from QEMU's argv (without the program name), exactly as
 * virtio-ts-qemu would, minus the sockets: `-qtest`/`-qmp`/`-chardev` are parsed and ignored,
 * and `-bios` must be passed as bytes in `opts.bios` (no file system here). Throws
 * `CmdlineError` with QEMU's message.
 */
export function createMachineFromArgs(argv: readonly string[], opts: BuildOptions = {}): MachineFromArgs {
  const cl = parseQemuCommandLine(argv);
  const built = buildMachine({ ...cl, bios: undefined }, opts);
  const server = new QmpServer(built.machine, { send: () => undefined });
  const events: { event: string; data?: unknown }[] = [];
  const listener = (event: string, data?: Record<string, unknown>): void => {
    events.push(data === undefined ? { event } : { event, data: JSON.parse(qmpJson(data)) as unknown });
  };
  built.machine.eventListeners.add(listener);
  return {
    target: built.machine,
    built,
    qmp: {
      execute: async (command, args) => {
        const ret = server.call(command, args ?? {});
        return ret === undefined ? ret : (JSON.parse(qmpJson(ret)) as unknown);
      },
      events,
    },
    close: () => {
      built.machine.eventListeners.delete(listener);
      server.dispose();
    },
  };
}
