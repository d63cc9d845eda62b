// `virtio-ts demo`: a guest-side script drives a virtio-rng over virtio-mmio, and every step on
// both sides is printed as it happens.
import { VirtioMmioTransport } from '../bus/virtio-mmio.js';
import { VirtIORng, cryptoEntropy } from '../devices/rng.js';
import { MmioDriver } from '../driver/mmio-driver.js';
import { GuestMemory } from '../memory/guest-memory.js';
import { formatTraceEvent, type TraceEvent } from '../trace/trace.js';

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
}
