/**
 * Losses: softmax cross-entropy over a vocabulary, and binary cross-entropy with logits.
 */
import { ArgumentError } from '../../errors.js';
import type { FloatArray } from '../backend.js';
import { sigmoid } from './special.js';

/** Throws ArgumentError at the first target outside [0, V) that is not ignoreIndex. */
function checkTargets(targets: Int32Array, vocab: number, ignoreIndex: number, what: string): void {
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i]!;
    if (t !== ignoreIndex && (t < 0 || t >= vocab)) {
      throw new ArgumentError(
        `${what}: targets[${i}] = ${t}, expected 0 ≤ target < ${vocab} or the ignore index ${ignoreIndex}`,
      );
    }
  }
}

/** logsumexp of x[off .. off+len), stable (max subtracted). */
export function rowLogSumExp(x: FloatArray, off: number, len: number): number {
  let max = -Infinity;
  for (let c = 0; c < len; c++) max = Math.max(max, x[off + c]!);
  if (max === -Infinity) return -Infinity;
  if (max === Infinity) return Infinity;
  let sum = 0;
  for (let c = 0; c < len; c++) sum += Math.exp(x[off + c]! - max);
  return max + Math.log(sum);
}

/**
 * logits (N, V), targets (N) → losses (N), lse (N); losses[i] = lse[i] − logits[i, targets[i]],
 * 0 for ignored rows. Returns the number of rows not ignored. Targets are all checked before
 * anything is written.
 */
export function crossEntropyForward(
  logits: FloatArray,
  targets: Int32Array,
  vocab: number,
  ignoreIndex: number,
  losses: FloatArray,
  lse: FloatArray,
): number {
  checkTargets(targets, vocab, ignoreIndex, 'crossEntropyForward');
  let numCounted = 0;
  for (let i = 0; i < targets.length; i++) {
    const row = i * vocab;
    const rowLse = rowLogSumExp(logits, row, vocab);
    lse[i] = rowLse;
    const t = targets[i]!;
    if (t === ignoreIndex) {
      losses[i] = 0;
    } else {
      losses[i] = rowLse - logits[row + t]!;
      numCounted++;
    }
  }
  return numCounted;
}

/** dLogits[i, :] = dLoss[i] · (softmax(logits[i]) − onehot(targets[i])); 0 for ignored rows. */
export function crossEntropyBackward(
  logits: FloatArray, // (N, V)
  targets: Int32Array, // (N)
  vocab: number,
  ignoreIndex: number,
  lse: FloatArray, // (N)
  dLoss: FloatArray, // (N)
  dLogits: FloatArray, // (N, V)
): void {
  checkTargets(targets, vocab, ignoreIndex, 'crossEntropyBackward');
  for (let i = 0; i < targets.length; i++) {
    const row = i * vocab;
    const t = targets[i]!;
    if (t === ignoreIndex) {
      for (let c = 0; c < vocab; c++) dLogits[row + c] = 0;
      continue;
    }
    const g = dLoss[i]!;
    const rowLse = lse[i]!;
    for (let c = 0; c < vocab; c++) {
      const p = Math.exp(logits[row + c]! - rowLse);
      dLogits[row + c] = g * (c === t ? p - 1 : p);
    }
  }
}

/** out = max(z, 0) − z·t + log(1 + exp(−|z|)), elementwise.  z, t, out (N). */
export function bceWithLogitsForward(z: FloatArray, t: FloatArray, out: FloatArray): void {
  for (let i = 0; i < z.length; i++) {
    const zi = z[i]!;
    out[i] = Math.max(zi, 0) - zi * t[i]! + Math.log1p(Math.exp(-Math.abs(zi)));
  }
}

/** dZ = (sigmoid(z) − t) · dOut;  dT = −z · dOut.  All (N). */
export function bceWithLogitsBackward(
  z: FloatArray,
  t: FloatArray,
  dOut: FloatArray,
  dZ: FloatArray,
  dT: FloatArray,
): void {
  for (let i = 0; i < z.length; i++) {
    const zi = z[i]!;
    const d = dOut[i]!;
    dZ[i] = (sigmoid(zi) - t[i]!) * d;
    dT[i] = -zi * d;
  }
}
