/**
 * QEMU's vmstate descriptions, reduced to what a migration stream needs: a named, versioned
 * record whose fields a function writes and parses, followed by optional subsections
 * (`migration/vmstate.c`, spec/qemu-virtio-migration.md §2).
 *
 * Loading never changes live state. A description's `load` parses into locals or a staging
 * object and returns a function that applies what it parsed; `vmstateLoad` returns one function
 * applying the record, its subsections and its post-load step in QEMU's order. A caller applies
 * only when its whole section parsed, which is what makes a load atomic.
 *
 * Subsections are read as QEMU 7.2 reads them, with the 2014 proposal's bugs left out: a loop
 * that peeks at the 0x05 marker, stops (leaving the bytes) when the name is shorter than or does
 * not start with the parent's name, refuses a name the parent does not have, and compares the
 * version after keeping only its low 8 bits. Each pass consumes at least the 6-byte header, and
 * nesting follows the descriptions, not the stream, so no input can loop or recurse unboundedly.
 */
import { latin1, type QEMUFileReader, type QEMUFileWriter } from './qemu-file.js';

/** QEMU_VM_SUBSECTION: the marker byte before a subsection header. */
export const QEMU_VM_SUBSECTION = 0x05;

/** Applies what a load parsed. */
export type Apply = () => void;

/** One field of the JSON description QEMU appends to a stream (`vmstate_save_state` with a vmdesc). */
export interface VmdescField {
  name: string;
  array_len?: number;
  index?: number;
  type: string;
  struct?: VmdescStruct;
  /**
   * Records a field's own writer described inline, inside the field object (QEMU's `tmp`,
   * `qtailq` and `gtree` infos call `vmstate_save_state` with the field's JSON writer, so their
   * `vmsd_name`/`version`/`fields` members follow `type`, repeated once per element).
   */
  inline?: VmdescStruct[];
  size: number;
}

/** A described record: a device's top level, a nested struct or a subsection. */
export interface VmdescStruct {
  vmsd_name: string;
  version: number;
  fields: VmdescField[];
  subsections?: VmdescStruct[];
}

/**
 * Records the fields a `save` writes, with the bytes each took, for the JSON description. Save
 * functions that have no description to give may ignore it.
 */
export class FieldRecorder {
  readonly fields: VmdescField[] = [];
  /** Subsections written after the fields, as `vmstateSaveSubsections` describes them. */
  readonly subsections: VmdescStruct[] = [];
  constructor(private readonly f: QEMUFileWriter) {}

  /** Write one field through `write` and record its name, type and size. */
  field(name: string, type: string, write: () => void, extra?: Partial<VmdescField>): void {
    const at = this.f.offset;
    write();
    this.fields.push({ name, ...extra, type, size: this.f.offset - at });
  }

  /**
   * A compressible array of `n` elements: each written by `writeOne(i)`. QEMU describes only the
   * first element, with `array_len` and that element's size (`vmsd_desc_field_start`).
   */
  array(name: string, type: string, n: number, writeOne: (i: number) => void): void {
    let first = 0;
    for (let i = 0; i < n; i++) {
      const at = this.f.offset;
      writeOne(i);
      if (i === 0) first = this.f.offset - at;
    }
    if (n > 0) this.fields.push({ name, array_len: n, type, size: first });
  }

  /**
   * A nested record (VMS_STRUCT): `write` writes its fields (and subsections) to the recorder it
   * is given; the field's size covers all of it.
   */
  struct(name: string, vmsdName: string, version: number, write: (rec: FieldRecorder) => void): void {
    const at = this.f.offset;
    const inner = new FieldRecorder(this.f);
    write(inner);
    const desc: VmdescStruct = { vmsd_name: vmsdName, version, fields: inner.fields };
    if (inner.subsections.length > 0) desc.subsections = inner.subsections;
    this.fields.push({ name, type: 'struct', struct: desc, size: this.f.offset - at });
  }

  /** Write `vmsd`'s needed subsections and describe them (after the fields). */
  saveSubsections(vmsd: VMStateDescription): void {
    const desc: VmdescStruct = { vmsd_name: vmsd.name, version: vmsd.versionId, fields: [] };
    vmstateSaveSubsections(this.f, vmsd, desc);
    if (desc.subsections) this.subsections.push(...desc.subsections);
  }
}

export interface VMStateDescription {
  readonly name: string;
  readonly versionId: number;
  readonly minimumVersionId: number;
  /** A subsection is written only when this holds; absent means always (QEMU's `needed`). */
  needed?(): boolean;
  /** Write the fields; report them to `rec` when one is given. */
  save?(f: QEMUFileWriter, rec?: FieldRecorder): void;
  /**
   * Parse the fields a source of version `versionId` wrote. Throws `MigrationError` on bad input;
   * changes nothing live. Returns the function that applies what was parsed (or nothing, when it
   * filled a staging object the caller applies).
   */
  load?(f: QEMUFileReader, versionId: number): Apply | void;
  /** Checks and derived state once fields and subsections are in (QEMU's `post_load`). */
  postLoad?(f: QEMUFileReader, versionId: number): Apply | void;
  readonly subsections?: readonly VMStateDescription[];
}

/** Write a record's fields, then its subsections (`vmstate_save_state`). */
export function vmstateSave(f: QEMUFileWriter, vmsd: VMStateDescription, desc?: VmdescStruct): void {
  const rec = desc ? new FieldRecorder(f) : undefined;
  vmsd.save?.(f, rec);
  if (desc && rec) desc.fields.push(...rec.fields);
  vmstateSaveSubsections(f, vmsd, desc);
}

/** Write the subsections whose `needed` holds, in declared order (`vmstate_subsection_save`). */
export function vmstateSaveSubsections(f: QEMUFileWriter, vmsd: VMStateDescription, desc?: VmdescStruct): void {
  for (const sub of vmsd.subsections ?? []) {
    if (sub.needed && !sub.needed()) continue;
    f.putByte(QEMU_VM_SUBSECTION);
    f.putName(sub.name);
    f.putBe32(sub.versionId);
    let subDesc: VmdescStruct | undefined;
    if (desc) {
      subDesc = { vmsd_name: sub.name, version: sub.versionId, fields: [] };
      (desc.subsections ??= []).push(subDesc);
    }
    vmstateSave(f, sub, subDesc);
  }
}

/** QEMU's version checks of `vmstate_load_state`, with its messages. */
export function checkVersion(f: QEMUFileReader, vmsd: Pick<VMStateDescription, 'name' | 'versionId' | 'minimumVersionId'>, versionId: number, at = f.offset): void {
  if (versionId > vmsd.versionId) {
    throw f.error(vmsd.name, `${vmsd.name}: incoming version_id ${versionId} is too new for local version_id ${vmsd.versionId}`, at);
  }
  if (versionId < vmsd.minimumVersionId) {
    throw f.error(vmsd.name, `${vmsd.name}: incoming version_id ${versionId} is too old for local minimum version_id ${vmsd.minimumVersionId}`, at);
  }
}

/**
 * Parse a record written at `versionId`: version checks, fields, subsections, post-load. Returns
 * the function that applies all of it, in QEMU's order (fields, subsections, post-load).
 */
export function vmstateLoad(f: QEMUFileReader, vmsd: VMStateDescription, versionId: number, versionAt = f.offset): Apply {
  checkVersion(f, vmsd, versionId, versionAt);
  const applies: Apply[] = [];
  const a = vmsd.load?.(f, versionId);
  if (a) applies.push(a);
  applies.push(vmstateLoadSubsections(f, vmsd));
  const p = vmsd.postLoad?.(f, versionId);
  if (p) applies.push(p);
  return () => {
    for (const fn of applies) fn();
  };
}

/**
 * Parse the subsections that follow a record's fields (`vmstate_subsection_load`). Stops without
 * consuming anything at a byte that is not 0x05, at a name too short to belong to `vmsd`, or at
 * one that does not start with its name: those bytes belong to an enclosing record. A name that
 * does start with it but is not one of its subsections is an error, as in QEMU (-ENOENT).
 */
export function vmstateLoadSubsections(f: QEMUFileReader, vmsd: VMStateDescription): Apply {
  const applies: Apply[] = [];
  const parent = vmsd.name;
  while (f.peekByte(0) === QEMU_VM_SUBSECTION) {
    const len = f.peekByte(1);
    if (len < parent.length + 1) break;
    const raw = f.peekBytes(2, len);
    if (raw.length < len) break;
    const name = latin1(raw);
    if (!name.startsWith(parent)) break;
    const at = f.offset;
    const sub = vmsd.subsections?.find((s) => s.name === name);
    if (!sub) {
      throw f.error(`${parent} subsection`, `VM subsection '${printable(name)}' in '${parent}' does not exist`, at);
    }
    f.skip(2 + len, `${name} header`);
    const versionAt = f.offset;
    // QEMU keeps the version in a uint8_t: only the low 8 bits take part in the checks.
    const version = f.getBe32(`${name} version_id`) & 0xff;
    applies.push(vmstateLoad(f, sub, version, versionAt));
  }
  return () => {
    for (const fn of applies) fn();
  };
}

/** A name from a stream, safe to put in a message (control bytes escaped). */
export function printable(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
