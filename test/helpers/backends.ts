/**
 * The backends a suite runs on: every backend that loads in this process (ref always, native
 * when its addon is built), plus the ref backend for float64 references.
 */
import { availableBackends, getBackendByName } from '../../src/backend/index.js';
import { BackendUnavailableError } from '../../src/errors.js';
import type { Backend } from '../../src/backend/index.js';

export function backendsUnderTest(): Backend[] {
  return availableBackends().map((name) => getBackendByName(name));
}

export function refBackend(): Backend {
  return getBackendByName('ref');
}

/** The native backend, or null with the reason it is unavailable. */
export function nativeBackend(): { backend: Backend | null; reason: string } {
  try {
    return { backend: getBackendByName('native'), reason: '' };
  } catch (e) {
    if (!(e instanceof BackendUnavailableError)) throw e;
    return { backend: null, reason: `native backend unavailable: ${e.message}` };
  }
}
