#!/usr/bin/env node
// Fetch what the v86 tests boot: a Debian i386 kernel (linux-image-6.1.0-<N>-686-unsigned, the
// newest N that apt offers), busybox-static:i386 and SeaBIOS, all as Debian packages into the
// ignored cache .cache/v86/, unpacked there, with the paths written to .cache/v86/inputs.json.
// Nothing binary is committed: CI and developers run this and get the same packages.
//
// Usage: node scripts/v86-inputs.mjs [--refresh] [--quiet] [--no-fail]
//   --no-fail  report a failure and exit 0 (`npm test` runs the rest; the boot tests then fail
//              with the remedy)
//   --refresh  ask apt again for the newest kernel even when the cache is complete
//   --quiet    print only errors
//
// A complete cache is answered from inputs.json alone (no apt call), so this is cheap to run
// before every test run. Exit status is 0 with inputs.json valid, 1 otherwise, with the reason.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cacheDir = join(root, '.cache', 'v86');
const debDir = join(cacheDir, 'debs');
const unpackDir = join(cacheDir, 'root');
const inputsFile = join(cacheDir, 'inputs.json');
const KERNEL_RE = /^linux-image-6\.1\.0-(\d+)-686-unsigned$/;
// Bumped when the shape of inputs.json changes, so an old cache is rebuilt instead of misread.
const FORMAT = 1;

const argv = process.argv.slice(2);
const refresh = argv.includes('--refresh');
const quiet = argv.includes('--quiet');
const noFail = argv.includes('--no-fail');
const log = (msg) => {
  if (!quiet) console.log(`v86-inputs: ${msg}`);
};

class InputsError extends Error {}

function run(cmd, args, { cwd = root, allowFail = false } = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.error) {
    if (allowFail) return { ok: false, stdout: '', stderr: String(r.error.message) };
    throw new InputsError(`cannot run ${cmd}: ${r.error.message}`);
  }
  const ok = r.status === 0;
  if (!ok && !allowFail) {
    throw new InputsError(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stderr.trim()}`);
  }
  return { ok, stdout: r.stdout, stderr: r.stderr };
}

const isRoot = () => typeof process.getuid === 'function' && process.getuid() === 0;

/** Reads inputs.json and returns it when every path it names still exists. */
function cachedInputs() {
  if (!existsSync(inputsFile)) return null;
  try {
    const inputs = JSON.parse(readFileSync(inputsFile, 'utf8'));
    if (inputs.format !== FORMAT) return null;
    const paths = [inputs.kernel, inputs.modules, inputs.busybox, inputs.bios];
    if (!paths.every((p) => typeof p === 'string' && existsSync(join(root, p)))) return null;
    return inputs;
  } catch {
    return null;
  }
}

/** i386 must be a dpkg architecture for apt to see busybox-static:i386 and the 686 kernels. */
function ensureI386() {
  const foreign = run('dpkg', ['--print-foreign-architectures']).stdout.split(/\s+/);
  const native = run('dpkg', ['--print-architecture']).stdout.trim();
  if (native === 'i386' || foreign.includes('i386')) return false;
  if (!isRoot()) {
    throw new InputsError(
      'dpkg has no i386 architecture; run as root: dpkg --add-architecture i386 && apt-get update',
    );
  }
  log('adding dpkg architecture i386');
  run('dpkg', ['--add-architecture', 'i386']);
  return true;
}

function aptUpdate() {
  if (!isRoot()) throw new InputsError('apt lists lack the packages; run as root: apt-get update');
  log('apt-get update');
  run('apt-get', ['update', '-q']);
}

/** The newest linux-image-6.1.0-<N>-686-unsigned with a download candidate, or null. */
function newestKernel() {
  const names = run('apt-cache', ['pkgnames', 'linux-image-6.1.0-'])
    .stdout.split('\n')
    .map((n) => n.trim().replace(/:i386$/, ''))
    .map((n) => ({ name: n, m: KERNEL_RE.exec(n) }))
    .filter((x) => x.m)
    .sort((a, b) => Number(b.m[1]) - Number(a.m[1]));
  // pkgnames also lists names known only as dependencies; take the first one apt can download.
  for (const { name } of names) {
    const version = candidateVersion(`${name}:i386`);
    if (version) return { name, version };
  }
  return null;
}

function candidateVersion(pkg) {
  const r = run('apt-cache', ['policy', pkg], { allowFail: true });
  const m = /Candidate:\s*(\S+)/.exec(r.stdout);
  return m && m[1] !== '(none)' ? m[1] : null;
}

function resolvePackages() {
  let updated = ensureI386();
  if (updated) aptUpdate();
  for (;;) {
    const kernel = newestKernel();
    const busybox = candidateVersion('busybox-static:i386');
    const seabios = candidateVersion('seabios');
    if (kernel && busybox && seabios) {
      return [
        { role: 'kernel', pkg: `${kernel.name}:i386`, name: kernel.name, version: kernel.version },
        { role: 'busybox', pkg: 'busybox-static:i386', name: 'busybox-static', version: busybox },
        { role: 'bios', pkg: 'seabios', name: 'seabios', version: seabios },
      ];
    }
    // Stale or empty lists are the usual cause; refresh them once, then give up with names.
    if (!updated) {
      aptUpdate();
      updated = true;
      continue;
    }
    const missing = [
      !kernel && 'linux-image-6.1.0-<N>-686-unsigned:i386',
      !busybox && 'busybox-static:i386',
      !seabios && 'seabios',
    ].filter(Boolean);
    throw new InputsError(`apt offers no candidate for: ${missing.join(', ')}`);
  }
}

/** apt-get download names files <name>_<version with ':' as %3a>_<arch>.deb. */
function findDeb(name, version) {
  const v = version.replace(/:/g, '%3a');
  return readdirSync(debDir).find((f) => f.startsWith(`${name}_${v}_`) && f.endsWith('.deb'));
}

function fetchAndUnpack(pkgs) {
  mkdirSync(debDir, { recursive: true });
  const wanted = pkgs.filter((p) => !findDeb(p.name, p.version));
  if (wanted.length > 0) {
    log(`apt-get download ${wanted.map((p) => `${p.pkg}=${p.version}`).join(' ')}`);
    // apt-get download runs as the _apt user when root; the cache dir may not be writable by it,
    // which apt only warns about (it falls back to root), so its stderr is not an error here.
    run('apt-get', ['download', '-q', ...wanted.map((p) => `${p.pkg}=${p.version}`)], { cwd: debDir });
  }
  const out = {};
  for (const p of pkgs) {
    const deb = findDeb(p.name, p.version);
    if (!deb) throw new InputsError(`apt-get download left no .deb for ${p.pkg} ${p.version}`);
    const dest = join(unpackDir, `${p.name}_${p.version.replace(/:/g, '%3a')}`);
    if (!existsSync(join(dest, '.unpacked'))) {
      // Unpack beside the destination and rename, so an interrupted run leaves no half tree.
      const tmp = `${dest}.tmp`;
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp, { recursive: true });
      log(`dpkg-deb -x ${deb}`);
      run('dpkg-deb', ['-x', join(debDir, deb), tmp]);
      writeFileSync(join(tmp, '.unpacked'), `${deb}\n`);
      rmSync(dest, { recursive: true, force: true });
      renameSync(tmp, dest);
    }
    out[p.role] = { ...p, deb, dir: dest };
  }
  return out;
}

function locate(unpacked) {
  const k = unpacked.kernel;
  const release = k.name.replace(/^linux-image-/, '').replace(/-unsigned$/, '');
  const kernel = join(k.dir, 'boot', `vmlinuz-${release}`);
  const modules = join(k.dir, 'lib', 'modules', release);
  const busybox = join(unpacked.busybox.dir, 'bin', 'busybox');
  // Debian's seabios ships a 128 KiB bios.bin and a 256 KiB bios-256k.bin; either boots in v86.
  const biosDir = join(unpacked.bios.dir, 'usr', 'share', 'seabios');
  const bios = ['bios.bin', 'bios-256k.bin'].map((f) => join(biosDir, f)).find((f) => existsSync(f));
  for (const [what, path] of [
    ['kernel image', kernel],
    ['modules dir', modules],
    ['busybox', busybox],
  ]) {
    if (!existsSync(path)) throw new InputsError(`${what} not found at ${path}`);
  }
  if (!bios) throw new InputsError(`no bios.bin or bios-256k.bin in ${biosDir}`);
  const rel = (p) => relative(root, p);
  return {
    format: FORMAT,
    kernelRelease: release,
    kernel: rel(kernel),
    modules: rel(modules),
    busybox: rel(busybox),
    bios: rel(bios),
    packages: Object.fromEntries(
      Object.values(unpacked).map((p) => [p.pkg, { version: p.version, deb: rel(join(debDir, p.deb)) }]),
    ),
  };
}

function main() {
  if (!refresh) {
    const cached = cachedInputs();
    if (cached) {
      log(`cache complete: kernel ${cached.kernelRelease} (${relative(root, inputsFile)})`);
      return 0;
    }
  }
  try {
    const pkgs = resolvePackages();
    const inputs = locate(fetchAndUnpack(pkgs));
    mkdirSync(cacheDir, { recursive: true });
    writeFileSync(`${inputsFile}.tmp`, `${JSON.stringify(inputs, null, 2)}\n`);
    renameSync(`${inputsFile}.tmp`, inputsFile);
    log(`kernel ${inputs.kernelRelease}; wrote ${relative(root, inputsFile)}`);
    return 0;
  } catch (err) {
    if (!(err instanceof InputsError)) throw err;
    console.error(`v86-inputs: cannot provide the v86 boot inputs: ${err.message}`);
    if (noFail) console.error('v86-inputs: the tests that boot Linux in v86 will fail');
    return noFail ? 0 : 1;
  }
}

process.exitCode = main();
