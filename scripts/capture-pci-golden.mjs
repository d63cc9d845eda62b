#!/usr/bin/env node
// Capture golden PCI configuration spaces from the real QEMU 7.2 (Debian 12's qemu-system-x86_64)
// into test/golden/pci/*.json. No dependencies beyond Node.
//
// For each case QEMU is started as
//   qemu-system-x86_64 -accel tcg -bios HALT -nodefaults -display none -machine pc -m 16M \
//     -qtest unix:SOCK -qtest-log none -device virtio-rng-pci[,options],addr=02.0,ioeventfd=off
// with HALT a 64 KiB "BIOS" that only halts the CPU (so nothing programs PCI), and this script
// listening on SOCK first (QEMU connects as a client). Through qtest `outl 0xcf8` / `inl 0xcfc`
// it records, for function 00:02.0:
//   - the 256-byte configuration space at power-on;
//   - each BAR register's read-back after writing all ones (then restored), i.e. the BAR sizes;
//   - every dword's read-back after writing all ones and after writing all zeros (then
//     restored), which shows which bits are writable;
//   - a few register reads through the BARs once they are mapped (legacy I/O BAR0, the modern
//     common configuration in BAR4, the MSI-X table and PBA in BAR1), at sizes 1, 2 and 4.
// The host bridge (00:00.0) and the ISA bridge (00:01.0) configuration spaces are captured too,
// with their write probes taken in separate QEMU runs (a probe may lock registers).
//
// Usage: node scripts/capture-pci-golden.mjs [--qemu PATH] [--out DIR]
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] ? argv[i + 1] : dflt;
};
const QEMU = opt('--qemu', 'qemu-system-x86_64');
const OUT = opt('--out', join(root, 'test/golden/pci'));
const CASE_TIMEOUT_MS = 20_000;

/** The virtio-rng-pci cases: file name → extra -device options. */
const RNG_CASES = [
  ['rng-default', ''],
  ['rng-disable-legacy', 'disable-legacy=on'],
  ['rng-disable-modern', 'disable-modern=on'],
  ['rng-vectors-0', 'vectors=0'],
  ['rng-vectors-4', 'vectors=4'],
  ['rng-page-per-vq', 'page-per-vq=on'],
  ['rng-disable-legacy-vectors-0', 'disable-legacy=on,vectors=0'],
  ['rng-disable-modern-vectors-0', 'disable-modern=on,vectors=0'],
  ['rng-disable-legacy-page-per-vq', 'disable-legacy=on,page-per-vq=on'],
  ['rng-vectors-1', 'vectors=1'],
  ['rng-vectors-300', 'vectors=300'],
  ['rng-vectors-2049', 'vectors=2049'],
];

const hex = (n, w = 8) => '0x' + (n >>> 0).toString(16).padStart(w, '0');

/** JSON with arrays of numbers and strings kept on one line (the scripts stay readable). */
function toJson(value) {
  return JSON.stringify(value, null, 2).replace(/\[\s+([^\[\]{}]*?)\s+\]/g, (_, inner) => '[' + inner.split(/,\s+/).join(', ') + ']') + '\n';
}

/** A 64 KiB firmware: hlt everywhere, `cli; hlt; jmp $-3` at the reset vector. */
function haltBios() {
  const b = Buffer.alloc(0x10000, 0xf4);
  b.set([0xfa, 0xf4, 0xeb, 0xfd], 0xfff0);
  return b;
}

/** Start QEMU with `deviceArgs`, connected to a qtest socket we listen on; returns a session. */
async function startQemu(dir, deviceArgs) {
  const sock = join(dir, "qtest.sock");
  const bios = join(dir, 'halt.bin');
  const args = [
    '-accel', 'tcg', '-bios', bios, '-nodefaults', '-display', 'none', '-machine', 'pc', '-m', '16M',
    '-qtest', `unix:${sock}`, '-qtest-log', 'none', ...deviceArgs,
  ];
  const server = createServer();
  await new Promise((res, rej) => {
    server.once('error', rej);
    server.listen(sock, res);
  });
  const child = spawn(QEMU, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise((res) => child.once('exit', (code, sig) => res({ code, sig })));
  const conn = await Promise.race([
    new Promise((res) => server.once('connection', res)),
    exited.then((e) => {
      throw new Error(`QEMU exited before connecting (${JSON.stringify(e)}): ${stderr.trim()}`);
    }),
    new Promise((_, rej) => setTimeout(() => rej(new Error('QEMU did not connect in time')), CASE_TIMEOUT_MS)),
  ]);
  server.close();

  let buf = '';
  const lines = [];
  let waiter = null;
  conn.setEncoding('latin1');
  conn.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      if (line.startsWith('IRQ ')) continue; // asynchronous interrupt lines are not replies
      lines.push(line);
    }
    if (waiter && lines.length) {
      const w = waiter;
      waiter = null;
      w();
    }
  });
  conn.on('error', () => {});

  async function cmd(text) {
    conn.write(text + '\n');
    while (!lines.length) {
      await Promise.race([
        new Promise((res) => (waiter = res)),
        exited.then((e) => {
          throw new Error(`QEMU exited during "${text}" (${JSON.stringify(e)}): ${stderr.trim()}`);
        }),
      ]);
    }
    const reply = lines.shift();
    if (!reply.startsWith('OK')) throw new Error(`"${text}" answered "${reply}"`);
    return reply;
  }
  const num = (reply) => Number(BigInt(reply.split(' ')[1]));

  async function stop() {
    conn.destroy();
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM'); // our own child, by its PID
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    rmSync(sock, { force: true });
  }

  return {
    args: [QEMU, ...args],
    stderr: () => stderr.trim(),
    cmd,
    async inl(port) { return num(await cmd(`inl ${hex(port, 4)}`)) >>> 0; },
    async inw(port) { return num(await cmd(`inw ${hex(port, 4)}`)) & 0xffff; },
    async inb(port) { return num(await cmd(`inb ${hex(port, 4)}`)) & 0xff; },
    async outl(port, v) { await cmd(`outl ${hex(port, 4)} ${hex(v)}`); },
    async outw(port, v) { await cmd(`outw ${hex(port, 4)} ${hex(v, 4)}`); },
    async outb(port, v) { await cmd(`outb ${hex(port, 4)} ${hex(v, 2)}`); },
    async readb(a) { return num(await cmd(`readb ${hex(a)}`)) & 0xff; },
    async readw(a) { return num(await cmd(`readw ${hex(a)}`)) & 0xffff; },
    async readl(a) { return num(await cmd(`readl ${hex(a)}`)) >>> 0; },
    async writeb(a, v) { await cmd(`writeb ${hex(a)} ${hex(v, 2)}`); },
    async writew(a, v) { await cmd(`writew ${hex(a)} ${hex(v, 4)}`); },
    async writel(a, v) { await cmd(`writel ${hex(a)} ${hex(v)}`); },
    stop,
  };
}

/** PCI configuration mechanism #1 on bus 0. */
function cfg(q, devfn) {
  const sel = (off) => q.outl(0xcf8, (0x80000000 | (devfn << 8) | (off & 0xfc)) >>> 0);
  return {
    async read32(off) { await sel(off); return q.inl(0xcfc); },
    async write32(off, v) { await sel(off); await q.outl(0xcfc, v); },
    async write16(off, v) { await sel(off); await q.outw(0xcfc + (off & 2), v); },
    async dump() {
      const b = Buffer.alloc(256);
      for (let o = 0; o < 256; o += 4) b.writeUInt32LE(await this.read32(o), o);
      return b;
    },
  };
}

/** Each BAR register's read-back after writing all ones (restored afterwards). */
async function barProbe(c) {
  const out = [];
  for (const off of [0x10, 0x14, 0x18, 0x1c, 0x20, 0x24, 0x30]) {
    const orig = await c.read32(off);
    await c.write32(off, 0xffffffff);
    const rb = await c.read32(off);
    await c.write32(off, orig);
    out.push({ offset: off, value: hex(orig), readback: hex(rb) });
  }
  return out;
}

/** BARs decoded from the config dump plus the all-ones read-backs: index, type, size. */
function decodeBars(config, probe) {
  const rbAt = (off) => Number(probe.find((p) => p.offset === off).readback);
  const bars = [];
  for (let i = 0; i < 6; i++) {
    const off = 0x10 + 4 * i;
    const v = config.readUInt32LE(off);
    const rb = rbAt(off);
    if (rb === 0) continue;
    if (v & 1) {
      bars.push({ index: i, type: 'io', prefetchable: false, size: (~(rb & ~3) + 1) & 0xffff || 0x10000 });
      continue;
    }
    const type = (v >> 1) & 3;
    const prefetchable = (v & 8) !== 0;
    if (type === 2) {
      const hi = rbAt(off + 4);
      const mask = (BigInt(hi) << 32n) | BigInt(rb & ~0xf);
      const size = (~mask + 1n) & 0xffffffffffffffffn;
      bars.push({ index: i, type: 'mem64', prefetchable, size: Number(size) });
      i++;
    } else {
      bars.push({ index: i, type: 'mem32', prefetchable, size: (~(rb & ~0xf) + 1) >>> 0 });
    }
  }
  return bars;
}

/** Every dword's read-back after writing all ones, then all zeros; the original is restored. */
async function writeProbe(c) {
  const ones = Buffer.alloc(256);
  const zeros = Buffer.alloc(256);
  for (let o = 0; o < 256; o += 4) {
    const orig = await c.read32(o);
    await c.write32(o, 0xffffffff);
    ones.writeUInt32LE(await c.read32(o), o);
    await c.write32(o, 0);
    zeros.writeUInt32LE(await c.read32(o), o);
    await c.write32(o, orig);
  }
  return { ones: ones.toString('hex'), zeros: zeros.toString('hex') };
}

const IO_BASE = 0xc000;
const BAR1_BASE = 0xe0000000;
const BAR4_BASE = 0xe1000000;

/** Map the BARs the way a driver would and read registers at sizes 1, 2, 4. */
async function registerReads(q, c, bars) {
  const has = (i) => bars.some((b) => b.index === i);
  if (has(0)) await c.write32(0x10, IO_BASE);
  if (has(1)) await c.write32(0x14, BAR1_BASE);
  if (has(4)) {
    await c.write32(0x20, BAR4_BASE);
    await c.write32(0x24, 0);
  }
  await c.write16(0x04, 0x0007);
  const out = {};
  const sweep = async (len, rd) => {
    const r = [];
    for (const size of [1, 2, 4]) {
      for (let o = 0; o + size <= len; o += size) r.push([o, size, hex(await rd(o, size), size * 2)]);
    }
    return r;
  };
  if (has(0)) {
    out.legacy = await sweep(0x20, (o, s) => (s === 1 ? q.inb(IO_BASE + o) : s === 2 ? q.inw(IO_BASE + o) : q.inl(IO_BASE + o)));
  }
  const mem = (base) => (o, s) => (s === 1 ? q.readb(base + o) : s === 2 ? q.readw(base + o) : q.readl(base + o));
  if (has(4)) {
    out.common = await sweep(0x40, mem(BAR4_BASE));
    out.isr = await sweep(4, mem(BAR4_BASE + 0x1000));
    out.device = await sweep(8, mem(BAR4_BASE + 0x2000));
    out.notify = await sweep(8, mem(BAR4_BASE + 0x3000));
  }
  if (has(1)) {
    out.msixTable = await sweep(0x40, mem(BAR1_BASE));
    out.msixPba = await sweep(0x10, mem(BAR1_BASE + 0x800));
  }
  return out;
}

/** Offset of the first capability with `id` (and vendor cfg_type `type`), or 0. */
function findCap(config, id, type) {
  if (!(config[6] & 0x10)) return 0;
  for (let p = config[0x34], n = 0; p && n < 48; p = config[p + 1], n++) {
    if (config[p] === id && (type === undefined || config[p + 3] === type)) return p;
  }
  return 0;
}

/**
 * A script of register accesses exercising the transport's rules (feature and queue selectors,
 * vector assignment and refusal, queue size, enable and reset, status and resets, the PCI_CFG
 * window, legacy registers, MSI-X table and PBA, configuration space corners). Each step is
 * [space, 'r' | 'w', offset, size, value]: space 'cfg' (configuration space offset), 'io'
 * (port), 'mem' (physical address). Reads get their value from QEMU.
 */
function buildOps(config, bars) {
  const ops = [];
  const r = (space, off, size) => ops.push([space, 'r', off, size, null]);
  const w = (space, off, size, val) => ops.push([space, 'w', off, size, hex(val, size * 2)]);
  const has = (i) => bars.some((b) => b.index === i);
  const msixCap = findCap(config, 0x11);
  const nv = msixCap ? (config.readUInt16LE(msixCap + 2) & 0x7ff) + 1 : 0;
  const cfgCap = findCap(config, 0x09, 5);
  const notifyCap = findCap(config, 0x09, 2);
  const mult = notifyCap ? config.readUInt32LE(notifyCap + 16) : 4;
  const C = BAR4_BASE;
  const N = BAR4_BASE + 0x3000;
  const L = IO_BASE;
  const T = BAR1_BASE;
  const P = BAR1_BASE + 0x800;

  // Configuration space corners.
  w('cfg', 0x04, 2, 0x0003);
  r('cfg', 0x04, 4);
  w('cfg', 0x3c, 1, 0x0b);
  r('cfg', 0x3c, 4);
  w('cfg', 0x00, 4, 0);
  r('cfg', 0x00, 4);
  w('cfg', 0x06, 2, 0xffff);
  r('cfg', 0x04, 4);
  w('cfg', 0x0d, 1, 0xff);
  r('cfg', 0x0c, 4);
  w('cfg', 0xfc, 4, 0x11223344);
  r('cfg', 0xfc, 4);
  r('cfg', 0xfe, 2);
  r('cfg', 0xff, 1);
  w('cfg', 0x34, 1, 0x50);
  r('cfg', 0x34, 1);
  w('cfg', 0x3d, 1, 4);
  r('cfg', 0x3d, 1);

  if (has(4)) {
    // Feature selectors.
    w('mem', C + 0x00, 4, 1);
    r('mem', C + 0x04, 4);
    w('mem', C + 0x00, 4, 2);
    r('mem', C + 0x04, 4);
    w('mem', C + 0x00, 4, 0xffffffff);
    r('mem', C + 0x00, 4);
    r('mem', C + 0x04, 4);
    w('mem', C + 0x00, 4, 0);
    r('mem', C + 0x04, 4);
    w('mem', C + 0x08, 4, 2);
    r('mem', C + 0x0c, 4);
    w('mem', C + 0x0c, 4, 0xffff);
    r('mem', C + 0x0c, 4);
    w('mem', C + 0x08, 4, 1);
    w('mem', C + 0x0c, 4, 1);
    r('mem', C + 0x0c, 4);
    w('mem', C + 0x08, 4, 0);
    r('mem', C + 0x0c, 4);
    r('mem', C + 0x08, 4);
    // A queue the device does not have, and selectors past VIRTIO_QUEUE_MAX.
    r('mem', C + 0x16, 2);
    w('mem', C + 0x16, 2, 1);
    for (const o of [0x18, 0x1a, 0x1c, 0x1e]) r('mem', C + o, 2);
    w('mem', C + 0x1a, 2, 1);
    r('mem', C + 0x1a, 2);
    w('mem', C + 0x20, 4, 0x1234);
    r('mem', C + 0x20, 4);
    w('mem', C + 0x18, 2, 16);
    r('mem', C + 0x18, 2);
    w('mem', C + 0x1c, 2, 1);
    r('mem', C + 0x1c, 2);
    w('mem', C + 0x16, 2, 1024);
    r('mem', C + 0x16, 2);
    w('mem', C + 0x16, 2, 0xffff);
    r('mem', C + 0x16, 2);
    w('mem', C + 0x16, 2, 1023);
    r('mem', C + 0x16, 2);
    r('mem', C + 0x1e, 2);
    r('mem', C + 0x18, 2);
    w('mem', C + 0x16, 2, 0);
    // Vectors: in range, == nvectors, 0xfffe, NO_VECTOR.
    r('mem', C + 0x1a, 2);
    for (const v of [0, nv, 0xfffe, 1, 0xffff, nv ? nv - 1 : 0]) {
      w('mem', C + 0x1a, 2, v);
      r('mem', C + 0x1a, 2);
    }
    for (const v of [0, 0x7ff, nv, 1]) {
      w('mem', C + 0x10, 2, v);
      r('mem', C + 0x10, 2);
    }
    // Queue size.
    for (const v of [4, 0, 3, 2048, 0x10008, 8]) {
      w('mem', C + 0x18, 2, v & 0xffff);
      r('mem', C + 0x18, 2);
    }
    r('mem', C + 0x12, 2);
    // Unaligned reads (split by QEMU's memory core).
    r('mem', C + 0x11, 4);
    r('mem', C + 0x13, 2);
    r('mem', C + 0x1b, 2);
    r('mem', C + 0x0e, 4);
    // Status, FEATURES_OK, and queue_enable = 0 (QEMU: virtio_error, NEEDS_RESET).
    w('mem', C + 0x08, 4, 1);
    w('mem', C + 0x0c, 4, 1);
    for (const s of [1, 3, 0xb]) {
      w('mem', C + 0x14, 1, s);
      r('mem', C + 0x14, 1);
    }
    r('mem', C + 0x15, 1);
    w('mem', C + 0x1c, 2, 0);
    r('mem', C + 0x14, 1);
    r('mem', C + 0x15, 1);
    r('mem', C + 0x1c, 2);
    // Reset by status 0: selectors survive, queue registers and vectors do not.
    w('mem', C + 0x14, 1, 0);
    for (const [o, s] of [[0x14, 1], [0x16, 2], [0x1a, 2], [0x10, 2], [0x00, 4], [0x08, 4], [0x0c, 4]]) r('mem', C + o, s);
    w('mem', C + 0x16, 2, 1);
    r('mem', C + 0x20, 4);
    r('mem', C + 0x1c, 2);
    r('mem', C + 0x1a, 2);
    w('mem', C + 0x16, 2, 0);
    // queue_reset.
    w('mem', C + 0x18, 2, 4);
    w('mem', C + 0x1a, 2, 0);
    w('mem', C + 0x3a, 2, 1);
    r('mem', C + 0x3a, 2);
    r('mem', C + 0x1c, 2);
    r('mem', C + 0x18, 2);
    r('mem', C + 0x1a, 2);
    // Bus mastering off clears DRIVER_OK.
    w('mem', C + 0x08, 4, 1);
    w('mem', C + 0x0c, 4, 1);
    for (const s of [1, 3, 0xb, 0xf]) w('mem', C + 0x14, 1, s);
    r('mem', C + 0x14, 1);
    w('cfg', 0x04, 2, 0x0007);
    r('mem', C + 0x14, 1);
    w('cfg', 0x04, 2, 0x0003);
    r('mem', C + 0x14, 1);
    w('cfg', 0x04, 2, 0x0007);
    w('mem', C + 0x14, 1, 0);
    // ISR, device, notify and the rest of the BAR.
    r('mem', C + 0x1000, 1);
    r('mem', C + 0x1ffc, 4);
    w('mem', C + 0x1000, 1, 3);
    r('mem', C + 0x1000, 4);
    r('mem', C + 0x2000, 4);
    r('mem', C + 0x2ffe, 2);
    w('mem', N + 5 * mult, 2, 5);
    w('mem', N + 1023 * mult, 2, 1023);
    r('mem', N + 1023 * mult, 4);
    r('mem', C + 0x3ffc, 4);
    w('mem', C + 0x100, 4, 0xffffffff);
    r('mem', C + 0x100, 4);
    r('mem', C + 0xffc, 4);
  }

  if (cfgCap) {
    const d = cfgCap + 16;
    r('cfg', cfgCap + 4, 4);
    w('cfg', cfgCap + 4, 1, 4);
    w('cfg', cfgCap + 8, 4, 0x12);
    w('cfg', cfgCap + 12, 4, 2);
    r('cfg', d, 4);
    w('cfg', cfgCap + 12, 4, 3);
    w('cfg', d, 4, 0);
    r('cfg', d, 4);
    w('cfg', cfgCap + 8, 4, 0x13);
    w('cfg', cfgCap + 12, 4, 2);
    r('cfg', d, 4);
    r('cfg', d + 1, 1);
    r('cfg', d + 2, 2);
    w('cfg', cfgCap + 8, 4, 0x14);
    w('cfg', cfgCap + 12, 4, 1);
    w('cfg', d, 1, 1);
    r('mem', C + 0x14, 1);
    r('cfg', d, 4);
    w('cfg', cfgCap + 8, 4, 0x5000);
    w('cfg', cfgCap + 12, 4, 4);
    w('cfg', d, 4, 0xdeadbeef);
    r('cfg', d, 4);
    w('cfg', cfgCap + 8, 4, 0xfffffffe);
    r('cfg', d, 4);
    w('cfg', cfgCap + 4, 1, 7);
    w('cfg', cfgCap + 8, 4, 0x16);
    w('cfg', cfgCap + 12, 4, 2);
    w('cfg', d, 2, 1);
    r('mem', C + 0x16, 2);
    r('cfg', d, 4);
    w('cfg', d, 2, 0);
    w('cfg', cfgCap + 8, 4, 0x1000);
    w('cfg', cfgCap + 12, 4, 1);
    r('cfg', d, 4);
    w('cfg', cfgCap + 8, 4, 0x3004);
    w('cfg', cfgCap + 12, 4, 4);
    r('cfg', d, 4);
    w('cfg', cfgCap + 12, 4, 0);
    w('cfg', cfgCap + 8, 4, 0);
    r('cfg', cfgCap + 8, 4);
    w('mem', C + 0x14, 1, 0);
  }

  if (has(0)) {
    r('io', L + 0, 4);
    r('io', L + 4, 4);
    r('io', L + 0xc, 2);
    r('io', L + 0xe, 2);
    w('io', L + 0xe, 2, 1);
    r('io', L + 0xc, 2);
    r('io', L + 8, 4);
    w('io', L + 8, 4, 0x10);
    r('io', L + 8, 4);
    w('io', L + 0xe, 2, 0);
    w('io', L + 8, 4, 0x100);
    r('io', L + 8, 4);
    w('io', L + 0xe, 2, 1024);
    r('io', L + 0xe, 2);
    w('cfg', 0x04, 2, 0x0003);
    w('io', L + 0x12, 1, 3);
    r('cfg', 0x04, 2);
    r('io', L + 0x12, 1);
    for (const f of [0x40000000, 0x30000000, 0xffffffff, 0x10000000]) {
      w('io', L + 4, 4, f);
      r('io', L + 4, 4);
    }
    w('io', L + 0x10, 2, 0xffff);
    w('io', L + 0x10, 4, 0xffffffff);
    w('io', L + 0x10, 2, 1);
    r('io', L + 0x13, 1);
    w('io', L + 0x14, 2, 0);
    r('io', L + 0x14, 2);
    if (msixCap) {
      w('cfg', msixCap + 2, 2, 0x8000);
      r('io', L + 0x14, 2);
      for (const v of [0, nv, 1, 0xfffe]) {
        w('io', L + 0x14, 2, v);
        r('io', L + 0x14, 2);
        w('io', L + 0x16, 2, v);
        r('io', L + 0x16, 2);
      }
      r('io', L + 0x18, 4);
      r('io', L + 0x17, 1);
      r('io', L + 0x10, 4);
      w('cfg', msixCap + 2, 2, 0);
      r('io', L + 0x14, 2);
    }
    w('io', L + 0xe, 2, 0);
    w('io', L + 8, 4, 0);
    r('io', L + 0x12, 1);
    r('io', L + 8, 4);
    r('io', L + 0xe, 2);
    r('io', L + 0x13, 2);
    r('io', L + 0x11, 4);
    r('io', L + 0x0d, 2);
    w('io', L + 0, 4, 0x1234);
    r('io', L + 0, 4);
    w('io', L + 0xc, 2, 16);
    r('io', L + 0xc, 2);
    w('io', L + 0x12, 2, 0x0101);
    r('io', L + 0x12, 2);
    w('io', L + 0x12, 1, 0);
  }

  if (has(1)) {
    w('mem', T + 0, 4, 0x00010000);
    w('mem', T + 4, 4, 0);
    w('mem', T + 8, 4, 0x12345678);
    w('mem', T + 0xc, 4, 0);
    for (let o = 0; o < 0x20; o += 4) r('mem', T + o, 4);
    w('mem', T + 0xc, 1, 1);
    w('mem', T + 0xc, 2, 1);
    r('mem', T + 0xc, 4);
    w('mem', T + 0xe, 4, 0xffffffff);
    r('mem', T + 0xc, 4);
    w('mem', T + 0x1c, 4, 0xfffffffe);
    r('mem', T + 0x1c, 4);
    w('mem', P, 4, 0xffffffff);
    r('mem', P, 4);
    w('mem', P + 4, 4, 0xffffffff);
    r('mem', P + 4, 4);
    r('mem', T + 16 * nv, 4);
    w('mem', T + 16 * nv, 4, 5);
    r('mem', T + 16 * nv, 4);
    r('mem', P + 8, 4);
    r('mem', BAR1_BASE + 0xffc, 4);
    w('cfg', msixCap + 2, 2, 0xc000);
    r('cfg', msixCap, 4);
    w('cfg', msixCap + 2, 2, 0x4000);
    r('cfg', msixCap, 4);
    w('cfg', msixCap + 2, 2, 0);
    w('cfg', msixCap + 4, 4, 0xffffffff);
    r('cfg', msixCap + 4, 4);
    r('cfg', msixCap + 8, 4);
  }
  // Turning the BARs off and on again.
  w('cfg', 0x04, 2, 0);
  if (has(0)) r('io', L + 0, 4);
  if (has(4)) r('mem', C + 0x12, 2);
  w('cfg', 0x04, 2, 0x0007);
  if (has(4)) r('mem', C + 0x12, 2);
  return ops;
}

/** Run a script on QEMU, filling in the read values. */
async function runOps(q, devfn, ops) {
  const sel = (off) => q.outl(0xcf8, (0x80000000 | (devfn << 8) | (off & 0xfc)) >>> 0);
  for (const op of ops) {
    const [space, rw, off, size] = op;
    if (space === 'cfg') {
      await sel(off);
      const port = 0xcfc + (off & 3);
      if (rw === 'r') op[4] = hex(size === 1 ? await q.inb(port) : size === 2 ? await q.inw(port) : await q.inl(port), size * 2);
      else await (size === 1 ? q.outb : size === 2 ? q.outw : q.outl)(port, Number(op[4]));
    } else if (space === 'io') {
      if (rw === 'r') op[4] = hex(size === 1 ? await q.inb(off) : size === 2 ? await q.inw(off) : await q.inl(off), size * 2);
      else await (size === 1 ? q.outb : size === 2 ? q.outw : q.outl)(off, Number(op[4]));
    } else {
      const rd = () => (size === 1 ? q.readb(off) : size === 2 ? q.readw(off) : q.readl(off));
      if (rw === 'r') {
        op[4] = hex(await rd(), size * 2);
      } else if (rw === 'p') {
        // Poll: QEMU may finish a request in its main loop (rng-builtin answers from a bottom
        // half), so wait up to 300 ms for a non-zero value. Our device answers at once.
        let v = await rd();
        for (const t0 = Date.now(); v === 0 && Date.now() - t0 < 300; v = await rd()) await new Promise((res) => setTimeout(res, 2));
        op[4] = hex(v, size * 2);
      } else {
        await (size === 1 ? q.writeb : size === 2 ? q.writew : q.writel)(off, Number(op[4]));
      }
    }
  }
  return ops;
}

/**
 * Data-path scenarios: complete entropy requests with rings in RAM, MSI-X messages landing in
 * RAM (as libqos checks them), INTx through the status register's interrupt bit, bus mastering
 * off, the legacy "disabled" quirk, and queue_reset. Each runs in a fresh QEMU.
 */
const SCENARIOS = (() => {
  const C = BAR4_BASE;
  const L = IO_BASE;
  const T = BAR1_BASE;
  const DESC = 0x10000, AVAIL = 0x11000, USED = 0x12000, BUF = 0x40000;
  const list = [];
  const scenario = (name, device, build) => {
    const ops = [];
    const S = {
      r: (sp, off, size) => ops.push([sp, 'r', off, size, null]),
      w: (sp, off, size, v) => ops.push([sp, 'w', off, size, hex(v, size * 2)]),
      poll: (off, size) => ops.push(['ram', 'p', off, size, null]),
    };
    build(S);
    list.push({ name, device: `virtio-rng-pci${device ? ',' + device : ''},addr=02.0,ioeventfd=off`, ops });
  };
  const map = (S, cmd, { io = false, msix = true, modern = true } = {}) => {
    if (io) S.w('cfg', 0x10, 4, L);
    if (msix) S.w('cfg', 0x14, 4, T);
    if (modern) {
      S.w('cfg', 0x20, 4, C);
      S.w('cfg', 0x24, 4, 0);
    }
    S.w('cfg', 0x04, 2, cmd);
  };
  const msixEntry = (S, v, masked) => {
    S.w('mem', T + 16 * v, 4, 0x8000 + 16 * v);
    S.w('mem', T + 16 * v + 4, 4, 0);
    S.w('mem', T + 16 * v + 8, 4, 0x12345670 + v);
    S.w('mem', T + 16 * v + 12, 4, masked ? 1 : 0);
  };
  const modernInit = (S, featuresHi = 1) => {
    for (const st of [0, 1, 3]) S.w('mem', C + 0x14, 1, st);
    S.w('mem', C + 0x08, 4, 1);
    S.w('mem', C + 0x0c, 4, featuresHi);
    S.w('mem', C + 0x08, 4, 0);
    S.w('mem', C + 0x0c, 4, 0);
    S.w('mem', C + 0x14, 1, 0xb);
    S.r('mem', C + 0x14, 1);
  };
  const modernQueue = (S, vector, base = 0) => {
    S.w('mem', C + 0x16, 2, 0);
    S.w('mem', C + 0x18, 2, 8);
    if (vector !== undefined) S.w('mem', C + 0x1a, 2, vector);
    S.r('mem', C + 0x1a, 2);
    for (const [o, a] of [[0x20, DESC + base], [0x28, AVAIL + base], [0x30, USED + base]]) {
      S.w('mem', C + o, 4, a);
      S.w('mem', C + o + 4, 4, 0);
    }
    S.w('mem', C + 0x1c, 2, 1);
  };
  /** Post head `idx` (a 16-byte writable buffer) and publish avail.idx = idx + 1. */
  const post = (S, idx, desc, avail, len = 16) => {
    S.w('ram', desc + 16 * idx, 4, BUF + 0x100 * idx);
    S.w('ram', desc + 16 * idx + 4, 4, 0);
    S.w('ram', desc + 16 * idx + 8, 4, len);
    S.w('ram', desc + 16 * idx + 12, 2, 2);
    S.w('ram', desc + 16 * idx + 14, 2, 0);
    S.w('ram', avail + 4 + 2 * idx, 2, idx);
    S.w('ram', avail + 2, 2, idx + 1);
  };
  const usedCheck = (S, used, idx) => {
    S.poll(used + 2, 2);
    S.r('ram', used + 4 + 8 * idx, 4);
    S.r('ram', used + 8 + 8 * idx, 4);
  };

  scenario('modern-msix', 'disable-legacy=on', (S) => {
    map(S, 7);
    S.w('cfg', 0x98 + 2, 2, 0x8000);
    msixEntry(S, 0, false);
    msixEntry(S, 1, false);
    modernInit(S);
    S.w('mem', C + 0x10, 2, 0);
    S.r('mem', C + 0x10, 2);
    modernQueue(S, 1);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 0, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 0);
    S.poll(0x8010, 4);
    S.r('ram', 0x8000, 4);
    S.r('cfg', 0x04, 4);
    S.r('mem', C + 0x1000, 1);
    S.r('mem', C + 0x1000, 1);
    S.r('mem', T + 0x800, 4);
  });

  scenario('modern-msix-masked-then-unmasked', 'disable-legacy=on,vectors=4', (S) => {
    map(S, 7);
    S.w('cfg', 0x98 + 2, 2, 0x8000);
    msixEntry(S, 2, true);
    modernInit(S);
    modernQueue(S, 2);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 0, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 0);
    S.r('ram', 0x8020, 4);
    S.r('mem', T + 0x800, 4);
    S.w('mem', T + 16 * 2 + 12, 4, 0);
    S.poll(0x8020, 4);
    S.r('mem', T + 0x800, 4);
    // Function mask: pending while set, delivered when cleared.
    S.w('ram', 0x8020, 4, 0);
    S.w('cfg', 0x98 + 2, 2, 0xc000);
    post(S, 1, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 1);
    S.r('ram', 0x8020, 4);
    S.r('mem', T + 0x800, 4);
    S.w('cfg', 0x98 + 2, 2, 0x8000);
    S.poll(0x8020, 4);
    S.r('mem', T + 0x800, 4);
  });

  scenario('modern-intx', 'disable-legacy=on', (S) => {
    map(S, 7);
    modernInit(S);
    modernQueue(S);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 0, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 0);
    S.r('cfg', 0x04, 4);
    S.r('mem', C + 0x1000, 1);
    S.r('cfg', 0x04, 4);
    S.r('mem', C + 0x1000, 1);
  });

  scenario('modern-master-off', 'disable-legacy=on', (S) => {
    map(S, 3);
    S.w('cfg', 0x98 + 2, 2, 0x8000);
    msixEntry(S, 1, false);
    modernInit(S);
    modernQueue(S, 1);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 0, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 0);
    S.r('ram', 0x8010, 4);
    S.r('mem', T + 0x800, 4);
    S.r('mem', C + 0x1000, 1);
    S.w('cfg', 0x04, 2, 7);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 1, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 1);
    S.poll(0x8010, 4);
    // Master off again: DRIVER_OK cleared, the device disabled.
    S.w('cfg', 0x04, 2, 3);
    S.r('mem', C + 0x14, 1);
    post(S, 2, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 2);
  });

  scenario('legacy-intx', 'disable-modern=on', (S) => {
    map(S, 7, { io: true, modern: false });
    for (const st of [0, 1, 3]) S.w('io', L + 0x12, 1, st);
    S.r('io', L + 0, 4);
    S.w('io', L + 4, 4, 0);
    S.w('io', L + 0xe, 2, 0);
    S.r('io', L + 0xc, 2);
    S.w('io', L + 8, 4, 0x20);
    S.w('io', L + 0x12, 1, 7);
    post(S, 0, 0x20000, 0x20000 + 128);
    S.w('io', L + 0x10, 2, 0);
    usedCheck(S, 0x21000, 0);
    S.r('cfg', 0x04, 4);
    S.r('io', L + 0x13, 1);
    S.r('cfg', 0x04, 4);
  });

  scenario('legacy-msix', 'disable-modern=on', (S) => {
    map(S, 7, { io: true, modern: false });
    S.w('cfg', 0x40 + 2, 2, 0x8000);
    msixEntry(S, 0, false);
    msixEntry(S, 1, false);
    for (const st of [0, 1, 3]) S.w('io', L + 0x12, 1, st);
    S.w('io', L + 0x14, 2, 0);
    S.r('io', L + 0x14, 2);
    S.w('io', L + 0xe, 2, 0);
    S.w('io', L + 0x16, 2, 1);
    S.r('io', L + 0x16, 2);
    S.w('io', L + 8, 4, 0x20);
    S.w('io', L + 0x12, 1, 7);
    post(S, 0, 0x20000, 0x20000 + 128);
    S.w('io', L + 0x10, 2, 0);
    usedCheck(S, 0x21000, 0);
    S.poll(0x8010, 4);
    S.r('ram', 0x8000, 4);
    S.r('io', L + 0x13, 1);
    S.r('io', L + 0x18, 4);
  });

  scenario('legacy-disabled-quirk', 'disable-modern=on', (S) => {
    map(S, 3, { io: true, msix: false, modern: false });
    S.w('io', L + 0x12, 1, 3);
    S.r('cfg', 0x04, 4);
    S.w('io', L + 0xe, 2, 0);
    S.w('io', L + 8, 4, 0x20);
    S.w('io', L + 0x12, 1, 7);
    post(S, 0, 0x20000, 0x20000 + 128);
    S.w('io', L + 0x10, 2, 0);
    usedCheck(S, 0x21000, 0);
    S.w('io', L + 0x12, 1, 0);
    for (const st of [1, 3]) S.w('io', L + 0x12, 1, st);
    S.w('io', L + 0xe, 2, 0);
    S.w('io', L + 8, 4, 0x20);
    S.w('io', L + 0x12, 1, 7);
    S.w('io', L + 0x10, 2, 0);
    usedCheck(S, 0x21000, 0);
  });

  scenario('modern-queue-reset', 'disable-legacy=on', (S) => {
    map(S, 7);
    modernInit(S, 0x101); // VERSION_1 | RING_RESET
    modernQueue(S);
    S.w('mem', C + 0x14, 1, 0xf);
    post(S, 0, DESC, AVAIL);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED, 0);
    S.w('mem', C + 0x3a, 2, 1);
    for (const o of [0x18, 0x1a, 0x1c, 0x3a]) S.r('mem', C + o, 2);
    S.r('mem', C + 0x20, 4);
    modernQueue(S, undefined, 0x20000);
    post(S, 0, DESC + 0x20000, AVAIL + 0x20000);
    S.w('mem', C + 0x3000, 2, 0);
    usedCheck(S, USED + 0x20000, 0);
    S.r('mem', C + 0x1000, 1);
  });
  return list;
})();

async function withQemu(dir, deviceArgs, fn) {
  const q = await startQemu(dir, deviceArgs);
  const timer = setTimeout(() => {
    console.error(`timeout: ${q.args.join(' ')}`);
    q.stop();
  }, CASE_TIMEOUT_MS);
  try {
    return await fn(q);
  } finally {
    clearTimeout(timer);
    await q.stop();
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'pci-golden-'));
  writeFileSync(join(dir, 'halt.bin'), haltBios());
  mkdirSync(OUT, { recursive: true });
  let version = '';
  try {
    version = await new Promise((res) => {
      const p = spawn(QEMU, ['--version'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let s = '';
      p.stdout.on('data', (d) => (s += d));
      p.on('exit', () => res(s.split('\n')[0].trim()));
      p.on('error', () => res(''));
    });
    if (!version) throw new Error(`${QEMU} not found`);
    const written = [];
    for (const [name, opts] of RNG_CASES) {
      const device = `virtio-rng-pci${opts ? ',' + opts : ''},addr=02.0,ioeventfd=off`;
      const rec = await withQemu(dir, ['-device', device], async (q) => {
        const c = cfg(q, 2 << 3);
        const config = await c.dump();
        const probe = await barProbe(c);
        const bars = decodeBars(config, probe);
        const writes = await writeProbe(c);
        const after = await c.dump();
        if (!after.equals(config)) throw new Error(`${name}: config changed by the write probe`);
        const registers = await registerReads(q, c, bars);
        const ops = await runOps(q, 2 << 3, buildOps(config, bars));
        return {
          qemu: version,
          commandLine: q.args.map((a) => a.replace(dir, '$TMP')),
          device,
          devfn: '00:02.0',
          config: config.toString('hex'),
          barProbe: probe,
          bars,
          writeProbe: writes,
          registers,
          ops,
          stderr: q.stderr(),
        };
      });
      writeFileSync(join(OUT, `${name}.json`), toJson(rec));
      written.push(name);
    }
    const scenarios = [];
    for (const sc of SCENARIOS) {
      scenarios.push(await withQemu(dir, ['-device', sc.device], async (q) => ({
        name: sc.name,
        device: sc.device,
        commandLine: q.args.map((a) => a.replace(dir, '$TMP')),
        ops: await runOps(q, 2 << 3, sc.ops.map((op) => op.slice())),
        stderr: q.stderr(),
      })));
    }
    writeFileSync(join(OUT, 'scenarios.json'), toJson({ qemu: version, scenarios }));
    written.push('scenarios');
    for (const [name, devfn] of [['host-bridge', 0], ['isa-bridge', 1 << 3]]) {
      const device = 'virtio-rng-pci,addr=02.0,ioeventfd=off';
      const rec = await withQemu(dir, ['-device', device], async (q) => {
        const c = cfg(q, devfn);
        const config = await c.dump();
        return { qemu: version, commandLine: q.args.map((a) => a.replace(dir, '$TMP')), devfn: `00:0${devfn >> 3}.0`, config: config.toString('hex') };
      });
      // The write probe in a fresh QEMU: writing ones may lock registers (i440FX SMRAM D_LCK).
      rec.writeProbe = await withQemu(dir, ['-device', device], async (q) => writeProbe(cfg(q, devfn)));
      rec.writeProbeNote = 'taken in a separate QEMU run; dwords are restored after each probe, but lock bits (e.g. SMRAM D_LCK at 0x72) may stick';
      writeFileSync(join(OUT, `${name}.json`), toJson(rec));
      written.push(name);
    }
    console.log(`${version}: wrote ${written.length} files to ${OUT}: ${written.join(', ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
