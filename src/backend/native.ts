/**
 * The native backend: a thin wrapper over the C++17 Node-API addon in native/ (built by
 * scripts/build-native.mjs into build/Release/mor_native.node).
 *
 * The wrapper only turns the interface's option objects into positional arguments; the addon
 * checks every buffer's type (Float32Array / Int32Array, else DtypeError) and length (ShapeError),
 * and index/target ranges (ArgumentError), so native code never reads or writes out of bounds.
 * Outputs must have exactly the length the contract gives them.
 *
 * Environment: MOR_GEMM=openblas|builtin picks the initial GEMM provider; MOR_NATIVE_ADDON=path
 * loads another build of the addon.
 *
 * Default GEMM provider: the built-in kernel where the addon was compiled for AVX-512 (there it
 * measured 1.7–1.9× Debian's OpenBLAS, whose dynamic-arch kernels stop at AVX2 on recent
 * CPUs), else OpenBLAS when linked, else built-in. A fixed rule rather than a timing at load,
 * so a run and its resumption use the same kernel and give the same numbers.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ArgumentError, BackendUnavailableError, DtypeError, ShapeError } from '../errors.js';
import type {
  AdamWArgs,
  AttentionLayout,
  Backend,
  BackendInfo,
  FloatArray,
  GemmArgs,
  DecodeLayerArgs,
  GemmProvider,
  PackedLayer,
  PackedWeight,
  PagedAttentionLayout,
  UnaryOp,
} from './backend.js';

/** The addon's exports (see native/src/addon.cc). Float buffers are checked natively. */
interface NativeBinding {
  init(shapeError: unknown, dtypeError: unknown, argumentError: unknown): void;
  info(): { simd: string; threads: number; gemmProvider: 'openblas' | 'builtin'; haveOpenBLAS: boolean };
  setGemmProvider(provider: number): boolean;
  setNumThreads(n: number): void;
  rawSgemmGflops(m: number, n: number, k: number, iterations: number): number | null;
  gemm(
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    alpha: number,
    beta: number,
    batch: number,
    strideA: number,
    strideB: number,
    strideC: number,
    a: FloatArray,
    b: FloatArray,
    c: FloatArray,
  ): void;
  packedWeightSize(n: number, k: number): number;
  decodeLayer(
    n: number,
    d: number,
    inter: number,
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    scale: number,
    blockSize: number,
    eps: number,
    ropeTheta: number,
    qPos: Int32Array,
    posPool: Int32Array,
    streams: Int32Array,
    blockTables: Int32Array,
    kvSlots: Int32Array,
    h: Float32Array,
    inputNorm: Float32Array,
    postNorm: Float32Array,
    qkv: Float32Array,
    o: Float32Array,
    gateUp: Float32Array,
    down: Float32Array,
    kPool: Float32Array,
    vPool: Float32Array,
    out: Float32Array,
  ): void;
  packWeight(n: number, k: number, w: Float32Array, dst: Float32Array): void;
  gemmPacked(m: number, n: number, k: number, a: Float32Array, packed: Float32Array, c: Float32Array, accumulate: boolean): void;
  attentionForward(
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    scale: number,
    segments: Int32Array,
    qPos: Int32Array,
    kPos: Int32Array,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
  ): void;
  attentionBackward(
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    scale: number,
    segments: Int32Array,
    qPos: Int32Array,
    kPos: Int32Array,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
    dOut: FloatArray,
    dQ: FloatArray,
    dK: FloatArray,
    dV: FloatArray,
  ): void;
  attentionPaged(
    numHeads: number,
    numKvHeads: number,
    headDim: number,
    scale: number,
    blockSize: number,
    qPos: Int32Array,
    posPool: Int32Array,
    streams: Int32Array,
    blockTables: Int32Array,
    q: FloatArray,
    kPool: FloatArray,
    vPool: FloatArray,
    out: FloatArray,
  ): void;
  rope(
    x: FloatArray,
    pos: Int32Array,
    nHeads: number,
    headDim: number,
    theta: number,
    inverse: boolean,
    out: FloatArray,
  ): void;
  rmsnormForward(x: FloatArray, w: FloatArray, eps: number, out: FloatArray, rstd: FloatArray): void;
  rmsnormBackward(x: FloatArray, w: FloatArray, rstd: FloatArray, dOut: FloatArray, dX: FloatArray, dW: FloatArray): void;
  swigluForward(gate: FloatArray, up: FloatArray, out: FloatArray): void;
  swigluBackward(gate: FloatArray, up: FloatArray, dOut: FloatArray, dGate: FloatArray, dUp: FloatArray): void;
  gatherRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void;
  scatterAddRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void;
  crossEntropyForward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    losses: FloatArray,
    lse: FloatArray,
  ): number;
  crossEntropyBackward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    lse: FloatArray,
    dLoss: FloatArray,
    dLogits: FloatArray,
  ): void;
  bceWithLogitsForward(z: FloatArray, t: FloatArray, out: FloatArray): void;
  bceWithLogitsBackward(z: FloatArray, t: FloatArray, dOut: FloatArray, dZ: FloatArray, dT: FloatArray): void;
  unary(op: number, x: FloatArray, out: FloatArray): void;
  unaryBackward(op: number, x: FloatArray, y: FloatArray, dOut: FloatArray, dX: FloatArray): void;
  softmaxRows(x: FloatArray, cols: number, out: FloatArray): void;
  softmaxRowsBackward(y: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void;
  logsumexpRows(x: FloatArray, cols: number, out: FloatArray): void;
  logsumexpRowsBackward(x: FloatArray, lse: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void;
  topkRows(x: FloatArray, cols: number, k: number, byIndex: boolean, indices: Int32Array, values: FloatArray): void;
  sum(x: FloatArray): number;
  sumSquares(x: FloatArray): number;
  sumRows(x: FloatArray, cols: number, out: FloatArray): void;
  sumCols(x: FloatArray, cols: number, out: FloatArray): void;
  scaleRows(x: FloatArray, s: FloatArray, cols: number, out: FloatArray): void;
  rowDot(a: FloatArray, b: FloatArray, cols: number, out: FloatArray): void;
  add(a: FloatArray, b: FloatArray, out: FloatArray): void;
  mul(a: FloatArray, b: FloatArray, out: FloatArray): void;
  scale(a: FloatArray, s: number, out: FloatArray): void;
  axpy(alpha: number, x: FloatArray, y: FloatArray): void;
  fill(x: FloatArray, value: number): void;
  adamwStep(
    param: FloatArray,
    grad: FloatArray,
    m: FloatArray,
    v: FloatArray,
    lr: number,
    beta1: number,
    beta2: number,
    eps: number,
    weightDecay: number,
    step: number,
  ): void;
}

const ADDON_FILE = join('build', 'Release', 'mor_native.node');

const UNARY_OPS: Readonly<Record<UnaryOp, number>> = { sigmoid: 0, tanh: 1, silu: 2, gelu: 3 };
const PROVIDER_IDS: Readonly<Record<'builtin' | 'openblas', number>> = { builtin: 0, openblas: 1 };

let binding: NativeBinding | null = null;
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
 * wake-up (~12–60 µs instead of ~2.6 µs for a 64k-element add); libgomp's default spin (300000)
 * or `active` gained nothing over 20000 but keeps a core busy longer after each kernel, which V8's
 * GC, libuv and other JS threads then wait for. (OpenBLAS runs single-threaded inside our
 * OpenMP threads, see native/src/gemm.cc, so its own pool never competes.) See native/README.md.
 */
function setRuntimeDefaults(): void {
  if (process.env['OMP_WAIT_POLICY'] === undefined && process.env['GOMP_SPINCOUNT'] === undefined) {
    process.env['GOMP_SPINCOUNT'] = '20000';
  }
}

function loadBinding(): NativeBinding {
  if (binding) return binding;
  const path = addonPath();
  if (!existsSync(path)) {
    throw new BackendUnavailableError(
      `native addon not found at ${path} (build it with \`npm run build:native\`; it needs a C++17 compiler)`,
    );
  }
  setRuntimeDefaults();
  const require = createRequire(import.meta.url);
  let raw: unknown;
  try {
    raw = require(path);
  } catch (e) {
    throw new BackendUnavailableError(`native addon at ${path} failed to load: ${(e as Error).message}`);
  }
  const b = raw as NativeBinding;
  if (typeof b.init !== 'function' || typeof b.gemm !== 'function') {
    throw new BackendUnavailableError(`native addon at ${path} is not the mor_native addon (exports missing)`);
  }
  b.init(ShapeError, DtypeError, ArgumentError);
  binding = b;
  return b;
}

class NativeBackend implements Backend {
  readonly name = 'native' as const;
  private readonly b: NativeBinding;
  private readonly providers: readonly GemmProvider[];

  constructor(b: NativeBinding) {
    this.b = b;
    this.providers = Object.freeze(
      b.info().haveOpenBLAS ? (['openblas', 'builtin'] as GemmProvider[]) : (['builtin'] as GemmProvider[]),
    );
    const want = process.env['MOR_GEMM'];
    if ((want === undefined || want === '') && b.info().simd === 'avx512') this.b.setGemmProvider(PROVIDER_IDS['builtin']);
    if (want !== undefined && want !== '') {
      if (want === 'openblas' || want === 'builtin') {
        if (this.providers.includes(want)) this.b.setGemmProvider(PROVIDER_IDS[want]);
        else process.emitWarning(`MOR_GEMM=${want}: not available in this build; using ${this.providers[0]}`);
      } else {
        process.emitWarning(`MOR_GEMM=${want}: expected 'openblas' or 'builtin'; ignored`);
      }
    }
  }

  info(): BackendInfo {
    const i = this.b.info();
    return {
      backend: 'native',
      gemmProvider: i.gemmProvider,
      gemmProviders: this.providers,
      threads: i.threads,
      simd: i.simd,
    };
  }

  setGemmProvider(provider: GemmProvider): void {
    if (!this.providers.includes(provider) || (provider !== 'openblas' && provider !== 'builtin')) {
      throw new ArgumentError(
        `native backend: GEMM provider '${String(provider)}' is not available; expected one of ${this.providers.join(', ')}`,
      );
    }
    this.b.setGemmProvider(PROVIDER_IDS[provider]);
  }

  setNumThreads(n: number): void {
    if (!Number.isInteger(n) || n < 1) {
      throw new ArgumentError(`native backend: setNumThreads expects an integer ≥ 1, got ${n}`);
    }
    this.b.setNumThreads(n);
  }

  gemm(args: GemmArgs, a: FloatArray, b: FloatArray, c: FloatArray): void {
    const { m, n, k } = args;
    this.b.gemm(
      args.transA,
      args.transB,
      m,
      n,
      k,
      args.alpha,
      args.beta,
      args.batch ?? 1,
      args.strideA ?? m * k,
      args.strideB ?? k * n,
      args.strideC ?? m * n,
      a,
      b,
      c,
    );
  }

  packWeight(w: Float32Array, n: number, k: number): PackedWeight {
    if (!Number.isInteger(n) || !Number.isInteger(k) || n < 1 || k < 1) throw new ArgumentError(`packWeight: (n, k) = (${n}, ${k}) must be positive integers`);
    if (w.length !== n * k) throw new ShapeError(`packWeight: w has ${w.length} elements, (n, k) = (${n}, ${k}) needs ${n * k}`);
    const data = new Float32Array(this.b.packedWeightSize(n, k));
    this.b.packWeight(n, k, w, data);
    return { backend: 'native', n, k, data };
  }

  gemmPacked(m: number, a: Float32Array, w: PackedWeight, c: Float32Array, accumulate: boolean): void {
    if (w.backend !== 'native') throw new ArgumentError(`gemmPacked: weight packed by the '${w.backend}' backend; repack it with 'native'`);
    this.b.gemmPacked(m, w.n, w.k, a, w.data, c, accumulate);
  }

  decodeLayer(args: DecodeLayerArgs, h: Float32Array, w: PackedLayer, kPool: Float32Array, vPool: Float32Array, out: Float32Array): void {
    const l = args.attention;
    for (const p of [w.qkv, w.o, w.gateUp, w.down]) {
      if (p.backend !== 'native') throw new ArgumentError(`decodeLayer: weight packed by the '${p.backend}' backend; repack it with 'native'`);
    }
    const d = w.inputNorm.length;
    if (w.qkv.k !== d || w.o.n !== d || w.gateUp.k !== d || w.down.n !== d || w.gateUp.n !== 2 * w.down.k || w.qkv.n !== (l.numHeads + 2 * l.numKvHeads) * l.headDim || w.o.k !== l.numHeads * l.headDim) {
      throw new ShapeError(`decodeLayer: packed weights qkv (${w.qkv.n}, ${w.qkv.k}), o (${w.o.n}, ${w.o.k}), gateUp (${w.gateUp.n}, ${w.gateUp.k}), down (${w.down.n}, ${w.down.k}) do not fit D = ${d} and the attention heads`);
    }
    if (h.length % d !== 0) throw new ShapeError(`decodeLayer: h has ${h.length} elements, not a multiple of D = ${d}`);
    this.b.decodeLayer(
      h.length / d,
      d,
      w.down.k,
      l.numHeads,
      l.numKvHeads,
      l.headDim,
      l.scale,
      l.blockSize,
      args.eps,
      args.ropeTheta,
      l.qPos,
      l.posPool,
      l.streams,
      l.blockTables,
      args.kvSlots,
      h,
      w.inputNorm,
      w.postNorm,
      w.qkv.data,
      w.o.data,
      w.gateUp.data,
      w.down.data,
      kPool,
      vPool,
      out,
    );
  }

  attentionForward(
    l: AttentionLayout,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
  ): void {
    this.b.attentionForward(l.numHeads, l.numKvHeads, l.headDim, l.scale, l.segments, l.qPos, l.kPos, q, k, v, out, lse);
  }

  attentionBackward(
    l: AttentionLayout,
    q: FloatArray,
    k: FloatArray,
    v: FloatArray,
    out: FloatArray,
    lse: FloatArray,
    dOut: FloatArray,
    dQ: FloatArray,
    dK: FloatArray,
    dV: FloatArray,
  ): void {
    this.b.attentionBackward(
      l.numHeads,
      l.numKvHeads,
      l.headDim,
      l.scale,
      l.segments,
      l.qPos,
      l.kPos,
      q,
      k,
      v,
      out,
      lse,
      dOut,
      dQ,
      dK,
      dV,
    );
  }

  attentionPaged(l: PagedAttentionLayout, q: FloatArray, kPool: FloatArray, vPool: FloatArray, out: FloatArray): void {
    this.b.attentionPaged(
      l.numHeads,
      l.numKvHeads,
      l.headDim,
      l.scale,
      l.blockSize,
      l.qPos,
      l.posPool,
      l.streams,
      l.blockTables,
      q,
      kPool,
      vPool,
      out,
    );
  }

  rope(
    x: FloatArray,
    pos: Int32Array,
    nHeads: number,
    headDim: number,
    theta: number,
    inverse: boolean,
    out: FloatArray,
  ): void {
    this.b.rope(x, pos, nHeads, headDim, theta, inverse, out);
  }

  rmsnormForward(x: FloatArray, w: FloatArray, eps: number, out: FloatArray, rstd: FloatArray): void {
    this.b.rmsnormForward(x, w, eps, out, rstd);
  }

  rmsnormBackward(
    x: FloatArray,
    w: FloatArray,
    rstd: FloatArray,
    dOut: FloatArray,
    dX: FloatArray,
    dW: FloatArray,
  ): void {
    this.b.rmsnormBackward(x, w, rstd, dOut, dX, dW);
  }

  swigluForward(gate: FloatArray, up: FloatArray, out: FloatArray): void {
    this.b.swigluForward(gate, up, out);
  }

  swigluBackward(gate: FloatArray, up: FloatArray, dOut: FloatArray, dGate: FloatArray, dUp: FloatArray): void {
    this.b.swigluBackward(gate, up, dOut, dGate, dUp);
  }

  gatherRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void {
    this.b.gatherRows(src, idx, cols, out);
  }

  scatterAddRows(src: FloatArray, idx: Int32Array, cols: number, out: FloatArray): void {
    this.b.scatterAddRows(src, idx, cols, out);
  }

  crossEntropyForward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    losses: FloatArray,
    lse: FloatArray,
  ): number {
    return this.b.crossEntropyForward(logits, targets, vocab, ignoreIndex, losses, lse);
  }

  crossEntropyBackward(
    logits: FloatArray,
    targets: Int32Array,
    vocab: number,
    ignoreIndex: number,
    lse: FloatArray,
    dLoss: FloatArray,
    dLogits: FloatArray,
  ): void {
    this.b.crossEntropyBackward(logits, targets, vocab, ignoreIndex, lse, dLoss, dLogits);
  }

  bceWithLogitsForward(z: FloatArray, t: FloatArray, out: FloatArray): void {
    this.b.bceWithLogitsForward(z, t, out);
  }

  bceWithLogitsBackward(z: FloatArray, t: FloatArray, dOut: FloatArray, dZ: FloatArray, dT: FloatArray): void {
    this.b.bceWithLogitsBackward(z, t, dOut, dZ, dT);
  }

  unary(op: UnaryOp, x: FloatArray, out: FloatArray): void {
    this.b.unary(unaryId(op), x, out);
  }

  unaryBackward(op: UnaryOp, x: FloatArray, y: FloatArray, dOut: FloatArray, dX: FloatArray): void {
    this.b.unaryBackward(unaryId(op), x, y, dOut, dX);
  }

  softmaxRows(x: FloatArray, cols: number, out: FloatArray): void {
    this.b.softmaxRows(x, cols, out);
  }

  softmaxRowsBackward(y: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void {
    this.b.softmaxRowsBackward(y, dOut, cols, dX);
  }

  logsumexpRows(x: FloatArray, cols: number, out: FloatArray): void {
    this.b.logsumexpRows(x, cols, out);
  }

  logsumexpRowsBackward(x: FloatArray, lse: FloatArray, dOut: FloatArray, cols: number, dX: FloatArray): void {
    this.b.logsumexpRowsBackward(x, lse, dOut, cols, dX);
  }

  topkRows(
    x: FloatArray,
    cols: number,
    k: number,
    order: 'value' | 'index',
    indices: Int32Array,
    values: FloatArray,
  ): void {
    if (order !== 'value' && order !== 'index') {
      throw new ArgumentError(`topkRows: order must be 'value' or 'index', got '${String(order)}'`);
    }
    this.b.topkRows(x, cols, k, order === 'index', indices, values);
  }

  sum(x: FloatArray): number {
    return this.b.sum(x);
  }

  sumSquares(x: FloatArray): number {
    return this.b.sumSquares(x);
  }

  sumRows(x: FloatArray, cols: number, out: FloatArray): void {
    this.b.sumRows(x, cols, out);
  }

  sumCols(x: FloatArray, cols: number, out: FloatArray): void {
    this.b.sumCols(x, cols, out);
  }

  add(a: FloatArray, b: FloatArray, out: FloatArray): void {
    this.b.add(a, b, out);
  }

  mul(a: FloatArray, b: FloatArray, out: FloatArray): void {
    this.b.mul(a, b, out);
  }

  scaleRows(x: FloatArray, s: FloatArray, cols: number, out: FloatArray): void {
    this.b.scaleRows(x, s, cols, out);
  }

  rowDot(a: FloatArray, b: FloatArray, cols: number, out: FloatArray): void {
    this.b.rowDot(a, b, cols, out);
  }

  scale(a: FloatArray, s: number, out: FloatArray): void {
    this.b.scale(a, s, out);
  }

  axpy(alpha: number, x: FloatArray, y: FloatArray): void {
    this.b.axpy(alpha, x, y);
  }

  fill(x: FloatArray, value: number): void {
    this.b.fill(x, value);
  }

  adamwStep(param: FloatArray, grad: FloatArray, m: FloatArray, v: FloatArray, args: AdamWArgs): void {
    this.b.adamwStep(param, grad, m, v, args.lr, args.beta1, args.beta2, args.eps, args.weightDecay, args.step);
  }
}

function unaryId(op: UnaryOp): number {
  const id = UNARY_OPS[op] as number | undefined;
  if (id === undefined) {
    throw new ArgumentError(`unary: op must be one of ${Object.keys(UNARY_OPS).join(', ')}, got '${String(op)}'`);
  }
  return id;
}

/**
 * The native backend (created once). Throws BackendUnavailableError, with the reason, when the
 * addon is missing or cannot load; nativeLoadError() then returns the same message.
 */
export function loadNativeBackend(): Backend {
  if (backend) return backend;
  try {
    backend = new NativeBackend(loadBinding());
    loadError = null;
    return backend;
  } catch (e) {
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

/**
 * GFLOP/s of cblas_sgemm called directly from C++ (C = A·B, (m, k)·(k, n), no JS in the loop),
 * averaged over `iterations` back-to-back calls after one warm-up: the yardstick for the overhead of
 * the JS-facing gemm. null when the addon is built without OpenBLAS or is unavailable.
 */
export function rawSgemmGflops(m: number, n: number, k: number, iterations: number): number | null {
  let b: NativeBinding;
  try {
    b = loadBinding();
  } catch {
    return null;
  }
  return b.rawSgemmGflops(m, n, k, iterations);
}
