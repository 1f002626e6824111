// A child process for test/checkpoint-safety.test.ts: saves checkpoints of one model in a loop,
// printing "saving N" before and "saved N" after each, until it is killed. Does nothing unless
// started with --save-loop (so a test runner that loads it as a file is unaffected).
import { createModel } from '../../src/model/model.js';
import { preset } from '../../src/model/presets.js';
import { saveCheckpoint } from '../../src/train/checkpoint.js';

const [flag, dir, presetName] = process.argv.slice(2);
if (flag === '--save-loop' && dir !== undefined) {
  const model = createModel(preset(presetName ?? 'small'), 1);
  for (let step = 1; ; step++) {
    process.stdout.write(`saving ${step}\n`);
    saveCheckpoint(dir, model, { trainerState: { step } });
    process.stdout.write(`saved ${step}\n`);
  }
}
