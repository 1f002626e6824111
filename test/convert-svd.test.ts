// The conversion's truncated SVD (src/convert/svd.ts) against ml-matrix's Golub–Kahan SVD as the
// float64 reference: singular values, reconstruction (exact at full rank, Eckart–Young optimal
// when truncated), orthonormal factors, rank-deficient inputs and bad ranks.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Matrix, SVD } from 'ml-matrix';
import { truncatedSvd, type TruncatedSvd } from '../src/convert/svd.js';
import { ArgumentError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';

function randomMatrix(m: number, n: number, seed: number): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: m * n }, () => rng.normal());
}

function referenceSingularValues(x: Float64Array, m: number, n: number): number[] {
  const rows = Array.from({ length: m }, (_, i) => Array.from(x.subarray(i * n, (i + 1) * n)));
  return new SVD(new Matrix(rows), { autoTranspose: true }).diagonal;
}

/** U·diag(S)·Vᵀ (m, n). */
function reconstruct(s: TruncatedSvd): Float64Array {
  const { rows: m, cols: n, rank: r } = s;
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let k = 0; k < r; k++) {
      const c = (s.u[i * r + k] as number) * (s.s[k] as number);
      for (let j = 0; j < n; j++) out[i * n + j] = (out[i * n + j] as number) + c * (s.vt[k * n + j] as number);
    }
  }
  return out;
}

function frobenius2(a: Float64Array, b?: Float64Array): number {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc += ((a[i] as number) - (b ? (b[i] as number) : 0)) ** 2;
  return acc;
}

/** max |G − I| over the Gram matrix of r vectors of length len, read by `at(vector, index)`. */
function orthonormalityError(r: number, len: number, at: (v: number, i: number) => number): number {
  let worst = 0;
  for (let a = 0; a < r; a++) {
    for (let b = 0; b < r; b++) {
      let dot = 0;
      for (let i = 0; i < len; i++) dot += at(a, i) * at(b, i);
      worst = Math.max(worst, Math.abs(dot - (a === b ? 1 : 0)));
    }
  }
  return worst;
}

function checkFactors(s: TruncatedSvd): void {
  const { rows: m, cols: n, rank: r } = s;
  assert.ok(orthonormalityError(r, m, (k, i) => s.u[i * r + k] as number) < 1e-10, 'U has orthonormal columns');
  assert.ok(orthonormalityError(r, n, (k, j) => s.vt[k * n + j] as number) < 1e-10, 'Vᵀ has orthonormal rows');
  for (let k = 1; k < r; k++) assert.ok((s.s[k] as number) <= (s.s[k - 1] as number) + 1e-12, 'singular values descend');
}

describe('truncated SVD vs the float64 reference', () => {
  for (const [m, n] of [[24, 40], [40, 24], [17, 17]] as const) {
    test(`${m} × ${n}: singular values and exact reconstruction at full rank`, () => {
      const x = randomMatrix(m, n, m * 100 + n);
      const ref = referenceSingularValues(x, m, n);
      const r = Math.min(m, n);
      const s = truncatedSvd(x, m, n, r);
      checkFactors(s);
      for (let k = 0; k < r; k++) assert.ok(Math.abs((s.s[k] as number) - (ref[k] as number)) < 1e-10 * (ref[0] as number), `σ_${k}: ${s.s[k]} vs ${ref[k]}`);
      assert.ok(Math.sqrt(frobenius2(reconstruct(s), x) / frobenius2(x)) < 1e-12, 'U·S·Vᵀ = M');
    });

    test(`${m} × ${n}: truncation to rank 5 is the best rank-5 approximation (Eckart–Young)`, () => {
      const x = randomMatrix(m, n, m * 7 + n);
      const ref = referenceSingularValues(x, m, n);
      const s = truncatedSvd(x, m, n, 5);
      checkFactors(s);
      const optimal = ref.slice(5).reduce((acc, v) => acc + v * v, 0);
      const err = frobenius2(reconstruct(s), x);
      assert.ok(Math.abs(err - optimal) < 1e-9 * frobenius2(x), `‖M − M_5‖² ${err} vs Σ_{i>5} σ_i² ${optimal}`);
      for (let k = 0; k < 5; k++) assert.ok(Math.abs((s.s[k] as number) - (ref[k] as number)) < 1e-10 * (ref[0] as number));
    });
  }

  test('float32 input of a LoRA-sized residual (64 × 176) matches the reference', () => {
    const x = Float32Array.from(randomMatrix(64, 176, 5), (v) => 0.02 * v);
    const ref = referenceSingularValues(Float64Array.from(x), 64, 176);
    const s = truncatedSvd(x, 64, 176, 64);
    for (let k = 0; k < 64; k++) assert.ok(Math.abs((s.s[k] as number) - (ref[k] as number)) < 1e-10 * (ref[0] as number));
  });

  test('a rank-deficient matrix: zero σ beyond its rank, and Vᵀ still completed to orthonormal rows', () => {
    const m = 10;
    const n = 12;
    const a = randomMatrix(m, 3, 1);
    const b = randomMatrix(3, n, 2);
    const x = new Float64Array(m * n);
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) for (let k = 0; k < 3; k++) x[i * n + j] = (x[i * n + j] as number) + (a[i * 3 + k] as number) * (b[k * n + j] as number);
    const s = truncatedSvd(x, m, n, 6);
    checkFactors(s);
    for (let k = 3; k < 6; k++) assert.ok((s.s[k] as number) < 1e-9 * (s.s[0] as number), `σ_${k} = ${s.s[k]} is zero`);
    assert.ok(Math.sqrt(frobenius2(reconstruct(s), x) / frobenius2(x)) < 1e-10);
    const zero = truncatedSvd(new Float64Array(4 * 6), 4, 6, 4);
    checkFactors(zero);
    assert.deepEqual(Array.from(zero.s), [0, 0, 0, 0]);
  });

  test('a rank outside [1, min(m, n)] or a wrong length is an ArgumentError naming it', () => {
    const x = randomMatrix(4, 6, 3);
    assert.throws(() => truncatedSvd(x, 4, 6, 0), (e: unknown) => e instanceof ArgumentError && /rank must be an integer in \[1, 4\].*got 0/.test(e.message));
    assert.throws(() => truncatedSvd(x, 4, 6, 5), ArgumentError);
    assert.throws(() => truncatedSvd(x, 4, 6, 1.5), ArgumentError);
    assert.throws(() => truncatedSvd(x, 5, 6, 2), /expected a \(5, 6\) matrix of 30 values, got 24/);
  });
});
