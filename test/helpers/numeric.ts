/**
 * Float helpers for tests: dtype-generic buffer creation, and the relative error metric
 *   err(a, b) = max_i |a_i − b_i| / max(max_i |b_i|, tiny)
 * (normwise, as in ggml's test-backend-ops): b is the reference. Equal infinities compare as
 * exact; any other non-finite value, or a length mismatch, is an infinite error.
 */
import assert from 'node:assert/strict';
import type { FloatArray } from '../../src/backend/index.js';

/** A float element type a test runs a kernel in. */
export interface Dtype {
  readonly name: 'f32' | 'f64';
  /** A copy of values in this dtype. */
  from(values: ArrayLike<number>): FloatArray;
  zeros(n: number): FloatArray;
}

export const F32: Dtype = {
  name: 'f32',
  from: (values) => Float32Array.from(values),
  zeros: (n) => new Float32Array(n),
};

export const F64: Dtype = {
  name: 'f64',
  from: (values) => Float64Array.from(values),
  zeros: (n) => new Float64Array(n),
};

const TINY = 1e-30;
/**
 * An all-zero reference (e.g. dQ of a query that sees a single key: softmax over one key is
 * constant) has no scale of its own; the suite's inputs are O(1), so it is compared absolutely.
 */
const ZERO_REFERENCE_SCALE = 1;

export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const b = expected[i]!;
    if (!Number.isFinite(b) || !Number.isFinite(a)) {
      if (a === b) continue; // same infinity
      return Infinity;
    }
    maxDiff = Math.max(maxDiff, Math.abs(a - b));
    maxRef = Math.max(maxRef, Math.abs(b));
  }
  return maxDiff / (maxRef === 0 ? ZERO_REFERENCE_SCALE : Math.max(maxRef, TINY));
}

/** Index of the largest |a − b| (for failure messages). */
function worstIndex(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let worst = 0;
  let worstDiff = -1;
  for (let i = 0; i < Math.min(actual.length, expected.length); i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    const diff = Number.isNaN(d) ? Infinity : d;
    if (diff > worstDiff) {
      worstDiff = diff;
      worst = i;
    }
  }
  return worst;
}

/** Asserts relativeError(actual, expected) ≤ tol, with a message naming the worst element. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, label: string): void {
  const err = relativeError(actual, expected);
  if (err <= tol) return;
  const i = worstIndex(actual, expected);
  assert.fail(
    `${label}: relative error ${err.toExponential(3)} > tolerance ${tol.toExponential(1)} ` +
      `(length ${actual.length} vs ${expected.length}; worst at [${i}]: got ${actual[i]}, expected ${expected[i]})`,
  );
}

/** Asserts |actual − expected| ≤ tol · max(|expected|, tiny) for scalars. */
export function assertScalarClose(actual: number, expected: number, tol: number, label: string): void {
  assertClose([actual], [expected], tol, label);
}

/** Σ r_i · y_i in float64: the random linear functional L = ⟨r, f(x)⟩ of the gradient checks. */
export function dot(r: ArrayLike<number>, y: ArrayLike<number>): number {
  let acc = 0;
  for (let i = 0; i < r.length; i++) acc += r[i]! * y[i]!;
  return acc;
}

/**
 * The central difference (L(x + h·e_i) − L(x − h·e_i)) / 2h: the one finite-difference rule of
 * the gradient checks. x[i] is perturbed in place and restored; `loss` reads x (directly or
 * through a tensor that views it). For float32 x, the perturbed values round to float32.
 */
export function centralDifference(x: { [i: number]: number }, i: number, h: number, loss: () => number): number {
  const xi = x[i]!;
  x[i] = xi + h;
  const plus = loss();
  x[i] = xi - h;
  const minus = loss();
  x[i] = xi;
  return (plus - minus) / (2 * h);
}
