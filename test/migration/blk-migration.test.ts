// virtio-blk migrated with I/O on the way, between QEMU 7.2 and virtio-ts in every direction
// (blk-scenarios.ts): QEMU → QEMU (the scenarios validated on the reference), QEMU → ours,
// ours → QEMU, ours → ours, and round trips over three machines; a QEMU request list (a write
// QEMU stopped on ENOSPC) loaded by ours; the request list ours writes shown to be in the stream;
// and ours' virtio-blk blob compared byte by byte with QEMU's for the same script.
import { describe, expect, it } from 'vitest';
import { qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison, readStream } from './blob-compare.js';
import { runMigrationScenario, type Impl, type MigrationScenario } from './harness.js';
import { captureBoth, migrationEnds } from './ends.js';
import { BLK_MIGRATION_SCENARIOS, BLK_QEMU_SOURCE_SCENARIOS, BLK_ROUND_TRIPS } from './blk-scenarios.js';
import { inspectStream } from '../../src/migration/inspect.js';
import type { DecodedField } from '../../src/migration/virtio-decode.js';

const flat = (fields: DecodedField[]): DecodedField[] => fields.flatMap((f) => [f, ...flat(f.children ?? [])]);

/**
 * Requests in the virtio-blk section's request list, as the inspector decodes it (u8 1, a be32
 * queue index with several queues, an element; then u8 0). `withIndex`: each entry must carry
 * its queue index (a device with several queues).
 */
function requestsInStream(stream: Uint8Array, withIndex = false): number {
  const sec = readStream(stream).sections.find((x) => /\/virtio-blk$/.test(x.idstr));
  if (!sec) throw new Error('no virtio-blk section');
  if (!sec.virtio) throw new Error(`the virtio-blk blob does not decode: ${sec.virtioError ?? '?'}`);
  const list = sec.virtio.fields.find((f) => f.name === 'virtio-blk request list');
  if (!list) throw new Error('no request list in the virtio-blk blob');
  const rqs = (list.children ?? []).filter((f) => /^rq\[\d+\]$/.test(f.name));
  for (const rq of rqs) expect((rq.children ?? []).some((f) => f.name === 'vq index'), `${rq.name} carries its queue index`).toBe(withIndex);
  return rqs.length;
}

if (qemuOrPolicy('virtio-blk migration interop between QEMU 7.2 and virtio-ts')) {
  const ends = migrationEnds();

  const run = (s: MigrationScenario, path: readonly Impl[]) => runMigrationScenario(s, path.map((i) => ends[i]), { migrationTimeoutMs: 20_000 });

  for (const dir of [['qemu', 'qemu'], ['qemu', 'ours'], ['ours', 'qemu'], ['ours', 'ours']] as const) {
    describe(`virtio-blk migration ${dir.join(' → ')}`, () => {
      for (const s of BLK_MIGRATION_SCENARIOS) {
        it(s.name, async () => {
          const r = await run(s, dir);
          expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual([`${dir[0]}→${dir[1]}`]);
          if (/in flight/.test(s.name)) {
            // Ours carries what is still in the backend; QEMU drained it before writing.
            const two = /two queues/.test(s.name);
            const n = requestsInStream(r.hops[0]!.stream, two);
            expect(n, 'requests in the stream\'s request list').toBe(dir[0] === 'ours' ? 3 : 0);
          }
        }, 30_000);
      }
    });
  }

  for (const path of [['qemu', 'qemu', 'qemu'], ['qemu', 'ours', 'qemu'], ['ours', 'qemu', 'ours'], ['ours', 'ours', 'ours']] as const) {
    describe(`virtio-blk migration ${path.join(' → ')}`, () => {
      for (const s of BLK_ROUND_TRIPS) {
        it(s.name, async () => {
          const r = await run(s, path);
          expect(r.hops).toHaveLength(2);
        }, 40_000);
      }
    });
  }

  describe('virtio-blk: a QEMU request list (io-error) loaded and completed', () => {
    for (const dst of ['qemu', 'ours'] as const) {
      for (const s of BLK_QEMU_SOURCE_SCENARIOS) {
        it(`${s.name} (qemu → ${dst})`, async () => {
          const r = await run(s, ['qemu', dst]);
          expect(requestsInStream(r.hops[0]!.stream), 'QEMU wrote the stopped write into its request list').toBe(1);
          // `virtio-ts inspect` decodes that list: one element, out_num 2 (header, data), in_num 1.
          const sec = inspectStream(r.hops[0]!.stream).sections.find((x) => x.virtio && /\/virtio-blk$/.test(x.idstr))!;
          const elems = flat(sec.virtio!.fields).filter((f) => f.name === 'element (VirtQueueElementOld)');
          expect(elems.map((e) => String(e.value).replace(/^head \d+, /, ''))).toEqual(['out_num 2, in_num 1']);
        }, 30_000);
      }
    }
  });

  describe('virtio-blk blob: ours against QEMU for the same script', () => {
    for (const s of BLK_MIGRATION_SCENARIOS.filter((x) => !/in flight/.test(x.name))) {
      it(s.name, async () => {
        const [q, o] = await captureBoth(s, ends);
        const c = compareStreams(q.hops[0]!.stream, o.hops[0]!.stream, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
      }, 30_000);
    }
  });
}
