// Reading what test/v86/guest/init.sh prints on the serial console, and the checks a host test
// makes with it. The line formats are described at the top of init.sh.

export interface VtResult {
  name: string;
  ok: boolean;
  /** key=value words after the status. */
  fields: Record<string, string>;
  /** The other words after the status, in order (e.g. the kernel release of "boot"). */
  words: string[];
  line: string;
}

export interface VtInfo {
  topic: string;
  fields: Record<string, string>;
  words: string[];
  line: string;
}

export interface GuestReport {
  /**
   * By name. A name reported twice keeps its first failure, else its last line (all of them are
   * in `all`): a test init.sh gave up on as timed out may still print "ok" later.
   */
  results: Map<string, VtResult>;
  all: VtResult[];
  info: VtInfo[];
  /** VT-DATA payloads (hex strings) by name, in order. */
  data: Map<string, string[]>;
  /** VT-READY lines' words, in order (e.g. ["console", "port0"]). */
  ready: string[][];
  done: boolean;
}

function splitWords(rest: string[]): { fields: Record<string, string>; words: string[] } {
  const fields: Record<string, string> = {};
  const words: string[] = [];
  for (const w of rest) {
    const eq = w.indexOf('=');
    if (eq > 0) fields[w.slice(0, eq)] = w.slice(eq + 1);
    else words.push(w);
  }
  return { fields, words };
}

/**
 * One VT- line from a serial line. The kernel may print into the middle of a line, so the
 * marker is searched for anywhere in it rather than only at its start.
 */
export function vtLine(line: string): string | undefined {
  const at = line.indexOf('VT-');
  return at < 0 ? undefined : line.slice(at).trimEnd();
}

export function emptyReport(): GuestReport {
  return { results: new Map(), all: [], info: [], data: new Map(), ready: [], done: false };
}

/** Adds one serial line to a report (lines without a VT- marker are ignored). */
export function addLine(report: GuestReport, raw: string): void {
  const line = vtLine(raw);
  if (line === undefined) return;
  const [tag, ...rest] = line.split(/\s+/);
  switch (tag) {
    case 'VT-RESULT': {
      const [name, status, ...more] = rest;
      if (name === undefined || (status !== 'ok' && status !== 'fail')) return;
      const r: VtResult = { name, ok: status === 'ok', ...splitWords(more), line };
      if (report.results.get(name)?.ok !== false) report.results.set(name, r);
      report.all.push(r);
      return;
    }
    case 'VT-INFO': {
      const [topic, ...more] = rest;
      if (topic !== undefined) report.info.push({ topic, ...splitWords(more), line });
      return;
    }
    case 'VT-DATA': {
      const [name, hex] = rest;
      if (name === undefined || hex === undefined) return;
      report.data.set(name, [...(report.data.get(name) ?? []), hex]);
      return;
    }
    case 'VT-READY':
      report.ready.push(rest);
      return;
    case 'VT-DONE':
      report.done = true;
      return;
  }
}

export function parseGuestOutput(text: string): GuestReport {
  const report = emptyReport();
  for (const line of text.split(/\r?\n/)) addLine(report, line);
  return report;
}

export function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new Error(`not hex: ${hex.slice(0, 40)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/** The bytes of VT-DATA lines of one name, joined. */
export function dataBytes(report: GuestReport, name: string): Uint8Array {
  return hexToBytes((report.data.get(name) ?? []).join(''));
}

/**
 * Whether the bytes the guest read from /dev/hwrng came from what the device produced: the
 * guest's bytes must be runs of the device's stream, in the device's order, none used twice.
 * They need not be one run, since the kernel's hwrng thread and virtio-rng's own buffer take
 * chunks in between. Runs shorter than `minRun` bytes are refused (too likely by chance),
 * except the guest's last one.
 */
export function rngBytesFromDevice(
  guest: Uint8Array,
  produced: Uint8Array,
  minRun = 8,
): { ok: true; runs: number } | { ok: false; reason: string } {
  let g = 0;
  let p = 0;
  let runs = 0;
  while (g < guest.length) {
    const want = Math.min(minRun, guest.length - g);
    let found = -1;
    for (let i = p; i + want <= produced.length; i++) {
      let j = 0;
      while (j < want && produced[i + j] === guest[g + j]) j++;
      if (j === want) {
        found = i;
        break;
      }
    }
    if (found < 0) return { ok: false, reason: `guest bytes at ${g} are not in the device's output after offset ${p}` };
    let len = want;
    while (g + len < guest.length && found + len < produced.length && produced[found + len] === guest[g + len]) len++;
    g += len;
    p = found + len;
    runs++;
  }
  return { ok: true, runs };
}
