/**
 * A migration stream as it really is: every section with its place and size, the RAM blocks,
 * and each virtio device's blob decoded field by field (`virtio-ts inspect`). Works on QEMU
 * 7.2's streams and ours; browser-safe (the command in `src/cli/inspect.ts` only reads the file).
 */
import type { VmdescDevice } from './vmdesc.js';
import { parseSavevm, type ParsedSavevm, type SavevmSection } from './savevm.js';
import { decodeOptionsFor, decodeVirtioBlob, type DecodedField, type DecodedVirtio } from './virtio-decode.js';

export interface InspectedSection extends SavevmSection {
  /** The decoded blob, for virtio devices. */
  virtio?: DecodedVirtio;
  /** Why a virtio blob could not be decoded. */
  virtioError?: string;
}

export interface InspectReport {
  stream: ParsedSavevm;
  sections: InspectedSection[];
}

/** Is this section a virtio device (by the stream's own description, or by its name)? */
function isVirtio(s: SavevmSection, desc: VmdescDevice | undefined): boolean {
  if (s.kind !== 'full') return false;
  if (desc) return desc.fields.length === 1 && desc.fields[0]!.type === 'virtio';
  const vmsd = s.idstr.slice(s.idstr.lastIndexOf('/') + 1);
  return vmsd.startsWith('virtio-');
}

export interface InspectOptions {
  /** Decode the virtio blobs with every queue entry and configuration dword listed (`DecodeOptions.allEntries`). */
  allEntries?: boolean;
}

/** Parse a stream and decode its virtio sections. Throws `MigrationError` on a malformed stream. */
export function inspectStream(bytes: Uint8Array, opts: InspectOptions = {}): InspectReport {
  const stream = parseSavevm(bytes);
  const devices = stream.vmdesc?.description?.devices ?? [];
  const sections = stream.sections.map((s): InspectedSection => {
    const desc = s.vmdesc ?? devices.find((d) => d.name === s.idstr && d.instance_id === s.instanceId);
    if (!isVirtio(s, desc)) return s;
    try {
      const blob = bytes.subarray(s.bodyOffset, s.bodyOffset + s.bodyLength);
      return { ...s, virtio: decodeVirtioBlob(blob, { ...decodeOptionsFor(s.idstr), allEntries: opts.allEntries ?? false }, s.bodyOffset) };
    } catch (e) {
      return { ...s, virtioError: e instanceof Error ? e.message : String(e) };
    }
  });
  return { stream, sections };
}

const hex64 = (v: bigint) => `0x${v.toString(16)}`;
const hexBytes = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** The `--json` form: the issue's schema, with more fields beside it. */
export function inspectJson(r: InspectReport): unknown {
  const s = r.stream;
  return {
    version: s.version,
    machineType: s.configuration.machineType,
    ...(s.runState !== undefined ? { runState: s.runState } : {}),
    ...(s.ram ? { ram: { totalBytes: s.ram.totalBytes, blocks: s.ram.blocks } } : {}),
    ...(s.vmdesc ? { vmdesc: { offset: s.vmdesc.offset, length: s.vmdesc.length } } : {}),
    sections: r.sections.map((x) => ({
      idstr: x.idstr,
      instanceId: x.instanceId,
      versionId: x.versionId,
      kind: x.kind,
      sectionId: x.sectionId,
      offset: x.offset,
      size: x.bodyLength,
      ...(x.virtio ? { virtio: virtioJson(x.virtio) } : {}),
      ...(x.virtioError ? { virtioError: x.virtioError } : {}),
    })),
    warnings: s.warnings,
  };
}

function virtioJson(v: DecodedVirtio): unknown {
  return {
    transport: v.transport,
    status: v.status,
    isr: v.isr,
    queueSel: v.queueSel,
    guestFeatures: hex64(v.guestFeatures),
    config: hexBytes(v.config),
    queues: v.queues.map((q) => {
      const ring = v.rings.find((r) => r.index === q.index);
      return {
        index: q.index,
        num: q.num,
        desc: hex64(q.desc),
        lastAvailIdx: q.lastAvailIdx,
        ...(q.align !== undefined ? { align: q.align } : {}),
        ...(q.vector !== undefined ? { vector: q.vector } : {}),
        ...(ring ? { avail: hex64(ring.avail), used: hex64(ring.used) } : {}),
      };
    }),
    subsections: v.subsections.map((x) => ({ name: x.name, version: x.version })),
    ...(v.broken !== undefined ? { broken: v.broken } : {}),
    ...(v.started !== undefined ? { started: v.started } : {}),
    ...(v.disabled !== undefined ? { disabled: v.disabled } : {}),
    ...(v.deviceEndian !== undefined ? { deviceEndian: v.deviceEndian } : {}),
    ...(v.deviceState ? { deviceState: v.deviceState } : {}),
  };
}

const KIND = { start: 'START', part: 'PART', end: 'END', full: 'FULL' } as const;
const off = (n: number) => `0x${n.toString(16).padStart(8, '0')}`;

/** The terminal form: one line per section, virtio blobs as an indented field tree. */
export function formatInspect(r: InspectReport): string {
  const s = r.stream;
  const lines: string[] = [];
  lines.push(`QEMU migration stream, file version ${s.version}, machine '${s.configuration.machineType}'` + (s.runState !== undefined ? `, run state '${s.runState}'` : ''));
  if (s.ram) {
    lines.push(`RAM: ${s.ram.totalBytes} bytes in ${s.ram.blocks.length} block(s)`);
    for (const b of s.ram.blocks) lines.push(`  ${b.idstr.padEnd(24)} ${String(b.length).padStart(10)} bytes  ${b.dataPages} page(s) with data, ${b.zeroPages} zero page(s)`);
  }
  lines.push(s.vmdesc ? `JSON description at ${off(s.vmdesc.offset)} (${s.vmdesc.length} bytes)` : 'no JSON description');
  lines.push('');
  lines.push('offset      kind   id  section                                         inst  ver      size');
  for (const x of r.sections) {
    // PART and END headers carry no instance or version.
    const iv = x.kind === 'part' || x.kind === 'end' ? `${'-'.padStart(4)} ${'-'.padStart(4)}` : `${String(x.instanceId).padStart(4)} ${String(x.versionId).padStart(4)}`;
    lines.push(`${off(x.offset)}  ${KIND[x.kind].padEnd(5)} ${String(x.sectionId).padStart(3)}  ${x.idstr.padEnd(46)} ${iv} ${String(x.bodyLength).padStart(9)}`);
    if (x.virtio) {
      const v = x.virtio;
      lines.push(`            virtio over ${v.transport}: status 0x${v.status.toString(16)}, isr 0x${v.isr.toString(16)}, features ${hex64(v.guestFeatures)}, ${v.queues.length} queue(s)`);
      formatFields(v.fields, '              ', lines);
    }
    if (x.virtioError) lines.push(`            virtio blob not decoded: ${x.virtioError}`);
  }
  for (const w of s.warnings) lines.push(`warning: ${w}`);
  return lines.join('\n');
}

function formatFields(fields: readonly DecodedField[], indent: string, lines: string[]): void {
  for (const f of fields) {
    let value = '';
    if (typeof f.value === 'bigint') value = hex64(f.value);
    else if (typeof f.value === 'number') value = `${f.value} (0x${f.value.toString(16)})`;
    else if (typeof f.value === 'boolean') value = String(f.value);
    else if (typeof f.value === 'string') value = f.value.length > 64 ? `${f.value.slice(0, 64)}… (${f.size} bytes)` : f.value || '(empty)';
    lines.push(`${off(f.offset)}${indent}${f.name}${value ? ': ' + value : ''}${f.children ? `  [${f.size} bytes]` : ''}`);
    if (f.children) formatFields(f.children, indent + '  ', lines);
  }
}
