// A minimal MigratableMachine for container tests: two RAM blocks (`tiny.ram`, 3 pages at GPA 0;
// `tiny.rom`, 1 page at GPA 0x10000) and one device section `tiny-dev` (version 2, minimum 1)
// with fields a (be32), b (u8, must be below 200), c (be16, version 2 on) and subsection
// `tiny-dev/extra` (flag, be16) written while flag is non-zero. Its load can also peek at RAM
// through the load context, to test `peekRam`.
import { GuestMemory } from '../../src/memory/guest-memory.js';
import type { DeviceSection, LoadContext, MigratableMachine, RamBlock } from '../../src/migration/machine-state.js';
import { vmstateLoadSubsections, type VMStateDescription } from '../../src/migration/vmstate.js';

export interface TinyState {
  a: number;
  b: number;
  c: number;
  flag: number;
}

export class TinyMachine implements MigratableMachine {
  machineType = 'tiny';
  readonly ram = new Uint8Array(0x3000);
  readonly rom = new Uint8Array(0x1000);
  readonly memory: GuestMemory;
  readonly state: TinyState = { a: 0, b: 0, c: 0, flag: 0 };
  /** Include the device section (a machine "without the device" for unknown-section tests). */
  withDevice = true;
  required = false;
  /** Read through `ctx.peekRam` during the device's load: [gpa, len] → bytes seen. */
  peeks: [number, number][] = [];
  peeked: (Uint8Array | undefined)[] = [];
  /** RAM as it was while the device section was being parsed. */
  liveDuringLoad: Uint8Array | undefined;

  constructor() {
    this.memory = new GuestMemory([
      { base: 0, size: 0x3000, buffer: this.ram.buffer },
      { base: 0x10000, size: 0x1000, buffer: this.rom.buffer, readonly: true },
    ]);
  }

  ramBlocks(): readonly RamBlock[] {
    return [
      { idstr: 'tiny.ram', bytes: this.ram },
      { idstr: 'tiny.rom', bytes: this.rom },
    ];
  }

  deviceSections(): readonly DeviceSection[] {
    if (!this.withDevice) return [];
    const st = this.state;
    const extra: VMStateDescription = {
      name: 'tiny-dev/extra',
      versionId: 1,
      minimumVersionId: 1,
      needed: () => st.flag !== 0,
      save(f, rec) {
        if (rec) rec.field('flag', 'uint16', () => f.putBe16(st.flag));
        else f.putBe16(st.flag);
      },
      load(f) {
        const v = f.getBe16('tiny-dev flag');
        return () => {
          st.flag = v;
        };
      },
    };
    const vmsd: VMStateDescription = { name: 'tiny-dev', versionId: 2, minimumVersionId: 1, subsections: [extra] };
    return [
      {
        idstr: 'tiny-dev',
        instanceId: 0,
        vmsdName: 'tiny-dev',
        versionId: 2,
        minimumVersionId: 1,
        required: this.required,
        save: (f, rec) => {
          rec!.field('a', 'uint32', () => f.putBe32(st.a));
          rec!.field('b', 'uint8', () => f.putByte(st.b));
          rec!.field('c', 'uint16', () => f.putBe16(st.c));
          rec!.saveSubsections(vmsd);
        },
        load: (f, version, ctx: LoadContext) => {
          const a = f.getBe32('tiny-dev a');
          const at = f.offset;
          const b = f.getByte('tiny-dev b');
          if (b >= 200) throw f.error('tiny-dev b', `b ${b} is not below 200`, at);
          const c = version >= 2 ? f.getBe16('tiny-dev c') : st.c;
          const subs = vmstateLoadSubsections(f, vmsd);
          this.peeked = this.peeks.map(([gpa, len]) => {
            const v = ctx.peekRam(gpa, len);
            return v && v.slice();
          });
          this.liveDuringLoad = this.ram.slice();
          return () => {
            st.a = a;
            st.b = b;
            st.c = c;
            subs();
          };
        },
      },
    ];
  }

  /** Everything a load may change, for before/after comparisons. */
  snapshot(): string {
    // A digest is enough to tell "changed" from "unchanged", and much cheaper than the bytes.
    return `${crc(this.ram)}:${crc(this.rom)}:${JSON.stringify(this.state)}`;
  }
}

/**
 * The tiny machine in the state the layout test writes: page 1 all zero, the rest patterned.
 * `sparse`: only page 0 has data (a shorter stream, for tests that load it thousands of times).
 */
export function tinyWithState(sparse = false): TinyMachine {
  const m = new TinyMachine();
  for (let i = 0; i < 0x1000; i++) {
    m.ram[i] = (i * 7 + 1) & 0xff;
    if (sparse) continue;
    m.ram[0x2000 + i] = (i * 13 + 5) & 0xff;
    m.rom[i] = (i * 3 + 2) & 0xff;
  }
  Object.assign(m.state, { a: 0xdeadbeef, b: 0x42, c: 0x1234, flag: 0xbeef });
  return m;
}

/** FNV-1a over the bytes, word-wise. */
function crc(b: Uint8Array): string {
  const w = new Uint32Array(b.buffer, b.byteOffset, b.length >> 2);
  let h = 0x811c9dc5;
  for (let i = 0; i < w.length; i++) h = Math.imul(h ^ w[i]!, 0x01000193);
  return (h >>> 0).toString(16);
}
