/**
 * The run configuration: every setting of a training run, typed, validated and frozen, with its
 * defaults written once (RUN_DEFAULTS below). The CLI's help text, `runTraining` and
 * `runComparison` all read the defaults from here; nothing else restates them.
 *
 *   RunConfigInput  what a caller gives (every field optional; `undefined` = not given)
 *   RunConfig       what a run uses (every field resolved; frozen)
 */
import { resolve } from 'node:path';
import { ArgumentError } from '../errors.js';
import { DEFAULT_VAL_FRACTION } from '../data/dataset.js';
import type { ScheduleKind } from './schedule.js';

export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['wsd', 'cosine', 'constant'];

/** A run's budget, in exactly one unit; tokens and FLOPs become steps once the model is known. */
export type RunBudget = { readonly kind: 'steps' | 'tokens' | 'flops'; readonly value: number };

export interface RunConfig {
  /** Model preset, used when `configPath` is null. */
  readonly preset: string;
  /** A model config.json instead of a preset. */
  readonly configPath: string | null;
  /** tokenizer.json to use; null = train a BPE tokenizer on the training documents (cached). */
  readonly tokenizerPath: string | null;
  /** Corpus paths, absolute; empty = the built-in corpus. */
  readonly data: readonly string[];
  /** Text field of .jsonl lines / column of .parquet files. */
  readonly textField: string;
  readonly budget: RunBudget;
  /** Sequences per micro-batch. */
  readonly batchSize: number;
  /** Tokens per sequence; null = the model's max_position_embeddings. */
  readonly seqLen: number | null;
  /** Micro-batches per optimiser step. */
  readonly gradAccum: number;
  /** Peak learning rate. */
  readonly lr: number;
  readonly schedule: ScheduleKind;
  /** Warmup steps; null = `warmupFraction` of the run, at least 1. */
  readonly warmup: number | null;
  /** Seed of the initialisation and the data order. */
  readonly seed: number;
  /** Share of the documents (by a hash of their id) held out for validation. */
  readonly valFraction: number;
  /** Validate every n steps; 0 = at the end only. */
  readonly evalEvery: number;
  /** Validation batches per evaluation. */
  readonly evalBatches: number;
  /** Checkpoint every n steps; 0 = at the end (and on Ctrl-C) only. */
  readonly saveEvery: number;
  /** Output directory, absolute: <outDir>/checkpoint/ and <outDir>/metrics.jsonl. */
  readonly outDir: string;
  /** Tokenizers and token caches, absolute. */
  readonly cacheDir: string;
  /** Replace a run already in outDir (otherwise that is an error). */
  readonly overwrite: boolean;
  /** Measure the GEMM peak for model FLOPs utilisation. */
  readonly measureMfu: boolean;
  /**
   * Start a NEW run from this checkpoint's config and weights (absolute path): fresh optimiser,
   * step 0, its tokenizer; all parameters train. Null = a preset or config file.
   */
  readonly initFrom: string | null;
  /** Distill from this teacher checkpoint (absolute path), or null. */
  readonly distill: { readonly from: string; readonly weight: number; readonly temperature: number } | null;
}

/** The defaults, the only place they are written. */
export const RUN_DEFAULTS = Object.freeze({
  preset: 'small-rec2',
  /** the budget when none of steps / tokens / flops is given */
  steps: 200,
  batchSize: 8,
  /** null: the model's context (max_position_embeddings) */
  seqLen: null,
  gradAccum: 1,
  lr: 3e-3,
  /** warmup–stable–decay */
  schedule: 'wsd' as ScheduleKind,
  /** null: warmupFraction of the run's steps, at least 1 */
  warmup: null,
  warmupFraction: 0.05,
  seed: 0,
  textField: 'text',
  valFraction: DEFAULT_VAL_FRACTION,
  evalEvery: 0,
  evalBatches: 8,
  saveEvery: 0,
  outDir: 'runs/latest',
  cacheDir: '.mor-cache',
  overwrite: false,
  measureMfu: true,
  /** weight of KL(teacher ‖ student) in the loss when distilling */
  distillWeight: 0.5,
  /** temperature of both distributions in the KL */
  distillTemperature: 1,
});

/** What a caller may give: any subset of the settings, the budget as one of three units. */
export interface RunConfigInput {
  readonly preset?: string | undefined;
  readonly configPath?: string | undefined;
  readonly tokenizerPath?: string | undefined;
  readonly data?: readonly string[] | undefined;
  readonly textField?: string | undefined;
  readonly steps?: number | undefined;
  readonly tokens?: number | undefined;
  readonly flops?: number | undefined;
  readonly batchSize?: number | undefined;
  readonly seqLen?: number | undefined;
  readonly gradAccum?: number | undefined;
  readonly lr?: number | undefined;
  readonly schedule?: ScheduleKind | undefined;
  readonly warmup?: number | undefined;
  readonly seed?: number | undefined;
  readonly valFraction?: number | undefined;
  readonly evalEvery?: number | undefined;
  readonly evalBatches?: number | undefined;
  readonly saveEvery?: number | undefined;
  readonly outDir?: string | undefined;
  readonly cacheDir?: string | undefined;
  readonly overwrite?: boolean | undefined;
  readonly measureMfu?: boolean | undefined;
  readonly initFrom?: string | undefined;
  readonly distillFrom?: string | undefined;
  readonly distillWeight?: number | undefined;
  readonly distillTemperature?: number | undefined;
}

const INPUT_KEYS: ReadonlySet<string> = new Set<keyof RunConfigInput>([
  'preset', 'configPath', 'tokenizerPath', 'data', 'textField', 'steps', 'tokens', 'flops', 'batchSize', 'seqLen',
  'gradAccum', 'lr', 'schedule', 'warmup', 'seed', 'valFraction', 'evalEvery', 'evalBatches', 'saveEvery', 'outDir',
  'cacheDir', 'overwrite', 'measureMfu', 'initFrom', 'distillFrom', 'distillWeight', 'distillTemperature',
]);

/**
 * What `--resume` may still set: the budget (to extend a run), where caches live and whether to
 * measure MFU. Everything else is the checkpoint's; giving it is an error, not silently ignored.
 */
export const RESUME_SETTABLE: ReadonlySet<keyof RunConfigInput> = new Set<keyof RunConfigInput>(['steps', 'tokens', 'flops', 'cacheDir', 'measureMfu', 'outDir']);

/** The fields of `input` that were given (not undefined) and that a resumed run would not honour. */
export function fieldsResumeRefuses(input: RunConfigInput): Array<keyof RunConfigInput> {
  return (Object.keys(input) as Array<keyof RunConfigInput>).filter((k) => input[k] !== undefined && !RESUME_SETTABLE.has(k));
}

function describe(v: unknown): string {
  if (typeof v === 'string') return `'${v}'`;
  if (Array.isArray(v)) return 'an array';
  return v === null ? 'null' : typeof v === 'number' ? String(v) : typeof v;
}

function fail(field: string, expected: string, got: unknown): never {
  throw new ArgumentError(`run config '${field}': expected ${expected}, got ${describe(got)}`);
}

function intAtLeast(field: string, v: number | undefined, min: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) fail(field, `an integer ≥ ${min}`, v);
  return v;
}

function positive(field: string, v: number | undefined, dflt: number, allowZero = false): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0 || (!allowZero && v === 0)) fail(field, allowZero ? 'a finite number ≥ 0' : 'a finite number > 0', v);
  return v;
}

function text(field: string, v: string | undefined, dflt: string): string {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || v === '') fail(field, 'a non-empty string', v);
  return v;
}

function flag(field: string, v: boolean | undefined, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') fail(field, 'true or false', v);
  return v;
}

/** The one place a run's settings get their defaults; every bad value is an ArgumentError naming its field. */
export function resolveRunConfig(input: RunConfigInput = {}): Readonly<RunConfig> {
  for (const k of Object.keys(input)) {
    if (!INPUT_KEYS.has(k)) throw new ArgumentError(`run config: unknown field '${k}' (known: ${[...INPUT_KEYS].join(', ')})`);
  }
  const given = (['steps', 'tokens', 'flops'] as const).filter((k) => input[k] !== undefined);
  if (given.length > 1) throw new ArgumentError(`run config: give one budget (steps, tokens or flops), got ${given.join(' and ')}`);
  const kind = given[0] ?? 'steps';
  const budget: RunBudget =
    kind === 'steps' ? { kind, value: intAtLeast('steps', input.steps, 1, RUN_DEFAULTS.steps) } : { kind, value: positive(kind, input[kind], 0) };
  const schedule = input.schedule ?? RUN_DEFAULTS.schedule;
  if (!SCHEDULE_KINDS.includes(schedule)) fail('schedule', `one of ${SCHEDULE_KINDS.join(', ')}`, schedule);
  const data = input.data ?? [];
  if (!Array.isArray(data) || data.some((p) => typeof p !== 'string' || p === '')) fail('data', 'an array of paths', data);
  const valFraction = positive('valFraction', input.valFraction, RUN_DEFAULTS.valFraction);
  if (valFraction >= 1) fail('valFraction', 'a number in (0, 1)', valFraction);
  if (input.initFrom !== undefined && (input.preset !== undefined || input.configPath !== undefined)) {
    throw new ArgumentError(`run config 'initFrom': the model comes from the checkpoint; expected no preset or configPath beside it, got ${input.preset !== undefined ? 'preset' : 'configPath'}`);
  }
  if (input.distillFrom === undefined) {
    const stray = (['distillWeight', 'distillTemperature'] as const).filter((k) => input[k] !== undefined);
    if (stray.length > 0) fail(stray[0] as string, 'distillFrom beside it (a teacher to distill from)', input[stray[0] as 'distillWeight']);
  }
  const distill =
    input.distillFrom === undefined
      ? null
      : Object.freeze({
          from: resolve(text('distillFrom', input.distillFrom, '')),
          weight: positive('distillWeight', input.distillWeight, RUN_DEFAULTS.distillWeight),
          temperature: positive('distillTemperature', input.distillTemperature, RUN_DEFAULTS.distillTemperature),
        });
  const config: RunConfig = {
    preset: text('preset', input.preset, RUN_DEFAULTS.preset),
    configPath: input.configPath === undefined ? null : text('configPath', input.configPath, ''),
    tokenizerPath: input.tokenizerPath === undefined ? null : text('tokenizerPath', input.tokenizerPath, ''),
    data: Object.freeze(data.map((p) => resolve(p))),
    textField: text('textField', input.textField, RUN_DEFAULTS.textField),
    budget: Object.freeze(budget),
    batchSize: intAtLeast('batchSize', input.batchSize, 1, RUN_DEFAULTS.batchSize),
    seqLen: input.seqLen === undefined ? RUN_DEFAULTS.seqLen : intAtLeast('seqLen', input.seqLen, 2, 2),
    gradAccum: intAtLeast('gradAccum', input.gradAccum, 1, RUN_DEFAULTS.gradAccum),
    lr: positive('lr', input.lr, RUN_DEFAULTS.lr, true),
    schedule,
    warmup: input.warmup === undefined ? RUN_DEFAULTS.warmup : intAtLeast('warmup', input.warmup, 0, 0),
    seed: intAtLeast('seed', input.seed, 0, RUN_DEFAULTS.seed),
    valFraction,
    evalEvery: intAtLeast('evalEvery', input.evalEvery, 0, RUN_DEFAULTS.evalEvery),
    evalBatches: intAtLeast('evalBatches', input.evalBatches, 1, RUN_DEFAULTS.evalBatches),
    saveEvery: intAtLeast('saveEvery', input.saveEvery, 0, RUN_DEFAULTS.saveEvery),
    outDir: resolve(text('outDir', input.outDir, RUN_DEFAULTS.outDir)),
    cacheDir: resolve(text('cacheDir', input.cacheDir, RUN_DEFAULTS.cacheDir)),
    overwrite: flag('overwrite', input.overwrite, RUN_DEFAULTS.overwrite),
    measureMfu: flag('measureMfu', input.measureMfu, RUN_DEFAULTS.measureMfu),
    initFrom: input.initFrom === undefined ? null : resolve(text('initFrom', input.initFrom, '')),
    distill,
  };
  return Object.freeze(config);
}

/** Warmup steps of a run of `totalSteps` when none was given. */
export function defaultWarmup(totalSteps: number): number {
  return Math.max(1, Math.round(totalSteps * RUN_DEFAULTS.warmupFraction));
}
