// Kernel benchmark: one JSON object per line, each naming the cpu, the SIMD variant and the threads.
//   ceilings      the machine's own: FMA-throughput probe per SIMD variant this CPU runs, streaming
//                 read beyond L3 (bench/ceilings.ts)
//   gemm          every backend × GEMM provider at the shapes of the `small` model (2048 tokens
//                 per step) and of single-token decoding; the native built-in kernel once per SIMD
//                 variant; peak_fraction = GFLOP/s ÷ the FMA probe of the line's variant
//   gemm_direct   OpenBLAS's cblas_sgemm timed inside C++ (no JS in the loop) at the same shapes,
//                 and our API's rate as a fraction of it
//   attention     fused attention forward+backward at T = 256, head_dim 64, as GFLOP/s and as a
//                 fraction of the GEMM rate measured in this run
//   attention_paged  decoding against a paged KV pool: 32 query rows, each against its own 256-slot
//                 stream (blocks of 16 in shuffled order), µs per attentionPaged call, and the same
//                 work through attentionForward with the keys laid out contiguously (one segment per
//                 query row) for comparison; pools "warm" (one pool, in L3 from call to call) and
//                 "cold" (8 pools cycled through, 64 MB: from memory, as a decoding step reads them)
//   op_overhead   µs per call of a tiny op through the tensor API, and through the backend directly
//
//   npm run bench:kernels            (MOR_BENCH_QUICK=1 for a shorter run)
import { availableBackends, getBackendByName, setBackend } from '../src/backend/index.js';
import type { AttentionLayout, Backend, GemmProvider, PagedAttentionLayout } from '../src/backend/backend.js';
import { measureGemmGflops } from '../src/backend/peak.js';
import { rawSgemmGflops } from '../src/backend/native.js';
import { add, tensor } from '../src/tensor/index.js';
import { context, measureCeilings, type Ceilings } from './ceilings.js';

const QUICK = process.env['MOR_BENCH_QUICK'] === '1';
const MIN_SECONDS = QUICK ? 0.1 : 0.4;

// (m, n, k) and the transposes the model uses: x·Wᵀ forward (transB), dY·W and dYᵀ·X backward.
const SHAPES: Array<[number, number, number]> = [
  [2048, 704, 256],
  [2048, 256, 704],
  [2048, 8192, 256],
  [2048, 256, 256],
  [1, 704, 256],
];

// cpu / simd / threads of the backend being measured, put on every line.
let lineContext: Record<string, unknown> = {};

function emit(obj: Record<string, unknown>): void {
  console.log(JSON.stringify({ ...obj, ...lineContext }));
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

function fillRandom(a: Float32Array, seed: number): void {
  let s = seed;
  for (let i = 0; i < a.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 4294967296) * 2 - 1;
  }
}

function benchGemm(be: Backend, provider: GemmProvider, ceilings: Ceilings | null): Map<string, number> {
  be.setGemmProvider(provider);
  const peak = ceilings?.fmaGflops[be.info().simd];
  const rates = new Map<string, number>();
  for (const [m, n, k] of SHAPES) {
    // The TypeScript GEMM is ~100× slower: time it on the small shapes only.
    if (provider === 'typescript' && m * n * k > 2048 * 704 * 256) continue;
    const gflops = measureGemmGflops(be, m, n, k, { transB: true, minSeconds: provider === 'typescript' ? 0.2 : MIN_SECONDS });
    rates.set(`${m}x${n}x${k}`, gflops);
    const fraction = peak ? { peak_fraction: round(gflops / peak) } : {};
    emit({ bench: 'gemm', backend: be.name, provider, m, n, k, gflops: round(gflops, 2), ...fraction });
  }
  return rates;
}

function benchAttention(be: Backend, gemmRate: number): void {
  const B = QUICK ? 2 : 8;
  const T = 256;
  const H = 4;
  const KVH = 2;
  const HD = 64;
  const N = B * T;
  const segments = new Int32Array(4 * B);
  const pos = new Int32Array(N);
  for (let b = 0; b < B; b++) {
    segments.set([b * T, T, b * T, T], 4 * b);
    for (let t = 0; t < T; t++) pos[b * T + t] = t;
  }
  const layout: AttentionLayout = { numHeads: H, numKvHeads: KVH, headDim: HD, scale: 1 / Math.sqrt(HD), segments, qPos: pos, kPos: pos };
  const q = new Float32Array(N * H * HD);
  const k = new Float32Array(N * KVH * HD);
  const v = new Float32Array(N * KVH * HD);
  const dOut = new Float32Array(N * H * HD);
  fillRandom(q, 1);
  fillRandom(k, 2);
  fillRandom(v, 3);
  fillRandom(dOut, 4);
  const out = new Float32Array(q.length);
  const lse = new Float32Array(N * H);
  const dQ = new Float32Array(q.length);
  const dK = new Float32Array(k.length);
  const dV = new Float32Array(v.length);
  // Causal-triangle FLOPs: forward QKᵀ and PV (2 matmuls), backward 4 matmuls, each 2·pairs·HD per head.
  const pairs = (T * (T + 1)) / 2;
  const flopFwd = B * H * 2 * 2 * pairs * HD;
  const flopBwd = B * H * 4 * 2 * pairs * HD;
  const run = (): void => {
    be.attentionForward(layout, q, k, v, out, lse);
    be.attentionBackward(layout, q, k, v, out, lse, dOut, dQ, dK, dV);
  };
  const us = usPerCall(run, be.name === 'ref' ? 0.2 : MIN_SECONDS);
  const best = (flopFwd + flopBwd) / (us * 1e-6) / 1e9;
  emit({ bench: 'attention', backend: be.name, batch: B, T, heads: H, kv_heads: KVH, head_dim: HD, gflops: round(best, 2), ratio_to_gemm: round(best / gemmRate) });
}

/** Best µs per call of fn over 3 timed runs of at least minSeconds each (after one warm-up call). */
function usPerCall(fn: () => void, minSeconds: number): number {
  fn();
  let best = Infinity;
  for (let r = 0; r < 3; r++) {
    let iters = 0;
    const t0 = performance.now();
    let dt = 0;
    do {
      fn();
      iters++;
      dt = (performance.now() - t0) / 1000;
    } while (dt < minSeconds);
    best = Math.min(best, (dt * 1e6) / iters);
  }
  return best;
}

function benchPagedAttention(be: Backend): void {
  const NQ = 32;
  const KEYS = 256;
  const BS = 16;
  const H = 4;
  const KVH = 2;
  const HD = 64;
  const blocksPer = KEYS / BS;
  const numBlocks = NQ * blocksPer;
  const numSlots = numBlocks * BS;
  // Shuffled block ids (deterministic), so every stream's blocks are scattered over the pool.
  const perm = Array.from({ length: numBlocks }, (_, i) => i);
  let s = 12345;
  for (let i = numBlocks - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const blockTables = Int32Array.from(perm);
  const streams = new Int32Array(2 * NQ);
  const posPool = new Int32Array(numSlots);
  const qPos = new Int32Array(NQ).fill(KEYS - 1);
  for (let i = 0; i < NQ; i++) {
    streams[2 * i] = i * blocksPer;
    streams[2 * i + 1] = KEYS;
    for (let j = 0; j < KEYS; j++) posPool[perm[i * blocksPer + Math.floor(j / BS)]! * BS + (j % BS)] = j;
  }
  const paged: PagedAttentionLayout = { numHeads: H, numKvHeads: KVH, headDim: HD, scale: 1 / Math.sqrt(HD), blockSize: BS, qPos, posPool, streams, blockTables };
  const q = new Float32Array(NQ * H * HD);
  const kPool = new Float32Array(numSlots * KVH * HD);
  const vPool = new Float32Array(numSlots * KVH * HD);
  fillRandom(q, 5);
  fillRandom(kPool, 6);
  fillRandom(vPool, 7);
  const out = new Float32Array(q.length);

  // The same keys, contiguous: query row i is segment [i, 1, i·KEYS, KEYS] (separate-keys mode).
  const row = KVH * HD;
  const k = new Float32Array(NQ * KEYS * row);
  const v = new Float32Array(NQ * KEYS * row);
  const segments = new Int32Array(4 * NQ);
  const kPos = new Int32Array(NQ * KEYS);
  for (let i = 0; i < NQ; i++) {
    segments.set([i, 1, i * KEYS, KEYS], 4 * i);
    for (let j = 0; j < KEYS; j++) {
      const slot = perm[i * blocksPer + Math.floor(j / BS)]! * BS + (j % BS);
      k.set(kPool.subarray(slot * row, (slot + 1) * row), (i * KEYS + j) * row);
      v.set(vPool.subarray(slot * row, (slot + 1) * row), (i * KEYS + j) * row);
      kPos[i * KEYS + j] = j;
    }
  }
  const contiguous: AttentionLayout = { numHeads: H, numKvHeads: KVH, headDim: HD, scale: paged.scale, segments, qPos, kPos };
  const lse = new Float32Array(NQ * H);

  const minSeconds = be.name === 'ref' ? 0.2 : MIN_SECONDS;
  const us = usPerCall(() => be.attentionPaged(paged, q, kPool, vPool, out), minSeconds);
  const usContiguous = usPerCall(() => be.attentionForward(contiguous, q, k, v, out, lse), minSeconds);
  const kvBytes = 2 * NQ * KEYS * row * 4; // K and V rows read once per query row
  const shape = { bench: 'attention_paged', backend: be.name, batch: NQ, keys: KEYS, block_size: BS, heads: H, kv_heads: KVH, head_dim: HD };
  emit({
    ...shape,
    pools: 'warm',
    us_per_call: round(us, 1),
    kv_gb_per_s: round(kvBytes / (us * 1e-6) / 1e9, 2),
    contiguous_forward_us_per_call: round(usContiguous, 1),
  });
  if (be.name !== 'native') return;
  // Cold: distinct pools of the same layout cycled through, more K/V than the L3 cache holds, as
  // a decoding step goes through its layers' streams (the warm line's pool stays in L3 from call
  // to call, so it measures the kernel's arithmetic more than the memory).
  const copies = 8; // 8 × 8 MB
  const pools = Array.from({ length: copies }, (_, i) => {
    const kp = new Float32Array(kPool.length);
    const vp = new Float32Array(vPool.length);
    fillRandom(kp, 20 + i);
    fillRandom(vp, 40 + i);
    return [kp, vp] as const;
  });
  let at = 0;
  const usCold = usPerCall(() => {
    at = (at + 1) % copies;
    const [kp, vp] = pools[at] as (typeof pools)[number];
    be.attentionPaged(paged, q, kp, vp, out);
  }, minSeconds);
  emit({ ...shape, pools: 'cold', us_per_call: round(usCold, 1), kv_gb_per_s: round(kvBytes / (usCold * 1e-6) / 1e9, 2) });
}

/**
 * Decoding products y = x·Wᵀ (small m, W (n, k) fixed): gemm with transB against gemmPacked with
 * W packed once. `cold`: a set of distinct weights larger than the L3 cache is cycled through, as
 * a model's layers are in a decoding step; `warm`: one weight, called again and again.
 */
function benchPackedGemm(be: Backend): void {
  if (be.name !== 'native') return;
  const [n, k] = [1408, 256]; // the stacked gate/up product of `small`
  const copies = 40; // 40 × 1.44 MB
  const ws = Array.from({ length: copies }, (_, i) => {
    const w = new Float32Array(n * k);
    fillRandom(w, 10 + i);
    return w;
  });
  const packed = ws.map((w) => be.packWeight(w, n, k));
  for (const m of [1, 8, 14, 32]) {
    const a = new Float32Array(m * k);
    fillRandom(a, 3);
    const c = new Float32Array(m * n);
    for (const cold of [false, true]) {
      let i = 0;
      const next = (): number => (cold ? (i = (i + 1) % copies) : 0);
      const tGemm = usPerCall(() => be.gemm({ transA: false, transB: true, m, n, k, alpha: 1, beta: 0 }, a, ws[next()] as Float32Array, c), QUICK ? 0.05 : 0.2);
      const tPacked = usPerCall(() => be.gemmPacked(m, a, packed[next()] as (typeof packed)[number], c, false), QUICK ? 0.05 : 0.2);
      emit({ bench: 'gemm_packed', m, n, k, weights: cold ? 'cold' : 'warm', gemm_us: round(tGemm, 1), packed_us: round(tPacked, 1), packed_gflops: round((2 * m * n * k) / tPacked / 1e3, 1), speedup: round(tGemm / tPacked, 2) });
    }
  }
}

function benchOverhead(be: Backend): void {
  setBackend(be);
  const a = tensor(new Float32Array(16).fill(1), [16]);
  const b = tensor(new Float32Array(16).fill(2), [16]);
  const out = new Float32Array(16);
  const A = a.f32();
  const Bv = b.f32();
  const calls = QUICK ? 50_000 : 200_000;
  for (let i = 0; i < 10_000; i++) add(a, b);
  let t0 = performance.now();
  for (let i = 0; i < calls; i++) add(a, b);
  const viaTensor = ((performance.now() - t0) * 1000) / calls;
  for (let i = 0; i < 10_000; i++) be.add(A, Bv, out);
  t0 = performance.now();
  for (let i = 0; i < calls; i++) be.add(A, Bv, out);
  const direct = ((performance.now() - t0) * 1000) / calls;
  emit({ bench: 'op_overhead', backend: be.name, op: 'add', elements: 16, us_per_call_tensor_api: round(viaTensor), us_per_call_backend: round(direct) });
}

function main(): void {
  for (const name of availableBackends()) {
    const be = getBackendByName(name);
    const info = be.info();
    lineContext = context(be);
    emit({ bench: 'info', ...info, default_provider: info.gemmProvider, MOR_GEMM: process.env['MOR_GEMM'] ?? null, MOR_SIMD: process.env['MOR_SIMD'] ?? null });
    const ceilings = measureCeilings(be);
    if (ceilings) {
      const fma = Object.fromEntries(Object.entries(ceilings.fmaGflops).map(([s, g]) => [s, round(g, 1)]));
      emit({ bench: 'ceilings', fma_gflops: fma, stream_read_gb_per_s: round(ceilings.streamReadGbps, 2), stream_megabytes: ceilings.streamMegabytes });
    }
    const byProvider = new Map<GemmProvider, Map<string, number>>();
    for (const provider of info.gemmProviders) byProvider.set(provider, benchGemm(be, provider, ceilings));
    // The built-in kernel on every other SIMD variant this CPU runs (avx512bf16 has the avx512 kernels).
    if (be.setSimd && ceilings) {
      for (const simd of info.simdAvailable ?? []) {
        if (simd === info.simd || simd === 'avx512bf16' || (simd === 'avx512' && info.simd === 'avx512bf16')) continue;
        be.setSimd(simd);
        lineContext = context(be);
        benchGemm(be, 'builtin', ceilings);
      }
      be.setSimd(info.simd);
      lineContext = context(be);
    }
    const apiRates = byProvider.get('openblas') ?? byProvider.get(info.gemmProvider);
    const builtin = byProvider.get('builtin');
    if (builtin && byProvider.has('openblas')) {
      for (const [key, r] of builtin) {
        const ref = apiRates?.get(key);
        if (ref) emit({ bench: 'gemm_builtin_vs_openblas', shape: key, ratio: round(r / ref) });
      }
    }
    const bestRate = Math.max(...[...byProvider.values()].map((r) => r.get('2048x704x256') ?? 0));
    be.setGemmProvider(info.gemmProvider);
    if (name === 'native' && info.gemmProviders.includes('openblas')) {
      for (const [m, n, k] of SHAPES) {
        const iters = Math.max(3, Math.round((QUICK ? 2e9 : 8e9) / (2 * m * n * k)));
        const direct = rawSgemmGflops(m, n, k, iters);
        if (direct === null) continue;
        const api = apiRates?.get(`${m}x${n}x${k}`) ?? NaN;
        emit({ bench: 'gemm_direct', provider: 'openblas', m, n, k, gflops: round(direct, 2), api_gflops: round(api, 2), api_ratio: round(api / direct) });
      }
    }
    benchAttention(be, bestRate);
    benchPagedAttention(be);
    benchPackedGemm(be);
    benchOverhead(be);
  }
}

main();
