/**
 * Backward kernels against central finite differences, in float64 on the ref backend.
 *
 * For a kernel y = f(x) and a fixed random r, the scalar L(x) = Σ r ⊙ f(x) has gradient
 * ∂L/∂x = backward(dOut = r). Each check compares that with (L(x + h·e_i) − L(x − h·e_i)) / 2h
 * for every input coordinate i (sizes are small), with h = 1e-5: truncation ~h² and rounding
 * ~1e-16/h both sit far below the tolerance GRAD_TOL.
 *
 * That float32 backward kernels on every backend agree with this float64 backward is checked by
 * conformance.test.ts (the *Backward cases). AdamW is checked on every backend against a
 * hand-written float64 formula.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionLayout, Backend, GemmArgs, UnaryOp } from '../src/backend/index.js';
import { erf, erfc } from '../src/backend/ref/special.js';
import { backendsUnderTest, refBackend } from './helpers/backends.js';
import { Rng, randomFloats, randomInts, uniformFloats } from './helpers/rng.js';
import { assertClose, centralDifference, dot } from './helpers/numeric.js';
import { HEAD_CONFIGS, causalSequences, causalSubset, separateKeys } from './helpers/attention-layouts.js';

const STEP = 1e-5;
const GRAD_TOL = 1e-6;

const ref: Backend = refBackend();
const rng = new Rng(7031);

/**
 * Checks `analytic` = ∂L/∂x by central differences. `loss` reads x (which this function
 * perturbs in place and restores).
 */
function checkGradient(label: string, x: Float64Array, analytic: Float64Array, loss: () => number, tol = GRAD_TOL): void {
  assert.equal(analytic.length, x.length, `${label}: gradient length`);
  const numeric = Float64Array.from({ length: x.length }, (_, i) => centralDifference(x, i, STEP, loss));
  assertClose(analytic, numeric, tol, `${label} vs finite differences`);
}

describe('gradcheck (ref, float64, central differences)', () => {
  test('gemm: gradients w.r.t. A and B are gemms with transposes', () => {
    const [m, n, k, alpha] = [3, 4, 5, 0.7];
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const label = `gemm ${transA ? 'A^T' : 'A'}·${transB ? 'B^T' : 'B'}`;
        const a = randomFloats(rng, m * k);
        const b = randomFloats(rng, k * n);
        const r = randomFloats(rng, m * n); // = dC
        const args: GemmArgs = { transA, transB, m, n, k, alpha, beta: 0 };
        const c = new Float64Array(m * n);
        const loss = (): number => {
          ref.gemm(args, a, b, c);
          return dot(r, c);
        };
        // d op(A) = alpha·dC·op(B)^T (m, k); stored transposed when transA: alpha·op(B)·dC^T (k, m).
        const dA = new Float64Array(m * k);
        if (!transA) ref.gemm({ transA: false, transB: !transB, m, n: k, k: n, alpha, beta: 0 }, r, b, dA);
        else ref.gemm({ transA: transB, transB: true, m: k, n: m, k: n, alpha, beta: 0 }, b, r, dA);
        // d op(B) = alpha·op(A)^T·dC (k, n); stored transposed when transB: alpha·dC^T·op(A) (n, k).
        const dB = new Float64Array(k * n);
        if (!transB) ref.gemm({ transA: !transA, transB: false, m: k, n, k: m, alpha, beta: 0 }, a, r, dB);
        else ref.gemm({ transA: true, transB: transA, m: n, n: k, k: m, alpha, beta: 0 }, r, a, dB);
        checkGradient(`${label} dA`, a, dA, loss);
        checkGradient(`${label} dB`, b, dB, loss);
      }
    }
  });

  for (const heads of HEAD_CONFIGS) {
    const small = { ...heads, headDim: Math.min(heads.headDim, 4) };
    const layouts = [
      causalSequences(small, [3, 5]),
      causalSubset(small, rng, [{ seqLen: 12, count: 4 }, { seqLen: 8, count: 3 }]),
      separateKeys(small),
    ];
    for (const ac of layouts) {
      const { numHeads: H, numKvHeads: KVH, headDim: HD } = ac.layout;
      test(`attention dQ/dK/dV: ${ac.mode}, H=${H} KVH=${KVH} HD=${HD}`, () => {
        const q = randomFloats(rng, ac.nq * H * HD, 1.5);
        const k = randomFloats(rng, ac.nk * KVH * HD, 1.5);
        const v = randomFloats(rng, ac.nk * KVH * HD);
        const r = randomFloats(rng, ac.nq * H * HD);
        const out = new Float64Array(q.length);
        const lse = new Float64Array(ac.nq * H);
        const loss = (): number => {
          ref.attentionForward(ac.layout, q, k, v, out, lse);
          return dot(r, out);
        };
        loss();
        const dQ = new Float64Array(q.length);
        const dK = new Float64Array(k.length);
        const dV = new Float64Array(v.length);
        ref.attentionBackward(ac.layout, q, k, v, out, lse, r, dQ, dK, dV);
        checkGradient('attention dQ', q, dQ, loss);
        checkGradient('attention dK', k, dK, loss);
        checkGradient('attention dV', v, dV, loss);
        checkOutsideRowsHaveNoGradient(ac.layout, dQ, dK);
      });
    }
  }

  test('rope: the inverse rotation is the backward', () => {
    const [N, nHeads, HD] = [5, 2, 8];
    const x = randomFloats(rng, N * nHeads * HD);
    const pos = randomInts(rng, N, 0, 300);
    const r = randomFloats(rng, x.length);
    const out = new Float64Array(x.length);
    const loss = (): number => {
      ref.rope(x, pos, nHeads, HD, 10000, false, out);
      return dot(r, out);
    };
    const dX = new Float64Array(x.length);
    ref.rope(r, pos, nHeads, HD, 10000, true, dX);
    checkGradient('rope dX', x, dX, loss);
    ref.rope(x, pos, nHeads, HD, 10000, false, out);
    ref.rope(out, pos, nHeads, HD, 10000, true, out);
    assertClose(out, x, 1e-14, 'rope inverse(forward(x)) = x');
  });

  test('rmsnorm dX and dW', () => {
    const [N, D] = [4, 7];
    const x = randomFloats(rng, N * D, 2);
    const w = randomFloats(rng, D);
    const r = randomFloats(rng, N * D);
    const out = new Float64Array(N * D);
    const rstd = new Float64Array(N);
    const loss = (): number => {
      ref.rmsnormForward(x, w, 1e-5, out, rstd);
      return dot(r, out);
    };
    loss();
    const dX = new Float64Array(N * D);
    const dW = new Float64Array(D);
    ref.rmsnormBackward(x, w, rstd, r, dX, dW);
    checkGradient('rmsnorm dX', x, dX, loss);
    checkGradient('rmsnorm dW', w, dW, loss);
  });

  test('swiglu dGate and dUp', () => {
    const n = 33;
    const gate = randomFloats(rng, n, 4);
    const up = randomFloats(rng, n);
    const r = randomFloats(rng, n);
    const out = new Float64Array(n);
    const loss = (): number => {
      ref.swigluForward(gate, up, out);
      return dot(r, out);
    };
    const dGate = new Float64Array(n);
    const dUp = new Float64Array(n);
    ref.swigluBackward(gate, up, r, dGate, dUp);
    checkGradient('swiglu dGate', gate, dGate, loss);
    checkGradient('swiglu dUp', up, dUp, loss);
  });

  test('gatherRows and scatterAddRows are adjoint', () => {
    const [R, C, N] = [5, 3, 9];
    const src = randomFloats(rng, R * C);
    const idx = randomInts(rng, N, 0, R);
    const r = randomFloats(rng, N * C);
    const gathered = new Float64Array(N * C);
    const loss = (): number => {
      ref.gatherRows(src, idx, C, gathered);
      return dot(r, gathered);
    };
    const dSrc = new Float64Array(R * C); // scatterAddRows accumulates into zeros
    ref.scatterAddRows(r, idx, C, dSrc);
    // ⟨gather(src), r⟩ = ⟨src, scatter(r)⟩
    assertClose([loss()], [dot(src, dSrc)], 1e-14, 'adjointness');
    checkGradient('gatherRows dSrc', src, dSrc, loss);
  });

  test('cross-entropy dLogits (with an ignored row)', () => {
    const [N, V] = [4, 7];
    const logits = randomFloats(rng, N * V, 3);
    const targets = Int32Array.of(2, -100, 0, 6);
    const r = randomFloats(rng, N);
    const losses = new Float64Array(N);
    const lse = new Float64Array(N);
    const loss = (): number => {
      ref.crossEntropyForward(logits, targets, V, -100, losses, lse);
      return dot(r, losses);
    };
    loss();
    const dLogits = new Float64Array(N * V);
    ref.crossEntropyBackward(logits, targets, V, -100, lse, r, dLogits);
    checkGradient('cross-entropy dLogits', logits, dLogits, loss);
  });

  test('bce with logits dZ and dT', () => {
    const n = 33;
    const z = randomFloats(rng, n, 6);
    const t = uniformFloats(rng, n, 0, 1);
    const r = randomFloats(rng, n);
    const out = new Float64Array(n);
    const loss = (): number => {
      ref.bceWithLogitsForward(z, t, out);
      return dot(r, out);
    };
    const dZ = new Float64Array(n);
    const dT = new Float64Array(n);
    ref.bceWithLogitsBackward(z, t, r, dZ, dT);
    checkGradient('bce dZ', z, dZ, loss);
    checkGradient('bce dT', t, dT, loss);
  });

  for (const op of ['sigmoid', 'tanh', 'silu', 'gelu'] as const satisfies readonly UnaryOp[]) {
    test(`unary ${op}`, () => {
      const x = Float64Array.from([...randomFloats(rng, 40, 5), -9, -6.5, 6.5, 9]);
      const r = randomFloats(rng, x.length);
      const y = new Float64Array(x.length);
      const loss = (): number => {
        ref.unary(op, x, y);
        return dot(r, y);
      };
      loss();
      const dX = new Float64Array(x.length);
      ref.unaryBackward(op, x, y, r, dX);
      checkGradient(`${op} dX`, x, dX, loss);
    });
  }

  test('softmaxRows', () => {
    const [R, C] = [3, 7];
    const x = randomFloats(rng, R * C, 3);
    const r = randomFloats(rng, R * C);
    const y = new Float64Array(R * C);
    const loss = (): number => {
      ref.softmaxRows(x, C, y);
      return dot(r, y);
    };
    loss();
    const dX = new Float64Array(R * C);
    ref.softmaxRowsBackward(y, r, C, dX);
    checkGradient('softmax dX', x, dX, loss);
  });

  test('logsumexpRows', () => {
    const [R, C] = [3, 7];
    const x = randomFloats(rng, R * C, 3);
    const r = randomFloats(rng, R);
    const lse = new Float64Array(R);
    const loss = (): number => {
      ref.logsumexpRows(x, C, lse);
      return dot(r, lse);
    };
    loss();
    const dX = new Float64Array(R * C);
    ref.logsumexpRowsBackward(x, lse, r, C, dX);
    checkGradient('logsumexp dX', x, dX, loss);
  });
});

/** Query rows and key rows in no segment get exactly zero gradient. */
function checkOutsideRowsHaveNoGradient(layout: AttentionLayout, dQ: Float64Array, dK: Float64Array): void {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, segments } = layout;
  const nq = dQ.length / (H * HD);
  const nk = dK.length / (KVH * HD);
  const inQ = new Array<boolean>(nq).fill(false);
  const inK = new Array<boolean>(nk).fill(false);
  for (let s = 0; s < segments.length / 4; s++) {
    for (let i = 0; i < segments[4 * s + 1]!; i++) inQ[segments[4 * s]! + i] = true;
    for (let j = 0; j < segments[4 * s + 3]!; j++) inK[segments[4 * s + 2]! + j] = true;
  }
  for (let i = 0; i < nq; i++) {
    if (!inQ[i]) assert.ok(dQ.subarray(i * H * HD, (i + 1) * H * HD).every((g) => g === 0), `dQ row ${i} outside`);
  }
  for (let j = 0; j < nk; j++) {
    if (!inK[j]) assert.ok(dK.subarray(j * KVH * HD, (j + 1) * KVH * HD).every((g) => g === 0), `dK row ${j} outside`);
  }
}

describe('ref special functions', () => {
  test('erf and erfc match mpmath (50 digits) to ~1e-15 relative', () => {
    // [x, erf(x), erfc(x)] from mpmath.erf / mpmath.erfc, rounded to float64.
    const table: [number, number, number][] = [
      [1e-10, 1.1283791670955126e-10, 0.999999999887162],
      [0.5, 0.5204998778130465, 0.4795001221869535],
      [1, 0.8427007929497149, 0.15729920705028513],
      [1.9, 0.9927904292352575, 0.00720957076474253],
      [2, 0.9953222650189527, 0.004677734981047266],
      [2.5, 0.999593047982555, 0.0004069520174449589],
      [3, 0.9999779095030014, 2.209049699858544e-5],
      [4.5, 0.9999999998033839, 1.9661604415428876e-10],
      [6, 1, 2.1519736712498913e-17],
      [10, 1, 2.088487583762545e-45],
    ];
    for (const [x, e, c] of table) {
      assertClose([erf(x)], [e], 2e-15, `erf(${x})`);
      assertClose([erf(-x)], [-e], 2e-15, `erf(${-x})`);
      assertClose([erfc(x)], [c], 1e-13, `erfc(${x})`);
    }
  });
});

describe('AdamW against a hand-written float64 formula', () => {
  /** torch.optim.AdamW, float64, written out independently of the kernels. */
  function adamwReference(param: Float64Array, grads: Float64Array[], lr: number, b1: number, b2: number, eps: number, wd: number) {
    const p = Float64Array.from(param);
    const m = new Float64Array(p.length);
    const v = new Float64Array(p.length);
    grads.forEach((g, s) => {
      const step = s + 1;
      for (let i = 0; i < p.length; i++) {
        m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
        v[i] = b2 * v[i]! + (1 - b2) * g[i]! * g[i]!;
        p[i] = p[i]! * (1 - lr * wd);
        const mHat = m[i]! / (1 - b1 ** step);
        const vHat = v[i]! / (1 - b2 ** step);
        p[i] = p[i]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
      }
    });
    return { p, m, v };
  }

  const n = 33;
  const param0 = randomFloats(rng, n);
  const grads = Array.from({ length: 6 }, () => randomFloats(rng, n, 0.3));
  const want = adamwReference(param0, grads, 0.02, 0.9, 0.999, 1e-8, 0.1);

  for (const be of backendsUnderTest()) {
    for (const dtype of be.name === 'ref' ? (['f64', 'f32'] as const) : (['f32'] as const)) {
      test(`adamwStep ×6 on ${be.name} ${dtype}`, () => {
        const make = (x: ArrayLike<number>) => (dtype === 'f64' ? Float64Array.from(x) : Float32Array.from(x));
        const p = make(param0);
        const m = make(new Float64Array(n));
        const v = make(new Float64Array(n));
        grads.forEach((g, s) => {
          be.adamwStep(p, make(g), m, v, { lr: 0.02, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: s + 1 });
        });
        const tol = dtype === 'f64' ? 1e-13 : 1e-5;
        assertClose(p, want.p, tol, 'param');
        assertClose(m, want.m, tol, 'm');
        assertClose(v, want.v, tol, 'v');
      });
    }

    test(`global gradient norm via sumSquares on ${be.name}`, () => {
      const tensors = [randomFloats(rng, 7), randomFloats(rng, 129), randomFloats(rng, 1)];
      let want2 = 0;
      for (const t of tensors) for (const g of t) want2 += g * g;
      const got = Math.sqrt(tensors.reduce((acc, t) => acc + be.sumSquares(Float32Array.from(t)), 0));
      assertClose([got], [Math.sqrt(want2)], 1e-12, 'global grad norm');
    });
  }
});
