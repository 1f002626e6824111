// GGUF export (src/interop/gguf.ts), read back with @huggingface/gguf (its allowLocalFile
// option reads a local path) for the header, metadata and tensor table, and by offset for the
// values. The q/k row permutation is tested against our own attention: permuted weights with
// llama.cpp's adjacent-pair RoPE give the same q·k scores as ours with rotate-half RoPE.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gguf } from '@huggingface/gguf';
import { createModel } from '../src/model/model.js';
import { preset } from '../src/model/presets.js';
import { validateConfig } from '../src/model/config.js';
import { LAYER_MATRICES, layerParamName } from '../src/model/params.js';
import { linear, reshape, rope } from '../src/tensor/ops.js';
import { indexTensor, noGrad, tensor, type Tensor } from '../src/tensor/tensor.js';
import { trainBpe } from '../src/data/bpe-train.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { loadModel } from '../src/interop/load.js';
import { exportGguf, ggufPreTokenizer, permuteRopeRows, unpermuteRopeRows, GGML_TYPE, TOKEN_TYPE } from '../src/interop/gguf.js';
import { ExportError } from '../src/interop/unroll.js';
import { Rng } from '../src/util/rng.js';
import { useTempDir } from './helpers/temp-dir.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/hf-tiny/', import.meta.url));
const tmp = useTempDir('mor-interop-gguf-');

const randn = (rng: Rng, n: number): Float32Array => Float32Array.from({ length: n }, () => rng.normal());

/** llama.cpp's `llama` RoPE: rotate adjacent pairs (x[2i], x[2i+1]) by pos·θ^(−2i/HD). x (N, H, HD). */
function adjacentPairRope(x: Float32Array, pos: Int32Array, heads: number, hd: number, theta: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let n = 0; n < pos.length; n++) {
    for (let h = 0; h < heads; h++) {
      const base = (n * heads + h) * hd;
      for (let i = 0; i < hd / 2; i++) {
        const angle = (pos[n] as number) * Math.pow(theta, (-2 * i) / hd);
        const a = x[base + 2 * i] as number;
        const b = x[base + 2 * i + 1] as number;
        out[base + 2 * i] = a * Math.cos(angle) - b * Math.sin(angle);
        out[base + 2 * i + 1] = a * Math.sin(angle) + b * Math.cos(angle);
      }
    }
  }
  return out;
}

/** Scores q_i^h · k_j^(h's kv head) for all heads and token pairs. q (N, H, HD), k (N, KVH, HD). */
function scores(q: Float32Array, k: Float32Array, n: number, heads: number, kvHeads: number, hd: number): Float32Array {
  const s = new Float32Array(heads * n * n);
  for (let h = 0; h < heads; h++) {
    const g = Math.floor(h / (heads / kvHeads));
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let acc = 0;
        for (let e = 0; e < hd; e++) acc += (q[(i * heads + h) * hd + e] as number) * (k[(j * kvHeads + g) * hd + e] as number);
        s[(h * n + i) * n + j] = acc;
      }
    }
  }
  return s;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

describe('GGUF q/k permutation', () => {
  const D = 16, H = 2, KVH = 1, HD = 8, N = 6, THETA = 10000;
  const rng = new Rng(5);
  const wq = randn(rng, H * HD * D);
  const wk = randn(rng, KVH * HD * D);
  const x = randn(rng, N * D);
  const pos = Int32Array.from([0, 1, 2, 5, 9, 30]);

  const ours = noGrad(() => {
    const xt = tensor(x, [N, D]);
    const p = indexTensor(pos);
    const q = rope(reshape(linear(xt, tensor(wq, [H * HD, D])), [N, H, HD]), p, THETA).f32();
    const k = rope(reshape(linear(xt, tensor(wk, [KVH * HD, D])), [N, KVH, HD]), p, THETA).f32();
    return scores(q, k, N, H, KVH, HD);
  });
  const llamaCpp = (wqG: Float32Array, wkG: Float32Array): Float32Array => noGrad(() => {
    const xt = tensor(x, [N, D]);
    const q = adjacentPairRope(linear(xt, tensor(wqG, [H * HD, D])).f32(), pos, H, HD, THETA);
    const k = adjacentPairRope(linear(xt, tensor(wkG, [KVH * HD, D])).f32(), pos, KVH, HD, THETA);
    return scores(q, k, N, H, KVH, HD);
  });

  test('permuted weights + adjacent-pair RoPE give our rotate-half attention scores', () => {
    const theirs = llamaCpp(permuteRopeRows(wq, H * HD, D, H), permuteRopeRows(wk, KVH * HD, D, KVH));
    assert.ok(maxAbsDiff(theirs, ours) < 1e-3, `max |Δscore| ${maxAbsDiff(theirs, ours)}`);
  });

  test('without the permutation the scores differ (the check can fail)', () => {
    assert.ok(maxAbsDiff(llamaCpp(wq, wk), ours) > 0.1);
  });

  test('unpermuteRopeRows inverts permuteRopeRows exactly', () => {
    assert.deepEqual(unpermuteRopeRows(permuteRopeRows(wq, H * HD, D, H), H * HD, D, H), wq);
    assert.deepEqual(permuteRopeRows(unpermuteRopeRows(wk, KVH * HD, D, KVH), KVH * HD, D, KVH), wk);
    assert.notDeepEqual(permuteRopeRows(wq, H * HD, D, H), wq);
  });
});

/** A tensor's values from the file: f32, or f16 widened. */
function tensorValues(file: Buffer, start: number, type: number, count: number): Float32Array {
  if (type === GGML_TYPE.F32) return new Float32Array(file.buffer.slice(file.byteOffset + start, file.byteOffset + start + 4 * count));
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const h = file.readUInt16LE(start + 2 * i);
    const e = (h >> 10) & 0x1f, f = h & 0x3ff, s = h & 0x8000 ? -1 : 1;
    out[i] = e === 0 ? s * f * 2 ** -24 : s * (1 + f / 1024) * 2 ** (e - 15);
  }
  return out;
}

describe('GGUF export', () => {
  for (const dtype of ['f32', 'f16'] as const) {
    test(`the HF fixture as ${dtype}: metadata, tensor names, shapes and values (q/k un-permuted)`, async () => {
      const { model, tokenizer } = await loadModel(FIXTURE);
      const path = join(tmp(), `fixture-${dtype}.gguf`);
      exportGguf(model, tokenizer, path, { dtype });
      const parsed = await gguf(path, { allowLocalFile: true });
      const m = parsed.metadata as unknown as Record<string, unknown>;
      const c = model.config;
      assert.equal(m['version'], 3);
      assert.equal(m['general.architecture'], 'llama');
      assert.equal(m['llama.context_length'], c.max_position_embeddings);
      assert.equal(m['llama.embedding_length'], c.hidden_size);
      assert.equal(m['llama.block_count'], c.num_hidden_layers);
      assert.equal(m['llama.feed_forward_length'], c.intermediate_size);
      assert.equal(m['llama.attention.head_count'], c.num_attention_heads);
      assert.equal(m['llama.attention.head_count_kv'], c.num_key_value_heads);
      assert.equal(m['llama.rope.dimension_count'], 8);
      assert.equal(m['llama.rope.freq_base'], c.rope_theta);
      assert.ok(Math.abs((m['llama.attention.layer_norm_rms_epsilon'] as number) - c.rms_norm_eps) < 1e-10);
      assert.equal(m['tokenizer.ggml.model'], 'gpt2');
      assert.equal(m['tokenizer.ggml.pre'], 'smollm');
      const tokens = m['tokenizer.ggml.tokens'] as string[];
      const types = m['tokenizer.ggml.token_type'] as number[];
      assert.equal(tokens.length, c.vocab_size);
      assert.equal(tokens[1], '<|im_start|>');
      assert.equal(types[1], TOKEN_TYPE.CONTROL);
      assert.equal(tokens[3 + 'a'.charCodeAt(0)], 'a', 'byte tokens in byte order after the 3 specials');
      assert.equal(types[100], TOKEN_TYPE.NORMAL);
      assert.equal(tokens[310], '[PAD310]');
      assert.equal(types[310], TOKEN_TYPE.UNUSED);
      const merges = m['tokenizer.ggml.merges'] as string[];
      assert.equal(merges.length, 41);
      assert.equal(merges[0], (tokenizer.toJSON()['model'] as { merges: string[] }).merges[0]);
      assert.equal(m['tokenizer.ggml.bos_token_id'], 1);
      assert.equal(m['tokenizer.ggml.eos_token_id'], 2);

      const names = parsed.tensorInfos.map((t) => t.name);
      const expected = ['token_embd.weight'];
      for (let l = 0; l < c.num_hidden_layers; l++) {
        expected.push(`blk.${l}.attn_norm.weight`, ...['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'].map((n) => `blk.${l}.${n}.weight`), `blk.${l}.ffn_norm.weight`);
      }
      expected.push('output_norm.weight', 'output.weight');
      assert.deepEqual(names, expected);

      const file = readFileSync(path);
      const ours = new Map<string, { t: Tensor; heads: number }>([
        ['token_embd.weight', { t: model.params.embed, heads: 0 }],
        ['output_norm.weight', { t: model.params.norm, heads: 0 }],
        ['output.weight', { t: model.params.head, heads: 0 }],
      ]);
      const gg = { q_proj: 'attn_q', k_proj: 'attn_k', v_proj: 'attn_v', o_proj: 'attn_output', gate_proj: 'ffn_gate', up_proj: 'ffn_up', down_proj: 'ffn_down' } as const;
      for (let l = 0; l < c.num_hidden_layers; l++) {
        ours.set(`blk.${l}.attn_norm.weight`, { t: model.params.byName.get(`model.layers.${l}.input_layernorm.weight`) as Tensor, heads: 0 });
        ours.set(`blk.${l}.ffn_norm.weight`, { t: model.params.byName.get(`model.layers.${l}.post_attention_layernorm.weight`) as Tensor, heads: 0 });
        for (const mat of LAYER_MATRICES) {
          const heads = mat === 'q_proj' ? c.num_attention_heads : mat === 'k_proj' ? c.num_key_value_heads : 0;
          ours.set(`blk.${l}.${gg[mat]}.weight`, { t: model.params.byName.get(layerParamName(l, mat)) as Tensor, heads });
        }
      }
      for (const info of parsed.tensorInfos) {
        const o = ours.get(info.name);
        assert.ok(o, info.name);
        assert.deepEqual(info.shape.map(Number), [...o.t.shape].reverse(), `${info.name}: dims innermost first`);
        assert.equal(Number(info.offset) % 32, 0);
        const matrix = o.t.shape.length === 2;
        assert.equal(Number(info.dtype), dtype === 'f16' && matrix ? GGML_TYPE.F16 : GGML_TYPE.F32);
        let v = tensorValues(file, Number(parsed.tensorDataOffset) + Number(info.offset), Number(info.dtype), o.t.size);
        if (o.heads > 0) v = unpermuteRopeRows(v, o.t.dim(0), o.t.dim(1), o.heads);
        const want = o.t.f32();
        if (dtype === 'f32' || !matrix) assert.deepEqual(v, want, info.name);
        else assert.ok(maxAbsDiff(v, want) <= 2e-3 * Math.max(...Array.from(want, Math.abs)), `${info.name} within f16 rounding`);
      }
    });
  }

  test('our own BPE (ByteLevel, GPT-2 regex) is "gpt-2"; a tied model writes no output.weight', async () => {
    const { tokenizer } = await trainBpe(['The President and the Congress shall meet. '.repeat(20)], { vocabSize: 300 });
    const tok = Tokenizer.fromJSON(tokenizer);
    assert.equal(ggufPreTokenizer(tok.toJSON()), 'gpt-2');
    const model = createModel(preset('tiny-rec2'), 1);
    const path = join(tmp(), 'tied.gguf');
    exportGguf(model, tok, path);
    const parsed = await gguf(path, { allowLocalFile: true });
    const names = parsed.tensorInfos.map((t) => t.name);
    assert.ok(!names.includes('output.weight'));
    assert.equal(names.filter((n) => n.endsWith('.attn_q.weight')).length, model.config.num_hidden_layers, 'unrolled: one block per position');
    assert.equal((parsed.metadata as unknown as Record<string, unknown>)['tokenizer.ggml.pre'], 'gpt-2');
  });

  test('an unknown pre-tokenizer and a routed model are ExportErrors', async () => {
    const { tokenizer } = await loadModel(FIXTURE);
    assert.throws(() => ggufPreTokenizer({ pre_tokenizer: { type: 'Metaspace' } }), ExportError);
    const routed = createModel(validateConfig({ ...preset('tiny-mor3') }), 0);
    assert.throws(() => exportGguf(routed, tokenizer, join(tmp(), 'routed.gguf')), (e: unknown) => e instanceof ExportError && /MoR routers/.test((e as Error).message));
  });
});
