/**
 * Guest-side helper for virtio-net (VIRTIO 1.2 §5.1): post receive buffers, send frames behind a
 * zeroed virtio-net header, and collect received frames with their headers. Works on any
 * transport driver, over the device's receive queue 0 and transmit queue 1 (pair 0).
 *
 * The header length follows the negotiated features as the device computes it: 12 bytes with
 * VERSION_1 or MRG_RXBUF, else 10. With mergeable buffers a frame may span several receive
 * buffers (`num_buffers` in the header says how many); `receive` joins them.
 */
import type { GuestAllocator } from './alloc.js';
import { MachineError, type PollOptions } from './machine.js';
import { DriverError, type VirtioTransportDriver } from './virtio-driver.js';
import type { VringDriver } from './vring.js';

const VIRTIO_F_VERSION_1 = 32n;
const VIRTIO_NET_F_MRG_RXBUF = 15n;

export interface NetFrame {
  /** The virtio-net header as the device wrote it (10 or 12 bytes). */
  header: Uint8Array;
  /** The Ethernet frame. */
  frame: Uint8Array;
  /** Receive buffers the frame used (1 unless mergeable buffers joined several). */
  buffers: number;
}

export class NetDriver {
  /** Bytes of the virtio-net header on both queues. */
  readonly hdrLen: number;
  private readonly mergeable: boolean;
  /** Guest address and size of each posted receive buffer, by descriptor head. */
  private readonly rxBufs = new Map<number, { addr: number; len: number }>();

  constructor(
    readonly transport: VirtioTransportDriver,
    readonly rx: VringDriver,
    readonly tx: VringDriver,
    private readonly alloc: GuestAllocator,
  ) {
    const f = transport.features;
    this.mergeable = ((f >> VIRTIO_NET_F_MRG_RXBUF) & 1n) === 1n;
    this.hdrLen = this.mergeable || ((f >> VIRTIO_F_VERSION_1) & 1n) === 1n ? 12 : 10;
  }

  /** Post `count` receive buffers of `len` bytes each (header included) and notify. */
  async postRx(count: number, len = 1526): Promise<void> {
    if (!Number.isSafeInteger(count) || count < 1 || !Number.isSafeInteger(len) || len < this.hdrLen) throw new RangeError(`bad receive buffers: ${count} × ${len}`);
    for (let i = 0; i < count; i++) {
      const addr = this.alloc.alloc(len, 16);
      const head = await this.rx.add([{ addr, len, write: true }]);
      if (head < 0) throw new DriverError('receive ring has no free descriptors');
      this.rxBufs.set(head, { addr, len });
    }
    await this.transport.notify(0);
  }

  /** Send `frame` behind a zeroed header (no offloads), notify, wait until the device used it. */
  async send(frame: Uint8Array, opts: PollOptions = {}): Promise<void> {
    const m = this.transport.machine;
    const addr = this.alloc.alloc(this.hdrLen + frame.length, 16);
    const bytes = new Uint8Array(this.hdrLen + frame.length);
    bytes.set(frame, this.hdrLen);
    await m.writeBytes(addr, bytes);
    const head = await this.tx.add([{ addr, len: bytes.length }]);
    if (head < 0) throw new DriverError('transmit ring has no free descriptors');
    await this.transport.notify(1);
    const used = await this.tx.waitUsed(1, { what: `transmit of ${frame.length} bytes`, ...opts });
    if (used[0]?.id !== head) throw new MachineError(`transmit: used id ${used[0]?.id} is not the posted head ${head}`);
  }

  /** Used receive buffers taken from the ring but not yet returned as (part of) a frame. */
  private readonly taken: { len: number; addr: number; size: number }[] = [];

  /** The next used receive buffer, waiting (bounded) for one. */
  private async nextRx(what: string, opts: PollOptions): Promise<{ len: number; addr: number; size: number }> {
    if (this.taken.length === 0) {
      // waitUsed returns every entry used so far; each is matched to its buffer at once, since
      // its descriptor is free for the next postRx from then on.
      for (const e of await this.rx.waitUsed(1, { what, ...opts })) {
        const buf = this.rxBufs.get(e.id);
        if (!buf) throw new MachineError(`receive: used id ${e.id} is not a posted buffer`);
        this.rxBufs.delete(e.id);
        if (e.len > buf.len) throw new MachineError(`receive: used len ${e.len} overflows the ${buf.len}-byte buffer`);
        this.taken.push({ len: e.len, addr: buf.addr, size: buf.len });
      }
    }
    return this.taken.shift()!;
  }

  /**
   * Wait for `count` frames and return them in arrival order. Each receive buffer is consumed;
   * post more with `postRx` to keep receiving.
   */
  async receive(count = 1, opts: PollOptions = {}): Promise<NetFrame[]> {
    const m = this.transport.machine;
    const frames: NetFrame[] = [];
    while (frames.length < count) {
      const first = await this.nextRx(`received frame ${frames.length + 1} of ${count}`, opts);
      if (first.len < this.hdrLen) throw new MachineError(`receive: used len ${first.len} is shorter than the ${this.hdrLen}-byte header`);
      const head = await m.readBytes(first.addr, first.len);
      const header = head.slice(0, this.hdrLen);
      const parts = [head.subarray(this.hdrLen)];
      const n = this.mergeable ? header[10]! | (header[11]! << 8) : 1;
      if (n < 1) throw new MachineError(`receive: num_buffers ${n}`);
      for (let i = 1; i < n; i++) {
        const more = await this.nextRx(`buffer ${i + 1} of ${n} of a merged frame`, opts);
        parts.push(await m.readBytes(more.addr, more.len));
      }
      const frame = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
      let off = 0;
      for (const p of parts) {
        frame.set(p, off);
        off += p.length;
      }
      frames.push({ header, frame, buffers: n });
    }
    return frames;
  }
}
