/**
 * The `microvm` reference machine: what a driver sees of QEMU 7.2's microvm (hw/i386/microvm.c)
 * with no BIOS run. RAM from 0 and virtio-mmio transports at 0xfeb00000 + 0x200 * i, as many as
 * QEMU creates for the options:
 *
 * | options            | IOAPICs | transports | GSI of transport i | what `irq_intercept_in` sees  |
 * |--------------------|---------|------------|--------------------|-------------------------------|
 * | default            | 2       | 24         | 24 + i             | pin i of the second IOAPIC    |
 * | `ioapic2=off`      | 1       | 8          | 16 + i             | pin 16 + i of `ioapic`        |
 * | `acpi=off`         | 1       | 8          | 5 + i              | pin 5 + i of `ioapic`         |
 *
 * The second IOAPIC has no QOM name of its own: it is `/machine/unattached/device[3]`, as QEMU
 * shows under `qom-list /machine/unattached` (checked on QEMU 7.2.22); `ioapic` resolves to the
 * first one. Devices fill the transports from the last one downwards; an empty transport answers
 * magic, version and vendor with device id 0. Transports are version 1 (legacy) unless
 * `forceLegacy` is false (QEMU's `-global virtio-mmio.force-legacy=false`).
 *
 * No Node imports: part of the browser bundle.
 */
import { VirtioMmioTransport, VIRTIO_MMIO_REGION_SIZE } from '../bus/virtio-mmio.js';
import type { DeviceSection, RamBlock } from '../migration/machine-state.js';
import { virtioDeviceSection } from '../migration/virtio.js';
import type { Tracer } from '../trace/trace.js';
import type { VirtIODevice } from '../virtio/device.js';
import type { Mapping } from './address-space.js';
import { IO_APIC_SECONDARY_ADDRESS, IOAPIC_WINDOW_SIZE, IoapicRegisters } from './ioapic.js';
import { IO_APIC_SECONDARY_IRQBASE, IOAPIC_NUM_PINS, IOAPIC_PROPS, ReferenceMachine } from './machine.js';
import { buildMemoryLayout, DEFAULT_RAM_SIZE } from './memory-layout.js';
import { DEVICE_PROPS, IrqLines, QomObject } from './qom.js';

/** microvm's VIRTIO_MMIO_BASE. */
export const MICROVM_VIRTIO_MMIO_BASE = 0xfeb0_0000;

export interface MicrovmOptions {
  /** RAM size in bytes (default 128 MiB). */
  ramSize?: number;
  /** Firmware image (-bios); default: 64 KiB of zeros where qboot would be. */
  bios?: Uint8Array;
  /** QEMU's `acpi` (default on). */
  acpi?: boolean;
  /** QEMU's `ioapic2` (default auto: on when ACPI is). */
  ioapic2?: boolean;
  /** QEMU's `-global virtio-mmio.force-legacy` (default true: version 1). */
  forceLegacy?: boolean;
  tracer?: Tracer;
}

const MMIO_PROPS = [
  ...DEVICE_PROPS,
  { name: 'force-legacy', type: 'bool' },
  { name: 'ioeventfd', type: 'bool' },
  { name: 'format_transport_address', type: 'bool' },
  { name: 'virtio-mmio[0]', type: 'child<memory-region>' },
];

/** Where a device landed. */
export interface MicrovmSlot {
  index: number;
  base: number;
  gsi: number;
  transport: VirtioMmioTransport;
}

export class MicrovmMachine extends ReferenceMachine {
  readonly machineName = 'microvm';
  /** QEMU's machine type name (microvm is not versioned). */
  readonly machineType = 'microvm';
  readonly ramSize: number;
  private readonly blocks: readonly RamBlock[];
  /** Transport indexes in the order devices were plugged (QEMU's realize, so section, order). */
  private readonly plugged: number[] = [];
  readonly acpi: boolean;
  readonly forceLegacy: boolean;
  /** GSI of transport 0 (QEMU's `virtio_irq_base`). */
  readonly irqBase: number;
  readonly transports: VirtioMmioTransport[] = [];
  private readonly mappings: Mapping[] = [];
  private readonly transportObjects: QomObject[] = [];
  private readonly tracer: Tracer | undefined;
  /** The second IOAPIC's register window at 0xfec10000 (mapped only when it exists). */
  readonly ioapic2Regs = new IoapicRegisters();

  constructor(opts: MicrovmOptions = {}) {
    const ramSize = opts.ramSize ?? DEFAULT_RAM_SIZE;
    const layout = buildMemoryLayout('microvm', ramSize, opts.bios);
    super(layout.memory, 'microvm-machine');
    this.ramSize = ramSize;
    this.blocks = layout.ramBlocks;
    this.acpi = opts.acpi ?? true;
    this.forceLegacy = opts.forceLegacy ?? true;
    this.tracer = opts.tracer;
    // microvm_ioapics: a second IOAPIC only with ACPI, unless ioapic2=off.
    const twoIoapics = this.acpi && opts.ioapic2 !== false;
    let count: number;
    if (twoIoapics) {
      this.irqBase = IO_APIC_SECONDARY_IRQBASE;
      count = IOAPIC_NUM_PINS;
    } else {
      this.irqBase = this.acpi ? 16 : 5;
      count = 8;
    }

    const un = this.unattached;
    un.addChild('device[0]', new QomObject('qemu64-x86_64-cpu', DEVICE_PROPS));
    un.addChild('device[1]', new QomObject('kvmvapic', DEVICE_PROPS));
    un.addChild('device[2]', new QomObject('isabus-bridge', DEVICE_PROPS));
    this.qomMachine.addChild('ioapic', this.ioapic);
    let next = 3;
    if (twoIoapics) {
      const io2 = new QomObject('ioapic', IOAPIC_PROPS);
      io2.gpioIn = new IrqLines(IOAPIC_NUM_PINS);
      this.ioapic2 = un.addChild(`device[${next++}]`, io2);
      this.sys.mmio.map(IO_APIC_SECONDARY_ADDRESS, IOAPIC_WINDOW_SIZE, this.ioapic2Regs, 'ioapic2');
    }
    for (let i = 0; i < count; i++) {
      const gsi = this.irqBase + i;
      const obj = new QomObject('virtio-mmio', MMIO_PROPS);
      obj.gpioOut = new IrqLines(1, (_line, level) => this.setGsi(gsi, level));
      obj.addChild(`virtio-mmio-bus.${i}`, new QomObject('virtio-mmio-bus'));
      un.addChild(`device[${next++}]`, obj);
      this.transportObjects.push(obj);
      const t = this.makeTransport(i, undefined);
      this.transports.push(t);
      this.mappings.push(this.sys.mmio.map(this.transportBase(i), VIRTIO_MMIO_REGION_SIZE, t, `virtio-mmio.${i}`));
    }
    if (this.acpi) un.addChild(`device[${next++}]`, new QomObject('acpi-ged-x86', DEVICE_PROPS));
    un.addChild(`device[${next++}]`, new QomObject('isa-i8259', DEVICE_PROPS));
    un.addChild(`device[${next++}]`, new QomObject('isa-i8259', DEVICE_PROPS));
    un.addChild(`device[${next++}]`, new QomObject('isa-pit', DEVICE_PROPS));
    un.addChild(`device[${next++}]`, new QomObject('mc146818rtc', DEVICE_PROPS));
    const gpios = twoIoapics ? 28 : this.acpi ? 12 : 10;
    for (let i = 0; i < gpios; i++) un.addChild(`non-qdev-gpio[${i}]`, new QomObject('irq'));
    for (const r of ['ram-below-4g[0]', 'pc.bios[0]', 'system[0]', 'isa-bios[0]', 'io[0]']) un.addChild(r, new QomObject('memory-region'));
    un.addChild('sysbus', new QomObject('System'));
  }

  get transportCount(): number {
    return this.transports.length;
  }

  transportBase(i: number): number {
    return MICROVM_VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_REGION_SIZE;
  }

  gsiOf(i: number): number {
    return this.irqBase + i;
  }

  /** QOM path of transport `i` (e.g. `/machine/unattached/device[27]`). */
  transportPath(i: number): string {
    return this.transportObjects[i]!.path;
  }

  /** The intercept target for the transports' lines: the second IOAPIC, or `ioapic`. */
  get virtioIoapicPath(): string {
    return (this.ioapic2 ?? this.ioapic).path;
  }

  private makeTransport(i: number, device: VirtIODevice | undefined): VirtioMmioTransport {
    const lines = this.transportObjects[i]!.gpioOut!;
    const opts = { legacy: this.forceLegacy, base: this.transportBase(i), irq: (level: boolean) => lines.set(0, level) };
    return new VirtioMmioTransport(device, this.tracer ? { ...opts, tracer: this.tracer } : opts);
  }

  /**
   * Plug a device into the highest free transport (QEMU's bus choice for `-device ...-device`),
   * or into transport `index` (QEMU's `bus=virtio-mmio-bus.N`). Throws QEMU's message when none
   * is free. `qom` is the device's object for `/machine/peripheral[-anon]`.
   */
  addDevice(device: VirtIODevice, opts: { index?: number; id?: string; qom?: QomObject; typeName?: string } = {}): MicrovmSlot {
    let index = opts.index;
    const typeName = opts.typeName ?? device.name;
    if (index === undefined) {
      for (let i = this.transports.length - 1; i >= 0; i--) {
        if (!this.transports[i]!.device) {
          index = i;
          break;
        }
      }
      if (index === undefined) throw new Error(`No 'virtio-bus' bus found for device '${typeName}'`);
    } else if (!Number.isInteger(index) || index < 0 || index >= this.transports.length) {
      throw new Error(`Bus 'virtio-mmio-bus.${index}' not found`);
    } else if (this.transports[index]!.device) {
      throw new Error(`Bus 'virtio-mmio-bus.${index}' is full`);
    }
    if (opts.qom) this.addPeripheral(opts.qom, opts.id);
    const t = this.makeTransport(index, device);
    this.sys.mmio.unmap(this.mappings[index]!);
    this.mappings[index] = this.sys.mmio.map(this.transportBase(index), VIRTIO_MMIO_REGION_SIZE, t, `virtio-mmio.${index}`);
    this.transports[index] = t;
    this.addVmStateChangeHandler((running) => device.vmStateChange(running));
    this.plugged.push(index);
    return { index, base: this.transportBase(index), gsi: this.gsiOf(index), transport: t };
  }

  /** `microvm.ram`, `pc.bios` in QEMU's list order. */
  ramBlocks(): readonly RamBlock[] {
    return this.blocks;
  }

  /**
   * Each virtio device in plug order, under QEMU's dev path `virtio-mmio@<base, 16 hex digits>`
   * (`virtio_mmio_bus_get_dev_path` with format_transport_address on).
   */
  deviceSections(): readonly DeviceSection[] {
    const list: DeviceSection[] = [];
    for (const i of this.plugged) {
      const dev = this.transports[i]!.device;
      if (dev) list.push(virtioDeviceSection(dev, `virtio-mmio@${this.transportBase(i).toString(16).padStart(16, '0')}`));
    }
    return list;
  }

  reset(): void {
    for (const t of this.transports) t.reset();
    this.ioapicRegs.reset();
    this.ioapic2Regs.reset();
  }
}
