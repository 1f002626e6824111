/** The training layer: optimiser, schedules, the loop, runs, evaluation, checkpoints (subpath `mor-ts/train`). */
export { AdamW, DEFAULT_ADAMW, clipGradNorm, optimParamsFromTable, type AdamWConfig, type OptimParam } from './optim.js';
export { learningRate, type ScheduleConfig, type ScheduleKind } from './schedule.js';
export { trainLoop, createOptimizer, type BatchSource, type TrainBatch, type TrainerState, type TrainLoopOptions, type TrainResult } from './trainer.js';
export { runTraining, prepareData, type TrainRunOptions, type TrainRunResult, type PreparedData } from './run.js';
export { resolveRunConfig, RUN_DEFAULTS, type RunConfig, type RunConfigInput, type RunBudget } from './run-config.js';
export { evaluateNll, depthSweep, type DepthSetting, type EvalResult, type SweepPoint } from './evaluate.js';
export { saveCheckpoint, loadCheckpoint, CheckpointError, type LoadedCheckpoint, type LoadOptions, type SaveOptions } from './checkpoint.js';
export { distillKl, type DistillOptions } from './distill.js';
