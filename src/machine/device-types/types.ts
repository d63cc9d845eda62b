/**
 * What a virtio device type gives the machine builder (`qemu-machine.ts`): its QEMU type names,
 * its own properties with their kinds and defaults, and how to build the device from a parsed
 * `-device` (with the machine and the rest of the command line at hand, for `drive=` or
 * `chardev=` lookups). One file per type in this folder, listed in `index.ts`.
 *
 * No Node imports: part of the browser bundle.
 */
import type { Tracer } from '../../trace/trace.js';
import type { VirtIODevice } from '../../virtio/device.js';
import type { DeviceSpec, PropValue, QemuCommandLine } from '../cmdline.js';
import type { ReferenceMachine } from '../machine.js';
import type { EntropySource } from '../../devices/rng.js';
import type { BlockBackend } from '../../devices/blk/backend.js';
import type { CharBackend } from '../../devices/console/chardev.js';
import type { QomObject } from '../qom.js';
import type { NetBackend } from '../../devices/net/net-client.js';
import type { NetStack } from '../net-stack.js';

/**
 * Property types as QEMU's qdev properties parse them: `u16`/`u32`/`u64`/`i32` integers, `size32`
 * (a size with an optional suffix, at most 2^32-1), `blocksize` (a size that is a power of two in
 * 512..2 MiB), `bool`, `onoffauto`, `str`, and a PCI `addr`.
 */
export type PropKind = 'bool' | 'u16' | 'u32' | 'u64' | 'i32' | 'size32' | 'blocksize' | 'onoffauto' | 'str' | 'addr';

/** Options of the whole build, for device types that need a host resource. */
export interface BuildOptions {
  /** The -bios image, loaded by the caller. */
  bios?: Uint8Array;
  /** Entropy for virtio-rng devices (default: the platform's crypto generator). */
  entropy?: EntropySource;
  tracer?: Tracer;
  /**
   * The files `-drive file=` and `-blockdev driver=file` name, opened by the caller (virtio-ts-qemu
   * opens them with Node; a browser embedder passes its own backends), by file name. A file not
   * here cannot be opened ("Could not open ...").
   */
  blockFiles?: ReadonlyMap<string, BlockBackend>;
  /**
   * Backends of the `-chardev`s devices use, by id (virtio-ts-qemu opens them; an embedder or a
   * test passes its own). A `null` chardev needs none; any other one missing here is an error.
   */
  chardevs?: ReadonlyMap<string, CharBackend>;
  /**
   * Backends of the `-netdev`s that need the host (socket, dgram, stream), by id; virtio-ts-qemu
   * opens them. `hubport`s are built by the machine itself.
   */
  netdevs?: ReadonlyMap<string, NetBackend>;
}

export interface DeviceBuildContext {
  machine: ReferenceMachine;
  cl: QemuCommandLine;
  spec: DeviceSpec;
  /** Property values after `-global`s and the `-device` itself, parsed to their kinds. */
  values: ReadonlyMap<string, PropValue>;
  /** A boolean property, or its default. */
  bool(name: string, dflt: boolean): boolean;
  /** Common feature bits withdrawn by `event_idx=off`, `indirect_desc=off`, ... */
  disabledFeatures: bigint;
  /** `packed=on`: the device offers packed virtqueues. */
  packed: boolean;
  opts: BuildOptions;
  /** Add a warning QEMU would print (located by the caller). */
  warn(message: string): void;
  /** Whether the device goes on PCI (else on a virtio-mmio transport). */
  pci: boolean;
  /** Drives and block nodes already taken by a device of this machine (name → its QOM path). */
  blockUsers: Map<string, string>;
  /** Image files in use by devices, with each device's claim (QEMU's file locking between users). */
  fileLocks: Map<string, { write: boolean; shareWrite: boolean }[]>;
  /** The QOM path the device will get (`/machine/peripheral/ID` or `.../peripheral-anon/device[N]`). */
  qomPath: string;
  /** Name of the bus the device will provide, for types with `childBusType`. */
  childBusName: string | undefined;
  /** The machine's net clients (`-netdev`s, hubs, NICs), for `netdev=`. */
  net: NetStack;
}

export interface VirtioDeviceType {
  /** The QOM type of the device proper (`virtio-rng-device`), also its `-device` name on virtio-mmio. */
  readonly deviceType: string;
  /** The PCI type (`virtio-rng-pci`); its `-transitional`/`-non-transitional` variants exist unless `pciVariants` is false. */
  readonly pciType?: string;
  readonly pciVariants?: boolean;
  /** The device's own properties (beside the common virtio features and the transport's). */
  readonly props: Readonly<Record<string, PropKind>>;
  /** Properties accepted only at QEMU's default value. */
  readonly defaultOnly?: Readonly<Record<string, PropValue>>;
  /** Properties refused with a reason (host resources virtio-ts does not take, say). */
  readonly refused?: Readonly<Record<string, string>>;
  /** Build the device; throws `CmdlineError` with QEMU's wording on bad values. */
  create(ctx: DeviceBuildContext): VirtIODevice;
  /** Properties only the PCI form has (e.g. virtio-serial-pci's `class`). */
  readonly pciProps?: Readonly<Record<string, PropKind>>;
  /** PCI proxy settings the type derives from its properties (QEMU's `*_pci_realize`). */
  pciOptions?(values: ReadonlyMap<string, PropValue>, device: VirtIODevice): { vectors?: number; classId?: number };
  /** virtio-pci properties the PCI form lacks (QEMU declares `vectors` and `ioeventfd` per type). */
  readonly pciLacks?: readonly string[];
  /** QEMU's classes between the PCI type and `virtio-pci`, for `-global` (default `<pciType>-base`). */
  readonly pciParents?: readonly string[];
  /** QEMU's classes between the device type and `virtio-device`, for `-global`. */
  readonly deviceParents?: readonly string[];
  /**
   * QEMU's `virtio_pci_force_virtio_1`: the PCI form is modern only, whatever `disable-legacy`
   * and `disable-modern` say (once QEMU's "neither modern nor legacy" check has passed).
   */
  readonly forceVirtio1?: boolean;
  /**
   * Fill the QOM objects: `backend` is the device proper (the `virtio-backend` child of a PCI
   * proxy, or the `-device` itself on virtio-mmio), `proxy` the PCI function when there is one.
   */
  qom?(device: VirtIODevice, objs: { backend: QomObject; proxy: QomObject | undefined }, ctx: DeviceBuildContext): void;
  /** Type of the bus the device provides for child devices (virtio-serial's `virtio-serial-bus`). */
  readonly childBusType?: string;
}

/** A bus a device provides for other `-device`s (QEMU's child buses, e.g. `virtio-serial-bus`). */
export interface ChildBus {
  /** QOM type of the bus (`virtio-serial-bus`): what a child type asks for. */
  readonly type: string;
  /** `<id>.0` for a device with an id, else `<type>.N`. */
  readonly name: string;
  readonly device: VirtIODevice;
}

export interface BusChildBuildContext {
  machine: ReferenceMachine;
  cl: QemuCommandLine;
  spec: DeviceSpec;
  values: ReadonlyMap<string, PropValue>;
  bus: ChildBus;
  /** Every bus of the same type built so far (QEMU checks some things across them). */
  sameTypeBuses: readonly ChildBus[];
  /** The backend of chardev `id` for property `prop`, checked as QEMU's chardev property does. */
  chardev(prop: string, id: string): CharBackend;
}

/** A device that sits on a child bus, not on a transport (`virtconsole`, `virtserialport`). */
export interface BusChildType {
  readonly typeName: string;
  /** The bus type it plugs into. */
  readonly busType: string;
  readonly props: Readonly<Record<string, PropKind>>;
  /** Build and plug; throws `CmdlineError` with QEMU's wording. Returns an object for the build result. */
  create(ctx: BusChildBuildContext): unknown;
}
