// Corpora: the built-in default corpus, folders of .txt / .jsonl / .parquet, and each error case.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chmod, writeFile, mkdir, symlink } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Corpus, type Document } from '../src/data/corpus.js';
import { DataError } from '../src/errors.js';
import { suiteTempDir } from './helpers/temp-dir.js';

/** The repository root: the nearest folder above this file with a package.json (works from dist/ too). */
function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('repository root not found');
    dir = up;
  }
  return dir;
}
const FIXTURES = path.join(repoRoot(), 'test', 'fixtures', 'data');

async function collect(c: Corpus): Promise<Document[]> {
  const out: Document[] = [];
  for await (const d of c) out.push(d);
  return out;
}

/** Assert that reading the corpus fails with a DataError whose message matches. */
async function rejectsData(c: Corpus | (() => Corpus), message: RegExp): Promise<void> {
  await assert.rejects(
    async () => collect(typeof c === 'function' ? c() : c),
    (e: unknown) => e instanceof DataError && e.code === 'E_DATA' && message.test(e.message),
  );
}

const tmp = suiteTempDir('mor-corpus-');

async function put(rel: string, content: string): Promise<string> {
  const file = path.join(tmp, rel);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, content);
  return file;
}

describe('default corpus', () => {
  test('yields the State of the Union addresses, one document each, with unique ids', async () => {
    const docs = await collect(Corpus.default());
    assert.equal(docs.length, 233);
    assert.equal(new Set(docs.map((d) => d.id)).size, docs.length);
    assert.equal(docs[0]!.id, 'sotu:1790:George Washington');
    assert.ok(docs[0]!.text.startsWith('Fellow-Citizens of the Senate'));
    const chars = docs.reduce((a, d) => a + d.text.length, 0);
    assert.ok(chars > 10_000_000, `about 10.7 M characters, got ${chars}`);
    const fp = await Corpus.default().fingerprint();
    assert.equal(fp.kind, 'default');
    assert.match(fp.sources[0]!.path, /^builtin:@stdlib\/datasets-sotu@\d+\.\d+\.\d+$/);
  });
});

describe('files and folders', () => {
  test('a folder: recursive, sorted, dot-files and other extensions skipped', async () => {
    const root = path.join(tmp, 'mixed');
    await put('mixed/b.txt', 'Second file.');
    await put('mixed/a.txt', 'First file.\nWith two lines.');
    await put('mixed/sub/c.txt', 'Nested file: 東京 🙂');
    await put('mixed/sub/empty.txt', '');
    await put('mixed/.hidden.txt', 'hidden');
    await put('mixed/.git/x.txt', 'hidden too');
    await put('mixed/notes.csv', 'a,b');
    await put('mixed/d.jsonl', '{"text": "json one", "id": 7}\n\n{"text": "json two"}\n{"text": null}\n');
    const docs = await collect(Corpus.fromPaths(root));
    assert.deepEqual(docs, [
      { id: 'a.txt', text: 'First file.\nWith two lines.' },
      { id: 'b.txt', text: 'Second file.' },
      { id: '7', text: 'json one' },
      { id: 'd.jsonl:3', text: 'json two' },
      { id: 'sub/c.txt', text: 'Nested file: 東京 🙂' },
    ]);
    const fp = await Corpus.fromPaths(root).fingerprint();
    assert.deepEqual(
      fp.sources.map((s) => path.relative(root, s.path)),
      ['a.txt', 'b.txt', 'd.jsonl', path.join('sub', 'c.txt'), path.join('sub', 'empty.txt')],
    );
    assert.ok(fp.sources.every((s) => s.size >= 0 && s.mtimeMs > 0));
  });

  test('jsonl with configurable text and id fields', async () => {
    const file = await put('fields.jsonl', '{"body": "alpha", "key": "k1"}\r\n{"body": "beta", "key": "k2", "extra": 1}\n');
    const docs = await collect(Corpus.fromPaths(file, { textField: 'body', idField: 'key' }));
    assert.deepEqual(docs, [
      { id: 'k1', text: 'alpha' },
      { id: 'k2', text: 'beta' },
    ]);
  });

  test('parquet: rows across row groups, null and empty texts skipped, id column used', async () => {
    const docs = await collect(Corpus.fromPaths(path.join(FIXTURES, 'docs.parquet')));
    assert.deepEqual(
      docs.map((d) => d.id),
      ['p0', 'p1', 'p3', 'p4', 'p6', 'p7'],
    );
    assert.equal(docs[1]!.text, 'Second: with Unicode — café, 東京, 🙂.');
    assert.equal(docs[5]!.text, 'Eighth and last.');
  });

  test('parquet: configurable text column; ids from file and row without an id column', async () => {
    const docs = await collect(Corpus.fromPaths(path.join(FIXTURES, 'content-no-id.parquet'), { textField: 'content' }));
    assert.deepEqual(docs, [
      { id: 'content-no-id.parquet#0', text: 'alpha beta' },
      { id: 'content-no-id.parquet#1', text: 'gamma delta' },
      { id: 'content-no-id.parquet#2', text: 'epsilon' },
    ]);
  });

  test('several paths are read in the order given', async () => {
    const a = await put('order/z.txt', 'zzz');
    const docs = await collect(Corpus.fromPaths([a, path.join(FIXTURES, 'docs.parquet')]));
    assert.equal(docs[0]!.id, 'z.txt');
    assert.equal(docs.length, 7);
  });
});

describe('corpus errors', () => {
  test('a missing path', async () => {
    await rejectsData(Corpus.fromPaths(path.join(tmp, 'nope')), /corpus path not found: .*nope/);
  });

  test('no paths at all', () => {
    assert.throws(() => Corpus.fromPaths([]), DataError);
  });

  test('a folder without supported files', async () => {
    await put('only-csv/x.csv', '1,2');
    await rejectsData(Corpus.fromPaths(path.join(tmp, 'only-csv')), /holds no \.txt, \.jsonl, \.parquet files/);
    await mkdir(path.join(tmp, 'empty-dir'));
    await rejectsData(Corpus.fromPaths(path.join(tmp, 'empty-dir')), /holds no/);
  });

  test('a file of an unsupported type', async () => {
    const f = await put('data.csv', 'a,b');
    await rejectsData(Corpus.fromPaths(f), /unsupported corpus file .*data\.csv.*got '\.csv'/);
  });

  test('inputs with no text at all', async () => {
    await put('blank/a.txt', '');
    await put('blank/b.jsonl', '\n{"text": ""}\n{"text": null}\n');
    await rejectsData(Corpus.fromPaths(path.join(tmp, 'blank')), /has no documents with text/);
  });

  test('a malformed JSON line names the file and line', async () => {
    const f = await put('bad.jsonl', '{"text": "fine"}\n{"text": "broken\n');
    await rejectsData(Corpus.fromPaths(f), /bad\.jsonl:2: malformed JSON line/);
    const g = await put('array.jsonl', '{"text": "fine"}\n\n[1, 2]\n');
    await rejectsData(Corpus.fromPaths(g), /array\.jsonl:3: expected a JSON object per line, got an array/);
  });

  test('a missing or non-string JSON field names the fields that exist', async () => {
    const f = await put('nofield.jsonl', '{"content": "x", "url": "u"}\n');
    await rejectsData(Corpus.fromPaths(f), /nofield\.jsonl:1: no field 'text'; the line's fields are: content, url/);
    const g = await put('number.jsonl', '{"text": 42}\n');
    await rejectsData(Corpus.fromPaths(g), /number\.jsonl:1: field 'text' must be a string, got number/);
  });

  test('a missing parquet column names the columns that exist', async () => {
    await rejectsData(
      Corpus.fromPaths(path.join(FIXTURES, 'docs.parquet'), { textField: 'body' }),
      /docs\.parquet: no column 'body'; the columns are: id, text, score/,
    );
    await rejectsData(Corpus.fromPaths(path.join(FIXTURES, 'docs.parquet'), { textField: 'score' }), /column 'score' must hold strings/);
  });

  test('a file that is not parquet', async () => {
    const f = await put('fake.parquet', 'this is not a parquet file at all');
    await rejectsData(Corpus.fromPaths(f), /cannot read parquet file .*fake\.parquet/);
    const g = await put('empty.parquet', '');
    await rejectsData(Corpus.fromPaths(g), /cannot read parquet file .*empty\.parquet/);
  });

  test('an unreadable entry (a dangling link) in a folder', async () => {
    await put('links/ok.txt', 'fine');
    await symlink(path.join(tmp, 'links', 'gone.txt'), path.join(tmp, 'links', 'dangling.txt'));
    await rejectsData(Corpus.fromPaths(path.join(tmp, 'links')), /cannot access .*dangling\.txt/);
  });

  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  test('a file without read permission', { skip: isRoot ? 'root reads any file' : false }, async () => {
    const f = await put('secret/locked.txt', 'locked');
    const j = await put('secret2/locked.jsonl', '{"text": "locked"}\n');
    await chmod(f, 0o000);
    await chmod(j, 0o000);
    await rejectsData(Corpus.fromPaths(f), /cannot read .*locked\.txt/);
    await rejectsData(Corpus.fromPaths(j), /cannot read .*locked\.jsonl/);
  });

  test('a path that cannot be read as text (a folder named like a file)', async () => {
    await mkdir(path.join(tmp, 'dir.jsonl-holder', 'x.jsonl'), { recursive: true });
    await put('dir.jsonl-holder/x.jsonl/inner.txt', 'inner');
    // the folder "x.jsonl" is walked into, not read as a file
    const docs = await collect(Corpus.fromPaths(path.join(tmp, 'dir.jsonl-holder')));
    assert.deepEqual(docs, [{ id: 'x.jsonl/inner.txt', text: 'inner' }]);
  });
});
