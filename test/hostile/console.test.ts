// Hostile guests of virtio-serial, in-process (hostile-guest-bugs.md G-console), where the oracle
// cannot look: host memory stays bounded while a guest never reads, a 4 GiB transmit chain costs
// no copy and no allocation proportional to it, control buffers that are huge or tiny, and a
// broken device takes no more input.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MemoryChardev, NullChardev } from '../../src/devices/console/chardev.js';
import { SocketChardev } from '../../src/devices/console/backends/node.js';
import { VIRTIO_CONSOLE_PORT_ADD as PORT_ADD, VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN } from '../../src/devices/console/constants.js';
import { encodeControl } from '../../src/driver/console.js';
import { VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_CONFIG_S_NEEDS_RESET, bit } from '../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT } from '../../src/vring/constants.js';
import { HostSocket } from '../support/host-socket.js';
import { bringUp, consoleRig, dec, enc, probe } from '../support/console-rig.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('virtio-serial hostile guests (in-process)', () => {
  it('T-Gc5: a guest that never posts receive buffers: host input waits bounded, the peer is held back, nothing is lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vts-gc5-'));
    try {
      const chr = await SocketChardev.listen('c1', { path: join(dir, 'c1.sock'), inputLimit: 64 * 1024 });
      const r = await consoleRig(['-chardev', 'socket,id=c1,path=x,server=on,wait=off', '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=c1,nr=1'], new Map([['c1', chr]]));
      await bringUp(r, [1]);
      const host = await HostSocket.connect(join(dir, 'c1.sock'));
      await sleep(20);
      await probe(r, [1]);
      const data = new Uint8Array(8 << 20).map((_, i) => (i * 131 + (i >> 16)) & 0xff);
      let flushed = false;
      void host.send(data).then(() => (flushed = true));
      let peak = 0;
      for (let i = 0; i < 50; i++) {
        await sleep(2);
        peak = Math.max(peak, chr.pendingInput);
      }
      // Bounded: the limit plus one socket read; the rest stays in the kernel and in the peer.
      expect(peak).toBeLessThanOrEqual(64 * 1024 + 64 * 1024);
      expect(flushed).toBe(false);
      expect(host.sock.writableLength).toBeGreaterThan(1 << 20);
      // The guest reads at last: every byte, in order.
      const rx = r.con.port(1).rx;
      const parts: Uint8Array[] = [];
      let total = 0;
      for (let round = 0; round < 400 && total < data.length; round++) {
        await rx.postIn(4096, 64);
        await rx.notify();
        await sleep(1);
        for (const u of await rx.take()) {
          parts.push(u.data);
          total += u.len;
        }
      }
      expect(total).toBe(data.length);
      expect(Buffer.concat(parts).equals(Buffer.from(data))).toBe(true);
      expect(flushed).toBe(true);
      await host.close();
      chr.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('a 4 GiB transmit chain to a slow chardev: throttled, output held to its limit, no copy of the chain', async () => {
    const slow = new MemoryChardev('c1', { outputLimit: 64 * 1024 });
    const r = await consoleRig(['-chardev', 'stdio,id=c1', '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=c1,nr=1'], new Map([['c1', slow]]));
    await r.drv.init(bit(VIRTIO_RING_F_INDIRECT_DESC) | 2n | (1n << 32n));
    await r.con.setupControl();
    await r.con.setupPort(1);
    await r.drv.driverOk();
    await probe(r, [1]);
    const tx = r.con.port(1).tx;
    const n = 290;
    const table = r.alloc.alloc(16 * n, 16);
    const t = new Uint8Array(16 * n);
    const dv = new DataView(t.buffer);
    for (let i = 0; i < n; i++) {
      dv.setBigUint64(16 * i, 0x10_0000n, true);
      dv.setUint32(16 * i + 8, 14 << 20, true);
      dv.setUint16(16 * i + 12, i < n - 1 ? 1 : 0, true);
      dv.setUint16(16 * i + 14, i + 1, true);
    }
    await r.m.writeBytes(table, t);
    await tx.ring.writeDesc(0, table, 16 * n, VRING_DESC_F_INDIRECT, 0);
    const heapBefore = process.memoryUsage().heapUsed;
    await tx.ring.publish(0);
    await tx.notify();
    const port = r.vser.findPortById(1)!;
    expect(port.throttled).toBe(true);
    expect(slow.outputPending).toBe(64 * 1024);
    // Drain a few times: each round moves at most the limit.
    for (let i = 0; i < 5; i++) {
      expect(slow.receive().length).toBe(64 * 1024);
      await sleep(0);
    }
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 << 20);
    expect(await tx.take()).toEqual([]);
    // A null chardev takes the whole chain at once, with views of guest RAM (no copy).
    const r2 = await consoleRig(['-chardev', 'null,id=n', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=n'], new Map([['n', new NullChardev('n')]]));
    await r2.drv.init(bit(VIRTIO_RING_F_INDIRECT_DESC) | 2n | (1n << 32n));
    await r2.con.setupPort(0);
    await r2.drv.driverOk();
    const tx0 = r2.con.port(0).tx;
    const table2 = r2.alloc.alloc(16 * n, 16);
    await r2.m.writeBytes(table2, t);
    await tx0.ring.writeDesc(0, table2, 16 * n, VRING_DESC_F_INDIRECT, 0);
    await tx0.ring.publish(0);
    const t0 = performance.now();
    await tx0.notify();
    expect(performance.now() - t0).toBeLessThan(2000);
    expect((await tx0.take()).map((u) => u.len)).toEqual([0]);
  });

  it('a 10 MiB control message is read for its 8-byte header only; 1-byte receive buffers take 1 byte each', async () => {
    const r = await consoleRig(['-device', 'virtio-serial-device', '-device', 'virtserialport,nr=1,name=p']);
    await r.drv.init(2n | (1n << 32n));
    await r.con.setupControl({ rxBuffers: 0 });
    await r.drv.driverOk();
    const big = new Uint8Array(10 << 20);
    big.set(encodeControl(0xffff_ffff, 0, 1));
    const tx = r.con.controlTx!;
    await tx.postChain([{ data: big.subarray(0, 5 << 20) }, { data: big.subarray(5 << 20) }]);
    const rx = r.con.controlRx!;
    await rx.postIn(1, 1, 0xee);
    await rx.notify();
    await tx.notify();
    expect((await tx.take()).map((u) => u.len)).toEqual([0]);
    const got = await rx.take();
    // PORT_ADD for port 1 into one byte: used.len says 1, the byte is the id's low byte.
    expect(got.map((u) => [u.len, [...u.data]])).toEqual([[1, [1]]]);
    expect(PORT_ADD).toBe(1);
  });

  it('a broken device takes no host input and writes nothing; a reset brings it back', async () => {
    const pipe = new MemoryChardev('c1');
    const r = await consoleRig(['-chardev', 'stdio,id=c1', '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=c1,nr=1'], new Map([['c1', pipe]]));
    await bringUp(r, [1]);
    await probe(r, [1]);
    const rx = r.con.port(1).rx;
    await rx.postIn(64, 1);
    // avail.idx further ahead than the ring is long: the device breaks when it looks.
    await rx.ring.setAvailIdx(rx.ring.availIdx + rx.ring.num + 5);
    pipe.send('held');
    expect((await r.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(pipe.pendingInput).toBe(4);
    expect(await rx.take().catch(() => [])).toEqual([]);
    await r.drv.reset();
    await bringUp(r, [1]);
    await probe(r, [1]);
    const rx2 = r.con.port(1).rx;
    await rx2.postIn(64, 1);
    await rx2.notify();
    expect((await rx2.take()).map((u) => dec(u.data))).toEqual(['held']);
    await r.con.write(1, enc('ok'));
    expect(pipe.receiveText()).toBe('ok');
    expect(PORT_OPEN).toBe(6);
  });
});
