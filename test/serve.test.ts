// `mor serve` as clients use it: the official openai client (completions, chat, streaming,
// usage, stop, seeds, logprobs/echo, the error classes), raw HTTP for bad input, concurrency,
// a full queue, client disconnects, time limits, metrics, and SIGTERM.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import OpenAI from 'openai';
import { createModel } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { trainBpe } from '../src/data/bpe-train.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { startServer, type MorServer, type ServeOptions } from '../src/serve/server.js';
import { useTempDir } from './helpers/temp-dir.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const tempDir = useTempDir('mor-serve-');
const modelDir = () => join(tempDir(), 'model', 'checkpoint');

async function withServer<T>(extra: Partial<ServeOptions>, fn: (s: MorServer, client: OpenAI) => Promise<T>): Promise<T> {
  const s = await startServer({ modelDir: modelDir(), port: 0, ...extra });
  await s.ready;
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: extra.apiKey ?? 'none', maxRetries: 0, timeout: 60_000 });
  try {
    return await fn(s, client);
  } finally {
    await s.close();
  }
}

async function metric(s: MorServer, name: string): Promise<number> {
  const line = (await s.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(' ')[1]) : Number.NaN;
}

async function until(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('mor serve', () => {
  before(async () => {
    const { tokenizer } = await trainBpe(['The President and the Congress shall meet. We the people of the union. '.repeat(40)], { vocabSize: 400 });
    saveCheckpoint(modelDir(), createModel(preset('tiny-mor3'), 5), { tokenizer });
  });

  test('completions and chat, streaming and not, through the openai client', async () => {
    await withServer({}, async (_s, client) => {
      const models = await client.models.list();
      const id = models.data[0]?.id as string;
      assert.equal(id, 'model');
      const c = await client.completions.create({ model: id, prompt: 'The President', max_tokens: 6, temperature: 0 });
      const choice = c.choices[0] as (typeof c.choices)[number] & { mor: { depths: number[]; mean_depth: number } };
      assert.equal(c.usage?.completion_tokens, 6);
      assert.ok((c.usage?.prompt_tokens ?? 0) > 0);
      assert.equal(choice.finish_reason, 'length');
      assert.equal(choice.mor.depths.length, 6);
      assert.ok(choice.mor.depths.every((d) => d >= 1 && d <= 3));
      // streaming gives the same greedy text, a depth per token, and usage in the last chunk
      const stream = await client.completions.create({ model: id, prompt: 'The President', max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
      let text = '';
      const depths: number[] = [];
      let used = 0;
      for await (const chunk of stream) {
        const ch = chunk.choices[0] as ((typeof chunk.choices)[number] & { mor: { depths: number[] } }) | undefined;
        if (ch) {
          text += ch.text;
          depths.push(...ch.mor.depths);
        }
        if (chunk.usage) used = chunk.usage.completion_tokens;
      }
      assert.equal(text, choice.text);
      assert.deepEqual(depths, choice.mor.depths);
      assert.equal(used, 6);
      // chat, streaming and not
      const chat = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0 });
      assert.equal(chat.choices[0]?.message.role, 'assistant');
      assert.equal(chat.usage?.completion_tokens, 5);
      const cs = await client.chat.completions.create({ model: id, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5, temperature: 0, stream: true });
      let chatText = '';
      for await (const chunk of cs) chatText += chunk.choices[0]?.delta.content ?? '';
      assert.equal(chatText, chat.choices[0]?.message.content);
    });
  });

  test('seeds, stop strings, the mor extension, logprobs and echo', async () => {
    await withServer({}, async (_s, client) => {
      const sample = (seed: number) => client.completions.create({ model: 'model', prompt: 'We the people', max_tokens: 12, temperature: 1, seed });
      const [a, b] = await Promise.all([sample(7), sample(7)]);
      assert.equal(a.choices[0]?.text, b.choices[0]?.text);
      const free = (await client.completions.create({ model: 'model', prompt: 'We the', max_tokens: 10, temperature: 0 })).choices[0]?.text as string;
      const stopAt = free.slice(3, 5);
      const cut = await client.completions.create({ model: 'model', prompt: 'We the', max_tokens: 10, temperature: 0, stop: [stopAt] });
      assert.equal(cut.choices[0]?.text, free.slice(0, free.indexOf(stopAt)));
      assert.equal(cut.choices[0]?.finish_reason, 'stop');
      const shallow = (await client.completions.create({ model: 'model', prompt: 'We the', max_tokens: 6, temperature: 0, mor: { max_depth: 1 } } as never)) as unknown as { choices: Array<{ mor: { depths: number[] } }> };
      assert.ok(shallow.choices[0]?.mor.depths.every((d) => d === 1));
      const lp = await client.completions.create({ model: 'model', prompt: 'We the people', max_tokens: 0, echo: true, logprobs: 2 });
      const logprobs = lp.choices[0]?.logprobs;
      assert.equal(lp.choices[0]?.text, 'We the people');
      assert.equal(logprobs?.token_logprobs?.[0], null);
      assert.ok((logprobs?.token_logprobs ?? []).slice(1).every((x) => typeof x === 'number' && x < 0));
      assert.equal(logprobs?.tokens?.join(''), 'We the people');
      assert.equal(Object.keys(logprobs?.top_logprobs?.[1] ?? {}).length, 2);
      const chat = await client.chat.completions.create({ model: 'model', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3, logprobs: true, top_logprobs: 2 });
      assert.equal(chat.choices[0]?.logprobs?.content?.length, 3);
      assert.equal(chat.choices[0]?.logprobs?.content?.[0]?.top_logprobs.length, 2);
    });
  });

  test('errors arrive as the client\'s error classes: 400, 401, 404, 429', async () => {
    await withServer({}, async (_s, client) => {
      await assert.rejects(client.completions.create({ model: 'model', prompt: 'x', max_tokens: -1 }), OpenAI.BadRequestError);
      await assert.rejects(client.completions.create({ model: 'model', prompt: 'x', temperature: 'hot' as never }), OpenAI.BadRequestError);
      await assert.rejects(client.completions.create({ model: 'model', prompt: 'x', max_tokens: 100_000 }), (e: unknown) => e instanceof OpenAI.BadRequestError && /context/.test(e.message));
      await assert.rejects(client.completions.create({ model: 'gpt-17', prompt: 'x' }), OpenAI.NotFoundError);
    });
    await withServer({ apiKey: 'sesame' }, async (s) => {
      const wrong = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'guess', maxRetries: 0 });
      await assert.rejects(wrong.models.list(), OpenAI.AuthenticationError);
      const right = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sesame', maxRetries: 0 });
      assert.equal((await right.models.list()).data.length, 1);
    });
    await withServer({ maxBatch: 1, maxQueue: 0 }, async (_s, client) => {
      const long = client.completions.create({ model: 'model', prompt: 'x', max_tokens: 100, temperature: 0 });
      const t0 = performance.now();
      await assert.rejects(client.completions.create({ model: 'model', prompt: 'y', max_tokens: 2 }), (e: unknown) => e instanceof OpenAI.RateLimitError && e.headers?.get('retry-after') === '1');
      assert.ok(performance.now() - t0 < 2000, 'a full queue answers at once');
      await long;
    });
  });

  test('bad input gets its status and a clear message, and the server keeps serving', async () => {
    await withServer({ maxBodyBytes: 4096 }, async (s, client) => {
      const post = (body: string | Uint8Array, path = '/v1/completions') => fetch(`${s.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
      const cases: Array<[string | Uint8Array, number, RegExp]> = [
        ['{"prompt": "x",', 400, /malformed JSON/],
        ['{"prompt": 3}', 400, /prompt/],
        ['{"prompt": "x", "max_tokens": 1.5}', 400, /max_tokens/],
        ['{"prompt": "x", "max_tokens": -4}', 400, /max_tokens/],
        [JSON.stringify({ prompt: 'the '.repeat(300), max_tokens: 4 }), 400, /context/],
        [JSON.stringify({ prompt: 'x'.repeat(10_000) }), 413, /over 4096 bytes/],
        [Uint8Array.of(0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d), 400, /not valid UTF-8/],
        ['{"messages": []}', 400, /messages/],
      ];
      for (const [body, status, msg] of cases) {
        const r = await post(body, typeof body === 'string' && body.includes('messages') ? '/v1/chat/completions' : '/v1/completions');
        assert.equal(r.status, status, String(body).slice(0, 40));
        const j = (await r.json()) as { error: { message: string; type: string } };
        assert.match(j.error.message, msg);
        assert.equal(typeof j.error.type, 'string');
      }
      assert.equal((await fetch(`${s.url}/v1/nothing`)).status, 404);
      const ok = await client.completions.create({ model: 'model', prompt: 'still here', max_tokens: 2 });
      assert.equal(ok.usage?.completion_tokens, 2);
    });
  });

  test('64 concurrent streams each get their greedy text alone; a disconnect frees K/V; the time limit ends a request', async () => {
    await withServer({ maxBatch: 32 }, async (s, client) => {
      const prompts = Array.from({ length: 64 }, (_, i) => `The people ${i}`);
      const alone = new Map<string, string>();
      for (const p of prompts.slice(0, 4)) alone.set(p, (await client.completions.create({ model: 'model', prompt: p, max_tokens: 8, temperature: 0 })).choices[0]?.text as string);
      const texts = await Promise.all(
        prompts.map(async (p) => {
          let t = '';
          for await (const c of await client.completions.create({ model: 'model', prompt: p, max_tokens: 8, temperature: 0, stream: true })) t += c.choices[0]?.text ?? '';
          return t;
        }),
      );
      prompts.slice(0, 4).forEach((p, i) => assert.equal(texts[i], alone.get(p), p));
      assert.equal(texts.length, 64);
      await until(async () => (await metric(s, 'mor_kv_bytes_in_use')) === 0);
      // a client that goes away mid-stream
      const ac = new AbortController();
      const r = await fetch(`${s.url}/v1/completions`, { method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', max_tokens: 120, stream: true }) });
      const reader = (r.body as ReadableStream<Uint8Array>).getReader();
      await reader.read();
      assert.ok((await metric(s, 'mor_kv_bytes_in_use')) > 0, 'the request holds K/V while it runs');
      ac.abort();
      await until(async () => (await metric(s, 'mor_kv_bytes_in_use')) === 0);
    });
    await withServer({ requestTimeoutS: 0.03 }, async (s, client) => {
      // 16 × 120 tokens take well over 30 ms on any machine: the later requests run past the limit
      const outcomes = await Promise.allSettled(Array.from({ length: 16 }, () => client.completions.create({ model: 'model', prompt: 'x', max_tokens: 120 })));
      const timedOut = outcomes.filter((o) => o.status === 'rejected' && o.reason instanceof OpenAI.APIError && o.reason.status === 504);
      assert.ok(timedOut.length >= 1, 'some request ran past the limit');
      assert.ok(outcomes.every((o) => o.status === 'fulfilled' || timedOut.includes(o)), 'every failure is the time limit');
      await until(async () => (await metric(s, 'mor_kv_bytes_in_use')) === 0);
    });
  });

  test('dtype bf16 reaches the engine worker: /health reports it, completions work', async () => {
    await withServer({ dtype: 'bf16' }, async (s, client) => {
      assert.deepEqual(await (await fetch(`${s.url}/health`)).json(), { status: 'ok', dtype: 'bf16' });
      const r = await client.completions.create({ model: 'model', prompt: 'The', max_tokens: 4 });
      assert.ok((r.usage?.completion_tokens ?? 0) >= 1, 'tokens generated');
    });
    await withServer({}, async (s) => assert.deepEqual(await (await fetch(`${s.url}/health`)).json(), { status: 'ok', dtype: 'f32' }));
  });

  test('/health, /metrics and /v1/models report the model and its work', async () => {
    const s = await startServer({ modelDir: modelDir(), port: 0 });
    try {
      const early = await fetch(`${s.url}/health`);
      assert.equal(early.status, 503, 'loading');
      await s.ready;
      assert.equal((await fetch(`${s.url}/health`)).status, 200);
      const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'none', maxRetries: 0 });
      await client.completions.create({ model: 'model', prompt: 'The', max_tokens: 4 });
      const text = await (await fetch(`${s.url}/metrics`)).text();
      for (const name of ['mor_requests_total', 'mor_generated_tokens_total', 'mor_queue_length', 'mor_running_requests', 'mor_batch_occupancy', 'mor_mean_depth', 'mor_kv_bytes_in_use', 'mor_time_to_first_token_seconds_bucket', 'mor_time_per_output_token_seconds_bucket']) {
        assert.match(text, new RegExp(`^${name}`, 'm'), name);
      }
      assert.match(text, /^mor_generated_tokens_total 4$/m);
      const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: Array<{ mor: { num_recursions: number; routing: string } }> };
      assert.deepEqual(models.data[0]?.mor, { num_recursions: 3, routing: 'expert_choice', threshold: 0.5 });
    } finally {
      await s.close();
    }
  });

  test('mor serve prints one listening line and exits 0 on SIGTERM', async () => {
    const child = spawn(process.execPath, [BIN, 'serve', '--model', modelDir(), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 20_000);
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /^listening on (http:\/\/127\.0\.0\.1:\d+)\n/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolveUrl(m[1] as string);
        }
      });
    });
    assert.equal((await fetch(`${url}/health`)).status, 200);
    const code = await new Promise<number | null>((r) => {
      child.on('exit', (c) => r(c));
      child.kill('SIGTERM');
    });
    assert.equal(code, 0);
    assert.equal(out, `listening on ${url}\n`);
  });
});
