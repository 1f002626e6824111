/**
 * The engine worker: owns the model, the tokenizer and the Engine, so that the HTTP thread
 * never blocks on a step. It tokenises and checks each request, drives the engine while any
 * request is live, and streams text pieces back (see messages.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { basename } from 'node:path';
import { MorError } from '../errors.js';
import { loadModel } from '../interop/load.js';
import { routerThreshold } from '../model/mod-config.js';
import { Engine, type BatchingMode, type RequestHandle } from '../infer/engine.js';
import { generateText, textRequest, type StreamedToken, type TextGenerateOptions } from '../infer/generate.js';
import type { TokenLogprob } from '../infer/sampler.js';
import type { FromWorker, GenerationOptions, ToWorker, WireToken } from './messages.js';
import { definedOnly } from '../util/defined.js';
import type { StorageDtype } from '../backend/bf16.js';

export interface WorkerConfig {
  readonly modelDir: string;
  readonly maxBatch: number;
  readonly batching: BatchingMode;
  readonly dtype: StorageDtype;
}

if (parentPort === null) throw new Error('serve/worker.js runs as a worker thread');
const port = parentPort;
const post = (m: FromWorker): void => port.postMessage(m);

async function main(cfg: WorkerConfig): Promise<void> {
  const { model, tokenizer: tok } = await loadModel(cfg.modelDir);
  const engine = new Engine(model, { maxBatch: cfg.maxBatch, batching: cfg.batching, dtype: cfg.dtype });
  const c = model.config;
  const contextLength = c.max_position_embeddings;
  const handles = new Map<number, { cancel: () => void }>();

  const wire = (id: number, depth: number, lp: TokenLogprob | null): WireToken => ({
    id,
    text: tok.decode([id]),
    depth,
    logprob: lp?.logprob ?? null,
    top: lp ? lp.top.map((t) => [tok.decode([t.token]), t.logprob] as const) : null,
  });

  let driving = false;
  let lastStats = 0;
  const sendStats = (force = false): void => {
    const now = performance.now();
    if (!force && now - lastStats < 100) return;
    lastStats = now;
    post({ type: 'stats', stats: { running: engine.numRunning, waiting: engine.numWaiting, kvBytes: engine.kvBytes, maxBatch: engine.maxBatch } });
  };
  /** Step the engine while requests are live, yielding to the message queue between steps. */
  const drive = async (): Promise<void> => {
    if (driving) return;
    driving = true;
    try {
      while (engine.numWaiting > 0 || engine.numRunning > 0) {
        const before = engine.kvBytes;
        engine.step();
        // posted before the step's pieces (they follow in microtasks): a client that has a
        // piece sees stats that count its request
        sendStats(engine.kvBytes !== before);
        await new Promise<void>((r) => setImmediate(r));
      }
    } finally {
      driving = false;
      sendStats(true);
    }
  };

  const submit = (id: number, prompt: string, o: GenerationOptions): void => {
    let cancel: (() => void) | null = null;
    let cancelled = false;
    handles.set(id, { cancel: () => ((cancelled = true), cancel?.()) });
    const { logitBias, ...rest } = o;
    const opts: TextGenerateOptions = {
      ...definedOnly(rest),
      maxTokens: o.maxTokens,
      ...(logitBias !== undefined ? { logitBias: new Map(logitBias) } : {}),
      onText: (text: string, tokens: readonly StreamedToken[]) => post({ type: 'piece', id, text, tokens: tokens.map((t) => wire(t.id, t.depth, t.logprob)) }),
    };
    let input: Int32Array;
    try {
      input = textRequest(engine, tok, prompt, opts).input;
      if (input.length + o.maxTokens > contextLength) {
        throw new MorError('E_ARGUMENT', `the prompt (${input.length} tokens) plus max_tokens (${o.maxTokens}) exceeds the model's context of ${contextLength} tokens`);
      }
    } catch (e) {
      handles.delete(id);
      post({ type: 'rejected', id, message: (e as Error).message, param: /max_tokens|maxTokens/.test((e as Error).message) ? 'max_tokens' : null });
      return;
    }
    generateText(engine, tok, prompt, { ...opts, onHandle: (h: RequestHandle) => {
      cancel = () => h.cancel();
      if (cancelled) h.cancel();
      post({ type: 'accepted', id, promptTokens: input.length });
    } }, false)
      .then((r) => {
        const promptLogprobs = r.promptLogprobs;
        post({
          type: 'done',
          id,
          info: {
            finishReason: r.finishReason === 'cancelled' ? 'cancelled' : r.finishReason === 'max_tokens' || r.finishReason === 'context' ? 'length' : 'stop',
            promptTokens: input.length,
            completionTokens: r.tokens.length,
            text: r.text,
            depths: r.depths,
            firstTokenMs: r.firstTokenMs,
            totalMs: r.totalMs,
            prompt: promptLogprobs ? Array.from(input, (t, i) => wire(t, 0, promptLogprobs[i] ?? null)) : null,
          },
        });
      })
      .catch((e: unknown) => post({ type: 'error', id, message: (e as Error).message }))
      .finally(() => handles.delete(id));
    void drive();
  };

  port.on('message', (m: ToWorker) => {
    if (m.type === 'submit') submit(m.id, m.prompt, m.options);
    else if (m.type === 'cancel') handles.get(m.id)?.cancel();
    else if (m.type === 'shutdown') process.exit(0);
  });
  post({
    type: 'ready',
    info: {
      name: basename(cfg.modelDir.replace(/\/checkpoint\/?$/, '')) || 'mor',
      numRecursions: model.plan.depthSteps.length,
      routing: c.mor?.routing ?? null,
      threshold: routerThreshold(c),
      contextLength,
      vocabSize: c.vocab_size,
      dtype: cfg.dtype,
    },
  });
}

main(workerData as WorkerConfig).catch((e: unknown) => post({ type: 'failed', message: (e as Error).message }));
