// bfloat16 storage for decoding (packed weights, the K/V pool): the top 16 bits of an IEEE f32.
// One rounding rule everywhere, the same as src/backend/bf16.ts: round to nearest, ties to even;
// NaN stays NaN (quiet, sign kept); ±inf and values past the largest bf16 round to ±inf.
// Products and sums are never done in bf16: values are widened back to f32 (a 16-bit shift).
#pragma once

#include <cstdint>
#include <cstring>

namespace mor {

inline uint16_t f32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // NaN → quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float bf16ToF32(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline void f32ToBf16Row(const float* src, int64_t n, uint16_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32ToBf16(src[i]);
}

}  // namespace mor
