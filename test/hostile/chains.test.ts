// Hostile-guest catalogue §A: descriptor-chain walking (spec/hostile-guest-bugs.md).
// Every test runs on virtio-rng behind virtio-mmio v2 and v1; the harness checks I1–I4 and I6
// around every access, and each test ends with I5 (liveness) and I7 (reset recovers).
import { describe, expect, it } from 'vitest';
import { F_INDIRECT, F_NEXT, F_WRITE, HostileRig, KiB, MiB, MODES } from '../support/invariants.js';

describe('hostile §A: descriptor chains', () => {
  for (const { legacy, name } of MODES) {
    describe(name, () => {
      it('T-A1 zero-length descriptors are walked, not mapped; the request completes', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        // [R len 0, W 16, W len 0]: 16 bytes of entropy.
        rig.desc(0, rig.buf(0), 0, F_NEXT, 1);
        rig.desc(1, rig.buf(1), 16, F_WRITE | F_NEXT, 2);
        rig.desc(2, rig.buf(2), 0, F_WRITE, 0);
        rig.publish(0);
        rig.kick();
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 16]]);
        // A chain made only of zero-length descriptors, one of them at an address outside RAM.
        rig.desc(3, rig.buf(3), 0, F_NEXT, 4);
        rig.desc(4, 0xffff_ffff_0000n, 0, F_WRITE | F_NEXT, 5);
        rig.desc(5, rig.buf(5), 0, F_WRITE, 0);
        rig.publish(3);
        rig.kick();
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 16], [3, 0]]);
        // The walk is bounded: a zero-length loop is still a loop.
        expect(rig.lastCalls.at(-1)!.reads).toBeLessThan(200);
        rig.expectLive();
      });

      it('T-A2a self-loop at the head is rejected', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 16, F_WRITE | F_NEXT, 0);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/Looped descriptor/);
      });

      it('T-A2b 2-cycle 0→1→0 is rejected', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 16, F_WRITE | F_NEXT, 1);
        rig.desc(1, rig.buf(1), 16, F_WRITE | F_NEXT, 0);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/Looped descriptor/);
      });

      it('T-A2c a chain of exactly qsize (16) descriptors is legal', () => {
        const rig = new HostileRig({ legacy, num: 16 });
        rig.start();
        for (let i = 0; i < 16; i++) rig.desc(i, rig.buf(0) + 32 * i, 32, F_WRITE | (i < 15 ? F_NEXT : 0), i + 1);
        rig.publish(0);
        rig.kick();
        expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 512]]);
        expect(rig.completions[0]!.ref.writable).toHaveLength(16);
        rig.expectLive();
      });

      it('T-A2d qsize+1 visits through a cycle are rejected, in bounded work', () => {
        const rig = new HostileRig({ legacy, num: 16 });
        rig.start();
        for (let i = 0; i < 16; i++) rig.desc(i, rig.buf(0) + 32 * i, 32, F_WRITE | F_NEXT, (i + 1) % 16);
        rig.publish(0);
        rig.kick();
        expect(rig.lastCalls.at(-1)!.reads).toBeLessThan(17 * 6 + 16);
        rig.expectFatal(/Looped descriptor/);
      });

      it.each([
        ['next = qsize', 8],
        ['next = 0xFFFF', 0xffff],
      ])('T-A3 %s is rejected', (_n, next) => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 16, F_WRITE | F_NEXT, next);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/Desc next is/);
      });

      it('T-A3 next = N\' inside an indirect table of N\' < qsize entries is rejected', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        const table = rig.buf(8);
        for (let k = 0; k < 4; k++) rig.ringDrv.writeDescAt(table + 16 * k, rig.buf(0) + 16 * k, 16, F_WRITE | F_NEXT, k + 1);
        rig.desc(0, table, 16 * 4, F_INDIRECT);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/Desc next is 4/);
      });

      describe('T-A4 huge indirect tables', () => {
        function bigTable(entries: number, ramSize: number, linked: number) {
          const rig = new HostileRig({ legacy, regions: [{ base: 0, size: ramSize }], dataBase: 0x10000 });
          rig.start();
          const table = ramSize / 2;
          // All entries valid writable 16-byte buffers; the first `linked` are chained 0→1→…
          for (let k = 0; k < Math.min(entries, linked + 1); k++) {
            rig.ringDrv.writeDescAt(table + 16 * k, rig.buf(0) + 16 * (k % 64), 16, F_WRITE | (k < linked - 1 ? F_NEXT : 0), k + 1);
          }
          rig.desc(0, table, 16 * entries, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          return rig;
        }
        it('4096 entries, all linked: rejected at the 1024-buffer limit, bounded work', () => {
          const rig = bigTable(4096, 256 * KiB, 4096);
          const call = rig.lastCalls.at(-1)!;
          expect(call.reads).toBeLessThan(1026 * 6 + 64);
          rig.expectFatal(/too many descriptors/);
        });
        it('65536 entries (1 MiB table): rejected, bounded work and memory', () => {
          const rig = bigTable(65536, 4 * MiB, 65536);
          expect(rig.lastCalls.at(-1)!.reads).toBeLessThan(1026 * 6 + 64);
          rig.expectFatal(/too many descriptors/);
        });
        it('65537 entries (over rust-vmm\'s limit): rejected', () => {
          const rig = bigTable(65537, 4 * MiB, 65537);
          rig.expectFatal(/too many descriptors/);
        });
        it('a 4096-entry table holding a short chain is processed without table-sized work', () => {
          const rig = bigTable(4096, 256 * KiB, 3);
          expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 48]]);
          expect(rig.lastCalls.at(-1)!.reads).toBeLessThan(100);
          rig.expectLive();
        });
      });

      describe('T-A5 indirect descriptor validation', () => {
        function rigWithTable(features?: bigint) {
          const rig = new HostileRig({ legacy, features });
          rig.start();
          return { rig, table: rig.buf(8) };
        }
        it('T-A5a table length not a multiple of 16 is rejected', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, rig.buf(0), 16, F_WRITE, 0);
          rig.desc(0, table, 24, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Invalid size for indirect buffer table/);
        });
        it('T-A5b table length 0 is rejected, never an assert', () => {
          const { rig, table } = rigWithTable();
          rig.desc(0, table, 0, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Invalid size for indirect buffer table/);
        });
        it('T-A5c nested INDIRECT inside a table is rejected', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, table + 64, 32, F_INDIRECT, 0);
          rig.ringDrv.writeDescAt(table + 64, rig.buf(0), 16, F_WRITE, 0);
          rig.desc(0, table, 16, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Nested indirect/);
        });
        it('T-A5d INDIRECT|NEXT is rejected (policy)', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, rig.buf(0), 16, F_WRITE, 0);
          rig.desc(0, table, 16, F_INDIRECT | F_NEXT, 1);
          rig.desc(1, rig.buf(1), 16, F_WRITE, 0);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Indirect descriptor with NEXT/);
        });
        it.each([
          ['beyond RAM', 0x1000_0000n],
          ['straddling the end of RAM', BigInt(256 * KiB - 16)],
          ['wrapping 2^64', 0xffff_ffff_ffff_fff0n],
          ['above 2^53', 2n ** 53n + 16n],
        ])('T-A5e table %s is rejected', (_n, addr) => {
          const { rig } = rigWithTable();
          rig.desc(0, addr, 32, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Cannot map indirect buffer/);
        });
        it('T-A5f loop inside the table is rejected', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, rig.buf(0), 16, F_WRITE | F_NEXT, 1);
          rig.ringDrv.writeDescAt(table + 16, rig.buf(1), 16, F_WRITE | F_NEXT, 0);
          rig.desc(0, table, 32, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/Looped descriptor/);
        });
        it('T-A5g INDIRECT without VIRTIO_F_INDIRECT_DESC is an error (policy; also T-E5)', () => {
          const { rig, table } = rigWithTable(0n);
          expect(rig.dev.hasFeature(28)).toBe(false);
          rig.ringDrv.writeDescAt(table, rig.buf(0), 16, F_WRITE, 0);
          rig.desc(0, table, 16, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          rig.expectFatal(/without VIRTIO_F_INDIRECT_DESC/);
        });
        it('T-A5h direct descriptors followed by one INDIRECT are legal', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, rig.buf(1), 16, F_WRITE | F_NEXT, 1);
          rig.ringDrv.writeDescAt(table + 16, rig.buf(2), 16, F_WRITE, 0);
          rig.desc(0, rig.buf(0), 16, F_WRITE | F_NEXT, 1);
          rig.desc(1, table, 32, F_INDIRECT);
          rig.publish(0);
          rig.kick();
          expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 48]]);
          expect(rig.completions[0]!.ref.writable.map(([a]) => a)).toEqual([rig.buf(0), rig.buf(1), rig.buf(2)]);
          rig.expectLive();
        });
        it('T-A5i WRITE on the INDIRECT descriptor itself is ignored', () => {
          const { rig, table } = rigWithTable();
          rig.ringDrv.writeDescAt(table, rig.buf(0), 16, F_WRITE, 0);
          rig.desc(0, table, 16, F_INDIRECT | F_WRITE);
          rig.publish(0);
          rig.kick();
          expect(rig.completions.map((c) => [c.id, c.len])).toEqual([[0, 16]]);
          rig.expectLive();
        });
      });

      it('T-A7 0xFFFF_FFFF + 0x1234_5678 bytes: rejected, nothing allocated', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 0xffff_ffff, F_WRITE | F_NEXT, 1);
        rig.desc(1, rig.buf(1), 0x1234_5678, F_WRITE, 0);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/bogus descriptor/);
      });

      it('T-A7 buffers all in RAM whose total passes 2^32 - 1: rejected by the length check', () => {
        // 1024 writable 4 MiB buffers over one 4 MiB range: each is valid, the sum is 2^32.
        const ram = 4 * MiB + 128 * KiB;
        const rig = new HostileRig({ legacy, regions: [{ base: 0, size: ram }], ringBase: 4 * MiB, dataBase: 4 * MiB + 0x10000 });
        rig.start();
        const table = 4 * MiB + 0x8000;
        for (let k = 0; k < 1024; k++) rig.ringDrv.writeDescAt(table + 16 * k, 0, 4 * MiB, F_WRITE | (k < 1023 ? F_NEXT : 0), k + 1);
        rig.desc(0, table, 16 * 1024, F_INDIRECT);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/longer than 2\^32-1/);
      });

      it('T-A8 readable after writable is rejected', () => {
        const rig = new HostileRig({ legacy });
        rig.start();
        rig.desc(0, rig.buf(0), 16, F_WRITE | F_NEXT, 1);
        rig.desc(1, rig.buf(1), 16, F_NEXT, 2);
        rig.desc(2, rig.buf(2), 16, F_WRITE, 0);
        rig.publish(0);
        rig.kick();
        rig.expectFatal(/Incorrect order/);
      });
    });
  }
});
