// Checks the guest test program (init.sh) and the host-side network peer against v86's own
// virtio devices (console with named ports, net, balloon), so a failure in the v86 tests of our
// devices points at our devices rather than at the guest program. One boot.
import { describe, expect, it } from 'vitest';
import { bootGuest, v86Bus } from './support/boot.js';
import { NetPeer } from './support/net-peer.js';

describe('v86 guest program, against v86 own virtio devices', () => {
  it('echoes on a named console port, writes hvc0, pings the peer, finds the balloon', async () => {
    const peer = new NetPeer({ ip: '192.0.2.2' });
    const portOut: Record<number, string> = { 0: '', 1: '' };
    const run = await bootGuest({
      // The 9p device is one init.sh has no test for: it must list it and move on.
      v86Options: { net_device: { type: 'virtio' }, virtio_console: { type: 'none' }, virtio_balloon: true, filesystem: {} },
      cmdline: ['vt.net.ip=192.0.2.15/24', 'vt.net.peer=192.0.2.2', 'vt.console.hvc0echo=1'],
      onLoaded: (emulator) => {
        const bus = v86Bus(emulator);
        bus.register('net0-send', (frame) => {
          for (const reply of peer.receive(frame as Uint8Array)) setTimeout(() => bus.send('net0-receive', reply), 0);
        }, null);
        for (const port of [0, 1]) {
          bus.register(`virtio-console${port}-output-bytes`, (bytes) => {
            portOut[port] += Buffer.from(bytes as Uint8Array).toString('latin1');
          }, null);
        }
      },
      onLine: (line, emulator) => {
        // v86 makes every port a console (hvc0..3), so the echo goes through hvc0's tty.
        if (line.startsWith('VT-READY console hvc0')) {
          v86Bus(emulator).send('virtio-console0-input-bytes', new TextEncoder().encode('hello-from-host\n'));
        }
      },
    });
    console.log(`v86 self-test boot: ${JSON.stringify(run.timings)}`);
    const { results, info } = run.report;
    const failed = [...results.values()].filter((r) => !r.ok).map((r) => r.line);
    expect(failed).toEqual([]);

    // v86's devices are modern-only (device IDs 0x104x) with their capabilities in I/O BARs.
    const virtio = info.filter((i) => i.topic === 'virtio').map((i) => [i.fields.test, i.fields.iface, i.fields.id]);
    expect(virtio.sort()).toEqual([
      ['balloon', 'modern', '0x1af4:0x1045'],
      ['console', 'modern', '0x1af4:0x1043'],
      ['id9', 'modern', '0x1af4:0x1049'],
      ['net', 'modern', '0x1af4:0x1041'],
    ]);
    expect(info.find((i) => i.fields.test === 'id9')?.fields.driver).toBe('none');
    expect(info.filter((i) => i.topic === 'skip').map((i) => i.fields)).toEqual([{ test: 'id9', reason: 'no-test' }]);

    // Its named ports are consoles too (is_console in debugfs), so init.sh must skip them.
    expect(results.get('console')?.fields).toEqual({ hvc0: 'written', hvc0echo: 'hello-from-host' });
    const ports = info.filter((i) => i.topic === 'console').map((i) => `${i.fields.port}:${i.fields.console}`);
    expect(ports).toEqual(['virtio-0:yes', 'virtio-1:yes', 'virtio-2:yes', 'virtio-3:yes']);
    expect(portOut[0]).toMatch(/^VT-HVC0 hello from 6\.1\.0-\S+\r?\nVT-ECHO hello-from-host\r?\n$/);

    const net = results.get('net')!;
    expect(net.fields).toMatchObject({ arp: 'ok', sent: '3', received: '3' });
    expect(peer.guestMac).toBe(net.fields.mac);
    expect(peer.counts.echoRequests).toBe(3);
    expect(peer.counts.echoReplies).toBe(3);
    expect(peer.counts.arpReplies).toBeGreaterThanOrEqual(1);

    expect(results.get('balloon')?.ok).toBe(true);
    expect(run.report.done).toBe(true);
  }, 120_000);
});
