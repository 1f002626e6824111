/**
 * Checkpoints: a directory that Hugging Face tools would recognise, plus training state.
 *
 *   <dir>/config.json          the model config (ours: HF Llama names + recursion section)
 *   <dir>/model.safetensors    parameters by their table names
 *   <dir>/tokenizer.json       the tokenizer (when one is given)
 *   <dir>/optimizer.safetensors  AdamW moments "<name>.m", "<name>.v"; steps in metadata
 *   <dir>/trainer_state.json   step, data cursor, RNG state, counters (free-form JSON)
 *
 * Saving is atomic at the directory level: everything is written into a sibling temporary
 * directory, which then replaces the old checkpoint by rename. A crash or Ctrl-C mid-save
 * leaves the previous checkpoint intact.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { assembleParams, type ModelParams } from '../model/params.js';
import { modelFromParams, type Model } from '../model/model.js';
import { parameter, type Tensor } from '../tensor/tensor.js';
import { CheckpointError, readSafetensors, writeSafetensors, type NamedArray } from '../util/safetensors.js';
import { MorError } from '../errors.js';
import type { AdamW } from './optim.js';

export { CheckpointError };

export interface SaveOptions {
  /** tokenizer.json content (a JSON string or object). */
  tokenizer?: string | object;
  optimizer?: AdamW;
  trainerState?: unknown;
}

function writeCheckpointFiles(dir: string, model: Model, opts: SaveOptions): void {
  writeFileSync(join(dir, 'config.json'), JSON.stringify(model.config, null, 2) + '\n');
  const tensors: Array<[string, NamedArray]> = model.params.specs.map((s) => {
    const t = model.params.byName.get(s.name) as Tensor;
    return [s.name, { shape: t.shape, data: t.f32() }];
  });
  writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt', producer: 'mor-ts' });
  if (opts.tokenizer !== undefined) {
    const json = typeof opts.tokenizer === 'string' ? opts.tokenizer : JSON.stringify(opts.tokenizer);
    writeFileSync(join(dir, 'tokenizer.json'), json);
  }
  if (opts.optimizer !== undefined) {
    const entries = opts.optimizer.stateEntries();
    const arrays: Array<[string, NamedArray]> = [];
    const steps: Record<string, number> = {};
    for (const e of entries) {
      arrays.push([`${e.name}.m`, { shape: [e.m.length], data: e.m }]);
      arrays.push([`${e.name}.v`, { shape: [e.v.length], data: e.v }]);
      steps[e.name] = e.step;
    }
    writeSafetensors(join(dir, 'optimizer.safetensors'), arrays, { steps: JSON.stringify(steps) });
  }
  if (opts.trainerState !== undefined) {
    writeFileSync(join(dir, 'trainer_state.json'), JSON.stringify(opts.trainerState, null, 2) + '\n');
  }
}

/** Save a checkpoint directory atomically (see the file comment). */
export function saveCheckpoint(dir: string, model: Model, opts: SaveOptions = {}): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}`);
  const old = join(parent, `.${basename(dir)}.old-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    writeCheckpointFiles(tmp, model, opts);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  if (existsSync(dir)) {
    renameSync(dir, old);
    renameSync(tmp, dir);
    rmSync(old, { recursive: true, force: true });
  } else {
    renameSync(tmp, dir);
  }
}

function readJson(path: string, what: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new CheckpointError(`checkpoint ${what} missing or unreadable: ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`checkpoint ${what} is not valid JSON: ${path} (${(e as Error).message})`);
  }
}

export interface LoadedCheckpoint {
  model: Model;
  /** tokenizer.json text, when present. */
  tokenizerJson: string | null;
  trainerState: unknown;
  /** Optimiser moments by parameter name (null when the checkpoint has none). */
  optimizerState: Map<string, { m: Float32Array; v: Float32Array; step: number }> | null;
}

export interface LoadOptions {
  /** Read optimizer.safetensors (default true). Evaluation and generation need only config, weights and tokenizer. */
  readonly optimizer?: boolean;
}

/** Load a checkpoint directory; every problem is a CheckpointError naming the file. */
export async function loadCheckpoint(dir: string, opts: LoadOptions = {}): Promise<LoadedCheckpoint> {
  if (!existsSync(dir)) throw new CheckpointError(`checkpoint directory not found: ${dir}`);
  let config: ModelConfig;
  try {
    config = validateConfig(readJson(join(dir, 'config.json'), 'config.json'));
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(`${join(dir, 'config.json')}: ${(e as Error).message}`);
  }
  const weights = await readSafetensors(join(dir, 'model.safetensors'));
  const byName = new Map<string, Tensor>();
  for (const [name, arr] of weights.tensors) {
    if (!(arr.data instanceof Float32Array)) throw new CheckpointError(`model.safetensors: '${name}' is not a float tensor`);
    byName.set(name, parameter(arr.data, arr.shape, name));
  }
  let params: ModelParams;
  try {
    params = assembleParams(config, byName);
  } catch (e) {
    if (e instanceof MorError) throw new CheckpointError(`${join(dir, 'model.safetensors')} does not match config.json: ${e.message}`);
    throw e;
  }
  const tokPath = join(dir, 'tokenizer.json');
  const tokenizerJson = existsSync(tokPath) ? readFileSync(tokPath, 'utf8') : null;
  const statePath = join(dir, 'trainer_state.json');
  const trainerState = existsSync(statePath) ? readJson(statePath, 'trainer_state.json') : null;
  let optimizerState: LoadedCheckpoint['optimizerState'] = null;
  const optPath = join(dir, 'optimizer.safetensors');
  if (opts.optimizer !== false && existsSync(optPath)) {
    const f = await readSafetensors(optPath);
    let steps: Record<string, number>;
    try {
      steps = JSON.parse(f.metadata['steps'] ?? '{}') as Record<string, number>;
    } catch {
      throw new CheckpointError(`${optPath}: metadata 'steps' is not valid JSON`);
    }
    optimizerState = new Map();
    for (const [name, step] of Object.entries(steps)) {
      const m = f.tensors.get(`${name}.m`)?.data;
      const v = f.tensors.get(`${name}.v`)?.data;
      if (!(m instanceof Float32Array) || !(v instanceof Float32Array)) {
        throw new CheckpointError(`${optPath}: moments for '${name}' are missing`);
      }
      optimizerState.set(name, { m, v, step });
    }
  }
  return { model: modelFromParams(config, params), tokenizerJson, trainerState, optimizerState };
}
