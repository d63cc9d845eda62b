// virtio-ts-qemu's own migration behaviour where it deliberately differs from QEMU 7.2 or where
// QEMU is not needed: a source whose exec: command fails, a migration from one virtio-ts-qemu to
// another through a file, and quit ending a command still running. (The comparison with QEMU is
// test/cli/migration-qmp.test.ts.)
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, waitFor } from '../support/process.js';
import { Workdir } from '../support/qmp-process.js';

const RNG = ['-device', 'virtio-rng-pci,ioeventfd=off'];
const EVENTS_ON = { execute: 'migrate-set-capabilities', arguments: { capabilities: [{ capability: 'events', state: true }] } };
const events = (lines: string[]) => lines.filter((l) => l.includes('"event"')).map((l) => (JSON.parse(l) as { event: string; data?: unknown }));

let w: Workdir;
beforeAll(async () => {
  w = new Workdir();
  await w.buildOurs();
}, 60_000);
afterAll(async () => {
  await w?.dispose();
});

describe('virtio-ts-qemu migration', () => {
  it('an exec: command that exits non-zero fails the migration, is reported on stderr, and the VM runs again', async () => {
    const p = await w.start('ours', 'pc', RNG);
    await p.cmd(EVENTS_ON);
    const lines = await p.cmd({ execute: 'migrate', arguments: { uri: 'exec:cat > /dev/null; exit 3' } });
    const failed = (l: string) => l.includes('"status": "failed"');
    if (!lines.some(failed)) await p.waitLine(failed);
    await new Promise((r) => setTimeout(r, 50));
    lines.push(...p.take());
    expect(events(lines).map((e) => e.event + (e.data ? JSON.stringify(e.data) : ''))).toEqual([
      'MIGRATION{"status":"setup"}',
      'MIGRATION_PASS{"pass":1}',
      'MIGRATION{"status":"active"}',
      'STOP',
      'MIGRATION_PASS{"pass":2}',
      'MIGRATION{"status":"failed"}',
      'RESUME',
    ]);
    expect(await p.cmd({ execute: 'query-migrate' })).toEqual(['{"return": {"status": "failed", "error-desc": "Unable to write to command: it exited with status 3"}}']);
    expect(await p.cmd({ execute: 'query-status' })).toEqual(['{"return": {"status": "running", "singlestep": false, "running": true}}']);
    expect(p.stderr).toBe('virtio-ts-qemu: Unable to write to command: it exited with status 3\n');
    await p.kill();
  });

  it('from one virtio-ts-qemu to another through a file: the paused source arrives paused', async () => {
    const file = w.path('ours-to-ours.mig');
    const src = await w.start('ours', 'pc', RNG);
    await src.cmd({ execute: 'stop' });
    await src.cmd({ execute: 'migrate', arguments: { uri: `exec:cat > '${file}'` } });
    for (let i = 0; i < 100 && !(await src.cmd({ execute: 'query-migrate' }))[0]!.includes('completed'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await src.cmd({ execute: 'query-status' })).toEqual(['{"return": {"status": "postmigrate", "singlestep": false, "running": false}}']);
    await src.kill();
    expect(readFileSync(file).subarray(0, 4).toString('latin1')).toBe('QEVM');

    const dst = await w.start('ours', 'pc', [...RNG, '-incoming', `exec:cat '${file}'`]);
    for (let i = 0; i < 100 && !(await dst.cmd({ execute: 'query-migrate' }))[0]!.includes('completed'); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await dst.cmd({ execute: 'query-status' })).toEqual(['{"return": {"status": "paused", "singlestep": false, "running": false}}']);
    await dst.kill();
  });

  it('an incoming exec: command that fails ends the destination with status 1', async () => {
    const p = await w.start('ours', 'pc', [...RNG, '-incoming', 'defer']);
    p.send({ execute: 'migrate-incoming', arguments: { uri: 'exec:echo nope >&2; exit 4' } });
    await p.exited;
    expect(p.exit).toEqual({ code: 1, signal: null });
    expect(p.stderr).toBe('nope\nvirtio-ts-qemu: Unable to read from command: it exited with status 4\nvirtio-ts-qemu: load of migration failed: Input/output error\n');
  });

  it('quit during a migration ends its command (by process group) before exiting', async () => {
    const pidFile = w.path('quit-pid');
    const p = await w.start('ours', 'pc', RNG);
    await p.cmd({ execute: 'migrate', arguments: { uri: `exec:echo $$ > '${pidFile}'; sleep 30` } });
    for (let i = 0; i < 100 && !(existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n')); i++) await new Promise((r) => setTimeout(r, 20));
    const pid = Number(readFileSync(pidFile, 'utf8'));
    p.send({ execute: 'quit' });
    await p.exited;
    expect(p.exit).toEqual({ code: 0, signal: null });
    expect(await waitFor(() => !alive(pid), 2000)).toBe(true);
  });
});
