/**
 * Messages between the HTTP thread and the engine worker (structured-clone plain objects).
 *
 *   HTTP thread                         engine worker
 *   submit {id, prompt, options}  ──▶   tokenise, check, Engine.submit
 *                                 ◀──   accepted {id, promptTokens} | rejected {id, message}
 *                                 ◀──   piece {id, text, tokens}   (as text becomes final)
 *                                 ◀──   done {id, …}               (finish reason, usage, depths)
 *   cancel {id}                   ──▶   handle.cancel(): K/V freed at the next step
 *                                 ◀──   stats {…}                  (after steps, at most every 100 ms)
 */
import type { StorageDtype } from '../backend/bf16.js';

/** What a request asks of the engine, in the engine's terms (the HTTP layer maps OpenAI fields to these). */
export interface GenerationOptions {
  readonly maxTokens: number;
  readonly temperature?: number;
  readonly topP?: number;
  readonly topK?: number;
  readonly seed?: number;
  readonly stop?: readonly string[];
  readonly repetitionPenalty?: number;
  readonly frequencyPenalty?: number;
  readonly presencePenalty?: number;
  /** [token id, bias] pairs. */
  readonly logitBias?: ReadonlyArray<readonly [number, number]>;
  readonly maxDepth?: number;
  readonly threshold?: number;
  readonly logprobs?: number;
  readonly echo?: boolean;
}

export type ToWorker =
  | { readonly type: 'submit'; readonly id: number; readonly prompt: string; readonly options: GenerationOptions }
  | { readonly type: 'cancel'; readonly id: number }
  | { readonly type: 'shutdown' };

export interface ModelInfo {
  readonly name: string;
  readonly numRecursions: number;
  readonly routing: 'expert_choice' | 'token_choice' | null;
  readonly threshold: number | null;
  readonly contextLength: number;
  readonly vocabSize: number;
  /** Storage of the engine's packed weights and K/V pool. */
  readonly dtype: StorageDtype;
}

export interface EngineStats {
  readonly running: number;
  readonly waiting: number;
  readonly kvBytes: number;
  readonly maxBatch: number;
}

/** One token as the HTTP layer sees it: its text, depth and (with logprobs) log-probabilities. */
export interface WireToken {
  readonly id: number;
  readonly text: string;
  /** Recursions it ran; 0 for a prompt token (not generated). */
  readonly depth: number;
  readonly logprob: number | null;
  /** The most likely alternatives (text, log-probability), most likely first; null without logprobs. */
  readonly top: ReadonlyArray<readonly [string, number]> | null;
}

export interface DoneInfo {
  readonly finishReason: 'stop' | 'length' | 'cancelled';
  readonly promptTokens: number;
  readonly completionTokens: number;
  readonly text: string;
  readonly depths: readonly number[];
  readonly firstTokenMs: number;
  readonly totalMs: number;
  /** With echo: the prompt's tokens and their log-probabilities (the first has none). */
  readonly prompt: readonly WireToken[] | null;
}

export type FromWorker =
  | { readonly type: 'ready'; readonly info: ModelInfo }
  | { readonly type: 'failed'; readonly message: string }
  | { readonly type: 'accepted'; readonly id: number; readonly promptTokens: number }
  | { readonly type: 'rejected'; readonly id: number; readonly message: string; readonly param: string | null }
  | { readonly type: 'piece'; readonly id: number; readonly text: string; readonly tokens: readonly WireToken[] }
  | { readonly type: 'done'; readonly id: number; readonly info: DoneInfo }
  | { readonly type: 'error'; readonly id: number; readonly message: string }
  | { readonly type: 'stats'; readonly stats: EngineStats };
