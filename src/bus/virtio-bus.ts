import type { QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import type { Apply, VMStateDescription } from '../migration/vmstate.js';

/**
 * The contract between a virtio device and the transport it sits on (QEMU's VirtioBusClass).
 * The device never knows whether it is behind virtio-mmio or virtio-pci: it raises interrupts,
 * asks for the transport's extra features, and lets the transport add its own state to a
 * migration stream, all through this interface.
 */
export interface VirtioBus {
  /** A short name for traces, e.g. `virtio-mmio@0xfeb00000`. */
  readonly name: string;

  /**
   * Deliver an interrupt (QEMU's `k->notify`). `vector` is an MSI-X vector, or
   * VIRTIO_NO_VECTOR to mean "re-evaluate the interrupt line from the ISR".
   */
  notify(vector: number): void;

  /** Transports whose legacy layout alignment the driver chooses (virtio-mmio v1). */
  readonly hasVariableVringAlignment: boolean;

  /** Features the transport adds before the device sees them (QEMU's `pre_plugged`). */
  prePlugged?(hostFeatures: bigint): bigint;

  // Migration hooks, in the order `virtio_save` calls them (spec/qemu-virtio-migration.md §1.3).
  saveConfig?(f: QEMUFileWriter): void;
  /** Parse the transport's config part. Must not change state: return a function that applies it. */
  loadConfig?(f: QEMUFileReader): Apply;
  saveQueue?(n: number, f: QEMUFileWriter): void;
  loadQueue?(n: number, f: QEMUFileReader): Apply;
  /** Whether the transport writes `virtio/extra_state` (QEMU's `has_extra_state`). */
  hasExtraState?(): boolean;
  /**
   * The transport's extra state record (`virtio_pci`, `virtio_mmio`), saved and loaded inside
   * the `virtio/extra_state` subsection. Its `load` parses only; the returned functions apply.
   */
  extraState?(): VMStateDescription;
}
