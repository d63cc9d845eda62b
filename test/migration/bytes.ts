// Hand-written migration bytes for tests: streams and blobs built field by field, independently
// of the writer under test.

/** A big-endian byte builder that remembers named offsets. */
export class Bytes {
  private readonly out: number[] = [];
  readonly marks: Record<string, number> = {};
  get length(): number {
    return this.out.length;
  }
  mark(name: string): this {
    this.marks[name] = this.out.length;
    return this;
  }
  u8(v: number): this {
    this.out.push(v & 0xff);
    return this;
  }
  u16(v: number): this {
    return this.u8(v >> 8).u8(v);
  }
  u32(v: number): this {
    return this.u8(v >>> 24).u8(v >>> 16).u8(v >>> 8).u8(v);
  }
  u64(v: bigint): this {
    return this.u32(Number(v >> 32n)).u32(Number(v & 0xffff_ffffn));
  }
  str(s: string): this {
    for (const c of s) this.u8(c.charCodeAt(0));
    return this;
  }
  name(s: string): this {
    return this.u8(s.length).str(s);
  }
  raw(b: ArrayLike<number>): this {
    for (let i = 0; i < b.length; i++) this.out.push(b[i]! & 0xff);
    return this;
  }
  /** A subsection header: QEMU_VM_SUBSECTION, the name, be32 version. */
  subsection(name: string, version = 1): this {
    return this.u8(0x05).name(name).u32(version);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}
