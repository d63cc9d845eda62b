// `virtio-ts v86`: boot a Linux kernel in v86 (the npm package, an optional peer dependency,
// loaded only here) with our virtio devices on its PCI bus through virtio-ts/v86: rng, blk (with
// --disk), console (hvc0), net (a UDP wire with --net, as QEMU's `-netdev dgram`) and input
// (keyboard, tablet). The guest's serial console and hvc0 are the terminal.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { NodeFileBlockBackend } from '../devices/blk/backends/node-file.js';
import { VirtIOBlock } from '../devices/blk/blk.js';
import { CallbackChardev } from '../devices/console/chardev.js';
import { VirtIOSerial } from '../devices/console/virtio-serial.js';
import { VirtIOKeyboard, VirtIOTablet } from '../devices/input/hid.js';
import { UdpNetBackend } from '../devices/net/backends/node.js';
import type { NetBackend } from '../devices/net/net-client.js';
import { VirtIONet } from '../devices/net/virtio-net.js';
import { VirtIORng } from '../devices/rng.js';
import { v86Host, type V86PciHost } from '../embed/v86/host.js';
import type { V86Emulator } from '../embed/v86/types.js';
import { v86VirtioPci } from '../embed/v86/virtio.js';

export const V86_USAGE = `usage: virtio-ts v86 --kernel BZIMAGE [--initrd FILE] [--disk IMG] [options]

Boots BZIMAGE in v86 with virtio-ts devices on its PCI bus: virtio-rng, virtio-blk (IMG),
virtio-console (hvc0), virtio-net and virtio-input (keyboard, tablet). The serial console (ttyS0) and hvc0
print on this terminal; what you type goes to ttyS0 (--console hvc0: to hvc0). Ctrl-] quits.

options:
  --kernel FILE       a Linux bzImage (required)
  --initrd FILE       an initramfs
  --disk IMG          a raw disk image for virtio-blk (read-write; --read-only to protect it)
  --read-only         open IMG read-only
  --net udp:LPORT:RHOST:RPORT
                      virtio-net's wire: one Ethernet frame per UDP datagram, from local port
                      LPORT to RHOST:RPORT (QEMU's -netdev dgram; another virtio-ts v86 or a
                      QEMU can be the other end); without it the NIC's cable is unplugged
  --bios FILE         SeaBIOS (bios.bin); default: Debian's /usr/share/seabios/bios.bin, or
                      .cache/v86/inputs.json (node scripts/v86-inputs.mjs)
  --memory MIB        guest RAM (default 256; above 64 + initrd size, where v86 puts the initrd)
  --append TEXT       kernel command line (default: console=ttyS0)
  --console ttyS0|hvc0
                      where the terminal's input goes (default ttyS0)
  --legacy            legacy virtio-pci only (default: transitional, Linux takes modern)
  --packed            every device offers packed virtqueues (VIRTIO_F_RING_PACKED), which
                      Linux takes on the modern interface (not with --legacy)
  --exit-on TEXT      quit (status 0) once the guest printed TEXT
  --timeout SECONDS   quit (status 1) after this long
  --save-state FILE   on quitting, write a v86 snapshot of the machine, our devices included
  --restore-state FILE
                      start from such a snapshot instead of booting (same devices and options;
                      the disk image must be as it was when the snapshot was taken)
  --quiet             no start-up messages`;

export interface V86CliOptions {
  kernel: string;
  initrd: string | undefined;
  disk: string | undefined;
  readOnly: boolean;
  /** --net udp:LPORT:RHOST:RPORT. */
  net: { localPort: number; remoteHost: string; remotePort: number } | undefined;
  bios: string | undefined;
  memoryMiB: number;
  append: string;
  console: 'ttyS0' | 'hvc0';
  legacy: boolean;
  packed: boolean;
  exitOn: string | undefined;
  timeoutS: number | undefined;
  saveState: string | undefined;
  restoreState: string | undefined;
  quiet: boolean;
}

/** The options, or an error message. */
export function parseV86Args(argv: readonly string[]): V86CliOptions | string {
  const o: Partial<V86CliOptions> = { readOnly: false, memoryMiB: 256, append: 'console=ttyS0', console: 'ttyS0', legacy: false, packed: false, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string | undefined => {
      const v = argv[i + 1];
      i++;
      return v;
    };
    switch (a) {
      case '--kernel': o.kernel = value(); if (o.kernel === undefined) return '--kernel needs a file'; break;
      case '--initrd': o.initrd = value(); if (o.initrd === undefined) return '--initrd needs a file'; break;
      case '--disk': o.disk = value(); if (o.disk === undefined) return '--disk needs a file'; break;
      case '--bios': o.bios = value(); if (o.bios === undefined) return '--bios needs a file'; break;
      case '--save-state': o.saveState = value(); if (o.saveState === undefined) return '--save-state needs a file'; break;
      case '--restore-state': o.restoreState = value(); if (o.restoreState === undefined) return '--restore-state needs a file'; break;
      case '--read-only': o.readOnly = true; break;
      case '--net': {
        const m = /^udp:(\d+):([^:]+):(\d+)$/.exec(value() ?? '');
        const lp = Number(m?.[1]);
        const rp = Number(m?.[3]);
        if (!m || !(lp > 0 && lp < 65536) || !(rp > 0 && rp < 65536)) return '--net takes udp:LPORT:RHOST:RPORT';
        o.net = { localPort: lp, remoteHost: m[2]!, remotePort: rp };
        break;
      }
      case '--legacy': o.legacy = true; break;
      case '--packed': o.packed = true; break;
      case '--quiet': o.quiet = true; break;
      case '--append': {
        const v = value();
        if (v === undefined) return '--append needs text';
        o.append = v;
        break;
      }
      case '--exit-on': {
        const v = value();
        if (!v) return '--exit-on needs text';
        o.exitOn = v;
        break;
      }
      case '--memory': {
        const n = Number(value());
        if (!Number.isInteger(n) || n < 16 || n > 2048) return '--memory takes MiB, 16..2048';
        o.memoryMiB = n;
        break;
      }
      case '--timeout': {
        const n = Number(value());
        if (!(n > 0)) return '--timeout takes seconds';
        o.timeoutS = n;
        break;
      }
      case '--console': {
        const v = value();
        if (v !== 'ttyS0' && v !== 'hvc0') return '--console is ttyS0 or hvc0';
        o.console = v;
        break;
      }
      default:
        return `unknown option '${a}'`;
    }
  }
  if (o.kernel === undefined) return '--kernel is required';
  // Packed rings need VERSION_1: a legacy-only device could offer them to nobody.
  if (o.packed && o.legacy) return '--packed needs the modern interface: not with --legacy';
  return o as V86CliOptions;
}

/** A SeaBIOS image: the one given, Debian's, or the one scripts/v86-inputs.mjs fetched. */
export function findSeaBios(cwd: string = process.cwd()): string | undefined {
  for (const p of ['/usr/share/seabios/bios.bin', '/usr/share/seabios/bios-256k.bin']) if (existsSync(p)) return p;
  const inputs = join(cwd, '.cache/v86/inputs.json');
  if (existsSync(inputs)) {
    try {
      const bios = (JSON.parse(readFileSync(inputs, 'utf8')) as { bios?: unknown }).bios;
      if (typeof bios === 'string' && existsSync(join(cwd, bios))) return join(cwd, bios);
    } catch {
      // not ours to diagnose: fall through to "none found"
    }
  }
  return undefined;
}

/** What the command puts on the machine. */
export interface V86Devices {
  rng: VirtIORng;
  blk: VirtIOBlock | undefined;
  serial: VirtIOSerial;
  hvc0: CallbackChardev;
  keyboard: VirtIOKeyboard;
  tablet: VirtIOTablet;
  net: VirtIONet;
}

/**
 * Our devices on `host`: rng (slot 13), blk (14, when a backend is given), console with hvc0 on
 * `hvc0Output` (15), keyboard (16), tablet (17), net on `netdev` (19; none: cable unplugged).
 */
export function attachDevices(
  host: V86PciHost,
  opts: { disk?: NodeFileBlockBackend; netdev?: NetBackend; legacy: boolean; packed?: boolean; hvc0Output: (data: Uint8Array) => void },
): V86Devices {
  const memory = host.memory;
  const pci = { disableModern: opts.legacy };
  const packed = opts.packed === true;
  const rng = new VirtIORng({ memory, queueSize: 256, packed });
  host.attach(v86VirtioPci(rng, pci), { slot: 13 });
  let blk: VirtIOBlock | undefined;
  if (opts.disk) {
    blk = new VirtIOBlock({ memory, backend: opts.disk, queueSize: 256, packed });
    host.attach(v86VirtioPci(blk, pci), { slot: 14 });
  }
  const serial = new VirtIOSerial({ memory, packed });
  const hvc0 = new CallbackChardev('hvc0', { output: (d) => opts.hvc0Output(d.slice()) });
  serial.addPort({ console: true, chardev: hvc0 });
  host.attach(v86VirtioPci(serial, pci), { slot: 15 });
  // virtio-input has no legacy interface (QEMU makes it modern-only): always modern.
  const keyboard = new VirtIOKeyboard({ memory, packed });
  const tablet = new VirtIOTablet({ memory, packed });
  // Separate slots: a function 1 is found only behind a multi-function function 0.
  host.attach(v86VirtioPci(keyboard), { slot: 16 });
  host.attach(v86VirtioPci(tablet), { slot: 17 });
  // Slot 18 is v86's.
  const net = new VirtIONet({ memory, packed, ...(opts.netdev ? { netdev: opts.netdev } : {}) });
  host.attach(v86VirtioPci(net, pci), { slot: 19 });
  return { rng, blk, serial, hvc0, keyboard, tablet, net };
}

interface V86Like extends V86Emulator {
  add_listener(event: string, fn: (arg: never) => void): void;
  run(): Promise<void>;
  destroy(): Promise<void>;
  serial0_send(data: string): void;
  stop(): Promise<void>;
  save_state(): Promise<ArrayBuffer>;
  restore_state(state: ArrayBuffer): Promise<void>;
}

/** The terminal: process's streams by default; tests pass their own. */
export interface V86CliIo {
  stdin: NodeJS.ReadableStream & { isTTY?: boolean; setRawMode?(raw: boolean): unknown };
  stdout: { write(data: Uint8Array | string): unknown };
  stderr: { write(data: string): unknown };
}

type V86Constructor = new (options: Record<string, unknown>) => V86Like;

const toBuffer = (path: string): { buffer: ArrayBuffer } => {
  const b = readFileSync(path);
  return { buffer: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer };
};

/** Runs the command; resolves with the exit status once the machine is gone. */
export async function runV86(argv: readonly string[], io: V86CliIo = { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const opts = parseV86Args(argv);
  const error = (m: string): void => void io.stderr.write(`virtio-ts v86: ${m}\n`);
  if (typeof opts === 'string') {
    error(`${opts}\n${V86_USAGE}`);
    return 2;
  }
  const say = (m: string): void => {
    if (!opts.quiet) error(m);
  };
  const bios = opts.bios ?? findSeaBios();
  if (bios === undefined) {
    error('no SeaBIOS found (apt install seabios, or --bios FILE); v86 needs a BIOS to boot a bzImage');
    return 2;
  }
  for (const f of [opts.kernel, opts.initrd, bios, opts.restoreState]) {
    if (f !== undefined && !existsSync(f)) {
      error(`${f}: no such file`);
      return 2;
    }
  }
  // v86 is an optional peer dependency: only this command needs it.
  let V86: V86Constructor;
  let wasm: string;
  try {
    const mod = (await import('v86')) as unknown as { V86: V86Constructor };
    V86 = mod.V86;
    const require = createRequire(import.meta.url);
    wasm = require.resolve('v86/build/v86.wasm');
  } catch (e) {
    error(`the v86 package is not installed (npm install v86): ${e instanceof Error ? e.message : String(e)}`);
    return 2;
  }
  let disk: NodeFileBlockBackend | undefined;
  if (opts.disk !== undefined) {
    try {
      disk = await NodeFileBlockBackend.open(opts.disk, { readOnly: opts.readOnly });
    } catch (e) {
      error(e instanceof Error ? e.message : String(e));
      return 2;
    }
  }

  let udp: UdpNetBackend | undefined;
  if (opts.net !== undefined) {
    try {
      udp = await UdpNetBackend.open({ name: 'net0', kind: 'dgram', local: { host: '0.0.0.0', port: opts.net.localPort }, remote: { host: opts.net.remoteHost, port: opts.net.remotePort } });
    } catch (e) {
      error(`--net: ${e instanceof Error ? e.message : String(e)}`);
      return 2;
    }
  }

  const out = io.stdout;
  const emulator = new V86({
    wasm_path: wasm,
    memory_size: opts.memoryMiB << 20,
    bios: toBuffer(bios),
    bzimage: toBuffer(opts.kernel),
    ...(opts.initrd !== undefined ? { initrd: toBuffer(opts.initrd) } : {}),
    cmdline: opts.append,
    autostart: false,
    disable_speaker: true,
  });

  return new Promise<number>((resolve) => {
    let seen = '';
    let finished = false;
    let devices: V86Devices | undefined;
    let running = false;
    const finish = (code: number): void => {
      if (finished) return;
      finished = true;
      if (io.stdin.isTTY) io.stdin.setRawMode?.(false);
      io.stdin.pause();
      udp?.close();
      const save = async (): Promise<number> => {
        if (opts.saveState === undefined || !running) return code;
        try {
          // finish() may run inside one of v86's own callbacks (the serial byte that completed
          // --exit-on), in the middle of a guest instruction: stop the CPU at a boundary first.
          await emulator.stop();
          const state = await emulator.save_state();
          writeFileSync(opts.saveState, new Uint8Array(state));
          say(`snapshot written to ${opts.saveState} (${state.byteLength} bytes)`);
          return code;
        } catch (e) {
          error(`--save-state ${opts.saveState}: ${e instanceof Error ? e.message : String(e)}`);
          return 1;
        }
      };
      void save().then((status) =>
        emulator.destroy().then(
          () => resolve(status),
          () => resolve(status),
        ),
      );
    };
    const printed = (text: string): void => {
      if (opts.exitOn === undefined) return;
      // Keep only what could still complete a match.
      seen = (seen + text).slice(-(opts.exitOn.length + 4096));
      if (seen.includes(opts.exitOn)) finish(0);
    };
    const hvc0Output = (d: Uint8Array): void => {
      out.write(d);
      printed(Buffer.from(d).toString('latin1'));
    };
    emulator.add_listener('serial0-output-byte', (b: number) => {
      out.write(Uint8Array.of(b));
      printed(String.fromCharCode(b));
    });
    emulator.add_listener('emulator-loaded', () => {
      const start = async (): Promise<void> => {
        const host = v86Host(emulator, { onWarning: (w) => say(`warning: ${w}`) });
        devices = attachDevices(host, { disk, ...(udp ? { netdev: udp } : {}), legacy: opts.legacy, packed: opts.packed, hvc0Output });
        if (opts.restoreState !== undefined) {
          const b = readFileSync(opts.restoreState);
          try {
            await emulator.restore_state(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
          } catch (e) {
            throw new Error(`--restore-state ${opts.restoreState}: ${e instanceof Error ? e.message : String(e)}`);
          }
          say(`restored ${opts.restoreState}`);
        }
        say(`rng, ${devices.blk ? 'blk, ' : ''}console (hvc0), keyboard, tablet and net${udp ? '' : ' (unplugged)'} on the PCI bus; Ctrl-] quits`);
        running = true;
        void emulator.run();
      };
      start().catch((e: unknown) => {
        error(e instanceof Error ? e.message : String(e));
        finish(1);
      });
    });
    if (opts.timeoutS !== undefined) setTimeout(() => finish(1), opts.timeoutS * 1000).unref();
    const stdin = io.stdin;
    if (stdin.isTTY) stdin.setRawMode?.(true);
    stdin.on('data', (chunk: Buffer) => {
      if (chunk.includes(0x1d)) {
        finish(0);
        return;
      }
      if (opts.console === 'hvc0' && devices) devices.hvc0.input(chunk);
      else emulator.serial0_send(chunk.toString('latin1'));
    });
    stdin.on('error', () => undefined);
    stdin.resume();
  });
}
