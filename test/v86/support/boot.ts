// Boots the test guest (Debian's i386 kernel, our initramfs with init.sh) in the npm v86
// emulator under Node, with SeaBIOS, and collects what /init reports on the serial console.
//
//   const run = await bootGuest({
//     onLoaded: (emulator) => attachToV86(emulator, fn, { slot: 13 }),   // before emulator.run()
//     onLine: (line, emulator) => { if (line.startsWith('VT-READY input')) inject(...); },
//     cmdline: ['vt.tests=rng'],
//   });
//   expect(run.report.results.get('rng')?.ok).toBe(true);
//
// One fresh emulator per boot, destroyed whatever happens. A boot takes 15-25 s on the 2-core
// machine, so a test file should boot as few times as it can (attach all devices to one boot).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { V86, type V86Options } from 'v86';
import { buildInitramfs } from './initramfs.js';
import { loadV86Inputs, type V86Inputs } from './inputs.js';
import { addLine, emptyReport, vtLine, type GuestReport } from './results.js';

/**
 * The command line the kernel gets before the caller's additions: the one of the v86 notes, and
 * three switches that each took seconds of an emulated boot (measured with initcall_debug):
 * the crypto self-tests run at late_initcall (7.3 s of guest time), ISA PnP scanning (0.9 s),
 * and the PnP BIOS probe.
 */
export const BASE_CMDLINE =
  'console=ttyS0 rdinit=/init loglevel=4 tsc=unstable mitigations=off cryptomgr.notests=1 noisapnp pnpbios=off';

export interface BootOptions {
  /**
   * Called once the emulator has loaded (its CPU and PCI bus exist) and before `emulator.run()`:
   * register PCI functions here, since v86 knows of no hot-plug. May be async.
   */
  onLoaded?: (emulator: V86) => void | Promise<void>;
  /** Called with every complete serial line (without CR/LF), e.g. to act on VT-READY. */
  onLine?: (line: string, emulator: V86) => void;
  /** Added to the kernel command line: `vt.tests=rng,blk`, `virtio_pci.force_legacy=1`, ... */
  cmdline?: string | readonly string[];
  /**
   * End the boot early, without VT-DONE, after the first line for which this returns true (or
   * once the promise it returns settles): e.g. to take a snapshot of the machine mid-run.
   */
  until?: (line: string, emulator: V86) => boolean | Promise<boolean>;
  /** Shorthand for `vt.tests=` (default: init.sh tests the devices it finds). */
  tests?: readonly string[];
  /** The initramfs; default: buildInitramfs() (busybox, virtio modules, init.sh). */
  initrd?: Uint8Array;
  /** Guest RAM; v86 puts the initrd at 64 MiB, so this must exceed 64 MiB + initrd. Default 128. */
  memoryMiB?: number;
  /**
   * Whole boot, from construction to VT-DONE. Default 120 s: a boot with every device takes
   * 30-40 s on a quiet 2-core machine and twice that while other tests share the cores.
   */
  timeoutMs?: number;
  /** Copy the serial output to stderr as it comes (also with VT_SERIAL=1 in the environment). */
  echo?: boolean;
  inputs?: V86Inputs;
  /**
   * More v86 options, merged over ours: v86's own devices (`net_device: { type: 'virtio' }`,
   * `virtio_console`, `virtio_balloon`) for checking the guest program without ours.
   */
  v86Options?: Partial<V86Options>;
}

export interface BootTimings {
  /** From construction to the emulator-loaded event. */
  loadedMs: number;
  /** From construction to the first serial byte (kernel or init, with loglevel=4). */
  firstSerialMs: number | undefined;
  /** From construction to init's first line (`VT-RESULT boot`). */
  initMs: number | undefined;
  /** From construction to VT-DONE. */
  doneMs: number;
}

export interface BootResult {
  /** All serial output, as text. */
  serial: string;
  report: GuestReport;
  timings: BootTimings;
  cmdline: string;
}

const require = createRequire(import.meta.url);

/** The v86 JIT's wasm beside libv86.mjs in the installed package. */
export const v86Wasm = require.resolve('v86/build/v86.wasm');

const toArrayBuffer = (u8: Uint8Array): ArrayBuffer => u8.slice().buffer;

/** The kernel's last words when it cannot go on; no VT-DONE will follow. */
const FATAL = /Kernel panic|Attempted to kill init|---\[ end trace/;

export class BootError extends Error {
  constructor(
    message: string,
    readonly serial: string,
    readonly report: GuestReport,
  ) {
    super(`${message}\n--- serial output (last 60 lines) ---\n${serial.split('\n').slice(-60).join('\n')}`);
  }
}

export async function bootGuest(options: BootOptions = {}): Promise<BootResult> {
  const inputs = options.inputs ?? loadV86Inputs();
  const initrd = options.initrd ?? buildInitramfs({ inputs }).image;
  const memoryMiB = options.memoryMiB ?? 128;
  if (memoryMiB * 1024 * 1024 <= 64 * 1024 * 1024 + initrd.length) {
    throw new Error(`bootGuest: ${memoryMiB} MiB cannot hold the initrd above v86's 64 MiB mark`);
  }
  const extra = typeof options.cmdline === 'string' ? [options.cmdline] : [...(options.cmdline ?? [])];
  if (options.tests) extra.push(`vt.tests=${options.tests.length > 0 ? options.tests.join(',') : 'none'}`);
  const cmdline = [BASE_CMDLINE, ...extra].join(' ');
  const echo = options.echo ?? process.env.VT_SERIAL === '1';
  const timeoutMs = options.timeoutMs ?? 120_000;

  const t0 = performance.now();
  const since = (): number => Math.round(performance.now() - t0);
  const emulator = new V86({
    wasm_path: v86Wasm,
    memory_size: memoryMiB * 1024 * 1024,
    bios: { buffer: toArrayBuffer(readFileSync(inputs.bios)) },
    bzimage: { buffer: toArrayBuffer(readFileSync(inputs.kernel)) },
    initrd: { buffer: toArrayBuffer(initrd) },
    cmdline,
    autostart: false,
    disable_speaker: true,
    ...options.v86Options,
  });

  const report = emptyReport();
  const bytes: number[] = [];
  let serial = '';
  let pending = '';
  let loadedMs = 0;
  let firstSerialMs: number | undefined;
  let initMs: number | undefined;
  let timer: NodeJS.Timeout | undefined;

  try {
    await new Promise<void>((resolve, reject) => {
      const fail = (err: unknown): void => reject(err instanceof Error ? err : new Error(String(err)));
      timer = setTimeout(() => {
        serial += pending;
        reject(new BootError(`bootGuest: no VT-DONE within ${timeoutMs} ms`, serial, report));
      }, timeoutMs);

      const onLine = (line: string): void => {
        if (initMs === undefined && vtLine(line)?.startsWith('VT-RESULT boot ')) initMs = since();
        addLine(report, line);
        options.onLine?.(line, emulator);
        if (report.done) resolve();
        else if (options.until !== undefined) {
          Promise.resolve(options.until(line, emulator)).then((stop) => stop && resolve(), fail);
        }
        else if (FATAL.test(line)) {
          // Let the kernel finish its message before the output is cut.
          setTimeout(() => reject(new BootError(`bootGuest: the guest died (${line.trim()})`, serial + pending, report)), 500);
        }
      };

      emulator.add_listener('serial0-output-byte', (byte: number) => {
        firstSerialMs ??= since();
        bytes.push(byte);
        if (byte !== 0x0a) return;
        // Lines are decoded whole so a UTF-8 sequence is never split.
        const text = Buffer.from(bytes).toString('utf8');
        bytes.length = 0;
        serial += text;
        // Host wall-clock seconds in front: where a slow boot spends its time.
        if (echo) process.stderr.write(`[host ${(since() / 1000).toFixed(2)}] ${text}`);
        try {
          onLine(text.replace(/\r?\n$/, '').replace(/\r/g, ''));
        } catch (err) {
          fail(err);
        }
      });

      emulator.add_listener('emulator-loaded', () => {
        loadedMs = since();
        Promise.resolve()
          .then(() => options.onLoaded?.(emulator))
          .then(() => emulator.run())
          .catch(fail);
      });
    });
  } finally {
    clearTimeout(timer);
    pending = Buffer.from(bytes).toString('utf8');
    await emulator.destroy();
  }
  return {
    serial: serial + pending,
    report,
    timings: { loadedMs, firstSerialMs, initMs, doneMs: since() },
    cmdline,
  };
}

/** v86's internal event bus (absent from its typings); its own devices' data flows through it. */
export interface V86Bus {
  send(name: string, value?: unknown): void;
  register(name: string, fn: (value: unknown) => void, thisArg: unknown): void;
}

export function v86Bus(emulator: V86): V86Bus {
  const bus = (emulator as unknown as { bus?: V86Bus }).bus;
  if (!bus || typeof bus.send !== 'function') throw new Error('v86: emulator.bus is missing (v86 internals changed?)');
  return bus;
}
