/**
 * The training commands of `mor`: train, compare, demo. Flags map one to one onto the run
 * configuration (train/run-config.ts), which holds every default; the help text prints them
 * from there. Only flags given on the command line are passed on, so a resumed run can tell a
 * flag that would change it from a default.
 */
import { Command, Option } from 'commander';
import { join, resolve } from 'node:path';
import { readFileSync } from 'node:fs';
import { PRESET_NAMES, preset } from '../model/presets.js';
import { runTraining, type TrainRunOptions, type TrainRunResult } from '../train/run.js';
import { evaluateNll } from '../train/evaluate.js';
import { RUN_DEFAULTS, SCHEDULE_KINDS, type RunConfigInput } from '../train/run-config.js';
import { COMPARE_DEFAULTS, DEFAULT_COMPARE_PRESETS, runComparison } from '../train/compare.js';
import type { ScheduleKind } from '../train/schedule.js';
import { ArgumentError } from '../errors.js';
import { ProgressPrinter } from './progress.js';
import { collect, int, log, num } from './flags.js';
import { definedOnly } from '../util/defined.js';
import { CommandExit, EXIT_INTERRUPTED } from './exit-codes.js';

interface TrainFlags {
  preset?: string;
  config?: string;
  data: string[];
  textField?: string;
  tokenizer?: string;
  steps?: number;
  tokens?: number;
  flops?: number;
  batch?: number;
  seqLen?: number;
  gradAccum?: number;
  lr?: number;
  schedule?: ScheduleKind;
  warmup?: number;
  seed?: number;
  out?: string;
  resume?: string;
  initFrom?: string;
  evalEvery?: number;
  evalBatches?: number;
  saveEvery?: number;
  cacheDir?: string;
  overwrite?: boolean;
  json?: boolean;
  distillFrom?: string;
  distillWeight?: number;
  distillTemperature?: number;
}

/** Flags that --resume accepts; any other flag given would change the run and is refused. */
const RESUME_FLAGS: ReadonlySet<keyof TrainFlags> = new Set<keyof TrainFlags>(['steps', 'tokens', 'flops', 'cacheDir', 'json', 'resume', 'out']);

/** The defaults a command's help shows (train: the run defaults; demo: its own). */
interface HelpDefaults {
  readonly preset: string;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly evalEvery: number;
  readonly evalBatches: number;
  readonly outDir: string;
}

/** The demo's settings where they differ from the run defaults: a small model, a few minutes. */
const DEMO_DEFAULTS: HelpDefaults = Object.freeze({
  /** MoR expert-choice, 3 recursions: tokens take 1–3 passes of the shared block */
  preset: 'demo-mor3',
  steps: 800,
  batchSize: 16,
  lr: 3e-3,
  /** validate every 200 steps on 16 batches */
  evalEvery: 200,
  evalBatches: 16,
  outDir: 'runs/demo',
});

function flagName(attr: string): string {
  return `--${attr.replace(/[A-Z]/g, (ch) => `-${ch.toLowerCase()}`)}`;
}

function addTrainFlags(cmd: Command, d: HelpDefaults): Command {
  const warmupPct = RUN_DEFAULTS.warmupFraction * 100;
  return cmd
    .addOption(new Option('--preset <name>', `model preset (${PRESET_NAMES.join(', ')})`).default(d.preset))
    .option('--config <file>', 'model config.json instead of a preset')
    .addOption(new Option('--data <path>', 'corpus file or folder (.txt, .jsonl, .parquet); repeatable').argParser(collect).default([], 'the built-in corpus'))
    .option('--text-field <name>', 'text field of .jsonl / column of .parquet', RUN_DEFAULTS.textField)
    .option('--tokenizer <file>', 'tokenizer.json to use (default: train a BPE on the corpus)')
    .option('--steps <n>', 'budget in optimiser steps (used when no --tokens / --flops)', int('--steps', 1), d.steps)
    .option('--tokens <n>', 'budget in training tokens', num('--tokens', 1))
    .option('--flops <n>', 'budget in training FLOPs (e.g. 1e15)', num('--flops', 1))
    .option('--batch <n>', 'sequences per micro-batch', int('--batch', 1), d.batchSize)
    .option('--seq-len <n>', 'tokens per sequence (default: the model context)', int('--seq-len', 2))
    .option('--grad-accum <n>', 'micro-batches per optimiser step', int('--grad-accum', 1), RUN_DEFAULTS.gradAccum)
    .option('--lr <x>', 'peak learning rate', num('--lr'), d.lr)
    .addOption(new Option('--schedule <kind>', 'learning-rate schedule (wsd: warmup–stable–decay)').choices(SCHEDULE_KINDS).default(RUN_DEFAULTS.schedule))
    .option('--warmup <n>', `warmup steps (default: ${warmupPct}% of the run's steps, at least 1)`, int('--warmup', 0))
    .option('--seed <n>', 'seed for init and data order', int('--seed', 0), RUN_DEFAULTS.seed)
    .option('--out <dir>', 'output directory (checkpoint/, metrics.jsonl)', d.outDir)
    .option('--overwrite', 'replace the run already in --out (its checkpoint and metrics.jsonl)')
    .option(
      '--resume <dir>',
      'continue the run of this checkpoint in place (its parent folder); keeps every setting but the budget: ' +
        '--steps / --tokens / --flops extend it, any other flag that would change the run is refused',
    )
    .option('--init-from <dir>', 'start a new run from the config, weights and tokenizer of this mor-ts checkpoint (e.g. a `mor convert` output) or Hugging Face Llama directory (fresh optimiser; all parameters train)')
    .option('--distill-from <dir>', 'distil from this teacher checkpoint: the loss adds weight × KL(teacher ‖ student) on the next-token distributions')
    .option('--distill-weight <x>', `weight of the KL term (default: ${RUN_DEFAULTS.distillWeight})`, num('--distill-weight'))
    .option('--distill-temperature <x>', `temperature of both distributions in the KL (default: ${RUN_DEFAULTS.distillTemperature})`, num('--distill-temperature'))
    .option('--eval-every <n>', 'validate every n steps (0: at the end only)', int('--eval-every', 0), d.evalEvery)
    .option('--eval-batches <n>', 'validation batches per evaluation', int('--eval-batches', 1), d.evalBatches)
    .option('--save-every <n>', 'checkpoint every n steps (0: at the end and on Ctrl-C only)', int('--save-every', 0), RUN_DEFAULTS.saveEvery)
    .option('--cache-dir <dir>', 'where tokenizers and token caches are kept', RUN_DEFAULTS.cacheDir)
    .option('--json', 'print metrics as JSON lines instead of a progress line');
}

/** The flags given on the command line (not defaults) as run settings. */
function givenRunInput(f: TrainFlags, cmd: Command): RunConfigInput {
  const given = <K extends keyof TrainFlags>(k: K): TrainFlags[K] | undefined => (cmd.getOptionValueSource(k) === 'cli' ? f[k] : undefined);
  return {
    preset: given('preset'),
    configPath: given('config'),
    data: given('data'),
    textField: given('textField'),
    tokenizerPath: given('tokenizer'),
    steps: given('steps'),
    tokens: given('tokens'),
    flops: given('flops'),
    batchSize: given('batch'),
    seqLen: given('seqLen'),
    gradAccum: given('gradAccum'),
    lr: given('lr'),
    schedule: given('schedule'),
    warmup: given('warmup'),
    seed: given('seed'),
    outDir: given('out'),
    evalEvery: given('evalEvery'),
    evalBatches: given('evalBatches'),
    saveEvery: given('saveEvery'),
    cacheDir: given('cacheDir'),
    overwrite: given('overwrite'),
    initFrom: given('initFrom'),
    distillFrom: given('distillFrom'),
    distillWeight: given('distillWeight'),
    distillTemperature: given('distillTemperature'),
  };
}

/** --resume with a flag that would change the run: name the flags. */
function refuseResumeChanges(f: TrainFlags, cmd: Command): void {
  if (f.resume === undefined) return;
  const changed = cmd.options
    .map((opt) => opt.attributeName() as keyof TrainFlags)
    .filter((attr) => cmd.getOptionValueSource(attr) === 'cli' && !RESUME_FLAGS.has(attr));
  if (changed.length > 0) {
    throw new ArgumentError(
      `--resume keeps every setting of the run but its budget: expected only --steps, --tokens or --flops, got ${changed.map(flagName).join(', ')}`,
    );
  }
}

async function trainCommand(input: RunConfigInput, resume: string | undefined, json: boolean): Promise<TrainRunResult> {
  let stop = false;
  const onSigint = (): void => {
    if (stop) process.exit(EXIT_INTERRUPTED);
    stop = true;
    log('\ninterrupted: saving a checkpoint (Ctrl-C again to quit without saving)');
  };
  process.on('SIGINT', onSigint);
  const progress = new ProgressPrinter(process.stderr, json);
  try {
    const options: TrainRunOptions = { ...input, resume, onLog: log, onMetrics: (m) => progress.update(m), shouldStop: () => stop };
    const result = await runTraining(options);
    progress.done();
    log(`${result.interrupted ? 'stopped' : 'finished'} at step ${result.state.step}; checkpoint: ${result.checkpointDir}`);
    if (result.interrupted) throw new CommandExit(EXIT_INTERRUPTED, `interrupted at step ${result.state.step}`);
    return result;
  } finally {
    process.off('SIGINT', onSigint);
  }
}

export function registerTrainCommand(program: Command): void {
  addTrainFlags(program.command('train').description('train a model (preset, config, or the weights of a model directory) on the built-in corpus or your data'), {
    ...RUN_DEFAULTS,
  }).action(async (f: TrainFlags, cmd: Command) => {
    refuseResumeChanges(f, cmd);
    await trainCommand(givenRunInput(f, cmd), f.resume, f.json === true);
  });
}

interface CompareFlags {
  presets: string;
  flops: number;
  data: string[];
  batch: number;
  seqLen?: number;
  lr: number;
  seed: number;
  seeds: number;
  evalBatches?: number;
  out: string;
  cacheDir: string;
  overwrite?: boolean;
}

export function registerCompareCommand(program: Command): void {
  program
    .command('compare')
    .description('train several models at one equal training-FLOPs budget and compare validation NLL (markdown + JSON)')
    .option('--presets <list>', 'comma-separated presets', DEFAULT_COMPARE_PRESETS.join(','))
    .option('--flops <n>', 'training FLOPs per model', num('--flops', 1), COMPARE_DEFAULTS.flops)
    .option('--data <path>', 'corpus (default: the built-in corpus); repeatable', collect, [])
    .option('--batch <n>', 'sequences per batch', int('--batch', 1), RUN_DEFAULTS.batchSize)
    .option('--seq-len <n>', 'tokens per sequence (default: the smallest context among the presets, so every model sees the same sequences)', int('--seq-len', 2))
    .option('--lr <x>', 'peak learning rate', num('--lr'), RUN_DEFAULTS.lr)
    .option('--seed <n>', 'first seed', int('--seed', 0), RUN_DEFAULTS.seed)
    .option('--seeds <n>', 'train each model with this many seeds (seed, seed + 1, …) and report mean ± std. dev.', int('--seeds', 1), 1)
    .option('--eval-batches <n>', 'validation batches (default: the whole split)', int('--eval-batches', 1))
    .option('--out <dir>', 'output directory', COMPARE_DEFAULTS.outDir)
    .option('--overwrite', 'start again: retrain the runs already recorded in --out (by default a stopped comparison continues)')
    .option('--cache-dir <dir>', 'token cache location', RUN_DEFAULTS.cacheDir)
    .action(async (o: CompareFlags) => {
      const presets = o.presets.split(',').map((x) => x.trim()).filter((x) => x.length > 0);
      for (const name of presets) preset(name); // fail fast on a typo
      const progress = new ProgressPrinter(process.stderr, false);
      const rows = await runComparison({
        presets,
        flops: o.flops,
        outDir: o.out,
        data: o.data,
        batchSize: o.batch,
        lr: o.lr,
        seed: o.seed,
        seeds: o.seeds,
        cacheDir: o.cacheDir,
        ...definedOnly({ seqLen: o.seqLen, evalBatches: o.evalBatches, overwrite: o.overwrite }),
        onLog: log,
        onMetrics: (_name, m) => progress.update(m),
      });
      progress.done();
      console.log(readFileSync(join(resolve(o.out), 'compare.md'), 'utf8'));
      log(`${rows.length} models; results in ${join(resolve(o.out), 'compare.json')} and compare.md`);
    });
}

/** What the demo asks of the sampler (main.ts owns generation). */
export type DemoSampler = (
  modelDir: string,
  prompts: string[],
  f: { maxTokens: number; temperature: number; topK: number; topP: number; seed: number; showDepth?: boolean },
) => Promise<void>;

export function registerDemoCommand(program: Command, sample: DemoSampler): void {
  addTrainFlags(
    program
      .command('demo')
      .description('train a small MoR model on the built-in corpus in a few minutes, evaluate it (causal and top-k routing), print samples coloured by depth and the command that serves it'),
    DEMO_DEFAULTS,
  ).action(async (f: TrainFlags, cmd: Command) => {
    refuseResumeChanges(f, cmd);
    const given = givenRunInput(f, cmd);
    const resuming = f.resume !== undefined;
    const noBudget = given.steps === undefined && given.tokens === undefined && given.flops === undefined;
    // the demo's defaults fill what was not given (a resumed run keeps its own settings)
    const input: RunConfigInput = resuming
      ? given
      : {
          ...given,
          preset: given.preset ?? (given.configPath !== undefined || given.initFrom !== undefined ? undefined : DEMO_DEFAULTS.preset),
          steps: given.steps ?? (noBudget ? DEMO_DEFAULTS.steps : undefined),
          batchSize: given.batchSize ?? DEMO_DEFAULTS.batchSize,
          lr: given.lr ?? DEMO_DEFAULTS.lr,
          evalEvery: given.evalEvery ?? DEMO_DEFAULTS.evalEvery,
          evalBatches: given.evalBatches ?? DEMO_DEFAULTS.evalBatches,
          outDir: given.outDir ?? DEMO_DEFAULTS.outDir,
        };
    const result = await trainCommand(input, f.resume, f.json === true);
    const c = result.model.config;
    const T = c.max_position_embeddings;
    const batches = DEMO_DEFAULTS.evalBatches;
    const causal = evaluateNll(result.model, result.data.val, DEMO_DEFAULTS.batchSize, T, batches, 'causal');
    log(`validation NLL ${causal.nll.toFixed(3)} (perplexity ${Math.exp(causal.nll).toFixed(1)}) with causal routing, mean depth ${causal.meanDepth.toFixed(2)} of ${result.model.plan.depthSteps.length}`);
    if (c.mor?.routing === 'expert_choice') {
      const topk = evaluateNll(result.model, result.data.val, DEMO_DEFAULTS.batchSize, T, batches, 'topk');
      log(`                ${topk.nll.toFixed(3)} with training-time top-k routing (it looks at later tokens, so generation cannot use it)`);
    }
    await sample(result.checkpointDir, ['The President', 'Congress shall', 'In the year'], { maxTokens: 60, temperature: 0.8, topK: 40, topP: 0.95, seed: 1, showDepth: true });
    process.stdout.write(`\nserve it, with the playground at http://127.0.0.1:8080/ :\n  mor serve --model ${result.checkpointDir}\n`);
  });
}
