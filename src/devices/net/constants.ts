// virtio-net constants (VIRTIO 1.2 §5.1; Linux `include/uapi/linux/virtio_net.h`, as QEMU 7.2
// carries it in `include/standard-headers/linux/virtio_net.h`).

// Feature bits (VIRTIO 1.2 §5.1.3).
export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
/** Legacy only: "host handles packets with any GSO type" (QEMU's `legacy_features`). */
export const VIRTIO_NET_F_GSO = 6;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_CTRL_RX = 18;
export const VIRTIO_NET_F_CTRL_VLAN = 19;
export const VIRTIO_NET_F_CTRL_RX_EXTRA = 20;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
export const VIRTIO_NET_F_HASH_REPORT = 57;
export const VIRTIO_NET_F_RSS = 60;
export const VIRTIO_NET_F_RSC_EXT = 61;
export const VIRTIO_NET_F_STANDBY = 62;
export const VIRTIO_NET_F_SPEED_DUPLEX = 63;

// Status bits of the config's `status`.
export const VIRTIO_NET_S_LINK_UP = 1;
export const VIRTIO_NET_S_ANNOUNCE = 2;

// virtio_net_hdr flags and GSO types (VIRTIO 1.2 §5.1.6).
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
export const VIRTIO_NET_HDR_F_DATA_VALID = 2;
export const VIRTIO_NET_HDR_F_RSC_INFO = 4;
export const VIRTIO_NET_HDR_GSO_NONE = 0;
export const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
export const VIRTIO_NET_HDR_GSO_UDP = 3;
export const VIRTIO_NET_HDR_GSO_TCPV6 = 4;
export const VIRTIO_NET_HDR_GSO_ECN = 0x80;

/** `struct virtio_net_hdr`: the legacy header without `num_buffers`. */
export const VIRTIO_NET_HDR_SIZE = 10;
/** `struct virtio_net_hdr_mrg_rxbuf` / `virtio_net_hdr_v1`: with `num_buffers`. */
export const VIRTIO_NET_HDR_MRG_RXBUF_SIZE = 12;
/** `struct virtio_net_hdr_v1_hash`: with the hash value and report. */
export const VIRTIO_NET_HDR_V1_HASH_SIZE = 20;
/** Offset of `num_buffers` in the header. */
export const VIRTIO_NET_HDR_NUM_BUFFERS = 10;

// Control queue (VIRTIO 1.2 §5.1.6.5).
export const VIRTIO_NET_OK = 0;
export const VIRTIO_NET_ERR = 1;
export const VIRTIO_NET_CTRL_RX = 0;
export const VIRTIO_NET_CTRL_RX_PROMISC = 0;
export const VIRTIO_NET_CTRL_RX_ALLMULTI = 1;
export const VIRTIO_NET_CTRL_RX_ALLUNI = 2;
export const VIRTIO_NET_CTRL_RX_NOMULTI = 3;
export const VIRTIO_NET_CTRL_RX_NOUNI = 4;
export const VIRTIO_NET_CTRL_RX_NOBCAST = 5;
export const VIRTIO_NET_CTRL_MAC = 1;
export const VIRTIO_NET_CTRL_MAC_TABLE_SET = 0;
export const VIRTIO_NET_CTRL_MAC_ADDR_SET = 1;
export const VIRTIO_NET_CTRL_VLAN = 2;
export const VIRTIO_NET_CTRL_VLAN_ADD = 0;
export const VIRTIO_NET_CTRL_VLAN_DEL = 1;
export const VIRTIO_NET_CTRL_ANNOUNCE = 3;
export const VIRTIO_NET_CTRL_ANNOUNCE_ACK = 0;
export const VIRTIO_NET_CTRL_MQ = 4;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET = 0;
export const VIRTIO_NET_CTRL_MQ_RSS_CONFIG = 1;
export const VIRTIO_NET_CTRL_MQ_HASH_CONFIG = 2;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MIN = 1;
export const VIRTIO_NET_CTRL_MQ_VQ_PAIRS_MAX = 0x8000;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS = 5;
export const VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET = 0;

// QEMU 7.2's limits (hw/net/virtio-net.c, include/hw/virtio/virtio-net.h, include/net/net.h).
/** Entries of the MAC filter table (`MAC_TABLE_ENTRIES`). */
export const MAC_TABLE_ENTRIES = 64;
/** VLAN ids (802.1Q): the filter is a bitmap of this many bits. */
export const MAX_VLAN = 1 << 12;
/** Largest frame the net layer carries (`NET_BUFSIZE`): 4 KiB of headroom plus 64 KiB. */
export const NET_BUFSIZE = 4096 + 65536;
/** Frames one transmit round takes before yielding (`TX_BURST`, property `x-txburst`). */
export const TX_BURST = 256;
/** Default and smallest receive/transmit queue sizes (`VIRTIO_NET_*_QUEUE_DEFAULT_SIZE`). */
export const VIRTIO_NET_QUEUE_DEFAULT_SIZE = 256;
/** Control queue size. */
export const VIRTIO_NET_CTRL_QUEUE_SIZE = 64;
/** Frames a net client's incoming queue holds before it refuses more (`nq_maxlen`). */
export const NET_QUEUE_MAXLEN = 10000;
/** RSS limits QEMU reports in the config (`VIRTIO_NET_RSS_MAX_KEY_SIZE`, `..._MAX_TABLE_LEN`). */
export const VIRTIO_NET_RSS_MAX_KEY_SIZE = 40;
export const VIRTIO_NET_RSS_MAX_TABLE_LEN = 128;
/** Hash types QEMU 7.2 supports (`VIRTIO_NET_RSS_SUPPORTED_HASHES`): IPv4/6 with TCP/UDP and the _EX forms. */
export const VIRTIO_NET_RSS_SUPPORTED_HASHES = 0x1ff;
/** `speed` unknown (`SPEED_UNKNOWN`, -1 as a u32). */
export const SPEED_UNKNOWN = -1;
export const DUPLEX_HALF = 0;
export const DUPLEX_FULL = 1;
export const DUPLEX_UNKNOWN = 0xff;

// Config layout (struct virtio_net_config; VIRTIO 1.2 §5.1.4).
export const VIRTIO_NET_CFG_MAC = 0;
export const VIRTIO_NET_CFG_STATUS = 6;
export const VIRTIO_NET_CFG_MAX_VQ_PAIRS = 8;
export const VIRTIO_NET_CFG_MTU = 10;
export const VIRTIO_NET_CFG_SPEED = 12;
export const VIRTIO_NET_CFG_DUPLEX = 16;
export const VIRTIO_NET_CFG_RSS_MAX_KEY_SIZE = 17;
export const VIRTIO_NET_CFG_RSS_MAX_TABLE_LEN = 18;
export const VIRTIO_NET_CFG_SUPPORTED_HASH_TYPES = 20;
/** `sizeof(struct virtio_net_config)` in QEMU 7.2. */
export const VIRTIO_NET_CONFIG_SIZE = 24;
