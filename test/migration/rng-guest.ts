// Guest-side steps shared by the virtio-rng migration tests: post one request by hand in a ring
// the driver set up on another machine (the driver's own objects stay bound to the source), and
// kick queue 0 on either transport.
import { expect } from 'vitest';
import type { Machine } from '../../src/driver/machine.js';
import { GuestPciBus } from '../../src/driver/pci.js';

export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

/** The notify address of queue 0 from a modern device's configuration (its BAR + notify cap). */
export async function pciNotifyAddr(m: Machine, devfn: number): Promise<number> {
  const cfg = await new GuestPciBus(m).configDump(devfn);
  const dv = new DataView(cfg.buffer);
  let ptr = cfg[0x34]!;
  for (let guard = 0; ptr !== 0 && guard < 48; guard++) {
    if (cfg[ptr] === 0x09 && cfg[ptr + 3] === 2) {
      const bar = cfg[ptr + 4]!;
      const base = ((dv.getUint32(0x10 + 4 * bar, true) & ~0xf) >>> 0) + dv.getUint32(0x14 + 4 * bar, true) * 2 ** 32;
      // queue_notify_off of queue 0 is 0 on QEMU 7.2 (it reads back as the queue index).
      return base + dv.getUint32(ptr + 8, true);
    }
    ptr = cfg[ptr + 1]!;
  }
  throw new Error('no notify capability');
}

/**
 * With `done` requests completed in a ring of `num`, post request done+1 (one 16-byte writable
 * buffer at `buf`), kick, and wait (bounded) for its used entry.
 */
export async function nextRequest(m: Machine, ring: RingAddresses, num: number, done: number, kick: () => Promise<void>, buf = 0x7_0000): Promise<{ id: number; len: number }> {
  expect(await m.readw(ring.avail + 2)).toBe(done);
  expect(await m.readw(ring.used + 2)).toBe(done);
  const d = done % num;
  const desc = new Uint8Array(16);
  const dv = new DataView(desc.buffer);
  dv.setBigUint64(0, BigInt(buf), true);
  dv.setUint32(8, 16, true);
  dv.setUint16(12, 2, true); // VRING_DESC_F_WRITE
  await m.writeBytes(ring.desc + 16 * d, desc);
  await m.writew(ring.avail + 4 + 2 * (done % num), d);
  await m.writew(ring.avail + 2, (done + 1) & 0xffff);
  await kick();
  const deadline = Date.now() + 5000;
  while ((await m.readw(ring.used + 2)) !== ((done + 1) & 0xffff)) {
    if (Date.now() > deadline) throw new Error(`request ${done + 1} did not complete within 5 s`);
    await new Promise((r) => setTimeout(r, 1));
  }
  const at = ring.used + 4 + 8 * (done % num);
  return { id: await m.readl(at), len: await m.readl(at + 4) };
}
