/**
 * Train/validation split and the token cache.
 *
 * Split: by document, never by position. A document goes to validation when
 * hash32(id, seed) / 2^32 < valFraction, so the decision depends only on its id and the seed:
 * adding or removing other documents never moves it. If that leaves validation empty (a tiny
 * corpus), the train document with the smallest hash moves there, so there is always one.
 *
 * Cache directory layout:
 *
 *   train.bin      token ids, little-endian uint16 (vocabSize ≤ 65536) or uint32
 *   val.bin        same for the validation documents
 *   manifest.json  format version, tokenizer hash, sources (path, size, mtime), split, counts
 *
 * Token stream: every document is preceded by the end-of-text token (llm.c's convention), so
 *
 *   EOS d0 d0 d0 EOS d1 d1 EOS d2 …
 *
 * and a model always sees EOS between two documents and at the start of the stream.
 *
 * Reuse: a build is skipped when manifest.json says the same format, tokenizer hash, corpus
 * sources (sizes and mtimes) and split, and both .bin files have the sizes it records. Anything
 * else rebuilds. Files are written under temporary names and renamed; manifest.json is removed
 * before and written after the .bin files, so a crash never leaves a manifest that vouches for
 * files it did not describe.
 */
import { promises as fs } from 'node:fs';
import { endianness } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { ArgumentError, DataError } from '../errors.js';
import type { Corpus, CorpusFingerprint } from './corpus.js';
import type { Tokenizer } from './tokenizer.js';
import { canonicalJson, hashString32, writeFileAtomic } from './util.js';

export const CACHE_FORMAT = 'mor-token-cache' as const;
export const CACHE_VERSION = 1;
export const DEFAULT_VAL_FRACTION = 0.05;
export const DEFAULT_SPLIT_SEED = 1337;

export type TokenArray = Uint16Array | Uint32Array;
export type SplitName = 'train' | 'val';

export interface SplitOptions {
  /** Seed mixed into the id hash (default 1337). */
  seed?: number;
  /** Share of documents for validation, in (0, 0.5] (default 0.05). */
  valFraction?: number;
}

/** The split's stable per-document score in [0, 1); below valFraction means validation. */
export function splitScore(id: string, seed: number): number {
  return hashString32(id, seed) / 0x100000000;
}

/** Whether a document id falls in validation (before the at-least-one rule). */
export function isValidationId(id: string, seed = DEFAULT_SPLIT_SEED, valFraction = DEFAULT_VAL_FRACTION): boolean {
  return splitScore(id, seed) < valFraction;
}

export interface SplitStats {
  file: string;
  numTokens: number;
  numDocuments: number;
}

export interface CacheManifest {
  format: typeof CACHE_FORMAT;
  version: number;
  tokenizer: { hash: string; vocabSize: number; eosId: number };
  dtype: 'uint16' | 'uint32';
  split: { seed: number; valFraction: number; hash: 'fnv1a32+fmix32' };
  corpus: CorpusFingerprint;
  train: SplitStats;
  val: SplitStats;
  createdAt: string;
}

export interface TokenCacheOptions extends SplitOptions {
  /** Cache directory (created when missing). */
  dir: string;
  corpus: Corpus;
  tokenizer: Tokenizer;
  /** What to do with a cache whose files do not match its manifest (default 'rebuild'). */
  onCorrupt?: 'rebuild' | 'error';
  /** Called now and then while tokenising. */
  onProgress?: (p: { documents: number; tokens: number; chars: number }) => void;
}

export interface TokenCacheResult {
  dir: string;
  manifest: CacheManifest;
  /** true when this call tokenised the corpus, false when the cache was reused */
  built: boolean;
  /** why it was (re)built, or 'up to date' */
  reason: string;
}

/** Build the token cache in `dir`, or reuse it when it is up to date. */
export async function buildTokenCache(options: TokenCacheOptions): Promise<TokenCacheResult> {
  const { dir, corpus, tokenizer } = options;
  const seed = options.seed ?? DEFAULT_SPLIT_SEED;
  const valFraction = options.valFraction ?? DEFAULT_VAL_FRACTION;
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new ArgumentError(`split seed must be a uint32, got ${seed}`);
  if (!(valFraction > 0 && valFraction <= 0.5)) throw new ArgumentError(`valFraction must be in (0, 0.5], got ${valFraction}`);

  const fingerprint = await corpus.fingerprint();
  const dtype: CacheManifest['dtype'] = tokenizer.vocabSize <= 65536 ? 'uint16' : 'uint32';
  const expected: Omit<CacheManifest, 'train' | 'val' | 'createdAt'> = {
    format: CACHE_FORMAT,
    version: CACHE_VERSION,
    tokenizer: { hash: tokenizer.hash, vocabSize: tokenizer.vocabSize, eosId: tokenizer.eosId },
    dtype,
    split: { seed, valFraction, hash: 'fnv1a32+fmix32' as const },
    corpus: fingerprint,
  };

  const check = await checkCache(dir, expected);
  if (check.ok) return { dir, manifest: check.manifest, built: false, reason: 'up to date' };
  if (check.corrupt && options.onCorrupt === 'error') {
    throw new DataError(`token cache ${dir} is corrupt: ${check.reason}`);
  }

  await fs.mkdir(dir, { recursive: true });
  const bytesPer = dtype === 'uint16' ? 2 : 4;
  const tag = `${process.pid}.${randomBytes(4).toString('hex')}`;
  const trainTmp = path.join(dir, `.train.bin.${tag}.tmp`);
  const valTmp = path.join(dir, `.val.bin.${tag}.tmp`);
  const train = await TokenWriter.open(trainTmp, bytesPer);
  const val = await TokenWriter.open(valTmp, bytesPer);
  const eos = tokenizer.eosId;
  let numDocs = 0;
  let chars = 0;
  // the train document with the smallest score, in case validation ends up empty
  let fallback: { score: number; start: number; end: number; tokens: Int32Array } | null = null;
  try {
    for await (const doc of corpus) {
      const score = splitScore(doc.id, seed);
      const ids = tokenizer.encode(doc.text);
      const w = score < valFraction ? val : train;
      const start = w.numTokens;
      w.push(eos);
      w.pushAll(ids);
      if (w === train && val.numTokens === 0 && (fallback === null || score < fallback.score)) {
        fallback = { score, start, end: w.numTokens, tokens: ids };
      }
      if (w === val) fallback = null;
      w.numDocuments++;
      await w.flushIfFull();
      numDocs++;
      chars += doc.text.length;
      if (options.onProgress && numDocs % 256 === 0) {
        options.onProgress({ documents: numDocs, tokens: train.numTokens + val.numTokens, chars });
      }
    }
    if (val.numDocuments === 0) {
      if (fallback === null || train.numDocuments < 2) {
        throw new DataError(`corpus ${corpus.describe()} has ${numDocs} document(s); a train/validation split needs at least 2`);
      }
      val.push(eos);
      val.pushAll(fallback.tokens);
      val.numDocuments = 1;
      train.numDocuments--;
      await train.close();
      await cutRange(trainTmp, fallback.start * bytesPer, fallback.end * bytesPer);
      train.numTokens -= fallback.end - fallback.start;
    } else {
      await train.close();
    }
    await val.close();
    if (options.onProgress) options.onProgress({ documents: numDocs, tokens: train.numTokens + val.numTokens, chars });

    const manifest: CacheManifest = {
      ...expected,
      train: { file: 'train.bin', numTokens: train.numTokens, numDocuments: train.numDocuments },
      val: { file: 'val.bin', numTokens: val.numTokens, numDocuments: val.numDocuments },
      createdAt: new Date().toISOString(),
    };
    const manifestPath = path.join(dir, 'manifest.json');
    await fs.rm(manifestPath, { force: true });
    await fs.rename(trainTmp, path.join(dir, 'train.bin'));
    await fs.rename(valTmp, path.join(dir, 'val.bin'));
    await writeFileAtomic(manifestPath, JSON.stringify(manifest, null, 2) + '\n');
    return { dir, manifest, built: true, reason: check.reason };
  } catch (e) {
    await train.close().catch(() => undefined);
    await val.close().catch(() => undefined);
    await fs.rm(trainTmp, { force: true });
    await fs.rm(valTmp, { force: true });
    throw e;
  }
}

type CheckResult = { ok: true; manifest: CacheManifest } | { ok: false; corrupt: boolean; reason: string };

async function checkCache(dir: string, expected: Omit<CacheManifest, 'train' | 'val' | 'createdAt'>): Promise<CheckResult> {
  let manifest: CacheManifest;
  try {
    manifest = JSON.parse(await fs.readFile(path.join(dir, 'manifest.json'), 'utf8')) as CacheManifest;
  } catch (e) {
    const missing = (e as NodeJS.ErrnoException).code === 'ENOENT';
    return { ok: false, corrupt: !missing, reason: missing ? 'no cache yet' : `manifest.json is unreadable: ${(e as Error).message}` };
  }
  const stale = (what: string): CheckResult => ({ ok: false, corrupt: false, reason: `${what} changed` });
  if (manifest.format !== expected.format || manifest.version !== expected.version) return stale('cache format');
  if (canonicalJson(manifest.tokenizer) !== canonicalJson(expected.tokenizer)) return stale('tokenizer');
  if (manifest.dtype !== expected.dtype) return stale('token dtype');
  if (canonicalJson(manifest.split) !== canonicalJson(expected.split)) return stale('split');
  if (canonicalJson(manifest.corpus) !== canonicalJson(expected.corpus)) return stale('corpus');
  const bytesPer = manifest.dtype === 'uint16' ? 2 : 4;
  for (const s of [manifest.train, manifest.val]) {
    if (s === undefined || typeof s.numTokens !== 'number') return { ok: false, corrupt: true, reason: 'manifest.json lacks token counts' };
    let size: number;
    try {
      size = (await fs.stat(path.join(dir, s.file))).size;
    } catch {
      return { ok: false, corrupt: true, reason: `${s.file} is missing` };
    }
    if (size !== s.numTokens * bytesPer) {
      return { ok: false, corrupt: true, reason: `${s.file} is ${size} bytes, manifest says ${s.numTokens * bytesPer}` };
    }
  }
  return { ok: true, manifest };
}

/** Read a cache's manifest.json (DataError when absent or malformed). */
export async function readManifest(dir: string): Promise<CacheManifest> {
  const file = path.join(dir, 'manifest.json');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new DataError(`no token cache in ${dir}: cannot read ${file}: ${(e as Error).message}`);
  }
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw new DataError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  const mm = m as Partial<CacheManifest> | null;
  if (mm === null || typeof mm !== 'object' || mm.format !== CACHE_FORMAT) {
    throw new DataError(`${file} is not a token-cache manifest (format must be '${CACHE_FORMAT}')`);
  }
  if (mm.version !== CACHE_VERSION) {
    throw new DataError(`${file} has cache format version ${String(mm.version)}, this build reads version ${CACHE_VERSION}`);
  }
  return mm as CacheManifest;
}

/** Load one split of a token cache into memory, checking its size against the manifest. */
export async function loadTokens(dir: string, split: SplitName): Promise<TokenArray> {
  const manifest = await readManifest(dir);
  const stats = manifest[split];
  const file = path.join(dir, stats.file);
  let buf: Buffer;
  try {
    buf = await fs.readFile(file);
  } catch (e) {
    throw new DataError(`cannot read ${file}: ${(e as Error).message}`);
  }
  const bytesPer = manifest.dtype === 'uint16' ? 2 : 4;
  if (buf.length !== stats.numTokens * bytesPer) {
    throw new DataError(`${file} is ${buf.length} bytes but manifest.json says ${stats.numTokens} ${manifest.dtype} tokens (${stats.numTokens * bytesPer} bytes): the cache is corrupt; rebuild it`);
  }
  // copy into a fresh, aligned buffer (Buffer's pool offset may be odd)
  const bytes = new Uint8Array(buf.length);
  bytes.set(buf);
  if (endianness() === 'BE') swapBytes(bytes, bytesPer);
  return bytesPer === 2 ? new Uint16Array(bytes.buffer) : new Uint32Array(bytes.buffer);
}

function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i + width <= bytes.length; i += width) {
    for (let a = i, b = i + width - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

/** Remove bytes [start, end) from a file by streaming a copy (only for the tiny-corpus fallback). */
async function cutRange(file: string, start: number, end: number): Promise<void> {
  const data = await fs.readFile(file);
  const out = Buffer.concat([data.subarray(0, start), data.subarray(end)]);
  await fs.writeFile(file, out);
}

/**
 * Little-endian token writer. push() only fills memory; the build loop awaits flushIfFull()
 * after each document, so at most about one chunk plus one document is held in memory.
 */
class TokenWriter {
  numTokens = 0;
  numDocuments = 0;
  private used = 0;
  private closed = false;
  private chunk: Uint16Array | Uint32Array;
  private static readonly FLUSH_AT = 1 << 19; // tokens

  private constructor(
    private readonly handle: fs.FileHandle,
    private readonly bytesPer: number,
  ) {
    this.chunk = this.alloc(TokenWriter.FLUSH_AT);
  }

  static async open(file: string, bytesPer: number): Promise<TokenWriter> {
    return new TokenWriter(await fs.open(file, 'w'), bytesPer);
  }

  private alloc(n: number): Uint16Array | Uint32Array {
    return this.bytesPer === 2 ? new Uint16Array(n) : new Uint32Array(n);
  }

  push(id: number): void {
    if (this.used === this.chunk.length) {
      const bigger = this.alloc(this.chunk.length * 2);
      bigger.set(this.chunk);
      this.chunk = bigger;
    }
    this.chunk[this.used++] = id;
    this.numTokens++;
  }

  pushAll(ids: Int32Array): void {
    for (let i = 0; i < ids.length; i++) this.push(ids[i]!);
  }

  async flushIfFull(): Promise<void> {
    if (this.used >= TokenWriter.FLUSH_AT) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return;
    const bytes = new Uint8Array(this.chunk.buffer, 0, this.used * this.bytesPer);
    if (endianness() === 'BE') swapBytes(bytes, this.bytesPer);
    let off = 0;
    while (off < bytes.length) {
      const { bytesWritten } = await this.handle.write(bytes, off, bytes.length - off);
      off += bytesWritten;
    }
    this.used = 0;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.flush();
      await this.handle.sync();
    } finally {
      await this.handle.close();
    }
  }
}
