/**
 * A byte stream in QEMU's migration encoding (QEMUFile): big-endian integers, offsets tracked so
 * that a load error can name where it happened. The writer grows a buffer; the reader never
 * reads past the end and reports a short stream as a `MigrationError` naming offset and field.
 */

export class MigrationError extends Error {
  constructor(readonly offset: number, readonly field: string, message: string) {
    super(`migration stream offset ${offset} (${field}): ${message}`);
    this.name = 'MigrationError';
  }
}

export class QEMUFileWriter {
  private buf = new Uint8Array(256);
  private view = new DataView(this.buf.buffer);
  private pos = 0;

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

  /** The bytes written so far (a copy). */
  bytes(): Uint8Array {
    return this.buf.slice(0, this.pos);
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
  error(field: string, message: string, at = this.pos): MigrationError {
    return new MigrationError(at, field, message);
  }
}
