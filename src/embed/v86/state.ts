import { VirtIOPCIProxy } from '../../bus/virtio-pci.js';
import type { PciFunction } from '../../bus/pci/pci-bus.js';
import type { LoadContext } from '../../migration/machine-state.js';
import { MigrationError, QEMUFileReader, QEMUFileWriter } from '../../migration/qemu-file.js';
import { virtioLoad, virtioSave } from '../../migration/virtio.js';

/**
 * Our functions inside v86's own snapshots (`emulator.save_state()` / `restore_state()`).
 *
 * v86 saves its machine as the array its CPU's `get_state` returns (indices 0..89 in 0.5.x;
 * RAM packed at 77 and 78) and knows nothing of functions it did not make. The host wraps
 * `get_state` to add one more entry at `V86_STATE_INDEX`:
 *
 *   ['virtio-ts', 1, [devfn, name, blob], ...]
 *
 * one per attached function, where `blob` is the function's state exactly as QEMU 7.2's
 * `virtio_save` writes it for a virtio-pci device (PCI configuration, virtio core, queues,
 * device part, subsections, requests in flight): `loadVirtioDevice` reads it, as QEMU would.
 * On restore, every blob is parsed and checked against the snapshot's RAM *before* v86 touches
 * anything; a bad or foreign entry makes `restore_state` fail with the machine unchanged. After
 * v86 restored its part, the functions are loaded (BARs remapped, INTx lines set).
 */
export const V86_STATE_INDEX = 200;
const TAG = 'virtio-ts';
const VERSION = 1;

/** v86's CPU state indices of its packed RAM (see `CPU.prototype.pack_memory`). */
const STATE_PACKED_MEMORY = 77;
const STATE_MEMORY_BITMAP = 78;
const PAGE = 4096;

type Entry = [number, string, Uint8Array];

function proxyOf(fn: PciFunction): VirtIOPCIProxy {
  if (!(fn instanceof VirtIOPCIProxy)) {
    throw new Error(`${fn.name}: v86 save_state can only carry virtio-pci functions (VirtIOPCIProxy) of virtio-ts`);
  }
  return fn;
}

/** Our entry of a v86 state: every function's blob, finished work written to RAM first. */
export function saveV86Functions(fns: readonly { fn: PciFunction; devfn: number }[]): unknown[] {
  const out: unknown[] = [TAG, VERSION];
  for (const { fn, devfn } of fns) {
    const vdev = proxyOf(fn).vdev;
    // Completions that can be finished land in guest RAM now; v86 packs RAM after this call.
    vdev.preSave();
    const f = new QEMUFileWriter();
    virtioSave(vdev, f);
    const entry: Entry = [devfn, fn.name, f.bytes()];
    out.push(entry);
  }
  return out;
}

/**
 * Guest RAM as v86's state holds it (zero pages left out, the others packed in page order), for
 * the checks of a load that must see RAM as it will be. Reads past the state's RAM are refused.
 */
export function packedRamPeek(state: ArrayLike<unknown>, ramBytes: number): LoadContext['peekRam'] {
  const packed = state[STATE_PACKED_MEMORY];
  const bitmap = state[STATE_MEMORY_BITMAP];
  if (!(packed instanceof Uint8Array) || !(bitmap instanceof Uint8Array)) return () => undefined;
  // The machine's RAM bounds the page table (a snapshot's bitmap may claim anything): v86
  // itself unpacks only up to its own memory size.
  const pages = Math.min(bitmap.length * 8, Math.ceil(Math.max(0, ramBytes) / PAGE));
  // Packed index of each page (-1: a zero page), made once per restore.
  const at = new Int32Array(pages).fill(-1);
  let n = 0;
  for (let p = 0; p < pages; p++) if ((bitmap[p >> 3]! >> (p & 7)) & 1) at[p] = n++;
  if (n * PAGE > packed.length) return () => undefined;
  return (gpa: number, len: number): Uint8Array | undefined => {
    if (!Number.isSafeInteger(gpa) || !Number.isSafeInteger(len) || gpa < 0 || len < 0 || gpa + len > pages * PAGE) return undefined;
    const out = new Uint8Array(len);
    for (let done = 0; done < len; ) {
      const a = gpa + done;
      const page = Math.floor(a / PAGE);
      const inPage = a - page * PAGE;
      const k = Math.min(PAGE - inPage, len - done);
      const idx = at[page]!;
      if (idx >= 0) out.set(packed.subarray(idx * PAGE + inPage, idx * PAGE + inPage + k), done);
      done += k;
    }
    return out;
  };
}

/**
 * Parse and check our entry of a v86 state against the functions attached now. Throws (an
 * Error naming the function, or a MigrationError naming the offset and field) without changing
 * anything; returns what applies it. `entry` undefined: a state saved without our functions
 * (they are reset when applied, as after power-on).
 */
export function planV86Restore(
  entry: unknown,
  fns: readonly { fn: PciFunction; devfn: number }[],
  ctx: LoadContext,
): { apply: () => void; carried: boolean } {
  if (entry === undefined || entry === null) {
    return {
      carried: false,
      apply: () => {
        for (const { fn } of fns) fn.reset();
      },
    };
  }
  if (!Array.isArray(entry) || entry[0] !== TAG) throw new Error(`v86 state: entry ${V86_STATE_INDEX} is not virtio-ts's`);
  if (entry[1] !== VERSION) throw new Error(`v86 state: virtio-ts entry version ${String(entry[1])} (this build reads ${VERSION})`);
  const saved = new Map<number, Entry>();
  for (const e of entry.slice(2)) {
    if (!Array.isArray(e) || e.length !== 3 || !Number.isInteger(e[0]) || e[0] < 0 || e[0] > 0xff || typeof e[1] !== 'string' || !(e[2] instanceof Uint8Array)) {
      throw new Error('v86 state: a virtio-ts function entry is malformed');
    }
    if (saved.has(e[0])) throw new Error(`v86 state: devfn ${e[0]} saved twice`);
    saved.set(e[0], e as Entry);
  }
  const applies: (() => void)[] = [];
  for (const { fn, devfn } of fns) {
    const e = saved.get(devfn);
    if (e === undefined) throw new Error(`v86 state: no state for ${fn.name} at slot ${devfn >> 3} function ${devfn & 7} (the snapshot's machine did not have it)`);
    if (e[1] !== fn.name) throw new Error(`v86 state: slot ${devfn >> 3} function ${devfn & 7} holds ${e[1]} in the snapshot, ${fn.name} here`);
    saved.delete(devfn);
    const vdev = proxyOf(fn).vdev;
    const f = new QEMUFileReader(e[2]);
    let apply: () => void;
    try {
      apply = virtioLoad(vdev, f, ctx);
      if (f.remaining !== 0) throw f.error('virtio', `${f.remaining} bytes after the end of the device state`);
    } catch (err) {
      if (err instanceof MigrationError) err.message = `${fn.name}: ${err.message}`;
      throw err;
    }
    applies.push(apply);
  }
  for (const [devfn, e] of saved) {
    throw new Error(`v86 state: ${e[1]} at slot ${devfn >> 3} function ${devfn & 7} is in the snapshot but not attached here`);
  }
  return {
    carried: true,
    apply: () => {
      for (const a of applies) a();
    },
  };
}
