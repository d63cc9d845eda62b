// virtio-net on QEMU's command line: -netdev (socket, dgram, stream, hubport) and -device
// virtio-net-pci/virtio-net-device, their refusals and warnings compared with qemu-system-x86_64
// 7.2 itself, what virtio-ts-qemu refuses on its own (user, tap, tx=timer, -nic), and what is
// built (PCI identity, vectors, default MACs, NIC names, queue pairs from the netdev).
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { CallbackNetBackend } from '../../src/devices/net/backends/callback.js';
import type { NetBackend } from '../../src/devices/net/net-client.js';
import type { VirtIONet } from '../../src/devices/net/virtio-net.js';
import { CmdlineError, parseQemuCommandLine } from '../../src/machine/cmdline.js';
import { buildMachine, type BuiltMachine } from '../../src/machine/qemu-machine.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';

const BASE = ['-accel', 'tcg', '-nodefaults', '-display', 'none', '-m', '16M'];
const UDP = 'udp=127.0.0.1:1,localaddr=127.0.0.1:0';
/** Our own warning about the option ROM QEMU loads and we do not (docs/qemu-differences.md). */
const ROM_WARNING = /warning: virtio-ts loads no option ROM/;

/** Build with a callback backend standing in for each socket/dgram/stream netdev. */
function build(argv: readonly string[], queues = 1): BuiltMachine {
  const cl = parseQemuCommandLine([...BASE, ...argv]);
  const netdevs = new Map<string, NetBackend>();
  for (const n of cl.netdevs) if (n.type !== 'hubport') netdevs.set(n.id, new CallbackNetBackend({ onFrame: () => undefined, name: n.id, queues }));
  return buildMachine(cl, { netdevs });
}

/** Our stderr lines: the error, or the warnings (without our option ROM note). */
function ours(argv: readonly string[]): string[] {
  try {
    return build(argv).warnings.filter((w) => !ROM_WARNING.test(w)).flatMap((w) => w.split('\n'));
  } catch (e) {
    if (e instanceof CmdlineError) return e.message.split('\n');
    throw e;
  }
}

/** QEMU's stderr lines without the program-name prefix. */
function qemu(argv: readonly string[]): string[] {
  // A command line QEMU accepts leaves it waiting on QMP: quit at once.
  const quit = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n';
  const r = spawnSync(QEMU_COMMAND[0]!, [...QEMU_COMMAND.slice(1), ...BASE, '-S', '-qmp', 'stdio', ...argv], { input: quit, timeout: 10_000, encoding: 'utf8' });
  // QEMU ends 'Defaulting to "bh"' (tx=) without a newline: the next message follows on that line.
  return r.stderr
    .replace(/"bh"qemu-system-x86_64: /g, '"bh"\nqemu-system-x86_64: ')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.replace(/^qemu-system-x86_64: /, ''));
}

/** Refused by QEMU 7.2 and by us, with QEMU's words. */
const REFUSED: readonly (readonly [readonly string[], string])[] = [
  [['-netdev', 'socket'], "-netdev socket: Parameter 'id' is missing"],
  [['-netdev', 'socket,id=n'], '-netdev socket,id=n: exactly one of listen=, connect=, mcast= or udp= is required'],
  [['-netdev', 'socket,id=n,udp=127.0.0.1:1'], '-netdev socket,id=n,udp=127.0.0.1:1: localaddr= is mandatory with udp='],
  [['-netdev', 'socket,id=n,listen=127.0.0.1:0,connect=127.0.0.1:1'], '-netdev socket,id=n,listen=127.0.0.1:0,connect=127.0.0.1:1: exactly one of listen=, connect=, mcast= or udp= is required'],
  [['-netdev', 'socket,id=n,mcast=127.0.0.1:1'], '-netdev socket,id=n,mcast=127.0.0.1:1: specified mcastaddr 127.0.0.1 (0x7f000001) does not contain a multicast address'],
  [['-netdev', 'socket,id=n,udp=127.0.0.1,localaddr=127.0.0.1:0'], "-netdev socket,id=n,udp=127.0.0.1,localaddr=127.0.0.1:0: host address '127.0.0.1' doesn't contain ':' separating host from port"],
  [['-netdev', 'socket,id=n,foo=1'], "-netdev socket,id=n,foo=1: Invalid parameter 'foo'"],
  [['-netdev', 'bogus,id=n'], "-netdev bogus,id=n: Parameter 'type' does not accept value 'bogus'"],
  [['-netdev', `socket,id=n,${UDP}`, '-netdev', `socket,id=n,${UDP}`], `-netdev socket,id=n,${UDP}: Duplicate ID 'n' for netdev`],
  [['-netdev', 'dgram,id=n'], '-netdev dgram,id=n: dgram requires local= parameter'],
  [['-netdev', 'dgram,id=n,remote.type=inet'], "-netdev dgram,id=n,remote.type=inet: Parameter 'remote.host' is missing"],
  [['-netdev', 'dgram,id=n,local.type=inet,local.host=127.0.0.1,local.port=0'], '-netdev dgram,id=n,local.type=inet,local.host=127.0.0.1,local.port=0: type=inet or type=unix requires remote parameter'],
  [['-netdev', 'stream,id=n'], "-netdev stream,id=n: Parameter 'addr' is missing"],
  [['-netdev', 'stream,id=n,addr.type=inet'], "-netdev stream,id=n,addr.type=inet: Parameter 'addr.host' is missing"],
  [['-netdev', 'stream,id=n,server=on,addr.type=inet,addr.host=127.0.0.1'], "-netdev stream,id=n,server=on,addr.type=inet,addr.host=127.0.0.1: Parameter 'addr.port' is missing"],
  [['-netdev', 'hubport,id=n'], "-netdev hubport,id=n: Parameter 'hubid' is missing"],
  [['-netdev', 'hubport,id=h,hubid=1,netdev=nope'], "-netdev hubport,id=h,hubid=1,netdev=nope: netdev 'nope' not found"],
  [['-device', 'virtio-net-pci,netdev=nope'], "-device virtio-net-pci,netdev=nope: Property 'virtio-net-device.netdev' can't find value 'nope'"],
  [['-device', 'virtio-net-pci,mac=xx'], "-device virtio-net-pci,mac=xx: Property 'virtio-net-device.mac' doesn't take value 'xx'"],
  [['-device', 'virtio-net-pci,rx_queue_size=128'], '-device virtio-net-pci,rx_queue_size=128: Invalid rx_queue_size (= 128), must be a power of 2 between 256 and 1024.'],
  [['-device', 'virtio-net-pci,tx_queue_size=2048'], '-device virtio-net-pci,tx_queue_size=2048: Invalid tx_queue_size (= 2048), must be a power of 2 between 256 and 1024'],
  [['-device', 'virtio-net-pci,speed=-5'], "-device virtio-net-pci,speed=-5: 'speed' must be between 0 and INT_MAX"],
  [['-device', 'virtio-net-pci,duplex=quarter'], "-device virtio-net-pci,duplex=quarter: 'duplex' must be 'half' or 'full'"],
  [['-device', 'virtio-net-pci,host_mtu=70000'], "-device virtio-net-pci,host_mtu=70000: Parameter 'host_mtu' expects uint16_t"],
  [['-device', 'virtio-net-pci,foo=1'], "-device virtio-net-pci,foo=1: Property 'virtio-net-pci.foo' not found"],
  [['-device', 'virtio-net-pci,mq=maybe'], "-device virtio-net-pci,mq=maybe: Parameter 'mq' expects 'on' or 'off'"],
  [['-device', 'virtio-net-device'], "-device virtio-net-device: No 'virtio-bus' bus found for device 'virtio-net-device'"],
  [['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci,netdev=n', '-device', 'virtio-net-pci,netdev=n'], "-device virtio-net-pci,netdev=n: Property 'virtio-net-device.netdev' can't take value 'n', it's in use"],
  [['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci,netdev=n,disable-legacy=on,disable-modern=on'], '-device virtio-net-pci,netdev=n,disable-legacy=on,disable-modern=on: device cannot work as neither modern nor legacy mode is enabled'],
];

/** Accepted by both; the warnings (stderr) must be the same. */
const ACCEPTED: readonly (readonly string[])[] = [
  ['-netdev', 'hubport,id=n,hubid=-1'],
  ['-netdev', `socket,id=n,${UDP}`],
  ['-device', 'virtio-net-pci,mac=01:00:00:00:00:01'],
  ['-device', 'virtio-net-pci,tx=foo'],
  ['-device', 'virtio-net-pci,host_mtu=10,hash=on,rss=on'],
  ['-device', 'virtio-net-pci,id=x', '-device', 'virtio-net-pci'],
  ['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci,netdev=n,vectors=1'],
  ['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci,netdev=n,mq=on,vectors=10,romfile='],
  ['-netdev', 'hubport,id=a,hubid=0', '-netdev', 'hubport,id=b,hubid=0', '-device', 'virtio-net-pci,netdev=a'],
  ['-netdev', `socket,id=n,${UDP}`, '-netdev', 'hubport,id=h,hubid=1,netdev=n'],
  ['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci-non-transitional,netdev=n'],
  ['-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-pci,netdev=n,mac=52:54:00:12:34:56', '-device', 'virtio-net-pci,mac=52:54:00:12:34:56'],
  ['-netdev', 'dgram,id=n,local.type=inet,local.host=127.0.0.1,local.port=0,remote.type=inet,remote.host=127.0.0.1,remote.port=1', '-device', 'virtio-net-pci,netdev=n,csum=off,mrg_rxbuf=off,ctrl_vq=off,status=off,guest_announce=off,speed=1000,duplex=full,rx_queue_size=1024,tx_queue_size=1024'],
];

describe('-netdev and -device virtio-net: refusals as QEMU 7.2 words them', () => {
  it.each(REFUSED)('%j', (argv, message) => {
    expect(ours(['-M', 'pc', ...argv])[0]).toBe(message);
  });
  it('microvm has no PCI bus for virtio-net-pci', () => {
    expect(ours(['-M', 'microvm', '-device', 'virtio-net-pci'])).toEqual(["-device virtio-net-pci: No 'PCI' bus found for device 'virtio-net-pci'"]);
  });

  if (qemuOrPolicy('virtio-net command-line refusals and warnings against QEMU')) {
    it('QEMU 7.2 prints the same messages', () => {
      for (const [argv] of REFUSED) {
        const q = qemu(['-M', 'pc', ...argv]);
        expect(ours(['-M', 'pc', ...argv]), argv.join(' ')).toEqual(q);
      }
    }, 120_000);
    it('accepted by both, with the same warnings (netdevs and NICs without a peer, hubs, tx=)', () => {
      for (const argv of ACCEPTED) {
        const q = qemu(['-M', 'pc', ...argv]);
        expect(ours(['-M', 'pc', ...argv]), argv.join(' ')).toEqual(q);
      }
      expect(ours(['-M', 'microvm', '-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-device,netdev=n'])).toEqual(qemu(['-M', 'microvm', '-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-device,netdev=n']));
    }, 120_000);
  }
});

describe('-netdev and -device virtio-net: what virtio-ts-qemu refuses on its own', () => {
  it.each([
    [['-netdev', 'user,id=n'], /-netdev user,id=n: -netdev user is not supported by virtio-ts-qemu \(virtio-ts has no user-mode network stack/],
    [['-netdev', 'tap,id=n'], /-netdev tap,id=n: -netdev tap is not supported by virtio-ts-qemu/],
    [['-device', 'virtio-net-pci,tx=timer'], /property 'tx=timer' of virtio-net is not supported by virtio-ts-qemu/],
    [['-nic', 'user'], /-nic: option not supported by virtio-ts-qemu/],
  ])('%j', (argv, message) => {
    expect(ours(['-M', 'pc', ...argv]).join('\n')).toMatch(message);
  });

  it('-netdev help lists the backends', () => {
    expect(parseQemuCommandLine([...BASE, '-netdev', 'help']).action).toEqual({ kind: 'netdev-help' });
  });
});

describe('-device virtio-net: what is built', () => {
  const nic = (b: BuiltMachine, i: number) => b.devices[i]!.device as VirtIONet;

  it('PCI identity: 1af4:1000 class 0x0200 transitional, 1af4:1041 modern only; vectors 2 × pairs + 2', () => {
    const b = build(['-M', 'pc', '-netdev', `socket,id=n,${UDP}`, '-netdev', `socket,id=m,${UDP}`, '-device', 'virtio-net-pci,netdev=n,addr=04.0', '-device', 'virtio-net-pci,netdev=m,addr=05.0,disable-legacy=on,mq=on'], 4);
    const [t, m] = b.devices.map((d) => d.pci!.proxy);
    const id = (c: Uint8Array) => [(c[0]! | (c[1]! << 8)).toString(16), (c[2]! | (c[3]! << 8)).toString(16), c[0x0b], c[0x0a]];
    expect(id(t!.config)).toEqual(['1af4', '1000', 0x02, 0x00]);
    expect(id(m!.config)).toEqual(['1af4', '1041', 0x02, 0x00]);
    expect([t!.nvectors, m!.nvectors]).toEqual([10, 10]);
    expect([nic(b, 0).maxQueuePairs, nic(b, 1).maxQueuePairs]).toEqual([4, 4]);
    // Multiqueue offered only with mq=on.
    expect([nic(b, 0).hostHasFeature(22), nic(b, 1).hostHasFeature(22)]).toEqual([false, true]);
  });

  it('default MACs 52:54:00:12:34:56, :57, … skipping ones set by hand; NIC names are the id or <type>.<n>', () => {
    const b = build(['-M', 'pc', '-device', 'virtio-net-pci,mac=52:54:00:12:34:57', '-device', 'virtio-net-pci', '-device', 'virtio-net-pci,id=lan', '-device', 'virtio-net-pci']);
    const macs = [0, 1, 2, 3].map((i) => [...nic(b, i).mac].map((x) => x.toString(16).padStart(2, '0')).join(':'));
    expect(macs).toEqual(['52:54:00:12:34:57', '52:54:00:12:34:56', '52:54:00:12:34:58', '52:54:00:12:34:59']);
    expect([0, 1, 2, 3].map((i) => nic(b, i).nicName)).toEqual(['virtio-net-pci.0', 'virtio-net-pci.1', 'lan', 'virtio-net-pci.3']);
  });

  it('properties reach the device: queue sizes, host_mtu, speed/duplex, features off', () => {
    const b = build(['-M', 'microvm', '-netdev', `socket,id=n,${UDP}`, '-device', 'virtio-net-device,netdev=n,rx_queue_size=1024,tx_queue_size=512,host_mtu=9000,speed=10000,duplex=half,mrg_rxbuf=off,ctrl_vq=off']);
    const d = nic(b, 0);
    // The control queue is there without ctrl_vq too (QEMU adds it always); tx capped at 256.
    expect(d.vq.map((q) => q.numDefault)).toEqual([1024, 256, 64]);
    expect([d.hostMtu, d.speed, d.duplex, d.configLen]).toEqual([9000, 10000, 0, 17]);
    expect([d.hostHasFeature(15), d.hostHasFeature(17)]).toEqual([false, false]);
  });
});
