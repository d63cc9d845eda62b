/**
 * virtio-blk constants (VIRTIO 1.2 §5.2; Linux/QEMU `include/standard-headers/linux/virtio_blk.h`).
 * Kept beside the device rather than in src/virtio/constants.ts: nothing outside virtio-blk
 * needs them.
 */

// Feature bits (§5.2.3).
export const VIRTIO_BLK_F_BARRIER = 0; // legacy
export const VIRTIO_BLK_F_SIZE_MAX = 1;
export const VIRTIO_BLK_F_SEG_MAX = 2;
export const VIRTIO_BLK_F_GEOMETRY = 4;
export const VIRTIO_BLK_F_RO = 5;
export const VIRTIO_BLK_F_BLK_SIZE = 6;
export const VIRTIO_BLK_F_SCSI = 7; // legacy
/** VIRTIO_BLK_F_FLUSH; QEMU calls it VIRTIO_BLK_F_WCE. */
export const VIRTIO_BLK_F_FLUSH = 9;
export const VIRTIO_BLK_F_TOPOLOGY = 10;
export const VIRTIO_BLK_F_CONFIG_WCE = 11;
export const VIRTIO_BLK_F_MQ = 12;
export const VIRTIO_BLK_F_DISCARD = 13;
export const VIRTIO_BLK_F_WRITE_ZEROES = 14;

// Request types (§5.2.6).
export const VIRTIO_BLK_T_IN = 0;
export const VIRTIO_BLK_T_OUT = 1;
export const VIRTIO_BLK_T_SCSI_CMD = 2; // legacy
export const VIRTIO_BLK_T_FLUSH = 4;
export const VIRTIO_BLK_T_GET_ID = 8;
export const VIRTIO_BLK_T_DISCARD = 11;
export const VIRTIO_BLK_T_WRITE_ZEROES = 13;
/** Legacy flag bit of `type`; QEMU ignores it. */
export const VIRTIO_BLK_T_BARRIER = 0x8000_0000;

export const VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1;

// Status byte values.
export const VIRTIO_BLK_S_OK = 0;
export const VIRTIO_BLK_S_IOERR = 1;
export const VIRTIO_BLK_S_UNSUPP = 2;

/** Length of the GET_ID string buffer. */
export const VIRTIO_BLK_ID_BYTES = 20;

/** `struct virtio_blk_outhdr`: le32 type, le32 ioprio, le64 sector (guest order on legacy). */
export const VIRTIO_BLK_OUTHDR_SIZE = 16;
/** `struct virtio_blk_discard_write_zeroes`: le64 sector, le32 num_sectors, le32 flags. */
export const VIRTIO_BLK_DWZ_SIZE = 16;
/** `struct virtio_scsi_inhdr` (legacy SCSI passthrough), of which QEMU writes `errors`. */
export const VIRTIO_SCSI_INHDR_ERRORS_SIZE = 4;

export const BDRV_SECTOR_BITS = 9;
export const BDRV_SECTOR_SIZE = 512;
/**
 * QEMU's BDRV_REQUEST_MAX_SECTORS: the largest request the block layer takes,
 * MIN(SIZE_MAX, INT_MAX) >> 9 rounded down to whole sectors (4194303 sectors, 2 GiB - 512).
 */
export const BDRV_REQUEST_MAX_SECTORS = 0x7fff_ffff >>> BDRV_SECTOR_BITS;

// `struct virtio_blk_config` offsets (§5.2.4).
export const CFG_CAPACITY = 0;
export const CFG_SIZE_MAX = 8;
export const CFG_SEG_MAX = 12;
export const CFG_GEOMETRY_CYLINDERS = 16;
export const CFG_GEOMETRY_HEADS = 18;
export const CFG_GEOMETRY_SECTORS = 19;
export const CFG_BLK_SIZE = 20;
export const CFG_PHYSICAL_BLOCK_EXP = 24;
export const CFG_ALIGNMENT_OFFSET = 25;
export const CFG_MIN_IO_SIZE = 26;
export const CFG_OPT_IO_SIZE = 28;
export const CFG_WCE = 32;
export const CFG_NUM_QUEUES = 34;
export const CFG_MAX_DISCARD_SECTORS = 36;
export const CFG_MAX_DISCARD_SEG = 40;
export const CFG_DISCARD_SECTOR_ALIGNMENT = 44;
export const CFG_MAX_WRITE_ZEROES_SECTORS = 48;
export const CFG_MAX_WRITE_ZEROES_SEG = 52;
export const CFG_WRITE_ZEROES_MAY_UNMAP = 56;

/**
 * QEMU's config size: the fields before max_discard_sectors always, up to the end of
 * discard_sector_alignment with DISCARD, up to write_zeroes_may_unmap with WRITE_ZEROES
 * (`virtio_blk_cfg_size_params`; decided by the device's own property bits).
 */
export const VIRTIO_BLK_CFG_SIZE_MIN = 36;
export const VIRTIO_BLK_CFG_SIZE_DISCARD = 48;
export const VIRTIO_BLK_CFG_SIZE_WRITE_ZEROES = 57;
