/**
 * QEMU's JSON writer (`qobject/json-writer.c` with `pretty` off), the one form in which QEMU 7.2
 * prints JSON both on a QMP monitor and in a migration stream's JSON description: `", "` between
 * members and elements, `": "` after a key, `{}` and `[]` when empty, no newline, strings escaped
 * as `quoted_str` does. QMP replies (`qmp-server.ts`) and the vmdesc (`vmdesc.ts`) are both
 * compared byte for byte with QEMU's, so they share this one implementation.
 *
 * Here rather than under `src/machine`: the migration code must not depend on the machine layer
 * (the machine layer already depends on it). The string escapes are also read back here
 * (`jsonEscape`), for the two readers of this JSON: QMP input and the vmdesc parser.
 */

/** Code points QEMU's `mod_utf8_codepoint` refuses (noncharacters and surrogates): written as U+FFFD. */
function isValidCodePoint(cp: number): boolean {
  if (cp >= 0xfdd0 && cp <= 0xfdef) return false;
  if ((cp & 0xfffe) === 0xfffe) return false;
  return !(cp >= 0xd800 && cp <= 0xdfff);
}

const hex4 = (v: number): string => v.toString(16).toUpperCase().padStart(4, '0');

/**
 * A string as QEMU's `quoted_str` writes it: `\" \\ \b \f \n \r \t`, other control characters,
 * DEL and everything beyond ASCII as `\uXXXX` (upper-case hex), code points beyond the BMP as a
 * surrogate pair, and a code point QEMU's UTF-8 decoder refuses (a lone surrogate, a Unicode
 * noncharacter) as `\uFFFD`, the replacement character QEMU substitutes.
 */
export function jsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    let cp = s.charCodeAt(i);
    // A JS string holds UTF-16: join a surrogate pair back into its code point, as QEMU's
    // writer sees it (it then splits it again, so a valid pair comes out as the same two units).
    if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < s.length) {
      const lo = s.charCodeAt(i + 1);
      if (lo >= 0xdc00 && lo <= 0xdfff) {
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        i++;
      }
    }
    switch (cp) {
      case 0x22: out += '\\"'; break;
      case 0x5c: out += '\\\\'; break;
      case 0x08: out += '\\b'; break;
      case 0x0c: out += '\\f'; break;
      case 0x0a: out += '\\n'; break;
      case 0x0d: out += '\\r'; break;
      case 0x09: out += '\\t'; break;
      default:
        if (!isValidCodePoint(cp)) cp = 0xfffd;
        if (cp > 0xffff) out += `\\u${hex4(0xd800 + ((cp - 0x10000) >> 10))}\\u${hex4(0xdc00 + ((cp - 0x10000) & 0x3ff))}`;
        else if (cp < 0x20 || cp >= 0x7f) out += `\\u${hex4(cp)}`;
        else out += String.fromCharCode(cp);
    }
  }
  return out + '"';
}

/** `"key": value`, with `value` already written. */
export function jsonMember(key: string, value: string): string {
  return `${jsonString(key)}: ${value}`;
}

/** An object of members already written (`jsonMember`), in the order given; duplicates allowed, as QEMU's writer. */
export function jsonObject(members: readonly string[]): string {
  return `{${members.join(', ')}}`;
}

/** An array of elements already written. */
export function jsonArray(elements: readonly string[]): string {
  return `[${elements.join(', ')}]`;
}

/**
 * A number as QEMU 7.2 prints a QNum: integers as such, doubles with `%.17g` (`qnum_to_string`),
 * e.g. 218.3712 as 218.37120000000002. JS numbers do not say which they were: integral values
 * print as integers, which `%.17g` also does for them (below 1e17). Non-finite values, which
 * QEMU's writer never receives, print as `null`.
 */
export function jsonNumber(v: number): string {
  if (!Number.isFinite(v)) return 'null';
  if (Number.isInteger(v) && Math.abs(v) < 1e17) return String(v);
  // %.17g: 17 significant digits, trailing zeros dropped, exponent form outside [1e-4, 1e17).
  const exp = Math.floor(Math.log10(Math.abs(v)));
  if (exp < -4 || exp >= 17) {
    const [mant, e] = v.toExponential(16).split('e') as [string, string];
    const n = Number(e);
    return `${mant.replace(/\.?0+$/, '')}e${n < 0 ? '-' : '+'}${String(Math.abs(n)).padStart(2, '0')}`;
  }
  return v.toPrecision(17).replace(/(\.\d*?)0+$/, '$1').replace(/\.$/, '');
}

/**
 * Any JSON-like value (objects in their key order, `undefined` members left out, bigints as
 * integers) as QEMU's writer prints the equivalent QObject.
 */
export function toQemuJson(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return jsonNumber(v);
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'string') return jsonString(v);
  if (Array.isArray(v)) return jsonArray(v.map(toQemuJson));
  const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
  return jsonObject(entries.map(([k, x]) => jsonMember(k, toQemuJson(x))));
}

/**
 * The JSON escape whose letter is at `s[i]` (just after the backslash): the text it stands for
 * and the index after it, or undefined for a letter JSON does not define (or a `\u` without four
 * hex digits). A `\uXXXX` gives one UTF-16 code unit, so a surrogate pair written as two escapes
 * comes back as the pair. (QEMU's parser also takes `\'`; QMP, which reads it, handles that.)
 */
export function jsonEscape(s: string, i: number): [text: string, next: number] | undefined {
  switch (s[i]) {
    case '"': return ['"', i + 1];
    case '\\': return ['\\', i + 1];
    case '/': return ['/', i + 1];
    case 'b': return ['\b', i + 1];
    case 'f': return ['\f', i + 1];
    case 'n': return ['\n', i + 1];
    case 'r': return ['\r', i + 1];
    case 't': return ['\t', i + 1];
    case 'u': {
      const h = s.slice(i + 1, i + 5);
      return /^[0-9a-fA-F]{4}$/.test(h) ? [String.fromCharCode(parseInt(h, 16)), i + 5] : undefined;
    }
    default:
      return undefined;
  }
}
