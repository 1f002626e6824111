/**
 * Elementwise kernels and whole-array reductions. Every result is computed in float64 and
 * rounded once when stored.
 */
import type { FloatArray, UnaryOp } from '../backend.js';
import { normalCdf, normalPdf, sigmoid } from './special.js';

/** f(x) for each UnaryOp. gelu is the exact form x·Φ(x). */
function forwardOf(op: UnaryOp): (x: number) => number {
  switch (op) {
    case 'sigmoid':
      return sigmoid;
    case 'tanh':
      return Math.tanh;
    case 'silu':
      return (x) => x * sigmoid(x);
    case 'gelu':
      return (x) => x * normalCdf(x);
  }
}

/** f'(x) for each UnaryOp, given x and y = f(x). */
function derivativeOf(op: UnaryOp): (x: number, y: number) => number {
  switch (op) {
    case 'sigmoid':
      return (_x, y) => y * (1 - y);
    case 'tanh':
      return (_x, y) => 1 - y * y;
    case 'silu':
      return (x) => {
        const s = sigmoid(x);
        return s * (1 + x * (1 - s));
      };
    case 'gelu':
      return (x) => normalCdf(x) + x * normalPdf(x);
  }
}

/** out = f(x); out may alias x. */
export function unary(op: UnaryOp, x: FloatArray, out: FloatArray): void {
  const f = forwardOf(op);
  for (let i = 0; i < x.length; i++) out[i] = f(x[i]!);
}

/** dX = f'(x) · dOut; dX may alias dOut. */
export function unaryBackward(op: UnaryOp, x: FloatArray, y: FloatArray, dOut: FloatArray, dX: FloatArray): void {
  const df = derivativeOf(op);
  for (let i = 0; i < x.length; i++) dX[i] = df(x[i]!, y[i]!) * dOut[i]!;
}

/** Σ x in float64. */
export function sum(x: FloatArray): number {
  let acc = 0;
  for (let i = 0; i < x.length; i++) acc += x[i]!;
  return acc;
}

/** Σ x² in float64. */
export function sumSquares(x: FloatArray): number {
  let acc = 0;
  for (let i = 0; i < x.length; i++) acc += x[i]! * x[i]!;
  return acc;
}

/** out[c] = Σ_r x[r, c].  x (R, C) → out (C). */
export function sumRows(x: FloatArray, cols: number, out: FloatArray): void {
  const rows = cols === 0 ? 0 : x.length / cols;
  for (let c = 0; c < cols; c++) {
    let acc = 0;
    for (let r = 0; r < rows; r++) acc += x[r * cols + c]!;
    out[c] = acc;
  }
}

/** out[r] = Σ_c x[r, c].  x (R, C) → out (R). */
export function sumCols(x: FloatArray, cols: number, out: FloatArray): void {
  const rows = out.length;
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += x[r * cols + c]!;
    out[r] = acc;
  }
}

/** out[r, :] = s[r] · x[r, :]; out may alias x. */
export function scaleRows(x: FloatArray, s: FloatArray, cols: number, out: FloatArray): void {
  for (let r = 0; r < s.length; r++) {
    const g = s[r]!;
    for (let c = 0; c < cols; c++) out[r * cols + c] = g * x[r * cols + c]!;
  }
}

/** out[r] = ⟨a[r, :], b[r, :]⟩. */
export function rowDot(a: FloatArray, b: FloatArray, cols: number, out: FloatArray): void {
  for (let r = 0; r < out.length; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += a[r * cols + c]! * b[r * cols + c]!;
    out[r] = acc;
  }
}

/** out = a + b; out may alias a or b. */
export function add(a: FloatArray, b: FloatArray, out: FloatArray): void {
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
}

/** out = a ⊙ b; out may alias a or b. */
export function mul(a: FloatArray, b: FloatArray, out: FloatArray): void {
  for (let i = 0; i < a.length; i++) out[i] = a[i]! * b[i]!;
}

/** out = s · a; out may alias a. */
export function scale(a: FloatArray, s: number, out: FloatArray): void {
  for (let i = 0; i < a.length; i++) out[i] = s * a[i]!;
}

/** y += alpha · x. */
export function axpy(alpha: number, x: FloatArray, y: FloatArray): void {
  for (let i = 0; i < x.length; i++) y[i]! += alpha * x[i]!;
}

/** x[:] = value. */
export function fill(x: FloatArray, value: number): void {
  x.fill(value);
}
