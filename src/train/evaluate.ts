/**
 * Validation NLL of a model over the validation split, and test-time depth scaling: the same
 * figure at every allowed maximum depth and router threshold, with the mean depth tokens took.
 */
import { MorError } from '../errors.js';
import { forward, type Model } from '../model/model.js';
import type { RoutingMode } from '../model/mor.js';
import { routerThreshold } from '../model/mod-config.js';
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

/** Sums next-token NLL and depth over forward passes (evaluateNll and evaluateTextNll). */
function nllAccumulator(model: Model, routing: RoutingMode, depth: DepthSetting) {
  const steps = model.plan.depthSteps.length;
  let sum = 0;
  let count = 0;
  let depthSum = 0;
  return {
    add(inputs: Int32Array, batch: number, targets: Int32Array): void {
      const { lmLoss, stats } = forward(model, inputs, batch, targets, { routing, ...depth });
      const n = targets.length;
      sum += (lmLoss?.item() ?? 0) * n;
      count += n;
      // MoR: each recursion's selected rows; otherwise (MoD included: its one depth step is the
      // whole stack) every token runs maxDepth steps
      depthSum += stats && model.config.mod === null ? stats.selectedRows.reduce((a, rows) => a + rows.length, 0) : n * (depth.maxDepth ?? steps);
    },
    get count(): number {
      return count;
    },
    result(): EvalResult {
      return { nll: sum / count, tokens: count, meanDepth: depthSum / count };
    },
  };
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
  const acc = nllAccumulator(model, routing, depth);
  noGrad(() => {
    for (const batch of validationBatches(val, { batchSize, seqLen, maxBatches })) acc.add(batch.inputs, batch.batchSize, batch.targets);
  });
  if (acc.count === 0) throw new MorError('E_DATA', `the validation split has fewer than ${seqLen + 1} tokens: nothing to evaluate`);
  return acc.result();
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
 * `thresholds` (thresholds apply to expert-choice MoR and MoD models only; others get one null point per depth).
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
  const own = routerThreshold(model.config);
  const ths: Array<number | null> = own !== null ? (thresholds.length ? [...thresholds] : [own]) : [null];
  const points: SweepPoint[] = [];
  for (const d of maxDepths) {
    for (const th of ths) {
      const ev = evaluateNll(model, val, batchSize, seqLen, maxBatches, 'causal', { maxDepth: d, ...(th !== null ? { threshold: th } : {}) });
      points.push({ max_depth: d, threshold: th, nll: ev.nll, mean_depth: ev.meanDepth });
    }
  }
  return points;
}

/**
 * Mean next-token NLL of one token sequence (`mor eval --text`, as llama.cpp's perplexity tool
 * scores a text file): windows of up to seqLen inputs, each starting at the previous window's
 * last target, so every token after the first is predicted exactly once, with the tokens of its
 * own window as context; full windows run `batchSize` at a time, the last (shorter) one alone.
 */
export function evaluateTextNll(
  model: Model,
  ids: Int32Array,
  seqLen: number,
  batchSize = 8,
  routing: RoutingMode = 'causal',
  depth: DepthSetting = {},
): EvalResult {
  if (ids.length < 2) throw new MorError('E_DATA', `the text has ${ids.length} token${ids.length === 1 ? '' : 's'}: at least 2 are needed to score a next token`);
  const starts: number[] = [];
  for (let s = 0; s < ids.length - 1; s += seqLen) starts.push(s);
  const acc = nllAccumulator(model, routing, depth);
  const run = (group: number[], T: number): void => {
    const inputs = new Int32Array(group.length * T);
    const targets = new Int32Array(group.length * T);
    group.forEach((s, b) => {
      inputs.set(ids.subarray(s, s + T), b * T);
      targets.set(ids.subarray(s + 1, s + 1 + T), b * T);
    });
    acc.add(inputs, group.length, targets);
  };
  noGrad(() => {
    const full = starts.filter((s) => s + seqLen + 1 <= ids.length);
    for (let i = 0; i < full.length; i += batchSize) run(full.slice(i, i + batchSize), seqLen);
    const last = starts[starts.length - 1] as number;
    if (last + seqLen + 1 > ids.length) run([last], ids.length - 1 - last);
  });
  return acc.result();
}
