// The chardevs of virtio-serial ports on their own (src/devices/console/chardev.ts and
// backends/node.ts, opened from -chardev by src/machine/chardev.ts): reads bounded by what the
// frontend can take and by CHR_READ_BUF_LEN, opened/closed events, the socket client, the file
// (created, truncated, appended), a stream's end, and QEMU's wording of open failures.
import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { CHR_READ_BUF_LEN, MemoryChardev, type CharEvent, type CharFrontend } from '../../src/devices/console/chardev.js';
import { FileChardev, SocketChardev, StreamChardev } from '../../src/devices/console/backends/node.js';
import { openDeviceChardev } from '../../src/machine/chardev.js';
import { parseQemuCommandLine } from '../../src/machine/cmdline.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A frontend that takes up to `room` bytes, recording reads and events. */
function frontend(room: number): CharFrontend & { reads: number[]; events: CharEvent[]; room: number; got: number[] } {
  const fe = {
    reads: [] as number[],
    events: [] as CharEvent[],
    got: [] as number[],
    room,
    canRead: () => fe.room,
    read: (d: Uint8Array) => {
      fe.reads.push(d.length);
      fe.got.push(...d);
      fe.room -= d.length;
      return d.length;
    },
    event: (e: CharEvent) => void fe.events.push(e),
  };
  return fe;
}

describe('chardevs', () => {
  it('reads are at most what the frontend can take and at most 4096 bytes; the rest waits', () => {
    const pipe = new MemoryChardev('p', { inputLimit: 20_000 });
    const fe = frontend(5000);
    pipe.attach(fe);
    expect(pipe.send(new Uint8Array(10_000).fill(7))).toBe(10_000);
    expect(fe.reads).toEqual([CHR_READ_BUF_LEN, 904]);
    expect(pipe.pendingInput).toBe(5000);
    fe.room = 100_000;
    pipe.acceptInput();
    expect(fe.reads).toEqual([4096, 904, 4096, 904]);
    expect(pipe.pendingInput).toBe(0);
    // Detached: nothing moves, nothing is lost.
    pipe.attach(undefined);
    pipe.send('abc');
    expect(pipe.pendingInput).toBe(3);
    pipe.attach(fe);
    expect(fe.got.slice(-3)).toEqual([97, 98, 99]);
  });

  it('opened and closed events reach the frontend; a closed pipe swallows output as a disconnected socket', () => {
    const pipe = new MemoryChardev('p', { opened: false });
    const fe = frontend(0);
    pipe.attach(fe);
    pipe.setConnected(true);
    pipe.setConnected(false);
    expect(fe.events).toEqual(['opened', 'closed']);
    expect(pipe.write(new Uint8Array(5))).toBe(5);
    expect(pipe.outputPending).toBe(0);
  });

  it('a socket client (server=off) connects, carries both ways and sees the peer go', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vts-chr-'));
    try {
      const path = join(dir, 's.sock');
      const peers: import('node:net').Socket[] = [];
      const server = createServer((s) => peers.push(s));
      await new Promise<void>((r) => server.listen(path, () => r()));
      const chr = await openDeviceChardev(parseQemuCommandLine(['-chardev', `socket,id=s,path=${path}`]).chardevs[0]!);
      expect(chr).toBeInstanceOf(SocketChardev);
      expect(chr.opened).toBe(true);
      const fe = frontend(100);
      chr.attach(fe);
      await sleep(20);
      peers[0]!.write('hi');
      await sleep(20);
      expect(fe.got).toEqual([104, 105]);
      expect(chr.write(new TextEncoder().encode('yo'))).toBe(2);
      const got = await new Promise<string>((r) => peers[0]!.once('data', (d) => r(String(d))));
      expect(got).toBe('yo');
      peers[0]!.destroy();
      await sleep(30);
      expect(fe.events).toEqual(['closed']);
      chr.close();
      server.close();
      await expect(openDeviceChardev(parseQemuCommandLine(['-chardev', `socket,id=t,path=${join(dir, 'none')}`]).chardevs[0]!)).rejects.toThrow(`Failed to connect to '${join(dir, 'none')}': No such file or directory`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a file is created or truncated, or appended to; a bad path fails as QEMU words it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vts-chr-'));
    try {
      const path = join(dir, 'out');
      writeFileSync(path, 'old');
      const f = await openDeviceChardev(parseQemuCommandLine(['-chardev', `file,id=f,path=${path}`]).chardevs[0]!);
      expect(f).toBeInstanceOf(FileChardev);
      expect(f.write(new TextEncoder().encode('new'))).toBe(3);
      f.close();
      expect(readFileSync(path, 'utf8')).toBe('new');
      const g = await openDeviceChardev(parseQemuCommandLine(['-chardev', `file,id=g,path=${path},append=on`]).chardevs[0]!);
      g.write(new TextEncoder().encode('+more'));
      g.close();
      expect(readFileSync(path, 'utf8')).toBe('new+more');
      await expect(openDeviceChardev(parseQemuCommandLine(['-chardev', 'file,id=h,path=/nonexistent/x']).chardevs[0]!)).rejects.toThrow("Could not open '/nonexistent/x': No such file or directory");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a stream: its end closes the host side once its bytes were delivered', async () => {
    const input = new PassThrough();
    const output = new PassThrough();
    const chr = new StreamChardev('s', input, output);
    const fe = frontend(2);
    chr.attach(fe);
    input.end('abcd');
    await sleep(10);
    expect(fe.got).toEqual([97, 98]);
    expect(fe.events).toEqual([]);
    fe.room = 10;
    chr.acceptInput();
    expect(fe.got).toEqual([97, 98, 99, 100]);
    expect(fe.events).toEqual(['closed']);
    expect(chr.write(new TextEncoder().encode('out'))).toBe(3);
    expect(String(output.read())).toBe('out');
  });
});
