/**
 * FLOPs accounting (MOR_SPEC §6, the paper's appendix):
 *   forward FLOPs = 2 × (parameters of every linear map a token passes through) per token
 *                 + attention 2·2·k_ctx·HD·H per token per layer, over the causal triangle only
 *   training      = 3 × forward
 * The embedding lookup costs nothing; the tied head is a linear map (V·D).
 */
import { headDim, type ModelConfig } from './config.js';
import { LAYER_MATRICES, loraRankOf, matrixShape } from './params.js';

/** Linear-map parameters one layer position applies to a token (including its LoRA). */
export function linearParamsPerLayer(c: ModelConfig): number {
  let n = 0;
  for (const m of LAYER_MATRICES) {
    const [out, inp] = matrixShape(c, m);
    n += out * inp + loraRankOf(c, m) * (out + inp);
  }
  return n;
}

/** Attention FLOPs of one layer for a causal sequence of `len` tokens: QKᵀ and P·V over the triangle. */
export function attentionFlops(c: ModelConfig, len: number): number {
  const visiblePairs = (len * (len + 1)) / 2;
  return 2 * 2 * visiblePairs * headDim(c) * c.num_attention_heads;
}

/**
 * Forward FLOPs for one sequence of `seqLen` tokens through every layer (no routing: each token
 * passes every unrolled position).
 */
export function forwardFlopsPerSequence(c: ModelConfig, seqLen: number): number {
  const linear = 2 * seqLen * (c.num_hidden_layers * linearParamsPerLayer(c) + c.vocab_size * c.hidden_size);
  return linear + c.num_hidden_layers * attentionFlops(c, seqLen);
}

/** Forward FLOPs per token, averaged over a sequence of `seqLen`. */
export function forwardFlopsPerToken(c: ModelConfig, seqLen = c.max_position_embeddings): number {
  return forwardFlopsPerSequence(c, seqLen) / seqLen;
}

/** Training FLOPs per token (forward + backward = 3 × forward). */
export function trainFlopsPerToken(c: ModelConfig, seqLen = c.max_position_embeddings): number {
  return 3 * forwardFlopsPerToken(c, seqLen);
}
