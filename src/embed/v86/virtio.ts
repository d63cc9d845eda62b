import { VirtIOPCIProxy, type VirtioPciOptions } from '../../bus/virtio-pci.js';
import type { VirtIODevice } from '../../virtio/device.js';

/**
 * A virtio-pci function for v86: no MSI-X (v86 has no MSI, so `vectors: 0` and INTx) and byte
 * lanes on (v86 splits 16-bit MMIO reads into byte reads, and `queue_size` ≥ 256 would read as
 * its low byte otherwise). Other options as `VirtIOPCIProxy` (transitional by default; pass
 * `disableLegacy` or `disableModern` for one interface).
 */
export function v86VirtioPci(device: VirtIODevice, opts: VirtioPciOptions = {}): VirtIOPCIProxy {
  return new VirtIOPCIProxy(device, { vectors: 0, byteLanes: true, ...opts });
}
