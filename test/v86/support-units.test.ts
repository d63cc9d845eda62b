// The host-side pieces of the v86 guest tests, without booting: the report parser, the rng
// check, the ARP/ICMP peer, and the initramfs (its module order comes from the real package).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildInitramfs, modinfo, moduleLoadOrder } from './support/initramfs.js';
import { loadV86Inputs } from './support/inputs.js';
import { NetPeer, inetChecksum } from './support/net-peer.js';
import { dataBytes, parseGuestOutput, rngBytesFromDevice } from './support/results.js';

describe('guest report parser', () => {
  it('reads results, info, data, ready and done, also after kernel noise on the same line', () => {
    const report = parseGuestOutput(
      [
        'VT-RESULT boot ok 6.1.0-57-686 uptime_ms=5270',
        '[   19.6] EXT4-fs (vda): mounted VT-RESULT blk.fs ok kib=4096 md5=ab',
        'VT-INFO virtio dev=virtio0 test=rng iface=legacy',
        'VT-DATA rng 0102',
        'VT-DATA rng ff',
        'VT-READY console org.example.port',
        'VT-RESULT rng fail reason=short',
        'VT-RESULT rng ok bytes=1024', // late, after init.sh gave up on it: the failure stands
        'noise',
        'VT-DONE\r',
      ].join('\r\n'),
    );
    expect(report.results.get('boot')).toMatchObject({ ok: true, words: ['6.1.0-57-686'], fields: { uptime_ms: '5270' } });
    expect(report.results.get('blk.fs')).toMatchObject({ ok: true, fields: { kib: '4096', md5: 'ab' } });
    expect(report.results.get('rng')).toMatchObject({ ok: false, fields: { reason: 'short' } });
    expect(report.info[0]).toMatchObject({ topic: 'virtio', fields: { dev: 'virtio0', test: 'rng', iface: 'legacy' } });
    expect(Array.from(dataBytes(report, 'rng'))).toEqual([1, 2, 255]);
    expect(report.ready).toEqual([['console', 'org.example.port']]);
    expect(report.done).toBe(true);
  });
});

describe('rngBytesFromDevice', () => {
  const produced = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24 ^ (i & 0xff));

  it('accepts runs of the device stream in order, with gaps taken by others', () => {
    const guest = new Uint8Array([...produced.subarray(0, 100), ...produced.subarray(164, 400), ...produced.subarray(1000, 1003)]);
    expect(rngBytesFromDevice(guest, produced)).toEqual({ ok: true, runs: 3 });
  });

  it('refuses bytes out of order, reused, or not produced', () => {
    const swapped = new Uint8Array([...produced.subarray(200, 300), ...produced.subarray(0, 100)]);
    expect(rngBytesFromDevice(swapped, produced).ok).toBe(false);
    const twice = new Uint8Array([...produced.subarray(0, 100), ...produced.subarray(50, 100)]);
    expect(rngBytesFromDevice(twice, produced).ok).toBe(false);
    const foreign = new Uint8Array(64).fill(7);
    expect(rngBytesFromDevice(foreign, produced).ok).toBe(false);
  });
});

function arpRequest(senderMac: number[], senderIp: number[], targetIp: number[]): Uint8Array {
  return Uint8Array.from([
    ...[255, 255, 255, 255, 255, 255], ...senderMac, 0x08, 0x06,
    0, 1, 0x08, 0x00, 6, 4, 0, 1, ...senderMac, ...senderIp, 0, 0, 0, 0, 0, 0, ...targetIp,
  ]);
}

function echoRequest(srcMac: number[], dstMac: number[], src: number[], dst: number[], payload: number[]): Uint8Array {
  const icmp = [8, 0, 0, 0, 0x12, 0x34, 0, 1, ...payload];
  const ip = [0x45, 0, 0, 20 + icmp.length, 0, 0, 0x40, 0, 64, 1, 0, 0, ...src, ...dst];
  const frame = Uint8Array.from([...dstMac, ...srcMac, 0x08, 0x00, ...ip, ...icmp]);
  const h = inetChecksum(frame.subarray(14, 34));
  frame[24] = h >> 8;
  frame[25] = h & 0xff;
  const c = inetChecksum(frame.subarray(34));
  frame[36] = c >> 8;
  frame[37] = c & 0xff;
  return frame;
}

describe('NetPeer', () => {
  const guestMac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
  const peerMac = [0x52, 0x54, 0, 0x76, 0x74, 0x02];

  it('answers an ARP request for its address, ignores one for another', () => {
    const peer = new NetPeer({ ip: '192.0.2.2' });
    const [reply] = peer.receive(arpRequest(guestMac, [192, 0, 2, 15], [192, 0, 2, 2]));
    expect(Array.from(reply!)).toEqual([
      ...guestMac, ...peerMac, 0x08, 0x06,
      0, 1, 0x08, 0x00, 6, 4, 0, 2, ...peerMac, 192, 0, 2, 2, ...guestMac, 192, 0, 2, 15,
    ]);
    expect(peer.receive(arpRequest(guestMac, [192, 0, 2, 15], [192, 0, 2, 3]))).toEqual([]);
    expect(peer.counts).toMatchObject({ arpRequests: 1, arpReplies: 1, other: 1 });
    expect(peer.guestMac).toBe('52:54:00:12:34:56');
  });

  it('answers an ICMP echo with valid checksums, the same id, sequence and data', () => {
    const peer = new NetPeer({ ip: '192.0.2.2' });
    const req = echoRequest(guestMac, peerMac, [192, 0, 2, 15], [192, 0, 2, 2], [1, 2, 3, 4, 5]);
    const [reply] = peer.receive(req);
    expect(reply!.length).toBe(req.length);
    expect(Array.from(reply!.subarray(0, 12))).toEqual([...guestMac, ...peerMac]);
    expect(Array.from(reply!.subarray(26, 34))).toEqual([192, 0, 2, 2, 192, 0, 2, 15]);
    expect(inetChecksum(reply!.subarray(14, 34))).toBe(0); // a valid header sums to zero
    expect(reply![34]).toBe(0); // echo reply
    expect(inetChecksum(reply!.subarray(34))).toBe(0);
    expect(Array.from(reply!.subarray(38))).toEqual(Array.from(req.subarray(38)));
    // To someone else: no answer.
    expect(peer.receive(echoRequest(guestMac, peerMac, [192, 0, 2, 15], [192, 0, 2, 9], [1]))).toEqual([]);
  });
});

describe('initramfs from the fetched packages', () => {
  it('orders modules by their .modinfo dependencies', () => {
    const inputs = loadV86Inputs();
    const { groups } = moduleLoadOrder(inputs.modules);
    expect(groups.core).toEqual(['virtio_ring', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio', 'virtio_pci']);
    expect(groups.net).toEqual(['failover', 'net_failover', 'virtio_net']);
    expect(groups.fs).toEqual(['crc32c_generic', 'jbd2', 'mbcache', 'crc16', 'ext4']);
    const ko = readFileSync(join(inputs.modules, 'kernel/drivers/net/virtio_net.ko'));
    expect(modinfo(ko).get('depends')).toEqual(['virtio_ring,virtio,net_failover']);
    expect(modinfo(ko).get('vermagic')?.[0]).toMatch(new RegExp(`^${inputs.kernelRelease.replace(/\./g, '\\.')} `));
  });

  it("resolves dependencies spelled with '-' (sd_mod needs t10-pi, which needs crc-t10dif)", () => {
    const inputs = loadV86Inputs();
    const sd = readFileSync(join(inputs.modules, 'kernel/drivers/scsi/sd_mod.ko'));
    expect(modinfo(sd).get('depends')?.[0]).toMatch(/t10-pi/);
    const { groups, files } = moduleLoadOrder(inputs.modules, { disk: ['crct10dif_generic', 'sd_mod'] });
    const order = groups.disk!;
    expect(order.at(-1)).toBe('sd_mod');
    for (const m of ['scsi_common', 'scsi_mod', 't10_pi', 'crc_t10dif', 'crct10dif_common']) expect(order).toContain(m);
    expect(order.indexOf('crc_t10dif')).toBeLessThan(order.indexOf('t10_pi'));
    expect(order.indexOf('crct10dif_generic')).toBeLessThan(order.indexOf('crc_t10dif'));
    expect(files.get('t10_pi')).toMatch(/\/t10-pi\.ko$/);
  });

  it('holds /init, /dev/console, busybox and its links, the modules and their groups', () => {
    const inputs = loadV86Inputs();
    const { image, groups, applets } = buildInitramfs({ inputs });
    expect(applets).toBeGreaterThan(200);
    const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-initramfs-'));
    try {
      writeFileSync(join(dir, 'initrd.cpio'), image);
      const r = spawnSync(inputs.busybox, ['cpio', '-t', '-v', '-F', join(dir, 'initrd.cpio')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const list = r.stdout;
      expect(list).toMatch(/^-rwxr-xr-x .* init$/m);
      expect(list).toMatch(/^crw------- .* dev\/console$/m);
      expect(list).toMatch(/^lrwxrwxrwx .* bin\/sh -> \/bin\/busybox$/m);
      expect(list).toMatch(/^lrwxrwxrwx .* sbin\/insmod -> \/bin\/busybox$/m);
      expect(list).toMatch(/^-rw-r--r-- .* lib\/modules\/kernel\/drivers\/virtio\/virtio_pci\.ko$/m);
      expect(list).toMatch(/^-rw-r--r-- .* lib\/modules\/groups\/core$/m);
      expect(Object.keys(groups)).toEqual(['core', 'rng', 'blk', 'console', 'net', 'input', 'balloon', 'fs']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
