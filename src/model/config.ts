/**
 * Model configuration: Hugging Face Llama field names, plus a `recursion` section.
 * Configs are validated, frozen plain objects; presets are data (presets.ts).
 *
 * `num_hidden_layers` is the EFFECTIVE (unrolled) depth L. A recursive model stores only its
 * unique layers; which unrolled position uses which unique layer is the sharing strategy
 * (MOR_SPEC §2, see sharing.ts).
 */
import { ConfigError } from './config-error.js';
import { headDim } from '../nn/layers.js';
import { validateMorConfig, type MorConfig } from './mor-config.js';
import { validateMoeConfig, type MoeConfig } from './moe-config.js';
import { validateModConfig, type ModConfig } from './mod-config.js';

export { ConfigError };

export type SharingStrategy = 'cycle' | 'sequence' | 'middle_cycle' | 'middle_sequence';
export const SHARING_STRATEGIES: readonly SharingStrategy[] = ['cycle', 'sequence', 'middle_cycle', 'middle_sequence'];

export interface RecursionConfig {
  /** Nr: how many times the shared block is applied. */
  readonly num_recursions: number;
  /** How unrolled layer positions map to unique layers. */
  readonly sharing: SharingStrategy;
  /** Rank of the per-unrolled-layer LoRA on all 7 matrices (0 = no relaxation). */
  readonly lora_rank: number;
}

export interface ModelConfig {
  readonly vocab_size: number;
  readonly hidden_size: number;
  readonly intermediate_size: number;
  /** Effective (unrolled) number of layers L. */
  readonly num_hidden_layers: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly max_position_embeddings: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
  /** Output head shares the embedding matrix (logits = RMSNorm(h)·Eᵀ); false: its own `lm_head.weight` (V, D). */
  readonly tie_word_embeddings: boolean;
  /** Std of the normal init of every matrix. */
  readonly initializer_range: number;
  /** Recursion settings; null for a vanilla (non-recursive) model. */
  readonly recursion: RecursionConfig | null;
  /** Mixture-of-Recursions routing; null for a plain recursive model (every token, every recursion). */
  readonly mor: MorConfig | null;
  /** Mixture-of-Experts MLPs (moe-config.ts); null for dense SwiGLU MLPs everywhere. */
  readonly moe: MoeConfig | null;
  /** Mixture-of-Depths routing of a vanilla model (mod-config.ts); null: every layer sees every token. */
  readonly mod: ModConfig | null;
}

export const DEFAULT_CONFIG: ModelConfig = Object.freeze({
  vocab_size: 8192,
  hidden_size: 256,
  intermediate_size: 704,
  num_hidden_layers: 12,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 256,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  initializer_range: 0.02,
  recursion: null,
  mor: null,
  moe: null,
  mod: null,
});

const MODEL_KEYS = new Set(Object.keys(DEFAULT_CONFIG));
const RECURSION_KEYS = new Set(['num_recursions', 'sharing', 'lora_rank']);
/**
 * Keys Hugging Face writes into config.json (LlamaForCausalLM) that are not fields here. Each is
 * accepted and dropped when its value leaves the math unchanged, and refused, naming the key,
 * when it would change it (a bias, scaled RoPE, another activation, …): `null` accepts any value.
 */
interface HfKeyRule {
  readonly accepts: (v: unknown, raw: Record<string, unknown>) => boolean;
  readonly expected: string;
}
const HF_KEYS: ReadonlyMap<string, HfKeyRule | null> = new Map<string, HfKeyRule | null>([
  ['architectures', null],
  ['torch_dtype', null],
  ['dtype', null],
  ['transformers_version', null],
  ['bos_token_id', null],
  ['eos_token_id', null],
  ['pad_token_id', null],
  ['use_cache', null],
  ['is_llama_config', null],
  ['model_type', { accepts: (v) => v === 'llama', expected: '"llama"' }],
  ['hidden_act', { accepts: (v) => v === 'silu', expected: '"silu" (the MLP is SwiGLU)' }],
  ['attention_bias', { accepts: (v) => v === false, expected: 'false (no biases)' }],
  ['mlp_bias', { accepts: (v) => v === false, expected: 'false (no biases)' }],
  ['attention_dropout', { accepts: (v) => v === 0, expected: '0' }],
  ['pretraining_tp', { accepts: (v) => v === 1, expected: '1' }],
  ['rope_scaling', { accepts: (v) => v === null, expected: 'null (plain RoPE)' }],
  ['rope_interleaved', { accepts: (v) => v === false, expected: 'false (rotate-half RoPE)' }],
  [
    'head_dim',
    {
      accepts: (v, raw) => {
        const d = raw['hidden_size'] ?? DEFAULT_CONFIG.hidden_size;
        const h = raw['num_attention_heads'] ?? DEFAULT_CONFIG.num_attention_heads;
        return typeof d === 'number' && typeof h === 'number' && v === d / h;
      },
      expected: 'hidden_size / num_attention_heads',
    },
  ],
]);

/** The Hugging Face keys validateConfig accepts beside its own fields (see HF_KEYS). */
export const HF_CONFIG_KEYS: readonly string[] = [...HF_KEYS.keys()];

function positiveInt(obj: Record<string, unknown>, key: string, where: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
    throw new ConfigError(`${where}${key} must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function positiveNumber(obj: Record<string, unknown>, key: string, where: string): number {
  const v = obj[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${where}${key} must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/**
 * The smallest effective depth ≥ L that a sharing strategy can tile with Nr recursions: the
 * paper adds layers rather than dropping them (1 + 8×4 + 1 = 34 from 32 for Nr = 4).
 */
export function tileableDepth(L: number, nr: number, sharing: SharingStrategy): number {
  const middle = sharing === 'middle_cycle' || sharing === 'middle_sequence';
  const inner = middle ? L - 2 : L;
  const k = Math.max(1, Math.ceil(inner / nr));
  return k * nr + (middle ? 2 : 0);
}

/**
 * Validate an untrusted object (a parsed config.json, or a preset with overrides) and return
 * a frozen ModelConfig. Missing fields take DEFAULT_CONFIG's values; unknown keys are errors.
 */
export function validateConfig(input: unknown): ModelConfig {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(`config must be a JSON object, got ${input === null ? 'null' : typeof input}`);
  }
  const raw = input as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (MODEL_KEYS.has(key)) continue;
    if (!HF_KEYS.has(key)) throw new ConfigError(`unknown config key '${key}' (known: ${[...MODEL_KEYS].join(', ')})`);
    const rule = HF_KEYS.get(key);
    if (rule && !rule.accepts(raw[key], raw)) {
      throw new ConfigError(`config key '${key}' = ${JSON.stringify(raw[key])} changes the model's math: expected ${rule.expected}`);
    }
  }
  const merged: Record<string, unknown> = { ...DEFAULT_CONFIG };
  for (const key of MODEL_KEYS) if (raw[key] !== undefined) merged[key] = raw[key];

  const vocab = positiveInt(merged, 'vocab_size', '');
  const d = positiveInt(merged, 'hidden_size', '');
  const inter = positiveInt(merged, 'intermediate_size', '');
  const L = positiveInt(merged, 'num_hidden_layers', '');
  const heads = positiveInt(merged, 'num_attention_heads', '');
  const kvHeads = positiveInt(merged, 'num_key_value_heads', '');
  const ctx = positiveInt(merged, 'max_position_embeddings', '');
  const eps = positiveNumber(merged, 'rms_norm_eps', '');
  const theta = positiveNumber(merged, 'rope_theta', '');
  const initStd = positiveNumber(merged, 'initializer_range', '');
  if (d % heads !== 0) {
    throw new ConfigError(`num_attention_heads (${heads}) must divide hidden_size (${d})`);
  }
  if ((d / heads) % 2 !== 0) {
    throw new ConfigError(`head dim hidden_size/num_attention_heads = ${d / heads} must be even for RoPE`);
  }
  if (heads % kvHeads !== 0) {
    throw new ConfigError(`num_key_value_heads (${kvHeads}) must divide num_attention_heads (${heads})`);
  }
  const tie = merged['tie_word_embeddings'];
  if (typeof tie !== 'boolean') throw new ConfigError(`tie_word_embeddings must be true or false, got ${JSON.stringify(tie)}`);

  let recursion: RecursionConfig | null = null;
  const recRaw = merged['recursion'];
  if (recRaw !== null && recRaw !== undefined) {
    if (typeof recRaw !== 'object' || Array.isArray(recRaw)) {
      throw new ConfigError('recursion must be an object or null');
    }
    const r = recRaw as Record<string, unknown>;
    for (const key of Object.keys(r)) {
      if (!RECURSION_KEYS.has(key)) {
        throw new ConfigError(`unknown key 'recursion.${key}' (known: ${[...RECURSION_KEYS].join(', ')})`);
      }
    }
    const nr = positiveInt(r, 'num_recursions', 'recursion.');
    const sharing = r['sharing'] ?? 'middle_cycle';
    if (typeof sharing !== 'string' || !SHARING_STRATEGIES.includes(sharing as SharingStrategy)) {
      throw new ConfigError(`recursion.sharing must be one of ${SHARING_STRATEGIES.join(', ')}, got ${JSON.stringify(sharing)}`);
    }
    const loraRank = r['lora_rank'] ?? 0;
    if (typeof loraRank !== 'number' || !Number.isInteger(loraRank) || loraRank < 0) {
      throw new ConfigError(`recursion.lora_rank must be an integer ≥ 0, got ${JSON.stringify(loraRank)}`);
    }
    recursion = Object.freeze({ num_recursions: nr, sharing: sharing as SharingStrategy, lora_rank: loraRank });
    const middle = recursion.sharing.startsWith('middle');
    const inner = middle ? L - 2 : L;
    if (inner < nr || inner % nr !== 0) {
      throw new ConfigError(
        `num_hidden_layers = ${L} cannot be tiled by ${recursion.sharing} with ${nr} recursions: ` +
          `${middle ? 'L − 2' : 'L'} = ${inner} must be a positive multiple of ${nr} ` +
          `(the nearest tileable depth is ${tileableDepth(L, nr, recursion.sharing)})`,
      );
    }
  }

  const modRaw = merged['mod'];
  const morRaw = merged['mor'];
  // MoD is the vanilla baseline: its layers are not shared, and MoR routes recursions instead
  if (modRaw !== null && modRaw !== undefined && (recursion !== null || (morRaw !== null && morRaw !== undefined))) {
    throw new ConfigError(`mod (Mixture-of-Depths) routes the layers of a vanilla model: it cannot be combined with a ${recursion !== null ? 'recursion' : 'mor'} section`);
  }
  let mor: MorConfig | null = null;
  if (morRaw !== null && morRaw !== undefined) {
    if (recursion === null) throw new ConfigError('mor needs a recursion section: routing decides how many recursions each token gets');
    if (recursion.sharing !== 'cycle' && recursion.sharing !== 'middle_cycle') {
      throw new ConfigError(`mor needs cycle or middle_cycle sharing (a shared block applied per recursion), got ${recursion.sharing}`);
    }
    mor = validateMorConfig(morRaw, recursion.num_recursions);
  }

  const moeRaw = merged['moe'];
  const moe = moeRaw === null || moeRaw === undefined ? null : validateMoeConfig(moeRaw, { num_hidden_layers: L, recursion });
  let mod: ModConfig | null = null;
  if (modRaw !== null && modRaw !== undefined) {
    // the MoD layer path (mod.ts) runs dense MLPs; routed experts inside routed layers are not built
    if (moe !== null) throw new ConfigError('mod (Mixture-of-Depths) cannot be combined with a moe section: MoD layers run dense MLPs');
    mod = validateModConfig(modRaw, L);
  }

  return Object.freeze({
    vocab_size: vocab,
    hidden_size: d,
    intermediate_size: inter,
    num_hidden_layers: L,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    max_position_embeddings: ctx,
    rms_norm_eps: eps,
    rope_theta: theta,
    tie_word_embeddings: tie,
    initializer_range: initStd,
    recursion,
    mor,
    moe,
    mod,
  });
}

/** Head dim HD = D / H (defined with the layers that use it). */
export { headDim };
