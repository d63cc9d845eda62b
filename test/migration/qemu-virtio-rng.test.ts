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
import type { VirtioTransportDriver } from '../../src/driver/virtio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import type { VringDriver } from '../../src/driver/vring.js';
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
  name: string;
  machine: 'pc' | 'microvm';
  args: string[];
  idstr: string;
  drive(m: Machine): Promise<RingAddresses>;
  kick(m: Machine): Promise<void>;
  /** Where queue 0's MSI-X message lands in RAM (with its data), when the case uses MSI-X. */
  msi?: { addr: number; data: number };
}

const PCI_DEVFN = 2 << 3;

const MSI_ADDR = 0x2f_0000;
const MSI_DATA = 0x1234_5678;

/** DRIVER_OK, then DONE requests of 16 bytes, each filled in full; the ring's addresses. */
async function completeRequests(drv: VirtioTransportDriver, ring: VringDriver): Promise<RingAddresses> {
  await drv.driverOk();
  const rng = new RngDriver(drv, ring);
  for (let i = 0; i < DONE; i++) expect((await rng.request(16)).len).toBe(16);
  return ring.addrs;
}

/** Bring a virtio-rng-pci up to DRIVER_OK with queue 0 and complete DONE requests. */
async function drivePci(m: Machine, msix: boolean): Promise<RingAddresses> {
  const devs = await new GuestPciBus(m).scan();
  const dev = devs.find((d) => d.ids.vendorId === 0x1af4);
  if (!dev) throw new Error('no virtio device on bus 0');
  const drv = await VirtioPciDriver.open(dev, { alloc: new GuestAllocator(0x20_0000, 0x2f_0000) });
  if (msix) await drv.enableMsix();
  await drv.init(0n);
  const ring = await drv.setupQueue(0, { num: NUM });
  if (msix) await drv.msixSetupQueue(0, 1, MSI_ADDR, MSI_DATA);
  return completeRequests(drv, ring);
}

/** Modern interface: queue 0's notify address from the notify capability. */
async function modernKick(m: Machine): Promise<void> {
  await m.writew(await pciNotifyAddr(m, PCI_DEVFN), 0);
}

/** virtio-mmio: QueueNotify. */
async function mmioKick(m: Machine): Promise<void> {
  await m.writel(MMIO_BASE + 0x50, 0);
}

/** Legacy interface: QUEUE_NOTIFY in I/O BAR0 (found in the migrated configuration). */
async function legacyKick(m: Machine): Promise<void> {
  const bar0 = await new GuestPciBus(m).configReadl(PCI_DEVFN, 0x10);
  await m.outw((bar0 & ~3) + 0x10, 0);
}

const PC_MSIX: Case = {
  name: 'pc, transitional virtio-rng-pci with MSI-X',
  machine: 'pc',
  args: ['-device', 'virtio-rng-pci'],
  idstr: '0000:00:02.0/virtio-rng',
  drive: (m) => drivePci(m, true),
  kick: modernKick,
  msi: { addr: MSI_ADDR, data: MSI_DATA },
};

const PC_LEGACY: Case = {
  name: 'pc, legacy virtio-rng-pci (disable-modern=on), INTx',
  machine: 'pc',
  args: ['-device', 'virtio-rng-pci,disable-modern=on'],
  idstr: '0000:00:02.0/virtio-rng',
  drive: (m) => drivePci(m, false),
  kick: legacyKick,
};

const MICROVM_V2: Case = {
  name: 'microvm, virtio-mmio version 2',
  machine: 'microvm',
  args: ['-global', 'virtio-mmio.force-legacy=false', '-device', 'virtio-rng-device'],
  idstr: 'virtio-mmio@00000000feb02e00/virtio-rng',
  drive: (m) => MICROVM.drive(m),
  kick: mmioKick,
};

const PC: Case = {
  name: 'pc, transitional virtio-rng-pci (modern interface), INTx',
  machine: 'pc',
  args: ['-device', 'virtio-rng-pci'],
  idstr: '0000:00:02.0/virtio-rng',
  drive: (m) => drivePci(m, false),
  kick: modernKick,
};

const MICROVM: Case = {
  name: 'microvm, virtio-mmio version 1 (QEMU\'s default)',
  machine: 'microvm',
  args: ['-device', 'virtio-rng-device'],
  idstr: 'virtio-mmio@00000000feb02e00/virtio-rng',
  async drive(m) {
    const drv = new VirtioMmioDriver(m, MMIO_BASE, { alloc: new GuestAllocator(0x20_0000, 0x30_0000) });
    await drv.init(0n);
    return completeRequests(drv, await drv.setupQueue(0, { num: NUM }));
  },
  kick: mmioKick,
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
    for (const c of [PC, PC_MSIX, PC_LEGACY, MICROVM, MICROVM_V2]) {
      it(`${c.name}: QEMU → ours: the device state arrives byte for byte and serves the next request`, async () => {
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
        if (c.msi) await o.guest.writel(c.msi.addr, 0);
        const e = await nextRequest(o.guest, ring!, NUM, DONE, () => c.kick(o.guest), 0x38_0000);
        expect(e).toEqual({ id: DONE % NUM, len: 16 });
        // With MSI-X, the migrated table entry delivers the completion's message.
        if (c.msi) expect(await o.guest.readl(c.msi.addr)).toBe(c.msi.data);
      });

      it(`${c.name}: ours → QEMU: QEMU loads it, runs, migrates the same device bytes back out, and serves the next request`, async () => {
        const o = ours(c);
        const ring = await c.drive(o.guest);
        const bytes = saveVm(o.machine);
        const p = parseSavevm(bytes);
        let echoed: Uint8Array | undefined;
        let fourth: { id: number; len: number } | undefined;
        let msiSeen = false;
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
          if (c.msi) await m.writel(c.msi.addr, 0);
          fourth = await nextRequest(m, ring, NUM, DONE, () => c.kick(m), 0x38_0000);
          if (c.msi) {
            const deadline = Date.now() + 5000;
            while ((await m.readl(c.msi.addr)) !== c.msi.data && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
            msiSeen = (await m.readl(c.msi.addr)) === c.msi.data;
          }
        }, { args: c.args });
        expect(r.info.status, r.stderr).toBe('completed');
        expect(r.status).toBe('running');
        const q = parseSavevm(echoed!);
        expect(firstDifference(sectionBody(bytes, p, c.idstr), sectionBody(echoed!, q, c.idstr))).toBe(-1);
        expect(fourth).toEqual({ id: DONE % NUM, len: 16 });
        if (c.msi) expect(msiSeen).toBe(true);
      });
    }
  });
}
