// A stopped VM does not run its devices: the same guest-side script runs on our machines
// in-process and on QEMU 7.2 (virtio-rng with ioeventfd=off, so that QEMU handles the notify
// inside the qtest write and its run-state check is what holds the request back). A request
// posted and notified while the VM is stopped (`stop`, or `-S` prelaunch) is not completed (used
// index and buffer unchanged, no interrupt) until `cont`, then it completes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { poll, type Machine, type QmpLike } from '../../src/driver/machine.js';
import { launchQemu } from '../../src/driver/qemu-launcher.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';

type Transport = 'pci' | 'mmio';

/** The machines, as QEMU's command line after the harness flags. */
const SPECS: Record<Transport, { machine: string; args: string[] }> = {
  pci: { machine: 'pc', args: ['-device', 'virtio-rng-pci,disable-legacy=on,ioeventfd=off'] },
  mmio: { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device'] },
};
/** The only -device lands on the last of microvm's 24 transports. */
const MMIO_BASE = MICROVM_MMIO_BASE + 0x200 * 23;
const FILL = 0x5a;

interface Rig {
  machine: Machine;
  qmp: QmpLike;
  close(): Promise<void>;
}

async function status(qmp: QmpLike): Promise<string> {
  return ((await qmp.execute('query-status')) as { status: string }).status;
}

/**
 * The scenario. `prelaunch`: the machine was started with -S; otherwise it runs and is stopped
 * with QMP `stop` first.
 */
async function requestWaitsForCont(rig: Rig, transport: Transport, prelaunch: boolean): Promise<void> {
  const { machine: m, qmp } = rig;
  const alloc = new GuestAllocator();
  if (!prelaunch) {
    expect(await status(qmp)).toBe('running');
    await qmp.execute('stop');
  }
  expect(await status(qmp)).toBe(prelaunch ? 'prelaunch' : 'paused');

  // Bring the device up: every register access works while stopped.
  let interrupted: () => Promise<boolean>;
  let drv: VirtioPciDriver | VirtioMmioDriver;
  if (transport === 'pci') {
    const dev = (await new GuestPciBus(m).scan()).find((d) => d.ids.vendorId === 0x1af4);
    if (!dev) throw new Error('no virtio function on the bus');
    const pci = await VirtioPciDriver.open(dev, { mode: 'modern', alloc });
    await pci.enableMsix();
    await pci.init(0n);
    await pci.msixSetupQueue(0, 0);
    interrupted = () => pci.queueInterrupted(0);
    drv = pci;
  } else {
    const mmio = new VirtioMmioDriver(m, MMIO_BASE, { alloc });
    expect(await mmio.probe()).toBe(4);
    await mmio.init(0n);
    interrupted = async () => ((await mmio.interruptStatus()) & 1) !== 0;
    drv = mmio;
  }
  const ring = await drv.setupQueue(0, { num: 8 });
  await drv.driverOk();

  const buf = alloc.alloc(16);
  await m.memset(buf, 16, FILL);
  const head = await ring.add([{ addr: buf, len: 16, write: true }]);
  await drv.notify(0);
  // Give QEMU's main loop time to run anything it would (entropy arrives from a bottom half).
  for (let i = 0; i < 10; i++) {
    await new Promise((r) => setTimeout(r, 10));
    expect(await ring.usedIdx()).toBe(0);
  }
  expect(await m.readBytes(buf, 16)).toEqual(new Uint8Array(16).fill(FILL));
  expect(await interrupted()).toBe(false);
  expect(await status(qmp)).toBe(prelaunch ? 'prelaunch' : 'paused');

  await qmp.execute('cont');
  expect(await status(qmp)).toBe('running');
  const used = await ring.waitUsed(1, { timeoutMs: 5000, what: 'the request held back while stopped' });
  expect(used).toEqual([{ id: head, len: 16 }]);
  expect(await m.readBytes(buf, 16)).not.toEqual(new Uint8Array(16).fill(FILL));
  expect(await poll(m, interrupted, { timeoutMs: 5000, what: 'the used-buffer interrupt after cont' })).toBe(true);
  await drv.reset();
}

function inProcess(transport: Transport, prelaunch: boolean): Rig {
  const s = SPECS[transport];
  const b = createMachineFromArgs(['-machine', s.machine, '-m', '16M', ...s.args, ...(prelaunch ? ['-S'] : [])]);
  return { machine: new InProcessMachine(b.target, { qmp: b.qmp }), qmp: b.qmp, close: async () => b.close() };
}

async function onQemu(transport: Transport, prelaunch: boolean): Promise<Rig> {
  const s = SPECS[transport];
  const p = await launchQemu({ command: QEMU_COMMAND, machine: s.machine, args: [...s.args, ...(prelaunch ? ['-S'] : [])], name: 'qemu' });
  return { machine: p.machine, qmp: p.qmp!, close: () => p.close() };
}

for (const transport of ['pci', 'mmio'] as const) {
  for (const prelaunch of [false, true]) {
    const what = `${transport === 'pci' ? 'pc, virtio-rng-pci' : 'microvm, virtio-rng-device'}${prelaunch ? ', -S' : ', stop'}`;
    describe(`run state, virtio-ts in-process (${what})`, () => {
      it('a request notified while stopped completes only after cont', async () => {
        const rig = inProcess(transport, prelaunch);
        try {
          await requestWaitsForCont(rig, transport, prelaunch);
        } finally {
          await rig.close();
        }
      });
    });
  }
}

if (qemuOrPolicy('run state on QEMU 7.2')) {
  for (const transport of ['pci', 'mmio'] as const) {
    for (const prelaunch of [false, true]) {
      const what = `${transport === 'pci' ? 'pc, virtio-rng-pci' : 'microvm, virtio-rng-device'}${prelaunch ? ', -S' : ', stop'}`;
      describe(`run state, QEMU 7.2 (${what})`, () => {
        let rig: Rig | undefined;
        beforeAll(async () => {
          rig = await onQemu(transport, prelaunch);
        }, 30_000);
        afterAll(async () => {
          await rig?.close();
        });
        it('a request notified while stopped completes only after cont', async () => {
          await requestWaitsForCont(rig!, transport, prelaunch);
        }, 30_000);
      });
    }
  }
}
