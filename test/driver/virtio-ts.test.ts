// The machine scenarios on our own code: in-process (InProcessMachine over a QtestTarget, no
// socket) and behind our qtest server (bin/virtio-ts-qemu, started with QEMU's command line).
// The mini-microvm fixture always runs; our reference machines and the server join the table as
// their files appear (see impls.ts for the contract). A file that appears without what the
// runner needs makes one test fail with the reason, never a silent skip.
import { describe, it } from 'vitest';
import { ALL_GROUPS, runScenarioGroups } from '../scenarios/machine/index.js';
import { OUR_MACHINE_FILES, miniMicrovmImpl, ourInProcessImpl, ourMachinesPresent, ourSocketImpl } from './impls.js';

runScenarioGroups(miniMicrovmImpl, ALL_GROUPS);

const present = ourMachinesPresent();

if (present.pc || present.microvm) {
  const impl = await ourInProcessImpl();
  if (typeof impl === 'string') {
    describe('virtio-ts in-process', () => {
      it('can build our reference machines from a QEMU command line', () => {
        throw new Error(impl);
      });
    });
  } else {
    runScenarioGroups(impl, ALL_GROUPS);
  }
}

if (present.bin) {
  runScenarioGroups(ourSocketImpl, ALL_GROUPS);
} else if (present.server) {
  describe('virtio-ts-qemu over qtest', () => {
    it('has bin/virtio-ts-qemu', () => {
      throw new Error(`src/machine/qtest-server.ts exists but ${OUR_MACHINE_FILES.bin} does not: the socket runs start the server exactly as QEMU is started`);
    });
  });
}
