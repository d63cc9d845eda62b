/**
 * The qtest text protocol as QEMU 7.2 speaks it (`softmmu/qtest.c`), over any byte channel: feed
 * it what the client sends, it answers through `send`. One reply line per command, in order;
 * asynchronous `IRQ raise N` / `IRQ lower N` lines whenever an intercepted line changes.
 *
 * Where QEMU's parser is exact we are exact: lines end at `\n` (a `\r` stays part of the last
 * word), words are split on single spaces (two spaces make an empty word), numbers are C's
 * `strtoull(s, NULL, 0)` with QEMU's checks (`0x` hex, a leading `0` octal, optional sign, no
 * trailing characters, overflow refused). Where QEMU would abort on a `g_assert` (missing or
 * unparsable argument, port above 0xffff, `read` of length 0, an empty line) we answer
 * `FAIL <reason>` and keep serving. Lengths are capped (`maxTransfer`) so no request makes us
 * allocate without bound.
 *
 * No Node imports: the transports (unix socket, stdio) live in `chardev.ts`.
 */
import type { QtestTarget } from './qtest-target.js';

export interface QtestServerOptions {
  /** Write protocol text (replies and IRQ lines, each ending in `\n`) to the client. */
  send: (text: string) => void;
  /**
   * QEMU's qtest log (`-qtest-log`): receives text exactly as QEMU writes it to the log file
   * (`[R +t] cmd`, `[S +t] reply`, `[I t] OPENED`). Absent: no log (`-qtest-log none`).
   */
  log?: (text: string) => void;
  /** Largest `read`/`b64read`/`write`/`b64write`/`memset` length accepted (default 64 MiB). */
  maxTransfer?: number;
  /** Longest line kept while waiting for its newline (default: enough for a maximal `write`). */
  maxLineLength?: number;
  /** Monotonic seconds for the log's timestamps (default `performance.now()/1000`). */
  now?: () => number;
}

export const DEFAULT_MAX_TRANSFER = 64 * 1024 * 1024;

const U64_MAX = 0xffff_ffff_ffff_ffffn;
const I64_MAX = 0x7fff_ffff_ffff_ffffn;
const I64_MIN = -0x8000_0000_0000_0000n;

/** A parse result: the value, or the reason it is refused. */
type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

/**
 * C's `strtoull(s, &end, 0)` plus QEMU's `check_strtox_error`: leading white space, an optional
 * sign (a minus wraps modulo 2^64, as strtoull does), `0x`/`0X` hex, leading-zero octal, decimal;
 * the whole string must be consumed and the value must fit 64 bits.
 */
export function parseStrtoull(s: string | undefined): Parsed<bigint> {
  if (s !== undefined) {
    const small = parseSmallUnsigned(s);
    if (small >= 0) return { ok: true, value: BigInt(small) };
  }
  const r = parseCInteger(s);
  if (!r.ok) return r;
  const { negative, magnitude } = r.value;
  if (magnitude > U64_MAX) return { ok: false, error: `number out of range '${printable(s!)}'` };
  return { ok: true, value: negative ? (magnitude === 0n ? 0n : (1n << 64n) - magnitude) : magnitude };
}

/** C's `strtoll(s, &end, 0)` with QEMU's checks (`qemu_strtoi64`). */
export function parseStrtoll(s: string | undefined): Parsed<bigint> {
  const r = parseCInteger(s);
  if (!r.ok) return r;
  const v = r.value.negative ? -r.value.magnitude : r.value.magnitude;
  if (v > I64_MAX || v < I64_MIN) return { ok: false, error: `number out of range '${printable(s!)}'` };
  return { ok: true, value: v };
}

/** QEMU's `qemu_strtoi`: strtoll limited to a C int. */
export function parseStrtoi(s: string | undefined): Parsed<number> {
  const r = parseStrtoll(s);
  if (!r.ok) return r;
  if (r.value > 0x7fff_ffffn || r.value < -0x8000_0000n) return { ok: false, error: `number out of range '${printable(s!)}'` };
  return { ok: true, value: Number(r.value) };
}

const C_INTEGER = /^[ \t\n\v\f\r]*([+-]?)(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))$/;

/**
 * The common case of `strtoull` without BigInt: a bare `0x` hex number of at most 13 digits, a
 * decimal of at most 15 digits, or an octal of at most 17 digits after the `0` (all below 2^53).
 * Returns -1 for anything else (white space, signs, longer or malformed numbers): the caller then
 * takes the exact path, which gives the same value or the FAIL reason.
 */
function parseSmallUnsigned(s: string): number {
  const n = s.length;
  if (n === 0) return -1;
  const c0 = s.charCodeAt(0);
  if (c0 === 0x30) {
    if (n === 1) return 0;
    const c1 = s.charCodeAt(1);
    if (c1 === 0x78 || c1 === 0x58) {
      if (n < 3 || n > 15) return -1;
      let v = 0;
      for (let i = 2; i < n; i++) {
        const c = s.charCodeAt(i);
        let d: number;
        if (c >= 0x30 && c <= 0x39) d = c - 0x30;
        else if (c >= 0x61 && c <= 0x66) d = c - 0x57;
        else if (c >= 0x41 && c <= 0x46) d = c - 0x37;
        else return -1;
        v = v * 16 + d;
      }
      return v;
    }
    if (n > 18) return -1;
    let v = 0;
    for (let i = 1; i < n; i++) {
      const d = s.charCodeAt(i) - 0x30;
      if (d < 0 || d > 7) return -1;
      v = v * 8 + d;
    }
    return v;
  }
  if (c0 < 0x31 || c0 > 0x39 || n > 15) return -1;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const d = s.charCodeAt(i) - 0x30;
    if (d < 0 || d > 9) return -1;
    v = v * 10 + d;
  }
  return v;
}

function parseCInteger(s: string | undefined): Parsed<{ negative: boolean; magnitude: bigint }> {
  if (s === undefined) return { ok: false, error: 'missing argument' };
  const m = C_INTEGER.exec(s);
  if (!m) return { ok: false, error: `invalid number '${printable(s)}'` };
  const negative = m[1] === '-';
  let magnitude: bigint;
  if (m[2] !== undefined) magnitude = BigInt('0x' + m[2]);
  else if (m[3] !== undefined) magnitude = m[3].length > 1 ? BigInt('0o' + m[3].slice(1)) : 0n;
  else magnitude = BigInt(m[4]!);
  return { ok: true, value: { negative, magnitude } };
}

/** A word for a FAIL message: control characters escaped so the reply stays one line. */
function printable(s: string): string {
  let out = '';
  for (const ch of s.length > 64 ? s.slice(0, 64) + '...' : s) {
    const c = ch.charCodeAt(0);
    if (c === 0x0d) out += '\\r';
    else if (c === 0x09) out += '\\t';
    else if (c < 0x20 || c === 0x7f) out += '\\x' + c.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out;
}

const HEX = '0123456789abcdef';
const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_RANK = (() => {
  const t = new Uint8Array(256).fill(0xff);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  t['='.charCodeAt(0)] = 0;
  return t;
})();

/** glib's `g_base64_encode`. */
export function base64Encode(data: Uint8Array): string {
  const parts: string[] = [];
  let chunk = '';
  let i = 0;
  for (; i + 2 < data.length; i += 3) {
    const v = (data[i]! << 16) | (data[i + 1]! << 8) | data[i + 2]!;
    chunk += B64[v >> 18]! + B64[(v >> 12) & 63]! + B64[(v >> 6) & 63]! + B64[v & 63]!;
    if (chunk.length >= 8192) {
      parts.push(chunk);
      chunk = '';
    }
  }
  const rest = data.length - i;
  if (rest === 1) {
    const v = data[i]! << 16;
    chunk += B64[v >> 18]! + B64[(v >> 12) & 63]! + '==';
  } else if (rest === 2) {
    const v = (data[i]! << 16) | (data[i + 1]! << 8);
    chunk += B64[v >> 18]! + B64[(v >> 12) & 63]! + B64[(v >> 6) & 63]! + '=';
  }
  parts.push(chunk);
  return parts.join('');
}

/**
 * glib's `g_base64_decode`: characters outside the alphabet are skipped, '=' counts as a zero
 * digit that suppresses output bytes, and an incomplete final group is dropped.
 */
export function base64Decode(text: string): Uint8Array {
  const out = new Uint8Array(Math.floor((text.length * 3) / 4) + 3);
  let n = 0;
  let v = 0;
  let i = 0;
  let last0 = 0;
  let last1 = 0;
  for (let p = 0; p < text.length; p++) {
    const c = text.charCodeAt(p);
    const rank = c < 256 ? B64_RANK[c]! : 0xff;
    if (rank === 0xff) continue;
    last1 = last0;
    last0 = c;
    v = ((v << 6) | rank) & 0xff_ffff;
    if (++i === 4) {
      out[n++] = v >> 16;
      if (last1 !== 0x3d) out[n++] = (v >> 8) & 0xff;
      if (last0 !== 0x3d) out[n++] = v & 0xff;
      i = 0;
    }
  }
  return out.subarray(0, n);
}

/** QEMU's `hex2nib`: -1 for a non-hex character. */
function hex2nib(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Failure inside a command: becomes `FAIL <message>`. */
class CommandFailure extends Error {}

export class QtestServer {
  private readonly send: (text: string) => void;
  private readonly log: ((text: string) => void) | undefined;
  private readonly maxTransfer: number;
  private readonly maxLineLength: number;
  private readonly now: () => number;
  private inbuf = '';
  private discarding = false;
  /** Replies gathered while a chunk is processed, sent in one write. */
  private out: string[] | undefined;
  private opened = false;
  private openedAt = 0;

  constructor(readonly target: QtestTarget, opts: QtestServerOptions) {
    this.send = opts.send;
    this.log = opts.log;
    this.maxTransfer = opts.maxTransfer ?? DEFAULT_MAX_TRANSFER;
    this.maxLineLength = opts.maxLineLength ?? 2 * this.maxTransfer + 4096; // `write`: 2 hex digits per byte
    this.now = opts.now ?? (() => performance.now() / 1000);
    target.onIrq = (line, level) => {
      this.emit(`IRQ ${level ? 'raise' : 'lower'} ${line}\n`);
    };
  }

  // ---------------------------------------------------------------------------------------
  // Connection events (QEMU's qtest_event)

  /** A client connected (CHR_EVENT_OPENED). */
  open(): void {
    this.opened = true;
    // The clock is read only for the log (the first read of `performance` loads a module:
    // ~1 ms of virtio-ts-qemu's start-up, issue 11).
    if (this.log) this.openedAt = this.now();
    this.inbuf = '';
    this.discarding = false;
    this.log?.(`[I ${(0).toFixed(6)}] OPENED\n`);
  }

  /** The client went away (CHR_EVENT_CLOSED). The machine keeps running, as QEMU's does. */
  close(): void {
    if (!this.opened) return;
    this.log?.(`[I +${this.elapsed()}] CLOSED\n`);
    this.opened = false;
    this.inbuf = '';
  }

  private elapsed(): string {
    return (this.now() - this.openedAt).toFixed(6);
  }

  // ---------------------------------------------------------------------------------------
  // Input

  /** Bytes from the client, as a latin1 string (one character per byte). */
  feed(chunk: string): void {
    const batch: string[] = [];
    this.out = batch;
    try {
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf('\n', start);
        if (nl < 0) break;
        const piece = chunk.slice(start, nl);
        start = nl + 1;
        if (this.discarding) {
          this.discarding = false;
          this.inbuf = '';
          this.reply(`FAIL line longer than ${this.maxLineLength} bytes\n`);
          continue;
        }
        const line = this.inbuf.length ? this.inbuf + piece : piece;
        this.inbuf = '';
        this.processLine(line);
      }
      const rest = chunk.slice(start);
      if (rest.length) {
        if (this.discarding || this.inbuf.length + rest.length > this.maxLineLength) {
          this.discarding = true;
          this.inbuf = '';
        } else {
          this.inbuf += rest;
        }
      }
    } finally {
      this.out = undefined;
      if (batch.length) this.send(batch.join(''));
    }
  }

  /** Send `text`; QEMU logs it with the `[S +t]` prefix except for `ERR` replies. */
  private emit(text: string): void {
    if (this.log) this.log(text.startsWith('ERR ') ? text : `[S +${this.elapsed()}] ${text}`);
    if (this.out) this.out.push(text);
    else this.send(text);
  }

  private reply(text: string): void {
    this.emit(text);
  }

  private processLine(line: string): void {
    // g_strsplit(cmd, " ", 0): an empty line gives no words at all.
    const words = line.length ? splitSpaces(line) : [];
    if (this.log) this.log(`[R +${this.elapsed()}]${words.map((w) => ' ' + w).join('')}\n`);
    if (words.length === 0) {
      this.reply('FAIL empty command\n');
      return;
    }
    try {
      this.reply(this.dispatch(words));
    } catch (e) {
      if (e instanceof CommandFailure) this.reply(`FAIL ${e.message}\n`);
      else this.reply(`FAIL internal error: ${printable(e instanceof Error ? e.message : String(e))}\n`);
    }
  }

  // ---------------------------------------------------------------------------------------
  // Commands (qtest_process_command)

  private dispatch(w: string[]): string {
    const t = this.target;
    const cmd = w[0]!;
    switch (cmd) {
      case 'irq_intercept_out':
      case 'irq_intercept_in': {
        const path = arg(w, 1, 'QOM path');
        const err = t.irqIntercept(cmd === 'irq_intercept_in' ? 'in' : 'out', path);
        return err === null ? 'OK\n' : `FAIL ${err}\n`;
      }
      case 'set_irq_in': {
        const path = arg(w, 1, 'QOM path');
        const name = arg(w, 2, 'GPIO name');
        const num = int(w, 3);
        const level = int(w, 4);
        const err = t.setIrqIn(path, name, num, level);
        return err === null ? 'OK\n' : `FAIL ${err}\n`;
      }
      case 'outb':
      case 'outw':
      case 'outl': {
        const port = port16(w, 1);
        const value = low32(w, 2);
        if (cmd === 'outb') t.outb(port, value & 0xff);
        else if (cmd === 'outw') t.outw(port, value & 0xffff);
        else t.outl(port, value);
        return 'OK\n';
      }
      case 'inb':
      case 'inw':
      case 'inl': {
        const port = port16(w, 1);
        const v = cmd === 'inb' ? t.inb(port) & 0xff : cmd === 'inw' ? t.inw(port) & 0xffff : t.inl(port) >>> 0;
        return `OK 0x${v.toString(16).padStart(4, '0')}\n`;
      }
      case 'writeb':
      case 'writew':
      case 'writel':
      case 'writeq': {
        const addr = address(w, 1);
        if (addr !== undefined && cmd !== 'writeq') {
          const value = low32(w, 2);
          if (cmd === 'writeb') t.writeb(addr, value & 0xff);
          else if (cmd === 'writew') t.writew(addr, value & 0xffff);
          else t.writel(addr, value);
          return 'OK\n';
        }
        const value = u64(w, 2);
        if (addr === undefined) {
          const size = cmd === 'writeb' ? 1 : cmd === 'writew' ? 2 : cmd === 'writel' ? 4 : 8;
          const bytes = new Uint8Array(8);
          new DataView(bytes.buffer).setBigUint64(0, value, true);
          this.writeWrapped(u64(w, 1), bytes.subarray(0, size));
          return 'OK\n';
        }
        t.writeq(addr, value);
        return 'OK\n';
      }
      case 'readb':
      case 'readw':
      case 'readl':
      case 'readq': {
        const addr = address(w, 1);
        if (addr !== undefined && cmd !== 'readq') {
          const v = cmd === 'readb' ? t.readb(addr) & 0xff : cmd === 'readw' ? t.readw(addr) & 0xffff : t.readl(addr) >>> 0;
          return `OK 0x${v.toString(16).padStart(16, '0')}\n`;
        }
        let v: bigint;
        if (addr === undefined) {
          const size = cmd === 'readb' ? 1 : cmd === 'readw' ? 2 : cmd === 'readl' ? 4 : 8;
          const bytes = new Uint8Array(8);
          bytes.set(this.readWrapped(u64(w, 1), size));
          v = new DataView(bytes.buffer).getBigUint64(0, true);
        } else v = BigInt.asUintN(64, t.readq(addr));
        return `OK 0x${v.toString(16).padStart(16, '0')}\n`;
      }
      case 'read': {
        const addr = address(w, 1);
        const len = this.length(w, 2);
        if (len === 0) throw new CommandFailure('read of length 0');
        const data = addr === undefined ? this.readWrapped(u64(w, 1), len) : t.readBytes(addr, len);
        return `OK 0x${hexEncode(data)}\n`;
      }
      case 'b64read': {
        const addr = address(w, 1);
        const len = this.length(w, 2);
        const data = len === 0 ? new Uint8Array(0) : addr === undefined ? this.readWrapped(u64(w, 1), len) : t.readBytes(addr, len);
        return `OK ${base64Encode(data)}\n`;
      }
      case 'write': {
        const addr = address(w, 1);
        const len = this.length(w, 2);
        const text = arg(w, 3, 'data');
        if (text.length < 3) return this.errInvalidSize();
        // QEMU skips the first two characters ("0x") unchecked and zero-fills short data.
        const data = new Uint8Array(len);
        for (let i = 0; i < len && i * 2 + 4 <= text.length; i++) {
          const hi = hex2nib(text.charCodeAt(i * 2 + 2));
          const lo = hex2nib(text.charCodeAt(i * 2 + 3));
          data[i] = ((hi << 4) & 0xff) | (lo & 0xff);
        }
        if (len) this.writeAt(w, addr, data);
        return 'OK\n';
      }
      case 'memset': {
        const addr = address(w, 1);
        const len = this.length(w, 2);
        const pattern = u64(w, 3);
        if (addr !== undefined && len) t.memset(addr, len, Number(pattern & 0xffn));
        else if (len) this.writeWrapped(u64(w, 1), new Uint8Array(len).fill(Number(pattern & 0xffn)));
        return 'OK\n';
      }
      case 'b64write': {
        const addr = address(w, 1);
        const len = this.length(w, 2);
        const text = arg(w, 3, 'data');
        if (text.length < 3) return this.errInvalidSize();
        const data = base64Decode(text);
        if (data.length !== len) {
          this.log?.(`[S +${this.elapsed()}] b64write: data length mismatch (told ${len}, found ${data.length})\n`);
          // QEMU 7.2 writes LEN bytes anyway, reading past the decoded data; we refuse instead.
          if (data.length < len) throw new CommandFailure(`b64write: data length mismatch (told ${len}, found ${data.length})`);
        }
        if (len) this.writeAt(w, addr, data.subarray(0, len));
        return 'OK\n';
      }
      case 'endianness':
        return `OK ${t.endianness}\n`;
      case 'clock_step': {
        let now: number;
        if (w[1] !== undefined) {
          const ns = i64(w, 1);
          now = t.clockStep(ns <= 0n ? 0 : safe(ns));
        } else {
          now = t.clockStep();
        }
        return `OK ${now}\n`;
      }
      case 'clock_set': {
        const ns = i64(w, 1);
        return `OK ${t.clockSet(ns <= 0n ? 0 : safe(ns))}\n`;
      }
      case 'module_load':
        arg(w, 1, 'module prefix');
        arg(w, 2, 'module name');
        // No loadable modules here: QEMU answers FAIL when module_load finds nothing.
        return 'FAIL\n';
      default:
        return `FAIL Unknown command '${printable(cmd)}'\n`;
    }
  }

  /** `ERR invalid argument size`, which QEMU sends without the log prefix. */
  private errInvalidSize(): string {
    return 'ERR invalid argument size\n';
  }

  private writeAt(w: string[], addr: number | undefined, data: Uint8Array): void {
    if (addr !== undefined) this.target.writeBytes(addr, data);
    else this.writeWrapped(u64(w, 1), data);
  }

  /**
   * An access that starts above 2^53: nothing of ours is there (reads 0, writes vanish), but the
   * 64-bit address wraps to 0 as in QEMU, so the part past 2^64 reaches low memory.
   */
  private readWrapped(addr: bigint, len: number): Uint8Array {
    const out = new Uint8Array(len);
    const before = (1n << 64n) - addr;
    if (before < BigInt(len)) out.set(this.target.readBytes(0, len - Number(before)), Number(before));
    return out;
  }

  private writeWrapped(addr: bigint, data: Uint8Array): void {
    const before = (1n << 64n) - addr;
    if (before < BigInt(data.length)) this.target.writeBytes(0, data.subarray(Number(before)));
  }

  private length(w: string[], i: number): number {
    const v = u64(w, i);
    if (v > BigInt(this.maxTransfer)) throw new CommandFailure(`length ${v} is above the limit of ${this.maxTransfer} bytes`);
    return Number(v);
  }
}

function arg(w: string[], i: number, what: string): string {
  const s = w[i];
  if (s === undefined) throw new CommandFailure(`missing argument ${i} (${what}) to ${printable(w[0]!)}`);
  return s;
}

function u64(w: string[], i: number): bigint {
  if (w[i] === undefined) throw new CommandFailure(`missing argument ${i} to ${printable(w[0]!)}`);
  const r = parseStrtoull(w[i]);
  if (!r.ok) throw new CommandFailure(r.error);
  return r.value;
}

function i64(w: string[], i: number): bigint {
  if (w[i] === undefined) throw new CommandFailure(`missing argument ${i} to ${printable(w[0]!)}`);
  const r = parseStrtoll(w[i]);
  if (!r.ok) throw new CommandFailure(r.error);
  return r.value;
}

function int(w: string[], i: number): number {
  if (w[i] === undefined) throw new CommandFailure(`missing argument ${i} to ${printable(w[0]!)}`);
  const r = parseStrtoi(w[i]);
  if (!r.ok) throw new CommandFailure(r.error);
  return r.value;
}

/** The low 32 bits of a u64 argument (the value of `out*` and `write[bwl]`), as an unsigned number. */
function low32(w: string[], i: number): number {
  const s = w[i];
  const small = s === undefined ? -1 : parseSmallUnsigned(s);
  // ToUint32 is exact modulo 2^32 for integers below 2^53.
  if (small >= 0) return small >>> 0;
  return Number(u64(w, i) & 0xffff_ffffn);
}

function port16(w: string[], i: number): number {
  const s = w[i];
  const small = s === undefined ? -1 : parseSmallUnsigned(s);
  if (small >= 0 && small <= 0xffff) return small;
  const v = u64(w, i);
  if (v > 0xffffn) throw new CommandFailure(`port 0x${v.toString(16)} is above 0xffff`);
  return Number(v);
}

/** A guest address; undefined above 2^53 (nothing of ours lives there: unassigned). */
function address(w: string[], i: number): number | undefined {
  const s = w[i];
  const small = s === undefined ? -1 : parseSmallUnsigned(s);
  if (small >= 0) return small;
  const v = u64(w, i);
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(v);
}

function safe(v: bigint): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CommandFailure(`time ${v} ns is beyond what this machine's clock can count (2^53 ns)`);
  return Number(v);
}

/** `line.split(' ')` (two spaces make an empty word), without the runtime call split makes. */
function splitSpaces(line: string): string[] {
  const words: string[] = [];
  let start = 0;
  for (;;) {
    const sp = line.indexOf(' ', start);
    if (sp < 0) {
      words.push(start === 0 ? line : line.slice(start));
      return words;
    }
    words.push(line.slice(start, sp));
    start = sp + 1;
  }
}

function hexEncode(data: Uint8Array): string {
  const parts: string[] = [];
  let chunk = '';
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    chunk += HEX[b >> 4]! + HEX[b & 15]!;
    if (chunk.length >= 8192) {
      parts.push(chunk);
      chunk = '';
    }
  }
  parts.push(chunk);
  return parts.join('');
}
