/**
 * The recursive Llama-style language model: its training forward, top to bottom.
 *
 *   ids (B·T) → embed → [layer at each unrolled position, shared by identity] → RMSNorm → · Eᵀ
 *   (· lm_headᵀ instead of · Eᵀ when the head is untied)
 *
 * A recursive model stores only its unique layers; the layer plan (sharing.ts) says which one
 * runs at each unrolled position, and per-position LoRA (relaxation) is added when configured.
 */
import { ShapeError } from '../errors.js';
import { Tensor, indexTensor } from '../tensor/tensor.js';
import { add, crossEntropy, embedding, linear, rmsnorm } from '../tensor/ops.js';
import { causalSegmentsLayout, decoderLayer, rowPositions, selfAttend } from '../nn/layers.js';
import type { ModelConfig } from './config.js';
import { initParams, type ModelParams } from './params.js';
import { layerPlan, type LayerPlan } from './sharing.js';
import { routedTrunk, type RoutingMode, type RoutingStats } from './mor.js';
import { modStack } from './mod.js';
import { layerFlops } from './flops.js';
import { MoeForward, type MoeStats } from './moe.js';

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

export interface ForwardOptions {
  /** MoR / MoD selection: 'topk' (training, expert-choice ranks the whole sequence) or 'causal' (per-token decisions, as inference can). Default 'topk'. */
  readonly routing?: RoutingMode;
  /** Optimiser step, for capacity and balancing warmups. Default: warmups over. */
  readonly step?: number;
  /** Causal expert-choice (MoR) or MoD routing: threshold on sigmoid(z) (default: the config's `mor.threshold` / `mod.threshold`). */
  readonly threshold?: number;
  /** Test-time depth: run at most this many depth steps (recursions; default all, see LayerPlan.depthSteps). */
  readonly maxDepth?: number;
}

export interface ForwardResult {
  /** (B·T, V) */
  logits: Tensor;
  /** Training objective: language-model loss plus the weighted routing losses; null without targets. */
  loss: Tensor | null;
  /** Mean next-token cross-entropy over non-ignored targets; null without targets. */
  lmLoss: Tensor | null;
  /** Unweighted routing loss terms (aux_bce, z_loss, balance, …), for metrics. */
  routingTerms: Record<string, number>;
  /** Routing statistics (per recursion for MoR, per routed layer for MoD), or null for a model without routing. */
  stats: RoutingStats | null;
  /** Expert-routing statistics per MoE router, or null for a model without a moe section. */
  moeStats: MoeStats | null;
  /** Experts picked (N·k) by every MoE MLP call, in call order; empty without MoE. */
  moeSelections: Int32Array[];
  /** Forward FLOPs actually executed (MOR_SPEC §6 accounting over the rows each layer ran on). */
  flops: number;
}

/** FLOPs of one full-width layer (unique layer u) over causal segments of length T: linear maps plus the attention triangle. */
function fullLayerFlops(c: ModelConfig, batch: number, T: number, u: number): number {
  return layerFlops(c, batch * T, (batch * T * (T + 1)) / 2, false, u);
}

/**
 * Training forward over B rows of T tokens each (every row an independent causal sequence).
 *   ids (B·T) int32, targets (B·T) int32 or undefined (−100 = ignore)
 */
export function forward(model: Model, ids: Int32Array, batch: number, targets?: Int32Array, opts: ForwardOptions = {}): ForwardResult {
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
  const plan = model.plan;
  const layerAt = (l: number) => {
    const layer = p.layers[plan.uniqueOf[l] as number];
    if (layer === undefined) throw new ShapeError(`layer plan names a missing layer at position ${l}`);
    return layer;
  };

  const numSteps = plan.depthSteps.length;
  const maxDepth = opts.maxDepth ?? numSteps;
  if (!Number.isInteger(maxDepth) || maxDepth < 1 || maxDepth > numSteps) {
    throw new ShapeError(`forward: maxDepth must be an integer in [1, ${numSteps}], got ${maxDepth}`);
  }
  const L = c.num_hidden_layers;
  const mode = opts.routing ?? 'topk';
  const moe = c.moe === null ? null : new MoeForward(c, mode);
  const runLayer = (x: Tensor, l: number): Tensor => {
    const layer = layerAt(l);
    const u = plan.uniqueOf[l] as number;
    flops += fullLayerFlops(c, batch, T, u);
    return decoderLayer(c, x, layer, p.lora?.[l] ?? null, pos, attend, undefined, moe?.mlpFor(layer.moe, u, plan.recursionOf[l] as number));
  };

  let h = embedding(p.embed, indexTensor(ids)); //                          (N, D)
  let flops = 2 * ids.length * c.vocab_size * c.hidden_size; //             output head (tied or not)
  let routingLoss: Tensor | null = null;
  let routingTerms: Record<string, number> = {};
  let stats: RoutingStats | null = null;
  if (plan.hasUniqueEnds) h = runLayer(h, 0);
  if (c.mod !== null) {
    // Mixture-of-Depths: a vanilla stack whose routed layers run only their selected rows (mod.ts)
    const stack = modStack(c, p, h, posArr, batch, runLayer, {
      mode,
      ...(opts.threshold !== undefined ? { threshold: opts.threshold } : {}),
    });
    h = stack.h;
    flops += stack.flops;
    routingLoss = stack.routingLoss;
    routingTerms = stack.terms;
    stats = stack.stats;
  } else if (c.mor === null) {
    for (const step of plan.depthSteps.slice(0, maxDepth)) for (const l of step) h = runLayer(h, l);
  } else {
    const trunk = routedTrunk(c, p, plan, h, posArr, batch, {
      mode,
      moe,
      step: opts.step ?? Number.POSITIVE_INFINITY,
      maxDepth,
      ...(opts.threshold !== undefined ? { threshold: opts.threshold } : {}),
    });
    h = trunk.h;
    flops += trunk.flops;
    routingLoss = trunk.routingLoss;
    routingTerms = trunk.terms;
    stats = trunk.stats;
  }
  if (plan.hasUniqueEnds) h = runLayer(h, L - 1);
  if (moe !== null) {
    const moeLoss = moe.loss();
    if (moeLoss !== null) routingLoss = routingLoss === null ? moeLoss : add(routingLoss, moeLoss);
    routingTerms = { ...routingTerms, ...moe.terms };
    flops -= moe.droppedFlops(); // dropped slots ran no expert
  }
  const logits = linear(rmsnorm(h, p.norm, c.rms_norm_eps), p.head); //   (N, V); head = embed when tied
  const lmLoss = targets === undefined ? null : crossEntropy(logits, indexTensor(targets));
  const loss = lmLoss === null ? null : routingLoss === null ? lmLoss : add(lmLoss, routingLoss);
  return { logits, loss, lmLoss, routingTerms, stats, moeStats: moe?.stats ?? null, moeSelections: moe?.selections ?? [], flops };
}
