// `virtio-ts demo`: the project at work in a few seconds. A reference machine (microvm, virtio-mmio
// version 2 unless --legacy) with virtio-rng, virtio-blk, virtio-console, virtio-net, a
// virtio-keyboard and a virtio-balloon is driven by a guest-side script (the driver library, in-process); the script writes and reads data, the
// machine is migrated in the middle of disk I/O to a second machine through a QEMU 7.2 stream,
// the script carries on there, every byte is verified, and the ring operations are printed.
import { BlkDriver, BLK_S_OK, BLK_T_OUT } from '../driver/blk.js';
import { ConsoleDriver } from '../driver/console.js';
import { GuestAllocator } from '../driver/alloc.js';
import { InProcessMachine } from '../driver/inproc.js';
import { NetDriver } from '../driver/net.js';
import { RngDriver } from '../driver/rng.js';
import { VirtioMmioDriver } from '../driver/virtio-mmio-driver.js';
import { MemoryBlockBackend } from '../devices/blk/backends/memory.js';
import type { BlockBackend, BlockResult } from '../devices/blk/backend.js';
import { MemoryChardev } from '../devices/console/chardev.js';
import { deterministicEntropy } from '../devices/rng.js';
import { CallbackNetBackend } from '../devices/net/backends/callback.js';
import { BrowserInput } from '../devices/input/browser.js';
import type { VirtIOBalloon } from '../devices/balloon/virtio-balloon.js';
import type { VirtIOKeyboard } from '../devices/input/hid.js';
import { parseQemuCommandLine } from '../machine/cmdline.js';
import type { MicrovmMachine } from '../machine/microvm.js';
import { buildMachine } from '../machine/qemu-machine.js';
import { loadVm, parseSavevm, saveVm } from '../migration/savevm.js';
import { SwappableMachine } from '../oracle/migration.js';
import { formatTraceEvent, type TraceEvent } from '../trace/trace.js';
import { VIRTIO_CONSOLE_DEVICE_READY, VIRTIO_CONSOLE_F_MULTIPORT, VIRTIO_CONSOLE_PORT_OPEN, VIRTIO_CONSOLE_PORT_READY } from '../devices/console/constants.js';

const MMIO_BASE = 0xfeb0_0000;
const DISK_SIZE = 1 << 20;
const SECTOR = 512;
/** Ring events worth showing; config reads and register traffic would drown them. */
const SHOWN = new Set<TraceEvent['type']>([
  'virtio_set_status', 'virtio_set_features', 'virtqueue_set_rings', 'virtqueue_pop', 'virtqueue_fill', 'virtqueue_flush',
  'virtio_notify', 'virtio_notify_suppressed', 'virtio_queue_notify', 'virtio_queue_notify_deferred', 'virtio_vmstate_change',
  'virtio_error', 'virtio_serial_send_control_event', 'virtio_serial_handle_control_message', 'virtio_console_flush_buf',
  'virtio_console_chr_read',
]);

const GUEST_MAC = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HOST_MAC = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const GUEST_IP = [10, 0, 2, 15];
const HOST_IP = [10, 0, 2, 2];

/** An ARP frame (RFC 826 over Ethernet): op 1 request, 2 reply. */
function arpFrame(op: 1 | 2, srcMac: number[], srcIp: number[], dstMac: number[], dstIp: number[]): Uint8Array {
  const f = new Uint8Array(42);
  f.set(op === 1 ? [0xff, 0xff, 0xff, 0xff, 0xff, 0xff] : dstMac, 0);
  f.set(srcMac, 6);
  f.set([0x08, 0x06, 0x00, 0x01, 0x08, 0x00, 6, 4, 0, op], 12);
  f.set(srcMac, 22);
  f.set(srcIp, 28);
  f.set(op === 1 ? [0, 0, 0, 0, 0, 0] : dstMac, 32);
  f.set(dstIp, 38);
  return f;
}

/**
 * The host end of the NIC's `-netdev`: answers ARP requests for HOST_IP (as a slirp gateway
 * would) and keeps every frame the guest sent, for the checks.
 */
function hostNetwork(): { backend: CallbackNetBackend; seen: Uint8Array[] } {
  const seen: Uint8Array[] = [];
  const backend: CallbackNetBackend = new CallbackNetBackend({
    name: 'net0',
    onFrame: (frame) => {
      const f = frame.slice();
      seen.push(f);
      const isArpRequest = f.length >= 42 && f[12] === 0x08 && f[13] === 0x06 && f[21] === 1;
      if (isArpRequest && HOST_IP.every((b, i) => f[38 + i] === b)) {
        // Answer after the guest's transmit returned, as a wire would.
        queueMicrotask(() => backend.send(arpFrame(2, HOST_MAC, HOST_IP, Array.from(f.subarray(22, 28)), Array.from(f.subarray(28, 32)))));
      }
    },
  });
  return { backend, seen };
}

const hex = (b: ArrayLike<number>) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');

/** "ARP reply: 10.0.2.2 is at 52:55:0a:00:02:02", or why the frame is not one. */
function describeArpReply(f: Uint8Array): string {
  if (f.length < 42 || f[12] !== 0x08 || f[13] !== 0x06 || f[21] !== 2) return `not an ARP reply (${f.length} bytes)`;
  return `ARP reply: ${Array.from(f.subarray(28, 32)).join('.')} is at ${hex(f.subarray(22, 28))}`;
}

/**
 * Disk storage both machines share (as two QEMUs on shared storage): the source's backend holds
 * writes in flight while `hold` is set, so a migration finds them unfinished; the destination's
 * backend is a plain one over the same bytes.
 */
class HoldingDisk implements BlockBackend {
  readonly synchronous = false;
  hold = false;
  readonly held: (() => void)[] = [];
  constructor(readonly inner: MemoryBlockBackend) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return false;
  }
  private later(run: () => BlockResult): BlockResult {
    return new Promise<void>((resolve) => {
      const go = () => {
        void run();
        resolve();
      };
      if (this.hold) this.held.push(go);
      else queueMicrotask(go);
    });
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.later(() => this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): BlockResult {
    const copy = src.slice();
    return this.later(() => this.inner.write(offset, copy));
  }
  flush(): BlockResult {
    return this.later(() => this.inner.flush());
  }
  discard(offset: number, length: number): BlockResult {
    return this.later(() => this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): BlockResult {
    return this.later(() => this.inner.writeZeroes(offset, length, mayUnmap));
  }
}

/** A recognisable 512-byte sector: its number and a pass marker. */
function sectorPattern(sector: number, pass: number): Uint8Array {
  const b = new Uint8Array(SECTOR);
  for (let i = 0; i < SECTOR; i++) b[i] = (sector * 7 + i * 13 + pass * 101) & 0xff;
  return b;
}

export interface DemoOptions {
  legacy?: boolean;
  /** Print every ring operation (default true). */
  trace?: boolean;
}

/** Run the demo; returns the number of problems found (0 when every byte checked out). */
export async function runDemo(out: (line: string) => void = (l) => console.log(l), opts: DemoOptions = {}): Promise<number> {
  const legacy = opts.legacy ?? false;
  const showTrace = opts.trace ?? true;
  const t0 = performance.now();
  let events = 0;
  let phase = 'source';
  const tracer = (e: TraceEvent) => {
    if (!SHOWN.has(e.type)) return;
    events++;
    if (showTrace) out(`    ${phase.padEnd(11)} | ${formatTraceEvent(e)}`);
  };
  const say = (s: string) => out(`  guest  > ${s}`);
  const host = (s: string) => out(`  host   > ${s}`);
  const title = (s: string) => {
    out('');
    out(`== ${s}`);
  };

  const argv = [
    '-machine', 'microvm', '-m', '16M', '-nodefaults',
    ...(legacy ? [] : ['-global', 'virtio-mmio.force-legacy=false']),
    '-device', 'virtio-rng-device',
    '-drive', 'if=none,id=disk0,file=disk.img,format=raw', '-device', 'virtio-blk-device,drive=disk0',
    '-chardev', 'stdio,id=con0', '-device', 'virtio-serial-device', '-device', 'virtconsole,chardev=con0',
    '-device', 'virtio-keyboard-device', '-device', 'virtio-balloon-device',
    '-netdev', 'stream,id=net0,server=off,addr.type=unix,addr.path=host.sock', '-device', `virtio-net-device,netdev=net0,mac=${hex(GUEST_MAC)}`,
  ];
  const storage = new MemoryBlockBackend(DISK_SIZE);
  const sourceDisk = new HoldingDisk(storage);
  const build = (disk: BlockBackend, chardev: MemoryChardev, net: CallbackNetBackend, seed: number) => {
    const cl = parseQemuCommandLine(argv);
    // The host side of each -drive, -chardev and -netdev is the embedder's: a shared disk, a
    // memory pipe and a callback network.
    return buildMachine(cl, { blockFiles: new Map([['disk.img', disk]]), chardevs: new Map([['con0', chardev]]), netdevs: new Map([['net0', net]]), entropy: deterministicEntropy(seed), tracer });
  };
  const srcConsole = new MemoryChardev('con0');
  const srcNet = hostNetwork();
  const src = build(sourceDisk, srcConsole, srcNet.backend, 42);
  out(`virtio-ts demo: microvm with virtio-rng, virtio-blk (1 MiB disk), virtio-console, virtio-keyboard, virtio-balloon and virtio-net on virtio-mmio version ${legacy ? '1 (legacy)' : '2'}`);
  out(`  command line: ${argv.join(' ')}`);

  // The guest side sees one machine; a migration swaps what is underneath.
  const m = new SwappableMachine(new InProcessMachine(src.machine, { name: 'source' }));
  const alloc = new GuestAllocator(0x10_0000, 0xf0_0000);
  // Devices fill the transports from the last one down: rng at 23, blk at 22, serial at 21,
  // keyboard at 20, balloon at 19, net at 18.
  const rngT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 23, { alloc });
  const blkT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 22, { alloc });
  const conT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 21, { alloc });
  const kbdT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 20, { alloc });
  const balT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 19, { alloc });
  const netT = new VirtioMmioDriver(m, MMIO_BASE + 0x200 * 18, { alloc });
  let problems = 0;
  const check = (ok: boolean, what: string) => {
    if (!ok) problems++;
    out(`  ${ok ? 'ok    ' : 'FAILED'} ${what}`);
  };

  title('initialise the six devices');
  for (const t of [rngT, blkT, conT, kbdT, balT, netT]) await t.probe();
  await rngT.init(0n);
  const rngRing = await rngT.setupQueue(0, { num: 8 });
  await rngT.driverOk();
  await blkT.init(0n);
  const blkRing = await blkT.setupQueue(0, { num: 64 });
  await blkT.driverOk();
  await conT.init(1n << BigInt(VIRTIO_CONSOLE_F_MULTIPORT));
  const con = new ConsoleDriver(conT, alloc);
  await con.setupControl({ rxBuffers: 4, bufLen: 64 });
  await con.setupPort(0, { rxBuffers: 2, bufLen: 64 });
  await con.controlRx!.notify();
  await conT.driverOk();
  await con.sendControl(0xffff_ffff, VIRTIO_CONSOLE_DEVICE_READY, 1);
  await con.sendControl(0, VIRTIO_CONSOLE_PORT_READY, 1);
  await con.sendControl(0, VIRTIO_CONSOLE_PORT_OPEN, 1);
  say(`control messages from the device: ${(await con.takeControl()).map((c) => `port ${c.id} event ${c.event} value ${c.value}`).join('; ')}`);
  await kbdT.init(0n);
  const kbdEvents = await kbdT.setupQueue(0, { num: 8 });
  await kbdT.setupQueue(1, { num: 8 });
  await kbdT.driverOk();
  const evBufs: number[] = [];
  for (let i = 0; i < 4; i++) {
    const a = alloc.alloc(8, 8);
    evBufs.push(a);
    await kbdEvents.add([{ addr: a, len: 8, write: true }]);
  }
  await kbdT.notify(0);
  await balT.init(0n);
  const inflateQ = await balT.setupQueue(0, { num: 8 });
  await balT.setupQueue(1, { num: 8 });
  await balT.driverOk();
  say('keyboard: 4 event buffers posted; balloon: inflate and deflate queues ready');
  // The NIC: the MAC feature only (legacy: 10-byte header; version 1: 12 bytes).
  await netT.init(1n << 5n);
  const netRx = await netT.setupQueue(0, { num: 16 });
  const netTx = await netT.setupQueue(1, { num: 16 });
  await netT.driverOk();
  const net = new NetDriver(netT, netRx, netTx, alloc);
  await net.postRx(4);
  say(`net: ${net.hdrLen}-byte header, 4 receive buffers posted`);
  const rng = new RngDriver(rngT, rngRing);
  const blk = new BlkDriver(blkT, blkRing, alloc);

  title('entropy, console, disk on the source');
  const r1 = await rng.request(16, { alloc });
  say(`16 bytes of entropy: ${Array.from(r1.bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`);
  await con.port(0).tx.postOut(new TextEncoder().encode('hello from the guest\n'));
  await con.port(0).tx.notify();
  await con.port(0).tx.wait(1);
  host(`console says: ${JSON.stringify(new TextDecoder().decode(srcConsole.receive()))}`);
  // Sectors 0..63 written (pass 1), flushed and read back.
  const model = new Uint8Array(DISK_SIZE);
  for (let s = 0; s < 64; s += 8) {
    const data = new Uint8Array(8 * SECTOR);
    for (let k = 0; k < 8; k++) data.set(sectorPattern(s + k, 1), k * SECTOR);
    await blk.write(s, data);
    model.set(data, s * SECTOR);
  }
  say(`wrote 64 sectors; flush status ${await blk.flush()}`);
  const back = await blk.read(0, 64 * SECTOR);
  check(Buffer.compare(back, model.subarray(0, 64 * SECTOR)) === 0, 'the 64 sectors read back as written');

  await net.send(arpFrame(1, GUEST_MAC, GUEST_IP, [0, 0, 0, 0, 0, 0], HOST_IP));
  say('sent an ARP request: who has 10.0.2.2?');
  const [reply] = await net.receive(1);
  check(reply !== undefined && describeArpReply(reply.frame) === `ARP reply: 10.0.2.2 is at ${hex(HOST_MAC)}`, `net: ${reply ? describeArpReply(reply.frame) : 'nothing'} (the host's callback answered)`);

  title('I/O in flight, then migration');
  // Four writes reach the disk backend and stay there (the source never finishes them); two
  // more are made available and not notified. A migration then has to carry all six.
  sourceDisk.hold = true;
  const inFlight: { head: number; status: number; sector: number; bytes: Uint8Array }[] = [];
  for (const sector of [100, 200, 300, 400]) {
    const bytes = sectorPattern(sector, 2);
    const p = await blk.post(BLK_T_OUT, sector, SECTOR, { bytes });
    inFlight.push({ head: p.head, status: p.status, sector, bytes });
    model.set(bytes, sector * SECTOR);
  }
  await blkT.notify(0);
  say(`4 writes notified; ${sourceDisk.held.length} of them are in the disk backend, unfinished`);
  for (const sector of [500, 600]) {
    const bytes = sectorPattern(sector, 3);
    const p = await blk.post(BLK_T_OUT, sector, SECTOR, { bytes });
    inFlight.push({ head: p.head, status: p.status, sector, bytes });
    model.set(bytes, sector * SECTOR);
  }
  say('2 more writes made available, not notified');
  const pending = new TextEncoder().encode('a frame the guest has not read yet');
  const lateFrame = new Uint8Array(14 + pending.length);
  lateFrame.set(GUEST_MAC, 0);
  lateFrame.set(HOST_MAC, 6);
  lateFrame.set([0x88, 0xb5], 12); // the IEEE local experimental EtherType
  lateFrame.set(pending, 14);
  host(`network sends a frame to the guest: ${srcNet.backend.send(lateFrame)} (into a posted buffer; the guest reads it after the migration)`);
  srcConsole.send('typed before the migration\n');
  host('sent "typed before the migration" to the console (the guest has posted buffers)');

  (src.machine as MicrovmMachine).vmStop('finish-migrate');
  const stream = saveVm(src.machine, { runState: 'running' });
  const parsed = parseSavevm(stream);
  host(`source stopped and saved: ${stream.length} bytes, ${parsed.sections.length} sections (${parsed.sections.filter((s) => s.kind === 'full').map((s) => s.idstr).join(', ')})`);

  phase = 'destination';
  const dstConsole = new MemoryChardev('con0');
  const dstNet = hostNetwork();
  const dst = build(new MemoryBlockBackend(storage.data), dstConsole, dstNet.backend, 4242);
  dst.machine.runState = 'inmigrate';
  const r = loadVm(dst.machine, stream);
  host(`destination loaded it (${r.loaded.join(', ')}); the source's held writes never finish: the destination resubmits them`);
  dst.machine.vmStart();
  m.swap(new InProcessMachine(dst.machine, { name: 'destination' }));

  title('carry on on the destination');
  await blkT.notify(0);
  const used = await blkRing.waitUsed(inFlight.length, { what: 'the six writes' });
  const statuses = await Promise.all(inFlight.map((w) => m.readb(w.status)));
  check(used.length === 6 && statuses.every((s) => s === BLK_S_OK), `all 6 writes completed once on the destination (heads ${used.map((u) => u.id).join(', ')}), status OK`);
  const half = DISK_SIZE / 2;
  const disk = new Uint8Array(DISK_SIZE);
  disk.set(await blk.read(0, half), 0);
  disk.set(await blk.read(half / SECTOR, half), half);
  check(Buffer.compare(disk, model) === 0, 'every byte of the disk, read by the guest, equals the model (1 MiB)');
  check(Buffer.compare(storage.data, model) === 0, 'the shared storage equals the model too');
  const rx = await con.port(0).rx.wait(1);
  check(new TextDecoder().decode(rx[0]!.data).startsWith('typed before the migration'), `console input sent before the migration arrived: ${JSON.stringify(new TextDecoder().decode(rx[0]!.data))}`);
  await con.port(0).tx.postOut(new TextEncoder().encode('hello from the destination\n'));
  await con.port(0).tx.notify();
  await con.port(0).tx.wait(1);
  host(`console says: ${JSON.stringify(new TextDecoder().decode(dstConsole.receive()))}`);
  const [late] = await net.receive(1);
  check(late !== undefined && Buffer.compare(late.frame, lateFrame) === 0, `net: the frame delivered before the migration is read on the destination: ${late ? JSON.stringify(new TextDecoder().decode(late.frame.subarray(14))) : 'nothing'}`);
  await net.postRx(2);
  await net.send(arpFrame(1, GUEST_MAC, GUEST_IP, [0, 0, 0, 0, 0, 0], HOST_IP));
  const [reply2] = await net.receive(1);
  check(reply2 !== undefined && describeArpReply(reply2.frame) === `ARP reply: 10.0.2.2 is at ${hex(HOST_MAC)}` && dstNet.seen.length >= 1, `net: the destination's network answered the next ARP request (${dstNet.seen.length} frame(s) from the guest there)`);
  const r2 = await rng.request(16, { alloc });
  check(r2.len === 16, `entropy still flows: ${Array.from(r2.bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`);

  title('keyboard and balloon, on the destination');
  const kbd = dst.devices.find((d) => d.spec.driver === 'virtio-keyboard-device')!.device as VirtIOKeyboard;
  const keys = new BrowserInput(kbd);
  keys.key({ type: 'keydown', code: 'KeyA' });
  keys.key({ type: 'keyup', code: 'KeyA' });
  host('a browser keydown + keyup of KeyA');
  const evs = await kbdEvents.waitUsed(4, { what: 'four input events' });
  const decoded: string[] = [];
  for (const u of evs) {
    const b = await m.readBytes(evBufs[u.id]!, 8);
    const v = new DataView(b.buffer);
    decoded.push(`type ${v.getUint16(0, true)} code ${v.getUint16(2, true)} value ${v.getInt32(4, true)}`);
  }
  say(`evdev events: ${decoded.join('; ')}`);
  check(decoded.join(';') === 'type 1 code 30 value 1;type 0 code 0 value 0;type 1 code 30 value 0;type 0 code 0 value 0', 'KEY_A (30) pressed and released, each report closed by EV_SYN');
  const balloon = dst.devices.find((d) => d.spec.driver === 'virtio-balloon-device')!.device as VirtIOBalloon;
  balloon.setTarget(BigInt(16 << 20) - 4096n);
  host(`balloon target set: the guest is asked for ${balloon.numPages} page`);
  const page = 0xa0_0000;
  await m.memset(page, 4096, 0x5a);
  const pfnBuf = alloc.alloc(4, 4);
  await m.writel(pfnBuf, page >>> 12);
  await inflateQ.add([{ addr: pfnBuf, len: 4 }]);
  await balT.notify(0);
  await inflateQ.waitUsed(1, { what: 'the inflate request' });
  const after = await m.readBytes(page, 4096);
  check(after.every((b) => b === 0), `the guest gave page 0x${page.toString(16)} back: it reads as zeros now`);

  title('summary');
  out(`  ${events} ring events traced; ${problems === 0 ? 'every check passed' : `${problems} check(s) FAILED`}; ${((performance.now() - t0) / 1000).toFixed(2)} s`);
  return problems;
}
