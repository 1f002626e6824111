// The CPU probe and the choice of instruction-set variant (isa.h); compiled once, for the baseline.
#include "isa.h"

#include <unistd.h>

#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define MOR_X86 1
#endif

namespace mor {

namespace generic {
extern const KernelTable kTable;
}
#ifdef MOR_X86_VARIANTS
namespace avx2 {
extern const KernelTable kTable;
}
namespace avx512 {
extern const KernelTable kTable;
}
namespace avx512bf16 {
extern const KernelTable kTable;
}
#endif

namespace {

// What the CPU reports and the OS has enabled (XCR0 state for the AVX / AVX-512 registers).
struct CpuFeatures {
  bool avx2 = false;        // x86-64-v3: AVX, AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE + OS YMM state
  bool avx512 = false;      // x86-64-v4: AVX-512 F, BW, CD, DQ, VL + OS opmask/ZMM state
  bool avx512bf16 = false;  // AVX512_BF16
  std::string list;
};

#ifdef MOR_X86
struct Regs {
  unsigned a = 0, b = 0, c = 0, d = 0;
};
Regs cpuid(unsigned leaf, unsigned sub = 0) {
  Regs r;
  if (!__get_cpuid_count(leaf, sub, &r.a, &r.b, &r.c, &r.d)) r = Regs{};
  return r;
}
uint64_t xgetbv0() {
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}
#endif

CpuFeatures probeCpu() {
  CpuFeatures f;
#ifdef MOR_X86
  const unsigned maxLeaf = cpuid(0).a;
  const Regs l1 = cpuid(1);
  const Regs l7 = maxLeaf >= 7 ? cpuid(7, 0) : Regs{};
  const Regs l71 = maxLeaf >= 7 && l7.a >= 1 ? cpuid(7, 1) : Regs{};
  const Regs e1 = cpuid(0x80000001);
  auto bit = [](unsigned r, int i) { return ((r >> i) & 1u) != 0; };
  const bool osxsave = bit(l1.c, 27);
  const uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  const bool ymmState = (xcr0 & 0x6) == 0x6;     // SSE + AVX state
  const bool zmmState = (xcr0 & 0xe6) == 0xe6;   // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool avx = bit(l1.c, 28), fma = bit(l1.c, 12), f16c = bit(l1.c, 29), movbe = bit(l1.c, 22);
  const bool avx2 = bit(l7.b, 5), bmi1 = bit(l7.b, 3), bmi2 = bit(l7.b, 8), lzcnt = bit(e1.c, 5);
  const bool f512 = bit(l7.b, 16), dq = bit(l7.b, 17), cd = bit(l7.b, 28), bw = bit(l7.b, 30), vl = bit(l7.b, 31);
  const bool bf16 = bit(l71.a, 5);
  f.avx2 = ymmState && avx && avx2 && fma && f16c && movbe && bmi1 && bmi2 && lzcnt;
  f.avx512 = f.avx2 && zmmState && f512 && dq && cd && bw && vl;
  f.avx512bf16 = f.avx512 && bf16;
  const std::pair<const char*, bool> named[] = {
      {"sse2", bit(l1.d, 26)}, {"avx", avx && ymmState}, {"avx2", avx2 && ymmState}, {"fma", fma && ymmState},
      {"avx512f", f512 && zmmState}, {"avx512bw", bw && zmmState}, {"avx512dq", dq && zmmState},
      {"avx512vl", vl && zmmState}, {"avx512_bf16", bf16 && zmmState}};
  for (const auto& [name, on] : named)
    if (on) f.list += (f.list.empty() ? "" : " ") + std::string(name);
#elif defined(__aarch64__)
  f.list = "neon";
#endif
  return f;
}

const CpuFeatures& cpu() {
  static const CpuFeatures f = probeCpu();
  return f;
}

// MOR_SIMD names, narrowest first. avx512bf16 is the avx512 build plus -mavx512bf16: its bf16
// packed GEMM uses vdpbf16ps (gemm_bf16.cc); the other kernels are the avx512 ones recompiled.
struct Variant {
  const char* name;
  const KernelTable* table;  // nullptr: not compiled in this build
  bool (*runs)();
};
#ifdef MOR_X86_VARIANTS
const Variant kVariants[] = {
    {"generic", &generic::kTable, [] { return true; }},
    {"avx2", &avx2::kTable, [] { return cpu().avx2; }},
    {"avx512", &avx512::kTable, [] { return cpu().avx512; }},
    {"avx512bf16", &avx512bf16::kTable, [] { return cpu().avx512bf16; }},
};
#else
const Variant kVariants[] = {
    {"generic", &generic::kTable, [] { return true; }},
    {"avx2", nullptr, [] { return false; }},
    {"avx512", nullptr, [] { return false; }},
    {"avx512bf16", nullptr, [] { return false; }},
};
#endif
constexpr int kNumVariants = sizeof(kVariants) / sizeof(kVariants[0]);

int g_variant = -1;  // index into kVariants of the table in use

int widestVariant() {
  int best = 0;
  for (int i = 0; i < kNumVariants; ++i)
    if (kVariants[i].table && kVariants[i].runs()) best = i;
  return best;
}

const KernelTable* initialTable() {
  g_variant = widestVariant();
  return kVariants[g_variant].table;
}

#ifdef MOR_X86
// Deterministic cache parameters: leaf 4 (Intel) or 0x8000001D (AMD), level `level` data/unified.
int64_t cpuidCache(int level) {
  const Regs v = cpuid(0);
  const bool amd = v.b == 0x68747541;  // "Auth"enticAMD
  const unsigned leaf = amd ? 0x8000001D : 4;
  if (amd && !((cpuid(0x80000001).c >> 22) & 1u)) return 0;  // no topology extensions
  for (unsigned sub = 0; sub < 16; ++sub) {
    const Regs r = cpuid(leaf, sub);
    const unsigned type = r.a & 0x1f;
    if (type == 0) break;
    if (static_cast<int>((r.a >> 5) & 7) != level || type == 2) continue;  // 2: instruction cache
    const int64_t ways = ((r.b >> 22) & 0x3ff) + 1, parts = ((r.b >> 12) & 0x3ff) + 1,
                  line = (r.b & 0xfff) + 1, sets = static_cast<int64_t>(r.c) + 1;
    return ways * parts * line * sets;
  }
  return 0;
}
#endif

int64_t cacheSize(int level) {
  int64_t s = 0;
#ifdef MOR_X86
  s = cpuidCache(level);
#endif
#ifdef _SC_LEVEL1_DCACHE_SIZE
  if (s <= 0) s = sysconf(level == 1 ? _SC_LEVEL1_DCACHE_SIZE : level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#endif
  return s;
}

}  // namespace

const KernelTable* g_isa = initialTable();

IsaStatus setIsa(const std::string& name) {
  for (int i = 0; i < kNumVariants; ++i) {
    if (name != kVariants[i].name) continue;
    if (!kVariants[i].table || !kVariants[i].runs()) return kIsaUnsupported;
    g_variant = i;
    __atomic_store_n(&g_isa, kVariants[i].table, __ATOMIC_RELEASE);
    return kIsaOk;
  }
  return kIsaUnknown;
}

const char* isaName() { return kVariants[g_variant].name; }

int isaVariants(const IsaVariant** out) {
  static IsaVariant list[kNumVariants];
  static const bool once = [] {
    for (int i = 0; i < kNumVariants; ++i) list[i] = {kVariants[i].name, kVariants[i].table && kVariants[i].runs()};
    return true;
  }();
  (void)once;
  *out = list;
  return kNumVariants;
}

const std::string& cpuModel() {
  static const std::string m = [] {
    std::string s;
#ifdef MOR_X86
    if (cpuid(0x80000000).a >= 0x80000004) {
      char brand[49] = {};
      for (unsigned i = 0; i < 3; ++i) {
        const Regs r = cpuid(0x80000002 + i);
        std::memcpy(brand + 16 * i, &r, 16);
      }
      s = brand;
      const size_t b = s.find_first_not_of(' '), e = s.find_last_not_of(' ');
      s = b == std::string::npos ? "" : s.substr(b, e - b + 1);
    }
#endif
    return s.empty() ? std::string("unknown") : s;
  }();
  return m;
}

const std::string& cpuFeatures() { return cpu().list; }

const CacheSizes& cacheSizes() {
  static const CacheSizes c = [] {
    CacheSizes r{cacheSize(1), cacheSize(2), cacheSize(3)};
    // Implausible or missing figures (some VMs report none, or the whole machine's L3) fall back
    // to a common desktop/server core: 32 KiB L1d, 512 KiB L2, 16 MiB L3.
    if (r.l1 < 8 << 10 || r.l1 > 1 << 20) r.l1 = 32 << 10;
    if (r.l2 < 64 << 10 || r.l2 > 64 << 20) r.l2 = 512 << 10;
    if (r.l3 <= 0 || r.l3 > int64_t{1} << 30) r.l3 = 16 << 20;
    if (r.l3 < r.l2) r.l3 = r.l2;
    return r;
  }();
  return c;
}

}  // namespace mor
