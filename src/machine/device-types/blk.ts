/**
 * virtio-blk as `-device virtio-blk-pci|virtio-blk-device,drive=NAME` (QEMU 7.2
 * `hw/block/virtio-blk.c`, `hw/virtio/virtio-blk-pci.c`): the drive is a `-drive` id or a
 * `-blockdev` node name; QEMU's property names, defaults and realize-time checks, with its
 * messages. The backend is built here from the block node (null-co) or taken from the files the
 * caller opened (`BuildOptions.blockFiles`).
 */
import { readOnlyBackend, type BlockBackend } from '../../devices/blk/backend.js';
import { VirtIOBlock } from '../../devices/blk/blk.js';
import { NullBlockBackend } from '../../devices/blk/backends/null.js';
import { findNode, type BlockNode } from '../block-cmdline.js';
import { CmdlineError } from '../cmdline.js';
import type { DeviceBuildContext, VirtioDeviceType } from './types.js';

/** The backend a block node gives a device, and the node graph's flags. */
export interface ResolvedBlockNode {
  backend: BlockBackend;
  /** Every node in the chain has `discard=unmap`. */
  unmap: boolean;
  /** Some node has `cache.no-flush=on` (or the drive `cache=unsafe`). */
  noFlush: boolean;
}

/** Build the backend of `root` (raw over file/null-co, or a protocol node alone). */
export function resolveBlockNode(root: BlockNode, files: ReadonlyMap<string, BlockBackend> | undefined): ResolvedBlockNode {
  const chain: BlockNode[] = [];
  for (let n: BlockNode | undefined = root; n; n = n.child) chain.push(n);
  const proto = chain[chain.length - 1]!;
  // A writable node over a read-only one: the device asks for write permission it cannot get.
  if (!root.readOnly && chain.some((n) => n.readOnly)) throw new CmdlineError('Block node is read-only');
  let backend: BlockBackend;
  if (proto.driver === 'null-co') {
    backend = new NullBlockBackend({
      ...(proto.size !== undefined ? { size: proto.size } : {}),
      readZeroes: proto.readZeroes ?? false,
      latencyNs: proto.latencyNs ?? 0,
    });
  } else {
    const name = proto.filename ?? '';
    const f = files?.get(name);
    if (!f) throw new CmdlineError(`Could not open '${name}': No such file or directory`);
    backend = f;
  }
  if (root.readOnly) backend = readOnlyBackend(backend);
  return { backend, unmap: chain.every((n) => n.unmap), noFlush: chain.some((n) => n.noFlush) };
}

const ERROR_ACTIONS = ['auto', 'report', 'ignore', 'enospc', 'stop'];

/**
 * QEMU's image locking between the users of one file in a process (file-posix
 * `raw_check_lock_bytes`): a device that writes needs every other user to share writing, and a
 * device that does not share writing cannot join one that writes. `share-rw=on` shares it.
 */
function lockFile(ctx: DeviceBuildContext, root: BlockNode): void {
  let proto: BlockNode = root;
  while (proto.child) proto = proto.child;
  if (proto.driver !== 'file' || proto.filename === undefined) return;
  const claim = { write: !root.readOnly, shareWrite: ctx.bool('share-rw', false) };
  const others = ctx.fileLocks.get(proto.filename) ?? [];
  const hint = `\nIs another process using the image [${proto.filename}]?`;
  if (claim.write && others.some((o) => !o.shareWrite)) throw new CmdlineError(`Failed to get "write" lock${hint}`);
  if (!claim.shareWrite && others.some((o) => o.write)) throw new CmdlineError(`Failed to get shared "write" lock${hint}`);
  ctx.fileLocks.set(proto.filename, [...others, claim]);
}

function drive(ctx: DeviceBuildContext): { resolved: ResolvedBlockNode; writeback: boolean } {
  const name = ctx.values.get('drive');
  if (name === undefined || name === '') throw new CmdlineError('drive property not set');
  const n = String(name);
  const d = ctx.cl.drives.find((x) => x.id === n);
  const user = ctx.blockUsers.get(n);
  if (d) {
    if (user !== undefined) throw new CmdlineError(`Drive '${n}' is already in use by another device`);
    if (!d.root) throw new CmdlineError('Device needs media, but drive is empty');
    const resolved = resolveBlockNode(d.root, ctx.opts.blockFiles);
    lockFile(ctx, d.root);
    ctx.blockUsers.set(n, ctx.qomPath);
    return { resolved, writeback: d.writeback ?? true };
  }
  const node = findNode(ctx.cl.drives, ctx.cl.blockdevs, n);
  if (!node) throw new CmdlineError(`Property '${'virtio-blk-device'}.drive' can't find value '${n}'`);
  if (user !== undefined) {
    // Two devices on one node both want to write it; QEMU refuses unless both share it.
    throw new CmdlineError(
      `Permission conflict on node '${n}': permissions 'write' are both required by block device '${user}/virtio-backend' (uses node '${n}' as 'root' child) and unshared by block device '${ctx.qomPath}/virtio-backend' (uses node '${n}' as 'root' child).`,
    );
  }
  const resolved = resolveBlockNode(node, ctx.opts.blockFiles);
  lockFile(ctx, node);
  ctx.blockUsers.set(n, ctx.qomPath);
  // A BlockBackend made for a node starts with its write cache on (blk_new).
  return { resolved, writeback: true };
}

export const blkType: VirtioDeviceType = {
  deviceType: 'virtio-blk-device',
  pciType: 'virtio-blk-pci',
  props: {
    drive: 'str',
    backend_defaults: 'onoffauto',
    logical_block_size: 'blocksize',
    physical_block_size: 'blocksize',
    min_io_size: 'size32',
    opt_io_size: 'size32',
    discard_granularity: 'size32',
    'write-cache': 'onoffauto',
    'share-rw': 'bool',
    'account-invalid': 'onoffauto',
    'account-failed': 'onoffauto',
    rerror: 'str',
    werror: 'str',
    cyls: 'u32',
    heads: 'u32',
    secs: 'u32',
    lcyls: 'u32',
    lheads: 'u32',
    lsecs: 'u32',
    serial: 'str',
    'config-wce': 'bool',
    scsi: 'bool',
    'request-merging': 'bool',
    'num-queues': 'u16',
    'queue-size': 'u16',
    'seg-max-adjust': 'bool',
    iothread: 'str',
    discard: 'bool',
    'report-discard-granularity': 'bool',
    'write-zeroes': 'bool',
    'max-discard-sectors': 'u32',
    'max-write-zeroes-sectors': 'u32',
    'x-enable-wce-if-config-wce': 'bool',
    bootindex: 'i32',
  },
  // virtio-blk-pci's own `class` (0 keeps the storage class; qemu-machine applies a non-zero one).
  pciProps: { class: 'u32' },
  create(ctx) {
    const v = ctx.values;
    const num = (k: string): number | undefined => (v.has(k) ? (v.get(k) as number) : undefined);
    for (const k of ['rerror', 'werror']) {
      const a = v.get(k);
      if (a === undefined) continue;
      if (!ERROR_ACTIONS.includes(String(a))) throw new CmdlineError(`Parameter '${k}' does not accept value '${String(a)}'`);
      if (a !== 'auto' && a !== 'report' && !(k === 'werror' && a === 'enospc')) {
        throw new CmdlineError(`property '${k}=${String(a)}' of ${ctx.spec.driver} is not supported by virtio-ts-qemu (errors are reported to the guest)`);
      }
    }
    // The iothread link: QEMU's lookup first (an `-object iothread` may exist), then our refusal.
    if (v.has('iothread')) {
      const io = String(v.get('iothread'));
      if (!ctx.cl.objects.some((o) => o.qomType === 'iothread' && o.id === io)) throw new CmdlineError(`Device '${io}' not found`);
      throw new CmdlineError(`property 'iothread=${io}' of ${ctx.spec.driver} is not supported by virtio-ts-qemu (requests are served in the machine's one loop)`);
    }
    if (v.get('backend_defaults') === true) throw new CmdlineError(`property 'backend_defaults=on' of ${ctx.spec.driver} is not supported by virtio-ts-qemu`);
    const { resolved, writeback } = drive(ctx);
    const wc = v.get('write-cache');
    // virtio_blk_device_realize's order of checks: queues, then the block configuration.
    const numQueues = num('num-queues');
    if (numQueues === 0) throw new CmdlineError('num-queues property must be larger than 0');
    const queueSize = num('queue-size') ?? 256;
    if (queueSize <= 2) throw new CmdlineError(`invalid queue-size property (${queueSize}), must be > 2`);
    if ((queueSize & (queueSize - 1)) !== 0 || queueSize > 1024) throw new CmdlineError(`invalid queue-size property (${queueSize}), must be a power of 2 (max 1024)`);
    const geometry = { cyls: num('cyls') ?? 0, heads: num('heads') ?? 0, secs: num('secs') ?? 0 };
    const chs = geometry.cyls || geometry.heads || geometry.secs ? geometry : undefined;
    if (chs) {
      if (chs.cyls < 1 || chs.cyls > 65535) throw new CmdlineError('cyls must be between 1 and 65535');
      if (chs.heads < 1 || chs.heads > 255) throw new CmdlineError('heads must be between 1 and 255');
      if (chs.secs < 1 || chs.secs > 255) throw new CmdlineError('secs must be between 1 and 255');
    }
    const lbs = num('logical_block_size') ?? 512;
    const pbs = num('physical_block_size') ?? 512;
    const minIo = num('min_io_size') ?? 0;
    const optIo = num('opt_io_size') ?? 0;
    const dg = num('discard_granularity');
    if (lbs > pbs) throw new CmdlineError('logical_block_size > physical_block_size not supported');
    if (minIo % lbs !== 0) throw new CmdlineError('min_io_size must be a multiple of logical_block_size');
    if (minIo / lbs > 0xffff) throw new CmdlineError('min_io_size must not exceed 65535 logical blocks');
    if (optIo % lbs !== 0) throw new CmdlineError('opt_io_size must be a multiple of logical_block_size');
    if (dg !== undefined && dg !== 0xffff_ffff && dg % lbs !== 0) throw new CmdlineError('discard_granularity must be a multiple of logical_block_size');
    const discard = ctx.bool('discard', true);
    const writeZeroes = ctx.bool('write-zeroes', true);
    const maxDiscard = num('max-discard-sectors') ?? 4194303;
    const maxWz = num('max-write-zeroes-sectors') ?? 4194303;
    if (discard && (maxDiscard === 0 || maxDiscard > 4194303)) throw new CmdlineError(`invalid max-discard-sectors property (${maxDiscard}), must be between 1 and 4194303`);
    if (writeZeroes && (maxWz === 0 || maxWz > 4194303)) throw new CmdlineError(`invalid max-write-zeroes-sectors property (${maxWz}), must be between 1 and 4194303`);
    try {
      return new VirtIOBlock({
        memory: ctx.machine.sys.ram,
        backend: resolved.backend,
        // `auto`: the vCPU count on PCI (virtio_pci_optimal_num_queues), 1 on virtio-mmio; the
        // reference machines have one vCPU.
        numQueues: numQueues ?? 1,
        queueSize,
        segMaxAdjust: ctx.bool('seg-max-adjust', true),
        ...(v.has('serial') ? { serial: String(v.get('serial')) } : {}),
        logicalBlockSize: lbs,
        physicalBlockSize: pbs,
        minIoSize: minIo,
        optIoSize: optIo,
        ...(dg !== undefined && dg !== 0xffff_ffff ? { discardGranularity: dg } : {}),
        reportDiscardGranularity: ctx.bool('report-discard-granularity', true),
        writeCache: wc === true ? true : wc === false ? false : writeback,
        configWce: ctx.bool('config-wce', true),
        discard,
        writeZeroes,
        maxDiscardSectors: maxDiscard,
        maxWriteZeroesSectors: maxWz,
        scsi: ctx.bool('scsi', false),
        enableWceIfConfigWce: ctx.bool('x-enable-wce-if-config-wce', true),
        ...(chs ?? {}),
        unmap: resolved.unmap,
        noFlush: resolved.noFlush,
        disabledFeatures: ctx.disabledFeatures,
        packed: ctx.packed,
        ...(ctx.opts.tracer ? { tracer: ctx.opts.tracer } : {}),
      });
    } catch (e) {
      if (e instanceof RangeError) throw new CmdlineError(e.message);
      throw e;
    }
  },
};
