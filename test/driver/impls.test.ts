// The runner table's discovery of our in-process machines (impls.ts), checked on a scratch tree
// so that it is known to work before src/machine/pc.ts and microvm.ts land.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ourInProcessImpl } from './impls.js';

const root = mkdtempSync(join(tmpdir(), 'virtio-ts-impls-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fixture = join(import.meta.dirname, '../support/mini-microvm.ts');

describe('our in-process implementation discovery', () => {
  it('explains what is missing when no factory is exported', async () => {
    mkdirSync(join(root, 'a/src/machine'), { recursive: true });
    writeFileSync(join(root, 'a/src/machine/pc.ts'), 'export const nothing = 1;\n');
    expect(await ourInProcessImpl(join(root, 'a'))).toMatch(/createMachineFromArgs/);
  });

  it('binds createMachineFromArgs(argv) and drives the machine it builds', async () => {
    mkdirSync(join(root, 'b/src/machine'), { recursive: true });
    writeFileSync(
      join(root, 'b/src/machine/index.ts'),
      `import { miniMicrovmFromArgs } from ${JSON.stringify(fixture)};
       export let seen: string[] = [];
       export function createMachineFromArgs(argv: string[]) {
         seen = argv;
         const i = argv.indexOf('-machine');
         const rest = argv.filter((_, k) => k < i || k > i + 3);
         const target = miniMicrovmFromArgs(argv[i + 1]!, rest);
         return { target, qmp: target.qmp };
       }\n`,
    );
    const impl = await ourInProcessImpl(join(root, 'b'));
    if (typeof impl === 'string') throw new Error(impl);
    const m = await impl.start({ machine: 'microvm', args: ['-device', 'virtio-rng-device'] });
    expect(await m.readl(0xfeb0_0000 + 0x200 * 23 + 8)).toBe(4);
    expect(m.qmp).toBeDefined();
    await m.close();
  });
});
