/**
 * QEMU's vmstate "PCIDevice" (`hw/pci/pci.c`, `vmstate_pci_device`) as a nested struct of a
 * device's section (VMSTATE_PCI_DEVICE): be32 version_id (2), the 256 configuration bytes with
 * the interrupt status bit cleared (`pci_device_save`), 4 × be32 irq_state. Loading applies
 * QEMU's checks: version 0..2, read-only configuration bits equal to ours
 * (`get_pci_config_device`), each irq state 0 or 1.
 */
import { PCI_CONFIG_SPACE_SIZE, PCI_DEVICE_VMSTATE_VERSION, PCI_NUM_PINS, type PCIDevice } from '../bus/pci/pci-device.js';
import type { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import type { Apply, FieldRecorder } from './vmstate.js';

export const PCI_DEVICE_VMSD_NAME = 'PCIDevice';

function putFields(dev: PCIDevice, f: QEMUFileWriter, rec?: FieldRecorder): void {
  const version = () => f.putBe32(PCI_DEVICE_VMSTATE_VERSION);
  const config = () => f.putBuffer(dev.savedConfig());
  const irq = () => {
    for (let i = 0; i < PCI_NUM_PINS; i++) f.putBe32((dev.irqState >> i) & 1);
  };
  if (!rec) {
    version();
    config();
    irq();
    return;
  }
  rec.field('version_id', 'int32 le', version);
  // Two `config` fields exist in the vmsd (PCI and PCIe sizes), so QEMU numbers the name.
  rec.field('config[0]', 'pci config', config);
  rec.field('irq_state', 'pci irq state', irq);
}

/** Write the PCIDevice struct; with a recorder, describe it as field `name` (a "struct"). */
export function savePciDevice(dev: PCIDevice, f: QEMUFileWriter, rec?: FieldRecorder, name = 'parent_obj'): void {
  if (rec) rec.struct(name, PCI_DEVICE_VMSD_NAME, PCI_DEVICE_VMSTATE_VERSION, (inner) => putFields(dev, f, inner));
  else putFields(dev, f);
}

/** Parse the PCIDevice struct for `dev`; nothing changes until the result runs. */
export function loadPciDevice(dev: PCIDevice, f: QEMUFileReader, idstr: string): Apply {
  const vAt = f.offset;
  const version = f.getBe32(`${idstr} PCIDevice version_id`) | 0;
  // vmstate_info_int32_le: 0 <= loaded <= the device's own value.
  if (version < 0 || version > PCI_DEVICE_VMSTATE_VERSION) {
    throw f.error(`${idstr} PCIDevice version_id`, `Invalid value ${version} expecting positive value <= ${PCI_DEVICE_VMSTATE_VERSION}`, vAt);
  }
  const cAt = f.offset;
  const config = f.getBuffer(PCI_CONFIG_SPACE_SIZE, `${idstr} PCIDevice config`);
  const bad = dev.checkLoadedConfig(config);
  if (bad >= 0) {
    const h = (n: number) => n.toString(16);
    throw f.error(
      `${idstr} PCIDevice config`,
      `get_pci_config_device: Bad config data: i=0x${h(bad)} read: ${h(config[bad]!)} device: ${h(dev.config[bad]!)} cmask: ${h(dev.cmask[bad]!)} wmask: ${h(dev.wmask[bad]!)} w1cmask:${h(dev.w1cmask[bad]!)}`,
      cAt + bad,
    );
  }
  let irqState = 0;
  for (let i = 0; i < PCI_NUM_PINS; i++) {
    const at = f.offset;
    const s = f.getBe32(`${idstr} PCIDevice irq_state`);
    if (s !== 0 && s !== 1) throw f.error(`${idstr} PCIDevice irq_state`, `irq state ${s | 0}: must be 0 or 1.`, at);
    irqState |= s << i;
  }
  return () => dev.applyLoadedConfig(config, irqState);
}
