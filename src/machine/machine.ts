/**
 * What the two reference machines (`pc`, `microvm`) share: the system bus (RAM, MMIO, ports),
 * the virtual clock, the QOM tree, the global system interrupts (GSIs) wired to one or two
 * IOAPICs, qtest IRQ interception, and the run state QMP reports. Implements `QtestTarget`, so
 * the qtest server and the in-process driver both drive a machine through the same calls.
 *
 * No Node imports: part of the browser bundle.
 */
import { VirtualClock } from '../clock/virtual-clock.js';
import type { GuestMemory } from '../memory/guest-memory.js';
import type { DeviceSection, MigratableMachine, RamBlock } from '../migration/machine-state.js';
import type { QtestTarget } from './qtest-target.js';
import { DEVICE_PROPS, IrqLines, QomObject, resolveQomPath } from './qom.js';
import { SystemMemory } from './system-memory.js';
import { IO_APIC_DEFAULT_ADDRESS, IOAPIC_NUM_PINS, IOAPIC_WINDOW_SIZE, IoapicRegisters } from './ioapic.js';
import { InputRouter } from '../devices/input/router.js';
import { EventThrottle, wallClockTimers, type ThrottleTimers } from './event-throttle.js';
import { NetStack } from './net-stack.js';
import type { VirtioListEntry } from './virtio-introspect.js';

/** QEMU's RunState names (qapi/run-state.json), as `query-status` reports them. */
export const RUN_STATES = [
  'debug', 'inmigrate', 'internal-error', 'io-error', 'paused', 'postmigrate', 'prelaunch', 'finish-migrate',
  'restore-vm', 'running', 'save-vm', 'shutdown', 'suspended', 'watchdog', 'guest-panicked', 'colo',
] as const;
export type RunState = (typeof RUN_STATES)[number];

/** Is `s` one of QEMU's RunState names? */
export function isRunState(s: string): s is RunState {
  return (RUN_STATES as readonly string[]).includes(s);
}

/**
 * A vm change state handler (QEMU's `VMChangeStateHandler`): told when the VM starts running
 * (`running` true) or stops (false, with the state it stopped in).
 */
export type VmStateChangeHandler = (running: boolean, state: RunState) => void;

/**
 * The steps of an outgoing precopy migration QEMU tells its precopy notifiers about
 * (`PrecopyNotifyReason`): the virtio-balloon asks for free page hints between them.
 */
export type PrecopyNotifyReason = 'setup' | 'before-bitmap-sync' | 'after-bitmap-sync' | 'complete' | 'cleanup';

/**
 * What QMP `balloon` and `query-balloon` reach (QEMU's balloon handler, one per machine: a
 * second balloon device is refused with "Only one balloon device is supported").
 */
export interface BalloonHandler {
  /** QEMU's `balloon_event_fn`: aim at `target` bytes of guest memory. */
  toTarget(target: bigint): void;
  /** QEMU's `balloon_stat_fn`: the `actual` of `query-balloon`, in bytes. */
  actual(): bigint;
}

export { IOAPIC_NUM_PINS };
/** First GSI of the second IOAPIC on microvm (QEMU's IO_APIC_SECONDARY_IRQBASE). */
export const IO_APIC_SECONDARY_IRQBASE = 24;

export const IOAPIC_PROPS = [...DEVICE_PROPS, { name: 'version', type: 'uint8' }, { name: 'ioapic[0]', type: 'child<memory-region>' }];

export abstract class ReferenceMachine implements QtestTarget, MigratableMachine {
  readonly clock = new VirtualClock();
  readonly sys: SystemMemory;
  readonly endianness = 'little' as const;
  onIrq: ((line: number, level: boolean) => void) | undefined;

  /** The QOM root ("/") and the usual containers under /machine. */
  readonly qomRoot = new QomObject('container');
  readonly qomMachine: QomObject;
  readonly unattached: QomObject;
  readonly peripheral: QomObject;
  readonly peripheralAnon: QomObject;
  private anonCount = 0;

  /** The first IOAPIC (GSI 0..23), named `ioapic` in the tree. */
  readonly ioapic: QomObject;
  /** The second IOAPIC of microvm (GSI 24..47), if any. */
  ioapic2: QomObject | undefined;
  /** The first IOAPIC's register window at 0xfec00000. */
  readonly ioapicRegs = new IoapicRegisters();

  private currentRunState: RunState = 'running';
  /**
   * QEMU's `autostart`: start the VM once an incoming migration is loaded (cleared by -S, and by
   * `stop` during `inmigrate`; set by `cont` then).
   */
  autostart = true;
  private readonly vmStateHandlers: VmStateChangeHandler[] = [];
  /** QMP event listeners (every monitor gets every event, as in QEMU). */
  readonly eventListeners = new Set<(name: string, data?: Record<string, unknown>) => void>();
  /** Host input routing for QMP `input-send-event` and embedders (QEMU's `ui/input.c` handler list). */
  readonly input = new InputRouter();
  /** The balloon device's handler, once one is plugged. */
  balloon: BalloonHandler | undefined;
  /** The network clients: netdevs, hubs, NICs (QEMU's `net_clients`). */
  readonly net = new NetStack();
  /** The virtio devices in realize order (QEMU's `virtio_list`), for QMP's `x-query-virtio*`. */
  readonly virtioDevices: VirtioListEntry[] = [];
  /** Told about each step of an outgoing migration (QEMU's precopy notifiers). */
  readonly precopyNotifiers = new Set<(reason: PrecopyNotifyReason) => void>();
  /** Guest-triggerable events at most once a second, as QEMU's monitor sends them. */
  private throttle: EventThrottle;

  private interceptDev: QomObject | undefined;
  /** Levels last reported through `onIrq` (QEMU's `irq_levels`). */
  private readonly reported = new Uint8Array(256);

  protected constructor(ram: GuestMemory, machineType: string) {
    this.sys = new SystemMemory(ram);
    this.qomRoot.addChild('objects', new QomObject('container'));
    this.qomRoot.addChild('chardevs', new QomObject('container'));
    this.qomMachine = this.qomRoot.addChild('machine', new QomObject(machineType));
    this.peripheral = this.qomMachine.addChild('peripheral', new QomObject('container'));
    this.peripheralAnon = this.qomMachine.addChild('peripheral-anon', new QomObject('container'));
    this.unattached = this.qomMachine.addChild('unattached', new QomObject('container'));
    this.ioapic = new QomObject('ioapic', IOAPIC_PROPS);
    this.ioapic.gpioIn = new IrqLines(IOAPIC_NUM_PINS);
    this.sys.mmio.map(IO_APIC_DEFAULT_ADDRESS, IOAPIC_WINDOW_SIZE, this.ioapicRegs, 'ioapic');
    this.throttle = new EventThrottle((name, data) => this.deliverEvent(name, data));
  }

  /** The clock of the event rate limit (wall-clock by default; tests inject their own). */
  setEventTimers(timers: ThrottleTimers = wallClockTimers): void {
    this.throttle.dispose();
    this.throttle = new EventThrottle((name, data) => this.deliverEvent(name, data), timers);
  }

  /** Tell the precopy notifiers about a migration step. */
  precopyNotify(reason: PrecopyNotifyReason): void {
    for (const n of [...this.precopyNotifiers]) n(reason);
  }

  /** Raise or lower global system interrupt `n` (QEMU's `gsi_handler`): an IOAPIC pin. */
  setGsi(n: number, level: boolean): void {
    if (n < IOAPIC_NUM_PINS) this.ioapic.gpioIn!.set(n, level);
    else if (this.ioapic2 && n < IO_APIC_SECONDARY_IRQBASE + IOAPIC_NUM_PINS) this.ioapic2.gpioIn!.set(n - IO_APIC_SECONDARY_IRQBASE, level);
  }

  /** Level of GSI `n` as the IOAPIC sees it. */
  gsiLevel(n: number): boolean {
    if (n < IOAPIC_NUM_PINS) return this.ioapic.gpioIn!.level(n);
    if (this.ioapic2 && n < IO_APIC_SECONDARY_IRQBASE + IOAPIC_NUM_PINS) return this.ioapic2.gpioIn!.level(n - IO_APIC_SECONDARY_IRQBASE);
    return false;
  }

  /** The path `addPeripheral` would give the next object placed with `id` (nothing is placed). */
  nextPeripheralPath(id?: string): string {
    return id !== undefined ? `${this.peripheral.path}/${id}` : `${this.peripheralAnon.path}/device[${this.anonCount}]`;
  }

  /**
   * Place a `-device` object in the tree: `/machine/peripheral/ID` with an id, else
   * `/machine/peripheral-anon/device[N]`. Returns its path.
   */
  addPeripheral(obj: QomObject, id?: string): string {
    if (id !== undefined) {
      if (this.peripheral.children.has(id)) throw new Error(`Duplicate ID '${id}' for device`);
      this.peripheral.addChild(id, obj);
    } else {
      this.peripheralAnon.addChild(`device[${this.anonCount++}]`, obj);
    }
    return obj.path;
  }

  /** Machine reset (QEMU's `qemu_system_reset`): devices back to power-on state. */
  abstract reset(): void;

  // ---------------------------------------------------------------------------------------
  // MigratableMachine (src/migration/savevm.ts writes and reads whole streams over these)

  /** QEMU's machine type name as the stream's configuration record carries it. */
  abstract readonly machineType: string;
  abstract ramBlocks(): readonly RamBlock[];
  abstract deviceSections(): readonly DeviceSection[];

  /** Guest RAM (the regions are views into the RAM blocks). */
  get memory(): GuestMemory {
    return this.sys.ram;
  }

  // ---------------------------------------------------------------------------------------
  // Run state (softmmu/runstate.c, softmmu/cpus.c)

  /** The state `query-status` reports. */
  get runState(): RunState {
    return this.currentRunState;
  }

  /**
   * QEMU's `runstate_set`: change the state without events. Devices and the virtual clock
   * follow whether the VM is running, so they can never disagree with the reported state.
   */
  set runState(state: RunState) {
    const wasRunning = this.currentRunState === 'running';
    this.currentRunState = state;
    const running = state === 'running';
    if (wasRunning === running) return;
    if (running) {
      // vm_prepare_start: handlers in registration order, then the CPUs and the clock resume.
      for (const h of [...this.vmStateHandlers]) h(true, state);
      this.clock.setEnabled(true);
    } else {
      // do_vm_stop: the clock stops with the CPUs, then handlers in reverse order.
      this.clock.setEnabled(false);
      for (const h of [...this.vmStateHandlers].reverse()) h(false, state);
    }
  }

  /** `runstate_is_running()`. */
  get vmRunning(): boolean {
    return this.currentRunState === 'running';
  }

  /**
   * QEMU's `qemu_add_vm_change_state_handler`. A handler added while the VM is not running is
   * told so at once (devices start out running when built on their own).
   */
  addVmStateChangeHandler(handler: VmStateChangeHandler): void {
    this.vmStateHandlers.push(handler);
    if (!this.vmRunning) handler(false, this.currentRunState);
  }

  /** QEMU's `vm_start`: RESUME, then running (nothing if it already runs). */
  vmStart(): void {
    if (this.vmRunning) return;
    this.emitEvent('RESUME');
    this.runState = 'running';
  }

  /** QEMU's `vm_stop` (`do_vm_stop` with a STOP event): only a running VM stops. */
  vmStop(state: RunState): void {
    if (!this.vmRunning || state === 'running') return;
    this.runState = state;
    this.emitEvent('STOP');
  }

  /** QEMU's `vm_stop_force_state`: stop a running VM, or just enter `state`. */
  vmStopForceState(state: RunState): void {
    if (this.vmRunning) this.vmStop(state);
    else this.runState = state;
  }

  /**
   * Enter `state` the way QMP `stop` / `cont` do: a running VM stops with STOP, a stopped one
   * starts with RESUME, other changes are silent.
   */
  setRunState(state: RunState): void {
    if (state === 'running') this.vmStart();
    else this.vmStopForceState(state);
  }

  /** Send a QMP event to every listener (guest-triggerable ones rate-limited as QEMU's monitor does). */
  emitEvent(name: string, data?: Record<string, unknown>): void {
    this.throttle.send(name, data);
  }

  private deliverEvent(name: string, data: Record<string, unknown> | undefined): void {
    for (const l of this.eventListeners) l(name, data);
  }

  // ---------------------------------------------------------------------------------------
  // QtestTarget: ports and memory

  inb(port: number): number {
    return this.sys.in(port, 1);
  }
  inw(port: number): number {
    return this.sys.in(port, 2);
  }
  inl(port: number): number {
    return this.sys.in(port, 4);
  }
  outb(port: number, value: number): void {
    this.sys.out(port, 1, value & 0xff);
  }
  outw(port: number, value: number): void {
    this.sys.out(port, 2, value & 0xffff);
  }
  outl(port: number, value: number): void {
    this.sys.out(port, 4, value >>> 0);
  }

  readb(addr: number): number {
    return this.sys.readN(addr, 1);
  }
  readw(addr: number): number {
    return this.sys.readN(addr, 2);
  }
  readl(addr: number): number {
    return this.sys.readN(addr, 4);
  }
  readq(addr: number): bigint {
    return this.sys.readQ(addr);
  }
  writeb(addr: number, value: number): void {
    this.sys.writeN(addr, 1, value & 0xff);
  }
  writew(addr: number, value: number): void {
    this.sys.writeN(addr, 2, value & 0xffff);
  }
  writel(addr: number, value: number): void {
    this.sys.writeN(addr, 4, value >>> 0);
  }
  writeq(addr: number, value: bigint): void {
    this.sys.writeQ(addr, value);
  }

  readBytes(addr: number, len: number): Uint8Array {
    const out = new Uint8Array(len);
    this.sys.read(addr, out);
    return out;
  }
  writeBytes(addr: number, data: Uint8Array): void {
    this.sys.write(addr, data);
  }
  memset(addr: number, len: number, value: number): void {
    this.sys.fill(addr, len, value & 0xff);
  }

  // ---------------------------------------------------------------------------------------
  // QtestTarget: clock

  /**
   * qtest `clock_step`: advance by `ns`, or with no argument to the next timer deadline (no
   * timer: no change, as QEMU). Timers fire in deadline order on the way. Returns the new time.
   */
  clockStep(ns?: number): number {
    const now = this.clock.now();
    if (ns === undefined) {
      const d = this.clock.nextDeadline();
      if (d === undefined) return now;
      return this.clock.advanceTo(Math.max(d, now));
    }
    if (!(ns > 0)) return now;
    return this.clock.advanceTo(Math.min(now + ns, Number.MAX_SAFE_INTEGER));
  }

  /** qtest `clock_set`: advance to `ns` (time never goes back). Returns the new time. */
  clockSet(ns: number): number {
    const now = this.clock.now();
    if (!(ns > now)) return now;
    return this.clock.advanceTo(Math.min(ns, Number.MAX_SAFE_INTEGER));
  }

  clockNow(): number {
    return this.clock.now();
  }

  // ---------------------------------------------------------------------------------------
  // QtestTarget: interrupts

  /** Resolve a QOM path as QEMU does (absolute or partial; ambiguous resolves to nothing). */
  resolve(path: string): QomObject | undefined {
    return resolveQomPath(this.qomRoot, path).object;
  }

  irqIntercept(kind: 'in' | 'out', qomPath: string): string | null {
    const dev = this.resolve(qomPath);
    if (!dev) return 'Unknown device';
    if (this.interceptDev) return this.interceptDev === dev ? null : 'IRQ intercept already enabled';
    const lines = kind === 'in' ? dev.gpioIn : dev.gpioOut;
    if (lines) lines.listener = (line, level) => this.report(line, level);
    this.interceptDev = dev;
    return null;
  }

  /** The device whose lines are intercepted, if any. */
  get interceptedDevice(): QomObject | undefined {
    return this.interceptDev;
  }

  setIrqIn(qomPath: string, name: string, line: number, level: number): string | null {
    const dev = this.resolve(qomPath);
    if (!dev) return 'Unknown device';
    // QEMU asserts on a GPIO name or line the device lacks; we refuse instead.
    if (name !== 'unnamed-gpio-in' || !dev.gpioIn) return `No GPIO input '${name}' on ${dev.path}`;
    if (!Number.isInteger(line) || line < 0 || line >= dev.gpioIn.count) return `GPIO input ${line} out of range on ${dev.path}`;
    dev.gpioIn.set(line, level !== 0);
    return null;
  }

  private report(line: number, level: boolean): void {
    const v = level ? 1 : 0;
    if (line >= this.reported.length || this.reported[line] === v) return;
    this.reported[line] = v;
    this.onIrq?.(line, level);
  }
}
