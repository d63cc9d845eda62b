/**
 * QEMU's block options for the subset virtio-ts-qemu implements (QEMU 7.2 `blockdev.c`
 * `drive_new`/`blockdev_init`, `block.c`, the `file`, `raw` and `null-co` drivers):
 *
 *   -drive if=none,id=ID[,file=PATH|null-co://][,format=raw][,readonly=on][,cache=MODE]
 *          [,cache.writeback=][,cache.direct=][,cache.no-flush=][,discard=ignore|unmap]
 *          [,aio=threads|io_uring][,node-name=][,file.driver=file|null-co][,file.filename=]
 *          [,file.size=][,file.read-zeroes=][,file.latency-ns=] ...
 *   -blockdev driver=file,node-name=N,filename=PATH[,read-only=][,cache.direct=][,cache.no-flush=][,discard=]
 *   -blockdev driver=raw,node-name=N,file=NODE|file.driver=...
 *   -blockdev driver=null-co,node-name=N[,size=BYTES][,read-zeroes=][,latency-ns=]
 *   -blockdev {JSON}
 *
 * This module parses and checks, with QEMU's messages; the files are opened by the caller
 * (src/cli/qemu.ts on Node) and the backends are built by `qemu-machine.ts`.
 *
 * No Node imports: part of the browser bundle.
 */
import { CmdlineError, parseBool, parseQemuOpts, parseSize } from './cmdline.js';

/** One node of a block graph: a format (`raw`) over a protocol (`file`, `null-co`), or a protocol alone. */
export interface BlockNode {
  driver: 'raw' | 'file' | 'null-co';
  nodeName: string | undefined;
  readOnly: boolean;
  /** raw: its `file` child. */
  child?: BlockNode;
  /** file: the path. */
  filename?: string;
  /** null-co: size in bytes (QEMU's default 1 GiB), read-zeroes, latency-ns. */
  size?: number;
  readZeroes?: boolean;
  latencyNs?: number;
  /** `cache.direct` (O_DIRECT in QEMU; recorded, the data path is the same here). */
  cacheDirect: boolean;
  /** `cache.no-flush`: flushes succeed without reaching the disk. */
  noFlush: boolean;
  /** `discard=unmap`: discard requests reach the disk (QEMU's default `ignore` drops them). */
  unmap: boolean;
}

export interface DriveSpec {
  id: string;
  /** The `file=` path (or `null-co://`), for messages and for opening. */
  file: string | undefined;
  readonly: boolean;
  loc: string;
  /** The drive's root node (raw over its protocol node); undefined: a drive without medium. */
  root?: BlockNode;
  /** `cache.writeback` (default on): the drive's write cache. */
  writeback?: boolean;
}

export interface BlockdevSpec {
  node: BlockNode;
  loc: string;
}

/** Every `file` protocol node of the command line, with the option that made it: what the caller must open. */
export function fileNodes(drives: readonly DriveSpec[], blockdevs: readonly BlockdevSpec[]): { filename: string; readOnly: boolean; loc: string }[] {
  const out: { filename: string; readOnly: boolean; loc: string }[] = [];
  const walk = (n: BlockNode | undefined, loc: string): void => {
    if (!n) return;
    if (n.driver === 'file' && n.filename !== undefined) out.push({ filename: n.filename, readOnly: n.readOnly, loc });
    walk(n.child, loc);
  };
  for (const d of drives) walk(d.root, d.loc);
  for (const b of blockdevs) walk(b.node, b.loc);
  return out;
}

/** The node named `name` anywhere in the -blockdev graphs (or in a drive, by node-name). */
export function findNode(drives: readonly DriveSpec[], blockdevs: readonly BlockdevSpec[], name: string): BlockNode | undefined {
  let found: BlockNode | undefined;
  const walk = (n: BlockNode | undefined): void => {
    if (!n || found) return;
    if (n.nodeName === name) found = n;
    else walk(n.child);
  };
  for (const b of blockdevs) walk(b.node);
  for (const d of drives) walk(d.root);
  return found;
}

const CACHE_MODES: Record<string, { writeback: boolean; direct: boolean; noFlush: boolean }> = {
  writeback: { writeback: true, direct: false, noFlush: false },
  none: { writeback: true, direct: true, noFlush: false },
  off: { writeback: true, direct: true, noFlush: false },
  writethrough: { writeback: false, direct: false, noFlush: false },
  directsync: { writeback: false, direct: true, noFlush: false },
  unsafe: { writeback: true, direct: false, noFlush: true },
};

/** `bdrv_parse_discard_flags`. */
function parseDiscard(v: string, loc: string): boolean {
  if (v === 'off' || v === 'ignore') return false;
  if (v === 'on' || v === 'unmap') return true;
  throw new CmdlineError(`${loc}: Invalid discard option`);
}

function boolAt(name: string, v: string, loc: string): boolean {
  try {
    return parseBool(name, v);
  } catch (e) {
    throw new CmdlineError(`${loc}: ${(e as Error).message}`);
  }
}

/** A QemuOpts size (`file.size=1M`), in bytes, as a safe integer. */
function sizeAt(name: string, v: string, loc: string): number {
  let n: bigint;
  try {
    n = parseSize(name, v);
  } catch (e) {
    throw new CmdlineError(`${loc}: ${(e as Error).message}`);
  }
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new CmdlineError(`${loc}: Value '${v}' is out of range for parameter '${name}'`);
  return Number(n);
}

const PROTOCOL_OPTS: Record<'file' | 'null-co', readonly string[]> = {
  file: ['filename', 'driver', 'locking', 'aio', 'aio-max-batch', 'pr-manager', 'x-check-cache-dropped', 'drop-cache', 'node-name'],
  'null-co': ['size', 'read-zeroes', 'latency-ns', 'driver', 'node-name'],
};

/**
 * `-drive`, the legacy block option (QEMU 7.2 `drive_new`). Only `if=none` (the device is given
 * with `-device ...,drive=ID`) and the raw format.
 */
export function parseDrive(arg: string, loc: string, warnings: string[], existing: readonly DriveSpec[], blockdevs: readonly BlockdevSpec[]): DriveSpec {
  const o = parseQemuOpts(arg, undefined, true, loc, warnings);
  let ifType = 'ide';
  let id: string | undefined;
  let file: string | undefined;
  let format: string | undefined;
  let readonly = false;
  let writeback = true;
  let direct = false;
  let noFlush = false;
  let unmap = false;
  let nodeName: string | undefined;
  let aio = 'threads';
  const fileOpts: [string, string][] = [];
  for (const [k, v] of o.params) {
    if (k.startsWith('file.')) {
      fileOpts.push([k.slice(5), v]);
      continue;
    }
    switch (k) {
      case 'if':
        ifType = v;
        break;
      case 'id':
        id = v;
        break;
      case 'file':
        file = v;
        break;
      case 'format':
        format = v;
        break;
      case 'readonly':
      case 'read-only':
        readonly = boolAt('read-only', v, loc);
        break;
      case 'cache': {
        const m = CACHE_MODES[v];
        if (!m) throw new CmdlineError(`${loc}: invalid cache option`);
        ({ writeback, direct, noFlush } = m);
        break;
      }
      case 'cache.writeback':
        writeback = boolAt(k, v, loc);
        break;
      case 'cache.direct':
        direct = boolAt(k, v, loc);
        break;
      case 'cache.no-flush':
        noFlush = boolAt(k, v, loc);
        break;
      case 'discard':
        unmap = parseDiscard(v, loc);
        break;
      case 'aio':
        if (v !== 'threads' && v !== 'native' && v !== 'io_uring') throw new CmdlineError(`${loc}: invalid aio option`);
        aio = v;
        break;
      case 'node-name':
        nodeName = v;
        break;
      case 'werror':
        if (!['enospc', 'report', 'stop', 'ignore'].includes(v)) throw new CmdlineError(`${loc}: '${v}' invalid write error action`);
        if (v === 'stop' || v === 'ignore') throw new CmdlineError(`${loc}: werror=${v} is not supported by virtio-ts-qemu (errors are reported to the guest)`);
        break;
      case 'rerror':
        if (!['report', 'stop', 'ignore'].includes(v)) throw new CmdlineError(`${loc}: '${v}' invalid read error action`);
        if (v !== 'report') throw new CmdlineError(`${loc}: rerror=${v} is not supported by virtio-ts-qemu (errors are reported to the guest)`);
        break;
      case 'media':
        if (v !== 'disk' && v !== 'cdrom') throw new CmdlineError(`${loc}: '${v}' invalid media`);
        if (v === 'cdrom') throw new CmdlineError(`${loc}: media=cdrom is not supported by virtio-ts-qemu`);
        break;
      case 'snapshot':
        if (boolAt(k, v, loc)) throw new CmdlineError(`${loc}: drive option 'snapshot' is not supported by virtio-ts-qemu`);
        break;
      case 'detect-zeroes':
        if (!['off', 'on', 'unmap'].includes(v)) throw new CmdlineError(`${loc}: Parameter 'detect-zeroes' does not accept value '${v}'`);
        if (v !== 'off') throw new CmdlineError(`${loc}: detect-zeroes=${v} is not supported by virtio-ts-qemu`);
        break;
      case 'auto-read-only':
      case 'force-share':
      case 'copy-on-read':
        if (boolAt(k, v, loc) && k === 'copy-on-read') throw new CmdlineError(`${loc}: drive option 'copy-on-read' is not supported by virtio-ts-qemu`);
        break;
      case 'locking':
        break;
      default:
        if (['serial', 'bus', 'unit', 'index', 'addr', 'cyls', 'heads', 'secs', 'trans', 'boot', 'encrypt.format', 'offset', 'size'].includes(k) || k.startsWith('throttling.') || k.startsWith('bps') || k.startsWith('iops')) {
          throw new CmdlineError(`${loc}: drive option '${k}' is not supported by virtio-ts-qemu`);
        }
        throw new CmdlineError(`${loc}: Block format '${format ?? 'raw'}' does not support the option '${k}'`);
    }
  }
  if (ifType !== 'none') {
    if (['ide', 'scsi', 'floppy', 'pflash', 'mtd', 'sd', 'virtio', 'xen'].includes(ifType)) {
      throw new CmdlineError(`${loc}: if=${ifType} is not supported by virtio-ts-qemu (use if=none and -device)`);
    }
    throw new CmdlineError(`${loc}: unsupported bus type '${ifType}'`);
  }
  if (format !== undefined && format !== 'raw') throw new CmdlineError(`${loc}: format '${format}' is not supported by virtio-ts-qemu (only raw)`);
  if (aio === 'native' && !direct) throw new CmdlineError(`${loc}: aio=native was specified, but it requires cache.direct=on, which was not specified.`);
  const finalId = id ?? `none${existing.length}`;
  if (existing.some((d) => d.id === finalId)) throw new CmdlineError(`${loc}: Duplicate ID '${finalId}' for drive`);
  if (blockdevs.some((b) => hasNodeName(b.node, finalId))) throw new CmdlineError(`${loc}: Device name '${finalId}' conflicts with an existing node name`);

  // The protocol: `file=` names it (a `null-co://` prefix, else a path), or `file.driver=`.
  let fileDriver = fileOpts.find(([k]) => k === 'driver')?.[1];
  if (file !== undefined && fileDriver === undefined) fileDriver = file.startsWith('null-co://') ? 'null-co' : 'file';
  const hasMedium = file !== undefined || fileDriver !== undefined;
  if (!hasMedium) {
    if (format !== undefined) throw new CmdlineError(`${loc}: A block device must be specified for "file"`);
    return { id: finalId, file: undefined, readonly, loc, writeback };
  }
  if (fileDriver !== 'file' && fileDriver !== 'null-co') {
    throw new CmdlineError(`${loc}: block driver '${fileDriver ?? ''}' is not supported by virtio-ts-qemu (file, null-co)`);
  }
  const proto: BlockNode = { driver: fileDriver, nodeName: undefined, readOnly: readonly, cacheDirect: direct, noFlush, unmap };
  if (fileDriver === 'file') proto.filename = file;
  for (const [k, v] of fileOpts) {
    if (!PROTOCOL_OPTS[fileDriver].includes(k)) throw new CmdlineError(`${loc}: Block protocol '${fileDriver}' doesn't support the option '${k}'`);
    if (k === 'filename') proto.filename = v;
    else if (k === 'node-name') proto.nodeName = v;
    else if (k === 'size') proto.size = sizeAt('size', v, loc);
    else if (k === 'read-zeroes') proto.readZeroes = boolAt(k, v, loc);
    else if (k === 'latency-ns') proto.latencyNs = sizeAt('latency-ns', v, loc);
    else if (k === 'aio' && v !== 'threads' && v !== 'native' && v !== 'io_uring') throw new CmdlineError(`${loc}: invalid aio option`);
  }
  if (fileDriver === 'file' && proto.filename === undefined) throw new CmdlineError(`${loc}: Parameter 'filename' is missing`);
  const shown = file ?? (fileDriver === 'file' ? proto.filename : `json:{"driver": "${fileDriver}"}`);
  if (format === undefined) {
    warnings.push(`WARNING: Image format was not specified for '${shown}' and probing guessed raw.\n         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n         Specify the 'raw' format explicitly to remove the restrictions.`);
  }
  const root: BlockNode = { driver: 'raw', nodeName, readOnly: readonly, child: proto, cacheDirect: direct, noFlush, unmap };
  return { id: finalId, file: shown, readonly, loc, root, writeback };
}

function hasNodeName(n: BlockNode | undefined, name: string): boolean {
  for (let x = n; x; x = x.child) if (x.nodeName === name) return true;
  return false;
}

type Keyed = Map<string, string | number | boolean>;

/**
 * `-blockdev` (QEMU's `qmp_blockdev_add` from the command line): keyval (`a=b,c.d=e`) or JSON.
 * Values keep QAPI's strict types: integers are plain numbers (`size=1M` is refused), booleans
 * on/off (keyval) or true/false (JSON).
 */
export function parseBlockdev(arg: string, loc: string, existing: readonly BlockdevSpec[], drives: readonly DriveSpec[]): BlockdevSpec {
  const opts: Keyed = new Map();
  const json = arg.trimStart().startsWith('{');
  if (json) {
    let obj: unknown;
    try {
      obj = JSON.parse(arg);
    } catch {
      throw new CmdlineError(`${loc}: JSON parse error, premature EOI`);
    }
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) throw new CmdlineError(`${loc}: JSON parse error, expecting an object`);
    const flatten = (o: Record<string, unknown>, prefix: string): void => {
      for (const [k, v] of Object.entries(o)) {
        if (v !== null && typeof v === 'object' && !Array.isArray(v)) flatten(v as Record<string, unknown>, `${prefix}${k}.`);
        else if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') opts.set(prefix + k, v);
        else throw new CmdlineError(`${loc}: Invalid parameter type for '${prefix}${k}'`);
      }
    };
    flatten(obj as Record<string, unknown>, '');
  } else {
    for (const part of splitKeyval(arg, loc)) opts.set(part[0], part[1]);
  }
  const node = blockdevNode(opts, '', loc, json, true);
  const all = [...existing.map((b) => b.node)];
  for (let x: BlockNode | undefined = node; x; x = x.child) {
    if (x.nodeName === undefined) continue;
    if (all.some((n) => hasNodeName(n, x!.nodeName!))) throw new CmdlineError(`${loc}: Duplicate nodes with node-name='${x.nodeName}'`);
    if (drives.some((d) => d.id === x!.nodeName)) throw new CmdlineError(`${loc}: node-name=${x.nodeName} is conflicting with a device id`);
  }
  // A `file=NODE` reference to an earlier -blockdev.
  const ref = opts.get('file');
  if (node.driver === 'raw' && typeof ref === 'string' && !node.child) {
    const target = existing.map((b) => b.node).find((n) => hasNodeName(n, ref));
    let t: BlockNode | undefined;
    for (let x = target; x; x = x.child) if (x.nodeName === ref) t = x;
    if (!t) throw new CmdlineError(`${loc}: Cannot find device='${ref}' nor node-name='${ref}'`);
    node.child = t;
  }
  if (node.driver === 'raw' && !node.child) throw new CmdlineError(`${loc}: A block device must be specified for "file"`);
  return { node, loc };
}

/** keyval splitting (`util/keyval.c`): `,,` is a literal comma; every key needs `=`. */
function splitKeyval(arg: string, loc: string): [string, string][] {
  const out: [string, string][] = [];
  let p = 0;
  while (p < arg.length) {
    const eq = arg.indexOf('=', p);
    const comma = arg.indexOf(',', p);
    if (eq < 0 || (comma >= 0 && comma < eq)) {
      const key = arg.slice(p, comma < 0 ? arg.length : comma);
      if (key === '') throw new CmdlineError(`${loc}: Invalid parameter ''`);
      throw new CmdlineError(`${loc}: Expected '=' after parameter '${key}'`);
    }
    const key = arg.slice(p, eq);
    p = eq + 1;
    let v = '';
    for (;;) {
      const c = arg.indexOf(',', p);
      if (c < 0) {
        v += arg.slice(p);
        p = arg.length;
        break;
      }
      v += arg.slice(p, c);
      if (arg[c + 1] === ',') {
        v += ',';
        p = c + 2;
        continue;
      }
      p = c + 1;
      break;
    }
    out.push([key, v]);
  }
  return out;
}

const COMMON_KEYS = ['driver', 'node-name', 'read-only', 'auto-read-only', 'force-share', 'cache.direct', 'cache.no-flush', 'discard', 'detect-zeroes'];
const DRIVER_KEYS: Record<BlockNode['driver'], readonly string[]> = {
  file: ['filename', 'locking', 'aio', 'aio-max-batch', 'pr-manager', 'x-check-cache-dropped', 'drop-cache'],
  raw: ['file', 'offset', 'size'],
  'null-co': ['size', 'read-zeroes', 'latency-ns'],
};
const BLOCKDEV_DRIVERS = [
  'blkdebug', 'blklogwrites', 'blkverify', 'blkreplay', 'bochs', 'cloop', 'compress', 'copy-before-write', 'copy-on-read', 'dmg',
  'file', 'ftp', 'ftps', 'gluster', 'host_cdrom', 'host_device', 'http', 'https', 'iscsi', 'luks', 'nbd', 'nfs', 'null-aio',
  'null-co', 'nvme', 'parallels', 'preallocate', 'qcow', 'qcow2', 'qed', 'quorum', 'raw', 'rbd', 'replication', 'snapshot-access',
  'ssh', 'throttle', 'vdi', 'vhdx', 'vmdk', 'vpc', 'vvfat',
];

/** One node of a -blockdev, from keys under `prefix`. */
function blockdevNode(opts: Keyed, prefix: string, loc: string, json: boolean, root: boolean): BlockNode {
  const get = (k: string) => opts.get(prefix + k);
  const str = (k: string): string | undefined => {
    const v = get(k);
    if (v === undefined) return undefined;
    if (typeof v !== 'string') throw new CmdlineError(`${loc}: Invalid parameter type for '${prefix}${k}', expected: string`);
    return v;
  };
  const bool = (k: string, d: boolean): boolean => {
    const v = get(k);
    if (v === undefined) return d;
    if (typeof v === 'boolean') return v;
    if (json) throw new CmdlineError(`${loc}: Invalid parameter type for '${prefix}${k}', expected: boolean`);
    if (v === 'on') return true;
    if (v === 'off') return false;
    throw new CmdlineError(`${loc}: Parameter '${prefix}${k}' expects 'on' or 'off'`);
  };
  const int = (k: string): number | undefined => {
    const v = get(k);
    if (v === undefined) return undefined;
    const n = typeof v === 'number' ? v : /^(0|[1-9]\d*|0[xX][0-9a-fA-F]+)$/.test(String(v)) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < 0 || (json && typeof v !== 'number')) throw new CmdlineError(`${loc}: Parameter '${prefix}${k}' expects integer`);
    return n;
  };
  const driver = str('driver');
  if (driver === undefined) throw new CmdlineError(`${loc}: Parameter '${prefix}driver' is missing`);
  if (!BLOCKDEV_DRIVERS.includes(driver)) throw new CmdlineError(`${loc}: Parameter '${prefix}driver' does not accept value '${driver}'`);
  if (driver !== 'file' && driver !== 'raw' && driver !== 'null-co') throw new CmdlineError(`${loc}: block driver '${driver}' is not supported by virtio-ts-qemu (file, raw, null-co)`);
  const nodeName = str('node-name');
  if (root && nodeName === undefined) throw new CmdlineError(`${loc}: 'node-name' must be specified for the root node`);
  const known = new Set([...COMMON_KEYS, ...DRIVER_KEYS[driver]]);
  for (const key of opts.keys()) {
    if (!key.startsWith(prefix)) continue;
    const rest = key.slice(prefix.length);
    if (driver === 'raw' && rest.startsWith('file.')) continue;
    if (!known.has(rest)) throw new CmdlineError(`${loc}: Parameter '${key}' is unexpected`);
  }
  const discard = str('discard');
  const detect = str('detect-zeroes');
  if (detect !== undefined && detect !== 'off') throw new CmdlineError(`${loc}: detect-zeroes=${detect} is not supported by virtio-ts-qemu`);
  const node: BlockNode = {
    driver,
    nodeName,
    readOnly: bool('read-only', false),
    cacheDirect: bool('cache.direct', false),
    noFlush: bool('cache.no-flush', false),
    unmap: discard === undefined ? false : parseDiscard(discard, loc),
  };
  bool('auto-read-only', false);
  bool('force-share', false);
  if (driver === 'file') {
    const filename = str('filename');
    if (filename === undefined) throw new CmdlineError(`${loc}: Parameter '${prefix}filename' is missing`);
    node.filename = filename;
    bool('drop-cache', true);
    const aio = str('aio');
    if (aio !== undefined && !['threads', 'native', 'io_uring'].includes(aio)) throw new CmdlineError(`${loc}: Parameter '${prefix}aio' does not accept value '${aio}'`);
    if (aio === 'native' && !node.cacheDirect) throw new CmdlineError(`${loc}: aio=native was specified, but it requires cache.direct=on, which was not specified.`);
  } else if (driver === 'null-co') {
    const size = int('size');
    if (size !== undefined) node.size = size;
    node.readZeroes = bool('read-zeroes', false);
    const lat = int('latency-ns');
    if (lat !== undefined) node.latencyNs = lat;
  } else {
    if (get('offset') !== undefined || get('size') !== undefined) throw new CmdlineError(`${loc}: raw 'offset' and 'size' are not supported by virtio-ts-qemu`);
    const f = get('file');
    if (f !== undefined && typeof f !== 'string') throw new CmdlineError(`${loc}: Invalid parameter type for '${prefix}file', expected: string`);
    if (f === undefined && [...opts.keys()].some((k) => k.startsWith(`${prefix}file.`))) {
      const child = blockdevNode(opts, `${prefix}file.`, loc, json, false);
      // Children inherit read-only (and, for the protocol, the parent's cache and discard modes).
      if (opts.get(`${prefix}file.read-only`) === undefined) child.readOnly = node.readOnly;
      if (opts.get(`${prefix}file.discard`) === undefined) child.unmap = node.unmap;
      if (opts.get(`${prefix}file.cache.direct`) === undefined) child.cacheDirect = node.cacheDirect;
      if (opts.get(`${prefix}file.cache.no-flush`) === undefined) child.noFlush = node.noFlush;
      node.child = child;
    }
  }
  return node;
}
