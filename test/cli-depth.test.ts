// Test-time depth from the command line: `mor eval --max-depth/--threshold/--depth-sweep/
// --thresholds`, `mor generate --show-depth / --exit-confidence`, flags a model cannot honour
// refused before anything is printed, and eval/generate needing no optimizer state.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));

function mor(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, NO_COLOR: '1' } });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('mor eval and generate at test-time depth', () => {
  let dir = '';
  let corpus = '';
  let cache = '';
  const ckpt = (name: string) => join(dir, name, 'checkpoint');
  const data = () => ['--data', corpus, '--seq-len', '32', '--batch', '2', '--cache-dir', cache];

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'mor-cli-depth-'));
    corpus = join(dir, 'corpus.jsonl');
    cache = join(dir, 'cache');
    const lines = Array.from({ length: 60 }, (_, i) => JSON.stringify({ text: `Document ${i}: the union is strong and the people are free. `.repeat(8) }));
    writeFileSync(corpus, lines.join('\n') + '\n');
    for (const preset of ['tiny-mor3', 'tiny-mor3-token', 'tiny-rec3']) {
      const r = mor('train', '--preset', preset, '--steps', '2', '--out', join(dir, preset), '--json', ...data());
      assert.equal(r.code, 0, r.stderr);
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('--depth-sweep --thresholds --json: one point per (depth, threshold), then the summary', () => {
    const r = mor('eval', '--model', ckpt('tiny-mor3'), ...data(), '--depth-sweep', '--thresholds', '0.3,0.7', '--json');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
    const points = lines.slice(0, -1);
    assert.deepEqual(points.map((p) => [p['max_depth'], p['threshold']]), [[1, 0.3], [1, 0.7], [2, 0.3], [2, 0.7], [3, 0.3], [3, 0.7]]);
    for (const p of points) {
      assert.ok(Number.isFinite(p['nll']) && (p['nll'] as number) > 0);
      assert.ok((p['mean_depth'] as number) >= 1 && (p['mean_depth'] as number) <= (p['max_depth'] as number));
    }
    // recursion 1 takes every token; a low threshold lets more tokens go deeper than a high one
    assert.equal(points[0]?.['mean_depth'], 1);
    assert.ok((points[4]?.['mean_depth'] as number) >= (points[5]?.['mean_depth'] as number));
    const summary = lines[lines.length - 1] as Record<string, number>;
    assert.ok(Number.isFinite(summary['val_nll']) && (summary['val_tokens'] as number) > 0);
    assert.ok('val_nll_topk' in summary, 'expert-choice shows the top-k figure beside the causal one');
  });

  test('--max-depth 1 evaluates at depth 1; a table without --json', () => {
    const one = JSON.parse(mor('eval', '--model', ckpt('tiny-mor3'), ...data(), '--max-depth', '1', '--json').stdout) as Record<string, number>;
    assert.equal(one['mean_depth'], 1);
    assert.equal(one['max_depth'], 1);
    const table = mor('eval', '--model', ckpt('tiny-rec3'), ...data(), '--depth-sweep');
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, /\| max depth \| threshold \| validation NLL \| mean depth \|/);
    assert.match(table.stdout, /\| 3 \| - \| \d+\.\d{4} \| 3\.000 \|/);
  });

  test('token-choice eval prints only the causal figure; threshold flags are refused', () => {
    const r = mor('eval', '--model', ckpt('tiny-mor3-token'), ...data(), '--json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(out['val_nll_topk'], undefined);
    assert.equal(out['threshold'], undefined);
    const bad = mor('eval', '--model', ckpt('tiny-mor3-token'), ...data(), '--thresholds', '0.5');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--thresholds sets the threshold of MoR expert-choice routers/);
  });

  test('generate --show-depth marks each piece with its depths and ends with a histogram', () => {
    const r = mor('generate', '--model', ckpt('tiny-mor3'), '--prompt', 'the union', '--max-tokens', '6', '--temperature', '0', '--show-depth');
    assert.equal(r.code, 0, r.stderr);
    const depths = [...r.stdout.matchAll(/\[([\d,]+)\]/g)].flatMap((m) => (m[1] as string).split(',').map(Number)).filter((d) => d >= 1);
    assert.ok(depths.length >= 6, r.stdout);
    assert.match(r.stdout, /depth \(recursions\): \[1\] {2}\[2\] {2}\[3\]/);
    const counts = [...r.stdout.matchAll(/depth (\d) +█* (\d+) \(\d+%\)/g)].map((m) => Number(m[2]));
    assert.equal(counts.length, 3);
    assert.equal(counts.reduce((a, b) => a + b, 0), 6);
  });

  test('--exit-confidence drives early exit of a recursive model; wrong-model flags fail before the prompt is echoed', () => {
    const r = mor('generate', '--model', ckpt('tiny-rec3'), '--prompt', 'the', '--max-tokens', '4', '--exit-confidence', '0', '--show-depth');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /depth 1 +█+ 4 \(100%\)/);
    for (const [model, flag, msg] of [
      ['tiny-rec3', ['--threshold', '0.5'], /no routers \(for early exit use --exit-confidence\)/],
      ['tiny-mor3', ['--exit-confidence', '0.5'], /has MoR routers \(use --threshold\)/],
      ['tiny-mor3', ['--max-depth', '4'], /at most 3 recursions/],
      ['tiny-mor3', ['--stop', ''], /stop strings must not be empty/],
    ] as const) {
      const bad = mor('generate', '--model', ckpt(model), '--prompt', 'the', '--max-tokens', '2', ...flag);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, msg);
      assert.equal(bad.stdout, '', 'nothing printed before the error');
    }
  });

  test('eval and generate do not read the optimizer state', () => {
    writeFileSync(join(ckpt('tiny-rec3'), 'optimizer.safetensors'), 'not a safetensors file');
    assert.equal(mor('eval', '--model', ckpt('tiny-rec3'), ...data(), '--json').code, 0);
    assert.equal(mor('generate', '--model', ckpt('tiny-rec3'), '--prompt', 'the', '--max-tokens', '2').code, 0);
  });
});
