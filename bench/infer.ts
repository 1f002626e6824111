// Inference benchmark: one JSON line per configuration, each naming cpu, simd and threads.
//   {"bench":"infer","protocol","dtype","model","batching","max_batch","requests","tokens_per_s",
//    "latency_ms_p50","latency_ms_p99","kv_bytes","mean_depth","roofline_tokens_per_s","efficiency",
//    "gemm_peak_gflops","stream_read_gbps" (the ceilings measured around that line: the packed
//    products' peak in the line's dtype, the streaming read), "ceiling_drift" (the larger relative
//    change of the two between before and after the line), ...}
//   {"bench":"infer_ratio","protocol","dtype","model","vs_small","bound", ...}
//   {"bench":"infer_ratio","protocol","dtype":"bf16","model","vs_f32","bound", ...}
//   {"bench":"infer_pair","protocol","model","batching","dtype","against":{"model","batching","dtype"},
//    "ratio","ratios","bound", ...}   (tokens/s ratios of two runs taken by turns: pairedRatio)
//   {"bench":"decode","model":"small","batch":1,"dtype","tokens_per_s","roofline_tokens_per_s","efficiency", ...}
//   {"bench":"prefill","model":"small","prompt_tokens":256,"tokens_per_s","roofline_tokens_per_s","efficiency", ...}
//   {"bench":"prefill_kvshare","model","twin","tokens_per_s","twin_tokens_per_s","vs_twin"}
//
// Models are random-initialised (speed does not depend on the weights' values). A random
// router sits near sigmoid(z) = 0.5, so each MoR model gets ONE router threshold, calibrated
// on random prompts so that its realised mean depth matches the mean of its capacities
// (MoR-2: 1.5 recursions, MoR-3: 2.0, MoR-4: 2.5); the realised mean depth of the run is reported.
//
// Two workloads (protocols), both closed batches of greedy requests all submitted at time 0, so
// tokens/s is throughput and latency is time to the request's last token:
//   paper  prompts of 16–48 tokens, generation lengths ~ Normal(256, 64) clipped to [64, 448]
//          (the paper's setting; σ is ours, the clip is ±3σ); models built with a 512-token
//          context; batch 32 and the memory-matched batch (as many sequences as fit in the K/V
//          bytes vanilla `small` used at batch 32)
//   long   1,024-token prompts, 128 generated tokens each, batch 32, 2,048-token context
// RoPE has no parameters, so a model's context is only its KV pool's size.
//
//   npm run bench:infer [-- MODEL ...]   MOR_BENCH_QUICK=1: fewer requests
//   MOR_BENCH_PROTOCOLS=paper,long       MOR_BENCH_DTYPES=f32,bf16 (bf16: depth-wise / batch 32 only)
import { preset } from '../src/model/presets.js';
import { validateConfig } from '../src/model/config.js';
import { createModel, type Model } from '../src/model/model.js';
import { targetCapacity } from '../src/model/mor-config.js';
import { Engine, type BatchingMode, type EngineOptions } from '../src/infer/engine.js';
import { ModelRunner } from '../src/infer/runner.js';
import { PagedKVPool } from '../src/infer/kv-pool.js';
import { headDim } from '../src/model/config.js';
import { linearParamsPerLayer } from '../src/model/flops.js';
import { Rng } from '../src/util/rng.js';
import { getBackend } from '../src/backend/index.js';
import { measureGemmPeak, measurePackedGemmPeak } from '../src/backend/peak.js';
import { context, measureCeilings, measureStreamRead } from './ceilings.js';

const QUICK = process.env['MOR_BENCH_QUICK'] === '1';
const FIXED_BATCH = 32;

type Protocol = 'paper' | 'long';
type Dtype = 'f32' | 'bf16';

interface ProtocolSpec {
  /** The models' context for this workload (max_position_embeddings). */
  readonly context: number;
  readonly requests: number;
  readonly promptLength: (rng: Rng) => number;
  readonly genLength: (rng: Rng) => number;
  /** Also run at the memory-matched batch. */
  readonly memoryMatched: boolean;
}

/** A standard normal draw (Box–Muller). */
function normal(rng: Rng): number {
  return Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
}

const PROTOCOLS: Readonly<Record<Protocol, ProtocolSpec>> = {
  paper: {
    context: 512,
    requests: QUICK ? 48 : 160,
    promptLength: (rng) => 16 + rng.nextInt(33),
    genLength: (rng) => Math.min(448, Math.max(64, Math.round(256 + 64 * normal(rng)))),
    memoryMatched: true,
  },
  long: { context: 2048, requests: QUICK ? 32 : 64, promptLength: () => 1024, genLength: () => 128, memoryMatched: false },
};

function listEnv(name: string, fallback: string, allowed: readonly string[]): string[] {
  const v = (process.env[name] ?? fallback).split(',').filter((x) => x.length > 0);
  for (const x of v) if (!allowed.includes(x)) throw new Error(`${name}: unknown value '${x}' (known: ${allowed.join(', ')})`);
  return v;
}

let lineContext: Record<string, unknown> = {};
function emit(obj: Record<string, unknown>): void {
  console.log(JSON.stringify({ ...obj, ...lineContext }));
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

interface Workload {
  protocol: Protocol;
  prompts: Int32Array[];
  lengths: number[];
}

function workload(protocol: Protocol, vocab: number, seed: number): Workload {
  const spec = PROTOCOLS[protocol];
  const rng = new Rng(seed);
  const prompts: Int32Array[] = [];
  const lengths: number[] = [];
  for (let i = 0; i < spec.requests; i++) {
    prompts.push(Int32Array.from({ length: spec.promptLength(rng) }, () => rng.nextInt(vocab)));
    lengths.push(spec.genLength(rng));
  }
  return { protocol, prompts, lengths };
}

/** A preset at a protocol's context (RoPE has no parameters: only the KV pool grows). */
function benchModel(name: string, context: number): Model {
  return createModel(validateConfig({ ...preset(name), max_position_embeddings: context }), 1);
}

/** Mean recursions per token over random prompts at a threshold (prefill decisions). */
function meanDepthAt(model: Model, threshold: number, prompts: Int32Array[]): number {
  const c = model.config;
  const runner = new ModelRunner(model, new PagedKVPool(4096, 16, c.num_key_value_heads * headDim(c)));
  let sum = 0;
  let n = 0;
  for (const p of prompts) {
    const seq = runner.newSequence();
    const { depths } = runner.prefill(seq, p, { maxDepth: runner.numRecursions, threshold, exitConfidence: null });
    runner.releaseSequence(seq);
    for (const d of depths) sum += d;
    n += depths.length;
  }
  return sum / n;
}

/** One threshold per MoR model so the realised mean depth matches its capacities' mean. */
function calibrateThreshold(model: Model): { threshold: number; targetDepth: number } {
  const c = model.config;
  const nr = c.recursion?.num_recursions ?? 1;
  if (c.mor === null || c.mor.routing !== 'expert_choice') return { threshold: 0.5, targetDepth: nr };
  let target = 0;
  for (let r = 0; r < nr; r++) target += targetCapacity(c.mor, nr, r);
  const rng = new Rng(77);
  const prompts = Array.from({ length: 8 }, () => Int32Array.from({ length: 64 }, () => rng.nextInt(c.vocab_size)));
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 20; i++) {
    const mid = (lo + hi) / 2;
    if (meanDepthAt(model, mid, prompts) > target) lo = mid;
    else hi = mid;
  }
  return { threshold: (lo + hi) / 2, targetDepth: target };
}

/**
 * Linear-map FLOPs a generated token costs at a mean depth: the layers outside the depth steps,
 * the first depth step once per recursion run, and the head (attention and routers are small
 * beside them). MoE layers count their active experts (flops.ts).
 */
function linearFlopsPerToken(model: Model, meanDepth: number): number {
  const c = model.config;
  const plan = model.plan;
  const params = (l: number) => linearParamsPerLayer(c, plan.uniqueOf[l] as number);
  const inSteps = new Set(plan.depthSteps.flatMap((s) => [...s]));
  let outside = 0;
  for (let l = 0; l < c.num_hidden_layers; l++) if (!inSteps.has(l)) outside += params(l);
  const step = [...(plan.depthSteps[0] as Int32Array)].reduce((a, l) => a + params(l), 0);
  const depth = plan.depthSteps.length === 1 ? 1 : meanDepth;
  return 2 * (outside + step * depth) + 2 * c.vocab_size * c.hidden_size;
}

/**
 * The machine's ceilings: the packed products' peak in the line's dtype (GFLOP/s; bf16 products
 * and bf16 prefill attention run on vdpbf16ps, ~1.7x the f32 peak on Zen 4; decoding attention
 * over a bf16 pool widens to f32, but its term is the K/V bytes by far) and the streaming read (GB/s).
 */
interface Ceilings {
  gflops: number;
  gbps: number;
  /** How far the ceilings moved between before and after the measurement: the larger relative change of the two (absent for one probe). */
  drift?: number;
}

/**
 * The ceilings around one measurement: measured just before and just after it, averaged. This
 * VM's speed drifts over minutes (the probe read 29-42 GB/s and the peak 157-211 GFLOP/s between
 * runs of one session), so ceilings taken once at the start of a half-hour run judged later
 * lines against another machine than the one that ran them.
 */
function ceilingsAround<T>(be: ReturnType<typeof getBackend>, dtype: Dtype, work: () => Promise<T>): Promise<{ result: T; ceilings: Ceilings }> {
  const now = (): Ceilings => ({ gflops: measurePackedGemmPeak(be, dtype), gbps: measureStreamRead(be) });
  const before = now();
  return work().then((result) => {
    const after = now();
    const change = (x: number, y: number) => Math.abs(x - y) / ((x + y) / 2);
    const drift = Math.max(change(before.gflops, after.gflops), change(before.gbps, after.gbps));
    return { result, ceilings: { gflops: (before.gflops + after.gflops) / 2, gbps: (before.gbps + after.gbps) / 2, drift } };
  });
}

/** The ceilings' fields of a line (the peak is the line's dtype's). */
function ceilingFields(c: Ceilings) {
  return {
    gemm_peak_gflops: Math.round(c.gflops),
    stream_read_gbps: Math.round(c.gbps * 10) / 10,
    // a line whose ceilings moved much was measured on a machine that changed under it
    ...(c.drift === undefined ? {} : { ceiling_drift: Math.round(c.drift * 100) / 100 }),
  };
}

/**
 * Roofline of a run (MOR_SPEC §12, ISSUE_NOTES #12): each native call's two phases run one after
 * the other, so its predicted time is max(weight-product FLOPs ÷ peak, weight bytes ÷ bandwidth)
 * + max(attention FLOPs ÷ peak, K/V bytes ÷ bandwidth); the run's is the sum over calls. The
 * calls' counts are kept and judged against the ceilings measured around the run (evaluate).
 */
function rooflineMeter() {
  const counts: number[] = []; // (linear FLOPs, weight bytes, attention FLOPs, K/V bytes) per call
  return {
    call(linearFlops: number, weightBytes: number, attentionFlops: number, kvBytes: number): void {
      counts.push(linearFlops, weightBytes, attentionFlops, kvBytes);
    },
    evaluate(c: Ceilings) {
      const terms = { linear_compute_s: 0, weight_read_s: 0, attention_compute_s: 0, kv_read_s: 0 };
      let seconds = 0;
      for (let i = 0; i < counts.length; i += 4) {
        const lc = (counts[i] as number) / (c.gflops * 1e9);
        const wr = (counts[i + 1] as number) / (c.gbps * 1e9);
        const ac = (counts[i + 2] as number) / (c.gflops * 1e9);
        const kr = (counts[i + 3] as number) / (c.gbps * 1e9);
        terms.linear_compute_s += lc;
        terms.weight_read_s += wr;
        terms.attention_compute_s += ac;
        terms.kv_read_s += kr;
        seconds += Math.max(lc, wr) + Math.max(ac, kr);
      }
      return { seconds, terms };
    },
  };
}
type RooflineMeter = ReturnType<typeof rooflineMeter>;

/** One closed batch: every request of `w` submitted at once to a fresh engine, stepped until all finish. */
async function runWorkload(model: Model, threshold: number, batching: BatchingMode, maxBatch: number, w: Workload, dtype: Dtype) {
  const engine = new Engine(model, { maxBatch, batching, ...(dtype === 'f32' ? {} : { dtype }) } as EngineOptions);
  const meter = rooflineMeter();
  (engine.runner as ModelRunner).meter = meter;
  let peakKv = 0;
  const t0 = performance.now();
  const handles = w.prompts.map((p, i) => engine.submit(p, { maxTokens: w.lengths[i] as number, temperature: 0, threshold }));
  while (engine.numWaiting > 0 || engine.numRunning > 0) {
    engine.step();
    peakKv = Math.max(peakKv, engine.kvBytes);
  }
  const seconds = (performance.now() - t0) / 1000;
  const results = await Promise.all(handles.map((h) => h.result));
  const tokens = results.reduce((a, r) => a + r.tokens.length, 0);
  return { seconds, results, tokens, meter, peakKv, steps: engine.stepsRun };
}

async function runConfig(name: string, model: Model, threshold: number, batching: BatchingMode, maxBatch: number, w: Workload, dtype: Dtype) {
  const { result: run, ceilings } = await ceilingsAround(getBackend(), dtype, () => runWorkload(model, threshold, batching, maxBatch, w, dtype));
  const { seconds, results, tokens, meter, peakKv } = run;
  const depths = results.flatMap((r) => r.depths);
  const meanDepth = depths.reduce((a, b) => a + b, 0) / depths.length;
  const record = {
    bench: 'infer',
    protocol: w.protocol,
    dtype,
    model: name,
    batching,
    max_batch: maxBatch,
    requests: w.prompts.length,
    generated_tokens: tokens,
    latency_ms_p50: Math.round(percentile(results.map((r) => r.totalMs), 50)),
    latency_ms_p99: Math.round(percentile(results.map((r) => r.totalMs), 99)),
    kv_bytes: peakKv,
    mean_depth: Math.round(meanDepth * 100) / 100,
    linear_mflops_per_token: Math.round(linearFlopsPerToken(model, meanDepth) / 1e4) / 100,
    threshold: Math.round(threshold * 1e4) / 1e4,
    engine_steps: run.steps,
    ...againstRoofline(tokens, seconds, meter, ceilings),
  };
  emit(record);
  // the roofline's tokens/s of this run's work at other ceilings (ratio lines compare two runs' work at one machine's)
  return { ...record, ceilings, rooflineAt: (c: Ceilings) => tokens / meter.evaluate(c).seconds };
}

/** Tokens/s, the roofline's tokens/s and their ratio, of `tokens` over `seconds` with the meter's prediction at `c`. */
function againstRoofline(tokens: number, seconds: number, meter: RooflineMeter, c: Ceilings) {
  const roof = meter.evaluate(c);
  return {
    tokens_per_s: Math.round(tokens / seconds),
    roofline_tokens_per_s: Math.round(tokens / roof.seconds),
    efficiency: Math.round((roof.seconds / seconds) * 100) / 100,
    ...Object.fromEntries(Object.entries(roof.terms).map(([k, v]) => [k, Math.round(v * 1e5) / 1e5])),
    ...ceilingFields(c),
  };
}

/** Prefills each measurement repeats (a few tens of milliseconds each). */
const PREFILL_REPEATS = 7;
/**
 * Rounds of a prefill pair (prefillPair). On a shared VM one round's ratio of two models scattered
 * by ±20% (0.61-1.37 over 31 rounds of one pair), so the median of 7 rounds moved by several
 * percent from run to run (0.93 and 1.02 for the same pair); two runs of 31 read 0.996 and 0.998,
 * for ~2 s of prefills.
 */
const PREFILL_PAIR_ROUNDS = QUICK ? 7 : 31;

/**
 * Prefills of 256-token prompts through a fresh runner: each call of the returned function runs
 * one (prompt i of a fixed sequence) and returns its seconds and roofline meter.
 */
function prefillTimer(model: Model, threshold: number, dtype: Dtype = 'f32', count = PREFILL_REPEATS) {
  const rng = new Rng(3);
  const prompts = Array.from({ length: count }, () => Int32Array.from({ length: 256 }, () => rng.nextInt(model.config.vocab_size)));
  // the dtype of the pool is the runner's: packed weights and K/V alike
  const runner = new ModelRunner(model, new PagedKVPool(1024, 16, model.config.num_key_value_heads * headDim(model.config), dtype));
  return (i: number) => {
    const seq = runner.newSequence();
    const meter = rooflineMeter();
    runner.meter = meter;
    const t0 = performance.now();
    runner.prefill(seq, prompts[i % prompts.length] as Int32Array, { maxDepth: runner.numRecursions, threshold, exitConfidence: null });
    const seconds = (performance.now() - t0) / 1000;
    runner.meter = null;
    runner.releaseSequence(seq);
    return { seconds, meter };
  };
}

/** Prefill of a 256-token prompt (best of PREFILL_REPEATS; the engine would also want room to generate), against its roofline. */
async function prefillRate(model: Model, threshold: number, dtype: Dtype) {
  const run = prefillTimer(model, threshold, dtype);
  const { result: best, ceilings } = await ceilingsAround(getBackend(), dtype, async () => {
    let b = run(0);
    for (let i = 1; i < PREFILL_REPEATS; i++) {
      const r = run(i);
      if (r.seconds < b.seconds) b = r;
    }
    return b;
  });
  return againstRoofline(256, best.seconds, best.meter, ceilings);
}

/**
 * Prefill of two models on the same prompts, alternating, PREFILL_PAIR_ROUNDS rounds after one
 * round each to warm up (the first prefill of a runner packs its weights and first touches its
 * pool): each one's best tokens/s, and the median over rounds of the per-round speed ratio (a
 * prefill takes tens of milliseconds, so a busy moment of this shared machine would otherwise
 * land on one model only).
 */
function prefillPair(a: { model: Model; threshold: number }, b: { model: Model; threshold: number }) {
  const runA = prefillTimer(a.model, a.threshold, 'f32', PREFILL_PAIR_ROUNDS);
  const runB = prefillTimer(b.model, b.threshold, 'f32', PREFILL_PAIR_ROUNDS);
  runA(0);
  runB(0);
  let bestA = Infinity;
  let bestB = Infinity;
  const ratios: number[] = [];
  for (let i = 0; i < PREFILL_PAIR_ROUNDS; i++) {
    const sa = runA(i).seconds;
    const sb = runB(i).seconds;
    bestA = Math.min(bestA, sa);
    bestB = Math.min(bestB, sb);
    ratios.push(sb / sa);
  }
  return { ratePerS: [Math.round(256 / bestA), Math.round(256 / bestB)], ratio: percentile(ratios, 50) };
}

/** One protocol over the models: every batching at batch 32 in f32, the memory-matched batch, bf16 lines. */
async function runProtocol(protocol: Protocol, names: readonly string[], dtypes: readonly Dtype[]): Promise<void> {
  const spec = PROTOCOLS[protocol];
  // the vanilla `small` run of each dtype, which every ratio line is against
  const vanilla = new Map<Dtype, { perSeqKv: number; rate: number; flops: number; rooflineAt: (c: Ceilings) => number }>();
  // each model's f32 line at batch 32: its tokens/s and its work's roofline at other ceilings
  const f32Run = new Map<string, { rate: number; ceilings: Ceilings; rooflineAt: (c: Ceilings) => number }>();
  // vs_small: measured tokens/s ratio; flop_bound: the ratio if tokens/s were set by linear FLOPs
  // alone; bound: the ratio of the two runs' rooflines (FLOPs and bytes), both at this line's ceilings
  const ratio = (dtype: Dtype, rec: { tokens_per_s: number; linear_mflops_per_token: number; roofline_tokens_per_s: number; ceilings: Ceilings }) => {
    const v = vanilla.get(dtype);
    if (v === undefined) return null;
    return {
      protocol,
      dtype,
      vs_small: Math.round((rec.tokens_per_s / v.rate) * 100) / 100,
      flop_bound: Math.round((v.flops / rec.linear_mflops_per_token) * 100) / 100,
      bound: Math.round((rec.roofline_tokens_per_s / v.rooflineAt(rec.ceilings)) * 100) / 100,
    };
  };
  for (const name of names) {
    const model = benchModel(name, spec.context);
    const { threshold } = calibrateThreshold(model);
    const w = workload(protocol, model.config.vocab_size, 11);
    const routed = model.config.recursion !== null;
    for (const dtype of dtypes) {
      // bf16 only depth-wise (or sequence-wise for vanilla) at batch 32: its figure is the ratio to f32
      const modes: BatchingMode[] = !routed ? ['sequence'] : dtype === 'f32' ? ['depth', 'sequence'] : ['depth'];
      const fixedRate = new Map<BatchingMode, number>();
      for (const batching of modes) {
        const rec = await runConfig(name, model, threshold, batching, FIXED_BATCH, w, dtype);
        fixedRate.set(batching, rec.tokens_per_s);
        if (batching === modes[0] && dtype === 'f32') f32Run.set(name, { rate: rec.tokens_per_s, ceilings: rec.ceilings, rooflineAt: rec.rooflineAt });
        const f = f32Run.get(name);
        if (dtype !== 'f32' && batching === modes[0] && f !== undefined) {
          // bound: the two rooflines' ratio at this line's bandwidth, each run at its own dtype's peak
          const f32Roof = f.rooflineAt({ gflops: f.ceilings.gflops, gbps: rec.ceilings.gbps });
          emit({
            bench: 'infer_ratio',
            protocol,
            model: name,
            batching,
            max_batch: FIXED_BATCH,
            dtype,
            vs_f32: Math.round((rec.tokens_per_s / f.rate) * 100) / 100,
            bound: Math.round((rec.roofline_tokens_per_s / f32Roof) * 100) / 100,
          });
        }
        if (name === 'small') {
          vanilla.set(dtype, { perSeqKv: rec.kv_bytes / FIXED_BATCH, rate: rec.tokens_per_s, flops: rec.linear_mflops_per_token, rooflineAt: rec.rooflineAt });
        } else {
          const r = ratio(dtype, rec);
          if (r !== null) emit({ bench: 'infer_ratio', model: name, batching, max_batch: FIXED_BATCH, ...r });
        }
        const v = vanilla.get('f32');
        if (spec.memoryMatched && dtype === 'f32' && batching === modes[0] && name !== 'small' && v !== undefined) {
          // memory-matched: as many sequences as fit in the KV bytes vanilla used at FIXED_BATCH
          const perSeq = rec.kv_bytes / FIXED_BATCH;
          const matched = Math.max(1, Math.floor((v.perSeqKv * FIXED_BATCH) / perSeq));
          if (matched !== FIXED_BATCH) {
            const m = await runConfig(name, model, threshold, batching, matched, w, dtype);
            const r = ratio(dtype, m);
            if (r !== null) emit({ bench: 'infer_ratio', model: name, batching, max_batch: matched, memory_matched: true, ...r });
          }
        }
      }
      if (fixedRate.has('depth') && fixedRate.has('sequence')) {
        const dw = (fixedRate.get('depth') as number) / (fixedRate.get('sequence') as number);
        emit({ bench: 'infer_ratio', protocol, dtype, model: name, max_batch: FIXED_BATCH, depth_vs_sequence: Math.round(dw * 100) / 100 });
      }
    }
  }
}

/** One side of a paired comparison (pairedRatio). */
interface PairSide {
  readonly name: string;
  readonly model: Model;
  readonly threshold: number;
  readonly batching: BatchingMode;
  readonly dtype: Dtype;
}

/**
 * Rounds of a paired comparison, and the requests of its workload (the protocol's first ones):
 * enough to fill batch 32, as the targets' lines do, and to let the paper protocol's batch refill.
 */
const PAIR_ROUNDS = QUICK ? 3 : 5;
const PAIR_REQUESTS: Readonly<Record<Protocol, number>> = { paper: 48, long: 32 };

/**
 * A ratio measured in pairs: side b's tokens/s over side a's on one workload, the two run by
 * turns (a then b, b then a, ...) so that this host's drift over minutes (the streaming probe
 * read 27-60 GB/s within one run) reaches both alike, where the infer_ratio lines divide two
 * runs made minutes apart. The median of the rounds' ratios (each round's printed too), beside
 * the bound: the two runs' rooflines at the ceilings measured around the pair, each side at
 * its own dtype's peak. Greedy decoding makes every round's work the same, so one meter per side.
 */
async function pairedRatio(protocol: Protocol, a: PairSide, b: PairSide, w: Workload): Promise<void> {
  const be = getBackend();
  const run = (s: PairSide) => runWorkload(s.model, s.threshold, s.batching, FIXED_BATCH, w, s.dtype);
  type Run = Awaited<ReturnType<typeof run>>;
  const rate = (x: Run) => x.tokens / x.seconds;
  // the rounds inside a's ceilings and b's (each dtype's peak; the inner bandwidth serves both)
  const { result: outer, ceilings: ca } = await ceilingsAround(be, a.dtype, () =>
    ceilingsAround(be, b.dtype, async () => {
      const ratios: number[] = [];
      const last: { a?: Run; b?: Run } = {};
      for (let r = 0; r < PAIR_ROUNDS; r++) {
        for (const side of r % 2 === 0 ? (['a', 'b'] as const) : (['b', 'a'] as const)) last[side] = await run(side === 'a' ? a : b);
        ratios.push(rate(last.b as Run) / rate(last.a as Run));
      }
      return { ratios, a: last.a as Run, b: last.b as Run };
    }),
  );
  const { result: rounds, ceilings: cb } = outer;
  const ratios = rounds.ratios;
  const roofRate = (x: Run, gflops: number) => x.tokens / x.meter.evaluate({ gflops, gbps: cb.gbps }).seconds;
  emit({
    bench: 'infer_pair',
    protocol,
    model: b.name,
    batching: b.batching,
    dtype: b.dtype,
    against: { model: a.name, batching: a.batching, dtype: a.dtype },
    requests: w.prompts.length,
    max_batch: FIXED_BATCH,
    rounds: PAIR_ROUNDS,
    ratio: Math.round(percentile(ratios, 50) * 100) / 100,
    ratios: ratios.map((x) => Math.round(x * 100) / 100),
    bound: Math.round((roofRate(rounds.b, cb.gflops) / roofRate(rounds.a, ca.gflops)) * 100) / 100,
    stream_read_gbps: Math.round(cb.gbps * 10) / 10,
    ceiling_drift: Math.round(Math.max(ca.drift ?? 0, cb.drift ?? 0) * 100) / 100,
  });
}

/**
 * The targets' ratios measured in pairs (pairedRatio) on the protocol's first requests: bf16
 * against f32 for `small`, and `small-mor4` depth-wise against `small`, when the run has them.
 */
async function runPairs(protocol: Protocol, names: readonly string[], dtypes: readonly Dtype[]): Promise<void> {
  if (!names.includes('small')) return;
  const spec = PROTOCOLS[protocol];
  const side = (name: string, batching: BatchingMode, dtype: Dtype): PairSide => {
    const model = benchModel(name, spec.context);
    return { name, model, threshold: calibrateThreshold(model).threshold, batching, dtype };
  };
  const small = side('small', 'sequence', 'f32');
  // the protocol's workload (the same seed as its lines), its first requests
  const full = workload(protocol, small.model.config.vocab_size, 11);
  const n = PAIR_REQUESTS[protocol];
  const w: Workload = { protocol, prompts: full.prompts.slice(0, n), lengths: full.lengths.slice(0, n) };
  if (dtypes.includes('bf16')) await pairedRatio(protocol, small, { ...small, dtype: 'bf16' }, w);
  if (names.includes('small-mor4')) await pairedRatio(protocol, small, side('small-mor4', 'depth', 'f32'), w);
}

/**
 * Single-request decoding of `small` (16-token prompts, 128 generated) in one dtype, against its
 * roofline: one request to warm up (the first one ran 0.55-0.75x of the later ones: JIT tiers,
 * first-touched pool pages and scratch), then DECODE_REPEATS timed ones, reported at the median.
 */
async function singleDecode(dtype: Dtype): Promise<void> {
  const model = createModel(preset('small'), 1);
  const rng = new Rng(3);
  const engine = new Engine(model, { maxBatch: 1, ...(dtype === 'f32' ? {} : { dtype }) } as EngineOptions);
  const runs: Array<{ tokens: number; seconds: number; meter: RooflineMeter }> = [];
  const { ceilings } = await ceilingsAround(getBackend(), dtype, async () => {
  for (let rep = 0; rep <= DECODE_REPEATS; rep++) {
    const prompt = Int32Array.from({ length: 16 }, () => rng.nextInt(model.config.vocab_size));
    const h = engine.submit(prompt, { maxTokens: 128, temperature: 0 });
    // the roofline of the decoding steps only: the meter starts after the prompt's step
    (engine.runner as ModelRunner).meter = null;
    engine.step();
    const meter = rooflineMeter();
    (engine.runner as ModelRunner).meter = meter;
    await engine.runUntilIdle();
    const r = await h.result;
    if (rep > 0) runs.push({ tokens: r.tokens.length - 1, seconds: (r.totalMs - r.firstTokenMs) / 1000, meter });
  }
  });
  runs.sort((a, b) => a.tokens / a.seconds - b.tokens / b.seconds);
  const mid = runs[runs.length >> 1] as (typeof runs)[number];
  emit({ bench: 'decode', model: 'small', batch: 1, dtype, tokens: mid.tokens, repeats: runs.length, ...againstRoofline(mid.tokens, mid.seconds, mid.meter, ceilings) });
}

/** Timed single-request decodes, after one to warm up. */
const DECODE_REPEATS = 3;

async function main(): Promise<void> {
  const be = getBackend();
  lineContext = context(be);
  emit({
    bench: 'info',
    ...be.info(),
    unpacked_gemm_peak_gflops: Math.round(measureGemmPeak(be)),
    bf16_gemm_peak_gflops: Math.round(measurePackedGemmPeak(be, 'bf16')),
    ...ceilingFields({ gflops: measurePackedGemmPeak(be, 'f32'), gbps: measureCeilings(be)?.streamReadGbps ?? Number.NaN }),
  });
  const protocols = listEnv('MOR_BENCH_PROTOCOLS', 'paper,long', ['paper', 'long']) as Protocol[];
  const dtypes = listEnv('MOR_BENCH_DTYPES', 'f32', ['f32', 'bf16']) as Dtype[];

  // single-request decode and prefill of `small`
  for (const dtype of dtypes) emit({ bench: 'prefill', model: 'small', dtype, prompt_tokens: 256, ...(await prefillRate(createModel(preset('small'), 1), 0.5, dtype)) });
  for (const dtype of dtypes) await singleDecode(dtype);

  // KV sharing at prefill: against each one's recursion-wise twin (Cycle sharing skips the
  // deeper recursions of non-final prompt tokens; Middle-Cycle cannot, see runner.prefill)
  for (const [shared, twin] of [['small-mor3-kvshare-cycle', 'small-mor3-cycle'], ['small-mor3-kvshare', 'small-mor3']] as const) {
    const [sm, tm] = [shared, twin].map((name) => {
      const model = createModel(preset(name), 1);
      return { model, threshold: calibrateThreshold(model).threshold };
    }) as [{ model: Model; threshold: number }, { model: Model; threshold: number }];
    const { ratePerS, ratio } = prefillPair(sm, tm);
    emit({ bench: 'prefill_kvshare', model: shared, twin, prompt_tokens: 256, rounds: PREFILL_PAIR_ROUNDS, tokens_per_s: ratePerS[0], twin_tokens_per_s: ratePerS[1], vs_twin: Math.round(ratio * 100) / 100 });
  }

  const names = process.argv.slice(2).length
    ? process.argv.slice(2)
    : ['small', 'small-14', 'small-rec3', 'small-mor2', 'small-mor3', 'small-mor4', 'small-mor3-kvshare'];
  for (const protocol of protocols) await runProtocol(protocol, names, dtypes);
  for (const protocol of protocols) await runPairs(protocol, names, dtypes);
}

await main();
