/**
 * Small helpers of the data layer: canonical JSON and hashing (for cache manifests), atomic
 * writes (nothing on disk is ever half-written), and a seedable random generator whose whole
 * state is a JSON-serialisable array (so a data cursor can be saved and resumed exactly).
 */
import { createHash } from 'node:crypto';
export { writeFileAtomic } from '../util/fs.js';

/**
 * JSON with object keys sorted at every level and no whitespace: two values that are equal as
 * data give the same text whatever order their keys were written in.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(obj).sort()) {
      const v = obj[k];
      if (v !== undefined) out[k] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** Lower-case hex sha256 of a string (UTF-8) or bytes. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** 32-bit FNV-1a of a string's UTF-16 code units, mixed with a seed. Stable across runs and platforms. */
export function hashString32(s: string, seed: number): number {
  let h = (0x811c9dc5 ^ Math.imul(seed >>> 0, 0x9e3779b1)) >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // final avalanche (murmur3 fmix32) so close strings land far apart
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

export { Rng, type RngState } from '../util/rng.js';
