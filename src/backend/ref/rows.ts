/**
 * Row-wise kernels over x (R, C): softmax, logsumexp and top-k.
 */
import type { FloatArray } from '../backend.js';
import { rowLogSumExp } from './losses.js';

/** Row softmax: x (R, C) → out (R, C); out may alias x (each x[c] is read before out[c] is written). */
export function softmaxRows(x: FloatArray, cols: number, out: FloatArray): void {
  const rows = cols === 0 ? 0 : x.length / cols;
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    let max = -Infinity;
    for (let c = 0; c < cols; c++) max = Math.max(max, x[off + c]!);
    let sum = 0;
    for (let c = 0; c < cols; c++) sum += Math.exp(x[off + c]! - max);
    const inv = 1 / sum;
    for (let c = 0; c < cols; c++) out[off + c] = Math.exp(x[off + c]! - max) * inv;
  }
}

/** dX[r] = y[r] ⊙ (dOut[r] − ⟨dOut[r], y[r]⟩); dX may alias dOut. */
export function softmaxRowsBackward(y: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void {
  const rows = cols === 0 ? 0 : y.length / cols;
  for (let r = 0; r < rows; r++) {
    const off = r * cols;
    let dot = 0;
    for (let c = 0; c < cols; c++) dot += dOut[off + c]! * y[off + c]!;
    for (let c = 0; c < cols; c++) dX[off + c] = y[off + c]! * (dOut[off + c]! - dot);
  }
}

/** Row logsumexp: x (R, C) → out (R). */
export function logsumexpRows(x: FloatArray, cols: number, out: FloatArray): void {
  for (let r = 0; r < out.length; r++) out[r] = rowLogSumExp(x, r * cols, cols);
}

/** dX[r, c] = exp(x[r, c] − lse[r]) · dOut[r]. */
export function logsumexpRowsBackward(
  x: FloatArray,
  lse: FloatArray,
  dOut: FloatArray,
  cols: number,
  dX: FloatArray,
): void {
  for (let r = 0; r < lse.length; r++) {
    const off = r * cols;
    const l = lse[r]!;
    const g = dOut[r]!;
    for (let c = 0; c < cols; c++) dX[off + c] = Math.exp(x[off + c]! - l) * g;
  }
}

/**
 * Per-row top-k: x (R, C) → indices (R, k), values (R, k). Columns are ranked by value, largest
 * first, ties to the lower column index (NaN ranks above every number, as in torch.topk). Order
 * 'index' lists the same k columns in increasing column order.
 */
export function topkRows(
  x: FloatArray,
  cols: number,
  k: number,
  order: 'value' | 'index',
  indices: Int32Array,
  values: FloatArray,
): void {
  const rows = indices.length / k;
  if (k === 1) {
    // greedy decoding's argmax: one pass under the same ranking (NaN first, ties to the lower column)
    for (let r = 0; r < rows; r++) {
      const at = r * cols;
      let best = 0;
      for (let c = 1; c < cols; c++) {
        const v = x[at + c]!;
        const b = x[at + best]!;
        if (Number.isNaN(b)) break;
        if (Number.isNaN(v) || v > b) best = c;
      }
      indices[r] = best;
      values[r] = x[at + best]!;
    }
    return;
  }
  const ranked = new Int32Array(cols); // (C) column ids of the current row, sorted by rank
  let off = 0;
  const byRank = (a: number, b: number): number => {
    const va = x[off + a]!;
    const vb = x[off + b]!;
    if (va === vb || (Number.isNaN(va) && Number.isNaN(vb))) return a - b;
    if (Number.isNaN(va)) return -1;
    if (Number.isNaN(vb)) return 1;
    return vb > va ? 1 : -1;
  };
  for (let r = 0; r < rows; r++) {
    off = r * cols;
    for (let c = 0; c < cols; c++) ranked[c] = c;
    ranked.sort(byRank);
    const selected = ranked.subarray(0, k);
    if (order === 'index') selected.sort();
    for (let i = 0; i < k; i++) {
      const c = selected[i]!;
      indices[r * k + i] = c;
      values[r * k + i] = x[off + c]!;
    }
  }
}
