// GEMM providers (OpenBLAS when linked, else / also the built-in kernel of the current
// instruction-set variant, gemm_builtin.cc) and the pre-packed weight layout. See gemm.h.
#include "gemm.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bf16.h"
#include "common.h"
#include "isa.h"

#ifdef MOR_HAVE_OPENBLAS
#include <cblas.h>
#endif

namespace mor {

namespace {

#ifdef MOR_HAVE_OPENBLAS
int g_provider = kGemmOpenBLAS;
#else
int g_provider = kGemmBuiltin;
#endif

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
void sgemm(bool tA, bool tB, int64_t m, int64_t n, int64_t k, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
#ifdef MOR_HAVE_OPENBLAS
  if (g_provider == kGemmOpenBLAS && k > 0) {
    blasGemm(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc,
             std::min(maxThreads(), threadsFor(2.0 * m * n * k, 1.0e6)));
    return;
  }
#endif
  isa().sgemmBuiltin(tA, tB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, maxThreads());
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
      isa().sgemmBuiltin(tA, tB, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC,
                   ldc, 1);
    }
    return;
  }
  for (int64_t b = 0; b < batch; ++b)
    sgemm(tA, tB, m, n, k, alpha, A + b * strideA, lda, B + b * strideB, ldb, beta, C + b * strideC, ldc);
}

int64_t packedWeightSize(int64_t n, int64_t k) { return (n + kPackNR - 1) / kPackNR * kPackNR * k; }

// Panel jp holds rows jp·kPackNR.. of W as columns: d[p·kPackNR + j] = W[jp·kPackNR + j, p], zero past n.
// The same layout for every variant, so a weight packed once serves any of them.
void packWeight(int64_t n, int64_t k, const float* w, float* dst) {
  const int64_t panels = (n + kPackNR - 1) / kPackNR;
  const int threads = std::min(maxThreads(), threadsFor(static_cast<double>(n) * k, 1.0e6));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t jp = 0; jp < panels; ++jp) {
    const int64_t j0 = jp * kPackNR, nr = std::min<int64_t>(kPackNR, n - j0);
    float* d = dst + j0 * k;
    for (int64_t p0 = 0; p0 < k; p0 += 16) {  // 16 k at a time: reads stay within a line per row
      const int64_t pe = std::min(k, p0 + 16);
      for (int64_t j = 0; j < kPackNR; ++j)
        for (int64_t p = p0; p < pe; ++p) d[p * kPackNR + j] = j < nr ? w[(j0 + j) * k + p] : 0.f;
    }
  }
}

int64_t packedWeightSizeBf16(int64_t n, int64_t k) { return (n + kPackNR - 1) / kPackNR * kPackNR * (k + (k & 1)); }

// Panel jp, k-pair q: d[q·2·kPackNR + 2j + e] = bf16(W[jp·kPackNR + j, 2q + e]) (see gemm.h).
void packWeightBf16(int64_t n, int64_t k, const float* w, uint16_t* dst) {
  const int64_t panels = (n + kPackNR - 1) / kPackNR, kp = k + (k & 1);
  const int threads = std::min(maxThreads(), threadsFor(static_cast<double>(n) * k, 1.0e6));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t jp = 0; jp < panels; ++jp) {
    const int64_t j0 = jp * kPackNR, nr = std::min<int64_t>(kPackNR, n - j0);
    uint16_t* d = dst + j0 * kp;
    for (int64_t p0 = 0; p0 < kp; p0 += 16) {
      const int64_t pe = std::min(kp, p0 + 16);
      for (int64_t j = 0; j < kPackNR; ++j)
        for (int64_t p = p0; p < pe; ++p)
          d[(p >> 1) * 2 * kPackNR + 2 * j + (p & 1)] = j < nr && p < k ? f32ToBf16(w[(j0 + j) * k + p]) : 0;
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
