// NetDriver (the guest side of virtio-net in the driver library) against our NIC in-process:
// frames both ways, and a frame that mergeable receive buffers split over three buffers joined
// back, on a legacy (10-byte header) and a version 1 (12-byte) device.
import { describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { NetDriver } from '../../src/driver/net.js';
import { VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { CallbackNetBackend } from '../../src/devices/net/backends/callback.js';
import { parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';

const MMIO_LAST = 0xfeb0_0000 + 0x200 * 23;
const MRG_RXBUF = 1n << 15n;

async function rig(legacy: boolean, features: bigint) {
  const sent: Uint8Array[] = [];
  const wire = new CallbackNetBackend({ onFrame: (f) => void sent.push(f.slice()) });
  const cl = parseQemuCommandLine([
    '-machine', 'microvm', '-m', '16M', '-nodefaults', ...(legacy ? [] : ['-global', 'virtio-mmio.force-legacy=false']),
    '-netdev', 'stream,id=n0,server=off,addr.type=unix,addr.path=x.sock', '-device', 'virtio-net-device,netdev=n0',
  ]);
  const built = buildMachine(cl, { netdevs: new Map([['n0', wire]]) });
  const m = new InProcessMachine(built.machine);
  const alloc = new GuestAllocator(0x10_0000, 0xf0_0000);
  const t = new VirtioMmioDriver(m, MMIO_LAST, { alloc });
  await t.probe();
  await t.init(features);
  const rx = await t.setupQueue(0, { num: 16 });
  const tx = await t.setupQueue(1, { num: 16 });
  await t.driverOk();
  return { net: new NetDriver(t, rx, tx, alloc), wire, sent };
}

const frameOf = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i < 6 ? 0xff : (i * 7 + seed) & 0xff));

describe('NetDriver', () => {
  for (const legacy of [true, false]) {
    it(`${legacy ? 'legacy: 10-byte' : 'version 1: 12-byte'} header; frames both ways byte for byte`, async () => {
      const { net, wire, sent } = await rig(legacy, 0n);
      expect(net.hdrLen).toBe(legacy ? 10 : 12);
      await net.postRx(2, 1600);
      const out = frameOf(60, 1);
      await net.send(out);
      expect(sent).toEqual([out]);
      const inFrame = frameOf(1514, 2);
      expect(wire.send(inFrame)).toBe('delivered');
      const [got] = await net.receive(1);
      expect(got!.frame).toEqual(inFrame);
      expect(got!.buffers).toBe(1);
      expect(Array.from(got!.header)).toEqual(new Array(net.hdrLen).fill(0));
    });
  }

  it('mergeable buffers: a 150-byte frame over three 64-byte buffers is joined, num_buffers 3', async () => {
    const { net, wire } = await rig(false, MRG_RXBUF);
    await net.postRx(4, 64);
    const f = frameOf(150, 3);
    expect(wire.send(f)).toBe('delivered');
    const [got] = await net.receive(1);
    expect(got!.buffers).toBe(3);
    expect(got!.header[10]).toBe(3);
    expect(got!.frame).toEqual(f);
  });
});
