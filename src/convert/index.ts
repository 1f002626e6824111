export * from './convert.js';
export * from './svd.js';
