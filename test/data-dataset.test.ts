// Train/validation split by document, and the token cache: contents, reuse, invalidation,
// corruption, atomic writes.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { rm, writeFile, mkdir, readdir, stat, truncate, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Corpus, type Document } from '../src/data/corpus.js';
import { trainBpe } from '../src/data/bpe-train.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { buildTokenCache, isValidationId, loadTokens, readManifest, splitScore, type TokenArray } from '../src/data/dataset.js';
import { DataError, ArgumentError } from '../src/errors.js';
import { suiteTempDir } from './helpers/temp-dir.js';

const WORDS = 'the union state of congress people nation law year war peace trade money army navy public good'.split(' ');

/** Deterministic small documents. */
function makeDoc(i: number): string {
  let s = `Document ${i}.`;
  for (let k = 0; k < 20 + (i % 7) * 5; k++) s += ' ' + WORDS[(i * 7 + k * 3) % WORDS.length]!;
  return s + (i % 5 === 0 ? ' 東京 🙂\n' : '.\n');
}

const tmp = suiteTempDir('mor-cache-');
let corpusDir: string;
let tok: Tokenizer;
let docs: Document[];

before(async () => {
  corpusDir = path.join(tmp, 'corpus');
  await mkdir(corpusDir);
  for (let i = 0; i < 120; i++) await writeFile(path.join(corpusDir, `doc-${String(i).padStart(3, '0')}.txt`), makeDoc(i));
  docs = [];
  for await (const d of Corpus.fromPaths(corpusDir)) docs.push(d);
  tok = Tokenizer.fromJSON((await trainBpe(docs.map((d) => d.text), { vocabSize: 400 })).tokenizer);
});

/** Split a token stream at EOS into decoded documents (the stream starts with EOS). */
function decodeDocs(tokens: TokenArray, t: Tokenizer): string[] {
  assert.equal(tokens[0], t.eosId, 'the stream starts with EOS');
  const out: string[] = [];
  let cur: number[] = [];
  for (let i = 1; i < tokens.length; i++) {
    if (tokens[i] === t.eosId) {
      out.push(t.decode(cur));
      cur = [];
    } else cur.push(tokens[i]!);
  }
  out.push(t.decode(cur));
  return out;
}

describe('split by document', () => {
  test('depends only on the id and the seed, with about the requested fraction', () => {
    let inVal = 0;
    for (let i = 0; i < 20000; i++) {
      const id = `doc-${i}`;
      const v = isValidationId(id, 1, 0.05);
      assert.equal(v, isValidationId(id, 1, 0.05));
      if (v) inVal++;
    }
    assert.ok(Math.abs(inVal / 20000 - 0.05) < 0.006, `fraction ${inVal / 20000}`);
    const a = Array.from({ length: 200 }, (_, i) => isValidationId(`d${i}`, 1, 0.2));
    const b = Array.from({ length: 200 }, (_, i) => isValidationId(`d${i}`, 2, 0.2));
    assert.notDeepEqual(a, b, 'another seed, another split');
    assert.equal(splitScore('x', 5), splitScore('x', 5));
  });
});

describe('token cache', () => {
  test('builds train.bin / val.bin / manifest.json with documents split by id', async () => {
    const dir = path.join(tmp, 'cache1');
    const r = await buildTokenCache({ dir, corpus: Corpus.fromPaths(corpusDir), tokenizer: tok, seed: 3, valFraction: 0.1 });
    assert.equal(r.built, true);
    assert.equal(r.reason, 'no cache yet');
    const m = r.manifest;
    assert.equal(m.format, 'mor-token-cache');
    assert.equal(m.version, 1);
    assert.equal(m.dtype, 'uint16');
    assert.deepEqual(m.tokenizer, { hash: tok.hash, vocabSize: tok.vocabSize, eosId: 0 });
    assert.deepEqual(m.split, { seed: 3, valFraction: 0.1, hash: 'fnv1a32+fmix32' });
    assert.equal(m.corpus.sources.length, 120);
    assert.equal(m.train.numDocuments + m.val.numDocuments, 120);
    assert.ok(m.val.numDocuments >= 4 && m.val.numDocuments <= 24, `val docs ${m.val.numDocuments}`);
    assert.deepEqual((await readdir(dir)).sort(), ['manifest.json', 'train.bin', 'val.bin'], 'no temporary files left');
    assert.deepEqual(await readManifest(dir), m);

    const train = await loadTokens(dir, 'train');
    const val = await loadTokens(dir, 'val');
    assert.ok(train instanceof Uint16Array);
    assert.equal(train.length, m.train.numTokens);
    assert.equal(val.length, m.val.numTokens);
    const expectVal = docs.filter((d) => isValidationId(d.id, 3, 0.1)).map((d) => d.text);
    const expectTrain = docs.filter((d) => !isValidationId(d.id, 3, 0.1)).map((d) => d.text);
    assert.deepEqual(decodeDocs(val, tok), expectVal);
    assert.deepEqual(decodeDocs(train, tok), expectTrain);
    // little-endian on disk
    const raw = await readFile(path.join(dir, 'train.bin'));
    assert.equal(raw.readUInt16LE(2), train[1]);
  });

  test('a second run with the same inputs reuses the cache without writing', async () => {
    const dir = path.join(tmp, 'cache2');
    const opts = { dir, corpus: Corpus.fromPaths(corpusDir), tokenizer: tok };
    const first = await buildTokenCache(opts);
    const mtime = (await stat(path.join(dir, 'train.bin'))).mtimeMs;
    const second = await buildTokenCache({ ...opts, corpus: Corpus.fromPaths(corpusDir) });
    assert.equal(first.built, true);
    assert.equal(second.built, false);
    assert.equal(second.reason, 'up to date');
    assert.deepEqual(second.manifest, first.manifest);
    assert.equal((await stat(path.join(dir, 'train.bin'))).mtimeMs, mtime);
  });

  test('any change of corpus, tokenizer or split rebuilds', async () => {
    const src = path.join(tmp, 'corpus-mut');
    await mkdir(src);
    for (let i = 0; i < 30; i++) await writeFile(path.join(src, `d${i}.txt`), makeDoc(i));
    const dir = path.join(tmp, 'cache3');
    const base = { dir, tokenizer: tok, seed: 1, valFraction: 0.1 };
    assert.equal((await buildTokenCache({ ...base, corpus: Corpus.fromPaths(src) })).built, true);

    await writeFile(path.join(src, 'd3.txt'), makeDoc(3) + ' more words.');
    let r = await buildTokenCache({ ...base, corpus: Corpus.fromPaths(src) });
    assert.deepEqual([r.built, r.reason], [true, 'corpus changed']);
    assert.equal((await buildTokenCache({ ...base, corpus: Corpus.fromPaths(src) })).built, false);

    await writeFile(path.join(src, 'new.txt'), 'A new document.');
    r = await buildTokenCache({ ...base, corpus: Corpus.fromPaths(src) });
    assert.deepEqual([r.built, r.reason], [true, 'corpus changed']);
    assert.equal(r.manifest.train.numDocuments + r.manifest.val.numDocuments, 31);

    const other = Tokenizer.fromJSON((await trainBpe(docs.slice(0, 50).map((d) => d.text), { vocabSize: 300 })).tokenizer);
    r = await buildTokenCache({ ...base, tokenizer: other, corpus: Corpus.fromPaths(src) });
    assert.deepEqual([r.built, r.reason], [true, 'tokenizer changed']);

    r = await buildTokenCache({ ...base, tokenizer: other, seed: 2, corpus: Corpus.fromPaths(src) });
    assert.deepEqual([r.built, r.reason], [true, 'split changed']);
    r = await buildTokenCache({ ...base, tokenizer: other, seed: 2, valFraction: 0.2, corpus: Corpus.fromPaths(src) });
    assert.deepEqual([r.built, r.reason], [true, 'split changed']);
    r = await buildTokenCache({ ...base, tokenizer: other, seed: 2, valFraction: 0.2, corpus: Corpus.fromPaths(src, { idField: 'key' }) });
    assert.deepEqual([r.built, r.reason], [true, 'corpus changed']);
  });

  test('a truncated or missing .bin is detected and rebuilt, or reported', async () => {
    const dir = path.join(tmp, 'cache4');
    const opts = () => ({ dir, corpus: Corpus.fromPaths(corpusDir), tokenizer: tok });
    const first = await buildTokenCache(opts());
    await truncate(path.join(dir, 'train.bin'), 100);
    await assert.rejects(loadTokens(dir, 'train'), (e: unknown) => e instanceof DataError && /100 bytes .* corrupt/.test(e.message));
    await assert.rejects(
      buildTokenCache({ ...opts(), onCorrupt: 'error' }),
      (e: unknown) => e instanceof DataError && /train\.bin is 100 bytes, manifest says \d+/.test(e.message),
    );
    const r = await buildTokenCache(opts());
    assert.equal(r.built, true);
    assert.match(r.reason, /train\.bin is 100 bytes, manifest says \d+/);
    assert.deepEqual(Array.from(await loadTokens(dir, 'train')).length, first.manifest.train.numTokens);

    await rm(path.join(dir, 'val.bin'));
    const r2 = await buildTokenCache(opts());
    assert.deepEqual([r2.built, r2.reason], [true, 'val.bin is missing']);

    await writeFile(path.join(dir, 'manifest.json'), '{"format": "mor-token-cache", "vers');
    const r3 = await buildTokenCache(opts());
    assert.equal(r3.built, true);
    assert.match(r3.reason, /manifest\.json is unreadable/);
    await writeFile(path.join(dir, 'manifest.json'), '{}');
    await assert.rejects(loadTokens(dir, 'val'), /not a token-cache manifest/);
    await assert.rejects(loadTokens(path.join(tmp, 'no-such-cache'), 'val'), /no token cache/);
  });

  test('a tiny corpus still gets one validation document', async () => {
    const src = path.join(tmp, 'tiny');
    await mkdir(src);
    const texts = ['First tiny document.', 'Second tiny document.', 'Third tiny document.'];
    for (let i = 0; i < 3; i++) await writeFile(path.join(src, `t${i}.txt`), texts[i]!);
    const seed = 11;
    // with a 1% fraction, none of the three ids falls in validation by hash alone
    assert.ok(['t0.txt', 't1.txt', 't2.txt'].every((id) => !isValidationId(id, seed, 0.01)));
    const dir = path.join(tmp, 'cache5');
    const r = await buildTokenCache({ dir, corpus: Corpus.fromPaths(src), tokenizer: tok, seed, valFraction: 0.01 });
    assert.equal(r.manifest.val.numDocuments, 1);
    assert.equal(r.manifest.train.numDocuments, 2);
    const ids = ['t0.txt', 't1.txt', 't2.txt'];
    const chosen = ids.reduce((a, b) => (splitScore(a, seed) <= splitScore(b, seed) ? a : b));
    const chosenText = texts[ids.indexOf(chosen)]!;
    assert.deepEqual(decodeDocs(await loadTokens(dir, 'val'), tok), [chosenText]);
    assert.deepEqual(decodeDocs(await loadTokens(dir, 'train'), tok), texts.filter((t) => t !== chosenText));

    const one = path.join(tmp, 'one');
    await mkdir(one);
    await writeFile(path.join(one, 'only.txt'), 'Just one.');
    await assert.rejects(
      buildTokenCache({ dir: path.join(tmp, 'cache6'), corpus: Corpus.fromPaths(one), tokenizer: tok }),
      /needs at least 2/,
    );
    assert.deepEqual(await readdir(path.join(tmp, 'cache6')), [], 'temporary files removed after a failure');
  });

  test('ids above 65535 are stored as uint32', async () => {
    const json = tok.toJSON();
    (json['added_tokens'] as unknown[]).push({ id: 70000, content: '<|big|>', special: true });
    const big = Tokenizer.fromJSON(json);
    assert.equal(big.vocabSize, 70001);
    const src = path.join(tmp, 'big');
    await mkdir(src);
    await writeFile(path.join(src, 'a.txt'), 'alpha <|big|> beta');
    await writeFile(path.join(src, 'b.txt'), 'gamma');
    const dir = path.join(tmp, 'cache7');
    const r = await buildTokenCache({ dir, corpus: Corpus.fromPaths(src), tokenizer: big });
    assert.equal(r.manifest.dtype, 'uint32');
    const all = [...(await loadTokens(dir, 'train')), ...(await loadTokens(dir, 'val'))];
    assert.ok(all.includes(70000));
    assert.ok((await loadTokens(dir, 'train')) instanceof Uint32Array);
  });

  test('rejects bad split options', async () => {
    const base = { dir: path.join(tmp, 'cache8'), corpus: Corpus.fromPaths(corpusDir), tokenizer: tok };
    await assert.rejects(buildTokenCache({ ...base, valFraction: 0 }), ArgumentError);
    await assert.rejects(buildTokenCache({ ...base, valFraction: 0.9 }), ArgumentError);
    await assert.rejects(buildTokenCache({ ...base, seed: -1 }), ArgumentError);
  });
});
