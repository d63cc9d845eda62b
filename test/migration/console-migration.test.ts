// virtio-serial migration, ours to ours, and the device state's own checks (QEMU 7.2
// virtio_serial_save_device / virtio_serial_load_device, spec/qemu-virtio-migration.md §4):
// a whole machine migrated with ports open, an element popped by a throttled port, data pending
// both ways, the guest carrying on at the destination; and device states QEMU would take blindly
// or refuse, refused here with the field named.
import { describe, expect, it } from 'vitest';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { ConsoleDriver } from '../../src/driver/console.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import { MICROVM_MMIO_BASE, VirtioMmioDriver } from '../../src/driver/virtio-mmio-driver.js';
import { MemoryChardev } from '../../src/devices/console/chardev.js';
import { VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN } from '../../src/devices/console/constants.js';
import { VirtIOSerial, type VirtIOSerialPort } from '../../src/devices/console/virtio-serial.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import type { MicrovmMachine } from '../../src/machine/microvm.js';
import { MigrationError, QEMUFileReader, QEMUFileWriter } from '../../src/migration/qemu-file.js';
import { loadVm, saveVm } from '../../src/migration/savevm.js';
import { formatInspect, inspectStream } from '../../src/migration/inspect.js';
import type { DecodedField } from '../../src/migration/virtio-decode.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { saveVirtQueueElement } from '../../src/migration/virtqueue-element.js';
import { SwappableMachine } from '../../src/oracle/migration.js';
import { VIRTIO_F_VERSION_1, bit } from '../../src/virtio/constants.js';
import { VirtQueueElement } from '../../src/vring/element.js';
import { dec, EMERG, enc, msg, MULTIPORT, probe } from '../support/console-rig.js';

const ARGS = ['-machine', 'microvm', '-m', '16M', '-global', 'virtio-mmio.force-legacy=false', '-chardev', 'null,id=c0', '-chardev', 'null,id=c1', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=c0', '-device', 'virtserialport,chardev=c1,name=org.test.one'];

function machine(c1: MemoryChardev): { m: MicrovmMachine; vser: VirtIOSerial; guest: InProcessMachine; c0: MemoryChardev } {
  const c0 = new MemoryChardev('c0');
  const b = createMachineFromArgs(ARGS, { chardevs: new Map([['c0', c0], ['c1', c1]]) });
  return { m: b.built.machine as MicrovmMachine, vser: b.built.devices[0]!.device as VirtIOSerial, guest: new InProcessMachine(b.target), c0 };
}

describe('virtio-serial migration, ours to ours', () => {
  it('ports open, a throttled element popped, data pending both ways: every byte once, the guest carries on', async () => {
    const srcOut = new MemoryChardev('c1', { outputLimit: 1000 });
    const src = machine(srcOut);
    const sm = new SwappableMachine(src.guest);
    const alloc = new GuestAllocator();
    const drv = new VirtioMmioDriver(sm, MICROVM_MMIO_BASE + 0x200 * 23, { alloc });
    await drv.init(MULTIPORT | EMERG | bit(VIRTIO_F_VERSION_1));
    const con = new ConsoleDriver(drv, alloc);
    await con.setupControl({ rxBuffers: 8 });
    await con.setupPort(0);
    await con.setupPort(1);
    await con.controlRx!.notify();
    await drv.driverOk();
    await probe({ con } as Parameters<typeof probe>[0], [0, 1]);
    // Guest to host: 5000 bytes in two buffers; the chardev takes 1000 and the port holds the rest.
    const data = new Uint8Array(5000).map((_, i) => (i * 13 + 1) & 0xff);
    const tx = con.port(1).tx;
    await tx.postOut(data.subarray(0, 3000));
    await tx.postOut(data.subarray(3000));
    await tx.notify();
    const port = src.vser.findPortById(1)!;
    expect([port.throttled, port.iovIdx, port.iovOffset]).toEqual([true, 0, 1000]);
    // Host to guest: receive buffers posted and not filled yet.
    const rx = con.port(1).rx;
    await rx.postIn(32, 2);
    await rx.notify();

    // Migrate: the source stops, its stream loads into a stopped destination, which then runs.
    src.m.vmStop('finish-migrate');
    const bytes = saveVm(src.m, { runState: 'running' });
    const dstOut = new MemoryChardev('c1', { opened: false });
    const dst = machine(dstOut);
    dst.m.runState = 'inmigrate';
    loadVm(dst.m, bytes);
    const dport = dst.vser.findPortById(1)!;
    expect([dport.guestConnected, dport.hostConnected, dport.iovOffset]).toEqual([true, false, 1000]);
    expect(dport.elem?.outNum).toBe(1);
    // The inspector decodes the device state field by field.
    const report = inspectStream(bytes);
    const sec = report.sections.find((x) => x.idstr.endsWith('/virtio-console'))!;
    const group = sec.virtio!.fields.find((f) => f.name === 'virtio-console')!;
    const flat = (fs: readonly DecodedField[]): DecodedField[] => fs.flatMap((f) => [f, ...flat(f.children ?? [])]);
    const val = (name: string) => flat(group.children!).filter((f) => f.name === name).map((f) => f.value);
    expect(val('config.max_nr_ports')).toEqual([31]);
    expect(val('ports_map[0]')).toEqual([3]);
    expect(val('id')).toEqual([0, 1]);
    expect(val('elem_popped')).toEqual([0, 1]);
    expect(val('iov_offset')).toEqual([1000n]);
    expect(val('out_num')).toEqual([1]);
    expect(formatInspect(report)).toMatch(/virtio-console/);
    // Re-saved, the destination writes the same stream but for its own host side (port 1 closed).
    const again = saveVm(dst.m, { runState: 'running' });
    const diffs: number[] = [];
    for (let i = 0; i < bytes.length; i++) if (again[i] !== bytes[i]) diffs.push(i);
    expect(again.length).toBe(bytes.length);
    expect(diffs.length).toBe(1);
    expect([bytes[diffs[0]!], again[diffs[0]!]]).toEqual([1, 0]);
    sm.swap(dst.guest);
    dstOut.setConnected(true);
    dst.m.vmStart();
    // The destination's host side opened while it waited to run: announced once it runs (as QEMU
    // replays OPENED then); the post-load step then finds it as the source had it.
    expect((await con.takeControl()).map(msg)).toEqual([[1, PORT_OPEN, 1]]);
    // Host side open: the held element and the queued buffer flow from byte 1000 on.
    const rest = dstOut.receive();
    expect(Buffer.concat([srcOut.receive(), rest])).toEqual(Buffer.from(data));
    expect((await tx.take()).map((u) => u.len)).toEqual([0, 0]);
    dstOut.send('after');
    expect((await rx.take()).map((u) => dec(u.data))).toEqual(['after']);
    await con.write(0, enc('console still there'));
    expect(dst.c0.receiveText()).toBe('console still there');
  });
});

describe('virtio-serial migration: the host side at the destination', () => {
  it('a port open on the source and closed at the destination is announced closed once the VM runs (the post-load step)', async () => {
    const src = machine(new MemoryChardev('c1'));
    const alloc = new GuestAllocator();
    const sm = new SwappableMachine(src.guest);
    const drv = new VirtioMmioDriver(sm, MICROVM_MMIO_BASE + 0x200 * 23, { alloc });
    await drv.init(MULTIPORT | bit(VIRTIO_F_VERSION_1));
    const con = new ConsoleDriver(drv, alloc);
    await con.setupControl({ rxBuffers: 8 });
    await con.setupPort(1);
    await con.controlRx!.notify();
    await drv.driverOk();
    await probe({ con } as Parameters<typeof probe>[0], [1]);
    src.m.vmStop('finish-migrate');
    const dst = machine(new MemoryChardev('c1', { opened: false }));
    dst.m.runState = 'inmigrate';
    loadVm(dst.m, saveVm(src.m));
    sm.swap(dst.guest);
    expect(await con.takeControl()).toEqual([]);
    dst.m.vmStart();
    expect((await con.takeControl()).map(msg)).toEqual([[1, PORT_OPEN, 0]]);
    // The guest side stays as the source had it.
    expect(dst.vser.findPortById(1)!.guestConnected).toBe(true);
  });
});

describe('virtio-serial device state: what a load refuses (QEMU fails these with -EINVAL or takes them blindly)', () => {
  const memory = GuestMemory.ofSize(1 << 20);
  function device(): { v: VirtIOSerial; p1: VirtIOSerialPort } {
    const v = new VirtIOSerial({ memory });
    v.addPort({ console: true });
    const p1 = v.addPort({ name: 'x' });
    return { v, p1 };
  }
  const ctx = { peekRam: (gpa: number, len: number) => memory.view(gpa, len), writable: (gpa: number, len: number) => memory.isWritableRange(gpa, len), queueNum: () => 128 };
  type Entry = { id: number; guest?: number; host?: number; elem?: { iovIdx: number; iovOffset: bigint; out: [number, number][] } };
  function state(map: number, entries: Entry[], nr = entries.length): Uint8Array {
    const f = new QEMUFileWriter();
    f.putBe16(0);
    f.putBe16(0);
    f.putBe32(31);
    f.putBe32(map);
    f.putBe32(nr);
    for (const e of entries) {
      f.putBe32(e.id);
      f.putByte(e.guest ?? 1);
      f.putByte(e.host ?? 0);
      f.putBe32(e.elem ? 1 : 0);
      if (e.elem) {
        f.putBe32(e.elem.iovIdx);
        f.putBe64(e.elem.iovOffset);
        const el = new VirtQueueElement(memory);
        el.index = 3;
        el.outNum = e.elem.out.length;
        el.ensureCapacity(el.outNum);
        e.elem.out.forEach(([a, l], i) => {
          el.sgAddr[i] = a;
          el.sgLen[i] = l;
        });
        saveVirtQueueElement(f, el);
      }
    }
    return f.bytes();
  }
  const load = (v: VirtIOSerial, bytes: Uint8Array): (() => void) => v.loadDeviceState(new QEMUFileReader(bytes), 3, ctx);
  const refusal = (v: VirtIOSerial, bytes: Uint8Array): string => {
    try {
      load(v, bytes);
    } catch (e) {
      expect(e).toBeInstanceOf(MigrationError);
      return (e as MigrationError).message;
    }
    return 'loaded';
  };

  it('a valid state loads and applies: ports, guest side, element and resume position', () => {
    const { v, p1 } = device();
    load(v, state(0b11, [{ id: 0 }, { id: 1, elem: { iovIdx: 1, iovOffset: 5n, out: [[0x1000, 16], [0x2000, 16]] } }]))();
    expect(p1.guestConnected).toBe(true);
    expect([p1.iovIdx, p1.iovOffset, p1.elem?.index, p1.elem?.outNum]).toEqual([1, 5, 3, 2]);
  });

  it('refuses other ports, unknown or repeated ids, too many entries, bools other than 0/1, resume positions outside the element', () => {
    const { v } = device();
    expect(refusal(v, state(0b111, [{ id: 0 }]))).toMatch(/ports_map\[0\].*ports differ/);
    expect(refusal(v, state(0b11, [{ id: 7 }]))).toMatch(/port\[0\]\.id.*no port with id 7/);
    expect(refusal(v, state(0b11, [{ id: 1 }, { id: 1 }]))).toMatch(/port 1 appears twice/);
    expect(refusal(v, state(0b11, [{ id: 1 }], 3))).toMatch(/nr_active_ports/);
    expect(refusal(v, state(0b11, [{ id: 1 }], 0xffff_ffff))).toMatch(/nr_active_ports/);
    expect(refusal(v, state(0b11, [{ id: 1, guest: 2 }]))).toMatch(/guest_connected.*not a bool/);
    expect(refusal(v, state(0b11, [{ id: 1, host: 0xff }]))).toMatch(/host_connected.*not a bool/);
    expect(refusal(v, state(0b11, [{ id: 1, elem: { iovIdx: 3, iovOffset: 0n, out: [[0x1000, 16]] } }]))).toMatch(/iov_idx 3/);
    expect(refusal(v, state(0b11, [{ id: 1, elem: { iovIdx: 0, iovOffset: 16n, out: [[0x1000, 16]] } }]))).toMatch(/iov_offset 16/);
    expect(refusal(v, state(0b11, [{ id: 1, elem: { iovIdx: 0, iovOffset: 1n << 63n, out: [[0x1000, 16]] } }]))).toMatch(/iov_offset/);
    // An element's buffer outside RAM: QEMU exits ("error trying to map MMIO memory").
    expect(refusal(v, state(0b11, [{ id: 1, elem: { iovIdx: 0, iovOffset: 0n, out: [[0x10_0000, 16]] } }]))).toMatch(/map MMIO memory/);
    // Cut short anywhere: a MigrationError, never a throw of another kind.
    const good = state(0b11, [{ id: 0 }, { id: 1, elem: { iovIdx: 0, iovOffset: 1n, out: [[0x1000, 16]] } }]);
    for (let n = 0; n < good.length; n += 97) expect(refusal(v, good.subarray(0, n))).not.toBe('loaded');
  });

  it('round trip of the device blob (no transport): the same bytes again', () => {
    const { v } = device();
    const blob = saveVirtioDevice(v);
    const { v: w } = device();
    loadVirtioDevice(w, blob);
    expect(Buffer.from(saveVirtioDevice(w)).equals(Buffer.from(blob))).toBe(true);
  });
});
