/**
 * virtio-serial as `-device virtio-serial-pci|virtio-serial-device` and its ports as
 * `-device virtconsole|virtserialport` (QEMU 7.2 `hw/char/virtio-serial-bus.c`,
 * `hw/char/virtio-console.c`, `hw/virtio/virtio-serial-pci.c`).
 */
import { VirtIOSerial, VirtIOSerialPortError, type VirtIOSerialPort } from '../../devices/console/virtio-serial.js';
import { CmdlineError } from '../cmdline.js';
import type { BusChildType, VirtioDeviceType } from './types.js';

/** QEMU's DEV_NVECTORS_UNSPECIFIED: `vectors` then becomes max_ports + 1. */
const DEV_NVECTORS_UNSPECIFIED = 0xffff_ffff;
/** Classes virtio-serial-pci keeps (communication/other, display/other for QEMU 0.10, others for qemu-kvm). */
const KEPT_CLASSES = new Set([0x0780, 0x0380, 0x00ff]);

export const serialType: VirtioDeviceType = {
  deviceType: 'virtio-serial-device',
  pciType: 'virtio-serial-pci',
  props: { max_ports: 'u32', 'emergency-write': 'bool' },
  pciProps: { class: 'u32' },
  childBusType: 'virtio-serial-bus',
  create(ctx) {
    const v = ctx.values;
    try {
      return new VirtIOSerial({
        memory: ctx.machine.sys.ram,
        maxPorts: v.has('max_ports') ? (v.get('max_ports') as number) : 31,
        emergencyWrite: ctx.bool('emergency-write', true),
        disabledFeatures: ctx.disabledFeatures,
        packed: ctx.packed,
        ...(ctx.childBusName !== undefined ? { busName: ctx.childBusName } : {}),
        ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
      });
    } catch (e) {
      if (e instanceof RangeError) throw new CmdlineError(e.message);
      throw e;
    }
  },
  pciOptions(values, device) {
    const out: { vectors?: number; classId?: number } = {};
    if (values.get('vectors') === DEV_NVECTORS_UNSPECIFIED) out.vectors = (device as VirtIOSerial).maxPorts + 1;
    const cls = values.has('class') ? (values.get('class') as number) : 0;
    out.classId = KEPT_CLASSES.has(cls) ? cls : 0x0780;
    return out;
  },
};

function portType(typeName: 'virtconsole' | 'virtserialport'): BusChildType {
  return {
    typeName,
    busType: 'virtio-serial-bus',
    props: { chardev: 'str', name: 'str', nr: 'u32' },
    create(ctx): VirtIOSerialPort {
      const vser = ctx.bus.device as VirtIOSerial;
      const v = ctx.values;
      // The chardev property is resolved when it is set, before the port is realized.
      const chrId = v.get('chardev');
      const chardev = chrId !== undefined && chrId !== '' ? ctx.chardev('chardev', String(chrId)) : undefined;
      const name = v.get('name');
      // QEMU looks for a name on every virtio-serial device.
      const elsewhere = (n: string) => ctx.sameTypeBuses.some((b) => b.device !== vser && (b.device as VirtIOSerial).findPortByName(n) !== undefined);
      try {
        return vser.addPort(
          {
            console: typeName === 'virtconsole',
            ...(v.has('nr') ? { nr: v.get('nr') as number } : {}),
            ...(name !== undefined ? { name: String(name) } : {}),
            ...(chardev ? { chardev } : {}),
            ...(ctx.spec.id !== undefined ? { deviceId: ctx.spec.id } : {}),
          },
          elsewhere,
        );
      } catch (e) {
        if (e instanceof VirtIOSerialPortError) throw new CmdlineError(e.message);
        throw e;
      }
    },
  };
}

export const virtconsoleType = portType('virtconsole');
export const virtserialportType = portType('virtserialport');
