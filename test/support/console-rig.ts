// A virtio-serial on our microvm (virtio-mmio version 2), built from QEMU's command line, driven
// in-process by the async driver library: the device as a guest sees it, with chardevs the test
// holds. Transport 23 is the first one QEMU and we fill.
import { GuestAllocator } from '../../src/driver/alloc.js';
import { ConsoleDriver, type ControlMessage } from '../../src/driver/console.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import type { CharBackend } from '../../src/devices/console/chardev.js';
import { VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, VIRTIO_CONSOLE_F_EMERG_WRITE, VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_PORT_OPEN, VIRTIO_CONSOLE_PORT_READY } from '../../src/devices/console/constants.js';
import type { VirtIOSerial, VirtIOSerialPort } from '../../src/devices/console/virtio-serial.js';
import { createMachineFromArgs, type MachineFromArgs } from '../../src/machine/index.js';
import type { MicrovmMachine } from '../../src/machine/microvm.js';
import { VIRTIO_F_VERSION_1, bit } from '../../src/virtio/constants.js';

export const MULTIPORT = bit(VIRTIO_CONSOLE_F_MULTIPORT);
export const EMERG = bit(VIRTIO_CONSOLE_F_EMERG_WRITE);

export interface ConsoleTestRig {
  built: MachineFromArgs;
  machine: MicrovmMachine;
  m: InProcessMachine;
  drv: VirtioMmioDriver;
  con: ConsoleDriver;
  vser: VirtIOSerial;
  ports: VirtIOSerialPort[];
  alloc: GuestAllocator;
}

/**
 * `args` after the machine options (e.g. `-device virtio-serial-device -device virtconsole,...`);
 * `chardevs` backs the `-chardev`s they name.
 */
export async function consoleRig(args: readonly string[], chardevs: ReadonlyMap<string, CharBackend> = new Map()): Promise<ConsoleTestRig> {
  const built = createMachineFromArgs(['-machine', 'microvm', '-m', '16M', '-global', 'virtio-mmio.force-legacy=false', ...args], { chardevs });
  const machine = built.built.machine as MicrovmMachine;
  const m = new InProcessMachine(built.target, { qmp: built.qmp });
  const alloc = new GuestAllocator();
  const drv = new VirtioMmioDriver(m, MICROVM_MMIO_BASE + 0x200 * 23, { alloc });
  await drv.probe();
  const vser = built.built.devices[0]!.device as VirtIOSerial;
  return { built, machine, m, drv, con: new ConsoleDriver(drv, alloc), vser, ports: built.built.children.map((c) => c.object as VirtIOSerialPort), alloc };
}

/** Features, control queues (8 buffers of 64 bytes), the queues of `ports`, DRIVER_OK. */
export async function bringUp(r: ConsoleTestRig, ports: readonly number[], features = MULTIPORT | EMERG, control = true): Promise<bigint> {
  const f = await r.drv.init(features | bit(VIRTIO_F_VERSION_1));
  if (control) await r.con.setupControl({ rxBuffers: 8, bufLen: 64 });
  for (const p of ports) await r.con.setupPort(p);
  if (control) await r.con.controlRx!.notify();
  await r.drv.driverOk();
  return f;
}

/** DEVICE_READY and PORT_READY for `ports` (their answers are returned), PORT_OPEN 1 for `open`. */
export async function probe(r: ConsoleTestRig, ports: readonly number[], open: readonly number[] = ports): Promise<ControlMessage[]> {
  const msgs: ControlMessage[] = [];
  await r.con.sendControl(VIRTIO_CONSOLE_BAD_ID, VIRTIO_CONSOLE_DEVICE_READY, 1);
  msgs.push(...(await r.con.takeControl()));
  for (const p of ports) {
    await r.con.sendControl(p, VIRTIO_CONSOLE_PORT_READY, 1);
    msgs.push(...(await r.con.takeControl()));
  }
  for (const p of open) await r.con.sendControl(p, VIRTIO_CONSOLE_PORT_OPEN, 1);
  msgs.push(...(await r.con.takeControl()));
  return msgs;
}

export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
export const dec = (b: Uint8Array): string => new TextDecoder().decode(b);
export const msg = (c: ControlMessage): [number, number, number] => [c.id, c.event, c.value];
