/**
 * The savevm container: a whole machine's migration stream as QEMU 7.2 writes and reads it over
 * `exec:`/file migration (`migration/savevm.c`, spec/qemu-virtio-migration.md §5).
 *
 *   be32 "QEVM", be32 3
 *   0x07 configuration: be32 length, machine type
 *   START "ram" (block list) · PART "ram" (pages) · END "ram"
 *   FULL per device section, in the machine's order · FULL "globalstate"
 *   0x00 EOF · 0x06 be32 length, JSON description
 *
 * START and FULL sections carry a header (u8 type, be32 section id, u8 length + idstr, be32
 * instance, be32 version), PART and END only the type and id; each is followed by the footer
 * 0x7e + be32 section id.
 *
 * Three entry points: `saveVm` writes a machine; `loadVm` reads a stream into a machine,
 * atomically (everything is parsed and checked, RAM staged, before anything changes); and
 * `parseSavevm` walks any 7.2 stream without a machine, for inspection. Sections nobody here can
 * decode are stepped over with the stream's own JSON description.
 *
 * Every loop consumes stream bytes on each pass, so none outlives the stream; nothing is
 * allocated by a size read from the stream before it is checked against what remains.
 */
import type { DeviceSection, LoadContext, MigratableMachine, RamBlock } from './machine-state.js';
import { GLOBAL_STATE_IDSTR, GLOBAL_STATE_VERSION, loadGlobalState, saveGlobalState } from './global-state.js';
import { latin1, MigrationError, QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import {
  GpaToRamBlock, RAM_SECTION_IDSTR, RAM_SECTION_VERSION, RamPagePlan, ramSaveComplete, ramSavePages, ramSaveSetup,
  RamStaging, readRamChunk, TARGET_PAGE_BITS, TARGET_PAGE_SIZE,
  type DiscardedRamBlock, type RamReadState, type RamSink, type RamStagingOptions, type StreamRamBlock,
} from './ram.js';
import { formatVmdesc, parseVmdesc, findVmdesc, QEMU_VM_VMDESCRIPTION, skipDescribed, type Vmdesc, type VmdescDevice, type VmdescLocation } from './vmdesc.js';
import { FieldRecorder, printable, vmstateLoadSubsections, type Apply, type VMStateDescription } from './vmstate.js';

export const QEMU_VM_FILE_MAGIC = 0x5145564d;
export const QEMU_VM_FILE_VERSION_COMPAT = 0x00000002;
export const QEMU_VM_FILE_VERSION = 0x00000003;

export const QEMU_VM_EOF = 0x00;
export const QEMU_VM_SECTION_START = 0x01;
export const QEMU_VM_SECTION_PART = 0x02;
export const QEMU_VM_SECTION_END = 0x03;
export const QEMU_VM_SECTION_FULL = 0x04;
export const QEMU_VM_CONFIGURATION = 0x07;
export const QEMU_VM_COMMAND = 0x08;
export const QEMU_VM_SECTION_FOOTER = 0x7e;

export type SavevmSectionKind = 'start' | 'part' | 'end' | 'full';
const KIND: Record<number, SavevmSectionKind> = {
  [QEMU_VM_SECTION_START]: 'start',
  [QEMU_VM_SECTION_PART]: 'part',
  [QEMU_VM_SECTION_END]: 'end',
  [QEMU_VM_SECTION_FULL]: 'full',
};

// ---------------------------------------------------------------------------------------------
// Writing

export interface SaveVmOptions {
  /**
   * The run state `globalstate` carries (QEMU stores the state the source was in: `running` for a
   * live migration, `paused` after `stop`). Default `running`.
   */
  runState?: string;
  /** Append the JSON description (default true, as QEMU unless `suppress-vmdesc`). */
  vmdesc?: boolean;
}

function putSectionHeader(f: QEMUFileWriter, type: number, sectionId: number, idstr?: string, instanceId = 0, versionId = 0): void {
  f.putByte(type);
  f.putBe32(sectionId);
  if (type === QEMU_VM_SECTION_START || type === QEMU_VM_SECTION_FULL) {
    f.putName(idstr ?? '');
    f.putBe32(instanceId);
    f.putBe32(versionId);
  }
}

function putSectionFooter(f: QEMUFileWriter, sectionId: number): void {
  f.putByte(QEMU_VM_SECTION_FOOTER);
  f.putBe32(sectionId);
}

/** Write `machine` as a QEMU 7.2 migration stream. Returns a view of the written bytes. */
export function saveVm(machine: MigratableMachine, opts: SaveVmOptions = {}): Uint8Array {
  const blocks = machine.ramBlocks();
  const sections = machine.deviceSections();
  // Devices finish what they can before RAM is written, so their completions travel with it.
  for (const s of sections) s.preSave?.();
  // The pages dominate and their size is known once the zero pages are found: reserve it up
  // front (plus room for the sections: a virtio device writes ~50 KiB) so that the buffer is
  // not copied while it grows.
  const plan = new RamPagePlan(blocks);
  const f = new QEMUFileWriter(plan.chunkBytes + 4096 + 64 * 1024 * (sections.length + 1));

  // qemu_savevm_state_header
  f.putBe32(QEMU_VM_FILE_MAGIC);
  f.putBe32(QEMU_VM_FILE_VERSION);
  // vmstate_configuration: be32 len + name; no subsection applies on x86 (fixed page size, no
  // validated capability, no uuid check).
  f.putByte(QEMU_VM_CONFIGURATION);
  f.putBe32(machine.machineType.length);
  f.putBuffer(latin1Bytes(machine.machineType));

  // Section ids are the writer's own counters; a loader maps them per stream. Never 0: QEMU 7.2
  // finds the target of a PART/END by `load_section_id`, which is 0 in every handler not loaded
  // yet, so a PART with id 0 goes to the first such handler ("timer"), not to "ram" (measured:
  // "error while loading state section id 0(timer)").
  let nextId = 1;
  const ramId = nextId++;
  putSectionHeader(f, QEMU_VM_SECTION_START, ramId, RAM_SECTION_IDSTR, 0, RAM_SECTION_VERSION);
  ramSaveSetup(f, blocks);
  putSectionFooter(f, ramId);
  putSectionHeader(f, QEMU_VM_SECTION_PART, ramId);
  ramSavePages(f, blocks, plan);
  putSectionFooter(f, ramId);
  putSectionHeader(f, QEMU_VM_SECTION_END, ramId);
  ramSaveComplete(f);
  putSectionFooter(f, ramId);

  // qemu_savevm_state_complete_precopy_non_iterable
  const devices: VmdescDevice[] = [];
  const full = (idstr: string, instanceId: number, vmsdName: string, versionId: number, save: (rec: FieldRecorder) => void) => {
    const id = nextId++;
    putSectionHeader(f, QEMU_VM_SECTION_FULL, id, idstr, instanceId, versionId);
    const rec = new FieldRecorder(f);
    save(rec);
    putSectionFooter(f, id);
    const d: VmdescDevice = { name: idstr, instance_id: instanceId, vmsd_name: vmsdName, version: versionId, fields: rec.fields };
    if (rec.subsections.length > 0) d.subsections = rec.subsections;
    devices.push(d);
  };
  for (const s of sections) full(s.idstr, s.instanceId, s.vmsdName, s.versionId, (rec) => s.save(f, rec));
  const runState = opts.runState ?? 'running';
  full(GLOBAL_STATE_IDSTR, 0, GLOBAL_STATE_IDSTR, GLOBAL_STATE_VERSION, (rec) => saveGlobalState(f, runState, rec));
  f.putByte(QEMU_VM_EOF);

  if (opts.vmdesc ?? true) {
    const json = latin1Bytes(formatVmdesc({ page_size: TARGET_PAGE_SIZE, devices }));
    f.putByte(QEMU_VM_VMDESCRIPTION);
    f.putBe32(json.length);
    f.putBuffer(json);
  }
  return f.written();
}

function latin1Bytes(s: string): Uint8Array {
  const b = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) b[i] = s.charCodeAt(i) & 0xff;
  return b;
}

// ---------------------------------------------------------------------------------------------
// Reading: pieces shared by loadVm and parseSavevm

/** A section as found in a stream. */
export interface SavevmSection {
  /** The type byte: 1 START, 2 PART, 3 END, 4 FULL. */
  type: number;
  kind: SavevmSectionKind;
  sectionId: number;
  /** For PART and END, the idstr of the START with the same id. */
  idstr: string;
  instanceId: number;
  versionId: number;
  /** Offset of the type byte. */
  offset: number;
  /** Offset of the first body byte (after the header). */
  bodyOffset: number;
  bodyLength: number;
  /** Offset of the 0x7e footer. */
  footerOffset: number;
  /**
   * The section's JSON description entry: from `parseSavevm`, for every FULL section the stream
   * describes; from `loadVm`'s walk, for the sections it stepped over with it.
   */
  vmdesc?: VmdescDevice;
}

interface SectionHeader {
  type: number;
  sectionId: number;
  idstr: string;
  instanceId: number;
  versionId: number;
  offset: number;
  versionOffset: number;
  bodyOffset: number;
}

/** The configuration record's contents (`vmstate_configuration`). */
export interface SavevmConfiguration {
  machineType: string;
  offset: number;
  /** Capabilities the source validated (`configuration/capabilities`), if sent. */
  capabilities?: string[];
  /** `configuration/uuid`, if sent. */
  uuid?: Uint8Array;
}

/** Magic and version (`qemu_loadvm_state_header`, first half). */
function readFileHeader(f: QEMUFileReader): number {
  if (f.remaining < 4) throw f.error('magic', 'Not a migration stream');
  const magic = f.getBe32('magic');
  if (magic !== QEMU_VM_FILE_MAGIC) throw f.error('magic', 'Not a migration stream', 0);
  const at = f.offset;
  const version = f.getBe32('file version');
  if (version === QEMU_VM_FILE_VERSION_COMPAT) throw f.error('file version', "SaveVM v2 format is obsolete and don't work anymore", at);
  if (version !== QEMU_VM_FILE_VERSION) throw f.error('file version', 'Unsupported migration stream version', at);
  return version;
}

/** MigrationCapability names QEMU 7.2 knows (qapi/migration.json), for `configuration/capabilities`. */
const MIGRATION_CAPABILITIES = new Set([
  'xbzrle', 'rdma-pin-all', 'auto-converge', 'zero-blocks', 'compress', 'events', 'postcopy-ram', 'x-colo',
  'release-ram', 'block', 'return-path', 'pause-before-switchover', 'multifd', 'dirty-bitmaps', 'postcopy-blocktime',
  'late-block-activate', 'x-ignore-shared', 'validate-uuid', 'background-snapshot', 'zero-copy-send', 'postcopy-preempt',
]);

/** The configuration record (`vmstate_configuration` with its three subsections). */
function readConfiguration(f: QEMUFileReader): SavevmConfiguration {
  const offset = f.offset;
  if (f.peekByte(0) !== QEMU_VM_CONFIGURATION) throw f.error('configuration', 'Configuration section missing');
  f.skip(1, 'configuration');
  const len = f.getBe32('configuration len');
  if (len > f.remaining) throw f.error('configuration name', `machine type length ${len} is beyond the end of the stream`);
  const machineType = latin1(f.getView(len, 'configuration name'));
  const conf: SavevmConfiguration = { machineType, offset };

  const pageBits: VMStateDescription = {
    name: 'configuration/target-page-bits', versionId: 1, minimumVersionId: 1,
    load(r) {
      const at = r.offset;
      const bits = r.getBe32('target_page_bits');
      if (bits !== TARGET_PAGE_BITS) throw r.error('target_page_bits', `Received TARGET_PAGE_BITS is ${bits} but local is ${TARGET_PAGE_BITS}`, at);
    },
  };
  const capabilities: VMStateDescription = {
    name: 'configuration/capabilities', versionId: 1, minimumVersionId: 1,
    load(r) {
      const at = r.offset;
      const n = r.getBe32('caps_count');
      // Each entry takes at least its length byte.
      if (n > r.remaining) throw r.error('caps_count', `${n} capabilities cannot fit in the ${r.remaining} bytes left`, at);
      const caps: string[] = [];
      for (let i = 0; i < n; i++) {
        const cAt = r.offset;
        const c = r.getName('capability');
        if (!MIGRATION_CAPABILITIES.has(c)) throw r.error('capability', `Received unknown capability ${printable(c)}`, cAt);
        caps.push(c);
      }
      // configuration_validate_capabilities: only x-ignore-shared is compared, and it is off here
      // (with it on, the block list would also carry guest addresses).
      if (caps.includes('x-ignore-shared')) throw r.error('capabilities', 'Capability x-ignore-shared is off, but received capability is on', at);
      conf.capabilities = caps;
    },
  };
  const uuid: VMStateDescription = {
    name: 'configuration/uuid', versionId: 1, minimumVersionId: 1,
    load(r) {
      conf.uuid = r.getBuffer(16, 'uuid');
    },
  };
  vmstateLoadSubsections(f, { name: 'configuration', versionId: 1, minimumVersionId: 0, subsections: [pageBits, capabilities, uuid] });
  return conf;
}

/** A START or FULL header after its type byte. */
function readStartFull(f: QEMUFileReader, type: number, offset: number): SectionHeader {
  const sectionId = f.getBe32('section id');
  const idstr = f.getName(`section ${sectionId} idstr`);
  const instanceId = f.getBe32(`${printable(idstr)} instance_id`);
  const versionOffset = f.offset;
  const versionId = f.getBe32(`${printable(idstr)} version_id`);
  return { type, sectionId, idstr, instanceId, versionId, offset, versionOffset, bodyOffset: f.offset };
}

/** `check_section_footer`. */
function readFooter(f: QEMUFileReader, idstr: string, sectionId: number): void {
  const at = f.offset;
  const mark = f.peekByte(0);
  if (mark !== QEMU_VM_SECTION_FOOTER) throw f.error(`${printable(idstr)} footer`, `Missing section footer for ${printable(idstr)}`, at);
  f.skip(1, `${printable(idstr)} footer`);
  const id = f.getBe32(`${printable(idstr)} footer section id`);
  if (id !== sectionId) {
    throw f.error(`${printable(idstr)} footer`, `Mismatched section id in footer for ${printable(idstr)} - read 0x${id.toString(16)} expected 0x${sectionId.toString(16)}`, at);
  }
}

/** The stream's JSON description, looked up by (idstr, instance) in stream order. */
class DescriptionIndex {
  private readonly byKey = new Map<string, VmdescDevice[]>();
  private readonly used = new Map<string, number>();

  constructor(readonly vmdesc: Vmdesc) {
    for (const d of vmdesc.devices) {
      const k = `${d.name}\u0000${d.instance_id}`;
      const list = this.byKey.get(k);
      if (list) list.push(d);
      else this.byKey.set(k, [d]);
    }
  }

  /** The next description of (idstr, instance): a section written twice is described twice. */
  next(idstr: string, instanceId: number): VmdescDevice | undefined {
    const k = `${idstr}\u0000${instanceId}`;
    const list = this.byKey.get(k);
    if (!list) return undefined;
    const n = this.used.get(k) ?? 0;
    this.used.set(k, n + 1);
    return list[Math.min(n, list.length - 1)];
  }
}

interface FoundDescription {
  location: VmdescLocation;
  text: string;
  index?: DescriptionIndex;
  /** Why it cannot be used, when it does not parse. */
  problem?: string;
}

/** Find the trailing description (and parse it; a broken one is reported, not thrown). */
function findDescription(bytes: Uint8Array, notBefore: number): FoundDescription | undefined {
  const location = findVmdesc(bytes, notBefore);
  if (!location) return undefined;
  const text = latin1(bytes.subarray(location.jsonOffset));
  try {
    return { location, text, index: new DescriptionIndex(parseVmdesc(text, location.jsonOffset)) };
  } catch (e) {
    if (e instanceof MigrationError) return { location, text, problem: e.message };
    throw e;
  }
}

/** Step over a section we cannot decode, using the description, or fail saying why it cannot. */
function skipUnknown(f: QEMUFileReader, h: SectionHeader, desc: FoundDescription | undefined): VmdescDevice {
  const name = printable(h.idstr);
  const unknown = `Unknown savevm section or instance '${name}' ${h.instanceId}. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices`;
  if (!desc) throw f.error(`${name} section`, `${unknown}; the stream has no JSON description to step over it with`, h.offset);
  if (!desc.index) throw f.error(`${name} section`, `${unknown}; the stream's JSON description is unusable (${desc.problem ?? 'unknown problem'})`, h.offset);
  const d = desc.index.next(h.idstr, h.instanceId);
  if (!d) throw f.error(`${name} section`, `${unknown}; the JSON description does not describe it`, h.offset);
  skipDescribed(f, d);
  return d;
}

/** What follows QEMU_VM_EOF (`qemu_loadvm_state`'s vmdesc read): only warnings, as in QEMU. */
function checkTrailer(bytes: Uint8Array, eofEnd: number, desc: FoundDescription | undefined, warnings: string[]): void {
  if (eofEnd >= bytes.length) {
    warnings.push('the stream has no JSON description after QEMU_VM_EOF (QEMU: "Expected vmdescription section, but got 0")');
    return;
  }
  const type = bytes[eofEnd]!;
  if (type !== QEMU_VM_VMDESCRIPTION) {
    warnings.push(`Expected vmdescription section, but got ${type} (offset ${eofEnd})`);
    return;
  }
  if (!desc || desc.location.offset !== eofEnd) {
    warnings.push(`the JSON description at offset ${eofEnd} does not run exactly to the end of the stream (${bytes.length - eofEnd} bytes follow QEMU_VM_EOF)`);
  } else if (desc.problem) {
    warnings.push(desc.problem);
  }
}

function sectionRecord(h: SectionHeader, idstr: string, footerOffset: number, vmdesc?: VmdescDevice): SavevmSection {
  const s: SavevmSection = {
    type: h.type, kind: KIND[h.type]!, sectionId: h.sectionId, idstr, instanceId: h.instanceId, versionId: h.versionId,
    offset: h.offset, bodyOffset: h.bodyOffset, bodyLength: footerOffset - h.bodyOffset, footerOffset,
  };
  if (vmdesc) s.vmdesc = vmdesc;
  return s;
}

/**
 * Walk the sections up to QEMU_VM_EOF. `body` reads (or steps over) one START/FULL/PART/END
 * body and returns the description it used, if any; the walk checks footers and section ids.
 * Returns the offset just after the EOF byte.
 */
function walkSections(
  f: QEMUFileReader,
  sections: SavevmSection[],
  body: (h: SectionHeader, idstr: string) => VmdescDevice | void,
): number {
  // Section ids of START sections (iterables), for PART and END; and of FULL ones, to tell a
  // misdirected PART from an unknown id.
  const iterables = new Map<number, string>();
  const others = new Map<number, string>();
  for (;;) {
    const offset = f.offset;
    if (f.remaining === 0) throw f.error('section type', 'stream ends before QEMU_VM_EOF');
    const type = f.getByte('section type');
    switch (type) {
      case QEMU_VM_EOF:
        return f.offset;
      case QEMU_VM_SECTION_START:
      case QEMU_VM_SECTION_FULL: {
        const h = readStartFull(f, type, offset);
        (type === QEMU_VM_SECTION_START ? iterables : others).set(h.sectionId, h.idstr);
        const used = body(h, h.idstr);
        const footerOffset = f.offset;
        readFooter(f, h.idstr, h.sectionId);
        sections.push(sectionRecord(h, h.idstr, footerOffset, used ?? undefined));
        break;
      }
      case QEMU_VM_SECTION_PART:
      case QEMU_VM_SECTION_END: {
        const sectionId = f.getBe32('section id');
        const idstr = iterables.get(sectionId);
        if (idstr === undefined) {
          const full = others.get(sectionId);
          if (full !== undefined) throw f.error('section id', `section ${sectionId} ('${printable(full)}') is not an iterable section and takes no PART or END`, offset);
          throw f.error('section id', `Unknown savevm section ${sectionId}`, offset);
        }
        const h: SectionHeader = { type, sectionId, idstr, instanceId: 0, versionId: 0, offset, versionOffset: offset, bodyOffset: f.offset };
        body(h, idstr);
        const footerOffset = f.offset;
        readFooter(f, idstr, sectionId);
        sections.push(sectionRecord(h, idstr, footerOffset));
        break;
      }
      case QEMU_VM_COMMAND:
        throw f.error('section type', 'savevm commands (QEMU_VM_COMMAND, 0x08) are not supported: they come only with a return path, postcopy or COLO', offset);
      default:
        throw f.error('section type', `Unknown savevm section type ${type}`, offset);
    }
  }
}

/** QEMU's section-level version check, then vmstate's lower bound. */
function checkSectionVersion(f: QEMUFileReader, h: SectionHeader, versionId: number, minimumVersionId: number): void {
  const name = printable(h.idstr);
  if (h.versionId > versionId) throw f.error(`${name} version_id`, `savevm: unsupported version ${h.versionId} for '${name}' v${versionId}`, h.versionOffset);
  if (h.versionId < minimumVersionId) {
    throw f.error(`${name} version_id`, `${name}: incoming version_id ${h.versionId} is too old for local minimum version_id ${minimumVersionId}`, h.versionOffset);
  }
}

/** Turn anything that is not a MigrationError into one, so that no other exception escapes a load. */
function guard<T>(f: QEMUFileReader, run: () => T): T {
  try {
    return run();
  } catch (e) {
    if (e instanceof MigrationError) throw e;
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw new MigrationError(f.offset, 'internal', `unexpected failure while reading the stream: ${msg}`);
  }
}

// ---------------------------------------------------------------------------------------------
// loadVm

export interface LoadVmOptions extends RamStagingOptions {}

export interface LoadVmResult {
  /** Things skipped or tolerated: RAM blocks discarded, sections stepped over, trailer oddities. */
  warnings: string[];
  /** The run state `globalstate` carried, when the stream has one. */
  runState?: string;
  /** The machine type the stream was written for. */
  machineType: string;
  /** idstrs of the machine's sections the stream loaded, in stream order. */
  loaded: string[];
  /** idstrs of sections stepped over with the JSON description. */
  skipped: string[];
  /** RAM blocks of the stream the machine does not have. */
  discardedRamBlocks: DiscardedRamBlock[];
  /** RAM pages applied (a page sent twice counts twice). */
  ramPages: number;
}

/**
 * Load a QEMU 7.2 stream into `machine`. Atomic: the whole stream is parsed and checked first,
 * RAM pages staged and device state parsed into apply functions; only when all of it is valid
 * is RAM written and are the devices' applies run, in stream order. On any problem it throws a
 * `MigrationError` naming the byte offset and the field (QEMU's wording where QEMU has one) and
 * the machine is exactly as it was.
 */
export function loadVm(machine: MigratableMachine, bytes: Uint8Array, opts: LoadVmOptions = {}): LoadVmResult {
  const f = new QEMUFileReader(bytes);
  const plan = guard(f, () => planLoad(machine, bytes, f, opts));
  try {
    plan.staging.apply();
    for (const a of plan.applies) a();
  } catch (e) {
    // Applies run on checked state and are not expected to throw; if one does, it is a bug in
    // a device model, and the machine may be partly loaded: say so rather than hide it.
    const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    throw new MigrationError(bytes.length, 'apply', `applying a checked stream failed, the machine may be partly loaded: ${msg}`);
  }
  return plan.result;
}

interface LoadPlan {
  staging: RamStaging;
  applies: Apply[];
  result: LoadVmResult;
}

function planLoad(machine: MigratableMachine, bytes: Uint8Array, f: QEMUFileReader, opts: LoadVmOptions): LoadPlan {
  readFileHeader(f);
  const conf = readConfiguration(f);
  // configuration_post_load: a prefix compare over the received length, as QEMU's strncmp.
  const local = machine.machineType;
  if (local.substring(0, conf.machineType.length) !== conf.machineType) {
    throw f.error('configuration name', `Machine type received is '${printable(conf.machineType)}' and local is '${printable(local)}'`, conf.offset + 5);
  }
  const warnings: string[] = [];
  if (conf.uuid) warnings.push('the stream carries a VM UUID (configuration/uuid); this machine has none set, so it is not checked');
  const desc = findDescription(bytes, f.offset);

  const blocks: readonly RamBlock[] = machine.ramBlocks();
  const staging = new RamStaging(blocks, bytes, opts);
  const gpa = new GpaToRamBlock(machine.memory, blocks);
  const ctx: LoadContext = {
    peekRam(addr, len) {
      const t = gpa.translate(addr, len);
      return t ? staging.peek(t.index, t.offset, len) : undefined;
    },
  };

  const own = new Map<string, DeviceSection>();
  for (const s of machine.deviceSections()) own.set(`${s.idstr}\u0000${s.instanceId}`, s);
  const seen = new Set<DeviceSection>();
  const applies: Apply[] = [];
  const loaded: string[] = [];
  const skipped: string[] = [];
  let runState: string | undefined;
  const ramState: RamReadState = { lastBlock: undefined };
  const sections: SavevmSection[] = [];

  const eofEnd = walkSections(f, sections, (h, idstr) => {
    if (idstr === RAM_SECTION_IDSTR && h.instanceId === 0) {
      if (h.type === QEMU_VM_SECTION_START || h.type === QEMU_VM_SECTION_FULL) checkSectionVersion(f, h, RAM_SECTION_VERSION, RAM_SECTION_VERSION);
      readRamChunk(f, staging, ramState);
      return;
    }
    if (h.type !== QEMU_VM_SECTION_FULL) {
      // An iterable this machine does not have (block migration, dirty bitmaps): its chunks
      // are not described, so there is no way to step over them.
      throw f.error(`${printable(idstr)} section`, `Unknown savevm section or instance '${printable(idstr)}' ${h.instanceId}: iterable sections other than 'ram' are not supported`, h.offset);
    }
    if (idstr === GLOBAL_STATE_IDSTR && h.instanceId === 0) {
      checkSectionVersion(f, h, GLOBAL_STATE_VERSION, GLOBAL_STATE_VERSION);
      runState = loadGlobalState(f);
      return;
    }
    const sec = own.get(`${idstr}\u0000${h.instanceId}`);
    if (sec) {
      checkSectionVersion(f, h, sec.versionId, sec.minimumVersionId);
      applies.push(sec.load(f, h.versionId, ctx));
      seen.add(sec);
      loaded.push(idstr);
      return;
    }
    const used = skipUnknown(f, h, desc);
    skipped.push(idstr);
    warnings.push(`section '${printable(idstr)}' instance ${h.instanceId} (${f.offset - h.bodyOffset} bytes at offset ${h.offset}) is not modelled by this machine: stepped over using the JSON description`);
    return used;
  });

  checkTrailer(bytes, eofEnd, desc, warnings);
  for (const s of own.values()) {
    if (s.required && !seen.has(s)) throw f.error(s.idstr, `the stream has no section '${printable(s.idstr)}' instance ${s.instanceId}, which this machine requires`, eofEnd - 1);
  }
  warnings.unshift(...staging.warnings);
  const result: LoadVmResult = {
    warnings, machineType: conf.machineType, loaded, skipped, discardedRamBlocks: staging.discardedBlocks, ramPages: staging.pagesStaged,
  };
  if (runState !== undefined) result.runState = runState;
  return { staging, applies, result };
}

// ---------------------------------------------------------------------------------------------
// parseSavevm

export interface ParsedRamBlock {
  idstr: string;
  length: number;
  /** Pages sent as ZERO (a page sent twice counts twice). */
  zeroPages: number;
  /** Pages sent with their bytes. */
  dataPages: number;
}

export interface ParsedSavevm {
  version: number;
  configuration: SavevmConfiguration;
  /** Every section in stream order, with its extent. */
  sections: SavevmSection[];
  /** Offset of the QEMU_VM_EOF byte. */
  eofOffset: number;
  vmdesc?: { offset: number; length: number; text: string; description?: Vmdesc; problem?: string };
  ram?: { totalBytes: number; blocks: ParsedRamBlock[] };
  /** From `globalstate`, when present. */
  runState?: string;
  warnings: string[];
}

/** Counts pages per listed block; a page for a block the list lacks is "Can't find block". */
class RamCounter implements RamSink {
  readonly blocks: ParsedRamBlock[] = [];
  totalBytes = 0;

  listed(_f: QEMUFileReader, b: StreamRamBlock): void {
    this.totalBytes += b.length;
    const known = this.blocks.find((x) => x.idstr === b.idstr);
    if (known) known.length = b.length;
    else this.blocks.push({ idstr: b.idstr, length: b.length, zeroPages: 0, dataPages: 0 });
  }
  block(f: QEMUFileReader, idstr: string, at: number): number {
    const i = this.blocks.findIndex((x) => x.idstr === idstr);
    if (i < 0) throw f.error('ram block id', `Can't find block ${printable(idstr)}`, at);
    return i;
  }
  length(handle: number): number {
    return this.blocks[handle]!.length;
  }
  page(handle: number): void {
    this.blocks[handle]!.dataPages++;
  }
  fill(handle: number): void {
    this.blocks[handle]!.zeroPages++;
  }
}

/**
 * Walk any QEMU 7.2 stream and report its layout: configuration, every section with its extent,
 * the RAM blocks and page counts, the run state and the JSON description. Device sections are
 * stepped over with the description (the stream's own, found from the end); a stream without one
 * can be walked only up to its first device section. Throws `MigrationError` on a malformed
 * stream; changes nothing.
 */
export function parseSavevm(bytes: Uint8Array): ParsedSavevm {
  const f = new QEMUFileReader(bytes);
  return guard(f, () => {
    const version = readFileHeader(f);
    const configuration = readConfiguration(f);
    const desc = findDescription(bytes, f.offset);
    const warnings: string[] = [];
    const counter = new RamCounter();
    const ramState: RamReadState = { lastBlock: undefined };
    let sawRam = false;
    let runState: string | undefined;
    const sections: SavevmSection[] = [];
    const eofEnd = walkSections(f, sections, (h, idstr) => {
      if (idstr === RAM_SECTION_IDSTR && h.instanceId === 0) {
        if (h.type === QEMU_VM_SECTION_START || h.type === QEMU_VM_SECTION_FULL) checkSectionVersion(f, h, RAM_SECTION_VERSION, RAM_SECTION_VERSION);
        sawRam = true;
        readRamChunk(f, counter, ramState);
        return;
      }
      if (h.type !== QEMU_VM_SECTION_FULL) {
        throw f.error(`${printable(idstr)} section`, `iterable section '${printable(idstr)}' cannot be walked: only 'ram' is understood`, h.offset);
      }
      if (idstr === GLOBAL_STATE_IDSTR && h.instanceId === 0 && h.versionId === GLOBAL_STATE_VERSION) {
        runState = loadGlobalState(f);
        // Decoded here, but its description is still worth handing to an inspector.
        return desc?.index?.next(h.idstr, h.instanceId);
      }
      return skipUnknown(f, h, desc);
    });
    checkTrailer(bytes, eofEnd, desc, warnings);
    const out: ParsedSavevm = { version, configuration, sections, eofOffset: eofEnd - 1, warnings };
    if (desc) {
      out.vmdesc = { offset: desc.location.offset, length: desc.location.length, text: desc.text };
      if (desc.index) out.vmdesc.description = desc.index.vmdesc;
      if (desc.problem) out.vmdesc.problem = desc.problem;
    }
    if (sawRam) out.ram = { totalBytes: counter.totalBytes, blocks: counter.blocks };
    if (runState !== undefined) out.runState = runState;
    return out;
  });
}
