/** Foreign formats in and out: Hugging Face Llama directories, GGUF export (mor-ts/interop). */
export * from './load.js';
export * from './hf.js';
export * from './gguf.js';
export * from './unroll.js';
