/**
 * Hugging Face Llama directories (what transformers' save_pretrained writes for
 * LlamaForCausalLM), in and out:
 *
 *   config.json                     hyperparameters (keys that change nothing are dropped; keys
 *                                   that would change the math are refused, see model/config.ts)
 *   model.safetensors               weights in F32, BF16 or F16 (held as f32), or
 *   model.safetensors.index.json    { weight_map: { tensor → shard file } } + the shards
 *   tokenizer.json                  the tokenizer; tokenizer_config.json names BOS and EOS
 *
 * Tensor names are transformers' own, which are also ours (model/params.ts), so import is a
 * check of names and shapes. Export writes a plain Llama: recursive and relaxed models are
 * unrolled first (unroll.ts).
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ArgumentError } from '../errors.js';
import { ConfigError } from '../model/config-error.js';
import { headDim, validateConfig, type ModelConfig } from '../model/config.js';
import { modelFromParams, type Model } from '../model/model.js';
import { LM_HEAD, assembleParams, paramTable } from '../model/params.js';
import { parameter, type Tensor } from '../tensor/tensor.js';
import { CheckpointError, readSafetensors, writeSafetensors, type NamedArray } from '../util/safetensors.js';
import { writeFileAtomicSync } from '../util/fs.js';
import { Tokenizer } from '../data/tokenizer.js';
import { unrollModel } from './unroll.js';

export const HF_INDEX_FILE = 'model.safetensors.index.json';
export const HF_WEIGHTS_FILE = 'model.safetensors';

/** Keys a Hugging Face Llama config must give (transformers' defaults for them are a 7B model's). */
const REQUIRED_HF_KEYS = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads'] as const;

/** Tensors transformers may store that carry no weights (older checkpoints saved RoPE's inverse frequencies). */
const BUFFER_TENSOR = /\.rotary_emb\.inv_freq$/;

/** Whether `dir` holds a mor-ts checkpoint (its config.json has our `recursion` section) rather than a Hugging Face model. */
export function isMorCheckpoint(configJson: unknown): boolean {
  return typeof configJson === 'object' && configJson !== null && 'recursion' in configJson;
}

function readJsonFile(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`${what} missing or unreadable: ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${what} is not valid JSON: ${path} (${(e as Error).message})`);
  }
}

/**
 * A Hugging Face LlamaForCausalLM config.json as a ModelConfig. Optional keys take transformers'
 * LlamaConfig defaults (num_key_value_heads = heads, rms_norm_eps 1e-6, rope_theta 10000,
 * context 2048, tie_word_embeddings false); `where` names the file in errors.
 */
export function configFromHf(raw: unknown, where = 'config.json'): ModelConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`${where}: must hold a JSON object`);
  const r = raw as Record<string, unknown>;
  for (const key of REQUIRED_HF_KEYS) {
    if (r[key] === undefined || r[key] === null) throw new ConfigError(`${where}: a Llama config needs '${key}'`);
  }
  const defaults: Record<string, unknown> = {
    num_key_value_heads: r['num_attention_heads'],
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    tie_word_embeddings: false,
    initializer_range: 0.02,
  };
  const filled: Record<string, unknown> = { ...r };
  for (const [k, v] of Object.entries(defaults)) if (filled[k] === undefined || filled[k] === null) filled[k] = v;
  try {
    return validateConfig(filled);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`${where}: ${e.message}`);
    throw e;
  }
}

/** The weight files of a Hugging Face directory: the index's shards, or the single model.safetensors. */
function weightFiles(dir: string): Array<{ file: string; listed: Set<string> | null }> {
  const indexPath = join(dir, HF_INDEX_FILE);
  if (existsSync(indexPath)) {
    const index = readJsonFile(indexPath, HF_INDEX_FILE) as { weight_map?: unknown };
    const map = index.weight_map;
    if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new CheckpointError(`${indexPath}: expected a "weight_map" object`);
    const byFile = new Map<string, Set<string>>();
    for (const [tensorName, file] of Object.entries(map as Record<string, unknown>)) {
      if (typeof file !== 'string' || file.includes('/') || file.includes('\\')) {
        throw new CheckpointError(`${indexPath}: weight_map['${tensorName}'] must name a file in the directory, got ${JSON.stringify(file)}`);
      }
      let set = byFile.get(file);
      if (set === undefined) byFile.set(file, (set = new Set()));
      set.add(tensorName);
    }
    for (const file of byFile.keys()) {
      if (!existsSync(join(dir, file))) throw new CheckpointError(`${dir}: shard ${file}, listed in ${HF_INDEX_FILE}, is missing`);
    }
    return [...byFile].map(([file, listed]) => ({ file, listed }));
  }
  if (existsSync(join(dir, HF_WEIGHTS_FILE))) return [{ file: HF_WEIGHTS_FILE, listed: null }];
  throw new CheckpointError(`${dir}: no weights (expected ${HF_WEIGHTS_FILE} or ${HF_INDEX_FILE} with its shards)`);
}

/** Read a Hugging Face Llama directory's config and weights (every tensor checked against the parameter table). */
export async function loadHfModel(dir: string): Promise<Model> {
  const configPath = join(dir, 'config.json');
  const config = configFromHf(readJsonFile(configPath, 'config.json'), configPath);
  const specs = new Map(paramTable(config).map((s) => [s.name, s]));
  const byName = new Map<string, Tensor>();
  const from = new Map<string, string>();
  for (const { file, listed } of weightFiles(dir)) {
    const path = join(dir, file);
    const st = await readSafetensors(path);
    for (const name of listed ?? []) {
      if (!st.tensors.has(name)) throw new CheckpointError(`${path}: tensor '${name}' is listed there by ${HF_INDEX_FILE} but the shard does not hold it`);
    }
    for (const [name, arr] of st.tensors) {
      if (BUFFER_TENSOR.test(name)) continue;
      if (name === LM_HEAD && config.tie_word_embeddings) continue; // tied: transformers ignores a stored head too
      const spec = specs.get(name);
      if (spec === undefined) throw new CheckpointError(`${path}: unexpected tensor '${name}' (not a LlamaForCausalLM weight of this config)`);
      if (!(arr.data instanceof Float32Array)) throw new CheckpointError(`${path}: tensor '${name}' is not a float tensor (F32, BF16 or F16)`);
      if (arr.shape.length !== spec.shape.length || arr.shape.some((d, i) => d !== spec.shape[i])) {
        throw new CheckpointError(`${path}: tensor '${name}' must have shape [${spec.shape.join(', ')}] for config.json, got [${arr.shape.join(', ')}]`);
      }
      const seen = from.get(name);
      if (seen !== undefined) throw new CheckpointError(`${path}: tensor '${name}' is also in ${seen}`);
      from.set(name, file);
      byName.set(name, parameter(arr.data, arr.shape, name));
    }
  }
  const missing = [...specs.keys()].filter((n) => !byName.has(n));
  if (missing.length > 0) {
    const hint = missing.includes(LM_HEAD) ? ' (tie_word_embeddings is false, so the head is its own lm_head.weight)' : '';
    throw new CheckpointError(`${dir}: missing tensor${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).map((n) => `'${n}'`).join(', ')}${missing.length > 5 ? ', …' : ''}${hint}`);
  }
  return modelFromParams(config, assembleParams(config, byName));
}

/** tokenizer.json (+ tokenizer_config.json for BOS/EOS) of a model directory. */
export async function loadHfTokenizer(dir: string): Promise<Tokenizer> {
  if (!existsSync(join(dir, 'tokenizer.json'))) throw new CheckpointError(`${dir} has no tokenizer.json`);
  return Tokenizer.fromFile(dir);
}

/** config.json of a plain Llama as transformers writes it for LlamaForCausalLM. */
export function hfConfigJson(c: ModelConfig, tokenizer: Tokenizer | null): Record<string, unknown> {
  if (c.recursion !== null || c.mor !== null || c.mod !== null) throw new ArgumentError('hfConfigJson: expects a plain (unrolled) config');
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: tokenizer?.bosId ?? null,
    eos_token_id: tokenizer?.eosId ?? null,
    head_dim: headDim(c),
    hidden_act: 'silu',
    hidden_size: c.hidden_size,
    initializer_range: c.initializer_range,
    intermediate_size: c.intermediate_size,
    max_position_embeddings: c.max_position_embeddings,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: c.num_attention_heads,
    num_hidden_layers: c.num_hidden_layers,
    num_key_value_heads: c.num_key_value_heads,
    pretraining_tp: 1,
    rms_norm_eps: c.rms_norm_eps,
    rope_scaling: null,
    rope_theta: c.rope_theta,
    tie_word_embeddings: c.tie_word_embeddings,
    torch_dtype: 'float32',
    use_cache: true,
    vocab_size: c.vocab_size,
  };
}

export interface DirectoryWriteOptions {
  /** Replace `out` when it exists (default: refuse). */
  readonly overwrite?: boolean;
}

/**
 * Fill a fresh temporary directory beside `out`, then rename it into place (the old `out`, with
 * `overwrite`, is moved aside first and removed last): `out` is never half-written.
 */
export function writeDirectoryAtomically(out: string, opts: DirectoryWriteOptions, fill: (tmp: string) => void): void {
  const target = resolve(out);
  if (existsSync(target) && opts.overwrite !== true) throw new ArgumentError(`${out} already exists: remove it or pass overwrite (--overwrite)`);
  const parent = dirname(target);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(target)}.tmp-${process.pid}`);
  const old = join(parent, `.${basename(target)}.old-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    fill(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const hadOld = existsSync(target);
  if (hadOld) renameSync(target, old);
  renameSync(tmp, target);
  if (hadOld) rmSync(old, { recursive: true, force: true });
}

/**
 * Write `model` as a Hugging Face LlamaForCausalLM directory (config.json, model.safetensors in
 * F32, tokenizer.json and tokenizer_config.json): recursive and relaxed models are unrolled
 * (sharing and LoRA folded in); a model with routers is refused (ExportError).
 */
export function exportHf(model: Model, tokenizer: Tokenizer | null, out: string, opts: DirectoryWriteOptions = {}): void {
  const plain = unrollModel(model);
  const c = plain.config;
  writeDirectoryAtomically(out, opts, (tmp) => {
    writeFileAtomicSync(join(tmp, 'config.json'), JSON.stringify(hfConfigJson(c, tokenizer), null, 2) + '\n');
    const tensors: Array<[string, NamedArray]> = plain.params.specs.map((s) => {
      const t = plain.params.byName.get(s.name) as Tensor;
      return [s.name, { shape: t.shape, data: t.f32() }];
    });
    writeSafetensors(join(tmp, HF_WEIGHTS_FILE), tensors, { format: 'pt' });
    if (tokenizer !== null) {
      writeFileAtomicSync(join(tmp, 'tokenizer.json'), JSON.stringify(tokenizer.toJSON()));
      const tokConfig: Record<string, unknown> = {
        bos_token: tokenizer.bosToken,
        eos_token: tokenizer.eosToken,
        clean_up_tokenization_spaces: false,
        model_max_length: c.max_position_embeddings,
        tokenizer_class: 'PreTrainedTokenizerFast',
      };
      writeFileAtomicSync(join(tmp, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
    }
  });
}
