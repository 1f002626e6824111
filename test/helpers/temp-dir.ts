// A temporary folder for one test file: made before its tests, removed (recursively) after.
import { before, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Registers before/after hooks; call the returned function inside tests for the folder's path. */
export function useTempDir(prefix: string): () => string {
  let dir: string | undefined;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  after(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    if (dir === undefined) throw new Error('useTempDir: the folder exists only while the tests run');
    return dir;
  };
}

/** A temporary folder holding a corpus (written by `writeCorpus`, which returns its path) and a cache folder. */
export function useCorpusFolder(prefix: string, writeCorpus: (root: string) => string): () => { root: string; corpus: string; cache: string } {
  const tempRoot = useTempDir(prefix);
  let made: { root: string; corpus: string; cache: string } | undefined;
  before(() => {
    const root = tempRoot();
    made = { root, corpus: writeCorpus(root), cache: join(root, 'cache') };
  });
  return () => {
    if (made === undefined) throw new Error('useCorpusFolder: the folder exists only while the tests run');
    return made;
  };
}
