/**
 * Compute-matched ("isoFLOP") comparison (MOR_SPEC §6, §9): train several presets on the same
 * data at one training-FLOPs budget, then evaluate each on the same validation tokens. MoR
 * models spend fewer FLOPs per token, so at equal FLOPs they see more tokens.
 *
 * Writes <out>/compare.json and <out>/compare.md (atomically) and one run directory per model
 * and seed. With several seeds each model trains once per seed (seed, seed + 1, …) and the table
 * gives mean ± sample standard deviation. The JSON is written after every run, and a run already
 * in it (same budget and settings) is not trained again: a comparison stopped midway continues
 * where it stopped; `overwrite` starts it again.
 *
 * Every model trains and is evaluated on sequences of one length: by default the smallest
 * context among the presets, so all runs see the same data cut the same way.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ArgumentError } from '../errors.js';
import { countParams } from '../model/params.js';
import { preset } from '../model/presets.js';
import { writeFileAtomic } from '../util/fs.js';
import { RUN_DEFAULTS } from './run-config.js';
import { runTraining, type TrainRunOptions } from './run.js';
import { evaluateNll } from './evaluate.js';

export const DEFAULT_COMPARE_PRESETS: readonly string[] = [
  'small',
  'small-rec2',
  'small-rec3',
  'small-mor2',
  'small-mor3',
  'small-mor3-token',
  'small-mor3-kvshare',
];

/** The comparison's own defaults; batch, LR and seed are the run defaults (run-config.ts). */
export const COMPARE_DEFAULTS = Object.freeze({
  /** training FLOPs per model */
  flops: 4e13,
  outDir: 'runs/compare',
});

export interface CompareOptions {
  readonly presets: readonly string[];
  /** Training FLOPs per model. */
  readonly flops: number;
  readonly outDir: string;
  readonly data?: readonly string[];
  readonly batchSize?: number;
  /** Default: the smallest max_position_embeddings among the presets. */
  readonly seqLen?: number;
  readonly lr?: number;
  /** The first seed (default: the run default). */
  readonly seed?: number;
  /** Seeds per model: seed, seed + 1, … (default 1). */
  readonly seeds?: number;
  readonly cacheDir?: string;
  /** Validation batches for the final evaluation (default: the whole validation split). */
  readonly evalBatches?: number;
  /** Start again: retrain the runs already recorded in the output folder's compare.json. */
  readonly overwrite?: boolean;
  readonly onLog?: (line: string) => void;
  readonly onMetrics?: (preset: string, m: Record<string, unknown>) => void;
}

export interface CompareRow {
  model: string;
  seed: number;
  params_unique: number;
  /** Parameters as unrolled: every layer position and every expert counted. */
  params_effective: number;
  /** Parameters a token uses at full depth: MoE layers count the top-k and shared experts only. */
  params_active: number;
  train_flops: number;
  /** Training tokens seen (at equal FLOPs, cheaper models see more). */
  tokens_seen: number;
  steps: number;
  wall_seconds: number;
  /** Training tokens per second of wall time (the machine may have been shared: see the JSON's cpu). */
  train_tokens_per_s: number;
  /** Validation NLL with causal routing (what generation can do) — the comparison's figure. */
  val_nll: number;
  /** MoR only: validation NLL with training-time top-k routing (looks at later tokens). */
  val_nll_topk: number | null;
  val_tokens: number;
}

/** The settings every model of a comparison shares, resolved once. */
interface CompareSettings {
  readonly batchSize: number;
  readonly seqLen: number;
  readonly lr: number;
  readonly seed: number;
  readonly seeds: number;
}

/** Mean and sample standard deviation (n − 1; 0 for one value). */
export function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.length < 2 ? 0 : xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (xs.length - 1);
  return { mean, std: Math.sqrt(v) };
}

const millions = (n: number): string => `${(n / 1e6).toFixed(2)}M`;

function fmtNll(xs: readonly number[]): string {
  const { mean, std } = meanStd(xs);
  return xs.length < 2 ? mean.toFixed(4) : `${mean.toFixed(4)} ± ${std.toFixed(4)}`;
}

function markdown(rows: readonly CompareRow[], o: CompareOptions, s: CompareSettings): string {
  const seedText = s.seeds === 1 ? `seed ${s.seed}` : `seeds ${s.seed}–${s.seed + s.seeds - 1} (mean ± sample std. dev. over ${s.seeds})`;
  const lines = [
    `Budget: ${o.flops.toExponential(2)} training FLOPs per model; batch ${s.batchSize} × ${s.seqLen} tokens, ` +
      `peak LR ${s.lr} (warmup–stable–decay), ${seedText}.`,
    '',
    '| model | params unique / total / active | train FLOPs | train tokens | train tokens/s | val NLL (causal) | val NLL (top-k) |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const model of [...new Set(rows.map((r) => r.model))]) {
    const rs = rows.filter((r) => r.model === model);
    const first = rs[0] as CompareRow;
    const topk = rs.map((r) => r.val_nll_topk).filter((x): x is number => x !== null);
    lines.push(
      `| \`${model}\` | ${millions(first.params_unique)} / ${millions(first.params_effective)} / ${millions(first.params_active)} | ${meanStd(rs.map((r) => r.train_flops)).mean.toExponential(2)} | ` +
        `${Math.round(meanStd(rs.map((r) => r.tokens_seen)).mean).toLocaleString('en-US')} | ${Math.round(meanStd(rs.map((r) => r.train_tokens_per_s)).mean).toLocaleString('en-US')} | ` +
        `${fmtNll(rs.map((r) => r.val_nll))} | ${topk.length === 0 ? '—' : fmtNll(topk)} |`,
    );
  }
  return lines.join('\n') + '\n';
}

/** What compare.json holds. */
interface CompareFile {
  budget_flops: number;
  seq_len: number;
  batch_size: number;
  lr: number;
  rows: CompareRow[];
}

/** Rows of an earlier run of the same comparison (same budget and settings), else none. */
function recordedRows(path: string, o: CompareOptions, s: CompareSettings): CompareRow[] {
  if (o.overwrite || !existsSync(path)) return [];
  const f = JSON.parse(readFileSync(path, 'utf8')) as Partial<CompareFile>;
  const same = f.budget_flops === o.flops && f.seq_len === s.seqLen && f.batch_size === s.batchSize && f.lr === s.lr;
  return same && Array.isArray(f.rows) ? f.rows.filter((r) => typeof r.seed === 'number') : [];
}

/** The sequence length of a comparison: the one given, else the smallest context of the presets. */
export function compareSeqLen(presets: readonly string[], seqLen?: number): number {
  if (presets.length === 0) throw new ArgumentError('compare: expected at least one preset, got none');
  const contexts = presets.map((name) => preset(name).max_position_embeddings);
  return seqLen ?? Math.min(...contexts);
}

export async function runComparison(o: CompareOptions): Promise<CompareRow[]> {
  const log = o.onLog ?? (() => {});
  const out = resolve(o.outDir);
  const seeds = o.seeds ?? 1;
  if (!Number.isInteger(seeds) || seeds < 1) throw new ArgumentError(`compare: seeds must be an integer ≥ 1, got ${seeds}`);
  const settings: CompareSettings = {
    batchSize: o.batchSize ?? RUN_DEFAULTS.batchSize,
    seqLen: compareSeqLen(o.presets, o.seqLen),
    lr: o.lr ?? RUN_DEFAULTS.lr,
    seed: o.seed ?? RUN_DEFAULTS.seed,
    seeds,
  };
  const jsonPath = join(out, 'compare.json');
  const recorded = recordedRows(jsonPath, o, settings);
  const rows: CompareRow[] = [];
  const write = async (): Promise<void> => {
    const file: CompareFile = { budget_flops: o.flops, seq_len: settings.seqLen, batch_size: settings.batchSize, lr: settings.lr, rows };
    await writeFileAtomic(jsonPath, JSON.stringify(file, null, 2) + '\n');
    await writeFileAtomic(join(out, 'compare.md'), markdown(rows, o, settings));
  };
  // Seed-major: every preset's seed s before any preset's seed s+1, so a comparison stopped
  // part-way has whole seeds to compare.
  for (let seed = settings.seed; seed < settings.seed + seeds; seed++) {
    for (const name of o.presets) {
      const earlier = recorded.find((r) => r.model === name && r.seed === seed);
      if (earlier !== undefined) {
        log(`== ${name}, seed ${seed}: recorded in ${jsonPath} (val NLL ${earlier.val_nll.toFixed(4)}); not trained again`);
        rows.push(earlier);
        continue;
      }
      log(`== ${name}, seed ${seed}: ${o.flops.toExponential(2)} training FLOPs, sequences of ${settings.seqLen} tokens`);
      const run: TrainRunOptions = {
        batchSize: settings.batchSize,
        seqLen: settings.seqLen,
        lr: settings.lr,
        seed,
        preset: name,
        flops: o.flops,
        // one seed keeps the single-run layout (<out>/<model>)
        outDir: seeds === 1 ? join(out, name) : join(out, `${name}-seed${seed}`),
        data: o.data ?? [],
        cacheDir: o.cacheDir,
        // a run that is not in compare.json is this comparison's own unfinished run: replace it
        overwrite: true,
        evalBatches: 1, // the real evaluation below covers the whole split
        measureMfu: false,
        onLog: log,
        onMetrics: (m: Record<string, unknown>) => o.onMetrics?.(name, m),
      };
      const result = await runTraining(run);
      const { batchSize: B, seqLen: T } = settings;
      const maxBatches = o.evalBatches ?? Number.MAX_SAFE_INTEGER;
      const causal = evaluateNll(result.model, result.data.val, B, T, maxBatches, 'causal');
      const topk = result.model.config.mor || result.model.config.mod ? evaluateNll(result.model, result.data.val, B, T, maxBatches, 'topk').nll : null;
      const counts = countParams(result.model.config);
      const row: CompareRow = {
        model: name,
        seed,
        params_unique: counts.unique,
        params_effective: counts.effective,
        params_active: counts.active,
        train_flops: result.state.flopsSeen,
        tokens_seen: result.state.tokensSeen,
        steps: result.state.step,
        wall_seconds: result.state.elapsedSeconds,
        train_tokens_per_s: result.state.tokensSeen / result.state.elapsedSeconds,
        val_nll: causal.nll,
        val_nll_topk: topk,
        val_tokens: causal.tokens,
      };
      rows.push(row);
      log(`   ${name}, seed ${seed}: val NLL ${causal.nll.toFixed(4)} (causal)${topk === null ? '' : `, ${topk.toFixed(4)} (top-k)`}, ${row.tokens_seen.toLocaleString('en-US')} training tokens`);
      // write after every run, so a long comparison leaves partial results if stopped
      await write();
    }
  }
  await write();
  return rows;
}
