// Layer, loss, pointwise, row-wise and optimiser kernels. See kernels.h / backend.ts for contracts.
// Elementwise loops are vectorised (`#pragma omp simd` or explicit vectors) and split across
// threads above kParElems elements; row kernels split rows across threads.
#include <algorithm>
#include <memory>
#include <mutex>
#include <numeric>

#include "common.h"
#include "isa.h"

MOR_ISA_BEGIN

namespace {

// Run f(begin, end) over [0, n) split into one contiguous chunk per thread (chunks aligned to 16
// elements, a cache line of floats). Serial when n < grain.
template <class F>
inline void parRange(int64_t n, int64_t grain, F&& f) {
  const int t = maxThreads();
  if (n < grain || t <= 1) {
    f(int64_t{0}, n);
    return;
  }
  const int threads = static_cast<int>(std::min<int64_t>(t, (n + grain / 2 - 1) / (grain / 2)));
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = teamSize(), id = threadId();
    int64_t chunk = (n + nt - 1) / nt;
    chunk = (chunk + 15) / 16 * 16;
    const int64_t b = std::min(n, id * chunk), e = std::min(n, b + chunk);
    if (b < e) f(b, e);
  }
}

// Run f(row) for rows [0, rows) in parallel when rows·cost is large.
template <class F>
inline void parRows(int64_t rows, int64_t costPerRow, F&& f) {
  const double work = static_cast<double>(rows) * static_cast<double>(std::max<int64_t>(costPerRow, 1));
  const int t = maxThreads();
  if (work < static_cast<double>(kParElems) || t <= 1 || rows < 2) {
    for (int64_t r = 0; r < rows; ++r) f(r);
    return;
  }
#pragma omp parallel for num_threads(static_cast<int>(std::min<int64_t>(t, rows))) schedule(static)
  for (int64_t r = 0; r < rows; ++r) f(r);
}

inline float rowMaxF(const float* x, int64_t n) {
  float m = kNegInf;
  int64_t j = 0;
  if (n >= W) {
    vf vm = vload(x);
    for (j = W; j + W <= n; j += W) vm = vmax(vm, vload(x + j));
    m = vhmax(vm);
  }
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// Σ exp(x[j] - m), optionally storing the exponentials into out (may equal x).
inline float sumExp(const float* x, int64_t n, float m, float* out) {
  const vf vm = vset1(m);
  vf acc0 = vf{}, acc1 = vf{};
  int64_t j = 0;
  for (; j + 2 * W <= n; j += 2 * W) {
    vf e0 = vexp(vload(x + j) - vm), e1 = vexp(vload(x + j + W) - vm);
    if (out) {
      vstore(out + j, e0);
      vstore(out + j + W, e1);
    }
    acc0 += e0;
    acc1 += e1;
  }
  for (; j + W <= n; j += W) {
    vf e0 = vexp(vload(x + j) - vm);
    if (out) vstore(out + j, e0);
    acc0 += e0;
  }
  float s = vhsum(acc0 + acc1);
  for (; j < n; ++j) {
    float e = sexp(x[j] - m);
    if (out) out[j] = e;
    s += e;
  }
  return s;
}

// logsumexp of a row; -inf for an all -inf row, +inf if any +inf, NaN if any NaN.
inline float rowLse(const float* x, int64_t n) {
  const float m = rowMaxF(x, n);
  if (m == kNegInf || m == -kNegInf) {
    for (int64_t j = 0; j < n; ++j)
      if (x[j] != x[j]) return x[j];
    return m;
  }
  return m + std::log(sumExp(x, n, m, nullptr));
}

MOR_INLINE vf vsigmoid(vf x) { return vset1(1.f) / (vset1(1.f) + vexp(-x)); }
MOR_INLINE float ssigmoid(float x) { return 1.f / (1.f + sexp(-x)); }

// ---- RoPE tables -------------------------------------------------------------------------------
// cos/sin of float(pos)·inv_freq[i] with inv_freq = 1 / theta^(2i/HD) in float32, as PyTorch's
// rotary embeddings compute them. Tables are per (theta, headDim), cover positions [0, size),
// and grow (by doubling) to the largest position seen, up to kRopeMaxCached.
struct RopeTable {
  double theta;
  int64_t headDim;
  int64_t size;            // positions covered
  std::vector<float> inv;  // (HD/2)
  std::vector<float> cs;   // (size, HD/2, 2): cos, sin
};
constexpr int64_t kRopeMaxCached = 1 << 16;
std::mutex g_ropeMutex;
std::vector<std::shared_ptr<const RopeTable>> g_ropeTables;

std::vector<float> ropeInvFreq(double theta, int64_t hd) {
  std::vector<float> inv(static_cast<size_t>(hd / 2));
  for (int64_t i = 0; i < hd / 2; ++i) {
    // Each step rounded to float32, as torch computes 1 / theta ** (arange(0, HD, 2).float() / HD).
    const float e = static_cast<float>(static_cast<double>(2 * i) / static_cast<double>(hd));
    const float p = static_cast<float>(std::pow(theta, static_cast<double>(e)));
    inv[static_cast<size_t>(i)] = static_cast<float>(1.0 / static_cast<double>(p));
  }
  return inv;
}

inline void ropeAngle(int32_t pos, float inv, float* c, float* s) {
  // float32 angle (torch.outer on float32 rounds the exact product once), cos/sin of it rounded.
  const float a = static_cast<float>(static_cast<double>(pos) * static_cast<double>(inv));
  *c = static_cast<float>(std::cos(static_cast<double>(a)));
  *s = static_cast<float>(std::sin(static_cast<double>(a)));
}

std::shared_ptr<const RopeTable> ropeTable(double theta, int64_t hd, int64_t maxPos) {
  std::lock_guard<std::mutex> lock(g_ropeMutex);
  std::shared_ptr<const RopeTable>* slot = nullptr;
  for (auto& t : g_ropeTables)
    if (t->theta == theta && t->headDim == hd) slot = &t;
  if (slot && (*slot)->size > maxPos) return *slot;
  const int64_t want = std::min<int64_t>(kRopeMaxCached, std::max<int64_t>(
                                                              slot ? (*slot)->size * 2 : 2048, maxPos + 1));
  if (slot && (*slot)->size >= want) return *slot;
  auto t = std::make_shared<RopeTable>();
  t->theta = theta;
  t->headDim = hd;
  t->size = want;
  t->inv = ropeInvFreq(theta, hd);
  const int64_t half = hd / 2;
  t->cs.resize(static_cast<size_t>(want * half * 2));
  for (int64_t p = 0; p < want; ++p)
    for (int64_t i = 0; i < half; ++i)
      ropeAngle(static_cast<int32_t>(p), t->inv[static_cast<size_t>(i)], &t->cs[static_cast<size_t>((p * half + i) * 2)],
                &t->cs[static_cast<size_t>((p * half + i) * 2 + 1)]);
  if (g_ropeTables.size() > 16) g_ropeTables.clear();
  if (slot)
    *slot = t;
  else
    g_ropeTables.push_back(t);
  return t;
}

struct TopkLess {
  const float* x;
  // "a ranks before b": larger value first, NaN largest, ties to the lower index.
  bool operator()(int32_t a, int32_t b) const {
    const float va = x[a], vb = x[b];
    const bool na = va != va, nb = vb != vb;
    if (na || nb) return na && nb ? a < b : na;
    if (va != vb) return va > vb;
    return a < b;
  }
};

}  // namespace

// ---- layers ------------------------------------------------------------------------------------

void rope(const float* x, const int32_t* pos, int64_t n, int64_t nHeads, int64_t hd, double theta, bool inverse,
          float* out) {
  const int64_t half = hd / 2;
  int32_t maxPos = 0;
  for (int64_t i = 0; i < n; ++i) maxPos = std::max(maxPos, pos[i]);
  std::shared_ptr<const RopeTable> tab = ropeTable(theta, hd, maxPos);
  const float sign = inverse ? -1.f : 1.f;
  parRows(n, nHeads * hd * 4, [&](int64_t i) {
    const int32_t p = pos[i];
    const float* cs = nullptr;
    float local[2 * 512];
    std::vector<float> big;
    if (p >= 0 && p < tab->size) {
      cs = tab->cs.data() + static_cast<size_t>(p) * half * 2;
    } else {
      float* buf = local;
      if (half > 512) {
        big.resize(static_cast<size_t>(2 * half));
        buf = big.data();
      }
      for (int64_t j = 0; j < half; ++j)
        ropeAngle(p, tab->inv[static_cast<size_t>(j)], &buf[2 * j], &buf[2 * j + 1]);
      cs = buf;
    }
    for (int64_t h = 0; h < nHeads; ++h) {
      const float* xr = x + (i * nHeads + h) * hd;
      float* o = out + (i * nHeads + h) * hd;
#pragma omp simd
      for (int64_t j = 0; j < half; ++j) {
        const float c = cs[2 * j], s = sign * cs[2 * j + 1];
        const float a = xr[j], b = xr[j + half];
        o[j] = a * c - b * s;
        o[j + half] = b * c + a * s;
      }
    }
  });
}

void rmsnormForward(const float* x, const float* w, int64_t n, int64_t d, float eps, float* out, float* rstd) {
  parRows(n, d * 3, [&](int64_t r) {
    const float* xr = x + r * d;
    float ss = 0.f;
#pragma omp simd reduction(+ : ss)
    for (int64_t j = 0; j < d; ++j) ss += xr[j] * xr[j];
    const float rs = 1.f / std::sqrt(ss / static_cast<float>(d) + eps);
    rstd[r] = rs;
    float* o = out + r * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) o[j] = xr[j] * rs * w[j];
  });
}

void rmsnormBackward(const float* x, const float* w, const float* rstd, const float* dOut, int64_t n, int64_t d,
                     float* dX, float* dW) {
  // dX = rstd·(w∘g) − rstd³/D · x · ⟨w∘g, x⟩;  dW = Σ_rows g∘x·rstd (per-thread partials, summed).
  auto rowGrad = [&](int64_t r, float* dw) {
    const float* xr = x + r * d;
    const float* g = dOut + r * d;
    const float rs = rstd[r];
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < d; ++j) dot += w[j] * g[j] * xr[j];
    const float c = rs * rs * rs * dot / static_cast<float>(d);
    float* dx = dX + r * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) {
      const float gj = g[j], xj = xr[j];
      dx[j] = rs * w[j] * gj - c * xj;
      dw[j] += gj * xj * rs;
    }
  };
  const int t = maxThreads();
  if (n * d < kParElems || t <= 1 || n < 2) {
    std::fill(dW, dW + d, 0.f);
    for (int64_t r = 0; r < n; ++r) rowGrad(r, dW);
    return;
  }
  const int threads = static_cast<int>(std::min<int64_t>(t, n));
  const int64_t ld = (d + 15) / 16 * 16;
  float* part = scratch(16, static_cast<size_t>(ld * threads));
#pragma omp parallel num_threads(threads)
  {
    const int id = threadId(), nt = teamSize();
    float* dw = part + ld * id;
    std::fill(dw, dw + d, 0.f);
    const int64_t chunk = (n + nt - 1) / nt, b = std::min(n, chunk * id), e = std::min(n, b + chunk);
    for (int64_t r = b; r < e; ++r) rowGrad(r, dw);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t j = 0; j < d; ++j) {
      float s = 0.f;
      for (int q = 0; q < nt; ++q) s += part[ld * q + j];
      dW[j] = s;
    }
  }
}

void swigluForward(const float* gate, const float* up, int64_t n, float* out) {
  parRange(n, kParElems, [&](int64_t b, int64_t e) {
    int64_t i = b;
    for (; i + W <= e; i += W) {
      const vf g = vload(gate + i);
      vstore(out + i, g * vsigmoid(g) * vload(up + i));
    }
    for (; i < e; ++i) out[i] = gate[i] * ssigmoid(gate[i]) * up[i];
  });
}

void swigluBackward(const float* gate, const float* up, const float* dOut, int64_t n, float* dGate, float* dUp) {
  parRange(n, kParElems, [&](int64_t b, int64_t e) {
    int64_t i = b;
    const vf one = vset1(1.f);
    for (; i + W <= e; i += W) {
      const vf g = vload(gate + i), u = vload(up + i), go = vload(dOut + i);
      const vf s = vsigmoid(g);
      const vf silu = g * s;
      vstore(dUp + i, go * silu);
      vstore(dGate + i, go * u * s * (one + g * (one - s)));
    }
    for (; i < e; ++i) {
      const float g = gate[i], u = up[i], go = dOut[i];
      const float s = ssigmoid(g);
      dUp[i] = go * g * s;
      dGate[i] = go * u * s * (1.f + g * (1.f - s));
    }
  });
}

void gatherRows(const float* src, int64_t rows, const int32_t* idx, int64_t n, int64_t cols, float* out) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= rows)
      throw KernelError(ErrKind::Argument, "gatherRows: idx[" + std::to_string(i) + "] = " + std::to_string(idx[i]) +
                                               " is outside [0, " + std::to_string(rows) + ")");
  parRows(n, cols, [&](int64_t i) {
    std::memcpy(out + i * cols, src + static_cast<int64_t>(idx[i]) * cols, sizeof(float) * static_cast<size_t>(cols));
  });
}

void scatterAddRows(const float* src, const int32_t* idx, int64_t n, int64_t cols, float* out, int64_t rows) {
  for (int64_t i = 0; i < n; ++i)
    if (idx[i] < 0 || idx[i] >= rows)
      throw KernelError(ErrKind::Argument, "scatterAddRows: idx[" + std::to_string(i) +
                                               "] = " + std::to_string(idx[i]) + " is outside [0, " +
                                               std::to_string(rows) + ")");
  // Threads own disjoint column ranges, so repeated indices never race; every element sums its
  // contributions in row order whatever the thread count (deterministic).
  auto run = [&](int64_t c0, int64_t c1) {
    for (int64_t i = 0; i < n; ++i) {
      const float* s = src + i * cols;
      float* o = out + static_cast<int64_t>(idx[i]) * cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) o[c] += s[c];
    }
  };
  const int t = maxThreads();
  const int64_t colBlocks = cols / 64;
  if (n * cols < kParElems || t <= 1 || colBlocks < 2) {
    run(0, cols);
    return;
  }
  const int threads = static_cast<int>(std::min<int64_t>(t, colBlocks));
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = teamSize(), id = threadId();
    int64_t chunk = (cols + nt - 1) / nt;
    chunk = (chunk + 15) / 16 * 16;
    const int64_t b = std::min(cols, id * chunk), e = std::min(cols, b + chunk);
    if (b < e) run(b, e);
  }
}

// ---- losses ------------------------------------------------------------------------------------

int64_t crossEntropyForward(const float* logits, const int32_t* targets, int64_t n, int64_t vocab,
                            int64_t ignoreIndex, float* losses, float* lse) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = targets[i];
    if (t == ignoreIndex) continue;
    if (t < 0 || t >= vocab)
      throw KernelError(ErrKind::Argument, "crossEntropyForward: targets[" + std::to_string(i) + "] = " +
                                               std::to_string(t) + " is outside [0, " + std::to_string(vocab) +
                                               ") and is not ignoreIndex (" + std::to_string(ignoreIndex) + ")");
    ++count;
  }
  parRows(n, vocab * 4, [&](int64_t i) {
    const float* x = logits + i * vocab;
    const float l = rowLse(x, vocab);
    lse[i] = l;
    const int64_t t = targets[i];
    losses[i] = t == ignoreIndex ? 0.f : l - x[t];
  });
  return count;
}

void crossEntropyBackward(const float* logits, const int32_t* targets, int64_t n, int64_t vocab, int64_t ignoreIndex,
                          const float* lse, const float* dLoss, float* dLogits) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = targets[i];
    if (t != ignoreIndex && (t < 0 || t >= vocab))
      throw KernelError(ErrKind::Argument, "crossEntropyBackward: targets[" + std::to_string(i) + "] = " +
                                               std::to_string(t) + " is outside [0, " + std::to_string(vocab) +
                                               ") and is not ignoreIndex (" + std::to_string(ignoreIndex) + ")");
  }
  parRows(n, vocab * 3, [&](int64_t i) {
    const float* x = logits + i * vocab;
    float* d = dLogits + i * vocab;
    const int64_t t = targets[i];
    if (t == ignoreIndex) {
      std::memset(d, 0, sizeof(float) * static_cast<size_t>(vocab));
      return;
    }
    const float g = dLoss[i], l = lse[i];
    const vf vl = vset1(l), vg = vset1(g);
    int64_t j = 0;
    for (; j + W <= vocab; j += W) vstore(d + j, vexp(vload(x + j) - vl) * vg);
    for (; j < vocab; ++j) d[j] = sexp(x[j] - l) * g;
    d[t] -= g;
  });
}

// BCE is evaluated in double and rounded once (it runs on router outputs: small and not hot), so
// the cancellation in σ(z) − t does not amplify float rounding.
void bceWithLogitsForward(const float* z, const float* t, int64_t n, float* out) {
  parRange(n, kParElems / 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const double zi = z[i];
      out[i] = static_cast<float>(std::max(zi, 0.0) - zi * static_cast<double>(t[i]) + std::log1p(std::exp(-std::fabs(zi))));
    }
  });
}

void bceWithLogitsBackward(const float* z, const float* t, const float* dOut, int64_t n, float* dZ, float* dT) {
  parRange(n, kParElems / 4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const double zi = z[i], g = dOut[i];
      const double s = zi >= 0 ? 1.0 / (1.0 + std::exp(-zi)) : std::exp(zi) / (1.0 + std::exp(zi));
      dZ[i] = static_cast<float>((s - static_cast<double>(t[i])) * g);
      dT[i] = static_cast<float>(-zi * g);
    }
  });
}

// ---- pointwise -----------------------------------------------------------------------------------

void unary(int op, const float* x, int64_t n, float* out) {
  switch (op) {
    case kSigmoid:
    case kSilu: {
      const bool silu = op == kSilu;
      parRange(n, kParElems, [&](int64_t b, int64_t e) {
        int64_t i = b;
        for (; i + W <= e; i += W) {
          const vf v = vload(x + i);
          const vf s = vsigmoid(v);
          vstore(out + i, silu ? v * s : s);
        }
        for (; i < e; ++i) out[i] = silu ? x[i] * ssigmoid(x[i]) : ssigmoid(x[i]);
      });
      break;
    }
    case kTanh:
      parRange(n, kParElems / 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = std::tanh(x[i]);
      });
      break;
    case kGelu:
      parRange(n, kParElems / 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) out[i] = 0.5f * x[i] * (1.f + std::erf(x[i] * 0.70710678118654752f));
      });
      break;
    default:
      throw KernelError(ErrKind::Argument, "unary: unknown op " + std::to_string(op));
  }
}

void unaryBackward(int op, const float* x, const float* y, const float* dOut, int64_t n, float* dX) {
  switch (op) {
    case kSigmoid:
      parRange(n, kParElems, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) dX[i] = dOut[i] * y[i] * (1.f - y[i]);
      });
      break;
    case kTanh:
      parRange(n, kParElems, [&](int64_t b, int64_t e) {
#pragma omp simd
        for (int64_t i = b; i < e; ++i) dX[i] = dOut[i] * (1.f - y[i] * y[i]);
      });
      break;
    case kSilu:
      parRange(n, kParElems, [&](int64_t b, int64_t e) {
        int64_t i = b;
        const vf one = vset1(1.f);
        for (; i + W <= e; i += W) {
          const vf v = vload(x + i);
          const vf s = vsigmoid(v);
          vstore(dX + i, vload(dOut + i) * s * (one + v * (one - s)));
        }
        for (; i < e; ++i) {
          const float s = ssigmoid(x[i]);
          dX[i] = dOut[i] * s * (1.f + x[i] * (1.f - s));
        }
      });
      break;
    case kGelu:
      parRange(n, kParElems / 4, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          const float v = x[i];
          const float cdf = 0.5f * (1.f + std::erf(v * 0.70710678118654752f));
          const float pdf = 0.3989422804014327f * std::exp(-0.5f * v * v);
          dX[i] = dOut[i] * (cdf + v * pdf);
        }
      });
      break;
    default:
      throw KernelError(ErrKind::Argument, "unaryBackward: unknown op " + std::to_string(op));
  }
}

// ---- row-wise ------------------------------------------------------------------------------------

void softmaxRows(const float* x, int64_t rows, int64_t cols, float* out) {
  parRows(rows, cols * 4, [&](int64_t r) {
    const float* xr = x + r * cols;
    float* o = out + r * cols;
    const float m = rowMaxF(xr, cols);
    const float s = sumExp(xr, cols, m, o);
    const float inv = 1.f / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
  });
}

void softmaxRowsBackward(const float* y, const float* dOut, int64_t rows, int64_t cols, float* dX) {
  parRows(rows, cols * 3, [&](int64_t r) {
    const float* yr = y + r * cols;
    const float* g = dOut + r * cols;
    float* d = dX + r * cols;
    float dot = 0.f;
#pragma omp simd reduction(+ : dot)
    for (int64_t j = 0; j < cols; ++j) dot += yr[j] * g[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) d[j] = yr[j] * (g[j] - dot);
  });
}

void logsumexpRows(const float* x, int64_t rows, int64_t cols, float* out) {
  parRows(rows, cols * 3, [&](int64_t r) { out[r] = rowLse(x + r * cols, cols); });
}

void logsumexpRowsBackward(const float* x, const float* lse, const float* dOut, int64_t rows, int64_t cols, float* dX) {
  parRows(rows, cols * 3, [&](int64_t r) {
    const float* xr = x + r * cols;
    float* d = dX + r * cols;
    const float l = lse[r], g = dOut[r];
    const vf vl = vset1(l), vg = vset1(g);
    int64_t j = 0;
    for (; j + W <= cols; j += W) vstore(d + j, vexp(vload(xr + j) - vl) * vg);
    for (; j < cols; ++j) d[j] = sexp(xr[j] - l) * g;
  });
}

// The first of a row's entries that ranks first under TopkLess (k = 1: greedy decoding's argmax
// over the vocabulary on every step). One vector pass keeps, per lane, the largest value and the
// first column holding it, and notes any NaN; a row with a NaN ranks its first NaN first.
static int32_t topOne(const float* x, int64_t cols) {
  typedef int32_t vi __attribute__((vector_size(sizeof(vf))));
  vi lane{};
  for (int i = 0; i < W; ++i) lane[i] = i;
  vf best = vset1(kNegInf);
  vi bestAt = lane;   // first column of `best` per lane (lane i starts at column i)
  vi nan{};           // −1 in a lane that saw a NaN
  int64_t c = 0;
  for (vi at = lane; c + W <= cols; c += W, at += W) {
    const vf v = vload(x + c);
    const vi gt = v > best;  // strictly greater: a later equal value keeps the earlier column
    best = gt ? v : best;
    bestAt = gt ? at : bestAt;
    nan |= v != v;
  }
  bool anyNan = false;
  for (int i = 0; i < W; ++i) anyNan = anyNan || nan[i] != 0;
  float m = kNegInf;
  int64_t at = 0;
  for (int i = 0; i < W && c > 0; ++i)
    if (best[i] > m || (best[i] == m && bestAt[i] < at)) m = best[i], at = bestAt[i];
  for (int64_t j = c; j < cols; ++j) {
    anyNan = anyNan || x[j] != x[j];
    if (x[j] > m) m = x[j], at = j;
  }
  if (anyNan)
    for (int64_t j = 0; j < cols; ++j)
      if (x[j] != x[j]) return static_cast<int32_t>(j);
  // Every entry −inf: no lane moved, and the first column, 0, ranks first.
  return m == kNegInf ? 0 : static_cast<int32_t>(at);
}

void topkRows(const float* x, int64_t rows, int64_t cols, int64_t k, bool byIndex, int32_t* indices, float* values) {
  if (k == 1) {
    parRows(rows, cols, [&](int64_t r) {
      const float* xr = x + r * cols;
      indices[r] = topOne(xr, cols);
      values[r] = xr[indices[r]];
    });
    return;
  }
  parRows(rows, cols * 8, [&](int64_t r) {
    const float* xr = x + r * cols;
    static thread_local std::vector<int32_t> ord;
    ord.resize(static_cast<size_t>(cols));
    std::iota(ord.begin(), ord.end(), 0);
    TopkLess less{xr};
    if (k < cols) std::nth_element(ord.begin(), ord.begin() + (k - 1), ord.end(), less);
    if (byIndex)
      std::sort(ord.begin(), ord.begin() + k);
    else
      std::sort(ord.begin(), ord.begin() + k, less);
    int32_t* ix = indices + r * k;
    float* vs = values + r * k;
    for (int64_t j = 0; j < k; ++j) {
      ix[j] = ord[static_cast<size_t>(j)];
      vs[j] = xr[ord[static_cast<size_t>(j)]];
    }
  });
}

// ---- reductions ----------------------------------------------------------------------------------

double sum(const float* x, int64_t n) {
  double s = 0.0;
  const int t = n >= 4 * kParElems ? maxThreads() : 1;
#pragma omp parallel for simd reduction(+ : s) num_threads(t) if (t > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]);
  return s;
}

double sumSquares(const float* x, int64_t n) {
  double s = 0.0;
  const int t = n >= 4 * kParElems ? maxThreads() : 1;
#pragma omp parallel for simd reduction(+ : s) num_threads(t) if (t > 1) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  return s;
}

void sumRows(const float* x, int64_t rows, int64_t cols, float* out) {
  // Columns in blocks of 256 accumulated in double over all rows; blocks spread across threads.
  constexpr int64_t CB = 256;
  const int64_t blocks = (cols + CB - 1) / CB;
  auto block = [&](int64_t bi, int64_t r0, int64_t r1, double* acc) {
    const int64_t c0 = bi * CB, c1 = std::min(cols, c0 + CB);
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(xr[c]);
    }
  };
  const int t = maxThreads();
  if (rows * cols < kParElems || t <= 1) {
    for (int64_t bi = 0; bi < blocks; ++bi) {
      double acc[CB] = {};
      block(bi, 0, rows, acc);
      for (int64_t c = bi * CB; c < std::min(cols, bi * CB + CB); ++c) out[c] = static_cast<float>(acc[c - bi * CB]);
    }
    return;
  }
  if (blocks >= 2 * t) {
#pragma omp parallel for num_threads(t) schedule(static)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      double acc[CB] = {};
      block(bi, 0, rows, acc);
      for (int64_t c = bi * CB; c < std::min(cols, bi * CB + CB); ++c) out[c] = static_cast<float>(acc[c - bi * CB]);
    }
    return;
  }
  // Few columns: each thread sums a range of rows into a private double row, then combine.
  const int threads = static_cast<int>(std::min<int64_t>(t, rows));
  std::vector<double> part(static_cast<size_t>(threads * cols), 0.0);
#pragma omp parallel num_threads(threads)
  {
    const int64_t nt = teamSize(), id = threadId();
    const int64_t chunk = (rows + nt - 1) / nt, r0 = std::min(rows, id * chunk), r1 = std::min(rows, r0 + chunk);
    double* p = part.data() + id * cols;
    for (int64_t bi = 0; bi < blocks; ++bi) block(bi, r0, r1, p + bi * CB);
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t c = 0; c < cols; ++c) {
      double s = 0.0;
      for (int64_t q = 0; q < nt; ++q) s += part[static_cast<size_t>(q * cols + c)];
      out[c] = static_cast<float>(s);
    }
  }
}

void sumCols(const float* x, int64_t rows, int64_t cols, float* out) {
  parRows(rows, cols, [&](int64_t r) {
    const float* xr = x + r * cols;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(xr[c]);
    out[r] = static_cast<float>(s);
  });
}

void scaleRows(const float* x, const float* s, int64_t rows, int64_t cols, float* out) {
  parRows(rows, cols, [&](int64_t r) {
    const float g = s[r];
    const float* xr = x + r * cols;
    float* orow = out + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) orow[c] = g * xr[c];
  });
}

void rowDot(const float* a, const float* b, int64_t rows, int64_t cols, float* out) {
  parRows(rows, cols * 2, [&](int64_t r) {
    const float* ar = a + r * cols;
    const float* br = b + r * cols;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t c = 0; c < cols; ++c) s += static_cast<double>(ar[c]) * static_cast<double>(br[c]);
    out[r] = static_cast<float>(s);
  });
}

// ---- elementwise -----------------------------------------------------------------------------------

void add(const float* a, const float* b, int64_t n, float* out) {
  parRange(n, kParElems, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) out[i] = a[i] + b[i];
  });
}

void mul(const float* a, const float* b, int64_t n, float* out) {
  parRange(n, kParElems, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) out[i] = a[i] * b[i];
  });
}

void scale(const float* a, float sc, int64_t n, float* out) {
  parRange(n, kParElems, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) out[i] = a[i] * sc;
  });
}

void axpy(float alpha, const float* x, int64_t n, float* y) {
  parRange(n, kParElems, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) y[i] += alpha * x[i];
  });
}

void fill(float* x, int64_t n, float value) {
  parRange(n, 4 * kParElems, [&](int64_t s, int64_t e) {
#pragma omp simd
    for (int64_t i = s; i < e; ++i) x[i] = value;
  });
}

// ---- optimiser -------------------------------------------------------------------------------------

void adamwStep(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1, double beta2,
               double eps, double weightDecay, double step) {
  // torch.optim.AdamW (single-tensor, amsgrad off): decay first, then the Adam update with
  // denom = sqrt(v) / sqrt(1 − β2^t) + eps and step size lr / (1 − β1^t).
  const double bc1 = 1.0 - std::pow(beta1, step), bc2 = 1.0 - std::pow(beta2, step);
  const float decay = static_cast<float>(1.0 - lr * weightDecay);
  const float stepSize = static_cast<float>(lr / bc1);
  const float bc2Sqrt = static_cast<float>(std::sqrt(bc2));
  const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
  const float c1 = static_cast<float>(1.0 - beta1), c2 = static_cast<float>(1.0 - beta2);
  const float e = static_cast<float>(eps);
  parRange(n, kParElems / 2, [&](int64_t s, int64_t en) {
#pragma omp simd
    for (int64_t i = s; i < en; ++i) {
      const float g = grad[i];
      const float mi = b1 * m[i] + c1 * g;
      const float vi = b2 * v[i] + c2 * g * g;
      m[i] = mi;
      v[i] = vi;
      const float p = param[i] * decay;
      param[i] = p - stepSize * mi / (std::sqrt(vi) / bc2Sqrt + e);
    }
  });
}

MOR_ISA_END
