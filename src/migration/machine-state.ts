/**
 * The contract between a machine and the savevm stream (QEMU's `SaveStateEntry` list and RAM
 * blocks): what a machine hands the stream writer, and what the reader needs from it. Machines
 * (`pc`, `microvm`, or an embedder's own) implement `MigratableMachine`; `savevm.ts` writes and
 * reads whole streams over it.
 */
import type { GuestMemory } from '../memory/guest-memory.js';
import type { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import type { Apply, FieldRecorder } from './vmstate.js';

/** A QEMU RAMBlock: a named, contiguous piece of guest memory with its own offsets. */
export interface RamBlock {
  /** QEMU's block id: `pc.ram`, `microvm.ram`, `pc.bios`, `pc.rom`. */
  readonly idstr: string;
  /**
   * The block's bytes. The machine's RAM regions are views into the same buffers, which is how a
   * guest address is turned into a block offset.
   */
  readonly bytes: Uint8Array;
}

/** What a section's parser may ask of the load in progress. */
export interface LoadContext {
  /**
   * Guest RAM as it will read once the stream is applied: the stream's pages where it carried
   * them, the live bytes elsewhere. `undefined` outside RAM. Never changes anything.
   */
  peekRam(gpa: number, len: number): Uint8Array | undefined;
}

/** One device's section (a FULL section in the stream). */
export interface DeviceSection {
  /** `<dev path>/<vmsd name>`, e.g. `0000:00:03.0/virtio-rng`. */
  readonly idstr: string;
  readonly instanceId: number;
  /** The vmsd name (the JSON description's `vmsd_name`). */
  readonly vmsdName: string;
  readonly versionId: number;
  readonly minimumVersionId: number;
  /** A stream loaded into this machine must carry this section (else the load fails). */
  readonly required: boolean;
  /**
   * Called before anything of the stream is written, guest RAM included: finish what can be
   * finished (QEMU drains block I/O when the VM stops for a migration). Optional.
   */
  preSave?(): void;
  /**
   * Wait (at most `timeoutMs`) for the device's backend work to settle, as QEMU drains block I/O
   * when the VM stops for a migration; resolves true when nothing is left running. Optional.
   */
  drain?(timeoutMs: number): Promise<boolean>;
  /** Write the section body (what follows the header). */
  save(f: QEMUFileWriter, rec?: FieldRecorder): void;
  /**
   * Parse a body written at `versionId` (already checked against the version range). Throws a
   * `MigrationError` naming offset and field on bad input; changes nothing until the returned
   * function runs.
   */
  load(f: QEMUFileReader, versionId: number, ctx: LoadContext): Apply;
}

/** A machine whose state can be written to, and read from, a QEMU savevm stream. */
export interface MigratableMachine {
  /** QEMU's machine type as the configuration section carries it (`pc-i440fx-7.2`, `microvm`). */
  readonly machineType: string;
  /** Guest memory, for translating guest addresses into block offsets. */
  readonly memory: GuestMemory;
  /** RAM blocks in the order they are listed in the stream. */
  ramBlocks(): readonly RamBlock[];
  /** Device sections in the order they are written. */
  deviceSections(): readonly DeviceSection[];
}
