// One routing module for training and inference: its decisions, every sharing strategy decoding
// through the engine exactly as the training forward computes, test-time depth and threshold
// agreeing between the two paths, and the engine's defaults and typed option errors.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { ArgumentError } from '../src/errors.js';
import { preset } from '../src/model/presets.js';
import { validateConfig, type ModelConfig } from '../src/model/config.js';
import { createModel, forward, type Model } from '../src/model/model.js';
import { layerPlan } from '../src/model/sharing.js';
import { continuesAt, expertKeeps, thresholdLogit, tokenChoiceDepths } from '../src/model/routing.js';
import { noGrad } from '../src/tensor/tensor.js';
import { Engine, type RequestOptions } from '../src/infer/engine.js';
import { Rng } from '../src/util/rng.js';

function argmax(x: Float32Array, from: number, len: number): number {
  let best = 0;
  for (let i = 1; i < len; i++) if ((x[from + i] as number) > (x[from + best] as number)) best = i;
  return best;
}

/** Greedy continuation by the training forward in causal routing mode, at a test-time depth/threshold. */
function forwardGreedy(model: Model, prompt: Int32Array, n: number, opts: { maxDepth?: number; threshold?: number } = {}): number[] {
  const seq = Array.from(prompt);
  const V = model.config.vocab_size;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const logits = noGrad(() => forward(model, Int32Array.from(seq), 1, undefined, { routing: 'causal', ...opts }).logits.f32());
    const t = argmax(logits, (seq.length - 1) * V, V);
    out.push(t);
    seq.push(t);
  }
  return out;
}

async function engineGreedy(engine: Engine, prompt: Int32Array, n: number, extra: Partial<RequestOptions> = {}): Promise<{ tokens: number[]; depths: number[] }> {
  const h = engine.submit(prompt, { maxTokens: n, temperature: 0, ...extra });
  await engine.runUntilIdle();
  return h.result;
}

/** tiny-rec3's dimensions with another sharing strategy and depth (and optional LoRA). */
function sharingConfig(sharing: 'cycle' | 'sequence' | 'middle_cycle' | 'middle_sequence', layers: number, loraRank = 0): ModelConfig {
  const base = preset('tiny-rec3');
  return validateConfig({ ...base, num_hidden_layers: layers, recursion: { ...base.recursion, sharing, lora_rank: loraRank } });
}

describe('routing decisions', () => {
  test('the keep-going test in logit form equals sigmoid(z) > threshold', () => {
    const rng = new Rng(5);
    for (const th of [0.1, 0.5, 0.73, 0.9]) {
      const zt = thresholdLogit(th);
      for (let i = 0; i < 500; i++) {
        const z = 6 * rng.normal();
        assert.equal(continuesAt(z, zt), 1 / (1 + Math.exp(-z)) > th, `z ${z} th ${th}`);
      }
    }
    assert.equal(continuesAt(-1e9, thresholdLogit(0)), true);
    assert.equal(continuesAt(1e9, thresholdLogit(1)), false);
  });

  test('expertKeeps: capacity 1 takes every candidate; otherwise each candidate its own threshold', () => {
    const m = preset('tiny-mor3').mor;
    assert.ok(m);
    const z = Float32Array.of(-2, 0.1, 3);
    assert.deepEqual(Array.from(expertKeeps(m, 3, 0, z, 0.99)), [1, 1, 1], 'recursion 1 has capacity 1');
    assert.deepEqual(Array.from(expertKeeps(m, 3, 1, z, 0.5)), [0, 1, 1]);
    assert.deepEqual(Array.from(expertKeeps(m, 3, 1, z, [0.01, 0.9, 0.9])), [1, 0, 1]);
  });

  test('tokenChoiceDepths: argmax of p + bias, the bias steering the choice', () => {
    const p = Float32Array.of(0.6, 0.3, 0.1, 0.2, 0.2, 0.6);
    assert.deepEqual(Array.from(tokenChoiceDepths(p, 3, null)), [0, 2]);
    assert.deepEqual(Array.from(tokenChoiceDepths(p, 3, Float32Array.of(0, 0.5, 0))), [1, 1]);
  });

  test('depth steps: cycle strategies step through the block, sequence strategies take one step', () => {
    const steps = (s: Parameters<typeof sharingConfig>[0], L: number) => layerPlan(sharingConfig(s, L)).depthSteps.map((x) => Array.from(x));
    assert.deepEqual(steps('cycle', 6), [[0, 1], [2, 3], [4, 5]]);
    assert.deepEqual(steps('middle_cycle', 8), [[1, 2], [3, 4], [5, 6]]);
    assert.deepEqual(steps('sequence', 6), [[0, 1, 2, 3, 4, 5]]);
    assert.deepEqual(steps('middle_sequence', 8), [[1, 2, 3, 4, 5, 6]]);
    assert.deepEqual(layerPlan(preset('tiny')).depthSteps.map((x) => Array.from(x)), [[0, 1, 2, 3]]);
  });
});

for (const backendName of availableBackends()) {
  describe(`routing through the engine on ${backendName}`, () => {
    const prompt = Int32Array.from([3, 141, 59, 265, 35, 89]);

    for (const [sharing, layers] of [['cycle', 6], ['sequence', 6], ['middle_cycle', 8], ['middle_sequence', 8]] as const) {
      test(`${sharing} sharing decodes: greedy engine output = training forward argmax (plain and with LoRA)`, async () => {
        setBackend(backendName);
        for (const rank of [0, 4]) {
          const model = createModel(sharingConfig(sharing, layers, rank), 13);
          if (rank > 0) {
            const rng = new Rng(2); // LoRA B starts at zero: give it values so a wrong position's LoRA shows
            for (const [name, t] of model.params.byName) if (name.endsWith('lora_B')) for (let i = 0; i < t.size; i++) t.f32()[i] = 0.05 * rng.normal();
          }
          const expected = forwardGreedy(model, prompt, 8);
          for (const batching of ['depth', 'sequence'] as const) {
            const engine = new Engine(model, { maxBatch: 2, batching, blockSize: 4 });
            const { tokens } = await engineGreedy(engine, prompt, 8);
            assert.deepEqual(tokens, expected, `${sharing} rank ${rank} ${batching}`);
            assert.equal(engine.kvBytes, 0);
          }
        }
      });
    }

    test('test-time depth and threshold mean the same in the training forward and the engine', async () => {
      setBackend(backendName);
      for (const name of ['tiny-mor3', 'tiny-mor3-token', 'tiny-rec3']) {
        const model = createModel(preset(name), 6);
        const engine = new Engine(model, { maxBatch: 1 });
        for (const maxDepth of [1, 2, 3]) {
          const { tokens, depths } = await engineGreedy(engine, prompt, 6, { maxDepth });
          assert.deepEqual(tokens, forwardGreedy(model, prompt, 6, { maxDepth }), `${name} maxDepth ${maxDepth}`);
          assert.ok(depths.every((d) => d <= maxDepth));
        }
      }
      const mor = createModel(preset('tiny-mor3'), 6);
      const engine = new Engine(mor, { maxBatch: 1 });
      for (const threshold of [0.2, 0.5, 0.8]) {
        const { tokens } = await engineGreedy(engine, prompt, 6, { threshold });
        assert.deepEqual(tokens, forwardGreedy(mor, prompt, 6, { threshold }), `threshold ${threshold}`);
      }
    });
  });
}

describe('engine options', () => {
  test('new Engine(model) works with documented defaults', async () => {
    const model = createModel(preset('tiny-mor3'), 1);
    const engine = new Engine(model);
    assert.equal(engine.maxBatch, 8);
    assert.equal(engine.batching, 'depth');
    assert.equal(engine.exitConfidence, null);
    const { tokens } = await engineGreedy(engine, Int32Array.of(1, 2, 3), 3);
    assert.equal(tokens.length, 3);
  });

  test('bad options are ArgumentErrors naming the option', () => {
    const model = createModel(preset('tiny'), 1);
    assert.throws(() => new Engine(model, { maxBatch: 0 }), (e: unknown) => e instanceof ArgumentError && /maxBatch/.test(e.message));
    assert.throws(() => new Engine(model, { blockSize: 1.5 }), (e: unknown) => e instanceof ArgumentError && /blockSize/.test(e.message));
    assert.throws(() => new Engine(model, { batching: 'wide' as never }), (e: unknown) => e instanceof ArgumentError && /batching/.test(e.message));
    assert.throws(() => new Engine(model, { exitConfidence: -1 }), (e: unknown) => e instanceof ArgumentError && /exitConfidence/.test(e.message));
    assert.throws(() => new Engine(undefined as unknown as Model), ArgumentError);
    const engine = new Engine(model);
    assert.throws(() => engine.submit(Int32Array.of(1), { maxTokens: 2, threshold: 2 }), (e: unknown) => e instanceof ArgumentError && /threshold/.test(e.message));
    assert.throws(() => engine.submit(Int32Array.of(1), { maxTokens: 2, exitConfidence: Number.NaN }), (e: unknown) => e instanceof ArgumentError && /exitConfidence/.test(e.message));
  });

  test("a request's exitConfidence drives early exit on a plain recursive model", async () => {
    const model = createModel(preset('tiny-rec3'), 7);
    const engine = new Engine(model, { maxBatch: 1 });
    const full = await engineGreedy(engine, Int32Array.of(1, 2), 5);
    assert.ok(full.depths.every((d) => d === 3), 'no early exit by default');
    const early = await engineGreedy(engine, Int32Array.of(1, 2), 5, { exitConfidence: 0 });
    assert.ok(early.depths.every((d) => d === 1), 'a zero bar exits after the first recursion');
    const overrides = new Engine(model, { maxBatch: 1, exitConfidence: 0 });
    const deep = await engineGreedy(overrides, Int32Array.of(1, 2), 5, { exitConfidence: 1.01 });
    assert.ok(deep.depths.every((d) => d === 3), 'the request overrides the engine default');
  });
});
