/** virtio-rng as `-device virtio-rng-pci|virtio-rng-device` (QEMU 7.2 `hw/virtio/virtio-rng.c`). */
import { VirtIORng } from '../../devices/rng.js';
import { CmdlineError } from '../cmdline.js';
import type { VirtioDeviceType } from './types.js';

const INT64_MAX = 0x7fff_ffff_ffff_ffffn;

export const rngType: VirtioDeviceType = {
  deviceType: 'virtio-rng-device',
  pciType: 'virtio-rng-pci',
  props: { 'max-bytes': 'u64', period: 'u32', rng: 'str' },
  refused: { rng: 'the device uses the built-in entropy source' },
  create(ctx) {
    // virtio_rng_device_realize checks.
    const v = ctx.values;
    const period = v.has('period') ? (v.get('period') as number) : 65536;
    if (period === 0) throw new CmdlineError("'period' parameter expects a positive integer");
    const maxBytes = v.has('max-bytes') ? BigInt(v.get('max-bytes') as string) : INT64_MAX;
    if (maxBytes > INT64_MAX) throw new CmdlineError("'max-bytes' parameter must be non-negative, and less than 2^63");
    return new VirtIORng({
      memory: ctx.machine.sys.ram,
      clock: ctx.machine.clock,
      // QEMU's default is INT64_MAX bytes per period: no limit in practice, but the period timer
      // runs all the same (and `clock_step` with no argument finds its deadline).
      maxBytes: Number(maxBytes),
      periodMs: period,
      disabledFeatures: ctx.disabledFeatures,
      packed: ctx.packed,
      ...(ctx.opts.entropy ? { entropy: ctx.opts.entropy } : {}),
      ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
    });
  },
};
