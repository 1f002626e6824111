/**
 * Routing decisions of Mixture-of-Recursions (MOR_SPEC §3–§4), in one place. The training
 * forward (mor.ts) and the inference runner (infer/runner.ts) both call these functions; neither
 * restates a formula.
 *
 *   router logits      z = router(h / temperature)                      routerLogits
 *   expert-choice gate g = α·f(z),  f ∈ {sigmoid, tanh, identity}        expertGate
 *   keep going at r    capacity_r ≥ 1, or sigmoid(z) > threshold          continuesAt / expertKeeps
 *                      (tested as z > logit(threshold): same decision, no exp per token)
 *   top-k per sequence k_r = max(1, ⌊cap_r·T⌋)                            capacityTokens
 *   gated update       output: h + g·y      delta: h + g·(y − h)         expertUpdate
 *   token-choice       p = α·f(z), f ∈ {softmax, sigmoid};  depth = argmax_j (p_j + b_j)
 *                      finished at its depth: h¹ + p_depth·y;  before it: y   tokenChoice*
 *
 * Mixture-of-Depths (mod.ts) routes with the same functions: logits and gate (routerLogits,
 * expertGate: its config has router_func and alpha), top-k of equal-length sequences
 * (topkMembership), the causal test (thresholdKeeps) and the delta update (expertUpdate).
 */
import { Tensor, tensor } from '../tensor/tensor.js';
import { add, gelu, linear, scale, scaleRows, sigmoid, softmax, sub, tanh, topk } from '../tensor/ops.js';
import { capacityAt, type MorConfig } from './mor-config.js';
import type { ModConfig } from './mod-config.js';
import type { RouterParams } from './params.js';

/**
 * Router logits: linear x·Wᵀ, or MLP fc2·GELU(fc1·x), on x / temperature (a router config without
 * a temperature, MoD's, reads x as is).  x (N, D) → (N, out)
 */
export function routerLogits(m: MorConfig | ModConfig, r: RouterParams, x: Tensor): Tensor {
  const temp = 'temperature' in m ? m.temperature : 1;
  const input = temp === 1 ? x : scale(x, 1 / temp);
  if (r.kind === 'linear') return linear(input, r.w);
  return linear(gelu(linear(input, r.fc1)), r.fc2);
}

/** Expert-choice gate of router logits: α·f(z).  z (N) → g (N) */
export function expertGate(m: Pick<MorConfig, 'router_func' | 'alpha'>, z: Tensor): Tensor {
  if (m.router_func === 'sigmoid') return scale(sigmoid(z), m.alpha);
  if (m.router_func === 'tanh') return scale(tanh(z), m.alpha);
  return scale(z, m.alpha);
}

/** The logit at which sigmoid crosses `threshold`: sigmoid(z) > th ⇔ z > logit(th) (±∞ at 0 and 1). */
export function thresholdLogit(threshold: number): number {
  return Math.log(threshold / (1 - threshold));
}

/** The causal keep-going test of expert-choice: does a token with router logit z continue? */
export function continuesAt(z: number, zThreshold: number): boolean {
  return z > zThreshold;
}

/** Whether recursion r takes every candidate (capacity 1: no router decision at that depth). */
export function takesAllAt(m: MorConfig, numRecursions: number, r: number, step = Number.POSITIVE_INFINITY): boolean {
  return capacityAt(m, numRecursions, r, step) >= 1;
}

/**
 * Causal expert-choice decisions at recursion r for candidates with decider logits `z`
 * (the main router's, or the auxiliary router's): keeps[i] = 1 iff candidate i runs recursion r.
 * `thresholds` is one threshold for all, or one per candidate (per-request thresholds at inference).
 */
export function expertKeeps(m: MorConfig, numRecursions: number, r: number, z: Float32Array, thresholds: number | ArrayLike<number>): Uint8Array {
  if (takesAllAt(m, numRecursions, r)) return new Uint8Array(z.length).fill(1);
  return thresholdKeeps(z, thresholds);
}

/**
 * The per-token causal decision on router logits z: keeps[i] = 1 iff sigmoid(z_i) > threshold
 * (one threshold, or one per row).
 */
export function thresholdKeeps(z: Float32Array, thresholds: number | ArrayLike<number>): Uint8Array {
  const keeps = new Uint8Array(z.length);
  const one = typeof thresholds === 'number' ? thresholdLogit(thresholds) : 0;
  for (let i = 0; i < z.length; i++) {
    const zt = typeof thresholds === 'number' ? one : thresholdLogit(thresholds[i] as number);
    keeps[i] = continuesAt(z[i] as number, zt) ? 1 : 0;
  }
  return keeps;
}

/** Tokens recursion r takes by top-k in a sequence of T at capacity `cap`: max(1, ⌊cap·T⌋). */
export function capacityTokens(cap: number, T: number): number {
  return Math.max(1, Math.floor(cap * T));
}

/**
 * Top-k membership in S sequences of T rows each, laid end to end: inTopk[s·T + t] = 1 iff row t
 * is among the k highest scores of sequence s (ties to the lower index, as the topk kernel breaks them).
 *   scores (S·T) → inTopk (S·T)
 */
export function topkMembership(scores: Float32Array, numSeqs: number, seqLen: number, k: number): Uint8Array {
  const inTopk = new Uint8Array(numSeqs * seqLen);
  if (numSeqs === 0 || seqLen === 0) return inTopk;
  const { indices } = topk(tensor(scores, [numSeqs, seqLen]), Math.min(k, seqLen), 'index');
  const idx = indices.i32();
  const kk = idx.length / numSeqs;
  for (let s = 0; s < numSeqs; s++) for (let j = 0; j < kk; j++) inTopk[s * seqLen + (idx[s * kk + j] as number)] = 1;
  return inTopk;
}

/**
 * The gated expert-choice update as a residual to add to the selected rows' state:
 *   output gating  Δ = g·y        delta gating  Δ = g·(y − h)
 *   y, h (n, D) block output and state of the selected rows; g (n, 1) → Δ (n, D)
 */
export function expertUpdate(m: Pick<MorConfig, 'gating'>, y: Tensor, h: Tensor, g: Tensor): Tensor {
  return m.gating === 'output' ? scaleRows(y, g) : scaleRows(sub(y, h), g);
}

/** Token-choice router probabilities p = α·f(z) with f softmax or sigmoid.  z (N, Nr) → p (N, Nr) */
export function tokenChoiceProbs(m: MorConfig, z: Tensor): Tensor {
  const probs = m.router_func === 'softmax' ? softmax(z) : sigmoid(z);
  return m.alpha === 1 ? probs : scale(probs, m.alpha);
}

/**
 * Token-choice depth of each token: argmax_j (p_tj + b_j), the bias steering selection only.
 *   p (N·Nr) row-major, bias (Nr) or null → depth (N), 0-based (recursions 0..depth run)
 */
export function tokenChoiceDepths(p: Float32Array, numRecursions: number, bias: Float32Array | null): Int32Array {
  const nr = numRecursions;
  const n = p.length / nr;
  const depth = new Int32Array(n);
  for (let t = 0; t < n; t++) {
    let best = 0;
    let bv = -Infinity;
    for (let j = 0; j < nr; j++) {
      const v = (p[t * nr + j] as number) + (bias ? (bias[j] as number) : 0);
      if (v > bv) {
        bv = v;
        best = j;
      }
    }
    depth[t] = best;
  }
  return depth;
}

/** Token-choice state after the token's last recursion: h¹ + p·y.  h1, y (n, D), p (n, 1) → (n, D) */
export function tokenChoiceFinish(h1: Tensor, y: Tensor, p: Tensor): Tensor {
  return add(h1, scaleRows(y, p));
}
