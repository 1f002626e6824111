// Tensor layer: every differentiable op's wiring checked against finite differences through the
// tape (float32, so step and tolerance are loose; the kernels themselves are checked in float64
// by gradcheck-kernels), plus tape semantics, no-grad and typed errors. Runs on every backend.
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, setBackend } from '../src/backend/index.js';
import type { AttentionLayout } from '../src/backend/backend.js';
import { AutogradError, DtypeError, ShapeError, ArgumentError } from '../src/errors.js';
import {
  Tensor, tensor, indexTensor, parameter, backward, noGrad, zeroGrad,
  add, mul, scale, scaleRows, sub, matmul, linear, reshape, sum, mean, softmax, logsumexp, rmsnorm, rope, swiglu,
  attention, gatherRows, embedding, scatterAddRows, crossEntropy, bceWithLogits, unary, topk,
} from '../src/tensor/index.js';
import { Rng } from '../src/util/rng.js';

function randParam(rng: Rng, shape: number[], name: string, amp = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = amp * rng.uniform(-1, 1);
  return parameter(d, shape, name);
}

/**
 * Checks d(Σ R⊙f(inputs))/d(input) from the tape against central differences, on up to
 * `samples` coordinates of each input. R is a fixed random tensor, so every output element
 * matters and errors cannot cancel.
 */
function checkGrad(rng: Rng, f: (xs: Tensor[]) => Tensor, inputs: Tensor[], opts: { eps?: number; tol?: number } = {}): void {
  const eps = opts.eps ?? 1e-2;
  const tol = opts.tol ?? 2e-2;
  const probe = noGrad(() => f(inputs));
  const r = tensor(Float32Array.from({ length: probe.size }, () => rng.uniform(-1, 1)), probe.shape);
  const lossOf = (): number => noGrad(() => sum(mul(f(inputs), r)).item());
  zeroGrad(inputs);
  backward(sum(mul(f(inputs), r)));
  for (const x of inputs) {
    if (!x.requiresGrad) continue;
    const g = x.grad;
    assert.ok(g, `${x.name}: no gradient`);
    const data = x.f32();
    const gmax = Math.max(1e-3, ...Array.from(g, Math.abs));
    const idxs = Array.from({ length: Math.min(12, data.length) }, () => Math.floor(rng.next() * data.length));
    for (const i of idxs) {
      const orig = data[i] as number;
      data[i] = orig + eps;
      const lp = lossOf();
      data[i] = orig - eps;
      const lm = lossOf();
      data[i] = orig;
      const fd = (lp - lm) / (2 * eps);
      const an = g[i] as number;
      assert.ok(Math.abs(fd - an) <= tol * gmax, `${x.name}[${i}]: tape ${an}, finite difference ${fd} (scale ${gmax})`);
    }
  }
}

function causalLayout(b: number, t: number, h: number, kvh: number, hd: number): AttentionLayout {
  const segments = new Int32Array(4 * b);
  const pos = new Int32Array(b * t);
  for (let s = 0; s < b; s++) {
    segments.set([s * t, t, s * t, t], 4 * s);
    for (let i = 0; i < t; i++) pos[s * t + i] = i;
  }
  return { numHeads: h, numKvHeads: kvh, headDim: hd, scale: 1 / Math.sqrt(hd), segments, qPos: pos, kPos: pos };
}

for (const backendName of availableBackends()) {
  describe(`tensor ops on ${backendName}`, () => {
    const rng = new Rng(1234);
    before(() => {
      setBackend(backendName);
    });

    test('matmul: all transpose combinations', () => {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const a = randParam(rng, ta ? [5, 3] : [3, 5], 'a');
          const b = randParam(rng, tb ? [4, 5] : [5, 4], 'b');
          checkGrad(rng, ([x, y]) => matmul(x as Tensor, y as Tensor, ta, tb), [a, b]);
        }
      }
    });

    test('linear, add, mul, scale, reshape', () => {
      const x = randParam(rng, [6, 7], 'x');
      const w = randParam(rng, [3, 7], 'w');
      const z = randParam(rng, [6, 3], 'z');
      checkGrad(rng, ([a, b, c]) => reshape(scale(mul(add(linear(a as Tensor, b as Tensor), c as Tensor), c as Tensor), 0.5), [3, -1]), [x, w, z]);
    });

    test('scaleRows (routing gates) and sub', () => {
      checkGrad(rng, ([x, g]) => scaleRows(x as Tensor, g as Tensor), [randParam(rng, [5, 6], 'x'), randParam(rng, [5], 'g')]);
      checkGrad(rng, ([x, g]) => scaleRows(x as Tensor, g as Tensor), [randParam(rng, [3, 4], 'x'), randParam(rng, [3, 1], 'g2')]);
      checkGrad(rng, ([a, b]) => sub(a as Tensor, b as Tensor), [randParam(rng, [7], 'a'), randParam(rng, [7], 'b')]);
    });

    test('unary ops, softmax, logsumexp, mean', () => {
      for (const op of ['sigmoid', 'tanh', 'silu', 'gelu'] as const) {
        checkGrad(rng, ([a]) => unary(op, a as Tensor), [randParam(rng, [4, 9], op, 2)]);
      }
      checkGrad(rng, ([a]) => softmax(a as Tensor), [randParam(rng, [3, 7], 'softmax', 2)]);
      checkGrad(rng, ([a]) => logsumexp(a as Tensor), [randParam(rng, [3, 7], 'logsumexp', 2)]);
      checkGrad(rng, ([a]) => mean(a as Tensor), [randParam(rng, [3, 7], 'mean')]);
    });

    test('rmsnorm, rope, swiglu', () => {
      checkGrad(rng, ([a, w]) => rmsnorm(a as Tensor, w as Tensor, 1e-5), [randParam(rng, [5, 8], 'x'), randParam(rng, [8], 'w')]);
      const pos = indexTensor([0, 3, 4, 9, 17]);
      checkGrad(rng, ([a]) => rope(a as Tensor, pos, 10000), [randParam(rng, [5, 2, 8], 'x')]);
      checkGrad(rng, ([g, u]) => swiglu(g as Tensor, u as Tensor), [randParam(rng, [4, 6], 'gate', 2), randParam(rng, [4, 6], 'up')]);
    });

    test('attention (GQA, two causal segments)', () => {
      const layout = causalLayout(2, 5, 4, 2, 8);
      const q = randParam(rng, [10, 4, 8], 'q');
      const k = randParam(rng, [10, 2, 8], 'k');
      const v = randParam(rng, [10, 2, 8], 'v');
      checkGrad(rng, ([a, b, c]) => attention(a as Tensor, b as Tensor, c as Tensor, layout), [q, k, v]);
    });

    test('gather / embedding / scatter-add rows', () => {
      const e = randParam(rng, [6, 4], 'E');
      const ids = indexTensor([5, 0, 5, 2]);
      checkGrad(rng, ([w]) => embedding(w as Tensor, ids), [e]);
      checkGrad(rng, ([w]) => gatherRows(w as Tensor, ids), [e]);
      const base = randParam(rng, [6, 4], 'base');
      const src = randParam(rng, [3, 4], 'src');
      checkGrad(rng, ([b, s]) => scatterAddRows(b as Tensor, indexTensor([1, 4, 1]), s as Tensor), [base, src]);
    });

    test('cross-entropy with ignore index, BCE with logits', () => {
      const logits = randParam(rng, [5, 7], 'logits', 2);
      const targets = indexTensor([3, -100, 0, 6, 2]);
      checkGrad(rng, ([l]) => crossEntropy(l as Tensor, targets), [logits]);
      // all-ignored: a zero loss with zero gradient, not NaN
      const l2 = randParam(rng, [2, 3], 'l2');
      const loss = crossEntropy(l2, indexTensor([-100, -100]));
      assert.equal(loss.item(), 0);
      backward(loss);
      assert.ok(Array.from(l2.grad ?? []).every((g) => g === 0));
      checkGrad(rng, ([z, t]) => bceWithLogits(z as Tensor, t as Tensor), [randParam(rng, [9], 'z', 3), randParam(rng, [9], 't')]);
    });

    test('a tensor used at several places gets the sum of its gradients', () => {
      const w = randParam(rng, [4, 4], 'shared');
      const x = tensor(Float32Array.from({ length: 8 }, () => rng.uniform(-1, 1)), [2, 4]);
      // three applications of the same weight, as a recursive block applies its layers
      backward(sum(linear(linear(linear(x, w), w), w)));
      const viaTape = w.grad?.slice();
      assert.ok(viaTape);
      // same function written with three distinct copies: the shared gradient is their sum
      const copies = [0, 1, 2].map((i) => parameter(w.f32().slice(), [4, 4], `copy${i}`));
      backward(sum(linear(linear(linear(x, copies[0] as Tensor), copies[1] as Tensor), copies[2] as Tensor)));
      for (let i = 0; i < 16; i++) {
        const total = copies.reduce((s, c) => s + (c.grad?.[i] ?? NaN), 0);
        assert.ok(Math.abs(total - (viaTape[i] as number)) < 1e-4 * Math.max(1, Math.abs(total)));
      }
      // gradients of leaves accumulate across backward calls until zeroed
      backward(sum(linear(x, w)));
      assert.notDeepEqual(w.grad, viaTape);
    });

    test('no-grad scope records nothing; topk has no gradient', () => {
      const w = randParam(rng, [3, 3], 'w');
      const y = noGrad(() => linear(w, w));
      assert.equal(y.requiresGrad, false);
      assert.equal(y.node, null);
      const { indices, values } = topk(tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.3], [2, 3]), 2);
      assert.deepEqual(Array.from(indices.i32()), [1, 2, 0, 2]);
      assert.deepEqual(Array.from(values.f32()), [0.9, 0.5, 0.7, 0.3].map(Math.fround));
      const byIndex = topk(tensor([0.1, 0.9, 0.5, 0.7, 0.2, 0.3], [2, 3]), 2, 'index');
      assert.deepEqual(Array.from(byIndex.indices.i32()), [1, 2, 0, 2]);
      assert.equal(values.requiresGrad, false);
    });

    test('typed errors name what was expected and what came', () => {
      const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
      assert.throws(() => matmul(a, a), (e: unknown) => e instanceof ShapeError && /inner dims/.test(e.message));
      assert.throws(() => linear(a, tensor([1, 2], [1, 2])), ShapeError);
      assert.throws(() => add(a, tensor([1, 2, 3], [3])), ShapeError);
      assert.throws(() => gatherRows(a, tensor([0], [1])), DtypeError);
      assert.throws(() => gatherRows(a, indexTensor([2])), ArgumentError);
      assert.throws(() => crossEntropy(a, indexTensor([0, 1, 2])), ShapeError);
      assert.throws(() => new Tensor(new Float32Array(5), [2, 3]), ShapeError);
      assert.throws(() => reshape(a, [4, -1]), ShapeError);
      const p = parameter(new Float32Array(6).fill(1), [2, 3], 'p');
      assert.throws(() => backward(scale(p, 2)), AutogradError);
      assert.throws(() => backward(sum(a)), AutogradError);
      assert.throws(() => topk(a, 4), ArgumentError);
    });
  });
}
