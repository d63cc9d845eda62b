// Hostile-guest H3 / QEMU CVE-2024-3446: an MSI-X message address pointed at the device's own
// registers turns each interrupt into a register write on the device, which can raise another
// interrupt. The machine must not recurse without bound, throw, or wedge the host.
import { describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';

const COMMON_Q_ENABLE = 0x1c;

describe('bus-master writes that hit the device itself (H3)', () => {
  it('a config interrupt aimed at queue_enable breaks the device once and does not recurse', async () => {
    const built = createMachineFromArgs(['-machine', 'pc', '-m', '16M', '-nodefaults', '-device', 'virtio-rng-pci,disable-legacy=on,addr=04.0']);
    const m = new InProcessMachine(built.target);
    const bus = new GuestPciBus(m);
    const dev = await bus.device(4);
    const alloc = new GuestAllocator(0x10_0000, 0x100_0000);
    const drv = await VirtioPciDriver.open(dev, { mode: 'modern', alloc });
    const msix = await drv.enableMsix();
    await drv.init(0n);
    const ring = await drv.setupQueue(0, { num: 8 });
    // Config vector 0: its message is a 4-byte write of 0 to the device's own queue_enable,
    // which the device answers with virtio_error, which sends the config interrupt again.
    const bar4 = await dev.mapBar(4);
    await msix.program(0, bar4.addr + COMMON_Q_ENABLE, 0);
    expect(await drv.setConfigVector(0)).toBe(0);
    await drv.driverOk();
    // A chain whose next is out of range: the device reports the error (config interrupt).
    const buf = alloc.alloc(16, 16);
    await ring.writeDesc(0, buf, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 200);
    await ring.publish(0);
    await drv.notify(0);
    expect((await drv.status()) & 0x40).toBe(0x40);
    // The machine still answers, and a reset brings the device back.
    await drv.reset();
    expect(await drv.status()).toBe(0);
    await m.close();
  });

  it('two devices whose config messages hit each other break once each, without recursion', async () => {
    const built = createMachineFromArgs([
      '-machine', 'pc', '-m', '16M', '-nodefaults',
      '-device', 'virtio-rng-pci,disable-legacy=on,addr=04.0',
      '-device', 'virtio-rng-pci,disable-legacy=on,addr=05.0',
    ]);
    const m = new InProcessMachine(built.target);
    const bus = new GuestPciBus(m);
    const alloc = new GuestAllocator(0x10_0000, 0x100_0000);
    const up = async (slot: number) => {
      const dev = await bus.device(slot);
      const drv = await VirtioPciDriver.open(dev, { mode: 'modern', alloc });
      const msix = await drv.enableMsix();
      await drv.init(0n);
      const ring = await drv.setupQueue(0, { num: 8 });
      return { dev, drv, msix, ring, bar4: await dev.mapBar(4) };
    };
    const a = await up(4);
    const b = await up(5);
    await a.msix.program(0, b.bar4.addr + COMMON_Q_ENABLE, 0);
    await b.msix.program(0, a.bar4.addr + COMMON_Q_ENABLE, 0);
    expect(await a.drv.setConfigVector(0)).toBe(0);
    expect(await b.drv.setConfigVector(0)).toBe(0);
    await a.drv.driverOk();
    await b.drv.driverOk();
    const buf = alloc.alloc(16, 16);
    await a.ring.writeDesc(0, buf, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 200);
    await a.ring.publish(0);
    await a.drv.notify(0);
    // A's error interrupt broke B (queue_enable = 0), whose error interrupt broke A's queue
    // enable again; A's second message is the re-entrant one and is dropped.
    expect((await a.drv.status()) & 0x40).toBe(0x40);
    expect((await b.drv.status()) & 0x40).toBe(0x40);
    await a.drv.reset();
    await b.drv.reset();
    expect(await a.drv.status()).toBe(0);
    expect(await b.drv.status()).toBe(0);
    await m.close();
  });
});
