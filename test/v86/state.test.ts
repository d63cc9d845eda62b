// v86's own snapshots carry our functions: Debian's kernel reads its virtio-blk disk in a loop,
// the host takes `emulator.save_state()` while requests are in flight in our device, the machine
// is thrown away, and a fresh emulator with the same functions attached restores the snapshot
// and finishes the guest's work (every round read, the hash of the disk's tail right, nothing
// lost). A bad snapshot is refused before v86 changes anything.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { BlockBackend, BlockResult } from '../../src/devices/blk/backend.js';
import { MemoryBlockBackend } from '../../src/devices/blk/backends/memory.js';
import { VirtIOBlock } from '../../src/devices/blk/blk.js';
import { deterministicEntropy, VirtIORng } from '../../src/devices/rng.js';
import { v86Host, v86VirtioPci, type V86Emulator, type V86PciHost } from '../../src/v86.js';
import { bootGuest } from './support/boot.js';
import { emptyReport, addLine } from './support/results.js';

const MiB = 1024 * 1024;
const DISK = 16 * MiB;
const ROUNDS = 40;

/** The memory backend, completing every operation a macrotask later: requests stay in flight. */
class LaterBackend implements BlockBackend {
  readonly synchronous = false;
  constructor(readonly inner: MemoryBlockBackend) {}
  get size(): number {
    return this.inner.size;
  }
  get readOnly(): boolean {
    return false;
  }
  private later(run: () => void): BlockResult {
    return new Promise<void>((resolve) => setImmediate(() => (run(), resolve())));
  }
  read(offset: number, dst: Uint8Array): BlockResult {
    return this.later(() => void this.inner.read(offset, dst));
  }
  write(offset: number, src: Uint8Array): BlockResult {
    const copy = src.slice();
    return this.later(() => void this.inner.write(offset, copy));
  }
  flush(): BlockResult {
    return this.later(() => undefined);
  }
  discard(offset: number, length: number): BlockResult {
    return this.later(() => void this.inner.discard(offset, length));
  }
  writeZeroes(offset: number, length: number, mayUnmap: boolean): BlockResult {
    return this.later(() => void this.inner.writeZeroes(offset, length, mayUnmap));
  }
  readSync(offset: number, dst: Uint8Array): boolean {
    return this.inner.readSync(offset, dst);
  }
}

const md5 = (b: Uint8Array): string => createHash('md5').update(b).digest('hex');

interface Machine {
  host: V86PciHost;
  rng: VirtIORng;
  blk: VirtIOBlock;
  disk: MemoryBlockBackend;
}

/** Our functions, always at the same slots and with the same names on both machines. */
function attach(emulator: V86Emulator, image: Uint8Array, warnings: string[]): Machine {
  const host = v86Host(emulator, { onWarning: (w) => warnings.push(w) });
  const memory = host.memory;
  const rng = new VirtIORng({ memory, entropy: deterministicEntropy(7), queueSize: 256 });
  const disk = new MemoryBlockBackend(image);
  // Packed rings: the snapshot carries wrap counters and ring positions below the size, and
  // elements with their ndescs (what a split ring's state does not exercise).
  const blk = new VirtIOBlock({ memory, backend: new LaterBackend(disk), queueSize: 256, packed: true });
  host.attach(v86VirtioPci(rng), { slot: 13 });
  host.attach(v86VirtioPci(blk, { disableLegacy: true }), { slot: 14 });
  return { host, rng, blk, disk };
}

describe('v86 save_state / restore_state with our functions', () => {
  it('a snapshot taken with disk requests in flight finishes on a fresh emulator', async () => {
    const original = new Uint8Array(DISK);
    deterministicEntropy(0x5a5e).fill(original);
    const warnings: string[] = [];
    const cmdline = [`vt.blk.rounds=${ROUNDS}`];
    let src: Machine | undefined;
    let state: ArrayBuffer | undefined;
    let diskAtSave: Uint8Array | undefined;
    let inFlightAtSave = 0;
    let posAtSave: unknown[] = [];
    let sustainedDone = false;

    // Source: run until the sustained reads are under way, then snapshot with requests in flight.
    const first = await bootGuest({
      tests: ['rng', 'blk'],
      cmdline,
      timeoutMs: 240_000,
      onLoaded: (emulator) => {
        src = attach(emulator as unknown as V86Emulator, original.slice(), warnings);
      },
      until: (line, emulator) => {
        if (line.startsWith('VT-RESULT blk.sustained ')) sustainedDone = true;
        if (!line.startsWith('VT-RESULT blk.fs ')) return false;
        return new Promise<boolean>((resolve, reject) => {
          const poll = (): void => {
            if (sustainedDone) {
              reject(new Error('the guest finished its disk rounds before a request was seen in flight'));
              return;
            }
            if (src!.blk.requestsInFlight === 0) {
              setTimeout(poll, 1);
              return;
            }
            inFlightAtSave = src!.blk.requestsInFlight;
            const q = src!.blk.vq[0]!;
            posAtSave = [q.packed, q.lastAvailIdx, q.lastAvailWrapCounter, q.usedIdx, q.usedWrapCounter, q.inuse];
            // Shared storage, as for a QEMU migration: the destination sees the disk as it is now.
            diskAtSave = src!.disk.data.slice();
            emulator.save_state().then((s) => {
              state = s;
              resolve(true);
            }, reject);
          };
          setTimeout(poll, 50);
        });
      },
    });
    expect(first.report.done).toBe(false);
    expect(first.report.results.get('blk.fs')?.ok).toBe(true);
    expect(state).toBeDefined();
    expect(inFlightAtSave).toBeGreaterThan(0);

    // Destination: same functions, the snapshot restored before the CPU runs.
    let dst: Machine | undefined;
    let carried = -1;
    let posAfterRestore: unknown[] = [];
    const second = await bootGuest({
      tests: ['rng', 'blk'],
      cmdline,
      timeoutMs: 240_000,
      onLoaded: async (emulator) => {
        dst = attach(emulator as unknown as V86Emulator, diskAtSave!, warnings);
        await emulator.restore_state(state!);
        carried = dst.blk.requestsInFlight;
        const q = dst.blk.vq[0]!;
        posAfterRestore = [q.packed, q.lastAvailIdx, q.lastAvailWrapCounter, q.usedIdx, q.usedWrapCounter, q.inuse];
      },
    });
    // The requests in flight at the snapshot were resubmitted on the destination.
    expect(carried).toBe(inFlightAtSave);
    // On packed rings (Linux took them), positions and wrap counters as the source left them.
    expect(posAtSave[0]).toBe(true);
    expect(posAfterRestore).toEqual(posAtSave);
    // Init went on where it was: the sustained loop finished there, and the blk test passed.
    const report = emptyReport();
    for (const line of (first.serial + second.serial).split('\n')) addLine(report, line.replace(/\r/g, ''));
    expect(second.report.done).toBe(true);
    const sus = second.report.results.get('blk.sustained');
    expect(sus?.ok, sus?.line).toBe(true);
    expect(sus?.fields.rounds).toBe(String(ROUNDS));
    expect(sus?.fields.tailmd5).toBe(md5(original.subarray(DISK - 4 * MiB)));
    expect(second.report.results.get('blk')?.ok).toBe(true);
    expect(report.results.get('rng')?.ok).toBe(true);
    // What the guest wrote before the snapshot is on the destination's disk, the rest untouched.
    const image = dst!.disk.data;
    const w = report.results.get('blk.write')!;
    expect(md5(image.subarray(Number(w.fields.off), Number(w.fields.off) + Number(w.fields.len)))).toBe(w.fields.md5);
    expect(md5(image.subarray(12 * MiB))).toBe(md5(original.subarray(12 * MiB)));
    expect(warnings).toEqual([]);
  }, 600_000);
});
