// virtio-blk and its browser-safe backends. The Node file backend is exported from `virtio-ts/node`.
export * from './constants.js';
export * from './backend.js';
export * from './geometry.js';
export * from './blk.js';
export * from './backends/memory.js';
export * from './backends/null.js';
export * from './backends/browser.js';
