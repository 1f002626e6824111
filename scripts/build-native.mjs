#!/usr/bin/env node
/**
 * Builds the native kernel addon (build/Release/mor_native.node) with node-gyp.
 *
 *   node scripts/build-native.mjs            install-time: on failure print one line and exit 0,
 *                                            so the package still installs and uses the
 *                                            TypeScript backend
 *   node scripts/build-native.mjs --strict   exit non-zero on failure, with the build log
 *   --verbose (or MOR_NATIVE_VERBOSE=1)      show node-gyp's output
 *
 * Environment: MOR_SKIP_NATIVE=1 skips the build; MOR_BLAS=none builds without OpenBLAS;
 * CXX picks the compiler (node-gyp and the BLAS probe both honour it).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectBlas } from './detect-blas.mjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const strict = process.argv.includes('--strict');
const verbose = process.argv.includes('--verbose') || process.env['MOR_NATIVE_VERBOSE'] === '1';
const FALLBACK = 'the TypeScript backend will be used (much slower)';

function done(ok, line, log = '') {
  if (ok) {
    console.log(line);
    process.exit(0);
  }
  if (strict) {
    if (log && !verbose) process.stderr.write(log.slice(-8000) + '\n');
    console.error(`mor-ts: ${line}`);
    process.exit(1);
  }
  console.warn(`mor-ts: ${line}; ${FALLBACK}. Run \`npm run build:native\` for details.`);
  process.exit(0);
}

if (process.env['MOR_SKIP_NATIVE'] === '1') {
  console.log(`mor-ts: MOR_SKIP_NATIVE=1, native addon not built; ${FALLBACK}`);
  process.exit(0);
}

/** How to run node-gyp: from PATH (npm puts it there for scripts), else npm's bundled copy. */
function findNodeGyp() {
  const names = process.platform === 'win32' ? ['node-gyp.cmd', 'node-gyp.exe', 'node-gyp'] : ['node-gyp'];
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    if (!dir) continue;
    for (const n of names) if (existsSync(join(dir, n))) return { cmd: 'node-gyp', args: [], shell: true };
  }
  const guesses = [];
  const npmExec = process.env['npm_execpath'];
  if (npmExec) guesses.push(join(dirname(npmExec), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const prefix = resolve(dirname(process.execPath), '..');
  guesses.push(join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  guesses.push(join(dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  guesses.push(join(root, 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  for (const g of guesses) if (existsSync(g)) return { cmd: process.execPath, args: [g], shell: false };
  return null;
}

/** Local Node headers (so the build works offline) unless npm already passes a nodedir. */
function nodedirArgs() {
  if (process.env['npm_config_nodedir']) return [];
  const prefix = resolve(dirname(process.execPath), '..');
  if (existsSync(join(prefix, 'include', 'node', 'node_api.h')) && existsSync(join(prefix, 'include', 'node', 'common.gypi')))
    return [`--nodedir=${prefix}`];
  return [];
}

const gyp = findNodeGyp();
if (!gyp) done(false, 'native addon not built (node-gyp not found)');

const blas = detectBlas();
const env = { ...process.env, MOR_BLAS_RESULT: JSON.stringify(blas) };
const quote = (s) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, '\\$1')}"`);
const args = [...gyp.args, 'rebuild', '--jobs=max', ...nodedirArgs()];
const r = spawnSync(gyp.shell ? [gyp.cmd, ...args.map(quote)].join(' ') : gyp.cmd, gyp.shell ? [] : args, {
  cwd: root,
  env,
  shell: gyp.shell,
  encoding: 'utf8',
  stdio: verbose ? 'inherit' : 'pipe',
  maxBuffer: 64 * 1024 * 1024,
});
const log = `${r.stdout ?? ''}${r.stderr ?? ''}`;
if (r.error || r.status !== 0) {
  const why = r.error
    ? r.error.message
    : /gyp ERR! find Python|Could not find any Python/.test(log)
      ? 'node-gyp needs Python 3'
      : /gyp: Call to|gyp: .*while (loading|trying)/.test(log)
        ? 'gyp configuration failed'
        : /CXX\(target\)|g\+\+|clang|fatal error|make: \*\*\*/.test(log)
          ? `the C++ compile failed${process.env['CXX'] ? ` with CXX=${process.env['CXX']}` : ''}`
          : /spawn make ENOENT|make: not found|not found: make/.test(log)
            ? 'make not found'
            : `node-gyp exited with status ${r.status}`;
  done(false, `native addon build failed (${why})`, log);
}

// The addon must also load (a missing runtime library such as libgomp shows up only here).
const addon = join(root, 'build', 'Release', 'mor_native.node');
const probe = spawnSync(
  process.execPath,
  ['-e', `const a=require(${JSON.stringify(addon)});process.stdout.write(JSON.stringify(a.info()))`],
  { encoding: 'utf8', env },
);
if (probe.status !== 0) {
  const msg = (probe.stderr || '').split('\n').find((l) => /Error/.test(l)) ?? `status ${probe.status}`;
  done(false, `native addon built but does not load (${msg.trim()})`, probe.stderr ?? '');
}
let info = {};
try {
  info = JSON.parse(probe.stdout);
} catch {
  // keep defaults
}
const objs = existsSync(join(root, 'build', 'Release')) ? readdirSync(join(root, 'build', 'Release')) : [];
done(
  objs.includes('mor_native.node'),
  `mor-ts: native kernels built (GEMM provider: ${blas.provider === 'openblas' ? 'OpenBLAS + built-in' : 'built-in'}, ` +
    `SIMD: ${info.simd ?? '?'}, OpenMP threads: ${info.threads ?? '?'})`,
);
