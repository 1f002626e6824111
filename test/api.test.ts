// The README's library example, through the package's public entry point.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setBackend, availableBackends, preset, createModel, forward, backward, createOptimizer, clipGradNorm } from '../src/index.js';

test('README library example runs and lowers the loss', () => {
  setBackend(availableBackends().includes('native') ? 'native' : 'ref');
  const model = createModel(preset('tiny-rec2'), 0);
  const ids = Int32Array.from({ length: 2 * 16 }, (_, i) => i % 512);
  const opt = createOptimizer(model);
  const losses: number[] = [];
  for (let step = 0; step < 5; step++) {
    const { logits, loss } = forward(model, ids, 2, ids);
    assert.deepEqual(logits.shape, [32, 512]);
    assert.ok(loss);
    losses.push(loss.item());
    for (const p of opt.params) p.tensor.grad = null;
    backward(loss);
    clipGradNorm(opt.params.map((p) => p.tensor), 1.0);
    opt.step(3e-3);
  }
  assert.ok((losses.at(-1) as number) < (losses[0] as number), losses.join(', '));
});
