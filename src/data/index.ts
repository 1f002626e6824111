/**
 * The data layer: corpora, tokenizer (train byte-level BPE, load any tokenizer.json), the
 * train/validation split and token cache, and batch loaders.
 *
 *   corpus ──► Tokenizer.encode ──► buildTokenCache (train.bin / val.bin) ──► TrainLoader / validationBatches
 */
export { Corpus, type CorpusOptions, type CorpusFingerprint, type Document, type SourceFile } from './corpus.js';
export { EOS_TOKEN } from './byte-level.js';
export {
  trainBpe,
  trainBpeFromCounts,
  countPreTokens,
  type BpeTokenizerJson,
  type BpeTrainOptions,
  type BpeTrainResult,
  type WordCounts,
  type TextLike,
} from './bpe-train.js';
export { Tokenizer, type TokenizerOptions } from './tokenizer.js';
export {
  buildTokenCache,
  loadTokens,
  readManifest,
  isValidationId,
  splitScore,
  DEFAULT_SPLIT_SEED,
  DEFAULT_VAL_FRACTION,
  type CacheManifest,
  type SplitOptions,
  type SplitName,
  type TokenArray,
  type TokenCacheOptions,
  type TokenCacheResult,
} from './dataset.js';
export {
  TrainLoader,
  validationBatches,
  numValidationRows,
  type Batch,
  type LoaderCursor,
  type TrainLoaderOptions,
  type TokenStream,
  type ValidationOptions,
} from './loader.js';
export { Rng, type RngState, canonicalJson, sha256Hex, writeFileAtomic } from './util.js';
