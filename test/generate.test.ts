// Generation APIs over the engine: generate(), generateText() with stop strings and streaming,
// test-time depth limits, early exit for plain recursive models; the sampler's options.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { preset } from '../src/model/presets.js';
import { createModel } from '../src/model/model.js';
import { generate, generateText, type TextCodec } from '../src/infer/generate.js';
import { Engine } from '../src/infer/engine.js';
import { bestIds, sampleToken } from '../src/infer/sampler.js';
import { Rng } from '../src/util/rng.js';
import { ArgumentError } from '../src/errors.js';

/** A toy codec: id i ↔ letter 'a' + i mod 26 (ids ≥ 26 decode to letters too). */
const codec: TextCodec = {
  encode: (s) => Int32Array.from(s, (ch) => (ch.charCodeAt(0) - 97 + 26) % 26),
  decode: (ids) => Array.from(ids as ArrayLike<number>, (i) => String.fromCharCode(97 + (i % 26))).join(''),
  eosId: 511,
  vocabSize: 26,
};

describe('generation', () => {
  test('generate: greedy is deterministic and reports depths', async () => {
    const model = createModel(preset('tiny-mor3'), 2);
    const a = await generate(model, Int32Array.of(1, 2, 3), { maxTokens: 6, temperature: 0 });
    const b = await generate(model, Int32Array.of(1, 2, 3), { maxTokens: 6, temperature: 0 });
    assert.deepEqual(a.tokens, b.tokens);
    assert.equal(a.tokens.length, 6);
    assert.equal(a.depths.length, 6);
    assert.ok(a.depths.every((d) => d >= 1 && d <= 3));
    const streamed: number[] = [];
    await generate(model, Int32Array.of(1, 2, 3), { maxTokens: 6, temperature: 0, onToken: (t) => streamed.push(t) });
    assert.deepEqual(streamed, a.tokens);
  });

  test('generateText: stop strings cut the text; streamed pieces add up to it', async () => {
    const model = createModel(preset('tiny-rec2'), 5);
    const engine = new Engine(model, { maxBatch: 2 });
    const free = await generateText(engine, codec, 'hello', { maxTokens: 12, temperature: 0 });
    assert.equal(free.text.length, 12);
    const stopAt = free.text.slice(4, 6);
    const pieces: string[] = [];
    const cut = await generateText(engine, codec, 'hello', { maxTokens: 12, temperature: 0, stop: [stopAt], onText: (p) => pieces.push(p) });
    assert.equal(cut.finishReason, 'stop');
    assert.equal(cut.text, free.text.slice(0, free.text.indexOf(stopAt)));
    assert.equal(pieces.join(''), cut.text);
    await assert.rejects(generateText(engine, codec, 'x', { maxTokens: 2, stop: [''] }), ArgumentError);
  });

  test('test-time scaling: a lower max depth caps every token; the threshold moves depth', async () => {
    const model = createModel(preset('tiny-mor4'), 3);
    const deep = await generate(model, Int32Array.of(4, 5, 6, 7), { maxTokens: 20, temperature: 0 });
    const shallow = await generate(model, Int32Array.of(4, 5, 6, 7), { maxTokens: 20, temperature: 0, maxDepth: 1 });
    assert.ok(shallow.depths.every((d) => d === 1));
    const mean = (x: number[]) => x.reduce((a, b) => a + b, 0) / x.length;
    const loose = await generate(model, Int32Array.of(4, 5, 6, 7), { maxTokens: 20, temperature: 0, threshold: 0.01 });
    const strict = await generate(model, Int32Array.of(4, 5, 6, 7), { maxTokens: 20, temperature: 0, threshold: 0.99 });
    assert.ok(mean(loose.depths) > mean(strict.depths), `${mean(loose.depths)} vs ${mean(strict.depths)}`);
    assert.equal(mean(loose.depths), 4);
    assert.equal(mean(strict.depths), 1);
    assert.ok(mean(deep.depths) >= 1);
    await assert.rejects(generate(model, Int32Array.of(1), { maxTokens: 2, maxDepth: 5 }), ArgumentError);
  });

  test('early exit for a plain recursive model: a low confidence bar exits after one recursion', async () => {
    const model = createModel(preset('tiny-rec3'), 7);
    const engine = new Engine(model, { maxBatch: 1, exitConfidence: 0 });
    const h = engine.submit(Int32Array.of(1, 2), { maxTokens: 5, temperature: 0 });
    await engine.runUntilIdle();
    assert.ok((await h.result).depths.slice(1).every((d) => d === 1));
    const never = new Engine(model, { maxBatch: 1, exitConfidence: 1.01 });
    const h2 = never.submit(Int32Array.of(1, 2), { maxTokens: 5, temperature: 0 });
    await never.runUntilIdle();
    assert.ok((await h2.result).depths.slice(1).every((d) => d === 3));
  });

  test('bad requests are ArgumentErrors', async () => {
    const model = createModel(preset('tiny'), 1);
    await assert.rejects(generate(model, Int32Array.of(1), { maxTokens: 2, temperature: -1 }), ArgumentError);
    await assert.rejects(generate(model, Int32Array.of(1), { maxTokens: 2, topP: 0 }), ArgumentError);
    await assert.rejects(generate(model, new Int32Array(0), { maxTokens: 2 }), ArgumentError);
    await assert.rejects(generate(model, Int32Array.of(1), { maxTokens: 0 }), ArgumentError);
    await assert.rejects(generate(model, new Int32Array(200), { maxTokens: 2 }), /leaves no room in the context/);
  });
});

describe('sampler', () => {
  const logits = Float32Array.from([1, 3, 2, 0.5, -1]);
  test('greedy, top-k, top-p, seeds, repetition penalty', () => {
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
    for (let i = 0; i < 50; i++) assert.equal(sampleToken(logits, { topP: 0.5 }, rng), 1);
    const a = Array.from({ length: 20 }, (_, i) => sampleToken(logits, { temperature: 1.5 }, new Rng(i)));
    const b = Array.from({ length: 20 }, (_, i) => sampleToken(logits, { temperature: 1.5 }, new Rng(i)));
    assert.deepEqual(a, b);
    assert.equal(sampleToken(logits, { temperature: 0, repetitionPenalty: 2 }, rng, [1]), 2);
  });

  // The candidate cuts sort only the best few ids; they must pick exactly what sorting the whole
  // vocabulary picks. Reference: the definition (full sort by logit, ties by id; top-k; nucleus).
  function reference(x: Float32Array, o: { temperature: number; topK?: number; topP?: number }, rng: Rng): number {
    let order = Array.from({ length: x.length }, (_, i) => i).sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
    if (o.topK) order = order.slice(0, o.topK);
    const probs = order.map((id) => Math.exp(((x[id] as number) - (x[order[0] as number] as number)) / o.temperature));
    let total = probs.reduce((a, b) => a + b, 0);
    if ((o.topP ?? 1) < 1) {
      let acc = 0;
      let keep = 0;
      while (keep < probs.length) {
        acc += (probs[keep] as number) / total;
        keep++;
        if (acc >= (o.topP as number)) break;
      }
      order = order.slice(0, keep);
      probs.length = keep;
      total = probs.reduce((a, b) => a + b, 0);
    }
    let r = rng.next() * total;
    for (let i = 0; i < probs.length; i++) {
      r -= probs[i] as number;
      if (r < 0) return order[i] as number;
    }
    return order[order.length - 1] as number;
  }

  test('top-k and top-p over a large vocabulary pick what a full sort picks (ties included)', () => {
    const rng = new Rng(9);
    for (let trial = 0; trial < 60; trial++) {
      const V = 300 + trial * 37;
      // rounded logits make ties; a few large ones make small nuclei, flat ones large
      const spread = trial % 3 === 0 ? 0.2 : 4;
      const x = Float32Array.from({ length: V }, () => Math.round(rng.next() * spread * 8) / 8);
      const k = 1 + (trial % 50);
      const full = Array.from({ length: V }, (_, i) => i).sort((a, b) => (x[b] as number) - (x[a] as number) || a - b);
      assert.deepEqual(Array.from(bestIds(x, k)), full.slice(0, k));
      for (const o of [{ temperature: 0.7, topK: k }, { temperature: 1, topP: 0.9 }, { temperature: 1.3, topK: 3 * k, topP: 0.6 }, { temperature: 1, topP: 0.999 }]) {
        for (let seed = 0; seed < 3; seed++) {
          assert.equal(sampleToken(x, o, new Rng(seed + 100 * trial)), reference(x, o, new Rng(seed + 100 * trial)), `trial ${trial} ${JSON.stringify(o)}`);
        }
      }
    }
  });
});
