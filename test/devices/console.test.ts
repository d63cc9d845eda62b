// virtio-serial (QEMU 7.2 hw/char/virtio-serial-bus.c, virtio-console.c) in-process: identity and
// the checks of its realize, ports and their ids, the control protocol, data both ways with
// throttling and back-pressure, the run state, emergency writes, reset.
import { describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import { CallbackChardev, MemoryChardev, NullChardev } from '../../src/devices/console/chardev.js';
import { StreamChardev } from '../../src/devices/console/backends/node.js';
import {
  VIRTIO_CONSOLE_BAD_ID as BAD_ID,
  VIRTIO_CONSOLE_CONSOLE_PORT as CONSOLE_PORT,
  VIRTIO_CONSOLE_DEVICE_READY as DEVICE_READY,
  VIRTIO_CONSOLE_PORT_ADD as PORT_ADD,
  VIRTIO_CONSOLE_PORT_NAME as PORT_NAME,
  VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY as PORT_READY,
  VIRTIO_CONSOLE_PORT_REMOVE as PORT_REMOVE,
  portQueues,
} from '../../src/devices/console/constants.js';
import { VirtIOSerial, VirtIOSerialPortError } from '../../src/devices/console/virtio-serial.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTIO_ID_CONSOLE } from '../../src/virtio/constants.js';
import { bringUp, consoleRig, dec, EMERG, enc, msg, MULTIPORT, probe } from '../support/console-rig.js';

const PORTS_ARGS = (extra: string[] = []) => ['-chardev', 'socket,id=c0,path=/nonexistent/c0,server=on,wait=off', '-chardev', 'socket,id=c1,path=/nonexistent/c1,server=on,wait=off', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=c0', '-device', 'virtserialport,chardev=c1,name=org.test.one', ...extra];

function pipes(...ids: string[]): { map: Map<string, MemoryChardev>; get: (id: string) => MemoryChardev } {
  const map = new Map(ids.map((id) => [id, new MemoryChardev(id)]));
  return { map, get: (id) => map.get(id)! };
}

describe('virtio-serial: identity (QEMU 7.2 defaults)', () => {
  it('device id 3, 64 queues for 31 ports (128, 128, 32, 32, 128...), config of 12 bytes, vmsd virtio-console v3', () => {
    const memory = GuestMemory.ofSize(1 << 20);
    const v = new VirtIOSerial({ memory });
    expect(v.deviceId).toBe(VIRTIO_ID_CONSOLE);
    expect(v.vq.length).toBe(64);
    expect(v.vq.slice(0, 6).map((q) => q.numDefault)).toEqual([128, 128, 32, 32, 128, 128]);
    expect(v.vq.slice(6).every((q) => q.numDefault === 128)).toBe(true);
    expect(v.configLen).toBe(12);
    expect(v.vmsdName).toBe('virtio-console');
    expect(v.vmsdVersion).toBe(3);
    expect(v.portsMap).toEqual(Uint32Array.of(1));
    expect(portQueues(0)).toEqual({ rx: 0, tx: 1 });
    expect(portQueues(30)).toEqual({ rx: 62, tx: 63 });
    // One port: the control queues are still there (QEMU adds them whatever max_ports is).
    expect(new VirtIOSerial({ memory, maxPorts: 1 }).vq.length).toBe(4);
    expect(new VirtIOSerial({ memory, maxPorts: 511 }).vq.length).toBe(1024);
    expect(new VirtIOSerial({ memory, emergencyWrite: false }).configLen).toBe(8);
  });

  it("refuses max_ports 0 and above 511 with QEMU's messages", () => {
    const memory = GuestMemory.ofSize(4096);
    expect(() => new VirtIOSerial({ memory, maxPorts: 0 })).toThrow('Maximum number of serial ports not specified');
    expect(() => new VirtIOSerial({ memory, maxPorts: 512 })).toThrow('maximum ports supported: 511');
  });

  it('offers MULTIPORT with more than one port and EMERG_WRITE unless emergency-write=off', async () => {
    const r = await consoleRig(['-device', 'virtio-serial-device']);
    expect((await r.drv.readDeviceFeatures()) & 7n).toBe(MULTIPORT | EMERG);
    const one = await consoleRig(['-device', 'virtio-serial-device,max_ports=1,emergency-write=off']);
    expect((await one.drv.readDeviceFeatures()) & 7n).toBe(0n);
    expect(one.vser.configLen).toBe(8);
  });

  it('config: cols and rows 0, max_nr_ports, emerg_wr reads 0', async () => {
    const r = await consoleRig(['-device', 'virtio-serial-device,max_ports=7']);
    await bringUp(r, []);
    expect(await r.con.readConfig(true)).toEqual({ cols: 0, rows: 0, maxNrPorts: 7, emergWr: 0 });
    // Out of the config: all ones.
    expect(await r.drv.configRead(12, 4)).toBe(0xffff_ffff);
  });
});

describe('virtio-serial: ports and their ids (virtser_port_device_realize)', () => {
  const memory = GuestMemory.ofSize(1 << 20);
  it('the first console takes 0, others the first free id; nr= is honoured', () => {
    const v = new VirtIOSerial({ memory });
    expect(v.addPort({}).id).toBe(1);
    expect(v.addPort({ console: true }).id).toBe(0);
    expect(v.addPort({ console: true }).id).toBe(2);
    expect(v.addPort({ nr: 9 }).id).toBe(9);
    expect(v.addPort({}).id).toBe(3);
    expect(v.portsMap[0]).toBe(0b1000001111);
  });

  it("refuses what QEMU refuses, with QEMU's messages", () => {
    const v = new VirtIOSerial({ memory, maxPorts: 4 });
    v.addPort({ nr: 2, name: 'a' });
    const err = (o: Parameters<VirtIOSerial['addPort']>[0], other?: (n: string) => boolean) => {
      try {
        v.addPort(o, other);
      } catch (e) {
        expect(e).toBeInstanceOf(VirtIOSerialPortError);
        return (e as Error).message;
      }
      return 'accepted';
    };
    expect(err({ nr: 2 })).toBe('virtio-serial-bus: A port already exists at id 2');
    expect(err({ name: 'a' })).toBe('virtio-serial-bus: A port already exists by name a');
    expect(err({ name: 'b' }, (n) => n === 'b')).toBe('virtio-serial-bus: A port already exists by name b');
    expect(err({ nr: 4 })).toBe('virtio-serial-bus: Out-of-range port id specified, max. allowed: 3');
    expect(err({ nr: 0 })).toBe('Port number 0 on virtio-serial devices reserved for virtconsole devices for backward compatibility.');
    expect(err({})).toBe('accepted'); // 1
    expect(err({})).toBe('accepted'); // 3
    expect(err({})).toBe('virtio-serial-bus: Out-of-range port id specified, max. allowed: 3');
    // A full 32-port word has no free id at all.
    const full = new VirtIOSerial({ memory, maxPorts: 32 });
    for (let i = 0; i < 31; i++) full.addPort({});
    expect(() => full.addPort({})).toThrow('virtio-serial-bus: Maximum port limit for this device reached');
    // A chardev serves one port.
    const w = new VirtIOSerial({ memory });
    const c = new NullChardev('c');
    w.addPort({ console: true, chardev: c });
    expect(() => w.addPort({ console: true, chardev: c })).toThrow("Device 'c' is in use");
  });

  it('a name stops at its first NUL, as a C string does', () => {
    const v = new VirtIOSerial({ memory });
    expect(v.addPort({ name: 'ab\0cd' }).name).toBe('ab');
  });
});

describe('virtio-serial: the control protocol', () => {
  it('DEVICE_READY → PORT_ADD per port in plug order; PORT_READY → CONSOLE_PORT, PORT_NAME, PORT_OPEN', async () => {
    const p = pipes('c0', 'c1');
    p.get('c1').setConnected(false);
    const r = await consoleRig(PORTS_ARGS(['-device', 'virtserialport,nr=5']), p.map);
    await bringUp(r, [0, 1, 5]);
    // PORT_ADD at plug time and the console's PORT_OPEN found no queue then: nothing is pending.
    expect(await r.con.takeControl()).toEqual([]);
    await r.con.sendControl(BAD_ID, DEVICE_READY, 1);
    expect((await r.con.takeControl()).map(msg)).toEqual([[0, PORT_ADD, 1], [1, PORT_ADD, 1], [5, PORT_ADD, 1]]);
    await r.con.sendControl(0, PORT_READY, 1);
    expect((await r.con.takeControl()).map(msg)).toEqual([[0, CONSOLE_PORT, 1], [0, PORT_OPEN, 1]]);
    await r.con.sendControl(1, PORT_READY, 1);
    const named = await r.con.takeControl();
    expect(named.map(msg)).toEqual([[1, PORT_NAME, 1]]);
    expect(dec(named[0]!.extra)).toBe('org.test.one\0');
    expect(named[0]!.len).toBe(8 + 13);
    await r.con.sendControl(5, PORT_READY, 1);
    expect(await r.con.takeControl()).toEqual([]);
    // The host side connects: PORT_OPEN 1; it goes: PORT_OPEN 0.
    p.get('c1').setConnected(true);
    expect((await r.con.takeControl()).map(msg)).toEqual([[1, PORT_OPEN, 1]]);
    p.get('c1').setConnected(false);
    expect((await r.con.takeControl()).map(msg)).toEqual([[1, PORT_OPEN, 0]]);
    // The guest opens and closes a port: its state follows, any non-zero value opens.
    await r.con.sendControl(5, PORT_OPEN, 7);
    expect(r.vser.findPortById(5)!.guestConnected).toBe(true);
    await r.con.sendControl(5, PORT_OPEN, 0);
    expect(r.vser.findPortById(5)!.guestConnected).toBe(false);
  });

  it('VSERPORT_CHANGE for a port with an id when the guest opens or closes it', async () => {
    const r = await consoleRig(['-device', 'virtio-serial-device', '-device', 'virtserialport,id=vp,nr=2']);
    const events: unknown[] = [];
    r.machine.eventListeners.add((name, data) => events.push([name, data]));
    await bringUp(r, [2]);
    await r.con.sendControl(2, PORT_OPEN, 1);
    await r.con.sendControl(2, PORT_OPEN, 0);
    const changes = () => events.filter((e) => (e as [string])[0] === 'VSERPORT_CHANGE');
    // QEMU's monitor sends at most one VSERPORT_CHANGE per id and second: the close comes
    // when the window ends (src/machine/event-throttle.ts).
    expect(changes()).toEqual([['VSERPORT_CHANGE', { id: 'vp', open: true }]]);
    for (let i = 0; i < 300 && changes().length < 2; i++) await new Promise((res) => setTimeout(res, 10));
    expect(changes()).toEqual([
      ['VSERPORT_CHANGE', { id: 'vp', open: true }],
      ['VSERPORT_CHANGE', { id: 'vp', open: false }],
    ]);
  });

  it('a control message with no receive buffer is not sent (counted), as in QEMU', async () => {
    const p = pipes('c0', 'c1');
    p.get('c1').setConnected(false);
    const r = await consoleRig(PORTS_ARGS(), p.map);
    await r.drv.init(MULTIPORT);
    await r.con.setupControl({ rxBuffers: 0 });
    await r.drv.driverOk();
    const before = r.vser.droppedControlMessages;
    await r.con.sendControl(BAD_ID, DEVICE_READY, 1);
    expect(r.vser.droppedControlMessages - before).toBe(2);
  });

  it('hot plug and unplug: PORT_ADD with a config interrupt, PORT_REMOVE; the id is free again', async () => {
    const r = await consoleRig(['-device', 'virtio-serial-device']);
    await bringUp(r, []);
    const gen = await r.drv.read(0xfc);
    const port = r.vser.addPort({ name: 'hot' });
    expect(port.id).toBe(1);
    expect((await r.con.takeControl()).map(msg)).toEqual([[1, PORT_ADD, 1]]);
    expect(await r.drv.read(0xfc)).toBe(gen + 1);
    r.vser.removePort(port);
    expect((await r.con.takeControl()).map(msg)).toEqual([[1, PORT_REMOVE, 1]]);
    expect(r.vser.portsMap[0]).toBe(1);
    expect(r.vser.addPort({}).id).toBe(1);
  });
});

describe('virtio-serial: data', () => {
  it('guest output: every readable descriptor of a chain, used.len 0; host input: split over buffers', async () => {
    const p = pipes('c0', 'c1');
    const r = await consoleRig(PORTS_ARGS(), p.map);
    await bringUp(r, [0, 1]);
    await probe(r, [0, 1]);
    const tx = r.con.port(1).tx;
    await tx.postChain([{ data: enc('a') }, { data: enc('bc') }, { data: enc('def') }]);
    await tx.notify();
    expect((await tx.take()).map((u) => u.len)).toEqual([0]);
    expect(p.get('c1').receiveText()).toBe('abcdef');
    const rx = r.con.port(1).rx;
    await rx.postIn(4, 3);
    await rx.notify();
    expect(p.get('c1').send('0123456789')).toBe(10);
    expect((await rx.take()).map((u) => [u.len, dec(u.data)])).toEqual([[4, '0123'], [4, '4567'], [2, '89']]);
  });

  it('a generic port throttles on a full chardev and resumes where it stopped: every byte once, in order', async () => {
    const slow = new MemoryChardev('c1', { outputLimit: 1000 });
    const r = await consoleRig(PORTS_ARGS(), new Map([['c0', new MemoryChardev('c0')], ['c1', slow]]));
    await bringUp(r, [1]);
    await probe(r, [1]);
    const tx = r.con.port(1).tx;
    const data = new Uint8Array(5000).map((_, i) => (i * 7) & 0xff);
    await tx.postChain([{ data: data.subarray(0, 1500) }, { data: data.subarray(1500, 3000) }]);
    await tx.postOut(data.subarray(3000));
    await tx.notify();
    const port = r.vser.findPortById(1)!;
    expect(port.throttled).toBe(true);
    expect(port.elem).toBeDefined();
    expect([port.iovIdx, port.iovOffset]).toEqual([0, 1000]);
    expect(await tx.take()).toEqual([]);
    const got: Uint8Array[] = [];
    for (let i = 0; i < 20 && got.reduce((a, b) => a + b.length, 0) < 5000; i++) {
      got.push(slow.receive());
      await new Promise((res) => setTimeout(res, 0));
    }
    const all = new Uint8Array(got.reduce((a, b) => a + b.length, 0));
    let o = 0;
    for (const g of got) {
      all.set(g, o);
      o += g.length;
    }
    expect(all).toEqual(data);
    expect((await tx.take()).map((u) => u.len)).toEqual([0, 0]);
    expect(port.throttled).toBe(false);
  });

  it('a console is never throttled: what its chardev refuses is dropped and counted, as QEMU does', async () => {
    const slow = new MemoryChardev('c0', { outputLimit: 10 });
    const r = await consoleRig(PORTS_ARGS(), new Map([['c0', slow], ['c1', new MemoryChardev('c1')]]));
    await bringUp(r, [0]);
    await probe(r, [0]);
    const tx = r.con.port(0).tx;
    await tx.postOut(enc('0123456789abcdef'));
    await tx.notify();
    expect((await tx.take()).map((u) => u.len)).toEqual([0]);
    expect(slow.receiveText()).toBe('0123456789');
    expect(r.vser.findPortById(0)!.droppedOutput).toBe(6);
  });

  it('host input waits, bounded, while the guest posts no buffer; the source is refused and told when to retry', async () => {
    const pipe = new MemoryChardev('c1', { inputLimit: 256 });
    const r = await consoleRig(PORTS_ARGS(), new Map([['c0', new MemoryChardev('c0')], ['c1', pipe]]));
    await bringUp(r, [1]);
    await probe(r, [1]);
    let spaces = 0;
    pipe.onSpace = () => spaces++;
    const data = new Uint8Array(1000).map((_, i) => i & 0xff);
    expect(pipe.send(data)).toBe(256);
    expect(pipe.send(data.subarray(256))).toBe(0);
    expect(pipe.pendingInput).toBe(256);
    const rx = r.con.port(1).rx;
    await rx.postIn(100, 2);
    await rx.notify();
    expect(pipe.pendingInput).toBe(56);
    expect(spaces).toBe(1);
    expect(pipe.send(data.subarray(256))).toBe(200);
    const seen = (await rx.take()).map((u) => u.data);
    await rx.postIn(1000, 1);
    await rx.notify();
    seen.push(...(await rx.take()).map((u) => u.data));
    expect(Buffer.concat(seen)).toEqual(Buffer.from(data.subarray(0, 456)));
  });

  it('a Node stream source is paused at the limit and resumed once the guest reads', async () => {
    const src = new Readable({ read() {} });
    const chr = new StreamChardev('s', src, undefined, { inputLimit: 1024 });
    const r = await consoleRig(['-chardev', 'stdio,id=s', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=s'], new Map([['s', chr]]));
    await bringUp(r, [0]);
    await probe(r, [0]);
    for (let i = 0; i < 8; i++) src.push(Buffer.alloc(512, i));
    await new Promise((res) => setTimeout(res, 10));
    expect(src.isPaused()).toBe(true);
    expect(chr.pendingInput).toBeLessThanOrEqual(1024 + 512);
    const rx = r.con.port(0).rx;
    let total = 0;
    for (let i = 0; i < 10 && total < 4096; i++) {
      await rx.postIn(4096, 1);
      await rx.notify();
      for (const u of await rx.take()) total += u.len;
      await new Promise((res) => setTimeout(res, 5));
    }
    expect(total).toBe(4096);
    expect(src.isPaused()).toBe(false);
  });

  it('a port without a host side returns what the guest writes unused; a null chardev swallows it', async () => {
    const r = await consoleRig(['-chardev', 'null,id=n', '-device', 'virtio-serial-device', '-device', 'virtserialport,nr=1', '-device', 'virtconsole,chardev=n']);
    await bringUp(r, [0, 1]);
    await probe(r, [0, 1]);
    expect(r.vser.findPortById(1)!.hostConnected).toBe(false);
    expect(r.vser.findPortById(0)!.hostConnected).toBe(true);
    for (const id of [0, 1]) {
      const tx = r.con.port(id).tx;
      await tx.postOut(enc('x'));
      await tx.notify();
      expect((await tx.take()).map((u) => u.len)).toEqual([0]);
    }
  });

  it('callbacks: output handed over as it comes, input refused beyond the limit', async () => {
    const out: string[] = [];
    const cb = new CallbackChardev('cb', { output: (d) => void out.push(dec(d)), inputLimit: 4 });
    const r = await consoleRig(['-chardev', 'stdio,id=cb', '-device', 'virtio-serial-device', '-device', 'virtserialport,chardev=cb,nr=1'], new Map([['cb', cb]]));
    await bringUp(r, [1]);
    await probe(r, [1]);
    await r.con.write(1, enc('hello'));
    expect(out).toEqual(['hello']);
    expect(cb.input('abcdef')).toBe(4);
  });
});

describe('virtio-serial: run state, reset, emergency writes, single port', () => {
  it('while the VM is stopped no guest RAM is touched: input waits, notifies wait, events wait', async () => {
    const p = pipes('c0', 'c1');
    const r = await consoleRig(PORTS_ARGS(), p.map);
    await bringUp(r, [1]);
    await probe(r, [1]);
    const rx = r.con.port(1).rx;
    await rx.postIn(64, 2);
    await rx.notify();
    r.machine.vmStop('paused');
    const ram = r.machine.sys.ram;
    const snapshot = ram.view(0x10_0000, 0x10_0000)!.slice();
    p.get('c1').send('while stopped');
    const tx = r.con.port(1).tx;
    await tx.postOut(enc('out'));
    await tx.notify();
    p.get('c1').setConnected(false);
    // Only the driver's own writes (the tx buffer and ring) changed RAM; nothing from the device.
    const after = ram.view(0x10_0000, 0x10_0000)!;
    const changed: number[] = [];
    for (let i = 0; i < after.length; i++) if (after[i] !== snapshot[i]) changed.push(i);
    expect(await rx.take()).toEqual([]);
    expect(await tx.take()).toEqual([]);
    expect(p.get('c1').outputPending).toBe(0);
    expect(changed.length).toBeGreaterThan(0);
    r.machine.vmStart();
    expect((await rx.take()).map((u) => dec(u.data))).toEqual(['while stopped']);
    // The host side closed while stopped: caught up at resume (the guest's output is returned).
    expect((await r.con.takeControl()).map(msg)).toEqual([[1, PORT_OPEN, 0]]);
    expect((await tx.take()).map((u) => u.len)).toEqual([0]);
  });

  it('emergency writes: before negotiation, to the first console open on the host side, low byte only', async () => {
    const p = pipes('c0', 'c1');
    const r = await consoleRig(PORTS_ARGS(), p.map);
    await r.drv.setStatus(0);
    await r.drv.configWrite(8, 4, 0x41);
    await r.drv.configWrite(8, 1, 0x42);
    await r.drv.configWrite(9, 1, 0x43); // the field reads 0x4300: its low byte is 0
    expect([...p.get('c0').receive()]).toEqual([0x41, 0x42, 0]);
    expect(await r.drv.configRead(8, 4)).toBe(0);
    expect(p.get('c1').outputPending).toBe(0);
    const c0 = new MemoryChardev('c0');
    const off = await consoleRig(['-chardev', 'stdio,id=c0', '-device', 'virtio-serial-device,emergency-write=off', '-device', 'virtconsole,chardev=c0'], new Map([['c0', c0]]));
    await off.drv.configWrite(8, 4, 0x41);
    expect(c0.outputPending).toBe(0);
  });

  it('without MULTIPORT, port 0 is open to the guest once the driver is up', async () => {
    const p = pipes('c0', 'c1');
    const r = await consoleRig(PORTS_ARGS(), p.map);
    await bringUp(r, [0], 0n, false);
    expect(r.vser.findPortById(0)!.guestConnected).toBe(true);
    await r.con.write(0, enc('single'));
    expect(p.get('c0').receiveText()).toBe('single');
  });

  it('reset closes the guest side of every port and drops a held element', async () => {
    const slow = new MemoryChardev('c1', { outputLimit: 2 });
    const r = await consoleRig(PORTS_ARGS(), new Map([['c0', new MemoryChardev('c0')], ['c1', slow]]));
    await bringUp(r, [1]);
    await probe(r, [1]);
    await r.con.write(1, enc('abcdef'), { wait: false });
    const port = r.vser.findPortById(1)!;
    expect(port.elem).toBeDefined();
    await r.drv.reset();
    expect(port.guestConnected).toBe(false);
    expect(port.elem).toBeUndefined();
    expect(r.vser.ovqs[1]!.inuse).toBe(0);
  });
});
