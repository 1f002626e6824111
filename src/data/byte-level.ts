/**
 * GPT-2 byte-level conventions shared by the BPE trainer and the fast encoder.
 *
 * Byte-level BPE works on UTF-8 bytes, but tokenizer.json stores tokens as strings, so every
 * byte 0..255 is given a printable stand-in character (GPT-2's `bytes_to_unicode`): printable
 * Latin-1 bytes stand for themselves, the other 68 (controls, space, NBSP, soft hyphen) map to
 * U+0100.. in byte order. A space therefore shows as 'Ġ' (U+0120) and a newline as 'Ċ'.
 */

/** The end-of-text token: separates documents in the token stream. */
export const EOS_TOKEN = '<|endoftext|>';

/**
 * GPT-2's pre-tokenisation pattern, exactly as the Hugging Face ByteLevel pre-tokenizer uses it
 * (JavaScript `u` flag semantics for \s, \p{L}, \p{N}).
 */
export const GPT2_PATTERN_SOURCE =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** A fresh global regex for the GPT-2 pattern (fresh because `g` regexes carry lastIndex). */
export function gpt2Pattern(): RegExp {
  return new RegExp(GPT2_PATTERN_SOURCE, 'gu');
}

/** The bytes in the order GPT-2 lists them: printable ranges first, then the rest ascending. */
export const BYTE_ORDER: readonly number[] = (() => {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const printable = new Set(bs);
  for (let b = 0; b < 256; b++) if (!printable.has(b)) bs.push(b);
  return bs;
})();

/** BYTE_TO_CHAR[b] is the stand-in character for byte b. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    out[b] = printable ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return out;
})();

/** Inverse of BYTE_TO_CHAR: stand-in character code → byte, -1 where the code is no stand-in. */
export const CHAR_CODE_TO_BYTE: Int16Array = (() => {
  const out = new Int16Array(324).fill(-1);
  for (let b = 0; b < 256; b++) out[BYTE_TO_CHAR[b]!.charCodeAt(0)] = b;
  return out;
})();

/** The byte-level string of a UTF-8 byte sequence. */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]!]!;
  return s;
}

/** The bytes behind a byte-level string, or null when it holds a character that is no stand-in. */
export function byteLevelToBytes(s: string): Uint8Array | null {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const b = c < CHAR_CODE_TO_BYTE.length ? CHAR_CODE_TO_BYTE[c]! : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}
