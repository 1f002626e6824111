// The f32 micro-kernel of the packed-weight products, compiled into each instruction-set variant
// (isa.h): sgemmPacked (gemm_builtin.cc) runs it over f32 weight panels, sgemmPackedBf16
// (gemm_bf16.cc) over bf16 panels widened once into f32 where several row tiles share them.
#pragma once

#include <cstdint>

#include "common.h"
#include "gemm.h"

namespace mor {

namespace MOR_ISA {

// c (R, nr) = a (R, k; rows lda apart) · b (k, NVK·W; rows LDB floats apart) [+ c when
// accumulate]. b is a sub-panel of a packed weight panel (LDB = kPackNR; NVK = 2, or
// kPackNR / W for one row over a whole panel) or a widened bf16 sub-panel (LDB = NVK·W).
// prefetch: the next packed f32 panel (rows kPackNR floats apart), fetched a k step at a time while
// this one computes, or null.
template <int R, int NVK, int64_t LDB>
MOR_INLINE void packedKernel(int64_t k, const float* MOR_RESTRICT a, int64_t lda, const float* MOR_RESTRICT b,
                             float* MOR_RESTRICT c, int64_t ldc, int nr, bool accumulate, const float* prefetch) {
  constexpr int NV = NVK, NR = NVK * W;
  vf acc[R][NV];
#pragma GCC unroll 32
  for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[i][v] = vf{};
  for (int64_t p = 0; p < k; ++p) {
    vf bv[NV];
    if (prefetch != nullptr) {
      // The next panel, a step ahead: the weight streams from memory while this one computes.
      __builtin_prefetch(prefetch + p * kPackNR, 0, 2);
      __builtin_prefetch(prefetch + p * kPackNR + 16, 0, 2);
    }
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(b + p * LDB + v * W);
#pragma GCC unroll 32
    for (int i = 0; i < R; ++i) {
      const vf ai = bcast(a[i * lda + p]);
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

}  // namespace MOR_ISA
}  // namespace mor
