// virtio-net through the in-process hub, device side: frames per second and Gbit/s for 64-byte
// and 1500-byte frames, transmit (guest TX ring → NIC → hub → a sink), receive (a source → hub →
// NIC → guest RX ring, mergeable buffers) and guest to guest (one NIC's TX ring into another's RX
// ring through the hub). `BENCH_ONLY=net npm run bench`.
//
// The guest side is pre-built as in the ring bench: every descriptor and avail slot is written
// once and each batch re-publishes the ring by bumping avail.idx by 256 (one 16-bit store), then
// kicks the queue as the transport would (`queueNotify`). The used ring wraps. EVENT_IDX is
// negotiated with used_event left where no interrupt is due. Gbit/s counts the Ethernet frame
// (not the 12-byte virtio-net header). Beside each case: a bare Uint8Array.set of the same
// frame between the same guest buffers (one copy per frame: what any device must do at least).

import os from 'node:os';
import { VirtioMmioTransport } from '../src/bus/virtio-mmio.js';
import * as C from '../src/devices/net/constants.js';
import { NetHub } from '../src/devices/net/hub.js';
import { NetClient, sendPacket } from '../src/devices/net/net-client.js';
import { VirtIONet } from '../src/devices/net/virtio-net.js';
import { GuestMemory } from '../src/memory/guest-memory.js';
import {
  bit,
  VIRTIO_CONFIG_S_ACKNOWLEDGE,
  VIRTIO_CONFIG_S_DRIVER,
  VIRTIO_CONFIG_S_DRIVER_OK,
  VIRTIO_CONFIG_S_FEATURES_OK,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
} from '../src/virtio/constants.js';
import { VRING_DESC_F_WRITE, VRING_DESC_SIZE } from '../src/vring/constants.js';
import type { VirtQueue } from '../src/vring/virtqueue.js';
import { allocPerChain, calibrate, median, runFor, timeRun } from './measure.js';
import { BATCH, QUEUE_SIZE } from './rig.js';

const HDR = 12;
const RX_BUF = 2048;
const RAM = 64 << 20;

/** A hub port's far end that takes every frame (counts them). */
class Sink extends NetClient {
  frames = 0;
  bytes = 0;
  constructor() {
    super('callback', 'sink');
  }
  override receive(_buf: Uint8Array, _off: number, len: number): number {
    this.frames++;
    this.bytes += len;
    return len;
  }
}

/** A hub port's far end that sends frames into the hub. */
class Source extends NetClient {
  constructor() {
    super('callback', 'source');
  }
  override receive(_buf: Uint8Array, _off: number, len: number): number {
    return len;
  }
}

interface Ring {
  vq: VirtQueue;
  availView: DataView;
  availIdxOff: number;
  availIdx: number;
  /** Guest address of buffer i. */
  buf: (i: number) => number;
}

function writeDesc(mem: GuestMemory, at: number, addr: number, len: number, flags: number): void {
  mem.write32(at, addr >>> 0);
  mem.write32(at + 4, 0);
  mem.write32(at + 8, len >>> 0);
  mem.write16(at + 12, flags);
  mem.write16(at + 14, 0);
}

let nextBase = 0x100000;
/** Rings and 256 one-descriptor chains of `len` bytes for queue `vq`. */
function buildRing(mem: GuestMemory, vq: VirtQueue, len: number, write: boolean, fill?: (i: number, addr: number) => void): Ring {
  const base = nextBase;
  nextBase += 0x100000 + QUEUE_SIZE * RX_BUF;
  const desc = base;
  const avail = base + 0x1000;
  const used = base + 0x2000;
  const data = base + 0x10000;
  mem.fill(desc, 0x3000, 0);
  vq.setRings(desc, avail, used);
  const buf = (i: number) => data + i * RX_BUF;
  for (let i = 0; i < QUEUE_SIZE; i++) {
    writeDesc(mem, desc + VRING_DESC_SIZE * i, buf(i), len, write ? VRING_DESC_F_WRITE : 0);
    mem.write16(avail + 4 + 2 * i, i);
    fill?.(i, buf(i));
  }
  const r = mem.findRegion(avail, 4)!;
  return { vq, availView: r.view, availIdxOff: avail + 2 - r.base, availIdx: 0, buf };
}

function publish(r: Ring): void {
  r.availIdx = (r.availIdx + BATCH) & 0xffff;
  r.availView.setUint16(r.availIdxOff, r.availIdx, true);
}

function makeNic(mem: GuestMemory, hub: NetHub, mac: number): VirtIONet {
  const dev = new VirtIONet({ memory: mem, netdev: hub.addPort(), mac: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, mac]), rxQueueSize: QUEUE_SIZE, txQueueSize: QUEUE_SIZE });
  // A modern virtio-mmio transport offers VERSION_1 (the bench then drives the device directly).
  new VirtioMmioTransport(dev, { legacy: false, irq: () => undefined });
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
  if (!dev.setFeatures(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(C.VIRTIO_NET_F_MRG_RXBUF))) throw new Error('feature negotiation failed');
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK);
  return dev;
}

function driverOk(dev: VirtIONet): void {
  dev.setStatus(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
  if (dev.broken) throw new Error(`device broken: ${dev.lastError}`);
}

/** Frame i of `size` bytes: to NIC B's MAC, recognisable contents. */
function frameBytes(size: number, i: number): Uint8Array {
  const f = new Uint8Array(size);
  f.set([0x52, 0x54, 0, 0x12, 0x34, 0x57], 0);
  f.set([0x52, 0x54, 0, 0x12, 0x34, 0x56], 6);
  f[12] = 0x08;
  for (let k = 14; k < size; k++) f[k] = (k * 13 + i) & 0xff;
  return f;
}

type Kind = 'tx' | 'rx' | 'g2g';
interface NetCase {
  kind: Kind;
  size: number;
  title: string;
  /** Run `batches` × 256 frames. */
  run: (batches: number) => void;
  /** The same frame copies as bare Uint8Array.set. */
  copy: (batches: number) => void;
  verify: () => string[];
}

export function buildCase(mem: GuestMemory, kind: Kind, size: number): NetCase {
  const hub = new NetHub(0);
  const frames = Array.from({ length: QUEUE_SIZE }, (_, i) => frameBytes(size, i));
  let txNic: VirtIONet | undefined;
  let rxNic: VirtIONet | undefined;
  let txRing: Ring | undefined;
  let rxRing: Ring | undefined;
  const sink = new Sink();
  const source = new Source();
  if (kind === 'tx' || kind === 'g2g') {
    txNic = makeNic(mem, hub, 0x56);
    txRing = buildRing(mem, txNic.vq[1]!, HDR + size, false, (i, addr) => {
      mem.fill(addr, HDR, 0);
      mem.write(addr + HDR, frames[i]!);
    });
    driverOk(txNic);
  }
  if (kind === 'rx' || kind === 'g2g') {
    rxNic = makeNic(mem, hub, 0x57);
    rxRing = buildRing(mem, rxNic.vq[0]!, RX_BUF, true);
    driverOk(rxNic);
  }
  if (kind === 'tx') hub.addPort({ peer: sink });
  if (kind === 'rx') hub.addPort({ peer: source });
  const title = `${kind === 'tx' ? 'TX  guest → hub' : kind === 'rx' ? 'RX  hub → guest' : 'TX→RX guest → guest'} ${size} B`;

  const tx = txNic;
  const txR = txRing;
  const rxR = rxRing;
  let run: (batches: number) => void;
  if (kind === 'tx') {
    run = (batches) => {
      for (let b = 0; b < batches; b++) {
        publish(txR!);
        tx!.queueNotify(1);
      }
    };
  } else if (kind === 'rx') {
    // The source's frames are in host memory, one Uint8Array each (as an embedder's `send(frame)`
    // or a socket's datagram hands them over).
    run = (batches) => {
      for (let b = 0; b < batches; b++) {
        publish(rxR!);
        for (let k = 0; k < BATCH; k++) sendPacket(source, frames[k]!, 0, size);
      }
    };
  } else {
    run = (batches) => {
      for (let b = 0; b < batches; b++) {
        publish(rxR!);
        publish(txR!);
        tx!.queueNotify(1);
      }
    };
  }

  // The bare copy: the frame from where it is to where it goes, per frame.
  const srcR = mem.findRegion(txR ? txR.buf(0) : 0x100000, 4)!;
  const pool = new Uint8Array(QUEUE_SIZE * size);
  frames.forEach((f, i) => pool.set(f, i * size));
  const copyFrom = kind === 'rx' ? pool : srcR.bytes;
  const fromOff = (k: number) => (kind === 'rx' ? k * size : txR!.buf(k) + HDR - srcR.base);
  const dst = kind === 'tx' ? new Uint8Array(QUEUE_SIZE * size) : mem.findRegion(rxR!.buf(0), 4)!.bytes;
  const toOff = (k: number) => (kind === 'tx' ? k * size : rxR!.buf(k) + HDR - mem.findRegion(rxR!.buf(0), 4)!.base);
  const fromOffs = Int32Array.from({ length: QUEUE_SIZE }, (_, k) => fromOff(k));
  const toOffs = Int32Array.from({ length: QUEUE_SIZE }, (_, k) => toOff(k));
  const copy = (batches: number) => {
    for (let b = 0; b < batches; b++) {
      for (let k = 0; k < BATCH; k++) {
        const f = fromOffs[k]!;
        dst.set(copyFrom.subarray(f, f + size), toOffs[k]!);
      }
    }
  };

  const verify = (): string[] => {
    const problems: string[] = [];
    const sinkBefore = sink.frames;
    const rxBefore = rxNic?.stats.rxFrames ?? 0;
    const usedIdx = (vq: VirtQueue) => mem.read16(vq.used + 2);
    const rxUsedBefore = rxR ? usedIdx(rxR.vq) : 0;
    const txUsedBefore = txR ? usedIdx(txR.vq) : 0;
    if (rxR) mem.fill(rxR.buf(0), QUEUE_SIZE * RX_BUF, 0xee);
    run(1);
    if (txR && ((usedIdx(txR.vq) - txUsedBefore) & 0xffff) !== BATCH) problems.push(`${title}: TX used.idx moved by ${(usedIdx(txR.vq) - txUsedBefore) & 0xffff}`);
    if (kind === 'tx' && sink.frames - sinkBefore !== BATCH) problems.push(`${title}: sink got ${sink.frames - sinkBefore} frames`);
    if (rxR) {
      if (((usedIdx(rxR.vq) - rxUsedBefore) & 0xffff) !== BATCH) problems.push(`${title}: RX used.idx moved by ${(usedIdx(rxR.vq) - rxUsedBefore) & 0xffff}`);
      if (rxNic!.stats.rxFrames - rxBefore !== BATCH) problems.push(`${title}: NIC received ${rxNic!.stats.rxFrames - rxBefore}`);
      // Buffer i holds frame i behind a header with num_buffers 1.
      for (const i of [0, 1, QUEUE_SIZE - 1]) {
        const got = mem.view(rxR.buf(i), HDR + size)!;
        const want = new Uint8Array(HDR + size);
        want[10] = 1;
        want.set(frames[i]!, HDR);
        if (!got.every((x, j) => x === want[j])) problems.push(`${title}: RX buffer ${i} is not header + frame ${i}`);
        const slot = (usedIdx(rxR.vq) - BATCH + i) & (QUEUE_SIZE - 1);
        const len = mem.read32(rxR.vq.used + 4 + 8 * slot + 4);
        if (len !== HDR + size) problems.push(`${title}: used len ${len} for buffer ${i}`);
      }
    }
    for (const d of [txNic, rxNic]) if (d?.broken) problems.push(`${title}: device broken: ${d.lastError}`);
    if (rxNic && rxNic.rxQueued !== 0) problems.push(`${title}: ${rxNic.rxQueued} frames left waiting`);
    return problems;
  };
  return { kind, size, title, run, copy, verify };
}

export async function runNetBench(opts: { quick: boolean }): Promise<void> {
  const RUNS = opts.quick ? 3 : 9;
  const RUN_MS = opts.quick ? 30 : 150;
  const mem = GuestMemory.ofSize(RAM);
  const cases: NetCase[] = [];
  for (const kind of ['tx', 'rx', 'g2g'] as const) for (const size of [64, 1500]) cases.push(buildCase(mem, kind, size));

  console.log('');
  console.log(`virtio-net through the in-process hub (device side, guest side pre-built) — node ${process.version}, ${os.cpus()[0]?.model ?? 'unknown CPU'}`);
  console.log(`VERSION_1 + MRG_RXBUF + EVENT_IDX, 12-byte header, ${QUEUE_SIZE}-entry rings, RX buffers ${RX_BUF} B, ${BATCH} frames per batch, ${RUNS} runs × ~${RUN_MS} ms, median`);
  const problems = cases.flatMap((c) => c.verify());
  console.log(problems.length === 0 ? 'verification: ok (frames counted at the sink / in the RX ring, header + bytes of 3 buffers checked, used lens right)' : `verification FAILED:\n  ${problems.join('\n  ')}`);

  for (let r = 0; r < (opts.quick ? 2 : 4); r++) {
    for (const c of cases) {
      runFor(c.run, opts.quick ? 30 : 100);
      runFor(c.copy, opts.quick ? 10 : 30);
    }
  }
  const batches = cases.map((c) => calibrate(c.run, RUN_MS));
  const copyBatches = cases.map((c) => calibrate(c.copy, RUN_MS / 2));
  const samples: number[][] = cases.map(() => []);
  const copySamples: number[][] = cases.map(() => []);
  for (let r = 0; r < RUNS; r++) {
    cases.forEach((c, i) => {
      samples[i]!.push(timeRun(c.run, batches[i]!));
      copySamples[i]!.push(timeRun(c.copy, copyBatches[i]!));
    });
  }
  const allocs = typeof globalThis.gc === 'function' ? cases.map((c) => allocPerChain(c.run, 40)) : undefined;

  const pad = (s: string, n: number) => (s.length >= n ? s : s + ' '.repeat(n - s.length));
  const lpad = (s: string, n: number) => (s.length >= n ? s : ' '.repeat(n - s.length) + s);
  const widths = [26, 9, 10, 9, 10, 10, 11, 8, 6];
  const line = (cols: string[]) => cols.map((s, i) => (i === 0 ? pad(s, widths[i]!) : lpad(s, widths[i]!))).join(' ');
  console.log('');
  console.log(line(['case', 'ns/frame', 'Mpps', 'Gbit/s', 'copy ns', 'copy Gb/s', 'B/frame', 'target', 'met']));
  console.log('-'.repeat(widths.reduce((a, b) => a + b + 1, -1)));
  cases.forEach((c, i) => {
    const ns = median(samples[i]!);
    const cns = median(copySamples[i]!);
    const gbit = (c.size * 8) / ns;
    const a = allocs?.[i];
    const target = c.size === 64 ? '3 Mpps' : '10 Gb/s';
    const met = (c.size === 64 ? 1e3 / ns >= 3 : gbit >= 10) && (a === undefined || a.perChain < 1);
    console.log(
      line([c.title, ns.toFixed(1), (1e3 / ns).toFixed(2), gbit.toFixed(2), cns.toFixed(1), ((c.size * 8) / cns).toFixed(1), a === undefined ? 'n/a' : `${a.perChain.toFixed(2)}${a.gcs ? ` (${a.gcs}gc)` : ''}`, target, met ? 'yes' : 'NO']),
    );
  });
  console.log('');
  console.log('ns/frame: median over runs of the device side per frame (pop, header, hub, filter, copy, push, used.idx; the guest only bumps avail.idx).');
  console.log('Gbit/s: frame bytes × 8 / ns (the 12-byte header not counted); copy: a bare Uint8Array.set of the frame between the same buffers.');
  console.log('B/frame: V8 heap bytes allocated per frame (gc() before, 40 × 256 frames).');
  console.log('runs (ns/frame):');
  cases.forEach((c, i) => console.log(`  ${pad(c.title, 26)} ${samples[i]!.map((x) => x.toFixed(1)).join(' ')}`));
}
