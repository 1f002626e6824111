/**
 * Learning-rate schedules as small pure functions of the step (0-based, the step about to run).
 *
 *   wsd (warmup–stable–decay, the paper's main schedule):
 *       lr ▲   ______________
 *          |  /              \
 *          | /                \        linear warmup, constant, linear decay to 0
 *          |/__________________\_▶     over the last `decayFraction` of the steps
 *   cosine: linear warmup, then cosine from peak to minRatio·peak.
 */
import { ArgumentError } from '../errors.js';

export type ScheduleKind = 'wsd' | 'cosine' | 'constant';

export interface ScheduleConfig {
  readonly kind: ScheduleKind;
  readonly peakLr: number;
  readonly totalSteps: number;
  readonly warmupSteps: number;
  /** wsd: fraction of total steps spent decaying (default 0.2). */
  readonly decayFraction?: number;
  /** cosine: final lr as a fraction of the peak (default 0.1). */
  readonly minRatio?: number;
}

export function learningRate(s: ScheduleConfig, step: number): number {
  const { peakLr, totalSteps, warmupSteps } = s;
  if (totalSteps < 1) throw new ArgumentError(`schedule: totalSteps must be ≥ 1, got ${totalSteps}`);
  if (warmupSteps > 0 && step < warmupSteps) return (peakLr * (step + 1)) / warmupSteps;
  switch (s.kind) {
    case 'constant':
      return peakLr;
    case 'wsd': {
      const decaySteps = Math.max(1, Math.round(totalSteps * (s.decayFraction ?? 0.2)));
      const decayStart = totalSteps - decaySteps;
      if (step < decayStart) return peakLr;
      return peakLr * Math.max(0, (totalSteps - step) / decaySteps);
    }
    case 'cosine': {
      const minLr = peakLr * (s.minRatio ?? 0.1);
      const span = Math.max(1, totalSteps - warmupSteps);
      const progress = Math.min(1, (step - warmupSteps) / span);
      return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
    }
  }
}
