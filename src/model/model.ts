/**
 * The recursive Llama-style language model: its training forward, top to bottom.
 *
 *   ids (B·T) → embed → [layer at each unrolled position, shared by identity] → RMSNorm → · Eᵀ
 *
 * A recursive model stores only its unique layers; the layer plan (sharing.ts) says which one
 * runs at each unrolled position, and per-position LoRA (relaxation) is added when configured.
 */
import { ShapeError } from '../errors.js';
import { Tensor, indexTensor } from '../tensor/tensor.js';
import { crossEntropy, embedding, linear, rmsnorm } from '../tensor/ops.js';
import { causalSegmentsLayout, decoderLayer, rowPositions, selfAttend } from '../nn/layers.js';
import type { ModelConfig } from './config.js';
import { initParams, type ModelParams } from './params.js';
import { layerPlan, type LayerPlan } from './sharing.js';

export interface Model {
  readonly config: ModelConfig;
  readonly params: ModelParams;
  readonly plan: LayerPlan;
}

export function createModel(config: ModelConfig, seed = 0): Model {
  return { config, params: initParams(config, seed), plan: layerPlan(config) };
}

export function modelFromParams(config: ModelConfig, params: ModelParams): Model {
  return { config, params, plan: layerPlan(config) };
}

export interface ForwardResult {
  /** (B·T, V) */
  logits: Tensor;
  /** Mean next-token cross-entropy over non-ignored targets, [1]; null without targets. */
  loss: Tensor | null;
}

/**
 * Training forward over B rows of T tokens each (every row an independent causal sequence).
 *   ids (B·T) int32, targets (B·T) int32 or undefined (−100 = ignore)
 */
export function forward(model: Model, ids: Int32Array, batch: number, targets?: Int32Array): ForwardResult {
  const c = model.config;
  if (batch < 1 || ids.length % batch !== 0) {
    throw new ShapeError(`forward: ${ids.length} token ids do not split into ${batch} rows`);
  }
  const T = ids.length / batch;
  if (T > c.max_position_embeddings) {
    throw new ShapeError(`forward: sequence length ${T} exceeds max_position_embeddings ${c.max_position_embeddings}`);
  }
  if (targets !== undefined && targets.length !== ids.length) {
    throw new ShapeError(`forward: targets must be (B·T) = (${ids.length}), got (${targets.length})`);
  }
  const posArr = rowPositions(batch, T);
  const pos = indexTensor(posArr);
  const attend = selfAttend(causalSegmentsLayout(c, new Array<number>(batch).fill(T), posArr));
  const p = model.params;

  let h = embedding(p.embed, indexTensor(ids)); //                          (N, D)
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const layer = p.layers[model.plan.uniqueOf[l] as number];
    if (layer === undefined) throw new ShapeError(`layer plan names a missing layer at position ${l}`);
    h = decoderLayer(c, h, layer, p.lora?.[l] ?? null, pos, attend);
  }
  const logits = linear(rmsnorm(h, p.norm, c.rms_norm_eps), p.embed); //  (N, V), tied head
  const loss = targets === undefined ? null : crossEntropy(logits, indexTensor(targets));
  return { logits, loss };
}
