// GEMM providers. See gemm.h.
//
// Built-in kernel, BLIS-style:
//   for jc (NC columns of C)            B panel KC×NC packed once, shared by all threads
//     for pc (KC of the k dimension)
//       pack B[pc.., jc..] into NR-wide micro-panels          (threads split the panels)
//       for each (MC-row block of A, column group)            (threads split the items)
//         pack A[ic.., pc..] into MR-tall micro-panels        (per-thread buffer, stays in L2)
//         for jr (NR columns): for ir (MR rows): micro-kernel  (B micro-panel stays in L1)
// The micro-kernel keeps an MR×NR tile of C in registers (MR·NR/W vector accumulators) and does
// one rank-1 update per k: NR/W vector loads of B, MR broadcasts of A, MR·NR/W FMAs.
// Skinny problems (m ≤ 8 or n ≤ 8: decoding, routers) skip packing and stream B once.
#include "gemm.h"

#include <algorithm>
#include <array>
#include <utility>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common.h"

#ifdef MOR_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace mor {

namespace {

#ifndef MOR_GEMM_MR
#if MOR_VW == 16
#define MOR_GEMM_MR 12
#else
#define MOR_GEMM_MR 6
#endif
#endif
#ifndef MOR_GEMM_KC
#define MOR_GEMM_KC 256
#endif
#ifndef MOR_GEMM_MCB
#define MOR_GEMM_MCB 12
#endif
#ifndef MOR_GEMM_NC
#define MOR_GEMM_NC 2048
#endif
constexpr int MR = MOR_GEMM_MR;     // rows of the register tile
constexpr int NR = 2 * W;           // columns of the register tile (two vectors)
constexpr int NV = NR / W;
constexpr int64_t KC = MOR_GEMM_KC;  // k block: a B micro-panel KC×NR stays in L1
constexpr int64_t MC = MR * MOR_GEMM_MCB;  // row block: an A block MC×KC stays in L2
constexpr int64_t NC = MOR_GEMM_NC;  // column block: the packed B block KC×NC stays in L3

#ifdef MOR_HAVE_OPENBLAS
int g_provider = kGemmOpenBLAS;
#else
int g_provider = kGemmBuiltin;
#endif

// ---- micro-kernel ---------------------------------------------------------------------------
// c (mr, nr) = alpha · a_panel (MR, kc) · b_panel (kc, NR) + beta · c ; beta 0 → c not read.
MOR_INLINE void microKernel(int64_t kc, const float* MOR_RESTRICT a, const float* MOR_RESTRICT b,
                            float* MOR_RESTRICT c, int64_t ldc, int mr, int nr, float alpha, float beta) {
  vf acc[MR][NV];
#pragma GCC unroll 32
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (int64_t p = 0; p < kc; ++p) {
    vf bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * NR + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i) {
      vf ai = vset1(a[p * MR + i]);
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
            vf ai = vset1(a[i * k + p]);
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
            vf ai = vset1(a[i * k + p]);
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
// packs only the few activation rows and streams each weight panel exactly once, whatever m is.
// The rows of x go through in tiles of up to MR, each with a micro-kernel of exactly that many
// rows (no padded rows computed), while the panel stays in L1/L2.

// c (R, nr) = a_panel (R, k) · b_panel (k, NR) [+ c when accumulate]; a_panel k-major, R-tall.
template <int R>
MOR_INLINE void packedKernel(int64_t k, const float* MOR_RESTRICT a, const float* MOR_RESTRICT b,
                             float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, const float* prefetch) {
  vf acc[R][NV];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (int64_t p = 0; p < k; ++p) {
    vf bv[NV];
    if (prefetch != nullptr) {
      // The next panel, a step ahead: the weight streams from memory while this one computes.
      __builtin_prefetch(prefetch + p * NR, 0, 2);
      __builtin_prefetch(prefetch + p * NR + 16, 0, 2);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * NR + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const vf ai = vset1(a[p * R + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];
    }
  }
  if (nr == NR) {
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        float* cp = c + i * ldc + v * W;
        vstore(cp, accumulate ? vload(cp) + acc[i][v] : acc[i][v]);
      }
  } else {
    alignas(64) float tmp[NR];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < NV; ++v) vstore(tmp + v * W, acc[i][v]);
      for (int j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tmp[j] : tmp[j];
    }
  }
}

typedef void (*PackedKernelFn)(int64_t, const float*, const float*, float*, int64_t, int, bool, const float*);
template <int R>
void packedKernelFn(int64_t k, const float* a, const float* b, float* c, int64_t ldc, int nr, bool acc,
                    const float* prefetch) {
  packedKernel<R>(k, a, b, c, ldc, nr, acc, prefetch);
}
template <int... Rs>
constexpr std::array<PackedKernelFn, sizeof...(Rs)> packedKernelTable(std::integer_sequence<int, Rs...>) {
  return {&packedKernelFn<Rs + 1>...};
}
constexpr auto kPackedKernels = packedKernelTable(std::make_integer_sequence<int, MR>{});

// C = beta·C (k == 0 or alpha == 0 with nothing to multiply); beta 0 writes zeros.
void scaleC(int64_t m, int64_t n, float beta, float* C, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
}

#ifdef MOR_HAVE_OPENBLAS
inline void blasCall(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                     const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, A, static_cast<blasint>(std::max<int64_t>(lda, 1)),
              B, static_cast<blasint>(std::max<int64_t>(ldb, 1)), beta, C, static_cast<blasint>(std::max<int64_t>(ldc, 1)));
}

// OpenBLAS threading. OpenBLAS (pthreads build) has its own thread pool, whose workers busy-wait
// after each call; our OpenMP workers busy-wait after each parallel region. On few cores the two
// pools steal each other's cores (measured on 2 cores: a transformer block's GEMMs + elementwise
// kernels ran 1.5–2.5× slower than either alone). So by default OpenBLAS is kept single-threaded
// and a GEMM is split into row (or column) blocks across our OpenMP threads, each calling
// cblas_sgemm on its block: one thread pool, no oversubscription. MOR_OPENBLAS_THREADS=own keeps
// OpenBLAS's own threading instead.
bool g_blasOwnThreads = false;
int g_blasThreads = 1;

void blasInit() {
  static const bool once = [] {
    const char* e = std::getenv("MOR_OPENBLAS_THREADS");
    g_blasOwnThreads = e && std::strcmp(e, "own") == 0;
    g_blasThreads = g_blasOwnThreads ? maxThreads() : 1;
    openblas_set_num_threads(g_blasThreads);
    return true;
  }();
  (void)once;
}

// y (len) = alpha · op(M) · x + beta · y through cblas_sgemv. beta 0 zeroes y first, so NaN in y
// never propagates whatever the library's scal does with 0.
void blasGemv(bool trans, int64_t rows, int64_t cols, float alpha, const float* M, int64_t ldm, const float* x,
              int64_t incx, float beta, float* y, int64_t incy) {
  const int64_t len = trans ? cols : rows;
  if (beta == 0.f)
    for (int64_t i = 0; i < len; ++i) y[i * incy] = 0.f;
  cblas_sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, static_cast<blasint>(rows),
              static_cast<blasint>(cols), alpha, M, static_cast<blasint>(std::max<int64_t>(ldm, 1)), x,
              static_cast<blasint>(incx), beta, y, static_cast<blasint>(incy));
}

void blasGemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
              const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads) {
  blasInit();
  // Vector cases go to sgemv (OpenBLAS's sgemm packs even a single row; sgemv is ~5× faster).
  if (m == 1) {
    // C (1, n) = a · op(B), a = op(A) row 0: contiguous, or a column of stride lda when transA.
    // op(B) = B (k, n): y = Bᵀa;  op(B) = Bᵀ, B (n, k): y = B·a.
    blasGemv(!tB, tB ? n : k, tB ? k : n, alpha, B, ldb, A, tA ? lda : 1, beta, C, 1);
    return;
  }
  if (n == 1) {
    // C (m, 1) = op(A) · b, b = op(B) column 0: contiguous, or stride ldb when !transB.
    blasGemv(tA, tA ? k : m, tA ? m : k, alpha, A, lda, B, tB ? 1 : ldb, beta, C, ldc);
    return;
  }
  if (g_blasOwnThreads || threads <= 1) {
    blasCall(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split C into `threads` blocks of rows (or of columns when m is small), multiples of 16.
  const bool byRows = m >= 16 * threads || m >= n;
  const int64_t len = byRows ? m : n;
  int64_t chunk = (len + threads - 1) / threads;
  chunk = (chunk + 15) / 16 * 16;
  const int parts = static_cast<int>((len + chunk - 1) / chunk);
#pragma omp parallel for num_threads(parts) schedule(static, 1)
  for (int t = 0; t < parts; ++t) {
    const int64_t b = t * chunk, e = std::min(len, b + chunk);
    if (byRows) {
      const float* Ab = tA ? A + b : A + b * lda;
      blasCall(tA, tB, e - b, n, k, alpha, Ab, lda, B, ldb, beta, C + b * ldc, ldc);
    } else {
      const float* Bb = tB ? B + b * ldb : B + b;
      blasCall(tA, tB, m, e - b, k, alpha, A, lda, Bb, ldb, beta, C + b, ldc);
    }
  }
}
#endif

}  // namespace

bool haveOpenBLAS() {
#ifdef MOR_HAVE_OPENBLAS
  return true;
#else
  return false;
#endif
}

int gemmProvider() { return g_provider; }

bool setGemmProvider(int provider) {
  if (provider == kGemmBuiltin) {
    g_provider = provider;
    return true;
  }
  if (provider == kGemmOpenBLAS && haveOpenBLAS()) {
    g_provider = provider;
    return true;
  }
  return false;
}

void setNumThreads(int n) {
  if (n < 1) n = 1;
  __atomic_store_n(&g_numThreads, n, __ATOMIC_RELAXED);
#ifdef _OPENMP
  omp_set_num_threads(n);
#endif
#ifdef MOR_HAVE_OPENBLAS
  blasInit();
  if (g_blasOwnThreads) {
    g_blasThreads = n;
    openblas_set_num_threads(n);
  }
#endif
}

void sgemmBuiltin(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
                  const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scaleC(m, n, beta, C, ldc);
    return;
  }
  builtinImpl(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, std::max(1, threads));
}

void sgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    scaleC(m, n, beta, C, ldc);
    return;
  }
#ifdef MOR_HAVE_OPENBLAS
  if (g_provider == kGemmOpenBLAS) {
    blasGemm(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
             std::min(maxThreads(), threadsFor(2.0 * m * n * k, 1.0e6)));
    return;
  }
#endif
  builtinImpl(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, maxThreads());
}

void sgemmBatched(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                  int64_t strideA, const float* B, int64_t strideB, float beta, float* C, int64_t strideC,
                  int64_t batch) {
  if (batch <= 0 || m <= 0 || n <= 0) return;
  const int64_t lda = tA ? m : k, ldb = tB ? k : n, ldc = n;
  const double itemFlops = 2.0 * m * n * k;
  // Small items run one per thread (each single-threaded) when their C blocks are disjoint.
  const bool disjoint = strideC >= m * n;
  const int threads = std::min<int64_t>(maxThreads(), batch);
  if (batch > 1 && disjoint && threads > 1 && itemFlops < 4.0e6) {
#ifdef MOR_HAVE_OPENBLAS
    // OpenBLAS runs on the calling thread when single-threaded, or (own threading) for items of
    // m·n·k ≤ 64³, so these concurrent calls never wake its thread pool.
    blasInit();
    const bool blas = g_provider == kGemmOpenBLAS && (!g_blasOwnThreads || static_cast<double>(m) * n * k <= 262144.0);
#endif
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t b = 0; b < batch; ++b) {
#ifdef MOR_HAVE_OPENBLAS
      if (blas && k > 0) {
        blasCall(tA, tB, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC, ldc);
        continue;
      }
#endif
      sgemmBuiltin(tA, tB, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC,
                   ldc, 1);
    }
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    sgemm(tA, tB, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC, ldc);
}

int64_t packedWeightSize(int64_t n, int64_t k) { return (n + NR - 1) / NR * NR * k; }

void packWeight(int64_t n, int64_t k, const float* w, float* dst) {
  const int64_t panels = (n + NR - 1) / NR;
  const int threads = std::min(maxThreads(), threadsFor(static_cast<double>(n) * k, 1.0e6));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t jp = 0; jp < panels; ++jp)
    packBPanel(true, w, k, 0, k, jp * NR, static_cast<int>(std::min<int64_t>(NR, n - jp * NR)), dst + jp * NR * k);
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
  float* ap = scratch(6, static_cast<size_t>(m * k));
  // ap: tile t (rows r0..r0+R) stored k-major at ap + r0·k.
  for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
    const int64_t R = base + (t < extra ? 1 : 0);
    float* d = ap + r0 * k;
    for (int64_t i = 0; i < R; ++i) {
      const float* src = A + (r0 + i) * lda;
      for (int64_t p = 0; p < k; ++p) d[p * R + i] = src[p];
    }
    r0 += R;
  }
  const int64_t panels = (n + NR - 1) / NR;
  const int threads = std::min<int64_t>(std::min(maxThreads(), threadsFor(2.0 * m * n * k, 2.0e5)), panels);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t jp = 0; jp < panels; ++jp) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, n - jp * NR));
    const float* b = P + jp * NR * k;
    for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
      const int64_t R = base + (t < extra ? 1 : 0);
      const float* pf = t == 0 && jp + 1 < panels ? b + NR * k : nullptr;
      kPackedKernels[R - 1](k, ap + r0 * k, b, C + r0 * ldc + jp * NR, ldc, nr, accumulate, pf);
      r0 += R;
    }
  }
}

double rawBlasGflops(int64_t m, int64_t n, int64_t k, int iterations) {
#ifdef MOR_HAVE_OPENBLAS
  std::vector<float> a(static_cast<size_t>(m * k)), b(static_cast<size_t>(k * n)), c(static_cast<size_t>(m * n));
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>((i * 7919) % 1000) * 1e-3f - 0.5f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>((i * 104729) % 1000) * 1e-3f - 0.5f;
  auto run = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(m), static_cast<blasint>(n),
                static_cast<blasint>(k), 1.f, a.data(), static_cast<blasint>(k), b.data(), static_cast<blasint>(n),
                0.f, c.data(), static_cast<blasint>(n));
  };
  // OpenBLAS with its own threads, as many as our loops use: the library's best on its own.
  blasInit();
  openblas_set_num_threads(maxThreads());
  run();  // warm-up
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) run();
  const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  openblas_set_num_threads(g_blasThreads);
  return 2.0 * m * n * k * iterations / dt * 1e-9;
#else
  (void)m, (void)n, (void)k, (void)iterations;
  return -1.0;
#endif
}

}  // namespace mor
