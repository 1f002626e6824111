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

/**
 * Every backend under test once per kernel variant it can run here: the native backend once per
 * SIMD variant this CPU runs (info().simdAvailable), with a `before` hook for the suite to switch
 * to it (and `after` to switch back); other backends once.
 */
export interface BackendVariant {
  be: Backend;
  /** e.g. 'ref', 'native [avx2]' */
  label: string;
  before: () => void;
  after: () => void;
}
export function backendVariantsUnderTest(): BackendVariant[] {
  const out: BackendVariant[] = [];
  for (const be of backendsUnderTest()) {
    const info = be.info();
    const variants = be.setSimd ? (info.simdAvailable ?? [info.simd]) : [];
    if (variants.length === 0) {
      out.push({ be, label: be.name, before: () => {}, after: () => {} });
      continue;
    }
    for (const simd of variants) {
      out.push({ be, label: `${be.name} [${simd}]`, before: () => be.setSimd?.(simd), after: () => be.setSimd?.(info.simd) });
    }
  }
  return out;
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
