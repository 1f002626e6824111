/**
 * Greedy decoding two ways, for the engine invariant: the engine's output, and the training
 * forward's causal-routing argmax path (one full forward per generated token).
 */
import { forward, type Model } from '../../src/model/model.js';
import { noGrad } from '../../src/tensor/tensor.js';
import type { Engine } from '../../src/infer/engine.js';

export function argmax(x: Float32Array, from: number, len: number): number {
  let best = 0;
  for (let i = 1; i < len; i++) if ((x[from + i] as number) > (x[from + best] as number)) best = i;
  return best;
}

/** Submit every prompt, run the engine until idle, return each request's tokens. */
export async function generateAll(engine: Engine, prompts: Int32Array[], opts: Parameters<Engine['submit']>[1][]): Promise<number[][]> {
  const handles = prompts.map((p, i) => engine.submit(p, opts[i] as Parameters<Engine['submit']>[1]));
  await engine.runUntilIdle();
  return Promise.all(handles.map(async (h) => (await h.result).tokens));
}

/** Greedy path of the training forward in causal routing mode. */
export function forwardGreedy(model: Model, prompt: Int32Array, n: number): number[] {
  const seq = Array.from(prompt);
  const out: number[] = [];
  const V = model.config.vocab_size;
  for (let i = 0; i < n; i++) {
    const logits = noGrad(() => forward(model, Int32Array.from(seq), 1, undefined, { routing: 'causal' }).logits.f32());
    const t = argmax(logits, (seq.length - 1) * V, V);
    out.push(t);
    seq.push(t);
  }
  return out;
}
