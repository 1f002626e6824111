/**
 * Truncated SVD of a dense matrix in float64, for the LoRA initialisation of a conversion
 * (MOR_SPEC §8: B = U·S, A = Vᵀ of the residual W_ℓ − W_shared).
 *
 *   M (m, n) row-major  →  U (m, r), S (r) descending, Vᵀ (r, n)
 *
 * Method: the Gram matrix of the short side (G = M·Mᵀ when m ≤ n, else Mᵀ·M, float64) and its
 * symmetric eigendecomposition (ml-matrix's Householder tridiagonalisation + QL). The long-side
 * factor is then recovered from M itself, w_i = u_iᵀ·M, with σ_i = ‖w_i‖ and v_i = w_i / σ_i,
 * so U·S·Vᵀ = U·Uᵀ·M exactly up to rounding whatever the eigen-solver's error in σ: at full rank
 * (r = min(m, n)) U is an orthonormal basis and the product is M itself.
 *
 * Why not ml-matrix's SVD: it is a port of JAMA's Golub–Kahan on arrays of arrays and takes
 * ~10.7 s for one 576 × 1536 matrix (SmolLM-135M's MLP) on the 2-core development machine; the
 * Gram route takes ~2.6 s (0.5 s Gram, 2.1 s eigensolver). Squaring the condition number costs
 * relative accuracy only in singular values below ~1e-8·σ_max, which a LoRA init does not need;
 * the test compares both against ml-matrix's SVD as the float64 reference.
 *
 * Directions with σ_i = 0 (a residual of rank below r, e.g. a position whose layer IS the shared
 * one) get orthonormal completions in Vᵀ, so A is never a zero row: B = 0 there, and the pair
 * trains like a fresh LoRA (a zero A and zero B would get zero gradients forever).
 */
import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import { ArgumentError } from '../errors.js';
import { Rng } from '../util/rng.js';

export interface TruncatedSvd {
  readonly rows: number;
  readonly cols: number;
  readonly rank: number;
  /** (m, r) row-major, orthonormal columns. */
  readonly u: Float64Array;
  /** (r) descending, ≥ 0. */
  readonly s: Float64Array;
  /** (r, n) row-major, orthonormal rows. */
  readonly vt: Float64Array;
}

/** Gram matrix of the rows of X (p, q): G = X·Xᵀ (p, p), float64. */
function rowGram(x: ArrayLike<number>, p: number, q: number): Float64Array {
  const g = new Float64Array(p * p);
  for (let i = 0; i < p; i++) {
    const ri = i * q;
    for (let j = 0; j <= i; j++) {
      const rj = j * q;
      let acc = 0;
      for (let k = 0; k < q; k++) acc += (x[ri + k] as number) * (x[rj + k] as number);
      g[i * p + j] = acc;
      g[j * p + i] = acc;
    }
  }
  return g;
}

function transpose(x: ArrayLike<number>, m: number, n: number): Float64Array {
  const t = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) t[j * m + i] = x[i * n + j] as number;
  return t;
}

/**
 * Make row `i` of `rows` (each of length n) a unit vector orthogonal to rows 0..i−1, starting
 * from seeded noise (two passes of Gram–Schmidt).
 */
function completeRow(rows: Float64Array, i: number, n: number, rng: Rng): void {
  const row = rows.subarray(i * n, (i + 1) * n);
  for (let attempt = 0; attempt < 8; attempt++) {
    for (let k = 0; k < n; k++) row[k] = rng.normal();
    for (let pass = 0; pass < 2; pass++) {
      for (let j = 0; j < i; j++) {
        const other = rows.subarray(j * n, (j + 1) * n);
        let dot = 0;
        for (let k = 0; k < n; k++) dot += (row[k] as number) * (other[k] as number);
        for (let k = 0; k < n; k++) row[k] = (row[k] as number) - dot * (other[k] as number);
      }
    }
    let norm = 0;
    for (let k = 0; k < n; k++) norm += (row[k] as number) ** 2;
    norm = Math.sqrt(norm);
    if (norm > 1e-6) {
      for (let k = 0; k < n; k++) row[k] = (row[k] as number) / norm;
      return;
    }
  }
  throw new ArgumentError(`svd: cannot complete an orthonormal basis at row ${i} of ${n}`);
}

/** SVD of a short-and-wide M (m ≤ n): eigenvectors of M·Mᵀ give U, Vᵀ comes from Uᵀ·M. */
function wideSvd(x: ArrayLike<number>, m: number, n: number, r: number, seed: number): TruncatedSvd {
  const g = rowGram(x, m, n);
  const evd = new EigenvalueDecomposition(Matrix.from1DArray(m, m, g), { assumeSymmetric: true });
  const vectors = evd.eigenvectorMatrix;
  const order = evd.realEigenvalues.map((value, index) => ({ value, index })).sort((a, b) => b.value - a.value);
  const u = new Float64Array(m * r);
  const s = new Float64Array(r);
  const vt = new Float64Array(r * n);
  for (let i = 0; i < r; i++) {
    const col = (order[i] as { index: number }).index;
    for (let a = 0; a < m; a++) u[a * r + i] = vectors.get(a, col);
    // w = u_iᵀ·M (n)
    const w = vt.subarray(i * n, (i + 1) * n);
    for (let a = 0; a < m; a++) {
      const ua = u[a * r + i] as number;
      if (ua === 0) continue;
      const ra = a * n;
      for (let k = 0; k < n; k++) w[k] = (w[k] as number) + ua * (x[ra + k] as number);
    }
    let norm = 0;
    for (let k = 0; k < n; k++) norm += (w[k] as number) ** 2;
    s[i] = Math.sqrt(norm);
  }
  // A direction is null when its σ is at rounding level of the largest one.
  const floor = Math.max(s[0] ?? 0, Number.MIN_VALUE) * 1e-12 * Math.max(m, n);
  const rng = new Rng(seed);
  for (let i = 0; i < r; i++) {
    const si = s[i] as number;
    if (si > floor) {
      for (let k = 0; k < n; k++) vt[i * n + k] = (vt[i * n + k] as number) / si;
    } else {
      completeRow(vt, i, n, rng); // σ_i·u_i·v_iᵀ changes by at most σ_i ≤ floor
    }
  }
  return { rows: m, cols: n, rank: r, u, s, vt };
}

/**
 * The best rank-r approximation of M (m, n) as U·diag(S)·Vᵀ, float64.
 *   m (m·n) row-major, float32 or float64; 1 ≤ r ≤ min(m, n).
 * `seed` only picks the completion directions of a rank-deficient M.
 */
export function truncatedSvd(x: ArrayLike<number>, m: number, n: number, r: number, seed = 0): TruncatedSvd {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || n < 1 || x.length !== m * n) {
    throw new ArgumentError(`svd: expected a (${m}, ${n}) matrix of ${m * n} values, got ${x.length}`);
  }
  if (!Number.isInteger(r) || r < 1 || r > Math.min(m, n)) {
    throw new ArgumentError(`svd: rank must be an integer in [1, ${Math.min(m, n)}] for a (${m}, ${n}) matrix, got ${r}`);
  }
  if (m <= n) return wideSvd(x, m, n, r, seed);
  // tall: Mᵀ = V·S·Uᵀ, so swap the roles
  const t = wideSvd(transpose(x, m, n), n, m, r, seed);
  return { rows: m, cols: n, rank: r, u: transpose(t.vt, r, m), s: t.s, vt: transpose(t.u, n, r) };
}
