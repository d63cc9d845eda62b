/**
 * The test's end of a NIC's UDP backend (Node-only): `@NET:name@` in an oracle machine's
 * arguments becomes `udp=127.0.0.1:P,localaddr=127.0.0.1:L`, where P is a UDP socket this
 * module binds for the side (ephemeral port) and L a free port for the machine. A scenario sends
 * frames into the NIC through it and reads what the NIC sent.
 */
import { createSocket, type Socket } from 'node:dgram';
import type { OracleNetPeer } from './scenario.js';

const NET = /@NET:([A-Za-z0-9_]+)@/g;

/** Whether `args` name any `@NET:...@`. */
export function needsNetPeers(args: readonly string[]): boolean {
  return args.some((a) => a.includes('@NET:'));
}

class UdpPeer implements OracleNetPeer {
  private readonly got: Uint8Array[] = [];
  private waiters: (() => void)[] = [];

  constructor(private readonly sock: Socket, readonly port: number, readonly machinePort: number) {
    sock.on('message', (m) => {
      this.got.push(new Uint8Array(m));
      const w = this.waiters;
      this.waiters = [];
      for (const f of w) f();
    });
  }

  send(frame: Uint8Array): Promise<void> {
    return new Promise((resolve) => this.sock.send(frame, this.machinePort, '127.0.0.1', () => resolve()));
  }

  take(): Uint8Array[] {
    return this.got.splice(0);
  }

  async wait(count: number, timeoutMs = 2000): Promise<Uint8Array[]> {
    const deadline = performance.now() + timeoutMs;
    while (this.got.length < count) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return this.take();
  }

  async settle(ms = 30): Promise<void> {
    await new Promise((r) => setTimeout(r, ms));
  }

  close(): void {
    try {
      this.sock.close();
    } catch {
      /* closed */
    }
  }
}

async function bound(): Promise<Socket> {
  const s = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      s.off('error', reject);
      resolve();
    });
  });
  return s;
}

/**
 * Bind the peers `args` name and return the arguments with the placeholders replaced, the peers
 * by name, and their cleanup.
 */
export async function openNetPeers(args: readonly string[]): Promise<{ args: string[]; peers: Map<string, OracleNetPeer>; close: () => void }> {
  const peers = new Map<string, UdpPeer>();
  const names = new Set<string>();
  for (const a of args) for (const m of a.matchAll(NET)) names.add(m[1]!);
  try {
    for (const name of names) {
      const sock = await bound();
      // A free port for the machine's side: bound and released (the machine binds it next).
      const probe = await bound();
      const machinePort = probe.address().port;
      probe.close();
      peers.set(name, new UdpPeer(sock, sock.address().port, machinePort));
    }
  } catch (e) {
    for (const p of peers.values()) p.close();
    throw e;
  }
  const out = args.map((a) => a.replace(NET, (_, name: string) => {
    const p = peers.get(name)!;
    return `udp=127.0.0.1:${p.port},localaddr=127.0.0.1:${p.machinePort}`;
  }));
  return { args: out, peers, close: () => peers.forEach((p) => p.close()) };
}
