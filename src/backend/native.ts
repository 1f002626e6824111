/**
 * The native backend: the C++17 Node-API addon in native/ (built by scripts/build-native.mjs into
 * build/Release/mor_native.node), bound to the Backend contract through one table.
 *
 * The contract (backend.ts) is the only place a kernel's signature is written. KERNELS below has
 * one row per kernel saying how the method reaches the addon export of the same name: either the
 * export takes the contract's arguments as they are and *is* the method, or the row turns the
 * contract's option objects into the export's positional arguments (its order is in the comment
 * above each binding in native/src/addon.cc) and makes the few checks only JS can make, through
 * the shared helpers below. The addon checks every buffer's type (Float32Array / Int32Array, else
 * DtypeError) and length (ShapeError), and index/target ranges (ArgumentError), so native code
 * never reads or writes out of bounds. Outputs must have exactly the length the contract gives them.
 *
 * Environment: MOR_GEMM=openblas|builtin picks the initial GEMM provider; MOR_SIMD=generic|avx2|
 * avx512|avx512bf16 a narrower instruction-set variant than the widest this CPU runs (the addon
 * picks that at load; native/README.md); MOR_NATIVE_ADDON=path loads another build of the addon.
 *
 * Default GEMM provider: the built-in kernel where the AVX-512 kernels run (there it
 * measured 1.7–1.9× Debian's OpenBLAS, whose dynamic-arch kernels stop at AVX2 on recent
 * CPUs), else OpenBLAS when linked, else built-in. A fixed rule rather than a timing at load,
 * so a run and its resumption use the same kernel and give the same numbers.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArgumentError, BackendUnavailableError, DtypeError, ShapeError } from '../errors.js';
import { storageDtype } from './bf16.js';
import type { Backend, BackendInfo, GemmProvider, PackedLayer, PackedWeight, PagedAttentionLayout, UnaryOp } from './backend.js';

/** The addon's exports that are not kernels (see native/src/addon.cc). */
interface AddonControl {
  init(shapeError: unknown, dtypeError: unknown, argumentError: unknown): void;
  info(): {
    simd: string;
    simdAvailable: string[];
    cpu: string;
    cpuFeatures: string;
    caches: { l1d: number; l2: number; l3: number };
    threads: number;
    gemmProvider: 'openblas' | 'builtin';
    haveOpenBLAS: boolean;
  };
  setGemmProvider(provider: number): boolean;
  setNumThreads(n: number): void;
  /** 0 switched, 1 unknown name, 2 not runnable on this CPU (see addon.cc). */
  setSimd(name: string): number;
  probeFma(threads: number, seconds: number): number;
  probeStreamRead(megabytes: number, threads: number, repeats: number): number;
  rawSgemmGflops(m: number, n: number, k: number, iterations: number): number | null;
  packedWeightSize(n: number, k: number): number;
  packedWeightSizeBf16(n: number, k: number): number;
}

/** A kernel export: positional typed arrays, numbers and booleans, checked natively. */
type Export = (...args: unknown[]) => unknown;

type KernelName = Exclude<keyof Backend, 'name' | 'info' | 'setGemmProvider' | 'setNumThreads' | 'setSimd'>;
type Kernels = Pick<Backend, KernelName>;
type Addon = AddonControl & Readonly<Record<KernelName, Export>>;

/** A row of KERNELS: DIRECT, or a function building the method once over its export f. */
const DIRECT = 'direct';
type Binding<K extends KernelName> = typeof DIRECT | ((f: Export, addon: AddonControl) => Kernels[K]);

// ---- shared checks (what the addon cannot see: option names, which backend packed a weight) ----

const UNARY_OPS: Readonly<Record<UnaryOp, number>> = { sigmoid: 0, tanh: 1, silu: 2, gelu: 3 };
const TOPK_ORDERS: Readonly<Record<'value' | 'index', number>> = { value: 0, index: 1 };
const PROVIDER_IDS: Readonly<Record<'builtin' | 'openblas', number>> = { builtin: 0, openblas: 1 };

/** The addon's id for an option value; ArgumentError naming the choices for any other. */
function optionId<T extends string>(fn: string, name: string, ids: Readonly<Record<T, number>>, value: T): number {
  if (Object.hasOwn(ids, value)) return ids[value];
  const keys = Object.keys(ids);
  const choices = keys.length === 2 ? `'${keys[0]}' or '${keys[1]}'` : `one of ${keys.join(', ')}`;
  throw new ArgumentError(`${fn}: ${name} must be ${choices}, got '${String(value)}'`);
}

/** The packed values of w (f32, or bf16 bits), which this backend must have packed. */
function packedData(fn: string, w: PackedWeight): Float32Array | Uint16Array {
  if (w.backend !== 'native') throw new ArgumentError(`${fn}: weight packed by the '${w.backend}' backend; repack it with 'native'`);
  return w.data;
}

/** D of a decoder layer's packed weights, after checking they are native and fit each other and the heads. */
function decodeLayerWidth(w: PackedLayer, l: PagedAttentionLayout): number {
  for (const p of [w.qkv, w.o, w.gateUp, w.down]) {
    packedData('decodeLayer', p);
    if (p.dtype !== w.qkv.dtype) throw new DtypeError(`decodeLayer: packed weights of dtypes ${w.qkv.dtype} and ${p.dtype}: pack all four in one dtype`);
  }
  const d = w.inputNorm.length;
  if (w.qkv.k !== d || w.o.n !== d || w.gateUp.k !== d || w.down.n !== d || w.gateUp.n !== 2 * w.down.k || w.qkv.n !== (l.numHeads + 2 * l.numKvHeads) * l.headDim || w.o.k !== l.numHeads * l.headDim) {
    throw new ShapeError(`decodeLayer: packed weights qkv (${w.qkv.n}, ${w.qkv.k}), o (${w.o.n}, ${w.o.k}), gateUp (${w.gateUp.n}, ${w.gateUp.k}), down (${w.down.n}, ${w.down.k}) do not fit D = ${d} and the attention heads`);
  }
  return d;
}

// ---- the binding table ---------------------------------------------------------------------------

const KERNELS: { readonly [K in KernelName]: Binding<K> } = {
  gemm: (f) => (g, a, b, c) =>
    f(g.transA, g.transB, g.m, g.n, g.k, g.alpha, g.beta, g.batch ?? 1, g.strideA ?? g.m * g.k, g.strideB ?? g.k * g.n, g.strideC ?? g.m * g.n, a, b, c),
  packWeight: (f, addon) => (w, n, k, dtype = 'f32') => {
    if (!Number.isInteger(n) || !Number.isInteger(k) || n < 1 || k < 1) throw new ArgumentError(`packWeight: (n, k) = (${n}, ${k}) must be positive integers`);
    if (w.length !== n * k) throw new ShapeError(`packWeight: w has ${w.length} elements, (n, k) = (${n}, ${k}) needs ${n * k}`);
    if (storageDtype('packWeight: dtype', dtype) === 'bf16') {
      const bits = new Uint16Array(addon.packedWeightSizeBf16(n, k));
      f(n, k, w, bits);
      return { backend: 'native', n, k, dtype: 'bf16', data: bits };
    }
    const data = new Float32Array(addon.packedWeightSize(n, k));
    f(n, k, w, data);
    return { backend: 'native', n, k, dtype: 'f32', data };
  },
  gemmPacked: (f) => (m, a, w, c, accumulate) => f(m, w.n, w.k, a, packedData('gemmPacked', w), c, accumulate),
  decodeLayer: (f) => (args, h, w, kPool, vPool, out) => {
    const l = args.attention;
    const d = decodeLayerWidth(w, l);
    if (h.length % d !== 0) throw new ShapeError(`decodeLayer: h has ${h.length} elements, not a multiple of D = ${d}`);
    f(h.length / d, d, w.down.k, l.numHeads, l.numKvHeads, l.headDim, l.scale, l.blockSize, args.eps, args.ropeTheta,
      l.qPos, l.posPool, l.streams, l.blockTables, args.kvSlots,
      h, w.inputNorm, w.postNorm, w.qkv.data, w.o.data, w.gateUp.data, w.down.data, kPool, vPool, out);
  },
  attentionForward: (f) => (l, q, k, v, out, lse) =>
    f(l.numHeads, l.numKvHeads, l.headDim, l.scale, l.segments, l.qPos, l.kPos, q, k, v, out, lse),
  attentionBackward: (f) => (l, q, k, v, out, lse, dOut, dQ, dK, dV) =>
    f(l.numHeads, l.numKvHeads, l.headDim, l.scale, l.segments, l.qPos, l.kPos, q, k, v, out, lse, dOut, dQ, dK, dV),
  attentionPaged: (f) => (l, q, kPool, vPool, out) =>
    f(l.numHeads, l.numKvHeads, l.headDim, l.scale, l.blockSize, l.qPos, l.posPool, l.streams, l.blockTables, q, kPool, vPool, out),
  rope: DIRECT,
  rmsnormForward: DIRECT,
  rmsnormBackward: DIRECT,
  swigluForward: DIRECT,
  swigluBackward: DIRECT,
  gatherRows: DIRECT,
  scatterAddRows: DIRECT,
  crossEntropyForward: DIRECT,
  crossEntropyBackward: DIRECT,
  bceWithLogitsForward: DIRECT,
  bceWithLogitsBackward: DIRECT,
  unary: (f) => (op, x, out) => f(optionId('unary', 'op', UNARY_OPS, op), x, out),
  unaryBackward: (f) => (op, x, y, dOut, dX) => f(optionId('unary', 'op', UNARY_OPS, op), x, y, dOut, dX),
  softmaxRows: DIRECT,
  softmaxRowsBackward: DIRECT,
  logsumexpRows: DIRECT,
  logsumexpRowsBackward: DIRECT,
  topkRows: (f) => (x, cols, k, order, indices, values) => f(x, cols, k, optionId('topkRows', 'order', TOPK_ORDERS, order), indices, values),
  sum: DIRECT,
  sumSquares: DIRECT,
  sumRows: DIRECT,
  sumCols: DIRECT,
  scaleRows: DIRECT,
  rowDot: DIRECT,
  add: DIRECT,
  mul: DIRECT,
  scale: DIRECT,
  axpy: DIRECT,
  fill: DIRECT,
  adamwStep: (f) => (param, grad, m, v, o) => f(param, grad, m, v, o.lr, o.beta1, o.beta2, o.eps, o.weightDecay, o.step),
};

/** The kernel methods, generated from KERNELS over the addon's exports. */
function bindKernels(addon: Addon, path: string): Kernels {
  const methods: Partial<Record<KernelName, unknown>> = {};
  for (const name of Object.keys(KERNELS) as KernelName[]) {
    const f = addon[name];
    if (typeof f !== 'function') throw new BackendUnavailableError(`native addon at ${path} lacks the '${name}' kernel (rebuild it with \`npm run build:native\`)`);
    const row: Binding<KernelName> = KERNELS[name];
    methods[name] = row === DIRECT ? f : row(f, addon);
  }
  return methods as Kernels;
}

const ADDON_FILE = join('build', 'Release', 'mor_native.node');

let binding: Addon | null = null;
let backend: Backend | null = null;
let loadError: string | null = null;

/**
 * Where the addon lives: MOR_NATIVE_ADDON if set, else build/Release/mor_native.node under the
 * package root, the nearest ancestor of this file holding binding.gyp (three levels up from
 * dist/src/backend/native.js, two from src/backend/native.ts).
 */
function addonPath(): string {
  const override = process.env['MOR_NATIVE_ADDON'];
  if (override !== undefined && override !== '') return override;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, 'binding.gyp'))) return join(dir, ADDON_FILE);
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', ADDON_FILE);
}

/**
 * OpenMP runtime defaults, set before the addon (and so libgomp) loads, unless the user set them.
 * Idle OpenMP workers busy-wait for GOMP_SPINCOUNT iterations before sleeping. Measured on 2
 * cores: sleeping at once (OMP_WAIT_POLICY=passive) makes every small parallel kernel pay a
 * wake-up (~12–60 µs instead of ~2.6 µs for a 64k-element add). A decoding step is a dozen
 * native calls with JavaScript between them (block tables, sampling), longer than a short spin:
 * with 20000 spins (tens of µs) the worker fell asleep between calls and every phase of every
 * layer call paid for it — batch-32 decoding of `small` ran at 1,560–1,920 tokens/s against
 * 2,130–2,340 with 2,000,000 (a few ms of spinning), in five interleaved A/B pairs; training
 * steps were the same within noise. (OpenBLAS runs single-threaded inside our OpenMP threads,
 * see native/src/gemm.cc, so its own pool never competes.) See native/README.md.
 *
 * libgomp reads these once, when the addon first loads. The loader calls this; a thread that
 * starts a worker which will load the addon calls it too, since a worker's process.env is its
 * own copy and does not reach the C environment libgomp reads (the server's engine worker ran
 * with libgomp's own spin count before). Returns false when this thread had already loaded the
 * addon (too late to change anything).
 *
 * activeWait: also OMP_WAIT_POLICY=active, for a process that runs kernels in two threads at
 * once (bench:serve: the engine alone in its main thread, the server's in a worker). Each such
 * thread has its own OpenMP team, and with more OpenMP threads than cores libgomp replaces the
 * spin count by a "throttled" 1,000 iterations unless the policy is active: single-request
 * decoding in a process whose second thread had decoded once ran at 0.4× (276–295 against
 * 695–760 tokens/s). Not the default: training ran at 0.78× with the active policy.
 */
export function applyOpenMpDefaults(opts: { activeWait?: boolean } = {}): boolean {
  if (binding !== null) return false;
  if (process.env['OMP_WAIT_POLICY'] === undefined && process.env['GOMP_SPINCOUNT'] === undefined) {
    process.env['GOMP_SPINCOUNT'] = '2000000';
    if (opts.activeWait === true) process.env['OMP_WAIT_POLICY'] = 'active';
  }
  return true;
}

function loadBinding(): Addon {
  if (binding) return binding;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new BackendUnavailableError(
      `native addon not found at ${path} (build it with \`npm run build:native\`; it needs a C++17 compiler)`,
    );
  }
  applyOpenMpDefaults();
  const require = createRequire(import.meta.url);
  let raw: unknown;
  try {
    raw = require(path);
  } catch (e) {
    throw new BackendUnavailableError(`native addon at ${path} failed to load: ${(e as Error).message}`);
  }
  const b = raw as Addon;
  if (typeof b.init !== 'function' || typeof b.gemm !== 'function') {
    throw new BackendUnavailableError(`native addon at ${path} is not the mor_native addon (exports missing)`);
  }
  b.init(ShapeError, DtypeError, ArgumentError);
  binding = b;
  return b;
}

/** The MOR_SIMD names, narrowest first (native/src/isa.cc). */
export const SIMD_VARIANTS: readonly string[] = Object.freeze(['generic', 'avx2', 'avx512', 'avx512bf16']);

/** Switch the addon's kernel variant; ArgumentError (unknown name) or BackendUnavailableError (not here). */
function switchSimd(addon: AddonControl, name: string, where: string): void {
  const status = addon.setSimd(name);
  if (status === 0) return;
  const i = addon.info();
  const offers = `this CPU (${i.cpu}) runs ${i.simdAvailable.join(', ')}`;
  if (status === 1) throw new ArgumentError(`${where}: unknown SIMD variant '${name}'; expected one of ${SIMD_VARIANTS.join(', ')} (${offers})`);
  throw new BackendUnavailableError(`${where}: SIMD variant '${name}' cannot run here: ${offers}`);
}

/** The native Backend over a loaded addon. */
function createNativeBackend(addon: Addon, path: string): Backend {
  const simd = process.env['MOR_SIMD'];
  if (simd !== undefined && simd !== '') {
    try {
      switchSimd(addon, simd, `MOR_SIMD=${simd}`);
    } catch (e) {
      // A setting the user made explicitly: an error, never a silent fall-back to the ref backend.
      throw new ArgumentError((e as Error).message);
    }
  }
  const providers: readonly GemmProvider[] = Object.freeze(
    addon.info().haveOpenBLAS ? (['openblas', 'builtin'] as GemmProvider[]) : (['builtin'] as GemmProvider[]),
  );
  const want = process.env['MOR_GEMM'];
  if ((want === undefined || want === '') && addon.info().simd.startsWith('avx512')) addon.setGemmProvider(PROVIDER_IDS['builtin']);
  if (want !== undefined && want !== '') {
    if (want === 'openblas' || want === 'builtin') {
      if (providers.includes(want)) addon.setGemmProvider(PROVIDER_IDS[want]);
      else process.emitWarning(`MOR_GEMM=${want}: not available in this build; using ${providers[0]}`);
    } else {
      process.emitWarning(`MOR_GEMM=${want}: expected 'openblas' or 'builtin'; ignored`);
    }
  }
  return {
    name: 'native',
    info(): BackendInfo {
      const i = addon.info();
      return {
        backend: 'native',
        gemmProvider: i.gemmProvider,
        gemmProviders: providers,
        threads: i.threads,
        simd: i.simd,
        simdAvailable: Object.freeze([...i.simdAvailable]),
        cpu: i.cpu,
      };
    },
    setSimd(name: string): void {
      switchSimd(addon, name, 'native backend: setSimd');
    },
    setGemmProvider(provider: GemmProvider): void {
      if (!providers.includes(provider) || (provider !== 'openblas' && provider !== 'builtin')) {
        throw new ArgumentError(
          `native backend: GEMM provider '${String(provider)}' is not available; expected one of ${providers.join(', ')}`,
        );
      }
      addon.setGemmProvider(PROVIDER_IDS[provider]);
    },
    setNumThreads(n: number): void {
      if (!Number.isInteger(n) || n < 1) {
        throw new ArgumentError(`native backend: setNumThreads expects an integer ≥ 1, got ${n}`);
      }
      addon.setNumThreads(n);
    },
    ...bindKernels(addon, path),
  };
}

/**
 * The native backend (created once). Throws BackendUnavailableError, with the reason, when the
 * addon is missing or cannot load; nativeLoadError() then returns the same message.
 */
export function loadNativeBackend(): Backend {
  if (backend) return backend;
  try {
    backend = createNativeBackend(loadBinding(), addonPath());
    loadError = null;
    return backend;
  } catch (e) {
    if (e instanceof ArgumentError) {
      // A bad setting (MOR_SIMD) is the user's to fix: raised as it is, so no caller falls back.
      loadError = e.message;
      throw e;
    }
    const err =
      e instanceof BackendUnavailableError
        ? e
        : new BackendUnavailableError(`native addon failed to initialise: ${(e as Error).message}`);
    loadError = err.message;
    throw err;
  }
}

/** Why the last loadNativeBackend() failed, or null when it has not failed. */
export function nativeLoadError(): string | null {
  return loadError;
}

/** The addon's control exports (probes, CPU description), or null when it does not load. */
function controlOrNull(): AddonControl | null {
  try {
    return loadBinding();
  } catch {
    return null;
  }
}

/**
 * GFLOP/s of `threads` threads each running independent FMA chains for `seconds`, with the vectors
 * of the kernel variant in use (the FMA-throughput ceiling of that variant); null without the addon.
 */
export function probeFmaGflops(threads: number, seconds: number): number | null {
  return controlOrNull()?.probeFma(threads, seconds) ?? null;
}

/** GB/s of a streaming read of a fresh `megabytes` buffer on `threads` threads, best of `repeats`. */
export function probeStreamReadGbps(megabytes: number, threads: number, repeats: number): number | null {
  return controlOrNull()?.probeStreamRead(megabytes, threads, repeats) ?? null;
}

/** The CPU as the addon sees it: model name, features the OS enabled, data cache sizes. */
export function nativeCpuInfo(): { cpu: string; features: string; caches: { l1d: number; l2: number; l3: number } } | null {
  const c = controlOrNull();
  if (!c) return null;
  const i = c.info();
  return { cpu: i.cpu, features: i.cpuFeatures, caches: i.caches };
}

/**
 * GFLOP/s of cblas_sgemm called directly from C++ (C = A·B, (m, k)·(k, n), no JS in the loop),
 * averaged over `iterations` back-to-back calls after one warm-up: the yardstick for the overhead of
 * the JS-facing gemm. null when the addon is built without OpenBLAS or is unavailable.
 */
export function rawSgemmGflops(m: number, n: number, k: number, iterations: number): number | null {
  return controlOrNull()?.rawSgemmGflops(m, n, k, iterations) ?? null;
}
