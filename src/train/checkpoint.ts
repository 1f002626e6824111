/**
 * Checkpoints: a directory that Hugging Face tools would recognise, plus training state.
 *
 *   <dir>/config.json          the model config (ours: HF Llama names + recursion section)
 *   <dir>/model.safetensors    parameters by their table names
 *   <dir>/tokenizer.json       the tokenizer (when one is given)
 *   <dir>/optimizer.safetensors  AdamW moments "<name>.m", "<name>.v"; steps in metadata
 *   <dir>/trainer_state.json   step, data cursor, RNG state, counters (free-form JSON)
 *   <dir>/conversion.json      how `mor convert` made the model (converted checkpoints only)
 *
 * Saving is crash-safe at the directory level. In the parent directory:
 *
 *   1. write   .checkpoint.tmp-PID/      (a kill here leaves checkpoint/ as it was)
 *   2. rename  checkpoint/ → checkpoint.prev/
 *   3. rename  .checkpoint.tmp-PID/ → checkpoint/
 *   4. remove  checkpoint.prev/
 *
 * Between 2 and 3 there is no checkpoint/ but checkpoint.prev/ holds the previous one, and
 * loadCheckpoint reads it from there. The next save first repairs what a kill left: it moves a
 * lone checkpoint.prev/ back, removes a checkpoint.prev/ beside a complete checkpoint/, and
 * removes temporaries of processes that are no longer running.
 */
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { assembleParams, type ModelParams } from '../model/params.js';
import { modelFromParams, type Model } from '../model/model.js';
import { parameter, type Tensor } from '../tensor/tensor.js';
import { CheckpointError, readSafetensors, writeSafetensors, type NamedArray } from '../util/safetensors.js';
import { MorError } from '../errors.js';
import type { AdamW } from './optim.js';

export { CheckpointError };

/** The checkpoint directory named does not exist (a usage error for the CLI, exit code 2). */
export class CheckpointNotFoundError extends CheckpointError {}

export interface SaveOptions {
  /** tokenizer.json content (a JSON string or object). */
  tokenizer?: string | object;
  optimizer?: AdamW;
  trainerState?: unknown;
  /** Further small files written inside the checkpoint, by name (e.g. conversion.json). */
  files?: Readonly<Record<string, string>>;
  /**
   * Called at each point between the steps of the swap (for tests: throwing here is a crash at
   * that point; nothing is cleaned up after it).
   */
  onSavePoint?: (point: SavePoint) => void;
}

/** The points between the steps of a save (see the file comment). */
export type SavePoint = 'files-written' | 'old-moved-aside' | 'new-in-place';
export const SAVE_POINTS: readonly SavePoint[] = ['files-written', 'old-moved-aside', 'new-in-place'];

/** Where the previous checkpoint waits during a swap. */
export function previousCheckpointDir(dir: string): string {
  return `${dir}.prev`;
}

const TMP_PATTERN = /^\.(.+)\.(?:tmp|old)-(\d+)$/;

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Everything on disk that belongs to checkpoint `dir`: itself, its previous copy, and the
 * temporaries of saves (those of running processes only when `includeLive`).
 */
export function checkpointPaths(dir: string, includeLive = true): string[] {
  const parent = dirname(dir);
  const base = basename(dir);
  const out = [dir, previousCheckpointDir(dir)].filter((p) => existsSync(p));
  if (!existsSync(parent)) return out;
  for (const name of readdirSync(parent)) {
    const m = TMP_PATTERN.exec(name);
    if (m && m[1] === base && (includeLive || !processAlive(Number(m[2])))) out.push(join(parent, name));
  }
  return out;
}

/** Undo what a killed save left behind (see the file comment); the checkpoint itself is kept. */
function repairInterruptedSave(dir: string): void {
  const prev = previousCheckpointDir(dir);
  if (existsSync(prev)) {
    if (existsSync(dir)) rmSync(prev, { recursive: true, force: true });
    else renameSync(prev, dir);
  }
  for (const p of checkpointPaths(dir, false)) if (p !== dir) rmSync(p, { recursive: true, force: true });
}

function fsyncPath(path: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    fsyncSync(fd);
  } catch {
    // fsync of a directory is not possible everywhere (Windows); the rename order still holds
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
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
  for (const [name, text] of Object.entries(opts.files ?? {})) writeFileSync(join(dir, name), text);
}

/** Save a checkpoint directory crash-safely (see the file comment). */
export function saveCheckpoint(dir: string, model: Model, opts: SaveOptions = {}): void {
  const parent = dirname(dir);
  mkdirSync(parent, { recursive: true });
  repairInterruptedSave(dir);
  const tmp = join(parent, `.${basename(dir)}.tmp-${process.pid}`);
  const prev = previousCheckpointDir(dir);
  const point = opts.onSavePoint ?? (() => {});
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    writeCheckpointFiles(tmp, model, opts);
    for (const name of readdirSync(tmp)) fsyncPath(join(tmp, name));
    fsyncPath(tmp);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  point('files-written');
  const hadOld = existsSync(dir);
  if (hadOld) {
    renameSync(dir, prev);
    point('old-moved-aside');
  }
  renameSync(tmp, dir);
  fsyncPath(parent);
  if (hadOld) {
    point('new-in-place');
    rmSync(prev, { recursive: true, force: true });
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
export async function loadCheckpoint(path: string, opts: LoadOptions = {}): Promise<LoadedCheckpoint> {
  // a save killed between its two renames leaves the previous checkpoint under <dir>.prev
  const dir = !existsSync(path) && existsSync(previousCheckpointDir(path)) ? previousCheckpointDir(path) : path;
  if (!existsSync(dir)) throw new CheckpointNotFoundError(`checkpoint directory not found: ${path}`);
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
