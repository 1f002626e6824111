export * from './config.js';
export * from './presets.js';
export * from './sharing.js';
export * from './params.js';
export * from './model.js';
export * from './flops.js';
