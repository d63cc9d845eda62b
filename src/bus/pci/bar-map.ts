import type { PciActiveBar, PciFunction } from './pci-bus.js';

/**
 * Turning a function's BAR decoding into map/unmap work for a host that places BARs in its own
 * address spaces (an emulator embedding our PCI functions). A BAR is unchanged when index,
 * type, address, size and handler are all the same; anything else is an unmap of the old window
 * and a map of the new one, so a host never sees a window move in place.
 */
export interface BarMapChanges {
  /** Windows to take away (as they were mapped before). */
  readonly unmap: readonly PciActiveBar[];
  /** Windows to place. */
  readonly map: readonly PciActiveBar[];
}

function sameWindow(a: PciActiveBar, b: PciActiveBar): boolean {
  return a.index === b.index && a.type === b.type && a.addr === b.addr && a.size === b.size && a.handler === b.handler;
}

/** What changed from `before` to `after` (both as `activeBars()` returns them). */
export function diffBars(before: readonly PciActiveBar[], after: readonly PciActiveBar[]): BarMapChanges {
  const unmap = before.filter((b) => !after.some((a) => sameWindow(a, b)));
  const map = after.filter((a) => !before.some((b) => sameWindow(a, b)));
  return { unmap, map };
}

/**
 * Remembers what a host mapped for one function: `update()` after each `barsChanged` gives the
 * changes to apply, `clear()` everything to unmap when the function leaves the host.
 */
export class BarMapTracker {
  private current: readonly PciActiveBar[] = [];

  constructor(readonly fn: PciFunction) {}

  /** The windows mapped now (after the last `update`). */
  get mapped(): readonly PciActiveBar[] {
    return this.current;
  }

  update(): BarMapChanges {
    const next = this.fn.activeBars();
    const changes = diffBars(this.current, next);
    this.current = next;
    return changes;
  }

  clear(): readonly PciActiveBar[] {
    const all = this.current;
    this.current = [];
    return all;
  }
}
