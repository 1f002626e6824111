/**
 * Parameters of the Mixture-of-Experts MLPs (MOR_SPEC §10), as entries of the one parameter
 * table (params.ts calls moeLayerSpecs for every MoE layer in place of its dense gate/up/down).
 * Names, per MoE unique layer u:
 *
 *   model.layers.u.mlp.routers.r.weight            (E, D)   r < Nr with router_per_recursion on a block layer, else r = 0
 *   model.layers.u.mlp.routers.r.selection_bias    (E)      loss-free balancing only; a buffer (saved, not trained)
 *   model.layers.u.mlp.experts.e.gate_proj.weight  (I_e, D)
 *   model.layers.u.mlp.experts.e.up_proj.weight    (I_e, D)
 *   model.layers.u.mlp.experts.e.down_proj.weight  (D, I_e)
 *   model.layers.u.mlp.shared_experts.{gate,up,down}_proj.weight   (S·I_e, D) / (D, S·I_e)
 *
 * The S shared experts are stored stacked as one SwiGLU of width S·I_e (as DeepSeek-V3 stores
 * them): a sum of SwiGLUs of width I_e over the same input IS the SwiGLU of their stacked
 * matrices, and one product is cheaper than S.
 */
import { ShapeError } from '../errors.js';
import type { Tensor } from '../tensor/tensor.js';
import type { ModelConfig } from './config.js';
import { moeLayerMask, sharedUniqueLayers, type MoeConfig } from './moe-config.js';
import type { ParamSpec } from './params.js';

/** One SwiGLU expert: gate, up (I, D), down (D, I). */
export interface ExpertParams {
  readonly gate: Tensor;
  readonly up: Tensor;
  readonly down: Tensor;
}

/** One router over a layer's experts: w (E, D); bias (E) for loss-free balancing, else null. */
export interface MoeRouterParams {
  readonly w: Tensor;
  readonly bias: Tensor | null;
}

export interface MoeLayerParams {
  /** One router, or one per recursion (router_per_recursion on a block layer). */
  readonly routers: readonly MoeRouterParams[];
  /** E routed experts. */
  readonly experts: readonly ExpertParams[];
  /** The shared experts stacked (width S·I_e), or null when S = 0. */
  readonly shared: ExpertParams | null;
}

/** Whether unique layer u is an MoE layer. */
export function isMoeLayer(c: ModelConfig, u: number): boolean {
  return c.moe !== null && moeLayerMask(c.moe.placement, c)[u] === true;
}

/** Routers of MoE unique layer u: Nr for a block layer with router_per_recursion, else 1. */
export function moeRouterCount(c: ModelConfig, u: number): number {
  const m = c.moe;
  if (m === null || !m.router_per_recursion || sharedUniqueLayers(c)[u] !== true) return 1;
  return c.recursion?.num_recursions ?? 1;
}

/** Which router of its layer a position at recursion `recursion` (−1: unique layer) uses. */
export function moeRouterIndex(c: ModelConfig, u: number, recursion: number): number {
  return moeRouterCount(c, u) > 1 ? Math.max(0, recursion) : 0;
}

const routerName = (u: number, r: number): string => `model.layers.${u}.mlp.routers.${r}`;
const expertName = (u: number, e: number, m: string): string => `model.layers.${u}.mlp.experts.${e}.${m}.weight`;
const sharedName = (u: number, m: string): string => `model.layers.${u}.mlp.shared_experts.${m}.weight`;

function expertSpecs(d: number, width: number, name: (m: string) => string): ParamSpec[] {
  return [
    { name: name('gate_proj'), shape: [width, d], init: 'normal', decay: true },
    { name: name('up_proj'), shape: [width, d], init: 'normal', decay: true },
    { name: name('down_proj'), shape: [d, width], init: 'normal', decay: true },
  ];
}

/** The parameter-table entries of MoE unique layer u (replacing its dense MLP matrices). */
export function moeLayerSpecs(c: ModelConfig, u: number): ParamSpec[] {
  const m = c.moe as MoeConfig;
  const d = c.hidden_size;
  const specs: ParamSpec[] = [];
  for (let r = 0; r < moeRouterCount(c, u); r++) {
    specs.push({ name: `${routerName(u, r)}.weight`, shape: [m.num_experts, d], init: 'normal', decay: true });
    if (m.balancing === 'loss_free') specs.push({ name: `${routerName(u, r)}.selection_bias`, shape: [m.num_experts], init: 'zeros', decay: false, trainable: false });
  }
  for (let e = 0; e < m.num_experts; e++) specs.push(...expertSpecs(d, m.expert_intermediate_size, (w) => expertName(u, e, w)));
  if (m.num_shared_experts > 0) specs.push(...expertSpecs(d, m.num_shared_experts * m.expert_intermediate_size, (w) => sharedName(u, w)));
  return specs;
}

/** The structured view of MoE unique layer u over the named tensors. */
export function assembleMoeLayer(c: ModelConfig, u: number, byName: ReadonlyMap<string, Tensor>): MoeLayerParams {
  const m = c.moe as MoeConfig;
  const need = (name: string): Tensor => {
    const t = byName.get(name);
    if (t === undefined) throw new ShapeError(`missing parameter '${name}'`);
    return t;
  };
  const expert = (name: (w: string) => string): ExpertParams => ({ gate: need(name('gate_proj')), up: need(name('up_proj')), down: need(name('down_proj')) });
  return {
    routers: Array.from({ length: moeRouterCount(c, u) }, (_, r) => ({
      w: need(`${routerName(u, r)}.weight`),
      bias: m.balancing === 'loss_free' ? need(`${routerName(u, r)}.selection_bias`) : null,
    })),
    experts: Array.from({ length: m.num_experts }, (_, e) => expert((w) => expertName(u, e, w))),
    shared: m.num_shared_experts > 0 ? expert((w) => sharedName(u, w)) : null,
  };
}

/** Parameters an MoE MLP stores: routers, E experts, the shared experts (biases excluded: they are not weights a token multiplies). */
export function moeMlpParamsStored(c: ModelConfig, u: number): number {
  const m = c.moe as MoeConfig;
  const d = c.hidden_size;
  return moeRouterCount(c, u) * m.num_experts * d + (m.num_experts + m.num_shared_experts) * 3 * d * m.expert_intermediate_size;
}

/** Linear-map parameters one token passes through in an MoE MLP: one router, its k experts and the shared ones. */
export function moeMlpParamsActive(c: ModelConfig): number {
  const m = c.moe as MoeConfig;
  const d = c.hidden_size;
  return m.num_experts * d + (m.top_k + m.num_shared_experts) * 3 * d * m.expert_intermediate_size;
}

/** Every MoE router of the model, in parameter-table order: (unique layer, router index). Stats and biases are indexed by it. */
export function moeRouterList(c: ModelConfig): Array<{ readonly layer: number; readonly router: number }> {
  const out: Array<{ layer: number; router: number }> = [];
  if (c.moe === null) return out;
  moeLayerMask(c.moe.placement, c).forEach((isMoe, u) => {
    if (isMoe) for (let r = 0; r < moeRouterCount(c, u); r++) out.push({ layer: u, router: r });
  });
  return out;
}
