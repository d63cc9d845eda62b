// The demo (`npm start`): both transports' variants run to the end with every check passing, and
// the output shows the migration in the middle of disk I/O and the checks that prove nothing was
// lost or duplicated.
import { describe, expect, it } from 'vitest';
import { runDemo } from '../../src/cli/demo.js';

describe('virtio-ts demo', () => {
  for (const legacy of [false, true]) {
    it(`virtio-mmio ${legacy ? 'version 1' : 'version 2'}: every check passes`, async () => {
      const lines: string[] = [];
      const problems = await runDemo((l) => lines.push(l), { legacy });
      const text = lines.join('\n');
      expect(problems, text).toBe(0);
      expect(text).toContain('4 of them are in the disk backend, unfinished');
      expect(text).toMatch(/ok {5}all 6 writes completed once on the destination/);
      expect(text).toMatch(/ok {5}every byte of the disk, read by the guest, equals the model \(1 MiB\)/);
      expect(text).toMatch(/ok {5}KEY_A \(30\) pressed and released/);
      // virtio-net: an ARP exchange on each machine, and a frame delivered before the migration
      // read on the destination (${legacy ? 10 : 12}-byte header on this transport).
      expect(text).toContain(`net: ${legacy ? 10 : 12}-byte header, 4 receive buffers posted`);
      expect(text).toMatch(/ok {5}net: ARP reply: 10\.0\.2\.2 is at 52:55:0a:00:02:02/);
      expect(text).toMatch(/ok {5}net: the frame delivered before the migration is read on the destination: "a frame the guest has not read yet"/);
      expect(text).toMatch(/destination \| virtio-net: queue 1 pop head/);
      expect(text).not.toContain('FAILED');
      // The ring trace is there, from both machines.
      expect(text).toMatch(/source {6}\| virtio-blk: queue 0 pop head/);
      expect(text).toMatch(/destination \| virtio-blk: queue 0 pop head/);
    });
  }

  it('--quiet leaves the ring trace out', async () => {
    const lines: string[] = [];
    expect(await runDemo((l) => lines.push(l), { trace: false })).toBe(0);
    expect(lines.some((l) => l.includes(' | virtio-'))).toBe(false);
  });
});
