// Whole-machine migration with a virtio-rng device, against QEMU 7.2, both directions, on `pc`
// (virtio-rng-pci, transitional, driven through its modern interface) and `microvm`
// (virtio-rng-device on the last transport, virtio-mmio version 1 as QEMU's default):
//  - the source's guest side brings the device to DRIVER_OK with queue 0 (8 entries) and
//    completes three requests; the stream goes to the other side, which must hold the same state:
//    re-saved, its virtio section is the source's bytes; and it must keep working: a fourth
//    request posted by hand in the migrated ring completes on the destination.
import { describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import type { Machine } from '../../src/driver/machine.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';
import { RngDriver } from '../../src/driver/rng.js';
import { VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import type { MicrovmMachine } from '../../src/machine/microvm.js';
import type { PcMachine } from '../../src/machine/pc.js';
import { loadVm, parseSavevm, saveVm, type ParsedSavevm } from '../../src/migration/savevm.js';
import { qemuOrPolicy } from '../driver/impls.js';
import { firstDifference } from './patterns.js';
import { nextRequest, pciNotifyAddr, type RingAddresses } from './rng-guest.js';
import { captureFromQemu, loadIntoQemu, tempDir, waitMigration } from './qemu-migration.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const MMIO_BASE = 0xfeb0_2e00;

const NUM = 8;
const DONE = 3;

interface Case {
  machine: 'pc' | 'microvm';
  args: string[];
  idstr: string;
  drive(m: Machine): Promise<RingAddresses>;
  kick(m: Machine): Promise<void>;
}

const PCI_DEVFN = 2 << 3;

const PC: Case = {
  machine: 'pc',
  args: ['-device', 'virtio-rng-pci'],
  idstr: '0000:00:02.0/virtio-rng',
  async drive(m) {
    const devs = await new GuestPciBus(m).scan();
    const dev = devs.find((d) => d.ids.vendorId === 0x1af4);
    if (!dev) throw new Error('no virtio device on bus 0');
    const drv = await VirtioPciDriver.open(dev, { alloc: new GuestAllocator(0x20_0000, 0x30_0000) });
    await drv.init(0n);
    const ring = await drv.setupQueue(0, { num: NUM });
    await drv.driverOk();
    const rng = new RngDriver(drv, ring);
    for (let i = 0; i < DONE; i++) expect((await rng.request(16)).len).toBe(16);
    return ring.addrs;
  },
  async kick(m) {
    await m.writew(await pciNotifyAddr(m, PCI_DEVFN), 0);
  },
};

const MICROVM: Case = {
  machine: 'microvm',
  args: ['-device', 'virtio-rng-device'],
  idstr: 'virtio-mmio@00000000feb02e00/virtio-rng',
  async drive(m) {
    const drv = new VirtioMmioDriver(m, MMIO_BASE, { alloc: new GuestAllocator(0x20_0000, 0x30_0000) });
    await drv.init(0n);
    const ring = await drv.setupQueue(0, { num: NUM });
    await drv.driverOk();
    const rng = new RngDriver(drv, ring);
    for (let i = 0; i < DONE; i++) expect((await rng.request(16)).len).toBe(16);
    return ring.addrs;
  },
  async kick(m) {
    await m.writel(MMIO_BASE + 0x50, 0);
  },
};

function ours(c: Case): { machine: PcMachine | MicrovmMachine; guest: InProcessMachine } {
  const r = createMachineFromArgs(['-machine', c.machine, '-m', '16M', '-nodefaults', ...c.args], { bios: haltFirmware() });
  return { machine: r.built.machine, guest: new InProcessMachine(r.target) };
}

function sectionBody(bytes: Uint8Array, p: ParsedSavevm, idstr: string): Uint8Array {
  const s = p.sections.find((x) => x.idstr === idstr);
  if (!s) throw new Error(`no section ${idstr}: ${p.sections.map((x) => x.idstr).join(', ')}`);
  return bytes.subarray(s.bodyOffset, s.footerOffset);
}

if (qemuOrPolicy('savevm with virtio-rng against QEMU 7.2')) {
  describe('savevm with virtio-rng against QEMU 7.2', () => {
    for (const c of [PC, MICROVM]) {
      it(`${c.machine}: QEMU → ours: the device state arrives byte for byte and serves the next request`, async () => {
        let ring: RingAddresses | undefined;
        const cap = await captureFromQemu(c.machine, async (m) => {
          ring = await c.drive(m);
        }, { args: c.args });
        const p = parseSavevm(cap.bytes);
        expect(p.sections.map((s) => s.idstr)).toContain(c.idstr);
        const o = ours(c);
        const r = loadVm(o.machine, cap.bytes);
        expect(r.loaded).toContain(c.idstr);
        // Re-saved at once, our section is QEMU's (same transport config, queue and subsections).
        const again = saveVm(o.machine);
        const q = parseSavevm(again);
        const a = sectionBody(cap.bytes, p, c.idstr);
        const b = sectionBody(again, q, c.idstr);
        expect(b.length).toBe(a.length);
        expect(firstDifference(a, b)).toBe(-1);
        expect(q.vmdesc!.description!.devices.find((d) => d.name === c.idstr)).toEqual(p.vmdesc!.description!.devices.find((d) => d.name === c.idstr));
        const e = await nextRequest(o.guest, ring!, NUM, DONE, () => c.kick(o.guest), 0x38_0000);
        expect(e).toEqual({ id: DONE % NUM, len: 16 });
      });

      it(`${c.machine}: ours → QEMU: QEMU loads it, runs, migrates the same device bytes back out, and serves the next request`, async () => {
        const o = ours(c);
        const ring = await c.drive(o.guest);
        const bytes = saveVm(o.machine);
        const p = parseSavevm(bytes);
        let echoed: Uint8Array | undefined;
        let fourth: { id: number; len: number } | undefined;
        const r = await loadIntoQemu(c.machine, bytes, async (m, proc) => {
          // QEMU's own stream of the state it just loaded.
          const tmp = tempDir();
          try {
            const file = join(tmp.dir, 'echo.mig');
            await proc.qmp!.execute('migrate', { uri: `exec:cat > '${file}'` });
            const info = await waitMigration(proc);
            expect(info.status).toBe('completed');
            echoed = new Uint8Array(readFileSync(file));
            // Migrating out stops the VM; resume it to serve the request.
            await proc.qmp!.execute('cont');
          } finally {
            tmp.remove();
          }
          fourth = await nextRequest(m, ring, NUM, DONE, () => c.kick(m), 0x38_0000);
        }, { args: c.args });
        expect(r.info.status, r.stderr).toBe('completed');
        expect(r.status).toBe('running');
        const q = parseSavevm(echoed!);
        expect(firstDifference(sectionBody(bytes, p, c.idstr), sectionBody(echoed!, q, c.idstr))).toBe(-1);
        expect(fourth).toEqual({ id: DONE % NUM, len: 16 });
      });
    }
  });
}
