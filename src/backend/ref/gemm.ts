/**
 * GEMM, written as the definition: every C element is one dot product accumulated in a float64
 * local. Clear rather than fast; the native backend is the fast path.
 */
import { ArgumentError } from '../../errors.js';
import type { FloatArray, GemmArgs, PackedWeight } from '../backend.js';
import { fromBf16, storageDtype, toBf16, type StorageDtype } from '../bf16.js';

/**
 * C[b] = alpha · op(A[b]) · op(B[b]) + beta · C[b]  (see GemmArgs).
 *
 * Element addressing, with the transposes folded into two steps per operand:
 *   op(A)[i, p] = a[offA + i·aRowStep + p·aKStep]     A stored (m, k), or (k, m) when transA
 *   op(B)[p, j] = b[offB + p·bKStep + j·bColStep]     B stored (k, n), or (n, k) when transB
 */
export function gemm(args: GemmArgs, a: FloatArray, b: FloatArray, c: FloatArray): void {
  const { transA, transB, m, n, k, alpha, beta } = args;
  const batch = args.batch ?? 1;
  const strideA = args.strideA ?? m * k;
  const strideB = args.strideB ?? k * n;
  const strideC = args.strideC ?? m * n;

  const aRowStep = transA ? 1 : k;
  const aKStep = transA ? m : 1;
  const bKStep = transB ? 1 : n;
  const bColStep = transB ? k : 1;

  for (let bi = 0; bi < batch; bi++) {
    const offA = bi * strideA;
    const offB = bi * strideB;
    const offC = bi * strideC;
    for (let i = 0; i < m; i++) {
      const aRow = offA + i * aRowStep;
      const cRow = offC + i * n;
      for (let j = 0; j < n; j++) {
        const bCol = offB + j * bColStep;
        let acc = 0;
        for (let p = 0; p < k; p++) acc += a[aRow + p * aKStep]! * b[bCol + p * bKStep]!;
        // beta = 0 must not read C: NaN or garbage there does not propagate.
        c[cRow + j] = beta === 0 ? alpha * acc : alpha * acc + beta * c[cRow + j]!;
      }
    }
  }
}

/**
 * The reference "packing" is a copy (bf16: each value rounded to nearest-even, bf16.ts):
 * gemmPacked is gemm with transB over it.
 */
export function packWeight(w: Float32Array, n: number, k: number, dtype: StorageDtype = 'f32'): PackedWeight {
  if (w.length !== n * k) throw new ArgumentError(`packWeight: w has ${w.length} elements, (n, k) = (${n}, ${k}) needs ${n * k}`);
  const dt = storageDtype('packWeight: dtype', dtype);
  if (dt === 'bf16') return { backend: 'ref', n, k, dtype: 'bf16', data: toBf16(w) };
  return { backend: 'ref', n, k, dtype: 'f32', data: Float32Array.from(w) };
}

/** A bf16 weight is widened to float32 (exactly) and multiplied as an f32 one. */
export function gemmPacked(m: number, a: Float32Array, w: PackedWeight, c: Float32Array, accumulate: boolean): void {
  if (w.backend !== 'ref') throw new ArgumentError(`gemmPacked: weight packed by the '${w.backend}' backend; repack it with 'ref'`);
  const b = w.dtype === 'bf16' ? fromBf16(w.data) : w.data; //  (n, k)
  gemm({ transA: false, transB: true, m, n: w.n, k: w.k, alpha: 1, beta: accumulate ? 1 : 0 }, a, b, c);
}
