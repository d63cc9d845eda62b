/**
 * Verdicts of hostile-guest scenarios, in virtio-villain's terms (docs/oracle.md defines them;
 * shared/spec/hostile-guest-bugs.md §0 lists the invariants I1-I7 they rest on).
 *
 *   FAIL    the machine threw, crashed or aborted (I1); the device corrupted guest memory
 *           outside the buffers it may write (I4); the used ring went insane — a duplicate, an
 *           unknown id, a length beyond the chain (I6); a reset did not bring it back (I7); or
 *           it refused or lost a request that is legal.
 *   REJECT  the device reported the error: DEVICE_NEEDS_RESET (0x40) is set and processing
 *           stopped; a reset recovers it.
 *   PASS    the input was handled as the spec allows without stopping: a legal input was
 *           processed correctly, or the bad request was skipped or returned and a well-formed
 *           request posted after it completes; a reset recovers it (I5 b, I7).
 *   WEDGED  nothing happened and nothing was reported: no NEEDS_RESET, and the well-formed
 *           request after the bad one does not complete (I5 fails), though a reset recovers it.
 *
 * Browser-safe.
 */

export type Villain = 'PASS' | 'REJECT' | 'WEDGED' | 'FAIL';

/** What a hostile scenario observed on one machine. */
export interface HostileFacts {
  /** The input is legal (a full ring, a chain of exactly the queue size, ...): it must be processed. */
  legal: boolean;
  /** A legal input was processed as the spec requires (only looked at when `legal`). */
  processed?: boolean;
  /** DEVICE_NEEDS_RESET read back after the attack. */
  needsReset: boolean;
  /** A well-formed request posted after the attack completed (undefined: not tried, the device asked for a reset). */
  liveness: boolean | undefined;
  /** After reset and a new set-up, a request completed. */
  recovered: boolean;
  /** Invariant violations seen (I4 memory, I6 used ring), as text. */
  problems: string[];
}

export interface HostileVerdict {
  verdict: Villain;
  why: string;
}

/** The verdict of one side. `threw` is set when the scenario or the machine raised an exception. */
export function villainVerdict(f: HostileFacts | undefined, threw?: string): HostileVerdict {
  if (threw !== undefined) return { verdict: 'FAIL', why: `exception: ${threw}` };
  if (!f) return { verdict: 'FAIL', why: 'no observations' };
  if (f.problems.length > 0) return { verdict: 'FAIL', why: f.problems.join('; ') };
  if (!f.recovered) return { verdict: 'FAIL', why: 'no recovery after reset (I7)' };
  if (f.legal) {
    if (f.processed && f.liveness) return { verdict: 'PASS', why: 'legal input processed' };
    if (f.needsReset) return { verdict: 'FAIL', why: 'a legal input was refused with NEEDS_RESET' };
    return { verdict: 'FAIL', why: f.processed ? 'legal input processed, but the device stopped afterwards' : 'a legal input was not processed' };
  }
  if (f.needsReset) return { verdict: 'REJECT', why: 'NEEDS_RESET, reset recovers' };
  if (f.liveness) return { verdict: 'PASS', why: 'bad request skipped or returned, the next request completes' };
  return { verdict: 'WEDGED', why: 'no NEEDS_RESET and the next request does not complete' };
}

/** Order of preference, for "ours must not be WEDGED where QEMU does better". */
export function villainRank(v: Villain): number {
  return { PASS: 3, REJECT: 2, WEDGED: 1, FAIL: 0 }[v];
}

/**
 * The rules our side must keep in a hostile scenario (issue 4): never FAIL (no exception, no
 * corruption, always recovers after reset), and never WEDGED where QEMU does better. Returns the
 * broken rules as text (empty when all hold).
 */
export function oursRuleViolations(qemu: HostileVerdict | undefined, ours: HostileVerdict | undefined): string[] {
  const out: string[] = [];
  if (!ours) return ['no verdict for our side'];
  if (ours.verdict === 'FAIL') out.push(`ours FAIL: ${ours.why}`);
  if (ours.verdict === 'WEDGED' && qemu && villainRank(qemu.verdict) > villainRank('WEDGED')) out.push(`ours WEDGED where QEMU is ${qemu.verdict}`);
  return out;
}
