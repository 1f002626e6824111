// Training runs end to end on a small corpus: exact resume (N steps straight = N/2, stop,
// resume, N/2), loss goes down, budgets in tokens / FLOPs, clear errors.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runTraining, type TrainRunOptions } from '../src/train/run.js';
import { ArgumentError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { suiteTempDir, withTempDir } from './helpers/temp-dir.js';

const WORDS = ['the', 'state', 'of', 'union', 'congress', 'people', 'nation', 'law', 'we', 'shall', 'peace', 'work', 'and', 'year', 'new'];

function makeCorpus(): string {
  const dir = suiteTempDir('mor-train-corpus-');
  const rng = new Rng(5);
  for (let d = 0; d < 40; d++) {
    const words: string[] = [];
    for (let i = 0; i < 400; i++) words.push(WORDS[rng.nextInt(WORDS.length)] as string);
    writeFileSync(join(dir, `doc${d}.txt`), words.join(' ') + '.\n');
  }
  return dir;
}

const corpus = makeCorpus();
const cacheDir = suiteTempDir('mor-train-cache-');

function base(out: string): TrainRunOptions {
  return {
    preset: 'tiny-rec2',
    data: [corpus],
    outDir: out,
    cacheDir,
    steps: 8,
    batchSize: 4,
    seqLen: 32,
    lr: 1e-2,
    seed: 3,
    evalBatches: 2,
    measureMfu: false,
  };
}

function trainLosses(out: string): number[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; loss: number })
    .filter((m) => m.type === 'train')
    .map((m) => m.loss);
}

describe('training runs', () => {
  test('resume is exact: 8 straight = 4, interrupt, resume 4', () =>
    withTempDir('mor-train-', async (root) => {
      const straight = join(root, 'straight');
      const split = join(root, 'split');
      const a = await runTraining(base(straight));
      assert.equal(a.state.step, 8);
      let steps = 0;
      const first = await runTraining({ ...base(split), onMetrics: (m) => { if (m['type'] === 'train') steps++; }, shouldStop: () => steps >= 4 });
      assert.equal(first.interrupted, true);
      assert.equal(first.state.step, 4);
      const second = await runTraining({ outDir: split, cacheDir, resume: join(split, 'checkpoint'), measureMfu: false });
      assert.equal(second.state.step, 8);
      assert.deepEqual(trainLosses(split), trainLosses(straight));
      // the losses fall on this repetitive text
      const l = trainLosses(straight);
      assert.ok((l.at(-1) as number) < (l[0] as number) - 0.5, `losses ${l.join(', ')}`);
      assert.ok(a.finalEval && Number.isFinite(a.finalEval.nll));
  }));

  test('budgets in tokens and FLOPs become steps; bad budgets are errors', () =>
    withTempDir('mor-train-', async (root) => {
      const byTokens = await runTraining({ ...base(join(root, 't')), steps: undefined as unknown as number, tokens: 3 * 4 * 32 });
      assert.equal(byTokens.state.step, 3);
      await assert.rejects(runTraining({ ...base(join(root, 'x')), tokens: 100 }), ArgumentError);
      await assert.rejects(runTraining({ ...base(join(root, 'y')), seqLen: 4096 }), /exceeds the model's context/);
      mkdirSync(join(root, 'empty'));
      await assert.rejects(runTraining({ ...base(join(root, 'z')), data: [join(root, 'empty')] }), /no|empty/i);
  }));
});
