// Kernel entry points (plain C++, no Node-API), one implementation per instruction-set variant:
// the declarations here (namespace mor::sig, out of reach of argument-dependent lookup from the
// variants' own namespaces) give the signatures; call them through isa() (isa.h), e.g.
// isa().rope(...). Shapes follow the legend in src/backend/backend.ts.
// Sizes are validated by the binding (addon.cc) before these run, except where a kernel needs to
// inspect data (indices, targets, attention segments); those throw KernelError.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace mor {

enum class ErrKind { Shape, Dtype, Argument };

struct KernelError : std::runtime_error {
  ErrKind kind;
  KernelError(ErrKind k, const std::string& msg) : std::runtime_error(msg), kind(k) {}
};

// ---- attention ---------------------------------------------------------------------------------
struct AttnShape {
  int64_t numHeads, numKvHeads, headDim;
  float scale;
  const int32_t* segments;  // (S·4)
  int64_t numSegments;
  const int32_t* qPos;  // (Nq)
  int64_t nq;
  const int32_t* kPos;  // (Nk)
  int64_t nk;
};
namespace sig {
/** Validates segments (ranges, disjointness, kPos sorted within each); throws KernelError. */
void attentionValidate(const AttnShape& s);
void attentionForward(const AttnShape& s, const float* q, const float* k, const float* v, float* out, float* lse);
void attentionBackward(const AttnShape& s, const float* q, const float* k, const float* v, const float* out,
                       const float* lse, const float* dOut, float* dQ, float* dK, float* dV);
}  // namespace sig

// ---- attention over a paged KV pool (decoding) --------------------------------------------------
struct PagedShape {
  int64_t numHeads, numKvHeads, headDim, blockSize;
  float scale;
  const int32_t* qPos;  // (Nq)
  int64_t nq;
  const int32_t* posPool;  // (numSlots)
  int64_t numSlots;
  const int32_t* streams;  // (Nq·2) [offset into blockTables, slot count]
  const int32_t* blockTables;
  int64_t tableLen;
};
namespace sig {
/** Validates heads and every stream's range and block ids against the pool; throws KernelError. */
void attentionPagedValidate(const PagedShape& s);
void attentionPaged(const PagedShape& s, const float* q, const float* kPool, const float* vPool, float* out);
/** attentionPaged over a bf16 pool (bf16.h): K/V widened to f32 as read; scores, softmax, sums in f32. */
void attentionPagedBf16(const PagedShape& s, const float* q, const uint16_t* kPool, const uint16_t* vPool, float* out);
}  // namespace sig

// ---- one decoder layer for decoding (decode.cc) ---------------------------------------------------
struct DecodeLayerShape {
  int64_t n, d, inter;  // rows N, hidden D, MLP width I
  float eps;
  double ropeTheta;
  PagedShape attn;         // heads, pool and streams; attn.qPos holds the rows' positions (nq = n)
  const int32_t* kvSlots;  // (N) pool slot for each row's k, v, or −1: the row stores none
};
/** Packed weights and norm scales of one layer: all four f32 (packWeight) or all bf16 (packWeightBf16). */
struct DecodeLayerWeights {
  const float* inputNorm;  // (D)
  const float* postNorm;   // (D)
  const void* qkv;         // packed (H·HD + 2·KVH·HD, D)
  const void* o;           // packed (D, H·HD)
  const void* gateUp;      // packed (2I, D)
  const void* down;        // packed (D, I)
  bool bf16;               // the packed weights are uint16_t bf16 panels, else float
};
/** The K/V pools (numSlots, KVH·HD): float, or uint16_t bf16 (rows rounded to nearest-even when written). */
struct DecodeLayerPool {
  void* k;
  void* v;
  bool bf16;
};
namespace sig {
/** out (N, D) = the layer applied to h (N, D); writes k, v rows into the pools. Throws KernelError. */
void decodeLayer(const DecodeLayerShape& s, const float* h, const DecodeLayerWeights& w, const DecodeLayerPool& pool,
                 float* out);

// ---- layers ------------------------------------------------------------------------------------
void rope(const float* x, const int32_t* pos, int64_t n, int64_t nHeads, int64_t headDim, double theta, bool inverse,
          float* out);
void rmsnormForward(const float* x, const float* w, int64_t n, int64_t d, float eps, float* out, float* rstd);
void rmsnormBackward(const float* x, const float* w, const float* rstd, const float* dOut, int64_t n, int64_t d,
                     float* dX, float* dW);
void swigluForward(const float* gate, const float* up, int64_t n, float* out);
void swigluBackward(const float* gate, const float* up, const float* dOut, int64_t n, float* dGate, float* dUp);

void gatherRows(const float* src, int64_t rows, const int32_t* idx, int64_t n, int64_t cols, float* out);
void scatterAddRows(const float* src, const int32_t* idx, int64_t n, int64_t cols, float* out, int64_t rows);

// ---- losses ------------------------------------------------------------------------------------
/** Returns the number of rows not ignored; throws KernelError(Argument) for a bad target. */
int64_t crossEntropyForward(const float* logits, const int32_t* targets, int64_t n, int64_t vocab,
                            int64_t ignoreIndex, float* losses, float* lse);
void crossEntropyBackward(const float* logits, const int32_t* targets, int64_t n, int64_t vocab,
                          int64_t ignoreIndex, const float* lse, const float* dLoss, float* dLogits);
void bceWithLogitsForward(const float* z, const float* t, int64_t n, float* out);
void bceWithLogitsBackward(const float* z, const float* t, const float* dOut, int64_t n, float* dZ, float* dT);
}  // namespace sig

// ---- pointwise and row-wise ----------------------------------------------------------------------
enum UnaryOp : int { kSigmoid = 0, kTanh = 1, kSilu = 2, kGelu = 3 };
namespace sig {
void unary(int op, const float* x, int64_t n, float* out);
void unaryBackward(int op, const float* x, const float* y, const float* dOut, int64_t n, float* dX);
void softmaxRows(const float* x, int64_t rows, int64_t cols, float* out);
void softmaxRowsBackward(const float* y, const float* dOut, int64_t rows, int64_t cols, float* dX);
void logsumexpRows(const float* x, int64_t rows, int64_t cols, float* out);
void logsumexpRowsBackward(const float* x, const float* lse, const float* dOut, int64_t rows, int64_t cols,
                           float* dX);
void topkRows(const float* x, int64_t rows, int64_t cols, int64_t k, bool byIndex, int32_t* indices,
              float* values);
double sum(const float* x, int64_t n);
double sumSquares(const float* x, int64_t n);
void sumRows(const float* x, int64_t rows, int64_t cols, float* out);
void sumCols(const float* x, int64_t rows, int64_t cols, float* out);
void scaleRows(const float* x, const float* s, int64_t rows, int64_t cols, float* out);
void rowDot(const float* a, const float* b, int64_t rows, int64_t cols, float* out);
void add(const float* a, const float* b, int64_t n, float* out);
void mul(const float* a, const float* b, int64_t n, float* out);
void scale(const float* a, float s, int64_t n, float* out);
void axpy(float alpha, const float* x, int64_t n, float* y);
void fill(float* x, int64_t n, float value);

// ---- optimiser -----------------------------------------------------------------------------------
void adamwStep(float* param, const float* grad, float* m, float* v, int64_t n, double lr, double beta1,
               double beta2, double eps, double weightDecay, double step);

// ---- machine ceilings (bench) ---------------------------------------------------------------------
/** GFLOP/s of independent FMA chains on `threads` threads for about `seconds`, this variant's vectors. */
double probeFmaGflops(int threads, double seconds);
/** GB/s of a streaming read of `bytes` (allocated here) on `threads` threads, best of `repeats` passes. */
double probeStreamReadGbps(int64_t bytes, int threads, int repeats);
}  // namespace sig

}  // namespace mor
