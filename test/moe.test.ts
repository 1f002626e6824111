// Mixture-of-Experts MLPs (MOR_SPEC §10): gradients through router, experts, shared experts,
// auxiliary and z-losses; exactly top-k experts per token; dropless and capacity modes against
// a per-token reference; loss-free balancing; reduction to the dense model; config errors;
// checkpoints with the bias; FLOPs and parameter counts; engine greedy equality. Every backend.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { validateConfig, ConfigError, type ModelConfig } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { createModel, forward, modelFromParams, type Model } from '../src/model/model.js';
import { assembleParams, countParams, paramTable } from '../src/model/params.js';
import { forwardFlopsPerSequence } from '../src/model/flops.js';
import { MoeForward, expertForward, updateMoeBias } from '../src/model/moe.js';
import { expertCapacity } from '../src/model/moe-config.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { createOptimizer } from '../src/train/trainer.js';
import { Engine } from '../src/infer/engine.js';
import { backward, noGrad, parameter, tensor, zeroGrad, type Tensor } from '../src/tensor/tensor.js';
import { linear, sigmoid, softmax } from '../src/tensor/ops.js';
import { Rng } from '../src/util/rng.js';
import { centralDifference } from './helpers/numeric.js';
import { checkRoutedGrad, randomIds, routingKey } from './helpers/routed-grad.js';
import { withTempDir } from './helpers/temp-dir.js';
import { writeRepeatedJsonl } from './helpers/corpus.js';
import { runTraining, type TrainRunOptions } from '../src/train/run.js';
import { ExportError, unrollModel } from '../src/interop/unroll.js';
import { ConversionError, convertModel } from '../src/convert/convert.js';
import { forwardGreedy, generateAll } from './helpers/greedy.js';

/** A preset with its moe section overridden (and other top-level fields). */
function moeConfig(base: string, moe: object, extra: object = {}): ModelConfig {
  const b = preset(base);
  return validateConfig({ ...b, ...extra, moe: { ...(b.moe ?? { expert_intermediate_size: 44 }), ...moe } });
}




/** Per-token reference of one MoE MLP: y_t = shared(x_t) + Σ_{kept picks} w·e(x_t), each expert run on every row. */
function referenceMoe(model: Model, u: number, x: Tensor, keepOf: (t: number, e: number) => boolean): Float32Array {
  const c = model.config;
  const m = c.moe;
  const layer = model.params.layers[u]?.moe;
  assert.ok(m && layer);
  const [n, d] = x.shape as [number, number];
  const s = noGrad(() => linear(x, (layer.routers[0] as { w: Tensor }).w)).f32();
  const scores = noGrad(() => (m.router_func === 'softmax' ? softmax : sigmoid)(tensor(s, [n, m.num_experts]))).f32();
  const all = layer.experts.map((e) => noGrad(() => expertForward(e, x)).f32());
  const out = layer.shared ? noGrad(() => expertForward(layer.shared as NonNullable<typeof layer.shared>, x)).f32().slice() : new Float32Array(n * d);
  for (let t = 0; t < n; t++) {
    const order = Array.from({ length: m.num_experts }, (_, e) => e).sort((a, b) => (scores[t * m.num_experts + b] as number) - (scores[t * m.num_experts + a] as number));
    const picks = order.slice(0, m.top_k);
    const z = picks.reduce((acc, e) => acc + (scores[t * m.num_experts + e] as number), 0);
    for (const e of picks) {
      if (!keepOf(t, e)) continue;
      const w = (scores[t * m.num_experts + e] as number) / z;
      for (let j = 0; j < d; j++) out[t * d + j] = (out[t * d + j] as number) + w * ((all[e] as Float32Array)[t * d + j] as number);
    }
  }
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let err = 0;
  for (let i = 0; i < a.length; i++) err = Math.max(err, Math.abs((a[i] as number) - (b[i] as number)));
  return err;
}

/** Float32 tolerance for outputs of the scale of `ref`: a few ulps of its largest value (the
 * kernels' summation order differs between SIMD variants, and outputs here reach ~40). */
function f32Tolerance(ref: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < ref.length; i++) scale = Math.max(scale, Math.abs(ref[i] as number));
  return 1e-6 * (1 + scale);
}

/** Rows of random values (n, D) as an input of an MoE MLP. */
function randomRows(rng: Rng, n: number, d: number): Tensor {
  return tensor(Float32Array.from({ length: n * d }, () => rng.normal()), [n, d]);
}

for (const backendName of availableBackends()) {
  describe(`MoE layers on ${backendName}`, () => {
    const rng = new Rng(77);
    const B = 2;
    const T = 10;

    test('gradients: router, routed and shared experts, aux loss and z-loss (softmax and sigmoid routers)', () => {
      setBackend(backendName);
      for (const router_func of ['softmax', 'sigmoid']) {
        // large coefficients so that the auxiliary and z-loss gradients stand out in the router's
        const c = moeConfig('tiny-moe', { router_func, balance_coef: 0.5, z_loss_coef: 0.05, top_k: 2 }, { initializer_range: 0.2 });
        const model = createModel(c, 5);
        const ids = randomIds(rng, B * T, c.vocab_size);
        const names = [
          'model.layers.1.mlp.routers.0.weight',
          'model.layers.0.mlp.experts.3.gate_proj.weight',
          'model.layers.2.mlp.experts.5.down_proj.weight',
          'model.layers.3.mlp.shared_experts.up_proj.weight',
          'model.layers.1.self_attn.q_proj.weight',
        ];
        const n = checkRoutedGrad(model, ids, B, names, rng);
        assert.ok(n >= 20, `${router_func}: only ${n} coordinates checked`);
        const out = noGrad(() => forward(model, ids, B, ids));
        assert.ok((out.routingTerms['moe_aux'] ?? 0) > 0 && (out.routingTerms['moe_z_loss'] ?? 0) > 0, JSON.stringify(out.routingTerms));
      }
      // the routing losses alone: gradients of the router weights come from them (experts get none)
      const c = moeConfig('tiny-moe', { balance_coef: 1, z_loss_coef: 0.1 }, { initializer_range: 0.2 });
      const model = createModel(c, 6);
      const x = randomRows(rng, 12, c.hidden_size);
      const layer = model.params.layers[1]?.moe ?? null;
      const lossOf = (): Tensor => {
        const moe = new MoeForward(c, 'topk');
        (moe.mlpFor(layer, 1, -1) as (x: Tensor) => Tensor)(x);
        return moe.loss() as Tensor;
      };
      const w = model.params.byName.get('model.layers.1.mlp.routers.0.weight') as Tensor;
      zeroGrad([...model.params.byName.values()]);
      backward(lossOf());
      assert.equal(model.params.byName.get('model.layers.1.mlp.experts.0.up_proj.weight')?.grad ?? null, null, 'experts take no gradient from routing losses');
      const g = w.grad as Float32Array;
      const gmax = Math.max(...Array.from(g, Math.abs));
      assert.ok(gmax > 1e-4);
      for (let s = 0; s < 8; s++) {
        const i = rng.nextInt(g.length);
        const fd = centralDifference(w.f32(), i, 1e-3, () => noGrad(() => lossOf().item()));
        assert.ok(Math.abs(fd - (g[i] as number)) <= 0.03 * gmax, `router[${i}]: tape ${g[i]}, fd ${fd}`);
      }
    });

    test('gradients through an MoR model with MoE block (expert-choice)', () => {
      setBackend(backendName);
      const c = moeConfig('tiny-mor3-moe', { router_per_recursion: true }, { initializer_range: 0.2 });
      const model = createModel(c, 3);
      const ids = randomIds(rng, B * T, c.vocab_size);
      const n = checkRoutedGrad(model, ids, B, ['model.layers.1.mlp.routers.2.weight', 'model.layers.1.mlp.experts.1.up_proj.weight', 'model.mor.routers.1.weight'], rng);
      assert.ok(n >= 9, `only ${n} coordinates checked`);
    });

    test('exactly top-k distinct experts per token, the k best by score, weights summing to 1', () => {
      setBackend(backendName);
      for (const top_k of [1, 2, 3]) {
        const c = moeConfig('tiny-moe', { top_k, num_shared_experts: 0 });
        const model = createModel(c, 2);
        const out = noGrad(() => forward(model, randomIds(rng, B * T, c.vocab_size), B));
        assert.equal(out.moeSelections.length, c.num_hidden_layers);
        for (const picks of out.moeSelections) {
          assert.equal(picks.length, B * T * top_k);
          for (let t = 0; t < B * T; t++) assert.equal(new Set(picks.subarray(t * top_k, (t + 1) * top_k)).size, top_k);
        }
        for (const r of out.moeStats?.counts ?? []) assert.equal(r.slots, B * T * top_k);
      }
    });

    test('dropless: every row reaches its experts (matches the per-token reference)', () => {
      setBackend(backendName);
      for (const [router_func, shared] of [['softmax', 1], ['sigmoid', 0], ['softmax', 2]] as const) {
        const c = moeConfig('tiny-moe', { router_func, num_shared_experts: shared, top_k: 2 }, { initializer_range: 0.2 });
        const model = createModel(c, 4);
        const x = randomRows(rng, 24, c.hidden_size);
        const moe = new MoeForward(c, 'topk');
        const y = noGrad(() => (moe.mlpFor(model.params.layers[2]?.moe ?? null, 2, -1) as (x: Tensor) => Tensor)(x)).f32();
        const ref = referenceMoe(model, 2, x, () => true);
        assert.ok(maxDiff(y, ref) < 1e-5, `${router_func}/${shared}: ${maxDiff(y, ref)}`);
        assert.equal(moe.stats.counts.reduce((a, r) => a + r.dropped, 0), 0);
      }
    });

    test('capacity: each expert keeps its ⌈cf·N·k/E⌉ best-scored slots, dropped slots add 0; causal mode drops none', () => {
      setBackend(backendName);
      const c = moeConfig('tiny-moe', { capacity_factor: 0.5, top_k: 2, num_shared_experts: 1 }, { initializer_range: 0.3 });
      const model = createModel(c, 8);
      const n = 32;
      const x = randomRows(rng, n, c.hidden_size);
      const m = c.moe as NonNullable<ModelConfig['moe']>;
      const cap = expertCapacity(m, n);
      assert.equal(cap, Math.ceil((0.5 * n * 2) / 8));
      const layer = model.params.layers[1]?.moe ?? null;
      const moe = new MoeForward(c, 'topk');
      const y = noGrad(() => (moe.mlpFor(layer, 1, -1) as (x: Tensor) => Tensor)(x)).f32();
      // reference keep set: per expert, its slots ranked by score, the first `cap`
      const s = noGrad(() => softmax(linear(x, (layer?.routers[0] as { w: Tensor }).w))).f32();
      const E = m.num_experts;
      const slotsOf: Array<Array<{ t: number; score: number }>> = Array.from({ length: E }, () => []);
      for (let t = 0; t < n; t++) {
        const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => (s[t * E + b] as number) - (s[t * E + a] as number));
        for (const e of order.slice(0, 2)) (slotsOf[e] as Array<{ t: number; score: number }>).push({ t, score: s[t * E + e] as number });
      }
      const kept = new Set<string>();
      let expectDropped = 0;
      slotsOf.forEach((list, e) => {
        list.sort((a, b) => b.score - a.score || a.t - b.t);
        list.slice(0, cap).forEach((x) => kept.add(`${x.t}.${e}`));
        expectDropped += Math.max(0, list.length - cap);
      });
      assert.ok(expectDropped > 0, 'the test needs an over-full expert');
      assert.equal(moe.stats.counts[1]?.dropped, expectDropped); // router 1 of moeRouterList = layer 1
      const ref = referenceMoe(model, 1, x, (t, e) => kept.has(`${t}.${e}`));
      assert.ok(maxDiff(y, ref) < f32Tolerance(ref), `capacity output differs by ${maxDiff(y, ref)}`);
      // the dropless output differs (the dropped slots mattered), and causal mode is dropless
      const causal = new MoeForward(c, 'causal');
      const yc = noGrad(() => (causal.mlpFor(layer, 1, -1) as (x: Tensor) => Tensor)(x)).f32();
      assert.equal(causal.stats.counts[1]?.slots, 2 * n);
      assert.equal(causal.stats.counts[1]?.dropped, 0);
      const refAll = referenceMoe(model, 1, x, () => true);
      assert.ok(maxDiff(yc, refAll) < f32Tolerance(refAll), `dropless output differs by ${maxDiff(yc, refAll)}`);
      assert.ok(maxDiff(yc, y) > 1e-4);
    });

    test('a 1-expert top-1 MoE without shared experts equals the dense model with the same weights', () => {
      setBackend(backendName);
      for (const base of ['tiny', 'tiny-rec3', 'tiny-mor3', 'tiny-mor3-token', 'tiny-mor3-kvshare']) {
        const dense = createModel(preset(base), 11);
        const c = validateConfig({ ...preset(base), moe: { num_experts: 1, top_k: 1, num_shared_experts: 0, expert_intermediate_size: 176, balancing: 'none' } });
        const byName = new Map<string, Tensor>();
        const r = new Rng(3);
        for (const s of paramTable(c)) {
          const from = s.name.replace(/mlp\.experts\.0\./, 'mlp.');
          const src = dense.params.byName.get(from);
          const data = src ? src.f32().slice() : Float32Array.from({ length: s.shape.reduce((a, b) => a * b, 1) }, () => 0.02 * r.normal());
          byName.set(s.name, parameter(data, s.shape, s.name));
        }
        const moe = modelFromParams(c, assembleParams(c, byName));
        const ids = randomIds(rng, B * T, c.vocab_size);
        const a = noGrad(() => forward(dense, ids, B, ids));
        const b = noGrad(() => forward(moe, ids, B, ids));
        assert.ok(maxDiff(a.logits.f32(), b.logits.f32()) < 1e-5, `${base}: logits differ by ${maxDiff(a.logits.f32(), b.logits.f32())}`);
        assert.ok(Math.abs((a.loss?.item() ?? 0) - (b.loss?.item() ?? 1)) < 1e-5);
      }
      // sequence sharing (no MoR): the block layers repeat in a row, their experts shared by identity
      const seq = validateConfig({ ...preset('tiny-rec3'), recursion: { num_recursions: 3, sharing: 'middle_sequence', lora_rank: 0 }, moe: { expert_intermediate_size: 44, placement: 'block' } });
      const model = createModel(seq, 2);
      const ids = randomIds(rng, B * T, seq.vocab_size);
      const out = forward(model, ids, B, ids);
      assert.equal(out.moeSelections.length, 3, 'the one block layer runs at 3 positions');
      backward(out.loss as Tensor);
      assert.ok(model.params.byName.get('model.layers.1.mlp.routers.0.weight')?.grad, 'the block router gets gradients');
      assert.ok([...Array(8).keys()].some((e) => model.params.byName.get(`model.layers.1.mlp.experts.${e}.gate_proj.weight`)?.grad), 'block experts get gradients');
    });

    test('loss-free balancing: the bias moves toward balance over a few steps, and is not trained', () => {
      setBackend(backendName);
      const c = moeConfig('tiny-moe', { balancing: 'loss_free', bias_update_rate: 0.02, top_k: 1 }, { initializer_range: 0.3 });
      const model = createModel(c, 12);
      const ids = randomIds(rng, 4 * 16, c.vocab_size);
      const maxVio = (): number => {
        const out = noGrad(() => forward(model, ids, 4, ids));
        const v = (out.moeStats?.metrics()['moe_max_vio_mean'] as number) ?? NaN;
        updateMoeBias(c, model.params.layers, out.moeStats as NonNullable<typeof out.moeStats>);
        return v;
      };
      const first = maxVio();
      let last = first;
      for (let i = 0; i < 30; i++) last = maxVio();
      assert.ok(first > 0.5, `the test needs an unbalanced start (MaxVio ${first})`);
      assert.ok(last < 0.6 * first, `MaxVio ${first} → ${last}`);
      const bias = model.params.byName.get('model.layers.0.mlp.routers.0.selection_bias') as Tensor;
      assert.equal(bias.requiresGrad, false);
      assert.ok(bias.f32().some((b) => b !== 0));
      const trained = new Set(createOptimizer(model).params.map((p) => p.tensor));
      assert.equal(trained.has(bias), false, 'the optimiser must not own the bias');
    });

    test('executed FLOPs equal the static accounting and count active experts only', () => {
      setBackend(backendName);
      for (const name of ['tiny-moe', 'tiny-mor3-moe', 'tiny']) {
        const c = preset(name);
        const T2 = 24;
        const out = noGrad(() => forward(createModel(c, 2), randomIds(rng, T2, c.vocab_size), 1));
        const expected = forwardFlopsPerSequence(c, T2);
        assert.ok(Math.abs(out.flops - expected) <= 1e-9 * expected, `${name}: executed ${out.flops}, accounted ${expected}`);
      }
      // capacity dropping: the slots dropped ran no expert
      const cap = moeConfig('tiny-moe', { capacity_factor: 0.5 }, { initializer_range: 0.3 });
      const out = noGrad(() => forward(createModel(cap, 2), randomIds(rng, 2 * 24, cap.vocab_size), 2));
      const dropped = (out.moeStats?.counts ?? []).reduce((a, r) => a + r.dropped, 0);
      assert.ok(dropped > 0);
      assert.equal(out.flops, 2 * forwardFlopsPerSequence(cap, 24) - dropped * 2 * 3 * 64 * 44);
      // active MLP width (3 + 1)·I/4 = I: the MoE model's FLOPs are the dense one's plus its routers
      const dense = forwardFlopsPerSequence(preset('tiny'), 24);
      const moe = forwardFlopsPerSequence(preset('tiny-moe'), 24);
      assert.equal(moe - dense, 24 * 4 * 2 * 8 * 64);
    });
  });

  describe(`MoE decoding on ${backendName}`, () => {
    const variants: Array<[string, ModelConfig]> = [
      ['sigmoid router, no shared expert, top-2', moeConfig('tiny-moe', { router_func: 'sigmoid', num_shared_experts: 0, top_k: 2 })],
      ['MoR token-choice + MoE', moeConfig('tiny-mor3-token', { num_experts: 4, top_k: 1, num_shared_experts: 1 })],
      ['MoR KV sharing + MoE block only', moeConfig('tiny-mor3-kvshare', { placement: 'block' })],
      ['MoR cycle + per-recursion routers', moeConfig('tiny-mor3-cycle', { router_per_recursion: true })],
      ['MoR + MoE on the unique layers, loss-free bias', moeConfig('tiny-mor3', { placement: 'unique', balancing: 'loss_free' })],
    ];
    for (const [what, c] of variants) {
      test(`${what}: greedy engine output = training forward argmax (causal), every batching mode`, async () => {
        setBackend(backendName);
        const model = createModel(c, 21);
        // a non-zero selection bias must steer decoding as it steers the forward
        const r = new Rng(1);
        for (const [name, t] of model.params.byName) if (name.endsWith('selection_bias')) for (let i = 0; i < t.size; i++) t.f32()[i] = 0.05 * r.normal();
        const prompts = [Int32Array.from([3, 141, 59, 265, 35, 89]), Int32Array.from([7, 300, 2])];
        const expected = prompts.map((p) => forwardGreedy(model, p, 8));
        for (const batching of ['depth', 'sequence', 'static'] as const) {
          const engine = new Engine(model, { maxBatch: 4, batching, blockSize: 4 });
          const got = await generateAll(engine, prompts, prompts.map(() => ({ maxTokens: 8, temperature: 0 })));
          assert.deepEqual(got, expected, `${what} ${batching}`);
          assert.equal(engine.kvBytes, 0);
        }
      });
    }
  });
}

describe('MoE config, parameters and checkpoints', () => {
  test('bad moe configs are ConfigErrors naming the key', () => {
    const tiny = preset('tiny');
    const rec = preset('tiny-rec3');
    const cyc = validateConfig({ ...rec, num_hidden_layers: 3, recursion: { num_recursions: 3, sharing: 'cycle', lora_rank: 0 } });
    const e = { expert_intermediate_size: 32 };
    const bad: Array<[object, RegExp]> = [
      [{ ...tiny, moe: { ...e, num_expert: 4 } }, /unknown key 'moe.num_expert'/],
      [{ ...tiny, moe: { ...e, num_experts: 2, top_k: 3 } }, /moe.top_k \(3\) must not exceed moe.num_experts \(2\)/],
      [{ ...tiny, moe: {} }, /moe.expert_intermediate_size is required/],
      [{ ...tiny, moe: { expert_intermediate_size: 0 } }, /moe.expert_intermediate_size must be a positive integer/],
      [{ ...tiny, moe: { ...e, num_experts: 0 } }, /moe.num_experts must be a positive integer/],
      [{ ...tiny, moe: { ...e, top_k: 1.5 } }, /moe.top_k must be a positive integer/],
      [{ ...tiny, moe: { ...e, num_shared_experts: -1 } }, /moe.num_shared_experts must be an integer ≥ 0/],
      [{ ...tiny, moe: { ...e, router_func: 'tanh' } }, /moe.router_func must be one of/],
      [{ ...tiny, moe: { ...e, balancing: 'loss' } }, /moe.balancing must be one of/],
      [{ ...tiny, moe: { ...e, balance_coef: -1 } }, /moe.balance_coef must be a number ≥ 0/],
      [{ ...tiny, moe: { ...e, capacity_factor: 0 } }, /moe.capacity_factor must be null/],
      [{ ...tiny, moe: { ...e, placement: 'block' } }, /moe.placement 'block' selects no layer: a vanilla model/],
      [{ ...cyc, moe: { ...e, placement: 'unique' } }, /moe.placement 'unique' selects no layer: cycle sharing/],
      [{ ...tiny, moe: { ...e, router_per_recursion: true } }, /moe.router_per_recursion needs an MoE layer in the recursion block/],
      [{ ...rec, recursion: { ...rec.recursion, lora_rank: 2 }, moe: e }, /lora_rank > 0 is not supported/],
      [{ ...tiny, moe: [] }, /moe must be an object or null/],
    ];
    for (const [cfg, re] of bad) assert.throws(() => validateConfig(cfg), (err: unknown) => err instanceof ConfigError && re.test(err.message), re.source);
  });

  test('placement picks the layers; the table lists every expert once; counts total / unique / active', () => {
    const names = (c: ModelConfig): string[] => paramTable(c).map((s) => s.name);
    const block = names(moeConfig('tiny-mor3', { placement: 'block' }));
    assert.ok(block.includes('model.layers.1.mlp.experts.7.down_proj.weight'));
    assert.ok(block.includes('model.layers.0.mlp.gate_proj.weight') && block.includes('model.layers.2.mlp.gate_proj.weight'));
    assert.ok(!block.includes('model.layers.1.mlp.gate_proj.weight'));
    const unique = names(moeConfig('tiny-mor3', { placement: 'unique' }));
    assert.ok(unique.includes('model.layers.0.mlp.routers.0.weight') && unique.includes('model.layers.2.mlp.routers.0.weight'));
    assert.ok(unique.includes('model.layers.1.mlp.up_proj.weight'));
    const perRec = names(moeConfig('tiny-mor3', { router_per_recursion: true }));
    assert.ok(perRec.includes('model.layers.1.mlp.routers.2.weight') && !perRec.includes('model.layers.0.mlp.routers.1.weight'));
    assert.equal(new Set(perRec).size, perRec.length, 'no parameter listed twice');
    // tiny-moe: each of 4 layers stores 9 SwiGLUs of width 44 and a router; a token uses 4 of them
    const d = 64;
    const dense = countParams(preset('tiny'));
    const moe = countParams(preset('tiny-moe'));
    assert.equal(moe.unique - dense.unique, 4 * (9 * 3 * d * 44 + 8 * d - 3 * d * 176));
    assert.equal(moe.effective, moe.unique);
    assert.equal(moe.active, dense.active + 4 * 8 * d);
    const mor = countParams(preset('tiny-mor3-moe'));
    assert.ok(mor.unique < mor.effective && mor.active < mor.effective);
  });

  test('plain-Llama export and layer-tying conversion refuse MoE models with typed errors', () => {
    for (const c of [preset('tiny-moe'), moeConfig('tiny-rec3', {})]) assert.throws(() => unrollModel(createModel(c, 1)), (e: unknown) => e instanceof ExportError && /Mixture-of-Experts/.test(e.message));
    assert.throws(() => convertModel(createModel(preset('tiny-moe'), 1), { numRecursions: 2 }), (e: unknown) => e instanceof ConversionError && /dense MLPs/.test(e.message));
  });

  test('checkpoint round-trip: config.json, experts and the loss-free bias', () =>
    withTempDir('mor-moe-ckpt-', async (dir) => {
      const c = moeConfig('tiny-mor3-moe', { balancing: 'loss_free', capacity_factor: 1.25, router_per_recursion: true, router_func: 'sigmoid' });
      const model = createModel(c, 5);
      const r = new Rng(2);
      for (const [name, t] of model.params.byName) if (name.endsWith('selection_bias')) for (let i = 0; i < t.size; i++) t.f32()[i] = r.normal();
      const path = join(dir, 'ck');
      saveCheckpoint(path, model);
      const back = (await loadCheckpoint(path)).model;
      assert.deepEqual(back.config, model.config);
      for (const [name, t] of model.params.byName) assert.deepEqual(back.params.byName.get(name)?.f32(), t.f32(), name);
      assert.equal(back.params.byName.get('model.layers.1.mlp.routers.2.selection_bias')?.requiresGrad, false);
      const ids = randomIds(r, 16, c.vocab_size);
      assert.deepEqual(noGrad(() => forward(back, ids, 1).logits.f32()), noGrad(() => forward(model, ids, 1).logits.f32()));
    }));
});

describe('MoE training runs', () => {
  test('loss-free bias updates after each step, is logged, and resume is exact (bias restored)', () =>
    withTempDir('mor-moe-run-', async (root) => {
      const corpus = writeRepeatedJsonl(root);
      const configPath = join(root, 'config.json');
      writeFileSync(configPath, JSON.stringify(moeConfig('tiny-mor3-moe', { balancing: 'loss_free', bias_update_rate: 0.01, num_experts: 4, top_k: 1 })));
      const base = (out: string): TrainRunOptions => ({
        configPath, data: [corpus], outDir: out, cacheDir: join(root, 'cache'), steps: 6, batchSize: 2, seqLen: 32, lr: 1e-2, seed: 3, evalBatches: 1, measureMfu: false,
      });
      const records = (out: string): Array<Record<string, unknown>> =>
        readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>).filter((m) => m['type'] === 'train');
      const straight = join(root, 'straight');
      const split = join(root, 'split');
      await runTraining(base(straight));
      let steps = 0;
      await runTraining({ ...base(split), onMetrics: (m) => { if (m['type'] === 'train') steps++; }, shouldStop: () => steps >= 3 });
      await runTraining({ outDir: split, cacheDir: join(root, 'cache'), resume: join(split, 'checkpoint'), measureMfu: false });
      assert.deepEqual(records(split).map((m) => m['loss']), records(straight).map((m) => m['loss']));
      const last = records(straight).at(-1) as Record<string, unknown>;
      assert.equal((last['moe_load'] as number[][]).length, 3, 'one entry per MoE router (3 unique layers)');
      assert.ok(typeof last['moe_max_vio_mean'] === 'number' && Array.isArray(last['moe_entropy']) && Array.isArray(last['moe_dropped']));
      const a = (await loadCheckpoint(join(straight, 'checkpoint'))).model.params.byName;
      const b = (await loadCheckpoint(join(split, 'checkpoint'))).model.params.byName;
      const bias = a.get('model.layers.1.mlp.routers.0.selection_bias')?.f32() as Float32Array;
      assert.ok(bias.some((x) => x !== 0), 'the trainer moved the bias');
      // every step moves each bias entry by ±u or 0
      assert.ok(bias.every((x) => Math.abs(x) <= 6 * 0.01 + 1e-6));
      assert.deepEqual(b.get('model.layers.1.mlp.routers.0.selection_bias')?.f32(), bias);
    }));
});
