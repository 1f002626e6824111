/**
 * The kernel interface. Every numeric primitive the model needs, forward and backward, as a
 * short list of coarse kernels over flat typed arrays (row-major, contiguous, zero-copy).
 *
 * Shape legend (used in every comment of the project):
 *   B batch, T sequence length, D hidden size, V vocab, H query heads, KVH key/value heads,
 *   HD head dim, R rows, C columns, N rows of a flattened token batch, I MLP intermediate size,
 *   K (top-k) count, S segments.
 *
 * Rules every implementation follows:
 * - Kernels never allocate their outputs: the caller passes every output buffer.
 * - Unless a kernel says "accumulates", outputs are overwritten entirely.
 * - Outputs never alias inputs unless the kernel says "may alias".
 * - `ref` accepts Float32Array or Float64Array for float buffers (Float64 is how the conformance
 *   suite gets its float64 reference); `native` requires Float32Array and throws DtypeError
 *   otherwise. Index buffers are always Int32Array.
 * - Sizes are validated by the wrappers in tensor/, not necessarily by kernels; a kernel may
 *   assume the contract holds (the native binding still checks buffer lengths, to never write
 *   out of bounds).
 */
import type { StorageDtype } from './bf16.js';

export type FloatArray = Float32Array | Float64Array;

/**
 * A K/V pool's storage: float32, or bf16 bit patterns in a Uint16Array (see bf16.ts; rounded to
 * nearest-even when written, widened to float32 when read). Both pools of a call share one.
 */
export type KvArray = Float32Array | Uint16Array;

export type BackendName = 'ref' | 'native';
export type GemmProvider = 'openblas' | 'builtin' | 'typescript';

export interface BackendInfo {
  backend: BackendName;
  /** Which GEMM runs: OpenBLAS's cblas_sgemm, the addon's built-in blocked kernel, or plain TS. */
  gemmProvider: GemmProvider;
  /** GEMM providers this backend can switch between. */
  gemmProviders: readonly GemmProvider[];
  /** Threads the backend uses for its parallel loops (1 for ref). */
  threads: number;
  /**
   * Instruction-set variant of the kernels in use (native: 'generic', 'avx2', 'avx512',
   * 'avx512bf16', chosen at load as the widest the CPU runs, or by MOR_SIMD / setSimd); 'none' for ref.
   */
  simd: string;
  /** Variants this CPU can run, narrowest first (native only). */
  simdAvailable?: readonly string[];
  /** The CPU's model name (native only; 'unknown' when the CPU does not say). */
  cpu?: string;
}

/**
 * C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b], for b in 0..batch-1.
 *   op(A) is (m, k): A is stored (m, k), or (k, m) when transA.
 *   op(B) is (k, n): B is stored (k, n), or (n, k) when transB.
 *   C is (m, n).
 * Batch strides are in elements; a stride of 0 broadcasts that operand over the batch.
 * Defaults: batch 1, strideA = m·k, strideB = k·n, strideC = m·n. Each buffer holds at least
 * stride·(batch−1) + its matrix size elements.
 * When beta is 0, C is not read (NaN in C does not propagate).
 */
export interface GemmArgs {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  alpha: number;
  beta: number;
  batch?: number;
  strideA?: number;
  strideB?: number;
  strideC?: number;
}

/**
 * Which keys each query of an attention call may see.
 *
 * Rows are tokens: q is (Nq, H, HD), k and v are (Nk, KVH, HD). The rows are grouped into S
 * segments (one per sequence, usually). `segments` holds 4 ints per segment:
 *   [qStart, qLen, kStart, kLen]
 * Query row i of segment s (qStart ≤ i < qStart+qLen) sees key row j of the same segment
 * (kStart ≤ j < kStart+kLen) iff kPos[j] ≤ qPos[i]. That one rule gives the three modes MoR needs:
 *
 *   causal over a sequence      q,k rows are the T tokens, pos = 0..T-1, kStart = qStart
 *   causal over a subset        q,k rows are the k_r selected tokens of a sequence, in original
 *                               order, pos = their original positions
 *   separate key/value set      q rows are new tokens (decoding, or deeper recursions under KV
 *                               sharing), k rows a cache with its own positions
 *
 *   segment s:      kStart                      kStart+kLen
 *                     |-- key rows, kPos sorted ---|
 *   query i sees ->   [ kPos ≤ qPos[i] ][  hidden  ]
 *
 * Contract: within a segment kPos is non-decreasing (so each query sees a prefix of the keys).
 * Query ranges of different segments are disjoint, and so are key ranges.
 * Query head h reads key/value head floor(h / (H / KVH)) (grouped-query attention).
 * A query that sees no key gets output 0 and lse -Infinity.
 */
export interface AttentionLayout {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Logit scale, normally 1/sqrt(HD). */
  scale: number;
  /** (S·4) [qStart, qLen, kStart, kLen] per segment. */
  segments: Int32Array;
  /** (Nq) position of each query row. */
  qPos: Int32Array;
  /** (Nk) position of each key row. */
  kPos: Int32Array;
}

/**
 * A constant weight W (n, k) repacked once into the layout a backend's gemmPacked reads (the
 * inference path: weights that do not change between calls). Opaque to callers; `backend` names
 * the backend that packed it, and only that backend accepts it.
 */
export type PackedWeight = PackedWeightF32 | PackedWeightBf16;
interface PackedWeightOf<D extends StorageDtype, A> {
  readonly backend: BackendName;
  /** Rows of W (output features) and columns (input features). */
  readonly n: number;
  readonly k: number;
  /** The storage of W's values: 'bf16' holds each rounded to nearest-even (bf16.ts). */
  readonly dtype: D;
  readonly data: A;
}
export type PackedWeightF32 = PackedWeightOf<'f32', Float32Array>;
export type PackedWeightBf16 = PackedWeightOf<'bf16', Uint16Array>;

/** The weights of one decoder layer as decodeLayer reads them. */
export interface PackedLayer {
  /** (D) RMSNorm scales before attention and before the MLP. */
  readonly inputNorm: Float32Array;
  readonly postNorm: Float32Array;
  /** (H·HD + 2·KVH·HD, D): Wq, Wk, Wv stacked by rows, packed. */
  readonly qkv: PackedWeight;
  /** (D, H·HD) */
  readonly o: PackedWeight;
  /** (2I, D): Wgate, Wup stacked by rows, packed. */
  readonly gateUp: PackedWeight;
  /** (D, I) */
  readonly down: PackedWeight;
}

/** The non-weight inputs of a decodeLayer call. */
export interface DecodeLayerArgs {
  eps: number;
  ropeTheta: number;
  /** Heads, pool and streams; attention.qPos holds the rows' positions (also RoPE's). */
  attention: PagedAttentionLayout;
  /** (N) pool slot that receives each row's rotated k and its v before attention; −1: none. */
  kvSlots: Int32Array;
}

/** Shapes and block tables of an attentionPaged call (see Backend.attentionPaged). */
export interface PagedAttentionLayout {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  scale: number;
  /** Token slots per block. */
  blockSize: number;
  /** (Nq) position of each query row. */
  qPos: Int32Array;
  /** (numSlots) position stored in each pool slot. */
  posPool: Int32Array;
  /** (Nq·2) [offset into blockTables, number of slots] per query row. */
  streams: Int32Array;
  /** Block ids of all streams, concatenated. */
  blockTables: Int32Array;
}

export interface AdamWArgs {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay coefficient (0 for parameters that take none, e.g. norms). */
  weightDecay: number;
  /** 1-based step count, for bias correction. */
  step: number;
}

/** Pointwise functions with a derivative, for `unary` / `unaryBackward`. */
export type UnaryOp = 'sigmoid' | 'tanh' | 'silu' | 'gelu';

export interface Backend {
  readonly name: BackendName;
  info(): BackendInfo;
  /** Switch GEMM provider; must be one of info().gemmProviders, else ArgumentError. */
  setGemmProvider(provider: GemmProvider): void;
  /** Threads for the backend's parallel loops (and BLAS); ref accepts only 1. n ≥ 1. */
  setNumThreads(n: number): void;
  /**
   * Switch the kernels' instruction-set variant (native only): one of info().simdAvailable.
   * ArgumentError for an unknown name, BackendUnavailableError for one this CPU cannot run.
   */
  setSimd?(name: string): void;

  // ---- linear algebra -------------------------------------------------------------------------

  /** See GemmArgs. a, b, c sized for the batch and strides given. */
  gemm(args: GemmArgs, a: FloatArray, b: FloatArray, c: FloatArray): void;

  /**
   * Repack a constant weight w (n, k), row-major, for gemmPacked. w is copied, not kept. dtype
   * (default 'f32'): 'bf16' stores each value rounded to nearest-even bf16 (half the bytes).
   */
  packWeight(w: Float32Array, n: number, k: number, dtype?: StorageDtype): PackedWeight;

  /**
   * c (m, n) = a (m, k) · Wᵀ, or c += a · Wᵀ when accumulate; W packed by this backend's
   * packWeight (ArgumentError otherwise). The same product as gemm with transB, faster for
   * the few-row calls of decoding because W's layout is done once. A bf16 W is the product with
   * W's bf16 values, widened to float32: products and sums in float32. c must not overlap a (a
   * single row is read in place while c is written).
   */
  gemmPacked(m: number, a: Float32Array, w: PackedWeight, c: Float32Array, accumulate: boolean): void;

  /**
   * One pre-norm Llama decoder layer over N token rows of decoding, fused (MOR_SPEC §7 step
   * functions). The same arithmetic as nn/decoderLayer with paged attention:
   *   x = rmsnorm(h)·inputNorm;  q, k, v = x·Wqᵀ, x·Wkᵀ, x·Wvᵀ;  q, k = rope(q), rope(k) at qPos
   *   k, v of row i → kPool, vPool at kvSlots[i] (skipped when −1)
   *   out = h + attentionPaged(q)·Woᵀ;  x = rmsnorm(out)·postNorm
   *   out = out + (silu(x·Wgateᵀ) ⊙ x·Wupᵀ)·Wdownᵀ
   *   h (N, D), out (N, D), kPool/vPool (numSlots, KVH·HD). Weights packed by this backend,
   *   all four in one dtype; a bf16 pool (Uint16Array) stores k, v rounded to bf16 (KvArray).
   */
  decodeLayer(args: DecodeLayerArgs, h: Float32Array, w: PackedLayer, kPool: KvArray, vPool: KvArray, out: Float32Array): void;

  // ---- attention ------------------------------------------------------------------------------

  /**
   * Fused softmax attention forward (see AttentionLayout).
   *   q (Nq, H, HD), k (Nk, KVH, HD), v (Nk, KVH, HD) → out (Nq, H, HD), lse (Nq, H)
   * lse[i,h] = logsumexp over the visible keys of scale · q_i·k_j, saved for the backward.
   * Rows outside every segment get out 0 and lse -Infinity.
   */
  attentionForward(
    layout: AttentionLayout,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
  ): void;

  /**
   * Attention backward. Inputs as in the forward plus its out, lse and the gradient dOut
   * (Nq, H, HD). Writes dQ (Nq, H, HD), dK (Nk, KVH, HD), dV (Nk, KVH, HD); rows outside every
   * segment get 0.
   */
  attentionBackward(
    layout: AttentionLayout,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
    dOut: FloatArray,
    dQ: FloatArray,
    dK: FloatArray,
    dV: FloatArray,
  ): void;

  // ---- attention over a paged KV cache (inference; no backward) ------------------------------

  /**
   * Attention of query rows against keys/values stored in a paged pool (decoding).
   *
   * The pool holds fixed-size blocks of `blockSize` token slots; slot s lives at row s of
   * kPool/vPool and has position posPool[s]. Each query row i reads one "stream" of slots:
   *
   *   streams[2i] = offset into blockTables,  streams[2i+1] = number of slots n_i
   *   slot j (0 ≤ j < n_i) of the stream = blockTables[offset + ⌊j / blockSize⌋]·blockSize + j mod blockSize
   *
   *   pool:   block 0        block 1        block 2  ...      (blockSize slots each)
   *   stream: [b2 ......][b0 ....]  ← blockTables[offset..], filled in order, the last block partly
   *
   * Query i sees slot j iff posPool[slot] ≤ qPos[i] (stream slots are in position order).
   * Query head h reads key/value head floor(h / (H / KVH)).
   *   q (Nq, H, HD), qPos (Nq), kPool, vPool (numSlots, KVH, HD), posPool (numSlots) → out (Nq, H, HD)
   * A query that sees no slot gets 0. kPool and vPool may be bf16 (Uint16Array, see KvArray):
   * read widened to float32; scores, softmax and sums stay float32 (float64 in ref).
   */
  attentionPaged(
    layout: PagedAttentionLayout,
    q: FloatArray,
    kPool: FloatArray | Uint16Array,
    vPool: FloatArray | Uint16Array,
    out: FloatArray,
  ): void;

  // ---- layers ---------------------------------------------------------------------------------

  /**
   * Rotary position embedding, rotate-half convention, at explicit positions.
   *   x (N, nHeads, HD), pos (N) → out (N, nHeads, HD); out may alias x.
   * For i < HD/2, with f_i = theta^(-2i/HD) and a = pos·f_i:
   *   out[i]      = x[i]·cos a − x[i+HD/2]·sin a
   *   out[i+HD/2] = x[i+HD/2]·cos a + x[i]·sin a
   * `inverse` rotates by −a, which is the backward (the rotation is orthogonal).
   */
  rope(
    x: FloatArray,
    pos: Int32Array,
    nHeads: number,
    headDim: number,
    theta: number,
    inverse: boolean,
    out: FloatArray,
  ): void;

  /**
   * RMSNorm: x (N, D), w (D) → out (N, D) = x · rstd · w, rstd (N) = 1/sqrt(mean(x²) + eps).
   */
  rmsnormForward(x: FloatArray, w: FloatArray, eps: number, out: FloatArray, rstd: FloatArray): void;

  /** RMSNorm backward: x (N, D), w (D), rstd (N), dOut (N, D) → dX (N, D), dW (D). */
  rmsnormBackward(
    x: FloatArray,
    w: FloatArray,
    rstd: FloatArray,
    dOut: FloatArray,
    dX: FloatArray,
    dW: FloatArray,
  ): void;

  /** SwiGLU: gate (N, I), up (N, I) → out (N, I) = silu(gate) · up. */
  swigluForward(gate: FloatArray, up: FloatArray, out: FloatArray): void;

  /** SwiGLU backward: gate, up, dOut (N, I) → dGate (N, I), dUp (N, I). */
  swigluBackward(gate: FloatArray, up: FloatArray, dOut: FloatArray, dGate: FloatArray, dUp: FloatArray): void;

  // ---- routing and embedding: rows by index ---------------------------------------------------

  /**
   * out[i, :] = src[idx[i], :].   src (R, C), idx (N) with 0 ≤ idx < R → out (N, C).
   * Embedding lookup is gatherRows(E, tokenIds).
   */
  gatherRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void;

  /**
   * out[idx[i], :] += src[i, :]; accumulates. src (N, C), idx (N) → out (R, C).
   * Repeated indices add up. Backward of gatherRows and of the embedding.
   */
  scatterAddRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void;

  // ---- losses -----------------------------------------------------------------------------------

  /**
   * Softmax cross-entropy from logits, per row.
   *   logits (N, V), targets (N) → losses (N), lse (N)
   * losses[i] = lse[i] − logits[i, targets[i]]; rows whose target equals ignoreIndex get loss 0
   * (lse is still written). Returns the number of rows not ignored.
   * A target outside [0, V) that is not ignoreIndex is an ArgumentError.
   */
  crossEntropyForward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    losses: FloatArray,
    lse: FloatArray,
  ): number;

  /**
   * dLogits[i, :] = dLoss[i] · (softmax(logits[i]) − onehot(targets[i])); 0 for ignored rows.
   *   logits (N, V), targets (N), lse (N), dLoss (N) → dLogits (N, V)
   */
  crossEntropyBackward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    lse: FloatArray,
    dLoss: FloatArray,
    dLogits: FloatArray,
  ): void;

  /**
   * Binary cross-entropy with logits, elementwise and numerically stable:
   *   out = max(z, 0) − z·t + log(1 + exp(−|z|)).   z, t, out (N)
   */
  bceWithLogitsForward(z: FloatArray, t: FloatArray, out: FloatArray): void;

  /** dZ = (sigmoid(z) − t) · dOut; dT = −z · dOut.  All (N). */
  bceWithLogitsBackward(z: FloatArray, t: FloatArray, dOut: FloatArray, dZ: FloatArray, dT: FloatArray): void;

  // ---- pointwise and row-wise -------------------------------------------------------------------

  /**
   * out = f(x) elementwise; out may alias x.
   *   sigmoid 1/(1+e^-x); tanh; silu x·sigmoid(x); gelu x·Φ(x) (exact, erf form).
   */
  unary(op: UnaryOp, x: FloatArray, out: FloatArray): void;

  /** dX = f'(x) · dOut, given x and y = f(x). All the same length. dX may alias dOut. */
  unaryBackward(op: UnaryOp, x: FloatArray, y: FloatArray, dOut: FloatArray, dX: FloatArray): void;

  /** Row softmax: x (R, C) → out (R, C); out may alias x. */
  softmaxRows(x: FloatArray, cols: number, out: FloatArray): void;

  /** dX[r] = y[r] ⊙ (dOut[r] − ⟨dOut[r], y[r]⟩).  y, dOut, dX (R, C); dX may alias dOut. */
  softmaxRowsBackward(y: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void;

  /** Row logsumexp: x (R, C) → out (R). Backward is softmax(x) · dOut, see logsumexpRowsBackward. */
  logsumexpRows(x: FloatArray, cols: number, out: FloatArray): void;

  /** dX[r, c] = exp(x[r, c] − lse[r]) · dOut[r].  x (R, C), lse (R), dOut (R) → dX (R, C). */
  logsumexpRowsBackward(x: FloatArray, lse: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void;

  /**
   * Per-row top-k (no gradient): x (R, C), 1 ≤ k ≤ C → indices (R, k), values (R, k).
   * order 'value': largest first, ties to the lower column index.
   * order 'index': the same set of columns, listed in increasing column order (routing keeps
   * the selected tokens in their original order).
   */
  topkRows(
    x: FloatArray,
    cols: number,
    k: number,
    order: 'value' | 'index',
    indices: Int32Array,
    values: FloatArray,
  ): void;

  /** Σ x, accumulated in float64. */
  sum(x: FloatArray): number;

  /** Σ x², accumulated in float64 (global gradient norm = sqrt of the sum over tensors). */
  sumSquares(x: FloatArray): number;

  /** out[c] = Σ_r x[r, c].  x (R, C) → out (C). */
  sumRows(x: FloatArray, cols: number, out: FloatArray): void;

  /** out[r] = Σ_c x[r, c].  x (R, C) → out (R). */
  sumCols(x: FloatArray, cols: number, out: FloatArray): void;

  /**
   * out[r, :] = s[r] · x[r, :].  x (R, C), s (R) → out (R, C); out may alias x.
   * Routing gates: each selected token's block output is scaled by its own gate value.
   */
  scaleRows(x: FloatArray, s: FloatArray, cols: number, out: FloatArray): void;

  /** out[r] = ⟨a[r, :], b[r, :]⟩.  a, b (R, C) → out (R). The gate's gradient (backward of scaleRows). */
  rowDot(a: FloatArray, b: FloatArray, cols: number, out: FloatArray): void;

  /** out = a + b elementwise; same length; out may alias a or b. */
  add(a: FloatArray, b: FloatArray, out: FloatArray): void;

  /** out = a ⊙ b elementwise; out may alias a or b. */
  mul(a: FloatArray, b: FloatArray, out: FloatArray): void;

  /** out = s · a; out may alias a. */
  scale(a: FloatArray, s: number, out: FloatArray): void;

  /** y += alpha · x; accumulates into y. */
  axpy(alpha: number, x: FloatArray, y: FloatArray): void;

  /** x[:] = value. */
  fill(x: FloatArray, value: number): void;

  // ---- optimiser --------------------------------------------------------------------------------

  /**
   * One AdamW step, in place on param, m, v (all the same length as grad):
   *   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
   *   param −= lr · weightDecay · param                       (decoupled, before the update)
   *   param −= lr · (m / (1−β1^step)) / (sqrt(v / (1−β2^step)) + eps)
   * This is the order and form of torch.optim.AdamW.
   */
  adamwStep(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray, args: AdamWArgs): void;
}
