// The f32 micro-kernel of the packed-weight products, compiled into each instruction-set variant
// (isa.h): sgemmPacked (gemm_builtin.cc) runs it over f32 weight panels, sgemmPackedBf16
// (gemm_bf16.cc) over bf16 panels widened once into f32 where several row tiles share them.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "common.h"
#include "gemm.h"

namespace mor {
namespace MOR_ISA {

// Rows of the next packed weight panel for a kernel call to prefetch while it computes: `rows` of
// them from `at`, one every `every` k steps, so the weight streams from memory under the
// arithmetic; none when `at` is null. A row is kPanelRowBytes: a k step of an f32 panel (kPackNR
// floats) or a k-pair step of a bf16 one (kPackNR pairs). The caller shares a panel's rows out
// between all of the calls over the panel before it (panelPrefetchFor): prefetched by the first
// call alone, a panel of `small` went out in a burst that filled the core's miss buffers (perf over
// batch-32 decoding on Zen 3: the 6-row calls, first of each sub-panel among them, took 1.5x the
// time per row of the 5-row ones; spread, the products ran 1.13-1.38x faster at 4-32 rows).
constexpr int64_t kPanelRowBytes = kPackNR * 4;
// A kernel calls step() once per k step.
struct PanelPrefetch {
  const char* at = nullptr;
  int64_t rows = 0, every = 1, countdown = 1;
  MOR_INLINE void step() {
    if (at != nullptr && --countdown == 0) {
      __builtin_prefetch(at, 0, 2);
      __builtin_prefetch(at + 64, 0, 2);
      at = --rows > 0 ? at + kPanelRowBytes : nullptr;
      countdown = every;
    }
  }
};
// Call `call` of `calls` over a panel of `steps` k steps, the next panel `next` of `nextRows` rows.
inline PanelPrefetch panelPrefetchFor(const void* next, int64_t nextRows, int64_t steps, int64_t call, int64_t calls) {
  if (next == nullptr || nextRows <= 0) return {};
  const int64_t per = (nextRows + calls - 1) / calls, first = call * per;
  if (first >= nextRows) return {};
  return {static_cast<const char*>(next) + first * kPanelRowBytes, std::min(per, nextRows - first),
          std::max<int64_t>(1, steps / per)};
}
// c (R, nr) = acc [+ c]: a register tile of R rows × NV vectors, its first nr columns.
template <int R, int NV>
MOR_INLINE void storeTile(const vf (&acc)[R][NV], float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate) {
  constexpr int NR = NV * W;
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

// c (R, nr) = a (R, k; rows lda apart) · b (k, NVK·W; rows LDB floats apart) [+ c when
// accumulate]. b is a sub-panel of a packed weight panel (LDB = kPackNR; NVK = 2, or
// kPackNR / W for one row over a whole panel) or a widened bf16 sub-panel (LDB = NVK·W).
template <int R, int NVK, int64_t LDB>
MOR_INLINE void packedKernel(int64_t k, const float* MOR_RESTRICT a, int64_t lda, const float* MOR_RESTRICT b,
                             float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, PanelPrefetch pf) {
  constexpr int NV = NVK;
  vf acc[R][NV];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (int64_t p = 0; p < k; ++p) {
    vf bv[NV];
    pf.step();
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * LDB + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const vf ai = bcast(a[i * lda + p]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * bv[v];
    }
  }
  storeTile<R, NV>(acc, c, ldc, nr, accumulate);
}

// The kernel for each tile height R = 1..MAXR, by R − 1: packedKernel<R, NVK, LDB> behind one
// function-pointer type (a tile's height is known only at run time).
typedef void (*PackedKernelFn)(int64_t, const float*, int64_t, const float*, float*, int64_t, int, bool, PanelPrefetch);
template <int NVK, int64_t LDB, int R>
void packedKernelFn(int64_t k, const float* a, int64_t lda, const float* b, float* c, int64_t ldc, int nr, bool acc,
                    PanelPrefetch pf) {
  packedKernel<R, NVK, LDB>(k, a, lda, b, c, ldc, nr, acc, pf);
}
template <int NVK, int64_t LDB, int... Rs>
constexpr std::array<PackedKernelFn, sizeof...(Rs)> packedKernelTable(std::integer_sequence<int, Rs...>) {
  return {&packedKernelFn<NVK, LDB, Rs + 1>...};
}
template <int NVK, int64_t LDB, int MAXR>
constexpr std::array<PackedKernelFn, MAXR> packedKernels() {
  return packedKernelTable<NVK, LDB>(std::make_integer_sequence<int, MAXR>{});
}

}  // namespace MOR_ISA
}  // namespace mor
