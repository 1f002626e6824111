// Data-pipeline benchmark: prints one JSON line per result.
//   bpe_train     train an 8192-token byte-level BPE on the whole default corpus
//   encode        encoding speed of the fast encoder and of @huggingface/tokenizers, same run,
//                 and whether their ids are identical on the whole corpus
//   token_cache   tokenise the default corpus into a token cache, then the reuse check
//   loader        shuffled (B, T) batches per second
// Usage: npm run bench:data   (or: node dist/bench/data.js [vocabSize])
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Corpus, type Document } from '../src/data/corpus.js';
import { countPreTokens, trainBpeFromCounts, type WordCounts } from '../src/data/bpe-train.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { buildTokenCache, loadTokens } from '../src/data/dataset.js';
import { TrainLoader } from '../src/data/loader.js';

const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify(o));
const round = (x: number, d = 3): number => Math.round(x * 10 ** d) / 10 ** d;
const now = (): number => performance.now() / 1000;

async function main(): Promise<void> {
  const vocabSize = Number(process.argv[2] ?? 8192);
  const docs: Document[] = [];
  for await (const d of Corpus.default()) docs.push(d);
  const bytes = docs.reduce((a, d) => a + Buffer.byteLength(d.text, 'utf8'), 0);
  const corpusMb = bytes / 1e6;

  // --- training -----------------------------------------------------------------------------
  const t0 = now();
  const counts: WordCounts = new Map();
  for (const d of docs) countPreTokens(d.text, counts);
  const t1 = now();
  const trained = trainBpeFromCounts(counts, { vocabSize });
  const t2 = now();
  emit({
    bench: 'bpe_train',
    vocab: trained.vocabSize,
    corpus_mb: round(corpusMb, 2),
    documents: docs.length,
    unique_words: trained.numWords,
    seconds: round(t2 - t0),
    count_seconds: round(t1 - t0),
    merge_seconds: round(t2 - t1),
  });

  // --- encoding -----------------------------------------------------------------------------
  const tok = Tokenizer.fromJSON(trained.tokenizer);
  tok.encode(docs[0]!.text.slice(0, 10000)); // warm up
  const e0 = now();
  const fast = docs.map((d) => tok.encode(d.text));
  const e1 = now();
  const lib = docs.map((d) => tok.encodeWithLibrary(d.text));
  const e2 = now();
  const numTokens = fast.reduce((a, x) => a + x.length, 0);
  let identical = true;
  for (let i = 0; i < docs.length && identical; i++) {
    const a = fast[i]!;
    const b = lib[i]!;
    if (a.length !== b.length) identical = false;
    for (let j = 0; j < a.length && identical; j++) if (a[j] !== b[j]) identical = false;
  }
  const fastMbs = corpusMb / (e1 - e0);
  const libMbs = corpusMb / (e2 - e1);
  emit({ bench: 'encode', encoder: 'fast', mb_per_s: round(fastMbs, 2), tokens: numTokens, bytes_per_token: round(bytes / numTokens, 2) });
  emit({ bench: 'encode', encoder: 'library', mb_per_s: round(libMbs, 2) });
  emit({ bench: 'encode_ratio', fast_over_library: round(fastMbs / libMbs, 1), identical_ids: identical });

  // --- token cache --------------------------------------------------------------------------
  const dir = await mkdtemp(path.join(tmpdir(), 'mor-bench-cache-'));
  try {
    const c0 = now();
    const built = await buildTokenCache({ dir, corpus: Corpus.default(), tokenizer: tok });
    const c1 = now();
    const reused = await buildTokenCache({ dir, corpus: Corpus.default(), tokenizer: tok });
    const c2 = now();
    emit({
      bench: 'token_cache',
      seconds: round(c1 - c0),
      reuse_seconds: round(c2 - c1),
      reused: !reused.built,
      train_tokens: built.manifest.train.numTokens,
      val_tokens: built.manifest.val.numTokens,
      val_documents: built.manifest.val.numDocuments,
    });

    // --- loader -----------------------------------------------------------------------------
    const train = await loadTokens(dir, 'train');
    const B = 16;
    const T = 256;
    const loader = new TrainLoader(train, { batchSize: B, seqLen: T, seed: 0 });
    const n = 2000;
    const l0 = now();
    for (let i = 0; i < n; i++) loader.next();
    const l1 = now();
    emit({ bench: 'loader', batch: B, seq_len: T, batches_per_s: Math.round(n / (l1 - l0)), tokens_per_s: Math.round((n * B * T) / (l1 - l0)) });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
