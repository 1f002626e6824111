// Mixture-of-Recursions routing in the training forward: gradients through the routing,
// exact top-k counts, causality of the inference-mode decisions, reduction to the plain
// recursive model, config errors, FLOPs accounting. Runs on every backend.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { validateConfig, ConfigError, type ModelConfig } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { createModel, forward, modelFromParams, type Model } from '../src/model/model.js';
import { assembleParams, paramTable } from '../src/model/params.js';
import { forwardFlopsPerSequence } from '../src/model/flops.js';
import { updateRouterBias } from '../src/model/mor.js';
import { backward, noGrad, parameter, zeroGrad, type Tensor } from '../src/tensor/tensor.js';
import { Rng } from '../src/util/rng.js';
import { centralDifference } from './helpers/numeric.js';
import { checkRoutedGrad, randomIds, routingKey } from './helpers/routed-grad.js';

function morConfig(base: string, mor: object, extra: object = {}): ModelConfig {
  const b = preset(base);
  return validateConfig({ ...b, ...extra, mor: { ...(b.mor ?? {}), ...mor } });
}




for (const backendName of availableBackends()) {
  describe(`MoR routing on ${backendName}`, () => {
    const rng = new Rng(99);
    const B = 2;
    const T = 12;

    test('gradients flow through gates, gather/scatter and auxiliary losses (expert-choice)', () => {
      setBackend(backendName);
      // a random ranking keeps the selection fixed under perturbation, so the loss is smooth
      for (const gating of ['output', 'delta']) {
        // larger init than the default 0.02, so gradients stand well above float32 loss resolution
        const c = morConfig('tiny-mor3', { random_router: true, gating, alpha: 1, z_loss_coef: 0.01 }, { initializer_range: 0.2 });
        const model = createModel(c, 5);
        const ids = randomIds(rng, B * T, c.vocab_size);
        const n = checkRoutedGrad(model, ids, B, ['model.mor.routers.0.weight', 'model.mor.routers.2.weight', 'model.layers.1.mlp.down_proj.weight', 'model.layers.1.self_attn.q_proj.weight'], rng);
        assert.ok(n >= 12, `only ${n} coordinates checked`);
      }
      // an MLP router ranking for real (the selection check skips coordinates that flip it)
      const mlp = morConfig('tiny-mor3', { router: 'mlp' }, { initializer_range: 0.2 });
      const ids = randomIds(rng, B * T, mlp.vocab_size);
      assert.ok(checkRoutedGrad(createModel(mlp, 6), ids, B, ['model.mor.routers.1.fc2.weight', 'model.mor.routers.0.fc1.weight'], rng) >= 6);
      // the auxiliary router learns from its own BCE. Its input is detached (stop-gradient), so
      // only its own weights are checked against finite differences of the whole loss: for the
      // other weights the tape deliberately omits the path through the auxiliary BCE.
      const aux = morConfig('tiny-mor3', { causal: 'aux_router', router: 'mlp' }, { initializer_range: 0.2 });
      assert.ok(checkRoutedGrad(createModel(aux, 6), ids, B, ['model.mor.aux_routers.1.fc1.weight', 'model.mor.aux_routers.2.fc2.weight'], rng) >= 6);
    });

    test('gradients through token-choice routing (balancing and z-loss)', () => {
      setBackend(backendName);
      const c = morConfig('tiny-mor3-token', { alpha: 1 }, { initializer_range: 0.2 });
      const model = createModel(c, 7);
      const ids = randomIds(rng, B * T, c.vocab_size);
      const n = checkRoutedGrad(model, ids, B, ['model.mor.router.weight', 'model.layers.1.mlp.up_proj.weight'], rng);
      assert.ok(n >= 6, `only ${n} coordinates checked`);
    });

    test('top-k selects exactly k_r rows per sequence and recursion', () => {
      setBackend(backendName);
      for (const [name, caps] of [['tiny-mor3', null], ['tiny-mor4', [1, 0.5, 0.5, 0.25]]] as const) {
        const c = morConfig(name, { capacities: caps });
        const model = createModel(c, 1);
        const out = forward(model, randomIds(rng, B * T, c.vocab_size), B);
        const nr = c.recursion?.num_recursions ?? 0;
        const expected = Array.from({ length: nr }, (_, r) => Math.max(1, Math.floor((caps?.[r] ?? (nr - r) / nr) * T)) / T);
        assert.deepEqual(out.stats?.selectedFraction, expected);
      }
    });

    test('causal mode: logits at t do not depend on tokens after t', () => {
      setBackend(backendName);
      for (const [name, mor] of [
        ['tiny-mor3', {}],
        ['tiny-mor3', { causal: 'aux_router' }],
        ['tiny-mor3-token', {}],
        ['tiny-mor3-kvshare', {}],
      ] as const) {
        const c = morConfig(name, mor);
        const model = createModel(c, 3);
        // random routers send some tokens past the 0.5 threshold and stop others
        const ids = randomIds(rng, T, c.vocab_size);
        const cut = 6;
        const ids2 = ids.slice();
        for (let t = cut + 1; t < T; t++) ids2[t] = (ids2[t] as number + 17) % c.vocab_size;
        const a = noGrad(() => forward(model, ids, 1, undefined, { routing: 'causal' }).logits.f32());
        const b = noGrad(() => forward(model, ids2, 1, undefined, { routing: 'causal' }).logits.f32());
        const V = c.vocab_size;
        // equal up to float rounding: the kernels may block a different number of rows differently
        let err = 0;
        let scale = 0;
        for (let i = 0; i < (cut + 1) * V; i++) {
          err = Math.max(err, Math.abs((a[i] as number) - (b[i] as number)));
          scale = Math.max(scale, Math.abs(a[i] as number));
        }
        assert.ok(err <= 1e-5 * scale, `${name} ${JSON.stringify(mor)}: logits before the change moved by ${err}`);
        // and the positions after the change do move (the test can fail)
        let after = 0;
        for (let i = (cut + 1) * V; i < a.length; i++) after = Math.max(after, Math.abs((a[i] as number) - (b[i] as number)));
        assert.ok(after > 1e-4, `${name}: logits after the change did not move`);
      }
    });

    test('all capacities 1 and a constant gate reduce MoR to the recursive model', () => {
      setBackend(backendName);
      const rec = createModel(preset('tiny-rec3'), 8);
      // g = α·sigmoid(0) = 1 with α = 2 and zero router weights; delta gating: h + 1·(y − h) = y
      const c = morConfig('tiny-mor3', { capacities: [1, 1, 1], gating: 'delta', alpha: 2, aux_loss_coef: 0 });
      const byName = new Map<string, Tensor>();
      for (const s of paramTable(c)) {
        const src = rec.params.byName.get(s.name);
        byName.set(s.name, parameter(src ? src.f32().slice() : new Float32Array(s.shape.reduce((x, y) => x * y, 1)), s.shape, s.name));
      }
      const mor = modelFromParams(c, assembleParams(c, byName));
      const ids = randomIds(rng, B * T, c.vocab_size);
      const a = noGrad(() => forward(rec, ids, B, ids));
      const b = noGrad(() => forward(mor, ids, B, ids));
      const la = a.logits.f32();
      const lb = b.logits.f32();
      let err = 0;
      for (let i = 0; i < la.length; i++) err = Math.max(err, Math.abs((la[i] as number) - (lb[i] as number)));
      assert.ok(err < 1e-5, `max logit difference ${err}`);
      assert.ok(Math.abs((a.loss?.item() ?? 0) - (b.loss?.item() ?? 1)) < 1e-5);
    });

    test('executed FLOPs match the static accounting at the target capacities', () => {
      setBackend(backendName);
      for (const name of ['tiny-mor3', 'tiny-mor3-kvshare', 'tiny-rec3', 'tiny']) {
        const c = preset(name);
        const model = createModel(c, 2);
        const T2 = 32;
        const out = noGrad(() => forward(model, randomIds(rng, T2, c.vocab_size), 1));
        const expected = forwardFlopsPerSequence(c, T2);
        // KV sharing's static count approximates each query's visible keys by (T+1)/2
        const tol = name.includes('kvshare') ? 0.02 : 1e-9;
        assert.ok(Math.abs(out.flops - expected) <= tol * expected, `${name}: executed ${out.flops}, accounted ${expected}`);
      }
      assert.ok(forwardFlopsPerSequence(preset('small-mor3'), 256) < 0.8 * forwardFlopsPerSequence(preset('small-rec3'), 256));
    });
  });
}

describe('MoR config and balancing', () => {
  test('bad MoR configs are ConfigErrors naming the field', () => {
    const rec = preset('tiny-rec3');
    const bad: Array<[object, RegExp]> = [
      [{ ...rec, mor: { routing: 'expert' } }, /mor.routing must be/],
      [{ ...rec, mor: { capacities: [1, 0.5] } }, /mor.capacities must be null or 3 numbers/],
      [{ ...rec, mor: { capacities: [0.5, 1, 0.3] } }, /must not increase/],
      [{ ...rec, mor: { router_func: 'softmax' } }, /router_func for expert_choice/],
      [{ ...rec, mor: { gatting: 'delta' } }, /unknown key 'mor.gatting'/],
      [{ ...rec, mor: { threshold: 1.5 } }, /threshold must be in/],
      [{ ...preset('tiny'), mor: {} }, /mor needs a recursion section/],
      [{ ...rec, recursion: { ...rec.recursion, sharing: 'middle_sequence' }, mor: {} }, /cycle or middle_cycle/],
    ];
    for (const [cfg, re] of bad) assert.throws(() => validateConfig(cfg), (e: unknown) => e instanceof ConfigError && re.test(e.message), re.source);
  });

  test('loss-free balancing moves the bias toward under-loaded depths', () => {
    const c = morConfig('tiny-mor3-token', { balancing: 'loss_free' });
    const model = createModel(c, 1);
    updateRouterBias(c, model.params, [0.6, 0.3, 0.1]);
    assert.deepEqual(Array.from(model.params.mor?.routerBias?.f32() ?? []), [-0.001, 0.001, 0.001].map(Math.fround));
    assert.equal(model.params.mor?.routerBias?.requiresGrad, false);
  });
});
