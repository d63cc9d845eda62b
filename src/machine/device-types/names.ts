/**
 * The `-device` names virtio-ts-qemu knows, by device type (no imports, so the command-line
 * parser can check names without loading the devices). A type registered in `index.ts` lists
 * its names here too.
 */

/** QEMU's names for a virtio type: `<base>-pci` with its transitional variants, and `<base>-device`. */
export function virtioNames(base: string, opts: { pci?: boolean; pciVariants?: boolean; mmio?: boolean } = {}): string[] {
  const out: string[] = [];
  if (opts.pci ?? true) {
    out.push(`${base}-pci`);
    if (opts.pciVariants ?? true) out.push(`${base}-pci-transitional`, `${base}-pci-non-transitional`);
  }
  if (opts.mmio ?? true) out.push(`${base}-device`);
  return out;
}

export const SUPPORTED_DEVICES: readonly string[] = [
  ...virtioNames('virtio-rng'),
  ...virtioNames('virtio-serial'),
  'virtconsole',
  'virtserialport',
  ...virtioNames('virtio-balloon'),
  // virtio-input has no transitional variants: it is modern only.
  ...virtioNames('virtio-keyboard', { pciVariants: false }),
  ...virtioNames('virtio-mouse', { pciVariants: false }),
  ...virtioNames('virtio-tablet', { pciVariants: false }),
  ...virtioNames('virtio-blk'),
  ...virtioNames('virtio-net'),
];
