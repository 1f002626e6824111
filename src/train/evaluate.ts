/**
 * Validation NLL of a model over the validation split, and test-time depth scaling: the same
 * figure at every allowed maximum depth and router threshold, with the mean depth tokens took.
 */
import { MorError } from '../errors.js';
import { forward, type Model } from '../model/model.js';
import type { RoutingMode } from '../model/mor.js';
import { noGrad } from '../tensor/tensor.js';
import type { TokenArray } from '../data/dataset.js';
import { validationBatches } from '../data/loader.js';

/** Test-time depth of an evaluation: at most maxDepth recursions; expert-choice routers continue iff sigmoid(z) > threshold. */
export interface DepthSetting {
  readonly maxDepth?: number;
  readonly threshold?: number;
}

export interface EvalResult {
  /** Mean next-token NLL (nats) over `tokens` target tokens. */
  readonly nll: number;
  readonly tokens: number;
  /** Mean recursions (depth steps) a token ran. */
  readonly meanDepth: number;
}

export function evaluateNll(
  model: Model,
  val: TokenArray,
  batchSize: number,
  seqLen: number,
  maxBatches: number,
  routing: RoutingMode = 'causal',
  depth: DepthSetting = {},
): EvalResult {
  let sum = 0;
  let count = 0;
  let depthSum = 0;
  const steps = model.plan.depthSteps.length;
  noGrad(() => {
    for (const batch of validationBatches(val, { batchSize, seqLen, maxBatches })) {
      const { lmLoss, stats } = forward(model, batch.inputs, batch.batchSize, batch.targets, { routing, ...depth });
      const n = batch.targets.length;
      sum += (lmLoss?.item() ?? 0) * n;
      count += n;
      // MoR: each recursion's selected rows; otherwise every token runs maxDepth steps
      depthSum += stats ? stats.selectedRows.reduce((a, rows) => a + rows.length, 0) : n * (depth.maxDepth ?? steps);
    }
  });
  if (count === 0) throw new MorError('E_DATA', `the validation split has fewer than ${seqLen + 1} tokens: nothing to evaluate`);
  return { nll: sum / count, tokens: count, meanDepth: depthSum / count };
}

/** One point of a depth sweep (the JSON fields of `mor eval --depth-sweep --json`). */
export interface SweepPoint {
  readonly max_depth: number;
  /** The router threshold used (expert-choice MoR), else null. */
  readonly threshold: number | null;
  readonly nll: number;
  readonly mean_depth: number;
}

/**
 * Causal-routing validation NLL at every maximum depth in `maxDepths` × every threshold in
 * `thresholds` (thresholds apply to expert-choice MoR models only; others get one null point per depth).
 */
export function depthSweep(
  model: Model,
  val: TokenArray,
  batchSize: number,
  seqLen: number,
  maxBatches: number,
  maxDepths: readonly number[],
  thresholds: readonly number[],
): SweepPoint[] {
  const routed = model.config.mor?.routing === 'expert_choice';
  const ths: Array<number | null> = routed ? (thresholds.length ? [...thresholds] : [model.config.mor?.threshold ?? 0.5]) : [null];
  const points: SweepPoint[] = [];
  for (const d of maxDepths) {
    for (const th of ths) {
      const ev = evaluateNll(model, val, batchSize, seqLen, maxBatches, 'causal', { maxDepth: d, ...(th !== null ? { threshold: th } : {}) });
      points.push({ max_depth: d, threshold: th, nll: ev.nll, mean_depth: ev.meanDepth });
    }
  }
  return points;
}
