import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CpioWriter, S_IFCHR, S_IFDIR, S_IFLNK, S_IFREG, cpioPath } from '../../src/tools/cpio.js';
import { loadV86Inputs } from '../v86/support/inputs.js';

interface Parsed {
  name: string;
  ino: number;
  mode: number;
  nlink: number;
  filesize: number;
  rdevmajor: number;
  rdevminor: number;
  namesize: number;
  data: Uint8Array;
  /** Offset of the header in the archive. */
  at: number;
}

/** An independent reader, strict about everything the kernel's unpacker relies on. */
function parse(bytes: Uint8Array): Parsed[] {
  const text = new TextDecoder('latin1');
  const out: Parsed[] = [];
  let off = 0;
  for (;;) {
    expect(off % 4).toBe(0);
    const h = text.decode(bytes.subarray(off, off + 110));
    expect(h.slice(0, 6)).toBe('070701');
    expect(h.slice(6)).toMatch(/^[0-9A-F]{104}$/);
    const f = (i: number): number => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const namesize = f(11);
    const name = text.decode(bytes.subarray(off + 110, off + 110 + namesize - 1));
    expect(bytes[off + 110 + namesize - 1]).toBe(0);
    let p = off + 110 + namesize;
    while (p % 4 !== 0) expect(bytes[p++]).toBe(0);
    const filesize = f(6);
    const data = bytes.slice(p, p + filesize);
    p += filesize;
    while (p % 4 !== 0) expect(bytes[p++]).toBe(0);
    expect(f(12)).toBe(0); // check field: unused in newc
    out.push({ name, ino: f(0), mode: f(1), nlink: f(4), filesize, rdevmajor: f(9), rdevminor: f(10), namesize, data, at: off });
    off = p;
    if (name === 'TRAILER!!!') break;
  }
  expect(off).toBe(bytes.length);
  return out;
}

function sample(): { writer: CpioWriter; init: string; blob: Uint8Array } {
  const init = '#!/bin/sh\necho hello\n';
  // Lengths 1..7 past a multiple of 4 exercise every padding amount.
  const blob = Uint8Array.from({ length: 4097 }, (_, i) => (i * 7 + 3) & 0xff);
  const writer = new CpioWriter()
    .directory('/dev', 0o755)
    .charDevice('/dev/console', 5, 1, 0o600)
    .file('init', init, 0o755)
    .file('./bin/busybox', blob, 0o755)
    .symlink('bin/sh', 'busybox')
    .file('etc/a', 'a')
    .file('etc/ab', 'ab')
    .file('etc/abc', 'abc')
    .file('etc/abcd', 'abcd')
    .file('etc/empty', new Uint8Array(0));
  return { writer, init, blob };
}

describe('cpio newc writer', () => {
  it('writes headers, names and data with 4-byte padding, parents first, and a trailer', () => {
    const { writer, init, blob } = sample();
    const members = parse(writer.finish());
    expect(members.map((m) => m.name)).toEqual([
      'dev',
      'dev/console',
      'init',
      'bin',
      'bin/busybox',
      'bin/sh',
      'etc',
      'etc/a',
      'etc/ab',
      'etc/abc',
      'etc/abcd',
      'etc/empty',
      'TRAILER!!!',
    ]);
    const by = new Map(members.map((m) => [m.name, m]));
    expect(by.get('dev')!.mode).toBe(S_IFDIR | 0o755);
    expect(by.get('dev')!.nlink).toBe(2);
    expect(by.get('dev/console')).toMatchObject({ mode: S_IFCHR | 0o600, rdevmajor: 5, rdevminor: 1, filesize: 0 });
    expect(by.get('init')!.mode).toBe(S_IFREG | 0o755);
    expect(new TextDecoder().decode(by.get('init')!.data)).toBe(init);
    expect(by.get('bin/busybox')!.data).toEqual(blob);
    expect(by.get('bin/busybox')!.filesize).toBe(4097);
    expect(by.get('bin/sh')!.mode).toBe(S_IFLNK | 0o777);
    expect(new TextDecoder().decode(by.get('bin/sh')!.data)).toBe('busybox');
    expect(by.get('etc/abc')!.namesize).toBe(8);
    // Inodes are distinct so the unpacker never takes two members for hard links of one file.
    const inos = members.slice(0, -1).map((m) => m.ino);
    expect(new Set(inos).size).toBe(inos.length);
    expect(by.get('TRAILER!!!')).toMatchObject({ ino: 0, mode: 0, nlink: 1, filesize: 0 });
  });

  it('encodes the first header byte for byte', () => {
    const bytes = new CpioWriter().file('x', 'hi', 0o644).finish();
    const header = new TextDecoder().decode(bytes.subarray(0, 110));
    expect(header).toBe(
      '070701' +
        '00000001' + // ino
        '000081A4' + // mode: S_IFREG | 0644
        '00000000' + // uid
        '00000000' + // gid
        '00000001' + // nlink
        '00000000' + // mtime
        '00000002' + // filesize
        '00000000' + // devmajor
        '00000000' + // devminor
        '00000000' + // rdevmajor
        '00000000' + // rdevminor
        '00000002' + // namesize: "x" and its NUL
        '00000000', // check
    );
    // 110 + 2 = 112 is already aligned; then "hi" and two bytes of padding.
    expect(Array.from(bytes.subarray(110, 120))).toEqual([0x78, 0, 0x68, 0x69, 0, 0, 0x30, 0x37, 0x30, 0x37]);
  });

  it('lets an implicit parent be given its own mode, and refuses duplicates, "..", and files as parents', () => {
    const w = new CpioWriter().file('tmp/x', 'x').directory('tmp', 0o1777);
    expect(parse(w.finish())[0]).toMatchObject({ name: 'tmp', mode: S_IFDIR | 0o1777 });
    expect(() => new CpioWriter().file('a', '1').file('/a', '2')).toThrow(/added twice/);
    expect(() => cpioPath('a/../b')).toThrow(/\.\./);
    expect(() => new CpioWriter().file('a', '1').file('a/b', '2')).toThrow(/not a directory/);
  });
});

describe('cpio newc writer, read back by a real cpio', () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-cpio-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  // GNU cpio when installed, otherwise busybox's cpio from the fetched busybox-static package.
  function cpio(args: string[], cwd: string): string {
    const gnu = spawnSync('cpio', ['--version'], { encoding: 'utf8' });
    const [cmd, pre] = gnu.status === 0 ? ['cpio', []] : [loadV86Inputs().busybox, ['cpio']];
    const r = spawnSync(cmd, [...pre, ...args], { cwd, encoding: 'utf8' });
    expect(r.error).toBeUndefined();
    expect(r.status, r.stderr).toBe(0);
    return r.stdout;
  }

  it('lists every member with its type, and extracts files and links with their contents', () => {
    const { writer, init, blob } = sample();
    const archive = join(dir, 'sample.cpio');
    writeFileSync(archive, writer.finish());

    const names = cpio(['-t', '-F', archive], dir).trim().split('\n');
    expect(names).toEqual(writer.list().map((m) => m.path));

    const long = cpio(['-t', '-v', '-F', archive], dir);
    // busybox's listing omits device numbers (GNU cpio prints "5, 1"); the parser above checks them.
    expect(long).toMatch(/^crw------- .*dev\/console$/m);
    expect(long).toMatch(/^lrwxrwxrwx .*bin\/sh -> busybox$/m);
    expect(long).toMatch(/^-rwxr-xr-x .*4097 .*bin\/busybox$/m);
    expect(long).toMatch(/^drwxr-xr-x .*etc$/m);

    // Extract everything but the device node (mknod needs privileges the CI may not have).
    const out = join(dir, 'x');
    spawnSync('mkdir', ['-p', out]);
    cpio(['-i', '-d', '-F', archive, 'init', 'bin', 'bin/*', 'etc', 'etc/*'], out);
    expect(readFileSync(join(out, 'init'), 'utf8')).toBe(init);
    expect(statSync(join(out, 'init')).mode & 0o777).toBe(0o755);
    expect(new Uint8Array(readFileSync(join(out, 'bin/busybox')))).toEqual(blob);
    expect(readlinkSync(join(out, 'bin/sh'))).toBe('busybox');
    expect(readFileSync(join(out, 'etc/abcd'), 'utf8')).toBe('abcd');
    expect(statSync(join(out, 'etc/empty')).size).toBe(0);
  });
});
