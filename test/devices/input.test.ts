// virtio-input (QEMU's hw/input/virtio-input*.c) at device level: configuration answers byte for
// byte, reports delivered whole or not at all, the optional backlog, the status queue, routing,
// the browser adapter, hostile rings (no exception, no write outside the event buffers) and a
// device-level migration round trip.
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { BrowserInput, scaleAxis } from '../../src/devices/input/browser.js';
import { EV_KEY, EV_SYN, VIRTIO_INPUT_CFG_EV_BITS, VIRTIO_INPUT_CFG_ID_NAME, VIRTIO_INPUT_CFG_ID_SERIAL } from '../../src/devices/input/evdev.js';
import { VirtIOKeyboard, VirtIOMouse, VirtIOTablet, type VirtIOInputHIDOptions } from '../../src/devices/input/hid.js';
import { htmlCodeToQcode, INPUT_EVENT_MASK_KEY, qcodeToLinux, qnumToQcode, QKEYCODES } from '../../src/devices/input/keycodes.js';
import { InputRouter, sinkHandler } from '../../src/devices/input/router.js';
import type { VirtIOInput } from '../../src/devices/input/virtio-input.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../src/virtio/constants.js';
import { modernAddrs } from '../support/harness.js';

const RAM = 1 << 20;
const EVQ = 0x10000;
const STQ = 0x20000;
const BUF = 0x80000;

type Kind = 'keyboard' | 'mouse' | 'tablet';

function make(kind: Kind, opts: Partial<VirtIOInputHIDOptions> = {}, memory = GuestMemory.ofSize(RAM)) {
  const errors: string[] = [];
  const o: VirtIOInputHIDOptions = { memory, onError: (m) => errors.push(m), ...opts };
  const dev = kind === 'keyboard' ? new VirtIOKeyboard(o) : kind === 'mouse' ? new VirtIOMouse(o) : new VirtIOTablet(o);
  let irqs = 0;
  const mmio = new VirtioMmioTransport(dev, { legacy: false, irq: (l) => void (l && irqs++) });
  const drv = new MmioDriver(mmio, memory);
  return { dev, mmio, drv, mem: memory, errors, irqs: () => irqs };
}

type Rig = ReturnType<typeof make>;

function up(r: Rig, num = 64): { evq: SplitRingDriver; stq: SplitRingDriver } {
  r.drv.init(0n);
  const evq = r.drv.setupQueue(0, { num, addrs: modernAddrs(EVQ, num), base: EVQ });
  const stq = r.drv.setupQueue(1, { num, addrs: modernAddrs(STQ, num), base: STQ });
  r.drv.driverOk();
  return { evq, stq };
}

/** Post `n` 8-byte event buffers at BUF + 16 * i. */
function post(_r: Rig, evq: SplitRingDriver, n: number, from = 0): number[] {
  const heads: number[] = [];
  for (let i = from; i < from + n; i++) heads.push(evq.add([{ addr: BUF + 16 * i, len: 8, write: true }]));
  return heads;
}

function events(r: Rig, used: readonly { id: number; len: number }[], heads: readonly number[], from = 0): string[] {
  return used.map((u) => {
    const i = heads.indexOf(u.id) + from;
    const dv = new DataView(r.mem.view(BUF + 16 * i, 8)!.slice().buffer);
    return `${dv.getUint16(0, true)}:${dv.getUint16(2, true)}:${dv.getInt32(4, true)}`;
  });
}

/** A driver write into the device configuration (virtio-mmio config window at 0x100). */
function cfgw(r: Rig, offset: number, size: 1 | 2 | 4, value: number): void {
  r.mmio.write(0x100 + offset, size, value);
}

/** Ask a question and read the whole config window. */
function ask(r: Rig, select: number, subsel: number): Uint8Array {
  cfgw(r, 0, 1, select);
  cfgw(r, 1, 1, subsel);
  const out = new Uint8Array(r.dev.configLen);
  for (let i = 0; i < out.length; i++) out[i] = r.drv.configRead(i, 1);
  return out;
}

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('virtio-input: configuration answers (as QEMU 7.2 gives them)', () => {
  it('keyboard: 37-byte config, name with its NUL counted, devids, EV_REP, EV_LED, the EV_KEY bitmap of every mapped key', () => {
    const r = make('keyboard');
    expect(r.dev.configLen).toBe(37);
    expect(r.dev.deviceId).toBe(18);
    expect(hex(ask(r, 1, 0)).slice(0, 6 + 2 * 5 + 42)).toBe('010015' + '0000000000' + Buffer.from('QEMU Virtio Keyboard').toString('hex') + '00');
    expect(hex(ask(r, 3, 0)).slice(0, 32)).toBe('0300080000000000' + '0600270601000100');
    expect(hex(ask(r, 0x11, 0x14)).slice(0, 18)).toBe('111401000000000000');
    expect(hex(ask(r, 0x11, 0x11)).slice(0, 18)).toBe('111101000000000007');
    // The 29-byte bitmap QEMU 7.2.22 answers (captured from qemu-system-x86_64).
    expect(hex(ask(r, 0x11, 0x01))).toBe('11011d0000000000feffffffffffffffffffcf7bffffbefeffdf00f8783000000000000004');
  });

  it('mouse and tablet: 51 bytes, buttons up to BTN_GEAR_UP, wheel in EV_REL, the tablet axes 0..0x7fff', () => {
    const m = make('mouse');
    expect(m.dev.configLen).toBe(51);
    expect(hex(ask(m, 0x11, 0x02)).slice(0, 20)).toBe('11020200000000000301');
    expect(hex(ask(m, 3, 0)).slice(16, 32)).toBe('0600270602000200');
    const t = make('tablet');
    expect(hex(ask(t, 0x11, 0x03)).slice(0, 18)).toBe('110301000000000003');
    expect(hex(ask(t, 0x12, 0x01)).slice(0, 56)).toBe('1201140000000000' + '00000000ff7f0000' + '000000000000000000000000');
    expect(hex(ask(t, 0x11, 0x02)).slice(0, 20)).toBe('11020200000000000001');
  });

  it('a question without an answer reads all zeros, select and subsel included', () => {
    const r = make('keyboard');
    for (const [s, sub] of [[0x42, 0], [0x11, 0x1f], [0x12, 0], [0x10, 0], [VIRTIO_INPUT_CFG_ID_SERIAL, 0]] as const) {
      expect(ask(r, s, sub).every((x) => x === 0), `select ${s} subsel ${sub}`).toBe(true);
    }
    // Reads past the config answer all ones; writes there are ignored.
    expect(r.drv.configRead(r.dev.configLen, 1)).toBe(0xff);
  });

  it('serial: answered at ID_SERIAL with the length as size; a size byte too large is refused (QEMU aborts)', () => {
    const r = make('keyboard', { serial: 'kbd-1' });
    expect(hex(ask(r, VIRTIO_INPUT_CFG_ID_SERIAL, 0)).slice(0, 26)).toBe('0200050000000000' + Buffer.from('kbd-1').toString('hex'));
    // 300 characters: snprintf's return value kept in a uint8_t (44), the string cut at 127.
    const long = make('keyboard', { serial: 'x'.repeat(300) });
    expect(long.dev.findConfig(VIRTIO_INPUT_CFG_ID_SERIAL, 0)!.size).toBe(44);
    expect(long.dev.configLen).toBe(52);
    expect(() => make('keyboard', { serial: 'x'.repeat(130) })).toThrow(RangeError);
  });

  it('every write asks anew, and with DRIVER_OK notifies a configuration change', () => {
    const r = make('keyboard');
    ask(r, VIRTIO_INPUT_CFG_ID_NAME, 0);
    expect(r.dev.generation).toBe(0);
    up(r);
    cfgw(r, 0, 1, VIRTIO_INPUT_CFG_EV_BITS);
    expect(r.dev.generation).toBe(1);
    expect(r.drv.interruptStatus() & 2).toBe(2);
    cfgw(r, 8, 4, 0xdeadbeef); // into the answer: re-asks the same question
    expect(r.dev.generation).toBe(2);
    expect(r.drv.configRead(8, 4)).toBe(0);
  });
});

describe('virtio-input: reports', () => {
  it('a key press is EV_KEY then EV_SYN, one buffer each, one interrupt', () => {
    const r = make('keyboard');
    const { evq } = up(r);
    const heads = post(r, evq, 4);
    r.drv.notify(0);
    r.dev.event({ type: 'key', qcode: 'a', down: true });
    r.dev.sync();
    expect(events(r, evq.takeUsed(), heads)).toEqual([`${EV_KEY}:30:1`, `${EV_SYN}:0:0`]);
    expect(r.irqs()).toBe(1);
  });

  it('a report that finds too few buffers is dropped whole, and the buffers stay for the next one', () => {
    const r = make('keyboard');
    const { evq } = up(r);
    const heads = post(r, evq, 2);
    r.dev.event({ type: 'key', qcode: 'a', down: true });
    r.dev.event({ type: 'key', qcode: 'b', down: true });
    r.dev.sync();
    expect(evq.usedIdx()).toBe(0);
    expect(r.dev.droppedReports).toBe(1);
    expect(r.dev.evt.lastAvailIdx).toBe(0);
    r.dev.event({ type: 'key', qcode: 'c', down: true });
    r.dev.sync();
    expect(events(r, evq.takeUsed(), heads)).toEqual(['1:46:1', '0:0:0']);
  });

  it('a report of more events than any ring holds is dropped, at bounded cost', () => {
    const r = make('mouse');
    const { evq } = up(r, 64);
    post(r, evq, 64);
    for (let i = 0; i < 5000; i++) r.dev.event({ type: 'rel', axis: 'x', value: 1 });
    r.dev.sync();
    expect(evq.usedIdx()).toBe(0);
    r.dev.event({ type: 'rel', axis: 'y', value: -2 });
    r.dev.sync();
    expect(evq.takeUsed().length).toBe(2);
  });

  it('with a backlog, reports wait (in order, bounded, oldest dropped first) and go out when buffers come', () => {
    const r = make('keyboard', { backlog: 4 });
    const { evq } = up(r);
    for (const q of ['a', 'b', 'c']) {
      r.dev.event({ type: 'key', qcode: q, down: true });
      r.dev.sync();
    }
    // Three reports of two events each: the bound of four keeps the last two.
    expect(r.dev.waitingReports).toBe(2);
    expect(r.dev.droppedReports).toBe(1);
    const heads = post(r, evq, 8);
    r.drv.notify(0);
    expect(events(r, evq.takeUsed(), heads)).toEqual(['1:48:1', '0:0:0', '1:46:1', '0:0:0']);
    expect(r.dev.waitingReports).toBe(0);
  });

  it('inactive (before DRIVER_OK, after reset) and stopped devices deliver nothing', () => {
    const r = make('keyboard');
    r.dev.event({ type: 'key', qcode: 'a', down: true });
    r.dev.sync();
    const { evq } = up(r);
    post(r, evq, 4);
    r.dev.vmStateChange(false);
    r.dev.event({ type: 'key', qcode: 'a', down: true });
    r.dev.sync();
    expect(r.mem.view(BUF, 64)!.every((x) => x === 0)).toBe(true);
    r.dev.vmStateChange(true);
    r.drv.reset();
    expect(r.dev.active).toBe(false);
  });

  it('mouse: buttons, wheel as REL_WHEEL (its release as BTN_GEAR_*), unmapped buttons send only the SYN', () => {
    const r = make('mouse');
    const { evq } = up(r);
    const heads = post(r, evq, 16);
    r.drv.notify(0);
    for (const e of [
      { type: 'btn', button: 'wheel-up', down: true },
      { type: 'btn', button: 'wheel-up', down: false },
      { type: 'btn', button: 'wheel-left', down: true },
      { type: 'rel', axis: 'y', value: -3 },
    ] as const) r.dev.event(e);
    r.dev.sync();
    expect(events(r, evq.takeUsed(), heads)).toEqual(['2:8:1', '1:337:0', '2:1:-3', '0:0:0']);
    // wheel-axis off: the wheel is two buttons.
    const r2 = make('mouse', { wheelAxis: false });
    const q2 = up(r2).evq;
    const h2 = post(r2, q2, 4);
    r2.dev.event({ type: 'btn', button: 'wheel-down', down: true });
    r2.dev.sync();
    expect(events(r2, q2.takeUsed(), h2)).toEqual(['1:336:1', '0:0:0']);
  });

  it('event buffers of odd shapes: as much of the 8 bytes as they take, a readable-only one gets 0', () => {
    const r = make('tablet');
    const { evq } = up(r);
    const a = evq.add([{ addr: BUF, len: 4, write: true }]);
    const b = evq.add([{ addr: BUF + 0x100, len: 8, write: false }]);
    r.drv.notify(0);
    r.dev.event({ type: 'abs', axis: 'x', value: 0x1234 });
    r.dev.sync();
    expect(evq.takeUsed()).toEqual([{ id: a, len: 4 }, { id: b, len: 0 }]);
    expect(hex(r.mem.view(BUF, 8)!)).toBe('0300000000000000');
  });
});

describe('virtio-input: status queue', () => {
  it('LED events set the host LED state; each buffer comes back with the bytes read as its length', () => {
    const leds: number[] = [];
    const r = make('keyboard', { onLeds: (l) => leds.push(l.bits) });
    const { stq } = up(r);
    const ev = (code: number, value: number) => new Uint8Array([0x11, 0, code, 0, value, 0, 0, 0]);
    r.mem.write(BUF, ev(1, 1));
    r.mem.write(BUF + 16, ev(0, 1));
    r.mem.write(BUF + 32, new Uint8Array([1, 0, 30, 0]));
    const h = [stq.add([{ addr: BUF, len: 8, write: false }]), stq.add([{ addr: BUF + 16, len: 16, write: false }]), stq.add([{ addr: BUF + 32, len: 4, write: false }]), stq.add([{ addr: BUF + 48, len: 8, write: true }])];
    r.drv.notify(1);
    expect(stq.takeUsed()).toEqual([{ id: h[0], len: 8 }, { id: h[1], len: 8 }, { id: h[2], len: 4 }, { id: h[3], len: 0 }]);
    expect(leds).toEqual([4, 6]);
    expect(r.dev.ledState).toBe(6);
  });
});

describe('host input routing (QEMU ui/input.c)', () => {
  it('registered in order, the last activated first, reset to the tail; SysRq sent as Print', () => {
    const router = new InputRouter();
    const ps2 = sinkHandler('QEMU PS/2 Keyboard', INPUT_EVENT_MASK_KEY);
    router.register(ps2);
    const r = make('keyboard', { router });
    expect(router.find(INPUT_EVENT_MASK_KEY)?.handler).toBe(ps2);
    const { evq } = up(r);
    expect(router.find(INPUT_EVENT_MASK_KEY)?.handler.name).toBe('QEMU Virtio Keyboard');
    const heads = post(r, evq, 4);
    router.event({ type: 'key', qcode: 'sysrq', down: true });
    router.sync();
    expect(events(r, evq.takeUsed(), heads)).toEqual(['1:99:1', '0:0:0']);
    // A sync with nothing sent sends nothing.
    router.sync();
    expect(evq.usedIdx()).toBe(2);
    r.drv.reset();
    expect(router.find(INPUT_EVENT_MASK_KEY)?.handler).toBe(ps2);
  });

  it('key codes: every QKeyCode but "unmapped" has a Linux key; numbers and browser codes map as QEMU maps them', () => {
    expect(QKEYCODES.length).toBe(150);
    expect(QKEYCODES.filter((q) => qcodeToLinux(q) === 0)).toEqual(['unmapped']);
    expect(qnumToQcode(0x1e)).toBe('a');
    expect(qnumToQcode(0x9c)).toBe('kp_enter');
    // 0xb7 is kept as an old alias of 0x54 (SysRq, which QEMU then sends as Print).
    expect(qnumToQcode(0xb7)).toBe(qnumToQcode(0x54));
    expect(qnumToQcode(0)).toBe('unmapped');
    expect(htmlCodeToQcode('KeyA')).toBe('a');
    expect(htmlCodeToQcode('ControlRight')).toBe('ctrl_r');
    expect(htmlCodeToQcode('F13')).toBeUndefined();
  });
});

describe('browser adapter (KeyboardEvent.code, pointer and wheel events)', () => {
  function routed() {
    const router = new InputRouter();
    const kb = make('keyboard', { router });
    const ta = make('tablet', { router });
    const mo = make('mouse', { router });
    const rk = up(kb);
    const rt = up(ta);
    const rm = up(mo);
    const hk = post(kb, rk.evq, 16);
    const ht = post(ta, rt.evq, 16);
    const hm = post(mo, rm.evq, 16);
    return { router, kb, ta, mo, rk, rt, rm, hk, ht, hm, b: new BrowserInput(router) };
  }

  it('keys by their physical code, auto-repeat dropped, unknown keys ignored, releaseAll on blur', () => {
    const x = routed();
    expect(x.b.key({ type: 'keydown', code: 'KeyQ' })).toBe(true);
    expect(x.b.key({ type: 'keydown', code: 'KeyQ', repeat: true })).toBe(false);
    expect(x.b.key({ type: 'keydown', code: 'F20' })).toBe(false);
    expect(x.b.key({ type: 'keydown', code: 'ShiftLeft' })).toBe(true);
    x.b.releaseAll();
    expect(events(x.kb, x.rk.evq.takeUsed(), x.hk)).toEqual(['1:16:1', '0:0:0', '1:42:1', '0:0:0', '1:16:0', '0:0:0', '1:42:0', '0:0:0']);
  });

  it('buttons by change, relative motion to the mouse, absolute scaled to 0..0x7fff to the tablet, one wheel notch', () => {
    const x = routed();
    // The mouse was activated last: buttons go to it, absolute motion to the tablet.
    x.b.pointerMove({ buttons: 1, movementX: 5, movementY: 0 });
    x.b.pointerAbsolute(400, 300, 800, 600);
    x.b.wheel({ deltaY: 120 });
    expect(events(x.mo, x.rm.evq.takeUsed(), x.hm)).toEqual(['1:272:1', '0:0:0', '2:0:5', '0:0:0', '2:8:-1', '0:0:0']);
    expect(events(x.ta, x.rt.evq.takeUsed(), x.ht)).toEqual(['3:0:16383', '3:1:16383', '0:0:0']);
    expect(scaleAxis(800, 0, 800)).toBe(0x7fff);
    expect(scaleAxis(5, 0, 0)).toBe(0x3fff);
  });
});

describe('virtio-input: hostile rings', () => {
  it('garbage in rings (indices, heads, flags, next, lengths) never throws and writes only where descriptors point', () => {
    for (let seed = 1; seed <= 40; seed++) {
      const r = make('keyboard');
      up(r, 16);
      let s = seed * 2654435761;
      const rnd = () => ((s = (s ^ (s << 13)) >>> 0), (s = (s ^ (s >>> 17)) >>> 0), (s = (s ^ (s << 5)) >>> 0), s);
      // Every descriptor points into BUF..BUF+0x1000; everything else about them is garbage.
      for (const ring of [EVQ, STQ]) {
        for (let i = 0; i < 16; i++) {
          r.mem.write64(ring + 16 * i, BigInt(BUF + 256 * i + (rnd() & 0xf0)));
          r.mem.write32(ring + 16 * i + 8, rnd() & 0xff);
          r.mem.write16(ring + 16 * i + 12, rnd() & 0x3);
          r.mem.write16(ring + 16 * i + 14, rnd() & 0x1f);
        }
        const a = modernAddrs(ring, 16).avail;
        r.mem.write16(a + 2, rnd() & 0x1f);
        for (let i = 0; i < 16; i++) r.mem.write16(a + 4 + 2 * i, rnd() & 0x1f);
      }
      const outside = () => Buffer.concat([Buffer.from(r.mem.view(0x30000, BUF - 0x30000)!), Buffer.from(r.mem.view(BUF + 0x1000, RAM - BUF - 0x1000)!)]);
      const before = outside();
      expect(() => {
        r.drv.notify(0);
        r.drv.notify(1);
        r.dev.event({ type: 'key', qcode: 'a', down: true });
        r.dev.sync();
        r.drv.notify(1);
      }).not.toThrow();
      expect(Buffer.compare(outside(), before), `seed ${seed}`).toBe(0);
    }
  });

  it('an event buffer in ROM breaks the device instead of writing it', () => {
    const memory = new GuestMemory([{ base: 0, size: RAM }, { base: RAM, size: 0x1000, readonly: true }]);
    const r = make('keyboard', {}, memory);
    const { evq } = up(r);
    evq.add([{ addr: RAM, len: 8, write: true }]);
    evq.add([{ addr: BUF, len: 8, write: true }]);
    r.dev.event({ type: 'key', qcode: 'a', down: true });
    r.dev.sync();
    expect(r.drv.status() & VIRTIO_CONFIG_S_NEEDS_RESET).toBe(VIRTIO_CONFIG_S_NEEDS_RESET);
    expect(memory.view(RAM, 8)!.every((x) => x === 0)).toBe(true);
    expect(r.errors.length).toBe(1);
  });
});

describe('virtio-input: migration (the common blob; post_load makes it active)', () => {
  it('a running keyboard round-trips: active again, the question forgotten, events flow into the posted buffers', () => {
    const memory = GuestMemory.ofSize(RAM);
    const a = make('keyboard', {}, memory);
    const { evq } = up(a);
    const heads = post(a, evq, 8);
    a.dev.event({ type: 'key', qcode: 'a', down: true });
    a.dev.sync();
    ask(a, 1, 0);
    const blob = saveVirtioDevice(a.dev);
    const b = make('keyboard', {}, memory);
    loadVirtioDevice(b.dev, blob);
    expect(b.dev.active).toBe(true);
    expect(b.dev.cfgSelect).toBe(0);
    expect(saveVirtioDevice(b.dev)).toEqual(blob);
    b.dev.event({ type: 'key', qcode: 'b', down: true });
    b.dev.sync();
    expect(events(b, evq.takeUsed(), heads)).toEqual(['1:30:1', '0:0:0', '1:48:1', '0:0:0']);
  });

  it('a blob of a device that was not started leaves it inactive', () => {
    const a = make('tablet');
    a.drv.init(0n);
    const blob = saveVirtioDevice(a.dev as VirtIOInput);
    const b = make('tablet');
    loadVirtioDevice(b.dev, blob);
    expect(b.dev.active).toBe(false);
  });
});
