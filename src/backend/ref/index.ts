/**
 * The TypeScript reference backend: the readable specification of every kernel, and the
 * portable path where the native addon is absent. Works on Float32Array and Float64Array alike;
 * run on Float64Array it is the float64 reference of the conformance suite.
 *
 * Files by theme: gemm, attention, layers (rope, rmsnorm, swiglu, gather/scatter), losses,
 * rows (softmax, logsumexp, top-k), pointwise (unary, elementwise, reductions), optim (AdamW),
 * special (erf, sigmoid).
 */
import { ArgumentError } from '../../errors.js';
import type { Backend, BackendInfo, GemmProvider } from '../backend.js';
import { attentionBackward, attentionForward, attentionPaged } from './attention.js';
import { decodeLayer } from './decode.js';
import { gemm, gemmPacked, packWeight } from './gemm.js';
import { gatherRows, rmsnormBackward, rmsnormForward, rope, scatterAddRows, swigluBackward, swigluForward } from './layers.js';
import { bceWithLogitsBackward, bceWithLogitsForward, crossEntropyBackward, crossEntropyForward } from './losses.js';
import { add, axpy, fill, mul, rowDot, scale, scaleRows, sum, sumCols, sumRows, sumSquares, unary, unaryBackward } from './pointwise.js';
import { logsumexpRows, logsumexpRowsBackward, softmaxRows, softmaxRowsBackward, topkRows } from './rows.js';
import { adamwStep } from './optim.js';

const GEMM_PROVIDERS: readonly GemmProvider[] = Object.freeze(['typescript']);

export function createRefBackend(): Backend {
  return {
    name: 'ref',
    info(): BackendInfo {
      return { backend: 'ref', gemmProvider: 'typescript', gemmProviders: GEMM_PROVIDERS, threads: 1, simd: 'none' };
    },
    setGemmProvider(provider: GemmProvider): void {
      if (provider !== 'typescript') {
        throw new ArgumentError(`ref backend: gemm provider '${String(provider)}' unavailable, expected 'typescript'`);
      }
    },
    setNumThreads(n: number): void {
      if (n !== 1) throw new ArgumentError(`ref backend: threads = ${n}, expected 1 (ref is single-threaded)`);
    },
    gemm,
    packWeight,
    gemmPacked,
    decodeLayer,
    attentionForward,
    attentionBackward,
    attentionPaged,
    rope,
    rmsnormForward,
    rmsnormBackward,
    swigluForward,
    swigluBackward,
    gatherRows,
    scatterAddRows,
    crossEntropyForward,
    crossEntropyBackward,
    bceWithLogitsForward,
    bceWithLogitsBackward,
    unary,
    unaryBackward,
    softmaxRows,
    softmaxRowsBackward,
    logsumexpRows,
    logsumexpRowsBackward,
    topkRows,
    sum,
    sumSquares,
    sumRows,
    sumCols,
    scaleRows,
    rowDot,
    add,
    mul,
    scale,
    axpy,
    fill,
    adamwStep,
  };
}
