/**
 * FLOPs accounting (MOR_SPEC §6, the paper's appendix):
 *   forward FLOPs = 2 × (parameters of every linear map a token passes through) per token
 *                 + attention 2·2·k_ctx·HD·H per token per layer, over the causal triangle only
 *   training      = 3 × forward
 * The embedding lookup costs nothing; the output head is a linear map (V·D), the same FLOPs
 * whether it is tied to the embedding or its own lm_head.weight.
 */
import { headDim, type ModelConfig } from './config.js';
import { LAYER_MATRICES, loraRankOf, matrixShape } from './params.js';
import { targetCapacity, type MorConfig } from './mor-config.js';
import { capacityTokens } from './routing.js';
import { layerPlan } from './sharing.js';
import { isMoeLayer, moeMlpParamsActive } from './moe-params.js';
import { routerIndexOfLayer } from './mod-config.js';

/**
 * Linear-map parameters one layer position applies to a token (including its LoRA). For MoE
 * unique layer `u` only the active experts count: one router, top-k experts, the shared ones.
 */
export function linearParamsPerLayer(c: ModelConfig, u = -1): number {
  const moe = u >= 0 && isMoeLayer(c, u);
  let n = 0;
  for (const m of LAYER_MATRICES) {
    if (moe && (m === 'gate_proj' || m === 'up_proj' || m === 'down_proj')) continue;
    const [out, inp] = matrixShape(c, m);
    n += out * inp + loraRankOf(c, m) * (out + inp);
  }
  return moe ? n + moeMlpParamsActive(c) : n;
}

/** Parameters of a layer's k and v projections (without LoRA): what a row that reads shared K/V skips. */
export function kvProjectionParams(c: ModelConfig): number {
  return 2 * c.hidden_size * c.num_key_value_heads * headDim(c);
}

/**
 * Forward FLOPs of one layer position over `rows` token rows whose attention computes
 * `visiblePairs` (query, key) pairs: 2 per linear-map parameter per row, QKᵀ and P·V 2 each per
 * pair per head dim per head. `skipKv`: the rows read shared K/V and skip the k/v projections.
 */
export function layerFlops(c: ModelConfig, rows: number, visiblePairs: number, skipKv = false, u = -1): number {
  const kv = skipKv ? kvProjectionParams(c) : 0;
  return 2 * rows * (linearParamsPerLayer(c, u) - kv) + 4 * visiblePairs * headDim(c) * c.num_attention_heads;
}

/** Forward FLOPs of a router over `rows` rows: linear d→out, or MLP d→2d→out (out = 1 expert-choice, Nr token-choice). */
export function routerFlops(c: ModelConfig, m: MorConfig, rows: number): number {
  const d = c.hidden_size;
  const out = m.routing === 'expert_choice' ? 1 : (c.recursion?.num_recursions ?? 1);
  return rows * (m.router === 'mlp' ? 2 * (d * 2 * d + 2 * d * out) : 2 * d * out);
}

/** Forward FLOPs of MoD's linear routers (D → 1) over `rows` rows (every row of a routed layer is scored). */
export function modRouterFlops(c: ModelConfig, rows: number): number {
  return 2 * rows * c.hidden_size;
}

/**
 * Tokens each recursion processes in a sequence of T under MoR: expert-choice max(1, ⌊cap_r·T⌋)
 * at the target capacities; token-choice assuming balanced depths, T·(Nr − r)/Nr.
 */
export function tokensPerRecursion(c: ModelConfig, T: number): number[] {
  const nr = c.recursion?.num_recursions ?? 0;
  const m = c.mor;
  return Array.from({ length: nr }, (_, r) => {
    if (m === null) return T;
    if (m.routing === 'expert_choice') return capacityTokens(targetCapacity(m, nr, r), T);
    return (T * (nr - r)) / nr;
  });
}

/**
 * Forward FLOPs for one sequence of `seqLen` tokens. Without routing every token passes every
 * unrolled position; with MoR each recursion counts at its own token count k_r (attention over
 * its k_r² causal pairs, or against the recursion-1 keys under KV sharing) plus the routers.
 */
export function forwardFlopsPerSequence(c: ModelConfig, seqLen: number): number {
  const T = seqLen;
  const head = 2 * T * c.vocab_size * c.hidden_size;
  const causalPairs = (T * (T + 1)) / 2;
  if (c.mod !== null) {
    // MoD: a routed layer runs its k = max(1, ⌊capacity·T⌋) selected rows, causal among themselves
    const k = Math.min(T, capacityTokens(c.mod.capacity, T));
    const routed = routerIndexOfLayer(c.mod, c.num_hidden_layers);
    let total = head;
    for (const i of routed) total += i < 0 ? layerFlops(c, T, causalPairs) : layerFlops(c, k, (k * (k + 1)) / 2) + modRouterFlops(c, T);
    return total;
  }
  const m = c.mor;
  const plan = layerPlan(c);
  const L = c.num_hidden_layers;
  if (m === null || c.recursion === null) {
    let total = head;
    for (let l = 0; l < L; l++) total += layerFlops(c, T, causalPairs, false, plan.uniqueOf[l] as number);
    return total;
  }
  const ends = plan.hasUniqueEnds ? layerFlops(c, T, causalPairs, false, 0) + layerFlops(c, T, causalPairs, false, plan.uniqueOf[L - 1] as number) : 0;
  let total = head + ends;
  const k = tokensPerRecursion(c, T);
  k.forEach((kr, r) => {
    const share = m.kv_strategy === 'share' && r > 0;
    const pairs = share ? (kr * (T + 1)) / 2 : (kr * (kr + 1)) / 2;
    for (const l of plan.depthSteps[r] as Int32Array) total += layerFlops(c, kr, pairs, share, plan.uniqueOf[l] as number);
    // expert-choice routes recursion r's candidates (the tokens of r − 1); token-choice routes once
    const routed = m.routing === 'expert_choice' ? (r === 0 ? T : (k[r - 1] as number)) : r === 0 ? T : 0;
    total += routerFlops(c, m, routed);
  });
  return total;
}

/** Forward FLOPs per token, averaged over a sequence of `seqLen`. */
export function forwardFlopsPerToken(c: ModelConfig, seqLen = c.max_position_embeddings): number {
  return forwardFlopsPerSequence(c, seqLen) / seqLen;
}

/** Training FLOPs per token (forward + backward = 3 × forward). */
export function trainFlopsPerToken(c: ModelConfig, seqLen = c.max_position_embeddings): number {
  return 3 * forwardFlopsPerToken(c, seqLen);
}
