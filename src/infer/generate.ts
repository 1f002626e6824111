/**
 * Single-request KV-cached generation: the prompt runs as one prefill pass that fills a
 * contiguous per-layer cache, then each new token runs alone against the cache.
 *
 *   cache of unrolled layer l:  keys (maxLen, KVH, HD), values (maxLen, KVH, HD), positions 0..len−1
 *   a step's rows attend to every cached key at a position ≤ their own (AttentionLayout, mode 3)
 */
import { ArgumentError } from '../errors.js';
import type { AttentionLayout } from '../backend/backend.js';
import { headDim, type ModelConfig } from '../model/config.js';
import type { Model } from '../model/model.js';
import { decoderLayer, type AttendFn } from '../nn/layers.js';
import { Tensor, indexTensor, noGrad } from '../tensor/tensor.js';
import { attention, embedding, linear, rmsnorm } from '../tensor/ops.js';
import { Rng } from '../util/rng.js';
import { sampleToken, validateSampling, type SamplingOptions } from './sampler.js';

/** Keys and values of every unrolled layer for one sequence, in position order. */
export class SequenceKVCache {
  readonly keys: Float32Array[];
  readonly values: Float32Array[];
  /** Tokens cached per layer (they all reach every layer without routing). */
  readonly lengths: Int32Array;
  readonly positions: Int32Array;
  private readonly rowSize: number;

  constructor(c: ModelConfig, readonly maxLen: number) {
    this.rowSize = c.num_key_value_heads * headDim(c);
    this.keys = Array.from({ length: c.num_hidden_layers }, () => new Float32Array(maxLen * this.rowSize));
    this.values = Array.from({ length: c.num_hidden_layers }, () => new Float32Array(maxLen * this.rowSize));
    this.lengths = new Int32Array(c.num_hidden_layers);
    this.positions = Int32Array.from({ length: maxLen }, (_, i) => i);
  }

  /** Bytes held by keys and values. */
  get bytes(): number {
    return this.keys.reduce((s, k) => s + k.byteLength, 0) * 2;
  }

  /** An AttendFn for layer l: append the step's k, v, then attend over the whole cache. */
  attendFor(c: ModelConfig, l: number, qPos: Int32Array): AttendFn {
    return (q: Tensor, k: Tensor, v: Tensor) => {
      const n = q.dim(0);
      const len = this.lengths[l] as number;
      if (len + n > this.maxLen) throw new ArgumentError(`KV cache full: ${len} + ${n} tokens exceed ${this.maxLen}`);
      const K = this.keys[l] as Float32Array;
      const V = this.values[l] as Float32Array;
      K.set(k.f32(), len * this.rowSize);
      V.set(v.f32(), len * this.rowSize);
      this.lengths[l] = len + n;
      const hd = headDim(c);
      const total = len + n;
      const layout: AttentionLayout = {
        numHeads: c.num_attention_heads,
        numKvHeads: c.num_key_value_heads,
        headDim: hd,
        scale: 1 / Math.sqrt(hd),
        segments: Int32Array.of(0, n, 0, total),
        qPos,
        kPos: this.positions.subarray(0, total),
      };
      const shape = [total, c.num_key_value_heads, hd];
      return attention(q, new Tensor(K.subarray(0, total * this.rowSize), shape), new Tensor(V.subarray(0, total * this.rowSize), shape), layout);
    };
  }
}

/**
 * Run `ids` (the next tokens of the sequence, at positions cache.length…) through the model,
 * appending to the cache; returns the logits of the last row (V).
 */
export function stepWithCache(model: Model, cache: SequenceKVCache, ids: Int32Array): Float32Array {
  const c = model.config;
  const p = model.params;
  return noGrad(() => {
    const start = cache.lengths[0] as number;
    const qPos = Int32Array.from({ length: ids.length }, (_, i) => start + i);
    const pos = indexTensor(qPos);
    let h = embedding(p.embed, indexTensor(ids)); //                       (n, D)
    for (let l = 0; l < c.num_hidden_layers; l++) {
      const layer = p.layers[model.plan.uniqueOf[l] as number];
      if (layer === undefined) throw new ArgumentError(`no unique layer for position ${l}`);
      h = decoderLayer(c, h, layer, p.lora?.[l] ?? null, pos, cache.attendFor(c, l, qPos));
    }
    const d = c.hidden_size;
    const last = new Tensor(h.f32().slice((ids.length - 1) * d, ids.length * d), [1, d]);
    return linear(rmsnorm(last, p.norm, c.rms_norm_eps), p.embed).f32(); //  (1, V)
  });
}

export interface GenerateOptions extends SamplingOptions {
  readonly maxTokens: number;
  readonly seed?: number;
  /** Stop when this token is produced (not included in the output). */
  readonly eosId?: number;
  /**
   * Only ids below this are sampled (a tokenizer trained on a small corpus can have fewer
   * tokens than the model's vocab_size; the ids above it decode to nothing).
   */
  readonly vocabLimit?: number;
  /** Called with each new token id as it is produced. */
  readonly onToken?: (id: number) => void;
}

export interface GenerateResult {
  tokens: number[];
  prefillSeconds: number;
  decodeSeconds: number;
  stoppedBy: 'eos' | 'max_tokens' | 'context';
}

/** Generate up to maxTokens after a prompt (prompt length ≥ 1). */
export function generate(model: Model, prompt: Int32Array, opts: GenerateOptions): GenerateResult {
  validateSampling(opts);
  if (prompt.length < 1) throw new ArgumentError('generate: the prompt must have at least one token');
  const ctx = model.config.max_position_embeddings;
  if (prompt.length > ctx) throw new ArgumentError(`generate: prompt of ${prompt.length} tokens exceeds the context of ${ctx}`);
  const cache = new SequenceKVCache(model.config, ctx);
  const rng = new Rng(opts.seed ?? 0);
  const context: number[] = Array.from(prompt);
  const tokens: number[] = [];
  let t0 = performance.now();
  let logits = stepWithCache(model, cache, prompt);
  const prefillSeconds = (performance.now() - t0) / 1000;
  t0 = performance.now();
  let stoppedBy: GenerateResult['stoppedBy'] = 'max_tokens';
  while (tokens.length < opts.maxTokens) {
    const next = sampleToken(opts.vocabLimit === undefined ? logits : logits.subarray(0, opts.vocabLimit), opts, rng, context);
    if (opts.eosId !== undefined && next === opts.eosId) {
      stoppedBy = 'eos';
      break;
    }
    tokens.push(next);
    context.push(next);
    opts.onToken?.(next);
    if (tokens.length >= opts.maxTokens) break;
    if (context.length >= ctx) {
      stoppedBy = 'context';
      break;
    }
    logits = stepWithCache(model, cache, Int32Array.of(next));
  }
  return { tokens, prefillSeconds, decodeSeconds: (performance.now() - t0) / 1000, stoppedBy };
}
