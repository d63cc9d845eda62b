// Typed trace events. Names follow QEMU's trace points where one exists, so a reader who knows
// `trace-events` in hw/virtio can match them. Producers test `tracer !== undefined` before
// building an event, so an untraced device pays one comparison per site.

export type TraceEvent =
  | { type: 'virtio_set_status'; device: string; value: number }
  | { type: 'virtio_set_features'; device: string; features: bigint }
  | { type: 'virtio_features_ok_refused'; device: string; features: bigint }
  | { type: 'virtio_reset'; device: string }
  | { type: 'virtio_error'; device: string; message: string }
  | { type: 'virtio_queue_notify'; device: string; queue: number }
  | { type: 'virtio_queue_notify_deferred'; device: string; queue: number }
  | { type: 'virtio_vmstate_change'; device: string; running: boolean }
  | { type: 'virtio_notify'; device: string; queue: number; vector: number }
  | { type: 'virtio_notify_suppressed'; device: string; queue: number }
  | { type: 'virtio_notify_config'; device: string; vector: number }
  | { type: 'virtqueue_set_rings'; device: string; queue: number; num: number; desc: number; avail: number; used: number }
  // On a packed ring `packed` is set: `head` is the buffer id, `slot` the ring slot (of the chain's
  // first descriptor for a pop, of the used descriptor for a fill), `wrap` the wrap counter there.
  | { type: 'virtqueue_pop'; device: string; queue: number; head: number; outNum: number; inNum: number; outBytes: number; inBytes: number; packed?: { slot: number; wrap: boolean; ndescs: number } }
  | { type: 'virtqueue_fill'; device: string; queue: number; head: number; len: number; slot: number; packed?: { wrap: boolean } }
  | { type: 'virtqueue_flush'; device: string; queue: number; count: number; usedIdx: number; packed?: { wrap: boolean; slots: number } }
  | { type: 'virtqueue_stale_element'; device: string; queue: number; head: number }
  | { type: 'virtio_config_read'; device: string; offset: number; size: number; value: number }
  | { type: 'virtio_config_write'; device: string; offset: number; size: number; value: number }
  | { type: 'mmio_read'; device: string; offset: number; size: number; value: number; register: string }
  | { type: 'mmio_write'; device: string; offset: number; size: number; value: number; register: string }
  | { type: 'guest_error'; device: string; message: string }
  | { type: 'irq'; device: string; level: boolean }
  | { type: 'device'; device: string; message: string }
  | { type: 'virtio_serial_send_control_event'; device: string; port: number; event: number; value: number; sent: boolean }
  | { type: 'virtio_serial_handle_control_message'; device: string; port: number; event: number; value: number }
  | { type: 'virtio_serial_throttle_port'; device: string; port: number; throttle: boolean }
  | { type: 'virtio_console_flush_buf'; device: string; port: number; len: number; ret: number }
  | { type: 'virtio_console_chr_read'; device: string; port: number; len: number }
  | { type: 'virtio_console_chr_event'; device: string; port: number; event: string };

/** virtio-console control event names (VIRTIO 1.2 §5.3.6.2), for the formatter. */
function controlEventName(event: number): string {
  return ['DEVICE_READY', 'PORT_ADD', 'PORT_REMOVE', 'PORT_READY', 'CONSOLE_PORT', 'RESIZE', 'PORT_OPEN', 'PORT_NAME'][event] ?? `event ${event}`;
}

export type Tracer = (event: TraceEvent) => void;

/** Format an event as one readable line, for the demo and for `--trace` output. */
export function formatTraceEvent(e: TraceEvent): string {
  const hex = (n: number) => '0x' + n.toString(16);
  switch (e.type) {
    case 'virtio_set_status': return `${e.device}: status <- ${hex(e.value)} (${describeStatus(e.value)})`;
    case 'virtio_set_features': return `${e.device}: guest features <- 0x${e.features.toString(16)}`;
    case 'virtio_features_ok_refused': return `${e.device}: FEATURES_OK refused for 0x${e.features.toString(16)}`;
    case 'virtio_reset': return `${e.device}: reset`;
    case 'virtio_error': return `${e.device}: ERROR ${e.message} (device broken, NEEDS_RESET)`;
    case 'virtio_queue_notify': return `${e.device}: queue ${e.queue} notified by driver`;
    case 'virtio_queue_notify_deferred': return `${e.device}: queue ${e.queue} notified while the VM is stopped (handled on resume)`;
    case 'virtio_vmstate_change': return `${e.device}: VM ${e.running ? 'running' : 'stopped'}`;
    case 'virtio_notify': return `${e.device}: interrupt for queue ${e.queue} (vector ${hex(e.vector)})`;
    case 'virtio_notify_suppressed': return `${e.device}: interrupt for queue ${e.queue} suppressed by the driver`;
    case 'virtio_notify_config': return `${e.device}: configuration-change interrupt (vector ${hex(e.vector)})`;
    case 'virtqueue_set_rings': return `${e.device}: queue ${e.queue} size ${e.num} desc ${hex(e.desc)} avail ${hex(e.avail)} used ${hex(e.used)}`;
    case 'virtqueue_pop':
      if (e.packed) return `${e.device}: queue ${e.queue} pop id ${e.head} at slot ${e.packed.slot} (wrap ${e.packed.wrap ? 1 : 0}, ${e.packed.ndescs} slot${e.packed.ndescs === 1 ? '' : 's'}): ${e.outNum} readable (${e.outBytes} B), ${e.inNum} writable (${e.inBytes} B)`;
      return `${e.device}: queue ${e.queue} pop head ${e.head}: ${e.outNum} readable (${e.outBytes} B), ${e.inNum} writable (${e.inBytes} B)`;
    case 'virtqueue_fill':
      if (e.packed) return `${e.device}: queue ${e.queue} used descriptor at slot ${e.slot} (wrap ${e.packed.wrap ? 1 : 0}) = {id ${e.head}, len ${e.len}}`;
      return `${e.device}: queue ${e.queue} used[${e.slot}] = {id ${e.head}, len ${e.len}}`;
    case 'virtqueue_flush':
      if (e.packed) return `${e.device}: queue ${e.queue} device position <- ${e.usedIdx}, wrap ${e.packed.wrap ? 1 : 0} (+${e.count} chain${e.count === 1 ? '' : 's'}, ${e.packed.slots} slot${e.packed.slots === 1 ? '' : 's'})`;
      return `${e.device}: queue ${e.queue} used.idx <- ${e.usedIdx} (+${e.count})`;
    case 'virtqueue_stale_element': return `${e.device}: queue ${e.queue} dropped completion of head ${e.head} from before a reset`;
    case 'virtio_config_read': return `${e.device}: config[${e.offset}:${e.size}] -> ${hex(e.value)}`;
    case 'virtio_config_write': return `${e.device}: config[${e.offset}:${e.size}] <- ${hex(e.value)}`;
    case 'mmio_read': return `${e.device}: read  ${e.register} (${hex(e.offset)}) -> ${hex(e.value)}`;
    case 'mmio_write': return `${e.device}: write ${e.register} (${hex(e.offset)}) <- ${hex(e.value)}`;
    case 'guest_error': return `${e.device}: guest error: ${e.message}`;
    case 'irq': return `${e.device}: irq line ${e.level ? 'raised' : 'lowered'}`;
    case 'device': return `${e.device}: ${e.message}`;
    case 'virtio_serial_send_control_event': return `${e.device}: control -> guest: port ${e.port === 0xffffffff ? '-' : e.port} ${controlEventName(e.event)} ${e.value}${e.sent ? '' : ' (no buffer: not sent)'}`;
    case 'virtio_serial_handle_control_message': return `${e.device}: control <- guest: port ${e.port === 0xffffffff ? '-' : e.port} ${controlEventName(e.event)} ${e.value}`;
    case 'virtio_serial_throttle_port': return `${e.device}: port ${e.port} ${e.throttle ? 'throttled (host side full)' : 'unthrottled'}`;
    case 'virtio_console_flush_buf': return `${e.device}: port ${e.port} guest wrote ${e.len} B, host took ${e.ret}`;
    case 'virtio_console_chr_read': return `${e.device}: port ${e.port} ${e.len} B from the host to the guest`;
    case 'virtio_console_chr_event': return `${e.device}: port ${e.port} host side ${e.event}`;
  }
}

export function describeStatus(s: number): string {
  if (s === 0) return 'reset';
  const names: string[] = [];
  if (s & 1) names.push('ACKNOWLEDGE');
  if (s & 2) names.push('DRIVER');
  if (s & 8) names.push('FEATURES_OK');
  if (s & 4) names.push('DRIVER_OK');
  if (s & 0x40) names.push('NEEDS_RESET');
  if (s & 0x80) names.push('FAILED');
  return names.join('|');
}
