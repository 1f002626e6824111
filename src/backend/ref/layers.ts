/**
 * Layer kernels: rotary embedding, RMSNorm, SwiGLU, and the row gather/scatter used by
 * embeddings and routing.
 */
import { ArgumentError } from '../../errors.js';
import type { FloatArray } from '../backend.js';
import { sigmoid } from './special.js';

const fround = Math.fround;

/**
 * Rotary embedding, rotate-half convention: x (N, nHeads, HD), pos (N) → out (N, nHeads, HD).
 *
 *   row of one head:  [ x_0 … x_{HD/2−1} | x_{HD/2} … x_{HD−1} ]
 *                        first half (i)     second half (i + HD/2), paired with i
 *
 * For a Float32Array output the angles follow PyTorch (HF Llama) in float32, so a model matches
 * its PyTorch twin bit for bit where it can: inv_freq_i = 1 / theta^((2i)/HD) with every step
 * rounded to float32, angle = fround(pos · inv_freq_i), cos/sin rounded to float32. For a
 * Float64Array output everything is float64. `inverse` rotates by −angle (the backward).
 */
export function rope(
  x: FloatArray, // (N, nHeads, HD)
  pos: Int32Array, // (N)
  nHeads: number,
  headDim: number,
  theta: number,
  inverse: boolean,
  out: FloatArray, // (N, nHeads, HD); may alias x
): void {
  const half = headDim / 2;
  const f32 = out instanceof Float32Array;
  const invFreq = new Float64Array(half); // (HD/2)
  for (let i = 0; i < half; i++) {
    invFreq[i] = f32
      ? fround(1 / fround(Math.pow(theta, fround((2 * i) / headDim))))
      : 1 / Math.pow(theta, (2 * i) / headDim);
  }
  const cos = new Float64Array(half); // (HD/2) for the current row
  const sin = new Float64Array(half);
  const sign = inverse ? -1 : 1;

  for (let n = 0; n < pos.length; n++) {
    const p = pos[n]!;
    for (let i = 0; i < half; i++) {
      const angle = f32 ? fround(p * invFreq[i]!) : p * invFreq[i]!;
      cos[i] = f32 ? fround(Math.cos(angle)) : Math.cos(angle);
      sin[i] = sign * (f32 ? fround(Math.sin(angle)) : Math.sin(angle));
    }
    for (let h = 0; h < nHeads; h++) {
      const base = (n * nHeads + h) * headDim;
      for (let i = 0; i < half; i++) {
        const x1 = x[base + i]!;
        const x2 = x[base + i + half]!;
        out[base + i] = x1 * cos[i]! - x2 * sin[i]!;
        out[base + i + half] = x2 * cos[i]! + x1 * sin[i]!;
      }
    }
  }
}

/** RMSNorm: x (N, D), w (D) → out (N, D) = x · rstd · w, rstd (N) = 1/sqrt(mean(x²) + eps). */
export function rmsnormForward(x: FloatArray, w: FloatArray, eps: number, out: FloatArray, rstd: FloatArray): void {
  const D = w.length;
  const N = rstd.length;
  for (let n = 0; n < N; n++) {
    const row = n * D;
    let sumSq = 0;
    for (let j = 0; j < D; j++) sumSq += x[row + j]! * x[row + j]!;
    const r = 1 / Math.sqrt(sumSq / D + eps);
    rstd[n] = r;
    for (let j = 0; j < D; j++) out[row + j] = x[row + j]! * r * w[j]!;
  }
}

/**
 * RMSNorm backward, with r = rstd[n] and g = dOut:
 *   dX_j = r·w_j·g_j − x_j · r³/D · Σ_k g_k·w_k·x_k;   dW_j = Σ_n g_nj · x_nj · r_n.
 */
export function rmsnormBackward(
  x: FloatArray, // (N, D)
  w: FloatArray, // (D)
  rstd: FloatArray, // (N)
  dOut: FloatArray, // (N, D)
  dX: FloatArray, // (N, D)
  dW: FloatArray, // (D)
): void {
  const D = w.length;
  const N = rstd.length;
  const dW64 = new Float64Array(D); // sums over rows in float64
  for (let n = 0; n < N; n++) {
    const row = n * D;
    const r = rstd[n]!;
    let dot = 0;
    for (let j = 0; j < D; j++) dot += dOut[row + j]! * w[j]! * x[row + j]!;
    const c = (r * r * r * dot) / D;
    for (let j = 0; j < D; j++) {
      const g = dOut[row + j]!;
      const xj = x[row + j]!;
      dX[row + j] = r * w[j]! * g - xj * c;
      dW64[j]! += g * xj * r;
    }
  }
  dW.set(dW64);
}

/** SwiGLU: out = silu(gate) · up, all (N, I). */
export function swigluForward(gate: FloatArray, up: FloatArray, out: FloatArray): void {
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    out[i] = g * sigmoid(g) * up[i]!;
  }
}

/** dGate = dOut · up · silu'(gate), silu'(g) = σ(g)(1 + g(1 − σ(g))); dUp = dOut · silu(gate). */
export function swigluBackward(
  gate: FloatArray,
  up: FloatArray,
  dOut: FloatArray,
  dGate: FloatArray,
  dUp: FloatArray,
): void {
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    const u = up[i]!;
    const d = dOut[i]!;
    const sg = sigmoid(g);
    dGate[i] = d * u * sg * (1 + g * (1 - sg));
    dUp[i] = d * g * sg;
  }
}

function checkRowIndex(idx: Int32Array, i: number, rows: number, what: string): number {
  const r = idx[i]!;
  if (r < 0 || r >= rows) {
    throw new ArgumentError(`${what}: idx[${i}] = ${r}, expected 0 ≤ idx < ${rows} rows`);
  }
  return r;
}

/** out[i, :] = src[idx[i], :].  src (R, C), idx (N) → out (N, C). */
export function gatherRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void {
  const rows = cols === 0 ? 0 : src.length / cols;
  for (let i = 0; i < idx.length; i++) {
    const from = checkRowIndex(idx, i, rows, 'gatherRows') * cols;
    const to = i * cols;
    for (let c = 0; c < cols; c++) out[to + c] = src[from + c]!;
  }
}

/** out[idx[i], :] += src[i, :]; accumulates.  src (N, C), idx (N) → out (R, C). */
export function scatterAddRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void {
  const rows = cols === 0 ? 0 : out.length / cols;
  for (let i = 0; i < idx.length; i++) {
    const to = checkRowIndex(idx, i, rows, 'scatterAddRows') * cols;
    const from = i * cols;
    for (let c = 0; c < cols; c++) out[to + c]! += src[from + c]!;
  }
}
