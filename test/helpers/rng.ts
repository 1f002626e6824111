/**
 * Seeded random test data, from the project's own generator (src/util/rng.ts). Float data comes
 * out as Float64Array holding float32-representable values, so a Float32Array copy and a
 * Float64Array copy of the same input are exactly equal.
 */
import { Rng as ProjectRng } from '../../src/util/rng.js';

export class Rng extends ProjectRng {
  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + this.nextInt(hi - lo);
  }
}

/**
 * n values, |value| in [0.1·scale, scale] with a random sign: never zero, never all equal,
 * rounded to float32.
 */
export function randomFloats(rng: Rng, n: number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const magnitude = scale * (0.1 + 0.9 * rng.next());
    out[i] = Math.fround(rng.next() < 0.5 ? -magnitude : magnitude);
  }
  return out;
}

/** n values uniform in [lo, hi), rounded to float32. */
export function uniformFloats(rng: Rng, n: number, lo: number, hi: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(rng.uniform(lo, hi));
  return out;
}

/** n integers in [lo, hi). */
export function randomInts(rng: Rng, n: number, lo: number, hi: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(lo, hi);
  return out;
}
