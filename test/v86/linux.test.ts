// Real Linux (Debian's i386 kernel, its own virtio drivers) in v86, with our devices on v86's
// PCI bus through virtio-ts/v86. Two boots: one where Linux takes the modern interface (queues
// of 256 on rng and blk, 16-bit MMIO reads split by v86, byte lanes), one where it is forced onto
// the legacy I/O interface. The guest's results (test/v86/guest/init.sh) are checked against
// what the host side knows: the entropy our device produced, the disk image after the run, the
// console bytes, the input events we injected.
//
// virtio-net answers the guest's ARP and ping through a host-side peer (support/net-peer.ts).
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { MemoryChardev } from '../../src/devices/console/chardev.js';
import { VirtIOSerial } from '../../src/devices/console/virtio-serial.js';
import { VirtIOKeyboard } from '../../src/devices/input/hid.js';
import { CallbackNetBackend } from '../../src/devices/net/backends/callback.js';
import { VirtIONet } from '../../src/devices/net/virtio-net.js';
import { deterministicEntropy, VirtIORng, type EntropySource } from '../../src/devices/rng.js';
import type { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTIO_F_RING_PACKED } from '../../src/virtio/constants.js';
import { v86Host, v86VirtioPci, type V86Cpu, type V86Emulator, type V86PciHost } from '../../src/v86.js';
import { bootGuest, type BootResult } from './support/boot.js';
import { loadV86Inputs } from './support/inputs.js';
import { NetPeer } from './support/net-peer.js';
import { dataBytes, rngBytesFromDevice } from './support/results.js';

const MiB = 1 << 20;
const DISK = 16 * MiB;
const PORT = 'org.virtio-ts.test';
const HOST_LINE = 'ping-from-host';
const EV_KEY = 1;
const KEY_A = 30;

/** An entropy source that keeps everything it produced. */
class RecordingEntropy implements EntropySource {
  private readonly inner = deterministicEntropy(0x5eed);
  private readonly chunks: Uint8Array[] = [];
  fill(buf: Uint8Array): void {
    this.inner.fill(buf);
    this.chunks.push(buf.slice());
  }
  get produced(): Uint8Array {
    return Buffer.concat(this.chunks);
  }
}

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

/** The disk as the host made it: a pseudo-random pattern the guest reads back. */
function diskImage(): Uint8Array {
  const img = new Uint8Array(DISK);
  deterministicEntropy(0xd15c).fill(img);
  return img;
}

/** What `seq 1 n` prints. */
function seqText(n: number): Uint8Array {
  const lines: string[] = [];
  for (let i = 1; i <= n; i++) lines.push(String(i));
  return new TextEncoder().encode(lines.join('\n') + '\n');
}

interface Rig {
  rng: VirtIORng;
  entropy: RecordingEntropy;
  blk: VirtIOBlock;
  disk: MemoryBlockBackend;
  original: Uint8Array;
  serial: VirtIOSerial;
  hvc: MemoryChardev;
  port: MemoryChardev;
  keyboard: VirtIOKeyboard | undefined;
  net: VirtIONet;
  peer: NetPeer;
  /** Frames the guest sent, as the wire saw them. */
  framesFromGuest: number;
  memory: GuestMemory | undefined;
  deviceWrites: number;
  /** Our line changes made inside a guest access (a notify completing at once, an ISR read). */
  irqInAccess: number;
  /** Of those, the ones during which v86 acknowledged an interrupt (its PICs' ISR changed). */
  ackInAccess: string[];
  warnings: string[];
}

const GUEST_MAC = '52:54:00:12:34:56';

/** virtio-net on a wire whose other end is `peer` (ARP and ICMP echo for 192.0.2.2). */
function netOnPeer(memory: GuestMemory, rig: { framesFromGuest: number }, packed: boolean): { net: VirtIONet; peer: NetPeer } {
  const peer = new NetPeer();
  const wire: CallbackNetBackend = new CallbackNetBackend({
    onFrame: (frame) => {
      rig.framesFromGuest++;
      const replies = peer.receive(frame.slice());
      // Answered after the guest's transmit returned, as a wire would.
      if (replies.length > 0) queueMicrotask(() => replies.forEach((r) => wire.send(r)));
    },
  });
  const mac = Uint8Array.from(GUEST_MAC.split(':'), (x) => parseInt(x, 16));
  return { net: new VirtIONet({ memory, netdev: wire, mac, packed }), peer };
}

/** Rounds of whole-disk O_DIRECT reads in the blk test: a long stream of completions. */
const SUSTAINED_ROUNDS = 40;

/** v86's PIC pair, as its wasm keeps it: in-service registers of master and slave. */
function picInService(cpu: V86Cpu & { get_pic_addr_master(): number; get_pic_addr_slave(): number }): number {
  const b = new Uint8Array(cpu.wasm_memory.buffer);
  return b[cpu.get_pic_addr_master() + 2]! | (b[cpu.get_pic_addr_slave() + 2]! << 8);
}

/**
 * An interrupt must never be acknowledged while the guest is inside an instruction that called
 * our handler: v86 would deliver it there and its JIT would clobber the frame (the guest then
 * never sends EOI and stops taking disk interrupts). Every line change v86 sees is checked.
 */
function watchAcknowledgements(host: V86PciHost, rig: { irqInAccess: number; ackInAccess: string[] }): void {
  const cpu = host.cpu as V86Cpu & { get_pic_addr_master(): number; get_pic_addr_slave(): number };
  for (const name of ['device_raise_irq', 'device_lower_irq'] as const) {
    const orig = cpu[name];
    cpu[name] = (irq: number): void => {
      if (!host.inGuestAccess) return orig.call(cpu, irq);
      rig.irqInAccess++;
      const before = picInService(cpu);
      orig.call(cpu, irq);
      const after = picInService(cpu);
      if (after !== before && rig.ackInAccess.length < 10) rig.ackInAccess.push(`${name}(${irq}): ISR 0x${before.toString(16)} -> 0x${after.toString(16)}`);
    };
  }
}

/** Boot with our devices; `legacy` forces Linux's virtio_pci onto the legacy interface. */
async function bootWithDevices(legacy: boolean): Promise<{ run: BootResult; rig: Rig }> {
  const original = diskImage();
  const entropy = new RecordingEntropy();
  const rig: Partial<Rig> & { warnings: string[]; deviceWrites: number; framesFromGuest: number; irqInAccess: number; ackInAccess: string[] } = {
    warnings: [],
    deviceWrites: 0,
    framesFromGuest: 0,
    irqInAccess: 0,
    ackInAccess: [],
    entropy,
    original,
  };
  const tests = ['rng', 'blk', 'console', 'net'];
  if (!legacy) tests.push('input');
  const run = await bootGuest({
    tests,
    cmdline: ['vt.console.hvc0echo=1', `vt.blk.rounds=${SUSTAINED_ROUNDS}`, ...(legacy ? ['virtio_pci.force_legacy=1'] : [])],
    timeoutMs: 240_000,
    onLoaded: (emulator) => {
      const host = v86Host(emulator as unknown as V86Emulator, { onWarning: (w) => rig.warnings.push(w) });
      const memory = host.memory;
      rig.memory = memory;
      watchAcknowledgements(host, rig);
      const jit = memory.onWrite!;
      memory.onWrite = (a, l) => {
        rig.deviceWrites++;
        jit(a, l);
      };
      rig.rng = new VirtIORng({ memory, entropy, queueSize: 256 });
      rig.disk = new MemoryBlockBackend(original.slice());
      // Modern: a queue of 1024 (the most virtio-pci allows), legacy: 256. On the modern boot blk
      // and net offer packed rings, which Linux takes (rng, console and input stay split).
      rig.blk = new VirtIOBlock({ memory, backend: rig.disk, queueSize: legacy ? 256 : 1024, packed: !legacy });
      rig.serial = new VirtIOSerial({ memory, maxPorts: 4 });
      rig.hvc = new MemoryChardev('hvc0');
      rig.port = new MemoryChardev('vt-port');
      rig.serial.addPort({ console: true, chardev: rig.hvc });
      rig.serial.addPort({ name: PORT, chardev: rig.port });
      // Modern boot: rng transitional (Linux prefers modern), blk modern-only, console
      // transitional, keyboard modern-only by type. Legacy boot: all transitional.
      host.attach(v86VirtioPci(rig.rng), { slot: 13 });
      host.attach(v86VirtioPci(rig.blk, { disableLegacy: !legacy }), { slot: 14 });
      host.attach(v86VirtioPci(rig.serial), { slot: 15 });
      if (!legacy) {
        rig.keyboard = new VirtIOKeyboard({ memory });
        host.attach(v86VirtioPci(rig.keyboard), { slot: 16 });
      }
      const { net, peer } = netOnPeer(memory, rig, !legacy);
      rig.net = net;
      rig.peer = peer;
      host.attach(v86VirtioPci(net), { slot: 17 });
    },
    onLine: (line) => {
      if (line.includes(`VT-READY console ${PORT}`)) rig.port!.send(`${HOST_LINE}\n`);
      if (line.includes('VT-READY console hvc0')) rig.hvc!.send(`${HOST_LINE}-hvc0\n`);
      if (line.includes('VT-READY input') && rig.keyboard) {
        const k = rig.keyboard;
        k.send(EV_KEY, KEY_A, 1);
        k.send(0, 0, 0);
        k.send(EV_KEY, KEY_A, 0);
        k.send(0, 0, 0);
      }
    },
  });
  return { run, rig: rig as Rig };
}

function checkCommon(run: BootResult, rig: Rig, iface: 'modern' | 'legacy'): void {
  const { results, info } = run.report;
  expect(results.get('boot')?.ok).toBe(true);
  // The kernel is the one scripts/v86-inputs.mjs fetched.
  expect(results.get('boot')?.words).toEqual([loadV86Inputs().kernelRelease]);
  expect(results.get('modules')?.ok, results.get('modules')?.line).toBe(true);
  expect(rig.warnings).toEqual([]);

  // Every device bound to its Linux driver, through the interface we meant.
  const virtio = info.filter((i) => i.topic === 'virtio');
  const byTest = new Map(virtio.map((i) => [i.fields.test, i.fields]));
  for (const t of ['rng', 'blk', 'console', 'net']) {
    expect(byTest.get(t)?.iface, `${t}: ${JSON.stringify(byTest.get(t))}`).toBe(iface);
    expect(byTest.get(t)?.driver).toMatch(/^virtio_(rng|blk|console|net)$/);
  }

  // rng: 1024 bytes, every one of them from our device's output, in its order.
  const rngResult = results.get('rng');
  expect(rngResult?.ok, rngResult?.line).toBe(true);
  expect(rngResult?.fields.bytes).toBe('1024');
  const guestRng = dataBytes(run.report, 'rng');
  expect(guestRng.length).toBe(1024);
  expect(md5(guestRng)).toBe(rngResult?.fields.md5);
  expect(rngBytesFromDevice(guestRng, rig.entropy.produced)).toMatchObject({ ok: true });

  // blk: what the guest read is the host's image; what it wrote is in the image now.
  const blk = results.get('blk');
  expect(blk?.ok, run.report.all.filter((r) => r.name.startsWith('blk')).map((r) => r.line).join('\n')).toBe(true);
  expect(results.get('blk.read')?.fields.md5).toBe(md5(rig.original.subarray(0, MiB)));
  const mibs = [1, 2, 3, 4].map((i) => md5(rig.original.subarray(i * MiB, (i + 1) * MiB))).join(',');
  expect(results.get('blk.parallel')?.fields.md5).toBe(mibs);
  const image = new Uint8Array(DISK);
  rig.disk.read(0, image);
  const w = results.get('blk.write')!;
  const seq = seqText(Number(w.fields.seq));
  const off = Number(w.fields.off);
  expect(off).toBe(8192 * 1024);
  expect(image.subarray(off, off + seq.length)).toEqual(seq);
  expect(w.fields.md5).toBe(md5(seq));
  // The ext2 the guest made over the first 4 MiB, mounted, written, remounted read-only and
  // compared (busybox has no fsck): superblock magic and label on the host's disk.
  expect(results.get('blk.fs')?.ok, results.get('blk.fs')?.line).toBe(true);
  const sb = new DataView(image.buffer, 1024, 1024);
  expect(sb.getUint16(56, true)).toBe(0xef53);
  expect(new TextDecoder().decode(image.subarray(1024 + 120, 1024 + 124))).toBe('vtfs');
  // A long run of reads completed (no lost interrupt), and never was an interrupt taken in the
  // middle of a guest access (the notify that completes a request at once raises the line).
  const sus = results.get('blk.sustained');
  expect(sus?.ok, sus?.line).toBe(true);
  expect(sus?.fields.rounds).toBe(String(SUSTAINED_ROUNDS));
  expect(sus?.fields.tailmd5).toBe(md5(rig.original.subarray(DISK - 4 * MiB)));
  expect(rig.irqInAccess).toBeGreaterThan(0);
  expect(rig.ackInAccess).toEqual([]);
  // Past everything the guest wrote, the disk is untouched.
  expect(md5(image.subarray(12 * MiB))).toBe(md5(rig.original.subarray(12 * MiB)));

  // console: hvc0 output reached the host; the named port echoed the host's line.
  const con = results.get('console');
  expect(con?.ok, con?.line).toBe(true);
  expect(con?.fields.echoed).toBe(HOST_LINE);
  expect(con?.fields.hvc0echo).toBe(`${HOST_LINE}-hvc0`);
  const hvcOut = rig.hvc.receiveText();
  expect(hvcOut).toContain(`VT-HVC0 hello from ${results.get('boot')!.words[0]}`);
  expect(hvcOut).toContain(`VT-ECHO ${HOST_LINE}-hvc0`);
  const portOut = rig.port.receiveText();
  expect(portOut).toContain(`VT-PORT-READY ${PORT}\n`);
  expect(portOut).toContain(`VT-ECHO ${HOST_LINE}\n`);

  // net: the guest resolved the peer and got its pings answered; the peer saw our NIC's MAC.
  const net = results.get('net');
  expect(net?.ok, net?.line).toBe(true);
  expect(net?.fields.mac).toBe(GUEST_MAC);
  expect(net?.fields.arp).toBe('ok');
  const received = Number(net?.fields.received);
  expect(received).toBeGreaterThan(0);
  expect(rig.peer.guestMac).toBe(GUEST_MAC);
  expect(rig.peer.counts.echoReplies).toBeGreaterThanOrEqual(received);
  expect(rig.peer.counts.arpReplies).toBeGreaterThan(0);
  expect(Number(net?.fields.tx_packets)).toBeLessThanOrEqual(rig.framesFromGuest);

  // The JIT heard about device writes, and RAM grew under the devices at least once.
  expect(rig.deviceWrites).toBeGreaterThan(0);
  expect(rig.memory!.epoch).toBeGreaterThan(0);
  console.log(`v86 ${iface} boot: ${JSON.stringify(run.timings)}; RAM moved ${rig.memory!.epoch} times; ${rig.deviceWrites} device writes reported`);
}

describe('Linux in v86 with our devices', () => {
  it('modern interface: rng and blk with queues of 256 and 1024, console (hvc0 + a named port), net, keyboard; blk and net on packed rings', async () => {
    const { run, rig } = await bootWithDevices(false);
    checkCommon(run, rig, 'modern');
    // Queues of 256 and 1024 were offered and taken, read through v86's split 16-bit MMIO reads.
    expect(rig.rng.vq[0]!.num).toBe(256);
    expect(rig.blk.vq[0]!.num).toBe(1024);
    // Linux's virtio_ring took the packed rings blk and net offered, and they carried everything
    // checked above (the sustained reads, the ext2, the pings); rng stayed split.
    expect([rig.blk.hasFeature(VIRTIO_F_RING_PACKED), rig.blk.vq[0]!.packed]).toEqual([true, true]);
    expect(rig.net.vq.map((q) => q.packed)).toEqual(rig.net.vq.map(() => true));
    expect([rig.rng.hasFeature(VIRTIO_F_RING_PACKED), rig.rng.vq[0]!.packed]).toEqual([false, false]);
    // Everything the guest posted came back: no ring slot is left in flight.
    expect(rig.blk.vq[0]!.inuse).toBe(0);
    const byTest = new Map(run.report.info.filter((i) => i.topic === 'virtio').map((i) => [i.fields.test, i.fields]));
    expect(byTest.get('input')?.iface).toBe('modern');
    expect(byTest.get('blk')?.id).toBe('0x1af4:0x1042'); // modern-only virtio-blk
    // The guest says so too (its negotiated features in sysfs): packed where offered, else split.
    expect(['rng', 'blk', 'console', 'net', 'input'].map((t) => byTest.get(t)?.ring)).toEqual(['split', 'packed', 'split', 'packed', 'split']);
    const input = run.report.results.get('input');
    expect(input?.ok, input?.line).toBe(true);
    expect(input?.fields.events).toBe(`${EV_KEY}:${KEY_A}:1,0:0:0,${EV_KEY}:${KEY_A}:0,0:0:0`);
  }, 300_000);

  it('legacy interface (virtio_pci.force_legacy=1): rng, blk, console, net through the I/O BAR', async () => {
    const { run, rig } = await bootWithDevices(true);
    checkCommon(run, rig, 'legacy');
    const rings = run.report.info.filter((i) => i.topic === 'virtio').map((i) => i.fields.ring);
    expect(rings.length).toBeGreaterThan(0);
    expect(rings.every((r) => r === 'split')).toBe(true);
    expect(rig.blk.vq[0]!.num).toBe(256);
  }, 300_000);
});
