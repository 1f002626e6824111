#!/usr/bin/env node
/**
 * Build-time GEMM provider detection, called from binding.gyp:
 *   node scripts/detect-blas.mjs --defines   → "MOR_HAVE_OPENBLAS" or nothing
 *   node scripts/detect-blas.mjs --cflags    → "-I<dir>" when cblas.h lives outside the default path
 *   node scripts/detect-blas.mjs --libs      → "-lopenblas" (and "-L<dir>") or nothing
 *   node scripts/detect-blas.mjs --provider  → "openblas" or "builtin" (for messages)
 *
 * OpenBLAS counts as found when a tiny program that includes <cblas.h> and calls cblas_sgemm and
 * openblas_set_num_threads compiles and links with -lopenblas, using $CXX (default c++). Without
 * it the addon uses its built-in GEMM. MOR_BLAS=none forces the built-in one; MOR_BLAS=openblas
 * skips the probe and trusts the system. Results are cached per process environment in the
 * MOR_BLAS_RESULT variable that scripts/build-native.mjs sets, so gyp's three calls probe once.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const PROBE = `#include <cblas.h>
int main() {
  float a[4] = {1, 2, 3, 4}, b[4] = {1, 0, 0, 1}, c[4] = {0, 0, 0, 0};
  openblas_set_num_threads(1);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 2, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
  return c[3] == 4.0f ? 0 : 1;
}
`;

/** Candidate (include dir, lib dir) pairs; '' means the compiler's default search path. */
function candidates() {
  const list = [['', '']];
  const extra = [
    ['/usr/include/openblas', ''],
    ['/usr/local/include', '/usr/local/lib'],
    ['/usr/local/opt/openblas/include', '/usr/local/opt/openblas/lib'],
    ['/opt/homebrew/opt/openblas/include', '/opt/homebrew/opt/openblas/lib'],
    ['/opt/OpenBLAS/include', '/opt/OpenBLAS/lib'],
  ];
  for (const [inc, lib] of extra) if (existsSync(join(inc, 'cblas.h'))) list.push([inc, lib]);
  return list;
}

/** @returns {{ provider: 'openblas' | 'builtin', cflags: string[], libs: string[] }} */
export function detectBlas(env = process.env) {
  const forced = (env['MOR_BLAS'] ?? '').toLowerCase();
  if (forced === 'none' || forced === 'builtin') return { provider: 'builtin', cflags: [], libs: [] };
  if (forced === 'openblas') return { provider: 'openblas', cflags: [], libs: ['-lopenblas'] };
  const cxx = env['CXX'] || 'c++';
  const dir = mkdtempSync(join(tmpdir(), 'mor-blas-'));
  try {
    const src = join(dir, 'probe.cc');
    const exe = join(dir, 'probe');
    writeFileSync(src, PROBE);
    for (const [inc, lib] of candidates()) {
      const cflags = inc ? [`-I${inc}`] : [];
      const libs = [...(lib ? [`-L${lib}`] : []), '-lopenblas'];
      const r = spawnSync(cxx, [...cflags, src, '-o', exe, ...libs], { stdio: 'ignore', shell: false, env });
      if (r.status !== 0) continue;
      // Run it too: a library that links but cannot load (wrong arch, missing .so at runtime) is no use.
      const run = spawnSync(exe, [], { stdio: 'ignore', env });
      if (run.status === 0) return { provider: 'openblas', cflags, libs };
    }
  } catch {
    // no compiler or no temp dir: fall through to the built-in GEMM
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return { provider: 'builtin', cflags: [], libs: [] };
}

function cached() {
  const c = process.env['MOR_BLAS_RESULT'];
  if (c) {
    try {
      return JSON.parse(c);
    } catch {
      // recompute
    }
  }
  return detectBlas();
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const what = process.argv[2] ?? '--provider';
  const r = cached();
  const out =
    what === '--defines'
      ? r.provider === 'openblas'
        ? ['MOR_HAVE_OPENBLAS']
        : []
      : what === '--cflags'
        ? r.cflags
        : what === '--libs'
          ? r.libs
          : [r.provider];
  process.stdout.write(out.join(' ') + '\n');
}
