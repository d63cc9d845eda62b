/**
 * A byte stream in QEMU's migration encoding (QEMUFile): big-endian integers, offsets tracked so
 * that a load error can name where it happened. The writer grows a buffer; the reader never
 * reads past the end and reports a short stream as a `MigrationError` naming offset and field.
 */

export class MigrationError extends Error {
  /** The message alone, without the location (QEMU's wording where QEMU has one). */
  readonly reason: string;
  constructor(readonly offset: number, readonly field: string, message: string) {
    super(`migration stream offset ${offset} (${field}): ${message}`);
    this.name = 'MigrationError';
    this.reason = message;
  }
}

const LATIN1 = {
  encode(s: string): Uint8Array {
    const b = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff) throw new RangeError(`name '${s}' is not 8-bit text`);
      b[i] = c;
    }
    return b;
  },
};

/** Bytes as 8-bit text (names in streams are C strings, compared byte by byte). */
export function latin1(b: Uint8Array): string {
  if (b.length <= 64) {
    let s = '';
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]!);
    return s;
  }
  // Long texts (the JSON description) in chunks: one call per 8 KiB instead of one per byte,
  // and small enough for any engine's argument limit.
  const parts: string[] = [];
  for (let i = 0; i < b.length; i += 8192) parts.push(String.fromCharCode.apply(null, b.subarray(i, i + 8192) as unknown as number[]));
  return parts.join('');
}

export class QEMUFileWriter {
  private buf: Uint8Array;
  private view: DataView;
  private pos = 0;

  /**
   * `initialCapacity`: bytes to reserve up front. A whole-machine stream is mostly RAM pages whose
   * size is known before writing; reserving it avoids copying tens of MiB on every doubling.
   */
  constructor(initialCapacity = 256) {
    this.buf = new Uint8Array(Math.max(16, Math.ceil(initialCapacity)));
    this.view = new DataView(this.buf.buffer);
  }

  get offset(): number {
    return this.pos;
  }

  private reserve(n: number): number {
    const at = this.pos;
    if (at + n > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < at + n) cap *= 2;
      const b = new Uint8Array(cap);
      b.set(this.buf.subarray(0, at));
      this.buf = b;
      this.view = new DataView(b.buffer);
    }
    this.pos = at + n;
    return at;
  }

  // `reserve` may replace `buf` and `view`: take the offset first, then touch the (new) buffer.
  putByte(v: number): void { const at = this.reserve(1); this.buf[at] = v & 0xff; }
  putBool(v: boolean): void { this.putByte(v ? 1 : 0); }
  putBe16(v: number): void { const at = this.reserve(2); this.view.setUint16(at, v & 0xffff); }
  putBe32(v: number): void { const at = this.reserve(4); this.view.setUint32(at, v >>> 0); }
  putBe64(v: bigint): void { const at = this.reserve(8); this.view.setBigUint64(at, BigInt.asUintN(64, v)); }
  putBuffer(b: Uint8Array): void { const at = this.reserve(b.length); this.buf.set(b, at); }
  /** `n` zero bytes. */
  putZeros(n: number): void { const at = this.reserve(n); this.buf.fill(0, at, at + n); }
  /** A length-prefixed name (u8 length, then the bytes), as section and subsection headers use. */
  putName(name: string): void {
    const b = LATIN1.encode(name);
    if (b.length > 255) throw new RangeError(`name '${name}' is longer than 255 bytes`);
    this.putByte(b.length);
    this.putBuffer(b);
  }
  /** Overwrite a be32 already written at `offset` (a length known only afterwards). */
  patchBe32(offset: number, v: number): void {
    if (offset < 0 || offset + 4 > this.pos) throw new RangeError(`patch at ${offset} outside what was written`);
    this.view.setUint32(offset, v >>> 0);
  }

  /** The bytes written so far (a copy). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  /**
   * The bytes written so far without a copy: a view that stays valid until the next write (a
   * write may move the data to a larger buffer).
   */
  written(): Uint8Array {
    return this.buf.subarray(0, this.pos);
  }
}

export class QEMUFileReader {
  private readonly view: DataView;
  private pos = 0;

  constructor(private readonly buf: Uint8Array) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get offset(): number {
    return this.pos;
  }

  get remaining(): number {
    return this.buf.length - this.pos;
  }

  private take(n: number, field: string): number {
    if (n > this.buf.length - this.pos) {
      throw new MigrationError(this.pos, field, `stream ends after ${this.buf.length - this.pos} of ${n} bytes`);
    }
    const at = this.pos;
    this.pos += n;
    return at;
  }

  getByte(field: string): number { return this.buf[this.take(1, field)]!; }
  getBool(field: string): boolean {
    const at = this.pos;
    const v = this.getByte(field);
    if (v > 1) throw new MigrationError(at, field, `boolean byte is ${v}`);
    return v === 1;
  }
  getBe16(field: string): number { return this.view.getUint16(this.take(2, field)); }
  getBe32(field: string): number { return this.view.getUint32(this.take(4, field)); }
  getBe64(field: string): bigint { return this.view.getBigUint64(this.take(8, field)); }
  getBuffer(n: number, field: string): Uint8Array {
    const at = this.take(n, field);
    return this.buf.slice(at, at + n);
  }
  /** `n` bytes without a copy: a view valid as long as the stream's buffer is not changed. */
  getView(n: number, field: string): Uint8Array {
    const at = this.take(n, field);
    return this.buf.subarray(at, at + n);
  }
  /** Skip `n` bytes (they must be there). */
  skip(n: number, field: string): void {
    this.take(n, field);
  }
  /**
   * The byte `ahead` bytes from the current position without consuming it, or -1 past the end
   * (QEMU's `qemu_peek_byte` returns 0 there; callers here need to tell the two apart).
   */
  peekByte(ahead = 0): number {
    const at = this.pos + ahead;
    return at >= 0 && at < this.buf.length ? this.buf[at]! : -1;
  }
  /** Up to `n` bytes from `ahead` on, without consuming them (fewer at the end of the stream). */
  peekBytes(ahead: number, n: number): Uint8Array {
    const from = Math.min(this.pos + ahead, this.buf.length);
    return this.buf.subarray(from, Math.min(from + n, this.buf.length));
  }
  /** Move to an absolute offset inside the stream (for parsers that found a length elsewhere). */
  seek(offset: number): void {
    if (!Number.isInteger(offset) || offset < 0 || offset > this.buf.length) throw new RangeError(`seek to ${offset} outside the stream`);
    this.pos = offset;
  }
  /** The stream's whole length. */
  get length(): number {
    return this.buf.length;
  }
  /** A length-prefixed name (u8 length, then the bytes). */
  getName(field: string): string {
    const n = this.getByte(field);
    return latin1(this.getView(n, field));
  }
  error(field: string, message: string, at = this.pos): MigrationError {
    return new MigrationError(at, field, message);
  }
}
