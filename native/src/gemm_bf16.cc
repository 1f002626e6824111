// The packed-weight product over bf16 panels (gemm.h, packWeightBf16), compiled once per
// instruction-set variant (isa.h). Decoding reads every weight once per call, so halving its bytes
// halves the dominant memory traffic; the arithmetic stays f32: each 32-bit lane of a k-pair load
// holds W[c, 2q] (low half) and W[c, 2q+1] (high half), widened by a shift and a mask, then two
// f32 FMAs per activation row. With four row tiles or more over a sub-panel (prefill, large
// batches), the sub-panel is widened once into f32 and the f32 micro-kernel runs over it.
//
// The avx512bf16 variant instead runs vdpbf16ps, which does both products of a k-pair in one
// instruction (a bf16 pair of activations broadcast against 16 columns' weight pairs, summed into
// f32 lanes): it needs the activations in bf16 too, so each row of A is rounded to nearest-even
// bf16 (bf16.h, the same rule as the weights) when it is packed. That doubles the per-product
// error bound (2⁻⁸ → 2·2⁻⁸ of Σ|a·w|) and, like every AVX512_BF16 instruction, treats subnormal
// inputs as zero; measured on a Zen 4 core it is 1.5× (1 row) to 2× (4–12 rows) the widening
// kernel's rate on decoding shapes (native/README.md, "bf16").
#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "bf16_dot.h"
#include "common.h"
#include "isa.h"
#include "packed_kernel.h"

MOR_ISA_BEGIN

namespace {

#if MOR_VW == 16
constexpr int MRB = 12;
#else
constexpr int MRB = 6;
#endif
constexpr int NRB = 2 * W;          // columns of the register tile (two vectors)
constexpr int NVB = NRB / W;
constexpr int64_t PR = 2 * kPackNR;  // values per k-pair row of a panel
#ifndef MOR_BF16_DOT
// Row tiles from which a sub-panel is widened once for all of them (widenSubPanel) rather than in
// registers by each. Best of 30-40 windows, interleaved, Zen 3 (AVX2): 8 rows (2 tiles)
// 0.73-0.86x, 16 (3) 0.95-1.07x, 20-28 (4-5) 0.99-1.13x, 32 1.13-1.18x, 64-1,024 1.2-1.33x.
constexpr int64_t kWidenOnceTiles = 4;
#endif
static_assert(kPackNR % NRB == 0, "packed weight panels must hold whole sub-panels");

// One k-pair step of bf16Kernel: the pair's weight row (bq) widened, then each activation row's
// values p and p + 1 (only p when Second is false: an odd k's last value, whose weight pair ends
// in the pad zero) broadcast against it.
template <int R, bool Second>
MOR_INLINE void widenStep(vf (&acc)[R][NVB], const uint16_t* MOR_RESTRICT bq, const float* MOR_RESTRICT a,
                          int64_t lda, int64_t p) {
  vf lo[NVB], hi[NVB];
#pragma GCC unroll 4
  for (int v = 0; v < NVB; ++v) {
    const vu x = vloadPairs(bq + v * 2 * W);
    lo[v] = bf16Low(x);
    hi[v] = bf16High(x);
  }
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) {
    const vf a0 = bcast(a[i * lda + p]);
    if constexpr (Second) {
      const vf a1 = bcast(a[i * lda + p + 1]);
#pragma GCC unroll 4
      for (int v = 0; v < NVB; ++v) acc[i][v] += a0 * lo[v] + a1 * hi[v];
    } else {
#pragma GCC unroll 4
      for (int v = 0; v < NVB; ++v) acc[i][v] += a0 * lo[v];
    }
  }
}

// c (R, nr) = a (R, k; rows lda apart, read in place) · b (k, NRB) [+ c]; b a sub-panel of a bf16
// panel: k-pair rows PR values apart (k padded to even with zero weights).
template <int R>
MOR_INLINE void bf16Kernel(int64_t k, const float* MOR_RESTRICT a, int64_t lda, const uint16_t* MOR_RESTRICT b,
                           float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, PanelPrefetch pf) {
  vf acc[R][NVB];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NVB; ++v) acc[i][v] = vf{};
  const int64_t full = k / 2;
  for (int64_t q = 0; q < full; ++q) {
    pf.step();
    widenStep<R, true>(acc, b + q * PR, a, lda, 2 * q);
  }
  if (k & 1) widenStep<R, false>(acc, b + full * PR, a, lda, k - 1);
  storeTile<R, NVB>(acc, c, ldc, nr, accumulate);
}

#ifndef MOR_BF16_DOT
// One row (m = 1) over a whole panel (kPackNR columns, NVK vectors): c (1, nr) = a (2·pairs) ·
// b [+ c]. The low and high halves of each k-pair go to separate accumulators, so 2·NVK FMA
// chains hide the FMA latency that two chains (one sub-panel of the general kernel) leave exposed.
// The row is read in place, as bf16Kernel reads its rows: an odd k's last value alone.
template <int NVK>
MOR_INLINE void bf16RowKernel(int64_t k, const float* MOR_RESTRICT a, const uint16_t* MOR_RESTRICT b,
                              float* MOR_RESTRICT c, int nr, bool accumulate, PanelPrefetch pf) {
  vf accLo[NVK], accHi[NVK];
#pragma GCC unroll 8
  for (int v = 0; v < NVK; ++v) accLo[v] = accHi[v] = vf{};
  const int64_t full = k / 2;
  for (int64_t q = 0; q < full; ++q) {
    pf.step();
    const vf a0 = bcast(a[2 * q]), a1 = bcast(a[2 * q + 1]);
#pragma GCC unroll 8
    for (int v = 0; v < NVK; ++v) {
      const vu x = vloadPairs(b + q * PR + v * 2 * W);
      accLo[v] += a0 * bf16Low(x);
      accHi[v] += a1 * bf16High(x);
    }
  }
  if (k & 1) {
    const vf a0 = bcast(a[k - 1]);
#pragma GCC unroll 8
    for (int v = 0; v < NVK; ++v) accLo[v] += a0 * bf16Low(vloadPairs(b + full * PR + v * 2 * W));
  }
  alignas(64) float tmp[NVK * W];
  for (int v = 0; v < NVK; ++v) vstore(tmp + v * W, accLo[v] + accHi[v]);
  for (int j = 0; j < nr; ++j) c[j] = accumulate ? c[j] + tmp[j] : tmp[j];
}
#endif

#ifndef MOR_BF16_DOT
// A sub-panel (k, NRB) widened once into f32 rows NRB floats apart, for the f32 micro-kernel
// (packed_kernel.h): with several row tiles over a sub-panel, bf16Kernel widens every weight
// again for each tile, and the widening (a shift or a mask per vector, on the FP pipes the FMAs
// need) held it to 0.65 of the f32 products' rate on a Zen 3 core. The next panel is prefetched
// by the f32 kernel calls over the widened rows, not here (a burst: see PanelPrefetch).
MOR_INLINE void widenSubPanel(int64_t k, const uint16_t* MOR_RESTRICT b, float* MOR_RESTRICT dst) {
  const int64_t full = k / 2;
  for (int64_t q = 0; q < full; ++q) {
#pragma GCC unroll 4
    for (int v = 0; v < NVB; ++v) {
      const vu x = vloadPairs(b + q * PR + v * 2 * W);
      vstore(dst + 2 * q * NRB + v * W, bf16Low(x));
      vstore(dst + (2 * q + 1) * NRB + v * W, bf16High(x));
    }
  }
  if (k & 1)
#pragma GCC unroll 4
    for (int v = 0; v < NVB; ++v) vstore(dst + (k - 1) * NRB + v * W, bf16Low(vloadPairs(b + full * PR + v * 2 * W)));
}

constexpr auto kWidenedKernels = packedKernels<NVB, NRB, MRB>();
#endif

#ifdef MOR_BF16_DOT
// The same product with vdpbf16ps: a holds the rows' activations as bf16 pairs, row by row,
// a[i·pairs + q] = bf16(A[i, 2q]) | bf16(A[i, 2q+1]) << 16.
template <int R>
MOR_INLINE void dotKernel(int64_t k, const uint32_t* MOR_RESTRICT a, int64_t lda, const uint16_t* MOR_RESTRICT b,
                          float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, PanelPrefetch pf) {
  static_assert(NVB == 2, "two 16-column vectors per sub-panel");
  const int64_t pairs = (k + 1) / 2;
  __m512 acc[R][2];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
  for (int64_t q = 0; q < pairs; ++q) {
    pf.step();
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + q * PR);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + q * PR + 32);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * lda + q]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
    }
  }
  if (nr == NRB) {
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i)
      for (int v = 0; v < 2; ++v) {
        float* cp = c + i * ldc + v * W;
        vstore(cp, accumulate ? vload(cp) + vf(acc[i][v]) : vf(acc[i][v]));
      }
  } else {
    alignas(64) float tmp[NRB];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < 2; ++v) _mm512_store_ps(tmp + v * W, acc[i][v]);
      for (int j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tmp[j] : tmp[j];
    }
  }
}
typedef uint32_t APack;  // an activation pair in bf16
#else
typedef float APack;  // an activation in f32
#endif

// a: the activation rows, lda APacks apart (A itself for the widening kernel; its bf16 pairs,
// row by row, for vdpbf16ps)
typedef void (*Bf16KernelFn)(int64_t, const APack*, int64_t, const uint16_t*, float*, int64_t, int, bool,
                             PanelPrefetch);
template <int R>
void bf16KernelFn(int64_t k, const APack* a, int64_t lda, const uint16_t* b, float* c, int64_t ldc, int nr, bool acc,
                  PanelPrefetch pf) {
#ifdef MOR_BF16_DOT
  dotKernel<R>(k, a, lda, b, c, ldc, nr, acc, pf);
#else
  bf16Kernel<R>(k, a, lda, b, c, ldc, nr, acc, pf);
#endif
}
template <int... Rs>
constexpr std::array<Bf16KernelFn, sizeof...(Rs)> bf16KernelTable(std::integer_sequence<int, Rs...>) {
  return {&bf16KernelFn<Rs + 1>...};
}
constexpr auto kBf16Kernels = bf16KernelTable(std::make_integer_sequence<int, MRB>{});

}  // namespace

void sgemmPackedBf16(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const uint16_t* P, float* C,
                     int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(C + i * ldc, C + i * ldc + n, 0.f);
    return;
  }
  const int64_t kp = k + (k & 1), pairs = kp / 2;
  // Row tiles of near-equal height ≤ MRB. The widening kernel reads A's rows in place; vdpbf16ps
  // reads their bf16 pairs, `pairs` to a row (aRows).
  const int64_t tiles = (m + MRB - 1) / MRB;
  const int64_t base = m / tiles, extra = m % tiles;
#ifdef MOR_BF16_DOT
  const int64_t aStride = pairs;
  APack* aRows = reinterpret_cast<APack*>(scratch(30, static_cast<size_t>(m * pairs)));
  // rows i0..i1 into ap, rounded W pairs at a time (bf16PairsOf; one value at a time, the
  // rounding was 22% of a 1,024-row product in a bf16 prefill of `small`) and stored where the
  // row keeps them: the kernel reads a tile's rows in place, as the f32 one reads A's
  // (gemm_builtin.cc). Storing them k-major down each tile's columns instead, a pair at a time,
  // measured 0.95–1.0× of this at 8–1,024 rows (Zen 4, in-process pairs).
  auto packRows = [&](APack* ap, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) bf16PairsOf(A + i * lda, k, 1.f, ap + i * pairs);
  };
#else
  const int64_t aStride = lda;
  const APack* aRows = A;
  const bool rowOverPanel = m == 1;  // a single row (decoding one sequence): whole panels, bf16RowKernel
  // Tiles at least this many share a sub-panel widened once (widenSubPanel); fewer widen in
  // registers as they go.
  const bool widenOnce = tiles >= kWidenOnceTiles;
#endif
  const int64_t panels = (n + kPackNR - 1) / kPackNR;
  const int threads = std::min<int64_t>(std::min(maxThreads(), threadsForFlopsAndBytes(2.0 * m * n * k, 2.0e5, 2.0 * n * k)), panels);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const APack* ap = aRows;
#ifndef MOR_BF16_DOT
    float* wide = widenOnce ? scratch(6, static_cast<size_t>(kp * NRB)) : nullptr;  // the widened sub-panel
#endif
#ifdef MOR_BF16_DOT
    // each thread rounds a share of the rows (with rows this few a serial pack leaves the other
    // threads waiting); one row, each thread all of it into its own scratch, which costs less
    // than the barrier (decoding a single sequence)
    if (m == 1) {
      APack* own = reinterpret_cast<APack*>(scratch(7, static_cast<size_t>(pairs)));
      packRows(own, 0, 1);
      ap = own;
    } else {
      const int team = teamSize(), me = threadId();
      packRows(aRows, m * me / team, m * (me + 1) / team);
#pragma omp barrier
    }
#endif
#pragma omp for schedule(static) nowait  // the region's end is the barrier
    for (int64_t jp = 0; jp < panels; ++jp) {
      const uint16_t* b = P + jp * kPackNR * kp;
      const uint16_t* next = jp + 1 < panels ? b + kPackNR * kp : nullptr;
#ifndef MOR_BF16_DOT
      if (rowOverPanel) {
        const int nr = static_cast<int>(std::min<int64_t>(kPackNR, n - jp * kPackNR));
        bf16RowKernel<kPackNR / W>(k, A, b, C + jp * kPackNR, nr, accumulate, panelPrefetchFor(next, pairs, pairs, 0, 1));
        continue;
      }
#endif
      const int64_t subs = std::min<int64_t>(kPackNR / NRB, (n - jp * kPackNR + NRB - 1) / NRB);
      for (int64_t sub = 0; sub < subs; ++sub) {
        const int64_t j0 = jp * kPackNR + sub * NRB;
        const int nr = static_cast<int>(std::min<int64_t>(NRB, n - j0));
#ifndef MOR_BF16_DOT
        if (widenOnce) {
          widenSubPanel(k, b + sub * 2 * NRB, wide);
          for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
            const int64_t R = base + (t < extra ? 1 : 0);
            const PanelPrefetch pf = panelPrefetchFor(next, pairs, k, sub * tiles + t, subs * tiles);
            kWidenedKernels[R - 1](k, A + r0 * lda, lda, wide, C + r0 * ldc + j0, ldc, nr, accumulate, pf);
            r0 += R;
          }
          continue;
        }
#endif
        for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
          const int64_t R = base + (t < extra ? 1 : 0);
#ifdef MOR_BF16_DOT
          // vdpbf16ps (measured on Zen 4): the whole next panel from the first call, as before the
          // f32 and widening kernels spread it (no AVX512_BF16 CPU at hand to measure the change)
          const PanelPrefetch pf = sub == 0 && t == 0 ? panelPrefetchFor(next, pairs, pairs, 0, 1) : PanelPrefetch{};
#else
          const PanelPrefetch pf = panelPrefetchFor(next, pairs, pairs, sub * tiles + t, subs * tiles);
#endif
          kBf16Kernels[R - 1](k, ap + r0 * aStride, aStride, b + sub * 2 * NRB, C + r0 * ldc + j0, ldc, nr, accumulate, pf);
          r0 += R;
        }
      }
    }
  }
}

MOR_ISA_END
