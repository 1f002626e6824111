/**
 * Next-token sampling from one row of logits: greedy, temperature, top-k, top-p (nucleus) and
 * repetition penalty, drawing from a seeded Rng so a request with a seed is reproducible.
 */
import { ArgumentError } from '../errors.js';
import { Rng } from '../util/rng.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 1. */
  readonly temperature?: number;
  /** Keep only the k most likely tokens (0 = off). */
  readonly topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = off). */
  readonly topP?: number;
  /** > 1 discourages tokens already in the context (CTRL-style: divide positive logits, multiply negative). */
  readonly repetitionPenalty?: number;
}

export function validateSampling(o: SamplingOptions): void {
  const { temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 } = o;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new ArgumentError(`temperature must be ≥ 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new ArgumentError(`topK must be an integer ≥ 0, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`topP must be in (0, 1], got ${topP}`);
  if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new ArgumentError(`repetitionPenalty must be > 0, got ${repetitionPenalty}`);
}

function argmax(x: ArrayLike<number>): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < x.length; i++) {
    const v = x[i] as number;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

/**
 * Choose the next token. `logits` (V) is not modified; `context` are the ids so far (for the
 * repetition penalty).
 */
export function sampleToken(logits: Float32Array, o: SamplingOptions, rng: Rng, context: ArrayLike<number> = []): number {
  const { temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 } = o;
  let x: Float32Array = logits;
  if (repetitionPenalty !== 1 && context.length > 0) {
    x = logits.slice();
    const seen = new Set<number>();
    for (let i = 0; i < context.length; i++) seen.add(context[i] as number);
    for (const id of seen) {
      const v = x[id];
      if (v !== undefined) x[id] = v > 0 ? v / repetitionPenalty : v * repetitionPenalty;
    }
  }
  if (temperature === 0) return argmax(x);
  // Candidates sorted by logit, cut to top-k.
  const V = x.length;
  let order = Array.from({ length: V }, (_, i) => i).sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
  if (topK > 0 && topK < V) order = order.slice(0, topK);
  const maxLogit = x[order[0] as number] as number;
  const probs = order.map((id) => Math.exp(((x[id] as number) - maxLogit) / temperature));
  let total = probs.reduce((a, b) => a + b, 0);
  if (topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length) {
      acc += (probs[keep] as number) / total;
      keep++;
      if (acc >= topP) break;
    }
    order = order.slice(0, keep);
    probs.length = keep;
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = rng.next() * total;
  for (let i = 0; i < probs.length; i++) {
    r -= probs[i] as number;
    if (r < 0) return order[i] as number;
  }
  return order[order.length - 1] as number;
}
