// Whole-machine migration against real QEMU 7.2 (qemu-system-x86_64, Debian 12's 7.2.22), both
// directions, for `pc` and `microvm` with -nodefaults and no devices:
//  - QEMU → ours: patterns written into QEMU's RAM over qtest (on pc also the RAM under the ROM
//    windows, through the i440FX PAM registers, and PIIX3 PIRQ routing), `migrate` to a file,
//    parsed with parseSavevm and loaded into our machine; RAM blocks compared byte for byte.
//  - ours → QEMU: the same state in our machine, saveVm, `migrate-incoming` into QEMU started with
//    the same command line plus `-incoming defer`; query-migrate and query-status checked, RAM
//    and configuration read back over qtest.
import { describe, expect, it } from 'vitest';
import type { Machine } from '../../src/driver/machine.js';
import { haltFirmware } from '../../src/driver/qemu-launcher.js';
import { MicrovmMachine } from '../../src/machine/microvm.js';
import { PcMachine } from '../../src/machine/pc.js';
import { PIIX_PIRQCA } from '../../src/machine/pc-chipset.js';
import { parseSavevm, saveVm, loadVm, QEMU_VM_SECTION_FOOTER } from '../../src/migration/savevm.js';
import { formatVmdesc } from '../../src/migration/vmdesc.js';
import { qemuOrPolicy } from '../driver/impls.js';
import { expectedBlock, firstDifference, patternBytes, PC_HIDDEN_PLACES, pieces, RAM_PLACES, type Piece } from './patterns.js';
import { captureFromQemu, loadIntoQemu, pciConfigReadb, pciConfigWriteb } from './qemu-migration.js';

const MiB = 1024 * 1024;
const RAM = 16 * MiB;
const I440FX_DEVFN = 0;
const PIIX3_DEVFN = 1 << 3;
const I440FX_PAM0 = 0x59;
const PAM_COUNT = 7;
/** PIRQA..D → IRQ 11, disabled, 5, 10. */
const ROUTING = [0x0b, 0x80, 0x05, 0x0a];

async function writePieces(m: Machine, list: readonly Piece[]): Promise<void> {
  for (const p of list) await m.writeBytes(p.gpa, p.bytes);
}

/** Map (3) or unmap (0) the RAM under 0xc0000-0xfffff through every PAM register. */
async function setPam(m: Machine, v: number): Promise<void> {
  for (let i = 0; i < PAM_COUNT; i++) await pciConfigWriteb(m, I440FX_DEVFN, I440FX_PAM0 + i, v);
}

function block(m: PcMachine | MicrovmMachine, idstr: string): Uint8Array {
  const b = m.ramBlocks().find((x) => x.idstr === idstr);
  if (!b) throw new Error(`no block ${idstr}`);
  return b.bytes;
}

/** The sections must tile the stream: header, configuration, sections with footers, EOF, JSON. */
function expectTiles(bytes: Uint8Array): ReturnType<typeof parseSavevm> {
  const p = parseSavevm(bytes);
  let at = p.configuration.offset + 5 + p.configuration.machineType.length;
  for (const s of p.sections) {
    expect(s.offset).toBe(at);
    expect(bytes[s.footerOffset]).toBe(QEMU_VM_SECTION_FOOTER);
    at = s.footerOffset + 5;
  }
  expect(p.eofOffset).toBe(at);
  expect(p.vmdesc?.offset).toBe(at + 1);
  expect(p.vmdesc!.offset + 5 + p.vmdesc!.length).toBe(bytes.length);
  expect(p.warnings).toEqual([]);
  return p;
}

/** Bytes of the first block's records in a RAM PART chunk (header, name, then CONTINUE pages). */
function firstBlockRecords(bytes: Uint8Array, bodyOffset: number): Uint8Array {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = bodyOffset;
  let first = true;
  for (;;) {
    const lo = dv.getUint32(at + 4);
    if (!first && !(lo & 0x20)) return bytes.subarray(bodyOffset, at);
    if (lo & 0x10) return bytes.subarray(bodyOffset, at);
    at += 8;
    if (first) {
      at += 1 + bytes[at]!;
      first = false;
    }
    at += lo & 0x02 ? 1 : 4096;
  }
}

if (qemuOrPolicy('savevm interop with QEMU 7.2')) {
  describe('savevm interop with QEMU 7.2', () => {
    const ram = pieces(RAM_PLACES, 3);
    const hidden = pieces(PC_HIDDEN_PLACES, 5);

    it('pc: a QEMU stream loads into ours (RAM incl. hidden RAM, PIIX3 routing, I440FX config); ours re-saves the same chipset bytes', async () => {
      const cap = await captureFromQemu('pc', async (m) => {
        await writePieces(m, ram);
        await setPam(m, 0x33);
        await writePieces(m, hidden);
        await setPam(m, 0x00);
        for (let i = 0; i < 4; i++) await pciConfigWriteb(m, PIIX3_DEVFN, PIIX_PIRQCA + i, ROUTING[i]!);
      });
      const p = expectTiles(cap.bytes);
      expect(p.configuration.machineType).toBe('pc-i440fx-7.2');
      expect(p.runState).toBe('running');
      expect(p.ram!.blocks.map((b) => [b.idstr, b.length])).toEqual([
        ['pc.ram', RAM], ['/rom@etc/acpi/tables', 0x20000], ['pc.rom', 0x20000], ['pc.bios', 0x10000],
        ['/rom@etc/table-loader', 0x1000], ['/rom@etc/acpi/rsdp', 0x1000],
      ]);
      // The description we would write for it is QEMU's own text, byte for byte.
      expect(formatVmdesc(p.vmdesc!.description!)).toBe(p.vmdesc!.text);

      const ours = new PcMachine({ ramSize: RAM, bios: haltFirmware() });
      const r = loadVm(ours, cap.bytes);
      expect(r.runState).toBe('running');
      expect(r.loaded).toEqual(['PCIBUS', '0000:00:00.0/I440FX', '0000:00:01.0/PIIX3']);
      expect(r.discardedRamBlocks.map((d) => d.idstr)).toEqual(['/rom@etc/acpi/tables', '/rom@etc/table-loader', '/rom@etc/acpi/rsdp']);
      expect(r.skipped).toContain('cpu');
      expect(r.warnings.length).toBe(3 + r.skipped.length);

      expect(firstDifference(block(ours, 'pc.ram'), expectedBlock(RAM, [...ram, ...hidden]))).toBe(-1);
      expect(firstDifference(block(ours, 'pc.bios'), haltFirmware())).toBe(-1);
      expect(firstDifference(block(ours, 'pc.rom'), new Uint8Array(0x20000))).toBe(-1);
      expect([...ours.piix3.config.subarray(PIIX_PIRQCA, PIIX_PIRQCA + 4)]).toEqual(ROUTING);
      expect(ours.piix3.pirqRoute(0)).toBe(11);
      expect(ours.piix3.pirqRoute(1)).toBeUndefined();

      // Saved again, our chipset sections are QEMU's bytes, and their descriptions QEMU's entries.
      const again = saveVm(ours);
      const q = expectTiles(again);
      for (const id of ['PCIBUS', '0000:00:00.0/I440FX', '0000:00:01.0/PIIX3']) {
        const a = p.sections.find((s) => s.idstr === id)!;
        const b = q.sections.find((s) => s.idstr === id)!;
        expect([a.versionId, a.bodyLength]).toEqual([b.versionId, b.bodyLength]);
        expect(firstDifference(cap.bytes.subarray(a.bodyOffset, a.footerOffset), again.subarray(b.bodyOffset, b.footerOffset))).toBe(-1);
        expect(q.vmdesc!.description!.devices.find((d) => d.name === id)).toEqual(p.vmdesc!.description!.devices.find((d) => d.name === id));
      }
      expect(q.vmdesc!.description!.devices.find((d) => d.name === 'globalstate')).toEqual(p.vmdesc!.description!.devices.find((d) => d.name === 'globalstate'));
      const gA = p.sections.find((s) => s.idstr === 'globalstate')!;
      const gB = q.sections.find((s) => s.idstr === 'globalstate')!;
      expect(firstDifference(cap.bytes.subarray(gA.bodyOffset, gA.footerOffset), again.subarray(gB.bodyOffset, gB.footerOffset))).toBe(-1);
      // The pc.ram records of the iteration chunk are QEMU's, byte for byte.
      const partA = p.sections.find((s) => s.kind === 'part')!;
      const partB = q.sections.find((s) => s.kind === 'part')!;
      const recA = firstBlockRecords(cap.bytes, partA.bodyOffset);
      const recB = firstBlockRecords(again, partB.bodyOffset);
      expect(recA.length).toBe(recB.length);
      expect(firstDifference(recA, recB)).toBe(-1);
      // So are the START chunk's words for the blocks both sides have: the total and the list differ
      // only by QEMU's /rom@ blocks.
      const startB = q.sections.find((s) => s.kind === 'start')!;
      expect(q.ram!.blocks.map((b) => b.idstr)).toEqual(['pc.ram', 'pc.rom', 'pc.bios']);
      expect(startB.bodyLength).toBe(8 + (1 + 6 + 8) + (1 + 6 + 8) + (1 + 7 + 8) + 8);
    });

    it('pc: our stream loads into QEMU (running), RAM incl. hidden RAM and PIIX3 routing read back', async () => {
      const ours = new PcMachine({ ramSize: RAM, bios: haltFirmware() });
      for (const p of ram) ours.writeBytes(p.gpa, p.bytes);
      for (const p of hidden) block(ours, 'pc.ram').set(p.bytes, p.gpa);
      for (let i = 0; i < 4; i++) {
        ours.outl(0xcf8, (0x8000_0000 | (PIIX3_DEVFN << 8) | PIIX_PIRQCA) >>> 0);
        ours.outb(0xcfc + i, ROUTING[i]!);
      }
      const bytes = saveVm(ours, { runState: 'running' });
      const expected = expectedBlock(RAM, [...ram, ...hidden]);
      let checked = false;
      const r = await loadIntoQemu('pc', bytes, async (m) => {
        const low = await m.readBytes(0, 0xa0000);
        expect(firstDifference(low, expected.subarray(0, 0xa0000))).toBe(-1);
        const high = await m.readBytes(0x100000, RAM - 0x100000);
        expect(firstDifference(high, expected.subarray(0x100000))).toBe(-1);
        await setPam(m, 0x33);
        const under = await m.readBytes(0xc0000, 0x40000);
        expect(firstDifference(under, expected.subarray(0xc0000, 0x100000))).toBe(-1);
        for (let i = 0; i < 4; i++) expect(await pciConfigReadb(m, PIIX3_DEVFN, PIIX_PIRQCA + i)).toBe(ROUTING[i]);
        checked = true;
      });
      expect(r.info.status, r.stderr).toBe('completed');
      expect(r.status).toBe('running');
      expect(checked).toBe(true);
    });

    it('microvm: a QEMU stream loads into ours', async () => {
      const cap = await captureFromQemu('microvm', (m) => writePieces(m, ram));
      const p = expectTiles(cap.bytes);
      expect(p.configuration.machineType).toBe('microvm');
      expect(p.ram!.blocks.map((b) => b.idstr)).toEqual(['microvm.ram', '/rom@etc/acpi/tables', 'pc.bios', '/rom@etc/table-loader', '/rom@etc/acpi/rsdp']);
      expect(formatVmdesc(p.vmdesc!.description!)).toBe(p.vmdesc!.text);
      const ours = new MicrovmMachine({ ramSize: RAM, bios: haltFirmware() });
      const r = loadVm(ours, cap.bytes);
      expect(r.runState).toBe('running');
      expect(r.loaded).toEqual([]);
      expect(r.skipped).toEqual(expect.arrayContaining(['cpu', 'ioapic', 'mc146818rtc']));
      expect(firstDifference(block(ours, 'microvm.ram'), expectedBlock(RAM, ram))).toBe(-1);
      expect(firstDifference(block(ours, 'pc.bios'), haltFirmware())).toBe(-1);
      // Ours writes the microvm.ram records exactly as QEMU did.
      const again = saveVm(ours);
      const q = expectTiles(again);
      const recA = firstBlockRecords(cap.bytes, p.sections.find((s) => s.kind === 'part')!.bodyOffset);
      const recB = firstBlockRecords(again, q.sections.find((s) => s.kind === 'part')!.bodyOffset);
      expect(firstDifference(recA, recB)).toBe(-1);
    });

    it('microvm: our stream loads into QEMU, paused state carried by globalstate', async () => {
      const ours = new MicrovmMachine({ ramSize: RAM, bios: haltFirmware() });
      for (const p of ram) ours.writeBytes(p.gpa, p.bytes);
      const bytes = saveVm(ours, { runState: 'paused' });
      const expected = expectedBlock(RAM, ram);
      const r = await loadIntoQemu('microvm', bytes, async (m) => {
        const low = await m.readBytes(0, 0xf0000);
        expect(firstDifference(low, expected.subarray(0, 0xf0000))).toBe(-1);
        const high = await m.readBytes(0x100000, RAM - 0x100000);
        expect(firstDifference(high, expected.subarray(0x100000))).toBe(-1);
      });
      expect(r.info.status, r.stderr).toBe('completed');
      expect(r.status).toBe('paused');
    });

    it('pc: a 32 MiB patterned QEMU stream, whose pages come in several rate-limited chunks, loads into ours', async () => {
      const size = 32 * MiB;
      const fill = patternBytes(size, 9);
      fill.fill(0, 0xa0000, 0x100000); // qtest cannot reach the VGA hole and the ROM windows
      const cap = await captureFromQemu('pc', async (m) => {
        await m.writeBytes(0, fill.subarray(0, 0xa0000));
        await m.writeBytes(0x100000, fill.subarray(0x100000));
      }, { memory: '32M' });
      const p = parseSavevm(cap.bytes);
      const chunksWithPages = p.sections.filter((s) => s.idstr === 'ram' && s.kind !== 'start' && s.bodyLength > 8);
      expect(chunksWithPages.length).toBeGreaterThan(1);
      const ours = new PcMachine({ ramSize: size, bios: haltFirmware() });
      loadVm(ours, cap.bytes);
      expect(firstDifference(block(ours, 'pc.ram'), fill)).toBe(-1);
    });

    it('QEMU refuses a stream of ours whose machine type does not match (its own check, not ours)', async () => {
      const ours = new MicrovmMachine({ ramSize: RAM, bios: haltFirmware() });
      const r = await loadIntoQemu('pc', saveVm(ours));
      expect(['failed', 'exited']).toContain(r.info.status);
      expect(r.stderr).toContain("Machine type received is 'microvm' and local is 'pc-i440fx-7.2'");
    });
  });
}
