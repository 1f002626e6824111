/**
 * Batches from a packed token stream.
 *
 * Packing: fixed, non-overlapping rows shuffled per epoch. The stream of N tokens is cut into
 * R = ⌊(N − 1) / T⌋ rows; row r reads T + 1 tokens starting at r·T (its last token is the first
 * of row r + 1, so every token but the first is a target exactly once per epoch):
 *
 *   stream   t0 t1 t2 t3 t4 t5 t6 t7 t8 …            (T = 4)
 *   row 0    t0 t1 t2 t3 [t4]     inputs t0..t3, targets t1..t4
 *   row 1                t4 t5 t6 t7 [t8]
 *
 * Each epoch visits the rows in a fresh random order (Fisher–Yates from the epoch's Rng state);
 * batch b of an epoch takes rows perm[b·B … b·B + B − 1]. The R mod B rows left over at the end
 * of an epoch are skipped in that epoch only (another permutation puts them elsewhere).
 * Documents are not aligned to rows: a row may span an EOS into the next document, as in
 * GPT-2/nanoGPT/llm.c training.
 *
 * Cursor: {epoch, position, rngState} where rngState is the Rng state the current epoch's
 * permutation was drawn from. Saving cursor() and passing it back as `cursor` regenerates the
 * same permutation and continues at the same row, so the next batches are identical.
 *
 * Shapes (legend: B batch rows, T sequence length):
 *   inputs  Int32Array (B·T)  row-major, inputs[b·T + t] = stream[row_b·T + t]
 *   targets Int32Array (B·T)  targets[b·T + t] = stream[row_b·T + t + 1]
 */
import { ArgumentError, DataError } from '../errors.js';
import { Rng, type RngState } from './util.js';

/** A token stream: the cache's Uint16Array/Uint32Array, or any integer array. */
export type TokenStream = ArrayLike<number>;

export interface Batch {
  inputs: Int32Array; // (B·T)
  targets: Int32Array; // (B·T)
  batchSize: number; // B
  seqLen: number; // T
}

/** Where a TrainLoader is: plain JSON-serialisable data. */
export interface LoaderCursor {
  version: 1;
  epoch: number;
  /** index into this epoch's row permutation of the next batch's first row */
  position: number;
  /** Rng state this epoch's permutation is drawn from */
  rngState: RngState;
  /** checked on resume: the cursor only makes sense over the same rows */
  numRows: number;
  seqLen: number;
  batchSize: number;
}

export interface TrainLoaderOptions {
  batchSize: number;
  seqLen: number;
  /** Seed of the shuffle (default 0); ignored when resuming from a cursor. */
  seed?: number;
  /** Resume exactly from a cursor saved with cursor(). */
  cursor?: LoaderCursor;
}

function checkShape(batchSize: number, seqLen: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ArgumentError(`batchSize must be a positive integer, got ${batchSize}`);
  if (!Number.isInteger(seqLen) || seqLen < 1) throw new ArgumentError(`seqLen must be a positive integer, got ${seqLen}`);
}

/** Copy row `row` of the stream into inputs/targets at batch slot `slot`. */
function fillRow(tokens: TokenStream, row: number, slot: number, T: number, inputs: Int32Array, targets: Int32Array): void {
  const src = row * T;
  const dst = slot * T;
  for (let t = 0; t < T; t++) {
    inputs[dst + t] = tokens[src + t]!;
    targets[dst + t] = tokens[src + t + 1]!;
  }
}

/** Shuffled training batches over the packed stream, endless (epoch after epoch), resumable. */
export class TrainLoader {
  readonly batchSize: number;
  readonly seqLen: number;
  readonly numRows: number;
  private readonly tokens: TokenStream;
  private epoch: number;
  private position: number;
  private epochRngState: RngState;
  private perm: Uint32Array;

  constructor(tokens: TokenStream, options: TrainLoaderOptions) {
    checkShape(options.batchSize, options.seqLen);
    this.tokens = tokens;
    this.batchSize = options.batchSize;
    this.seqLen = options.seqLen;
    this.numRows = tokens.length > 0 ? Math.floor((tokens.length - 1) / this.seqLen) : 0;
    if (this.numRows < this.batchSize) {
      throw new DataError(
        `training split has ${tokens.length} tokens: ${this.numRows} row(s) of seqLen+1=${this.seqLen + 1}, fewer than batchSize=${this.batchSize}`,
      );
    }
    const c = options.cursor;
    if (c !== undefined) {
      if (c.version !== 1 || c.numRows !== this.numRows || c.seqLen !== this.seqLen || c.batchSize !== this.batchSize) {
        throw new DataError(
          `cursor does not fit this loader: cursor has numRows=${c.numRows}, seqLen=${c.seqLen}, batchSize=${c.batchSize}; ` +
            `loader has numRows=${this.numRows}, seqLen=${this.seqLen}, batchSize=${this.batchSize}`,
        );
      }
      if (!Number.isInteger(c.position) || c.position < 0 || c.position > this.numRows || !Number.isInteger(c.epoch) || c.epoch < 0) {
        throw new DataError(`cursor has an invalid epoch/position: ${c.epoch}/${c.position}`);
      }
      this.epoch = c.epoch;
      this.position = c.position;
      this.epochRngState = [...c.rngState] as RngState;
    } else {
      this.epoch = 0;
      this.position = 0;
      this.epochRngState = new Rng(options.seed ?? 0).state();
    }
    this.perm = new Uint32Array(this.numRows);
    this.drawPermutation();
  }

  /** Batches per epoch (the leftover R mod B rows are skipped). */
  get batchesPerEpoch(): number {
    return Math.floor(this.numRows / this.batchSize);
  }

  /** The state before the next batch; pass it back as `cursor` to resume exactly here. */
  cursor(): LoaderCursor {
    return {
      version: 1,
      epoch: this.epoch,
      position: this.position,
      rngState: [...this.epochRngState] as RngState,
      numRows: this.numRows,
      seqLen: this.seqLen,
      batchSize: this.batchSize,
    };
  }

  /** The next batch (B, T). */
  next(): Batch {
    const B = this.batchSize;
    const T = this.seqLen;
    if (this.position + B > this.numRows) this.startNextEpoch();
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) fillRow(this.tokens, this.perm[this.position + b]!, b, T, inputs, targets);
    this.position += B;
    return { inputs, targets, batchSize: B, seqLen: T };
  }

  private drawPermutation(): void {
    for (let i = 0; i < this.numRows; i++) this.perm[i] = i;
    new Rng(this.epochRngState).shuffle(this.perm);
  }

  private startNextEpoch(): void {
    // the next epoch's state is where this epoch's shuffle left the generator
    const rng = new Rng(this.epochRngState);
    rng.shuffle(new Uint32Array(this.numRows));
    this.epochRngState = rng.state();
    this.epoch++;
    this.position = 0;
    this.drawPermutation();
  }
}

export interface ValidationOptions {
  batchSize: number;
  seqLen: number;
  /** Stop after this many batches (default: all rows). */
  maxBatches?: number;
}

/**
 * Validation batches: the same non-overlapping rows, in stream order, no shuffling. The last
 * batch may have fewer rows (its batchSize says how many) so that every row is used once.
 */
export function* validationBatches(tokens: TokenStream, options: ValidationOptions): Generator<Batch> {
  checkShape(options.batchSize, options.seqLen);
  const T = options.seqLen;
  const numRows = tokens.length > 0 ? Math.floor((tokens.length - 1) / T) : 0;
  if (numRows === 0) {
    throw new DataError(`validation split has ${tokens.length} tokens, fewer than seqLen+1=${T + 1}`);
  }
  const maxBatches = options.maxBatches ?? Infinity;
  let emitted = 0;
  for (let row = 0; row < numRows && emitted < maxBatches; row += options.batchSize, emitted++) {
    const B = Math.min(options.batchSize, numRows - row);
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) fillRow(tokens, row + b, b, T, inputs, targets);
    yield { inputs, targets, batchSize: B, seqLen: T };
  }
}

/** Number of rows validationBatches yields in total. */
export function numValidationRows(numTokens: number, seqLen: number): number {
  return numTokens > 0 ? Math.floor((numTokens - 1) / seqLen) : 0;
}
