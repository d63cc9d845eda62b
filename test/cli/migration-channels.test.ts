// The Node migration channels (src/cli/migration-channels.ts) with real child processes: exec:
// in both directions, the exit status deciding success, a broken pipe, the timeout and cancel
// ending the command's whole process group by its id, and file: (QEMU 8.x syntax, opt-in).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeMigrationChannels } from '../../src/cli/migration-channels.js';
import { alive, waitFor } from '../support/process.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-chan-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

const quiet = () => createNodeMigrationChannels({ onStderr: () => undefined });
const bytes = (n: number, seed = 7) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);
/** Byte equality without a deep-equality walk (which takes seconds on a megabyte). */
const same = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(a, b) === 0;

describe('exec: channels', () => {
  it('outgoing: the stream is the command\'s stdin; incoming: its stdout (1 MiB, byte for byte)', async () => {
    const ch = quiet();
    const file = join(dir, 'out.mig');
    const data = bytes(1 << 20);
    await ch.write(`exec:cat > '${file}'`, data);
    expect(same(readFileSync(file), data)).toBe(true);
    expect(same(await ch.read(`exec:cat '${file}'`), data)).toBe(true);
    expect(ch.check!(`exec:cat > '${file}'`, 'outgoing')).toBeUndefined();
  });

  it('completes only once the command has exited: a slow writer is waited for', async () => {
    const ch = quiet();
    const file = join(dir, 'slow.mig');
    await ch.write(`exec:cat > /dev/null; sleep 0.2; echo done > '${file}'`, bytes(10));
    expect(readFileSync(file, 'utf8')).toBe('done\n');
  });

  it('a command that fails after reading everything fails the transfer (QEMU would ignore its status)', async () => {
    const ch = quiet();
    await expect(ch.write('exec:cat > /dev/null; exit 3', bytes(100))).rejects.toThrow('Unable to write to command: it exited with status 3');
    await expect(ch.read('exec:echo partial; exit 2')).rejects.toThrow('Unable to read from command: it exited with status 2');
  });

  it('a command that does not read its input: "Broken pipe", as QEMU words it', async () => {
    const ch = quiet();
    // Larger than a pipe buffer, so the write meets the closed pipe.
    await expect(ch.write(`exec:cat > '${join(dir, 'no/such/dir/x')}'`, bytes(1 << 20))).rejects.toThrow('Unable to write to command: Broken pipe');
  });

  it("the command's stderr is passed on", async () => {
    let err = '';
    const ch = createNodeMigrationChannels({ onStderr: (t) => (err += t) });
    await ch.write('exec:cat > /dev/null; echo oops >&2', bytes(4));
    expect(err).toBe('oops\n');
  });

  it('a command that outlives the timeout is ended with its children, by process group id', async () => {
    const pidFile = join(dir, 'pids');
    const ch = createNodeMigrationChannels({ onStderr: () => undefined, timeoutMs: 300 });
    const t0 = Date.now();
    // The shell starts a child (sleep) and records both ids.
    await expect(ch.read(`exec:sleep 30 & echo $$ $! > '${pidFile}'; wait`)).rejects.toThrow('Unable to read from command: timed out after 300 ms');
    expect(Date.now() - t0).toBeLessThan(5000);
    const pids = readFileSync(pidFile, 'utf8').trim().split(' ').map(Number);
    expect(pids).toHaveLength(2);
    for (const pid of pids) expect(await waitFor(() => !alive(pid))).toBe(true);
  });

  it('an aborted transfer (migrate_cancel) ends the command and rejects', async () => {
    const pidFile = join(dir, 'cancel-pid');
    const ch = quiet();
    const abort = new AbortController();
    const p = ch.write(`exec:echo $$ > '${pidFile}'; sleep 30`, bytes(10), abort.signal);
    expect(await waitFor(() => existsSync(pidFile) && readFileSync(pidFile, 'utf8').endsWith('\n'))).toBe(true);
    abort.abort();
    await expect(p).rejects.toThrow('migration cancelled');
    const pid = Number(readFileSync(pidFile, 'utf8'));
    expect(await waitFor(() => !alive(pid))).toBe(true);
    // Already aborted: nothing is started.
    await expect(ch.read('exec:echo hi', abort.signal)).rejects.toThrow('migration cancelled');
  });

  it('an incoming command may not produce more than maxBytes', async () => {
    const ch = createNodeMigrationChannels({ onStderr: () => undefined, maxBytes: 1000 });
    await expect(ch.read('exec:head -c 5000 /dev/zero')).rejects.toThrow('Unable to read from command: more than 1000 bytes');
  });
});

describe('URIs the channels refuse, and file:', () => {
  it('sockets and fds are not supported; file: with offset= (QEMU 8.x) is refused', () => {
    const ch = quiet();
    expect(ch.check!('tcp:localhost:4444', 'outgoing')).toBe('virtio-ts-qemu does not support tcp: migration (use exec:)');
    expect(ch.check!('unix:/tmp/s', 'incoming')).toBe('virtio-ts-qemu does not support unix: migration (use exec:)');
    expect(ch.check!('fd:3', 'incoming')).toBe('virtio-ts-qemu does not support fd: migration (use exec:)');
    expect(ch.check!('file:/tmp/x,offset=4096', 'outgoing')).toBe("virtio-ts does not support 'offset' in file: migration URIs");
    expect(ch.check!('file:/tmp/x', 'outgoing')).toBeUndefined();
  });

  it('file:PATH writes and reads the file; a missing one is an error naming it', async () => {
    const ch = quiet();
    const file = join(dir, 'f.mig');
    await ch.write(`file:${file}`, bytes(3000));
    expect(await ch.read(`file:${file}`)).toEqual(bytes(3000));
    writeFileSync(file, 'x');
    expect(await ch.read(`file:${file}`)).toEqual(new Uint8Array([0x78]));
    await expect(ch.read(`file:${join(dir, 'missing')}`)).rejects.toThrow(`Could not open '${join(dir, 'missing')}': No such file or directory`);
  });
});
