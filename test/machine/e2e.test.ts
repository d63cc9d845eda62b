// virtio-ts-qemu end to end: the program is started exactly as a harness starts QEMU, and driven
// with raw qtest lines and QMP JSON over its sockets or stdio. The program under test is bundled
// from the current sources into a temporary directory (so the test never runs a stale dist/);
// the bin/ launcher is checked against the built dist/ separately. Every spawned process has a
// deadline and is killed by its own PID.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string;
let program: string;
const children = new Set<ChildProcess>();

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-e2e-'));
  program = join(dir, 'qemu.mjs');
  await esbuild.build({ entryPoints: [join(ROOT, 'src/cli/qemu-main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: program, logLevel: 'error' });
  const fw = new Uint8Array(0x10000).fill(0xf4);
  fw.set([0xfa, 0xf4, 0xeb, 0xfd], 0xfff0);
  writeFileSync(join(dir, 'halt.bin'), fw);
});

afterEach(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.clear();
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn with a hard deadline; the process is killed by its PID when the deadline passes. */
function start(args: string[], opts: { stdio?: boolean; deadlineMs?: number } = {}): Proc {
  const child = spawn(process.execPath, [program, ...args], { stdio: [opts.stdio ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
  children.add(child);
  let err = '';
  let out = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  if (!opts.stdio) child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  const deadline = setTimeout(() => child.kill('SIGKILL'), opts.deadlineMs ?? 15_000);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      clearTimeout(deadline);
      resolve({ code, signal });
    }),
  );
  return { child, stderr: () => err, stdout: () => out, exited };
}

/** Listen on a unix socket (as libqtest does) and resolve with the first connection. */
function listen(path: string): { server: Server; conn: Promise<Socket> } {
  const server = createServer();
  const conn = new Promise<Socket>((resolve) => server.once('connection', resolve));
  server.listen(path);
  return { server, conn };
}

/** A line reader: `next()` resolves with the next line (without its terminator). */
function lineReader(stream: NodeJS.ReadableStream, eol = '\n') {
  let buf = '';
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  stream.setEncoding?.('latin1');
  stream.on('data', (d: string) => {
    buf += d;
    let i;
    while ((i = buf.indexOf(eol)) >= 0) {
      const l = buf.slice(0, i);
      buf = buf.slice(i + eol.length);
      const w = waiters.shift();
      if (w) w(l);
      else lines.push(l);
    }
  });
  return {
    next(timeoutMs = 5000): Promise<string> {
      const l = lines.shift();
      if (l !== undefined) return Promise.resolve(l);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('no line within the deadline')), timeoutMs);
        waiters.push((x) => {
          clearTimeout(t);
          resolve(x);
        });
      });
    },
  };
}

/** qtest over a stream: send a line, collect IRQ lines until the reply. */
function qtest(write: (s: string) => void, reader: ReturnType<typeof lineReader>) {
  const irqs: string[] = [];
  return {
    irqs,
    async cmd(line: string): Promise<string> {
      write(line + '\n');
      for (;;) {
        const l = await reader.next();
        if (l.startsWith('IRQ ')) irqs.push(l);
        else return l;
      }
    },
  };
}

function qmp(sock: Socket) {
  const reader = lineReader(sock, '\r\n');
  return {
    reader,
    async exec(obj: unknown): Promise<Record<string, unknown>> {
      sock.write(JSON.stringify(obj) + '\n');
      for (;;) {
        const m = JSON.parse(await reader.next()) as Record<string, unknown>;
        if (!('event' in m)) return m;
      }
    },
  };
}

const BASE = () => ['-accel', 'tcg', '-bios', join(dir, 'halt.bin'), '-nodefaults', '-display', 'none'];

describe('virtio-ts-qemu, started as QEMU is', () => {
  it('microvm + virtio-rng-device: raw qtest lines complete a request, with IRQs on the second IOAPIC; QMP quit exits 0', async () => {
    const qs = listen(join(dir, 'q1.sock'));
    const ms = listen(join(dir, 'm1.sock'));
    const p = start([...BASE(), '-qtest', `unix:${join(dir, 'q1.sock')}`, '-qtest-log', 'none', '-qmp', `unix:${join(dir, 'm1.sock')}`, '-machine', 'microvm', '-m', '16M', '-device', 'virtio-rng-device']);
    const [qsock, msock] = await Promise.all([qs.conn, ms.conn]);
    qs.server.close();
    ms.server.close();
    const q = qtest((s) => qsock.write(s), lineReader(qsock));
    const m = qmp(msock);
    const greeting = JSON.parse(await m.reader.next()) as { QMP: { version: { qemu: { major: number; minor: number } } } };
    expect(greeting.QMP.version.qemu).toMatchObject({ major: 7, minor: 2 });
    expect(await m.exec({ execute: 'qmp_capabilities' })).toEqual({ return: {} });
    const list = (await m.exec({ execute: 'qom-list', arguments: { path: '/machine/unattached' } })).return as { name: string; type: string }[];
    const ioapic2 = list.find((e) => e.type === 'child<ioapic>')!.name;
    expect(ioapic2).toBe('device[3]');

    expect(await q.cmd(`irq_intercept_in /machine/unattached/${ioapic2}`)).toBe('OK');
    const base = 0xfeb00000 + 0x200 * 23;
    const reg = (o: number) => `0x${(base + o).toString(16)}`;
    expect(await q.cmd(`readl ${reg(0)}`)).toBe('OK 0x0000000074726976');
    expect(await q.cmd(`readl ${reg(4)}`)).toBe('OK 0x0000000000000001');
    expect(await q.cmd(`readl ${reg(8)}`)).toBe('OK 0x0000000000000004');
    expect(await q.cmd(`readl 0xfeb00008`)).toBe('OK 0x0000000000000000');
    for (const [o, v] of [[0x70, 0], [0x70, 1], [0x70, 3], [0x20, 0], [0x28, 4096], [0x30, 0]] as const) expect(await q.cmd(`writel ${reg(o)} ${v}`)).toBe('OK');
    expect(await q.cmd(`readl ${reg(0x34)}`)).toBe('OK 0x0000000000000400');
    for (const [o, v] of [[0x38, 8], [0x3c, 4096], [0x40, 0x10], [0x70, 7]] as const) expect(await q.cmd(`writel ${reg(o)} ${v}`)).toBe('OK');
    const desc = Buffer.alloc(16);
    desc.writeBigUInt64LE(0x20000n, 0);
    desc.writeUInt32LE(16, 8);
    desc.writeUInt16LE(2, 12);
    expect(await q.cmd(`b64write 0x10000 16 ${desc.toString('base64')}`)).toBe('OK');
    expect(await q.cmd('writew 0x10084 0')).toBe('OK');
    expect(await q.cmd('writew 0x10082 1')).toBe('OK');
    expect(await q.cmd(`writel ${reg(0x50)} 0`)).toBe('OK');
    let used = '';
    for (let i = 0; i < 100 && used !== 'OK 0x0000000000000001'; i++) {
      used = await q.cmd('readw 0x11002');
      if (used !== 'OK 0x0000000000000001') await q.cmd('clock_step 100');
    }
    expect(used).toBe('OK 0x0000000000000001');
    expect(await q.cmd('readl 0x11008')).toBe('OK 0x0000000000000010');
    expect(q.irqs).toEqual(['IRQ raise 23']);
    expect(await q.cmd(`readl ${reg(0x60)}`)).toBe('OK 0x0000000000000001');
    expect(await q.cmd(`writel ${reg(0x64)} 1`)).toBe('OK');
    expect(q.irqs).toEqual(['IRQ raise 23', 'IRQ lower 23']);
    // Malformed input: FAIL, and the server goes on.
    expect(await q.cmd('readl 0x10\r')).toBe("FAIL invalid number '0x10\\r'");
    expect(await q.cmd('readl  0')).toBe("FAIL invalid number ''");
    expect(await q.cmd('read 0 0')).toBe('FAIL read of length 0');
    expect(await q.cmd('read 0 0xffffffffffffffff')).toMatch(/^FAIL length 18446744073709551615 is above the limit/);
    expect(await q.cmd('readl 010')).toBe('OK 0x0000000000000000');
    expect(await q.cmd('clock_step 1000')).toMatch(/^OK \d+$/);

    expect(await m.exec({ execute: 'quit' })).toEqual({ return: {} });
    expect(await p.exited).toEqual({ code: 0, signal: null });
    qsock.destroy();
    msock.destroy();
  });

  it("libqtest's command line (-chardev socket + -mon mode=control, -accel qtest) on pc, SIGTERM exits 0", async () => {
    const qs = listen(join(dir, 'q2.sock'));
    const ms = listen(join(dir, 'm2.sock'));
    const p = start(['-qtest', `unix:${join(dir, 'q2.sock')}`, '-qtest-log', '/dev/null', '-chardev', `socket,path=${join(dir, 'm2.sock')},id=char0`, '-mon', 'chardev=char0,mode=control', '-display', 'none', '-machine', 'pc', '-nodefaults', '-device', 'virtio-rng-pci,addr=04.0', '-accel', 'qtest']);
    const [qsock, msock] = await Promise.all([qs.conn, ms.conn]);
    qs.server.close();
    ms.server.close();
    const q = qtest((s) => qsock.write(s), lineReader(qsock));
    const m = qmp(msock);
    await m.reader.next();
    await m.exec({ execute: 'qmp_capabilities' });
    expect(await q.cmd('outl 0xcf8 0x80002000')).toBe('OK');
    expect(await q.cmd('inl 0xcfc')).toBe('OK 0x10051af4');
    expect(await q.cmd('outl 0xcf8 0x80000000')).toBe('OK');
    expect(await q.cmd('inl 0xcfc')).toBe('OK 0x12378086');
    expect(await q.cmd('inb 0x80')).toBe('OK 0x00ff');
    expect(await q.cmd('clock_step')).toMatch(/^OK \d+$/);
    expect((await m.exec({ execute: 'query-status' })).return).toEqual({ status: 'running', singlestep: false, running: true });
    p.child.kill('SIGTERM');
    expect(await p.exited).toEqual({ code: 0, signal: null });
    qsock.destroy();
    msock.destroy();
  });

  it('-qtest stdio: replies on stdout, keeps running after the qtest client goes away', async () => {
    const p = start([...BASE(), '-qtest', 'stdio', '-qtest-log', 'none', '-M', 'pc', '-m', '16M', '-S'], { stdio: true });
    const q = qtest((s) => p.child.stdin!.write(s), lineReader(p.child.stdout!));
    expect(await q.cmd('endianness')).toBe('OK little');
    expect(await q.cmd('writel 0x1000 0x12345678')).toBe('OK');
    expect(await q.cmd('read 0x1000 4')).toBe('OK 0x78563412');
    expect(await q.cmd('readl 0xffff0')).toBe('OK 0x00000000fdebf4fa'); // -bios is loaded
    p.child.stdin!.end();
    const early = await Promise.race([p.exited.then(() => 'exited'), new Promise((r) => setTimeout(() => r('running'), 300))]);
    expect(early).toBe('running');
    p.child.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
  });

  it('-qtest unix:PATH,server=on,wait=off: listens; a new client after a disconnect gets a working session', async () => {
    const path = join(dir, 'srv.sock');
    const p = start([...BASE(), '-qtest', `unix:${path},server=on,wait=off`, '-qtest-log', 'none', '-M', 'microvm']);
    for (let i = 0; i < 200 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 10));
    const connectOnce = () =>
      new Promise<Socket>((resolve, reject) => {
        const s = createConnection(path);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    const s1 = await connectOnce();
    const q1 = qtest((x) => s1.write(x), lineReader(s1));
    expect(await q1.cmd('writel 0x100 7')).toBe('OK');
    s1.destroy();
    const s2 = await connectOnce();
    const q2 = qtest((x) => s2.write(x), lineReader(s2));
    expect(await q2.cmd('readl 0x100')).toBe('OK 0x0000000000000007');
    s2.destroy();
    p.child.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
  });

  it('refuses bad command lines with a message and exit status 1', async () => {
    const cases: [string[], RegExp][] = [
      [['-foo'], /^virtio-ts-qemu: -foo: invalid option\n$/],
      [['-M', 'pc', '-device', 'virtio-input-host-pci'], /^virtio-ts-qemu: -device virtio-input-host-pci: device 'virtio-input-host-pci' is not implemented yet by virtio-ts\n$/],
      [['-nodefaults', '-M', 'pc', '-device', 'virtio-blk-pci,drive=d0'], /^virtio-ts-qemu: -device virtio-blk-pci,drive=d0: Property 'virtio-blk-device.drive' can't find value 'd0'\n$/],
      [[...BASE(), '-qtest', `unix:${join(dir, 'nobody.sock')}`], /^virtio-ts-qemu: Failed to connect to '.*nobody\.sock': No such file or directory\nvirtio-ts-qemu: Failed to initialize device for qtest: "unix:.*nobody\.sock"\n$/],
      [[...BASE(), '-qmp', `unix:${join(dir, 'nobody.sock')}`], /^virtio-ts-qemu: -qmp unix:.*nobody\.sock: Failed to connect to '.*nobody\.sock': No such file or directory\n$/],
      [['-bios', join(dir, 'missing.bin'), '-nodefaults'], /^qemu: could not load PC BIOS '.*missing\.bin'\n$/],
      [['-nodefaults', '-drive', `if=none,id=d0,file=${join(dir, 'missing.img')},format=raw`], /Could not open '.*missing\.img': No such file or directory\n$/],
    ];
    for (const [args, re] of cases) {
      const p = start(args);
      const r = await p.exited;
      expect(r.code, args.join(' ')).toBe(1);
      expect(p.stderr()).toMatch(re);
    }
  });

  it('--version, -M help and -device help answer on stdout with exit 0', async () => {
    const v = start(['--version']);
    expect((await v.exited).code).toBe(0);
    expect(v.stdout()).toMatch(/^QEMU emulator version 7\.2\.\d+ \(virtio-ts /);
    const h = start(['-M', 'help']);
    expect((await h.exited).code).toBe(0);
    expect(h.stdout()).toContain('microvm');
    const d = start(['-device', 'virtio-rng-pci,help']);
    expect((await d.exited).code).toBe(0);
    expect(d.stdout()).toContain('disable-legacy=<OnOffAuto>');
  });
});

describe('bin/virtio-ts-qemu and `virtio-ts qemu`', () => {
  it('is an executable CommonJS launcher of dist/node/qemu-launch.cjs, registered in package.json and the build', () => {
    const bin = join(ROOT, 'bin/virtio-ts-qemu');
    expect(statSync(bin).mode & 0o111).not.toBe(0);
    const text = readFileSync(bin, 'utf8');
    expect(text.startsWith('#!/usr/bin/env node\n')).toBe(true);
    expect(text).toContain("require('../dist/node/qemu-launch.cjs');");
    // CommonJS because bin/package.json says so (Node's ESM loader costs start-up time).
    expect(JSON.parse(readFileSync(join(ROOT, 'bin/package.json'), 'utf8'))).toEqual({ type: 'commonjs' });
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(pkg.bin['virtio-ts-qemu']).toBe('./bin/virtio-ts-qemu');
    const build = readFileSync(join(ROOT, 'scripts/build.mjs'), 'utf8');
    expect(build).toContain("qemu: 'src/cli/qemu-program.ts'");
    expect(build).toContain("'qemu-launch': 'src/cli/qemu-launch.ts'");
  });

  it('runs from the built dist/ (npm run build) as `virtio-ts-qemu` and as `virtio-ts qemu`', () => {
    for (const f of ['dist/node/qemu.cjs', 'dist/node/qemu-launch.cjs', 'dist/node/cli.js']) {
      if (!existsSync(join(ROOT, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
    }
    const a = spawnSync(process.execPath, [join(ROOT, 'bin/virtio-ts-qemu'), '--version'], { encoding: 'utf8', timeout: 10_000 });
    expect(a.status).toBe(0);
    expect(a.stdout).toMatch(/^QEMU emulator version 7\.2/);
    const b = spawnSync(process.execPath, [join(ROOT, 'bin/virtio-ts.js'), 'qemu', '-foo'], { encoding: 'utf8', timeout: 10_000 });
    expect(b.status).toBe(1);
    expect(b.stderr).toBe('virtio-ts qemu: -foo: invalid option\n');
  });
});
