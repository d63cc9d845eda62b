/**
 * The fixed PCI functions of QEMU 7.2's `pc` machine with `-nodefaults` (pc_piix.c): the i440FX
 * host bridge at 00.0, the PIIX3 PCI-to-ISA bridge at 01.0 with its PIRQ routing registers and
 * reset control port, and the PIIX3 IDE (01.1) and PIIX4 power management (01.3) functions that
 * QEMU also creates. Their configuration spaces after reset are QEMU's byte for byte (captured
 * from qemu-system-x86_64 7.2.22, see test/golden/pci/); their write masks are QEMU's defaults
 * (`pci_init_wmask`: command I/O|MEM|MASTER|SERR|INTX_DISABLE, cache line, interrupt line, and
 * all of 0x40..0xff). Only what a virtio driver can observe is modelled: the IDE's bus-master BAR
 * decodes but its registers read 0, PAM/SMRAM writes do not remap memory, and the power
 * management function's ACPI ports are not there.
 *
 * No Node imports: part of the browser bundle.
 */
import { PCIDevice } from '../bus/pci/pci-device.js';
import type { DeviceSection } from '../migration/machine-state.js';
import { loadPciDevice, savePciDevice } from '../migration/pci.js';
import { vmstateLoadSubsections, vmstateSaveSubsections, type Apply, type VMStateDescription } from '../migration/vmstate.js';
import type { IoHandler } from './address-space.js';

/** Build 256 bytes from {offset: value} pairs. */
function configBytes(values: Record<number, number>): Uint8Array {
  const c = new Uint8Array(256);
  for (const [off, v] of Object.entries(values)) c[Number(off)] = v;
  return c;
}

/** A function whose reset state is a fixed image (plus QEMU's PCI reset of command/status/BARs). */
export class ChipsetFunction extends PCIDevice {
  private readonly image: Uint8Array;

  constructor(name: string, image: Uint8Array) {
    const vendorId = image[0]! | (image[1]! << 8);
    const deviceId = image[2]! | (image[3]! << 8);
    super({
      name,
      vendorId,
      deviceId,
      revision: image[8]!,
      classId: image[0x0a]! | (image[0x0b]! << 8),
      subsystemVendorId: image[0x2c]! | (image[0x2d]! << 8),
      subsystemId: image[0x2e]! | (image[0x2f]! << 8),
    });
    this.image = image.slice();
    this.config.set(this.image);
  }

  /** The device-specific reset (QEMU's `dc->reset`): back to the captured image. */
  protected override resetDevice(): void {
    this.config.set(this.image);
  }
}

export const PCI_VENDOR_ID_INTEL = 0x8086;

/** i440FX host bridge (8086:1237 rev 2); 0x57 holds the RAM size in 8 MiB units (coreboot's). */
export class I440fxHostBridge extends ChipsetFunction {
  constructor(ramSize: number) {
    super('i440FX', configBytes({
      0x00: 0x86, 0x01: 0x80, 0x02: 0x37, 0x03: 0x12, 0x08: 0x02, 0x0b: 0x06,
      0x2c: 0xf4, 0x2d: 0x1a, 0x2f: 0x11,
      0x57: Math.min(255, Math.floor(ramSize / 8 / 1024 / 1024)),
      0x72: 0x02, // SMRAM
    }));
  }
}

/** PIIX3 PIRQ route control registers (PIRQA..PIRQD). */
export const PIIX_PIRQCA = 0x60;
export const PIIX_NUM_PIRQS = 4;
/** IRQ numbers a PIRQ can route to (QEMU's PIIX_NUM_PIC_IRQS); 0x80 and above: disabled. */
export const PIIX_NUM_PIC_IRQS = 16;
/** PIIX3 reset control register port. */
export const PIIX_RCR_IOPORT = 0xcf9;

/**
 * PIIX3 ISA bridge (8086:7000, multifunction). A function's INTx reaches the PIRQ line given by
 * `pci_slot_get_pirq`; a PIRQ whose route register holds an IRQ below 16 drives that IRQ (shared
 * lines OR together), so `IRQ raise N` appears on the IOAPIC once the driver routes the PIRQ.
 */
export class Piix3 extends ChipsetFunction {
  /** QEMU's `pic_levels`: bit (irq * 4 + pirq) set while that PIRQ drives that IRQ. */
  private picLevels = 0n;
  /** QEMU's reset control register (0xcf9), system-reset type bit only. */
  rcr = 0;
  /** Where IRQ lines go (the GSIs: i8259 and IOAPIC). */
  setPicIrq: ((irq: number, level: boolean) => void) | undefined;
  /** Level of PIRQ line `pirq` on the bus (QEMU's `pci_bus_get_irq_level`). */
  busIrqLevel: ((pirq: number) => boolean) | undefined;
  /** The guest asked for a system reset through 0xcf9. */
  onResetRequest: (() => void) | undefined;

  constructor() {
    super('PIIX3', configBytes({
      0x00: 0x86, 0x01: 0x80, 0x02: 0x00, 0x03: 0x70, 0x07: 0x02, 0x0a: 0x01, 0x0b: 0x06, 0x0e: 0x80,
      0x2c: 0xf4, 0x2d: 0x1a, 0x2f: 0x11,
      0x4c: 0x4d, 0x4e: 0x03, 0x60: 0x80, 0x61: 0x80, 0x62: 0x80, 0x63: 0x80, 0x69: 0x02, 0x70: 0x80,
      0x76: 0x0c, 0x77: 0x0c, 0x78: 0x02, 0xa0: 0x08, 0xa8: 0x0f,
    }));
  }

  /** The IRQ PIRQ `pirq` is routed to, or undefined while disabled. */
  pirqRoute(pirq: number): number | undefined {
    const irq = this.config[PIIX_PIRQCA + (pirq & 3)]!;
    return irq < PIIX_NUM_PIC_IRQS ? irq : undefined;
  }

  override configWrite(offset: number, size: 1 | 2 | 4, value: number): void {
    this.defaultWriteConfig(offset, size, value);
    if (offset < PIIX_PIRQCA + 4 && PIIX_PIRQCA < offset + size) {
      // piix3_write_config: rebuild the levels, then drive every IRQ line.
      this.updateIrqLevels();
      for (let irq = 0; irq < PIIX_NUM_PIC_IRQS; irq++) this.setIrqPic(irq);
    }
  }

  /** QEMU's `piix3_set_irq`: PIRQ line `pirq` changed level on the bus. */
  setPirq(pirq: number, level: boolean): void {
    const irq = this.pirqRoute(pirq);
    if (irq === undefined) return;
    this.setIrqLevelInternal(pirq, level);
    this.setIrqPic(irq);
  }

  private setIrqLevelInternal(pirq: number, level: boolean): void {
    const irq = this.pirqRoute(pirq);
    if (irq === undefined) return;
    const mask = 1n << BigInt(irq * PIIX_NUM_PIRQS + pirq);
    this.picLevels = level ? this.picLevels | mask : this.picLevels & ~mask;
  }

  private setIrqPic(irq: number): void {
    const level = ((this.picLevels >> BigInt(irq * PIIX_NUM_PIRQS)) & 0xfn) !== 0n;
    this.setPicIrq?.(irq, level);
  }

  /**
   * After a migration load of the configuration: rebuild the levels from the bus (as
   * `piix3_post_load`) and drive every IRQ line to them. QEMU leaves the lines to the i8259 and
   * IOAPIC sections; this machine migrates no interrupt controller, so the lines are set here.
   */
  routingLoaded(): void {
    this.updateIrqLevels();
    for (let irq = 0; irq < PIIX_NUM_PIC_IRQS; irq++) this.setIrqPic(irq);
  }

  private updateIrqLevels(): void {
    this.picLevels = 0n;
    for (let pirq = 0; pirq < PIIX_NUM_PIRQS; pirq++) {
      const irq = this.pirqRoute(pirq);
      if (irq === undefined) continue;
      this.setIrqLevelInternal(pirq, this.busIrqLevel?.(pirq) ?? false);
      this.setIrqPic(irq);
    }
  }

  protected override resetDevice(): void {
    super.resetDevice();
    this.picLevels = 0n;
    this.rcr = 0;
  }

  /**
   * The reset control register at port 0xcf9: one byte wide, so QEMU's memory core splits a
   * wider access into bytes, and every byte is the register (`inl 0xcf9` reads it four times).
   */
  readonly rcrPort: IoHandler = {
    read: (_offset, size) => (this.rcr * (size === 4 ? 0x0101_0101 : size === 2 ? 0x0101 : 1)) >>> 0,
    write: (_offset, size, value) => {
      for (let i = 0; i < size; i++) {
        const v = Math.floor(value / 2 ** (8 * i)) & 0xff;
        if (v & 4) {
          this.onResetRequest?.();
          continue;
        }
        this.rcr = v & 2;
      }
    },
  };
}

/** One bus-master DMA channel's registers (QEMU's BMDMAState, no disk behind it). */
interface Bmdma {
  cmd: number;
  status: number;
  addr: number;
}

/**
 * PIIX3 IDE (8086:7010) with its bus-master DMA BAR4 (16 I/O ports). No drives: the registers
 * answer as QEMU's `bmdma_read`/`bmdma_addr_read` do (command/status bytes, all ones for wider
 * reads of them, the PRD address), and starting DMA does nothing.
 */
export class Piix3Ide extends ChipsetFunction {
  readonly bmdma: [Bmdma, Bmdma] = [{ cmd: 0, status: 0, addr: 0 }, { cmd: 0, status: 0, addr: 0 }];

  constructor() {
    super('piix3-ide', configBytes({
      0x00: 0x86, 0x01: 0x80, 0x02: 0x10, 0x03: 0x70, 0x06: 0x80, 0x07: 0x02, 0x09: 0x80, 0x0a: 0x01, 0x0b: 0x01,
      0x20: 0x01, 0x2c: 0xf4, 0x2d: 0x1a, 0x2f: 0x11,
    }));
    this.registerBar(4, 'io', 16, {
      read: (offset, size) => this.bmdmaRead(offset, size),
      write: (offset, size, value) => this.bmdmaWrite(offset, size, value),
    });
  }

  private bmdmaRead(offset: number, size: number): number {
    const bm = this.bmdma[(offset >> 3) & 1]!;
    const sub = offset & 7;
    if (sub < 4) {
      if (size !== 1) return size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
      return (sub & 3) === 0 ? bm.cmd : (sub & 3) === 2 ? bm.status : 0xff;
    }
    const shift = (sub - 4) * 8;
    return Math.floor(bm.addr / 2 ** shift) % 2 ** (size * 8);
  }

  private bmdmaWrite(offset: number, size: number, value: number): void {
    const bm = this.bmdma[(offset >> 3) & 1]!;
    const sub = offset & 7;
    if (sub < 4) {
      if (size !== 1) return;
      if ((sub & 3) === 0) bm.cmd = value & 0x09;
      else if ((sub & 3) === 2) bm.status = (value & 0x60) | (bm.status & 1) | (bm.status & ~value & 0x06);
      return;
    }
    const shift = (sub - 4) * 8;
    const mask = size === 4 ? 0xffff_ffff : size === 2 ? 0xffff : 0xff;
    const cleared = (bm.addr & ~((mask << shift) >>> 0)) >>> 0;
    bm.addr = (cleared | ((((value & mask) << shift) >>> 0) & ~3)) >>> 0;
  }

  protected override resetDevice(): void {
    super.resetDevice();
    for (const bm of this.bmdma) bm.cmd = bm.status = bm.addr = 0;
  }
}

/** PIIX4 power management (8086:7113 rev 3), INTA#, SCI on IRQ 9. */
export class Piix4Pm extends ChipsetFunction {
  constructor() {
    super('PIIX4_PM', configBytes({
      0x00: 0x86, 0x01: 0x80, 0x02: 0x13, 0x03: 0x71, 0x06: 0x80, 0x07: 0x02, 0x08: 0x03, 0x0a: 0x80, 0x0b: 0x06,
      0x2c: 0xf4, 0x2d: 0x1a, 0x2f: 0x11, 0x3d: 0x01,
      0x40: 0x01, 0x5f: 0x10, 0x63: 0x60, 0x90: 0x01, 0x91: 0xb1, 0xd2: 0x09,
    }));
  }
}

// ---------------------------------------------------------------------------------------------
// Migration: the chipset's sections, as QEMU 7.2 writes them (hw/pci-host/i440fx.c,
// hw/isa/piix3.c). Neither is required: QEMU loads a stream without them and keeps its own state.

/** `0000:00:00.0/I440FX`, version 3: the PCIDevice struct, then one unused byte (once smm_enabled). */
export function i440fxSection(dev: I440fxHostBridge, devPath = '0000:00:00.0'): DeviceSection {
  const idstr = `${devPath}/I440FX`;
  return {
    idstr,
    instanceId: 0,
    vmsdName: 'I440FX',
    versionId: 3,
    minimumVersionId: 3,
    required: false,
    save(f, rec) {
      savePciDevice(dev, f, rec, 'parent_obj');
      if (rec) rec.field('unused', 'unused_buffer', () => f.putZeros(1));
      else f.putZeros(1);
    },
    load(f) {
      const apply = loadPciDevice(dev, f, idstr);
      f.skip(1, `${idstr} unused`);
      // i440fx_post_load remaps PAM and SMRAM from the loaded bytes; this machine does not model
      // those windows, so the configuration bytes are all there is to restore.
      return apply;
    },
  };
}

/**
 * `0000:00:01.0/PIIX3`, version 3 (minimum 2): the PCIDevice struct (PIRQ routing lives in its
 * bytes 0x60-0x63), the four PIRQ line levels as int32 (version 3 on; written from the bus,
 * ignored on load, which recomputes them from the bus as QEMU does), and subsection `PIIX3/rcr`
 * while the reset control register is non-zero.
 */
export function piix3Section(dev: Piix3, devPath = '0000:00:01.0'): DeviceSection {
  const idstr = `${devPath}/PIIX3`;
  const rcr: VMStateDescription = {
    name: 'PIIX3/rcr',
    versionId: 1,
    minimumVersionId: 1,
    needed: () => dev.rcr !== 0,
    save(f, rec) {
      if (rec) rec.field('rcr', 'uint8', () => f.putByte(dev.rcr));
      else f.putByte(dev.rcr);
    },
    load(f) {
      const v = f.getByte(`${idstr} rcr`);
      return () => {
        dev.rcr = v;
      };
    },
  };
  const vmsd: VMStateDescription = { name: 'PIIX3', versionId: 3, minimumVersionId: 2, subsections: [rcr] };
  return {
    idstr,
    instanceId: 0,
    vmsdName: 'PIIX3',
    versionId: 3,
    minimumVersionId: 2,
    required: false,
    save(f, rec) {
      savePciDevice(dev, f, rec, 'dev');
      // piix3_pre_save: the level of each PIRQ line on the bus.
      const level = (i: number) => f.putBe32(dev.busIrqLevel?.(i) ? 1 : 0);
      if (rec) {
        rec.array('pci_irq_levels_vmstate', 'int32', PIIX_NUM_PIRQS, level);
        rec.saveSubsections(vmsd);
      } else {
        for (let i = 0; i < PIIX_NUM_PIRQS; i++) level(i);
        vmstateSaveSubsections(f, vmsd);
      }
    },
    load(f, versionId): Apply {
      const apply = loadPciDevice(dev, f, idstr);
      if (versionId >= 3) f.skip(4 * PIIX_NUM_PIRQS, `${idstr} pci_irq_levels_vmstate`);
      // Without the subsection the register keeps its value, as in QEMU.
      const subsections = vmstateLoadSubsections(f, vmsd);
      return () => {
        apply();
        subsections();
        dev.routingLoaded();
      };
    },
  };
}

/**
 * `PCIBUS` (hw/pci/pci.c `vmstate_pcibus`, instance 0, version 1): the bus's PIRQ count (int32,
 * must equal ours) and how many asserted INTx pins drive each PIRQ line (`irq_count`). QEMU's
 * loader takes the counts as they are and its devices later raise and lower them by one, so a
 * destination needs them to agree with the `irq_state` of the functions it loads; ours derives
 * them from those functions instead and only checks the record.
 */
export function pcibusSection(irqCount: readonly number[]): DeviceSection {
  const nirq = irqCount.length;
  return {
    idstr: 'PCIBUS',
    instanceId: 0,
    vmsdName: 'PCIBUS',
    versionId: 1,
    minimumVersionId: 1,
    required: false,
    save(f, rec) {
      const put = () => f.putBe32(nirq);
      if (rec) {
        rec.field('nirq', 'int32 equal', put);
        rec.array('irq_count', 'int32', nirq, (i) => f.putBe32(irqCount[i]!));
      } else {
        put();
        for (let i = 0; i < nirq; i++) f.putBe32(irqCount[i]!);
      }
    },
    load(f) {
      const at = f.offset;
      const n = f.getBe32('PCIBUS nirq') | 0;
      // VMSTATE_INT32_EQUAL's message.
      if (n !== nirq) throw f.error('PCIBUS nirq', `${n.toString(16)} != ${nirq.toString(16)}`, at);
      for (let i = 0; i < nirq; i++) {
        const cAt = f.offset;
        const c = f.getBe32(`PCIBUS irq_count[${i}]`) | 0;
        if (c < 0 || c > 256) throw f.error(`PCIBUS irq_count[${i}]`, `count ${c} is not 0..256 (one per function pin)`, cAt);
      }
      return () => undefined;
    },
  };
}
