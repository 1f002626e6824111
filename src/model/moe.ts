/**
 * Mixture-of-Experts MLPs in the training forward (MOR_SPEC §10), and the routing decisions the
 * inference runner shares with it.
 *
 *   x (N, D) ──router──▶ s = x·W_eᵀ (N, E)
 *             scores     softmax(s) | σ(s)          (+ bias b for SELECTION only: loss-free balancing)
 *             picks      top-k experts per row       moeSelect
 *             weights    the picks' scores renormalised over the k picks        moeGateWeights
 *             capacity   (training, optional) each expert keeps its ⌈cf·N·k/E⌉ best-scored slots
 *   rows grouped by expert:   y = Σ_shared e(x) + Σ_e scatter(w ⊙ e(gather(x, rows_e)))
 *
 * A token-slot is one (row, pick) pair: N·k of them per layer call. Each expert runs on its own
 * rows only, so compute follows the active experts. Loss terms (topk mode only, as MoR's):
 *   moe_aux  E·Σ_i f_i·P_i   f_i = slots routed to i / (N·k) (constant), P_i = mean_t p_ti
 *   moe_z    mean_t logsumexp(s_t)²
 * where p_t is the router's distribution: softmax(s) or σ(s)/Σσ(s).
 *
 * Causal ('causal' mode, and decoding) never drops: a capacity depends on the other rows of the
 * call, which a token generated alone cannot see.
 */
import { ShapeError } from '../errors.js';
import { Tensor, indexTensor, noGrad, tensor } from '../tensor/tensor.js';
import { add, gatherRows, linear, logsumexp, matmul, mean, mul, reshape, scale, scaleRows, scatterAddRows, sigmoid, softmax, sum, swiglu } from '../tensor/ops.js';
import type { MlpFn } from '../nn/layers.js';
import type { ModelConfig } from './config.js';
import { expertCapacity, type MoeConfig } from './moe-config.js';
import { moeRouterIndex, moeRouterList, type ExpertParams, type MoeLayerParams } from './moe-params.js';
import type { RoutingMode } from './mor.js';

// ---- routing decisions (shared with infer/) ---------------------------------------------------

/** log of the unnormalised router scores: s (softmax) or log σ(s) = −logsumexp([0, −s]) (sigmoid).  s (N, E) → (N, E) */
function logScores(m: MoeConfig, s: Tensor): Tensor {
  if (m.router_func === 'softmax') return s;
  // log σ(s) as a composition of differentiable ops: lay out [0, −s] pairs, logsumexp each pair
  const [n, e] = s.shape as [number, number];
  const M = n * e;
  const odd = indexTensor(Int32Array.from({ length: M }, (_, i) => 2 * i + 1));
  const pairs = scatterAddRows(tensor(new Float32Array(2 * M), [2 * M, 1]), odd, reshape(scale(s, -1), [M, 1])); // (2M, 1)
  return reshape(scale(logsumexp(reshape(pairs, [M, 2])), -1), [n, e]);
}

/** Router scores that rank experts: softmax(s) or σ(s).  s (N, E) → (N, E) */
export function moeScores(m: MoeConfig, s: Tensor): Tensor {
  return m.router_func === 'softmax' ? softmax(s) : sigmoid(s);
}

/**
 * Top-k experts per row by score + bias (the bias steers selection only).
 *   scores (N·E) row-major, bias (E) or null → picks (N·k) row-major: each row's experts by
 *   decreasing biased score, ties to the lower expert id
 */
export function moeSelect(scores: Float32Array, E: number, k: number, bias: Float32Array | null): Int32Array {
  const n = scores.length / E;
  const picks = new Int32Array(n * k);
  const taken = new Uint8Array(E);
  for (let t = 0; t < n; t++) {
    taken.fill(0);
    for (let j = 0; j < k; j++) {
      let best = -1;
      let bv = -Infinity;
      for (let e = 0; e < E; e++) {
        if (taken[e] === 1) continue;
        const v = (scores[t * E + e] as number) + (bias ? (bias[e] as number) : 0);
        if (best < 0 || v > bv) {
          best = e;
          bv = v;
        }
      }
      taken[best] = 1;
      picks[t * k + j] = best;
    }
  }
  return picks;
}

/**
 * Weights of the picked experts: their scores renormalised over the k picks, i.e. softmax over
 * the picks' log-scores (softmax router: exactly top-k of softmax(s) renormalised).
 *   s (N, E) router logits, picks (N·k) → (N·k, 1)
 */
export function moeGateWeights(m: MoeConfig, s: Tensor, picks: Int32Array): Tensor {
  const [n, E] = s.shape as [number, number];
  const k = picks.length / n;
  const flat = reshape(logScores(m, s), [n * E, 1]);
  const at = indexTensor(Int32Array.from(picks, (e, i) => Math.floor(i / k) * E + e));
  return reshape(softmax(reshape(gatherRows(flat, at), [n, k])), [n * k, 1]);
}

/** One SwiGLU expert on its rows: x (n, D) → (n, D). */
export function expertForward(e: ExpertParams, x: Tensor): Tensor {
  return linear(swiglu(linear(x, e.gate), linear(x, e.up)), e.down);
}

/**
 * Slots kept under a per-expert capacity: each expert keeps its `cap` slots of highest biased
 * score (ties to the earlier slot), the rest are dropped.  → keep (N·k) 1/0
 */
export function capacityKeep(picks: Int32Array, scores: Float32Array, E: number, k: number, bias: Float32Array | null, cap: number): Uint8Array {
  const keep = new Uint8Array(picks.length).fill(1);
  const byExpert: number[][] = Array.from({ length: E }, () => []);
  picks.forEach((e, slot) => (byExpert[e] as number[]).push(slot));
  const biased = (slot: number): number => {
    const e = picks[slot] as number;
    return (scores[Math.floor(slot / k) * E + e] as number) + (bias ? (bias[e] as number) : 0);
  };
  for (const slots of byExpert) {
    if (slots.length <= cap) continue;
    const ranked = [...slots].sort((a, b) => biased(b) - biased(a) || a - b);
    for (const slot of ranked.slice(cap)) keep[slot] = 0;
  }
  return keep;
}

/** Row indices (and slot indices) of each expert's kept slots, in row order.  → per expert { rows (n_e), slots (n_e) } */
export function groupByExpert(picks: Int32Array, keep: Uint8Array | null, E: number, k: number): Array<{ rows: Int32Array; slots: Int32Array }> {
  const rows: number[][] = Array.from({ length: E }, () => []);
  const slots: number[][] = Array.from({ length: E }, () => []);
  picks.forEach((e, slot) => {
    if (keep !== null && keep[slot] === 0) return;
    (rows[e] as number[]).push(Math.floor(slot / k));
    (slots[e] as number[]).push(slot);
  });
  return rows.map((r, e) => ({ rows: Int32Array.from(r), slots: Int32Array.from(slots[e] as number[]) }));
}

// ---- statistics -------------------------------------------------------------------------------

/** Raw counts of one router over one or more layer calls (merged across calls and micro-batches). */
export interface MoeRouterCounts {
  /** (E) token-slots routed to each expert (before dropping). */
  readonly slotsPerExpert: Float64Array;
  slots: number;
  dropped: number;
  /** Σ over rows of the router distribution's entropy (nats), and the rows. */
  entropySum: number;
  rows: number;
}

/** The per-router figures the metrics log: load per expert, MaxVio, dropped fraction, entropy. */
export interface MoeRouterSummary {
  readonly layer: number;
  readonly router: number;
  /** Fraction of token-slots routed to each expert. */
  readonly load: number[];
  /** max_i load_i / mean load − 1. */
  readonly maxVio: number;
  readonly droppedFraction: number;
  readonly entropy: number;
}

/** MoE statistics of one forward (or a step's micro-batches): counts per router of moeRouterList. */
export class MoeStats {
  readonly counts: MoeRouterCounts[];
  constructor(readonly config: ModelConfig) {
    const E = config.moe?.num_experts ?? 0;
    this.counts = moeRouterList(config).map(() => ({ slotsPerExpert: new Float64Array(E), slots: 0, dropped: 0, entropySum: 0, rows: 0 }));
  }

  merge(other: MoeStats): void {
    other.counts.forEach((o, i) => {
      const c = this.counts[i] as MoeRouterCounts;
      o.slotsPerExpert.forEach((x, e) => (c.slotsPerExpert[e] = (c.slotsPerExpert[e] as number) + x));
      c.slots += o.slots;
      c.dropped += o.dropped;
      c.entropySum += o.entropySum;
      c.rows += o.rows;
    });
  }

  /** Load fractions per router (empty rows for a router that saw no rows). */
  loads(): number[][] {
    return this.counts.map((c) => Array.from(c.slotsPerExpert, (x) => (c.slots > 0 ? x / c.slots : 0)));
  }

  summary(): MoeRouterSummary[] {
    const list = moeRouterList(this.config);
    const loads = this.loads();
    return this.counts.map((c, i) => {
      const load = loads[i] as number[];
      const meanLoad = 1 / load.length;
      return {
        layer: (list[i] as { layer: number }).layer,
        router: (list[i] as { router: number }).router,
        load,
        maxVio: c.slots > 0 ? Math.max(...load) / meanLoad - 1 : 0,
        droppedFraction: c.slots > 0 ? c.dropped / c.slots : 0,
        entropy: c.rows > 0 ? c.entropySum / c.rows : 0,
      };
    });
  }

  /** Metrics record fields (metrics.jsonl), one array entry per MoE router. */
  metrics(): Record<string, unknown> {
    const s = this.summary();
    return {
      moe_load: s.map((r) => r.load),
      moe_max_vio: s.map((r) => r.maxVio),
      moe_max_vio_mean: s.reduce((a, r) => a + r.maxVio, 0) / Math.max(1, s.length),
      moe_dropped: s.map((r) => r.droppedFraction),
      moe_entropy: s.map((r) => r.entropy),
    };
  }
}

// ---- the MoE MLP of the training forward --------------------------------------------------------

/**
 * The MoE side of one forward: builds each MoE layer's MLP function, accumulates its loss terms
 * and statistics.
 */
export class MoeForward {
  readonly m: MoeConfig;
  readonly losses: Tensor[] = [];
  readonly terms: Record<string, number> = {};
  readonly stats: MoeStats;
  /** The picks (N·k) of every MoE MLP call of this forward, in call order (tests, inspection). */
  readonly selections: Int32Array[] = [];
  /** Router index in moeRouterList of (layer, router). */
  private readonly slotOf = new Map<string, number>();

  constructor(readonly c: ModelConfig, readonly mode: RoutingMode) {
    if (c.moe === null) throw new ShapeError('MoeForward needs a config with a moe section');
    this.m = c.moe;
    this.stats = new MoeStats(c);
    moeRouterList(c).forEach((r, i) => this.slotOf.set(`${r.layer}.${r.router}`, i));
  }

  /** The MLP function of unique layer u at a position of recursion `recursion` (−1 for a unique layer); undefined for a dense layer. */
  mlpFor(layer: MoeLayerParams | null, u: number, recursion: number): MlpFn | undefined {
    if (layer === null) return undefined;
    const r = moeRouterIndex(this.c, u, recursion);
    return (x) => this.forward(layer, r, this.slotOf.get(`${u}.${r}`) as number, x);
  }

  /**
   * Forward FLOPs the accounting (flops.ts: every row runs its k experts) counted but capacity
   * dropping skipped: 2 per parameter of each dropped slot's expert.
   */
  droppedFlops(): number {
    const dropped = this.stats.counts.reduce((a, r) => a + r.dropped, 0);
    return 2 * 3 * this.c.hidden_size * this.m.expert_intermediate_size * dropped;
  }

  /** The weighted sum of this forward's MoE losses, or null. */
  loss(): Tensor | null {
    let total: Tensor | null = null;
    for (const l of this.losses) total = total === null ? l : add(total, l);
    return total;
  }

  private addLoss(name: string, t: Tensor, coef: number): void {
    this.terms[name] = (this.terms[name] ?? 0) + t.item();
    if (coef > 0) this.losses.push(scale(t, coef));
  }

  /** x (N, D) normed MLP input → (N, D) */
  private forward(layer: MoeLayerParams, r: number, slot: number, x: Tensor): Tensor {
    const m = this.m;
    const [n, d] = x.shape as [number, number];
    const E = m.num_experts;
    const k = m.top_k;
    const router = layer.routers[r];
    if (router === undefined) throw new ShapeError(`MoE layer has no router ${r}`);
    const s = linear(x, router.w); //                                             (N, E)
    const scores = noGrad(() => moeScores(m, s)).f32(); //                        (N·E)
    const bias = router.bias?.f32() ?? null;
    const picks = moeSelect(scores, E, k, bias); //                               (N·k)
    this.selections.push(picks);
    const dropping = this.mode === 'topk' && m.capacity_factor !== null;
    const keep = dropping ? capacityKeep(picks, scores, E, k, bias, expertCapacity(m, n)) : null;
    const w = moeGateWeights(m, s, picks); //                                     (N·k, 1)

    let out = layer.shared ? expertForward(layer.shared, x) : tensor(new Float32Array(n * d), [n, d]); // (N, D)
    groupByExpert(picks, keep, E, k).forEach((g, e) => {
      if (g.rows.length === 0) return;
      const rows = indexTensor(g.rows);
      const y = expertForward(layer.experts[e] as ExpertParams, gatherRows(x, rows)); //      (n_e, D)
      out = scatterAddRows(out, rows, scaleRows(y, gatherRows(w, indexTensor(g.slots)))); // (N, D)
    });

    // statistics: slots per expert before dropping, drops, entropy of the router distribution
    const counts = this.stats.counts[slot] as MoeRouterCounts;
    const perExpert = new Float64Array(E);
    for (const e of picks) perExpert[e] = (perExpert[e] as number) + 1;
    perExpert.forEach((x, e) => (counts.slotsPerExpert[e] = (counts.slotsPerExpert[e] as number) + x));
    counts.slots += n * k;
    counts.dropped += keep === null ? 0 : keep.reduce((a, x) => a + (1 - x), 0);
    counts.rows += n;
    for (let t = 0; t < n; t++) {
      let z = 0;
      for (let e = 0; e < E; e++) z += scores[t * E + e] as number;
      for (let e = 0; e < E; e++) {
        const p = (scores[t * E + e] as number) / z;
        if (p > 0) counts.entropySum -= p * Math.log(p);
      }
    }

    if (this.mode === 'topk' && n > 0) {
      if (m.balancing === 'aux_loss') {
        // E·Σ_i f_i·P_i with f constant: gradient flows through P only
        const P = softmax(logScores(m, s)); //                                     (N, E)
        const Pmean = scale(matmul(tensor(new Float32Array(n).fill(1), [1, n]), P), 1 / n); // (1, E)
        const f = tensor(Float32Array.from(perExpert, (x) => x / (n * k)), [1, E]);
        this.addLoss('moe_aux', scale(sum(mul(Pmean, f)), E), m.balance_coef);
      }
      if (m.z_loss_coef > 0) {
        const lse = logsumexp(s); //                                               (N)
        this.addLoss('moe_z_loss', mean(mul(lse, lse)), m.z_loss_coef);
      }
    }
    return out;
  }
}

/**
 * Loss-free balancing: after each optimiser step, every router's bias moves toward balance,
 * b_i += u · sign(mean load − load_i), with the loads of the step just taken.
 */
export function updateMoeBias(c: ModelConfig, layers: ReadonlyArray<{ readonly moe: MoeLayerParams | null }>, stats: MoeStats): void {
  const m = c.moe;
  if (m === null || m.balancing !== 'loss_free') return;
  const loads = stats.loads();
  moeRouterList(c).forEach((r, i) => {
    const c0 = stats.counts[i] as MoeRouterCounts;
    const bias = layers[r.layer]?.moe?.routers[r.router]?.bias;
    if (!bias || c0.slots === 0) return;
    const load = loads[i] as number[];
    const meanLoad = 1 / load.length;
    const b = bias.f32();
    for (let e = 0; e < b.length; e++) b[e] = (b[e] as number) + m.bias_update_rate * Math.sign(meanLoad - (load[e] as number));
  });
}
