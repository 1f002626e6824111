// Shared helpers for the native kernels: portable SIMD vector type, OpenMP shims, scratch memory.
//
// Vectors use GCC/Clang vector extensions so the same source compiles to AVX-512, AVX2, SSE2 or
// NEON, whichever the compiler targets (the variant's -march, see isa.h). Width MOR_VW is in
// floats. The vector helpers live in mor::<MOR_ISA>, so each variant's copies are its own.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "bf16.h"

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define MOR_VW 16
#elif defined(__AVX2__)
#define MOR_VW 8
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
#define MOR_VW 4
#elif defined(__SSE2__)
#define MOR_VW 4
#else
#define MOR_VW 4
#endif

#define MOR_INLINE inline __attribute__((always_inline))
#define MOR_RESTRICT __restrict__

#ifndef MOR_ISA
#define MOR_ISA generic
#endif

// Pins a value in a register: GCC otherwise re-loads vectors it could keep (it folds loads into
// the FMAs, e.g. in attention's score loop, which is bound by loads), or folds a loop away.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define MOR_PIN(x) asm("" : "+v"(x))
#elif defined(__GNUC__) && defined(__aarch64__)
#define MOR_PIN(x) asm("" : "+w"(x))
#else
#define MOR_PIN(x) (void)0
#endif

namespace mor {
namespace MOR_ISA {

constexpr int W = MOR_VW;
typedef float vf __attribute__((vector_size(MOR_VW * 4)));
typedef float vfu __attribute__((vector_size(MOR_VW * 4), aligned(4)));
typedef int32_t vi __attribute__((vector_size(MOR_VW * 4)));
typedef int32_t viu __attribute__((vector_size(MOR_VW * 4), aligned(4)));

MOR_INLINE vf vload(const float* p) { return *reinterpret_cast<const vfu*>(p); }
MOR_INLINE void vstore(float* p, vf v) { *reinterpret_cast<vfu*>(p) = v; }
MOR_INLINE vf vset1(float x) { return vf{} + x; }
// Horizontal sum by halving (log2(W) shuffle+add steps, not W dependent scalar adds).
MOR_INLINE float vhsum(vf v) {
#if MOR_VW >= 16
  typedef float h8 __attribute__((vector_size(32)));
  h8 lo, hi;
  std::memcpy(&lo, &v, sizeof(lo));
  std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
  h8 s8 = lo + hi;
#elif MOR_VW == 8
  typedef float h8 __attribute__((vector_size(32)));
  h8 s8;
  std::memcpy(&s8, &v, sizeof(s8));
#endif
#if MOR_VW >= 8
  typedef float h4 __attribute__((vector_size(16)));
  h4 a, b;
  std::memcpy(&a, &s8, sizeof(a));
  std::memcpy(&b, reinterpret_cast<const char*>(&s8) + sizeof(a), sizeof(b));
  h4 s4 = a + b;
  return (s4[0] + s4[2]) + (s4[1] + s4[3]);
#else
  float s = 0.f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
#endif
}
MOR_INLINE float vhmax(vf v) {
  float s = v[0];
  for (int i = 1; i < W; ++i) s = v[i] > s ? v[i] : s;
  return s;
}
MOR_INLINE vf vmax(vf a, vf b) { return a > b ? a : b; }
MOR_INLINE vf vmin(vf a, vf b) { return a < b ? a : b; }

// ---- exp ---------------------------------------------------------------------------------------
// Cephes-style expf: range reduction x = n·ln2 + r, degree-6 polynomial, scale by 2^n.
// Max relative error about 2 ulp. exp(-inf) and anything below the float range give exactly 0,
// above it +inf, NaN stays NaN. No -ffast-math needed.
constexpr float kExpHi = 88.72283935546875f;   // above: +inf
constexpr float kExpClamp = 88.3762626647949f;  // 2^n stays finite up to here
constexpr float kExpLo = -87.33654022216797f;

MOR_INLINE vf vexp(vf x) {
  const vf hi = vset1(kExpHi), lo = vset1(kExpLo), cl = vset1(kExpClamp);
  vf xc = x > cl ? cl : x;
  xc = xc < lo ? lo : xc;
  const vf magic = vset1(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  vf t = xc * vset1(1.44269504088896341f) + magic;
  vf n = t - magic;
  vf r = xc - n * vset1(0.693359375f);
  r = r - n * vset1(-2.12194440e-4f);
  vf p = vset1(1.9875691500E-4f);
  p = p * r + vset1(1.3981999507E-3f);
  p = p * r + vset1(8.3334519073E-3f);
  p = p * r + vset1(4.1665795894E-2f);
  p = p * r + vset1(1.6666665459E-1f);
  p = p * r + vset1(5.0000001201E-1f);
  p = p * (r * r) + r + vset1(1.0f);
  vi ni = __builtin_convertvector(n, vi);
  vi bits = (ni + 127) << 23;
  vf scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  vf res = p * scale;
  res = x < lo ? vf{} : res;
  res = x > hi ? vset1(std::numeric_limits<float>::infinity()) : res;
  return res;
}

MOR_INLINE float sexp(float x) {
  if (x != x) return x;
  if (x > kExpHi) return std::numeric_limits<float>::infinity();
  if (x < kExpLo) return 0.f;
  if (x > kExpClamp) x = kExpClamp;
  float t = x * 1.44269504088896341f + 12582912.0f;
  float n = t - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// ---- bf16 (bf16.h): widened to f32 by a 16-bit shift, so products and sums stay f32 ----------
typedef uint16_t vhu __attribute__((vector_size(MOR_VW * 2), aligned(2)));
typedef uint32_t vu __attribute__((vector_size(MOR_VW * 4)));
typedef uint32_t vuu __attribute__((vector_size(MOR_VW * 4), aligned(4)));
// W consecutive bf16 values → W floats (zero-extend, shift: vpmovzxwd + vpslld on x86). On x86 the
// intrinsic: GCC 12 lowered __builtin_convertvector of 16 halves to two 128-bit vpmovzxwd and an
// insert (5 instructions a vector), which made bf16 paged attention compute-bound at ~27 GB/s.
MOR_INLINE vf vloadBf16(const uint16_t* p) {
#if MOR_VW == 16 && defined(__AVX512F__)
  return reinterpret_cast<vf>(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
#elif MOR_VW == 8 && defined(__AVX2__)
  return reinterpret_cast<vf>(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
#else
  return reinterpret_cast<vf>(__builtin_convertvector(*reinterpret_cast<const vhu*>(p), vu) << 16);
#endif
}
// W k-pairs of bf16 (2W values, see packWeightBf16) as W 32-bit lanes; the even k of each pair is the
// low half, the odd k the high half: widened by a shift, and by a mask.
MOR_INLINE vu vloadPairs(const uint16_t* p) { return *reinterpret_cast<const vuu*>(p); }
MOR_INLINE vf bf16Low(vu x) { return reinterpret_cast<vf>(x << 16); }
MOR_INLINE vf bf16High(vu x) { return reinterpret_cast<vf>(x & 0xffff0000u); }
// Element loads for kernels templated on their storage (f32 or bf16).
MOR_INLINE vf vloadT(const float* p) { return vload(p); }
MOR_INLINE vf vloadT(const uint16_t* p) { return vloadBf16(p); }
MOR_INLINE float toF32(float x) { return x; }
MOR_INLINE float toF32(uint16_t x) { return bf16ToF32(x); }

// Broadcast. (vset1's `vf{} + x` costs an add: +0 + x differs from x for x = −0; x − 0 does not.)
MOR_INLINE vf bcast(float x) { return x - vf{}; }

}  // namespace MOR_ISA

// ---- threading ---------------------------------------------------------------------------------

// Threads our parallel loops use: setNumThreads() (process-wide, so JS worker threads see it too;
// OpenMP's own setting is per calling thread), else OpenMP's default.
extern int g_numThreads;
inline int maxThreads() {
#ifdef _OPENMP
  const int n = __atomic_load_n(&g_numThreads, __ATOMIC_RELAXED);
  return n > 0 ? n : omp_get_max_threads();
#else
  return 1;
#endif
}
inline int teamSize() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}
inline int threadId() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// Elementwise loops go parallel above this many elements (below it, fork/join costs more than it
// saves on small tensors).
constexpr int64_t kParElems = 32768;

// Threads worth using for `work` units of roughly one flop each (about 256k flops per thread).
inline int threadsFor(double work, double perThread = 262144.0) {
  int t = maxThreads();
  double want = work / perThread;
  if (want < 1.0) return 1;
  if (want < t) return static_cast<int>(want);
  return t;
}

// Bytes from memory worth a thread of their own (see threadsForFlopsAndBytes).
constexpr double kBytesPerThread = 5.0e4;

// Threads for a kernel of `flops` (flopsPerThread each) that streams `bytes` from memory once:
// by its FLOPs, or by its bytes when those weigh more. One core reads memory at about half the
// rate two do (one-row products of `small`: 15-16 GB/s on one thread, 33 on two), so 100 KB read
// is worth the fork even when its FLOPs are not (a product of few rows over its packed weight,
// paged attention of few queries over their K/V).
inline int threadsForFlopsAndBytes(double flops, double flopsPerThread, double bytes) {
  return threadsFor(std::max(flops / flopsPerThread, bytes / kBytesPerThread), 1.0);
}

// ---- scratch memory ----------------------------------------------------------------------------
// Per-OS-thread grow-only aligned buffers, reused across calls so hot kernels do not allocate.
// Thread-local, so JS worker threads calling the addon concurrently never share one.
struct Scratch {
  float* ptr = nullptr;
  size_t cap = 0;  // in floats
  ~Scratch();
  float* get(size_t n);  // 64-byte aligned, contents undefined
};
// Slot s of the calling thread's scratch (several independent buffers per thread).
float* scratch(int slot, size_t nFloats);

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace mor
