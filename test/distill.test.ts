// Distillation (MOR_SPEC §8 uptraining): the KL term is zero when teacher = student, matches a
// float64 reference, and its gradient matches central finite differences on every backend;
// `mor train --init-from … --distill-from …` trains, lowers the loss and logs the distill term.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableBackends, getBackend, setBackend } from '../src/backend/index.js';
import { backward, parameter, tensor } from '../src/tensor/tensor.js';
import { distillKl } from '../src/train/distill.js';
import { resolveRunConfig } from '../src/train/run-config.js';
import { ArgumentError } from '../src/errors.js';
import { Rng } from '../src/util/rng.js';
import { relativeError } from './helpers/numeric.js';
import { useCorpusFolder } from './helpers/temp-dir.js';
import { writeRepeatedJsonl } from './helpers/corpus.js';

const N = 6;
const V = 40;

function randomLogits(seed: number, spread = 2): Float64Array {
  const rng = new Rng(seed);
  return Float64Array.from({ length: N * V }, () => spread * rng.normal());
}

/** KL(p ‖ q) averaged over rows, p = softmax(t/τ), q = softmax(s/τ), in float64. */
function referenceKl(s: ArrayLike<number>, t: ArrayLike<number>, tau: number): number {
  let total = 0;
  for (let n = 0; n < N; n++) {
    const logSoftmax = (x: ArrayLike<number>): number[] => {
      const row = Array.from({ length: V }, (_, v) => (x[n * V + v] as number) / tau);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, z) => a + Math.exp(z - max), 0));
      return row.map((z) => z - lse);
    };
    const lp = logSoftmax(t);
    const lq = logSoftmax(s);
    for (let v = 0; v < V; v++) total += Math.exp(lp[v] as number) * ((lp[v] as number) - (lq[v] as number));
  }
  return total / N;
}

const initialBackend = getBackend().name;
after(() => setBackend(initialBackend));

for (const name of availableBackends()) {
  describe(`distillation KL on the ${name} backend`, () => {
    before(() => setBackend(name));

    for (const tau of [1, 2]) {
      test(`τ = ${tau}: zero when teacher = student, with zero gradient`, () => {
        const logits = Float32Array.from(randomLogits(1));
        const s = parameter(logits.slice(), [N, V]);
        const kl = distillKl(s, tensor(logits.slice(), [N, V]), tau);
        assert.ok(Math.abs(kl.item()) < 1e-6, `KL = ${kl.item()}`);
        backward(kl);
        assert.ok((s.grad as Float32Array).every((g) => Math.abs(g) < 1e-7));
      });

      test(`τ = ${tau}: the value matches the float64 reference and the gradient central finite differences`, () => {
        const s64 = randomLogits(2);
        const t64 = randomLogits(3, 3);
        const s = parameter(Float32Array.from(s64), [N, V]);
        const kl = distillKl(s, tensor(Float32Array.from(t64), [N, V]), tau);
        const ref = referenceKl(Float32Array.from(s64), Float32Array.from(t64), tau);
        assert.ok(ref > 0.1, 'a real divergence');
        assert.ok(Math.abs(kl.item() - ref) < 1e-5 * Math.max(1, ref), `KL ${kl.item()} vs ${ref}`);
        backward(kl);
        const h = 1e-5;
        const fd = new Float64Array(N * V);
        const x = Float64Array.from(Float32Array.from(s64));
        const t = Float64Array.from(Float32Array.from(t64));
        for (let i = 0; i < x.length; i++) {
          const keep = x[i] as number;
          x[i] = keep + h;
          const up = referenceKl(x, t, tau);
          x[i] = keep - h;
          const down = referenceKl(x, t, tau);
          x[i] = keep;
          fd[i] = (up - down) / (2 * h);
        }
        const err = relativeError(s.grad as Float32Array, fd);
        assert.ok(err < 1e-4, `gradient vs finite differences: relative error ${err}`);
      });
    }
  });
}

describe('run settings for --init-from and distillation', () => {
  test('defaults: weight 0.5, temperature 1, absolute teacher path', () => {
    const c = resolveRunConfig({ initFrom: 'conv', distillFrom: 'teacher' });
    assert.deepEqual(c.distill, { from: join(process.cwd(), 'teacher'), weight: 0.5, temperature: 1 });
    assert.equal(c.initFrom, join(process.cwd(), 'conv'));
    assert.equal(resolveRunConfig({}).distill, null);
  });

  test('refused: distill settings without a teacher, a non-positive temperature, --init-from with a preset', () => {
    assert.throws(() => resolveRunConfig({ distillWeight: 0.3 }), (e: unknown) => e instanceof ArgumentError && /'distillWeight': expected distillFrom beside it/.test(e.message));
    assert.throws(() => resolveRunConfig({ distillFrom: 't', distillTemperature: 0 }), /'distillTemperature': expected a finite number > 0, got 0/);
    assert.throws(() => resolveRunConfig({ initFrom: 'c', preset: 'tiny' }), /'initFrom': the model comes from the checkpoint; expected no preset or configPath beside it/);
  });
});

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const folder = useCorpusFolder('mor-distill-', writeRepeatedJsonl);

function mor(cwd: string, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, cwd });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('mor train --init-from … --distill-from …', () => {
  test('a converted model uptrains with distillation: the loss falls, distill_kl is logged, the teacher counts in FLOPs', () => {
    const { root, corpus, cache } = folder();
    const run = ['--data', corpus, '--batch', '4', '--seq-len', '32', '--eval-batches', '1', '--cache-dir', cache, '--json'];
    const teacher = mor(root, 'train', '--preset', 'tiny', '--steps', '30', '--out', 'teacher', ...run);
    assert.equal(teacher.code, 0, teacher.stderr);
    const conv = mor(root, 'convert', '--model', 'teacher/checkpoint', '--recursions', '2', '--lora-rank', '8', '--out', 'converted');
    assert.equal(conv.code, 0, conv.stderr);

    const r = mor(root, 'train', '--init-from', 'converted', '--distill-from', 'teacher/checkpoint', '--distill-weight', '0.5', '--steps', '16', '--lr', '1e-3', '--out', 'uptrain', ...run);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /initialised from .*converted \(mor-ts checkpoint\): its config and weights, a fresh optimiser and run/);
    assert.match(r.stderr, /loss \+= 0\.5 × KL\(teacher ‖ student\) at temperature 1/);
    const records = readFileSync(join(root, 'uptrain', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number | string>);
    const steps = records.filter((m) => m['type'] === 'train');
    assert.equal(steps.length, 16);
    for (const m of steps) {
      assert.ok(typeof m['distill_kl'] === 'number' && m['distill_kl'] >= -1e-6 && Number.isFinite(m['distill_kl']));
      assert.ok((m['teacher_flops'] as number) > 0 && (m['flops'] as number) > (m['teacher_flops'] as number));
      // total = LM loss + 0.5 × KL (no routing terms in this model)
      assert.ok(Math.abs((m['total_loss'] as number) - (m['loss'] as number) - 0.5 * (m['distill_kl'] as number)) < 1e-4);
    }
    const mean = (xs: Array<Record<string, number | string>>): number => xs.reduce((a, m) => a + (m['loss'] as number), 0) / xs.length;
    assert.ok(mean(steps.slice(-3)) < mean(steps.slice(0, 3)), `loss ${mean(steps.slice(0, 3))} → ${mean(steps.slice(-3))}`);
    const state = JSON.parse(readFileSync(join(root, 'uptrain', 'checkpoint', 'trainer_state.json'), 'utf8')) as { state: { step: number }; options: { distill: { weight: number } } };
    assert.equal(state.state.step, 16);
    assert.equal(state.options.distill.weight, 0.5);

    const clash = mor(root, 'train', '--init-from', 'converted', '--preset', 'tiny', '--steps', '1', '--out', 'never', ...run);
    assert.equal(clash.code, 2);
    assert.match(clash.stderr, /the model comes from the checkpoint/);
  });
});
