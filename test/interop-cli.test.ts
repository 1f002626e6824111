// The CLI over foreign formats: eval --text, generate, export hf / gguf, train --init-from, all
// reading the Hugging Face fixture through loadModel; a routed model's export is refused.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { forward, createModel } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { saveCheckpoint } from '../src/train/checkpoint.js';
import { evaluateTextNll } from '../src/train/evaluate.js';
import { noGrad } from '../src/tensor/tensor.js';
import { loadModel } from '../src/interop/load.js';
import { useTempDir } from './helpers/temp-dir.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-tiny/', import.meta.url));
const tmp = useTempDir('mor-interop-cli-');
const TEXT = 'The President shall be Commander in Chief of the Army and Navy, in 1787. '.repeat(3);

function mor(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, '--backend', 'ref', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('evaluateTextNll', () => {
  test('one window is the forward loss; short windows still predict every token after the first once', async () => {
    const { model, tokenizer } = await loadModel(FIXTURE);
    const ids = tokenizer.encode(TEXT).subarray(0, 61); //           within the context of 64
    const whole = evaluateTextNll(model, ids, ids.length);
    const loss = noGrad(() => forward(model, ids.subarray(0, -1), 1, ids.subarray(1)).lmLoss?.item() as number);
    assert.ok(Math.abs(whole.nll - loss) < 1e-6);
    assert.equal(whole.tokens, ids.length - 1);
    const windows = evaluateTextNll(model, ids, 16, 3);
    assert.equal(windows.tokens, ids.length - 1);
    assert.ok(Number.isFinite(windows.nll) && windows.nll !== whole.nll);
  });
});

describe('mor over Hugging Face directories', () => {
  test('eval --text --json prints val_nll and val_tokens; export hf and gguf; the export evaluates the same', async () => {
    const text = join(tmp(), 'text.txt');
    writeFileSync(text, TEXT);
    const r = mor('eval', '--model', FIXTURE, '--text', text, '--json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as Record<string, number>;
    const { model, tokenizer } = await loadModel(FIXTURE);
    const ids = tokenizer.encode(TEXT);
    assert.equal(out['val_tokens'], ids.length - 1);
    assert.ok(Math.abs((out['val_nll'] as number) - evaluateTextNll(model, ids, model.config.max_position_embeddings).nll) < 1e-5);

    const hf = join(tmp(), 'exported-hf');
    const e1 = mor('export', '--model', FIXTURE, '--format', 'hf', '--out', hf);
    assert.equal(e1.code, 0, e1.stderr);
    const again = mor('eval', '--model', hf, '--text', text, '--json');
    assert.equal(again.code, 0, again.stderr);
    assert.equal((JSON.parse(again.stdout.trim()) as Record<string, number>)['val_nll'], out['val_nll']);

    const gguf = join(tmp(), 'model.gguf');
    const e2 = mor('export', '--model', FIXTURE, '--format', 'gguf', '--dtype', 'f16', '--out', gguf);
    assert.equal(e2.code, 0, e2.stderr);
    assert.equal(readFileSync(gguf).subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(mor('export', '--model', FIXTURE, '--format', 'gguf', '--out', gguf).code, 2, 'an existing --out is refused');
  });

  test('generate reads a Hugging Face directory', () => {
    const r = mor('generate', '--model', FIXTURE, '--prompt', 'The', '--max-tokens', '4', '--temperature', '0');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /--- "The"/);
  });

  test('export of a model with routers is a usage error naming them', async () => {
    const { tokenizer } = await loadModel(FIXTURE);
    const ck = join(tmp(), 'routed');
    saveCheckpoint(ck, createModel(preset('tiny-mor3'), 0), { tokenizer: tokenizer.toJSON() });
    const r = mor('export', '--model', ck, '--format', 'hf', '--out', join(tmp(), 'routed-hf'));
    assert.equal(r.code, 2);
    assert.match(r.stderr, /MoR routers/);
    assert.ok(!existsSync(join(tmp(), 'routed-hf')));
  });

  test('a config key that changes the math is a usage error naming it', async () => {
    const { cpSync } = await import('node:fs');
    const dir = join(tmp(), 'biased');
    cpSync(FIXTURE, dir, { recursive: true });
    const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, attention_bias: true }));
    const r = mor('generate', '--model', dir, '--prompt', 'The', '--max-tokens', '1');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /'attention_bias'/);
  });

  test('train --init-from starts a new run from the Hugging Face weights and tokenizer', async () => {
    const data = join(tmp(), 'corpus.jsonl');
    writeFileSync(data, Array.from({ length: 40 }, (_, i) => JSON.stringify({ text: `${i}. ${TEXT}` })).join('\n') + '\n');
    const out = join(tmp(), 'run');
    const r = mor('train', '--init-from', FIXTURE, '--data', data, '--steps', '2', '--batch', '2', '--seq-len', '16', '--out', out, '--cache-dir', join(tmp(), 'cache'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /initialised from .*Hugging Face model/);
    const { model, source } = await loadModel(join(out, 'checkpoint'));
    assert.equal(source, 'mor');
    assert.equal(model.config.tie_word_embeddings, false);
    assert.equal(model.config.rope_theta, 100000);
    const refused = mor('train', '--init-from', FIXTURE, '--preset', 'tiny', '--out', join(tmp(), 'run2'));
    assert.equal(refused.code, 2);
  });
});
