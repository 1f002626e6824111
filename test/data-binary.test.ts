// A binary file named .txt is refused with a DataError naming it (NUL bytes, invalid UTF-8);
// files skipped for their extension are listed in one log line.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Corpus, decodeTextFile, type Document } from '../src/data/corpus.js';
import { DataError } from '../src/errors.js';

async function collect(c: Corpus): Promise<Document[]> {
  const out: Document[] = [];
  for await (const d of c) out.push(d);
  return out;
}

let tmp: string;
before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'mor-binary-'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

function folder(name: string, files: Record<string, string | Uint8Array>): string {
  const dir = join(tmp, name);
  mkdirSync(dir, { recursive: true });
  for (const [f, content] of Object.entries(files)) writeFileSync(join(dir, f), content);
  return dir;
}

describe('binary .txt files', () => {
  test('a NUL byte is refused, naming the file and the offset', async () => {
    const dir = folder('nul', { 'a.txt': 'plain text', 'image.txt': Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x00, 0x01]) });
    await assert.rejects(collect(Corpus.fromPaths(dir)), (e: unknown) => e instanceof DataError && /image\.txt: expected a UTF-8 text file, got a binary file \(NUL byte at offset 4\)/.test(e.message));
  });

  test('bytes that are not UTF-8 are refused, naming the file', async () => {
    const dir = folder('latin1', { 'latin1.txt': Uint8Array.from([0x63, 0x61, 0x66, 0xe9, 0x20, 0x21]) });
    await assert.rejects(collect(Corpus.fromPaths(join(dir, 'latin1.txt'))), (e: unknown) => e instanceof DataError && /latin1\.txt: .*not valid UTF-8/.test(e.message));
  });

  test('valid UTF-8 reads as before, a byte-order mark included', async () => {
    const dir = folder('ok', { 'bom.txt': Uint8Array.from([0xef, 0xbb, 0xbf, ...Buffer.from('héllo ✓')]) });
    const docs = await collect(Corpus.fromPaths(dir));
    assert.deepEqual(docs, [{ id: 'bom.txt', text: '\uFEFFhéllo ✓' }]);
    assert.equal(decodeTextFile(Buffer.from('a b'), 'x.txt'), 'a b');
  });
});

describe('skipped files', () => {
  test('files with other extensions are listed in one line, once per corpus', async () => {
    const dir = folder('mixed', { 'a.png': 'x', 'b.bin': 'y', 'c.md': 'z', 'd.txt': 'text', '.hidden': 'h' });
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'e.csv'), 'q');
    const lines: string[] = [];
    const corpus = Corpus.fromPaths(dir, { log: (l) => lines.push(l) });
    await corpus.fingerprint();
    const docs = await collect(corpus);
    assert.equal(docs.length, 1);
    assert.deepEqual(lines, ['skipped 4 files with other extensions than .txt, .jsonl, .parquet: a.png, b.bin, c.md, sub/e.csv']);
  });

  test('no line when nothing was skipped', async () => {
    const lines: string[] = [];
    await collect(Corpus.fromPaths(folder('clean', { 'a.txt': 'text' }), { log: (l) => lines.push(l) }));
    assert.deepEqual(lines, []);
  });
});
