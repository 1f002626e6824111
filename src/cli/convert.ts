/**
 * `mor convert`: load a pretrained vanilla checkpoint, convert it (src/convert/), save a mor-ts
 * checkpoint (config, weights, tokenizer, conversion.json). Nothing is written unless the whole
 * conversion succeeds, and the save itself is crash-safe (train/checkpoint.ts).
 */
import { Command, Option } from 'commander';
import { resolve } from 'node:path';
import { ArgumentError } from '../errors.js';
import { SHARING_STRATEGIES, type SharingStrategy } from '../model/config.js';
import { countParams } from '../model/params.js';
import { checkpointPaths, saveCheckpoint } from '../train/checkpoint.js';
import { loadWeights } from '../interop/load.js';
import { ConversionError, DEPTH_FITS, INIT_RULES, convertModel, planConversion, type ConvertOptions, type DepthFit, type InitRule } from '../convert/convert.js';
import { int, log } from './flags.js';

interface ConvertFlags {
  model: string;
  recursions: number;
  sharing: SharingStrategy;
  init?: InitRule;
  loraRank?: string;
  mor?: 'expert' | 'token';
  capacities?: string;
  fit: DepthFit;
  seed: number;
  out: string;
  overwrite?: boolean;
}

/**
 * The model a conversion starts from. Today a mor-ts checkpoint; a Hugging Face directory comes
 * through the interop loader when it lands (issue #11's single entry point).
 */

/** --lora-rank: 'full' or the number as given (convertModel validates it and names the flag). */
function parseRank(v: string | undefined): number | 'full' | undefined {
  if (v === undefined) return undefined;
  if (v === 'full') return 'full';
  const r = v.trim() === '' ? NaN : Number(v);
  if (!Number.isFinite(r)) throw new ConversionError(`--lora-rank must be an integer ≥ 1 or 'full', got '${v}'`);
  return r;
}

function parseCapacities(v: string | undefined): number[] | undefined {
  if (v === undefined) return undefined;
  const caps = v.split(',').map((x) => Number(x.trim()));
  if (caps.some((c) => !Number.isFinite(c))) throw new ArgumentError(`--capacities must be comma-separated numbers, got '${v}'`);
  return caps;
}

export function registerConvertCommand(program: Command): void {
  program
    .command('convert')
    .description('tie a pretrained vanilla model into a recursive one (Relaxed Recursive Transformers): shared layers, optional SVD-initialised per-depth LoRA, optional MoR routers')
    .requiredOption('--model <dir>', 'source checkpoint (a vanilla mor-ts checkpoint)')
    .requiredOption('--recursions <n>', 'number of recursions Nr', int('--recursions', 1))
    .addOption(new Option('--sharing <kind>', 'parameter sharing').choices(SHARING_STRATEGIES).default('middle_cycle'))
    .addOption(new Option('--init <rule>', 'init of the shared layers (default: average with --lora-rank, stepwise without)').choices(INIT_RULES))
    .option('--lora-rank <r>', "per-depth LoRA rank, capped at min(r, in, out) per matrix, or 'full' (min(in, out): reproduces the source)")
    .addOption(new Option('--mor <routing>', 'add fresh MoR routers for uptraining').choices(['expert', 'token']))
    .option('--capacities <list>', 'expert-choice capacity per recursion, e.g. 1,0.66,0.33 (default (Nr − r + 1)/Nr)')
    .addOption(
      new Option('--fit <how>', 'when L (or L − 2) is not a multiple of Nr: add positions (the paper) or drop layers by stepwise selection (the authors\' code)')
        .choices(DEPTH_FITS)
        .default('add'),
    )
    .option('--seed <n>', 'seed of fresh parameters (random init, routers)', int('--seed', 0), 0)
    .requiredOption('--out <dir>', 'output checkpoint directory')
    .option('--overwrite', 'replace a checkpoint already at --out')
    .action(async (f: ConvertFlags) => {
      const out = resolve(f.out);
      if (!f.overwrite && checkpointPaths(out).length > 0) {
        throw new ArgumentError(`${out} already exists: expected a new output folder; pass --overwrite to replace it`);
      }
      const source = await loadWeights(f.model);
      const capacities = parseCapacities(f.capacities);
      const options: ConvertOptions = {
        numRecursions: f.recursions,
        sharing: f.sharing,
        init: f.init,
        loraRank: parseRank(f.loraRank),
        mor: f.mor === undefined ? undefined : f.mor === 'expert' ? 'expert_choice' : 'token_choice',
        capacities,
        fit: f.fit,
        seed: f.seed,
        onLog: log,
      };
      const t0 = performance.now();
      const model = convertModel(source.model, options);
      const plan = planConversion(source.model.config.num_hidden_layers, options);
      const { onLog: _onLog, ...recorded } = options;
      const record = { format: 'mor-conversion', version: 1, source: resolve(f.model), options: recorded, plan };
      saveCheckpoint(out, model, {
        ...(source.tokenizerJson !== null ? { tokenizer: source.tokenizerJson } : {}),
        files: { 'conversion.json': JSON.stringify(record, null, 2) + '\n' },
      });
      const c = model.config;
      const before = countParams(source.model.config).unique;
      const after = countParams(c).unique;
      log(
        `converted ${plan.sourceLayers} layers → ${plan.targetLayers} effective (${model.plan.numUnique} unique, ${c.recursion?.sharing}, ` +
          `${plan.numRecursions} recursions${c.recursion?.lora_rank ? `, LoRA rank ${c.recursion.lora_rank}` : ''}${c.mor ? `, ${c.mor.routing} routers` : ''}); ` +
          `parameters ${(before / 1e6).toFixed(2)}M → ${(after / 1e6).toFixed(2)}M in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      if (source.tokenizerJson === null) log(`note: ${f.model} has no tokenizer.json, so neither has ${out}`);
      console.log(out);
    });
}
