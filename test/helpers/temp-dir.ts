/**
 * Temporary directories that tests always remove: `useTempDir` / `useCorpusFolder` for a test
 * file (before/after hooks), `withTempDir` for one test (try/finally), `suiteTempDir` for a file
 * or a describe block (removed by an after() hook of that scope).
 */
import { before, after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function makeTempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

/** Runs fn with a fresh directory under the OS temp folder, and removes it however fn ends. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = makeTempDir(prefix);
  try {
    return await fn(dir);
  } finally {
    removeDir(dir);
  }
}

/**
 * A fresh directory, removed after the enclosing scope: call it at a file's top level or in a
 * describe() body (not inside a test, where after() would not attach to the test).
 */
export function suiteTempDir(prefix: string): string {
  const dir = makeTempDir(prefix);
  after(() => removeDir(dir));
  return dir;
}

/** Registers before/after hooks; call the returned function inside tests for the folder's path. */
export function useTempDir(prefix: string): () => string {
  let dir: string | undefined;
  before(() => {
    dir = makeTempDir(prefix);
  });
  after(() => {
    if (dir !== undefined) removeDir(dir);
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
