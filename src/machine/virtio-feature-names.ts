/**
 * The feature and status names QEMU 7.2's virtio introspection prints (hw/virtio/virtio.c: the
 * `virtio_*_feature_map` tables and `qmp_decode_features`/`qmp_decode_status`). The strings are
 * protocol output: `x-query-virtio-status` answers with them, so they are copied verbatim,
 * oddities included (VERSION_1 is "(legacy)").
 *
 * No Node imports: part of the browser bundle.
 */
import { VIRTIO_ID_BALLOON, VIRTIO_ID_BLOCK, VIRTIO_ID_CONSOLE, VIRTIO_ID_INPUT, VIRTIO_ID_NET, VIRTIO_ID_RNG } from '../virtio/constants.js';

/** One table entry: a feature bit number (or, for statuses, the status value) and its text. */
type NameMap = readonly (readonly [number, string])[];

const VHOST_F_LOG_ALL: readonly [number, string] = [26, 'VHOST_F_LOG_ALL: Logging write descriptors supported'];
const VHOST_USER_F_PROTOCOL_FEATURES: readonly [number, string] = [30, 'VHOST_USER_F_PROTOCOL_FEATURES: Vhost-user protocol features negotiation supported'];

const TRANSPORT_MAP: NameMap = [
  [24, 'VIRTIO_F_NOTIFY_ON_EMPTY: Notify when device runs out of avail. descs. on VQ'],
  [27, 'VIRTIO_F_ANY_LAYOUT: Device accepts arbitrary desc. layouts'],
  [32, 'VIRTIO_F_VERSION_1: Device compliant for v1 spec (legacy)'],
  [33, 'VIRTIO_F_IOMMU_PLATFORM: Device can be used on IOMMU platform'],
  [34, 'VIRTIO_F_RING_PACKED: Device supports packed VQ layout'],
  [35, 'VIRTIO_F_IN_ORDER: Device uses buffers in same order as made available by driver'],
  [36, 'VIRTIO_F_ORDER_PLATFORM: Memory accesses ordered by platform'],
  [37, 'VIRTIO_F_SR_IOV: Device supports single root I/O virtualization'],
  [28, 'VIRTIO_RING_F_INDIRECT_DESC: Indirect descriptors supported'],
  [29, 'VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled'],
];

const STATUS_MAP: NameMap = [
  [4, 'VIRTIO_CONFIG_S_DRIVER_OK: Driver setup and ready'],
  [8, 'VIRTIO_CONFIG_S_FEATURES_OK: Feature negotiation complete'],
  [2, 'VIRTIO_CONFIG_S_DRIVER: Guest OS compatible with device'],
  [0x40, 'VIRTIO_CONFIG_S_NEEDS_RESET: Irrecoverable error, device needs reset'],
  [0x80, 'VIRTIO_CONFIG_S_FAILED: Error in guest, device failed'],
  [1, 'VIRTIO_CONFIG_S_ACKNOWLEDGE: Valid virtio device found'],
];

const BLK_MAP: NameMap = [
  [1, 'VIRTIO_BLK_F_SIZE_MAX: Max segment size is size_max'],
  [2, 'VIRTIO_BLK_F_SEG_MAX: Max segments in a request is seg_max'],
  [4, 'VIRTIO_BLK_F_GEOMETRY: Legacy geometry available'],
  [5, 'VIRTIO_BLK_F_RO: Device is read-only'],
  [6, 'VIRTIO_BLK_F_BLK_SIZE: Block size of disk available'],
  [10, 'VIRTIO_BLK_F_TOPOLOGY: Topology information available'],
  [12, 'VIRTIO_BLK_F_MQ: Multiqueue supported'],
  [13, 'VIRTIO_BLK_F_DISCARD: Discard command supported'],
  [14, 'VIRTIO_BLK_F_WRITE_ZEROES: Write zeroes command supported'],
  [0, 'VIRTIO_BLK_F_BARRIER: Request barriers supported'],
  [7, 'VIRTIO_BLK_F_SCSI: SCSI packet commands supported'],
  [9, 'VIRTIO_BLK_F_FLUSH: Flush command supported'],
  [11, 'VIRTIO_BLK_F_CONFIG_WCE: Cache writeback and writethrough modes supported'],
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
];

const SERIAL_MAP: NameMap = [
  [0, 'VIRTIO_CONSOLE_F_SIZE: Host providing console size'],
  [1, 'VIRTIO_CONSOLE_F_MULTIPORT: Multiple ports for device supported'],
  [2, 'VIRTIO_CONSOLE_F_EMERG_WRITE: Emergency write supported'],
];

const NET_MAP: NameMap = [
  [0, 'VIRTIO_NET_F_CSUM: Device handling packets with partial checksum supported'],
  [1, 'VIRTIO_NET_F_GUEST_CSUM: Driver handling packets with partial checksum supported'],
  [2, 'VIRTIO_NET_F_CTRL_GUEST_OFFLOADS: Control channel offloading reconfig. supported'],
  [3, 'VIRTIO_NET_F_MTU: Device max MTU reporting supported'],
  [5, 'VIRTIO_NET_F_MAC: Device has given MAC address'],
  [7, 'VIRTIO_NET_F_GUEST_TSO4: Driver can receive TSOv4'],
  [8, 'VIRTIO_NET_F_GUEST_TSO6: Driver can receive TSOv6'],
  [9, 'VIRTIO_NET_F_GUEST_ECN: Driver can receive TSO with ECN'],
  [10, 'VIRTIO_NET_F_GUEST_UFO: Driver can receive UFO'],
  [11, 'VIRTIO_NET_F_HOST_TSO4: Device can receive TSOv4'],
  [12, 'VIRTIO_NET_F_HOST_TSO6: Device can receive TSOv6'],
  [13, 'VIRTIO_NET_F_HOST_ECN: Device can receive TSO with ECN'],
  [14, 'VIRTIO_NET_F_HOST_UFO: Device can receive UFO'],
  [15, 'VIRTIO_NET_F_MRG_RXBUF: Driver can merge receive buffers'],
  [16, 'VIRTIO_NET_F_STATUS: Configuration status field available'],
  [17, 'VIRTIO_NET_F_CTRL_VQ: Control channel available'],
  [18, 'VIRTIO_NET_F_CTRL_RX: Control channel RX mode supported'],
  [19, 'VIRTIO_NET_F_CTRL_VLAN: Control channel VLAN filtering supported'],
  [20, 'VIRTIO_NET_F_CTRL_RX_EXTRA: Extra RX mode control supported'],
  [21, 'VIRTIO_NET_F_GUEST_ANNOUNCE: Driver sending gratuitous packets supported'],
  [22, 'VIRTIO_NET_F_MQ: Multiqueue with automatic receive steering supported'],
  [23, 'VIRTIO_NET_F_CTRL_MAC_ADDR: MAC address set through control channel'],
  [57, 'VIRTIO_NET_F_HASH_REPORT: Hash reporting supported'],
  [60, 'VIRTIO_NET_F_RSS: RSS RX steering supported'],
  [61, 'VIRTIO_NET_F_RSC_EXT: Extended coalescing info supported'],
  [62, 'VIRTIO_NET_F_STANDBY: Device acting as standby for primary device with same MAC addr. supported'],
  [63, 'VIRTIO_NET_F_SPEED_DUPLEX: Device set linkspeed and duplex'],
  [6, 'VIRTIO_NET_F_GSO: Handling GSO-type packets supported'],
  [27, 'VHOST_NET_F_VIRTIO_NET_HDR: Virtio-net headers for RX and TX packets supported'],
  VHOST_F_LOG_ALL,
  VHOST_USER_F_PROTOCOL_FEATURES,
];

const BALLOON_MAP: NameMap = [
  [0, 'VIRTIO_BALLOON_F_MUST_TELL_HOST: Tell host before reclaiming pages'],
  [1, 'VIRTIO_BALLOON_F_STATS_VQ: Guest memory stats VQ available'],
  [2, 'VIRTIO_BALLOON_F_DEFLATE_ON_OOM: Deflate balloon when guest OOM'],
  [3, 'VIRTIO_BALLOON_F_FREE_PAGE_HINT: VQ reporting free pages enabled'],
  [4, 'VIRTIO_BALLOON_F_PAGE_POISON: Guest page poisoning enabled'],
  [5, 'VIRTIO_BALLOON_F_REPORTING: Page reporting VQ enabled'],
];

/** virtio-input and virtio-rng have only the vhost bits. */
const VHOST_ONLY_MAP: NameMap = [VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES];

/** Device tables of the device types we model; other ids decode with none (QEMU's "No features" ids). */
const DEVICE_MAPS: ReadonlyMap<number, NameMap> = new Map([
  [VIRTIO_ID_CONSOLE, SERIAL_MAP],
  [VIRTIO_ID_BLOCK, BLK_MAP],
  [VIRTIO_ID_NET, NET_MAP],
  [VIRTIO_ID_BALLOON, BALLOON_MAP],
  [VIRTIO_ID_INPUT, VHOST_ONLY_MAP],
  [VIRTIO_ID_RNG, VHOST_ONLY_MAP],
]);

/** A QAPI uint64: a number while exact, a bigint beyond 2^53 (the QMP writer prints both as integers). */
export type QapiUint64 = number | bigint;

export function qapiUint64(v: bigint): QapiUint64 {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/** QAPI `VirtioDeviceFeatures`. */
export interface VirtioDeviceFeatures {
  transports: string[];
  'dev-features': string[];
  /** Bits no table names (only when there are some). */
  'unknown-dev-features'?: QapiUint64;
}

/** QAPI `VirtioDeviceStatus`. */
export interface VirtioDeviceStatus {
  statuses: string[];
  'unknown-statuses'?: number;
}

/**
 * QEMU's CONVERT_FEATURES: walk the table in order, take each entry whose bit is still set and
 * clear the bit, so a bit named in two tables (ANY_LAYOUT and VHOST_NET_F_VIRTIO_NET_HDR, both
 * 27) is named once, by the first. Entries are prepended: the list comes out in reverse table
 * order.
 */
function convert(map: NameMap, bitmap: bigint, isStatus: boolean): { names: string[]; rest: bigint } {
  const names: string[] = [];
  let rest = bitmap;
  for (const [n, desc] of map) {
    const b = isStatus ? BigInt(n) : 1n << BigInt(n);
    if ((rest & b) === 0n) continue;
    names.unshift(desc);
    rest ^= b;
  }
  return { names, rest };
}

/** `qmp_decode_features`: transport bits first, then the device's table, then what is left. */
export function decodeFeatures(deviceId: number, bitmap: bigint): VirtioDeviceFeatures {
  const t = convert(TRANSPORT_MAP, BigInt.asUintN(64, bitmap), false);
  const d = convert(DEVICE_MAPS.get(deviceId) ?? [], t.rest, false);
  const out: VirtioDeviceFeatures = { transports: t.names, 'dev-features': d.names };
  if (d.rest !== 0n) out['unknown-dev-features'] = qapiUint64(d.rest);
  return out;
}

/** `qmp_decode_status`. */
export function decodeStatus(status: number): VirtioDeviceStatus {
  const s = convert(STATUS_MAP, BigInt(status & 0xff), true);
  const out: VirtioDeviceStatus = { statuses: s.names };
  if (s.rest !== 0n) out['unknown-statuses'] = Number(s.rest);
  return out;
}

const DESC_FLAG_NAMES: NameMap = [
  [1, 'next'],
  [2, 'write'],
  [4, 'indirect'],
  [1 << 7, 'avail'],
  [1 << 15, 'used'],
];

/** `qmp_decode_vring_desc_flags`: the known flags, prepended as well (unknown bits are dropped). */
export function decodeDescFlags(flags: number): string[] {
  const out: string[] = [];
  for (const [f, name] of DESC_FLAG_NAMES) if (flags & f) out.unshift(name);
  return out;
}

/** QEMU's `virtio_device_names` for the ids we model (the `name` member of every reply). */
const DEVICE_NAMES: ReadonlyMap<number, string> = new Map([
  [VIRTIO_ID_NET, 'virtio-net'],
  [VIRTIO_ID_BLOCK, 'virtio-blk'],
  [VIRTIO_ID_CONSOLE, 'virtio-serial'],
  [VIRTIO_ID_RNG, 'virtio-rng'],
  [VIRTIO_ID_BALLOON, 'virtio-balloon'],
  [VIRTIO_ID_INPUT, 'virtio-input'],
]);

export function virtioDeviceName(deviceId: number, fallback: string): string {
  return DEVICE_NAMES.get(deviceId) ?? fallback;
}
