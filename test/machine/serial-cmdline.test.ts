// virtio-serial and its ports on QEMU's command line: what virtio-ts-qemu builds (bus names, the
// bus a port goes to, port ids, vectors and class, chardevs) and the refusals, each message
// checked against ours and, when it is installed, against qemu-system-x86_64 7.2 itself.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import type { VirtIOSerial, VirtIOSerialPort } from '../../src/devices/console/virtio-serial.js';
import { CmdlineError, parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';

const BASE = ['-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', '16M'];

function build(args: string[]) {
  return buildMachine(parseQemuCommandLine([...BASE, ...args]));
}
function buildErr(args: string[]): string {
  try {
    build(args);
  } catch (e) {
    if (e instanceof CmdlineError) return e.message;
    throw e;
  }
  return 'accepted';
}

/** Bad command lines and QEMU 7.2's message for each (after "qemu-system-x86_64: "). */
const REFUSALS: [string[], string][] = [
  [['-device', 'virtconsole'], "-device virtconsole: No 'virtio-serial-bus' bus found for device 'virtconsole'"],
  [['-device', 'virtserialport'], "-device virtserialport: No 'virtio-serial-bus' bus found for device 'virtserialport'"],
  [['-device', 'virtio-serial-pci,max_ports=0'], '-device virtio-serial-pci,max_ports=0: Maximum number of serial ports not specified'],
  [['-device', 'virtio-serial-pci,max_ports=512'], '-device virtio-serial-pci,max_ports=512: maximum ports supported: 511'],
  [['-device', 'virtio-serial-pci,max_ports=abc'], "-device virtio-serial-pci,max_ports=abc: Parameter 'max_ports' expects integer"],
  [['-device', 'virtio-serial-pci,emergency-write=maybe'], "-device virtio-serial-pci,emergency-write=maybe: Parameter 'emergency-write' expects 'on' or 'off'"],
  [['-device', 'virtio-serial-pci,class=0x100000000'], "-device virtio-serial-pci,class=0x100000000: Parameter 'class' expects uint32_t"],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,nr=0'], '-device virtserialport,nr=0: Port number 0 on virtio-serial devices reserved for virtconsole devices for backward compatibility.'],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,nr=31'], '-device virtserialport,nr=31: virtio-serial-bus: Out-of-range port id specified, max. allowed: 30'],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,nr=5', '-device', 'virtserialport,nr=5'], '-device virtserialport,nr=5: virtio-serial-bus: A port already exists at id 5'],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,name=a', '-device', 'virtserialport,name=a'], '-device virtserialport,name=a: virtio-serial-bus: A port already exists by name a'],
  [['-device', 'virtio-serial-pci,id=a', '-device', 'virtserialport,bus=a.0,name=x', '-device', 'virtio-serial-pci,id=b', '-device', 'virtserialport,bus=b.0,name=x'], '-device virtserialport,bus=b.0,name=x: virtio-serial-bus: A port already exists by name x'],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=nope'], "-device virtserialport,chardev=nope: Property 'virtserialport.chardev' can't find value 'nope'"],
  [['-chardev', 'null,id=c', '-device', 'virtio-serial-pci', '-device', 'virtserialport,chardev=c', '-device', 'virtconsole,chardev=c'], "-device virtconsole,chardev=c: Property 'virtconsole.chardev' can't take value 'c': Device 'c' is in use"],
  [['-device', 'virtio-serial-pci,max_ports=1', '-device', 'virtserialport'], '-device virtserialport: virtio-serial-bus: Out-of-range port id specified, max. allowed: 0'],
  [['-device', 'virtio-serial-pci,max_ports=2', '-device', 'virtconsole', '-device', 'virtconsole', '-device', 'virtconsole'], '-device virtconsole: virtio-serial-bus: Out-of-range port id specified, max. allowed: 1'],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,nr=abc'], "-device virtserialport,nr=abc: Parameter 'nr' expects integer"],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,foo=1'], "-device virtserialport,foo=1: Property 'virtserialport.foo' not found"],
  [['-device', 'virtio-serial-pci', '-device', 'virtserialport,bus=nope'], "-device virtserialport,bus=nope: Bus 'nope' not found"],
  [['-device', 'virtio-rng-pci,id=r', '-device', 'virtconsole,bus=r.0'], "-device virtconsole,bus=r.0: Bus 'r.0' not found"],
  [['-device', 'virtio-serial-pci', '-device', 'virtconsole,bus=pci.0'], "-device virtconsole,bus=pci.0: Device 'virtconsole' can't go on PCI bus"],
  [['-device', 'virtio-serial-pci,id=vs', '-device', 'virtconsole,bus=vs.0', '-device', 'virtconsole,bus=vs.0,nr=0'], '-device virtconsole,bus=vs.0,nr=0: virtio-serial-bus: A port already exists at id 0'],
  [['-global', 'virtserialport.nr=5', '-device', 'virtio-serial-pci', '-device', 'virtserialport', '-device', 'virtserialport'], '-device virtserialport: virtio-serial-bus: A port already exists at id 5'],
  [['-device', 'virtio-serial-device'], "-device virtio-serial-device: No 'virtio-bus' bus found for device 'virtio-serial-device'"],
  [['-chardev', 'file,id=f'], '-chardev file,id=f: chardev: file: no filename given'],
  [['-chardev', 'file,id=f,path=/tmp/x,in=/tmp/y'], "-chardev file,id=f,path=/tmp/x,in=/tmp/y: Invalid parameter 'in'"],
];

describe('virtio-serial on the command line: refusals as QEMU 7.2 words them', () => {
  it.each(REFUSALS)('%j', (args, message) => {
    expect(buildErr(['-machine', 'pc', ...args])).toBe(message);
  });

  if (qemuOrPolicy('virtio-serial command-line refusals against QEMU')) {
    it('QEMU 7.2 prints the same messages', () => {
      for (const [args, message] of REFUSALS) {
        const r = spawnSync(QEMU_COMMAND[0]!, [...BASE, '-machine', 'pc', '-S', '-qmp', 'null', ...args], { encoding: 'utf8', timeout: 10_000 });
        expect(r.status, args.join(' ')).toBe(1);
        expect(r.stderr.trim(), args.join(' ')).toBe(`qemu-system-x86_64: ${message}`);
      }
    }, 60_000);
  }
});

describe('virtio-serial on the command line: what is built', () => {
  it('bus names: <id>.0, or virtio-serial-bus.N counting the unnamed ones; a port goes to the newest bus', () => {
    const b = build(['-machine', 'pc', '-device', 'virtio-serial-pci', '-device', 'virtio-serial-pci,id=a', '-device', 'virtio-serial-pci', '-device', 'virtserialport', '-device', 'virtserialport,bus=a.0', '-device', 'virtconsole,bus=virtio-serial-bus.0']);
    expect(b.buses.map((x) => x.name)).toEqual(['virtio-serial-bus.0', 'a.0', 'virtio-serial-bus.1']);
    expect(b.children.map((c) => [c.bus.name, (c.object as VirtIOSerialPort).id])).toEqual([
      ['virtio-serial-bus.1', 1],
      ['a.0', 1],
      ['virtio-serial-bus.0', 0],
    ]);
    // The device with an id is /machine/peripheral/a; the anonymous ones count on.
    expect(b.children.map((c) => c.path)).toEqual(['/machine/peripheral-anon/device[2]', '/machine/peripheral-anon/device[3]', '/machine/peripheral-anon/device[4]']);
  });

  it('vectors 2 by default, max_ports + 1 for DEV_NVECTORS_UNSPECIFIED; class kept only for 0x0780, 0x0380, 0x00ff', () => {
    const b = build(['-machine', 'pc', '-device', 'virtio-serial-pci', '-device', 'virtio-serial-pci,vectors=4294967295,max_ports=5', '-device', 'virtio-serial-pci,class=0x1234', '-device', 'virtio-serial-pci,class=0x00ff']);
    expect(b.devices.map((d) => d.pci!.proxy.nvectors)).toEqual([2, 6, 2, 2]);
    expect(b.devices.map((d) => d.pci!.proxy.configRead(0x0a, 2))).toEqual([0x0780, 0x0780, 0x0780, 0x00ff]);
    expect(b.devices.map((d) => (d.device as VirtIOSerial).maxPorts)).toEqual([31, 5, 31, 31]);
  });

  it('a null chardev needs no backend; a console on it is open to the host, a generic port is not', () => {
    const b = build(['-machine', 'microvm', '-chardev', 'null,id=n1', '-chardev', 'null,id=n2', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=n1', '-device', 'virtserialport,chardev=n2', '-device', 'virtserialport,chardev=']);
    expect(b.children.map((c) => [(c.object as VirtIOSerialPort).id, (c.object as VirtIOSerialPort).hostConnected, (c.object as VirtIOSerialPort).chardev?.id])).toEqual([
      [0, true, 'n1'],
      [1, false, 'n2'],
      [2, false, undefined],
    ]);
  });

  it('other chardevs need a backend from the caller (virtio-ts-qemu opens them)', () => {
    expect(buildErr(['-machine', 'pc', '-chardev', 'socket,id=s,path=/tmp/x,server=on,wait=off', '-device', 'virtio-serial-pci', '-device', 'virtconsole,chardev=s'])).toBe(
      "-device virtconsole,chardev=s: chardev 's' has no backend in this build (pass one in BuildOptions.chardevs)",
    );
  });
});
