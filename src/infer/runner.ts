/**
 * Model runner: the step functions of adaptive-depth decoding, over batches of token-states
 * that may sit at DIFFERENT depths, built from the same nn/ layers as training.
 *
 *   enter  token id → embedding → first unique layer (Middle-Cycle) → routing decision
 *   block  one recursion of the shared block for every row, each at its own depth r: row i runs
 *          layer positions offset + r_i·K + j and reads/writes its own sequence's KV streams
 *          → gate update → routing decision (continue to r+1, or exit)
 *   exit   last unique layer → final norm → output head (tied or lm_head) → logits
 *
 * The decisions are the causal ones of training, made by the same functions (model/routing.ts):
 * expert-choice continues at recursion r iff its capacity is 1 or sigmoid(router_r(h)) >
 * threshold; token-choice picks its depth once at entry. Models without routing run every
 * recursion (optionally exiting early when the head is confident). A "recursion" here is one of
 * the layer plan's depth steps: the K-layer block under cycle sharing; the whole middle under
 * sequence sharing, whose recursions are not contiguous in the stack. A prompt goes through the
 * same functions as a batch of rows: KV rows are appended before attention and keys are
 * filtered by position, so causal prefill falls out.
 *
 * Mixture-of-Depths models (a vanilla stack, one depth step) decide at each routed layer, per
 * token, whether it runs that layer (sigmoid(z) > threshold, as the causal training forward):
 * the rows that do run it and append their K/V to its stream; the others pass through unchanged
 * and leave that stream alone, so later queries there see only the keys of processed tokens.
 */
import { ArgumentError } from '../errors.js';
import { getBackend } from '../backend/index.js';
import type { Backend, PackedLayer, PackedWeight, PagedAttentionLayout } from '../backend/backend.js';
import type { StorageDtype } from '../backend/bf16.js';
import { headDim, type ModelConfig } from '../model/config.js';
import { kvProjectionParams, linearParamsPerLayer } from '../model/flops.js';
import type { Model } from '../model/model.js';
import type { RouterParams } from '../model/params.js';
import { expertGate, expertKeeps, expertUpdate, routerLogits, thresholdKeeps, tokenChoiceDepths, tokenChoiceFinish, tokenChoiceProbs } from '../model/routing.js';
import { routerIndexOfLayer } from '../model/mod-config.js';
import { MOD_GATING } from '../model/mod.js';
import { decoderLayer, type AttendFn } from '../nn/layers.js';
import { Tensor, indexTensor, noGrad, tensor } from '../tensor/tensor.js';
import { add, embedding, linearPacked, rmsnorm, softmax } from '../tensor/ops.js';
import { KVStream, PagedKVPool } from './kv-pool.js';
import { moeDecodeLayer, packMoeLayer, type PackedMoeLayer } from './moe-runner.js';
import { moeMlpParamsActive, moeRouterIndex } from '../model/moe-params.js';

/**
 * What the runner's native calls did, for a roofline (benchmarks): called once per layer call
 * with its two phases — the weight products (FLOPs, weight bytes streamed) and attention (FLOPs
 * over the visible keys, K/V bytes read) — and once per head call (attention terms 0).
 */
export interface WorkMeter {
  call(linearFlops: number, weightBytes: number, attentionFlops: number, kvBytes: number): void;
}

/** Per-sequence KV streams (one per cached layer position). */
export interface SequenceKV {
  readonly streams: KVStream[];
}

/**
 * How deep a token may go (test-time scaling), set per request.
 *   maxDepth       at most this many recursions (1..Nr)
 *   threshold      MoR expert-choice: continue iff sigmoid(z) > threshold (higher → shallower)
 *   exitConfidence models without routers: exit after a recursion once the head's top
 *                  probability reaches this (higher → deeper); null = never exit early
 */
export interface DepthControl {
  readonly maxDepth: number;
  readonly threshold: number;
  readonly exitConfidence: number | null;
}

/** One token on its way through the model. */
export interface TokenState {
  readonly seq: SequenceKV;
  readonly pos: number;
  /** (D) hidden state. */
  h: Float32Array;
  /** Next recursion to run (0-based). */
  depth: number;
  /** Test-time depth settings of its request. */
  readonly control: DepthControl;
  /** What the token does next. */
  next: 'block' | 'exit';
  /** Expert-choice: gate of the recursion about to run. */
  gate: number;
  /** Token-choice: the state entering recursion 1, the chosen last recursion and its weight. */
  h1: Float32Array | null;
  lastDepth: number;
  lastWeight: number;
}

/** Floats a reused output buffer of the runner (head logits, layer outputs) holds at most (4 MiB); larger outputs get their own array. */
const REUSE_FLOATS = 1 << 20;

/** `buf` if it holds `size` floats, else a larger one (doubling, at most REUSE_FLOATS) to keep in its place. */
function grown(buf: Float32Array<ArrayBuffer>, size: number): Float32Array<ArrayBuffer> {
  return buf.length >= size ? buf : new Float32Array(Math.min(REUSE_FLOATS, Math.max(size, 2 * buf.length)));
}

export class ModelRunner {
  readonly config: ModelConfig;
  /** Depth steps (recursions) a token can take: Nr under cycle sharing, 1 for vanilla and sequence sharing. */
  readonly numRecursions: number;
  /** Unrolled positions of each depth step (the layer plan's). */
  private readonly depthSteps: readonly Int32Array[];
  private readonly hasUniqueEnds: boolean;
  /** Number of KV streams per sequence, and the stream of each unrolled position. */
  readonly numStreams: number;
  private readonly streamOfPosition: Int32Array;
  /** Which positions write K/V (false where KV sharing reads recursion 1's stream). */
  private readonly writesKV: Uint8Array;
  private readonly rowSize: number;
  /** MoD: (L) router index of each layer position, −1 where every token runs it. */
  private readonly modRouterOf: Int32Array;
  /** Per unique layer: the fused dense layer, or (MoE layers) the attention weights and experts packed for moeDecodeLayer. */
  private packed: { backend: Backend; layers: Array<PackedLayer | PackedMoeLayer>; head: PackedWeight } | null = null;
  /** Set to count the work of every call (see WorkMeter); null: not counted. */
  meter: WorkMeter | null = null;
  /** Storage of the packed weights and the K/V pool: the pool's dtype (f32 or bf16). */
  readonly dtype: StorageDtype;
  /** Bytes per stored weight / K or V element (4 f32, 2 bf16), for the WorkMeter. */
  private readonly elementBytes: number;
  /** The head's output buffer (see head). */
  private logits = new Float32Array(0);
  /** Two buffers the fused layer calls write into by turns (see layerOut). */
  private readonly layerBufs: [Float32Array<ArrayBuffer>, Float32Array<ArrayBuffer>] = [new Float32Array(0), new Float32Array(0)];
  /**
   * pagedLayout's arrays, grown as needed and reused: the layout of a layer call is read by that
   * call alone (views of these are handed to the kernel, which keeps none).
   */
  private readonly layoutBufs = { qPos: new Int32Array(0), kvSlots: new Int32Array(0), streams: new Int32Array(0), blockTables: new Int32Array(0), rowStreams: [] as KVStream[], listed: [] as KVStream[] };
  /** Layer calls laid out so far: each call's mark on the streams it lists (KVStream.layoutCall). */
  private layoutCalls = 0;
  /** linearParamsPerLayer of each unique layer, computed once (it is asked for every layer call). */
  private readonly linearParams: readonly number[];

  constructor(readonly model: Model, readonly pool: PagedKVPool) {
    const c = model.config;
    this.dtype = pool.dtype;
    this.elementBytes = pool.elementBytes;
    this.config = c;
    const plan = model.plan;
    this.depthSteps = plan.depthSteps;
    this.numRecursions = plan.depthSteps.length;
    this.hasUniqueEnds = plan.hasUniqueEnds;
    this.rowSize = c.num_key_value_heads * headDim(c);
    this.linearParams = model.params.layers.map((_, u) => linearParamsPerLayer(c, u));
    if (pool.rowSize !== this.rowSize) throw new ArgumentError(`KV pool rows hold ${pool.rowSize} floats; the model needs ${this.rowSize}`);
    const L = c.num_hidden_layers;
    this.streamOfPosition = new Int32Array(L);
    this.writesKV = new Uint8Array(L).fill(1);
    // every position has its own stream, except that under KV sharing slot j of recursion r > 0
    // reads the stream recursion 0 wrote for slot j
    const sharedFrom = new Int32Array(L).fill(-1);
    if (c.mor?.kv_strategy === 'share') {
      const first = this.depthSteps[0] as Int32Array;
      for (const step of this.depthSteps.slice(1)) step.forEach((l, j) => (sharedFrom[l] = first[j] as number));
    }
    let n = 0;
    for (let l = 0; l < L; l++) {
      const from = sharedFrom[l] as number;
      if (from >= 0) {
        this.streamOfPosition[l] = this.streamOfPosition[from] as number;
        this.writesKV[l] = 0;
      } else {
        this.streamOfPosition[l] = n++;
      }
    }
    this.numStreams = n;
    this.modRouterOf = routerIndexOfLayer(c.mod, L);
  }

  newSequence(): SequenceKV {
    return { streams: Array.from({ length: this.numStreams }, () => new KVStream()) };
  }

  /**
   * Reserve room for `tokens` tokens in every stream of a fresh sequence, each stream's blocks
   * side by side in memory (PagedKVPool.reserve; a stream without such a run takes blocks one at
   * a time as it grows). The engine does it at admission, for the blocks it counts the request
   * to need.
   */
  reserveSequence(seq: SequenceKV, tokens: number): void {
    const blocks = Math.ceil(tokens / this.pool.blockSize);
    for (const s of seq.streams) this.pool.reserve(s, blocks - s.blocks.length - s.reserved.length);
  }

  releaseSequence(seq: SequenceKV): void {
    for (const s of seq.streams) this.pool.release(s);
  }

  /** Bytes of KV cache a sequence holds. */
  sequenceBytes(seq: SequenceKV): number {
    return seq.streams.reduce((acc, s) => acc + s.blocks.length, 0) * this.pool.bytesPerBlock;
  }

  /**
   * The weights as the decoding kernels read them: every unique layer's matrices (q/k/v and
   * gate/up stacked) and the output head (the embedding when tied), packed by the backend once, on first use. A snapshot: a
   * runner (and so an engine) keeps serving the weights it packed; build a new one after the
   * model's weights change. In the runner's dtype (bf16: each value rounded to nearest-even).
   */
  private packedWeights(): { layers: Array<PackedLayer | PackedMoeLayer>; head: PackedWeight } {
    const be = getBackend();
    if (this.packed === null || this.packed.backend !== be) {
      const pack = (...ts: Tensor[]): PackedWeight => packAs(this.dtype, ...ts);
      const packAs = (dtype: typeof this.dtype, ...ts: Tensor[]): PackedWeight => {
        const k = (ts[0] as Tensor).dim(1);
        const n = ts.reduce((acc, t) => acc + t.dim(0), 0);
        const w = new Float32Array(n * k); //  (Σ out, in): the matrices stacked by rows
        let at = 0;
        for (const t of ts) {
          w.set(t.f32(), at);
          at += t.size;
        }
        return be.packWeight(w, n, k, dtype);
      };
      const layers = this.model.params.layers.map((p): PackedLayer | PackedMoeLayer => {
        if (p.moe !== null) return packMoeLayer(p, pack, (t) => packAs('f32', t));
        const { gate_proj: gate, up_proj: up, down_proj: down } = p.w;
        if (gate === undefined || up === undefined || down === undefined) throw new ArgumentError('a dense layer lacks its MLP matrices');
        return {
          inputNorm: p.inputNorm.f32(),
          postNorm: p.postNorm.f32(),
          qkv: pack(p.w.q_proj, p.w.k_proj, p.w.v_proj),
          o: pack(p.w.o_proj),
          gateUp: pack(gate, up),
          down: pack(down),
        };
      });
      this.packed = { backend: be, layers, head: pack(this.model.params.head) };
    }
    return this.packed;
  }

  /**
   * Final norm and output head: h (n, D) → logits (n, V), written into a buffer the runner reuses
   * up to REUSE_FLOATS floats: what exit and prefill return is valid until the runner's next head
   * call. A fresh array per step (batch 32 × V = 8,192: 1 MB) paid its page faults every step.
   */
  private head(h: Tensor): Tensor {
    const c = this.config;
    const n = h.dim(0);
    const V = c.vocab_size;
    this.meter?.call(2 * n * V * c.hidden_size, this.elementBytes * V * c.hidden_size, 0, 0);
    const x = rmsnorm(h, this.model.params.norm, c.rms_norm_eps);
    if (n * V > REUSE_FLOATS) return linearPacked(x, this.packedWeights().head);
    this.logits = grown(this.logits, n * V);
    const out = this.logits.subarray(0, n * V);
    getBackend().gemmPacked(n, x.f32(), this.packedWeights().head, out, false);
    return new Tensor(out, [n, V]);
  }

  /**
   * The output array of a fused layer call over input `h` (`size` floats): one of two buffers the
   * runner reuses, the one `h` is not in, so a stack of layer calls (each one's output the next
   * one's input) writes into them by turns; a fresh 32 KB array per layer call at batch 32 was
   * an allocation, its zeroing and garbage-collector work, a dozen times a step. So a layer's
   * output is valid until the second layer call after it: every caller (block, enter, exit,
   * routedLayer, runLayer's LoRA groups) copies or consumes it before then. Larger outputs (long
   * prefills) get their own array, as the head's do.
   */
  private layerOut(h: Float32Array, size: number): Float32Array {
    if (size > REUSE_FLOATS) return new Float32Array(size);
    const i = this.layerBufs[0].buffer === h.buffer ? 1 : 0;
    const buf = grown(this.layerBufs[i] as Float32Array<ArrayBuffer>, size);
    this.layerBufs[i] = buf;
    return buf.subarray(0, size);
  }

  /**
   * KV slots and attention layout of one layer call (the rows' positions are its qPos): each
   * row appends a slot to its stream at its layer position when that position stores K/V
   * (kvSlots[i] = the slot, else −1), then every row attends over its whole stream. Prompt rows
   * of one sequence share one block table. The arrays are views of reused buffers, valid until
   * the next layer call.
   */
  private pagedLayout(rows: readonly TokenState[], positionOf: (i: number) => number): { layout: PagedAttentionLayout; kvSlots: Int32Array; streamKeys: number } {
    const n = rows.length;
    const call = ++this.layoutCalls;
    const buf = this.layoutBufs;
    if (buf.kvSlots.length < n) {
      buf.qPos = new Int32Array(2 * n);
      buf.kvSlots = new Int32Array(2 * n);
      buf.streams = new Int32Array(4 * n);
    }
    const qPos = buf.qPos.subarray(0, n);
    const kvSlots = buf.kvSlots.subarray(0, n);
    const streamDesc = buf.streams.subarray(0, 2 * n);
    // Each row's stream, appending its slot when its position stores K/V; then, the call's
    // appends done, each distinct stream's block table once (a sequence's prompt rows share
    // one), found by the stream's mark for this call: this runs for every layer call of every
    // step.
    const rowStreams = buf.rowStreams;
    rowStreams.length = n;
    for (let i = 0; i < n; i++) {
      const l = positionOf(i);
      const row = rows[i] as TokenState;
      const stream = row.seq.streams[this.streamOfPosition[l] as number] as KVStream;
      rowStreams[i] = stream;
      qPos[i] = row.pos;
      kvSlots[i] = this.writesKV[l] === 1 ? this.pool.appendSlot(stream, row.pos) : -1;
    }
    const listed = buf.listed;
    listed.length = 0;
    let tableLen = 0;
    let streamKeys = 0; // keys of the distinct streams, for the WorkMeter
    for (let i = 0; i < n; i++) {
      const stream = rowStreams[i] as KVStream;
      if (stream.layoutCall !== call) {
        stream.layoutCall = call;
        stream.layoutOffset = tableLen;
        tableLen += stream.blocks.length;
        streamKeys += stream.length;
        listed.push(stream);
      }
      streamDesc[2 * i] = stream.layoutOffset;
      streamDesc[2 * i + 1] = stream.length;
    }
    if (buf.blockTables.length < tableLen) buf.blockTables = new Int32Array(2 * tableLen);
    const blockTables = buf.blockTables.subarray(0, tableLen);
    for (const s of listed) {
      const blocks = s.blocks;
      const off = s.layoutOffset;
      for (let b = 0; b < blocks.length; b++) blockTables[off + b] = blocks[b] as number;
    }
    const c = this.config;
    const hd = headDim(c);
    const layout: PagedAttentionLayout = {
      numHeads: c.num_attention_heads,
      numKvHeads: c.num_key_value_heads,
      headDim: hd,
      scale: 1 / Math.sqrt(hd),
      blockSize: this.pool.blockSize,
      qPos,
      posPool: this.pool.posPool,
      streams: streamDesc,
      blockTables,
    };
    return { layout, kvSlots, streamKeys };
  }

  /**
   * Run unrolled position l(i) for each row i. Without relaxation every row shares the block's
   * weights, so one call serves all depths. A relaxed (LoRA) model applies each position's own
   * LoRA: rows are grouped by position and each group runs with its LoRA, then the rows are put
   * back in order.
   */
  private runLayer(rows: readonly TokenState[], h: Tensor, positionOf: (i: number) => number): Tensor {
    const first = positionOf(0);
    if (this.model.params.lora === null) return this.runRows(rows, h, positionOf, first);
    const groups = new Map<number, number[]>();
    rows.forEach((_, i) => {
      const l = positionOf(i);
      const g = groups.get(l);
      if (g) g.push(i);
      else groups.set(l, [i]);
    });
    if (groups.size === 1) return this.runRows(rows, h, positionOf, first);
    const d = this.config.hidden_size;
    const H = h.f32();
    const out = new Float32Array(h.size);
    for (const [l, idx] of groups) {
      const sub = new Float32Array(idx.length * d);
      idx.forEach((i, k) => sub.set(H.subarray(i * d, (i + 1) * d), k * d));
      const y = this.runRows(idx.map((i) => rows[i] as TokenState), new Tensor(sub, [idx.length, d]), () => l, l).f32();
      idx.forEach((i, k) => out.set(y.subarray(k * d, (k + 1) * d), i * d));
    }
    return new Tensor(out, h.shape);
  }

  /**
   * One decoder layer over rows that share the weights of position `l` (their own streams per
   * positionOf): the fused decodeLayer kernel, or, for a relaxed (LoRA) position, the nn/ layer
   * with an AttendFn over the paged cache.
   */
  private runRows(rows: readonly TokenState[], h: Tensor, positionOf: (i: number) => number, l: number): Tensor {
    const c = this.config;
    const { layout, kvSlots, streamKeys } = this.pagedLayout(rows, positionOf);
    const qPos = layout.qPos;
    const lora = this.model.params.lora?.[l] ?? null;
    const u = this.model.plan.uniqueOf[l] as number;
    // qAlone: the fused kernel (decode.cc) runs the call, which takes q alone when no row stores
    // its k, v (under KV sharing, rows of deeper recursions only): Wk, Wv are neither read nor
    // multiplied
    const meter = (weightParams: number, qAlone = false): void => {
      if (!this.meter) return;
      const skipped = qAlone && kvSlots.every((slot) => slot < 0) ? kvProjectionParams(c) : 0;
      // FLOPs: each row's QKᵀ and P·V over the keys it may see — at most min(stream length,
      // position + 1), exact for a decoding row. Bytes: each stream's K and V rows (pool dtype)
      // once per call: the prompt rows of a sequence share one stream, and its K/V for one layer
      // (at most context × rowSize × 2 elements) stays in cache across those rows.
      let visible = 0;
      for (let i = 0; i < rows.length; i++) visible += Math.min(layout.streams[2 * i + 1] as number, (qPos[i] as number) + 1);
      const eb = this.elementBytes;
      this.meter.call(2 * rows.length * ((this.linearParams[u] as number) - skipped), eb * (weightParams - skipped), 4 * visible * layout.headDim * layout.numHeads, 2 * eb * streamKeys * this.rowSize);
    };
    const be = getBackend();
    const packedLayer = lora === null ? this.packedWeights().layers[u] : undefined;
    if (packedLayer !== undefined && 'experts' in packedLayer) {
      // MoE layer: rows grouped by router (their depth's, with per-recursion routers) and by expert
      const routerOfRow = Int32Array.from(rows, (_, i) => {
        const li = positionOf(i);
        return moeRouterIndex(c, u, this.model.plan.recursionOf[li] as number);
      });
      const out = new Float32Array(h.size);
      const used = moeDecodeLayer(be, { config: c, attention: layout, kvSlots, routerOfRow }, packedLayer, h.f32(), this.pool, out);
      // weights streamed: attention, routers, shared experts and the routed experts that ran
      const m = c.moe;
      if (m !== null) meter((this.linearParams[u] as number) - moeMlpParamsActive(c) + packedLayer.routers.length * m.num_experts * c.hidden_size + (m.num_shared_experts + used) * 3 * c.hidden_size * m.expert_intermediate_size);
      return new Tensor(out, h.shape);
    }
    if (lora === null) {
      meter(this.linearParams[u] as number, true);
      const H = h.f32();
      const out = this.layerOut(H, h.size);
      const packed = packedLayer as PackedLayer;
      be.decodeLayer({ eps: c.rms_norm_eps, ropeTheta: c.rope_theta, attention: layout, kvSlots }, H, packed, this.pool.kPool, this.pool.vPool, out);
      return new Tensor(out, h.shape);
    }
    meter(this.linearParams[u] as number);
    const layer = this.model.params.layers[this.model.plan.uniqueOf[l] as number];
    if (layer === undefined) throw new ArgumentError(`no unique layer at position ${l}`);
    const attend: AttendFn = (q, k, v) => {
      const K = k.f32();
      const V = v.f32();
      kvSlots.forEach((slot, i) => {
        if (slot >= 0) this.pool.writeSlot(slot, K, i * this.rowSize, V, i * this.rowSize);
      });
      const out = new Float32Array(q.size);
      be.attentionPaged(layout, q.f32(), this.pool.kPool, this.pool.vPool, out);
      return new Tensor(out, q.shape);
    };
    // Under KV sharing, rows of deeper recursions still compute k/v (cheap) but do not store them.
    return decoderLayer(c, h, layer, lora, indexTensor(qPos), attend);
  }

  /**
   * A MoD routed layer at position l: each row runs it iff sigmoid(z) > its request's threshold
   * (routing.ts, as the causal training forward); those rows take h + g·(Layer(h) − h) and write
   * K/V to the layer's stream, the others are returned unchanged and write nothing.
   *   h (n, D) → (n, D)
   */
  private routedLayer(rows: readonly TokenState[], h: Tensor, l: number): Tensor {
    const m = this.config.mod;
    const router = this.model.params.modRouters?.[this.modRouterOf[l] as number];
    if (m === null || router === undefined) throw new ArgumentError(`layer ${l} has no MoD router`);
    const z = routerLogits(m, router, h); //                                    (n, 1)
    const keeps = thresholdKeeps(z.f32(), rows.map((r) => r.control.threshold));
    const g = expertGate(m, z).f32();
    const idx: number[] = [];
    keeps.forEach((k, i) => k === 1 && idx.push(i));
    if (idx.length === 0) return h;
    const d = this.config.hidden_size;
    const H = h.f32();
    const taken = idx.map((i) => rows[i] as TokenState);
    const x = this.stack(idx.map((i) => H.subarray(i * d, (i + 1) * d))); //    (n', D)
    const out = H.slice(); // before runLayer: h may be the layer buffer it writes next (layerOut)
    const y = this.runLayer(taken, x, () => l);
    const next = add(x, expertUpdate(MOD_GATING, y, x, tensor(Float32Array.from(idx, (i) => g[i] as number), [idx.length, 1]))).f32();
    idx.forEach((i, k) => out.set(next.subarray(k * d, (k + 1) * d), i * d));
    return new Tensor(out, h.shape);
  }

  /** Rows of D floats stacked: (n, D). */
  private stack(vectors: readonly Float32Array[]): Tensor {
    const d = this.config.hidden_size;
    const data = new Float32Array(vectors.length * d);
    vectors.forEach((v, i) => data.set(v, i * d));
    return new Tensor(data, [vectors.length, d]);
  }

  /**
   * The rows' states stacked: (n, D). Rows whose states are consecutive rows of one array, as
   * scatter leaves a batch that stays together (a prompt's tokens from recursion to recursion),
   * are that array's view, not a copy. A state is never written in place, so the view is safe.
   */
  private gather(rows: readonly TokenState[]): Tensor {
    const d = this.config.hidden_size;
    const first = (rows[0] as TokenState | undefined)?.h;
    if (first !== undefined && first.length === d) {
      let together = true;
      for (let i = 1; i < rows.length && together; i++) {
        const h = (rows[i] as TokenState).h;
        together = h.buffer === first.buffer && h.byteOffset === first.byteOffset + i * d * 4 && h.length === d;
      }
      if (together) return new Tensor(new Float32Array(first.buffer, first.byteOffset, rows.length * d), [rows.length, d]);
    }
    return this.stack(rows.map((r) => r.h));
  }

  /**
   * Each row's state ← its row of h (n, D): views of one copy of h (h may be a layer buffer that
   * is written again, see layerOut). One copy and n views, not n arrays: a 1,024-token prefill
   * made a thousand small arrays per recursion.
   */
  private scatter(rows: readonly TokenState[], h: Tensor): void {
    const d = this.config.hidden_size;
    const H = h.f32().slice(0, rows.length * d);
    rows.forEach((r, i) => {
      r.h = H.subarray(i * d, (i + 1) * d);
    });
  }

  /** Decide whether each row runs recursion row.depth next (and with which gate). */
  private decide(rows: TokenState[]): void {
    const m = this.config.mor;
    const nr = this.numRecursions;
    for (const r of rows) if (r.depth >= Math.min(nr, r.control.maxDepth)) r.next = 'exit';
    if (m === null || m.routing !== 'expert_choice') {
      if (m === null) this.earlyExit(rows.filter((r) => r.next === 'block' && r.depth > 0 && r.control.exitConfidence !== null));
      return;
    }
    // group by depth: each recursion has its own router
    const byDepth = new Map<number, TokenState[]>();
    for (const r of rows) {
      if (r.next !== 'block') continue;
      const group = byDepth.get(r.depth);
      if (group === undefined) byDepth.set(r.depth, [r]);
      else group.push(r);
    }
    const params = this.model.params.mor;
    for (const [depth, group] of byDepth) {
      const h = this.gather(group);
      const z = routerLogits(m, params?.routers[depth] as RouterParams, h); //   (n, 1)
      const decider = params?.auxRouters ? routerLogits(m, params.auxRouters[depth] as RouterParams, h) : z;
      const keeps = expertKeeps(m, nr, depth, decider.f32(), group.map((r) => r.control.threshold));
      const gates = expertGate(m, z).f32();
      group.forEach((r, i) => {
        if (keeps[i] === 1) r.gate = gates[i] as number;
        else r.next = 'exit';
      });
    }
  }

  /** Plain recursive models: exit when the head is already confident (an approximation: no last layer). */
  private earlyExit(rows: TokenState[]): void {
    if (rows.length === 0) return;
    const probs = softmax(this.head(this.gather(rows))).f32();
    const V = this.config.vocab_size;
    rows.forEach((r, i) => {
      let max = 0;
      for (let j = 0; j < V; j++) max = Math.max(max, probs[i * V + j] as number);
      if (max >= (r.control.exitConfidence as number)) r.next = 'exit';
    });
  }

  /** Token-choice: pick each row's depth once from the state entering recursion 1. */
  private chooseDepths(rows: TokenState[]): void {
    const m = this.config.mor;
    if (!m || m.routing !== 'token_choice' || rows.length === 0) return;
    const params = this.model.params.mor;
    const nr = this.numRecursions;
    const p = tokenChoiceProbs(m, routerLogits(m, params?.tokenRouter as RouterParams, this.gather(rows))).f32(); // (n, Nr)
    const depth = tokenChoiceDepths(p, nr, params?.routerBias?.f32() ?? null);
    rows.forEach((r, i) => {
      r.lastDepth = Math.min(depth[i] as number, r.control.maxDepth - 1);
      r.lastWeight = p[i * nr + r.lastDepth] as number;
      r.h1 = r.h;
    });
  }

  /** New token-states for token ids at positions of a sequence (not yet run). */
  newTokens(seq: SequenceKV, ids: ArrayLike<number>, startPos: number, control: DepthControl): TokenState[] {
    return Array.from({ length: ids.length }, (_, i) => ({
      seq,
      pos: startPos + i,
      h: new Float32Array(0),
      depth: 0,
      control,
      next: 'block' as const,
      gate: 1,
      h1: null,
      lastDepth: 0,
      lastWeight: 1,
    }));
  }

  /** enter: embedding and the first unique layer, then the first routing decision. */
  enter(rows: TokenState[], ids: Int32Array): void {
    if (rows.length === 0) return;
    noGrad(() => {
      let h = embedding(this.model.params.embed, indexTensor(ids)); //     (n, D)
      if (this.hasUniqueEnds) h = this.runLayer(rows, h, () => 0);
      this.scatter(rows, h);
      this.chooseDepths(rows);
      this.decide(rows);
    });
  }

  /** block: one recursion for each row at its own depth, gate update, next decision. */
  block(rows: TokenState[]): void {
    if (rows.length === 0) return;
    const m = this.config.mor;
    noGrad(() => {
      const before = this.gather(rows); //                                       (n, D)
      let y = before;
      const K = (this.depthSteps[0] as Int32Array).length; // every depth step has the same length
      for (let j = 0; j < K; j++) {
        const positionOf = (i: number): number => (this.depthSteps[(rows[i] as TokenState).depth] as Int32Array)[j] as number;
        // MoD is vanilla (one depth step): every row is at the same layer position
        y = (this.modRouterOf[positionOf(0)] as number) >= 0 ? this.routedLayer(rows, y, positionOf(0)) : this.runLayer(rows, y, positionOf);
      }
      let next: Tensor = y; //                         carried on ungated, or a model without routing
      if (m?.routing === 'expert_choice') {
        next = add(before, expertUpdate(m, y, before, tensor(Float32Array.from(rows, (r) => r.gate), [rows.length, 1])));
      }
      this.scatter(rows, next);
      if (m?.routing === 'token_choice') {
        // a token at its chosen depth finishes: h¹ + p·y
        const done = rows.filter((r) => r.depth === r.lastDepth);
        if (done.length > 0) {
          const fin = tokenChoiceFinish(this.stack(done.map((r) => r.h1 as Float32Array)), this.gather(done), tensor(Float32Array.from(done, (r) => r.lastWeight), [done.length, 1]));
          this.scatter(done, fin);
        }
      }
      for (const r of rows) {
        if (m?.routing === 'token_choice' && r.depth === r.lastDepth) r.next = 'exit';
        r.depth += 1;
      }
      this.decide(rows.filter((r) => r.next === 'block'));
    });
  }

  /**
   * exit: last unique layer (writing its K/V) and, for rows with wantLogits, norm and head.
   * Returns (k, V) logits for those rows, in order, valid until the runner's next exit or prefill
   * (the head's reused buffer).
   */
  exit(rows: TokenState[], wantLogits: readonly boolean[]): Float32Array {
    if (rows.length === 0) return new Float32Array(0);
    const L = this.config.num_hidden_layers;
    return noGrad(() => {
      let h = this.gather(rows);
      if (this.hasUniqueEnds) h = this.runLayer(rows, h, () => L - 1);
      const pick = rows.map((_, i) => i).filter((i) => wantLogits[i]);
      if (pick.length === 0) return new Float32Array(0);
      const d = this.config.hidden_size;
      const H = h.f32();
      const sel = new Float32Array(pick.length * d);
      pick.forEach((i, k) => sel.set(H.subarray(i * d, (i + 1) * d), k * d));
      return this.head(new Tensor(sel, [pick.length, d])).f32();
    });
  }

  /**
   * Prefill: run a prompt's tokens through enter → recursions → exit as one batch per stage,
   * filling the sequence's KV streams; returns the logits of the last prompt token (V) (of
   * every prompt token (n, V) with `allLogits`; valid until the next exit or prefill, as exit's)
   * and the depth each prompt token ran.
   */
  prefill(seq: SequenceKV, ids: Int32Array, control: DepthControl, allLogits = false): { logits: Float32Array; depths: Int32Array } {
    const rows = this.newTokens(seq, ids, seq.streams[0]?.length ?? 0, control);
    this.enter(rows, ids);
    // Under recursive KV sharing with Cycle sharing, deeper recursions store no K/V and no
    // unique last layer needs a token's final state: only the last prompt token (whose logits
    // are wanted) goes deeper than recursion 1. (Middle-Cycle's last layer writes K/V from every
    // token's final state, so there every token runs its full depth.)
    const last = rows[rows.length - 1] as TokenState;
    const skipDeeper = this.config.mor?.kv_strategy === 'share' && !this.hasUniqueEnds && !allLogits;
    for (;;) {
      const live = rows.filter((r) => r.next === 'block' && (!skipDeeper || r.depth === 0 || r === last));
      if (live.length === 0) break;
      this.block(live);
    }
    const want = rows.map((_, i) => allLogits || i === rows.length - 1);
    const logits = this.exit(rows, want);
    return { logits, depths: Int32Array.from(rows, (r) => r.depth) };
  }
}
