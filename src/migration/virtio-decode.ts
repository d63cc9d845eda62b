/**
 * Read a virtio device's migration blob without a device to load it into: every field with its
 * offset, for the inspector and for people learning the format. It follows the same layout as
 * `virtio.ts` (spec/qemu-virtio-migration.md §1) and needs only what a stream itself tells: the
 * transport (from the section's path) and, for PCI, the MSI-X table size, which it reads from
 * the capability in the saved configuration space.
 *
 * Device types whose own state it does not know are still walked: the `virtio/*` subsections
 * are found after the device part by their headers, and the device part is shown as bytes.
 */
import { VIRTIO_QUEUE_MAX } from '../vring/constants.js';
import { latin1, MigrationError, QEMUFileReader } from './qemu-file.js';
import { QEMU_VM_SUBSECTION } from './vmstate.js';

/** One decoded field: where it is, how long, what it holds. */
export interface DecodedField {
  name: string;
  offset: number;
  size: number;
  /** Numbers as numbers, 64-bit values as bigint, byte strings as lowercase hex. */
  value?: number | bigint | boolean | string;
  children?: DecodedField[];
}

export interface DecodedQueue {
  index: number;
  num: number;
  align?: number;
  desc: bigint;
  lastAvailIdx: number;
  vector?: number;
}

export interface DecodedVirtio {
  transport: 'pci' | 'mmio';
  status: number;
  isr: number;
  queueSel: number;
  /** The full feature word once the subsections are applied (64 bits when `virtio/64bit_features` is there). */
  guestFeatures: bigint;
  config: Uint8Array;
  queues: DecodedQueue[];
  subsections: { name: string; version: number; offset: number }[];
  /** Ring addresses from `virtio/virtqueues`, for the queues that have them. */
  rings: { index: number; avail: bigint; used: bigint }[];
  deviceEndian?: number;
  broken?: boolean;
  started?: boolean;
  disabled?: boolean;
  /** Bytes of device-type state between the queues and the subsections, when not decoded. */
  deviceState?: { offset: number; size: number };
  /** Everything, in stream order. */
  fields: DecodedField[];
}

export interface DecodeOptions {
  transport: 'pci' | 'mmio';
  /** Device types whose device part is empty (QEMU's rng and input write only the common blob). */
  emptyDeviceState?: boolean;
  /** A device part this decoder knows field by field (virtio-serial's "virtio-console"). */
  deviceState?: 'virtio-console';
}

/** sizeof(VirtQueueElementOld) on x86-64 (src/migration/virtqueue-element.ts). */
const ELEMENT_OLD_SIZE = 16 + 2 * 8 * 1024 + 2 * 16 * 1024;

/**
 * virtio-serial's device part (QEMU's `virtio_serial_save_device`): config, ports map (its length
 * follows max_nr_ports, which the config carries), then each port with its popped element.
 */
function consoleState(r: FieldReader): void {
  r.group('virtio-console', () => {
    r.be16('config.cols');
    r.be16('config.rows');
    let max = r.be32('config.max_nr_ports');
    // The value is guest-swapped: a big-endian legacy guest's 31 reads 0x1f000000 here.
    if (max > 511) max = ((max & 0xff) << 24 | (max & 0xff00) << 8 | (max >>> 8 & 0xff00) | max >>> 24) >>> 0;
    if (max === 0 || max > 511) throw r.f.error('virtio-console config.max_nr_ports', `max_nr_ports ${max} is not 1..511`);
    for (let i = 0; i < Math.ceil(max / 32); i++) r.be32(`ports_map[${i}]`);
    const n = r.be32('nr_active_ports');
    if (n > max) throw r.f.error('virtio-console nr_active_ports', `${n} active ports with max_nr_ports ${max}`);
    for (let i = 0; i < n; i++) {
      r.group(`port[${i}]`, () => {
        r.be32('id');
        r.u8('guest_connected');
        r.u8('host_connected');
        if (r.be32('elem_popped') === 0) return;
        r.be32('iov_idx');
        r.be64('iov_offset');
        r.group('element (VirtQueueElementOld)', () => {
          const at = r.f.offset;
          const el = r.f.getView(ELEMENT_OLD_SIZE, 'virtio-console element');
          const v = new DataView(el.buffer, el.byteOffset, el.byteLength);
          r.note('index', at, 4, v.getUint32(0, true));
          r.note('out_num', at + 4, 4, v.getUint32(4, true));
          r.note('in_num', at + 8, 4, v.getUint32(8, true));
        });
      });
    }
  });
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** A reader that records what it reads. */
class FieldReader {
  readonly fields: DecodedField[] = [];
  private stack: DecodedField[][] = [];
  constructor(readonly f: QEMUFileReader, readonly base: number) {}

  private get out(): DecodedField[] {
    return this.stack.length ? this.stack[this.stack.length - 1]! : this.fields;
  }
  private add(name: string, at: number, value?: DecodedField['value']): void {
    this.out.push({ name, offset: this.base + at, size: this.f.offset - at, ...(value !== undefined ? { value } : {}) });
  }
  u8(name: string): number {
    const at = this.f.offset;
    const v = this.f.getByte(name);
    this.add(name, at, v);
    return v;
  }
  be16(name: string): number {
    const at = this.f.offset;
    const v = this.f.getBe16(name);
    this.add(name, at, v);
    return v;
  }
  be32(name: string): number {
    const at = this.f.offset;
    const v = this.f.getBe32(name);
    this.add(name, at, v);
    return v;
  }
  be64(name: string): bigint {
    const at = this.f.offset;
    const v = this.f.getBe64(name);
    this.add(name, at, v);
    return v;
  }
  bool(name: string): boolean {
    const at = this.f.offset;
    const v = this.f.getByte(name) !== 0;
    this.add(name, at, v);
    return v;
  }
  /** `n` bytes shown as text (names in headers). */
  text(name: string, n: number): string {
    const at = this.f.offset;
    const v = latin1(this.f.getView(n, name));
    this.add(name, at, v);
    return v;
  }
  bytes(name: string, n: number): Uint8Array {
    const at = this.f.offset;
    const v = this.f.getView(n, name);
    this.add(name, at, hex(v));
    return v;
  }
  /** A field already read (inside a raw block), recorded at its own offset. */
  note(name: string, at: number, size: number, value: DecodedField['value']): void {
    this.out.push({ name, offset: this.base + at, size, value });
  }
  /** A run of fields grouped under one name. */
  group<T>(name: string, fn: () => T): T {
    const at = this.f.offset;
    const node: DecodedField = { name, offset: this.base + at, size: 0, children: [] };
    this.out.push(node);
    this.stack.push(node.children!);
    try {
      return fn();
    } finally {
      this.stack.pop();
      node.size = this.f.offset - at;
    }
  }
}

/** The MSI-X table size from a saved configuration space (0 without the capability). */
function msixVectors(config: Uint8Array): number {
  let p = config[0x34]! & 0xfc;
  for (let n = 0; p && n < 48; n++) {
    if (config[p] === 0x11) return ((config[p + 2]! | (config[p + 3]! << 8)) & 0x7ff) + 1;
    p = config[p + 1]! & 0xfc;
  }
  return 0;
}

/** Whether the function has a PCI Express capability (QEMU then saves 4096 config bytes). */
function isExpress(config: Uint8Array): boolean {
  if (!(config[0x06]! & 0x10)) return false;
  let p = config[0x34]! & 0xfc;
  for (let n = 0; p && n < 48; n++) {
    if (config[p] === 0x10) return true;
    p = config[p + 1]! & 0xfc;
  }
  return false;
}

const KNOWN_SUBSECTIONS = new Set([
  'virtio/device_endian', 'virtio/64bit_features', 'virtio/virtqueues', 'virtio/ringsize', 'virtio/broken',
  'virtio/extra_state', 'virtio/started', 'virtio/packed_virtqueues', 'virtio/disabled',
]);

/**
 * Decode a blob. `base` is the blob's offset in its stream, so fields report stream offsets.
 * Throws `MigrationError` (with stream offsets) where the bytes do not fit the format.
 */
export function decodeVirtioBlob(blob: Uint8Array, opts: DecodeOptions, base = 0): DecodedVirtio {
  const f = new QEMUFileReader(blob);
  const r = new FieldReader(f, base);
  try {
    return decode(r, f, opts, base);
  } catch (e) {
    if (e instanceof MigrationError) throw new MigrationError(e.offset + base, e.field, e.message.replace(/^migration stream offset \d+ \([^)]*\): /, ''));
    throw e;
  }
}

function decode(r: FieldReader, f: QEMUFileReader, opts: DecodeOptions, base: number): DecodedVirtio {
  let vectors = 0;
  if (opts.transport === 'pci') {
    r.group('pci (virtio_pci_save_config)', () => {
      r.group('PCIDevice', () => {
        r.be32('version_id');
        const first = f.peekBytes(0, 256);
        r.bytes('config', first.length === 256 && isExpress(first) ? 4096 : 256);
        vectors = msixVectors(first);
        for (let i = 0; i < 4; i++) r.be32(`irq_state[${i}]`);
      });
      if (vectors) {
        r.group('msix', () => {
          r.bytes('table', vectors * 16);
          r.bytes('pba', Math.ceil(vectors / 8));
        });
        r.be16('config_vector');
      }
    });
  } else {
    r.group('mmio (virtio_mmio_save_config)', () => {
      r.be32('host_features_sel');
      r.be32('guest_features_sel');
      r.be32('guest_page_shift');
    });
  }
  const status = r.u8('status');
  const isr = r.u8('isr');
  const queueSel = r.be16('queue_sel');
  let guestFeatures = BigInt(r.be32('guest_features (low 32 bits)'));
  const configLen = r.be32('config_len');
  const config = r.bytes('config', configLen);
  const at = f.offset;
  const num = r.be32('num_queues');
  if (num > VIRTIO_QUEUE_MAX) throw f.error('num_queues', `Invalid number of virtqueues: 0x${num.toString(16)}`, at);
  const queues: DecodedQueue[] = [];
  for (let i = 0; i < num; i++) {
    r.group(`vq[${i}]`, () => {
      const q: DecodedQueue = { index: i, num: r.be32('num'), desc: 0n, lastAvailIdx: 0 };
      if (opts.transport === 'mmio') q.align = r.be32('align');
      q.desc = r.be64('desc');
      q.lastAvailIdx = r.be16('last_avail_idx');
      if (vectors) q.vector = r.be16('vector');
      queues.push(q);
    });
  }

  const out: DecodedVirtio = { transport: opts.transport, status, isr, queueSel, guestFeatures, config: config.slice(), queues, subsections: [], rings: [], fields: r.fields };
  // The device part: empty for the types that have none; otherwise the subsections are found by
  // their headers, trying each candidate until one leads exactly to the end of the blob.
  const devAt = f.offset;
  let subsAt = devAt;
  if (opts.deviceState === 'virtio-console') {
    consoleState(r);
    subsAt = f.offset;
  } else if (!opts.emptyDeviceState) {
    const found = findSubsections(f);
    subsAt = found;
    if (subsAt > devAt) {
      out.deviceState = { offset: base + devAt, size: subsAt - devAt };
      r.bytes('device state (not decoded)', subsAt - devAt);
    }
  }
  f.seek(subsAt);
  while (f.remaining > 0) {
    const hAt = f.offset;
    if (f.peekByte(0) !== QEMU_VM_SUBSECTION) throw f.error('virtio subsection', `expected a subsection (0x05), found 0x${f.peekByte(0).toString(16)}`, hAt);
    const name = latin1(f.peekBytes(2, f.peekByte(1)));
    if (!name.startsWith('virtio/')) throw f.error('virtio subsection', `'${name}' is not a virtio subsection`, hAt);
    r.group(`subsection ${name}`, () => {
      r.u8('QEMU_VM_SUBSECTION');
      r.u8('name length');
      r.text('name', name.length);
      const version = r.be32('version_id');
      out.subsections.push({ name, version, offset: base + hAt });
      switch (name) {
        case 'virtio/device_endian':
          out.deviceEndian = r.u8('device_endian');
          break;
        case 'virtio/64bit_features':
          guestFeatures = r.be64('guest_features');
          break;
        case 'virtio/virtqueues':
          r.group('vq[0..1023] avail, used (be64 each; the non-zero ones listed)', () => {
            for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
              const at = f.offset;
              const avail = f.getBe64('virtio/virtqueues');
              const used = f.getBe64('virtio/virtqueues');
              if (!avail && !used) continue;
              out.rings.push({ index: i, avail, used });
              f.seek(at);
              r.group(`vq[${i}]`, () => {
                r.be64('avail');
                r.be64('used');
              });
            }
          });
          break;
        case 'virtio/ringsize':
          r.bytes('num_default[1024] (be32 each)', VIRTIO_QUEUE_MAX * 4);
          break;
        case 'virtio/broken':
          out.broken = r.bool('broken');
          break;
        case 'virtio/started':
          out.started = r.bool('started');
          break;
        case 'virtio/disabled':
          out.disabled = r.bool('disabled');
          break;
        case 'virtio/packed_virtqueues':
          r.bytes('vq[1024] packed state (10 bytes each)', VIRTIO_QUEUE_MAX * 10);
          break;
        case 'virtio/extra_state':
          decodeExtraState(r, f, out);
          break;
        default:
          throw f.error('virtio subsection', `unknown subsection '${name}'`, hAt);
      }
    });
  }
  out.guestFeatures = guestFeatures;
  return out;
}

/** The transport record nested in `virtio/extra_state`: `virtio_pci/modern_state` or `virtio_mmio/state`. */
function decodeExtraState(r: FieldReader, f: QEMUFileReader, out: DecodedVirtio): void {
  while (f.peekByte(0) === QEMU_VM_SUBSECTION) {
    const name = latin1(f.peekBytes(2, f.peekByte(1)));
    if (name !== 'virtio_pci/modern_state' && name !== 'virtio_mmio/state') return;
    const hAt = f.offset;
    r.group(`subsection ${name}`, () => {
      r.u8('QEMU_VM_SUBSECTION');
      r.u8('name length');
      r.text('name', name.length);
      out.subsections.push({ name, version: r.be32('version_id'), offset: r.base + hAt });
      const pci = name === 'virtio_pci/modern_state';
      if (pci) {
        r.be32('dfselect');
        r.be32('gfselect');
      }
      r.be32('guest_features[0]');
      r.be32('guest_features[1]');
      r.group(`vqs[0..1023] (${pci ? 28 : 27} bytes each; enabled or sized ones listed)`, () => {
        for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
          const at = f.offset;
          const qnum = f.getBe16(name);
          if (pci) f.skip(1, name);
          const enabled = f.getByte(name);
          const words = [0, 1, 2, 3, 4, 5].map(() => f.getBe32(name));
          if (qnum || enabled || words.some((w) => w)) {
            f.seek(at);
            r.group(`vq[${i}]`, () => {
              r.be16('num');
              if (pci) r.u8('unused');
              r.bool('enabled');
              for (const part of ['desc', 'avail', 'used']) {
                r.be32(`${part}[0]`);
                r.be32(`${part}[1]`);
              }
            });
          }
        }
      });
    });
  }
}

/**
 * Where the `virtio/*` subsections of a blob start, searched from the current position: the
 * first 0x05 header with a known virtio name from which a chain of well-formed subsection
 * headers reaches exactly the end. The blob's end if there is none (no subsections).
 */
function findSubsections(f: QEMUFileReader): number {
  const start = f.offset;
  const buf = f.peekBytes(0, f.remaining);
  for (let p = 0; p < buf.length; p++) {
    if (buf[p] !== QEMU_VM_SUBSECTION) continue;
    const len = buf[p + 1] ?? 0;
    const name = latin1(buf.subarray(p + 2, p + 2 + len));
    if (!KNOWN_SUBSECTIONS.has(name)) continue;
    // Accept this candidate if decoding from here works to the end.
    try {
      const probe = new QEMUFileReader(buf.subarray(p));
      const pr = new FieldReader(probe, 0);
      const tmp: DecodedVirtio = { transport: 'pci', status: 0, isr: 0, queueSel: 0, guestFeatures: 0n, config: new Uint8Array(0), queues: [], subsections: [], rings: [], fields: [] };
      walkSubsections(pr, probe, tmp);
      if (probe.remaining === 0) return start + p;
    } catch {
      // not this one
    }
  }
  return start + buf.length;
}

/** Walk subsection headers and payloads without recording them (for `findSubsections`). */
function walkSubsections(r: FieldReader, f: QEMUFileReader, out: DecodedVirtio): void {
  const sizes: Record<string, number> = {
    'virtio/device_endian': 1, 'virtio/64bit_features': 8, 'virtio/virtqueues': 16384, 'virtio/ringsize': 4096,
    'virtio/broken': 1, 'virtio/started': 1, 'virtio/packed_virtqueues': 10240, 'virtio/disabled': 1,
  };
  while (f.remaining > 0) {
    if (f.peekByte(0) !== QEMU_VM_SUBSECTION) throw f.error('probe', 'not a subsection');
    f.skip(1, 'probe');
    const name = f.getName('probe');
    f.getBe32('probe');
    if (name === 'virtio/extra_state') decodeExtraState(r, f, out);
    else if (name in sizes) f.skip(sizes[name]!, 'probe');
    else throw f.error('probe', 'unknown');
  }
}
