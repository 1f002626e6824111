// Runs as a user continues them: resume in place, budgets that extend a finished run, refused
// settings, a reused output folder, metrics trimmed after a kill, and compare's default length.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { useCorpusFolder } from './helpers/temp-dir.js';
import { runTraining, trimMetrics, type TrainRunOptions } from '../src/train/run.js';
import { compareSeqLen, meanStd, runComparison } from '../src/train/compare.js';
import { trainFlopsPerToken } from '../src/model/flops.js';
import { preset } from '../src/model/presets.js';
import { ArgumentError } from '../src/errors.js';

const WORDS = ['we', 'the', 'people', 'of', 'union', 'form', 'a', 'more', 'perfect', 'law', 'and', 'peace'];

const folder = useCorpusFolder('mor-train-run-', (dir) => {
  const texts = join(dir, 'corpus');
  mkdirSync(texts);
  for (let d = 0; d < 30; d++) {
    const words = Array.from({ length: 300 }, (_, i) => WORDS[(i * 7 + d * 3) % WORDS.length] as string);
    writeFileSync(join(texts, `doc${d}.txt`), words.join(' ') + '.\n');
  }
  return texts;
});
let root: string;
let corpus: string;
let cacheDir: string;
before(() => ({ root, corpus, cache: cacheDir } = folder()));

function base(out: string): TrainRunOptions {
  return { preset: 'tiny-rec2', data: [corpus], outDir: out, cacheDir, steps: 2, batchSize: 2, seqLen: 32, evalBatches: 1, measureMfu: false };
}

interface Rec {
  type: string;
  step: number;
  loss?: number;
}
function records(out: string): Rec[] {
  return readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Rec);
}
const trainSteps = (out: string): number[] => records(out).filter((r) => r.type === 'train').map((r) => r.step);
function totalSteps(out: string): number {
  return (JSON.parse(readFileSync(join(out, 'checkpoint', 'trainer_state.json'), 'utf8')) as { options: { totalSteps: number } }).options.totalSteps;
}

describe('resume', () => {
  test('continues in place and a new budget extends a finished run', async () => {
    const out = join(root, 'extend');
    await runTraining(base(out));
    const more = await runTraining({ resume: join(out, 'checkpoint'), steps: 4, cacheDir, measureMfu: false });
    assert.equal(more.checkpointDir, join(out, 'checkpoint'));
    assert.equal(more.state.step, 4);
    assert.equal(totalSteps(out), 4);
    assert.deepEqual(trainSteps(out), [1, 2, 3, 4]);
    // a token budget too: 4 steps × 2 × 32 tokens already seen, 6 steps' worth asked
    const byTokens = await runTraining({ resume: join(out, 'checkpoint'), tokens: 6 * 2 * 32, cacheDir, measureMfu: false });
    assert.equal(byTokens.state.step, 6);
    // with no budget given, a finished run stays finished
    const again = await runTraining({ resume: join(out, 'checkpoint'), cacheDir, measureMfu: false });
    assert.equal(again.state.step, 6);
    assert.deepEqual(trainSteps(out), [1, 2, 3, 4, 5, 6]);
    await assert.rejects(runTraining({ resume: join(out, 'checkpoint'), steps: 3, cacheDir }), /at step 6: expected a budget of at least that many steps, got 3/);
  });

  test('settings other than the budget are refused, by name; so is another output folder', async () => {
    const out = join(root, 'refuse');
    await runTraining(base(out));
    const resume = join(out, 'checkpoint');
    await assert.rejects(runTraining({ resume, batchSize: 4, lr: 1e-3, cacheDir }), (e: unknown) => e instanceof ArgumentError && /got batchSize, lr$/.test(e.message));
    await assert.rejects(runTraining({ resume, outDir: join(root, 'elsewhere'), cacheDir }), /in place: expected the output folder .*refuse/);
    assert.equal(existsSync(join(root, 'elsewhere')), false);
  });

  test('metrics past the checkpoint (a kill after logging, before saving) are dropped', async () => {
    const out = join(root, 'killed');
    await runTraining(base(out));
    const atStep2 = join(root, 'ckpt-step2');
    cpSync(join(out, 'checkpoint'), atStep2, { recursive: true });
    await runTraining({ resume: join(out, 'checkpoint'), steps: 4, cacheDir, measureMfu: false });
    const summary = (o: string) => records(o).map((r) => `${r.type}@${r.step}:${r.loss ?? ''}`);
    const straight = summary(out);
    // the process "died" after logging steps 3–4 (and half a line) with the checkpoint at step 2
    rmSync(join(out, 'checkpoint'), { recursive: true });
    cpSync(atStep2, join(out, 'checkpoint'), { recursive: true });
    writeFileSync(join(out, 'metrics.jsonl'), readFileSync(join(out, 'metrics.jsonl'), 'utf8') + '{"type":"tra');
    const logs: string[] = [];
    await runTraining({ resume: join(out, 'checkpoint'), steps: 4, cacheDir, measureMfu: false, onLog: (l) => logs.push(l) });
    assert.deepEqual(summary(out), straight);
    assert.ok(logs.some((l) => /dropped 4 records past the checkpoint's step 2/.test(l)), logs.join('\n'));
    assert.equal(trimMetrics(join(out, 'missing.jsonl'), 1), 0);
  });
});

describe('a reused output folder', () => {
  test('is refused unless overwrite is given, which replaces the run', async () => {
    const out = join(root, 'reused');
    await runTraining(base(out));
    writeFileSync(join(out, 'notes.txt'), 'mine');
    await assert.rejects(runTraining(base(out)), (e: unknown) => e instanceof ArgumentError && /holds another run \(checkpoint, metrics\.jsonl\).*--overwrite/.test(e.message));
    const r = await runTraining({ ...base(out), steps: 3, overwrite: true });
    assert.equal(r.state.step, 3);
    assert.deepEqual(trainSteps(out), [1, 2, 3]);
    assert.equal(readFileSync(join(out, 'notes.txt'), 'utf8'), 'mine');
  });
});

describe('compare', () => {
  test('defaults to the smallest context among the presets and labels training tokens', async () => {
    assert.equal(compareSeqLen(['tiny', 'small']), preset('tiny').max_position_embeddings);
    assert.equal(compareSeqLen(['small'], 64), 64);
    const out = join(root, 'compare');
    const T = preset('tiny').max_position_embeddings;
    const flops = 2 * 2 * T * trainFlopsPerToken(preset('tiny'), T);
    const rows = await runComparison({ presets: ['tiny', 'tiny-rec2'], flops, outDir: out, data: [corpus], batchSize: 2, cacheDir, evalBatches: 1 });
    assert.equal(rows.length, 2);
    const json = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as { seq_len: number };
    assert.equal(json.seq_len, T);
    const md = readFileSync(join(out, 'compare.md'), 'utf8');
    assert.match(md, /batch 2 × 128 tokens/);
    assert.match(md, /\| train tokens \|/);
  });

  test('several seeds: one run per seed, mean ± sample std. dev., and a stopped comparison continues', async () => {
    const { mean, std } = meanStd([1, 2, 4]);
    assert.ok(Math.abs(mean - 7 / 3) < 1e-12);
    assert.ok(Math.abs(std - Math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)) < 1e-12);
    assert.equal(meanStd([5]).std, 0);
    const out = join(root, 'compare-seeds');
    const T = 32;
    const flops = 2 * 2 * T * trainFlopsPerToken(preset('tiny'), T);
    const opts = { presets: ['tiny'], flops, outDir: out, data: [corpus], batchSize: 2, seqLen: T, cacheDir, evalBatches: 1, seeds: 2, seed: 3 };
    const rows = await runComparison(opts);
    assert.deepEqual(rows.map((r) => [r.model, r.seed]), [['tiny', 3], ['tiny', 4]]);
    assert.ok(existsSync(join(out, 'tiny-seed3', 'checkpoint')) && existsSync(join(out, 'tiny-seed4', 'checkpoint')));
    assert.notEqual(rows[0]?.val_nll, rows[1]?.val_nll, 'different seeds train different models');
    const { mean: m, std: sd } = meanStd(rows.map((r) => r.val_nll));
    const md = readFileSync(join(out, 'compare.md'), 'utf8');
    assert.match(md, /seeds 3–4 \(mean ± sample std\. dev\. over 2\)/);
    assert.ok(md.includes(`${m.toFixed(4)} ± ${sd.toFixed(4)}`), md);
    // continue: drop seed 4's row as if the comparison had stopped during it, and run again
    const json = JSON.parse(readFileSync(join(out, 'compare.json'), 'utf8')) as { rows: unknown[] };
    writeFileSync(join(out, 'compare.json'), JSON.stringify({ ...json, rows: json.rows.slice(0, 1) }));
    const logs: string[] = [];
    const again = await runComparison({ ...opts, onLog: (l) => logs.push(l) });
    assert.ok(logs.some((l) => /tiny, seed 3: recorded/.test(l)), 'seed 3 is not trained again');
    assert.ok(logs.some((l) => /tiny, seed 4: .*training FLOPs/.test(l)), 'seed 4 is trained again');
    assert.deepEqual(again.map((r) => r.val_nll), rows.map((r) => r.val_nll), 'training is deterministic per seed');
    await assert.rejects(runComparison({ ...opts, seeds: 0 }), (e: unknown) => e instanceof ArgumentError && /seeds must be an integer ≥ 1/.test(e.message));
  });
});
