// `virtio-ts/v86`: our PCI functions on a v86 machine (v86 is an optional peer dependency and
// is never imported here: its objects are typed structurally, src/embed/v86/types.ts).
export { attachToV86, v86Host, v86Memory, V86PciHost, V86_USED_SLOTS } from './embed/v86/host.js';
export type { V86AttachOptions, V86Attachment, V86HostOptions } from './embed/v86/host.js';
export { v86GuestMemory } from './embed/v86/ram.js';
export { v86VirtioPci } from './embed/v86/virtio.js';
export type { V86Cpu, V86Emulator, V86Io, V86Pci, V86PortEntry, V86MmioRead, V86MmioWrite } from './embed/v86/types.js';
