// The V8 code cache virtio-ts-qemu starts through (src/cli/code-cache.ts, issue 11): used when
// valid; written again when missing, stale (the bundle changed, even at the same length, which
// V8's own check would let through), refused by V8 (a damaged payload, caught by the checksum
// switched on around the compile) or foreign; off on request; never an error of its own. Then
// the real launcher (qemu-launch.ts + qemu-program.ts, bundled as the build bundles them) runs
// the same driver script with the cache off, missing, valid, damaged and stale, and the machine
// answers the same every time; and the built bin/virtio-ts-qemu uses it.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultCacheDir, loadBundle } from '../../src/cli/code-cache.js';
import { launchQemu } from '../../src/driver/qemu-launcher.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
let dir: string;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'virtio-ts-code-cache-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A small CommonJS bundle with enough functions for V8 to cache, its result depending on `n`. */
function bundleSource(n: number): string {
  const fns: string[] = [];
  for (let i = 0; i < 40; i++) fns.push(`function f${i}(x) { let s = 0; for (let j = 0; j < x; j++) s += (j * ${i + 1}) % 7; return s + ${i}; }`);
  return `"use strict";\n${fns.join('\n')}\nlet total = 0;\n${fns.map((_, i) => `total += f${i}(${n});`).join('\n')}\nexports.total = total;\nexports.where = __filename + '|' + __dirname;\nexports.self = typeof module.exports === 'object';\nexports.req = typeof require('node:path').join;\n`;
}
function expectedTotal(n: number): number {
  let total = 0;
  for (let i = 0; i < 40; i++) {
    let s = 0;
    for (let j = 0; j < n; j++) s += (j * (i + 1)) % 7;
    total += s + i;
  }
  return total;
}

function cacheFiles(cacheDir: string): string[] {
  return existsSync(cacheDir) ? readdirSync(cacheDir).filter((f) => f.endsWith('.v8cache')) : [];
}

// Each load runs in a fresh Node process, as a start does: within one process V8 keeps its own
// compilation cache by source, and a second compile of the same source never looks at the data.
interface Loaded {
  status: string;
  exports: Record<string, unknown>;
  cacheFile?: string;
  needsSave: boolean;
  saved?: boolean;
  savedAgain?: boolean;
  logs: string[];
}

function load(file: string, cacheDir: string | false | undefined, opts: { save?: boolean; env?: NodeJS.ProcessEnv } = {}): Loaded {
  // The script is a file, not `-e`: the options Node was started with are part of the cache key.
  const r = spawnSync(process.execPath, [join(dir, 'load.cjs'), JSON.stringify({ file, cacheDir: cacheDir ?? null, save: opts.save ?? false, env: opts.env ?? null })], { encoding: 'utf8', timeout: 15_000 });
  if (r.status !== 0) throw new Error(`load of ${file} failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout) as Loaded;
}

const LOAD_SCRIPT = `
const { loadBundle } = require('./code-cache.cjs');
const a = JSON.parse(process.argv[2]);
const logs = [];
const opts = { require, log: (m) => logs.push(m) };
if (a.cacheDir !== null) opts.cacheDir = a.cacheDir;
if (a.env !== null) opts.env = a.env;
const r = loadBundle(a.file, opts);
const out = { status: r.status, exports: r.exports, cacheFile: r.cacheFile, needsSave: r.needsSave, logs };
if (a.save) { out.saved = r.save(); out.savedAgain = r.save(); }
process.stdout.write(JSON.stringify(out));
`;

describe('loadBundle', () => {
  beforeAll(async () => {
    await esbuild.build({ absWorkingDir: ROOT, entryPoints: ['src/cli/code-cache.ts'], bundle: true, platform: 'node', format: 'cjs', target: 'node20', outfile: join(dir, 'code-cache.cjs'), logLevel: 'error' });
    writeFileSync(join(dir, 'load.cjs'), LOAD_SCRIPT);
  });

  it('miss, save, hit: the same exports each time; the cache is written once', () => {
    const d = join(dir, 'basic');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    writeFileSync(file, bundleSource(10));
    const cacheDir = join(d, 'cache');

    const a = load(file, cacheDir, { save: true });
    expect(a.status).toBe('miss');
    expect(a.exports).toEqual({ total: expectedTotal(10), where: `${file}|${d}`, self: true, req: 'function' });
    expect(a.needsSave).toBe(true);
    expect([a.saved, a.savedAgain]).toEqual([true, false]);
    expect(a.logs[0]).toBe(`miss ${a.cacheFile}`);
    expect(a.logs[1]).toMatch(/^saved \d+ bytes to /);
    expect(cacheFiles(cacheDir)).toHaveLength(1);
    expect(a.cacheFile).toBe(join(cacheDir, cacheFiles(cacheDir)[0]!));
    // No temporary file is left behind.
    expect(readdirSync(cacheDir)).toHaveLength(1);

    const b = load(file, cacheDir, { save: true });
    expect(b.status).toBe('hit');
    expect(b.exports).toEqual(a.exports);
    expect(b.needsSave).toBe(false);
    expect(b.saved).toBe(false);
    expect(b.logs).toEqual([`hit ${a.cacheFile}`]);
  });

  it('a bundle changed at the same length is stale (V8 alone would take the old code), then rebuilt', () => {
    const d = join(dir, 'stale');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    const cacheDir = join(d, 'cache');
    writeFileSync(file, bundleSource(10));
    load(file, cacheDir, { save: true });
    const before = statSync(file);
    writeFileSync(file, bundleSource(20));
    // Same length, and even the same mtime: the ctime still differs.
    expect(statSync(file).size).toBe(before.size);
    utimesSync(file, before.atime, before.mtime);
    const a = load(file, cacheDir, { save: true });
    expect(a.status).toBe('stale');
    expect(a.exports['total']).toBe(expectedTotal(20));
    expect(a.saved).toBe(true);
    const b = load(file, cacheDir);
    expect(b.status).toBe('hit');
    expect(b.exports['total']).toBe(expectedTotal(20));
    expect(cacheFiles(cacheDir)).toHaveLength(1);
  });

  it('a damaged payload is refused (checksum), the bundle runs from source, and the cache is rebuilt', () => {
    const d = join(dir, 'damaged');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    const cacheDir = join(d, 'cache');
    writeFileSync(file, bundleSource(7));
    const cacheFile = load(file, cacheDir, { save: true }).cacheFile!;
    const good = readFileSync(cacheFile);
    const headerEnd = good.indexOf(10) + 1;
    const payload = good.length - headerEnd;
    // Damage in several places of the payload, one at a time; and a cut-off payload.
    const cases: [string, Buffer][] = [];
    for (const at of [0.25, 0.5, 0.75, 0.99]) {
      const bad = Buffer.from(good);
      bad[headerEnd + Math.floor(payload * at)]! ^= 0x10;
      cases.push([`bit flip at ${at}`, bad]);
    }
    cases.push(['cut in half', good.subarray(0, headerEnd + (payload >> 1))]);
    cases.push(['header only', good.subarray(0, headerEnd)]);
    for (const [what, bad] of cases) {
      writeFileSync(cacheFile, bad);
      const a = load(file, cacheDir, { save: true });
      expect(a.status, what).toBe(what === 'header only' ? 'stale' : 'rejected');
      expect(a.exports['total'], what).toBe(expectedTotal(7));
      expect(a.saved, what).toBe(true);
      expect(load(file, cacheDir).status, what).toBe('hit');
    }
  });

  it('a foreign or other-Node cache file is stale; garbage is stale', () => {
    const d = join(dir, 'foreign');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    const cacheDir = join(d, 'cache');
    writeFileSync(file, bundleSource(3));
    const cacheFile = load(file, cacheDir, { save: true }).cacheFile!;
    const good = readFileSync(cacheFile);
    const other = Buffer.from(good.toString('latin1').replace(`"node":"${process.version}"`, '"node":"v20.0.0"'), 'latin1');
    expect(other.equals(good)).toBe(false);
    const variants: [string, Buffer][] = [
      ['another Node version in the header', other],
      ['garbage', Buffer.from('not a cache at all\nxxxxxxxx')],
      ['empty', Buffer.alloc(0)],
      ['no newline', Buffer.alloc(1000, 0x41)],
    ];
    for (const [what, bytes] of variants) {
      writeFileSync(cacheFile, bytes);
      const b = load(file, cacheDir, { save: true });
      expect(b.status, what).toBe('stale');
      expect(b.exports['total'], what).toBe(expectedTotal(3));
      expect(b.saved, what).toBe(true);
      expect(load(file, cacheDir).status, what).toBe('hit');
    }
  });

  it('off on request, and a cache directory that cannot be made is no error', () => {
    const d = join(dir, 'off');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    writeFileSync(file, bundleSource(5));
    const off = load(file, false, { save: true });
    expect(off.status).toBe('off');
    expect(off.cacheFile).toBeUndefined();
    expect(off.saved).toBe(false);
    expect(off.exports['total']).toBe(expectedTotal(5));
    for (const v of ['off', '0', 'false']) expect(defaultCacheDir({ VIRTIO_TS_CODE_CACHE: v, HOME: '/home/x' })).toBe(false);
    expect(load(file, undefined, { env: { VIRTIO_TS_CODE_CACHE: 'off' } }).status).toBe('off');

    // A file where the directory should be.
    const blocked = join(d, 'blocked');
    writeFileSync(blocked, 'x');
    const b = load(file, join(blocked, 'cache'), { save: true });
    expect(b.status).toBe('miss');
    expect(b.exports['total']).toBe(expectedTotal(5));
    expect(b.saved).toBe(false);
    expect(b.logs[1]).toMatch(/^not saved: /);
  });

  it('uses no directory that others can write to, and makes its own private', () => {
    const d = join(dir, 'private');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    writeFileSync(file, bundleSource(6));
    const shared = join(d, 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o777);
    const a = load(file, shared, { save: true });
    expect(a.status).toBe('off');
    expect(a.logs[0]).toBe(`off: ${shared} is not a private directory`);
    expect(a.saved).toBe(false);
    expect(a.exports['total']).toBe(expectedTotal(6));
    expect(readdirSync(shared)).toEqual([]);

    const made = join(d, 'made', 'cache');
    expect(load(file, made, { save: true }).saved).toBe(true);
    expect(statSync(made).mode & 0o777).toBe(0o700);
    expect(load(file, made).status).toBe('hit');
  });

  it('names its directory from the environment', () => {
    expect(defaultCacheDir({ VIRTIO_TS_CACHE_DIR: '/x/y', XDG_CACHE_HOME: '/c', HOME: '/h' })).toBe('/x/y');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/c', HOME: '/h' })).toBe('/c/virtio-ts');
    expect(defaultCacheDir({ HOME: '/h' })).toBe('/h/.cache/virtio-ts');
    expect(defaultCacheDir({})).toMatch(/virtio-ts-/);
  });

  it("the bundle's own errors propagate, and it runs once", () => {
    const d = join(dir, 'throws');
    mkdirSync(d);
    const file = join(d, 'b.cjs');
    writeFileSync(file, '"use strict";\nglobalThis.__codeCacheRuns = (globalThis.__codeCacheRuns ?? 0) + 1;\nthrow new Error("boom from the bundle");\n');
    const g = globalThis as { __codeCacheRuns?: number };
    delete g.__codeCacheRuns;
    expect(() => loadBundle(file, { require: createRequire(file), cacheDir: join(d, 'cache') })).toThrow('boom from the bundle');
    expect(g.__codeCacheRuns).toBe(1);
    delete g.__codeCacheRuns;
  });
});

// ------------------------------------------------------------------------------------------
// The launcher as bin/virtio-ts-qemu runs it.

let launcher: string;

async function buildLauncher(): Promise<void> {
  const out = join(dir, 'dist');
  await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: { qemu: 'src/cli/qemu-program.ts', 'qemu-launch': 'src/cli/qemu-launch.ts' },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outExtension: { '.js': '.cjs' },
    outdir: out,
    supported: { 'dynamic-import': false },
    minifyWhitespace: true,
    minifySyntax: true,
    logLevel: 'error',
  });
  launcher = join(out, 'qemu-launch.cjs');
}

/** One machine through the launcher: a fixed driver script; its answers, and what the cache did. */
async function session(cacheDir: string | false, command = [process.execPath, launcher]): Promise<{ answers: unknown[]; cache: string }> {
  const env: NodeJS.ProcessEnv = { ...process.env, VIRTIO_TS_CODE_CACHE: cacheDir === false ? 'off' : 'log' };
  if (cacheDir !== false) env['VIRTIO_TS_CACHE_DIR'] = cacheDir;
  const p = await launchQemu({ command, machine: 'microvm', args: ['-device', 'virtio-rng-device'], env, name: 'virtio-ts-qemu' });
  const answers: unknown[] = [];
  try {
    const m = p.machine;
    const base = 0xfeb00000 + 23 * 0x200;
    answers.push(await m.readl(base), await m.readl(base + 4), await m.readl(base + 8));
    await m.writel(0x10000, 0xdeadbeef);
    answers.push(await m.readl(0x10000));
    answers.push(await p.qmp!.execute('query-status'));
    answers.push(await p.qmp!.execute('qom-list', { path: '/machine/peripheral-anon' }));
  } finally {
    await p.close();
  }
  expect(p.exit?.code).toBe(0);
  const cache = p.stderr
    .split('\n')
    .filter((l) => l.startsWith('virtio-ts code cache: '))
    .map((l) => l.slice('virtio-ts code cache: '.length).split(' ')[0])
    .join(',');
  return { answers, cache };
}

describe('virtio-ts-qemu through the launcher', () => {
  beforeAll(buildLauncher, 60_000);

  it('answers the same with the cache off, missing, valid, damaged and stale', async () => {
    const cacheDir = join(dir, 'launcher-cache');
    const off = await session(false);
    expect(off.cache).toBe('');
    const miss = await session(cacheDir);
    expect(miss.cache).toBe('miss,saved');
    expect(miss.answers).toEqual(off.answers);
    const hit = await session(cacheDir);
    expect(hit.cache).toBe('hit');
    expect(hit.answers).toEqual(off.answers);

    const [name] = cacheFiles(cacheDir);
    const file = join(cacheDir, name!);
    const good = readFileSync(file);
    const bad = Buffer.from(good);
    bad[good.indexOf(10) + 1 + ((good.length - good.indexOf(10)) >> 1)]! ^= 0x40;
    writeFileSync(file, bad);
    const damaged = await session(cacheDir);
    expect(damaged.cache).toBe('rejected,saved');
    expect(damaged.answers).toEqual(off.answers);
    expect((await session(cacheDir)).cache).toBe('hit');

    // The program rebuilt (same bytes, new file): stale, rebuilt.
    const bundle = join(dirname(launcher), 'qemu.cjs');
    const text = readFileSync(bundle);
    rmSync(bundle);
    writeFileSync(bundle, text);
    const stale = await session(cacheDir);
    expect(stale.cache).toBe('stale,saved');
    expect(stale.answers).toEqual(off.answers);
    expect(cacheFiles(cacheDir)).toHaveLength(1);
  });

  it('migrates through exec: and file: (child_process and fs/promises are loaded on first use)', async () => {
    const p = await launchQemu({ command: [process.execPath, launcher], machine: 'pc', args: ['-device', 'virtio-rng-pci'], name: 'virtio-ts-qemu' });
    try {
      for (const [uri, file] of [
        [`exec:cat > '${join(dir, 'exec.mig')}'`, join(dir, 'exec.mig')],
        [`file:${join(dir, 'file.mig')}`, join(dir, 'file.mig')],
      ] as const) {
        await p.qmp!.execute('migrate', { uri });
        let status = '';
        for (let i = 0; i < 200 && status !== 'completed' && status !== 'failed'; i++) {
          status = ((await p.qmp!.execute('query-migrate')) as { status?: string }).status ?? '';
          if (status !== 'completed') await new Promise((r) => setTimeout(r, 20));
        }
        expect(status, uri).toBe('completed');
        expect(readFileSync(file).subarray(0, 4).toString('latin1'), uri).toBe('QEVM');
        await p.qmp!.execute('cont');
      }
    } finally {
      await p.close();
    }
  });

  it('writes no cache for a run that never came up (-version, a bad command line)', () => {
    const cacheDir = join(dir, 'no-save');
    const env = { ...process.env, VIRTIO_TS_CODE_CACHE: 'log', VIRTIO_TS_CACHE_DIR: cacheDir };
    const v = spawnSync(process.execPath, [launcher, '-version'], { encoding: 'utf8', env, timeout: 10_000 });
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^QEMU emulator version 7\.2/);
    expect(v.stderr).toMatch(/^virtio-ts code cache: miss \S+qemu\.cjs-[0-9a-f]{8}\.v8cache\n$/);
    const bad = spawnSync(process.execPath, [launcher, '-foo'], { encoding: 'utf8', env: { ...env, VIRTIO_TS_CODE_CACHE: '' }, timeout: 10_000 });
    expect(bad.status).toBe(1);
    expect(bad.stderr).toBe('virtio-ts-qemu: -foo: invalid option\n');
    expect(cacheFiles(cacheDir)).toEqual([]);
  });

  it('a machine killed before it exits still leaves a cache (written a few seconds after start-up)', async () => {
    const cacheDir = join(dir, 'killed');
    const env = { ...process.env, VIRTIO_TS_CODE_CACHE: 'log', VIRTIO_TS_CACHE_DIR: cacheDir };
    const child = spawn(process.execPath, [launcher, '-machine', 'microvm', '-qtest', 'stdio', '-qtest-log', 'none', '-nodefaults'], { stdio: ['pipe', 'pipe', 'pipe'], env });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    const deadline = Date.now() + 15_000;
    while (!err.includes('saved') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    child.kill('SIGKILL');
    expect(err).toMatch(/^virtio-ts code cache: miss .*\nvirtio-ts code cache: saved \d+ bytes/);
    expect(cacheFiles(cacheDir)).toHaveLength(1);
  }, 20_000);
});

describe('bin/virtio-ts-qemu (built dist/)', () => {
  it('starts through the code cache: miss and saved, then hit', async () => {
    for (const f of ['dist/node/qemu.cjs', 'dist/node/qemu-launch.cjs']) {
      if (!existsSync(join(ROOT, f))) throw new Error(`${f} is missing: run \`npm run build\` first`);
    }
    const cacheDir = join(dir, 'bin-cache');
    const command = [process.execPath, join(ROOT, 'bin/virtio-ts-qemu')];
    const s1 = await session(cacheDir, command);
    const s2 = await session(cacheDir, command);
    expect([s1.cache, s2.cache]).toEqual(['miss,saved', 'hit']);
    expect(s2.answers).toEqual(s1.answers);
  });
});
