/**
 * The `mor` command. Argument parsing and printing only: every subcommand calls into the library.
 */
import { Command } from 'commander';
import { resolve } from 'node:path';
import { ArgumentError, MorError } from '../errors.js';
import { getBackend, setBackend } from '../backend/index.js';
import type { BackendName } from '../backend/backend.js';
import { VERSION } from '../version.js';
import { preset, PRESET_NAMES } from '../model/presets.js';
import { validateConfig, type ModelConfig } from '../model/config.js';
import { targetCapacity } from '../model/mor-config.js';
import { routedLayers, routerThreshold } from '../model/mod-config.js';
import { countParams } from '../model/params.js';
import { forwardFlopsPerToken, trainFlopsPerToken } from '../model/flops.js';
import { loadModel } from '../interop/load.js';
import { exportHf } from '../interop/hf.js';
import { exportGguf, type GgufDtype } from '../interop/gguf.js';
import { prepareData } from '../train/run.js';
import { depthSweep, evaluateNll, evaluateTextNll } from '../train/evaluate.js';
import type { Model } from '../model/model.js';
import { DepthView } from './depth-view.js';
import { Tokenizer } from '../data/tokenizer.js';
import { generateText, textRequest, type TextGenerateOptions } from '../infer/generate.js';
import { Engine } from '../infer/engine.js';
import { collect, int, log, num } from './flags.js';
import { EXIT_CODES_HELP, EXIT_OK, exitCodeFor } from './exit-codes.js';
import { registerCompareCommand, registerDemoCommand, registerTrainCommand } from './train.js';
import { registerServeCommand } from './serve.js';
import { registerConvertCommand } from './convert.js';
import { existsSync, readFileSync } from 'node:fs';
import { definedOnly } from '../util/defined.js';
import { storageDtype } from '../backend/bf16.js';
import { evaluateEngineNll } from '../infer/eval.js';

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
  exitConfidence?: number;
  showDepth?: boolean;
  /** Storage of the engine's packed weights and K/V pool ('f32' when absent). */
  dtype?: string;
}

/**
 * The test-time depth flags a model can honour: --threshold moves MoR expert-choice routers,
 * --exit-confidence the early exit of a recursive model without routers; --max-depth ≤ its depth steps.
 */
function checkDepthFlags(model: Model, f: { maxDepth?: number | undefined; threshold?: number | undefined; thresholds?: readonly number[] | undefined; exitConfidence?: number | undefined }): void {
  const m = model.config.mor;
  const steps = model.plan.depthSteps.length;
  if (f.maxDepth !== undefined && f.maxDepth > steps) {
    throw new ArgumentError(`--max-depth ${f.maxDepth}: this model takes at most ${steps} recursion${steps === 1 ? '' : 's'}`);
  }
  const th = f.threshold !== undefined ? '--threshold' : f.thresholds !== undefined ? '--thresholds' : null;
  if (th && routerThreshold(model.config) === null) {
    throw new ArgumentError(`${th} sets the threshold of MoR expert-choice routers and MoD routers; this model has ${m ? 'token-choice routing (its depth is chosen once per token)' : 'no routers (for early exit use --exit-confidence)'}`);
  }
  if (f.exitConfidence !== undefined && (m !== null || steps === 1)) {
    throw new ArgumentError(`--exit-confidence is early exit for recursive models without routers; this model ${m ? 'has MoR routers (use --threshold)' : 'has a single depth step'}`);
  }
  if (f.threshold !== undefined && f.threshold > 1) throw new ArgumentError(`--threshold must be in [0, 1], got ${f.threshold}`);
}

/** Generate for each prompt through the engine, streaming the text to stdout. */
async function sampleAndPrint(modelDir: string, prompts: string[], f: SampleFlags): Promise<void> {
  const dtype = f.dtype === undefined ? undefined : storageDtype('--dtype', f.dtype);
  const { model, tokenizer: tok } = await loadModel(modelDir);
  checkDepthFlags(model, f);
  const engine = new Engine(model, { maxBatch: 1, ...definedOnly({ dtype }) });
  const view = f.showDepth ? new DepthView(engine.runner.numRecursions, process.stdout.isTTY === true && !process.env['NO_COLOR']) : null;
  const request = (onText: TextGenerateOptions['onText']): TextGenerateOptions => ({
    maxTokens: f.maxTokens,
    temperature: f.temperature,
    topK: f.topK,
    topP: f.topP,
    seed: f.seed,
    ...definedOnly({ repetitionPenalty: f.repetitionPenalty, stop: f.stop, maxDepth: f.maxDepth, threshold: f.threshold, exitConfidence: f.exitConfidence, onText }),
  });
  // every prompt's request is checked before anything is printed
  for (const prompt of prompts) textRequest(engine, tok, prompt, request(undefined));
  for (const [i, prompt] of prompts.entries()) {
    process.stdout.write(`--- ${JSON.stringify(prompt)}\n${prompt}`);
    const onText: TextGenerateOptions['onText'] = (piece, tokens) => {
      process.stdout.write(view ? view.paint(piece, tokens.map((t) => t.depth)) : piece);
    };
    const r = await generateText(engine, tok, prompt, request(onText));
    process.stdout.write('\n');
    if (view && i === prompts.length - 1) process.stdout.write(`${view.legend()}\n${view.histogram()}\n`);
    const meanDepth = r.depths.length ? r.depths.reduce((a, b) => a + b, 0) / r.depths.length : 0;
    const decodeTokens = Math.max(0, r.tokens.length - 1);
    const decodeSeconds = (r.totalMs - r.firstTokenMs) / 1000;
    log(
      `(${r.tokens.length} tokens, finished by ${r.finishReason}; first token ${r.firstTokenMs.toFixed(0)} ms, ` +
        `${decodeTokens ? (decodeTokens / Math.max(decodeSeconds, 1e-9)).toFixed(0) : '-'} tokens/s after; mean depth ${meanDepth.toFixed(2)} recursions)`,
    );
  }
}

interface EvalFlags {
  model: string;
  data: string[];
  textField: string;
  batch: number;
  seqLen?: number;
  batches: number;
  maxDepth?: number;
  threshold?: number;
  depthSweep?: boolean;
  thresholds?: number[];
  cacheDir: string;
  text?: string;
  json?: boolean;
  dtype?: string;
}

/** `eval --text FILE`: the file's ids as the tokenizer encodes them (no special tokens), scored in windows of the context. */
async function evalTextCommand(o: EvalFlags & { text: string }, model: Model, tokenizer: Tokenizer): Promise<void> {
  if (o.data.length > 0 || o.depthSweep || o.thresholds) throw new ArgumentError('--text scores one file: it does not combine with --data, --depth-sweep or --thresholds');
  let text: string;
  try {
    text = readFileSync(o.text, 'utf8');
  } catch (e) {
    throw new ArgumentError(`--text ${o.text}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const ids = tokenizer.encode(text);
  const T = o.seqLen ?? model.config.max_position_embeddings;
  if (T > model.config.max_position_embeddings) throw new ArgumentError(`--seq-len ${T} exceeds the model's context ${model.config.max_position_embeddings}`);
  const depth = { ...(o.maxDepth !== undefined ? { maxDepth: o.maxDepth } : {}), ...(o.threshold !== undefined ? { threshold: o.threshold } : {}) };
  const ev = evaluateTextNll(model, ids, T, o.batch, 'causal', depth);
  const out = { model: o.model, text: o.text, val_nll: ev.nll, val_ppl: Math.exp(ev.nll), val_tokens: ev.tokens, mean_depth: ev.meanDepth, max_depth: o.maxDepth ?? model.plan.depthSteps.length, seq_len: T };
  if (o.json) console.log(JSON.stringify(out));
  else console.log(`${o.text}: NLL ${ev.nll.toFixed(4)}, perplexity ${Math.exp(ev.nll).toFixed(2)} over ${ev.tokens.toLocaleString()} tokens (windows of ${T}); mean depth ${ev.meanDepth.toFixed(3)}`);
}

async function evalCommand(o: EvalFlags): Promise<void> {
  // --dtype: the NLL through the engine's path (packed weights, fused layer, paged K/V in that dtype)
  const dtype = o.dtype === undefined ? null : storageDtype('--dtype', o.dtype);
  const { model, tokenizer, tokenizerJson, trainerState } = await loadModel(o.model);
  checkDepthFlags(model, o);
  if (dtype !== null && (o.text !== undefined || o.depthSweep || o.thresholds)) {
    throw new ArgumentError('--dtype measures the NLL through the engine on the validation split: it does not combine with --text, --depth-sweep or --thresholds');
  }
  if (o.text !== undefined) return evalTextCommand({ ...o, text: o.text }, model, tokenizer);
  for (const th of o.thresholds ?? []) if (th > 1) throw new ArgumentError(`--thresholds: each must be in [0, 1], got ${th}`);
  const state = trainerState as { options?: { data?: string[]; valFraction?: number } } | null;
  const data = await prepareData({
    data: o.data.length ? o.data : (state?.options?.data ?? []),
    textField: o.textField,
    vocabSize: model.config.vocab_size,
    tokenizerJson,
    cacheDir: resolve(o.cacheDir),
    valFraction: state?.options?.valFraction ?? 0.05,
    log,
  });
  const T = o.seqLen ?? model.config.max_position_embeddings;
  const steps = model.plan.depthSteps.length;
  // expert-choice MoR and MoD: routers decide by a threshold, and training ranks by top-k
  const expert = routerThreshold(model.config) !== null;
  const depth = { ...(o.maxDepth !== undefined ? { maxDepth: o.maxDepth } : {}), ...(o.threshold !== undefined ? { threshold: o.threshold } : {}) };

  if (o.depthSweep || o.thresholds) {
    const depths = o.depthSweep ? Array.from({ length: steps }, (_, i) => i + 1) : [o.maxDepth ?? steps];
    const points = depthSweep(model, data.val, o.batch, T, o.batches, depths, o.thresholds ?? (o.threshold !== undefined ? [o.threshold] : []));
    if (o.json) for (const p of points) console.log(JSON.stringify(p));
    else {
      console.log('| max depth | threshold | validation NLL | mean depth |');
      console.log('|---:|---:|---:|---:|');
      for (const p of points) console.log(`| ${p.max_depth} | ${p.threshold ?? '-'} | ${p.nll.toFixed(4)} | ${p.mean_depth.toFixed(3)} |`);
    }
  }

  const ev = dtype !== null ? evaluateEngineNll(model, data.val, o.batch, T, o.batches, dtype, depth) : evaluateNll(model, data.val, o.batch, T, o.batches, 'causal', depth);
  const bpb = (ev.nll / Math.LN2) / data.valBytesPerToken;
  const out: Record<string, unknown> = { model: o.model, val_nll: ev.nll, val_ppl: Math.exp(ev.nll), val_bpb: bpb, val_tokens: ev.tokens, mean_depth: ev.meanDepth, max_depth: o.maxDepth ?? steps };
  if (dtype !== null) Object.assign(out, { dtype, path: 'engine' });
  if (expert) out['threshold'] = o.threshold ?? routerThreshold(model.config);
  // Expert-choice MoR: the causal figure (per-token decisions, as generation makes them) is the
  // honest one; training-time top-k routing looks at later tokens and is shown beside it. Token-
  // choice is causal by construction, so it has one figure.
  if (expert && dtype === null && o.maxDepth === undefined && o.threshold === undefined) out['val_nll_topk'] = evaluateNll(model, data.val, o.batch, T, o.batches, 'topk').nll;
  if (o.json) console.log(JSON.stringify(out));
  else {
    console.log(`validation${dtype !== null ? ` (through the engine, ${dtype} weights and K/V)` : ''}: NLL ${ev.nll.toFixed(4)}, perplexity ${Math.exp(ev.nll).toFixed(2)}, bits/byte ${bpb.toFixed(4)} over ${ev.tokens.toLocaleString()} tokens; mean depth ${ev.meanDepth.toFixed(3)} of ${steps}`);
    if (out['val_nll_topk'] !== undefined) console.log(`(routing: causal decisions; with training-time top-k routing the NLL is ${(out['val_nll_topk'] as number).toFixed(4)})`);
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
          params_active_per_token: counts.active,
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
      console.log(`simd           ${info.simd}${info.simdAvailable ? ` (this CPU runs: ${info.simdAvailable.join(', ')}; MOR_SIMD picks one)` : ''}`);
      if (info.cpu !== undefined) console.log(`cpu            ${info.cpu}`);
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
        if (c.mod) {
          const layers = routedLayers(c.mod, c.num_hidden_layers);
          console.log(`routing        Mixture-of-Depths: layers ${layers.join(', ')} route, capacity ${c.mod.capacity}, gate ${c.mod.router_func} α ${c.mod.alpha}, threshold ${c.mod.threshold}`);
        }
        if (c.moe) {
          const e = c.moe;
          console.log(`experts        ${e.num_experts} × width ${e.expert_intermediate_size}, top-${e.top_k} + ${e.num_shared_experts} shared, ${e.router_func} router, balancing ${e.balancing}, placement ${e.placement}${e.capacity_factor === null ? ', dropless' : `, capacity factor ${e.capacity_factor}`}`);
        }
        console.log(`parameters     total ${(out['params_effective'] as number).toLocaleString()} (as unrolled), unique ${(out['params_unique'] as number).toLocaleString()}, active per token ${(out['params_active_per_token'] as number).toLocaleString()}, embedding ${(out['params_embedding'] as number).toLocaleString()}`);
        console.log(`FLOPs/token    forward ${(out['forward_flops_per_token'] as number / 1e6).toFixed(2)}M, training ${(out['train_flops_per_token'] as number / 1e6).toFixed(2)}M (T = ${String(out['seq_len'])})`);
      }
    });

  registerTrainCommand(program);

  program
    .command('eval')
    .description('validation NLL, perplexity and bits per byte of a checkpoint or Hugging Face Llama directory, or of one text file (--text); test-time depth sweeps')
    .requiredOption('--model <dir>', 'checkpoint directory or Hugging Face Llama directory')
    .option('--data <path>', 'corpus (default: the built-in corpus); repeatable', collect, [])
    .option('--text <file>', 'score this one text file instead (as llama.cpp\'s perplexity tool: its ids, no special tokens, in windows of the context); prints val_nll, val_tokens')
    .option('--text-field <name>', 'text field / column', 'text')
    .option('--batch <n>', 'sequences per batch', int('--batch', 1), 8)
    .option('--seq-len <n>', 'tokens per sequence (default: the model context)', int('--seq-len', 2))
    .option('--batches <n>', 'at most this many batches', int('--batches', 1), 32)
    .option('--max-depth <n>', 'test-time depth: at most n recursions per token', int('--max-depth', 1))
    .option('--threshold <x>', 'MoR expert-choice router threshold (default: the model\'s)', num('--threshold'))
    .option('--depth-sweep', 'NLL and mean depth at every maximum depth 1..Nr')
    .option('--thresholds <list>', 'MoR expert-choice: sweep these router thresholds, e.g. 0.3,0.5,0.7', (v: string) => v.split(',').map((x) => num('--thresholds')(x.trim())))
    .option('--cache-dir <dir>', 'token cache location', '.mor-cache')
    .option('--dtype <type>', "measure through the inference engine (packed weights, fused decode layer, paged K/V) with weights and K/V stored as 'f32' or 'bf16'; default: the training forward in f32")
    .option('--json', 'print JSON: one object per sweep point, then the summary object')
    .action(async (o: EvalFlags) => {
      await evalCommand(o);
    });

  program
    .command('generate')
    .description('generate text from a checkpoint or a Hugging Face Llama directory (KV-cached decoding)')
    .requiredOption('--model <dir>', 'checkpoint directory or Hugging Face Llama directory')
    .option('--prompt <text>', 'prompt; repeatable', collect, [])
    .option('--max-tokens <n>', 'tokens to generate', int('--max-tokens', 1), 100)
    .option('--temperature <x>', '0 = greedy', num('--temperature'), 0.8)
    .option('--top-k <n>', '0 = off', int('--top-k', 0), 50)
    .option('--top-p <x>', '1 = off', num('--top-p'), 0.95)
    .option('--seed <n>', 'sampling seed', int('--seed', 0), 0)
    .option('--repetition-penalty <x>', '> 1 discourages repeating tokens', num('--repetition-penalty'))
    .option('--stop <text>', 'stop when the output contains this text; repeatable', collect, [])
    .option('--max-depth <n>', 'test-time scaling: at most n recursions per token', int('--max-depth', 1))
    .option('--threshold <x>', 'test-time scaling, MoR expert-choice: continue iff sigmoid(router) > x; higher → shallower (default: the model\'s, 0.5)', num('--threshold'))
    .option('--exit-confidence <x>', 'test-time scaling, recursive models without routers: exit once the head\'s top probability ≥ x; higher → deeper (default: off)', num('--exit-confidence'))
    .option('--dtype <type>', "storage of the engine's packed weights and K/V pool: 'f32' (default) or 'bf16' (half the bytes read per step; f32 arithmetic)")
    .option('--show-depth', 'colour each generated token by the recursions it ran (text[depth] when not a terminal), then a depth histogram')
    .action(async (o: { model: string; prompt: string[] } & SampleFlags) => {
      await sampleAndPrint(o.model, o.prompt.length ? o.prompt : [''], o);
    });

  program
    .command('export')
    .description('write a model for other tools: a Hugging Face LlamaForCausalLM directory, or a GGUF file for llama.cpp (recursive and relaxed models are unrolled; models with routers cannot be)')
    .requiredOption('--model <dir>', 'checkpoint directory or Hugging Face Llama directory')
    .requiredOption('--format <name>', "'hf' (a directory) or 'gguf' (a file)")
    .requiredOption('--out <path>', 'output directory (hf) or .gguf file (gguf)')
    .option('--dtype <type>', "gguf: matrix storage, 'f32' or 'f16' (norm scales stay f32)", 'f32')
    .option('--gguf-pre <name>', 'gguf: tokenizer.ggml.pre (default: detected from tokenizer.json: gpt-2 or smollm)')
    .option('--overwrite', 'replace --out when it exists')
    .action(async (o: { model: string; format: string; out: string; dtype: string; ggufPre?: string; overwrite?: boolean }) => {
      if (o.format !== 'hf' && o.format !== 'gguf') throw new ArgumentError(`--format '${o.format}': expected 'hf' or 'gguf'`);
      if (o.dtype !== 'f32' && o.dtype !== 'f16') throw new ArgumentError(`--dtype '${o.dtype}': expected 'f32' or 'f16'`);
      if (o.format === 'hf' && (o.dtype !== 'f32' || o.ggufPre !== undefined)) throw new ArgumentError('--dtype and --gguf-pre apply to --format gguf (hf is written in f32)');
      const { model, tokenizer } = await loadModel(o.model);
      if (o.format === 'hf') exportHf(model, tokenizer, o.out, { overwrite: o.overwrite === true });
      else {
        if (existsSync(o.out) && o.overwrite !== true) throw new ArgumentError(`${o.out} already exists: remove it or pass --overwrite`);
        exportGguf(model, tokenizer, o.out, { dtype: o.dtype as GgufDtype, ...(o.ggufPre !== undefined ? { pre: o.ggufPre } : {}) });
      }
      log(`wrote ${o.out} (${o.format}${o.format === 'gguf' ? `, ${o.dtype}` : ''}; ${model.config.num_hidden_layers} plain layers)`);
    });

  registerCompareCommand(program);
  registerConvertCommand(program);
  registerServeCommand(program);

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
