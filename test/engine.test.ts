// The inference engine: greedy decoding equals the training forward's causal argmax path,
// batching does not change a request's output, KV bytes follow each strategy's layout, and the
// scheduler (driven by a fake model) admits, mixes depths, is fair and frees memory on cancel.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { availableBackends, setBackend } from '../src/backend/index.js';
import { preset } from '../src/model/presets.js';
import { validateConfig } from '../src/model/config.js';
import { createModel } from '../src/model/model.js';
import { Engine, type StepRunner } from '../src/infer/engine.js';
import { KVStream, PagedKVPool } from '../src/infer/kv-pool.js';
import { ModelRunner, type DepthControl, type SequenceKV, type TokenState } from '../src/infer/runner.js';
import { headDim } from '../src/model/config.js';
import { kvProjectionParams, linearParamsPerLayer } from '../src/model/flops.js';
import { Rng } from '../src/util/rng.js';
import { forwardGreedy, generateAll } from './helpers/greedy.js';

// MoE variants beyond these two presets are in moe.test.ts
const MODELS = ['tiny', 'tiny-rec3', 'tiny-mor3', 'tiny-mor3-token', 'tiny-mor3-kvshare', 'tiny-mor3-cycle', 'tiny-mor3-kvshare-cycle', 'tiny-mor4', 'tiny-moe', 'tiny-mor3-moe', 'tiny-mod'];

for (const backendName of availableBackends()) {
  describe(`engine on ${backendName}`, () => {
    for (const name of MODELS) {
      test(`${name}: greedy engine output = training forward argmax (causal), every batching mode`, async () => {
        setBackend(backendName);
        const model = createModel(preset(name), 21);
        const prompt = Int32Array.from([3, 141, 59, 265, 35, 89]);
        const expected = forwardGreedy(model, prompt, 10);
        for (const batching of ['depth', 'sequence', 'static'] as const) {
          const engine = new Engine(model, { maxBatch: 4, batching, blockSize: 4 });
          const [tokens] = await generateAll(engine, [prompt], [{ maxTokens: 10, temperature: 0 }]);
          assert.deepEqual(tokens, expected, `${name} ${batching}`);
          assert.equal(engine.kvBytes, 0, 'memory returned after the request');
        }
      });
    }

    test('tiny-mod at a larger init (routing moves the argmax): several requests at once, every batching mode', async () => {
      setBackend(backendName);
      // at the default init the routed layers barely move the logits; at 0.1 running a token
      // through a layer it should skip (or skipping one it should run) changes the greedy path
      const model = createModel(validateConfig({ ...preset('tiny-mod'), initializer_range: 0.1 }), 22);
      const prompts = [Int32Array.from([3, 141, 59, 265, 35, 89]), Int32Array.from([400, 7]), Int32Array.from([12, 13, 14, 15, 16, 17, 18, 19, 20])];
      const expected = prompts.map((p) => forwardGreedy(model, p, 8));
      for (const batching of ['depth', 'sequence', 'static'] as const) {
        const engine = new Engine(model, { maxBatch: 2, batching, blockSize: 4 });
        const got = await generateAll(engine, prompts, prompts.map(() => ({ maxTokens: 8, temperature: 0 })));
        assert.deepEqual(got, expected, batching);
        assert.equal(engine.kvBytes, 0, 'memory returned after the requests');
      }
    });

    test('relaxed (LoRA) recursive model: rows at different depths apply their own LoRA', async () => {
      setBackend(backendName);
      const base = preset('tiny-mor3');
      const cfg = validateConfig({ ...base, recursion: { ...base.recursion, lora_rank: 4 } });
      const model = createModel(cfg, 9);
      // LoRA B starts at zero; give it values so that a wrong depth's LoRA would show
      const rng = new Rng(4);
      for (const [name, t] of model.params.byName) {
        if (name.endsWith('lora_B')) for (let i = 0; i < t.size; i++) t.f32()[i] = 0.05 * rng.normal();
      }
      const prompts = [Int32Array.from([7, 8, 9, 10]), Int32Array.from([300, 2, 51])];
      const expected = prompts.map((p) => forwardGreedy(model, p, 6));
      const engine = new Engine(model, { maxBatch: 4, batching: 'depth' });
      const got = await generateAll(engine, prompts, prompts.map(() => ({ maxTokens: 6, temperature: 0 })));
      assert.deepEqual(got, expected);
    });

    test('batching does not change a request (alone vs among 16 others, same seed)', async () => {
      setBackend(backendName);
      const model = createModel(preset('tiny-mor3'), 4);
      const rng = new Rng(8);
      const prompts = Array.from({ length: 17 }, (_, i) => Int32Array.from({ length: 3 + (i % 5) }, () => rng.nextInt(512)));
      const opts = prompts.map((_, i) => ({ maxTokens: 6 + (i % 4), temperature: 0.9, topK: 50, seed: 100 + i }));
      const alone = await generateAll(new Engine(model, { maxBatch: 1 }), [prompts[0] as Int32Array], [opts[0] as (typeof opts)[number]]);
      for (const batching of ['depth', 'sequence'] as const) {
        const together = await generateAll(new Engine(model, { maxBatch: 8, batching }), prompts, opts);
        assert.deepEqual(together[0], alone[0], batching);
        together.forEach((t, i) => assert.equal(t.length, opts[i]?.maxTokens));
      }
    });

    test('KV bytes follow recursion-wise caching and KV sharing', () => {
      setBackend(backendName);
      for (const name of ['tiny-mor3', 'tiny-mor3-kvshare', 'tiny']) {
        const model = createModel(preset(name), 2);
        const engine = new Engine(model, { maxBatch: 2, blockSize: 4 });
        const c = model.config;
        const h = engine.submit(Int32Array.from({ length: 13 }, (_, i) => i + 1), { maxTokens: 1, temperature: 0 });
        // prefill ran at admission; inspect the sequence before the request ends
        engine.step();
        void h;
        const runner = engine.runner;
        const L = c.num_hidden_layers;
        const expectedStreams = name === 'tiny-mor3-kvshare' ? 2 + 1 : L; // unique ends + recursion 1's block (K = 1)
        assert.equal(runner.numStreams, expectedStreams, name);
        assert.equal(engine.kvBytes, 0, `${name}: a one-token request has finished and released its blocks`);
      }
    });
  });
}

describe('KV pool and memory accounting', () => {
  test('blocks are shared, counted and returned', () => {
    const pool = new PagedKVPool(6, 4, 8);
    const a = new KVStream();
    const b = new KVStream();
    const row = new Float32Array(8).fill(1);
    for (let i = 0; i < 5; i++) pool.writeSlot(pool.appendSlot(a, i), row, 0, row, 0);
    for (let i = 0; i < 3; i++) pool.appendSlot(b, i);
    assert.equal(pool.usedBlockCount, 3); // 2 for a (5 tokens), 1 for b
    assert.equal(pool.bytesInUse, 3 * 4 * (2 * 8 * 4 + 8)); // K, V and two positions a slot (the slot space)
    pool.release(a);
    assert.equal(pool.usedBlockCount, 1);
    for (let i = 0; i < 21; i++) pool.appendSlot(b, i + 3); // 24 tokens: all 6 blocks
    assert.throws(() => pool.appendSlot(b, 99), /KV pool exhausted/);
  });

  test("a block's V rows follow its K rows in one buffer, and no slot's rows overlap another's", () => {
    for (const dtype of ['f32', 'bf16'] as const) {
      const bs = 4;
      const rowSize = 8;
      const pool = new PagedKVPool(6, bs, rowSize, dtype);
      const eb = pool.elementBytes;
      assert.equal(pool.kPool.buffer, pool.vPool.buffer);
      const streams = [new KVStream(), new KVStream(), new KVStream()];
      const slots: number[] = [];
      // interleaved appends (as a batch decodes), 18 slots over all 6 blocks
      for (let t = 0; t < 6; t++) for (const s of streams) slots.push(pool.appendSlot(s, t));
      slots.forEach((slot, i) => pool.writeSlot(slot, new Float32Array(rowSize).fill(2 * i + 1), 0, new Float32Array(rowSize).fill(2 * i + 2), 0));
      const bytes = new Set<number>();
      slots.forEach((slot, i) => {
        const block = Math.floor(slot / bs);
        assert.equal(block % 2, 0, 'block ids are even');
        // K row of the slot, and its V row one block's K further on
        const kAt = pool.kPool.byteOffset + slot * rowSize * eb;
        const vAt = pool.vPool.byteOffset + slot * rowSize * eb;
        assert.equal(vAt - kAt, bs * rowSize * eb);
        for (let c = 0; c < rowSize; c++) {
          assert.equal(pool.kPool[slot * rowSize + c], dtype === 'f32' ? 2 * i + 1 : new Uint16Array(new Float32Array([2 * i + 1]).buffer)[1]);
          assert.equal(pool.vPool[slot * rowSize + c], dtype === 'f32' ? 2 * i + 2 : new Uint16Array(new Float32Array([2 * i + 2]).buffer)[1]);
        }
        for (const at of [kAt, vAt]) {
          assert.ok(!bytes.has(at), `slot ${slot}'s rows overlap another's`);
          bytes.add(at);
        }
      });
      assert.ok(Math.max(...bytes) + rowSize * eb <= pool.kPool.buffer.byteLength);
    }
  });

  test('a reservation gives a stream blocks side by side, however other streams grow; release frees what it did not use', () => {
    const pool = new PagedKVPool(10, 2, 4);
    const a = new KVStream();
    const b = new KVStream();
    assert.equal(pool.reserve(a, 4), 4);
    assert.equal(pool.reservedBlockCount, 4);
    assert.equal(pool.freeBlockCount, 6);
    assert.equal(pool.usedBlockCount, 0);
    assert.equal(pool.bytesInUse, 0, 'reserved blocks hold no K/V yet');
    // lockstep growth, as a batch decodes: without the reservation a's blocks would interleave with b's
    for (let t = 0; t < 7; t++) {
      pool.appendSlot(a, t);
      pool.appendSlot(b, t);
    }
    assert.deepEqual(a.blocks, [0, 2, 4, 6], 'a: its reserved run, in order (ids are even: consecutive ids are neighbours)');
    assert.deepEqual(b.blocks, [8, 10, 12, 14], 'b: the lowest free blocks past the run');
    assert.equal(pool.reservedBlockCount, 0);
    assert.equal(pool.usedBlockCount, 8);
    pool.appendSlot(a, 7);
    pool.appendSlot(a, 8); // past its reservation: a free block
    assert.deepEqual(a.blocks, [0, 2, 4, 6, 16]);
    // a reservation left partly unused goes back on release
    const c = new KVStream();
    assert.equal(pool.reserve(c, 2), 0, 'one block free: no run of 2');
    pool.release(b);
    assert.equal(pool.reserve(c, 3), 3);
    assert.deepEqual([...c.reserved].reverse(), [8, 10, 12]);
    pool.appendSlot(c, 0);
    pool.release(c);
    assert.equal(pool.reservedBlockCount, 0);
    assert.equal(pool.freeBlockCount, 5);
    pool.release(a);
    assert.equal(pool.freeBlockCount, 10);
    assert.equal(pool.bytesInUse, 0);
  });

  test('the pool runs out with blocks reserved for others, and says so', () => {
    const pool = new PagedKVPool(3, 2, 4);
    const a = new KVStream();
    const b = new KVStream();
    assert.equal(pool.reserve(a, 2), 2);
    pool.appendSlot(b, 0);
    pool.appendSlot(b, 1);
    assert.throws(() => pool.appendSlot(b, 2), /KV pool exhausted: all 3 blocks of 2 tokens are in use \(2 of them reserved for streams\)/);
    for (let t = 0; t < 4; t++) pool.appendSlot(a, t); // a's own reservation still serves it
    assert.deepEqual(a.blocks, [0, 2]);
  });

  test('the engine reserves each stream of an admitted request side by side: a decoding batch keeps every stream one run', async () => {
    const model = createModel(preset('tiny-mor3'), 5);
    const engine = new Engine(model, { maxBatch: 3, blockSize: 2 });
    const pool = engine.runner.pool;
    const prompts = [5, 9, 3].map((n, r) => Int32Array.from({ length: n }, (_, i) => (i * 13 + r) % 256));
    const handles = prompts.map((p) => engine.submit(p, { maxTokens: 12, temperature: 0 }));
    const seen: number[][] = [];
    while (engine.numWaiting > 0 || engine.numRunning > 0) {
      engine.step();
      for (const r of (engine as unknown as { running: Array<{ seq: SequenceKV | null }> }).running)
        for (const s of r.seq?.streams ?? []) seen.push([...s.blocks]);
    }
    await Promise.all(handles.map((h) => h.result));
    assert.ok(seen.some((b) => b.length >= 3), 'streams grew over several blocks');
    for (const blocks of seen) for (let i = 1; i < blocks.length; i++) assert.equal(blocks[i], (blocks[i - 1] as number) + 2, `blocks ${blocks.join(',')} lie side by side`);
    assert.equal(pool.reservedBlockCount, 0);
    assert.equal(pool.freeBlockCount, pool.numBlocks);
  });

  test('KV sharing at prefill: under Cycle sharing only the last prompt token goes deeper; under Middle-Cycle every token does', () => {
    for (const [name, expectDeep] of [['tiny-mor3-kvshare-cycle', false], ['tiny-mor3-kvshare', true]] as const) {
      const cfg = preset(name);
      const model = createModel(validateConfig({ ...cfg, mor: { ...cfg.mor, capacities: [1, 1, 1] } }), 3); // every token may run 3
      const runner = new Engine(model, { maxBatch: 1, blockSize: 4 }).runner;
      const seq = runner.newSequence();
      const { depths } = runner.prefill(seq, Int32Array.from({ length: 12 }, (_, i) => i + 1), { maxDepth: 3, threshold: 0.5, exitConfidence: null });
      assert.equal(depths[11], 3, name);
      assert.deepEqual(Array.from(depths.slice(0, 11)), new Array<number>(11).fill(expectDeep ? 3 : 1), name);
      runner.releaseSequence(seq);
    }
  });

  test('recursion-wise streams of a MoR model: deeper positions hold fewer tokens', async () => {
    const cfg = preset('tiny-mor3');
    const model = createModel(validateConfig({ ...cfg, mor: { ...cfg.mor, capacities: [1, 0.5, 0.25] } }), 3);
    const engine = new Engine(model, { maxBatch: 1, blockSize: 2 });
    const runner = engine.runner;
    const seq = runner.newSequence();
    const { depths } = runner.prefill(seq, Int32Array.from({ length: 40 }, (_, i) => (i * 7) % 512), { maxDepth: 3, threshold: 0.5, exitConfidence: null });
    const lengths = seq.streams.map((s) => s.length);
    // position 0 (first layer) and the last layer see every token; recursion r's position sees
    // exactly the tokens whose depth exceeds r
    assert.equal(lengths[0], 40);
    assert.equal(lengths[lengths.length - 1], 40);
    for (let r = 0; r < 3; r++) assert.equal(lengths[1 + r], Array.from(depths).filter((d) => d > r).length);
    const blocks = seq.streams.reduce((acc, s) => acc + Math.ceil(s.length / 2), 0);
    assert.equal(runner.sequenceBytes(seq), blocks * runner.pool.bytesPerBlock);
    runner.releaseSequence(seq);
    assert.equal(runner.pool.bytesInUse, 0);
  });
});

/**
 * A fake runner: no model, deterministic depths (1 + pos mod 3), one KV slot per stream and
 * token, logits whose argmax is (pos + 1) mod V. It records every block call's depths.
 */
class FakeRunner implements StepRunner {
  readonly numRecursions = 3;
  readonly numStreams = 2;
  readonly pool = new PagedKVPool(64, 4, 2);
  readonly blockCalls: number[][] = [];
  readonly V = 16;

  newSequence(): SequenceKV {
    return { streams: [new KVStream(), new KVStream()] };
  }
  releaseSequence(seq: SequenceKV): void {
    for (const s of seq.streams) this.pool.release(s);
  }
  sequenceBytes(seq: SequenceKV): number {
    return seq.streams.reduce((a, s) => a + s.blocks.length, 0) * this.pool.bytesPerBlock;
  }
  newTokens(seq: SequenceKV, ids: ArrayLike<number>, startPos: number, control: DepthControl): TokenState[] {
    return Array.from({ length: ids.length }, (_, i) => ({
      seq, pos: startPos + i, h: new Float32Array(0), depth: 0, control, next: 'block' as const, gate: 1, h1: null,
      lastDepth: Math.min(control.maxDepth, 1 + ((startPos + i) % 3)) - 1, lastWeight: 1,
    }));
  }
  private store(rows: TokenState[]): void {
    for (const r of rows) for (const s of r.seq.streams) this.pool.appendSlot(s, r.pos);
  }
  prefill(seq: SequenceKV, ids: Int32Array, control: DepthControl) {
    const rows = this.newTokens(seq, ids, 0, control);
    this.store(rows);
    const logits = new Float32Array(this.V);
    logits[ids.length % this.V] = 1;
    return { logits, depths: Int32Array.from(rows, (r) => r.lastDepth + 1) };
  }
  enter(rows: TokenState[]): void {
    this.store(rows);
  }
  block(rows: TokenState[]): void {
    this.blockCalls.push(rows.map((r) => r.depth));
    for (const r of rows) {
      if (r.depth === r.lastDepth) r.next = 'exit';
      r.depth++;
    }
  }
  exit(rows: TokenState[]): Float32Array {
    const out = new Float32Array(rows.length * this.V);
    rows.forEach((r, i) => {
      out[i * this.V + ((r.pos + 1) % this.V)] = 1;
    });
    return out;
  }
}

describe('scheduler (fake model)', () => {
  test('depth-wise: admission up to max_batch, mixed depths in one block call, all finish', async () => {
    const runner = new FakeRunner();
    const engine = new Engine(null, { maxBatch: 3, batching: 'depth', runner });
    const handles = Array.from({ length: 7 }, (_, i) => engine.submit(Int32Array.from({ length: 2 + i }, () => 1), { maxTokens: 5, temperature: 0 }));
    engine.step();
    assert.equal(engine.numRunning, 3);
    assert.equal(engine.numWaiting, 4);
    await engine.runUntilIdle();
    const results = await Promise.all(handles.map((h) => h.result));
    for (const r of results) {
      assert.equal(r.tokens.length, 5);
      assert.equal(r.finishReason, 'max_tokens');
    }
    assert.ok(runner.blockCalls.every((c) => c.length <= 3), 'never more than max_batch rows');
    assert.ok(runner.blockCalls.some((c) => new Set(c).size > 1), 'some block call mixed depths');
    assert.equal(runner.pool.bytesInUse, 0);
    // depth-wise: each token costs its own depth in steps, no waiting for the deepest
    const totalDepth = results.reduce((a, r) => a + r.depths.slice(1).reduce((x, y) => x + y, 0), 0);
    assert.equal(runner.blockCalls.flat().length, totalDepth);
  });

  test('sequence-wise: a step runs until its deepest token exits', async () => {
    const runner = new FakeRunner();
    const engine = new Engine(null, { maxBatch: 4, batching: 'sequence', runner });
    for (let i = 0; i < 4; i++) engine.submit(Int32Array.of(1, 2, 3 + i), { maxTokens: 3, temperature: 0 });
    await engine.runUntilIdle();
    // within one step, consecutive block calls shrink as tokens exit: depths rise together
    assert.ok(runner.blockCalls.every((c) => new Set(c).size === 1), 'no depth mixing within a call');
  });

  test('static batching admits the next batch only when the current one has finished', async () => {
    const runner = new FakeRunner();
    const engine = new Engine(null, { maxBatch: 2, batching: 'static', runner });
    engine.submit(Int32Array.of(1), { maxTokens: 2, temperature: 0 });
    engine.submit(Int32Array.of(1), { maxTokens: 6, temperature: 0 });
    engine.submit(Int32Array.of(1), { maxTokens: 2, temperature: 0 });
    engine.step();
    engine.step();
    engine.step();
    assert.equal(engine.numRunning, 1, 'the short request finished; its slot stays empty');
    assert.equal(engine.numWaiting, 1);
    await engine.runUntilIdle();
    assert.equal(engine.numWaiting, 0);
  });

  test('no starvation: the first request finishes while others keep arriving; cancellation frees memory', async () => {
    const runner = new FakeRunner();
    const engine = new Engine(null, { maxBatch: 2, runner });
    const first = engine.submit(Int32Array.of(1, 1), { maxTokens: 8, temperature: 0 });
    const victim = engine.submit(Int32Array.of(1, 1, 1), { maxTokens: 60, temperature: 0 });
    let done = false;
    void first.result.then(() => {
      done = true;
    });
    for (let i = 0; i < 40 && !done; i++) {
      engine.submit(Int32Array.of(2), { maxTokens: 3, temperature: 0 });
      engine.step();
      await Promise.resolve();
    }
    assert.ok(done, 'the first request finished');
    const before = runner.pool.bytesInUse;
    victim.cancel();
    engine.step();
    const vr = await victim.result;
    assert.equal(vr.finishReason, 'cancelled');
    assert.ok(runner.pool.bytesInUse < before, 'the cancelled request released its blocks');
    await engine.runUntilIdle();
    assert.equal(runner.pool.bytesInUse, 0);
  });

  test('streaming iterator yields the tokens as they come, then ends', async () => {
    const runner = new FakeRunner();
    const engine = new Engine(null, { maxBatch: 2, runner });
    const h = engine.submit(Int32Array.of(5, 5, 5), { maxTokens: 4, temperature: 0 });
    const seen: number[] = [];
    const consumer = (async () => {
      for await (const t of h) seen.push(t);
    })();
    await engine.runUntilIdle();
    await consumer;
    assert.deepEqual(seen, (await h.result).tokens);
    assert.equal(seen.length, 4);
  });
});

describe('work meter (the roofline of bench:infer)', () => {
  test('a prompt reads its K/V stream once per layer call and sees keys causally; a decoding row reads every key', () => {
    const model = createModel(preset('tiny'), 1);
    const c = model.config;
    const hd = headDim(c);
    const rowSize = c.num_key_value_heads * hd;
    const runner = new ModelRunner(model, new PagedKVPool(64, 16, rowSize));
    const calls: number[][] = [];
    runner.meter = { call: (lf, wb, af, kb) => void calls.push([lf, wb, af, kb]) };
    const seq = runner.newSequence();
    const n = 10;
    const control = { maxDepth: 1, threshold: 0.5, exitConfidence: null };
    runner.prefill(seq, Int32Array.from({ length: n }, (_, i) => i + 1), control);
    const layers = calls.filter((x) => (x[2] as number) > 0);
    assert.equal(layers.length, c.num_hidden_layers);
    for (const [, , attentionFlops, kvBytes] of layers) {
      assert.equal(kvBytes, 2 * 4 * n * rowSize, 'K and V of n rows, f32, once');
      assert.equal(attentionFlops, (4 * hd * c.num_attention_heads * n * (n + 1)) / 2, 'causal pairs');
    }
    // one decoding token at position n: n + 1 keys, read once
    calls.length = 0;
    const [row] = runner.newTokens(seq, [5], n, control);
    const rows = [row as TokenState];
    runner.enter(rows, Int32Array.of(5));
    while (rows[0]?.next === 'block') runner.block(rows);
    runner.exit(rows, [false]);
    const decode = calls.filter((x) => (x[2] as number) > 0);
    assert.equal(decode.length, c.num_hidden_layers);
    for (const [, , attentionFlops, kvBytes] of decode) {
      assert.equal(kvBytes, 2 * 4 * (n + 1) * rowSize);
      assert.equal(attentionFlops, 4 * hd * c.num_attention_heads * (n + 1));
    }
    runner.releaseSequence(seq);
  });

  test('under KV sharing a layer call whose rows store no K/V counts neither the FLOPs nor the bytes of Wk, Wv', () => {
    // tiny-mor3-kvshare, Middle-Cycle: layer 0, the shared layer at recursions 1-3, the last
    // layer; at threshold 0 every prompt token runs all three recursions, and recursions 2 and 3
    // read recursion 1's stream (the fused kernel computes their q alone)
    const model = createModel(preset('tiny-mor3-kvshare'), 1);
    const c = model.config;
    const runner = new ModelRunner(model, new PagedKVPool(64, 16, c.num_key_value_heads * headDim(c)));
    const calls: number[][] = [];
    runner.meter = { call: (lf, wb, af, kb) => void calls.push([lf, wb, af, kb]) };
    const seq = runner.newSequence();
    const n = 6;
    runner.prefill(seq, Int32Array.from({ length: n }, (_, i) => i + 1), { maxDepth: 3, threshold: 0, exitConfidence: null });
    const params = linearParamsPerLayer(c, 0);
    const kv = kvProjectionParams(c);
    const layers = calls.filter((x) => (x[2] as number) > 0);
    assert.equal(layers.length, 5);
    const qOnly = layers.filter(([, wb]) => wb === 4 * (params - kv));
    const full = layers.filter(([, wb]) => wb === 4 * params);
    assert.equal(qOnly.length, 2, 'recursions 2 and 3');
    assert.equal(full.length, 3, 'layer 0, recursion 1, the last layer');
    for (const [lf] of qOnly) assert.equal(lf, 2 * n * (params - kv));
    for (const [lf] of full) assert.equal(lf, 2 * n * params);
    runner.releaseSequence(seq);
  });
});
