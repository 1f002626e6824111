/**
 * The inference engine: requests in, streamed tokens out, with three batching policies.
 *
 *   depth     continuous depth-wise batching (MOR_SPEC §7): every step takes the in-flight
 *             token of each running request, whatever its depth, and runs the shared block ONCE
 *             over all of them; a token that exits goes through the last layer, head and sampler
 *             and its request's next token enters in the next step. No row waits for the deepest
 *             token of a batch.
 *   sequence  continuous sequence-wise batching (Orca/vLLM style): requests join and leave
 *             between steps, but a step finishes every recursion of every token in it, so the
 *             batch waits for its deepest token.
 *   static    a batch of requests starts together and no request joins until all have finished.
 *
 * The scheduler (this file) decides which token-states run; the runner (runner.ts) computes;
 * the pool (kv-pool.ts) stores. They talk through TokenState objects.
 */
import { ArgumentError, MorError } from '../errors.js';
import { Rng } from '../util/rng.js';
import type { Model } from '../model/model.js';
import { headDim } from '../model/config.js';
import { routerThreshold } from '../model/mod-config.js';
import { PagedKVPool } from './kv-pool.js';
import { storageDtype, type StorageDtype } from '../backend/bf16.js';
import { ModelRunner, type DepthControl, type SequenceKV, type TokenState } from './runner.js';
import { getBackend } from '../backend/index.js';
import { isPlainGreedy, sampleToken, tokenLogprob, validateSampling, type SamplingOptions, type TokenLogprob } from './sampler.js';

export type BatchingMode = 'depth' | 'sequence' | 'static';

/** What the engine needs from a model runner (a fake one drives the scheduler tests). */
export interface StepRunner {
  readonly numRecursions: number;
  readonly pool: PagedKVPool;
  readonly numStreams: number;
  newSequence(): SequenceKV;
  /** Optional: set aside room for `tokens` tokens in a fresh sequence's streams (ModelRunner: each stream's blocks side by side). */
  reserveSequence?(seq: SequenceKV, tokens: number): void;
  releaseSequence(seq: SequenceKV): void;
  sequenceBytes(seq: SequenceKV): number;
  newTokens(seq: SequenceKV, ids: ArrayLike<number>, startPos: number, control: DepthControl): TokenState[];
  /** Logits of the last prompt token (V), or of every prompt token (n, V) with allLogits. */
  prefill(seq: SequenceKV, ids: Int32Array, control: DepthControl, allLogits?: boolean): { logits: Float32Array; depths: Int32Array };
  enter(rows: TokenState[], ids: Int32Array): void;
  block(rows: TokenState[]): void;
  exit(rows: TokenState[], wantLogits: readonly boolean[]): Float32Array;
}

export interface RequestOptions extends SamplingOptions {
  /** Tokens to generate at most (≥ 1; 0 allowed with `echo`: score the prompt only). */
  readonly maxTokens: number;
  /** Report each generated token's log-probability and its `logprobs` most likely alternatives (0: the token's own only). */
  readonly logprobs?: number;
  /** Also score the prompt: each prompt token's log-probability given the tokens before it (the first has none). */
  readonly echo?: boolean;
  readonly seed?: number;
  /** Stop when this token is sampled (it is not emitted). */
  readonly eosId?: number;
  /** Stop when this returns true for the tokens generated so far (stop strings, see generateText). */
  readonly shouldStop?: (generated: readonly number[]) => boolean;
  /** Test-time scaling: at most this many recursions per token (default: all). */
  readonly maxDepth?: number;
  /** Test-time scaling, MoR expert-choice / MoD: continue (run a routed layer) iff sigmoid(z) > threshold; higher → shallower (default: the model's `mor.threshold` / `mod.threshold`). */
  readonly threshold?: number;
  /** Test-time scaling, models without routers: exit once the head's top probability reaches this; higher → deeper (default: the engine's). */
  readonly exitConfidence?: number;
  /** Sample only ids below this (a tokenizer smaller than the model's vocab). */
  readonly vocabLimit?: number;
}

export type FinishReason = 'eos' | 'max_tokens' | 'stop' | 'context' | 'cancelled';

export interface RequestResult {
  readonly id: number;
  readonly tokens: number[];
  readonly finishReason: FinishReason;
  /** Recursions each generated token ran (its depth). */
  readonly depths: number[];
  /** With `logprobs`: per generated token; else null. */
  readonly logprobs: TokenLogprob[] | null;
  /** With `echo`: per prompt token (null for the first, which nothing predicts); else null. */
  readonly promptLogprobs: Array<TokenLogprob | null> | null;
  /** Milliseconds from submit to the first token, and to the last. */
  readonly firstTokenMs: number;
  readonly totalMs: number;
}

/** A submitted request: an async iterator of token ids, a result promise, cancel(). */
export class RequestHandle implements AsyncIterable<number> {
  private readonly buffered: number[] = [];
  private waiter: (() => void) | null = null;
  private finished = false;
  readonly result: Promise<RequestResult>;
  private resolveResult!: (r: RequestResult) => void;
  /** Set by the engine; cancel() asks it to stop at the next step boundary. */
  cancelRequested = false;
  /** Recursions each token streamed so far ran (depths[i] belongs to the i-th token). */
  readonly depths: number[] = [];
  /** With `logprobs`: the log-probability of each token streamed so far. */
  readonly logprobs: TokenLogprob[] = [];

  constructor(readonly id: number) {
    this.result = new Promise((resolve) => {
      this.resolveResult = resolve;
    });
  }

  cancel(): void {
    this.cancelRequested = true;
  }

  /** @internal engine → handle */
  push(token: number, depth: number, logprob: TokenLogprob | null): void {
    this.depths.push(depth);
    if (logprob) this.logprobs.push(logprob);
    this.buffered.push(token);
    this.wake();
  }

  /** @internal engine → handle */
  finish(r: RequestResult): void {
    this.finished = true;
    this.resolveResult(r);
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<number> {
    for (;;) {
      const t = this.buffered.shift();
      if (t !== undefined) {
        yield t;
        continue;
      }
      if (this.finished) return;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }
}

interface Request {
  readonly handle: RequestHandle;
  readonly prompt: Int32Array;
  readonly opts: RequestOptions;
  readonly control: DepthControl;
  readonly rng: Rng;
  readonly context: number[];
  readonly generated: number[];
  readonly depths: number[];
  readonly logprobs: TokenLogprob[];
  promptLogprobs: Array<TokenLogprob | null> | null;
  readonly submittedAt: number;
  firstTokenAt: number;
  seq: SequenceKV | null;
  /** The token in flight (depth-wise / sequence-wise decoding), with its id. */
  inFlight: TokenState | null;
  inFlightId: number;
  fresh: boolean;
}

/** Engine settings; every field is optional (defaults in ENGINE_DEFAULTS). */
export interface EngineOptions {
  /** Requests decoded together at most (default 8). */
  readonly maxBatch?: number;
  /** 'depth' (default), 'sequence' or 'static' (see the top of this file). */
  readonly batching?: BatchingMode;
  /** Tokens per KV block (default 16). */
  readonly blockSize?: number;
  /**
   * KV pool size in blocks (default: enough for maxBatch sequences at full context). The engine
   * writes the whole pool once when it is built (PagedKVPool.commit), so its memory is held from
   * the start.
   */
  readonly numBlocks?: number;
  /**
   * Early exit for models without routers: a token leaves after a recursion once the top
   * probability of the head applied to its state reaches this (default null: never; a request's
   * `exitConfidence` overrides it). Higher → deeper.
   */
  readonly exitConfidence?: number | null;
  /**
   * Storage of the packed decoding weights and the K/V pool (default 'f32'). 'bf16' rounds each
   * weight and each stored K/V value to nearest-even bf16: half the bytes read per decoding step,
   * with products and sums still in float32.
   */
  readonly dtype?: StorageDtype;
  /** A custom runner (tests); default: a ModelRunner over `model`. */
  readonly runner?: StepRunner;
}

export const ENGINE_DEFAULTS = Object.freeze({ maxBatch: 8, batching: 'depth' as BatchingMode, blockSize: 16, exitConfidence: null as number | null, dtype: 'f32' as StorageDtype });

const BATCHING_MODES: readonly BatchingMode[] = ['depth', 'sequence', 'static'];

function checkInt(name: string, v: unknown, min: number): void {
  if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < min)) throw new ArgumentError(`${name} must be an integer ≥ ${min}, got ${String(v)}`);
}

function checkConfidence(name: string, v: unknown): void {
  if (v !== undefined && v !== null && (typeof v !== 'number' || !Number.isFinite(v) || v < 0)) {
    throw new ArgumentError(`${name} must be a number ≥ 0 (a top probability; above 1 never exits), got ${String(v)}`);
  }
}

export class EngineError extends MorError {
  constructor(message: string) {
    super('E_ENGINE', message);
  }
}

export class Engine {
  readonly runner: StepRunner;
  readonly batching: BatchingMode;
  readonly maxBatch: number;
  private readonly contextLength: number;
  private readonly waiting: Request[] = [];
  private readonly running: Request[] = [];
  private nextId = 1;
  /** Block-applications per step, for statistics: rows processed by the shared block. */
  stepsRun = 0;
  blockRows = 0;

  /** Default early-exit confidence of requests (models without routers); null = off. */
  readonly exitConfidence: number | null;
  /** Default router threshold of requests: the model's `mor.threshold` (0.5 without one). */
  private readonly defaultThreshold: number;

  constructor(model: Model | null, opts: EngineOptions = {}) {
    if (typeof opts !== 'object' || opts === null) throw new ArgumentError(`Engine options must be an object, got ${String(opts)}`);
    checkInt('maxBatch', opts.maxBatch, 1);
    checkInt('blockSize', opts.blockSize, 1);
    checkInt('numBlocks', opts.numBlocks, 1);
    checkConfidence('exitConfidence', opts.exitConfidence);
    const dtype = opts.dtype === undefined ? ENGINE_DEFAULTS.dtype : storageDtype('dtype', opts.dtype);
    if (opts.batching !== undefined && !BATCHING_MODES.includes(opts.batching)) {
      throw new ArgumentError(`batching must be one of ${BATCHING_MODES.join(', ')}, got ${String(opts.batching)}`);
    }
    this.maxBatch = opts.maxBatch ?? ENGINE_DEFAULTS.maxBatch;
    this.batching = opts.batching ?? ENGINE_DEFAULTS.batching;
    this.exitConfidence = opts.exitConfidence ?? ENGINE_DEFAULTS.exitConfidence;
    this.defaultThreshold = (model ? routerThreshold(model.config) : null) ?? 0.5;
    if (opts.runner) {
      this.runner = opts.runner;
      this.contextLength = Number.MAX_SAFE_INTEGER;
    } else {
      if (model === null || typeof model !== 'object' || !('config' in model)) throw new ArgumentError('Engine needs a model (or a runner in the options)');
      const c = model.config;
      const blockSize = opts.blockSize ?? ENGINE_DEFAULTS.blockSize;
      const probe = new ModelRunner(model, new PagedKVPool(1, blockSize, c.num_key_value_heads * headDim(c)));
      const perSeq = probe.numStreams * Math.ceil(c.max_position_embeddings / blockSize);
      const pool = new PagedKVPool(opts.numBlocks ?? perSeq * this.maxBatch, blockSize, c.num_key_value_heads * headDim(c), dtype);
      pool.commit();
      this.runner = new ModelRunner(model, pool);
      this.contextLength = c.max_position_embeddings;
    }
  }

  /** Throw the ArgumentError that submit() would for this prompt length and these options. */
  checkRequest(promptLength: number, opts: RequestOptions): void {
    validateSampling(opts);
    if (promptLength < 1) throw new ArgumentError('a request needs a prompt of at least one token');
    if (promptLength >= this.contextLength) throw new ArgumentError(`prompt of ${promptLength} tokens leaves no room in the context of ${this.contextLength}`);
    const least = opts.echo ? 0 : 1;
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < least) throw new ArgumentError(`maxTokens must be an integer ≥ ${least}${opts.echo ? '' : ' (0 only with echo)'}, got ${opts.maxTokens}`);
    if (opts.logprobs !== undefined && (!Number.isInteger(opts.logprobs) || opts.logprobs < 0 || opts.logprobs > 20)) {
      throw new ArgumentError(`logprobs must be an integer in [0, 20], got ${String(opts.logprobs)}`);
    }
    const nr = this.runner.numRecursions;
    if (opts.maxDepth !== undefined && (!Number.isInteger(opts.maxDepth) || opts.maxDepth < 1 || opts.maxDepth > nr)) {
      throw new ArgumentError(`maxDepth must be an integer in [1, ${nr}], got ${opts.maxDepth}`);
    }
    if (opts.threshold !== undefined && (typeof opts.threshold !== 'number' || !(opts.threshold >= 0 && opts.threshold <= 1))) {
      throw new ArgumentError(`threshold must be a number in [0, 1], got ${String(opts.threshold)}`);
    }
    checkConfidence('exitConfidence', opts.exitConfidence);
  }

  /** Queue a request; tokens stream from the returned handle as the engine steps. */
  submit(prompt: Int32Array, opts: RequestOptions): RequestHandle {
    this.checkRequest(prompt.length, opts);
    const handle = new RequestHandle(this.nextId++);
    this.waiting.push({
      handle,
      prompt,
      opts,
      control: this.depthControl(opts),
      rng: new Rng(opts.seed ?? 0),
      context: Array.from(prompt),
      generated: [],
      depths: [],
      logprobs: [],
      promptLogprobs: null,
      submittedAt: performance.now(),
      firstTokenAt: 0,
      seq: null,
      inFlight: null,
      inFlightId: 0,
      fresh: false,
    });
    return handle;
  }

  get numWaiting(): number {
    return this.waiting.length;
  }

  get numRunning(): number {
    return this.running.length;
  }

  /** KV cache bytes in use (all sequences). */
  get kvBytes(): number {
    return this.runner.pool.bytesInUse;
  }

  /** The depth settings a request's tokens run with. */
  private depthControl(o: RequestOptions): DepthControl {
    return {
      maxDepth: o.maxDepth ?? this.runner.numRecursions,
      threshold: o.threshold ?? this.defaultThreshold,
      exitConfidence: o.exitConfidence ?? this.exitConfidence,
    };
  }

  /** Tokens a request's streams may hold at most: its prompt and maxTokens, within the context. */
  private tokensFor(r: Request): number {
    return Math.min(this.contextLength, r.prompt.length + r.opts.maxTokens);
  }

  /** Blocks a request may need at most: every stream holding prompt + maxTokens tokens. */
  private blocksFor(r: Request): number {
    return this.runner.numStreams * Math.ceil(this.tokensFor(r) / this.runner.pool.blockSize);
  }

  private reservedBlocks(): number {
    let n = 0;
    for (const r of this.running) n += this.blocksFor(r);
    return n;
  }

  private finish(r: Request, reason: FinishReason): void {
    if (r.seq) this.runner.releaseSequence(r.seq);
    r.seq = null;
    r.inFlight = null;
    const now = performance.now();
    r.handle.finish({
      id: r.handle.id,
      tokens: r.generated,
      finishReason: reason,
      depths: r.depths,
      logprobs: r.opts.logprobs !== undefined ? r.logprobs : null,
      promptLogprobs: r.promptLogprobs,
      firstTokenMs: r.firstTokenAt ? r.firstTokenAt - r.submittedAt : now - r.submittedAt,
      totalMs: now - r.submittedAt,
    });
  }

  /**
   * Sample from logits (or take `greedyToken`, the argmax of these logits when ≥ 0), emit, and
   * decide whether the request goes on. Returns false when it ended.
   */
  private accept(r: Request, logits: Float32Array, depth: number, greedyToken = -1): boolean {
    const o = r.opts;
    const row = o.vocabLimit === undefined ? logits : logits.subarray(0, o.vocabLimit);
    const token = greedyToken >= 0 ? greedyToken : sampleToken(row, o, r.rng, r.context);
    if (o.eosId !== undefined && token === o.eosId) {
      this.finish(r, 'eos');
      return false;
    }
    const lp = o.logprobs !== undefined ? tokenLogprob(row, token, o.logprobs) : null;
    r.generated.push(token);
    r.context.push(token);
    r.depths.push(depth);
    if (lp) r.logprobs.push(lp);
    if (r.firstTokenAt === 0) r.firstTokenAt = performance.now();
    r.handle.push(token, depth, lp);
    if (o.shouldStop?.(r.generated)) {
      this.finish(r, 'stop');
      return false;
    }
    if (r.generated.length >= o.maxTokens) {
      this.finish(r, 'max_tokens');
      return false;
    }
    if (r.context.length >= this.contextLength) {
      this.finish(r, 'context');
      return false;
    }
    // the sampled token is the next input
    const seq = r.seq as SequenceKV;
    const [state] = this.runner.newTokens(seq, [token], r.context.length - 1, r.control);
    r.inFlight = state as TokenState;
    r.inFlightId = token;
    r.fresh = true;
    return true;
  }

  /** Admit waiting requests (prefill each) while the policy and the KV pool allow. */
  private admit(): void {
    if (this.batching === 'static' && this.running.length > 0) return;
    while (this.waiting.length > 0 && this.running.length < this.maxBatch) {
      const r = this.waiting[0] as Request;
      if (r.handle.cancelRequested) {
        this.waiting.shift();
        this.finish(r, 'cancelled');
        continue;
      }
      const need = this.blocksFor(r);
      if (need > this.runner.pool.numBlocks) throw new EngineError(`request ${r.handle.id} needs ${need} KV blocks; the pool has ${this.runner.pool.numBlocks}`);
      if (this.reservedBlocks() + need > this.runner.pool.numBlocks) break; // wait for memory
      this.waiting.shift();
      r.seq = this.runner.newSequence();
      // the blocks counted for it, each stream's side by side (attention reads them as one run)
      this.runner.reserveSequence?.(r.seq, this.tokensFor(r));
      const echo = r.opts.echo === true;
      const { logits, depths } = this.runner.prefill(r.seq, r.prompt, r.control, echo);
      this.running.push(r);
      const n = r.prompt.length;
      const V = logits.length / (echo ? n : 1);
      const rowOf = (i: number): Float32Array => {
        const row = logits.subarray(i * V, (i + 1) * V);
        return r.opts.vocabLimit === undefined ? row : row.subarray(0, r.opts.vocabLimit);
      };
      if (echo) r.promptLogprobs = Array.from(r.prompt, (t, i) => (i === 0 ? null : tokenLogprob(rowOf(i - 1), t, r.opts.logprobs ?? 0)));
      if (r.opts.maxTokens === 0) {
        this.finish(r, 'max_tokens');
        continue;
      }
      // the first generated token comes from the last prompt token's pass
      this.accept(r, logits.subarray((echo ? n - 1 : 0) * V, (echo ? n : 1) * V), depths[depths.length - 1] as number);
    }
    // static batching: finished requests leave, nobody joins until the batch is empty
  }

  private dropFinished(): void {
    for (let i = this.running.length - 1; i >= 0; i--) {
      const r = this.running[i] as Request;
      if (r.handle.cancelRequested && r.seq) this.finish(r, 'cancelled');
      if (r.seq === null) this.running.splice(i, 1);
    }
  }

  /** One engine step. Returns false when there was nothing to do. */
  step(): boolean {
    this.dropFinished();
    this.admit();
    this.dropFinished();
    const rows = this.running.filter((r) => r.inFlight !== null);
    if (rows.length === 0) return this.waiting.length > 0;
    this.stepsRun++;
    const fresh = rows.filter((r) => r.fresh);
    this.runner.enter(fresh.map((r) => r.inFlight as TokenState), Int32Array.from(fresh, (r) => r.inFlightId));
    for (const r of fresh) r.fresh = false;
    if (this.batching === 'depth') {
      const atBlock = rows.filter((r) => (r.inFlight as TokenState).next === 'block');
      this.blockRows += atBlock.length;
      this.runner.block(atBlock.map((r) => r.inFlight as TokenState));
    } else {
      // sequence-wise: the step runs until its deepest token is done
      for (;;) {
        const atBlock = rows.filter((r) => (r.inFlight as TokenState).next === 'block');
        if (atBlock.length === 0) break;
        this.blockRows += atBlock.length;
        this.runner.block(atBlock.map((r) => r.inFlight as TokenState));
      }
    }
    const exiting = rows.filter((r) => (r.inFlight as TokenState).next === 'exit');
    const logits = this.runner.exit(
      exiting.map((r) => r.inFlight as TokenState),
      exiting.map(() => true),
    );
    const V = exiting.length ? logits.length / exiting.length : 0;
    const greedy = this.greedyTokens(exiting, logits, V);
    exiting.forEach((r, i) => {
      const depth = (r.inFlight as TokenState).depth;
      this.accept(r, logits.subarray(i * V, (i + 1) * V), depth, greedy[i]);
    });
    this.dropFinished();
    return true;
  }

  /**
   * The argmax of each row of logits (rows, V) whose request samples plainly greedily, from one
   * native call over all rows; −1 where the sampler must decide (other sampling, a vocabulary
   * limit, or a NaN, which the sampler's argmax skips but topkRows ranks first).
   */
  private greedyTokens(rows: readonly Request[], logits: Float32Array, V: number): Int32Array {
    const out = new Int32Array(rows.length).fill(-1);
    const plain = rows.map((r) => r.opts.vocabLimit === undefined && isPlainGreedy(r.opts));
    if (V === 0 || !plain.some((p) => p)) return out;
    const values = new Float32Array(rows.length);
    getBackend().topkRows(logits, V, 1, 'value', out, values);
    for (let i = 0; i < rows.length; i++) if (!plain[i] || Number.isNaN(values[i])) out[i] = -1;
    return out;
  }

  /** Step until every request has finished, yielding to the event loop between steps. */
  async runUntilIdle(): Promise<void> {
    while (this.waiting.length > 0 || this.running.length > 0) {
      const worked = this.step();
      if (!worked && this.running.length === 0 && this.waiting.length > 0) {
        throw new EngineError('requests are waiting but none can be admitted (KV pool too small?)');
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}
