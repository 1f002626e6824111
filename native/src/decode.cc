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
//         (q alone when no row stores its k, v: under KV sharing the rows of deeper recursions
//         read recursion 1's stream)
//   q, k = RoPE(q), RoPE(k) at each row's position;  k, v → pool slots (unless the slot is −1),
//          rounded to bf16 when the pool is bf16
// Weights f32 or bf16 (gemm_bf16.cc), pool f32 or bf16: the arithmetic is f32 either way.
//   a   = paged attention of q over each row's stream    (N, H·HD)
//         (a fresh stream's prefill — the rows are the whole stream — takes the dense causal
//         kernel instead: see ownStreamOnly; so do rows that all read one stream, gathered once:
//         see sharedStreamOnly)
//   out = h + a · Woᵀ
//   x   = RMSNorm(out) · postNorm
//   gu  = x · [Wgate; Wup]ᵀ                               (N, 2I)
//   out = out + (silu(gate) ⊙ up) · Wdownᵀ
#include <algorithm>
#include <cstring>

#include "common.h"
#include "isa.h"
#include "variant.h"

MOR_ISA_BEGIN

namespace {
// Scratch slots of this file (gemm and attention use others; see their scratch() calls).
constexpr int kSlotX = 24, kSlotWide = 25, kSlotQ = 26, kSlotK = 27, kSlotAttn = 28, kSlotRstd = 29;
constexpr int kSlotV = 22, kSlotLse = 23, kSlotGatherK = 31, kSlotGatherPos = 20;

// Whether the call's rows are one stream's slots 0..n−1, in order, all written by this call: the
// prefill of a fresh stream (a prompt, or the prompt tokens that reached a recursion under
// recursion-wise caching). Then each row attends causally over the call's own K/V rows, and the
// dense causal kernel — blocks of queries sharing each K/V tile — does what the paged one does a
// row at a time (about 2× faster at 256 prompt rows).
bool ownStreamOnly(const DecodeLayerShape& s) {
  const PagedShape& a = s.attn;
  if (s.n < 2) return false;
  const int32_t off = a.streams[0];
  for (int64_t i = 0; i < s.n; ++i) {
    if (a.streams[2 * i] != off || a.streams[2 * i + 1] != s.n || s.kvSlots[i] < 0) return false;
    const int64_t slot = static_cast<int64_t>(a.blockTables[off + i / a.blockSize]) * a.blockSize + i % a.blockSize;
    if (slot != s.kvSlots[i]) return false;
  }
  return true;
}

// Whether every row of the call reads one and the same stream, and there are rows enough to share
// its K/V: the prefill of a sequence's deeper recursions under recursive KV sharing, which read
// recursion 1's stream. The dense kernel then serves them all from the stream's rows, gathered
// once, where the paged one would read them once per query row.
bool sharedStreamOnly(const DecodeLayerShape& s) {
  const PagedShape& a = s.attn;
  if (s.n < 2) return false;
  for (int64_t i = 1; i < s.n; ++i)
    if (a.streams[2 * i] != a.streams[0] || a.streams[2 * i + 1] != a.streams[1]) return false;
  return a.streams[1] > 0;
}

// The stream's K and V rows (nk, kvw), in stream order, widened to f32, and their positions;
// false when the positions are not in order (the dense kernel needs each query's keys to be a
// prefix), which a stream filled in order of position never is.
template <typename T>
bool gatherStream(const PagedShape& a, const T* kPool, const T* vPool, int64_t kvw, float* kd, float* vd,
                  int32_t* pos) {
  const int64_t off = a.streams[0], nk = a.streams[1], bs = a.blockSize;
  for (int64_t j = 0; j < nk; ++j) {
    const int64_t slot = static_cast<int64_t>(a.blockTables[off + j / bs]) * bs + j % bs;
    pos[j] = a.posPool[slot];
    if (j > 0 && pos[j] < pos[j - 1]) return false;
    const T* ks = kPool + slot * kvw;
    const T* vs = vPool + slot * kvw;
    for (int64_t c = 0; c < kvw; ++c) {
      kd[j * kvw + c] = toF32(ks[c]);
      vd[j * kvw + c] = toF32(vs[c]);
    }
  }
  return true;
}
}  // namespace

void decodeLayer(const DecodeLayerShape& s, const float* h, const DecodeLayerWeights& w, const DecodeLayerPool& pool,
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

  // C (n, cols) = A (n, k) · W[0 : cols]ᵀ (+ C), C's rows ldc apart: the packed product of the
  // weights' storage over their first cols columns
  auto productTo = [&](int64_t cols, int64_t kk, const float* A, const void* P, float* C, int64_t ldc, bool acc) {
    if (w.bf16)
      sgemmPackedBf16(n, cols, kk, A, kk, static_cast<const uint16_t*>(P), C, ldc, acc);
    else
      sgemmPacked(n, cols, kk, A, kk, static_cast<const float*>(P), C, ldc, acc);
  };
  auto product = [&](int64_t cols, int64_t kk, const float* A, const void* P, float* C, bool acc) {
    productTo(cols, kk, A, P, C, cols, acc);
  };

  // attention half
  rmsnormForward(h, w.inputNorm, n, d, s.eps, x, rstd);
  bool anyWrites = false;
  for (int64_t i = 0; i < n && !anyWrites; ++i) anyWrites = s.kvSlots[i] >= 0;
  if (anyWrites) {
    product(qkvw, d, x, w.qkv, wide, false);
  } else {
    // q alone: the panels up to the one holding q's last column (a panel of kPackNR columns
    // holds k columns too when qw is not a multiple of it). A call with some storing rows takes
    // the whole product: splitting it (q for all, k and v for the storing rows gathered) ran
    // 0.99x at 32 rows half of which store.
    productTo(std::min(qkvw, (qw + kPackNR - 1) / kPackNR * kPackNR), d, x, w.qkv, wide, qkvw, false);
  }
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(q + i * qw, wide + i * qkvw, sizeof(float) * qw);
    std::memcpy(k + i * kvw, wide + i * qkvw + qw, sizeof(float) * kvw);
  }
  float* qr = q + n * qw;
  float* kr = k + n * kvw;
  rope(q, s.attn.qPos, n, s.attn.numHeads, s.attn.headDim, s.ropeTheta, false, qr);
  if (anyWrites) rope(k, s.attn.qPos, n, s.attn.numKvHeads, s.attn.headDim, s.ropeTheta, false, kr);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t slot = s.kvSlots[i];
    if (slot < 0) continue;
    const int64_t at = static_cast<int64_t>(slot) * kvw;
    const float* kRow = kr + i * kvw;
    const float* vRow = wide + i * qkvw + qw + kvw;
    if (pool.bf16) {
      f32ToBf16Row(kRow, kvw, static_cast<uint16_t*>(pool.k) + at);
      f32ToBf16Row(vRow, kvw, static_cast<uint16_t*>(pool.v) + at);
    } else {
      std::memcpy(static_cast<float*>(pool.k) + at, kRow, sizeof(float) * kvw);
      std::memcpy(static_cast<float*>(pool.v) + at, vRow, sizeof(float) * kvw);
    }
  }
  // The n query rows over nk contiguous K/V rows at positions kPos, one segment (the rule of
  // AttentionLayout: a query sees the keys at positions ≤ its own).
  auto denseAttention = [&](const float* kd, const float* vd, const int32_t* kPos, int64_t nk) {
    const int32_t seg[4] = {0, static_cast<int32_t>(n), 0, static_cast<int32_t>(nk)};
    const AttnShape dense{s.attn.numHeads, s.attn.numKvHeads, s.attn.headDim, s.attn.scale, seg, 1,
                          s.attn.qPos, n, kPos, nk};
    float* lse = scratch(kSlotLse, static_cast<size_t>(n * s.attn.numHeads));
    // a bf16 pool's rows (rounded, or gathered and widened) hold bf16 values
    if (pool.bf16)
      attentionForwardBf16(dense, qr, kd, vd, attn, lse);
    else
      attentionForward(dense, qr, kd, vd, attn, lse);
  };
  // For sharedStreamOnly: the stream gathered (see gatherStream).
  float* sharedK = nullptr;
  float* sharedV = nullptr;
  int32_t* sharedPos = nullptr;
  auto gatherShared = [&]() {
    const size_t nk = static_cast<size_t>(s.attn.streams[1]);
    sharedK = scratch(kSlotGatherK, nk * kvw);
    sharedV = scratch(kSlotV, nk * kvw);
    sharedPos = reinterpret_cast<int32_t*>(scratch(kSlotGatherPos, nk));  // int32 and float: one size
    return pool.bf16 ? gatherStream(s.attn, static_cast<const uint16_t*>(pool.k), static_cast<const uint16_t*>(pool.v),
                                    kvw, sharedK, sharedV, sharedPos)
                     : gatherStream(s.attn, static_cast<const float*>(pool.k), static_cast<const float*>(pool.v), kvw,
                                    sharedK, sharedV, sharedPos);
  };
  if (ownStreamOnly(s)) {
    // K/V rows contiguous, as the pool holds them: kr already is (n, kvw); v is gathered out of
    // wide; in a bf16 pool both are rounded (into the spent unrotated k for K)
    float* vd = scratch(kSlotV, static_cast<size_t>(n * kvw));
    for (int64_t i = 0; i < n; ++i) std::memcpy(vd + i * kvw, wide + i * qkvw + qw + kvw, sizeof(float) * kvw);
    const float* kd = kr;
    if (pool.bf16) {
      roundedToBf16(kr, n * kvw, k);
      roundedToBf16(vd, n * kvw, vd);
      kd = k;
    }
    denseAttention(kd, vd, s.attn.qPos, n);
  } else if (sharedStreamOnly(s) && gatherShared()) {
    denseAttention(sharedK, sharedV, sharedPos, s.attn.streams[1]);
  } else if (pool.bf16) {
    attentionPagedBf16(s.attn, qr, static_cast<const uint16_t*>(pool.k), static_cast<const uint16_t*>(pool.v), attn);
  } else {
    attentionPaged(s.attn, qr, static_cast<const float*>(pool.k), static_cast<const float*>(pool.v), attn);
  }
  std::memcpy(out, h, sizeof(float) * n * d);
  product(d, qw, attn, w.o, out, true);

  // MLP half
  rmsnormForward(out, w.postNorm, n, d, s.eps, x, rstd);
  product(2 * I, d, x, w.gateUp, wide, false);
  // silu(gate) ⊙ up row by row (a row's gate and up halves sit side by side in `wide`), the rows
  // split across threads: one row is below swigluForward's own parallel grain, and one thread
  // took 0.54 ms a layer at a 1,024-token prefill and 9.5 µs at 32 decoding rows.
  const int mlpThreads = threadsFor(static_cast<double>(n) * I, 8192.0);
#pragma omp parallel for num_threads(mlpThreads) if (mlpThreads > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) swigluForward(wide + i * 2 * I, wide + i * 2 * I + I, I, x + i * I);
  product(d, I, x, w.down, out, true);
}

MOR_ISA_END
