// MAC addresses as QEMU writes and reads them (`qemu_mac_strdup_printf`, the `mac` property's
// parser `qdev_prop_set_macaddr`/`set_mac`, and `net_parse_macaddr` of the legacy -net nic).

/** `52:54:00:12:34:56`: lower-case hex, colons. */
export function formatMac(mac: Uint8Array): string {
  const parts: string[] = [];
  for (let i = 0; i < 6; i++) parts.push((mac[i] ?? 0).toString(16).padStart(2, '0'));
  return parts.join(':');
}

/**
 * The `mac` property's syntax (QEMU's `set_mac`): six pairs of hex digits separated by `:` or
 * `-`, nothing else. Returns undefined when it does not parse.
 */
export function parseMacProperty(text: string): Uint8Array | undefined {
  if (text.length !== 17) return undefined;
  const mac = new Uint8Array(6);
  for (let i = 0, pos = 0; i < 6; i++) {
    const hi = text[pos]!;
    const lo = text[pos + 1]!;
    if (!/^[0-9a-fA-F]$/.test(hi) || !/^[0-9a-fA-F]$/.test(lo)) return undefined;
    if (i !== 5 && text[pos + 2] !== ':' && text[pos + 2] !== '-') return undefined;
    mac[i] = parseInt(hi + lo, 16);
    pos += 3;
  }
  return mac;
}

/** Whether the group bit is set (`is_multicast_ether_addr`). */
export function isMulticastMac(mac: Uint8Array): boolean {
  return ((mac[0] ?? 0) & 1) === 1;
}

/**
 * QEMU's default MACs (`qemu_macaddr_default_if_unset`): 52:54:00:12:34:XX with XX the lowest
 * free value from 0x56, per process (here per machine). An address set on the command line in
 * the same range marks its value used.
 */
export class MacAllocator {
  private readonly used = new Map<number, number>();

  /** Note `mac` if it is in QEMU's default range, or give the next free default when it is undefined. */
  assign(mac: Uint8Array | undefined): Uint8Array {
    if (mac && mac.some((b) => b !== 0)) {
      if (mac[0] === 0x52 && mac[1] === 0x54 && mac[2] === 0 && mac[3] === 0x12 && mac[4] === 0x34) this.mark(mac[5]!);
      return mac;
    }
    let index = 0x56;
    while (index < 0xff && (this.used.get(index) ?? 0) > 0) index++;
    // QEMU's lookup fails past 0xfe and stores -1 (0xff) in the last byte.
    const last = index < 0xff ? index : 0xff;
    const out = new Uint8Array([0x52, 0x54, 0x00, 0x12, 0x34, last]);
    this.mark(last);
    return out;
  }

  private mark(b: number): void {
    if (b >= 0x56 && b < 0xff) this.used.set(b, (this.used.get(b) ?? 0) + 1);
  }
}
