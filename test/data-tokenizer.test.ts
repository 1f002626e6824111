// Tokenizer: the BPE trainer (vocabulary size, determinism, tokenizer.json that the Hugging Face
// loader takes), the Tokenizer wrapper (round trip over arbitrary Unicode, lone surrogates,
// special tokens, errors), and the fast encoder giving the library's exact ids.
import { describe, test, before } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile, mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Corpus } from '../src/data/corpus.js';
import { trainBpe, type BpeTokenizerJson } from '../src/data/bpe-train.js';
import { Tokenizer } from '../src/data/tokenizer.js';
import { EOS_TOKEN, GPT2_PATTERN_SOURCE } from '../src/data/byte-level.js';
import { Rng } from '../src/data/util.js';
import { ArgumentError, DataError } from '../src/errors.js';
import { withTempDir } from './helpers/temp-dir.js';

let sample: string[] = []; // a few State of the Union addresses
let trained: BpeTokenizerJson;
let tok: Tokenizer;

before(async () => {
  for await (const d of Corpus.default()) {
    sample.push(d.text);
    if (sample.length === 24) break;
  }
  trained = (await trainBpe(sample.slice(0, 12), { vocabSize: 1000 })).tokenizer;
  tok = Tokenizer.fromJSON(trained);
});

function sameIds(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: ${a.length} ids vs ${b.length}`);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) assert.fail(`${what}: first difference at ${i}: ${a[i]} vs ${b[i]}`);
}

const RANGES: Array<[number, number]> = [
  [0x20, 0x7e], // ASCII
  [0xa0, 0xff], // Latin-1
  [0x300, 0x36f], // combining marks
  [0x370, 0x3ff], // Greek
  [0x400, 0x4ff], // Cyrillic
  [0x590, 0x6ff], // Hebrew, Arabic
  [0x900, 0x97f], // Devanagari
  [0x3040, 0x30ff], // kana
  [0x4e00, 0x9fff], // CJK
  [0xac00, 0xd7a3], // Hangul
  [0xe000, 0xf8ff], // private use
  [0xfe00, 0xfe0f], // variation selectors
  [0x1f300, 0x1faff], // emoji
  [0x10000, 0x10ffff], // all astral planes
];
const SPECIAL_PIECES = [' ', '  ', '\t', '\n', '\r\n', '\n\n\n', '\u00a0', '\u2028', '\u3000', '\ufeff', '\u0000', '\u200d', '👩‍👩‍👧', "'s", "'ll", EOS_TOKEN, '123', 'é', 'e\u0301'];

/** A random well-formed string mixing scripts, emoji, combining marks and whitespace runs. */
function randomUnicode(rng: Rng, maxLen: number): string {
  let s = '';
  const n = rng.nextInt(maxLen + 1);
  for (let i = 0; i < n; i++) {
    if (rng.nextInt(6) === 0) {
      s += SPECIAL_PIECES[rng.nextInt(SPECIAL_PIECES.length)]!;
      continue;
    }
    const [lo, hi] = RANGES[rng.nextInt(RANGES.length)]!;
    s += String.fromCodePoint(lo + rng.nextInt(hi - lo + 1));
  }
  return s;
}

/** Runs of a few letters, dots and spaces: many overlapping equal pairs ("eee", "...") where merge order matters. */
function smallAlphabet(rng: Rng, maxLen: number): string {
  const alphabet = 'eeelllsst.. \n';
  let s = '';
  const n = rng.nextInt(maxLen + 1);
  for (let i = 0; i < n; i++) s += alphabet[rng.nextInt(alphabet.length)]!;
  return s;
}

describe('BPE trainer', () => {
  test('reaches the requested vocabulary size; specials first, then the 256 bytes', async () => {
    const r = await trainBpe(sample.slice(0, 4), { vocabSize: 700 });
    assert.equal(r.vocabSize, 700);
    assert.equal(r.stoppedEarly, false);
    assert.equal(r.numMerges, 700 - 257);
    const vocab = r.tokenizer.model.vocab;
    assert.equal(Object.keys(vocab).length, 700);
    assert.equal(vocab[EOS_TOKEN], 0);
    assert.equal(vocab['!'], 1); // GPT-2 byte order, shifted by the one special token
    assert.equal(vocab['Ā'], 1 + 188); // byte 0: the first non-printable byte, after the 188 printable ones
    assert.equal(vocab['Ġ'], 1 + 188 + 32); // space (0x20)
    assert.deepEqual(r.tokenizer.added_tokens.map((t) => [t.id, t.content, t.special]), [[0, EOS_TOKEN, true]]);
    assert.equal(Math.max(...Object.values(vocab)), 699);
    // every merge result is in the vocabulary, in merge order
    r.tokenizer.model.merges.forEach(([a, b], i) => assert.equal(vocab[a + b], 257 + i));
  });

  test('is deterministic', async () => {
    const a = await trainBpe(sample.slice(0, 3), { vocabSize: 600 });
    const b = await trainBpe(sample.slice(0, 3), { vocabSize: 600 });
    assert.equal(JSON.stringify(a.tokenizer), JSON.stringify(b.tokenizer));
    // document order does not matter either: training depends on word counts only
    const c = await trainBpe(sample.slice(0, 3).reverse(), { vocabSize: 600 });
    assert.deepEqual(c.tokenizer.model.merges, a.tokenizer.model.merges);
  });

  test('merges the most frequent pair first, ties to the smaller ids', async () => {
    const r = await trainBpe(['ab ab ab cd cd cd'], { vocabSize: 257 + 2, minFrequency: 1 });
    // pairs: (a,b)×3, (Ġ,a)×2, (c,d)×3, (Ġ,c)×3 … ties go to the smaller left id: 'a' < 'c' < 'Ġ'
    assert.deepEqual(r.tokenizer.model.merges, [
      ['a', 'b'],
      ['c', 'd'],
    ]);
  });

  test('trains straight from a corpus, optionally on its first characters only', async () => {
    const r = await trainBpe(Corpus.default(), { vocabSize: 300, maxChars: 50_000 });
    assert.equal(r.vocabSize, 300);
    const s = await trainBpe(sample.slice(0, 2).map((text) => ({ text })), { vocabSize: 300 });
    assert.equal(s.vocabSize, 300);
  });

  test('stops early when the text runs out of frequent pairs', async () => {
    const r = await trainBpe(['tiny text, tiny text'], { vocabSize: 5000 });
    assert.equal(r.stoppedEarly, true);
    assert.ok(r.vocabSize < 5000 && r.vocabSize > 257);
    Tokenizer.fromJSON(r.tokenizer); // still a loadable tokenizer
  });

  test('rejects bad options and empty text', async () => {
    await assert.rejects(trainBpe(['abc'], { vocabSize: 100 }), ArgumentError);
    await assert.rejects(trainBpe(['abc'], { vocabSize: 300, minFrequency: 0 }), ArgumentError);
    await assert.rejects(trainBpe([], { vocabSize: 300 }), DataError);
    await assert.rejects(trainBpe([EOS_TOKEN], { vocabSize: 300 }), DataError);
  });

  test('special-token text in training data is not learned as ordinary text', async () => {
    const text = `hello${EOS_TOKEN}world `.repeat(50);
    const r = await trainBpe([text], { vocabSize: 400 });
    for (const [a, b] of r.tokenizer.model.merges) assert.ok(!(a + b).includes('|>'), `merge ${a}+${b}`);
  });
});

describe('Tokenizer', () => {
  test('the trained tokenizer.json loads in @huggingface/tokenizers and encodes identically', () => {
    const lib = new HfTokenizer(JSON.parse(JSON.stringify(trained)) as object, {});
    for (const text of [...sample.slice(12, 14), 'Hello world!  \n\n x', `a${EOS_TOKEN}b`]) {
      sameIds(tok.encode(text), lib.encode(text, { add_special_tokens: false }).ids, 'library vs Tokenizer');
    }
    assert.equal(tok.usesFastEncoder, true);
  });

  test('basic properties', () => {
    assert.equal(tok.vocabSize, 1000);
    assert.equal(tok.eosId, 0);
    assert.equal(tok.eosToken, EOS_TOKEN);
    assert.match(tok.hash, /^[0-9a-f]{64}$/);
    assert.deepEqual(Array.from(tok.encode(EOS_TOKEN)), [0]);
    assert.deepEqual(Array.from(tok.encode('')), []);
    assert.equal(tok.decode([]), '');
    assert.equal(tok.decode(tok.encode('The Congress')), 'The Congress');
    assert.equal(tok.idToToken(tok.tokenToId('Ġthe')!), 'Ġthe');
  });

  test('decode(encode(s)) === s for arbitrary well-formed Unicode', () => {
    const rng = new Rng(42);
    for (let i = 0; i < 300; i++) {
      const s = randomUnicode(rng, 60);
      const ids = tok.encode(s);
      assert.equal(tok.decode(ids), s, `round trip of ${JSON.stringify(s)}`);
    }
    for (const s of SPECIAL_PIECES) assert.equal(tok.decode(tok.encode(s)), s);
    const many = SPECIAL_PIECES.join('') + ' '.repeat(1000) + '\n'.repeat(70) + 'x'.repeat(3000);
    assert.equal(tok.decode(tok.encode(many)), many);
  });

  test('special-token text encodes as the special token and decodes back', () => {
    const s = `end.${EOS_TOKEN}${EOS_TOKEN}Next <|endoftext| >`;
    const ids = Array.from(tok.encode(s));
    assert.equal(ids.filter((id) => id === tok.eosId).length, 2);
    assert.equal(tok.decode(ids), s);
  });

  test('lone surrogates become U+FFFD (UTF-8 cannot hold them); well-formed text is untouched', () => {
    const cases: Array<[string, string]> = [
      ['a\ud800b', 'a\ufffdb'],
      ['\udc00', '\ufffd'],
      ['x\udc00\ud800y', 'x\ufffd\ufffdy'],
      ['ok \ud83d', 'ok \ufffd'],
      ['\ud83d\ude00', '\ud83d\ude00'], // a real pair stays
    ];
    for (const [input, expected] of cases) {
      assert.equal(tok.decode(tok.encode(input)), expected);
      sameIds(tok.encode(input), tok.encodeWithLibrary(input), 'lone surrogate');
    }
  });

  test('ids that cut a character in half decode to U+FFFD', () => {
    const ids = Array.from(tok.encode('東'));
    assert.ok(ids.length > 1, 'a rare CJK char is several byte tokens');
    assert.equal(tok.decode(ids.slice(0, 1)), '\ufffd');
  });

  test('decode rejects ids outside the vocabulary', () => {
    assert.throws(() => tok.decode([5, 1000]), ArgumentError);
    assert.throws(() => tok.decode([-1]), ArgumentError);
    assert.throws(() => tok.decode([1.5]), ArgumentError);
  });

  test('hash is canonical (key order does not matter) and toJSON/save/fromFile round-trip', async () => {
    const reordered = Object.fromEntries(Object.entries(trained).reverse());
    assert.equal(Tokenizer.fromJSON(reordered).hash, tok.hash);
    assert.equal(Tokenizer.fromJSON(JSON.stringify(trained)).hash, tok.hash);
    await withTempDir('mor-tok-', async (dir) => {
      const file = path.join(dir, 'tokenizer.json');
      await tok.save(file);
      const again = await Tokenizer.fromFile(file);
      assert.equal(again.hash, tok.hash);
      assert.equal((await Tokenizer.fromFile(dir)).hash, tok.hash); // a folder holding tokenizer.json
      assert.deepEqual(again.toJSON(), tok.toJSON());
      await assert.rejects(Tokenizer.fromFile(path.join(dir, 'missing.json')), DataError);
      await writeFile(path.join(dir, 'bad.json'), '{"model": ');
      await assert.rejects(Tokenizer.fromFile(path.join(dir, 'bad.json')), /not valid JSON/);
    });
  });

  test('rejects JSON that is not a tokenizer', () => {
    assert.throws(() => Tokenizer.fromJSON('[1,2]'), DataError);
    assert.throws(() => Tokenizer.fromJSON({ version: '1.0' }), DataError);
  });
});

/** The trained tokenizer rewritten into other byte-level layouts that Hugging Face writes. */
function variant(change: (j: Record<string, unknown>) => void): Record<string, unknown> {
  const j = JSON.parse(JSON.stringify(trained)) as Record<string, unknown>;
  change(j);
  return j;
}

describe('foreign tokenizer layouts', () => {
  const texts = (): string[] => {
    const rng = new Rng(7);
    const out = [sample[14]!.slice(0, 20000), `x${EOS_TOKEN}y  z\n\n`, 'a'.repeat(5000), 'ab'.repeat(700) + ' ' + 'q'.repeat(60), 'say xyzzy twice: xyzzy'];
    for (let i = 0; i < 100; i++) out.push(randomUnicode(rng, 40));
    for (let i = 0; i < 200; i++) out.push(smallAlphabet(rng, 80));
    return out;
  };

  const layouts: Record<string, Record<string, unknown>> = {};
  before(() => {
    // Llama-3 / SmolLM2 style: Split with the regex, then ByteLevel without its own regex
    layouts['split+bytelevel'] = variant((j) => {
      j['pre_tokenizer'] = {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: GPT2_PATTERN_SOURCE }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      };
    });
    // older files: merges as "a b" strings; prefix space; whole-word vocabulary hits first (ignore_merges)
    layouts['string merges, prefix space, ignore_merges'] = variant((j) => {
      const model = j['model'] as { merges: Array<[string, string]> | string[] };
      model.merges = (model.merges as Array<[string, string]>).map(([a, b]) => `${a} ${b}`);
      (j['pre_tokenizer'] as Record<string, unknown>)['add_prefix_space'] = true;
      (j['model'] as Record<string, unknown>)['ignore_merges'] = true;
      // a whole word no merge sequence builds: only ignore_merges finds it
      (j['model'] as { vocab: Record<string, number> }).vocab['Ġxyzzy'] = 1000;
    });
    layouts['digits+bytelevel, ignore_merges'] = variant((j) => {
      j['pre_tokenizer'] = {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Digits', individual_digits: true },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
        ],
      };
      (j['model'] as Record<string, unknown>)['ignore_merges'] = true;
    });
    // GPT-2's own layout: the special token is the LAST id and lstrip/rstrip are set
    layouts['eos last, lstrip/rstrip'] = variant((j) => {
      const model = j['model'] as { vocab: Record<string, number> };
      const vocab: Record<string, number> = {};
      for (const [t, id] of Object.entries(model.vocab)) if (t !== EOS_TOKEN) vocab[t] = id - 1;
      vocab[EOS_TOKEN] = Object.keys(vocab).length;
      model.vocab = vocab;
      j['added_tokens'] = [
        { id: vocab[EOS_TOKEN], content: EOS_TOKEN, single_word: false, lstrip: true, rstrip: true, normalized: true, special: true },
      ];
    });
  });

  for (const name of ['split+bytelevel', 'string merges, prefix space, ignore_merges', 'digits+bytelevel, ignore_merges', 'eos last, lstrip/rstrip']) {
    test(`${name}: the fast encoder gives the library's ids`, () => {
      const t = Tokenizer.fromJSON(layouts[name]!);
      assert.equal(t.usesFastEncoder, true);
      if (name.includes('string merges')) assert.deepEqual(Array.from(t.encode(' xyzzy')), [1000]);
      for (const s of texts()) sameIds(t.encode(s), t.encodeWithLibrary(s), `${name} on ${JSON.stringify(s.slice(0, 30))}`);
    });
  }

  test('GPT-2 layout: eos is found at the last id', () => {
    const t = Tokenizer.fromJSON(layouts['eos last, lstrip/rstrip']!);
    assert.equal(t.eosId, 999);
    assert.equal(t.vocabSize, 1000);
  });

  test('layouts the fast encoder does not reproduce fall back to the library', () => {
    const t = Tokenizer.fromJSON(variant((j) => (j['normalizer'] = { type: 'NFC' })));
    assert.equal(t.usesFastEncoder, false);
    assert.equal(t.decode(t.encode('cafe\u0301')), 'caf\u00e9');
  });

  test('eos comes from tokenizer_config.json, the eosToken option, or a clear error', async () => {
    const renamed = variant((j) => {
      const model = j['model'] as { vocab: Record<string, number> };
      delete model.vocab[EOS_TOKEN];
      model.vocab['</s>'] = 0;
      j['added_tokens'] = [{ id: 0, content: '</s>', special: true }, { id: 1000, content: '<pad>', special: true }];
    });
    assert.equal(Tokenizer.fromJSON(renamed).eosToken, '</s>');
    assert.equal(Tokenizer.fromJSON(renamed, { eosToken: '<pad>' }).eosId, 1000);
    assert.equal(Tokenizer.fromJSON(renamed).vocabSize, 1001);
    await withTempDir('mor-tok-', async (dir) => {
      await mkdir(path.join(dir, 'm'));
      await writeFile(path.join(dir, 'm', 'tokenizer.json'), JSON.stringify(renamed));
      await writeFile(path.join(dir, 'm', 'tokenizer_config.json'), JSON.stringify({ eos_token: { content: '<pad>' } }));
      assert.equal((await Tokenizer.fromFile(path.join(dir, 'm'))).eosId, 1000);
    });
    const none = variant((j) => {
      const model = j['model'] as { vocab: Record<string, number> };
      delete model.vocab[EOS_TOKEN];
      model.vocab['<s>'] = 0;
      j['added_tokens'] = [{ id: 0, content: '<s>', special: true }];
    });
    assert.throws(() => Tokenizer.fromJSON(none), /no end-of-text token.*special tokens are \[<s>\]/);
    assert.throws(() => Tokenizer.fromJSON(renamed, { eosToken: '<nope>' }), DataError);
  });
});

describe('fast encoder on corpus text', () => {
  test('ids equal the library on a corpus sample', () => {
    const t = Tokenizer.fromJSON(trained);
    for (const text of sample.slice(14, 24)) sameIds(t.encode(text), t.encodeWithLibrary(text), 'corpus sample');
    const rng = new Rng(3);
    for (let i = 0; i < 300; i++) {
      const s = smallAlphabet(rng, i < 150 ? 40 : 400); // both merge paths: linear scan (≤ 48) and heap
      sameIds(t.encode(s), t.encodeWithLibrary(s), `small alphabet ${JSON.stringify(s)}`);
    }
  });
});

describe('WordLevel tokenizer.json', () => {
  const wordLevel = (unk: string | null): Record<string, unknown> => ({
    version: '1.0',
    model: { type: 'WordLevel', vocab: { '<unk>': 0, hello: 1, world: 2, [EOS_TOKEN]: 3 }, unk_token: unk },
    pre_tokenizer: { type: 'Whitespace' },
    added_tokens: [{ id: 3, content: EOS_TOKEN, special: true }],
  });

  test('unknown pieces map to the unk token', () => {
    const t = Tokenizer.fromJSON(wordLevel('<unk>'));
    assert.deepEqual(Array.from(t.encode('hello there world')), [1, 0, 2]);
    assert.deepEqual(Array.from(t.encode(`nobody ${EOS_TOKEN} hello`)), [0, 3, 1]);
    assert.equal(t.decode([1, 0, 2]), 'hello <unk> world');
  });

  test('without a usable unk token an unknown piece is a DataError that says why', () => {
    assert.throws(() => Tokenizer.fromJSON(wordLevel(null)).encode('hello there'), (e: unknown) =>
      e instanceof DataError && /no id for the piece "there" and it has no unk token/.test(e.message));
    assert.throws(() => Tokenizer.fromJSON(wordLevel('<nope>')).encode('there'), (e: unknown) =>
      e instanceof DataError && /its unk token '<nope>' is not in the vocabulary/.test(e.message));
  });
});
