// Whole machines with a virtio-rng device, ours to ours: a driven device round-trips through the
// container (re-saved bytes equal, the next request completes), a stream broken late leaves the
// machine (RAM, chipset, device) as it was, and single-bit flips in the chipset and virtio
// sections give a clean load or a MigrationError with nothing changed.
import { describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';
import { RngDriver } from '../../src/driver/rng.js';
import { VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import type { MicrovmMachine } from '../../src/machine/microvm.js';
import type { PcMachine } from '../../src/machine/pc.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { loadVm, parseSavevm, saveVm } from '../../src/migration/savevm.js';
import { firstDifference } from './patterns.js';
import { nextRequest, pciNotifyAddr } from './rng-guest.js';

const RAM = '1M';

function build(machine: 'pc' | 'microvm'): { m: PcMachine | MicrovmMachine; guest: InProcessMachine } {
  const args = machine === 'pc' ? ['-device', 'virtio-rng-pci'] : ['-device', 'virtio-rng-device'];
  const r = createMachineFromArgs(['-machine', machine, '-m', RAM, '-nodefaults', ...args], { bios: haltFirmware() });
  return { m: r.built.machine, guest: new InProcessMachine(r.target) };
}

/** Bring queue 0 up and complete `n` requests; returns the driver for more. */
async function drive(machine: 'pc' | 'microvm', guest: InProcessMachine, n: number): Promise<RngDriver> {
  const alloc = new GuestAllocator(0x1_0000, 0x8_0000);
  let rng: RngDriver;
  if (machine === 'pc') {
    const dev = (await new GuestPciBus(guest).scan()).find((d) => d.ids.vendorId === 0x1af4)!;
    const drv = await VirtioPciDriver.open(dev, { alloc });
    await drv.init(0n);
    rng = new RngDriver(drv, await drv.setupQueue(0, { num: 8 }));
    await drv.driverOk();
  } else {
    const drv = new VirtioMmioDriver(guest, 0xfeb0_2e00, { alloc });
    await drv.init(0n);
    rng = new RngDriver(drv, await drv.setupQueue(0, { num: 8 }));
    await drv.driverOk();
  }
  for (let i = 0; i < n; i++) expect((await rng.request(16)).len).toBe(16);
  return rng;
}

describe('savevm with a virtio-rng device, ours to ours', () => {
  for (const machine of ['pc', 'microvm'] as const) {
    it(`${machine}: round trip; the re-saved stream is identical and the device keeps serving`, async () => {
      const src = build(machine);
      const rng = await drive(machine, src.guest, 3);
      const bytes = saveVm(src.m);
      const dst = build(machine);
      const r = loadVm(dst.m, bytes);
      expect(r.loaded.some((id) => id.endsWith('/virtio-rng'))).toBe(true);
      expect(firstDifference(saveVm(dst.m), bytes)).toBe(-1);
      // The guest side carries on against the destination, in the migrated ring.
      const kick = machine === 'pc' ? async () => dst.guest.writew(await pciNotifyAddr(dst.guest, 2 << 3), 0) : () => dst.guest.writel(0xfeb0_2e00 + 0x50, 0);
      expect(await nextRequest(dst.guest, rng.ring.addrs, 8, 3, kick)).toEqual({ id: 3, len: 16 });
    });
  }

  it('pc: a stream broken in its last section changes nothing: RAM, chipset and device re-save identically', async () => {
    const src = build('pc');
    await drive('pc', src.guest, 5);
    src.m.writeBytes(0x9_0000, Uint8Array.from([1, 2, 3]));
    const good = saveVm(src.m);
    const g = parseSavevm(good).sections.find((s) => s.idstr === 'globalstate')!;
    const broken = good.slice();
    broken[g.bodyOffset + 4] = 0x78;
    const dst = build('pc');
    await drive('pc', dst.guest, 1);
    const before = saveVm(dst.m).slice();
    expect(() => loadVm(dst.m, broken)).toThrow(MigrationError);
    expect(firstDifference(saveVm(dst.m), before)).toBe(-1);
  });

  it('pc: single-bit flips in the chipset and virtio sections: a clean load or a MigrationError with nothing changed', async () => {
    const src = build('pc');
    await drive('pc', src.guest, 3);
    const good = saveVm(src.m);
    const p = parseSavevm(good);
    const targets: number[] = [];
    for (const s of p.sections.filter((x) => x.kind === 'full' && x.idstr !== 'globalstate')) {
      // Every byte of the header and the first 400 body bytes (PCI config, core fields, queue),
      // then every 97th byte of the rest (the 1024-entry arrays).
      for (let i = s.offset; i < s.footerOffset + 5; i++) if (i < s.bodyOffset + 400 || (i - s.bodyOffset) % 97 === 0) targets.push(i);
    }
    const dst = build('pc');
    let fingerprint = saveVm(dst.m).slice();
    let refused = 0;
    let loaded = 0;
    let seed = 12345;
    for (const i of targets) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      const bytes = good.slice();
      bytes[i]! ^= 1 << (seed >>> 29);
      try {
        loadVm(dst.m, bytes);
        loaded++;
        fingerprint = saveVm(dst.m).slice();
      } catch (e) {
        expect(e, `flip at ${i}`).toBeInstanceOf(MigrationError);
        expect((e as MigrationError).field, (e as MigrationError).message).not.toBe('internal');
        expect(firstDifference(saveVm(dst.m), fingerprint), `flip at ${i}: ${(e as Error).message}`).toBe(-1);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(200);
    expect(loaded).toBeGreaterThan(50);
  });
});
