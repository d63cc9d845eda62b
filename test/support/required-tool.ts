// The documented policy for a host program some tests need (QEMU 7.2, Debian's Chromium): with
// CI=true a missing one fails one test that says why (CI installs them, so missing means a broken
// CI machine); in a local run the tests are registered as skipped, with a loud warning, so a
// developer without the program can still run the rest. The skip is therefore never what CI sees.
import { describe, it } from 'vitest';

/** True when the program is there and the caller should register its tests. */
export function requiredToolOrPolicy(what: string, present: boolean, tool: string, install: string): boolean {
  if (present) return true;
  const msg = `${tool} is not installed: the ${what} tests need it (${install})`;
  if (process.env['CI'] === 'true') {
    describe(what, () => {
      it(`has ${tool} (required when CI=true)`, () => {
        throw new Error(msg);
      });
    });
  } else {
    console.warn(`\n${'!'.repeat(100)}\n!!! ${msg}.\n!!! SKIPPING them locally; they FAIL when CI=true.\n${'!'.repeat(100)}\n`);
    // Local runs only: shown as skipped, never counted as passing.
    describe.skip(what, () => {
      it(`needs ${tool}`, () => undefined);
    });
  }
  return false;
}
