/**
 * Temporary directories that tests always remove: `withTempDir` for one test (try/finally),
 * `suiteTempDir` for a file or a describe block (removed by an after() hook of that scope).
 */
import { after } from 'node:test';
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
