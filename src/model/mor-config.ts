/**
 * The Mixture-of-Recursions section of the config (MOR_SPEC §3–§5): which routing, its router,
 * gates, capacities, auxiliary losses and KV strategy. Defaults are the authors' final design
 * for expert-choice (linear router, sigmoid, α 0.1, auxiliary BCE 0.001, recursion-wise KV
 * caching) and the paper's defaults for token-choice (softmax, α 1, balancing loss 0.1,
 * z-loss 1e-5).
 */
import { ConfigError } from './config-error.js';

export type Routing = 'expert_choice' | 'token_choice';
export type RouterArch = 'linear' | 'mlp';
export type RouterFunc = 'sigmoid' | 'tanh' | 'none' | 'softmax';
export type Gating = 'output' | 'delta';
export type CausalDecision = 'aux_loss' | 'aux_router';
export type Balancing = 'loss' | 'loss_free' | 'none';
export type KvStrategy = 'recursion' | 'share';

export interface MorConfig {
  readonly routing: Routing;
  /** linear d→1 (expert) / d→Nr (token), or MLP d→2d→GELU→out; no bias. */
  readonly router: RouterArch;
  /** Expert: sigmoid | tanh | none. Token: softmax | sigmoid. */
  readonly router_func: RouterFunc;
  /** Gate scale α (expert default 0.1; token 1 with softmax, 0.1 with sigmoid). */
  readonly alpha: number;
  /** Router input temperature: z = router(h / temperature). */
  readonly temperature: number;
  /** Expert: fraction of the sequence each recursion keeps; null = (Nr − r + 1)/Nr. */
  readonly capacities: readonly number[] | null;
  /** Expert: anneal capacities from 1 to the target over this many steps (0 = off). */
  readonly capacity_warmup_steps: number;
  /** Expert: h ← h + g·y ('output', the authors' code) or h + g·(y − h) ('delta', the paper). */
  readonly gating: Gating;
  /** Expert: what decides at inference — the main router (trained with the aux BCE) or an auxiliary router. */
  readonly causal: CausalDecision;
  /** Expert: coefficient of the auxiliary BCE on the main router (aux_loss). */
  readonly aux_loss_coef: number;
  /** Expert: learning-rate multiplier of the auxiliary router's parameter group. */
  readonly aux_router_lr_scale: number;
  /** Inference threshold on sigmoid(z) for expert-choice. */
  readonly threshold: number;
  /** z-loss coefficient: expert mean(z²), token mean(logsumexp(z)²). */
  readonly z_loss_coef: number;
  /** Expert: rank tokens by uniform noise instead of the router (baseline). */
  readonly random_router: boolean;
  /** Token: balancing loss, loss-free bias, or none. */
  readonly balancing: Balancing;
  readonly balance_coef: number;
  /** Token, loss-free: bias step u after each optimiser step. */
  readonly bias_update_rate: number;
  /** Token: force every token to depth Nr for this many steps. */
  readonly balance_warmup_steps: number;
  /** Recursion-wise KV caching, or recursive KV sharing from recursion 1. */
  readonly kv_strategy: KvStrategy;
}

const EXPERT_DEFAULTS: MorConfig = Object.freeze({
  routing: 'expert_choice',
  router: 'linear',
  router_func: 'sigmoid',
  alpha: 0.1,
  temperature: 1,
  capacities: null,
  capacity_warmup_steps: 0,
  gating: 'output',
  causal: 'aux_loss',
  aux_loss_coef: 0.001,
  aux_router_lr_scale: 10,
  threshold: 0.5,
  z_loss_coef: 0,
  random_router: false,
  balancing: 'none',
  balance_coef: 0.1,
  bias_update_rate: 0.001,
  balance_warmup_steps: 0,
  kv_strategy: 'recursion',
});

const TOKEN_DEFAULTS: MorConfig = Object.freeze({
  ...EXPERT_DEFAULTS,
  routing: 'token_choice',
  router_func: 'softmax',
  alpha: 1,
  z_loss_coef: 1e-5,
  balancing: 'loss',
});

const ENUMS: Record<string, readonly string[]> = {
  routing: ['expert_choice', 'token_choice'],
  router: ['linear', 'mlp'],
  gating: ['output', 'delta'],
  causal: ['aux_loss', 'aux_router'],
  balancing: ['loss', 'loss_free', 'none'],
  kv_strategy: ['recursion', 'share'],
};

const NON_NEGATIVE = ['aux_loss_coef', 'z_loss_coef', 'balance_coef', 'bias_update_rate'];
const POSITIVE = ['alpha', 'temperature', 'aux_router_lr_scale'];
const COUNTS = ['capacity_warmup_steps', 'balance_warmup_steps'];

/** Validate the `mor` section (raw JSON) for a model with `numRecursions` recursions. */
export function validateMorConfig(raw: unknown, numRecursions: number): MorConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('mor must be an object or null');
  const r = raw as Record<string, unknown>;
  const routing = r['routing'] ?? 'expert_choice';
  if (routing !== 'expert_choice' && routing !== 'token_choice') {
    throw new ConfigError(`mor.routing must be 'expert_choice' or 'token_choice', got ${JSON.stringify(routing)}`);
  }
  const base = routing === 'token_choice' ? TOKEN_DEFAULTS : EXPERT_DEFAULTS;
  for (const key of Object.keys(r)) {
    if (!Object.hasOwn(base, key)) throw new ConfigError(`unknown key 'mor.${key}' (known: ${Object.keys(base).join(', ')})`);
  }
  const merged = { ...base, ...r } as Record<string, unknown>;
  // token-choice with sigmoid defaults to α 0.1 (MOR_SPEC §4)
  if (routing === 'token_choice' && merged['router_func'] === 'sigmoid' && r['alpha'] === undefined) merged['alpha'] = 0.1;
  for (const [key, allowed] of Object.entries(ENUMS)) {
    if (!allowed.includes(merged[key] as string)) {
      throw new ConfigError(`mor.${key} must be one of ${allowed.join(', ')}, got ${JSON.stringify(merged[key])}`);
    }
  }
  const funcs = routing === 'token_choice' ? ['softmax', 'sigmoid'] : ['sigmoid', 'tanh', 'none'];
  if (!funcs.includes(merged['router_func'] as string)) {
    throw new ConfigError(`mor.router_func for ${routing} must be one of ${funcs.join(', ')}, got ${JSON.stringify(merged['router_func'])}`);
  }
  for (const key of NON_NEGATIVE) {
    const v = merged[key];
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) throw new ConfigError(`mor.${key} must be a number ≥ 0, got ${JSON.stringify(v)}`);
  }
  for (const key of POSITIVE) {
    const v = merged[key];
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new ConfigError(`mor.${key} must be a number > 0, got ${JSON.stringify(v)}`);
  }
  for (const key of COUNTS) {
    const v = merged[key];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(`mor.${key} must be an integer ≥ 0, got ${JSON.stringify(v)}`);
  }
  const th = merged['threshold'];
  if (typeof th !== 'number' || !(th > 0 && th < 1)) throw new ConfigError(`mor.threshold must be in (0, 1), got ${JSON.stringify(th)}`);
  if (typeof merged['random_router'] !== 'boolean') throw new ConfigError('mor.random_router must be true or false');
  const caps = merged['capacities'];
  if (caps !== null) {
    if (!Array.isArray(caps) || caps.length !== numRecursions || !caps.every((c) => typeof c === 'number' && c > 0 && c <= 1)) {
      throw new ConfigError(`mor.capacities must be null or ${numRecursions} numbers in (0, 1], got ${JSON.stringify(caps)}`);
    }
    for (let i = 1; i < caps.length; i++) {
      if ((caps[i] as number) > (caps[i - 1] as number)) {
        throw new ConfigError(`mor.capacities must not increase (routing is hierarchical), got ${JSON.stringify(caps)}`);
      }
    }
    merged['capacities'] = Object.freeze([...(caps as number[])]);
  }
  return Object.freeze(merged) as unknown as MorConfig;
}

/** Target capacity of recursion r (0-based) before any warmup: the given list or (Nr − r)/Nr. */
export function targetCapacity(m: MorConfig, numRecursions: number, r: number): number {
  return m.capacities?.[r] ?? (numRecursions - r) / numRecursions;
}

/** Capacity of recursion r at a training step, with the optional cosine warmup from 1. */
export function capacityAt(m: MorConfig, numRecursions: number, r: number, step: number): number {
  const c = targetCapacity(m, numRecursions, r);
  const W = m.capacity_warmup_steps;
  if (W <= 0) return c;
  return c + (1 - c) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, step / W)));
}
