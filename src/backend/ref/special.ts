/**
 * Scalar special functions in float64 for the reference backend. JavaScript has no Math.erf, so
 * the exact (erf-form) GELU needs one written here.
 *
 * erf, |x| < 3 — the series of Abramowitz & Stegun 7.1.6,
 *     erf(x) = 2/√π · e^(−x²) · Σ_{n≥0} 2ⁿ x^(2n+1) / (1·3·5···(2n+1)),
 *   whose terms all share the sign of x, so the sum has no cancellation (unlike the Maclaurin
 *   series); at |x| = 3 it needs about 45 terms to reach one ulp. For |x| ≥ 3, erf = 1 − erfc.
 * erfc, x ≥ 2 — Laplace's continued fraction (A&S 7.1.14),
 *     erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))),
 *   evaluated with the modified Lentz algorithm (Numerical Recipes, 3rd ed., §5.2); erfc below 2
 *   is 1 − erf (erfc(2) ≈ 4.7e-3, so that loses under two digits). At x = 2 the fraction takes
 *   about 60 terms, fewer further out.
 * Checked against mpmath: erf to ~1e-15 and erfc to ~1e-13 relative (test/gradcheck-kernels.test.ts).
 */

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π
const INV_SQRT_PI = 0.5641895835477563; // 1/√π
const INV_SQRT2 = 0.7071067811865476; // 1/√2
const INV_SQRT_2PI = 0.3989422804014327; // 1/√(2π)
/** erf uses the series below this |x|, the continued fraction above. */
const ERF_SERIES_LIMIT = 3;
/** erfc uses 1 − series below this x, the continued fraction above. */
const ERFC_SERIES_LIMIT = 2;

/** erf(x) for 0 ≤ x < ERF_SERIES_LIMIT, by A&S 7.1.6. */
function erfSeries(x: number): number {
  const x2 = 2 * x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 200; n++) {
    term *= x2 / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x * x) * sum;
}

/** erfc(x) for x ≥ ERFC_SERIES_LIMIT, by the continued fraction A&S 7.1.14 (modified Lentz). */
function erfcContinuedFraction(x: number): number {
  if (x > 27) return 0; // e^(−x²) underflows float64
  // f = b0 + a1/(b1 + a2/(b2 + …)) with b_n = x, a_n = n/2.
  const tiny = 1e-300;
  let f = x;
  let c = f;
  let d = 0;
  for (let n = 1; n < 500; n++) {
    const an = n / 2;
    d = x + an * d;
    if (d === 0) d = tiny;
    c = x + an / c;
    if (c === 0) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return (INV_SQRT_PI * Math.exp(-x * x)) / f;
}

/** The error function, float64. */
export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  const r = ax < ERF_SERIES_LIMIT ? erfSeries(ax) : 1 - erfcContinuedFraction(ax);
  return x < 0 ? -r : r;
}

/** The complementary error function 1 − erf(x), accurate in the tail (no cancellation). */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x < 0) return 2 - erfc(-x);
  return x < ERFC_SERIES_LIMIT ? 1 - erfSeries(x) : erfcContinuedFraction(x);
}

/** Standard normal CDF Φ(x) = ½·erfc(−x/√2), written so the left tail keeps its precision. */
export function normalCdf(x: number): number {
  return x < 0 ? 0.5 * erfc(-x * INV_SQRT2) : 1 - 0.5 * erfc(x * INV_SQRT2);
}

/** Standard normal density φ(x). */
export function normalPdf(x: number): number {
  return INV_SQRT_2PI * Math.exp(-0.5 * x * x);
}

/** Logistic sigmoid 1/(1+e^−x), without overflow for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}
