/**
 * Property-based tests (fast-check) for the three parsers of untrusted input: the safetensors
 * reader, config validation and the tokenizer.json loader. Fed arbitrary and mutated inputs,
 * each either returns a well-formed result or throws its typed error (CheckpointError,
 * ConfigError, DataError/ArgumentError); never a TypeError or RangeError, never a hang (every
 * property runs a bounded number of cases under a test timeout), never an allocation larger
 * than the input justifies.
 *
 * Runs are seeded so a failure reproduces; fast-check prints the shrunk counterexample.
 * MOR_PROPERTY_SCALE=20 (and another MOR_PROPERTY_SEED) runs a longer search.
 */
import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CheckpointError, parseSafetensors, serializeSafetensors, type NamedArray } from '../src/util/safetensors.js';
import { ConfigError, validateConfig } from '../src/model/config.js';
import { PRESET_NAMES, preset } from '../src/model/presets.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { trainBpe } from '../src/data/bpe-train.js';
import { ArgumentError, DataError } from '../src/errors.js';

/** n cases per property (×MOR_PROPERTY_SCALE, for a longer hunt), from a fixed seed (or MOR_PROPERTY_SEED). */
const runs = (n: number): fc.Parameters<unknown> => ({
  seed: Number(process.env['MOR_PROPERTY_SEED'] ?? 20240611),
  numRuns: Math.ceil(n * Number(process.env['MOR_PROPERTY_SCALE'] ?? 1)),
});
const RUNS = runs(150);
const TIMEOUT = { timeout: 30_000 };

/** Calls fn; an error must be an instance of one of `types` (the property fails otherwise). */
function typedOutcome<T>(fn: () => T, types: readonly (new (...args: never[]) => Error)[]): T | Error {
  try {
    return fn();
  } catch (e) {
    if (types.some((t) => e instanceof t)) return e as Error;
    throw new Error(`untyped error: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`, { cause: e });
  }
}

const concat = (chunks: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
};

// ---- safetensors ------------------------------------------------------------------------------

const tensorArb: fc.Arbitrary<[string, NamedArray]> = fc
  .record({
    name: fc.string({ minLength: 1, maxLength: 12 }).filter((s) => s !== '__metadata__'),
    int: fc.boolean(),
    shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
  })
  .map(({ name, int, shape }) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = int ? Int32Array.from({ length: n }, (_, i) => i * 7 - 3) : Float32Array.from({ length: n }, (_, i) => i / 3 - 1);
    return [name, { shape, data }];
  });

const fileArb = fc.record({
  tensors: fc.uniqueArray(tensorArb, { maxLength: 5, selector: ([name]) => name }),
  metadata: fc.dictionary(fc.string({ maxLength: 6 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
});

type File = { tensors: [string, NamedArray][]; metadata: Record<string, string> };
const bytesOf = (f: File): Uint8Array => concat(serializeSafetensors(f.tensors, f.metadata));

/** A file from a header object and a data section (the length prefix is the header's true length). */
function withHeader(header: unknown, data: Uint8Array): Uint8Array {
  const hb = new TextEncoder().encode(JSON.stringify(header));
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  return concat([len, hb, data]);
}

/** Header of a valid file, as an object to mutate. */
function headerOf(bytes: Uint8Array): Record<string, unknown> {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  return JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
}

/** Parsing is typed, and what comes back never holds more tensor bytes than the file has. */
function checkParse(bytes: Uint8Array): void {
  const r = typedOutcome(() => parseSafetensors(bytes), [CheckpointError]);
  if (r instanceof Error) return;
  let stored = 0;
  for (const [, t] of r.tensors) {
    assert.equal(t.data.length, t.shape.reduce((a, b) => a * b, 1), 'element count matches the shape');
    stored += t.data.length * 2; // F16/BF16 take 2 bytes per element in the file, F32/I32 4
  }
  assert.ok(stored <= bytes.length, `tensors hold more elements than ${bytes.length} bytes can store`);
  for (const v of Object.values(r.metadata)) assert.equal(typeof v, 'string', 'metadata values are strings');
}

/** Header entry mutations: bad dtypes, shapes, offsets, huge declared sizes, wrong JSON types. */
const entryMutation = fc.oneof(
  fc.record({ key: fc.constant('dtype'), value: fc.oneof(fc.constantFrom('F64', 'U8', 'f32', '', 'toString', '__proto__', 'constructor'), fc.jsonValue()) }),
  fc.record({
    key: fc.constant('shape'),
    value: fc.oneof(
      fc.array(fc.oneof(fc.integer({ min: -3, max: 2 ** 40 }), fc.constant(2 ** 53), fc.double()), { maxLength: 4 }),
      fc.jsonValue(),
    ),
  }),
  fc.record({
    key: fc.constant('data_offsets'),
    value: fc.oneof(
      fc.tuple(fc.integer({ min: -5, max: 2 ** 40 }), fc.integer({ min: -5, max: 2 ** 40 })),
      fc.tuple(fc.constant(0), fc.constantFrom(2 ** 53, 2 ** 62, Number.MAX_SAFE_INTEGER)),
      fc.jsonValue(),
    ),
  }),
  fc.record({ key: fc.constant(null), value: fc.jsonValue() }), // the whole entry replaced
);

describe('property: safetensors reader', () => {
  test('valid files round-trip', TIMEOUT, () => {
    fc.assert(
      fc.property(fileArb, (f) => {
        const r = parseSafetensors(bytesOf(f));
        assert.deepEqual(Object.entries(r.metadata), Object.entries(f.metadata));
        // (JSON objects list integer-like keys first, so names come back in that order)
        assert.deepEqual([...r.tensors.keys()].sort(), f.tensors.map(([n]) => n).sort());
        for (const [name, t] of f.tensors) {
          assert.deepEqual(r.tensors.get(name)?.shape, t.shape);
          assert.deepEqual(r.tensors.get(name)?.data, t.data);
        }
      }),
      RUNS,
    );
  });

  test('bit flips and truncation give a file or a CheckpointError', TIMEOUT, () => {
    fc.assert(
      fc.property(fileArb, fc.array(fc.nat(), { minLength: 1, maxLength: 8 }), fc.nat(), fc.boolean(), (f, flips, cut, truncate) => {
        const bytes = bytesOf(f);
        for (const p of flips) bytes[p % bytes.length]! ^= 1 << (p % 8);
        checkParse(truncate ? bytes.subarray(0, cut % (bytes.length + 1)) : bytes);
      }),
      RUNS,
    );
  });

  test('a header length that lies gives a CheckpointError, whatever it claims', TIMEOUT, () => {
    fc.assert(
      fc.property(fileArb, fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), (f, claimed) => {
        const bytes = bytesOf(f);
        const trueLen = new DataView(bytes.buffer).getBigUint64(0, true);
        fc.pre(claimed !== trueLen);
        new DataView(bytes.buffer).setBigUint64(0, claimed, true);
        checkParse(bytes);
      }),
      RUNS,
    );
  });

  test('mutated header entries (dtypes, shapes, offsets, huge sizes) give a CheckpointError or a consistent file', TIMEOUT, () => {
    fc.assert(
      fc.property(fileArb.filter((f) => f.tensors.length > 0), fc.nat(), entryMutation, (f, which, m) => {
        const bytes = bytesOf(f);
        const header = headerOf(bytes);
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        const name = names[which % names.length]!;
        if (m.key === null) header[name] = m.value;
        else (header[name] as Record<string, unknown>)[m.key] = m.value;
        const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
        checkParse(withHeader(header, bytes.subarray(8 + n)));
      }),
      RUNS,
    );
  });

  test('arbitrary JSON headers and __metadata__ give a CheckpointError or a consistent file', TIMEOUT, () => {
    fc.assert(
      fc.property(fc.oneof(fc.jsonValue(), fc.dictionary(fc.string(), fc.jsonValue())), fc.jsonValue(), fc.uint8Array({ maxLength: 64 }), (header, meta, data) => {
        checkParse(withHeader(header, data));
        checkParse(withHeader({ __metadata__: meta }, data));
      }),
      RUNS,
    );
  });

  test('overlapping data_offsets are a CheckpointError', TIMEOUT, () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1, max: 5 }), (n, shift) => {
        fc.pre(shift < n);
        const a = Float32Array.from({ length: n }, (_, i) => i);
        const bytes = bytesOf({ tensors: [['a', { shape: [n], data: a }], ['b', { shape: [n], data: a }]], metadata: {} });
        const header = headerOf(bytes);
        (header['b'] as { data_offsets: number[] }).data_offsets = [4 * shift, 4 * (shift + n)];
        header['empty'] = { dtype: 'F32', shape: [0], data_offsets: [4 * shift - 2, 4 * shift - 2] }; // holds no bytes: not an overlap
        const len = Number(new DataView(bytes.buffer).getBigUint64(0, true));
        assert.throws(() => parseSafetensors(withHeader(header, bytes.subarray(8 + len))), (e: unknown) => e instanceof CheckpointError && /overlap/.test(e.message));
      }),
      runs(30),
    );
  });
});

// ---- config validation ------------------------------------------------------------------------

const CONFIG_KEYS = [
  'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads',
  'max_position_embeddings', 'rms_norm_eps', 'rope_theta', 'tie_word_embeddings', 'initializer_range', 'recursion', 'mor',
  'model_type', 'head_dim', '__proto__', 'constructor', 'toString', 'unknown_key',
];

/** Valid configs are frozen (deeply) and validate to themselves. */
function checkConfig(input: unknown): void {
  const r = typedOutcome(() => validateConfig(input), [ConfigError]);
  if (r instanceof Error) return;
  assert.ok(Object.isFrozen(r) && (r.recursion === null || Object.isFrozen(r.recursion)) && (r.mor === null || Object.isFrozen(r.mor)));
  assert.deepEqual(validateConfig(JSON.parse(JSON.stringify(r))), r);
}

const presetArb = fc.constantFrom(...PRESET_NAMES).map((name) => JSON.parse(JSON.stringify(preset(name))) as Record<string, unknown>);

describe('property: config validation', () => {
  test('arbitrary JSON gives a config or a ConfigError', TIMEOUT, () => {
    fc.assert(fc.property(fc.jsonValue(), checkConfig), RUNS);
    fc.assert(fc.property(fc.dictionary(fc.constantFrom(...CONFIG_KEYS), fc.jsonValue()), checkConfig), RUNS);
  });

  test('presets with fields replaced or removed give a config or a ConfigError', TIMEOUT, () => {
    const value = fc.oneof(
      fc.jsonValue(),
      fc.integer({ min: -2, max: 2 ** 31 }),
      fc.constantFrom(0, -1, 1.5, 1e308, Number.MAX_SAFE_INTEGER, 2 ** 53 + 2, null, true, 'middle_cycle', [], {}),
    );
    fc.assert(
      fc.property(presetArb, fc.array(fc.tuple(fc.constantFrom(...CONFIG_KEYS), fc.option(value, { nil: undefined })), { minLength: 1, maxLength: 3 }), (cfg, edits) => {
        for (const [k, v] of edits) {
          if (v === undefined) delete cfg[k];
          else Object.defineProperty(cfg, k, { value: v, enumerable: true, writable: true, configurable: true });
        }
        checkConfig(cfg);
      }),
      RUNS,
    );
  });

  test('recursion and mor sections with fields replaced give a config or a ConfigError', TIMEOUT, () => {
    const recKeys = ['num_recursions', 'sharing', 'lora_rank', 'other'];
    const morKeys = ['routing', 'router', 'capacities', 'alpha', 'threshold', 'random_router', 'router_func', 'kv_strategy', 'other'];
    fc.assert(
      fc.property(
        fc.constantFrom(...PRESET_NAMES.filter((n) => preset(n).recursion !== null)).map((n) => JSON.parse(JSON.stringify(preset(n))) as Record<string, Record<string, unknown> | null>),
        fc.constantFrom('recursion', 'mor'),
        fc.jsonValue(),
        fc.nat(),
        (cfg, section, v, which) => {
          const keys = section === 'recursion' ? recKeys : morKeys;
          const s = cfg[section] ?? {};
          s[keys[which % keys.length]!] = v;
          cfg[section] = s;
          checkConfig(cfg);
        },
      ),
      RUNS,
    );
  });
});

test(
  "property: config validation: Object.prototype names ('constructor', 'toString') are unknown mor keys",
  () => {
    fc.assert(
      fc.property(presetArb.filter((c) => c['mor'] !== null), fc.constantFrom('constructor', 'toString', 'hasOwnProperty'), (cfg, key) => {
        cfg['mor'] = { ...(cfg['mor'] as object), [key]: 1 };
        assert.throws(() => validateConfig(cfg), ConfigError);
      }),
      runs(10),
    );
  },
);

// ---- tokenizer.json loader --------------------------------------------------------------------

let trained: Record<string, unknown>;
before(async () => {
  const text = 'We the people of the union, in order to form a more perfect union. 東京 🙂 <|endoftext|> '.repeat(20);
  trained = (await trainBpe([text], { vocabSize: 300 })).tokenizer as unknown as Record<string, unknown>;
});

/** A loaded tokenizer (or its DataError); a loaded one encodes, and decodes what it encoded. */
function checkTokenizer(json: object | string, text: string): void {
  const t = typedOutcome(() => Tokenizer.fromJSON(json), [DataError]);
  if (t instanceof Error) return;
  const ids = typedOutcome(() => t.encode(text), [DataError]);
  if (ids instanceof Error) return;
  for (const id of ids) assert.ok(Number.isInteger(id) && id >= 0 && id < t.vocabSize, `id ${id} of vocabulary ${t.vocabSize}`);
  typedOutcome(() => t.decode(ids), [ArgumentError, DataError]);
  typedOutcome(() => t.decode([t.vocabSize, -1]), [ArgumentError]);
}

/** A path into a JSON value (object keys and array indices), chosen by a sequence of numbers. */
function pick(root: unknown, choices: number[]): { parent: Record<string, unknown> | unknown[]; key: string | number } | null {
  let node = root;
  let found: { parent: Record<string, unknown> | unknown[]; key: string | number } | null = null;
  for (const c of choices) {
    if (Array.isArray(node) && node.length > 0) {
      const key = c % node.length;
      found = { parent: node, key };
      node = node[key];
    } else if (node !== null && typeof node === 'object' && Object.keys(node).length > 0) {
      const keys = Object.keys(node);
      const key = keys[c % keys.length]!;
      found = { parent: node as Record<string, unknown>, key };
      node = (node as Record<string, unknown>)[key];
    } else break;
  }
  return found;
}

describe('property: tokenizer.json loader', () => {
  test('arbitrary JSON and arbitrary text give a tokenizer or a DataError', TIMEOUT, () => {
    fc.assert(fc.property(fc.jsonValue(), fc.string(), (j, text) => checkTokenizer(j as object, text)), runs(100));
    fc.assert(fc.property(fc.string(), (s) => checkTokenizer(s, 'x')), runs(100));
  });

  test('a trained tokenizer.json with a field replaced or deleted loads or gives a DataError', TIMEOUT, () => {
    const value = fc.oneof(fc.jsonValue(), fc.constantFrom(null, [], {}, '', 'BPE', 'WordLevel', 'ByteLevel', -1, 1e9, [null], [{}]));
    fc.assert(
      fc.property(fc.array(fc.nat(), { minLength: 1, maxLength: 4 }), fc.option(value, { nil: undefined }), fc.string({ maxLength: 30 }), (path, v, text) => {
        const j = structuredClone(trained);
        const at = pick(j, path);
        if (at !== null) {
          if (v === undefined && !Array.isArray(at.parent)) delete at.parent[at.key as string];
          else (at.parent as Record<string | number, unknown>)[at.key] = v ?? null;
        }
        checkTokenizer(j, text);
      }),
      runs(120),
    );
  });

  test('the text of a trained tokenizer.json, truncated or with bytes changed, gives a tokenizer or a DataError', TIMEOUT, () => {
    const text = JSON.stringify(trained);
    fc.assert(
      fc.property(fc.nat(), fc.array(fc.tuple(fc.nat(), fc.string({ minLength: 1, maxLength: 1 })), { maxLength: 3 }), (cut, edits) => {
        let s = text.slice(0, cut % (text.length + 1));
        for (const [p, ch] of edits) {
          const i = p % (s.length + 1);
          s = s.slice(0, i) + ch + s.slice(i + 1);
        }
        checkTokenizer(s, 'the union');
      }),
      runs(60),
    );
  });
});
