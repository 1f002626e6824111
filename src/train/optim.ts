/**
 * AdamW (decoupled weight decay, bias correction, torch.optim.AdamW semantics) and global
 * gradient-norm clipping (torch.nn.utils.clip_grad_norm_ semantics).
 */
import { ArgumentError, ShapeError } from '../errors.js';
import { getBackend } from '../backend/index.js';
import type { Tensor } from '../tensor/tensor.js';

export interface AdamWConfig {
  /** β1, default 0.9 */
  readonly beta1: number;
  /** β2, default 0.95 (MOR_SPEC §6) */
  readonly beta2: number;
  readonly eps: number;
  /** Decoupled weight decay applied to parameters with decay = true (default 0.1). */
  readonly weightDecay: number;
}

export const DEFAULT_ADAMW: AdamWConfig = Object.freeze({ beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 });

export interface OptimParam {
  readonly tensor: Tensor;
  /** Whether weight decay applies (matrices yes, norm scales no). */
  readonly decay: boolean;
  /** Multiplier on the learning rate (an auxiliary router's group trains at 10×). Default 1. */
  readonly lrScale?: number;
}

interface SlotState {
  m: Float32Array;
  v: Float32Array;
  /** Steps this parameter has taken (PyTorch counts per parameter; a step without grad is skipped). */
  step: number;
}

export class AdamW {
  readonly config: AdamWConfig;
  readonly params: readonly OptimParam[];
  private readonly slots: SlotState[];

  constructor(params: readonly OptimParam[], config: Partial<AdamWConfig> = {}) {
    this.config = Object.freeze({ ...DEFAULT_ADAMW, ...config });
    const names = new Set<string>();
    for (const p of params) {
      if (p.tensor.name !== undefined) {
        if (names.has(p.tensor.name)) throw new ArgumentError(`AdamW: parameter '${p.tensor.name}' listed twice`);
        names.add(p.tensor.name);
      }
    }
    this.params = params;
    this.slots = params.map((p) => ({ m: new Float32Array(p.tensor.size), v: new Float32Array(p.tensor.size), step: 0 }));
  }

  /** One update at learning rate lr, using each parameter's current .grad. */
  step(lr: number): void {
    const be = getBackend();
    const { beta1, beta2, eps, weightDecay } = this.config;
    this.params.forEach((p, i) => {
      const g = p.tensor.grad;
      if (g === null) return;
      const s = this.slots[i] as SlotState;
      s.step += 1;
      be.adamwStep(p.tensor.f32(), g, s.m, s.v, {
        lr: lr * (p.lrScale ?? 1),
        beta1,
        beta2,
        eps,
        weightDecay: p.decay ? weightDecay : 0,
        step: s.step,
      });
    });
  }

  /** Moments and step counts by parameter name, for checkpoints. */
  stateEntries(): Array<{ name: string; m: Float32Array; v: Float32Array; step: number }> {
    return this.params.map((p, i) => {
      const s = this.slots[i] as SlotState;
      return { name: p.tensor.name ?? `param${i}`, m: s.m, v: s.v, step: s.step };
    });
  }

  /** Restore moments from stateEntries() output (by name; every parameter must be present). */
  loadState(entries: ReadonlyMap<string, { m: Float32Array; v: Float32Array; step: number }>): void {
    this.params.forEach((p, i) => {
      const name = p.tensor.name ?? `param${i}`;
      const e = entries.get(name);
      if (e === undefined) throw new ArgumentError(`optimizer state has no entry for '${name}'`);
      if (e.m.length !== p.tensor.size || e.v.length !== p.tensor.size) {
        throw new ShapeError(`optimizer state for '${name}' has ${e.m.length} elements, parameter has ${p.tensor.size}`);
      }
      const s = this.slots[i] as SlotState;
      s.m.set(e.m);
      s.v.set(e.v);
      s.step = e.step;
    });
  }
}

/**
 * Scale all gradients so their global L2 norm is at most maxNorm (coefficient
 * maxNorm / (norm + 1e-6), applied only when below 1, as PyTorch does). Returns the norm
 * before clipping.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  const be = getBackend();
  const list = [...params];
  let sq = 0;
  for (const p of list) if (p.grad !== null) sq += be.sumSquares(p.grad);
  const norm = Math.sqrt(sq);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const p of list) if (p.grad !== null) be.scale(p.grad, coef, p.grad);
  return norm;
}

/** Optimiser groups straight from the parameter table (decay flags live there, nowhere else). */
export function optimParamsFromTable(
  specs: ReadonlyArray<{ name: string; decay: boolean; lrScale?: number; trainable?: boolean }>,
  byName: ReadonlyMap<string, Tensor>,
): OptimParam[] {
  return specs
    .filter((s) => s.trainable !== false)
    .map((s) => {
      const t = byName.get(s.name);
      if (t === undefined) throw new ArgumentError(`parameter '${s.name}' missing`);
      return s.lrScale !== undefined ? { tensor: t, decay: s.decay, lrScale: s.lrScale } : { tensor: t, decay: s.decay };
    });
}
