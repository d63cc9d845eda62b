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
  /** A device part this decoder knows field by field (the vmsd name of the device type). */
  deviceVmsd?: 'virtio-balloon' | 'virtio-net';
  /**
   * List every element, not only what is in use: all VIRTIO_QUEUE_MAX entries of the per-queue
   * arrays (`virtio/virtqueues`, `virtio/ringsize`, `virtio/packed_virtqueues`, the transports'
   * queue state) and the PCI configuration space dword by dword. The leaves of the tree then
   * cover every byte of the blob exactly once (`leafFields`), which is what a byte-for-byte
   * comparison needs: any difference lands in a named field. Off (the default, for a person
   * reading): the entries that are all zero are left out and the configuration space is one field.
   */
  allEntries?: boolean;
  /**
   * A device part this decoder knows field by field: virtio-serial's "virtio-console", virtio-blk's
   * request list.
   */
  deviceState?: 'virtio-console' | 'virtio-blk';
}

/** Device types whose QEMU vmsd writes nothing beyond the common virtio blob. */
const NO_DEVICE_STATE = new Set(['virtio-rng', 'virtio-input']);

/**
 * How to decode the blob of the section `idstr` from what its name tells: the transport
 * (`virtio-mmio@<base>/...` on microvm, a PCI address otherwise) and whether the device type
 * writes state of its own.
 */
export function decodeOptionsFor(idstr: string): DecodeOptions {
  const vmsd = idstr.slice(idstr.lastIndexOf('/') + 1);
  return {
    transport: idstr.includes('virtio-mmio@') ? 'mmio' : 'pci',
    emptyDeviceState: NO_DEVICE_STATE.has(vmsd),
    ...(vmsd === 'virtio-console' ? { deviceState: 'virtio-console' as const } : {}),
    ...(vmsd === 'virtio-blk' ? { deviceState: 'virtio-blk' as const } : {}),
    ...(vmsd === 'virtio-balloon' ? { deviceVmsd: 'virtio-balloon' as const } : {}),
    ...(vmsd === 'virtio-net' ? { deviceVmsd: 'virtio-net' as const } : {}),
  };
}

/** sizeof(VirtQueueElementOld) on x86-64 (src/migration/virtqueue-element.ts). */
const ELEMENT_OLD_SIZE = 16 + 2 * 8 * 1024 + 2 * 16 * 1024;

/**
 * virtio-serial's device part (QEMU's `virtio_serial_save_device`): config, ports map (its length
 * follows max_nr_ports, which the config carries), then each port with its popped element.
 */
function consoleState(r: FieldReader, packed: boolean): void {
  r.group('virtio-console', () => {
    r.be16('config.cols');
    r.be16('config.rows');
    let max = r.be32('config.max_nr_ports');
    // The value is guest-swapped: a big-endian legacy guest's 31 reads 0x1f000000 here.
    if (max > 511) max = (((max & 0xff) << 24) | ((max & 0xff00) << 8) | ((max >>> 8) & 0xff00) | (max >>> 24)) >>> 0;
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
        elementOld(r, packed);
      });
    }
  });
}

/**
 * A VirtQueueElementOld: its head and counts (little-endian, host layout), then the rest as bytes,
 * so the fields still cover every byte once. The group's value sums them up.
 */
function elementOld(r: FieldReader, packed: boolean): void {
  // With packed rings offered the element's ndescs comes first (as both QEMU and we save it).
  if (packed) r.be32('ndescs');
  const [head, outNum, inNum] = r.group('element (VirtQueueElementOld)', () => {
    const v = [r.le32('index'), r.le32('out_num'), r.le32('in_num')] as const;
    r.bytes('addresses and lengths', ELEMENT_OLD_SIZE - 12);
    return v;
  });
  r.describeLast(`head ${head}, out_num ${outNum}, in_num ${inNum}`);
}

/**
 * virtio-blk's device part (QEMU's `virtio_blk_save_device`): for each request in flight u8 1, a
 * be32 queue index when the device has several queues (`numQueues`: those the blob gives a ring
 * size), and the request's VirtQueueElementOld; then u8 0.
 */
function blkRequestList(r: FieldReader, numQueues: number, packed: boolean): void {
  r.group('virtio-blk request list', () => {
    for (let k = 0; ; k++) {
      if (r.u8('more') === 0) break;
      r.group(`rq[${k}]`, () => {
        if (numQueues > 1) r.be32('vq index');
        elementOld(r, packed);
      });
    }
  });
}

/** The subsection header `virtio/packed_virtqueues` (QEMU_VM_SUBSECTION, name length, name). */
const PACKED_SUBSECTION = new Uint8Array([0x05, 24, ...Array.from('virtio/packed_virtqueues', (c) => c.charCodeAt(0))]);

/**
 * Whether the device offers packed rings, which decides the element format of its device part.
 * The blob says so only later, by carrying `virtio/packed_virtqueues` (needed exactly when the
 * device offers them), so the subsection header is looked for in the bytes after the device part.
 */
function packedOffered(f: QEMUFileReader): boolean {
  const rest = f.peekBytes(0, f.remaining);
  outer: for (let i = 0; i + PACKED_SUBSECTION.length <= rest.length; i++) {
    for (let k = 0; k < PACKED_SUBSECTION.length; k++) if (rest[i + k] !== PACKED_SUBSECTION[k]) continue outer;
    return true;
  }
  return false;
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

/** A reader that records what it reads. */
class FieldReader {
  readonly fields: DecodedField[] = [];
  private stack: DecodedField[][] = [];
  constructor(readonly f: QEMUFileReader, readonly base: number, readonly allEntries = false) {}

  private get out(): DecodedField[] {
    return this.stack.length ? this.stack[this.stack.length - 1]! : this.fields;
  }
  private add(name: string, at: number, value?: DecodedField['value']): void {
    this.out.push({ name, offset: this.base + at, size: this.f.offset - at, ...(value !== undefined ? { value } : {}) });
  }
  /** Read one value with `get` and record it as the field `name`. */
  private read<T extends number | bigint | boolean | string>(name: string, get: () => T): T {
    const at = this.f.offset;
    const v = get();
    this.add(name, at, v);
    return v;
  }
  u8(name: string): number {
    return this.read(name, () => this.f.getByte(name));
  }
  be16(name: string): number {
    return this.read(name, () => this.f.getBe16(name));
  }
  be32(name: string): number {
    return this.read(name, () => this.f.getBe32(name));
  }
  be64(name: string): bigint {
    return this.read(name, () => this.f.getBe64(name));
  }
  /** A little-endian dword: PCI configuration space and the MSI-X table are saved as the guest sees them. */
  le32(name: string): number {
    return this.read(name, () => {
      const b = this.f.getView(4, name);
      return (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
    });
  }
  bool(name: string): boolean {
    return this.read(name, () => this.f.getByte(name) !== 0);
  }
  /** `n` bytes shown as text (names in headers). */
  text(name: string, n: number): string {
    return this.read(name, () => latin1(this.f.getView(n, name)));
  }
  bytes(name: string, n: number): Uint8Array {
    const at = this.f.offset;
    const v = this.f.getView(n, name);
    this.add(name, at, hex(v));
    return v;
  }
  /** Give the field last recorded at this level a value (a group's summary of its children). */
  describeLast(value: DecodedField['value']): void {
    const last = this.out[this.out.length - 1];
    if (last) last.value = value;
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
  /**
   * One of the VIRTIO_QUEUE_MAX-entry arrays of the subsections, `size` bytes an entry, each read
   * by `entry` as the group `vq[i]`. With `allEntries` every entry is listed; otherwise they are
   * grouped under `label` and an entry whose bytes are all zero is stepped over unlisted.
   */
  queueArray(label: string, size: number, entry: (i: number) => void): void {
    if (this.allEntries) {
      for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) this.group(`vq[${i}]`, () => entry(i));
      return;
    }
    this.group(`${label} (${size} bytes each; the entries not all zero listed)`, () => {
      for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
        if (this.f.peekBytes(0, size).some((b) => b !== 0)) this.group(`vq[${i}]`, () => entry(i));
        else this.f.skip(size, label);
      }
    });
  }
}

/** Names of the type 0 header's dwords, for the configuration space listed dword by dword. */
const PCI_CONFIG_DWORDS: Record<number, string> = {
  0x00: 'vendor/device', 0x04: 'command/status', 0x08: 'revision/class', 0x0c: 'cacheline/latency/header/bist',
  0x10: 'BAR0', 0x14: 'BAR1', 0x18: 'BAR2', 0x1c: 'BAR3', 0x20: 'BAR4', 0x24: 'BAR5',
  0x28: 'cardbus CIS', 0x2c: 'subsystem vendor/id', 0x30: 'expansion ROM', 0x34: 'capabilities pointer',
  0x3c: 'interrupt line/pin/min_gnt/max_lat',
};

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
  const r = new FieldReader(f, base, opts.allEntries ?? false);
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
        const size = first.length === 256 && isExpress(first) ? 4096 : 256;
        if (r.allEntries) {
          r.group('config', () => {
            for (let o = 0; o < size; o += 4) {
              const name = PCI_CONFIG_DWORDS[o];
              r.le32(`[0x${o.toString(16).padStart(2, '0')}]${name ? ` ${name}` : ''}`);
            }
          });
        } else {
          r.bytes('config', size);
        }
        vectors = msixVectors(first);
        for (let i = 0; i < 4; i++) r.be32(`irq_state[${i}]`);
      });
      if (vectors) {
        r.group('msix', () => {
          r.group('table', () => {
            for (let i = 0; i < vectors; i++) {
              r.group(`entry[${i}]`, () => {
                for (const w of ['addr_lo', 'addr_hi', 'data', 'ctrl']) r.le32(w);
              });
            }
          });
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
    consoleState(r, packedOffered(f));
    subsAt = f.offset;
  } else if (opts.deviceState === 'virtio-blk') {
    blkRequestList(r, num, packedOffered(f));
    subsAt = f.offset;
  } else if (opts.deviceVmsd === 'virtio-balloon') {
    decodeBalloonDevice(r, f);
    subsAt = f.offset;
  } else if (opts.deviceVmsd === 'virtio-net') {
    decodeNetDevice(r, f, guestFeatures);
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
          r.queueArray('vq[0..1023] avail, used', 16, (i) => {
            const avail = r.be64('avail');
            const used = r.be64('used');
            if (avail || used) out.rings.push({ index: i, avail, used });
          });
          break;
        case 'virtio/ringsize':
          r.queueArray('vq[0..1023] num_default', 4, () => r.be32('num_default'));
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
          // vmstate_packed_virtqueue
          r.queueArray('vq[0..1023] packed state', 10, () => {
            r.be16('last_avail_idx');
            r.bool('last_avail_wrap_counter');
            r.be16('used_idx');
            r.bool('used_wrap_counter');
            r.be32('inuse');
          });
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

/** A field that holds a value, with its place in the tree. */
export interface DecodedLeaf extends DecodedField {
  /** The names from the top of the tree down to this field, joined by ' > ' (e.g. `vq[0] > last_avail_idx`). */
  path: string;
}

/**
 * The leaves of a field tree in stream order (a group without children counts as a leaf). For a
 * blob decoded with `allEntries` they cover every byte of it exactly once.
 */
export function leafFields(fields: readonly DecodedField[]): DecodedLeaf[] {
  const out: DecodedLeaf[] = [];
  const walk = (list: readonly DecodedField[], prefix: string): void => {
    for (const f of list) {
      const path = prefix ? `${prefix} > ${f.name}` : f.name;
      if (f.children && f.children.length > 0) walk(f.children, path);
      else out.push({ ...f, path });
    }
  };
  walk(fields, '');
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
      // virtio_pci/modern_queue_state or virtio_mmio/queue_state per queue.
      r.queueArray('vqs[0..1023]', pci ? 28 : 27, () => {
        r.be16('num');
        if (pci) r.u8('unused');
        r.bool('enabled');
        for (const part of ['desc', 'avail', 'used']) {
          r.be32(`${part}[0]`);
          r.be32(`${part}[1]`);
        }
      });
    });
  }
}

/**
 * virtio-balloon's `virtio-balloon-device` vmsd: num_pages, actual, then its subsections
 * (free-page-report: command id and status; page-poison: poison_val), each named by its header.
 */
function decodeBalloonDevice(r: FieldReader, f: QEMUFileReader): void {
  const vmsd = 'virtio-balloon-device';
  r.group(`device (${vmsd})`, () => {
    r.be32('num_pages');
    r.be32('actual');
    deviceSubsections(r, f, vmsd, (name) => {
      if (name === `${vmsd}/free-page-report`) {
        r.be32('free_page_hint_cmd_id');
        r.be32('free_page_hint_status');
      } else if (name === `${vmsd}/page-poison`) {
        r.be32('poison_val');
      } else {
        throw f.error(name, `unknown subsection '${name}' of ${vmsd}`);
      }
    });
  });
}

/**
 * virtio-net's `virtio-net-device` vmsd (v11). Whether the multiqueue fields (max and current
 * queue pairs, then a tx_waiting per extra pair) are there depends on the device's
 * configuration, which the blob does not say: both layouts are tried, and the one after which
 * the `virtio/*` subsections run exactly to the end is taken. `curr_guest_offloads` is there when
 * the blob's low feature word has CTRL_GUEST_OFFLOADS.
 */
function decodeNetDevice(r: FieldReader, f: QEMUFileReader, lowFeatures: bigint): void {
  const vmsd = 'virtio-net-device';
  const start = f.offset;
  const offloads = (lowFeatures & 4n) !== 0n;
  const fits = (mq: boolean): boolean => {
    try {
      const probe = new QEMUFileReader(f.peekBytes(0, f.remaining));
      netDeviceFields(new FieldReader(probe, 0), probe, mq, offloads);
      const tmp: DecodedVirtio = { transport: 'pci', status: 0, isr: 0, queueSel: 0, guestFeatures: 0n, config: new Uint8Array(0), queues: [], subsections: [], rings: [], fields: [] };
      walkSubsections(new FieldReader(probe, 0), probe, tmp);
      return probe.remaining === 0;
    } catch {
      return false;
    }
  };
  const mq = !fits(false) && fits(true);
  f.seek(start);
  r.group(`device (${vmsd})`, () => netDeviceFields(r, f, mq, offloads));
}

function netDeviceFields(r: FieldReader, f: QEMUFileReader, mq: boolean, offloads: boolean): void {
  const vmsd = 'virtio-net-device';
  r.bytes('mac', 6);
  r.be32('vqs[0].tx_waiting');
  r.be32('mergeable_rx_bufs');
  r.be16('status');
  r.u8('promisc');
  r.u8('allmulti');
  const inUse = r.be32('mac_table.in_use');
  if (inUse * 6 > f.remaining) throw f.error('mac_table.macs', `mac_table.in_use ${inUse} is more than the blob holds`);
  if (inUse > 0) r.bytes('mac_table.macs', inUse * 6);
  if (r.allEntries) r.group('vlans', () => {
    for (let i = 0; i < 128; i++) r.le32(`[${i}]`);
  });
  else r.bytes('vlans', 512);
  r.be32('has_vnet_hdr');
  for (const n of ['mac_table.multi_overflow', 'mac_table.uni_overflow', 'alluni', 'nomulti', 'nouni', 'nobcast', 'has_ufo']) r.u8(n);
  let curr = 1;
  if (mq) {
    r.be16('max_queue_pairs');
    curr = r.be16('curr_queue_pairs');
  }
  for (let i = 1; i < curr; i++) r.be32(`vqs[${i}].tx_waiting`);
  if (offloads) r.be64('curr_guest_offloads');
  deviceSubsections(r, f, vmsd, (name) => {
    if (name !== `${vmsd}/rss`) throw f.error(name, `unknown subsection '${name}' of ${vmsd}`);
    r.u8('enabled');
    r.u8('redirect');
    r.u8('populate_hash');
    r.be32('hash_types');
    const len = r.be16('indirections_len');
    r.be16('default_queue');
    r.bytes('key', 40);
    for (let i = 0; i < len; i++) r.be16(`indirections_table[${i}]`);
  });
}

/**
 * The subsections of a device's own vmsd (`vmsd/...`), each as a group: its header, then `body`
 * for its fields. Stops at the first header that belongs to someone else (the `virtio/*` ones).
 */
function deviceSubsections(r: FieldReader, f: QEMUFileReader, vmsd: string, body: (name: string) => void): void {
  while (f.remaining > 2 && f.peekByte(0) === QEMU_VM_SUBSECTION) {
    const name = latin1(f.peekBytes(2, f.peekByte(1)));
    if (!name.startsWith(`${vmsd}/`)) break;
    r.group(`subsection ${name}`, () => {
      r.u8('QEMU_VM_SUBSECTION');
      r.u8('name length');
      r.text('name', name.length);
      r.be32('version_id');
      body(name);
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
