/**
 * Compute-matched ("isoFLOP") comparison (MOR_SPEC §6, §9): train several presets on the same
 * data at one training-FLOPs budget, then evaluate each on the same validation tokens. MoR
 * models spend fewer FLOPs per token, so at equal FLOPs they see more tokens.
 *
 * Writes <out>/compare.json and <out>/compare.md (atomically) and one run directory per model.
 *
 * Every model trains and is evaluated on sequences of one length: by default the smallest
 * context among the presets, so all runs see the same data cut the same way.
 */
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
  readonly seed?: number;
  readonly cacheDir?: string;
  /** Validation batches for the final evaluation (default: the whole validation split). */
  readonly evalBatches?: number;
  /** Replace model runs already in the output folder. */
  readonly overwrite?: boolean;
  readonly onLog?: (line: string) => void;
  readonly onMetrics?: (preset: string, m: Record<string, unknown>) => void;
}

export interface CompareRow {
  model: string;
  params_unique: number;
  params_effective: number;
  train_flops: number;
  /** Training tokens seen (at equal FLOPs, cheaper models see more). */
  tokens_seen: number;
  steps: number;
  wall_seconds: number;
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
}

function markdown(rows: readonly CompareRow[], o: CompareOptions, s: CompareSettings): string {
  const lines = [
    `Budget: ${o.flops.toExponential(2)} training FLOPs per model; batch ${s.batchSize} × ${s.seqLen} tokens, ` +
      `peak LR ${s.lr} (warmup–stable–decay), seed ${s.seed}.`,
    '',
    '| model | unique params | train FLOPs | train tokens | wall time | val NLL (causal) | val NLL (top-k) |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const r of rows) {
    lines.push(
      `| \`${r.model}\` | ${(r.params_unique / 1e6).toFixed(2)}M | ${r.train_flops.toExponential(2)} | ${r.tokens_seen.toLocaleString('en-US')} | ` +
        `${(r.wall_seconds / 60).toFixed(1)} min | ${r.val_nll.toFixed(4)} | ${r.val_nll_topk === null ? '—' : r.val_nll_topk.toFixed(4)} |`,
    );
  }
  return lines.join('\n') + '\n';
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
  const settings: CompareSettings = {
    batchSize: o.batchSize ?? RUN_DEFAULTS.batchSize,
    seqLen: compareSeqLen(o.presets, o.seqLen),
    lr: o.lr ?? RUN_DEFAULTS.lr,
    seed: o.seed ?? RUN_DEFAULTS.seed,
  };
  const rows: CompareRow[] = [];
  for (const name of o.presets) {
    log(`== ${name}: ${o.flops.toExponential(2)} training FLOPs, sequences of ${settings.seqLen} tokens`);
    const run: TrainRunOptions = {
      ...settings,
      preset: name,
      flops: o.flops,
      outDir: join(out, name),
      data: o.data ?? [],
      cacheDir: o.cacheDir,
      overwrite: o.overwrite,
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
      params_unique: counts.unique,
      params_effective: counts.effective,
      train_flops: result.state.flopsSeen,
      tokens_seen: result.state.tokensSeen,
      steps: result.state.step,
      wall_seconds: result.state.elapsedSeconds,
      val_nll: causal.nll,
      val_nll_topk: topk,
      val_tokens: causal.tokens,
    };
    rows.push(row);
    log(`   ${name}: val NLL ${causal.nll.toFixed(4)} (causal)${topk === null ? '' : `, ${topk.toFixed(4)} (top-k)`}, ${row.tokens_seen.toLocaleString('en-US')} training tokens`);
    // write after every model, so a long comparison leaves partial results if stopped
    await writeFileAtomic(join(out, 'compare.json'), JSON.stringify({ budget_flops: o.flops, seq_len: settings.seqLen, rows }, null, 2) + '\n');
    await writeFileAtomic(join(out, 'compare.md'), markdown(rows, o, settings));
  }
  return rows;
}
