/**
 * The `mor` command. Argument parsing and printing only: every subcommand calls into the library.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { MorError } from '../errors.js';
import { getBackend, setBackend } from '../backend/index.js';
import type { BackendName } from '../backend/backend.js';
import { VERSION } from '../version.js';
import { preset, PRESET_NAMES } from '../model/presets.js';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { targetCapacity } from '../model/mor-config.js';
import { countParams } from '../model/params.js';
import { forwardFlopsPerToken, trainFlopsPerToken } from '../model/flops.js';
import { loadCheckpoint } from '../train/checkpoint.js';
import { evaluateNll, prepareData } from '../train/run.js';
import { Tokenizer } from '../data/tokenizer.js';
import { generateText, type TextGenerateOptions } from '../infer/generate.js';
import { Engine } from '../infer/engine.js';
import { collect, int, log, num } from './flags.js';
import { EXIT_CODES_HELP, EXIT_OK, exitCodeFor } from './exit-codes.js';
import { registerCompareCommand, registerDemoCommand, registerTrainCommand } from './train.js';
import { readFileSync } from 'node:fs';

function chooseBackend(name: string | undefined): void {
  if (name === undefined) return;
  if (name !== 'ref' && name !== 'native') {
    throw new MorError('E_ARGUMENT', `--backend '${name}': expected 'ref' or 'native'`);
  }
  setBackend(name as BackendName);
}

function configFrom(opts: { preset?: string; config?: string }): ModelConfig {
  if (opts.config) {
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(opts.config, 'utf8'));
    } catch (e) {
      throw new MorError('E_ARGUMENT', `cannot read config ${opts.config}: ${(e as Error).message}`);
    }
    return validateConfig(raw);
  }
  return preset(opts.preset ?? 'small-rec2');
}

interface SampleFlags {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  repetitionPenalty?: number;
  stop?: string[];
  maxDepth?: number;
  threshold?: number;
}

/** Generate for each prompt through the engine, streaming the text to stdout. */
async function sampleAndPrint(modelDir: string, prompts: string[], f: SampleFlags): Promise<void> {
  const ck = await loadCheckpoint(modelDir);
  if (!ck.tokenizerJson) throw new MorError('E_CHECKPOINT', `${modelDir} has no tokenizer.json`);
  const tok = Tokenizer.fromJSON(ck.tokenizerJson);
  const engine = new Engine(ck.model, { maxBatch: 1 });
  for (const prompt of prompts) {
    process.stdout.write(`--- ${JSON.stringify(prompt)}\n${prompt}`);
    const opts: Record<string, unknown> = {
      maxTokens: f.maxTokens,
      temperature: f.temperature,
      topK: f.topK,
      topP: f.topP,
      seed: f.seed,
      onText: (piece: string) => process.stdout.write(piece),
    };
    for (const k of ['repetitionPenalty', 'stop', 'maxDepth', 'threshold'] as const) if (f[k] !== undefined) opts[k] = f[k];
    const r = await generateText(engine, tok, prompt, opts as unknown as TextGenerateOptions);
    process.stdout.write('\n');
    const meanDepth = r.depths.length ? r.depths.reduce((a, b) => a + b, 0) / r.depths.length : 0;
    const decodeTokens = Math.max(0, r.tokens.length - 1);
    const decodeSeconds = (r.totalMs - r.firstTokenMs) / 1000;
    log(
      `(${r.tokens.length} tokens, finished by ${r.finishReason}; first token ${r.firstTokenMs.toFixed(0)} ms, ` +
        `${decodeTokens ? (decodeTokens / Math.max(decodeSeconds, 1e-9)).toFixed(0) : '-'} tokens/s after; mean depth ${meanDepth.toFixed(2)} recursions)`,
    );
  }
}

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('mor')
    .description('Mixture-of-Recursions language models: train, evaluate and serve recursive transformers with adaptive depth')
    .version(VERSION)
    .option('--backend <name>', "kernel backend: 'native' (C++ addon, default when built) or 'ref' (TypeScript)")
    .showHelpAfterError()
    .addHelpText('after', EXIT_CODES_HELP)
    .exitOverride()
    .hook('preAction', () => chooseBackend(program.opts<{ backend?: string }>().backend));

  program
    .command('info')
    .description('print the kernel backend (GEMM provider, threads, SIMD) and, for a model, its size and FLOPs')
    .option('--preset <name>', `model preset (${PRESET_NAMES.join(', ')})`)
    .option('--config <file>', 'model config.json')
    .option('--seq-len <n>', 'sequence length for FLOPs (default: the model context)', int('--seq-len', 1))
    .option('--json', 'print one JSON object')
    .action((opts: { preset?: string; config?: string; seqLen?: number; json?: boolean }) => {
      const info = getBackend().info();
      const out: Record<string, unknown> = { version: VERSION, ...info };
      if (opts.preset || opts.config) {
        const c = configFrom(opts);
        const counts = countParams(c);
        const T = opts.seqLen ?? c.max_position_embeddings;
        Object.assign(out, {
          model: opts.preset ?? opts.config,
          config: c,
          params_unique: counts.unique,
          params_effective: counts.effective,
          params_embedding: counts.embedding,
          forward_flops_per_token: forwardFlopsPerToken(c, T),
          train_flops_per_token: trainFlopsPerToken(c, T),
          seq_len: T,
        });
      }
      if (opts.json) {
        console.log(JSON.stringify(out));
        return;
      }
      console.log(`mor ${VERSION}`);
      console.log(`backend        ${info.backend}`);
      console.log(`gemm provider  ${info.gemmProvider} (available: ${info.gemmProviders.join(', ')})`);
      console.log(`threads        ${info.threads}`);
      console.log(`simd           ${info.simd}`);
      if (out['model'] !== undefined) {
        const c = out['config'] as ModelConfig;
        const rec = c.recursion ? `${c.recursion.sharing}, ${c.recursion.num_recursions} recursions, LoRA rank ${c.recursion.lora_rank}` : 'none';
        console.log(`model          ${String(out['model'])}: d ${c.hidden_size}, ${c.num_hidden_layers} layers, heads ${c.num_attention_heads}/${c.num_key_value_heads}, vocab ${c.vocab_size}, context ${c.max_position_embeddings}`);
        console.log(`recursion      ${rec}`);
        if (c.mor) {
          const m = c.mor;
          const nr = c.recursion?.num_recursions ?? 0;
          const caps = m.routing === 'expert_choice' ? `, capacities ${Array.from({ length: nr }, (_, r) => targetCapacity(m, nr, r).toFixed(2)).join('/')}` : '';
          console.log(`routing        ${m.routing}, ${m.router} router, ${m.router_func} α ${m.alpha}${caps}, KV ${m.kv_strategy === 'share' ? 'sharing' : 'recursion-wise'}`);
        }
        console.log(`parameters     unique ${(out['params_unique'] as number).toLocaleString()}, effective ${(out['params_effective'] as number).toLocaleString()}, embedding ${(out['params_embedding'] as number).toLocaleString()}`);
        console.log(`FLOPs/token    forward ${(out['forward_flops_per_token'] as number / 1e6).toFixed(2)}M, training ${(out['train_flops_per_token'] as number / 1e6).toFixed(2)}M (T = ${String(out['seq_len'])})`);
      }
    });

  registerTrainCommand(program);

  program
    .command('eval')
    .description('validation NLL, perplexity and bits per byte of a checkpoint')
    .requiredOption('--model <dir>', 'checkpoint directory')
    .option('--data <path>', 'corpus (default: the built-in corpus); repeatable', collect, [])
    .option('--text-field <name>', 'text field / column', 'text')
    .option('--batch <n>', 'sequences per batch', int('--batch', 1), 8)
    .option('--seq-len <n>', 'tokens per sequence (default: the model context)', int('--seq-len', 2))
    .option('--batches <n>', 'at most this many batches', int('--batches', 1), 32)
    .option('--cache-dir <dir>', 'token cache location', '.mor-cache')
    .option('--json', 'print one JSON object')
    .action(async (o: { model: string; data: string[]; textField: string; batch: number; seqLen?: number; batches: number; cacheDir: string; json?: boolean }) => {
      const ck = await loadCheckpoint(o.model);
      const state = ck.trainerState as { options?: { data?: string[]; valFraction?: number } } | null;
      const data = await prepareData({
        data: o.data.length ? o.data : (state?.options?.data ?? []),
        textField: o.textField,
        vocabSize: ck.model.config.vocab_size,
        tokenizerJson: ck.tokenizerJson,
        cacheDir: resolve(o.cacheDir),
        valFraction: state?.options?.valFraction ?? 0.05,
        log,
      });
      const T = o.seqLen ?? ck.model.config.max_position_embeddings;
      const ev = evaluateNll(ck.model, data.val, o.batch, T, o.batches, 'causal');
      const bpb = (ev.nll / Math.LN2) / data.valBytesPerToken;
      const out: Record<string, unknown> = { model: o.model, val_nll: ev.nll, val_ppl: Math.exp(ev.nll), val_bpb: bpb, val_tokens: ev.tokens };
      // MoR: the causal figure (per-token routing decisions, as generation makes them) is the
      // honest one; top-k routing looks at later tokens and is shown for comparison.
      if (ck.model.config.mor) out['val_nll_topk'] = evaluateNll(ck.model, data.val, o.batch, T, o.batches, 'topk').nll;
      if (o.json) console.log(JSON.stringify(out));
      else {
        console.log(`validation: NLL ${ev.nll.toFixed(4)}, perplexity ${Math.exp(ev.nll).toFixed(2)}, bits/byte ${bpb.toFixed(4)} over ${ev.tokens.toLocaleString()} tokens`);
        if (out['val_nll_topk'] !== undefined) console.log(`(routing: causal decisions; with training-time top-k routing the NLL is ${(out['val_nll_topk'] as number).toFixed(4)})`);
      }
    });

  program
    .command('generate')
    .description('generate text from a checkpoint (KV-cached decoding)')
    .requiredOption('--model <dir>', 'checkpoint directory')
    .option('--prompt <text>', 'prompt; repeatable', collect, [])
    .option('--max-tokens <n>', 'tokens to generate', int('--max-tokens', 1), 100)
    .option('--temperature <x>', '0 = greedy', num('--temperature'), 0.8)
    .option('--top-k <n>', '0 = off', int('--top-k', 0), 50)
    .option('--top-p <x>', '1 = off', num('--top-p'), 0.95)
    .option('--seed <n>', 'sampling seed', int('--seed', 0), 0)
    .option('--repetition-penalty <x>', '> 1 discourages repeating tokens', num('--repetition-penalty'))
    .option('--stop <text>', 'stop when the output contains this text; repeatable', collect, [])
    .option('--max-depth <n>', 'test-time scaling: at most n recursions per token', int('--max-depth', 1))
    .option('--threshold <x>', 'test-time scaling: router threshold (MoR) or early-exit confidence', num('--threshold'))
    .action(async (o: { model: string; prompt: string[] } & SampleFlags) => {
      await sampleAndPrint(o.model, o.prompt.length ? o.prompt : [''], o);
    });

  registerCompareCommand(program);

  registerDemoCommand(program, sampleAndPrint);

  return program;
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv as string[]);
    return EXIT_OK;
  } catch (e) {
    return exitCodeFor(e, (line) => console.error(line));
  }
}
