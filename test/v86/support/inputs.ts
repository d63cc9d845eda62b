// The Debian packages scripts/v86-inputs.mjs fetched into .cache/v86/, as absolute paths.
// Tests that boot a guest need them and fail (not skip) when they are missing, with the command
// that provides them, so a CI run without them is visibly red rather than quietly smaller.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const inputsFile = join(repoRoot, '.cache', 'v86', 'inputs.json');

export interface V86Inputs {
  /** `uname -r` of the fetched kernel, e.g. "6.1.0-57-686". */
  kernelRelease: string;
  /** The bzImage. */
  kernel: string;
  /** lib/modules/<release> of the unpacked kernel package. */
  modules: string;
  /** busybox-static:i386's statically linked busybox. */
  busybox: string;
  /** SeaBIOS's bios.bin. */
  bios: string;
  /** Debian package name (with :arch) to version. */
  packages: Record<string, string>;
}

interface InputsJson {
  format: number;
  kernelRelease: string;
  kernel: string;
  modules: string;
  busybox: string;
  bios: string;
  packages: Record<string, { version: string }>;
}

let cached: V86Inputs | undefined;

/** Reads inputs.json; throws with the remedy when it or a file it names is missing. */
export function loadV86Inputs(): V86Inputs {
  if (cached) return cached;
  const remedy = 'run `node scripts/v86-inputs.mjs` (as root the first time: it adds the i386 dpkg architecture)';
  if (!existsSync(inputsFile)) throw new Error(`v86 boot inputs missing: no ${inputsFile}; ${remedy}`);
  const raw = JSON.parse(readFileSync(inputsFile, 'utf8')) as InputsJson;
  const abs = (p: string): string => {
    const full = resolve(repoRoot, p);
    if (!existsSync(full)) throw new Error(`v86 boot inputs incomplete: ${full} is missing; ${remedy}`);
    return full;
  };
  cached = {
    kernelRelease: raw.kernelRelease,
    kernel: abs(raw.kernel),
    modules: abs(raw.modules),
    busybox: abs(raw.busybox),
    bios: abs(raw.bios),
    packages: Object.fromEntries(Object.entries(raw.packages).map(([k, v]) => [k, v.version])),
  };
  return cached;
}
