/**
 * The OpenAI-compatible request schemas (zod) and response shapes, and their mapping to the
 * engine's options. Unknown fields are ignored; a known field with a value this server cannot
 * honour (n > 1, best_of > 1, suffix, token-id prompts) is a 400 naming it.
 */
import { z } from 'zod';
import type { DoneInfo, GenerationOptions, WireToken } from './messages.js';

/** An OpenAI-shaped error, with its HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const unsupported = (what: string) => ({ message: `${what} is not supported by this server` });

/** The MoR extension: test-time depth per request. */
const MorFields = z
  .object({
    max_depth: z.number().int().min(1).optional(),
    threshold: z.number().min(0).max(1).optional(),
  })
  .optional();

/** Fields completions and chat share (OpenAI names; top_k and repetition_penalty as in vLLM / llama.cpp). */
const Sampling = {
  model: z.string().optional(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  top_k: z.number().int().min(0).nullish(),
  repetition_penalty: z.number().gt(0).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: z.record(z.string().regex(/^\d+$/, 'logit_bias keys are token ids'), z.number().min(-100).max(100)).nullish(),
  seed: z.number().int().nullish(),
  stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).nullish(),
  n: z.literal(1, unsupported('n > 1')).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  user: z.string().optional(),
  mor: MorFields,
};

export const CompletionRequest = z.object({
  ...Sampling,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'prompt: one prompt per request (a list of one string)')], {
    message: 'prompt must be a string (token-id prompts are not supported)',
  }),
  max_tokens: z.number().int().min(0).nullish(),
  logprobs: z.number().int().min(0).max(5).nullish(),
  echo: z.boolean().nullish(),
  best_of: z.literal(1, unsupported('best_of > 1')).nullish(),
  suffix: z.null(unsupported('suffix')).optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

const MessageContent = z.union([z.string(), z.array(z.object({ type: z.literal('text', unsupported('non-text content')), text: z.string() }))]);

export const ChatRequest = z.object({
  ...Sampling,
  messages: z.array(z.object({ role: z.enum(['system', 'user', 'assistant', 'developer']), content: MessageContent })).min(1),
  max_tokens: z.number().int().min(1).nullish(),
  max_completion_tokens: z.number().int().min(1).nullish(),
  logprobs: z.boolean().nullish(),
  top_logprobs: z.number().int().min(0).max(20).nullish(),
});
export type ChatRequest = z.infer<typeof ChatRequest>;

/** Parse a body with a schema; the first issue becomes a 400 naming its field. */
export function parseRequest<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = issue && issue.path.length ? issue.path.join('.') : null;
  throw new ApiError(400, `${param ? `${param}: ` : ''}${issue?.message ?? 'invalid request'}`, 'invalid_request_error', param);
}

/**
 * The plain chat template for base models (documented in the README):
 *   "System: …\n\nUser: …\n\nAssistant: …\n\nUser: …\n\nAssistant:"
 * Generation stops at the next "\n\nUser:" turn.
 */
export const CHAT_STOP = '\n\nUser:';
export function renderChat(messages: ChatRequest['messages']): string {
  const name = { system: 'System', developer: 'System', user: 'User', assistant: 'Assistant' } as const;
  const text = (c: ChatRequest['messages'][number]['content']) => (typeof c === 'string' ? c : c.map((p) => p.text).join(''));
  return `${messages.map((m) => `${name[m.role]}: ${text(m.content)}`).join('\n\n')}\n\nAssistant:`;
}

function shared(r: CompletionRequest | ChatRequest, extraStop: readonly string[]): Omit<GenerationOptions, 'maxTokens'> {
  const stop = [...(r.stop == null ? [] : typeof r.stop === 'string' ? [r.stop] : r.stop), ...extraStop];
  return {
    ...(r.temperature != null ? { temperature: r.temperature } : {}),
    ...(r.top_p != null ? { topP: r.top_p } : {}),
    ...(r.top_k != null ? { topK: r.top_k } : {}),
    ...(r.repetition_penalty != null ? { repetitionPenalty: r.repetition_penalty } : {}),
    ...(r.frequency_penalty != null ? { frequencyPenalty: r.frequency_penalty } : {}),
    ...(r.presence_penalty != null ? { presencePenalty: r.presence_penalty } : {}),
    ...(r.logit_bias != null ? { logitBias: Object.entries(r.logit_bias).map(([k, v]) => [Number(k), v] as const) } : {}),
    ...(r.seed != null ? { seed: r.seed } : {}),
    ...(stop.length ? { stop } : {}),
    ...(r.mor?.max_depth !== undefined ? { maxDepth: r.mor.max_depth } : {}),
    ...(r.mor?.threshold !== undefined ? { threshold: r.mor.threshold } : {}),
  };
}

export function completionOptions(r: CompletionRequest): GenerationOptions {
  return {
    ...shared(r, []),
    maxTokens: r.max_tokens ?? 16,
    ...(r.logprobs != null ? { logprobs: r.logprobs } : {}),
    ...(r.echo ? { echo: true } : {}),
  };
}

export function chatOptions(r: ChatRequest, defaultMaxTokens: number): GenerationOptions {
  return {
    ...shared(r, [CHAT_STOP]),
    maxTokens: r.max_completion_tokens ?? r.max_tokens ?? defaultMaxTokens,
    ...(r.logprobs ? { logprobs: r.top_logprobs ?? 0 } : {}),
  };
}

/** The MoR fields of a choice: every token's depth and their mean. */
export function morChoice(depths: readonly number[]): { depths: readonly number[]; mean_depth: number | null } {
  return { depths, mean_depth: depths.length ? depths.reduce((a, b) => a + b, 0) / depths.length : null };
}

export function usage(d: DoneInfo): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: d.promptTokens, completion_tokens: d.completionTokens, total_tokens: d.promptTokens + d.completionTokens };
}

/** Completions `logprobs` object over tokens (prompt ones first with echo), text offsets from `start`. */
export function completionLogprobs(tokens: readonly WireToken[], start: number) {
  let offset = start;
  const text_offset: number[] = [];
  for (const t of tokens) {
    text_offset.push(offset);
    offset += t.text.length;
  }
  return {
    tokens: tokens.map((t) => t.text),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => (t.top ? Object.fromEntries(t.top) : null)),
    text_offset,
  };
}

/** Chat `logprobs.content` entries. */
export function chatLogprobs(tokens: readonly WireToken[]) {
  const bytes = (s: string) => Array.from(Buffer.from(s, 'utf8'));
  return tokens.map((t) => ({
    token: t.text,
    logprob: t.logprob ?? 0,
    bytes: bytes(t.text),
    top_logprobs: (t.top ?? []).map(([token, logprob]) => ({ token, logprob, bytes: bytes(token) })),
  }));
}
