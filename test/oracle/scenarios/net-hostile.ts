// Hostile guests of virtio-net (shared/spec/hostile-guest-bugs.md G-net T-Gn1..T-Gn13 and the
// generic T-C5/T-C7/T-Gr1 forms), run on QEMU 7.2 and on ours with the same script. Each records
// what a driver sees and returns its observations, from which each side gets a verdict in
// virtio-villain's terms (src/oracle/verdict.ts):
//
//   setup     bring the NIC up (INTx or the mmio line); canary-fill a 64 KiB arena
//   attack    the bad input; then status, used rings and interrupts are read
//   liveness  unless NEEDS_RESET is set: a frame in (a fresh receive buffer) and a frame out
//   recovery  reset, set up again, a frame in and out (I7)
//
// The arena must not change except where the attack gave the device writable buffers (I4).
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import type { OracleContext, OracleGroup, OracleScenario } from '../../../src/oracle/scenario.js';
import type { HostileFacts } from '../../../src/oracle/verdict.js';
import type { VringDriver } from '../../../src/driver/vring.js';
import { VRING_DESC_F_NEXT } from '../../../src/vring/constants.js';
import * as C from '../../../src/devices/net/constants.js';
import { bringUpDevice, runHostileLifecycle, mmioNum, openDevice } from './devrig.js';
import { teardown, type Rig, type Transport } from './rig.js';
import { F, frame, hex, hdr, OTHER, OWN, type NetRig } from './netrig.js';

const ARENA = 0x60_0000;
const ARENA_SIZE = 64 * 1024;
const CANARY = 0x5a;

interface H {
  rig: Rig;
  n: NetRig;
  writable: [number, number][];
  problems: string[];
  /** Set by attacks on legal input: whether it was processed as the spec requires. */
  legal?: boolean;
  processed?: boolean;
}

type Attack = (h: H) => Promise<void>;

function queues(t: Transport): { index: number; num?: number }[] {
  return [0, 1, 2].map((index) => {
    const num = mmioNum(t, index === 2 ? 64 : 256);
    return num === undefined ? { index } : { index, num };
  });
}

async function bring(ctx: OracleContext, rig: Rig, t: Transport, features: bigint): Promise<NetRig> {
  const rings = await bringUpDevice(rig, { features, queues: queues(t), irq: t.kind === 'pci' ? 'intx' : 'mmio' });
  const f = rig.drv.features;
  const peer = ctx.net!.get('n0')!;
  peer.take();
  return { rig, peer, rings, rx: rings.get(0)!, tx: rings.get(1)!, ctrl: rings.get(2), hdr: (f & (1n << 32n)) !== 0n || (f & F.MRG) !== 0n ? 12 : 10 };
}

/** Used entries now (waiting up to `count`), unrecorded; checked for I6 against the chains' capacities. */
async function usedOf(h: H, ring: VringDriver, count: number, caps?: Map<number, number>, label = 'used'): Promise<{ id: number; len: number }[]> {
  const m = h.rig.m;
  const got: { id: number; len: number }[] = [];
  await m.quiet(async () => {
    const deadline = performance.now() + (count > 0 ? 1500 : 0);
    for (;;) {
      got.push(...(await ring.takeUsed()));
      if (got.length >= count || performance.now() > deadline) break;
      await m.settle();
      await new Promise((r) => setTimeout(r, 2));
    }
    await m.idle();
    got.push(...(await ring.takeUsed()));
  });
  const seen = new Set<number>();
  for (const u of got) {
    if (u.id >= ring.num) h.problems.push(`I6: used id ${u.id} beyond the ring`);
    else if (seen.has(u.id)) h.problems.push(`I6: head ${u.id} used twice`);
    seen.add(u.id);
    const cap = caps?.get(u.id);
    if (cap !== undefined && u.len > cap) h.problems.push(`I6: used.len ${u.len} of head ${u.id} beyond its ${cap} writable bytes`);
  }
  await m.note(`${label} ${got.length === 0 ? 'none' : got.map((u) => `${u.id}:${u.len}`).join(' ')}`);
  return got;
}

/** A frame in through a fresh receive buffer and a frame out: whether both went. */
async function traffic(h: H, n: NetRig): Promise<boolean> {
  const m = h.rig.m;
  const a = h.rig.alloc.alloc(2048, 16);
  await m.quiet(() => m.memset(a, 2048, 0));
  await m.quiet(() => n.rx.add([{ addr: a, len: 2048, write: true }]));
  await h.rig.drv.notify(0);
  await n.peer.send(frame(OWN, 100, 7));
  await n.peer.settle(30);
  const rxu = await usedOf(h, n.rx, 1, undefined, 'used rx');
  const t = h.rig.alloc.alloc(n.hdr + 80, 16);
  await m.quiet(() => m.writeBytes(t, new Uint8Array([...hdr(n.hdr), ...frame(OTHER, 80, 8)])));
  await m.quiet(() => n.tx.add([{ addr: t, len: n.hdr + 80, write: false }]));
  await h.rig.drv.notify(1);
  const txu = await usedOf(h, n.tx, 1, undefined, 'used tx');
  const wire = await n.peer.wait(1, 1000);
  await m.note(`wire ${wire.map((f) => `${f.length}`).join(' ') || 'nothing'}`);
  return rxu.length >= 1 && txu.length >= 1 && wire.length >= 1;
}

function hostile(name: string, ids: string, t: Transport, attack: Attack, opts: { features?: bigint; expected?: ExpectedDifference[] } = {}): OracleScenario {
  const features = opts.features ?? F.MAC | F.MRG | F.STATUS | F.CTRL | F.CTRL_RX | F.CTRL_VLAN | F.INDIRECT;
  return {
    name: `[${t.label}] ${name}`,
    ids,
    ...(opts.expected ? { expected: opts.expected } : {}),
    async run(ctx): Promise<HostileFacts> {
      const rig = await openDevice(ctx, t);
      let h: H | undefined;
      const facts = await runHostileLifecycle(rig, {
        bring: () => bring(ctx, rig, t, features),
        attack: (n, writable, problems) => attack((h = { rig, n, writable, problems })),
        traffic: (n) => traffic(h!, n),
        arena: { base: ARENA, size: ARENA_SIZE, canary: CANARY },
      });
      await teardown(rig);
      return { legal: h?.legal ?? false, ...(h?.legal ? { processed: h.processed ?? false } : {}), ...facts };
    },
  };
}

/** A control command with the given readable and writable pieces; returns the ack's bytes. */
async function ctrlRaw(h: H, out: Uint8Array[], inLens: number[]): Promise<void> {
  const m = h.rig.m;
  const bufs: { addr: number; len: number; write: boolean }[] = [];
  for (const p of out) {
    const a = h.rig.alloc.alloc(Math.max(16, p.length), 16);
    await m.quiet(() => m.writeBytes(a, p));
    bufs.push({ addr: a, len: p.length, write: false });
  }
  let at = ARENA;
  for (const l of inLens) {
    bufs.push({ addr: at, len: l, write: true });
    h.writable.push([at, l]);
    at += 64;
  }
  await m.quiet(() => h.n.ctrl!.add(bufs));
  await h.rig.drv.notify(2);
  const u = await usedOf(h, h.n.ctrl!, inLens.length ? 1 : 0, undefined, 'used ctrl');
  if (u.length && inLens.length) await m.note(`ack ${hex(await m.quiet(() => m.readBytes(ARENA, Math.min(4, inLens[0]!))))}`);
}

const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
const MAC_TABLE = [C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_TABLE_SET];

// --- attacks ---------------------------------------------------------------------------------------

/** T-Gn1: MAC table counts whose byte counts wrap 32 bits, or exceed the buffer. */
const macTableHuge: Attack = async (h) => {
  for (const [uni, multi, tail] of [
    [0x4000_0000, 0, 12],
    [0x2aaa_aaab, 0, 2],
    [0xffff_ffff, 1, 6],
    [65, 0, 65 * 6],
  ] as const) {
    await ctrlRaw(h, [new Uint8Array([...MAC_TABLE, ...le32(uni), ...new Array(tail).fill(2), ...le32(multi), ...new Array(multi * 6).fill(1)])], [1]);
  }
  await h.rig.m.note(`rx-filter ${JSON.stringify(await h.rig.m.qmp!.execute('query-rx-filter'))}`);
};

/** T-Gn2: a 9000-byte frame into 1526-byte buffers without mergeable buffers, then a 60-byte one. */
const jumboNoMrg: Attack = async (h) => {
  const { n, rig } = h;
  const b = ARENA;
  h.writable.push([b, 1526]);
  await rig.m.quiet(() => n.rx.add([{ addr: b, len: 1526, write: true }]));
  await rig.drv.notify(0);
  await n.peer.send(frame(OWN, 9000, 1));
  await n.peer.settle(30);
  await usedOf(h, n.rx, 0, undefined, 'used rx after 9000 bytes');
  await n.peer.send(frame(OWN, 60, 2));
  await n.peer.settle(30);
  h.legal = true;
  const u = await usedOf(h, n.rx, 1, new Map([[0, 1526]]), 'used rx after 60 bytes');
  h.processed = u.length === 1 && u[0]!.len === 60 + n.hdr;
};

/** T-Gn3 / T-C5e: the header over 1-byte descriptors, the frame over three buffers (legal). */
const headerInBytes: Attack = async (h) => {
  const { n, rig } = h;
  const caps = new Map<number, number>();
  const pieces: { addr: number; len: number; write: boolean }[] = [];
  let at = ARENA;
  for (let i = 0; i < 12; i++) pieces.push({ addr: at++, len: 1, write: true });
  pieces.push({ addr: at, len: 500, write: true });
  at += 512;
  h.writable.push([ARENA, 12 + 500]);
  const h0 = await rig.m.quiet(() => n.rx.add(pieces));
  caps.set(h0, 512);
  for (let k = 0; k < 2; k++) {
    h.writable.push([at, 600]);
    caps.set(await rig.m.quiet(() => n.rx.add([{ addr: at, len: 600, write: true }])), 600);
    at += 640;
  }
  await rig.drv.notify(0);
  const f = frame(OWN, 1500, 3);
  await n.peer.send(f);
  await n.peer.settle(40);
  h.legal = true;
  const u = await usedOf(h, n.rx, 3, caps, 'used rx');
  const hdrBytes = await rig.m.quiet(() => rig.m.readBytes(ARENA, 12));
  await rig.m.note(`header ${hex(hdrBytes)}`);
  h.processed = u.length === 3 && hdrBytes[10] === 3 && hdrBytes[11] === 0;
};

/** T-C5d / T-Gn10: a 4-byte receive buffer first, with mergeable buffers. */
const tinyRxMrg: Attack = async (h) => {
  const { n, rig } = h;
  h.writable.push([ARENA, 4], [ARENA + 64, 2048]);
  const caps = new Map<number, number>();
  caps.set(await rig.m.quiet(() => n.rx.add([{ addr: ARENA, len: 4, write: true }])), 4);
  caps.set(await rig.m.quiet(() => n.rx.add([{ addr: ARENA + 64, len: 2048, write: true }])), 2048);
  await rig.drv.notify(0);
  await n.peer.send(frame(OWN, 100, 4));
  await n.peer.settle(40);
  await usedOf(h, n.rx, 2, caps, 'used rx');
  await rig.m.note(`bytes ${hex(await rig.m.quiet(() => rig.m.readBytes(ARENA, 8)))}`);
};

/** T-C7: a receive chain without a writable buffer. */
const readableRx: Attack = async (h) => {
  const { n, rig } = h;
  await rig.m.quiet(() => n.rx.add([{ addr: ARENA, len: 2048, write: false }]));
  await rig.drv.notify(0);
  await n.peer.send(frame(OWN, 60, 5));
  await n.peer.settle(30);
  await usedOf(h, n.rx, 0, undefined, 'used rx');
};

/** T-Gn6: frames of 1, 13, 14 and 17 bytes in; transmit frames of 1..13 bytes. */
const shortFrames: Attack = async (h) => {
  const { n, rig } = h;
  for (let i = 0; i < 4; i++) {
    h.writable.push([ARENA + i * 128, 64]);
    await rig.m.quiet(() => n.rx.add([{ addr: ARENA + i * 128, len: 64, write: true }]));
  }
  await rig.drv.notify(0);
  for (const len of [1, 13, 14, 17]) await n.peer.send(frame(OWN, len, 6));
  await n.peer.settle(40);
  h.legal = true;
  const u = await usedOf(h, n.rx, 4, undefined, 'used rx');
  for (const len of [1, 5, 13]) {
    const a = rig.alloc.alloc(n.hdr + len, 16);
    await rig.m.quiet(() => rig.m.writeBytes(a, new Uint8Array([...hdr(n.hdr), ...frame(OTHER, len, 7)])));
    await rig.m.quiet(() => n.tx.add([{ addr: a, len: n.hdr + len, write: false }]));
  }
  await rig.drv.notify(1);
  const tu = await usedOf(h, n.tx, 3, undefined, 'used tx');
  const wire = await n.peer.wait(3, 1000);
  await rig.m.note(`wire ${wire.map((f) => hex(f)).join(' ')}`);
  h.processed = u.length === 4 && tu.length === 3 && wire.length === 3;
};

/** T-Gn8: VLAN ids 4096 and 0xffff, a VLAN command of one byte. */
const vlanOutOfRange: Attack = async (h) => {
  const V = [C.VIRTIO_NET_CTRL_VLAN, C.VIRTIO_NET_CTRL_VLAN_ADD];
  await ctrlRaw(h, [new Uint8Array([...V, 0x00, 0x10])], [1]);
  await ctrlRaw(h, [new Uint8Array([...V, 0xff, 0xff])], [1]);
  await ctrlRaw(h, [new Uint8Array([...V, 0x05])], [1]);
  await h.rig.m.note(`vlan-table ${JSON.stringify(((await h.rig.m.qmp!.execute('query-rx-filter')) as { 'vlan-table': number[] }[])[0]!['vlan-table'])}`);
};

/** T-Gn9a: a control command of one byte. */
const ctrlOneByte: Attack = async (h) => {
  await ctrlRaw(h, [new Uint8Array([0])], [1]);
};

/** T-Gn9b: a control command without a writable ack. */
const ctrlNoAck: Attack = async (h) => {
  await ctrlRaw(h, [new Uint8Array([0, 0, 1])], []);
};

/** T-Gn9c / T-E5: data shorter than the command needs; RSS without the feature; a 1 MiB command. */
const ctrlShortData: Attack = async (h) => {
  await ctrlRaw(h, [new Uint8Array([C.VIRTIO_NET_CTRL_RX, C.VIRTIO_NET_CTRL_RX_PROMISC])], [1]);
  await ctrlRaw(h, [new Uint8Array([C.VIRTIO_NET_CTRL_MAC, C.VIRTIO_NET_CTRL_MAC_ADDR_SET, 1, 2, 3])], [1]);
  await ctrlRaw(h, [new Uint8Array([C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_RSS_CONFIG, ...new Array(64).fill(1)])], [1]);
  await ctrlRaw(h, [new Uint8Array([C.VIRTIO_NET_CTRL_MQ, C.VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET, 0, 0])], [1]);
  // A 1 MiB table command: QEMU reads what it needs and answers.
  const big = new Uint8Array(1 << 20);
  big.set([...MAC_TABLE, ...le32(0), ...le32(1)]);
  await ctrlRaw(h, [big], [1]);
};

/** T-Gn11: 40 frames while no receive buffer is posted; then 20 buffers: 20 frames, in order. */
const noBuffersFlood: Attack = async (h) => {
  const { n, rig } = h;
  for (let i = 0; i < 40; i++) await n.peer.send(frame(OWN, 60 + i, 10));
  await n.peer.settle(60);
  await usedOf(h, n.rx, 0, undefined, 'used rx before buffers');
  for (let i = 0; i < 20; i++) {
    h.writable.push([ARENA + i * 256, 256]);
    await rig.m.quiet(() => n.rx.add([{ addr: ARENA + i * 256, len: 256, write: true }]));
  }
  await rig.drv.notify(0);
  await n.peer.settle(60);
  h.legal = true;
  const u = await usedOf(h, n.rx, 20, undefined, 'used rx');
  h.processed = u.length === 20 && u.every((x, i) => x.len === n.hdr + 60 + i);
  // What still waits goes into the next buffers (all of it, so nothing is left for later scenarios).
  for (let i = 0; i < 20; i++) await rig.m.quiet(() => n.rx.add([{ addr: ARENA + 0x8000 + i * 256, len: 256, write: true }]));
  h.writable.push([ARENA + 0x8000, 20 * 256]);
  await rig.drv.notify(0);
  await n.peer.settle(60);
  await usedOf(h, n.rx, 20, undefined, 'used rx (the rest)');
};

/** T-Gn12: a transmit chain of only writable descriptors. */
const txWritableOnly: Attack = async (h) => {
  h.writable.push([ARENA, 200]);
  await h.rig.m.quiet(() => h.n.tx.add([{ addr: ARENA, len: 200, write: true }]));
  await h.rig.drv.notify(1);
  await usedOf(h, h.n.tx, 0, undefined, 'used tx');
};

/** T-A7 / T-Gn12: a transmit chain of nearly 4 GiB (1023 × 4 MiB through an indirect table), then a normal frame. */
const txFourGiB: Attack = async (h) => {
  const { n, rig } = h;
  const table = ARENA + 0x1000;
  const entries = 1023;
  const t = new Uint8Array(16 * entries);
  const dv = new DataView(t.buffer);
  for (let i = 0; i < entries; i++) {
    dv.setBigUint64(16 * i, 0x20_0000n, true);
    dv.setUint32(16 * i + 8, 4 << 20, true);
    dv.setUint16(16 * i + 12, i === entries - 1 ? 0 : VRING_DESC_F_NEXT, true);
    dv.setUint16(16 * i + 14, i + 1, true);
  }
  await rig.m.quiet(() => rig.m.writeBytes(table, t));
  const head = await rig.m.quiet(() => n.tx.add([{ addr: table, len: t.length, write: false }], { publish: false }));
  // The driver's bookkeeping made a direct descriptor: turn it into the indirect one.
  await rig.m.quiet(() => n.tx.writeDesc(head, table, t.length, 4, 0));
  await rig.m.quiet(() => n.tx.publish(head));
  await rig.drv.notify(1);
  await usedOf(h, n.tx, 1, undefined, 'used tx (4 GiB chain)');
  await n.peer.settle(30);
  await rig.m.note(`wire ${n.peer.take().length} frames`);
  await rig.m.quiet(() => rig.m.memset(table, t.length, CANARY));
};

// --- groups ----------------------------------------------------------------------------------------

const ROW17: ExpectedDifference = {
  row: 17,
  reason: 'a broken device: QEMU keeps the mmio line high after InterruptACK until reset; we lower it once the ISR is 0',
  sections: ['attack', 'liveness', 'recovery'],
  lines: /^irq lower \d+$/,
  optional: true,
};
/** Row of docs/qemu-differences.md: receive used.len of a buffer shorter than the header. */
export const ROW_RX_LEN = 71;
const RX_LEN: ExpectedDifference = {
  row: ROW_RX_LEN,
  reason: "a receive buffer shorter than the 12-byte header with mergeable buffers: QEMU 7.2.22 aborts (iov_copy: Assertion `offset == 0' failed, writing num_buffers); we write what fits and report what was written",
  sections: ['attack', 'liveness', 'recovery'],
  truncates: true,
};

function group(t: Transport): OracleGroup {
  const mm = t.kind === 'mmio' ? [ROW17] : [];
  const e = (...rows: ExpectedDifference[]) => (rows.length + mm.length ? { expected: [...rows, ...mm] } : {});
  return {
    name: `hostile ${t.label}`,
    spec: t.kind === 'pci'
      ? { machine: 'pc', args: ['-netdev', 'socket,id=n0,@NET:n0@', '-device', `virtio-net-pci,netdev=n0,romfile=,ioeventfd=off,id=nic0,addr=04.0,${t.mode === 'modern' ? 'disable-legacy=on' : 'disable-modern=on'}`] }
      : { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-netdev', 'socket,id=n0,@NET:n0@', '-device', 'virtio-net-device,netdev=n0,id=nic0'] },
    scenarios: [
      hostile('MAC table counts wrapping 32 bits, beyond the buffer, beyond the table', 'T-Gn1 CVE-2014-0150 CVE-2013-4148/4149', t, macTableHuge, e()),
      hostile('a 9000-byte frame into a 1526-byte buffer without mergeable buffers, then a 60-byte frame', 'T-Gn2 CVE-2015-7295', t, jumboNoMrg, { features: F.MAC | F.STATUS | F.CTRL, ...e() }),
      hostile('the header over twelve 1-byte descriptors, the frame over three buffers (legal)', 'T-Gn3 T-C5e CVE-2021-3748', t, headerInBytes, e()),
      hostile('a receive chain without a writable buffer', 'T-C7', t, readableRx, e()),
      hostile('frames of 1, 13, 14, 17 bytes in; 1, 5, 13 bytes out (legal)', 'T-Gn6 QEMU #3788', t, shortFrames, e()),
      hostile('VLAN ids 4096 and 0xffff, a one-byte VLAN command', 'T-Gn8', t, vlanOutOfRange, e()),
      hostile('a control command of one byte', 'T-Gn9a', t, ctrlOneByte, e()),
      hostile('a control command without a writable ack', 'T-Gn9b', t, ctrlNoAck, e()),
      hostile('control data shorter than needed, RSS without the feature, pairs 0, a 1 MiB command', 'T-Gn9c T-E5 T-Gn13', t, ctrlShortData, e()),
      hostile('40 frames while no receive buffer is posted, then 20 buffers (legal)', 'T-Gn11', t, noBuffersFlood, e()),
      hostile('a transmit chain of only writable descriptors', 'T-Gn12', t, txWritableOnly, e()),
      hostile('a transmit chain of nearly 4 GiB through an indirect table', 'T-A7 T-Gn12', t, txFourGiB, e()),
      // Last: QEMU aborts here, and the next scenario would start on a fresh machine.
      hostile('a 4-byte receive buffer first, with mergeable buffers', 'T-C5d T-Gn10', t, tinyRxMrg, e(RX_LEN)),
    ],
  };
}

export const NET_HOSTILE_GROUPS: readonly OracleGroup[] = [
  group({ kind: 'pci', label: 'net pci modern', slot: 4, mode: 'modern' }),
  group({ kind: 'mmio', label: 'net mmio v2', index: 23, version: 2 }),
  group({ kind: 'pci', label: 'net pci legacy', slot: 4, mode: 'legacy' }),
];
