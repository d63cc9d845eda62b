/**
 * A stand-in migration engine until the savevm stream (src/migration/savevm.ts) is wired in: it
 * writes and reads a QEMU 7.2 stream that holds only the header, the configuration section and
 * the `globalstate` section (the run state), then EOF and the JSON description. No RAM, no
 * devices: a destination gets the source's run state and nothing else. Its loader refuses any
 * other section with QEMU's message, so a real QEMU stream fails to load here instead of being
 * half-applied.
 *
 * Replace it in src/cli/qemu.ts with
 * `{ save: (rs) => saveVm(machine, { runState: rs }), load: (b) => loadVm(machine, b) }`.
 *
 * No Node imports: part of the browser bundle.
 */
import { latin1, QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import type { RunState } from './machine.js';
import type { MigrationEngine, MigrationLoadResult } from './migration.js';

// migration/savevm.h
const QEMU_VM_FILE_MAGIC = 0x5145564d;
const QEMU_VM_FILE_VERSION = 3;
const QEMU_VM_EOF = 0x00;
const QEMU_VM_SECTION_START = 0x01;
const QEMU_VM_SECTION_FULL = 0x04;
const QEMU_VM_VMDESCRIPTION = 0x06;
const QEMU_VM_CONFIGURATION = 0x07;
const QEMU_VM_SECTION_FOOTER = 0x7e;
/** GlobalState.runstate is a NUL-terminated name in a 100-byte buffer (migration/global_state.c). */
const RUNSTATE_BUFFER = 100;

/** A load error worded as QEMU's `error_report`. */
class StreamError extends Error {
  override name = 'StreamError';
}

/**
 * The placeholder engine for a machine of QEMU type `machineType` (`pc-i440fx-7.2`, `microvm`:
 * what the configuration section carries and the loader compares).
 */
export function globalStateOnlyEngine(machineType: string): MigrationEngine {
  return {
    save(runState: RunState): Uint8Array {
      const f = new QEMUFileWriter();
      f.putBe32(QEMU_VM_FILE_MAGIC);
      f.putBe32(QEMU_VM_FILE_VERSION);
      f.putByte(QEMU_VM_CONFIGURATION);
      const name = new TextEncoder().encode(machineType);
      f.putBe32(name.length);
      f.putBuffer(name);
      // globalstate, instance 0, version 1; the section id is the sender's own counter.
      const sectionId = 0;
      f.putByte(QEMU_VM_SECTION_FULL);
      f.putBe32(sectionId);
      f.putName('globalstate');
      f.putBe32(0);
      f.putBe32(1);
      const rs = new TextEncoder().encode(runState);
      f.putBe32(rs.length + 1);
      const buf = new Uint8Array(RUNSTATE_BUFFER);
      buf.set(rs);
      f.putBuffer(buf);
      f.putByte(QEMU_VM_SECTION_FOOTER);
      f.putBe32(sectionId);
      f.putByte(QEMU_VM_EOF);
      const desc = new TextEncoder().encode(
        '{"page_size": 4096, "devices": [{"name": "globalstate", "instance_id": 0, "vmsd_name": "globalstate", "version": 1, ' +
          '"fields": [{"name": "size", "type": "uint32", "size": 4}, {"name": "runstate", "type": "buffer", "size": 100}]}]}',
      );
      f.putByte(QEMU_VM_VMDESCRIPTION);
      f.putBe32(desc.length);
      f.putBuffer(desc);
      return f.bytes();
    },

    load(bytes: Uint8Array): MigrationLoadResult {
      const f = new QEMUFileReader(bytes);
      const warnings: string[] = [];
      // A short stream reads as zeros in QEMU (and then fails on what it finds).
      const be32 = () => (f.remaining >= 4 ? f.getBe32('') : 0);
      const byte = () => (f.remaining >= 1 ? f.getByte('') : 0);
      if (be32() !== QEMU_VM_FILE_MAGIC) throw new StreamError('Not a migration stream');
      const version = be32();
      if (version === 2) throw new StreamError("SaveVM v2 format is obsolete and don't work anymore");
      if (version !== QEMU_VM_FILE_VERSION) throw new StreamError('Unsupported migration stream version');
      if (byte() !== QEMU_VM_CONFIGURATION) throw new StreamError('Configuration section missing');
      const len = be32();
      const received = latin1(f.getBuffer(Math.min(len, f.remaining), 'configuration'));
      // QEMU compares only the received length's worth of the local name.
      if (received.length !== len || machineType.slice(0, len) !== received) {
        throw new StreamError(`Machine type received is '${received}' and local is '${machineType}'`);
      }
      let runState: string | undefined;
      for (;;) {
        const type = byte();
        if (type === QEMU_VM_EOF) break;
        // A START section (RAM) is named like a FULL one; either way only globalstate is known.
        if (type !== QEMU_VM_SECTION_FULL && type !== QEMU_VM_SECTION_START) throw new StreamError(`Unknown savevm section type ${type}`);
        const sectionId = be32();
        const idstr = f.remaining > 0 ? f.getName('section idstr') : '';
        const instance = be32();
        const versionId = be32();
        if (idstr !== 'globalstate' || instance !== 0) {
          throw new StreamError(
            `Unknown savevm section or instance '${idstr}' ${instance}. Make sure that your current VM setup matches your saved VM setup, including any hotplugged devices`,
          );
        }
        if (versionId !== 1) throw new StreamError(`savevm: unsupported version ${versionId} for '${idstr}' v1`);
        be32(); // size: the name's length with its NUL; the buffer decides
        const buf = f.getBuffer(Math.min(RUNSTATE_BUFFER, f.remaining), 'runstate');
        const nul = buf.indexOf(0);
        runState = latin1(nul >= 0 ? buf.subarray(0, nul) : buf.subarray(0, RUNSTATE_BUFFER - 1));
        if (byte() !== QEMU_VM_SECTION_FOOTER) throw new StreamError(`Missing section footer for ${idstr}`);
        const footerId = be32();
        if (footerId !== sectionId) {
          throw new StreamError(`Mismatched section id in footer for ${idstr} - read 0x${footerId.toString(16)} expected 0x${sectionId.toString(16)}`);
        }
      }
      const next = byte();
      if (next !== QEMU_VM_VMDESCRIPTION) warnings.push(`Expected vmdescription section, but got ${next}`);
      return runState === undefined ? { warnings } : { warnings, runState };
    },
  };
}
