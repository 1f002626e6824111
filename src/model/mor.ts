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
  add, bceWithLogits, gatherRows, logsumexp, matmul, mean, mul, reshape, scale, scatterAddRows, softmax, sub, sum, topk,
} from '../tensor/ops.js';
import { causalSegmentsLayout, decoderLayer, selfAttend, type AttendFn } from '../nn/layers.js';
import { Rng } from '../util/rng.js';
import type { ModelConfig } from './config.js';
import { capacityAt, type MorConfig } from './mor-config.js';
import type { ModelParams, MorParams, RouterParams } from './params.js';
import type { LayerPlan } from './sharing.js';
import { layerFlops, routerFlops } from './flops.js';
import type { MoeForward } from './moe.js';
import {
  capacityTokens, continuesAt, expertGate, expertKeeps, expertUpdate, routerLogits, thresholdLogit, tokenChoiceDepths,
  tokenChoiceFinish, tokenChoiceProbs,
} from './routing.js';

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

/**
 * A selection: the token rows one recursion processes, grouped by sequence.
 *   rows (n) global row ids b·T + t, ascending (so per sequence in position order); counts (B)
 */
export interface Selection {
  readonly rows: Int32Array;
  readonly counts: readonly number[];
}

/** K/V of one block slot at recursion 1, kept for recursive KV sharing. */
interface KvStore {
  k: Tensor;
  v: Tensor;
  rows: Selection;
}

/** What every step of the routed trunk reads, and what it accumulates (FLOPs executed, losses). */
interface Trunk {
  readonly c: ModelConfig;
  readonly m: MorConfig;
  readonly nr: number;
  readonly params: ModelParams;
  readonly mor: MorParams;
  readonly plan: LayerPlan;
  /** (N) position of every row. */
  readonly positions: Int32Array;
  readonly batch: number;
  readonly T: number;
  readonly mode: RoutingMode;
  readonly step: number;
  /** Causal mode: threshold on sigmoid(z) of the deciding router. */
  readonly threshold: number;
  /** Recursions that may run (test-time depth); the rest select nothing. */
  readonly maxDepth: number;
  readonly kvStores: Array<KvStore | null>;
  /** The forward's Mixture-of-Experts side (MoE MLPs of the block), or null. */
  readonly moe: MoeForward | null;
  flops: number;
  readonly losses: Tensor[];
  readonly terms: Record<string, number>;
}

type MutableStats = { -readonly [K in keyof RoutingStats]: RoutingStats[K] };

/** Number of (query, key) pairs visible under a layout: Σ over queries of keys with kPos ≤ qPos. */
export function visiblePairs(layout: AttentionLayout): number {
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

export function gatherPositions(pos: Int32Array, rows: Int32Array): Int32Array {
  const out = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) out[i] = pos[rows[i] as number] as number;
  return out;
}

function addLoss(tr: Trunk, name: string, t: Tensor, coef: number): void {
  tr.terms[name] = (tr.terms[name] ?? 0) + t.item();
  if (coef > 0) tr.losses.push(coef === 1 ? t : scale(t, coef));
}

/** The candidates with keeps[i] = 1, as local indices and as a selection (per-sequence counts kept). */
export function keptRows(cand: Selection, keeps: Uint8Array): { keptLocal: Int32Array; sel: Selection } {
  const local: number[] = [];
  const counts: number[] = [];
  let start = 0;
  for (const nb of cand.counts) {
    let taken = 0;
    for (let i = start; i < start + nb; i++) {
      if (keeps[i] === 1) {
        local.push(i);
        taken++;
      }
    }
    counts.push(taken);
    start += nb;
  }
  const keptLocal = Int32Array.from(local);
  return { keptLocal, sel: { rows: Int32Array.from(keptLocal, (i) => cand.rows[i] as number), counts } };
}

/** Every row of the batch, as a selection. */
export function allRows(batch: number, T: number): Selection {
  return { rows: Int32Array.from({ length: batch * T }, (_, i) => i), counts: new Array<number>(batch).fill(T) };
}

/**
 * Recursion r of the K-layer block over the rows of `sel`: attention among the selected rows of
 * each sequence at their original positions; under KV sharing, deeper recursions attend to the
 * recursion-1 K/V of the same slot.  h (N, D) → block output (n, D) for the n selected rows
 */
function applyBlock(tr: Trunk, h: Tensor, r: number, sel: Selection): Tensor {
  const { c, m, params, plan, positions, batch } = tr;
  let x = gatherRows(h, indexTensor(sel.rows)); //                              (n, D)
  const posSel = gatherPositions(positions, sel.rows);
  const pos = indexTensor(posSel);
  const ownLayout = causalSegmentsLayout(c, sel.counts, posSel);
  (plan.depthSteps[r] as Int32Array).forEach((l, j) => {
    const u = plan.uniqueOf[l] as number;
    const layer = params.layers[u];
    if (layer === undefined) throw new ShapeError(`no unique layer at position ${l}`);
    const lora = params.lora?.[l] ?? null;
    const mlp = tr.moe?.mlpFor(layer.moe, u, r);
    const store = tr.kvStores[j];
    if (m.kv_strategy === 'share' && r > 0 && store) {
      // queries of this recursion against recursion-1 keys/values of the same sequence
      const segments = new Int32Array(4 * batch);
      let qs = 0;
      let ks = 0;
      for (let b = 0; b < batch; b++) {
        segments.set([qs, sel.counts[b] as number, ks, store.rows.counts[b] as number], 4 * b);
        qs += sel.counts[b] as number;
        ks += store.rows.counts[b] as number;
      }
      const layout: AttentionLayout = { ...ownLayout, segments, kPos: gatherPositions(positions, store.rows.rows) };
      x = decoderLayer(c, x, layer, lora, pos, selfAttend(layout), { k: store.k, v: store.v }, mlp);
      tr.flops += layerFlops(c, sel.rows.length, visiblePairs(layout), true, u);
    } else {
      let attend: AttendFn = selfAttend(ownLayout);
      if (m.kv_strategy === 'share' && r === 0) {
        const base = attend;
        attend = (q, k, v) => {
          tr.kvStores[j] = { k, v, rows: sel };
          return base(q, k, v);
        };
      }
      x = decoderLayer(c, x, layer, lora, pos, attend, undefined, mlp);
      tr.flops += layerFlops(c, sel.rows.length, visiblePairs(ownLayout), false, u);
    }
  });
  return x;
}

/**
 * Expert-choice selection at recursion r among the candidates (the previous selection): top-k_r
 * of the gates per sequence (the training targets), and the rows kept — the top-k ones, or in
 * causal mode those the deciding router lets continue.
 *   g, decider (nC) over the candidates → inTopk (nC); keptLocal (n) indices into the candidates
 */
function expertChoiceSelect(
  tr: Trunk,
  r: number,
  cand: Selection,
  g: Float32Array,
  decider: Float32Array,
  rng: Rng | null,
): { inTopk: Uint8Array; keptLocal: Int32Array; sel: Selection } {
  const { m, nr, T, mode } = tr;
  const nC = cand.rows.length;
  const cap = capacityAt(m, nr, r, mode === 'topk' ? tr.step : Number.POSITIVE_INFINITY);
  const inTopk = new Uint8Array(nC);
  let start = 0;
  for (const nb of cand.counts) {
    const k = Math.min(nb, capacityTokens(cap, T));
    if (nb > 0 && (cap >= 1 || k >= nb)) inTopk.fill(1, start, start + nb);
    else if (nb > 0) {
      const scores = new Float32Array(nb);
      for (let i = 0; i < nb; i++) scores[i] = rng ? rng.next() : (g[start + i] as number);
      const { indices } = topk(tensor(scores, [1, nb]), k, 'index');
      for (const i of indices.i32()) inTopk[start + i] = 1;
    }
    start += nb;
  }
  const keeps = r >= tr.maxDepth ? new Uint8Array(nC) : mode === 'topk' ? inTopk : expertKeeps(m, nr, r, decider, tr.threshold);
  return { inTopk, ...keptRows(cand, keeps) };
}

/** Expert-choice: Nr recursions, each choosing among the tokens the previous one took. */
function expertChoiceTrunk(tr: Trunk, h: Tensor, stats: MutableStats): Tensor {
  const { c, m, nr, mode, T, batch, mor } = tr;
  const N = batch * T;
  const rng = m.random_router ? new Rng(0x5eed + tr.step) : null;
  const zThreshold = thresholdLogit(tr.threshold);
  let cand = allRows(batch, T);
  for (let r = 0; r < nr; r++) {
    const nC = cand.rows.length;
    const hc = gatherRows(h, indexTensor(cand.rows)); //                      (nC, D)
    const z = reshape(routerLogits(m, mor.routers[r] as RouterParams, hc), [nC]); // (nC)
    const g = expertGate(m, z); //                                               (nC)
    const auxZ = mor.auxRouters ? reshape(routerLogits(m, mor.auxRouters[r] as RouterParams, hc.detach()), [nC]) : null;
    tr.flops += routerFlops(c, m, auxZ ? 2 * nC : nC);
    const decider = (auxZ ?? z).f32();
    const { inTopk, keptLocal, sel } = expertChoiceSelect(tr, r, cand, g.f32(), decider, rng);

    // routing losses (against the top-k targets) and statistics
    if (mode === 'topk') {
      const target = tensor(Float32Array.from(inTopk), [nC]);
      if (m.causal === 'aux_loss' && m.aux_loss_coef > 0) addLoss(tr, 'aux_bce', mean(bceWithLogits(z, target)), m.aux_loss_coef);
      if (auxZ) addLoss(tr, 'aux_router_bce', mean(bceWithLogits(auxZ, target)), 1);
      if (m.z_loss_coef > 0) addLoss(tr, 'z_loss', mean(mul(z, z)), m.z_loss_coef);
    }
    let agree = 0;
    for (let i = 0; i < nC; i++) if ((continuesAt(decider[i] as number, zThreshold) ? 1 : 0) === inTopk[i]) agree++;
    stats.samplingAccuracy.push(nC > 0 ? agree / nC : 1);
    stats.selectedFraction.push(sel.rows.length / N);
    stats.selectedRows.push(sel.rows);

    if (sel.rows.length > 0) {
      const y = applyBlock(tr, h, r, sel); //                                   (nS, D)
      const gs = gatherRows(reshape(g, [nC, 1]), indexTensor(keptLocal)); //      (nS, 1)
      const selIdx = indexTensor(sel.rows);
      h = scatterAddRows(h, selIdx, expertUpdate(m, y, gatherRows(h, selIdx), gs));
    }
    if (r === nr - 1) {
      const seen = new Uint8Array(T);
      for (const row of sel.rows) seen[(tr.positions[row] as number) % T] = 1;
      stats.deadTokenRatio = seen.reduce((dead, s) => dead + (s === 0 ? 1 : 0), 0) / T;
    }
    cand = sel;
  }
  return h;
}

/** Token-choice: one depth per token from the state entering recursion 1, then Nr recursions. */
function tokenChoiceTrunk(tr: Trunk, h: Tensor, stats: MutableStats): Tensor {
  const { c, m, nr, mode, T, batch, mor } = tr;
  const N = batch * T;
  const h1 = h;
  const z = routerLogits(m, mor.tokenRouter as RouterParams, h1); //          (N, Nr)
  tr.flops += routerFlops(c, m, N);
  const p = tokenChoiceProbs(m, z); //                                       (N, Nr)
  const depth = tokenChoiceDepths(p.f32(), nr, mor.routerBias?.f32() ?? null); // (N)
  if (mode === 'topk' && tr.step < m.balance_warmup_steps) depth.fill(nr - 1);
  for (let t = 0; t < N; t++) depth[t] = Math.min(depth[t] as number, tr.maxDepth - 1);

  const load = new Array<number>(nr).fill(0);
  for (let t = 0; t < N; t++) load[depth[t] as number] = (load[depth[t] as number] as number) + 1 / N;
  const meanLoad = 1 / nr;
  stats.load = load;
  stats.maxVio = (Math.max(...load) - meanLoad) / meanLoad;
  const Q = softmax(z).f32();
  let ent = 0;
  for (let i = 0; i < Q.length; i++) {
    const q = Q[i] as number;
    if (q > 0) ent -= q * Math.log(q);
  }
  stats.entropy = ent / N;

  if (mode === 'topk') {
    if (m.balancing === 'loss' && m.balance_coef > 0) {
      // L_bal = Σ_i P_i · f_i,  P_i = mean_t p_ti,  f_i = Nr · load_i (constant)
      const Pmean = scale(matmul(tensor(new Float32Array(N).fill(1), [1, N]), p), 1 / N); // (1, Nr)
      const f = tensor(Float32Array.from(load, (x) => nr * x), [1, nr]);
      addLoss(tr, 'balance', sum(mul(Pmean, f)), m.balance_coef);
    }
    if (m.z_loss_coef > 0) {
      const lse = logsumexp(z);
      addLoss(tr, 'z_loss', mean(mul(lse, lse)), m.z_loss_coef);
    }
  }

  const pFlat = reshape(p, [N * nr, 1]);
  for (let r = 0; r < nr; r++) {
    const sel = keptRows(allRows(batch, T), Uint8Array.from(depth, (d) => (d >= r ? 1 : 0))).sel;
    stats.selectedFraction.push(sel.rows.length / N);
    stats.samplingAccuracy.push(1);
    stats.selectedRows.push(sel.rows);
    if (sel.rows.length === 0) break;
    const y = applyBlock(tr, h, r, sel); //                                    (nA, D)
    const active: Selection = { rows: sel.rows, counts: [sel.rows.length] };
    const goesOn = Uint8Array.from(sel.rows, (t) => ((depth[t] as number) > r ? 1 : 0));
    const cont = keptRows(active, goesOn);
    const fin = keptRows(active, goesOn.map((x) => 1 - x));
    if (cont.sel.rows.length > 0) {
      // carried on, ungated: h_t ← y_t
      const rows = indexTensor(cont.sel.rows);
      h = scatterAddRows(h, rows, sub(gatherRows(y, indexTensor(cont.keptLocal)), gatherRows(h, rows)));
    }
    if (fin.sel.rows.length > 0) {
      // finished at its depth: h_t ← h¹_t + p_{t,r} · y_t
      const rows = indexTensor(fin.sel.rows);
      const pt = gatherRows(pFlat, indexTensor(Int32Array.from(fin.sel.rows, (t) => t * nr + r))); // (nF, 1)
      const next = tokenChoiceFinish(gatherRows(h1, rows), gatherRows(y, indexTensor(fin.keptLocal)), pt);
      h = scatterAddRows(h, rows, sub(next, gatherRows(h, rows)));
    }
  }
  return h;
}

export interface TrunkOptions {
  readonly mode: RoutingMode;
  /** Optimiser step, for the capacity and balancing warmups. */
  readonly step: number;
  /** Causal expert-choice threshold on sigmoid(z) (default: the config's). */
  readonly threshold?: number;
  /** Test-time depth: recursions after this many select nothing (default Nr). */
  readonly maxDepth?: number;
  /** The forward's MoE side, when the block has MoE layers. */
  readonly moe?: MoeForward | null;
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
  opts: TrunkOptions,
): RoutedTrunkResult {
  const m = c.mor;
  const nr = c.recursion?.num_recursions ?? 0;
  const mor = params.mor;
  if (m === null || mor === null || nr === 0) throw new ShapeError('routedTrunk needs a config with recursion and mor sections');
  const tr: Trunk = {
    c,
    m,
    nr,
    params,
    mor,
    plan,
    positions,
    batch,
    T: h.dim(0) / batch,
    mode: opts.mode,
    step: opts.step,
    threshold: opts.threshold ?? m.threshold,
    maxDepth: opts.maxDepth ?? nr,
    kvStores: new Array<KvStore | null>(plan.blockSize).fill(null),
    moe: opts.moe ?? null,
    flops: 0,
    losses: [],
    terms: {},
  };
  const stats: MutableStats = { selectedFraction: [], samplingAccuracy: [], deadTokenRatio: 0, load: [], maxVio: 0, entropy: 0, selectedRows: [] };
  const out = m.routing === 'expert_choice' ? expertChoiceTrunk(tr, h, stats) : tokenChoiceTrunk(tr, h, stats);
  let routingLoss: Tensor | null = null;
  for (const l of tr.losses) routingLoss = routingLoss === null ? l : add(routingLoss, l);
  return { h: out, routingLoss, terms: tr.terms, stats, flops: tr.flops };
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
