// virtio-serial migration between QEMU 7.2 and virtio-ts in every direction (QEMU → QEMU as the
// reference for the scripts, QEMU → ours, ours → QEMU, ours → ours), with the scenarios of
// console-scenarios.ts; and the virtio-console section ours writes against QEMU's, byte by byte,
// for the scenarios whose state is a function of the script.
import { describe, expect, it } from 'vitest';
import { qemuOrPolicy } from '../driver/impls.js';
import { compareStreams, formatStreamComparison } from './blob-compare.js';
import { CONSOLE_DETERMINISTIC, CONSOLE_THROTTLED } from './console-scenarios.js';
import { runMigrationScenario } from './harness.js';
import { DIRECTIONS, captureBoth, migrationEnds } from './ends.js';
import { inspectStream } from '../../src/migration/inspect.js';

if (qemuOrPolicy('virtio-console migration interop between QEMU 7.2 and virtio-ts')) {
  const ends = migrationEnds();

  for (const dir of DIRECTIONS) {
    describe(`virtio-console migration ${dir.join(' → ')}`, () => {
      for (const s of [...CONSOLE_DETERMINISTIC, ...CONSOLE_THROTTLED]) {
        it(s.name, async () => {
          // QEMU 7.2 as a destination of a popped element races with itself: the device's load
          // schedules the flush (a bottom half) before virtio_load has read the virtio/*
          // subsections and rebuilt the ring indices, and when the incoming coroutine waits for
          // stream data in between, the flush pops from a half-loaded queue: "Virtqueue size
          // exceeded", NEEDS_RESET (measured: about one load in five). Those runs are repeated;
          // any other failure fails at once (docs/migration-interop.md).
          const attempts = dir[1] === 'qemu' && CONSOLE_THROTTLED.includes(s) ? 6 : 1;
          for (let a = 1; ; a++) {
            try {
              const r = await runMigrationScenario(s, dir.map((i) => ends[i]));
              expect(r.hops.map((h) => `${h.from}→${h.to}`)).toEqual([`${dir[0]}→${dir[1]}`]);
              return;
            } catch (e) {
              const raced = /status: 0x0f → 0x4f/.test((e as Error).message);
              if (!raced || a >= attempts) throw e;
            }
          }
        }, 60_000);
      }
    });
  }

  describe('virtio-console section: ours against QEMU for the same script', () => {
    for (const s of CONSOLE_DETERMINISTIC) {
      it(s.name, async () => {
        const [q, o] = await captureBoth(s, ends);
        const c = compareStreams(q.hops[0]!.stream, o.hops[0]!.stream, ['qemu', 'ours']);
        expect(c.undeclared, formatStreamComparison(c)).toEqual([]);
        expect(c.sections.a?.idstr).toMatch(/\/virtio-console$/);
        // `virtio-ts inspect` decodes QEMU's device state field by field.
        const sec = inspectStream(q.hops[0]!.stream).sections.find((x) => x.idstr.endsWith('/virtio-console'))!;
        const dev = sec.virtio!.fields.find((f) => f.name === 'virtio-console')!;
        expect(dev.children!.find((f) => f.name === 'nr_active_ports')?.value).toBe(3);
      }, 30_000);
    }
  });
}
