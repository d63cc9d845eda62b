// The differential oracle for virtio-balloon: PCI modern, legacy and transitional, virtio-mmio v1
// and v2, and QEMU 7.2's feature properties, run on QEMU 7.2 and on ours (in-process and over the
// qtest socket) with the same command line; the transcripts must be equal or differ only as declared.
import { BALLOON_GROUPS } from './scenarios/balloon.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle', BALLOON_GROUPS);
