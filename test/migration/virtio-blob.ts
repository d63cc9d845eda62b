// Test-only decoder of the virtio blob of a device section (QEMU 7.2 `virtio_save`,
// spec/qemu-virtio-migration.md §1): it cuts the blob into named fields (`status`, `isr`,
// `pci.config[0x04]`, `vq[0].last_avail_idx`, `virtio/extra_state: vqs[3].num`, ...) so that
// two blobs can be compared byte by byte and every difference named, and so that tests can find
// a field to corrupt. It is not virtio_load: it checks nothing beyond the layout, and knows the
// device-specific parts of virtio-rng (none) and virtio-console (the ports, spec §4).

export interface Span {
  name: string;
  offset: number;
  len: number;
}

export type Transport = 'pci' | 'mmio';

export interface DecodedBlob {
  spans: Span[];
  /** Subsection names in stream order (nested ones as `outer > inner`). */
  subsections: string[];
  /** Bytes decoded (must equal the blob length). */
  length: number;
  msixVectors: number;
}

export class BlobError extends Error {
  override name = 'BlobError';
}

const PCI_CONFIG_NAMES: Record<number, string> = {
  0x00: 'vendor/device',
  0x04: 'command/status',
  0x08: 'revision/class',
  0x0c: 'cacheline/latency/header/bist',
  0x10: 'BAR0',
  0x14: 'BAR1',
  0x18: 'BAR2',
  0x1c: 'BAR3',
  0x20: 'BAR4',
  0x24: 'BAR5',
  0x2c: 'subsystem',
  0x30: 'rom',
  0x34: 'capabilities',
  0x3c: 'interrupt line/pin',
};

class Reader {
  readonly spans: Span[] = [];
  off = 0;
  constructor(readonly b: Uint8Array) {}
  take(name: string, len: number): number {
    if (this.off + len > this.b.length) throw new BlobError(`${name}: ${len} bytes needed at 0x${this.off.toString(16)}, blob has ${this.b.length}`);
    this.spans.push({ name, offset: this.off, len });
    const at = this.off;
    this.off += len;
    return at;
  }
  u8(name: string): number {
    return this.b[this.take(name, 1)]!;
  }
  be16(name: string): number {
    const at = this.take(name, 2);
    return (this.b[at]! << 8) | this.b[at + 1]!;
  }
  be32(name: string): number {
    const at = this.take(name, 4);
    return ((this.b[at]! << 24) | (this.b[at + 1]! << 16) | (this.b[at + 2]! << 8) | this.b[at + 3]!) >>> 0;
  }
  peek(): number | undefined {
    return this.b[this.off];
  }
  peekName(): string | undefined {
    if (this.b[this.off] !== 0x05) return undefined;
    const n = this.b[this.off + 1];
    if (n === undefined || this.off + 2 + n > this.b.length) return undefined;
    return new TextDecoder().decode(this.b.subarray(this.off + 2, this.off + 2 + n));
  }
  subsectionHeader(): string {
    const name = this.peekName();
    if (name === undefined) throw new BlobError(`subsection header expected at 0x${this.off.toString(16)}`);
    this.take(`subsection header ${name}`, 2 + name.length);
    this.be32(`subsection version ${name}`);
    return name;
  }
}

/** MSI-X table size from a saved 256-byte config space (0 when there is no MSI-X capability). */
export function msixVectorsFromConfig(cfg: Uint8Array): number {
  if (!(cfg[0x06]! & 0x10)) return 0;
  let p = cfg[0x34]! & 0xfc;
  for (let n = 0; p !== 0 && n < 48; n++) {
    if (cfg[p] === 0x11) return ((cfg[p + 2]! | (cfg[p + 3]! << 8)) & 0x7ff) + 1;
    p = cfg[p + 1]! & 0xfc;
  }
  return 0;
}

/** The 1024 entries (VIRTIO_QUEUE_MAX) of a per-queue subsection array. */
function queueArray(entry: (i: number) => void): void {
  for (let i = 0; i < 1024; i++) entry(i);
}

/** The device's own state after the queues: a fixed size, or a device whose layout is known. */
export type DeviceState = number | { kind: 'virtio-console'; maxPorts?: number };

/** sizeof(VirtQueueElementOld) on x86-64, as virtio-serial writes a popped element. */
const ELEMENT_OLD_SIZE = 16 + 8 * 1024 * 2 + 16 * 1024 * 2;

/** virtio_serial_save_device: config, ports map, then each port (spec §4). */
function consoleState(r: Reader, maxPorts: number): void {
  r.be16('console.config.cols');
  r.be16('console.config.rows');
  r.be32('console.config.max_nr_ports');
  for (let i = 0; i < Math.ceil(maxPorts / 32); i++) r.be32(`console.ports_map[${i}]`);
  const n = r.be32('console.nr_active_ports');
  if (n > 512) throw new BlobError(`nr_active_ports ${n}`);
  for (let i = 0; i < n; i++) {
    const id = r.be32(`console.port[${i}].id`);
    const p = `console.port ${id}`;
    r.u8(`${p}.guest_connected`);
    r.u8(`${p}.host_connected`);
    if (r.be32(`${p}.elem_popped`)) {
      r.be32(`${p}.iov_idx`);
      r.take(`${p}.iov_offset`, 8);
      r.take(`${p}.elem`, ELEMENT_OLD_SIZE);
    }
  }
}

/**
 * Decode `blob` (the body of a virtio device section) written over `transport`. `device` is the
 * device's own state after the queues: its size (0 for virtio-rng) or its kind.
 */
export function decodeVirtioBlob(blob: Uint8Array, transport: Transport, device: DeviceState = 0): DecodedBlob {
  const r = new Reader(blob);
  let msixVectors = 0;
  if (transport === 'pci') {
    r.be32('pci.version_id');
    const cfgAt = r.off;
    for (let o = 0; o < 256; o += 4) r.take(`pci.config[0x${o.toString(16).padStart(2, '0')}]${PCI_CONFIG_NAMES[o] ? ` ${PCI_CONFIG_NAMES[o]}` : ''}`, 4);
    msixVectors = msixVectorsFromConfig(blob.subarray(cfgAt, cfgAt + 256));
    for (let i = 0; i < 4; i++) r.be32(`pci.irq_state[${i}]`);
    if (msixVectors > 0) {
      for (let i = 0; i < msixVectors; i++) for (const f of ['addr_lo', 'addr_hi', 'data', 'ctrl']) r.take(`msix.table[${i}].${f}`, 4);
      r.take('msix.pba', Math.ceil(msixVectors / 8));
      r.be16('msix.config_vector');
    }
  } else {
    r.be32('mmio.host_features_sel');
    r.be32('mmio.guest_features_sel');
    r.be32('mmio.guest_page_shift');
  }
  r.u8('status');
  r.u8('isr');
  r.be16('queue_sel');
  r.be32('guest_features[31:0]');
  const configLen = r.be32('config_len');
  if (configLen > 0x10000) throw new BlobError(`config_len ${configLen}`);
  if (configLen) r.take('config', configLen);
  const n = r.be32('num_queues');
  if (n > 1024) throw new BlobError(`num_queues ${n}`);
  for (let i = 0; i < n; i++) {
    r.be32(`vq[${i}].num`);
    if (transport === 'mmio') r.be32(`vq[${i}].align`);
    r.take(`vq[${i}].desc`, 8);
    r.be16(`vq[${i}].last_avail_idx`);
    if (transport === 'pci' && msixVectors > 0) r.be16(`vq[${i}].vector`);
  }
  if (typeof device === 'number') {
    if (device) r.take('device state', device);
  } else {
    consoleState(r, device.maxPorts ?? 31);
  }
  const subsections: string[] = [];
  while (r.peek() === 0x05) {
    const name = r.subsectionHeader();
    subsections.push(name);
    const p = `${name}: `;
    switch (name) {
      case 'virtio/device_endian':
        r.u8(`${p}device_endian`);
        break;
      case 'virtio/64bit_features':
        r.take(`${p}guest_features`, 8);
        break;
      case 'virtio/virtqueues':
        queueArray((i) => {
          r.take(`${p}vqs[${i}].avail`, 8);
          r.take(`${p}vqs[${i}].used`, 8);
        });
        break;
      case 'virtio/ringsize':
        queueArray((i) => r.be32(`${p}vqs[${i}].num_default`));
        break;
      case 'virtio/broken':
        r.u8(`${p}broken`);
        break;
      case 'virtio/started':
        r.u8(`${p}started`);
        break;
      case 'virtio/disabled':
        r.u8(`${p}disabled`);
        break;
      case 'virtio/packed_virtqueues':
        queueArray((i) => r.take(`${p}vqs[${i}]`, 10));
        break;
      case 'virtio/extra_state': {
        // Its only content is the transport's vmsd, whose fields are empty: just its own
        // subsection, when needed (a legacy-only virtio-pci device has none).
        const inner = r.peekName();
        if (inner === 'virtio_pci/modern_state') {
          r.subsectionHeader();
          subsections.push(`${name} > ${inner}`);
          const q = `${inner}: `;
          r.be32(`${q}dfselect`);
          r.be32(`${q}gfselect`);
          r.be32(`${q}guest_features[0]`);
          r.be32(`${q}guest_features[1]`);
          queueArray((i) => {
            r.be16(`${q}vqs[${i}].num`);
            r.u8(`${q}vqs[${i}].unused`);
            r.u8(`${q}vqs[${i}].enabled`);
            for (const f of ['desc', 'avail', 'used']) for (const h of [0, 1]) r.be32(`${q}vqs[${i}].${f}[${h}]`);
          });
        } else if (inner === 'virtio_mmio/state') {
          r.subsectionHeader();
          subsections.push(`${name} > ${inner}`);
          const q = `${inner}: `;
          r.be32(`${q}guest_features[0]`);
          r.be32(`${q}guest_features[1]`);
          queueArray((i) => {
            r.be16(`${q}vqs[${i}].num`);
            r.u8(`${q}vqs[${i}].enabled`);
            for (const f of ['desc', 'avail', 'used']) for (const h of [0, 1]) r.be32(`${q}vqs[${i}].${f}[${h}]`);
          });
        }
        break;
      }
      default:
        throw new BlobError(`unknown subsection ${name}`);
    }
  }
  if (r.off !== blob.length) throw new BlobError(`decoded ${r.off} of ${blob.length} bytes (next byte 0x${(blob[r.off] ?? 0).toString(16)})`);
  return { spans: r.spans, subsections, length: r.off, msixVectors };
}

/** The span called `name` (exact), or throws. */
export function span(d: DecodedBlob, name: string): Span {
  const s = d.spans.find((x) => x.name === name);
  if (!s) throw new BlobError(`no field ${name}`);
  return s;
}

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** A field that may differ between the two blobs, and why. */
export interface DeclaredBlobDifference {
  /** Matched against field names. */
  field: RegExp;
  reason: string;
}

export interface BlobDifference {
  field: string;
  a: string;
  b: string;
  declared?: string;
}

export interface BlobComparison {
  /** Same length, same fields in the same order (same subsections). */
  sameLayout: boolean;
  layout?: { a: string[]; b: string[] };
  differences: BlobDifference[];
  /** Undeclared differences (what fails a comparison). */
  undeclared: BlobDifference[];
}

/**
 * Compare two blobs field by field. When their layouts differ (a subsection only one has, a
 * different MSI-X table size), that is reported and the common prefix of fields is compared.
 */
export function compareBlobs(a: Uint8Array, b: Uint8Array, transport: Transport, declared: readonly DeclaredBlobDifference[] = [], device: DeviceState = 0): BlobComparison {
  const da = decodeVirtioBlob(a, transport, device);
  const db = decodeVirtioBlob(b, transport, device);
  const sameLayout = da.spans.length === db.spans.length && da.spans.every((s, i) => s.name === db.spans[i]!.name && s.len === db.spans[i]!.len);
  const differences: BlobDifference[] = [];
  const bByName = new Map(db.spans.map((s) => [s.name, s]));
  for (const sa of da.spans) {
    const sb = bByName.get(sa.name);
    const va = a.subarray(sa.offset, sa.offset + sa.len);
    if (!sb) {
      differences.push({ field: sa.name, a: hex(va), b: '(absent)' });
      continue;
    }
    const vb = b.subarray(sb.offset, sb.offset + sb.len);
    if (sa.len !== sb.len || hex(va) !== hex(vb)) differences.push({ field: sa.name, a: hex(va), b: hex(vb) });
  }
  const aNames = new Set(da.spans.map((s) => s.name));
  for (const sb of db.spans) if (!aNames.has(sb.name)) differences.push({ field: sb.name, a: '(absent)', b: hex(b.subarray(sb.offset, sb.offset + sb.len)) });
  for (const d of differences) {
    const hit = declared.find((x) => x.field.test(d.field));
    if (hit) d.declared = hit.reason;
  }
  return {
    sameLayout,
    ...(sameLayout ? {} : { layout: { a: da.subsections, b: db.subsections } }),
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
