/**
 * `-netdev` as QEMU 7.2 parses it (net/net.c `netdev_is_modern`, `net_client_init`,
 * `netdev_parse_modern`; net/socket.c, net/dgram.c, net/stream.c, net/hub.c; qapi/net.json):
 *
 *   -netdev socket,id=ID,udp=HOST:PORT,localaddr=HOST:PORT       UDP, one peer
 *   -netdev socket,id=ID,mcast=GROUP:PORT[,localaddr=ADDR]       UDP multicast
 *   -netdev socket,id=ID,connect=HOST:PORT | listen=[HOST]:PORT  TCP, 4-byte length prefix
 *   -netdev dgram,id=ID,local.type=inet,local.host=H,local.port=P,remote.type=inet,remote.host=H,remote.port=P
 *   -netdev dgram,id=ID,remote.type=inet,remote.host=GROUP,remote.port=P[,local.type=inet,local.host=ADDR,local.port=P]
 *   -netdev stream,id=ID[,server=on],addr.type=inet,addr.host=H,addr.port=P | addr.type=unix,addr.path=PATH
 *   -netdev hubport,id=ID,hubid=N[,netdev=ID]
 *
 * `socket` and `hubport` use QemuOpts (an unknown key is "Invalid parameter"), `dgram` and
 * `stream` the keyval syntax with dotted keys (an unknown key is "Parameter ... is unexpected",
 * and any error is fatal at once, as in QEMU). The checks and their wording are QEMU's; what
 * needs the host (resolving a name, binding, connecting) is left to whoever opens the backend
 * (src/cli/qemu.ts in Node). Backends virtio-ts has no equivalent of (`user`, `tap`, `vde`, ...)
 * are refused with a message saying so.
 *
 * No Node imports: part of the browser bundle.
 */
import { CmdlineError, parseBool, parseKeyval, parseQemuOpts } from './cmdline.js';

export interface HostPort {
  /** Empty for INADDR_ANY. Digits-first hosts were checked as IPv4; names are resolved when opened. */
  host: string;
  port: number;
}

export type SocketAddressSpec =
  | { type: 'inet'; host: string; port: number }
  | { type: 'unix'; path: string }
  | { type: 'fd'; str: string };

export type NetdevSpec = (
  | { type: 'socket'; mode: 'udp'; remote: HostPort; local: HostPort }
  | { type: 'socket'; mode: 'mcast'; group: HostPort; localaddr: string | undefined }
  | { type: 'socket'; mode: 'connect' | 'listen'; addr: HostPort }
  | { type: 'dgram'; mode: 'udp'; local: SocketAddressSpec; remote: SocketAddressSpec }
  | { type: 'dgram'; mode: 'mcast'; remote: SocketAddressSpec & { type: 'inet' }; local: SocketAddressSpec | undefined }
  | { type: 'stream'; server: boolean; addr: SocketAddressSpec }
  | { type: 'hubport'; hubid: number; netdev: string | undefined }
) & {
  id: string;
  /** `-netdev ARG`, for messages. */
  loc: string;
};

/** Netdev types QEMU 7.2 has (Debian's build), for `-netdev help` and refusals. */
export const NETDEV_TYPES = ['socket', 'stream', 'dgram', 'hubport', 'tap', 'user', 'l2tpv3', 'vde', 'bridge', 'vhost-user', 'vhost-vdpa'] as const;

const REFUSED: Record<string, string> = {
  user: 'virtio-ts has no user-mode network stack (slirp); use socket, dgram, stream or hubport',
  tap: 'virtio-ts cannot open host tap devices; use socket, dgram, stream or hubport',
  l2tpv3: 'use socket, dgram, stream or hubport',
  vde: 'use socket, dgram, stream or hubport',
  bridge: 'virtio-ts cannot open host bridges; use socket, dgram, stream or hubport',
  'vhost-user': 'vhost backends run outside the device model; use socket, dgram, stream or hubport',
  'vhost-vdpa': 'vhost backends run outside the device model; use socket, dgram, stream or hubport',
  none: 'use socket, dgram, stream or hubport',
  nic: 'use socket, dgram, stream or hubport',
};

/** The value of `type` of a `-netdev` argument (QEMU's `netdev_is_modern` peek). */
function typeOf(arg: string): string | undefined {
  const o = parseQemuOpts(arg, 'type', false, '', []);
  let t: string | undefined;
  for (const [k, v] of o.params) if (k === 'type') t = v;
  return t;
}

/** `-netdev help`, as QEMU prints it. */
export function netdevHelp(): string {
  return `Available netdev backend types:\n${NETDEV_TYPES.join('\n')}`;
}

/**
 * Parse one `-netdev` argument. Returns 'help' for `-netdev help`; throws `CmdlineError` with
 * QEMU's message, located as `-netdev ARG: ...`.
 */
export function parseNetdev(arg: string, warnings: string[]): NetdevSpec | 'help' {
  const loc = `-netdev ${arg}`;
  const fail = (msg: string): never => {
    throw new CmdlineError(`${loc}: ${msg}`);
  };
  if (arg.startsWith('{')) fail('JSON -netdev is not supported by virtio-ts-qemu');
  const type = typeOf(arg);
  if (type === 'help' || type === '?') return 'help';
  if (type === 'dgram' || type === 'stream') return parseModern(arg, type, loc, fail);
  const o = parseQemuOpts(arg, 'type', true, loc, warnings);
  const last = new Map<string, string>();
  for (const [k, v] of o.params) last.set(k, v);
  const id = last.get('id');
  if (id === undefined) fail("Parameter 'id' is missing");
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id!)) fail("Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
  if (type === undefined) fail("Parameter 'type' is missing");
  if (!NETDEV_TYPES.includes(type as (typeof NETDEV_TYPES)[number]) && REFUSED[type!] === undefined) fail(`Parameter 'type' does not accept value '${type}'`);
  const why = REFUSED[type!];
  if (why !== undefined) fail(`-netdev ${type} is not supported by virtio-ts-qemu (${why})`);
  const allowed = type === 'socket' ? ['fd', 'listen', 'connect', 'mcast', 'localaddr', 'udp'] : ['hubid', 'netdev'];
  for (const k of last.keys()) if (k !== 'type' && k !== 'id' && !allowed.includes(k)) fail(`Invalid parameter '${k}'`);
  if (type === 'hubport') {
    const hubid = last.get('hubid');
    if (hubid === undefined) fail("Parameter 'hubid' is missing");
    if (!/^[+-]?\d+$/.test(hubid!.trim())) fail("Parameter 'hubid' expects an int64 value");
    const n = Number(hubid);
    if (n < -0x8000_0000 || n > 0x7fff_ffff) fail("Parameter 'hubid' expects an int32 value");
    return { type: 'hubport', id: id!, loc, hubid: n, netdev: last.get('netdev') };
  }
  // socket (net_init_socket)
  const has = (k: string) => last.has(k);
  if (Number(has('fd')) + Number(has('listen')) + Number(has('connect')) + Number(has('mcast')) + Number(has('udp')) !== 1) {
    fail('exactly one of listen=, connect=, mcast= or udp= is required');
  }
  if (has('localaddr') && !has('mcast') && !has('udp')) fail('localaddr= is only valid with mcast= or udp=');
  if (has('fd')) fail('fd= is not supported by virtio-ts-qemu (no file descriptors are passed to it)');
  if (has('listen')) return { type: 'socket', mode: 'listen', id: id!, loc, addr: parseHostPort(last.get('listen')!, fail) };
  if (has('connect')) return { type: 'socket', mode: 'connect', id: id!, loc, addr: parseHostPort(last.get('connect')!, fail) };
  if (has('mcast')) {
    const group = parseHostPort(last.get('mcast')!, fail);
    checkMulticast(group.host, fail);
    const localaddr = last.get('localaddr');
    if (localaddr !== undefined && inetAton(localaddr) === undefined) fail(`localaddr '${localaddr}' is not a valid IPv4 address`);
    return { type: 'socket', mode: 'mcast', id: id!, loc, group, localaddr };
  }
  if (!has('localaddr')) fail('localaddr= is mandatory with udp=');
  const local = parseHostPort(last.get('localaddr')!, fail);
  const remote = parseHostPort(last.get('udp')!, fail);
  return { type: 'socket', mode: 'udp', id: id!, loc, local, remote };
}

/** `-netdev dgram|stream`: keyval with dotted keys (QEMU's `netdev_parse_modern`). */
function parseModern(arg: string, type: 'dgram' | 'stream', loc: string, fail: (m: string) => never): NetdevSpec {
  let pairs: [string, string][];
  try {
    pairs = parseKeyval(arg, 'type', loc);
  } catch (e) {
    throw e instanceof CmdlineError ? e : new CmdlineError(`${loc}: ${(e as Error).message}`);
  }
  const m = new Map<string, string>();
  for (const [k, v] of pairs) {
    if (m.has(k)) fail(`Parameter '${k}' is set more than once`);
    m.set(k, v);
  }
  const used = new Set<string>(['type']);
  const get = (k: string): string | undefined => {
    used.add(k);
    return m.get(k);
  };
  const id = get('id');
  if (id === undefined) fail("Parameter 'id' is missing");
  if (!/^[A-Za-z][A-Za-z0-9_.-]*$/.test(id!)) fail("Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, '-', '.', '_', starting with a letter.");
  const present = (prefix: string) => [...m.keys()].some((k) => k.startsWith(prefix + '.'));
  const address = (prefix: string): SocketAddressSpec => {
    const t = get(`${prefix}.type`);
    if (t === undefined) fail(`Parameter '${prefix}.type' is missing`);
    const members: Record<string, string[]> = {
      inet: ['host', 'port', 'numeric', 'to', 'ipv4', 'ipv6', 'keep-alive', 'mptcp'],
      unix: ['path', 'abstract', 'tight'],
      vsock: ['cid', 'port'],
      fd: ['str'],
    };
    if (members[t!] === undefined) fail(`Parameter 'type' does not accept value '${t}'`);
    for (const k of members[t!]!) get(`${prefix}.${k}`);
    const need = (k: string): string => {
      const v = m.get(`${prefix}.${k}`);
      if (v === undefined) fail(`Parameter '${prefix}.${k}' is missing`);
      return v!;
    };
    if (t === 'inet') {
      const host = need('host');
      const port = need('port');
      for (const b of ['numeric', 'ipv4', 'ipv6', 'keep-alive', 'mptcp']) {
        const v = m.get(`${prefix}.${b}`);
        if (v !== undefined) boolAt(`${prefix}.${b}`, v, fail);
      }
      return { type: 'inet', host, port: portNumber(port, fail) };
    }
    if (t === 'unix') return { type: 'unix', path: need('path') };
    if (t === 'fd') return { type: 'fd', str: need('str') };
    need('cid');
    need('port');
    return fail(`${type} with vsock addresses is not supported by virtio-ts-qemu`);
  };
  let spec: NetdevSpec;
  if (type === 'stream') {
    const server = m.has('server') ? boolAt('server', get('server')!, fail) : false;
    if (!present('addr')) fail("Parameter 'addr' is missing");
    const addr = address('addr');
    checkUnexpected(m, used, fail);
    if (addr.type === 'fd') fail('stream with addr.type=fd is not supported by virtio-ts-qemu (no file descriptors are passed to it)');
    spec = { type: 'stream', id: id!, loc, server, addr };
    return spec;
  }
  const local = present('local') ? address('local') : undefined;
  const remote = present('remote') ? address('remote') : undefined;
  checkUnexpected(m, used, fail);
  // net_init_dgram: a multicast remote first, then the unicast rules.
  if (remote && remote.type === 'inet') {
    const a = inetAton(remote.host);
    if (a !== undefined && a >>> 28 === 0xe) {
      if (local && local.type !== 'inet' && local.type !== 'fd') fail('only support inet or fd type for local');
      if (local && local.type === 'inet' && inetAton(local.host) === undefined) fail(`localaddr '${local.host}' is not a valid IPv4 address`);
      if (local && local.type === 'fd') fail('dgram with local.type=fd is not supported by virtio-ts-qemu (no file descriptors are passed to it)');
      return { type: 'dgram', mode: 'mcast', id: id!, loc, remote, local };
    }
    if (/^\d/.test(remote.host) && a === undefined) fail(`host address '${remote.host}' is not a valid IPv4 address`);
  }
  if (!local) fail('dgram requires local= parameter');
  if (remote) {
    if (local!.type === 'fd') fail("don't set remote with local.fd");
    if (remote.type !== local!.type) fail('remote and local types must be the same');
  } else if (local!.type !== 'fd') {
    fail('type=inet or type=unix requires remote parameter');
  }
  if (local!.type === 'fd') fail('dgram with local.type=fd is not supported by virtio-ts-qemu (no file descriptors are passed to it)');
  if (local!.type === 'unix') fail('dgram with unix sockets is not supported by virtio-ts-qemu (Node.js has no unix datagram sockets); use inet');
  if (local!.type === 'inet' && /^\d/.test(local!.host) && inetAton(local!.host) === undefined) fail(`host address '${local!.host}' is not a valid IPv4 address`);
  return { type: 'dgram', mode: 'udp', id: id!, loc, local: local!, remote: remote! };
}

function checkUnexpected(m: Map<string, string>, used: Set<string>, fail: (msg: string) => never): void {
  for (const k of m.keys()) if (!used.has(k)) fail(`Parameter '${k}' is unexpected`);
}

function boolAt(name: string, v: string, fail: (msg: string) => never): boolean {
  try {
    return parseBool(name, v);
  } catch {
    return fail(`Parameter '${name}' expects 'on' or 'off'`);
  }
}

/** QEMU's `qemu_strtol(port, .., 0, ..)`: decimal, 0x hex or 0 octal; the value is taken mod 2^16 by htons. */
function portNumber(text: string, fail: (msg: string) => never): number {
  const t = text.trim();
  const m = /^([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/.exec(t);
  if (!m) return fail(`port number '${text}' is invalid`);
  const body = m[2]!;
  let n = body.startsWith('0x') || body.startsWith('0X') ? parseInt(body.slice(2), 16) : body.length > 1 && body.startsWith('0') ? parseInt(body.slice(1), 8) : parseInt(body, 10);
  if (m[1] === '-') n = -n;
  if (!Number.isSafeInteger(n) || Math.abs(n) > 2 ** 63) return fail(`port number '${text}' is invalid`);
  return ((n % 65536) + 65536) % 65536;
}

/** QEMU's `parse_host_port`: `HOST:PORT` split at the first ':'; a digits-first host must be IPv4. */
export function parseHostPort(str: string, fail: (msg: string) => never): HostPort {
  const i = str.indexOf(':');
  if (i < 0) return fail(`host address '${str}' doesn't contain ':' separating host from port`);
  const host = str.slice(0, i);
  const port = str.slice(i + 1);
  if (host !== '' && /^\d/.test(host) && inetAton(host) === undefined) fail(`host address '${host}' is not a valid IPv4 address`);
  return { host, port: portNumber(port, fail) };
}

function checkMulticast(host: string, fail: (msg: string) => never): void {
  const a = host === '' ? 0 : inetAton(host);
  // A name is resolved when the backend opens; its address is checked then.
  if (a === undefined) return;
  if (a >>> 28 !== 0xe) {
    const dotted = [a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff].join('.');
    fail(`specified mcastaddr ${dotted} (0x${a.toString(16).padStart(8, '0')}) does not contain a multicast address`);
  }
}

/**
 * `inet_aton`: dotted forms with 1-4 parts, each decimal, octal (leading 0) or hex (0x); the last
 * part fills the remaining bytes. Returns the address as an unsigned 32-bit number.
 */
export function inetAton(s: string): number | undefined {
  const parts = s.split('.');
  if (parts.length < 1 || parts.length > 4) return undefined;
  const vals: number[] = [];
  for (const p of parts) {
    let v: number;
    if (/^0[xX][0-9a-fA-F]*$/.test(p)) v = p.length === 2 ? 0 : parseInt(p.slice(2), 16);
    else if (/^0[0-7]*$/.test(p)) v = p.length === 1 ? 0 : parseInt(p.slice(1), 8);
    else if (/^[1-9][0-9]*$/.test(p)) v = parseInt(p, 10);
    else return undefined;
    vals.push(v);
  }
  const last = vals.pop()!;
  for (const v of vals) if (v > 0xff) return undefined;
  const limit = [0xffff_ffff, 0xff_ffff, 0xffff, 0xff][vals.length]!;
  if (last > limit) return undefined;
  let a = 0;
  vals.forEach((v, i) => (a += v * 2 ** (24 - 8 * i)));
  return (a + last) >>> 0;
}

/** The dotted form of an address from `inetAton`. */
export function inetNtoa(a: number): string {
  return [a >>> 24, (a >>> 16) & 0xff, (a >>> 8) & 0xff, a & 0xff].join('.');
}
