/**
 * A training run as a user starts it: corpus → tokenizer (trained on the training documents
 * when none is given) → token cache → model (preset, config file, or a checkpoint to resume)
 * → the loop → checkpoints and metrics in the output directory.
 *
 *   <out>/metrics.jsonl    one JSON object per step / validation
 *   <out>/checkpoint/      the latest checkpoint (see checkpoint.ts)
 */
import { appendFileSync, mkdirSync, readFileSync, existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ArgumentError, MorError } from '../errors.js';
import { getBackend } from '../backend/index.js';
import { measureGemmPeak } from '../backend/peak.js';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { preset } from '../model/presets.js';
import { createModel, type Model } from '../model/model.js';
import { countParams, } from '../model/params.js';
import { trainFlopsPerToken } from '../model/flops.js';
import { Corpus } from '../data/corpus.js';
import { Tokenizer } from '../data/tokenizer.js';
import { trainBpe } from '../data/bpe-train.js';
import { buildTokenCache, loadTokens, isValidationId, DEFAULT_SPLIT_SEED, DEFAULT_VAL_FRACTION, type TokenArray } from '../data/dataset.js';
import { TrainLoader, type LoaderCursor } from '../data/loader.js';
import { sha256Hex } from '../data/util.js';
import { evaluateNll } from './evaluate.js';
import { loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { createOptimizer, trainLoop, type TrainerState } from './trainer.js';
import type { ScheduleKind } from './schedule.js';
import { byteLevelToBytes } from '../data/byte-level.js';

export interface TrainRunOptions {
  /** Preset name (default 'small-rec2') or a config object / config.json path. */
  readonly preset?: string;
  readonly configPath?: string;
  /** Corpus paths; empty = the built-in default corpus. */
  readonly data?: readonly string[];
  readonly textField?: string;
  /** tokenizer.json to use instead of training one. */
  readonly tokenizerPath?: string;
  /** Budget: exactly one of steps, tokens, flops (default steps 200). */
  readonly steps?: number;
  readonly tokens?: number;
  readonly flops?: number;
  readonly batchSize?: number;
  /** Default: the model's max_position_embeddings. */
  readonly seqLen?: number;
  readonly gradAccum?: number;
  readonly lr?: number;
  readonly schedule?: ScheduleKind;
  /** Warmup steps (default 5% of the run, at least 1). */
  readonly warmup?: number;
  readonly seed?: number;
  readonly outDir: string;
  /** Resume from this checkpoint directory (continues its run to its original budget). */
  readonly resume?: string;
  readonly evalEvery?: number;
  readonly evalBatches?: number;
  readonly saveEvery?: number;
  /** Cache directory for tokenizers and token caches (default <cwd>/.mor-cache). */
  readonly cacheDir?: string;
  readonly valFraction?: number;
  /** Progress output: a callback per metrics record (the CLI draws its progress line here). */
  readonly onMetrics?: (m: Record<string, unknown>) => void;
  readonly onLog?: (line: string) => void;
  readonly shouldStop?: () => boolean;
  /** Measure the GEMM peak for MFU (default true). */
  readonly measureMfu?: boolean;
}

/** What a run stores in trainer_state.json, enough to resume exactly. */
interface SavedRun {
  format: 'mor-trainer-state';
  version: 1;
  state: TrainerState;
  options: {
    totalSteps: number;
    batchSize: number;
    seqLen: number;
    gradAccum: number;
    lr: number;
    schedule: ScheduleKind;
    warmup: number;
    seed: number;
    data: string[];
    textField: string;
    valFraction: number;
    evalEvery: number;
    evalBatches: number;
    saveEvery: number;
  };
}

export interface PreparedData {
  tokenizer: Tokenizer;
  train: TokenArray;
  val: TokenArray;
  /** UTF-8 bytes per validation token (for bits per byte). */
  valBytesPerToken: number;
}

function loadConfigFile(path: string): ModelConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ArgumentError(`cannot read config ${path}: ${(e as Error).message}`);
  }
  return validateConfig(raw);
}

/** Bytes of text each token stands for, for bits-per-byte (byte-level tokens map exactly). */
function tokenByteLengths(tok: Tokenizer): Float64Array {
  const lens = new Float64Array(tok.vocabSize);
  for (let id = 0; id < tok.vocabSize; id++) {
    if (id === tok.eosId) continue;
    const s = tok.idToToken(id);
    const bytes = s === undefined ? null : byteLevelToBytes(s);
    lens[id] = bytes ? bytes.length : Buffer.byteLength(tok.decode([id]));
  }
  return lens;
}

/** Corpus → tokenizer → token cache (reused when nothing changed). */
export async function prepareData(opts: {
  data: readonly string[];
  textField: string;
  vocabSize: number;
  tokenizerPath?: string | undefined;
  tokenizerJson?: string | null | undefined;
  cacheDir: string;
  valFraction: number;
  log: (s: string) => void;
}): Promise<PreparedData> {
  const corpus = opts.data.length ? Corpus.fromPaths(opts.data.map((p) => resolve(p)), { textField: opts.textField }) : Corpus.default();
  const fingerprint = await corpus.fingerprint();
  let tokenizer: Tokenizer;
  if (opts.tokenizerJson) tokenizer = Tokenizer.fromJSON(opts.tokenizerJson);
  else if (opts.tokenizerPath) tokenizer = await Tokenizer.fromFile(opts.tokenizerPath);
  else {
    const key = sha256Hex(JSON.stringify({ fingerprint, vocab: opts.vocabSize, seed: DEFAULT_SPLIT_SEED, val: opts.valFraction })).slice(0, 16);
    const tokPath = join(opts.cacheDir, `tokenizer-${key}.json`);
    if (existsSync(tokPath)) tokenizer = await Tokenizer.fromFile(tokPath);
    else {
      opts.log(`training a ${opts.vocabSize}-token BPE tokenizer on ${corpus.describe()} (training documents only)`);
      const trainDocs = (async function* () {
        for await (const doc of corpus) if (!isValidationId(doc.id, DEFAULT_SPLIT_SEED, opts.valFraction)) yield doc;
      })();
      const result = await trainBpe(trainDocs, { vocabSize: opts.vocabSize });
      tokenizer = Tokenizer.fromJSON(result.tokenizer);
      mkdirSync(opts.cacheDir, { recursive: true });
      await tokenizer.save(tokPath);
    }
  }
  if (tokenizer.vocabSize > opts.vocabSize) {
    throw new ArgumentError(`the tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab_size is ${opts.vocabSize}`);
  }
  const cacheKey = sha256Hex(JSON.stringify({ fingerprint, tok: tokenizer.hash })).slice(0, 16);
  const cache = await buildTokenCache({
    dir: join(opts.cacheDir, `tokens-${cacheKey}`),
    corpus,
    tokenizer,
    valFraction: opts.valFraction,
  });
  opts.log(
    `${cache.built ? 'tokenised' : 'reusing token cache:'} ${cache.manifest.train.numTokens.toLocaleString()} training and ` +
      `${cache.manifest.val.numTokens.toLocaleString()} validation tokens`,
  );
  const train = await loadTokens(cache.dir, 'train');
  const val = await loadTokens(cache.dir, 'val');
  const lens = tokenByteLengths(tokenizer);
  let bytes = 0;
  for (let i = 0; i < val.length; i++) bytes += lens[val[i] as number] ?? 0;
  return { tokenizer, train, val, valBytesPerToken: val.length ? bytes / val.length : 0 };
}

export { evaluateNll };

export interface TrainRunResult {
  model: Model;
  state: TrainerState;
  interrupted: boolean;
  checkpointDir: string;
  data: PreparedData;
  finalEval: { nll: number; tokens: number } | null;
}

/** Run (or resume) a training run. */
export async function runTraining(o: TrainRunOptions): Promise<TrainRunResult> {
  const log = o.onLog ?? (() => {});
  const outDir = resolve(o.outDir);
  const cacheDir = resolve(o.cacheDir ?? '.mor-cache');
  const checkpointDir = join(outDir, 'checkpoint');

  let model: Model;
  let saved: SavedRun | null = null;
  let optimizerState: Awaited<ReturnType<typeof loadCheckpoint>>['optimizerState'] = null;
  let tokenizerJson: string | null = null;
  if (o.resume) {
    const ck = await loadCheckpoint(o.resume);
    model = ck.model;
    optimizerState = ck.optimizerState;
    tokenizerJson = ck.tokenizerJson;
    const ts = ck.trainerState as SavedRun | null;
    if (ts?.format !== 'mor-trainer-state') throw new MorError('E_CHECKPOINT', `${o.resume} has no trainer state to resume from`);
    saved = ts;
    log(`resuming ${o.resume} at step ${ts.state.step} of ${ts.options.totalSteps}`);
  } else {
    const config = o.configPath ? loadConfigFile(o.configPath) : preset(o.preset ?? 'small-rec2');
    model = createModel(config, o.seed ?? 0);
  }
  const c = model.config;

  const seqLen = saved?.options.seqLen ?? o.seqLen ?? c.max_position_embeddings;
  if (seqLen > c.max_position_embeddings) throw new ArgumentError(`seq-len ${seqLen} exceeds the model's context ${c.max_position_embeddings}`);
  const batchSize = saved?.options.batchSize ?? o.batchSize ?? 8;
  const gradAccum = saved?.options.gradAccum ?? o.gradAccum ?? 1;
  const tokensPerStep = batchSize * seqLen * gradAccum;
  const budgets = [o.steps, o.tokens, o.flops].filter((x) => x !== undefined).length;
  if (!saved && budgets > 1) throw new ArgumentError('give one budget: steps, tokens or flops');
  const totalSteps =
    saved?.options.totalSteps ??
    (o.tokens !== undefined
      ? Math.ceil(o.tokens / tokensPerStep)
      : o.flops !== undefined
        ? Math.ceil(o.flops / (trainFlopsPerToken(c, seqLen) * tokensPerStep))
        : (o.steps ?? 200));
  if (!(totalSteps >= 1)) throw new ArgumentError(`the budget gives ${totalSteps} steps; it must give at least 1`);
  const options: SavedRun['options'] = saved?.options ?? {
    totalSteps,
    batchSize,
    seqLen,
    gradAccum,
    lr: o.lr ?? 3e-3,
    schedule: o.schedule ?? 'wsd',
    warmup: o.warmup ?? Math.max(1, Math.round(totalSteps * 0.05)),
    seed: o.seed ?? 0,
    data: (o.data ?? []).map((p) => resolve(p)),
    textField: o.textField ?? 'text',
    valFraction: o.valFraction ?? DEFAULT_VAL_FRACTION,
    evalEvery: o.evalEvery ?? 0,
    evalBatches: o.evalBatches ?? 8,
    saveEvery: o.saveEvery ?? 0,
  };

  const data = await prepareData({
    data: options.data,
    textField: options.textField,
    vocabSize: c.vocab_size,
    tokenizerPath: o.tokenizerPath,
    tokenizerJson,
    cacheDir,
    valFraction: options.valFraction,
    log,
  });
  const counts = countParams(c);
  log(
    `model: ${c.num_hidden_layers} layers (${model.plan.numUnique} unique), d ${c.hidden_size}, ` +
      `${(counts.unique / 1e6).toFixed(2)}M parameters; ${totalSteps} steps × ${tokensPerStep.toLocaleString()} tokens; backend ${getBackend().name}`,
  );

  const loader = new TrainLoader(data.train, {
    batchSize,
    seqLen,
    seed: options.seed,
    ...(saved ? { cursor: saved.state.dataState as LoaderCursor } : {}),
  });
  const optimizer = createOptimizer(model);
  if (optimizerState) optimizer.loadState(optimizerState);
  const state: TrainerState = saved?.state ?? { step: 0, tokensSeen: 0, flopsSeen: 0, elapsedSeconds: 0, dataState: loader.cursor(), lastLoss: null };

  mkdirSync(outDir, { recursive: true });
  const metricsPath = join(outDir, 'metrics.jsonl');
  const peak = o.measureMfu === false ? undefined : measureGemmPeak(getBackend());
  const tokJson = JSON.stringify(data.tokenizer.toJSON());
  const save = (s: TrainerState, opt: typeof optimizer): void => {
    const run: SavedRun = { format: 'mor-trainer-state', version: 1, state: s, options };
    saveCheckpoint(checkpointDir, model, { optimizer: opt, tokenizer: tokJson, trainerState: run });
  };
  const evaluate = (m: Model) => {
    const ev = evaluateNll(m, data.val, batchSize, seqLen, options.evalBatches, 'causal');
    const topk = m.config.mor ? { nllTopk: evaluateNll(m, data.val, batchSize, seqLen, options.evalBatches, 'topk').nll } : {};
    return { ...ev, ...topk, bytes: ev.tokens * data.valBytesPerToken };
  };
  let finalEval: { nll: number; tokens: number } | null = null;
  const result = await trainLoop(model, { next: () => loader.next(), getState: () => loader.cursor() }, optimizer, state, {
    schedule: { kind: options.schedule, peakLr: options.lr, totalSteps: options.totalSteps, warmupSteps: options.warmup },
    gradAccum,
    evalEvery: options.evalEvery,
    evaluate,
    save,
    saveEvery: options.saveEvery,
    ...(o.shouldStop ? { shouldStop: o.shouldStop } : {}),
    ...(peak !== undefined ? { peakGflops: peak } : {}),
    onMetrics: (m) => {
      if (m['type'] === 'eval') finalEval = { nll: m['val_nll'] as number, tokens: m['val_tokens'] as number };
      appendFileSync(metricsPath, JSON.stringify({ ...m, total_steps: options.totalSteps }) + '\n');
      o.onMetrics?.({ ...m, total_steps: options.totalSteps });
    },
  });
  return { model, state: result.state, interrupted: result.interrupted, checkpointDir, data, finalEval };
}
