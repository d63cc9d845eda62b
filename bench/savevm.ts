// Save/load benchmark. First one device: a virtio-rng-pci (modern, MSI-X) brought to DRIVER_OK,
// saved with saveVirtioDevice and loaded with loadVirtioDevice. Then a whole 16 MiB `pc` machine
// with three virtio-rng-pci devices (modern with MSI-X, legacy-only, modern without MSI-X), ours
// written with saveVm and read back with loadVm (and walked with parseSavevm), beside QEMU 7.2
// migrating the same machine (same command line, halt firmware, -nodefaults) to a file through
// `exec:cat`. Two RAM
// contents: all zero (a fresh guest: 4096 ZERO pages) and every page patterned (4096 PAGE
// records, the worst case). Nothing is asserted; figures are printed.
//
// QEMU's time is the wall time from sending `migrate` to `query-migrate` answering `completed`
// (polled every millisecond), so it includes QMP, spawning `sh -c cat`, and the pipe; QEMU's own
// `total-time` is printed beside it. Ours is in-process; "save+write" adds writing the bytes to
// a file, the closest like-for-like figure.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { commandAvailable, haltFirmware, launchQemu, type QemuProcess } from '../src/driver/qemu-launcher.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { parseQemuCommandLine } from '../src/machine/cmdline.js';
import type { PcMachine } from '../src/machine/pc.js';
import { buildMachine } from '../src/machine/qemu-machine.js';
import { loadVm, parseSavevm, saveVm } from '../src/migration/savevm.js';
import { loadVirtioDevice, saveVirtioDevice } from '../src/migration/virtio.js';
import { VirtIOPCIProxy } from '../src/bus/virtio-pci.js';
import { VirtIORng } from '../src/devices/rng.js';

const QEMU_COMMAND = [process.env['QEMU'] ?? 'qemu-system-x86_64'];
/** The devices of the whole-machine case, on both sides. */
const DEVICES = ['-device', 'virtio-rng-pci', '-device', 'virtio-rng-pci,disable-modern=on', '-device', 'virtio-rng-pci,vectors=0'];

function pcMachine(): PcMachine {
  const cl = parseQemuCommandLine(['-machine', 'pc', '-m', '16M', '-nodefaults', ...DEVICES]);
  return buildMachine(cl, { bios: haltFirmware() }).machine as PcMachine;
}
const RAM = 16 * 1024 * 1024;
/** pc.ram + pc.rom + pc.bios (64 KiB halt firmware). */
const RAM_TOTAL = RAM + 0x20000 + 0x10000;

export interface SavevmBenchOptions {
  quick?: boolean;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function time(fn: () => void): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

/**
 * Guest RAM patterned (no page all zero) except 0xa0000-0xfffff, which qtest cannot reach on
 * QEMU (the VGA hole and the ROM windows), so both sides migrate the same pages.
 */
function pattern(): Uint8Array {
  const b = new Uint8Array(RAM);
  let x = 0x12345678;
  for (let i = 0; i < RAM; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
    b[i + 1] = (x >>> 8) & 0xff;
    b[i + 2] = (x >>> 16) & 0xff;
    b[i + 3] = (x >>> 24) | 1;
  }
  b.fill(0, 0xa0000, 0x100000);
  return b;
}

interface OurFigures {
  save: number;
  saveWrite: number;
  load: number;
  parse: number;
  bytes: number;
  heapPerSave: number | undefined;
}

function ours(label: string, fill: Uint8Array | undefined, runs: number, dir: string): OurFigures {
  const m = pcMachine();
  if (fill) m.ramBlocks()[0]!.bytes.set(fill);
  const dst = pcMachine();
  const file = join(dir, `ours-${label}.mig`);
  const saves: number[] = [];
  const writes: number[] = [];
  const loads: number[] = [];
  const parses: number[] = [];
  let bytes = saveVm(m);
  for (let i = 0; i < 3; i++) loadVm(dst, saveVm(m)); // warm-up
  for (let i = 0; i < runs; i++) {
    saves.push(time(() => (bytes = saveVm(m))));
    writes.push(time(() => writeFileSync(file, saveVm(m))));
    loads.push(time(() => loadVm(dst, bytes)));
    parses.push(time(() => parseSavevm(bytes)));
  }
  if (firstDiff(dst.ramBlocks()[0]!.bytes, m.ramBlocks()[0]!.bytes)) throw new Error('bench: loaded RAM differs');
  let heapPerSave: number | undefined;
  const gc = (globalThis as { gc?: () => void }).gc;
  if (gc) {
    gc();
    const before = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    saveVm(m);
    const after = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    heapPerSave = after - before;
  }
  return { save: median(saves), saveWrite: median(writes), load: median(loads), parse: median(parses), bytes: bytes.length, heapPerSave };
}

function firstDiff(a: Uint8Array, b: Uint8Array): boolean {
  return !Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
}

interface QemuFigures {
  wall: number;
  totalTime: number;
  bytes: number;
  ourLoad: number;
}

async function qemuMigrate(p: QemuProcess, file: string): Promise<{ wall: number; totalTime: number }> {
  const t0 = performance.now();
  await p.qmp!.execute('migrate', { uri: `exec:cat > '${file}'` });
  for (;;) {
    const r = (await p.qmp!.execute('query-migrate')) as { status: string; 'total-time'?: number };
    if (r.status === 'completed') return { wall: performance.now() - t0, totalTime: r['total-time'] ?? NaN };
    if (r.status === 'failed' || r.status === 'cancelled') throw new Error(`QEMU migration ${r.status}`);
    if (performance.now() - t0 > 30_000) throw new Error('QEMU migration did not complete within 30 s');
    await new Promise((r) => setTimeout(r, 1));
  }
}

async function qemu(fill: Uint8Array | undefined, runs: number, dir: string): Promise<QemuFigures> {
  const p = await launchQemu({ command: QEMU_COMMAND, machine: 'pc', memory: '16M', name: 'qemu', args: DEVICES });
  try {
    if (fill) {
      await p.machine.writeBytes(0, fill.subarray(0, 0xa0000));
      await p.machine.writeBytes(0x100000, fill.subarray(0x100000));
    }
    const walls: number[] = [];
    const totals: number[] = [];
    let last = '';
    for (let i = 0; i < runs + 1; i++) {
      const file = join(dir, `qemu-${i}.mig`);
      const r = await qemuMigrate(p, file);
      // The source ends in postmigrate; resume it so that every run migrates a running guest.
      await p.qmp!.execute('cont');
      if (i === 0) continue; // warm-up
      walls.push(r.wall);
      totals.push(r.totalTime);
      last = file;
    }
    const stream = new Uint8Array(readFileSync(last));
    const dst = pcMachine();
    const loads: number[] = [];
    for (let i = 0; i < 3; i++) loadVm(dst, stream); // warm-up
    for (let i = 0; i < runs; i++) loads.push(time(() => loadVm(dst, stream)));
    return { wall: median(walls), totalTime: median(totals), bytes: stream.length, ourLoad: median(loads) };
  } finally {
    await p.close();
  }
}

/** One virtio-rng-pci (modern, MSI-X, queue 0 set up, DRIVER_OK): save and load of its blob, µs. */
function oneDevice(runs: number): { save: number; load: number; bytes: number } {
  const make = () => {
    const memory = GuestMemory.ofSize(1 << 20);
    const rng = new VirtIORng({ memory });
    const proxy = new VirtIOPCIProxy(rng, {});
    return { rng, proxy, memory };
  };
  const src = make();
  src.proxy.vqs[0]!.num = 8;
  src.rng.setFeatures((1n << 32n) | (1n << 29n));
  src.rng.setStatus(0x0b);
  src.rng.vq[0]!.setRings(0x1000, 0x2000, 0x3000);
  src.rng.setStatus(0x0f);
  const dst = make();
  const blob = saveVirtioDevice(src.rng);
  const per = 200;
  const saves: number[] = [];
  const loads: number[] = [];
  for (let i = 0; i < 20; i++) loadVirtioDevice(dst.rng, saveVirtioDevice(src.rng)); // warm-up
  for (let r = 0; r < runs; r++) {
    saves.push((time(() => { for (let i = 0; i < per; i++) saveVirtioDevice(src.rng); }) * 1000) / per);
    loads.push((time(() => { for (let i = 0; i < per; i++) loadVirtioDevice(dst.rng, blob); }) * 1000) / per);
  }
  return { save: median(saves), load: median(loads), bytes: blob.length };
}

const f1 = (n: number) => n.toFixed(1);
const mbps = (bytes: number, ms: number) => `${((bytes / 1048576) / (ms / 1000)).toFixed(0)} MiB/s`;

export async function runSavevmBench(opts: SavevmBenchOptions = {}): Promise<void> {
  const runs = opts.quick ? 3 : 9;
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-savevm-bench-'));
  try {
    console.log('');
    const d = oneDevice(runs);
    console.log(`savevm: one device (virtio-rng-pci, modern, MSI-X, DRIVER_OK), median of ${runs} runs of 200`);
    console.log(`    ours  saveVirtioDevice ${f1(d.save)} µs, loadVirtioDevice ${f1(d.load)} µs (load/save ${(d.load / d.save).toFixed(2)}); blob ${d.bytes} bytes (28 KiB of it is virtio_pci/modern_state)`);
    console.log(`savevm: whole 16 MiB pc machine with 3 virtio-rng-pci (pc.ram 16 MiB + pc.rom 128 KiB + pc.bios 64 KiB), median of ${runs} runs`);
    const fill = pattern();
    const cases: [string, Uint8Array | undefined][] = [['zero RAM', undefined], ['patterned RAM', fill]];
    const haveQemu = commandAvailable(QEMU_COMMAND);
    for (const [label, data] of cases) {
      const o = ours(label.replace(' ', '-'), data, runs, dir);
      console.log(`  ${label}:`);
      console.log(`    ours  saveVm ${f1(o.save)} ms (${mbps(RAM_TOTAL, o.save)} of guest memory), save+write file ${f1(o.saveWrite)} ms, loadVm ${f1(o.load)} ms (load/save ${(o.load / o.save).toFixed(2)}), parseSavevm ${f1(o.parse)} ms; stream ${o.bytes} bytes${o.heapPerSave !== undefined ? `; ~${(o.heapPerSave / 1048576).toFixed(1)} MiB allocated per save (mostly the stream buffer)` : ''}`);
      if (!haveQemu) {
        console.log(`    QEMU  ${QEMU_COMMAND[0]} not installed: no comparison`);
        continue;
      }
      const q = await qemu(data, runs, dir);
      console.log(`    QEMU  migrate → completed ${f1(q.wall)} ms wall (QEMU's total-time ${f1(q.totalTime)} ms); stream ${q.bytes} bytes (with its /rom@ blocks and 30 device sections)`);
      console.log(`    ours  loadVm of that QEMU stream ${f1(q.ourLoad)} ms`);
      console.log(`    ratio ours save+write / QEMU wall: ${(o.saveWrite / q.wall).toFixed(2)}`);
    }
    console.log('  QEMU wall time includes QMP round trips, sh -c cat and the pipe; ours is in-process.');
    console.log(`  1-minute load average at the end: ${loadavg()[0]!.toFixed(2)} (other processes share the CPUs).`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
