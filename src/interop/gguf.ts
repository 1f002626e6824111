/**
 * GGUF v3 export for llama.cpp (the format of ggml's docs/gguf.md):
 *
 *   "GGUF" u32 version=3 | u64 n_tensors | u64 n_kv
 *   n_kv × { string key | u32 value type | value }           strings: u64 byte length + UTF-8
 *   n_tensors × { string name | u32 n_dims | u64 dims[n_dims] (innermost first) | u32 ggml type | u64 offset }
 *   padding to general.alignment (32) | tensor data, each tensor at an aligned offset
 *
 * A PyTorch (out, in) row-major matrix is GGUF dims [in, out] with the same bytes. Tensors take
 * llama.cpp's names (token_embd, blk.N.attn_q, …, output_norm, output). One fact a read-back
 * test cannot see: llama.cpp's `llama` architecture rotates ADJACENT pairs (x[2i], x[2i+1])
 * with RoPE, while the Hugging Face layout (ours) rotates the split halves (x[i], x[i + HD/2]).
 * So q and k are written with their rows permuted per head (permuteRopeRows), as llama.cpp's
 * own converter does; with that, adjacent-pair RoPE over the permuted weights gives the same
 * attention scores as rotate-half RoPE over ours (test/interop-gguf.test.ts shows it).
 *
 *   head rows (HD = 8):  ours  [a0 a1 a2 a3 | b0 b1 b2 b3]   pairs (a_i, b_i) rotate together
 *                        gguf  [a0 b0 a1 b1 a2 b2 a3 b3]     pairs (2i, 2i+1) rotate together
 *
 * The tokenizer goes in as llama.cpp's "gpt2" (byte-level BPE) model: the vocabulary padded to
 * vocab_size, the token types, the merges, BOS/EOS, and tokenizer.ggml.pre naming the
 * pre-tokenizer llama.cpp must use (ggufPreTokenizer).
 */
import type { Model } from '../model/model.js';
import { headDim } from '../model/config.js';
import { LAYER_MATRICES, LM_HEAD, layerParamName, type LayerMatrix } from '../model/params.js';
import type { Tokenizer } from '../data/tokenizer.js';
import type { Tensor } from '../tensor/tensor.js';
import { writeFileAtomicSync } from '../util/fs.js';
import { ExportError, unrollModel } from './unroll.js';

export const GGUF_VERSION = 3;
export const GGUF_ALIGNMENT = 32;

/** GGUF metadata value types. */
export const GGUF_TYPE = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
/** ggml tensor types written here. */
export const GGML_TYPE = { F32: 0, F16: 1 } as const;
/** llama.cpp token types (tokenizer.ggml.token_type). */
export const TOKEN_TYPE = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export type GgufDtype = 'f32' | 'f16';

const GGUF_MATRIX: Record<LayerMatrix, string> = {
  q_proj: 'attn_q', k_proj: 'attn_k', v_proj: 'attn_v', o_proj: 'attn_output',
  gate_proj: 'ffn_gate', up_proj: 'ffn_up', down_proj: 'ffn_down',
};

/**
 * Permute the rows of a q or k projection (rows = heads·HD, cols) from rotate-half order to
 * llama.cpp's adjacent-pair order: new row h·HD + 2i + s = old row h·HD + s·HD/2 + i.
 */
export function permuteRopeRows(w: Float32Array, rows: number, cols: number, numHeads: number): Float32Array {
  return moveRopeRows(w, rows, cols, numHeads, false);
}

/** The inverse of permuteRopeRows (GGUF order back to ours). */
export function unpermuteRopeRows(w: Float32Array, rows: number, cols: number, numHeads: number): Float32Array {
  return moveRopeRows(w, rows, cols, numHeads, true);
}

function moveRopeRows(w: Float32Array, rows: number, cols: number, numHeads: number, inverse: boolean): Float32Array {
  const hd = rows / numHeads;
  if (!Number.isInteger(hd) || hd % 2 !== 0 || w.length !== rows * cols) {
    throw new ExportError(`RoPE row permutation: ${rows} rows do not split into ${numHeads} heads of an even size (or ${w.length} ≠ ${rows}·${cols})`);
  }
  const half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < numHeads; h++) {
    for (let s = 0; s < 2; s++) {
      for (let i = 0; i < half; i++) {
        const ours = h * hd + s * half + i;
        const theirs = h * hd + 2 * i + s;
        const [from, to] = inverse ? [theirs, ours] : [ours, theirs];
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/** f32 → IEEE half bits, rounding to nearest even (overflow → ±inf, NaN kept). */
export function f32ToF16Bits(x: number): number {
  const f = new Float32Array([x]);
  const b = new Uint32Array(f.buffer)[0] as number;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++; // a carry into the exponent is still right
  return sign | h;
}

type Json = Record<string, unknown>;

/**
 * The llama.cpp pre-tokenizer name (tokenizer.ggml.pre) whose splitting matches a tokenizer.json:
 *   ByteLevel with use_regex                  → "gpt-2"  (GPT-2's regex, ours from bpe-train.ts)
 *   Sequence [Digits (single), ByteLevel]     → "smollm" (each digit alone, then GPT-2's regex)
 * Anything else is refused: a wrong name makes llama.cpp split text differently from training.
 */
export function ggufPreTokenizer(tokenizerJson: Json): string {
  const pre = tokenizerJson['pre_tokenizer'] as Json | null | undefined;
  const isByteLevel = (p: unknown): boolean =>
    typeof p === 'object' && p !== null && (p as Json)['type'] === 'ByteLevel' && (p as Json)['use_regex'] !== false && (p as Json)['add_prefix_space'] !== true;
  if (isByteLevel(pre)) return 'gpt-2';
  if (pre && pre['type'] === 'Sequence' && Array.isArray(pre['pretokenizers'])) {
    const parts = pre['pretokenizers'] as Json[];
    if (parts.length === 2 && parts[0]?.['type'] === 'Digits' && parts[0]?.['individual_digits'] === true && isByteLevel(parts[1])) return 'smollm';
  }
  throw new ExportError(
    `GGUF export: no llama.cpp pre-tokenizer is known to match this tokenizer's pre_tokenizer ${JSON.stringify(pre ?? null)} ` +
      `(supported: ByteLevel with GPT-2's regex → "gpt-2"; Digits(individual) + ByteLevel → "smollm"); name one with the pre option (--gguf-pre)`,
  );
}

interface GgufVocab {
  tokens: string[];
  types: number[];
  merges: string[];
}

/** tokenizer.json's byte-level BPE as llama.cpp's "gpt2" vocabulary, padded to `vocabSize` entries. */
function ggufVocab(json: Json, vocabSize: number): GgufVocab {
  const model = json['model'] as Json | undefined;
  if (model?.['type'] !== 'BPE') throw new ExportError(`GGUF export: expected a BPE tokenizer, got model type ${JSON.stringify(model?.['type'])}`);
  if (model['byte_fallback'] === true) throw new ExportError('GGUF export: a BPE with byte_fallback is SentencePiece-style ("llama" tokenizer), not byte-level; not supported');
  const tokens: Array<string | undefined> = new Array(vocabSize);
  const types: number[] = new Array(vocabSize).fill(TOKEN_TYPE.UNUSED);
  for (const [tok, id] of Object.entries((model['vocab'] ?? {}) as Record<string, number>)) {
    if (id < vocabSize) {
      tokens[id] = tok;
      types[id] = TOKEN_TYPE.NORMAL;
    }
  }
  for (const t of (json['added_tokens'] ?? []) as Array<{ id: number; content: string; special?: boolean }>) {
    if (t.id < vocabSize) {
      tokens[t.id] = t.content;
      types[t.id] = t.special === true ? TOKEN_TYPE.CONTROL : TOKEN_TYPE.USER_DEFINED;
    }
  }
  const filled = Array.from(tokens, (t, i) => t ?? `[PAD${i}]`);
  const merges = ((model['merges'] ?? []) as Array<string | [string, string]>).map((m) => (typeof m === 'string' ? m : `${m[0]} ${m[1]}`));
  return { tokens: filled, types, merges };
}

/** Little-endian byte builder for the header. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private static readonly enc = new TextEncoder();

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u8(v: number): void { this.reserve(1); this.view.setUint8(this.length, v); this.length += 1; }
  u32(v: number): void { this.reserve(4); this.view.setUint32(this.length, v, true); this.length += 4; }
  i32(v: number): void { this.reserve(4); this.view.setInt32(this.length, v, true); this.length += 4; }
  u64(v: number): void { this.reserve(8); this.view.setBigUint64(this.length, BigInt(v), true); this.length += 8; }
  f32(v: number): void { this.reserve(4); this.view.setFloat32(this.length, v, true); this.length += 4; }
  str(s: string): void {
    const b = ByteWriter.enc.encode(s);
    this.u64(b.length);
    this.reserve(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  pad(alignment: number): void { while (this.length % alignment !== 0) this.u8(0); }
  bytes(): Uint8Array { return this.buf.subarray(0, this.length); }
}

type MetaValue =
  | { type: 'u32'; v: number } | { type: 'f32'; v: number } | { type: 'bool'; v: boolean } | { type: 'str'; v: string }
  | { type: 'str[]'; v: readonly string[] } | { type: 'i32[]'; v: readonly number[] };

function writeMeta(w: ByteWriter, key: string, m: MetaValue): void {
  w.str(key);
  switch (m.type) {
    case 'u32': w.u32(GGUF_TYPE.UINT32); w.u32(m.v); break;
    case 'f32': w.u32(GGUF_TYPE.FLOAT32); w.f32(m.v); break;
    case 'bool': w.u32(GGUF_TYPE.BOOL); w.u8(m.v ? 1 : 0); break;
    case 'str': w.u32(GGUF_TYPE.STRING); w.str(m.v); break;
    case 'str[]': w.u32(GGUF_TYPE.ARRAY); w.u32(GGUF_TYPE.STRING); w.u64(m.v.length); for (const s of m.v) w.str(s); break;
    case 'i32[]': w.u32(GGUF_TYPE.ARRAY); w.u32(GGUF_TYPE.INT32); w.u64(m.v.length); for (const x of m.v) w.i32(x); break;
  }
}

export interface GgufOptions {
  /** Matrix storage: 'f32' (default) or 'f16'; norm scales stay f32 either way (as llama.cpp's converter keeps 1-D tensors). */
  readonly dtype?: GgufDtype;
  /** tokenizer.ggml.pre; default: detected from tokenizer.json (ggufPreTokenizer). */
  readonly pre?: string;
  /** general.name (default "mor-ts model"). */
  readonly name?: string;
}

interface GgufTensor {
  name: string;
  /** PyTorch shape, outermost first. */
  shape: readonly number[];
  data: Float32Array;
}

/** The tensors of a plain model under llama.cpp's names, q/k permuted for adjacent-pair RoPE. */
function ggufTensors(model: Model): GgufTensor[] {
  const c = model.config;
  const by = (name: string): Tensor => model.params.byName.get(name) as Tensor;
  const out: GgufTensor[] = [{ name: 'token_embd.weight', shape: model.params.embed.shape, data: model.params.embed.f32() }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const norm = (ours: string, theirs: string): void => {
      const t = by(`model.layers.${l}.${ours}.weight`);
      out.push({ name: `blk.${l}.${theirs}.weight`, shape: t.shape, data: t.f32() });
    };
    norm('input_layernorm', 'attn_norm');
    for (const m of LAYER_MATRICES) {
      const t = by(layerParamName(l, m));
      const [rows, cols] = t.shape as [number, number];
      const heads = m === 'q_proj' ? c.num_attention_heads : m === 'k_proj' ? c.num_key_value_heads : 0;
      const data = heads > 0 ? permuteRopeRows(t.f32(), rows, cols, heads) : t.f32();
      out.push({ name: `blk.${l}.${GGUF_MATRIX[m]}.weight`, shape: t.shape, data });
    }
    norm('post_attention_layernorm', 'ffn_norm');
  }
  out.push({ name: 'output_norm.weight', shape: model.params.norm.shape, data: model.params.norm.f32() });
  if (!c.tie_word_embeddings) out.push({ name: 'output.weight', shape: by(LM_HEAD).shape, data: by(LM_HEAD).f32() });
  return out;
}

/**
 * Write `model` (unrolled first; a routed model is refused with an ExportError) and its
 * byte-level BPE tokenizer as a GGUF v3 file llama.cpp loads as general.architecture = llama.
 * Written to a temporary file, then renamed.
 */
export function exportGguf(model: Model, tokenizer: Tokenizer, path: string, opts: GgufOptions = {}): void {
  const plain = unrollModel(model);
  const c = plain.config;
  const dtype = opts.dtype ?? 'f32';
  const tokJson = tokenizer.toJSON();
  const pre = opts.pre ?? ggufPreTokenizer(tokJson);
  const vocab = ggufVocab(tokJson, c.vocab_size);
  const hd = headDim(c);

  const meta: Array<[string, MetaValue]> = [
    ['general.architecture', { type: 'str', v: 'llama' }],
    ['general.name', { type: 'str', v: opts.name ?? 'mor-ts model' }],
    ['general.alignment', { type: 'u32', v: GGUF_ALIGNMENT }],
    ['general.file_type', { type: 'u32', v: dtype === 'f16' ? 1 : 0 }], // 0 = all f32, 1 = mostly f16
    ['llama.vocab_size', { type: 'u32', v: c.vocab_size }],
    ['llama.context_length', { type: 'u32', v: c.max_position_embeddings }],
    ['llama.embedding_length', { type: 'u32', v: c.hidden_size }],
    ['llama.block_count', { type: 'u32', v: c.num_hidden_layers }],
    ['llama.feed_forward_length', { type: 'u32', v: c.intermediate_size }],
    ['llama.attention.head_count', { type: 'u32', v: c.num_attention_heads }],
    ['llama.attention.head_count_kv', { type: 'u32', v: c.num_key_value_heads }],
    ['llama.attention.key_length', { type: 'u32', v: hd }],
    ['llama.attention.value_length', { type: 'u32', v: hd }],
    ['llama.rope.freq_base', { type: 'f32', v: c.rope_theta }],
    ['llama.rope.dimension_count', { type: 'u32', v: hd }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', v: c.rms_norm_eps }],
    ['tokenizer.ggml.model', { type: 'str', v: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'str', v: pre }],
    ['tokenizer.ggml.tokens', { type: 'str[]', v: vocab.tokens }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', v: vocab.types }],
    ['tokenizer.ggml.merges', { type: 'str[]', v: vocab.merges }],
    ...(tokenizer.bosId !== null ? [['tokenizer.ggml.bos_token_id', { type: 'u32', v: tokenizer.bosId }] as [string, MetaValue]] : []),
    ['tokenizer.ggml.eos_token_id', { type: 'u32', v: tokenizer.eosId }],
    // our encode() adds no special tokens; llama.cpp should not either
    ['tokenizer.ggml.add_bos_token', { type: 'bool', v: false }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', v: false }],
  ];

  const tensors = ggufTensors(plain).map((t) => {
    const half = dtype === 'f16' && t.shape.length === 2;
    let bytes: Uint8Array;
    if (half) {
      const h = new Uint16Array(t.data.length);
      for (let i = 0; i < h.length; i++) h[i] = f32ToF16Bits(t.data[i] as number);
      bytes = new Uint8Array(h.buffer);
    } else bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    return { ...t, type: half ? GGML_TYPE.F16 : GGML_TYPE.F32, bytes };
  });

  const w = new ByteWriter();
  for (const ch of 'GGUF') w.u8(ch.charCodeAt(0));
  w.u32(GGUF_VERSION);
  w.u64(tensors.length);
  w.u64(meta.length);
  for (const [k, v] of meta) writeMeta(w, k, v);
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    w.str(t.name);
    w.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) w.u64(d); // innermost first
    w.u32(t.type);
    w.u64(offset);
    const padded = Math.ceil(t.bytes.length / GGUF_ALIGNMENT) * GGUF_ALIGNMENT;
    chunks.push(t.bytes);
    if (padded > t.bytes.length) chunks.push(new Uint8Array(padded - t.bytes.length));
    offset += padded;
  }
  w.pad(GGUF_ALIGNMENT);
  writeFileAtomicSync(path, [w.bytes(), ...chunks]);
}
