// QEMU's command line for virtio-ts-qemu (src/machine/cmdline.ts, qemu-machine.ts): the option
// syntax, what is accepted, and refusals worded as QEMU 7.2 words them (messages checked against
// qemu-system-x86_64 7.2.22, after its "qemu-system-x86_64: " prefix).
import { describe, expect, it } from 'vitest';
import { CmdlineError, parseKeyval, parseQemuCommandLine, parseQemuOpts, parseSize } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { PcMachine } from '../../src/machine/pc.js';

const BASE = ['-accel', 'tcg', '-nodefaults', '-display', 'none'];

function parseErr(argv: string[]): string {
  try {
    parseQemuCommandLine(argv);
  } catch (e) {
    if (e instanceof CmdlineError) return e.message;
    throw e;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}
function buildErr(argv: string[]): string {
  try {
    buildMachine(parseQemuCommandLine([...BASE, ...argv]));
  } catch (e) {
    if (e instanceof CmdlineError) return e.message;
    throw e;
  }
  throw new Error(`accepted: ${argv.join(' ')}`);
}

describe('QemuOpts syntax', () => {
  it('implied first key, key=value, ",," for a comma, short-form booleans with the deprecation warning', () => {
    const w: string[] = [];
    expect(parseQemuOpts('virtio-rng-pci,addr=04.0,romfile=a,,b', 'driver', true, '-device x', w).params).toEqual([
      ['driver', 'virtio-rng-pci'],
      ['addr', '04.0'],
      ['romfile', 'a,b'],
    ]);
    expect(w).toEqual([]);
    expect(parseQemuOpts('virtio-rng-pci,ioeventfd,noevent_idx', 'driver', true, '-device L', w).params).toEqual([
      ['driver', 'virtio-rng-pci'],
      ['ioeventfd', 'on'],
      ['event_idx', 'off'],
    ]);
    expect(w).toEqual([
      "-device L: warning: short-form boolean option 'ioeventfd' deprecated\nPlease use ioeventfd=on instead",
      "-device L: warning: short-form boolean option 'noevent_idx' deprecated\nPlease use event_idx=off instead",
    ]);
    expect(parseQemuOpts('virtio-rng-pci,help', 'driver', true, '', []).help).toBe(true);
  });

  it('keyval (-machine): every key after the implied one needs "="', () => {
    expect(parseKeyval('microvm,acpi=off', 'type', '-M x')).toEqual([
      ['type', 'microvm'],
      ['acpi', 'off'],
    ]);
    expect(() => parseKeyval('type=microvm,acpi=off,foo', 'type', '-machine L')).toThrow("-machine L: Expected '=' after parameter 'foo'");
    expect(() => parseKeyval('pc,,x', 'type', '-machine pc,,x')).toThrow("-machine pc,,x: Invalid parameter ''");
  });

  it('sizes: suffixes, fractions, hex, out of range', () => {
    expect(parseSize('size', '16M')).toBe(16n << 20n);
    expect(parseSize('size', '1.5G')).toBe(3n << 29n);
    expect(parseSize('size', '16k')).toBe(16n << 10n);
    expect(parseSize('size', '512')).toBe(512n);
    expect(() => parseSize('size', '16Q')).toThrow("Parameter 'size' expects a non-negative number below 2^64");
    expect(() => parseSize('size', '99999999999999999999')).toThrow("Value '99999999999999999999' is out of range for parameter 'size'");
  });
});

describe('accepted command lines', () => {
  it("libqtest's own command line", () => {
    const cl = parseQemuCommandLine(['-qtest', 'unix:/tmp/q.sock', '-qtest-log', '/dev/null', '-chardev', 'socket,path=/tmp/m.sock,id=char0', '-mon', 'chardev=char0,mode=control', '-display', 'none', '-machine', 'microvm', '-accel', 'qtest']);
    expect(cl.machine).toBe('microvm');
    expect(cl.accel).toEqual(['qtest']);
    expect(cl.qtest).toBe('qtest');
    expect(cl.qtestLog).toBe('/dev/null');
    expect(cl.chardevs).toEqual([
      { backend: 'socket', id: 'qtest', path: '/tmp/q.sock', server: false, wait: true },
      { backend: 'socket', id: 'char0', path: '/tmp/m.sock', server: false, wait: true, loc: '-chardev socket,path=/tmp/m.sock,id=char0' },
    ]);
    expect(cl.monitors.map((m) => m.chardev)).toEqual(['char0']);
  });

  it('the oracle notes command line, with -m in QEMU units and defaults', () => {
    const cl = parseQemuCommandLine([...BASE, '-bios', 'halt.bin', '-no-user-config', '-nographic', '-qtest', 'unix:/r/qtest.sock,server=on,wait=off', '-qtest-log', 'none', '-qmp', 'unix:/r/qmp.sock', '-machine', 'pc', '-m', '16M', '-S', '-incoming', 'defer']);
    expect(cl).toMatchObject({ machine: 'pc', machineTypeName: 'pc-i440fx-7.2', ramSize: 16 << 20, bios: 'halt.bin', nodefaults: true, qtestLog: 'none', startPaused: true, incoming: 'defer' });
    expect(cl.chardevs[0]).toEqual({ backend: 'socket', id: 'qtest', path: '/r/qtest.sock', server: true, wait: false });
    expect(cl.chardevs[1]).toEqual({ backend: 'socket', id: 'compat_monitor0', path: '/r/qmp.sock', server: false, wait: true });
    expect(parseQemuCommandLine(['-m', '16']).ramSize).toBe(16 << 20); // no suffix: MiB
    expect(parseQemuCommandLine(['-m', 'size=1G']).ramSize).toBe(1 << 30);
    expect(parseQemuCommandLine(['-m', '0']).ramSize).toBe(128 << 20);
    expect(parseQemuCommandLine(['-m', '1b']).ramSize).toBe(8192); // rounded up to 8 KiB
    expect(parseQemuCommandLine([]).machine).toBe('pc');
    expect(parseQemuCommandLine(['-qtest', 'stdio', '-qmp', 'tcp:localhost:4444,server=on,wait=off']).chardevs[1]).toEqual({ backend: 'socket', id: 'compat_monitor0', host: 'localhost', port: 4444, server: true, wait: false });
  });

  it('-machine options merge, last wins; accel= works without -accel', () => {
    const cl = parseQemuCommandLine(['-M', 'pc', '-machine', 'microvm,acpi=off', '-machine', 'ioapic2=off,accel=qtest:tcg']);
    expect(cl).toMatchObject({ machine: 'microvm', acpi: false, ioapic2: false, accel: ['qtest', 'tcg'] });
  });

  it('-device in QemuOpts and JSON form, -global in both forms, -drive if=none', () => {
    const cl = parseQemuCommandLine([
      '-device', 'virtio-rng-pci,id=r0,addr=04.0,disable-legacy=on',
      '-device', '{"driver":"virtio-rng-device","max-bytes":1024}',
      '-global', 'virtio-mmio.force-legacy=false',
      '-global', 'driver=virtio-pci,property=page-per-vq,value=on',
      '-drive', 'if=none,id=d0,file=/tmp/x.img,format=raw,readonly=on',
    ]);
    expect(cl.devices.map((d) => [d.driver, d.id, d.props, d.json])).toEqual([
      ['virtio-rng-pci', 'r0', [['addr', '04.0'], ['disable-legacy', 'on']], false],
      ['virtio-rng-device', undefined, [['max-bytes', 1024]], true],
    ]);
    expect(cl.globals.map((g) => [g.driver, g.property, g.value])).toEqual([
      ['virtio-mmio', 'force-legacy', 'false'],
      ['virtio-pci', 'page-per-vq', 'on'],
    ]);
    expect(cl.drives).toMatchObject([{ id: 'd0', file: '/tmp/x.img', readonly: true, loc: '-drive if=none,id=d0,file=/tmp/x.img,format=raw,readonly=on', writeback: true }]);
    expect(cl.drives[0]!.root).toMatchObject({ driver: 'raw', readOnly: true, unmap: false, child: { driver: 'file', filename: '/tmp/x.img', readOnly: true } });
    expect(parseQemuCommandLine(['-device', 'virtio-rng']).devices[0]!.driver).toBe('virtio-rng-pci');
  });

  it('--version, -help, -machine help, -device help', () => {
    expect(parseQemuCommandLine(['--version']).action).toEqual({ kind: 'version' });
    expect(parseQemuCommandLine(['-version']).action).toEqual({ kind: 'version' });
    expect(parseQemuCommandLine(['-help']).action).toEqual({ kind: 'help' });
    expect(parseQemuCommandLine(['-M', 'help']).action).toEqual({ kind: 'machine-help' });
    expect(parseQemuCommandLine(['-device', 'help']).action).toEqual({ kind: 'device-help', driver: undefined });
    expect(parseQemuCommandLine(['-device', 'virtio-rng-pci,help']).action).toEqual({ kind: 'device-help', driver: 'virtio-rng-pci' });
  });

  it('warns, as QEMU does not but a harness should know, when -nodefaults is missing', () => {
    expect(parseQemuCommandLine(['-M', 'pc']).warnings.join()).toMatch(/-nodefaults not given/);
    expect(parseQemuCommandLine(['-M', 'pc', '-nodefaults']).warnings).toEqual([]);
  });
});

describe('refusals (QEMU wording where QEMU refuses too)', () => {
  it('unknown options, missing arguments, positional arguments', () => {
    expect(parseErr(['-foo'])).toBe('-foo: invalid option');
    expect(parseErr(['--foo'])).toBe('--foo: invalid option');
    expect(parseErr(['-m'])).toBe('-m: requires an argument');
    expect(parseErr(['-smp', '2'])).toBe('-smp: option not supported by virtio-ts-qemu');
    expect(parseErr(['-fsdev', 'local,id=f0'])).toBe('-fsdev: option not supported by virtio-ts-qemu');
    expect(parseErr(['disk.img'])).toMatch(/^disk.img: disk image arguments are not supported/);
  });

  it('machines, accelerators, memory, display', () => {
    expect(parseErr(['-M', 'foo'])).toBe('unsupported machine type\nUse -machine help to list supported machines');
    expect(parseErr(['-M', 'q35'])).toBe("machine type 'q35' is not supported by virtio-ts-qemu (supported: pc, pc-i440fx-7.2, microvm)");
    expect(parseErr(['-M', 'microvm,foo=bar'])).toBe("Property 'microvm-machine.foo' not found");
    expect(parseErr(['-M', 'pc,ioapic2=off'])).toBe("Property 'pc-i440fx-7.2-machine.ioapic2' not found");
    expect(parseErr(['-M', 'microvm,acpi=maybe'])).toBe("Parameter 'acpi' does not accept value 'maybe'");
    expect(parseErr(['-M', 'microvm,pit=off'])).toBe("-M microvm,pit=off: machine property 'pit' is not supported by virtio-ts-qemu");
    expect(parseErr(['-accel', 'tcg', '-M', 'pc,accel=tcg'])).toBe('The -accel and "-machine accel=" options are incompatible');
    expect(parseErr(['-accel', 'foo'])).toBe('-accel foo: invalid accelerator foo');
    expect(parseErr(['-accel', 'kvm'])).toBe("-accel kvm: accelerator 'kvm' is not supported by virtio-ts-qemu (use qtest or tcg)");
    expect(parseErr(['-m', '16Q'])).toBe(
      "-m 16Q: Parameter 'size' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.",
    );
    expect(parseErr(['-m', '16M,foo=1'])).toBe("-m 16M,foo=1: Invalid parameter 'foo'");
    expect(parseErr(['-display', 'foo'])).toBe("-display foo: Parameter 'type' does not accept value 'foo'");
    expect(parseErr(['-display', 'gtk'])).toBe("-display gtk: display 'gtk' is not supported by virtio-ts-qemu (use -display none)");
  });

  it('chardevs, monitors, qtest channels, -incoming', () => {
    expect(parseErr(['-chardev', 'null'])).toBe('-chardev null: chardev: no id specified');
    expect(parseErr(['-chardev', 'null,id=c0', '-chardev', 'null,id=c0'])).toBe("-chardev null,id=c0: Duplicate ID 'c0' for chardev");
    expect(parseErr(['-chardev', 'foo,id=x'])).toBe("-chardev foo,id=x: 'foo' is not a valid char driver name");
    expect(parseErr(['-chardev', 'file,id=x'])).toBe('-chardev file,id=x: chardev: file: no filename given');
    expect(parseErr(['-chardev', 'file,id=x,path=/tmp/f,in=/tmp/i'])).toBe("-chardev file,id=x,path=/tmp/f,in=/tmp/i: Invalid parameter 'in'");
    expect(parseErr(['-chardev', 'pipe,id=x,path=/tmp/f'])).toBe("-chardev pipe,id=x,path=/tmp/f: chardev backend 'pipe' is not supported by virtio-ts-qemu");
    expect(parseErr(['-chardev', 'socket,id=c0'])).toBe('-chardev socket,id=c0: Unable to parse FD number ');
    expect(parseErr(['-mon', 'chardev=c9,mode=control'])).toBe('-mon chardev=c9,mode=control: chardev "c9" not found');
    expect(parseErr(['-chardev', 'null,id=c0', '-mon', 'chardev=c0'])).toMatch(/human monitor \(mode=readline\) is not supported/);
    expect(parseErr(['-qtest', 'foo:bar'])).toBe('\'foo:bar\' is not a valid char driver\nFailed to initialize device for qtest: "foo:bar"');
    expect(parseErr(['-qtest', 'stdio', '-qmp', 'stdio'])).toBe('cannot use stdio by multiple character devices\nFailed to initialize device for qtest: "stdio"');
    // The URI is checked when the migration starts, after the machine is built (as QEMU does);
    // the last -incoming wins.
    expect(parseQemuCommandLine([...BASE, '-incoming', 'foo']).incoming).toBe('foo');
    expect(parseQemuCommandLine([...BASE, '-incoming', 'defer', '-incoming', 'exec:cat /tmp/x']).incoming).toBe('exec:cat /tmp/x');
  });

  it('drives and globals', () => {
    expect(parseErr(['-drive', 'if=none,id=d0,file=x,format=qcow2'])).toBe("-drive if=none,id=d0,file=x,format=qcow2: format 'qcow2' is not supported by virtio-ts-qemu (only raw)");
    expect(parseErr(['-drive', 'if=none,id=d0,file=x,format=raw,foo=bar'])).toBe("-drive if=none,id=d0,file=x,format=raw,foo=bar: Block format 'raw' does not support the option 'foo'");
    expect(parseErr(['-drive', 'if=none,id=d0,file=x,format=raw,readonly=maybe'])).toBe("-drive if=none,id=d0,file=x,format=raw,readonly=maybe: Parameter 'read-only' expects 'on' or 'off'");
    expect(parseErr(['-drive', 'file=x,format=raw'])).toMatch(/if=ide is not supported by virtio-ts-qemu/);
    expect(parseErr(['-global', 'driver=virtio-mmio,property=force-legacy'])).toBe("-global driver=virtio-mmio,property=force-legacy: options 'driver', 'property', and 'value' are required");
    expect(parseErr(['-global', 'foo'])).toBe("-global foo: Invalid parameter 'foo'");
  });

  it('devices: unknown, not implemented yet (named), bad ids', () => {
    expect(parseErr(['-device', 'virtio-foo'])).toBe("-device virtio-foo: 'virtio-foo' is not a valid device model name");
    expect(parseErr(['-device', ','])).toBe("-device ,: '' is not a valid device model name");
    expect(parseErr(['-device', 'virtio-rng-pci,,x'])).toBe("-device virtio-rng-pci,,x: 'virtio-rng-pci,x' is not a valid device model name");
    for (const d of ['virtio-input-host-pci', 'virtio-input-host-pci-non-transitional', 'virtio-input-host-device', 'virtio-input-host-pci,evdev=/dev/input/event0']) {
      const name = d.split(',')[0]!;
      expect(parseErr(['-device', d])).toBe(`-device ${d}: device '${name}' is not implemented yet by virtio-ts`);
    }
    expect(parseErr(['-device', 'virtio-rng-pci,id=a', '-device', 'virtio-rng-pci,id=a'])).toBe("-device virtio-rng-pci,id=a: Duplicate ID 'a' for device");
    expect(parseErr(['-device', 'virtio-rng-pci,id=1a'])).toMatch(/Parameter 'id' expects an identifier/);
  });
});

describe('building machines from the command line', () => {
  it('device property errors as QEMU words them', () => {
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,foo=bar'])).toBe("-device virtio-rng-pci,foo=bar: Property 'virtio-rng-pci.foo' not found");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,queue-size=16'])).toBe("-device virtio-rng-pci,queue-size=16: Property 'virtio-rng-pci.queue-size' not found");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,disable-legacy=maybe'])).toBe("-device virtio-rng-pci,disable-legacy=maybe: Parameter 'disable-legacy' does not accept value 'maybe'");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,event_idx=maybe'])).toBe("-device virtio-rng-pci,event_idx=maybe: Parameter 'event_idx' expects 'on' or 'off'");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,period=abc'])).toBe("-device virtio-rng-pci,period=abc: Parameter 'period' expects integer");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,period=-1'])).toBe("-device virtio-rng-pci,period=-1: Parameter 'period' expects uint32_t");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,period=0'])).toBe("-device virtio-rng-pci,period=0: 'period' parameter expects a positive integer");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,max-bytes=-1'])).toBe("-device virtio-rng-pci,max-bytes=-1: 'max-bytes' parameter must be non-negative, and less than 2^63");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,addr=20.0'])).toBe("-device virtio-rng-pci,addr=20.0: Property 'virtio-rng-pci.addr' doesn't take value '20.0'");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,addr=0.0'])).toBe('-device virtio-rng-pci,addr=0.0: PCI: slot 0 function 0 not available for virtio-rng-pci, in use by i440FX,id=(null)');
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,bus=pci.1'])).toBe("-device virtio-rng-pci,bus=pci.1: Bus 'pci.1' not found");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,disable-legacy=on,disable-modern=on'])).toBe(
      '-device virtio-rng-pci,disable-legacy=on,disable-modern=on: device cannot work as neither modern nor legacy mode is enabled\nSet either disable-modern or disable-legacy to off',
    );
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci,iommu_platform=on'])).toBe("-device virtio-rng-pci,iommu_platform=on: property 'iommu_platform=true' of virtio-rng-pci is not supported by virtio-ts-qemu");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-pci-non-transitional,disable-legacy=on'])).toBe("-device virtio-rng-pci-non-transitional,disable-legacy=on: Property 'virtio-rng-pci-non-transitional.disable-legacy' not found");
    expect(buildErr(['-M', 'pc', '-device', '{"driver":"virtio-rng-pci","period":"5"}'])).toBe(`-device {"driver":"virtio-rng-pci","period":"5"}: Parameter 'period' expects uint64`);
    expect(buildErr(['-M', 'pc', '-device', '{"driver":"virtio-rng-pci","event_idx":"on"}'])).toBe(`-device {"driver":"virtio-rng-pci","event_idx":"on"}: Invalid parameter type for 'event_idx', expected: boolean`);
    expect(buildErr(['-M', 'microvm', '-device', 'virtio-rng-pci'])).toBe("-device virtio-rng-pci: No 'PCI' bus found for device 'virtio-rng-pci'");
    expect(buildErr(['-M', 'pc', '-device', 'virtio-rng-device'])).toBe("-device virtio-rng-device: No 'virtio-bus' bus found for device 'virtio-rng-device'");
    expect(buildErr(['-M', 'microvm', '-device', 'virtio-rng-device,bus=virtio-mmio-bus.30'])).toBe("-device virtio-rng-device,bus=virtio-mmio-bus.30: Bus 'virtio-mmio-bus.30' not found");
    expect(buildErr(['-M', 'microvm,acpi=off', ...Array(9).fill(['-device', 'virtio-rng-device']).flat()])).toBe("-device virtio-rng-device: No 'virtio-bus' bus found for device 'virtio-rng-device'");
    expect(buildErr(['-M', 'microvm', '-global', 'virtio-mmio.foo=1'])).toBe("can't apply global virtio-mmio.foo=1: Property 'virtio-mmio.foo' not found");
    expect(buildErr(['-M', 'microvm', '-global', 'virtio-mmio.force-legacy=maybe'])).toBe("can't apply global virtio-mmio.force-legacy=maybe: Parameter 'force-legacy' expects 'on' or 'off'");
    expect(buildErr(['-M', 'pc', '-global', 'virtio-rng-pci.foo=1', '-device', 'virtio-rng-pci'])).toBe("-device virtio-rng-pci: can't apply global virtio-rng-pci.foo=1: Property 'virtio-rng-pci.foo' not found");
  });

  it('places virtio-rng-pci from 02.0 or at addr=, with QEMU device ids per mode and a multifunction bit', () => {
    const b = buildMachine(parseQemuCommandLine([...BASE, '-M', 'pc', '-device', 'virtio-rng-pci', '-device', 'virtio-rng-pci,addr=5,disable-legacy=on', '-device', 'virtio-rng-pci-transitional,id=t,multifunction=on', '-device', 'virtio-rng-pci-non-transitional']));
    expect(b.machine).toBeInstanceOf(PcMachine);
    expect(b.devices.map((d) => [d.pci!.addr, d.pci!.proxy.configRead(0, 4).toString(16), d.path])).toEqual([
      ['02.0', '10051af4', '/machine/peripheral-anon/device[0]'],
      ['05.0', '10441af4', '/machine/peripheral-anon/device[1]'],
      ['03.0', '10051af4', '/machine/peripheral/t'],
      ['04.0', '10441af4', '/machine/peripheral-anon/device[2]'],
    ]);
    expect(b.devices[2]!.pci!.proxy.configRead(0x0e, 1)).toBe(0x80);
  });

  it('applies -global to virtio-mmio and to device ancestors, -device properties winning', () => {
    const b = buildMachine(parseQemuCommandLine([...BASE, '-M', 'microvm', '-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-device.event_idx=off', '-device', 'virtio-rng-device', '-device', 'virtio-rng-device,event_idx=on']));
    const m = b.machine as MicrovmMachine;
    expect(m.readl(0xfeb00004)).toBe(2);
    expect(b.devices.map((d) => [d.mmio!.index, (d.device.hostFeatures >> 29n) & 1n])).toEqual([
      [23, 0n],
      [22, 1n],
    ]);
    expect(b.warnings).toEqual([]);
    expect(buildMachine(parseQemuCommandLine([...BASE, '-global', 'foo.bar=1'])).warnings).toEqual(['warning: global foo.bar has invalid class name']);
  });

  it('rate limit: max-bytes and period reach the device and its timer', () => {
    const b = buildMachine(parseQemuCommandLine([...BASE, '-M', 'microvm', '-device', 'virtio-rng-device,max-bytes=4,period=1000']));
    const rng = b.devices[0]!.device as unknown as { maxBytes: number; periodMs: number };
    expect([rng.maxBytes, rng.periodMs]).toEqual([4, 1000]);
  });

  it('-S and -incoming set the run state QMP reports, and autostart', () => {
    const paused = buildMachine(parseQemuCommandLine([...BASE, '-S'])).machine;
    expect([paused.runState, paused.autostart, paused.vmRunning]).toEqual(['prelaunch', false, false]);
    const incoming = buildMachine(parseQemuCommandLine([...BASE, '-incoming', 'exec:cat /tmp/x'])).machine;
    expect([incoming.runState, incoming.autostart]).toEqual(['inmigrate', true]);
    const both = buildMachine(parseQemuCommandLine([...BASE, '-incoming', 'defer', '-S'])).machine;
    expect([both.runState, both.autostart]).toEqual(['inmigrate', false]);
    // Devices built on a stopped machine start out stopped.
    const dev = buildMachine(parseQemuCommandLine([...BASE, '-S', '-M', 'microvm', '-device', 'virtio-rng-device'])).devices[0]!.device;
    expect(dev.vmRunning).toBe(false);
  });

  it('createMachineFromArgs gives a QtestTarget and an in-process QMP', async () => {
    const { target, qmp } = createMachineFromArgs(['-M', 'microvm', '-m', '16M', '-device', 'virtio-rng-device']);
    expect(target.readl(0xfeb02e08)).toBe(4);
    const list = (await qmp.execute('qom-list', { path: '/machine/unattached' })) as { name: string; type: string }[];
    expect(list.find((p) => p.type === 'child<ioapic>')?.name).toBe('device[3]');
    // No channels in the browser-safe build: a migration is refused, saying why.
    await expect(qmp.execute('migrate', { uri: 'exec:cat' })).rejects.toThrow('QMP migrate: GenericError: virtio-ts: no migration channels are configured');
    await expect(qmp.execute('nope')).rejects.toThrow('QMP nope: CommandNotFound: The command nope has not been found');
  });
});
