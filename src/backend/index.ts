/**
 * Backend selection. The native addon is preferred; when it is missing (no compiler at install
 * time) the TypeScript reference backend is used and a single warning says so.
 *
 *   MOR_BACKEND=ref|native   forces one (native fails loudly if it cannot load)
 */
import { BackendUnavailableError, ArgumentError } from '../errors.js';
import type { Backend, BackendName } from './backend.js';
import { createRefBackend } from './ref/index.js';
import { loadNativeBackend, nativeLoadError } from './native.js';

export type * from './backend.js';
export { BF16_UNIT_ROUNDOFF, STORAGE_DTYPES, bf16ToF32, f32ToBf16, fromBf16, roundToBf16, storageDtype, toBf16, type StorageDtype } from './bf16.js';

let current: Backend | null = null;
let warned = false;
const cache = new Map<BackendName, Backend>();

/** The backend with that name, created once. Throws BackendUnavailableError for native when the addon is absent. */
export function getBackendByName(name: BackendName): Backend {
  const cached = cache.get(name);
  if (cached) return cached;
  let b: Backend;
  if (name === 'ref') b = createRefBackend();
  else if (name === 'native') b = loadNativeBackend();
  else throw new ArgumentError(`unknown backend '${String(name)}': expected 'ref' or 'native'`);
  cache.set(name, b);
  return b;
}

/** Backends that can run in this process (ref always; native when its addon loads). */
export function availableBackends(): BackendName[] {
  const names: BackendName[] = ['ref'];
  try {
    getBackendByName('native');
    names.push('native');
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
  }
  return names;
}

/** The process-wide backend: set by setBackend, else MOR_BACKEND, else native if it loads, else ref. */
export function getBackend(): Backend {
  if (current) return current;
  const env = process.env['MOR_BACKEND'];
  if (env !== undefined && env !== '') {
    if (env !== 'ref' && env !== 'native') {
      throw new ArgumentError(`MOR_BACKEND='${env}': expected 'ref' or 'native'`);
    }
    current = getBackendByName(env);
    return current;
  }
  try {
    current = getBackendByName('native');
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
    if (!warned) {
      warned = true;
      process.emitWarning(
        `native backend unavailable (${nativeLoadError() ?? e.message}); using the TypeScript backend, which is much slower`,
        { code: 'MOR_NO_NATIVE' },
      );
    }
    current = getBackendByName('ref');
  }
  return current;
}

/** Choose the process-wide backend by name or instance. */
export function setBackend(b: BackendName | Backend): Backend {
  current = typeof b === 'string' ? getBackendByName(b) : b;
  return current;
}
