/**
 * QOM properties of a built device, as `qom-get`/`qom-set` see them: QEMU aliases every property
 * of the device proper (`virtio-backend`) onto its PCI proxy, and names the device proper in
 * errors (anonymous under a proxy, the `-device` id on virtio-mmio).
 */
import type { QomDynamicProperty, QomObject } from '../qom.js';
import type { DeviceBuildContext } from './types.js';

export interface DeviceQom {
  backend: QomObject;
  proxy: QomObject | undefined;
}

/** A static (realize-time) property, readable on both objects and refused by `qom-set`. */
export function setStaticProp(objs: DeviceQom, ctx: DeviceBuildContext, name: string, value: unknown): void {
  const owner = { id: objs.proxy ? undefined : ctx.spec.id, type: objs.backend.type };
  for (const obj of [objs.backend, objs.proxy]) {
    if (!obj) continue;
    obj.values.set(name, value);
    obj.staticOwner.set(name, owner);
  }
}

/** A property computed when read (and maybe settable), on both objects. */
export function setDynamicProp(objs: DeviceQom, name: string, prop: Omit<QomDynamicProperty, 'ownerType'>): void {
  for (const obj of [objs.backend, objs.proxy]) {
    if (!obj) continue;
    obj.dynamic.set(name, { ...prop, ownerType: objs.backend.type });
  }
}
