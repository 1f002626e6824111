/**
 * A fast encoder for byte-level BPE tokenizer.json files, giving the same ids as
 * @huggingface/tokenizers.
 *
 * Why it exists: the library encodes the whole default corpus at about 1.6–1.9 MB/s on the 2-core
 * development machine (it keys merge ranks by JSON.stringify of string pairs, rebuilds every
 * pre-token's byte string, and keeps only a 10k-entry LRU cache). Token caches are built once
 * per corpus, but a FineWeb-Edu shard is gigabytes, so this path matters (this one: ~25 MB/s).
 * Here:
 *   - merges are keyed by integer symbol pairs, and a pre-token is merged as an array of ints;
 *   - every pre-token's ids are cached (keyed by the raw text for plain ByteLevel, so a cache
 *     hit skips the UTF-8 and byte-string work too);
 *   - short pre-tokens merge with a linear scan, long ones with a heap (no O(n²) blow-up).
 * The merge order is the library's: lowest rank first, leftmost on ties. test/data-tokenizer
 * checks the ids equal the library's on corpus text and on random Unicode.
 *
 * It only takes tokenizers whose every step it reproduces exactly (see `tryCreate`): no
 * normalizer, a pre-tokenizer that ends in ByteLevel, a BPE model without suffixes, dropout
 * or byte fallback. Anything else is left to the library.
 */
import { BYTE_TO_CHAR, GPT2_PATTERN_SOURCE } from './byte-level.js';

/** The library's pre-tokenizer, used for non-plain ByteLevel set-ups (Split + ByteLevel, Digits, …). */
export type PreTokenizeFn = (text: string, options: { section_index: number }) => string[];

interface AddedTokenSpec {
  id: number;
  content: string;
  lstrip: boolean;
  rstrip: boolean;
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

const MAX_CACHE_ENTRIES = 1 << 17;
const MAX_CACHED_PIECE = 256;
const SCAN_LIMIT = 48; // longer pre-tokens merge with the heap

export class FastByteLevelBpe {
  /** symbol id of each merge's result, by rank */
  private readonly mergeResult: Int32Array;
  /** pair key (left · SYM_STRIDE + right) → rank */
  private readonly pairRank: Map<number, number>;
  /** output id of each symbol, -1 when the symbol's string is not in the vocabulary */
  private readonly symOut: Int32Array;
  /** symbol of each single UTF-16 char (BMP), -1 unknown */
  private readonly charSym: Int32Array;
  /** symbol of each byte (through its byte-level character) */
  private readonly byteSym: Int32Array;
  private readonly astralSym = new Map<string, number>();
  private readonly idOf: Map<string, number>;
  private readonly unkId: number; // -1: unknown pieces are dropped, as the library does
  private readonly ignoreMerges: boolean;
  private readonly addPrefixSpace: boolean;
  private readonly pattern: RegExp | null; // plain ByteLevel: the GPT-2 pattern; else null
  private readonly preTokenize: PreTokenizeFn | null;
  private readonly added: Map<string, AddedTokenSpec>;
  private readonly trie: TrieNode;
  private readonly cache = new Map<string, Int32Array>();
  private readonly encoder = new TextEncoder();
  private bytes = new Uint8Array(1024);
  private syms = new Int32Array(1024);
  private out = new Int32Array(4096);
  private outLen = 0;

  private constructor(json: Json, preTokenize: PreTokenizeFn | null, plain: boolean, addPrefixSpace: boolean) {
    const model = json['model'] as Json;
    const vocab = model['vocab'] as Record<string, number>;
    const addedList = (json['added_tokens'] as Json[] | undefined) ?? [];
    this.idOf = new Map(Object.entries(vocab));
    this.added = new Map();
    for (const t of addedList) {
      const spec: AddedTokenSpec = {
        id: t['id'] as number,
        content: t['content'] as string,
        lstrip: t['lstrip'] === true,
        rstrip: t['rstrip'] === true,
      };
      this.idOf.set(spec.content, spec.id);
      this.added.set(spec.content, spec);
    }
    this.trie = buildTrie([...this.added.keys()]);
    const unk = model['unk_token'];
    this.unkId = typeof unk === 'string' ? this.idOf.get(unk) ?? -1 : -1;
    this.ignoreMerges = model['ignore_merges'] === true;
    this.addPrefixSpace = addPrefixSpace;
    this.pattern = plain ? new RegExp(GPT2_PATTERN_SOURCE, 'gu') : null;
    this.preTokenize = preTokenize;

    // Symbols: every string a merge mentions, plus every vocabulary string.
    const symOf = new Map<string, number>();
    const symOutList: number[] = [];
    const sym = (s: string): number => {
      let id = symOf.get(s);
      if (id === undefined) {
        id = symOutList.length;
        symOf.set(s, id);
        symOutList.push(this.idOf.get(s) ?? -1);
      }
      return id;
    };
    for (const s of this.idOf.keys()) sym(s);
    const merges = model['merges'] as Array<string | [string, string]>;
    const pairs: Array<[number, number, number]> = [];
    for (const m of merges) {
      const [a, b] = typeof m === 'string' ? splitMerge(m) : m;
      pairs.push([sym(a), sym(b), sym(a + b)]);
    }
    this.pairRank = new Map();
    this.mergeResult = new Int32Array(pairs.length);
    pairs.forEach(([a, b, c], rank) => {
      this.pairRank.set(a * SYM_STRIDE + b, rank); // a later duplicate wins, as in the library's Map
      this.mergeResult[rank] = c;
    });
    this.symOut = Int32Array.from(symOutList);
    this.charSym = new Int32Array(65536).fill(-1);
    for (const [s, id] of symOf) {
      if (s.length === 1) this.charSym[s.charCodeAt(0)] = id;
      else if (s.length === 2 && s.codePointAt(0)! > 0xffff) this.astralSym.set(s, id);
    }
    this.byteSym = new Int32Array(256).fill(-1);
    for (let b = 0; b < 256; b++) this.byteSym[b] = this.charSym[BYTE_TO_CHAR[b]!.charCodeAt(0)]!;
    if (symOutList.length >= SYM_STRIDE) throw new RangeError('too many BPE symbols for the fast encoder');
  }

  /**
   * A fast encoder for this tokenizer.json, or null when it has a step this encoder does not
   * reproduce exactly. `libPreTokenize` is the library's own pre-tokenizer (used unless the
   * pre-tokenizer is plain ByteLevel); `config` is tokenizer_config.json.
   */
  static tryCreate(json: unknown, config: Json, libPreTokenize: PreTokenizeFn | null): FastByteLevelBpe | null {
    if (!isObj(json)) return null;
    const model = json['model'];
    if (!isObj(model) || model['type'] !== 'BPE' || !isObj(model['vocab']) || !Array.isArray(model['merges'])) return null;
    if (model['dropout'] != null && model['dropout'] !== 0) return null;
    if (model['end_of_word_suffix'] || model['continuing_subword_suffix'] || model['byte_fallback'] === true) return null;
    if (typeof model['unk_token'] === 'string') {
      const vocab = model['vocab'] as Json;
      const added = (json['added_tokens'] as Json[] | undefined) ?? [];
      if (!(model['unk_token'] in vocab) && !added.some((t) => t['content'] === model['unk_token'])) return null;
    }
    if (json['normalizer'] != null) return null;
    if (config['remove_space'] === true || config['do_lowercase_and_remove_accent'] === true) return null;
    if (!supportedPostProcessor(json['post_processor'])) return null;
    const added = json['added_tokens'];
    if (added !== undefined && !Array.isArray(added)) return null;
    for (const t of (added as unknown[] | undefined) ?? []) {
      if (!isObj(t) || typeof t['id'] !== 'number' || typeof t['content'] !== 'string' || t['content'] === '') return null;
    }
    for (const m of model['merges'] as unknown[]) {
      if (typeof m === 'string' ? !m.includes(' ') : !(Array.isArray(m) && m.length === 2)) return null;
    }
    const pre = json['pre_tokenizer'];
    if (!isObj(pre)) return null;
    if (pre['type'] === 'ByteLevel') {
      if (pre['use_regex'] === false) {
        return libPreTokenize ? new FastByteLevelBpe(json, libPreTokenize, false, false) : null;
      }
      return new FastByteLevelBpe(json, null, true, pre['add_prefix_space'] === true);
    }
    if (pre['type'] === 'Sequence' && Array.isArray(pre['pretokenizers']) && libPreTokenize) {
      const last = (pre['pretokenizers'] as unknown[]).at(-1);
      if (isObj(last) && last['type'] === 'ByteLevel') return new FastByteLevelBpe(json, libPreTokenize, false, false);
    }
    return null;
  }

  /** Token ids of `text`, special-token text included (as the library does). */
  encode(text: string): Int32Array {
    this.outLen = 0;
    const sections = this.added.size > 0 ? splitAdded(text, this.trie) : [text];
    if (this.added.size > 0) {
      for (let i = 0; i < sections.length; i++) {
        const tok = this.added.get(sections[i]!);
        if (tok === undefined) continue;
        if (tok.lstrip && i > 0) sections[i - 1] = sections[i - 1]!.trimEnd();
        if (tok.rstrip && i < sections.length - 1) sections[i + 1] = sections[i + 1]!.trimStart();
      }
    }
    for (let si = 0; si < sections.length; si++) {
      let section = sections[si]!;
      if (section.length === 0) continue;
      const tok = this.added.get(section);
      if (tok !== undefined) {
        this.emit(tok.id);
        continue;
      }
      if (this.pattern !== null) {
        if (this.addPrefixSpace && !section.startsWith(' ')) section = ' ' + section;
        const re = this.pattern;
        re.lastIndex = 0;
        for (let m = re.exec(section); m !== null; m = re.exec(section)) this.encodeRawPiece(m[0]);
      } else {
        for (const piece of this.preTokenize!(section, { section_index: si })) this.encodeByteLevelPiece(piece);
      }
    }
    return this.out.slice(0, this.outLen);
  }

  private emit(id: number): void {
    if (this.outLen === this.out.length) {
      const bigger = new Int32Array(this.out.length * 2);
      bigger.set(this.out);
      this.out = bigger;
    }
    this.out[this.outLen++] = id;
  }

  private emitAll(ids: Int32Array): void {
    for (let i = 0; i < ids.length; i++) this.emit(ids[i]!);
  }

  private remember(key: string, ids: Int32Array): void {
    if (key.length > MAX_CACHED_PIECE) return;
    if (this.cache.size >= MAX_CACHE_ENTRIES) this.cache.clear();
    this.cache.set(key, ids);
  }

  /** A raw-text pre-token (plain ByteLevel): UTF-8 bytes → byte symbols → merges. */
  private encodeRawPiece(piece: string): void {
    const hit = this.cache.get(piece);
    if (hit !== undefined) return this.emitAll(hit);
    if (this.bytes.length < piece.length * 3) this.bytes = new Uint8Array(piece.length * 3);
    const n = this.encoder.encodeInto(piece, this.bytes).written;
    let ids: Int32Array;
    if (this.ignoreMerges) {
      let s = '';
      for (let i = 0; i < n; i++) s += BYTE_TO_CHAR[this.bytes[i]!]!;
      const whole = this.idOf.get(s);
      if (whole !== undefined) {
        ids = Int32Array.of(whole);
        this.remember(piece, ids);
        return this.emitAll(ids);
      }
    }
    const syms = this.symScratch(n);
    for (let i = 0; i < n; i++) syms[i] = this.byteSym[this.bytes[i]!]!;
    ids = this.mergeAndMap(syms, n);
    this.remember(piece, ids);
    this.emitAll(ids);
  }

  /** A byte-level string from the library's pre-tokenizer: characters → symbols → merges. */
  private encodeByteLevelPiece(piece: string): void {
    if (piece.length === 0) return;
    const hit = this.cache.get(piece);
    if (hit !== undefined) return this.emitAll(hit);
    let ids: Int32Array;
    const whole = this.ignoreMerges ? this.idOf.get(piece) : undefined;
    if (whole !== undefined) {
      ids = Int32Array.of(whole);
    } else {
      const syms = this.symScratch(piece.length);
      let n = 0;
      for (const ch of piece) {
        const s = ch.length === 1 ? this.charSym[ch.charCodeAt(0)]! : this.astralSym.get(ch) ?? -1;
        syms[n++] = s;
      }
      ids = this.mergeAndMap(syms, n);
    }
    this.remember(piece, ids);
    this.emitAll(ids);
  }

  private symScratch(n: number): Int32Array {
    if (this.syms.length < n) this.syms = new Int32Array(n * 2);
    return this.syms;
  }

  private rankOf(a: number, b: number): number {
    if (a < 0 || b < 0) return -1;
    const r = this.pairRank.get(a * SYM_STRIDE + b);
    return r === undefined ? -1 : r;
  }

  /** Merge syms[0..n) in place and map the result to output ids (dropping or unk-ing unknowns). */
  private mergeAndMap(syms: Int32Array, n0: number): Int32Array {
    const n = n0 <= SCAN_LIMIT ? this.mergeScan(syms, n0) : this.mergeHeap(syms, n0);
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      const s = syms[i]!;
      const id = s >= 0 ? this.symOut[s]! : -1;
      if (id >= 0) ids.push(id);
      else if (this.unkId >= 0) ids.push(this.unkId);
    }
    return Int32Array.from(ids);
  }

  /** O(n²) merging for short pre-tokens: lowest rank first, leftmost on ties. Returns the new length. */
  private mergeScan(syms: Int32Array, n: number): number {
    for (;;) {
      let best = -1;
      let bestAt = -1;
      for (let i = 0; i + 1 < n; i++) {
        const r = this.rankOf(syms[i]!, syms[i + 1]!);
        if (r >= 0 && (best < 0 || r < best)) {
          best = r;
          bestAt = i;
        }
      }
      if (best < 0) return n;
      syms[bestAt] = this.mergeResult[best]!;
      syms.copyWithin(bestAt + 1, bestAt + 2, n);
      n--;
    }
  }

  /**
   * Heap merging for long pre-tokens. Entries are rank·2^26 + position (smaller first, so the
   * leftmost wins a tie); an entry is stale when the pair now at its position has another rank.
   */
  private mergeHeap(syms: Int32Array, n: number): number {
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap();
    const POS = 2 ** 26;
    for (let i = 0; i + 1 < n; i++) {
      const r = this.rankOf(syms[i]!, syms[i + 1]!);
      if (r >= 0) heap.push(r * POS + i);
    }
    while (heap.size > 0) {
      const top = heap.pop();
      const r = Math.floor(top / POS);
      const i = top - r * POS;
      const j = next[i]!;
      if (syms[i]! < -1 || j < 0 || this.rankOf(syms[i]!, syms[j]!) !== r) continue;
      syms[i] = this.mergeResult[r]!;
      syms[j] = -2; // dead
      const k = next[j]!;
      next[i] = k;
      if (k >= 0) prev[k] = i;
      const p = prev[i]!;
      if (p >= 0) {
        const rp = this.rankOf(syms[p]!, syms[i]!);
        if (rp >= 0) heap.push(rp * POS + p);
      }
      if (k >= 0) {
        const rk = this.rankOf(syms[i]!, syms[k]!);
        if (rk >= 0) heap.push(rk * POS + i);
      }
    }
    let m = 0;
    for (let i = 0; i >= 0 && i < n; i = next[i]!) syms[m++] = syms[i]!;
    return m;
  }
}

/** Symbol pair keys are left · SYM_STRIDE + right (exact in a double). */
const SYM_STRIDE = 2 ** 26;

function splitMerge(m: string): [string, string] {
  const at = m.indexOf(' ');
  // the library splits with split(' ', 2): text after a second space is dropped
  const rest = m.slice(at + 1);
  const second = rest.indexOf(' ');
  return [m.slice(0, at), second < 0 ? rest : rest.slice(0, second)];
}

function supportedPostProcessor(pp: unknown): boolean {
  if (pp == null) return true;
  if (!isObj(pp)) return false;
  switch (pp['type']) {
    case 'ByteLevel':
    case 'BertProcessing':
    case 'RobertaProcessing':
      return true;
    case 'TemplateProcessing': {
      const single = pp['single'];
      return Array.isArray(single) && single.some((x) => isObj(x) && isObj(x['Sequence']) && x['Sequence']['id'] === 'A');
    }
    case 'Sequence':
      return Array.isArray(pp['processors']) && (pp['processors'] as unknown[]).every(supportedPostProcessor);
    default:
      return false;
  }
}

interface TrieNode {
  children: Map<string, TrieNode>;
  end: string | null;
}

function buildTrie(words: string[]): TrieNode {
  const root: TrieNode = { children: new Map(), end: null };
  for (const w of words) {
    let node = root;
    for (let i = 0; i < w.length; i++) {
      const ch = w[i]!;
      let child = node.children.get(ch);
      if (child === undefined) {
        child = { children: new Map(), end: null };
        node.children.set(ch, child);
      }
      node = child;
    }
    node.end = w;
  }
  return root;
}

/** The library's DictionarySplitter: at each position the longest added token wins, left to right. */
function splitAdded(text: string, root: TrieNode): string[] {
  const result: string[] = [];
  const n = text.length;
  let start = 0;
  let i = 0;
  while (i < n) {
    let node: TrieNode | undefined = root;
    let match: string | null = null;
    for (let j = i; j < n; j++) {
      node = node.children.get(text[j]!);
      if (node === undefined) break;
      if (node.end !== null) match = node.end;
    }
    if (match !== null) {
      if (i > start) result.push(text.slice(start, i));
      result.push(match);
      i += match.length;
      start = i;
    } else {
      i++;
    }
  }
  if (start < n) result.push(text.slice(start));
  return result;
}

/** Binary min-heap of numbers. */
class MinHeap {
  private a: number[] = [];
  get size(): number {
    return this.a.length;
  }
  push(v: number): void {
    const a = this.a;
    a.push(v);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]! <= v) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = v;
  }
  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    const n = a.length;
    if (n > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && a[r]! < a[l]! ? r : l;
        if (a[c]! >= last) break;
        a[i] = a[c]!;
        i = c;
      }
      a[i] = last;
    }
    return top;
  }
}
