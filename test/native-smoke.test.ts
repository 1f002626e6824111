/**
 * Quick self-check of the native backend against plain float64 loops written here (independent
 * of the ref backend): every kernel on small random inputs with odd sizes, both GEMM providers,
 * the three attention modes with GQA ratios 1–3, a finite-difference check of the attention
 * backward, and sizes large enough to take the multi-threaded paths. Skipped when the addon is
 * not built.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionLayout, Backend, GemmProvider, UnaryOp } from '../src/backend/backend.js';
import { loadNativeBackend, nativeLoadError, rawSgemmGflops } from '../src/backend/native.js';
import { ArgumentError, DtypeError, ShapeError } from '../src/errors.js';

let native: Backend | null = null;
try {
  native = loadNativeBackend();
} catch {
  native = null;
}
const skip = native === null ? `native addon unavailable: ${nativeLoadError() ?? 'unknown'}` : false;
const be = (): Backend => native!;

// ---- helpers ----------------------------------------------------------------------------------

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(12345);
function randArr(n: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (rand() * 2 - 1) * scale;
  return a;
}

/** Max over i of |a − e| / (atol + rtol·|e|) must be ≤ 1; infinities must match exactly. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string, rtol = 2e-5, atol = 1e-5): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!Number.isFinite(e) || !Number.isFinite(a)) {
      if (Object.is(a, e) || (Number.isNaN(a) && Number.isNaN(e))) continue;
      assert.fail(`${what}[${i}]: got ${a}, expected ${e}`);
    }
    const r = Math.abs(a - e) / (atol + rtol * Math.abs(e));
    if (r > worst) {
      worst = r;
      at = i;
    }
  }
  assert.ok(worst <= 1, `${what}: worst at [${at}] got ${actual[at]} expected ${expected[at]} (ratio ${worst.toFixed(2)})`);
}

const SIZES = [1, 7, 33, 129];

// ---- info and settings ------------------------------------------------------------------------

describe('native smoke: info and settings', () => {
  test('info()', { skip }, () => {
    const i = be().info();
    assert.equal(i.backend, 'native');
    assert.ok(i.gemmProviders.includes('builtin'));
    assert.ok(i.gemmProviders.includes(i.gemmProvider));
    assert.ok(['generic', 'avx2', 'avx512', 'avx512bf16'].includes(i.simd), i.simd);
    assert.ok(i.threads >= 1);
    assert.equal(be().name, 'native');
  });

  test('setGemmProvider and setNumThreads validate', { skip }, () => {
    assert.throws(() => be().setGemmProvider('typescript'), ArgumentError);
    assert.throws(() => be().setGemmProvider('cuda' as GemmProvider), ArgumentError);
    assert.throws(() => be().setNumThreads(0), ArgumentError);
    assert.throws(() => be().setNumThreads(1.5), ArgumentError);
    const t = be().info().threads;
    be().setNumThreads(1);
    assert.equal(be().info().threads, 1);
    be().setNumThreads(t);
    assert.equal(be().info().threads, t);
  });

  test('rawSgemmGflops is a positive number with OpenBLAS, else null', { skip }, () => {
    const g = rawSgemmGflops(64, 64, 64, 3);
    if (be().info().gemmProviders.includes('openblas')) assert.ok(typeof g === 'number' && g > 0);
    else assert.equal(g, null);
  });

  test('type, length and range errors', { skip }, () => {
    const g = { transA: false, transB: false, m: 2, n: 2, k: 2, alpha: 1, beta: 0 };
    assert.throws(() => be().gemm(g, new Float64Array(4), new Float32Array(4), new Float32Array(4)), DtypeError);
    assert.throws(() => be().gemm(g, new Float32Array(4), new Float32Array(3), new Float32Array(4)), ShapeError);
    assert.throws(() => be().gatherRows(new Float32Array(4), Int32Array.of(2), 2, new Float32Array(2)), ArgumentError);
    assert.throws(
      () => be().gatherRows(new Float32Array(4), new Float32Array(1) as unknown as Int32Array, 2, new Float32Array(2)),
      DtypeError,
    );
    assert.throws(() => be().topkRows(new Float32Array(6), 3, 4, 'value', new Int32Array(8), new Float32Array(8)), ArgumentError);
    assert.throws(() => be().unary('relu' as UnaryOp, new Float32Array(2), new Float32Array(2)), ArgumentError);
    const layout: AttentionLayout = {
      numHeads: 2,
      numKvHeads: 1,
      headDim: 2,
      scale: 1,
      segments: Int32Array.of(0, 2, 0, 2),
      qPos: Int32Array.of(0, 1),
      kPos: Int32Array.of(1, 0), // not sorted
    };
    const f = (n: number): Float32Array => new Float32Array(n);
    assert.throws(() => be().attentionForward(layout, f(8), f(4), f(4), f(8), f(4)), ArgumentError);
    assert.throws(
      () => be().attentionForward({ ...layout, kPos: Int32Array.of(0, 1), segments: Int32Array.of(0, 3, 0, 2) }, f(8), f(4), f(4), f(8), f(4)),
      ArgumentError,
    );
  });
});

// ---- GEMM -------------------------------------------------------------------------------------

function gemmRef(
  tA: boolean,
  tB: boolean,
  m: number,
  n: number,
  k: number,
  alpha: number,
  beta: number,
  a: Float32Array,
  b: Float32Array,
  c0: Float32Array,
  batch: number,
  sA: number,
  sB: number,
  sC: number,
): Float64Array {
  const c = Float64Array.from(c0);
  for (let bi = 0; bi < batch; bi++) {
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let p = 0; p < k; p++) {
          const av = tA ? a[bi * sA + p * m + i]! : a[bi * sA + i * k + p]!;
          const bv = tB ? b[bi * sB + j * k + p]! : b[bi * sB + p * n + j]!;
          acc += av * bv;
        }
        const idx = bi * sC + i * n + j;
        c[idx] = beta === 0 ? alpha * acc : alpha * acc + beta * c[idx]!;
      }
  }
  return c;
}

describe('native smoke: gemm', () => {
  test('all sizes, transposes, providers; beta 0 ignores NaN in C', { skip }, () => {
    const providers = be().info().gemmProviders;
    const initial = be().info().gemmProvider;
    const shapes: [number, number, number][] = [];
    for (const m of SIZES) for (const n of SIZES) for (const k of [1, 33, 129]) shapes.push([m, n, k]);
    shapes.push([300, 260, 520], [9, 300, 40], [300, 9, 40], [2, 1000, 64], [20, 2000, 64]);
    try {
      for (const p of providers) {
        be().setGemmProvider(p);
        for (const [m, n, k] of shapes)
          for (const tA of [false, true])
            for (const tB of [false, true])
              for (const beta of [0, 0.5]) {
                const a = randArr(m * k);
                const b = randArr(k * n);
                const c = randArr(m * n);
                if (beta === 0) c.fill(NaN);
                const expected = gemmRef(tA, tB, m, n, k, 1.5, beta, a, b, c, 1, 0, 0, 0);
                be().gemm({ transA: tA, transB: tB, m, n, k, alpha: 1.5, beta }, a, b, c);
                assertClose(c, expected, `gemm ${p} ${m}x${n}x${k} tA=${tA} tB=${tB} beta=${beta}`, 1e-4, 1e-4);
              }
      }
    } finally {
      be().setGemmProvider(initial);
    }
  });

  test('batched with strides, broadcast operand, k = 0', { skip }, () => {
    const initial = be().info().gemmProvider;
    try {
      for (const p of be().info().gemmProviders) {
        be().setGemmProvider(p);
        for (const [m, n, k, batch] of [
          [7, 33, 5, 3],
          [16, 16, 16, 12],
          [64, 64, 64, 4],
        ] as const) {
          // A broadcast (stride 0), B packed, C with a gap between items.
          const sA = 0;
          const sB = k * n;
          const sC = m * n + 3;
          const a = randArr(m * k);
          const b = randArr(batch * sB);
          const c = randArr(batch * sC);
          const expected = gemmRef(false, true, m, n, k, 1, 1, a, b, c, batch, sA, sB, sC);
          be().gemm({ transA: false, transB: true, m, n, k, alpha: 1, beta: 1, batch, strideA: sA, strideB: sB, strideC: sC }, a, b, c);
          assertClose(c, expected, `batched gemm ${p} ${m}x${n}x${k}x${batch}`, 1e-4, 1e-4);
        }
        const c = Float32Array.of(1, 2, NaN, 4);
        be().gemm({ transA: false, transB: false, m: 2, n: 2, k: 0, alpha: 1, beta: 0 }, new Float32Array(0), new Float32Array(0), c);
        assert.deepEqual([...c], [0, 0, 0, 0]);
      }
    } finally {
      be().setGemmProvider(initial);
    }
  });
});

// ---- attention --------------------------------------------------------------------------------

interface AttnRef {
  out: Float64Array;
  lse: Float64Array;
  dQ: Float64Array;
  dK: Float64Array;
  dV: Float64Array;
}

function attentionRef(l: AttentionLayout, q: Float32Array, k: Float32Array, v: Float32Array, dOut: Float32Array): AttnRef {
  const { numHeads: H, numKvHeads: KVH, headDim: HD, scale } = l;
  const nq = l.qPos.length;
  const nk = l.kPos.length;
  const out = new Float64Array(nq * H * HD);
  const lse = new Float64Array(nq * H).fill(-Infinity);
  const dQ = new Float64Array(nq * H * HD);
  const dK = new Float64Array(nk * KVH * HD);
  const dV = new Float64Array(nk * KVH * HD);
  for (let s = 0; s < l.segments.length / 4; s++) {
    const qs = l.segments[4 * s]!;
    const ql = l.segments[4 * s + 1]!;
    const ks = l.segments[4 * s + 2]!;
    const kl = l.segments[4 * s + 3]!;
    for (let i = qs; i < qs + ql; i++)
      for (let h = 0; h < H; h++) {
        const g = Math.floor(h / (H / KVH));
        const js: number[] = [];
        const sc: number[] = [];
        for (let j = ks; j < ks + kl; j++) {
          if (l.kPos[j]! > l.qPos[i]!) continue;
          let d = 0;
          for (let c = 0; c < HD; c++) d += q[(i * H + h) * HD + c]! * k[(j * KVH + g) * HD + c]!;
          js.push(j);
          sc.push(d * scale);
        }
        if (js.length === 0) continue;
        const mx = Math.max(...sc);
        const sum = sc.reduce((acc, x) => acc + Math.exp(x - mx), 0);
        lse[i * H + h] = mx + Math.log(sum);
        const P = sc.map((x) => Math.exp(x - mx) / sum);
        const o = (i * H + h) * HD;
        js.forEach((j, t) => {
          for (let c = 0; c < HD; c++) out[o + c]! += P[t]! * v[(j * KVH + g) * HD + c]!;
        });
        let D = 0;
        for (let c = 0; c < HD; c++) D += dOut[o + c]! * out[o + c]!;
        js.forEach((j, t) => {
          let dp = 0;
          for (let c = 0; c < HD; c++) dp += dOut[o + c]! * v[(j * KVH + g) * HD + c]!;
          const ds = P[t]! * (dp - D) * scale;
          for (let c = 0; c < HD; c++) {
            dQ[o + c]! += ds * k[(j * KVH + g) * HD + c]!;
            dK[(j * KVH + g) * HD + c]! += ds * q[o + c]!;
            dV[(j * KVH + g) * HD + c]! += P[t]! * dOut[o + c]!;
          }
        });
      }
  }
  return { out, lse, dQ, dK, dV };
}

type Mode = 'causal' | 'subset' | 'cache' | 'decode';

/** A layout for one of the three modes: two segments plus an uncovered query row and key row. */
function makeLayout(mode: Mode, T: number, H: number, KVH: number, HD: number): AttentionLayout {
  const qPos: number[] = [];
  const kPos: number[] = [];
  const segments: number[] = [];
  for (let s = 0; s < 2; s++) {
    const q0 = qPos.length;
    const k0 = kPos.length;
    if (mode === 'causal') {
      for (let i = 0; i < T; i++) qPos.push(i), kPos.push(i);
      segments.push(q0, T, k0, T);
    } else if (mode === 'subset') {
      let p = 0;
      for (let i = 0; i < T; i++) {
        p += 1 + Math.floor(rand() * 3);
        qPos.push(p);
        kPos.push(p);
      }
      segments.push(q0, T, k0, T);
    } else if (mode === 'decode') {
      // T new tokens after a cache of 50 + s keys (the decoding shape: few queries, many keys)
      const nk = 50 + s;
      for (let j = 0; j < nk; j++) kPos.push(j);
      for (let i = 0; i < T; i++) qPos.push(nk - T + i + (i === 0 && s === 1 ? -60 : 0));
      segments.push(q0, T, k0, nk);
    } else {
      const nk = T + 5;
      for (let j = 0; j < nk; j++) kPos.push(Math.floor(j / 2));
      // Some queries before every key (see none), some after all of them.
      for (let i = 0; i < T; i++) qPos.push(Math.floor(rand() * (nk / 2 + 4)) - 2);
      segments.push(q0, T, k0, nk);
    }
    qPos.push(0); // a query row outside every segment
    kPos.push(0); // a key row outside every segment
  }
  return {
    numHeads: H,
    numKvHeads: KVH,
    headDim: HD,
    scale: 1 / Math.sqrt(HD),
    segments: Int32Array.from(segments),
    qPos: Int32Array.from(qPos),
    kPos: Int32Array.from(kPos),
  };
}

describe('native smoke: attention', () => {
  const cases: [Mode, number, number, number, number][] = [
    ['causal', 1, 2, 2, 8],
    ['causal', 33, 2, 1, 7],
    ['causal', 129, 3, 1, 64],
    ['subset', 70, 6, 3, 33],
    ['subset', 7, 4, 2, 16],
    ['cache', 40, 4, 4, 64],
    ['cache', 33, 6, 2, 129],
    ['causal', 100, 3, 3, 1],
    ['decode', 1, 8, 2, 64],
    ['decode', 3, 6, 3, 32],
    ['decode', 2, 3, 1, 16],
    ['decode', 1, 1, 1, 48],
    ['decode', 5, 2, 2, 64],
  ];
  for (const [mode, T, H, KVH, HD] of cases) {
    test(`${mode} T=${T} H=${H} KVH=${KVH} HD=${HD}`, { skip }, () => {
      const l = makeLayout(mode, T, H, KVH, HD);
      const nq = l.qPos.length;
      const nk = l.kPos.length;
      const q = randArr(nq * H * HD, 2);
      const k = randArr(nk * KVH * HD, 2);
      const v = randArr(nk * KVH * HD);
      const dOut = randArr(nq * H * HD);
      const r = attentionRef(l, q, k, v, dOut);
      const out = new Float32Array(nq * H * HD).fill(NaN);
      const lse = new Float32Array(nq * H).fill(NaN);
      be().attentionForward(l, q, k, v, out, lse);
      assertClose(out, r.out, 'out', 1e-4, 1e-5);
      assertClose(lse, r.lse, 'lse', 1e-5, 1e-5);
      const dQ = new Float32Array(out.length).fill(NaN);
      const dK = new Float32Array(k.length).fill(NaN);
      const dV = new Float32Array(k.length).fill(NaN);
      be().attentionBackward(l, q, k, v, out, lse, dOut, dQ, dK, dV);
      assertClose(dQ, r.dQ, 'dQ', 1e-4, 1e-4);
      assertClose(dK, r.dK, 'dK', 1e-4, 1e-4);
      assertClose(dV, r.dV, 'dV', 1e-4, 1e-4);
    });
  }

  test('large causal batch takes the threaded paths', { skip }, () => {
    for (const [H, KVH] of [
      [4, 1],
      [8, 8],
    ] as const) {
      const T = 200;
      const HD = 32;
      const segs: number[] = [];
      const pos: number[] = [];
      for (let s = 0; s < 3; s++) {
        segs.push(s * T, T, s * T, T);
        for (let i = 0; i < T; i++) pos.push(i);
      }
      const l: AttentionLayout = {
        numHeads: H,
        numKvHeads: KVH,
        headDim: HD,
        scale: 0.2,
        segments: Int32Array.from(segs),
        qPos: Int32Array.from(pos),
        kPos: Int32Array.from(pos),
      };
      const n = pos.length;
      const q = randArr(n * H * HD);
      const k = randArr(n * KVH * HD);
      const v = randArr(n * KVH * HD);
      const dOut = randArr(n * H * HD);
      const r = attentionRef(l, q, k, v, dOut);
      const out = new Float32Array(n * H * HD);
      const lse = new Float32Array(n * H);
      be().attentionForward(l, q, k, v, out, lse);
      assertClose(out, r.out, 'out', 1e-4, 1e-5);
      const dQ = new Float32Array(out.length);
      const dK = new Float32Array(k.length);
      const dV = new Float32Array(k.length);
      be().attentionBackward(l, q, k, v, out, lse, dOut, dQ, dK, dV);
      assertClose(dQ, r.dQ, 'dQ', 1e-4, 1e-4);
      assertClose(dK, r.dK, 'dK', 1e-4, 1e-4);
      assertClose(dV, r.dV, 'dV', 1e-4, 1e-4);
    }
  });

  test('backward matches central finite differences of the forward', { skip }, () => {
    const l = makeLayout('subset', 5, 4, 2, 3);
    const nq = l.qPos.length;
    const nk = l.kPos.length;
    const H = l.numHeads;
    const HD = l.headDim;
    const q = randArr(nq * H * HD);
    const k = randArr(nk * l.numKvHeads * HD);
    const v = randArr(nk * l.numKvHeads * HD);
    const G = randArr(nq * H * HD); // L = Σ out·G
    const out = new Float32Array(nq * H * HD);
    const lse = new Float32Array(nq * H);
    const loss = (): number => {
      be().attentionForward(l, q, k, v, out, lse);
      let s = 0;
      for (let i = 0; i < out.length; i++) s += out[i]! * G[i]!;
      return s;
    };
    loss();
    const dQ = new Float32Array(q.length);
    const dK = new Float32Array(k.length);
    const dV = new Float32Array(v.length);
    be().attentionBackward(l, q, k, v, out, lse, G, dQ, dK, dV);
    const eps = 1e-2;
    for (const [name, x, g] of [
      ['q', q, dQ],
      ['k', k, dK],
      ['v', v, dV],
    ] as const) {
      for (let t = 0; t < 6; t++) {
        const i = Math.floor(rand() * x.length);
        const x0 = x[i]!;
        x[i] = x0 + eps;
        const lp = loss();
        x[i] = x0 - eps;
        const lm = loss();
        x[i] = x0;
        const fd = (lp - lm) / (2 * eps);
        assert.ok(Math.abs(fd - g[i]!) <= 2e-3 + 2e-2 * Math.abs(fd), `d${name}[${i}]: fd ${fd} vs ${g[i]}`);
      }
    }
  });
});

// ---- layers -----------------------------------------------------------------------------------

describe('native smoke: layers', () => {
  test('rope forward and inverse', { skip }, () => {
    for (const [N, nH, HD] of [
      [7, 3, 8],
      [33, 2, 64],
      [1, 1, 2],
    ] as const) {
      const x = randArr(N * nH * HD);
      const pos = Int32Array.from({ length: N }, (_, i) => (i * 37) % 5000);
      pos[0] = 70000; // past the cached table
      const theta = 10000;
      const expected = new Float64Array(x.length);
      const half = HD / 2;
      for (let n = 0; n < N; n++)
        for (let i = 0; i < half; i++) {
          const inv = Math.fround(1 / Math.fround(Math.pow(theta, Math.fround((2 * i) / HD))));
          const a = Math.fround(pos[n]! * inv);
          const c = Math.fround(Math.cos(a));
          const s = Math.fround(Math.sin(a));
          for (let h = 0; h < nH; h++) {
            const b = (n * nH + h) * HD;
            expected[b + i] = x[b + i]! * c - x[b + i + half]! * s;
            expected[b + i + half] = x[b + i + half]! * c + x[b + i]! * s;
          }
        }
      const out = new Float32Array(x.length);
      be().rope(x, pos, nH, HD, theta, false, out);
      assertClose(out, expected, `rope ${N}x${nH}x${HD}`, 1e-5, 1e-6);
      const back = Float32Array.from(out);
      be().rope(back, pos, nH, HD, theta, true, back); // in place
      assertClose(back, x, 'rope inverse', 1e-4, 1e-5);
    }
  });

  test('rmsnorm forward and backward', { skip }, () => {
    for (const [N, D] of [
      [1, 7],
      [33, 129],
      [600, 256],
    ] as const) {
      const x = randArr(N * D, 3);
      const w = randArr(D);
      const g = randArr(N * D);
      const eps = 1e-5;
      const out = new Float32Array(N * D);
      const rstd = new Float32Array(N);
      be().rmsnormForward(x, w, eps, out, rstd);
      const eo = new Float64Array(N * D);
      const er = new Float64Array(N);
      const edx = new Float64Array(N * D);
      const edw = new Float64Array(D);
      for (let n = 0; n < N; n++) {
        let ss = 0;
        for (let j = 0; j < D; j++) ss += x[n * D + j]! ** 2;
        const r = 1 / Math.sqrt(ss / D + eps);
        er[n] = r;
        let dot = 0;
        for (let j = 0; j < D; j++) {
          eo[n * D + j] = x[n * D + j]! * r * w[j]!;
          dot += w[j]! * g[n * D + j]! * x[n * D + j]!;
        }
        for (let j = 0; j < D; j++) {
          edx[n * D + j] = r * w[j]! * g[n * D + j]! - ((r * r * r * dot) / D) * x[n * D + j]!;
          edw[j]! += g[n * D + j]! * x[n * D + j]! * r;
        }
      }
      assertClose(out, eo, 'rmsnorm out');
      assertClose(rstd, er, 'rmsnorm rstd');
      const dX = new Float32Array(N * D);
      const dW = new Float32Array(D).fill(NaN);
      be().rmsnormBackward(x, w, rstd, g, dX, dW);
      assertClose(dX, edx, 'rmsnorm dX', 1e-4, 1e-5);
      assertClose(dW, edw, 'rmsnorm dW', 1e-4, 1e-4);
    }
  });

  test('swiglu forward and backward', { skip }, () => {
    for (const n of [1, 7, 33, 129, 100_003]) {
      const gate = randArr(n, 6);
      const up = randArr(n);
      const d = randArr(n);
      const out = new Float32Array(n);
      be().swigluForward(gate, up, out);
      const eo = new Float64Array(n);
      const edg = new Float64Array(n);
      const edu = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        const g = gate[i]!;
        const s = 1 / (1 + Math.exp(-g));
        eo[i] = g * s * up[i]!;
        edu[i] = d[i]! * g * s;
        edg[i] = d[i]! * up[i]! * s * (1 + g * (1 - s));
      }
      assertClose(out, eo, `swiglu ${n}`);
      const dg = new Float32Array(n);
      const du = new Float32Array(n);
      be().swigluBackward(gate, up, d, dg, du);
      assertClose(dg, edg, `swiglu dGate ${n}`);
      assertClose(du, edu, `swiglu dUp ${n}`);
    }
  });

  test('gatherRows and scatterAddRows with repeated indices', { skip }, () => {
    for (const cols of [1, 7, 129, 512]) {
      const R = 37;
      const N = cols === 512 ? 300 : 50;
      const src = randArr(R * cols);
      const idx = Int32Array.from({ length: N }, () => Math.floor(rand() * R));
      idx[1] = idx[0]!;
      const out = new Float32Array(N * cols);
      be().gatherRows(src, idx, cols, out);
      const eg = new Float64Array(N * cols);
      for (let i = 0; i < N; i++) for (let c = 0; c < cols; c++) eg[i * cols + c] = src[idx[i]! * cols + c]!;
      assertClose(out, eg, `gather cols=${cols}`, 0, 0);
      const acc = randArr(R * cols);
      const es = Float64Array.from(acc);
      const g = randArr(N * cols);
      for (let i = 0; i < N; i++) for (let c = 0; c < cols; c++) es[idx[i]! * cols + c]! += g[i * cols + c]!;
      be().scatterAddRows(g, idx, cols, acc);
      assertClose(acc, es, `scatterAdd cols=${cols}`);
    }
  });
});

// ---- losses -----------------------------------------------------------------------------------

describe('native smoke: losses', () => {
  test('cross-entropy forward and backward with ignored rows', { skip }, () => {
    for (const [N, V] of [
      [1, 1],
      [7, 33],
      [40, 1000],
    ] as const) {
      const logits = randArr(N * V, 5);
      const targets = Int32Array.from({ length: N }, () => Math.floor(rand() * V));
      if (N > 2) targets[2] = -100;
      const losses = new Float32Array(N);
      const lse = new Float32Array(N);
      const count = be().crossEntropyForward(logits, targets, V, -100, losses, lse);
      assert.equal(count, N > 2 ? N - 1 : N);
      const el = new Float64Array(N);
      const eLse = new Float64Array(N);
      const dLoss = randArr(N);
      const ed = new Float64Array(N * V);
      for (let i = 0; i < N; i++) {
        let mx = -Infinity;
        for (let c = 0; c < V; c++) mx = Math.max(mx, logits[i * V + c]!);
        let s = 0;
        for (let c = 0; c < V; c++) s += Math.exp(logits[i * V + c]! - mx);
        eLse[i] = mx + Math.log(s);
        const t = targets[i]!;
        if (t === -100) continue;
        el[i] = eLse[i]! - logits[i * V + t]!;
        for (let c = 0; c < V; c++) ed[i * V + c] = dLoss[i]! * (Math.exp(logits[i * V + c]! - eLse[i]!) - (c === t ? 1 : 0));
      }
      assertClose(losses, el, 'ce losses', 1e-5, 1e-5);
      assertClose(lse, eLse, 'ce lse', 1e-5, 1e-5);
      const d = new Float32Array(N * V).fill(NaN);
      be().crossEntropyBackward(logits, targets, V, -100, lse, dLoss, d);
      assertClose(d, ed, 'ce dLogits', 1e-4, 1e-6);
    }
    const bad = Int32Array.of(0, 5);
    assert.throws(
      () => be().crossEntropyForward(new Float32Array(10), bad, 5, -100, new Float32Array(2), new Float32Array(2)),
      ArgumentError,
    );
  });

  test('bce with logits forward and backward', { skip }, () => {
    const n = 129;
    const z = randArr(n, 30);
    const t = Float32Array.from({ length: n }, () => rand());
    const g = randArr(n);
    const out = new Float32Array(n);
    be().bceWithLogitsForward(z, t, out);
    const eo = Array.from(z, (zi, i) => Math.max(zi, 0) - zi * t[i]! + Math.log1p(Math.exp(-Math.abs(zi))));
    assertClose(out, eo, 'bce');
    const dz = new Float32Array(n);
    const dt = new Float32Array(n);
    be().bceWithLogitsBackward(z, t, g, dz, dt);
    assertClose(dz, Array.from(z, (zi, i) => (1 / (1 + Math.exp(-zi)) - t[i]!) * g[i]!), 'bce dZ');
    assertClose(dt, Array.from(z, (zi, i) => -zi * g[i]!), 'bce dT');
  });
});

// ---- pointwise and rows -------------------------------------------------------------------------

/** erf to ~1e-12 (Taylor series for |x| < 3, continued fraction beyond). */
function erf(x: number): number {
  const ax = Math.abs(x);
  let r: number;
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 200; n++) {
      term *= (-ax * ax) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17) break;
    }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = ax;
    for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
    r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  }
  return x < 0 ? -r : r;
}

describe('native smoke: pointwise and rows', () => {
  const fwd: Record<UnaryOp, (x: number) => number> = {
    sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    tanh: Math.tanh,
    silu: (x) => x / (1 + Math.exp(-x)),
    gelu: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)),
  };
  const der: Record<UnaryOp, (x: number) => number> = {
    sigmoid: (x) => {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 - s);
    },
    tanh: (x) => 1 - Math.tanh(x) ** 2,
    silu: (x) => {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 + x * (1 - s));
    },
    gelu: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  };
  for (const op of ['sigmoid', 'tanh', 'silu', 'gelu'] as const) {
    test(`unary ${op} forward and backward`, { skip }, () => {
      for (const n of [1, 7, 33, 70_001]) {
        const x = randArr(n, 8);
        const y = new Float32Array(n);
        be().unary(op, x, y);
        assertClose(y, Array.from(x, fwd[op]), `${op} ${n}`, 1e-5, 1e-6);
        const d = randArr(n);
        const dx = new Float32Array(n);
        be().unaryBackward(op, x, y, d, dx);
        assertClose(dx, Array.from(x, (xi, i) => der[op](xi) * d[i]!), `${op}' ${n}`, 1e-4, 1e-5);
        const inplace = Float32Array.from(x);
        be().unary(op, inplace, inplace);
        assertClose(inplace, y, `${op} in place`, 0, 0);
      }
    });
  }

  test('softmax and logsumexp rows, forward and backward', { skip }, () => {
    for (const [R, C] of [
      [1, 1],
      [7, 33],
      [129, 129],
      [300, 1000],
    ] as const) {
      const x = randArr(R * C, 10);
      if (R > 3) {
        x.fill(-Infinity, 3 * C, 4 * C); // an all -inf row for logsumexp
        x[3 * C] = -Infinity;
      }
      const y = new Float32Array(R * C);
      const lse = new Float32Array(R);
      be().logsumexpRows(x, C, lse);
      const el = new Float64Array(R);
      for (let r = 0; r < R; r++) {
        let mx = -Infinity;
        for (let c = 0; c < C; c++) mx = Math.max(mx, x[r * C + c]!);
        let s = 0;
        for (let c = 0; c < C; c++) s += Math.exp(x[r * C + c]! - mx);
        el[r] = mx === -Infinity ? -Infinity : mx + Math.log(s);
      }
      assertClose(lse, el, 'logsumexp', 1e-5, 1e-5);
      const xs = R > 3 ? x.map((v, i) => (Math.floor(i / C) === 3 ? 0 : v)) : x; // softmax on finite rows
      be().softmaxRows(xs, C, y);
      const ey = new Float64Array(R * C);
      for (let r = 0; r < R; r++) {
        let mx = -Infinity;
        for (let c = 0; c < C; c++) mx = Math.max(mx, xs[r * C + c]!);
        let s = 0;
        for (let c = 0; c < C; c++) s += Math.exp(xs[r * C + c]! - mx);
        for (let c = 0; c < C; c++) ey[r * C + c] = Math.exp(xs[r * C + c]! - mx) / s;
      }
      assertClose(y, ey, 'softmax', 1e-5, 1e-7);
      const g = randArr(R * C);
      const dx = Float32Array.from(g);
      be().softmaxRowsBackward(y, dx, C, dx); // dX aliases dOut
      const edx = new Float64Array(R * C);
      for (let r = 0; r < R; r++) {
        let dot = 0;
        for (let c = 0; c < C; c++) dot += y[r * C + c]! * g[r * C + c]!;
        for (let c = 0; c < C; c++) edx[r * C + c] = y[r * C + c]! * (g[r * C + c]! - dot);
      }
      assertClose(dx, edx, 'softmax backward', 1e-4, 1e-6);
      const gl = randArr(R);
      const lseFinite = new Float32Array(R);
      be().logsumexpRows(xs, C, lseFinite);
      const dl = new Float32Array(R * C);
      be().logsumexpRowsBackward(xs, lseFinite, gl, C, dl);
      assertClose(dl, Array.from(ey, (p, i) => p * gl[Math.floor(i / C)]!), 'logsumexp backward', 1e-4, 1e-7);
    }
  });

  test('topkRows, both orders, ties to the lower index', { skip }, () => {
    const x = Float32Array.of(1, 3, 3, 2, 0, 3, /* row 2 */ 5, 4, 3, 2, 1, 0);
    const idx = new Int32Array(6);
    const val = new Float32Array(6);
    be().topkRows(x, 6, 3, 'value', idx, val);
    assert.deepEqual([...idx], [1, 2, 5, 0, 1, 2]);
    assert.deepEqual([...val], [3, 3, 3, 5, 4, 3]);
    be().topkRows(x, 6, 3, 'index', idx, val);
    assert.deepEqual([...idx], [1, 2, 5, 0, 1, 2]);
    const y = Float32Array.of(0.5, 9, -1, 9, 7);
    const i2 = new Int32Array(3);
    const v2 = new Float32Array(3);
    be().topkRows(y, 5, 3, 'value', i2, v2);
    assert.deepEqual([...i2], [1, 3, 4]);
    be().topkRows(y, 5, 3, 'index', i2, v2);
    assert.deepEqual([...i2], [1, 3, 4]);
    assert.deepEqual([...v2], [9, 9, 7]);
    // random rows against a sort
    const R = 20;
    const C = 129;
    const z = randArr(R * C);
    const k = 17;
    const zi = new Int32Array(R * k);
    const zv = new Float32Array(R * k);
    be().topkRows(z, C, k, 'index', zi, zv);
    for (let r = 0; r < R; r++) {
      const order = Array.from({ length: C }, (_, c) => c).sort((a, b) => z[r * C + b]! - z[r * C + a]! || a - b);
      const want = order.slice(0, k).sort((a, b) => a - b);
      assert.deepEqual([...zi.subarray(r * k, (r + 1) * k)], want);
    }
  });

  test('reductions in float64, sumRows, sumCols', { skip }, () => {
    for (const n of [1, 7, 129, 300_001]) {
      const x = randArr(n);
      let s = 0;
      let s2 = 0;
      for (const v of x) {
        s += v;
        s2 += v * v;
      }
      assert.ok(Math.abs(be().sum(x) - s) <= 1e-9 * n, `sum ${n}`);
      assert.ok(Math.abs(be().sumSquares(x) - s2) <= 1e-9 * n, `sumSquares ${n}`);
    }
    for (const [R, C] of [
      [1, 1],
      [7, 33],
      [129, 7],
      [5000, 3],
      [300, 1000],
    ] as const) {
      const x = randArr(R * C);
      const er = new Float64Array(C);
      const ec = new Float64Array(R);
      for (let r = 0; r < R; r++)
        for (let c = 0; c < C; c++) {
          er[c]! += x[r * C + c]!;
          ec[r]! += x[r * C + c]!;
        }
      const outR = new Float32Array(C);
      const outC = new Float32Array(R);
      be().sumRows(x, C, outR);
      be().sumCols(x, C, outC);
      assertClose(outR, er, `sumRows ${R}x${C}`, 1e-5, 1e-5);
      assertClose(outC, ec, `sumCols ${R}x${C}`, 1e-5, 1e-5);
    }
  });

  test('add, mul, scale, axpy, fill (with aliasing)', { skip }, () => {
    for (const n of [1, 33, 100_001]) {
      const a = randArr(n);
      const b = randArr(n);
      const out = new Float32Array(n);
      be().add(a, b, out);
      assertClose(out, Array.from(a, (v, i) => Math.fround(v + b[i]!)), 'add', 0, 0);
      be().mul(a, b, out);
      assertClose(out, Array.from(a, (v, i) => Math.fround(v * b[i]!)), 'mul', 0, 0);
      const a2 = Float32Array.from(a);
      be().scale(a2, 3, a2);
      assertClose(a2, Array.from(a, (v) => Math.fround(3 * v)), 'scale', 0, 0);
      const y = Float32Array.from(b);
      be().axpy(0.5, a, y);
      assertClose(y, Array.from(b, (v, i) => v + 0.5 * a[i]!), 'axpy', 1e-6, 1e-7);
      be().add(a2, a2, a2);
      assertClose(a2, Array.from(a, (v) => Math.fround(2 * Math.fround(3 * v))), 'add alias', 0, 0);
      be().fill(out, 1.25);
      assert.ok(out.every((v) => v === 1.25));
      // views into a larger buffer (byte offsets) read and write only their own elements
      const big = randArr(n + 8);
      const view = big.subarray(3, 3 + n);
      const before = Float32Array.from(big);
      be().add(view, view, view);
      for (let i = 0; i < n + 8; i++) {
        const want = i >= 3 && i < 3 + n ? Math.fround(2 * before[i]!) : before[i]!;
        assert.equal(big[i], want, `subarray add at ${i}`);
      }
    }
  });

  test('adamwStep matches torch.optim.AdamW arithmetic', { skip }, () => {
    const n = 70_001;
    const p = randArr(n);
    const m = randArr(n, 0.1);
    const v = Float32Array.from(randArr(n, 0.01), Math.abs);
    const g = randArr(n);
    const args = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 };
    const ep = new Float64Array(n);
    const em = new Float64Array(n);
    const ev = new Float64Array(n);
    const bc1 = 1 - args.beta1 ** args.step;
    const bc2 = 1 - args.beta2 ** args.step;
    for (let i = 0; i < n; i++) {
      em[i] = args.beta1 * m[i]! + (1 - args.beta1) * g[i]!;
      ev[i] = args.beta2 * v[i]! + (1 - args.beta2) * g[i]! ** 2;
      const pd = p[i]! * (1 - args.lr * args.weightDecay);
      ep[i] = pd - (args.lr * (em[i]! / bc1)) / (Math.sqrt(ev[i]! / bc2) + args.eps);
    }
    be().adamwStep(p, g, m, v, args);
    assertClose(m, em, 'adamw m', 1e-5, 1e-7);
    assertClose(v, ev, 'adamw v', 1e-5, 1e-9);
    assertClose(p, ep, 'adamw param', 1e-5, 1e-6);
  });
});
