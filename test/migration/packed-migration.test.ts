// Migration of packed virtqueues between QEMU 7.2 and virtio-ts, in every direction (QEMU → QEMU
// validates each scenario on the reference): virtio-rng on pc (virtio-pci modern) and on microvm
// (virtio-mmio version 2), virtio-blk on pc, all with packed=on (packed-scenarios.ts). For every
// run, the source's `virtio/packed_virtqueues` entry of queue 0 is what the script's driver state
// says the device holds, and the other 1023 entries hold QEMU's reset values. Ours' whole virtio
// blob, and that subsection byte for byte, is compared with QEMU's for the same script.
//
// virtio-blk with requests in flight on a packed ring: QEMU → QEMU, QEMU → ours (QEMU drained
// them first) and ours → ours (they travel in the request list with their ndescs) complete them;
// ours → QEMU cannot, because QEMU 7.2 reads an element's ndescs after the record where every
// saver writes it before (docs/qemu-differences.md row 77): the test pins what QEMU does then.
// The same happens to QEMU's own request list on a packed ring (a write stopped in io-error):
// ours loads and completes it, a QEMU destination fails on it.
import { describe, expect, it } from 'vitest';
import { qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison, readStream } from './blob-compare.js';
import { DIRECTIONS, captureBoth, migrationEnds } from './ends.js';
import { runMigrationScenario, type Impl, type MigrationScenario } from './harness.js';
import { MigrationFailure } from '../../src/oracle/migration.js';
import { VIRTQUEUE_ELEMENT_OLD_SIZE } from '../../src/migration/virtqueue-element.js';
import { leafFields } from '../../src/migration/virtio-decode.js';
import { PACKED_IN_FLIGHT, PACKED_QEMU_REQUEST_LIST, PACKED_MIGRATION_SCENARIOS, blkRequestNdescs, expectedPositions, packedSubsection, positionsFromNotes, type PackedPositions } from './packed-scenarios.js';

/** Offset of in_sg[0] in VirtQueueElementOld (x86-64): index, out_num, in_num, padding, in_addr[1024], out_addr[1024]. */
const IN_SG = 16 + 2 * 8 * 1024;

/** QEMU's values for a queue the device never added (`__virtio_queue_reset`): wrap counters 1. */
const RESET: PackedPositions = { lastAvailIdx: 0, lastAvailWrap: true, usedIdx: 0, usedWrap: true, inuse: 0 };

/** The source's packed state in its stream: queue 0 as the script says, the rest at reset. */
function checkPackedState(stream: Uint8Array, notes: readonly string[], source: Impl): void {
  const sub = packedSubsection(stream);
  expect(sub.queues[0], `${source} source: virtio/packed_virtqueues[0]`).toEqual(expectedPositions(positionsFromNotes(notes), source));
  const others = sub.queues.slice(1).findIndex((q) => JSON.stringify(q) !== JSON.stringify(RESET));
  expect(others, `${source} source: first queue after 0 not at its reset values`).toBe(-1);
}

/**
 * What QEMU 7.2's `qemu_get_virtqueue_element` makes of the first element of virtio-blk's request
 * list in `stream` (written as both savers write it: be32 ndescs, then the 49 168-byte
 * VirtQueueElementOld, little-endian): it reads the record from the ndescs word on and ndescs
 * from the record's last four bytes. So index is ndescs byte-swapped, out_num the head, in_num
 * out_num, and in_addr[0] and in_sg[0].iov_len are the real in_addr[0] and in_sg[0].iov_len
 * shifted left by 32 bits: an address far beyond RAM with a length of 4 GiB or more, which
 * address_space_map answers with a bounce buffer of at most a page, so virtqueue_map_iovec stops
 * QEMU with "virtio: unexpected memory split".
 */
function checkQemuMisreading(stream: Uint8Array, ndescs: number[]): void {
  expect(blkRequestNdescs(stream).sort(), 'ndescs of the elements in the stream').toEqual(ndescs);
  const sec = readStream(stream).sections.find((x) => /\/virtio-blk$/.test(x.idstr))!;
  const at = leafFields(sec.virtio!.fields).find((l) => l.path === 'virtio-blk request list > rq[0] > ndescs')!.offset;
  const v = new DataView(stream.buffer, stream.byteOffset + at, 4 + VIRTQUEUE_ELEMENT_OLD_SIZE);
  const rec = 4;
  const written = {
    ndescs: v.getUint32(0, false),
    index: v.getUint32(rec, true),
    outNum: v.getUint32(rec + 4, true),
    inAddr0: v.getBigUint64(rec + 16, true),
    inLen0: v.getBigUint64(rec + IN_SG + 8, true),
  };
  const qemu = {
    index: v.getUint32(0, true),
    outNum: v.getUint32(4, true),
    inNum: v.getUint32(8, true),
    inAddr0: v.getBigUint64(16, true),
    inLen0: v.getBigUint64(IN_SG + 8, true),
    ndescs: v.getUint32(VIRTQUEUE_ELEMENT_OLD_SIZE, false),
  };
  expect(qemu, `QEMU's reading of rq[0] (written: ${JSON.stringify(written, (_k, x: unknown) => (typeof x === 'bigint' ? `0x${x.toString(16)}` : x))})`).toEqual({
    index: ((written.ndescs & 0xff) << 24) >>> 0,
    outNum: written.index,
    inNum: written.outNum,
    inAddr0: BigInt.asUintN(32, written.inAddr0) << 32n,
    inLen0: BigInt.asUintN(32, written.inLen0) << 32n,
    ndescs: 0,
  });
  expect(qemu.inAddr0 >= 16n << 20n && qemu.inLen0 >= 1n << 32n, 'an address beyond the 16 MiB of RAM, a length of 4 GiB or more').toBe(true);
}

if (qemuOrPolicy('packed-ring migration between QEMU 7.2 and virtio-ts')) {
  const ends = migrationEnds();
  const run = (s: MigrationScenario, path: readonly Impl[]) => runMigrationScenario(s, path.map((i) => ends[i]), { migrationTimeoutMs: 20_000 });
  /** Source streams of the direction runs, by scenario and source, reused by the byte comparison. */
  const streams = new Map<string, Uint8Array>();

  for (const dir of DIRECTIONS) {
    describe(`packed-ring migration ${dir.join(' → ')}`, () => {
      for (const s of PACKED_MIGRATION_SCENARIOS) {
        it(s.name, async () => {
          const r = await run(s, dir);
          expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual([`${dir[0]}→${dir[1]}`]);
          checkPackedState(r.hops[0]!.stream, r.notes, dir[0]!);
          streams.set(`${s.name}|${dir[0]}`, r.hops[0]!.stream);
        }, 30_000);
      }

      it(PACKED_IN_FLIGHT.name, async () => {
        if (dir[0] === 'ours' && dir[1] === 'qemu') {
          // Row 77: QEMU 7.2 reads the element from our ndescs word on, and exits in virtqueue_map.
          let stream: Uint8Array | undefined;
          const err = await runMigrationScenario(PACKED_IN_FLIGHT, dir.map((i) => ends[i]), {
            migrationTimeoutMs: 20_000,
            transformStream: (x) => (stream = x),
          }).then(
            () => undefined,
            (e: unknown) => e,
          );
          expect(err, 'QEMU 7.2 refuses our packed in-flight requests').toBeInstanceOf(MigrationFailure);
          const msg = (err as Error).message;
          expect(msg).toMatch(/^ours → qemu: the destination did not load the stream \(/);
          expect(msg).toMatch(/\nqemu stderr: qemu-system-x86_64: virtio: unexpected memory split$/);
          checkQemuMisreading(stream!, [1, 3, 3]);
          return;
        }
        const r = await run(PACKED_IN_FLIGHT, dir);
        checkPackedState(r.hops[0]!.stream, r.notes, dir[0]!);
        // Ours carries the three chains with their ring slots; QEMU drained them before writing.
        expect(blkRequestNdescs(r.hops[0]!.stream).sort(), 'ndescs of the requests in the stream').toEqual(dir[0] === 'ours' ? [1, 3, 3] : []);
      }, 30_000);
    });
  }

  describe('packed ring: a request QEMU holds (io-error) in its request list', () => {
    it(`${PACKED_QEMU_REQUEST_LIST.name} (qemu → ours)`, async () => {
      const r = await run(PACKED_QEMU_REQUEST_LIST, ['qemu', 'ours']);
      checkPackedState(r.hops[0]!.stream, r.notes, 'qemu');
      expect(blkRequestNdescs(r.hops[0]!.stream), 'QEMU wrote the stopped write with its ndescs first').toEqual([3]);
    }, 30_000);

    it(`${PACKED_QEMU_REQUEST_LIST.name}: QEMU 7.2 cannot load its own stream (qemu → qemu)`, async () => {
      let stream: Uint8Array | undefined;
      const err = await runMigrationScenario(PACKED_QEMU_REQUEST_LIST, [ends.qemu, ends.qemu], {
        migrationTimeoutMs: 20_000,
        transformStream: (x) => (stream = x),
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, 'QEMU 7.2 refuses its own packed request list').toBeInstanceOf(MigrationFailure);
      const msg = (err as Error).message;
      expect(msg).toMatch(/^qemu → qemu: the destination did not load the stream \(/);
      expect(msg).toMatch(/\nqemu stderr: qemu-system-x86_64: virtio: unexpected memory split$/);
      checkQemuMisreading(stream!, [3]);
    }, 30_000);
  });

  describe('virtio blob with packed rings: ours against QEMU for the same script', () => {
    for (const s of PACKED_MIGRATION_SCENARIOS) {
      it(s.name, async () => {
        let q = streams.get(`${s.name}|qemu`);
        let o = streams.get(`${s.name}|ours`);
        if (!q || !o) {
          const [qr, or] = await captureBoth(s, ends);
          q = qr.hops[0]!.stream;
          o = or.hops[0]!.stream;
        }
        const c = compareStreams(q, o, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
        // The subsection itself, byte for byte (10 270 bytes: header, version, 1024 entries).
        const pq = packedSubsection(q, c.sections.a).bytes;
        const po = packedSubsection(o, c.sections.b).bytes;
        expect(po.length, 'virtio/packed_virtqueues size').toBe(10270);
        const first = po.findIndex((b, i) => b !== pq[i]);
        expect(first, `first byte of virtio/packed_virtqueues that differs (qemu ${pq[first]}, ours ${po[first]})`).toBe(-1);
      }, 30_000);
    }
  });
}
