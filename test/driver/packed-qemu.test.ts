// The packed-virtqueue driver against a real QEMU 7.2 and against virtio-ts-qemu, same script (pc, virtio-rng-pci and virtio-blk-pci with
// packed=on, modern only, ioeventfd=off so a notify is handled inside the qtest write). What QEMU
// writes here is what our device side must write: used descriptors carry the buffer id and the
// written length with AVAIL = USED = QEMU's used wrap counter and no other flag (0x8080 or 0x0000),
// at the first slot of each chain, and QEMU leaves the addr field and the chain's other slots
// alone; QEMU takes the buffer id from the FIRST descriptor of a chain (the spec puts it in the
// last; Linux writes it in all); used-buffer notifications follow the driver area (DISABLE
// always wins; DESC by off_wrap, except that the first completion after a reset and the one
// that wraps the ring always notify); virtio-rng never writes the device area, virtio-blk writes
// DISABLE while it pops and then ENABLE (off_wrap untouched) or, with EVENT_IDX, DESC with
// off_wrap = its next avail position and wrap counter. One QEMU for the whole file.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { BLK_T_GET_ID, blkHeader } from '../../src/driver/blk.js';
import { waitIrq, type Machine } from '../../src/driver/machine.js';
import { RING_EVENT_FLAGS_DESC, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED } from '../../src/driver/packed-ring.js';
import type { PackedVringDriver } from '../../src/driver/packed-vring.js';
import { GuestPciBus, type GuestPciDevice } from '../../src/driver/pci.js';
import { launchQemu, type QemuProcess } from '../../src/driver/qemu-launcher.js';
import { DriverError } from '../../src/driver/virtio-driver.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import {
  VIRTIO_CONFIG_S_NEEDS_RESET,
  VIRTIO_F_RING_PACKED,
  VIRTIO_F_RING_RESET,
  VIRTIO_F_VERSION_1,
  VIRTIO_RING_F_EVENT_IDX,
  VIRTIO_RING_F_INDIRECT_DESC,
  bit,
} from '../../src/virtio/constants.js';
import { VRING_DESC_F_NEXT, VRING_DESC_F_WRITE } from '../../src/vring/constants.js';
import { OUR_MACHINE_FILES, QEMU_COMMAND, qemuOrPolicy } from './impls.js';

const RNG_SLOT = 4;
const BLK_SLOT = 5;
/** A transitional virtio-rng-pci without packed=on: both interfaces, no RING_PACKED offered. */
const PLAIN_SLOT = 6;
const INTX_IRQ = 11;
const SERIAL = 'PACKED-SERIAL';

const ARGS = [
  '-device', `virtio-rng-pci,packed=on,disable-legacy=on,ioeventfd=off,addr=0${RNG_SLOT}.0`,
  '-drive', 'if=none,id=d0,file=null-co://,file.read-zeroes=on,file.size=1M,format=raw',
  '-device', `virtio-blk-pci,drive=d0,packed=on,disable-legacy=on,ioeventfd=off,serial=${SERIAL},addr=0${BLK_SLOT}.0`,
  '-device', `virtio-rng-pci,addr=0${PLAIN_SLOT}.0`,
];

const AVAIL = VIRTQ_DESC_F_AVAIL;
const USED = VIRTQ_DESC_F_USED;
/** The used descriptor flags QEMU writes in a lap with wrap counter 1 / 0. */
const USED_WRAP1 = AVAIL | USED; // 0x8080
const USED_WRAP0 = 0;

/**
 * The same script on QEMU 7.2 and on virtio-ts-qemu (same command line): what QEMU writes is
 * what our device side must write, except where docs/qemu-differences.md says otherwise.
 */
const SIDES = [
  { name: 'QEMU 7.2', command: QEMU_COMMAND, ours: false },
  { name: 'virtio-ts-qemu', command: [process.execPath, OUR_MACHINE_FILES.bin], ours: true },
] as const;

if (qemuOrPolicy('QEMU 7.2 packed virtqueues')) {
  for (const side of SIDES) {
  describe(`packed virtqueues on ${side.name} (virtio-rng-pci, virtio-blk-pci, packed=on)`, () => {
    let qemu: QemuProcess | undefined;
    let m: Machine;
    let bus: GuestPciBus;
    let rngDev: GuestPciDevice;
    let rng: VirtioPciDriver;
    let blk: VirtioPciDriver;
    const alloc = new GuestAllocator();

    beforeAll(async () => {
      qemu = await launchQemu({ command: [...side.command], machine: 'pc', args: ARGS, name: 'qemu' });
      m = qemu.machine;
      bus = new GuestPciBus(m);
      rngDev = await bus.device(RNG_SLOT);
      rng = await VirtioPciDriver.open(rngDev, { mode: 'modern', alloc });
      blk = await VirtioPciDriver.open(await bus.device(BLK_SLOT), { mode: 'modern', alloc });
      // INTx of the rng only, to see "no interrupt" on the line as well as in the ISR.
      await rngDev.routeIntx(INTX_IRQ);
      await m.irqIntercept('in', 'ioapic');
    }, 20_000);

    afterAll(async () => {
      await qemu?.close();
    });

    /** Bring the rng up with `features` (plus VERSION_1) and a packed queue of `num`. */
    async function rngUp(features: bigint, num: number): Promise<PackedVringDriver> {
      alloc.reset();
      await rng.init(features);
      const ring = await rng.setupPackedQueue(0, { num });
      await rng.driverOk();
      // Nothing left over from an earlier test.
      expect(await rng.isr()).toBe(0);
      return ring;
    }

    /** Post `bufs`, notify, wait for the one used descriptor; returns it with the slot it started at. */
    async function rngRequest(ring: PackedVringDriver, bufs: { len: number; write?: boolean }[], indirect = false) {
      const slot = ring.nextAvail;
      const wrap = ring.availWrap;
      const posted = bufs.map((b) => ({ addr: alloc.alloc(Math.max(b.len, 1), 16), len: b.len, write: b.write ?? false }));
      for (const b of posted) await m.memset(b.addr, b.len, 0);
      const table = indirect ? alloc.alloc(16 * bufs.length, 16) : undefined;
      const id = await ring.add(posted, table !== undefined ? { indirectTable: table } : {});
      expect(id).toBeGreaterThanOrEqual(0);
      await rng.notify(0);
      const used = await ring.waitUsed(1);
      expect(used).toHaveLength(1);
      return { slot, wrap, id, posted, table, used: used[0]!, desc: await ring.descAt(slot) };
    }

    it('offers VIRTIO_F_RING_PACKED only with packed=on, and the driver takes it only when asked', async () => {
      expect(await rng.readDeviceFeatures()).toBe(0x105_3000_0000n);
      expect(await blk.readDeviceFeatures()).toBe(0x105_3000_6e54n);
      const plain = await VirtioPciDriver.open(await bus.device(PLAIN_SLOT), { mode: 'modern', alloc });
      expect(await plain.readDeviceFeatures()).toBe(0x101_3000_0000n);
      expect(await rng.init(bit(VIRTIO_RING_F_INDIRECT_DESC))).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_INDIRECT_DESC));
      await expect(rng.setupPackedQueue(0, { num: 8 })).rejects.toThrow(/RING_PACKED was not negotiated/);
      expect(await rng.init(bit(VIRTIO_F_RING_PACKED))).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED));
      expect(await rng.readDriverFeatures()).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED));
      expect(await rng.queueMax(0)).toBe(8);
      await expect(rng.setupPackedQueue(0, { num: 9 })).rejects.toThrow(DriverError);
      // Not offered, so not negotiated, so no packed queue; the legacy interface cannot have one.
      expect(await plain.init(bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_F_RING_RESET))).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_RESET));
      await expect(plain.setupPackedQueue(0, { num: 8 })).rejects.toThrow(/RING_PACKED was not negotiated/);
      const legacy = await VirtioPciDriver.open(await bus.device(PLAIN_SLOT), { mode: 'legacy', alloc });
      expect(await legacy.init(bit(VIRTIO_F_RING_PACKED))).toBe(0n);
      await expect(legacy.setupPackedQueue(0)).rejects.toThrow(/modern interface/);
      await legacy.reset();
    });

    it('ring of 8, one buffer at a time over three wraps: id, len and AVAIL|USED = the wrap counter, nothing else', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED), 8);
      const flags: number[] = [];
      for (let k = 0; k < 26; k++) {
        const r = await rngRequest(ring, [{ len: 8 + k, write: true }]);
        expect(r.slot).toBe(k % 8);
        expect(r.wrap).toBe(Math.floor(k / 8) % 2 === 0);
        expect(r.used).toEqual({ id: r.id, len: 8 + k });
        // QEMU writes id, len and flags; addr stays what the driver wrote; WRITE is not kept.
        expect(r.desc).toEqual({ addr: BigInt(r.posted[0]!.addr), len: 8 + k, id: r.id, flags: r.wrap ? USED_WRAP1 : USED_WRAP0 });
        flags.push(r.desc.flags);
        expect(await rng.isr()).toBe(1);
        // The entropy really landed (all-zero 8+ bytes from urandom is not going to happen).
        expect((await m.readBytes(r.posted[0]!.addr, 8 + k)).some((b) => b !== 0)).toBe(true);
      }
      expect(flags).toEqual([...Array(8).fill(0x8080), ...Array(8).fill(0), ...Array(8).fill(0x8080), 0, 0]);
      expect([ring.nextAvail, ring.availWrap, ring.nextUsed, ring.usedWrap]).toEqual([2, false, 2, false]);
      // QEMU never touched the device area: still the zeros the driver left (ENABLE).
      expect(await ring.deviceEvent()).toEqual({ offWrap: 0, flags: RING_EVENT_FLAGS_ENABLE });
      await rng.reset();
    });

    it('ring of 5 (not a power of two): chains with a device-readable head and indirect tables over two wraps', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_INDIRECT_DESC), 5);
      const seen: [number, boolean, number, number][] = [];
      for (let k = 0; k < 9; k++) {
        const indirect = k % 3 === 2;
        const bufs = k % 2 === 0 ? [{ len: 4 }, { len: 16, write: true }, { len: 3, write: true }] : [{ len: 5 + k, write: true }];
        const r = await rngRequest(ring, bufs, indirect);
        // QEMU fills only the device-writable buffers and reports how much it wrote.
        const want = bufs.reduce((n, b) => n + (b.write ? b.len : 0), 0);
        expect(r.used).toEqual({ id: r.id, len: want });
        expect(r.desc.flags).toBe(r.wrap ? USED_WRAP1 : USED_WRAP0);
        // addr stays the driver's: the buffer, or the indirect table.
        expect(r.desc.addr).toBe(BigInt(r.table ?? r.posted[0]!.addr));
        // The device-readable head is not written to.
        if (bufs.length > 1) expect(await m.readBytes(r.posted[0]!.addr, 4)).toEqual(new Uint8Array(4));
        if (!indirect && bufs.length > 1) {
          // The chain's other slots keep what the driver wrote (flags of the lap they lie in).
          const s1 = (r.slot + 1) % 5;
          const lap1 = s1 === 0 ? !r.wrap : r.wrap;
          expect(await ring.descAt(s1)).toEqual({ addr: BigInt(r.posted[1]!.addr), len: 16, id: r.id, flags: VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | (lap1 ? AVAIL : USED) });
        }
        expect(await rng.isr()).toBe(1);
        seen.push([r.slot, r.wrap, ring.nextUsed, r.desc.flags]);
      }
      // [slot, lap's wrap counter, next used slot, used flags]: a direct chain of three takes three
      // slots, a single buffer or an indirect table one.
      expect(seen).toEqual([
        [0, true, 3, 0x8080],
        [3, true, 4, 0x8080],
        [4, true, 0, 0x8080],
        [0, false, 1, 0],
        [1, false, 4, 0],
        [4, false, 0, 0],
        [0, true, 3, 0x8080],
        [3, true, 4, 0x8080],
        [4, true, 0, 0x8080],
      ]);
      expect(ring.usedWrap).toBe(false);
      await rng.reset();
    });

    it('a chain that runs off the end of a 5-slot ring: used descriptor at its first slot, the next one after its last', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED), 5);
      for (let k = 0; k < 3; k++) await rngRequest(ring, [{ len: 8, write: true }]);
      const r = await rngRequest(ring, [{ len: 4 }, { len: 8, write: true }, { len: 8, write: true }, { len: 8, write: true }]);
      expect([r.slot, r.wrap, r.used.len, r.desc.flags]).toEqual([3, true, 24, USED_WRAP1]);
      // Slots 0 and 1 belong to the next lap: USED set, AVAIL clear, as the driver wrote them.
      expect((await ring.descAt(0)).flags).toBe(USED | VRING_DESC_F_NEXT | VRING_DESC_F_WRITE);
      expect((await ring.descAt(1)).flags).toBe(USED | VRING_DESC_F_WRITE);
      expect([ring.nextUsed, ring.usedWrap]).toEqual([2, false]);
      const next = await rngRequest(ring, [{ len: 8, write: true }]);
      expect([next.slot, next.desc.flags]).toEqual([2, USED_WRAP0]);
      await rng.reset();
    });

    it('three chains, one notify: one used descriptor at each chain\'s first slot, in order, one interrupt', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED), 8);
      const mark = m.irq.mark();
      const a = alloc.alloc(64, 16);
      const ids = [
        await ring.add([{ addr: a, len: 8, write: true }]),
        await ring.add([{ addr: a + 16, len: 4 }, { addr: a + 32, len: 12, write: true }]),
        await ring.add([{ addr: a + 48, len: 16, write: true }]),
      ];
      expect(await ring.needsNotify()).toBe(true);
      await rng.notify(0);
      const used = await ring.waitUsed(3);
      expect(used).toEqual([
        { id: ids[0], len: 8 },
        { id: ids[1], len: 12 },
        { id: ids[2], len: 16 },
      ]);
      expect((await Promise.all([0, 1, 3].map((s) => ring.descAt(s)))).map((d) => [d.id, d.len, d.flags])).toEqual([
        [ids[0], 8, USED_WRAP1],
        [ids[1], 12, USED_WRAP1],
        [ids[2], 16, USED_WRAP1],
      ]);
      // Slot 2, the second descriptor of the middle chain, is untouched.
      expect(await ring.descAt(2)).toEqual({ addr: BigInt(a + 32), len: 12, id: ids[1], flags: AVAIL | VRING_DESC_F_WRITE });
      expect(await rng.isr()).toBe(1);
      await waitIrq(m, INTX_IRQ, true, { mark });
      expect(m.irq.count(INTX_IRQ, true, mark)).toBe(1);
      await rng.reset();
    });

    it('the buffer id of a chain: QEMU 7.2 reads the first descriptor\'s, we read the last one\'s (row 75; an id ≥ the size breaks the device, row 80)', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED), 8);
      const a = alloc.alloc(32, 16);
      const id = await ring.add(
        [
          { addr: a, len: 8, write: true },
          { addr: a + 16, len: 8, write: true },
        ],
        { publish: false },
      );
      // Another id in the last descriptor only (the spec says the device reads it from there).
      const tail = await ring.descAt(1);
      await ring.writeDescAt(1, tail.addr, tail.len, 0x1234, tail.flags);
      await ring.publish(id);
      await rng.notify(0);
      if (side.ours) {
        // 0x1234 is the chain's id as the spec places it, and not below the queue size.
        expect((await rng.status()) & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
        expect(await ring.takeUsed()).toEqual([]);
      } else {
        expect(await ring.waitUsed(1)).toEqual([{ id, len: 16 }]);
        expect(await ring.descAt(0)).toMatchObject({ id, len: 16, flags: USED_WRAP1 });
      }
      await rng.reset();
    });

    it('driver event area DISABLE: no interrupt, not even for the completion that wraps; ENABLE: one each', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED), 8);
      await ring.setDriverEvent(RING_EVENT_FLAGS_DISABLE);
      expect(await ring.driverEvent()).toEqual({ offWrap: 0, flags: RING_EVENT_FLAGS_DISABLE });
      const mark = m.irq.mark();
      for (let k = 0; k < 10; k++) {
        const r = await rngRequest(ring, [{ len: 8, write: true }]);
        expect(r.used.len).toBe(8);
        expect(await rng.isr()).toBe(0);
      }
      expect([ring.nextUsed, ring.usedWrap]).toEqual([2, false]);
      expect(m.irq.count(INTX_IRQ, true, mark)).toBe(0);
      await ring.setDriverEvent(RING_EVENT_FLAGS_ENABLE);
      for (let k = 0; k < 2; k++) {
        const mk = m.irq.mark();
        await rngRequest(ring, [{ len: 8, write: true }]);
        await waitIrq(m, INTX_IRQ, true, { mark: mk });
        expect(await rng.isr()).toBe(1);
        await waitIrq(m, INTX_IRQ, false, { mark: mk });
      }
      expect(await ring.deviceEvent()).toEqual({ offWrap: 0, flags: RING_EVENT_FLAGS_ENABLE });
      await rng.reset();
    });

    it('EVENT_IDX: DESC at off_wrap decides; the first completion after reset and the wrapping one always interrupt', async () => {
      const ring = await rngUp(bit(VIRTIO_F_RING_PACKED) | bit(VIRTIO_RING_F_EVENT_IDX), 8);
      expect(ring.eventIdx).toBe(true);
      /** One request with the driver area set to DESC at `offWrap`; whether QEMU interrupted. */
      const step = async (offWrap: number): Promise<[number, number]> => {
        await ring.setDriverEvent(RING_EVENT_FLAGS_DESC, offWrap);
        const r = await rngRequest(ring, [{ len: 8, write: true }]);
        return [r.slot, await rng.isr()];
      };
      // Slot 0 of lap 1 requested, but also the first completion since reset.
      expect(await step(0x8005)).toEqual([0, 1]);
      // Interrupt when slot 2 of lap 1 is used: not for slot 1, for slot 2.
      expect(await step(0x8002)).toEqual([1, 0]);
      expect(await step(0x8002)).toEqual([2, 1]);
      // Slot 1 of the next lap (wrap counter 0): slots 3..6 stay quiet, slot 7 wraps the ring
      // (QEMU forgets its last signalled position then) and interrupts, slot 0 of the new lap
      // does not, slot 1 does.
      const got: [number, number][] = [];
      for (let k = 0; k < 7; k++) got.push(await step(0x0001));
      expect(got).toEqual([
        [3, 0],
        [4, 0],
        [5, 0],
        [6, 0],
        [7, 1],
        [0, 0],
        [1, 1],
      ]);
      // takeUsed moved off_wrap to the next used slot, as Linux's get_buf does under DESC.
      expect(await ring.driverEvent()).toEqual({ offWrap: 0x0002, flags: RING_EVENT_FLAGS_DESC });
      // suppressInterrupts(false) with EVENT_IDX asks for the next one: slot 2 interrupts.
      await ring.suppressInterrupts(false);
      const r = await rngRequest(ring, [{ len: 8, write: true }]);
      expect([r.slot, await rng.isr()]).toEqual([2, 1]);
      // virtio-rng never calls virtio_queue_set_notification: the device area is untouched.
      expect(await ring.deviceEvent()).toEqual({ offWrap: 0, flags: RING_EVENT_FLAGS_ENABLE });
      await rng.reset();
    });

    it('virtio-blk GET_ID: device area ENABLE (off_wrap untouched) without EVENT_IDX, DESC at its avail position with it', async () => {
      for (const eventIdx of [false, true]) {
        alloc.reset();
        const f = await blk.init(bit(VIRTIO_F_RING_PACKED) | (eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n));
        expect(f).toBe(bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_F_RING_PACKED) | (eventIdx ? bit(VIRTIO_RING_F_EVENT_IDX) : 0n));
        const ring = await blk.setupPackedQueue(0, { num: 8 });
        // A sentinel in the device area: off_wrap 0x7ead, flags 3 (reserved).
        await m.writeBytes(ring.addrs.used, Uint8Array.of(0xad, 0x7e, 0x03, 0x00));
        await blk.driverOk();
        const seen: [number, boolean, number, number, number][] = [];
        for (let k = 0; k < 4; k++) {
          const hdr = alloc.alloc(16, 16);
          const data = alloc.alloc(20, 16);
          const status = alloc.alloc(1, 1);
          await m.writeBytes(hdr, blkHeader(BLK_T_GET_ID, 0));
          await m.memset(data, 20, 0xee);
          await m.writeb(status, 0xff);
          const slot = ring.nextAvail;
          const wrap = ring.availWrap;
          const id = await ring.add([
            { addr: hdr, len: 16 },
            { addr: data, len: 20, write: true },
            { addr: status, len: 1, write: true },
          ]);
          const kick = await ring.needsNotify();
          await blk.notify(0);
          // QEMU writes the serial and its NUL, leaves the rest of the buffer, and reports the
          // whole device-writable size (20 + the status byte) as used len.
          expect(await ring.waitUsed(1)).toEqual([{ id, len: 21 }]);
          expect(await m.readb(status)).toBe(0);
          expect(new TextDecoder().decode(await m.readBytes(data, SERIAL.length))).toBe(SERIAL);
          expect([...(await m.readBytes(data + SERIAL.length, 20 - SERIAL.length))]).toEqual([0, ...Array(19 - SERIAL.length).fill(0xee)]);
          const d = await ring.descAt(slot);
          expect(d).toEqual({ addr: BigInt(hdr), len: 21, id, flags: wrap ? USED_WRAP1 : USED_WRAP0 });
          const ev = await ring.deviceEvent();
          seen.push([slot, kick, ev.offWrap, ev.flags, await blk.isr()]);
        }
        if (!eventIdx) {
          // ENABLE written over the sentinel's flags; off_wrap never written.
          expect(seen).toEqual([
            [0, true, 0x7ead, 0, 1],
            [3, true, 0x7ead, 0, 1],
            [6, true, 0x7ead, 0, 1],
            [1, true, 0x7ead, 0, 1],
          ]);
        } else {
          // DESC with off_wrap = where QEMU will look next: 3 and 6 in lap 1 (0x8003, 0x8006),
          // then 1 and 4 in lap 0. Our kick decision follows it: the first add (sentinel flags 3,
          // reserved: "not disabled") and every later one crosses QEMU's off_wrap.
          expect(seen).toEqual([
            [0, true, 0x8003, RING_EVENT_FLAGS_DESC, 1],
            [3, true, 0x8006, RING_EVENT_FLAGS_DESC, 1],
            [6, true, 0x0001, RING_EVENT_FLAGS_DESC, 1],
            [1, true, 0x0004, RING_EVENT_FLAGS_DESC, 1],
          ]);
          // Two chains added without a kick: QEMU's off_wrap (slot 4, lap 0) lies in the first.
          const q = ring;
          const bufs = (): { addr: number; len: number; write?: boolean }[] => [{ addr: alloc.alloc(16, 16), len: 16 }, { addr: alloc.alloc(1, 1), len: 1, write: true }];
          q.kicked();
          expect(await q.needsNotify()).toBe(false);
          await q.add(bufs(), { publish: false });
          expect(await q.needsNotify()).toBe(true);
          q.kicked();
          await q.add(bufs(), { publish: false });
          expect(await q.needsNotify()).toBe(false);
        }
        await blk.reset();
      }
    });
  });
  }
}
