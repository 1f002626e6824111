// The init rules of a conversion (MOR_SPEC §8), checked by weights: which source layers each
// shared slot is picked from or averaged over (norm scales included), what is copied, and how a
// depth that Nr does not divide is handled (positions added, or layers dropped by stepwise).
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { validateConfig, type SharingStrategy } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { createModel, type Model } from '../src/model/model.js';
import { LAYER_MATRICES, layerParamName } from '../src/model/params.js';
import { convertModel, planConversion, stepwiseIndices, type InitRule } from '../src/convert/convert.js';

/** A vanilla tiny-shaped model of L layers whose norm scales are not all ones. */
function sourceModel(L: number, seed = 1): Model {
  const m = createModel(validateConfig({ ...preset('tiny'), num_hidden_layers: L }), seed);
  let k = 0;
  for (const [name, t] of m.params.byName) if (name.includes('layernorm')) for (let i = 0; i < t.size; i++) t.f32()[i] = 0.5 + ((k++ * 0.618) % 1);
  return m;
}

const LAYER_TENSORS = (u: number): string[] => [
  `model.layers.${u}.input_layernorm.weight`,
  `model.layers.${u}.post_attention_layernorm.weight`,
  ...LAYER_MATRICES.map((m) => layerParamName(u, m)),
];

function get(model: Model, name: string): Float32Array {
  const t = model.params.byName.get(name);
  assert.ok(t, `parameter ${name}`);
  return t.f32();
}

/** Unique layer u of `target` is the mean of source layers `from` (every matrix and both norm scales). */
function assertSlotIs(target: Model, u: number, source: Model, from: readonly number[]): void {
  LAYER_TENSORS(u).forEach((name, k) => {
    const got = get(target, name);
    const srcs = from.map((s) => get(source, LAYER_TENSORS(s)[k] as string));
    for (let i = 0; i < got.length; i++) {
      const want = srcs.reduce((acc, a) => acc + (a[i] as number), 0) / srcs.length;
      assert.ok(Math.abs((got[i] as number) - want) < 1e-6, `${name}[${i}]: ${got[i]} vs the mean of layers ${from.join(', ')} ${want}`);
    }
  });
}

describe('init rules pick or average the layers MOR_SPEC §8 names', () => {
  // L = 8, middle_cycle, Nr = 3: middle layers 1..6, K = 2, slot 1 ← {1, 3, 5}, slot 2 ← {2, 4, 6}
  const source = sourceModel(8);
  const expected: Record<Exclude<InitRule, 'random'>, number[][]> = {
    stepwise: [[1], [6]], //            round(linspace(0, 5, 2)) = 0, 5 of the middle
    average: [[1, 3, 5], [2, 4, 6]],
    lower: [[1], [2]],
    upper: [[5], [6]],
  };
  for (const [init, slots] of Object.entries(expected) as Array<[InitRule, number[][]]>) {
    test(`${init}, middle_cycle Nr = 3: slots from ${slots.map((s) => `{${s.join(',')}}`).join(' ')}; ends, embedding and final norm copied`, () => {
      const target = convertModel(source, { numRecursions: 3, sharing: 'middle_cycle', init });
      assert.equal(target.config.num_hidden_layers, 8);
      assert.equal(target.plan.numUnique, 4);
      assertSlotIs(target, 0, source, [0]);
      slots.forEach((from, i) => assertSlotIs(target, 1 + i, source, from));
      assertSlotIs(target, 3, source, [7]);
      assert.deepEqual(get(target, 'model.embed_tokens.weight'), get(source, 'model.embed_tokens.weight'));
      assert.deepEqual(get(target, 'model.norm.weight'), get(source, 'model.norm.weight'));
    });
  }

  test('random: fresh matrices, ones for the norm scales of the shared slots', () => {
    const target = convertModel(source, { numRecursions: 3, init: 'random' });
    for (const u of [1, 2]) {
      assert.ok(get(target, `model.layers.${u}.input_layernorm.weight`).every((v) => v === 1));
      const q = get(target, layerParamName(u, 'q_proj'));
      for (let s = 0; s < 8; s++) assert.notDeepEqual(q, get(source, layerParamName(s, 'q_proj')));
    }
    assertSlotIs(target, 0, source, [0]);
  });

  test('cycle, Nr = 2: stepwise takes layers round(linspace(0, 7, 4)) = 0, 2, 5, 7; average ties {i, i + 4}', () => {
    const stepwise = convertModel(source, { numRecursions: 2, sharing: 'cycle', init: 'stepwise' });
    [0, 2, 5, 7].forEach((s, u) => assertSlotIs(stepwise, u, source, [s]));
    const average = convertModel(source, { numRecursions: 2, sharing: 'cycle', init: 'average' });
    for (let u = 0; u < 4; u++) assertSlotIs(average, u, source, [u, u + 4]);
  });

  test('sequence, Nr = 2: average ties consecutive layers {2i, 2i + 1}', () => {
    const target = convertModel(source, { numRecursions: 2, sharing: 'sequence', init: 'average' });
    for (let u = 0; u < 4; u++) assertSlotIs(target, u, source, [2 * u, 2 * u + 1]);
  });

  test('the default init is stepwise without LoRA and average with it (the paper\'s best of each)', () => {
    assert.equal(planConversion(8, { numRecursions: 3 }).init, 'stepwise');
    assert.equal(planConversion(8, { numRecursions: 3, loraRank: 4 }).init, 'average');
  });

  test('stepwise rounds half to even, as numpy does', () => {
    assert.deepEqual(stepwiseIndices(4, 3), [0, 2, 3]); //  0, 1.5, 3
    assert.deepEqual(stepwiseIndices(6, 3), [0, 2, 5]); //  0, 2.5, 5
    assert.deepEqual(stepwiseIndices(5, 1), [0]);
  });
});

describe('depths that Nr does not divide', () => {
  test('add (default): the paper\'s extra positions at the end of the recursive part, said in the notes', () => {
    const notes: string[] = [];
    // L = 7, middle_cycle, Nr = 2: 5 middle layers → K = 3, 1 + 3×2 + 1 = 8 layers, position 6 added
    const plan = planConversion(7, { numRecursions: 2, onLog: (s) => notes.push(s) });
    assert.equal(plan.targetLayers, 8);
    assert.equal(plan.blockSize, 3);
    assert.deepEqual(plan.sourceOf, [0, 1, 2, 3, 4, 5, -1, 6]);
    assert.deepEqual(plan.addedPositions, [6]);
    assert.deepEqual(plan.tiedGroups, [[0], [1, 4], [2, 5], [3], [6]]);
    assert.match(plan.notes.join('\n'), /not a multiple of 2 recursions: adding 1 layer position .*8 effective layers/);
    const logged: string[] = [];
    const target = convertModel(sourceModel(7), { numRecursions: 2, onLog: (s) => logged.push(s) });
    assert.equal(target.config.num_hidden_layers, 8);
    assert.match(logged.join('\n'), /adding 1 layer position/);
  });

  test('drop: the authors\' stepwise selection of the layers to keep', () => {
    // cycle, L = 7, Nr = 2: keep 6 of 7 at round(linspace(0, 6, 6)) = 0, 1, 2, 4, 5, 6 → layer 3 dropped
    const plan = planConversion(7, { numRecursions: 2, sharing: 'cycle', fit: 'drop' });
    assert.equal(plan.targetLayers, 6);
    assert.deepEqual(plan.droppedLayers, [3]);
    assert.deepEqual(plan.sourceOf, [0, 1, 2, 4, 5, 6]);
    assert.deepEqual(plan.tiedGroups, [[0, 4], [1, 5], [2, 6]]);
    assert.match(plan.notes.join('\n'), /dropping source layer 3 by stepwise selection/);
  });

  for (const sharing of ['cycle', 'sequence', 'middle_cycle', 'middle_sequence'] as SharingStrategy[]) {
    test(`${sharing}: every position maps to the unique layer the model itself uses`, () => {
      const target = convertModel(sourceModel(7), { numRecursions: 3, sharing });
      const plan = planConversion(7, { numRecursions: 3, sharing });
      assert.deepEqual(plan.uniqueOf, Array.from(target.plan.uniqueOf));
    });
  }
});
