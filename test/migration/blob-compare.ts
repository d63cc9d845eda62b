// Comparing the streams two machines wrote for the same scripted state (QEMU's and ours): the
// container (machine type, RAM blocks, sections) and, byte by byte, the virtio device's section.
// Everything that may differ is declared here, with the reason; anything else is a failure.
// The one line to change to compare with the project's savevm parser instead of the test-only one.
import { readStream as readSavevm, type DeviceSection } from './stream.js';
import { compareBlobs, decodeVirtioBlob, formatBlobComparison, type BlobComparison, type DeclaredBlobDifference, type DeviceState, type Transport } from './virtio-blob.js';

/**
 * Fields of the virtio blob that may differ between QEMU 7.2 and virtio-ts. None is known: the
 * blob holds only guest-visible state (registers, PCI configuration, MSI-X table, ring indices and
 * addresses) and QEMU writes it deterministically (two QEMU runs of one script write identical
 * blobs; migration-qemu.test.ts checks that for every scenario). Add an entry here only with a
 * reason that names QEMU's behaviour and why ours cannot match it.
 */
export const DECLARED_BLOB_DIFFERENCES: readonly DeclaredBlobDifference[] = [];

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
  sections: { a: DeviceSection | undefined; b: DeviceSection | undefined };
}

const isVirtio = (idstr: string): boolean => /\/virtio-[a-z]+$/.test(idstr);

/** The device's own state by section name (virtio-serial's vmsd is "virtio-console"). */
export const deviceStateOf = (idstr: string): DeviceState => (idstr.endsWith('/virtio-console') ? { kind: 'virtio-console' } : 0);

/**
 * Compare stream `a` (QEMU's, the reference) with `b` for the same scripted state. `transport`
 * tells the blob decoder how the blob starts.
 */
export function compareStreams(a: Uint8Array, b: Uint8Array, transport: Transport, names: [string, string] = ['qemu', 'ours']): StreamComparison {
  // A section the JSON does not describe is sized by decoding it as a virtio blob.
  const bodySize = (s: { idstr: string }, bytes: Uint8Array, at: number): number | undefined => {
    if (!isVirtio(s.idstr)) return undefined;
    // The blob ends where the footer of its section starts; decode candidates up to the end.
    for (let end = at; end < bytes.length; end++) {
      if (bytes[end] !== 0x7e) continue;
      try {
        return decodeVirtioBlob(bytes.subarray(at, end), transport, deviceStateOf(s.idstr)).length;
      } catch {
        /* not the end yet */
      }
    }
    return undefined;
  };
  const pa = readSavevm(a, { bodySize });
  const pb = readSavevm(b, { bodySize });
  const diffs: { item: string; declared?: string }[] = [];
  const [na, nb] = names;
  if (pa.machineType !== pb.machineType) diffs.push({ item: `machine type ${pa.machineType} / ${pb.machineType}` });
  if (pb.stopped) diffs.push({ item: `${nb} stream could not be walked: ${pb.stopped}` });
  if (pa.stopped) diffs.push({ item: `${na} stream could not be walked: ${pa.stopped}` });
  const blocksB = new Map(pb.ramBlocks.map((x) => [x.name, x.size]));
  const blocksA = new Map(pa.ramBlocks.map((x) => [x.name, x.size]));
  for (const [n, size] of blocksA) {
    const other = blocksB.get(n);
    if (other === undefined) diffs.push({ item: `ram block ${n} only in ${na}` });
    else if (other !== size) diffs.push({ item: `ram block ${n} size ${size} / ${other}` });
  }
  for (const n of blocksB.keys()) if (!blocksA.has(n)) diffs.push({ item: `ram block ${n} only in ${nb}` });
  const key = (s: DeviceSection): string => `${s.idstr}#${s.instanceId} v${s.versionId}`;
  const keysB = new Set(pb.devices.map(key));
  const keysA = new Set(pa.devices.map(key));
  for (const s of pa.devices) if (!keysB.has(key(s))) diffs.push({ item: `section ${key(s)} only in ${na}` });
  for (const s of pb.devices) if (!keysA.has(key(s))) diffs.push({ item: `section ${key(s)} only in ${nb}` });
  for (const s of pa.devices) {
    const o = pb.devices.find((x) => key(x) === key(s));
    if (o && o.sectionId !== s.sectionId) diffs.push({ item: `section id of ${key(s)}: ${s.sectionId} / ${o.sectionId}` });
  }
  const va = pa.devices.find((d) => isVirtio(d.idstr));
  const vb = pb.devices.find((d) => isVirtio(d.idstr));
  let blob: BlobComparison | undefined;
  if (!va || !vb) {
    diffs.push({ item: `virtio device section missing in ${!va ? na : nb}` });
  } else {
    blob = compareBlobs(va.body, vb.body, transport, DECLARED_BLOB_DIFFERENCES, deviceStateOf(va.idstr));
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
