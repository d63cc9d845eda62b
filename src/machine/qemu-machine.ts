/**
 * Build a reference machine from a parsed QEMU command line: the machine type with its options,
 * the `-global`s, and each `-device` with QEMU 7.2's property names, types, defaults and checks
 * (messages worded as QEMU's). Files are already loaded by the caller (`bios`).
 *
 * No Node imports: part of the browser bundle.
 */
import { createVirtioPci, parsePciAddr, type VirtIOPCIProxy, type VirtioPciOptions } from '../bus/virtio-pci.js';
import type { VirtioMmioTransport } from '../bus/virtio-mmio.js';
import { bit, VIRTIO_F_ANY_LAYOUT, VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_RING_RESET, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC } from '../virtio/constants.js';
import type { VirtIODevice } from '../virtio/device.js';
import { CmdlineError, parseBool, parseOnOffAuto, parseSize, type DeviceSpec, type PropValue, type QemuCommandLine } from './cmdline.js';
import type { ReferenceMachine } from './machine.js';
import { MicrovmMachine } from './microvm.js';
import { PcMachine } from './pc.js';
import { DEVICE_PROPS, QomObject } from './qom.js';
import { parseStrtoull } from './qtest-server.js';
import { lookupBusChildType, lookupDeviceType, typeChain, VIRTIO_DEVICE_TYPES, type BuildOptions, type BusChildType, type ChildBus, type DeviceBuildContext, type PropKind } from './device-types/index.js';
import { NullChardev, type CharBackend } from '../devices/console/chardev.js';

export type { BuildOptions } from './device-types/types.js';

/** One `-device` as built. */
export interface BuiltDevice {
  spec: DeviceSpec;
  device: VirtIODevice;
  /** QOM path of the device (`/machine/peripheral-anon/device[0]`). */
  path: string;
  /** pc: the PCI function and its "SS.F". */
  pci?: { proxy: VirtIOPCIProxy; addr: string };
  /** microvm: the transport index and base. */
  mmio?: { index: number; base: number; gsi: number; transport: VirtioMmioTransport };
}

/** One `-device` that plugs into a child bus (a virtio-serial port). */
export interface BuiltBusChild {
  spec: DeviceSpec;
  /** What the type built (for virtconsole/virtserialport, the `VirtIOSerialPort`). */
  object: unknown;
  /** The bus it sits on, and the device providing it. */
  bus: ChildBus;
  path: string;
}

export interface BuiltMachine {
  machine: PcMachine | MicrovmMachine;
  /** The virtio devices, in `-device` order. */
  devices: BuiltDevice[];
  /** Devices on child buses (virtio-serial ports), in `-device` order. */
  children: BuiltBusChild[];
  /** Child buses (virtio-serial port buses), in creation order. */
  buses: ChildBus[];
  /** Warnings QEMU would print while creating devices (already located). */
  warnings: string[];
}

/** Class names we know of for -global (others get QEMU's "invalid class name" warning). */
const KNOWN_CLASSES = new Set([
  ...VIRTIO_DEVICE_TYPES.flatMap((t) => [
    t.deviceType,
    ...(t.deviceParents ?? []),
    ...(t.pciType ? [t.pciType, `${t.pciType}-transitional`, `${t.pciType}-non-transitional`, `${t.pciType}-base`, ...(t.pciParents ?? [])] : []),
  ]),
  'virtio-pci', 'virtio-device', 'pci-device', 'device', 'virtio-mmio', 'sys-bus-device', 'i440FX', 'PIIX3', 'piix3-ide', 'PIIX4_PM',
  'i440FX-pcihost', 'ioapic', 'kvm-pit', 'isa-pit', 'mc146818rtc', 'hpet', 'isa-fdc', 'i8042', 'cfi.pflash01',
  'virtio-blk-pci', 'virtio-blk-device', 'virtio-net-pci', 'virtio-net-device', 'virtio-serial-pci', 'virtio-serial-device',
  'virtio-balloon-pci', 'virtio-balloon-device', 'virtio-keyboard-pci', 'virtio-mouse-pci', 'virtio-tablet-pci',
  'virtconsole', 'virtserialport', 'e1000', 'VGA', 'isa-serial', 'fw_cfg_io', 'fw_cfg', 'virtio-blk-pci-base',
  'virtio-net-pci-base', 'virtio-serial-pci-base', 'virtio-balloon-pci-base', 'virtio-input-pci', 'virtio-input-device',
]);

/** Properties every virtio device has (QEMU's DEFINE_VIRTIO_COMMON_FEATURES and VirtIODevice's own). */
const VIRTIO_PROPS: Record<string, PropKind> = {
  event_idx: 'bool', indirect_desc: 'bool', notify_on_empty: 'bool', any_layout: 'bool',
  queue_reset: 'bool', packed: 'bool', iommu_platform: 'bool', 'use-started': 'bool', 'use-disabled-flag': 'bool',
  'x-disable-legacy-check': 'bool',
};
/** Properties of the virtio-pci proxy (and PCIDevice). */
const PCI_PROPS: Record<string, PropKind> = {
  addr: 'addr', bus: 'str', 'disable-legacy': 'onoffauto', 'disable-modern': 'bool', ioeventfd: 'bool', vectors: 'u32',
  'page-per-vq': 'bool', multifunction: 'bool', romfile: 'str', rombar: 'u32', romsize: 'u32', 'acpi-index': 'u32',
  failover_pair_id: 'str', aer: 'bool', ats: 'bool', 'x-ats-page-aligned': 'bool', 'migrate-extra': 'bool',
  'modern-pio-notify': 'bool', 'virtio-pci-bus-master-bug-migration': 'bool', 'x-disable-pcie': 'bool',
  'x-ignore-backend-features': 'bool', 'x-pcie-deverr-init': 'bool', 'x-pcie-extcap-init': 'bool', 'x-pcie-flr-init': 'bool',
  'x-pcie-lnkctl-init': 'bool', 'x-pcie-lnksta-dllla': 'bool', 'x-pcie-pm-init': 'bool',
};
/** Accepted only at QEMU's default value (they change nothing a driver can see at the default). */
const DEFAULT_ONLY: Record<string, PropValue> = {
  iommu_platform: false, 'use-started': true, 'use-disabled-flag': true, 'x-disable-legacy-check': false,
  aer: false, ats: false, 'x-ats-page-aligned': true, 'migrate-extra': true, 'modern-pio-notify': false,
  'virtio-pci-bus-master-bug-migration': false, 'x-disable-pcie': false, 'x-ignore-backend-features': false,
  'x-pcie-deverr-init': true, 'x-pcie-extcap-init': true, 'x-pcie-flr-init': true, 'x-pcie-lnkctl-init': true,
  'x-pcie-lnksta-dllla': true, 'x-pcie-pm-init': true, romfile: '', failover_pair_id: '',
};
const MMIO_GLOBAL_PROPS: Record<string, PropKind> = { 'force-legacy': 'bool', ioeventfd: 'bool', format_transport_address: 'bool' };

/**
 * Parse one property value of `kind`; messages as QEMU's visitors word them. `json`: the value
 * came from a JSON -device, whose types QEMU checks strictly (no "on" for a boolean).
 */
function propValue(name: string, kind: PropKind, v: PropValue, json = false, owner = ''): PropValue | undefined {
  if (json) {
    if ((kind === 'bool' && typeof v !== 'boolean') || ((kind === 'str' || kind === 'onoffauto') && typeof v !== 'string')) {
      throw new CmdlineError(`Invalid parameter type for '${name}', expected: ${kind === 'bool' ? 'boolean' : 'string'}`);
    }
    const int = kind === 'u16' || kind === 'u32' || kind === 'u64' || kind === 'i32' || kind === 'size32' || kind === 'blocksize';
    if (int && (typeof v !== 'number' || !Number.isInteger(v))) throw new CmdlineError(`Parameter '${name}' expects ${kind === 'size32' || kind === 'blocksize' ? 'size' : kind === 'i32' ? 'int64' : 'uint64'}`);
    if ((kind === 'u32' || kind === 'u64' || kind === 'u16') && (v as number) < 0) throw new CmdlineError(`Parameter '${name}' expects ${kind === 'u32' ? 'uint32_t' : kind === 'u16' ? 'uint16_t' : 'uint64'}`);
  }
  switch (kind) {
    case 'bool':
      if (typeof v === 'boolean') return v;
      if (typeof v !== 'string') throw new CmdlineError(`Invalid parameter type for '${name}', expected: boolean`);
      return parseBool(name, v);
    case 'onoffauto':
      if (typeof v === 'boolean') return v;
      if (typeof v !== 'string') throw new CmdlineError(`Invalid parameter type for '${name}', expected: string`);
      return parseOnOffAuto(name, v);
    case 'size32':
    case 'blocksize': {
      let n: bigint;
      if (typeof v === 'number') n = BigInt(v);
      else {
        try {
          n = parseSize(name, String(v));
        } catch {
          throw new CmdlineError(`Parameter '${name}' expects size`);
        }
      }
      if (kind === 'blocksize') {
        // set_blocksize: the range first, then the power of two.
        if (n < 512n || n > 2097152n) throw new CmdlineError(`Property .${name} doesn't take value ${n} (minimum: 512, maximum: 2097152)`);
        if ((n & (n - 1n)) !== 0n) throw new CmdlineError(`Property .${name} doesn't take value '${n}', it's not a power of 2`);
      } else if (n > 0xffff_ffffn) {
        throw new CmdlineError(`Property ${owner}.${name} doesn't take value ${n} (maximum: 4294967295)`);
      }
      return Number(n);
    }
    case 'i32': {
      let n: number;
      if (typeof v === 'number') n = v;
      else if (typeof v === 'string') {
        // qemu_strtoi64, base 0.
        const m = /^\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(v);
        if (!m) throw new CmdlineError(`Parameter '${name}' expects integer`);
        const b = m[2]!;
        n = b.startsWith('0x') || b.startsWith('0X') ? parseInt(b.slice(2), 16) : b.length > 1 && b.startsWith('0') ? parseInt(b.slice(1), 8) : parseInt(b, 10);
        if (m[1] === '-') n = -n;
      } else throw new CmdlineError(`Parameter '${name}' expects integer`);
      if (!Number.isSafeInteger(n) || n < -0x8000_0000 || n > 0x7fff_ffff) throw new CmdlineError(`Parameter '${name}' expects int32_t`);
      return n;
    }
    case 'u16':
    case 'u32':
    case 'u64': {
      let n: bigint;
      if (typeof v === 'number') {
        if (!Number.isInteger(v)) throw new CmdlineError(`Parameter '${name}' expects integer`);
        n = BigInt.asUintN(64, BigInt(v));
      } else if (typeof v === 'string') {
        const r = parseStrtoull(v);
        if (!r.ok) throw new CmdlineError(`Parameter '${name}' expects integer`);
        n = r.value;
      } else {
        throw new CmdlineError(`Parameter '${name}' expects uint64`);
      }
      if (kind === 'u32' && n > 0xffff_ffffn) throw new CmdlineError(`Parameter '${name}' expects uint32_t`);
      if (kind === 'u16' && n > 0xffffn) throw new CmdlineError(`Parameter '${name}' expects uint16_t`);
      return kind === 'u64' ? n.toString() : Number(n);
    }
    case 'str':
      return String(v);
    case 'addr':
      return typeof v === 'number' ? v : String(v);
  }
}

/** Build the machine and its devices. Throws `CmdlineError` with QEMU-worded messages. */
export function buildMachine(cl: QemuCommandLine, opts: BuildOptions = {}): BuiltMachine {
  const warnings: string[] = [];
  // -global: warn about classes we do not know, as QEMU warns about invalid class names.
  for (const g of cl.globals) {
    if (!KNOWN_CLASSES.has(g.driver)) warnings.push(`warning: global ${g.driver}.${g.property} has invalid class name`);
  }

  let machine: PcMachine | MicrovmMachine;
  const ramError = () => new CmdlineError("cannot set up guest memory 'pc.ram': Cannot allocate memory");
  if (cl.machine === 'pc') {
    try {
      machine = new PcMachine({ ramSize: cl.ramSize, ...(opts.bios ? { bios: opts.bios } : {}) });
    } catch (e) {
      if (e instanceof RangeError) throw ramError();
      throw e;
    }
  } else {
    let forceLegacy = true;
    for (const g of cl.globals) {
      if (g.driver !== 'virtio-mmio' && g.driver !== 'sys-bus-device' && g.driver !== 'device') continue;
      const kind = MMIO_GLOBAL_PROPS[g.property];
      if (!kind) {
        if (g.driver === 'virtio-mmio') throw new CmdlineError(`can't apply global ${g.driver}.${g.property}=${g.value}: Property 'virtio-mmio.${g.property}' not found`);
        continue;
      }
      let v: PropValue | undefined;
      try {
        v = propValue(g.property, kind, g.value);
      } catch (e) {
        throw new CmdlineError(`can't apply global ${g.driver}.${g.property}=${g.value}: ${(e as Error).message}`);
      }
      if (g.property === 'force-legacy') forceLegacy = v as boolean;
    }
    try {
      machine = new MicrovmMachine({
        ramSize: cl.ramSize,
        ...(opts.bios ? { bios: opts.bios } : {}),
        acpi: cl.acpi ?? true,
        ...(cl.ioapic2 === false ? { ioapic2: false } : {}),
        forceLegacy,
        ...(opts.tracer ? { tracer: opts.tracer } : {}),
      });
    } catch (e) {
      if (e instanceof RangeError) throw ramError();
      throw e;
    }
  }
  // QEMU's initial run states: -S stays in prelaunch (and clears autostart, which also decides
  // whether an incoming migration starts the VM); -incoming waits in inmigrate.
  machine.autostart = !cl.startPaused;
  if (cl.startPaused) machine.runState = 'prelaunch';
  if (cl.incoming !== undefined) machine.runState = 'inmigrate';

  try {
    machine.net.createNetdevs(cl.netdevs, opts.netdevs);
  } catch (e) {
    throw new CmdlineError((e as Error).message);
  }

  const devices: BuiltDevice[] = [];
  const state: BuildState = {
    buses: [],
    anonBuses: new Map(),
    children: [],
    chardevUsers: new Set([...(cl.qtest !== undefined ? [cl.qtest] : []), ...cl.monitors.map((m) => m.chardev)]),
    blockUsers: new Map(),
    fileLocks: new Map(),
  };
  for (const spec of cl.devices) {
    try {
      const child = lookupBusChildType(spec.driver);
      if (child) state.children.push(buildBusChild(machine, cl, spec, child, opts, state));
      else devices.push(buildDevice(machine, cl, spec, opts, warnings, state));
    } catch (e) {
      if (e instanceof CmdlineError) throw new CmdlineError(`${spec.loc}: ${e.message}`);
      throw new CmdlineError(`${spec.loc}: ${(e as Error).message}`);
    }
  }
  for (const w of machine.net.checkClients(cl.qtest !== undefined)) warnings.push(w);
  return { machine, devices, children: state.children, buses: state.buses, warnings };
}

/** What building one device leaves for the next ones. */
interface BuildState {
  buses: ChildBus[];
  /** Buses named `<type>.N` so far, by type (QEMU numbers unnamed buses per type). */
  anonBuses: Map<string, number>;
  children: BuiltBusChild[];
  /** Chardevs taken by qtest, monitors or devices. */
  chardevUsers: Set<string>;
  /** Drives and block nodes already taken by a device (name → its QOM path). */
  blockUsers: Map<string, string>;
  /** Image files in use by devices, with each device's claim (QEMU's file locking between users). */
  fileLocks: Map<string, { write: boolean; shareWrite: boolean }[]>;
}

/**
 * -global values for `chain`, then the -device's own (which win), parsed to their kinds. `owner`:
 * the QOM type that holds the properties, as QEMU's range messages name it.
 */
function resolveProps(cl: QemuCommandLine, spec: DeviceSpec, known: Record<string, PropKind>, owner: string): Map<string, PropValue> {
  const type = spec.driver;
  const chain = typeChain(type);
  const values = new Map<string, PropValue>();
  for (const g of cl.globals) {
    if (!chain.includes(g.driver)) continue;
    const kind = known[g.property];
    if (!kind) throw new CmdlineError(`can't apply global ${g.driver}.${g.property}=${g.value}: Property '${type}.${g.property}' not found`);
    try {
      const v = propValue(g.property, kind, g.value, false, owner);
      values.set(g.property, v === undefined ? 'auto' : v);
    } catch (e) {
      throw new CmdlineError(`can't apply global ${g.driver}.${g.property}=${g.value}: ${(e as Error).message}`);
    }
  }
  for (const [k, raw] of spec.props) {
    const kind = known[k];
    if (!kind) throw new CmdlineError(`Property '${type}.${k}' not found`);
    const v = propValue(k, kind, raw, spec.json, owner);
    values.set(k, v === undefined ? 'auto' : v);
  }
  return values;
}

/**
 * A device on a child bus (`virtconsole`, `virtserialport`): the bus named by `bus=`, or the
 * last bus of the right type created so far (QEMU's `qbus_find_recursive` meets the newest
 * first); its properties; its chardev, resolved and checked as QEMU's chardev property does.
 */
function buildBusChild(machine: ReferenceMachine, cl: QemuCommandLine, spec: DeviceSpec, type: BusChildType, opts: BuildOptions, state: BuildState): BuiltBusChild {
  const values = resolveProps(cl, spec, { ...type.props, bus: 'str' }, type.typeName);
  let bus: ChildBus | undefined;
  const busName = values.get('bus');
  if (busName !== undefined) {
    bus = state.buses.find((b) => b.name === String(busName));
    if (!bus && String(busName) === 'pci.0' && machine instanceof PcMachine) throw new CmdlineError(`Device '${type.typeName}' can't go on PCI bus`);
    if (!bus) throw new CmdlineError(`Bus '${String(busName)}' not found`);
    if (bus.type !== type.busType) throw new CmdlineError(`Device '${type.typeName}' can't go on ${bus.type} bus`);
  } else {
    bus = [...state.buses].reverse().find((b) => b.type === type.busType);
    if (!bus) throw new CmdlineError(`No '${type.busType}' bus found for device '${type.typeName}'`);
  }
  const chardev = (prop: string, id: string): CharBackend => {
    const cs = cl.chardevs.find((c) => c.id === id);
    if (!cs) throw new CmdlineError(`Property '${type.typeName}.${prop}' can't find value '${id}'`);
    if (state.chardevUsers.has(id)) throw new CmdlineError(`Property '${type.typeName}.${prop}' can't take value '${id}': Device '${id}' is in use`);
    const backend = opts.chardevs?.get(id) ?? (cs.backend === 'null' ? new NullChardev(id) : undefined);
    if (!backend) throw new CmdlineError(`chardev '${id}' has no backend in this build (pass one in BuildOptions.chardevs)`);
    state.chardevUsers.add(id);
    return backend;
  };
  const sameTypeBuses = state.buses.filter((b) => b.type === bus!.type);
  const object = type.create({ machine, cl, spec, values, bus, sameTypeBuses, chardev });
  const qom = new QomObject(type.typeName, DEVICE_PROPS);
  machine.addPeripheral(qom, spec.id);
  // VSERPORT_CHANGE: the guest opened or closed a port that has an id.
  const port = object as { onGuestConnected?: (open: boolean) => void };
  if (spec.id !== undefined && typeof object === 'object' && object !== null && 'onGuestConnected' in object) {
    const id = spec.id;
    port.onGuestConnected = (open) => machine.emitEvent('VSERPORT_CHANGE', { id, open });
  }
  return { spec, object, bus, path: qom.path };
}

function buildDevice(machine: ReferenceMachine, cl: QemuCommandLine, spec: DeviceSpec, opts: BuildOptions, warnings: string[], state: BuildState): BuiltDevice {
  const type = spec.driver;
  const found = lookupDeviceType(type);
  if (!found) throw new CmdlineError(`'${type}' is not a valid device model name`);
  const { type: dtype, pci: isPci, variant } = found;
  const known: Record<string, PropKind> = { ...VIRTIO_PROPS, ...dtype.props, ...(isPci ? { ...PCI_PROPS, ...dtype.pciProps } : { bus: 'str' }) };
  if (isPci) for (const p of dtype.pciLacks ?? []) delete known[p];
  if (variant) {
    delete known['disable-legacy'];
    delete known['disable-modern'];
  }

  // Globals for the type and its ancestors first, then the -device properties (which win).
  const values = resolveProps(cl, spec, known, dtype.deviceType);
  const defaultOnly: Record<string, PropValue> = { ...DEFAULT_ONLY, ...dtype.defaultOnly };
  for (const [k, v] of values) {
    if (k in defaultOnly && v !== defaultOnly[k]) throw new CmdlineError(`property '${k}=${String(v)}' of ${type} is not supported by virtio-ts-qemu`);
    const why = dtype.refused?.[k];
    if (why !== undefined) throw new CmdlineError(`property '${k}' of ${type} is not supported by virtio-ts-qemu (${why})`);
  }
  const bool = (k: string, d: boolean) => (values.has(k) ? (values.get(k) as boolean) : d);

  let disabled = 0n;
  if (!bool('event_idx', true)) disabled |= bit(VIRTIO_RING_F_EVENT_IDX);
  if (!bool('indirect_desc', true)) disabled |= bit(VIRTIO_RING_F_INDIRECT_DESC);
  if (!bool('notify_on_empty', true)) disabled |= bit(VIRTIO_F_NOTIFY_ON_EMPTY);
  if (!bool('any_layout', true)) disabled |= bit(VIRTIO_F_ANY_LAYOUT);
  if (!bool('queue_reset', true)) disabled |= bit(VIRTIO_F_RING_RESET);

  if (isPci && !(machine instanceof PcMachine)) throw new CmdlineError(`No 'PCI' bus found for device '${type}'`);
  if (!isPci && !(machine instanceof MicrovmMachine)) throw new CmdlineError(`No 'virtio-bus' bus found for device '${type}'`);
  // The bus a device provides is named after its id, else after its type and a per-type count.
  let childBusName: string | undefined;
  if (dtype.childBusType !== undefined) {
    if (spec.id !== undefined) childBusName = `${spec.id}.0`;
    else {
      const n = state.anonBuses.get(dtype.childBusType) ?? 0;
      childBusName = `${dtype.childBusType}.${n}`;
    }
  }
  const buildCtx: DeviceBuildContext = {
    machine, cl, spec, values, bool, disabledFeatures: disabled, packed: bool('packed', false), opts, pci: isPci, childBusName,
    blockUsers: state.blockUsers, fileLocks: state.fileLocks, qomPath: machine.nextPeripheralPath(spec.id), net: machine.net,
    warn: (m: string) => warnings.push(`${spec.loc}: warning: ${m}`),
  };
  const ctxOf = () => buildCtx;
  const device = dtype.create(buildCtx);
  const addChildBus = (): void => {
    if (dtype.childBusType === undefined || childBusName === undefined) return;
    if (spec.id === undefined) state.anonBuses.set(dtype.childBusType, (state.anonBuses.get(dtype.childBusType) ?? 0) + 1);
    state.buses.push({ type: dtype.childBusType, name: childBusName, device });
  };

  const qom = new QomObject(type, DEVICE_PROPS);
  if (isPci) {
    const bus = values.get('bus');
    if (bus !== undefined && bus !== 'pci.0') throw new CmdlineError(`Bus '${String(bus)}' not found`);
    if (values.get('disable-legacy') === true && bool('disable-modern', false)) {
      throw new CmdlineError('device cannot work as neither modern nor legacy mode is enabled\nSet either disable-modern or disable-legacy to off');
    }
    let devfn: number | undefined;
    if (values.has('addr')) {
      try {
        devfn = parsePciAddr(values.get('addr') as string | number);
      } catch {
        throw new CmdlineError(`Property '${type}.addr' doesn't take value '${String(values.get('addr'))}'`);
      }
    }
    const dl = values.get('disable-legacy');
    const pciOpts: VirtioPciOptions = {
      name: type,
      // virtio_pci_force_virtio_1 (after the check above): modern only, whatever was asked.
      disableLegacy: dtype.forceVirtio1 ? true : variant === 'non-transitional' ? true : variant === 'transitional' ? false : dl === undefined || dl === 'auto' ? 'auto' : (dl as boolean),
      disableModern: dtype.forceVirtio1 ? false : variant ? false : bool('disable-modern', false),
      pagePerVq: bool('page-per-vq', false),
      ioeventfd: bool('ioeventfd', true),
      onWarning: (m) => warnings.push(`${spec.loc}: warning: ${m}`),
      ...(values.has('vectors') ? { vectors: values.get('vectors') as number } : {}),
      // QEMU's `class` property of virtio-blk-pci (0 keeps the type's own class); a type that
      // derives its class itself (virtio-serial-pci) says so in `pciOptions`, which wins.
      ...(values.get('class') ? { classId: values.get('class') as number } : {}),
      ...dtype.pciOptions?.(values, device),
      ...(opts.tracer ? { tracer: opts.tracer } : {}),
    };
    const proxy = createVirtioPci(device, pciOpts);
    if (bool('multifunction', false)) proxy.config[0x0e] = proxy.config[0x0e]! | 0x80;
    const backend = qom.addChild('virtio-backend', new QomObject(dtype.deviceType, DEVICE_PROPS));
    dtype.qom?.(device, { backend, proxy: qom }, ctxOf());
    const pc = machine as PcMachine;
    const at = pc.addPciFunction(proxy, { ...(devfn !== undefined ? { devfn } : {}), typeName: type, ...(spec.id !== undefined ? { id: spec.id } : {}), qom });
    // virtio-serial-pci names the device's child bus after its own id (QEMU's `bus_name`).
    machine.virtioDevices.push({ path: backend.path, device, busName: dtype.childBusType !== undefined && spec.id !== undefined ? `${spec.id}.0` : '' });
    addChildBus();
    return { spec, device, path: qom.path, pci: { proxy, addr: pc.addressOf(proxy) ?? String(at) } };
  }
  const microvm = machine as MicrovmMachine;
  let index: number | undefined;
  const bus = values.get('bus');
  if (bus !== undefined) {
    const m = /^virtio-mmio-bus\.(\d+)$/.exec(String(bus));
    if (!m || Number(m[1]) >= microvm.transportCount) throw new CmdlineError(`Bus '${String(bus)}' not found`);
    index = Number(m[1]);
  }
  dtype.qom?.(device, { backend: qom, proxy: undefined }, ctxOf());
  const slot = microvm.addDevice(device, { ...(index !== undefined ? { index } : {}), ...(spec.id !== undefined ? { id: spec.id } : {}), qom, typeName: type });
  machine.virtioDevices.push({ path: qom.path, device, busName: '' });
  addChildBus();
  return { spec, device, path: qom.path, mmio: { index: slot.index, base: slot.base, gsi: slot.gsi, transport: slot.transport } };
}
