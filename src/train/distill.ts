/**
 * Distillation from a teacher during uptraining (MOR_SPEC §8): the loss adds
 * weight × KL(teacher ‖ student) over the next-token distributions at temperature τ,
 *
 *   KL = (1/N) Σ_n Σ_v p_nv (log p_nv − log q_nv),  p = softmax(t/τ), q = softmax(s/τ)
 *      = (1/N) Σ_n [ logsumexp(s_n/τ) − Σ_v p_nv s_nv/τ ] + (1/N) Σ_n Σ_v p_nv log p_nv
 *
 * (Σ_v p_nv = 1 turns −Σ p log q into the logsumexp form.) The last term does not depend on the
 * student, so it is a constant computed in float64; the rest is built from existing
 * differentiable ops (scale, logsumexp, mul, sum), whose kernels already have conformance and
 * finite-difference tests, so no new kernel is needed: dKL/ds = (softmax(s/τ) − p) / (N·τ).
 * The cost is two extra (N, V) passes beside the cross-entropy, small next to the head GEMM.
 * No τ² factor (Hinton's): the loss is exactly weight × KL, as issue #11 asks.
 *
 *   student (N, V) logits on the tape, teacher (N, V) logits (no gradient) → [1]
 */
import { ArgumentError, ShapeError } from '../errors.js';
import { Tensor, noGrad, tensor } from '../tensor/tensor.js';
import { add, logsumexp, mul, scale, softmax, sub, sum } from '../tensor/ops.js';
import type { Model } from '../model/model.js';

export interface DistillOptions {
  /** The teacher, run forward under noGrad at every micro-batch. */
  readonly teacher: Model;
  /** Weight of the KL term in the loss. */
  readonly weight: number;
  /** Temperature τ of both distributions. */
  readonly temperature: number;
}

export function distillKl(student: Tensor, teacher: Tensor, temperature: number): Tensor {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new ArgumentError(`distillation temperature must be a number > 0, got ${temperature}`);
  if (student.rank !== 2 || teacher.rank !== 2 || student.dim(0) !== teacher.dim(0) || student.dim(1) !== teacher.dim(1)) {
    throw new ShapeError(`distillKl: student and teacher logits must both be (N, V), got [${student.shape.join(', ')}] and [${teacher.shape.join(', ')}]`);
  }
  const n = student.dim(0);
  const inv = 1 / temperature;
  const p = noGrad(() => softmax(temperature === 1 ? teacher : scale(teacher, inv))); // (N, V)
  const P = p.f32();
  let plogp = 0;
  for (let i = 0; i < P.length; i++) {
    const v = P[i] as number;
    if (v > 0) plogp += v * Math.log(v);
  }
  const s = temperature === 1 ? student : scale(student, inv); //                      (N, V)
  const crossEntropy = sub(scale(sum(logsumexp(s)), 1 / n), scale(sum(mul(p, s)), 1 / n)); // [1]
  return add(crossEntropy, tensor(new Float32Array([plogp / n]), [1]));
}
