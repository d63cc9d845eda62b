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
}
