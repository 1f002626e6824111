/**
 * Imported first by bench/serve.ts, before anything can load the native addon: the OpenMP
 * defaults with OMP_WAIT_POLICY=active (applyOpenMpDefaults). The serving benchmark runs kernels
 * in two threads at once — the engine alone in its main thread and the server's engine in a
 * worker — and without the active policy its engine-alone column ran throttled, at ~0.4×.
 */
import { applyOpenMpDefaults } from '../src/backend/native.js';

applyOpenMpDefaults({ activeWait: true });
