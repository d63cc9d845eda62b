/**
 * Character devices for virtio-serial ports (QEMU's `chardev/` seen from a device): a backend moves
 * bytes between a port and the host, a frontend (the port) says how much it can take. This file
 * holds the contract, a base class with the bounded input buffer, and the backends that need no
 * Node: null, an in-memory pipe and callbacks. Node streams, unix sockets and files are in
 * `backends/node.ts` (Node-only, exported from `virtio-ts/node`).
 *
 * Host to guest: the backend keeps what its source produced in a bounded buffer and hands it to
 * the frontend in reads of at most `min(canRead(), CHR_READ_BUF_LEN)` bytes, as QEMU's chardevs
 * do. While the guest has posted no receive buffer nothing moves; once the buffer holds
 * `inputLimit` bytes the source is paused (a Node stream) or refused (`write` returns less), so
 * host memory stays bounded and no byte is dropped.
 *
 * Guest to host: `write(data)` returns how many bytes the backend took. Fewer than offered means
 * "full for now": a generic port then holds the rest (QEMU's throttling) until `whenWritable`
 * fires. `data` is a view of guest RAM valid only during the call: a backend copies what it keeps.
 *
 * No Node imports here: part of the browser bundle.
 */

/** QEMU's CHR_READ_BUF_LEN: a chardev hands its frontend at most this much per read. */
export const CHR_READ_BUF_LEN = 4096;
/** Default bound of a backend's pending input and of the in-memory pipe's output. */
export const DEFAULT_CHARDEV_BUFFER = 64 * 1024;

export type CharEvent = 'opened' | 'closed';

/** The device side of a chardev (QEMU's frontend handlers `chr_can_read`, `chr_read`, `chr_event`). */
export interface CharFrontend {
  /** How many bytes the device can take now (0: none; the backend keeps its data). */
  canRead(): number;
  /** Bytes for the device, never more than `canRead()` said; returns how many it took. */
  read(data: Uint8Array): number;
  /** The host side connected or went away. */
  event(ev: CharEvent): void;
}

/** A chardev as a port sees it (QEMU's `CharBackend` API, `qemu_chr_fe_*`). */
export interface CharBackend {
  /** The chardev id (`-chardev ...,id=`), for traces and messages. */
  readonly id: string;
  /** QEMU's `be_open`: a peer is there (a socket client connected, a file opened). */
  readonly opened: boolean;
  /** Install (or with undefined, remove) the frontend; one at a time. */
  attach(fe: CharFrontend | undefined): void;
  /** The frontend currently attached. */
  readonly frontend: CharFrontend | undefined;
  /** Device output; returns the bytes taken (0..length). `data` is only valid during the call. */
  write(data: Uint8Array): number;
  /** The frontend may take input again: deliver what waits (QEMU's `qemu_chr_fe_accept_input`). */
  acceptInput(): void;
  /**
   * Call `cb` once, asynchronously, when the backend can take output again or has closed (QEMU's
   * `qemu_chr_fe_add_watch(G_IO_OUT | G_IO_HUP)`). Returns a function that cancels it.
   */
  whenWritable(cb: () => void): () => void;
  /** The guest opened or closed the port (QEMU's `qemu_chr_fe_set_open`); informational. */
  setFrontendOpen(open: boolean): void;
  /** Release host resources (sockets, files). Idempotent. */
  close(): void;
}

export interface ChardevOptions {
  /** Most input bytes held for the guest before the source is paused (default 64 KiB). */
  inputLimit?: number;
}

/**
 * What every backend shares: the bounded input buffer and its delivery to the frontend, the
 * opened state and its events, and the one-shot writable callbacks.
 */
export abstract class CharBackendBase implements CharBackend {
  readonly inputLimit: number;
  /** Frontend open state as the guest last set it (QEMU's `fe_open`). */
  frontendOpen = false;
  private fe: CharFrontend | undefined;
  private isOpen = false;
  private readonly chunks: Uint8Array[] = [];
  /** Offset into chunks[0] of the first byte not delivered yet. */
  private head = 0;
  private pending = 0;
  private delivering = false;
  private sourcePaused = false;
  private writableCbs: (() => void)[] = [];
  private writableScheduled = false;
  private drainCbs: (() => void)[] = [];
  protected closed = false;

  constructor(readonly id: string, opts: ChardevOptions = {}) {
    const limit = opts.inputLimit ?? DEFAULT_CHARDEV_BUFFER;
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`${id}: inputLimit must be a positive integer`);
    this.inputLimit = limit;
  }

  get opened(): boolean {
    return this.isOpen;
  }

  get frontend(): CharFrontend | undefined {
    return this.fe;
  }

  /** Bytes waiting for the guest. */
  get pendingInput(): number {
    return this.pending;
  }

  /** Room left in the input buffer. */
  get inputSpace(): number {
    return Math.max(0, this.inputLimit - this.pending);
  }

  attach(fe: CharFrontend | undefined): void {
    this.fe = fe;
    if (fe) this.deliver();
  }

  abstract write(data: Uint8Array): number;

  acceptInput(): void {
    this.deliver();
  }

  setFrontendOpen(open: boolean): void {
    this.frontendOpen = open;
  }

  whenWritable(cb: () => void): () => void {
    this.writableCbs.push(cb);
    return () => {
      const i = this.writableCbs.indexOf(cb);
      if (i >= 0) this.writableCbs.splice(i, 1);
    };
  }

  /** Call `cb` once everything queued for the guest has been delivered (at once if nothing waits). */
  onInputDrained(cb: () => void): void {
    if (this.pending === 0) cb();
    else this.drainCbs.push(cb);
  }

  close(): void {
    this.closed = true;
    this.setOpened(false);
    this.signalWritable();
  }

  // --- for subclasses ---------------------------------------------------------------------------

  /** The peer connected or went away: record it and tell the frontend (QEMU's `qemu_chr_be_event`). */
  protected setOpened(open: boolean): void {
    if (this.isOpen === open) return;
    this.isOpen = open;
    this.fe?.event(open ? 'opened' : 'closed');
  }

  /**
   * Queue input from a stream source (the whole chunk is kept: it is already in memory); pause
   * the source once `inputLimit` bytes wait. A source that is paused stops producing, so the
   * buffer stays within `inputLimit` plus one chunk.
   */
  protected enqueue(data: Uint8Array): void {
    if (data.length === 0) return;
    this.chunks.push(data.slice());
    this.pending += data.length;
    this.deliver();
    if (this.pending >= this.inputLimit && !this.sourcePaused) {
      this.sourcePaused = true;
      this.pauseSource();
    }
  }

  /**
   * Queue input from a caller that can hold on to what is refused (the pipe, callbacks): takes at
   * most the room left and returns how many bytes it took.
   */
  protected offer(data: Uint8Array): number {
    const n = Math.min(data.length, this.inputSpace);
    if (n > 0) {
      this.chunks.push(data.slice(0, n));
      this.pending += n;
      this.deliver();
    }
    return n;
  }

  /** Stop the source producing (a Node stream's `pause()`). */
  protected pauseSource(): void {}
  /** Let it produce again. */
  protected resumeSource(): void {}
  /** Input space became available (after `offer` refused some bytes). */
  protected inputSpaceAvailable(): void {}

  /** Output space became available: run the `whenWritable` callbacks, asynchronously. */
  protected signalWritable(): void {
    if (this.writableCbs.length === 0 || this.writableScheduled) return;
    this.writableScheduled = true;
    // Never call back into the port from inside its own write: the port may be mid-flush.
    queueMicrotask(() => {
      this.writableScheduled = false;
      const cbs = this.writableCbs;
      this.writableCbs = [];
      for (const cb of cbs) cb();
    });
  }

  /** Drop everything waiting for the guest (the peer went away and its data with it). */
  protected discardInput(): void {
    this.chunks.length = 0;
    this.head = 0;
    this.pending = 0;
    this.afterDelivery();
  }

  /**
   * Hand waiting input to the frontend in reads of at most `min(canRead(), CHR_READ_BUF_LEN)`
   * bytes, as QEMU's chardevs read from their source. Re-entry (the frontend calling
   * `acceptInput` from inside `read`) is folded into the running loop.
   */
  private deliver(): void {
    if (this.delivering) return;
    this.delivering = true;
    try {
      // Each turn either hands over at least one byte or stops, so the loop is bounded by the
      // bytes pending.
      while (this.pending > 0 && this.fe) {
        const can = this.fe.canRead();
        const n = Math.min(Number.isFinite(can) ? Math.max(0, Math.floor(can)) : 0, CHR_READ_BUF_LEN, this.pending);
        if (n <= 0) break;
        const buf = this.peek(n);
        const took = this.fe.read(buf);
        const t = Math.max(0, Math.min(n, Math.floor(took) || 0));
        this.consume(t);
        if (t < n) break;
      }
    } finally {
      this.delivering = false;
    }
    this.afterDelivery();
  }

  private afterDelivery(): void {
    if (this.sourcePaused && this.pending < this.inputLimit) {
      this.sourcePaused = false;
      this.resumeSource();
    }
    if (this.pending < this.inputLimit) this.inputSpaceAvailable();
    if (this.pending === 0 && this.drainCbs.length) {
      const cbs = this.drainCbs;
      this.drainCbs = [];
      for (const cb of cbs) cb();
    }
  }

  /** The next `n` pending bytes (a view when they lie in one chunk, else a copy). */
  private peek(n: number): Uint8Array {
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = new Uint8Array(n);
    let done = 0;
    let off = this.head;
    for (let i = 0; done < n; i++) {
      const c = this.chunks[i]!;
      const k = Math.min(c.length - off, n - done);
      out.set(c.subarray(off, off + k), done);
      done += k;
      off = 0;
    }
    return out;
  }

  private consume(n: number): void {
    this.pending -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      const left = c.length - this.head;
      if (n < left) {
        this.head += n;
        return;
      }
      n -= left;
      this.chunks.shift();
      this.head = 0;
    }
  }
}

/**
 * QEMU's `-chardev null`: swallows output, never produces input, and is never "opened" (so a
 * `virtserialport` on it stays closed to the guest, while a `virtconsole` opens regardless).
 */
export class NullChardev extends CharBackendBase {
  write(data: Uint8Array): number {
    return data.length;
  }
}

export interface MemoryChardevOptions extends ChardevOptions {
  /** Most output bytes held until the host reads them (default 64 KiB); beyond, the port throttles. */
  outputLimit?: number;
  /** Start connected (default true): a `virtserialport` sees PORT_OPEN at once. */
  opened?: boolean;
}

/**
 * An in-memory pipe: the host writes bytes for the guest with `send` and takes the guest's output
 * with `receive`. Both directions are bounded: `send` takes only what fits (the rest is the
 * caller's to retry after `onSpace`), and output beyond `outputLimit` throttles the port until
 * `receive` makes room.
 */
export class MemoryChardev extends CharBackendBase {
  readonly outputLimit: number;
  /** Called (synchronously) whenever output arrived. */
  onOutput: (() => void) | undefined;
  /** Called when `send` may take more after it refused bytes. */
  onSpace: (() => void) | undefined;
  private out: Uint8Array[] = [];
  private outBytes = 0;
  private refused = false;

  constructor(id = 'memory', opts: MemoryChardevOptions = {}) {
    super(id, opts);
    const limit = opts.outputLimit ?? DEFAULT_CHARDEV_BUFFER;
    if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`${id}: outputLimit must be a positive integer`);
    this.outputLimit = limit;
    if (opts.opened ?? true) this.setOpened(true);
  }

  /** Bytes of guest output not received yet. */
  get outputPending(): number {
    return this.outBytes;
  }

  /** Queue bytes for the guest; returns how many were taken (the rest did not fit). */
  send(data: Uint8Array | string): number {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const n = this.offer(bytes);
    if (n < bytes.length) this.refused = true;
    return n;
  }

  /** Take up to `max` bytes of guest output (all by default). */
  receive(max = Number.POSITIVE_INFINITY): Uint8Array {
    const n = Math.min(max, this.outBytes);
    const res = new Uint8Array(n);
    let done = 0;
    while (done < n) {
      const c = this.out[0]!;
      const k = Math.min(c.length, n - done);
      res.set(c.subarray(0, k), done);
      done += k;
      if (k === c.length) this.out.shift();
      else this.out[0] = c.subarray(k);
    }
    this.outBytes -= n;
    if (n > 0) this.signalWritable();
    return res;
  }

  /** Guest output so far as text (UTF-8), received. */
  receiveText(): string {
    return new TextDecoder().decode(this.receive());
  }

  /** Connect or disconnect the host end (a `virtserialport` sees PORT_OPEN 1 / 0). */
  setConnected(open: boolean): void {
    this.setOpened(open);
    if (!open) this.signalWritable();
  }

  write(data: Uint8Array): number {
    // A closed pipe has no reader: as a disconnected socket in QEMU, the bytes go nowhere.
    if (!this.opened) return data.length;
    const n = Math.min(data.length, Math.max(0, this.outputLimit - this.outBytes));
    if (n > 0) {
      this.out.push(data.slice(0, n));
      this.outBytes += n;
      this.onOutput?.();
    }
    return n;
  }

  protected override inputSpaceAvailable(): void {
    if (!this.refused) return;
    this.refused = false;
    this.onSpace?.();
  }
}

export interface CallbackChardevOptions extends ChardevOptions {
  /**
   * Guest output. Return how many bytes you took (fewer throttles the port until you call
   * `writable()`), or nothing for all of them. `data` is a view of guest RAM: copy what you keep.
   */
  output(data: Uint8Array): number | void;
  /** Called when `input` may take more after it refused bytes. */
  onSpace?: () => void;
  /** Start connected (default true). */
  opened?: boolean;
}

/** A chardev made of callbacks: `output` receives the guest's bytes, `input` feeds the guest. */
export class CallbackChardev extends CharBackendBase {
  private readonly out: (data: Uint8Array) => number | void;
  private readonly space: (() => void) | undefined;
  private refused = false;

  constructor(id: string, opts: CallbackChardevOptions) {
    super(id, opts);
    this.out = opts.output;
    this.space = opts.onSpace;
    if (opts.opened ?? true) this.setOpened(true);
  }

  /** Bytes for the guest; returns how many were taken (the rest did not fit: retry on `onSpace`). */
  input(data: Uint8Array | string): number {
    const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const n = this.offer(bytes);
    if (n < bytes.length) this.refused = true;
    return n;
  }

  /** After `output` took fewer bytes than offered: the sink can take more now. */
  writable(): void {
    this.signalWritable();
  }

  /** Connect or disconnect the host end. */
  setConnected(open: boolean): void {
    this.setOpened(open);
  }

  write(data: Uint8Array): number {
    if (!this.opened) return data.length;
    const r = this.out(data);
    if (r === undefined) return data.length;
    return Math.max(0, Math.min(data.length, Math.floor(r) || 0));
  }

  protected override inputSpaceAvailable(): void {
    if (!this.refused) return;
    this.refused = false;
    this.space?.();
  }
}
