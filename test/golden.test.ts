// Golden comparison with PyTorch (fixtures written by tools/golden.py): logits, loss, the
// gradient of every parameter, and the losses of 5 AdamW steps with clipping, for tiny,
// tiny-rec2 (shared layers) and tiny-rec2 with LoRA relaxation, on every backend.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { readSafetensorsSync } from '../src/util/safetensors.js';
import { validateConfig } from '../src/model/config.js';
import { assembleParams } from '../src/model/params.js';
import { forward, modelFromParams } from '../src/model/model.js';
import { parameter, backward, zeroGrad, type Tensor } from '../src/tensor/tensor.js';
import { AdamW, clipGradNorm, optimParamsFromTable } from '../src/train/optim.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/golden/', import.meta.url));
const TOL = 1e-4;

function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs((a[i] as number) - (b[i] as number)));
    den = Math.max(den, Math.abs(b[i] as number));
  }
  return num / Math.max(den, 1e-30);
}

function load(name: string) {
  const f = readSafetensorsSync(`${FIXTURES}${name}.safetensors`);
  assert.equal(f.metadata['format'], 'mor-golden');
  assert.equal(f.metadata['version'], '1');
  const config = validateConfig(JSON.parse(f.metadata['config'] ?? 'null'));
  const byName = new Map<string, Tensor>();
  const get = (k: string) => {
    const t = f.tensors.get(k);
    assert.ok(t, `fixture lacks ${k}`);
    return t;
  };
  for (const [k, t] of f.tensors) {
    if (k.startsWith('param.')) byName.set(k.slice(6), parameter(new Float32Array(t.data), t.shape, k.slice(6)));
  }
  return {
    config,
    model: modelFromParams(config, assembleParams(config, byName)),
    batch: Number(f.metadata['batch']),
    adamw: JSON.parse(f.metadata['adamw'] ?? '{}') as { lr: number; beta1: number; beta2: number; eps: number; weight_decay: number; clip: number; steps: number },
    ids: get('input_ids').data as Int32Array,
    targets: get('targets').data as Int32Array,
    logits: get('logits').data,
    loss: get('loss').data[0] as number,
    grad: (n: string) => get(`grad.${n}`).data,
    stepLosses: get('step_losses').data,
  };
}

for (const backendName of availableBackends()) {
  describe(`golden PyTorch comparison on ${backendName}`, () => {
    for (const name of ['tiny', 'tiny-rec2', 'tiny-rec2-lora']) {
      test(`${name}: logits, loss and every gradient`, () => {
        setBackend(backendName);
        const g = load(name);
        const { logits, loss } = forward(g.model, g.ids, g.batch, g.targets);
        assert.ok(loss);
        assert.ok(relErr(logits.f32(), g.logits) <= TOL, `logits rel err ${relErr(logits.f32(), g.logits)}`);
        assert.ok(Math.abs(loss.item() - g.loss) / g.loss <= TOL, `loss ${loss.item()} vs ${g.loss}`);
        backward(loss);
        for (const spec of g.model.params.specs) {
          const t = g.model.params.byName.get(spec.name);
          assert.ok(t?.grad, `no gradient for ${spec.name}`);
          const e = relErr(t.grad, g.grad(spec.name));
          assert.ok(e <= TOL, `${spec.name}: gradient rel err ${e}`);
        }
      });

      test(`${name}: 5 AdamW steps with clipping`, () => {
        setBackend(backendName);
        const g = load(name);
        const a = g.adamw;
        const params = optimParamsFromTable(g.model.params.specs, g.model.params.byName);
        const opt = new AdamW(params, { beta1: a.beta1, beta2: a.beta2, eps: a.eps, weightDecay: a.weight_decay });
        const tensors = params.map((p) => p.tensor);
        const losses: number[] = [];
        for (let s = 0; s < a.steps; s++) {
          zeroGrad(tensors);
          const { loss } = forward(g.model, g.ids, g.batch, g.targets);
          assert.ok(loss);
          losses.push(loss.item());
          backward(loss);
          clipGradNorm(tensors, a.clip);
          opt.step(a.lr);
        }
        const { loss } = forward(g.model, g.ids, g.batch, g.targets);
        losses.push(loss?.item() ?? NaN);
        losses.forEach((l, i) => {
          const ref = g.stepLosses[i] as number;
          assert.ok(Math.abs(l - ref) / ref <= TOL, `step ${i}: loss ${l} vs PyTorch ${ref}`);
        });
      });
    }
  });
}
