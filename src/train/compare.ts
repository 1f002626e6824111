/**
 * Compute-matched ("isoFLOP") comparison (MOR_SPEC §6, §9): train several presets on the same
 * data at one training-FLOPs budget, then evaluate each on the same validation tokens. MoR
 * models spend fewer FLOPs per token, so at equal FLOPs they see more tokens.
 *
 * Writes <out>/compare.json and <out>/compare.md (atomically) and one run directory per model.
 */
import { join, resolve } from 'node:path';
import { countParams } from '../model/params.js';
import { writeFileAtomic } from '../util/fs.js';
import { evaluateNll, runTraining, type TrainRunOptions } from './run.js';

export const DEFAULT_COMPARE_PRESETS: readonly string[] = [
  'small',
  'small-rec2',
  'small-rec3',
  'small-mor2',
  'small-mor3',
  'small-mor3-token',
  'small-mor3-kvshare',
];

export interface CompareOptions {
  readonly presets: readonly string[];
  /** Training FLOPs per model. */
  readonly flops: number;
  readonly outDir: string;
  readonly data?: readonly string[];
  readonly batchSize?: number;
  readonly seqLen?: number;
  readonly lr?: number;
  readonly seed?: number;
  readonly cacheDir?: string;
  /** Validation batches for the final evaluation (default: the whole validation split). */
  readonly evalBatches?: number;
  readonly onLog?: (line: string) => void;
  readonly onMetrics?: (preset: string, m: Record<string, unknown>) => void;
}

export interface CompareRow {
  model: string;
  params_unique: number;
  params_effective: number;
  train_flops: number;
  tokens_seen: number;
  steps: number;
  wall_seconds: number;
  /** Validation NLL with causal routing (what generation can do) — the comparison's figure. */
  val_nll: number;
  /** MoR only: validation NLL with training-time top-k routing (looks at later tokens). */
  val_nll_topk: number | null;
  val_tokens: number;
}

function markdown(rows: readonly CompareRow[], o: CompareOptions): string {
  const lines = [
    `Budget: ${o.flops.toExponential(2)} training FLOPs per model; batch ${o.batchSize ?? 8} × ${o.seqLen ?? 256} tokens, ` +
      `peak LR ${o.lr ?? 3e-3} (warmup–stable–decay), seed ${o.seed ?? 0}.`,
    '',
    '| model | unique params | train FLOPs | tokens seen | wall time | val NLL (causal) | val NLL (top-k) |',
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

export async function runComparison(o: CompareOptions): Promise<CompareRow[]> {
  const log = o.onLog ?? (() => {});
  const out = resolve(o.outDir);
  const rows: CompareRow[] = [];
  for (const name of o.presets) {
    log(`== ${name}: ${o.flops.toExponential(2)} training FLOPs`);
    const opts: Record<string, unknown> = {
      preset: name,
      flops: o.flops,
      outDir: join(out, name),
      batchSize: o.batchSize ?? 8,
      seqLen: o.seqLen ?? 256,
      lr: o.lr ?? 3e-3,
      seed: o.seed ?? 0,
      data: o.data ?? [],
      evalBatches: 1, // the real evaluation below covers the whole split
      measureMfu: false,
      onLog: log,
      onMetrics: (m: Record<string, unknown>) => o.onMetrics?.(name, m),
    };
    if (o.cacheDir !== undefined) opts['cacheDir'] = o.cacheDir;
    const result = await runTraining(opts as unknown as TrainRunOptions);
    const T = o.seqLen ?? 256;
    const B = o.batchSize ?? 8;
    const maxBatches = o.evalBatches ?? Number.MAX_SAFE_INTEGER;
    const causal = evaluateNll(result.model, result.data.val, B, T, maxBatches, 'causal');
    const topk = result.model.config.mor ? evaluateNll(result.model, result.data.val, B, T, maxBatches, 'topk').nll : null;
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
    log(`   ${name}: val NLL ${causal.nll.toFixed(4)} (causal)${topk === null ? '' : `, ${topk.toFixed(4)} (top-k)`}, ${row.tokens_seen.toLocaleString('en-US')} tokens`);
    // write after every model, so a long comparison leaves partial results if stopped
    await writeFileAtomic(join(out, 'compare.json'), JSON.stringify({ budget_flops: o.flops, rows }, null, 2) + '\n');
    await writeFileAtomic(join(out, 'compare.md'), markdown(rows, o));
  }
  return rows;
}
