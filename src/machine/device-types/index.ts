/** The virtio device types `-device` can build, by QEMU type name. */
import { balloonType } from './balloon.js';
import { keyboardType, mouseType, tabletType } from './input.js';
import { netType } from './net.js';
import { rngType } from './rng.js';
import { blkType } from './blk.js';
import { serialType, virtconsoleType, virtserialportType } from './serial.js';
import type { BusChildType, VirtioDeviceType } from './types.js';

export const VIRTIO_DEVICE_TYPES: readonly VirtioDeviceType[] = [rngType, serialType, balloonType, keyboardType, mouseType, tabletType, blkType, netType];

/** Devices that plug into a bus another device provides (virtio-serial's ports). */
export const BUS_CHILD_TYPES: readonly BusChildType[] = [virtconsoleType, virtserialportType];

export function lookupBusChildType(name: string): BusChildType | undefined {
  return BUS_CHILD_TYPES.find((t) => t.typeName === name);
}

/** The device type a `-device` name belongs to, and whether it is the PCI form and which variant. */
export function lookupDeviceType(name: string): { type: VirtioDeviceType; pci: boolean; variant?: 'transitional' | 'non-transitional' } | undefined {
  for (const type of VIRTIO_DEVICE_TYPES) {
    if (name === type.deviceType) return { type, pci: false };
    const p = type.pciType;
    if (p === undefined) continue;
    if (name === p) return { type, pci: true };
    if (type.pciVariants !== false) {
      if (name === `${p}-transitional`) return { type, pci: true, variant: 'transitional' };
      if (name === `${p}-non-transitional`) return { type, pci: true, variant: 'non-transitional' };
    }
  }
  return undefined;
}

/** QEMU's class chain of a `-device` name, for `-global` matching. */
export function typeChain(name: string): string[] {
  const t = lookupDeviceType(name);
  if (!t) {
    // virtconsole is a virtserialport, which is a virtio-serial-port.
    if (name === 'virtconsole') return [name, 'virtserialport', 'virtio-serial-port', 'device'];
    if (name === 'virtserialport') return [name, 'virtio-serial-port', 'device'];
    return [name];
  }
  if (!t.pci) return [name, ...(t.type.deviceParents ?? []), 'virtio-device', 'device'];
  return [name, ...(t.type.pciParents ?? [`${t.type.pciType}-base`]), 'virtio-pci', 'pci-device', 'device'];
}

export type { VirtioDeviceType, DeviceBuildContext, PropKind, BuildOptions, BusChildType, BusChildBuildContext, ChildBus } from './types.js';
