// The run configuration: defaults from one object, frozen, every bad field named.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { ArgumentError } from '../src/errors.js';
import { RUN_DEFAULTS, defaultWarmup, fieldsResumeRefuses, resolveRunConfig, type RunConfigInput } from '../src/train/run-config.js';

function rejects(input: RunConfigInput, message: RegExp): void {
  assert.throws(() => resolveRunConfig(input), (e: unknown) => e instanceof ArgumentError && message.test(e.message));
}

describe('resolveRunConfig', () => {
  test('defaults come from RUN_DEFAULTS; the result is frozen', () => {
    const c = resolveRunConfig({});
    assert.deepEqual(c.budget, { kind: 'steps', value: RUN_DEFAULTS.steps });
    assert.equal(c.batchSize, RUN_DEFAULTS.batchSize);
    assert.equal(c.lr, RUN_DEFAULTS.lr);
    assert.equal(c.schedule, 'wsd');
    assert.equal(c.seqLen, null);
    assert.equal(c.warmup, null);
    assert.equal(c.evalBatches, RUN_DEFAULTS.evalBatches);
    assert.equal(c.outDir, resolve(RUN_DEFAULTS.outDir));
    assert.equal(c.cacheDir, resolve(RUN_DEFAULTS.cacheDir));
    assert.equal(c.overwrite, false);
    assert.ok(Object.isFrozen(c) && Object.isFrozen(c.budget) && Object.isFrozen(c.data) && Object.isFrozen(RUN_DEFAULTS));
    assert.equal(defaultWarmup(200), 10);
    assert.equal(defaultWarmup(3), 1);
  });

  test('given values win; undefined means not given; tokens and FLOPs are budgets', () => {
    const c = resolveRunConfig({ batchSize: 3, steps: undefined, tokens: 1e6, data: ['a/b'], seqLen: 64 });
    assert.deepEqual(c.budget, { kind: 'tokens', value: 1e6 });
    assert.equal(c.batchSize, 3);
    assert.equal(c.seqLen, 64);
    assert.deepEqual(c.data, [resolve('a/b')]);
    assert.deepEqual(resolveRunConfig({ flops: 5e12 }).budget, { kind: 'flops', value: 5e12 });
  });

  test('bad values are ArgumentErrors naming the field, what was expected and what came', () => {
    rejects({ batchSize: 0 }, /'batchSize': expected an integer ≥ 1, got 0/);
    rejects({ seqLen: 1.5 }, /'seqLen': expected an integer ≥ 2, got 1.5/);
    rejects({ lr: Number.NaN }, /'lr': expected a finite number ≥ 0, got NaN/);
    rejects({ tokens: -1 }, /'tokens': expected a finite number > 0, got -1/);
    rejects({ steps: 2, flops: 1e12 }, /give one budget .* got steps and flops/);
    rejects({ schedule: 'linear' as 'wsd' }, /'schedule': expected one of wsd, cosine, constant, got 'linear'/);
    rejects({ valFraction: 1 }, /'valFraction': expected a number in \(0, 1\), got 1/);
    rejects({ outDir: '' }, /'outDir': expected a non-empty string, got ''/);
    rejects({ batch: 4 } as RunConfigInput, /unknown field 'batch'/);
  });

  test('a resumed run may change only its budget (and where caches live)', () => {
    assert.deepEqual(fieldsResumeRefuses({ steps: 10, cacheDir: 'c', outDir: 'o', measureMfu: false }), []);
    assert.deepEqual(fieldsResumeRefuses({ steps: 10, batchSize: 2, lr: 1, seed: undefined, overwrite: true }), ['batchSize', 'lr', 'overwrite']);
  });
});
