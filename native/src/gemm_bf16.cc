// The packed-weight product over bf16 panels (gemm.h, packWeightBf16), compiled once per
// instruction-set variant (isa.h). Decoding reads every weight once per call, so halving its bytes
// halves the dominant memory traffic; the arithmetic stays f32: each 32-bit lane of a k-pair load
// holds W[c, 2q] (low half) and W[c, 2q+1] (high half), widened by a shift and a mask, then two
// f32 FMAs per activation row. (AVX512_BF16's vdpbf16ps would fold both into one instruction but
// needs the activations rounded to bf16 too; measured against this on a decoding shape it did not
// pay, see native/README.md, "bf16".)
#include <algorithm>
#include <array>
#include <utility>

#include "common.h"
#include "isa.h"

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
static_assert(kPackNR % NRB == 0, "packed weight panels must hold whole sub-panels");

// c (R, nr) = a (R, 2·pairs) · b (2·pairs, NRB) [+ c]; a k-major R-tall (k padded to even, zero),
// b a sub-panel of a bf16 panel: k-pair rows PR values apart.
template <int R>
MOR_INLINE void bf16Kernel(int64_t pairs, const float* MOR_RESTRICT a, const uint16_t* MOR_RESTRICT b,
                           float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, const uint16_t* prefetch) {
  vf acc[R][NVB];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NVB; ++v) acc[i][v] = vf{};
  for (int64_t q = 0; q < pairs; ++q) {
    if (prefetch != nullptr) {
      __builtin_prefetch(prefetch + q * PR, 0, 2);
      __builtin_prefetch(prefetch + q * PR + 32, 0, 2);
    }
    vf lo[NVB], hi[NVB];
#pragma GCC unroll 4
    for (int v = 0; v < NVB; ++v) {
      const vu x = vloadPairs(b + q * PR + v * 2 * W);
      lo[v] = bf16Low(x);
      hi[v] = bf16High(x);
    }
    const float* ap = a + 2 * q * R;
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const vf a0 = bcast(ap[i]), a1 = bcast(ap[R + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NVB; ++v) acc[i][v] += a0 * lo[v] + a1 * hi[v];
    }
  }
  if (nr == NRB) {
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < NVB; ++v) {
        float* cp = c + i * ldc + v * W;
        vstore(cp, accumulate ? vload(cp) + acc[i][v] : acc[i][v]);
      }
  } else {
    alignas(64) float tmp[NRB];
    for (int i = 0; i < R; ++i) {
      for (int v = 0; v < NVB; ++v) vstore(tmp + v * W, acc[i][v]);
      for (int j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tmp[j] : tmp[j];
    }
  }
}

typedef void (*Bf16KernelFn)(int64_t, const float*, const uint16_t*, float*, int64_t, int, bool, const uint16_t*);
template <int R>
void bf16KernelFn(int64_t pairs, const float* a, const uint16_t* b, float* c, int64_t ldc, int nr, bool acc,
                  const uint16_t* prefetch) {
  bf16Kernel<R>(pairs, a, b, c, ldc, nr, acc, prefetch);
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
  // Row tiles of near-equal height ≤ MRB, each stored k-major (kp deep, the pad zero) at ap + r0·kp.
  const int64_t tiles = (m + MRB - 1) / MRB;
  const int64_t base = m / tiles, extra = m % tiles;
  float* ap = scratch(30, static_cast<size_t>(m * kp));
  for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
    const int64_t R = base + (t < extra ? 1 : 0);
    float* d = ap + r0 * kp;
    for (int64_t i = 0; i < R; ++i) {
      const float* src = A + (r0 + i) * lda;
      for (int64_t p = 0; p < k; ++p) d[p * R + i] = src[p];
      if (kp != k) d[k * R + i] = 0.f;
    }
    r0 += R;
  }
  const int64_t panels = (n + kPackNR - 1) / kPackNR;
  const int threads = std::min<int64_t>(std::min(maxThreads(), threadsFor(2.0 * m * n * k, 2.0e5)), panels);
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t jp = 0; jp < panels; ++jp) {
    const uint16_t* b = P + jp * kPackNR * kp;
    for (int64_t sub = 0; sub < kPackNR / NRB && jp * kPackNR + sub * NRB < n; ++sub) {
      const int64_t j0 = jp * kPackNR + sub * NRB;
      const int nr = static_cast<int>(std::min<int64_t>(NRB, n - j0));
      for (int64_t t = 0, r0 = 0; t < tiles; ++t) {
        const int64_t R = base + (t < extra ? 1 : 0);
        const uint16_t* pf = sub == 0 && t == 0 && jp + 1 < panels ? b + kPackNR * kp : nullptr;
        kBf16Kernels[R - 1](pairs, ap + r0 * kp, b + sub * 2 * NRB, C + r0 * ldc + j0, ldc, nr, accumulate, pf);
        r0 += R;
      }
    }
  }
}

MOR_ISA_END
