/**
 * Generation through the engine: token-level `generate` for one prompt, and text-level
 * `generateText` with a tokenizer, stop strings and streaming of decoded text.
 */
import type { TokenLogprob } from './sampler.js';
import { ArgumentError } from '../errors.js';
import type { Model } from '../model/model.js';
import { Engine, type RequestHandle, type RequestOptions, type RequestResult } from './engine.js';

export interface GenerateOptions extends Omit<RequestOptions, 'shouldStop'> {
  /** Called with each new token id as it is produced. */
  readonly onToken?: (id: number) => void;
}

export interface GenerateResult {
  tokens: number[];
  /** Recursions each generated token ran. */
  depths: number[];
  finishReason: RequestResult['finishReason'];
  /** Seconds to the first token (prefill + first decode) and in total. */
  firstTokenSeconds: number;
  seconds: number;
}

/** The text before the first occurrence of any stop string (all of it when none occurs). */
function cutAtStop(text: string, stops: readonly string[]): string {
  const cut = Math.min(...stops.map((s) => (text.includes(s) ? text.indexOf(s) : Infinity)));
  return Number.isFinite(cut) ? text.slice(0, cut) : text;
}

/** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
function stopPrefixTail(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}

/** Generate up to maxTokens after a prompt (KV-cached, adaptive depth) on a private engine. */
export async function generate(model: Model, prompt: Int32Array, opts: GenerateOptions): Promise<GenerateResult> {
  const engine = new Engine(model, { maxBatch: 1 });
  const { onToken, ...request } = opts;
  const handle = engine.submit(prompt, request);
  const consumer = (async () => {
    for await (const t of handle) onToken?.(t);
  })();
  await engine.runUntilIdle();
  await consumer;
  const r = await handle.result;
  return { tokens: r.tokens, depths: r.depths, finishReason: r.finishReason, firstTokenSeconds: r.firstTokenMs / 1000, seconds: r.totalMs / 1000 };
}

/** The pieces of a tokenizer that text generation needs. */
export interface TextCodec {
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
  readonly eosId: number;
  readonly vocabSize: number;
}

export interface TextGenerateOptions extends Omit<RequestOptions, 'shouldStop' | 'eosId' | 'vocabLimit'> {
  /** Stop when the generated text contains one of these (the text is cut before it). */
  readonly stop?: readonly string[];
  /** Called with each new piece of decoded text and the tokens that completed it (id, depth, log-probability). */
  readonly onText?: (piece: string, tokens: readonly StreamedToken[]) => void;
  /** Called with the engine's handle once the request is queued (to cancel it, say). */
  readonly onHandle?: (handle: RequestHandle) => void;
}

/** A generated token as generateText streams it. */
export interface StreamedToken {
  readonly id: number;
  /** Recursions it ran. */
  readonly depth: number;
  /** With the `logprobs` option; else null. */
  readonly logprob: TokenLogprob | null;
}

export interface TextGenerateResult extends RequestResult {
  readonly text: string;
}

/**
 * Generate text for a prompt on an engine (shared with other requests when the caller runs
 * many). The engine must be driven by the caller (engine.runUntilIdle()) unless `drive` is true.
 */
export async function generateText(
  engine: Engine,
  codec: TextCodec,
  prompt: string,
  opts: TextGenerateOptions,
  drive = true,
): Promise<TextGenerateResult> {
  const { input, request, stops } = textRequest(engine, codec, prompt, opts);
  const { onText } = opts;
  const handle = engine.submit(input, request);
  opts.onHandle?.(handle);
  let emitted = '';
  let told = 0; // tokens already passed to onText
  const sofar: number[] = [];
  const streamed = (from: number, to: number): StreamedToken[] =>
    sofar.slice(from, to).map((id, k) => ({ id, depth: handle.depths[from + k] as number, logprob: handle.logprobs[from + k] ?? null }));
  const consumer = (async () => {
    for await (const t of handle) {
      sofar.push(t);
      const text = cutAtStop(codec.decode(sofar), stops);
      // hold back a trailing replacement character (maybe half of a multi-byte character) and
      // any tail that could still grow into a stop string, so nothing streamed is taken back
      let stable = text.endsWith('\uFFFD') ? text.slice(0, -1) : text;
      stable = stable.slice(0, stable.length - stopPrefixTail(stable, stops));
      if (stable.length > emitted.length && stable.startsWith(emitted)) {
        onText?.(stable.slice(emitted.length), streamed(told, sofar.length));
        told = sofar.length;
        emitted = stable;
      }
    }
  })();
  if (drive) await engine.runUntilIdle();
  const r = await handle.result;
  await consumer;
  const text = cutAtStop(codec.decode(r.tokens), stops);
  if (text.length > emitted.length && text.startsWith(emitted)) onText?.(text.slice(emitted.length), streamed(told, sofar.length));
  return { ...r, text };
}

/**
 * The engine request generateText submits for a prompt, checked as submit() would check it
 * (ArgumentError): call it to validate a text request before anything is printed.
 */
export function textRequest(engine: Engine, codec: TextCodec, prompt: string, opts: TextGenerateOptions): { input: Int32Array; request: RequestOptions; stops: readonly string[] } {
  const ids = codec.encode(prompt);
  const input = ids.length ? ids : Int32Array.of(codec.eosId);
  const stops = opts.stop ?? [];
  if (stops.some((s) => s.length === 0)) throw new ArgumentError('stop strings must not be empty');
  const { stop: _stop, onText: _onText, onHandle: _onHandle, ...rest } = opts;
  const request: RequestOptions = {
    ...rest,
    eosId: codec.eosId,
    vocabLimit: codec.vocabSize,
    ...(stops.length ? { shouldStop: (gen: readonly number[]) => stops.some((s) => codec.decode(gen).includes(s)) } : {}),
  };
  engine.checkRequest(input.length, request);
  return { input, request, stops };
}
