// Differential test against the oracle: the same qtest transcript on qemu-system-x86_64 7.2 and
// on virtio-ts-qemu (both started by the driver library's launcher with the same command line),
// replies compared line by line and intercepted IRQ changes compared in order. QEMU sends a
// virtio-rng completion's IRQ after the notify's OK (a bottom half), we send it before, so IRQ
// lines are compared as a sequence, not by position (docs/qemu-differences.md row 22), and
// QEMU's timer interrupt (IRQ 0, wall-clock driven under TCG) is left out.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchQemu } from '../../src/driver/qemu-launcher.js';
import { QEMU_COMMAND, qemuOrPolicy } from '../driver/impls.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');

interface Transcript {
  replies: string[];
  irqs: string[];
}

async function runTranscript(command: string[], machine: string, args: string[], lines: string[]): Promise<Transcript> {
  const p = await launchQemu({ command, machine, args, name: command.join(' ').slice(-30), startTimeoutMs: 15_000 });
  try {
    const client = p.machine.client;
    const replies: string[] = [];
    for (const l of lines) {
      try {
        replies.push('OK ' + (await client.command(l)));
      } catch (e) {
        replies.push(`ERROR ${(e as Error).message}`);
      }
    }
    const irqs = client.irq.since(0).map((e) => `${e.level ? 'raise' : 'lower'} ${e.line}`);
    return { replies, irqs };
  } finally {
    await p.close();
  }
}

const cfg = (slot: number, fn: number, off: number) => `0x${((0x8000_0000 | (slot << 11) | (fn << 8) | (off & 0xfc)) >>> 0).toString(16)}`;
const cw = (slot: number, off: number, size: 1 | 2 | 4, v: number) => [`outl 0xcf8 ${cfg(slot, 0, off)}`, `out${size === 1 ? 'b' : size === 2 ? 'w' : 'l'} 0x${(0xcfc + (off & 3)).toString(16)} 0x${v.toString(16)}`];
const cr = (slot: number, off: number, size: 1 | 2 | 4) => [`outl 0xcf8 ${cfg(slot, 0, off)}`, `in${size === 1 ? 'b' : size === 2 ? 'w' : 'l'} 0x${(0xcfc + (off & 3)).toString(16)}`];

/** A legacy split ring at 0x10000 (desc), 0x10080 (avail), 0x11000 (used), one 16-byte buffer at 0x20000. */
function postRngBuffer(head: number, availIdx: number): string[] {
  const desc = Buffer.alloc(16);
  desc.writeBigUInt64LE(0x20000n, 0);
  desc.writeUInt32LE(16, 8);
  desc.writeUInt16LE(2, 12);
  return [`b64write 0x${(0x10000 + 16 * head).toString(16)} 16 ${desc.toString('base64')}`, `writew 0x${(0x10084 + 2 * (availIdx - 1)).toString(16)} ${head}`, `writew 0x10082 ${availIdx}`];
}

function pcTranscript(): string[] {
  const L: string[] = [];
  for (const [slot, fn] of [[0, 0], [1, 0], [1, 1], [1, 3], [1, 2], [4, 0], [4, 1]] as const) {
    for (let off = 0; off < 256; off += 4) L.push(`outl 0xcf8 ${cfg(slot, fn, off)}`, 'inl 0xcfc');
    L.push(`outl 0xcf8 ${cfg(slot, fn, 0)}`, 'inw 0xcfe', 'inb 0xcff', 'inw 0xcfd', 'inl 0xcfd');
  }
  L.push('outl 0xcf8 0x12345678', 'inb 0xcf9', 'inw 0xcfa', 'inl 0xcf9', 'inl 0xcfa', 'outl 0xcf8 0x600', 'inl 0xcf8', 'outb 0xcf9 2', 'inl 0xcf9', 'outb 0xcf9 0');
  L.push('outl 0xcf8 0x80000003', 'inl 0xcfc', 'outl 0xcf8 0x800000fd', 'inl 0xcfc', 'inb 0x80', 'inw 0xffff', 'inl 0xfffe');
  for (const a of [0x9fffc, 0xa0000, 0xc0000, 0xe0000, 0xf0000, 0xffff0, 0xfffffff0, 0xfffe0000, 0xfffffc, 0x1000000]) {
    L.push(`readl 0x${a.toString(16)}`, `writel 0x${a.toString(16)} 0x12345678`, `readq 0x${a.toString(16)}`);
  }
  L.push('writel 0xfec00000 1', 'readl 0xfec00010', 'writel 0xfec00000 0x10', 'readl 0xfec00010', 'writel 0xfec00010 0x12345678', 'readl 0xfec00010', 'readb 0xfec00000');
  // IDE bus-master registers at 0xc100.
  L.push(`outl 0xcf8 ${cfg(1, 1, 0x20)}`, 'outl 0xcfc 0xc100', `outl 0xcf8 ${cfg(1, 1, 4)}`, 'outw 0xcfc 1', 'inl 0xc100', 'inb 0xc100', 'inb 0xc101', 'outl 0xc104 0x12345677', 'inl 0xc104', 'inw 0xc106', 'outb 0xc102 0x66', 'inb 0xc102');
  // virtio-rng-pci (legacy, INTx) at 04.0: PIRQD routing, request, ISR, reroutes, INTx disable.
  L.push('irq_intercept_in ioapic', ...cw(4, 0x10, 4, 0xc000), ...cw(4, 4, 2, 7), ...cw(1, 0x63, 1, 11));
  L.push('outb 0xc012 0', 'outb 0xc012 1', 'outb 0xc012 3', 'inl 0xc000', 'outl 0xc004 0', 'outw 0xc00e 0', 'inw 0xc00c', 'outl 0xc008 0x10', 'outb 0xc012 7');
  L.push(...postRngBuffer(0, 1), 'outw 0xc010 0', 'readw 0x11002', 'readl 0x11008', 'inb 0xc013', 'inb 0xc013');
  L.push(...postRngBuffer(1, 2), 'outw 0xc010 0', 'readw 0x11002', ...cw(1, 0x63, 1, 10), ...cw(1, 0x62, 1, 10), ...cw(1, 0x63, 1, 0x80), 'inb 0xc013');
  L.push(...postRngBuffer(2, 3), ...cw(1, 0x63, 1, 11), 'outw 0xc010 0', 'readw 0x11002', ...cw(4, 4, 2, 0x407), ...cw(4, 4, 2, 7), ...cr(4, 4, 4), 'inb 0xc013');
  L.push(...cw(4, 0x10, 4, 0xce0), 'inl 0xcf8', 'inl 0xcfc', 'inb 0xcf9');
  return L;
}

function mmioTranscript(slot: number, intercept: string): string[] {
  const base = 0xfeb00000 + 0x200 * slot;
  const r = (o: number) => `readl 0x${(base + o).toString(16)}`;
  const w = (o: number, v: number) => `writel 0x${(base + o).toString(16)} 0x${v.toString(16)}`;
  const L = [`irq_intercept_in ${intercept}`, 'readl 0xfec00000', 'writel 0xfec10000 1', 'readl 0xfec10010'];
  L.push(r(0), r(4), r(8), r(0xc), r(0x10), r(0x34), `readb 0x${(base + 1).toString(16)}`, `readw 0x${(base + 2).toString(16)}`, `readq 0x${base.toString(16)}`, `readl 0x${(base + 2).toString(16)}`);
  L.push(w(0x70, 0), w(0x70, 1), w(0x70, 3), r(0x70), w(0x14, 0), r(0x10), w(0x14, 1), r(0x10), w(0x20, 0), w(0x28, 4096), w(0x30, 0), r(0x34), w(0x38, 8), w(0x3c, 4096), w(0x40, 0x10), r(0x40), w(0x70, 7));
  L.push(...postRngBuffer(0, 1), w(0x50, 0), 'readw 0x11002', 'readl 0x11008', r(0x60), w(0x64, 1), r(0x60));
  for (let i = 0; i < 25; i++) L.push(`readl 0x${(0xfeb00008 + 0x200 * i).toString(16)}`);
  return L;
}

if (qemuOrPolicy('reference machine vs QEMU 7.2 (raw qtest transcripts)')) {
  describe('reference machine vs QEMU 7.2 (raw qtest transcripts)', () => {
    let dir: string;
    let ours: string[];
    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'virtio-ts-oracle-'));
      const program = join(dir, 'qemu.mjs');
      await esbuild.build({ entryPoints: [join(ROOT, 'src/cli/qemu-main.ts')], bundle: true, platform: 'node', format: 'esm', target: 'node20', outfile: program, logLevel: 'error' });
      ours = [process.execPath, program];
    });
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    const cases: [string, string, string[], () => string[]][] = [
      ['pc: chipset config spaces, ports, memory map, IDE, IOAPIC, INTx via PIRQ, BAR over 0xcf8', 'pc', ['-device', 'virtio-rng-pci,addr=04.0,disable-modern=on,vectors=0,ioeventfd=off'], pcTranscript],
      ['microvm (default): transport 23 on pin 23 of the unnamed second IOAPIC', 'microvm', ['-device', 'virtio-rng-device', '-device', 'virtio-rng-device', '-global', 'virtio-mmio.ioeventfd=off'], () => mmioTranscript(23, '/machine/unattached/device[3]')],
      ['microvm,ioapic2=off: 8 transports on GSI 16+i', 'microvm,ioapic2=off', ['-device', 'virtio-rng-device', '-global', 'virtio-mmio.ioeventfd=off'], () => mmioTranscript(7, 'ioapic')],
      ['microvm,acpi=off: 8 transports on GSI 5+i', 'microvm,acpi=off', ['-device', 'virtio-rng-device', '-global', 'virtio-mmio.ioeventfd=off'], () => mmioTranscript(7, 'ioapic')],
      ['microvm: `ioapic` is the first IOAPIC, which sees no virtio-mmio line', 'microvm', ['-device', 'virtio-rng-device', '-global', 'virtio-mmio.ioeventfd=off'], () => mmioTranscript(23, 'ioapic')],
    ];
    for (const [name, machine, args, transcript] of cases) {
      it(name, async () => {
        const lines = transcript();
        const q = await runTranscript(QEMU_COMMAND, machine, args, lines);
        const o = await runTranscript(ours, machine, args, lines);
        const diffs = lines.map((l, i) => [l, q.replies[i], o.replies[i]] as const).filter(([, a, b]) => a !== b);
        expect(diffs).toEqual([]);
        // QEMU's PIT runs from reset (mode 3 on IRQ 0) and its clock follows the host under TCG,
        // so a slow transcript sees timer edges; the reference machine has no PIT (row 24).
        const timer = /^(raise|lower) 0$/;
        expect(o.irqs).toEqual(q.irqs.filter((e) => !timer.test(e)));
      });
    }
  });
}
