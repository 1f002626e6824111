// Node-API binding of the kernels. Every export takes typed arrays and numbers positionally (the
// TypeScript wrapper in src/backend/native.ts builds them), validates types and buffer lengths, and
// calls the plain C++ kernel. Hot entry points use the C Node-API directly (no per-call heap
// allocation); node-addon-api is used for module setup.
//
// Errors are the project's own classes (ShapeError, DtypeError, ArgumentError from src/errors.ts),
// registered once by the wrapper through init(); before that, plain Error/TypeError/RangeError.
#include <napi.h>

#include <cmath>
#include <string>

#include "common.h"
#include "gemm.h"
#include "kernels.h"

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

[[noreturn]] void fail(ErrKind kind, const std::string& msg) { throw KernelError(kind, msg); }

// Argument access for one call: fn is the kernel name used in messages.
struct Args {
  napi_env env;
  napi_value* argv;
  size_t argc;
  const char* fn;

  std::string where(const char* name) const { return std::string(fn) + ": " + name; }

  const char* typeName(napi_value v) const {
    napi_valuetype t;
    napi_typeof(env, v, &t);
    switch (t) {
      case napi_undefined: return "undefined";
      case napi_null: return "null";
      case napi_boolean: return "boolean";
      case napi_number: return "number";
      case napi_string: return "string";
      case napi_bigint: return "bigint";
      default: break;
    }
    bool isArray = false;
    napi_is_array(env, v, &isArray);
    return isArray ? "Array" : "object";
  }

  static const char* arrayName(napi_typedarray_type t) {
    switch (t) {
      case napi_int8_array: return "Int8Array";
      case napi_uint8_array: return "Uint8Array";
      case napi_uint8_clamped_array: return "Uint8ClampedArray";
      case napi_int16_array: return "Int16Array";
      case napi_uint16_array: return "Uint16Array";
      case napi_int32_array: return "Int32Array";
      case napi_uint32_array: return "Uint32Array";
      case napi_float32_array: return "Float32Array";
      case napi_float64_array: return "Float64Array";
      case napi_bigint64_array: return "BigInt64Array";
      case napi_biguint64_array: return "BigUint64Array";
      default: return "TypedArray";
    }
  }

  void* typed(size_t i, const char* name, napi_typedarray_type want, int64_t* len) const {
    napi_typedarray_type type;
    size_t length = 0;
    void* data = nullptr;
    bool is = false;
    if (i >= argc || napi_is_typedarray(env, argv[i], &is) != napi_ok || !is)
      fail(ErrKind::Dtype, where(name) + " must be a " + arrayName(want) + ", got " +
                               (i < argc ? typeName(argv[i]) : "nothing"));
    napi_get_typedarray_info(env, argv[i], &type, &length, &data, nullptr, nullptr);
    if (type != want)
      fail(ErrKind::Dtype, where(name) + " must be a " + arrayName(want) + ", got " + arrayName(type));
    *len = static_cast<int64_t>(length);
    return data;
  }
  float* f32(size_t i, const char* name, int64_t* len) const {
    return static_cast<float*>(typed(i, name, napi_float32_array, len));
  }
  int32_t* i32(size_t i, const char* name, int64_t* len) const {
    return static_cast<int32_t*>(typed(i, name, napi_int32_array, len));
  }
  double num(size_t i, const char* name) const {
    double d = 0;
    if (i >= argc || napi_get_value_double(env, argv[i], &d) != napi_ok)
      fail(ErrKind::Argument, where(name) + " must be a number, got " + (i < argc ? typeName(argv[i]) : "nothing"));
    return d;
  }
  int64_t integer(size_t i, const char* name, int64_t lo, int64_t hi = (int64_t{1} << 53)) const {
    const double d = num(i, name);
    if (!(d == std::floor(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi))
      fail(ErrKind::Argument, where(name) + " must be an integer in [" + std::to_string(lo) + ", " +
                                  std::to_string(hi) + "], got " + std::to_string(d));
    return static_cast<int64_t>(d);
  }
  bool boolean(size_t i, const char* name) const {
    bool b = false;
    if (i >= argc || napi_get_value_bool(env, argv[i], &b) != napi_ok)
      fail(ErrKind::Argument, where(name) + " must be a boolean");
    return b;
  }
  // Length checks.
  void len(const char* name, int64_t have, double want) const {
    if (static_cast<double>(have) != want)
      fail(ErrKind::Shape, where(name) + " has " + std::to_string(have) + " elements, expected " +
                               std::to_string(static_cast<int64_t>(want)));
  }
  void atLeast(const char* name, int64_t have, double want) const {
    if (static_cast<double>(have) < want)
      fail(ErrKind::Shape, where(name) + " has " + std::to_string(have) + " elements, needs at least " +
                               std::to_string(static_cast<int64_t>(want)));
  }
  // rows = total / cols, which must divide exactly.
  int64_t rowsOf(const char* name, int64_t total, int64_t cols) const {
    if (cols <= 0) {
      if (total == 0) return 0;
      fail(ErrKind::Argument, where("cols") + " must be ≥ 1, got " + std::to_string(cols));
    }
    if (total % cols != 0)
      fail(ErrKind::Shape, where(name) + " has " + std::to_string(total) + " elements, not a multiple of cols = " +
                               std::to_string(cols));
    return total / cols;
  }
};

napi_value undef(napi_env) { return nullptr; }
napi_value number(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

template <napi_value (*F)(const Args&)>
napi_value entry(napi_env env, napi_callback_info cbi, const char* name) {
  napi_value argv[32];
  size_t argc = 32;
  napi_get_cb_info(env, cbi, &argc, argv, nullptr, nullptr);
  Args a{env, argv, argc, name};
  try {
    return F(a);
  } catch (const KernelError& e) {
    throwJs(env, e.kind, e.what());
  } catch (const Napi::Error& e) {
    e.ThrowAsJavaScriptException();
  } catch (const std::bad_alloc&) {
    napi_throw_error(env, nullptr, (std::string(name) + ": out of memory").c_str());
  } catch (const std::exception& e) {
    napi_throw_error(env, nullptr, (std::string(name) + ": " + e.what()).c_str());
  }
  return nullptr;
}

// ---- exports -----------------------------------------------------------------------------------

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
  o.Set("simd", MOR_SIMD_NAME);
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

napi_value setNumThreads(const Args& a) {
  mor::setNumThreads(static_cast<int>(a.integer(0, "n", 1, 4096)));
  return undef(a.env);
}

napi_value rawSgemmGflops(const Args& a) {
  const int64_t m = a.integer(0, "m", 1, INT32_MAX), n = a.integer(1, "n", 1, INT32_MAX),
                k = a.integer(2, "k", 1, INT32_MAX), it = a.integer(3, "iterations", 1, 1 << 30);
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

// gemm(transA, transB, m, n, k, alpha, beta, batch, strideA, strideB, strideC, a, b, c)
napi_value gemm(const Args& a) {
  const bool tA = a.boolean(0, "transA"), tB = a.boolean(1, "transB");
  const int64_t m = a.integer(2, "m", 0, INT32_MAX), n = a.integer(3, "n", 0, INT32_MAX),
                k = a.integer(4, "k", 0, INT32_MAX);
  const float alpha = static_cast<float>(a.num(5, "alpha")), beta = static_cast<float>(a.num(6, "beta"));
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

// packedWeightSize(n, k) → floats of the packed form
napi_value packedWeightSize(const Args& a) {
  const int64_t n = a.integer(0, "n", 1, INT32_MAX), k = a.integer(1, "k", 1, INT32_MAX);
  return number(a.env, static_cast<double>(mor::packedWeightSize(n, k)));
}

// packWeight(n, k, w, dst): w (n, k) → dst (packedWeightSize(n, k))
napi_value packWeight(const Args& a) {
  const int64_t n = a.integer(0, "n", 1, INT32_MAX), k = a.integer(1, "k", 1, INT32_MAX);
  int64_t lw, ld;
  const float* w = a.f32(2, "w", &lw);
  float* d = a.f32(3, "dst", &ld);
  a.atLeast("w", lw, static_cast<double>(n) * k);
  a.atLeast("dst", ld, static_cast<double>(mor::packedWeightSize(n, k)));
  mor::packWeight(n, k, w, d);
  return undef(a.env);
}

// gemmPacked(m, n, k, a, packed, c, accumulate): c (m, n) = a (m, k) · Wᵀ (+ c)
napi_value gemmPacked(const Args& a) {
  const int64_t m = a.integer(0, "m", 0, INT32_MAX), n = a.integer(1, "n", 1, INT32_MAX),
                k = a.integer(2, "k", 1, INT32_MAX);
  int64_t la, lp, lc;
  const float* A = a.f32(3, "a", &la);
  const float* P = a.f32(4, "packed", &lp);
  float* C = a.f32(5, "c", &lc);
  const bool acc = a.boolean(6, "accumulate");
  a.atLeast("a", la, static_cast<double>(m) * k);
  a.atLeast("packed", lp, static_cast<double>(mor::packedWeightSize(n, k)));
  a.atLeast("c", lc, static_cast<double>(m) * n);
  mor::sgemmPacked(m, n, k, A, k, P, C, n, acc);
  return undef(a.env);
}

mor::AttnShape attnShape(const Args& a, int64_t* nq, int64_t* nk) {
  mor::AttnShape s{};
  s.numHeads = a.integer(0, "numHeads", 1, INT32_MAX);
  s.numKvHeads = a.integer(1, "numKvHeads", 1, INT32_MAX);
  s.headDim = a.integer(2, "headDim", 1, INT32_MAX);
  s.scale = static_cast<float>(a.num(3, "scale"));
  int64_t ls;
  s.segments = a.i32(4, "segments", &ls);
  if (ls % 4 != 0)
    fail(ErrKind::Shape, "attention: segments has " + std::to_string(ls) + " elements, not a multiple of 4");
  s.numSegments = ls / 4;
  s.qPos = a.i32(5, "qPos", nq);
  s.kPos = a.i32(6, "kPos", nk);
  s.nq = *nq;
  s.nk = *nk;
  return s;
}

// attentionForward(H, KVH, HD, scale, segments, qPos, kPos, q, k, v, out, lse)
napi_value attnFwd(const Args& a) {
  int64_t nq, nk;
  const mor::AttnShape s = attnShape(a, &nq, &nk);
  const double qn = static_cast<double>(nq) * s.numHeads * s.headDim,
               kn = static_cast<double>(nk) * s.numKvHeads * s.headDim;
  int64_t l;
  const float* q = a.f32(7, "q", &l);
  a.len("q", l, qn);
  const float* k = a.f32(8, "k", &l);
  a.len("k", l, kn);
  const float* v = a.f32(9, "v", &l);
  a.len("v", l, kn);
  float* out = a.f32(10, "out", &l);
  a.len("out", l, qn);
  float* lse = a.f32(11, "lse", &l);
  a.len("lse", l, static_cast<double>(nq) * s.numHeads);
  mor::attentionForward(s, q, k, v, out, lse);
  return undef(a.env);
}

// attentionBackward(H, KVH, HD, scale, segments, qPos, kPos, q, k, v, out, lse, dOut, dQ, dK, dV)
napi_value attnBwd(const Args& a) {
  int64_t nq, nk;
  const mor::AttnShape s = attnShape(a, &nq, &nk);
  const double qn = static_cast<double>(nq) * s.numHeads * s.headDim,
               kn = static_cast<double>(nk) * s.numKvHeads * s.headDim;
  int64_t l;
  const float* q = a.f32(7, "q", &l);
  a.len("q", l, qn);
  const float* k = a.f32(8, "k", &l);
  a.len("k", l, kn);
  const float* v = a.f32(9, "v", &l);
  a.len("v", l, kn);
  const float* out = a.f32(10, "out", &l);
  a.len("out", l, qn);
  const float* lse = a.f32(11, "lse", &l);
  a.len("lse", l, static_cast<double>(nq) * s.numHeads);
  const float* dOut = a.f32(12, "dOut", &l);
  a.len("dOut", l, qn);
  float* dQ = a.f32(13, "dQ", &l);
  a.len("dQ", l, qn);
  float* dK = a.f32(14, "dK", &l);
  a.len("dK", l, kn);
  float* dV = a.f32(15, "dV", &l);
  a.len("dV", l, kn);
  mor::attentionBackward(s, q, k, v, out, lse, dOut, dQ, dK, dV);
  return undef(a.env);
}

// attentionPaged(H, KVH, HD, scale, blockSize, qPos, posPool, streams, blockTables, q, kPool, vPool, out)
// Stream ranges and block ids are checked against blockTables and the pool by the kernel.
napi_value attnPaged(const Args& a) {
  mor::PagedShape s{};
  s.numHeads = a.integer(0, "numHeads", 1, INT32_MAX);
  s.numKvHeads = a.integer(1, "numKvHeads", 1, INT32_MAX);
  s.headDim = a.integer(2, "headDim", 1, INT32_MAX);
  s.scale = static_cast<float>(a.num(3, "scale"));
  s.blockSize = a.integer(4, "blockSize", 1, INT32_MAX);
  int64_t l;
  s.qPos = a.i32(5, "qPos", &s.nq);
  s.posPool = a.i32(6, "posPool", &s.numSlots);
  s.streams = a.i32(7, "streams", &l);
  a.len("streams", l, 2.0 * static_cast<double>(s.nq));
  s.blockTables = a.i32(8, "blockTables", &s.tableLen);
  const double qn = static_cast<double>(s.nq) * s.numHeads * s.headDim,
               kn = static_cast<double>(s.numSlots) * s.numKvHeads * s.headDim;
  const float* q = a.f32(9, "q", &l);
  a.len("q", l, qn);
  const float* k = a.f32(10, "kPool", &l);
  a.len("kPool", l, kn);
  const float* v = a.f32(11, "vPool", &l);
  a.len("vPool", l, kn);
  float* out = a.f32(12, "out", &l);
  a.len("out", l, qn);
  mor::attentionPaged(s, q, k, v, out);
  return undef(a.env);
}

// decodeLayer(n, d, inter, numHeads, numKvHeads, headDim, scale, blockSize, eps, ropeTheta,
//             qPos, posPool, streams, blockTables, kvSlots,
//             h, inputNorm, postNorm, qkv, o, gateUp, down, kPool, vPool, out)
napi_value decodeLayer(const Args& a) {
  mor::DecodeLayerShape s{};
  mor::PagedShape& p = s.attn;
  s.n = a.integer(0, "n", 0, INT32_MAX);
  s.d = a.integer(1, "d", 1, INT32_MAX);
  s.inter = a.integer(2, "inter", 1, INT32_MAX);
  p.numHeads = a.integer(3, "numHeads", 1, INT32_MAX);
  p.numKvHeads = a.integer(4, "numKvHeads", 1, INT32_MAX);
  p.headDim = a.integer(5, "headDim", 2, INT32_MAX);
  if (p.headDim % 2 != 0) fail(ErrKind::Argument, "decodeLayer: headDim must be even, got " + std::to_string(p.headDim));
  p.scale = static_cast<float>(a.num(6, "scale"));
  p.blockSize = a.integer(7, "blockSize", 1, INT32_MAX);
  s.eps = static_cast<float>(a.num(8, "eps"));
  s.ropeTheta = a.num(9, "ropeTheta");
  if (!(s.ropeTheta > 0)) fail(ErrKind::Argument, "decodeLayer: ropeTheta must be > 0");
  int64_t l;
  p.qPos = a.i32(10, "qPos", &p.nq);
  a.len("qPos", p.nq, static_cast<double>(s.n));
  p.posPool = a.i32(11, "posPool", &p.numSlots);
  p.streams = a.i32(12, "streams", &l);
  a.len("streams", l, 2.0 * static_cast<double>(s.n));
  p.blockTables = a.i32(13, "blockTables", &p.tableLen);
  s.kvSlots = a.i32(14, "kvSlots", &l);
  a.len("kvSlots", l, static_cast<double>(s.n));
  const int64_t qw = p.numHeads * p.headDim, kvw = p.numKvHeads * p.headDim;
  const double nd = static_cast<double>(s.n) * s.d;
  const float* h = a.f32(15, "h", &l);
  a.len("h", l, nd);
  mor::DecodeLayerWeights w{};
  w.inputNorm = a.f32(16, "inputNorm", &l);
  a.len("inputNorm", l, static_cast<double>(s.d));
  w.postNorm = a.f32(17, "postNorm", &l);
  a.len("postNorm", l, static_cast<double>(s.d));
  auto packed = [&](size_t i, const char* name, int64_t rows, int64_t cols) {
    const float* ptr = a.f32(i, name, &l);
    a.len(name, l, static_cast<double>(mor::packedWeightSize(rows, cols)));
    return ptr;
  };
  w.qkv = packed(18, "qkv", qw + 2 * kvw, s.d);
  w.o = packed(19, "o", s.d, qw);
  w.gateUp = packed(20, "gateUp", 2 * s.inter, s.d);
  w.down = packed(21, "down", s.d, s.inter);
  const double kn = static_cast<double>(p.numSlots) * kvw;
  float* kPool = a.f32(22, "kPool", &l);
  a.len("kPool", l, kn);
  float* vPool = a.f32(23, "vPool", &l);
  a.len("vPool", l, kn);
  float* out = a.f32(24, "out", &l);
  a.len("out", l, nd);
  mor::decodeLayer(s, h, w, kPool, vPool, out);
  return undef(a.env);
}

// rope(x, pos, nHeads, headDim, theta, inverse, out)
napi_value rope(const Args& a) {
  int64_t lx, lp, lo;
  const float* x = a.f32(0, "x", &lx);
  const int32_t* pos = a.i32(1, "pos", &lp);
  const int64_t nHeads = a.integer(2, "nHeads", 1, INT32_MAX), hd = a.integer(3, "headDim", 2, INT32_MAX);
  if (hd % 2 != 0) fail(ErrKind::Argument, "rope: headDim must be even, got " + std::to_string(hd));
  const double theta = a.num(4, "theta");
  if (!(theta > 0)) fail(ErrKind::Argument, "rope: theta must be > 0");
  const bool inverse = a.boolean(5, "inverse");
  float* out = a.f32(6, "out", &lo);
  a.len("x", lx, static_cast<double>(lp) * nHeads * hd);
  a.len("out", lo, static_cast<double>(lx));
  mor::rope(x, pos, lp, nHeads, hd, theta, inverse, out);
  return undef(a.env);
}

// rmsnormFwd(x, w, eps, out, rstd)
napi_value rmsnormFwd(const Args& a) {
  int64_t lx, lw, lo, lr;
  const float* x = a.f32(0, "x", &lx);
  const float* w = a.f32(1, "w", &lw);
  const float eps = static_cast<float>(a.num(2, "eps"));
  float* out = a.f32(3, "out", &lo);
  float* rstd = a.f32(4, "rstd", &lr);
  const int64_t n = a.rowsOf("x", lx, lw);
  a.len("out", lo, static_cast<double>(lx));
  a.len("rstd", lr, static_cast<double>(n));
  mor::rmsnormForward(x, w, n, lw, eps, out, rstd);
  return undef(a.env);
}

// rmsnormBwd(x, w, rstd, dOut, dX, dW)
napi_value rmsnormBwd(const Args& a) {
  int64_t lx, lw, lr, lg, ldx, ldw;
  const float* x = a.f32(0, "x", &lx);
  const float* w = a.f32(1, "w", &lw);
  const float* rstd = a.f32(2, "rstd", &lr);
  const float* g = a.f32(3, "dOut", &lg);
  float* dX = a.f32(4, "dX", &ldx);
  float* dW = a.f32(5, "dW", &ldw);
  const int64_t n = a.rowsOf("x", lx, lw);
  a.len("rstd", lr, static_cast<double>(n));
  a.len("dOut", lg, static_cast<double>(lx));
  a.len("dX", ldx, static_cast<double>(lx));
  a.len("dW", ldw, static_cast<double>(lw));
  mor::rmsnormBackward(x, w, rstd, g, n, lw, dX, dW);
  return undef(a.env);
}

// Elementwise kernels over equal-length buffers: (x, y) → out, and (x, y, dOut) → (dX, dY).
using Elementwise2to1 = void (*)(const float*, const float*, int64_t, float*);
using Elementwise3to2 = void (*)(const float*, const float*, const float*, int64_t, float*, float*);

napi_value elementwise2to1(const Args& a, const char* xName, const char* yName, Elementwise2to1 f) {
  int64_t lx, ly, lo;
  const float* x = a.f32(0, xName, &lx);
  const float* y = a.f32(1, yName, &ly);
  float* o = a.f32(2, "out", &lo);
  a.len(yName, ly, static_cast<double>(lx));
  a.len("out", lo, static_cast<double>(lx));
  f(x, y, lx, o);
  return undef(a.env);
}

napi_value elementwise3to2(const Args& a, const char* xName, const char* yName, const char* dxName, const char* dyName,
                           Elementwise3to2 f) {
  int64_t lx, ly, lg, l1, l2;
  const float* x = a.f32(0, xName, &lx);
  const float* y = a.f32(1, yName, &ly);
  const float* g = a.f32(2, "dOut", &lg);
  float* dx = a.f32(3, dxName, &l1);
  float* dy = a.f32(4, dyName, &l2);
  a.len(yName, ly, static_cast<double>(lx));
  a.len("dOut", lg, static_cast<double>(lx));
  a.len(dxName, l1, static_cast<double>(lx));
  a.len(dyName, l2, static_cast<double>(lx));
  f(x, y, g, lx, dx, dy);
  return undef(a.env);
}

napi_value swigluFwd(const Args& a) { return elementwise2to1(a, "gate", "up", mor::swigluForward); }
napi_value swigluBwd(const Args& a) { return elementwise3to2(a, "gate", "up", "dGate", "dUp", mor::swigluBackward); }

// gatherRows(src, idx, cols, out)
napi_value gatherRows(const Args& a) {
  int64_t ls, li, lo;
  const float* src = a.f32(0, "src", &ls);
  const int32_t* idx = a.i32(1, "idx", &li);
  const int64_t cols = a.integer(2, "cols", 0);
  float* out = a.f32(3, "out", &lo);
  a.len("out", lo, static_cast<double>(li) * cols);
  if (cols == 0) return undef(a.env);
  const int64_t rows = a.rowsOf("src", ls, cols);
  mor::gatherRows(src, rows, idx, li, cols, out);
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
  const int64_t rows = a.rowsOf("out", lo, cols);
  mor::scatterAddRows(src, idx, li, cols, out, rows);
  return undef(a.env);
}

// ceFwd(logits, targets, vocab, ignoreIndex, losses, lse) → count
napi_value ceFwd(const Args& a) {
  int64_t ll, lt, l1, l2;
  const float* logits = a.f32(0, "logits", &ll);
  const int32_t* t = a.i32(1, "targets", &lt);
  const int64_t vocab = a.integer(2, "vocab", 1, INT32_MAX);
  const int64_t ignore = a.integer(3, "ignoreIndex", -(int64_t{1} << 53));
  float* losses = a.f32(4, "losses", &l1);
  float* lse = a.f32(5, "lse", &l2);
  a.len("logits", ll, static_cast<double>(lt) * vocab);
  a.len("losses", l1, static_cast<double>(lt));
  a.len("lse", l2, static_cast<double>(lt));
  return number(a.env, static_cast<double>(mor::crossEntropyForward(logits, t, lt, vocab, ignore, losses, lse)));
}

// ceBwd(logits, targets, vocab, ignoreIndex, lse, dLoss, dLogits)
napi_value ceBwd(const Args& a) {
  int64_t ll, lt, l1, l2, l3;
  const float* logits = a.f32(0, "logits", &ll);
  const int32_t* t = a.i32(1, "targets", &lt);
  const int64_t vocab = a.integer(2, "vocab", 1, INT32_MAX);
  const int64_t ignore = a.integer(3, "ignoreIndex", -(int64_t{1} << 53));
  const float* lse = a.f32(4, "lse", &l1);
  const float* dLoss = a.f32(5, "dLoss", &l2);
  float* d = a.f32(6, "dLogits", &l3);
  a.len("logits", ll, static_cast<double>(lt) * vocab);
  a.len("lse", l1, static_cast<double>(lt));
  a.len("dLoss", l2, static_cast<double>(lt));
  a.len("dLogits", l3, static_cast<double>(ll));
  mor::crossEntropyBackward(logits, t, lt, vocab, ignore, lse, dLoss, d);
  return undef(a.env);
}

napi_value bceFwd(const Args& a) { return elementwise2to1(a, "z", "t", mor::bceWithLogitsForward); }
napi_value bceBwd(const Args& a) { return elementwise3to2(a, "z", "t", "dZ", "dT", mor::bceWithLogitsBackward); }

// unary(op, x, out)
napi_value unary(const Args& a) {
  const int64_t op = a.integer(0, "op", 0, 3);
  int64_t lx, lo;
  const float* x = a.f32(1, "x", &lx);
  float* o = a.f32(2, "out", &lo);
  a.len("out", lo, static_cast<double>(lx));
  mor::unary(static_cast<int>(op), x, lx, o);
  return undef(a.env);
}

// unaryBwd(op, x, y, dOut, dX)
napi_value unaryBwd(const Args& a) {
  const int64_t op = a.integer(0, "op", 0, 3);
  int64_t lx, ly, lg, ld;
  const float* x = a.f32(1, "x", &lx);
  const float* y = a.f32(2, "y", &ly);
  const float* g = a.f32(3, "dOut", &lg);
  float* d = a.f32(4, "dX", &ld);
  a.len("y", ly, static_cast<double>(lx));
  a.len("dOut", lg, static_cast<double>(lx));
  a.len("dX", ld, static_cast<double>(lx));
  mor::unaryBackward(static_cast<int>(op), x, y, g, lx, d);
  return undef(a.env);
}

// Row kernels (x, cols, out) over x (R, C); the output is (R, C), (R) or (C).
enum class RowOut { Same, PerRow, PerCol };
using RowKernel = void (*)(const float*, int64_t, int64_t, float*);

napi_value rowKernel(const Args& a, RowOut shape, RowKernel f) {
  int64_t lx, lo;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.integer(1, "cols", 0);
  float* o = a.f32(2, "out", &lo);
  const int64_t rows = a.rowsOf("x", lx, cols);
  const int64_t want = shape == RowOut::Same ? lx : shape == RowOut::PerRow ? rows : cols;
  a.len("out", lo, static_cast<double>(want));
  f(x, rows, cols, o);
  return undef(a.env);
}

napi_value softmaxRows(const Args& a) { return rowKernel(a, RowOut::Same, mor::softmaxRows); }

// softmaxRowsBwd(y, dOut, cols, dX)
napi_value softmaxRowsBwd(const Args& a) {
  int64_t ly, lg, ld;
  const float* y = a.f32(0, "y", &ly);
  const float* g = a.f32(1, "dOut", &lg);
  const int64_t cols = a.integer(2, "cols", 0);
  float* d = a.f32(3, "dX", &ld);
  const int64_t rows = a.rowsOf("y", ly, cols);
  a.len("dOut", lg, static_cast<double>(ly));
  a.len("dX", ld, static_cast<double>(ly));
  mor::softmaxRowsBackward(y, g, rows, cols, d);
  return undef(a.env);
}

napi_value lseRows(const Args& a) { return rowKernel(a, RowOut::PerRow, mor::logsumexpRows); }

// lseRowsBwd(x, lse, dOut, cols, dX)
napi_value lseRowsBwd(const Args& a) {
  int64_t lx, ll, lg, ld;
  const float* x = a.f32(0, "x", &lx);
  const float* lse = a.f32(1, "lse", &ll);
  const float* g = a.f32(2, "dOut", &lg);
  const int64_t cols = a.integer(3, "cols", 0);
  float* d = a.f32(4, "dX", &ld);
  const int64_t rows = a.rowsOf("x", lx, cols);
  a.len("lse", ll, static_cast<double>(rows));
  a.len("dOut", lg, static_cast<double>(rows));
  a.len("dX", ld, static_cast<double>(lx));
  mor::logsumexpRowsBackward(x, lse, g, rows, cols, d);
  return undef(a.env);
}

// topkRows(x, cols, k, byIndex, indices, values)
napi_value topkRows(const Args& a) {
  int64_t lx, li, lv;
  const float* x = a.f32(0, "x", &lx);
  const int64_t cols = a.integer(1, "cols", 1, INT32_MAX);
  const int64_t k = a.integer(2, "k", 1, INT32_MAX);
  const bool byIndex = a.boolean(3, "byIndex");
  int32_t* idx = a.i32(4, "indices", &li);
  float* vals = a.f32(5, "values", &lv);
  if (k > cols)
    fail(ErrKind::Argument, "topkRows: k = " + std::to_string(k) + " must be ≤ cols = " + std::to_string(cols));
  const int64_t rows = a.rowsOf("x", lx, cols);
  a.len("indices", li, static_cast<double>(rows) * k);
  a.len("values", lv, static_cast<double>(rows) * k);
  mor::topkRows(x, rows, cols, k, byIndex, idx, vals);
  return undef(a.env);
}

napi_value sum(const Args& a) {
  int64_t l;
  const float* x = a.f32(0, "x", &l);
  return number(a.env, mor::sum(x, l));
}

napi_value sumSquares(const Args& a) {
  int64_t l;
  const float* x = a.f32(0, "x", &l);
  return number(a.env, mor::sumSquares(x, l));
}

napi_value sumRows(const Args& a) { return rowKernel(a, RowOut::PerCol, mor::sumRows); }  // out (C)

napi_value sumCols(const Args& a) { return rowKernel(a, RowOut::PerRow, mor::sumCols); }  // out (R)

// scaleRows(x, s, cols, out): x, out (R, C), s (R)
napi_value scaleRows(const Args& a) {
  int64_t lx, ls, lo;
  const float* x = a.f32(0, "x", &lx);
  const float* sc = a.f32(1, "s", &ls);
  const int64_t cols = a.integer(2, "cols", 0);
  float* o = a.f32(3, "out", &lo);
  const int64_t rows = a.rowsOf("x", lx, cols);
  a.len("s", ls, static_cast<double>(rows));
  a.len("out", lo, static_cast<double>(lx));
  mor::scaleRows(x, sc, rows, cols, o);
  return undef(a.env);
}

// rowDot(a, b, cols, out): a, b (R, C), out (R)
napi_value rowDot(const Args& a) {
  int64_t la, lb, lo;
  const float* x = a.f32(0, "a", &la);
  const float* y = a.f32(1, "b", &lb);
  const int64_t cols = a.integer(2, "cols", 0);
  float* o = a.f32(3, "out", &lo);
  const int64_t rows = a.rowsOf("a", la, cols);
  a.len("b", lb, static_cast<double>(la));
  a.len("out", lo, static_cast<double>(rows));
  mor::rowDot(x, y, rows, cols, o);
  return undef(a.env);
}

template <void (*F)(const float*, const float*, int64_t, float*)>
napi_value binary(const Args& a) {
  int64_t la, lb, lo;
  const float* x = a.f32(0, "a", &la);
  const float* y = a.f32(1, "b", &lb);
  float* o = a.f32(2, "out", &lo);
  a.len("b", lb, static_cast<double>(la));
  a.len("out", lo, static_cast<double>(la));
  F(x, y, la, o);
  return undef(a.env);
}

// scale(a, s, out)
napi_value scale(const Args& a) {
  int64_t la, lo;
  const float* x = a.f32(0, "a", &la);
  const float s = static_cast<float>(a.num(1, "s"));
  float* o = a.f32(2, "out", &lo);
  a.len("out", lo, static_cast<double>(la));
  mor::scale(x, s, la, o);
  return undef(a.env);
}

// axpy(alpha, x, y)
napi_value axpy(const Args& a) {
  int64_t lx, ly;
  const float alpha = static_cast<float>(a.num(0, "alpha"));
  const float* x = a.f32(1, "x", &lx);
  float* y = a.f32(2, "y", &ly);
  a.len("y", ly, static_cast<double>(lx));
  mor::axpy(alpha, x, lx, y);
  return undef(a.env);
}

// fill(x, value)
napi_value fill(const Args& a) {
  int64_t lx;
  float* x = a.f32(0, "x", &lx);
  mor::fill(x, lx, static_cast<float>(a.num(1, "value")));
  return undef(a.env);
}

// adamw(param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step)
napi_value adamw(const Args& a) {
  int64_t lp, lg, lm, lv;
  float* p = a.f32(0, "param", &lp);
  const float* g = a.f32(1, "grad", &lg);
  float* m = a.f32(2, "m", &lm);
  float* v = a.f32(3, "v", &lv);
  a.len("param", lp, static_cast<double>(lg));
  a.len("m", lm, static_cast<double>(lg));
  a.len("v", lv, static_cast<double>(lg));
  const double lr = a.num(4, "lr"), b1 = a.num(5, "beta1"), b2 = a.num(6, "beta2"), eps = a.num(7, "eps"),
               wd = a.num(8, "weightDecay");
  const double step = static_cast<double>(a.integer(9, "step", 1));
  mor::adamwStep(p, g, m, v, lg, lr, b1, b2, eps, wd, step);
  return undef(a.env);
}

#define MOR_EXPORT(name, fn)                                                                            \
  {                                                                                                     \
    napi_value f;                                                                                       \
    napi_create_function(                                                                               \
        env, name, NAPI_AUTO_LENGTH,                                                                    \
        [](napi_env e, napi_callback_info i) -> napi_value { return entry<fn>(e, i, name); }, nullptr, &f); \
    exports.Set(name, Napi::Value(env, f));                                                             \
  }

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData<AddonData>(new AddonData());
  MOR_EXPORT("init", init);
  MOR_EXPORT("info", info);
  MOR_EXPORT("setGemmProvider", setGemmProvider);
  MOR_EXPORT("setNumThreads", setNumThreads);
  MOR_EXPORT("rawSgemmGflops", rawSgemmGflops);
  MOR_EXPORT("gemm", gemm);
  MOR_EXPORT("packedWeightSize", packedWeightSize);
  MOR_EXPORT("packWeight", packWeight);
  MOR_EXPORT("gemmPacked", gemmPacked);
  MOR_EXPORT("attentionForward", attnFwd);
  MOR_EXPORT("attentionBackward", attnBwd);
  MOR_EXPORT("attentionPaged", attnPaged);
  MOR_EXPORT("decodeLayer", decodeLayer);
  MOR_EXPORT("rope", rope);
  MOR_EXPORT("rmsnormForward", rmsnormFwd);
  MOR_EXPORT("rmsnormBackward", rmsnormBwd);
  MOR_EXPORT("swigluForward", swigluFwd);
  MOR_EXPORT("swigluBackward", swigluBwd);
  MOR_EXPORT("gatherRows", gatherRows);
  MOR_EXPORT("scatterAddRows", scatterAddRows);
  MOR_EXPORT("crossEntropyForward", ceFwd);
  MOR_EXPORT("crossEntropyBackward", ceBwd);
  MOR_EXPORT("bceWithLogitsForward", bceFwd);
  MOR_EXPORT("bceWithLogitsBackward", bceBwd);
  MOR_EXPORT("unary", unary);
  MOR_EXPORT("unaryBackward", unaryBwd);
  MOR_EXPORT("softmaxRows", softmaxRows);
  MOR_EXPORT("softmaxRowsBackward", softmaxRowsBwd);
  MOR_EXPORT("logsumexpRows", lseRows);
  MOR_EXPORT("logsumexpRowsBackward", lseRowsBwd);
  MOR_EXPORT("topkRows", topkRows);
  MOR_EXPORT("sum", sum);
  MOR_EXPORT("sumSquares", sumSquares);
  MOR_EXPORT("sumRows", sumRows);
  MOR_EXPORT("sumCols", sumCols);
  MOR_EXPORT("scaleRows", scaleRows);
  MOR_EXPORT("rowDot", rowDot);
  MOR_EXPORT("add", binary<mor::add>);
  MOR_EXPORT("mul", binary<mor::mul>);
  MOR_EXPORT("scale", scale);
  MOR_EXPORT("axpy", axpy);
  MOR_EXPORT("fill", fill);
  MOR_EXPORT("adamwStep", adamw);
  return exports;
}

}  // namespace

NODE_API_MODULE(mor_native, Init)
