// The differential oracle for virtio-input: virtio-keyboard, virtio-mouse and virtio-tablet on
// PCI and on virtio-mmio v1/v2, run on QEMU 7.2 and on ours (in-process and over the qtest
// socket) with the same command line; the transcripts must be equal or differ only as declared.
import { INPUT_GROUPS } from './scenarios/input.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle', INPUT_GROUPS);
