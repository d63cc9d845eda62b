/**
 * The parts of v86 (0.5.x) that the adapter touches, typed structurally: v86 is never imported
 * at run time (it is an optional peer dependency), and an emulator of another build that has
 * these members works the same. Names are v86's own (they survive its release build). Facts
 * measured on 0.5.462: /work/shared/notes/v86-embedding.md, summarised where they matter.
 */

/** One I/O port: v86 calls `read*.call(device, port)` and `write*.call(device, value)`. */
export interface V86PortEntry {
  read8: (this: unknown, port: number) => number;
  read16: (this: unknown, port: number) => number;
  read32: (this: unknown, port: number) => number;
  write8: (this: unknown, value: number) => void;
  write16: (this: unknown, value: number) => void;
  write32: (this: unknown, value: number) => void;
  device: unknown;
}

/** `cpu.io` (src/io.js): 65536 port entries; 16/32-bit port accesses arrive whole. */
export interface V86Io {
  ports: V86PortEntry[];
}

/**
 * `cpu.devices.pci` (src/pci.js): configuration mechanism #1. CONFIG_ADDRESS is `pci_addr`; the
 * write of its top byte calls `pci_query`, which latches the answer in `pci_response` (before
 * it is known whether the cycle is a read). Data writes go to `pci_write8/16/32(address, value)`
 * with the latched address plus the lane; data reads return `pci_response` bytes.
 */
export interface V86Pci {
  pci_addr: Uint8Array;
  pci_addr32: Int32Array;
  pci_response32: Int32Array;
  pci_status32: Int32Array;
  /** The PIIX3 ISA bridge's configuration space (PIRQ routes at 0x60..0x63). */
  isa_bridge_space8: Uint8Array;
  /** Functions v86 answers for itself, by devfn (bus 0). */
  device_spaces: ArrayLike<unknown>;
  pci_query(): void;
  pci_write8(address: number, value: number): void;
  pci_write16(address: number, value: number): void;
  pci_write32(address: number, value: number): void;
}

export type V86MmioRead = (address: number) => number;
export type V86MmioWrite = (address: number, value: number) => void;

/** `emulator.v86.cpu` (src/cpu.js). */
export interface V86Cpu {
  devices: { pci?: V86Pci };
  io: V86Io;
  /** Guest RAM size in bytes (`memory_size[0]`); physical addresses at or above it go to MMIO. */
  memory_size: ArrayLike<number>;
  /**
   * MMIO handlers per 128 KiB block (`address >>> 17`). Addresses arrive as signed int32. A
   * 16-bit read reaches JS as two byte reads; 16-bit writes go through `mmap_write16`.
   */
  memory_map_read8: V86MmioRead[];
  memory_map_write8: V86MmioWrite[];
  memory_map_read32: V86MmioRead[];
  memory_map_write32: V86MmioWrite[];
  mmap_write16(address: number, value: number): void;
  /**
   * Set/clear an ISA IRQ line (8259, and the I/O APIC with ACPI), then `handle_irqs`: with IF set
   * a pending interrupt is acknowledged and delivered at once, even in the middle of an instruction.
   */
  device_raise_irq(irq: number): void;
  device_lower_irq(irq: number): void;
  /**
   * EFLAGS as v86 keeps it (a view of one int32 in `wasm_memory`, made afresh on each access);
   * only its byteOffset is used. Absent on a v86 without it: line changes inside guest accesses
   * are then made plainly (see irq.ts).
   */
  flags?: { readonly byteOffset: number };
  /** v86's whole wasm memory; it grows (and its buffer is replaced) while the guest runs. */
  wasm_memory: WebAssembly.Memory;
  /** Guest RAM inside `wasm_memory` (only its byteOffset is used). */
  mem8: { readonly byteOffset: number };
  /** Forget compiled code for guest bytes [start, end). */
  jit_dirty_cache(start: number, end: number): void;
  /**
   * The machine reset (guest reboot through the keyboard controller or port 0xcf9, and
   * `emulator.restart()`): CPU, some of v86's devices, BIOS reloaded.
   */
  reboot_internal?(): void;
  /** The machine state v86's `save_state` packs (an array; RAM packed at 77/78). */
  get_state?(): unknown[];
  /** Put a state back (v86's `restore_state`, after unpacking it). */
  set_state?(state: unknown[]): void;
}

/** The `V86` object of v86's public API, as far as the adapter uses it. */
export interface V86Emulator {
  v86: { cpu: V86Cpu } | undefined;
  is_running?(): boolean;
  destroy?(): Promise<void>;
}
