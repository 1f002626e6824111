/**
 * Shape-checked differentiable ops over Tensors. Each op validates its inputs (ShapeError /
 * DtypeError naming what was expected and what came), runs the forward kernel of the current
 * backend and, when the tape is on, records a backward closure that calls the paired backward
 * kernel. Ops never mutate their inputs.
 */
import { ArgumentError, ShapeError } from '../errors.js';
import { getBackend } from '../backend/index.js';
import type { AttentionLayout, PackedWeight, UnaryOp } from '../backend/backend.js';
import { Tensor, accumulateGrad, needsGrad, record } from './tensor.js';

const fmt = (s: readonly number[]): string => `[${s.join(', ')}]`;

function expectRank(t: Tensor, rank: number, op: string, what: string, legend: string): void {
  if (t.rank !== rank) {
    throw new ShapeError(`${op}: ${what} must be ${legend} (rank ${rank}), got shape ${fmt(t.shape)}`);
  }
}

function expectSameShape(a: Tensor, b: Tensor, op: string): void {
  if (a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new ShapeError(`${op}: shapes must match, got ${fmt(a.shape)} and ${fmt(b.shape)}`);
  }
}

function newLike(t: Tensor): Tensor {
  return new Tensor(new Float32Array(t.size), t.shape);
}

// ---- views -----------------------------------------------------------------------------------

/** Same storage, new shape (sizes must agree). One dim may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  let known = 1;
  let infer = -1;
  shape.forEach((d, i) => {
    if (d === -1) {
      if (infer >= 0) throw new ShapeError(`reshape: at most one -1 in ${fmt(shape)}`);
      infer = i;
    } else known *= d;
  });
  const resolved = [...shape];
  if (infer >= 0) {
    if (known === 0 || x.size % known !== 0) throw new ShapeError(`reshape: cannot reshape ${fmt(x.shape)} to ${fmt(shape)}`);
    resolved[infer] = x.size / known;
  }
  const size = resolved.reduce((a, b) => a * b, 1);
  if (size !== x.size) throw new ShapeError(`reshape: ${fmt(x.shape)} has ${x.size} elements, ${fmt(shape)} needs ${size}`);
  const out = new Tensor(x.data, resolved);
  if (needsGrad(x)) record(out, 'reshape', [x], (dOut) => accumulateGrad(x, dOut, false));
  return out;
}

// ---- linear algebra --------------------------------------------------------------------------

/**
 * Matrix product of 2-D tensors with optional transposes:
 *   op(a) (M, K) · op(b) (K, N) → (M, N)
 */
export function matmul(a: Tensor, b: Tensor, transA = false, transB = false): Tensor {
  expectRank(a, 2, 'matmul', 'a', '(M, K)');
  expectRank(b, 2, 'matmul', 'b', '(K, N)');
  const m = transA ? a.dim(1) : a.dim(0);
  const ka = transA ? a.dim(0) : a.dim(1);
  const kb = transB ? b.dim(1) : b.dim(0);
  const n = transB ? b.dim(0) : b.dim(1);
  if (ka !== kb) {
    throw new ShapeError(`matmul: inner dims differ: op(a) is (${m}, ${ka}), op(b) is (${kb}, ${n})`);
  }
  const k = ka;
  const be = getBackend();
  const A = a.f32('matmul a');
  const B = b.f32('matmul b');
  const out = new Tensor(new Float32Array(m * n), [m, n]);
  be.gemm({ transA, transB, m, n, k, alpha: 1, beta: 0 }, A, B, out.f32());
  if (needsGrad(a, b)) {
    record(out, 'matmul', [a, b], (dC) => {
      // C = op(A)·op(B).  dop(A) = dC·op(B)ᵀ,  dop(B) = op(A)ᵀ·dC, then undo the transposes.
      if (a.requiresGrad) {
        const dA = new Float32Array(a.size);
        if (!transA) be.gemm({ transA: false, transB: !transB, m, n: k, k: n, alpha: 1, beta: 0 }, dC, B, dA);
        else be.gemm({ transA: transB, transB: true, m: k, n: m, k: n, alpha: 1, beta: 0 }, B, dC, dA);
        accumulateGrad(a, dA);
      }
      if (b.requiresGrad) {
        const dB = new Float32Array(b.size);
        if (!transB) be.gemm({ transA: !transA, transB: false, m: k, n, k: m, alpha: 1, beta: 0 }, A, dC, dB);
        else be.gemm({ transA: true, transB: transA, m: n, n: k, k: m, alpha: 1, beta: 0 }, dC, A, dB);
        accumulateGrad(b, dB);
      }
    });
  }
  return out;
}

/** A linear layer without bias: x (N, in) · wᵀ, w (out, in) → (N, out). */
export function linear(x: Tensor, w: Tensor): Tensor {
  expectRank(x, 2, 'linear', 'x', '(N, in)');
  expectRank(w, 2, 'linear', 'w', '(out, in)');
  if (x.dim(1) !== w.dim(1)) {
    throw new ShapeError(`linear: x is (N, in) = ${fmt(x.shape)} but w is (out, in) = ${fmt(w.shape)}; in must match`);
  }
  return matmul(x, w, false, true);
}

/**
 * linear with a constant weight packed by the backend (Backend.packWeight): the inference path.
 * Records no gradient, so x must not need one.  x (N, in), w packed from (out, in) → (N, out).
 */
export function linearPacked(x: Tensor, w: PackedWeight): Tensor {
  expectRank(x, 2, 'linearPacked', 'x', '(N, in)');
  if (x.dim(1) !== w.k) throw new ShapeError(`linearPacked: x is (N, in) = ${fmt(x.shape)} but the weight is (out, in) = (${w.n}, ${w.k}); in must match`);
  if (needsGrad(x)) throw new ArgumentError('linearPacked: packed weights are for inference; x needs a gradient here (use linear, or run under noGrad)');
  const out = new Tensor(new Float32Array(x.dim(0) * w.n), [x.dim(0), w.n]);
  getBackend().gemmPacked(x.dim(0), x.f32('linearPacked x'), w, out.f32(), false);
  return out;
}

// ---- elementwise -----------------------------------------------------------------------------

export function add(a: Tensor, b: Tensor): Tensor {
  expectSameShape(a, b, 'add');
  const out = newLike(a);
  getBackend().add(a.f32('add a'), b.f32('add b'), out.f32());
  if (needsGrad(a, b)) {
    record(out, 'add', [a, b], (dOut) => {
      accumulateGrad(a, dOut, false);
      accumulateGrad(b, dOut, false);
    });
  }
  return out;
}

export function mul(a: Tensor, b: Tensor): Tensor {
  expectSameShape(a, b, 'mul');
  const be = getBackend();
  const A = a.f32('mul a');
  const B = b.f32('mul b');
  const out = newLike(a);
  be.mul(A, B, out.f32());
  if (needsGrad(a, b)) {
    record(out, 'mul', [a, b], (dOut) => {
      if (a.requiresGrad) {
        const dA = new Float32Array(a.size);
        be.mul(dOut, B, dA);
        accumulateGrad(a, dA);
      }
      if (b.requiresGrad) {
        const dB = new Float32Array(b.size);
        be.mul(dOut, A, dB);
        accumulateGrad(b, dB);
      }
    });
  }
  return out;
}

export function scale(a: Tensor, s: number): Tensor {
  const be = getBackend();
  const out = newLike(a);
  be.scale(a.f32('scale a'), s, out.f32());
  if (needsGrad(a)) {
    record(out, 'scale', [a], (dOut) => {
      const dA = new Float32Array(a.size);
      be.scale(dOut, s, dA);
      accumulateGrad(a, dA);
    });
  }
  return out;
}

/**
 * Scale each row by its own factor: x (N, C), s (N) or (N, 1) → (N, C). Routing gates.
 *   dX = s ⊙ dOut (row-wise),  dS[r] = ⟨dOut[r], x[r]⟩
 */
export function scaleRows(x: Tensor, s: Tensor): Tensor {
  expectRank(x, 2, 'scaleRows', 'x', '(N, C)');
  const [n, cols] = x.shape as [number, number];
  if (s.size !== n || s.rank > 2 || (s.rank === 2 && s.dim(1) !== 1)) {
    throw new ShapeError(`scaleRows: s must be (N) or (N, 1) with N = ${n}, got ${fmt(s.shape)}`);
  }
  const be = getBackend();
  const X = x.f32('scaleRows x');
  const S = s.f32('scaleRows s');
  const out = newLike(x);
  be.scaleRows(X, S, cols, out.f32());
  if (needsGrad(x, s)) {
    record(out, 'scaleRows', [x, s], (dOut) => {
      if (x.requiresGrad) {
        const dX = new Float32Array(x.size);
        be.scaleRows(dOut, S, cols, dX);
        accumulateGrad(x, dX);
      }
      if (s.requiresGrad) {
        const dS = new Float32Array(n);
        be.rowDot(dOut, X, cols, dS);
        accumulateGrad(s, dS);
      }
    });
  }
  return out;
}

/** a − b elementwise (same shape). */
export function sub(a: Tensor, b: Tensor): Tensor {
  return add(a, scale(b, -1));
}

/** Pointwise sigmoid / tanh / silu / gelu(erf). */
export function unary(op: UnaryOp, x: Tensor): Tensor {
  const be = getBackend();
  const X = x.f32(op);
  const out = newLike(x);
  const Y = out.f32();
  be.unary(op, X, Y);
  if (needsGrad(x)) {
    record(out, op, [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.unaryBackward(op, X, Y, dOut, dX);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

export const sigmoid = (x: Tensor): Tensor => unary('sigmoid', x);
export const tanh = (x: Tensor): Tensor => unary('tanh', x);
export const silu = (x: Tensor): Tensor => unary('silu', x);
export const gelu = (x: Tensor): Tensor => unary('gelu', x);

// ---- reductions ------------------------------------------------------------------------------

/** Σ of all elements → shape [1]. */
export function sum(x: Tensor): Tensor {
  const be = getBackend();
  const out = new Tensor(new Float32Array([be.sum(x.f32('sum'))]), [1]);
  if (needsGrad(x)) {
    record(out, 'sum', [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.fill(dX, dOut[0] as number);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

/** Mean of all elements → shape [1]. */
export function mean(x: Tensor): Tensor {
  if (x.size === 0) throw new ShapeError('mean: tensor is empty');
  return scale(sum(x), 1 / x.size);
}

/** Row softmax over the last dim: x (R, C) (any leading dims) → same shape. */
export function softmax(x: Tensor): Tensor {
  if (x.rank < 1) throw new ShapeError('softmax: needs at least one dim');
  const cols = x.dim(-1);
  const be = getBackend();
  const out = newLike(x);
  const Y = out.f32();
  be.softmaxRows(x.f32('softmax'), cols, Y);
  if (needsGrad(x)) {
    record(out, 'softmax', [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.softmaxRowsBackward(Y, dOut, cols, dX);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

/** logsumexp over the last dim: x (..., C) → (...). */
export function logsumexp(x: Tensor): Tensor {
  if (x.rank < 1) throw new ShapeError('logsumexp: needs at least one dim');
  const cols = x.dim(-1);
  const be = getBackend();
  const X = x.f32('logsumexp');
  const outShape = x.rank === 1 ? [1] : x.shape.slice(0, -1);
  const out = new Tensor(new Float32Array(cols === 0 ? 0 : x.size / cols), outShape);
  const L = out.f32();
  be.logsumexpRows(X, cols, L);
  if (needsGrad(x)) {
    record(out, 'logsumexp', [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.logsumexpRowsBackward(X, L, dOut, cols, dX);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

// ---- transformer layers ----------------------------------------------------------------------

/** RMSNorm over the last dim: x (N, D), w (D) → (N, D). */
export function rmsnorm(x: Tensor, w: Tensor, eps: number): Tensor {
  expectRank(w, 1, 'rmsnorm', 'w', '(D)');
  const d = w.dim(0);
  if (x.rank < 1 || x.dim(-1) !== d) {
    throw new ShapeError(`rmsnorm: x's last dim must be D = ${d}, got shape ${fmt(x.shape)}`);
  }
  const be = getBackend();
  const X = x.f32('rmsnorm x');
  const W = w.f32('rmsnorm w');
  const out = newLike(x);
  const rstd = new Float32Array(x.size / d);
  be.rmsnormForward(X, W, eps, out.f32(), rstd);
  if (needsGrad(x, w)) {
    record(out, 'rmsnorm', [x, w], (dOut) => {
      const dX = new Float32Array(x.size);
      const dW = new Float32Array(d);
      be.rmsnormBackward(X, W, rstd, dOut, dX, dW);
      accumulateGrad(x, dX);
      accumulateGrad(w, dW);
    });
  }
  return out;
}

/** RoPE at explicit positions: x (N, H, HD), pos (N) int32 → (N, H, HD). */
export function rope(x: Tensor, pos: Tensor, theta: number): Tensor {
  expectRank(x, 3, 'rope', 'x', '(N, H, HD)');
  const [n, h, hd] = x.shape as [number, number, number];
  if (hd % 2 !== 0) throw new ShapeError(`rope: head dim must be even, got ${hd}`);
  const P = pos.i32('rope positions');
  if (P.length !== n) throw new ShapeError(`rope: positions must be (N) = (${n}), got shape ${fmt(pos.shape)}`);
  const be = getBackend();
  const out = newLike(x);
  be.rope(x.f32('rope x'), P, h, hd, theta, false, out.f32());
  if (needsGrad(x)) {
    record(out, 'rope', [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.rope(dOut, P, h, hd, theta, true, dX);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

/** silu(gate) · up: gate, up (N, I) → (N, I). */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  expectSameShape(gate, up, 'swiglu');
  const be = getBackend();
  const G = gate.f32('swiglu gate');
  const U = up.f32('swiglu up');
  const out = newLike(gate);
  be.swigluForward(G, U, out.f32());
  if (needsGrad(gate, up)) {
    record(out, 'swiglu', [gate, up], (dOut) => {
      const dG = new Float32Array(gate.size);
      const dU = new Float32Array(up.size);
      be.swigluBackward(G, U, dOut, dG, dU);
      accumulateGrad(gate, dG);
      accumulateGrad(up, dU);
    });
  }
  return out;
}

function checkLayout(layout: AttentionLayout, nq: number, nk: number, op: string): void {
  const { segments, qPos, kPos } = layout;
  if (segments.length % 4 !== 0) throw new ShapeError(`${op}: segments must hold 4 ints per segment, got ${segments.length}`);
  if (qPos.length !== nq) throw new ShapeError(`${op}: qPos must be (Nq) = (${nq}), got (${qPos.length})`);
  if (kPos.length !== nk) throw new ShapeError(`${op}: kPos must be (Nk) = (${nk}), got (${kPos.length})`);
  for (let s = 0; s < segments.length; s += 4) {
    const qs = segments[s] as number, ql = segments[s + 1] as number;
    const ks = segments[s + 2] as number, kl = segments[s + 3] as number;
    if (qs < 0 || ql < 0 || qs + ql > nq || ks < 0 || kl < 0 || ks + kl > nk) {
      throw new ShapeError(
        `${op}: segment ${s / 4} [qStart ${qs}, qLen ${ql}, kStart ${ks}, kLen ${kl}] is outside Nq = ${nq}, Nk = ${nk}`,
      );
    }
  }
}

/**
 * Fused attention (see AttentionLayout for the visibility rule):
 *   q (Nq, H, HD), k (Nk, KVH, HD), v (Nk, KVH, HD) → (Nq, H, HD)
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout): Tensor {
  expectRank(q, 3, 'attention', 'q', '(Nq, H, HD)');
  expectRank(k, 3, 'attention', 'k', '(Nk, KVH, HD)');
  expectSameShape(k, v, 'attention (k vs v)');
  const { numHeads: h, numKvHeads: kvh, headDim: hd } = layout;
  if (q.dim(1) !== h || q.dim(2) !== hd) throw new ShapeError(`attention: q must be (Nq, ${h}, ${hd}), got ${fmt(q.shape)}`);
  if (k.dim(1) !== kvh || k.dim(2) !== hd) throw new ShapeError(`attention: k must be (Nk, ${kvh}, ${hd}), got ${fmt(k.shape)}`);
  if (kvh < 1 || h % kvh !== 0) throw new ShapeError(`attention: H = ${h} must be a multiple of KVH = ${kvh}`);
  const nq = q.dim(0);
  const nk = k.dim(0);
  checkLayout(layout, nq, nk, 'attention');
  const be = getBackend();
  const Q = q.f32('attention q');
  const K = k.f32('attention k');
  const Vv = v.f32('attention v');
  const out = newLike(q);
  const O = out.f32();
  const lse = new Float32Array(nq * h);
  be.attentionForward(layout, Q, K, Vv, O, lse);
  if (needsGrad(q, k, v)) {
    record(out, 'attention', [q, k, v], (dOut) => {
      const dQ = new Float32Array(q.size);
      const dK = new Float32Array(k.size);
      const dV = new Float32Array(v.size);
      be.attentionBackward(layout, Q, K, Vv, O, lse, dOut, dQ, dK, dV);
      accumulateGrad(q, dQ);
      accumulateGrad(k, dK);
      accumulateGrad(v, dV);
    });
  }
  return out;
}

// ---- rows by index ---------------------------------------------------------------------------

function checkIndices(idx: Int32Array, rows: number, op: string): void {
  for (let i = 0; i < idx.length; i++) {
    const r = idx[i] as number;
    if (r < 0 || r >= rows) throw new ArgumentError(`${op}: index ${r} at position ${i} is outside [0, ${rows})`);
  }
}

/** out[i] = x[idx[i]]: x (R, C), idx (N) int32 → (N, C). The embedding lookup is gatherRows(E, ids). */
export function gatherRows(x: Tensor, idx: Tensor): Tensor {
  expectRank(x, 2, 'gatherRows', 'x', '(R, C)');
  const I = idx.i32('gatherRows indices');
  const [rows, cols] = x.shape as [number, number];
  checkIndices(I, rows, 'gatherRows');
  const be = getBackend();
  const out = new Tensor(new Float32Array(I.length * cols), [I.length, cols]);
  be.gatherRows(x.f32('gatherRows x'), I, cols, out.f32());
  if (needsGrad(x)) {
    record(out, 'gatherRows', [x], (dOut) => {
      const dX = new Float32Array(x.size);
      be.scatterAddRows(dOut, I, cols, dX);
      accumulateGrad(x, dX);
    });
  }
  return out;
}

/** Token embedding: weight (V, D), ids (any shape, int32) → (N, D) with N = ids.size. */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return gatherRows(weight, ids.rank === 1 ? ids : new Tensor(ids.i32('embedding ids'), [ids.size]));
}

/**
 * out = base with src's rows added at idx: out[idx[i]] += src[i].
 *   base (R, C), idx (N) int32, src (N, C) → (R, C)
 * This is how routing writes the processed rows back into the full sequence.
 */
export function scatterAddRows(base: Tensor, idx: Tensor, src: Tensor): Tensor {
  expectRank(base, 2, 'scatterAddRows', 'base', '(R, C)');
  expectRank(src, 2, 'scatterAddRows', 'src', '(N, C)');
  const I = idx.i32('scatterAddRows indices');
  const [rows, cols] = base.shape as [number, number];
  if (src.dim(0) !== I.length || src.dim(1) !== cols) {
    throw new ShapeError(`scatterAddRows: src must be (N, C) = (${I.length}, ${cols}), got ${fmt(src.shape)}`);
  }
  checkIndices(I, rows, 'scatterAddRows');
  const be = getBackend();
  const O = base.f32('scatterAddRows base').slice();
  be.scatterAddRows(src.f32('scatterAddRows src'), I, cols, O);
  const out = new Tensor(O, base.shape);
  if (needsGrad(base, src)) {
    record(out, 'scatterAddRows', [base, src], (dOut) => {
      accumulateGrad(base, dOut, false);
      if (src.requiresGrad) {
        const dS = new Float32Array(src.size);
        be.gatherRows(dOut, I, cols, dS);
        accumulateGrad(src, dS);
      }
    });
  }
  return out;
}

// ---- losses ----------------------------------------------------------------------------------

/**
 * Mean softmax cross-entropy over the rows whose target is not ignoreIndex.
 *   logits (N, V), targets (N) int32 → [1]
 * All rows ignored gives 0 (and zero gradients), as a sum over an empty set.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex = -100): Tensor {
  expectRank(logits, 2, 'crossEntropy', 'logits', '(N, V)');
  const [n, vocab] = logits.shape as [number, number];
  const Tg = targets.i32('crossEntropy targets');
  if (Tg.length !== n) throw new ShapeError(`crossEntropy: targets must be (N) = (${n}), got ${fmt(targets.shape)}`);
  const be = getBackend();
  const L = logits.f32('crossEntropy logits');
  const losses = new Float32Array(n);
  const lse = new Float32Array(n);
  const count = be.crossEntropyForward(L, Tg, vocab, ignoreIndex, losses, lse);
  const denom = Math.max(count, 1);
  const out = new Tensor(new Float32Array([be.sum(losses) / denom]), [1]);
  if (needsGrad(logits)) {
    record(out, 'crossEntropy', [logits], (dOut) => {
      const dLoss = new Float32Array(n).fill((dOut[0] as number) / denom);
      const dL = new Float32Array(logits.size);
      be.crossEntropyBackward(L, Tg, vocab, ignoreIndex, lse, dLoss, dL);
      accumulateGrad(logits, dL);
    });
  }
  return out;
}

/** Elementwise BCE with logits (no reduction): z, t same shape → same shape. */
export function bceWithLogits(z: Tensor, t: Tensor): Tensor {
  expectSameShape(z, t, 'bceWithLogits');
  const be = getBackend();
  const Z = z.f32('bceWithLogits z');
  const Tt = t.f32('bceWithLogits target');
  const out = newLike(z);
  be.bceWithLogitsForward(Z, Tt, out.f32());
  if (needsGrad(z, t)) {
    record(out, 'bceWithLogits', [z, t], (dOut) => {
      const dZ = new Float32Array(z.size);
      const dT = new Float32Array(t.size);
      be.bceWithLogitsBackward(Z, Tt, dOut, dZ, dT);
      accumulateGrad(z, dZ);
      accumulateGrad(t, dT);
    });
  }
  return out;
}

// ---- selection (no gradient) -----------------------------------------------------------------

/**
 * Per-row top-k of x (R, C): indices (R, k) int32 and values (R, k). No gradient flows.
 * order 'index' lists each row's selected columns in increasing order (routing keeps tokens in
 * their original order).
 */
export function topk(x: Tensor, k: number, order: 'value' | 'index' = 'value'): { indices: Tensor; values: Tensor } {
  if (x.rank < 1) throw new ShapeError('topk: needs at least one dim');
  const cols = x.dim(-1);
  if (!Number.isInteger(k) || k < 1 || k > cols) throw new ArgumentError(`topk: k must be an integer in [1, ${cols}], got ${k}`);
  const rows = cols === 0 ? 0 : x.size / cols;
  const indices = new Int32Array(rows * k);
  const values = new Float32Array(rows * k);
  getBackend().topkRows(x.f32('topk'), cols, k, order, indices, values);
  const shape = [...x.shape.slice(0, -1), k];
  return { indices: new Tensor(indices, shape), values: new Tensor(values, shape) };
}
