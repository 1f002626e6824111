/**
 * Measured GEMM throughput: the denominator of model FLOPs utilisation (MFU). Measured in the
 * same process as the work it is compared with, since absolute speed drifts on shared machines.
 */
import type { Backend, GemmArgs } from './backend.js';
import type { StorageDtype } from './bf16.js';

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
  return bestGflops(() => be.gemm(args, a, b, c), 2 * m * n * k, opts.minSeconds ?? 0.3, opts.repeats ?? 3);
}

/** GFLOP/s of `call` (`flop` each): one warm-up call, then the best of `repeats` windows of ≥ minSeconds. */
function bestGflops(call: () => void, flop: number, minSeconds: number, repeats: number): number {
  call();
  let best = 0;
  for (let r = 0; r < repeats; r++) {
    let iters = 0;
    const t0 = performance.now();
    let dt = 0;
    do {
      call();
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

/**
 * The peak of the packed products that decoding runs (gemmPacked over a weight packed once), at
 * the same (2048, 704, 256) shape, with the weight stored in `dtype`: the compute ceiling of a
 * decoding run in that dtype. bf16 products run on vdpbf16ps where the CPU has AVX512_BF16 (two
 * multiply-adds per lane and instruction), so their peak is not the f32 GEMM's: 357 against 203
 * GFLOP/s on a Zen 4 core pair. Best of two windows of at least `minSeconds`.
 */
export function measurePackedGemmPeak(be: Backend, dtype: StorageDtype = 'f32', minSeconds = 0.2): number {
  const m = 2048;
  const n = 704;
  const k = 256;
  const a = new Float32Array(m * k);
  const w = new Float32Array(n * k);
  const c = new Float32Array(m * n);
  randomFill(a, 1);
  randomFill(w, 2);
  const packed = be.packWeight(w, n, k, dtype);
  return bestGflops(() => be.gemmPacked(m, a, packed, c, false), 2 * m * n * k, minSeconds, 2);
}
