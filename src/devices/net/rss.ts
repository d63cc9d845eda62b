/**
 * Software receive-side scaling, as QEMU 7.2 does it when no eBPF program steers for the
 * backend (`virtio_net_process_rss`, `net_rx_pkt_calc_rss_hash`, `eth_get_protocols` and
 * `eth_parse_ipv6_hdr`): the frame's IPv4/IPv6 addresses and TCP/UDP ports are hashed with the
 * guest's Toeplitz key, and the hash picks a queue pair from the guest's indirection table.
 *
 * Every read is bounds-checked against the frame; nothing here allocates per frame.
 *
 * No Node imports: part of the browser bundle.
 */
import type { RssData } from './virtio-net.js';

// VIRTIO_NET_RSS_HASH_TYPE_* bits.
const T_IPV4 = 1 << 0;
const T_TCPV4 = 1 << 1;
const T_UDPV4 = 1 << 2;
const T_IPV6 = 1 << 3;
const T_TCPV6 = 1 << 4;
const T_UDPV6 = 1 << 5;
const T_IP_EX = 1 << 6;
const T_TCP_EX = 1 << 7;
const T_UDP_EX = 1 << 8;

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const ETH_P_VLAN = 0x8100;
const ETH_P_DVLAN = 0x88a8;
const IP_PROTO_TCP = 6;
const IP_PROTO_UDP = 17;

/** What the parse found (reused between frames). */
interface Parsed {
  isip4: boolean;
  isip6: boolean;
  istcp: boolean;
  isudp: boolean;
  fragment: boolean;
  /** Offset of the IP header and of the TCP/UDP header in the frame. */
  l3: number;
  l4: number;
  /** IPv6 _EX addresses (home address option, type 2 routing header), when present. */
  exSrc: number;
  exDst: number;
}

const parsed: Parsed = { isip4: false, isip6: false, istcp: false, isudp: false, fragment: false, l3: 0, l4: 0, exSrc: -1, exDst: -1 };
const input = new Uint8Array(36);

function be16(buf: Uint8Array, at: number): number {
  return (buf[at]! << 8) | buf[at + 1]!;
}

function isIp6ExtHeader(t: number): boolean {
  return t === 0 || t === 43 || t === 44 || t === 51 || t === 60 || t === 135;
}

/** QEMU's `eth_get_protocols` on `buf[off, off+size)`. */
function parse(buf: Uint8Array, off: number, size: number): void {
  const p = parsed;
  p.isip4 = p.isip6 = p.istcp = p.isudp = p.fragment = false;
  p.exSrc = p.exDst = -1;
  // QEMU's eth_get_l2_hdr_length_iov: a frame shorter than an Ethernet + VLAN header counts
  // its whole length as the L2 header.
  let l2: number;
  if (size < 18) {
    l2 = size;
  } else {
    const proto = be16(buf, off + 12);
    if (proto === ETH_P_VLAN) l2 = 18;
    else if (proto === ETH_P_DVLAN) l2 = be16(buf, off + 16) === ETH_P_VLAN ? 22 : 18;
    else l2 = 14;
  }
  if (l2 < 2 || l2 > size) return;
  const proto = be16(buf, off + l2 - 2);
  p.l3 = l2;
  if (proto === ETH_P_IP) {
    p.isip4 = true;
    if (size - l2 < 20) return;
    const ip = off + l2;
    if (buf[ip]! >> 4 === 4) {
      const pr = buf[ip + 9]!;
      if (pr === IP_PROTO_TCP) p.istcp = true;
      else if (pr === IP_PROTO_UDP) p.isudp = true;
    }
    p.fragment = (be16(buf, ip + 6) & 0x3fff) !== 0;
    p.l4 = l2 + ((buf[ip]! & 0x0f) << 2);
  } else if (proto === ETH_P_IPV6) {
    p.isip6 = true;
    if (!parseIp6(buf, off, size, l2)) return;
  }
  if (!p.fragment) {
    if (p.istcp) p.istcp = size - p.l4 >= 20 && p.l4 <= size;
    else if (p.isudp) p.isudp = size - p.l4 >= 8 && p.l4 <= size;
  }
}

/** QEMU's `eth_parse_ipv6_hdr`; false when the header chain is cut short. */
function parseIp6(buf: Uint8Array, off: number, size: number, l2: number): boolean {
  const p = parsed;
  if (size - l2 < 40) return false;
  let full = 40;
  let type = buf[off + l2 + 6]!;
  let l4proto = type;
  // Each extension header is at least 8 bytes, so the walk ends within size / 8 steps.
  while (isIp6ExtHeader(type)) {
    const at = l2 + full;
    if (size < at + 2) return false;
    const nxt = buf[off + at]!;
    const len = buf[off + at + 1]!;
    if (type === 43) {
      // Type 2 routing header with one segment left: the home address is the destination.
      if (len === 2 && size >= at + 8 + 16 && buf[off + at + 2] === 2 && buf[off + at + 3] === 1) p.exDst = at + 8;
    } else if (type === 60) {
      p.exSrc = homeAddressOption(buf, off, size, at, len);
    } else if (type === 44) {
      p.fragment = true;
    }
    full += (len + 1) * 8;
    type = nxt;
    l4proto = nxt;
  }
  if (l4proto === IP_PROTO_TCP) p.istcp = true;
  else if (l4proto === IP_PROTO_UDP) p.isudp = true;
  p.l4 = l2 + full;
  return true;
}

/** QEMU's `_eth_get_rss_ex_src_addr`: the offset of the home address option's address, or -1. */
function homeAddressOption(buf: Uint8Array, off: number, size: number, at: number, len: number): number {
  let left = (len + 1) * 8 - 2;
  let opt = at + 2;
  while (left > 2) {
    if (size < opt + 2) return -1;
    const type = buf[off + opt]!;
    const optlen = type === 0 ? 1 : buf[off + opt + 1]! + 2;
    if (optlen > left) return -1;
    if (type === 0xc9) return size >= opt + 2 + 16 ? opt + 2 : -1;
    opt += optlen;
    left -= optlen;
  }
  return -1;
}

/** QEMU's Toeplitz hash (`net_toeplitz_add`) of `input[0, len)` with a 40-byte key. */
export function toeplitz(key: Uint8Array, data: Uint8Array, len: number): number {
  let acc = 0;
  let left = ((key[0]! << 24) | (key[1]! << 16) | (key[2]! << 8) | key[3]!) >>> 0;
  let k = 4;
  for (let i = 0; i < len; i++) {
    let b = data[i]!;
    let kb = k < key.length ? key[k]! : 0;
    k++;
    for (let bit = 0; bit < 8; bit++) {
      if (b & 0x80) acc = (acc ^ left) >>> 0;
      left = ((left << 1) | ((kb & 0x80) >> 7)) >>> 0;
      b = (b << 1) & 0xff;
      kb = (kb << 1) & 0xff;
    }
  }
  return acc >>> 0;
}

function copy(buf: Uint8Array, from: number, n: number, at: number): number {
  for (let i = 0; i < n; i++) input[at + i] = buf[from + i]!;
  return at + n;
}

/**
 * QEMU's `virtio_net_process_rss`: the queue pair a frame that arrived on `index` goes to, or -1
 * to keep it there.
 */
export function rssSteer(rss: RssData, index: number, buf: Uint8Array, off: number, size: number): number {
  parse(buf, off, size);
  const p = parsed;
  let istcp = p.istcp;
  let isudp = p.isudp;
  if ((p.isip4 || p.isip6) && p.fragment) istcp = isudp = false;
  const types = rss.hashTypes;
  // QEMU's `virtio_net_get_hash_type`, as (address source, ports).
  let ex = false;
  let ports = false;
  let ok = false;
  if (p.isip4) {
    if (istcp && types & T_TCPV4) ok = ports = true;
    else if (isudp && types & T_UDPV4) ok = ports = true;
    else if (types & T_IPV4) ok = true;
  } else if (p.isip6) {
    if (istcp && types & (T_TCP_EX | T_TCPV6)) {
      ok = ports = true;
      ex = (types & T_TCP_EX) !== 0;
    } else if (isudp && types & (T_UDP_EX | T_UDPV6)) {
      ok = ports = true;
      ex = (types & T_UDP_EX) !== 0;
    } else if (types & (T_IP_EX | T_IPV6)) {
      ok = true;
      ex = (types & T_IP_EX) !== 0;
    }
  }
  if (!ok) return rss.redirect ? rss.defaultQueue : -1;
  let n = 0;
  const ip = off + p.l3;
  if (p.isip4) {
    n = copy(buf, ip + 12, 4, n);
    n = copy(buf, ip + 16, 4, n);
  } else {
    n = copy(buf, ex && p.exSrc >= 0 ? off + p.exSrc : ip + 8, 16, n);
    n = copy(buf, ex && p.exDst >= 0 ? off + p.exDst : ip + 24, 16, n);
  }
  if (ports) n = copy(buf, off + p.l4, 4, n);
  const hash = toeplitz(rss.key, input, n);
  let next = index;
  if (rss.redirect && rss.indirectionsLen > 0) next = rss.indirections[hash & (rss.indirectionsLen - 1)] ?? index;
  return next === index ? -1 : next;
}
