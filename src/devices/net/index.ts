export * from './constants.js';
export * from './net-client.js';
export * from './hub.js';
export * from './mac.js';
export * from './backends/callback.js';
export { VirtIONet, VIRTIO_NET_FEATURE_PROPS, MIGRATE_ANNOUNCE_PARAMS, virtioNetConfigSize } from './virtio-net.js';
export type { VirtIONetOptions, VirtIONetFeatureProperty, RxFilterInfo, VirtIONetStats, RssData, AnnounceParams } from './virtio-net.js';
export { toeplitz } from './rss.js';
