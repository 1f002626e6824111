/**
 * The conversion experiment (README "Use your own model"; MOR_SPEC §8): pretrain vanilla `small`,
 * convert it into Nr = 2 Middle-Cycle recursive models with each init, with and without LoRA and
 * with MoR routers, uptrain each at one training-FLOPs budget, and compare causal validation NLL
 * with the source and with `small-rec2` / `small-mor2` trained from scratch on the same FLOPs.
 *
 * Every step is a `mor` CLI command, so the table's commands are exactly what ran. Results go
 * to experiments/results/uptrain.json (written atomically after every run); a run whose row is
 * already there is skipped, so the experiment can be stopped and continued across sessions.
 *
 *   node dist/experiments/uptrain.js [--runs runs/uptrain-exp] [--only NAME,NAME]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'bin.js');
const RESULTS = join(ROOT, 'experiments', 'results', 'uptrain.json');

/** Budgets and settings of the experiment (ISSUE_NOTES #11). */
const SETTINGS = Object.freeze({
  pretrainFlops: 1.5e14,
  runFlops: 3e13,
  seqLen: 256,
  seed: 0,
  /** Peak LR of uptraining: a third of pretraining's, as fine-tuning from a trained model. */
  uptrainLr: 1e-3,
  /** Peak LR of the from-scratch baselines: the pretraining default they were tuned with. */
  scratchLr: 3e-3,
  recursions: 2,
  sharing: 'middle_cycle',
});

interface RunSpec {
  readonly name: string;
  /** How the run starts: a conversion of the source, or a preset from scratch. */
  readonly start: { kind: 'convert'; init: string; loraRank: string | null; mor: string | null } | { kind: 'scratch'; preset: string };
  readonly distill: boolean;
}

const GRID: readonly RunSpec[] = [
  ...['stepwise', 'average', 'lower', 'upper', 'random'].map((init) => ({ name: init, start: { kind: 'convert' as const, init, loraRank: null, mor: null }, distill: false })),
  { name: 'stepwise-lora32', start: { kind: 'convert', init: 'stepwise', loraRank: '32', mor: null }, distill: false },
  { name: 'average-lora32', start: { kind: 'convert', init: 'average', loraRank: '32', mor: null }, distill: false },
  { name: 'average-lorafull', start: { kind: 'convert', init: 'average', loraRank: 'full', mor: null }, distill: false },
  { name: 'average-mor-expert', start: { kind: 'convert', init: 'average', loraRank: null, mor: 'expert' }, distill: false },
  { name: 'scratch-small-rec2', start: { kind: 'scratch', preset: 'small-rec2' }, distill: false },
  { name: 'scratch-small-mor2', start: { kind: 'scratch', preset: 'small-mor2' }, distill: false },
];

interface Row {
  name: string;
  commands: string[];
  /** Causal validation NLL of the converted model before uptraining (null: from scratch). */
  nll_converted: number | null;
  nll: number;
  val_tokens: number;
  train_tokens: number;
  train_flops: number;
  params_unique: number;
  wall_seconds: number;
}

interface Results {
  settings: typeof SETTINGS;
  cpu: string;
  source: { commands: string[]; nll: number; val_tokens: number; train_tokens: number; train_flops: number; wall_seconds: number } | null;
  rows: Row[];
}

function load(): Results {
  if (existsSync(RESULTS)) return JSON.parse(readFileSync(RESULTS, 'utf8')) as Results;
  return { settings: SETTINGS, cpu: cpus()[0]?.model ?? 'unknown', source: null, rows: [] };
}

function save(r: Results): void {
  mkdirSync(dirname(RESULTS), { recursive: true });
  const tmp = `${RESULTS}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(r, null, 2) + '\n');
  renameSync(tmp, RESULTS);
}

/** Runs `mor ARGS`, echoing it; returns stdout. */
function mor(args: string[], log: string[]): string {
  const shown = `mor ${args.join(' ')}`;
  log.push(shown);
  console.log(`$ ${shown}`);
  return execFileSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 });
}

/** Causal validation NLL over the whole validation split, through `mor eval --json`. */
function evaluate(checkpoint: string, log: string[]): { nll: number; tokens: number } {
  const out = mor(['eval', '--model', checkpoint, '--seq-len', String(SETTINGS.seqLen), '--batches', '100000', '--json'], log);
  const last = out.trim().split('\n').at(-1) ?? '';
  const summary = JSON.parse(last) as { val_nll: number; val_tokens: number };
  return { nll: summary.val_nll, tokens: summary.val_tokens };
}

/** Totals of a finished run, from its checkpoint's trainer_state.json. */
function runTotals(runDir: string): { tokens: number; flops: number; seconds: number } {
  const st = JSON.parse(readFileSync(join(runDir, 'checkpoint', 'trainer_state.json'), 'utf8')) as Record<string, unknown>;
  const inner = (st['state'] ?? st) as Record<string, unknown>;
  return { tokens: inner['tokensSeen'] as number, flops: inner['flopsSeen'] as number, seconds: inner['elapsedSeconds'] as number };
}

function uniqueParams(checkpoint: string): number {
  const info = JSON.parse(mor(['info', '--config', join(checkpoint, 'config.json'), '--json'], [])) as Record<string, unknown>;
  return info['params_unique'] as number;
}

function main(): void {
  const argv = process.argv.slice(2);
  const flag = (n: string): string | undefined => {
    const i = argv.indexOf(n);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const runs = resolve(ROOT, flag('--runs') ?? 'runs/uptrain-exp');
  const only = flag('--only')?.split(',');
  const results = load();
  const common = ['--seq-len', String(SETTINGS.seqLen), '--seed', String(SETTINGS.seed)];

  const sourceDir = join(runs, 'source');
  const sourceCkpt = join(sourceDir, 'checkpoint');
  // The source checkpoint is not committed (runs/ is not): a later session re-creates it with the
  // same command and says whether it came out the same as the one the recorded rows started from.
  const pretrain = ['train', '--preset', 'small', '--flops', String(SETTINGS.pretrainFlops), ...common, '--out', sourceDir];
  const sourceCmds: string[] = [];
  if (!existsSync(join(sourceCkpt, 'config.json'))) mor([...pretrain, '--overwrite'], sourceCmds);
  else sourceCmds.push(`mor ${pretrain.join(' ')}`);
  const ev = evaluate(sourceCkpt, sourceCmds);
  if (results.source === null) {
    const t = runTotals(sourceDir);
    results.source = { commands: sourceCmds, nll: ev.nll, val_tokens: ev.tokens, train_tokens: t.tokens, train_flops: t.flops, wall_seconds: t.seconds };
    save(results);
  } else if (Math.abs(ev.nll - results.source.nll) > 1e-3) {
    console.log(`warning: the source's NLL is ${ev.nll.toFixed(4)}, the recorded rows started from one at ${results.source.nll.toFixed(4)} (another CPU variant rounds differently)`);
  }

  const runOne = (spec: RunSpec): void => {
    if (only && !only.includes(spec.name)) return;
    if (results.rows.some((r) => r.name === spec.name)) return;
    const cmds: string[] = [];
    const runDir = join(runs, spec.name);
    let nllConverted: number | null = null;
    const train = ['train', '--flops', String(SETTINGS.runFlops), ...common, '--out', runDir, '--overwrite'];
    // a run trained to its budget earlier (the driver stopped before recording it) is only evaluated
    const finished = existsSync(join(runDir, 'checkpoint', 'trainer_state.json')) && runTotals(runDir).flops >= 0.99 * SETTINGS.runFlops;
    const run = finished ? (args: string[], log: string[]): string => (log.push(`mor ${args.join(' ')}`), '') : mor;
    if (spec.start.kind === 'convert') {
      const conv = join(runs, `${spec.name}.converted`);
      const s = spec.start;
      run(
        ['convert', '--model', sourceCkpt, '--recursions', String(SETTINGS.recursions), '--sharing', SETTINGS.sharing, '--init', s.init,
          ...(s.loraRank ? ['--lora-rank', s.loraRank] : []), ...(s.mor ? ['--mor', s.mor] : []), '--seed', String(SETTINGS.seed), '--out', conv, '--overwrite'],
        cmds,
      );
      nllConverted = evaluate(conv, cmds).nll;
      train.push('--init-from', conv, '--lr', String(SETTINGS.uptrainLr));
      if (spec.distill) train.push('--distill-from', sourceCkpt, '--distill-weight', '0.5', '--distill-temperature', '1');
    } else {
      train.push('--preset', spec.start.preset, '--lr', String(SETTINGS.scratchLr));
    }
    run(train, cmds);
    const ckpt = join(runDir, 'checkpoint');
    const ev = evaluate(ckpt, cmds);
    const t = runTotals(runDir);
    results.rows.push({
      name: spec.name, commands: cmds, nll_converted: nllConverted, nll: ev.nll, val_tokens: ev.tokens,
      train_tokens: t.tokens, train_flops: t.flops, params_unique: uniqueParams(ckpt), wall_seconds: t.seconds,
    });
    save(results);
    console.log(`== ${spec.name}: val NLL ${ev.nll.toFixed(4)}${nllConverted === null ? '' : ` (converted, before uptraining: ${nllConverted.toFixed(4)})`}`);
  };

  // the from-scratch baselines first: every conversion is read against them
  for (const spec of GRID.filter((g) => g.start.kind === 'scratch')) runOne(spec);
  const conversions = GRID.filter((g) => g.start.kind === 'convert');
  for (const spec of conversions) runOne(spec);
  // The best conversion (lowest NLL after uptraining) again, with distillation from the source.
  const done = results.rows.filter((r) => conversions.some((g) => g.name === r.name));
  if (done.length === conversions.length) {
    const best = done.reduce((a, b) => (b.nll < a.nll ? b : a));
    const spec = conversions.find((g) => g.name === best.name) as RunSpec;
    runOne({ ...spec, name: `${spec.name}-distill`, distill: true });
  }
}
main();
