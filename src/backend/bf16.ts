/**
 * bfloat16: the top 16 bits of an IEEE float32 (8 exponent bits, 8 significant bits), the storage
 * of decoding's packed weights and K/V pool under `dtype: 'bf16'`. This is the one definition of
 * the rounding (native/src/bf16.h is its C++ twin, checked against it by the conformance suite):
 * round to nearest, ties to even; NaN stays NaN (quiet, sign kept); values past the largest bf16
 * round to ±inf. Relative rounding error ≤ 2⁻⁸ (the unit roundoff of 8 significant bits: half the
 * spacing 2⁻⁷·2^e of the values in [2^e, 2^(e+1))).
 *
 * bf16 values travel as Uint16Array bit patterns; no arithmetic is done in bf16 (kernels widen to
 * float32, an exact 16-bit shift, and accumulate in float32).
 */
import { ArgumentError } from '../errors.js';

/** Element storage of decoding's packed weights and K/V pool. */
export type StorageDtype = 'f32' | 'bf16';
export const STORAGE_DTYPES: readonly StorageDtype[] = Object.freeze(['f32', 'bf16']);

/** Unit roundoff of bf16 (round to nearest): |bf16(x) − x| ≤ BF16_UNIT_ROUNDOFF · |x|. */
export const BF16_UNIT_ROUNDOFF = 2 ** -8;

/** The storage dtype named by `value`; ArgumentError naming `what` (the option) otherwise. */
export function storageDtype(what: string, value: unknown): StorageDtype {
  if (value === 'f32' || value === 'bf16') return value;
  throw new ArgumentError(`${what} must be 'f32' or 'bf16', got ${typeof value === 'string' ? `'${value}'` : String(value)}`);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** bf16 bits of x rounded to nearest-even (x first rounded to float32). */
export function f32ToBf16(x: number): number {
  f32[0] = x;
  const u = u32[0] as number;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff; // NaN → quiet NaN
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** The float32 value of bf16 bits h (exact). */
export function bf16ToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0] as number;
}

/** src rounded to bf16 bits, into dst (a new array when omitted). */
export function toBf16(src: ArrayLike<number>, dst: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  if (dst.length !== src.length) throw new ArgumentError(`toBf16: dst has ${dst.length} elements, src ${src.length}`);
  for (let i = 0; i < src.length; i++) dst[i] = f32ToBf16(src[i] as number);
  return dst;
}

/** bf16 bits widened to float32. */
export function fromBf16(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) bits[i] = (src[i] as number) << 16;
  return out;
}

/** Each value of x rounded to the nearest bf16 and widened back (a float32 copy). */
export function roundToBf16(x: ArrayLike<number>): Float32Array {
  return fromBf16(toBf16(x));
}
