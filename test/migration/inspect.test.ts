// `virtio-ts inspect`: a stream's sections and each virtio device's blob, decoded, for a stream
// QEMU 7.2 wrote and one we wrote, in text and in the JSON schema the issue fixes; and the
// command itself (file errors, malformed streams named by offset).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runInspect } from '../../src/cli/inspect.js';
import { GuestAllocator } from '../../src/driver/alloc.js';
import { InProcessMachine } from '../../src/driver/inproc.js';
import type { Machine } from '../../src/driver/machine.js';
import { GuestPciBus } from '../../src/driver/pci.js';
import { RngDriver } from '../../src/driver/rng.js';
import { VirtioPciDriver } from '../../src/driver/virtio-pci-driver.js';
import { createMachineFromArgs } from '../../src/machine/index.js';
import type { PcMachine } from '../../src/machine/pc.js';
import { formatInspect, inspectJson, inspectStream } from '../../src/migration/inspect.js';
import { parseSavevm, saveVm } from '../../src/migration/savevm.js';
import { qemuOrPolicy } from '../driver/impls.js';
import { captureFromQemu } from './qemu-migration.js';

const ARGS = ['-device', 'virtio-rng-pci,addr=03.0'];
const IDSTR = '0000:00:03.0/virtio-rng';

/** Modern interface, MSI-X on, queue 0 with 4 entries, two requests completed. */
async function drive(m: Machine): Promise<{ desc: number; features: bigint }> {
  const dev = (await new GuestPciBus(m).scan()).find((d) => d.ids.vendorId === 0x1af4)!;
  const drv = await VirtioPciDriver.open(dev, { alloc: new GuestAllocator(0x20_0000, 0x2f_0000) });
  await drv.enableMsix();
  const features = await drv.init(1n << 29n);
  const ring = await drv.setupQueue(0, { num: 4 });
  await drv.msixSetupQueue(0, 1, 0x2f_0000, 0x4242);
  await drv.driverOk();
  const rng = new RngDriver(drv, ring);
  for (let i = 0; i < 2; i++) expect((await rng.request(8)).len).toBe(8);
  return { desc: ring.addrs.desc, features };
}

interface VirtioJson {
  status: number;
  isr: number;
  queueSel: number;
  guestFeatures: string;
  config: string;
  queues: { index: number; num: number; desc: string; lastAvailIdx: number; align?: number; vector?: number }[];
  subsections: { name: string; version: number }[];
}

function checkJson(bytes: Uint8Array, want: { desc: number; features: bigint }): void {
  const json = inspectJson(inspectStream(bytes)) as { sections: { idstr: string; instanceId: number; versionId: number; virtio?: VirtioJson }[] };
  // Every section of the stream, in order.
  expect(json.sections.map((s) => s.idstr)).toEqual(parseSavevm(bytes).sections.map((s) => s.idstr));
  const v = json.sections.find((s) => s.idstr === IDSTR)!;
  expect([v.instanceId, v.versionId]).toEqual([0, 1]);
  expect(json.sections.filter((s) => s.virtio).length).toBe(1);
  expect(v.virtio).toMatchObject({
    status: 0x0f,
    isr: 1,
    queueSel: 0,
    guestFeatures: `0x${want.features.toString(16)}`,
    config: '',
    queues: [{ index: 0, num: 4, desc: `0x${want.desc.toString(16)}`, lastAvailIdx: 2, vector: 1 }],
    subsections: [
      { name: 'virtio/64bit_features', version: 1 },
      { name: 'virtio/virtqueues', version: 1 },
      { name: 'virtio/ringsize', version: 1 },
      { name: 'virtio/extra_state', version: 1 },
      { name: 'virtio_pci/modern_state', version: 1 },
      { name: 'virtio/started', version: 1 },
    ],
  });
  const text = formatInspect(inspectStream(bytes));
  expect(text).toContain(IDSTR);
  expect(text).toMatch(/name: virtio\/ringsize/);
  expect(text).toMatch(/last_avail_idx: 2 \(0x2\)/);
}

describe('inspect our stream', () => {
  it('decodes the virtio device of our pc machine', async () => {
    const built = createMachineFromArgs(['-machine', 'pc', '-m', '16M', '-nodefaults', ...ARGS]);
    const m = new InProcessMachine(built.target, { name: 'ours' });
    const want = await drive(m);
    checkJson(saveVm(built.target as PcMachine), want);
  });
});

if (qemuOrPolicy('inspect a QEMU 7.2 stream')) {
  describe('inspect a QEMU 7.2 stream', () => {
    it('decodes the virtio device of QEMU\'s pc, and lists every other section', async () => {
      let want: { desc: number; features: bigint } | undefined;
      const cap = await captureFromQemu('pc', async (m) => {
        want = await drive(m);
      }, { args: ARGS });
      checkJson(cap.bytes, want!);
      const text = formatInspect(inspectStream(cap.bytes));
      for (const s of ['cpu', 'apic', 'PCIBUS', '0000:00:01.0/PIIX3', 'globalstate']) expect(text).toContain(s);
    });
  });
}

describe('virtio-ts inspect (the command)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-ts-inspect-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const run = (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = runInspect(args, (s) => out.push(s), (s) => err.push(s));
    return { code, out: out.join('\n'), err: err.join('\n') };
  };

  it('prints text, or JSON with --json', async () => {
    const built = createMachineFromArgs(['-machine', 'pc', '-m', '16M', '-nodefaults', ...ARGS]);
    const file = join(dir, 'ours.mig');
    writeFileSync(file, saveVm(built.target as PcMachine));
    const t = run([file]);
    expect(t.code).toBe(0);
    expect(t.out).toMatch(/^QEMU migration stream, file version 3, machine 'pc-i440fx-7.2', run state 'running'/);
    const j = run([file, '--json']);
    expect(j.code).toBe(0);
    const parsed = JSON.parse(j.out) as { machineType: string; sections: { idstr: string; virtio?: { queues: unknown[] } }[] };
    expect(parsed.machineType).toBe('pc-i440fx-7.2');
    expect(parsed.sections.find((s) => s.idstr === IDSTR)!.virtio!.queues).toHaveLength(1);
  });

  it('a malformed stream: exit 1 and the offset and field', () => {
    const file = join(dir, 'bad.mig');
    writeFileSync(file, Uint8Array.from([0x51, 0x45, 0x56, 0x4d, 0, 0, 0, 3, 0x07, 0, 0, 0]));
    const r = run([file]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^virtio-ts inspect: migration stream offset 9 \(configuration/);
  });

  it('usage and unreadable files', () => {
    expect(run([]).code).toBe(2);
    expect(run([join(dir, 'missing.mig')]).code).toBe(1);
  });
});
