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
 *
 * K and V rows are stored as float32, or as bf16 (dtype 'bf16': Uint16Array bit patterns, each
 * value rounded to nearest-even when written; half the bytes to hold and to read per step).
 *
 * Memory: a block's V rows follow its K rows, in one buffer:
 *
 *   buffer  [K blk 0][V blk 0][K blk 1][V blk 1] ...      kPool = buffer from 0
 *                    ↑ vPool = buffer from one block's K on
 *
 * so the kernels' addressing (K row of slot s at kPool[s · rowSize], V at vPool[s · rowSize])
 * holds when block b owns slots 2b·blockSize .. 2b·blockSize + blockSize − 1: block ids are
 * even, and the slot space (posPool, the pools' rows) is twice the blocks' slots, every other
 * block-sized range of it unused. Attention reads a stream's K and V block by block; side by
 * side they are one run of memory, where two pools made two runs in two places (a 1,024-token
 * stream: one 1 MB run instead of two of 512 KB). A stream's blocks can be reserved up front as
 * neighbours (reserve: the engine does it at admission), so the whole stream is one run too:
 *
 *   stream A reserved [K 0][V 0][K 2][V 2][K 4][V 4] …, stream B [K 8][V 8][K 10] …
 *   (taken one at a time as A and B grow in lockstep: A [0, 4, 8], B [2, 6, 10], interleaved)
 */
import { MorError } from '../errors.js';
import type { KvArray } from '../backend/backend.js';
import { f32ToBf16, storageDtype, type StorageDtype } from '../backend/bf16.js';

/** The pool has no free block left. */
export class KVPoolExhaustedError extends MorError {
  constructor(message: string) {
    super('E_KV_POOL_EXHAUSTED', message);
  }
}

export class KVStream {
  readonly blocks: number[] = [];
  length = 0;
  /** Blocks set aside for this stream's next blocks (PagedKVPool.reserve), the next one last. */
  readonly reserved: number[] = [];
  /**
   * Scratch of the layer call being laid out (ModelRunner.pagedLayout): the call's number when
   * it last listed this stream, and where its block table went. A mark on the stream finds the
   * streams rows share without a Map per layer call.
   */
  layoutCall = -1;
  layoutOffset = 0;
}

export class PagedKVPool {
  /** (numSlots, KVH·HD) in the pool's dtype. */
  readonly kPool: KvArray;
  readonly vPool: KvArray;
  readonly posPool: Int32Array;
  /** Bytes per stored K or V element: 4 (f32) or 2 (bf16). */
  readonly elementBytes: number;
  /** free[b / 2] = 1 when block id b is free (neither in a stream nor reserved for one). */
  private readonly free: Uint8Array;
  private freeCount: number;
  /** Every block index below it is taken (the lowest free one is at or above it). */
  private lowestFree = 0;
  private reservedCount = 0;

  constructor(
    readonly numBlocks: number,
    readonly blockSize: number,
    /** Values per K (or V) row: KVH · HD. */
    readonly rowSize: number,
    /** Storage of K and V (default 'f32'). */
    readonly dtype: StorageDtype = 'f32',
  ) {
    storageDtype('KV pool dtype', dtype);
    const slots = 2 * numBlocks * blockSize; // the slot space (see the top of this file)
    this.elementBytes = dtype === 'bf16' ? 2 : 4;
    const blockBytes = blockSize * rowSize * this.elementBytes;
    // K and V of every block, and one block more so that vPool's view, a block further on, fits
    const buffer = new ArrayBuffer((2 * numBlocks + 1) * blockBytes);
    const view = dtype === 'bf16' ? Uint16Array : Float32Array;
    this.kPool = new view(buffer, 0, slots * rowSize);
    this.vPool = new view(buffer, blockBytes, slots * rowSize);
    this.posPool = new Int32Array(slots);
    // blocks are taken lowest first, so small workloads touch little memory
    this.free = new Uint8Array(numBlocks).fill(1);
    this.freeCount = numBlocks;
  }

  /**
   * Touch every page of the pool once, now. A typed array's pages are mapped on first write, so
   * an untouched pool makes the decoding steps pay the OS for each block a stream first fills
   * (at batch 32, 12 layers: ~14 µs a layer call of `small`, about 3% of a step, through the
   * first pass over the pool). The engine commits its pool when it is built, as llama.cpp clears
   * its K/V cache at load: the memory is the pool's size from the start.
   */
  commit(): void {
    new Uint8Array(this.kPool.buffer).fill(0);
    this.posPool.fill(0);
  }

  /** Blocks neither in a stream nor reserved for one. */
  get freeBlockCount(): number {
    return this.freeCount;
  }

  /** Blocks in streams (holding K/V). */
  get usedBlockCount(): number {
    return this.numBlocks - this.freeCount - this.reservedCount;
  }

  /** Blocks reserved for streams and not yet in them. */
  get reservedBlockCount(): number {
    return this.reservedCount;
  }

  /** Bytes of K, V and positions held by blocks in use (reserved blocks not counted). */
  get bytesInUse(): number {
    return this.usedBlockCount * this.bytesPerBlock;
  }

  /** Bytes per block (K, V and positions; the slot space has two positions per slot of a block). */
  get bytesPerBlock(): number {
    return this.blockSize * (2 * this.rowSize * this.elementBytes + 8);
  }

  /** Blocks needed to add n slots to a stream. */
  blocksNeeded(stream: KVStream, n: number): number {
    const capacity = stream.blocks.length * this.blockSize;
    return Math.max(0, Math.ceil((stream.length + n - capacity) / this.blockSize));
  }

  /**
   * Set aside `blocks` blocks that lie side by side in memory as the stream's next blocks, so
   * that attention reads the stream as one run (a decoding batch grows its streams in lockstep,
   * so blocks taken one at a time interleave the streams: on a Zen 3 paged attention read
   * streams of 16-slot blocks in order 1.13–1.22× faster than the same blocks shuffled). Takes
   * the lowest run of free blocks that long; returns the blocks reserved, 0 when there is no
   * such run (the stream then takes free blocks one at a time, as without a reservation). The
   * blocks are the stream's until release(), which frees those it did not use.
   */
  reserve(stream: KVStream, blocks: number): number {
    if (blocks <= 0 || blocks > this.freeCount) return 0;
    const n = this.numBlocks;
    let run = 0;
    for (let i = this.lowestFree; i < n; i++) {
      run = this.free[i] === 1 ? run + 1 : 0;
      if (run < blocks) continue;
      const first = i - blocks + 1;
      const ids: number[] = [];
      for (let j = i; j >= first; j--) {
        this.free[j] = 0;
        ids.push(2 * j);
      }
      stream.reserved.unshift(...ids); // after any reserved before: the next block is the last
      this.freeCount -= blocks;
      this.reservedCount += blocks;
      return blocks;
    }
    return 0;
  }

  /** The lowest free block, taken (removed from the free set). */
  private takeFree(): number {
    for (let i = this.lowestFree; i < this.numBlocks; i++) {
      if (this.free[i] === 0) continue;
      this.free[i] = 0;
      this.freeCount -= 1;
      this.lowestFree = i + 1;
      return 2 * i;
    }
    const held = this.reservedCount > 0 ? ` (${this.reservedCount} of them reserved for streams)` : '';
    throw new KVPoolExhaustedError(`KV pool exhausted: all ${this.numBlocks} blocks of ${this.blockSize} tokens are in use${held}`);
  }

  private freeBlock(block: number): void {
    const i = block / 2;
    this.free[i] = 1;
    this.freeCount += 1;
    if (i < this.lowestFree) this.lowestFree = i;
  }

  /** Reserve the next slot of a stream (allocating a block when the last one is full: its reserved one, else the lowest free one); returns the slot. */
  appendSlot(stream: KVStream, position: number): number {
    if (stream.length === stream.blocks.length * this.blockSize) {
      const next = stream.reserved.pop();
      if (next !== undefined) this.reservedCount -= 1;
      stream.blocks.push(next ?? this.takeFree());
    }
    const slot = (stream.blocks[Math.floor(stream.length / this.blockSize)] as number) * this.blockSize + (stream.length % this.blockSize);
    stream.length += 1;
    this.posPool[slot] = position;
    return slot;
  }

  /** Write one K row and one V row into a slot (rounded to bf16 in a bf16 pool). k, v (KVH · HD) */
  writeSlot(slot: number, k: Float32Array, kOffset: number, v: Float32Array, vOffset: number): void {
    const at = slot * this.rowSize;
    if (this.kPool instanceof Float32Array && this.vPool instanceof Float32Array) {
      this.kPool.set(k.subarray(kOffset, kOffset + this.rowSize), at);
      this.vPool.set(v.subarray(vOffset, vOffset + this.rowSize), at);
      return;
    }
    for (let i = 0; i < this.rowSize; i++) {
      this.kPool[at + i] = f32ToBf16(k[kOffset + i] as number);
      this.vPool[at + i] = f32ToBf16(v[vOffset + i] as number);
    }
  }

  /** Return a stream's blocks to the pool, and those reserved for it. */
  release(stream: KVStream): void {
    for (const b of stream.blocks) this.freeBlock(b);
    for (const b of stream.reserved) this.freeBlock(b);
    this.reservedCount -= stream.reserved.length;
    stream.blocks.length = 0;
    stream.reserved.length = 0;
    stream.length = 0;
  }
}
