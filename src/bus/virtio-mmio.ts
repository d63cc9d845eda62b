import type { QEMUFileReader, QEMUFileWriter } from '../migration/qemu-file.js';
import type { Apply, VMStateDescription } from '../migration/vmstate.js';
import { loadQueueRegisters, saveQueueRegisters, type QueueRegisters } from './queue-registers.js';
import type { Tracer } from '../trace/trace.js';
import type { VirtIODevice } from '../virtio/device.js';
import { bit, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1 } from '../virtio/constants.js';
import { gpaFromHiLo, INVALID_GPA } from '../memory/guest-memory.js';
import { VIRTIO_QUEUE_MAX, VIRTQUEUE_MAX_SIZE } from '../vring/constants.js';
import type { VirtioBus } from './virtio-bus.js';

// Register offsets (VIRTIO 1.2 §4.2.2; §4.2.4 for the legacy ones).
export const VIRTIO_MMIO_MAGIC_VALUE = 0x000;
export const VIRTIO_MMIO_VERSION = 0x004;
export const VIRTIO_MMIO_DEVICE_ID = 0x008;
export const VIRTIO_MMIO_VENDOR_ID = 0x00c;
export const VIRTIO_MMIO_DEVICE_FEATURES = 0x010;
export const VIRTIO_MMIO_DEVICE_FEATURES_SEL = 0x014;
export const VIRTIO_MMIO_DRIVER_FEATURES = 0x020;
export const VIRTIO_MMIO_DRIVER_FEATURES_SEL = 0x024;
export const VIRTIO_MMIO_GUEST_PAGE_SIZE = 0x028;
export const VIRTIO_MMIO_QUEUE_SEL = 0x030;
export const VIRTIO_MMIO_QUEUE_NUM_MAX = 0x034;
export const VIRTIO_MMIO_QUEUE_NUM = 0x038;
export const VIRTIO_MMIO_QUEUE_ALIGN = 0x03c;
export const VIRTIO_MMIO_QUEUE_PFN = 0x040;
export const VIRTIO_MMIO_QUEUE_READY = 0x044;
export const VIRTIO_MMIO_QUEUE_NOTIFY = 0x050;
export const VIRTIO_MMIO_INTERRUPT_STATUS = 0x060;
export const VIRTIO_MMIO_INTERRUPT_ACK = 0x064;
export const VIRTIO_MMIO_STATUS = 0x070;
export const VIRTIO_MMIO_QUEUE_DESC_LOW = 0x080;
export const VIRTIO_MMIO_QUEUE_DESC_HIGH = 0x084;
export const VIRTIO_MMIO_QUEUE_AVAIL_LOW = 0x090;
export const VIRTIO_MMIO_QUEUE_AVAIL_HIGH = 0x094;
export const VIRTIO_MMIO_QUEUE_USED_LOW = 0x0a0;
export const VIRTIO_MMIO_QUEUE_USED_HIGH = 0x0a4;
export const VIRTIO_MMIO_SHM_SEL = 0x0ac;
export const VIRTIO_MMIO_SHM_LEN_LOW = 0x0b0;
export const VIRTIO_MMIO_SHM_LEN_HIGH = 0x0b4;
export const VIRTIO_MMIO_SHM_BASE_LOW = 0x0b8;
export const VIRTIO_MMIO_SHM_BASE_HIGH = 0x0bc;
export const VIRTIO_MMIO_CONFIG_GENERATION = 0x0fc;
export const VIRTIO_MMIO_CONFIG = 0x100;

/** "virt" in little-endian ASCII. */
export const VIRT_MAGIC = 0x74726976;
export const VIRT_VERSION = 2;
export const VIRT_VERSION_LEGACY = 1;
/** "QEMU" in little-endian ASCII, the vendor id QEMU reports. */
export const VIRT_VENDOR = 0x554d4551;
/** Size of one virtio-mmio window. */
export const VIRTIO_MMIO_REGION_SIZE = 0x200;

const REGISTER_NAMES: Record<number, string> = {
  0x000: 'MagicValue', 0x004: 'Version', 0x008: 'DeviceID', 0x00c: 'VendorID',
  0x010: 'DeviceFeatures', 0x014: 'DeviceFeaturesSel', 0x020: 'DriverFeatures',
  0x024: 'DriverFeaturesSel', 0x028: 'GuestPageSize', 0x030: 'QueueSel', 0x034: 'QueueNumMax',
  0x038: 'QueueNum', 0x03c: 'QueueAlign', 0x040: 'QueuePFN', 0x044: 'QueueReady',
  0x050: 'QueueNotify', 0x060: 'InterruptStatus', 0x064: 'InterruptACK', 0x070: 'Status',
  0x080: 'QueueDescLow', 0x084: 'QueueDescHigh', 0x090: 'QueueDriverLow', 0x094: 'QueueDriverHigh',
  0x0a0: 'QueueDeviceLow', 0x0a4: 'QueueDeviceHigh', 0x0ac: 'SHMSel', 0x0b0: 'SHMLenLow',
  0x0b4: 'SHMLenHigh', 0x0b8: 'SHMBaseLow', 0x0bc: 'SHMBaseHigh', 0x0fc: 'ConfigGeneration',
};

/** Readable name of a virtio-mmio register offset. */
export function mmioRegisterName(offset: number): string {
  if (offset >= VIRTIO_MMIO_CONFIG) return `Config+0x${(offset - VIRTIO_MMIO_CONFIG).toString(16)}`;
  return REGISTER_NAMES[offset] ?? `0x${offset.toString(16)}`;
}

export interface VirtioMmioOptions {
  /**
   * QEMU's `force-legacy` property: true (QEMU's default) presents version 1, the legacy
   * interface; false presents version 2 and offers VIRTIO_F_VERSION_1.
   */
  legacy?: boolean;
  /** Interrupt line: called with the new level whenever it is re-evaluated. */
  irq?: (level: boolean) => void;
  /** Guest-physical base, used only in names and traces. */
  base?: number;
  tracer?: Tracer;
}

/** Per-queue register state of a modern (version 2) proxy (QEMU's VirtIOMMIOQueue). */
type MmioQueueState = QueueRegisters;

/**
 * The virtio-mmio transport (QEMU's VirtIOMMIOProxy, `hw/virtio/virtio-mmio.c`): a 0x200-byte
 * register window in front of one device. Version 1 (legacy) and version 2 (modern) behave as in
 * QEMU 7.2, including its answers to misuse: wrong-width register accesses read 0 and are
 * ignored, unaligned accesses likewise, legacy registers in modern mode and the reverse are
 * logged and ignored, and queue selects or notifies past VIRTIO_QUEUE_MAX are dropped. Nothing a
 * guest writes here throws.
 */
export class VirtioMmioTransport implements VirtioBus {
  readonly name: string;
  readonly legacy: boolean;
  readonly hasVariableVringAlignment = true;
  tracer: Tracer | undefined;
  irq: ((level: boolean) => void) | undefined;

  hostFeaturesSel = 0;
  guestFeaturesSel = 0;
  guestPageShift = 0;
  /** Modern mode: the driver's feature words, applied when it sets FEATURES_OK. */
  readonly guestFeatures: [number, number] = [0, 0];
  /**
   * The queue registers of all VIRTIO_QUEUE_MAX queues, made on first use: a machine has many
   * transports (microvm: 24) that a driver may never touch, and 1024 records each are a large
   * part of a machine's start-up (issue 11). Until then every queue has the reset values.
   */
  private vqStore: MmioQueueState[] | undefined;
  private get vqs(): MmioQueueState[] {
    if (this.vqStore === undefined) {
      const vqs: MmioQueueState[] = (this.vqStore = []);
      for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) vqs.push({ num: 0, enabled: false, desc: [0, 0], avail: [0, 0], used: [0, 0] });
    }
    return this.vqStore;
  }
  /** The level last driven on the interrupt line. */
  irqLevel = false;

  constructor(readonly device: VirtIODevice | undefined, opts: VirtioMmioOptions = {}) {
    this.legacy = opts.legacy ?? true;
    this.irq = opts.irq;
    this.tracer = opts.tracer;
    this.name = `virtio-mmio@0x${(opts.base ?? 0).toString(16)}`;
    device?.plug(this);
  }

  // ---------------------------------------------------------------------------------------
  // VirtioBus

  prePlugged(hostFeatures: bigint): bigint {
    return this.legacy ? hostFeatures : hostFeatures | bit(VIRTIO_F_VERSION_1);
  }

  /** QEMU's `virtio_mmio_update_irq`: one level-triggered line, high while the ISR is non-zero. */
  notify(_vector: number): void {
    const dev = this.device;
    if (!dev) return;
    const level = dev.isr !== 0;
    this.irqLevel = level;
    const tr = this.tracer;
    if (tr) tr({ type: 'irq', device: this.name, level });
    this.irq?.(level);
  }

  // ---------------------------------------------------------------------------------------
  // Register window

  /**
   * A guest read of `size` bytes (1, 2, 4 or 8) at `offset` in the window. 8-byte accesses are
   * split into two 4-byte ones, as QEMU's memory core does for this region; the result is then
   * returned as a bigint-free number only when it fits, so callers wanting 64 bits use `read64`.
   */
  read(offset: number, size: number): number {
    if (!this.validAccess(offset, size) || size === 8) return 0;
    // QEMU's memory core keeps only the accessed bytes (an empty slot answers magic at any width).
    const raw = this.doRead(offset, size);
    const value = (size === 4 ? raw : raw & (size === 2 ? 0xffff : 0xff)) >>> 0;
    const tr = this.tracer;
    if (tr) tr({ type: 'mmio_read', device: this.name, offset, size, value, register: mmioRegisterName(offset) });
    return value;
  }

  /** A 64-bit read, as two 4-byte reads (low word first). */
  read64(offset: number): bigint {
    if (!this.validAccess(offset, 8)) return 0n;
    const lo = this.read(offset, 4);
    const hi = this.read(offset + 4, 4);
    return (BigInt(hi) << 32n) | BigInt(lo);
  }

  /** A guest write of `size` bytes (1, 2 or 4; use `write64` for 8) at `offset`. */
  write(offset: number, size: number, value: number): void {
    if (!this.validAccess(offset, size) || size === 8) return;
    const tr = this.tracer;
    if (tr) tr({ type: 'mmio_write', device: this.name, offset, size, value: value >>> 0, register: mmioRegisterName(offset) });
    this.doWrite(offset, size, value >>> 0);
  }

  /** A 64-bit write, as two 4-byte writes (low word first). */
  write64(offset: number, value: bigint): void {
    if (!this.validAccess(offset, 8)) return;
    this.write(offset, 4, Number(value & 0xffff_ffffn));
    this.write(offset + 4, 4, Number((value >> 32n) & 0xffff_ffffn));
  }

  /** QEMU's memory core refuses unaligned accesses to this region and sizes other than 1/2/4/8. */
  private validAccess(offset: number, size: number): boolean {
    if (size !== 1 && size !== 2 && size !== 4 && size !== 8) return false;
    if (!Number.isInteger(offset) || offset < 0 || offset + size > VIRTIO_MMIO_REGION_SIZE) return false;
    if (offset & (size - 1)) {
      this.guestError(`unaligned ${size}-byte access at 0x${offset.toString(16)}`);
      return false;
    }
    return true;
  }

  private doRead(offset: number, size: number): number {
    const vdev = this.device;
    if (!vdev) {
      // An empty slot: enough for a driver to probe it and find device id 0.
      switch (offset) {
        case VIRTIO_MMIO_MAGIC_VALUE: return VIRT_MAGIC;
        case VIRTIO_MMIO_VERSION: return this.legacy ? VIRT_VERSION_LEGACY : VIRT_VERSION;
        case VIRTIO_MMIO_VENDOR_ID: return VIRT_VENDOR;
        default: return 0;
      }
    }
    if (offset >= VIRTIO_MMIO_CONFIG) {
      return vdev.configRead(offset - VIRTIO_MMIO_CONFIG, size as 1 | 2 | 4, this.legacy);
    }
    if (size !== 4) {
      this.guestError('wrong size access to register!');
      return 0;
    }
    switch (offset) {
      case VIRTIO_MMIO_MAGIC_VALUE: return VIRT_MAGIC;
      case VIRTIO_MMIO_VERSION: return this.legacy ? VIRT_VERSION_LEGACY : VIRT_VERSION;
      case VIRTIO_MMIO_DEVICE_ID: return vdev.deviceId;
      case VIRTIO_MMIO_VENDOR_ID: return VIRT_VENDOR;
      case VIRTIO_MMIO_DEVICE_FEATURES:
        if (this.legacy) return this.hostFeaturesSel ? 0 : Number(vdev.hostFeatures & 0xffff_ffffn);
        return Number(((vdev.hostFeatures & ~vdev.legacyFeatures) >> BigInt(32 * this.hostFeaturesSel)) & 0xffff_ffffn);
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
        return vdev.queueNum(vdev.queueSel) ? VIRTQUEUE_MAX_SIZE : 0;
      case VIRTIO_MMIO_QUEUE_PFN: {
        if (!this.legacy) return this.wrongMode('read from legacy register', offset);
        const desc = vdev.getQueue(vdev.queueSel)?.desc ?? 0;
        return Math.floor(desc / 2 ** this.guestPageShift) >>> 0;
      }
      case VIRTIO_MMIO_QUEUE_READY:
        if (this.legacy) return this.wrongMode('read from non-legacy register', offset);
        return this.vqs[vdev.queueSel]!.enabled ? 1 : 0;
      case VIRTIO_MMIO_INTERRUPT_STATUS: return vdev.isr;
      case VIRTIO_MMIO_STATUS: return vdev.status;
      case VIRTIO_MMIO_CONFIG_GENERATION:
        if (this.legacy) return this.wrongMode('read from non-legacy register', offset);
        return vdev.generation;
      case VIRTIO_MMIO_SHM_LEN_LOW:
      case VIRTIO_MMIO_SHM_LEN_HIGH:
        // No shared memory regions: a length of all ones says so (VIRTIO 1.2 §4.2.2).
        return 0xffff_ffff;
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
      case VIRTIO_MMIO_DRIVER_FEATURES:
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
      case VIRTIO_MMIO_GUEST_PAGE_SIZE:
      case VIRTIO_MMIO_QUEUE_SEL:
      case VIRTIO_MMIO_QUEUE_NUM:
      case VIRTIO_MMIO_QUEUE_ALIGN:
      case VIRTIO_MMIO_QUEUE_NOTIFY:
      case VIRTIO_MMIO_INTERRUPT_ACK:
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      case VIRTIO_MMIO_QUEUE_USED_LOW:
      case VIRTIO_MMIO_QUEUE_USED_HIGH:
        this.guestError(`read of write-only register (0x${offset.toString(16)})`);
        return 0;
      default:
        this.guestError(`bad register offset (0x${offset.toString(16)})`);
        return 0;
    }
  }

  private doWrite(offset: number, size: number, value: number): void {
    const vdev = this.device;
    if (!vdev) return;
    if (offset >= VIRTIO_MMIO_CONFIG) {
      vdev.configWrite(offset - VIRTIO_MMIO_CONFIG, size as 1 | 2 | 4, value, this.legacy);
      return;
    }
    if (size !== 4) {
      this.guestError('wrong size access to register!');
      return;
    }
    const sel = vdev.queueSel;
    const pq = this.vqs[sel]!;
    switch (offset) {
      case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
        this.hostFeaturesSel = value ? 1 : 0;
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES:
        if (this.legacy) {
          if (this.guestFeaturesSel) this.guestError('attempt to write guest features with guest_features_sel > 0 in legacy mode');
          else vdev.setFeatures(BigInt(value));
        } else {
          this.guestFeatures[this.guestFeaturesSel] = value;
        }
        return;
      case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
        this.guestFeaturesSel = value ? 1 : 0;
        return;
      case VIRTIO_MMIO_GUEST_PAGE_SIZE: {
        if (!this.legacy) return void this.wrongMode('write to legacy register', offset);
        // QEMU keeps log2 of the lowest set bit; 0 gives a shift of 0 (a page of one byte).
        const shift = value === 0 ? 32 : 31 - Math.clz32(value & -value);
        this.guestPageShift = shift > 31 ? 0 : shift;
        return;
      }
      case VIRTIO_MMIO_QUEUE_SEL:
        if (value < VIRTIO_QUEUE_MAX) vdev.queueSel = value;
        return;
      case VIRTIO_MMIO_QUEUE_NUM: {
        const q = vdev.getQueue(sel);
        if (this.legacy) {
          q?.setNum(value);
          q?.updateRings();
        } else {
          pq.num = value;
          // QEMU resizes even a live queue here; the spec forbids the driver to, and a live
          // queue keeps its geometry until QueueReady is written again (hostile-guest T-B7).
          if (!pq.enabled) q?.setNum(value);
        }
        return;
      }
      case VIRTIO_MMIO_QUEUE_ALIGN:
        if (!this.legacy) return void this.wrongMode('write to legacy register', offset);
        // VIRTIO-1 devices cannot change the alignment (QEMU's virtio_queue_set_align).
        if (vdev.hasFeature(VIRTIO_F_VERSION_1)) return;
        vdev.getQueue(sel)?.setAlign(value);
        return;
      case VIRTIO_MMIO_QUEUE_PFN:
        if (!this.legacy) return void this.wrongMode('write to legacy register', offset);
        if (value === 0) {
          this.softReset();
        } else {
          const addr = value * 2 ** this.guestPageShift;
          vdev.getQueue(sel)?.setLegacyAddr(addr <= Number.MAX_SAFE_INTEGER ? addr : INVALID_GPA);
        }
        return;
      case VIRTIO_MMIO_QUEUE_READY:
        if (this.legacy) return void this.wrongMode('write to non-legacy register', offset);
        if (value) {
          const q = vdev.getQueue(sel);
          if (q) {
            q.setNum(pq.num);
            q.setRings(gpaFromHiLo(pq.desc[0], pq.desc[1]), gpaFromHiLo(pq.avail[0], pq.avail[1]), gpaFromHiLo(pq.used[0], pq.used[1]));
          }
          pq.enabled = true;
        } else {
          pq.enabled = false;
        }
        return;
      case VIRTIO_MMIO_QUEUE_NOTIFY:
        if (value < VIRTIO_QUEUE_MAX) vdev.queueNotify(value);
        return;
      case VIRTIO_MMIO_INTERRUPT_ACK:
        vdev.isr &= ~value & 0xff;
        vdev.updateIrq();
        return;
      case VIRTIO_MMIO_STATUS:
        if (!this.legacy && value & VIRTIO_CONFIG_S_FEATURES_OK) {
          vdev.setFeatures((BigInt(this.guestFeatures[1]) << 32n) | BigInt(this.guestFeatures[0]));
        }
        vdev.setStatus(value & 0xff);
        if (vdev.status === 0) this.softReset();
        return;
      case VIRTIO_MMIO_QUEUE_DESC_LOW:
      case VIRTIO_MMIO_QUEUE_DESC_HIGH:
      case VIRTIO_MMIO_QUEUE_AVAIL_LOW:
      case VIRTIO_MMIO_QUEUE_AVAIL_HIGH:
      case VIRTIO_MMIO_QUEUE_USED_LOW:
      case VIRTIO_MMIO_QUEUE_USED_HIGH: {
        if (this.legacy) return void this.wrongMode('write to non-legacy register', offset);
        const half = (offset >> 2) & 1;
        const part = offset < VIRTIO_MMIO_QUEUE_AVAIL_LOW ? pq.desc : offset < VIRTIO_MMIO_QUEUE_USED_LOW ? pq.avail : pq.used;
        part[half] = value;
        return;
      }
      case VIRTIO_MMIO_MAGIC_VALUE:
      case VIRTIO_MMIO_VERSION:
      case VIRTIO_MMIO_DEVICE_ID:
      case VIRTIO_MMIO_VENDOR_ID:
      case VIRTIO_MMIO_DEVICE_FEATURES:
      case VIRTIO_MMIO_QUEUE_NUM_MAX:
      case VIRTIO_MMIO_INTERRUPT_STATUS:
      case VIRTIO_MMIO_CONFIG_GENERATION:
        this.guestError(`write to read-only register (0x${offset.toString(16)})`);
        return;
      default:
        this.guestError(`bad register offset (0x${offset.toString(16)})`);
    }
  }

  /** QEMU's `virtio_mmio_soft_reset`: reset the device; modern queues become disabled. */
  softReset(): void {
    this.device?.reset();
    if (!this.legacy && this.vqStore) for (const q of this.vqStore) q.enabled = false;
  }

  /** QEMU's `virtio_mmio_reset` (a machine reset): also forgets selectors and queue registers. */
  reset(): void {
    this.softReset();
    this.hostFeaturesSel = 0;
    this.guestFeaturesSel = 0;
    this.guestPageShift = 0;
    if (!this.legacy) {
      this.guestFeatures[0] = this.guestFeatures[1] = 0;
      for (const q of this.vqStore ?? []) {
        q.num = 0;
        q.desc[0] = q.desc[1] = q.avail[0] = q.avail[1] = q.used[0] = q.used[1] = 0;
      }
    }
  }

  /** Modern queue register state of queue `n` (for inspection and migration). */
  queueState(n: number): Readonly<MmioQueueState> | undefined {
    return this.vqs[n];
  }

  // ---------------------------------------------------------------------------------------
  // Migration hooks (spec/qemu-virtio-migration.md §1.3, "virtio-mmio")

  saveConfig(f: QEMUFileWriter): void {
    f.putBe32(this.hostFeaturesSel);
    f.putBe32(this.guestFeaturesSel);
    f.putBe32(this.guestPageShift);
  }

  loadConfig(f: QEMUFileReader): () => void {
    const h = f.getBe32('virtio-mmio host_features_sel');
    const g = f.getBe32('virtio-mmio guest_features_sel');
    const at = f.offset;
    const s = f.getBe32('virtio-mmio guest_page_shift');
    // QEMU takes these unchecked; a selector above 1 would index past its two feature words.
    if (h > 1) throw f.error('virtio-mmio host_features_sel', `value ${h} is not 0 or 1`, at - 8);
    if (g > 1) throw f.error('virtio-mmio guest_features_sel', `value ${g} is not 0 or 1`, at - 4);
    if (s > 31) throw f.error('virtio-mmio guest_page_shift', `value ${s} is above 31`, at);
    return () => {
      this.hostFeaturesSel = h;
      this.guestFeaturesSel = g;
      this.guestPageShift = s;
    };
  }

  hasExtraState(): boolean {
    return !this.legacy;
  }

  /**
   * The `virtio_mmio` record inside `virtio/extra_state` (version 2 only): no fields and the
   * subsection `virtio_mmio/state`, always written: the driver's feature words and the queue
   * registers of all 1024 queues, 27 bytes each.
   */
  extraState(): VMStateDescription {
    const state: VMStateDescription = {
      name: 'virtio_mmio/state',
      versionId: 1,
      minimumVersionId: 1,
      save: (f) => {
        f.putBe32(this.guestFeatures[0]);
        f.putBe32(this.guestFeatures[1]);
        saveQueueRegisters(f, this.vqs, false);
      },
      load: (f): Apply => {
        const gf0 = f.getBe32('virtio_mmio/state guest_features[0]');
        const gf1 = f.getBe32('virtio_mmio/state guest_features[1]');
        const qs = loadQueueRegisters(f, 'virtio_mmio/queue_state', false);
        return () => {
          this.guestFeatures[0] = gf0;
          this.guestFeatures[1] = gf1;
          for (let i = 0; i < VIRTIO_QUEUE_MAX; i++) Object.assign(this.vqs[i]!, qs[i]);
        };
      },
    };
    return { name: 'virtio_mmio', versionId: 1, minimumVersionId: 1, subsections: [state] };
  }

  // ---------------------------------------------------------------------------------------

  private wrongMode(what: string, offset: number): number {
    this.guestError(`${what} (0x${offset.toString(16)}) in ${this.legacy ? 'legacy' : 'non-legacy'} mode`);
    return 0;
  }

  private guestError(message: string): void {
    const tr = this.tracer;
    if (tr) tr({ type: 'guest_error', device: this.name, message });
  }
}
