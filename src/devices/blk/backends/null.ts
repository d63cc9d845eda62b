/**
 * QEMU's `null-co` block driver: a disk of a given size that stores nothing. Writes, flushes,
 * discards and write-zeroes succeed and change nothing; reads leave the buffer as it was, or fill
 * it with zeros with `readZeroes` (`read-zeroes=on`, what QEMU's own qtests use; with a latency,
 * the device reads through a zeroed bounce buffer, so such reads give zeros either way). `latencyNs`
 * (QEMU's `latency-ns`) completes every operation that long after it started, in wall-clock time
 * as QEMU's QEMU_CLOCK_REALTIME timer does: requests then stay in flight, which is how tests get
 * I/O in flight across a migration or a reset.
 */
import type { BlockBackend, BlockResult } from '../backend.js';

export interface NullBlockBackendOptions {
  /** Bytes (QEMU's default is 1 GiB). */
  size?: number;
  readZeroes?: boolean;
  latencyNs?: number;
  readOnly?: boolean;
}

export const NULL_CO_DEFAULT_SIZE = 1 << 30;

export class NullBlockBackend implements BlockBackend {
  readonly size: number;
  readonly readOnly: boolean;
  readonly synchronous: boolean;
  readonly readZeroes: boolean;
  readonly latencyNs: number;
  /** Operations started, for tests. */
  ops = 0;

  constructor(opts: NullBlockBackendOptions = {}) {
    const size = opts.size ?? NULL_CO_DEFAULT_SIZE;
    if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`bad null-co size ${size}`);
    const latency = opts.latencyNs ?? 0;
    if (!Number.isSafeInteger(latency) || latency < 0) throw new RangeError(`bad null-co latency ${latency}`);
    this.size = size;
    this.readZeroes = opts.readZeroes ?? false;
    this.latencyNs = latency;
    this.readOnly = opts.readOnly ?? false;
    this.synchronous = latency === 0;
  }

  private done(): BlockResult {
    this.ops++;
    if (this.latencyNs === 0) return undefined;
    const ms = this.latencyNs / 1e6;
    return new Promise<void>((resolve) => setTimeout(resolve, ms));
  }

  read(_offset: number, dst: Uint8Array): BlockResult {
    if (this.readZeroes) dst.fill(0);
    return this.done();
  }
  write(): BlockResult {
    return this.done();
  }
  flush(): BlockResult {
    return this.done();
  }
  discard(): BlockResult {
    return this.done();
  }
  writeZeroes(): BlockResult {
    return this.done();
  }
  readSync(_offset: number, dst: Uint8Array): boolean {
    // QEMU's guess reads sector 0 into a stack buffer that null-co without read-zeroes leaves
    // as it was; no MBR signature is found either way.
    dst.fill(0);
    return true;
  }
}
