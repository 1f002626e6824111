/**
 * One entry point for every command and library user that reads a model: a mor-ts checkpoint
 * directory or a Hugging Face Llama directory, told apart by config.json (ours has a
 * `recursion` section, null for a plain model; transformers' never has one).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointError, CheckpointNotFoundError, loadCheckpoint, previousCheckpointDir } from '../train/checkpoint.js';
import { Tokenizer } from '../data/tokenizer.js';
import type { Model } from '../model/model.js';
import { isMorCheckpoint, loadHfModel, loadHfTokenizer } from './hf.js';

export interface LoadedModel {
  readonly model: Model;
  readonly tokenizer: Tokenizer;
  /** tokenizer.json text (what a token cache is keyed by). */
  readonly tokenizerJson: string;
  /** 'mor': a mor-ts checkpoint; 'hf': a Hugging Face LlamaForCausalLM directory. */
  readonly source: 'mor' | 'hf';
  /** trainer_state.json of a mor-ts checkpoint (null for Hugging Face models and checkpoints without one). */
  readonly trainerState: unknown;
}

/**
 * Load a model and its tokenizer from `dir`: a mor-ts checkpoint (config.json with a `recursion`
 * section, model.safetensors, tokenizer.json) or a Hugging Face Llama directory (config.json,
 * model.safetensors or a sharded index, in F32/BF16/F16, tokenizer.json + tokenizer_config.json).
 * Optimiser state is not read. Problems are typed: CheckpointNotFoundError (no such directory),
 * ConfigError (a config key that changes the math, or a bad value), CheckpointError (missing
 * shard, wrong tensor shape, corrupt file, no tokenizer).
 */
export async function loadModel(dir: string): Promise<LoadedModel> {
  const configPath = join(dir, 'config.json');
  const interrupted = !existsSync(dir) && existsSync(previousCheckpointDir(dir));
  if (!existsSync(dir) && !interrupted) throw new CheckpointNotFoundError(`checkpoint directory not found: ${dir} (expected a mor-ts checkpoint or a Hugging Face Llama directory)`);
  let raw: unknown = null;
  if (!interrupted) {
    try {
      raw = JSON.parse(readFileSync(configPath, 'utf8'));
    } catch (e) {
      throw new CheckpointError(`${configPath} missing or not valid JSON (${(e as Error).message})`);
    }
  }
  if (interrupted || isMorCheckpoint(raw)) {
    const ck = await loadCheckpoint(dir, { optimizer: false });
    if (!ck.tokenizerJson) throw new CheckpointError(`${dir} has no tokenizer.json`);
    const tokenizer = Tokenizer.fromJSON(ck.tokenizerJson);
    checkVocab(ck.model, tokenizer, dir);
    return { model: ck.model, tokenizer, tokenizerJson: ck.tokenizerJson, source: 'mor', trainerState: ck.trainerState };
  }
  const model = await loadHfModel(dir);
  const tokenizer = await loadHfTokenizer(dir);
  checkVocab(model, tokenizer, dir);
  return { model, tokenizer, tokenizerJson: JSON.stringify(tokenizer.toJSON()), source: 'hf', trainerState: null };
}

function checkVocab(model: Model, tokenizer: Tokenizer, dir: string): void {
  if (tokenizer.vocabSize > model.config.vocab_size) {
    throw new CheckpointError(`${dir}: the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${model.config.vocab_size}`);
  }
}

/**
 * A model's weights for a new run or a conversion: a mor-ts checkpoint (its tokenizer optional —
 * a caller may supply one) or a Hugging Face Llama directory (through loadModel).
 */
export async function loadWeights(path: string): Promise<{ model: Model; tokenizerJson: string | null; kind: 'Hugging Face model' | 'mor-ts checkpoint' }> {
  const configPath = join(path, 'config.json');
  if (existsSync(configPath)) {
    let raw: unknown = null;
    try {
      raw = JSON.parse(readFileSync(configPath, 'utf8'));
    } catch {
      raw = null; // loadCheckpoint names the problem
    }
    if (raw !== null && !isMorCheckpoint(raw)) {
      const loaded = await loadModel(path);
      return { model: loaded.model, tokenizerJson: loaded.tokenizerJson, kind: 'Hugging Face model' };
    }
  }
  const ck = await loadCheckpoint(path, { optimizer: false });
  return { model: ck.model, tokenizerJson: ck.tokenizerJson, kind: 'mor-ts checkpoint' };
}
