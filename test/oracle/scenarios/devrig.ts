// Guest-side helpers for oracle scenarios of devices with several queues (virtio-input,
// virtio-balloon): bring-up of any set of queues in one interrupt mode, buffers posted and read
// back byte for byte, QMP commands and events recorded in the transcript, and the device's
// configuration space dumped.
//
// Scenarios never assert: they record. The oracle compares the transcripts of QEMU and ours.
import type { DriverBuffer, UsedEntry, VringDriver } from '../../../src/driver/vring.js';
import { VIRTIO_CONFIG_S_NEEDS_RESET } from '../../../src/virtio/constants.js';
import type { RecordingMachine } from '../../../src/oracle/recorder.js';
import { hexb, IrqObserver, nameRing, openRig, type IrqMode, type Rig, type Transport } from './rig.js';
import { poll } from '../../../src/driver/machine.js';
import { GuestPciBus, PC_PCI_WINDOWS } from '../../../src/driver/pci.js';
import { VirtioPciDriver } from '../../../src/driver/virtio-pci-driver.js';
import type { OracleContext } from '../../../src/oracle/scenario.js';

export const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/**
 * Open a device on any transport. On PCI each slot gets its own BAR windows (1 MiB of memory,
 * 256 ports), so that several devices of one machine can be open at once without overlapping BARs,
 * at the same addresses in every scenario.
 */
export async function openDevice(ctx: OracleContext, t: Transport): Promise<Rig> {
  if (t.kind !== 'pci') return openRig(ctx, t);
  const { m, alloc } = ctx;
  const bus = new GuestPciBus(m, { ...PC_PCI_WINDOWS, pioStart: 0xc000 + t.slot * 0x100, mmioStart: 0xe000_0000 + t.slot * 0x10_0000 });
  const pci = await bus.device(t.slot);
  for (const b of await pci.listBars()) await pci.mapBar(b.index);
  const drv = await VirtioPciDriver.open(pci, { mode: t.mode, alloc });
  return { t, m, alloc, drv, pciDrv: drv, pci, bus };
}

export interface DeviceBringUp {
  features?: bigint;
  /** Queues to set up (index and size; default size the device's, or 64 on virtio-mmio). */
  queues: readonly { index: number; num?: number }[];
  irq?: IrqMode;
  noDriverOk?: boolean;
}

/** Queue size for virtio-mmio, which offers 1024 for every queue: the PCI default where given. */
export const mmioNum = (t: Transport, pciDefault: number): number | undefined => (t.kind === 'mmio' ? pciDefault : undefined);

/**
 * Reset, negotiate, set up each queue, set up the interrupt mode (with MSI-X, the config vector
 * on entry 0 and every queue on entry 1, one message slot) and, unless told, DRIVER_OK. The
 * status is noted after each step. Returns the rings by queue index.
 */
export async function bringUpDevice(rig: Rig, o: DeviceBringUp): Promise<Map<number, VringDriver>> {
  const { drv, m } = rig;
  if (o.irq === 'msix' || o.irq === 'msix-masked') {
    await rig.pciDrv!.enableMsix();
    const msix = rig.pciDrv!.msix!;
    m.region('msix.table', 'mem', msix.tableBar.addr + msix.tableOffset, 16 * msix.tableSize);
    m.region('msix.pba', 'mem', msix.pbaBar.addr + msix.pbaOffset, 8);
  }
  await drv.init(o.features ?? 0n);
  await m.note(`status ${hexb(await drv.status())} features ${drv.features.toString(16)}`);
  const rings = new Map<number, VringDriver>();
  for (const q of o.queues) {
    const ring = await drv.setupQueue(q.index, q.num !== undefined ? { num: q.num } : {});
    nameRing(m, ring, q.index);
    rings.set(q.index, ring);
  }
  if (o.irq) {
    rig.irq = await IrqObserver.attach(rig, o.irq);
    if (o.irq === 'msix' || o.irq === 'msix-masked') {
      for (const q of o.queues) if (q.index !== 0) await rig.pciDrv!.msixSetupQueue(q.index, 1, rig.irq.qAddr);
    }
  }
  if (!o.noDriverOk) await drv.driverOk();
  await m.note(`status ${hexb(await drv.status())}`);
  return rings;
}

/** A QMP command, its reply or error noted in the transcript (after every access issued before it). */
export async function qmpNote(m: RecordingMachine, command: string, args?: Record<string, unknown>): Promise<unknown> {
  await m.sync();
  const qmp = m.qmp;
  if (!qmp) throw new Error(`${m.name}: no QMP`);
  const what = `qmp ${command}${args ? ` ${JSON.stringify(args)}` : ''}`;
  // The interrupts a command causes reach a QEMU harness on the qtest socket, racing the reply on
  // the QMP one: wait for them before noting the reply, so that they always come first.
  try {
    const r = await qmp.execute(command, args);
    await m.idle();
    await m.note(`${what} -> ${JSON.stringify(r)}`);
    return r;
  } catch (e) {
    const err = e as { errorClass?: string; desc?: string; message?: string };
    await m.idle();
    await m.note(`${what} -> error ${err.errorClass ?? '?'}: ${err.desc ?? err.message ?? String(e)}`);
    return undefined;
  }
}

/** QMP events received from `mark` on (an index into the machine's event list). */
export function qmpEventMark(m: RecordingMachine): number {
  return m.qmp?.events?.length ?? 0;
}

/** Note the QMP events since `mark` (name and data; timestamps differ by nature). */
export async function noteEvents(m: RecordingMachine, mark: number, what = 'events'): Promise<number> {
  await m.sync();
  const list = m.qmp?.events ?? [];
  const got = list.slice(mark).map((e) => (e.data === undefined ? e.event : `${e.event} ${JSON.stringify(e.data)}`));
  await m.note(`${what}: ${got.length === 0 ? 'none' : got.join(', ')}`);
  return list.length;
}

/** Wait (bounded, unrecorded) until the QMP events since `mark` include `name`. */
export async function waitEvent(m: RecordingMachine, mark: number, name: string, timeoutMs = 3000): Promise<void> {
  await m.quiet(async () => {
    try {
      await poll(m, () => (m.qmp?.events ?? []).slice(mark).some((e) => e.event === name), { timeoutMs, what: `QMP event ${name}` });
    } catch {
      /* noted by the caller */
    }
  });
}

/** Canary of device-writable buffers and of the bytes after them. */
export const CANARY = 0xa5;
export const GUARD = 8;

export interface Posted {
  head: number;
  bufs: { addr: number; len: number; write: boolean }[];
}

/**
 * Post one chain of buffers (`lens`, all device-writable unless `write` is false), filled with the
 * canary (or `fill` for readable ones) and followed by a guard; published unless told not to.
 */
export async function postChain(rig: Rig, ring: VringDriver, lens: readonly number[], opts: { write?: boolean; fill?: Uint8Array[]; publish?: boolean } = {}): Promise<Posted> {
  const write = opts.write ?? true;
  const bufs: Posted['bufs'] = [];
  for (let i = 0; i < lens.length; i++) {
    const len = lens[i]!;
    const addr = rig.alloc.alloc(Math.max(1, len) + GUARD, 16);
    await rig.m.quiet(async () => {
      await rig.m.memset(addr, len + GUARD, CANARY);
      const f = opts.fill?.[i];
      if (f) await rig.m.writeBytes(addr, f);
    });
    bufs.push({ addr, len, write });
  }
  const dbs: DriverBuffer[] = bufs.map((b) => ({ addr: b.addr, len: b.len, write: b.write }));
  const head = await ring.add(dbs, { publish: opts.publish ?? true });
  return { head, bufs };
}

/** Wait (bounded, unrecorded) for `count` used entries, and note them. */
/**
 * Invariant I4 over an arena the test filled with `canary`: how many of its bytes changed
 * outside the `[addr, len]` buffers the device was allowed to write.
 */
export async function arenaChangesOutside(m: RecordingMachine, base: number, size: number, canary: number, writable: readonly (readonly [number, number])[]): Promise<number> {
  const arena = await m.quiet(() => m.readBytes(base, size));
  let changed = 0;
  for (let i = 0; i < size; i++) {
    if (arena[i] === canary) continue;
    const a = base + i;
    if (!writable.some(([b, l]) => a >= b && a < b + l)) changed++;
  }
  return changed;
}

/** The device-specific steps of a hostile-guest scenario (see `runHostileLifecycle`). */
export interface HostileSteps<S> {
  /** Bring the device up for use (again after the reset: ring addresses as the first time). */
  bring(): Promise<S>;
  /** The attack; pushes the buffers the device may write to `writable`, findings to `problems`. */
  attack(s: S, writable: [number, number][], problems: string[]): Promise<void>;
  /** A well-formed request or exchange; true when it completed as it should. */
  traffic(s: S): Promise<boolean>;
  /** Guest memory filled with `canary` before the attack, checked for I4 after it. */
  arena: { base: number; size: number; canary: number };
}

/**
 * The phases every hostile-guest scenario goes through, named alike on every side so that
 * transcripts line up: setup, attack (then the status, interrupts and I4 over the arena),
 * liveness (skipped when the device asks for a reset), recovery after a reset.
 */
export async function runHostileLifecycle<S>(rig: Rig, steps: HostileSteps<S>): Promise<{ needsReset: boolean; liveness: boolean | undefined; recovered: boolean; problems: string[] }> {
  const problems: string[] = [];
  const m = rig.m;
  const { base, size, canary } = steps.arena;
  await m.phase('setup');
  const first = await steps.bring();
  await m.quiet(() => m.memset(base, size, canary));
  const writable: [number, number][] = [];
  await m.phase('attack');
  await steps.attack(first, writable, problems);
  await m.idle();
  const status = await rig.drv.status();
  const needsReset = (status & VIRTIO_CONFIG_S_NEEDS_RESET) !== 0;
  await m.note(`status ${status.toString(16)}`);
  await rig.irq!.check();
  // I4: the arena is untouched outside the buffers the attack let the device write.
  const changed = await arenaChangesOutside(m, base, size, canary, writable);
  if (changed > 0) problems.push(`I4: ${changed} arena bytes changed outside writable buffers`);
  let liveness: boolean | undefined;
  // The section exists on every side, so that sections line up when only one side went on.
  await m.phase('liveness');
  if (!needsReset) {
    liveness = await steps.traffic(first);
    await rig.irq!.check();
  } else {
    await m.note('skipped: the device asks for a reset');
  }
  await m.phase('recovery');
  await rig.drv.reset();
  // The same ring addresses whether or not liveness allocated anything.
  rig.alloc.reset();
  const again = await steps.bring();
  const recovered = await steps.traffic(again);
  return { needsReset, liveness, recovered, problems };
}

export async function takeUsed(rig: Rig, ring: VringDriver, count: number, label = 'used', timeoutMs = 1500): Promise<UsedEntry[]> {
  const got: UsedEntry[] = [];
  await rig.m.quiet(async () => {
    try {
      await poll(
        rig.m,
        async () => {
          got.push(...(await ring.takeUsed()));
          return got.length >= count;
        },
        { timeoutMs, what: `${count} used entries` },
      );
    } catch {
      /* noted below */
    }
    // Anything beyond what was expected shows too.
    got.push(...(await ring.takeUsed()));
  });
  await rig.m.note(`${label} ${got.length === 0 ? 'none' : got.map((e) => `${e.id}:${e.len}`).join(' ')}${got.length < count ? ` (waited for ${count})` : ''}`);
  return got;
}

/** Note what a used chain's writable buffers hold: the bytes and whether the guard stayed intact. */
export async function noteWritten(rig: Rig, p: Posted, label = `data of ${p.head}`): Promise<void> {
  const parts: string[] = [];
  for (const b of p.bufs) {
    const bytes = await rig.m.quiet(() => rig.m.readBytes(b.addr, b.len + GUARD));
    const guard = bytes.subarray(b.len).every((x) => x === CANARY);
    parts.push(`${hex(bytes.subarray(0, b.len))}${guard ? '' : ' GUARD OVERWRITTEN'}`);
  }
  await rig.m.note(`${label}: ${parts.join(' | ')}`);
}

/** An evdev event's 8 bytes as "type:code:value" (hex), for notes. */
export function evdevText(b: Uint8Array): string {
  if (b.length < 8) return `short(${hex(b)})`;
  const dv = new DataView(b.buffer, b.byteOffset, 8);
  return `${dv.getUint16(0, true).toString(16)}:${dv.getUint16(2, true).toString(16)}:${dv.getUint32(4, true).toString(16)}`;
}

/** Read the device configuration space byte by byte, `len` bytes (a few past its end show what QEMU returns there). */
export async function configBytes(rig: Rig, len: number): Promise<Uint8Array> {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = await rig.drv.configRead(i, 1);
  return out;
}

/** Read the configuration space dword by dword. */
export async function configDwords(rig: Rig, len: number): Promise<string> {
  const parts: string[] = [];
  for (let i = 0; i + 4 <= len; i += 4) parts.push((await rig.drv.configRead(i, 4)).toString(16).padStart(8, '0'));
  return parts.join(' ');
}

/** The configuration generation (modern interfaces only). */
export async function configGeneration(rig: Rig): Promise<number | undefined> {
  if (rig.pciDrv && rig.t.kind === 'pci' && rig.t.mode === 'modern') return rig.pciDrv.configGeneration();
  if (rig.mmioDrv && rig.t.kind === 'mmio' && rig.t.version === 2) return rig.m.readl(rig.mmioDrv.base + 0xfc);
  return undefined;
}
