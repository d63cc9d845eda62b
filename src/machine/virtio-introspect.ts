/**
 * QEMU 7.2's virtio introspection over QMP (hw/virtio/virtio.c `qmp_x_query_virtio*`,
 * qapi/virtio.json): `x-query-virtio`, `x-query-virtio-status`, `x-query-virtio-queue-status`,
 * `x-query-virtio-queue-element` and `x-query-virtio-vhost-queue-status`, answered from our
 * devices with QEMU's members, list orders, values and error messages.
 *
 * What QEMU reports and we hold no state for is what QEMU reports for the same command line:
 * no vhost (so `vhost-started` false, `backend-features` empty, no `vhost-dev`), `use-started`
 * and `use-guest-notifier-mask` true, `disable-legacy-check` false (the only values our
 * command line accepts).
 *
 * `x-query-virtio-queue-element` reads a split ring as QEMU's does, with three differences
 * where QEMU would trust the guest (docs/qemu-differences.md): a head at or beyond the queue
 * size and an indirect table shorter than one descriptor are refused with an error (QEMU 7.2
 * reads past its ring caches and aborts on an assertion), an indirect table must lie in RAM
 * (QEMU reads whatever the address decodes to), and at most VIRTQUEUE_MAX_SIZE entries of a
 * table are walked. A chain whose `next` runs off its table ends the list there, as in QEMU,
 * but does not break the device (QEMU's walk calls `virtio_error`).
 *
 * No Node imports: part of the browser bundle.
 */
import type { VirtIODevice } from '../virtio/device.js';
import { DeviceEndian, VIRTIO_F_RING_PACKED } from '../virtio/constants.js';
import { VIRTIO_QUEUE_MAX, VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_SIZE } from '../vring/constants.js';
import type { VirtQueue } from '../vring/virtqueue.js';
import { qdictOrder } from './qdict.js';
import { decodeDescFlags, decodeFeatures, decodeStatus, qapiUint64, virtioDeviceName, type QapiUint64, type VirtioDeviceFeatures, type VirtioDeviceStatus } from './virtio-feature-names.js';

export type { QapiUint64, VirtioDeviceFeatures, VirtioDeviceStatus } from './virtio-feature-names.js';

/** One realized virtio device, in QEMU's `virtio_list` (realize order). */
export interface VirtioListEntry {
  /** Canonical QOM path of the VirtIODevice: on PCI the proxy's `virtio-backend` child. */
  readonly path: string;
  readonly device: VirtIODevice;
  /**
   * QEMU's `bus_name`: "<id>.0" for a virtio-serial-pci with an id (its child bus keeps the
   * proxy's name), otherwise "" (QEMU's NULL, printed as an empty string).
   */
  readonly busName: string;
}

/** A command's refusal; every one of these is a GenericError in QEMU. */
export class VirtioQueryError extends Error {
  readonly errorClass = 'GenericError';
}

/** QAPI `VirtioInfo`. */
export interface VirtioInfo {
  path: string;
  name: string;
}

/** QAPI `VirtioStatus` (without `vhost-dev`, which only a started vhost device has). */
export interface VirtioStatus {
  name: string;
  'device-id': number;
  'vhost-started': boolean;
  'device-endian': string;
  'guest-features': VirtioDeviceFeatures;
  'host-features': VirtioDeviceFeatures;
  'backend-features': VirtioDeviceFeatures;
  'num-vqs': number;
  status: VirtioDeviceStatus;
  isr: number;
  'queue-sel': number;
  'vm-running': boolean;
  broken: boolean;
  disabled: boolean;
  'use-started': boolean;
  started: boolean;
  'start-on-kick': boolean;
  'disable-legacy-check': boolean;
  'bus-name': string;
  'use-guest-notifier-mask': boolean;
}

/** QAPI `VirtQueueStatus` (the vhost-less form: both indices present). */
export interface VirtQueueStatus {
  name: string;
  'queue-index': number;
  inuse: number;
  'vring-num': number;
  'vring-num-default': number;
  'vring-align': number;
  'vring-desc': number;
  'vring-avail': number;
  'vring-used': number;
  'last-avail-idx': number;
  'shadow-avail-idx': number;
  'used-idx': number;
  'signalled-used': number;
  'signalled-used-valid': boolean;
}

export interface VirtioRingDesc {
  addr: QapiUint64;
  len: number;
  flags: string[];
}

/** QAPI `VirtioQueueElement`. */
export interface VirtioQueueElement {
  name: string;
  /** The chain's head descriptor (not the avail ring position). */
  index: number;
  /** Last descriptor of the chain first: QEMU prepends them. */
  descs: VirtioRingDesc[];
  avail: { flags: number; idx: number; ring: number };
  used: { flags: number; idx: number };
}

function find(list: readonly VirtioListEntry[], path: string, what: string): VirtioListEntry {
  // QEMU compares canonical paths with strcmp: no partial paths here, unlike qom-get.
  const e = list.find((x) => x.path === path);
  if (!e) throw new VirtioQueryError(`Path ${path} is not a ${what}`);
  return e;
}

function nameOf(dev: VirtIODevice): string {
  return virtioDeviceName(dev.deviceId, dev.name);
}

/** `x-query-virtio`: QEMU prepends while walking its list, so the newest device comes first. */
export function queryVirtio(list: readonly VirtioListEntry[]): VirtioInfo[] {
  return list.map((e) => ({ path: e.path, name: nameOf(e.device) })).reverse();
}

/** `virtio_get_num_queues`: queues up to the first of size 0. */
function numQueues(dev: VirtIODevice): number {
  let n = 0;
  while (n < VIRTIO_QUEUE_MAX && dev.queueNum(n) !== 0) n++;
  return n;
}

function endianName(e: DeviceEndian): string {
  return e === DeviceEndian.LITTLE ? 'little' : e === DeviceEndian.BIG ? 'big' : 'unknown';
}

/** `x-query-virtio-status`. */
export function virtioStatus(list: readonly VirtioListEntry[], path: string): VirtioStatus {
  const { device: dev, busName } = find(list, path, 'VirtIODevice');
  return {
    name: nameOf(dev),
    'device-id': dev.deviceId,
    'vhost-started': false,
    'device-endian': endianName(dev.deviceEndian),
    'guest-features': decodeFeatures(dev.deviceId, dev.guestFeatures),
    'host-features': decodeFeatures(dev.deviceId, dev.hostFeatures),
    // Only a vhost-backed virtio-net sets backend_features.
    'backend-features': decodeFeatures(dev.deviceId, 0n),
    'num-vqs': numQueues(dev),
    status: decodeStatus(dev.status),
    isr: dev.isr,
    'queue-sel': dev.queueSel,
    'vm-running': dev.vmRunning,
    broken: dev.broken,
    disabled: dev.disabled,
    'use-started': true,
    started: dev.started,
    'start-on-kick': dev.startOnKick,
    'disable-legacy-check': false,
    'bus-name': busName,
    'use-guest-notifier-mask': true,
  };
}

function queueOf(dev: VirtIODevice, n: number): VirtQueue {
  const q = n < VIRTIO_QUEUE_MAX ? dev.getQueue(n) : undefined;
  if (!q || q.num === 0) throw new VirtioQueryError(`Invalid virtqueue number ${n}`);
  return q;
}

/** `x-query-virtio-queue-status`. */
export function virtqueueStatus(list: readonly VirtioListEntry[], path: string, n: number): VirtQueueStatus {
  const dev = find(list, path, 'VirtIODevice').device;
  const q = queueOf(dev, n);
  return {
    name: nameOf(dev),
    'queue-index': q.index,
    inuse: q.inuse,
    'vring-num': q.num,
    'vring-num-default': q.numDefault,
    'vring-align': q.align,
    'vring-desc': q.desc,
    'vring-avail': q.avail,
    'vring-used': q.used,
    'last-avail-idx': q.lastAvailIdx,
    'shadow-avail-idx': q.shadowAvailIdx,
    'used-idx': q.usedIdx,
    'signalled-used': q.signalledUsed,
    'signalled-used-valid': q.signalledUsedValid,
  };
}

/** `x-query-virtio-vhost-queue-status`: our devices never have a vhost backend. */
export function vhostQueueStatus(list: readonly VirtioListEntry[], path: string): never {
  find(list, path, 'VirtIODevice');
  throw new VirtioQueryError('Error: vhost device has not started yet');
}

interface RawDesc {
  addr: bigint;
  len: number;
  flags: number;
  next: number;
}

/** `x-query-virtio-queue-element`: the chain whose head sits at avail position `index` (default: the next to pop). */
export function virtqueueElement(list: readonly VirtioListEntry[], path: string, n: number, index?: number): VirtioQueueElement {
  const dev = find(list, path, 'VirtIO device').device;
  const q = queueOf(dev, n);
  if (dev.hasFeature(VIRTIO_F_RING_PACKED)) throw new VirtioQueryError('Packed ring not supported');
  // QEMU's ring caches exist exactly when our rings are mapped; mapped rings cover `num` entries,
  // so QEMU's "Cannot map descriptor ring" cannot arise.
  if (!q.isMapped) throw new VirtioQueryError('Region caches not initialized');
  const mem = dev.memory;
  const le = q.le;
  const head = mem.read16(q.avail + 4 + 2 * ((index ?? q.lastAvailIdx) % q.num), le);
  if (head < 0 || head >= q.num) throw new VirtioQueryError(`Guest says index ${head} is available`);
  const readDesc = (table: number, i: number): RawDesc => {
    const at = table + VRING_DESC_SIZE * i;
    return { addr: mem.read64(at, le), len: mem.read32(at + 8, le), flags: mem.read16(at + 12, le), next: mem.read16(at + 14, le) };
  };
  let table = q.desc;
  let max = q.num;
  let desc = readDesc(table, head);
  if (desc.flags & VRING_DESC_F_INDIRECT) {
    if (desc.len < VRING_DESC_SIZE) throw new VirtioQueryError('Invalid size for indirect buffer table');
    const r = mem.findRegionBig(desc.addr, BigInt(desc.len));
    if (!r) throw new VirtioQueryError('Cannot map indirect buffer');
    table = Number(desc.addr);
    // A table may be as long as RAM; the walk and the reply stay bounded.
    max = Math.min(Math.floor(desc.len / VRING_DESC_SIZE), VIRTQUEUE_MAX_SIZE);
    desc = readDesc(table, 0);
  }
  // QEMU reads avail.idx through vring_avail_idx, which also moves shadow_avail_idx; pop trusts
  // our shadow index, so it only takes a value pop itself would accept.
  const availIdx = q.readAvailIdx();
  if (((availIdx - q.lastAvailIdx) & 0xffff) <= q.num) q.shadowAvailIdx = availIdx;
  const descs: VirtioRingDesc[] = [];
  for (;;) {
    if (descs.length >= max) break;
    descs.push({ addr: qapiUint64(desc.addr), len: desc.len, flags: decodeDescFlags(desc.flags) });
    // QEMU's walk calls virtio_error on a `next` off the table; a query leaves the device alone.
    if (!(desc.flags & VRING_DESC_F_NEXT) || desc.next >= max) break;
    desc = readDesc(table, desc.next);
  }
  return {
    name: nameOf(dev),
    index: head,
    descs: descs.reverse(),
    avail: { flags: q.readAvailFlags(), idx: availIdx, ring: head },
    used: { flags: mem.read16(q.used, le), idx: mem.read16(q.used + 2, le) },
  };
}

// ---------------------------------------------------------------------------------------------
// The QMP side: arguments visited as QEMU's generated marshallers do, replies in QDict order.

type ArgType = 'str' | 'uint16';
type Args = Readonly<Record<string, unknown>>;

/**
 * QEMU's QObject input visitor over a command's members: each declared member in schema order
 * (missing, then mistyped), and only then members nobody asked for.
 */
function visitArgs(args: Args, members: readonly (readonly [string, ArgType, 'optional'?])[]): Record<string, string | number | undefined> {
  const out: Record<string, string | number | undefined> = {};
  for (const [name, type, optional] of members) {
    if (!(name in args)) {
      if (optional) continue;
      throw new VirtioQueryError(`Parameter '${name}' is missing`);
    }
    const v = args[name];
    if (type === 'str') {
      if (typeof v !== 'string') throw new VirtioQueryError(`Invalid parameter type for '${name}', expected: string`);
      out[name] = v;
      continue;
    }
    // A uint64 visit first (QEMU's parser turns integers beyond 64 bits into doubles, which it
    // refuses; negative ones wrap), then the range check of the narrower type.
    if (typeof v !== 'number' || !Number.isInteger(v) || v < -(2 ** 63) || v >= 2 ** 64) throw new VirtioQueryError(`Parameter '${name}' expects uint64`);
    if (v < 0 || v > 0xffff) throw new VirtioQueryError(`Parameter '${name}' expects uint16_t`);
    out[name] = v;
  }
  for (const k of Object.keys(args)) {
    if (!members.some(([m]) => m === k)) throw new VirtioQueryError(`Parameter '${k}' is unexpected`);
  }
  return out;
}

/** Objects with their members in the order QEMU prints a QDict, lists left in their order. */
function qdictDeep(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(qdictDeep);
  if (v === null || typeof v !== 'object') return v;
  const src = v as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of qdictOrder(Object.keys(src))) out[k] = qdictDeep(src[k]);
  return out;
}

/** The commands, as `query-commands` lists them. */
export const VIRTIO_QMP_COMMANDS: readonly string[] = [
  'x-query-virtio',
  'x-query-virtio-status',
  'x-query-virtio-queue-status',
  'x-query-virtio-vhost-queue-status',
  'x-query-virtio-queue-element',
];

/**
 * Run one of `VIRTIO_QMP_COMMANDS` against the machine's virtio devices; returns what `return`
 * carries (members in QEMU's print order), throws `VirtioQueryError`.
 */
export function executeVirtioCommand(list: readonly VirtioListEntry[], command: string, args: Args): unknown {
  switch (command) {
    case 'x-query-virtio':
      visitArgs(args, []);
      return qdictDeep(queryVirtio(list));
    case 'x-query-virtio-status': {
      const a = visitArgs(args, [['path', 'str']]);
      return qdictDeep(virtioStatus(list, a.path as string));
    }
    case 'x-query-virtio-queue-status': {
      const a = visitArgs(args, [['path', 'str'], ['queue', 'uint16']]);
      return qdictDeep(virtqueueStatus(list, a.path as string, a.queue as number));
    }
    case 'x-query-virtio-vhost-queue-status': {
      const a = visitArgs(args, [['path', 'str'], ['queue', 'uint16']]);
      return vhostQueueStatus(list, a.path as string);
    }
    case 'x-query-virtio-queue-element': {
      const a = visitArgs(args, [['path', 'str'], ['queue', 'uint16'], ['index', 'uint16', 'optional']]);
      return qdictDeep(virtqueueElement(list, a.path as string, a.queue as number, a.index as number | undefined));
    }
    default:
      throw new Error(`${command} is not a virtio introspection command`);
  }
}
