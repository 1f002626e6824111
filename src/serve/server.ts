/**
 * `mor serve`: an OpenAI-compatible HTTP server (hono on Node) in front of the engine, which
 * runs in a worker thread so HTTP stays live during steps; and the web playground's files.
 *
 *   POST /v1/completions, /v1/chat/completions   (stream: SSE chunks ending in `data: [DONE]`)
 *   GET  /v1/models, /health, /metrics (Prometheus), /api/runs[/NAME], / (playground), /runs
 *
 * The HTTP layer only translates (DESIGN.md, Serving): validate (zod), map to engine options,
 * stream the engine's pieces as OpenAI chunks, map errors to OpenAI-shaped bodies. Everything
 * is bounded: body size (413), queue (429 + Retry-After), prompt + max_tokens ≤ context (400),
 * time per request; a client that goes away cancels its request and frees its K/V.
 */
import { storageDtype, type StorageDtype } from '../backend/bf16.js';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE } from 'hono/streaming';
import { serve, type ServerType } from '@hono/node-server';
import { serveStatic } from '@hono/node-server/serve-static';
import { ArgumentError } from '../errors.js';
import type { BatchingMode } from '../infer/engine.js';
import { EngineWorker } from './engine-worker.js';
import type { DoneInfo, GenerationOptions, WireToken } from './messages.js';
import { ServerMetrics } from './metrics.js';
import {
  ApiError, ChatRequest, CompletionRequest, chatLogprobs, chatOptions, completionLogprobs, completionOptions, morChoice, parseRequest, renderChat, usage,
} from './protocol.js';

export interface ServeOptions {
  /** The checkpoint directory served; fixed at start (nothing in a request names a path). */
  readonly modelDir: string;
  readonly host?: string;
  /** 0 picks a free port. */
  readonly port?: number;
  readonly maxBatch?: number;
  readonly batching?: Extract<BatchingMode, 'depth' | 'sequence'>;
  /** Storage of the engine's packed weights and K/V pool (EngineOptions.dtype). */
  readonly dtype?: StorageDtype;
  /** Requests waiting beyond the running batch before new ones get 429. */
  readonly maxQueue?: number;
  /** Require `Authorization: Bearer KEY` on /v1/*. */
  readonly apiKey?: string;
  /** A folder of training runs (each with metrics.jsonl) for the /runs page. */
  readonly runsDir?: string;
  /** A request still running after this many seconds ends with an error and frees its K/V. */
  readonly requestTimeoutS?: number;
  readonly maxBodyBytes?: number;
  /** On close (SIGTERM): wait this long for in-flight requests, then cancel them. */
  readonly shutdownTimeoutS?: number;
}

export const SERVE_DEFAULTS = Object.freeze({
  host: '127.0.0.1',
  port: 8080,
  maxBatch: 32,
  batching: 'depth' as const,
  dtype: 'f32' as StorageDtype,
  maxQueue: 256,
  requestTimeoutS: 600,
  maxBodyBytes: 1 << 20,
  shutdownTimeoutS: 30,
  /** max_tokens of a chat request that gives none. */
  chatMaxTokens: 256,
});

export interface MorServer {
  /** http://HOST:PORT */
  readonly url: string;
  readonly port: number;
  /** Resolves once the model is loaded (the server answers 503 until then). */
  readonly ready: Promise<void>;
  readonly metrics: () => Promise<string>;
  /** Stop accepting, finish or cancel in-flight requests within the shutdown timeout, stop the engine. */
  close(): Promise<void>;
}

/** The package's web/ folder (the playground), from this file's place in dist/src/serve/. */
const WEB_DIR = resolve(dirname(fileURLToPath(import.meta.url)), '../../../web');

type State = 'loading' | 'ready' | 'shutting_down';

/** One generation in flight, seen from HTTP: its pieces as they come and how it ended. */
class Generation {
  readonly pieces: Array<{ text: string; tokens: readonly WireToken[] }> = [];
  private wake: (() => void) | null = null;
  done: DoneInfo | null = null;
  failure: ApiError | null = null;
  timedOut = false;
  readonly accepted: Promise<number>;
  cancel: () => void = () => {};

  constructor(engine: EngineWorker, prompt: string, options: GenerationOptions, timeoutMs: number, onEnd: () => void) {
    let accept!: (n: number) => void;
    let refuse!: (e: ApiError) => void;
    this.accepted = new Promise((a, r) => {
      accept = a;
      refuse = r;
    });
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.cancel();
    }, timeoutMs);
    const end = (): void => {
      clearTimeout(timer);
      onEnd();
      this.notify();
    };
    const { cancel } = engine.submit(prompt, options, {
      onAccepted: (n) => accept(n),
      onRejected: (message, param) => {
        refuse(new ApiError(400, message, 'invalid_request_error', param));
        end();
      },
      onPiece: (text, tokens) => {
        this.pieces.push({ text, tokens });
        this.notify();
      },
      onDone: (info) => {
        this.done = info;
        if (info.finishReason === 'cancelled' && this.timedOut) {
          this.failure = new ApiError(504, `the request ran past the server's time limit of ${timeoutMs / 1000} s`, 'timeout_error', null, 'timeout');
        }
        end();
      },
      onError: (message) => {
        this.failure = new ApiError(500, message, 'server_error');
        refuse(this.failure);
        end();
      },
    });
    this.cancel = cancel;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Pieces as they arrive, until the generation ends. */
  async *stream(): AsyncGenerator<{ text: string; tokens: readonly WireToken[] }> {
    let i = 0;
    for (;;) {
      while (i < this.pieces.length) yield this.pieces[i++] as { text: string; tokens: readonly WireToken[] };
      if (this.done !== null || this.failure !== null) return;
      await new Promise<void>((r) => (this.wake = r));
    }
  }
}

export async function startServer(options: ServeOptions): Promise<MorServer> {
  const o = { ...SERVE_DEFAULTS, ...options };
  for (const [k, v, min] of [['maxBatch', o.maxBatch, 1], ['maxQueue', o.maxQueue, 0], ['port', o.port, 0]] as const) {
    if (!Number.isInteger(v) || v < min) throw new ArgumentError(`${k} must be an integer ≥ ${min}, got ${v}`);
  }
  const dtype = storageDtype('dtype', o.dtype);
  if (!(o.requestTimeoutS > 0)) throw new ArgumentError(`requestTimeoutS must be > 0, got ${o.requestTimeoutS}`);
  if (!existsSync(o.modelDir)) throw new ArgumentError(`model directory not found: ${o.modelDir}`);
  let state: State = 'loading';
  let engine: EngineWorker | null = null;
  let metrics: ServerMetrics | null = null;
  const live = new Set<Generation>();
  const created = () => Math.floor(Date.now() / 1000);
  let serial = 0;
  const newId = (prefix: string) => `${prefix}-${Date.now().toString(36)}${(serial++).toString(36)}`;

  const app = new Hono();
  const fail = (c: Context, e: ApiError) => {
    if (e.status === 429) c.header('Retry-After', '1');
    return c.json(e.body(), e.status as 400);
  };
  app.onError((err, c) => fail(c, err instanceof ApiError ? err : new ApiError(500, err.message, 'server_error')));
  app.notFound((c) => fail(c, new ApiError(404, `no route ${c.req.method} ${c.req.path}`, 'invalid_request_error', null, 'not_found')));

  // ---- /v1: auth, body limit, readiness
  app.use('/v1/*', async (c, next) => {
    if (o.apiKey !== undefined && c.req.header('authorization') !== `Bearer ${o.apiKey}`) {
      throw new ApiError(401, 'invalid or missing API key (Authorization: Bearer KEY)', 'authentication_error', null, 'invalid_api_key');
    }
    if (state !== 'ready') throw new ApiError(503, state === 'loading' ? 'the model is still loading' : 'the server is shutting down', 'server_error');
    await next();
  });
  app.use('/v1/*', bodyLimit({ maxSize: o.maxBodyBytes, onError: (c) => fail(c, new ApiError(413, `request body over ${o.maxBodyBytes} bytes`, 'invalid_request_error')) }));
  app.use('/v1/*', async (c, next) => {
    await next();
    metrics?.requests.inc({ endpoint: c.req.path, status: String(c.res.status) });
  });

  const readJson = async (c: Context): Promise<unknown> => {
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new ApiError(400, 'the request body is not valid UTF-8');
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new ApiError(400, `malformed JSON: ${(e as Error).message}`);
    }
  };
  const checkModel = (name: string | undefined): void => {
    const info = (engine as EngineWorker).info;
    if (name !== undefined && name !== info.name) throw new ApiError(404, `model '${name}' not found (this server serves '${info.name}')`, 'invalid_request_error', 'model', 'model_not_found');
  };
  /** Queue bound, then submit; resolves once the worker accepted the request (or throws its 400). */
  const begin = async (c: Context, prompt: string, opts: GenerationOptions): Promise<Generation> => {
    const e = engine as EngineWorker;
    if (e.outstanding >= o.maxBatch + o.maxQueue) throw new ApiError(429, `the server is busy: ${e.outstanding} requests in flight`, 'rate_limit_error', null, 'queue_full');
    const g = new Generation(e, prompt, opts, o.requestTimeoutS * 1000, () => live.delete(g));
    live.add(g);
    c.req.raw.signal.addEventListener('abort', () => g.cancel(), { once: true });
    await g.accepted;
    return g;
  };
  /** After the last piece: throw the generation's failure, count its tokens, return how it ended. */
  const finish = (g: Generation): DoneInfo => {
    if (g.failure) throw g.failure;
    const d = g.done as DoneInfo;
    if (d.finishReason === 'cancelled') throw new ApiError(499, 'the request was cancelled', 'invalid_request_error');
    metrics?.promptTokens.inc(d.promptTokens);
    metrics?.tokens(d.depths);
    if (d.completionTokens > 0) metrics?.ttft.observe(d.firstTokenMs / 1000);
    if (d.completionTokens > 1) metrics?.perToken.observe((d.totalMs - d.firstTokenMs) / 1000 / (d.completionTokens - 1));
    return d;
  };
  const sseError = (e: unknown) => JSON.stringify((e instanceof ApiError ? e : new ApiError(500, (e as Error).message, 'server_error')).body());
  /**
   * A generation as server-sent events: the `opening` chunks, one chunk per piece, the closing
   * chunk (finish reason, mean depth), usage when asked, then [DONE]; a failure ends the stream
   * with an error event. Chunks are `{...base, choices: [choice]}`.
   */
  const streamChunks = (
    c: Context,
    g: Generation,
    base: object,
    includeUsage: boolean,
    opening: object[],
    piece: (p: { text: string; tokens: readonly WireToken[] }) => object,
    closing: (d: DoneInfo) => object,
  ) =>
    streamSSE(c, async (stream) => {
      stream.onAbort(() => g.cancel());
      const send = (choices: object[], extra: object = {}) => stream.writeSSE({ data: JSON.stringify({ ...base, choices, ...extra }) });
      try {
        for (const choice of opening) await send([choice]);
        for await (const p of g.stream()) await send([{ index: 0, ...piece(p), mor: { depths: p.tokens.map((t) => t.depth) } }]);
        const d = finish(g);
        await send([{ index: 0, ...closing(d), finish_reason: d.finishReason, mor: { ...morChoice(d.depths), depths: [] } }]);
        if (includeUsage) await send([], { usage: usage(d) });
        await stream.writeSSE({ data: '[DONE]' });
      } catch (e) {
        await stream.writeSSE({ data: sseError(e) });
      }
    });

  app.post('/v1/completions', async (c) => {
    const req = parseRequest(CompletionRequest, await readJson(c));
    checkModel(req.model);
    const prompt = typeof req.prompt === 'string' ? req.prompt : (req.prompt[0] as string);
    const opts = completionOptions(req);
    const g = await begin(c, prompt, opts);
    const id = newId('cmpl');
    const model = (engine as EngineWorker).info.name;
    const base = { id, object: 'text_completion', created: created(), model };
    if (req.stream) {
      let offset = req.echo ? prompt.length : 0;
      return streamChunks(
        c,
        g,
        base,
        req.stream_options?.include_usage === true,
        req.echo ? [{ index: 0, text: prompt, finish_reason: null, logprobs: null, mor: { depths: [] } }] : [],
        (p) => {
          const logprobs = opts.logprobs !== undefined ? completionLogprobs(p.tokens, offset) : null;
          offset += p.text.length;
          return { text: p.text, finish_reason: null, logprobs };
        },
        () => ({ text: '', logprobs: null }),
      );
    }
    const tokens: WireToken[] = [];
    for await (const p of g.stream()) tokens.push(...p.tokens);
    const d = finish(g);
    const all = req.echo ? [...(d.prompt ?? []), ...tokens] : tokens;
    return c.json({
      ...base,
      choices: [{
        index: 0,
        text: (req.echo ? prompt : '') + d.text,
        finish_reason: d.finishReason,
        logprobs: opts.logprobs !== undefined ? completionLogprobs(all, 0) : null,
        mor: morChoice(d.depths),
      }],
      usage: usage(d),
    });
  });

  app.post('/v1/chat/completions', async (c) => {
    const req = parseRequest(ChatRequest, await readJson(c));
    checkModel(req.model);
    const opts = chatOptions(req, SERVE_DEFAULTS.chatMaxTokens);
    const g = await begin(c, renderChat(req.messages), opts);
    const id = newId('chatcmpl');
    const model = (engine as EngineWorker).info.name;
    const withLogprobs = opts.logprobs !== undefined;
    if (req.stream) {
      let first = true;
      return streamChunks(
        c,
        g,
        { id, object: 'chat.completion.chunk', created: created(), model },
        req.stream_options?.include_usage === true,
        [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
        (p) => {
          // the template ends in "Assistant:"; the reply's leading space belongs to the template
          const text: string = first ? p.text.replace(/^ /, '') : p.text;
          first = first && text.length === 0;
          return { delta: { content: text }, logprobs: withLogprobs ? { content: chatLogprobs(p.tokens) } : null, finish_reason: null };
        },
        () => ({ delta: {}, logprobs: null }),
      );
    }
    const tokens: WireToken[] = [];
    for await (const p of g.stream()) tokens.push(...p.tokens);
    const d = finish(g);
    return c.json({
      id,
      object: 'chat.completion',
      created: created(),
      model,
      choices: [{
        index: 0,
        message: { role: 'assistant', content: d.text.replace(/^ /, '') },
        finish_reason: d.finishReason,
        logprobs: withLogprobs ? { content: chatLogprobs(tokens) } : null,
        mor: morChoice(d.depths),
      }],
      usage: usage(d),
    });
  });

  app.get('/v1/models', (c) => {
    const info = (engine as EngineWorker).info;
    return c.json({
      object: 'list',
      data: [{
        id: info.name,
        object: 'model',
        created: 0,
        owned_by: 'mor-ts',
        context_length: info.contextLength,
        mor: { num_recursions: info.numRecursions, routing: info.routing, threshold: info.threshold },
      }],
    });
  });

  app.get('/health', (c) => (state === 'ready' ? c.json({ status: 'ok', dtype: (engine as EngineWorker).info.dtype }, 200) : c.json({ status: state }, 503)));
  app.get('/metrics', async (c) => {
    if (!metrics) return c.text('', 503);
    return c.text(await metrics.registry.metrics(), 200, { 'Content-Type': metrics.registry.contentType });
  });

  // ---- training runs for the /runs page: only the folders found under --runs, by name
  const runNames = (): Array<{ name: string; records: number }> => {
    if (o.runsDir === undefined || !existsSync(o.runsDir)) return [];
    return readdirSync(o.runsDir)
      .filter((n) => existsSync(join(o.runsDir as string, n, 'metrics.jsonl')) && statSync(join(o.runsDir as string, n)).isDirectory())
      .sort()
      .map((name) => ({ name, records: readRun(name).length }));
  };
  const readRun = (name: string): unknown[] =>
    readFileSync(join(o.runsDir as string, name, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter((l) => l.trim().length > 0)
      .flatMap((l) => {
        try {
          return [JSON.parse(l) as unknown];
        } catch {
          return []; // a torn last line of a run still writing
        }
      });
  app.get('/api/runs', (c) => c.json({ runs: runNames() }));
  app.get('/api/runs/:name', (c) => {
    const name = c.req.param('name');
    if (!runNames().some((r) => r.name === name)) throw new ApiError(404, `no run '${name}'`, 'invalid_request_error', 'name', 'not_found');
    return c.json({ name, records: readRun(name) });
  });

  // ---- the playground: web/ and the vendored files it names in web/vendor.json
  const vendorFile = join(WEB_DIR, 'vendor.json');
  if (existsSync(vendorFile)) {
    // "pkg/dist/file.js": "node_modules/pkg/dist/file.js" — resolved through Node's module
    // resolution, so a dependency npm hoisted above this package is found too
    const require = createRequire(import.meta.url);
    const vendor = JSON.parse(readFileSync(vendorFile, 'utf8')) as Record<string, string>;
    for (const url of Object.keys(vendor)) {
      const pkg = url.startsWith('@') ? url.split('/').slice(0, 2).join('/') : (url.split('/')[0] as string);
      const file = join(dirname(require.resolve(`${pkg}/package.json`)), url.slice(pkg.length + 1));
      app.get(`/vendor/${url}`, serveStatic({ path: file }));
    }
  }
  app.get('/runs', serveStatic({ path: join(WEB_DIR, 'runs.html') }));
  app.get('/*', serveStatic({ root: WEB_DIR }));

  // ---- listen, then load the model in the worker
  const server: ServerType = await new Promise((resolveListen, reject) => {
    const s = serve({ fetch: app.fetch, hostname: o.host, port: o.port }, () => resolveListen(s));
    s.once('error', reject);
  });
  const port = (server.address() as AddressInfo).port;
  const ready = EngineWorker.start(o.modelDir, o.maxBatch, o.batching, dtype).then((e) => {
    engine = e;
    metrics = new ServerMetrics(e.info.numRecursions, () => e.stats);
    state = 'ready';
  });
  ready.catch(() => server.close());

  const close = async (): Promise<void> => {
    if (state === 'shutting_down') return;
    state = 'shutting_down';
    const stopped = new Promise<void>((r) => server.close(() => r()));
    const deadline = Date.now() + o.shutdownTimeoutS * 1000;
    while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const g of live) g.cancel();
    while (live.size > 0 && Date.now() < deadline + 2000) await new Promise((r) => setTimeout(r, 20));
    if ('closeAllConnections' in server) server.closeAllConnections();
    await stopped;
    await engine?.close();
  };

  return { url: `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${port}`, port, ready, metrics: async () => (metrics ? metrics.registry.metrics() : ''), close };
}
