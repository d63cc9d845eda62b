// Conformance scenarios of virtio-net on every transport (PCI modern, legacy and transitional
// driven both ways; virtio-mmio v1 and v2), each machine with a `-netdev socket,udp=` whose other
// end is a UDP socket of the test: identity (PCI config space, features, queues, config bytes at
// every width), receive with every header length and mergeable buffers, frames waiting for
// buffers, frames before DRIVER_OK, a frame too big for a buffer, transmit (split chains, header
// flags, a frame beyond NET_BUFSIZE), every control command and its ack (RX modes, MAC address
// and table with overflows and QEMU's 32-bit count arithmetic, VLANs, announce, queue pairs,
// RSS and offloads refused), the receive filter frame by frame with query-rx-filter and
// NIC_RX_FILTER_CHANGED, link status over QMP set_link with the config interrupt, announce-self.
// They record; the oracle compares with QEMU 7.2.
import type { OracleGroup, OracleMachineSpec, OracleScenario } from '../../../src/oracle/scenario.js';
import * as C from '../../../src/devices/net/constants.js';
import { configGeneration, noteEvents, qmpEventMark, qmpNote } from './devrig.js';
import { hexb, teardown, type MmioTransport, type PciTransport, type Transport } from './rig.js';
import {
  BCAST,
  ctrlCmd,
  F,
  frame,
  hdr,
  inject,
  le16,
  le32,
  LINUX,
  MCAST,
  noteRx,
  noteStatus,
  openNet,
  OTHER,
  OWN,
  postRx,
  postTx,
  rxFilter,
  tagged,
  used,
  wire,
  type NetRig,
} from './netrig.js';

const NETDEV = ['-netdev', 'socket,id=n0,@NET:n0@'];
const pci = (device: string): OracleMachineSpec => ({ machine: 'pc', args: [...NETDEV, '-device', `${device},netdev=n0,romfile=,ioeventfd=off,id=nic0`] });
const mmio = (v2: boolean): OracleMachineSpec => ({
  machine: 'microvm',
  args: [...(v2 ? ['-global', 'virtio-mmio.force-legacy=false'] : []), '-global', 'virtio-mmio.ioeventfd=off', ...NETDEV, '-device', 'virtio-net-device,netdev=n0,id=nic0'],
});

export const T = {
  modern: { kind: 'pci', label: 'net pci modern', slot: 4, mode: 'modern' },
  legacy: { kind: 'pci', label: 'net pci legacy', slot: 3, mode: 'legacy' },
  transModern: { kind: 'pci', label: 'net pci transitional, driven modern', slot: 2, mode: 'modern' },
  transLegacy: { kind: 'pci', label: 'net pci transitional, driven legacy', slot: 2, mode: 'legacy' },
  mmioV1: { kind: 'mmio', label: 'net mmio v1', index: 23, version: 1 },
  mmioV2: { kind: 'mmio', label: 'net mmio v2', index: 23, version: 2 },
} as const satisfies Record<string, PciTransport | MmioTransport>;

const modernOf = (t: Transport): boolean => (t.kind === 'pci' ? t.mode === 'modern' : t.version === 2);

async function done(n: NetRig): Promise<void> {
  await n.rig.irq?.check();
  await teardown(n.rig);
}

function identity(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] identity: PCI config space, features, queue sizes, config bytes at every width`,
    async run(ctx) {
      const n = await openNet(ctx, t, 0n, { noDriverOk: true });
      const { rig } = n;
      const m = rig.m;
      await m.phase('pci');
      if (rig.pci) await rig.pci.configDump();
      await m.phase('features');
      await rig.drv.setStatus(0);
      await rig.drv.setStatus(1);
      await rig.drv.setStatus(3);
      await m.note(`device features ${(await rig.drv.readDeviceFeatures()).toString(16)}`);
      await m.phase('queues');
      for (let q = 0; q < 4; q++) await m.note(`queue ${q} max ${await rig.drv.queueMax(q)}`);
      await m.phase('config');
      for (let i = 0; i < 12; i++) await rig.drv.configRead(i, 1);
      for (let i = 0; i < 12; i += 2) await rig.drv.configRead(i, 2);
      for (let i = 0; i < 12; i += 4) await rig.drv.configRead(i, 4);
      // A driver write to the config: read-only for a modern driver, the MAC for a legacy one
      // that did not negotiate CTRL_MAC_ADDR (QEMU's set_config).
      await rig.drv.configWrite(0, 1, 0x02);
      await rig.drv.configWrite(6, 2, 0);
      for (let i = 0; i < 8; i++) await rig.drv.configRead(i, 1);
      await rxFilter(n);
      await teardown(rig);
    },
  };
}

function receiveHeaders(t: Transport): OracleScenario {
  const variants: { name: string; f: bigint }[] = modernOf(t)
    ? [{ name: 'VERSION_1', f: 0n }, { name: 'VERSION_1 + MRG_RXBUF', f: F.MRG }]
    : [{ name: 'legacy', f: 0n }, { name: 'legacy + MRG_RXBUF', f: F.MRG }];
  return {
    name: `[${t.label}] receive: header lengths, frames of 14..1514 bytes, buffers too small, a frame too big without mergeable buffers`,
    async run(ctx) {
      let rig;
      for (const v of variants) {
        const n = await openNet(ctx, t, v.f | F.MAC, rig ? { rig } : {});
        rig = n.rig;
        const m = n.rig.m;
        await m.phase(v.name);
        await m.note(`hdr ${n.hdr}`);
        const posted = [];
        for (let i = 0; i < 4; i++) posted.push(await postRx(n, [2048]));
        const frames = [frame(OWN, 14, 1), frame(OWN, 60, 2), frame(BCAST, 100, 3), frame(OWN, 1514, 4)];
        await inject(n, frames);
        const u = await used(n, n.rx, 4, 'rx used');
        for (const e of u) {
          const p = posted.find((x) => x.head === e.id);
          if (p) await noteRx(n, p, e.len);
        }
        await n.rig.irq?.check();
        await m.phase(`${v.name}: a buffer of 40 bytes, then a 1514-byte frame`);
        const small = await postRx(n, [40]);
        await inject(n, [frame(OWN, 1514, 5)]);
        const u2 = await used(n, n.rx, (v.f & F.MRG) !== 0n ? 0 : 0, 'rx used (too small)');
        for (const e of u2) await noteRx(n, small, e.len);
        await m.phase(`${v.name}: then a frame that fits`);
        await inject(n, [frame(OWN, 20, 6)]);
        const u3 = await used(n, n.rx, (v.f & F.MRG) !== 0n ? 0 : 1, 'rx used');
        for (const e of u3) await noteRx(n, small, e.len);
        await m.phase(`${v.name}: two large buffers take what still waits`);
        const big = [await postRx(n, [2048]), await postRx(n, [2048])];
        const u4 = await used(n, n.rx, (v.f & F.MRG) !== 0n ? 3 : 0, 'rx used');
        for (const e of u4) await noteRx(n, [small, ...big].find((p) => p.head === e.id) ?? small, e.len);
        await n.rig.irq?.check();
        await teardown(n.rig);
      }
    },
  };
}

function mergeable(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] mergeable buffers: a 3000-byte frame over 1024-byte buffers, chains of several descriptors, num_buffers`,
    async run(ctx) {
      const n = await openNet(ctx, t, F.MRG | F.MAC | F.EVENT_IDX);
      const m = n.rig.m;
      await m.phase('single-descriptor buffers');
      const posted = [];
      for (let i = 0; i < 4; i++) posted.push(await postRx(n, [1024]));
      await inject(n, [frame(OWN, 3000, 7)]);
      const u = await used(n, n.rx, 3, 'rx used');
      for (const e of u) {
        const p = posted.find((x) => x.head === e.id);
        if (p) await noteRx(n, p, e.len, `rx ${e.id}`);
      }
      await n.rig.irq?.check();
      await m.phase('a chain of 3 descriptors per buffer, the header split over them');
      const chains = [await postRx(n, [5, 7, 500]), await postRx(n, [1, 1, 1000])];
      await inject(n, [frame(OWN, 900, 8)]);
      const u2 = await used(n, n.rx, 2, 'rx used');
      for (const e of u2) {
        const p = [...posted, ...chains].find((x) => x.head === e.id);
        if (p) await noteRx(n, p, e.len, `rx ${e.id}`);
      }
      await done(n);
    },
  };
}

function waiting(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] frames wait for receive buffers, in order; frames that came before DRIVER_OK are dropped at DRIVER_OK`,
    async run(ctx) {
      const n = await openNet(ctx, t, F.MRG | F.MAC);
      const m = n.rig.m;
      await m.phase('three frames, no buffer');
      await inject(n, [frame(OWN, 60, 1), frame(OWN, 70, 2), frame(OWN, 80, 3)]);
      await used(n, n.rx, 0, 'rx used');
      await m.phase('two buffers');
      const a = await postRx(n, [256]);
      const b = await postRx(n, [256]);
      const u = await used(n, n.rx, 2, 'rx used');
      for (const e of u) await noteRx(n, e.id === a.head ? a : b, e.len, `rx ${e.id}`);
      await m.phase('one more buffer, published without a notify, then notified');
      const c = await postRx(n, [256], { notify: false });
      await used(n, n.rx, 0, 'rx used (no notify)');
      await n.rig.drv.notify(0);
      const u2 = await used(n, n.rx, 1, 'rx used');
      for (const e of u2) await noteRx(n, c, e.len, `rx ${e.id}`);
      await n.rig.irq?.check();
      await teardown(n.rig);
      await m.phase('before DRIVER_OK');
      const n2 = await openNet(ctx, t, F.MRG | F.MAC, { rig: n.rig, noDriverOk: true });
      const d = await postRx(n2, [256]);
      await inject(n2, [frame(OWN, 90, 4)]);
      await n2.rig.drv.driverOk();
      await noteStatus(n2);
      await used(n2, n2.rx, 0, 'rx used after DRIVER_OK');
      await inject(n2, [frame(OWN, 100, 5)]);
      const u3 = await used(n2, n2.rx, 1, 'rx used');
      for (const e of u3) await noteRx(n2, d, e.len, `rx ${e.id}`);
      await done(n2);
    },
  };
}

function transmit(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] transmit: header stripped, split chains, header flags not acted on, a frame beyond NET_BUFSIZE, a burst`,
    async run(ctx) {
      for (const f of [F.MAC, F.MAC | F.MRG]) {
        const n = await openNet(ctx, t, f);
        const m = n.rig.m;
        await m.phase(`features ${f.toString(16)}, header ${n.hdr}`);
        const f1 = frame(OTHER, 60, 1);
        const f2 = frame(OTHER, 1514, 2);
        const f3 = frame(BCAST, 200, 3);
        await postTx(n, [new Uint8Array([...hdr(n.hdr), ...f1])]);
        await postTx(n, [hdr(n.hdr), f2.subarray(0, 100), f2.subarray(100)]);
        await postTx(n, [new Uint8Array([...hdr(n.hdr).subarray(0, 3)]), new Uint8Array([...hdr(n.hdr).subarray(3), ...f3.subarray(0, 5)]), f3.subarray(5)]);
        // NEEDS_CSUM with csum_start/offset and a GSO type: no offload without a vnet header.
        const h = hdr(n.hdr, C.VIRTIO_NET_HDR_F_NEEDS_CSUM, C.VIRTIO_NET_HDR_GSO_TCPV4);
        h[6] = 34;
        h[8] = 16;
        await postTx(n, [h, frame(OTHER, 80, 4)]);
        await n.rig.drv.notify(1);
        await used(n, n.tx, 4, 'tx used');
        await wire(n, 4);
        await n.rig.irq?.check();
        await m.phase('a frame of 70000 bytes (beyond NET_BUFSIZE), then a normal one');
        await postTx(n, [hdr(n.hdr), new Uint8Array(70000)]);
        await postTx(n, [hdr(n.hdr), frame(OTHER, 64, 5)]);
        await n.rig.drv.notify(1);
        await used(n, n.tx, 2, 'tx used');
        await wire(n, 1);
        await m.phase('20 frames, one notify');
        for (let i = 0; i < 20; i++) await postTx(n, [new Uint8Array([...hdr(n.hdr), ...frame(OTHER, 60 + i, i)])]);
        await n.rig.drv.notify(1);
        await used(n, n.tx, 20, 'tx used');
        await wire(n, 20);
        await done(n);
      }
    },
  };
}

function control(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] control queue: every command and its ack, malformed ones, query-rx-filter and NIC_RX_FILTER_CHANGED`,
    async run(ctx) {
      const n = await openNet(ctx, t, LINUX);
      const m = n.rig.m;
      const R = C.VIRTIO_NET_CTRL_RX;
      let mark = qmpEventMark(m);
      await m.phase('rx mode');
      await ctrlCmd(n, R, C.VIRTIO_NET_CTRL_RX_PROMISC, [0]);
      mark = await noteEvents(m, mark);
      await ctrlCmd(n, R, C.VIRTIO_NET_CTRL_RX_ALLMULTI, [1]);
      mark = await noteEvents(m, mark, 'events (none until query-rx-filter)');
      await rxFilter(n);
      for (const cmd of [2, 3, 4, 5]) await ctrlCmd(n, R, cmd, [1]);
      await ctrlCmd(n, R, 6, [1], { label: 'rx unknown command' });
      await ctrlCmd(n, R, 0, [], { label: 'rx promisc without data' });
      await ctrlCmd(n, R, 0, [2, 9], { label: 'rx promisc 2, extra byte' });
      await rxFilter(n);
      mark = await noteEvents(m, mark);
      for (const cmd of [0, 1, 2, 3, 4, 5]) await ctrlCmd(n, R, cmd, [0]);
      await m.phase('mac address');
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, [0x52, 0x54, 0, 1, 2, 3]);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, [0x52, 0x54, 0, 1, 2]);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, [0x52, 0x54, 0, 1, 2, 3, 4]);
      for (let i = 0; i < 8; i++) await n.rig.drv.configRead(i, 1);
      await rxFilter(n);
      await m.phase('mac table');
      const T0 = C.VIRTIO_NET_CTRL_MAC_TABLE_SET;
      const MC = C.VIRTIO_NET_CTRL_MAC;
      await ctrlCmd(n, MC, T0, [...le32(2), ...OTHER, 0x02, 0, 0, 0, 0, 2, ...le32(1), ...MCAST], { label: 'table 2+1' });
      await rxFilter(n);
      await ctrlCmd(n, MC, T0, [...le32(65), ...new Array(65 * 6).fill(2), ...le32(64), ...new Array(64 * 6).fill(3)], { label: 'table 65+64 (both overflow)' });
      await rxFilter(n);
      await ctrlCmd(n, MC, T0, [...le32(64), ...new Array(64 * 6).fill(2), ...le32(1), ...MCAST], { label: 'table 64+1 (multicast overflows)' });
      await rxFilter(n);
      await ctrlCmd(n, MC, T0, [...le32(0), ...le32(1), ...MCAST, 0], { label: 'table: trailing byte' });
      await ctrlCmd(n, MC, T0, [...le32(0), ...le32(2), ...MCAST], { label: 'table: short multicast' });
      await ctrlCmd(n, MC, T0, [...le32(3), ...OTHER], { label: 'table: short unicast' });
      await ctrlCmd(n, MC, T0, [1, 0], { label: 'table: short count' });
      // 0x2aaaaaab entries × 6 wraps to 2 in 32 bits: QEMU skips 2 bytes and overflows.
      await ctrlCmd(n, MC, T0, [...le32(0x2aaaaaab), 0, 0, ...le32(0)], { label: 'table: count wrapping 2^32' });
      await rxFilter(n);
      await ctrlCmd(n, MC, T0, [...le32(0xffffffff), ...le32(0)], { label: 'table: count 0xffffffff' });
      await ctrlCmd(n, MC, 2, [], { label: 'mac unknown command' });
      await m.phase('vlan');
      const V = C.VIRTIO_NET_CTRL_VLAN;
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(5));
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(4095));
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(4096), { label: 'vlan 4096' });
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(0xffff), { label: 'vlan 0xffff' });
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_ADD, [7], { label: 'vlan short' });
      await ctrlCmd(n, V, 2, le16(1), { label: 'vlan unknown command' });
      await rxFilter(n);
      await ctrlCmd(n, V, C.VIRTIO_NET_CTRL_VLAN_DEL, le16(5));
      await rxFilter(n);
      await m.phase('announce, mq, rss, offloads, unknown class');
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, [], { label: 'announce ack, none pending' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, le16(1), { label: 'mq pairs without MQ' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, new Array(16).fill(0), { label: 'rss without RSS' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_HASH_CONFIG, new Array(16).fill(0), { label: 'hash without HASH_REPORT' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MQ, 9, [], { label: 'mq unknown command' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, new Array(8).fill(0), { label: 'offloads set' });
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS, C.VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, [0], { label: 'offloads short' });
      await ctrlCmd(n, 0xff, 0, [1], { label: 'unknown class' });
      await m.phase('acks that are not one byte');
      await ctrlCmd(n, R, 0, [1], { label: 'ack of 4 bytes', ackLen: 4 });
      await ctrlCmd(n, R, 0, [1], { label: 'class and command split', split: [1, 1] });
      await noteEvents(m, mark);
      await noteStatus(n);
      await done(n);
    },
  };
}

/** Row of docs/qemu-differences.md: the receive filter on frames shorter than their header. */
export const ROW_SHORT_FILTER = 70;
const SHORT_FILTER = {
  row: ROW_SHORT_FILTER,
  reason: 'QEMU reads the Ethernet/VLAN header of a short frame past its end (stale bytes of its receive buffer decide); we read the missing bytes as absent',
  sections: ['short frames: 1, 13, 15, 17 bytes'],
  optional: true,
} as const;

function filter(t: Transport): OracleScenario {
  const modern = modernOf(t);
  return {
    name: `[${t.label}] receive filter: promiscuous, unicast, multicast, broadcast, MAC table, VLAN, frame by frame`,
    expected: [SHORT_FILTER],
    async run(ctx) {
      const n = await openNet(ctx, t, LINUX | (modern ? 0n : 0n));
      const m = n.rig.m;
      for (let i = 0; i < 40; i++) await postRx(n, [1600], { notify: false });
      await n.rig.drv.notify(0);
      const probe = async (label: string, frames: Uint8Array[]) => {
        await inject(n, frames);
        await used(n, n.rx, 0, `${label}: rx used`);
      };
      const all = [frame(OWN, 60, 1), frame(OTHER, 60, 2), frame(BCAST, 60, 3), frame(MCAST, 60, 4), frame([0x01, 0, 0x5e, 0, 0, 9], 60, 5), tagged(OWN, 5), tagged(OWN, 6)];
      await probe('promiscuous (default)', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC, [0]);
      await probe('not promiscuous', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD, le16(5));
      await probe('vlan 5 added', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET, [...le32(1), ...OTHER, ...le32(1), ...MCAST]);
      await probe('mac table', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_ALLMULTI, [1]);
      await probe('allmulti', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_NOBCAST, [1]);
      await probe('nobcast', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_NOMULTI, [1]);
      await probe('nomulti', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_ALLUNI, [1]);
      await probe('alluni', all);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_NOUNI, [1]);
      await probe('nouni', all);
      await m.phase('short frames: 1, 13, 15, 17 bytes');
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_NOUNI, [0]);
      await probe('short frames', [frame(OWN, 1, 9), frame(OWN, 13, 9), tagged(OWN, 5, 15), tagged(OWN, 5, 17)]);
      await rxFilter(n);
      await done(n);
    },
  };
}

function link(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] link status: set_link on the netdev and on the NIC, the status bit and config interrupt, traffic while down`,
    async run(ctx) {
      const n = await openNet(ctx, t, F.MAC | F.STATUS | F.MRG);
      const m = n.rig.m;
      const gen = async () => {
        const g = await configGeneration(n.rig);
        if (g !== undefined) await m.note(`config generation ${g}`);
      };
      await gen();
      await qmpNote(m, 'set_link', { name: 'n0', up: false });
      await n.rig.drv.configRead(6, 2);
      await n.rig.irq?.check();
      await gen();
      await m.phase('while down');
      await postTx(n, [new Uint8Array([...hdr(n.hdr), ...frame(OTHER, 60, 1)])]);
      await n.rig.drv.notify(1);
      await used(n, n.tx, 1, 'tx used');
      await wire(n, 0);
      const p = await postRx(n, [256]);
      await inject(n, [frame(OWN, 60, 2)]);
      await used(n, n.rx, 0, 'rx used');
      await m.phase('up again');
      await qmpNote(m, 'set_link', { name: 'n0', up: true });
      await n.rig.drv.configRead(6, 2);
      await n.rig.irq?.check();
      await gen();
      await inject(n, [frame(OWN, 60, 3)]);
      const u = await used(n, n.rx, 1, 'rx used');
      for (const e of u) await noteRx(n, p, e.len);
      await m.phase('the NIC by name, twice down (one change), and errors');
      await qmpNote(m, 'set_link', { name: 'nic0', up: false });
      await qmpNote(m, 'set_link', { name: 'nic0', up: false });
      await n.rig.drv.configRead(6, 2);
      await n.rig.irq?.check();
      await qmpNote(m, 'set_link', { name: 'nic0', up: true });
      await n.rig.drv.configRead(6, 2);
      await n.rig.irq?.check();
      await qmpNote(m, 'set_link', { name: 'nope', up: true });
      await qmpNote(m, 'set_link', { name: 'n0' });
      await qmpNote(m, 'query-rx-filter', { name: 'n0' });
      await qmpNote(m, 'query-rx-filter', { name: 'nope' });
      await done(n);
    },
  };
}

function announce(t: Transport): OracleScenario {
  return {
    name: `[${t.label}] announce-self: the RARP frame, the guest asked to announce (status, config interrupt), the ack`,
    async run(ctx) {
      const n = await openNet(ctx, t, LINUX);
      const m = n.rig.m;
      await qmpNote(m, 'announce-self', { initial: 50, max: 550, rounds: 1, step: 100 });
      await wire(n, 1, 'rarp');
      await n.rig.drv.configRead(6, 2);
      await n.rig.irq?.check();
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, []);
      await n.rig.drv.configRead(6, 2);
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_ANNOUNCE, C.VIRTIO_NET_CTRL_ANNOUNCE_ACK, [], { label: 'ack again' });
      await m.phase('without GUEST_ANNOUNCE: only the frame');
      const n2 = await openNet(ctx, t, F.MAC | F.STATUS | F.CTRL, { rig: n.rig });
      await qmpNote(m, 'announce-self', { initial: 50, max: 550, rounds: 1, step: 100, interfaces: ['nic0'] });
      await wire(n2, 1, 'rarp');
      await n2.rig.drv.configRead(6, 2);
      await qmpNote(m, 'announce-self', { initial: 50, max: 550, rounds: 1, step: 100, interfaces: ['other'] });
      await wire(n2, 0, 'rarp (other interface)');
      await done(n2);
    },
  };
}

/** Row #17: a broken device's virtio-mmio line is lowered once the driver acknowledges. */
const ROW17 = {
  row: 17,
  reason: "QEMU's virtio_update_irq returns early for a broken device, so InterruptACK does not lower the mmio line; ours does",
  sections: ['tx header only', 'ctrl without ack', 'rx readable only'],
  lines: /^irq lower /,
  optional: true,
} as const;

function errors(t: Transport): OracleScenario {
  return {
    ...(t.kind === 'mmio' ? { expected: [ROW17] } : {}),
    name: `[${t.label}] error paths: a transmit chain without a frame, a control command without an ack buffer, a receive chain without writable buffers`,
    async run(ctx) {
      for (const what of ['tx header only', 'ctrl without ack', 'rx readable only'] as const) {
        const n = await openNet(ctx, t, LINUX);
        const m = n.rig.m;
        await m.phase(what);
        if (what === 'tx header only') {
          await postTx(n, [hdr(n.hdr)]);
          await n.rig.drv.notify(1);
          await used(n, n.tx, 0, 'tx used');
        } else if (what === 'ctrl without ack') {
          await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, 0, [1], { noAck: true });
        } else {
          const a = n.rig.alloc.alloc(256, 16);
          await m.quiet(() => n.rx.add([{ addr: a, len: 256, write: false }]));
          await n.rig.drv.notify(0);
          await inject(n, [frame(OWN, 60, 1)]);
          await used(n, n.rx, 0, 'rx used');
        }
        await noteStatus(n);
        await n.rig.irq?.check();
        await teardown(n.rig);
      }
    },
  };
}

function msix(t: PciTransport): OracleScenario {
  return {
    name: `[${t.label}] MSI-X: receive, transmit, control and link change on their vectors`,
    async run(ctx) {
      const n = await openNet(ctx, t, LINUX, { irq: 'msix' });
      const m = n.rig.m;
      const p = await postRx(n, [2048]);
      await inject(n, [frame(OWN, 100, 1)]);
      const u = await used(n, n.rx, 1, 'rx used');
      for (const e of u) await noteRx(n, p, e.len);
      await n.rig.irq!.check();
      await postTx(n, [new Uint8Array([...hdr(n.hdr), ...frame(OTHER, 60, 2)])]);
      await n.rig.drv.notify(1);
      await used(n, n.tx, 1, 'tx used');
      await wire(n, 1);
      await n.rig.irq!.check();
      await ctrlCmd(n, C.VIRTIO_NET_CTRL_RX, 0, [0]);
      await n.rig.irq!.check();
      await qmpNote(m, 'set_link', { name: 'n0', up: false });
      await n.rig.irq!.check();
      await qmpNote(m, 'set_link', { name: 'n0', up: true });
      await done(n);
    },
  };
}

function groupFor(t: Transport, spec: OracleMachineSpec): OracleGroup {
  const list: OracleScenario[] = [identity(t), receiveHeaders(t), mergeable(t), waiting(t), transmit(t), control(t), filter(t), link(t), announce(t), errors(t)];
  if (t.kind === 'pci' && t.mode === 'modern') list.push(msix(t));
  return { name: t.label, spec, scenarios: list };
}

export const NET_GROUPS: readonly OracleGroup[] = [
  groupFor(T.modern, pci('virtio-net-pci,disable-legacy=on,addr=04.0')),
  groupFor(T.legacy, pci('virtio-net-pci,disable-modern=on,addr=03.0')),
  groupFor(T.transModern, pci('virtio-net-pci')),
  groupFor(T.transLegacy, pci('virtio-net-pci')),
  groupFor(T.mmioV1, mmio(false)),
  groupFor(T.mmioV2, mmio(true)),
];

export { hexb };
