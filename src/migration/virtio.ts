/**
 * virtio_save / virtio_load (QEMU 7.2 `hw/virtio/virtio.c`): the blob a virtio device writes
 * into its migration section, byte for byte as QEMU writes it (spec/qemu-virtio-migration.md §1),
 * and read back with QEMU's checks and reconstruction (§3).
 *
 * The blob: the transport's config part, status, ISR, queue_sel, the low feature word, the config
 * bytes, each queue's size/[alignment]/descriptor address/last_avail_idx plus the transport's
 * per-queue part, the device type's own state, then the `virtio/*` subsections.
 *
 * The load is atomic. Everything is parsed and checked first, including what QEMU can only
 * check after changing the device (features against the offer, the ring indices in guest RAM),
 * and the device changes only when the whole blob is valid. QEMU's own "load, then mark broken"
 * outcome (a guest index too far ahead of the device's) is kept: it is not a load failure.
 */
import { gpaFromBigInt, INVALID_GPA } from '../memory/guest-memory.js';
import { DeviceEndian, hasBit, VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1 } from '../virtio/constants.js';
import type { VirtIODevice } from '../virtio/device.js';
import { VIRTIO_NO_VECTOR, VIRTIO_QUEUE_MAX, VIRTQUEUE_MAX_SIZE, VRING_DESC_SIZE } from '../vring/constants.js';
import { alignUp, availRingSize, isPowerOfTwo } from '../vring/layout.js';
import type { DeviceSection, LoadContext } from './machine-state.js';
import { QEMUFileReader, QEMUFileWriter } from './qemu-file.js';
import { vmstateLoad, vmstateSave, type Apply, type VMStateDescription } from './vmstate.js';

/** The virtio_load step that turned a queue's state into guest-visible trouble (kept, not refused). */
interface QueueStage {
  num: number;
  /** Only on transports with variable alignment (virtio-mmio). */
  align: number | undefined;
  desc: number;
  lastAvailIdx: number;
  /** From `virtio/virtqueues` (modern) or derived (legacy); 0 when absent. */
  avail: number;
  used: number;
  transport: Apply | undefined;
  // Computed from guest RAM once the features are known.
  usedIdx: number;
  shadowAvailIdx: number;
  inuse: number;
  /** QEMU's `virtio_error` during the load: applied as an error, not a refusal. */
  error: string | undefined;
}

/** One queue's entry of `virtio/packed_virtqueues`. */
interface PackedQueueStage {
  /** Stream offset of the entry (for errors). */
  at: number;
  lastAvailIdx: number;
  lastAvailWrap: boolean;
  usedIdx: number;
  usedWrap: boolean;
  inuse: number;
}

/** What the `virtio/*` subsections carry, filled while they are parsed. */
interface SubsectionStage {
  deviceEndian: DeviceEndian | undefined;
  features64: bigint | undefined;
  rings: { avail: number; used: number }[] | undefined;
  numDefault: number[] | undefined;
  broken: boolean;
  started: boolean;
  disabled: boolean;
  extraState: Apply | undefined;
  packed: PackedQueueStage[] | undefined;
}

/** Leading queues that exist (`vring.num != 0`): QEMU's count, at most 1024. */
function queueCount(vdev: VirtIODevice): number {
  let n = 0;
  while (n < vdev.vq.length && n < VIRTIO_QUEUE_MAX && vdev.vq[n]!.num !== 0) n++;
  return n;
}

/** Target endianness: what QEMU's `virtio_default_endian` gives for this device's guest. */
function defaultEndian(vdev: VirtIODevice): DeviceEndian {
  return vdev.guestBigEndian ? DeviceEndian.BIG : DeviceEndian.LITTLE;
}

/**
 * `vmstate_virtio`: no fields, nine subsections in QEMU's order with its `needed` conditions
 * (they look at the *offered* features unless they say otherwise). `stage` receives what a load
 * parses; saving does not need it.
 */
function virtioVmsd(vdev: VirtIODevice, stage?: SubsectionStage, deviceQueues = vdev.vq.length): VMStateDescription {
  const st = (): SubsectionStage => stage!;
  const version1 = () => vdev.hostHasFeature(VIRTIO_F_VERSION_1);
  const sub = (name: string, d: Omit<VMStateDescription, 'name' | 'versionId' | 'minimumVersionId'>): VMStateDescription => ({
    name,
    versionId: 1,
    minimumVersionId: 1,
    ...d,
  });
  const bool = (name: string, get: () => boolean, set: (v: boolean) => void) =>
    sub(name, {
      needed: get,
      save: (f) => f.putBool(get()),
      load: (f) => set(f.getBool(name)),
    });
  const bus = vdev.bus;
  return {
    name: 'virtio',
    versionId: 1,
    minimumVersionId: 1,
    subsections: [
      sub('virtio/device_endian', {
        needed: () => vdev.deviceEndian !== (vdev.hasFeature(VIRTIO_F_VERSION_1) ? DeviceEndian.LITTLE : defaultEndian(vdev)),
        save: (f) => f.putByte(vdev.deviceEndian),
        load: (f) => {
          const at = f.offset;
          const e = f.getByte('virtio/device_endian');
          // QEMU stores any byte; only these three mean anything, and UNKNOWN is then replaced.
          if (e > DeviceEndian.BIG) throw f.error('virtio/device_endian', `device_endian ${e} is not 0, 1 (little) or 2 (big)`, at);
          st().deviceEndian = e === DeviceEndian.UNKNOWN ? undefined : (e as DeviceEndian);
        },
      }),
      sub('virtio/64bit_features', {
        needed: () => vdev.hostFeatures >> 32n !== 0n,
        save: (f) => f.putBe64(vdev.guestFeatures),
        load: (f) => {
          st().features64 = f.getBe64('virtio/64bit_features guest_features');
        },
      }),
      sub('virtio/virtqueues', {
        needed: version1,
        save: (f) => {
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
            const q = vdev.getQueue(i);
            f.putBe64(BigInt(q?.avail ?? 0));
            f.putBe64(BigInt(q?.used ?? 0));
          }
        },
        load: (f) => {
          const name = 'virtio/virtqueues';
          needBytes(f, VIRTIO_QUEUE_MAX * 16, name, 16);
          const rings: { avail: number; used: number }[] = [];
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
            const at = f.offset;
            const avail = f.getBe64(name);
            const used = f.getBe64(name);
            if (i >= deviceQueues) {
              // QEMU would keep addresses for queues the device never added; they could never be
              // used. Refuse them rather than carry state that has no home here.
              if (avail !== 0n || used !== 0n) throw f.error(`${name}[${i}]`, `queue ${i} does not exist on ${vdev.name} (it has ${deviceQueues}) but has ring addresses`, at);
              continue;
            }
            rings.push({ avail: streamGpa(f, avail, `${name}[${i}].avail`, at), used: streamGpa(f, used, `${name}[${i}].used`, at + 8) });
          }
          st().rings = rings;
        },
      }),
      sub('virtio/ringsize', {
        needed: () => vdev.vq.some((q) => q.num !== q.numDefault),
        save: (f) => {
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) f.putBe32(vdev.getQueue(i)?.numDefault ?? 0);
        },
        load: (f) => {
          const name = 'virtio/ringsize';
          needBytes(f, VIRTIO_QUEUE_MAX * 4, name, 4);
          const sizes: number[] = [];
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
            const at = f.offset;
            const n = f.getBe32(name);
            const exists = i < deviceQueues;
            if (exists ? n < 1 || n > VIRTQUEUE_MAX_SIZE : n !== 0) {
              throw f.error(`${name}[${i}].num_default`, exists ? `queue ${i} default size ${n} is not 1..${VIRTQUEUE_MAX_SIZE}` : `queue ${i} does not exist on ${vdev.name} but has default size ${n}`, at);
            }
            if (exists) sizes.push(n);
          }
          st().numDefault = sizes;
        },
      }),
      bool('virtio/broken', () => vdev.broken, (v) => (st().broken = v)),
      sub('virtio/extra_state', {
        needed: () => bus?.hasExtraState?.() === true,
        save: (f) => {
          const x = bus?.extraState?.();
          if (x) vmstateSave(f, x);
        },
        load: (f) => {
          const x = bus?.extraState?.();
          // QEMU's get_extra_state fails when the transport has no extra state to load into.
          if (!x) throw f.error('virtio/extra_state', `the transport of ${vdev.name} has no extra state`);
          st().extraState = vmstateLoad(f, x, x.versionId);
        },
      }),
      bool('virtio/started', () => vdev.started, (v) => (st().started = v)),
      sub('virtio/packed_virtqueues', {
        needed: () => vdev.hostHasFeature(VIRTIO_F_RING_PACKED),
        save: (f) => {
          // All 1024 of QEMU's queues; those a device never added hold their reset values.
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
            const q = vdev.getQueue(i);
            f.putBe16(q?.lastAvailIdx ?? 0);
            f.putBool(q?.lastAvailWrapCounter ?? true);
            f.putBe16(q?.usedIdx ?? 0);
            f.putBool(q?.usedWrapCounter ?? true);
            f.putBe32(q?.inuse ?? 0);
          }
        },
        load: (f) => {
          // QEMU loads these fields into every queue, split ones too; for a split ring only
          // last_avail_idx survives the reconstruction that follows.
          const name = 'virtio/packed_virtqueues';
          needBytes(f, VIRTIO_QUEUE_MAX * 10, name, 10);
          const queues: PackedQueueStage[] = [];
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) {
            const field = (s: string) => `${name}[${i}].${s}`;
            queues.push({
              at: f.offset,
              lastAvailIdx: f.getBe16(field('last_avail_idx')),
              lastAvailWrap: f.getBool(field('last_avail_wrap_counter')),
              usedIdx: f.getBe16(field('used_idx')),
              usedWrap: f.getBool(field('used_wrap_counter')),
              inuse: f.getBe32(field('inuse')),
            });
          }
          st().packed = queues;
        },
      }),
      bool('virtio/disabled', () => vdev.disabled, (v) => (st().disabled = v)),
    ],
  };
}

/** Refuse an array that cannot fit in what is left, naming the element it would end in. */
function needBytes(f: QEMUFileReader, n: number, name: string, elem: number): void {
  if (f.remaining >= n) return;
  const i = Math.floor(f.remaining / elem);
  f.skip(i * elem, name);
  throw f.error(`${name}[${i}]`, `stream ends inside element ${i} of ${n / elem}`);
}

/** A 64-bit guest address from the stream; one no RAM here can hold is refused. */
function streamGpa(f: QEMUFileReader, v: bigint, field: string, at: number): number {
  const gpa = gpaFromBigInt(v);
  if (gpa === INVALID_GPA) throw f.error(field, `address 0x${v.toString(16)} is beyond 2^53, where no guest RAM can be`, at);
  return gpa;
}

/** Write the device's blob (QEMU's `virtio_save`). */
export function virtioSave(vdev: VirtIODevice, f: QEMUFileWriter): void {
  const bus = vdev.bus;
  bus?.saveConfig?.(f);
  f.putByte(vdev.status);
  f.putByte(vdev.isr);
  f.putBe16(vdev.queueSel);
  f.putBe32(Number(vdev.guestFeatures & 0xffff_ffffn));
  f.putBe32(vdev.configLen);
  f.putBuffer(vdev.config);
  const n = queueCount(vdev);
  f.putBe32(n);
  const variableAlign = bus?.hasVariableVringAlignment === true;
  for (let i = 0; i < n; i++) {
    const q = vdev.vq[i]!;
    f.putBe32(q.num);
    if (variableAlign) f.putBe32(q.align);
    f.putBe64(BigInt(q.desc));
    f.putBe16(q.lastAvailIdx);
    bus?.saveQueue?.(i, f);
  }
  vdev.saveDeviceState(f);
  vmstateSave(f, virtioVmsd(vdev));
}

/**
 * Parse a blob into `vdev` (QEMU's `virtio_load`): every check first, nothing changed until the
 * returned function runs. `ctx.peekRam` reads guest RAM as the load will leave it; by default
 * the device's own memory (a device-only load, where RAM is not part of the stream).
 */
export function virtioLoad(vdev: VirtIODevice, f: QEMUFileReader, ctx?: LoadContext): Apply {
  const bus = vdev.bus;
  const peekRam = ctx ? (gpa: number, len: number) => ctx.peekRam(gpa, len) : (gpa: number, len: number) => vdev.memory.view(gpa, len);

  const transportConfig = bus?.loadConfig?.(f);
  const status = f.getByte('virtio status');
  const isr = f.getByte('virtio isr');
  const selAt = f.offset;
  const queueSel = f.getBe16('virtio queue_sel');
  if (queueSel >= VIRTIO_QUEUE_MAX) throw f.error('virtio queue_sel', `queue_sel ${queueSel} is not below ${VIRTIO_QUEUE_MAX}`, selAt);
  const features32 = BigInt(f.getBe32('virtio guest_features (low 32 bits)'));

  // QEMU takes what fits of the stream's config and skips the rest; bytes the stream lacks keep
  // their value. The length is a be32 QEMU mixes with signed types; here it is unsigned, and the
  // skip is bounded by what the stream holds.
  const cfgAt = f.offset;
  const configLen = f.getBe32('virtio config_len');
  if (configLen > f.remaining) throw f.error('virtio config_len', `config_len ${configLen} is more than the ${f.remaining} bytes left`, cfgAt);
  const config = vdev.config.slice();
  const take = Math.min(configLen, config.length);
  config.set(f.getView(take, 'virtio config'));
  f.skip(configLen - take, 'virtio config (beyond ours)');

  const numAt = f.offset;
  const num = f.getBe32('virtio num_queues');
  if (num > VIRTIO_QUEUE_MAX) throw f.error('virtio num_queues', `Invalid number of virtqueues: 0x${num.toString(16)}`, numAt);
  // The queues the device will have: its own, or (virtio-net in Debian's 7.2.22, through
  // `pre_load_queues`) as many as the stream carries, within what its configuration allows.
  const counted = vdev.queueCountForLoad(num);
  if (typeof counted === 'string') throw f.error('virtio num_queues', counted, numAt);
  const deviceQueues = counted;
  const variableAlign = bus?.hasVariableVringAlignment === true;
  const queues: QueueStage[] = [];
  for (let i = 0; i < num; i++) {
    const field = (s: string) => `virtio vq[${i}].${s}`;
    const nAt = f.offset;
    const qnum = f.getBe32(field('num'));
    // QEMU stores any size; 0 would remove a queue the device has, and above 1024 is no ring.
    if (qnum === 0 || qnum > VIRTQUEUE_MAX_SIZE) throw f.error(field('num'), `queue ${i} size ${qnum} is not 1..${VIRTQUEUE_MAX_SIZE}`, nAt);
    const align = variableAlign ? f.getBe32(field('align')) : undefined;
    const dAt = f.offset;
    const desc = streamGpa(f, f.getBe64(field('desc')), field('desc'), dAt);
    const lAt = f.offset;
    const lastAvailIdx = f.getBe16(field('last_avail_idx'));
    if (desc === 0 && lastAvailIdx !== 0) {
      throw f.error(field('last_avail_idx'), `VQ ${i} address 0x0 inconsistent with Host index 0x${lastAvailIdx.toString(16)}`, lAt);
    }
    const transport = bus?.loadQueue?.(i, f);
    queues.push({ num: qnum, align, desc, lastAvailIdx, avail: 0, used: 0, transport, usedIdx: 0, shadowAvailIdx: 0, inuse: 0, error: undefined });
  }

  const device = vdev.loadDeviceState(f, vdev.vmsdVersion, {
    peekRam,
    writable: (gpa, len) => vdev.memory.isWritableRange(gpa, len),
    queueNum: (n) => queues[n]?.num,
    lowFeatures: features32,
  });

  const stage: SubsectionStage = {
    deviceEndian: undefined,
    features64: undefined,
    rings: undefined,
    numDefault: undefined,
    broken: false,
    started: false,
    disabled: false,
    extraState: undefined,
    packed: undefined,
  };
  const vmsd = virtioVmsd(vdev, stage, deviceQueues);
  const subsAt = f.offset;
  vmstateLoad(f, vmsd, 1); // everything lands in `stage`

  const deviceEndian = stage.deviceEndian ?? defaultEndian(vdev);
  // QEMU picks the feature source by the destination's offer, not by what the stream carried.
  const features = vdev.hostFeatures >> 32n !== 0n ? (stage.features64 ?? features32) : features32;
  if ((features & ~vdev.hostFeatures) !== 0n) {
    throw f.error('virtio guest_features', `Features 0x${features.toString(16)} unsupported. Allowed features: 0x${vdev.hostFeatures.toString(16)}`, subsAt);
  }
  const refused = vdev.checkLoad(features, num);
  if (refused !== undefined) throw f.error('virtio num_queues', refused, numAt);
  const version1 = hasBit(features, VIRTIO_F_VERSION_1);
  const bigEndian = !version1 && deviceEndian === DeviceEndian.BIG;
  if (stage.packed) for (let i = 0; i < num; i++) queues[i]!.lastAvailIdx = stage.packed[i]!.lastAvailIdx;
  const packed = hasBit(features, VIRTIO_F_RING_PACKED);

  // Ring reconstruction (QEMU reads avail->idx and used->idx from guest RAM, loaded before us).
  const read16 = (gpa: number): number => {
    const b = gpa >= 0 ? peekRam(gpa, 2) : undefined;
    if (!b || b.length < 2) return 0; // QEMU reads 0 through a ring cache that did not map
    return bigEndian ? (b[0]! << 8) | b[1]! : b[0]! | (b[1]! << 8);
  };
  for (let i = 0; i < num; i++) {
    const q = queues[i]!;
    if (version1) {
      q.avail = stage.rings?.[i]?.avail ?? 0;
      q.used = stage.rings?.[i]?.used ?? 0;
    }
    if (q.desc === 0) continue;
    if (packed) {
      // QEMU takes the packed positions as they come; here they must lie in the ring, since
      // the device indexes the descriptor ring with them.
      const p = stage.packed?.[i];
      const field = `virtio/packed_virtqueues[${i}]`;
      if (q.lastAvailIdx >= q.num) throw f.error(`${field}.last_avail_idx`, `VQ ${i} last_avail_idx ${q.lastAvailIdx} is not below its size ${q.num}`, p ? p.at : subsAt);
      if (p && p.usedIdx >= q.num) throw f.error(`${field}.used_idx`, `VQ ${i} used_idx ${p.usedIdx} is not below its size ${q.num}`, p.at + 3);
      if (p && p.inuse > q.num) throw f.error(`${field}.inuse`, `VQ ${i} inuse ${p.inuse} is more than its size ${q.num}`, p.at + 6);
      continue;
    }
    let mapped = true;
    if (!version1) {
      const align = q.align ?? vdev.vq[i]!.align;
      if (align === 0 || !isPowerOfTwo(align)) {
        mapped = false; // the queue stays unmapped, as our legacy layout refuses such alignments
      } else {
        q.avail = q.desc + VRING_DESC_SIZE * q.num;
        q.used = alignUp(q.avail + availRingSize(q.num, true), align);
      }
    }
    const availIdx = mapped ? read16(q.avail + 2) : 0;
    const nheads = (availIdx - q.lastAvailIdx) & 0xffff;
    if (nheads > q.num) {
      q.error = `VQ ${i} size 0x${q.num.toString(16)} Guest index 0x${availIdx.toString(16)} inconsistent with Host index 0x${q.lastAvailIdx.toString(16)}: delta 0x${nheads.toString(16)}`;
      continue;
    }
    q.usedIdx = mapped ? read16(q.used + 2) : 0;
    q.shadowAvailIdx = availIdx;
    q.inuse = (q.lastAvailIdx - q.usedIdx) & 0xffff;
    if (q.inuse > q.num) {
      throw f.error(`virtio vq[${i}]`, `VQ ${i} size 0x${q.num.toString(16)} < last_avail_idx 0x${q.lastAvailIdx.toString(16)} - used_idx 0x${q.usedIdx.toString(16)}`, subsAt);
    }
  }

  return () => {
    // Start from a reset device, as a fresh QEMU destination does: what the stream does not
    // carry takes its reset value, whatever the device held before.
    vdev.reset();
    vdev.preLoadQueues(num);
    transportConfig?.();
    vdev.status = status;
    vdev.isr = isr;
    vdev.queueSel = queueSel;
    vdev.config.set(config);
    if (stage.numDefault) for (let i = 0; i < vdev.vq.length; i++) vdev.vq[i]!.numDefault = stage.numDefault[i] ?? vdev.vq[i]!.numDefault;
    for (let i = 0; i < vdev.vq.length; i++) {
      const q = queues[i];
      const vq = vdev.vq[i]!;
      if (!q) {
        vq.reset();
        continue;
      }
      // Addresses are set after the features, so a byte-order change does not map them twice.
      vq.restoreState(q.num, q.align, 0, 0, 0, q.lastAvailIdx);
      q.transport?.();
    }
    // virtio_notify_vector(NO_VECTOR): the INTx line follows the loaded ISR.
    vdev.bus?.notify(VIRTIO_NO_VECTOR);
    device();
    stage.extraState?.();
    vdev.deviceEndian = deviceEndian;
    vdev.broken = stage.broken;
    vdev.disabled = stage.disabled;
    vdev.setStarted(stage.started);
    vdev.restoreFeatures(features);
    vdev.startOnKick = !stage.started && !version1;
    for (let i = 0; i < num; i++) {
      const q = queues[i]!;
      const vq = vdev.vq[i]!;
      vq.desc = q.desc;
      vq.avail = q.avail;
      vq.used = q.used;
      if (packed) {
        const p = stage.packed?.[i];
        vq.restorePackedRings(q.lastAvailIdx, p?.lastAvailWrap ?? true, p?.usedIdx ?? 0, p?.usedWrap ?? true, p?.inuse ?? 0);
      } else {
        vq.restoreRings(!version1, q.usedIdx, q.shadowAvailIdx, q.inuse);
      }
      if (q.error !== undefined) vdev.virtioError(q.error);
    }
    vdev.postLoad();
  };
}

/** The device's section for a machine stream: idstr `<path>/<vmsd name>`. */
export function virtioDeviceSection(vdev: VirtIODevice, devPath: string): DeviceSection {
  return {
    idstr: `${devPath}/${vdev.vmsdName}`,
    instanceId: 0,
    vmsdName: vdev.vmsdName,
    versionId: vdev.vmsdVersion,
    minimumVersionId: vdev.vmsdVersion,
    required: true,
    preSave: () => vdev.preSave(),
    drain: (ms) => vdev.drain(ms),
    save: (f, rec) => (rec ? rec.field('virtio', 'virtio', () => virtioSave(vdev, f)) : virtioSave(vdev, f)),
    load: (f, _version, ctx) => virtioLoad(vdev, f, ctx),
  };
}

/** Library API: one device's blob as bytes (transport part included). */
export function saveVirtioDevice(vdev: VirtIODevice): Uint8Array {
  // Completions that can be finished land in guest RAM first: copy RAM after this call.
  vdev.preSave();
  const f = new QEMUFileWriter();
  virtioSave(vdev, f);
  return f.bytes();
}

/**
 * Library API: load a blob into `vdev` (whose transport must match the source's). Throws a
 * `MigrationError` naming offset and field, and leaves `vdev` untouched, on bad input.
 */
export function loadVirtioDevice(vdev: VirtIODevice, bytes: Uint8Array, ctx?: LoadContext): void {
  const f = new QEMUFileReader(bytes);
  const apply = virtioLoad(vdev, f, ctx);
  if (f.remaining !== 0) throw f.error('virtio', `${f.remaining} bytes after the end of the device state`);
  apply();
}
