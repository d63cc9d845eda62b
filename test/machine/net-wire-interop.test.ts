// A QEMU 7.2 machine and ours, each with a virtio-net NIC, connected back to back through QEMU's
// wire formats: `-netdev socket,udp=` (each side's localaddr is the other's udp=), `-netdev
// dgram`, and the length-prefixed TCP of `-netdev socket,listen=`/`connect=` and `-netdev
// stream`. Both are driven by the driver library over qtest: frames either one sends arrive
// intact at the other, in order, with the header each side's driver negotiated (10 or 12 bytes,
// mergeable buffers or not, on PCI and virtio-mmio).
import { createServer, type AddressInfo } from 'node:net';
import { createSocket } from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { poll, type Machine } from '../../src/driver/machine.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import type { VirtioTransportDriver } from '../../src/driver/virtio-driver.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import type { VringDriver } from '../../src/driver/vring.js';
import { bit } from '../../src/virtio/constants.js';
import { VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF } from '../../src/devices/net/constants.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { buildOurProgram } from '../oracle/support.js';

const MRG = bit(VIRTIO_NET_F_MRG_RXBUF);
const MAC = bit(VIRTIO_NET_F_MAC);

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const p = s.address().port;
  s.close();
  return p;
}
async function freeTcpPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const p = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return p;
}

interface Nic {
  proc: QemuProcess;
  m: Machine;
  drv: VirtioTransportDriver;
  rx: VringDriver;
  tx: VringDriver;
  hdr: number;
  alloc: GuestAllocator;
  /** Receive buffers by head. */
  bufs: Map<number, { addr: number; len: number }>;
}

async function openNic(command: readonly string[], netdev: string, opts: { pci: boolean; mode?: 'modern' | 'legacy'; features: bigint; rxBuf: number; name: string }): Promise<Nic> {
  const args = opts.pci
    ? ['-netdev', netdev, '-device', `virtio-net-pci,netdev=n0,romfile=,ioeventfd=off,addr=04.0${opts.mode === 'legacy' ? ',disable-modern=on' : ',disable-legacy=on'}`]
    : ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-netdev', netdev, '-device', 'virtio-net-device,netdev=n0'];
  const proc = await launchQemu({ command, machine: opts.pci ? 'pc' : 'microvm', args, name: opts.name });
  const m = proc.machine;
  const alloc = new GuestAllocator(0x10_0000, 0x100_0000);
  let drv: VirtioTransportDriver;
  if (opts.pci) {
    const pci = await new GuestPciBus(m).device(4);
    for (const b of await pci.listBars()) await pci.mapBar(b.index);
    drv = await VirtioPciDriver.open(pci, { mode: opts.mode ?? 'modern', alloc });
  } else {
    const d = new VirtioMmioDriver(m, MICROVM_MMIO_BASE + 0x200 * 23, { alloc });
    await d.probe();
    drv = d;
  }
  const f = await drv.init(opts.features);
  const rx = await drv.setupQueue(0, { num: 256 });
  const tx = await drv.setupQueue(1, { num: 256 });
  await drv.driverOk();
  const modern = (f & (1n << 32n)) !== 0n;
  const nic: Nic = { proc, m, drv, rx, tx, hdr: modern || (f & MRG) !== 0n ? 12 : 10, alloc, bufs: new Map() };
  for (let i = 0; i < 200; i++) await postRx(nic, opts.rxBuf);
  await drv.notify(0);
  return nic;
}

async function postRx(n: Nic, len: number): Promise<void> {
  const addr = n.alloc.alloc(len, 16);
  const head = await n.rx.add([{ addr, len, write: true }]);
  n.bufs.set(head, { addr, len });
}

function frame(i: number, len: number): Uint8Array {
  const f = new Uint8Array(len);
  f.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0, 0, (i >> 8) & 0xff, i & 0xff, 0x88, 0xb5], 0);
  for (let k = 14; k < len; k++) f[k] = (k * 7 + i) & 0xff;
  return f;
}

/** Send `frames` from `a`, one transmit chain each (header and frame in two descriptors), 50 at a time. */
async function send(a: Nic, all: Uint8Array[]): Promise<void> {
  for (let i = 0; i < all.length; i += 50) await sendBatch(a, all.slice(i, i + 50));
}

async function sendBatch(a: Nic, frames: Uint8Array[]): Promise<void> {
  for (const f of frames) {
    const h = a.alloc.alloc(a.hdr, 16);
    await a.m.memset(h, a.hdr, 0);
    const d = a.alloc.alloc(f.length, 16);
    await a.m.writeBytes(d, f);
    await a.tx.add([{ addr: h, len: a.hdr, write: false }, { addr: d, len: f.length, write: false }]);
  }
  await a.drv.notify(1);
  await a.tx.waitUsed(frames.length, { timeoutMs: 5000, what: 'transmit completions' });
}

/**
 * Collect `count` frames received by `b`: each packet's header checked (zeros, num_buffers as
 * the driver expects), mergeable packets reassembled from their buffers.
 */
async function receive(b: Nic, count: number, mergeable: boolean): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  const pendingUsed: { id: number; len: number }[] = [];
  await poll(
    b.m,
    async () => {
      pendingUsed.push(...(await b.rx.takeUsed()));
      while (pendingUsed.length > 0) {
        const first = pendingUsed[0]!;
        const buf = b.bufs.get(first.id)!;
        const head = await b.m.readBytes(buf.addr, Math.min(first.len, buf.len));
        expect([...head.subarray(0, 10)], 'header: no flags, no GSO').toEqual(new Array(10).fill(0));
        const nbuf = mergeable ? head[10]! | (head[11]! << 8) : 1;
        if (pendingUsed.length < nbuf) break;
        const parts = [head.subarray(b.hdr)];
        for (let k = 1; k < nbuf; k++) {
          const u = pendingUsed[k]!;
          const bb = b.bufs.get(u.id)!;
          parts.push(await b.m.readBytes(bb.addr, u.len));
        }
        pendingUsed.splice(0, nbuf);
        const total = parts.reduce((s, p) => s + p.length, 0);
        const f = new Uint8Array(total);
        let o = 0;
        for (const p of parts) {
          f.set(p, o);
          o += p.length;
        }
        out.push(f);
      }
      return out.length >= count;
    },
    { timeoutMs: 8000, what: `${count} frames` },
  );
  return out;
}

if (qemuOrPolicy('virtio-net wire interop with QEMU 7.2')) {
  let ours: string[] = [];
  let cleanup: (() => void) | undefined;
  beforeAll(async () => {
    const b = await buildOurProgram();
    cleanup = b.cleanup;
    ours = [process.execPath, b.program];
  }, 60_000);
  afterAll(() => cleanup?.());

  /** Sizes from the smallest frame to a full one, and (for mergeable receivers) larger buffers' worth. */
  const SIZES = [14, 60, 61, 100, 512, 1000, 1514, 1514, 9000, 64, 1400];

  const cases: { name: string; wires: () => Promise<[string, string]>; qemu: { pci: boolean; mode?: 'modern' | 'legacy'; features: bigint; rxBuf: number }; ours: { pci: boolean; mode?: 'modern' | 'legacy'; features: bigint; rxBuf: number } }[] = [
    {
      name: 'socket udp=: QEMU pci modern with mergeable 1024-byte buffers, ours pci legacy with 10-byte headers and 16 KiB buffers',
      wires: async () => {
        const [a, b] = [await freeUdpPort(), await freeUdpPort()];
        return [`socket,id=n0,udp=127.0.0.1:${b},localaddr=127.0.0.1:${a}`, `socket,id=n0,udp=127.0.0.1:${a},localaddr=127.0.0.1:${b}`];
      },
      qemu: { pci: true, mode: 'modern', features: MAC | MRG, rxBuf: 1024 },
      ours: { pci: true, mode: 'legacy', features: MAC, rxBuf: 16384 },
    },
    {
      name: 'dgram: QEMU pci legacy with mergeable 512-byte buffers, ours virtio-mmio v2 with 12-byte headers',
      wires: async () => {
        const [a, b] = [await freeUdpPort(), await freeUdpPort()];
        const d = (l: number, r: number) => `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${l},remote.type=inet,remote.host=127.0.0.1,remote.port=${r}`;
        return [d(a, b), d(b, a)];
      },
      qemu: { pci: true, mode: 'legacy', features: MAC | MRG, rxBuf: 512 },
      ours: { pci: false, features: MAC, rxBuf: 16384 },
    },
    {
      name: 'socket listen=/connect= (TCP, length-prefixed): ours listens, QEMU connects',
      wires: async () => {
        const p = await freeTcpPort();
        return [`socket,id=n0,connect=127.0.0.1:${p}`, `socket,id=n0,listen=127.0.0.1:${p}`];
      },
      qemu: { pci: true, mode: 'modern', features: MAC, rxBuf: 16384 },
      ours: { pci: true, mode: 'modern', features: MAC | MRG, rxBuf: 2048 },
    },
    {
      name: 'stream (TCP): QEMU listens, ours connects',
      wires: async () => {
        const p = await freeTcpPort();
        return [`stream,id=n0,server=on,addr.type=inet,addr.host=127.0.0.1,addr.port=${p}`, `stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=${p}`];
      },
      qemu: { pci: false, features: MAC | MRG, rxBuf: 1500 },
      ours: { pci: true, mode: 'legacy', features: MAC | MRG, rxBuf: 1500 },
    },
  ];

  describe('virtio-net: QEMU 7.2 and virtio-ts back to back on QEMU\'s wire formats', () => {
    for (const c of cases) {
      it(c.name, async () => {
        const [qn, on] = await c.wires();
        // The listening side first (QEMU's socket connect= is made once, at start-up).
        const listenerFirst = qn.includes('listen') || qn.includes('server=on');
        let q: Nic | undefined;
        let o: Nic | undefined;
        try {
          if (listenerFirst) {
            q = await openNic(QEMU_COMMAND, qn, { ...c.qemu, name: 'qemu' });
            o = await openNic(ours, on, { ...c.ours, name: 'virtio-ts-qemu' });
          } else {
            o = await openNic(ours, on, { ...c.ours, name: 'virtio-ts-qemu' });
            q = await openNic(QEMU_COMMAND, qn, { ...c.qemu, name: 'qemu' });
          }
          // Let a stream connect.
          await new Promise((r) => setTimeout(r, 200));
          const toOurs = SIZES.map((s, i) => frame(i, s));
          const toQemu = SIZES.map((s, i) => frame(100 + i, s));
          await send(q, toOurs);
          await send(o, toQemu);
          const gotOurs = await receive(o, toOurs.length, (c.ours.features & MRG) !== 0n);
          const gotQemu = await receive(q, toQemu.length, (c.qemu.features & MRG) !== 0n);
          expect(gotOurs.map((f) => Buffer.from(f).toString('hex')), 'frames QEMU sent, as ours received them').toEqual(toOurs.map((f) => Buffer.from(f).toString('hex')));
          expect(gotQemu.map((f) => Buffer.from(f).toString('hex')), 'frames ours sent, as QEMU received them').toEqual(toQemu.map((f) => Buffer.from(f).toString('hex')));
          // A burst of 150 small frames each way, in order.
          const burstQ = Array.from({ length: 150 }, (_, i) => frame(1000 + i, 60 + (i % 40)));
          const burstO = Array.from({ length: 150 }, (_, i) => frame(2000 + i, 60 + (i % 40)));
          await send(q, burstQ);
          await send(o, burstO);
          const bo = await receive(o, burstQ.length, (c.ours.features & MRG) !== 0n);
          const bq = await receive(q, burstO.length, (c.qemu.features & MRG) !== 0n);
          expect(bo.map((f) => f[11]! | (f[10]! << 8))).toEqual(burstQ.map((_, i) => (1000 + i) & 0xffff));
          expect(bq.map((f) => f[11]! | (f[10]! << 8))).toEqual(burstO.map((_, i) => (2000 + i) & 0xffff));
          expect(bo.every((f, i) => Buffer.from(f).equals(Buffer.from(burstQ[i]!)))).toBe(true);
          expect(bq.every((f, i) => Buffer.from(f).equals(Buffer.from(burstO[i]!)))).toBe(true);
        } finally {
          await q?.proc.close();
          await o?.proc.close();
        }
      }, 60_000);
    }
  });
}
