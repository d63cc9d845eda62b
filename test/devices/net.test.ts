// virtio-net (QEMU 7.2's hw/net/virtio-net.c with a backend without vnet header) at device
// level: features, queues and config per property, header lengths, receive (plain and mergeable
// buffers, the receive filter, frames waiting for buffers, the bounded queue), transmit (bursts,
// a backend that holds a frame, link down), every control command and its ack, link status,
// announcements, multiqueue and RSS steering, hostile inputs, and device-level migration.
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import { CallbackNetBackend } from '../../src/devices/net/backends/callback.js';
import * as C from '../../src/devices/net/constants.js';
import { NetHub } from '../../src/devices/net/hub.js';
import { VirtIONet, type VirtIONetOptions } from '../../src/devices/net/virtio-net.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { MigrationError } from '../../src/migration/qemu-file.js';
import { decodeVirtioBlob, type DecodedField } from '../../src/migration/virtio-decode.js';
import { loadVirtioDevice, saveVirtioDevice } from '../../src/migration/virtio.js';
import { toeplitz } from '../../src/devices/net/rss.js';
import { bit, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1 } from '../../src/virtio/constants.js';
import { modernAddrs } from '../support/harness.js';

const RAM = 8 << 20;
const QBASE = 0x10000;
const BUF = 0x100000;
const V1 = bit(VIRTIO_F_VERSION_1);
const MRG = bit(C.VIRTIO_NET_F_MRG_RXBUF);
const CTRL = bit(C.VIRTIO_NET_F_CTRL_VQ);
const CTRL_RX = bit(C.VIRTIO_NET_F_CTRL_RX);
const CTRL_VLAN = bit(C.VIRTIO_NET_F_CTRL_VLAN);
const STATUS = bit(C.VIRTIO_NET_F_STATUS);
const MQ = bit(C.VIRTIO_NET_F_MQ);
const ANNOUNCE = bit(C.VIRTIO_NET_F_GUEST_ANNOUNCE);
const MAC_ADDR = bit(C.VIRTIO_NET_F_CTRL_MAC_ADDR);
const RSS = bit(C.VIRTIO_NET_F_RSS);

interface Rig {
  dev: VirtIONet;
  mmio: VirtioMmioTransport;
  drv: MmioDriver;
  mem: GuestMemory;
  backend: CallbackNetBackend;
  /** Frames the guest sent, per queue pair. */
  sent: { frame: Uint8Array; queue: number }[];
  errors: string[];
  events: string[];
  clock: VirtualClock;
  irqs: () => number;
  /** Next free guest buffer address. */
  next: { addr: number };
  /** Make onFrame hold frames (return false). */
  hold: { on: boolean };
}

function make(opts: Partial<VirtIONetOptions> & { queues?: number; legacy?: boolean } = {}): Rig {
  const mem = opts.memory ?? GuestMemory.ofSize(RAM);
  const sent: { frame: Uint8Array; queue: number }[] = [];
  const hold = { on: false };
  const backend = new CallbackNetBackend({
    queues: opts.queues ?? 1,
    onFrame: (frame, queue) => {
      if (hold.on) return false;
      sent.push({ frame: frame.slice(), queue });
      return true;
    },
  });
  const errors: string[] = [];
  const events: string[] = [];
  const clock = new VirtualClock();
  const dev = new VirtIONet({
    memory: mem,
    netdev: backend,
    clock,
    onError: (m) => errors.push(m),
    onRxFilterChanged: () => events.push('NIC_RX_FILTER_CHANGED'),
    ...opts,
  });
  let irqs = 0;
  const mmio = new VirtioMmioTransport(dev, { legacy: opts.legacy ?? false, irq: (l) => void (l && irqs++) });
  const drv = new MmioDriver(mmio, mem);
  return { dev, mmio, drv, mem, backend, sent, errors, events, clock, irqs: () => irqs, next: { addr: BUF }, hold };
}

function up(r: Rig, features: bigint, queues?: number[]): Map<number, SplitRingDriver> {
  r.drv.init(features);
  const rings = new Map<number, SplitRingDriver>();
  const list = queues ?? (r.dev.hasFeature(C.VIRTIO_NET_F_CTRL_VQ) ? [0, 1, 2] : [0, 1]);
  for (const i of list) {
    const base = QBASE + i * 0x4000;
    rings.set(i, r.drv.setupQueue(i, { num: 16, addrs: modernAddrs(base, 16), base }));
  }
  r.drv.driverOk();
  return rings;
}

function alloc(r: Rig, len: number, fill = 0xa5): number {
  const a = r.next.addr;
  r.next.addr += Math.ceil((len + 16) / 16) * 16;
  r.mem.fill(a, len + 8, fill);
  return a;
}

/** Post a receive chain of `lens` writable buffers. */
function postRx(r: Rig, ring: SplitRingDriver, lens: number[]): { head: number; addrs: number[] } {
  const addrs = lens.map((l) => alloc(r, l));
  const head = ring.add(addrs.map((addr, i) => ({ addr, len: lens[i]!, write: true })));
  return { head, addrs };
}

/** Post a transmit chain: `parts` are the readable buffers (header included by the caller). */
function postTx(r: Rig, ring: SplitRingDriver, parts: Uint8Array[]): number {
  const bufs = parts.map((p) => {
    const addr = alloc(r, p.length, 0);
    r.mem.write(addr, p);
    return { addr, len: p.length, write: false };
  });
  return ring.add(bufs);
}

function frame(dst: number[], len: number, seed = 1, ethertype = 0x0800): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst.slice(0, 6), 0);
  f.set([0x52, 0x54, 0, 0xaa, 0xbb, 0xcc], 6);
  if (len >= 14) {
    f[12] = ethertype >> 8;
    f[13] = ethertype & 0xff;
  }
  for (let i = 14; i < len; i++) f[i] = (i * seed + 7) & 0xff;
  return f;
}
const OWN = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/** Send a control command; returns the ack byte (or undefined when nothing came back). */
function ctrl(r: Rig, ring: SplitRingDriver, cls: number, cmd: number, data: number[] | Uint8Array, queue = 2): number | undefined {
  const out = new Uint8Array(2 + data.length);
  out[0] = cls;
  out[1] = cmd;
  out.set(data, 2);
  const o = alloc(r, out.length, 0);
  r.mem.write(o, out);
  const ack = alloc(r, 1, 0xee);
  ring.add([{ addr: o, len: out.length, write: false }, { addr: ack, len: 1, write: true }]);
  r.drv.notify(queue);
  const used = ring.takeUsed();
  if (used.length === 0) return undefined;
  expect(used).toEqual([{ id: used[0]!.id, len: 1 }]);
  return r.mem.read8(ack);
}

const rd = (m: GuestMemory, addr: number, len: number): Uint8Array => m.view(addr, len)!.slice();
const le32 = (v: number) => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const le16 = (v: number) => [v & 0xff, (v >>> 8) & 0xff];

describe('virtio-net: features, queues and config as QEMU 7.2 offers them without a vnet header', () => {
  it('defaults: the offer QEMU 7.2.22 makes (0x10130bf8024 on modern PCI), three queues 256/256/64, an 8-byte config', () => {
    const r = make();
    // Low word as QEMU's virtio-net-pci shows it on the modern interface (GSO and the legacy
    // common bits hidden); RING_RESET and VERSION_1 in the high word come from the transport.
    expect(Number(r.dev.hostFeatures & 0x00ff_ffffn & ~bit(C.VIRTIO_NET_F_GSO))).toBe(0xbf8024);
    expect(r.dev.hostHasFeature(C.VIRTIO_NET_F_GSO)).toBe(true);
    expect(r.dev.legacyFeatures & bit(C.VIRTIO_NET_F_GSO)).toBe(bit(C.VIRTIO_NET_F_GSO));
    expect(r.dev.vq.map((q) => q.numDefault)).toEqual([256, 256, 64]);
    expect(r.dev.configLen).toBe(8);
    expect([...r.dev.config.subarray(0, 8)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0]);
    expect(Array.from({ length: 8 }, (_, i) => r.drv.configRead(i, 1))).toEqual([0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0]);
    expect(r.drv.configRead(8, 1)).toBe(0xff);
  });

  it('offloads need a vnet header: csum, guest_csum, TSO, ECN, UFO, hash are withdrawn even when set', () => {
    const r = make({ properties: { csum: true, guest_csum: true, hash: true, host_ufo: true } });
    for (const b of [0, 1, 7, 8, 9, 10, 11, 12, 13, 14, 57]) expect(r.dev.hostHasFeature(b)).toBe(false);
  });

  it('config size follows the properties: mq 10, host_mtu 12, speed/duplex 17, rss 24; each field as QEMU fills it', () => {
    expect(make({ properties: { status: false } }).dev.configLen).toBe(6);
    expect(make({ properties: { mq: true } }).dev.configLen).toBe(10);
    const mtu = make({ hostMtu: 1400 });
    expect(mtu.dev.configLen).toBe(12);
    expect(mtu.dev.hostHasFeature(C.VIRTIO_NET_F_MTU)).toBe(true);
    expect(mtu.drv.configRead(10, 2)).toBe(1400);
    const sd = make({ speed: 1000, duplex: 'full' });
    expect(sd.dev.configLen).toBe(17);
    expect(sd.drv.configRead(12, 4)).toBe(1000);
    expect(sd.drv.configRead(16, 1)).toBe(1);
    const unknown = make({ duplex: 'half' });
    expect(unknown.drv.configRead(12, 4)).toBe(0xffff_ffff);
    expect(unknown.drv.configRead(16, 1)).toBe(0);
    const rss = make({ properties: { rss: true }, queues: 4 });
    expect(rss.dev.configLen).toBe(24);
    expect(rss.drv.configRead(8, 2)).toBe(4);
    expect(rss.drv.configRead(17, 1)).toBe(40);
    expect(rss.drv.configRead(18, 2)).toBe(128);
    expect(rss.drv.configRead(20, 4)).toBe(0x1ff);
  });

  it('refuses what QEMU refuses at realize: queue sizes, speed', () => {
    expect(() => make({ rxQueueSize: 128 })).toThrow('Invalid rx_queue_size (= 128), must be a power of 2 between 256 and 1024.');
    expect(() => make({ txQueueSize: 384 })).toThrow('Invalid tx_queue_size (= 384)');
    expect(() => make({ speed: -2 })).toThrow("'speed' must be between 0 and INT_MAX");
    // tx_queue_size above 256 is capped for backends other than vhost-user/vdpa.
    expect(make({ txQueueSize: 1024, rxQueueSize: 1024 }).dev.vq.map((q) => q.numDefault)).toEqual([1024, 256, 64]);
  });

  it('multiqueue: 3 queues until MQ is negotiated, then 2 × pairs + 1 with the control queue last; reset goes back', () => {
    const r = make({ properties: { mq: true }, queues: 4 });
    expect(r.dev.vq.length).toBe(3);
    up(r, CTRL | MQ, [0, 1]);
    expect(r.dev.vq.map((q) => q.numDefault)).toEqual([256, 256, 256, 256, 256, 256, 256, 256, 64]);
    expect(r.dev.multiqueue).toBe(true);
    r.drv.reset();
    expect(r.dev.vq.length).toBe(3);
    expect(r.dev.multiqueue).toBe(false);
  });
});

describe('virtio-net: receive', () => {
  it('header lengths: 12 with VERSION_1 (num_buffers untouched without MRG_RXBUF), 12 with MRG_RXBUF, 10 legacy', () => {
    for (const [legacy, features, hdr, numBuffers] of [
      [false, 0n, 12, [0xa5, 0xa5]],
      [false, MRG, 12, [1, 0]],
      [true, MRG, 12, [1, 0]],
      [true, 0n, 10, undefined],
    ] as const) {
      const r = make({ legacy });
      const rings = up(r, features | STATUS);
      const rx = postRx(r, rings.get(0)!, [2048]);
      r.drv.notify(0);
      const f = frame(OWN, 60);
      expect(r.backend.send(f)).toBe('delivered');
      expect(rings.get(0)!.takeUsed()).toEqual([{ id: rx.head, len: hdr + 60 }]);
      const got = rd(r.mem, rx.addrs[0]!, hdr + 62);
      expect([...got.subarray(0, 10)]).toEqual(new Array(10).fill(0));
      if (numBuffers) expect([...got.subarray(10, 12)]).toEqual(numBuffers);
      expect(got.subarray(hdr, hdr + 60)).toEqual(f);
      expect([...got.subarray(hdr + 60)]).toEqual([0xa5, 0xa5]);
      expect(r.dev.guestHdrLen).toBe(hdr);
    }
  });

  it('mergeable buffers: a 3000-byte frame over 1500-byte buffers, num_buffers 3, one used.idx update', () => {
    const r = make();
    const rings = up(r, MRG | V1);
    const bufs = [postRx(r, rings.get(0)!, [1500]), postRx(r, rings.get(0)!, [1500]), postRx(r, rings.get(0)!, [1500])];
    const f = frame(OWN, 3000);
    expect(r.backend.send(f)).toBe('delivered');
    const used = rings.get(0)!.takeUsed();
    expect(used).toEqual([{ id: bufs[0]!.head, len: 1500 }, { id: bufs[1]!.head, len: 1500 }, { id: bufs[2]!.head, len: 12 }]);
    expect(r.mem.read16(bufs[0]!.addrs[0]! + 10, true)).toBe(3);
    const joined = new Uint8Array([...rd(r.mem, bufs[0]!.addrs[0]! + 12, 1488), ...rd(r.mem, bufs[1]!.addrs[0]!, 1500), ...rd(r.mem, bufs[2]!.addrs[0]!, 12)]);
    expect(joined).toEqual(f);
  });

  it('without mergeable buffers a frame too big for the buffer is dropped and the buffer kept for the next (CVE-2015-7295)', () => {
    const r = make();
    const rings = up(r, V1);
    const rx = postRx(r, rings.get(0)!, [1526]);
    expect(r.backend.send(frame(OWN, 9000))).toBe('delivered');
    expect(rings.get(0)!.takeUsed()).toEqual([]);
    expect(r.dev.stats.rxTooBig).toBe(1);
    const f = frame(OWN, 60);
    expect(r.backend.send(f)).toBe('delivered');
    expect(rings.get(0)!.takeUsed()).toEqual([{ id: rx.head, len: 72 }]);
    expect(rd(r.mem, rx.addrs[0]! + 12, 60)).toEqual(f);
  });

  it('no buffer posted: frames wait (in order) and go in when the guest posts buffers and notifies', () => {
    const r = make();
    const rings = up(r, MRG | V1);
    const frames = [frame(OWN, 60, 1), frame(OWN, 100, 2), frame(OWN, 1514, 3)];
    for (const f of frames) expect(r.backend.send(f)).toBe('queued');
    expect(r.dev.rxQueued).toBe(3);
    const posted = [postRx(r, rings.get(0)!, [2048]), postRx(r, rings.get(0)!, [2048])];
    r.drv.notify(0);
    expect(rings.get(0)!.takeUsed().map((u) => u.len)).toEqual([72, 112]);
    expect(rd(r.mem, posted[1]!.addrs[0]! + 12, 100)).toEqual(frames[1]);
    expect(r.dev.rxQueued).toBe(1);
    postRx(r, rings.get(0)!, [2048]);
    r.drv.notify(0);
    expect(rings.get(0)!.takeUsed().map((u) => u.len)).toEqual([1526]);
  });

  it('the queue for the guest is bounded: past the limit the newest frame is dropped and counted (QEMU nq_maxlen)', () => {
    const r = make({ queueLimits: { maxFrames: 5 } });
    const rings = up(r, MRG | V1);
    const results = Array.from({ length: 8 }, (_, i) => r.backend.send(frame(OWN, 60, i + 1)));
    expect(results).toEqual(['queued', 'queued', 'queued', 'queued', 'queued', 'dropped', 'dropped', 'dropped']);
    expect(r.dev.rxDropped).toBe(3);
    for (let i = 0; i < 8; i++) postRx(r, rings.get(0)!, [128]);
    r.drv.notify(0);
    expect(rings.get(0)!.takeUsed()).toHaveLength(5);
  });

  it('before DRIVER_OK frames wait, and QEMU drops them when DRIVER_OK is set (its flush sees the old status); later ones arrive', () => {
    const r = make();
    r.drv.init(MRG | V1);
    const ring = r.drv.setupQueue(0, { num: 16, addrs: modernAddrs(QBASE, 16), base: QBASE });
    r.drv.setupQueue(1, { num: 16, addrs: modernAddrs(QBASE + 0x4000, 16), base: QBASE + 0x4000 });
    postRx(r, ring, [256]);
    expect(r.backend.send(frame(OWN, 60))).toBe('queued');
    expect(r.dev.rxQueued).toBe(1);
    r.drv.driverOk();
    expect(ring.takeUsed()).toEqual([]);
    expect(r.dev.rxQueued).toBe(0);
    expect(r.backend.send(frame(OWN, 60))).toBe('delivered');
    expect(ring.takeUsed().map((u) => u.len)).toEqual([72]);
  });
});

describe('virtio-net: the receive filter as QEMU applies it', () => {
  function filterRig(extra = 0n) {
    const r = make();
    const rings = up(r, MRG | V1 | CTRL | CTRL_RX | CTRL_VLAN | bit(C.VIRTIO_NET_F_CTRL_RX_EXTRA) | extra);
    for (let i = 0; i < 12; i++) postRx(r, rings.get(0)!, [256]);
    r.drv.notify(0);
    const passes = (f: Uint8Array): boolean => {
      r.backend.send(f);
      return rings.get(0)!.takeUsed().length === 1;
    };
    return { r, rings, passes, c: rings.get(2)! };
  }

  it('promiscuous by default; off: own MAC and broadcast pass, others not', () => {
    const { r, passes, c } = filterRig();
    expect(passes(frame([2, 0, 0, 0, 0, 1], 60))).toBe(true);
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_PROMISC, [0])).toBe(0);
    expect(r.events).toEqual(['NIC_RX_FILTER_CHANGED']);
    expect(passes(frame([2, 0, 0, 0, 0, 1], 60))).toBe(false);
    expect(passes(frame(OWN, 60))).toBe(true);
    expect(passes(frame(BCAST, 60))).toBe(true);
    expect(passes(frame([0x01, 0, 0x5e, 0, 0, 1], 60))).toBe(false);
    expect(r.dev.stats.rxFiltered).toBe(2);
  });

  it('allmulti, nomulti, alluni, nouni, nobcast; the MAC table with overflow flags; VLAN filtering', () => {
    const { r, passes, c } = filterRig();
    ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_PROMISC, [0]);
    const mcast = [0x01, 0, 0x5e, 0, 0, 1];
    const other = [2, 0, 0, 0, 0, 1];
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_ALLMULTI, [1])).toBe(0);
    expect(passes(frame(mcast, 60))).toBe(true);
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_NOMULTI, [1])).toBe(0);
    expect(passes(frame(mcast, 60))).toBe(false);
    expect(passes(frame(BCAST, 60))).toBe(true);
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_NOBCAST, [1])).toBe(0);
    expect(passes(frame(BCAST, 60))).toBe(false);
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_ALLUNI, [1])).toBe(0);
    expect(passes(frame(other, 60))).toBe(true);
    expect(ctrl(r, c, 0, C.VIRTIO_NET_CTRL_RX_NOUNI, [1])).toBe(0);
    expect(passes(frame(OWN, 60))).toBe(false);
    for (const cmd of [1, 2, 3, 4, 5]) ctrl(r, c, 0, cmd, [0]);
    // Table: one unicast, one multicast.
    const table = [...le32(1), ...other, ...le32(1), ...mcast];
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, table)).toBe(0);
    expect(passes(frame(other, 60))).toBe(true);
    expect(passes(frame(mcast, 60))).toBe(true);
    expect(passes(frame([0x01, 0, 0x5e, 0, 0, 2], 60))).toBe(false);
    const info = r.dev.queryRxFilter();
    expect(info['unicast-table']).toEqual(['02:00:00:00:00:01']);
    expect(info['multicast-table']).toEqual(['01:00:5e:00:00:01']);
    // 65 unicast entries: the unicast overflow flag, every unicast passes.
    const big = [...le32(65), ...new Array(65 * 6).fill(2), ...le32(0)];
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, big)).toBe(0);
    expect(r.dev.macTable.uniOverflow).toBe(1);
    expect(passes(frame([2, 9, 9, 9, 9, 9], 60))).toBe(true);
    // VLAN: with CTRL_VLAN, tagged frames pass only for added ids.
    const tagged = (vid: number) => {
      const f = frame(OWN, 64, 1, 0x8100);
      f[14] = (vid >> 8) & 0x0f;
      f[15] = vid & 0xff;
      return f;
    };
    expect(passes(tagged(5))).toBe(false);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(5))).toBe(0);
    expect(passes(tagged(5))).toBe(true);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_DEL, le16(5))).toBe(0);
    expect(passes(tagged(5))).toBe(false);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(4096))).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(0xffff))).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, 7, le16(1))).toBe(1);
  });
});

describe('virtio-net: transmit', () => {
  it('strips the header (10 or 12 bytes) and sends the frame; used.len 0; a frame split over descriptors is gathered', () => {
    for (const [legacy, features, hdr] of [[false, V1, 12], [true, 0n, 10], [true, MRG, 12]] as const) {
      const r = make({ legacy });
      const rings = up(r, features);
      const f = frame([2, 0, 0, 0, 0, 1], 100);
      const h = postTx(r, rings.get(1)!, [new Uint8Array([...new Array(hdr).fill(0), ...f])]);
      const h2 = postTx(r, rings.get(1)!, [new Uint8Array(hdr), f.subarray(0, 30), f.subarray(30)]);
      r.drv.notify(1);
      expect(rings.get(1)!.takeUsed()).toEqual([{ id: h, len: 0 }, { id: h2, len: 0 }]);
      expect(r.sent.map((s) => s.frame)).toEqual([f, f]);
    }
  });

  it('the header flags are not acted on (no offload without a vnet header): NEEDS_CSUM frames go as they are', () => {
    const r = make();
    const rings = up(r, V1);
    const f = frame([2, 0, 0, 0, 0, 1], 80);
    const hdr = new Uint8Array(12);
    hdr[0] = C.VIRTIO_NET_HDR_F_NEEDS_CSUM;
    hdr[1] = C.VIRTIO_NET_HDR_GSO_TCPV4;
    hdr[6] = 34;
    hdr[8] = 16;
    postTx(r, rings.get(1)!, [hdr, f]);
    r.drv.notify(1);
    expect(r.sent.map((s) => s.frame)).toEqual([f]);
  });

  it('a backend that holds a frame: the chain stays in flight, the rest waits; resume completes them in order', () => {
    const r = make();
    const rings = up(r, V1);
    r.hold.on = true;
    const a = postTx(r, rings.get(1)!, [new Uint8Array([...new Array(12).fill(0), ...frame([2, 0, 0, 0, 0, 1], 60, 1)])]);
    const b = postTx(r, rings.get(1)!, [new Uint8Array([...new Array(12).fill(0), ...frame([2, 0, 0, 0, 0, 1], 60, 2)])]);
    r.drv.notify(1);
    expect(rings.get(1)!.takeUsed()).toEqual([]);
    expect(r.dev.vq[1]!.inuse).toBe(1);
    r.hold.on = false;
    r.backend.resume();
    expect(rings.get(1)!.takeUsed()).toEqual([{ id: a, len: 0 }, { id: b, len: 0 }]);
    expect(r.sent.map((s) => s.frame[14])).toEqual([frame([], 60, 1)[14], frame([], 60, 2)[14]]);
  });

  it('link down: transmit buffers come back unsent, the status bit clears with a config interrupt', () => {
    const r = make();
    const rings = up(r, V1 | STATUS);
    const before = r.irqs();
    r.dev.setLink(false);
    expect(r.drv.configRead(6, 2)).toBe(0);
    expect(r.drv.interruptStatus() & 2).toBe(2);
    expect(r.irqs()).toBeGreaterThan(before);
    const h = postTx(r, rings.get(1)!, [new Uint8Array([...new Array(12).fill(0), ...frame(OWN, 60)])]);
    r.drv.notify(1);
    expect(rings.get(1)!.takeUsed()).toEqual([{ id: h, len: 0 }]);
    expect(r.sent).toHaveLength(0);
    // Frames for the guest are dropped while the link is down.
    postRx(r, rings.get(0)!, [256]);
    expect(r.backend.send(frame(OWN, 60))).toBe('dropped');
    r.dev.setLink(true);
    expect(r.drv.configRead(6, 2)).toBe(1);
  });

  it('frames larger than NET_BUFSIZE are returned unread; a chain with no frame after the header breaks the device', () => {
    const r = make();
    const rings = up(r, V1);
    const big = alloc(r, 70000, 0);
    const h = rings.get(1)!.add([{ addr: big, len: 70000, write: false }]);
    r.drv.notify(1);
    expect(rings.get(1)!.takeUsed()).toEqual([{ id: h, len: 0 }]);
    expect(r.sent).toHaveLength(0);
    postTx(r, rings.get(1)!, [new Uint8Array(12)]);
    r.drv.notify(1);
    expect(r.errors).toEqual(['virtio-net nothing to send']);
    expect(r.dev.status & VIRTIO_CONFIG_S_NEEDS_RESET).toBeTruthy();
  });
});

describe('virtio-net: two NICs on a hub', () => {
  it('frames sent by one arrive intact at the other, in order, with the receiver\'s header', () => {
    const mem = GuestMemory.ofSize(RAM);
    const hub = new NetHub(0);
    const a = new VirtIONet({ memory: mem, netdev: hub.addPort(), mac: new Uint8Array(OWN) });
    const b = new VirtIONet({ memory: mem, netdev: hub.addPort(), mac: new Uint8Array([0x52, 0x54, 0, 0x12, 0x34, 0x57]) });
    const ma = new MmioDriver(new VirtioMmioTransport(a, { legacy: false, irq: () => {} }), mem);
    const mb = new MmioDriver(new VirtioMmioTransport(b, { legacy: true, irq: () => {} }), mem);
    ma.init(V1 | MRG);
    mb.init(0n);
    const atx = ma.setupQueue(1, { num: 16, addrs: modernAddrs(0x10000, 16), base: 0x10000 });
    ma.setupQueue(0, { num: 16, addrs: modernAddrs(0x14000, 16), base: 0x14000 });
    const brx = mb.setupQueue(0, { num: 16, base: 0x20000 });
    mb.setupQueue(1, { num: 16, base: 0x28000 });
    ma.driverOk();
    mb.driverOk();
    const rxbufs: number[] = [];
    for (let i = 0; i < 4; i++) {
      const addr = 0x200000 + i * 0x1000;
      rxbufs.push(addr);
      brx.add([{ addr, len: 2048, write: true }]);
    }
    mb.notify(0);
    const frames = [60, 1514, 200].map((n, i) => frame([0x52, 0x54, 0, 0x12, 0x34, 0x57], n, i + 3));
    frames.forEach((f, i) => {
      const addr = 0x300000 + i * 0x1000;
      mem.write(addr, new Uint8Array([...new Array(12).fill(0), ...f]));
      atx.add([{ addr, len: 12 + f.length, write: false }]);
    });
    ma.notify(1);
    expect(atx.takeUsed().map((u) => u.len)).toEqual([0, 0, 0]);
    const got = brx.takeUsed();
    expect(got.map((u) => u.len)).toEqual(frames.map((f) => f.length + 10));
    got.forEach((u, i) => expect(rd(mem, rxbufs[u.id]!, 10 + frames[i]!.length)).toEqual(new Uint8Array([...new Array(10).fill(0), ...frames[i]!])));
  });
});

/** An IPv4 frame (TCP when ports are given) from `src` to `dst`, for RSS. */
function ipv4(src: number[], dst: number[], ports?: [number, number]): Uint8Array {
  const f = new Uint8Array(14 + 20 + 20 + 8);
  f.set(OWN, 0);
  f.set([0x52, 0x54, 0, 1, 2, 3], 6);
  f[12] = 0x08;
  f[13] = 0x00;
  f[14] = 0x45;
  f[16] = 0;
  f[17] = 20 + 20 + 8;
  f[22] = 64;
  f[23] = ports ? 6 : 253; // TCP, or a protocol RSS does not look into
  f.set(src, 26);
  f.set(dst, 30);
  if (ports) {
    f[34] = ports[0] >> 8;
    f[35] = ports[0] & 0xff;
    f[36] = ports[1] >> 8;
    f[37] = ports[1] & 0xff;
    f[46] = 0x50; // data offset 5
  }
  return f;
}

describe('virtio-net: multiqueue and RSS steering', () => {
  function mqRig(extra = 0n, props: VirtIONetOptions['properties'] = {}) {
    const r = make({ properties: { mq: true, ...props }, queues: 4 });
    const rings = up(r, V1 | MRG | CTRL | MQ | extra, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    for (const q of [0, 2, 4, 6]) {
      for (let i = 0; i < 4; i++) postRx(r, rings.get(q)!, [2048]);
      r.drv.notify(q);
    }
    return { r, rings, c: rings.get(8)! };
  }

  it('VQ_PAIRS_SET: each netdev queue feeds its own pair once enabled; beyond curr_queue_pairs frames wait; out of range refused', () => {
    const { r, rings, c } = mqRig();
    expect(r.dev.currQueuePairs).toBe(1);
    expect(r.backend.send(frame(OWN, 60, 1), 2)).toBe('queued');
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16(0), 8)).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16(5), 8)).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, [4], 8)).toBe(1); // short
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, 9, le16(4), 8)).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16(4), 8)).toBe(0);
    expect(r.dev.currQueuePairs).toBe(4);
    // The frame that waited on queue 2 goes in when the guest next notifies that queue.
    r.drv.notify(4);
    expect(rings.get(4)!.takeUsed().map((u) => u.len)).toEqual([72]);
    for (const q of [0, 1, 2, 3]) expect(r.backend.send(frame(OWN, 100 + q), q)).toBe('delivered');
    for (const q of [0, 1, 2, 3]) expect(rings.get(2 * q)!.takeUsed().map((u) => u.len)).toEqual([112 + q]);
    // Transmit on pair 3 leaves on netdev queue 3.
    postTx(r, rings.get(7)!, [new Uint8Array(12), frame(BCAST, 64)]);
    r.drv.notify(7);
    expect(r.sent.map((s) => [s.queue, s.frame.length])).toEqual([[3, 64]]);
    // Without MQ negotiated the command is refused.
    const plain = make({ properties: { mq: true }, queues: 4 });
    const pr = up(plain, V1 | CTRL);
    expect(ctrl(plain, pr.get(2)!, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16(2))).toBe(1);
  });

  it("Toeplitz: the hash of Microsoft's RSS verification vectors", () => {
    const key = Uint8Array.from(Buffer.from('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa', 'hex'));
    const v4 = new Uint8Array([66, 9, 149, 187, 161, 142, 100, 80]);
    expect(toeplitz(key, v4, 8)).toBe(0x323e8fc2);
    const tcp = new Uint8Array([...v4, 2794 >> 8, 2794 & 0xff, 1766 >> 8, 1766 & 0xff]);
    expect(toeplitz(key, tcp, 12)).toBe(0x51ccc178);
  });

  it('RSS_CONFIG: frames steered by hash through the indirection table; unclassified to the default queue; bad configs refused and RSS off', () => {
    const warnings: string[] = [];
    const r0 = make({ properties: { mq: true, rss: true }, queues: 4, onWarning: (m) => warnings.push(m) });
    const rings = up(r0, V1 | MRG | CTRL | MQ | RSS, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    for (const q of [0, 2, 4, 6]) {
      for (let i = 0; i < 4; i++) postRx(r0, rings.get(q)!, [2048]);
      r0.drv.notify(q);
    }
    const c = rings.get(8)!;
    const key = Buffer.from('6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa', 'hex');
    const rssCmd = (types: number, table: number[], dflt: number, pairs: number, k: Uint8Array = key) => [
      ...le32(types), ...le16(table.length - 1), ...le16(dflt), ...table.flatMap(le16), ...le16(pairs), k.length, ...k,
    ];
    // IPv4 (1) + TCPv4 (2) hashing, table [3, 2, 1, 0], unclassified to pair 1.
    expect(ctrl(r0, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, rssCmd(0x1 | 0x2, [3, 2, 1, 0], 1, 4), 8)).toBe(0);
    expect(r0.dev.currQueuePairs).toBe(4);
    expect(warnings).toEqual(["Can't load eBPF RSS - fallback to software RSS"]);
    const src = [66, 9, 149, 187];
    const dst = [161, 142, 100, 80];
    // 0x323e8fc2 & 3 = 2 → table[2] = 1; 0x51ccc178 & 3 = 0 → table[0] = 3.
    expect(r0.backend.send(ipv4(src, dst), 0)).toBe('delivered');
    expect(r0.backend.send(ipv4(src, dst, [2794, 1766]), 0)).toBe('delivered');
    expect(r0.backend.send(frame(OWN, 60, 1, 0x0806), 0)).toBe('delivered'); // ARP: unclassified
    const lens = [0, 1, 2, 3].map((q) => rings.get(2 * q)!.takeUsed().map((u) => u.len));
    expect(lens).toEqual([[], [74, 12 + 60], [], [74]]);
    // Refusals: table length not a power of two, default queue out of range, key too long, pairs 0.
    for (const bad of [rssCmd(1, [0, 1, 2], 0, 4), rssCmd(1, [0], 4, 4), rssCmd(1, [0], 0, 4, new Uint8Array(41)), rssCmd(1, [0], 0, 0)]) {
      expect(ctrl(r0, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, bad, 8)).toBe(1);
      expect(r0.dev.rss.enabled).toBe(false);
    }
    // A truncated command (no key) is refused.
    expect(ctrl(r0, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, rssCmd(1, [0, 1], 0, 4).slice(0, 14), 8)).toBe(1);
    // HASH_CONFIG needs hash reporting, which needs a vnet header: refused.
    expect(ctrl(r0, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_HASH_CONFIG, rssCmd(1, [0], 0, 4), 8)).toBe(1);
  });
});

describe('virtio-net: MAC address, announce, guest offloads', () => {
  it('MAC_ADDR_SET changes the address and the config bytes; short data refused; without CTRL_MAC_ADDR a legacy driver writes the config', () => {
    const r = make();
    const rings = up(r, V1 | CTRL | CTRL_RX | MAC_ADDR);
    const c = rings.get(2)!;
    const nmac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, nmac)).toBe(0);
    expect([0, 1, 2, 3, 4, 5].map((i) => r.drv.configRead(i, 1))).toEqual(nmac);
    expect(r.events).toEqual(['NIC_RX_FILTER_CHANGED']);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, nmac.slice(0, 5))).toBe(1);
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, 9, nmac)).toBe(1);
    for (let i = 0; i < 2; i++) postRx(r, rings.get(0)!, [256]);
    r.drv.notify(0);
    ctrl(r, c, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, [0]);
    r.backend.send(frame(OWN, 60));
    r.backend.send(frame(nmac, 60));
    expect(rings.get(0)!.takeUsed()).toHaveLength(1);
    expect(r.dev.queryRxFilter()['main-mac']).toBe('02:11:22:33:44:55');
    // Legacy, no CTRL_MAC_ADDR: the config write sets the address; modern drivers' writes are ignored.
    const l = make({ legacy: true });
    up(l, 0n);
    l.mmio.write(0x100 + 5, 1, 0x99);
    expect(l.dev.mac[5]).toBe(0x99);
    const m = make();
    up(m, V1);
    m.mmio.write(0x100 + 5, 1, 0x99);
    expect(m.dev.mac[5]).toBe(0x56);
  });

  it('announce-self: the ANNOUNCE status bit and a config interrupt; the guest acks; without GUEST_ANNOUNCE nothing', () => {
    const r = make();
    const rings = up(r, V1 | CTRL | STATUS | ANNOUNCE);
    const before = r.irqs();
    r.dev.announce();
    expect(r.drv.configRead(6, 2)).toBe(C.VIRTIO_NET_S_LINK_UP | C.VIRTIO_NET_S_ANNOUNCE);
    expect(r.irqs()).toBe(before + 1);
    expect(ctrl(r, rings.get(2)!, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, [])).toBe(0);
    expect(r.drv.configRead(6, 2)).toBe(C.VIRTIO_NET_S_LINK_UP);
    expect(ctrl(r, rings.get(2)!, C.VIRTIO_NET_CTRL_ANNOUNCE, 1, [])).toBe(1);
    const n = make();
    up(n, V1 | CTRL | STATUS);
    n.dev.announce();
    expect(n.drv.configRead(6, 2)).toBe(C.VIRTIO_NET_S_LINK_UP);
  });

  it('after an incoming migration: 5 announce rounds, 0, 50, 150, 250 and 350 ms after each ack, as QEMU schedules them', () => {
    const a = make();
    const rings = up(a, V1 | CTRL | STATUS | ANNOUNCE);
    const blob = saveVirtioDevice(a.dev);
    const b = make({ memory: a.mem });
    loadVirtioDevice(b.dev, blob);
    // The guest's rings stay where they were: drive the destination with the source's ring driver.
    const guest: Rig = { ...b, next: a.next };
    const c = rings.get(2)!;
    const announced = () => (b.dev.netStatus & C.VIRTIO_NET_S_ANNOUNCE) !== 0;
    const times: number[] = [];
    for (let i = 0; i < 8; i++) {
      // Find when the next announcement comes, 1 ms at a time, up to a second.
      let waited = 0;
      b.clock.step(0);
      while (!announced() && waited < 1000) {
        b.clock.step(1e6);
        waited++;
      }
      if (!announced()) break;
      times.push(waited);
      expect(ctrl(guest, c, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, [])).toBe(0);
    }
    expect(times).toEqual([0, 50, 150, 250, 350]);
    expect(b.dev.announceRound).toBe(0);
  });

  it('GUEST_OFFLOADS_SET is refused without a vnet header; curr_guest_offloads follows the negotiated features', () => {
    const r = make({ properties: { ctrl_guest_offloads: true } });
    const rings = up(r, V1 | CTRL | bit(C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS));
    expect(ctrl(r, rings.get(2)!, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, new Array(8).fill(0))).toBe(1);
    expect(ctrl(r, rings.get(2)!, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, [0])).toBe(1);
    expect(r.dev.currGuestOffloads).toBe(0n);
  });
});

/** The offset of the first decoded field named `name` (depth first). */
function fieldAt(fields: DecodedField[], name: string): DecodedField | undefined {
  for (const f of fields) {
    if (f.name === name) return f;
    const inner = f.children ? fieldAt(f.children, name) : undefined;
    if (inner) return inner;
  }
  return undefined;
}

describe('virtio-net: migration (virtio-net-device v11 and its rss subsection)', () => {
  function stateful() {
    const r = make({ properties: { mq: true, rss: true }, queues: 4, mac: new Uint8Array([0x52, 0x54, 0, 0xab, 0xcd, 0xef]) });
    const rings = up(r, V1 | MRG | CTRL | CTRL_RX | CTRL_VLAN | MQ | RSS | STATUS, [0, 1, 2, 3, 4, 5, 6, 7, 8]);
    const c = rings.get(8)!;
    ctrl(r, c, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, [0], 8);
    ctrl(r, c, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_ALLMULTI, [1], 8);
    ctrl(r, c, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, [...le32(1), 2, 0, 0, 0, 0, 7, ...le32(1), 1, 0, 0x5e, 0, 0, 9], 8);
    ctrl(r, c, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(100), 8);
    const key = new Uint8Array(40).map((_, i) => i * 7 + 1);
    const rss = [...le32(3), ...le16(7), ...le16(2), ...[0, 1, 2, 3, 3, 2, 1, 0].flatMap(le16), ...le16(3), 40, ...key];
    expect(ctrl(r, c, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, rss, 8)).toBe(0);
    return { r, rings };
  }

  it('MAC, RX mode, MAC table, VLANs, queue pairs and RSS round-trip; the blob decodes field by field and saves again byte for byte', () => {
    const { r } = stateful();
    const blob = saveVirtioDevice(r.dev);
    const b = make({ properties: { mq: true, rss: true }, queues: 4, memory: r.mem });
    loadVirtioDevice(b.dev, blob);
    expect(saveVirtioDevice(b.dev)).toEqual(blob);
    expect(b.dev.queryRxFilter()).toEqual(r.dev.queryRxFilter());
    expect(b.dev.currQueuePairs).toBe(3);
    expect(b.dev.vq).toHaveLength(9);
    expect([b.dev.rss.enabled, b.dev.rss.indirectionsLen, b.dev.rss.defaultQueue, [...b.dev.rss.indirections]]).toEqual([true, 8, 2, [0, 1, 2, 3, 3, 2, 1, 0]]);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', deviceVmsd: 'virtio-net' });
    for (const name of ['mac', 'mergeable_rx_bufs', 'promisc', 'allmulti', 'mac_table.in_use', 'vlans', 'has_vnet_hdr', 'max_queue_pairs', 'curr_queue_pairs', 'indirections_len']) {
      expect(fieldAt(d.fields, name), name).toBeDefined();
    }
    expect(fieldAt(d.fields, 'mac')!.value).toBe('525400abcdef');
    expect(fieldAt(d.fields, 'curr_queue_pairs')!.value).toBe(3);
  });

  it('bad streams are refused with the field named and the device untouched', () => {
    const { r } = stateful();
    const blob = saveVirtioDevice(r.dev);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', deviceVmsd: 'virtio-net' });
    const patched = (name: string, bytes: number[]): Uint8Array => {
      const f = fieldAt(d.fields, name)!;
      const out = blob.slice();
      out.set(bytes, f.offset);
      return out;
    };
    const refuses = (bytes: Uint8Array, message: RegExp, into = make({ properties: { mq: true, rss: true }, queues: 4, memory: r.mem })) => {
      const before = saveVirtioDevice(into.dev);
      expect(() => loadVirtioDevice(into.dev, bytes)).toThrow(message);
      try {
        loadVirtioDevice(into.dev, bytes);
      } catch (e) {
        expect(e).toBeInstanceOf(MigrationError);
      }
      expect(saveVirtioDevice(into.dev)).toEqual(before);
    };
    refuses(patched('has_vnet_hdr', [0, 0, 0, 1]), /saved image requires vnet_hdr=on/);
    refuses(patched('has_ufo', [1]), /saved image requires TUN_F_UFO support/);
    refuses(patched('curr_queue_pairs', [0, 5]), /curr_queue_pairs 5 > max_queue_pairs 4/);
    refuses(patched('max_queue_pairs', [0, 2]), /max_queue_pairs.*4 != 2/);
    refuses(patched('indirections_len', [0, 3]), /indirections_len 3 is not a power of two/);
    refuses(patched('mac_table.in_use', [0xff, 0xff, 0xff, 0xff]), /mac_table.in_use/);
    // A multiqueue stream into a NIC with one queue pair: its queue count does not fit.
    refuses(blob, /queues/, make({ properties: { mq: true, rss: true }, memory: r.mem }));
    // Truncated anywhere: refused.
    for (const cut of [10, blob.length >> 1, blob.length - 1]) refuses(blob.subarray(0, cut), /./);
  });

  it('a MAC table larger than 64 entries in the stream (another source) is skipped and emptied, as QEMU post-load does', () => {
    const { r } = stateful();
    const blob = saveVirtioDevice(r.dev);
    const d = decodeVirtioBlob(blob, { transport: 'mmio', deviceVmsd: 'virtio-net' });
    const inUse = fieldAt(d.fields, 'mac_table.in_use')!;
    const macs = fieldAt(d.fields, 'mac_table.macs')!;
    const extra = 65 * 6 - macs.size;
    const grown = new Uint8Array(blob.length + extra);
    grown.set(blob.subarray(0, inUse.offset));
    grown.set([0, 0, 0, 65], inUse.offset);
    grown.set(blob.subarray(macs.offset + macs.size), macs.offset + 65 * 6);
    const b = make({ properties: { mq: true, rss: true }, queues: 4, memory: r.mem });
    loadVirtioDevice(b.dev, grown);
    expect(b.dev.macTable.inUse).toBe(0);
    expect(b.dev.queryRxFilter()['unicast-table']).toEqual([]);
  });
});
