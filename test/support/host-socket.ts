// The host end of a socket chardev (`-chardev socket,path=...,server=on,wait=off`), as a test
// sees it: connect (retrying until the machine listens), send bytes, collect what the guest
// wrote, pause reading so that the machine's writes back up. Every wait is bounded.
import { connect, type Socket } from 'node:net';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class HostSocket {
  private readonly chunks: Buffer[] = [];
  private bytes = 0;
  private closedFlag = false;
  private readonly closedP: Promise<void>;

  private constructor(readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
    });
    sock.on('error', () => undefined);
    this.closedP = new Promise((r) =>
      sock.once('close', () => {
        this.closedFlag = true;
        r();
      }),
    );
  }

  /** Connect to `path`, retrying (bounded) while the socket file does not exist yet. */
  static async connect(path: string, opts: { timeoutMs?: number; paused?: boolean } = {}): Promise<HostSocket> {
    const deadline = Date.now() + (opts.timeoutMs ?? 5000);
    for (;;) {
      try {
        const s = await new Promise<Socket>((resolve, reject) => {
          const c = connect({ path });
          c.once('connect', () => {
            c.removeAllListeners('error');
            resolve(c);
          });
          c.once('error', reject);
        });
        const h = new HostSocket(s);
        if (opts.paused) s.pause();
        return h;
      } catch (e) {
        if (Date.now() > deadline) throw e;
        await sleep(5);
      }
    }
  }

  /** Bytes received so far (not taken). */
  get available(): number {
    return this.bytes;
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Send bytes; resolves once Node handed them to the kernel. */
  send(data: Uint8Array | string): Promise<void> {
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : Buffer.from(data);
    return new Promise((resolve, reject) => this.sock.write(b, (e) => (e ? reject(e) : resolve())));
  }

  /** Take everything received so far. */
  take(): Uint8Array {
    const out = Buffer.concat(this.chunks);
    this.chunks.length = 0;
    this.bytes = 0;
    return new Uint8Array(out);
  }

  /** Wait (bounded) until at least `n` bytes came, then take them all (fewer on timeout). */
  async receive(n: number, timeoutMs = 2000): Promise<Uint8Array> {
    const deadline = Date.now() + timeoutMs;
    while (this.bytes < n && Date.now() < deadline && !this.closedFlag) await sleep(1);
    return this.take();
  }

  /** Wait `ms` and take whatever came (for "nothing must arrive" checks). */
  async settle(ms = 30): Promise<Uint8Array> {
    await sleep(ms);
    return this.take();
  }

  pause(): void {
    this.sock.pause();
  }

  resume(): void {
    this.sock.resume();
  }

  /** Close our end and wait (bounded) until the socket is gone. */
  async close(timeoutMs = 2000): Promise<void> {
    this.sock.end();
    this.sock.destroy();
    await Promise.race([this.closedP, sleep(timeoutMs)]);
  }
}
