/**
 * A training run as a user starts it: corpus → tokenizer (trained on the training documents
 * when none is given) → token cache → model (preset, config file, or a checkpoint to resume)
 * → the loop → checkpoints and metrics in the output directory.
 *
 *   <out>/metrics.jsonl    one JSON object per step / validation
 *   <out>/checkpoint/      the latest checkpoint (see checkpoint.ts)
 */
import { appendFileSync, mkdirSync, readFileSync, existsSync, rmSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ArgumentError, MorError } from '../errors.js';
import { getBackend } from '../backend/index.js';
import { measureGemmPeak } from '../backend/peak.js';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { preset } from '../model/presets.js';
import { createModel, type Model } from '../model/model.js';
import { countParams } from '../model/params.js';
import { forwardFlopsPerToken, trainFlopsPerToken } from '../model/flops.js';
import { Corpus } from '../data/corpus.js';
import { Tokenizer } from '../data/tokenizer.js';
import { trainBpe } from '../data/bpe-train.js';
import { buildTokenCache, loadTokens, isValidationId, DEFAULT_SPLIT_SEED, type TokenArray } from '../data/dataset.js';
import { TrainLoader, type LoaderCursor } from '../data/loader.js';
import { sha256Hex } from '../data/util.js';
import { evaluateNll } from './evaluate.js';
import { loadWeights } from '../interop/load.js';
import { checkpointPaths, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
import { defaultWarmup, fieldsResumeRefuses, resolveRunConfig, type RunBudget, type RunConfigInput } from './run-config.js';
import { writeFileAtomicSync } from '../util/fs.js';
import { createOptimizer, trainLoop, type TrainerState } from './trainer.js';
import type { ScheduleKind } from './schedule.js';
import { byteLevelToBytes } from '../data/byte-level.js';

/**
 * A run as the library starts it: the settings (run-config.ts: typed, defaults in one place)
 * plus a checkpoint to resume and the progress callbacks.
 */
export interface TrainRunOptions extends RunConfigInput {
  /**
   * Continue the run whose checkpoint this is, in place: the output directory is the
   * checkpoint's parent. Everything but the budget comes from the checkpoint; a budget given
   * here (steps, tokens or flops) extends or shortens the run, other settings are refused.
   */
  readonly resume?: string | undefined;
  /**
   * Start a NEW run from these weights (and their tokenizer), e.g. a model `loadModel` read
   * from a mor-ts checkpoint or a Hugging Face directory (`mor train --init-from DIR`). The
   * config is the model's; a preset or config given beside it is refused, and so is resume.
   */
  /** Progress output: a callback per metrics record (the CLI draws its progress line here). */
  readonly onMetrics?: ((m: Record<string, unknown>) => void) | undefined;
  readonly onLog?: ((line: string) => void) | undefined;
  readonly shouldStop?: (() => boolean) | undefined;
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
    /** The checkpoint a new run started from (--init-from); absent in runs before it existed. */
    initFrom?: string | null;
    /** Distillation teacher and settings, reloaded on resume. */
    distill?: { from: string; weight: number; temperature: number } | null;
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
  const corpus = opts.data.length ? Corpus.fromPaths(opts.data.map((p) => resolve(p)), { textField: opts.textField, log: opts.log }) : Corpus.default();
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


export interface TrainRunResult {
  model: Model;
  state: TrainerState;
  interrupted: boolean;
  checkpointDir: string;
  data: PreparedData;
  finalEval: { nll: number; tokens: number } | null;
}

/**
 * Optimiser steps a budget buys at `tokensPerStep` tokens per step of sequences of `seqLen`; a
 * FLOPs budget counts the distillation teacher's forward too.
 */
function stepsForBudget(budget: RunBudget, c: ModelConfig, seqLen: number, tokensPerStep: number, teacher: ModelConfig | null): number {
  if (budget.kind === 'steps') return budget.value;
  if (budget.kind === 'tokens') return Math.ceil(budget.value / tokensPerStep);
  const perToken = trainFlopsPerToken(c, seqLen) + (teacher ? forwardFlopsPerToken(teacher, seqLen) : 0);
  return Math.ceil(budget.value / (perToken * tokensPerStep));
}

/**
 * The model of a new run started from a checkpoint (--init-from): its config, weights and
 * tokenizer; the optimiser and the run start fresh.
 */

/** The distillation teacher: a checkpoint whose vocabulary (and tokenizer, when it has one) is the student's. */
async function loadTeacher(path: string, student: ModelConfig, seqLen: number): Promise<{ model: Model; tokenizerJson: string | null }> {
  const ck = await loadCheckpoint(path, { optimizer: false });
  const t = ck.model.config;
  if (t.vocab_size !== student.vocab_size) {
    throw new ArgumentError(`distillation teacher ${path}: expected the student's vocab_size ${student.vocab_size}, got ${t.vocab_size}`);
  }
  if (seqLen > t.max_position_embeddings) {
    throw new ArgumentError(`distillation teacher ${path}: seq-len ${seqLen} exceeds its context ${t.max_position_embeddings}`);
  }
  return { model: ck.model, tokenizerJson: ck.tokenizerJson };
}

/**
 * A new run may not silently take over a folder that holds another one: refuse, or with
 * `overwrite` remove what the new run would replace (its checkpoint and metrics, nothing else).
 */
function claimOutDir(outDir: string, overwrite: boolean, log: (s: string) => void): void {
  const metrics = join(outDir, 'metrics.jsonl');
  const owned = [...checkpointPaths(join(outDir, 'checkpoint')), ...(existsSync(metrics) ? [metrics] : [])];
  if (owned.length === 0) return;
  const names = owned.map((p) => basename(p)).join(', ');
  if (!overwrite) {
    throw new ArgumentError(
      `${outDir} holds another run (${names}): expected an empty or new output folder; ` +
        `pass --overwrite (overwrite: true) to replace it, or resume it from ${join(outDir, 'checkpoint')}`,
    );
  }
  for (const p of owned) rmSync(p, { recursive: true, force: true });
  log(`overwrite: removed ${names} from ${outDir}`);
}

/**
 * After a kill, metrics.jsonl may hold steps the checkpoint never saw; the resumed run will log
 * them again. Keep only the records up to the checkpoint's step (a torn last line goes too),
 * rewriting the file atomically.
 */
export function trimMetrics(path: string, step: number): number {
  if (!existsSync(path)) return 0;
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      const rec = JSON.parse(l) as { step?: unknown };
      return typeof rec.step === 'number' && rec.step <= step;
    } catch {
      return false;
    }
  });
  const dropped = lines.length - kept.length;
  if (dropped > 0) writeFileAtomicSync(path, kept.map((l) => l + '\n').join(''));
  return dropped;
}

/** Run (or resume, in place) a training run. */
export async function runTraining(o: TrainRunOptions): Promise<TrainRunResult> {
  const { resume, onMetrics, onLog, shouldStop, ...input } = o;
  const log = onLog ?? (() => {});
  if (resume !== undefined) {
    const refused = fieldsResumeRefuses(input);
    if (refused.length > 0) {
      throw new ArgumentError(
        `resume keeps every setting of the run but its budget: expected at most steps, tokens or flops, got ${refused.join(', ')}`,
      );
    }
  }
  const cfg = resolveRunConfig(input);
  // resume continues in place: the run's folder is the checkpoint's parent
  const outDir = resume !== undefined ? dirname(resolve(resume)) : cfg.outDir;
  if (resume !== undefined && input.outDir !== undefined && cfg.outDir !== outDir) {
    throw new ArgumentError(`resume continues the run in place: expected the output folder ${outDir} (the checkpoint's parent), got ${cfg.outDir}`);
  }
  const checkpointDir = join(outDir, 'checkpoint');

  let model: Model;
  let saved: SavedRun | null = null;
  let optimizerState: Awaited<ReturnType<typeof loadCheckpoint>>['optimizerState'] = null;
  let tokenizerJson: string | null = null;
  if (resume !== undefined) {
    const ck = await loadCheckpoint(resume);
    model = ck.model;
    optimizerState = ck.optimizerState;
    tokenizerJson = ck.tokenizerJson;
    const ts = ck.trainerState as SavedRun | null;
    if (ts?.format !== 'mor-trainer-state') throw new MorError('E_CHECKPOINT', `${resume} has no trainer state to resume from`);
    saved = ts;
  } else if (cfg.initFrom !== null) {
    const init = await loadWeights(cfg.initFrom);
    model = init.model;
    if (init.tokenizerJson !== null && cfg.tokenizerPath !== null) {
      throw new ArgumentError(`--init-from ${cfg.initFrom} brings its own tokenizer.json: expected no --tokenizer beside it`);
    }
    if (init.tokenizerJson === null && cfg.tokenizerPath === null) {
      throw new ArgumentError(`--init-from ${cfg.initFrom} has no tokenizer.json: pass the tokenizer its weights were trained with (--tokenizer)`);
    }
    tokenizerJson = init.tokenizerJson;
    log(`initialised from ${cfg.initFrom} (${init.kind}): its config and weights, a fresh optimiser and run; all parameters train`);
  } else {
    const config = cfg.configPath !== null ? loadConfigFile(cfg.configPath) : preset(cfg.preset);
    model = createModel(config, cfg.seed);
  }
  const c = model.config;

  const seqLen = saved?.options.seqLen ?? cfg.seqLen ?? c.max_position_embeddings;
  if (seqLen > c.max_position_embeddings) throw new ArgumentError(`seq-len ${seqLen} exceeds the model's context ${c.max_position_embeddings}`);
  const batchSize = saved?.options.batchSize ?? cfg.batchSize;
  const gradAccum = saved?.options.gradAccum ?? cfg.gradAccum;
  const tokensPerStep = batchSize * seqLen * gradAccum;
  const distillSettings = saved ? (saved.options.distill ?? null) : cfg.distill;
  const teacher = distillSettings ? await loadTeacher(distillSettings.from, c, seqLen) : null;
  const budgetGiven = input.steps !== undefined || input.tokens !== undefined || input.flops !== undefined;
  const totalSteps =
    saved && !budgetGiven ? saved.options.totalSteps : stepsForBudget(cfg.budget, c, seqLen, tokensPerStep, teacher?.model.config ?? null);
  if (!(totalSteps >= 1)) throw new ArgumentError(`the budget gives ${totalSteps} steps; it must give at least 1`);
  if (saved && totalSteps < saved.state.step) {
    throw new ArgumentError(`the checkpoint is at step ${saved.state.step}: expected a budget of at least that many steps, got ${totalSteps}`);
  }
  const options: SavedRun['options'] = saved
    ? { ...saved.options, totalSteps }
    : {
        totalSteps,
        batchSize,
        seqLen,
        gradAccum,
        lr: cfg.lr,
        schedule: cfg.schedule,
        warmup: cfg.warmup ?? defaultWarmup(totalSteps),
        seed: cfg.seed,
        data: [...cfg.data],
        textField: cfg.textField,
        valFraction: cfg.valFraction,
        evalEvery: cfg.evalEvery,
        evalBatches: cfg.evalBatches,
        saveEvery: cfg.saveEvery,
        initFrom: cfg.initFrom,
        distill: cfg.distill ? { ...cfg.distill } : null,
      };
  const metricsPath = join(outDir, 'metrics.jsonl');
  if (saved) {
    const extended = totalSteps !== saved.options.totalSteps ? ` (budget changed from ${saved.options.totalSteps} steps)` : '';
    log(`resuming ${resume ?? ''} at step ${saved.state.step} of ${totalSteps}${extended}`);
    const dropped = trimMetrics(metricsPath, saved.state.step);
    if (dropped > 0) log(`metrics.jsonl: dropped ${dropped} records past the checkpoint's step ${saved.state.step}`);
  } else {
    claimOutDir(outDir, cfg.overwrite, log);
  }

  const data = await prepareData({
    data: options.data,
    textField: options.textField,
    vocabSize: c.vocab_size,
    tokenizerPath: cfg.tokenizerPath ?? undefined,
    tokenizerJson,
    cacheDir: cfg.cacheDir,
    valFraction: options.valFraction,
    log,
  });
  if (teacher?.tokenizerJson && Tokenizer.fromJSON(teacher.tokenizerJson).hash !== data.tokenizer.hash) {
    throw new ArgumentError(`distillation teacher ${distillSettings?.from ?? ''}: its tokenizer.json differs from the student's; teacher and student must share one tokenizer`);
  }
  if (teacher && distillSettings) {
    log(`distilling from ${distillSettings.from}: loss += ${distillSettings.weight} × KL(teacher ‖ student) at temperature ${distillSettings.temperature}`);
  }
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
  const peak = !cfg.measureMfu ? undefined : measureGemmPeak(getBackend());
  const tokJson = JSON.stringify(data.tokenizer.toJSON());
  const save = (s: TrainerState, opt: typeof optimizer): void => {
    const run: SavedRun = { format: 'mor-trainer-state', version: 1, state: s, options };
    saveCheckpoint(checkpointDir, model, { optimizer: opt, tokenizer: tokJson, trainerState: run });
  };
  const evaluate = (m: Model) => {
    const ev = evaluateNll(m, data.val, batchSize, seqLen, options.evalBatches, 'causal');
    const topk = m.config.mor || m.config.mod ? { nllTopk: evaluateNll(m, data.val, batchSize, seqLen, options.evalBatches, 'topk').nll } : {};
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
    ...(shouldStop ? { shouldStop } : {}),
    ...(peak !== undefined ? { peakGflops: peak } : {}),
    ...(teacher && distillSettings ? { distill: { teacher: teacher.model, weight: distillSettings.weight, temperature: distillSettings.temperature } } : {}),
    onMetrics: (m) => {
      if (m['type'] === 'eval') finalEval = { nll: m['val_nll'] as number, tokens: m['val_tokens'] as number };
      appendFileSync(metricsPath, JSON.stringify({ ...m, total_steps: options.totalSteps }) + '\n');
      onMetrics?.({ ...m, total_steps: options.totalSteps });
    },
  });
  return { model, state: result.state, interrupted: result.interrupted, checkpointDir, data, finalEval };
}
