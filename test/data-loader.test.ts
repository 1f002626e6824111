// Batches: packing into rows of T+1, shuffling per epoch from a seed, exact resume from a saved
// cursor, and the fixed-order validation iterator.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { TrainLoader, validationBatches, numValidationRows, type Batch, type LoaderCursor } from '../src/data/loader.js';
import { Rng } from '../src/data/util.js';
import { ArgumentError, DataError } from '../src/errors.js';

/** A stream whose token at position p is p (mod 60000), so rows can be identified by their first token. */
function ramp(n: number): Uint16Array {
  const a = new Uint16Array(n);
  for (let i = 0; i < n; i++) a[i] = i % 60000;
  return a;
}

function rowsOf(b: Batch): number[] {
  const out: number[] = [];
  for (let r = 0; r < b.batchSize; r++) out.push(b.inputs[r * b.seqLen]! / b.seqLen);
  return out;
}

function sameBatch(a: Batch, b: Batch): void {
  assert.equal(a.batchSize, b.batchSize);
  assert.equal(a.seqLen, b.seqLen);
  assert.deepEqual(Array.from(a.inputs), Array.from(b.inputs));
  assert.deepEqual(Array.from(a.targets), Array.from(b.targets));
}

describe('TrainLoader', () => {
  test('rows are T+1 windows at multiples of T; targets are inputs shifted by one', () => {
    const T = 8;
    const B = 4;
    const tokens = ramp(1000);
    const loader = new TrainLoader(tokens, { batchSize: B, seqLen: T, seed: 1 });
    assert.equal(loader.numRows, Math.floor(999 / T));
    const b = loader.next();
    assert.equal(b.inputs.length, B * T);
    assert.equal(b.targets.length, B * T);
    assert.ok(b.inputs instanceof Int32Array && b.targets instanceof Int32Array);
    for (let r = 0; r < B; r++) {
      const start = b.inputs[r * T]!;
      assert.equal(start % T, 0, 'rows start at multiples of T');
      for (let t = 0; t < T; t++) {
        assert.equal(b.inputs[r * T + t], start + t);
        assert.equal(b.targets[r * T + t], start + t + 1);
      }
    }
  });

  test('each epoch visits every row at most once, in a new order, leftovers skipped', () => {
    const T = 5;
    const B = 3;
    const loader = new TrainLoader(ramp(5 * 20 + 1), { batchSize: B, seqLen: T, seed: 9 }); // 20 rows
    assert.equal(loader.numRows, 20);
    assert.equal(loader.batchesPerEpoch, 6);
    const epochs: number[][] = [];
    for (let e = 0; e < 3; e++) {
      const seen: number[] = [];
      for (let k = 0; k < loader.batchesPerEpoch; k++) seen.push(...rowsOf(loader.next()));
      assert.equal(new Set(seen).size, 18, 'no row twice in an epoch');
      assert.ok(seen.every((r) => r >= 0 && r < 20));
      epochs.push(seen);
    }
    assert.notDeepEqual(epochs[0], epochs[1]);
    assert.equal(loader.cursor().epoch, 2);
  });

  test('the same seed gives the same batches; another seed other batches', () => {
    const tokens = ramp(4000);
    const a = new TrainLoader(tokens, { batchSize: 4, seqLen: 16, seed: 5 });
    const b = new TrainLoader(tokens, { batchSize: 4, seqLen: 16, seed: 5 });
    const c = new TrainLoader(tokens, { batchSize: 4, seqLen: 16, seed: 6 });
    for (let i = 0; i < 100; i++) sameBatch(a.next(), b.next());
    const x = new TrainLoader(tokens, { batchSize: 4, seqLen: 16, seed: 5 }).next();
    assert.notDeepEqual(Array.from(c.next().inputs), Array.from(x.inputs));
  });

  test('resuming from a saved cursor yields exactly the same next batches, across epoch ends', () => {
    const tokens = ramp(7 * 23 + 1); // 23 rows: 5 batches of 4 per epoch, 3 left over
    const opts = { batchSize: 4, seqLen: 7, seed: 123 };
    for (const stopAt of [0, 1, 4, 5, 6, 13]) {
      const ref = new TrainLoader(tokens, opts);
      for (let i = 0; i < stopAt; i++) ref.next();
      const saved = JSON.parse(JSON.stringify(ref.cursor())) as LoaderCursor; // through JSON, as a checkpoint would
      const expected: Batch[] = [];
      for (let i = 0; i < 12; i++) expected.push(ref.next());
      const resumed = new TrainLoader(tokens, { ...opts, seed: 999, cursor: saved }); // the cursor wins over the seed
      for (let i = 0; i < 12; i++) sameBatch(resumed.next(), expected[i]!);
    }
  });

  test('the cursor is small plain JSON', () => {
    const loader = new TrainLoader(ramp(1000), { batchSize: 2, seqLen: 10, seed: 0 });
    loader.next();
    const c = loader.cursor();
    assert.deepEqual(Object.keys(c).sort(), ['batchSize', 'epoch', 'numRows', 'position', 'rngState', 'seqLen', 'version']);
    assert.equal(c.position, 2);
    assert.ok(JSON.stringify(c).length < 200);
  });

  test('a cursor from another stream or shape is refused', () => {
    const c = new TrainLoader(ramp(1000), { batchSize: 2, seqLen: 10 }).cursor();
    assert.throws(() => new TrainLoader(ramp(2000), { batchSize: 2, seqLen: 10, cursor: c }), /cursor does not fit/);
    assert.throws(() => new TrainLoader(ramp(1000), { batchSize: 3, seqLen: 10, cursor: c }), DataError);
    assert.throws(() => new TrainLoader(ramp(1000), { batchSize: 2, seqLen: 10, cursor: { ...c, position: -1 } }), DataError);
  });

  test('too few tokens or bad shapes are clear errors', () => {
    assert.throws(() => new TrainLoader(ramp(20), { batchSize: 4, seqLen: 8 }), /training split has 20 tokens: 2 row\(s\).*fewer than batchSize=4/);
    assert.throws(() => new TrainLoader(ramp(0), { batchSize: 1, seqLen: 8 }), DataError);
    assert.throws(() => new TrainLoader(ramp(100), { batchSize: 0, seqLen: 8 }), ArgumentError);
    assert.throws(() => new TrainLoader(ramp(100), { batchSize: 2, seqLen: 1.5 }), ArgumentError);
  });
});

describe('validationBatches', () => {
  test('non-overlapping rows in stream order; the last batch may be smaller', () => {
    const T = 6;
    const tokens = ramp(T * 11 + 1); // 11 rows
    const batches = [...validationBatches(tokens, { batchSize: 4, seqLen: T })];
    assert.deepEqual(
      batches.map((b) => b.batchSize),
      [4, 4, 3],
    );
    assert.deepEqual(batches.flatMap(rowsOf), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for (const b of batches) for (let i = 0; i < b.inputs.length; i++) assert.equal(b.targets[i], b.inputs[i]! + 1);
    assert.equal(numValidationRows(tokens.length, T), 11);
    // fixed: a second pass is identical
    const again = [...validationBatches(tokens, { batchSize: 4, seqLen: T })];
    batches.forEach((b, i) => sameBatch(b, again[i]!));
    assert.equal([...validationBatches(tokens, { batchSize: 4, seqLen: T, maxBatches: 2 })].length, 2);
  });

  test('a split shorter than one row is an error', () => {
    assert.throws(() => [...validationBatches(ramp(5), { batchSize: 2, seqLen: 8 })], /validation split has 5 tokens, fewer than seqLen\+1=9/);
  });
});

describe('Rng', () => {
  test('state round-trips and streams are reproducible', () => {
    const a = new Rng(77);
    for (let i = 0; i < 10; i++) a.nextU32();
    const b = new Rng(a.state());
    for (let i = 0; i < 100; i++) assert.equal(a.nextU32(), b.nextU32());
    const counts = new Array<number>(5).fill(0);
    const r = new Rng(1);
    for (let i = 0; i < 50000; i++) counts[r.nextInt(5)]!++;
    for (const c of counts) assert.ok(Math.abs(c - 10000) < 500, `uniform: ${counts.join(',')}`);
  });
});
