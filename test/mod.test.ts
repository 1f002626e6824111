// Mixture-of-Depths (MOR_SPEC §11): config validation and checkpoint round trip; in the training
// forward exact top-k counts, skipped rows untouched, causality of the threshold mode, gradients
// through router and gate, the auxiliary BCE, FLOPs of the processed rows; in the engine, the
// K/V of a routed layer holding only the tokens it processed. Runs on every backend.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { validateConfig, ConfigError, type ModelConfig } from '../src/model/config.js';
import { MOD_DEFAULTS, routedLayers } from '../src/model/mod-config.js';
import { preset } from '../src/model/presets.js';
import { assembleParams, countParams, paramTable } from '../src/model/params.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { createModel, modelFromParams } from '../src/model/model.js';
import { plainConfig, ExportError } from '../src/interop/unroll.js';
import { withTempDir } from './helpers/temp-dir.js';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { forward, type Model } from '../src/model/model.js';
import { modStack } from '../src/model/mod.js';
import { forwardFlopsPerSequence, layerFlops, modRouterFlops } from '../src/model/flops.js';
import { rowPositions } from '../src/nn/layers.js';
import { backward, noGrad, parameter, tensor, zeroGrad, type Tensor } from '../src/tensor/tensor.js';
import { createOptimizer, trainLoop } from '../src/train/trainer.js';
import { evaluateNll } from '../src/train/evaluate.js';
import { Rng } from '../src/util/rng.js';
import { centralDifference } from './helpers/numeric.js';
import { checkRoutedGrad, randomIds, routingKey } from './helpers/routed-grad.js';
import { sub } from '../src/tensor/ops.js';
import { Engine } from '../src/infer/engine.js';

function modConfig(base: string, mod: object, extra: object = {}): ModelConfig {
  const b = preset(base);
  return validateConfig({ ...b, ...extra, mod: { ...(b.mod ?? {}), ...mod } });
}

describe('MoD config', () => {
  test('presets: vanilla shapes, every other layer routed from layer 1, one router (1, D) each', () => {
    for (const [name, base, routed] of [['tiny-mod', 'tiny', [1, 3]], ['small-mod', 'small', [1, 3, 5, 7, 9, 11]]] as const) {
      const c = preset(name);
      assert.deepEqual(c.mod, MOD_DEFAULTS);
      assert.equal(c.recursion, null);
      assert.deepEqual(routedLayers(c.mod ?? MOD_DEFAULTS, c.num_hidden_layers), routed);
      const routers = paramTable(c).filter((s) => s.name.includes('mod_router'));
      assert.deepEqual(routers.map((s) => s.name), routed.map((l) => `model.layers.${l}.mod_router.weight`));
      for (const s of routers) assert.deepEqual(s.shape, [1, c.hidden_size]);
      // the routers are the only parameters added to the vanilla model
      assert.equal(countParams(c).unique, countParams(preset(base)).unique + routed.length * c.hidden_size);
    }
    assert.deepEqual(routedLayers(modConfig('small-mod', { route_every: 3, first_routed_layer: 2 }).mod ?? MOD_DEFAULTS, 12), [2, 5, 8, 11]);
  });

  test('bad mod sections are ConfigErrors naming the key', () => {
    const tiny = preset('tiny');
    const rec = preset('tiny-rec3');
    const bad: Array<[object, RegExp]> = [
      [{ ...tiny, mod: { capasity: 0.1 } }, /unknown key 'mod.capasity'/],
      [{ ...tiny, mod: { capacity: 0 } }, /mod.capacity must be a number in \(0, 1\)/],
      [{ ...tiny, mod: { capacity: 1 } }, /mod.capacity must be/],
      [{ ...tiny, mod: { capacity: '0.5' } }, /mod.capacity must be/],
      [{ ...tiny, mod: { route_every: 0 } }, /mod.route_every must be an integer ≥ 1/],
      [{ ...tiny, mod: { route_every: 1.5 } }, /mod.route_every/],
      [{ ...tiny, mod: { first_routed_layer: 0 } }, /mod.first_routed_layer must be an integer in \[1, 3\]/],
      [{ ...tiny, mod: { first_routed_layer: 4 } }, /mod.first_routed_layer/],
      [{ ...tiny, mod: { router_func: 'softmax' } }, /mod.router_func must be one of sigmoid, tanh, none/],
      [{ ...tiny, mod: { alpha: -1 } }, /mod.alpha must be a number > 0/],
      [{ ...tiny, mod: { aux_loss_coef: -0.1 } }, /mod.aux_loss_coef must be a number ≥ 0/],
      [{ ...tiny, mod: { threshold: 1 } }, /mod.threshold must be in \(0, 1\)/],
      [{ ...tiny, mod: [] }, /mod must be an object or null/],
      [{ ...tiny, mod: { toString: 1 } }, /unknown key 'mod.toString'/],
      [{ ...rec, mod: {} }, /cannot be combined with a recursion section/],
      [{ ...tiny, mor: {}, mod: {} }, /cannot be combined with a mor section/],
      [{ ...preset('tiny-mor3'), mod: {} }, /mod \(Mixture-of-Depths\)/],
      [{ ...preset('tiny-moe'), mod: {} }, /cannot be combined with a moe section/],
    ];
    for (const [cfg, re] of bad) assert.throws(() => validateConfig(cfg), (e: unknown) => e instanceof ConfigError && re.test(e.message), re.source);
    // a valid section is frozen, defaults filled in, and validates to itself through JSON
    const c = modConfig('tiny-mod', { capacity: 0.25, router_func: 'none' });
    assert.ok(Object.isFrozen(c.mod));
    assert.deepEqual(c.mod, { ...MOD_DEFAULTS, capacity: 0.25, router_func: 'none' });
    assert.deepEqual(validateConfig(JSON.parse(JSON.stringify(c))), c);
    assert.equal(validateConfig({ ...preset('tiny'), mod: null }).mod, null);
  });

  test('a MoD model round-trips through a checkpoint (config.json and router weights)', async () => {
    await withTempDir('mor-mod-ckpt-', async (dir) => {
      const c = modConfig('tiny-mod', { capacity: 0.25, threshold: 0.4, aux_loss_coef: 0.01 });
      const model = createModel(c, 3);
      const path = join(dir, 'ck');
      saveCheckpoint(path, model);
      const raw = JSON.parse(readFileSync(join(path, 'config.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(raw['mod'], c.mod);
      const back = await loadCheckpoint(path, { optimizer: false });
      assert.deepEqual(back.model.config, c);
      const w = back.model.params.modRouters?.[1];
      assert.ok(w && w.kind === 'linear');
      assert.deepEqual(Array.from(w.w.f32()), Array.from(model.params.byName.get('model.layers.3.mod_router.weight')?.f32() ?? []));
    });
  });

  test('a MoD model is not exported as a plain Llama', () => {
    assert.throws(() => plainConfig(preset('tiny-mod')), (e: unknown) => e instanceof ExportError && /Mixture-of-Depths routers/.test(e.message));
  });
});




/** Rows (b·T + t) of each sequence a selection holds: counts per sequence. */
function countsPerSequence(rows: Int32Array, batch: number, T: number): number[] {
  const counts = new Array<number>(batch).fill(0);
  for (const r of rows) counts[Math.floor(r / T)] = (counts[Math.floor(r / T)] as number) + 1;
  return counts;
}

for (const backendName of availableBackends()) {
  describe(`MoD forward on ${backendName}`, () => {
    const rng = new Rng(123);
    const B = 2;
    const T = 24;

    test('top-k mode selects exactly k = max(1, ⌊capacity·T⌋) rows per sequence at every routed layer', () => {
      setBackend(backendName);
      for (const [capacity, len] of [[0.125, 24], [0.25, 24], [0.125, 5], [0.3, 17]] as const) {
        const c = modConfig('tiny-mod', { capacity });
        const model = createModel(c, 1);
        const out = noGrad(() => forward(model, randomIds(rng, B * len, c.vocab_size), B));
        const k = Math.max(1, Math.floor(capacity * len));
        const stats = out.stats;
        assert.ok(stats);
        assert.equal(stats.selectedRows.length, 2, 'one entry per routed layer (1 and 3)');
        for (const rows of stats.selectedRows) assert.deepEqual(countsPerSequence(rows, B, len), [k, k], `capacity ${capacity}, T ${len}`);
        assert.deepEqual(stats.selectedFraction, [k / len, k / len]);
      }
    });

    test('a routed layer leaves the rows it skips bit-for-bit unchanged and moves the rows it takes', () => {
      setBackend(backendName);
      for (const mode of ['topk', 'causal'] as const) {
        // one routed layer (1) and identity full layers: any change to h is that layer's
        const c = modConfig('tiny-mod', { route_every: 8, capacity: 0.25 }, { initializer_range: 0.2 });
        const model = createModel(c, 2);
        const N = B * T;
        const hIn = tensor(Float32Array.from({ length: N * c.hidden_size }, () => rng.normal()), [N, c.hidden_size]);
        const res = noGrad(() => modStack(c, model.params, hIn, rowPositions(B, T), B, (x) => x, { mode }));
        const sel = new Set(res.stats.selectedRows[0]);
        assert.ok(sel.size > 0 && sel.size < N, `${mode}: ${sel.size} of ${N} rows selected`);
        const a = hIn.f32();
        const b = res.h.f32();
        const D = c.hidden_size;
        for (let r = 0; r < N; r++) {
          let diff = 0;
          for (let j = 0; j < D; j++) diff = Math.max(diff, Math.abs((a[r * D + j] as number) - (b[r * D + j] as number)));
          if (sel.has(r)) assert.ok(diff > 1e-4, `${mode}: selected row ${r} did not change`);
          else assert.equal(diff, 0, `${mode}: skipped row ${r} changed by ${diff}`);
        }
      }
    });

    test('a zero gate makes routed layers identity: MoD = the vanilla model of its full layers', () => {
      setBackend(backendName);
      // raw gate g = z and zero routers: g = 0, so h + 0·(Layer(h) − h) = h for the selected rows too
      const c = modConfig('tiny-mod', { router_func: 'none', aux_loss_coef: 0 });
      const mod = createModel(c, 8);
      for (const [name, t] of mod.params.byName) if (name.includes('mod_router')) t.f32().fill(0);
      // the vanilla 2-layer model whose layers 0 and 1 are MoD's full layers 0 and 2
      const v = validateConfig({ ...preset('tiny'), num_hidden_layers: 2 });
      const byName = new Map<string, Tensor>();
      for (const s of paramTable(v)) {
        const src = mod.params.byName.get(s.name.replace('model.layers.1.', 'model.layers.2.')) as Tensor;
        byName.set(s.name, parameter(src.f32().slice(), s.shape, s.name));
      }
      const vanilla = modelFromParams(v, assembleParams(v, byName));
      const ids = randomIds(rng, B * T, c.vocab_size);
      for (const routing of ['topk', 'causal'] as const) {
        // z = 0 everywhere: a threshold under 0.5 lets every row through in causal mode
        const a = noGrad(() => forward(mod, ids, B, ids, { routing, threshold: 0.4 }));
        const b = noGrad(() => forward(vanilla, ids, B, ids));
        const la = a.logits.f32();
        const lb = b.logits.f32();
        let err = 0;
        for (let i = 0; i < la.length; i++) err = Math.max(err, Math.abs((la[i] as number) - (lb[i] as number)));
        assert.ok(err < 1e-5, `${routing}: max logit difference ${err}`);
        assert.ok((a.stats?.selectedRows[0]?.length ?? 0) > 0, `${routing}: the routed layers did select rows`);
      }
    });

    test('causal mode: logits at t do not depend on tokens after t (top-k mode does look ahead)', () => {
      setBackend(backendName);
      // a sigmoid gate (g ≈ 0.5 at init) lets layer 1 move its rows enough that layer 3's
      // threshold decisions come out mixed at init, so both routed layers really route
      const c = modConfig('tiny-mod', { router_func: 'sigmoid' }, { initializer_range: 0.1 });
      const model = createModel(c, 3);
      const len = 16;
      const cut = 7;
      const V = c.vocab_size;
      let lookahead = 0;
      for (let trial = 0; trial < 4; trial++) {
        const ids = randomIds(rng, len, V);
        const ids2 = ids.slice();
        for (let t = cut + 1; t < len; t++) ids2[t] = ((ids2[t] as number) + 17) % V;
        const run = (x: Int32Array, routing: 'causal' | 'topk') => noGrad(() => forward(model, x, 1, undefined, { routing }));
        const a = run(ids, 'causal');
        const b = run(ids2, 'causal');
        // the threshold decisions vary (not all or nothing), so the routed layers really route
        for (const f of a.stats?.selectedFraction ?? []) assert.ok(f > 0 && f < 1, `selected fraction ${f}`);
        const la = a.logits.f32();
        const lb = b.logits.f32();
        let err = 0;
        let scale = 0;
        for (let i = 0; i < (cut + 1) * V; i++) {
          err = Math.max(err, Math.abs((la[i] as number) - (lb[i] as number)));
          scale = Math.max(scale, Math.abs(la[i] as number));
        }
        assert.ok(err <= 1e-5 * scale, `logits before the change moved by ${err}`);
        let after = 0;
        for (let i = (cut + 1) * V; i < la.length; i++) after = Math.max(after, Math.abs((la[i] as number) - (lb[i] as number)));
        assert.ok(after > 1e-4, 'logits after the change did not move');
        // top-k ranks the whole sequence: a change after the cut can reselect tokens before it
        const ta = run(ids, 'topk').stats?.selectedRows ?? [];
        const tb = run(ids2, 'topk').stats?.selectedRows ?? [];
        ta.forEach((rows, i) => {
          const early = (r: Int32Array) => JSON.stringify(Array.from(r).filter((t) => t <= cut));
          if (early(rows) !== early(tb[i] as Int32Array)) lookahead++;
        });
      }
      assert.ok(lookahead > 0, 'top-k selection before the cut never changed: the comparison above would not see a look-ahead');
    });

    test('finite-difference gradients through router, gate, gathered layers and the aux BCE', () => {
      setBackend(backendName);
      for (const router_func of ['sigmoid', 'tanh', 'none'] as const) {
        // larger init than 0.02 and a strong aux BCE, so every path stands above float32 resolution
        const c = modConfig('tiny-mod', { router_func, capacity: 0.25, aux_loss_coef: 0.5 }, { initializer_range: 0.2 });
        const model = createModel(c, 5);
        const ids = randomIds(rng, B * 12, c.vocab_size);
        const n = checkRoutedGrad(model, ids, B, ['model.layers.1.mod_router.weight', 'model.layers.3.mod_router.weight', 'model.layers.1.mlp.down_proj.weight', 'model.layers.3.self_attn.q_proj.weight', 'model.layers.2.mlp.up_proj.weight'], rng, 8);
        assert.ok(n >= 15, `${router_func}: only ${n} coordinates checked`);
      }
    });

    test('aux BCE: the loss term is mean BCE(z, top-k membership) per routed layer, and it trains the routers to predict top-k', () => {
      setBackend(backendName);
      // one routed layer behind an identity stack: z = h·wᵀ of the input rows, checkable by hand
      const c = modConfig('tiny-mod', { route_every: 8, capacity: 0.25, aux_loss_coef: 0.3 });
      const model = createModel(c, 6);
      const N = B * T;
      const D = c.hidden_size;
      const h = tensor(Float32Array.from({ length: N * D }, () => rng.normal()), [N, D]);
      const res = noGrad(() => modStack(c, model.params, h, rowPositions(B, T), B, (x) => x, { mode: 'topk' }));
      const w = model.params.byName.get('model.layers.1.mod_router.weight')?.f32() ?? new Float32Array(0);
      const H = h.f32();
      const z = Array.from({ length: N }, (_, r) => {
        let acc = 0;
        for (let j = 0; j < D; j++) acc += (H[r * D + j] as number) * (w[j] as number);
        return acc;
      });
      const k = Math.floor(0.25 * T);
      let bce = 0;
      for (let b = 0; b < B; b++) {
        const order = Array.from({ length: T }, (_, t) => t).sort((x, y) => (z[b * T + y] as number) - (z[b * T + x] as number));
        const top = new Set(order.slice(0, k));
        for (let t = 0; t < T; t++) {
          const zt = z[b * T + t] as number;
          const y = top.has(t) ? 1 : 0;
          bce += Math.max(zt, 0) - zt * y + Math.log1p(Math.exp(-Math.abs(zt)));
        }
      }
      bce /= N;
      assert.ok(Math.abs((res.terms['aux_bce'] ?? NaN) - bce) < 1e-4 * Math.max(1, bce), `aux_bce ${res.terms['aux_bce']}, by hand ${bce}`);
      assert.ok(Math.abs((res.routingLoss?.item() ?? NaN) - 0.3 * bce) < 1e-4);
      // in the model's loss: total = LM + coef · Σ_l BCE_l (both routed layers of tiny-mod)
      const full = createModel(modConfig('tiny-mod', { aux_loss_coef: 0.3 }), 6);
      const ids = randomIds(rng, B * T, c.vocab_size);
      const out = noGrad(() => forward(full, ids, B, ids));
      assert.ok(Math.abs((out.loss?.item() ?? 0) - (out.lmLoss?.item() ?? 0) - 0.3 * (out.routingTerms['aux_bce'] ?? NaN)) < 1e-4);
      // causal mode adds no routing loss
      assert.equal(noGrad(() => forward(full, ids, B, ids, { routing: 'causal' })).routingTerms['aux_bce'], undefined);
      // training on the BCE alone (routers only) makes the threshold decision agree with top-k
      const c2 = modConfig('tiny-mod', { aux_loss_coef: 1 });
      const m2 = createModel(c2, 7);
      const opt = createOptimizer(m2, { weightDecay: 0 });
      const batch = randomIds(rng, B * T, c2.vocab_size);
      const accuracy = () => Math.min(...(noGrad(() => forward(m2, batch, B)).stats?.samplingAccuracy ?? [0]));
      const before = accuracy();
      const routers = [...m2.params.byName.entries()].filter(([n]) => n.includes('mod_router')).map(([, t]) => t);
      for (let step = 0; step < 100; step++) {
        zeroGrad([...m2.params.byName.values()]);
        const o = forward(m2, batch, B, batch);
        assert.ok(o.loss && o.lmLoss);
        backward(sub(o.loss, o.lmLoss)); // the routing loss: the aux BCE alone
        for (const [n, t] of m2.params.byName) if (!n.includes('mod_router') && t.grad) t.grad.fill(0);
        noGrad(() => opt.step(0.1));
      }
      assert.ok(routers.length === 2);
      const afterAcc = accuracy();
      assert.ok(afterAcc > 0.95 && afterAcc > before, `sampling accuracy ${before} → ${afterAcc}`);
    });

    test('training loop metrics carry the routing stats per routed layer; validation reports causal and top-k NLL', async () => {
      setBackend(backendName);
      const c = preset('tiny-mod');
      const model = createModel(c, 4);
      const len = 16;
      const data = Uint16Array.from({ length: 4000 }, (_, i) => (i * 31 + (i >> 3)) % c.vocab_size);
      let cursor = 0;
      const source = {
        next: () => {
          const inputs = Int32Array.from({ length: B * len }, (_, i) => data[(cursor + i) % data.length] as number);
          const targets = Int32Array.from({ length: B * len }, (_, i) => data[(cursor + i + 1) % data.length] as number);
          cursor += B * len;
          return { inputs, targets, batchSize: B, seqLen: len };
        },
        getState: () => cursor,
      };
      const records: Array<Record<string, unknown>> = [];
      const state = { step: 0, tokensSeen: 0, flopsSeen: 0, elapsedSeconds: 0, dataState: null, lastLoss: null };
      const evaluate = (m: Model) => {
        const ev = evaluateNll(m, data, B, len, 2, 'causal');
        return { ...ev, nllTopk: evaluateNll(m, data, B, len, 2, 'topk').nll };
      };
      await trainLoop(model, source, createOptimizer(model), state, { schedule: { kind: 'constant', peakLr: 3e-3, totalSteps: 2, warmupSteps: 1 }, evaluate, onMetrics: (r) => records.push(r) });
      const train = records.filter((r) => r['type'] === 'train');
      assert.equal(train.length, 2);
      for (const r of train) {
        assert.deepEqual(r['selected_fraction'], [2 / len, 2 / len]);
        assert.equal((r['sampling_accuracy'] as number[]).length, 2);
        assert.ok((r['aux_bce'] as number) > 0);
        assert.equal(r['flops'], 3 * B * forwardFlopsPerSequence(c, len), 'training FLOPs = 3 × the processed rows');
      }
      const ev = records.find((r) => r['type'] === 'eval');
      assert.ok(ev && Number.isFinite(ev['val_nll']) && Number.isFinite(ev['val_nll_topk']));
      assert.notEqual(ev['val_nll'], ev['val_nll_topk'], 'causal and top-k routing are different figures');
    });

    test('FLOPs count only the processed rows: executed = accounted in top-k mode, = the causal selection otherwise', () => {
      setBackend(backendName);
      for (const name of ['tiny-mod', 'tiny']) {
        const c = preset(name);
        const model = createModel(c, 2);
        const len = 32;
        const out = noGrad(() => forward(model, randomIds(rng, len, c.vocab_size), 1));
        const expected = forwardFlopsPerSequence(c, len);
        assert.ok(Math.abs(out.flops - expected) <= 1e-9 * expected, `${name}: executed ${out.flops}, accounted ${expected}`);
      }
      const c = preset('tiny-mod');
      const model = createModel(c, 2);
      const len = 32;
      const causal = noGrad(() => forward(model, randomIds(rng, len, c.vocab_size), 1, undefined, { routing: 'causal' }));
      const n = (causal.stats?.selectedRows ?? []).map((r) => r.length);
      const full = layerFlops(c, len, (len * (len + 1)) / 2);
      const byHand = 2 * len * c.vocab_size * c.hidden_size + 2 * full + n.reduce((a, k) => a + layerFlops(c, k, (k * (k + 1)) / 2) + modRouterFlops(c, len), 0);
      assert.ok(n.some((k) => k !== 4), 'the causal selection differs from top-k (else this repeats the check above)');
      assert.ok(Math.abs(causal.flops - byHand) <= 1e-9 * byHand, `causal: executed ${causal.flops}, by hand ${byHand}`);
      // half the layers at 12.5%: well under the vanilla model's FLOPs
      assert.ok(forwardFlopsPerSequence(preset('small-mod'), 256) < 0.65 * forwardFlopsPerSequence(preset('small'), 256));
    });
  });
}

for (const backendName of availableBackends()) {
  describe(`MoD decoding on ${backendName}`, () => {
    test('the K/V stream of a routed layer holds exactly the tokens that ran it, at their positions (prefill and decode)', async () => {
      setBackend(backendName);
      const c = modConfig('tiny-mod', {}, { initializer_range: 0.1 });
      const model = createModel(c, 11);
      const prompt = Int32Array.from({ length: 30 }, (_, i) => (i * 37 + 5) % c.vocab_size);
      const engine = new Engine(model, { maxBatch: 1, blockSize: 4 });
      const runner = engine.runner;
      const seq = runner.newSequence();
      const control = { maxDepth: 1, threshold: c.mod?.threshold ?? 0.5, exitConfidence: null };
      const { logits } = runner.prefill(seq, prompt, control);
      // decode 6 more tokens greedily, one at a time, through the step functions
      const ids = Array.from(prompt);
      let last = logits;
      for (let step = 0; step < 6; step++) {
        let best = 0;
        for (let v = 1; v < c.vocab_size; v++) if ((last[v] as number) > (last[best] as number)) best = v;
        ids.push(best);
        const rows = runner.newTokens(seq, [best], ids.length - 1, control);
        runner.enter(rows, Int32Array.of(best));
        while (rows.some((r) => r.next === 'block')) runner.block(rows.filter((r) => r.next === 'block'));
        last = runner.exit(rows, [true]);
      }
      // the causal training forward over the same tokens says which positions each routed layer ran
      const n = ids.length; // every token was run: 30 at prefill, 6 one by one
      const out = noGrad(() => forward(model, Int32Array.from(ids), 1, undefined, { routing: 'causal' }));
      const selected = out.stats?.selectedRows ?? [];
      assert.equal(seq.streams.length, c.num_hidden_layers, 'one stream per layer');
      const pool = runner.pool;
      const positionsOf = (l: number): number[] => {
        const st = seq.streams[l];
        assert.ok(st);
        return Array.from({ length: st.length }, (_, i) => pool.posPool[(st.blocks[Math.floor(i / pool.blockSize)] as number) * pool.blockSize + (i % pool.blockSize)] as number);
      };
      const all = Array.from({ length: n }, (_, t) => t);
      assert.deepEqual(positionsOf(0), all, 'full layer 0 caches every token');
      assert.deepEqual(positionsOf(2), all, 'full layer 2 caches every token');
      for (const [i, l] of [1, 3].entries()) {
        const want = Array.from(selected[i] ?? []);
        assert.ok(want.length > 0 && want.length < n, `layer ${l}: ${want.length} of ${n} tokens processed (a real mix)`);
        assert.deepEqual(positionsOf(l), want, `layer ${l} caches only the tokens it processed`);
      }
      assert.ok(runner.sequenceBytes(seq) < c.num_hidden_layers * Math.ceil(n / 4) * pool.bytesPerBlock, 'less K/V than a vanilla model');
      runner.releaseSequence(seq);
      assert.equal(pool.bytesInUse, 0);
    });

    test('greedy decoding equals the causal forward at another threshold, and a higher threshold runs fewer tokens', async () => {
      setBackend(backendName);
      const c = modConfig('tiny-mod', {}, { initializer_range: 0.1 });
      const model = createModel(c, 12);
      const prompt = Int32Array.from([5, 17, 300, 2, 99, 41, 7]);
      const V = c.vocab_size;
      const greedy = (threshold: number): number[] => {
        const seq = Array.from(prompt);
        const toks: number[] = [];
        for (let i = 0; i < 8; i++) {
          const lg = noGrad(() => forward(model, Int32Array.from(seq), 1, undefined, { routing: 'causal', threshold }).logits.f32());
          let best = 0;
          for (let v = 1; v < V; v++) if ((lg[(seq.length - 1) * V + v] as number) > (lg[(seq.length - 1) * V + best] as number)) best = v;
          toks.push(best);
          seq.push(best);
        }
        return toks;
      };
      for (const threshold of [0.45, 0.55]) {
        const engine = new Engine(model, { maxBatch: 2, batching: 'depth', blockSize: 4 });
        const h = engine.submit(prompt, { maxTokens: 8, temperature: 0, threshold });
        await engine.runUntilIdle();
        assert.deepEqual((await h.result).tokens, greedy(threshold), `threshold ${threshold}`);
      }
      const frac = (threshold: number) => (noGrad(() => forward(model, prompt, 1, undefined, { routing: 'causal', threshold })).stats?.selectedRows ?? []).reduce((a, r) => a + r.length, 0);
      assert.ok(frac(0.55) < frac(0.45), 'a higher threshold processes fewer tokens');
    });
  });
}
