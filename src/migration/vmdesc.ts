/**
 * The JSON description ("vmdesc") QEMU appends to a stream after QEMU_VM_EOF
 * (spec/qemu-virtio-migration.md §5.5): how it is written, found, read and used.
 *
 * - Written as QEMU's compact JSON writer writes it (`qobject/json-writer.c` with pretty off,
 *   shared with QMP in `json-writer.ts`): `", "` between members and elements, `": "` after a
 *   key, keys in QEMU's order (repeated where QEMU repeats them), no newline.
 * - Found from the end of the stream: the record is u8 0x06, be32 length, then exactly that many
 *   bytes of JSON up to the end of the file.
 * - Used to step over sections nobody here can decode: a described section is the sum of its
 *   fields' sizes (`array_len` × size for compressed arrays), then each described subsection's
 *   0x05 header (name and be32 version) and its own fields, recursively.
 *
 * Everything read here comes from the stream and is checked: types, integer sizes, nesting depth.
 */
import { jsonArray, jsonEscape, jsonMember as member, jsonObject, jsonString } from './json-writer.js';
import { latin1, MigrationError, type QEMUFileReader } from './qemu-file.js';
import { printable, QEMU_VM_SUBSECTION, type VmdescField, type VmdescStruct } from './vmstate.js';

/** QEMU_VM_VMDESCRIPTION: the record type byte before the JSON. */
export const QEMU_VM_VMDESCRIPTION = 0x06;

/** One entry of `devices`: a FULL section as its writer described it. */
export interface VmdescDevice {
  /** The section's idstr. */
  name: string;
  instance_id: number;
  /** Absent for old-style (non-vmsd) handlers, which give a `size` instead. */
  vmsd_name?: string;
  version?: number;
  /** Old-style handlers only: the section body's size. */
  size?: number;
  fields: VmdescField[];
  subsections?: VmdescStruct[];
}

export interface Vmdesc {
  page_size: number;
  devices: VmdescDevice[];
}

/** Where the description sits in a stream. */
export interface VmdescLocation {
  /** Offset of the 0x06 byte. */
  offset: number;
  /** Offset of the JSON text (offset + 5). */
  jsonOffset: number;
  length: number;
}

// ---------------------------------------------------------------------------------------------
// Writing

function formatFields(fields: readonly VmdescField[]): string {
  return jsonArray(fields.map(formatField));
}

function formatField(f: VmdescField): string {
  // vmsd_desc_field_start/end: name, array_len or index, type, struct, size.
  const m = [member('name', jsonString(f.name))];
  if (f.array_len !== undefined) m.push(member('array_len', String(f.array_len)));
  else if (f.index !== undefined) m.push(member('index', String(f.index)));
  m.push(member('type', jsonString(f.type)));
  if (f.struct) m.push(member('struct', formatStruct(f.struct)));
  for (const r of f.inline ?? []) m.push(...structMembers(r));
  m.push(member('size', String(f.size)));
  return jsonObject(m);
}

function structMembers(s: VmdescStruct): string[] {
  const m = [member('vmsd_name', jsonString(s.vmsd_name)), member('version', String(s.version)), member('fields', formatFields(s.fields))];
  // vmstate_subsection_save opens the array only when a subsection is written.
  if (s.subsections && s.subsections.length > 0) m.push(member('subsections', jsonArray(s.subsections.map(formatStruct))));
  return m;
}

function formatStruct(s: VmdescStruct): string {
  return jsonObject(structMembers(s));
}

function formatDevice(d: VmdescDevice): string {
  const m = [member('name', jsonString(d.name)), member('instance_id', String(d.instance_id))];
  if (d.vmsd_name !== undefined) {
    m.push(...structMembers({ vmsd_name: d.vmsd_name, version: d.version ?? 0, fields: d.fields, ...(d.subsections ? { subsections: d.subsections } : {}) }));
  } else {
    // vmstate_save_old_style: the size, then one "data" buffer field.
    m.push(member('size', String(d.size ?? 0)), member('fields', formatFields(d.fields)));
  }
  return jsonObject(m);
}

/** The description's JSON text, byte for byte as QEMU 7.2 writes it. */
export function formatVmdesc(d: Vmdesc): string {
  return jsonObject([member('page_size', String(d.page_size)), member('devices', jsonArray(d.devices.map(formatDevice)))]);
}

// ---------------------------------------------------------------------------------------------
// Finding and reading

/**
 * Find the description: scanning back from the end for a 0x06 whose be32 length reaches exactly
 * the end of the stream and whose text starts with `{`. JSON text never holds a 0x06 byte (QEMU
 * escapes control characters), so the first match from the end is the record's start. Bounded by
 * the stream length; undefined when there is none.
 */
export function findVmdesc(bytes: Uint8Array, notBefore = 0): VmdescLocation | undefined {
  const n = bytes.length;
  for (let i = n - 6; i >= notBefore; i--) {
    if (bytes[i] !== QEMU_VM_VMDESCRIPTION || bytes[i + 5] !== 0x7b) continue;
    const len = ((bytes[i + 1]! << 24) | (bytes[i + 2]! << 16) | (bytes[i + 3]! << 8) | bytes[i + 4]!) >>> 0;
    if (len === n - i - 5) return { offset: i, jsonOffset: i + 5, length: len };
  }
  return undefined;
}

/** Deepest nesting of JSON values accepted from a stream (QEMU's descriptions are a dozen deep). */
const MAX_DEPTH = 64;

/**
 * JSON as QEMU writes it, parsed without losing anything: objects keep their members in order,
 * duplicates included (a `qtailq` field repeats `vmsd_name`, `version`, `fields` per element),
 * which `JSON.parse` would fold.
 */
type Json = null | boolean | number | string | Json[] | JsonObject;
interface JsonObject {
  readonly entries: [string, Json][];
}

class DescError extends Error {}

/** A bounded recursive-descent JSON parser (depth ≤ MAX_DEPTH, one pass over the text). */
class JsonParser {
  private i = 0;
  constructor(private readonly s: string) {}

  parse(): Json {
    const v = this.value(0);
    this.ws();
    if (this.i !== this.s.length) this.fail('text after the JSON value');
    return v;
  }

  private fail(what: string): never {
    throw new DescError(`${what} at character ${this.i}`);
  }

  private ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
      this.i++;
    }
  }

  private value(depth: number): Json {
    if (depth > MAX_DEPTH) this.fail(`nesting deeper than ${MAX_DEPTH}`);
    this.ws();
    const c = this.s.charCodeAt(this.i);
    if (c === 0x7b) return this.object(depth);
    if (c === 0x5b) return this.array(depth);
    if (c === 0x22) return this.string();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    if (this.s.startsWith('true', this.i)) return this.word(4, true);
    if (this.s.startsWith('false', this.i)) return this.word(5, false);
    if (this.s.startsWith('null', this.i)) return this.word(4, null);
    return this.fail('unexpected character');
  }

  private word(n: number, v: Json): Json {
    this.i += n;
    return v;
  }

  /** Skip white space and expect `code` there, consuming it. */
  private expect(code: number, what: string): void {
    this.ws();
    if (this.s.charCodeAt(this.i) !== code) this.fail(what);
    this.i++;
  }

  private object(depth: number): JsonObject {
    this.i++;
    const entries: [string, Json][] = [];
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x7d) {
      this.i++;
      return { entries };
    }
    for (;;) {
      this.ws();
      if (this.s.charCodeAt(this.i) !== 0x22) this.fail('expected a member name');
      const k = this.string();
      this.expect(0x3a, "expected ':'");
      entries.push([k, this.value(depth + 1)]);
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x7d) return { entries };
      if (c !== 0x2c) this.fail("expected ',' or '}'");
    }
  }

  private array(depth: number): Json[] {
    this.i++;
    const out: Json[] = [];
    this.ws();
    if (this.s.charCodeAt(this.i) === 0x5d) {
      this.i++;
      return out;
    }
    for (;;) {
      out.push(this.value(depth + 1));
      this.ws();
      const c = this.s.charCodeAt(this.i++);
      if (c === 0x5d) return out;
      if (c !== 0x2c) this.fail("expected ',' or ']'");
    }
  }

  private string(): string {
    const s = this.s;
    this.i++;
    // Fast path: QEMU's names rarely hold an escape; take the text up to the quote in one slice.
    for (let j = this.i; j < s.length; j++) {
      const c = s.charCodeAt(j);
      if (c === 0x22) {
        const out = s.slice(this.i, j);
        this.i = j + 1;
        return out;
      }
      if (c === 0x5c) break;
    }
    let out = '';
    for (;;) {
      if (this.i >= s.length) this.fail('unterminated string');
      const c = s[this.i++]!;
      if (c === '"') return out;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = jsonEscape(s, this.i);
      if (!e) this.fail(s[this.i] === 'u' ? 'bad \\u escape' : 'bad escape');
      out += e[0];
      this.i = e[1];
    }
  }

  private number(): number {
    const s = this.s;
    const start = this.i;
    const digits = () => {
      const from = this.i;
      while (this.i < s.length && s.charCodeAt(this.i) >= 0x30 && s.charCodeAt(this.i) <= 0x39) this.i++;
      if (this.i === from) this.fail('bad number');
    };
    if (s[this.i] === '-') this.i++;
    digits();
    if (s[this.i] === '.') {
      this.i++;
      digits();
    }
    if (s[this.i] === 'e' || s[this.i] === 'E') {
      this.i++;
      if (s[this.i] === '+' || s[this.i] === '-') this.i++;
      digits();
    }
    return Number(s.slice(start, this.i));
  }
}

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The last value of member `k` (QEMU never repeats the keys read this way). */
function get(o: JsonObject, k: string): Json | undefined {
  let v: Json | undefined;
  for (const [key, val] of o.entries) if (key === k) v = val;
  return v;
}

function str(o: JsonObject, k: string, where: string): string {
  const v = get(o, k);
  if (typeof v !== 'string') throw new DescError(`${where}: "${k}" is not a string`);
  return v;
}

function count(v: Json | undefined, k: string, where: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new DescError(`${where}: "${k}" is not a non-negative integer`);
  return v;
}

function readFields(v: Json | undefined, where: string, depth: number): VmdescField[] {
  if (!Array.isArray(v)) throw new DescError(`${where}: "fields" is not an array`);
  return v.map((e, i) => {
    const w = `${where}.fields[${i}]`;
    if (!isObject(e)) throw new DescError(`${w} is not an object`);
    const f: VmdescField = { name: str(e, 'name', w), type: str(e, 'type', w), size: count(get(e, 'size'), 'size', w) };
    const arrayLen = get(e, 'array_len');
    if (arrayLen !== undefined) f.array_len = count(arrayLen, 'array_len', w);
    const index = get(e, 'index');
    if (index !== undefined) f.index = count(index, 'index', w);
    const st = get(e, 'struct');
    if (st !== undefined) f.struct = readStruct(st, `${w}.struct`, depth + 1);
    // Inline records: each `vmsd_name` member starts one; `version`, `fields` and `subsections`
    // after it belong to it.
    const inline: JsonObject[] = [];
    for (const [k, val] of e.entries) {
      if (k === 'vmsd_name') inline.push({ entries: [[k, val]] });
      else if (inline.length > 0 && (k === 'version' || k === 'fields' || k === 'subsections')) inline[inline.length - 1]!.entries.push([k, val]);
    }
    if (inline.length > 0) f.inline = inline.map((r, k) => readStruct(r, `${w}.inline[${k}]`, depth + 1));
    return f;
  });
}

function readStruct(v: Json | undefined, where: string, depth: number): VmdescStruct {
  if (depth > MAX_DEPTH) throw new DescError(`${where}: nested more than ${MAX_DEPTH} deep`);
  if (!isObject(v)) throw new DescError(`${where} is not an object`);
  const s: VmdescStruct = { vmsd_name: str(v, 'vmsd_name', where), version: count(get(v, 'version'), 'version', where), fields: readFields(get(v, 'fields'), where, depth) };
  const subs = get(v, 'subsections');
  if (subs !== undefined) s.subsections = readSubsections(subs, where, depth);
  return s;
}

function readSubsections(v: Json, where: string, depth: number): VmdescStruct[] {
  if (!Array.isArray(v)) throw new DescError(`${where}: "subsections" is not an array`);
  return v.map((e, i) => readStruct(e, `${where}.subsections[${i}]`, depth + 1));
}

/**
 * Parse and check a description's text. Throws a `MigrationError` at `at` (the JSON's offset)
 * naming what is wrong.
 */
export function parseVmdesc(text: string, at: number): Vmdesc {
  try {
    const root = new JsonParser(text).parse();
    if (!isObject(root)) throw new DescError('top level is not an object');
    const pageSize = count(get(root, 'page_size'), 'page_size', 'vmdesc');
    const devs = get(root, 'devices');
    if (!Array.isArray(devs)) throw new DescError('"devices" is not an array');
    const devices = devs.map((d, i): VmdescDevice => {
      const w = `devices[${i}]`;
      if (!isObject(d)) throw new DescError(`${w} is not an object`);
      const dev: VmdescDevice = { name: str(d, 'name', w), instance_id: count(get(d, 'instance_id'), 'instance_id', w), fields: readFields(get(d, 'fields'), w, 0) };
      if (get(d, 'vmsd_name') !== undefined) dev.vmsd_name = str(d, 'vmsd_name', w);
      const version = get(d, 'version');
      if (version !== undefined) dev.version = count(version, 'version', w);
      const size = get(d, 'size');
      if (size !== undefined) dev.size = count(size, 'size', w);
      const subs = get(d, 'subsections');
      if (subs !== undefined) dev.subsections = readSubsections(subs, w, 0);
      return dev;
    });
    return { page_size: pageSize, devices };
  } catch (e) {
    if (e instanceof DescError) throw new MigrationError(at, 'vmdesc', `JSON description: ${e.message}`);
    throw e;
  }
}

/** Find and parse the description of `bytes`; undefined when the stream has none. */
export function readVmdesc(bytes: Uint8Array, notBefore = 0): { location: VmdescLocation; text: string; vmdesc: Vmdesc } | undefined {
  const location = findVmdesc(bytes, notBefore);
  if (!location) return undefined;
  const text = latin1(bytes.subarray(location.jsonOffset));
  return { location, text, vmdesc: parseVmdesc(text, location.jsonOffset) };
}

// ---------------------------------------------------------------------------------------------
// Using

/** Bytes a field list takes on the wire. */
function fieldsLength(fields: readonly VmdescField[]): number {
  let n = 0;
  for (const f of fields) n += f.size * (f.array_len ?? 1);
  return n;
}

/**
 * Step over a section body the way its description says (what analyze-migration.py does): the
 * fields, then each described subsection with its 0x05 header. Throws a `MigrationError` naming
 * the section when the bytes do not follow the description or the stream is too short.
 */
export function skipDescribed(f: QEMUFileReader, dev: VmdescDevice): void {
  skipStruct(f, dev.name, dev.fields, dev.subsections, 0);
}

function skipStruct(f: QEMUFileReader, idstr: string, fields: readonly VmdescField[], subsections: readonly VmdescStruct[] | undefined, depth: number): void {
  const n = fieldsLength(fields);
  if (n > f.remaining) {
    throw f.error(`${idstr} (described)`, `the JSON description gives ${n} bytes of fields, but only ${f.remaining} remain`);
  }
  f.skip(n, `${idstr} (described)`);
  for (const sub of subsections ?? []) {
    if (depth > MAX_DEPTH) throw f.error(`${idstr} (described)`, 'subsections nested too deep');
    const at = f.offset;
    if (f.peekByte(0) !== QEMU_VM_SUBSECTION) {
      throw f.error(`${idstr} subsection`, `expected subsection '${printable(sub.vmsd_name)}' (0x05) as the JSON description says, found 0x${Math.max(0, f.peekByte(0)).toString(16)}`, at);
    }
    f.skip(1, `${idstr} subsection`);
    const name = f.getName(`${idstr} subsection name`);
    if (name !== sub.vmsd_name) {
      throw f.error(`${idstr} subsection`, `subsection '${printable(name)}' where the JSON description has '${printable(sub.vmsd_name)}'`, at);
    }
    f.getBe32(`${name} version_id`);
    skipStruct(f, idstr, sub.fields, sub.subsections, depth + 1);
  }
}
