// A minimal, test-only reader of QEMU 7.2 savevm streams (spec/qemu-virtio-migration.md §5): just
// enough to list the RAM blocks and the sections, and to cut a device's section body out of a
// stream, so that the virtio blob QEMU writes can be compared with ours. It is not the project's
// savevm parser (`parseSavevm` in src/migration/savevm.ts, written elsewhere): everything the
// comparison needs from a stream goes through `readStream()` and its `SavevmView`, so swapping the
// real parser in is an adapter to that shape and one import line in blob-compare.ts.
//
// How sections are sized: RAM chunks are walked page by page (flags words, block ids, ZERO and
// PAGE payloads); a FULL device section is skipped by the sizes of the JSON VM description at the
// end of the stream, field by field and subsection by subsection, as QEMU's own
// scripts/analyze-migration.py does. A section the JSON does not describe can be sized by a
// caller-supplied `bodySize` (the virtio blob decoder does that), otherwise the walk stops there.

export const QEMU_VM_FILE_MAGIC = 0x5145564d;
export const SECTION = { EOF: 0x00, START: 0x01, PART: 0x02, END: 0x03, FULL: 0x04, SUBSECTION: 0x05, VMDESC: 0x06, CONFIGURATION: 0x07, COMMAND: 0x08, FOOTER: 0x7e } as const;

const RAM_FLAG = { ZERO: 0x02, MEM_SIZE: 0x04, PAGE: 0x08, EOS: 0x10, CONTINUE: 0x20, XBZRLE: 0x40, HOOK: 0x80, COMPRESS_PAGE: 0x100 } as const;
const PAGE_SIZE = 4096;

export class StreamError extends Error {
  override name = 'StreamError';
  constructor(readonly offset: number, msg: string) {
    super(`savevm stream at 0x${offset.toString(16)}: ${msg}`);
  }
}

/** The JSON VM description's shapes (only what is used). */
export interface VmdescField {
  name: string;
  type: string;
  size: number;
  array_len?: number;
  index?: number;
  struct?: VmdescStruct;
}
export interface VmdescStruct {
  vmsd_name?: string;
  version?: number;
  fields?: VmdescField[];
  subsections?: VmdescStruct[];
}
export interface VmdescDevice extends VmdescStruct {
  name: string;
  instance_id: number;
}
export interface Vmdesc {
  page_size: number;
  devices: VmdescDevice[];
}

export interface SectionInfo {
  type: 'START' | 'PART' | 'END' | 'FULL';
  sectionId: number;
  /** START/FULL: from the header; PART/END: of the section the id names. */
  idstr: string;
  instanceId: number;
  versionId: number;
  /** Where the section record starts (its type byte). */
  offset: number;
  /** The body, between the header and the footer. */
  bodyStart: number;
  bodyEnd: number;
}

export interface RamSummary {
  /** Blocks as listed by MEM_SIZE in the START chunk. */
  blocks: { name: string; size: number }[];
  /** Pages sent, per block: ZERO pages and full pages. */
  pages: Map<string, { zero: number; full: number }>;
}

export interface ParsedStream {
  version: number;
  machineType: string | undefined;
  sections: SectionInfo[];
  ram: RamSummary;
  vmdesc: Vmdesc | undefined;
  /** Offset of the EOF byte (or where the walk stopped). */
  end: number;
  /** Why the walk stopped before EOF, if it did. */
  stopped?: string;
}

class Cursor {
  constructor(readonly b: Uint8Array, public off = 0) {}
  private need(n: number, what: string): void {
    if (this.off + n > this.b.length) throw new StreamError(this.off, `${what}: ${n} bytes needed, ${this.b.length - this.off} left`);
  }
  u8(what = 'u8'): number {
    this.need(1, what);
    return this.b[this.off++]!;
  }
  be16(what = 'be16'): number {
    this.need(2, what);
    const v = (this.b[this.off]! << 8) | this.b[this.off + 1]!;
    this.off += 2;
    return v;
  }
  be32(what = 'be32'): number {
    this.need(4, what);
    const v = ((this.b[this.off]! << 24) | (this.b[this.off + 1]! << 16) | (this.b[this.off + 2]! << 8) | this.b[this.off + 3]!) >>> 0;
    this.off += 4;
    return v;
  }
  be64(what = 'be64'): bigint {
    const hi = this.be32(what);
    const lo = this.be32(what);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }
  str(what = 'string'): string {
    const n = this.u8(`${what} length`);
    this.need(n, what);
    const s = new TextDecoder().decode(this.b.subarray(this.off, this.off + n));
    this.off += n;
    return s;
  }
  skip(n: number, what: string): void {
    this.need(n, what);
    this.off += n;
  }
}

/**
 * The JSON description: `0x06`, be32 length, then JSON running exactly to the end of the stream.
 * Found from the end (the length must match), so a NUL inside the JSON or its length is harmless.
 */
export function findVmdesc(b: Uint8Array): { offset: number; json: Vmdesc } | undefined {
  for (let p = b.length - 6; p >= 0; p--) {
    if (b[p] !== SECTION.VMDESC || b[p + 5] !== 0x7b /* { */) continue;
    const len = ((b[p + 1]! << 24) | (b[p + 2]! << 16) | (b[p + 3]! << 8) | b[p + 4]!) >>> 0;
    if (p + 5 + len !== b.length) continue;
    try {
      return { offset: p, json: JSON.parse(new TextDecoder().decode(b.subarray(p + 5))) as Vmdesc };
    } catch {
      /* not it */
    }
  }
  return undefined;
}

/** Skip a vmsd body as the JSON describes it (fields, then the subsections it lists). */
function skipStruct(c: Cursor, desc: VmdescStruct, where: string): void {
  for (const f of desc.fields ?? []) {
    const n = f.array_len ?? 1;
    for (let i = 0; i < n; i++) {
      if (f.type === 'struct' && f.struct) skipStruct(c, f.struct, `${where}.${f.name}`);
      else c.skip(f.size, `${where}.${f.name}`);
    }
  }
  for (const s of desc.subsections ?? []) {
    const at = c.off;
    if (c.u8('subsection marker') !== SECTION.SUBSECTION) throw new StreamError(at, `${where}: subsection ${s.vmsd_name} expected`);
    const name = c.str('subsection name');
    if (name !== s.vmsd_name) throw new StreamError(at, `${where}: subsection ${name}, the description says ${s.vmsd_name}`);
    c.be32('subsection version');
    skipStruct(c, s, `${where}/${name}`);
  }
}

function ramChunk(c: Cursor, ram: RamSummary, start: boolean, last: { block: string | undefined }): void {
  for (;;) {
    const at = c.off;
    const word = c.be64('ram flags');
    const flags = Number(word & 0xfffn);
    const addr = word & ~0xfffn;
    if (flags & RAM_FLAG.MEM_SIZE) {
      if (!start) throw new StreamError(at, 'MEM_SIZE outside the START chunk');
      let left = addr;
      while (left > 0n) {
        const name = c.str('ram block id');
        const size = c.be64('ram block size');
        ram.blocks.push({ name, size: Number(size) });
        left -= size;
      }
      if (left !== 0n) throw new StreamError(at, 'MEM_SIZE total does not match the block sizes');
      continue;
    }
    if (flags & RAM_FLAG.EOS) return;
    if (flags & (RAM_FLAG.ZERO | RAM_FLAG.PAGE)) {
      if (!(flags & RAM_FLAG.CONTINUE)) last.block = c.str('ram block id');
      if (last.block === undefined) throw new StreamError(at, 'CONTINUE without a block');
      const p = ram.pages.get(last.block) ?? { zero: 0, full: 0 };
      ram.pages.set(last.block, p);
      if (flags & RAM_FLAG.ZERO) {
        c.u8('zero page fill byte');
        p.zero++;
      } else {
        c.skip(PAGE_SIZE, 'ram page');
        p.full++;
      }
      continue;
    }
    throw new StreamError(at, `unsupported ram flags 0x${flags.toString(16)}`);
  }
}

export interface ParseOptions {
  /** Size of a FULL section's body that the JSON does not describe (e.g. by decoding it); undefined: unknown. */
  bodySize?: (s: { idstr: string; instanceId: number; versionId: number }, bytes: Uint8Array, bodyStart: number) => number | undefined;
}

/** Walk a whole stream: header, configuration, RAM chunks, device sections, footers, EOF, JSON. */
export function parseStream(b: Uint8Array, opts: ParseOptions = {}): ParsedStream {
  const c = new Cursor(b);
  if (c.be32('magic') !== QEMU_VM_FILE_MAGIC) throw new StreamError(0, 'not a QEMU migration stream (magic)');
  const version = c.be32('version');
  const desc = findVmdesc(b);
  const out: ParsedStream = { version, machineType: undefined, sections: [], ram: { blocks: [], pages: new Map() }, vmdesc: desc?.json, end: b.length };
  const byId = new Map<number, SectionInfo>();
  const lastBlock = { block: undefined as string | undefined };
  const limit = desc?.offset ?? b.length;
  while (c.off < limit) {
    const at = c.off;
    const type = c.u8('section type');
    if (type === SECTION.EOF) {
      out.end = at;
      return out;
    }
    if (type === SECTION.CONFIGURATION) {
      const len = c.be32('configuration length');
      out.machineType = new TextDecoder().decode(b.subarray(c.off, c.off + len));
      c.skip(len, 'machine type');
      continue;
    }
    if (type === SECTION.COMMAND) {
      c.be16('command');
      c.skip(c.be16('command length'), 'command data');
      continue;
    }
    let s: SectionInfo;
    if (type === SECTION.START || type === SECTION.FULL) {
      const sectionId = c.be32('section id');
      const idstr = c.str('idstr');
      const instanceId = c.be32('instance id');
      const versionId = c.be32('version id');
      s = { type: type === SECTION.START ? 'START' : 'FULL', sectionId, idstr, instanceId, versionId, offset: at, bodyStart: c.off, bodyEnd: c.off };
      byId.set(sectionId, s);
    } else if (type === SECTION.PART || type === SECTION.END) {
      const sectionId = c.be32('section id');
      const of = byId.get(sectionId);
      if (!of) throw new StreamError(at, `PART/END of unknown section ${sectionId}`);
      s = { ...of, type: type === SECTION.PART ? 'PART' : 'END', offset: at, bodyStart: c.off, bodyEnd: c.off };
    } else {
      throw new StreamError(at, `unknown section type 0x${type.toString(16)}`);
    }
    if (s.idstr === 'ram') {
      ramChunk(c, out.ram, s.type === 'START', lastBlock);
    } else if (s.type === 'FULL') {
      const d = desc?.json.devices.find((x) => x.name === s.idstr && x.instance_id === s.instanceId);
      if (d) {
        skipStruct(c, d, s.idstr);
      } else {
        const n = opts.bodySize?.(s, b, c.off);
        if (n === undefined) {
          out.sections.push(s);
          out.stopped = `section ${s.idstr} is not in the JSON description and has no known size`;
          out.end = at;
          return out;
        }
        c.skip(n, s.idstr);
      }
    } else {
      throw new StreamError(at, `iterable section ${s.idstr} is not supported`);
    }
    s.bodyEnd = c.off;
    out.sections.push(s);
    // The footer (on for every 7.2 machine type).
    if (b[c.off] === SECTION.FOOTER) {
      c.u8();
      const id = c.be32('footer section id');
      if (id !== s.sectionId) throw new StreamError(c.off - 5, `footer of section ${id}, expected ${s.sectionId} (${s.idstr})`);
    }
  }
  throw new StreamError(c.off, 'no EOF before the JSON description');
}

/** One device's section body (a FULL section), cut out of a stream. */
export interface DeviceSection {
  idstr: string;
  instanceId: number;
  versionId: number;
  sectionId: number;
  body: Uint8Array;
  /** The JSON description's entry for it, if any. */
  desc: VmdescDevice | undefined;
}

/**
 * What the comparisons need from a stream. This is the seam for the project's savevm parser:
 * an adapter from `parseSavevm` (src/migration/savevm.ts) to this shape replaces `readStream`.
 */
export interface SavevmView {
  machineType: string | undefined;
  ramBlocks: { name: string; size: number }[];
  /** FULL sections in stream order, with their bodies. */
  devices: DeviceSection[];
  /** Why the walk stopped before EOF, if it did. */
  stopped?: string;
}

export function readStream(b: Uint8Array, opts: ParseOptions = {}): SavevmView {
  const p = parseStream(b, opts);
  return {
    machineType: p.machineType,
    ramBlocks: p.ram.blocks,
    devices: p.sections
      .filter((s) => s.type === 'FULL' && s.bodyEnd >= s.bodyStart && !(p.stopped && s === p.sections.at(-1)))
      .map((s) => ({
        idstr: s.idstr,
        instanceId: s.instanceId,
        versionId: s.versionId,
        sectionId: s.sectionId,
        body: b.subarray(s.bodyStart, s.bodyEnd),
        desc: p.vmdesc?.devices.find((d) => d.name === s.idstr && d.instance_id === s.instanceId),
      })),
    ...(p.stopped ? { stopped: p.stopped } : {}),
  };
}

/** The FULL section whose idstr matches (exactly, or by a predicate), or undefined. */
export function deviceSection(b: Uint8Array, match: string | ((idstr: string) => boolean), opts: ParseOptions = {}): DeviceSection | undefined {
  const pred = typeof match === 'string' ? (s: string) => s === match : match;
  return readStream(b, opts).devices.find((d) => pred(d.idstr));
}

/** `idstr#instance vN` of every FULL section, in order (for messages). */
export function sectionKeys(v: SavevmView): string[] {
  return v.devices.map((s) => `${s.idstr}#${s.instanceId} v${s.versionId}`);
}
