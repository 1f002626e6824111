// The engine with dtype 'bf16' (packed weights and K/V pool in bf16, f32 arithmetic): its logits
// stay close to the f32 engine's, generation works in every batching mode and does not depend on
// the batch, the K/V pool and the WorkMeter count 2 bytes per element, and a bad dtype is a typed
// error on the Engine, the server and the CLI.
//
// Logit tolerance: every weight and every stored K/V value is rounded once to bf16, relative error
// ≤ u = 2⁻⁸ each; through the layers of these tiny random-init models the logits move by a few u
// of their scale (measured 0.08–0.4% of max |logit| on native, vdpbf16ps included). The bound is 1.5%, and
// mean |Δ log-softmax| ≤ 0.02 nats: a missing widening, a wrong panel layout or bf16 arithmetic
// breaks both by far; f32 and bf16 must also differ (the rounding is really applied).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { preset } from '../src/model/presets.js';
import { createModel, type Model } from '../src/model/model.js';
import { Engine } from '../src/infer/engine.js';
import { ModelRunner, type WorkMeter } from '../src/infer/runner.js';
import { PagedKVPool } from '../src/infer/kv-pool.js';
import { headDim } from '../src/model/config.js';
import { startServer } from '../src/serve/server.js';
import { ArgumentError } from '../src/errors.js';
import type { StorageDtype } from '../src/backend/bf16.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function runner(model: Model, dtype: StorageDtype): ModelRunner {
  const c = model.config;
  return new ModelRunner(model, new PagedKVPool(256, 4, c.num_key_value_heads * headDim(c), dtype));
}

/** Every prompt position's logits (n, V) through the runner's prefill, then 3 decoding steps' last logits. */
function promptLogits(model: Model, dtype: StorageDtype, ids: Int32Array): Float32Array {
  const r = runner(model, dtype);
  const seq = r.newSequence();
  const control = { maxDepth: r.numRecursions, threshold: model.config.mor?.threshold ?? 0.5, exitConfidence: null };
  return r.prefill(seq, ids, control, true).logits;
}

function logSoftmaxRows(x: Float32Array, V: number): Float64Array {
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length / V; i++) {
    let max = -Infinity;
    for (let j = 0; j < V; j++) max = Math.max(max, x[i * V + j] as number);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp((x[i * V + j] as number) - max);
    const lse = max + Math.log(s);
    for (let j = 0; j < V; j++) out[i * V + j] = (x[i * V + j] as number) - lse;
  }
  return out;
}

async function generate(engine: Engine, prompts: Int32Array[], maxTokens: number): Promise<number[][]> {
  const handles = prompts.map((p) => engine.submit(p, { maxTokens, temperature: 0 }));
  await engine.runUntilIdle();
  return Promise.all(handles.map(async (h) => (await h.result).tokens));
}

const MODELS = ['tiny', 'tiny-rec3', 'tiny-mor3', 'tiny-mor3-token', 'tiny-mor3-kvshare', 'tiny-mor3-cycle', 'tiny-moe', 'tiny-mor3-moe', 'tiny-mod'];

for (const backendName of availableBackends()) {
  describe(`engine with bf16 weights and K/V on ${backendName}`, () => {
    for (const name of MODELS) {
      test(`${name}: bf16 logits close to f32 (1.5% of max |logit|, mean |Δ log p| ≤ 0.02)`, () => {
        setBackend(backendName);
        const model = createModel(preset(name), 21);
        const ids = Int32Array.from({ length: 23 }, (_, i) => (i * 37 + 5) % model.config.vocab_size);
        const f = promptLogits(model, 'f32', ids);
        const b = promptLogits(model, 'bf16', ids);
        assert.equal(b.length, f.length);
        let scale = 0;
        let maxDiff = 0;
        for (let i = 0; i < f.length; i++) {
          scale = Math.max(scale, Math.abs(f[i] as number));
          maxDiff = Math.max(maxDiff, Math.abs((b[i] as number) - (f[i] as number)));
        }
        assert.ok(maxDiff > 0, 'bf16 rounding changes the logits');
        assert.ok(maxDiff <= 0.015 * scale, `max |Δlogit| ${maxDiff.toExponential(2)} > 1.5% of ${scale.toExponential(2)}`);
        const V = model.config.vocab_size;
        const lf = logSoftmaxRows(f, V);
        const lb = logSoftmaxRows(b, V);
        let mean = 0;
        for (let i = 0; i < lf.length; i++) mean += Math.abs((lb[i] as number) - (lf[i] as number));
        mean /= lf.length;
        assert.ok(mean <= 0.02, `mean |Δ log p| ${mean.toExponential(2)} > 0.02`);
      });
    }

    test('bf16 generation in every batching mode: same tokens alone and among others, memory returned', async () => {
      setBackend(backendName);
      const model = createModel(preset('tiny-mor3'), 5);
      const prompts = [Int32Array.from([3, 141, 59, 265, 35]), Int32Array.from([7, 8, 9]), Int32Array.from([300, 2, 51, 4, 4, 4, 9])];
      const alone = await generate(new Engine(model, { maxBatch: 1, dtype: 'bf16' }), [prompts[0] as Int32Array], 8);
      for (const batching of ['depth', 'sequence', 'static'] as const) {
        const engine = new Engine(model, { maxBatch: 4, batching, blockSize: 4, dtype: 'bf16' });
        assert.ok(engine.runner.pool.kPool instanceof Uint16Array, 'the pool is bf16');
        const got = await generate(engine, prompts, 8);
        got.forEach((t) => assert.equal(t.length, 8, batching));
        assert.deepEqual(got[0], alone[0], `${batching}: batching does not change a request`);
        assert.equal(engine.kvBytes, 0, `${batching}: memory returned`);
      }
    });

    test('f32 stays the default and bit-for-bit what it was (dtype f32 = no dtype)', async () => {
      setBackend(backendName);
      const model = createModel(preset('tiny-mor3'), 6);
      const p = [Int32Array.from([11, 12, 13, 14])];
      const def = new Engine(model, { maxBatch: 2 });
      assert.ok(def.runner.pool.kPool instanceof Float32Array);
      assert.deepEqual(await generate(def, p, 6), await generate(new Engine(model, { maxBatch: 2, dtype: 'f32' }), p, 6));
    });
  });
}

describe('bf16 accounting and errors', () => {
  test('a bf16 pool holds 2 bytes per K/V value; the WorkMeter counts 2 bytes per weight and K/V element', () => {
    const model = createModel(preset('tiny-mor3'), 3);
    const c = model.config;
    const row = c.num_key_value_heads * headDim(c);
    const f = new PagedKVPool(4, 8, row, 'f32');
    const b = new PagedKVPool(4, 8, row, 'bf16');
    assert.equal(f.bytesPerBlock, 8 * (2 * row * 4 + 8));
    assert.equal(b.bytesPerBlock, 8 * (2 * row * 2 + 8));
    const bytes = (dtype: StorageDtype): { weights: number; kv: number } => {
      const r = runner(model, dtype);
      const m = { weights: 0, kv: 0 };
      const meter: WorkMeter = { call: (_lf, wb, _af, kb) => ((m.weights += wb), (m.kv += kb)) };
      r.meter = meter;
      r.prefill(r.newSequence(), Int32Array.from([1, 2, 3, 4, 5]), { maxDepth: r.numRecursions, threshold: 0.5, exitConfidence: null });
      return m;
    };
    const bf = bytes('bf16');
    const ff = bytes('f32');
    assert.ok(ff.weights > 0 && ff.kv > 0);
    assert.equal(bf.weights * 2, ff.weights);
    assert.equal(bf.kv * 2, ff.kv);
  });

  test('a bad dtype is an ArgumentError naming the option (Engine, KV pool, server)', async () => {
    const model = createModel(preset('tiny'), 1);
    assert.throws(() => new Engine(model, { dtype: 'fp16' as StorageDtype }), (e: unknown) => e instanceof ArgumentError && /dtype must be 'f32' or 'bf16', got 'fp16'/.test(e.message));
    assert.throws(() => new PagedKVPool(1, 4, 8, 'f16' as StorageDtype), ArgumentError);
    await assert.rejects(startServer({ modelDir: '.', port: 0, dtype: 'int8' as StorageDtype }), (e: unknown) => e instanceof ArgumentError && /dtype/.test(e.message));
  });

  test('the CLI rejects a bad --dtype on generate, eval and serve with a message naming it', () => {
    for (const cmd of [['generate', '--model', '/nonexistent', '--dtype', 'fp16'], ['eval', '--model', '/nonexistent', '--dtype', 'fp16'], ['serve', '--model', '.', '--dtype', 'fp16']]) {
      const r = spawnSync(process.execPath, [BIN, ...cmd], { encoding: 'utf8', timeout: 60_000 });
      assert.notEqual(r.status, 0, cmd.join(' '));
      assert.match(r.stderr, /--dtype must be 'f32' or 'bf16', got 'fp16'/, `${cmd[0]}: ${r.stderr}`);
    }
  });
});
