/**
 * Mixture-of-Recursions routing in the training forward (MOR_SPEC §3–§5).
 *
 * The recursive part of the model is Nr applications of a block of K shared layers. Routing
 * decides, per recursion, which token rows the block processes; only those rows are gathered,
 * run through the block (attention over the selected rows of each sequence, at their original
 * positions) and written back — compute really shrinks with the selection.
 *
 *   expert-choice, recursion r:   candidates ──router──▶ g = α·f(z) ──top-k per sequence──▶ S_r
 *                                 h[S_r] += g·Block(h[S_r])            (gating "output")
 *                              or h[S_r] += g·(Block(h[S_r]) − h[S_r])  (gating "delta")
 *                                 candidates ← S_r
 *   token-choice:                 depth i_t = argmax(α·softmax(router(h¹)) + b) once;
 *                                 recursion r runs the tokens with i_t ≥ r
 *
 * In 'causal' mode the selection is what inference can do token by token: expert-choice keeps
 * a candidate iff sigmoid(z) > threshold (main router, or the auxiliary router); token-choice is
 * causal already. That mode gives the honest validation figure.
 */
import { ShapeError } from '../errors.js';
import type { AttentionLayout } from '../backend/backend.js';
import { Tensor, indexTensor, tensor } from '../tensor/tensor.js';
import {
  add, bceWithLogits, gelu, gatherRows, linear, logsumexp, matmul, mean, mul, reshape, scale, scaleRows, scatterAddRows,
  sigmoid, softmax, sub, sum, tanh, topk,
} from '../tensor/ops.js';
import { causalSegmentsLayout, decoderLayer, selfAttend, type AttendFn } from '../nn/layers.js';
import { Rng } from '../util/rng.js';
import { headDim, type ModelConfig } from './config.js';
import { capacityAt, type MorConfig } from './mor-config.js';
import type { ModelParams, RouterParams } from './params.js';
import type { LayerPlan } from './sharing.js';
import { linearParamsPerLayer } from './flops.js';

export type RoutingMode = 'topk' | 'causal';

export interface RoutingStats {
  /** Per recursion: selected tokens / all tokens. */
  readonly selectedFraction: number[];
  /** Expert: per recursion, agreement of the threshold decision with top-k membership over the candidates. */
  readonly samplingAccuracy: number[];
  /** Expert: positions that no sequence of the batch selected at the last recursion. */
  readonly deadTokenRatio: number;
  /** Token: fraction of tokens assigned to each depth. */
  readonly load: number[];
  /** Token: (max load − mean load) / mean load. */
  readonly maxVio: number;
  /** Token: mean router entropy (nats). */
  readonly entropy: number;
  /** Per recursion, the global rows (b·T + t) it processed, in order. */
  readonly selectedRows: Int32Array[];
}

export interface RoutedTrunkResult {
  h: Tensor;
  /** Weighted sum of the routing losses (aux BCE, auxiliary router BCE, z-loss, balancing); null if none. */
  routingLoss: Tensor | null;
  /** Each routing loss term, unweighted, for the metrics. */
  terms: Record<string, number>;
  stats: RoutingStats;
  /** Forward FLOPs of the recursive part as executed (rows and attention pairs actually computed). */
  flops: number;
}

/** Token rows of a batch grouped by sequence: global row ids (sorted) and per-sequence counts. */
interface RowSet {
  rows: Int32Array;
  counts: number[];
}

interface KvStore {
  k: Tensor;
  v: Tensor;
  rows: RowSet;
}

/** Router logits: linear x·Wᵀ, or MLP fc2·GELU(fc1·x), on x / temperature.  x (N, D) → (N, out) */
export function routerForward(m: MorConfig, r: RouterParams, x: Tensor): Tensor {
  const input = m.temperature === 1 ? x : scale(x, 1 / m.temperature);
  if (r.kind === 'linear') return linear(input, r.w);
  return linear(gelu(linear(input, r.fc1)), r.fc2);
}

function routerFlopsPerRow(c: ModelConfig, m: MorConfig, out: number): number {
  const d = c.hidden_size;
  return m.router === 'mlp' ? 2 * (d * 2 * d + 2 * d * out) : 2 * d * out;
}

/** Number of (query, key) pairs visible under a layout: Σ over queries of keys with kPos ≤ qPos. */
function visiblePairs(layout: AttentionLayout): number {
  let pairs = 0;
  const { segments, qPos, kPos } = layout;
  for (let s = 0; s < segments.length; s += 4) {
    const qs = segments[s] as number, ql = segments[s + 1] as number, ks = segments[s + 2] as number, kl = segments[s + 3] as number;
    let j = 0;
    for (let i = qs; i < qs + ql; i++) {
      while (j < kl && (kPos[ks + j] as number) <= (qPos[i] as number)) j++;
      pairs += j;
    }
  }
  return pairs;
}

function gatherPositions(pos: Int32Array, rows: Int32Array): Int32Array {
  const out = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) out[i] = pos[rows[i] as number] as number;
  return out;
}

/**
 * The routed recursive part: from the state after the first unique layer (Middle-Cycle) or the
 * embedding (Cycle), to the state entering the last unique layer.
 *   h (N, D) with N = B·T rows, positions (N)
 */
export function routedTrunk(
  c: ModelConfig,
  params: ModelParams,
  plan: LayerPlan,
  h: Tensor,
  positions: Int32Array,
  batch: number,
  mode: RoutingMode,
  step: number,
): RoutedTrunkResult {
  const m = c.mor;
  const nr = c.recursion?.num_recursions ?? 0;
  const morParams = params.mor;
  if (m === null || morParams === null || nr === 0) throw new ShapeError('routedTrunk needs a config with recursion and mor sections');
  const N = h.dim(0);
  const T = N / batch;
  const K = plan.blockSize;
  const offset = plan.hasUniqueEnds ? 1 : 0;
  const hd = headDim(c);
  const perLayerLinear = linearParamsPerLayer(c);
  const kvParams = 2 * c.hidden_size * c.num_key_value_heads * hd;
  let flops = 0;
  const kvStores: Array<KvStore | null> = new Array<KvStore | null>(K).fill(null);

  /** Apply the K-layer block (recursion r) to rows `set` of h; returns the block output (n, D). */
  const runBlock = (r: number, set: RowSet): Tensor => {
    let x = gatherRows(h, indexTensor(set.rows));
    const posSel = gatherPositions(positions, set.rows);
    const pos = indexTensor(posSel);
    const ownLayout = causalSegmentsLayout(c, set.counts, posSel);
    for (let j = 0; j < K; j++) {
      const l = offset + r * K + j;
      const layer = params.layers[plan.uniqueOf[l] as number];
      if (layer === undefined) throw new ShapeError(`no unique layer at position ${l}`);
      const lora = params.lora?.[l] ?? null;
      const store = kvStores[j];
      if (m.kv_strategy === 'share' && r > 0 && store) {
        // queries of this recursion against recursion-1 keys/values of the same sequence
        const segments = new Int32Array(4 * batch);
        let qs = 0;
        let ks = 0;
        for (let b = 0; b < batch; b++) {
          segments.set([qs, set.counts[b] as number, ks, store.rows.counts[b] as number], 4 * b);
          qs += set.counts[b] as number;
          ks += store.rows.counts[b] as number;
        }
        const layout: AttentionLayout = { ...ownLayout, segments, kPos: gatherPositions(positions, store.rows.rows) };
        x = decoderLayer(c, x, layer, lora, pos, selfAttend(layout), { k: store.k, v: store.v });
        flops += 2 * set.rows.length * (perLayerLinear - kvParams) + 4 * visiblePairs(layout) * hd * c.num_attention_heads;
      } else {
        let attend: AttendFn = selfAttend(ownLayout);
        if (m.kv_strategy === 'share' && r === 0) {
          const base = attend;
          attend = (q, k, v) => {
            kvStores[j] = { k, v, rows: set };
            return base(q, k, v);
          };
        }
        x = decoderLayer(c, x, layer, lora, pos, attend);
        flops += 2 * set.rows.length * perLayerLinear + 4 * visiblePairs(ownLayout) * hd * c.num_attention_heads;
      }
    }
    return x;
  };

  const terms: Record<string, number> = {};
  const losses: Tensor[] = [];
  const addLoss = (name: string, t: Tensor, coef: number): void => {
    terms[name] = (terms[name] ?? 0) + t.item();
    if (coef > 0) losses.push(coef === 1 ? t : scale(t, coef));
  };
  const selectedFraction: number[] = [];
  const samplingAccuracy: number[] = [];
  const selectedRows: Int32Array[] = [];
  let deadTokenRatio = 0;
  let load: number[] = [];
  let maxVio = 0;
  let entropy = 0;

  if (m.routing === 'expert_choice') {
    let cand: RowSet = { rows: Int32Array.from({ length: N }, (_, i) => i), counts: new Array<number>(batch).fill(T) };
    const rng = m.random_router ? new Rng(0x5eed + step) : null;
    const zThreshold = Math.log(m.threshold / (1 - m.threshold)); // sigmoid(z) > th  ⇔  z > logit(th)
    for (let r = 0; r < nr; r++) {
      const nC = cand.rows.length;
      const candIdx = indexTensor(cand.rows);
      const hc = gatherRows(h, candIdx); //                                     (nC, D)
      const router = morParams.routers[r] as RouterParams;
      const z = reshape(routerForward(m, router, hc), [nC]); //              (nC)
      flops += nC * routerFlopsPerRow(c, m, 1);
      const g =
        m.router_func === 'sigmoid' ? scale(sigmoid(z), m.alpha) : m.router_func === 'tanh' ? scale(tanh(z), m.alpha) : scale(z, m.alpha);
      const auxZ = morParams.auxRouters ? reshape(routerForward(m, morParams.auxRouters[r] as RouterParams, hc.detach()), [nC]) : null;
      if (auxZ) flops += nC * routerFlopsPerRow(c, m, 1);

      // ---- which candidates recursion r takes (local indices into cand, per sequence in order)
      const cap = capacityAt(m, nr, r, mode === 'topk' ? step : Number.POSITIVE_INFINITY);
      const takesAll = cap >= 1;
      const selLocal: number[] = [];
      const counts: number[] = [];
      const inTopk = new Uint8Array(nC);
      let start = 0;
      for (let b = 0; b < batch; b++) {
        const nb = cand.counts[b] as number;
        const k = Math.min(nb, Math.max(1, Math.floor(cap * T)));
        if (nb > 0 && (takesAll || k >= nb)) for (let i = 0; i < nb; i++) inTopk[start + i] = 1;
        else if (nb > 0) {
          const scores = new Float32Array(nb);
          const G = g.f32();
          for (let i = 0; i < nb; i++) scores[i] = rng ? rng.next() : (G[start + i] as number);
          const { indices } = topk(tensor(scores, [1, nb]), k, 'index');
          for (const i of indices.i32()) inTopk[start + i] = 1;
        }
        let taken = 0;
        const Z = (auxZ ?? z).f32();
        for (let i = 0; i < nb; i++) {
          const keep = mode === 'topk' || takesAll ? inTopk[start + i] === 1 : (Z[start + i] as number) > zThreshold;
          if (keep) {
            selLocal.push(start + i);
            taken++;
          }
        }
        counts.push(taken);
        start += nb;
      }

      // ---- routing losses and statistics (against the top-k targets)
      const target = tensor(Float32Array.from(inTopk), [nC]);
      if (mode === 'topk') {
        if (m.causal === 'aux_loss' && m.aux_loss_coef > 0) addLoss('aux_bce', mean(bceWithLogits(z, target)), m.aux_loss_coef);
        if (auxZ) addLoss('aux_router_bce', mean(bceWithLogits(auxZ, target)), 1);
        if (m.z_loss_coef > 0) addLoss('z_loss', mean(mul(z, z)), m.z_loss_coef);
      }
      const decider = (auxZ ?? z).f32();
      let agree = 0;
      for (let i = 0; i < nC; i++) if (((decider[i] as number) > zThreshold ? 1 : 0) === inTopk[i]) agree++;
      samplingAccuracy.push(nC > 0 ? agree / nC : 1);
      selectedFraction.push(selLocal.length / N);

      const selRows = Int32Array.from(selLocal, (i) => cand.rows[i] as number);
      selectedRows.push(selRows);
      const sel: RowSet = { rows: selRows, counts };
      if (selRows.length > 0) {
        const y = runBlock(r, sel); //                                          (nS, D)
        const gs = gatherRows(reshape(g, [nC, 1]), indexTensor(Int32Array.from(selLocal))); // (nS, 1)
        const selIdx = indexTensor(selRows);
        const update = m.gating === 'output' ? scaleRows(y, gs) : scaleRows(sub(y, gatherRows(h, selIdx)), gs);
        h = scatterAddRows(h, selIdx, update);
      }
      if (r === nr - 1) {
        const seen = new Uint8Array(T);
        for (const row of selRows) seen[(positions[row] as number) % T] = 1;
        let dead = 0;
        for (let t = 0; t < T; t++) if (seen[t] === 0) dead++;
        deadTokenRatio = dead / T;
      }
      cand = sel;
    }
  } else {
    // ---- token-choice: one decision per token, from the state entering recursion 1
    const h1 = h;
    const router = morParams.tokenRouter as RouterParams;
    const z = routerForward(m, router, h1); //                               (N, Nr)
    flops += N * routerFlopsPerRow(c, m, nr);
    const probs = m.router_func === 'softmax' ? softmax(z) : sigmoid(z);
    const p = m.alpha === 1 ? probs : scale(probs, m.alpha); //                 (N, Nr)
    const bias = morParams.routerBias?.f32() ?? new Float32Array(nr);
    const P = p.f32();
    const depth = new Int32Array(N);
    const forceDeepest = mode === 'topk' && step < m.balance_warmup_steps;
    for (let t = 0; t < N; t++) {
      let best = 0;
      let bv = -Infinity;
      for (let j = 0; j < nr; j++) {
        const v = (P[t * nr + j] as number) + (bias[j] as number);
        if (v > bv) {
          bv = v;
          best = j;
        }
      }
      depth[t] = forceDeepest ? nr - 1 : best;
    }
    load = new Array<number>(nr).fill(0);
    for (let t = 0; t < N; t++) load[depth[t] as number] = (load[depth[t] as number] as number) + 1 / N;
    const meanLoad = 1 / nr;
    maxVio = (Math.max(...load) - meanLoad) / meanLoad;
    const Q = (m.router_func === 'softmax' ? probs : softmax(z)).f32();
    let ent = 0;
    for (let i = 0; i < Q.length; i++) {
      const q = Q[i] as number;
      if (q > 0) ent -= q * Math.log(q);
    }
    entropy = ent / N;

    if (mode === 'topk') {
      if (m.balancing === 'loss' && m.balance_coef > 0) {
        // L_bal = Σ_i P_i · f_i,  P_i = mean_t p_ti,  f_i = Nr · load_i (constant)
        const Pmean = scale(matmul(tensor(new Float32Array(N).fill(1), [1, N]), p), 1 / N); // (1, Nr)
        const f = tensor(Float32Array.from(load, (x) => nr * x), [1, nr]);
        addLoss('balance', sum(mul(Pmean, f)), m.balance_coef);
      }
      if (m.z_loss_coef > 0) {
        const lse = logsumexp(z);
        addLoss('z_loss', mean(mul(lse, lse)), m.z_loss_coef);
      }
    }

    const pFlat = reshape(p, [N * nr, 1]);
    for (let r = 0; r < nr; r++) {
      const active: number[] = [];
      const counts: number[] = [];
      for (let b = 0; b < batch; b++) {
        let n = 0;
        for (let t = b * T; t < (b + 1) * T; t++) if ((depth[t] as number) >= r) {
          active.push(t);
          n++;
        }
        counts.push(n);
      }
      selectedFraction.push(active.length / N);
      samplingAccuracy.push(1);
      selectedRows.push(Int32Array.from(active));
      if (active.length === 0) break;
      const y = runBlock(r, { rows: Int32Array.from(active), counts }); //     (nA, D)
      const contLocal: number[] = [];
      const finLocal: number[] = [];
      active.forEach((t, i) => ((depth[t] as number) > r ? contLocal : finLocal).push(i));
      if (contLocal.length > 0) {
        // carried on, ungated: h_t ← y_t
        const rows = indexTensor(Int32Array.from(contLocal, (i) => active[i] as number));
        h = scatterAddRows(h, rows, sub(gatherRows(y, indexTensor(Int32Array.from(contLocal))), gatherRows(h, rows)));
      }
      if (finLocal.length > 0) {
        // finished: h_t ← h¹_t + p_{t,r} · y_t
        const finRows = Int32Array.from(finLocal, (i) => active[i] as number);
        const rows = indexTensor(finRows);
        const pt = gatherRows(pFlat, indexTensor(Int32Array.from(finRows, (t) => t * nr + r))); // (nF, 1)
        const next = add(gatherRows(h1, rows), scaleRows(gatherRows(y, indexTensor(Int32Array.from(finLocal))), pt));
        h = scatterAddRows(h, rows, sub(next, gatherRows(h, rows)));
      }
    }
  }

  let routingLoss: Tensor | null = null;
  for (const l of losses) routingLoss = routingLoss === null ? l : add(routingLoss, l);
  return {
    h,
    routingLoss,
    terms,
    stats: { selectedFraction, samplingAccuracy, deadTokenRatio, load, maxVio, entropy, selectedRows },
    flops,
  };
}

/**
 * Loss-free balancing (token-choice): after each optimiser step, b_i += u · sign(mean load − load_i).
 * `load` is the fraction of tokens per depth in the step just taken.
 */
export function updateRouterBias(c: ModelConfig, params: ModelParams, load: readonly number[]): void {
  const m = c.mor;
  const bias = params.mor?.routerBias;
  if (!m || m.balancing !== 'loss_free' || !bias || load.length === 0) return;
  const b = bias.f32();
  const meanLoad = load.reduce((a, x) => a + x, 0) / load.length;
  for (let i = 0; i < b.length; i++) b[i] = (b[i] as number) + m.bias_update_rate * Math.sign(meanLoad - (load[i] ?? 0));
}
