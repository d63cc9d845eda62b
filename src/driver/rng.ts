/**
 * Guest-side helper for virtio-rng (VIRTIO 1.2 §5.4): post a device-writable buffer, notify,
 * wait for the used entry and read what the device wrote. Works on any transport driver.
 */
import type { GuestAllocator } from './alloc.js';
import { MachineError, type PollOptions } from './machine.js';
import { DriverError, type VirtioTransportDriver } from './virtio-driver.js';
import type { VringDriver } from './vring.js';

export interface RngResult {
  /** Descriptor head the request used. */
  head: number;
  /** used.len: how many bytes the device wrote. */
  len: number;
  /** The first `len` bytes of the buffer. */
  bytes: Uint8Array;
}

export class RngDriver {
  constructor(
    readonly transport: VirtioTransportDriver,
    readonly ring: VringDriver,
    readonly queueIndex = 0,
  ) {}

  /**
   * Request `n` bytes into a buffer at `addr` (default: fresh memory from `alloc` or the
   * transport's allocator), notify, wait for completion (bounded) and return them.
   */
  async request(n: number, opts: PollOptions & { addr?: number; alloc?: GuestAllocator; clear?: boolean } = {}): Promise<RngResult> {
    if (!Number.isSafeInteger(n) || n <= 0) throw new RangeError(`bad request size ${n}`);
    let addr = opts.addr;
    if (addr === undefined) {
      const alloc = opts.alloc ?? this.transport.alloc;
      if (!alloc) throw new DriverError('rng request needs an address or an allocator');
      addr = alloc.alloc(n, 16);
    }
    const m = this.transport.machine;
    if (opts.clear ?? true) await m.memset(addr, n, 0);
    const head = await this.ring.add([{ addr, len: n, write: true }]);
    if (head < 0) throw new DriverError('rng ring has no free descriptors');
    await this.transport.notify(this.queueIndex);
    const used = await this.ring.waitUsed(1, { what: `rng request of ${n} bytes`, ...opts });
    if (used.length !== 1) throw new MachineError(`expected one used entry, got ${used.length}`);
    const e = used[0]!;
    if (e.id !== head) throw new MachineError(`used id ${e.id} is not the posted head ${head}`);
    if (e.len > n) throw new MachineError(`used len ${e.len} exceeds the ${n}-byte buffer`);
    const bytes = e.len > 0 ? await m.readBytes(addr, e.len) : new Uint8Array(0);
    return { head, len: e.len, bytes };
  }
}
