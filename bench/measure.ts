// Timing and allocation measurement helpers.

import { performance } from 'node:perf_hooks';
import v8 from 'node:v8';
import { BATCH } from './rig.js';

/** Run `fn(batches)` for about `ms` milliseconds; returns the number of batches run. */
export function runFor(fn: (batches: number) => void, ms: number): number {
  let batches = 1;
  let total = 0;
  const t0 = performance.now();
  for (;;) {
    fn(batches);
    total += batches;
    const dt = performance.now() - t0;
    if (dt >= ms) return total;
    if (dt < ms / 8) batches *= 2;
  }
}

/** Batches that take about `ms` milliseconds (measured on an already warm function). */
export function calibrate(fn: (batches: number) => void, ms: number): number {
  let batches = 4;
  for (;;) {
    const t0 = performance.now();
    fn(batches);
    const dt = performance.now() - t0;
    if (dt >= 20) return Math.max(1, Math.round((batches * ms) / dt));
    batches *= 2;
  }
}

/** One timed run: ns per chain. */
export function timeRun(fn: (batches: number) => void, batches: number): number {
  const t0 = performance.now();
  fn(batches);
  const dt = performance.now() - t0;
  return (dt * 1e6) / (batches * BATCH);
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Bytes allocated on the V8 heap while running `fn(batches)`, per chain. gc() first, then the
 * used heap size before and after, plus whatever any GC during the window freed (from
 * v8.GCProfiler's before/after statistics), minus the cost of the measurement itself
 * (a run with 0 batches).
 */
export function allocPerChain(fn: (batches: number) => void, batches: number): { perChain: number; gcs: number } {
  const once = (n: number): { bytes: number; gcs: number } => {
    globalThis.gc!();
    const prof = new v8.GCProfiler();
    prof.start();
    const h0 = v8.getHeapStatistics().used_heap_size;
    fn(n);
    const h1 = v8.getHeapStatistics().used_heap_size;
    const res = prof.stop();
    let freed = 0;
    for (const s of res.statistics) freed += s.beforeGC.heapStatistics.usedHeapSize - s.afterGC.heapStatistics.usedHeapSize;
    return { bytes: h1 - h0 + freed, gcs: res.statistics.length };
  };
  // The empty window still allocates a little (the statistics object); background work (the
  // compiler, sweeping) adds noise to single windows: take the minimum of a few of each.
  let empty = Infinity;
  for (let i = 0; i < 5; i++) empty = Math.min(empty, once(0).bytes);
  let best = Infinity;
  let gcs = 0;
  for (let i = 0; i < 5; i++) {
    const r = once(batches);
    if (r.bytes < best) {
      best = r.bytes;
      gcs = r.gcs;
    }
  }
  return { perChain: Math.max(0, best - empty) / (batches * BATCH), gcs };
}
