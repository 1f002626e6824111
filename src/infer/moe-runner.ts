/**
 * A Mixture-of-Experts decoder layer in decoding (MOR_SPEC §10 "Inference"): the rows of one
 * runner call — token-states at any depth, of any sequence — go through the attention half as
 * the fused decode layer does it, then their MLP half is done expert by expert:
 *
 *   x = rmsnorm(h2)            router products per router (rows grouped by router index: with
 *   s = x·W_rᵀ                 router_per_recursion each depth has its own router)
 *   picks, weights             model/moe.ts: the training forward's own moeSelect / moeGateWeights
 *   rows grouped by expert ──▶ [gate|up] packed product → SwiGLU → down packed product ──▶ += w·y
 *   shared experts             one packed product pair over every row
 *
 * Every weight is packed once (packMoeLayer), as the dense layers' are. Decoding never drops a
 * slot (capacity is a training-only, non-causal option).
 */
import { ShapeError } from '../errors.js';
import type { Backend, PackedWeight, PagedAttentionLayout } from '../backend/backend.js';
import type { ModelConfig } from '../model/config.js';
import { groupByExpert, moeGateWeights, moeScores, moeSelect } from '../model/moe.js';
import type { ExpertParams } from '../model/moe-params.js';
import type { LayerParams } from '../model/params.js';
import { noGrad, tensor, type Tensor } from '../tensor/tensor.js';
import type { PagedKVPool } from './kv-pool.js';

interface PackedExpert {
  /** (2·I, D): gate and up stacked by rows. */
  readonly gateUp: PackedWeight;
  /** (D, I) */
  readonly down: PackedWeight;
}

/** The weights of one MoE decoder layer as moeDecodeLayer reads them. */
export interface PackedMoeLayer {
  readonly inputNorm: Float32Array;
  readonly postNorm: Float32Array;
  /** (H·HD + 2·KVH·HD, D) */
  readonly qkv: PackedWeight;
  /** (D, H·HD) */
  readonly o: PackedWeight;
  /** (E, D) per router, and its selection bias (E) or null. */
  readonly routers: readonly PackedWeight[];
  readonly biases: ReadonlyArray<Float32Array | null>;
  readonly experts: readonly PackedExpert[];
  readonly shared: PackedExpert | null;
}

/**
 * Pack an MoE layer's weights once (pack stacks matrices by rows and packs them for gemmPacked,
 * in the engine's dtype). The routers are packed by `packRouter` (f32): they are E × D, a few KB,
 * and rounding them to bf16 would move near-tied expert choices, a discrete change in the output.
 */
export function packMoeLayer(layer: LayerParams, pack: (...ts: Tensor[]) => PackedWeight, packRouter: (t: Tensor) => PackedWeight = pack): PackedMoeLayer {
  const moe = layer.moe;
  if (moe === null) throw new ShapeError('packMoeLayer: not an MoE layer');
  const expert = (e: ExpertParams): PackedExpert => ({ gateUp: pack(e.gate, e.up), down: pack(e.down) });
  return {
    inputNorm: layer.inputNorm.f32(),
    postNorm: layer.postNorm.f32(),
    qkv: pack(layer.w.q_proj, layer.w.k_proj, layer.w.v_proj),
    o: pack(layer.w.o_proj),
    routers: moe.routers.map((r) => packRouter(r.w)),
    biases: moe.routers.map((r) => r.bias?.f32() ?? null),
    experts: moe.experts.map(expert),
    shared: moe.shared ? expert(moe.shared) : null,
  };
}

/** Columns [from, from + width) of a row-major (rows, cols) matrix. */
function columns(x: Float32Array, rows: number, cols: number, from: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) out.set(x.subarray(i * cols + from, i * cols + from + width), i * width);
  return out;
}

/** out += SwiGLU expert(x) for n rows (accumulating into out): x (n, D), out (n, D). */
function expertInto(be: Backend, e: PackedExpert, n: number, x: Float32Array, out: Float32Array): void {
  const width = e.down.k;
  const gu = new Float32Array(n * 2 * width);
  be.gemmPacked(n, x, e.gateUp, gu, false);
  const act = new Float32Array(n * width);
  be.swigluForward(columns(gu, n, 2 * width, 0, width), columns(gu, n, 2 * width, width, width), act);
  be.gemmPacked(n, act, e.down, out, true);
}

export interface MoeDecodeArgs {
  readonly config: ModelConfig;
  readonly attention: PagedAttentionLayout;
  /** (N) pool slot for each row's k/v, −1: none. */
  readonly kvSlots: Int32Array;
  /** (N) which of the layer's routers each row uses. */
  readonly routerOfRow: Int32Array;
}

/**
 * One MoE decoder layer over N rows of decoding: h (N, D) → out (N, D), K/V written to the pool.
 * Returns how many routed experts ran (for the work meter: the weights the call streamed).
 */
export function moeDecodeLayer(be: Backend, args: MoeDecodeArgs, w: PackedMoeLayer, h: Float32Array, pool: PagedKVPool, out: Float32Array): number {
  const c = args.config;
  const m = c.moe;
  if (m === null) throw new ShapeError('moeDecodeLayer: the config has no moe section');
  const l = args.attention;
  const d = c.hidden_size;
  const n = h.length / d;
  const qw = l.numHeads * l.headDim;
  const kvw = l.numKvHeads * l.headDim;
  if (!Number.isInteger(n) || out.length !== h.length || args.kvSlots.length !== n || args.routerOfRow.length !== n) {
    throw new ShapeError(`moeDecodeLayer: h (${h.length}), out (${out.length}), kvSlots (${args.kvSlots.length}), routerOfRow (${args.routerOfRow.length}) do not describe N rows of D = ${d}`);
  }

  // attention half: the fused decode layer's arithmetic, kernel by kernel
  const x = new Float32Array(n * d);
  be.rmsnormForward(h, w.inputNorm, c.rms_norm_eps, x, new Float32Array(n));
  const qkv = new Float32Array(n * (qw + 2 * kvw)); //                       (N, H·HD + 2·KVH·HD)
  be.gemmPacked(n, x, w.qkv, qkv, false);
  const q = new Float32Array(n * qw);
  const k = new Float32Array(n * kvw);
  be.rope(columns(qkv, n, qw + 2 * kvw, 0, qw), l.qPos, l.numHeads, l.headDim, c.rope_theta, false, q);
  be.rope(columns(qkv, n, qw + 2 * kvw, qw, kvw), l.qPos, l.numKvHeads, l.headDim, c.rope_theta, false, k);
  const v = columns(qkv, n, qw + 2 * kvw, qw + kvw, kvw);
  args.kvSlots.forEach((slot, i) => {
    if (slot >= 0) pool.writeSlot(slot, k, i * kvw, v, i * kvw);
  });
  const a = new Float32Array(n * qw);
  be.attentionPaged(l, q, pool.kPool, pool.vPool, a);
  out.set(h);
  be.gemmPacked(n, a, w.o, out, true); //                                    out = h2 (N, D)

  // MLP half: shared experts on every row, routed experts on their rows
  const x2 = new Float32Array(n * d);
  be.rmsnormForward(out, w.postNorm, c.rms_norm_eps, x2, new Float32Array(n));
  if (w.shared) expertInto(be, w.shared, n, x2, out);
  const E = m.num_experts;
  const K = m.top_k;
  const used = new Uint8Array(E);
  w.routers.forEach((router, r) => {
    const rows = Int32Array.from({ length: n }, (_, i) => i).filter((i) => args.routerOfRow[i] === r);
    if (rows.length === 0) return;
    const nr = rows.length;
    const xr = new Float32Array(nr * d); //                                  (n_r, D)
    be.gatherRows(x2, rows, d, xr);
    const s = new Float32Array(nr * E); //                                   (n_r, E)
    be.gemmPacked(nr, xr, router, s, false);
    const { picks, weights } = noGrad(() => {
      const st = tensor(s, [nr, E]);
      const p = moeSelect(moeScores(m, st).f32(), E, K, w.biases[r] ?? null);
      return { picks: p, weights: moeGateWeights(m, st, p).f32() };
    });
    groupByExpert(picks, null, E, K).forEach((g, e) => {
      const ne = g.rows.length;
      if (ne === 0) return;
      used[e] = 1;
      const xe = new Float32Array(ne * d); //                                (n_e, D)
      be.gatherRows(xr, g.rows, d, xe);
      const ye = new Float32Array(ne * d);
      expertInto(be, w.experts[e] as PackedExpert, ne, xe, ye);
      const we = Float32Array.from(g.slots, (slot) => weights[slot] as number);
      const weighted = new Float32Array(ne * d);
      be.scaleRows(ye, we, d, weighted);
      be.scatterAddRows(weighted, Int32Array.from(g.rows, (i) => rows[i] as number), d, out);
    });
  });
  return used.reduce((acc, u) => acc + u, 0);
}
