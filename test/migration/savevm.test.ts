// The savevm container on its own (no QEMU): the writer's bytes one by one for a tiny machine,
// round trips of pc and microvm RAM (hidden RAM under the ROM windows included), the guest
// address mapping, peekRam, atomicity, and every refusal with its offset.
import { describe, expect, it } from 'vitest';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { FOUR_GIB, qemuRamBlockOrder, ramBlockOffsetOfGpa, belowFourGiBSize } from '../../src/machine/memory-layout.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { PcMachine } from '../../src/machine/pc.js';
import { PIIX_PIRQCA } from '../../src/machine/pc-chipset.js';
import type { DeviceSection, MigratableMachine, RamBlock } from '../../src/migration/machine-state.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { GpaToRamBlock } from '../../src/migration/ram.js';
import { loadVm, parseSavevm, saveVm } from '../../src/migration/savevm.js';
import { Bytes } from './bytes.js';
import { expectedBlock, firstDifference, PC_HIDDEN_PLACES, pieces } from './patterns.js';
import { TinyMachine, tinyWithState } from './tiny-machine.js';

const TINY_JSON =
  '{"page_size": 4096, "devices": [' +
  '{"name": "tiny-dev", "instance_id": 0, "vmsd_name": "tiny-dev", "version": 2, "fields": [' +
  '{"name": "a", "type": "uint32", "size": 4}, {"name": "b", "type": "uint8", "size": 1}, {"name": "c", "type": "uint16", "size": 2}], ' +
  '"subsections": [{"vmsd_name": "tiny-dev/extra", "version": 1, "fields": [{"name": "flag", "type": "uint16", "size": 2}]}]}, ' +
  '{"name": "globalstate", "instance_id": 0, "vmsd_name": "globalstate", "version": 1, "fields": [' +
  '{"name": "size", "type": "uint32", "size": 4}, {"name": "runstate", "type": "buffer", "size": 100}]}]}';

/** The stream `tinyWithState()` must produce, written out by hand, with marks at its landmarks. */
function expectedTinyStream(): Bytes {
  const m = tinyWithState();
  const b = new Bytes();
  b.mark('magic').u32(0x5145564d).mark('version').u32(3);
  b.mark('config').u8(0x07).u32(4).mark('machine').str('tiny');
  // START ram: MEM_SIZE total 0x4000, the two blocks, EOS.
  b.mark('start').u8(0x01).u32(1).name('ram').u32(0).mark('ramVersion').u32(4);
  b.mark('memSize').u64(0x4000n | 0x04n).mark('listRam').name('tiny.ram').mark('listRamLen').u64(0x3000n).mark('listRom').name('tiny.rom').u64(0x1000n).u64(0x10n);
  b.u8(0x7e).u32(1);
  // PART ram: every page, EOS.
  b.mark('part').u8(0x02).u32(1);
  b.mark('page0').u64(0x08n).mark('page0name').name('tiny.ram').raw(m.ram.subarray(0, 0x1000));
  b.mark('page1').u64(0x1000n | 0x02n | 0x20n).u8(0);
  b.mark('page2').u64(0x2000n | 0x08n | 0x20n).raw(m.ram.subarray(0x2000));
  b.mark('romPage').u64(0x08n).name('tiny.rom').raw(m.rom);
  b.mark('partEos').u64(0x10n).mark('partFooter').u8(0x7e).u32(1);
  // END ram: nothing left, EOS.
  b.mark('end').u8(0x03).u32(1).u64(0x10n).u8(0x7e).u32(1);
  // FULL tiny-dev v2: a, b, c, then the subsection.
  b.mark('dev').u8(0x04).u32(2).name('tiny-dev').u32(0).mark('devVersion').u32(2);
  b.mark('devA').u32(0xdeadbeef).mark('devB').u8(0x42).u16(0x1234);
  b.mark('devSub').subsection('tiny-dev/extra').u16(0xbeef);
  b.mark('devFooter').u8(0x7e).mark('devFooterId').u32(2);
  // FULL globalstate: size 8, "running" in 100 bytes.
  b.mark('global').u8(0x04).u32(3).name('globalstate').u32(0).u32(1).u32(8).mark('runstate').str('running').raw(new Uint8Array(93));
  b.u8(0x7e).u32(3);
  b.mark('eof').u8(0x00);
  b.mark('vmdesc').u8(0x06).u32(TINY_JSON.length).mark('json').str(TINY_JSON);
  return b;
}

function expectMigrationError(fn: () => unknown, offset: number, message: string | RegExp): MigrationError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a MigrationError').toBeInstanceOf(MigrationError);
  const e = err as MigrationError;
  if (typeof message === 'string') expect(e.message).toContain(message);
  else expect(e.message).toMatch(message);
  expect(e.offset, e.message).toBe(offset);
  return e;
}

/** Load `bytes` into a fresh tiny machine expecting a refusal; the machine must be untouched. */
function refuse(bytes: Uint8Array, offset: number, message: string | RegExp, setup?: (m: TinyMachine) => void): MigrationError {
  const m = new TinyMachine();
  m.ram.fill(0x5a);
  m.state.a = 7;
  setup?.(m);
  const before = m.snapshot();
  const e = expectMigrationError(() => loadVm(m, bytes), offset, message);
  expect(m.snapshot()).toBe(before);
  return e;
}

function patch(bytes: Uint8Array, at: number, ...values: number[]): Uint8Array {
  const b = bytes.slice();
  b.set(values, at);
  return b;
}

function be32(v: number): number[] {
  return [v >>> 24, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
}

describe('saveVm layout', () => {
  it('writes the tiny machine byte for byte as QEMU 7.2 would', () => {
    const got = saveVm(tinyWithState());
    const want = expectedTinyStream().bytes();
    expect(got.length).toBe(want.length);
    expect(firstDifference(got, want)).toBe(-1);
  });

  it('omits the JSON description on request and carries the caller\'s run state', () => {
    const got = saveVm(tinyWithState(), { vmdesc: false, runState: 'paused' });
    const b = expectedTinyStream();
    expect(got.length).toBe(b.marks['vmdesc']);
    expect(got[got.length - 1]).toBe(0);
    expect([...got.subarray(b.marks['runstate']! - 4, b.marks['runstate']! + 7)]).toEqual([0, 0, 0, 7, ...[...'paused'].map((c) => c.charCodeAt(0)), 0]);
    expect(() => saveVm(tinyWithState(), { runState: 'jogging' })).toThrow(RangeError);
  });

  it('parseSavevm finds every section, the blocks, the run state and the description', () => {
    const bytes = saveVm(tinyWithState());
    const b = expectedTinyStream();
    const p = parseSavevm(bytes);
    expect(p.configuration).toEqual({ machineType: 'tiny', offset: b.marks['config'] });
    expect(p.sections.map((s) => [s.kind, s.idstr, s.sectionId, s.offset])).toEqual([
      ['start', 'ram', 1, b.marks['start']],
      ['part', 'ram', 1, b.marks['part']],
      ['end', 'ram', 1, b.marks['end']],
      ['full', 'tiny-dev', 2, b.marks['dev']],
      ['full', 'globalstate', 3, b.marks['global']],
    ]);
    const dev = p.sections[3]!;
    expect([dev.bodyOffset, dev.bodyLength, dev.footerOffset]).toEqual([b.marks['devA'], b.marks['devFooter']! - b.marks['devA']!, b.marks['devFooter']]);
    expect(dev.vmdesc?.name).toBe('tiny-dev');
    expect(p.ram).toEqual({ totalBytes: 0x4000, blocks: [
      { idstr: 'tiny.ram', length: 0x3000, zeroPages: 1, dataPages: 2 },
      { idstr: 'tiny.rom', length: 0x1000, zeroPages: 0, dataPages: 1 },
    ] });
    expect(p.runState).toBe('running');
    expect(p.eofOffset).toBe(b.marks['eof']);
    expect(p.vmdesc).toMatchObject({ offset: b.marks['vmdesc'], length: TINY_JSON.length, text: TINY_JSON });
    expect(p.warnings).toEqual([]);
  });
});

describe('loadVm', () => {
  it('round-trips the tiny machine, and returns what it did', () => {
    const src = tinyWithState();
    const dst = new TinyMachine();
    const r = loadVm(dst, saveVm(src));
    expect(dst.snapshot()).toBe(src.snapshot());
    expect(r).toEqual({ warnings: [], runState: 'running', machineType: 'tiny', loaded: ['tiny-dev'], skipped: [], discardedRamBlocks: [], ramPages: 4 });
  });

  it('keeps the live value of a field a version-1 stream lacks, and a subsection the stream lacks', () => {
    const b = expectedTinyStream();
    // Version 1 of tiny-dev has no `c`: rebuild the section body without it and without the subsection.
    const src = tinyWithState();
    src.state.flag = 0;
    const s = saveVm(src, { vmdesc: false });
    const bodyOffset = b.marks['devA']!;
    const body = [...s.subarray(bodyOffset, bodyOffset + 5)];
    // Without the subsection the footer follows c directly.
    const v1 = Uint8Array.from([...s.subarray(0, bodyOffset - 4), ...be32(1), ...body, ...s.subarray(bodyOffset + 7)]);
    const dst = new TinyMachine();
    Object.assign(dst.state, { c: 99, flag: 77 });
    loadVm(dst, v1);
    expect(dst.state).toEqual({ a: 0xdeadbeef, b: 0x42, c: 99, flag: 77 });
    expect(b.marks['devVersion']).toBeGreaterThan(0);
  });

  it('accepts a received machine type that is a prefix of the local one (QEMU compares the received length)', () => {
    const dst = new TinyMachine();
    dst.machineType = 'tiny-1.0';
    expect(loadVm(dst, saveVm(tinyWithState())).machineType).toBe('tiny');
  });

  it('peekRam sees the stream\'s pages (and live bytes elsewhere) while the device parses, before anything is written', () => {
    const src = tinyWithState();
    const dst = new TinyMachine();
    dst.ram.fill(0x77);
    dst.rom.fill(0x66);
    dst.peeks = [
      [0x10, 4], // page 0, from the stream
      [0x1ffe, 4], // spans page 1 (ZERO in the stream) into page 2 (data)
      [0x0ffe, 0x1004], // pages 0, 1 and 2
      [0x10000, 2], // the ROM block, through its own region
      [0x3000, 1], // no RAM there
    ];
    // Live RAM is untouched while the device parses.
    loadVm(dst, saveVm(src));
    expect(dst.liveDuringLoad!.every((x) => x === 0x77)).toBe(true);
    expect(dst.peeked[0]).toEqual(src.ram.subarray(0x10, 0x14));
    expect(dst.peeked[1]).toEqual(Uint8Array.from([0, 0, src.ram[0x2000]!, src.ram[0x2001]!]));
    expect(dst.peeked[2]).toEqual(src.ram.subarray(0x0ffe, 0x2002));
    expect(dst.peeked[3]).toEqual(src.rom.subarray(0, 2));
    expect(dst.peeked[4]).toBeUndefined();

    // A stream without page 2: peekRam shows the live bytes there.
    const s = saveVm(src);
    const b = expectedTinyStream();
    const noPage2 = Uint8Array.from([...s.subarray(0, b.marks['page2']), ...s.subarray(b.marks['romPage']!)]);
    const dst2 = new TinyMachine();
    dst2.ram.fill(0x77);
    dst2.peeks = [[0x1ffe, 4]];
    loadVm(dst2, noPage2);
    expect(dst2.peeked[0]).toEqual(Uint8Array.from([0, 0, 0x77, 0x77]));
    expect(dst2.ram.subarray(0x2000).every((x) => x === 0x77)).toBe(true);
  });

  it('steps over a section it does not model using the JSON description, subsections included, and says so', () => {
    const dst = new TinyMachine();
    dst.withDevice = false;
    const r = loadVm(dst, saveVm(tinyWithState()));
    expect(r.skipped).toEqual(['tiny-dev']);
    expect(r.warnings).toEqual([expect.stringContaining("section 'tiny-dev' instance 0 (29 bytes at offset")]);
    expect(dst.ram).toEqual(tinyWithState().ram);
  });

  it('discards the /rom@ blocks of a QEMU stream with a warning, and refuses other unknown blocks', () => {
    const s = saveVm(tinyWithState());
    const b = expectedTinyStream();
    // Rename tiny.rom (same length) to a fw_cfg blob name in the list and in the page header.
    const renamed = (to: string) => {
      const out = s.slice();
      for (const at of [b.marks['listRom']!, b.marks['romPage']! + 8]) out.set([...to].map((c) => c.charCodeAt(0)), at + 1);
      return out;
    };
    const dst = new TinyMachine();
    const r = loadVm(dst, renamed('/rom@xyz'));
    expect(r.discardedRamBlocks).toEqual([{ idstr: '/rom@xyz', length: 0x1000, pages: 1 }]);
    expect(r.warnings[0]).toContain('RAM block "/rom@xyz" (0x1000 bytes) is not part of this machine');
    expect(dst.rom.every((x) => x === 0)).toBe(true);
    refuse(renamed('tiny.xom'), b.marks['listRom']!, 'Unknown ramblock "tiny.xom", cannot accept migration');
    // A caller may choose what to drop.
    const dst2 = new TinyMachine();
    expect(loadVm(dst2, renamed('tiny.xom'), { ignoreBlock: (id) => id === 'tiny.xom' }).discardedRamBlocks.length).toBe(1);
  });
});

describe('loadVm refusals: QEMU\'s message, the offset, nothing changed', () => {
  const s = saveVm(tinyWithState());
  const b = expectedTinyStream();
  const at = (k: string) => b.marks[k]!;

  it('header and configuration', () => {
    refuse(patch(s, 0, 0x51, 0x45, 0x56, 0x4e), 0, 'Not a migration stream');
    refuse(s.subarray(0, 2), 0, 'Not a migration stream');
    refuse(new Uint8Array(0), 0, 'Not a migration stream');
    refuse(patch(s, at('version'), 0, 0, 0, 2), at('version'), "SaveVM v2 format is obsolete and don't work anymore");
    refuse(patch(s, at('version'), 0, 0, 0, 4), at('version'), 'Unsupported migration stream version');
    refuse(patch(s, at('config'), 0x01), at('config'), 'Configuration section missing');
    refuse(s, at('machine'), "Machine type received is 'tiny' and local is 'tinz'", (m) => (m.machineType = 'tinz'));
    refuse(patch(s, at('config') + 1, ...be32(0x7fff_ffff)), at('machine'), 'machine type length 2147483647 is beyond the end of the stream');
  });

  it('configuration subsections: page bits, capabilities, uuid', () => {
    const withSub = (sub: number[]) => Uint8Array.from([...s.subarray(0, at('start')), ...sub, ...s.subarray(at('start'))]);
    const name = (n: string) => [n.length, ...[...n].map((c) => c.charCodeAt(0))];
    const bits = (v: number) => [0x05, ...name('configuration/target-page-bits'), ...be32(1), ...be32(v)];
    expect(loadVm(new TinyMachine(), withSub(bits(12))).warnings).toEqual([]);
    refuse(withSub(bits(13)), at('start') + 2 + 30 + 4, 'Received TARGET_PAGE_BITS is 13 but local is 12');
    const caps = (...cs: string[]) => [0x05, ...name('configuration/capabilities'), ...be32(1), ...be32(cs.length), ...cs.flatMap(name)];
    expect(loadVm(new TinyMachine(), withSub(caps('xbzrle'))).loaded).toEqual(['tiny-dev']);
    refuse(withSub(caps('x-ignore-shared')), at('start') + 2 + 26 + 4, 'Capability x-ignore-shared is off, but received capability is on');
    refuse(withSub(caps('x-nonsense')), at('start') + 2 + 26 + 4 + 4, 'Received unknown capability x-nonsense');
    refuse(withSub([0x05, ...name('configuration/capabilities'), ...be32(1), ...be32(0xffff_ffff)]), at('start') + 2 + 26 + 4, '4294967295 capabilities cannot fit');
    const uuid = [0x05, ...name('configuration/uuid'), ...be32(1), ...new Array<number>(16).fill(0xab)];
    expect(loadVm(new TinyMachine(), withSub(uuid)).warnings[0]).toContain('configuration/uuid');
    refuse(withSub([0x05, ...name('configuration/bogus'), ...be32(1)]), at('start'), "VM subsection 'configuration/bogus' in 'configuration' does not exist");
  });

  it('RAM block list', () => {
    // tiny.ram listed as 0x4000 (total raised to match): a length mismatch.
    const longer = patch(patch(s, at('memSize'), 0, 0, 0, 0, 0, 0, 0x50, 0x04), at('listRamLen'), 0, 0, 0, 0, 0, 0, 0x40, 0);
    refuse(longer, at('listRam'), 'Size mismatch: tiny.ram: 0x4000 != 0x3000 (RAM block length mismatch)');
    // A total the list overruns.
    refuse(patch(s, at('listRom') + 9, 0, 0, 0, 0, 0, 0, 0x20, 0), at('listRom') + 9, 'block list overruns the total RAM size 0x4000 (0x1000 left, block is 0x2000)');
    refuse(patch(s, at('ramVersion'), ...be32(5)), at('ramVersion'), "savevm: unsupported version 5 for 'ram' v4");
    refuse(patch(s, at('ramVersion'), ...be32(3)), at('ramVersion'), 'ram: incoming version_id 3 is too old for local minimum version_id 4');
  });

  it('RAM pages', () => {
    refuse(patch(s, at('page0') + 7, 0x28), at('page0'), 'Ack, bad migration stream!');
    refuse(patch(s, at('page0') + 7, 0x0a), at('page0'), 'Unknown combination of migration flags: 0xa');
    refuse(patch(s, at('page0') + 7, 0x00), at('page0'), 'Unknown combination of migration flags: 0x0');
    refuse(patch(s, at('page0') + 7, 0x01), at('page0'), 'Unknown combination of migration flags: 0x1');
    refuse(patch(s, at('page0') + 6, 0x01, 0x08), at('page0'), 'Received an unexpected compressed page');
    refuse(patch(s, at('page0') + 7, 0x40), at('page0'), 'XBZRLE pages are not supported');
    refuse(patch(s, at('page0') + 7, 0x80), at('page0'), 'RDMA hook pages');
    refuse(patch(s, at('page0name') + 7, 0x78), at('page0name'), "Can't find block tiny.rxm");
    // Page 2 moved to offset 0x3000, one page past the end of its block; and far beyond 2^53.
    refuse(patch(s, at('page2') + 6, 0x30), at('page2'), 'Illegal RAM offset 3000');
    refuse(patch(s, at('page2'), 0xff, 0xff), at('page2'), 'Illegal RAM offset ffff000000002000');
  });

  it('sections and footers', () => {
    refuse(patch(s, at('devFooter'), 0x7f), at('devFooter'), 'Missing section footer for tiny-dev');
    refuse(patch(s, at('devFooterId'), ...be32(9)), at('devFooter'), 'Mismatched section id in footer for tiny-dev - read 0x9 expected 0x2');
    refuse(patch(s, at('partFooter'), 0x00), at('partFooter'), 'Missing section footer for ram');
    refuse(patch(s, at('global'), 0x09), at('global'), 'Unknown savevm section type 9');
    refuse(patch(s, at('global'), 0x08), at('global'), 'savevm commands (QEMU_VM_COMMAND, 0x08) are not supported');
    refuse(patch(patch(s, at('part') + 1, ...be32(7)), at('partFooter') + 1, ...be32(7)), at('part'), 'Unknown savevm section 7');
    refuse(patch(s, at('end') + 1, ...be32(2)), at('end'), 'Unknown savevm section 2');
    const partAfterFull = Uint8Array.from([...s.subarray(0, at('global')), 0x02, ...be32(2), ...s.subarray(at('global'))]);
    refuse(partAfterFull, at('global'), "section 2 ('tiny-dev') is not an iterable section and takes no PART or END");
    refuse(s.subarray(0, at('eof')), at('eof'), 'stream ends before QEMU_VM_EOF');
  });

  it('device versions and the device\'s own checks', () => {
    refuse(patch(s, at('devVersion'), ...be32(3)), at('devVersion'), "savevm: unsupported version 3 for 'tiny-dev' v2");
    refuse(patch(s, at('devVersion'), ...be32(0)), at('devVersion'), 'tiny-dev: incoming version_id 0 is too old for local minimum version_id 1');
    refuse(patch(s, at('devB'), 200), at('devB'), 'b 200 is not below 200');
    refuse(patch(s, at('devSub') + 14, 0x79), at('devSub'), "VM subsection 'tiny-dev/extya' in 'tiny-dev' does not exist");
  });

  it('globalstate', () => {
    refuse(patch(s, at('runstate') + 6, 0x39), at('runstate'), 'invalid parameter value: runnin9');
    // 100 bytes without a NUL: QEMU reads the first 99.
    const full = patch(s, at('runstate'), ...new Array<number>(100).fill(0x61));
    refuse(full, at('runstate'), `invalid parameter value: ${'a'.repeat(99)}`);
  });

  it('unknown sections without a usable description; required sections the stream lacks', () => {
    const noDesc = saveVm(tinyWithState(), { vmdesc: false });
    const e = refuse(noDesc, at('dev'), "Unknown savevm section or instance 'tiny-dev' 0", (m) => (m.withDevice = false));
    expect(e.message).toContain('the stream has no JSON description to step over it with');
    // A description that does not parse.
    const badJson = patch(s, at('json') + 10, 0x7b);
    const e2 = refuse(badJson, at('dev'), 'unusable', (m) => (m.withDevice = false));
    expect(e2.message).toContain('JSON description');
    // A description whose subsection disagrees with the bytes.
    const wrongSub = patch(s, at('devSub') + 14, 0x79);
    refuse(wrongSub, at('devSub'), "subsection 'tiny-dev/extya' where the JSON description has 'tiny-dev/extra'", (m) => (m.withDevice = false));
    // One that does not describe the section at all.
    const src = tinyWithState();
    const other = saveVm(src);
    const renamed = patch(other, at('json') + TINY_JSON.indexOf('tiny-dev') + 5, 0x78);
    refuse(renamed, at('dev'), 'the JSON description does not describe it', (m) => (m.withDevice = false));
    // The machine requires tiny-dev; a stream without it is refused at EOF.
    const without = new TinyMachine();
    without.withDevice = false;
    refuse(saveVm(without), parseSavevm(saveVm(without)).eofOffset, "the stream has no section 'tiny-dev' instance 0, which this machine requires", (m) => (m.required = true));
  });

  it('what follows EOF only warns, as in QEMU', () => {
    const junk = Uint8Array.from([...s.subarray(0, at('vmdesc')), 0x09, 1, 2, 3]);
    expect(loadVm(new TinyMachine(), junk).warnings).toEqual(['Expected vmdescription section, but got 9 (offset ' + at('vmdesc') + ')']);
    expect(loadVm(new TinyMachine(), s.subarray(0, at('vmdesc'))).warnings[0]).toContain('no JSON description');
    expect(loadVm(new TinyMachine(), s.subarray(0, s.length - 1)).warnings[0]).toContain('does not run exactly to the end');
  });
});

describe('robustness', () => {
  // The sparse tiny machine: one data page, so the stream is short enough to load ~50 000 times.
  const s = saveVm(tinyWithState(true));
  const eofEnd = parseSavevm(s).eofOffset + 1;

  it('a stream cut at any byte is refused before EOF (offset inside the stream), loads after it, and never changes the machine on refusal', () => {
    for (let n = 0; n < s.length; n++) {
      const m = new TinyMachine();
      const before = m.snapshot();
      let err: unknown;
      try {
        loadVm(m, s.subarray(0, n));
      } catch (e) {
        err = e;
      }
      if (n < eofEnd) {
        expect(err, `cut at ${n}`).toBeInstanceOf(MigrationError);
        expect((err as MigrationError).offset).toBeLessThanOrEqual(n);
        expect((err as MigrationError).field).not.toBe('internal');
        expect(m.snapshot()).toBe(before);
      } else {
        expect(err, `cut at ${n}`).toBeUndefined();
      }
    }
  });

  it('single-bit flips: either a clean load or a MigrationError with the machine untouched (every bit outside page data, a sample inside)', () => {
    const b = expectedTinyStream().marks;
    const pageData: [number, number][] = [[b['page0name']! + 9, b['page0name']! + 9 + 0x1000]];
    expect(s.subarray(pageData[0]![0] - 9, pageData[0]![0])).toEqual(Uint8Array.from([8, ...[...'tiny.ram'].map((c) => c.charCodeAt(0))]));
    const inData = (i: number) => pageData.some(([a, z]) => i >= a && i < z);
    let refused = 0;
    let loaded = 0;
    for (let i = 0; i < s.length; i++) {
      if (inData(i) && i % 61 !== 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        const bytes = s.slice();
        bytes[i]! ^= 1 << bit;
        const m = new TinyMachine();
        const before = m.snapshot();
        try {
          loadVm(m, bytes);
          loaded++;
        } catch (e) {
          expect(e, `flip ${i}.${bit}`).toBeInstanceOf(MigrationError);
          expect((e as MigrationError).field, (e as MigrationError).message).not.toBe('internal');
          expect(m.snapshot(), `flip ${i}.${bit}`).toBe(before);
          refused++;
        }
      }
    }
    expect(refused).toBeGreaterThan(1000);
    expect(loaded).toBeGreaterThan(100);
  });

  it('parseSavevm on the same cuts and flips throws only MigrationError', () => {
    for (let n = 0; n < s.length; n += 7) {
      try {
        parseSavevm(s.subarray(0, n));
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
      }
    }
    for (let i = 0; i < eofEnd; i++) {
      const bytes = s.slice();
      bytes[i]! ^= 0x10;
      try {
        parseSavevm(bytes);
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
      }
    }
  });
});

describe('machines: RAM blocks and guest addresses', () => {
  it('pc and microvm list QEMU\'s blocks in QEMU\'s order, and the regions are views into them', () => {
    const pc = new PcMachine({ ramSize: 2 << 20, bios: haltFirmware() });
    expect(pc.machineType).toBe('pc-i440fx-7.2');
    expect(pc.ramBlocks().map((b) => [b.idstr, b.bytes.length])).toEqual([['pc.ram', 2 << 20], ['pc.rom', 0x20000], ['pc.bios', 0x10000]]);
    // With SeaBIOS's 256 KiB the firmware block is longer than pc.rom and comes first, as in QEMU.
    expect(new PcMachine({ ramSize: 2 << 20 }).ramBlocks().map((b) => b.idstr)).toEqual(['pc.ram', 'pc.bios', 'pc.rom']);
    const mvm = new MicrovmMachine({ ramSize: 2 << 20, bios: haltFirmware() });
    expect(mvm.machineType).toBe('microvm');
    expect(mvm.ramBlocks().map((b) => [b.idstr, b.bytes.length])).toEqual([['microvm.ram', 2 << 20], ['pc.bios', 0x10000]]);
    for (const m of [pc, mvm]) {
      for (const r of m.memory.regions) {
        expect(m.ramBlocks().some((b) => b.bytes.buffer === r.bytes.buffer), r.name).toBe(true);
      }
    }
    // Equal lengths keep allocation order; a longer block goes first.
    const blk = (idstr: string, n: number): RamBlock => ({ idstr, bytes: new Uint8Array(n) });
    expect(qemuRamBlockOrder([blk('a', 8), blk('b', 16), blk('c', 8), blk('d', 32)]).map((b) => b.idstr)).toEqual(['d', 'b', 'a', 'c']);
  });

  it('the main RAM block maps GPA below the split 1:1 and the rest from 4 GiB on', () => {
    const size = 0x1_4000_0000; // 5 GiB: 3 GiB below 4 GiB on pc (RAM reaches 3.5 GiB), 2 GiB above
    const below = belowFourGiBSize('pc', size);
    expect(below).toBe(0xc000_0000);
    expect(belowFourGiBSize('pc', 0xd000_0000)).toBe(0xd000_0000);
    expect(belowFourGiBSize('pc', 0xe000_0000)).toBe(0xc000_0000);
    expect(belowFourGiBSize('pc', 0xdfff_e000)).toBe(0xdfff_e000);
    expect(belowFourGiBSize('microvm', size)).toBe(0xc000_0000);
    expect(ramBlockOffsetOfGpa(0, below, size)).toBe(0);
    expect(ramBlockOffsetOfGpa(0xc0000, below, size)).toBe(0xc0000); // hidden RAM under pc.rom
    expect(ramBlockOffsetOfGpa(below - 1, below, size)).toBe(below - 1);
    expect(ramBlockOffsetOfGpa(below, below, size)).toBe(-1); // the PCI hole
    expect(ramBlockOffsetOfGpa(FOUR_GIB - 1, below, size)).toBe(-1);
    expect(ramBlockOffsetOfGpa(FOUR_GIB, below, size)).toBe(below);
    expect(ramBlockOffsetOfGpa(FOUR_GIB + 0x1234, below, size)).toBe(below + 0x1234);
    expect(ramBlockOffsetOfGpa(FOUR_GIB + (size - below) - 1, below, size)).toBe(size - 1);
    expect(ramBlockOffsetOfGpa(FOUR_GIB + (size - below), below, size)).toBe(-1);
    expect(ramBlockOffsetOfGpa(-1, below, size)).toBe(-1);
    expect(ramBlockOffsetOfGpa(2 ** 53, below, size)).toBe(-1);
  });

  it('loads through a region above 4 GiB: peekRam and pages follow the region → block mapping', () => {
    // A machine with 8 KiB of "RAM": 4 KiB below (GPA 0) and 4 KiB above 4 GiB, one block.
    const buf = new ArrayBuffer(0x2000);
    const memory = new GuestMemory([
      { base: 0, size: 0x1000, buffer: buf, bufferOffset: 0 },
      { base: FOUR_GIB, size: 0x1000, buffer: buf, bufferOffset: 0x1000 },
    ]);
    const block: RamBlock = { idstr: 'big.ram', bytes: new Uint8Array(buf) };
    const t = new GpaToRamBlock(memory, [block]);
    expect(t.translate(0x10, 4)).toEqual({ index: 0, offset: 0x10 });
    expect(t.translate(FOUR_GIB + 0x10, 4)).toEqual({ index: 0, offset: 0x1010 });
    expect(t.translate(0xffe, 4)).toBeUndefined(); // crosses out of the region
    let seen: Uint8Array | undefined;
    const dev: DeviceSection = {
      idstr: 'probe', instanceId: 0, vmsdName: 'probe', versionId: 1, minimumVersionId: 1, required: true,
      save: () => undefined,
      load: (_f, _v, ctx) => {
        seen = ctx.peekRam(FOUR_GIB + 0x20, 4)?.slice();
        return () => undefined;
      },
    };
    const mk = (): MigratableMachine & { block: RamBlock } => {
      const b = new ArrayBuffer(0x2000);
      const mem = new GuestMemory([{ base: 0, size: 0x1000, buffer: b }, { base: FOUR_GIB, size: 0x1000, buffer: b, bufferOffset: 0x1000 }]);
      const blk = { idstr: 'big.ram', bytes: new Uint8Array(b) };
      return { machineType: 'big', memory: mem, block: blk, ramBlocks: () => [blk], deviceSections: () => [dev] };
    };
    const src = mk();
    src.memory.write(FOUR_GIB + 0x20, Uint8Array.from([1, 2, 3, 4]));
    expect([...src.block.bytes.subarray(0x1020, 0x1024)]).toEqual([1, 2, 3, 4]);
    const dst = mk();
    loadVm(dst, saveVm(src));
    expect(seen).toEqual(Uint8Array.from([1, 2, 3, 4]));
    expect(dst.memory.read32(FOUR_GIB + 0x20)).toBe(0x04030201);
  });

  it('pc: RAM (hidden RAM under pc.rom and the BIOS window included), ROM blocks and chipset state round-trip', () => {
    const size = 4 << 20;
    const src = new PcMachine({ ramSize: size, bios: haltFirmware() });
    const ram = pieces([[0, 0x1000], [0x9fff0, 0x20], [0x100000, 0x3003], [size - 0x1000, 0x1000]], 11);
    for (const p of ram) src.writeBytes(p.gpa, p.bytes);
    const hidden = pieces(PC_HIDDEN_PLACES, 13);
    const pcRam = src.ramBlocks().find((b) => b.idstr === 'pc.ram')!.bytes;
    for (const p of hidden) pcRam.set(p.bytes, p.gpa);
    // The windows show the ROMs, not the hidden RAM.
    expect(src.readBytes(0xc0000, 16)).toEqual(new Uint8Array(16));
    src.ramBlocks().find((b) => b.idstr === 'pc.rom')!.bytes.set([9, 8, 7], 0x100);
    src.piix3.config.set([0x0b, 0x80, 0x05, 0x0a], PIIX_PIRQCA);
    src.piix3.rcr = 2;
    src.hostBridge.config[0x59] = 0x30;

    const dst = new PcMachine({ ramSize: size, bios: haltFirmware() });
    const r = loadVm(dst, saveVm(src));
    expect(r.loaded).toEqual(['PCIBUS', '0000:00:00.0/I440FX', '0000:00:01.0/PIIX3']);
    for (const b of src.ramBlocks()) {
      expect(firstDifference(dst.ramBlocks().find((x) => x.idstr === b.idstr)!.bytes, b.bytes), b.idstr).toBe(-1);
    }
    expect(firstDifference(dst.ramBlocks()[0]!.bytes, expectedBlock(size, [...ram, ...hidden]))).toBe(-1);
    expect(dst.readBytes(0xc0100, 3)).toEqual(Uint8Array.from([9, 8, 7]));
    expect(dst.piix3.pirqRoute(0)).toBe(11);
    expect(dst.piix3.pirqRoute(2)).toBe(5);
    expect(dst.piix3.rcr).toBe(2);
    expect(dst.hostBridge.config[0x59]).toBe(0x30);
    // The PIIX3/rcr subsection is written only while rcr != 0.
    expect(parseSavevm(saveVm(src)).vmdesc!.description!.devices.find((d) => d.name === '0000:00:01.0/PIIX3')!.subsections!.map((x) => x.vmsd_name)).toEqual(['PIIX3/rcr']);
    dst.piix3.rcr = 0;
    expect(parseSavevm(saveVm(dst)).vmdesc!.description!.devices.find((d) => d.name === '0000:00:01.0/PIIX3')!.subsections).toBeUndefined();
  });

  it('microvm: RAM (incl. the RAM under the BIOS window) and the firmware block round-trip', () => {
    const size = 2 << 20;
    const src = new MicrovmMachine({ ramSize: size, bios: haltFirmware() });
    const ram = pieces([[0x1000, 0x2000], [0x1ff000, 0x1000]], 17);
    for (const p of ram) src.writeBytes(p.gpa, p.bytes);
    src.ramBlocks()[0]!.bytes.set([1, 2, 3], 0xf0000);
    const dst = new MicrovmMachine({ ramSize: 2 * size });
    expect(() => loadVm(dst, saveVm(src))).toThrow('Size mismatch: microvm.ram: 0x200000 != 0x400000');
    const dst2 = new MicrovmMachine({ ramSize: size, bios: new Uint8Array(0x10000) });
    loadVm(dst2, saveVm(src));
    for (const b of src.ramBlocks()) expect(firstDifference(dst2.ramBlocks().find((x) => x.idstr === b.idstr)!.bytes, b.bytes), b.idstr).toBe(-1);
  });

  it('atomicity on pc: a stream broken in its last section leaves every RAM block and the chipset exactly as they were', () => {
    const size = 2 << 20;
    const src = new PcMachine({ ramSize: size, bios: haltFirmware() });
    for (const p of pieces([[0, 0x10000], [0x100000, 0x1000]], 23)) src.writeBytes(p.gpa, p.bytes);
    src.piix3.config.set([0x0b, 0x0b, 0x0b, 0x0b], PIIX_PIRQCA);
    const good = saveVm(src);
    const p = parseSavevm(good);
    const g = p.sections.find((x) => x.idstr === 'globalstate')!;
    const broken = patch(good, g.bodyOffset + 4, 0x78);

    const dst = new PcMachine({ ramSize: size, bios: haltFirmware() });
    for (const q of pieces([[0x2000, 0x5000], [0xc0000 - 0x10, 0x20]], 29)) dst.writeBytes(q.gpa, q.bytes);
    dst.ramBlocks()[0]!.bytes.set([0xee], 0xc8000);
    const before = saveVm(dst);
    const blocks = dst.ramBlocks().map((b) => b.bytes.slice());
    expectMigrationError(() => loadVm(dst, broken), g.bodyOffset + 4, 'invalid parameter value: xunning');
    dst.ramBlocks().forEach((b, i) => expect(firstDifference(b.bytes, blocks[i]!), b.idstr).toBe(-1));
    expect(firstDifference(saveVm(dst), before)).toBe(-1);
    expect(dst.piix3.pirqRoute(0)).toBeUndefined();
    // The unbroken stream then loads.
    loadVm(dst, good);
    expect(dst.piix3.pirqRoute(0)).toBe(11);
  });
});
