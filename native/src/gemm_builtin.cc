// The built-in GEMM, compiled once per instruction-set variant (isa.h). See gemm.h.
//
// BLIS-style:
//   for jc (NC columns of C)            B panel KC×NC packed once, shared by all threads
//     for pc (KC of the k dimension)
//       pack B[pc.., jc..] into NR-wide micro-panels          (threads split the panels)
//       for each (MC-row block of A, column group)            (threads split the items)
//         pack A[ic.., pc..] into MR-tall micro-panels        (per-thread buffer, stays in L2)
//         for jr (NR columns): for ir (MR rows): micro-kernel  (B micro-panel stays in L1)
// The micro-kernel keeps an MR×NR tile of C in registers (MR·NR/W vector accumulators) and does
// one rank-1 update per k: NR/W vector loads of B, MR broadcasts of A (loaded straight from the
// packed panel), MR·NR/W FMAs. MR×NR: 12×32 on AVX-512 (24 of 32 zmm registers), 6×16 on AVX2
// (12 of 16 ymm: BLIS's Haswell/Zen tile, two FMAs per broadcast keep both FMA pipes busy).
// KC, MC and NC come from the cache sizes read at run time (blocking() below).
// Skinny problems (m ≤ 8 or n ≤ 8: decoding, routers) skip packing and stream B once.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common.h"
#include "isa.h"
#include "packed_kernel.h"

MOR_ISA_BEGIN

namespace {

#ifndef MOR_GEMM_MR
#if MOR_VW == 16
#define MOR_GEMM_MR 12
#else
#define MOR_GEMM_MR 6
#endif
#endif
constexpr int MR = MOR_GEMM_MR;  // rows of the register tile
constexpr int NR = 2 * W;        // columns of the register tile (two vectors)
constexpr int NV = NR / W;
constexpr int64_t PB = kPackNR;  // row stride of a pre-packed weight panel (a multiple of NR)
static_assert(kPackNR % NR == 0, "packed weight panels must hold whole micro-panels");

// Cache blocking from the cache sizes (CacheSizes, read once at run time):
//   KC: the B micro-panel KC×NR takes L1 / kL1Share (it is reused by every micro-kernel of an A
//       block, while A micro-panels stream through L1 past it);
//   MC: the packed A block MC×KC takes a quarter of L2 (B's micro-panel and C's tiles share it);
//   NC: the packed B block KC×NC takes a quarter of the L3 (shared by the threads).
// MOR_GEMM_KC / MOR_GEMM_MC / MOR_GEMM_NC override them (tuning experiments).
struct Blocking {
  int64_t kc, mc, nc;
};
#if MOR_VW >= 16
constexpr int64_t kL1Share = 1;  // measured best on AVX-512 (Zen 4/5, 32–48 KiB L1)
#else
constexpr int64_t kL1Share = 2;
#endif
int64_t envSize(const char* name, int64_t fallback) {
  const char* e = std::getenv(name);
  const long long v = e ? std::atoll(e) : 0;
  return v > 0 ? static_cast<int64_t>(v) : fallback;
}
const Blocking& blocking() {
  static const Blocking b = [] {
    const CacheSizes& c = cacheSizes();
    Blocking r;
    r.kc = std::clamp<int64_t>(c.l1 / kL1Share / (NR * 4) / 16 * 16, 64, 512);
    r.kc = envSize("MOR_GEMM_KC", r.kc);
    r.mc = std::clamp<int64_t>(c.l2 / 4 / (r.kc * 4) / MR * MR, 4 * MR, 64 * MR);
    r.mc = std::max<int64_t>(MR, envSize("MOR_GEMM_MC", r.mc) / MR * MR);
    r.nc = std::clamp<int64_t>(c.l3 / 4 / (r.kc * 4) / NR * NR, 16 * NR, 8192);
    r.nc = std::max<int64_t>(NR, envSize("MOR_GEMM_NC", r.nc) / NR * NR);
    return r;
  }();
  return b;
}

// ---- micro-kernel ---------------------------------------------------------------------------
#ifndef MOR_GEMM_PREFETCH_A
#define MOR_GEMM_PREFETCH_A (MOR_VW == 8)
#endif
constexpr bool kPrefetchA = MOR_GEMM_PREFETCH_A;
constexpr int64_t kAhead = 16;
// c (mr, nr) = alpha · a_panel (MR, kc) · b_panel (kc, NR) + beta · c ; beta 0 → c not read.
MOR_INLINE void microKernel(int64_t kc, const float* MOR_RESTRICT a, const float* MOR_RESTRICT b,
                            float* MOR_RESTRICT c, int64_t ldc, int mr, int nr, float alpha, float beta) {
  vf acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  // The C tile is written at the end: fetch its lines while the k loop runs.
  for (int i = 0; i < mr; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
  for (int64_t p = 0; p < kc; ++p) {
    // The A micro-panel streams from L2: ask for it kAhead k-steps early.
    if (kPrefetchA) __builtin_prefetch(a + (p + kAhead) * MR, 0, 3);
    vf bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * NR + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      vf ai = bcast(a[p * MR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];
    }
  }
  const vf va = vset1(alpha);
  if (mr == MR && nr == NR) {
    if (beta == 0.f) {
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) vstore(c + i * ldc + v * W, acc[i][v] * va);
    } else {
      const vf vb = vset1(beta);
#pragma GCC unroll 32
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) {
          float* cp = c + i * ldc + v * W;
          vstore(cp, acc[i][v] * va + vload(cp) * vb);
        }
    }
  } else {
    alignas(64) float tmp[MR * NR];
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) vstore(tmp + i * NR + v * W, acc[i][v]);
    for (int i = 0; i < mr; ++i)
      for (int j = 0; j < nr; ++j) {
        float r = alpha * tmp[i * NR + j];
        if (beta != 0.f) r += beta * c[i * ldc + j];
        c[i * ldc + j] = r;
      }
  }
}

// ---- packing --------------------------------------------------------------------------------
// A block op(A)[i0:i0+mc, p0:p0+kc] → MR-tall panels, each (kc, MR) k-major, zero-padded rows.
void packA(bool tA, const float* A, int64_t lda, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
    float* d = dst + ir * kc;
    if (!tA) {
      const float* src = A + (i0 + ir) * lda + p0;
      if (mr == MR) {
        for (int64_t p = 0; p < kc; ++p)
#pragma GCC unroll 32
          for (int i = 0; i < MR; ++i) d[p * MR + i] = src[i * lda + p];
      } else {
        for (int64_t p = 0; p < kc; ++p) {
          int i = 0;
          for (; i < mr; ++i) d[p * MR + i] = src[i * lda + p];
          for (; i < MR; ++i) d[p * MR + i] = 0.f;
        }
      }
    } else {
      const float* src = A + p0 * lda + i0 + ir;
      if (mr == MR) {
        for (int64_t p = 0; p < kc; ++p)
#pragma GCC unroll 32
          for (int i = 0; i < MR; ++i) d[p * MR + i] = src[p * lda + i];
      } else {
        for (int64_t p = 0; p < kc; ++p) {
          int i = 0;
          for (; i < mr; ++i) d[p * MR + i] = src[p * lda + i];
          for (; i < MR; ++i) d[p * MR + i] = 0.f;
        }
      }
    }
  }
}

// One NR-wide panel of op(B)[p0:p0+kc, j0:j0+nr] → (kc, NR) k-major, zero-padded columns.
void packBPanel(bool tB, const float* B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0, int nr, float* d) {
  if (!tB) {
    const float* src = B + p0 * ldb + j0;
    if (nr == NR) {
      for (int64_t p = 0; p < kc; ++p)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          vstore(d + p * NR + v * W, vload(src + p * ldb + v * W));
    } else {
      for (int64_t p = 0; p < kc; ++p) {
        int j = 0;
        for (; j < nr; ++j) d[p * NR + j] = src[p * ldb + j];
        for (; j < NR; ++j) d[p * NR + j] = 0.f;
      }
    }
  } else {
    const float* src = B + j0 * ldb + p0;
    // Transpose in 8-deep k chunks so reads stay within a few cache lines per column.
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      for (int j = 0; j < nr; ++j) {
        const float* s = src + j * ldb + p;
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) d[(p + q) * NR + j] = s[q];
      }
      for (int j = nr; j < NR; ++j)
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) d[(p + q) * NR + j] = 0.f;
    }
    for (; p < kc; ++p) {
      int j = 0;
      for (; j < nr; ++j) d[p * NR + j] = src[j * ldb + p];
      for (; j < NR; ++j) d[p * NR + j] = 0.f;
    }
  }
}

// ---- skinny problems ------------------------------------------------------------------------
// C (M, n) = alpha · a (M, k) [rows contiguous, stride k] · op(B) + beta · C, M ≤ 8.
template <int M>
void smallMT(bool tB, int64_t n, int64_t k, float alpha, const float* a, const float* B, int64_t ldb,
             float beta, float* C, int64_t ldc, int threads) {
  if (tB) {
    // B stored (n, k): C[i, j] = ⟨a_i, B_j⟩. JB columns at a time share the loads of a and give
    // M·JB independent FMA chains (one chain per dot product would be latency-bound).
    constexpr int JB = M >= 8 ? 2 : M >= 4 ? 4 : 8;
    const int64_t groups = (n + JB - 1) / JB;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t jg = 0; jg < groups; ++jg) {
      const int64_t j0 = jg * JB;
      const int nb = static_cast<int>(std::min<int64_t>(JB, n - j0));
      const float* bj[JB];
      for (int q = 0; q < JB; ++q) bj[q] = B + (j0 + (q < nb ? q : 0)) * ldb;
      vf acc[M][JB];
      for (int i = 0; i < M; ++i)
        for (int q = 0; q < JB; ++q) acc[i][q] = vf{};
      int64_t p = 0;
      for (; p + W <= k; p += W) {
        vf x[JB];
#pragma GCC unroll 8
        for (int q = 0; q < JB; ++q) x[q] = vload(bj[q] + p);
#pragma GCC unroll 8
        for (int i = 0; i < M; ++i) {
          const vf ai = vload(a + i * k + p);
#pragma GCC unroll 8
          for (int q = 0; q < JB; ++q) acc[i][q] += ai * x[q];
        }
      }
      for (int i = 0; i < M; ++i)
        for (int q = 0; q < nb; ++q) {
          float sdot = vhsum(acc[i][q]);
          for (int64_t pp = p; pp < k; ++pp) sdot += a[i * k + pp] * bj[q][pp];
          float* c = C + i * ldc + j0 + q;
          *c = alpha * sdot + (beta != 0.f ? beta * *c : 0.f);
        }
    }
  } else {
    // B stored (k, n): C[i, cols] = Σ_p a[i, p] · B[p, cols], CB columns per task.
    constexpr int CV = M <= 4 ? 4 : 2;
    constexpr int CB = CV * W;
    const int64_t blocks = (n + CB - 1) / CB;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t j0 = bi * CB;
      const int64_t nc = std::min<int64_t>(CB, n - j0);
      vf acc[M][CV];
      for (int i = 0; i < M; ++i)
        for (int v = 0; v < CV; ++v) acc[i][v] = vf{};
      if (nc == CB) {
        for (int64_t p = 0; p < k; ++p) {
          const float* bp = B + p * ldb + j0;
          vf bv[CV];
#pragma GCC unroll 4
          for (int v = 0; v < CV; ++v) bv[v] = vload(bp + v * W);
#pragma GCC unroll 8
          for (int i = 0; i < M; ++i) {
            vf ai = bcast(a[i * k + p]);
#pragma GCC unroll 4
            for (int v = 0; v < CV; ++v) acc[i][v] += ai * bv[v];
          }
        }
      } else {
        for (int64_t p = 0; p < k; ++p) {
          const float* bp = B + p * ldb + j0;
          alignas(64) float tb[CB] = {};
          for (int64_t j = 0; j < nc; ++j) tb[j] = bp[j];
          for (int i = 0; i < M; ++i) {
            vf ai = bcast(a[i * k + p]);
            for (int v = 0; v < CV; ++v) acc[i][v] += ai * vload(tb + v * W);
          }
        }
      }
      for (int i = 0; i < M; ++i) {
        alignas(64) float t[CB];
        for (int v = 0; v < CV; ++v) vstore(t + v * W, acc[i][v]);
        float* c = C + i * ldc + j0;
        for (int64_t j = 0; j < nc; ++j) c[j] = alpha * t[j] + (beta != 0.f ? beta * c[j] : 0.f);
      }
    }
  }
}

void smallM(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads) {
  // Rows of op(A) made contiguous with stride k.
  const float* a = A;
  if (tA || lda != k) {
    float* buf = scratch(4, static_cast<size_t>(m * k));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t p = 0; p < k; ++p) buf[i * k + p] = tA ? A[p * lda + i] : A[i * lda + p];
    a = buf;
  }
  threads = std::min(threads, threadsFor(2.0 * m * n * k, 1.0e5));
  switch (m) {
    case 1: smallMT<1>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 2: smallMT<2>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 3: smallMT<3>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 4: smallMT<4>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 5: smallMT<5>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 6: smallMT<6>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    case 7: smallMT<7>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
    default: smallMT<8>(tB, n, k, alpha, a, B, ldb, beta, C, ldc, threads); break;
  }
}

constexpr int64_t kSkinny = 8;
// Up to this many rows, run the skinny kernel on chunks of 8 rows instead of packing: decoding
// batches (8–32 token rows against a weight matrix) re-read B from cache once per chunk, which
// beats packing B for every call (measured here, GFLOP/s packed → chunked: 12×704×256 60 → 129,
// 12×8192×256 73 → 190, 32×256×256 110 → 124, 32×8192×256 143 → 164; 32×704×256 207 → 152).
#ifndef MOR_GEMM_MID
#define MOR_GEMM_MID 32
#endif
constexpr int64_t kMid = MOR_GEMM_MID;

void builtinImpl(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                 const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads) {
  if (m <= kSkinny) {
    smallM(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, threads);
    return;
  }
  if (m <= kMid && n > kSkinny) {
    for (int64_t i0 = 0; i0 < m; i0 += kSkinny) {
      const int64_t mb = std::min<int64_t>(kSkinny, m - i0);
      const float* Ai = tA ? A + i0 : A + i0 * lda;
      smallM(tA, tB, mb, n, k, alpha, Ai, lda, B, ldb, beta, C + i0 * ldc, ldc, threads);
    }
    return;
  }
  if (n <= kSkinny) {
    // Cᵀ (n, m) = op(B)ᵀ · op(A)ᵀ through the skinny path, then transpose into C.
    float* ct = scratch(5, static_cast<size_t>(n * m));
    smallM(!tB, !tA, n, m, k, 1.f, B, ldb, A, lda, 0.f, ct, m, threads);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        float r = alpha * ct[j * m + i];
        if (beta != 0.f) r += beta * C[i * ldc + j];
        C[i * ldc + j] = r;
      }
    return;
  }
  threads = std::min(threads, threadsFor(2.0 * m * n * k, 1.0e6));

  const Blocking& bl = blocking();
  const int64_t KC = bl.kc, MC = bl.mc, NC = bl.nc;
  const int64_t nkb = (k + KC - 1) / KC;
  const int64_t kcMax = (k + nkb - 1) / nkb;
  const int64_t ncMax = std::min<int64_t>(NC, (n + NR - 1) / NR * NR);
  float* bp = scratch(0, static_cast<size_t>(kcMax * ncMax));
  const size_t aStride = static_cast<size_t>((MC * kcMax + 15) / 16 * 16);
  float* apAll = scratch(1, aStride * threads);
  const int64_t mBlocks = (m + MC - 1) / MC;

#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* ap = apAll + aStride * threadId();
    for (int64_t jc = 0; jc < n; jc += NC) {
      const int64_t nc = std::min(NC, n - jc);
      const int64_t nPanels = (nc + NR - 1) / NR;
      // Split columns too when there are few row blocks, so every thread gets work.
      int64_t jGroups = 1;
      if (mBlocks < 2 * threads) jGroups = std::min<int64_t>(nPanels, (2 * threads + mBlocks - 1) / mBlocks);
      const int64_t panelsPerGroup = (nPanels + jGroups - 1) / jGroups;
      const int64_t items = mBlocks * jGroups;
      for (int64_t pc = 0; pc < k; pc += kcMax) {
        const int64_t kc = std::min(kcMax, k - pc);
        const float betaEff = pc == 0 ? beta : 1.f;
#pragma omp for schedule(static)
        for (int64_t jp = 0; jp < nPanels; ++jp)
          packBPanel(tB, B, ldb, pc, kc, jc + jp * NR, static_cast<int>(std::min<int64_t>(NR, nc - jp * NR)),
                     bp + jp * NR * kc);
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; ++it) {
          const int64_t ib = it / jGroups, jg = it % jGroups;
          const int64_t ic = ib * MC;
          const int64_t mc = std::min(MC, m - ic);
          packA(tA, A, lda, ic, mc, pc, kc, ap);
          const int64_t jp0 = jg * panelsPerGroup, jp1 = std::min(nPanels, jp0 + panelsPerGroup);
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t jr = jp * NR;
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
            const float* bpan = bp + jp * NR * kc;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
              microKernel(kc, ap + ir * kc, bpan, C + (ic + ir) * ldc + jc + jr, ldc, mr, nr, alpha, betaEff);
            }
          }
        }
      }
    }
  }
}

// ---- pre-packed weights ---------------------------------------------------------------------
// Inference multiplies activations by CONSTANT weights: y (m, n) = x (m, k) · Wᵀ, W (n, k). The
// weight is repacked once into NR-wide k-major panels (the micro-kernel's B layout), so a call
// streams each weight panel exactly once, whatever m is. The rows of x go through in tiles of up
// to MR, each with a micro-kernel of exactly that many rows (no padded rows computed), while the
// panel stays in L1/L2. The activation rows are read where they are: a tile's R rows are R
// streams of cache lines, each line serving 16 (AVX-512) k steps from L1, and packing them
// k-major first (as the large GEMM packs A) cost more than it saved — 1.03–1.06× at 16–1,024
// rows on AVX-512 and 1.02–1.10× under MOR_SIMD=avx2 without it (Zen 4, in-process pairs).

// The micro-kernel over a packed panel: packed_kernel.h (shared with the bf16 product's widened
// panels, gemm_bf16.cc).
constexpr auto kPackedKernels = packedKernels<NV, PB, MR>();

// C = beta·C (k == 0 or alpha == 0 with nothing to multiply); beta 0 writes zeros.
void scaleC(int64_t m, int64_t n, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
}

}  // namespace

void sgemmBuiltin(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scaleC(m, n, beta, C, ldc);
    return;
  }
  builtinImpl(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, std::max(1, threads));
}


void sgemmPacked(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* P, float* C, int64_t ldc,
                 bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate) scaleC(m, n, 0.f, C, ldc);
    return;
  }
  // Row tiles of near-equal height ≤ MR (m = 32 → 11, 11, 10: no tile is mostly padding).
  const int64_t tiles = (m + MR - 1) / MR;
  const int64_t base = m / tiles, extra = m % tiles;
  // A panel of the packed weight is PB columns wide: NR-wide sub-panels (PB / NR of them: one on
  // AVX-512, two on AVX2) run one after the other with row stride PB.
  const int64_t panels = (n + PB - 1) / PB;
  const int threads = std::min<int64_t>(std::min(maxThreads(), threadsForFlopsAndBytes(2.0 * m * n * k, 2.0e5, 4.0 * n * k)), panels);
  // One row (decoding a single sequence) on AVX2, where a panel is two NR-wide sub-panels: a whole
  // panel per pass, PB / W accumulators. With two (one sub-panel) the FMA latency chain, not the
  // weight stream, set the pace; four cover it (AVX-512 has PB = NR).
  const bool rowOverPanel = m == 1 && PB > NR;
  // Nothing is packed, so the panels need no barrier before them, and the region's end is the
  // only one.
#pragma omp parallel for num_threads(threads) if (threads > 1) schedule(static)
  for (int64_t jp = 0; jp < panels; ++jp) {
    const float* b = P + jp * PB * k;
    const float* next = jp + 1 < panels ? b + PB * k : nullptr;
    if (rowOverPanel) {
      const int nr = static_cast<int>(std::min<int64_t>(PB, n - jp * PB));
      packedKernel<1, PB / W, PB>(k, A, lda, b, C + jp * PB, ldc, nr, accumulate, panelPrefetchFor(next, k, k, 0, 1));
      continue;
    }
    // The next panel's k rows are shared out between this panel's kernel calls (subs × tiles).
    const int64_t subs = std::min<int64_t>(PB / NR, (n - jp * PB + NR - 1) / NR);
    for (int64_t sub = 0; sub < subs; ++sub) {
      const int64_t j0 = jp * PB + sub * NR;
      const int nr = static_cast<int>(std::min<int64_t>(NR, n - j0));
      for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
        const int64_t R = base + (t < extra ? 1 : 0);
        const PanelPrefetch pf = panelPrefetchFor(next, k, k, sub * tiles + t, subs * tiles);
        kPackedKernels[R - 1](k, A + r0 * lda, lda, b + sub * NR, C + r0 * ldc + j0, ldc, nr, accumulate, pf);
        r0 += R;
      }
    }
  }
}


MOR_ISA_END
