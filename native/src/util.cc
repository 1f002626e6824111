// Scratch memory: grow-only, 64-byte aligned, per OS thread (see common.h).
#include <cstdlib>
#include <new>

#include "common.h"

namespace mor {

int g_numThreads = 0;

Scratch::~Scratch() { std::free(ptr); }

float* Scratch::get(size_t n) {
  if (n > cap) {
    size_t want = n < 1024 ? 1024 : n + n / 4;
    size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw std::bad_alloc();
    std::free(ptr);
    ptr = static_cast<float*>(p);
    cap = bytes / sizeof(float);
  }
  return ptr;
}

namespace {
constexpr int kSlots = 32;
thread_local Scratch t_scratch[kSlots];
}  // namespace

float* scratch(int slot, size_t nFloats) { return t_scratch[slot].get(nFloats); }

}  // namespace mor
