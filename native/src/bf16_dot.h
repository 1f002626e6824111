// What the AVX512_BF16 kernels share (attention.cc, gemm_bf16.cc): whether this variant has
// vdpbf16ps (MOR_BF16_DOT), and the rounding of f32 values into the bf16 pairs it multiplies. A
// word holds a pair, the lower element in its low half; vdpbf16ps multiplies pairs and adds both
// products into one f32 lane.
#pragma once

#include <cstdint>

#include "bf16.h"
#include "common.h"
#include "isa.h"

#if defined(__AVX512BF16__) && MOR_VW == 16
#define MOR_BF16_DOT 1
#include <immintrin.h>

MOR_ISA_BEGIN

// Word (lo, hi), each rounded to nearest-even.
inline uint32_t bf16Pair(float lo, float hi) {
  return static_cast<uint32_t>(f32ToBf16(lo)) | static_cast<uint32_t>(f32ToBf16(hi)) << 16;
}

// dst[p] = (x[2p], x[2p+1]) · mult rounded to bf16, p < ⌈n/2⌉ (an odd n's last pair ends in 0):
// 2·W values at a time on vcvtne2ps2bf16 (nearest-even; a denormal rounds to zero, as vdpbf16ps
// reads it anyway), the rest one pair at a time.
inline void bf16PairsOf(const float* x, int64_t n, float mult, uint32_t* dst) {
  const __m512 vm = _mm512_set1_ps(mult);
  int64_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + W) * vm, _mm512_loadu_ps(x + i) * vm);
    _mm512_storeu_si512(dst + i / 2, (__m512i)b);
  }
  for (; i + 1 < n; i += 2) dst[i / 2] = bf16Pair(x[i] * mult, x[i + 1] * mult);
  if (i < n) dst[i / 2] = bf16Pair(x[i] * mult, 0.f);
}

MOR_ISA_END
#endif
