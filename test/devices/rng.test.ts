// virtio-rng (QEMU's hw/virtio/virtio-rng.c): rate limit on the virtual clock, request size
// cap, how chains are filled, and the entropy sources.
import { describe, expect, it } from 'vitest';
import { VirtioMmioTransport } from '../../src/bus/virtio-mmio.js';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import { cryptoEntropy, deterministicEntropy, VirtIORng, type VirtIORngOptions } from '../../src/devices/rng.js';
import { MmioDriver } from '../../src/driver/mmio-driver.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { VIRTIO_ID_RNG } from '../../src/virtio/constants.js';
import { modernAddrs, rngRig, type RngRig } from '../support/harness.js';

const RING = 0x10000;
const BUF = 0x80000;

function stream(n: number, skip = 0, seed = 1): Uint8Array {
  const all = new Uint8Array(skip + n);
  deterministicEntropy(seed).fill(all);
  return all.subarray(skip);
}

function bringUp(rng: Partial<VirtIORngOptions> = {}, legacy = false): RngRig & { ring: SplitRingDriver } {
  const r = rngRig({ legacy, rng });
  r.drv.init(0n);
  const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
  r.drv.driverOk();
  return { ...r, ring };
}

function nonZero(b: Uint8Array): boolean {
  return b.some((x) => x !== 0);
}

describe('virtio-rng: identity', () => {
  it('device id 4, no config space, one queue of 8 (or queueSize)', () => {
    const r = rngRig();
    expect(r.rng.deviceId).toBe(VIRTIO_ID_RNG);
    expect(r.rng.deviceId).toBe(4);
    expect(r.rng.configLen).toBe(0);
    expect(r.rng.vq.length).toBe(1);
    expect(r.rng.requestq.numDefault).toBe(8);
    expect(r.rng.vmsdName).toBe('virtio-rng');
    expect(rngRig({ rng: { queueSize: 64 } }).rng.requestq.numDefault).toBe(64);
  });

  it('refuses impossible options', () => {
    const memory = GuestMemory.ofSize(4096);
    expect(() => new VirtIORng({ memory, maxBytes: 100 })).toThrow(/needs a clock/);
    expect(() => new VirtIORng({ memory, maxBytes: -1, clock: new VirtualClock() })).toThrow(RangeError);
    expect(() => new VirtIORng({ memory, maxBytes: Number.NaN, clock: new VirtualClock() })).toThrow(RangeError);
    expect(() => new VirtIORng({ memory, periodMs: 0 })).toThrow(/periodMs/);
    expect(() => new VirtIORng({ memory, periodMs: -5 })).toThrow(RangeError);
  });
});

describe('virtio-rng: rate limit (max-bytes 100 per 1000 ms)', () => {
  it('requests beyond the quota wait for the period to end; the boundary request is partial', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock, maxBytes: 100, periodMs: 1000 });
    // DRIVER_OK already ran virtio_rng_process, which armed the period timer.
    expect(clock.nextDeadline()).toBe(1_000_000_000);
    const h = [0, 1, 2].map((i) => r.ring.add([{ addr: BUF + i * 0x100, len: 64, write: true }]));
    r.drv.notify(0);
    // 64 + 36 = 100: the second request gets only what is left of the quota (QEMU's chr_read
    // hands out `size` bytes across elements).
    expect(r.ring.takeUsed()).toEqual([{ id: h[0], len: 64 }, { id: h[1], len: 36 }]);
    expect(r.rng.quotaRemaining).toBe(0);
    expect(r.mem.view(BUF, 64)).toEqual(stream(64));
    expect(r.mem.view(BUF + 0x100, 36)).toEqual(stream(36, 64));
    expect(r.mem.view(BUF + 0x100 + 36, 28)).toEqual(new Uint8Array(28));
    expect(r.mem.view(BUF + 0x200, 64)).toEqual(new Uint8Array(64));
    expect(r.drv.ackInterrupt()).toBe(1);
    // More kicks do nothing while the quota is spent.
    r.drv.notify(0);
    r.drv.notify(0);
    expect(r.ring.usedIdx()).toBe(2);
    clock.step(999_999_999);
    expect(r.ring.usedIdx()).toBe(2);
    expect(r.irqRaises()).toBe(1);
    // The period ends: quota back to 100, the waiting request is served without a kick.
    clock.step(1);
    expect(clock.now()).toBe(1_000_000_000);
    expect(r.ring.takeUsed()).toEqual([{ id: h[2], len: 64 }]);
    expect(r.mem.view(BUF + 0x200, 64)).toEqual(stream(64, 100));
    expect(r.rng.quotaRemaining).toBe(36);
    expect(r.irqRaises()).toBe(2);
    expect(r.rng.bytesServed).toBe(164);
    // As in QEMU, the next period starts with the next process() call, not at the refill.
    expect(clock.nextDeadline()).toBeUndefined();
    r.drv.ackInterrupt();
    const h3 = r.ring.add([{ addr: BUF + 0x300, len: 64, write: true }]);
    r.drv.notify(0);
    expect(clock.nextDeadline()).toBe(2_000_000_000);
    expect(r.ring.takeUsed()).toEqual([{ id: h3, len: 36 }]);
    expect(r.rng.quotaRemaining).toBe(0);
    clock.step(1_000_000_000);
    expect(r.rng.quotaRemaining).toBe(100);
  });

  it('requests that outlast one refill keep being served each period without further kicks', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock, maxBytes: 100, periodMs: 1000 });
    const h = [0, 1, 2, 3, 4].map((i) => r.ring.add([{ addr: BUF + i * 0x100, len: 64, write: true }]));
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h[0], len: 64 }, { id: h[1], len: 36 }]);
    clock.step(1_000_000_000);
    expect(r.ring.takeUsed()).toEqual([{ id: h[2], len: 64 }, { id: h[3], len: 36 }]);
    // QEMU: check_rate_limit asks the backend for entropy, sets activate_timer, and chr_read
    // (which runs afterwards) finds the queue still non-empty and calls virtio_rng_process,
    // which arms the next period (hw/virtio/virtio-rng.c, chr_read and check_rate_limit).
    expect(clock.nextDeadline()).toBe(2_000_000_000);
    clock.step(1_000_000_000);
    expect(r.ring.takeUsed()).toEqual([{ id: h[4], len: 64 }]);
    expect(r.rng.quotaRemaining).toBe(36);
    // Drained: no timer until the next request arrives.
    expect(clock.nextDeadline()).toBeUndefined();
    const want = stream(64 * 5);
    for (let i = 0; i < 5; i++) {
      const n = i % 2 ? 36 : 64;
      const start = [0, 64, 100, 164, 200][i]!;
      expect(r.mem.view(BUF + i * 0x100, n)).toEqual(want.subarray(start, start + n));
    }
  });

  it('the period timer is a millisecond timer, as QEMU\'s (timer_new_ms + qemu_clock_get_ms)', () => {
    const clock = new VirtualClock();
    clock.step(1_500_000); // 1.5 ms: QEMU reads the clock as 1 ms
    const r = bringUp({ clock, maxBytes: 8, periodMs: 1000 });
    expect(clock.nextDeadline()).toBe(1_001_000_000);
    r.ring.add([{ addr: BUF, len: 16, write: true }]);
    r.ring.add([{ addr: BUF + 0x100, len: 16, write: true }]);
    r.drv.notify(0);
    expect(r.ring.takeUsed().map((u) => u.len)).toEqual([8]);
    clock.step(1_000_999_999 - clock.now());
    expect(r.ring.usedIdx()).toBe(1);
    clock.step(1);
    expect(r.ring.takeUsed().map((u) => u.len)).toEqual([8]);
  });

  it('a quota of 0 serves nothing, ever', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock, maxBytes: 0, periodMs: 10 });
    r.ring.add([{ addr: BUF, len: 8, write: true }]);
    r.drv.notify(0);
    for (let i = 0; i < 5; i++) clock.step(10_000_000);
    expect(r.ring.usedIdx()).toBe(0);
    expect(r.mem.view(BUF, 8)).toEqual(new Uint8Array(8));
  });

  it('the quota survives a device reset (QEMU has no rng reset handler); dispose cancels the timer', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock, maxBytes: 100, periodMs: 1000 });
    r.ring.add([{ addr: BUF, len: 64, write: true }]);
    r.drv.notify(0);
    expect(r.rng.quotaRemaining).toBe(36);
    r.drv.reset();
    expect(r.rng.quotaRemaining).toBe(36);
    expect(clock.nextDeadline()).toBe(1_000_000_000);
    r.rng.dispose();
    expect(clock.nextDeadline()).toBeUndefined();
  });

  it('without maxBytes there is no timer even with a clock', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock });
    r.ring.add([{ addr: BUF, len: 64, write: true }]);
    r.drv.notify(0);
    expect(r.ring.usedIdx()).toBe(1);
    expect(clock.nextDeadline()).toBeUndefined();
    expect(r.rng.quotaRemaining).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('virtio-rng: request sizes and chain shapes', () => {
  it('maxBytesPerRequest caps one request; used.len says how much', () => {
    const r = bringUp({ maxBytesPerRequest: 100 });
    const h = r.ring.add([{ addr: BUF, len: 4096, write: true }]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h, len: 100 }]);
    expect(r.mem.view(BUF, 100)).toEqual(stream(100));
    expect(nonZero(r.mem.view(BUF + 100, 4096 - 100)!)).toBe(false);
  });

  it('the default cap is 64 KiB, across descriptors', () => {
    const r = bringUp();
    const h = r.ring.add([
      { addr: BUF, len: 40000, write: true },
      { addr: BUF + 40000, len: 40000, write: true },
    ]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h, len: 65536 }]);
    expect(r.mem.view(BUF, 65536)).toEqual(stream(65536));
    expect(nonZero(r.mem.view(BUF + 65536, 80000 - 65536)!)).toBe(false);
  });

  it('readable and writable parts: only the writable part is filled, used.len counts it', () => {
    const r = bringUp();
    r.mem.fill(BUF, 32, 0xaa);
    const h = r.ring.add([
      { addr: BUF, len: 32 },
      { addr: BUF + 0x100, len: 48, write: true },
    ]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h, len: 48 }]);
    expect(r.mem.view(BUF, 32)).toEqual(new Uint8Array(32).fill(0xaa));
    expect(r.mem.view(BUF + 0x100, 48)).toEqual(stream(48));
  });

  it('several writable descriptors are filled in order', () => {
    const r = bringUp();
    const h = r.ring.add([
      { addr: BUF + 0x200, len: 10, write: true },
      { addr: BUF, len: 20, write: true },
      { addr: BUF + 0x100, len: 30, write: true },
    ]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h, len: 60 }]);
    const s = stream(60);
    expect(r.mem.view(BUF + 0x200, 10)).toEqual(s.subarray(0, 10));
    expect(r.mem.view(BUF, 20)).toEqual(s.subarray(10, 30));
    expect(r.mem.view(BUF + 0x100, 30)).toEqual(s.subarray(30));
  });

  it('a readable-only chain and a zero-length writable buffer come back with len 0 at once', () => {
    const r = bringUp();
    r.mem.fill(BUF, 16, 0x55);
    const h1 = r.ring.add([{ addr: BUF, len: 16 }]);
    const h2 = r.ring.add([{ addr: BUF + 0x100, len: 0, write: true }]);
    const h3 = r.ring.add([
      { addr: BUF + 0x200, len: 0, write: true },
      { addr: BUF + 0x300, len: 16, write: true },
    ]);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h1, len: 0 }, { id: h2, len: 0 }, { id: h3, len: 16 }]);
    expect(r.mem.view(BUF, 16)).toEqual(new Uint8Array(16).fill(0x55));
    expect(r.mem.view(BUF + 0x300, 16)).toEqual(stream(16));
    expect(r.errors).toEqual([]);
  });
});

describe('virtio-rng: entropy sources', () => {
  it('cryptoEntropy fills more than 65536 bytes (getRandomValues limit) completely', () => {
    const buf = new Uint8Array(200_000);
    cryptoEntropy.fill(buf);
    const chunks = [buf.subarray(0, 65536), buf.subarray(65536, 131072), buf.subarray(131072, 196608), buf.subarray(196608)];
    expect(chunks[3]!.length).toBe(3392);
    for (const c of chunks) expect(nonZero(c)).toBe(true);
    // Chunks are independent draws, not one block repeated.
    expect(chunks[0]).not.toEqual(chunks[1]);
    expect(chunks[1]).not.toEqual(chunks[2]);
    // No long run of zeros at any chunk start (a skipped chunk would leave 65536 zeros).
    for (const start of [0, 65536, 131072, 196608]) expect(nonZero(buf.subarray(start, start + 64))).toBe(true);
  });

  it('cryptoEntropy fills views of a SharedArrayBuffer (getRandomValues refuses them)', () => {
    const sab = new SharedArrayBuffer(150_000);
    const all = new Uint8Array(sab);
    const view = new Uint8Array(sab, 10, 140_000);
    expect(() => cryptoEntropy.fill(view)).not.toThrow();
    expect(Array.from(all.subarray(0, 10))).toEqual(new Array(10).fill(0));
    expect(Array.from(all.subarray(140_010))).toEqual(new Array(9_990).fill(0));
    for (const start of [0, 65536, 131072]) expect(nonZero(view.subarray(start, start + 64))).toBe(true);
    expect(nonZero(view.subarray(139_936))).toBe(true);
  });

  it('a device over SharedArrayBuffer-backed RAM with the default (crypto) source serves 100 000 bytes', () => {
    const memory = new GuestMemory([{ base: 0, size: 1 << 20, buffer: new SharedArrayBuffer(1 << 20) }]);
    const rng = new VirtIORng({ memory, maxBytesPerRequest: 1 << 20 });
    expect(rng.entropy).toBe(cryptoEntropy);
    const mmio = new VirtioMmioTransport(rng, { legacy: false });
    const drv = new MmioDriver(mmio, memory);
    drv.init(0n);
    const ring = drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8) });
    drv.driverOk();
    const h = ring.add([{ addr: BUF, len: 100_000, write: true }]);
    drv.notify(0);
    expect(ring.takeUsed()).toEqual([{ id: h, len: 100_000 }]);
    for (const start of [0, 65536, 99_936]) expect(nonZero(memory.view(BUF + start, 64)!)).toBe(true);
    expect(rng.lastError).toBeUndefined();
  });

  it('deterministicEntropy is reproducible and seed-dependent', () => {
    const a = new Uint8Array(8);
    deterministicEntropy(1).fill(a);
    expect(Array.from(a)).toEqual([0x21, 0x01, 0xc5, 0x4f, 0xd1, 0xd0, 0x1a, 0xb2]);
    const d = new Uint8Array(8);
    deterministicEntropy().fill(d);
    expect(Array.from(d)).toEqual([0xa5, 0xa3, 0xc4, 0x98, 0x88, 0x4d, 0x1d, 0x29]);
    // Seed 0 would be a fixed point of xorshift: it is taken as 1.
    const z = new Uint8Array(8);
    deterministicEntropy(0).fill(z);
    expect(z).toEqual(a);
    // Same seed, same stream, however it is cut up.
    const src = deterministicEntropy(7);
    const parts = [new Uint8Array(3), new Uint8Array(1000), new Uint8Array(61)];
    for (const p of parts) src.fill(p);
    const whole = stream(1064, 0, 7);
    expect(parts[0]).toEqual(whole.subarray(0, 3));
    expect(parts[1]).toEqual(whole.subarray(3, 1003));
    expect(parts[2]).toEqual(whole.subarray(1003));
    expect(stream(64, 0, 7)).not.toEqual(stream(64, 0, 8));
  });
});
