/**
 * Comparing two transcripts of one scenario, section by section, with the differences the
 * scenario declares on purpose (a row of docs/qemu-differences.md and the sections where it
 * shows). Browser-safe.
 */
import type { Transcript } from './transcript.js';

/** A difference from QEMU that we make on purpose. */
export interface ExpectedDifference {
  /** The row number in docs/qemu-differences.md. */
  row: number;
  /** Why we differ, as the report shows it. */
  reason: string;
  /** Sections where the transcripts may differ; every other section must be equal. */
  sections: readonly string[];
  /**
   * Confine the difference to lines matching this pattern: in the listed sections those lines
   * are left out of the comparison, and everything else must still be equal.
   */
  lines?: RegExp;
  /**
   * The difference shows only in some runs of a shared declaration (e.g. only when the device
   * breaks): not showing it is not 'stale'.
   */
  optional?: boolean;
  /**
   * The reference stops inside these sections (QEMU aborts): the sections it never reached are
   * excused too, as long as they are among `sections`.
   */
  truncates?: boolean;
}

export type Comparison =
  | { kind: 'equal' }
  /** Differences only in sections that declared differences allow. */
  | { kind: 'expected'; rows: number[] }
  /** A difference nobody declared; `detail` shows both sides at the first one. */
  | { kind: 'different'; section: string; detail: string }
  /** A declared difference that did not show: the declaration (or the docs) is out of date. */
  | { kind: 'stale'; rows: number[]; detail: string };

export interface CompareOptions {
  /** Names of the two sides for the detail text. */
  names?: [string, string];
  /** Lines of context before the first difference (default 6). */
  context?: number;
  /** Lines of each side shown from the first difference on (default 8). */
  after?: number;
}

/** Show both sides at the first differing line of two sections. */
export function formatDifference(section: string, a: readonly string[], b: readonly string[], opts: CompareOptions = {}): string {
  const [na, nb] = opts.names ?? ['qemu', 'ours'];
  const context = opts.context ?? 6;
  const after = opts.after ?? 8;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const out: string[] = [`first difference in section '${section}' at line ${i + 1}:`];
  for (let k = Math.max(0, i - context); k < i; k++) out.push(`    ${String(k + 1).padStart(4)}   ${a[k]}`);
  const side = (name: string, lines: readonly string[]): void => {
    out.push(`  ${name}:`);
    if (i >= lines.length) out.push(`    ${String(i + 1).padStart(4)} > (section ends)`);
    for (let k = i; k < Math.min(lines.length, i + after); k++) out.push(`    ${String(k + 1).padStart(4)} ${k === i ? '>' : ' '} ${lines[k]}`);
    if (lines.length > i + after) out.push(`         ... ${lines.length - i - after} more`);
  };
  side(na, a);
  side(nb, b);
  return out.join('\n');
}

/**
 * Compare `a` (the reference, QEMU) with `b` (ours). Sections must come in the same order with
 * the same names; a section listed by an expected difference may differ, any other must be
 * equal. An expected difference that shows in none of its sections makes the result 'stale'.
 */
export function compareTranscripts(a: Transcript, b: Transcript, expected: readonly ExpectedDifference[] = [], opts: CompareOptions = {}): Comparison {
  const sa = a.sections();
  const sb = b.sections();
  const [na, nb] = opts.names ?? ['qemu', 'ours'];
  const shownBy = new Set<ExpectedDifference>();
  for (let i = 0; i < Math.max(sa.length, sb.length); i++) {
    const x = sa[i];
    const y = sb[i];
    if (!x && y) {
      // The reference ended early: excused only where a declared difference says it stops.
      const e = expected.find((d) => d.truncates && d.sections.includes(y.name));
      if (e) {
        shownBy.add(e);
        continue;
      }
    }
    if (!x || !y || x.name !== y.name) {
      const list = (s: typeof sa): string => s.map((q) => q.name).join(', ');
      return {
        kind: 'different',
        section: x?.name ?? y?.name ?? '?',
        detail: `the sections differ at #${i + 1}:\n  ${na}: ${list(sa)}\n  ${nb}: ${list(sb)}${
          x && y ? '' : `\n${formatDifference(x?.name ?? y!.name, x?.lines ?? [], y?.lines ?? [], opts)}`
        }`,
      };
    }
    if (equalLines(x.lines, y.lines)) continue;
    const here = expected.filter((e) => e.sections.includes(x.name));
    // Whole-section allowances excuse anything; line-confined ones only their lines.
    const whole = here.filter((e) => !e.lines);
    const confined = here.filter((e) => e.lines);
    if (whole.length > 0) {
      for (const e of whole) shownBy.add(e);
      continue;
    }
    const keep = (l: string): boolean => !confined.some((e) => e.lines!.test(l));
    const fx = x.lines.filter(keep);
    const fy = y.lines.filter(keep);
    if (confined.length > 0 && equalLines(fx, fy)) {
      for (const e of confined) shownBy.add(e);
      continue;
    }
    return { kind: 'different', section: x.name, detail: formatDifference(x.name, fx, fy, opts) };
  }
  const shown = expected.filter((e) => shownBy.has(e));
  const notShown = expected.filter((e) => !shown.includes(e) && !e.optional);
  if (notShown.length > 0) {
    return {
      kind: 'stale',
      rows: notShown.map((e) => e.row),
      detail: notShown.map((e) => `expected difference #${e.row} (sections ${e.sections.join(', ')}) did not show: both sides are equal there`).join('\n'),
    };
  }
  if (shown.length === 0) return { kind: 'equal' };
  return { kind: 'expected', rows: shown.map((e) => e.row) };
}

function equalLines(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((l, k) => l === b[k]);
}

/** Exact comparison (no expected differences), e.g. of our in-process machine with our socket server. */
export function sameTranscripts(a: Transcript, b: Transcript, opts: CompareOptions = {}): Comparison {
  return compareTranscripts(a, b, [], opts);
}
