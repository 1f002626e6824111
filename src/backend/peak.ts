/**
 * Measured GEMM throughput: the denominator of model FLOPs utilisation (MFU). Measured in the
 * same process as the work it is compared with, since absolute speed drifts on shared machines.
 */
import type { Backend, GemmArgs } from './backend.js';

/** Fill with non-zero values in [-1, 1] (zeros would let a kernel skip work). */
function randomFill(a: Float32Array, seed: number): void {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1 || 0.5;
  }
}

/**
 * GFLOP/s of C = A·Bᵀ-style GEMMs at (m, n, k) on a backend, timed over at least `minSeconds`
 * after one warm-up call. Returns the best of `repeats` timing windows (the machine is noisy;
 * the best window is the one least disturbed).
 */
export function measureGemmGflops(
  be: Backend,
  m: number,
  n: number,
  k: number,
  opts: { transA?: boolean; transB?: boolean; minSeconds?: number; repeats?: number } = {},
): number {
  const a = new Float32Array(m * k);
  const b = new Float32Array(k * n);
  const c = new Float32Array(m * n);
  randomFill(a, 1);
  randomFill(b, 2);
  const args: GemmArgs = { transA: opts.transA ?? false, transB: opts.transB ?? false, m, n, k, alpha: 1, beta: 0 };
  be.gemm(args, a, b, c);
  const flop = 2 * m * n * k;
  const minSeconds = opts.minSeconds ?? 0.3;
  let best = 0;
  for (let r = 0; r < (opts.repeats ?? 3); r++) {
    let iters = 0;
    const t0 = performance.now();
    let dt = 0;
    do {
      be.gemm(args, a, b, c);
      iters++;
      dt = (performance.now() - t0) / 1000;
    } while (dt < minSeconds);
    best = Math.max(best, (iters * flop) / dt / 1e9);
  }
  return best;
}

/** The GEMM peak used for MFU: the (2048, 704, 256) shape of the `small` model's MLP. */
export function measureGemmPeak(be: Backend, minSeconds = 0.2): number {
  return measureGemmGflops(be, 2048, 704, 256, { transB: true, minSeconds, repeats: 2 });
}
