/**
 * The Mixture-of-Depths section of the config (MOR_SPEC §11, Raposo et al. 2024): a vanilla
 * (non-recursive) model in which some layers route. Each routed layer has a linear router
 * z = w·x (D → 1); training keeps the top-k of each sequence (k = max(1, ⌊capacity·T⌋)), the
 * selected rows run the layer among themselves and take x ← x + g·f(x), f(x) the layer's
 * residual delta, g = α·gate(z); the others skip the layer. An auxiliary BCE teaches z to
 * predict top-k membership, so inference can decide per token: run the layer iff
 * sigmoid(z) > threshold.
 *
 * Which layers route: l = first_routed_layer + i·route_every (i = 0, 1, …). The defaults (1, 2)
 * are the paper's best setting, "every other block", after a full first layer: layers 1, 3, 5, …
 * route and 0, 2, 4, … see every token. Layer 0 never routes (first_routed_layer ≥ 1): its router
 * would see bare embeddings (a ranking by token identity alone), and its K/V stream holds every
 * token of a sequence, which decoding reads as the sequence's length.
 */
import { ConfigError } from './config-error.js';
import type { ModelConfig } from './config.js';

/** The gate of the update: α·sigmoid(z), α·tanh(z) or α·z (the MoD paper's raw router output). */
export type ModGateFunc = 'sigmoid' | 'tanh' | 'none';

export interface ModConfig {
  /** Fraction of each sequence a routed layer processes in training (top-k, k = max(1, ⌊capacity·T⌋)). */
  readonly capacity: number;
  /** Distance between routed layers (2 = every other layer). */
  readonly route_every: number;
  /** Index of the first routed layer (≥ 1: layer 0 always runs on every token). */
  readonly first_routed_layer: number;
  /** Gate function f of g = α·f(z). */
  readonly router_func: ModGateFunc;
  /** Gate scale α. */
  readonly alpha: number;
  /** Coefficient of the auxiliary BCE (router logits vs top-k membership), summed over routed layers. */
  readonly aux_loss_coef: number;
  /** Inference (causal) decision: a token runs a routed layer iff sigmoid(z) > threshold. */
  readonly threshold: number;
}

/**
 * Defaults. The gate is the paper's raw router output, g = z (router_func 'none', α 1). The
 * squashed alternatives (α·sigmoid(z), as MoR's default, or α·tanh(z)) keep g bounded, but in a
 * 300-step tiny-mod run the raw gate was both better (validation NLL 4.18 vs 4.25) and better at
 * the causal decision (threshold vs top-k agreement 0.97–0.98 vs 0.93–0.94): its gradient
 * dg/dz = 1 lets the LM loss push apart the logits of the tokens a layer helps, which is what
 * the threshold reads, where sigmoid's ≤ 1/4 does so weakly. The ranking is the same for every
 * choice (each gate is increasing in z), and z = 0 is the 0.5 threshold. The aux coefficient
 * is MoR's (§3, 0.001).
 */
export const MOD_DEFAULTS: ModConfig = Object.freeze({
  capacity: 0.125,
  route_every: 2,
  first_routed_layer: 1,
  router_func: 'none',
  alpha: 1,
  aux_loss_coef: 0.001,
  threshold: 0.5,
});

const GATE_FUNCS: readonly ModGateFunc[] = ['sigmoid', 'tanh', 'none'];

/** Validate the `mod` section (raw JSON) of a model with `numLayers` layers; a frozen ModConfig. */
export function validateModConfig(raw: unknown, numLayers: number): ModConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('mod must be an object or null');
  const r = raw as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    if (!Object.hasOwn(MOD_DEFAULTS, key)) throw new ConfigError(`unknown key 'mod.${key}' (known: ${Object.keys(MOD_DEFAULTS).join(', ')})`);
  }
  const merged = { ...MOD_DEFAULTS, ...r } as Record<string, unknown>;
  const cap = merged['capacity'];
  // capacity 1 would be a vanilla layer with a gate; training top-k and the causal threshold
  // would then disagree by construction (the threshold cannot say "everyone")
  if (typeof cap !== 'number' || !(cap > 0 && cap < 1)) throw new ConfigError(`mod.capacity must be a number in (0, 1), got ${JSON.stringify(cap)}`);
  const every = merged['route_every'];
  if (typeof every !== 'number' || !Number.isInteger(every) || every < 1) {
    throw new ConfigError(`mod.route_every must be an integer ≥ 1, got ${JSON.stringify(every)}`);
  }
  const first = merged['first_routed_layer'];
  if (typeof first !== 'number' || !Number.isInteger(first) || first < 1 || first >= numLayers) {
    throw new ConfigError(
      `mod.first_routed_layer must be an integer in [1, ${numLayers - 1}] (layer 0 runs every token; num_hidden_layers = ${numLayers}), got ${JSON.stringify(first)}`,
    );
  }
  if (!GATE_FUNCS.includes(merged['router_func'] as ModGateFunc)) {
    throw new ConfigError(`mod.router_func must be one of ${GATE_FUNCS.join(', ')}, got ${JSON.stringify(merged['router_func'])}`);
  }
  const alpha = merged['alpha'];
  if (typeof alpha !== 'number' || !(alpha > 0) || !Number.isFinite(alpha)) throw new ConfigError(`mod.alpha must be a number > 0, got ${JSON.stringify(alpha)}`);
  const aux = merged['aux_loss_coef'];
  if (typeof aux !== 'number' || !(aux >= 0) || !Number.isFinite(aux)) throw new ConfigError(`mod.aux_loss_coef must be a number ≥ 0, got ${JSON.stringify(aux)}`);
  const th = merged['threshold'];
  if (typeof th !== 'number' || !(th > 0 && th < 1)) throw new ConfigError(`mod.threshold must be in (0, 1), got ${JSON.stringify(th)}`);
  return Object.freeze(merged) as unknown as ModConfig;
}

/** The routed layers of a model with `numLayers` layers, ascending. */
export function routedLayers(m: ModConfig, numLayers: number): number[] {
  const out: number[] = [];
  for (let l = m.first_routed_layer; l < numLayers; l += m.route_every) out.push(l);
  return out;
}

/**
 * (L) index of each layer among the routed layers (its router), or −1 for a full layer; all −1
 * without a MoD section.
 */
export function routerIndexOfLayer(m: ModConfig | null, numLayers: number): Int32Array {
  const idx = new Int32Array(numLayers).fill(-1);
  if (m !== null) routedLayers(m, numLayers).forEach((l, i) => (idx[l] = i));
  return idx;
}

/**
 * The default router threshold of a model whose routers decide per token by sigmoid(z) >
 * threshold — expert-choice MoR (`mor.threshold`) or MoD (`mod.threshold`) — else null (no such
 * router: token-choice, plain recursive, vanilla). What `--threshold` and a request's threshold move.
 */
export function routerThreshold(c: Pick<ModelConfig, 'mor' | 'mod'>): number | null {
  if (c.mod !== null) return c.mod.threshold;
  return c.mor?.routing === 'expert_choice' ? c.mor.threshold : null;
}
