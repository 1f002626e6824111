/**
 * decodeLayer, written as the composition of the reference kernels it fuses (see Backend).
 */
import { ArgumentError, DtypeError, ShapeError } from '../../errors.js';
import type { DecodeLayerArgs, KvArray, PackedLayer, PackedWeight } from '../backend.js';
import { toBf16 } from '../bf16.js';
import { attentionPaged } from './attention.js';
import { gemmPacked } from './gemm.js';
import { rmsnormForward, rope, swigluForward } from './layers.js';

/** Columns [from, from + width) of a row-major (rows, cols) matrix. */
function columns(x: Float32Array, rows: number, cols: number, from: number, width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let i = 0; i < rows; i++) out.set(x.subarray(i * cols + from, i * cols + from + width), i * width);
  return out;
}

/**
 * Weights and pool may each be f32 or bf16 (all four weights in one dtype): a bf16 pool stores
 * the rows' k and v rounded to nearest-even bf16, and attention reads them back widened.
 */
export function decodeLayer(args: DecodeLayerArgs, h: Float32Array, w: PackedLayer, kPool: KvArray, vPool: KvArray, out: Float32Array): void {
  const { attention: l, kvSlots } = args;
  const d = w.inputNorm.length;
  const n = h.length / d;
  const qw = l.numHeads * l.headDim;
  const kvw = l.numKvHeads * l.headDim;
  const inter = w.down.k;
  const expect = (p: PackedWeight, rows: number, cols: number, name: string): void => {
    if (p.n !== rows || p.k !== cols) throw new ShapeError(`decodeLayer: ${name} is (${p.n}, ${p.k}), expected (${rows}, ${cols})`);
  };
  expect(w.qkv, qw + 2 * kvw, d, 'qkv');
  expect(w.o, d, qw, 'o');
  expect(w.gateUp, 2 * inter, d, 'gateUp');
  for (const [name, p] of [['o', w.o], ['gateUp', w.gateUp], ['down', w.down]] as const) {
    if (p.dtype !== w.qkv.dtype) throw new DtypeError(`decodeLayer: ${name} is ${p.dtype}, qkv ${w.qkv.dtype}: pack all four weights in one dtype`);
  }
  const bf16Pool = kPool instanceof Uint16Array;
  if (bf16Pool !== vPool instanceof Uint16Array) throw new DtypeError('decodeLayer: kPool and vPool must have one dtype (both Float32Array or both Uint16Array bf16)');
  if (!Number.isInteger(n) || out.length !== h.length || kvSlots.length !== n || l.qPos.length !== n) {
    throw new ShapeError(`decodeLayer: h (${h.length}), out (${out.length}), kvSlots (${kvSlots.length}), qPos (${l.qPos.length}) do not describe N rows of D = ${d}`);
  }
  const numSlots = kPool.length / kvw;

  const x = new Float32Array(n * d);
  rmsnormForward(h, w.inputNorm, args.eps, x, new Float32Array(n));
  const qkv = new Float32Array(n * (qw + 2 * kvw));
  gemmPacked(n, x, w.qkv, qkv, false);
  const q = new Float32Array(n * qw);
  const k = new Float32Array(n * kvw);
  rope(columns(qkv, n, qw + 2 * kvw, 0, qw), l.qPos, l.numHeads, l.headDim, args.ropeTheta, false, q);
  rope(columns(qkv, n, qw + 2 * kvw, qw, kvw), l.qPos, l.numKvHeads, l.headDim, args.ropeTheta, false, k);
  const v = columns(qkv, n, qw + 2 * kvw, qw + kvw, kvw);
  kvSlots.forEach((slot, i) => {
    if (slot === -1) return;
    if (!Number.isInteger(slot) || slot < 0 || slot >= numSlots) throw new ArgumentError(`decodeLayer: kvSlots[${i}] = ${slot} is outside the pool of ${numSlots} slots (−1 = no write)`);
    const kRow = k.subarray(i * kvw, (i + 1) * kvw);
    const vRow = v.subarray(i * kvw, (i + 1) * kvw);
    kPool.set(bf16Pool ? toBf16(kRow) : kRow, slot * kvw);
    vPool.set(bf16Pool ? toBf16(vRow) : vRow, slot * kvw);
  });
  const a = new Float32Array(n * qw);
  attentionPaged(l, q, kPool, vPool, a);
  out.set(h);
  gemmPacked(n, a, w.o, out, true);

  rmsnormForward(out, w.postNorm, args.eps, x, new Float32Array(n));
  const gu = new Float32Array(n * 2 * inter);
  gemmPacked(n, x, w.gateUp, gu, false);
  const m = new Float32Array(n * inter);
  swigluForward(columns(gu, n, 2 * inter, 0, inter), columns(gu, n, 2 * inter, inter, inter), m);
  gemmPacked(n, m, w.down, out, true);
}
