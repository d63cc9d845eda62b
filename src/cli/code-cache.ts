/**
 * Run a CommonJS bundle with a V8 code cache (issue 11: start-up of `virtio-ts-qemu`).
 *
 * Node 20 compiles a program's source on every start (it has no `module.enableCompileCache`,
 * which came in Node 22), and for a bundle of a few hundred KB that is a large part of our
 * start-up. Here the bundle is compiled through `vm.Script` with `cachedData` from a cache file,
 * and the cache is written again (from the functions compiled by then) when it was missing,
 * stale or refused, once the program says it is up (`saveWhenDone`).
 *
 * Validity:
 * - The cache file's name is a hash of the bundle's path, Node's version, the architecture and
 *   the V8-relevant options (`process.execArgv`, `NODE_OPTIONS`); its first line repeats them
 *   with the bundle's identity from `stat` (device, inode, size, mtime and ctime: any rewrite or
 *   replacement of the bundle changes its ctime), and must match exactly.
 * - V8 checks its own header (V8 version, flags, source length). A release V8 does not check the
 *   payload, and a damaged payload that passes the header can crash the process, so the cache
 *   is made and read with `--verify-snapshot-checksum` switched on just around those two calls
 *   (the flag changes V8's flag hash, so it is switched off again at once: left on, Node's own
 *   built-in modules would lose their code cache).
 * - The directory must be the user's own and writable by no one else (it is made with mode
 *   0700); otherwise the cache is off, since its code would run as the user.
 * - Anything wrong (no cache directory, unreadable or foreign file, refused data, a failed
 *   write) falls back to a plain compile, silently; the program runs the same either way.
 *
 * Where: `VIRTIO_TS_CACHE_DIR`, else `$XDG_CACHE_HOME/virtio-ts`, else `~/.cache/virtio-ts`,
 * else `%LOCALAPPDATA%/virtio-ts/cache`, else `$TMPDIR/virtio-ts-<uid>` (or `/tmp/...`).
 * `VIRTIO_TS_CODE_CACHE=off` (or `0`) turns the cache off; `VIRTIO_TS_CODE_CACHE=log` prints
 * what happened to stderr (for tests and for curiosity).
 *
 * Node-only; built into the small `dist/node/qemu-launch.cjs` the `virtio-ts-qemu` bin runs.
 */
// No node:module or node:os here: each costs a few tenths of a ms to load at start-up.
import { mkdirSync, readFileSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { Script } from 'node:vm';

/** What happened to the cache on this start. */
export type CodeCacheStatus =
  /** Compiled from the cache. */
  | 'hit'
  /** No cache file (or none for this bundle/Node/options). */
  | 'miss'
  /** A cache file for an older bundle (or an unreadable/foreign header). */
  | 'stale'
  /** V8 refused the data (damaged, or made by another V8 or with other flags). */
  | 'rejected'
  /**
   * Not used: VIRTIO_TS_CODE_CACHE=off, no cache directory could be named, the directory is not
   * private, or V8 is not known to check payloads.
   */
  | 'off';

export interface CodeCacheOptions {
  /**
   * The `require` the bundle gets. It must resolve as from the bundle's directory: the caller's
   * own when it sits beside the bundle (the launcher), or `module.createRequire(file)`.
   */
  require: NodeJS.Require;
  /** Cache directory; `false` turns the cache off. Default: from the environment (see above). */
  cacheDir?: string | false;
  /** Environment to read the defaults from (default `process.env`). */
  env?: NodeJS.ProcessEnv;
  /** Print what happens to stderr (default: `VIRTIO_TS_CODE_CACHE=log`). */
  log?: (message: string) => void;
}

export interface LoadedBundle {
  /** The bundle's `module.exports`. */
  exports: Record<string, unknown>;
  status: CodeCacheStatus;
  /** The cache file (undefined when off). */
  cacheFile: string | undefined;
  /** Whether a new cache will be (or was) written. */
  readonly needsSave: boolean;
  /**
   * Write the cache now, if it needs writing (synchronously; a failure is ignored). Returns true
   * when a file was written.
   */
  save(): boolean;
  /**
   * The program is up: write the cache when the process exits (so that it holds what this run
   * compiled), or after `fallbackMs` if it is still running then. Does nothing on a hit.
   */
  saveWhenDone(fallbackMs?: number): void;
}

const MAGIC = 'virtio-ts code cache 1';
const CHECKSUM_FLAG = 'verify-snapshot-checksum';

/** FNV-1a, 32 bits, of a short string: the cache file name only, never a validity check. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/** The cache directory the environment names, or false when the cache is off. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string | false {
  const mode = env['VIRTIO_TS_CODE_CACHE'];
  if (mode === 'off' || mode === '0' || mode === 'false') return false;
  if (env['VIRTIO_TS_CACHE_DIR']) return env['VIRTIO_TS_CACHE_DIR'];
  if (env['XDG_CACHE_HOME']) return join(env['XDG_CACHE_HOME'], 'virtio-ts');
  if (env['HOME']) return join(env['HOME'], '.cache', 'virtio-ts');
  if (env['LOCALAPPDATA']) return join(env['LOCALAPPDATA'], 'virtio-ts', 'cache');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 'user';
  return join(env['TMPDIR'] || env['TEMP'] || env['TMP'] || '/tmp', `virtio-ts-${uid}`);
}

/**
 * Whether `dir` may hold our cache: ours and writable by nobody else (code loaded from a
 * directory another user can write to would run as us). True when it does not exist yet.
 */
function privateDir(dir: string): boolean {
  let st;
  try {
    st = statSync(dir);
  } catch {
    return true;
  }
  if (!st.isDirectory()) return false;
  if (typeof process.getuid !== 'function') return true;
  return st.uid === process.getuid() && (st.mode & 0o022) === 0;
}

/** V8 and Node options that change how code is compiled (V8 refuses a cache made under others). */
function optionsKey(env: NodeJS.ProcessEnv): string {
  return `${process.execArgv.join(' ')}|${env['NODE_OPTIONS'] ?? ''}`;
}

/**
 * V8 versions known to have `--verify-snapshot-checksum` (Node 20 to 24). Elsewhere the cache is
 * off: an unknown flag would be reported on stderr at every start, and the payload unchecked.
 */
function checksumFlagKnown(): boolean {
  const major = Number(process.versions.v8.split('.')[0]);
  return major >= 11 && major <= 13;
}

/** Set a V8 flag for a moment; false if V8 would not take it. */
function setChecksumFlag(on: boolean): boolean {
  // A user who asked for checksums on the command line keeps them.
  if (process.execArgv.some((a) => a.includes(CHECKSUM_FLAG))) return true;
  try {
    setFlagsFromString(on ? `--${CHECKSUM_FLAG}` : `--no-${CHECKSUM_FLAG}`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Compile and run the CommonJS bundle `file` (as Node's loader would: `exports`, `require`,
 * `module`, `__filename`, `__dirname`), through the code cache. Errors thrown by the bundle
 * itself propagate; nothing about the cache ever does.
 */
export function loadBundle(file: string, opts: CodeCacheOptions): LoadedBundle {
  const env = opts.env ?? process.env;
  const log = opts.log ?? (env['VIRTIO_TS_CODE_CACHE'] === 'log' ? (m: string) => process.stderr.write(`virtio-ts code cache: ${m}\n`) : undefined);
  const source = readFileSync(file, 'utf8');
  const wrapper = `(function (exports, require, module, __filename, __dirname) { ${source}\n})`;

  let dir: string | false = false;
  try {
    dir = opts.cacheDir ?? defaultCacheDir(env);
  } catch {
    dir = false;
  }
  let status: CodeCacheStatus = 'off';
  let cacheFile: string | undefined;
  let header = '';
  let cached: Buffer | undefined;
  if (dir !== false && !checksumFlagKnown()) {
    log?.(`off: V8 ${process.versions.v8} is not known to check code cache payloads`);
    dir = false;
  }
  if (dir !== false && !privateDir(dir)) {
    log?.(`off: ${dir} is not a private directory`);
    dir = false;
  }
  if (dir !== false) {
    try {
      const st = statSync(file);
      const key = { file, node: process.version, v8: process.versions.v8, arch: process.arch, options: optionsKey(env) };
      cacheFile = join(dir, `${basename(file)}-${fnv1a(JSON.stringify(key))}.v8cache`);
      header = `${MAGIC} ${JSON.stringify({ ...key, dev: st.dev, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs })}\n`;
      let data: Buffer | undefined;
      try {
        data = readFileSync(cacheFile);
      } catch {
        data = undefined;
      }
      if (data === undefined) status = 'miss';
      else {
        const nl = data.indexOf(10);
        if (nl > 0 && nl + 1 === header.length && data.toString('latin1', 0, nl + 1) === header && data.length > nl + 1) {
          cached = data.subarray(nl + 1);
          status = 'hit';
        } else status = 'stale';
      }
    } catch {
      status = 'off';
      cacheFile = undefined;
    }
  }

  let script: Script;
  if (cached) {
    const checked = setChecksumFlag(true);
    try {
      script = checked ? new Script(wrapper, { filename: file, cachedData: cached }) : new Script(wrapper, { filename: file });
    } finally {
      if (checked) setChecksumFlag(false);
    }
    if (!checked || script.cachedDataRejected) status = 'rejected';
  } else {
    script = new Script(wrapper, { filename: file });
  }
  log?.(`${status}${cacheFile ? ` ${cacheFile}` : ''}`);

  let needsSave = status !== 'hit' && status !== 'off' && cacheFile !== undefined;
  const save = (): boolean => {
    if (!needsSave || cacheFile === undefined || dir === false) return false;
    needsSave = false;
    let tmp: string | undefined;
    try {
      if (!setChecksumFlag(true)) return false;
      let data: Buffer;
      try {
        data = script.createCachedData();
      } finally {
        setChecksumFlag(false);
      }
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      if (!privateDir(dir)) throw new Error(`${dir} is not a private directory`);
      // Write beside, then rename: a reader sees the old file or the whole new one.
      tmp = `${cacheFile}.${process.pid}.${Date.now().toString(36)}.tmp`;
      writeFileSync(tmp, Buffer.concat([Buffer.from(header, 'latin1'), data]), { mode: 0o644 });
      renameSync(tmp, cacheFile);
      log?.(`saved ${data.length} bytes to ${cacheFile}`);
      return true;
    } catch (e) {
      log?.(`not saved: ${e instanceof Error ? e.message : String(e)}`);
      if (tmp !== undefined) {
        try {
          unlinkSync(tmp);
        } catch {
          /* not there */
        }
      }
      return false;
    }
  };
  let scheduled = false;
  const saveWhenDone = (fallbackMs = 5000): void => {
    if (!needsSave || scheduled) return;
    scheduled = true;
    process.once('exit', () => void save());
    setTimeout(() => void save(), fallbackMs).unref();
  };

  const mod = { exports: {} as Record<string, unknown> };
  const fn = script.runInThisContext() as (e: unknown, r: NodeJS.Require, m: unknown, f: string, d: string) => void;
  fn.call(mod.exports, mod.exports, opts.require, mod, file, dirname(file));
  return {
    get exports() {
      return mod.exports;
    },
    status,
    cacheFile,
    get needsSave() {
      return needsSave;
    },
    save,
    saveWhenDone,
  };
}
