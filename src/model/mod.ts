/**
 * Mixture-of-Depths in the training forward (MOR_SPEC §11, Raposo et al. 2024): a vanilla stack
 * of L layers in which the routed layers (mod-config.ts routedLayers: 1, 3, 5, … by default)
 * process only some tokens.
 *
 *   full layer l:     h ← Layer_l(h)                                       every row
 *   routed layer l:   z = w_l·h (N)     g = α·f(z)                          (routing.ts)
 *                     S = top-k of g (= of z) per sequence, k = max(1, ⌊capacity·T⌋) (training)
 *                      or {t : sigmoid(z_t) > threshold}                      ('causal', as decoding)
 *                     h[S] ← h[S] + g[S]·(Layer_l(h[S]) − h[S])            rows of S only, attending
 *                                                                          among themselves at
 *                                                                          their original positions
 *                     h[¬S] unchanged (the layer is identity for them)
 *
 * It is MoR's expert-choice recursion with one layer instead of a shared block and no hierarchy
 * (every routed layer chooses among all tokens), so it is built from the same pieces: the
 * router, gate and update of routing.ts, the row selection of mor.ts, nn/ decoderLayer over the
 * gathered rows, and the FLOPs of flops.ts over the rows and attention pairs actually computed.
 * Training adds the auxiliary BCE of z against top-k membership (× aux_loss_coef), which is what
 * lets decoding decide per token, causally.
 */
import { ShapeError } from '../errors.js';
import { Tensor, indexTensor, tensor } from '../tensor/tensor.js';
import { add, bceWithLogits, gatherRows, mean, reshape, scale, scatterAddRows } from '../tensor/ops.js';
import { causalSegmentsLayout, decoderLayer, selfAttend } from '../nn/layers.js';
import type { ModelConfig } from './config.js';
import type { ModConfig } from './mod-config.js';
import { routerIndexOfLayer } from './mod-config.js';
import type { ModelParams, RouterParams } from './params.js';
import { layerFlops, modRouterFlops } from './flops.js';
import { allRows, gatherPositions, keptRows, visiblePairs, type RoutingMode, type RoutingStats } from './mor.js';
import { capacityTokens, continuesAt, expertGate, expertUpdate, routerLogits, thresholdKeeps, thresholdLogit, topkMembership } from './routing.js';

/**
 * MoD's update is always on the layer's residual delta f(x) = Layer(x) − x (the paper's
 * x + r·f(x)): MoR's 'delta' gating. With 'output' gating a token would lose its own residual.
 */
export const MOD_GATING = Object.freeze({ gating: 'delta' as const });

export interface ModStackOptions {
  readonly mode: RoutingMode;
  /** Causal mode: run a routed layer iff sigmoid(z) > threshold (default: the config's). */
  readonly threshold?: number;
}

export interface ModStackResult {
  h: Tensor;
  /** aux_loss_coef × Σ over routed layers of the mean BCE (top-k mode); null when there is none. */
  routingLoss: Tensor | null;
  /** Unweighted loss terms: aux_bce (Σ over routed layers of the mean BCE). */
  terms: Record<string, number>;
  /**
   * Per ROUTED LAYER (in layer order) where MoR reports per recursion: selectedFraction,
   * samplingAccuracy (threshold decision vs top-k membership over all rows), selectedRows.
   * deadTokenRatio: the fraction of rows that no routed layer processed. load/maxVio/entropy unused.
   */
  stats: RoutingStats;
  /** Forward FLOPs of the routed layers and their routers as executed (full layers are the caller's). */
  flops: number;
}

/**
 * The layer stack of a MoD model: full layers through `fullLayer` (the caller's vanilla layer,
 * which counts its own FLOPs), routed layers here.
 *   h (N, D) with N = B·T rows, positions (N) → h (N, D)
 */
export function modStack(
  c: ModelConfig,
  params: ModelParams,
  h: Tensor,
  positions: Int32Array,
  batch: number,
  fullLayer: (x: Tensor, l: number) => Tensor,
  opts: ModStackOptions,
): ModStackResult {
  const m: ModConfig | null = c.mod;
  const routers = params.modRouters;
  if (m === null || routers === null) throw new ShapeError('modStack needs a config with a mod section');
  const N = h.dim(0);
  const T = N / batch;
  const k = capacityTokens(m.capacity, T);
  const threshold = opts.threshold ?? m.threshold;
  const zThreshold = thresholdLogit(threshold);
  const routerOf = routerIndexOfLayer(m, c.num_hidden_layers);
  const stats: { -readonly [K in keyof RoutingStats]: RoutingStats[K] } = {
    selectedFraction: [], samplingAccuracy: [], deadTokenRatio: 0, load: [], maxVio: 0, entropy: 0, selectedRows: [],
  };
  const processed = new Uint8Array(N); // rows some routed layer ran
  let flops = 0;
  let auxSum: Tensor | null = null;
  let auxValue = 0;

  for (let l = 0; l < c.num_hidden_layers; l++) {
    const ri = routerOf[l] as number;
    if (ri < 0) {
      h = fullLayer(h, l);
      continue;
    }
    const layer = params.layers[l];
    if (layer === undefined) throw new ShapeError(`no layer ${l}`);
    const z = reshape(routerLogits(m, routers[ri] as RouterParams, h), [N]); //  (N)
    const g = expertGate(m, z); //                                            (N)
    flops += modRouterFlops(c, N);
    const zv = z.f32();
    // ranked by z: every gate is increasing in z (α > 0), so the order is g's, without the ties
    // a saturated sigmoid or tanh would make in float32
    const inTopk = topkMembership(zv, batch, T, k); //                        (N) the training targets
    const keeps = opts.mode === 'topk' ? inTopk : thresholdKeeps(zv, threshold);
    const { sel } = keptRows(allRows(batch, T), keeps);

    if (opts.mode === 'topk' && m.aux_loss_coef > 0) {
      const bce = mean(bceWithLogits(z, tensor(Float32Array.from(inTopk), [N])));
      auxValue += bce.item();
      auxSum = auxSum === null ? bce : add(auxSum, bce);
    }
    let agree = 0;
    for (let i = 0; i < N; i++) if ((continuesAt(zv[i] as number, zThreshold) ? 1 : 0) === inTopk[i]) agree++;
    stats.samplingAccuracy.push(agree / N);
    stats.selectedFraction.push(sel.rows.length / N);
    stats.selectedRows.push(sel.rows);
    for (const row of sel.rows) processed[row] = 1;

    if (sel.rows.length > 0) {
      const idx = indexTensor(sel.rows);
      const x = gatherRows(h, idx); //                                          (n, D)
      const posSel = gatherPositions(positions, sel.rows);
      const layout = causalSegmentsLayout(c, sel.counts, posSel);
      const y = decoderLayer(c, x, layer, null, indexTensor(posSel), selfAttend(layout)); // (n, D)
      const gs = gatherRows(reshape(g, [N, 1]), idx); //                        (n, 1)
      h = scatterAddRows(h, idx, expertUpdate(MOD_GATING, y, x, gs));
      flops += layerFlops(c, sel.rows.length, visiblePairs(layout));
    }
  }
  stats.deadTokenRatio = processed.reduce((dead, p) => dead + (p === 0 ? 1 : 0), 0) / N;
  const terms: Record<string, number> = auxSum === null ? {} : { aux_bce: auxValue };
  const routingLoss = auxSum === null ? null : scale(auxSum, m.aux_loss_coef);
  return { h, routingLoss, terms, stats, flops };
}
