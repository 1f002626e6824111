/** The inference layer: engine, runner, paged KV pool, sampler, generation (subpath `mor-ts/infer`). */
export { generate, generateText, textRequest, type GenerateOptions, type GenerateResult, type TextCodec, type TextGenerateOptions, type TextGenerateResult } from './generate.js';
export {
  Engine, EngineError, ENGINE_DEFAULTS, RequestHandle,
  type BatchingMode, type EngineOptions, type RequestOptions, type RequestResult, type FinishReason, type StepRunner,
} from './engine.js';
export { ModelRunner, type TokenState, type SequenceKV, type DepthControl } from './runner.js';
export { PagedKVPool, KVStream, KVPoolExhaustedError } from './kv-pool.js';
export { sampleToken, validateSampling, type SamplingOptions } from './sampler.js';
export { evaluateEngineNll } from './eval.js';
