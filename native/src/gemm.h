// GEMM: OpenBLAS's cblas_sgemm when linked (MOR_HAVE_OPENBLAS), and a built-in cache-blocked,
// packed kernel (BLIS-style) that is always available. All matrices are row-major.
#pragma once
#include <cstdint>

namespace mor {

enum GemmProviderId : int { kGemmBuiltin = 0, kGemmOpenBLAS = 1 };

bool haveOpenBLAS();
int gemmProvider();
/** Returns false when the provider is not compiled in. */
bool setGemmProvider(int provider);
/** OpenMP threads for our loops, and OpenBLAS threads when linked. */
void setNumThreads(int n);

/**
 * C = alpha·op(A)·op(B) + beta·C.  op(A) (m, k), op(B) (k, n), C (m, n), leading dimensions in
 * elements. beta == 0 never reads C. Uses the current provider and up to maxThreads() threads.
 */
void sgemm(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

/** Batched form with element strides between items (0 broadcasts an operand). */
void sgemmBatched(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* A, int64_t strideA, const float* B, int64_t strideB, float beta, float* C,
                  int64_t strideC, int64_t batch);

// sgemmBuiltin and sgemmPacked are per instruction-set variant (isa.h): call them as
// isa().sgemmBuiltin(...), isa().sgemmPacked(...).
namespace sig {
/** The built-in kernel with an explicit thread count (1 = serial, safe inside parallel regions). */
void sgemmBuiltin(bool transA, bool transB, int64_t m, int64_t n, int64_t k, float alpha, const float* A,
                  int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc, int threads);
}  // namespace sig

/** Columns of a packed weight panel: one layout for every instruction-set variant. */
constexpr int kPackNR = 32;
/** Floats of a packed weight (n, k) (see sgemmPacked). */
int64_t packedWeightSize(int64_t n, int64_t k);
/** Repack a constant weight W (n, k) row-major for sgemmPacked. dst holds packedWeightSize floats. */
void packWeight(int64_t n, int64_t k, const float* w, float* dst);
/**
 * bf16 packed weight (n, k): the same 32-column panels, each k-pair of a column adjacent (the
 * layout AVX512_BF16's vdpbf16ps reads, and one a 16-bit shift / mask widens to f32):
 *   panel jp, k-pair q:  64 values  [W[c0, 2q], W[c0, 2q+1], W[c1, 2q], W[c1, 2q+1], ..., W[c31, 2q+1]]
 * with c_j = jp·32 + j; k is padded to even, columns past n and the pad are zero. Each value is
 * W rounded to nearest-even bf16 (bf16.h).
 */
int64_t packedWeightSizeBf16(int64_t n, int64_t k);
void packWeightBf16(int64_t n, int64_t k, const float* w, uint16_t* dst);
namespace sig {
/**
 * C (m, n) = A (m, k) · Wᵀ (+ C when accumulate), W given packed by packWeight. Built-in kernel
 * whatever the provider: it is the decoding path, where the weight is read once per call. C must
 * not overlap A (A's rows are read in place while C is written).
 */
void sgemmPacked(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* packed, float* C,
                 int64_t ldc, bool accumulate);
/** sgemmPacked over a bf16 weight (packWeightBf16): products and sums in f32. */
void sgemmPackedBf16(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const uint16_t* packed, float* C,
                     int64_t ldc, bool accumulate);
}  // namespace sig

/** GFLOP/s of cblas_sgemm called directly from C++ (C = A·B, no transposes); -1 without OpenBLAS. */
double rawBlasGflops(int64_t m, int64_t n, int64_t k, int iterations);

}  // namespace mor
