/**
 * Tokenizer: a Hugging Face tokenizer.json (ours from bpe-train.ts, or a foreign one such as
 * GPT-2's or SmolLM's) loaded with @huggingface/tokenizers, plus a fast encoder for byte-level
 * BPE (fast-bpe.ts) that gives the library's ids about 14× faster (bench/data.ts).
 *
 * Behaviour worth knowing:
 *   - encode() adds no special tokens (no BOS/EOS); text that spells a special token, such as
 *     "<|endoftext|>", IS encoded as that token, as the library and Hugging Face do by default.
 *   - decode() turns special tokens back into their text and never "cleans up" spaces, so
 *     decode(encode(s)) === s for every well-formed string with a byte-level tokenizer.
 *   - Lone surrogates (ill-formed UTF-16) cannot be written as UTF-8: TextEncoder turns each into
 *     U+FFFD, so they come back as '\uFFFD'. Any id sequence that cuts a multi-byte character
 *     in half also decodes to U+FFFD for the broken part (TextDecoder, fatal: false).
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ArgumentError, DataError } from '../errors.js';
import { EOS_TOKEN } from './byte-level.js';
import { FastByteLevelBpe, type PreTokenizeFn } from './fast-bpe.js';
import { canonicalJson, sha256Hex, writeFileAtomic } from './util.js';

type Json = Record<string, unknown>;

export interface TokenizerOptions {
  /** tokenizer_config.json content (fromFile reads it from beside tokenizer.json when present). */
  config?: Json;
  /** The end-of-text token to use; default: config.eos_token, else the first known EOS spelling present. */
  eosToken?: string;
  /** Use the fast byte-level encoder when it applies (default true). */
  fast?: boolean;
}

/** Spellings of "end of text" tried in order when no eos token is named. */
const EOS_CANDIDATES = [EOS_TOKEN, '</s>', '<|end_of_text|>', '<eos>', '<|eot_id|>', '<|im_end|>', '<|end|>'];

export class Tokenizer {
  /** Number of embedding rows needed: the largest id + 1. */
  readonly vocabSize: number;
  /** Id of the end-of-text token that separates documents. */
  readonly eosId: number;
  readonly eosToken: string;
  /** Beginning-of-text token named by tokenizer_config.json's bos_token (null when none is named or it is not in the vocabulary). */
  readonly bosToken: string | null;
  readonly bosId: number | null;
  /** sha256 of the canonical JSON of tokenizer.json: names the tokenizer in cache manifests. */
  readonly hash: string;
  private readonly json: Json;
  private readonly lib: HfTokenizer;
  private readonly fastEncoder: FastByteLevelBpe | null;
  /** model.unk_token, when the model names one. */
  private readonly unkToken: string | null;
  /** Its id, or undefined when the named token is not in the vocabulary. */
  private readonly unkId: number | undefined;

  private constructor(json: Json, options: TokenizerOptions) {
    const config: Json = { ...(options.config ?? {}) };
    json = structuredClone(json); // later changes to the caller's object must not change this tokenizer
    this.json = json;
    this.hash = sha256Hex(canonicalJson(json));
    const model = json['model'];
    if (model === null || typeof model !== 'object' || Array.isArray(model)) {
      throw new DataError(`tokenizer.json must have a "model" object, got ${describe(model)}`);
    }
    checkShape(json, model as Json);
    // The library wants these keys present (null is fine) and added_tokens to be an array.
    const forLib: Json = {
      normalizer: null,
      pre_tokenizer: null,
      post_processor: null,
      decoder: null,
      ...json,
      added_tokens: Array.isArray(json['added_tokens']) ? json['added_tokens'] : [],
    };
    try {
      this.lib = new HfTokenizer(forLib, { ...config, clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new DataError(`tokenizer.json could not be loaded by @huggingface/tokenizers: ${(e as Error).message}`);
    }

    let maxId = -1;
    for (const [, id] of malformedIsDataError(() => this.lib.get_vocab(true))) if (id > maxId) maxId = id;
    if (maxId < 0) throw new DataError('tokenizer.json has an empty vocabulary');
    this.vocabSize = maxId + 1;

    const eos = options.eosToken ?? tokenFromConfig(config, 'eos_token') ?? EOS_CANDIDATES.find((t) => this.lib.token_to_id(t) !== undefined);
    const eosId = eos === undefined ? undefined : this.lib.token_to_id(eos);
    if (eos === undefined || eosId === undefined) {
      const specials = [...this.lib.get_added_tokens_decoder().values()].filter((t) => t.special).map((t) => t.content);
      throw new DataError(
        `tokenizer has no end-of-text token: ${eos === undefined ? `none of ${EOS_CANDIDATES.join(', ')} is in the vocabulary` : `'${eos}' is not in the vocabulary`}; ` +
          `its special tokens are [${specials.join(', ')}]; name one with the eosToken option`,
      );
    }
    this.eosToken = eos;
    this.eosId = eosId;
    const bos = tokenFromConfig(config, 'bos_token');
    const bosId = bos === undefined ? undefined : this.lib.token_to_id(bos);
    this.bosToken = bosId === undefined ? null : (bos as string);
    this.bosId = bosId ?? null;

    // The library leaves a piece it cannot map as an undefined id (WordLevel ignores its
    // unk_token), so unknown pieces are mapped to the unk token here.
    const unk = (model as Json)['unk_token'];
    this.unkToken = typeof unk === 'string' ? unk : null;
    this.unkId = this.unkToken === null ? undefined : this.lib.token_to_id(this.unkToken);

    const pre = this.lib.pre_tokenizer;
    const libPreTokenize: PreTokenizeFn | null =
      pre === null ? null : (text, opts) => pre.pre_tokenize(text, opts) as string[];
    this.fastEncoder = options.fast === false ? null : malformedIsDataError(() => FastByteLevelBpe.tryCreate(json, config, libPreTokenize));
  }

  /** Load tokenizer.json from a file, or from a directory holding tokenizer.json (and maybe tokenizer_config.json). */
  static async fromFile(file: string, options: TokenizerOptions = {}): Promise<Tokenizer> {
    let jsonPath = file;
    let stat;
    try {
      stat = await fs.stat(file);
    } catch {
      throw new DataError(`tokenizer file not found: ${file}`);
    }
    if (stat.isDirectory()) jsonPath = path.join(file, 'tokenizer.json');
    let text: string;
    try {
      text = await fs.readFile(jsonPath, 'utf8');
    } catch (e) {
      throw new DataError(`cannot read tokenizer file ${jsonPath}: ${(e as Error).message}`);
    }
    let config = options.config;
    if (config === undefined) {
      const configPath = path.join(path.dirname(jsonPath), 'tokenizer_config.json');
      const configText = await fs.readFile(configPath, 'utf8').catch(() => null);
      if (configText !== null) config = parseJson(configText, configPath);
    }
    return new Tokenizer(parseJson(text, jsonPath), config === undefined ? options : { ...options, config });
  }

  /** Build from a tokenizer.json object or its text. */
  static fromJSON(json: object | string, options: TokenizerOptions = {}): Tokenizer {
    const obj = typeof json === 'string' ? parseJson(json, 'tokenizer JSON string') : json;
    if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
      throw new DataError(`tokenizer JSON must be an object, got ${describe(obj)}`);
    }
    return new Tokenizer(obj as Json, options);
  }

  /** Whether encode() runs the fast byte-level encoder (else the library). */
  get usesFastEncoder(): boolean {
    return this.fastEncoder !== null;
  }

  /** Token ids of `text`; no special tokens are added. */
  encode(text: string): Int32Array {
    if (this.fastEncoder !== null) return this.fastEncoder.encode(text);
    return this.encodeWithLibrary(text);
  }

  /** encode() through @huggingface/tokenizers itself: the reference the fast path is checked against. */
  encodeWithLibrary(text: string): Int32Array {
    if (text.length === 0) return new Int32Array(0);
    const { ids, tokens } = this.lib.encode(text, { add_special_tokens: false });
    const out = new Int32Array(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i] ?? this.unkId;
      if (id === undefined) {
        const why = this.unkToken === null ? 'it has no unk token' : `its unk token '${this.unkToken}' is not in the vocabulary`;
        throw new DataError(`tokenizer has no id for the piece ${JSON.stringify(tokens[i] ?? '')} and ${why}`);
      }
      out[i] = id;
    }
    return out;
  }

  /** Text of token ids (special tokens as their text; no space clean-up). */
  decode(ids: ArrayLike<number>): string {
    if (ids.length === 0) return '';
    const list = new Array<number>(ids.length);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize || this.lib.id_to_token(id) === undefined) {
        throw new ArgumentError(`decode: id ${id} at position ${i} is not in the vocabulary (size ${this.vocabSize})`);
      }
      list[i] = id;
    }
    return this.lib.decode(list, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  /** The token string of an id (byte-level form, e.g. 'Ġthe'), or undefined. */
  idToToken(id: number): string | undefined {
    return this.lib.id_to_token(id);
  }

  /** The id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.lib.token_to_id(token);
  }

  /** The tokenizer.json object (a deep copy). */
  toJSON(): Json {
    return structuredClone(this.json);
  }

  /** Write tokenizer.json atomically. */
  async save(file: string): Promise<void> {
    await writeFileAtomic(file, JSON.stringify(this.json));
  }
}

/**
 * The parts of tokenizer.json that the library and the fast encoder index without checking:
 * added_tokens entries and BPE merges. Anything else malformed is the library's to report.
 */
function checkShape(json: Json, model: Json): void {
  const added = json['added_tokens'];
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) throw new DataError(`tokenizer.json added_tokens must be an array, got ${describe(added)}`);
    added.forEach((t: unknown, i) => {
      const ok = t !== null && typeof t === 'object' && typeof (t as Json)['id'] === 'number' && typeof (t as Json)['content'] === 'string';
      if (!ok) throw new DataError(`tokenizer.json added_tokens[${i}] must be an object with a numeric id and a string content, got ${JSON.stringify(t) ?? describe(t)}`);
    });
  }
  const merges = model['merges'];
  if (model['type'] === 'BPE' && merges !== undefined) {
    if (!Array.isArray(merges)) throw new DataError(`tokenizer.json model.merges must be an array, got ${describe(merges)}`);
    for (let i = 0; i < merges.length; i++) {
      const m: unknown = merges[i];
      const pair = Array.isArray(m) && m.length === 2 && typeof m[0] === 'string' && typeof m[1] === 'string';
      if (!pair && typeof m !== 'string') {
        throw new DataError(`tokenizer.json model.merges[${i}] must be "left right" or a [left, right] pair of strings, got ${JSON.stringify(m) ?? describe(m)}`);
      }
    }
  }
}

/** Runs fn; an untyped error from it (a TypeError on a malformed file) becomes a DataError. */
function malformedIsDataError<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof DataError || e instanceof ArgumentError) throw e;
    throw new DataError(`tokenizer.json is malformed: ${(e as Error).message}`);
  }
}

/** A special token of tokenizer_config.json: a string, or an AddedToken object { content }. */
function tokenFromConfig(config: Json, key: 'eos_token' | 'bos_token'): string | undefined {
  const e = config[key];
  if (typeof e === 'string') return e;
  if (e !== null && typeof e === 'object' && typeof (e as Json)['content'] === 'string') return (e as Json)['content'] as string;
  return undefined;
}

function parseJson(text: string, where: string): Json {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new DataError(`${where} is not valid JSON: ${(e as Error).message}`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new DataError(`${where} must hold a JSON object, got ${describe(v)}`);
  return v as Json;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v;
}
