// The VM run state as a device sees it (QEMU's vdev->vm_running, virtio_vmstate_change and
// virtio-rng's vm state handler): while stopped nothing is processed, nothing is written to guest
// RAM and no interrupt is raised; registers still work; a notify is remembered; on resume the
// work is done exactly once. Also the virtual clock's enable switch, which keeps timers armed.
import { describe, expect, it } from 'vitest';
import { VirtualClock } from '../../src/clock/virtual-clock.js';
import type { SplitRingDriver } from '../../src/driver/split-ring.js';
import type { VirtIORngOptions } from '../../src/devices/rng.js';
import type { TraceEvent } from '../../src/trace/trace.js';
import { VIRTIO_CONFIG_S_DRIVER_OK } from '../../src/virtio/constants.js';
import { modernAddrs, rngRig, type RngRig } from '../support/harness.js';

const RING = 0x10000;
const BUF = 0x80000;
const FILL = 0x5a;

function bringUp(rng: Partial<VirtIORngOptions> = {}): RngRig & { ring: SplitRingDriver; events: TraceEvent[] } {
  const events: TraceEvent[] = [];
  const r = rngRig({ rng: { tracer: (e) => events.push(e), ...rng } });
  r.drv.init(0n);
  const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
  r.drv.driverOk();
  return { ...r, ring, events };
}

/** Post a 16-byte writable buffer filled with FILL at `addr`; returns its head. */
function post(r: RngRig & { ring: SplitRingDriver }, addr: number): number {
  r.mem.fill(addr, 16, FILL);
  return r.ring.add([{ addr, len: 16, write: true }]);
}

const untouched = (r: RngRig, addr: number) => r.mem.view(addr, 16)!.every((b) => b === FILL);

describe('VirtIODevice run state', () => {
  it('a request notified while stopped waits (used ring, RAM, interrupt untouched) and completes once on resume', () => {
    const r = bringUp();
    r.rng.vmStateChange(false);
    expect(r.rng.vmRunning).toBe(false);
    const head = post(r, BUF);
    r.drv.notify(0);
    r.drv.notify(0);
    expect(r.ring.usedIdx()).toBe(0);
    expect(untouched(r, BUF)).toBe(true);
    expect(r.irqRaises()).toBe(0);
    expect(r.rng.isr).toBe(0);
    expect(r.events.filter((e) => e.type === 'virtio_queue_notify_deferred')).toHaveLength(2);
    expect(r.events.some((e) => e.type === 'virtqueue_pop')).toBe(false);
    // Register accesses still work while stopped.
    expect(r.drv.status() & VIRTIO_CONFIG_S_DRIVER_OK).toBe(VIRTIO_CONFIG_S_DRIVER_OK);

    r.rng.vmStateChange(true);
    expect(r.ring.takeUsed()).toEqual([{ id: head, len: 16 }]);
    expect(untouched(r, BUF)).toBe(false);
    expect(r.irqRaises()).toBe(1);
    // Processed once: the kick on resume found nothing more.
    expect(r.events.filter((e) => e.type === 'virtqueue_pop')).toHaveLength(1);
    expect(r.events.filter((e) => e.type === 'virtio_vmstate_change').map((e) => (e as { running: boolean }).running)).toEqual([false, true]);
  });

  it('on resume a started device processes what is available even without a notify (QEMU kicks every queue)', () => {
    const r = bringUp();
    r.rng.vmStateChange(false);
    // Made available but never notified (e.g. posted by a driver just before a migration).
    const head = post(r, BUF);
    r.rng.vmStateChange(true);
    expect(r.ring.takeUsed()).toEqual([{ id: head, len: 16 }]);
  });

  it('DRIVER_OK written while stopped does not process; a reset while stopped forgets the notify', () => {
    const r = rngRig();
    r.rng.vmStateChange(false);
    r.drv.init(0n);
    const ring = r.drv.setupQueue(0, { num: 8, addrs: modernAddrs(RING, 8), base: RING });
    r.mem.fill(BUF, 16, FILL);
    ring.add([{ addr: BUF, len: 16, write: true }]);
    r.drv.notify(0);
    r.drv.driverOk();
    expect(ring.usedIdx()).toBe(0);
    expect(untouched(r, BUF)).toBe(true);
    // The driver resets the device before the VM resumes: the queue is gone with the notify.
    r.drv.reset();
    r.rng.vmStateChange(true);
    expect(ring.usedIdx()).toBe(0);
    expect(untouched(r, BUF)).toBe(true);
    expect(r.irqRaises()).toBe(0);
  });

  it('the device keeps being stopped across repeated stops, and a second resume does nothing more', () => {
    const r = bringUp();
    r.rng.vmStateChange(false);
    r.rng.vmStateChange(false);
    post(r, BUF);
    r.drv.notify(0);
    r.rng.vmStateChange(true);
    r.rng.vmStateChange(true);
    expect(r.ring.takeUsed()).toHaveLength(1);
    expect(r.events.filter((e) => e.type === 'virtqueue_pop')).toHaveLength(1);
  });

  it('virtio-rng: the rate-limit period keeps its deadline while the clock is stopped; the quota comes back after resume', () => {
    const clock = new VirtualClock();
    const r = bringUp({ clock, maxBytes: 16, periodMs: 1000 });
    expect(clock.nextDeadline()).toBe(1_000_000_000);
    const h0 = post(r, BUF);
    const h1 = post(r, BUF + 0x100);
    r.drv.notify(0);
    expect(r.ring.takeUsed()).toEqual([{ id: h0, len: 16 }]);
    // The VM stops (the machine disables the virtual clock with it).
    r.rng.vmStateChange(false);
    clock.setEnabled(false);
    expect(clock.nextDeadline()).toBeUndefined();
    clock.step(5_000_000_000);
    expect(clock.now()).toBe(5_000_000_000);
    expect(r.rng.quotaRemaining).toBe(0);
    expect(r.ring.usedIdx()).toBe(1);
    expect(untouched(r, BUF + 0x100)).toBe(true);
    // Resume: the device first (nothing to give, quota spent), then the clock runs the late timer.
    r.rng.vmStateChange(true);
    expect(r.ring.usedIdx()).toBe(1);
    clock.setEnabled(true);
    expect(r.ring.takeUsed()).toEqual([{ id: h1, len: 16 }]);
    // As QEMU's check_rate_limit, the next period starts with the next request, from now.
    expect(clock.nextDeadline()).toBeUndefined();
    post(r, BUF + 0x200);
    r.drv.notify(0);
    expect(r.ring.usedIdx()).toBe(2);
    expect(clock.nextDeadline()).toBe(6_000_000_000);
  });
});

describe('VirtualClock enable switch (qemu_clock_enable)', () => {
  it('while disabled time moves but nothing fires; enabling fires what fell due, in deadline order', () => {
    const clock = new VirtualClock();
    const fired: string[] = [];
    clock.setTimer(300, () => fired.push('b'));
    clock.setTimer(100, () => fired.push('a'));
    clock.setTimer(1000, () => fired.push('c'));
    clock.setEnabled(false);
    expect(clock.enabled).toBe(false);
    expect(clock.step(500)).toBe(500);
    expect(fired).toEqual([]);
    expect(clock.nextDeadline()).toBeUndefined();
    clock.setEnabled(true);
    expect(fired).toEqual(['a', 'b']);
    expect(clock.nextDeadline()).toBe(1000);
    expect(clock.now()).toBe(500);
  });
});
