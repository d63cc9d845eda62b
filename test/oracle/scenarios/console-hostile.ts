// Hostile guests of virtio-serial (hostile-guest-bugs.md G-console, T-Gc1-5), run on QEMU 7.2 and
// on ours with a verdict per side: control receive buffers smaller than a message (CVE-2015-5745's
// class) or split over descriptors, a port name longer than the buffer, a zero-length transmit
// descriptor, a transmit chain of almost 4 GiB, host input while the guest posts no receive
// buffer, control messages naming ports out of range or unknown events. Each scenario has the
// sections of the rng ones: setup, attack, liveness (the console port answers PORT_READY), recovery
// (reset, set up again, DEVICE_READY answered), with guard bytes and a canary arena for I4.
import { poll } from '../../../src/driver/machine.js';
import type { ControlMessage } from '../../../src/driver/console.js';
import type { OracleGroup, OracleMachineSpec, OracleScenario } from '../../../src/oracle/scenario.js';
import type { ExpectedDifference } from '../../../src/oracle/compare.js';
import type { HostileFacts } from '../../../src/oracle/verdict.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_RING_F_INDIRECT_DESC, bit } from '../../../src/virtio/constants.js';
import { VRING_DESC_F_INDIRECT } from '../../../src/vring/constants.js';
import {
  VIRTIO_CONSOLE_BAD_ID as BAD_ID,
  VIRTIO_CONSOLE_DEVICE_READY as DEVICE_READY,
  VIRTIO_CONSOLE_F_MULTIPORT,
  VIRTIO_CONSOLE_PORT_OPEN as PORT_OPEN,
  VIRTIO_CONSOLE_PORT_READY as PORT_READY,
} from '../../../src/devices/console/constants.js';
import { HostSocket } from '../../support/host-socket.js';
import { PORTS, T, bringUp, control, fmtMsg, open, send, settle, teardown, text, type ConsoleRig } from './console.js';
import { hexb, isModern, type MmioTransport, type PciTransport } from './rig.js';

const MULTIPORT = bit(VIRTIO_CONSOLE_F_MULTIPORT);
const IND = bit(VIRTIO_RING_F_INDIRECT_DESC);
const CANARY = 0x5a;
const GUARD = 16;
const LONG_NAME = 'org.virtio-ts.' + 'n'.repeat(186);

/** The ports of console.ts, a second console on a null chardev (5), and a port with a 200-byte name (6). */
const HOSTILE_PORTS = [...PORTS, '-chardev', 'null,id=n5', '-device', 'virtconsole,chardev=n5,nr=5', '-device', `virtserialport,nr=6,name=${LONG_NAME}`];
const ALL_PORTS = 6;

/** QEMU reports a control message's whole length in a buffer that took part of it. */
const ROW_CONTROL_LEN: ExpectedDifference = {
  row: 49,
  reason: "QEMU's send_control_msg pushes the message's length as used.len even when the buffer took fewer bytes (it writes only what fits); ours reports what was written",
  sections: ['attack'],
};
const ROW_ZERO_LEN: ExpectedDifference = {
  row: 2,
  reason: 'QEMU breaks the device on a zero-length descriptor; ours walks it without mapping it',
  sections: ['attack', 'liveness'],
};

interface Attack {
  name: string;
  ids: string;
  legal?: boolean;
  expected?: readonly ExpectedDifference[];
  features?: bigint;
  /** Control receive buffers for the set-up (default 8 of 64 bytes). */
  controlRx?: { rxBuffers: number; bufLen: number };
  /** The attack; returns the problems it saw (I4, I6) and, for a legal input, whether it was processed. */
  run(c: ConsoleRig, arena: number): Promise<{ problems: string[]; processed?: boolean }>;
}

/** Buffers of `len` writable bytes with a canary guard after each, for a queue. */
async function guardedRx(c: ConsoleRig, q: 'control' | number, len: number, count: number): Promise<{ addr: number; len: number }[]> {
  const queue = q === 'control' ? c.con.controlRx! : c.con.port(q).rx;
  const bufs: { addr: number; len: number }[] = [];
  await c.rig.m.quiet(async () => {
    for (let i = 0; i < count; i++) {
      const addr = c.rig.alloc.alloc(len + GUARD, 16);
      await c.rig.m.memset(addr, len + GUARD, CANARY);
      await queue.add([{ addr, len, write: true }]);
      bufs.push({ addr, len });
    }
    await queue.notify();
  });
  return bufs;
}

/** I4: the guard after each buffer, and the arena, still hold the canary. */
async function guardsIntact(c: ConsoleRig, bufs: readonly { addr: number; len: number }[], arena: number): Promise<string[]> {
  const out: string[] = [];
  await c.rig.m.quiet(async () => {
    for (const b of bufs) {
      const g = await c.rig.m.readBytes(b.addr + b.len, GUARD);
      if (g.some((x) => x !== CANARY)) out.push(`I4: bytes written past the ${b.len}-byte buffer at 0x${b.addr.toString(16)}`);
    }
    const a = await c.rig.m.readBytes(arena, 4096);
    if (a.some((x) => x !== CANARY)) out.push('I4: the canary arena changed');
  });
  return out;
}

/** Control messages as they landed: used.len and the bytes in the buffer (at most its size). */
async function takeControlRaw(c: ConsoleRig, count: number): Promise<{ len: number; data: Uint8Array }[]> {
  return c.rig.m.quiet(() => c.con.controlRx!.waitUpTo(count, { timeoutMs: 2000 }));
}

const ATTACKS: readonly Attack[] = [
  {
    name: 'control receive buffers of one byte (PORT_ADD does not fit)',
    ids: 'T-Gc1a, CVE-2015-5745',
    controlRx: { rxBuffers: 0, bufLen: 1 },
    expected: [ROW_CONTROL_LEN],
    async run(c, arena) {
      const bufs = await guardedRx(c, 'control', 1, ALL_PORTS);
      await send(c, BAD_ID, DEVICE_READY, 1);
      const used = await takeControlRaw(c, ALL_PORTS);
      await c.rig.m.note(`PORT_ADD into 1-byte buffers: ${used.map((u) => `${u.len}:${text(u.data.subarray(0, 1))}`).join(' ')}`);
      const problems = await guardsIntact(c, bufs, arena);
      for (const u of used) if (u.len > 1) problems.push(`I6: used.len ${u.len} for a 1-byte buffer`);
      return { problems };
    },
  },
  {
    name: 'a control message split over a 4 + 4 byte chain',
    ids: 'T-Gc1b',
    legal: true,
    controlRx: { rxBuffers: 0, bufLen: 1 },
    async run(c, arena) {
      const q = c.con.controlRx!;
      const bufs: { addr: number; len: number }[] = [];
      await c.rig.m.quiet(async () => {
        for (let i = 0; i < ALL_PORTS; i++) {
          const a = c.rig.alloc.alloc(4 + GUARD, 16);
          const b = c.rig.alloc.alloc(4 + GUARD, 16);
          await c.rig.m.memset(a, 4 + GUARD, CANARY);
          await c.rig.m.memset(b, 4 + GUARD, CANARY);
          await q.add([{ addr: a, len: 4, write: true }, { addr: b, len: 4, write: true }]);
          bufs.push({ addr: a, len: 4 }, { addr: b, len: 4 });
        }
        await q.notify();
      });
      await send(c, BAD_ID, DEVICE_READY, 1);
      const used = await takeControlRaw(c, ALL_PORTS);
      await c.rig.m.note(`PORT_ADD over 4 + 4 bytes: ${used.map((u) => `${u.len}:${text(u.data)}`).join(' ')}`);
      const problems = await guardsIntact(c, bufs, arena);
      const processed = used.length === ALL_PORTS && used.every((u) => u.len === 8 && u.data[4] === 1);
      return { problems, processed };
    },
  },
  {
    name: 'PORT_NAME of a 200-byte name into 64-byte control buffers',
    ids: 'T-Gc1c',
    controlRx: { rxBuffers: 0, bufLen: 1 },
    expected: [ROW_CONTROL_LEN],
    async run(c, arena) {
      const bufs = await guardedRx(c, 'control', 64, 1);
      await send(c, 6, PORT_READY, 1);
      const used = await takeControlRaw(c, 1);
      await c.rig.m.note(`PORT_NAME into 64 bytes: ${used.map((u) => `${u.len}:${text(u.data.subarray(0, 64))}`).join(' ')}`);
      const problems = await guardsIntact(c, bufs, arena);
      for (const u of used) if (u.len > 64) problems.push(`I6: used.len ${u.len} for a 64-byte buffer`);
      return { problems };
    },
  },
  {
    name: 'a zero-length transmit descriptor',
    ids: 'T-Gc2b, cloud-hypervisor #7803',
    expected: [ROW_ZERO_LEN],
    async run(c) {
      const tx = c.con.port(5).tx;
      await c.rig.m.quiet(async () => {
        await tx.postChain([{ data: new Uint8Array(0) }]);
        await tx.notify();
      });
      await settle(c);
      const used = await c.rig.m.quiet(() => tx.take());
      await c.rig.m.note(`zero-length transmit: used ${used.map((u) => u.len).join(' ') || 'none'}`);
      return { problems: [] };
    },
  },
  {
    name: 'a transmit chain of 290 × 14 MiB (almost 4 GiB) to a console on a null chardev',
    ids: 'T-Gc2a (huge write)',
    legal: true,
    features: IND,
    async run(c) {
      const tx = c.con.port(5).tx;
      const n = 290;
      const table = c.rig.alloc.alloc(16 * n, 16);
      const entries = new Uint8Array(16 * n);
      const dv = new DataView(entries.buffer);
      for (let i = 0; i < n; i++) {
        dv.setBigUint64(16 * i, 0x10_0000n, true);
        dv.setUint32(16 * i + 8, 14 << 20, true);
        dv.setUint16(16 * i + 12, i < n - 1 ? 1 : 0, true);
        dv.setUint16(16 * i + 14, i + 1, true);
      }
      await c.rig.m.quiet(async () => {
        await c.rig.m.writeBytes(table, entries);
        const head = 0;
        await tx.ring.writeDesc(head, table, 16 * n, VRING_DESC_F_INDIRECT, 0);
        await tx.ring.publish(head);
        await tx.notify();
      });
      const used = await c.rig.m.quiet(async () => {
        let got: { id: number; len: number }[] = [];
        await poll(c.rig.m, async () => (got = await tx.ring.takeUsed()).length > 0, { timeoutMs: 10_000 }).catch(() => undefined);
        return got;
      });
      await c.rig.m.note(`4 GiB chain: used ${used.map((u) => `${u.id}:${u.len}`).join(' ') || 'none'}`);
      return { problems: [], processed: used.length === 1 && used[0]!.len === 0 };
    },
  },
  {
    name: 'host input while the guest posts no receive buffer (1 MiB), then buffers',
    ids: 'T-Gc5, Firecracker #2177',
    legal: true,
    async run(c, arena) {
      const h1 = await HostSocket.connect(`${c.hostDir}/c1.sock`);
      await control(c, 1, 'after connecting to c1');
      await send(c, 1, PORT_READY, 1);
      await control(c, 2, 'PORT_READY 1');
      await send(c, 1, PORT_OPEN, 1);
      const data = new Uint8Array(1 << 20).map((_, i) => (i * 7 + (i >> 10)) & 0xff);
      const sent = h1.send(data);
      await settle(c, 50);
      const rx = c.con.port(1).rx;
      const early = await c.rig.m.quiet(() => rx.take());
      await c.rig.m.note(`before any buffer: ${early.length} used`);
      // A chardev read is at most 4 KiB and fills buffers from a fresh one: 4 KiB buffers, 64 at
      // a time, until everything came.
      const parts: Uint8Array[] = [];
      const bufs: { addr: number; len: number }[] = [];
      let total = 0;
      for (let round = 0; round < 8 && total < data.length; round++) {
        bufs.push(...(await guardedRx(c, 1, 4096, 64)));
        const used = await c.rig.m.quiet(() => rx.waitUpTo(64, { timeoutMs: 3000 }));
        for (const u of used) {
          parts.push(u.data);
          total += u.len;
        }
      }
      await sent;
      const got = Buffer.concat(parts);
      const processed = got.length === data.length && got.equals(Buffer.from(data));
      await c.rig.m.note(`then ${got.length} bytes in 4 KiB buffers, all the host sent, in order: ${processed}`);
      await h1.close();
      await control(c, 1, 'after c1 closed');
      return { problems: await guardsIntact(c, bufs, arena), processed };
    },
  },
  {
    name: 'control messages for ports out of range, unknown events, 7 bytes, DEVICE_READY 2',
    ids: 'T-Gc3a-e, virtio-villain c0032-c0034, c0040',
    legal: false,
    async run(c) {
      for (const [id, ev, v] of [[31, PORT_READY, 1], [0x7fff_ffff, PORT_OPEN, 1], [1, 0xffff, 1], [BAD_ID, 99, 1]] as const) await send(c, id, ev, v);
      const tx = c.con.controlTx!;
      await c.rig.m.quiet(async () => {
        await tx.postOut(new Uint8Array(7));
        await tx.notify();
      });
      await c.rig.m.note(`7 bytes: used ${(await c.rig.m.quiet(() => tx.waitUpTo(1, { timeoutMs: 2000 }))).map((u) => u.len).join(' ')}`);
      // Any non-zero value is success to QEMU: every port is announced again.
      await send(c, BAD_ID, DEVICE_READY, 2);
      await control(c, ALL_PORTS, 'after DEVICE_READY 2');
      return { problems: [] };
    },
  },
];

function scenario(t: PciTransport | MmioTransport, a: Attack): OracleScenario {
  const s: OracleScenario = {
    name: `[${t.label}] ${a.name}`,
    ids: a.ids,
    async run(ctx): Promise<HostileFacts> {
      const c = await open(ctx, t, t.kind === 'pci' ? 'intx' : 'mmio');
      const m = c.rig.m;
      await m.phase('setup');
      await bringUp(c, MULTIPORT | (a.features ?? 0n), [0, 1, 5], a.controlRx ?? true);
      if (!a.controlRx) {
        await send(c, BAD_ID, DEVICE_READY, 1);
        await control(c, ALL_PORTS, 'after DEVICE_READY');
      }
      const arena = ctx.alloc.alloc(4096, 4096);
      await m.memset(arena, 4096, CANARY);
      await m.phase('attack');
      const r = await a.run(c, arena);
      await settle(c);
      let needsReset = ((await c.rig.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
      await m.phase('liveness');
      let liveness: boolean | undefined;
      if (needsReset) {
        await m.note('skipped: the device asks for a reset');
      } else {
        await m.quiet(async () => {
          await c.con.controlRx!.postIn(64, 2);
          await c.con.controlRx!.notify();
        });
        await send(c, 0, PORT_READY, 1);
        const msgs: ControlMessage[] = await control(c, 2, 'PORT_READY 0');
        liveness = msgs.length === 2 && msgs[0]!.event === 4 && msgs[1]!.event === PORT_OPEN;
        needsReset = ((await c.rig.drv.status()) & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
      }
      await m.phase('recovery');
      await c.rig.drv.setStatus(0);
      if (c.rig.pciDrv?.msix) await c.rig.pciDrv.disableMsix();
      c.con.ports.clear();
      await bringUp(c, MULTIPORT, [0]);
      await send(c, BAD_ID, DEVICE_READY, 1);
      const again = await control(c, ALL_PORTS, 'after the reset, DEVICE_READY');
      const recovered = again.length === ALL_PORTS && (await c.rig.drv.status()) === (isModern(t) ? 0x0f : 0x07);
      await m.note(`recovered ${recovered} status ${hexb(await c.rig.drv.status())} ${again.map(fmtMsg).join(' ')}`);
      await m.phase('teardown');
      await teardown(c);
      const facts: HostileFacts = { legal: a.legal ?? false, needsReset, liveness, recovered, problems: r.problems };
      if (r.processed !== undefined) facts.processed = r.processed;
      return facts;
    },
  };
  if (a.expected) s.expected = a.expected;
  return s;
}

const group = (t: PciTransport | MmioTransport, spec: OracleMachineSpec): OracleGroup => ({ name: `hostile ${t.label}`, spec, scenarios: ATTACKS.map((a) => scenario(t, a)) });

export const CONSOLE_HOSTILE_GROUPS: readonly OracleGroup[] = [
  group(T.modern, { machine: 'pc', args: ['-device', 'virtio-serial-pci,ioeventfd=off,disable-legacy=on,addr=04.0', ...HOSTILE_PORTS] }),
  group(T.mmioV2, { machine: 'microvm', args: ['-global', 'virtio-mmio.force-legacy=false', '-global', 'virtio-mmio.ioeventfd=off', '-device', 'virtio-serial-device', ...HOSTILE_PORTS] }),
];
