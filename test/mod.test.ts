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
import { countParams, paramTable } from '../src/model/params.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { createModel } from '../src/model/model.js';
import { plainConfig, ExportError } from '../src/interop/unroll.js';
import { withTempDir } from './helpers/temp-dir.js';

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
