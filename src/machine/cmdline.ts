/**
 * QEMU's command line, for the subset virtio-ts-qemu implements (QEMU 7.2 softmmu/vl.c,
 * util/qemu-option.c, util/keyval.c, chardev/char.c, monitor/monitor.c):
 *
 *   -machine/-M TYPE[,acpi=,ioapic2=,accel=]   -accel qtest|tcg   -bios FILE   -m SIZE
 *   -nodefaults  -no-user-config  -display none  -nographic  -S  -incoming defer|URI
 *   -qtest CHARDEV  -qtest-log none|FILE  -qmp CHARDEV  -mon chardev=ID,mode=control
 *   -chardev null|stdio|socket|file,id=ID,...  -drive if=none,... and -blockdev (block-cmdline.ts)
 *   -device TYPE[,prop=value,...] (or JSON)  -global DRIVER.PROP=VALUE
 *
 * Option values follow QemuOpts syntax: comma-separated `key=value`, `,,` for a literal comma,
 * an implied first key (`-device virtio-rng-pci` is `driver=virtio-rng-pci`), and the deprecated
 * short-form booleans (`ioeventfd` = `ioeventfd=on`, `noX` = `X=off`) with QEMU's warning.
 * Anything outside the subset is refused with a message naming it; where QEMU itself would
 * refuse, the wording is QEMU's. This module only parses: files are opened and sockets connected
 * by the caller (src/cli/qemu.ts), the machine is built by `qemu-machine.ts`.
 *
 * No Node imports: part of the browser bundle.
 */
import { SUPPORTED_DEVICES } from './device-types/names.js';
import { parseNetdev, type NetdevSpec } from './netdev.js';

export type { NetdevSpec } from './netdev.js';
import { parseBlockdev, parseDrive, type BlockdevSpec, type DriveSpec } from './block-cmdline.js';

export type { BlockdevSpec, DriveSpec } from './block-cmdline.js';

/**
 * A command line error: the message as QEMU prints it after "qemu-system-x86_64: ". Further
 * lines are continuation text, unless `everyLine` says each line is a separate report (each
 * with the program name in front).
 */
export class CmdlineError extends Error {
  override name = 'CmdlineError';
  constructor(message: string, readonly everyLine = false) {
    super(message);
  }
}

export type ChardevSpec = ChardevBackendSpec & {
  /** The `-chardev ...` option it came from (none for `-qtest`/`-qmp` compat syntax), for messages. */
  loc?: string;
};

export type ChardevBackendSpec =
  | { backend: 'null'; id: string }
  | { backend: 'stdio'; id: string }
  | { backend: 'socket'; id: string; path?: string; host?: string; port?: number; server: boolean; wait: boolean }
  /** Output to a file (QEMU's `-chardev file`): created or truncated, or appended to with `append=on`. */
  | { backend: 'file'; id: string; path: string; append: boolean };

export interface MonitorSpec {
  chardev: string;
  /** The option text, for messages. */
  arg: string;
}

export type PropValue = string | number | boolean;

export interface DeviceSpec {
  driver: string;
  id: string | undefined;
  /** Properties other than driver and id, in order; values are strings unless given as JSON. */
  props: [string, PropValue][];
  /** Location for messages: `-device virtio-rng-pci,foo=1`. */
  loc: string;
  /** Given as JSON: values keep their JSON types, which QEMU then checks strictly. */
  json: boolean;
}

export interface GlobalSpec {
  driver: string;
  property: string;
  value: string;
  loc: string;
}

export type MachineType = 'pc' | 'microvm';

/** One `-object TYPE,id=ID,...`. */
export interface ObjectSpec {
  qomType: string;
  id: string;
}

export interface QemuCommandLine {
  machine: MachineType;
  /** The type as QEMU names it in QOM and migration: `pc-i440fx-7.2` or `microvm`. */
  machineTypeName: string;
  acpi: boolean | undefined;
  ioapic2: boolean | undefined;
  /** Accelerators in order of preference (QEMU tries them in turn). */
  accel: string[];
  bios: string | undefined;
  /** RAM in bytes, already rounded as QEMU rounds it. */
  ramSize: number;
  nodefaults: boolean;
  /** Chardev id of the qtest channel. */
  qtest: string | undefined;
  /** `none`, a file name, or undefined for stderr (QEMU's default). */
  qtestLog: string | undefined;
  /** QMP monitors (`-qmp`, `-mon mode=control`). */
  monitors: MonitorSpec[];
  chardevs: ChardevSpec[];
  drives: DriveSpec[];
  /** -blockdev nodes, in order. */
  blockdevs: BlockdevSpec[];
  /** `-object`s (only `iothread`, which virtio-balloon's free page hinting names). */
  objects: ObjectSpec[];
  /** `-netdev`s, in command-line order. */
  netdevs: NetdevSpec[];
  devices: DeviceSpec[];
  globals: GlobalSpec[];
  /** -incoming: `defer` or a migration URI (checked when the migration starts). */
  incoming: string | undefined;
  /** -S: start in `prelaunch`. */
  startPaused: boolean;
  /** Warnings QEMU would print (already prefixed with their location, without the program name). */
  warnings: string[];
  /** Something to print instead of running (`--version`, `-help`, `-M help`, `-device help`). */
  action: { kind: 'version' } | { kind: 'help' } | { kind: 'machine-help' } | { kind: 'device-help'; driver: string | undefined } | { kind: 'netdev-help' } | undefined;
}

// ---------------------------------------------------------------------------------------------
// QemuOpts syntax (util/qemu-option.c)

export interface ParsedOpts {
  params: [string, string][];
  help: boolean;
}

/**
 * QEMU's `opts_do_parse`: `firstName` names an implied first value; `warnOnFlag` prints the
 * short-form boolean deprecation (collected in `warnings`).
 */
export function parseQemuOpts(params: string, firstName: string | undefined, warnOnFlag: boolean, loc: string, warnings: string[]): ParsedOpts {
  const out: [string, string][] = [];
  let help = false;
  let p = 0;
  let first = firstName;
  while (p < params.length) {
    let len = 0;
    while (p + len < params.length && params[p + len] !== '=' && params[p + len] !== ',') len++;
    let name: string;
    let value: string;
    if (params[p + len] !== '=') {
      if (first !== undefined) {
        name = first;
        [value, p] = getOptValue(params, p);
      } else {
        name = params.slice(p, p + len);
        p += len;
        let prefix = '';
        let isHelp = false;
        if (name.startsWith('no')) {
          name = name.slice(2);
          value = 'off';
          prefix = 'no';
        } else {
          value = 'on';
          isHelp = name === 'help' || name === '?';
        }
        if (isHelp) help = true;
        else if (warnOnFlag) {
          warnings.push(`${loc}: warning: short-form boolean option '${prefix}${name}' deprecated\nPlease use ${name === 'delay' ? `nodelay=${prefix ? 'on' : 'off'}` : `${name}=${value}`} instead`);
        }
        if (isHelp) {
          if (params[p] === ',') p++;
          first = undefined;
          continue;
        }
      }
    } else {
      name = params.slice(p, p + len);
      p += len + 1;
      [value, p] = getOptValue(params, p);
    }
    if (params[p] === ',') p++;
    first = undefined;
    if (value === 'help' || value === '?') help = true;
    out.push([name, value]);
  }
  return { params: out, help };
}

/** QEMU's `get_opt_value`: up to a single comma; `,,` is a literal comma. */
function getOptValue(s: string, p: number): [string, number] {
  let v = '';
  for (;;) {
    const c = s.indexOf(',', p);
    if (c < 0) return [v + s.slice(p), s.length];
    v += s.slice(p, c);
    if (s[c + 1] === ',') {
      v += ',';
      p = c + 2;
      continue;
    }
    return [v, c];
  }
}

/**
 * QEMU's keyval syntax (util/keyval.c), used by -machine: like QemuOpts, but every key after the
 * implied one needs `=`.
 */
export function parseKeyval(params: string, implied: string, loc: string): [string, string][] {
  const out: [string, string][] = [];
  let p = 0;
  let first = true;
  while (p < params.length) {
    let len = 0;
    while (p + len < params.length && params[p + len] !== '=' && params[p + len] !== ',') len++;
    let key: string;
    let value: string;
    if (params[p + len] !== '=') {
      if (!first) {
        const key = params.slice(p, p + len);
        if (key === '') throw new CmdlineError(`${loc}: Invalid parameter ''`);
        throw new CmdlineError(`${loc}: Expected '=' after parameter '${key}'`);
      }
      key = implied;
      // An implied value ends at the first comma (no ",," escape there).
      const c = params.indexOf(',', p);
      value = c < 0 ? params.slice(p) : params.slice(p, c);
      p = c < 0 ? params.length : c;
    } else {
      key = params.slice(p, p + len);
      if (key === '') throw new CmdlineError(`${loc}: Invalid parameter ''`);
      p += len + 1;
      [value, p] = getOptValue(params, p);
    }
    if (params[p] === ',') p++;
    first = false;
    out.push([key, value]);
  }
  return out;
}

/** QEMU's bool parsing (`qapi_bool_parse`). */
export function parseBool(name: string, value: string): boolean {
  if (value === 'on' || value === 'yes' || value === 'true' || value === 'y') return true;
  if (value === 'off' || value === 'no' || value === 'false' || value === 'n') return false;
  throw new CmdlineError(`Parameter '${name}' expects 'on' or 'off'`);
}

/** OnOffAuto: undefined for auto. */
export function parseOnOffAuto(name: string, value: string): boolean | undefined {
  if (value === 'on') return true;
  if (value === 'off') return false;
  if (value === 'auto') return undefined;
  throw new CmdlineError(`Parameter '${name}' does not accept value '${value}'`);
}

const SIZE_SUFFIX: Record<string, number> = { b: 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };
const SIZE_ERROR = (name: string) =>
  `Parameter '${name}' expects a non-negative number below 2^64\nOptional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\nand exabytes, respectively.`;

/**
 * QEMU's `qemu_strtosz` (bytes by default): decimal with an optional fraction, or hex, then an
 * optional suffix B/K/M/G/T/P/E (any case). Returns a bigint; throws with QEMU's message.
 */
export function parseSize(name: string, value: string, defaultSuffix = 'b', warnings?: string[]): bigint {
  const m = /^\s*(?:0[xX]([0-9a-fA-F]+)|(\d+)(?:\.(\d+))?)([bBkKmMgGtTpPeE])?$/.exec(value);
  if (!m) throw new CmdlineError(SIZE_ERROR(name));
  const suffix = (m[4] ?? defaultSuffix).toLowerCase();
  const shift = BigInt(SIZE_SUFFIX[suffix]!);
  let v: bigint;
  if (m[1] !== undefined) {
    v = BigInt('0x' + m[1]) << shift;
    if (m[4] !== undefined || defaultSuffix !== 'b') warnings?.push(`warning: Using a multiplier suffix on hex numbers is deprecated: ${value}${m[4] ? '' : defaultSuffix.toUpperCase()}`);
  } else {
    const whole = BigInt(m[2]!);
    const frac = m[3] ?? '';
    const scale = 10n ** BigInt(frac.length);
    v = ((whole * scale + (frac ? BigInt(frac) : 0n)) << shift) / scale;
  }
  if (v >= 1n << 64n) throw new CmdlineError(`Value '${value}' is out of range for parameter '${name}'`);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Options

/** Options we know, and whether they take an argument. */
const OPTIONS: Record<string, boolean> = {
  machine: true, M: true, accel: true, bios: true, m: true, nodefaults: false, 'no-user-config': false,
  display: true, nographic: false, qtest: true, 'qtest-log': true, qmp: true, mon: true, chardev: true,
  drive: true, blockdev: true, device: true, global: true, incoming: true, S: false, version: false, h: false, help: false,
  object: true, netdev: true,
};

/** QEMU options outside the subset, so the refusal can say it is a real option we lack. */
const KNOWN_QEMU_OPTIONS = new Set([
  'cpu', 'smp', 'numa', 'name', 'uuid', 'boot', 'kernel', 'initrd', 'append', 'dtb', 'serial', 'parallel',
  'monitor', 'net', 'nic', 'vga', 'vnc', 'spice', 'usb', 'usbdevice', 'hda', 'hdb',
  'hdc', 'hdd', 'cdrom', 'fda', 'fdb', 'fsdev', 'virtfs', 'audiodev', 'rtc', 'icount', 'L',
  'daemonize', 'pidfile', 'snapshot', 'no-reboot', 'no-shutdown', 'action', 'overcommit', 'sandbox',
  'enable-kvm', 'no-acpi', 'no-hpet', 'msg', 'trace', 'D', 'd', 'k', 'qmp-pretty', 'preconfig', 'runas',
  'chroot', 'mem-path', 'mem-prealloc', 'fw_cfg', 'smbios', 'acpitable', 'semihosting', 'watchdog',
  'watchdog-action', 'echr', 'gdb', 's', 'plugin', 'compat', 'global-option', 'iscsi', 'mtdblock', 'sd',
  'pflash', 'loadvm', 'writeconfig', 'readconfig', 'device-help',
]);

/** Devices this project will have but does not have yet (refused with that reason). */
const NOT_YET = /^virtio-(input-host)(-pci(-transitional|-non-transitional)?|-device)$/;

/** QEMU's device aliases (`-device virtio-rng` is virtio-rng-pci on x86). */
const DEVICE_ALIASES: Record<string, string> = {
  'virtio-rng': 'virtio-rng-pci', 'virtio-blk': 'virtio-blk-pci', 'virtio-net': 'virtio-net-pci',
  'virtio-serial': 'virtio-serial-pci', 'virtio-balloon': 'virtio-balloon-pci', 'virtio-keyboard': 'virtio-keyboard-pci',
  'virtio-mouse': 'virtio-mouse-pci', 'virtio-tablet': 'virtio-tablet-pci', 'virtio-input-host': 'virtio-input-host-pci',
};

export { SUPPORTED_DEVICES };

const CHARDEV_BACKENDS_UNSUPPORTED = new Set([
  'pipe', 'pty', 'vc', 'ringbuf', 'memory', 'udp', 'tty', 'serial', 'parallel', 'spicevmc', 'spiceport',
  'braille', 'msmouse', 'wctablet', 'testdev', 'qemu-vdagent', 'dbus', 'mux', 'console',
]);

const MICROVM_PROPS = new Set([
  'append', 'auto-kernel-cmdline', 'boot', 'confidential-guest-support', 'dt-compatible', 'dtb', 'dump-guest-core',
  'dumpdtb', 'firmware', 'graphics', 'initrd', 'isa-serial', 'kernel', 'mem-merge', 'memory', 'memory-backend',
  'memory-encryption', 'pcie', 'phandle-start', 'pic', 'pit', 'rtc', 'sgx-epc', 'smm', 'smp', 'suppress-vmdesc',
  'usb', 'x-oem-id', 'x-oem-table-id', 'x-option-roms', 'bus-lock-ratelimit',
]);
const PC_PROPS = new Set([
  'append', 'boot', 'confidential-guest-support', 'dt-compatible', 'dtb', 'dump-guest-core', 'dumpdtb', 'firmware',
  'graphics', 'initrd', 'kernel', 'mem-merge', 'memory', 'memory-backend', 'memory-encryption', 'phandle-start', 'smp',
  'suppress-vmdesc', 'usb', 'max-fw-size', 'default-bus-bypass-iommu', 'sata', 'vmport', 'i8042', 'hpet', 'smbus',
  'smbios-entry-point-type', 'max-ram-below-4g', 'nvdimm', 'nvdimm-persistence', 'pcspk-audiodev', 'smm', 'pit', 'sgx-epc',
  'x-oem-id', 'x-oem-table-id', 'bus-lock-ratelimit', 'hmat', 'cxl', 'cxl-fmw', 'kernel-irqchip', 'kvm-shadow-mem',
]);

const ACCELS_REAL = new Set(['kvm', 'xen', 'hax', 'whpx', 'nvmm', 'hvf']);

export const DEFAULT_RAM_BYTES = 128 * 1024 * 1024;

/**
 * Parse QEMU's argv (without the program name). Throws `CmdlineError` with QEMU's message for
 * the first problem.
 */
export function parseQemuCommandLine(argv: readonly string[]): QemuCommandLine {
  const warnings: string[] = [];
  const cl: QemuCommandLine = {
    machine: 'pc', machineTypeName: 'pc-i440fx-7.2', acpi: undefined, ioapic2: undefined, accel: [], bios: undefined,
    ramSize: DEFAULT_RAM_BYTES, nodefaults: false, qtest: undefined, qtestLog: undefined, monitors: [], chardevs: [],
    drives: [], blockdevs: [], objects: [], netdevs: [], devices: [], globals: [], incoming: undefined, startPaused: false, warnings, action: undefined,
  };
  const machineOpts: [string, string, string][] = [];
  let machineAccel: string | undefined;
  let memArg: string | undefined;
  let compatMonitors = 0;
  let display: string | undefined;
  const chardevIds = new Set<string>();

  const addChardev = (spec: ChardevSpec, loc: string): void => {
    if (chardevIds.has(spec.id)) throw new CmdlineError(`${loc}: Duplicate ID '${spec.id}' for chardev`);
    chardevIds.add(spec.id);
    cl.chardevs.push(spec);
  };

  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i]!;
    if (!raw.startsWith('-') || raw === '-') {
      throw new CmdlineError(`${raw}: disk image arguments are not supported by virtio-ts-qemu (use -drive if=none,... and -device)`);
    }
    const name = raw.startsWith('--') ? raw.slice(2) : raw.slice(1);
    if (!(name in OPTIONS)) {
      if (KNOWN_QEMU_OPTIONS.has(name)) throw new CmdlineError(`${raw}: option not supported by virtio-ts-qemu`);
      throw new CmdlineError(`${raw}: invalid option`);
    }
    let arg = '';
    if (OPTIONS[name]) {
      if (i + 1 >= argv.length) throw new CmdlineError(`${raw}: requires an argument`);
      arg = argv[++i]!;
    }
    const loc = OPTIONS[name] ? `${raw} ${arg}` : raw;
    switch (name) {
      case 'version':
        cl.action = { kind: 'version' };
        return cl;
      case 'h':
      case 'help':
        cl.action = { kind: 'help' };
        return cl;
      case 'M':
      case 'machine': {
        if (arg === 'help' || arg === '?') {
          cl.action = { kind: 'machine-help' };
          return cl;
        }
        for (const [k, v] of parseKeyval(arg, 'type', loc)) machineOpts.push([k, v, loc]);
        break;
      }
      case 'accel': {
        const o = parseQemuOpts(arg, 'accel', true, loc, warnings);
        for (const [k, v] of o.params) {
          if (k === 'accel') {
            if (v === 'qtest' || v === 'tcg') cl.accel.push(v);
            else if (ACCELS_REAL.has(v)) throw new CmdlineError(`${loc}: accelerator '${v}' is not supported by virtio-ts-qemu (use qtest or tcg)`);
            else throw new CmdlineError(`${loc}: invalid accelerator ${v}`);
          } else {
            throw new CmdlineError(`${loc}: accelerator property '${k}' is not supported by virtio-ts-qemu`);
          }
        }
        break;
      }
      case 'bios':
        cl.bios = arg;
        break;
      case 'm':
        memArg = arg;
        cl.ramSize = parseMemory(arg, loc, warnings);
        break;
      case 'nodefaults':
        cl.nodefaults = true;
        break;
      case 'no-user-config':
      case 'nographic':
        break;
      case 'display': {
        const o = parseQemuOpts(arg, 'type', true, loc, warnings);
        const type = o.params.find(([k]) => k === 'type')?.[1];
        const known = ['none', 'gtk', 'sdl', 'egl-headless', 'curses', 'cocoa', 'dbus', 'spice-app', 'default'];
        if (type === undefined || !known.includes(type)) throw new CmdlineError(`${loc}: Parameter 'type' does not accept value '${type ?? ''}'`);
        if (type !== 'none') throw new CmdlineError(`${loc}: display '${type}' is not supported by virtio-ts-qemu (use -display none)`);
        for (const [k] of o.params) if (k !== 'type') throw new CmdlineError(`${loc}: display option '${k}' is not supported by virtio-ts-qemu`);
        display = type;
        break;
      }
      case 'qtest': {
        if (cl.qtest !== undefined) {
          // QEMU keeps the last -qtest.
          cl.chardevs = cl.chardevs.filter((c) => c.id !== 'qtest');
          chardevIds.delete('qtest');
        }
        cl.qtest = compatChardev(arg, 'qtest', (spec) => addChardev(spec, loc), () => `Failed to initialize device for qtest: "${arg}"`);
        break;
      }
      case 'qtest-log':
        cl.qtestLog = arg;
        break;
      case 'qmp': {
        const id = compatChardev(arg, `compat_monitor${compatMonitors++}`, (spec) => addChardev(spec, loc), () => `${loc}: could not connect serial device to character backend '${arg}'`);
        cl.monitors.push({ chardev: id, arg: loc });
        break;
      }
      case 'mon': {
        const o = parseQemuOpts(arg, 'chardev', true, loc, warnings);
        let chardev: string | undefined;
        let mode = 'readline';
        for (const [k, v] of o.params) {
          if (k === 'chardev') chardev = v;
          else if (k === 'mode') mode = v;
          else if (k === 'pretty') {
            if (parseBoolAt(loc, k, v)) throw new CmdlineError(`${loc}: pretty-printed QMP is not supported by virtio-ts-qemu`);
          } else if (k === 'id') {
            /* accepted */
          } else throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
        }
        if (mode !== 'control' && mode !== 'readline') throw new CmdlineError(`${loc}: unknown monitor mode "${mode}"`);
        if (mode === 'readline') throw new CmdlineError(`${loc}: the human monitor (mode=readline) is not supported by virtio-ts-qemu (use mode=control)`);
        if (chardev === undefined) throw new CmdlineError(`${loc}: chardev is required`);
        cl.monitors.push({ chardev, arg: loc });
        break;
      }
      case 'chardev':
        addChardev({ ...parseChardev(arg, loc, warnings), loc }, loc);
        break;
      case 'drive':
        cl.drives.push(parseDrive(arg, loc, warnings, cl.drives, cl.blockdevs));
        break;
      case 'blockdev':
        cl.blockdevs.push(parseBlockdev(arg, loc, cl.blockdevs, cl.drives));
        break;
      case 'object':
        cl.objects.push(parseObject(arg, loc, warnings, cl.objects));
        break;
      case 'netdev': {
        const nd = parseNetdev(arg, warnings);
        if (nd === 'help') {
          cl.action = { kind: 'netdev-help' };
          return cl;
        }
        if (cl.netdevs.some((n) => n.id === nd.id)) throw new CmdlineError(`${loc}: Duplicate ID '${nd.id}' for netdev`);
        cl.netdevs.push(nd);
        break;
      }
      case 'device': {
        const spec = parseDevice(arg, loc, warnings);
        if (spec === 'help') {
          cl.action = { kind: 'device-help', driver: undefined };
          return cl;
        }
        if (typeof spec === 'object' && 'help' in spec) {
          cl.action = { kind: 'device-help', driver: spec.help };
          return cl;
        }
        if (spec.id !== undefined && cl.devices.some((d) => d.id === spec.id)) throw new CmdlineError(`${loc}: Duplicate ID '${spec.id}' for device`);
        cl.devices.push(spec);
        break;
      }
      case 'global':
        cl.globals.push(parseGlobal(arg, loc, warnings));
        break;
      case 'incoming':
        // The last one wins; its URI is checked when the incoming migration starts, after the
        // machine is built (QEMU's qmp_x_exit_preconfig), not here.
        cl.incoming = arg;
        break;
      case 'S':
        cl.startPaused = true;
        break;
    }
  }
  void memArg;
  void display;

  // -machine: merged keyval options, the last value of each key wins.
  const mopts = new Map<string, [string, string]>();
  for (const [k, v, loc] of machineOpts) mopts.set(k, [v, loc]);
  const type = mopts.get('type')?.[0] ?? 'pc';
  if (type === 'pc' || type === 'pc-i440fx-7.2') {
    cl.machine = 'pc';
    cl.machineTypeName = 'pc-i440fx-7.2';
  } else if (type === 'microvm') {
    cl.machine = 'microvm';
    cl.machineTypeName = 'microvm';
  } else if (/^(pc-i440fx-\d|pc-q35-|q35$|isapc$|none$|x-remote$)/.test(type)) {
    throw new CmdlineError(`machine type '${type}' is not supported by virtio-ts-qemu (supported: pc, pc-i440fx-7.2, microvm)`);
  } else {
    throw new CmdlineError('unsupported machine type\nUse -machine help to list supported machines');
  }
  const qomType = cl.machine === 'pc' ? 'pc-i440fx-7.2-machine' : 'microvm-machine';
  for (const [k, [v, loc]] of mopts) {
    if (k === 'type') continue;
    if (k === 'accel') {
      machineAccel = v;
      continue;
    }
    if (k === 'acpi') {
      const a = parseOnOffAutoAt(k, v);
      if (cl.machine === 'pc' && a === false) throw new CmdlineError(`${loc}: acpi=off is not supported on pc by virtio-ts-qemu`);
      cl.acpi = a;
      continue;
    }
    if (k === 'ioapic2' && cl.machine === 'microvm') {
      cl.ioapic2 = parseOnOffAutoAt(k, v);
      continue;
    }
    if ((cl.machine === 'microvm' ? MICROVM_PROPS : PC_PROPS).has(k)) {
      throw new CmdlineError(`${loc}: machine property '${k}' is not supported by virtio-ts-qemu`);
    }
    throw new CmdlineError(`Property '${qomType}.${k}' not found`);
  }
  if (machineAccel !== undefined) {
    if (cl.accel.length) throw new CmdlineError('The -accel and "-machine accel=" options are incompatible');
    for (const a of machineAccel.split(':')) {
      if (a === 'qtest' || a === 'tcg') cl.accel.push(a);
      else if (ACCELS_REAL.has(a)) continue;
      else throw new CmdlineError(`invalid accelerator ${a}`);
    }
    if (!cl.accel.length) throw new CmdlineError(`accelerator '${machineAccel}' is not supported by virtio-ts-qemu (use qtest or tcg)`);
  }
  if (!cl.accel.length) cl.accel.push('tcg');

  // Chardev references and stdio sharing.
  for (const mon of cl.monitors) {
    if (!chardevIds.has(mon.chardev)) throw new CmdlineError(`${mon.arg}: chardev "${mon.chardev}" not found`);
  }
  if (cl.qtest !== undefined && !chardevIds.has(cl.qtest)) throw new CmdlineError(`Failed to initialize device for qtest: "chardev:${cl.qtest}"`);
  const users = [...(cl.qtest !== undefined ? [cl.qtest] : []), ...cl.monitors.map((m) => m.chardev)];
  const seen = new Set<string>();
  for (const u of users) {
    if (seen.has(u)) throw new CmdlineError(`chardev '${u}' is already in use`);
    seen.add(u);
  }
  const stdio = cl.chardevs.filter((c) => c.backend === 'stdio');
  if (stdio.length > 1) {
    // QEMU creates the monitors' chardevs first, so the qtest one is the one that fails.
    const qtestStdio = stdio.some((c) => c.id === cl.qtest && c.id === 'qtest');
    throw new CmdlineError(`cannot use stdio by multiple character devices${qtestStdio ? '\nFailed to initialize device for qtest: "stdio"' : ''}`, true);
  }

  if (!cl.nodefaults) {
    warnings.push("warning: -nodefaults not given: QEMU's default devices (VGA, network card, ...) are not emulated; the machine is the same as with -nodefaults");
  }
  return cl;
}

function parseBoolAt(loc: string, k: string, v: string): boolean {
  try {
    return parseBool(k, v);
  } catch (e) {
    throw new CmdlineError(`${loc}: ${(e as Error).message}`);
  }
}

function parseOnOffAutoAt(k: string, v: string): boolean | undefined {
  return parseOnOffAuto(k, v);
}

/** `-m [size=]SIZE[,slots=N,maxmem=SIZE]`: MiB when no suffix; 0 means the default. */
function parseMemory(arg: string, loc: string, warnings: string[]): number {
  const o = parseQemuOpts(arg, 'size', true, loc, warnings);
  let size: bigint | undefined;
  for (const [k, v] of o.params) {
    if (k === 'size') {
      try {
        // Legacy format: no suffix means MiB.
        const last = v[v.length - 1] ?? '';
        size = parseSize('size', v, /[0-9]/.test(last) ? 'm' : 'b', warnings);
      } catch (e) {
        throw new CmdlineError(`${loc}: ${(e as Error).message}`);
      }
      if (size >= 1n << 64n) throw new CmdlineError('too large \'size\' option value');
    } else if (k === 'slots' || k === 'maxmem') {
      // Memory hotplug limits: nothing a driver sees without hotplugged DIMMs.
    } else {
      throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
    }
  }
  if (size === undefined || size === 0n) return DEFAULT_RAM_BYTES;
  size = (size + 8191n) & ~8191n;
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new CmdlineError("cannot set up guest memory 'pc.ram': Cannot allocate memory");
  return Number(size);
}

/**
 * A chardev in QEMU's compat syntax (`qemu_chr_parse_compat`), as -qtest and -qmp take it:
 * `stdio`, `null`, `unix:PATH[,server=on,wait=off]`, `tcp:HOST:PORT[,...]`, `chardev:ID`.
 * Registers the new chardev under `label` and returns the id to use.
 */
function compatChardev(arg: string, label: string, add: (spec: ChardevSpec) => void, failure: () => string): string {
  if (arg.startsWith('chardev:')) return arg.slice('chardev:'.length);
  if (arg === 'stdio') {
    add({ backend: 'stdio', id: label });
    return label;
  }
  if (arg === 'null') {
    add({ backend: 'null', id: label });
    return label;
  }
  const unix = /^unix:(.*)$/s.exec(arg);
  const tcp = /^tcp:([^:]*):([^,]*)(,.*)?$/s.exec(arg);
  if (unix || tcp) {
    const warnings: string[] = [];
    let spec: ChardevSpec;
    if (unix) {
      const o = parseQemuOpts(unix[1]!, 'path', false, arg, warnings);
      spec = socketSpec(label, o.params, arg);
    } else {
      const o = parseQemuOpts((tcp![3] ?? '').replace(/^,/, ''), undefined, false, arg, warnings);
      spec = socketSpec(label, [['host', tcp![1]!], ['port', tcp![2]!], ...o.params], arg);
    }
    add(spec);
    return label;
  }
  const backend = /^([a-z]+):/.exec(arg)?.[1];
  if (backend && ['file', 'pipe', 'udp', 'telnet', 'websocket', 'mon', 'vc', 'pty', 'braille', 'msmouse', 'wctablet'].includes(backend)) {
    throw new CmdlineError(`${arg}: chardev '${backend}' is not supported by virtio-ts-qemu (use unix:, tcp:, stdio or null)`);
  }
  throw new CmdlineError(`'${arg}' is not a valid char driver\n${failure()}`, true);
}

function socketSpec(id: string, params: [string, string][], loc: string): ChardevSpec {
  let path: string | undefined;
  let host: string | undefined;
  let port: number | undefined;
  let server = false;
  let wait: boolean | undefined;
  for (const [k, v] of params) {
    switch (k) {
      case 'path':
        path = v;
        break;
      case 'host':
        host = v;
        break;
      case 'port': {
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > 65535) throw new CmdlineError(`${loc}: port '${v}' is not a valid TCP port`);
        port = n;
        break;
      }
      case 'server':
        server = parseBoolAt(loc, k, v);
        break;
      case 'wait':
        wait = parseBoolAt(loc, k, v);
        break;
      case 'id':
      case 'backend':
        break;
      case 'nodelay':
      case 'ipv4':
      case 'ipv6':
        parseBoolAt(loc, k, v);
        break;
      default:
        throw new CmdlineError(`${loc}: socket option '${k}' is not supported by virtio-ts-qemu`);
    }
  }
  if (path === undefined && (host === undefined || port === undefined)) throw new CmdlineError(`${loc}: Unable to parse FD number `);
  if (!server && wait !== undefined) throw new CmdlineError(`${loc}: 'wait' option is incompatible with socket in client connect mode`);
  return { backend: 'socket', id, ...(path !== undefined ? { path } : { host: host ?? '', port: port ?? 0 }), server, wait: wait ?? true };
}

function parseChardev(arg: string, loc: string, warnings: string[]): ChardevSpec {
  const o = parseQemuOpts(arg, 'backend', true, loc, warnings);
  const get = (k: string) => o.params.filter(([n]) => n === k).pop()?.[1];
  const backend = get('backend');
  const id = get('id');
  if (backend === undefined || backend === '') throw new CmdlineError(`${loc}: chardev: "${id ?? ''}" missing backend`);
  if (id === undefined) throw new CmdlineError(`${loc}: chardev: no id specified`);
  switch (backend) {
    case 'null':
      for (const [k] of o.params) if (k !== 'backend' && k !== 'id') throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
      return { backend: 'null', id };
    case 'stdio':
      for (const [k, v] of o.params) {
        if (k === 'backend' || k === 'id') continue;
        if (k === 'signal') parseBoolAt(loc, k, v);
        else throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
      }
      return { backend: 'stdio', id };
    case 'socket':
      return socketSpec(id, o.params, loc);
    case 'file': {
      // qemu_chr_parse_file_out: `path` is required; `append` opens without truncating.
      let path: string | undefined;
      let append = false;
      for (const [k, v] of o.params) {
        if (k === 'backend' || k === 'id') continue;
        if (k === 'path') path = v;
        else if (k === 'append') append = parseBoolAt(loc, k, v);
        else if (k === 'mux' || k === 'logfile' || k === 'logappend') throw new CmdlineError(`${loc}: chardev option '${k}' is not supported by virtio-ts-qemu`);
        else throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
      }
      if (path === undefined) throw new CmdlineError(`${loc}: chardev: file: no filename given`);
      return { backend: 'file', id, path, append };
    }
    default:
      if (CHARDEV_BACKENDS_UNSUPPORTED.has(backend)) throw new CmdlineError(`${loc}: chardev backend '${backend}' is not supported by virtio-ts-qemu`);
      throw new CmdlineError(`${loc}: '${backend}' is not a valid char driver name`);
  }
}

/** iothread's properties (QEMU 7.2 `iothread.c`): accepted, and meaningless here. */
const IOTHREAD_PROPS = new Set(['poll-max-ns', 'poll-grow', 'poll-shrink', 'aio-max-batch']);

/**
 * `-object TYPE,id=ID` (QEMU's `object_option_parse`, keyval with `qom-type` implied first). Only
 * `iothread` exists here: its one use is the `iothread` link virtio-balloon's free page hinting
 * requires; the thread itself is not needed, as hints are handled in the notify. (virtio-blk's
 * `iothread` link is looked up as QEMU does, then refused.)
 */
function parseObject(arg: string, loc: string, warnings: string[], existing: ObjectSpec[]): ObjectSpec {
  const o = parseQemuOpts(arg, 'qom-type', false, loc, warnings);
  let qomType: string | undefined;
  let id: string | undefined;
  for (const [k, v] of o.params) {
    if (k === 'qom-type') qomType = v;
    else if (k === 'id') id = v;
    else if (qomType === 'iothread' && IOTHREAD_PROPS.has(k)) continue;
    else if (qomType === 'iothread') throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
  }
  if (qomType === undefined) throw new CmdlineError(`${loc}: Parameter 'qom-type' is missing`);
  if (qomType !== 'iothread') throw new CmdlineError(`${loc}: -object ${qomType} is not supported by virtio-ts-qemu (only iothread)`);
  if (id === undefined) throw new CmdlineError(`${loc}: Parameter 'id' is missing`);
  if (existing.some((x) => x.id === id)) throw new CmdlineError(`${loc}: Duplicate ID '${id}' for object`);
  return { qomType, id };
}

/** `-device`: QemuOpts with the implied key `driver`, or a JSON object. */
function parseDevice(arg: string, loc: string, warnings: string[]): DeviceSpec | 'help' | { help: string } {
  if (arg === 'help' || arg === '?') return 'help';
  let entries: [string, PropValue][];
  const json = arg.startsWith('{');
  if (json) {
    let obj: unknown;
    try {
      obj = JSON.parse(arg);
    } catch {
      throw new CmdlineError(`${loc}: JSON parse error, premature EOI`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new CmdlineError(`${loc}: JSON parse error, expecting an object`);
    entries = [];
    for (const [k, v] of Object.entries(obj as Record<string, unknown>)) {
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') throw new CmdlineError(`${loc}: Invalid parameter type for '${k}'`);
      entries.push([k, v]);
    }
  } else {
    const o = parseQemuOpts(arg, 'driver', true, loc, warnings);
    entries = o.params;
    const driver = o.params.find(([k]) => k === 'driver')?.[1];
    if (o.help) return driver ? { help: driver } : 'help';
  }
  let driver: string | undefined;
  let id: string | undefined;
  const props: [string, PropValue][] = [];
  for (const [k, v] of entries) {
    if (k === 'driver') driver = String(v);
    else if (k === 'id') id = String(v);
    else props.push([k, v]);
  }
  if (driver === undefined) throw new CmdlineError(`${loc}: Parameter 'driver' is missing`);
  driver = DEVICE_ALIASES[driver] ?? driver;
  if (NOT_YET.test(driver)) throw new CmdlineError(`${loc}: device '${driver}' is not implemented yet by virtio-ts`);
  if (!SUPPORTED_DEVICES.includes(driver)) throw new CmdlineError(`${loc}: '${driver}' is not a valid device model name`);
  if (id !== undefined && !/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id)) {
    throw new CmdlineError(`${loc}: Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.`);
  }
  return { driver, id, props, loc, json };
}

function parseGlobal(arg: string, loc: string, warnings: string[]): GlobalSpec {
  // qemu_global_option: "%63[^.=].%63[^=]" followed by '='.
  const m = /^([^.=]{1,63})\.([^=]{1,63})=(.*)$/s.exec(arg);
  if (m) return { driver: m[1]!, property: m[2]!, value: m[3]!, loc };
  const o = parseQemuOpts(arg, undefined, true, loc, warnings);
  let driver: string | undefined;
  let property: string | undefined;
  let value: string | undefined;
  for (const [k, v] of o.params) {
    if (k === 'driver') driver = v;
    else if (k === 'property') property = v;
    else if (k === 'value') value = v;
    else throw new CmdlineError(`${loc}: Invalid parameter '${k}'`);
  }
  if (driver === undefined || property === undefined || value === undefined) {
    throw new CmdlineError(`${loc}: options 'driver', 'property', and 'value' are required`);
  }
  return { driver, property, value, loc };
}
