// Hugging Face Llama import and export (src/interop/): the tiny fixture written from PyTorch by
// tools/hf_fixture.py (BF16, two shards, untied head, SmolLM2's config keys) against PyTorch's
// logits; import → export → import; recursive and relaxed models unrolled; the typed errors.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { readSafetensorsSync, writeSafetensors, type NamedArray } from '../src/util/safetensors.js';
import { forward, createModel, type Model } from '../src/model/model.js';
import { validateConfig } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { ConfigError } from '../src/model/config-error.js';
import { CheckpointError, saveCheckpoint } from '../src/train/checkpoint.js';
import { Engine } from '../src/infer/engine.js';
import { noGrad } from '../src/tensor/tensor.js';
import { loadModel } from '../src/interop/load.js';
import { exportHf } from '../src/interop/hf.js';
import { ExportError } from '../src/interop/unroll.js';
import { assertClose } from './helpers/numeric.js';
import { useTempDir } from './helpers/temp-dir.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-tiny/', import.meta.url));
const tmp = useTempDir('mor-interop-hf-');

const reference = readSafetensorsSync(join(FIXTURE, 'reference.safetensors'));
const refIds = reference.tensors.get('input_ids')?.data as Int32Array;
const refLogits = reference.tensors.get('logits')?.data as Float32Array;

function logitsOf(model: Model, ids: Int32Array): Float32Array {
  return noGrad(() => forward(model, ids, 1).logits.f32());
}

/** A copy of the fixture in the temp folder, changed by `edit`. */
function fixtureCopy(name: string, edit: (dir: string) => void): string {
  const dir = join(tmp(), name);
  rmSync(dir, { recursive: true, force: true });
  cpSync(FIXTURE, dir, { recursive: true });
  edit(dir);
  return dir;
}

function editConfig(dir: string, change: Record<string, unknown>): void {
  const path = join(dir, 'config.json');
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), ...change }));
}

for (const backend of availableBackends()) {
  describe(`Hugging Face import (${backend})`, () => {
    test('the BF16, sharded, untied fixture gives PyTorch\'s logits', async () => {
      setBackend(backend);
      const { model, tokenizer, source } = await loadModel(FIXTURE);
      assert.equal(source, 'hf');
      assert.equal(model.config.tie_word_embeddings, false);
      assert.equal(model.config.rope_theta, 100000);
      assert.equal(model.config.vocab_size, 320);
      assert.notEqual(model.params.head, model.params.embed);
      assert.equal(tokenizer.bosId, 1, 'BOS from tokenizer_config.json');
      assert.equal(tokenizer.eosId, 2, 'EOS from tokenizer_config.json');
      assertClose(logitsOf(model, refIds), refLogits, 1e-4, 'logits vs PyTorch');
    });

    test('the engine (packed untied head) decodes what the forward argmax says', async () => {
      setBackend(backend);
      const { model } = await loadModel(FIXTURE);
      const prompt = refIds.subarray(0, 6);
      const engine = new Engine(model, { maxBatch: 1 });
      const h = engine.submit(prompt, { maxTokens: 1, temperature: 0 });
      await engine.runUntilIdle();
      const got = (await h.result).tokens[0];
      const V = model.config.vocab_size;
      const last = logitsOf(model, prompt).subarray(5 * V, 6 * V);
      assert.equal(got, last.indexOf(Math.max(...last)));
    });
  });
}

describe('Hugging Face export', () => {
  test('import → export hf → import gives identical logits, tie setting and tokenizer', async () => {
    const a = await loadModel(FIXTURE);
    const out = join(tmp(), 'roundtrip');
    exportHf(a.model, a.tokenizer, out);
    const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(config['architectures'], ['LlamaForCausalLM']);
    assert.equal(config['model_type'], 'llama');
    assert.equal(config['tie_word_embeddings'], false);
    assert.equal(config['bos_token_id'], 1);
    const b = await loadModel(out);
    assert.equal(b.source, 'hf');
    assert.deepEqual(logitsOf(b.model, refIds), logitsOf(a.model, refIds));
    assert.equal(b.tokenizer.eosId, a.tokenizer.eosId);
    assert.equal(b.tokenizer.bosId, a.tokenizer.bosId);
    assert.deepEqual(b.tokenizer.encode('The President, 1787.'), a.tokenizer.encode('The President, 1787.'));
    assert.throws(() => exportHf(a.model, a.tokenizer, out), /already exists/);
    exportHf(a.model, a.tokenizer, out, { overwrite: true });
  });

  test('a relaxed recursive model unrolls into plain layers (sharing and W + B·A folded in)', async () => {
    const { tokenizer } = await loadModel(FIXTURE);
    const c = validateConfig({ ...preset('tiny-rec2'), tie_word_embeddings: false, recursion: { num_recursions: 2, sharing: 'middle_cycle', lora_rank: 4 } });
    const model = createModel(c, 3);
    for (const [name, t] of model.params.byName) if (name.endsWith('lora_B')) t.f32().forEach((_, i, a) => (a[i] = 0.05 * Math.sin(i + name.length)));
    const ck = join(tmp(), 'relaxed-ck');
    saveCheckpoint(ck, model, { tokenizer: tokenizer.toJSON() });
    const loaded = await loadModel(ck);
    assert.equal(loaded.source, 'mor');
    assert.equal(loaded.model.config.tie_word_embeddings, false, 'checkpoints keep the untied head');
    const out = join(tmp(), 'relaxed-hf');
    exportHf(loaded.model, loaded.tokenizer, out);
    const plain = await loadModel(out);
    assert.equal(plain.model.config.recursion, null);
    assert.equal(plain.model.config.num_hidden_layers, c.num_hidden_layers);
    const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 37) % 300);
    assertClose(logitsOf(plain.model, ids), logitsOf(model, ids), 1e-5, 'unrolled vs recursive');
  });

  test('a model with routers is refused with an ExportError', async () => {
    const { tokenizer } = await loadModel(FIXTURE);
    assert.throws(() => exportHf(createModel(preset('tiny-mor3'), 0), tokenizer, join(tmp(), 'routed')), (e: unknown) => {
      assert.ok(e instanceof ExportError);
      assert.match((e as Error).message, /MoR routers/);
      return true;
    });
  });
});

describe('Hugging Face import errors', () => {
  const refused: Array<[string, unknown]> = [
    ['attention_bias', true],
    ['rope_scaling', { rope_type: 'linear', factor: 2 }],
    ['hidden_act', 'gelu'],
    ['head_dim', 16],
    ['rope_interleaved', true],
    ['mlp_bias', true],
  ];
  for (const [key, value] of refused) {
    test(`config key ${key} = ${JSON.stringify(value)} is a ConfigError naming it`, async () => {
      const dir = fixtureCopy(`bad-${key}`, (d) => editConfig(d, { [key]: value }));
      await assert.rejects(loadModel(dir), (e: unknown) => e instanceof ConfigError && (e as Error).message.includes(`'${key}'`));
    });
  }

  test('a missing shard is a CheckpointError naming the file', async () => {
    const dir = fixtureCopy('no-shard', (d) => rmSync(join(d, 'model-00002-of-00002.safetensors')));
    await assert.rejects(loadModel(dir), (e: unknown) => e instanceof CheckpointError && /model-00002-of-00002\.safetensors.*missing/.test((e as Error).message));
  });

  test('a shard with a tensor of the wrong shape is a CheckpointError naming the tensor and the shard', async () => {
    const shard = 'model-00001-of-00002.safetensors';
    const dir = fixtureCopy('bad-shape', (d) => {
      const f = readSafetensorsSync(join(d, shard));
      const tensors: Array<[string, NamedArray]> = [...f.tensors].map(([n, t]) =>
        n === 'model.layers.0.self_attn.k_proj.weight' ? [n, { shape: [8, 32], data: t.data.subarray(0, 256) }] : [n, t]);
      writeSafetensors(join(d, shard), tensors);
    });
    await assert.rejects(loadModel(dir), (e: unknown) =>
      e instanceof CheckpointError && /model-00001-of-00002\.safetensors: tensor 'model\.layers\.0\.self_attn\.k_proj\.weight' must have shape \[16, 32\].*got \[8, 32\]/.test((e as Error).message));
  });

  test('an untied config without lm_head.weight names the missing tensor', async () => {
    const dir = fixtureCopy('no-head', (d) => {
      const index = JSON.parse(readFileSync(join(d, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
      const shard = 'model-00002-of-00002.safetensors';
      const f = readSafetensorsSync(join(d, shard));
      writeSafetensors(join(d, shard), [...f.tensors].filter(([n]) => n !== 'lm_head.weight'));
      delete index.weight_map['lm_head.weight'];
      writeFileSync(join(d, 'model.safetensors.index.json'), JSON.stringify(index));
    });
    await assert.rejects(loadModel(dir), (e: unknown) => e instanceof CheckpointError && /missing tensor 'lm_head\.weight'/.test((e as Error).message));
  });

  test('tie_word_embeddings: true ignores a stored lm_head.weight (as transformers does)', async () => {
    const dir = fixtureCopy('tied', (d) => editConfig(d, { tie_word_embeddings: true }));
    const { model } = await loadModel(dir);
    assert.equal(model.params.head, model.params.embed);
    assert.ok(!model.params.byName.has('lm_head.weight'));
  });
});
