/** Public API of the package. */
export * from './errors.js';
export { VERSION } from './version.js';

// kernels and tensors
export { getBackend, setBackend, getBackendByName, availableBackends } from './backend/index.js';
export type * from './backend/backend.js';
export { measureGemmGflops, measureGemmPeak } from './backend/peak.js';
export * from './tensor/index.js';

// model
export * from './model/index.js';
export { decoderLayer, loraLinear, causalSegmentsLayout, rowPositions, selfAttend, type AttendFn } from './nn/layers.js';

// data
export * from './data/index.js';

// training
export { AdamW, DEFAULT_ADAMW, clipGradNorm, optimParamsFromTable, type AdamWConfig, type OptimParam } from './train/optim.js';
export { learningRate, type ScheduleConfig, type ScheduleKind } from './train/schedule.js';
export { trainLoop, createOptimizer, type BatchSource, type TrainBatch, type TrainerState, type TrainLoopOptions, type TrainResult } from './train/trainer.js';
export { runTraining, prepareData, evaluateNll, type TrainRunOptions, type TrainRunResult, type PreparedData } from './train/run.js';
export { saveCheckpoint, loadCheckpoint, CheckpointError, type LoadedCheckpoint, type SaveOptions } from './train/checkpoint.js';
export { readSafetensors, writeSafetensors, parseSafetensors, serializeSafetensors, type NamedArray, type SafetensorsFile } from './util/safetensors.js';

// inference
export { generate, generateText, type GenerateOptions, type GenerateResult, type TextCodec, type TextGenerateOptions, type TextGenerateResult } from './infer/generate.js';
export { Engine, EngineError, RequestHandle, type BatchingMode, type EngineOptions, type RequestOptions, type RequestResult, type FinishReason, type StepRunner } from './infer/engine.js';
export { ModelRunner, type TokenState, type SequenceKV, type DepthControl } from './infer/runner.js';
export { PagedKVPool, KVStream, KVPoolExhaustedError } from './infer/kv-pool.js';
export { sampleToken, validateSampling, type SamplingOptions } from './infer/sampler.js';
