import type { VirtIODevice } from '../virtio/device.js';

/**
 * Run an embedder's callback from device code. An exception there is a bug of the host, not
 * something the guest did: it must neither unwind into the guest's register access nor break the
 * device (which `guarded` would do with `virtioError`). It is traced and dropped.
 */
export function callHost(dev: VirtIODevice, what: string, fn: () => void): void {
  try {
    fn();
  } catch (e) {
    const tr = dev.tracer;
    if (tr) tr({ type: 'device', device: dev.name, message: `${what} callback threw: ${e instanceof Error ? e.message : String(e)}` });
  }
}
