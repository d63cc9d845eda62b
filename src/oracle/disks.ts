/**
 * Disk images for machine specs (Node-only): a spec may name disks (`OracleMachineSpec.disks`)
 * and refer to them in its arguments as `@disk:NAME@`; each machine a runner starts gets its own
 * copy in a temporary directory (or, for a migration, every end of one run shares one copy, as
 * machines share storage when they migrate). The contents are deterministic, so QEMU and ours
 * start from the same bytes.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DiskTemplate, OracleMachineSpec } from './scenario.js';

/** The bytes of a disk template. */
export function diskBytes(t: DiskTemplate): Uint8Array {
  const b = new Uint8Array(t.size);
  if (t.init === 'zero') return b;
  // Every sector starts with its number (le32) and is filled with a pattern of it, so a read of
  // the wrong sector shows.
  for (let s = 0; s * 512 < t.size; s++) {
    const base = s * 512;
    for (let i = 0; i < 512 && base + i < t.size; i++) b[base + i] = (s * 7 + i * 13 + 1) & 0xff;
    if (base + 4 <= t.size) new DataView(b.buffer).setUint32(base, s, true);
  }
  if (t.init === 'mbr' && t.size >= 512) {
    // An MS-DOS partition table whose first partition ends at head 15, sector 63 (QEMU's geometry
    // guess then takes 16 heads × 63 sectors from it).
    b.fill(0, 0x1be, 0x1fe);
    const p = 0x1be;
    b[p] = 0x80;
    b[p + 1] = 1;
    b[p + 2] = 1;
    b[p + 4] = 0x83;
    b[p + 5] = 15;
    b[p + 6] = 63;
    b[p + 7] = 0;
    new DataView(b.buffer).setUint32(p + 8, 63, true);
    new DataView(b.buffer).setUint32(p + 12, Math.floor(t.size / 512) - 63, true);
    b[510] = 0x55;
    b[511] = 0xaa;
  } else if (t.size >= 512) {
    // No MBR signature by accident.
    b[510] = 0;
    b[511] = 0;
  }
  return b;
}

export interface MaterializedSpec {
  spec: OracleMachineSpec;
  /** Paths of the disks, by name. */
  paths: Record<string, string>;
  cleanup(): void;
}

/** Write the spec's disks into a fresh directory and substitute their paths into its arguments. */
export function materializeDisks(spec: OracleMachineSpec): MaterializedSpec {
  const disks = spec.disks;
  if (!disks || Object.keys(disks).length === 0) return { spec, paths: {}, cleanup: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-disks-'));
  const paths: Record<string, string> = {};
  for (const [name, t] of Object.entries(disks)) {
    const p = join(dir, `${name}.raw`);
    writeFileSync(p, diskBytes(t));
    paths[name] = p;
  }
  const args = spec.args.map((a) => a.replace(/@disk:([A-Za-z0-9_-]+)@/g, (_, n: string) => {
    const p = paths[n];
    if (p === undefined) throw new Error(`spec refers to an unknown disk '${n}'`);
    return p;
  }));
  return { spec: { ...spec, args }, paths, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
