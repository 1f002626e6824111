/**
 * Seeded random numbers for tests (mulberry32: small, fast, good enough for test data).
 * Float data comes out as Float64Array holding float32-representable values, so a Float32Array
 * copy and a Float64Array copy of the same input are exactly equal.
 */
export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [lo, hi). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo));
  }

  /** Standard normal (Box–Muller). */
  normal(): number {
    const u = 1 - this.next(); // (0, 1]
    const v = this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
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
