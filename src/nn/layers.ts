/**
 * Stateless layer functions over tensors, shared by the training forward and the inference
 * engine. Row layout: a batch of sequences is flattened to N token rows (N, D).
 *
 * Layering: tensor/ops.ts holds the differentiable primitives — each one tape entry over one
 * kernel, fused ones included (rmsnorm, rope, attention, swiglu, embedding, crossEntropy);
 * this file composes them into layers. It imports nothing from model/: the shapes and weights a
 * layer needs are the small structural types below, which a ModelConfig and the model's
 * parameter table satisfy.
 */
import type { AttentionLayout } from '../backend/backend.js';
import { ShapeError } from '../errors.js';
import { Tensor } from '../tensor/tensor.js';
import { add, attention, linear, reshape, rmsnorm, rope, swiglu } from '../tensor/ops.js';

/** The seven matrices of a decoder layer, in the order of the parameter table. */
export const LAYER_MATRICES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
export type LayerMatrix = (typeof LAYER_MATRICES)[number];
/** The MLP's three matrices: absent in a Mixture-of-Experts layer, whose MLP is given as a function. */
export const MLP_MATRICES = ['gate_proj', 'up_proj', 'down_proj'] as const;
export type MlpMatrix = (typeof MLP_MATRICES)[number];

/** The dimensions a decoder layer reads (a ModelConfig has them under these Hugging Face names). */
export interface LayerShape {
  readonly hidden_size: number;
  readonly num_attention_heads: number;
  readonly num_key_value_heads: number;
  readonly rms_norm_eps: number;
  readonly rope_theta: number;
}

/**
 * One decoder layer's weights: the two norm scales (D) and the seven matrices (out, in); an
 * MoE layer has only the four attention matrices (its experts replace gate/up/down).
 */
export interface LayerWeights {
  readonly inputNorm: Tensor;
  readonly postNorm: Tensor;
  readonly w: Readonly<Record<Exclude<LayerMatrix, MlpMatrix>, Tensor> & Partial<Record<MlpMatrix, Tensor>>>;
}

/** The MLP half of a layer as a function of its normed input: x (N, D) → (N, D) (an MoE layer's experts). */
export type MlpFn = (x: Tensor) => Tensor;

/** Per-matrix LoRA pairs A (r, in), B (out, r) of one layer position. */
export type LoraWeights = Readonly<Record<LayerMatrix, { readonly A: Tensor; readonly B: Tensor }>>;

/** HD = D / H. */
export function headDim(c: Pick<LayerShape, 'hidden_size' | 'num_attention_heads'>): number {
  return c.hidden_size / c.num_attention_heads;
}

/**
 * Attention layout for S independent causal sequences laid end to end: segment s covers rows
 * [start_s, start_s + len_s) for queries and keys alike; positions are given per row.
 *   lengths (S), positions (N) with N = Σ lengths.
 */
export function causalSegmentsLayout(c: LayerShape, lengths: readonly number[], positions: Int32Array): AttentionLayout {
  const segments = new Int32Array(4 * lengths.length);
  let start = 0;
  lengths.forEach((len, s) => {
    segments[4 * s] = start;
    segments[4 * s + 1] = len;
    segments[4 * s + 2] = start;
    segments[4 * s + 3] = len;
    start += len;
  });
  const hd = headDim(c);
  return {
    numHeads: c.num_attention_heads,
    numKvHeads: c.num_key_value_heads,
    headDim: hd,
    scale: 1 / Math.sqrt(hd),
    segments,
    qPos: positions,
    kPos: positions,
  };
}

/** Positions 0..T−1 repeated for B rows of T tokens: (B·T). */
export function rowPositions(batch: number, seqLen: number): Int32Array {
  const pos = new Int32Array(batch * seqLen);
  for (let b = 0; b < batch; b++) for (let t = 0; t < seqLen; t++) pos[b * seqLen + t] = t;
  return pos;
}

/** x · Wᵀ, plus the relaxation B·A·x when a LoRA pair is given:  x (N, in) → (N, out). */
export function loraLinear(x: Tensor, w: Tensor, lora: { A: Tensor; B: Tensor } | undefined): Tensor {
  const y = linear(x, w);
  if (lora === undefined || lora.A.dim(0) === 0) return y;
  return add(y, linear(linear(x, lora.A), lora.B));
}

/**
 * How a layer's attention finds its keys: in training, over the rows themselves
 * (selfAttend); in decoding, after appending k, v to a cache and reading the whole cache.
 *   q (N, H, HD), k, v (N, KVH, HD) → (N, H, HD)
 */
export type AttendFn = (q: Tensor, k: Tensor, v: Tensor) => Tensor;

/** Attention of the rows among themselves under a layout (training and prefill). */
export function selfAttend(layout: AttentionLayout): AttendFn {
  return (q, k, v) => attention(q, k, v, layout);
}

/**
 * One pre-norm Llama decoder layer over token rows at explicit positions:
 *   h = h + Wo·Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n),  n = RMSNorm(h)
 *   h = h + Wdown·(silu(Wgate·n) ⊙ Wup·n),          n = RMSNorm(h)
 *   h (N, D), pos (N) int32 → (N, D)
 */
export function decoderLayer(
  c: LayerShape,
  h: Tensor,
  p: LayerWeights,
  lora: LoraWeights | null,
  pos: Tensor,
  attend: AttendFn,
  /**
   * Recursive KV sharing: keys/values computed at recursion 1, already rotated; when given, this
   * layer computes queries only and attends to them (MOR_SPEC §5).
   */
  sharedKV?: { readonly k: Tensor; readonly v: Tensor },
  /** The MLP half in place of the dense SwiGLU (a Mixture-of-Experts layer). */
  mlp?: MlpFn,
): Tensor {
  const n = h.dim(0);
  const hd = headDim(c);
  const H = c.num_attention_heads;
  const KVH = c.num_key_value_heads;
  const lin = (x: Tensor, m: LayerMatrix): Tensor => {
    const w = p.w[m];
    if (w === undefined) throw new ShapeError(`decoderLayer: the layer has no ${m} (an MoE layer needs its mlp function)`);
    return loraLinear(x, w, lora?.[m]);
  };

  const x = rmsnorm(h, p.inputNorm, c.rms_norm_eps); //                        (N, D)
  const q = rope(reshape(lin(x, 'q_proj'), [n, H, hd]), pos, c.rope_theta); //  (N, H, HD)
  const k = sharedKV?.k ?? rope(reshape(lin(x, 'k_proj'), [n, KVH, hd]), pos, c.rope_theta); // (Nk, KVH, HD)
  const v = sharedKV?.v ?? reshape(lin(x, 'v_proj'), [n, KVH, hd]); //         (Nk, KVH, HD)
  const a = reshape(attend(q, k, v), [n, H * hd]); //                          (N, H·HD)
  const h2 = add(h, lin(a, 'o_proj')); //                                      (N, D)
  const x2 = rmsnorm(h2, p.postNorm, c.rms_norm_eps);
  if (mlp !== undefined) return add(h2, mlp(x2)); //                           (N, D)
  const m = swiglu(lin(x2, 'gate_proj'), lin(x2, 'up_proj')); //               (N, I)
  return add(h2, lin(m, 'down_proj')); //                                      (N, D)
}
