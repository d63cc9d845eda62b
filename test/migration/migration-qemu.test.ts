// Migration QEMU 7.2 → QEMU 7.2 for every scenario of scenarios.ts — the harness and the
// scenarios validated on the reference — and, per scenario, the stream of a second, independent
// QEMU run of the same script compared with the first (container and virtio blob): QEMU's blob
// must be a function of the script, or comparing it with ours would mean nothing. Last, the
// harness is shown to catch a wrong destination: streams corrupted between save and load.
import { describe, expect, it } from 'vitest';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison, sectionBody, virtioField } from './blob-compare.js';
import { qemuEndpoint, runMigrationScenario, type RunResult } from './harness.js';
import { MIGRATION_SCENARIOS } from './scenarios.js';

/** Rewrite one field of the virtio blob inside a whole stream (`path` as `leafFields` names it). */
function mutateField(stream: Uint8Array, path: string, change: (bytes: Uint8Array) => void): Uint8Array {
  const out = Uint8Array.from(stream);
  const f = virtioField(out, path);
  change(out.subarray(f.offset, f.offset + f.size));
  return out;
}

const byName = (n: string) => {
  const s = MIGRATION_SCENARIOS.find((x) => x.name === n);
  if (!s) throw new Error(`no scenario ${n}`);
  return s;
};

if (qemuOrPolicy('migration QEMU → QEMU')) {
  const qemu = qemuEndpoint(QEMU_COMMAND);
  const runs = new Map<string, Promise<[RunResult, RunResult]>>();

  describe('migration QEMU → QEMU', () => {
    for (const s of MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        // The capture-only run (source only) goes alongside: its stream is for the blob check below.
        const both = Promise.all([
          runMigrationScenario(s, Array.from({ length: (s.migrations ?? 1) + 1 }, () => qemu)),
          runMigrationScenario(s, [qemu], { captureOnly: true }),
        ]);
        runs.set(s.name, both);
        const [r] = await both;
        expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual(Array.from({ length: s.migrations ?? 1 }, () => 'qemu→qemu'));
      });
    }
  });

  describe('virtio blob: two QEMU runs of the same script write the same bytes', () => {
    for (const s of MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        const pair = runs.get(s.name);
        if (!pair) throw new Error('the migration test of this scenario did not run');
        const [full, capture] = await pair;
        const a = full.hops[0]!.stream;
        const b = capture.hops[0]!.stream;
        const c = compareStreams(a, b, ['qemu run 1', 'qemu run 2']);
        expect(c.differences, formatStreamComparison(c)).toEqual([]);
        const [sa, sb] = [c.sections.a!, c.sections.b!];
        expect(sa.bodyLength, 'blob length against the JSON description').toBe(sa.vmdesc!.fields[0]!.size);
        expect(Buffer.from(sectionBody(a, sa)).equals(Buffer.from(sectionBody(b, sb)))).toBe(true);
      });
    }
  });

  describe('the harness catches a wrong destination (streams corrupted between save and load)', () => {
    it('ISR cleared: the carried INTx is gone, and the snapshot says so', async () => {
      const s = byName('[pci modern] no MSI-X (vectors=0), INTx, interrupt pending only');
      await expect(runMigrationScenario(s, [qemu, qemu], { transformStream: (b) => mutateField(b, 'isr', (x) => (x[0] = 0)) })).rejects.toThrow(
        /cfg\[0x04\]: 0x00180007 → 0x00100007/,
      );
    });
    it('MSI-X table entry 1 data changed: the snapshot names the entry', async () => {
      const s = byName('[pci modern] MSI-X vector masked (pending bit), queue 2');
      await expect(runMigrationScenario(s, [qemu, qemu], { transformStream: (b) => mutateField(b, 'pci (virtio_pci_save_config) > msix > table > entry[1] > data', (x) => (x[0] ^= 0xff)) })).rejects.toThrow(/msix\.table\[1\]:/);
    });
    it('last_avail_idx one behind: QEMU refuses the load, and its message reaches the test', async () => {
      const s = byName('[mmio v1] interrupt pending only, queue 4');
      await expect(
        runMigrationScenario(s, [qemu, qemu], {
          transformStream: (b) =>
            mutateField(b, 'vq[0] > last_avail_idx', (x) => {
              const v = ((x[0]! << 8) | x[1]!) - 1;
              x[0] = (v >> 8) & 0xff;
              x[1] = v & 0xff;
            }),
        }),
      ).rejects.toThrow(/qemu → qemu: the destination did not load the stream[\s\S]*stderr:[\s\S]*VQ 0 size 0x4 < last_avail_idx 0x2 - used_idx 0x3/);
    });
  });
}
