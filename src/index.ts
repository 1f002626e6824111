/**
 * Public API of the package: what a user needs to train, evaluate, inspect and serve a model.
 * Each layer's full surface (tape internals, kernels' shapes, the runner's step functions, …)
 * is a subpath export: `mor-ts/backend`, `mor-ts/tensor`, `mor-ts/nn`, `mor-ts/model`,
 * `mor-ts/data`, `mor-ts/train`, `mor-ts/infer`, `mor-ts/convert`. test/api.test.ts lists this surface, so it
 * changes only on purpose.
 */
export * from './errors.js';
export { ConfigError } from './model/config-error.js';
export { CheckpointError } from './train/checkpoint.js';
export { KVPoolExhaustedError } from './infer/kv-pool.js';
export { VERSION } from './version.js';

// kernels and tensors
export { getBackend, setBackend, availableBackends } from './backend/index.js';
export type { Backend, BackendName, BackendInfo } from './backend/backend.js';
export { Tensor, tensor, zeros, noGrad, backward } from './tensor/tensor.js';

// model
export { preset, PRESET_NAMES } from './model/presets.js';
export { validateConfig, DEFAULT_CONFIG, type ModelConfig, type RecursionConfig, type SharingStrategy } from './model/config.js';
export type { MorConfig } from './model/mor-config.js';
export type { MoeConfig } from './model/moe-config.js';
export type { ModConfig } from './model/mod-config.js';
export { createModel, forward, type Model, type ForwardOptions, type ForwardResult } from './model/model.js';
export { countParams } from './model/params.js';
export { forwardFlopsPerToken, trainFlopsPerToken } from './model/flops.js';
export type { RoutingMode, RoutingStats } from './model/mor.js';

// data
export { Corpus, type CorpusOptions } from './data/corpus.js';
export { Tokenizer, type TokenizerOptions } from './data/tokenizer.js';
export { trainBpe, type BpeTrainOptions } from './data/bpe-train.js';

// training and evaluation
export { AdamW, clipGradNorm, type AdamWConfig } from './train/optim.js';
export { createOptimizer, trainLoop, type TrainLoopOptions } from './train/trainer.js';
export { runTraining, prepareData, type TrainRunOptions, type TrainRunResult, type PreparedData } from './train/run.js';
export { evaluateNll, depthSweep, type DepthSetting, type EvalResult, type SweepPoint } from './train/evaluate.js';
export { saveCheckpoint, loadCheckpoint, type LoadedCheckpoint, type LoadOptions } from './train/checkpoint.js';
export { readSafetensors, writeSafetensors } from './util/safetensors.js';

// conversion of pretrained models (Relaxed Recursive Transformers)
export { convertModel, ConversionError, type ConvertOptions } from './convert/convert.js';

// foreign formats: Hugging Face Llama directories in and out, GGUF out
export { loadModel, type LoadedModel } from './interop/load.js';
export { exportHf } from './interop/hf.js';
export { exportGguf, type GgufOptions } from './interop/gguf.js';
export { ExportError } from './interop/unroll.js';

// inference
export { generate, generateText, type GenerateOptions, type GenerateResult, type TextGenerateOptions, type TextGenerateResult } from './infer/generate.js';
export {
  Engine, EngineError, ENGINE_DEFAULTS, RequestHandle,
  type BatchingMode, type EngineOptions, type RequestOptions, type RequestResult, type FinishReason,
} from './infer/engine.js';
export type { SamplingOptions } from './infer/sampler.js';
