/**
 * virtio-balloon as `-device virtio-balloon-pci|virtio-balloon-device` (QEMU 7.2
 * `hw/virtio/virtio-balloon.c`, `virtio-balloon-pci.c`): QEMU's properties and defaults
 * (`deflate-on-oom` off, `free-page-hint` off and needing an `iothread`, `page-poison` on,
 * `free-page-reporting` off, `qemu-4-0-config-size` off), no MSI-X and no `vectors` or
 * `ioeventfd` property on PCI, one balloon per machine, the QOM properties `guest-stats` and
 * `guest-stats-polling-interval`, and the machine's balloon handler for QMP `balloon` and
 * `query-balloon` with the BALLOON_CHANGE event.
 */
import { BalloonPropertyError, VirtIOBalloon } from '../../devices/balloon/virtio-balloon.js';
import { CmdlineError } from '../cmdline.js';
import { asQdict } from '../qdict.js';
import { parseStrtoull } from '../qtest-server.js';
import { setDynamicProp, setStaticProp } from './qom-props.js';
import type { VirtioDeviceType } from './types.js';

const FEATURE_PROPS = ['deflate-on-oom', 'free-page-hint', 'page-poison', 'free-page-reporting', 'qemu-4-0-config-size'] as const;
const FEATURE_DEFAULTS: Readonly<Record<(typeof FEATURE_PROPS)[number], boolean>> = {
  'deflate-on-oom': false,
  'free-page-hint': false,
  'page-poison': true,
  'free-page-reporting': false,
  'qemu-4-0-config-size': false,
};

/** QEMU's string-to-int64 of an `int` property (`qemu_strtoi64`, base 0). */
function parseI64(name: string, text: string): bigint {
  const neg = text.startsWith('-');
  const r = parseStrtoull(neg ? text.slice(1) : text);
  if (!r.ok || r.value > (neg ? 1n << 63n : (1n << 63n) - 1n)) throw new CmdlineError(`Parameter '${name}' expects integer`);
  return neg ? -r.value : r.value;
}

export const balloonType: VirtioDeviceType = {
  deviceType: 'virtio-balloon-device',
  pciType: 'virtio-balloon-pci',
  props: {
    'deflate-on-oom': 'bool', 'free-page-hint': 'bool', 'page-poison': 'bool', 'free-page-reporting': 'bool',
    'qemu-4-0-config-size': 'bool', iothread: 'str', 'guest-stats-polling-interval': 'str', 'guest-stats': 'str',
  },
  pciLacks: ['vectors', 'ioeventfd'],
  create(ctx) {
    const v = ctx.values;
    const m = ctx.machine;
    // Property time (before realize): the link and the QOM properties.
    const iothread = v.get('iothread');
    if (iothread !== undefined && !ctx.cl.objects.some((o) => o.qomType === 'iothread' && o.id === String(iothread))) {
      throw new CmdlineError(`Device '${String(iothread)}' not found`);
    }
    if (v.has('guest-stats')) throw new CmdlineError("Property 'virtio-balloon-device.guest-stats' is not writable");
    let interval: bigint | undefined;
    if (v.has('guest-stats-polling-interval')) interval = parseI64('guest-stats-polling-interval', String(v.get('guest-stats-polling-interval')));
    const dev = new VirtIOBalloon({
      memory: m.sys.ram,
      // QEMU's get_current_ram_size: the machine's -m (no DIMMs here).
      ramSize: ctx.cl.ramSize,
      clock: m.clock,
      deflateOnOom: ctx.bool('deflate-on-oom', false),
      freePageHint: ctx.bool('free-page-hint', false),
      pagePoison: ctx.bool('page-poison', true),
      freePageReporting: ctx.bool('free-page-reporting', false),
      qemu40ConfigSize: ctx.bool('qemu-4-0-config-size', false),
      disabledFeatures: ctx.disabledFeatures,
      packed: ctx.packed,
      onBalloonChange: (actual) => m.emitEvent('BALLOON_CHANGE', { actual }),
      ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
    });
    if (interval !== undefined) {
      try {
        dev.setStatsPollInterval(interval);
      } catch (e) {
        if (e instanceof BalloonPropertyError) throw new CmdlineError(e.message);
        throw e;
      }
    }
    // Realize: the one balloon handler, then the iothread requirement.
    if (m.balloon) throw new CmdlineError('Only one balloon device is supported');
    if (ctx.bool('free-page-hint', false) && iothread === undefined) throw new CmdlineError("'free-page-hint' requires 'iothread' to be set");
    m.balloon = { toTarget: (t) => dev.setTarget(t), actual: () => dev.queryActual() };
    m.precopyNotifiers.add((reason) => dev.precopyNotify(reason));
    return dev;
  },
  qom(device, objs, ctx) {
    const dev = device as VirtIOBalloon;
    for (const p of FEATURE_PROPS) setStaticProp(objs, ctx, p, ctx.bool(p, FEATURE_DEFAULTS[p]));
    setDynamicProp(objs, 'guest-stats', { type: 'guest statistics', get: () => asQdict(dev.guestStats()) });
    setDynamicProp(objs, 'guest-stats-polling-interval', {
      type: 'int',
      get: () => dev.statsPollInterval,
      set: (value) => {
        if (typeof value !== 'number' || !Number.isInteger(value) || Math.abs(value) >= 2 ** 63) {
          throw new Error("Invalid parameter type for 'guest-stats-polling-interval', expected: integer");
        }
        dev.setStatsPollInterval(BigInt(value));
      },
    });
  },
};
