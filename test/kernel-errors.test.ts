/**
 * Kernel-level errors and settings: the native binding's dtype, buffer-length and range checks,
 * both backends' info() and settings, and cross-entropy's target check on every backend.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionLayout, Backend, GemmProvider, PagedAttentionLayout, UnaryOp } from '../src/backend/index.js';
import { rawSgemmGflops } from '../src/backend/native.js';
import { ArgumentError, DtypeError, ShapeError } from '../src/errors.js';
import { backendsUnderTest, nativeBackend, refBackend } from './helpers/backends.js';

const f32 = (n: number): Float32Array => new Float32Array(n).fill(0.5);
const f64 = (n: number): Float64Array => new Float64Array(n).fill(0.5);

describe('native backend: dtype and length checks', () => {
  const { backend, reason } = nativeBackend();
  const skip = backend === null ? reason : false;
  // Only reached when not skipped.
  const be = (): Backend => backend!;

  test('Float64Array inputs throw DtypeError', { skip }, () => {
    const args = { transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0 };
    assert.throws(() => be().gemm(args, f64(4), f32(4), f32(4)), DtypeError);
    assert.throws(() => be().gemm(args, f32(4), f32(4), f64(4)), DtypeError);
    assert.throws(() => be().softmaxRows(f64(6), 3, f32(6)), DtypeError);
    assert.throws(() => be().add(f32(3), f64(3), f32(3)), DtypeError);
    assert.throws(() => be().rmsnormForward(f32(6), f32(3), 1e-5, f32(6), f64(2)), DtypeError);
    assert.throws(() => be().sum(f64(3)), DtypeError);
    const layout: AttentionLayout = {
      numHeads: 1,
      numKvHeads: 1,
      headDim: 2,
      scale: 1,
      segments: Int32Array.of(0, 1, 0, 1),
      qPos: Int32Array.of(0),
      kPos: Int32Array.of(0),
    };
    assert.throws(() => be().attentionForward(layout, f64(2), f32(2), f32(2), f32(2), f32(1)), DtypeError);
  });

  test('packed weights: wrong sizes throw ShapeError, a weight packed by another backend ArgumentError', { skip }, () => {
    assert.throws(() => be().packWeight(f32(11), 3, 4), ShapeError, 'packWeight w of 11 for (3, 4)');
    const w = be().packWeight(f32(12), 3, 4);
    assert.throws(() => be().gemmPacked(2, f32(7), w, f32(6), false), ShapeError, 'gemmPacked a (2x4) of 7');
    assert.throws(() => be().gemmPacked(2, f32(8), w, f32(5), false), ShapeError, 'gemmPacked c (2x3) of 5');
    assert.throws(() => be().gemmPacked(2, f32(8), refBackend().packWeight(f32(12), 3, 4), f32(6), false), ArgumentError);
    assert.throws(() => refBackend().gemmPacked(2, f32(8), w, f32(6), false), ArgumentError);
  });

  test('decodeLayer: a kvSlot outside the pool throws ArgumentError, misfit weights ShapeError', { skip }, () => {
    const D = 4, I = 6, HD = 2;
    const pack = (n: number, k: number) => be().packWeight(f32(n * k), n, k);
    const w = { inputNorm: f32(D), postNorm: f32(D), qkv: pack(3 * HD, D), o: pack(D, HD), gateUp: pack(2 * I, D), down: pack(D, I) };
    const layout: PagedAttentionLayout = {
      numHeads: 1,
      numKvHeads: 1,
      headDim: HD,
      scale: 1,
      blockSize: 2,
      qPos: Int32Array.of(0),
      posPool: new Int32Array(4),
      streams: Int32Array.of(0, 1),
      blockTables: Int32Array.of(0),
    };
    const run = (kvSlots: Int32Array, weights = w) =>
      be().decodeLayer({ eps: 1e-5, ropeTheta: 1e4, attention: layout, kvSlots }, f32(D), weights, f32(4 * HD), f32(4 * HD), f32(D));
    run(Int32Array.of(0));
    assert.throws(() => run(Int32Array.of(4)), ArgumentError, 'slot 4 of a 4-slot pool');
    assert.throws(() => run(Int32Array.of(-2)), ArgumentError, 'slot −2');
    assert.throws(() => run(Int32Array.of(0), { ...w, o: pack(D, 2 * HD) }), ShapeError, 'o of the wrong width');
  });

  test('bad indices, k, op names and attention layouts throw ArgumentError; Float32 indices DtypeError', { skip }, () => {
    assert.throws(() => be().gatherRows(f32(4), Int32Array.of(2), 2, f32(2)), ArgumentError, 'gatherRows row 2 of 2');
    assert.throws(() => be().gatherRows(f32(4), new Float32Array(1) as unknown as Int32Array, 2, f32(2)), DtypeError, 'Float32 indices');
    assert.throws(() => be().topkRows(f32(6), 3, 4, 'value', new Int32Array(8), f32(8)), ArgumentError, 'k 4 of 3 columns');
    assert.throws(() => be().unary('relu' as UnaryOp, f32(2), f32(2)), ArgumentError, 'unary relu');
    const layout: AttentionLayout = {
      numHeads: 2,
      numKvHeads: 1,
      headDim: 2,
      scale: 1,
      segments: Int32Array.of(0, 2, 0, 2),
      qPos: Int32Array.of(0, 1),
      kPos: Int32Array.of(1, 0), // not sorted
    };
    assert.throws(() => be().attentionForward(layout, f32(8), f32(4), f32(4), f32(8), f32(4)), ArgumentError, 'unsorted kPos');
    const past = { ...layout, kPos: Int32Array.of(0, 1), segments: Int32Array.of(0, 3, 0, 2) };
    assert.throws(() => be().attentionForward(past, f32(8), f32(4), f32(4), f32(8), f32(4)), ArgumentError, 'segment past the query rows');
  });

  test('too-short buffers throw ShapeError', { skip }, () => {
    const args = { transA: false, transB: false, m: 3, n: 4, k: 5, alpha: 1, beta: 0 };
    assert.throws(() => be().gemm(args, f32(15), f32(19), f32(12)), ShapeError, 'gemm B (5x4) of 19');
    assert.throws(() => be().gemm(args, f32(15), f32(20), f32(11)), ShapeError, 'gemm C (3x4) of 11');
    assert.throws(() => be().gemm(args, f32(14), f32(20), f32(12)), ShapeError, 'gemm A (3x5) of 14');
    assert.throws(() => be().gemm({ ...args, batch: 2 }, f32(30), f32(40), f32(23)), ShapeError, 'gemm batch C');
    assert.throws(() => be().gatherRows(f32(6), Int32Array.of(0, 1, 2), 2, f32(5)), ShapeError, 'gatherRows out');
    assert.throws(() => be().add(f32(4), f32(4), f32(3)), ShapeError, 'add out');
    assert.throws(() => be().rmsnormForward(f32(6), f32(3), 1e-5, f32(5), f32(2)), ShapeError, 'rmsnorm out');
    assert.throws(
      () => be().crossEntropyForward(f32(6), Int32Array.of(0, 1), 3, -100, f32(1), f32(2)),
      ShapeError,
      'cross-entropy losses',
    );
  });
});

describe('native backend settings', () => {
  const { backend, reason } = nativeBackend();
  const skip = backend === null ? reason : false;
  const be = (): Backend => backend!;

  test('info()', { skip }, () => {
    const i = be().info();
    assert.equal(i.backend, 'native');
    assert.equal(be().name, 'native');
    assert.ok(i.gemmProviders.includes('builtin'));
    assert.ok(i.gemmProviders.includes(i.gemmProvider));
    assert.ok(['generic', 'avx2', 'avx512', 'avx512bf16'].includes(i.simd), i.simd);
    assert.ok(i.threads >= 1);
  });

  test('setGemmProvider and setNumThreads validate; the thread count round-trips', { skip }, () => {
    assert.throws(() => be().setGemmProvider('typescript'), ArgumentError);
    assert.throws(() => be().setGemmProvider('cuda' as GemmProvider), ArgumentError);
    assert.throws(() => be().setNumThreads(0), ArgumentError);
    assert.throws(() => be().setNumThreads(1.5), ArgumentError);
    const threads = be().info().threads;
    try {
      be().setNumThreads(1);
      assert.equal(be().info().threads, 1);
    } finally {
      be().setNumThreads(threads);
    }
    assert.equal(be().info().threads, threads);
  });

  test('rawSgemmGflops is a positive number with OpenBLAS, else null', { skip }, () => {
    const g = rawSgemmGflops(64, 64, 64, 3);
    if (be().info().gemmProviders.includes('openblas')) assert.ok(typeof g === 'number' && g > 0, String(g));
    else assert.equal(g, null);
  });
});

describe('native backend: attentionPaged checks', () => {
  const { backend, reason } = nativeBackend();
  const skip = backend === null ? reason : false;
  const be = (): Backend => backend!;
  // H = 2, KVH = 1, HD = 4, blockSize 4, a pool of 2 blocks (8 slots); query 0 reads 6 slots
  // through blocks [1, 0], query 1 reads 1 slot through block [0].
  const layout = (over: Partial<PagedAttentionLayout> = {}): PagedAttentionLayout => ({
    numHeads: 2,
    numKvHeads: 1,
    headDim: 4,
    scale: 0.5,
    blockSize: 4,
    qPos: Int32Array.of(10, 10),
    posPool: Int32Array.of(0, 1, 2, 3, 4, 5, 6, 7),
    streams: Int32Array.of(0, 6, 2, 1),
    blockTables: Int32Array.of(1, 0, 0),
    ...over,
  });
  const run = (l: PagedAttentionLayout, q = f32(16), kPool = f32(32), out = f32(16)): void =>
    be().attentionPaged(l, q, kPool, f32(kPool.length), out);

  test('a valid call runs', { skip }, () => {
    run(layout());
  });

  test('a block id outside the pool throws ArgumentError', { skip }, () => {
    assert.throws(() => run(layout({ blockTables: Int32Array.of(1, 2, 0) })), ArgumentError, 'block id 2 of 2 blocks');
    assert.throws(() => run(layout({ blockTables: Int32Array.of(-1, 0, 0) })), ArgumentError, 'block id -1');
    // The pool shrunk to 7 slots: block 1 is partly outside, and query 0 reads all of it.
    assert.throws(
      () => run(layout({ posPool: Int32Array.of(0, 1, 2, 3, 4, 5, 6) }), f32(16), f32(28)),
      /outside the pool/,
      'block 1 of a 7-slot pool',
    );
  });

  test('a stream running past blockTables throws ArgumentError', { skip }, () => {
    // Query 1 reads 5 slots from offset 2: two blocks, blockTables[2, 4), but there are 3 entries.
    assert.throws(() => run(layout({ streams: Int32Array.of(0, 6, 2, 5) })), ArgumentError, 'stream past the end');
    assert.throws(() => run(layout({ streams: Int32Array.of(-1, 6, 2, 1) })), ArgumentError, 'negative offset');
    assert.throws(() => run(layout({ streams: Int32Array.of(0, -6, 2, 1) })), ArgumentError, 'negative count');
  });

  test('wrong dtypes throw DtypeError, wrong lengths ShapeError', { skip }, () => {
    assert.throws(() => run(layout(), f64(16) as unknown as Float32Array), DtypeError, 'Float64 q');
    assert.throws(() => run(layout(), f32(16), f64(32) as unknown as Float32Array), DtypeError, 'Float64 kPool');
    assert.throws(
      () => run(layout({ blockTables: Float32Array.of(1, 0, 0) as unknown as Int32Array })),
      DtypeError,
      'Float32 blockTables',
    );
    assert.throws(() => run(layout(), f32(15)), ShapeError, 'q of 15');
    assert.throws(() => run(layout(), f32(16), f32(31)), ShapeError, 'kPool of 31');
    assert.throws(() => run(layout(), f32(16), f32(32), f32(17)), ShapeError, 'out of 17');
    assert.throws(() => run(layout({ streams: Int32Array.of(0, 6) })), ShapeError, 'streams for one query');
    assert.throws(
      () => run(layout({ numHeads: 3, numKvHeads: 2 }), f32(24), f32(64), f32(24)),
      ArgumentError,
      'H not a multiple of KVH',
    );
  });
});

describe('ref backend settings', () => {
  const ref = refBackend();

  test('info()', () => {
    assert.deepEqual(ref.info(), {
      backend: 'ref',
      gemmProvider: 'typescript',
      gemmProviders: ['typescript'],
      threads: 1,
      simd: 'none',
    });
    assert.equal(ref.name, 'ref');
  });

  test('setGemmProvider accepts only typescript', () => {
    ref.setGemmProvider('typescript');
    for (const p of ['openblas', 'builtin', 'cuda'] as const) {
      assert.throws(() => ref.setGemmProvider(p as GemmProvider), ArgumentError);
    }
  });

  test('setNumThreads accepts only 1', () => {
    ref.setNumThreads(1);
    for (const n of [0, 2, -1, 1.5, NaN]) assert.throws(() => ref.setNumThreads(n), ArgumentError);
  });

  test('gatherRows and scatterAddRows reject an index past the rows', () => {
    assert.throws(() => ref.gatherRows(f32(4), Int32Array.of(0, 2), 2, f32(4)), ArgumentError);
    assert.throws(() => ref.scatterAddRows(f32(4), Int32Array.of(-1, 0), 2, f32(4)), ArgumentError);
  });
});

for (const be of backendsUnderTest()) {
  describe(`cross-entropy target check: ${be.name}`, () => {
    const logits = new Float32Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]); // (2, 3)
    const losses = new Float32Array(2);
    const lse = new Float32Array(2);

    test('a target outside [0, V) throws ArgumentError', () => {
      for (const bad of [3, 4, -1, 1 << 30]) {
        assert.throws(
          () => be.crossEntropyForward(logits, Int32Array.of(0, bad), 3, -100, losses, lse),
          ArgumentError,
          `target ${bad}`,
        );
      }
    });

    test('the ignore index is accepted, even when negative', () => {
      assert.equal(be.crossEntropyForward(logits, Int32Array.of(-100, 2), 3, -100, losses, lse), 1);
      assert.equal(losses[0], 0);
      assert.equal(be.crossEntropyForward(logits, Int32Array.of(-1, -1), 3, -1, losses, lse), 0);
    });
  });
}
