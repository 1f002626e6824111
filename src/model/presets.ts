/**
 * Named model shapes. Names are part of the interface: benchmarks, tests and the CLI use them.
 *
 * Recursive presets keep the effective depth of their base model where the sharing strategy can
 * tile it, and otherwise ADD layers (MOR_SPEC §2, as the paper does):
 *   small (12 layers), Middle-Cycle:
 *     small-rec2  1 + 5×2 + 1 = 12 layers, 7 unique
 *     small-rec3  1 + 4×3 + 1 = 14 layers, 6 unique   (10/3 is not whole: 4 shared, 2 added)
 *     small-rec4  1 + 3×4 + 1 = 14 layers, 5 unique   (10/4 is not whole: 3 shared, 2 added)
 *   tiny (4 layers), Middle-Cycle:
 *     tiny-rec2   1 + 1×2 + 1 = 4,  tiny-rec3  1 + 1×3 + 1 = 5,  tiny-rec4  1 + 1×4 + 1 = 6
 *   small-14    vanilla, 14 layers: `small` at the effective depth of small-rec3/4 and small-mor3/4
 *   demo-rec2 (the `mor demo` model): d 128, 1 + 3×2 + 1 = 8 layers, 5 unique, vocab 4096
 *
 * MoR presets (`*-mor2/3/4`) are the recursive shapes plus expert-choice routing with the
 * authors' defaults (linear router, sigmoid, α 0.1, aux BCE 0.001, recursion-wise KV caching);
 * `*-mor3-token` uses token-choice routing, `*-mor3-kvshare` recursive KV sharing.
 *
 * MoE presets (`*-moe`, MOR_SPEC §10) replace every layer's SwiGLU MLP (intermediate I) by
 * 8 fine-grained experts of width I/4, top-3 routed + 1 shared: a token's active MLP width is
 * (3 + 1)·I/4 = I, the dense model's, so active parameters per token match the dense model's
 * (plus the router, 8·D per layer) while the MLP stores 9/4 of the dense parameters. Softmax
 * router, auxiliary balancing loss 0.01, dropless. `tiny-moe`, `tiny-mor3-moe` are for tests;
 * `small-moe` = small + MoE, `small-mor3-moe` = small-mor3 + MoE.
 * Mixture-of-Depths baselines (`*-mod`, MOR_SPEC §11) are the vanilla shapes with every other
 * layer routed from layer 1 at capacity 12.5% (mod-config.ts defaults):
 *   tiny-mod   layers 1, 3 of 4 route        small-mod  layers 1, 3, 5, 7, 9, 11 of 12 route
 */
import { ConfigError, tileableDepth, validateConfig, type ModelConfig } from './config.js';

const TINY = {
  vocab_size: 512,
  hidden_size: 64,
  intermediate_size: 176,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  max_position_embeddings: 128,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  tie_word_embeddings: true,
  initializer_range: 0.02,
  recursion: null,
};

const SMALL = {
  ...TINY,
  vocab_size: 8192,
  hidden_size: 256,
  intermediate_size: 704,
  num_hidden_layers: 12,
  max_position_embeddings: 256,
};

const SMOLLM_135M = {
  ...TINY,
  vocab_size: 49152,
  hidden_size: 576,
  intermediate_size: 1536,
  num_hidden_layers: 30,
  num_attention_heads: 9,
  num_key_value_heads: 3,
  max_position_embeddings: 2048,
};

const SMOLLM_360M = {
  ...SMOLLM_135M,
  hidden_size: 960,
  intermediate_size: 2560,
  num_hidden_layers: 32,
  num_attention_heads: 15,
  num_key_value_heads: 5,
};

/** A recursive version of a base shape at (at least) its effective depth (Middle-Cycle unless named). */
function recursive(base: typeof TINY, nr: number, sharing: 'middle_cycle' | 'cycle' = 'middle_cycle'): typeof TINY & { recursion: object } {
  return {
    ...base,
    num_hidden_layers: tileableDepth(base.num_hidden_layers, nr, sharing),
    recursion: { num_recursions: nr, sharing, lora_rank: 0 },
  } as typeof TINY & { recursion: object };
}

/** The demo's model: small enough to learn something in a few minutes on 2 cores. */
const DEMO = {
  ...TINY,
  vocab_size: 4096,
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 8,
  num_attention_heads: 2,
  num_key_value_heads: 1,
  max_position_embeddings: 128,
};

/** A MoR version of a recursive preset (expert-choice with the authors' defaults unless overridden). */
function withMor(rec: object, mor: object = {}): object {
  return { ...rec, mor: { routing: 'expert_choice', ...mor } };
}

/** A Mixture-of-Experts version of a shape: 8 experts of I/4, top-3 + 1 shared (active MLP width = I). */
function withMoe(base: object & { intermediate_size: number }): object {
  return { ...base, moe: { num_experts: 8, top_k: 3, num_shared_experts: 1, expert_intermediate_size: base.intermediate_size / 4 } };
}

/** A Mixture-of-Depths version of a vanilla shape (mod-config.ts defaults unless overridden). */
function withMod(base: object, mod: object = {}): object {
  return { ...base, mod };
}

const RAW_PRESETS: Record<string, object> = {
  tiny: TINY,
  'tiny-rec2': recursive(TINY, 2),
  'tiny-rec3': recursive(TINY, 3),
  'tiny-rec4': recursive(TINY, 4),
  small: SMALL,
  // vanilla at the effective depth of small-rec3/4 and small-mor3/4 (14 layers): the paper
  // compares MoR with a vanilla model of equal depth
  'small-14': { ...SMALL, num_hidden_layers: 14 },
  'small-rec2': recursive(SMALL, 2),
  'small-rec3': recursive(SMALL, 3),
  'small-rec4': recursive(SMALL, 4),
  'tiny-mor2': withMor(recursive(TINY, 2)),
  'tiny-mor3': withMor(recursive(TINY, 3)),
  'tiny-mor4': withMor(recursive(TINY, 4)),
  'tiny-mor3-token': withMor(recursive(TINY, 3), { routing: 'token_choice' }),
  'tiny-mor3-kvshare': withMor(recursive(TINY, 3), { kv_strategy: 'share' }),
  'tiny-mor3-cycle': withMor(recursive(TINY, 3, 'cycle')),
  'tiny-mor3-kvshare-cycle': withMor(recursive(TINY, 3, 'cycle'), { kv_strategy: 'share' }),
  'small-mor2': withMor(recursive(SMALL, 2)),
  'small-mor3': withMor(recursive(SMALL, 3)),
  'small-mor4': withMor(recursive(SMALL, 4)),
  'small-mor3-token': withMor(recursive(SMALL, 3), { routing: 'token_choice' }),
  'small-mor3-kvshare': withMor(recursive(SMALL, 3), { kv_strategy: 'share' }),
  'small-mor3-cycle': withMor(recursive(SMALL, 3, 'cycle')),
  'small-mor3-kvshare-cycle': withMor(recursive(SMALL, 3, 'cycle'), { kv_strategy: 'share' }),
  'tiny-moe': withMoe(TINY),
  'tiny-mor3-moe': withMoe(withMor(recursive(TINY, 3)) as typeof TINY),
  'small-moe': withMoe(SMALL),
  'small-mor3-moe': withMoe(withMor(recursive(SMALL, 3)) as typeof TINY),
  'tiny-mod': withMod(TINY),
  'small-mod': withMod(SMALL),
  'demo-rec2': recursive(DEMO, 2),
  'demo-mor3': withMor(recursive(DEMO, 3)),
  'smollm-135m': SMOLLM_135M,
  'smollm-360m': SMOLLM_360M,
};

export const PRESET_NAMES: readonly string[] = Object.freeze(Object.keys(RAW_PRESETS));

/** The validated config of a named preset. */
export function preset(name: string): ModelConfig {
  const raw = RAW_PRESETS[name];
  if (raw === undefined) {
    throw new ConfigError(`unknown preset '${name}' (known: ${PRESET_NAMES.join(', ')})`);
  }
  return validateConfig(raw);
}
