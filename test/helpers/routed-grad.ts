/**
 * Finite-difference checks of routed models (MoR, MoD, MoE): the training loss against the tape
 * at a few coordinates of named parameters. Routing is discrete — top-k selections and expert
 * picks jump when a perturbation reorders scores — so a coordinate whose ±eps points change any
 * routing decision is skipped, and the number actually checked is returned for the caller to
 * assert on.
 */
import assert from 'node:assert/strict';
import { forward, type Model } from '../../src/model/model.js';
import { backward, noGrad, zeroGrad, type Tensor } from '../../src/tensor/tensor.js';
import type { Rng } from '../../src/util/rng.js';
import { centralDifference } from './numeric.js';

export function randomIds(rng: Rng, n: number, vocab: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.nextInt(vocab));
}

/** Every discrete routing decision of a forward: rows each recursion / routed layer kept, experts each MoE call picked. */
export function routingKey(model: Model, ids: Int32Array, batch: number): string {
  const out = noGrad(() => forward(model, ids, batch, ids));
  return JSON.stringify([out.moeSelections.map((s) => Array.from(s)), out.stats?.selectedRows.map((r) => Array.from(r))]);
}

/** Tape gradient vs central difference (eps 1e-2, within 5% of the gradient's scale) at `samples` random coordinates per parameter. */
export function checkRoutedGrad(model: Model, ids: Int32Array, batch: number, names: readonly string[], rng: Rng, samples = 6): number {
  const params = [...model.params.byName.values()].filter((t) => t.requiresGrad);
  zeroGrad(params);
  const out = forward(model, ids, batch, ids);
  assert.ok(out.loss);
  backward(out.loss);
  const key = routingKey(model, ids, batch);
  let checked = 0;
  for (const name of names) {
    const t: Tensor | undefined = model.params.byName.get(name);
    assert.ok(t, `no parameter ${name}`);
    const g = t.grad;
    assert.ok(g, `no gradient for ${name}`);
    const gmax = Math.max(1e-6, ...Array.from(g, Math.abs));
    const data = t.f32();
    for (let s = 0; s < samples; s++) {
      const i = rng.nextInt(data.length);
      let sameRouting = true; // at both perturbed points
      const fd = centralDifference(data, i, 1e-2, () => {
        const loss = noGrad(() => forward(model, ids, batch, ids).loss?.item() ?? NaN);
        if (routingKey(model, ids, batch) !== key) sameRouting = false;
        return loss;
      });
      if (!sameRouting) continue;
      assert.ok(Math.abs(fd - (g[i] as number)) <= 0.05 * gmax, `${name}[${i}]: tape ${g[i]}, finite difference ${fd} (scale ${gmax})`);
      checked++;
    }
  }
  return checked;
}
