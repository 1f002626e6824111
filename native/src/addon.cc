// Node-API binding of the kernels. Every export takes typed arrays and numbers positionally (the
// binding table in src/backend/native.ts builds them from the Backend contract; the comment above
// each binding gives the order), validates types and buffer lengths, and calls the plain C++
// kernel. One table at the end (kExports) registers every export; all go through one entry point
// that reads the arguments onto the stack and turns C++ exceptions into the project's errors, so
// a call is synchronous, zero-copy on typed arrays and allocation-free. node-addon-api is used for
// module setup only.
//
// Errors are the project's own classes (ShapeError, DtypeError, ArgumentError from src/errors.ts),
// registered once by the wrapper through init(); before that, plain Error/TypeError/RangeError.
#include <napi.h>

#include <cmath>
#include <string>

#include "common.h"
#include "gemm.h"
#include "isa.h"
#include "addon_args.h"

namespace {

using mor::ErrKind;
using mor::KernelError;

struct AddonData {
  napi_ref shapeError = nullptr, dtypeError = nullptr, argumentError = nullptr;
};

void throwJs(napi_env env, ErrKind kind, const std::string& msg) {
  AddonData* d = nullptr;
  napi_get_instance_data(env, reinterpret_cast<void**>(&d));
  napi_ref ref = nullptr;
  if (d) ref = kind == ErrKind::Shape ? d->shapeError : kind == ErrKind::Dtype ? d->dtypeError : d->argumentError;
  napi_value ctor = nullptr, text = nullptr, err = nullptr;
  napi_create_string_utf8(env, msg.c_str(), msg.size(), &text);
  if (ref && napi_get_reference_value(env, ref, &ctor) == napi_ok && ctor &&
      napi_new_instance(env, ctor, 1, &text, &err) == napi_ok) {
    napi_throw(env, err);
    return;
  }
  if (kind == ErrKind::Dtype)
    napi_throw_type_error(env, nullptr, msg.c_str());
  else
    napi_throw_range_error(env, nullptr, msg.c_str());
}

napi_value undef(napi_env) { return nullptr; }
napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

// An export: its name (for messages) and its binding, which reads the arguments and runs the kernel.
struct Export {
  const char* name;
  napi_value (*fn)(const Args&);
};

// The one entry point of every export; napi_create_function's data is the Export.
napi_value entry(napi_env env, napi_callback_info cbi) {
  napi_value argv[32];
  size_t argc = 32;
  void* data = nullptr;
  napi_get_cb_info(env, cbi, &argc, argv, nullptr, &data);
  const Export& x = *static_cast<const Export*>(data);
  Args a{env, argv, argc, x.name};
  try {
    return x.fn(a);
  } catch (const KernelError& e) {
    throwJs(env, e.kind, e.what());
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
  } catch (const std::bad_alloc&) {
    napi_throw_error(env, nullptr, (std::string(x.name) + ": out of memory").c_str());
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, (std::string(x.name) + ": " + e.what()).c_str());
  }
  return nullptr;
}

// ---- control -------------------------------------------------------------------------------------

napi_value init(const Args& a) {
  AddonData* d = nullptr;
  napi_get_instance_data(a.env, reinterpret_cast<void**>(&d));
  napi_ref* slots[3] = {&d->shapeError, &d->dtypeError, &d->argumentError};
  for (size_t i = 0; i < 3 && i < a.argc; ++i) {
    if (*slots[i]) napi_delete_reference(a.env, *slots[i]);
    napi_create_reference(a.env, a.argv[i], 1, slots[i]);
  }
  return undef(a.env);
}

napi_value info(const Args& a) {
  Napi::Env env(a.env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("simd", mor::isaName());
  const mor::IsaVariant* vs = nullptr;
  const int nv = mor::isaVariants(&vs);
  Napi::Array avail = Napi::Array::New(env);
  for (int i = 0, j = 0; i < nv; ++i)
    if (vs[i].available) avail.Set(j++, vs[i].name);
  o.Set("simdAvailable", avail);
  o.Set("cpu", mor::cpuModel());
  o.Set("cpuFeatures", mor::cpuFeatures());
  const mor::CacheSizes& cs = mor::cacheSizes();
  Napi::Object caches = Napi::Object::New(env);
  caches.Set("l1d", static_cast<double>(cs.l1));
  caches.Set("l2", static_cast<double>(cs.l2));
  caches.Set("l3", static_cast<double>(cs.l3));
  o.Set("caches", caches);
  o.Set("threads", mor::maxThreads());
  o.Set("gemmProvider", mor::gemmProvider() == mor::kGemmOpenBLAS ? "openblas" : "builtin");
  o.Set("haveOpenBLAS", mor::haveOpenBLAS());
#ifdef _OPENMP
  o.Set("openmp", true);
#else
  o.Set("openmp", false);
#endif
  return o;
}

napi_value setGemmProvider(const Args& a) {
  const int64_t p = a.integer(0, "provider", 0, 1);
  napi_value r;
  napi_get_boolean(a.env, mor::setGemmProvider(static_cast<int>(p)), &r);
  return r;
}

// setSimd(name: string) → 0 switched, 1 unknown name, 2 not runnable here (not compiled, or the CPU
// or OS lacks it); the wrapper turns 1 and 2 into errors naming what the CPU offers.
napi_value setSimd(const Args& a) {
  if (a.argc < 1) fail(ErrKind::Argument, "setSimd: name must be a string, got nothing");
  size_t len = 0;
  if (napi_get_value_string_utf8(a.env, a.argv[0], nullptr, 0, &len) != napi_ok)
    fail(ErrKind::Argument, std::string("setSimd: name must be a string, got ") + a.typeName(a.argv[0]));
  std::string name(len, '\0');
  napi_get_value_string_utf8(a.env, a.argv[0], name.data(), len + 1, &len);
  return number(a.env, static_cast<double>(mor::setIsa(name)));
}

// probeFma(threads, seconds) → GFLOP/s of independent FMA chains with the current variant's vectors.
napi_value probeFma(const Args& a) {
  const int threads = static_cast<int>(a.integer(0, "threads", 1, 4096));
  const double seconds = a.num(1, "seconds");
  if (!(seconds > 0 && seconds <= 60)) fail(ErrKind::Argument, "probeFma: seconds must be in (0, 60]");
  return number(a.env, mor::isa().probeFmaGflops(threads, seconds));
}

// probeStreamRead(megabytes, threads, repeats) → GB/s reading a fresh buffer of that size.
napi_value probeStreamRead(const Args& a) {
  const int64_t mb = a.integer(0, "megabytes", 1, 16384);
  const int threads = static_cast<int>(a.integer(1, "threads", 1, 4096));
  const int repeats = static_cast<int>(a.integer(2, "repeats", 1, 1000));
  return number(a.env, mor::isa().probeStreamReadGbps(mb << 20, threads, repeats));
}

napi_value setNumThreads(const Args& a) {
  mor::setNumThreads(static_cast<int>(a.integer(0, "n", 1, 4096)));
  return undef(a.env);
}

napi_value rawSgemmGflops(const Args& a) {
  const int64_t m = a.size(0, "m", 1), n = a.size(1, "n", 1), k = a.size(2, "k", 1),
                it = a.integer(3, "iterations", 1, 1 << 30);
  if (static_cast<double>(m) * k + static_cast<double>(k) * n + static_cast<double>(m) * n > 2.5e8)
    fail(ErrKind::Argument, "rawSgemmGflops: matrices too large");
  const double g = mor::rawBlasGflops(m, n, k, static_cast<int>(it));
  if (g < 0) {
    napi_value nul;
    napi_get_null(a.env, &nul);
    return nul;
  }
  return number(a.env, g);
}

// packedWeightSize(n, k) → floats of the packed form
napi_value packedWeightSize(const Args& a) {
  const int64_t n = a.size(0, "n", 1), k = a.size(1, "k", 1);
  return number(a.env, static_cast<double>(mor::packedWeightSize(n, k)));
}

// packedWeightSizeBf16(n, k) → uint16 values of the bf16 packed form
napi_value packedWeightSizeBf16(const Args& a) {
  const int64_t n = a.size(0, "n", 1), k = a.size(1, "k", 1);
  return number(a.env, static_cast<double>(mor::packedWeightSizeBf16(n, k)));
}

// ---- linear algebra --------------------------------------------------------------------------------

// gemm(transA, transB, m, n, k, alpha, beta, batch, strideA, strideB, strideC, a, b, c)
napi_value gemm(const Args& a) {
  const bool tA = a.boolean(0, "transA"), tB = a.boolean(1, "transB");
  const int64_t m = a.size(2, "m", 0), n = a.size(3, "n", 0), k = a.size(4, "k", 0);
  const float alpha = a.f32num(5, "alpha"), beta = a.f32num(6, "beta");
  const int64_t batch = a.integer(7, "batch", 0), sA = a.integer(8, "strideA", 0), sB = a.integer(9, "strideB", 0),
                sC = a.integer(10, "strideC", 0);
  int64_t la, lb, lc;
  const float* A = a.f32(11, "a", &la);
  const float* B = a.f32(12, "b", &lb);
  float* C = a.f32(13, "c", &lc);
  if (batch > 0) {
    const double bm1 = static_cast<double>(batch - 1);
    if (m > 0 && k > 0) a.atLeast("a", la, bm1 * sA + static_cast<double>(m) * k);
    if (k > 0 && n > 0) a.atLeast("b", lb, bm1 * sB + static_cast<double>(k) * n);
    if (m > 0 && n > 0) a.atLeast("c", lc, bm1 * sC + static_cast<double>(m) * n);
  }
  mor::sgemmBatched(tA, tB, m, n, k, alpha, A, sA, B, sB, beta, C, sC, batch);
  return undef(a.env);
}

// Elements of a packed weight (n, k) in f32 and in bf16.
double packedF32(int64_t n, int64_t k) { return static_cast<double>(mor::packedWeightSize(n, k)); }
double packedBf16(int64_t n, int64_t k) { return static_cast<double>(mor::packedWeightSizeBf16(n, k)); }

// packWeight(n, k, w, dst): w (n, k) → dst, a Float32Array (packedWeightSize) or a Uint16Array
// (packedWeightSizeBf16: bf16 panels)
napi_value packWeight(const Args& a) {
  const int64_t n = a.size(0, "n", 1), k = a.size(1, "k", 1);
  const float* w = a.f32AtLeast(2, "w", static_cast<double>(n) * k);
  bool bf16;
  void* d = a.f32OrBf16Len(3, "dst", packedF32(n, k), packedBf16(n, k), &bf16);
  if (bf16)
    mor::packWeightBf16(n, k, w, static_cast<uint16_t*>(d));
  else
    mor::packWeight(n, k, w, static_cast<float*>(d));
  return undef(a.env);
}

// gemmPacked(m, n, k, a, packed, c, accumulate): c (m, n) = a (m, k) · Wᵀ (+ c); packed f32 or bf16
napi_value gemmPacked(const Args& a) {
  const int64_t m = a.size(0, "m", 0), n = a.size(1, "n", 1), k = a.size(2, "k", 1);
  const float* A = a.f32AtLeast(3, "a", static_cast<double>(m) * k);
  bool bf16;
  const void* P = a.f32OrBf16Len(4, "packed", packedF32(n, k), packedBf16(n, k), &bf16);
  float* C = a.f32AtLeast(5, "c", static_cast<double>(m) * n);
  const bool acc = a.boolean(6, "accumulate");
  if (bf16)
    mor::isa().sgemmPackedBf16(m, n, k, A, k, static_cast<const uint16_t*>(P), C, n, acc);
  else
    mor::isa().sgemmPacked(m, n, k, A, k, static_cast<const float*>(P), C, n, acc);
  return undef(a.env);
}

// ---- attention -------------------------------------------------------------------------------------

// (numHeads, numKvHeads, headDim, scale) at argv[i..i+3], into an AttnShape or a PagedShape.
template <class Shape>
void readHeads(const Args& a, size_t i, int64_t minHeadDim, Shape& s) {
  s.numHeads = a.size(i, "numHeads", 1);
  s.numKvHeads = a.size(i + 1, "numKvHeads", 1);
  s.headDim = a.size(i + 2, "headDim", minHeadDim);
  s.scale = a.f32num(i + 3, "scale");
}

// (H, KVH, HD, scale, segments, qPos, kPos) at argv[0..6]; element counts of a q-like and a k-like buffer.
mor::AttnShape attnShape(const Args& a, double* qn, double* kn) {
  mor::AttnShape s{};
  readHeads(a, 0, 1, s);
  int64_t ls;
  s.segments = a.i32(4, "segments", &ls);
  if (ls % 4 != 0)
    fail(ErrKind::Shape, "attention: segments has " + std::to_string(ls) + " elements, not a multiple of 4");
  s.numSegments = ls / 4;
  s.qPos = a.i32(5, "qPos", &s.nq);
  s.kPos = a.i32(6, "kPos", &s.nk);
  *qn = static_cast<double>(s.nq) * s.numHeads * s.headDim;
  *kn = static_cast<double>(s.nk) * s.numKvHeads * s.headDim;
  return s;
}

// attentionForward(H, KVH, HD, scale, segments, qPos, kPos, q, k, v, out, lse)
napi_value attnFwd(const Args& a) {
  double qn, kn;
  const mor::AttnShape s = attnShape(a, &qn, &kn);
  const float* q = a.f32Len(7, "q", qn);
  const float* k = a.f32Len(8, "k", kn);
  const float* v = a.f32Len(9, "v", kn);
  float* out = a.f32Len(10, "out", qn);
  float* lse = a.f32Len(11, "lse", static_cast<double>(s.nq) * s.numHeads);
  mor::isa().attentionForward(s, q, k, v, out, lse);
  return undef(a.env);
}

// attentionBackward(H, KVH, HD, scale, segments, qPos, kPos, q, k, v, out, lse, dOut, dQ, dK, dV)
napi_value attnBwd(const Args& a) {
  double qn, kn;
  const mor::AttnShape s = attnShape(a, &qn, &kn);
  const float* q = a.f32Len(7, "q", qn);
  const float* k = a.f32Len(8, "k", kn);
  const float* v = a.f32Len(9, "v", kn);
  const float* out = a.f32Len(10, "out", qn);
  const float* lse = a.f32Len(11, "lse", static_cast<double>(s.nq) * s.numHeads);
  const float* dOut = a.f32Len(12, "dOut", qn);
  float* dQ = a.f32Len(13, "dQ", qn);
  float* dK = a.f32Len(14, "dK", kn);
  float* dV = a.f32Len(15, "dV", kn);
  mor::isa().attentionBackward(s, q, k, v, out, lse, dOut, dQ, dK, dV);
  return undef(a.env);
}

// (qPos, posPool, streams, blockTables) at argv[i..i+3]; streams holds 2 ints per query row.
void readStreams(const Args& a, size_t i, mor::PagedShape& s) {
  s.qPos = a.i32(i, "qPos", &s.nq);
  s.posPool = a.i32(i + 1, "posPool", &s.numSlots);
  s.streams = a.i32Len(i + 2, "streams", 2.0 * static_cast<double>(s.nq));
  s.blockTables = a.i32(i + 3, "blockTables", &s.tableLen);
}

// The K and V pools at argv[i], argv[i+1]: both Float32Array or both Uint16Array (bf16), kn elements.
mor::DecodeLayerPool readPools(const Args& a, size_t i, double kn) {
  mor::DecodeLayerPool p{};
  bool vBf16;
  p.k = a.f32OrBf16Len(i, "kPool", kn, kn, &p.bf16);
  p.v = a.f32OrBf16Len(i + 1, "vPool", kn, kn, &vBf16);
  if (vBf16 != p.bf16)
    fail(ErrKind::Dtype, std::string(a.fn) + ": kPool and vPool must have one dtype (both Float32Array or both Uint16Array bf16)");
  return p;
}

// attentionPaged(H, KVH, HD, scale, blockSize, qPos, posPool, streams, blockTables, q, kPool, vPool, out)
// Stream ranges and block ids are checked against blockTables and the pool by the kernel. The pools
// are f32, or bf16 (Uint16Array).
napi_value attnPaged(const Args& a) {
  mor::PagedShape s{};
  readHeads(a, 0, 1, s);
  s.blockSize = a.size(4, "blockSize", 1);
  readStreams(a, 5, s);
  const double qn = static_cast<double>(s.nq) * s.numHeads * s.headDim,
               kn = static_cast<double>(s.numSlots) * s.numKvHeads * s.headDim;
  const float* q = a.f32Len(9, "q", qn);
  const mor::DecodeLayerPool p = readPools(a, 10, kn);
  float* out = a.f32Len(12, "out", qn);
  if (p.bf16)
    mor::isa().attentionPagedBf16(s, q, static_cast<const uint16_t*>(p.k), static_cast<const uint16_t*>(p.v), out);
  else
    mor::isa().attentionPaged(s, q, static_cast<const float*>(p.k), static_cast<const float*>(p.v), out);
  return undef(a.env);
}

// decodeLayer(n, d, inter, numHeads, numKvHeads, headDim, scale, blockSize, eps, ropeTheta,
//             qPos, posPool, streams, blockTables, kvSlots,
//             h, inputNorm, postNorm, qkv, o, gateUp, down, kPool, vPool, out)
// The four packed weights all f32 or all bf16 (Uint16Array); the pools both f32 or both bf16.
napi_value decodeLayer(const Args& a) {
  mor::DecodeLayerShape s{};
  mor::PagedShape& p = s.attn;
  s.n = a.size(0, "n", 0);
  s.d = a.size(1, "d", 1);
  s.inter = a.size(2, "inter", 1);
  readHeads(a, 3, 2, p);
  if (p.headDim % 2 != 0) fail(ErrKind::Argument, "decodeLayer: headDim must be even, got " + std::to_string(p.headDim));
  p.blockSize = a.size(7, "blockSize", 1);
  s.eps = a.f32num(8, "eps");
  s.ropeTheta = a.num(9, "ropeTheta");
  if (!(s.ropeTheta > 0)) fail(ErrKind::Argument, "decodeLayer: ropeTheta must be > 0");
  readStreams(a, 10, p);
  a.len("qPos", p.nq, static_cast<double>(s.n));
  s.kvSlots = a.i32Len(14, "kvSlots", static_cast<double>(s.n));
  const int64_t qw = p.numHeads * p.headDim, kvw = p.numKvHeads * p.headDim;
  const double nd = static_cast<double>(s.n) * s.d;
  const float* h = a.f32Len(15, "h", nd);
  mor::DecodeLayerWeights w{};
  w.inputNorm = a.f32Len(16, "inputNorm", static_cast<double>(s.d));
  w.postNorm = a.f32Len(17, "postNorm", static_cast<double>(s.d));
  auto packed = [&](size_t i, const char* name, int64_t rows, int64_t cols) {
    bool bf16;
    const void* d = a.f32OrBf16Len(i, name, packedF32(rows, cols), packedBf16(rows, cols), &bf16);
    if (i == 18) w.bf16 = bf16;
    if (bf16 != w.bf16) fail(ErrKind::Dtype, std::string("decodeLayer: ") + name + " is not of qkv's dtype: pack all four weights in one dtype");
    return d;
  };
  w.qkv = packed(18, "qkv", qw + 2 * kvw, s.d);
  w.o = packed(19, "o", s.d, qw);
  w.gateUp = packed(20, "gateUp", 2 * s.inter, s.d);
  w.down = packed(21, "down", s.d, s.inter);
  const mor::DecodeLayerPool pool = readPools(a, 22, static_cast<double>(p.numSlots) * kvw);
  float* out = a.f32Len(24, "out", nd);
  mor::isa().decodeLayer(s, h, w, pool, out);
  return undef(a.env);
}

// ---- layers ----------------------------------------------------------------------------------------

// rope(x, pos, nHeads, headDim, theta, inverse, out)
napi_value rope(const Args& a) {
  int64_t lx, lp;
  const float* x = a.f32(0, "x", &lx);
  const int32_t* pos = a.i32(1, "pos", &lp);
  const int64_t nHeads = a.size(2, "nHeads", 1), hd = a.size(3, "headDim", 2);
  if (hd % 2 != 0) fail(ErrKind::Argument, "rope: headDim must be even, got " + std::to_string(hd));
  const double theta = a.num(4, "theta");
  if (!(theta > 0)) fail(ErrKind::Argument, "rope: theta must be > 0");
  const bool inverse = a.boolean(5, "inverse");
  int64_t lo;
  float* out = a.f32(6, "out", &lo);
  a.len("x", lx, static_cast<double>(lp) * nHeads * hd);
  a.len("out", lo, static_cast<double>(lx));
  mor::isa().rope(x, pos, lp, nHeads, hd, theta, inverse, out);
  return undef(a.env);
}

// rmsnormForward(x, w, eps, out, rstd)
napi_value rmsnormFwd(const Args& a) {
  int64_t lx, lw;
  const float* x = a.f32(0, "x", &lx);
  const float* w = a.f32(1, "w", &lw);
  const float eps = a.f32num(2, "eps");
  const int64_t n = a.rowsOf("x", lx, lw);
  float* out = a.f32Len(3, "out", static_cast<double>(lx));
  float* rstd = a.f32Len(4, "rstd", static_cast<double>(n));
  mor::isa().rmsnormForward(x, w, n, lw, eps, out, rstd);
  return undef(a.env);
}

// rmsnormBackward(x, w, rstd, dOut, dX, dW)
napi_value rmsnormBwd(const Args& a) {
  int64_t lx, lw;
  const float* x = a.f32(0, "x", &lx);
  const float* w = a.f32(1, "w", &lw);
  const int64_t n = a.rowsOf("x", lx, lw);
  const float* rstd = a.f32Len(2, "rstd", static_cast<double>(n));
  const float* g = a.f32Len(3, "dOut", static_cast<double>(lx));
  float* dX = a.f32Len(4, "dX", static_cast<double>(lx));
  float* dW = a.f32Len(5, "dW", static_cast<double>(lw));
  mor::isa().rmsnormBackward(x, w, rstd, g, n, lw, dX, dW);
  return undef(a.env);
}

// Elementwise kernels over equal-length buffers: (x, y) → out, (x, y, dOut) → (dX, dY), x → out.
using Elementwise2to1 = void (*)(const float*, const float*, int64_t, float*);
using Elementwise3to2 = void (*)(const float*, const float*, const float*, int64_t, float*, float*);

napi_value elementwise2to1(const Args& a, const char* xName, const char* yName, Elementwise2to1 f) {
  int64_t lx;
  const float* x = a.f32(0, xName, &lx);
  const float* y = a.f32Len(1, yName, static_cast<double>(lx));
  float* o = a.f32Len(2, "out", static_cast<double>(lx));
  f(x, y, lx, o);
  return undef(a.env);
}

napi_value elementwise3to2(const Args& a, const char* xName, const char* yName, const char* dxName, const char* dyName,
                           Elementwise3to2 f) {
  int64_t lx;
  const float* x = a.f32(0, xName, &lx);
  const double n = static_cast<double>(lx);
  const float* y = a.f32Len(1, yName, n);
  const float* g = a.f32Len(2, "dOut", n);
  float* dx = a.f32Len(3, dxName, n);
  float* dy = a.f32Len(4, dyName, n);
  f(x, y, g, lx, dx, dy);
  return undef(a.env);
}

napi_value swigluFwd(const Args& a) { return elementwise2to1(a, "gate", "up", mor::isa().swigluForward); }
napi_value swigluBwd(const Args& a) { return elementwise3to2(a, "gate", "up", "dGate", "dUp", mor::isa().swigluBackward); }
napi_value bceFwd(const Args& a) { return elementwise2to1(a, "z", "t", mor::isa().bceWithLogitsForward); }
napi_value bceBwd(const Args& a) { return elementwise3to2(a, "z", "t", "dZ", "dT", mor::isa().bceWithLogitsBackward); }
napi_value add(const Args& a) { return elementwise2to1(a, "a", "b", mor::isa().add); }
napi_value mul(const Args& a) { return elementwise2to1(a, "a", "b", mor::isa().mul); }

// gatherRows(src, idx, cols, out)
napi_value gatherRows(const Args& a) {
  int64_t ls, li;
  const float* src = a.f32(0, "src", &ls);
  const int32_t* idx = a.i32(1, "idx", &li);
  const int64_t cols = a.integer(2, "cols", 0);
  float* out = a.f32Len(3, "out", static_cast<double>(li) * cols);
  if (cols == 0) return undef(a.env);
  mor::isa().gatherRows(src, a.rowsOf("src", ls, cols), idx, li, cols, out);
  return undef(a.env);
}

// scatterAddRows(src, idx, cols, out)
napi_value scatterAddRows(const Args& a) {
  int64_t ls, li, lo;
  const float* src = a.f32(0, "src", &ls);
  const int32_t* idx = a.i32(1, "idx", &li);
  const int64_t cols = a.integer(2, "cols", 0);
  float* out = a.f32(3, "out", &lo);
  a.len("src", ls, static_cast<double>(li) * cols);
  if (cols == 0) return undef(a.env);
  mor::isa().scatterAddRows(src, idx, li, cols, out, a.rowsOf("out", lo, cols));
  return undef(a.env);
}

// ---- losses ----------------------------------------------------------------------------------------

// (logits, targets, vocab, ignoreIndex) at argv[0..3] of both cross-entropy kernels; logits (N, V).
struct CrossEntropyArgs {
  const float* logits;
  const int32_t* targets;
  int64_t n, vocab, ignore;
};
CrossEntropyArgs crossEntropyArgs(const Args& a) {
  CrossEntropyArgs c{};
  int64_t ll;
  c.logits = a.f32(0, "logits", &ll);
  c.targets = a.i32(1, "targets", &c.n);
  c.vocab = a.size(2, "vocab", 1);
  c.ignore = a.integer(3, "ignoreIndex", -(int64_t{1} << 53));
  a.len("logits", ll, static_cast<double>(c.n) * c.vocab);
  return c;
}

// crossEntropyForward(logits, targets, vocab, ignoreIndex, losses, lse) → count
napi_value ceFwd(const Args& a) {
  const CrossEntropyArgs c = crossEntropyArgs(a);
  float* losses = a.f32Len(4, "losses", static_cast<double>(c.n));
  float* lse = a.f32Len(5, "lse", static_cast<double>(c.n));
  return number(a.env, static_cast<double>(mor::isa().crossEntropyForward(c.logits, c.targets, c.n, c.vocab, c.ignore, losses, lse)));
}

// crossEntropyBackward(logits, targets, vocab, ignoreIndex, lse, dLoss, dLogits)
napi_value ceBwd(const Args& a) {
  const CrossEntropyArgs c = crossEntropyArgs(a);
  const float* lse = a.f32Len(4, "lse", static_cast<double>(c.n));
  const float* dLoss = a.f32Len(5, "dLoss", static_cast<double>(c.n));
  float* d = a.f32Len(6, "dLogits", static_cast<double>(c.n) * c.vocab);
  mor::isa().crossEntropyBackward(c.logits, c.targets, c.n, c.vocab, c.ignore, lse, dLoss, d);
  return undef(a.env);
}

// ---- pointwise and row-wise ------------------------------------------------------------------------

// unary(op, x, out)
napi_value unary(const Args& a) {
  const int64_t op = a.integer(0, "op", 0, 3);
  int64_t lx;
  const float* x = a.f32(1, "x", &lx);
  float* o = a.f32Len(2, "out", static_cast<double>(lx));
  mor::isa().unary(static_cast<int>(op), x, lx, o);
  return undef(a.env);
}

// unaryBackward(op, x, y, dOut, dX)
napi_value unaryBwd(const Args& a) {
  const int64_t op = a.integer(0, "op", 0, 3);
  int64_t lx;
  const float* x = a.f32(1, "x", &lx);
  const double n = static_cast<double>(lx);
  const float* y = a.f32Len(2, "y", n);
  const float* g = a.f32Len(3, "dOut", n);
  float* d = a.f32Len(4, "dX", n);
  mor::isa().unaryBackward(static_cast<int>(op), x, y, g, lx, d);
  return undef(a.env);
}

// Row kernels (x, cols, out) over x (R, C); the output is (R, C), (R) or (C).
enum class RowOut { Same, PerRow, PerCol };
using RowKernel = void (*)(const float*, int64_t, int64_t, float*);

napi_value rowKernel(const Args& a, RowOut shape, RowKernel f) {
  int64_t lx;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.integer(1, "cols", 0);
  const int64_t rows = a.rowsOf("x", lx, cols);
  const int64_t want = shape == RowOut::Same ? lx : shape == RowOut::PerRow ? rows : cols;
  float* o = a.f32Len(2, "out", static_cast<double>(want));
  f(x, rows, cols, o);
  return undef(a.env);
}

napi_value softmaxRows(const Args& a) { return rowKernel(a, RowOut::Same, mor::isa().softmaxRows); }
napi_value lseRows(const Args& a) { return rowKernel(a, RowOut::PerRow, mor::isa().logsumexpRows); }
napi_value sumRows(const Args& a) { return rowKernel(a, RowOut::PerCol, mor::isa().sumRows); }  // out (C)
napi_value sumCols(const Args& a) { return rowKernel(a, RowOut::PerRow, mor::isa().sumCols); }  // out (R)

// softmaxRowsBackward(y, dOut, cols, dX)
napi_value softmaxRowsBwd(const Args& a) {
  int64_t ly;
  const float* y = a.f32(0, "y", &ly);
  const int64_t cols = a.integer(2, "cols", 0);
  const int64_t rows = a.rowsOf("y", ly, cols);
  const float* g = a.f32Len(1, "dOut", static_cast<double>(ly));
  float* d = a.f32Len(3, "dX", static_cast<double>(ly));
  mor::isa().softmaxRowsBackward(y, g, rows, cols, d);
  return undef(a.env);
}

// logsumexpRowsBackward(x, lse, dOut, cols, dX)
napi_value lseRowsBwd(const Args& a) {
  int64_t lx;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.integer(3, "cols", 0);
  const int64_t rows = a.rowsOf("x", lx, cols);
  const float* lse = a.f32Len(1, "lse", static_cast<double>(rows));
  const float* g = a.f32Len(2, "dOut", static_cast<double>(rows));
  float* d = a.f32Len(4, "dX", static_cast<double>(lx));
  mor::isa().logsumexpRowsBackward(x, lse, g, rows, cols, d);
  return undef(a.env);
}

// topkRows(x, cols, k, order, indices, values); order 0 by value, 1 by index
napi_value topkRows(const Args& a) {
  int64_t lx;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.size(1, "cols", 1);
  const int64_t k = a.size(2, "k", 1);
  const bool byIndex = a.integer(3, "order", 0, 1) == 1;
  int64_t li, lv;
  int32_t* idx = a.i32(4, "indices", &li);
  float* vals = a.f32(5, "values", &lv);
  if (k > cols)
    fail(ErrKind::Argument, "topkRows: k = " + std::to_string(k) + " must be ≤ cols = " + std::to_string(cols));
  const int64_t rows = a.rowsOf("x", lx, cols);
  a.len("indices", li, static_cast<double>(rows) * k);
  a.len("values", lv, static_cast<double>(rows) * k);
  mor::isa().topkRows(x, rows, cols, k, byIndex, idx, vals);
  return undef(a.env);
}

// Reductions of a whole buffer to one float64: sum(x), sumSquares(x).
template <double (*mor::KernelTable::*F)(const float*, int64_t)>
napi_value reduce(const Args& a) {
  int64_t l;
  const float* x = a.f32(0, "x", &l);
  return number(a.env, (mor::isa().*F)(x, l));
}

// scaleRows(x, s, cols, out): x, out (R, C), s (R)
napi_value scaleRows(const Args& a) {
  int64_t lx;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.integer(2, "cols", 0);
  const int64_t rows = a.rowsOf("x", lx, cols);
  const float* sc = a.f32Len(1, "s", static_cast<double>(rows));
  float* o = a.f32Len(3, "out", static_cast<double>(lx));
  mor::isa().scaleRows(x, sc, rows, cols, o);
  return undef(a.env);
}

// rowDot(a, b, cols, out): a, b (R, C), out (R)
napi_value rowDot(const Args& a) {
  int64_t la;
  const float* x = a.f32(0, "a", &la);
  const int64_t cols = a.integer(2, "cols", 0);
  const int64_t rows = a.rowsOf("a", la, cols);
  const float* y = a.f32Len(1, "b", static_cast<double>(la));
  float* o = a.f32Len(3, "out", static_cast<double>(rows));
  mor::isa().rowDot(x, y, rows, cols, o);
  return undef(a.env);
}

// scale(a, s, out)
napi_value scale(const Args& a) {
  int64_t la;
  const float* x = a.f32(0, "a", &la);
  const float s = a.f32num(1, "s");
  float* o = a.f32Len(2, "out", static_cast<double>(la));
  mor::isa().scale(x, s, la, o);
  return undef(a.env);
}

// axpy(alpha, x, y)
napi_value axpy(const Args& a) {
  const float alpha = a.f32num(0, "alpha");
  int64_t lx;
  const float* x = a.f32(1, "x", &lx);
  float* y = a.f32Len(2, "y", static_cast<double>(lx));
  mor::isa().axpy(alpha, x, lx, y);
  return undef(a.env);
}

// fill(x, value)
napi_value fill(const Args& a) {
  int64_t lx;
  float* x = a.f32(0, "x", &lx);
  mor::isa().fill(x, lx, a.f32num(1, "value"));
  return undef(a.env);
}

// ---- optimiser -------------------------------------------------------------------------------------

// adamwStep(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step)
napi_value adamw(const Args& a) {
  int64_t lp, lg;
  float* p = a.f32(0, "param", &lp);
  const float* g = a.f32(1, "grad", &lg);
  const double n = static_cast<double>(lg);
  a.len("param", lp, n);
  float* m = a.f32Len(2, "m", n);
  float* v = a.f32Len(3, "v", n);
  const double lr = a.num(4, "lr"), b1 = a.num(5, "beta1"), b2 = a.num(6, "beta2"), eps = a.num(7, "eps"),
               wd = a.num(8, "weightDecay");
  const double step = static_cast<double>(a.integer(9, "step", 1));
  mor::isa().adamwStep(p, g, m, v, lg, lr, b1, b2, eps, wd, step);
  return undef(a.env);
}

// ---- the export table --------------------------------------------------------------------------------

// One row per export: the name JS sees (a Backend method's, for kernels) and its binding.
const Export kExports[] = {
    {"init", init},
    {"info", info},
    {"setGemmProvider", setGemmProvider},
    {"setNumThreads", setNumThreads},
    {"setSimd", setSimd},
    {"probeFma", probeFma},
    {"probeStreamRead", probeStreamRead},
    {"rawSgemmGflops", rawSgemmGflops},
    {"packedWeightSize", packedWeightSize},
    {"packedWeightSizeBf16", packedWeightSizeBf16},
    {"gemm", gemm},
    {"packWeight", packWeight},
    {"gemmPacked", gemmPacked},
    {"decodeLayer", decodeLayer},
    {"attentionForward", attnFwd},
    {"attentionBackward", attnBwd},
    {"attentionPaged", attnPaged},
    {"rope", rope},
    {"rmsnormForward", rmsnormFwd},
    {"rmsnormBackward", rmsnormBwd},
    {"swigluForward", swigluFwd},
    {"swigluBackward", swigluBwd},
    {"gatherRows", gatherRows},
    {"scatterAddRows", scatterAddRows},
    {"crossEntropyForward", ceFwd},
    {"crossEntropyBackward", ceBwd},
    {"bceWithLogitsForward", bceFwd},
    {"bceWithLogitsBackward", bceBwd},
    {"unary", unary},
    {"unaryBackward", unaryBwd},
    {"softmaxRows", softmaxRows},
    {"softmaxRowsBackward", softmaxRowsBwd},
    {"logsumexpRows", lseRows},
    {"logsumexpRowsBackward", lseRowsBwd},
    {"topkRows", topkRows},
    {"sum", reduce<&mor::KernelTable::sum>},
    {"sumSquares", reduce<&mor::KernelTable::sumSquares>},
    {"sumRows", sumRows},
    {"sumCols", sumCols},
    {"scaleRows", scaleRows},
    {"rowDot", rowDot},
    {"add", add},
    {"mul", mul},
    {"scale", scale},
    {"axpy", axpy},
    {"fill", fill},
    {"adamwStep", adamw},
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<AddonData>(new AddonData());
  for (const Export& x : kExports) {
    napi_value f;
    napi_create_function(env, x.name, NAPI_AUTO_LENGTH, entry, const_cast<Export*>(&x), &f);
    exports.Set(x.name, Napi::Value(env, f));
  }
  return exports;
}

}  // namespace

NODE_API_MODULE(mor_native, Init)
