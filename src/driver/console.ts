/**
 * Guest-side helpers for virtio-console (VIRTIO 1.2 §5.3), on any transport driver: queues whose
 * buffers are tracked by head (receive buffers the device fills, transmit buffers the driver
 * fills), the control queues with parsed messages, and the port queues. What Linux's
 * virtio_console driver does at probe (post control receive buffers, send DEVICE_READY, answer
 * PORT_ADD with PORT_READY, open ports) is left to the script, step by step, so that a scenario
 * can observe or break each step. Little-endian guests only (x86).
 */
import type { GuestAllocator } from './alloc.js';
import { MachineError, poll, type PollOptions } from './machine.js';
import { DriverError, type VirtioTransportDriver } from './virtio-driver.js';
import type { DriverBuffer, VringDriver } from './vring.js';

/** One control message as the guest sees it. `extra` is what follows the 8-byte header. */
export interface ControlMessage {
  id: number;
  event: number;
  value: number;
  extra: Uint8Array;
  /** used.len of the buffer it came in. */
  len: number;
}

/** A used entry with what the device wrote (writable buffers) or nothing (readable ones). */
export interface ConsoleUsed {
  head: number;
  len: number;
  /** The first `len` bytes of the chain's writable buffers (at most their size). */
  data: Uint8Array;
}

interface Posted {
  bufs: { addr: number; len: number; write: boolean }[];
}

/** Encode a control message (le32 id, le16 event, le16 value, then `extra`). */
export function encodeControl(id: number, event: number, value: number, extra: Uint8Array = new Uint8Array(0)): Uint8Array {
  const b = new Uint8Array(8 + extra.length);
  const v = new DataView(b.buffer);
  v.setUint32(0, id >>> 0, true);
  v.setUint16(4, event & 0xffff, true);
  v.setUint16(6, value & 0xffff, true);
  b.set(extra, 8);
  return b;
}

/** Decode what a control receive buffer holds (fewer than 8 bytes: the fields read as 0). */
export function parseControl(data: Uint8Array, len = data.length): ControlMessage {
  const h = new Uint8Array(8);
  h.set(data.subarray(0, Math.min(8, data.length)));
  const v = new DataView(h.buffer);
  return { id: v.getUint32(0, true), event: v.getUint16(4, true), value: v.getUint16(6, true), extra: data.slice(8), len };
}

/** A virtqueue whose buffers the driver allocates and tracks by head. */
export class ConsoleQueue {
  private readonly posted = new Map<number, Posted>();

  constructor(
    readonly transport: VirtioTransportDriver,
    readonly index: number,
    readonly ring: VringDriver,
    private readonly alloc: GuestAllocator,
  ) {}

  get machine() {
    return this.transport.machine;
  }

  /** Buffers posted and not used yet. */
  get outstanding(): number {
    return this.posted.size;
  }

  /** Guest memory of the buffers posted and not used yet. */
  postedBuffers(): { addr: number; len: number }[] {
    return [...this.posted.values()].flatMap((p) => p.bufs.map((b) => ({ addr: b.addr, len: b.len })));
  }

  /** Post `count` device-writable buffers of `len` bytes each (filled with `fill`). Returns the heads. */
  async postIn(len: number, count = 1, fill = 0): Promise<number[]> {
    const heads: number[] = [];
    for (let i = 0; i < count; i++) heads.push(await this.postChain([{ len, write: true }], fill));
    return heads;
  }

  /** Post one readable buffer holding `data`. Returns the head. */
  postOut(data: Uint8Array): Promise<number> {
    return this.postChain([{ data }]);
  }

  /**
   * Post one chain: readable pieces (`data`) and writable ones (`len`), in the order given, each
   * in fresh guest memory. `publish` false leaves it out of the avail ring (the caller publishes).
   */
  async postChain(pieces: readonly ({ data: Uint8Array } | { len: number; write: true })[], fill = 0, publish = true): Promise<number> {
    const bufs: Posted['bufs'] = [];
    const writes: Promise<void>[] = [];
    for (const p of pieces) {
      if ('data' in p) {
        const addr = this.alloc.alloc(Math.max(1, p.data.length), 16);
        if (p.data.length) writes.push(this.machine.writeBytes(addr, p.data));
        bufs.push({ addr, len: p.data.length, write: false });
      } else {
        const addr = this.alloc.alloc(Math.max(1, p.len), 16);
        if (p.len) writes.push(this.machine.memset(addr, p.len, fill));
        bufs.push({ addr, len: p.len, write: true });
      }
    }
    await Promise.all(writes);
    return this.add(bufs, publish);
  }

  /** Put already-placed buffers on the ring. */
  async add(bufs: Posted['bufs'], publish = true): Promise<number> {
    const dbs: DriverBuffer[] = bufs.map((b) => ({ addr: b.addr, len: b.len, write: b.write }));
    const head = await this.ring.add(dbs, { publish });
    if (head < 0) throw new DriverError(`queue ${this.index}: no free descriptors for ${bufs.length} buffers`);
    this.posted.set(head, { bufs });
    return head;
  }

  notify(): Promise<void> {
    return this.transport.notify(this.index);
  }

  /** Used entries since the last call, with the bytes written into writable buffers. */
  async take(): Promise<ConsoleUsed[]> {
    const used = await this.ring.takeUsed();
    const out: ConsoleUsed[] = [];
    for (const u of used) {
      const p = this.posted.get(u.id);
      this.posted.delete(u.id);
      let data: Uint8Array = new Uint8Array(0);
      if (p && u.len > 0) {
        const parts: Uint8Array[] = [];
        let left = u.len;
        for (const b of p.bufs) {
          if (!b.write || left <= 0) continue;
          const n = Math.min(left, b.len);
          if (n > 0) parts.push(await this.machine.readBytes(b.addr, n));
          left -= n;
        }
        data = concat(parts);
      }
      out.push({ head: u.id, len: u.len, data });
    }
    return out;
  }

  /** Poll (bounded) until `count` used entries came; returns them all. */
  async wait(count: number, opts: PollOptions = {}): Promise<ConsoleUsed[]> {
    const got: ConsoleUsed[] = [];
    await poll(
      this.machine,
      async () => {
        got.push(...(await this.take()));
        return got.length >= count;
      },
      { what: `${count} used entr${count === 1 ? 'y' : 'ies'} on queue ${this.index} (have ${got.length})`, ...opts },
    );
    return got;
  }

  /** Like `wait`, but returns what came within the bound instead of throwing. */
  async waitUpTo(count: number, opts: PollOptions = {}): Promise<ConsoleUsed[]> {
    const got: ConsoleUsed[] = [];
    try {
      await poll(
        this.machine,
        async () => {
          got.push(...(await this.take()));
          return got.length >= count;
        },
        opts,
      );
    } catch {
      /* the caller looks at how many came */
    }
    return got;
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The queue indices of port `id` (receive, transmit). */
export function consolePortQueues(id: number): { rx: number; tx: number } {
  return id === 0 ? { rx: 0, tx: 1 } : { rx: 2 + 2 * id, tx: 3 + 2 * id };
}

export interface ConsoleConfig {
  cols: number;
  rows: number;
  maxNrPorts: number;
  /** Present when the config space has the field (EMERG_WRITE offered). */
  emergWr?: number;
}

/** virtio-console from the driver's side: control and port queues over any transport. */
export class ConsoleDriver {
  controlRx: ConsoleQueue | undefined;
  controlTx: ConsoleQueue | undefined;
  readonly ports = new Map<number, { rx: ConsoleQueue; tx: ConsoleQueue }>();

  constructor(readonly transport: VirtioTransportDriver, readonly alloc: GuestAllocator) {}

  /** Set up queue `index` (size `num`, default the device's) and track its buffers. */
  async queue(index: number, num?: number): Promise<ConsoleQueue> {
    const ring = await this.transport.setupQueue(index, num !== undefined ? { num } : {});
    return new ConsoleQueue(this.transport, index, ring, this.alloc);
  }

  /** Set up the control queues (2 and 3) and post `rxBuffers` receive buffers of `bufLen` bytes. */
  async setupControl(opts: { rxBuffers?: number; bufLen?: number; num?: number; notify?: boolean } = {}): Promise<void> {
    this.controlRx = await this.queue(2, opts.num);
    this.controlTx = await this.queue(3, opts.num);
    const n = opts.rxBuffers ?? 8;
    if (n > 0) await this.controlRx.postIn(opts.bufLen ?? 64, n);
    if (n > 0 && (opts.notify ?? false)) await this.controlRx.notify();
  }

  /** Set up port `id`'s queues; post `rxBuffers` receive buffers of `bufLen` bytes (not notified). */
  async setupPort(id: number, opts: { rxBuffers?: number; bufLen?: number; num?: number } = {}): Promise<{ rx: ConsoleQueue; tx: ConsoleQueue }> {
    const q = consolePortQueues(id);
    const rx = await this.queue(q.rx, opts.num);
    const tx = await this.queue(q.tx, opts.num);
    const n = opts.rxBuffers ?? 0;
    if (n > 0) await rx.postIn(opts.bufLen ?? 64, n);
    const p = { rx, tx };
    this.ports.set(id, p);
    return p;
  }

  port(id: number): { rx: ConsoleQueue; tx: ConsoleQueue } {
    const p = this.ports.get(id);
    if (!p) throw new MachineError(`port ${id} is not set up`);
    return p;
  }

  /** Send a control message and wait (bounded) for the device to return its buffer. */
  async sendControl(id: number, event: number, value: number, opts: PollOptions & { extra?: Uint8Array; wait?: boolean } = {}): Promise<void> {
    const tx = this.controlTx;
    if (!tx) throw new MachineError('control queues are not set up');
    await tx.postOut(encodeControl(id, event, value, opts.extra));
    await tx.notify();
    if (opts.wait ?? true) await tx.wait(1, opts);
  }

  /**
   * Control messages the device sent since the last call (each parsed from its buffer); the
   * buffers are posted again (new ones of the same size) unless `repost` is false.
   */
  async takeControl(opts: { repost?: boolean; bufLen?: number } = {}): Promise<ControlMessage[]> {
    const rx = this.controlRx;
    if (!rx) throw new MachineError('control queues are not set up');
    const used = await rx.take();
    if (used.length && (opts.repost ?? true)) {
      await rx.postIn(opts.bufLen ?? 64, used.length);
      await rx.notify();
    }
    return used.map((u) => parseControl(u.data, u.len));
  }

  /** Wait (bounded) until `count` control messages came; returns those that came. */
  async waitControl(count: number, opts: PollOptions & { repost?: boolean; bufLen?: number; throwOnTimeout?: boolean } = {}): Promise<ControlMessage[]> {
    const got: ControlMessage[] = [];
    try {
      await poll(
        this.transport.machine,
        async () => {
          got.push(...(await this.takeControl(opts)));
          return got.length >= count;
        },
        { what: `${count} control messages (have ${got.length})`, ...opts },
      );
    } catch (e) {
      if (opts.throwOnTimeout ?? true) throw e;
    }
    return got;
  }

  /** The configuration space (cols, rows, max_nr_ports, and emerg_wr when present). */
  async readConfig(withEmergWr: boolean): Promise<ConsoleConfig> {
    const t = this.transport;
    const cfg: ConsoleConfig = { cols: await t.configRead(0, 2), rows: await t.configRead(2, 2), maxNrPorts: await t.configRead(4, 4) };
    if (withEmergWr) cfg.emergWr = await t.configRead(8, 4);
    return cfg;
  }

  /** Write `data` to port `id` in one readable buffer and notify; waits for the buffer back unless told. */
  async write(id: number, data: Uint8Array, opts: PollOptions & { wait?: boolean } = {}): Promise<number> {
    const { tx } = this.port(id);
    const head = await tx.postOut(data);
    await tx.notify();
    if (opts.wait ?? true) await tx.wait(1, opts);
    return head;
  }
}
