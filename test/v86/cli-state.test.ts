// `virtio-ts v86 --save-state / --restore-state`: the command boots Debian's kernel with the test
// guest, quits once init has reported the boot (writing a snapshot), and a second run starts from
// that snapshot: the guest goes on from there (its rng test, VT-DONE) without booting again.
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { runV86, type V86CliIo } from '../../src/cli/v86.js';
import { BASE_CMDLINE } from './support/boot.js';
import { buildInitramfs } from './support/initramfs.js';
import { loadV86Inputs } from './support/inputs.js';

const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-v86-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Run the command with a silent stdin; what it printed, and its status. */
async function run(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: V86CliIo = {
    stdin: new PassThrough(),
    stdout: { write: (d: Uint8Array | string) => void (out += typeof d === 'string' ? d : Buffer.from(d).toString('latin1')) },
    stderr: { write: (d: string) => void (err += d) },
  };
  const code = await runV86(args, io);
  return { code, out, err };
}

describe('virtio-ts v86 snapshots from the command line', () => {
  it('quits with a snapshot, and a second run goes on from it', async () => {
    const inputs = loadV86Inputs();
    const initrd = join(dir, 'initrd.cpio');
    writeFileSync(initrd, buildInitramfs({ inputs }).image);
    const state = join(dir, 'machine.v86state');
    const common = ['--kernel', inputs.kernel, '--initrd', initrd, '--bios', inputs.bios, '--memory', '128', '--append', `${BASE_CMDLINE} vt.tests=rng`, '--timeout', '200', '--packed'];

    const first = await run([...common, '--exit-on', 'VT-RESULT boot ok', '--save-state', state]);
    expect(first.code, first.err).toBe(0);
    expect(first.out).toContain('VT-RESULT boot ok');
    expect(first.out).not.toContain('VT-DONE');
    expect(first.err).toMatch(/snapshot written to .*machine\.v86state \(\d+ bytes\)/);
    expect(statSync(state).size).toBeGreaterThan(1 << 20);

    const second = await run([...common, '--restore-state', state, '--exit-on', 'VT-DONE']);
    expect(second.code, second.err).toBe(0);
    expect(second.err).toContain(`restored ${state}`);
    // No second boot: the kernel's banner and init's first line do not come again.
    expect(second.out).not.toContain('VT-RESULT boot ok');
    expect(second.out).toMatch(/VT-RESULT rng ok/);
    // --packed: Linux took the rng's packed ring (the guest's sysfs says so).
    expect(second.out).toMatch(/VT-INFO virtio [^\n]*test=rng [^\n]*ring=packed/);
    expect(second.out).toContain('VT-DONE');

    // A damaged snapshot is refused, with v86's or our message, before the machine runs.
    const bad = join(dir, 'bad.v86state');
    writeFileSync(bad, new Uint8Array(64));
    const third = await run([...common, '--restore-state', bad]);
    expect(third.code).toBe(1);
    expect(third.err).toMatch(/--restore-state .*bad\.v86state: /);
  }, 600_000);
});
