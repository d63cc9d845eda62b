// Guest-visible figures of virtio-ts in v86 (issue 10): Debian's i386 kernel booting our test
// initramfs in the npm v86, with our devices on its PCI bus through virtio-ts/v86.
//
// (1) Disk read throughput as the guest sees it: one boot with the same 64 MiB image both as
//     our virtio-blk (modern, queue of 256) and as v86's own IDE disk (hda, through Linux's
//     ata_piix); the guest checks each by md5, then reads each whole with `dd bs=1M
//     iflag=direct` (no page cache), seven rounds in ABBA order;
//     timed on the host between the guest's serial markers around each dd (host wall time, since
//     the guest's clock in v86 drifts with load). MB/s = 2^20 bytes per second.
// (2) Boot time with our devices (rng, blk, console, keyboard, net) against without: emulator
//     construction to the guest's "booted" marker, printed by a small init after it loaded every
//     virtio module in both cases (so drivers probe our devices in one and nothing in the other).
//     Boots in ABBA order (without, with, with, without, ...) so background load and drift hit
//     both; medians of wall time and of the process's CPU time. Target ≤ 1.05×.
//
// Needs the inputs of scripts/v86-inputs.mjs (.cache/v86); skipped with a note otherwise.
// BENCH_ONLY=v86 runs this section only; BENCH_QUICK=1 boots once each; BENCH_V86_BOOTS=n sets
// the boots of (2) (default 5 each, 0: skip (2)); BENCH_V86_ECHO=1 shows
// the guests' serial output.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve } from 'node:path';
import os from 'node:os';
import { MemoryBlockBackend } from '../src/devices/blk/backends/memory.js';
import { VirtIOBlock } from '../src/devices/blk/blk.js';
import { MemoryChardev } from '../src/devices/console/chardev.js';
import { VirtIOSerial } from '../src/devices/console/virtio-serial.js';
import { VirtIOKeyboard } from '../src/devices/input/hid.js';
import { VirtIONet } from '../src/devices/net/virtio-net.js';
import { deterministicEntropy, VirtIORng } from '../src/devices/rng.js';
import { v86Host, v86VirtioPci, type V86Emulator } from '../src/v86.js';
import { CpioWriter } from '../src/tools/cpio.js';
import { MODULE_GROUPS, moduleLoadOrder } from '../test/v86/support/initramfs.js';
import { median } from './measure.js';

const MiB = 1 << 20;
/** BENCH_V86_ECHO=1 copies the guests' serial output to stderr. */
const ECHO = process.env['BENCH_V86_ECHO'] === '1';
const DISK = 64 * MiB;
/** Whole-image reads of each disk, in ABBA order (the guest script's loop). */
const DISK_ROUNDS = 7;

/** The kernel command line of the test guest (test/v86/support/boot.ts), with the bench's init. */
const CMDLINE = 'console=ttyS0 rdinit=/init loglevel=4 tsc=unstable mitigations=off';

/**
 * v86's IDE disk through ata_piix and sd_mod: roots for moduleLoadOrder, which adds the .modinfo
 * dependencies. The crc providers come first by name: sd_mod's crc users find them only through
 * soft dependencies (crypto algorithm names), which nothing in the guest resolves.
 */
const IDE_ROOTS = ['crct10dif_generic', 'crc64_rocksoft_generic', 'ata_piix', 'sd_mod'];

/**
 * The bench guest's /init: every virtio module, the IDE ones, a
 * "booted" marker, then in disk mode two timed whole-disk reads of each disk.
 */
const BENCH_SH = `#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for g in core rng blk console net input; do
  [ -f /lib/modules/groups/$g ] || continue
  while read -r name file; do
    grep -q "^$name " /proc/modules || insmod /lib/modules/$file 2>/dev/null
  done < /lib/modules/groups/$g
done
read -r cmd < /proc/cmdline
mode=boot
for w in $cmd; do case "$w" in vb.mode=*) mode=\${w#*=} ;; esac; done
if [ "$mode" = disk ]; then
  while read -r name file; do insmod /lib/modules/$file 2>/dev/null; done < /lib/modules/groups/ide
  for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/sda ] && break; sleep 0.5; done
fi
echo "VB-BOOTED $(cut -d' ' -f1 /proc/uptime)"
if [ "$mode" = disk ]; then
  for dev in vda sda; do
    [ -b /dev/$dev ] && echo "VB-MD5 $dev $(dd if=/dev/$dev bs=1M iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)"
  done
  for round in 1 2 3 4 5 6 7; do
    order="vda sda"; [ $((round % 2)) = 0 ] && order="sda vda"
    for dev in $order; do
      [ -b /dev/$dev ] || { echo "VB-MISSING $dev"; continue; }
      echo "VB-START $dev $round"
      dd if=/dev/$dev of=/dev/null bs=1M iflag=direct 2>/dev/null
      echo "VB-END $dev $round"
    done
  done
fi
echo VT-DONE
poweroff -f
while :; do sleep 3600; done
`;

interface V86Like extends V86Emulator {
  add_listener(event: string, fn: (arg: never) => void): void;
  run(): Promise<void>;
  destroy(): Promise<void>;
}

/**
 * Serial lines with the host time (ms since construction) each arrived at, and the CPU time
 * (user + system, ms) the process had spent by then: less sensitive than wall time to other
 * programs on the machine, since a guest waiting in HLT costs none.
 */
type Marks = { line: string; at: number; cpu: number }[];

interface Inputs {
  kernelRelease: string;
  kernel: string;
  modules: string;
  busybox: string;
  bios: string;
}

/**
 * .cache/v86/inputs.json of the working directory (npm runs the bench at the repository root;
 * the bench is one bundle in dist/, so paths are not taken relative to this file).
 */
function readInputs(): Inputs | undefined {
  const file = resolve('.cache/v86/inputs.json');
  if (!existsSync(file)) return undefined;
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Inputs;
  const abs = (p: string): string => resolve(p);
  return { kernelRelease: raw.kernelRelease, kernel: abs(raw.kernel), modules: abs(raw.modules), busybox: abs(raw.busybox), bios: abs(raw.bios) };
}

/** The test guest's initramfs (busybox, module groups) with the bench script as /init. */
function benchInitramfs(inputs: Inputs): Uint8Array {
  const w = new CpioWriter();
  for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'mnt', 'run']) w.directory(d, 0o755);
  w.charDevice('dev/console', 5, 1, 0o600);
  w.charDevice('dev/null', 1, 3, 0o666);
  w.file('bin/busybox', readFileSync(inputs.busybox), 0o755);
  const r = spawnSync(inputs.busybox, ['--list-full'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`v86 bench: cannot run ${inputs.busybox} --list-full: ${r.error?.message ?? r.stderr}`);
  for (const a of r.stdout.split('\n')) if (a !== '' && a !== 'bin/busybox' && !w.has(a)) w.symlink(a, '/bin/busybox');
  const { groups, files } = moduleLoadOrder(inputs.modules, { ...MODULE_GROUPS, ide: IDE_ROOTS });
  for (const file of files.values()) w.file(join('lib/modules', relative(inputs.modules, file)), readFileSync(file), 0o644);
  for (const [group, names] of Object.entries(groups)) {
    w.file(`lib/modules/groups/${group}`, names.map((n) => `${n} ${relative(inputs.modules, files.get(n)!)}\n`).join(''), 0o644);
  }
  w.file('init', BENCH_SH, 0o755);
  return w.finish();
}

async function boot(inputs: Inputs, initrd: Uint8Array, opts: { devices: boolean; hda?: Uint8Array; vda?: Uint8Array; mode: 'boot' | 'disk' }): Promise<Marks> {
  const { V86 } = (await import('v86')) as unknown as { V86: new (o: object) => V86Like };
  const require = createRequire(import.meta.url);
  const buf = (u: Uint8Array): { buffer: ArrayBuffer } => ({ buffer: u.slice().buffer });
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const cpuMs = (): number => {
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000;
  };
  const emulator = new V86({
    wasm_path: require.resolve('v86/build/v86.wasm'),
    memory_size: 128 * MiB,
    bios: buf(readFileSync(inputs.bios)),
    bzimage: buf(readFileSync(inputs.kernel)),
    initrd: buf(initrd),
    ...(opts.hda ? { hda: buf(opts.hda) } : {}),
    cmdline: `${CMDLINE} vb.mode=${opts.mode}`,
    autostart: false,
    disable_speaker: true,
  });
  const marks: Marks = [];
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`v86 bench boot: no VT-DONE within 300 s; last lines: ${marks.slice(-5).map((m) => m.line).join(' | ')}`)), 300_000);
      let pending: number[] = [];
      emulator.add_listener('serial0-output-byte', (b: number) => {
        if (b !== 0x0a) {
          pending.push(b);
          return;
        }
        const line = Buffer.from(pending).toString('latin1').replace(/\r/g, '');
        pending = [];
        if (ECHO) process.stderr.write(`${line}\n`);
        const at = line.indexOf('VB-') >= 0 ? line.slice(line.indexOf('VB-')) : line.includes('VT-DONE') ? 'VT-DONE' : undefined;
        if (at === undefined) return;
        marks.push({ line: at, at: performance.now() - t0, cpu: cpuMs() });
        if (at === 'VT-DONE') {
          clearTimeout(timer);
          resolve();
        }
      });
      emulator.add_listener('emulator-loaded', () => {
        try {
          if (opts.devices) {
            const host = v86Host(emulator);
            const memory = host.memory;
            host.attach(v86VirtioPci(new VirtIORng({ memory, queueSize: 256 })), { slot: 13 });
            const disk = new MemoryBlockBackend(opts.vda ?? new Uint8Array(DISK));
            host.attach(v86VirtioPci(new VirtIOBlock({ memory, backend: disk, queueSize: 256 }), { disableLegacy: true }), { slot: 14 });
            const serial = new VirtIOSerial({ memory });
            serial.addPort({ console: true, chardev: new MemoryChardev('hvc0') });
            host.attach(v86VirtioPci(serial), { slot: 15 });
            host.attach(v86VirtioPci(new VirtIOKeyboard({ memory })), { slot: 16 });
            host.attach(v86VirtioPci(new VirtIONet({ memory })), { slot: 17 }); // cable unplugged
          }
          void emulator.run();
        } catch (e) {
          clearTimeout(timer);
          reject(e instanceof Error ? e : new Error(String(e)));
        }
      });
    });
  } finally {
    await emulator.destroy();
  }
  return marks;
}

function mark(marks: Marks, prefix: string): Marks[number] {
  const m = marks.find((x) => x.line.startsWith(prefix));
  if (!m) throw new Error(`v86 bench: the guest never printed '${prefix}' (saw: ${marks.map((x) => x.line).join(' | ')})`);
  return m;
}

export async function runV86Bench(opts: { quick?: boolean } = {}): Promise<void> {
  console.log('\n== v86: Linux guest with virtio-ts devices (virtio-ts/v86) ==');
  const inputs = readInputs();
  if (inputs === undefined) {
    console.log('skipped: no .cache/v86/inputs.json here (run `node scripts/v86-inputs.mjs` at the repository root)');
    return;
  }
  const initrd = benchInitramfs(inputs);
  console.log(`kernel ${inputs.kernelRelease}, v86 ${v86Version()}, Node ${process.version}, ${os.cpus().length} CPUs, load ${os.loadavg()[0]!.toFixed(1)}`);

  // (1) Disk read: the same image as our virtio-blk and as v86's IDE disk.
  const image = new Uint8Array(DISK);
  deterministicEntropy(0xb10c).fill(image);
  const marks = await boot(inputs, initrd, { devices: true, hda: image, vda: image, mode: 'disk' });
  const rows: string[] = [];
  const wantMd5 = (await import('node:crypto')).createHash('md5').update(image).digest('hex');
  for (const dev of ['vda', 'sda']) {
    const md5 = marks.find((m) => m.line.startsWith(`VB-MD5 ${dev} `))?.line.split(' ')[2];
    if (md5 !== wantMd5) throw new Error(`v86 bench: ${dev} read back ${md5 ?? 'nothing'}, the image is ${wantMd5}`);
    const rates: number[] = [];
    const perCpu: number[] = [];
    for (let round = 1; round <= DISK_ROUNDS; round++) {
      const s = marks.find((m) => m.line === `VB-START ${dev} ${round}`);
      const e = marks.find((m) => m.line === `VB-END ${dev} ${round}`);
      if (!s || !e) continue;
      rates.push(DISK / MiB / ((e.at - s.at) / 1000));
      perCpu.push(DISK / MiB / ((e.cpu - s.cpu) / 1000));
    }
    const name = dev === 'vda' ? 'virtio-blk (ours, modern, queue 256)' : "v86's IDE (ata_piix)";
    const list = (xs: number[]): string => xs.map((r) => r.toFixed(0)).join(', ');
    rows.push(`  ${name.padEnd(38)} ${rates.length ? median(rates).toFixed(1) : '-'} MB/s [${list(rates)}]; per host CPU second ${perCpu.length ? median(perCpu).toFixed(1) : '-'} MB [${list(perCpu)}]`);
  }
  console.log(
    `(1) guest reads the whole ${DISK / MiB} MiB image (checked by md5 first), dd bs=1M iflag=direct, ${DISK_ROUNDS} rounds in ABBA order, medians: MB per second of host wall time between the serial markers, and MB per second of the process's CPU time (less sensitive to other load):`,
  );
  for (const r of rows) console.log(r);

  // (2) Boot time with and without our devices.
  const env = Number(process.env['BENCH_V86_BOOTS']);
  const rounds = process.env['BENCH_V86_BOOTS'] !== undefined && Number.isInteger(env) && env >= 0 ? env : opts.quick ? 1 : 5;
  if (rounds === 0) return;
  const without: Marks[number][] = [];
  const withDevs: Marks[number][] = [];
  // ABBA order (without, with, with, without, ...): a machine that slows down or speeds up
  // over the run (load from elsewhere, thermal) weighs on both sides alike.
  for (let i = 0; i < rounds; i++) {
    for (const devices of i % 2 === 0 ? [false, true] : [true, false]) {
      (devices ? withDevs : without).push(mark(await boot(inputs, initrd, { devices, mode: 'boot' }), 'VB-BOOTED'));
    }
  }
  const s = (ms: number): string => (ms / 1000).toFixed(2);
  const list = (xs: number[]): string => xs.map(s).join(', ');
  console.log(`(2) construction → guest booted (all virtio modules loaded), ${rounds} boots each in ABBA order (medians):`);
  for (const [what, pick] of [
    ['wall time', (m: Marks[number]) => m.at],
    ['host CPU time', (m: Marks[number]) => m.cpu],
  ] as const) {
    const a = without.map(pick);
    const b = withDevs.map(pick);
    const paired = b.map((x, i) => x / a[i]!);
    console.log(`  ${what}: without our devices ${s(median(a))} s [${list(a)}]; with rng, blk, console, keyboard, net ${s(median(b))} s [${list(b)}]`);
    console.log(`    ratio ${(median(b) / median(a)).toFixed(3)}× (pairs: ${paired.map((r) => r.toFixed(3)).join(', ')}; target ≤ 1.05×)`);
  }
}

function v86Version(): string {
  try {
    const require = createRequire(import.meta.url);
    return (JSON.parse(readFileSync(require.resolve('v86/package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}
