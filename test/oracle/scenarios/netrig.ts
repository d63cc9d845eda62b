// Guest-side helpers of the virtio-net oracle scenarios: bring-up of the receive, transmit and
// control queues in one interrupt mode, receive buffers posted and read back (header bytes, the
// frame, what lies past it), frames sent through the transmit queue and read off the test's UDP
// peer, control commands with their acks. They record; the oracle compares.
import { poll } from '../../../src/driver/machine.js';
import type { VringDriver } from '../../../src/driver/vring.js';
import type { OracleContext, OracleNetPeer } from '../../../src/oracle/scenario.js';
import { bit } from '../../../src/virtio/constants.js';
import * as C from '../../../src/devices/net/constants.js';
import { bringUpDevice, mmioNum, openDevice, qmpNote } from './devrig.js';
import { hexb, type IrqMode, type Rig, type Transport } from './rig.js';

export const CANARY = 0xa5;
const GUARD = 8;

export const F = {
  V1: 1n << 32n,
  MRG: bit(C.VIRTIO_NET_F_MRG_RXBUF),
  STATUS: bit(C.VIRTIO_NET_F_STATUS),
  CTRL: bit(C.VIRTIO_NET_F_CTRL_VQ),
  CTRL_RX: bit(C.VIRTIO_NET_F_CTRL_RX),
  CTRL_VLAN: bit(C.VIRTIO_NET_F_CTRL_VLAN),
  RX_EXTRA: bit(C.VIRTIO_NET_F_CTRL_RX_EXTRA),
  ANNOUNCE: bit(C.VIRTIO_NET_F_GUEST_ANNOUNCE),
  MAC_ADDR: bit(C.VIRTIO_NET_F_CTRL_MAC_ADDR),
  OFFLOADS: bit(C.VIRTIO_NET_F_CTRL_GUEST_OFFLOADS),
  MAC: bit(C.VIRTIO_NET_F_MAC),
  MQ: bit(C.VIRTIO_NET_F_MQ),
  EVENT_IDX: 1n << 29n,
  INDIRECT: 1n << 28n,
};
/** What a Linux guest negotiates with QEMU's offer (without offloads). */
export const LINUX = F.MAC | F.MRG | F.STATUS | F.CTRL | F.CTRL_RX | F.CTRL_VLAN | F.RX_EXTRA | F.ANNOUNCE | F.MAC_ADDR | F.OFFLOADS | F.EVENT_IDX | F.INDIRECT;

export const OWN = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
export const BCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
export const OTHER = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
export const MCAST = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];

/** A frame of `len` bytes to `dst`, from a fixed source, with a pattern keyed by `seed`. */
export function frame(dst: readonly number[], len: number, seed = 1, ethertype = 0x0800): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst.slice(0, Math.min(6, len)), 0);
  if (len > 6) f.set([0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc].slice(0, Math.min(6, len - 6)), 6);
  if (len >= 14) {
    f[12] = ethertype >> 8;
    f[13] = ethertype & 0xff;
  }
  for (let i = 14; i < len; i++) f[i] = (i * (seed * 2 + 1) + seed) & 0xff;
  return f;
}

/** A frame tagged with VLAN `vid`. */
export function tagged(dst: readonly number[], vid: number, len = 64): Uint8Array {
  const f = frame(dst, len, 3, 0x8100);
  f[14] = (vid >> 8) & 0x0f;
  f[15] = vid & 0xff;
  f[16] = 0x08;
  f[17] = 0x00;
  return f;
}

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
/** Short bytes in hex; long ones as length, first bytes and a digest. */
export function bytesText(b: Uint8Array): string {
  if (b.length <= 32) return hex(b);
  let h = 0x811c9dc5;
  for (const x of b) h = Math.imul(h ^ x, 0x01000193) >>> 0;
  return `${hex(b.subarray(0, 16))}..(${b.length} bytes, fnv ${h.toString(16)})`;
}

export interface NetRig {
  rig: Rig;
  peer: OracleNetPeer;
  rings: Map<number, VringDriver>;
  rx: VringDriver;
  tx: VringDriver;
  ctrl: VringDriver | undefined;
  /** Header length for the negotiated features. */
  hdr: number;
}

export const irqOf = (t: Transport): IrqMode => (t.kind === 'pci' ? 'intx' : 'mmio');

/** Open the NIC on `t` and bring it up with `features` (and the control queue when negotiated). */
export async function openNet(ctx: OracleContext, t: Transport, features: bigint, opts: { irq?: IrqMode; noDriverOk?: boolean; rig?: Rig } = {}): Promise<NetRig> {
  const peer = ctx.net?.get('n0');
  if (!peer) throw new Error('no UDP peer n0 in this group');
  const rig = opts.rig ?? (await openDevice(ctx, t));
  const withCtrl = (features & F.CTRL) !== 0n;
  const queues = [0, 1, ...(withCtrl ? [2] : [])].map((index) => {
    const num = mmioNum(t, index === 2 ? 64 : 256);
    return num === undefined ? { index } : { index, num };
  });
  const rings = await bringUpDevice(rig, { features, queues, irq: opts.irq ?? irqOf(t), ...(opts.noDriverOk ? { noDriverOk: true } : {}) });
  const f = rig.drv.features;
  const modern = (f & F.V1) !== 0n;
  const hdr = modern || (f & F.MRG) !== 0n ? 12 : 10;
  // Nothing from an earlier scenario may linger on the peer.
  peer.take();
  return { rig, peer, rings, rx: rings.get(0)!, tx: rings.get(1)!, ctrl: rings.get(2), hdr };
}

export interface RxPosted {
  head: number;
  bufs: { addr: number; len: number }[];
}

/** Post one receive chain of writable buffers (canary-filled, guarded), published and notified unless told. */
export async function postRx(n: NetRig, lens: readonly number[], opts: { notify?: boolean } = {}): Promise<RxPosted> {
  const { rig } = n;
  const bufs: { addr: number; len: number }[] = [];
  for (const len of lens) {
    const addr = rig.alloc.alloc(Math.max(1, len) + GUARD, 16);
    await rig.m.quiet(() => rig.m.memset(addr, len + GUARD, CANARY));
    bufs.push({ addr, len });
  }
  const head = await rig.m.quiet(() => n.rx.add(bufs.map((b) => ({ addr: b.addr, len: b.len, write: true }))));
  if (opts.notify ?? true) await rig.drv.notify(0);
  return { head, bufs };
}

/** Wait (bounded, unrecorded) for `count` used entries on `ring`, then note them. */
export async function used(n: NetRig, ring: VringDriver, count: number, label: string, timeoutMs = 1500): Promise<{ id: number; len: number }[]> {
  const got: { id: number; len: number }[] = [];
  const m = n.rig.m;
  await m.quiet(async () => {
    if (count > 0) {
      try {
        await poll(
          m,
          async () => {
            got.push(...(await ring.takeUsed()));
            return got.length >= count;
          },
          { timeoutMs, what: label },
        );
      } catch {
        /* noted below */
      }
    } else {
      await m.idle();
    }
    got.push(...(await ring.takeUsed()));
  });
  await m.note(`${label}: ${got.length === 0 ? 'none' : got.map((u) => `${u.id}:${u.len}`).join(' ')}${got.length < count ? ` (waited for ${count})` : ''}`);
  return got;
}

/** Note what a receive chain holds: the header, the frame (or its digest), and whether the rest is untouched. */
export async function noteRx(n: NetRig, p: RxPosted, usedLen: number, label = `rx ${p.head}`): Promise<Uint8Array> {
  const m = n.rig.m;
  const parts: Uint8Array[] = [];
  for (const b of p.bufs) parts.push(await m.quiet(() => m.readBytes(b.addr, b.len + GUARD)));
  const cap = p.bufs.reduce((s, b) => s + b.len, 0);
  const all = new Uint8Array(cap);
  let off = 0;
  let guards = true;
  p.bufs.forEach((b, i) => {
    all.set(parts[i]!.subarray(0, b.len), off);
    off += b.len;
    if (!parts[i]!.subarray(b.len).every((x) => x === CANARY)) guards = false;
  });
  const n0 = Math.min(usedLen, cap);
  const rest = all.subarray(n0).every((x) => x === CANARY);
  await m.note(`${label}: hdr ${hex(all.subarray(0, Math.min(n.hdr, n0)))} data ${bytesText(all.subarray(Math.min(n.hdr, n0), n0))}${rest ? '' : ' REST WRITTEN'}${guards ? '' : ' GUARD OVERWRITTEN'}`);
  return all.subarray(0, n0);
}

/** Send frames into the NIC from the peer, one after the other, and let the machine take them. */
export async function inject(n: NetRig, frames: readonly Uint8Array[], settleMs = 40): Promise<void> {
  for (const f of frames) await n.peer.send(f);
  await n.peer.settle(settleMs);
}

/** Post a transmit chain of readable buffers (header included by the caller), unpublished unless told. */
export async function postTx(n: NetRig, parts: readonly Uint8Array[], opts: { publish?: boolean } = {}): Promise<number> {
  const { rig } = n;
  const bufs: { addr: number; len: number; write: boolean }[] = [];
  for (const p of parts) {
    const addr = rig.alloc.alloc(Math.max(1, p.length), 16);
    await rig.m.quiet(() => rig.m.writeBytes(addr, p));
    bufs.push({ addr, len: p.length, write: false });
  }
  return rig.m.quiet(() => n.tx.add(bufs, { publish: opts.publish ?? true }));
}

/** A header of `len` zero bytes (optionally with flags/gso set). */
export function hdr(len: number, flags = 0, gso = 0): Uint8Array {
  const h = new Uint8Array(len);
  h[0] = flags;
  h[1] = gso;
  return h;
}

/** The frames the peer got (waiting for `count`), noted. */
export async function wire(n: NetRig, count: number, label = 'on the wire', timeoutMs = 1500): Promise<Uint8Array[]> {
  const got = count > 0 ? await n.peer.wait(count, timeoutMs) : (await n.peer.settle(60), n.peer.take());
  await n.rig.m.note(`${label}: ${got.length === 0 ? 'nothing' : got.map(bytesText).join(' | ')}`);
  return got;
}

/** A control command: class, command, data (maybe split), ack buffer(s); returns the ack noted. */
export async function ctrlCmd(n: NetRig, cls: number, cmd: number, data: readonly number[] | Uint8Array, opts: { label?: string; split?: number[]; ackLen?: number; noAck?: boolean } = {}): Promise<void> {
  const { rig } = n;
  const ring = n.ctrl!;
  const out = new Uint8Array([cls, cmd, ...data]);
  const pieces: Uint8Array[] = [];
  if (opts.split) {
    let at = 0;
    for (const len of opts.split) {
      pieces.push(out.subarray(at, at + len));
      at += len;
    }
    if (at < out.length) pieces.push(out.subarray(at));
  } else {
    pieces.push(out);
  }
  const bufs: { addr: number; len: number; write: boolean }[] = [];
  for (const p of pieces) {
    const addr = rig.alloc.alloc(Math.max(1, p.length), 16);
    await rig.m.quiet(() => rig.m.writeBytes(addr, p));
    bufs.push({ addr, len: p.length, write: false });
  }
  const ackLen = opts.ackLen ?? 1;
  const ack = rig.alloc.alloc(ackLen + GUARD, 16);
  await rig.m.quiet(() => rig.m.memset(ack, ackLen + GUARD, 0xee));
  if (!opts.noAck) bufs.push({ addr: ack, len: ackLen, write: true });
  await rig.m.quiet(() => ring.add(bufs));
  await rig.drv.notify(2);
  const u = await used(n, ring, opts.noAck ? 0 : 1, `ctrl ${opts.label ?? `${cls}.${cmd}`} used`);
  const a = await rig.m.quiet(() => rig.m.readBytes(ack, ackLen + 1));
  await rig.m.note(`ack ${u.length ? hex(a) : '-'}`);
}

export const le32 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, (v >>> 24) & 0xff];
export const le16 = (v: number): number[] => [v & 0xff, (v >>> 8) & 0xff];

/** The device's status byte, noted. */
export async function noteStatus(n: NetRig, label = 'status'): Promise<void> {
  await n.rig.m.note(`${label} ${hexb(await n.rig.drv.status())}`);
}

/** QMP query-rx-filter, noted. */
export async function rxFilter(n: NetRig): Promise<void> {
  await qmpNote(n.rig.m, 'query-rx-filter');
}
