// A v86 machine that runs SeaBIOS only (no OS): enough for the BIOS to enumerate PCI, size and
// program our BARs and route the PIRQ lines, after which a test drives our functions the way a
// guest does, through v86's own dispatch (its port table, MMIO blocks and config mechanism).
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { V86Cpu, V86Emulator } from '../../../src/v86.js';

/** A SeaBIOS image: the one scripts/v86-inputs.mjs fetched, or Debian's seabios package. */
export function findBios(): string | undefined {
  const candidates = [join(process.cwd(), '.cache/v86/inputs.json')];
  for (const c of candidates) {
    if (!existsSync(c)) continue;
    try {
      const bios = (JSON.parse(readFileSync(c, 'utf8')) as { bios?: string }).bios;
      if (bios && existsSync(join(process.cwd(), bios))) return join(process.cwd(), bios);
    } catch {
      // fall through to the system one
    }
  }
  return ['/usr/share/seabios/bios.bin', '/usr/share/seabios/bios-256k.bin'].find((p) => existsSync(p));
}

/** v86's wasm, from the installed package. */
export function v86WasmPath(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('v86')), 'v86.wasm');
}

export interface BiosMachine {
  emulator: V86Emulator & { stop(): Promise<void>; destroy(): Promise<void> };
  cpu: V86Cpu & CpuAccess;
}

/** The guest-side accessors v86's CPU has (what its wasm calls for port and MMIO accesses). */
export interface CpuAccess {
  io: V86Cpu['io'] & {
    port_read8(port: number): number;
    port_read16(port: number): number;
    port_read32(port: number): number;
    port_write8(port: number, v: number): void;
    port_write16(port: number, v: number): void;
    port_write32(port: number, v: number): void;
  };
  mmap_read8(addr: number): number;
  mmap_read32(addr: number): number;
  mmap_write8(addr: number, v: number): void;
  mmap_write32(addr: number, v: number): void;
}

/**
 * Start v86 on SeaBIOS with `memoryMiB` of RAM; `onLoaded` attaches devices (before run); the
 * promise resolves once `ready()` says the BIOS has done its PCI work (then the machine is
 * stopped, so the test alone drives it).
 */
export async function startBiosMachine(opts: {
  bios: string;
  memoryMiB?: number;
  onLoaded: (emulator: V86Emulator) => void;
  ready: () => boolean;
  timeoutMs?: number;
}): Promise<BiosMachine> {
  const { V86 } = (await import('v86')) as unknown as { V86: new (o: object) => BiosMachine['emulator'] & { add_listener(e: string, f: () => void): void; run(): Promise<void> } };
  const bios = readFileSync(opts.bios);
  const emulator = new V86({
    wasm_path: v86WasmPath(),
    bios: { buffer: bios.buffer.slice(bios.byteOffset, bios.byteOffset + bios.length) },
    memory_size: (opts.memoryMiB ?? 64) << 20,
    autostart: false,
    disable_speaker: true,
    disable_keyboard: true,
    disable_mouse: true,
  });
  await new Promise<void>((resolve, reject) => {
    emulator.add_listener('emulator-loaded', () => {
      try {
        opts.onLoaded(emulator);
        void emulator.run();
        resolve();
      } catch (e) {
        reject(e);
      }
    });
  });
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (!opts.ready()) {
    if (Date.now() > deadline) {
      await emulator.destroy();
      throw new Error('SeaBIOS did not finish PCI set-up in time');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  // SeaBIOS enables decoding on each function as it goes; let it finish the rest of POST.
  await new Promise((r) => setTimeout(r, 300));
  await emulator.stop();
  return { emulator, cpu: emulator.v86!.cpu as V86Cpu & CpuAccess };
}
