/**
 * Atomic file writes: write to a temporary name in the same directory (same filesystem, so the
 * rename is atomic), fsync, rename. Readers see the old content or the whole new one, never half.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, promises as fs, renameSync, rmSync, writeSync } from 'node:fs';
import * as path from 'node:path';

function tempName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
}

export async function writeFileAtomic(file: string, data: string | Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  const handle = await fs.open(tmp, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    await fs.rename(tmp, file);
  } catch (e) {
    await handle.close().catch(() => {});
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

/** Synchronous variant; `chunks` are written in order (a safetensors header, then tensors). */
export function writeFileAtomicSync(file: string, chunks: string | readonly Uint8Array[]): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempName(file);
  const fd = openSync(tmp, 'w');
  try {
    if (typeof chunks === 'string') writeSync(fd, chunks);
    else {
      for (const c of chunks) {
        let off = 0;
        while (off < c.length) off += writeSync(fd, c, off, c.length - off);
      }
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, file);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true });
    throw e;
  }
}
