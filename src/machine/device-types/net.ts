/**
 * virtio-net as `-device virtio-net-pci|virtio-net-device` (QEMU 7.2 `hw/net/virtio-net.c`,
 * `hw/virtio/virtio-net-pci.c`): QEMU's properties with their types, defaults and messages,
 * `netdev=` to a `-netdev` (one NIC per netdev), the default MAC of QEMU's allocator, the NIC's
 * client name (the PCI device's id, or `<type>.<n>`), `vectors` of 2 × queues + 2 on PCI, PCI
 * class Ethernet, and the NIC_RX_FILTER_CHANGED event with QEMU's `name` and `path`.
 */
import { parseMacProperty } from '../../devices/net/mac.js';
import { VIRTIO_NET_FEATURE_PROPS, VirtIONet, type VirtIONetFeatureProperty } from '../../devices/net/virtio-net.js';
import { CmdlineError } from '../cmdline.js';
import { setDynamicProp, setStaticProp } from './qom-props.js';
import type { PropKind, VirtioDeviceType } from './types.js';

/** `PCI_CLASS_NETWORK_ETHERNET`. */
const PCI_CLASS_NETWORK_ETHERNET = 0x0200;
/** QEMU's DEV_NVECTORS_UNSPECIFIED. */
const DEV_NVECTORS_UNSPECIFIED = 0xffff_ffff;

const props: Record<string, PropKind> = {
  netdev: 'str', mac: 'str', host_mtu: 'u16', speed: 'i32', duplex: 'str', rx_queue_size: 'u16', tx_queue_size: 'u16',
  'x-txburst': 'i32', 'x-txtimer': 'u32', tx: 'str', 'x-mtu-bypass-backend': 'bool', failover: 'bool', rsc_interval: 'u32',
  bootindex: 'i32',
};
for (const name of Object.keys(VIRTIO_NET_FEATURE_PROPS)) props[name] = 'bool';

export const netType: VirtioDeviceType = {
  deviceType: 'virtio-net-device',
  pciType: 'virtio-net-pci',
  props,
  refused: {
    failover: 'virtio-net failover needs a primary device hot-plugged by the machine',
  },
  defaultOnly: { failover: false },
  create(ctx) {
    const v = ctx.values;
    const m = ctx.machine;
    const devType = ctx.pci ? 'virtio-net-pci' : 'virtio-net-device';
    // Property time: mac and netdev are resolved when set, with their own messages.
    let mac: Uint8Array | undefined;
    if (v.has('mac')) {
      mac = parseMacProperty(String(v.get('mac')));
      if (!mac) throw new CmdlineError(`Property 'virtio-net-device.mac' doesn't take value '${String(v.get('mac'))}'`);
    }
    const netdevId = v.get('netdev');
    let netdev;
    if (netdevId !== undefined && netdevId !== '') {
      try {
        netdev = ctx.net.takeNetdev(String(netdevId), 'virtio-net-device.netdev');
      } catch (e) {
        throw new CmdlineError((e as Error).message);
      }
    }
    // Realize.
    const duplex = v.get('duplex');
    if (duplex !== undefined && duplex !== 'half' && duplex !== 'full') throw new CmdlineError("'duplex' must be 'half' or 'full'");
    const speed = v.has('speed') ? (v.get('speed') as number) : -1;
    if (speed < -1) throw new CmdlineError("'speed' must be between 0 and INT_MAX");
    const tx = v.get('tx');
    if (tx !== undefined && tx !== 'bh' && tx !== 'timer') {
      ctx.warn(`virtio-net: Unknown option tx=${String(tx)}, valid options: "timer" "bh"\nDefaulting to "bh"`);
    }
    if (tx === 'timer') throw new CmdlineError('property \'tx=timer\' of virtio-net is not supported by virtio-ts-qemu (transmit runs in the notify, as tx=bh)');
    const properties: Partial<Record<VirtIONetFeatureProperty, boolean>> = {};
    for (const name of Object.keys(VIRTIO_NET_FEATURE_PROPS) as VirtIONetFeatureProperty[]) if (v.has(name)) properties[name] = v.get(name) as boolean;
    const nicName = ctx.pci ? (ctx.spec.id ?? ctx.net.assignName(devType)) : (ctx.spec.id ?? ctx.net.assignName(devType));
    let dev: VirtIONet;
    try {
      dev = new VirtIONet({
        memory: m.sys.ram,
        mac: ctx.net.macs.assign(mac),
        ...(netdev ? { netdev } : {}),
        properties,
        ...(v.has('host_mtu') ? { hostMtu: v.get('host_mtu') as number } : {}),
        speed,
        ...(duplex !== undefined ? { duplex: duplex as 'half' | 'full' } : {}),
        ...(v.has('rx_queue_size') ? { rxQueueSize: v.get('rx_queue_size') as number } : {}),
        ...(v.has('tx_queue_size') ? { txQueueSize: v.get('tx_queue_size') as number } : {}),
        ...(v.has('x-txburst') ? { txBurst: v.get('x-txburst') as number } : {}),
        nicName,
        clock: m.clock,
        disabledFeatures: ctx.disabledFeatures,
        packed: ctx.packed,
        onWarning: (msg) => ctx.warn(msg),
        ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
      });
    } catch (e) {
      if (e instanceof RangeError) throw new CmdlineError(e.message);
      throw e;
    }
    ctx.net.addNic(dev, devType);
    if (ctx.pci && !v.has('romfile')) {
      ctx.warn('virtio-ts loads no option ROM: the device has no ROM BAR, where QEMU loads efi-virtio.rom (pass romfile= to both for the same device)');
    }
    return dev;
  },
  pciOptions(values, device) {
    const out: { vectors?: number; classId?: number } = { classId: PCI_CLASS_NETWORK_ETHERNET };
    if (!values.has('vectors') || values.get('vectors') === DEV_NVECTORS_UNSPECIFIED) {
      // virtio_net_pci_realize: 2 × the netdev's queues (at least one) + config + control.
      out.vectors = 2 * (device as VirtIONet).maxQueuePairs + 2;
    }
    return out;
  },
  qom(device, objs, ctx) {
    const dev = device as VirtIONet;
    const m = ctx.machine;
    // NIC_RX_FILTER_CHANGED: the PCI form names its NIC after the proxy's id; the mmio form has
    // no netclient name. The path is the virtio-net device's.
    const name = ctx.pci ? ctx.spec.id : undefined;
    dev.onRxFilterChanged = () => m.emitEvent('NIC_RX_FILTER_CHANGED', { ...(name !== undefined ? { name } : {}), path: objs.backend.path });
    setStaticProp(objs, ctx, 'mac', [...dev.confMac].map((b) => b.toString(16).padStart(2, '0')).join(':'));
    if (ctx.values.has('netdev')) setStaticProp(objs, ctx, 'netdev', String(ctx.values.get('netdev')));
    setDynamicProp(objs, 'bootindex', { type: 'int32', get: () => (ctx.values.has('bootindex') ? (ctx.values.get('bootindex') as number) : -1) });
  },
};
