/**
 * AdamW, one step in place (torch.optim.AdamW's order and form; see Backend.adamwStep).
 * Each intermediate that torch keeps in the parameter's dtype (m, v, the decayed parameter) is
 * stored and read back, so a Float32Array run rounds where torch's float32 run rounds.
 */
import type { AdamWArgs, FloatArray } from '../backend.js';

export function adamwStep(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray, args: AdamWArgs): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = args;
  const biasCorrection1 = 1 - Math.pow(beta1, step);
  const biasCorrection2 = 1 - Math.pow(beta2, step);
  for (let i = 0; i < param.length; i++) {
    const g = grad[i]!;
    m[i] = beta1 * m[i]! + (1 - beta1) * g;
    v[i] = beta2 * v[i]! + (1 - beta2) * g * g;
    param[i] = param[i]! - lr * weightDecay * param[i]!; // decoupled decay, before the update
    const mHat = m[i]! / biasCorrection1;
    const vHat = v[i]! / biasCorrection2;
    param[i] = param[i]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
  }
}
