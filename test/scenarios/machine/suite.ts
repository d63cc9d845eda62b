// Machine scenarios: written once against the async `Machine` interface, run by every
// implementation in test/driver/*.test.ts (real QEMU over qtest, our machines in-process, our
// machines behind the qtest server). A group is one machine (one QEMU command line) shared by its
// scenarios, which run in order; each scenario resets the device it drives and leaves MSI-X off.
import { afterAll, beforeAll, describe, it } from 'vitest';
import { GuestAllocator } from '../../../src/driver/alloc.js';
import type { Machine } from '../../../src/driver/machine.js';

/** A machine as QEMU's command line describes it (the options after the harness's own flags). */
export interface MachineSpec {
  /** `-machine` value: 'pc', 'microvm', 'microvm,ioapic2=off', ... */
  machine: string;
  /** `-device`, `-global`, ... pairs. */
  args: readonly string[];
}

/** One way of running a machine. */
export interface MachineImpl {
  /** 'qemu 7.2', 'virtio-ts in-process', ... */
  name: string;
  /** The implementation can build this machine (a fixture may offer only some). */
  supports(spec: MachineSpec): boolean;
  start(spec: MachineSpec): Promise<Machine>;
}

export interface ScenarioContext {
  machine: Machine;
  /** Fresh for every scenario: RAM from 1 MiB to 16 MiB. */
  alloc: GuestAllocator;
  /** Implementation name, for messages. */
  impl: string;
}

export interface Scenario {
  name: string;
  run(ctx: ScenarioContext): Promise<void>;
}

export interface ScenarioGroup {
  name: string;
  spec: MachineSpec;
  scenarios: Scenario[];
}

export const RAM_START = 0x10_0000;
export const RAM_END = 0x100_0000;

/** Register one describe per group the implementation supports, one machine per describe. */
export function runScenarioGroups(impl: MachineImpl, groups: readonly ScenarioGroup[]): void {
  for (const g of groups) {
    if (!impl.supports(g.spec)) continue;
    describe(`${impl.name}: ${g.name}`, () => {
      let machine: Machine | undefined;
      beforeAll(async () => {
        machine = await impl.start(g.spec);
      }, 30_000);
      afterAll(async () => {
        await machine?.close();
      });
      for (const s of g.scenarios) {
        it(s.name, async () => {
          if (!machine) throw new Error(`${impl.name}: machine for '${g.name}' did not start`);
          await s.run({ machine, alloc: new GuestAllocator(RAM_START, RAM_END), impl: impl.name });
        });
      }
    });
  }
}
