import { BarMapTracker } from '../../bus/pci/bar-map.js';
import type { PciActiveBar, PciBusHost, PciFunction } from '../../bus/pci/pci-bus.js';
import type { GuestMemory } from '../../memory/guest-memory.js';
import { V86ConfigCycles } from './config.js';
import { V86IntxRouter } from './irq.js';
import { V86Mmio } from './mmio.js';
import { V86Ports } from './ports.js';
import { packedRamPeek, planV86Restore, saveV86Functions, V86_STATE_INDEX } from './state.js';
import { v86GuestMemory } from './ram.js';
import { restore, V86AccessScope } from './guard.js';
import type { V86Cpu, V86Emulator } from './types.js';

/** Slots v86 0.5 fills itself (host bridge, ISA bridge, IDE, 9p, ACPI, its virtio devices, VGA, ...). */
export const V86_USED_SLOTS: readonly number[] = [0, 1, 5, 6, 7, 10, 11, 12, 18, 30];
/** Where `attach` places functions given no slot: the free slots from 13 on. */
const DEFAULT_SLOTS = [13, 14, 15, 16, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 31, 2, 3, 4, 8, 9];

export interface V86AttachOptions {
  /** PCI slot (device number, 0..31); default: the first free one from 13. */
  slot?: number;
  /** Function number (0..7), default 0. */
  function?: number;
}

export interface V86HostOptions {
  /** Something went wrong that the guest cannot see (a BAR v86 cannot map, a handler that threw). */
  onWarning?: (message: string) => void;
}

/** A function placed on a v86 machine. */
export interface V86Attachment {
  readonly fn: PciFunction;
  readonly devfn: number;
  readonly slot: number;
  /** Take the function off the machine: BARs unmapped, INTx released, config cycles back to v86. */
  detach(): void;
}

/**
 * Our PCI functions on one v86 machine: the `PciBusHost` they talk to, over v86's PCI host
 * (config cycles), port table (I/O BARs), MMIO blocks (memory BARs), PIIX routing (INTx) and
 * RAM (`memory`: growth followed, device writes invalidate the JIT). v86 needs no change.
 *
 * Functions must be attached after v86 loaded (its `emulator-loaded` event) and before
 * `run()`: SeaBIOS enumerates the bus once, at boot, and v86 has no hot-plug. A machine reset
 * (the guest reboots, or `emulator.restart()`) resets our functions too, as QEMU's system reset
 * does, and SeaBIOS then enumerates them again. v86's `save_state` carries them (state.ts): a
 * snapshot restores into an emulator with the same functions attached at the same slots.
 */
export class V86PciHost implements PciBusHost {
  readonly cpu: V86Cpu;
  /** Guest RAM for the devices behind our functions (pass it as their `memory`). */
  readonly memory: GuestMemory;
  private readonly config: V86ConfigCycles;
  private readonly mmio: V86Mmio;
  private readonly ports: V86Ports;
  private readonly irq: V86IntxRouter;
  private readonly scope: V86AccessScope;
  private readonly attached = new Map<PciFunction, { devfn: number; bars: BarMapTracker }>();
  private readonly onWarning: ((message: string) => void) | undefined;
  private destroyed = false;
  /** v86's machine reset, wrapped to reset our functions after it (undefined: v86 has none). */
  private readonly origReboot: (() => void) | undefined;
  private readonly rebootWasOwn: boolean;
  /** v86's state getter/setter, wrapped to carry our functions in its snapshots. */
  private readonly origGetState: (() => unknown[]) | undefined;
  private readonly origSetState: ((state: unknown[]) => void) | undefined;
  private readonly stateWasOwn: { get: boolean; set: boolean };

  constructor(cpu: V86Cpu, opts: V86HostOptions = {}) {
    const pci = cpu.devices.pci;
    if (pci === undefined) throw new Error('v86 has no PCI bus (is the emulator loaded, with devices?)');
    this.cpu = cpu;
    this.onWarning = opts.onWarning;
    const report = (e: unknown): void => this.warn(`a device handler threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    this.memory = v86GuestMemory(cpu);
    const scope = new V86AccessScope(report);
    this.scope = scope;
    this.config = new V86ConfigCycles(pci, cpu.io.ports, scope);
    this.mmio = new V86Mmio(cpu, scope);
    this.ports = new V86Ports(cpu, scope);
    this.irq = new V86IntxRouter(cpu, () => pci.isa_bridge_space8, scope);
    const reboot = cpu.reboot_internal;
    this.origReboot = reboot;
    this.rebootWasOwn = Object.hasOwn(cpu, 'reboot_internal');
    if (reboot !== undefined) {
      cpu.reboot_internal = () => {
        reboot.call(cpu);
        this.resetFunctions();
      };
    }
    const getState = cpu.get_state;
    const setState = cpu.set_state;
    this.origGetState = getState;
    this.origSetState = setState;
    this.stateWasOwn = { get: Object.hasOwn(cpu, 'get_state'), set: Object.hasOwn(cpu, 'set_state') };
    if (getState !== undefined && setState !== undefined) {
      cpu.get_state = () => {
        const state = getState.call(cpu);
        state[V86_STATE_INDEX] = saveV86Functions(this.functions());
        return state;
      };
      cpu.set_state = (state: unknown[]) => {
        // Everything of ours is checked (against the snapshot's RAM) before v86 changes anything.
        const plan = planV86Restore(state[V86_STATE_INDEX], this.functions(), { peekRam: packedRamPeek(state, cpu.memory_size[0] ?? 0) });
        setState.call(cpu, state);
        if (!plan.carried && this.attached.size > 0) this.warn('v86 state without virtio-ts functions: ours were reset');
        plan.apply();
      };
    }
  }

  /**
   * Machine reset for our functions (QEMU's `qemu_system_reset` reaching each device): device
   * and config space to power-on values, so BARs stop decoding (unmapped here) and INTx drops.
   */
  resetFunctions(): void {
    for (const fn of this.attached.keys()) {
      try {
        fn.reset();
      } catch (e) {
        this.warn(`${fn.name}: reset threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
  }

  /**
   * Whether v86's CPU is inside a guest instruction that called one of our handlers right now
   * (a register access or a configuration cycle). Line changes made then are delivered at the
   * next instruction boundary (irq.ts); a host callback that runs in a device's handler can ask.
   */
  get inGuestAccess(): boolean {
    return this.scope.inGuestAccess;
  }

  private warn(message: string): void {
    this.onWarning?.(message);
  }

  /** Place `fn` on the bus. Throws (a host programming error) if the slot is taken. */
  attach(fn: PciFunction, opts: V86AttachOptions = {}): V86Attachment {
    if (this.destroyed) throw new Error('this v86 host was destroyed');
    if (this.attached.has(fn)) throw new Error(`${fn.name} is already on this v86 machine`);
    const func = opts.function ?? 0;
    if (!Number.isInteger(func) || func < 0 || func > 7) throw new RangeError(`PCI function ${func} is not 0..7`);
    let slot = opts.slot;
    if (slot === undefined) {
      slot = DEFAULT_SLOTS.find((s) => !this.config.taken((s << 3) | func));
      if (slot === undefined) throw new Error('no free PCI slot on this v86 machine');
    }
    if (!Number.isInteger(slot) || slot < 0 || slot > 31) throw new RangeError(`PCI slot ${slot} is not 0..31`);
    const devfn = (slot << 3) | func;
    if (this.config.taken(devfn)) throw new Error(`PCI slot ${slot} function ${func} is taken on this v86 machine`);
    this.attached.set(fn, { devfn, bars: new BarMapTracker(fn) });
    this.config.add(devfn, fn);
    fn.attach(this, devfn);
    this.barsChanged(fn);
    return { fn, devfn, slot, detach: () => this.detach(fn) };
  }

  detach(fn: PciFunction): void {
    const a = this.attached.get(fn);
    if (a === undefined) return;
    for (const bar of a.bars.clear()) this.unmapBar(bar);
    this.irq.releaseAll(a.devfn);
    this.config.remove(a.devfn);
    this.attached.delete(fn);
    // Stop the device's own activity (timers, backends) as a stopped VM does.
    fn.vmStateChange?.(false);
  }

  /** Detach every function and give v86 back everything the host took. */
  destroy(): void {
    for (const fn of [...this.attached.keys()]) this.detach(fn);
    this.mmio.clear();
    this.ports.clear();
    this.config.clear();
    this.memory.onWrite = undefined;
    if (this.origReboot !== undefined) restore(this.cpu, 'reboot_internal', this.origReboot, this.rebootWasOwn);
    if (this.origGetState !== undefined) restore(this.cpu, 'get_state', this.origGetState, this.stateWasOwn.get);
    if (this.origSetState !== undefined) restore(this.cpu, 'set_state', this.origSetState, this.stateWasOwn.set);
    this.destroyed = true;
  }

  /** Functions on the machine, with their devfn. */
  functions(): { fn: PciFunction; devfn: number }[] {
    return [...this.attached].map(([fn, a]) => ({ fn, devfn: a.devfn }));
  }

  // ---------------------------------------------------------------------------------------
  // PciBusHost

  barsChanged(fn: PciFunction): void {
    const a = this.attached.get(fn);
    if (a === undefined) return;
    const { unmap, map } = a.bars.update();
    for (const bar of unmap) this.unmapBar(bar);
    for (const bar of map) this.mapBar(fn, bar);
  }

  /** No MSI in v86: a function with MSI-X must not get here (use `vectors: 0`); dropped. */
  dmaWrite(fn: PciFunction, addr: number): void {
    this.warn(`${fn.name}: bus-master write to 0x${addr.toString(16)} dropped (v86 has no MSI; use vectors: 0)`);
  }

  setIntx(fn: PciFunction, pin: number, level: boolean): void {
    const a = this.attached.get(fn);
    if (a !== undefined) this.irq.set(a.devfn, pin, level);
  }

  private mapBar(fn: PciFunction, bar: PciActiveBar): void {
    const io = bar.type === 'io';
    const why = io ? this.ports.refusal(bar.addr, bar.size) : this.mmio.refusal(bar.addr, bar.size);
    if (why !== undefined) {
      this.warn(`${fn.name}: BAR${bar.index} at 0x${bar.addr.toString(16)} (${bar.size} bytes) not mapped: ${why}`);
      return;
    }
    if (io) this.ports.map(bar.addr, bar.size, bar.handler);
    else this.mmio.map(bar.addr, bar.size, bar.handler);
  }

  private unmapBar(bar: PciActiveBar): void {
    if (bar.type === 'io') this.ports.unmap(bar.addr, bar.size, bar.handler);
    else this.mmio.unmap(bar.addr, bar.size, bar.handler);
  }
}

/**
 * The host of an emulator, made on first use. Kept beside the emulator (a WeakMap keyed by it),
 * so every `attachToV86` on one machine shares one host and nothing outlives the emulator.
 */
const hosts = new WeakMap<object, V86PciHost>();

function loadedCpu(emulator: V86Emulator): V86Cpu {
  const cpu = emulator.v86?.cpu;
  if (cpu === undefined || cpu.devices?.pci === undefined || !((cpu.memory_size[0] ?? 0) > 0)) {
    throw new Error("v86 is not loaded yet: attach in its 'emulator-loaded' event (with autostart: false), then run()");
  }
  return cpu;
}

/**
 * The `V86PciHost` of `emulator` (made on first call). Its `destroy()` runs before the
 * emulator's own `destroy()`.
 */
export function v86Host(emulator: V86Emulator, opts: V86HostOptions = {}): V86PciHost {
  let host = hosts.get(emulator);
  if (host !== undefined) return host;
  host = new V86PciHost(loadedCpu(emulator), opts);
  hosts.set(emulator, host);
  const made = host;
  const destroy = emulator.destroy;
  if (typeof destroy === 'function') {
    emulator.destroy = async function (this: V86Emulator): Promise<void> {
      made.destroy();
      hosts.delete(emulator);
      emulator.destroy = destroy;
      return destroy.call(emulator);
    };
  }
  return host;
}

/** Guest RAM of `emulator` for our devices: `v86Host(emulator).memory`. */
export function v86Memory(emulator: V86Emulator): GuestMemory {
  return v86Host(emulator).memory;
}

/**
 * Put PCI function `fn` (e.g. a `VirtIOPCIProxy` over a device whose memory is
 * `v86Memory(emulator)`, made with `vectors: 0` and `byteLanes: true`) on `emulator`'s bus.
 * Call after `emulator-loaded`, before `run()`.
 */
export function attachToV86(emulator: V86Emulator, fn: PciFunction, opts: V86AttachOptions = {}): V86Attachment {
  if (emulator.is_running?.() === true) throw new Error('v86 is running: attach before run() (the BIOS enumerates PCI once, at boot)');
  return v86Host(emulator).attach(fn, opts);
}
