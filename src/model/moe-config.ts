/**
 * The Mixture-of-Experts section of the config (MOR_SPEC §10, "MoR × MoE"): which layers' SwiGLU
 * MLP becomes E routed experts plus always-on shared experts, how tokens pick experts and how
 * the load is balanced.
 *
 * Defaults: softmax router (top-k of softmax renormalised over the picks), auxiliary balancing
 * loss E·Σ f_i·P_i with coefficient 0.01, no z-loss, every layer, one router per MoE layer,
 * dropless. `expert_intermediate_size` has no default: a fine-grained expert's width is a
 * choice the config must make.
 */
import { ConfigError } from './config-error.js';

export type MoeRouterFunc = 'softmax' | 'sigmoid';
export type MoeBalancing = 'aux_loss' | 'loss_free' | 'none';
export type MoePlacement = 'all' | 'block' | 'unique';

export interface MoeConfig {
  /** E: routed experts per MoE layer. */
  readonly num_experts: number;
  /** k: routed experts each token uses (1 ≤ k ≤ E). */
  readonly top_k: number;
  /** Width of each expert's SwiGLU (gate/up (I_e, D), down (D, I_e)). */
  readonly expert_intermediate_size: number;
  /** Always-on experts of the same width, run on every row (0 = none). */
  readonly num_shared_experts: number;
  /** softmax: weights = softmax over the k picked logits; sigmoid: σ(s) renormalised over the picks. */
  readonly router_func: MoeRouterFunc;
  /** aux_loss: + balance_coef·E·Σ f_i·P_i; loss_free: selection bias b_i; none. */
  readonly balancing: MoeBalancing;
  readonly balance_coef: number;
  /** loss_free: after each optimiser step b_i += u·sign(mean_load − load_i). */
  readonly bias_update_rate: number;
  /** Router z-loss coefficient: mean(logsumexp(s)²). */
  readonly z_loss_coef: number;
  /** Which layers are MoE: every layer, the recursion's shared block only, or only the unique (non-shared) layers. */
  readonly placement: MoePlacement;
  /** Block MoE layers get one router per recursion over the same experts (a token may pick other experts at each depth). */
  readonly router_per_recursion: boolean;
  /** null: dropless. Else each expert takes at most ⌈cf·N·k/E⌉ of a layer call's N rows (training only). */
  readonly capacity_factor: number | null;
}

const DEFAULTS: Omit<MoeConfig, 'expert_intermediate_size'> = Object.freeze({
  num_experts: 8,
  top_k: 2,
  num_shared_experts: 0,
  router_func: 'softmax',
  balancing: 'aux_loss',
  balance_coef: 0.01,
  bias_update_rate: 0.001,
  z_loss_coef: 0,
  placement: 'all',
  router_per_recursion: false,
  capacity_factor: null,
});

const KEYS = [...Object.keys(DEFAULTS), 'expert_intermediate_size'];

const ENUMS: Record<string, readonly string[]> = {
  router_func: ['softmax', 'sigmoid'],
  balancing: ['aux_loss', 'loss_free', 'none'],
  placement: ['all', 'block', 'unique'],
};

/** The recursion facts placement needs (a ModelConfig's recursion section satisfies it). */
export interface MoeLayout {
  readonly num_hidden_layers: number;
  readonly recursion: { readonly num_recursions: number; readonly sharing: string; readonly lora_rank: number } | null;
}

/**
 * Whether each unique layer (by unique-layer id, as in sharing.ts) is shared across recursions:
 * every layer of a recursive model except the first and last of the middle strategies; none of
 * a vanilla model's.
 */
export function sharedUniqueLayers(c: MoeLayout): boolean[] {
  const rec = c.recursion;
  const L = c.num_hidden_layers;
  if (rec === null) return new Array<boolean>(L).fill(false);
  const middle = rec.sharing === 'middle_cycle' || rec.sharing === 'middle_sequence';
  const K = (L - (middle ? 2 : 0)) / rec.num_recursions;
  const shared = new Array<boolean>(K).fill(true);
  return middle ? [false, ...shared, false] : shared;
}

/** Which unique layers are MoE layers under a placement (empty set = none). */
export function moeLayerMask(placement: MoePlacement, c: MoeLayout): boolean[] {
  const shared = sharedUniqueLayers(c);
  if (placement === 'all') return shared.map(() => true);
  if (placement === 'block') return shared;
  return shared.map((s) => !s);
}

/** Validate the `moe` section (raw JSON) for a model of this shape. */
export function validateMoeConfig(raw: unknown, c: MoeLayout): MoeConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('moe must be an object or null');
  const r = raw as Record<string, unknown>;
  for (const key of Object.keys(r)) {
    if (!KEYS.includes(key)) throw new ConfigError(`unknown key 'moe.${key}' (known: ${KEYS.join(', ')})`);
  }
  const merged = { ...DEFAULTS, ...r } as Record<string, unknown>;
  const posInt = (key: string): number => {
    const v = merged[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ConfigError(`moe.${key} must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  };
  if (merged['expert_intermediate_size'] === undefined) throw new ConfigError('moe.expert_intermediate_size is required (the width of each expert)');
  const E = posInt('num_experts');
  const k = posInt('top_k');
  posInt('expert_intermediate_size');
  if (k > E) throw new ConfigError(`moe.top_k (${k}) must not exceed moe.num_experts (${E})`);
  const shared = merged['num_shared_experts'];
  if (typeof shared !== 'number' || !Number.isInteger(shared) || shared < 0) {
    throw new ConfigError(`moe.num_shared_experts must be an integer ≥ 0, got ${JSON.stringify(shared)}`);
  }
  for (const [key, allowed] of Object.entries(ENUMS)) {
    if (!allowed.includes(merged[key] as string)) throw new ConfigError(`moe.${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(merged[key])}`);
  }
  for (const key of ['balance_coef', 'bias_update_rate', 'z_loss_coef']) {
    const v = merged[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new ConfigError(`moe.${key} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  }
  if (typeof merged['router_per_recursion'] !== 'boolean') throw new ConfigError(`moe.router_per_recursion must be true or false, got ${JSON.stringify(merged['router_per_recursion'])}`);
  const cf = merged['capacity_factor'];
  if (cf !== null && (typeof cf !== 'number' || !Number.isFinite(cf) || cf <= 0)) {
    throw new ConfigError(`moe.capacity_factor must be null (dropless) or a number > 0, got ${JSON.stringify(cf)}`);
  }
  const placement = merged['placement'] as MoePlacement;
  const mask = moeLayerMask(placement, c);
  if (!mask.some((x) => x)) {
    const why = c.recursion === null ? 'a vanilla model has no recursion block' : `${c.recursion.sharing} sharing has no unique layers`;
    throw new ConfigError(`moe.placement '${placement}' selects no layer: ${why}`);
  }
  if (merged['router_per_recursion'] === true && !mask.some((m, u) => m && sharedUniqueLayers(c)[u])) {
    throw new ConfigError('moe.router_per_recursion needs an MoE layer in the recursion block (placement all or block on a recursive model)');
  }
  if ((c.recursion?.lora_rank ?? 0) > 0) {
    throw new ConfigError('moe with recursion.lora_rank > 0 is not supported: the relaxation LoRA adapts the dense MLP matrices that experts replace');
  }
  return Object.freeze(merged) as unknown as MoeConfig;
}

/** Per-expert capacity of a layer call over N rows: ⌈cf·N·k/E⌉, or N·k (no limit) when dropless. */
export function expertCapacity(m: MoeConfig, rows: number): number {
  if (m.capacity_factor === null) return rows * m.top_k;
  return Math.ceil((m.capacity_factor * rows * m.top_k) / m.num_experts);
}
