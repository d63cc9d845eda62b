/**
 * virtio-keyboard, virtio-mouse and virtio-tablet as `-device virtio-<kind>-pci|virtio-<kind>-device`
 * (QEMU 7.2 `hw/input/virtio-input-hid.c`, `hw/virtio/virtio-input-pci.c`): modern-only on PCI
 * (no transitional variants, `disable-legacy`/`disable-modern` overridden), PCI class keyboard,
 * mouse or "input other", two MSI-X vectors, no `ioeventfd` property (QEMU never uses one for
 * input: a notify is handled inside the register write).
 */
import { VirtIOKeyboard, VirtIOMouse, VirtIOTablet, type VirtIOInputHIDOptions } from '../../devices/input/hid.js';
import { CmdlineError } from '../cmdline.js';
import { setStaticProp } from './qom-props.js';
import type { DeviceBuildContext, PropKind, VirtioDeviceType } from './types.js';

/** PCI class codes (`include/hw/pci/pci_ids.h`). */
const PCI_CLASS_INPUT_KEYBOARD = 0x0900;
const PCI_CLASS_INPUT_MOUSE = 0x0902;
const PCI_CLASS_INPUT_OTHER = 0x0980;

type Kind = 'keyboard' | 'mouse' | 'tablet';

function hidOptions(ctx: DeviceBuildContext, kind: Kind): VirtIOInputHIDOptions {
  const v = ctx.values;
  const serial = v.get('serial');
  return {
    memory: ctx.machine.sys.ram,
    router: ctx.machine.input,
    disabledFeatures: ctx.disabledFeatures,
    packed: ctx.packed,
    // `display`/`head` bind the device to a console; there are none, and QEMU ignores a failed
    // binding, so they are accepted and change nothing.
    ...(serial !== undefined ? { serial: String(serial) } : {}),
    ...(kind !== 'keyboard' ? { wheelAxis: ctx.bool('wheel-axis', true) } : {}),
    ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
  };
}

function inputType(kind: Kind, classId: number): VirtioDeviceType {
  const props: Record<string, PropKind> = { serial: 'str', display: 'str', head: 'u32' };
  if (kind !== 'keyboard') props['wheel-axis'] = 'bool';
  return {
    deviceType: `virtio-${kind}-device`,
    pciType: `virtio-${kind}-pci`,
    pciVariants: false,
    props,
    pciLacks: ['ioeventfd'],
    pciParents: ['virtio-input-hid-pci', 'virtio-input-pci'],
    deviceParents: ['virtio-input-hid-device', 'virtio-input-device'],
    forceVirtio1: true,
    create(ctx) {
      const opts = hidOptions(ctx, kind);
      try {
        if (kind === 'keyboard') return new VirtIOKeyboard(opts);
        if (kind === 'mouse') return new VirtIOMouse(opts);
        return new VirtIOTablet(opts);
      } catch (e) {
        // QEMU asserts (and aborts) when a serial's size byte makes the config too large.
        if (e instanceof RangeError) throw new CmdlineError(e.message);
        throw e;
      }
    },
    pciOptions: () => ({ classId }),
    qom(_device, objs, ctx) {
      const serial = ctx.values.get('serial');
      if (serial !== undefined) setStaticProp(objs, ctx, 'serial', String(serial));
      if (kind !== 'keyboard') setStaticProp(objs, ctx, 'wheel-axis', ctx.bool('wheel-axis', true));
    },
  };
}

export const keyboardType = inputType('keyboard', PCI_CLASS_INPUT_KEYBOARD);
export const mouseType = inputType('mouse', PCI_CLASS_INPUT_MOUSE);
export const tabletType = inputType('tablet', PCI_CLASS_INPUT_OTHER);
