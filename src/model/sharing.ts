/**
 * Parameter sharing (MOR_SPEC §2): which unique layer each unrolled layer position uses.
 *
 *   L = 8 unrolled positions, Nr = 3 (middle strategies: first and last unique, K = 2):
 *
 *   position        0   1   2   3   4   5   6   7
 *   vanilla         0   1   2   3   4   5   6   7
 *   middle_cycle    0   1   2   1   2   1   2   3     block (1,2) applied 3 times
 *   middle_sequence 0   1   1   1   2   2   2   3
 *
 *   L = 6, Nr = 3, K = 2:   cycle 0 1 0 1 0 1      sequence 0 0 0 1 1 1
 *
 * Sharing is by identity: the model holds one Tensor per unique layer and passes it at every
 * position that uses it, so autograd sums the gradients of all uses.
 */
import type { ModelConfig } from './config.js';

export interface LayerPlan {
  /** (L) unique layer index used at each unrolled position. */
  readonly uniqueOf: Int32Array;
  /** (L) recursion index (0-based) of each unrolled position; -1 for the unique first/last layer. */
  readonly recursionOf: Int32Array;
  /** Number of unique layers stored. */
  readonly numUnique: number;
  /** K: layers in the shared block (L for a vanilla model). */
  readonly blockSize: number;
  /** Whether position 0 and L−1 are unique layers outside the recursion (middle strategies). */
  readonly hasUniqueEnds: boolean;
  /**
   * The unrolled positions each depth step runs, in order (the unit of adaptive depth: routing,
   * early exit and depth-wise batching step through these):
   *   cycle / middle_cycle      Nr steps, step r = the K block positions of recursion r
   *   sequence / middle_sequence one step, the whole middle in unrolled order (a recursion there
   *                             is not a contiguous stretch of the stack: layer i repeats Nr times)
   *   vanilla                   one step of all L layers
   * The unique first/last layers of the middle strategies are in no step.
   */
  readonly depthSteps: readonly Int32Array[];
}

export function layerPlan(c: ModelConfig): LayerPlan {
  const L = c.num_hidden_layers;
  const uniqueOf = new Int32Array(L);
  const recursionOf = new Int32Array(L);
  const rec = c.recursion;
  if (rec === null) {
    for (let p = 0; p < L; p++) uniqueOf[p] = p;
    return { uniqueOf, recursionOf, numUnique: L, blockSize: L, hasUniqueEnds: false, depthSteps: [Int32Array.from(uniqueOf)] };
  }
  const nr = rec.num_recursions;
  const middle = rec.sharing === 'middle_cycle' || rec.sharing === 'middle_sequence';
  const offset = middle ? 1 : 0;
  const K = (L - 2 * offset) / nr;
  for (let p = 0; p < L; p++) {
    if (middle && (p === 0 || p === L - 1)) {
      uniqueOf[p] = p === 0 ? 0 : K + 1;
      recursionOf[p] = -1;
      continue;
    }
    const q = p - offset; // position inside the recursive part
    if (rec.sharing === 'cycle' || rec.sharing === 'middle_cycle') {
      uniqueOf[p] = offset + (q % K);
      recursionOf[p] = Math.floor(q / K);
    } else {
      // sequence: each unique layer repeats Nr times in a row; recursion r is the r-th repeat.
      uniqueOf[p] = offset + Math.floor(q / nr);
      recursionOf[p] = q % nr;
    }
  }
  const cyclic = rec.sharing === 'cycle' || rec.sharing === 'middle_cycle';
  const depthSteps = cyclic
    ? Array.from({ length: nr }, (_, r) => Int32Array.from({ length: K }, (_, j) => offset + r * K + j))
    : [Int32Array.from({ length: K * nr }, (_, q) => offset + q)];
  return { uniqueOf, recursionOf, numUnique: K + 2 * offset, blockSize: K, hasUniqueEnds: middle, depthSteps };
}
