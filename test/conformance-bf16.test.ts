/**
 * Conformance of the bf16 decoding kernels (packWeight 'bf16' + gemmPacked, attentionPaged and
 * decodeLayer over a bf16 K/V pool) on every backend and every SIMD variant of the native kernels
 * this CPU runs, against float64 references.
 *
 * Tolerances, and why:
 * - The rounding (src/backend/bf16.ts, native/src/bf16.h) is bit-exact: round to nearest, ties to
 *   even. Checked on special values, and native's packed weights against the TS rounding.
 * - Kernel arithmetic: a bf16 kernel must be the float32 kernel over the bf16-ROUNDED values, so
 *   its float64 reference takes the rounded inputs and the float32 kernels' tolerances apply
 *   (gemmPacked 4e-5, attentionPaged 2e-5, relative to the largest |reference|).
 * - What bf16 costs against the unrounded weights: bf16 keeps 8 significant bits, unit roundoff
 *   u = 2⁻⁸ (half the spacing 2⁻⁷·2^e in [2^e, 2^(e+1))), so each a·w̃ is within u·|a·w| of a·w and
 *       |c − c_exact| ≤ u · Σ_p |a_p · w_p|   (+ the float32 sum's own error, ≤ 4e-5 of the scale)
 *   elementwise: checked as stated, it fails if any rounding is worse than nearest.
 * - The native avx512bf16 variant's bf16 GEMM uses vdpbf16ps, which multiplies bf16 pairs: it
 *   rounds the activations to bf16 too (native/src/gemm_bf16.cc). Its reference rounds them the
 *   same way (same tolerances), and its bound against the unrounded inputs is (2u + u²)·Σ|a·w|.
 * - decodeLayer over a bf16 pool: the rows it writes are its float32 k, v rounded; the reference
 *   rounds the float64 ones, which can land on the neighbouring bf16 value when they straddle a
 *   rounding boundary (one bf16 ulp, ≤ 2⁻⁷ relative, on one element). So the written pool rows
 *   are compared within 2⁻⁷ relative per element, and the layer output within 1e-3 of its scale
 *   (a one-ulp K/V difference moves the output by far less than that; a missing rounding, or
 *   bf16 arithmetic, by more).
 * - decodeLayer's dense attention over a bf16 pool (a fresh prefill) on the avx512bf16 variant
 *   runs Q·Kᵀ and P·V on vdpbf16ps: it rounds scale·q and the softmax numerators to bf16 (max,
 *   sums and the normalisation stay float32). Its reference rounds at those two points too.
 */
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend, DecodeLayerArgs, KvArray, PackedLayer, PagedAttentionLayout } from '../src/backend/backend.js';
import { BF16_UNIT_ROUNDOFF, bf16ToF32, f32ToBf16, fromBf16, roundToBf16, toBf16, type StorageDtype } from '../src/backend/bf16.js';
import { DtypeError } from '../src/errors.js';
import { Rng, randomFloats, uniformFloats } from './helpers/rng.js';
import { assertClose } from './helpers/numeric.js';
import { backendVariantsUnderTest, nativeBackend, refBackend } from './helpers/backends.js';
import { DECODE_LAYOUT_KINDS, decodeLayerLayout, type DecodeLayoutKind } from './helpers/attention-layouts.js';

const TOL_GEMM = 4e-5;
const TOL_PAGED = 2e-5;
const TOL_DECODE = 1e-3;

// ---- the rounding --------------------------------------------------------------------------------

describe('bf16 rounding (round to nearest, ties to even)', () => {
  const bits = (x: number): number => {
    const u = new Uint32Array(new Float32Array([x]).buffer);
    return u[0] as number;
  };
  const fromBits = (u: number): number => new Float32Array(new Uint32Array([u]).buffer)[0] as number;
  test('exact values, ties, overflow, NaN, signed zero', () => {
    assert.equal(f32ToBf16(1), 0x3f80);
    assert.equal(f32ToBf16(-2), 0xc000);
    assert.equal(f32ToBf16(fromBits(0x3f808000)), 0x3f80, 'tie → even (down)');
    assert.equal(f32ToBf16(fromBits(0x3f818000)), 0x3f82, 'tie → even (up)');
    assert.equal(f32ToBf16(fromBits(0x3f808001)), 0x3f81, 'above the tie → up');
    assert.equal(f32ToBf16(fromBits(0x3f807fff)), 0x3f80, 'below the tie → down');
    assert.equal(f32ToBf16(Infinity), 0x7f80);
    assert.equal(f32ToBf16(-Infinity), 0xff80);
    assert.equal(f32ToBf16(fromBits(0x7f7fffff)), 0x7f80, 'the largest float32 rounds to inf');
    assert.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
    assert.equal(f32ToBf16(fromBits(0x7f800001)) & 0x7fc0, 0x7fc0, 'a signalling NaN stays a (quiet) NaN, not inf');
    assert.equal(f32ToBf16(-0), 0x8000);
    assert.equal(bf16ToF32(0x3f81), 1 + 2 ** -7);
  });
  test('relative error ≤ 2⁻⁸ on random values; round trip is exact on bf16 values', () => {
    const r = new Rng(9);
    const x = randomFloats(r, 10_000, 100);
    const y = roundToBf16(x);
    for (let i = 0; i < x.length; i++) {
      const a = x[i] as number;
      assert.ok(Math.abs((y[i] as number) - a) <= BF16_UNIT_ROUNDOFF * Math.abs(a), `x=${a} → ${y[i]}`);
      assert.equal(bits(y[i] as number) & 0xffff, 0);
    }
    assert.deepEqual(roundToBf16(y), y);
    assert.deepEqual(fromBf16(toBf16(y)), y);
  });
});

// ---- cases -------------------------------------------------------------------------------------

interface GemmCase {
  m: number;
  n: number;
  k: number;
  accumulate: boolean;
  a: Float32Array;
  w: Float32Array;
  c0: Float32Array;
}
const grng = new Rng(20261203);
const gemmCases: GemmCase[] = (
  [
    [1, 1, 1, false],
    [1, 33, 17, false],
    [5, 64, 40, false],
    [12, 31, 65, false],
    [13, 70, 129, false],
    [32, 96, 33, false],
    [45, 7, 704, false],
    [130, 100, 19, false],
    [9, 40, 30, true],
    [33, 65, 12, true],
    [1, 70, 33, true], // one row: the whole-panel path, three panels, a tail, odd k
    [32, 256, 255, true], // two threads, rows read in place or rounded a share each (odd k: the pad)
    [1, 200, 257, true], // one row over a 100 KB weight: two threads by its bytes, a tail panel
  ] as const
).map(([m, n, k, accumulate]) => ({
  m,
  n,
  k,
  accumulate,
  a: Float32Array.from(randomFloats(grng, m * k)),
  w: Float32Array.from(randomFloats(grng, n * k)),
  c0: Float32Array.from(randomFloats(grng, m * n)),
}));

/** Whether this backend's bf16 GEMM rounds its activations to bf16 too (vdpbf16ps, see the top). */
function roundsActivations(be: Backend): boolean {
  return be.name === 'native' && be.info().simd === 'avx512bf16';
}

/** c (m, n) = [c0 +] a · wᵀ in float64, and Σ_p |a·w| per element. */
function gemmReference(g: GemmCase, w: ArrayLike<number>, a: ArrayLike<number> = g.a): { c: Float64Array; absSum: Float64Array } {
  const c = new Float64Array(g.m * g.n);
  const absSum = new Float64Array(g.m * g.n);
  for (let i = 0; i < g.m; i++)
    for (let j = 0; j < g.n; j++) {
      let s = 0;
      let t = 0;
      for (let p = 0; p < g.k; p++) {
        const prod = (a[i * g.k + p] as number) * (w[j * g.k + p] as number);
        s += prod;
        t += Math.abs(prod);
      }
      c[i * g.n + j] = (g.accumulate ? (g.c0[i * g.n + j] as number) : 0) + s;
      absSum[i * g.n + j] = t;
    }
  return { c, absSum };
}

interface PagedCase {
  label: string;
  layout: PagedAttentionLayout;
  q: Float32Array;
  kPool: Float32Array;
  vPool: Float32Array;
}
/**
 * Streams of the given lengths over a shuffled pool of blocks; positions 0.. in stream order (a
 * few slots past the query's position, so the visibility filter matters); query i at the
 * position of its stream's last slot, minus `hidden`.
 */
function pagedCase(r: Rng, label: string, H: number, KVH: number, HD: number, bs: number, lengths: readonly number[], hidden: number): PagedCase {
  const blocksPer = lengths.map((n) => Math.ceil(n / bs));
  const numBlocks = blocksPer.reduce((a, b) => a + b, 0) + 2;
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = r.int(0, i + 1);
    [ids[i], ids[j]] = [ids[j] as number, ids[i] as number];
  }
  const posPool = new Int32Array(numBlocks * bs).fill(1 << 30);
  const tables: number[] = [];
  const streams = new Int32Array(2 * lengths.length);
  const qPos = new Int32Array(lengths.length);
  let next = 0;
  lengths.forEach((n, i) => {
    streams[2 * i] = tables.length;
    streams[2 * i + 1] = n;
    const own = ids.slice(next, next + (blocksPer[i] as number));
    next += blocksPer[i] as number;
    tables.push(...own);
    for (let j = 0; j < n; j++) posPool[(own[Math.floor(j / bs)] as number) * bs + (j % bs)] = j;
    qPos[i] = Math.max(0, n - 1 - hidden);
  });
  const slots = numBlocks * bs;
  return {
    label: `${label}: H ${H}/KVH ${KVH}, HD ${HD}, block ${bs}, streams ${lengths.join(',')}`,
    layout: { numHeads: H, numKvHeads: KVH, headDim: HD, scale: 1 / Math.sqrt(HD), blockSize: bs, qPos, posPool, streams, blockTables: Int32Array.from(tables) },
    q: Float32Array.from(randomFloats(r, lengths.length * H * HD, 1.5)),
    kPool: Float32Array.from(randomFloats(r, slots * KVH * HD, 1.5)),
    vPool: Float32Array.from(randomFloats(r, slots * KVH * HD)),
  };
}
const prng = new Rng(4242);
const pagedCases: PagedCase[] = [
  pagedCase(prng, 'decoding, register path', 4, 2, 64, 16, [1, 17, 40, 100], 0),
  pagedCase(prng, 'long streams (split into parts)', 4, 2, 64, 16, [600], 3),
  pagedCase(prng, 'head dim not a multiple of the vector', 6, 3, 20, 4, [9, 3, 30], 2),
  pagedCase(prng, 'one kv head, 8 heads', 8, 1, 32, 8, [50, 130], 1),
  pagedCase(prng, 'tiny', 2, 2, 6, 4, [5, 1], 0),
];

// ---- decodeLayer -------------------------------------------------------------------------------

const D = 24, I = 40, H = 4, KVH = 2, HD = 6, BS = 4, NUM_BLOCKS = 8, N = 5;
const qw = H * HD, kvw = KVH * HD;
const drng = new Rng(515);
const dec = {
  h: Float32Array.from(randomFloats(drng, N * D)),
  inputNorm: Float32Array.from(uniformFloats(drng, D, 0.5, 1.5)),
  postNorm: Float32Array.from(uniformFloats(drng, D, 0.5, 1.5)),
  qkv: Float32Array.from(randomFloats(drng, (qw + 2 * kvw) * D, 0.3)),
  o: Float32Array.from(randomFloats(drng, D * qw, 0.3)),
  gateUp: Float32Array.from(randomFloats(drng, 2 * I * D, 0.3)),
  down: Float32Array.from(randomFloats(drng, D * I, 0.3)),
  kPool: Float32Array.from(randomFloats(drng, NUM_BLOCKS * BS * kvw)),
  vPool: Float32Array.from(randomFloats(drng, NUM_BLOCKS * BS * kvw)),
};
/** The call arguments of one fixture layout (see decodeLayerLayout). */
function decodeArgs(kind: DecodeLayoutKind): DecodeLayerArgs {
  const { layout, kvSlots } = decodeLayerLayout({ numHeads: H, numKvHeads: KVH, headDim: HD }, NUM_BLOCKS, kind); // BS = 4
  return { eps: 1e-5, ropeTheta: 10000, attention: layout, kvSlots };
}
const decArgs = decodeArgs('mixed');

/** decodeLayer on `be` with weights and pool in the given dtypes; the output and the pools widened to f32. */
function runDecode(be: Backend, wd: StorageDtype, pd: StorageDtype, args: DecodeLayerArgs): { out: Float32Array; kPool: Float32Array; vPool: Float32Array } {
  const w: PackedLayer = {
    inputNorm: dec.inputNorm,
    postNorm: dec.postNorm,
    qkv: be.packWeight(dec.qkv, qw + 2 * kvw, D, wd),
    o: be.packWeight(dec.o, D, qw, wd),
    gateUp: be.packWeight(dec.gateUp, 2 * I, D, wd),
    down: be.packWeight(dec.down, D, I, wd),
  };
  const pool = (x: Float32Array): KvArray => (pd === 'bf16' ? toBf16(x) : Float32Array.from(x));
  const kPool = pool(dec.kPool);
  const vPool = pool(dec.vPool);
  const out = new Float32Array(N * D).fill(NaN);
  be.decodeLayer(args, dec.h, w, kPool, vPool, out);
  const widen = (x: KvArray): Float32Array => (x instanceof Uint16Array ? fromBf16(x) : x);
  return { out, kPool: widen(kPool), vPool: widen(vPool) };
}

/** The float64 reference of decodeLayer: ref's kernels composed, weights (and pool writes) rounded per dtype. */
/**
 * Paged attention in float64 with scale·q and the softmax numerators e^(s − m) rounded to bf16
 * before their products (the sum that normalises them is of the unrounded ones): what the
 * vdpbf16ps dense path computes over bf16 K and V.
 */
function attentionRoundedQP(l: PagedAttentionLayout, q: Float64Array, kPool: Float64Array, vPool: Float64Array, out: Float64Array): void {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, blockSize: bs } = l;
  const ld = KVH * HD;
  const r16 = (x: number): number => roundToBf16(Float32Array.of(x))[0] as number;
  for (let i = 0; i < l.qPos.length; i++) {
    const off = l.streams[2 * i] as number;
    const len = l.streams[2 * i + 1] as number;
    const slots: number[] = [];
    for (let j = 0; j < len; j++) {
      const slot = (l.blockTables[off + Math.floor(j / bs)] as number) * bs + (j % bs);
      if ((l.posPool[slot] as number) <= (l.qPos[i] as number)) slots.push(slot);
    }
    for (let h = 0; h < H; h++) {
      const kv = Math.floor(h / (H / KVH));
      const qs = Array.from({ length: HD }, (_, d) => r16((q[(i * H + h) * HD + d] as number) * l.scale));
      const sc = slots.map((slot) => qs.reduce((acc, x, d) => acc + x * (kPool[slot * ld + kv * HD + d] as number), 0));
      const m = Math.max(...sc);
      const e = sc.map((x) => Math.exp(x - m));
      const sum = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < HD; d++) {
        let acc = 0;
        slots.forEach((slot, j) => (acc += r16(e[j] as number) * (vPool[slot * ld + kv * HD + d] as number)));
        out[(i * H + h) * HD + d] = slots.length ? acc / sum : 0;
      }
    }
  }
}

/**
 * decodeLayer composed from the float64 reference kernels, rounding where the native variant
 * does: the weights (wd bf16), the pool rows (pd bf16), the products' activations (roundAct with
 * bf16 weights), and scale·q and P where the dense attention runs on vdpbf16ps (roundQP).
 */
function decodeReference(wd: StorageDtype, pd: StorageDtype, roundAct: boolean, args: DecodeLayerArgs, roundQP = false): { out: Float64Array; kPool: Float64Array; vPool: Float64Array } {
  const be = refBackend();
  const W = (x: Float32Array): Float64Array => Float64Array.from(wd === 'bf16' ? roundToBf16(x) : x);
  // roundAct: the products with bf16 weights take their activations rounded to bf16 (vdpbf16ps)
  const A = (x: Float64Array): Float64Array => (roundAct && wd === 'bf16' ? Float64Array.from(roundToBf16(x)) : x);
  const lin = (x: Float64Array, w: Float64Array, n: number, k: number, out: Float64Array, beta: number): void =>
    be.gemm({ transA: false, transB: true, m: N, n, k, alpha: 1, beta }, A(x), w, out);
  const kPool = Float64Array.from(pd === 'bf16' ? roundToBf16(dec.kPool) : dec.kPool);
  const vPool = Float64Array.from(pd === 'bf16' ? roundToBf16(dec.vPool) : dec.vPool);
  const x = new Float64Array(N * D);
  be.rmsnormForward(Float64Array.from(dec.h), Float64Array.from(dec.inputNorm), args.eps, x, new Float64Array(N));
  const qkv = new Float64Array(N * (qw + 2 * kvw));
  lin(x, W(dec.qkv), qw + 2 * kvw, D, qkv, 0);
  const col = (from: number, width: number): Float64Array => {
    const o = new Float64Array(N * width);
    for (let i = 0; i < N; i++) o.set(qkv.subarray(i * (qw + 2 * kvw) + from, i * (qw + 2 * kvw) + from + width), i * width);
    return o;
  };
  const q = col(0, qw);
  const k = col(qw, kvw);
  const v = col(qw + kvw, kvw);
  be.rope(q, args.attention.qPos, H, HD, args.ropeTheta, false, q);
  be.rope(k, args.attention.qPos, KVH, HD, args.ropeTheta, false, k);
  args.kvSlots.forEach((slot, i) => {
    if (slot < 0) return;
    const kr = k.subarray(i * kvw, (i + 1) * kvw);
    const vr = v.subarray(i * kvw, (i + 1) * kvw);
    kPool.set(pd === 'bf16' ? roundToBf16(kr) : kr, slot * kvw);
    vPool.set(pd === 'bf16' ? roundToBf16(vr) : vr, slot * kvw);
  });
  const a = new Float64Array(N * qw);
  if (roundQP) attentionRoundedQP(args.attention, q, kPool, vPool, a);
  else be.attentionPaged(args.attention, q, kPool, vPool, a);
  const out = Float64Array.from(dec.h);
  lin(a, W(dec.o), D, qw, out, 1);
  be.rmsnormForward(Float64Array.from(out), Float64Array.from(dec.postNorm), args.eps, x, new Float64Array(N));
  const gu = new Float64Array(N * 2 * I);
  lin(x, W(dec.gateUp), 2 * I, D, gu, 0);
  const g = new Float64Array(N * I);
  const u = new Float64Array(N * I);
  for (let i = 0; i < N; i++) {
    g.set(gu.subarray(i * 2 * I, i * 2 * I + I), i * I);
    u.set(gu.subarray(i * 2 * I + I, (i + 1) * 2 * I), i * I);
  }
  const m = new Float64Array(N * I);
  be.swigluForward(g, u, m);
  lin(m, W(dec.down), D, I, out, 1);
  return { out, kPool, vPool };
}

/** Elementwise |got − want| ≤ rel·|want| (+ a tiny absolute floor for zeros). */
function assertWithinUlps(got: ArrayLike<number>, want: ArrayLike<number>, rel: number, label: string): void {
  assert.equal(got.length, want.length, `${label}: length`);
  for (let i = 0; i < want.length; i++) {
    const a = got[i] as number;
    const b = want[i] as number;
    if (!(Math.abs(a - b) <= rel * Math.abs(b) + 1e-30)) assert.fail(`${label}: [${i}] got ${a}, expected ${b} (allowed ${rel.toExponential(2)} relative)`);
  }
}

// ---- run on every backend and SIMD variant -----------------------------------------------------

const expectedPaged = new Map<PagedCase, Float64Array>();
function pagedExpected(pc: PagedCase): Float64Array {
  let e = expectedPaged.get(pc);
  if (!e) {
    e = new Float64Array(pc.q.length);
    refBackend().attentionPaged(pc.layout, Float64Array.from(pc.q), Float64Array.from(roundToBf16(pc.kPool)), Float64Array.from(roundToBf16(pc.vPool)), e);
    expectedPaged.set(pc, e);
  }
  return e;
}

for (const { be, label, before: useVariant, after: restore } of backendVariantsUnderTest()) {
  describe(`bf16 conformance: ${label} vs float64`, () => {
    before(useVariant);
    after(restore);

    test('packWeight bf16 stores W rounded to nearest-even, as bf16.ts rounds (bit-exact)', () => {
      // a = the identity: row p of c is column p of W̃, read back exactly (sums of zeros are exact)
      const n = 37, k = 19;
      const w = Float32Array.from(randomFloats(new Rng(3), n * k, 10));
      const packed = be.packWeight(w, n, k, 'bf16');
      assert.equal(packed.dtype, 'bf16');
      assert.ok(packed.data instanceof Uint16Array);
      const eye = new Float32Array(k * k);
      for (let p = 0; p < k; p++) eye[p * k + p] = 1;
      const c = new Float32Array(k * n);
      be.gemmPacked(k, eye, packed, c, false);
      const want = roundToBf16(w);
      for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) assert.equal(c[p * n + j], want[j * k + p], `W[${j}, ${p}]`);
    });

    test('gemmPacked bf16 reads its activations exactly as bf16.ts rounds them (ties, extremes; bit-exact)', () => {
      // W = the identity, so c = ã·I: each output is one activation as the product read it (its
      // bf16 rounding under vdpbf16ps, else itself), the other terms exact zeros. k = 70 covers
      // the vectorised rounding of 16 pairs at a time and its scalar tail (pairs 32–34).
      const k = 70;
      const eye = new Float32Array(k * k);
      for (let p = 0; p < k; p++) eye[p * k + p] = 1;
      const packed = be.packWeight(eye, k, k, 'bf16');
      const rng = new Rng(11);
      const special = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), 2 ** -126, -(2 ** 100) * (1 + 2 ** -8), 3.3895313892515355e38, 0, -0, 65504.5, 1 - 2 ** -9];
      const m = 3;
      const a = new Float32Array(m * k);
      for (let i = 0; i < a.length; i++) a[i] = i % 5 === 0 ? (special[(i / 5) % special.length] as number) : (rng.next() - 0.5) * 2 ** ((i % 40) - 20);
      const c = new Float32Array(m * k).fill(NaN);
      be.gemmPacked(m, a, packed, c, false);
      const want = roundsActivations(be) ? roundToBf16(a) : a;
      for (let i = 0; i < a.length; i++) assert.ok(Object.is(c[i], want[i]) || (c[i] === 0 && want[i] === 0), `a[${i}] = ${a[i]}: read as ${c[i]}, want ${want[i]}`);
    });

    for (const g of gemmCases) {
      test(`gemmPacked bf16: m=${g.m} n=${g.n} k=${g.k}${g.accumulate ? ' accumulate' : ''}`, () => {
        const c = Float32Array.from(g.c0);
        be.gemmPacked(g.m, g.a, be.packWeight(g.w, g.n, g.k, 'bf16'), c, g.accumulate);
        const rounds = roundsActivations(be);
        // the float32 product over the rounded weights (and rounded activations under vdpbf16ps)
        assertClose(c, gemmReference(g, roundToBf16(g.w), rounds ? roundToBf16(g.a) : g.a).c, TOL_GEMM, 'vs float64 over bf16(W)');
        // what bf16 promises against the unrounded inputs: |c − c_exact| ≤ u·Σ|a·w| (+ f32 sums),
        // (2u + u²)·Σ|a·w| when the activations are rounded too
        const u = rounds ? 2 * BF16_UNIT_ROUNDOFF + BF16_UNIT_ROUNDOFF ** 2 : BF16_UNIT_ROUNDOFF;
        const exact = gemmReference(g, g.w);
        let scale = 0;
        for (const x of exact.c) scale = Math.max(scale, Math.abs(x));
        for (let i = 0; i < c.length; i++) {
          const bound = u * (exact.absSum[i] as number) + TOL_GEMM * scale;
          const err = Math.abs((c[i] as number) - (exact.c[i] as number));
          assert.ok(err <= bound, `c[${i}]: |${c[i]} − ${exact.c[i]}| = ${err} > ${u.toExponential(3)}·Σ|a·w| + f32 = ${bound}`);
        }
      });
    }

    for (const pc of pagedCases) {
      test(`attentionPaged, bf16 pool: ${pc.label}`, () => {
        const out = new Float32Array(pc.q.length).fill(NaN);
        be.attentionPaged(pc.layout, pc.q, toBf16(pc.kPool), toBf16(pc.vPool), out);
        assertClose(out, pagedExpected(pc), TOL_PAGED, 'vs float64 over bf16(K), bf16(V)');
      });
    }

    for (const kind of DECODE_LAYOUT_KINDS)
    for (const [wd, pd] of [['bf16', 'bf16'], ['bf16', 'f32'], ['f32', 'bf16']] as const) {
      test(`decodeLayer (${kind}): ${wd} weights, ${pd} pool`, () => {
        const args = decodeArgs(kind);
        const got = runDecode(be, wd, pd, args);
        // the dense path (a fresh prefill) over a bf16 pool runs on vdpbf16ps where the GEMM does
        const roundQP = kind === 'fresh prefill' && pd === 'bf16' && roundsActivations(be);
        const want = decodeReference(wd, pd, roundsActivations(be), args, roundQP);
        assertClose(got.out, want.out, TOL_DECODE, 'out');
        const ulp = pd === 'bf16' ? 2 * BF16_UNIT_ROUNDOFF : 1e-5;
        assertWithinUlps(got.kPool, want.kPool, ulp, 'kPool');
        assertWithinUlps(got.vPool, want.vPool, ulp, 'vPool');
      });
    }

    test('mixed dtypes are DtypeErrors: a bf16 K pool with an f32 V pool, weights of two dtypes', () => {
      const pc = pagedCases[4] as PagedCase;
      const out = new Float32Array(pc.q.length);
      assert.throws(() => be.attentionPaged(pc.layout, pc.q, toBf16(pc.kPool), pc.vPool, out), DtypeError);
      const w: PackedLayer = {
        inputNorm: dec.inputNorm,
        postNorm: dec.postNorm,
        qkv: be.packWeight(dec.qkv, qw + 2 * kvw, D, 'bf16'),
        o: be.packWeight(dec.o, D, qw, 'f32'),
        gateUp: be.packWeight(dec.gateUp, 2 * I, D, 'bf16'),
        down: be.packWeight(dec.down, D, I, 'bf16'),
      };
      assert.throws(() => be.decodeLayer(decArgs, dec.h, w, toBf16(dec.kPool), toBf16(dec.vPool), new Float32Array(N * D)), DtypeError);
    });
  });
}

// ---- the SIMD variants agree with each other -----------------------------------------------------

const { backend: native, reason } = nativeBackend();
describe('bf16 kernels: every SIMD variant gives the same results', { skip: native === null ? reason : false }, () => {
  test('gemmPacked, attentionPaged and decodeLayer in bf16 agree across variants (float32 sum order; vdpbf16ps within its rounding)', () => {
    const be = native as Backend;
    const info = be.info();
    const variants = info.simdAvailable ?? [info.simd];
    const g = gemmCases[5] as GemmCase;
    const pc = pagedCases[0] as PagedCase;
    const results = variants.map((simd) => {
      be.setSimd?.(simd);
      try {
        const c = new Float32Array(g.m * g.n);
        be.gemmPacked(g.m, g.a, be.packWeight(g.w, g.n, g.k, 'bf16'), c, false);
        const a = new Float32Array(pc.q.length);
        be.attentionPaged(pc.layout, pc.q, toBf16(pc.kPool), toBf16(pc.vPool), a);
        return { simd, rounds: roundsActivations(be), c, a, d: runDecode(be, 'bf16', 'bf16', decArgs).out };
      } finally {
        be.setSimd?.(info.simd);
      }
    });
    const first = results[0];
    assert.ok(first && !first.rounds);
    const absSum = gemmReference(g, roundToBf16(g.w)).absSum;
    for (const r of results.slice(1)) {
      assertClose(r.a, first.a, 1e-5, `attentionPaged ${r.simd} vs ${first.simd}`);
      if (!r.rounds) {
        assertClose(r.c, first.c, 1e-5, `gemmPacked ${r.simd} vs ${first.simd}`);
        assertClose(r.d, first.d, 1e-3, `decodeLayer ${r.simd} vs ${first.simd}`);
        continue;
      }
      // vdpbf16ps: the activations' rounding, u·Σ|a·w̃| per element, and no more
      for (let i = 0; i < r.c.length; i++) {
        const bound = BF16_UNIT_ROUNDOFF * (absSum[i] as number) + 1e-5;
        assert.ok(Math.abs((r.c[i] as number) - (first.c[i] as number)) <= bound, `gemmPacked ${r.simd} vs ${first.simd} at [${i}]`);
      }
      assert.ok(r.c.some((x, i) => x !== first.c[i]), `${r.simd} rounds its activations (vdpbf16ps is in use)`);
      assertClose(r.d, first.d, 2e-2, `decodeLayer ${r.simd} vs ${first.simd} (four products with bf16 activations, 2⁻⁸ each)`);
    }
  });
});
