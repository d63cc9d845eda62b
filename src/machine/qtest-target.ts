/**
 * What a qtest client can do to a machine, as synchronous calls (QEMU 7.2 `softmmu/qtest.c`).
 * The reference machines implement it; the qtest server translates protocol lines into these
 * calls, and the driver library's in-process `Machine` wraps it without any socket.
 *
 * Addresses are guest-physical numbers (safe integers). 8-byte values are bigints.
 */
export interface QtestTarget {
  /** Port I/O (port ≤ 0xffff). Unclaimed ports read all ones. */
  inb(port: number): number;
  inw(port: number): number;
  inl(port: number): number;
  outb(port: number, value: number): void;
  outw(port: number, value: number): void;
  outl(port: number, value: number): void;

  /** System memory: RAM or MMIO windows. Unmapped addresses read 0. */
  readb(addr: number): number;
  readw(addr: number): number;
  readl(addr: number): number;
  readq(addr: number): bigint;
  writeb(addr: number, value: number): void;
  writew(addr: number, value: number): void;
  writel(addr: number, value: number): void;
  writeq(addr: number, value: bigint): void;

  /** Bulk access in memory order (qtest `read`/`write`/`b64read`/`b64write`/`memset`). */
  readBytes(addr: number, len: number): Uint8Array;
  writeBytes(addr: number, data: Uint8Array): void;
  memset(addr: number, len: number, value: number): void;

  /** Virtual clock in ns. `clockStep()` with no argument jumps to the next timer deadline. */
  clockStep(ns?: number): number;
  clockSet(ns: number): number;
  clockNow(): number;

  /**
   * Start reporting the input (`in`) or output (`out`) IRQ lines of the device at `qomPath`
   * (QEMU accepts partial paths such as `ioapic`). Returns null on success, or the FAIL text
   * QEMU would answer ("Unknown device", "IRQ intercept already enabled").
   */
  irqIntercept(kind: 'in' | 'out', qomPath: string): string | null;
  /** Listener for intercepted IRQ lines: QEMU's asynchronous `IRQ raise N` / `IRQ lower N`. */
  onIrq: ((line: number, level: boolean) => void) | undefined;
  /** Drive a named GPIO input (qtest `set_irq_in`); returns null or the FAIL text. */
  setIrqIn(qomPath: string, name: string, line: number, level: number): string | null;

  /** Target byte order, always 'little' for the x86 machines. */
  readonly endianness: 'little' | 'big';
}
