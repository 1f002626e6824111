/**
 * Relaxed-Recursive-Transformer conversion (MOR_SPEC §8): tie a pretrained vanilla model's
 * layers into a shared recursion block, optionally relax every unrolled position with an
 * SVD-initialised LoRA, optionally add fresh MoR routers. In memory, Model → Model; loading and
 * saving are the caller's (cli/convert.ts).
 *
 *   source L = 8, middle_cycle, Nr = 3:  L − 2 = 6 middle layers, K = 2 slots
 *
 *   target position   0 | 1  2 | 3  4 | 5  6 | 7
 *   unique layer      0 | 1  2 | 1  2 | 1  2 | 3
 *   source layer      0 | 1  2 | 3  4 | 5  6 | 7      tied: slot 1 ← {1, 3, 5}, slot 2 ← {2, 4, 6}
 *
 * Slot init rules (norm scales follow the same rule):
 *   stepwise  middle layer round(linspace(0, n−1, K))[i]   (best for pure recursion)
 *   average   mean of the source layers tied into the slot (best with LoRA)
 *   lower     middle layer i (the first K)      upper   middle layer n − K + i (the last K)
 *   random    fresh normal(0, initializer_range) matrices, ones for norm scales
 * The unique first/last layers of the middle strategies, the embedding and the final norm are
 * copied.
 *
 * When the n middle layers (L, or L − 2) are not a multiple of Nr:
 *   fit 'add' (default; the paper, MOR_SPEC §2): K = ceil(n / Nr), and the K·Nr − n positions
 *     left over at the end of the recursive part are ADDED positions with no source layer.
 *     Their LoRA target is the identity layer (o_proj = down_proj = 0), so at full rank the
 *     converted model still computes the source function.
 *   fit 'drop' (the authors' code): keep floor(n / Nr)·Nr middle layers by stepwise selection
 *     and drop the rest; the source function is not recovered.
 *
 * LoRA relaxation: at unrolled position ℓ with source layer s, for each matrix W,
 *   U, S, Vᵀ = truncatedSVD(W_s' − W_shared, r),  B = U·S, A = Vᵀ,
 * where W_s' folds the norm scales: the shared slot has ONE input/post-attention norm scale g,
 * so q/k/v (and gate/up) see W_s·diag(g_s / g_shared) — the matrix that makes the shared norm
 * act like the source one. With that, rank min(in, out) reproduces the source exactly.
 * Ranks are capped at min(r, in, out) per matrix (MOR_SPEC §2, issue #11's note).
 */
import { ArgumentError } from '../errors.js';
import { DEFAULT_CONFIG, validateConfig, type ModelConfig, type SharingStrategy } from '../model/config.js';
import { layerPlan } from '../model/sharing.js';
import { createModel, type Model } from '../model/model.js';
import { LAYER_MATRICES, loraParamName, loraRankOf, matrixShape, layerParamName, type LayerMatrix } from '../model/params.js';
import type { Tensor } from '../tensor/tensor.js';
import { truncatedSvd } from './svd.js';

/** A conversion that cannot be done as asked (a usage error: the CLI exits 2). */
export class ConversionError extends ArgumentError {}

export type InitRule = 'stepwise' | 'average' | 'lower' | 'upper' | 'random';
export const INIT_RULES: readonly InitRule[] = ['stepwise', 'average', 'lower', 'upper', 'random'];
export type DepthFit = 'add' | 'drop';
export const DEPTH_FITS: readonly DepthFit[] = ['add', 'drop'];
export type MorRouting = 'expert_choice' | 'token_choice';

export interface ConvertOptions {
  /** Nr. */
  readonly numRecursions: number;
  /** Default middle_cycle (the paper's best). */
  readonly sharing?: SharingStrategy | undefined;
  /** Default: average with LoRA, stepwise without (the paper's best of each). */
  readonly init?: InitRule | undefined;
  /** Per-position LoRA rank, or 'full' (min(in, out) per matrix); undefined = no relaxation. */
  readonly loraRank?: number | 'full' | undefined;
  /** Add fresh MoR routers (MOR_SPEC §3–4) with the config defaults. */
  readonly mor?: MorRouting | undefined;
  /** Expert-choice capacities per recursion (default (Nr − r + 1)/Nr). */
  readonly capacities?: readonly number[] | undefined;
  /** Non-divisible depths: add positions (default) or drop layers. */
  readonly fit?: DepthFit | undefined;
  /** Seed of the fresh parameters (random init, routers, LoRA of rank-deficient residuals). */
  readonly seed?: number | undefined;
  /** Called with each decision worth telling the user (added/dropped layers, capped ranks). */
  readonly onLog?: ((line: string) => void) | undefined;
}

/** What a conversion does, layer by layer (pure: from the source depth and the options). */
export interface ConversionPlan {
  readonly sourceLayers: number;
  readonly targetLayers: number;
  readonly sharing: SharingStrategy;
  readonly numRecursions: number;
  /** K: slots of the shared block. */
  readonly blockSize: number;
  readonly init: InitRule;
  readonly fit: DepthFit;
  /** (targetLayers) source layer at each target position; −1 for an added position. */
  readonly sourceOf: readonly number[];
  /** (targetLayers) unique target layer at each position. */
  readonly uniqueOf: readonly number[];
  /** Per unique target layer: the source layers tied into it. */
  readonly tiedGroups: readonly (readonly number[])[];
  /** Per unique target layer: the source layers its weights are the mean of ([] = fresh init). */
  readonly initSources: readonly (readonly number[])[];
  readonly addedPositions: readonly number[];
  readonly droppedLayers: readonly number[];
  /** Human-readable decisions, also passed to onLog. */
  readonly notes: readonly string[];
}

/** numpy's round (half to even), so stepwise picks the layers the reference code picks. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** round(linspace(0, n − 1, k)) */
export function stepwiseIndices(n: number, k: number): number[] {
  if (k === 1) return [0];
  return Array.from({ length: k }, (_, i) => roundHalfEven((i * (n - 1)) / (k - 1)));
}

function checkRecursions(nr: number): void {
  if (!Number.isInteger(nr) || nr < 1) throw new ConversionError(`--recursions must be an integer ≥ 1, got ${nr}`);
}

/** The per-position LoRA rank a conversion asks for (validated); 0 = no relaxation. */
function requestedRank(source: ModelConfig, rank: number | 'full' | undefined): number {
  if (rank === undefined) return 0;
  if (rank === 'full') return Math.max(...LAYER_MATRICES.map((m) => Math.min(...matrixShape(source, m))));
  if (typeof rank !== 'number' || !Number.isInteger(rank) || rank < 1) {
    throw new ConversionError(`--lora-rank must be an integer ≥ 1 or 'full', got ${typeof rank === 'number' ? String(rank) : JSON.stringify(rank)}`);
  }
  return rank;
}

/** Plan the conversion of an L-layer model (throws ConversionError for an impossible one). */
export function planConversion(sourceLayers: number, opts: ConvertOptions): ConversionPlan {
  const nr = opts.numRecursions;
  checkRecursions(nr);
  const sharing = opts.sharing ?? 'middle_cycle';
  const fit = opts.fit ?? 'add';
  const relaxed = opts.loraRank !== undefined;
  const init = opts.init ?? (relaxed ? 'average' : 'stepwise');
  if (!INIT_RULES.includes(init)) throw new ConversionError(`--init must be one of ${INIT_RULES.join(', ')}, got ${JSON.stringify(init)}`);
  if (!DEPTH_FITS.includes(fit)) throw new ConversionError(`--fit must be one of ${DEPTH_FITS.join(', ')}, got ${JSON.stringify(fit)}`);
  const middle = sharing === 'middle_cycle' || sharing === 'middle_sequence';
  const offset = middle ? 1 : 0;
  const L = sourceLayers;
  const n = L - 2 * offset; // layers to tie
  const what = middle ? `L − 2 = ${n} middle layers (${sharing} keeps the first and last unique)` : `${n} layers`;
  if (n < nr) {
    throw new ConversionError(`more recursions than layers: ${nr} recursions need at least ${nr} layers to tie, the source has ${what}`);
  }
  const notes: string[] = [];
  let middleLayers = Array.from({ length: n }, (_, i) => offset + i);
  const droppedLayers: number[] = [];
  let added = 0;
  if (n % nr !== 0) {
    if (fit === 'add') {
      const k = Math.ceil(n / nr);
      added = k * nr - n;
      notes.push(
        `${what} are not a multiple of ${nr} recursions: adding ${added} layer position${added === 1 ? '' : 's'} ` +
          `(K = ${k} shared layers, ${k * nr + 2 * offset} effective layers, as the paper does); ` +
          `the added positions sit at the end of the recursive part and their LoRA targets the identity layer`,
      );
    } else {
      const keep = Math.floor(n / nr) * nr;
      const kept = new Set(stepwiseIndices(n, keep).map((i) => middleLayers[i] as number));
      for (const l of middleLayers) if (!kept.has(l)) droppedLayers.push(l);
      middleLayers = middleLayers.filter((l) => kept.has(l));
      notes.push(
        `${what} are not a multiple of ${nr} recursions: dropping source layer${droppedLayers.length === 1 ? '' : 's'} ` +
          `${droppedLayers.join(', ')} by stepwise selection (as the authors' code does); the source function is not recovered`,
      );
    }
  }
  const inner = middleLayers.length + added;
  const K = inner / nr;
  const targetLayers = inner + 2 * offset;
  // The model's own unrolled-position → unique-layer map (sharing.ts), at the target depth.
  const uniqueOf = Array.from(
    layerPlan({ ...DEFAULT_CONFIG, num_hidden_layers: targetLayers, recursion: { num_recursions: nr, sharing, lora_rank: 0 }, mor: null }).uniqueOf,
  );
  const sourceOf: number[] = [];
  const addedPositions: number[] = [];
  for (let p = 0; p < targetLayers; p++) {
    if (middle && p === 0) sourceOf.push(0);
    else if (middle && p === targetLayers - 1) sourceOf.push(L - 1);
    else {
      const s = middleLayers[p - offset];
      if (s === undefined) addedPositions.push(p);
      sourceOf.push(s ?? -1);
    }
  }
  const numUnique = K + 2 * offset;
  const tiedGroups: number[][] = Array.from({ length: numUnique }, () => []);
  sourceOf.forEach((s, p) => {
    if (s >= 0) (tiedGroups[uniqueOf[p] as number] as number[]).push(s);
  });
  const m = middleLayers.length;
  const step = stepwiseIndices(m, K);
  const initSources = tiedGroups.map((group, u) => {
    if (middle && (u === 0 || u === numUnique - 1)) return group; // the unique ends: copied
    const i = u - offset;
    switch (init) {
      case 'stepwise': return [middleLayers[step[i] as number] as number];
      case 'average': return group;
      case 'lower': return [middleLayers[i] as number];
      case 'upper': return [middleLayers[m - K + i] as number];
      case 'random': return [];
    }
  });
  return {
    sourceLayers: L,
    targetLayers,
    sharing,
    numRecursions: nr,
    blockSize: K,
    init,
    fit,
    sourceOf,
    uniqueOf,
    tiedGroups,
    initSources,
    addedPositions,
    droppedLayers,
    notes,
  };
}

/** The converted model's config: the source's shape at the planned depth, with recursion (and MoR). */
export function convertedConfig(source: ModelConfig, plan: ConversionPlan, opts: ConvertOptions): ModelConfig {
  const rank = requestedRank(source, opts.loraRank);
  if (opts.capacities !== undefined && opts.mor !== 'expert_choice') {
    throw new ConversionError('--capacities sets expert-choice capacities: it needs --mor expert');
  }
  const mor = opts.mor === undefined ? null : { routing: opts.mor, ...(opts.capacities !== undefined ? { capacities: opts.capacities } : {}) };
  if (mor !== null && plan.sharing !== 'cycle' && plan.sharing !== 'middle_cycle') {
    throw new ConversionError(`--mor needs cycle or middle_cycle sharing (a block applied once per recursion), got ${plan.sharing}`);
  }
  return validateConfig({
    ...source,
    num_hidden_layers: plan.targetLayers,
    recursion: { num_recursions: plan.numRecursions, sharing: plan.sharing, lora_rank: rank },
    mor,
  });
}

/** Matrices that read a normalised input, and the norm they read. */
const NORM_OF: Readonly<Partial<Record<LayerMatrix, 'input_layernorm' | 'post_attention_layernorm'>>> = {
  q_proj: 'input_layernorm',
  k_proj: 'input_layernorm',
  v_proj: 'input_layernorm',
  gate_proj: 'post_attention_layernorm',
  up_proj: 'post_attention_layernorm',
};

function normName(u: number, which: 'input_layernorm' | 'post_attention_layernorm'): string {
  return `model.layers.${u}.${which}.weight`;
}

function tensorOf(byName: ReadonlyMap<string, Tensor>, name: string): Float32Array {
  const t = byName.get(name);
  if (t === undefined) throw new ConversionError(`conversion: parameter '${name}' is missing`);
  return t.f32(name);
}

/** Overwrite `dst` with the mean of `srcs`. */
function meanInto(dst: Float32Array, srcs: readonly Float32Array[]): void {
  for (let i = 0; i < dst.length; i++) {
    let acc = 0;
    for (const s of srcs) acc += s[i] as number;
    dst[i] = acc / srcs.length;
  }
}

/**
 * The LoRA target residual at one position, float64 (out, in): W_s' − W_shared, with the source
 * norm scale folded in (see the file comment); an added position targets the identity layer.
 */
function loraResidual(
  shared: Float32Array,
  source: Float32Array | null,
  m: LayerMatrix,
  out: number,
  inp: number,
  normRatio: Float64Array | null,
): Float64Array {
  const delta = new Float64Array(out * inp);
  if (source === null) {
    // identity layer: o_proj and down_proj write nothing; the rest are the shared ones
    if (m === 'o_proj' || m === 'down_proj') for (let i = 0; i < delta.length; i++) delta[i] = -(shared[i] as number);
    return delta;
  }
  for (let o = 0; o < out; o++) {
    for (let j = 0; j < inp; j++) {
      const idx = o * inp + j;
      delta[idx] = (source[idx] as number) * (normRatio ? (normRatio[j] as number) : 1) - (shared[idx] as number);
    }
  }
  return delta;
}

/** Tie, relax and route: the converted model (see the file comment). */
export function convertModel(source: Model, opts: ConvertOptions): Model {
  const sc = source.config;
  if (sc.recursion !== null || sc.mor !== null) {
    throw new ConversionError(
      `the source must be a vanilla model (no recursion or mor section); this one has ${sc.recursion ? `${sc.recursion.sharing} sharing with ${sc.recursion.num_recursions} recursions` : 'a mor section'}`,
    );
  }
  if (sc.moe !== null) {
    throw new ConversionError('the source must have dense MLPs: layer tying and the SVD relaxation work on gate/up/down, which a moe section replaces by experts');
  }
  const log = opts.onLog ?? (() => {});
  checkRecursions(opts.numRecursions);
  requestedRank(sc, opts.loraRank);
  const plan = planConversion(sc.num_hidden_layers, opts);
  const config = convertedConfig(sc, plan, opts);
  for (const note of plan.notes) log(note);
  const rank = config.recursion?.lora_rank ?? 0;
  if (rank > 0) {
    const capped = LAYER_MATRICES.filter((m) => loraRankOf(config, m) < rank).map((m) => `${m} ${loraRankOf(config, m)}`);
    const asked = opts.loraRank === 'full' ? 'full rank' : `rank ${rank}`;
    log(`LoRA ${asked} at each of ${plan.targetLayers} positions${capped.length ? `; capped at min(r, in, out) per matrix: ${capped.join(', ')}` : ''}`);
  }

  const seed = opts.seed ?? 0;
  const model = createModel(config, seed); // fresh: random slots, routers, LoRA pairs
  const src = source.params.byName;
  const dst = model.params.byName;
  const copy = (name: string, from = name): void => tensorOf(dst, name).set(tensorOf(src, from));
  copy('model.embed_tokens.weight');
  copy('model.norm.weight');
  const paramNames = (u: number): string[] => [
    normName(u, 'input_layernorm'),
    normName(u, 'post_attention_layernorm'),
    ...LAYER_MATRICES.map((m) => layerParamName(u, m)),
  ];
  plan.initSources.forEach((sources, u) => {
    if (sources.length === 0) return;
    const srcNames = sources.map((s) => paramNames(s));
    paramNames(u).forEach((name, k) => meanInto(tensorOf(dst, name), srcNames.map((names) => tensorOf(src, names[k] as string))));
  });
  log(
    `${plan.init} init: ${plan.initSources
      .map((s, u) => `unique layer ${u} ← ${s.length === 0 ? 'fresh' : s.length === 1 ? `layer ${s[0]}` : `mean of layers ${s.join(', ')}`}`)
      .join('; ')}`,
  );

  if (rank > 0) {
    let unfolded = 0;
    for (let p = 0; p < plan.targetLayers; p++) {
      const u = plan.uniqueOf[p] as number;
      const s = plan.sourceOf[p] as number;
      for (const m of LAYER_MATRICES) {
        const [out, inp] = matrixShape(config, m);
        const r = loraRankOf(config, m);
        const shared = tensorOf(dst, layerParamName(u, m));
        const norm = NORM_OF[m];
        let ratio: Float64Array | null = null;
        if (s >= 0 && norm !== undefined) {
          const gs = tensorOf(src, normName(s, norm));
          const gu = tensorOf(dst, normName(u, norm));
          if (gu.some((g) => g === 0)) unfolded++;
          else ratio = Float64Array.from(gs, (g, j) => g / (gu[j] as number));
        }
        const delta = loraResidual(shared, s >= 0 ? tensorOf(src, layerParamName(s, m)) : null, m, out, inp, ratio);
        const svd = truncatedSvd(delta, out, inp, r, seed + 7919 * p + LAYER_MATRICES.indexOf(m));
        const A = tensorOf(dst, loraParamName(p, m, 'A')); //  (r, in) = Vᵀ
        const B = tensorOf(dst, loraParamName(p, m, 'B')); //  (out, r) = U·S
        A.set(svd.vt);
        for (let o = 0; o < out; o++) for (let k = 0; k < r; k++) B[o * r + k] = (svd.u[o * r + k] as number) * (svd.s[k] as number);
      }
    }
    if (unfolded > 0) log(`${unfolded} matrices read a shared norm scale with zeros: their source norm scale could not be folded into the LoRA residual`);
  }
  return model;
}
