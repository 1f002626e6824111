// `mor train` / `compare` / `demo` as a user runs them: help shows the defaults and exit codes,
// resume continues in place and names refused flags, a reused --out needs --overwrite, and
// usage errors exit 2 while failed work exits 1.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RUN_DEFAULTS } from '../src/train/run-config.js';
import { useCorpusFolder } from './helpers/temp-dir.js';
import { writeRepeatedJsonl } from './helpers/corpus.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

const folder = useCorpusFolder('mor-cli-train-', writeRepeatedJsonl);
let root: string;
let corpus: string;
let cache: string;
before(() => ({ root, corpus, cache } = folder()));

function mor(cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, cwd });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const SMALL_RUN = ['--preset', 'tiny-rec2', '--batch', '2', '--seq-len', '32', '--eval-batches', '1', '--json'];

function savedStep(out: string): { step: number; totalSteps: number } {
  const s = JSON.parse(readFileSync(join(out, 'checkpoint', 'trainer_state.json'), 'utf8')) as { state: { step: number }; options: { totalSteps: number } };
  return { step: s.state.step, totalSteps: s.options.totalSteps };
}

describe('mor train help', () => {
  test('train --help shows the defaults from the run config and what --resume keeps', () => {
    const r = mor(root, 'train', '--help');
    assert.equal(r.code, 0);
    const help = r.stdout.replace(/\s+/g, ' ');
    assert.match(help, new RegExp(`--steps <n> .*\\(default: ${RUN_DEFAULTS.steps}\\)`));
    assert.match(help, new RegExp(`--batch <n> sequences per micro-batch \\(default: ${RUN_DEFAULTS.batchSize}\\)`));
    assert.match(help, new RegExp(`--lr <x> peak learning rate \\(default: ${RUN_DEFAULTS.lr}\\)`));
    assert.match(help, /--schedule <kind> .*default: "wsd"/);
    assert.match(help, /--warmup <n> warmup steps \(default: 5% of the run's steps, at least 1\)/);
    assert.match(help, new RegExp(`--eval-batches <n> validation batches per evaluation \\(default: ${RUN_DEFAULTS.evalBatches}\\)`));
    assert.match(help, /--resume <dir> .*keeps every setting but the budget/);
    assert.match(mor(root, 'demo', '--help').stdout.replace(/\s+/g, ' '), /--steps <n> .*\(default: 800\)/);
    assert.match(mor(root, 'compare', '--help').stdout.replace(/\s+/g, ' '), /--seq-len <n> tokens per sequence \(default: the smallest context among the presets/);
  });

  test('mor --help documents the exit codes', () => {
    const r = mor(root, '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /Exit codes:\n\s+0 +success\n\s+1 +the command failed.*\n\s+2 +usage error.*\n\s+130 +interrupted by Ctrl-C/);
  });
});

describe('mor train runs', () => {
  test('resume continues in place, extends with --steps, refuses other flags; --out reuse needs --overwrite', () => {
    const out = join(root, 'runs', 'mine');
    let r = mor(root, 'train', ...SMALL_RUN, '--data', corpus, '--steps', '2', '--out', out, '--cache-dir', cache);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(savedStep(out), { step: 2, totalSteps: 2 });

    // --resume without --out: continues runs/mine, never ./runs/latest
    const elsewhere = join(root, 'cwd');
    mkdirSync(elsewhere);
    r = mor(elsewhere, 'train', '--resume', join(out, 'checkpoint'), '--steps', '4', '--cache-dir', cache, '--json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(savedStep(out), { step: 4, totalSteps: 4 });
    assert.equal(existsSync(join(elsewhere, 'runs')), false);

    r = mor(elsewhere, 'train', '--resume', join(out, 'checkpoint'), '--steps', '6', '--batch', '4', '--lr', '0.1', '--cache-dir', cache);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--resume keeps every setting of the run but its budget: expected only --steps, --tokens or --flops, got --batch, --lr/);
    r = mor(elsewhere, 'train', '--resume', join(out, 'checkpoint'), '--out', join(root, 'other'), '--cache-dir', cache);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /continues the run in place/);
    assert.deepEqual(savedStep(out), { step: 4, totalSteps: 4 });

    r = mor(root, 'train', ...SMALL_RUN, '--data', corpus, '--steps', '1', '--out', out, '--cache-dir', cache);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /holds another run .*--overwrite/);
    r = mor(root, 'train', ...SMALL_RUN, '--data', corpus, '--steps', '1', '--out', out, '--cache-dir', cache, '--overwrite');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(savedStep(out), { step: 1, totalSteps: 1 });
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { type: string; step: number }).type);
    assert.deepEqual(steps, ['train', 'eval']);
  });

  test('usage errors exit 2, failed work exits 1', () => {
    let r = mor(root, 'train', '--batch', '0');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--batch must be an integer ≥ 1/);
    r = mor(root, 'train', '--steps', '2', '--tokens', '100', '--out', join(root, 'two-budgets'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /give one budget/);
    r = mor(root, 'train', '--resume', join(root, 'no', 'checkpoint'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /checkpoint directory not found/);
    const binary = join(root, 'binary');
    mkdirSync(binary);
    writeFileSync(join(binary, 'notes.txt'), Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x00, 0x00]));
    r = mor(root, 'train', ...SMALL_RUN, '--data', binary, '--steps', '1', '--out', join(root, 'bin-run'), '--cache-dir', cache);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /mor: .*notes\.txt: expected a UTF-8 text file, got a binary file/);
  });
});
