// Model config, presets, sharing plans, parameter table, FLOPs accounting, schedules and
// checkpoints (including corrupted ones).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, truncateSync, statSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, validateConfig, preset, PRESET_NAMES, layerPlan, countParams, createModel, forward, paramTable } from '../src/model/index.js';
import { forwardFlopsPerToken, linearParamsPerLayer } from '../src/model/flops.js';
import { learningRate } from '../src/train/schedule.js';
import { saveCheckpoint, loadCheckpoint, CheckpointError } from '../src/train/checkpoint.js';
import { createOptimizer } from '../src/train/trainer.js';
import { backward } from '../src/tensor/tensor.js';
import { withTempDir } from './helpers/temp-dir.js';

describe('config', () => {
  test('presets validate and have the documented shapes', () => {
    for (const name of PRESET_NAMES) assert.doesNotThrow(() => preset(name), name);
    const small = preset('small');
    assert.equal(small.hidden_size, 256);
    assert.equal(small.num_hidden_layers, 12);
    assert.equal(preset('small-rec2').num_hidden_layers, 12);
    assert.equal(preset('small-rec3').num_hidden_layers, 14);
    assert.equal(preset('small-rec4').num_hidden_layers, 14);
    assert.equal(preset('tiny-rec3').num_hidden_layers, 5);
    // ≈ 11M parameters for `small`
    const n = countParams(small).unique;
    assert.ok(n > 10e6 && n < 12e6, `small has ${n} parameters`);
  });

  test('clear errors for bad configs', () => {
    const bad: Array<[object, RegExp]> = [
      [{ hidden_sizee: 64 }, /unknown config key 'hidden_sizee'/],
      [{ hidden_size: 64, num_attention_heads: 5 }, /must divide hidden_size/],
      [{ num_attention_heads: 4, num_key_value_heads: 3, hidden_size: 64 }, /must divide num_attention_heads/],
      [{ num_hidden_layers: 12, recursion: { num_recursions: 3, sharing: 'middle_cycle' } }, /cannot be tiled.*nearest tileable depth is 14/],
      [{ recursion: { num_recursions: 2, sharing: 'diagonal' } }, /recursion.sharing must be one of/],
      [{ recursion: { num_recursions: 2, colour: 1 } }, /unknown key 'recursion.colour'/],
      [{ vocab_size: -3 }, /vocab_size must be a positive integer/],
    ];
    for (const [cfg, re] of bad) assert.throws(() => validateConfig(cfg), (e: unknown) => e instanceof ConfigError && re.test(e.message), JSON.stringify(cfg));
    assert.throws(() => preset('huge'), /unknown preset 'huge'/);
  });
});

describe('sharing', () => {
  test('plans match MOR_SPEC §2', () => {
    const base = { hidden_size: 64, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 32, intermediate_size: 32 };
    const plan = (L: number, nr: number, sharing: string) =>
      Array.from(layerPlan(validateConfig({ ...base, num_hidden_layers: L, recursion: { num_recursions: nr, sharing } })).uniqueOf);
    assert.deepEqual(plan(6, 3, 'cycle'), [0, 1, 0, 1, 0, 1]);
    assert.deepEqual(plan(6, 3, 'sequence'), [0, 0, 0, 1, 1, 1]);
    assert.deepEqual(plan(8, 3, 'middle_cycle'), [0, 1, 2, 1, 2, 1, 2, 3]);
    assert.deepEqual(plan(8, 3, 'middle_sequence'), [0, 1, 1, 1, 2, 2, 2, 3]);
  });

  test('shared layers are one tensor, stored once', () => {
    const cfg = preset('tiny-rec3'); // 1 + 1×3 + 1
    const model = createModel(cfg, 0);
    assert.equal(model.params.layers.length, 3);
    assert.deepEqual(Array.from(model.plan.uniqueOf), [0, 1, 1, 1, 2]);
    const names = paramTable(cfg).map((s) => s.name);
    assert.equal(new Set(names).size, names.length);
    assert.ok(!names.some((n) => n.startsWith('model.layers.3.')));
    const counts = countParams(cfg);
    assert.ok(counts.effective > counts.unique);
  });
});

describe('FLOPs accounting', () => {
  test('forward FLOPs per token follow 2·params + causal attention', () => {
    const c = preset('small');
    const T = 256;
    const expected = 2 * (12 * linearParamsPerLayer(c) + 8192 * 256) + (12 * 2 * 2 * ((T * (T + 1)) / 2) * 64 * 4) / T;
    assert.ok(Math.abs(forwardFlopsPerToken(c, T) - expected) < 1e-6 * expected);
    // 7 matrices of the small layer: q,o 256², k,v 256·128, gate/up/down 256·704
    assert.equal(linearParamsPerLayer(c), 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 704);
  });
});

describe('schedules', () => {
  test('wsd: warmup, flat, linear decay over the last 20%', () => {
    const s = { kind: 'wsd' as const, peakLr: 1, totalSteps: 100, warmupSteps: 10 };
    assert.equal(learningRate(s, 0), 0.1);
    assert.equal(learningRate(s, 9), 1);
    assert.equal(learningRate(s, 50), 1);
    assert.equal(learningRate(s, 79), 1);
    assert.ok(Math.abs(learningRate(s, 90) - 0.5) < 1e-12);
    assert.ok(learningRate(s, 99) > 0 && learningRate(s, 99) <= 0.05 + 1e-12);
  });
  test('cosine ends at minRatio of the peak', () => {
    const s = { kind: 'cosine' as const, peakLr: 2, totalSteps: 50, warmupSteps: 0, minRatio: 0.1 };
    assert.equal(learningRate(s, 0), 2);
    assert.ok(Math.abs(learningRate(s, 50) - 0.2) < 1e-12);
    assert.ok(Math.abs(learningRate(s, 25) - 1.1) < 1e-12);
  });
});

describe('checkpoints', () => {
  const cfg = preset('tiny-rec2');
  const ids = Int32Array.from({ length: 32 }, (_, i) => (i * 37) % cfg.vocab_size);

  test('save → load round-trips weights, optimiser state and trainer state', () =>
    withTempDir('mor-ckpt-', async (root) => {
      const dir = join(root, 'ckpt');
      const model = createModel(cfg, 3);
      const opt = createOptimizer(model);
      const { loss } = forward(model, ids, 2, ids);
      assert.ok(loss);
      backward(loss);
      opt.step(1e-3);
      saveCheckpoint(dir, model, { optimizer: opt, trainerState: { step: 1, note: 'x' }, tokenizer: { model: { type: 'BPE' } } });
      // saving again replaces the directory atomically (no temp dirs left behind)
      saveCheckpoint(dir, model, { optimizer: opt, trainerState: { step: 1, note: 'x' } });
      assert.deepEqual(readdirSync(join(dir, '..')), ['ckpt']);
      const loaded = await loadCheckpoint(dir);
      assert.deepEqual(loaded.model.config, model.config);
      for (const s of model.params.specs) {
        assert.deepEqual(loaded.model.params.byName.get(s.name)?.f32(), model.params.byName.get(s.name)?.f32(), s.name);
      }
      assert.deepEqual(loaded.trainerState, { step: 1, note: 'x' });
      const st = loaded.optimizerState?.get('model.norm.weight');
      assert.equal(st?.step, 1);
      const a = forward(model, ids, 2).logits.f32();
      const b = forward(loaded.model, ids, 2).logits.f32();
      assert.deepEqual(a, b);
  }));

  test('truncated, corrupted or mismatched checkpoints give CheckpointError', () =>
    withTempDir('mor-ckpt-', async (root) => {
      const dir = join(root, 'ckpt');
      saveCheckpoint(dir, createModel(cfg, 1));
      const weights = join(dir, 'model.safetensors');
      const original = readFileSync(weights);

      truncateSync(weights, statSync(weights).size - 100);
      await assert.rejects(loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /truncated or corrupt/.test(e.message));

      writeFileSync(weights, Buffer.concat([original.subarray(0, 8), Buffer.from('{not json'), original.subarray(17)]));
      await assert.rejects(loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /not valid JSON/.test(e.message));

      writeFileSync(weights, original);
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, hidden_size: 128 }));
      await assert.rejects(loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /does not match config.json/.test(e.message));

      writeFileSync(join(dir, 'config.json'), '{"hidden_size": ');
      await assert.rejects(loadCheckpoint(dir), (e: unknown) => e instanceof CheckpointError && /config.json is not valid JSON/.test(e.message));

      await assert.rejects(loadCheckpoint(join(dir, 'nope')), CheckpointError);
      assert.ok(existsSync(weights));
  }));
});
