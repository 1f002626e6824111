// SVD-initialised relaxation (MOR_SPEC §8): at full rank the converted model computes its source
// (logits within 1e-4) under every sharing, with a depth that needs added positions too; ranks
// are capped at min(r, in, out) per matrix; impossible conversions are typed errors naming the
// problem; --mor adds fresh routers.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig, type SharingStrategy } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { createModel, forward, type Model } from '../src/model/model.js';
import { LAYER_MATRICES, loraParamName, matrixShape } from '../src/model/params.js';
import { noGrad } from '../src/tensor/tensor.js';
import { ConversionError, convertModel, type InitRule } from '../src/convert/convert.js';
import { ConfigError } from '../src/model/config-error.js';

function sourceModel(L: number, seed = 2): Model {
  const m = createModel(validateConfig({ ...preset('tiny'), num_hidden_layers: L }), seed);
  let k = 0;
  // norm scales away from 1, so the shared slot's scale differs from each tied layer's
  for (const [name, t] of m.params.byName) if (name.includes('layernorm')) for (let i = 0; i < t.size; i++) t.f32()[i] = 0.4 + ((k++ * 0.618) % 1.2);
  return m;
}

const IDS = Int32Array.from({ length: 48 }, (_, i) => (i * 131 + 7) % 512);

function logits(m: Model): Float32Array {
  return noGrad(() => forward(m, IDS, 2).logits.f32());
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs((a[i] as number) - (b[i] as number)));
  return d;
}

describe('--lora-rank full reproduces the source', () => {
  const cases: Array<{ L: number; nr: number; sharing: SharingStrategy; init: InitRule }> = [
    { L: 8, nr: 3, sharing: 'middle_cycle', init: 'average' },
    { L: 8, nr: 2, sharing: 'cycle', init: 'average' },
    { L: 8, nr: 2, sharing: 'cycle', init: 'stepwise' },
    { L: 8, nr: 3, sharing: 'middle_cycle', init: 'random' },
    { L: 7, nr: 2, sharing: 'middle_cycle', init: 'average' }, // one added position
    { L: 7, nr: 3, sharing: 'cycle', init: 'lower' }, //          two added positions
    { L: 8, nr: 2, sharing: 'sequence', init: 'upper' },
    { L: 8, nr: 2, sharing: 'middle_sequence', init: 'average' },
  ];
  for (const { L, nr, sharing, init } of cases) {
    test(`L = ${L}, ${sharing}, Nr = ${nr}, ${init}: logits within 1e-4`, () => {
      const source = sourceModel(L);
      const target = convertModel(source, { numRecursions: nr, sharing, init, loraRank: 'full' });
      for (const m of LAYER_MATRICES) {
        const [out, inp] = matrixShape(target.config, m);
        assert.deepEqual(target.params.byName.get(loraParamName(0, m, 'A'))?.shape, [Math.min(out, inp), inp]);
      }
      const d = maxAbsDiff(logits(target), logits(source));
      assert.ok(d < 1e-4, `max |Δ logit| = ${d}`);
    });
  }

  test('a lower rank is an approximation: closer to the source as the rank grows, B = U·S and A = Vᵀ', () => {
    const source = sourceModel(8);
    const ref = logits(source);
    const diffs = [2, 16, 'full' as const].map((r) => maxAbsDiff(logits(convertModel(source, { numRecursions: 3, loraRank: r })), ref));
    assert.ok((diffs[0] as number) > (diffs[1] as number) && (diffs[1] as number) > (diffs[2] as number), `errors ${diffs.join(' > ')}`);
    const t = convertModel(source, { numRecursions: 3, loraRank: 4 });
    const A = t.params.byName.get(loraParamName(2, 'q_proj', 'A'))?.f32() as Float32Array; // (4, 64)
    for (let a = 0; a < 4; a++) {
      let norm = 0;
      for (let j = 0; j < 64; j++) norm += (A[a * 64 + j] as number) ** 2;
      assert.ok(Math.abs(norm - 1) < 1e-5, `row ${a} of A = Vᵀ has unit norm, got ${norm}`);
    }
  });

  test('a position whose layer IS the shared one gets B = 0 and a non-zero A (it can still train)', () => {
    // stepwise, cycle Nr = 2, L = 8: slot 0 is layer 0, so position 0's residual is zero
    const t = convertModel(sourceModel(8), { numRecursions: 2, sharing: 'cycle', init: 'stepwise', loraRank: 4 });
    const B = t.params.byName.get(loraParamName(0, 'up_proj', 'B'))?.f32() as Float32Array;
    const A = t.params.byName.get(loraParamName(0, 'up_proj', 'A'))?.f32() as Float32Array;
    assert.ok(B.every((v) => v === 0));
    assert.ok(A.some((v) => v !== 0));
  });
});

describe('LoRA ranks and errors', () => {
  const source = sourceModel(6);

  test('a rank above a matrix\'s size is capped at min(r, in, out) per matrix, and said', () => {
    const lines: string[] = [];
    const t = convertModel(source, { numRecursions: 2, loraRank: 1000, onLog: (s) => lines.push(s) });
    for (const m of LAYER_MATRICES) {
      const [out, inp] = matrixShape(t.config, m);
      assert.deepEqual(t.params.byName.get(loraParamName(3, m, 'B'))?.shape, [out, Math.min(out, inp)]);
    }
    assert.match(lines.join('\n'), /capped at min\(r, in, out\) per matrix: q_proj 64, k_proj 32, v_proj 32, o_proj 64, gate_proj 64, up_proj 64, down_proj 64/);
    const r40 = convertModel(source, { numRecursions: 2, loraRank: 40 });
    assert.deepEqual(r40.params.byName.get(loraParamName(1, 'k_proj', 'A'))?.shape, [32, 64]);
    assert.deepEqual(r40.params.byName.get(loraParamName(1, 'q_proj', 'A'))?.shape, [40, 64]);
  });

  test('a rank below 1 or not an integer is a ConversionError naming --lora-rank', () => {
    for (const r of [0, -3, 1.5, Number.NaN]) {
      assert.throws(() => convertModel(source, { numRecursions: 2, loraRank: r }), (e: unknown) => e instanceof ConversionError && /--lora-rank must be an integer ≥ 1 or 'full'/.test(e.message));
    }
  });

  test('more recursions than layers is a ConversionError saying how many layers there are', () => {
    assert.throws(
      () => convertModel(source, { numRecursions: 5 }),
      (e: unknown) => e instanceof ConversionError && e.code === 'E_ARGUMENT' && /more recursions than layers: 5 recursions .* L − 2 = 4 middle layers/.test(e.message),
    );
    assert.throws(() => convertModel(source, { numRecursions: 7, sharing: 'cycle' }), /more recursions than layers: 7 recursions .*the source has 6 layers/);
  });

  test('a source that is already recursive, or a bad option, is refused with a typed error', () => {
    const rec = convertModel(source, { numRecursions: 2 });
    assert.throws(() => convertModel(rec, { numRecursions: 2 }), (e: unknown) => e instanceof ConversionError && /must be a vanilla model/.test(e.message));
    assert.throws(() => convertModel(source, { numRecursions: 2, capacities: [1, 0.5] }), /--capacities .* needs --mor expert/);
    assert.throws(() => convertModel(source, { numRecursions: 2, sharing: 'sequence', mor: 'expert_choice' }), /--mor needs cycle or middle_cycle sharing/);
    assert.throws(() => convertModel(source, { numRecursions: 2, mor: 'expert_choice', capacities: [0.5, 1] }), ConfigError);
  });
});

describe('--mor adds fresh routers for uptraining', () => {
  test('expert-choice with capacities: one router per recursion, the converted layers kept', () => {
    const source = sourceModel(8);
    const t = convertModel(source, { numRecursions: 3, loraRank: 8, mor: 'expert_choice', capacities: [1, 0.5, 0.25] });
    assert.equal(t.config.mor?.routing, 'expert_choice');
    assert.deepEqual(t.config.mor?.capacities, [1, 0.5, 0.25]);
    assert.equal(t.params.mor?.routers.length, 3);
    assert.ok(t.params.mor?.routers.every((r) => r.kind === 'linear' && r.w.f32().some((v) => v !== 0)));
    const plain = convertModel(source, { numRecursions: 3, loraRank: 8 });
    assert.deepEqual(t.params.byName.get('model.layers.1.mlp.up_proj.weight')?.f32(), plain.params.byName.get('model.layers.1.mlp.up_proj.weight')?.f32());
    const out = forward(t, IDS, 2, IDS);
    assert.ok(Number.isFinite(out.loss?.item()));
    assert.ok(out.stats !== null);
  });

  test('token-choice: one router d → Nr and its balancing bias', () => {
    const t = convertModel(sourceModel(6), { numRecursions: 2, sharing: 'cycle', mor: 'token_choice' });
    assert.equal(t.config.mor?.routing, 'token_choice');
    assert.deepEqual(t.params.mor?.tokenRouter?.kind === 'linear' ? t.params.mor.tokenRouter.w.shape : null, [2, 64]);
    assert.ok(Number.isFinite(forward(t, IDS, 2, IDS).loss?.item()));
  });
});
