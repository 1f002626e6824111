/**
 * The training loop: schedule → micro-batches (gradient accumulation) → forward → backward →
 * clip → AdamW, with periodic validation, JSON-lines metrics and atomic checkpoints.
 *
 * Determinism: the model init, the data order and any sampling derive from one seed; the data
 * cursor and RNG state go into every checkpoint, so N steps straight and N/2 + resume + N/2
 * produce the same losses.
 */
import { ArgumentError } from '../errors.js';
import { add, backward, noGrad, scale, zeroGrad } from '../tensor/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { forward, type Model } from '../model/model.js';
import type { RoutingStats } from '../model/mor.js';
import { updateRouterBias } from '../model/mor.js';
import { MoeStats, updateMoeBias } from '../model/moe.js';
import { AdamW, DEFAULT_ADAMW, clipGradNorm, optimParamsFromTable, type AdamWConfig } from './optim.js';
import { learningRate, type ScheduleConfig } from './schedule.js';
import { distillKl, type DistillOptions } from './distill.js';

/** One batch of B rows of T tokens; targets are the inputs shifted by one (−100 = ignore). */
export interface TrainBatch {
  readonly inputs: Int32Array;
  readonly targets: Int32Array;
  readonly batchSize: number;
  readonly seqLen: number;
}

/** Where training batches come from; its state is saved in checkpoints for exact resume. */
export interface BatchSource {
  next(): TrainBatch;
  getState(): unknown;
}

export interface TrainLoopOptions {
  readonly schedule: ScheduleConfig;
  /** Micro-batches per optimiser step (gradient accumulation), default 1. */
  readonly gradAccum?: number;
  /** Clip the global gradient norm at this value (default 1.0; 0 disables). */
  readonly clipNorm?: number;
  readonly adamw?: Partial<AdamWConfig>;
  /** Validate every this many steps (0 = only at the end). */
  readonly evalEvery?: number;
  /** Called with each metrics record (one JSON line's worth). */
  readonly onMetrics?: (m: Record<string, unknown>) => void;
  /**
   * Validation: mean NLL per token (causal routing for MoR), the number of tokens, and optionally
   * the bytes they stand for (bits/byte) and the NLL under training-time top-k routing.
   */
  readonly evaluate?: (model: Model) => { nll: number; tokens: number; bytes?: number; nllTopk?: number };
  /** Save a checkpoint: called every `saveEvery` steps, at the end, and on interruption. */
  readonly save?: (state: TrainerState, optimizer: AdamW) => void;
  readonly saveEvery?: number;
  /** Polled between steps; when it returns true the loop saves and stops (Ctrl-C). */
  readonly shouldStop?: () => boolean;
  /** GEMM peak in GFLOP/s measured on this machine, for MFU (omit to skip MFU). */
  readonly peakGflops?: number;
  /** Distillation: the loss adds weight × KL(teacher ‖ student) (distill.ts). */
  readonly distill?: DistillOptions;
}

export interface TrainerState {
  /** Optimiser steps completed. */
  step: number;
  tokensSeen: number;
  flopsSeen: number;
  /** Wall seconds spent training so far (across resumes). */
  elapsedSeconds: number;
  dataState: unknown;
  lastLoss: number | null;
}

export interface TrainResult {
  state: TrainerState;
  interrupted: boolean;
  losses: number[];
}

/** Averages routing statistics over the micro-batches of one step. */
class RoutingAccumulator {
  private sums: Record<string, number[] | number> = {};
  private n = 0;

  add(s: RoutingStats): void {
    this.n++;
    const entries: Array<[string, number[] | number]> = [
      ['selected_fraction', s.selectedFraction],
      ['sampling_accuracy', s.samplingAccuracy],
      ['dead_token_ratio', s.deadTokenRatio],
      ['load', s.load],
      ['max_vio', s.maxVio],
      ['router_entropy', s.entropy],
    ];
    for (const [k, v] of entries) {
      const prev = this.sums[k];
      if (Array.isArray(v)) this.sums[k] = v.map((x, i) => x + (Array.isArray(prev) ? (prev[i] ?? 0) : 0));
      else this.sums[k] = v + (typeof prev === 'number' ? prev : 0);
    }
  }

  mean(): Record<string, number[] | number> | null {
    if (this.n === 0) return null;
    const out: Record<string, number[] | number> = {};
    for (const [k, v] of Object.entries(this.sums)) out[k] = Array.isArray(v) ? v.map((x) => x / this.n) : v / this.n;
    return out;
  }
}

export function createOptimizer(model: Model, adamw: Partial<AdamWConfig> = {}): AdamW {
  return new AdamW(optimParamsFromTable(model.params.specs, model.params.byName), { ...DEFAULT_ADAMW, ...adamw });
}

/**
 * Run the loop from `state.step` to `schedule.totalSteps`. `optimizer` carries moments when
 * resuming. Returns the per-step losses of this call. Yields to the event loop between steps,
 * so signal handlers and `shouldStop` see a Ctrl-C within one step.
 */
export async function trainLoop(model: Model, data: BatchSource, optimizer: AdamW, state: TrainerState, opts: TrainLoopOptions): Promise<TrainResult> {
  const accum = opts.gradAccum ?? 1;
  if (!Number.isInteger(accum) || accum < 1) throw new ArgumentError(`gradAccum must be an integer ≥ 1, got ${accum}`);
  const clip = opts.clipNorm ?? 1.0;
  const total = opts.schedule.totalSteps;
  const params: Tensor[] = optimizer.params.map((p) => p.tensor);
  const losses: number[] = [];
  const emit = opts.onMetrics ?? (() => {});
  let interrupted = false;

  while (state.step < total) {
    // Let the event loop run between steps: a step is one synchronous block of kernel calls, and
    // without this a Ctrl-C handler (or any other callback) would never get to run.
    await new Promise<void>((resolve) => setImmediate(resolve));
    if (opts.shouldStop?.()) {
      interrupted = true;
      break;
    }
    const t0 = performance.now();
    const lr = learningRate(opts.schedule, state.step);
    zeroGrad(params);
    let lossSum = 0;
    let lmLossSum = 0;
    let tokens = 0;
    let forwardFlops = 0;
    let teacherFlops = 0;
    let distillSum = 0;
    const distill = opts.distill;
    const terms: Record<string, number> = {};
    const routing = new RoutingAccumulator();
    const moeStats = model.config.moe === null ? null : new MoeStats(model.config);
    for (let micro = 0; micro < accum; micro++) {
      const batch = data.next();
      const out = forward(model, batch.inputs, batch.batchSize, batch.targets, { step: state.step });
      if (out.loss === null || out.lmLoss === null) throw new ArgumentError('training batch has no targets');
      let loss = out.loss;
      if (distill) {
        // the teacher's logits live only until this micro-batch's backward is done
        const teacher = noGrad(() => forward(distill.teacher, batch.inputs, batch.batchSize));
        const kl = distillKl(out.logits, teacher.logits, distill.temperature);
        distillSum += kl.item();
        teacherFlops += teacher.flops;
        loss = add(loss, scale(kl, distill.weight));
      }
      lossSum += loss.item();
      lmLossSum += out.lmLoss.item();
      for (const [k, v] of Object.entries(out.routingTerms)) terms[k] = (terms[k] ?? 0) + v / accum;
      if (out.stats) routing.add(out.stats);
      if (out.moeStats) moeStats?.merge(out.moeStats);
      backward(accum === 1 ? loss : scale(loss, 1 / accum));
      tokens += batch.inputs.length;
      forwardFlops += out.flops;
    }
    const gradNorm = clip > 0 ? clipGradNorm(params, clip) : NaN;
    noGrad(() => optimizer.step(lr));
    const routingStats = routing.mean();
    if (routingStats) updateRouterBias(model.config, model.params, routingStats['load'] as number[]);
    if (moeStats) updateMoeBias(model.config, model.params.layers, moeStats); // loss-free expert balancing
    const seconds = (performance.now() - t0) / 1000;
    const loss = lmLossSum / accum;
    // training = forward + backward ≈ 3 × the forward FLOPs actually executed (MOR_SPEC §6),
    // plus the teacher's forward when distilling
    const flops = 3 * forwardFlops + teacherFlops;
    state.step += 1;
    state.tokensSeen += tokens;
    state.flopsSeen += flops;
    state.elapsedSeconds += seconds;
    state.lastLoss = loss;
    state.dataState = data.getState();
    losses.push(loss);
    const record: Record<string, unknown> = {
      type: 'train',
      step: state.step,
      loss,
      total_loss: lossSum / accum,
      lr,
      grad_norm: gradNorm,
      tokens: state.tokensSeen,
      tokens_per_s: tokens / seconds,
      step_ms: seconds * 1000,
      elapsed_s: state.elapsedSeconds,
    };
    if (opts.peakGflops) record['mfu'] = flops / seconds / 1e9 / opts.peakGflops;
    record['flops'] = flops;
    for (const [k, v] of Object.entries(terms)) record[k] = v;
    if (distill) {
      record['distill_kl'] = distillSum / accum;
      record['teacher_flops'] = teacherFlops;
    }
    if (routingStats) Object.assign(record, routingStats);
    if (moeStats) Object.assign(record, moeStats.metrics());
    emit(record);

    const last = state.step === total;
    if (opts.evaluate && ((opts.evalEvery && state.step % opts.evalEvery === 0) || last)) {
      const ev = noGrad(() => (opts.evaluate as NonNullable<TrainLoopOptions['evaluate']>)(model));
      const evRecord: Record<string, unknown> = { type: 'eval', step: state.step, val_nll: ev.nll, val_ppl: Math.exp(ev.nll), val_tokens: ev.tokens };
      if (ev.bytes) evRecord['val_bpb'] = (ev.nll * ev.tokens) / Math.LN2 / ev.bytes;
      if (ev.nllTopk !== undefined) evRecord['val_nll_topk'] = ev.nllTopk;
      emit(evRecord);
    }
    if (opts.save && ((opts.saveEvery && state.step % opts.saveEvery === 0) || last)) opts.save(state, optimizer);
  }
  if (interrupted && opts.save) opts.save(state, optimizer);
  return { state, interrupted, losses };
}
