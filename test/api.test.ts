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

test('README engine example: streaming handles, depths, generateText with a stop string', async () => {
  const { Engine, generateText, trainBpe, Tokenizer, createModel: create, preset: p } = await import('../src/index.js');
  const { tokenizer } = await trainBpe(['The President and the Congress shall meet. '.repeat(50)], { vocabSize: 300 });
  const tok = Tokenizer.fromJSON(tokenizer);
  const model = create(p('tiny-mor3'), 1);
  const engine = new Engine(model, { maxBatch: 32, batching: 'depth' });
  const handles = ['The President', 'Congress shall'].map((s) =>
    engine.submit(tok.encode(s), { maxTokens: 8, temperature: 0.8, topK: 40, seed: 1, eosId: tok.eosId, vocabLimit: tok.vocabSize }));
  const run = engine.runUntilIdle();
  const streamed: number[] = [];
  for await (const id of handles[0] as (typeof handles)[number]) streamed.push(id);
  await run;
  assert.deepEqual(streamed, (await (handles[0] as (typeof handles)[number]).result).tokens);
  const second = await (handles[1] as (typeof handles)[number]).result;
  assert.equal(second.depths.length, second.tokens.length);
  const r = await generateText(engine, tok, 'The President', { maxTokens: 16, stop: ['\n\n'] });
  assert.ok(typeof r.text === 'string' && !r.text.includes('\n\n'));
});

// The top-level export surface, listed so that it changes only on purpose. Everything else is
// reached through a layer's subpath export (mor-ts/backend, /tensor, /nn, /model, /data, /train, /infer, /convert).
const PUBLIC_API = [
  'AdamW', 'ArgumentError', 'AutogradError', 'BackendUnavailableError', 'CheckpointError', 'ConfigError', 'ConversionError', 'Corpus',
  'DEFAULT_CONFIG', 'DataError', 'DtypeError', 'ENGINE_DEFAULTS', 'Engine', 'EngineError', 'ExportError', 'KVPoolExhaustedError', 'MorError',
  'PRESET_NAMES', 'RequestHandle', 'ShapeError', 'Tensor', 'Tokenizer', 'VERSION', 'availableBackends', 'backward',
  'clipGradNorm', 'convertModel', 'countParams', 'createModel', 'createOptimizer', 'depthSweep', 'evaluateNll', 'exportGguf', 'exportHf', 'forward',
  'forwardFlopsPerToken', 'generate', 'generateText', 'getBackend', 'loadCheckpoint', 'loadModel', 'noGrad', 'prepareData', 'preset',
  'readSafetensors', 'runTraining', 'saveCheckpoint', 'setBackend', 'tensor', 'trainBpe', 'trainFlopsPerToken', 'trainLoop',
  'validateConfig', 'writeSafetensors', 'zeros',
];

test('the export surface is the listed one', async () => {
  const api = await import('../src/index.js');
  assert.deepEqual(Object.keys(api).sort(), [...PUBLIC_API].sort());
});

test('each layer is reachable through its subpath export', async () => {
  const subpaths: Record<string, string[]> = {
    'mor-ts/backend': ['getBackendByName'],
    'mor-ts/tensor': ['record', 'needsGrad', 'accumulateGrad', 'rmsnorm', 'attention'],
    'mor-ts/nn': ['decoderLayer', 'causalSegmentsLayout', 'LAYER_MATRICES'],
    'mor-ts/model': ['layerPlan', 'paramTable', 'routedTrunk', 'expertGate', 'tokenChoiceDepths'],
    'mor-ts/data': ['buildTokenCache', 'TrainLoader', 'validationBatches'],
    'mor-ts/train': ['AdamW', 'learningRate', 'evaluateNll', 'depthSweep', 'distillKl'],
    'mor-ts/infer': ['ModelRunner', 'PagedKVPool', 'sampleToken', 'textRequest'],
    'mor-ts/convert': ['convertModel', 'planConversion', 'truncatedSvd'],
    'mor-ts/interop': ['loadModel', 'loadHfModel', 'configFromHf', 'exportHf', 'exportGguf', 'unrollModel', 'permuteRopeRows'],
  };
  for (const [path, names] of Object.entries(subpaths)) {
    const mod = (await import(path)) as Record<string, unknown>;
    for (const n of names) assert.ok(n in mod, `${path} exports ${n}`);
  }
});
