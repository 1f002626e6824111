// Instruction-set variants of the kernels and the choice between them at load (isa.cc).
//
// The SIMD kernel sources (attention.cc, decode.cc, kernels.cc, gemm_builtin.cc, isa_table.cc) are
// compiled once per variant, each time inside its own namespace mor::<MOR_ISA> and with that
// variant's -march (binding.gyp): generic (the build's baseline: SSE2 on x86-64, NEON on arm64),
// avx2 (x86-64-v3: AVX2 + FMA) and avx512 (x86-64-v4: AVX-512 F/BW/DQ/VL/CD). Each variant fills
// one KernelTable with its kernels; everything else (the Node-API binding, GEMM providers, the
// CPU probe) is compiled once for the baseline and calls kernels through isa(), the table chosen
// at load: the widest variant the CPU and the OS (XSAVE state) support, or the one setIsa() /
// MOR_SIMD names. The signatures are the declarations in kernels.h / gemm.h (namespace mor::sig);
// nothing defines those, so a call that bypasses the table fails to link.
//
// Link order keeps the baseline safe: the generic variant is compiled into the addon's own target,
// whose objects the linker sees before the other variants' archives, so an inline or template
// function that several variants emit (std::vector, std::sort, ...) resolves to the baseline copy.
// A copy only a wider variant emits is only called from that variant's code.
#pragma once

#include <cstdint>
#include <string>

#include "gemm.h"
#include "kernels.h"

#ifndef MOR_ISA
#define MOR_ISA generic
#endif
#define MOR_ISA_BEGIN \
  namespace mor {     \
  namespace MOR_ISA {
#define MOR_ISA_END \
  }                 \
  }
#define MOR_STR2(x) #x
#define MOR_STR(x) MOR_STR2(x)

// Every kernel that has one implementation per variant (declared in kernels.h / gemm.h).
#define MOR_ISA_KERNELS(X)                                                                                       \
  X(sgemmBuiltin) X(sgemmPacked) X(sgemmPackedBf16) X(attentionValidate) X(attentionForward) X(attentionBackward)                   \
  X(attentionPagedValidate) X(attentionPaged) X(attentionPagedBf16) X(decodeLayer) X(rope) X(rmsnormForward) X(rmsnormBackward)       \
  X(swigluForward) X(swigluBackward) X(gatherRows) X(scatterAddRows) X(crossEntropyForward)                     \
  X(crossEntropyBackward) X(bceWithLogitsForward) X(bceWithLogitsBackward) X(unary) X(unaryBackward)           \
  X(softmaxRows) X(softmaxRowsBackward) X(logsumexpRows) X(logsumexpRowsBackward) X(topkRows) X(sum)            \
  X(sumSquares) X(sumRows) X(sumCols) X(scaleRows) X(rowDot) X(add) X(mul) X(scale) X(axpy) X(fill)           \
  X(adamwStep) X(probeFmaGflops) X(probeStreamReadGbps)

namespace mor {

/** One variant's kernels. */
struct KernelTable {
  const char* name;  // the variant's MOR_SIMD name
#define MOR_ISA_MEMBER(n) decltype(&::mor::sig::n) n;
  MOR_ISA_KERNELS(MOR_ISA_MEMBER)
#undef MOR_ISA_MEMBER
};

extern const KernelTable* g_isa;
/** The kernels in use. */
inline const KernelTable& isa() { return *__atomic_load_n(&g_isa, __ATOMIC_ACQUIRE); }

enum IsaStatus : int { kIsaOk = 0, kIsaUnknown = 1, kIsaUnsupported = 2 };
/** Switch to the variant of that MOR_SIMD name; the table is unchanged unless kIsaOk. */
IsaStatus setIsa(const std::string& name);
/** The MOR_SIMD name of the variant in use. */
const char* isaName();
/** Known variant names, narrowest first, and whether this CPU (with OS support) can run each. */
struct IsaVariant {
  const char* name;
  bool available;
};
int isaVariants(const IsaVariant** out);
/** The CPU's brand string (cpuid 0x80000002–4), or "unknown". */
const std::string& cpuModel();
/** CPU features relevant to the variants that the CPU and the OS support, space-separated. */
const std::string& cpuFeatures();

/** Data cache sizes in bytes (per core for L1/L2; the L3 one core shares), read at run time. */
struct CacheSizes {
  int64_t l1, l2, l3;
};
const CacheSizes& cacheSizes();

}  // namespace mor

// The variant's own declarations of the kernels (its definitions follow in its sources).
MOR_ISA_BEGIN
#define MOR_ISA_DECLARE(n) decltype(::mor::sig::n) n;
MOR_ISA_KERNELS(MOR_ISA_DECLARE)
#undef MOR_ISA_DECLARE
MOR_ISA_END
