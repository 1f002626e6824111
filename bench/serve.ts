// Serving benchmark: tokens/s and time-to-first-token through HTTP (the `mor serve` server, its
// engine in a worker thread) with 1, 8, 32 and 64 concurrent streaming clients, beside the
// engine alone on the same requests in the same run; then a soak of 2,000 short requests.
//   {"bench":"serve","model":"small","concurrency":32,"requests":…,"tokens_per_s":…,"ttft_ms_p50":…,"ttft_ms_p99":…,
//    "engine_tokens_per_s":…,"vs_engine":…,"cpu":…,"threads":…}
//   {"bench":"serve_soak","requests":2000,"rss_mb_at_500":…,"rss_mb_at_2000":…,"rss_growth":…,"kv_bytes_between_bursts_max":0}
//
// Model `small`, random-initialised (speed does not depend on the weights' values), greedy;
// prompts of 16–48 tokens, generation lengths uniform in [64, 192] (the inference benchmark's
// lengths around 128). Each client sends its requests one after another, so `concurrency`
// requests are in flight; the engine alone gets the same requests with max batch = min(c, 32).
//
//   npm run bench:serve          (MOR_BENCH_QUICK=1: fewer requests)
import './omp-two-teams.js'; // first: before anything loads the addon
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { preset } from '../src/model/presets.js';
import { createModel } from '../src/model/model.js';
import { trainBpe } from '../src/data/bpe-train.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { Engine } from '../src/infer/engine.js';
import { generateText } from '../src/infer/generate.js';
import { startServer, type MorServer } from '../src/serve/server.js';
import { getBackend } from '../src/backend/index.js';
import { Rng } from '../src/util/rng.js';

const QUICK = process.env['MOR_BENCH_QUICK'] === '1';
const MAX_BATCH = 32;
const info = getBackend().info();
const machine = { cpu: cpus()[0]?.model ?? 'unknown', simd: info.simd, threads: info.threads, gemm: info.gemmProvider };

function emit(o: Record<string, unknown>): void {
  console.log(JSON.stringify({ ...o, ...machine }));
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] as number;
}

interface Req {
  prompt: string;
  maxTokens: number;
}

/** One streaming completion through HTTP: tokens received and time to the first one. */
async function streamOne(url: string, r: Req): Promise<{ tokens: number; ttftMs: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: r.prompt, max_tokens: r.maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let ttft = 0;
  let tokens = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const j = JSON.parse(line.slice(6)) as { choices: Array<{ mor?: { depths: number[] } }>; usage?: { completion_tokens: number } };
      if (ttft === 0 && (j.choices[0]?.mor?.depths.length ?? 0) > 0) ttft = performance.now() - t0;
      if (j.usage) tokens = j.usage.completion_tokens;
    }
  }
  return { tokens, ttftMs: ttft };
}

async function throughHttp(url: string, reqs: Req[], concurrency: number) {
  let next = 0;
  const ttfts: number[] = [];
  let tokens = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < reqs.length) {
        const r = await streamOne(url, reqs[next++] as Req);
        tokens += r.tokens;
        ttfts.push(r.ttftMs);
      }
    }),
  );
  return { tokens, seconds: (performance.now() - t0) / 1000, ttfts };
}

async function engineAlone(engine: Engine, tok: Tokenizer, reqs: Req[]) {
  const t0 = performance.now();
  const runs = reqs.map((r) => generateText(engine, tok, r.prompt, { maxTokens: r.maxTokens, temperature: 0 }, false));
  await engine.runUntilIdle();
  const results = await Promise.all(runs);
  return { tokens: results.reduce((a, r) => a + r.tokens.length, 0), seconds: (performance.now() - t0) / 1000 };
}

async function kvBytes(s: MorServer): Promise<number> {
  const line = (await s.metrics()).split('\n').find((l) => l.startsWith('mor_kv_bytes_in_use '));
  return Number(line?.split(' ')[1] ?? Number.NaN);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'mor-bench-serve-'));
  try {
    const model = createModel(preset('small'), 0);
    const text = 'We the people of the United States, in order to form a more perfect union, establish justice. '.repeat(200);
    const { tokenizer } = await trainBpe([text], { vocabSize: 2048 });
    const modelDir = join(dir, 'small', 'checkpoint');
    saveCheckpoint(modelDir, model, { tokenizer });
    const tok = Tokenizer.fromJSON(tokenizer);
    const rng = new Rng(11);
    const context = model.config.max_position_embeddings;
    const request = (): Req => {
      const prompt = tok.decode(Int32Array.from({ length: 16 + rng.nextInt(33) }, () => rng.nextInt(tok.vocabSize - 1)));
      // the text re-tokenises to about as many tokens; keep prompt + generation inside the context
      return { prompt, maxTokens: Math.min(64 + rng.nextInt(129), context - tok.encode(prompt).length) };
    };
    const server = await startServer({ modelDir, port: 0, maxBatch: MAX_BATCH, maxQueue: 1024 });
    await server.ready;
    try {
      await throughHttp(server.url, [request(), request()], 2); // warm-up: packs the weights
      for (const c of [1, 8, 32, 64]) {
        const n = QUICK ? Math.max(2, c) : c === 1 ? 6 : 2 * c;
        const reqs = Array.from({ length: n }, request);
        const http = await throughHttp(server.url, reqs, c);
        const engine = new Engine(model, { maxBatch: Math.min(c, MAX_BATCH) });
        await engineAlone(engine, tok, reqs.slice(0, 1)); // warm-up
        const alone = await engineAlone(engine, tok, reqs);
        const tps = http.tokens / http.seconds;
        const etps = alone.tokens / alone.seconds;
        emit({
          bench: 'serve',
          model: 'small',
          concurrency: c,
          requests: n,
          generated_tokens: http.tokens,
          tokens_per_s: Math.round(tps),
          ttft_ms_p50: Math.round(percentile(http.ttfts, 50)),
          ttft_ms_p99: Math.round(percentile(http.ttfts, 99)),
          engine_tokens_per_s: Math.round(etps),
          vs_engine: Math.round((tps / etps) * 100) / 100,
        });
      }
      // soak: short requests in bursts of 100 (8 at a time); RSS at request 500 and 2,000; K/V between bursts
      const total = QUICK ? 400 : 2000;
      let done = 0;
      let rss500 = 0;
      let kvMax = 0;
      const t0 = performance.now();
      while (done < total) {
        const burst = Array.from({ length: 100 }, () => ({ prompt: request().prompt, maxTokens: 4 }));
        await throughHttp(server.url, burst, 8);
        done += burst.length;
        const deadline = Date.now() + 2000;
        let kv = await kvBytes(server);
        while (kv !== 0 && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
          kv = await kvBytes(server);
        }
        kvMax = Math.max(kvMax, kv);
        if (done === 500 || (QUICK && done === 100)) rss500 = process.memoryUsage().rss;
      }
      const rssEnd = process.memoryUsage().rss;
      emit({
        bench: 'serve_soak',
        requests: total,
        seconds: Math.round((performance.now() - t0) / 100) / 10,
        rss_mb_at_500: Math.round(rss500 / 2 ** 20),
        [`rss_mb_at_${total}`]: Math.round(rssEnd / 2 ** 20),
        rss_growth: Math.round((rssEnd / rss500 - 1) * 1000) / 1000,
        kv_bytes_between_bursts_max: kvMax,
      });
    } finally {
      await server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
