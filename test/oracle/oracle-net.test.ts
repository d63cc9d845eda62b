// The differential oracle for virtio-net: PCI modern, legacy and transitional, virtio-mmio v1 and
// v2, each NIC on a UDP socket of the test, run on QEMU 7.2 and on ours (in-process and over the
// qtest socket) with the same command line; the transcripts must be equal or differ only as declared.
import { NET_GROUPS } from './scenarios/net.js';
import { registerOracleGroups } from './run-groups.js';

registerOracleGroups('oracle', NET_GROUPS);
