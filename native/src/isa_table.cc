// One variant's kernel table (isa.h) and its machine-ceiling probes, compiled once per variant.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>

#include "common.h"
#include "isa.h"

MOR_ISA_BEGIN

namespace {
double secondsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

// kChains independent chains x = x·m + a per thread (enough to cover the FMA latency on every
// pipe: 2 pipes × 4–5 cycles), each thread until `seconds` have passed.
double probeFmaGflops(int threads, double seconds) {
  constexpr int kChains = MOR_VW >= 16 ? 24 : 12;
  constexpr int64_t kSteps = 1 << 16;
  double flops = 0, elapsed = 0;
  volatile float sink = 0;
#pragma omp parallel num_threads(threads) reduction(+ : flops) reduction(max : elapsed)
  {
    vf acc[kChains];
    for (int c = 0; c < kChains; ++c) acc[c] = bcast(1.f + 0.01f * c);
    vf m = bcast(0.9999f), a = bcast(1e-3f);
    MOR_PIN(m);
    MOR_PIN(a);
    const auto t0 = std::chrono::steady_clock::now();
    int64_t steps = 0;
    do {
      for (int64_t s = 0; s < kSteps; ++s) {
#pragma GCC unroll 32
        for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
      }
      steps += kSteps;
    } while (secondsSince(t0) < seconds);
    elapsed = secondsSince(t0);
    flops = 2.0 * W * kChains * static_cast<double>(steps);
    vf t = acc[0];
    for (int c = 1; c < kChains; ++c) t += acc[c];
    sink = sink + t[0];
  }
  return flops / elapsed * 1e-9;
}

// Every thread sums its contiguous share of the buffer with four vector accumulators.
double probeStreamReadGbps(int64_t bytes, int threads, int repeats) {
  const int64_t n = std::max<int64_t>(bytes / 4 / (4 * W) * (4 * W), 4 * W);
  float* x = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(n) * 4));
  if (!x) throw std::bad_alloc();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) x[i] = 1.f;  // first touch by the thread that reads it
  double best = 0;
  volatile float sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const int nt = teamSize(), t = threadId();
      const int64_t blocks = n / (4 * W), b0 = blocks * t / nt, b1 = blocks * (t + 1) / nt;
      vf s0{}, s1{}, s2{}, s3{};
      for (int64_t b = b0; b < b1; ++b) {
        const float* p = x + b * 4 * W;
        s0 += vload(p);
        s1 += vload(p + W);
        s2 += vload(p + 2 * W);
        s3 += vload(p + 3 * W);
      }
      const vf s = (s0 + s1) + (s2 + s3);
      total += s[0];
    }
    const double dt = secondsSince(t0);
    sink = sink + total;
    best = std::max(best, static_cast<double>(n) * 4 / dt * 1e-9);
  }
  std::free(x);
  return best;
}

extern const KernelTable kTable;
const KernelTable kTable = {
    MOR_STR(MOR_ISA),
#define MOR_ISA_ENTRY(n) &n,
    MOR_ISA_KERNELS(MOR_ISA_ENTRY)
#undef MOR_ISA_ENTRY
};

MOR_ISA_END
