/**
 * Kernel-level errors: the native binding's dtype and buffer-length checks, the ref backend's
 * settings, and cross-entropy's target check on every backend.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionLayout, Backend, GemmProvider } from '../src/backend/index.js';
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

  test('too-short buffers throw ShapeError', { skip }, () => {
    const args = { transA: false, transB: false, m: 3, n: 4, k: 5, alpha: 1, beta: 0 };
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
