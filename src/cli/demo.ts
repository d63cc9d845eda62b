// `virtio-ts demo`: a guest-side script drives a virtio-rng over virtio-mmio, and every step on
// both sides is printed as it happens.
import { VirtioMmioTransport } from '../bus/virtio-mmio.js';
import { VirtIORng, cryptoEntropy } from '../devices/rng.js';
import { MmioDriver } from '../driver/mmio-driver.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { formatTraceEvent, type TraceEvent } from '../trace/trace.js';
import { VirtIOKeyboard } from '../devices/input/hid.js';
import { BrowserInput } from '../devices/input/browser.js';
import { VirtIOBalloon } from '../devices/balloon/virtio-balloon.js';

const hex = (n: number) => '0x' + n.toString(16);

export function runDemo(out: (line: string) => void = (l) => console.log(l), opts: { legacy?: boolean } = {}): void {
  const legacy = opts.legacy ?? false;
  const memory = GuestMemory.ofSize(1 << 20);
  const show = (e: TraceEvent) => out('  device | ' + formatTraceEvent(e));
  const rng = new VirtIORng({ memory, entropy: cryptoEntropy, tracer: show });
  const mmio = new VirtioMmioTransport(rng, {
    legacy,
    base: 0xfeb00000,
    tracer: show,
    irq: (level) => out(`  host   | interrupt line ${level ? 'HIGH' : 'low'}`),
  });
  const guest = (s: string) => out(`guest    > ${s}`);
  const drv = new MmioDriver(mmio, memory);

  out(`virtio-ts demo: virtio-rng behind virtio-mmio version ${legacy ? '1 (legacy)' : '2 (modern)'}, 1 MiB of guest RAM`);
  out('');
  guest('probe the window: magic, version, device id');
  const id = drv.probe();
  guest(`device id ${id} (entropy source)`);
  out('');
  guest('reset, ACKNOWLEDGE, DRIVER, read the offered features, accept EVENT_IDX, FEATURES_OK');
  const features = drv.init(1n << 29n);
  guest(`negotiated features ${hex(Number(features & 0xffffffffn))} / ${hex(Number(features >> 32n))} (high word)`);
  out('');
  guest('set up queue 0 with 8 entries');
  const ring = drv.setupQueue(0, { num: 8, addrs: { desc: 0x10000, avail: 0x10080, used: 0x11000 }, base: 0x10000 });
  guest(`ring: desc ${hex(ring.addrs.desc)}, avail ${hex(ring.addrs.avail)}, used ${hex(ring.addrs.used)}`);
  guest('DRIVER_OK');
  drv.driverOk();
  out('');
  for (const [addr, len] of [[0x40000, 16], [0x41000, 32]] as const) {
    const head = ring.add([{ addr, len, write: true }]);
    guest(`post descriptor ${head}: ${len}-byte device-writable buffer at ${hex(addr)}; avail.idx = ${ring.availIdx}`);
  }
  guest('notify queue 0 (write QueueNotify)');
  drv.notify(0);
  out('');
  guest(`interrupt status ${hex(drv.interruptStatus())}; acknowledge it`);
  drv.ackInterrupt();
  for (const u of ring.takeUsed()) {
    const addr = u.id === 0 ? 0x40000 : 0x41000;
    const bytes = Array.from(memory.view(addr, u.len) ?? [], (b) => b.toString(16).padStart(2, '0')).join('');
    guest(`used: head ${u.id}, ${u.len} bytes: ${bytes}`);
  }
  guest(`used.idx = ${ring.usedIdx()}, avail_event = ${ring.availEvent()}`);
  out('');
  out(`done: ${rng.bytesServed} bytes of entropy served, device status ${hex(rng.status)}`);
  out('');
  runInputAndBalloonDemo(out, legacy);
}

/** A keyboard fed a browser key press, and a balloon given one page, each on its own transport. */
function runInputAndBalloonDemo(out: (line: string) => void, legacy: boolean): void {
  const guest = (s: string) => out(`guest    > ${s}`);
  const memory = GuestMemory.ofSize(1 << 20);
  const kbd = new VirtIOKeyboard({ memory });
  const kmmio = new VirtioMmioTransport(kbd, { legacy, irq: () => undefined });
  const kdrv = new MmioDriver(kmmio, memory);
  out('virtio-keyboard behind virtio-mmio: a browser KeyboardEvent becomes evdev events in guest buffers');
  kdrv.probe();
  kdrv.init(0n);
  const evq = kdrv.setupQueue(0, { num: 8, addrs: { desc: 0x10000, avail: 0x10080, used: 0x11000 }, base: 0x10000 });
  kdrv.setupQueue(1, { num: 8, addrs: { desc: 0x20000, avail: 0x20080, used: 0x21000 }, base: 0x20000 });
  kdrv.driverOk();
  for (let i = 0; i < 4; i++) evq.add([{ addr: 0x40000 + 16 * i, len: 8, write: true }]);
  kdrv.notify(0);
  guest('posted 4 event buffers of 8 bytes');
  out(`  host   | keydown KeyA: ${new BrowserInput(kbd).key({ type: 'keydown', code: 'KeyA' }) ? 'sent' : 'not sent'}`);
  for (const u of evq.takeUsed()) {
    const dv = new DataView((memory.view(0x40000 + 16 * u.id, 8) ?? new Uint8Array(8)).slice().buffer);
    guest(`used: head ${u.id}: type ${dv.getUint16(0, true)} code ${dv.getUint16(2, true)} value ${dv.getInt32(4, true)}`);
  }
  out('');
  const reclaimed: string[] = [];
  const balloon = new VirtIOBalloon({ memory, ramSize: 1 << 20, onDiscard: (r) => reclaimed.push(...r.map((x) => `${hex(x.gpa)}+${hex(x.length)}`)) });
  const bmmio = new VirtioMmioTransport(balloon, { legacy, irq: () => undefined });
  const bdrv = new MmioDriver(bmmio, memory);
  out('virtio-balloon behind virtio-mmio: the host asks for a page, the guest gives one, it reads as zeros');
  bdrv.probe();
  bdrv.init(1n << 1n);
  const ivq = bdrv.setupQueue(0, { num: 8, addrs: { desc: 0x50000, avail: 0x50080, used: 0x51000 }, base: 0x50000 });
  bdrv.setupQueue(1, { num: 8, addrs: { desc: 0x60000, avail: 0x60080, used: 0x61000 }, base: 0x60000 });
  bdrv.setupQueue(2, { num: 8, addrs: { desc: 0x70000, avail: 0x70080, used: 0x71000 }, base: 0x70000 });
  bdrv.driverOk();
  balloon.setTarget(BigInt((1 << 20) - 4096));
  out(`  host   | target set: num_pages = ${balloon.numPages}`);
  memory.fill(0x90000, 4096, 0x5a);
  memory.write32(0x80000, 0x90);
  ivq.add([{ addr: 0x80000, len: 4, write: false }]);
  guest('inflate PFN 0x90 (page 0x90000, filled with 0x5a)');
  bdrv.notify(0);
  guest(`used entries ${ivq.takeUsed().length}; page 0x90000 now reads ${hex(memory.read32(0x90000))}`);
  out(`  host   | pages given back: ${reclaimed.join(', ')}`);
}
