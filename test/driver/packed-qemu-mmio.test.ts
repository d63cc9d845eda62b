// A packed virtqueue through virtio-mmio version 2 on a real QEMU 7.2 and on virtio-ts-qemu (microvm,
// virtio-rng-device,packed=on): the ring, driver area and device area go into the
// QueueDesc/QueueDriver/QueueDevice registers, any QueueNum up to QueueNumMax works (7 here), and
// QEMU writes the same used descriptors as on PCI. One QEMU for the file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from '../../src/driver/packed-ring.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VIRTIO_ID_RNG, bit } from '../../src/virtio/constants.js';
import { OUR_MACHINE_FILES, QEMU_COMMAND, qemuOrPolicy } from './impls.js';

/** The only -device lands on the last of microvm's 24 transports. */
const RNG_BASE = MICROVM_MMIO_BASE + 0x200 * 23;

/**
 * The same script on QEMU 7.2 and on virtio-ts-qemu (same command line): what QEMU writes is
 * what our device side must write, except where docs/qemu-differences.md says otherwise.
 */
const SIDES = [
  { name: 'QEMU 7.2', command: QEMU_COMMAND, ours: false },
  { name: 'virtio-ts-qemu', command: [process.execPath, OUR_MACHINE_FILES.bin], ours: true },
] as const;

if (qemuOrPolicy('QEMU 7.2 packed virtqueues over virtio-mmio')) {
  for (const side of SIDES) {
  describe(`packed virtqueue over virtio-mmio version 2 on ${side.name} (microvm, virtio-rng-device,packed=on)`, () => {
    let qemu: QemuProcess | undefined;

    beforeAll(async () => {
      qemu = await launchQemu({
        command: [...side.command],
        machine: 'microvm',
        args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-rng-device,packed=on'],
        name: 'qemu',
      });
    }, 20_000);

    afterAll(async () => {
      await qemu?.close();
    });

    it('ring of 7: single buffers and two-descriptor chains over three wraps', async () => {
      const m = qemu!.machine;
      const alloc = new GuestAllocator();
      const d = new VirtioMmioDriver(m, RNG_BASE, { alloc });
      expect(await d.probe()).toBe(VIRTIO_ID_RNG);
      expect(d.version).toBe(2);
      expect(await d.readDeviceFeatures()).toBe(0x105_3000_0000n);
      expect(await d.init(bit(VIRTIO_F_RING_PACKED))).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED));
      expect(await d.queueMax(0)).toBe(1024);
      const ring = await d.setupPackedQueue(0, { num: 7 });
      expect(ring.addrs.avail - ring.addrs.desc).toBe(7 * 16);
      await d.driverOk();
      const buf = alloc.alloc(64, 16);
      const seen: [number, number, number][] = [];
      for (let k = 0; k < 16; k++) {
        const slot = ring.nextAvail;
        const wrap = ring.availWrap;
        const id = await ring.add(k % 3 === 1 ? [{ addr: buf, len: 4 }, { addr: buf + 16, len: 8 + k, write: true }] : [{ addr: buf + 32, len: 8 + k, write: true }]);
        await d.notify(0);
        expect(await ring.waitUsed(1)).toEqual([{ id, len: 8 + k }]);
        const desc = await ring.descAt(slot);
        expect(desc.flags).toBe(wrap ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0);
        expect(desc.id).toBe(id);
        // InterruptStatus bit 0 (used buffer), acknowledged.
        expect(await d.ackInterrupt()).toBe(1);
        seen.push([slot, desc.flags, ring.nextUsed]);
      }
      // Chains at k = 1, 4, 7, 10, 13 take two slots; 21 slots = three laps of 7.
      expect(seen.map((s) => s[0])).toEqual([0, 1, 3, 4, 5, 0, 1, 2, 4, 5, 6, 1, 2, 3, 5, 6]);
      expect(seen.map((s) => s[1])).toEqual([...Array(5).fill(0x8080), ...Array(6).fill(0), ...Array(5).fill(0x8080)]);
      expect([ring.nextUsed, ring.usedWrap]).toEqual([0, false]);
      expect(await ring.deviceEvent()).toEqual({ offWrap: 0, flags: 0 });
      await d.reset();
    });
  });
  }
}
