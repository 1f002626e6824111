/**
 * Validation NLL measured THROUGH the inference engine's path (`mor eval --dtype`): every
 * validation window is prefilled teacher-forced by a ModelRunner — the packed decoding weights,
 * the fused decode layer and the paged K/V pool, in the dtype asked for — and each position's
 * logits score the next token. So `--dtype f32` and `--dtype bf16` compare like with like, and
 * the figure is what generation actually computes (the training forward's NLL is train/evaluate.ts).
 *
 * The windows are validationBatches' (the same tokens evaluateNll scores); routing is the
 * engine's, i.e. causal decisions.
 */
import { MorError } from '../errors.js';
import type { StorageDtype } from '../backend/bf16.js';
import { headDim } from '../model/config.js';
import type { Model } from '../model/model.js';
import type { TokenArray } from '../data/dataset.js';
import { validationBatches } from '../data/loader.js';
import type { DepthSetting, EvalResult } from '../train/evaluate.js';
import { PagedKVPool } from './kv-pool.js';
import { ModelRunner, type DepthControl } from './runner.js';

const BLOCK_SIZE = 16;

/** −log softmax(logits)[target] in float64. logits (V) at `from`. */
function nll(logits: Float32Array, from: number, V: number, target: number): number {
  let max = -Infinity;
  for (let j = 0; j < V; j++) max = Math.max(max, logits[from + j] as number);
  let sum = 0;
  for (let j = 0; j < V; j++) sum += Math.exp((logits[from + j] as number) - max);
  return max + Math.log(sum) - (logits[from + target] as number);
}

/**
 * Mean next-token NLL of up to maxBatches·batchSize validation windows of seqLen tokens, each
 * prefilled through the engine's runner with weights and K/V in `dtype`.
 */
export function evaluateEngineNll(
  model: Model,
  val: TokenArray,
  batchSize: number,
  seqLen: number,
  maxBatches: number,
  dtype: StorageDtype,
  depth: DepthSetting = {},
): EvalResult {
  const c = model.config;
  const rowSize = c.num_key_value_heads * headDim(c);
  const probe = new ModelRunner(model, new PagedKVPool(1, BLOCK_SIZE, rowSize, dtype));
  // one window at a time: its streams at full length, released after it
  const runner = new ModelRunner(model, new PagedKVPool(probe.numStreams * Math.ceil(seqLen / BLOCK_SIZE), BLOCK_SIZE, rowSize, dtype));
  const control: DepthControl = {
    maxDepth: depth.maxDepth ?? runner.numRecursions,
    threshold: depth.threshold ?? c.mor?.threshold ?? 0.5,
    exitConfidence: null,
  };
  const V = c.vocab_size;
  let sum = 0;
  let count = 0;
  let depthSum = 0;
  for (const batch of validationBatches(val, { batchSize, seqLen, maxBatches })) {
    const T = batch.seqLen;
    for (let b = 0; b < batch.batchSize; b++) {
      const seq = runner.newSequence();
      try {
        const { logits, depths } = runner.prefill(seq, batch.inputs.subarray(b * T, (b + 1) * T), control, true); // logits (T, V)
        for (let t = 0; t < T; t++) {
          sum += nll(logits, t * V, V, batch.targets[b * T + t] as number);
          depthSum += depths[t] as number;
        }
        count += T;
      } finally {
        runner.releaseSequence(seq);
      }
    }
  }
  if (count === 0) throw new MorError('E_DATA', `the validation split has fewer than ${seqLen + 1} tokens: nothing to evaluate`);
  return { nll: sum / count, tokens: count, meanDepth: depthSum / count };
}
