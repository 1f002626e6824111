// KV-cached decoding agrees with the training forward; the sampler honours its options.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { preset } from '../src/model/presets.js';
import { createModel, forward } from '../src/model/model.js';
import { noGrad } from '../src/tensor/tensor.js';
import { SequenceKVCache, generate, stepWithCache } from '../src/infer/generate.js';
import { sampleToken } from '../src/infer/sampler.js';
import { Rng } from '../src/util/rng.js';
import { ArgumentError } from '../src/errors.js';

function argmaxRow(x: Float32Array, row: number, V: number): number {
  let best = 0;
  for (let i = 1; i < V; i++) if ((x[row * V + i] as number) > (x[row * V + best] as number)) best = i;
  return best;
}

for (const backendName of availableBackends()) {
  describe(`generation on ${backendName}`, () => {
    for (const name of ['tiny', 'tiny-rec3']) {
      test(`${name}: cached step logits equal the full forward; greedy = argmax path`, () => {
        setBackend(backendName);
        const model = createModel(preset(name), 11);
        const V = model.config.vocab_size;
        const prompt = Int32Array.from([5, 17, 300, 42, 7]);
        // cached: prefill then one token at a time
        const cache = new SequenceKVCache(model.config, 32);
        const seq = Array.from(prompt);
        const cachedLogits: Float32Array[] = [stepWithCache(model, cache, prompt)];
        for (const id of [9, 99, 199]) {
          seq.push(id);
          cachedLogits.push(stepWithCache(model, cache, Int32Array.of(id)));
        }
        const full = noGrad(() => forward(model, Int32Array.from(seq), 1).logits.f32());
        cachedLogits.forEach((row, i) => {
          const r = prompt.length - 1 + i;
          const ref = full.subarray(r * V, (r + 1) * V);
          let err = 0;
          let scale = 0;
          for (let j = 0; j < V; j++) {
            err = Math.max(err, Math.abs((row[j] as number) - (ref[j] as number)));
            scale = Math.max(scale, Math.abs(ref[j] as number));
          }
          assert.ok(err <= 1e-4 * scale, `row ${r}: max err ${err} (scale ${scale})`);
        });
        // greedy generation follows the training forward's argmax
        const g = generate(model, prompt, { maxTokens: 8, temperature: 0 });
        const all = Int32Array.from([...prompt, ...g.tokens]);
        const logits = noGrad(() => forward(model, all, 1).logits.f32());
        g.tokens.forEach((t, i) => assert.equal(t, argmaxRow(logits, prompt.length - 1 + i, V), `token ${i}`));
      });
    }
  });
}

describe('sampler', () => {
  const logits = Float32Array.from([1, 3, 2, 0.5, -1]);
  test('greedy, top-k, top-p, seeds', () => {
    assert.equal(sampleToken(logits, { temperature: 0 }, new Rng(1)), 1);
    const counts = new Map<number, number>();
    const rng = new Rng(2);
    for (let i = 0; i < 2000; i++) {
      const t = sampleToken(logits, { temperature: 1, topK: 2 }, rng);
      counts.set(t, (counts.get(t) ?? 0) + 1);
    }
    assert.deepEqual([...counts.keys()].sort(), [1, 2]);
    // p(1) = e^3/(e^3+e^2) ≈ 0.731
    assert.ok(Math.abs((counts.get(1) ?? 0) / 2000 - 0.731) < 0.04);
    // top-p 0.5 keeps only the most likely token here
    for (let i = 0; i < 50; i++) assert.equal(sampleToken(logits, { topP: 0.5 }, rng), 1);
    // the same seed gives the same draws
    const a = Array.from({ length: 20 }, (_, i) => sampleToken(logits, { temperature: 1.5 }, new Rng(i)));
    const b = Array.from({ length: 20 }, (_, i) => sampleToken(logits, { temperature: 1.5 }, new Rng(i)));
    assert.deepEqual(a, b);
    // repetition penalty can move greedy off a repeated token
    assert.equal(sampleToken(logits, { temperature: 0, repetitionPenalty: 2 }, rng, [1]), 2);
  });
  test('bad options are ArgumentErrors', () => {
    const model = createModel(preset('tiny'), 1);
    assert.throws(() => generate(model, Int32Array.of(1), { maxTokens: 2, temperature: -1 }), ArgumentError);
    assert.throws(() => generate(model, Int32Array.of(1), { maxTokens: 2, topP: 0 }), ArgumentError);
    assert.throws(() => generate(model, new Int32Array(0), { maxTokens: 2 }), ArgumentError);
  });
});
