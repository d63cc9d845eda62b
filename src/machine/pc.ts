/**
 * The `pc` reference machine: what a driver sees of QEMU 7.2's `pc` (pc-i440fx-7.2) started with
 * `-nodefaults` and no BIOS run. RAM from 0; PCI configuration mechanism #1 at 0xcf8/0xcfc; the
 * i440FX host bridge at 00.0, PIIX3 at 01.0 (PIRQ routing at 0x60-0x63, reset 0x80 = disabled),
 * PIIX3 IDE at 01.1 and PIIX4 PM at 01.3; added functions from slot 02.0 upward or where asked;
 * BARs decode where the driver programs them; INTx reaches IOAPIC pin N once PIRQ
 * `(pin-1 + slot-1) & 3` is routed to IRQ N; MSI-X messages are memory writes into the system
 * address space (RAM, or a window if that is where they point).
 *
 * The QOM names are QEMU's: `/machine/i440fx` (the host), `/machine/i440fx/ioapic`,
 * `/machine/i440fx/pci.0`, `/machine/unattached/device[2]` (i440FX) and `device[3]` (PIIX3), ...
 *
 * No Node imports: part of the browser bundle.
 */
import type { PciFunction } from '../bus/pci/pci-bus.js';
import { VirtIOPCIProxy } from '../bus/virtio-pci.js';
import type { DeviceSection, RamBlock } from '../migration/machine-state.js';
import { virtioDeviceSection } from '../migration/virtio.js';
import { ReferenceMachine } from './machine.js';
import { buildMemoryLayout, DEFAULT_RAM_SIZE } from './memory-layout.js';
import { I440fxHostBridge, i440fxSection, pcibusSection, Piix3, piix3Section, Piix3Ide, Piix4Pm, PIIX_RCR_IOPORT } from './pc-chipset.js';
import { formatDevfn, PciHost, pciDevfn } from './pci-host.js';
import { DEVICE_PROPS, QomObject } from './qom.js';
import { sinkHandler } from '../devices/input/router.js';
import { INPUT_EVENT_MASK_BTN, INPUT_EVENT_MASK_KEY, INPUT_EVENT_MASK_REL } from '../devices/input/keycodes.js';

export interface PcMachineOptions {
  /** RAM size in bytes (QEMU's -m; default 128 MiB). */
  ramSize?: number;
  /** Firmware image (-bios); default: 256 KiB of zeros where SeaBIOS would be. */
  bios?: Uint8Array;
}

const PCI_DEVICE_PROPS = [...DEVICE_PROPS, { name: 'addr', type: 'int32' }, { name: 'multifunction', type: 'bool' }, { name: 'romfile', type: 'str' }];

export class PcMachine extends ReferenceMachine {
  readonly machineName = 'pc';
  /** What QEMU 7.2's `-machine pc` resolves to, as its streams name it. */
  readonly machineType = 'pc-i440fx-7.2';
  readonly ramSize: number;
  /** Where RAM below 4 GiB ends (the rest of `pc.ram` is at 4 GiB). */
  readonly belowFourGiB: number;
  private readonly blocks: readonly RamBlock[];
  readonly pci: PciHost;
  readonly hostBridge: I440fxHostBridge;
  readonly piix3: Piix3;
  readonly ide: Piix3Ide;
  readonly pm: Piix4Pm;
  readonly pciBusObject: QomObject;
  private readonly pciChildren: PciFunction[] = [];

  constructor(opts: PcMachineOptions = {}) {
    const ramSize = opts.ramSize ?? DEFAULT_RAM_SIZE;
    const layout = buildMemoryLayout('pc', ramSize, opts.bios);
    super(layout.memory, 'pc-i440fx-7.2-machine');
    this.ramSize = ramSize;
    this.belowFourGiB = layout.belowFourGiB;
    this.blocks = layout.ramBlocks;

    // QOM skeleton as QEMU builds it.
    const un = this.unattached;
    un.addChild('device[0]', new QomObject('qemu64-x86_64-cpu', DEVICE_PROPS));
    un.addChild('device[1]', new QomObject('kvmvapic', DEVICE_PROPS));
    const hostObj = this.qomMachine.addChild('i440fx', new QomObject('i440FX-pcihost', DEVICE_PROPS));
    this.pciBusObject = hostObj.addChild('pci.0', new QomObject('PCI'));
    hostObj.addChild('ioapic', this.ioapic);

    // The i8042's PS/2 keyboard and mouse take host input before any -device exists (QEMU's
    // pc_superio_init runs first). They are not modelled: what reaches them is dropped, and a
    // virtio-input device active in the guest takes precedence over them, as in QEMU.
    this.input.register(sinkHandler('QEMU PS/2 Keyboard', INPUT_EVENT_MASK_KEY));
    this.input.register(sinkHandler('QEMU PS/2 Mouse', INPUT_EVENT_MASK_BTN | INPUT_EVENT_MASK_REL));

    this.pci = new PciHost(this.sys);
    this.hostBridge = new I440fxHostBridge(ramSize);
    this.piix3 = new Piix3();
    this.ide = new Piix3Ide();
    this.pm = new Piix4Pm();
    const chipset: [PciFunction, number, string, string][] = [
      [this.hostBridge, pciDevfn(0, 0), 'i440FX', 'device[2]'],
      [this.piix3, pciDevfn(1, 0), 'PIIX3', 'device[3]'],
      [this.ide, pciDevfn(1, 1), 'piix3-ide', 'device[17]'],
      [this.pm, pciDevfn(1, 3), 'PIIX4_PM', 'device[18]'],
    ];
    for (const [fn, devfn, type, qomName] of chipset) {
      this.pci.plug(fn, devfn, `${type},id=(null)`, type);
      un.addChild(qomName, new QomObject(type, PCI_DEVICE_PROPS));
      this.linkOnBus(fn, type);
    }
    const others: [string, string][] = [
      ['device[4]', 'i8257'], ['device[5]', 'i8257'], ['device[6]', 'isa-i8259'], ['device[7]', 'isa-i8259'],
      ['device[8]', 'hpet'], ['device[9]', 'mc146818rtc'], ['device[10]', 'isa-pit'], ['device[11]', 'isa-pcspk'],
      ['device[12]', 'isa-fdc'], ['device[13]', 'i8042'], ['device[14]', 'vmport'], ['device[15]', 'vmmouse'],
      ['device[16]', 'port92'],
    ];
    for (const [n, t] of others) un.addChild(n, new QomObject(t, DEVICE_PROPS));
    for (let i = 19; i <= 26; i++) un.addChild(`device[${i}]`, new QomObject('smbus-eeprom', DEVICE_PROPS));
    for (let i = 0; i < 28; i++) un.addChild(`non-qdev-gpio[${i}]`, new QomObject('irq'));
    for (const r of ['ram-below-4g[0]', 'system[0]', 'pc.bios[0]', 'isa-bios[0]', 'pc.rom[0]', 'ioport80[0]', 'ioportF0[0]', 'pci[0]', 'io[0]', 'ide[0]', 'ide[1]', 'ide[2]', 'ide[3]']) {
      un.addChild(r, new QomObject('memory-region'));
    }
    un.addChild('sysbus', new QomObject('System'));

    // INTx: function pins → PIRQ lines (PciHost) → PIIX3 routing → GSI (IOAPIC pin).
    this.pci.setIrq = (pirq, level) => this.piix3.setPirq(pirq, level);
    this.piix3.busIrqLevel = (pirq) => this.pci.irqLevel(pirq);
    this.piix3.setPicIrq = (irq, level) => this.setGsi(irq, level);
    this.piix3.onResetRequest = () => this.reset();
    // The reset control register overlays the config address port (QEMU: priority 1).
    this.sys.io.map(PIIX_RCR_IOPORT, 1, this.piix3.rcrPort, 'piix3-reset-control');
  }

  private linkOnBus(_fn: PciFunction, type: string): void {
    const n = this.pciBusObject.children.size;
    // QEMU lists bus members as link<TYPE> child[N]; modelled as plain entries for qom-list.
    this.pciBusObject.addChild(`child[${n}]`, new QomObject(type));
  }

  /**
   * Put a PCI function on the bus (QEMU's `-device ...-pci[,addr=]`): at `devfn`, or in the first
   * slot with a free function 0 (02.0 on a fresh machine). Returns the devfn. Throws QEMU's
   * message when the place is taken. `qom` is the device's object for the QOM tree.
   */
  addPciFunction(fn: PciFunction, opts: { devfn?: number; typeName?: string; id?: string; qom?: QomObject } = {}): number {
    const typeName = opts.typeName ?? fn.name;
    const label = `${typeName},id=${opts.id ?? '(null)'}`;
    const devfn = this.pci.plug(fn, opts.devfn, label, typeName);
    this.pciChildren.push(fn);
    if (fn.vmStateChange) this.addVmStateChangeHandler((running) => fn.vmStateChange!(running));
    this.linkOnBus(fn, typeName);
    if (opts.qom) this.addPeripheral(opts.qom, opts.id);
    return devfn;
  }

  /** "SS.F" of a function on the bus. */
  addressOf(fn: PciFunction): string | undefined {
    const d = this.pci.devfnOf(fn);
    return d === undefined ? undefined : formatDevfn(d);
  }

  reset(): void {
    this.pci.reset();
    this.ioapicRegs.reset();
  }

  /** `pc.ram`, `pc.rom`, `pc.bios` in QEMU's list order (longest first). */
  ramBlocks(): readonly RamBlock[] {
    return this.blocks;
  }

  /**
   * The sections this machine writes and reads, in QEMU's order: the i440FX host bridge and the
   * PIIX3 (registered at machine creation), then each virtio-pci device in `-device` order, under
   * QEMU's dev path `0000:00:SS.F`.
   */
  deviceSections(): readonly DeviceSection[] {
    const list: DeviceSection[] = [pcibusSection(this.pci.irqCount), i440fxSection(this.hostBridge), piix3Section(this.piix3)];
    for (const fn of this.pciChildren) {
      const addr = this.addressOf(fn);
      if (fn instanceof VirtIOPCIProxy && addr !== undefined) list.push(virtioDeviceSection(fn.vdev, `0000:00:${addr}`));
    }
    return list;
  }
}
