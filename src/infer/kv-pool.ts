/**
 * Paged KV cache: one pool of fixed-size blocks shared by every sequence and every layer
 * position, so sequences of different lengths (and tokens that stop at different depths)
 * share memory without fragmentation.
 *
 *   pool (numBlocks · blockSize slots):  [blk 0][blk 1][blk 2][blk 3] ...   each slot: K row, V row, position
 *   stream (one per sequence × cached layer position):  block list [2, 0, 5] + length
 *
 * A sequence owns one stream per unrolled layer position that stores keys/values:
 *   recursion-wise caching — every position (a token appends only at the positions it reaches,
 *                            so a stream of a deep recursion is shorter);
 *   recursive KV sharing   — the unique layers and recursion 1's block slots only; a deeper
 *                            recursion reads recursion 1's stream of the same slot.
 */
import { MorError } from '../errors.js';

/** The pool has no free block left. */
export class KVPoolExhaustedError extends MorError {
  constructor(message: string) {
    super('E_KV_POOL_EXHAUSTED', message);
  }
}

export class KVStream {
  readonly blocks: number[] = [];
  length = 0;
}

export class PagedKVPool {
  readonly kPool: Float32Array;
  readonly vPool: Float32Array;
  readonly posPool: Int32Array;
  private readonly freeBlocks: number[];

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    /** Floats per K (or V) row: KVH · HD. */
    readonly rowSize: number,
  ) {
    const slots = numBlocks * blockSize;
    this.kPool = new Float32Array(slots * rowSize);
    this.vPool = new Float32Array(slots * rowSize);
    this.posPool = new Int32Array(slots);
    // low block ids first, so small workloads touch little memory
    this.freeBlocks = Array.from({ length: numBlocks }, (_, i) => numBlocks - 1 - i);
  }

  get freeBlockCount(): number {
    return this.freeBlocks.length;
  }

  get usedBlockCount(): number {
    return this.numBlocks - this.freeBlocks.length;
  }

  /** Bytes of K, V and positions held by blocks in use. */
  get bytesInUse(): number {
    return this.usedBlockCount * this.blockSize * (2 * this.rowSize * 4 + 4);
  }

  /** Bytes per block (K, V and positions). */
  get bytesPerBlock(): number {
    return this.blockSize * (2 * this.rowSize * 4 + 4);
  }

  /** Blocks needed to add n slots to a stream. */
  blocksNeeded(stream: KVStream, n: number): number {
    const capacity = stream.blocks.length * this.blockSize;
    return Math.max(0, Math.ceil((stream.length + n - capacity) / this.blockSize));
  }

  /** Reserve the next slot of a stream (allocating a block when the last one is full); returns the slot. */
  appendSlot(stream: KVStream, position: number): number {
    if (stream.length === stream.blocks.length * this.blockSize) {
      const block = this.freeBlocks.pop();
      if (block === undefined) {
        throw new KVPoolExhaustedError(`KV pool exhausted: all ${this.numBlocks} blocks of ${this.blockSize} tokens are in use`);
      }
      stream.blocks.push(block);
    }
    const slot = (stream.blocks[Math.floor(stream.length / this.blockSize)] as number) * this.blockSize + (stream.length % this.blockSize);
    stream.length += 1;
    this.posPool[slot] = position;
    return slot;
  }

  /** Write one K row and one V row into a slot. k, v (KVH · HD) */
  writeSlot(slot: number, k: Float32Array, kOffset: number, v: Float32Array, vOffset: number): void {
    this.kPool.set(k.subarray(kOffset, kOffset + this.rowSize), slot * this.rowSize);
    this.vPool.set(v.subarray(vOffset, vOffset + this.rowSize), slot * this.rowSize);
  }

  /** Return a stream's blocks to the pool. */
  release(stream: KVStream): void {
    for (let i = stream.blocks.length - 1; i >= 0; i--) this.freeBlocks.push(stream.blocks[i] as number);
    stream.blocks.length = 0;
    stream.length = 0;
  }
}
