// QEMU's JSON writer (src/migration/json-writer.ts), which QMP replies and the migration stream's
// JSON description share: every escaping rule of `quoted_str` (qobject/json-writer.c), through
// both users; the escapes read back by both readers (QMP input, the vmdesc parser); and, with
// QEMU installed, the same strings echoed by qemu-system-x86_64 itself.
import { afterAll, describe, expect, it } from 'vitest';
import { parseQmpJson, qmpJson } from '../../src/machine/qmp-server.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { jsonNumber, jsonString, toQemuJson } from '../../src/migration/json-writer.js';
import { formatVmdesc, parseVmdesc } from '../../src/migration/vmdesc.js';
import { qemuOrPolicy } from '../driver/impls.js';
import { Workdir } from '../support/qmp-process.js';

/** Strings QEMU's parser accepts, covering each branch of quoted_str. */
const VALID: readonly string[] = [
  'plain ASCII ~ !#$%&()*+,-./:;<=>?@[]^_`{|}',
  '"quote" and \\backslash\\ and /slash',
  '\b\f\n\r\t',
  Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)).join(''),
  '\x7f DEL, \x80 and \xff (C1 and Latin-1)',
  'é ߿ ࠀ € ￼ �',
  '😀 𐀀 𝄞 \u{10fffd}',
];

describe('jsonString (quoted_str)', () => {
  it('escapes as QEMU: the seven short escapes, other controls, DEL and non-ASCII as upper-case \\uXXXX', () => {
    expect(jsonString('a"b\\c/d')).toBe('"a\\"b\\\\c/d"');
    expect(jsonString('\b\f\n\r\t')).toBe('"\\b\\f\\n\\r\\t"');
    expect(jsonString('\x00\x01\x1f\x7f')).toBe('"\\u0000\\u0001\\u001F\\u007F"');
    expect(jsonString('é€')).toBe('"\\u00E9\\u20AC"');
  });

  it('beyond the BMP: a surrogate pair; what QEMU cannot hold (lone surrogates, noncharacters) becomes U+FFFD', () => {
    expect(jsonString('😀')).toBe('"\\uD83D\\uDE00"');
    expect(jsonString('\u{10fffd}')).toBe('"\\uDBFF\\uDFFD"');
    // mod_utf8_codepoint refuses these; quoted_str writes the replacement character instead.
    expect(jsonString('\ud800')).toBe('"\\uFFFD"');
    expect(jsonString('x\udc00y')).toBe('"x\\uFFFDy"');
    expect(jsonString('\ude00\ud83d')).toBe('"\\uFFFD\\uFFFD"');
    expect(jsonString('\ufdd0\ufdef\ufffe\uffff')).toBe('"\\uFFFD\\uFFFD\\uFFFD\\uFFFD"');
    expect(jsonString('\u{1fffe}\u{10ffff}')).toBe('"\\uFFFD\\uFFFD"');
    // Neighbours of the noncharacters are ordinary.
    expect(jsonString('\ufdcf\ufdf0\ufffd')).toBe('"\\uFDCF\\uFDF0\\uFFFD"');
  });

  it('QMP and the JSON description write strings the same way', () => {
    for (const s of VALID) {
      expect(qmpJson(s)).toBe(jsonString(s));
      expect(qmpJson({ [s]: s })).toBe(`{${jsonString(s)}: ${jsonString(s)}}`);
      const desc = formatVmdesc({ page_size: 4096, devices: [{ name: s, instance_id: 0, vmsd_name: s, version: 1, fields: [{ name: s, type: 'uint8', size: 1 }] }] });
      expect(desc).toBe(
        `{"page_size": 4096, "devices": [{"name": ${jsonString(s)}, "instance_id": 0, "vmsd_name": ${jsonString(s)}, "version": 1, "fields": [{"name": ${jsonString(s)}, "type": "uint8", "size": 1}]}]}`,
      );
    }
  });

  it('values: separators, empty containers, undefined members left out, numbers as %.17g', () => {
    expect(toQemuJson({ a: [1, 'x'], b: {}, c: [], d: true, e: null, f: undefined, g: 5n })).toBe('{"a": [1, "x"], "b": {}, "c": [], "d": true, "e": null, "g": 5}');
    expect(jsonNumber(0.1)).toBe('0.10000000000000001');
    expect(jsonNumber(Number.NaN)).toBe('null');
  });
});

describe('escapes read back (jsonEscape)', () => {
  const descNamed = (name: string) => formatVmdesc({ page_size: 4096, devices: [{ name, instance_id: 0, vmsd_name: 'x', version: 1, fields: [] }] });

  it('QMP input and the vmdesc parser read back every string the writer writes', () => {
    for (const s of VALID) {
      expect(parseQmpJson(jsonString(s))).toBe(s);
      expect(parseVmdesc(descNamed(s), 0).devices[0]!.name).toBe(s);
    }
    expect(parseQmpJson('"\\u00e9\\/\\ud83d\\ude00"')).toBe('é/😀');
  });

  it("QMP also takes \\' (QEMU's parser does); the vmdesc parser keeps to JSON; unknown escapes are refused by both", () => {
    expect(parseQmpJson("'it\\'s'")).toBe("it's");
    expect(() => parseQmpJson('"\\x"')).toThrow('invalid escape sequence in string');
    expect(() => parseQmpJson('"\\u12"')).toThrow('invalid escape sequence in string');
    expect(() => parseVmdesc(descNamed('a').replace('"a"', '"a\\\'"'), 0)).toThrow(MigrationError);
    expect(() => parseVmdesc(descNamed('a').replace('"a"', '"\\x"'), 7)).toThrow(/JSON description: bad escape at character/);
    expect(() => parseVmdesc(descNamed('a').replace('"a"', '"\\u0g00"'), 7)).toThrow(/bad \\u escape/);
  });
});

if (qemuOrPolicy('JSON escaping compared with QEMU 7.2')) {
  describe('jsonString against qemu-system-x86_64', () => {
    const w = new Workdir();
    afterAll(() => w.dispose());

    it('QEMU echoes each string as an id exactly as jsonString writes it', async () => {
      const p = await w.start('qemu', 'pc', []);
      try {
        for (const id of VALID) {
          const [line] = await p.cmd({ execute: 'query-status', id });
          // The reply is {"return": {...}, "id": <id>}: the id is the last member.
          const at = line!.lastIndexOf(', "id": ');
          expect(line!.slice(at + 8, -1), JSON.stringify(id)).toBe(jsonString(id));
        }
      } finally {
        await p.kill();
      }
    });
  });
}
