/**
 * Instruction-set variants of the native kernels (native/src/isa.h): what info() reports, switching
 * with setSimd, MOR_SIMD at load (a fresh process each), and the typed errors for a name that is
 * unknown or that this CPU cannot run. The kernels themselves are checked on every variant by the
 * conformance suite. Skipped when the addon is not built.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { SIMD_VARIANTS } from '../src/backend/native.js';
import type { Backend } from '../src/backend/backend.js';
import { ArgumentError, BackendUnavailableError } from '../src/errors.js';
import { nativeBackend } from './helpers/backends.js';

const { backend: native, reason } = nativeBackend();
const skip = native === null ? reason : false;
const BIN = fileURLToPath(new URL('../src/cli/bin.js', import.meta.url));
const NATIVE = new URL('../src/backend/native.js', import.meta.url).href;

/** Runs `code` (an ES module body) in a fresh node with MOR_SIMD set; stdout, stderr, status. */
function withMorSimd(simd: string, code: string): { out: string; err: string; status: number | null } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, MOR_SIMD: simd },
  });
  return { out: r.stdout, err: r.stderr, status: r.status };
}

describe('native SIMD variants', { skip }, () => {
  const be = (): Backend => native!;

  test('info names the variant in use, the variants this CPU runs and the CPU', () => {
    const i = be().info();
    const avail = i.simdAvailable ?? [];
    assert.ok(avail.includes('generic'), `generic is always available: ${avail.join(', ')}`);
    for (const s of avail) assert.ok(SIMD_VARIANTS.includes(s), `known name: ${s}`);
    assert.ok(avail.includes(i.simd), `${i.simd} in ${avail.join(', ')}`);
    if (!process.env['MOR_SIMD']) assert.equal(i.simd, avail[avail.length - 1], 'the widest is chosen at load');
    assert.equal(typeof i.cpu, 'string');
    assert.ok((i.cpu ?? '').length > 0);
  });

  test('setSimd switches to every variant the CPU runs and back', () => {
    const i = be().info();
    try {
      for (const s of i.simdAvailable ?? []) {
        be().setSimd!(s);
        assert.equal(be().info().simd, s);
      }
    } finally {
      be().setSimd!(i.simd);
    }
    assert.equal(be().info().simd, i.simd);
  });

  test('setSimd: unknown name is an ArgumentError, a variant the CPU lacks a BackendUnavailableError', () => {
    const i = be().info();
    assert.throws(() => be().setSimd!('avx1024'), (e: unknown) => e instanceof ArgumentError && /avx1024/.test(e.message) && /generic/.test(e.message));
    for (const s of SIMD_VARIANTS.filter((v) => !(i.simdAvailable ?? []).includes(v))) {
      assert.throws(() => be().setSimd!(s), (e: unknown) => e instanceof BackendUnavailableError && e.message.includes(s) && e.message.includes('runs'));
    }
    assert.equal(be().info().simd, i.simd, 'a failed switch leaves the variant as it was');
  });

  test('a weight packed under one variant multiplies the same under every other', () => {
    const i = be().info();
    const [m, n, k] = [5, 45, 37];
    const w = Float32Array.from({ length: n * k }, (_, j) => Math.sin(j));
    const a = Float32Array.from({ length: m * k }, (_, j) => Math.cos(j));
    const packed = be().packWeight(w, n, k);
    const results: Float32Array[] = [];
    try {
      for (const s of i.simdAvailable ?? []) {
        be().setSimd!(s);
        const c = new Float32Array(m * n);
        be().gemmPacked(m, a, packed, c, false);
        results.push(c);
      }
    } finally {
      be().setSimd!(i.simd);
    }
    for (let r = 0; r < m; r++)
      for (let j = 0; j < n; j++) {
        let want = 0;
        for (let p = 0; p < k; p++) want += a[r * k + p]! * w[j * k + p]!;
        for (const c of results) assert.ok(Math.abs(c[r * n + j]! - want) < 1e-4, `(${r}, ${j}): ${c[r * n + j]} vs ${want}`);
      }
  });

  test('MOR_SIMD picks the variant at load', () => {
    const r = withMorSimd('generic', `const m = await import(${JSON.stringify(NATIVE)}); console.log(m.loadNativeBackend().info().simd);`);
    assert.equal(r.status, 0, r.err);
    assert.equal(r.out.trim(), 'generic');
  });

  test('MOR_SIMD with an unknown name: ArgumentError naming what the CPU runs, and `mor info` fails', () => {
    const r = withMorSimd('sse9', `const m = await import(${JSON.stringify(NATIVE)}); try { m.loadNativeBackend(); } catch (e) { console.log(e.constructor.name + ': ' + e.message); }`);
    assert.equal(r.status, 0, r.err);
    assert.match(r.out, /^ArgumentError: MOR_SIMD=sse9: unknown SIMD variant 'sse9'.*runs generic/);
    const cli = spawnSync(process.execPath, [BIN, 'info'], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MOR_SIMD: 'sse9' } });
    assert.notEqual(cli.status, 0);
    assert.match(cli.stderr, /MOR_SIMD=sse9/);
  });

  test('MOR_SIMD naming a variant this CPU cannot run is an ArgumentError (no silent fallback)', (t) => {
    const missing = SIMD_VARIANTS.filter((v) => !(be().info().simdAvailable ?? []).includes(v));
    if (missing.length === 0) {
      t.skip('this CPU runs every variant');
      return;
    }
    const r = withMorSimd(missing[0]!, `const m = await import(${JSON.stringify(NATIVE)}); try { m.loadNativeBackend(); } catch (e) { console.log(e.constructor.name + ': ' + e.message); }`);
    assert.match(r.out, new RegExp(`^ArgumentError: MOR_SIMD=${missing[0]}: .*cannot run here`));
  });
});
