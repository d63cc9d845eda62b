// The host-side end of the guest's network test: answers ARP requests for its address and ICMP
// echo requests sent to it, on raw Ethernet frames (no virtio_net_hdr). Everything else is only
// counted. Wire it to whatever carries the guest's frames: a virtio-net device's backend, or v86's
// own NIC through its bus ("net0-send" in, "net0-receive" out).

export interface NetPeerOptions {
  /** Dotted IPv4 address the peer answers for (init.sh's vt.net.peer, 192.0.2.2 by default). */
  ip?: string;
  /** Its MAC address, "52:54:00:..." (default 52:54:00:76:74:02, locally administered). */
  mac?: string;
}

export interface NetPeerCounts {
  arpRequests: number;
  arpReplies: number;
  echoRequests: number;
  echoReplies: number;
  /** Frames neither ARP for us nor ICMP echo to us (IPv6 neighbour discovery, gratuitous ARP). */
  other: number;
}

const ETH_ARP = 0x0806;
const ETH_IPV4 = 0x0800;

function parseMac(mac: string): Uint8Array {
  const parts = mac.split(':');
  if (parts.length !== 6 || !parts.every((p) => /^[0-9a-fA-F]{2}$/.test(p))) throw new Error(`bad MAC ${mac}`);
  return Uint8Array.from(parts, (p) => parseInt(p, 16));
}

function parseIp(ip: string): Uint8Array {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || !parts.every((p) => Number.isInteger(p) && p >= 0 && p <= 255)) throw new Error(`bad IPv4 ${ip}`);
  return Uint8Array.from(parts);
}

export const formatMac = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

/** The Internet checksum (RFC 1071) of a byte range. */
export function inetChecksum(bytes: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length & 1) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export class NetPeer {
  readonly ip: Uint8Array;
  readonly mac: Uint8Array;
  readonly counts: NetPeerCounts = { arpRequests: 0, arpReplies: 0, echoRequests: 0, echoReplies: 0, other: 0 };
  /** The source MAC of the last frame that reached us (the guest's NIC). */
  guestMac: string | undefined;

  constructor(options: NetPeerOptions = {}) {
    this.ip = parseIp(options.ip ?? '192.0.2.2');
    this.mac = parseMac(options.mac ?? '52:54:00:76:74:02');
  }

  /** Takes one frame from the guest; returns the frames to give back to it (often none). */
  receive(frame: Uint8Array): Uint8Array[] {
    if (frame.length >= 14) {
      const type = (frame[12]! << 8) | frame[13]!;
      const reply = type === ETH_ARP ? this.arp(frame) : type === ETH_IPV4 ? this.icmp(frame) : undefined;
      if (reply) {
        this.guestMac = formatMac(frame.subarray(6, 12));
        return [reply];
      }
    }
    this.counts.other++;
    return [];
  }

  private arp(frame: Uint8Array): Uint8Array | undefined {
    const a = frame.subarray(14);
    if (a.length < 28) return undefined;
    const dv = new DataView(a.buffer, a.byteOffset, 28);
    const isIpv4OverEthernet = dv.getUint16(0) === 1 && dv.getUint16(2) === ETH_IPV4 && a[4] === 6 && a[5] === 4;
    if (!isIpv4OverEthernet || dv.getUint16(6) !== 1 || !equal(a.subarray(24, 28), this.ip)) return undefined;
    this.counts.arpRequests++;
    const out = new Uint8Array(42);
    out.set(a.subarray(8, 14), 0); // to the asker
    out.set(this.mac, 6);
    out.set([ETH_ARP >> 8, ETH_ARP & 0xff], 12);
    out.set([0, 1, 0x08, 0x00, 6, 4, 0, 2], 14); // Ethernet/IPv4, reply
    out.set(this.mac, 22);
    out.set(this.ip, 28);
    out.set(a.subarray(8, 14), 32);
    out.set(a.subarray(14, 18), 38);
    this.counts.arpReplies++;
    return out;
  }

  private icmp(frame: Uint8Array): Uint8Array | undefined {
    const ip = frame.subarray(14);
    if (ip.length < 20 || ip[0]! >> 4 !== 4) return undefined;
    const ihl = (ip[0]! & 0x0f) * 4;
    const total = (ip[2]! << 8) | ip[3]!;
    const fragmented = ((ip[6]! & 0x3f) | ip[7]!) !== 0; // MF or an offset: not ours to reassemble
    if (ip[9] !== 1 || fragmented || total > ip.length || total < ihl + 8 || !equal(ip.subarray(16, 20), this.ip)) {
      return undefined;
    }
    if (ip[ihl] !== 8 || ip[ihl + 1] !== 0) return undefined; // echo request, code 0
    this.counts.echoRequests++;
    const out = new Uint8Array(14 + total);
    out.set(frame.subarray(6, 12), 0);
    out.set(this.mac, 6);
    out.set([ETH_IPV4 >> 8, ETH_IPV4 & 0xff], 12);
    const rip = out.subarray(14);
    rip.set(ip.subarray(0, total));
    rip.set(ip.subarray(16, 20), 12); // source: us
    rip.set(ip.subarray(12, 16), 16); // destination: the asker
    rip[8] = 64; // TTL
    rip[10] = 0;
    rip[11] = 0;
    const hsum = inetChecksum(rip.subarray(0, ihl));
    rip[10] = hsum >> 8;
    rip[11] = hsum & 0xff;
    const icmp = rip.subarray(ihl, total);
    icmp[0] = 0; // echo reply; identifier, sequence and data stay
    icmp[2] = 0;
    icmp[3] = 0;
    const csum = inetChecksum(icmp);
    icmp[2] = csum >> 8;
    icmp[3] = csum & 0xff;
    this.counts.echoReplies++;
    return out;
  }
}
