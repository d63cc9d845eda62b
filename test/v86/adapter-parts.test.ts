// The adapter's parts against a structural fake of the v86 CPU: shared MMIO blocks and what
// stays v86's, ports given back, INTx wired-OR across functions and routes, handlers that throw.
import { describe, expect, it } from 'vitest';
import type { AccessSize, IoHandler } from '../../src/machine/address-space.js';
import { V86AccessScope } from '../../src/embed/v86/guard.js';
import { V86IntxRouter } from '../../src/embed/v86/irq.js';
import { V86Mmio } from '../../src/embed/v86/mmio.js';
import { V86Ports } from '../../src/embed/v86/ports.js';
import type { V86Cpu, V86Emulator, V86Pci, V86PortEntry } from '../../src/embed/v86/types.js';
import { attachToV86, v86Host } from '../../src/embed/v86/host.js';
import { v86VirtioPci } from '../../src/embed/v86/virtio.js';
import { packedRamPeek, V86_STATE_INDEX } from '../../src/embed/v86/state.js';
import { VirtIORng } from '../../src/devices/rng.js';

function fakeCpu() {
  const log: string[] = [];
  const blocks = 1 << 15; // 4 GiB / 128 KiB
  const unmappedR = () => 0xff;
  const unmappedW = () => undefined;
  const empty = (): V86PortEntry => ({
    read8: () => 0xff,
    read16: () => 0xffff,
    read32: () => -1,
    write8: () => undefined,
    write16: () => undefined,
    write32: () => undefined,
    device: undefined,
  });
  const cpu = {
    devices: {},
    io: { ports: Array.from({ length: 0x10000 }, empty) },
    memory_size: [64 << 20],
    memory_map_read8: new Array(blocks).fill(unmappedR),
    memory_map_write8: new Array(blocks).fill(unmappedW),
    memory_map_read32: new Array(blocks).fill(() => -1),
    memory_map_write32: new Array(blocks).fill(unmappedW),
    mmap_write16(addr: number, v: number) {
      log.push(`v86 write16 ${addr >>> 0} ${v}`);
    },
    device_raise_irq: (i: number) => void log.push(`raise ${i}`),
    device_lower_irq: (i: number) => void log.push(`lower ${i}`),
    wasm_memory: new WebAssembly.Memory({ initial: 1 }),
    mem8: { byteOffset: 0 },
    jit_dirty_cache: () => undefined,
  } satisfies V86Cpu;
  return { cpu, log, unmappedR };
}

/** A register file of `size` bytes that records accesses. */
class Regs implements IoHandler {
  readonly seen: string[] = [];
  constructor(readonly tag: number) {}
  read(offset: number, size: AccessSize): number {
    this.seen.push(`r${size}@${offset}`);
    return (this.tag + offset) & (size === 1 ? 0xff : size === 2 ? 0xffff : 0xffff_ffff);
  }
  write(offset: number, size: AccessSize, value: number): void {
    this.seen.push(`w${size}@${offset}=${value}`);
  }
}

describe('V86Mmio', () => {
  it('two windows share one 128 KiB block; the rest of the block stays v86’s; addresses arrive signed', () => {
    const { cpu, log, unmappedR } = fakeCpu();
    const v86Write16 = cpu.mmap_write16;
    const mmio = new V86Mmio(cpu, new V86AccessScope(() => undefined));
    const a = new Regs(0x10);
    const b = new Regs(0x20);
    const A = 0xfe80_0000;
    const B = 0xfe80_4000;
    expect(mmio.map(A, 0x4000, a)).toBe(true);
    expect(mmio.map(B, 0x4000, b)).toBe(true);
    const blk = A >>> 17;
    expect(cpu.memory_map_read8[blk]).not.toBe(unmappedR);
    expect(cpu.memory_map_read8[blk]!(A + 3 | 0)).toBe(0x13);
    expect(cpu.memory_map_read32[blk]!(B + 8 | 0)).toBe(0x28);
    expect(cpu.memory_map_read8[blk]!(0xfe81_0000 | 0)).toBe(0xff); // v86's unmapped handler
    cpu.mmap_write16(B + 2 | 0, 0xbeef);
    cpu.mmap_write16(0xfe81_0000 | 0, 7); // not ours: v86's own write16
    expect(b.seen).toContain('w2@2=48879');
    expect(log).toEqual([`v86 write16 ${0xfe81_0000} 7`]);
    mmio.unmap(A, 0x4000, a);
    expect(cpu.memory_map_read8[blk]!(A | 0)).toBe(0xff); // the block now answers only for B
    expect(cpu.memory_map_read8[blk]!(B | 0)).toBe(0x20);
    mmio.unmap(B, 0x4000, b);
    expect(cpu.memory_map_read8[blk]).toBe(unmappedR); // given back
    expect(cpu.mmap_write16).toBe(v86Write16); // the wrapper is gone
  });

  it('refuses windows in RAM and above 4 GiB', () => {
    const { cpu } = fakeCpu();
    const mmio = new V86Mmio(cpu, new V86AccessScope(() => undefined));
    expect(mmio.refusal(0x10_0000, 0x4000)).toMatch(/inside RAM/);
    expect(mmio.refusal(0xffff_f000, 0x4000)).toMatch(/4 GiB/);
    expect(mmio.map(0x10_0000, 0x4000, new Regs(0))).toBe(false);
  });

  it('a handler that throws is reported and reads all ones; v86 sees no exception', () => {
    const { cpu } = fakeCpu();
    const errors: unknown[] = [];
    const mmio = new V86Mmio(cpu, new V86AccessScope((e) => errors.push(e)));
    const bad: IoHandler = {
      read: () => {
        throw new Error('boom');
      },
      write: () => {
        throw new Error('bang');
      },
    };
    mmio.map(0xe000_0000, 0x1000, bad);
    const blk = 0xe000_0000 >>> 17;
    expect(cpu.memory_map_read32[blk]!(0xe000_0000 | 0)).toBe(-1);
    expect(() => cpu.memory_map_write8[blk]!(0xe000_0000 | 0, 1)).not.toThrow();
    expect(errors.map((e) => (e as Error).message)).toEqual(['boom', 'bang']);
  });
});

describe('V86Ports', () => {
  it('maps every port of a window whole-width, and gives v86 its entries back', () => {
    const { cpu } = fakeCpu();
    const ports = new V86Ports(cpu, new V86AccessScope(() => undefined));
    const before = cpu.io.ports[0xc010]!;
    const r = new Regs(0x40);
    ports.map(0xc000, 32, r);
    const e = cpu.io.ports[0xc010]!;
    expect(e.read16.call(e.device, 0xc010)).toBe(0x50);
    e.write32.call(e.device, 0x1234_5678);
    expect(r.seen).toEqual(['r2@16', `w4@16=${0x1234_5678}`]);
    ports.unmap(0xc000, 32, r);
    expect(cpu.io.ports[0xc010]).toBe(before);
    expect(ports.refusal(0xfff0, 32)).toMatch(/64 KiB/);
  });
});

describe('V86IntxRouter', () => {
  it('wired-OR: a shared IRQ goes up with the first pin and down with the last', () => {
    const { cpu, log } = fakeCpu();
    const bridge = new Uint8Array(256);
    bridge.set([10, 10, 11, 11], 0x60);
    const r = new V86IntxRouter(cpu, () => bridge);
    r.set(13 << 3, 1, true); // slot 13 INTA → PIRQA → 10
    r.set(14 << 3, 4, true); // slot 14 INTD → PIRQA → 10
    r.set(13 << 3, 1, true); // already up: nothing
    r.set(13 << 3, 1, false);
    expect(log).toEqual(['raise 10']);
    r.set(14 << 3, 4, false);
    expect(log).toEqual(['raise 10', 'lower 10']);
  });

  it('a route changed while a pin is up still lowers the line it raised; unrouted pins raise nothing', () => {
    const { cpu, log } = fakeCpu();
    const bridge = new Uint8Array(256);
    bridge.set([10, 0x80, 11, 11], 0x60);
    const r = new V86IntxRouter(cpu, () => bridge);
    r.set(13 << 3, 1, true);
    bridge[0x60] = 5;
    r.set(13 << 3, 1, false);
    r.set(14 << 3, 1, true); // PIRQB disabled
    r.set(14 << 3, 1, false);
    r.set(13 << 3, 0, true); // not a pin
    r.set(13 << 3, 5, true);
    expect(log).toEqual(['raise 10', 'lower 10']);
    r.set(15 << 3, 1, true);
    r.releaseAll(15 << 3);
    expect(log.slice(2)).toEqual(['raise 11', 'lower 11']);
  });
});

describe('packedRamPeek (guest RAM as a v86 snapshot packs it)', () => {
  it('reads packed pages, zero pages as zeros, across page edges; bounded by the machine RAM', () => {
    const state: unknown[] = [];
    // Pages 1 and 3 of 4 are in the snapshot (bitmap 0b1010), page 1 filled with 0x11, page 3 with 0x33.
    const packed = new Uint8Array(2 * 4096);
    packed.fill(0x11, 0, 4096);
    packed.fill(0x33, 4096);
    state[77] = packed;
    state[78] = Uint8Array.of(0b1010);
    const peek = packedRamPeek(state, 4 * 4096);
    expect([...peek(4096 - 2, 4)!]).toEqual([0, 0, 0x11, 0x11]);
    expect([...peek(3 * 4096 - 1, 2)!]).toEqual([0, 0x33]);
    expect(peek(4 * 4096 - 1, 2)).toBeUndefined(); // past RAM
    expect(peek(-1, 1)).toBeUndefined();
    // A bitmap that claims a huge machine is cut to this machine's RAM (no huge table).
    const huge: unknown[] = [];
    huge[77] = packed;
    huge[78] = new Uint8Array(1 << 20).fill(0); // 8 Mi pages claimed
    const p2 = packedRamPeek(huge, 2 * 4096);
    expect([...p2(0, 4)!]).toEqual([0, 0, 0, 0]);
    expect(p2(2 * 4096, 1)).toBeUndefined();
    // More pages marked than packed: nothing is read from it.
    const short: unknown[] = [];
    short[77] = new Uint8Array(4096);
    short[78] = Uint8Array.of(0b11);
    expect(packedRamPeek(short, 4 * 4096)(0, 1)).toBeUndefined();
    expect(packedRamPeek([], 4096)(0, 1)).toBeUndefined();
  });
});

describe('V86IntxRouter inside guest accesses', () => {
  /** A CPU whose EFLAGS live in its wasm memory at 120, as v86's do; line calls record IF. */
  function cpuWithFlags() {
    const { cpu } = fakeCpu();
    const wasm = new WebAssembly.Memory({ initial: 1, maximum: 4 });
    const seen: string[] = [];
    const eflags = (): number => new Int32Array(wasm.buffer, 120, 1)[0]!;
    const setEflags = (v: number): void => void (new Int32Array(wasm.buffer, 120, 1)[0] = v);
    const full = {
      ...cpu,
      wasm_memory: wasm,
      flags: { byteOffset: 120 },
      device_raise_irq: (i: number) => void seen.push(`raise ${i} IF=${(eflags() >> 9) & 1}`),
      device_lower_irq: (i: number) => void seen.push(`lower ${i} IF=${(eflags() >> 9) & 1}`),
    };
    const bridge = new Uint8Array(256);
    bridge.set([10, 10, 11, 11], 0x60);
    return { cpu: full, wasm, seen, eflags, setEflags, bridge };
  }

  it('a line changed by a guest access is changed with IF clear, and IF is put back', () => {
    const { cpu, wasm, seen, eflags, setEflags, bridge } = cpuWithFlags();
    const scope = new V86AccessScope(() => undefined);
    const r = new V86IntxRouter(cpu, () => bridge, scope);
    // The device raises its line in its notify handler and drops it on the ISR read.
    const regs: IoHandler = {
      read: () => (r.set(13 << 3, 1, false), 1),
      write: () => r.set(13 << 3, 1, true),
    };
    setEflags(0x246); // IF, ZF, PF and the reserved bit
    scope.write(regs, 0, 2, 0);
    expect(eflags()).toBe(0x246);
    scope.read(regs, 0, 1);
    expect(eflags()).toBe(0x246);
    // Between instructions (a backend completing later) the call is plain: v86 may deliver.
    r.set(13 << 3, 1, true);
    r.set(13 << 3, 1, false);
    // With IF already clear, it stays clear.
    setEflags(0x46);
    scope.write(regs, 0, 2, 0);
    expect(eflags()).toBe(0x46);
    // After the wasm memory grew (v86's buffer replaced), the flags are still found.
    wasm.grow(1);
    setEflags(0x202);
    scope.read(regs, 0, 1);
    expect(eflags()).toBe(0x202);
    expect(seen).toEqual(['raise 10 IF=0', 'lower 10 IF=0', 'raise 10 IF=1', 'lower 10 IF=1', 'raise 10 IF=0', 'lower 10 IF=0']);
  });

  it('a handler that throws inside the access still gets IF back', () => {
    const { cpu, eflags, setEflags, bridge } = cpuWithFlags();
    const errors: unknown[] = [];
    const scope = new V86AccessScope((e) => errors.push(e));
    const r = new V86IntxRouter({ ...cpu, device_raise_irq: () => { throw new Error('v86 broke'); } }, () => bridge, scope);
    setEflags(0x202);
    scope.write({ read: () => 0, write: () => r.set(13 << 3, 1, true) }, 0, 4, 0);
    expect(eflags()).toBe(0x202);
    expect(errors.map((e) => (e as Error).message)).toEqual(['v86 broke']);
    expect(scope.inGuestAccess).toBe(false);
  });

  it('without v86 flags to find, lines change plainly', () => {
    const { cpu, log } = fakeCpu();
    const bridge = new Uint8Array(256);
    bridge.set([10, 10, 11, 11], 0x60);
    const scope = new V86AccessScope(() => undefined);
    const r = new V86IntxRouter(cpu, () => bridge, scope);
    scope.run(() => r.set(13 << 3, 1, true));
    expect(log).toEqual(['raise 10']);
  });
});

describe('v86Host and attachToV86 on a fake emulator', () => {
  function fakeEmulator(running = false) {
    const { cpu } = fakeCpu();
    const q = () => undefined;
    const pci: V86Pci = {
      pci_addr: new Uint8Array(4),
      pci_addr32: new Int32Array(1),
      pci_response32: new Int32Array(1),
      pci_status32: new Int32Array(1),
      isa_bridge_space8: new Uint8Array(256),
      device_spaces: Object.assign(new Array<unknown>(256).fill(undefined), { [0]: {}, [8]: {}, [13 << 3]: undefined }),
      pci_query: q,
      pci_write8: q,
      pci_write16: q,
      pci_write32: q,
    };
    const setStates: unknown[][] = [];
    const full = {
      ...cpu,
      devices: { pci },
      memory_size: [1 << 20],
      wasm_memory: new WebAssembly.Memory({ initial: 17 }),
      // v86's own part of a snapshot, as far as these tests care.
      get_state: (): unknown[] => [1 << 20, 'v86 part'],
      set_state: (state: unknown[]): void => void setStates.push(state),
    };
    let destroyed = 0;
    const emulator: V86Emulator = {
      v86: { cpu: full },
      is_running: () => running,
      destroy: async () => {
        destroyed++;
      },
    };
    return { emulator, cpu: full, pci, destroyed: () => destroyed, setStates };
  }

  it('one host per emulator; its destroy runs before the emulator’s, which then makes a new one', async () => {
    const { emulator, pci, destroyed, cpu } = fakeEmulator();
    const v86GetState = cpu.get_state;
    const host = v86Host(emulator);
    expect(cpu.get_state).not.toBe(v86GetState);
    expect(v86Host(emulator)).toBe(host);
    const a = attachToV86(emulator, v86VirtioPci(new VirtIORng({ memory: host.memory })));
    expect(a.slot).toBe(13); // the first free slot from 13
    expect(host.functions()).toHaveLength(1);
    expect(Object.hasOwn(pci, 'pci_query')).toBe(true);
    await emulator.destroy!();
    expect(destroyed()).toBe(1);
    expect(host.functions()).toEqual([]);
    expect(cpu.get_state).toBe(v86GetState);
    expect(pci.pci_query).toBeDefined();
    expect(() => host.attach(v86VirtioPci(new VirtIORng({ memory: host.memory })))).toThrow(/destroyed/);
    expect(v86Host(emulator)).not.toBe(host);
  });

  it('v86 snapshots carry our functions; a bad or foreign entry is refused before v86 restores anything', () => {
    const { emulator, cpu, setStates } = fakeEmulator();
    const warnings: string[] = [];
    const host = v86Host(emulator, { onWarning: (w) => warnings.push(w) });
    const rng = new VirtIORng({ memory: host.memory });
    host.attach(v86VirtioPci(rng), { slot: 13 });
    host.attach(v86VirtioPci(new VirtIORng({ memory: host.memory })), { slot: 14 });
    // The guest set the device up partly: status and a config byte of the PCI function.
    rng.setStatus(3);
    const state = cpu.get_state();
    expect(state.slice(0, 2)).toEqual([1 << 20, 'v86 part']);
    const entry = state[V86_STATE_INDEX] as unknown[];
    expect(entry.slice(0, 2)).toEqual(['virtio-ts', 1]);
    expect((entry[2] as unknown[]).slice(0, 2)).toEqual([13 << 3, 'virtio-rng-pci']);
    expect((entry[2] as unknown[])[2]).toBeInstanceOf(Uint8Array);

    // Round trip: the device is back as it was, after v86's own part.
    rng.reset();
    expect(rng.status).toBe(0);
    cpu.set_state(state);
    expect(setStates).toHaveLength(1);
    expect(rng.status).toBe(3);

    const refused = (edit: (s: unknown[]) => void, why: RegExp): void => {
      const copy = structuredClone(state);
      edit(copy);
      rng.reset();
      expect(() => cpu.set_state(copy)).toThrow(why);
      expect(setStates).toHaveLength(1); // v86's part was not restored either
      expect(rng.status).toBe(0);
    };
    const fnEntry = (s: unknown[], i: number) => (s[V86_STATE_INDEX] as unknown[][])[2 + i]!;
    refused((s) => void ((fnEntry(s, 0)[2] as Uint8Array) = (fnEntry(s, 0)[2] as Uint8Array).subarray(0, 40)), /virtio-rng-pci: migration stream offset \d+ \(/);
    refused((s) => void ((s[V86_STATE_INDEX] as unknown[])[0] = 'other'), /not virtio-ts/);
    refused((s) => void ((s[V86_STATE_INDEX] as unknown[])[1] = 2), /version 2/);
    refused((s) => void (fnEntry(s, 1)[1] = 'virtio-blk-pci'), /holds virtio-blk-pci in the snapshot, virtio-rng-pci here/);
    refused((s) => void (s[V86_STATE_INDEX] as unknown[]).splice(3, 1), /no state for virtio-rng-pci at slot 14/);
    refused((s) => void (s[V86_STATE_INDEX] as unknown[]).push([15 << 3, 'virtio-rng-pci', new Uint8Array(8)]), /slot 15 function 0 is in the snapshot but not attached/);
    refused((s) => void (s[V86_STATE_INDEX] as unknown[]).push([13 << 3, 'virtio-rng-pci', new Uint8Array(8)]), /saved twice/);
    refused((s) => void (fnEntry(s, 0)[2] = 'bytes'), /malformed/);
    refused((s) => void (fnEntry(s, 0)[0] = 104.5), /malformed/);
    refused((s) => void (fnEntry(s, 0)[0] = 256), /malformed/);

    // A snapshot of a machine without our functions: v86 restores it, ours are reset (said).
    rng.setStatus(3);
    const bare = structuredClone(state);
    delete bare[V86_STATE_INDEX];
    cpu.set_state(bare);
    expect(setStates).toHaveLength(2);
    expect(rng.status).toBe(0);
    expect(warnings).toEqual(['v86 state without virtio-ts functions: ours were reset']);
  });

  it('refuses a running machine, a taken slot, bad slots, and an emulator that has not loaded', () => {
    const { emulator } = fakeEmulator(true);
    const memory = v86Host(emulator).memory;
    expect(() => attachToV86(emulator, v86VirtioPci(new VirtIORng({ memory })))).toThrow(/before run/);
    const idle = fakeEmulator();
    const host = v86Host(idle.emulator);
    expect(() => host.attach(v86VirtioPci(new VirtIORng({ memory: host.memory })), { slot: 0 })).toThrow(/taken/);
    expect(() => host.attach(v86VirtioPci(new VirtIORng({ memory: host.memory })), { slot: 32 })).toThrow(RangeError);
    const fn = v86VirtioPci(new VirtIORng({ memory: host.memory }));
    host.attach(fn, { slot: 20 });
    expect(() => host.attach(fn, { slot: 21 })).toThrow(/already/);
    expect(() => host.attach(v86VirtioPci(new VirtIORng({ memory: host.memory })), { slot: 20 })).toThrow(/taken/);
    expect(() => v86Host({ v86: undefined })).toThrow(/not loaded/);
  });
});
