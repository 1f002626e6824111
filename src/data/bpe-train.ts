/**
 * Byte-level BPE trainer that writes a Hugging Face `tokenizer.json`.
 *
 * Vocabulary layout (ids):
 *
 *   0 .. S-1          special tokens, `<|endoftext|>` first, so EOS is id 0 whatever the size
 *   S .. S+255        the 256 bytes, in GPT-2's byte order ('!' first, as GPT-2 ids 0..255)
 *   S+256 ..          one token per merge, in the order learned
 *
 * Training, as in the Hugging Face trainer but with one flat array per word:
 *   1. pre-tokenise every text with the GPT-2 pattern (special-token text is cut out first, as
 *      the encoder does) and count unique pre-tokens: word → count;
 *   2. write each unique word as a run of byte ids in one Int32Array (`sym`), and count every
 *      adjacent pair weighted by the word's count; keep pair → words where it occurs;
 *   3. repeatedly take the most frequent pair from a max-heap (lazy deletion: an entry whose
 *      count is stale is re-pushed with the live count when popped), rewrite it in place in
 *      just the words that hold it, and adjust only the neighbouring pair counts.
 *
 * Ties between equally frequent pairs go to the smaller (left id, right id), which makes the
 * result a pure function of the word counts (not of Map iteration order or timing).
 */
import { ArgumentError, DataError } from '../errors.js';
import { BYTE_ORDER, BYTE_TO_CHAR, EOS_TOKEN, gpt2Pattern } from './byte-level.js';

/** The subset of Hugging Face's tokenizer.json that this trainer writes. */
export interface BpeTokenizerJson {
  version: '1.0';
  truncation: null;
  padding: null;
  added_tokens: Array<{
    id: number;
    content: string;
    single_word: boolean;
    lstrip: boolean;
    rstrip: boolean;
    normalized: boolean;
    special: boolean;
  }>;
  normalizer: null;
  pre_tokenizer: { type: 'ByteLevel'; add_prefix_space: boolean; trim_offsets: boolean; use_regex: boolean };
  post_processor: { type: 'ByteLevel'; add_prefix_space: boolean; trim_offsets: boolean; use_regex: boolean };
  decoder: { type: 'ByteLevel'; add_prefix_space: boolean; trim_offsets: boolean; use_regex: boolean };
  model: {
    type: 'BPE';
    dropout: null;
    unk_token: null;
    continuing_subword_prefix: null;
    end_of_word_suffix: null;
    fuse_unk: boolean;
    byte_fallback: boolean;
    ignore_merges: boolean;
    vocab: Record<string, number>;
    merges: Array<[string, string]>;
  };
}

export interface BpeTrainOptions {
  /** Total vocabulary size: special tokens + 256 bytes + merges. At least specials + 256. */
  vocabSize: number;
  /** A pair seen fewer times than this is never merged (default 2). Training may then stop short. */
  minFrequency?: number;
  /** Special tokens, given ids 0.. in this order (default [`<|endoftext|>`]). */
  specialTokens?: readonly string[];
  /** trainBpe only: stop reading texts once this many characters were counted (default: read all). */
  maxChars?: number;
  /** Called every `progressEvery` merges (default 500) with (merges done, merges wanted). */
  onProgress?: (numMerges: number, numMergesWanted: number) => void;
  progressEvery?: number;
}

export interface BpeTrainResult {
  tokenizer: BpeTokenizerJson;
  /** Final vocabulary size (smaller than asked when the corpus ran out of frequent pairs). */
  vocabSize: number;
  numMerges: number;
  /** Number of unique pre-tokens (words) seen. */
  numWords: number;
  stoppedEarly: boolean;
}

/** word → count of the pre-tokens in some texts. */
export type WordCounts = Map<string, number>;

/** Split `text` around every occurrence of any special token (the specials themselves are dropped). */
export function splitOnSpecials(text: string, specials: readonly string[]): string[] {
  let parts = [text];
  for (const s of specials) {
    if (s.length === 0) continue;
    const next: string[] = [];
    for (const p of parts) for (const q of p.split(s)) if (q.length > 0) next.push(q);
    parts = next;
  }
  return parts;
}

/** Add the GPT-2 pre-tokens of `text` to `counts` (special-token text is cut out first). */
export function countPreTokens(text: string, counts: WordCounts, specials: readonly string[] = [EOS_TOKEN]): void {
  const re = gpt2Pattern();
  for (const part of splitOnSpecials(text, specials)) {
    re.lastIndex = 0;
    for (let m = re.exec(part); m !== null; m = re.exec(part)) {
      const w = m[0];
      counts.set(w, (counts.get(w) ?? 0) + 1);
    }
  }
}

/** Something that holds text: a string or a document such as a Corpus yields. */
export type TextLike = string | { text: string };

/** Train on texts: strings or documents, from any iterable or async iterable (e.g. a Corpus). */
export async function trainBpe(
  texts: Iterable<TextLike> | AsyncIterable<TextLike>,
  options: BpeTrainOptions,
): Promise<BpeTrainResult> {
  const specials = options.specialTokens ?? [EOS_TOKEN];
  const counts: WordCounts = new Map();
  const maxChars = options.maxChars ?? Infinity;
  let numTexts = 0;
  let numChars = 0;
  for await (const item of texts) {
    const t = typeof item === 'string' ? item : item.text;
    countPreTokens(t, counts, specials);
    numTexts++;
    numChars += t.length;
    if (numChars >= maxChars) break;
  }
  if (counts.size === 0) {
    throw new DataError(`BPE training needs text: got ${numTexts} text(s) with no pre-tokens`);
  }
  return trainBpeFromCounts(counts, options);
}

/** Train from pre-token counts (see countPreTokens). */
export function trainBpeFromCounts(counts: WordCounts, options: BpeTrainOptions): BpeTrainResult {
  const specials = [...(options.specialTokens ?? [EOS_TOKEN])];
  const minFrequency = options.minFrequency ?? 2;
  const vocabSize = options.vocabSize;
  const numBase = specials.length + 256;
  if (!Number.isInteger(vocabSize) || vocabSize < numBase) {
    throw new ArgumentError(`vocabSize must be an integer ≥ ${numBase} (specials + 256 bytes), got ${vocabSize}`);
  }
  if (vocabSize > 2 ** 24) throw new ArgumentError(`vocabSize must be ≤ 2^24, got ${vocabSize}`);
  if (new Set(specials).size !== specials.length || specials.some((s) => s.length === 0)) {
    throw new ArgumentError(`special tokens must be distinct and non-empty, got ${JSON.stringify(specials)}`);
  }
  if (!Number.isInteger(minFrequency) || minFrequency < 1) {
    throw new ArgumentError(`minFrequency must be an integer ≥ 1, got ${minFrequency}`);
  }

  // --- vocabulary: specials, bytes ---------------------------------------------------------
  const tokenStr: string[] = [...specials];
  const strToId = new Map<string, number>();
  specials.forEach((s, i) => strToId.set(s, i));
  const byteId = new Int32Array(256);
  for (const b of BYTE_ORDER) {
    const ch = BYTE_TO_CHAR[b]!;
    byteId[b] = tokenStr.length;
    // a special token could collide with a one-byte string; the byte keeps its own id for merges
    if (!strToId.has(ch)) strToId.set(ch, tokenStr.length);
    tokenStr.push(ch);
  }

  // --- words as runs of ids in one flat array ----------------------------------------------
  const encoder = new TextEncoder();
  const numWords = counts.size;
  const wordCount = new Float64Array(numWords);
  const wordOff = new Int32Array(numWords + 1);
  const wordLen = new Int32Array(numWords);
  const encoded: Uint8Array[] = [];
  let total = 0;
  let w = 0;
  for (const [word, c] of counts) {
    const bytes = encoder.encode(word);
    encoded.push(bytes);
    wordCount[w] = c;
    wordOff[w] = total;
    wordLen[w] = bytes.length;
    total += bytes.length;
    w++;
  }
  wordOff[numWords] = total;
  const sym = new Int32Array(total);
  for (let i = 0; i < numWords; i++) {
    const bytes = encoded[i]!;
    const off = wordOff[i]!;
    for (let j = 0; j < bytes.length; j++) sym[off + j] = byteId[bytes[j]!]!;
  }
  encoded.length = 0;

  // --- pair counts, pair → words, heap ------------------------------------------------------
  // A pair (a, b) is the key a·K + b with K = vocabSize, exact in a double for K ≤ 2^24.
  const K = vocabSize;
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  const heap = new PairHeap();
  const addWhere = (key: number, wi: number): void => {
    const list = where.get(key);
    if (list === undefined) where.set(key, [wi]);
    else if (list[list.length - 1] !== wi) list.push(wi);
  };
  for (let i = 0; i < numWords; i++) {
    const off = wordOff[i]!;
    const c = wordCount[i]!;
    for (let j = 0; j + 1 < wordLen[i]!; j++) {
      const key = sym[off + j]! * K + sym[off + j + 1]!;
      pairCount.set(key, (pairCount.get(key) ?? 0) + c);
      addWhere(key, i);
    }
  }
  for (const [key, c] of pairCount) heap.push(c, key);

  // --- merge loop ---------------------------------------------------------------------------
  const merges: Array<[string, string]> = [];
  const numMergesWanted = vocabSize - tokenStr.length;
  const progressEvery = options.progressEvery ?? 500;
  const stamp = new Int32Array(numWords).fill(-1); // last merge index that rewrote each word
  const touched = new Set<number>(); // keys whose count went up in this merge
  const bump = (key: number, delta: number): void => {
    const v = (pairCount.get(key) ?? 0) + delta;
    if (v === 0) pairCount.delete(key);
    else pairCount.set(key, v);
  };
  let stoppedEarly = false;
  while (tokenStr.length < vocabSize) {
    if (heap.size === 0) {
      stoppedEarly = true;
      break;
    }
    const count = heap.topCount();
    const key = heap.topKey();
    heap.pop();
    const live = pairCount.get(key) ?? 0;
    if (live !== count) {
      // Stale entry. A count that went up was re-pushed at the time; one that went down is re-pushed now.
      if (live > 0 && live < count) heap.push(live, key);
      continue;
    }
    if (count < minFrequency) {
      stoppedEarly = true;
      break;
    }
    const a = Math.floor(key / K);
    const b = key - a * K;
    const mergedStr = tokenStr[a]! + tokenStr[b]!;
    let c = strToId.get(mergedStr);
    if (c === undefined || c < specials.length) {
      c = tokenStr.length;
      tokenStr.push(mergedStr);
      strToId.set(mergedStr, c);
    }
    const mergeIndex = merges.length;
    merges.push([tokenStr[a]!, tokenStr[b]!]);

    const words = where.get(key) ?? [];
    where.delete(key);
    touched.clear();
    for (const wi of words) {
      if (stamp[wi] === mergeIndex) continue;
      stamp[wi] = mergeIndex;
      const off = wordOff[wi]!;
      const n = wordLen[wi]!;
      const wc = wordCount[wi]!;
      // Rewrite left to right in place (write index j ≤ read index i). The left neighbour is
      // read from the rewritten part, so "a b a b" → "c c" updates (b,a)→(c,a)→(c,c) correctly.
      let i = 0;
      let j = 0;
      while (i < n) {
        const s = sym[off + i]!;
        if (s === a && i + 1 < n && sym[off + i + 1] === b) {
          if (j > 0) {
            const p = sym[off + j - 1]!;
            bump(p * K + a, -wc);
            const nk = p * K + c;
            bump(nk, wc);
            touched.add(nk);
            addWhere(nk, wi);
          }
          if (i + 2 < n) {
            const nx = sym[off + i + 2]!;
            bump(b * K + nx, -wc);
            const nk = c * K + nx;
            bump(nk, wc);
            touched.add(nk);
            addWhere(nk, wi);
          }
          sym[off + j++] = c;
          i += 2;
        } else {
          sym[off + j++] = s;
          i++;
        }
      }
      wordLen[wi] = j;
    }
    pairCount.delete(key);
    for (const nk of touched) {
      const v = pairCount.get(nk);
      if (v !== undefined && v > 0) heap.push(v, nk);
    }
    if (options.onProgress && merges.length % progressEvery === 0) options.onProgress(merges.length, numMergesWanted);
  }
  if (options.onProgress) options.onProgress(merges.length, numMergesWanted);

  const vocab: Record<string, number> = {};
  tokenStr.forEach((t, id) => {
    if (vocab[t] === undefined) vocab[t] = id;
  });
  const tokenizer: BpeTokenizerJson = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({
      id,
      content,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  return { tokenizer, vocabSize: tokenStr.length, numMerges: merges.length, numWords, stoppedEarly };
}

/**
 * Max-heap of (count, key) in parallel arrays: larger count first, then smaller key. No
 * decrease-key: the trainer pushes again and skips stale entries when they surface.
 */
class PairHeap {
  private counts: number[] = [];
  private keys: number[] = [];

  get size(): number {
    return this.counts.length;
  }
  topCount(): number {
    return this.counts[0]!;
  }
  topKey(): number {
    return this.keys[0]!;
  }

  private before(i: number, j: number): boolean {
    const ci = this.counts[i]!;
    const cj = this.counts[j]!;
    return ci > cj || (ci === cj && this.keys[i]! < this.keys[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.counts[i]!;
    this.counts[i] = this.counts[j]!;
    this.counts[j] = c;
    const k = this.keys[i]!;
    this.keys[i] = this.keys[j]!;
    this.keys[j] = k;
  }

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): void {
    const last = this.counts.length - 1;
    this.swap(0, last);
    this.counts.pop();
    this.keys.pop();
    const n = this.counts.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < n && this.before(l, m)) m = l;
      if (r < n && this.before(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }
}
