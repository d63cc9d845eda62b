/**
 * virtio-net, the network device (VIRTIO 1.2 §5.1), as QEMU 7.2 (Debian 12's 7.2.22)
 * `hw/net/virtio-net.c` has it with a backend that takes plain Ethernet frames (QEMU's socket,
 * dgram, stream and hub backends: no vnet header, so none of the checksum or segmentation
 * offloads is offered):
 *
 * - queues: receive/transmit pairs, then the control queue; the count follows the negotiated
 *   features (2 × pairs + 1 with MQ or RSS, 3 without), as Debian's 7.2.22 creates them;
 * - receive: frames from the backend into the guest's buffers, header length per the negotiated
 *   features (10, or 12 with MRG_RXBUF or VERSION_1), mergeable buffers, QEMU's receive filter
 *   (promiscuous, all/no multicast, all/no unicast, no broadcast, the MAC table, the VLAN
 *   filter), a frame waiting (bounded) while the guest has posted no buffer;
 * - transmit: frames to the backend, the header stripped, in bursts of `txBurst` as QEMU's
 *   bottom half sends them, held when the backend cannot take one yet;
 * - the control queue: RX mode, MAC table and address, VLAN filter, announce ack, queue pairs,
 *   RSS (software steering) and its hash configuration, guest offloads;
 * - link status (QMP `set_link`) with the configuration interrupt, guest announce (after a
 *   migration, and `announce-self`), the NIC_RX_FILTER_CHANGED notification and `query-rx-filter`;
 * - migration: `virtio-net-device` v11 and its `rss` subsection, byte for byte as QEMU writes it.
 *
 * Every guest value is checked: buffers are written only where the guest's chains point,
 * control messages are read within what the guest gave, counts are computed as QEMU computes
 * them (including its 32-bit arithmetic on MAC table counts) but never used to index outside a
 * table.
 */
import type { Clock, TimerHandle } from '../../clock/virtual-clock.js';
import type { QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { vmstateLoad, vmstateSave, type VMStateDescription } from '../../migration/vmstate.js';
import { VirtIODevice, type DeviceLoadContext, type VirtIODeviceOptions } from '../../virtio/device.js';
import { bit, hasBit, VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_VERSION_1, VIRTIO_ID_NET } from '../../virtio/constants.js';
import { VIRTQUEUE_MAX_SIZE, VIRTIO_QUEUE_MAX } from '../../vring/constants.js';
import type { VirtQueueElement } from '../../vring/element.js';
import type { VirtQueue } from '../../vring/virtqueue.js';
import { callHost } from '../host-callback.js';
import {
  DUPLEX_FULL,
  DUPLEX_HALF,
  DUPLEX_UNKNOWN,
  MAC_TABLE_ENTRIES,
  MAX_VLAN,
  NET_BUFSIZE,
  SPEED_UNKNOWN,
  TX_BURST,
  VIRTIO_NET_CFG_DUPLEX,
  VIRTIO_NET_CFG_MAC,
  VIRTIO_NET_CFG_MAX_VQ_PAIRS,
  VIRTIO_NET_CFG_MTU,
  VIRTIO_NET_CFG_RSS_MAX_KEY_SIZE,
  VIRTIO_NET_CFG_RSS_MAX_TABLE_LEN,
  VIRTIO_NET_CFG_SPEED,
  VIRTIO_NET_CFG_STATUS,
  VIRTIO_NET_CFG_SUPPORTED_HASH_TYPES,
  VIRTIO_NET_CONFIG_SIZE,
  VIRTIO_NET_CTRL_ANNOUNCE,
  VIRTIO_NET_CTRL_ANNOUNCE_ACK,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET,
  VIRTIO_NET_CTRL_MAC,
  VIRTIO_NET_CTRL_MAC_ADDR_SET,
  VIRTIO_NET_CTRL_MAC_TABLE_SET,
  VIRTIO_NET_CTRL_MQ,
  VIRTIO_NET_CTRL_MQ_HASH_CONFIG,
  VIRTIO_NET_CTRL_MQ_RSS_CONFIG,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN,
  VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
  VIRTIO_NET_CTRL_QUEUE_SIZE,
  VIRTIO_NET_CTRL_RX,
  VIRTIO_NET_CTRL_RX_ALLMULTI,
  VIRTIO_NET_CTRL_RX_ALLUNI,
  VIRTIO_NET_CTRL_RX_NOBCAST,
  VIRTIO_NET_CTRL_RX_NOMULTI,
  VIRTIO_NET_CTRL_RX_NOUNI,
  VIRTIO_NET_CTRL_RX_PROMISC,
  VIRTIO_NET_CTRL_VLAN,
  VIRTIO_NET_CTRL_VLAN_ADD,
  VIRTIO_NET_CTRL_VLAN_DEL,
  VIRTIO_NET_ERR,
  VIRTIO_NET_F_CSUM,
  VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
  VIRTIO_NET_F_CTRL_MAC_ADDR,
  VIRTIO_NET_F_CTRL_RX,
  VIRTIO_NET_F_CTRL_RX_EXTRA,
  VIRTIO_NET_F_CTRL_VLAN,
  VIRTIO_NET_F_CTRL_VQ,
  VIRTIO_NET_F_GSO,
  VIRTIO_NET_F_GUEST_ANNOUNCE,
  VIRTIO_NET_F_GUEST_CSUM,
  VIRTIO_NET_F_GUEST_ECN,
  VIRTIO_NET_F_GUEST_TSO4,
  VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO,
  VIRTIO_NET_F_HASH_REPORT,
  VIRTIO_NET_F_HOST_ECN,
  VIRTIO_NET_F_HOST_TSO4,
  VIRTIO_NET_F_HOST_TSO6,
  VIRTIO_NET_F_HOST_UFO,
  VIRTIO_NET_F_MAC,
  VIRTIO_NET_F_MQ,
  VIRTIO_NET_F_MRG_RXBUF,
  VIRTIO_NET_F_MTU,
  VIRTIO_NET_F_RSC_EXT,
  VIRTIO_NET_F_RSS,
  VIRTIO_NET_F_SPEED_DUPLEX,
  VIRTIO_NET_F_STATUS,
  VIRTIO_NET_HDR_MRG_RXBUF_SIZE,
  VIRTIO_NET_HDR_NUM_BUFFERS,
  VIRTIO_NET_HDR_SIZE,
  VIRTIO_NET_HDR_V1_HASH_SIZE,
  VIRTIO_NET_OK,
  VIRTIO_NET_QUEUE_DEFAULT_SIZE,
  VIRTIO_NET_RSS_MAX_KEY_SIZE,
  VIRTIO_NET_RSS_MAX_TABLE_LEN,
  VIRTIO_NET_RSS_SUPPORTED_HASHES,
  VIRTIO_NET_S_ANNOUNCE,
  VIRTIO_NET_S_LINK_UP,
} from './constants.js';
import { formatMac } from './mac.js';
import { canSendPacket, connectPeers, flushQueuedPackets, NetClient, sendPacket, type NetBackend, type NetPacketSent, type NetQueueLimits } from './net-client.js';
import { rssSteer } from './rss.js';

/** QEMU's feature properties of virtio-net (name → bit and default). */
export const VIRTIO_NET_FEATURE_PROPS = {
  csum: [VIRTIO_NET_F_CSUM, true],
  guest_csum: [VIRTIO_NET_F_GUEST_CSUM, true],
  gso: [VIRTIO_NET_F_GSO, true],
  guest_tso4: [VIRTIO_NET_F_GUEST_TSO4, true],
  guest_tso6: [VIRTIO_NET_F_GUEST_TSO6, true],
  guest_ecn: [VIRTIO_NET_F_GUEST_ECN, true],
  guest_ufo: [VIRTIO_NET_F_GUEST_UFO, true],
  guest_announce: [VIRTIO_NET_F_GUEST_ANNOUNCE, true],
  host_tso4: [VIRTIO_NET_F_HOST_TSO4, true],
  host_tso6: [VIRTIO_NET_F_HOST_TSO6, true],
  host_ecn: [VIRTIO_NET_F_HOST_ECN, true],
  host_ufo: [VIRTIO_NET_F_HOST_UFO, true],
  mrg_rxbuf: [VIRTIO_NET_F_MRG_RXBUF, true],
  status: [VIRTIO_NET_F_STATUS, true],
  ctrl_vq: [VIRTIO_NET_F_CTRL_VQ, true],
  ctrl_rx: [VIRTIO_NET_F_CTRL_RX, true],
  ctrl_vlan: [VIRTIO_NET_F_CTRL_VLAN, true],
  ctrl_rx_extra: [VIRTIO_NET_F_CTRL_RX_EXTRA, true],
  ctrl_mac_addr: [VIRTIO_NET_F_CTRL_MAC_ADDR, true],
  ctrl_guest_offloads: [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, true],
  mq: [VIRTIO_NET_F_MQ, false],
  rss: [VIRTIO_NET_F_RSS, false],
  hash: [VIRTIO_NET_F_HASH_REPORT, false],
  guest_rsc_ext: [VIRTIO_NET_F_RSC_EXT, false],
} as const satisfies Record<string, readonly [number, boolean]>;

export type VirtIONetFeatureProperty = keyof typeof VIRTIO_NET_FEATURE_PROPS;

/**
 * Offloads a backend without the vnet header cannot do, so QEMU withdraws them from the offer
 * (`virtio_net_get_features` when `peer_has_vnet_hdr` is false, and UFO without `peer_has_ufo`).
 */
const NEEDS_VNET_HDR =
  bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN) |
  bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN) |
  bit(VIRTIO_NET_F_HASH_REPORT) | bit(VIRTIO_NET_F_GUEST_UFO) | bit(VIRTIO_NET_F_HOST_UFO);

/** The guest offloads the control queue can set (`virtio_net_guest_offloads_by_features`). */
const GUEST_OFFLOADS_MASK =
  bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4) | bit(VIRTIO_NET_F_GUEST_TSO6) | bit(VIRTIO_NET_F_GUEST_ECN) | bit(VIRTIO_NET_F_GUEST_UFO);

/** The config ends QEMU sizes its config by (`feature_sizes`), in the order it checks them. */
const CONFIG_ENDS: readonly [bigint, number][] = [
  [bit(VIRTIO_NET_F_MAC), 6],
  [bit(VIRTIO_NET_F_STATUS), 8],
  [bit(VIRTIO_NET_F_MQ), 10],
  [bit(VIRTIO_NET_F_MTU), 12],
  [bit(VIRTIO_NET_F_SPEED_DUPLEX), 17],
  [bit(VIRTIO_NET_F_RSS) | bit(VIRTIO_NET_F_HASH_REPORT), 24],
];

/** QEMU's `virtio_get_config_size` for virtio-net: 6 bytes, more for each feature that needs them. */
export function virtioNetConfigSize(hostFeatures: bigint): number {
  let size = 6;
  for (const [flags, end] of CONFIG_ENDS) if ((hostFeatures & flags) !== 0n && end > size) size = end;
  return size;
}

/** The announce schedule QEMU uses after a migration (`migrate_announce_params`, in ms). */
export interface AnnounceParams {
  initial: number;
  max: number;
  rounds: number;
  step: number;
}
export const MIGRATE_ANNOUNCE_PARAMS: AnnounceParams = { initial: 50, max: 550, rounds: 5, step: 100 };

/** `query-rx-filter`'s answer for one NIC (QAPI `RxFilterInfo`). */
export interface RxFilterInfo {
  name: string;
  promiscuous: boolean;
  multicast: 'normal' | 'none' | 'all';
  unicast: 'normal' | 'none' | 'all';
  vlan: 'normal' | 'none' | 'all';
  'broadcast-allowed': boolean;
  'multicast-overflow': boolean;
  'unicast-overflow': boolean;
  'main-mac': string;
  'vlan-table': number[];
  'unicast-table': string[];
  'multicast-table': string[];
}

/** Counters of what happened to frames (host-side statistics, not migrated). */
export interface VirtIONetStats {
  /** Frames delivered into guest buffers. */
  rxFrames: number;
  rxBytes: number;
  /** Frames the receive filter dropped. */
  rxFiltered: number;
  /** Frames dropped because they did not fit a buffer without mergeable buffers. */
  rxTooBig: number;
  /** Frames sent by the guest to the backend. */
  txFrames: number;
  txBytes: number;
  /** Transmit chains dropped: longer than NET_BUFSIZE, link down, no peer. */
  txDropped: number;
}

export interface VirtIONetOptions extends VirtIODeviceOptions {
  /** The NIC's MAC address (QEMU's `mac`); 52:54:00:12:34:56 by default. */
  mac?: Uint8Array;
  /** What the NIC is connected to: one net client per queue pair (QEMU's `netdev`). */
  netdev?: NetBackend;
  /** QEMU's feature properties; each defaults to QEMU's value. */
  properties?: Partial<Record<VirtIONetFeatureProperty, boolean>>;
  /** QEMU's `host_mtu` (0: none; otherwise offered with VIRTIO_NET_F_MTU). */
  hostMtu?: number;
  /** QEMU's `speed` in Mb/s (-1: unknown; otherwise offered with SPEED_DUPLEX). */
  speed?: number;
  /** QEMU's `duplex` (undefined: unknown; otherwise offered with SPEED_DUPLEX). */
  duplex?: 'half' | 'full';
  /** QEMU's `rx_queue_size` and `tx_queue_size` (256; powers of two, 256..1024). */
  rxQueueSize?: number;
  txQueueSize?: number;
  /** Frames per transmit round (QEMU's `x-txburst`, 256). */
  txBurst?: number;
  /** The NIC's net client name (QEMU: the device id, or `<type>.<n>`). */
  nicName?: string;
  /** Bounds of the frames waiting for the guest, per queue pair. */
  queueLimits?: NetQueueLimits;
  /** The virtual clock that paces announcements after a migration (none: no announcements). */
  clock?: Clock;
  /** The guest changed its receive filter: QEMU's NIC_RX_FILTER_CHANGED (sent once until `queryRxFilter`). */
  onRxFilterChanged?: () => void;
  /** RSS fell back to software steering (QEMU warns "Can't load eBPF RSS - fallback to software RSS"). */
  onWarning?: (message: string) => void;
}

/** One receive/transmit pair (QEMU's `VirtIONetQueue`). */
interface NetQueuePair {
  rx: VirtQueue;
  tx: VirtQueue;
  /** A transmit round is due (QEMU's `tx_waiting`, migrated). */
  txWaiting: number;
  /** The frame the backend has not taken yet (QEMU's `async_tx.elem`). */
  asyncTx: VirtQueueElement | undefined;
  /** The pair's index. */
  index: number;
  /** Told when the backend took the held frame (made once, so sending allocates nothing). */
  sent: NetPacketSent;
}

/** RSS state (QEMU's `VirtioNetRssData`). */
export interface RssData {
  enabled: boolean;
  enabledSoftwareRss: boolean;
  redirect: boolean;
  populateHash: boolean;
  hashTypes: number;
  indirectionsLen: number;
  defaultQueue: number;
  key: Uint8Array;
  indirections: Uint16Array;
}

/** What `loadDeviceState` parses before it changes anything. */
interface NetStage {
  mac: Uint8Array;
  txWaiting: number[];
  mergeable: number;
  status: number;
  promisc: number;
  allmulti: number;
  inUse: number;
  macs: Uint8Array;
  vlans: Uint8Array;
  multiOverflow: number;
  uniOverflow: number;
  alluni: number;
  nomulti: number;
  nouni: number;
  nobcast: number;
  currQueuePairs: number;
  currGuestOffloads: bigint | undefined;
  rss: RssData | undefined;
}

const ZERO_HDR = new Uint8Array(VIRTIO_NET_HDR_SIZE);

/**
 * Byte `i` of a frame for the receive filter. QEMU reads the header without a length check
 * (bytes past a short frame are its buffer's leftovers); here the missing bytes read as zero.
 */
function byteAt(buf: Uint8Array, off: number, size: number, i: number): number {
  return i < size ? buf[off + i]! : 0;
}
const DEFAULT_MAC = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);

/** One queue of the NIC as a net client (QEMU's NIC `NetClientState`s, `nic->ncs[i]`). */
class NicQueueClient extends NetClient {
  /** QEMU's `rxfilter_notify_enabled` (only queue 0's is used). */
  rxfilterNotifyEnabled = true;

  constructor(private readonly dev: VirtIONet, name: string, index: number, limits: NetQueueLimits | undefined) {
    super('nic', name, limits);
    this.queueIndex = index;
  }

  override canReceive(): boolean {
    return this.dev.canReceive(this.queueIndex);
  }

  override receive(buf: Uint8Array, off: number, len: number): number {
    return this.dev.receiveFrame(this.queueIndex, buf, off, len, false);
  }

  override linkStatusChanged(): void {
    this.dev.linkStatusChanged();
  }
}

export class VirtIONet extends VirtIODevice {
  /** The NIC's net clients, one per queue pair (QEMU's `nic->ncs`). */
  readonly ncs: readonly NetClient[];
  /** Queue pairs the backend provides (QEMU's `max_queue_pairs`). */
  readonly maxQueuePairs: number;
  /** Queue pairs in use (QEMU's `curr_queue_pairs`). */
  currQueuePairs = 1;
  /** MQ or RSS was negotiated: all pairs exist (QEMU's `multiqueue`). */
  multiqueue = false;
  /** The feature properties as set (QEMU's `n->host_features`, before the backend withdraws offloads). */
  readonly propertyFeatures: bigint;
  /** The MAC the NIC was configured with (QEMU's `nic_conf.macaddr`); reset restores it. */
  readonly confMac: Uint8Array;
  /** The MAC in use (QEMU's `n->mac`): changed by the guest through the config or the control queue. */
  readonly mac = new Uint8Array(6);
  /** QEMU's `n->status`: LINK_UP and ANNOUNCE. */
  netStatus = VIRTIO_NET_S_LINK_UP;
  promisc = 1;
  allmulti = 0;
  alluni = 0;
  nomulti = 0;
  nouni = 0;
  nobcast = 0;
  /** The MAC filter table: unicast entries first, then multicast from `firstMulti`. */
  readonly macTable = { inUse: 0, firstMulti: 0, multiOverflow: 0, uniOverflow: 0, macs: new Uint8Array(MAC_TABLE_ENTRIES * 6) };
  /** The VLAN filter: bit `vid` set when frames tagged `vid` pass (QEMU's host-endian u32 words). */
  readonly vlans = new Uint32Array(MAX_VLAN >> 5);
  mergeableRxBufs = 0;
  /** Header the guest sees (10, 12 or 20 bytes). */
  guestHdrLen = VIRTIO_NET_HDR_SIZE;
  /** Header the backend sees: none (QEMU's `host_hdr_len` without a vnet header). */
  readonly hostHdrLen = 0;
  currGuestOffloads = 0n;
  private savedGuestOffloads = 0n;
  readonly rss: RssData = {
    enabled: false, enabledSoftwareRss: false, redirect: false, populateHash: false, hashTypes: 0,
    indirectionsLen: 0, defaultQueue: 0, key: new Uint8Array(VIRTIO_NET_RSS_MAX_KEY_SIZE), indirections: new Uint16Array(0),
  };
  readonly hostMtu: number;
  readonly speed: number;
  readonly duplex: number;
  readonly rxQueueSize: number;
  readonly txQueueSize: number;
  readonly txBurst: number;
  readonly stats: VirtIONetStats = { rxFrames: 0, rxBytes: 0, rxFiltered: 0, rxTooBig: 0, txFrames: 0, txBytes: 0, txDropped: 0 };

  private readonly pairs: NetQueuePair[] = [];
  private ctrlVq!: VirtQueue;
  private readonly clock: Clock | undefined;
  /** The guest changed its receive filter (QEMU's NIC_RX_FILTER_CHANGED); sent once until `queryRxFilter`. */
  onRxFilterChanged: (() => void) | undefined;
  private readonly onWarning: ((message: string) => void) | undefined;
  /** Announce rounds left after a migration (QEMU's `announce_timer.round`). */
  announceRound = 0;
  private announceTimer: TimerHandle | undefined;
  private readonly announceParams = MIGRATE_ANNOUNCE_PARAMS;

  // Scratch state of the hot paths, reused for every frame.
  private readonly txScratch = new Uint8Array(NET_BUFSIZE);
  private readonly rxElems: VirtQueueElement[] = [];
  private readonly rxLens = new Float64Array(VIRTQUEUE_MAX_SIZE);
  private readonly ctrlBuf = new Uint8Array(8);
  private readonly numBuffers = new Uint8Array(2);

  constructor(opts: VirtIONetOptions) {
    const props = opts.properties ?? {};
    let f = 0n;
    for (const [name, [b, dflt]] of Object.entries(VIRTIO_NET_FEATURE_PROPS) as [VirtIONetFeatureProperty, readonly [number, boolean]][]) {
      if (props[name] ?? dflt) f |= bit(b);
    }
    const hostMtu = opts.hostMtu ?? 0;
    if (!Number.isInteger(hostMtu) || hostMtu < 0 || hostMtu > 0xffff) throw new RangeError(`host_mtu ${hostMtu} is not a 16-bit value`);
    if (hostMtu) f |= bit(VIRTIO_NET_F_MTU);
    let duplex = DUPLEX_UNKNOWN;
    if (opts.duplex !== undefined) {
      duplex = opts.duplex === 'half' ? DUPLEX_HALF : DUPLEX_FULL;
      f |= bit(VIRTIO_NET_F_SPEED_DUPLEX);
    }
    const speed = opts.speed ?? SPEED_UNKNOWN;
    if (!Number.isInteger(speed) || speed < SPEED_UNKNOWN || speed > 0x7fff_ffff) throw new RangeError("'speed' must be between 0 and INT_MAX");
    if (speed >= 0) f |= bit(VIRTIO_NET_F_SPEED_DUPLEX);
    const rxq = opts.rxQueueSize ?? VIRTIO_NET_QUEUE_DEFAULT_SIZE;
    const txq = opts.txQueueSize ?? VIRTIO_NET_QUEUE_DEFAULT_SIZE;
    if (!validQueueSize(rxq)) throw new RangeError(`Invalid rx_queue_size (= ${rxq}), must be a power of 2 between ${VIRTIO_NET_QUEUE_DEFAULT_SIZE} and ${VIRTQUEUE_MAX_SIZE}.`);
    if (!validQueueSize(txq)) throw new RangeError(`Invalid tx_queue_size (= ${txq}), must be a power of 2 between ${VIRTIO_NET_QUEUE_DEFAULT_SIZE} and ${VIRTQUEUE_MAX_SIZE}`);
    const peers = opts.netdev?.netClients ?? [];
    const maxPairs = Math.max(1, peers.length);
    if (maxPairs * 2 + 1 > VIRTIO_QUEUE_MAX) {
      throw new RangeError(`Invalid number of queue pairs (= ${maxPairs}), must be a positive integer less than ${(VIRTIO_QUEUE_MAX - 1) / 2}.`);
    }
    // The config is sized by the properties (and MAC, always), before the backend's offer.
    super(VIRTIO_ID_NET, virtioNetConfigSize(f | bit(VIRTIO_NET_F_MAC)), opts, 'virtio-net', offered(f));
    this.propertyFeatures = f;
    this.hostMtu = hostMtu;
    this.speed = speed;
    this.duplex = duplex;
    this.rxQueueSize = rxq;
    // Backends other than vhost-user/vdpa support no larger transmit queue than 256.
    this.txQueueSize = Math.min(VIRTIO_NET_QUEUE_DEFAULT_SIZE, txq);
    this.txBurst = Math.max(1, Math.floor(opts.txBurst ?? TX_BURST));
    this.maxQueuePairs = maxPairs;
    this.clock = opts.clock;
    this.onRxFilterChanged = opts.onRxFilterChanged;
    this.onWarning = opts.onWarning;
    const mac = opts.mac ?? DEFAULT_MAC;
    if (mac.length !== 6) throw new RangeError('a MAC address has 6 bytes');
    this.confMac = Uint8Array.from(mac);
    this.mac.set(mac);
    const name = opts.nicName ?? 'virtio-net-device.0';
    const ncs: NicQueueClient[] = [];
    for (let i = 0; i < maxPairs; i++) {
      const nc = new NicQueueClient(this, name, i, opts.queueLimits);
      const peer = peers[i];
      if (peer) connectPeers(nc, peer);
      ncs.push(nc);
    }
    this.ncs = ncs;
    // Realize: only pair 0 and the control queue; the rest come with MQ (Debian's 7.2.22).
    this.addPair();
    this.ctrlVq = this.addQueue(VIRTIO_NET_CTRL_QUEUE_SIZE, () => this.handleCtrl());
    this.setMrgRxBufs(0, false, false);
  }

  override get vmsdName(): string {
    return 'virtio-net';
  }
  override get vmsdVersion(): number {
    return 11;
  }

  /** GSO is offered only on a legacy interface (QEMU's `legacy_features`). */
  override get legacyFeatures(): bigint {
    return super.legacyFeatures | bit(VIRTIO_NET_F_GSO);
  }

  /** What Linux 2.6.25 understood (QEMU's `virtio_net_bad_features`). */
  override badFeatures(): bigint {
    return bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_CSUM) | bit(VIRTIO_NET_F_HOST_TSO4) | bit(VIRTIO_NET_F_HOST_TSO6) | bit(VIRTIO_NET_F_HOST_ECN);
  }

  /** QEMU's `virtio_net_get_features` for a backend without the vnet header. */
  protected override getFeatures(features: bigint): bigint {
    return offered(features | this.propertyFeatures);
  }

  /** The NIC's net client name (queue 0's). */
  get nicName(): string {
    return this.ncs[0]!.name;
  }

  /** Frames waiting for the guest, over all queue pairs. */
  get rxQueued(): number {
    return this.ncs.reduce((n, nc) => n + nc.incoming.length, 0);
  }

  /** Frames refused because the queue for the guest was full, over all queue pairs. */
  get rxDropped(): number {
    return this.ncs.reduce((n, nc) => n + nc.incoming.dropped, 0);
  }

  // ---------------------------------------------------------------------------------------
  // Queues

  private addPair(): void {
    const index = this.pairs.length;
    const rx = this.addQueue(this.rxQueueSize, () => this.handleRx(index));
    const tx = this.addQueue(this.txQueueSize, () => this.handleTx(index));
    const pair: NetQueuePair = { rx, tx, txWaiting: 0, asyncTx: undefined, index, sent: () => this.txComplete(pair) };
    this.pairs.push(pair);
  }

  /** QEMU's `virtio_net_change_num_queues`: the control queue last, pairs added or removed before it. */
  private changeNumQueues(num: number): void {
    const old = this.vq.length;
    if (old === num) return;
    this.removeQueuesFrom(old - 1); // the control queue
    const pairs = (num - 1) >> 1;
    while (this.pairs.length > pairs) {
      const q = this.pairs.pop()!;
      // QEMU's `virtio_net_del_queue`: frames the pair sent that wait in the peer go.
      const nc = this.ncs[this.pairs.length]!;
      if (nc.peer) nc.peer.incoming.purge(nc);
      q.asyncTx = undefined;
      q.txWaiting = 0;
      this.removeQueuesFrom(this.pairs.length * 2);
    }
    while (this.pairs.length < pairs) this.addPair();
    this.ctrlVq = this.addQueue(VIRTIO_NET_CTRL_QUEUE_SIZE, () => this.handleCtrl());
  }

  /** QEMU's `virtio_net_set_multiqueue`. */
  private setMultiqueue(multiqueue: boolean): void {
    const max = multiqueue ? this.maxQueuePairs : 1;
    this.multiqueue = multiqueue;
    this.changeNumQueues(max * 2 + 1);
  }

  // ---------------------------------------------------------------------------------------
  // Features, status, reset

  /** QEMU's `virtio_net_set_mrg_rx_bufs`. */
  private setMrgRxBufs(mergeable: number, version1: boolean, hashReport: boolean): void {
    this.mergeableRxBufs = mergeable;
    if (version1) {
      this.guestHdrLen = hashReport ? VIRTIO_NET_HDR_V1_HASH_SIZE : VIRTIO_NET_HDR_MRG_RXBUF_SIZE;
      this.rss.populateHash = hashReport;
    } else {
      this.guestHdrLen = mergeable ? VIRTIO_NET_HDR_MRG_RXBUF_SIZE : VIRTIO_NET_HDR_SIZE;
    }
  }

  /** QEMU's `virtio_net_set_features`. */
  protected override setFeaturesHook(features: bigint): void {
    this.setMultiqueue(hasBit(features, VIRTIO_NET_F_RSS) || hasBit(features, VIRTIO_NET_F_MQ));
    this.setMrgRxBufs(hasBit(features, VIRTIO_NET_F_MRG_RXBUF) ? 1 : 0, hasBit(features, VIRTIO_F_VERSION_1), hasBit(features, VIRTIO_NET_F_HASH_REPORT));
    this.rss.redirect = hasBit(features, VIRTIO_NET_F_RSS);
    // Without CTRL_VLAN every VLAN passes; with it, none until the guest adds them. (QEMU does
    // this on every feature set, a migration load included, which loses the loaded table: we
    // keep it there, docs/qemu-differences.md #72.)
    if (!this.loadingFeatures) this.vlans.fill(hasBit(features, VIRTIO_NET_F_CTRL_VLAN) ? 0 : 0xffff_ffff);
  }
  private loadingFeatures = false;

  override restoreFeatures(val: bigint): boolean {
    this.loadingFeatures = true;
    try {
      return super.restoreFeatures(val);
    } finally {
      this.loadingFeatures = false;
    }
  }

  /** QEMU's `virtio_net_started`. */
  private started_(status: number): boolean {
    return (status & VIRTIO_CONFIG_S_DRIVER_OK) !== 0 && (this.netStatus & VIRTIO_NET_S_LINK_UP) !== 0 && this.vmRunning;
  }

  /**
   * QEMU's `virtio_net_set_status`: queues that start get the frames waiting for them; a
   * transmit round that was due runs on a started queue, and is dropped with the queue's
   * buffers when the link went down.
   */
  private netSetStatus(status: number): void {
    for (let i = 0; i < this.maxQueuePairs; i++) {
      const queueStatus = (!this.multiqueue && i !== 0) || i >= this.currQueuePairs ? 0 : status;
      const queueStarted = this.started_(queueStatus);
      if (queueStarted) flushQueuedPackets(this.ncs[i]!);
      const q = this.pairs[i];
      if (!q || !q.txWaiting) continue;
      if (queueStarted) {
        this.txBh(q);
      } else if ((this.netStatus & VIRTIO_NET_S_LINK_UP) === 0 && queueStatus & VIRTIO_CONFIG_S_DRIVER_OK && this.vmRunning) {
        // Transmit buffers wait with notifications off: give them back.
        q.txWaiting = 0;
        q.tx.setNotification(true);
        this.dropTxQueueData(q.tx);
      }
    }
  }

  protected override setStatusHook(status: number): void {
    // The core stores the status after the hook; QEMU's set_status sees the new value too.
    this.netSetStatus(status);
  }

  /** QEMU's `virtio_vmstate_change` calls set_status with the current status on every change. */
  protected override vmStateChangeHook(running: boolean): void {
    if (!running) {
      // QEMU's `net_vm_change_state_handler` on stop: what waits for the guest is delivered or
      // given up (the NIC cannot receive while stopped, so it is given up), and what the NIC sent
      // and waits in its peer is pushed out or given up.
      for (const nc of this.ncs) {
        flushQueuedPackets(nc, true);
        if (nc.peer) flushQueuedPackets(nc.peer, true);
      }
    }
    this.netSetStatus(this.status);
  }

  protected override queueNotifiedWhileStopped(n: number): void {
    // QEMU's `virtio_net_handle_tx_bh` with the VM stopped notes that a round is due.
    const q = this.pairOfTx(n);
    if (q && this.netStatus & VIRTIO_NET_S_LINK_UP) q.txWaiting = 1;
  }

  /** QEMU's `virtio_net_reset`. */
  protected override resetDevice(): void {
    this.promisc = 1;
    this.allmulti = 0;
    this.alluni = 0;
    this.nomulti = 0;
    this.nouni = 0;
    this.nobcast = 0;
    this.currQueuePairs = 1;
    this.cancelAnnounceTimer();
    this.announceRound = 0;
    this.netStatus &= ~VIRTIO_NET_S_ANNOUNCE;
    this.macTable.inUse = 0;
    this.macTable.firstMulti = 0;
    this.macTable.multiOverflow = 0;
    this.macTable.uniOverflow = 0;
    this.macTable.macs.fill(0);
    this.mac.set(this.confMac);
    this.vlans.fill(0);
    for (let i = 0; i < this.maxQueuePairs; i++) {
      // Frames the NIC sent that still wait in the peer are flushed or given up; a transmit the
      // backend had not taken is forgotten with the queue.
      const nc = this.ncs[i]!;
      if (nc.peer) flushQueuedPackets(nc.peer, true);
      const q = this.pairs[i];
      if (q) q.asyncTx = undefined;
    }
  }

  /** QEMU's `virtio_net_queue_reset`: frames the pair sent that wait in the peer are flushed or given up. */
  protected override queueResetHook(n: number): void {
    if (n >= this.maxQueuePairs * 2) return;
    const nc = this.ncs[n >> 1]!;
    if (nc.peer) flushQueuedPackets(nc.peer, true);
    const q = this.pairs[n >> 1];
    if (q && (n & 1) === 1) q.asyncTx = undefined;
  }

  // ---------------------------------------------------------------------------------------
  // Configuration space

  /** QEMU's `virtio_net_get_config`. */
  protected override getConfig(config: Uint8Array): void {
    const netcfg = new Uint8Array(VIRTIO_NET_CONFIG_SIZE);
    const v = new DataView(netcfg.buffer);
    const le = !this.isBigEndian();
    netcfg.set(this.mac, VIRTIO_NET_CFG_MAC);
    v.setUint16(VIRTIO_NET_CFG_STATUS, this.netStatus, le);
    v.setUint16(VIRTIO_NET_CFG_MAX_VQ_PAIRS, this.maxQueuePairs, le);
    v.setUint16(VIRTIO_NET_CFG_MTU, this.hostMtu, le);
    v.setUint32(VIRTIO_NET_CFG_SPEED, this.speed >>> 0, le);
    netcfg[VIRTIO_NET_CFG_DUPLEX] = this.duplex;
    netcfg[VIRTIO_NET_CFG_RSS_MAX_KEY_SIZE] = VIRTIO_NET_RSS_MAX_KEY_SIZE;
    v.setUint16(VIRTIO_NET_CFG_RSS_MAX_TABLE_LEN, this.hostHasFeature(VIRTIO_NET_F_RSS) ? VIRTIO_NET_RSS_MAX_TABLE_LEN : 1, le);
    v.setUint32(VIRTIO_NET_CFG_SUPPORTED_HASH_TYPES, VIRTIO_NET_RSS_SUPPORTED_HASHES, le);
    config.set(netcfg.subarray(0, config.length));
  }

  /** QEMU's `virtio_net_set_config`: a legacy driver without CTRL_MAC_ADDR sets the MAC here. */
  protected override setConfig(config: Uint8Array): void {
    if (this.hasFeature(VIRTIO_NET_F_CTRL_MAC_ADDR) || this.hasFeature(VIRTIO_F_VERSION_1)) return;
    for (let i = 0; i < 6; i++) {
      if (config[i] !== this.mac[i]) {
        this.mac.set(config.subarray(0, 6));
        return;
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // Link status and announcements

  /** The link as the guest sees it. */
  get linkUp(): boolean {
    return (this.netStatus & VIRTIO_NET_S_LINK_UP) !== 0;
  }

  /**
   * Set the link up or down, as QMP `set_link` does with the NIC's name: the NIC's queues (and
   * its peers, when they are NICs) change, the status bit follows with a config interrupt.
   */
  setLink(up: boolean): void {
    for (const nc of this.ncs) nc.linkDown = !up;
    this.linkStatusChanged();
    const peer = this.ncs[0]!.peer;
    if (peer) {
      if (peer.kind === 'nic') for (const nc of this.ncs) if (nc.peer) nc.peer.linkDown = !up;
      peer.linkStatusChanged();
    }
  }

  /** QEMU's `virtio_net_set_link_status` (the NIC's `link_status_changed`). */
  linkStatusChanged(): void {
    const old = this.netStatus;
    if (this.ncs[0]!.linkDown) this.netStatus &= ~VIRTIO_NET_S_LINK_UP;
    else this.netStatus |= VIRTIO_NET_S_LINK_UP;
    if (this.netStatus !== old) this.notifyConfig();
    this.netSetStatus(this.status);
  }

  /** QEMU's `virtio_net_announce_notify`. */
  private announceNotify(): void {
    this.netStatus |= VIRTIO_NET_S_ANNOUNCE;
    this.notifyConfig();
  }

  /**
   * QEMU's `virtio_net_announce` (QMP `announce-self` for this NIC): ask the guest to announce
   * itself, if it negotiated GUEST_ANNOUNCE and the control queue and no migration round is due.
   */
  announce(): void {
    if (this.announceRound) return;
    if (this.hasFeature(VIRTIO_NET_F_GUEST_ANNOUNCE) && this.hasFeature(VIRTIO_NET_F_CTRL_VQ)) this.announceNotify();
  }

  private cancelAnnounceTimer(): void {
    if (this.announceTimer && this.clock) this.clock.cancel(this.announceTimer);
    this.announceTimer = undefined;
  }

  private armAnnounceTimer(deltaMs: number): void {
    if (!this.clock) return;
    this.cancelAnnounceTimer();
    this.announceTimer = this.clock.setTimer(this.clock.now() + deltaMs * 1e6, () => {
      this.announceTimer = undefined;
      this.announceRound--;
      this.announceNotify();
    });
  }

  /** QEMU's `qemu_announce_timer_step`. */
  private announceTimerStep(): void {
    const p = this.announceParams;
    let step = p.initial + (p.rounds - this.announceRound - 1) * p.step;
    if (step < 0 || step > p.max) step = p.max;
    this.armAnnounceTimer(step);
  }

  // ---------------------------------------------------------------------------------------
  // Receive filter state and QMP

  private rxfilterNotify(): void {
    const nc = this.ncs[0] as NicQueueClient;
    if (!nc.rxfilterNotifyEnabled) return;
    nc.rxfilterNotifyEnabled = false;
    const cb = this.onRxFilterChanged;
    if (cb) callHost(this, 'onRxFilterChanged', cb);
  }

  /** QEMU's `virtio_net_query_rxfilter` (QMP `query-rx-filter`); re-arms NIC_RX_FILTER_CHANGED. */
  queryRxFilter(): RxFilterInfo {
    const vlanTable: number[] = [];
    // QEMU builds its lists by prepending: the highest id first.
    for (let i = 0; i < MAX_VLAN >> 5; i++) {
      const w = this.vlans[i]!;
      for (let j = 0; w !== 0 && j <= 0x1f; j++) if (w & (1 << j)) vlanTable.unshift((i << 5) + j);
    }
    const macAt = (i: number) => formatMac(this.macTable.macs.subarray(i * 6, i * 6 + 6));
    const uni: string[] = [];
    for (let i = 0; i < this.macTable.firstMulti; i++) uni.unshift(macAt(i));
    const multi: string[] = [];
    for (let i = this.macTable.firstMulti; i < this.macTable.inUse; i++) multi.unshift(macAt(i));
    const info: RxFilterInfo = {
      name: this.nicName,
      promiscuous: this.promisc !== 0,
      multicast: this.nomulti ? 'none' : this.allmulti ? 'all' : 'normal',
      unicast: this.nouni ? 'none' : this.alluni ? 'all' : 'normal',
      vlan: !this.hasFeature(VIRTIO_NET_F_CTRL_VLAN) ? 'all' : vlanTable.length === 0 ? 'none' : 'normal',
      // QEMU reports `nobcast` here (inverted, as it is in 7.2).
      'broadcast-allowed': this.nobcast !== 0,
      'multicast-overflow': this.macTable.multiOverflow !== 0,
      'unicast-overflow': this.macTable.uniOverflow !== 0,
      'main-mac': formatMac(this.mac),
      'vlan-table': vlanTable,
      'unicast-table': uni,
      'multicast-table': multi,
    };
    (this.ncs[0] as NicQueueClient).rxfilterNotifyEnabled = true;
    return info;
  }

  /** QEMU's `receive_filter`: whether a frame may reach the guest. */
  private receiveFilter(buf: Uint8Array, off: number, size: number): boolean {
    if (this.promisc) return true;
    // (No closure over buf here: its context would be allocated on every call, promiscuous too.)
    if (byteAt(buf, off, size, 12) === 0x81 && byteAt(buf, off, size, 13) === 0x00) {
      const vid = ((byteAt(buf, off, size, 14) << 8) | byteAt(buf, off, size, 15)) & 0xfff;
      if (!(this.vlans[vid >> 5]! & (1 << (vid & 0x1f)))) return false;
    }
    if (byteAt(buf, off, size, 0) & 1) {
      let bcast = true;
      for (let i = 0; i < 6; i++) if (byteAt(buf, off, size, i) !== 0xff) bcast = false;
      if (bcast) return !this.nobcast;
      if (this.nomulti) return false;
      if (this.allmulti || this.macTable.multiOverflow) return true;
      for (let i = this.macTable.firstMulti; i < this.macTable.inUse; i++) if (this.macMatches(buf, off, size, i)) return true;
    } else {
      if (this.nouni) return false;
      if (this.alluni || this.macTable.uniOverflow) return true;
      let own = true;
      for (let i = 0; i < 6; i++) if (byteAt(buf, off, size, i) !== this.mac[i]) own = false;
      if (own) return true;
      for (let i = 0; i < this.macTable.firstMulti; i++) if (this.macMatches(buf, off, size, i)) return true;
    }
    return false;
  }

  private macMatches(buf: Uint8Array, off: number, size: number, entry: number): boolean {
    const macs = this.macTable.macs;
    for (let i = 0; i < 6; i++) if ((i < size ? buf[off + i]! : 0) !== macs[entry * 6 + i]) return false;
    return true;
  }

  // ---------------------------------------------------------------------------------------
  // Receive

  /** QEMU's `virtio_net_can_receive`. */
  canReceive(queueIndex: number): boolean {
    if (!this.vmRunning) return false;
    if (queueIndex >= this.currQueuePairs) return false;
    const q = this.pairs[queueIndex];
    if (!q || !q.rx.ready || !(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) return false;
    return true;
  }

  /**
   * QEMU's `virtio_net_has_buffers`: enough buffers for `bufsize` bytes (with mergeable buffers,
   * over several chains; without, one chain whatever its size). Notifications are left on when
   * there are not, so the guest's next buffer brings the frame in; off when there are.
   */
  private hasBuffers(rx: VirtQueue, bufsize: number): boolean {
    if (rx.isEmpty() || this.mergeableRxBufs !== 0) {
      const inBytes = rx.availInBytes(bufsize);
      if (bufsize > inBytes) {
        // QEMU then checks whether the guest added buffers meanwhile; the guest and the device
        // take turns here, so it cannot have.
        rx.setNotification(true);
        return false;
      }
    }
    rx.setNotification(false);
    return true;
  }

  /**
   * A frame from the backend for queue pair `queueIndex` (QEMU's `virtio_net_receive_rcu`).
   * Returns its length when it was delivered or dropped, 0 when it must wait for buffers, -1
   * when the NIC cannot receive at all.
   */
  receiveFrame(queueIndex: number, buf: Uint8Array, off: number, size: number, noRss: boolean): number {
    if (!this.canReceive(queueIndex)) return -1;
    // QEMU answers 0 for an empty frame ("not now"), which parks it, and every frame after it,
    // in the queue for good; an empty frame carries nothing, so it is dropped here.
    if (size === 0) return -1;
    if (!noRss && this.rss.enabled && this.rss.enabledSoftwareRss) {
      const index = rssSteer(this.rss, queueIndex, buf, off, size);
      if (index >= 0) return this.receiveFrame(index % this.currQueuePairs, buf, off, size, true);
    }
    const q = this.pairs[queueIndex]!;
    const rx = q.rx;
    if (this.broken) {
      // A broken device pops nothing: QEMU drops the frame when buffers are there, else queues it.
      return rx.availableHeadsRaw() > 0 ? -1 : 0;
    }
    const hdrLen = this.guestHdrLen;
    if (!this.hasBuffers(rx, size + hdrLen - this.hostHdrLen)) return 0;
    if (!this.receiveFilter(buf, off, size)) {
      this.stats.rxFiltered++;
      return size;
    }
    const mergeable = this.mergeableRxBufs !== 0;
    const elems = this.rxElems;
    const lens = this.rxLens;
    let offset = 0;
    let i = 0;
    let err = 0;
    let failed = false;
    while (offset < size) {
      let total = 0;
      if (i === VIRTQUEUE_MAX_SIZE) {
        this.virtioError('virtio-net unexpected long buffer chain');
        err = size;
        failed = true;
        break;
      }
      const elem = rx.pop();
      if (!elem) {
        if (i) {
          this.virtioError(
            `virtio-net unexpected empty queue: i ${i} mergeable ${this.mergeableRxBufs} offset ${offset}, size ${size}, guest hdr len ${hdrLen}, host hdr len ${this.hostHdrLen} guest features 0x${this.guestFeatures.toString(16)}`,
          );
        }
        err = -1;
        failed = true;
        break;
      }
      if (elem.inNum < 1) {
        this.virtioError('virtio-net receive queue contains no in buffers');
        rx.detach(elem);
        err = -1;
        failed = true;
        break;
      }
      let guestOffset: number;
      if (i === 0) {
        // The header, with nothing offloaded: QEMU writes the 10-byte legacy header; the rest
        // of a longer one is `num_buffers`, written below with mergeable buffers (and left as
        // the guest had it without them).
        elem.writeInFrom(0, ZERO_HDR, 0, VIRTIO_NET_HDR_SIZE);
        offset = this.hostHdrLen;
        total += hdrLen;
        guestOffset = hdrLen;
      } else {
        guestOffset = 0;
      }
      const len = elem.writeInFrom(guestOffset, buf, off + offset, size - offset);
      total += len;
      offset += len;
      if (!mergeable && offset < size) {
        // The frame does not fit: it is dropped and the buffer stays for the next one.
        rx.unpop(elem);
        this.stats.rxTooBig++;
        err = size;
        failed = true;
        break;
      }
      elems[i] = elem;
      lens[i] = total;
      i++;
    }
    if (failed) {
      for (let j = 0; j < i; j++) rx.detach(elems[j]!);
      return err;
    }
    if (mergeable && i > 0) {
      const nb = this.numBuffers;
      if (this.isBigEndian()) {
        nb[0] = (i >> 8) & 0xff;
        nb[1] = i & 0xff;
      } else {
        nb[0] = i & 0xff;
        nb[1] = (i >> 8) & 0xff;
      }
      elems[0]!.writeInFrom(VIRTIO_NET_HDR_NUM_BUFFERS, nb, 0, 2);
    }
    for (let j = 0; j < i; j++) rx.fill(elems[j]!, lens[j]!, j);
    rx.flush(i);
    this.notify(rx);
    this.stats.rxFrames++;
    this.stats.rxBytes += size;
    return size;
  }

  /** QEMU's `virtio_net_handle_rx`: the guest posted buffers; deliver what waits. */
  private handleRx(index: number): void {
    flushQueuedPackets(this.ncs[index]!);
  }

  // ---------------------------------------------------------------------------------------
  // Transmit

  private pairOfTx(n: number): NetQueuePair | undefined {
    if ((n & 1) === 0) return undefined;
    const q = this.pairs[n >> 1];
    return q && q.tx.index === n ? q : undefined;
  }

  /** QEMU's `virtio_net_drop_tx_queue_data`. */
  private dropTxQueueData(tx: VirtQueue): void {
    if (tx.dropAll()) this.notify(tx);
  }

  /** QEMU's `virtio_net_handle_tx_bh`: with the bottom half run at once. */
  private handleTx(index: number): void {
    const q = this.pairs[index]!;
    if ((this.netStatus & VIRTIO_NET_S_LINK_UP) === 0) {
      this.dropTxQueueData(q.tx);
      return;
    }
    if (q.txWaiting) return;
    q.txWaiting = 1;
    if (!this.vmRunning) return;
    q.tx.setNotification(false);
    this.txBh(q);
  }

  /**
   * QEMU's `virtio_net_tx_bh`, rescheduling itself in a loop: a full burst means more is likely
   * there; less than a burst turns notifications back on and checks once more. Each round pops
   * at least one chain or stops, so the loop is bounded by what the guest made available.
   */
  private txBh(q: NetQueuePair): void {
    for (;;) {
      if (!this.vmRunning) return;
      q.txWaiting = 0;
      if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) return;
      let ret = this.flushTx(q);
      if (ret < 0) return;
      if (ret >= this.txBurst) {
        q.txWaiting = 1;
        continue;
      }
      q.tx.setNotification(true);
      ret = this.flushTx(q);
      if (ret > 0) {
        q.tx.setNotification(false);
        q.txWaiting = 1;
        continue;
      }
      return;
    }
  }

  /**
   * QEMU's `virtio_net_flush_tx`: send up to a burst of frames. Returns how many, -1 when one
   * waits for the backend (EBUSY), -2 when the device broke (EINVAL).
   */
  private flushTx(q: NetQueuePair): number {
    if (!(this.status & VIRTIO_CONFIG_S_DRIVER_OK)) return 0;
    if (q.asyncTx) {
      q.tx.setNotification(false);
      return 0;
    }
    const tx = q.tx;
    const hdrLen = this.guestHdrLen;
    const nc = this.ncs[q.index]!;
    let sent = 0;
    for (;;) {
      const elem = tx.pop();
      if (!elem) break;
      if (elem.outNum < 1) {
        this.virtioError('virtio-net header not in first element');
        tx.detach(elem);
        return -2;
      }
      // The backend takes no header: the frame is what follows it.
      const size = elem.outBytes - hdrLen;
      if (size <= 0) {
        this.virtioError('virtio-net nothing to send');
        tx.detach(elem);
        return -2;
      }
      let ret: number;
      if (size > NET_BUFSIZE) {
        // QEMU's `qemu_sendv_packet_async` drops what no net client could hold, unread.
        this.stats.txDropped++;
        ret = size;
      } else if (nc.linkDown || nc.peer === undefined) {
        this.stats.txDropped++;
        ret = size;
      } else {
        ret = this.sendFrame(nc, elem, hdrLen, size, q.sent);
      }
      if (ret === 0) {
        tx.setNotification(false);
        q.asyncTx = elem;
        return -1;
      }
      tx.push(elem, 0);
      this.notify(tx);
      if (++sent >= this.txBurst) break;
    }
    return sent;
  }

  /** Hand one frame to the peer: straight from guest RAM when it is contiguous there, else gathered. */
  private sendFrame(nc: NetClient, elem: VirtQueueElement, hdrLen: number, size: number, done: NetPacketSent): number {
    // Find the readable entry where the frame starts.
    let skip = hdrLen;
    let i = 0;
    while (i < elem.outNum && skip >= elem.sgLen[i]!) skip -= elem.sgLen[i++]!;
    let ret: number;
    if (i < elem.outNum && elem.sgLen[i]! - skip >= size) {
      const addr = elem.sgAddr[i]! + skip;
      const r = this.memory.findRegion(addr, size);
      if (r === undefined) return size;
      ret = sendPacket(nc, r.bytes, addr - r.base, size, done);
    } else {
      const got = elem.readOutInto(hdrLen, this.txScratch, 0, size);
      ret = sendPacket(nc, this.txScratch, 0, got, done);
    }
    if (ret !== 0) {
      this.stats.txFrames++;
      this.stats.txBytes += size;
    }
    return ret;
  }

  /** QEMU's `virtio_net_tx_complete`: the backend took the frame it held. */
  private txComplete(q: NetQueuePair): void {
    const elem = q.asyncTx;
    if (elem === undefined || this.pairs[q.index] !== q) return; // the queue was reset or removed meanwhile
    this.stats.txFrames++;
    this.stats.txBytes += elem.outBytes - this.guestHdrLen;
    this.guarded(() => {
      q.tx.push(elem, 0);
      this.notify(q.tx);
      q.asyncTx = undefined;
      q.tx.setNotification(true);
      const ret = this.flushTx(q);
      if (ret >= this.txBurst) {
        q.tx.setNotification(false);
        q.txWaiting = 1;
        this.txBh(q);
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // Control queue

  /** QEMU's `virtio_net_handle_ctrl`. */
  private handleCtrl(): void {
    const vq = this.ctrlVq;
    for (;;) {
      const elem = vq.pop();
      if (!elem) break;
      const written = this.handleCtrlElem(elem);
      if (written > 0) {
        vq.push(elem, written);
        this.notify(vq);
      } else {
        vq.detach(elem);
        break;
      }
    }
  }

  /** QEMU's `virtio_net_handle_ctrl_iov`: one command; returns the bytes written (the ack), 0 on error. */
  private handleCtrlElem(elem: VirtQueueElement): number {
    if (elem.inBytes < 1 || elem.outBytes < 2) {
      this.virtioError('virtio-net ctrl missing headers');
      return 0;
    }
    const b = this.ctrlBuf;
    elem.readOutInto(0, b, 0, 2);
    const cls = b[0]!;
    const cmd = b[1]!;
    // The command's data: the readable bytes after class and command.
    const data = { elem, start: 2, size: elem.outBytes - 2 };
    let status = VIRTIO_NET_ERR;
    switch (cls) {
      case VIRTIO_NET_CTRL_RX:
        status = this.handleRxMode(cmd, data);
        break;
      case VIRTIO_NET_CTRL_MAC:
        status = this.handleMac(cmd, data);
        break;
      case VIRTIO_NET_CTRL_VLAN:
        status = this.handleVlanTable(cmd, data);
        break;
      case VIRTIO_NET_CTRL_ANNOUNCE:
        status = this.handleAnnounce(cmd);
        break;
      case VIRTIO_NET_CTRL_MQ:
        status = this.handleMq(cmd, data);
        break;
      case VIRTIO_NET_CTRL_GUEST_OFFLOADS:
        status = this.handleOffloads(cmd, data);
        break;
    }
    b[0] = status;
    elem.writeInFrom(0, b, 0, 1);
    return 1;
  }

  /** Read `n` bytes (at most 8) of command data at `at` into the scratch buffer; returns how many were there. */
  private ctrlRead(d: CtrlData, at: number, n: number): number {
    if (at >= d.size) return 0;
    return d.elem.readOutInto(d.start + at, this.ctrlBuf, 0, Math.min(n, d.size - at));
  }

  private ctrlU16(off = 0): number {
    const b = this.ctrlBuf;
    return this.isBigEndian() ? (b[off]! << 8) | b[off + 1]! : b[off]! | (b[off + 1]! << 8);
  }
  private ctrlU32(off = 0): number {
    const b = this.ctrlBuf;
    return this.isBigEndian()
      ? ((b[off]! << 24) | (b[off + 1]! << 16) | (b[off + 2]! << 8) | b[off + 3]!) >>> 0
      : (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
  }

  /** QEMU's `virtio_net_handle_rx_mode` (no feature check, as in QEMU; the byte is kept as given). */
  private handleRxMode(cmd: number, d: CtrlData): number {
    if (this.ctrlRead(d, 0, 1) !== 1) return VIRTIO_NET_ERR;
    const on = this.ctrlBuf[0]!;
    switch (cmd) {
      case VIRTIO_NET_CTRL_RX_PROMISC: this.promisc = on; break;
      case VIRTIO_NET_CTRL_RX_ALLMULTI: this.allmulti = on; break;
      case VIRTIO_NET_CTRL_RX_ALLUNI: this.alluni = on; break;
      case VIRTIO_NET_CTRL_RX_NOMULTI: this.nomulti = on; break;
      case VIRTIO_NET_CTRL_RX_NOUNI: this.nouni = on; break;
      case VIRTIO_NET_CTRL_RX_NOBCAST: this.nobcast = on; break;
      default: return VIRTIO_NET_ERR;
    }
    this.rxfilterNotify();
    return VIRTIO_NET_OK;
  }

  /**
   * QEMU's `virtio_net_handle_mac`: the address (exactly 6 bytes), or the table: a unicast count
   * and its entries, a multicast count and exactly its entries. A count beyond the table sets
   * the overflow flag (which passes that kind of frame) instead of copying. The byte counts are
   * QEMU's 32-bit products, wrap included, so a guest sees QEMU's answer for any count.
   */
  private handleMac(cmd: number, d: CtrlData): number {
    if (cmd === VIRTIO_NET_CTRL_MAC_ADDR_SET) {
      if (d.size !== 6) return VIRTIO_NET_ERR;
      d.elem.readOutInto(d.start, this.mac, 0, 6);
      this.rxfilterNotify();
      return VIRTIO_NET_OK;
    }
    if (cmd !== VIRTIO_NET_CTRL_MAC_TABLE_SET) return VIRTIO_NET_ERR;
    const macs = new Uint8Array(MAC_TABLE_ENTRIES * 6);
    let inUse = 0;
    let uniOverflow = 0;
    let multiOverflow = 0;
    let at = 0;
    if (this.ctrlRead(d, at, 4) !== 4) return VIRTIO_NET_ERR;
    let entries = this.ctrlU32();
    at += 4;
    let bytes = Math.imul(entries, 6) >>> 0;
    if (bytes > d.size - at) return VIRTIO_NET_ERR;
    if (entries <= MAC_TABLE_ENTRIES) {
      if (d.elem.readOutInto(d.start + at, macs, 0, bytes) !== bytes) return VIRTIO_NET_ERR;
      inUse += entries;
    } else {
      uniOverflow = 1;
    }
    at += bytes;
    const firstMulti = inUse;
    if (this.ctrlRead(d, at, 4) !== 4) return VIRTIO_NET_ERR;
    entries = this.ctrlU32();
    at += 4;
    bytes = Math.imul(entries, 6) >>> 0;
    if (bytes !== d.size - at) return VIRTIO_NET_ERR;
    if (entries <= MAC_TABLE_ENTRIES - inUse) {
      if (d.elem.readOutInto(d.start + at, macs, inUse * 6, bytes) !== bytes) return VIRTIO_NET_ERR;
      inUse += entries;
    } else {
      multiOverflow = 1;
    }
    const t = this.macTable;
    t.inUse = inUse;
    t.firstMulti = firstMulti;
    t.uniOverflow = uniOverflow;
    t.multiOverflow = multiOverflow;
    t.macs.set(macs);
    this.rxfilterNotify();
    return VIRTIO_NET_OK;
  }

  /** QEMU's `virtio_net_handle_vlan_table`: ids 0..4095, no feature check. */
  private handleVlanTable(cmd: number, d: CtrlData): number {
    if (this.ctrlRead(d, 0, 2) !== 2) return VIRTIO_NET_ERR;
    const vid = this.ctrlU16();
    if (vid >= MAX_VLAN) return VIRTIO_NET_ERR;
    if (cmd === VIRTIO_NET_CTRL_VLAN_ADD) this.vlans[vid >> 5] = this.vlans[vid >> 5]! | (1 << (vid & 0x1f));
    else if (cmd === VIRTIO_NET_CTRL_VLAN_DEL) this.vlans[vid >> 5] = this.vlans[vid >> 5]! & ~(1 << (vid & 0x1f));
    else return VIRTIO_NET_ERR;
    this.rxfilterNotify();
    return VIRTIO_NET_OK;
  }

  /** QEMU's `virtio_net_handle_announce`: the guest announced itself. */
  private handleAnnounce(cmd: number): number {
    if (cmd === VIRTIO_NET_CTRL_ANNOUNCE_ACK && this.netStatus & VIRTIO_NET_S_ANNOUNCE) {
      this.netStatus &= ~VIRTIO_NET_S_ANNOUNCE;
      if (this.announceRound) this.announceTimerStep();
      return VIRTIO_NET_OK;
    }
    return VIRTIO_NET_ERR;
  }

  /** QEMU's `virtio_net_disable_rss`. */
  private disableRss(): void {
    this.rss.enabled = false;
  }

  /**
   * QEMU's `virtio_net_handle_rss`: RSS (`doRss`) or hash-report configuration. Returns the queue
   * pairs it asks for, 0 on a refusal (RSS is then off).
   */
  private handleRss(d: CtrlData, doRss: boolean): number {
    const r = this.rss;
    const error = (): number => {
      this.disableRss();
      return 0;
    };
    if (doRss && !this.hasFeature(VIRTIO_NET_F_RSS)) return error();
    if (!doRss && !this.hasFeature(VIRTIO_NET_F_HASH_REPORT)) return error();
    // hash_types, indirection_table_mask, unclassified_queue.
    if (this.ctrlRead(d, 0, 8) !== 8) return error();
    r.hashTypes = this.ctrlU32(0);
    let len = ((this.ctrlU16(4) + 1) & 0xffff);
    if (!doRss) len = 1;
    if (len === 0 || (len & (len - 1)) !== 0) return error();
    if (len > VIRTIO_NET_RSS_MAX_TABLE_LEN) return error();
    r.indirectionsLen = len;
    const dflt = doRss ? this.ctrlU16(6) : 0;
    r.defaultQueue = dflt;
    if (dflt >= this.maxQueuePairs) return error();
    let at = 8;
    const table = new Uint16Array(len);
    const raw = new Uint8Array(len * 2);
    if (at + raw.length > d.size || d.elem.readOutInto(d.start + at, raw, 0, raw.length) !== raw.length) {
      r.indirections = table;
      return error();
    }
    const be = this.isBigEndian();
    for (let i = 0; i < len; i++) table[i] = be ? (raw[2 * i]! << 8) | raw[2 * i + 1]! : raw[2 * i]! | (raw[2 * i + 1]! << 8);
    r.indirections = table;
    at += raw.length;
    // max_tx_vq (u16) and hash_key_length (u8).
    if (this.ctrlRead(d, at, 3) !== 3) return error();
    const pairs = doRss ? this.ctrlU16(0) : this.currQueuePairs;
    const keyLen = this.ctrlBuf[2]!;
    if (pairs === 0 || pairs > this.maxQueuePairs) return error();
    if (keyLen > VIRTIO_NET_RSS_MAX_KEY_SIZE) return error();
    if (keyLen === 0 && r.hashTypes) return error();
    if (keyLen === 0 && !r.hashTypes) {
      this.disableRss();
      return pairs;
    }
    at += 3;
    if (at + keyLen > d.size || d.elem.readOutInto(d.start + at, r.key, 0, keyLen) !== keyLen) return error();
    r.enabled = true;
    // No backend takes eBPF steering here, so RSS is done in software, as QEMU falls back to.
    if (!r.populateHash) {
      const warn = this.onWarning;
      if (warn) callHost(this, 'onWarning', () => warn("Can't load eBPF RSS - fallback to software RSS"));
    }
    r.enabledSoftwareRss = true;
    return pairs;
  }

  /** QEMU's `virtio_net_handle_mq`. */
  private handleMq(cmd: number, d: CtrlData): number {
    this.disableRss();
    let pairs: number;
    if (cmd === VIRTIO_NET_CTRL_MQ_HASH_CONFIG) {
      return this.handleRss(d, false) ? VIRTIO_NET_OK : VIRTIO_NET_ERR;
    } else if (cmd === VIRTIO_NET_CTRL_MQ_RSS_CONFIG) {
      pairs = this.handleRss(d, true);
    } else if (cmd === VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) {
      if (!this.hasFeature(VIRTIO_NET_F_MQ)) return VIRTIO_NET_ERR;
      if (this.ctrlRead(d, 0, 2) !== 2) return VIRTIO_NET_ERR;
      pairs = this.ctrlU16();
    } else {
      return VIRTIO_NET_ERR;
    }
    if (pairs < VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN || pairs > VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX || pairs > this.maxQueuePairs || !this.multiqueue) {
      return VIRTIO_NET_ERR;
    }
    this.currQueuePairs = pairs;
    this.netSetStatus(this.status);
    return VIRTIO_NET_OK;
  }

  /** QEMU's `virtio_net_handle_offloads`: nothing to offload without a vnet header, so refused. */
  private handleOffloads(cmd: number, d: CtrlData): number {
    if (!this.hasFeature(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)) return VIRTIO_NET_ERR;
    if (this.ctrlRead(d, 0, 8) !== 8) return VIRTIO_NET_ERR;
    if (cmd === VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET) return VIRTIO_NET_ERR; // !has_vnet_hdr
    return VIRTIO_NET_ERR;
  }

  // ---------------------------------------------------------------------------------------
  // Migration: `virtio-net-device` v11 after the common blob

  /** Loads accept 3 queues, or 2 × pairs + 1 with multiqueue (QEMU's `pre_load_queues`). */
  override queueCountForLoad(num: number): number | string {
    const mq = this.maxQueuePairs * 2 + 1;
    if (num === 3 || num === mq) return num;
    return `virtio-net: ${num} queues in the stream, but ${this.name} has 3, or ${mq} with multiqueue`;
  }

  override preLoadQueues(num: number): void {
    this.changeNumQueues(num);
  }

  /**
   * The stream's queue count must match its features: 2 × pairs + 1 with MQ or RSS, else 3
   * (QEMU would rebuild the queues at `set_features` and lose the loaded ones).
   */
  override checkLoad(features: bigint, num: number): string | undefined {
    const mq = (hasBit(features, VIRTIO_NET_F_MQ) || hasBit(features, VIRTIO_NET_F_RSS)) && this.maxQueuePairs > 1;
    const want = mq ? this.maxQueuePairs * 2 + 1 : 3;
    if (num !== want) return `virtio-net: ${num} queues in the stream, but its features need ${want}`;
    return undefined;
  }

  private deviceVmsd(stage?: NetStage): VMStateDescription {
    const st = () => stage!;
    const mqFields = this.maxQueuePairs > 1;
    return {
      name: 'virtio-net-device',
      versionId: 11,
      minimumVersionId: 11,
      save: (f) => {
        f.putBuffer(this.mac);
        f.putBe32(this.pairs[0]?.txWaiting ?? 0);
        f.putBe32(this.mergeableRxBufs);
        f.putBe16(this.netStatus);
        f.putByte(this.promisc);
        f.putByte(this.allmulti);
        const t = this.macTable;
        f.putBe32(t.inUse);
        if (t.inUse <= MAC_TABLE_ENTRIES) f.putBuffer(t.macs.subarray(0, t.inUse * 6));
        else f.putZeros(t.inUse * 6);
        f.putBuffer(vlanBytes(this.vlans));
        f.putBe32(0); // has_vnet_hdr
        f.putByte(t.multiOverflow);
        f.putByte(t.uniOverflow);
        f.putByte(this.alluni);
        f.putByte(this.nomulti);
        f.putByte(this.nouni);
        f.putByte(this.nobcast);
        f.putByte(0); // has_ufo
        if (mqFields) {
          f.putBe16(this.maxQueuePairs);
          f.putBe16(this.currQueuePairs);
        }
        for (let i = 1; i < this.currQueuePairs; i++) f.putBe32(this.pairs[i]?.txWaiting ?? 0);
        if (this.hasFeature(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)) f.putBe64(this.currGuestOffloads);
      },
      load: (f) => {
        const s = st();
        s.mac = f.getBuffer(6, 'virtio-net-device mac');
        s.txWaiting[0] = f.getBe32('virtio-net-device vqs[0].tx_waiting');
        s.mergeable = f.getBe32('virtio-net-device mergeable_rx_bufs');
        s.status = f.getBe16('virtio-net-device status');
        s.promisc = f.getByte('virtio-net-device promisc');
        s.allmulti = f.getByte('virtio-net-device allmulti');
        const inUseAt = f.offset;
        s.inUse = f.getBe32('virtio-net-device mac_table.in_use');
        const macBytes = s.inUse * 6;
        if (macBytes > f.remaining) throw f.error('virtio-net-device mac_table.macs', `mac_table.in_use ${s.inUse} needs ${macBytes} bytes, ${f.remaining} are left`, inUseAt);
        if (s.inUse <= MAC_TABLE_ENTRIES) s.macs.set(f.getView(macBytes, 'virtio-net-device mac_table.macs'));
        // A larger table (a source with more entries) is skipped; post-load then empties it.
        else f.skip(macBytes, 'virtio-net-device mac_table.macs (unused)');
        s.vlans = f.getBuffer(MAX_VLAN >> 3, 'virtio-net-device vlans');
        const vnetAt = f.offset;
        if (f.getBe32('virtio-net-device has_vnet_hdr') !== 0) throw f.error('virtio-net-device has_vnet_hdr', 'virtio-net: saved image requires vnet_hdr=on', vnetAt);
        s.multiOverflow = f.getByte('virtio-net-device mac_table.multi_overflow');
        s.uniOverflow = f.getByte('virtio-net-device mac_table.uni_overflow');
        s.alluni = f.getByte('virtio-net-device alluni');
        s.nomulti = f.getByte('virtio-net-device nomulti');
        s.nouni = f.getByte('virtio-net-device nouni');
        s.nobcast = f.getByte('virtio-net-device nobcast');
        const ufoAt = f.offset;
        if (f.getByte('virtio-net-device has_ufo') !== 0) throw f.error('virtio-net-device has_ufo', 'virtio-net: saved image requires TUN_F_UFO support', ufoAt);
        s.currQueuePairs = 1;
        if (mqFields) {
          const maxAt = f.offset;
          const max = f.getBe16('virtio-net-device max_queue_pairs');
          if (max !== this.maxQueuePairs) throw f.error('virtio-net-device max_queue_pairs', `${this.maxQueuePairs.toString(16)} != ${max.toString(16)}`, maxAt);
          s.currQueuePairs = f.getBe16('virtio-net-device curr_queue_pairs');
          if (s.currQueuePairs > this.maxQueuePairs) {
            throw f.error('virtio-net-device curr_queue_pairs', `virtio-net: curr_queue_pairs ${s.currQueuePairs.toString(16)} > max_queue_pairs ${this.maxQueuePairs.toString(16)}`, maxAt + 2);
          }
        }
        for (let i = 1; i < s.currQueuePairs; i++) s.txWaiting[i] = f.getBe32(`virtio-net-device vqs[${i}].tx_waiting`);
        // curr_guest_offloads follows, when the (low) features in the blob have CTRL_GUEST_OFFLOADS.
        if (this.loadLowFeatures !== undefined && hasBit(this.loadLowFeatures, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)) {
          s.currGuestOffloads = f.getBe64('virtio-net-device curr_guest_offloads');
        }
      },
      subsections: [
        {
          name: 'virtio-net-device/rss',
          versionId: 1,
          minimumVersionId: 1,
          needed: () => this.rss.enabled,
          save: (f) => {
            const r = this.rss;
            f.putBool(r.enabled);
            f.putBool(r.redirect);
            f.putBool(r.populateHash);
            f.putBe32(r.hashTypes);
            f.putBe16(r.indirectionsLen);
            f.putBe16(r.defaultQueue);
            f.putBuffer(r.key);
            for (let i = 0; i < r.indirectionsLen; i++) f.putBe16(r.indirections[i] ?? 0);
          },
          load: (f) => {
            const field = (n: string) => `virtio-net-device/rss ${n}`;
            const r: RssData = {
              enabled: f.getBool(field('enabled')),
              enabledSoftwareRss: false,
              redirect: f.getBool(field('redirect')),
              populateHash: f.getBool(field('populate_hash')),
              hashTypes: f.getBe32(field('hash_types')),
              indirectionsLen: 0,
              defaultQueue: 0,
              key: new Uint8Array(VIRTIO_NET_RSS_MAX_KEY_SIZE),
              indirections: new Uint16Array(0),
            };
            const lenAt = f.offset;
            const len = f.getBe16(field('indirections_len'));
            // QEMU allocates whatever length comes; steering masks the hash with len - 1, so
            // anything but a power of two up to the table size would index outside the table.
            if (len === 0 || (len & (len - 1)) !== 0 || len > VIRTIO_NET_RSS_MAX_TABLE_LEN) {
              throw f.error(field('indirections_len'), `indirections_len ${len} is not a power of two up to ${VIRTIO_NET_RSS_MAX_TABLE_LEN}`, lenAt);
            }
            r.indirectionsLen = len;
            r.defaultQueue = f.getBe16(field('default_queue'));
            r.key.set(f.getView(VIRTIO_NET_RSS_MAX_KEY_SIZE, field('key')));
            r.indirections = new Uint16Array(len);
            for (let i = 0; i < len; i++) r.indirections[i] = f.getBe16(field(`indirections_table[${i}]`));
            st().rss = r;
          },
        },
      ],
    };
  }

  /** The low feature word of the blob being loaded (QEMU's `guest_features` at that point). */
  private loadLowFeatures: bigint | undefined;

  override saveDeviceState(f: QEMUFileWriter): void {
    vmstateSave(f, this.deviceVmsd());
  }

  override loadDeviceState(f: QEMUFileReader, version: number, ctx: DeviceLoadContext): () => void {
    const stage: NetStage = {
      mac: new Uint8Array(6), txWaiting: [], mergeable: 0, status: 0, promisc: 0, allmulti: 0, inUse: 0,
      macs: new Uint8Array(MAC_TABLE_ENTRIES * 6), vlans: new Uint8Array(MAX_VLAN >> 3), multiOverflow: 0, uniOverflow: 0,
      alluni: 0, nomulti: 0, nouni: 0, nobcast: 0, currQueuePairs: 1, currGuestOffloads: undefined, rss: undefined,
    };
    this.loadLowFeatures = ctx.lowFeatures;
    try {
      vmstateLoad(f, this.deviceVmsd(stage), version);
    } finally {
      this.loadLowFeatures = undefined;
    }
    const low = ctx.lowFeatures ?? 0n;
    return () => {
      this.mac.set(stage.mac);
      for (let i = 0; i < this.pairs.length; i++) this.pairs[i]!.txWaiting = stage.txWaiting[i] ?? 0;
      this.netStatus = stage.status;
      this.promisc = stage.promisc;
      this.allmulti = stage.allmulti;
      const t = this.macTable;
      t.inUse = stage.inUse;
      t.macs.set(stage.macs);
      this.vlans.set(vlanWords(stage.vlans));
      t.multiOverflow = stage.multiOverflow;
      t.uniOverflow = stage.uniOverflow;
      this.alluni = stage.alluni;
      this.nomulti = stage.nomulti;
      this.nouni = stage.nouni;
      this.nobcast = stage.nobcast;
      this.currQueuePairs = stage.currQueuePairs;
      this.currGuestOffloads = stage.currGuestOffloads ?? 0n;
      if (stage.rss) Object.assign(this.rss, stage.rss);
      else this.rss.enabled = false;
      this.postLoadDevice(stage.mergeable, low);
    };
  }

  /** QEMU's `virtio_net_post_load_device`, with the features the blob's first word carries. */
  private postLoadDevice(mergeable: number, low: bigint): void {
    this.setMrgRxBufs(mergeable, hasBit(low, VIRTIO_F_VERSION_1), hasBit(low, VIRTIO_NET_F_HASH_REPORT));
    const t = this.macTable;
    if (t.inUse > MAC_TABLE_ENTRIES) t.inUse = 0;
    if (!hasBit(low, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS)) this.currGuestOffloads = low & GUEST_OFFLOADS_MASK;
    this.savedGuestOffloads = this.currGuestOffloads;
    let i = 0;
    while (i < t.inUse && (t.macs[i * 6]! & 1) === 0) i++;
    t.firstMulti = i;
    // The link itself is not migrated: the NIC's follows the status bit.
    const down = (this.netStatus & VIRTIO_NET_S_LINK_UP) === 0;
    for (const nc of this.ncs) nc.linkDown = down;
    this.cancelAnnounceTimer();
    this.announceRound = 0;
    if (hasBit(low, VIRTIO_NET_F_GUEST_ANNOUNCE) && hasBit(low, VIRTIO_NET_F_CTRL_VQ) && this.clock) {
      this.announceRound = this.announceParams.rounds;
      this.armAnnounceTimer(0);
    }
    if (this.rss.enabled) this.rss.enabledSoftwareRss = true;
  }

  /** QEMU's `virtio_net_post_load_virtio`. */
  override postLoad(): void {
    this.currGuestOffloads = this.savedGuestOffloads;
  }

  /** Stop timers and disconnect from the backend (the device is removed). */
  dispose(): void {
    this.cancelAnnounceTimer();
    for (const nc of this.ncs) {
      const peer = nc.peer;
      if (peer) {
        peer.incoming.purge(nc);
        nc.incoming.purge(peer);
        peer.peer = undefined;
        nc.peer = undefined;
      }
    }
  }

  /** The queue pair's clients can send (for embedders that poll). */
  canSend(queueIndex = 0): boolean {
    const nc = this.ncs[queueIndex];
    return nc !== undefined && canSendPacket(nc);
  }
}

interface CtrlData {
  elem: VirtQueueElement;
  /** Offset of the data in the readable part. */
  start: number;
  size: number;
}

function validQueueSize(n: number): boolean {
  return Number.isInteger(n) && n >= VIRTIO_NET_QUEUE_DEFAULT_SIZE && n <= VIRTQUEUE_MAX_SIZE && (n & (n - 1)) === 0;
}

/** The offer: the properties' bits plus MAC, less what needs a vnet-header backend. */
function offered(features: bigint): bigint {
  return (features | bit(VIRTIO_NET_F_MAC)) & ~NEEDS_VNET_HDR;
}

/** The VLAN bitmap as QEMU writes it: its u32 words in host (x86: little-endian) order. */
function vlanBytes(words: Uint32Array): Uint8Array {
  const out = new Uint8Array(words.length * 4);
  const v = new DataView(out.buffer);
  for (let i = 0; i < words.length; i++) v.setUint32(i * 4, words[i]!, true);
  return out;
}

function vlanWords(bytes: Uint8Array): Uint32Array {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Uint32Array(bytes.length >> 2);
  for (let i = 0; i < out.length; i++) out[i] = v.getUint32(i * 4, true);
  return out;
}

export { formatMac };
export type { NetBackend };
