// The timed loops. Each case has its own device loop (so the bench's own call sites stay
// monomorphic), and a "plain copy" loop that performs exactly the same payload copies with
// Uint8Array.set over the same guest addresses, with no virtqueue work at all.

import type { GuestMemory } from '../src/memory/guest-memory.js';
import { BATCH, BLK_DIRECT_CHAINS, PAGE, publishBatch, type CaseKind, type Rig } from './rig.js';

/** Host-side buffers the device copies to and from. */
export const host4k = new Uint8Array(PAGE);
export const host64 = new Uint8Array(64);
export const hostHdr = new Uint8Array(16);
export const hostStatus = new Uint8Array(1);
for (let i = 0; i < PAGE; i++) host4k[i] = (i * 7 + 3) & 0xff;
hostStatus[0] = 0; // VIRTIO_BLK_S_OK

function broken(rig: Rig): never {
  throw new Error(`${rig.kind}: pop returned null (${rig.dev.lastError ?? 'queue empty'})`);
}

// (1) one 4 KiB device-readable descriptor, copied out.
export function runOut4k(rig: Rig, batches: number): void {
  const vq = rig.vq;
  const buf = host4k;
  for (let b = 0; b < batches; b++) {
    publishBatch(rig);
    for (let k = 0; k < BATCH; k++) {
      const e = vq.pop();
      if (e === null) broken(rig);
      e.readOut(0, buf);
      vq.push(e, 0);
    }
  }
}

// (2) one 4 KiB device-writable descriptor, written in.
export function runIn4k(rig: Rig, batches: number): void {
  const vq = rig.vq;
  const buf = host4k;
  for (let b = 0; b < batches; b++) {
    publishBatch(rig);
    for (let k = 0; k < BATCH; k++) {
      const e = vq.pop();
      if (e === null) broken(rig);
      const n = e.writeIn(0, buf);
      vq.push(e, n);
    }
  }
}

// (3) one 64-byte readable descriptor, copied out.
export function runOut64(rig: Rig, batches: number): void {
  const vq = rig.vq;
  const buf = host64;
  for (let b = 0; b < batches; b++) {
    publishBatch(rig);
    for (let k = 0; k < BATCH; k++) {
      const e = vq.pop();
      if (e === null) broken(rig);
      e.readOut(0, buf);
      vq.push(e, 0);
    }
  }
}

// (4)/(5) virtio-blk read request: header out (16 B), data in (4 KiB), status in (1 B).
export function runBlk(rig: Rig, batches: number): void {
  const vq = rig.vq;
  const hdr = hostHdr;
  const data = host4k;
  const status = hostStatus;
  for (let b = 0; b < batches; b++) {
    publishBatch(rig);
    for (let k = 0; k < BATCH; k++) {
      const e = vq.pop();
      if (e === null) broken(rig);
      e.readOut(0, hdr);
      const n = e.writeIn(0, data);
      const s = e.writeIn(n, status);
      vq.push(e, n + s);
    }
  }
}
// A second copy of the same loop, so the indirect case gets its own call-site feedback.
export function runBlkIndirect(rig: Rig, batches: number): void {
  const vq = rig.vq;
  const hdr = hostHdr;
  const data = host4k;
  const status = hostStatus;
  for (let b = 0; b < batches; b++) {
    publishBatch(rig);
    for (let k = 0; k < BATCH; k++) {
      const e = vq.pop();
      if (e === null) broken(rig);
      e.readOut(0, hdr);
      const n = e.writeIn(0, data);
      const s = e.writeIn(n, status);
      vq.push(e, n + s);
    }
  }
}

export const deviceLoops: Record<CaseKind, (rig: Rig, batches: number) => void> = {
  out4k: runOut4k,
  in4k: runIn4k,
  out64: runOut64,
  blk: runBlk,
  blkIndirect: runBlkIndirect,
};

// ------------------------------------------------------------------------------------------
// Plain copies: the same bytes moved between the same guest addresses and host buffers, as
// bare Uint8Array.set calls on views prepared in advance (so no allocation is timed).

export interface PlainCopy {
  label: string;
  run(batches: number): void;
}

function views(mem: GuestMemory, base: number, stride: number, len: number, count: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < BATCH; i++) out.push(mem.view(base + (i % count) * stride, len)!);
  return out;
}

/** guest → host, `len` bytes per op, over the given guest buffers. */
export function plainOut(label: string, src: Uint8Array[], dst: Uint8Array): PlainCopy {
  return {
    label,
    run(batches: number): void {
      for (let b = 0; b < batches; b++) {
        for (let k = 0; k < BATCH; k++) dst.set(src[k]!, 0);
      }
    },
  };
}

/** host → guest. */
export function plainIn(label: string, src: Uint8Array, dst: Uint8Array[]): PlainCopy {
  return {
    label,
    run(batches: number): void {
      for (let b = 0; b < batches; b++) {
        for (let k = 0; k < BATCH; k++) dst[k]!.set(src, 0);
      }
    },
  };
}

/**
 * The payload copies each case performs, as plain sets over that case's own guest buffers.
 * For the blk cases there are three per chain; each is measured separately and summed.
 */
export function plainCopiesFor(rig: Rig): PlainCopy[] {
  const L = rig.layout;
  const mem = rig.mem;
  switch (rig.kind) {
    case 'out4k':
      return [plainOut('4 KiB set guest→host', views(mem, L.data, PAGE, PAGE, BATCH), host4k)];
    case 'in4k':
      return [plainIn('4 KiB set host→guest', host4k, views(mem, L.data, PAGE, PAGE, BATCH))];
    case 'out64':
      return [plainOut('64 B set guest→host', views(mem, L.data, 64, 64, BATCH), host64)];
    case 'blk':
    case 'blkIndirect': {
      const n = rig.kind === 'blk' ? BLK_DIRECT_CHAINS : BATCH;
      return [
        plainOut('16 B set guest→host', views(mem, L.hdr, 16, 16, n), hostHdr),
        plainIn('4 KiB set host→guest', host4k, views(mem, L.data, PAGE, PAGE, n)),
        plainIn('1 B set host→guest', hostStatus, views(mem, L.status, 1, 1, n)),
      ];
    }
  }
}
