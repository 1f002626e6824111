// One decoder layer for decoding, fused into a single native call (see kernels.h, decodeLayer).
//
// Decoding runs a layer over a few token rows, so the cost of a layer built from a dozen separate
// kernel calls is mostly between the calls: JS glue, fresh output buffers, OpenMP threads going
// back to sleep. Here every step runs back to back on scratch buffers, with the weights packed
// once (gemm.h, sgemmPacked), q/k/v and gate/up each fused into one product, and both residual
// additions folded into the output projections (accumulate):
//
//   x   = RMSNorm(h) · inputNorm                          (N, D)
//   qkv = x · [Wq; Wk; Wv]ᵀ                                (N, H·HD + 2·KVH·HD)
//   q, k = RoPE(q), RoPE(k) at each row's position;  k, v → pool slots (unless the slot is −1)
//   a   = paged attention of q over each row's stream    (N, H·HD)
//   out = h + a · Woᵀ
//   x   = RMSNorm(out) · postNorm
//   gu  = x · [Wgate; Wup]ᵀ                               (N, 2I)
//   out = out + (silu(gate) ⊙ up) · Wdownᵀ
#include <algorithm>
#include <cstring>

#include "common.h"
#include "isa.h"

MOR_ISA_BEGIN

namespace {
// Scratch slots of this file (gemm and attention use others; see their scratch() calls).
constexpr int kSlotX = 24, kSlotWide = 25, kSlotQ = 26, kSlotK = 27, kSlotAttn = 28, kSlotRstd = 29;
}  // namespace

void decodeLayer(const DecodeLayerShape& s, const float* h, const DecodeLayerWeights& w, float* kPool, float* vPool,
                 float* out) {
  const int64_t n = s.n, d = s.d, I = s.inter;
  const int64_t qw = s.attn.numHeads * s.attn.headDim, kvw = s.attn.numKvHeads * s.attn.headDim;
  const int64_t qkvw = qw + 2 * kvw;
  if (n == 0) return;
  attentionPagedValidate(s.attn);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = s.kvSlots[i];
    if (slot < -1 || slot >= s.attn.numSlots)
      throw KernelError(ErrKind::Argument, "decodeLayer: kvSlots[" + std::to_string(i) + "] = " +
                                               std::to_string(slot) + " is outside the pool of " +
                                               std::to_string(s.attn.numSlots) + " slots (−1 = no write)");
  }

  float* x = scratch(kSlotX, static_cast<size_t>(n * std::max(d, I)));
  float* wide = scratch(kSlotWide, static_cast<size_t>(n * std::max(qkvw, 2 * I)));
  float* q = scratch(kSlotQ, static_cast<size_t>(2 * n * qw));  // q, then q rotated
  float* k = scratch(kSlotK, static_cast<size_t>(2 * n * kvw));  // k, then k rotated
  float* attn = scratch(kSlotAttn, static_cast<size_t>(n * qw));
  float* rstd = scratch(kSlotRstd, static_cast<size_t>(n));

  // attention half
  rmsnormForward(h, w.inputNorm, n, d, s.eps, x, rstd);
  sgemmPacked(n, qkvw, d, x, d, w.qkv, wide, qkvw, false);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(q + i * qw, wide + i * qkvw, sizeof(float) * qw);
    std::memcpy(k + i * kvw, wide + i * qkvw + qw, sizeof(float) * kvw);
  }
  float* qr = q + n * qw;
  float* kr = k + n * kvw;
  rope(q, s.attn.qPos, n, s.attn.numHeads, s.attn.headDim, s.ropeTheta, false, qr);
  rope(k, s.attn.qPos, n, s.attn.numKvHeads, s.attn.headDim, s.ropeTheta, false, kr);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = s.kvSlots[i];
    if (slot < 0) continue;
    std::memcpy(kPool + static_cast<int64_t>(slot) * kvw, kr + i * kvw, sizeof(float) * kvw);
    std::memcpy(vPool + static_cast<int64_t>(slot) * kvw, wide + i * qkvw + qw + kvw, sizeof(float) * kvw);
  }
  attentionPaged(s.attn, qr, kPool, vPool, attn);
  std::memcpy(out, h, sizeof(float) * n * d);
  sgemmPacked(n, d, qw, attn, qw, w.o, out, d, true);

  // MLP half
  rmsnormForward(out, w.postNorm, n, d, s.eps, x, rstd);
  sgemmPacked(n, 2 * I, d, x, d, w.gateUp, wide, 2 * I, false);
  for (int64_t i = 0; i < n; ++i) swigluForward(wide + i * 2 * I, wide + i * 2 * I + I, I, x + i * I);
  sgemmPacked(n, d, I, x, I, w.down, out, d, true);
}

MOR_ISA_END
