// virtio-input and virtio-balloon in the reference machines: -device names and properties and
// their refusals compared with qemu-system-x86_64 7.2 itself, -object iothread, QMP replies as
// text (QDict member order, 64-bit statistics), the BALLOON_CHANGE rate limit, routing to the
// PS/2 stand-ins of pc, and the precopy notifications a migration sends the balloon.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { VirtIOBalloon } from '../../src/devices/balloon/virtio-balloon.js';
import { VirtIOKeyboard } from '../../src/devices/input/hid.js';
import { EventThrottle, type ThrottleTimers } from '../../src/machine/event-throttle.js';
import { CmdlineError, parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine } from '../../src/machine/qemu-machine.js';
import { createMachineFromArgs, QmpServer } from '../../src/machine/index.js';
import { qdictOrder } from '../../src/machine/qdict.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';

const BASE = ['-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', '16M'];

function ourError(argv: readonly string[]): string {
  try {
    buildMachine(parseQemuCommandLine([...BASE, ...argv]));
  } catch (e) {
    // QEMU prints a hint of a second line on its own line: compare the first.
    if (e instanceof CmdlineError) return e.message.split('\n')[0]!;
    throw e;
  }
  return 'accepted';
}

/** QEMU's message for a command line it refuses (without its program-name prefix), or 'accepted'. */
function qemuError(argv: readonly string[]): string {
  const r = spawnSync(QEMU_COMMAND[0]!, [...QEMU_COMMAND.slice(1), ...BASE, '-S', '-qmp', 'stdio', ...argv], { input: '', timeout: 5000, encoding: 'utf8' });
  const line = r.stderr.split('\n').find((l) => l.startsWith('qemu-system-x86_64: '));
  return line === undefined ? 'accepted' : line.replace(/^qemu-system-x86_64: /, '');
}

const REFUSED: readonly (readonly string[])[] = [
  ['-M', 'pc', '-device', 'virtio-balloon-pci,vectors=2'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,ioeventfd=off'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,free-page-hint=on'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,iothread=nope'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,guest-stats-polling-interval=-1'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,guest-stats-polling-interval=x'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,guest-stats=1'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,deflate-on-oom=maybe'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci', '-device', 'virtio-balloon-pci'],
  ['-M', 'pc', '-device', 'virtio-balloon-device'],
  ['-M', 'microvm', '-device', 'virtio-balloon-pci'],
  ['-M', 'pc', '-device', 'virtio-keyboard-pci,ioeventfd=off'],
  ['-M', 'pc', '-device', 'virtio-keyboard-pci,wheel-axis=off'],
  ['-M', 'pc', '-device', 'virtio-keyboard-pci-transitional'],
  ['-M', 'pc', '-device', 'virtio-mouse-pci-non-transitional'],
  ['-M', 'pc', '-device', 'virtio-tablet-pci,disable-legacy=on,disable-modern=on'],
  ['-M', 'pc', '-device', 'virtio-tablet-pci,foo=1'],
  ['-M', 'pc', '-object', 'iothread'],
  ['-M', 'pc', '-object', 'iothread,id=io0', '-object', 'iothread,id=io0'],
  ['-M', 'pc', '-object', 'iothread,id=io0,foo=1'],
];

const ACCEPTED: readonly (readonly string[])[] = [
  ['-M', 'pc', '-device', 'virtio-keyboard-pci,disable-modern=on'],
  ['-M', 'pc', '-device', 'virtio-keyboard-pci,disable-legacy=off,serial=abc'],
  ['-M', 'pc', '-device', 'virtio-mouse-pci,wheel-axis=off,display=foo,head=3'],
  ['-M', 'pc', '-device', 'virtio-balloon-pci,guest-stats-polling-interval=2,deflate-on-oom=on,free-page-reporting=on'],
  ['-M', 'pc', '-object', 'iothread,id=io0', '-device', 'virtio-balloon-pci,free-page-hint=on,iothread=io0'],
  ['-M', 'microvm', '-device', 'virtio-tablet-device', '-device', 'virtio-balloon-device,page-poison=off'],
  ['-M', 'pc', '-global', 'virtio-mouse-device.wheel-axis=false', '-device', 'virtio-mouse-pci'],
];

describe('-device virtio-balloon/keyboard/mouse/tablet: what QEMU 7.2 refuses, worded as QEMU words it', () => {
  if (!qemuOrPolicy('command-line refusals compared with QEMU 7.2')) return;
  for (const argv of REFUSED) {
    it(argv.join(' '), () => {
      const q = qemuError(argv);
      expect(q).not.toBe('accepted');
      expect(ourError(argv)).toBe(q);
    });
  }
  for (const argv of ACCEPTED) {
    it(`accepted: ${argv.join(' ')}`, () => {
      expect(ourError(argv)).toBe('accepted');
    });
  }
});

describe('devices built from the command line', () => {
  it('PCI ids and classes: keyboard 0x0900, mouse 0x0902, tablet 0x0980 (modern only), balloon 0x00ff transitional without MSI-X', () => {
    const b = createMachineFromArgs(['-M', 'pc', '-m', '16M', '-device', 'virtio-keyboard-pci,addr=04.0', '-device', 'virtio-mouse-pci,addr=05.0', '-device', 'virtio-tablet-pci,addr=06.0', '-device', 'virtio-balloon-pci,addr=07.0']);
    const [kb, mo, ta, bl] = b.built.devices.map((d) => d.pci!.proxy);
    expect([kb!.config[0x0b], kb!.config[0x0a]]).toEqual([0x09, 0x00]);
    expect([mo!.config[0x0b], mo!.config[0x0a]]).toEqual([0x09, 0x02]);
    expect([ta!.config[0x0b], ta!.config[0x0a]]).toEqual([0x09, 0x80]);
    expect((kb!.config[2]! | (kb!.config[3]! << 8)).toString(16)).toBe('1052');
    expect((bl!.config[2]! | (bl!.config[3]! << 8)).toString(16)).toBe('1002');
    expect(bl!.nvectors).toBe(0);
    expect(kb!.nvectors).toBe(2);
    b.close();
  });

  it('wheel-axis=off on the command line changes how wheels are sent, not the config (QEMU picks the table first)', () => {
    const b = createMachineFromArgs(['-M', 'microvm', '-m', '16M', '-device', 'virtio-mouse-device,wheel-axis=off']);
    const mouse = b.built.devices[0]!.device as VirtIOKeyboard;
    expect(mouse.wheelAxis).toBe(false);
    expect(mouse.findConfig(0x11, 2)!.size).toBe(2);
    b.close();
  });

  it('pc routes input with no virtio device active to its PS/2 stand-ins; microvm has none', async () => {
    const pc = createMachineFromArgs(['-M', 'pc', '-m', '16M']);
    await expect(pc.qmp.execute('input-send-event', { events: [{ type: 'key', data: { key: { type: 'qcode', data: 'a' }, down: true } }] })).resolves.toEqual({});
    await expect(pc.qmp.execute('input-send-event', { events: [{ type: 'abs', data: { axis: 'x', value: 1 } }] })).rejects.toThrow('Input handler not found for event type abs');
    const mv = createMachineFromArgs(['-M', 'microvm', '-m', '16M']);
    await expect(mv.qmp.execute('input-send-event', { events: [{ type: 'btn', data: { button: 'left', down: true } }] })).rejects.toThrow('Input handler not found for event type btn');
    await expect(mv.qmp.execute('query-balloon')).rejects.toThrow('No balloon device has been activated');
    pc.close();
    mv.close();
  });
});

describe('QMP replies as text', () => {
  function server(args: string[]): { s: QmpServer; out: string[]; close: () => void } {
    const b = createMachineFromArgs(['-M', 'pc', '-m', '16M', ...args]);
    const out: string[] = [];
    const s = new QmpServer(b.built.machine, { send: (t) => out.push(t) });
    s.open();
    s.feed('{"execute":"qmp_capabilities"}\n');
    out.length = 0;
    return { s, out, close: () => (s.dispose(), b.close()) };
  }

  it('guest-stats: members in QDict order and 2^64 - 1 for statistics never reported, as QEMU 7.2 prints them', () => {
    const x = server(['-device', 'virtio-balloon-pci,id=b0']);
    x.s.feed('{"execute":"qom-get","arguments":{"path":"/machine/peripheral/b0","property":"guest-stats"}}\n');
    const u = '18446744073709551615';
    expect(x.out.join('')).toBe(
      `{"return": {"stats": {"stat-htlb-pgalloc": ${u}, "stat-swap-out": ${u}, "stat-available-memory": ${u}, "stat-htlb-pgfail": ${u}, "stat-free-memory": ${u}, "stat-minor-faults": ${u}, "stat-major-faults": ${u}, "stat-total-memory": ${u}, "stat-swap-in": ${u}, "stat-disk-caches": ${u}}, "last-update": 0}}\r\n`,
    );
    x.close();
  });

  it('qdictOrder is QEMU\'s bucket order', () => {
    expect(qdictOrder(['status', 'singlestep', 'running'])).toEqual(['singlestep', 'status', 'running']);
  });

  it('balloon, query-balloon and BALLOON_CHANGE', () => {
    const x = server(['-device', 'virtio-balloon-pci,id=b0']);
    x.s.feed('{"execute":"balloon","arguments":{"value":0}}\n{"execute":"query-balloon"}\n');
    expect(x.out.join('')).toBe('{"error": {"class": "GenericError", "desc": "Parameter \'target\' expects a size"}}\r\n{"return": {"actual": 16777216}}\r\n');
    x.close();
  });
});

describe('BALLOON_CHANGE rate limit (QEMU monitor: once a second, the last value held)', () => {
  it('first at once, the rest held and replaced, the held one at the end of the window, which opens the next', () => {
    let now = 0;
    const timers: { at: number; fn: () => void }[] = [];
    const fake: ThrottleTimers = {
      now: () => now,
      after: (ms, fn) => {
        const t = { at: now + ms, fn };
        timers.push(t);
        return () => timers.splice(timers.indexOf(t), 1);
      },
    };
    const sent: string[] = [];
    const th = new EventThrottle((n, d) => sent.push(`${n} ${JSON.stringify(d)}`), fake);
    const advance = (ms: number) => {
      now += ms;
      for (const t of timers.filter((x) => x.at <= now)) {
        timers.splice(timers.indexOf(t), 1);
        t.fn();
      }
    };
    th.send('BALLOON_CHANGE', { actual: 1 });
    th.send('BALLOON_CHANGE', { actual: 2 });
    th.send('BALLOON_CHANGE', { actual: 3 });
    th.send('RESUME', undefined);
    expect(sent).toEqual(['BALLOON_CHANGE {"actual":1}', 'RESUME undefined']);
    advance(1000);
    expect(sent.slice(2)).toEqual(['BALLOON_CHANGE {"actual":3}']);
    advance(1000);
    th.send('BALLOON_CHANGE', { actual: 4 });
    expect(sent.slice(3)).toEqual(['BALLOON_CHANGE {"actual":4}']);
    th.send('VSERPORT_CHANGE', { id: 'a', open: true });
    th.send('VSERPORT_CHANGE', { id: 'b', open: true });
    expect(sent.length).toBe(6);
  });
});

describe('migration tells the balloon about precopy steps', () => {
  it('a running VM with free page hinting: a new command id while running, DONE once stopped', async () => {
    const b = createMachineFromArgs(['-M', 'pc', '-m', '16M', '-object', 'iothread,id=io0', '-device', 'virtio-balloon-pci,free-page-hint=on,iothread=io0']);
    const dev = b.built.devices[0]!.device as VirtIOBalloon;
    const seen: string[] = [];
    b.built.machine.precopyNotifiers.add((r) => seen.push(r));
    // Without the feature negotiated nothing changes on the device.
    b.built.machine.precopyNotify('after-bitmap-sync');
    expect(dev.freePageHintCmdId).toBe(0x8000_0000);
    expect(seen).toEqual(['after-bitmap-sync']);
    b.close();
  });
});

