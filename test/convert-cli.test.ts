// `mor convert` as a user runs it: it writes a loadable checkpoint (config, weights, tokenizer,
// conversion.json) that at full rank computes its source; an impossible conversion exits 2 and
// writes nothing; an existing --out needs --overwrite.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { validateConfig } from '../src/model/config.js';
import { preset } from '../src/model/presets.js';
import { createModel, forward, type Model } from '../src/model/model.js';
import { loadCheckpoint, saveCheckpoint } from '../src/train/checkpoint.js';
import { noGrad } from '../src/tensor/tensor.js';
import { useTempDir } from './helpers/temp-dir.js';

const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const tempRoot = useTempDir('mor-convert-cli-');
const TOKENIZER = '{"note":"a stand-in tokenizer.json, copied verbatim"}';
let root: string;
let srcDir: string;
let source: Model;

before(() => {
  root = tempRoot();
  srcDir = join(root, 'source');
  source = createModel(validateConfig({ ...preset('tiny'), num_hidden_layers: 7 }), 4);
  saveCheckpoint(srcDir, source, { tokenizer: TOKENIZER });
});

function mor(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, cwd: root });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

const IDS = Int32Array.from({ length: 32 }, (_, i) => (i * 53 + 3) % 512);
const logits = (m: Model): Float32Array => noGrad(() => forward(m, IDS, 2).logits.f32());

describe('mor convert', () => {
  test('full rank, middle_cycle: a checkpoint that loads and computes its source; the added position is said', async () => {
    const out = join(root, 'full');
    const r = mor('convert', '--model', srcDir, '--recursions', '2', '--lora-rank', 'full', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /adding 1 layer position/);
    assert.match(r.stderr, /converted 7 layers → 8 effective \(5 unique, middle_cycle, 2 recursions, LoRA rank 64\)/);
    assert.deepEqual(readdirSync(out).sort(), ['config.json', 'conversion.json', 'model.safetensors', 'tokenizer.json']);
    assert.equal(readFileSync(join(out, 'tokenizer.json'), 'utf8'), TOKENIZER);
    const record = JSON.parse(readFileSync(join(out, 'conversion.json'), 'utf8')) as { format: string; plan: { addedPositions: number[]; init: string } };
    assert.equal(record.format, 'mor-conversion');
    assert.deepEqual(record.plan.addedPositions, [6]);
    assert.equal(record.plan.init, 'average');
    const ck = await loadCheckpoint(out);
    assert.equal(ck.model.config.recursion?.sharing, 'middle_cycle');
    const a = logits(ck.model);
    const b = logits(source);
    let d = 0;
    for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs((a[i] as number) - (b[i] as number)));
    assert.ok(d < 1e-4, `max |Δ logit| ${d}`);
  });

  test('cycle + expert-choice MoR with capacities writes the mor section', async () => {
    const out = join(root, 'mor');
    const r = mor('convert', '--model', srcDir, '--recursions', '2', '--sharing', 'cycle', '--init', 'stepwise', '--mor', 'expert', '--capacities', '1,0.5', '--out', out);
    assert.equal(r.code, 0, r.stderr);
    const c = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { mor: { routing: string; capacities: number[] }; recursion: { lora_rank: number } };
    assert.equal(c.mor.routing, 'expert_choice');
    assert.deepEqual(c.mor.capacities, [1, 0.5]);
    assert.equal(c.recursion.lora_rank, 0);
    assert.equal((await loadCheckpoint(out)).model.params.mor?.routers.length, 2);
  });

  test('impossible conversions exit 2 naming the problem and write nothing', () => {
    const before = readdirSync(root).sort();
    const cases: Array<[string[], RegExp]> = [
      [['--recursions', '6'], /more recursions than layers: 6 recursions/],
      [['--recursions', '2', '--lora-rank', '0'], /--lora-rank must be an integer ≥ 1 or 'full', got 0/],
      [['--recursions', '2', '--lora-rank', 'half'], /--lora-rank must be an integer ≥ 1 or 'full', got 'half'/],
      [['--recursions', '2', '--lora-rank', '2.5'], /--lora-rank must be an integer ≥ 1 or 'full', got 2.5/],
      [['--recursions', '2', '--capacities', '1,0.5'], /--capacities .* needs --mor expert/],
      [['--recursions', '2', '--sharing', 'sequence', '--mor', 'token'], /--mor needs cycle or middle_cycle/],
    ];
    for (const [args, message] of cases) {
      const r = mor('convert', '--model', srcDir, ...args, '--out', join(root, 'never'));
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    assert.equal(mor('convert', '--model', join(root, 'missing'), '--recursions', '2', '--out', join(root, 'never')).code, 2);
    assert.deepEqual(readdirSync(root).sort(), before, 'no output folder and no temporaries');
  });

  test('an existing --out is refused without --overwrite and replaced with it', () => {
    const out = join(root, 'again');
    assert.equal(mor('convert', '--model', srcDir, '--recursions', '2', '--out', out).code, 0);
    const refused = mor('convert', '--model', srcDir, '--recursions', '2', '--sharing', 'cycle', '--out', out);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /already exists: expected a new output folder; pass --overwrite/);
    const replaced = mor('convert', '--model', srcDir, '--recursions', '2', '--sharing', 'cycle', '--out', out, '--overwrite');
    assert.equal(replaced.code, 0, replaced.stderr);
    assert.equal((JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { recursion: { sharing: string } }).recursion.sharing, 'cycle');
    assert.ok(!existsSync(`${out}.prev`));
  });
});
