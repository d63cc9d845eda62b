// Boots the test guest in v86 with no virtio device attached: the kernel, SeaBIOS, the initramfs
// and init.sh work, and init reports the kernel release of the package scripts/v86-inputs.mjs
// fetched. The devices' own boots are in the adapter's tests.
import { describe, expect, it } from 'vitest';
import { bootGuest } from './support/boot.js';
import { loadV86Inputs } from './support/inputs.js';

describe('v86 guest, no devices', () => {
  it('boots the fetched kernel to init, which reports and finishes', async () => {
    const inputs = loadV86Inputs();
    const run = await bootGuest();
    const { results, done } = run.report;
    console.log(`v86 bare boot: ${JSON.stringify(run.timings)}`);

    expect(results.get('boot')?.ok).toBe(true);
    expect(results.get('boot')?.words).toEqual([inputs.kernelRelease]);
    // Only the core group is loaded when no device is present; it must load cleanly.
    expect(results.get('modules')?.ok).toBe(true);
    expect(results.get('modules')?.fields.loaded?.split(',').sort()).toEqual(
      ['virtio', 'virtio_pci', 'virtio_pci_legacy_dev', 'virtio_pci_modern_dev', 'virtio_ring'].sort(),
    );
    // No virtio device, so no test ran, and none claimed to.
    expect([...results.keys()].sort()).toEqual(['boot', 'modules']);
    expect(done).toBe(true);
  }, 150_000);
});
