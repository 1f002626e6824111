// Training-step benchmark: one JSON line per model preset.
//   {"bench":"train","model","batch","seq_len","tokens_per_s","step_ms","mfu","peak_gflops","rss_mb","train_flops_per_token"}
// Steps run on random token ids (speed does not depend on the text); MFU = model FLOPs per
// second (MOR_SPEC §6 accounting) ÷ the GEMM peak measured in this same run.
//
//   npm run bench:train [-- presets...]       (MOR_BENCH_QUICK=1 for fewer steps)
import { getBackend } from '../src/backend/index.js';
import { measureGemmPeak } from '../src/backend/peak.js';
import { preset } from '../src/model/presets.js';
import { createModel } from '../src/model/model.js';
import { createOptimizer, trainLoop, type BatchSource, type TrainerState } from '../src/train/trainer.js';
import { Rng } from '../src/util/rng.js';

const QUICK = process.env['MOR_BENCH_QUICK'] === '1';
const BATCH = 8;
const SEQ = 256;

function randomBatches(vocab: number, seed: number): BatchSource {
  const rng = new Rng(seed);
  return {
    next() {
      const inputs = new Int32Array(BATCH * SEQ);
      const targets = new Int32Array(BATCH * SEQ);
      for (let i = 0; i < inputs.length; i++) {
        inputs[i] = rng.nextInt(vocab);
        targets[i] = rng.nextInt(vocab);
      }
      return { inputs, targets, batchSize: BATCH, seqLen: SEQ };
    },
    getState: () => rng.state(),
  };
}

async function main(): Promise<void> {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : ['small', 'small-rec3', 'small-mor3', 'small-mor3-token', 'small-mor3-kvshare'];
  const be = getBackend();
  const peak = measureGemmPeak(be, QUICK ? 0.1 : 0.3);
  let maxRss = 0;
  for (const name of names) {
    const config = preset(name);
    const model = createModel(config, 1);
    const opt = createOptimizer(model);
    const steps = QUICK ? 3 : 8;
    const state: TrainerState = { step: 0, tokensSeen: 0, flopsSeen: 0, elapsedSeconds: 0, dataState: null, lastLoss: null };
    const timings: number[] = [];
    const flopsPerStep: number[] = [];
    await trainLoop(model, randomBatches(config.vocab_size, 7), opt, state, {
      schedule: { kind: 'constant', peakLr: 1e-3, totalSteps: steps + 1, warmupSteps: 0 },
      onMetrics: (m) => {
        if (m['type'] === 'train') {
          timings.push(m['step_ms'] as number);
          flopsPerStep.push(m['flops'] as number);
        }
        maxRss = Math.max(maxRss, process.memoryUsage().rss);
      },
    });
    // The first step warms caches and the allocator; report the median of the rest.
    const sorted = timings.slice(1).sort((a, b) => a - b);
    const stepMs = sorted[Math.floor(sorted.length / 2)] as number;
    const tokensPerS = (BATCH * SEQ) / (stepMs / 1000);
    // MFU from the FLOPs each step actually executed (MoR counts each recursion at its own size)
    const meanFlops = flopsPerStep.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, flopsPerStep.length - 1);
    const mfu = meanFlops / (stepMs / 1000) / 1e9 / peak;
    console.log(JSON.stringify({
      bench: 'train', model: name, backend: be.name, batch: BATCH, seq_len: SEQ,
      tokens_per_s: Math.round(tokensPerS), step_ms: Math.round(stepMs), mfu: Math.round(mfu * 1000) / 1000,
      peak_gflops: Math.round(peak), rss_mb: Math.round(maxRss / 2 ** 20),
      train_flops_per_token: Math.round(meanFlops / (BATCH * SEQ)),
    }));
  }
}

await main();
