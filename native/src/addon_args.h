// Argument access for the Node-API bindings in addon.cc (included there only, inside its
// anonymous namespace): typed-array, number and boolean readers that check types and lengths
// before any kernel runs and throw KernelError (turned into the project's JS errors by the entry
// point). Float32Array or, for bf16 storage (packed weights, K/V pools), Uint16Array.
#pragma once

#include <napi.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "kernels.h"

namespace {

using mor::ErrKind;
using mor::KernelError;

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
  // Typed arrays whose length is checked at once: exactly `want`, or at least `want`, elements.
  float* f32Len(size_t i, const char* name, double want) const {
    int64_t l;
    float* p = f32(i, name, &l);
    len(name, l, want);
    return p;
  }
  float* f32AtLeast(size_t i, const char* name, double want) const {
    int64_t l;
    float* p = f32(i, name, &l);
    atLeast(name, l, want);
    return p;
  }
  // A Float32Array, or a Uint16Array of bf16 values (*bf16 set), of exactly wantF32 / wantBf16 elements.
  void* f32OrBf16Len(size_t i, const char* name, double wantF32, double wantBf16, bool* bf16) const {
    bool is = false;
    napi_typedarray_type type = napi_float32_array;
    if (i < argc && napi_is_typedarray(env, argv[i], &is) == napi_ok && is)
      napi_get_typedarray_info(env, argv[i], &type, nullptr, nullptr, nullptr, nullptr);
    *bf16 = is && type == napi_uint16_array;
    int64_t l;
    void* p = *bf16 ? typed(i, name, napi_uint16_array, &l) : typed(i, name, napi_float32_array, &l);
    len(name, l, *bf16 ? wantBf16 : wantF32);
    return p;
  }
  int32_t* i32Len(size_t i, const char* name, double want) const {
    int64_t l;
    int32_t* p = i32(i, name, &l);
    len(name, l, want);
    return p;
  }
  // A size that fits an int32 (matrix dimensions, heads, counts), at least lo.
  int64_t size(size_t i, const char* name, int64_t lo) const { return integer(i, name, lo, INT32_MAX); }
  float f32num(size_t i, const char* name) const { return static_cast<float>(num(i, name)); }
};

}  // namespace
