/**
 * The parameter table: ONE list of every parameter (name, shape, init, weight decay) that
 * drives initialisation, the model's structured view, checkpoint names and optimiser groups.
 * Names follow Hugging Face Llama so checkpoints look familiar.
 */
import { ShapeError } from '../errors.js';
import { Tensor, parameter } from '../tensor/tensor.js';
import { Rng } from '../util/rng.js';
import { headDim, type ModelConfig } from './config.js';
import { layerPlan } from './sharing.js';
import { LAYER_MATRICES, MLP_MATRICES, type LayerMatrix, type LayerWeights, type LoraWeights } from '../nn/layers.js';
import { assembleMoeLayer, isMoeLayer, moeLayerSpecs, moeMlpParamsActive, moeMlpParamsStored, type MoeLayerParams } from './moe-params.js';
import { routedLayers } from './mod-config.js';

export type InitKind = 'normal' | 'ones' | 'zeros';

export interface ParamSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly init: InitKind;
  /** AdamW weight decay applies (matrices yes, norm scales no). */
  readonly decay: boolean;
  /** Learning-rate multiplier of this parameter's group (auxiliary routers train at 10×). */
  readonly lrScale?: number;
  /** False for buffers: state saved with the model but not trained by gradients (loss-free balancing bias). */
  readonly trainable?: boolean;
}

export { LAYER_MATRICES, type LayerMatrix };

/** Prefix of a layer matrix's parameter name inside a layer: self_attn.* or mlp.*. */
function matrixPath(m: LayerMatrix): string {
  return m === 'gate_proj' || m === 'up_proj' || m === 'down_proj' ? `mlp.${m}` : `self_attn.${m}`;
}

/** (out, in) of each layer matrix. */
export function matrixShape(c: ModelConfig, m: LayerMatrix): [number, number] {
  const d = c.hidden_size;
  const hd = headDim(c);
  const q = c.num_attention_heads * hd;
  const kv = c.num_key_value_heads * hd;
  switch (m) {
    case 'q_proj': return [q, d];
    case 'k_proj': return [kv, d];
    case 'v_proj': return [kv, d];
    case 'o_proj': return [d, q];
    case 'gate_proj': return [c.intermediate_size, d];
    case 'up_proj': return [c.intermediate_size, d];
    case 'down_proj': return [d, c.intermediate_size];
  }
}

export function layerParamName(u: number, m: LayerMatrix): string {
  return `model.layers.${u}.${matrixPath(m)}.weight`;
}

export function loraParamName(position: number, m: LayerMatrix, which: 'A' | 'B'): string {
  return `model.lora.${position}.${matrixPath(m)}.lora_${which}`;
}

/** Effective LoRA rank of a matrix: capped at min(r, in, out) (MOR_SPEC §2). */
export function loraRankOf(c: ModelConfig, m: LayerMatrix): number {
  const [out, inp] = matrixShape(c, m);
  return Math.min(c.recursion?.lora_rank ?? 0, inp, out);
}

/** Every parameter of a model with this config, in a fixed order. */
/** Router parameters: linear d→out, or MLP d→2d→GELU→out; no bias (MOR_SPEC §3). */
function routerSpecs(c: ModelConfig, prefix: string, out: number, lrScale?: number): ParamSpec[] {
  const d = c.hidden_size;
  const extra = lrScale !== undefined && lrScale !== 1 ? { lrScale } : {};
  if (c.mor?.router === 'mlp') {
    return [
      { name: `${prefix}.fc1.weight`, shape: [2 * d, d], init: 'normal', decay: true, ...extra },
      { name: `${prefix}.fc2.weight`, shape: [out, 2 * d], init: 'normal', decay: true, ...extra },
    ];
  }
  return [{ name: `${prefix}.weight`, shape: [out, d], init: 'normal', decay: true, ...extra }];
}

/** Router parameters of the MoR section (empty without one). */
function morSpecs(c: ModelConfig): ParamSpec[] {
  const m = c.mor;
  const nr = c.recursion?.num_recursions ?? 0;
  if (m === null || nr === 0) return [];
  const specs: ParamSpec[] = [];
  if (m.routing === 'expert_choice') {
    for (let r = 0; r < nr; r++) specs.push(...routerSpecs(c, `model.mor.routers.${r}`, 1));
    if (m.causal === 'aux_router') {
      for (let r = 0; r < nr; r++) specs.push(...routerSpecs(c, `model.mor.aux_routers.${r}`, 1, m.aux_router_lr_scale));
    }
  } else {
    specs.push(...routerSpecs(c, 'model.mor.router', nr));
    specs.push({ name: 'model.mor.router_bias', shape: [nr], init: 'zeros', decay: false, trainable: false });
  }
  return specs;
}

/** Name of the MoD router of layer l: a linear D → 1 (MOR_SPEC §11). */
export function modRouterName(l: number): string {
  return `model.layers.${l}.mod_router.weight`;
}

/** Router parameters of the MoD section: one linear router per routed layer (empty without one). */
function modSpecs(c: ModelConfig): ParamSpec[] {
  if (c.mod === null) return [];
  return routedLayers(c.mod, c.num_hidden_layers).map((l) => ({ name: modRouterName(l), shape: [1, c.hidden_size], init: 'normal' as const, decay: true }));
}

/** The untied output head's parameter (Hugging Face's name; absent when tie_word_embeddings). */
export const LM_HEAD = 'lm_head.weight';

export function paramTable(c: ModelConfig): ParamSpec[] {
  const d = c.hidden_size;
  const specs: ParamSpec[] = [{ name: 'model.embed_tokens.weight', shape: [c.vocab_size, d], init: 'normal', decay: true }];
  const plan = layerPlan(c);
  for (let u = 0; u < plan.numUnique; u++) {
    specs.push({ name: `model.layers.${u}.input_layernorm.weight`, shape: [d], init: 'ones', decay: false });
    specs.push({ name: `model.layers.${u}.post_attention_layernorm.weight`, shape: [d], init: 'ones', decay: false });
    const moe = isMoeLayer(c, u);
    for (const m of LAYER_MATRICES) {
      if (!moe || !isMlpMatrix(m)) specs.push({ name: layerParamName(u, m), shape: matrixShape(c, m), init: 'normal', decay: true });
    }
    if (moe) specs.push(...moeLayerSpecs(c, u)); // the experts replace gate/up/down
  }
  specs.push({ name: 'model.norm.weight', shape: [d], init: 'ones', decay: false });
  if (!c.tie_word_embeddings) specs.push({ name: LM_HEAD, shape: [c.vocab_size, d], init: 'normal', decay: true });
  if ((c.recursion?.lora_rank ?? 0) > 0) {
    // One LoRA per unrolled position (relaxation): W'x + B·A·x, B zero so training starts at the shared model.
    for (let p = 0; p < c.num_hidden_layers; p++) {
      for (const m of LAYER_MATRICES) {
        const [out, inp] = matrixShape(c, m);
        const r = loraRankOf(c, m);
        specs.push({ name: loraParamName(p, m, 'A'), shape: [r, inp], init: 'normal', decay: true });
        specs.push({ name: loraParamName(p, m, 'B'), shape: [out, r], init: 'zeros', decay: true });
      }
    }
  }
  specs.push(...morSpecs(c));
  specs.push(...modSpecs(c));
  return specs;
}

const isMlpMatrix = (m: LayerMatrix): boolean => (MLP_MATRICES as readonly string[]).includes(m);

/** A unique layer's parameters: the nn/ layer weights, and its experts when it is an MoE layer. */
export interface LayerParams extends LayerWeights {
  readonly moe: MoeLayerParams | null;
}

/** One unrolled position's LoRA pairs. */
export type LoraParams = LoraWeights;

/** One router's weights: linear (out, D), or MLP fc1 (2D, D), fc2 (out, 2D). */
export type RouterParams = { readonly kind: 'linear'; readonly w: Tensor } | { readonly kind: 'mlp'; readonly fc1: Tensor; readonly fc2: Tensor };

export interface MorParams {
  /** Expert-choice: one router per recursion. */
  readonly routers: readonly RouterParams[];
  /** Expert-choice with causal = aux_router: one auxiliary router per recursion. */
  readonly auxRouters: readonly RouterParams[] | null;
  /** Token-choice: the single router d → Nr. */
  readonly tokenRouter: RouterParams | null;
  /** Token-choice: the loss-free balancing bias (Nr), a buffer. */
  readonly routerBias: Tensor | null;
}

/** The parameters of one model: the table, the tensors by name, and a structured view. */
export interface ModelParams {
  readonly specs: readonly ParamSpec[];
  readonly byName: ReadonlyMap<string, Tensor>;
  readonly embed: Tensor;
  /** (V, D) output head: `embed` itself when tied, else `lm_head.weight`. */
  readonly head: Tensor;
  readonly norm: Tensor;
  /** Unique layers, indexed by unique-layer id (see sharing.ts). */
  readonly layers: readonly LayerParams[];
  /** Per-unrolled-position LoRA, or null without relaxation. */
  readonly lora: readonly LoraParams[] | null;
  /** Router weights, or null without a MoR section. */
  readonly mor: MorParams | null;
  /** MoD: the router of each routed layer, in layer order (mod-config.ts routedLayers), or null without a MoD section. */
  readonly modRouters: readonly RouterParams[] | null;
}

function need(byName: ReadonlyMap<string, Tensor>, name: string): Tensor {
  const t = byName.get(name);
  if (t === undefined) throw new ShapeError(`missing parameter '${name}'`);
  return t;
}

/** Build the structured view over named tensors (checked against the table's shapes). */
export function assembleParams(c: ModelConfig, byName: ReadonlyMap<string, Tensor>): ModelParams {
  const specs = paramTable(c);
  for (const s of specs) {
    const t = need(byName, s.name);
    if (t.rank !== s.shape.length || t.shape.some((d, i) => d !== s.shape[i])) {
      throw new ShapeError(`parameter '${s.name}' must have shape [${s.shape.join(', ')}], got [${t.shape.join(', ')}]`);
    }
  }
  const plan = layerPlan(c);
  const layers: LayerParams[] = [];
  for (let u = 0; u < plan.numUnique; u++) {
    const moe = isMoeLayer(c, u);
    const w = {} as Record<LayerMatrix, Tensor>;
    for (const m of LAYER_MATRICES) if (!moe || !isMlpMatrix(m)) w[m] = need(byName, layerParamName(u, m));
    layers.push({
      inputNorm: need(byName, `model.layers.${u}.input_layernorm.weight`),
      postNorm: need(byName, `model.layers.${u}.post_attention_layernorm.weight`),
      w,
      moe: moe ? assembleMoeLayer(c, u, byName) : null,
    });
  }
  let lora: LoraParams[] | null = null;
  if ((c.recursion?.lora_rank ?? 0) > 0) {
    lora = [];
    for (let p = 0; p < c.num_hidden_layers; p++) {
      const entry = {} as Record<LayerMatrix, { A: Tensor; B: Tensor }>;
      for (const m of LAYER_MATRICES) entry[m] = { A: need(byName, loraParamName(p, m, 'A')), B: need(byName, loraParamName(p, m, 'B')) };
      lora.push(entry);
    }
  }
  let mor: MorParams | null = null;
  if (c.mor !== null) {
    const nr = c.recursion?.num_recursions ?? 0;
    const router = (prefix: string): RouterParams =>
      c.mor?.router === 'mlp'
        ? { kind: 'mlp', fc1: need(byName, `${prefix}.fc1.weight`), fc2: need(byName, `${prefix}.fc2.weight`) }
        : { kind: 'linear', w: need(byName, `${prefix}.weight`) };
    const expert = c.mor.routing === 'expert_choice';
    mor = {
      routers: expert ? Array.from({ length: nr }, (_, r) => router(`model.mor.routers.${r}`)) : [],
      auxRouters: expert && c.mor.causal === 'aux_router' ? Array.from({ length: nr }, (_, r) => router(`model.mor.aux_routers.${r}`)) : null,
      tokenRouter: expert ? null : router('model.mor.router'),
      routerBias: expert ? null : need(byName, 'model.mor.router_bias'),
    };
  }
  // buffers never take gradients
  for (const s of specs) if (s.trainable === false) (byName.get(s.name) as Tensor).requiresGrad = false;
  const embed = need(byName, 'model.embed_tokens.weight');
  const head = c.tie_word_embeddings ? embed : need(byName, LM_HEAD);
  const modRouters = c.mod === null ? null : routedLayers(c.mod, c.num_hidden_layers).map((l): RouterParams => ({ kind: 'linear', w: need(byName, modRouterName(l)) }));
  return { specs, byName, embed, head, norm: need(byName, 'model.norm.weight'), layers, lora, mor, modRouters };
}

/** Fresh parameters: normal(0, initializer_range) matrices, ones for norms, zeros for LoRA B. */
export function initParams(c: ModelConfig, seed: number): ModelParams {
  const rng = new Rng(seed);
  const byName = new Map<string, Tensor>();
  for (const s of paramTable(c)) {
    const size = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (s.init === 'ones') data.fill(1);
    else if (s.init === 'normal') for (let i = 0; i < size; i++) data[i] = c.initializer_range * rng.normal();
    byName.set(s.name, parameter(data, s.shape, s.name));
  }
  return assembleParams(c, byName);
}

/**
 * Parameter counts: unique (stored), embedding, effective (every parameter at every unrolled
 * position, as if unrolled without sharing: the "total" of an MoE model) and active per token
 * (what one token running every position multiplies: the embedding row, norms, attention, and
 * of an MoE MLP one router, its top-k experts and the shared ones; = effective for dense models).
 */
export function countParams(c: ModelConfig): { unique: number; embedding: number; nonEmbedding: number; effective: number; active: number } {
  const size = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);
  let unique = 0;
  for (const s of paramTable(c)) unique += size(s.shape);
  const embedding = c.vocab_size * c.hidden_size;
  const untiedHead = c.tie_word_embeddings ? 0 : embedding;
  let attnLayer = 2 * c.hidden_size;
  let denseMlp = 0;
  for (const m of LAYER_MATRICES) {
    if (isMlpMatrix(m)) denseMlp += size(matrixShape(c, m));
    else attnLayer += size(matrixShape(c, m));
  }
  const loraPerPosition = LAYER_MATRICES.reduce((acc, m) => {
    const [out, inp] = matrixShape(c, m);
    return acc + loraRankOf(c, m) * (out + inp);
  }, 0);
  const plan = layerPlan(c);
  let effective = embedding + untiedHead + c.hidden_size;
  let active = effective;
  for (let p = 0; p < c.num_hidden_layers; p++) {
    const u = plan.uniqueOf[p] as number;
    const moe = isMoeLayer(c, u);
    effective += attnLayer + loraPerPosition + (moe ? moeMlpParamsStored(c, u) : denseMlp);
    active += attnLayer + loraPerPosition + (moe ? moeMlpParamsActive(c) : denseMlp);
  }
  return { unique, embedding, nonEmbedding: unique - embedding, effective, active };
}
