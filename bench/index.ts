// Device-side virtqueue benchmark: pop + payload copy + push for a 256-entry split queue with
// EVENT_IDX (and INDIRECT_DESC) negotiated. Run with `npm run bench` (node --expose-gc).
//
// The guest side is pre-built: all descriptors and all 256 avail slots are written once, and
// each batch "re-publishes" the ring by bumping avail.idx by 256 (one 16-bit store per 256
// chains). The used ring simply keeps wrapping. Timed: the device loop only.
//
// Reported per case: median ns per chain over several runs, chains per second, the time the
// same payload copies take as bare Uint8Array.set calls over the same guest buffers, and the
// difference ("device-side overhead per chain"), plus V8 heap bytes allocated per chain.
//
// Then the qtest round-trip section (bench/qtest.ts): our virtio-ts-qemu beside QEMU 7.2.
// Then the whole-machine save/load section (bench/savevm.ts): ours beside QEMU 7.2's migration.
// Then virtio-blk on the in-memory backend (bench/blk.ts): 4 KiB random and 64 KiB sequential I/O.
// Then the start-up section (bench/startup.ts): start → ready and quit → exit of virtio-ts-qemu
// beside QEMU 7.2 and a bare `node -e 0`, and the scenario suite with one machine per scenario.
// Then virtio-net through the in-process hub (bench/net.ts): TX, RX and guest to guest.
// Then the v86 section (bench/v86.ts): guest-visible disk MB/s of our virtio-blk beside v86's IDE,
// and boot time with our devices against without, Linux in v86 (needs scripts/v86-inputs.mjs).
// BENCH_ONLY=ring, packed, blk, qtest, savevm, startup, net or v86 runs one section only.

import os from 'node:os';
import { GuestMemory } from '../src/memory/guest-memory.js';
import { deviceLoops, host4k, host64, hostHdr, hostStatus, plainCopiesFor, type PlainCopy } from './cases.js';
import { allocPerChain, calibrate, median, runFor, timeRun } from './measure.js';
import { runNetBench } from './net.js';
import { runQtestBench } from './qtest.js';
import { runSavevmBench } from './savevm.js';
import { runBlkBench } from './blk.js';
import { runPackedBench } from './packed.js';
import { runStartupBench } from './startup.js';
import { runV86Bench } from './v86.js';
import { BATCH, BLK_DIRECT_CHAINS, buildRig, PAGE, QUEUE_SIZE, RAM_SIZE, type CaseKind, type Rig } from './rig.js';

// BENCH_QUICK=1 shortens everything (for iterating on the code, not for reporting).
const QUICK = process.env['BENCH_QUICK'] === '1';
const RUNS = 9;
const RUN_MS = QUICK ? 30 : 150;
const WARMUP_ROUNDS = QUICK ? 2 : 4;
const WARMUP_MS = QUICK ? 40 : 100;
const ALLOC_BATCHES = 40;

const ONLY = process.env['BENCH_ONLY'];
if (ONLY !== undefined && ONLY !== '' && !['ring', 'packed', 'qtest', 'savevm', 'blk', 'startup', 'net', 'v86'].includes(ONLY)) {
  console.error(`BENCH_ONLY=${ONLY}: expected ring, packed, blk, qtest, savevm, startup, net or v86`);
  process.exit(2);
}
if (ONLY === 'v86') {
  await runV86Bench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'blk') {
  await runBlkBench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'qtest') {
  await runQtestBench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'packed') {
  await runPackedBench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'net') {
  await runNetBench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'savevm') {
  await runSavevmBench({ quick: QUICK });
  process.exit(0);
}
if (ONLY === 'startup') {
  await runStartupBench({ quick: QUICK });
  await runV86Bench({ quick: QUICK });
  process.exit(0);
}

interface CaseDef {
  kind: CaseKind;
  title: string;
  target: number;
}

const CASES: CaseDef[] = [
  { kind: 'out4k', title: '(1) 1×4 KiB R, readOut', target: 25 },
  { kind: 'in4k', title: '(2) 1×4 KiB W, writeIn', target: 25 },
  { kind: 'out64', title: '(3) 1×64 B R, readOut', target: 25 },
  { kind: 'blk', title: '(4) blk 16R+4KW+1W direct', target: 70 },
  { kind: 'blkIndirect', title: '(5) blk via 1 indirect', target: 70 },
];

if (typeof globalThis.gc !== 'function') {
  console.log('note: run with node --expose-gc for allocation figures');
}

const mem = GuestMemory.ofSize(RAM_SIZE);
// Recognisable guest contents, so the verification pass can check the copies.
{
  const all = mem.view(0, RAM_SIZE)!;
  for (let i = 0; i < all.length; i += 1) all[i] = (i * 31 + (i >>> 12)) & 0xff;
}

const rigs: Rig[] = CASES.map((c, i) => buildRig(mem, c.kind, i));
const fns = rigs.map((rig) => {
  const loop = deviceLoops[rig.kind];
  return (batches: number) => loop(rig, batches);
});
const plains: PlainCopy[][] = rigs.map((rig) => plainCopiesFor(rig));

// ------------------------------------------------------------------------------------------
// Verification (once, untimed): the loops really move the bytes and complete every chain.

function verify(): string[] {
  const problems: string[] = [];
  for (let c = 0; c < rigs.length; c++) {
    const rig = rigs[c]!;
    const L = rig.layout;
    const usedBefore = mem.read16(L.used + 2);
    host4k.fill(0);
    for (let i = 0; i < PAGE; i++) host4k[i] = (i * 7 + 3) & 0xff;
    fns[c]!(1);
    const usedAfter = mem.read16(L.used + 2);
    if (((usedAfter - usedBefore) & 0xffff) !== BATCH) problems.push(`${rig.kind}: used.idx moved by ${(usedAfter - usedBefore) & 0xffff}`);
    if (rig.dev.broken) problems.push(`${rig.kind}: device broken: ${rig.dev.lastError}`);
    if (rig.vq.inuse !== 0) problems.push(`${rig.kind}: ${rig.vq.inuse} elements still in use`);
    const lastSlot = (usedAfter - 1) & (QUEUE_SIZE - 1);
    const id = mem.read32(L.used + 4 + 8 * lastSlot);
    const len = mem.read32(L.used + 4 + 8 * lastSlot + 4);
    const lastHead = rig.kind === 'blk' ? 3 * ((BATCH - 1) % BLK_DIRECT_CHAINS) : BATCH - 1;
    const wantLen = rig.kind === 'in4k' ? PAGE : rig.kind.startsWith('blk') ? PAGE + 1 : 0;
    if (id !== lastHead || len !== wantLen) problems.push(`${rig.kind}: last used entry {${id}, ${len}}, want {${lastHead}, ${wantLen}}`);
    const g = (addr: number, n: number) => mem.view(addr, n)!;
    const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);
    switch (rig.kind) {
      case 'out4k':
        if (!same(host4k, g(L.data + (BATCH - 1) * PAGE, PAGE))) problems.push('out4k: host buffer != last guest page');
        break;
      case 'in4k':
        if (!same(host4k, g(L.data, PAGE)) || !same(host4k, g(L.data + (BATCH - 1) * PAGE, PAGE))) problems.push('in4k: guest pages != host buffer');
        break;
      case 'out64':
        if (!same(host64, g(L.data + (BATCH - 1) * 64, 64))) problems.push('out64: host buffer != last guest buffer');
        break;
      case 'blk':
      case 'blkIndirect': {
        const c2 = rig.kind === 'blk' ? (BATCH - 1) % BLK_DIRECT_CHAINS : BATCH - 1;
        if (!same(hostHdr, g(L.hdr + c2 * 16, 16))) problems.push(`${rig.kind}: header copy wrong`);
        if (!same(host4k, g(L.data + c2 * PAGE, PAGE))) problems.push(`${rig.kind}: data page not written`);
        if (mem.read8(L.status + c2) !== hostStatus[0]) problems.push(`${rig.kind}: status not written`);
        break;
      }
    }
  }
  return problems;
}

// ------------------------------------------------------------------------------------------

function fmt(x: number, digits = 1): string {
  return x.toFixed(digits);
}
function pad(s: string, n: number): string {
  return s.length >= n ? s : s + ' '.repeat(n - s.length);
}
function lpad(s: string, n: number): string {
  return s.length >= n ? s : ' '.repeat(n - s.length) + s;
}

const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`virtio-ts device-side virtqueue bench — node ${process.version}, ${cpu}, ${os.cpus().length} CPUs`);
console.log(`queue size ${QUEUE_SIZE}, EVENT_IDX + INDIRECT_DESC + VERSION_1, ${BATCH} chains per batch, ${RUNS} runs × ~${RUN_MS} ms per case, median reported`);
const loadAtStart = os.loadavg()[0]!;

const problems = verify();
console.log(problems.length === 0 ? 'verification: ok (bytes copied, used ring ids/lens right, device not broken)' : `verification FAILED:\n  ${problems.join('\n  ')}`);

// Warm-up, round-robin so the JIT sees every chain shape before the timed runs.
for (let r = 0; r < WARMUP_ROUNDS; r++) {
  for (let c = 0; c < rigs.length; c++) {
    runFor(fns[c]!, WARMUP_MS);
    for (const p of plains[c]!) runFor((b) => p.run(b), WARMUP_MS / 4);
  }
}

const devBatches = fns.map((f) => calibrate(f, RUN_MS));
const plainBatches = plains.map((ps) => ps.map((p) => calibrate((b) => p.run(b), RUN_MS / 2)));
const devSamples: number[][] = rigs.map(() => []);
const plainSamples: number[][][] = plains.map((ps) => ps.map(() => []));
for (let r = 0; r < RUNS; r++) {
  for (let c = 0; c < rigs.length; c++) {
    devSamples[c]!.push(timeRun(fns[c]!, devBatches[c]!));
    plains[c]!.forEach((p, j) => plainSamples[c]![j]!.push(timeRun((b) => p.run(b), plainBatches[c]![j]!)));
  }
}

const allocs = typeof globalThis.gc === 'function' ? fns.map((f) => allocPerChain(f, ALLOC_BATCHES)) : undefined;
// Calibration of the allocation probe: one 16-byte subarray per "chain" must show up.
let sink: Uint8Array | undefined;
const probe =
  typeof globalThis.gc === 'function'
    ? allocPerChain((batches) => {
        for (let b = 0; b < batches; b++) for (let k = 0; k < BATCH; k++) sink = host4k.subarray(k, k + 16);
      }, ALLOC_BATCHES)
    : undefined;
void sink;

// ------------------------------------------------------------------------------------------
// Tables

console.log('');
console.log('Plain copies (bare Uint8Array.set over the same guest buffers, median ns per op):');
const seen = new Set<string>();
for (let c = 0; c < rigs.length; c++) {
  plains[c]!.forEach((p, j) => {
    const key = `${p.label} [${rigs[c]!.kind}]`;
    if (seen.has(key)) return;
    seen.add(key);
    console.log(`  ${pad(p.label, 24)} ${pad(`(${rigs[c]!.kind} buffers)`, 22)} ${lpad(fmt(median(plainSamples[c]![j]!)), 7)} ns`);
  });
}

console.log('');
const header = ['case', 'ns/chain', 'chains/s', 'copy ns', 'overhead ns', 'target', 'met', 'alloc B/chain', 'min ovh'];
const widths = [28, 9, 12, 8, 12, 7, 4, 14, 8];
const line = (cols: string[]) => cols.map((s, i) => (i === 0 ? pad(s, widths[i]!) : lpad(s, widths[i]!))).join(' ');
console.log(line(header));
console.log('-'.repeat(widths.reduce((a, b) => a + b + 1, -1)));
for (let c = 0; c < rigs.length; c++) {
  const ns = median(devSamples[c]!);
  const copy = plainSamples[c]!.reduce((a, s) => a + median(s), 0);
  const over = ns - copy;
  const def = CASES[c]!;
  const a = allocs?.[c];
  console.log(
    line([
      def.title,
      fmt(ns),
      `${(1e9 / ns / 1e6).toFixed(2)} M`,
      fmt(copy),
      fmt(over),
      `≤ ${def.target}`,
      over <= def.target && (a === undefined || a.perChain < 1) ? 'yes' : 'NO',
      a === undefined ? 'n/a' : `${fmt(a.perChain, 2)}${a.gcs ? ` (${a.gcs} gc)` : ''}`,
      fmt(Math.min(...devSamples[c]!) - plainSamples[c]!.reduce((acc, s) => acc + Math.min(...s), 0)),
    ]),
  );
}
console.log('');
console.log('ns/chain: median over runs of pop + payload copies + push (avail.idx bump per 256 chains included).');
console.log('copy ns: sum of the plain-set times of the payload copies that case performs (blk: 16 B + 4 KiB + 1 B).');
console.log('overhead ns = ns/chain − copy ns (medians); min ovh = fastest run − fastest plain copies (less sensitive to other load).');
console.log(`1-minute load average: ${loadAtStart.toFixed(2)} at start, ${os.loadavg()[0]!.toFixed(2)} at end (other processes share the 2 CPUs).`);
console.log('runs (ns/chain):');
for (let c = 0; c < rigs.length; c++) {
  console.log(`  ${pad(CASES[c]!.title, 28)} ${devSamples[c]!.map((x) => fmt(x)).join(' ')}`);
}
if (probe) {
  console.log(
    `alloc probe: ${ALLOC_BATCHES * BATCH} chains per window, gc() before; a deliberate 16-byte subarray() per op reads ${fmt(probe.perChain, 1)} B/op (so the probe does see allocation).`,
  );
}

if (ONLY !== 'ring') {
  await runPackedBench({ quick: QUICK });
  await runBlkBench({ quick: QUICK });
  await runQtestBench({ quick: QUICK });
  await runSavevmBench({ quick: QUICK });
  await runStartupBench({ quick: QUICK });
  await runNetBench({ quick: QUICK });
  await runV86Bench({ quick: QUICK });
}
