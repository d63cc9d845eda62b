/**
 * virtio_save / virtio_load (QEMU 7.2 `hw/virtio/virtio.c`): the blob a virtio device writes
 * into its migration section. See spec/qemu-virtio-migration.md §1 and §3.
 * (Contract: implementation in progress.)
 */
import type { VirtIODevice } from '../virtio/device.js';
import type { DeviceSection, LoadContext } from './machine-state.js';
import { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import type { Apply } from './vmstate.js';

/** Write the device's blob (QEMU's `virtio_save`). */
export function virtioSave(_vdev: VirtIODevice, _f: QEMUFileWriter): void {
  throw new Error('virtioSave: not implemented yet');
}

/**
 * Parse a blob into `vdev` (QEMU's `virtio_load`): every check, nothing changed until the
 * returned function runs. `ctx.peekRam` reads guest RAM as the load will leave it (defaults to
 * the device's memory).
 */
export function virtioLoad(_vdev: VirtIODevice, _f: QEMUFileReader, _ctx?: LoadContext): Apply {
  throw new Error('virtioLoad: not implemented yet');
}

/** The device's section for a machine stream: idstr `<path>/<vmsd name>`. */
export function virtioDeviceSection(vdev: VirtIODevice, devPath: string): DeviceSection {
  return {
    idstr: `${devPath}/${vdev.vmsdName}`,
    instanceId: 0,
    vmsdName: vdev.vmsdName,
    versionId: vdev.vmsdVersion,
    minimumVersionId: vdev.vmsdVersion,
    required: true,
    save: (f, rec) => (rec ? rec.field('virtio', 'virtio', () => virtioSave(vdev, f)) : virtioSave(vdev, f)),
    load: (f, _version, ctx) => virtioLoad(vdev, f, ctx),
  };
}

/** Library API: one device's blob as bytes. */
export function saveVirtioDevice(vdev: VirtIODevice): Uint8Array {
  const f = new QEMUFileWriter();
  virtioSave(vdev, f);
  return f.bytes();
}

/** Library API: load a blob into `vdev`; throws `MigrationError` and leaves `vdev` untouched on bad input. */
export function loadVirtioDevice(vdev: VirtIODevice, bytes: Uint8Array): void {
  const f = new QEMUFileReader(bytes);
  const apply = virtioLoad(vdev, f);
  if (f.remaining !== 0) throw f.error('virtio', `${f.remaining} bytes after the end of the device state`);
  apply();
}
