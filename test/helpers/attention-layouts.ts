/**
 * Attention layouts for the three visibility modes MoR uses (see AttentionLayout):
 *
 *   causal sequences   q and k rows are the same tokens, pos 0..T−1 per sequence
 *   causal subset      q and k rows are a selected subset, pos = original positions (gaps)
 *   separate keys      q rows are new tokens, k rows a cache of earlier positions plus the new
 *                      tokens; several segments of different lengths, one query seeing no key
 *
 * Every layout also has query and key rows outside all segments (out 0, lse −Infinity, grad 0).
 */
import type { AttentionLayout, PagedAttentionLayout } from '../../src/backend/index.js';
import type { Rng } from './rng.js';

/** One block of rows: a segment, or (outside) rows that belong to no segment. */
interface Block {
  qPos: number[];
  kPos: number[];
  outside?: boolean;
}

export interface AttentionCase {
  mode: string;
  layout: AttentionLayout;
  /** Query rows (Nq) and key rows (Nk). */
  nq: number;
  nk: number;
}

export interface Heads {
  numHeads: number;
  numKvHeads: number;
  headDim: number;
}

function buildLayout(mode: string, heads: Heads, blocks: Block[]): AttentionCase {
  const segments: number[] = [];
  const qPos: number[] = [];
  const kPos: number[] = [];
  for (const b of blocks) {
    if (!b.outside) segments.push(qPos.length, b.qPos.length, kPos.length, b.kPos.length);
    qPos.push(...b.qPos);
    kPos.push(...b.kPos);
  }
  return {
    mode,
    nq: qPos.length,
    nk: kPos.length,
    layout: {
      ...heads,
      scale: 1 / Math.sqrt(heads.headDim),
      segments: Int32Array.from(segments),
      qPos: Int32Array.from(qPos),
      kPos: Int32Array.from(kPos),
    },
  };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** `count` sorted distinct positions from 0..seqLen−1, always with gaps when count < seqLen. */
function sortedSubset(rng: Rng, seqLen: number, count: number): number[] {
  const all = range(seqLen);
  for (let i = seqLen - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, count).sort((a, b) => a - b);
}

/** Causal attention over packed sequences of the given lengths, plus one padding row. */
export function causalSequences(heads: Heads, lengths: number[]): AttentionCase {
  const blocks: Block[] = lengths.map((t) => ({ qPos: range(t), kPos: range(t) }));
  blocks.push({ qPos: [0], kPos: [0], outside: true });
  return buildLayout('causal sequences', heads, blocks);
}

/** Causal attention over a selected subset of each sequence ({seqLen, count} each). */
export function causalSubset(heads: Heads, rng: Rng, subsets: { seqLen: number; count: number }[]): AttentionCase {
  const blocks: Block[] = [{ qPos: [3], kPos: [3], outside: true }];
  for (const { seqLen, count } of subsets) {
    const pos = sortedSubset(rng, seqLen, count);
    blocks.push({ qPos: pos, kPos: pos });
  }
  return buildLayout('causal subset', heads, blocks);
}

/**
 * Queries against a separate key set:
 *   segment 0  cache at gapped positions 0..19 + 3 new tokens (20, 21, 22), queried by the new
 *   segment 1  cache 0..3 + one decoded token at 4
 *   (outside)  a query row and a key row in no segment
 *   segment 2  keys at 5, 6, 7; the query at 3 sees no key, the query at 6 sees two
 */
export function separateKeys(heads: Heads): AttentionCase {
  return buildLayout('separate keys', heads, [
    { qPos: [20, 21, 22], kPos: [0, 2, 3, 5, 8, 11, 12, 15, 19, 20, 21, 22] },
    { qPos: [4], kPos: [0, 1, 2, 3, 4] },
    { qPos: [0], kPos: [0], outside: true },
    { qPos: [3, 6], kPos: [5, 6, 7] },
  ]);
}

/**
 * Queries against keys with repeated positions (two keys per position, j → ⌊j/2⌋), two segments
 * of `numQueries` queries and numQueries + 5 keys, each followed by a query and a key row in no
 * segment. Query positions are random in [−2, numKeys/2 + 2): some see no key, some see all.
 */
export function repeatedKeyPositions(heads: Heads, rng: Rng, numQueries: number): AttentionCase {
  const blocks: Block[] = [];
  for (let s = 0; s < 2; s++) {
    const numKeys = numQueries + 5;
    const kPos = range(numKeys).map((j) => Math.floor(j / 2));
    const qPos = range(numQueries).map(() => rng.int(-2, Math.floor(numKeys / 2) + 2));
    blocks.push({ qPos, kPos }, { qPos: [0], kPos: [0], outside: true });
  }
  return buildLayout('repeated key positions', heads, blocks);
}

/**
 * Decoding shapes: few queries, many keys. Two segments, each a cache of 50 + s keys at 0..49+s
 * queried by `numNew` tokens at its last positions, except that the second segment's first query
 * sits 60 positions earlier (it sees no key); each followed by a query and a key row in no segment.
 */
export function decodeAfterCache(heads: Heads, numNew: number): AttentionCase {
  const blocks: Block[] = [];
  for (let s = 0; s < 2; s++) {
    const numKeys = 50 + s;
    const qPos = range(numNew).map((i) => numKeys - numNew + i - (i === 0 && s === 1 ? 60 : 0));
    blocks.push({ qPos, kPos: range(numKeys) }, { qPos: [0], kPos: [0], outside: true });
  }
  return buildLayout('decode after a cache', heads, blocks);
}

/** Head configurations with GQA ratios H/KVH = 1, 2 and 3 (and odd head dims). */
export const HEAD_CONFIGS: readonly Heads[] = [
  { numHeads: 2, numKvHeads: 2, headDim: 16 },
  { numHeads: 4, numKvHeads: 2, headDim: 7 },
  { numHeads: 3, numKvHeads: 1, headDim: 8 },
];

/** The kinds of decodeLayer call the fixture covers (the native kernel takes another path for each). */
export const DECODE_LAYOUT_KINDS = ['mixed', 'fresh prefill', 'no writes'] as const;
export type DecodeLayoutKind = (typeof DECODE_LAYOUT_KINDS)[number];

/**
 * The paged layout of the decodeLayer conformance cases (f32 and bf16), 5 rows over a pool of
 * `numBlocks` blocks of 4 slots.
 *
 * - `mixed`: two prompt rows of sequence A (blocks [3, 0], positions 0..7) appending at
 *   positions 6 and 7 (slots 2, 3); one row of B (block [5], positions 0..2) appending at 2
 *   (slot 22); and two rows that store nothing (kvSlots −1, as under KV sharing) reading A and B.
 * - `fresh prefill`: the five rows are a new stream's whole content (blocks [3, 5], positions
 *   0..4 at slots 12–15 and 20), written by this call: each row attends causally over the
 *   call's own K/V (the native kernel's dense path).
 * - `no writes`: the rows of `mixed`, none of which stores its k, v (the deeper recursions of a
 *   KV-sharing model: the native kernel computes their q alone).
 */
export function decodeLayerLayout(heads: Heads, numBlocks: number, kind: DecodeLayoutKind = 'mixed'): { layout: PagedAttentionLayout; kvSlots: Int32Array } {
  const BS = 4;
  const posPool = new Int32Array(numBlocks * BS).fill(99);
  const common = { numHeads: heads.numHeads, numKvHeads: heads.numKvHeads, headDim: heads.headDim, scale: 1 / Math.sqrt(heads.headDim), blockSize: BS, posPool };
  if (kind === 'fresh prefill') {
    const slots = [12, 13, 14, 15, 20];
    slots.forEach((slot, p) => (posPool[slot] = p));
    const layout: PagedAttentionLayout = { ...common, qPos: Int32Array.of(0, 1, 2, 3, 4), streams: Int32Array.of(0, 5, 0, 5, 0, 5, 0, 5, 0, 5), blockTables: Int32Array.of(3, 5) };
    return { layout, kvSlots: Int32Array.from(slots) };
  }
  [12, 13, 14, 15, 0, 1, 2, 3].forEach((slot, p) => (posPool[slot] = p));
  [20, 21, 22].forEach((slot, p) => (posPool[slot] = p));
  const layout: PagedAttentionLayout = {
    ...common,
    qPos: Int32Array.of(6, 7, 2, 7, 2),
    streams: Int32Array.of(0, 8, 0, 8, 2, 3, 0, 8, 2, 3),
    blockTables: Int32Array.of(3, 0, 5),
  };
  return { layout, kvSlots: kind === 'no writes' ? new Int32Array(5).fill(-1) : Int32Array.of(2, 3, 22, -1, -1) };
}
