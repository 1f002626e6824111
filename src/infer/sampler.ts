/**
 * Next-token sampling from one row of logits: greedy, temperature, top-k, top-p (nucleus),
 * repetition / frequency / presence penalties and logit bias, drawing from a seeded Rng so a
 * request with a seed is reproducible; and the log-probabilities of a chosen token.
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
  /** OpenAI-style: subtract this × (times the id occurs in the context) from its logit. Default 0. */
  readonly frequencyPenalty?: number;
  /** OpenAI-style: subtract this from the logit of every id that occurs in the context. Default 0. */
  readonly presencePenalty?: number;
  /** Added to the logits of these ids before sampling (OpenAI's logit_bias; −100 about bans, +100 about forces). */
  readonly logitBias?: ReadonlyMap<number, number>;
}

/** A token's log-probability under the model (raw logits, before any sampling adjustment) and the top alternatives. */
export interface TokenLogprob {
  readonly token: number;
  readonly logprob: number;
  /** The `topN` most likely ids with their log-probabilities, most likely first. */
  readonly top: ReadonlyArray<{ readonly token: number; readonly logprob: number }>;
}

/** log softmax(logits)[token] and the topN best ids' log-probabilities.  logits (V) */
export function tokenLogprob(logits: Float32Array, token: number, topN: number): TokenLogprob {
  const m = maxOf(logits);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += Math.exp((logits[i] as number) - m);
  const lse = m + Math.log(total);
  const top = topN > 0 ? Array.from(bestIds(logits, Math.min(topN, logits.length)), (id) => ({ token: id, logprob: (logits[id] as number) - lse })) : [];
  return { token, logprob: (logits[token] as number) - lse, top };
}

export function validateSampling(o: SamplingOptions): void {
  const { temperature = 1, topK = 0, topP = 1, repetitionPenalty = 1 } = o;
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new ArgumentError(`temperature must be ≥ 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new ArgumentError(`topK must be an integer ≥ 0, got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new ArgumentError(`topP must be in (0, 1], got ${topP}`);
  if (!(repetitionPenalty > 0) || !Number.isFinite(repetitionPenalty)) throw new ArgumentError(`repetitionPenalty must be > 0, got ${repetitionPenalty}`);
  for (const [name, v] of [['frequencyPenalty', o.frequencyPenalty], ['presencePenalty', o.presencePenalty]] as const) {
    if (v !== undefined && !Number.isFinite(v)) throw new ArgumentError(`${name} must be a finite number, got ${v}`);
  }
  for (const [id, b] of o.logitBias ?? []) {
    if (!Number.isInteger(id) || id < 0 || !Number.isFinite(b)) throw new ArgumentError(`logitBias maps token ids (integers ≥ 0) to finite numbers, got ${id} → ${b}`);
  }
}

/** Whether a repetition, frequency or presence penalty is set (they apply over the context). */
function penalises(o: SamplingOptions): boolean {
  return (o.repetitionPenalty ?? 1) !== 1 || (o.frequencyPenalty ?? 0) !== 0 || (o.presencePenalty ?? 0) !== 0;
}

/** Whether a logit bias is set. */
function biases(o: SamplingOptions): boolean {
  return o.logitBias !== undefined && o.logitBias.size > 0;
}

/**
 * The logits sampling draws from: the model's, with the repetition penalty (CTRL-style), the
 * frequency and presence penalties over `context`, and the logit bias applied. A copy when any applies.
 */
function adjustedLogits(logits: Float32Array, o: SamplingOptions, context: ArrayLike<number>): Float32Array {
  const { repetitionPenalty = 1, frequencyPenalty = 0, presencePenalty = 0, logitBias } = o;
  const penalise = context.length > 0 && penalises(o);
  if (!penalise && !biases(o)) return logits;
  const x = logits.slice();
  if (penalise) {
    const counts = new Map<number, number>();
    for (let i = 0; i < context.length; i++) counts.set(context[i] as number, (counts.get(context[i] as number) ?? 0) + 1);
    for (const [id, n] of counts) {
      let v = x[id];
      if (v === undefined) continue;
      if (repetitionPenalty !== 1) v = v > 0 ? v / repetitionPenalty : v * repetitionPenalty;
      x[id] = v - frequencyPenalty * n - presencePenalty;
    }
  }
  for (const [id, b] of logitBias ?? []) if (id < x.length) x[id] = (x[id] as number) + b;
  return x;
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

function maxOf(x: Float32Array): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if ((x[i] as number) > m) m = x[i] as number;
  return m;
}

/** a ranks before b: higher logit, then lower id. */
function before(x: Float32Array, a: number, b: number): boolean {
  const va = x[a] as number;
  const vb = x[b] as number;
  return va > vb || (va === vb && a < b);
}

/**
 * The k best ids of x in rank order (higher logit first, ties by lower id), through a size-k
 * heap whose root is the worst kept id: O(V log k), and most ids fail the first comparison.
 */
export function bestIds(x: Float32Array, k: number): Int32Array {
  const heap = new Int32Array(k);
  let size = 0;
  const siftDown = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let w = i;
      if (l < size && before(x, heap[w] as number, heap[l] as number)) w = l;
      if (r < size && before(x, heap[w] as number, heap[r] as number)) w = r;
      if (w === i) return;
      const t = heap[i] as number;
      heap[i] = heap[w] as number;
      heap[w] = t;
      i = w;
    }
  };
  for (let id = 0; id < x.length; id++) {
    if (size < k) {
      // sift up: the worst id rises to the root
      let i = size++;
      heap[i] = id;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!before(x, heap[parent] as number, heap[i] as number)) break;
        const t = heap[i] as number;
        heap[i] = heap[parent] as number;
        heap[parent] = t;
        i = parent;
      }
    } else if (before(x, id, heap[0] as number)) {
      heap[0] = id;
      siftDown(0);
    }
  }
  return heap.sort((a, b) => (before(x, a, b) ? -1 : before(x, b, a) ? 1 : 0));
}

/**
 * Whether sampleToken returns the plain argmax of the logits: greedy, and nothing adjusts them
 * (adjustedLogits). The engine then takes the token from one batched native argmax over every
 * row of a step (Backend.topkRows with k = 1) instead of a JavaScript scan per row.
 */
export function isPlainGreedy(o: SamplingOptions): boolean {
  return o.temperature === 0 && !penalises(o) && !biases(o);
}

/**
 * Choose the next token. `logits` (V) is not modified; `context` are the ids so far (for the
 * repetition penalty).
 */
export function sampleToken(logits: Float32Array, o: SamplingOptions, rng: Rng, context: ArrayLike<number> = []): number {
  const { temperature = 1, topK = 0, topP = 1 } = o;
  const x = adjustedLogits(logits, o, context);
  if (temperature === 0) return argmax(x);
  const V = x.length;
  if ((topK === 0 || topK >= V) && topP >= 1) {
    // no cut: draw straight from softmax(x / temperature), ids in natural order
    const m = maxOf(x);
    const w = new Float64Array(V);
    let total = 0;
    for (let i = 0; i < V; i++) total += w[i] = Math.exp(((x[i] as number) - m) / temperature);
    let r = rng.next() * total;
    for (let i = 0; i < V; i++) {
      r -= w[i] as number;
      if (r < 0) return i;
    }
    return V - 1;
  }
  // Candidates in order of logit (ties: lower id first), cut to top-k, then to the nucleus.
  // Only the candidates that can matter are ever sorted: the k best for top-k; for top-p a
  // growing best-k set until it holds the nucleus; with neither cut, no order at all.
  let order = bestIds(x, topK > 0 && topK < V ? topK : Math.min(V, 64));
  const maxLogit = x[order[0] as number] as number;
  const weight = (id: number): number => Math.exp(((x[id] as number) - maxLogit) / temperature);
  let probs = Array.from(order, weight);
  let total = probs.reduce((a, b) => a + b, 0);
  if (topP < 1) {
    if (topK === 0 || topK >= V) {
      // grow the candidate set until it holds the nucleus (probabilities over the whole vocabulary)
      let all = 0;
      for (let i = 0; i < V; i++) all += weight(i);
      for (;;) {
        let acc = 0;
        let inside = false;
        for (const p of probs) {
          acc += p / all;
          if (acc >= topP) {
            inside = true;
            break;
          }
        }
        if (inside || order.length === V) break;
        order = bestIds(x, Math.min(V, order.length * 4));
        probs = Array.from(order, weight);
      }
      total = all;
    }
    let acc = 0;
    let keep = 0;
    while (keep < probs.length) {
      acc += (probs[keep] as number) / total;
      keep++;
      if (acc >= topP) break;
    }
    order = order.subarray(0, keep);
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
