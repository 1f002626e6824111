/**
 * Kernel conformance: every kernel, on every backend that loads, run on Float32Array inputs and
 * compared with the ref backend run on Float64Array copies of the same inputs (the float64
 * reference). Inputs are seeded random (never zero, never all equal, odd sizes), and already
 * float32-representable, so both runs see identical values. The metric is normwise:
 *   err = max|got − ref| / max(max|ref|, tiny)
 * Sizes run from 1 to past the native backend's threading thresholds (GEMM 300x260x520, attention
 * over 600 rows, 100k-element pointwise kernels), so its threaded paths are compared too. A few
 * cases whose float32 arithmetic is the contract (rope at large positions, correctly rounded
 * add/mul/scale) compare with the ref backend run in float32 instead.
 * A second group of hand-computed cases checks the specification itself, not just agreement.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type {
  AttentionLayout,
  Backend,
  FloatArray,
  GemmArgs,
  GemmProvider,
  PagedAttentionLayout,
  UnaryOp,
} from '../src/backend/index.js';
import { backendVariantsUnderTest, refBackend } from './helpers/backends.js';
import { Rng, randomFloats, randomInts, uniformFloats } from './helpers/rng.js';
import { F32, F64, assertClose, assertScalarClose } from './helpers/numeric.js';
import type { Dtype } from './helpers/numeric.js';
import {
  HEAD_CONFIGS,
  causalSequences,
  causalSubset,
  decodeAfterCache,
  repeatedKeyPositions,
  separateKeys,
} from './helpers/attention-layouts.js';
import { DECODE_LAYOUT_KINDS, decodeLayerLayout, type AttentionCase, type Heads } from './helpers/attention-layouts.js';

/**
 * Tolerances (relative error, float32 backend vs float64 reference). 0 means bit-exact.
 * rope is loose on purpose: for Float32Array the angles follow PyTorch's float32 arithmetic
 * (pos · inv_freq rounded to float32, ~pos·6e-8 rad off the exact angle; positions < 512 here).
 */
const TOL = {
  gemm: 1e-5,
  gemmLongK: 4e-5, // k = 704
  gemmPacked: 4e-5,
  attentionForward: 2e-5,
  attentionBackward: 1e-4,
  attentionPaged: 2e-5,
  decodeLayer: 1e-4, // RoPE's float32 angles (see rope)
  rope: 1e-4,
  ropeFloat32: 1e-5, // vs ref in float32: the same float32 angles, cos/sin rounding apart
  rmsnormForward: 1e-5,
  rmsnormBackward: 3e-5,
  swigluForward: 1e-5,
  swigluBackward: 1e-5,
  gatherRows: 0,
  scatterAddRows: 1e-6,
  crossEntropyForward: 1e-5,
  crossEntropyBackward: 1e-5,
  bceWithLogitsForward: 1e-5,
  bceWithLogitsBackward: 1e-5,
  unary: 1e-5,
  unaryBackward: 1e-5,
  softmaxRows: 1e-5,
  softmaxRowsBackward: 3e-5,
  logsumexpRows: 1e-5,
  logsumexpRowsBackward: 1e-5,
  topkRows: 0,
  sum: 1e-6, // accumulated in float64 by contract
  sumSquares: 1e-6,
  sumRows: 1e-5,
  sumCols: 1e-5,
  scaleRows: 1e-6,
  rowDot: 1e-5,
  elementwise: 1e-6, // add, mul, scale, axpy
  elementwiseExact: 0, // add, mul, scale vs ref in float32: one correctly rounded operation each
  fill: 0,
  adamwStep: 1e-5, // after 5 steps
} as const;

type Kernel = keyof typeof TOL;
type Outputs = Record<string, FloatArray | Int32Array | number>;

/** A conformance case: run(backend, dtype) converts its inputs to dtype, runs, returns outputs. */
interface Case {
  kernel: Kernel;
  label: string;
  run: (be: Backend, dt: Dtype) => Outputs;
  /** The dtype the ref backend runs in for the expected outputs (F64 unless stated). */
  refDtype: Dtype;
}

const cases: Case[] = [];
const addCase = (kernel: Kernel, label: string, run: Case['run'], refDtype: Dtype = F64): void => {
  cases.push({ kernel, label, run, refDtype });
};
const rng = new Rng(20240611);
/** An output buffer full of NaN: a kernel must write every element. */
const nans = (dt: Dtype, n: number): FloatArray => dt.from(new Float64Array(n).fill(NaN));

// ---- gemm -----------------------------------------------------------------------------------

const TRANS: readonly [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

function gemmCase(kernel: Kernel, args: GemmArgs, cInit: 'random' | 'nan' = 'random'): void {
  const batch = args.batch ?? 1;
  const { m, n, k } = args;
  const strideA = args.strideA ?? m * k;
  const strideB = args.strideB ?? k * n;
  const strideC = args.strideC ?? m * n;
  const a = randomFloats(rng, strideA * (batch - 1) + m * k);
  const b = randomFloats(rng, strideB * (batch - 1) + k * n);
  const cLen = strideC * (batch - 1) + m * n;
  const c0 = cInit === 'nan' ? new Float64Array(cLen).fill(NaN) : randomFloats(rng, cLen);
  const label =
    `m=${m} n=${n} k=${k} ${args.transA ? 'A^T' : 'A'}·${args.transB ? 'B^T' : 'B'} ` +
    `alpha=${args.alpha} beta=${args.beta}` +
    (batch > 1 ? ` batch=${batch} strides=${strideA}/${strideB}/${strideC}` : '') +
    (cInit === 'nan' ? ' (C holds NaN)' : '');
  addCase(kernel, label, (be, dt) => {
    const c = dt.from(c0);
    be.gemm(args, dt.from(a), dt.from(b), c);
    return { c };
  });
}

for (const [m, n, k] of [
  [1, 1, 1],
  [1, 7, 33],
  [7, 1, 33],
  [33, 7, 1],
  [7, 33, 129],
  [129, 33, 7],
] as const) {
  for (const [transA, transB] of TRANS) gemmCase('gemm', { transA, transB, m, n, k, alpha: 1, beta: 0 });
}
for (const [transA, transB] of TRANS) {
  gemmCase('gemm', { transA, transB, m: 7, n: 33, k: 129, alpha: 0.75, beta: -0.5 });
  gemmCase('gemm', { transA, transB, m: 33, n: 7, k: 17, alpha: -1.5, beta: 1 });
  gemmCase('gemmLongK', { transA, transB, m: 7, n: 33, k: 704, alpha: 1, beta: 0 });
  // decoding batches: 9–32 rows run the skinny kernel in chunks of 8 rows
  gemmCase('gemm', { transA, transB, m: 13, n: 37, k: 65, alpha: 1, beta: 0 });
  gemmCase('gemm', { transA, transB, m: 32, n: 40, k: 33, alpha: 0.5, beta: 0.25 });
}
gemmCase('gemm', { transA: false, transB: false, m: 7, n: 33, k: 17, alpha: 2, beta: 0 }, 'nan');

/**
 * Every (m, n) in {1, 7, 33, 129}² with k in {1, 33, 129}, and the sizes that take the native
 * threaded paths (a large square, tall and wide skinny products): one case per shape, with the
 * four transposes, beta 0 (C holds NaN, which must not be read) and beta 0.5.
 */
function gemmShapeCase(kernel: Kernel, m: number, n: number, k: number): void {
  const a = randomFloats(rng, m * k);
  const b = randomFloats(rng, k * n);
  const c0 = randomFloats(rng, m * n);
  addCase(kernel, `m=${m} n=${n} k=${k} all transposes, alpha=1.5, beta=0 (C holds NaN) and 0.5`, (be, dt) => {
    const out: Outputs = {};
    for (const [transA, transB] of TRANS) {
      for (const beta of [0, 0.5]) {
        const c = beta === 0 ? nans(dt, m * n) : dt.from(c0);
        be.gemm({ transA, transB, m, n, k, alpha: 1.5, beta }, dt.from(a), dt.from(b), c);
        out[`c ${transA ? 'A^T' : 'A'}·${transB ? 'B^T' : 'B'} beta=${beta}`] = c;
      }
    }
    return out;
  });
}
for (const m of [1, 7, 33, 129]) for (const n of [1, 7, 33, 129]) for (const k of [1, 33, 129]) gemmShapeCase('gemm', m, n, k);
for (const [m, n, k] of [
  [9, 300, 40],
  [300, 9, 40],
  [2, 1000, 64],
  [20, 2000, 64],
] as const) {
  gemmShapeCase('gemm', m, n, k);
}
gemmShapeCase('gemmLongK', 300, 260, 520);
// Packed weights (inference): c = a·Wᵀ (+ c). The float64 reference is gemm with transB, the
// definition gemmPacked promises. Row counts cross the kernel's row tiles (1..12 rows, then
// near-equal tiles), columns its 32-wide panels (tails), k the long-k case.
function gemmPackedCase(m: number, n: number, k: number, accumulate: boolean): void {
  const a = randomFloats(rng, m * k);
  const w = randomFloats(rng, n * k);
  const c0 = randomFloats(rng, m * n);
  addCase('gemmPacked', `m=${m} n=${n} k=${k}${accumulate ? ' accumulate' : ''}`, (be, dt) => {
    const c = dt.from(c0);
    if (dt.name === 'f64') {
      be.gemm({ transA: false, transB: true, m, n, k, alpha: 1, beta: accumulate ? 1 : 0 }, dt.from(a), dt.from(w), c);
    } else {
      be.gemmPacked(m, Float32Array.from(a), be.packWeight(Float32Array.from(w), n, k), c as Float32Array, accumulate);
    }
    return { c };
  });
}
for (const [m, n, k] of [
  [1, 1, 1],
  [1, 33, 17],
  [5, 64, 40],
  [12, 31, 65],
  [13, 70, 129],
  [32, 96, 33],
  [45, 7, 704],
  [130, 100, 19],
] as const) {
  gemmPackedCase(m, n, k, false);
}
gemmPackedCase(9, 40, 30, true);
gemmPackedCase(33, 65, 12, true);
gemmPackedCase(1, 70, 33, true); // one row: the whole-panel path, three panels, a tail
gemmPackedCase(32, 256, 255, true); // two threads, an odd k (rows read in place, 255 floats apart)
gemmPackedCase(1, 200, 257, true); // one row over a 200 KB weight: two threads by its bytes, a tail panel

// Batches: default strides, broadcast A or B (stride 0), and C with gaps between matrices.
gemmCase('gemm', { transA: false, transB: true, m: 7, n: 5, k: 33, alpha: 1, beta: 0, batch: 3 });
gemmCase('gemm', { transA: false, transB: false, m: 7, n: 5, k: 33, alpha: 1, beta: 0.5, batch: 4, strideA: 0 });
gemmCase('gemm', { transA: true, transB: false, m: 7, n: 5, k: 33, alpha: 1, beta: 0, batch: 3, strideB: 0 });
gemmCase('gemm', {
  transA: true,
  transB: true,
  m: 7,
  n: 5,
  k: 33,
  alpha: 0.5,
  beta: 2,
  batch: 3,
  strideA: 7 * 33 + 4,
  strideB: 5 * 33 + 1,
  strideC: 7 * 5 + 3,
});

// Batches with a broadcast A (stride 0) and gaps between the C matrices, up to the threaded sizes.
for (const [m, n, k, batch] of [
  [7, 33, 5, 3],
  [16, 16, 16, 12],
  [64, 64, 64, 4],
] as const) {
  gemmCase('gemm', { transA: false, transB: true, m, n, k, alpha: 1, beta: 1, batch, strideA: 0, strideB: k * n, strideC: m * n + 3 });
}

// ---- attention --------------------------------------------------------------------------------

function attentionCases(): AttentionCase[] {
  const out: AttentionCase[] = [];
  for (const heads of HEAD_CONFIGS) {
    out.push(causalSequences(heads, [7, 33]));
    out.push(causalSubset(heads, rng, [{ seqLen: 50, count: 13 }, { seqLen: 20, count: 5 }]));
    out.push(separateKeys(heads));
  }
  // Edge shapes: one-token sequences, head dims 1, 3, 64 and 129, GQA up to 3, long sequences.
  const h = (numHeads: number, numKvHeads: number, headDim: number): Heads => ({ numHeads, numKvHeads, headDim });
  out.push(causalSequences(h(2, 2, 8), [1, 1]));
  out.push(causalSequences(h(2, 1, 7), [33, 33]));
  out.push(causalSequences(h(3, 1, 64), [129, 129]));
  out.push(causalSequences(h(3, 3, 1), [100, 100]));
  out.push(causalSubset(h(6, 3, 33), rng, [{ seqLen: 200, count: 70 }, { seqLen: 200, count: 70 }]));
  out.push(causalSubset(h(4, 2, 16), rng, [{ seqLen: 20, count: 7 }, { seqLen: 20, count: 7 }]));
  out.push(causalSubset(h(4, 2, 3), rng, [{ seqLen: 15, count: 5 }, { seqLen: 15, count: 5 }]));
  out.push(repeatedKeyPositions(h(4, 4, 64), rng, 40));
  out.push(repeatedKeyPositions(h(6, 2, 129), rng, 33));
  for (const [H, KVH, HD, numNew] of [
    [8, 2, 64, 1],
    [6, 3, 32, 3],
    [3, 1, 16, 2],
    [1, 1, 48, 1],
    [2, 2, 64, 5],
  ] as const) {
    out.push(decodeAfterCache(h(H, KVH, HD), numNew));
  }
  // Three sequences of 200 tokens: the native kernels' threaded paths (by row, by head).
  out.push(causalSequences(h(4, 1, 32), [200, 200, 200]));
  out.push(causalSequences(h(8, 8, 32), [200, 200, 200]));
  return out;
}

for (const ac of attentionCases()) {
  const { numHeads: H, numKvHeads: KVH, headDim: HD } = ac.layout;
  const q = randomFloats(rng, ac.nq * H * HD, 1.5);
  const k = randomFloats(rng, ac.nk * KVH * HD, 1.5);
  const v = randomFloats(rng, ac.nk * KVH * HD);
  const dOut = randomFloats(rng, ac.nq * H * HD);
  const label = `${ac.mode} Nq=${ac.nq} Nk=${ac.nk} H=${H} KVH=${KVH} HD=${HD}`;
  const forward = (be: Backend, dt: Dtype, layout: AttentionLayout) => {
    const out = nans(dt, ac.nq * H * HD);
    const lse = nans(dt, ac.nq * H);
    be.attentionForward(layout, dt.from(q), dt.from(k), dt.from(v), out, lse);
    return { out, lse };
  };
  addCase('attentionForward', label, (be, dt) => forward(be, dt, ac.layout));
  addCase('attentionBackward', label, (be, dt) => {
    const { out, lse } = forward(be, dt, ac.layout);
    const dQ = nans(dt, q.length);
    const dK = nans(dt, k.length);
    const dV = nans(dt, v.length);
    be.attentionBackward(ac.layout, dt.from(q), dt.from(k), dt.from(v), out, lse, dt.from(dOut), dQ, dK, dV);
    return { dQ, dK, dV };
  });
}

// ---- attention over a paged KV pool -------------------------------------------------------------

/** A paged pool, its block tables and the query rows reading it (see Backend.attentionPaged). */
interface PagedCase {
  label: string;
  layout: PagedAttentionLayout;
  nq: number;
  numSlots: number;
  /** Slot rows of each query row's stream, in stream order (for the contiguous cross-check). */
  streamSlots: number[][];
}

/** Query row i reads stream `stream` at position qPos. */
interface PagedQuery {
  stream: number;
  qPos: number;
}

/** n strictly increasing positions from `start`, with random gaps of 0–2. */
function gappedPositions(r: Rng, n: number, start: number): number[] {
  const out: number[] = [];
  let p = start;
  for (let j = 0; j < n; j++) {
    out.push(p);
    p += 1 + r.int(0, 3);
  }
  return out;
}

/**
 * Lays out streams (slot positions, in stream order) in a pool of shuffled blocks plus two spare
 * blocks, so block tables are non-contiguous and out of order. Unused slots (spare blocks, the rest
 * of a partly filled last block) hold position 0: visible to every query, so a kernel reading past
 * a stream's end would not match. blockTables lists the streams' tables in reverse order, each
 * followed by a valid block id the stream never reads.
 */
function buildPaged(
  r: Rng,
  heads: Heads,
  blockSize: number,
  streamPos: number[][],
  queries: PagedQuery[],
  label: string,
): PagedCase {
  const blocksPer = streamPos.map((p) => Math.ceil(p.length / blockSize));
  const numBlocks = blocksPer.reduce((a, b) => a + b, 0) + 2;
  const perm = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) {
    const j = r.int(0, i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const numSlots = numBlocks * blockSize;
  const posPool = new Int32Array(numSlots);
  const tables: number[][] = [];
  const slotsOf: number[][] = [];
  let next = 0;
  streamPos.forEach((pos) => {
    const table: number[] = [];
    const slots: number[] = [];
    for (let j = 0; j < pos.length; j++) {
      if (j % blockSize === 0) table.push(perm[next++]!);
      const slot = table[table.length - 1]! * blockSize + (j % blockSize);
      posPool[slot] = pos[j]!;
      slots.push(slot);
    }
    tables.push(table);
    slotsOf.push(slots);
  });
  const offsets: number[] = [];
  const blockTables: number[] = [];
  for (let s = streamPos.length - 1; s >= 0; s--) {
    offsets[s] = blockTables.length;
    blockTables.push(...tables[s]!, perm[numBlocks - 1]!);
  }
  return {
    label: `${label} H=${heads.numHeads} KVH=${heads.numKvHeads} HD=${heads.headDim} blockSize=${blockSize}`,
    nq: queries.length,
    numSlots,
    streamSlots: queries.map((q) => slotsOf[q.stream]!),
    layout: {
      ...heads,
      scale: 1 / Math.sqrt(heads.headDim),
      blockSize,
      qPos: Int32Array.from(queries.map((q) => q.qPos)),
      posPool,
      streams: Int32Array.from(queries.flatMap((q) => [offsets[q.stream]!, streamPos[q.stream]!.length])),
      blockTables: Int32Array.from(blockTables),
    },
  };
}

/**
 * Streams of lengths 1, 23 (ends mid-block for blockSize 4 and 16), 37 (its last 5 slots lie past
 * the query: invisible), 9 (all past the query: sees nothing), 0 and 70 (several chunks); stream
 * 1 is read by two queries at different positions.
 */
function mixedStreams(r: Rng, heads: Heads, blockSize: number): PagedCase {
  const pos = [1, 23, 37, 9, 0, 70].map((n) => gappedPositions(r, n, 5 + r.int(0, 4)));
  const last = (s: number): number => pos[s]![pos[s]!.length - 1]!;
  return buildPaged(
    r,
    heads,
    blockSize,
    pos,
    [
      { stream: 0, qPos: pos[0]![0]! },
      { stream: 1, qPos: last(1) },
      { stream: 2, qPos: pos[2]![31]! },
      { stream: 1, qPos: pos[1]![10]! },
      { stream: 3, qPos: pos[3]![0]! - 1 },
      { stream: 4, qPos: 100 },
      { stream: 5, qPos: last(5) + 3 },
    ],
    'mixed streams',
  );
}

const pagedRng = new Rng(777); // its own generator: the other cases keep their data
const DECODE_HEADS: Heads = { numHeads: 4, numKvHeads: 2, headDim: 64 };
const pagedCases: PagedCase[] = [];
for (const heads of HEAD_CONFIGS) {
  for (const blockSize of [1, 4, 16]) pagedCases.push(mixedStreams(pagedRng, heads, blockSize));
}
{
  // Decoding shapes (HD 64): 8 streams of 1..300 slots; one query on a 1000-slot stream (the
  // native kernel splits a long stream across threads when there are few queries), at its end and
  // at slot 700 (the last part of the stream then sees nothing).
  const lens = [300, 1, 17, 64, 129, 250, 33, 200];
  const pos = lens.map((n) => gappedPositions(pagedRng, n, 0));
  pagedCases.push(
    buildPaged(pagedRng, DECODE_HEADS, 16, pos, pos.map((p, s) => ({ stream: s, qPos: p[p.length - 1]! })), 'decode batch'),
  );
  const long = [gappedPositions(pagedRng, 1000, 0)];
  pagedCases.push(buildPaged(pagedRng, DECODE_HEADS, 16, long, [{ stream: 0, qPos: long[0]![999]! }], 'long stream'));
  pagedCases.push(buildPaged(pagedRng, DECODE_HEADS, 16, long, [{ stream: 0, qPos: long[0]![700]! }], 'long stream, prefix'));
  // one query on a 100-slot stream: split by the bytes it reads (three parts of 33-34 slots)
  const short = [gappedPositions(pagedRng, 100, 0)];
  pagedCases.push(buildPaged(pagedRng, DECODE_HEADS, 16, short, [{ stream: 0, qPos: short[0]![99]! }], 'short stream, split'));
}

/** Random q, kPool, vPool for a paged case (float32-representable). */
function pagedData(pc: PagedCase, r: Rng): { q: Float64Array; kPool: Float64Array; vPool: Float64Array } {
  const { numHeads: H, numKvHeads: KVH, headDim: HD } = pc.layout;
  return {
    q: randomFloats(r, pc.nq * H * HD, 1.5),
    kPool: randomFloats(r, pc.numSlots * KVH * HD, 1.5),
    vPool: randomFloats(r, pc.numSlots * KVH * HD),
  };
}

for (const pc of pagedCases) {
  const { q, kPool, vPool } = pagedData(pc, pagedRng);
  addCase('attentionPaged', `${pc.label} Nq=${pc.nq} slots=${pc.numSlots}`, (be, dt) => {
    const out = dt.from(new Float64Array(q.length).fill(NaN)); // every element must be written
    be.attentionPaged(pc.layout, dt.from(q), dt.from(kPool), dt.from(vPool), out);
    return { out };
  });
}

// ---- one fused decoder layer of decoding ---------------------------------------------------------
// The float64 reference is the layer composed from the primitive reference kernels (the
// definition in Backend.decodeLayer); float32 runs go through each backend's fused kernel with
// packed weights. Rows: two prompt rows of sequence A appending at positions 6, 7; one row of B
// appending at 2; and two rows that store nothing (kvSlots −1, as under KV sharing) reading A and B;
// then the five rows as a fresh stream's prefill, and the rows of the first storing nothing (see
// decodeLayerLayout). Head dims 6 and 8: q's 24 or 32 columns end inside or at the end of a packed
// weight panel (32 columns), which the native kernel's product for q alone must respect.
for (const kind of DECODE_LAYOUT_KINDS)
for (const HD of [6, 8]) {
  const D = 24, I = 40, H = 4, KVH = 2, BS = 4, numBlocks = 8;
  const qw = H * HD, kvw = KVH * HD;
  const N = 5;
  const drng = new Rng(515);
  const h = randomFloats(drng, N * D);
  const inputNorm = uniformFloats(drng, D, 0.5, 1.5);
  const postNorm = uniformFloats(drng, D, 0.5, 1.5);
  const wq = randomFloats(drng, qw * D, 0.3);
  const wk = randomFloats(drng, kvw * D, 0.3);
  const wv = randomFloats(drng, kvw * D, 0.3);
  const wo = randomFloats(drng, D * qw, 0.3);
  const wg = randomFloats(drng, I * D, 0.3);
  const wu = randomFloats(drng, I * D, 0.3);
  const wd = randomFloats(drng, D * I, 0.3);
  const kPool0 = randomFloats(drng, numBlocks * BS * kvw);
  const vPool0 = randomFloats(drng, numBlocks * BS * kvw);
  const { layout, kvSlots } = decodeLayerLayout({ numHeads: H, numKvHeads: KVH, headDim: HD }, numBlocks, kind); // BS = 4
  const eps = 1e-5;
  const theta = 10000;
  const cat = (...xs: Float64Array[]): Float64Array => {
    const out = new Float64Array(xs.reduce((a, x) => a + x.length, 0));
    let at = 0;
    for (const x of xs) {
      out.set(x, at);
      at += x.length;
    }
    return out;
  };
  addCase('decodeLayer', `N=${N} D=${D} I=${I} H=${H} KVH=${KVH} HD=${HD}, ${kind === 'mixed' ? 'writes and no-write rows' : kind}`, (be, dt) => {
    const kPool = dt.from(kPool0);
    const vPool = dt.from(vPool0);
    if (dt.name === 'f32') {
      const pack = (w: Float64Array, n: number, k: number) => be.packWeight(Float32Array.from(w), n, k);
      const out = new Float32Array(N * D).fill(NaN);
      be.decodeLayer(
        { eps, ropeTheta: theta, attention: layout, kvSlots },
        Float32Array.from(h),
        {
          inputNorm: Float32Array.from(inputNorm),
          postNorm: Float32Array.from(postNorm),
          qkv: pack(cat(wq, wk, wv), qw + 2 * kvw, D),
          o: pack(wo, D, qw),
          gateUp: pack(cat(wg, wu), 2 * I, D),
          down: pack(wd, D, I),
        },
        kPool as Float32Array,
        vPool as Float32Array,
        out,
      );
      return { out, kPool, vPool };
    }
    // float64: the composition of primitive kernels
    const lin = (x: FloatArray, w: Float64Array, n: number, k: number, out: FloatArray, beta: number) =>
      be.gemm({ transA: false, transB: true, m: N, n, k, alpha: 1, beta }, x, dt.from(w), out);
    const x = dt.zeros(N * D);
    be.rmsnormForward(dt.from(h), dt.from(inputNorm), eps, x, dt.zeros(N));
    const q = dt.zeros(N * qw);
    const k = dt.zeros(N * kvw);
    const v = dt.zeros(N * kvw);
    lin(x, wq, qw, D, q, 0);
    lin(x, wk, kvw, D, k, 0);
    lin(x, wv, kvw, D, v, 0);
    be.rope(q, layout.qPos, H, HD, theta, false, q);
    be.rope(k, layout.qPos, KVH, HD, theta, false, k);
    kvSlots.forEach((slot, i) => {
      if (slot < 0) return;
      kPool.set(k.subarray(i * kvw, (i + 1) * kvw), slot * kvw);
      vPool.set(v.subarray(i * kvw, (i + 1) * kvw), slot * kvw);
    });
    const a = dt.zeros(N * qw);
    be.attentionPaged(layout, q, kPool, vPool, a);
    const out = dt.from(h);
    lin(a, wo, D, qw, out, 1);
    be.rmsnormForward(dt.from(out), dt.from(postNorm), eps, x, dt.zeros(N));
    const g = dt.zeros(N * I);
    const u = dt.zeros(N * I);
    lin(x, wg, I, D, g, 0);
    lin(x, wu, I, D, u, 0);
    const m = dt.zeros(N * I);
    be.swigluForward(g, u, m);
    lin(m, wd, D, I, out, 1);
    return { out, kPool, vPool };
  });
}

// ---- layers -----------------------------------------------------------------------------------

for (const [N, nHeads, HD] of [
  [1, 1, 2],
  [33, 3, 16],
  [7, 2, 64],
] as const) {
  const x = randomFloats(rng, N * nHeads * HD);
  const pos = randomInts(rng, N, 0, 512);
  // Positions up to 70000, past the native backend's cached angle table. At such positions the
  // float32 angle convention is the contract (see TOL.rope), so the reference is ref in float32.
  const far = Int32Array.from({ length: N }, (_, i) => (i === 0 ? 70000 : (i * 37) % 5000));
  addCase('ropeFloat32', `N=${N} heads=${nHeads} HD=${HD} positions up to 70000, forward and inverse in place`, (be, dt) => {
    const out = dt.zeros(x.length);
    be.rope(dt.from(x), far, nHeads, HD, 10000, false, out);
    const back = dt.from(out);
    be.rope(back, far, nHeads, HD, 10000, true, back);
    return { out, back };
  }, F32);
  for (const inverse of [false, true]) {
    addCase('rope', `N=${N} heads=${nHeads} HD=${HD} inverse=${inverse}`, (be, dt) => {
      const out = dt.zeros(x.length);
      be.rope(dt.from(x), pos, nHeads, HD, 10000, inverse, out);
      return { out };
    });
  }
  addCase('rope', `N=${N} heads=${nHeads} HD=${HD} in place, theta=500000`, (be, dt) => {
    const xy = dt.from(x);
    be.rope(xy, pos, nHeads, HD, 500000, false, xy);
    return { out: xy };
  });
}

for (const [N, D] of [
  [1, 7],
  [33, 129],
  [600, 256],
] as const) {
  const x = randomFloats(rng, N * D, 2);
  const w = randomFloats(rng, D);
  const dOut = randomFloats(rng, N * D);
  const forward = (be: Backend, dt: Dtype) => {
    const out = dt.zeros(N * D);
    const rstd = dt.zeros(N);
    be.rmsnormForward(dt.from(x), dt.from(w), 1e-5, out, rstd);
    return { out, rstd };
  };
  addCase('rmsnormForward', `N=${N} D=${D}`, forward);
  addCase('rmsnormBackward', `N=${N} D=${D}`, (be, dt) => {
    const { rstd } = forward(be, dt);
    const dX = nans(dt, N * D);
    const dW = nans(dt, D);
    be.rmsnormBackward(dt.from(x), dt.from(w), rstd, dt.from(dOut), dX, dW);
    return { dX, dW };
  });
}

for (const n of [1, 33 * 129, 100_003]) {
  const gate = randomFloats(rng, n, 4);
  const up = randomFloats(rng, n);
  const dOut = randomFloats(rng, n);
  addCase('swigluForward', `N·I=${n}`, (be, dt) => {
    const out = dt.zeros(n);
    be.swigluForward(dt.from(gate), dt.from(up), out);
    return { out };
  });
  addCase('swigluBackward', `N·I=${n}`, (be, dt) => {
    const dGate = dt.zeros(n);
    const dUp = dt.zeros(n);
    be.swigluBackward(dt.from(gate), dt.from(up), dt.from(dOut), dGate, dUp);
    return { dGate, dUp };
  });
}

for (const [R, C, N] of [
  [1, 1, 1],
  [17, 33, 40],
  [129, 7, 7],
  [37, 129, 50],
  [37, 512, 300],
] as const) {
  const src = randomFloats(rng, R * C);
  const idx = randomInts(rng, N, 0, R); // repeats included
  if (N > 1) idx[1] = idx[0]!; // and at least one
  addCase('gatherRows', `R=${R} C=${C} N=${N}`, (be, dt) => {
    const out = dt.zeros(N * C);
    be.gatherRows(dt.from(src), idx, C, out);
    return { out };
  });
  const rows = randomFloats(rng, N * C);
  const acc0 = randomFloats(rng, R * C);
  addCase('scatterAddRows', `R=${R} C=${C} N=${N} (accumulates, repeated indices)`, (be, dt) => {
    const out = dt.from(acc0);
    be.scatterAddRows(dt.from(rows), idx, C, out);
    return { out };
  });
}

// ---- losses -----------------------------------------------------------------------------------

for (const [N, V] of [
  [1, 1],
  [1, 7],
  [33, 129],
  [7, 1000],
  [40, 1000],
] as const) {
  const logits = randomFloats(rng, N * V, 4);
  const targets = randomInts(rng, N, 0, V);
  if (N > 1) targets[1] = -100; // an ignored row
  const dLoss = randomFloats(rng, N);
  const forward = (be: Backend, dt: Dtype) => {
    const losses = dt.zeros(N);
    const lse = dt.zeros(N);
    const numCounted = be.crossEntropyForward(dt.from(logits), targets, V, -100, losses, lse);
    return { losses, lse, numCounted };
  };
  addCase('crossEntropyForward', `N=${N} V=${V}`, forward);
  addCase('crossEntropyBackward', `N=${N} V=${V}`, (be, dt) => {
    const { lse } = forward(be, dt);
    const dLogits = nans(dt, N * V);
    be.crossEntropyBackward(dt.from(logits), targets, V, -100, lse, dt.from(dLoss), dLogits);
    return { dLogits };
  });
}

for (const [n, scale] of [
  [1, 6],
  [129, 6],
  [129, 30], // large logits: the stable form matters
] as const) {
  const z = randomFloats(rng, n, scale);
  const t = uniformFloats(rng, n, 0, 1);
  const dOut = randomFloats(rng, n);
  addCase('bceWithLogitsForward', `N=${n} |z| ≤ ${scale}`, (be, dt) => {
    const out = dt.zeros(n);
    be.bceWithLogitsForward(dt.from(z), dt.from(t), out);
    return { out };
  });
  addCase('bceWithLogitsBackward', `N=${n} |z| ≤ ${scale}`, (be, dt) => {
    const dZ = dt.zeros(n);
    const dT = dt.zeros(n);
    be.bceWithLogitsBackward(dt.from(z), dt.from(t), dt.from(dOut), dZ, dT);
    return { dZ, dT };
  });
}

// ---- pointwise and row-wise -------------------------------------------------------------------

const UNARY_OPS: readonly UnaryOp[] = ['sigmoid', 'tanh', 'silu', 'gelu'];
for (const [op, n] of UNARY_OPS.flatMap((op) => [[op, 129], [op, 70_001]] as const)) {
  const x = Float64Array.from([...randomFloats(rng, n, n > 129 ? 8 : 5), -12, 12, -30, 30]);
  const dOut = randomFloats(rng, x.length);
  addCase('unary', `${op} N=${x.length}`, (be, dt) => {
    const out = dt.zeros(x.length);
    be.unary(op, dt.from(x), out);
    return { out };
  });
  addCase('unary', `${op} N=${x.length} in place`, (be, dt) => {
    const xy = dt.from(x);
    be.unary(op, xy, xy);
    return { out: xy };
  });
  addCase('unaryBackward', `${op} N=${x.length}`, (be, dt) => {
    const y = dt.zeros(x.length);
    be.unary(op, dt.from(x), y);
    const dX = dt.zeros(x.length);
    be.unaryBackward(op, dt.from(x), y, dt.from(dOut), dX);
    const dInPlace = dt.from(dOut); // dX aliasing dOut
    be.unaryBackward(op, dt.from(x), y, dInPlace, dInPlace);
    return { dX, dInPlace };
  });
}

for (const [R, C] of [
  [1, 1],
  [1, 129],
  [7, 33],
  [33, 1],
  [129, 129],
  [300, 1000],
] as const) {
  const x = randomFloats(rng, R * C, 5);
  const dOut = randomFloats(rng, R * C);
  const dRow = randomFloats(rng, R);
  const label = `R=${R} C=${C}`;
  addCase('softmaxRows', label, (be, dt) => {
    const out = dt.zeros(R * C);
    be.softmaxRows(dt.from(x), C, out);
    const inPlace = dt.from(x);
    be.softmaxRows(inPlace, C, inPlace);
    return { out, inPlace };
  });
  addCase('softmaxRowsBackward', label, (be, dt) => {
    const y = dt.zeros(R * C);
    be.softmaxRows(dt.from(x), C, y);
    const dX = dt.zeros(R * C);
    be.softmaxRowsBackward(y, dt.from(dOut), C, dX);
    const dInPlace = dt.from(dOut);
    be.softmaxRowsBackward(y, dInPlace, C, dInPlace);
    return { dX, dInPlace };
  });
  addCase('logsumexpRows', label, (be, dt) => {
    const out = dt.zeros(R);
    be.logsumexpRows(dt.from(x), C, out);
    return { out };
  });
  addCase('logsumexpRowsBackward', label, (be, dt) => {
    const lse = dt.zeros(R);
    be.logsumexpRows(dt.from(x), C, lse);
    const dX = dt.zeros(R * C);
    be.logsumexpRowsBackward(dt.from(x), lse, dt.from(dRow), C, dX);
    return { dX };
  });
}

{
  // A row of −Infinity (every key masked) has logsumexp −Infinity; so has a row of one −Infinity.
  const [R, C] = [7, 33];
  const x = randomFloats(rng, R * C, 10);
  x.fill(-Infinity, 3 * C, 4 * C);
  x[5 * C] = -Infinity;
  addCase('logsumexpRows', `R=${R} C=${C} with an all −Infinity row`, (be, dt) => {
    const out = nans(dt, R);
    be.logsumexpRows(dt.from(x), C, out);
    return { out };
  });
}

{
  // Distinct random values: the k largest of each row, in both orders.
  const [R, C, k] = [20, 129, 17];
  const x = randomFloats(rng, R * C);
  for (const order of ['value', 'index'] as const) {
    addCase('topkRows', `R=${R} C=${C} k=${k} order=${order}`, (be, dt) => {
      const indices = new Int32Array(R * k);
      const values = dt.zeros(R * k);
      be.topkRows(dt.from(x), C, k, order, indices, values);
      return { indices, values };
    });
  }
}

{
  // Values on a coarse grid so rows have many ties (ties go to the lower column index).
  const [R, C] = [7, 33];
  const x = Float64Array.from(randomInts(rng, R * C, -4, 4), (q) => q / 4);
  for (const k of [1, 5, 33]) {
    for (const order of ['value', 'index'] as const) {
      addCase('topkRows', `R=${R} C=${C} k=${k} order=${order} (ties)`, (be, dt) => {
        const indices = new Int32Array(R * k);
        const values = dt.zeros(R * k);
        be.topkRows(dt.from(x), C, k, order, indices, values);
        return { indices, values };
      });
    }
  }
}

{
  // k = 1 (greedy decoding's argmax) on rows around the vector width and vocabulary-wide ones,
  // distinct and coarse (many ties).
  for (const C of [1, 7, 16, 33, 8192]) {
    const R = 4;
    const distinct = randomFloats(rng, R * C);
    const coarse = Float64Array.from(randomInts(rng, R * C, -3, 3), (q) => q / 2);
    for (const [what, x] of [['distinct', distinct], ['ties', coarse]] as const) {
      addCase('topkRows', `R=${R} C=${C} k=1 ${what}`, (be, dt) => {
        const indices = new Int32Array(R);
        const values = dt.zeros(R);
        be.topkRows(dt.from(x), C, 1, 'value', indices, values);
        return { indices, values };
      });
    }
  }
}

for (const n of [1, 129, 10007, 300_001]) {
  const x = randomFloats(rng, n);
  addCase('sum', `N=${n}`, (be, dt) => ({ sum: be.sum(dt.from(x)) }));
  addCase('sumSquares', `N=${n}`, (be, dt) => ({ sumSquares: be.sumSquares(dt.from(x)) }));
}

for (const [R, C] of [
  [1, 1],
  [1, 7],
  [7, 1],
  [33, 129],
  [129, 7],
  [5000, 3],
  [300, 1000],
] as const) {
  const x = randomFloats(rng, R * C);
  addCase('sumRows', `R=${R} C=${C}`, (be, dt) => {
    const out = dt.zeros(C);
    be.sumRows(dt.from(x), C, out);
    return { out };
  });
  addCase('sumCols', `R=${R} C=${C}`, (be, dt) => {
    const out = dt.zeros(R);
    be.sumCols(dt.from(x), C, out);
    return { out };
  });
  const g = randomFloats(rng, R);
  const y = randomFloats(rng, R * C);
  addCase('scaleRows', `R=${R} C=${C}`, (be, dt) => {
    const out = dt.zeros(R * C);
    be.scaleRows(dt.from(x), dt.from(g), C, out);
    return { out };
  });
  addCase('rowDot', `R=${R} C=${C}`, (be, dt) => {
    const out = dt.zeros(R);
    be.rowDot(dt.from(x), dt.from(y), C, out);
    return { out };
  });
}

for (const n of [1, 129, 100_001]) {
  const a = randomFloats(rng, n);
  const b = randomFloats(rng, n);
  addCase('elementwiseExact', `add/mul/scale N=${n}, then add with all three aliased`, (be, dt) => {
    const sumOut = dt.zeros(n);
    be.add(dt.from(a), dt.from(b), sumOut);
    const prodOut = dt.zeros(n);
    be.mul(dt.from(a), dt.from(b), prodOut);
    const scaled = dt.from(a);
    be.scale(scaled, 3, scaled);
    be.add(scaled, scaled, scaled);
    return { sumOut, prodOut, scaled };
  }, F32);
  addCase('elementwise', `add/mul/scale/axpy N=${n}`, (be, dt) => {
    const sumOut = dt.zeros(n);
    be.add(dt.from(a), dt.from(b), sumOut);
    const prodOut = dt.zeros(n);
    be.mul(dt.from(a), dt.from(b), prodOut);
    const scaled = dt.zeros(n);
    be.scale(dt.from(a), -0.375, scaled);
    const y = dt.from(b);
    be.axpy(1.25, dt.from(a), y);
    return { sumOut, prodOut, scaled, y };
  });
  addCase('elementwise', `in place (out aliases a, then b) N=${n}`, (be, dt) => {
    const sumA = dt.from(a);
    be.add(sumA, dt.from(b), sumA);
    const prodB = dt.from(b);
    be.mul(dt.from(a), prodB, prodB);
    const scaled = dt.from(a);
    be.scale(scaled, 3, scaled);
    return { sumA, prodB, scaled };
  });
  addCase('fill', `N=${n}`, (be, dt) => {
    const x = dt.from(a);
    be.fill(x, 0.5);
    return { x };
  });
}

// ---- optimiser --------------------------------------------------------------------------------

for (const weightDecay of [0, 0.1]) {
  const n = 129;
  const param0 = randomFloats(rng, n);
  const grads = [0, 1, 2, 3, 4].map(() => randomFloats(rng, n, 0.5));
  addCase('adamwStep', `N=${n} 5 steps weightDecay=${weightDecay}`, (be, dt) => {
    const param = dt.from(param0);
    const m = dt.zeros(n);
    const v = dt.zeros(n);
    grads.forEach((g, i) => {
      be.adamwStep(param, dt.from(g), m, v, { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay, step: i + 1 });
    });
    return { param, m, v };
  });
}

{
  // One large step from a non-zero state (the threaded path), torch.optim.AdamW's arithmetic.
  const n = 70_001;
  const param0 = randomFloats(rng, n);
  const m0 = randomFloats(rng, n, 0.1);
  const v0 = Float64Array.from(randomFloats(rng, n, 0.01), Math.abs);
  const g = randomFloats(rng, n);
  addCase('adamwStep', `N=${n} step 3 from a non-zero state`, (be, dt) => {
    const param = dt.from(param0);
    const m = dt.from(m0);
    const v = dt.from(v0);
    be.adamwStep(param, dt.from(g), m, v, { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 });
    return { param, m, v };
  });
}

// ---- run: float32 on each backend vs float64 on ref --------------------------------------------

const expectedCache = new Map<Case, Outputs>();
function expectedOf(c: Case): Outputs {
  let e = expectedCache.get(c);
  if (!e) {
    e = c.run(refBackend(), c.refDtype);
    expectedCache.set(c, e);
  }
  return e;
}

function checkOutputs(c: Case, actual: Outputs, expected: Outputs, where: string): void {
  const tol = TOL[c.kernel];
  for (const [name, exp] of Object.entries(expected)) {
    const got = actual[name];
    const label = `${c.kernel} ${c.label} [${where}] ${name}`;
    if (typeof exp === 'number') {
      assert.equal(typeof got, 'number', `${label}: expected a number`);
      assertScalarClose(got as number, exp, tol, label);
    } else if (exp instanceof Int32Array) {
      assert.deepEqual(got, exp, label);
    } else {
      assert.ok(got instanceof Float32Array, `${label}: expected a Float32Array output`);
      assertClose(got, exp, tol, label);
    }
  }
}

/** Runs fn with the backend's GEMM provider set to `provider`, then restores the previous one. */
function withGemmProvider(be: Backend, provider: GemmProvider, fn: () => void): void {
  const previous = be.info().gemmProvider;
  if (provider !== previous) be.setGemmProvider(provider);
  try {
    fn();
  } finally {
    if (provider !== previous) be.setGemmProvider(previous);
  }
}

// Every kernel on every SIMD variant of the native kernels this CPU runs (MOR_SIMD names).
for (const { be, label, before: useVariant, after: restore } of backendVariantsUnderTest()) {
  describe(`conformance: ${label} float32 vs ref float64`, () => {
    before(useVariant);
    after(restore);
    // GEMM cases run once per provider the backend offers (e.g. openblas and builtin).
    const gemmProviders = be.info().gemmProviders;
    const tag = (p: GemmProvider): string => (gemmProviders.length > 1 ? ` [${p}]` : '');
    for (const c of cases) {
      if (c.kernel === 'gemm' || c.kernel === 'gemmLongK') {
        for (const provider of gemmProviders) {
          test(`${c.kernel}: ${c.label}${tag(provider)}`, () => {
            withGemmProvider(be, provider, () => checkOutputs(c, c.run(be, F32), expectedOf(c), `${label} ${provider}`));
          });
        }
      } else {
        test(`${c.kernel}: ${c.label}`, () => {
          checkOutputs(c, c.run(be, F32), expectedOf(c), label);
        });
      }
    }
    for (const provider of gemmProviders) {
      test(`gemm with beta=0 does not read C (NaN in C does not propagate)${tag(provider)}`, () => {
        withGemmProvider(be, provider, () => {
          const c = new Float32Array(6).fill(NaN);
          const args: GemmArgs = { transA: false, transB: false, m: 2, n: 3, k: 1, alpha: 1, beta: 0 };
          be.gemm(args, Float32Array.of(1, 2), Float32Array.of(1, 2, 3), c);
          assert.deepEqual(Array.from(c), [1, 2, 3, 2, 4, 6]);
        });
      });
      test(`gemm with k = 0 writes alpha·0 + beta·C (beta 0: zeros, NaN in C not read)${tag(provider)}`, () => {
        withGemmProvider(be, provider, () => {
          const c = Float32Array.of(1, 2, NaN, 4);
          be.gemm({ transA: false, transB: false, m: 2, n: 2, k: 0, alpha: 1, beta: 0 }, new Float32Array(0), new Float32Array(0), c);
          assert.deepEqual(Array.from(c), [0, 0, 0, 0]);
          const d = Float32Array.of(1, 2, 3, 4);
          be.gemm({ transA: true, transB: true, m: 2, n: 2, k: 0, alpha: 1, beta: 0.5 }, new Float32Array(0), new Float32Array(0), d);
          assert.deepEqual(Array.from(d), [0.5, 1, 1.5, 2]);
        });
      });
      test(`gemm with padded strideC leaves the gaps untouched${tag(provider)}`, () => {
        withGemmProvider(be, provider, () => {
          const c = new Float32Array(5 + 4).fill(7); // two 2x2 matrices at stride 5: a gap of 1
          const args: GemmArgs = {
            transA: false,
            transB: false,
            m: 2,
            n: 2,
            k: 1,
            alpha: 1,
            beta: 0,
            batch: 2,
            strideA: 2,
            strideB: 0,
            strideC: 5,
          };
          be.gemm(args, Float32Array.of(1, 2, 3, 4), Float32Array.of(1, 10), c);
          assert.deepEqual(Array.from(c), [1, 10, 2, 20, 7, 3, 30, 4, 40]);
        });
      });
    }
  });
}

// ---- hand-computed cases: the specification itself, on every backend ---------------------------

const ln3 = Math.log(3);
const ln4 = Math.log(4);
const sig1 = 1 / (1 + Math.exp(-1)); // σ(1)
const PHI1 = 0.8413447460685429; // Φ(1)

/** torch float32 rope output for the 'rope in float32 follows PyTorch' case (positions 0..30000). */
const TORCH_ROPE_F32 = [
  -1.0, -0.625, -0.25, 0.125, 0.5, 0.875, -0.875, -0.5, -0.125, 0.25, 0.625, 1.0, -0.75, -0.375, 0.0, 0.375,
  0.30004289746284485, -1.0449209213256836, -0.6337186098098755, -0.24912488460540771, 0.6986410021781921,
  0.39766865968704224, 0.8687063455581665, -0.8752495646476746, -1.1116220951080322, -0.04950045794248581,
  0.2537374496459961, 0.6249997019767761, 0.11956685781478882, -0.7587323188781738, -0.3724812865257263,
  0.0006249999860301614, 0.12614575028419495, -0.5698454976081848, -1.1131350994110107, -0.6569398045539856,
  -0.43268030881881714, -0.5033896565437317, 0.10454821586608887, 0.8512813448905945, -0.26752597093582153,
  0.9538861513137817, 0.15467068552970886, 0.2637007236480713, 1.0414795875549316, -0.5831819176673889,
  -0.7444474697113037, -0.3654954433441162, 0.5167997479438782, 0.19677814841270447, -0.5613009929656982,
  -0.961037814617157, -0.3514869213104248, -0.40546685457229614, -0.5128997564315796, -0.5713198184967041,
  0.28536176681518555, -0.43805044889450073, 0.9635568857192993, 0.5635654330253601, 0.8641144037246704,
  0.9820192456245422, -0.5670609474182129, -0.5104106664657593, -0.9730802178382874, 0.5549935698509216,
  -0.400032103061676, -0.3322567939758301, 0.4401589334011078, -0.2874145805835724, 0.20760372281074524,
  -0.6839081645011902, -0.15771564841270447, 0.18038298189640045, 0.9379532337188721, 1.1048468351364136,
  -0.49066361784935, 0.8919568657875061, -0.5258266925811768, -0.17121145129203796, 1.049321174621582,
  0.585070788860321, -0.624847412109375, -0.18916283547878265, 0.1546769142150879, 0.893485963344574,
  0.013810386881232262, -0.4090750813484192, -0.47588640451431274, -0.46044236421585083, 0.23060442507266998,
  0.4825478792190552, 0.1978815793991089, 0.2315552532672882, -0.8803105354309082, 0.9609357118606567,
];

for (const { be, label, before: useVariant, after: restore } of backendVariantsUnderTest()) {
  describe(`hand-computed kernels: ${label}`, () => {
    before(useVariant);
    after(restore);
    const f32 = (...xs: number[]): Float32Array => Float32Array.from(xs);
    const close = (got: ArrayLike<number>, want: number[], label: string, tol = 2e-7): void =>
      assertClose(got, want, tol, `${be.name} ${label}`);

    test('gemm 2x2, transposes, alpha and beta', () => {
      const a = f32(1, 2, 3, 4);
      const b = f32(5, 6, 7, 8);
      const c = new Float32Array(4);
      be.gemm({ transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0 }, a, b, c);
      close(c, [19, 22, 43, 50], 'A·B');
      be.gemm({ transA: true, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0 }, a, b, c);
      close(c, [26, 30, 38, 44], 'A^T·B');
      be.gemm({ transA: false, transB: true, m: 2, n: 2, k: 2, alpha: 1, beta: 0 }, a, b, c);
      close(c, [17, 23, 39, 53], 'A·B^T');
      c.fill(1);
      be.gemm({ transA: true, transB: true, m: 2, n: 2, k: 2, alpha: 2, beta: -1 }, a, b, c);
      close(c, [2 * 23 - 1, 2 * 31 - 1, 2 * 34 - 1, 2 * 46 - 1], '2·A^T·B^T − C');
    });

    test('softmax and logsumexp of [0, ln 3]', () => {
      const y = new Float32Array(2);
      be.softmaxRows(f32(0, ln3), 2, y);
      close(y, [0.25, 0.75], 'softmax');
      const lse = new Float32Array(1);
      be.logsumexpRows(f32(0, ln3), 2, lse);
      close(lse, [ln4], 'logsumexp');
    });

    test('cross-entropy of known rows, ignored row, gradient', () => {
      const logits = f32(0, ln3, 0, ln3, 5, 6);
      const targets = Int32Array.of(0, 1, -1);
      const losses = new Float32Array(3);
      const lse = new Float32Array(3);
      const count = be.crossEntropyForward(logits, targets, 2, -1, losses, lse);
      assert.equal(count, 2);
      close(losses, [ln4, ln4 - ln3, 0], 'losses');
      close(lse, [ln4, ln4, 6 + Math.log(1 + Math.exp(-1))], 'lse');
      const dLogits = new Float32Array(6).fill(NaN);
      be.crossEntropyBackward(logits, targets, 2, -1, lse, f32(1, 2, 3), dLogits);
      close(dLogits, [-0.75, 0.75, 0.5, -0.5, 0, 0], 'dLogits');
    });

    test('attention with one visible key returns its value; equal logits average', () => {
      const layout: AttentionLayout = {
        numHeads: 1,
        numKvHeads: 1,
        headDim: 2,
        scale: 0.5,
        segments: Int32Array.of(0, 2, 0, 2),
        qPos: Int32Array.of(0, 1),
        kPos: Int32Array.of(0, 1),
      };
      const q = f32(1, 2, 0, 0); // query 1 is zero: equal logits over both keys
      const k = f32(3, 4, -1, 5);
      const v = f32(10, 20, 30, 40);
      const out = new Float32Array(4);
      const lse = new Float32Array(2);
      be.attentionForward(layout, q, k, v, out, lse);
      close(out, [10, 20, 20, 30], 'out');
      close(lse, [0.5 * 11, Math.log(2)], 'lse');
    });

    test('attention: GQA head mapping and visibility by position', () => {
      // H = 4, KVH = 2: query heads 0,1 read kv head 0 and heads 2,3 read kv head 1.
      const gqa: AttentionLayout = {
        numHeads: 4,
        numKvHeads: 2,
        headDim: 1,
        scale: 1,
        segments: Int32Array.of(0, 1, 0, 1),
        qPos: Int32Array.of(0),
        kPos: Int32Array.of(0),
      };
      const out4 = new Float32Array(4);
      const lse4 = new Float32Array(4);
      be.attentionForward(gqa, f32(1, 2, 3, 4), f32(0.5, -1), f32(10, 20), out4, lse4);
      close(out4, [10, 10, 20, 20], 'GQA out');
      close(lse4, [0.5, 1, -3, -4], 'GQA lse');
      // Segment 0: query row 0 (pos 3), key row 0 (pos 9) → sees no key: 0, −Infinity.
      // Query row 1 and key row 1 are outside every segment.
      // Segment 1: query row 2 (pos 6, q = 0), key rows 2..4 (pos 5, 6, 7) → sees the first two
      // with equal logits: out = mean of their values, lse = ln 2.
      const vis: AttentionLayout = {
        numHeads: 1,
        numKvHeads: 1,
        headDim: 1,
        scale: 1,
        segments: Int32Array.of(0, 1, 0, 1, 2, 1, 2, 3),
        qPos: Int32Array.of(3, 6, 6),
        kPos: Int32Array.of(9, 0, 5, 6, 7),
      };
      const out = new Float32Array(3).fill(NaN);
      const lse = new Float32Array(3).fill(NaN);
      be.attentionForward(vis, f32(1, 1, 0), f32(1, 1, 2, 3, 4), f32(100, 1000, 1, 2, 40), out, lse);
      assert.deepEqual(Array.from(out).slice(0, 2), [0, 0]);
      assert.deepEqual(Array.from(lse).slice(0, 2), [-Infinity, -Infinity]);
      close([out[2]!, lse[2]!], [1.5, Math.log(2)], 'visible prefix');
      const dQ = new Float32Array(3).fill(NaN);
      const dK = new Float32Array(5).fill(NaN);
      const dV = new Float32Array(5).fill(NaN);
      be.attentionBackward(vis, f32(1, 1, 0), f32(1, 1, 2, 3, 4), f32(100, 1000, 1, 2, 40), out, lse, f32(1, 1, 1), dQ, dK, dV);
      // Only query 2 has gradient. dV = p·dOut = 0.5 on keys 5, 6; dS = p·(v − out) = ∓0.25,
      // so dQ = Σ dS·k = −0.25·2 + 0.25·3 and dK = dS·q = 0.
      close(dV, [0, 0, 0.5, 0.5, 0], 'dV');
      close(dQ, [0, 0, 0.25], 'dQ');
      close(dK, [0, 0, 0, 0, 0], 'dK');
    });

    test('paged attention: one visible slot returns its value row; equal logits average; none gives 0', () => {
      // H = 2, KVH = 1, HD = 2, blockSize 4, a pool of 2 blocks (slots 0..3, 4..7). Block table
      // [1, 0]: a stream of 6 slots is slots 4, 5, 6, 7, 0, 1 at positions 0..5.
      const posPool = Int32Array.of(4, 5, 9, 9, 0, 1, 2, 3);
      const layout: PagedAttentionLayout = {
        numHeads: 2,
        numKvHeads: 1,
        headDim: 2,
        scale: 1,
        blockSize: 4,
        // query 0: stream [offset 0, 1 slot], pos 0 → sees slot 4 (position 0) only
        // query 1: stream [offset 0, 6 slots] at pos 1 with q = 0 → slots 4, 5: equal logits
        // query 2: stream [offset 2, 1 slot] = block 0 slot 0 (position 4) at pos 3 → sees nothing
        qPos: Int32Array.of(0, 1, 3),
        posPool,
        streams: Int32Array.of(0, 1, 0, 6, 2, 1),
        blockTables: Int32Array.of(1, 0, 0),
      };
      const kPool = f32(0, 0, 0, 0, 0, 0, 0, 0, 3, -2, 1, 1, 5, 5, 6, 6);
      const vPool = f32(-1, -1, -2, -2, -3, -3, -4, -4, 10, 20, 30, 40, 50, 60, 70, 80);
      const q = f32(1, 2, -3, 0.5, 0, 0, 0, 0, 1, 1, 1, 1);
      const out = new Float32Array(12).fill(NaN);
      be.attentionPaged(layout, q, kPool, vPool, out);
      close(out, [10, 20, 10, 20, 20, 30, 20, 30, 0, 0, 0, 0], 'paged out');
    });

    test('paged attention equals attentionForward over the same keys laid out contiguously', () => {
      // Every stream copied into its own contiguous key segment (mode 3: separate keys, one
      // segment per query row with its stream's positions as kPos).
      const r = new Rng(4242);
      const heads: Heads = { numHeads: 4, numKvHeads: 2, headDim: 16 };
      for (const blockSize of [1, 4, 16]) {
        const pc = mixedStreams(r, heads, blockSize);
        const { numHeads: H, numKvHeads: KVH, headDim: HD } = heads;
        const { q, kPool, vPool } = pagedData(pc, r);
        const out = new Float32Array(q.length).fill(NaN);
        be.attentionPaged(pc.layout, Float32Array.from(q), Float32Array.from(kPool), Float32Array.from(vPool), out);

        const nk = pc.streamSlots.reduce((a, s) => a + s.length, 0);
        const k = new Float32Array(nk * KVH * HD);
        const v = new Float32Array(nk * KVH * HD);
        const kPos = new Int32Array(nk);
        const segments = new Int32Array(4 * pc.nq);
        let row = 0;
        pc.streamSlots.forEach((slots, i) => {
          segments.set([i, 1, row, slots.length], 4 * i);
          for (const slot of slots) {
            k.set(kPool.subarray(slot * KVH * HD, (slot + 1) * KVH * HD), row * KVH * HD);
            v.set(vPool.subarray(slot * KVH * HD, (slot + 1) * KVH * HD), row * KVH * HD);
            kPos[row++] = pc.layout.posPool[slot]!;
          }
        });
        const layout: AttentionLayout = { ...heads, scale: pc.layout.scale, segments, qPos: pc.layout.qPos, kPos };
        const want = new Float32Array(q.length);
        const lse = new Float32Array(pc.nq * H);
        be.attentionForward(layout, Float32Array.from(q), k, v, want, lse);
        assertClose(out, want, 1e-5, `${be.name} paged vs contiguous blockSize=${blockSize}`);
      }
    });

    test('rope: position 0 is the identity; 1 rad and 90° rotations', () => {
      const x = f32(0.3, -0.7, 0.9, 0.2);
      const out = new Float32Array(4);
      be.rope(x, Int32Array.of(0), 1, 4, 10000, false, out);
      close(out, Array.from(x), 'pos 0');
      // HD = 2: inv_freq = 1, so position 1 rotates (x0, x1) by 1 radian.
      const out2 = new Float32Array(2);
      be.rope(f32(1, 0), Int32Array.of(1), 1, 2, 10000, false, out2);
      close(out2, [Math.cos(1), Math.sin(1)], 'HD=2 pos 1');
      // HD = 4, theta = 4/π²: inv_freq_1 = theta^(−1/2) = π/2, so pair (x1, x3) turns 90° at pos 1.
      be.rope(x, Int32Array.of(1), 1, 4, 4 / (Math.PI * Math.PI), false, out);
      const [x0, x1, x2, x3] = [x[0]!, x[1]!, x[2]!, x[3]!];
      close(out, [x0 * Math.cos(1) - x2 * Math.sin(1), -x3, x2 * Math.cos(1) + x0 * Math.sin(1), x1], 'HD=4 90°', 1e-6);
      be.rope(out, Int32Array.of(1), 1, 4, 4 / (Math.PI * Math.PI), true, out);
      close(out, Array.from(x), 'inverse undoes forward', 1e-6);
      // ... also at positions past the native backend's cached angle table, in place
      const r = new Rng(31);
      const pos = Int32Array.from({ length: 33 }, (_, i) => (i === 0 ? 70000 : (i * 37) % 5000));
      const y = Float32Array.from(randomFloats(r, 33 * 2 * 64));
      const rotated = new Float32Array(y.length);
      be.rope(y, pos, 2, 64, 10000, false, rotated);
      be.rope(rotated, pos, 2, 64, 10000, true, rotated);
      assertClose(rotated, y, 1e-6, `${be.name} inverse undoes forward up to position 70000`);
    });

    test('rope in float32 follows PyTorch (HF Llama) at large positions', () => {
      // Generated by torch 1.13 in float32: inv_freq = 1/(theta ** (arange(0, HD, 2)/HD)),
      // freqs = pos @ inv_freq, x·cos + rotate_half(x)·sin. At position 30000 a float32 angle is
      // ~1e-3 rad away from the exact one, so this pins the float32 angle convention.
      const pos = Int32Array.of(0, 1, 37, 1000, 4095, 30000);
      const [nHeads, HD] = [2, 8];
      const x = Float32Array.from({ length: pos.length * nHeads * HD }, (_, i) => (((i * 37) % 17) - 8) / 8);
      const out = new Float32Array(x.length);
      be.rope(x, pos, nHeads, HD, 10000, false, out);
      close(out, TORCH_ROPE_F32, 'rope vs torch float32', 1e-6);
    });

    test('rmsnorm of [3, 4]', () => {
      const out = new Float32Array(2);
      const rstd = new Float32Array(1);
      be.rmsnormForward(f32(3, 4), f32(1, 2), 0, out, rstd);
      const r = 1 / Math.sqrt(12.5);
      close(rstd, [r], 'rstd');
      close(out, [3 * r, 8 * r], 'out');
    });

    test('unary ops at known points, swiglu, bce', () => {
      const x = f32(0, 1, -1);
      const out = new Float32Array(3);
      be.unary('sigmoid', x, out);
      close(out, [0.5, sig1, 1 - sig1], 'sigmoid');
      be.unary('tanh', x, out);
      close(out, [0, Math.tanh(1), -Math.tanh(1)], 'tanh');
      be.unary('silu', x, out);
      close(out, [0, sig1, -(1 - sig1)], 'silu');
      be.unary('gelu', x, out);
      close(out, [0, PHI1, -(1 - PHI1)], 'gelu (erf form)');
      const sw = new Float32Array(2);
      be.swigluForward(f32(0, 1), f32(3, 2), sw);
      close(sw, [0, 2 * sig1], 'swiglu');
      const bce = new Float32Array(2);
      be.bceWithLogitsForward(f32(0, 0), f32(0.25, 1), bce);
      close(bce, [Math.LN2, Math.LN2], 'bce at z=0');
      const dZ = new Float32Array(2);
      const dT = new Float32Array(2);
      be.bceWithLogitsBackward(f32(0, 2), f32(0.25, 1), f32(1, 3), dZ, dT);
      close(dZ, [0.25, 3 * (1 / (1 + Math.exp(-2)) - 1)], 'bce dZ');
      close(dT, [0, -6], 'bce dT');
    });

    test('topk ties go to the lower index; index order lists the same set', () => {
      const indices = new Int32Array(3);
      const values = new Float32Array(3);
      be.topkRows(f32(1, 3, 3, 2), 4, 3, 'value', indices, values);
      assert.deepEqual(Array.from(indices), [1, 2, 3]);
      close(values, [3, 3, 2], 'values');
      const idx2 = new Int32Array(2);
      const val2 = new Float32Array(2);
      be.topkRows(f32(1, 0, 3, 1), 4, 2, 'value', idx2, val2);
      assert.deepEqual(Array.from(idx2), [2, 0]);
      be.topkRows(f32(1, 0, 3, 1), 4, 2, 'index', idx2, val2);
      assert.deepEqual(Array.from(idx2), [0, 2]);
      close(val2, [1, 3], 'index-order values');
      // two rows; the second in decreasing order, so value order and index order agree
      const x = f32(1, 3, 3, 2, 0, 3, /* row 1 */ 5, 4, 3, 2, 1, 0);
      const idx = new Int32Array(6);
      const val = new Float32Array(6);
      be.topkRows(x, 6, 3, 'value', idx, val);
      assert.deepEqual(Array.from(idx), [1, 2, 5, 0, 1, 2]);
      assert.deepEqual(Array.from(val), [3, 3, 3, 5, 4, 3]);
      be.topkRows(x, 6, 3, 'index', idx, val);
      assert.deepEqual(Array.from(idx), [1, 2, 5, 0, 1, 2]);
      // a tie at the top, then the next value
      be.topkRows(f32(0.5, 9, -1, 9, 7), 5, 3, 'value', indices, values);
      assert.deepEqual(Array.from(indices), [1, 3, 4]);
      be.topkRows(f32(0.5, 9, -1, 9, 7), 5, 3, 'index', indices, values);
      assert.deepEqual(Array.from(indices), [1, 3, 4]);
      assert.deepEqual(Array.from(values), [9, 9, 7]);
    });

    test('topk with k = 1 ranks as the general path: ties, NaN, −Infinity, the last column', () => {
      const rows: number[][] = [
        [0.5, 9, -1, 9, 7], // a tie at the top: the lower column
        Array.from({ length: 40 }, (_, c) => (c === 20 ? NaN : c === 30 ? 99 : c)), // NaN ranks first
        Array.from({ length: 33 }, () => -Infinity), // every entry −inf: column 0
        Array.from({ length: 33 }, (_, c) => (c === 3 || c === 32 ? 5 : 0)), // tie between a vector lane and the tail
        Array.from({ length: 33 }, (_, c) => (c === 32 ? 1 : 0)), // the maximum in the tail
        Array.from({ length: 48 }, (_, c) => (c % 16 === 7 ? 2 : -Infinity)), // the same lane in three vectors
      ];
      for (const row of rows) {
        const C = row.length;
        const i1 = new Int32Array(1);
        const v1 = new Float32Array(1);
        const i2 = new Int32Array(2);
        const v2 = new Float32Array(2);
        be.topkRows(Float32Array.from(row), C, 1, 'value', i1, v1);
        be.topkRows(Float32Array.from(row), C, 2, 'value', i2, v2);
        assert.equal(i1[0], i2[0], `k = 1 on [${row.slice(0, 6).join(', ')}, …]`);
        assert.ok(Object.is(v1[0], v2[0]), 'its value');
      }
      const i1 = new Int32Array(1);
      be.topkRows(Float32Array.from(rows[1] as number[]), 40, 1, 'value', i1, new Float32Array(1));
      assert.equal(i1[0], 20, 'NaN first');
    });

    test('pointwise kernels on subarray views touch only their own elements', () => {
      for (const n of [1, 33, 100_001]) {
        const big = Float32Array.from(randomFloats(new Rng(n), n + 8));
        const before = Float32Array.from(big);
        const view = big.subarray(3, 3 + n); // a byte offset of 12 into the buffer
        be.add(view, view, view);
        for (let i = 0; i < n + 8; i++) {
          const want = i >= 3 && i < 3 + n ? Math.fround(2 * before[i]!) : before[i]!;
          if (big[i] !== want) assert.fail(`${be.name} add on a view of ${n}: element ${i} is ${big[i]}, expected ${want}`);
        }
        be.fill(view, 1.25);
        assert.ok(view.every((v) => v === 1.25) && big[2] === before[2] && big[3 + n] === before[3 + n], `${be.name} fill on a view of ${n}`);
      }
    });

    test('reductions and gather/scatter', () => {
      assert.equal(be.sum(f32(1, 2, 3)), 6);
      assert.equal(be.sumSquares(f32(1, 2, 3)), 14);
      const rows = new Float32Array(3);
      be.sumRows(f32(1, 2, 3, 4, 5, 6), 3, rows);
      close(rows, [5, 7, 9], 'sumRows');
      const cols = new Float32Array(2);
      be.sumCols(f32(1, 2, 3, 4, 5, 6), 3, cols);
      close(cols, [6, 15], 'sumCols');
      const rows2 = new Float32Array(6);
      be.scaleRows(f32(1, 2, 3, 4, 5, 6), f32(2, -1), 3, rows2);
      close(rows2, [2, 4, 6, -4, -5, -6], 'scaleRows');
      const dots = new Float32Array(2);
      be.rowDot(f32(1, 2, 3, 4, 5, 6), f32(1, 1, 1, 2, 0, 1), 3, dots);
      close(dots, [6, 14], 'rowDot');
      const g = new Float32Array(6);
      be.gatherRows(f32(1, 2, 3, 4), Int32Array.of(1, 1, 0), 2, g);
      close(g, [3, 4, 3, 4, 1, 2], 'gatherRows');
      const s = f32(1, 1, 1, 1);
      be.scatterAddRows(f32(1, 2, 3, 4, 5, 6), Int32Array.of(1, 1, 0), 2, s);
      close(s, [6, 7, 5, 7], 'scatterAddRows');
    });
  });
}
