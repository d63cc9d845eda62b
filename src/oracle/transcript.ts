/**
 * Transcripts of the differential oracle: the ordered list of everything a guest-side scenario
 * observed on one machine (register and config reads with their values, the writes that caused
 * them, IRQ line changes, used-ring entries, notes), split into named sections so that an
 * expected difference can be confined to the sections where it shows.
 *
 * An entry is a line of text: two transcripts are equal when their lines are. Browser-safe.
 */

export interface TranscriptEntry {
  /** Section the entry belongs to ('setup', 'attack', 'recovery', ...). */
  section: string;
  /** The observation, e.g. `cfg 00:04.0+0x04 rw = 0x0007` or `irq raise 11`. */
  text: string;
}

export class Transcript {
  readonly entries: TranscriptEntry[] = [];

  push(section: string, text: string): void {
    this.entries.push({ section, text });
  }

  get length(): number {
    return this.entries.length;
  }

  /** The sections in order of first appearance, each with its lines. */
  sections(): { name: string; lines: string[] }[] {
    const out: { name: string; lines: string[] }[] = [];
    for (const e of this.entries) {
      const last = out[out.length - 1];
      if (last && last.name === e.section) last.lines.push(e.text);
      else out.push({ name: e.section, lines: [e.text] });
    }
    return out;
  }

  lines(): string[] {
    return this.entries.map((e) => `[${e.section}] ${e.text}`);
  }

  toString(): string {
    return this.lines().join('\n');
  }
}

export const hex = (v: number | bigint, digits = 0): string => `0x${v.toString(16).padStart(digits, '0')}`;

/** FNV-1a, 32 bits: a short stable digest of bulk data in a transcript line. */
export function fnv1a(bytes: Uint8Array): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) {
    h ^= bytes[i]!;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
