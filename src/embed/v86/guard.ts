import type { AccessSize, IoHandler } from '../../machine/address-space.js';

/**
 * A register access that throws would unwind through v86's wasm and stop the machine: device
 * code does not throw on guest input, and a host-side bug is contained to the access (reads
 * then see all ones, as an unassigned address).
 */
export function safeRead(h: IoHandler, offset: number, size: AccessSize, report: (e: unknown) => void): number {
  try {
    return h.read(offset, size);
  } catch (e) {
    report(e);
    return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
  }
}

export function safeWrite(h: IoHandler, offset: number, size: AccessSize, value: number, report: (e: unknown) => void): void {
  try {
    h.write(offset, size, value);
  } catch (e) {
    report(e);
  }
}

/**
 * Undo an instance-property hook: an inherited method is uncovered again (delete), an own one
 * is put back as it was.
 */
export function restore<T extends object, K extends keyof T>(obj: T, key: K, value: T[K], wasOwn: boolean): void {
  if (wasOwn) obj[key] = value;
  else delete obj[key];
}
