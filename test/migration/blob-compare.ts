// Comparing the streams two machines wrote for the same scripted state (QEMU's and ours): the
// container (machine type, RAM blocks, sections) and, byte by byte, the virtio device's section.
// Everything that may differ is declared here, with the reason; anything else is a failure.
//
// Streams are read with the project's own parser and blob decoder, as `virtio-ts inspect` reads
// them (`inspectStream`: `parseSavevm`, then `decodeVirtioBlob` on each virtio section). The
// blob is decoded with `allEntries`, so its leaf fields cover every byte exactly once (checked
// here); comparing leaf by leaf is comparing byte by byte, and a difference comes out named
// (`isr`, `vq[0] > last_avail_idx`, `pci (virtio_pci_save_config) > msix > table > entry[1] > data`).
import { inspectStream, type InspectReport, type InspectedSection } from '../../src/migration/inspect.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { decodeVirtioBlob, leafFields, type DecodedLeaf, type DecodedVirtio, type DecodeOptions } from '../../src/migration/virtio-decode.js';

/** A field that may differ between the two blobs, and why. */
export interface DeclaredBlobDifference {
  /** Matched against field paths (`leafFields`). */
  field: RegExp;
  reason: string;
}

/**
 * Fields of the virtio blob that may differ between QEMU 7.2 and virtio-ts. None is known: the
 * blob holds only guest-visible state (registers, PCI configuration, MSI-X table, ring indices and
 * addresses) and QEMU writes it deterministically (two QEMU runs of one script write identical
 * blobs; migration-qemu.test.ts checks that for every scenario). Add an entry here only with a
 * reason that names QEMU's behaviour and why ours cannot match it.
 */
export const DECLARED_BLOB_DIFFERENCES: readonly DeclaredBlobDifference[] = [];

/** A decoded blob and the bytes its field offsets point into (a whole stream, or the blob alone). */
export interface DecodedBlob {
  bytes: Uint8Array;
  /** Where the blob starts in `bytes`, and its length. */
  offset: number;
  length: number;
  virtio: DecodedVirtio;
}

/** Decode a lone blob for comparison: every entry listed, offsets into `blob`. */
export function decodeBlob(blob: Uint8Array, opts: DecodeOptions): DecodedBlob {
  return { bytes: blob, offset: 0, length: blob.length, virtio: decodeVirtioBlob(blob, { ...opts, allEntries: true }) };
}

/**
 * The blob's leaf fields, checked to cover it exactly once, in order: what makes a leaf-by-leaf
 * comparison a byte-for-byte one. A gap or an overlap is a decoder bug, not a difference.
 */
export function blobLeaves(d: DecodedBlob): DecodedLeaf[] {
  const leaves = leafFields(d.virtio.fields);
  let at = d.offset;
  for (const l of leaves) {
    if (l.offset !== at) throw new Error(`blob fields do not cover the blob: '${l.path}' starts at ${l.offset}, the previous field ended at ${at}`);
    at += l.size;
  }
  if (at !== d.offset + d.length) throw new Error(`blob fields do not cover the blob: they end at ${at}, the blob at ${d.offset + d.length}`);
  return leaves;
}

export interface BlobDifference {
  field: string;
  a: string;
  b: string;
  declared?: string;
}

export interface BlobComparison {
  /** Same fields (paths and sizes) in the same order: the same subsections and table sizes. */
  sameLayout: boolean;
  layout?: { a: string[]; b: string[] };
  differences: BlobDifference[];
  /** Undeclared differences (what fails a comparison). */
  undeclared: BlobDifference[];
}

const hex = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
const leafBytes = (d: DecodedBlob, l: DecodedLeaf): Uint8Array => d.bytes.subarray(l.offset, l.offset + l.size);

/**
 * Compare two blobs field by field, every byte of both. When their layouts differ (a subsection
 * only one has, a different MSI-X table size), that is reported, fields are matched by path, and
 * a field only one side has is a difference too.
 */
export function compareBlobs(a: DecodedBlob, b: DecodedBlob, declared: readonly DeclaredBlobDifference[] = []): BlobComparison {
  const la = blobLeaves(a);
  const lb = blobLeaves(b);
  const sameLayout = la.length === lb.length && la.every((x, i) => x.path === lb[i]!.path && x.size === lb[i]!.size);
  const differences: BlobDifference[] = [];
  const bByPath = new Map(lb.map((x) => [x.path, x]));
  for (const fa of la) {
    const va = hex(leafBytes(a, fa));
    const fb = bByPath.get(fa.path);
    if (!fb) {
      differences.push({ field: fa.path, a: va, b: '(absent)' });
      continue;
    }
    const vb = hex(leafBytes(b, fb));
    if (va !== vb) differences.push({ field: fa.path, a: va, b: vb });
  }
  const aPaths = new Set(la.map((x) => x.path));
  for (const fb of lb) if (!aPaths.has(fb.path)) differences.push({ field: fb.path, a: '(absent)', b: hex(leafBytes(b, fb)) });
  for (const d of differences) {
    const hit = declared.find((x) => x.field.test(d.field));
    if (hit) d.declared = hit.reason;
  }
  const subsections = (d: DecodedBlob) => d.virtio.subsections.map((x) => x.name);
  return {
    sameLayout,
    ...(sameLayout ? {} : { layout: { a: subsections(a), b: subsections(b) } }),
    differences,
    undeclared: differences.filter((d) => d.declared === undefined),
  };
}

export function formatBlobComparison(c: BlobComparison, names: [string, string] = ['a', 'b']): string {
  const lines: string[] = [];
  if (!c.sameLayout && c.layout) lines.push(`layouts differ: ${names[0]} [${c.layout.a.join(', ')}] / ${names[1]} [${c.layout.b.join(', ')}]`);
  for (const d of c.differences.slice(0, 60)) lines.push(`${d.declared ? 'declared' : 'DIFFERENT'} ${d.field}: ${names[0]} ${d.a} / ${names[1]} ${d.b}${d.declared ? ` (${d.declared})` : ''}`);
  if (c.differences.length > 60) lines.push(`... ${c.differences.length - 60} more`);
  return lines.join('\n');
}

/** A container-level item (RAM block, section) one stream has and the other has not, or differs in. */
export interface DeclaredStreamDifference {
  item: RegExp;
  reason: string;
}

/**
 * Container-level differences allowed between a QEMU stream and ours.
 *  - Section ids are the writer's registration counters; the loader maps them per stream
 *    (spec §5.2), so only their uniqueness matters.
 *  - RAM blocks other than the machine's main RAM are firmware QEMU builds (ACPI tables, the
 *    table loader, RSDP, option ROM space, the BIOS image) that virtio-ts does not model; a QEMU
 *    destination keeps its own for blocks a stream does not list.
 *  - Sections of devices virtio-ts does not model (CPU, timers, interrupt controllers, chipset
 *    functions, legacy ISA devices, ACPI, the global run state): QEMU's loader accepts a stream
 *    without them and leaves those devices in their reset state (spec §5.4, measured on 7.2.22).
 *    Consequence: PIIX3's PIRQ routing and the I/O APIC's redirection table are only carried
 *    when ours writes those sections; the scenarios read the PIRQ routing back (piix3.pirq).
 * RAM page contents are not compared: the rng fills guest buffers with random bytes, and the ROM
 * blocks are QEMU's own. Guest RAM is compared through the guest instead: each scenario reads it
 * on the source and again on the destination.
 */
export const DECLARED_STREAM_DIFFERENCES: readonly DeclaredStreamDifference[] = [
  { item: /^section id of /, reason: 'registration counters of the writer; mapped per stream by the loader' },
  { item: /^ram block (\/rom@etc\/acpi\/tables|\/rom@etc\/table-loader|\/rom@etc\/acpi\/rsdp|pc\.rom|pc\.bios|microvm\.bios|\/rom@.*) only in qemu$/, reason: 'firmware and ACPI blobs QEMU builds; virtio-ts does not model them' },
  {
    item: /^section (timer|cpu_common|cpu|kvm-tpr-opt|apic|fw_cfg|PCIHost|PCIBUS|0000:00:00\.0\/I440FX|dma|0000:00:01\.0\/PIIX3|i8259|ioapic|hpet|mc146818rtc|i8254|pcspk|fdc|ps2kbd|ps2mouse|pckbd|vmmouse|port92|0000:00:01\.1\/ide|i2c_bus|0000:00:01\.3\/piix4_pm|acpi_build|globalstate|acpi-ged|x86-iommu|.*ioapic.*)#\d+ v\d+ only in qemu$/,
    reason: 'device virtio-ts does not model; a QEMU destination keeps it in its reset state',
  },
];

export interface StreamComparison {
  /** Every difference found, declared or not. */
  differences: { item: string; declared?: string }[];
  undeclared: string[];
  blob: BlobComparison | undefined;
  /** The virtio sections compared. */
  sections: { a: InspectedSection | undefined; b: InspectedSection | undefined };
}

/** A stream read for comparison: parsed, its virtio blobs decoded with every entry listed. */
export function readStream(bytes: Uint8Array): InspectReport {
  return inspectStream(bytes, { allEntries: true });
}

/** The body of a section (between its header and its footer). */
export function sectionBody(bytes: Uint8Array, s: InspectedSection): Uint8Array {
  return bytes.subarray(s.bodyOffset, s.bodyOffset + s.bodyLength);
}

/** The virtio device's section of a stream read by `readStream` (decoded or not), if any. */
function virtioSection(r: InspectReport): InspectedSection | undefined {
  return r.sections.find((s) => s.virtio !== undefined || s.virtioError !== undefined);
}

/**
 * The leaf field at `path` of the virtio blob in `stream` (offsets are stream offsets), for
 * tests that corrupt one field of a stream.
 */
export function virtioField(stream: Uint8Array, path: string): DecodedLeaf {
  const s = virtioSection(readStream(stream));
  if (!s?.virtio) throw new Error(`no decoded virtio section in the stream${s?.virtioError ? `: ${s.virtioError}` : ''}`);
  const leaf = leafFields(s.virtio.fields).find((l) => l.path === path);
  if (!leaf) throw new Error(`the virtio blob of ${s.idstr} has no field '${path}'`);
  return leaf;
}

const sectionKey = (s: InspectedSection): string => `${s.idstr}#${s.instanceId} v${s.versionId}`;

/**
 * Compare stream `a` (QEMU's, the reference) with `b` for the same scripted state. Each blob is
 * decoded as its section's name says (transport, device type), as the inspector does.
 */
export function compareStreams(a: Uint8Array, b: Uint8Array, names: [string, string] = ['qemu', 'ours']): StreamComparison {
  const diffs: { item: string; declared?: string }[] = [];
  const [na, nb] = names;
  const read = (bytes: Uint8Array, name: string): InspectReport | undefined => {
    try {
      return readStream(bytes);
    } catch (e) {
      if (!(e instanceof MigrationError)) throw e;
      diffs.push({ item: `${name} stream could not be walked: ${e.message}` });
      return undefined;
    }
  };
  const pa = read(a, na);
  const pb = read(b, nb);
  if (!pa || !pb) return { differences: diffs, undeclared: diffs.map((d) => d.item), blob: undefined, sections: { a: undefined, b: undefined } };

  const machineA = pa.stream.configuration.machineType;
  const machineB = pb.stream.configuration.machineType;
  if (machineA !== machineB) diffs.push({ item: `machine type ${machineA} / ${machineB}` });
  const blocksA = new Map((pa.stream.ram?.blocks ?? []).map((x) => [x.idstr, x.length]));
  const blocksB = new Map((pb.stream.ram?.blocks ?? []).map((x) => [x.idstr, x.length]));
  for (const [n, size] of blocksA) {
    const other = blocksB.get(n);
    if (other === undefined) diffs.push({ item: `ram block ${n} only in ${na}` });
    else if (other !== size) diffs.push({ item: `ram block ${n} size ${size} / ${other}` });
  }
  for (const n of blocksB.keys()) if (!blocksA.has(n)) diffs.push({ item: `ram block ${n} only in ${nb}` });
  const fullA = pa.sections.filter((s) => s.kind === 'full');
  const fullB = pb.sections.filter((s) => s.kind === 'full');
  const keysA = new Set(fullA.map(sectionKey));
  const keysB = new Set(fullB.map(sectionKey));
  for (const s of fullA) if (!keysB.has(sectionKey(s))) diffs.push({ item: `section ${sectionKey(s)} only in ${na}` });
  for (const s of fullB) if (!keysA.has(sectionKey(s))) diffs.push({ item: `section ${sectionKey(s)} only in ${nb}` });
  for (const s of fullA) {
    const o = fullB.find((x) => sectionKey(x) === sectionKey(s));
    if (o && o.sectionId !== s.sectionId) diffs.push({ item: `section id of ${sectionKey(s)}: ${s.sectionId} / ${o.sectionId}` });
  }

  const va = virtioSection(pa);
  const vb = virtioSection(pb);
  let blob: BlobComparison | undefined;
  if (!va || !vb) {
    diffs.push({ item: `virtio device section missing in ${!va ? na : nb}` });
  } else if (!va.virtio || !vb.virtio) {
    for (const [s, n] of [[va, na], [vb, nb]] as const) if (s.virtioError) diffs.push({ item: `${n} virtio blob of ${s.idstr} not decoded: ${s.virtioError}` });
  } else {
    blob = compareBlobs(
      { bytes: a, offset: va.bodyOffset, length: va.bodyLength, virtio: va.virtio },
      { bytes: b, offset: vb.bodyOffset, length: vb.bodyLength, virtio: vb.virtio },
      DECLARED_BLOB_DIFFERENCES,
    );
    for (const d of blob.differences) diffs.push({ item: `blob ${d.field}: ${d.a} / ${d.b}`, ...(d.declared ? { declared: d.declared } : {}) });
    if (!blob.sameLayout) diffs.push({ item: `blob layout: ${formatBlobComparison(blob, names).split('\n')[0]}` });
  }
  for (const d of diffs) {
    if (d.declared) continue;
    const hit = DECLARED_STREAM_DIFFERENCES.find((x) => x.item.test(d.item));
    if (hit) d.declared = hit.reason;
  }
  return { differences: diffs, undeclared: diffs.filter((d) => !d.declared).map((d) => d.item), blob, sections: { a: va, b: vb } };
}

export function formatStreamComparison(c: StreamComparison): string {
  return c.differences.map((d) => `${d.declared ? 'declared ' : 'DIFFERENT'} ${d.item}${d.declared ? ` (${d.declared})` : ''}`).join('\n');
}
