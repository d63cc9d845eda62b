// Builds the initramfs the v86 test guest boots: busybox (with its applet links), the virtio
// modules of the fetched kernel package, and test/v86/guest/init.sh as /init. Written with our
// own cpio writer, so /dev/console exists in it without root.
//
// Modules are grouped by the test that needs them; init.sh loads "core" (virtio_pci and what it
// needs) first and then the groups of the devices it finds. The order inside a group comes from
// the `depends=` field of each module's .modinfo section (the package ships no modules.dep, which
// depmod would make at install time), dependencies first.
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { CpioWriter } from '../../../src/tools/cpio.js';
import { loadV86Inputs, type V86Inputs } from './inputs.js';

export const initScript = join(dirname(fileURLToPath(import.meta.url)), '..', 'guest', 'init.sh');

/**
 * Module roots of each group, in the order init.sh may load groups. Dependencies are added from
 * .modinfo; a module already in an earlier group is not repeated. evdev is not a dependency of
 * virtio_input (input-core is built in) but /dev/input/event* needs it. ext4 serves "ext2" mounts
 * in this kernel (CONFIG_EXT4_USE_FOR_EXT2, no ext2 module) and refuses every mount without a
 * "crc32c" shash ("Cannot load crc32c driver"), even of a file system without metadata_csum; that
 * is only a soft dependency, and nothing in the guest could load it on demand, hence
 * crc32c_generic by name (crc32c-intel needs SSE4.2, which v86 does not offer).
 */
export const MODULE_GROUPS: Readonly<Record<string, readonly string[]>> = {
  core: ['virtio_pci'],
  rng: ['virtio_rng'],
  blk: ['virtio_blk'],
  console: ['virtio_console'],
  net: ['virtio_net'],
  input: ['evdev', 'virtio_input'],
  balloon: ['virtio_balloon'],
  fs: ['crc32c_generic', 'ext4'],
};

export interface InitramfsOptions {
  inputs?: V86Inputs;
  /** Extra files (path in the guest to contents), e.g. a test's own data. */
  files?: Record<string, Uint8Array | string>;
  /** gzip the archive (the kernel has CONFIG_RD_GZIP); smaller but slower to unpack in v86. */
  gzip?: boolean;
}

export interface Initramfs {
  image: Uint8Array;
  /** Group name to module names, in load order. */
  groups: Record<string, string[]>;
  /** Number of busybox applet links made. */
  applets: number;
}

/** The key=value strings of a kernel module's .modinfo section (ELF32 or ELF64, little-endian). */
export function modinfo(ko: Uint8Array): Map<string, string[]> {
  const dv = new DataView(ko.buffer, ko.byteOffset, ko.byteLength);
  if (dv.getUint32(0, false) !== 0x7f454c46) throw new Error('modinfo: not an ELF file');
  if (ko[5] !== 1) throw new Error('modinfo: not little-endian');
  const is64 = ko[4] === 2;
  const shoff = is64 ? Number(dv.getBigUint64(0x28, true)) : dv.getUint32(0x20, true);
  const shentsize = dv.getUint16(is64 ? 0x3a : 0x2e, true);
  const shnum = dv.getUint16(is64 ? 0x3c : 0x30, true);
  const shstrndx = dv.getUint16(is64 ? 0x3e : 0x32, true);
  const section = (i: number): { name: number; offset: number; size: number } => {
    const at = shoff + i * shentsize;
    return is64
      ? { name: dv.getUint32(at, true), offset: Number(dv.getBigUint64(at + 0x18, true)), size: Number(dv.getBigUint64(at + 0x20, true)) }
      : { name: dv.getUint32(at, true), offset: dv.getUint32(at + 0x10, true), size: dv.getUint32(at + 0x14, true) };
  };
  const strtab = section(shstrndx);
  const cstr = (at: number): string => {
    let end = at;
    while (ko[end] !== 0) end++;
    return new TextDecoder().decode(ko.subarray(at, end));
  };
  const out = new Map<string, string[]>();
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    if (cstr(strtab.offset + s.name) !== '.modinfo') continue;
    const text = new TextDecoder().decode(ko.subarray(s.offset, s.offset + s.size));
    for (const entry of text.split('\0')) {
      const eq = entry.indexOf('=');
      if (eq <= 0) continue;
      const key = entry.slice(0, eq);
      out.set(key, [...(out.get(key) ?? []), entry.slice(eq + 1)]);
    }
    return out;
  }
  throw new Error('modinfo: no .modinfo section');
}

/** Every .ko under dir, by module name (file name with '-' as '_', as the kernel names them). */
function indexModules(dir: string): Map<string, string> {
  const index = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ko')) index.set(e.name.slice(0, -3).replace(/-/g, '_'), p);
    }
  };
  walk(dir);
  return index;
}

/** Load order of each group: dependencies first, each module once across all groups. */
export function moduleLoadOrder(
  modulesDir: string,
  groups: Readonly<Record<string, readonly string[]>> = MODULE_GROUPS,
): { groups: Record<string, string[]>; files: Map<string, string> } {
  const index = indexModules(modulesDir);
  const files = new Map<string, string>();
  const deps = (name: string): string[] => {
    const file = index.get(name);
    if (!file) throw new Error(`initramfs: module ${name} not found under ${modulesDir}`);
    files.set(name, file);
    const info = modinfo(readFileSync(file));
    // depends= spells names as the module files do ("crc-t10dif", "t10-pi"); the kernel, and
    // the index, use '_'.
    return (info.get('depends')?.[0] ?? '')
      .split(',')
      .filter((d) => d !== '')
      .map((d) => d.replace(/-/g, '_'));
  };
  const placed = new Set<string>();
  const out: Record<string, string[]> = {};
  for (const [group, roots] of Object.entries(groups)) {
    const order: string[] = [];
    const visiting = new Set<string>();
    const visit = (name: string): void => {
      if (placed.has(name)) return;
      if (visiting.has(name)) throw new Error(`initramfs: dependency cycle through ${name}`);
      visiting.add(name);
      for (const d of deps(name)) visit(d);
      visiting.delete(name);
      placed.add(name);
      order.push(name);
    };
    for (const r of roots) visit(r);
    out[group] = order;
  }
  return { groups: out, files };
}

/** busybox's applets with their install paths ("usr/bin/awk"), from the binary itself. */
function busyboxApplets(busybox: string): string[] {
  const r = spawnSync(busybox, ['--list-full'], { encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(
      `initramfs: cannot run ${busybox} --list-full (an i386 binary; the host needs IA32 support): ${r.error?.message ?? r.stderr}`,
    );
  }
  return r.stdout.split('\n').filter((l) => l !== '' && l !== 'bin/busybox');
}

const memo = new Map<string, Initramfs>();

export function buildInitramfs(options: InitramfsOptions = {}): Initramfs {
  const inputs = options.inputs ?? loadV86Inputs();
  const key = options.files ? undefined : `${inputs.kernel}|${options.gzip === true}`;
  const hit = key === undefined ? undefined : memo.get(key);
  if (hit) return hit;

  const w = new CpioWriter();
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'run']) {
    w.directory(d, 0o755);
  }
  w.directory('tmp', 0o1777);
  // The kernel opens /dev/console for init's stdio before init can mount devtmpfs.
  w.charDevice('dev/console', 5, 1, 0o600);
  w.charDevice('dev/null', 1, 3, 0o666);

  w.file('bin/busybox', readFileSync(inputs.busybox), 0o755);
  const applets = busyboxApplets(inputs.busybox);
  for (const a of applets) if (!w.has(a)) w.symlink(a, '/bin/busybox');
  if (!w.has('bin/sh')) w.symlink('bin/sh', '/bin/busybox');

  const { groups, files } = moduleLoadOrder(inputs.modules);
  for (const file of files.values()) w.file(join('lib/modules', relative(inputs.modules, file)), readFileSync(file), 0o644);
  for (const [group, names] of Object.entries(groups)) {
    const lines = names.map((n) => `${n} ${relative(inputs.modules, files.get(n)!)}\n`).join('');
    w.file(`lib/modules/groups/${group}`, lines, 0o644);
  }

  w.file('init', readFileSync(initScript), 0o755);
  for (const [path, data] of Object.entries(options.files ?? {})) w.file(path, data, 0o644);

  const raw = w.finish();
  const result: Initramfs = {
    image: options.gzip ? new Uint8Array(gzipSync(raw, { level: 6 })) : raw,
    groups,
    applets: applets.length,
  };
  if (key !== undefined) memo.set(key, result);
  return result;
}
