// Functions each instruction-set variant defines for its own kernel sources, outside the kernel
// table (isa.h): called only from code of the same variant.
#pragma once
#include <cstdint>

#include "isa.h"
#include "kernels.h"

MOR_ISA_BEGIN
/**
 * attentionForward over K and V that hold bf16 values (a bf16 K/V pool's rows, widened). Where
 * the variant has AVX512_BF16, the dense query blocks run both products on vdpbf16ps, which
 * rounds scale·Q and the softmax numerators P to bf16 too (max, sums and the normalisation stay
 * f32, as does the few-query path); elsewhere it is attentionForward.
 */
void attentionForwardBf16(const AttnShape& a, const float* q, const float* k, const float* v, float* out, float* lse);
/**
 * dst[i] = src[i] rounded to bf16 (nearest-even), as f32: what a bf16 pool holds (on the
 * AVX512_BF16 vector path a denormal rounds to zero, as vdpbf16ps reads it).
 */
void roundedToBf16(const float* src, int64_t n, float* dst);
MOR_ISA_END
